//! packgate's client commands as a user runs them — `packgate mirror`, `packgate fetch` and
//! `packgate push` — against git's own servers over every transport: `git daemon`
//! (git://), `git http-backend` behind the CGI host (stateless HTTP), ssh through a
//! `GIT_SSH_COMMAND` shim that runs the remote command locally, and a relative local path
//! with a space in it; and once against `packgate serve` over git:// and HTTP. Each case:
//! refs equal to `git ls-remote`'s, `git fsck` clean on both sides, then the upstream moves
//! (and the local side pushes) and a second, incremental round must agree again.

// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::cgi_host::{CgiHost, CgiHostOptions};
use crate::client_transport::{ssh_shim, SshShim};
use crate::daemon::Daemon;
use crate::fetch::move_source_forward;
use crate::http::{Push, Server, ServerOptions};
use crate::util::{assert_same_refs, fsck, refs, shared_fixture, write_file, Cmd, Dir, Git};

/// What serves the upstream repositories of one row of the matrix.
enum Kind {
    GitDaemon(Git),
    HttpBackend,
    Ssh,
    Local,
    PackgateGit,
    PackgateHttp,
}

/// A running server (or none) and how to reach a repository below its root.
struct Row {
    name: String,
    /// Protocol versions asked for by fetch and mirror.
    versions: &'static [&'static str],
    /// The repository's URL, from its name below the root.
    url: Box<dyn Fn(&str) -> String>,
    /// Environment for the packgate commands.
    env: Vec<(&'static str, OsString)>,
    /// Kept alive for the row's cases.
    _server: Box<dyn std::any::Any>,
}

fn start(kind: Kind, dir: &Dir, root: &Path) -> Row {
    let none: Box<dyn std::any::Any> = Box::new(());
    match kind {
        Kind::GitDaemon(git) => {
            let base_path = format!("--base-path={}", root.display());
            let daemon = Daemon::start_git(
                dir,
                &git,
                &["--export-all", "--enable=receive-pack", &base_path],
            );
            let base = daemon.url("/");
            Row {
                name: format!("git daemon {git}"),
                versions: &["2", "0"],
                url: Box::new(move |repo| format!("{base}{}", repo.replace(' ', "%20"))),
                env: Vec::new(),
                _server: Box::new(daemon),
            }
        }
        Kind::HttpBackend => {
            let git = Git::newest();
            let host = CgiHost::start(CgiHostOptions {
                project_root: root.to_path_buf(),
                export_all: true,
                program: Some(vec![git.program.into_os_string(), "http-backend".into()]),
                // Pushes need a user (git's http-backend: REMOTE_USER).
                users: vec![("alice".to_owned(), "secret".to_owned())],
                ..CgiHostOptions::default()
            });
            let base = host.url_as("alice", "secret", "");
            Row {
                name: "git http-backend".to_owned(),
                versions: &["2", "0"],
                url: Box::new(move |repo| format!("{base}{}", repo.replace(' ', "%20"))),
                env: Vec::new(),
                _server: Box::new(host),
            }
        }
        Kind::Ssh => {
            let SshShim { program, .. } = ssh_shim(dir);
            let root = root.to_path_buf();
            Row {
                name: "ssh".to_owned(),
                versions: &["2", "0"],
                url: Box::new(move |repo| {
                    format!("ssh://git@example.invalid{}", root.join(repo).display())
                }),
                env: vec![("GIT_SSH_COMMAND", format!("'{}'", program.display()).into())],
                _server: none,
            }
        }
        Kind::Local => {
            let relative = root.strip_prefix(dir.path()).unwrap().display().to_string();
            Row {
                name: "local path".to_owned(),
                versions: &["2", "0"],
                // The commands run in `dir`.
                url: Box::new(move |repo| format!("./{relative}/{repo}")),
                env: Vec::new(),
                _server: none,
            }
        }
        Kind::PackgateGit | Kind::PackgateHttp => {
            let config = dir.join("serve.toml");
            write_file(&config, b"[git]\nreceive-pack = true\n");
            let server = Server::start_with(
                root,
                &ServerOptions {
                    config: Some(config),
                    ..ServerOptions::new(Push::AllowedWithoutAuthentication)
                },
            );
            let http = matches!(kind, Kind::PackgateHttp);
            let base = if http {
                server.http_url("")
            } else {
                server.git_url("")
            };
            Row {
                name: format!("packgate serve {}", if http { "HTTP" } else { "git://" }),
                versions: &["2"],
                url: Box::new(move |repo| format!("{base}{}", repo.replace(' ', "%20"))),
                env: Vec::new(),
                _server: Box::new(server),
            }
        }
    }
}

/// A packgate command with the row's environment, run in `dir`.
fn packgate(dir: &Dir, row: &Row) -> Cmd {
    let mut cmd = dir.packgate();
    for (name, value) in &row.env {
        cmd = cmd.env(name, value);
    }
    cmd
}

/// Every ref of `repo` (HEAD aside) as name → id.
fn all_refs(dir: &Dir, repo: &Path) -> BTreeMap<String, String> {
    refs(dir, &Git::newest(), repo, &[])
}

/// `git ls-remote --refs <url>`, through git's own client, as name → id.
fn ls_remote(dir: &Dir, row: &Row, url: &str) -> BTreeMap<String, String> {
    let mut cmd = dir.git(&Git::newest()).args(["ls-remote", "--refs", url]);
    for (name, value) in &row.env {
        cmd = cmd.env(name, value);
    }
    let listed: BTreeMap<String, String> = cmd
        .run()
        .stdout_text()
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(id, name)| (name.to_owned(), id.to_owned()))
        .collect();
    assert!(listed.len() > 2, "{url}: no refs listed");
    listed
}

/// The remote's progress as git's client shows it (stderr is no terminal here): every
/// `remote: ` line with text padded with eight spaces before its CR or LF, and no
/// count-less "Enumerating objects: ..." line (git's servers never send one).
fn check_progress(stderr: &str, context: &str) {
    assert!(
        stderr.contains("remote: "),
        "{context}: no progress:\n{stderr}"
    );
    assert!(!stderr.contains("objects: ..."), "{context}:\n{stderr:?}");
    for line in stderr.split_inclusive(['\n', '\r']) {
        if let Some(text) = line.strip_prefix("remote: ") {
            let text = text.trim_end_matches(['\n', '\r']);
            assert!(
                text.is_empty() || text.ends_with("        "),
                "{context}: {line:?} in\n{stderr:?}"
            );
        }
    }
}

/// One case: mirror, fetch, push, then the upstream moves and everything again.
fn case(dir: &Dir, row: &Row, root: &Path, version: &str) {
    let git = Git::newest();
    let name = format!("up stream v{version}.git");
    let upstream = root.join(&name);
    dir.copy_tree(&shared_fixture("small").path, &upstream);
    let url = (row.url)(&name);
    let context = format!("{} v{version} ({url})", row.name);
    let local = dir.join(&format!(
        "local-{}-v{version}",
        row.name.replace([' ', '/', ':'], "-")
    ));
    let mirror = local.join("mirror.git");
    let clone = local.join("fetched.git");
    std::fs::create_dir_all(&local).unwrap();
    dir.git(&git)
        .args(["init", "-q", "--bare"])
        .arg(&clone)
        .run();

    for round in 1..=2 {
        let context = format!("{context}, round {round}");
        let output = packgate(dir, row)
            .args(["mirror", "--timeout", "60", "--protocol", version])
            .arg(&url)
            .arg(&mirror)
            .run();
        check_progress(&output.stderr_text(), &context);
        let expected = ls_remote(dir, row, &url);
        assert_same_refs(
            &all_refs(dir, &mirror),
            &expected,
            &format!("mirror, {context}"),
        );

        packgate(dir, row)
            .args(["fetch", "--timeout", "60", "--protocol", version, "--prune"])
            .arg("--git-dir")
            .arg(&clone)
            .arg(&url)
            .args([
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ])
            .run();
        let fetched: BTreeMap<String, String> = all_refs(dir, &clone)
            .into_iter()
            .map(
                |(name, id)| match name.strip_prefix("refs/remotes/origin/") {
                    Some(branch) => (format!("refs/heads/{branch}"), id),
                    None => (name, id),
                },
            )
            .collect();
        assert_same_refs(&fetched, &expected, &format!("fetch, {context}"));

        // A new commit on the mirror's main, pushed to a new branch upstream.
        let commit = dir
            .git_in(&git, &mirror)
            .args(["commit-tree", "-p", "refs/heads/main", "-m"])
            .arg(format!("pushed in round {round}"))
            .arg("refs/heads/main^{tree}")
            .run()
            .stdout_text()
            .trim()
            .to_owned();
        dir.git_in(&git, &mirror)
            .args(["update-ref", "refs/heads/pushed", &commit])
            .run();
        packgate(dir, row)
            .args(["push", "--timeout", "60", "--git-dir"])
            .arg(&mirror)
            .arg(&url)
            .arg("+refs/heads/pushed:refs/heads/pushed")
            .run();
        let after = ls_remote(dir, row, &url);
        assert_eq!(
            after.get("refs/heads/pushed"),
            Some(&commit),
            "push, {context}"
        );

        for repo in [&upstream, &mirror, &clone] {
            fsck(dir, &git, repo);
        }
        if round == 1 {
            move_source_forward(dir, &git, &upstream);
        }
    }
}

fn run(kind: Kind, name: &str) {
    let dir = Dir::new(name);
    let root: PathBuf = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap();
    let row = start(kind, &dir, &root);
    for version in row.versions {
        case(&dir, &row, &root, version);
    }
}

#[test]
fn git_daemon() {
    for git in Git::all() {
        run(Kind::GitDaemon(git), "matrix-daemon");
    }
}

#[test]
fn git_http_backend() {
    run(Kind::HttpBackend, "matrix-http-backend");
}

#[test]
fn ssh() {
    run(Kind::Ssh, "matrix-ssh");
}

#[test]
fn local_path() {
    run(Kind::Local, "matrix-local");
}

#[test]
fn packgate_serve() {
    run(Kind::PackgateGit, "matrix-serve-git");
    run(Kind::PackgateHttp, "matrix-serve-http");
}

/// `--timeout`: a server program that never answers ends `fetch`, `mirror` and `push`
/// within a bound, with git's kind of message, instead of hanging.
#[test]
fn a_stalled_server_program_times_out() {
    let dir = Dir::new("matrix-timeout");
    let repo = dir.join("r.git");
    dir.copy_tree(&shared_fixture("small").path, &repo);
    // The shell runs `<program> <quoted path>`: the path becomes a comment.
    let stall = "exec sleep 600 #";
    let cases: [&[&str]; 3] = [
        &[
            "fetch",
            "--git-dir",
            "r.git",
            "--upload-pack",
            stall,
            "./r.git",
            "main",
        ],
        &["mirror", "--upload-pack", stall, "./r.git", "m.git"],
        &[
            "push",
            "--git-dir",
            "r.git",
            "--receive-pack",
            stall,
            "./r.git",
            "main:x",
        ],
    ];
    for args in cases {
        let output = dir
            .packgate()
            .args(args)
            .args(["--timeout", "1"])
            .timeout(std::time::Duration::from_secs(60))
            .output();
        assert!(!output.status.success(), "{output}");
        assert!(!output.panicked(), "{output}");
        assert!(
            output.stderr_text().contains("no progress in 1s"),
            "{output}"
        );
        assert!(
            output.elapsed < std::time::Duration::from_secs(30),
            "{output}"
        );
    }
}
