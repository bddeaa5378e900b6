//! `GIT_NAMESPACE`: `packgate upload-pack` (v0 and v2) and `receive-pack` serve one namespace
//! of a repository holding several, as git's own services do under the same variable.

use std::path::{Path, PathBuf};

use crate::cgi_host::{CgiHost, CgiHostOptions};
use crate::receive_pack::receive_pack_option_with;
use crate::util::{
    assert_same_refs, file_url, fsck, packgate_upload_pack_command, refs, rename_refs, Dir, Git,
    Output,
};

/// A bare repository with namespaces `a` (branches `main` and `other`, tag `v1`, `HEAD` at
/// `other`) and `b` (a `main` of its own), and nothing outside them; plus the work tree that
/// filled it.
struct Setup {
    dir: Dir,
    server: PathBuf,
    work: PathBuf,
}

impl Setup {
    fn new(git: &Git) -> Setup {
        let dir = Dir::new("namespaces");
        let server = dir.join("server.git");
        let work = dir.join("work");
        dir.git(git)
            .args(["init", "-q", "--bare"])
            .arg(&server)
            .run();
        dir.git(git).args(["init", "-q"]).arg(&work).run();
        let in_work = |args: &[&str]| dir.git(git).current_dir(&work).args(args).run();
        in_work(&["commit", "-q", "--allow-empty", "-m", "one"]);
        in_work(&["tag", "-a", "-m", "tag", "v1"]);
        in_work(&["checkout", "-q", "-b", "other"]);
        in_work(&["commit", "-q", "--allow-empty", "-m", "two"]);
        let push = |namespace: &str, refspecs: &[&str]| {
            dir.git(git)
                .current_dir(&work)
                .env("GIT_NAMESPACE", namespace)
                .arg("push")
                .arg("-q")
                .arg(&server)
                .args(refspecs)
                .run();
        };
        push("a", &["master:refs/heads/main", "other", "v1"]);
        in_work(&["checkout", "-q", "master"]);
        in_work(&["commit", "-q", "--allow-empty", "-m", "three"]);
        push("b", &["master:refs/heads/main"]);
        dir.git_in(git, &server)
            .args([
                "symbolic-ref",
                "refs/namespaces/a/HEAD",
                "refs/namespaces/a/refs/heads/other",
            ])
            .run();
        Setup { dir, server, work }
    }
}

/// `--upload-pack=` running packgate's or git's upload-pack in `namespace`.
fn upload_pack(namespace: &str, git: Option<&Git>) -> String {
    let command = match git {
        Some(git) => format!("'{}' upload-pack", git.program.display()),
        None => packgate_upload_pack_command(),
    };
    format!("--upload-pack=env GIT_NAMESPACE={namespace} {command}")
}

/// Lines in order, each only the first time: git 2.47's ls-refs lists a namespace's `HEAD`
/// twice (as `HEAD`, and again as the `HEAD` file below the namespace's prefix).
fn without_repeats(text: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    text.lines()
        .filter(|line| seen.insert(*line))
        .map(str::to_owned)
        .collect()
}

#[test]
fn ls_remote_sees_only_the_namespace() {
    for git in Git::all() {
        let setup = Setup::new(&git);
        for hide in [false, true] {
            if hide {
                // Plain rules match the names without the prefix, `^` rules the full names.
                for rule in ["refs/tags", "^refs/namespaces/a/refs/heads/main"] {
                    setup
                        .dir
                        .git_in(&git, &setup.server)
                        .args(["config", "--add", "transfer.hideRefs", rule])
                        .run();
                }
            }
            for version in ["0", "2"] {
                for namespace in ["a", "b", "c", "a/b"] {
                    let ls_remote = |server: Option<&Git>| -> Output {
                        setup
                            .dir
                            .git(&git)
                            .args(["-c", &format!("protocol.version={version}"), "ls-remote"])
                            .arg(upload_pack(namespace, server))
                            .arg("--symref")
                            .arg(file_url(&setup.server))
                            .run()
                    };
                    let expected = ls_remote(Some(&git));
                    let actual = ls_remote(None);
                    let context = format!("v{version} namespace {namespace} hide {hide} {git}");
                    assert_eq!(
                        without_repeats(&actual.stdout_text()),
                        without_repeats(&expected.stdout_text()),
                        "{context}"
                    );
                    let text = actual.stdout_text();
                    assert!(!text.contains("namespaces"), "{context}: {text}");
                    if namespace == "a" {
                        assert!(text.contains("ref: refs/heads/other\tHEAD"), "{context}");
                        assert_eq!(text.contains("refs/tags/v1"), !hide, "{context}");
                        assert_eq!(text.contains("refs/heads/main"), !hide, "{context}");
                    }
                    if namespace == "c" {
                        assert!(text.is_empty(), "{context}: {text}");
                    }
                }
            }
        }
    }
}

#[test]
fn clone_and_fetch_one_namespace() {
    for git in Git::all() {
        let setup = Setup::new(&git);
        let dir = &setup.dir;
        for version in ["0", "2"] {
            let clone = |name: &str, server: Option<&Git>| -> PathBuf {
                let path = dir.join(&format!("{name}-v{version}.git"));
                dir.git(&git)
                    .args(["-c", &format!("protocol.version={version}"), "clone", "-q"])
                    .args(["--mirror", &upload_pack("a", server)])
                    .arg(file_url(&setup.server))
                    .arg(&path)
                    .run();
                path
            };
            let expected = clone("git", Some(&git));
            let actual = clone("packgate", None);
            let context = format!("clone v{version} with {git}");
            let namespace = rename_refs(
                &refs(dir, &git, &setup.server, &["refs/namespaces/a/refs/"]),
                "refs/namespaces/a/",
                "",
            );
            assert_same_refs(&refs(dir, &git, &actual, &[]), &namespace, &context);
            assert_same_refs(
                &refs(dir, &git, &actual, &[]),
                &refs(dir, &git, &expected, &[]),
                &context,
            );
            let head = |repo: &Path| {
                dir.git_in(&git, repo)
                    .args(["symbolic-ref", "HEAD"])
                    .run()
                    .stdout_text()
            };
            assert_eq!(head(&actual), "refs/heads/other\n", "{context}");
            fsck(dir, &git, &actual);

            // Namespace b's main, by name: with ref-in-want (v2), looked up in the namespace.
            let fetched = dir.join(&format!("fetched-v{version}.git"));
            dir.git(&git)
                .args(["init", "-q", "--bare"])
                .arg(&fetched)
                .run();
            dir.git_in(&git, &setup.server)
                .args(["config", "uploadpack.allowRefInWant", "true"])
                .run();
            dir.git_in(&git, &fetched)
                .args(["-c", &format!("protocol.version={version}"), "fetch", "-q"])
                .arg(upload_pack("b", None))
                .arg(file_url(&setup.server))
                .arg("refs/heads/main:refs/heads/from-b")
                .run();
            let b_main = refs(
                dir,
                &git,
                &setup.server,
                &["refs/namespaces/b/refs/heads/main"],
            );
            assert_eq!(
                refs(dir, &git, &fetched, &[]).get("refs/heads/from-b"),
                b_main.get("refs/namespaces/b/refs/heads/main"),
                "{context}"
            );
            fsck(dir, &git, &fetched);
        }
    }
}

/// An advertisement as lines without pkt-line lengths, the agent left out.
fn normalised(advertisement: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(advertisement);
    let mut lines = Vec::new();
    let mut rest: &str = &text;
    while rest.len() >= 4 {
        let Ok(length) = usize::from_str_radix(&rest[..4], 16) else {
            panic!("not a pkt-line: {rest:?}");
        };
        if length == 0 {
            lines.push("0000".to_owned());
            rest = &rest[4..];
            continue;
        }
        let line: String = rest[4..length]
            .trim_end_matches('\n')
            .split(' ')
            .filter(|word| !word.starts_with("agent="))
            .collect::<Vec<_>>()
            .join(" ");
        lines.push(line);
        rest = &rest[length..];
    }
    lines
}

#[test]
fn push_into_a_namespace() {
    for git in Git::all() {
        let setup = Setup::new(&git);
        let dir = &setup.dir;
        // The advertisement: the namespace's refs (its HEAD among them, as git lists it),
        // then the values of the refs outside it as `.have`.
        let advertise = |program: Option<&Git>| {
            let command = match program {
                Some(git) => dir.git(git).arg("receive-pack"),
                None => dir.packgate().arg("receive-pack"),
            };
            command
                .env("GIT_NAMESPACE", "a")
                .arg(&setup.server)
                .stdin("0000")
                .run()
        };
        let expected = normalised(&advertise(Some(&git)).stdout);
        let actual = normalised(&advertise(None).stdout);
        assert_eq!(actual, expected, "receive-pack advertisement with {git}");
        assert!(
            actual.iter().any(|line| line.ends_with(" .have")),
            "{actual:?}"
        );

        let before = refs(dir, &git, &setup.server, &[]);
        let in_work = |args: &[&str]| dir.git(&git).current_dir(&setup.work).args(args).run();
        in_work(&["commit", "-q", "--allow-empty", "-m", "four"]);
        let push = |namespace: &str, refspecs: &[&str]| {
            dir.git(&git)
                .current_dir(&setup.work)
                .arg("push")
                .arg(receive_pack_option_with(
                    &format!("env GIT_NAMESPACE={namespace} "),
                    "",
                ))
                .arg(file_url(&setup.server))
                .args(refspecs)
                .run()
        };
        push("c", &["master:refs/heads/new"]);
        push("a", &["master:refs/heads/main", ":refs/tags/v1"]);
        let head = in_work(&["rev-parse", "master"])
            .stdout_text()
            .trim()
            .to_owned();
        let mut expected = before.clone();
        expected.insert("refs/namespaces/c/refs/heads/new".into(), head.clone());
        expected.insert("refs/namespaces/a/refs/heads/main".into(), head);
        expected.remove("refs/namespaces/a/refs/tags/v1");
        let after = refs(dir, &git, &setup.server, &[]);
        assert_same_refs(&after, &expected, &format!("push with {git}"));
        fsck(dir, &git, &setup.server);
    }
}

/// `packgate http-backend` under `GIT_NAMESPACE` (which git's http-backend passes on to its
/// services): a clone sees what one through `git http-backend` sees, a push lands in the
/// namespace.
#[test]
fn http_backend_serves_the_namespace() {
    for git in Git::all() {
        let setup = Setup::new(&git);
        let dir = &setup.dir;
        let host = |program: Option<&Git>| {
            CgiHost::start(CgiHostOptions {
                project_root: dir.path().to_owned(),
                export_all: true,
                anonymous_push: true,
                program: program.map(|git| vec![git.program.clone().into(), "http-backend".into()]),
                env: vec![("GIT_NAMESPACE".into(), "a".into())],
                ..CgiHostOptions::default()
            })
        };
        let (theirs, ours) = (host(Some(&git)), host(None));
        for version in ["0", "2"] {
            let clone = |host: &CgiHost, name: &str| -> PathBuf {
                let path = dir.join(&format!("{name}-http-v{version}.git"));
                dir.git(&git)
                    .args(["-c", &format!("protocol.version={version}"), "clone", "-q"])
                    .arg("--mirror")
                    .arg(host.url("server.git"))
                    .arg(&path)
                    .run();
                path
            };
            let expected = clone(&theirs, "git");
            let actual = clone(&ours, "packgate");
            let context = format!("http-backend clone v{version} with {git}");
            assert_same_refs(
                &refs(dir, &git, &actual, &[]),
                &refs(dir, &git, &expected, &[]),
                &context,
            );
            assert!(refs(dir, &git, &actual, &[]).contains_key("refs/heads/other"));
            fsck(dir, &git, &actual);
        }
        // Anonymous pushes need the repository's consent, as with git's http-backend.
        dir.git_in(&git, &setup.server)
            .args(["config", "http.receivepack", "true"])
            .run();
        dir.git(&git)
            .current_dir(&setup.work)
            .args(["push", "-q"])
            .arg(ours.url("server.git"))
            .arg("master:refs/heads/over-http")
            .run();
        let server = refs(dir, &git, &setup.server, &[]);
        assert!(
            server.contains_key("refs/namespaces/a/refs/heads/over-http"),
            "{server:?}"
        );
        fsck(dir, &git, &setup.server);
    }
}

/// `packgate serve --config` with a namespace for every repository and one of a repository's
/// own: over git:// and HTTP, each repository shows the refs of its namespace as git's
/// upload-pack does under `GIT_NAMESPACE`, and pushes land in it.
#[test]
fn serve_config_gives_repositories_namespaces() {
    use crate::http::{Push, Server, ServerOptions};
    let git = Git::newest();
    let setup = Setup::new(&git);
    let root = setup.dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|error| panic!("mkdir: {error}"));
    for name in ["own.git", "default.git"] {
        setup.dir.copy_tree(&setup.server, &root.join(name));
    }
    let config = setup.dir.join("packgate.toml");
    crate::util::write_file(
        &config,
        b"namespace = \"b\"\n[git]\nreceive-pack = true\n\
          [repositories.\"own.git\"]\nnamespace = \"a\"\n",
    );
    let server = Server::start_with(
        &root,
        &ServerOptions {
            config: Some(config),
            env: vec![("GIT_NAMESPACE", None)],
            ..ServerOptions::new(Push::AllowedWithoutAuthentication)
        },
    );
    for client in Git::all() {
        for (name, namespace) in [("own.git", "a"), ("default.git", "b")] {
            let expected = setup
                .dir
                .git(&client)
                .args(["-c", "protocol.version=2", "ls-remote", "--symref"])
                .arg(upload_pack(namespace, Some(&client)))
                .arg(file_url(&root.join(name)))
                .run();
            for url in [server.git_url(name), server.http_url(name)] {
                for version in ["0", "2"] {
                    let actual = setup
                        .dir
                        .git(&client)
                        .args(["-c", &format!("protocol.version={version}"), "ls-remote"])
                        .arg("--symref")
                        .arg(&url)
                        .run();
                    assert_eq!(
                        without_repeats(&actual.stdout_text()),
                        without_repeats(&expected.stdout_text()),
                        "{url} v{version} with {client}"
                    );
                }
            }
        }
        // Pushes over both front-ends land in the repository's namespace.
        for (front, url) in [
            ("git", server.git_url("own.git")),
            ("http", server.http_url("own.git")),
        ] {
            let branch = format!("pushed-{front}-{}", client.version.replace(' ', "-"));
            setup
                .dir
                .git(&client)
                .current_dir(&setup.work)
                .args(["push", "-q"])
                .arg(&url)
                .arg(format!("master:refs/heads/{branch}"))
                .run();
            let on_server = refs(&setup.dir, &client, &root.join("own.git"), &[]);
            assert!(
                on_server.contains_key(&format!("refs/namespaces/a/refs/heads/{branch}"))
                    && !on_server.contains_key(&format!("refs/heads/{branch}")),
                "{front} push with {client}: {on_server:?}"
            );
        }
        fsck(&setup.dir, &client, &root.join("own.git"));
    }
}

/// `packgate daemon` serves the namespace of its `GIT_NAMESPACE`, as git daemon's services
/// inherit it.
#[test]
fn daemon_serves_the_namespace_of_its_environment() {
    let git = Git::newest();
    let setup = Setup::new(&git);
    let base = format!("--base-path={}", setup.dir.path().display());
    let daemon = crate::daemon::Daemon::start_with_env(
        &setup.dir,
        &["--export-all", &base],
        &[("GIT_NAMESPACE", Some(std::ffi::OsStr::new("a")))],
    );
    let expected = setup
        .dir
        .git(&git)
        .args(["ls-remote", "--symref"])
        .arg(upload_pack("a", Some(&git)))
        .arg(file_url(&setup.server))
        .run();
    for version in ["0", "2"] {
        let actual = setup
            .dir
            .git(&git)
            .args(["-c", &format!("protocol.version={version}"), "ls-remote"])
            .arg("--symref")
            .arg(daemon.url("/server.git"))
            .run();
        assert_eq!(
            without_repeats(&actual.stdout_text()),
            without_repeats(&expected.stdout_text()),
            "v{version}"
        );
        assert!(actual.stdout_text().contains("refs/heads/other"));
    }
}
