//! Trust: a push's hook scripts judge it whatever path led to the repository (relative,
//! `./`, `../`, spaces, a symlink, git's `.git` suffix lookup, a relative `core.hooksPath`;
//! behind `daemon`, `serve` and `http-backend`), and no entry point ever runs `git`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::cgi_host::{CgiHost, CgiHostOptions};
use crate::daemon::Daemon;
use crate::http::{Push, Server, ServerOptions};
use crate::receive_pack::rev_parse;
use crate::util::{fsck, refs, write_file, Dir, Git, Output, PACKGATE};

const HOOKS: [&str; 4] = ["pre-receive", "update", "post-receive", "post-update"];

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn mkdir(path: &Path) {
    std::fs::create_dir_all(path)
        .unwrap_or_else(|error| panic!("creating {}: {error}", path.display()));
}

/// Installs the four hooks in `hooks_dir`. Each says that it ran; `pre-receive` and `update`
/// refuse while a file `refuse-<hook>` exists where hooks run (the git directory). None of
/// them runs git.
fn install_hooks(hooks_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    mkdir(hooks_dir);
    for hook in HOOKS {
        let path = hooks_dir.join(hook);
        let script = format!(
            "#!/bin/sh\ncat >/dev/null\necho \"hook {hook} ran\"\n\
             if test -e refuse-{hook}; then echo \"hook {hook} refuses\"; exit 1; fi\n"
        );
        write_file(&path, script.as_bytes());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|error| panic!("chmod {}: {error}", path.display()));
    }
}

/// A bare repository at `path` with the hooks of [`install_hooks`] in `hooks/`, or in the
/// relative `core.hooksPath` given.
fn hooked_repository(dir: &Dir, git: &Git, path: &Path, hooks_path: Option<&str>) {
    dir.git(git).args(["init", "-q", "--bare"]).arg(path).run();
    let hooks_dir = match hooks_path {
        Some(relative) => {
            dir.git_in(git, path)
                .args(["config", "core.hooksPath", relative])
                .run();
            path.join(relative)
        }
        None => path.join("hooks"),
    };
    install_hooks(&hooks_dir);
}

/// A client work tree.
fn client(dir: &Dir, git: &Git, name: &str) -> PathBuf {
    let work = dir.join(name);
    dir.git(git).args(["init", "-q"]).arg(&work).run();
    work
}

/// Pushes new commits from `work` through `push` (given the refspec) into the repository
/// whose git directory is `git_dir`, and checks that the hooks judged each push: all accept
/// and all four ran; `pre-receive` refuses; `update` refuses. A refused push changes no ref
/// and leaves its commit out of the repository.
#[track_caller]
fn check_hooks(
    dir: &Dir,
    git: &Git,
    work: &Path,
    git_dir: &Path,
    what: &str,
    push: &dyn Fn(&str) -> Output,
) {
    const REF: &str = "refs/heads/hooked";
    let in_work = || dir.git(git).current_dir(work);
    let commit = |message: &str| {
        in_work()
            .args(["commit", "-q", "--allow-empty", "-m", message])
            .run();
        rev_parse(in_work(), "HEAD")
    };
    let server_ref = || refs(dir, git, git_dir, &[REF]).remove(REF);
    let has_object = |id: &str| {
        dir.git_in(git, git_dir)
            .args(["cat-file", "-e", id])
            .output()
            .status
            .success()
    };
    let refspec = format!("HEAD:{REF}");

    let accepted = commit(&format!("accepted ({what})"));
    let output = push(&refspec);
    assert!(output.status.success(), "{what}: push failed: {output}");
    for hook in HOOKS {
        assert!(
            output
                .stderr_text()
                .contains(&format!("remote: hook {hook} ran")),
            "{what}: the {hook} hook did not run: {output}"
        );
    }
    assert_eq!(server_ref().as_deref(), Some(accepted.as_str()), "{what}");

    for refusing in ["pre-receive", "update"] {
        let flag = git_dir.join(format!("refuse-{refusing}"));
        write_file(&flag, b"");
        let refused = commit(&format!("refused by {refusing} ({what})"));
        let output = push(&refspec);
        std::fs::remove_file(&flag)
            .unwrap_or_else(|error| panic!("removing {}: {error}", flag.display()));
        assert!(
            !output.status.success(),
            "{what}: a push the {refusing} hook refuses succeeded: {output}"
        );
        assert!(
            output
                .stderr_text()
                .contains(&format!("remote: hook {refusing} refuses")),
            "{what}: the {refusing} hook did not judge the push: {output}"
        );
        assert_eq!(
            server_ref().as_deref(),
            Some(accepted.as_str()),
            "{what}: the {refusing} hook's refusal moved the ref"
        );
        assert!(
            !has_object(&refused),
            "{what}: the commit the {refusing} hook refused is in the repository"
        );
    }
    fsck(dir, git, git_dir);
}

/// `--receive-pack=<prefix>'<packgate>' receive-pack`: git runs it through the shell, in its
/// own working directory, with the repository path as the client was given it.
fn receive_pack_option(prefix: &str) -> String {
    format!(
        "--receive-pack={prefix}{} receive-pack",
        shell_quote(PACKGATE)
    )
}

/// Relative repository paths, as `git push ../x.git` or an ssh remote `host:x.git` hand them
/// to receive-pack: the hooks judge the push through every one of them.
#[test]
fn hooks_judge_pushes_to_relative_repository_paths() {
    struct Case {
        name: &'static str,
        /// The repository, below the case's directory.
        repo: &'static str,
        /// Where git push runs, below the case's directory.
        cwd: &'static str,
        /// The path git push is given.
        path: &'static str,
        /// A symlink (name, target) made in the case's directory.
        symlink: Option<(&'static str, &'static str)>,
        /// A relative `core.hooksPath`.
        hooks_path: Option<&'static str>,
    }
    let plain = Case {
        name: "relative",
        repo: "srv/server.git",
        cwd: ".",
        path: "srv/server.git",
        symlink: None,
        hooks_path: None,
    };
    let cases = [
        Case {
            name: "dot",
            path: "./srv/server.git",
            ..plain
        },
        Case {
            name: "dotdot",
            cwd: "elsewhere",
            path: "../srv/server.git",
            ..plain
        },
        Case {
            name: "space",
            repo: "with space/server.git",
            path: "with space/server.git",
            ..plain
        },
        Case {
            name: "symlink",
            repo: "real/server.git",
            path: "linked/server.git",
            symlink: Some(("linked", "real")),
            ..plain
        },
        Case {
            name: "suffix",
            path: "srv/server",
            ..plain
        },
        Case {
            name: "hooks-path",
            hooks_path: Some("custom-hooks"),
            ..plain
        },
        plain,
    ];
    for git in Git::all() {
        let dir = Dir::new("trust-relative");
        let work = client(&dir, &git, "client");
        let client_git_dir = format!("--git-dir={}", work.join(".git").display());
        for case in &cases {
            let base = dir.join(case.name);
            let repo = base.join(case.repo);
            hooked_repository(&dir, &git, &repo, case.hooks_path);
            if let Some((link, target)) = case.symlink {
                std::os::unix::fs::symlink(target, base.join(link))
                    .unwrap_or_else(|error| panic!("symlink {link}: {error}"));
            }
            let cwd = base.join(case.cwd);
            mkdir(&cwd);
            let push = |refspec: &str| {
                dir.git(&git)
                    .current_dir(&cwd)
                    .arg(&client_git_dir)
                    .arg("push")
                    .arg(receive_pack_option(""))
                    .arg(case.path)
                    .arg(refspec)
                    .output()
            };
            let what = format!("{} ({git})", case.name);
            check_hooks(&dir, &git, &work, &repo, &what, &push);
        }
    }
}

/// A directory with a `git` that records each run in `record` and fails, and the `PATH` that
/// finds it first.
struct FakeGit {
    path: OsString,
    record: PathBuf,
}

impl FakeGit {
    fn new(dir: &Dir) -> FakeGit {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("fake-bin");
        mkdir(&bin);
        let record = dir.join("git-runs.txt");
        let script = format!(
            "#!/bin/sh\necho \"git $*\" >> {}\nexit 1\n",
            shell_quote(&record.to_string_lossy())
        );
        let program = bin.join("git");
        write_file(&program, script.as_bytes());
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|error| panic!("chmod {}: {error}", program.display()));
        let mut path = bin.into_os_string();
        if let Some(inherited) = std::env::var_os("PATH") {
            path.push(":");
            path.push(inherited);
        }
        let fake = FakeGit { path, record };
        // The fake is what a program looking for `git` on this PATH finds.
        crate::util::Cmd::new(Path::new("/bin/sh"))
            .args(["-c", "git --version"])
            .env("PATH", &fake.path)
            .output();
        assert_eq!(fake.runs(), "git --version\n", "the fake git was not found");
        std::fs::remove_file(&fake.record).unwrap_or_else(|error| panic!("{error}"));
        fake
    }

    /// What it recorded.
    fn runs(&self) -> String {
        std::fs::read_to_string(&self.record).unwrap_or_default()
    }

    /// A shell prefix that runs a command with this `PATH` and without
    /// `GIT_CONFIG_NOSYSTEM` (which the isolated clients set, and which would spare a lookup
    /// of git's installation configuration).
    fn shell_prefix(&self) -> String {
        format!(
            "env -u GIT_CONFIG_NOSYSTEM PATH={} ",
            shell_quote(&self.path.to_string_lossy())
        )
    }
}

/// Every entry point — `upload-pack` and `receive-pack` (with hooks) over stdio, `daemon`,
/// `serve` over git:// and HTTP, `http-backend` — serves a clone and judges pushes with the
/// repository's hooks, run with a `PATH` whose first `git` records its runs: it never runs.
#[test]
fn every_entry_point_runs_hooks_and_never_git() {
    for git in Git::all() {
        entry_points_run_hooks_and_never_git(&git);
    }
}

fn entry_points_run_hooks_and_never_git(git: &Git) {
    let git = git.clone();
    let dir = Dir::new("trust-no-git");
    let fake = FakeGit::new(&dir);
    let work = client(&dir, &git, "client");
    let repos = dir.join("repos");
    let clone = |name: &str, url: &str, upload_pack: Option<String>| {
        let target = dir.join(&format!("clone-{name}"));
        let mut cmd = dir
            .git(&git)
            .args(["-c", "protocol.version=2", "clone", "-q"]);
        if let Some(option) = upload_pack {
            cmd = cmd.arg(option);
        }
        cmd.arg(url).arg(&target).run();
        fsck(&dir, &git, &target.join(".git"));
    };

    // stdio: receive-pack with a relative path, then upload-pack.
    let stdio = repos.join("stdio.git");
    hooked_repository(&dir, &git, &stdio, None);
    check_hooks(
        &dir,
        &git,
        &work,
        &stdio,
        "stdio receive-pack",
        &|refspec| {
            dir.git(&git)
                .current_dir(&work)
                .arg("push")
                .arg(receive_pack_option(&fake.shell_prefix()))
                .arg("../repos/stdio.git")
                .arg(refspec)
                .output()
        },
    );
    clone(
        "stdio",
        &crate::util::file_url(&stdio),
        Some(format!(
            "--upload-pack={}{} upload-pack",
            fake.shell_prefix(),
            shell_quote(PACKGATE)
        )),
    );

    // daemon, with a relative base path.
    let daemon_repo = repos.join("daemon.git");
    hooked_repository(&dir, &git, &daemon_repo, None);
    let daemon = Daemon::start_with_env(
        &dir,
        &["--export-all", "--base-path=repos", "--enable=receive-pack"],
        &[
            ("PATH", Some(fake.path.as_os_str())),
            ("GIT_CONFIG_NOSYSTEM", None),
        ],
    );
    let url = daemon.url("/daemon.git");
    check_hooks(&dir, &git, &work, &daemon_repo, "daemon", &|refspec| {
        dir.git(&git)
            .current_dir(&work)
            .args(["push", &url, refspec])
            .output()
    });
    clone("daemon", &url, None);
    drop(daemon);

    // serve: push over HTTP and over git:// (enabled by the repository).
    let http_repo = repos.join("serve-http.git");
    let git_repo = repos.join("serve-git.git");
    hooked_repository(&dir, &git, &http_repo, None);
    hooked_repository(&dir, &git, &git_repo, None);
    dir.git_in(&git, &git_repo)
        .args(["config", "daemon.receivepack", "true"])
        .run();
    let server = Server::start_with(
        &repos,
        &ServerOptions {
            env: vec![
                ("PATH", Some(fake.path.clone())),
                ("GIT_CONFIG_NOSYSTEM", None),
            ],
            ..ServerOptions::new(Push::AllowedWithoutAuthentication)
        },
    );
    for (name, repo, url) in [
        ("serve-http", &http_repo, server.http_url("serve-http.git")),
        ("serve-git", &git_repo, server.git_url("serve-git.git")),
    ] {
        check_hooks(&dir, &git, &work, repo, &url, &|refspec| {
            dir.git(&git)
                .current_dir(&work)
                .args(["push", &url, refspec])
                .output()
        });
        clone(name, &url, None);
    }
    drop(server);

    // http-backend behind a CGI host.
    let cgi_repo = repos.join("cgi.git");
    hooked_repository(&dir, &git, &cgi_repo, None);
    let host = CgiHost::start(CgiHostOptions {
        project_root: repos.clone(),
        export_all: true,
        users: vec![("alice".into(), "secret".into())],
        path: Some(fake.path.clone()),
        ..CgiHostOptions::default()
    });
    let push_url = host.url_as("alice", "secret", "cgi.git");
    check_hooks(&dir, &git, &work, &cgi_repo, "http-backend", &|refspec| {
        dir.git(&git)
            .current_dir(&work)
            .args(["push", &push_url, refspec])
            .output()
    });
    clone("http-backend", &host.url("cgi.git"), None);
    drop(host);

    assert_eq!(
        fake.runs(),
        "",
        "packgate ran git (a line per run: its arguments) with {git}"
    );
}

/// A push under `receive.denyCurrentBranch=updateInstead` checks the work tree and checks
/// the pushed commit out without git: the `git` first on the server's `PATH` never runs.
#[test]
fn updating_a_work_tree_runs_no_git() {
    for git in Git::all() {
        let dir = Dir::new("trust-update-instead");
        let fake = FakeGit::new(&dir);
        let work = client(&dir, &git, "client");
        let in_work = || dir.git(&git).current_dir(&work);
        write_file(&work.join("first.txt"), b"first\n");
        in_work().args(["add", "."]).run();
        in_work().args(["commit", "-q", "-m", "first"]).run();
        let server = dir.join("server");
        dir.git(&git)
            .args(["clone", "-q"])
            .arg(&work)
            .arg(&server)
            .run();
        dir.git(&git)
            .current_dir(&server)
            .args(["config", "receive.denyCurrentBranch", "updateInstead"])
            .run();
        write_file(&work.join("second.txt"), b"second\n");
        in_work().args(["add", "."]).run();
        in_work().args(["commit", "-q", "-m", "second"]).run();
        let output = in_work()
            .arg("push")
            .arg(receive_pack_option(&fake.shell_prefix()))
            .arg(crate::util::file_url(&server))
            .arg("master")
            .output();
        assert!(output.status.success(), "{output}");
        assert_eq!(fake.runs(), "", "packgate ran git");
        assert_eq!(
            std::fs::read_to_string(server.join("second.txt"))
                .unwrap_or_else(|error| panic!("{error}")),
            "second\n"
        );
        let status = dir
            .git(&git)
            .current_dir(&server)
            .args(["status", "--porcelain"])
            .run();
        assert_eq!(status.stdout_text(), "");
    }
}

/// Maintenance never runs git: `packgate maintenance run` by hand, and the `--auto` run a
/// push through `packgate receive-pack` starts, with a `PATH` whose first `git` records its
/// runs.
#[test]
fn maintenance_runs_no_git() {
    let git = Git::newest();
    let dir = Dir::new("trust-maintenance");
    let fake = FakeGit::new(&dir);
    let work = client(&dir, &git, "client");
    let repo = dir.join("server.git");
    dir.git(&git)
        .args(["init", "-q", "--bare"])
        .arg(&repo)
        .run();
    for (key, value) in [
        ("receive.unpackLimit", "1"),
        ("gc.autoPackLimit", "3"),
        ("gc.pruneExpire", "now"),
    ] {
        dir.git_in(&git, &repo).args(["config", key, value]).run();
    }
    let pack_count = || {
        std::fs::read_dir(repo.join("objects/pack"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|entry| entry.file_name().to_string_lossy().ends_with(".pack"))
                    .count()
            })
            .unwrap_or(0)
    };
    for i in 0..4 {
        write_file(&work.join(format!("file-{i}")), b"content\n");
        dir.git(&git).current_dir(&work).args(["add", "."]).run();
        dir.git(&git)
            .current_dir(&work)
            .args(["commit", "-q", "-m", &format!("commit {i}")])
            .run();
        dir.git(&git)
            .current_dir(&work)
            .arg("push")
            .arg(receive_pack_option(&fake.shell_prefix()))
            .arg(&repo)
            .arg("HEAD:refs/heads/master")
            .run();
    }
    // The push above the pack limit started maintenance: wait for its result.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while pack_count() > 1 || repo.join("gc.pid").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no maintenance after the pushes"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // By hand, every task this branch has (whatever the writers of other branches say).
    for task in ["gc", "loose-objects", "commit-graph", "pack-refs"] {
        crate::util::Cmd::new(Path::new("/bin/sh"))
            .args([
                "-c",
                &format!(
                    "{}{} maintenance run --task {task} {}",
                    fake.shell_prefix(),
                    shell_quote(PACKGATE),
                    shell_quote(&repo.to_string_lossy())
                ),
            ])
            .output();
    }
    fsck(&dir, &git, &repo);
    assert_eq!(
        fake.runs(),
        "",
        "maintenance ran git (a line per run: its arguments)"
    );
}
