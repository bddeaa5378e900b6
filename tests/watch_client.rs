//! The client side of the refs watch (docs/refs-watch.md): `packgate watch` over git:// and
//! a local path prints the changes real git pushes and fails when the server goes away or
//! cannot be watched; `packgate mirror` skips an update whose remote is unchanged (no
//! `fetch` request sent, as the upstream's recorded input shows) and still follows a change;
//! so does `packgate serve`'s mirror refresh (its debug log says so).

// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::daemon::Daemon;
use crate::http::{root_with, Push, Server, ServerOptions};
use crate::util::{fsck, refs, shared_fixture, write_file, Cmd, Dir, Git, PACKGATE};

/// The bound on every wait for a line or an exit.
const LIMIT: Duration = Duration::from_secs(20);

/// `packgate watch <args>` with its output lines arriving on channels (stderr with its
/// `watching` debug line, which says the first listing was read).
struct Watcher {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Watcher {
    fn start(args: &[&str]) -> Watcher {
        Watcher::start_in(None, args)
    }

    /// [`Watcher::start`] in the directory `cwd` (by default the test's own).
    fn start_in(cwd: Option<&Path>, args: &[&str]) -> Watcher {
        let mut command = Command::new(PACKGATE);
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let mut child = command
            .arg("watch")
            .args(args)
            .env("PACKGATE_LOG", "packgate::watch=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = |pipe: Box<dyn std::io::Read + Send>| {
            let (sender, receiver) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if sender.send(line).is_err() {
                        return;
                    }
                }
            });
            receiver
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        Watcher {
            child,
            stdout,
            stderr,
        }
    }

    /// Wait for the stderr line that says the watch has its first listing.
    fn wait_ready(&self) {
        loop {
            let line = self
                .stderr
                .recv_timeout(LIMIT)
                .unwrap_or_else(|err| panic!("packgate watch never got ready: {err}"));
            if line.contains("watching") {
                return;
            }
        }
    }

    fn next_line(&self) -> String {
        self.stdout
            .recv_timeout(LIMIT)
            .unwrap_or_else(|err| panic!("packgate watch printed no line: {err}"))
    }

    /// Wait for the exit (bounded): its status and the rest of its stderr.
    fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "packgate watch did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr: Vec<String> = self.stderr.try_iter().collect();
        (status, stderr.join("\n"))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// git in the work tree `work`.
fn in_work(dir: &Dir, git: &Git, work: &Path) -> Cmd {
    dir.git(git).arg("-C").arg(work)
}

/// A work tree cloned from `url` with one more commit on `main` than it: the commit.
fn commit_ahead(dir: &Dir, git: &Git, url: &str, name: &str) -> (std::path::PathBuf, String) {
    let work = dir.join(name);
    dir.git(git).args(["clone", "-q", url]).arg(&work).run();
    in_work(dir, git, &work)
        .args(["checkout", "-q", "-B", "main"])
        .run();
    in_work(dir, git, &work)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(["commit", "-q", "--allow-empty", "-m", "watched"])
        .run();
    let id = in_work(dir, git, &work)
        .args(["rev-parse", "HEAD"])
        .run()
        .stdout_text()
        .trim()
        .to_owned();
    (work, id)
}

/// `<old> <new> <name>` as `packgate watch` prints it.
fn expected_line(old: Option<&str>, new: &str, name: &str) -> String {
    let zeros = "0".repeat(40);
    format!("{} {new} {name}", old.unwrap_or(&zeros))
}

#[test]
fn watch_over_git_prints_a_pushed_change_and_fails_when_the_server_goes_away() {
    let git = Git::newest();
    let dir = Dir::new("watch-git");
    let root = root_with(&dir, "small");
    let served = root.join("small.git");
    let server = Server::start(&root, Push::AllowedWithoutAuthentication);
    let before = refs(&dir, &git, &served, &["refs/heads/main"]);
    let old = before.get("refs/heads/main").cloned();
    let (work, id) = commit_ahead(&dir, &git, &served.display().to_string(), "work");

    let url = server.git_url("small.git");
    let watcher = Watcher::start(&["--timeout", "5", "--prefix", "refs/heads/", &url]);
    watcher.wait_ready();
    // A push through packgate's HTTP front-end, by real git.
    in_work(&dir, &git, &work)
        .args([
            "push",
            "-q",
            &server.http_url("small.git"),
            "HEAD:refs/heads/main",
        ])
        .run();
    assert_eq!(
        watcher.next_line(),
        expected_line(old.as_deref(), &id, "refs/heads/main")
    );
    // A new branch, outside and inside the prefix: only the one inside is printed.
    in_work(&dir, &git, &work)
        .args(["push", "-q", &server.http_url("small.git")])
        .args(["HEAD:refs/tags/not-watched", "HEAD:refs/heads/watched"])
        .run();
    assert_eq!(
        watcher.next_line(),
        expected_line(None, &id, "refs/heads/watched")
    );

    drop(server);
    let (status, stderr) = watcher.wait_exit();
    assert!(
        !status.success(),
        "exited successfully after the server went away"
    );
    assert!(stderr.contains("fatal:"), "{stderr}");
}

#[test]
fn watch_over_a_local_path_sees_real_gits_push() {
    let git = Git::newest();
    let dir = Dir::new("watch-local");
    let repo = dir.join("r.git");
    dir.copy_tree(&shared_fixture("small").path, &repo);
    let old = refs(&dir, &git, &repo, &["refs/heads/main"])
        .get("refs/heads/main")
        .cloned();
    let (work, id) = commit_ahead(&dir, &git, &repo.display().to_string(), "work");
    let watcher = Watcher::start(&["--timeout", "5", &repo.display().to_string()]);
    watcher.wait_ready();
    // git's own receive-pack writes the refs: the watch's server notices on its re-check.
    // Every ref is watched: HEAD, which points at main, moves with it.
    in_work(&dir, &git, &work)
        .args(["push", "-q", "origin", "HEAD:refs/heads/main"])
        .run();
    assert_eq!(
        [watcher.next_line(), watcher.next_line()],
        [
            expected_line(old.as_deref(), &id, "HEAD"),
            expected_line(old.as_deref(), &id, "refs/heads/main")
        ]
    );
}

/// The repository named as users name it: a relative path with a space, through a symlink,
/// for the watch and for the push (packgate's receive-pack, as git runs it for a local
/// remote: the path as given, from the pusher's directory).
#[test]
fn watch_over_a_relative_path_with_a_space_through_a_symlink() {
    let git = Git::newest();
    let dir = Dir::new("watch-relative");
    let repo = dir.join("r.git");
    dir.copy_tree(&shared_fixture("small").path, &repo);
    std::os::unix::fs::symlink("r.git", dir.join("my repo.git")).unwrap();
    let old = refs(&dir, &git, &repo, &["refs/heads/main"])
        .get("refs/heads/main")
        .cloned();
    let (work, id) = commit_ahead(&dir, &git, &repo.display().to_string(), "work");
    let watcher = Watcher::start_in(
        Some(dir.path()),
        &["--timeout", "5", "--prefix", "refs/heads/", "./my repo.git"],
    );
    watcher.wait_ready();
    in_work(&dir, &git, &work)
        .arg("push")
        .arg("-q")
        .arg(format!("--receive-pack={PACKGATE} receive-pack"))
        .args(["../my repo.git", "HEAD:refs/heads/main"])
        .run();
    assert_eq!(
        watcher.next_line(),
        expected_line(old.as_deref(), &id, "refs/heads/main")
    );
    fsck(&dir, &git, &repo);
}

#[test]
fn watch_refuses_a_server_without_wait_refs() {
    let git = Git::newest();
    let dir = Dir::new("watch-daemon");
    let served = dir.join("served");
    std::fs::create_dir_all(&served).unwrap();
    dir.copy_tree(&shared_fixture("small").path, &served.join("r.git"));
    let daemon = Daemon::start_git(
        &dir,
        &git,
        &["--export-all", &format!("--base-path={}", served.display())],
    );
    let watcher = Watcher::start(&[&daemon.url("/r.git")]);
    let (status, stderr) = watcher.wait_exit();
    assert!(!status.success());
    assert!(stderr.contains("does not support wait-refs"), "{stderr}");
}

/// A program for `--upload-pack` that records what the client sends, then runs packgate's
/// upload-pack.
fn recording_upload_pack(dir: &Dir, log: &Path) -> String {
    let script = dir.join("recording-upload-pack");
    write_file(
        &script,
        format!(
            "#!/bin/sh\ntee -a '{}' | '{}' upload-pack \"$@\"\n",
            log.display(),
            PACKGATE
        )
        .as_bytes(),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script.display().to_string()
}

#[test]
fn a_mirror_update_with_nothing_new_sends_no_fetch() {
    let git = Git::newest();
    let dir = Dir::new("watch-mirror");
    let upstream = dir.join("upstream.git");
    dir.copy_tree(&shared_fixture("small").path, &upstream);
    let mirror = dir.join("mirror.git");
    let log = dir.join("requests");
    let program = recording_upload_pack(&dir, &log);
    let update = |dir: &Dir| {
        std::fs::write(&log, b"").unwrap();
        let output = dir
            .packgate()
            .args(["mirror", "--upload-pack", &program])
            .arg(&upstream)
            .arg(&mirror)
            .run();
        (
            String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned(),
            output.stderr_text(),
        )
    };
    let (first, _) = update(&dir);
    assert!(first.contains("command=fetch"), "{first}");
    assert_eq!(
        refs(&dir, &git, &mirror, &[]),
        refs(&dir, &git, &upstream, &[])
    );

    // Nothing new: one ls-refs with the last token, answered unchanged; no fetch.
    let (second, stderr) = update(&dir);
    assert!(second.contains("if-none-match "), "{second}");
    assert!(!second.contains("command=fetch"), "{second}");
    assert_eq!(stderr, "");

    // Upstream moves: the next update fetches it.
    let (work, id) = commit_ahead(&dir, &git, &upstream.display().to_string(), "work");
    in_work(&dir, &git, &work)
        .args([
            "push",
            "-q",
            "origin",
            "HEAD:refs/heads/main",
            "HEAD:refs/heads/new",
        ])
        .run();
    let (third, _) = update(&dir);
    assert!(third.contains("if-none-match "), "{third}");
    assert!(third.contains("command=fetch"), "{third}");
    let mirrored = refs(&dir, &git, &mirror, &[]);
    assert_eq!(mirrored, refs(&dir, &git, &upstream, &[]));
    assert_eq!(mirrored.get("refs/heads/new"), Some(&id));
    fsck(&dir, &git, &mirror);

    // The mirror changed by someone else: its token is not offered, the ref comes back.
    dir.git_in(&git, &mirror)
        .args(["update-ref", "-d", "refs/heads/new"])
        .run();
    let (fourth, _) = update(&dir);
    assert!(!fourth.contains("if-none-match "), "{fourth}");
    assert_eq!(
        refs(&dir, &git, &mirror, &[]),
        refs(&dir, &git, &upstream, &[])
    );
}

#[test]
fn a_mirror_refresh_of_serve_skips_an_unchanged_upstream() {
    let git = Git::newest();
    let dir = Dir::new("watch-serve-mirror");
    let upstream = dir.join("upstream.git");
    dir.copy_tree(&shared_fixture("small").path, &upstream);
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let config = dir.join("serve.toml");
    write_file(
        &config,
        format!(
            "[[mirror]]\npath = \"m.git\"\nurl = \"{}\"\ninterval = \"1h\"\n",
            upstream.display()
        )
        .as_bytes(),
    );
    let server = Server::start_with(
        &root,
        &ServerOptions {
            config: Some(config),
            log_filter: Some("info,packgate_protocol::client=debug"),
            ..ServerOptions::new(Push::Refused)
        },
    );
    let count = |text: &str| server.log_text().matches(text).count();
    let wait_for = |what: &str, check: &dyn Fn() -> bool| {
        let started = std::time::Instant::now();
        while !check() {
            assert!(
                started.elapsed() < LIMIT * 3,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("the mirror's creation", &|| {
        count("refreshed from upstream") == 1
    });
    assert_eq!(
        refs(&dir, &git, &root.join("m.git"), &[]),
        refs(&dir, &git, &upstream, &[])
    );
    // A refresh with nothing new upstream: unchanged, nothing fetched.
    let hangup = || {
        Cmd::new(Path::new("kill"))
            .args(["-HUP", &server.pid().to_string()])
            .run();
    };
    hangup();
    wait_for("the second refresh", &|| {
        count("refreshed from upstream") == 2
    });
    assert_eq!(
        count("the remote's refs are unchanged"),
        1,
        "{}",
        server.log_text()
    );
    // Upstream moves: the next refresh fetches it.
    let (work, _) = commit_ahead(&dir, &git, &upstream.display().to_string(), "work");
    in_work(&dir, &git, &work)
        .args(["push", "-q", "origin", "HEAD:refs/heads/moved"])
        .run();
    hangup();
    wait_for("the third refresh", &|| {
        count("refreshed from upstream") == 3
    });
    assert_eq!(
        count("the remote's refs are unchanged"),
        1,
        "{}",
        server.log_text()
    );
    assert_eq!(
        refs(&dir, &git, &root.join("m.git"), &[]),
        refs(&dir, &git, &upstream, &[])
    );
}
