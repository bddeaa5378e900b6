//! `packgate serve`: the README's serve command, over git:// on loopback.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use crate::util::{assert_same_refs, fsck, refs, shared_fixture, Dir, Git, PACKGATE};

/// A running `packgate serve`, killed when dropped.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    /// Serve `root` on an ephemeral loopback port and wait (bounded) for its ready line.
    fn start(root: &std::path::Path) -> Server {
        let mut child = Command::new(PACKGATE)
            .args(["serve", "--git", "127.0.0.1:0"])
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start packgate serve: {error}"));
        let stderr = child
            .stderr
            .take()
            .unwrap_or_else(|| panic!("no stderr pipe"));
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let ready = receiver
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|error| panic!("packgate serve printed no ready line: {error}"));
        let address = ready
            .split("git://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected ready line: {ready}"))
            .to_owned();
        Server { child, address }
    }

    fn url(&self, path: &str) -> String {
        format!("git://{}/{path}", self.address)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn clone_over_git_protocol() {
    let source = shared_fixture("small");
    let dir = Dir::new("serve-clone");
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|error| panic!("mkdir: {error}"));
    dir.copy_tree(&source.path, &root.join("small.git"));
    let server = Server::start(&root);
    for (n, git) in Git::all().into_iter().enumerate() {
        let destination = dir.join(&format!("clone-{n}"));
        dir.git(&git)
            .args(["-c", "protocol.version=2", "clone", "--mirror"])
            .arg(server.url("small.git"))
            .arg(&destination)
            .run();
        fsck(&dir, &git, &destination);
        let expected = refs(&dir, &git, &source.path, &[]);
        let actual = refs(&dir, &git, &destination, &[]);
        assert_same_refs(
            &expected,
            &actual,
            &format!("git:// mirror clone with {git}"),
        );
    }
}

#[test]
fn refuses_paths_outside_the_root_and_unsupported_requests() {
    let source = shared_fixture("tiny");
    let dir = Dir::new("serve-refuse");
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|error| panic!("mkdir: {error}"));
    dir.copy_tree(&source.path, &root.join("tiny.git"));
    // A repository beside the root, reachable only by escaping it.
    dir.copy_tree(&source.path, &dir.join("outside.git"));
    let server = Server::start(&root);
    let git = Git::newest();
    for path in ["../outside.git", "%2e%2e/outside.git", "missing.git"] {
        let output = dir
            .git(&git)
            .args(["-c", "protocol.version=2", "ls-remote"])
            .arg(server.url(path))
            .output();
        assert!(!output.status.success(), "{path} must be refused: {output}");
        assert!(
            output
                .stderr_text()
                .contains("access denied or repository not exported"),
            "{path}: {output}"
        );
    }
    let output = dir
        .git(&git)
        .args(["-c", "protocol.version=0", "ls-remote"])
        .arg(server.url("tiny.git"))
        .output();
    assert!(!output.status.success(), "v0 must be refused: {output}");
    assert!(
        output.stderr_text().contains("protocol v2 only"),
        "{output}"
    );
    let output = dir
        .git(&git)
        .args(["push", "--dry-run"])
        .arg(server.url("tiny.git"))
        .arg("refs/heads/main:refs/heads/other")
        .current_dir(&source.path)
        .output();
    assert!(
        !output.status.success(),
        "push over git:// must be refused: {output}"
    );
    // The server is still serving after all of that.
    dir.git(&git)
        .args(["-c", "protocol.version=2", "ls-remote"])
        .arg(server.url("tiny.git"))
        .run();
}
