//! `packgate serve`: the README's serve command, over git:// on loopback.

use std::{io::Write, time::Duration};

use crate::{
    http::{Push, Server, ServerOptions},
    util::{assert_same_refs, fsck, refs, shared_fixture, write_file, Dir, Git},
};

#[test]
fn clone_over_git_protocol() {
    let source = shared_fixture("small");
    let dir = Dir::new("serve-clone");
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|error| panic!("mkdir: {error}"));
    dir.copy_tree(&source.path, &root.join("small.git"));
    let server = Server::start(&root, Push::Refused);
    for (n, git) in Git::all().into_iter().enumerate() {
        let destination = dir.join(&format!("clone-{n}"));
        dir.git(&git)
            .args(["-c", "protocol.version=2", "clone", "--mirror"])
            .arg(server.git_url("small.git"))
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
    std::os::unix::fs::symlink(dir.join("outside.git"), root.join("link.git"))
        .unwrap_or_else(|error| panic!("symlink: {error}"));
    let server = Server::start(&root, Push::Refused);
    let git = Git::newest();
    let absolute = dir.join("outside.git").display().to_string();
    for path in [
        "../outside.git",
        "%2e%2e/outside.git",
        "missing.git",
        "link.git",
        absolute.trim_start_matches('/'),
    ] {
        let output = dir
            .git(&git)
            .args(["-c", "protocol.version=2", "ls-remote"])
            .arg(server.git_url(path))
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
        .arg(server.git_url("tiny.git"))
        .output();
    assert!(!output.status.success(), "v0 must be refused: {output}");
    assert!(
        output.stderr_text().contains("protocol v2 only"),
        "{output}"
    );
    let output = dir
        .git(&git)
        .args(["push", "--dry-run"])
        .arg(server.git_url("tiny.git"))
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
        .arg(server.git_url("tiny.git"))
        .run();
}

/// `--config FILE`: push over git:// for every repository and the idle timeout come from the
/// file; a typo in it stops the server with the key's name.
#[test]
fn config_file_settings() {
    let source = shared_fixture("tiny");
    let dir = Dir::new("serve-config");
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|error| panic!("mkdir: {error}"));
    let served = root.join("tiny.git");
    dir.copy_tree(&source.path, &served);
    let config = dir.join("packgate.toml");
    write_file(&config, b"[git]\nreceive-pack = true\ntimeout = 2\n");
    let server = Server::start_with(
        &root,
        &ServerOptions {
            config: Some(config),
            ..ServerOptions::new(Push::Refused)
        },
    );
    for (n, git) in Git::all().into_iter().enumerate() {
        crate::sessions::clone_commit_and_push(
            &dir,
            &git,
            &server.git_url("tiny.git"),
            &served,
            &format!("from-config-{n}"),
        );
    }
    // A client that stops in the middle of a request is cut off after `timeout`.
    let address = server
        .git_url("")
        .trim_start_matches("git://")
        .trim_end_matches('/')
        .to_owned();
    let mut stalled = crate::sessions::open_session(&address, "/tiny.git");
    stalled
        .write_all(&crate::pkt::line(b"command=ls-refs\n"))
        .unwrap_or_else(|error| panic!("sending half a request: {error}"));
    let started = std::time::Instant::now();
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap_or_else(|error| panic!("set_read_timeout: {error}"));
    let mut rest = Vec::new();
    let read = std::io::Read::read_to_end(&mut stalled, &mut rest);
    assert!(
        read.is_ok() || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "not closed: {read:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "closed only after {:?}",
        started.elapsed()
    );

    let bad = dir.join("bad.toml");
    write_file(&bad, b"[git]\ntimeuot = 2\n");
    let output = dir
        .packgate()
        .args(["serve", "--config"])
        .arg(&bad)
        .arg(&root)
        .output();
    assert!(!output.status.success(), "{output}");
    assert!(output.stderr_text().contains("timeuot"), "{output}");
}
