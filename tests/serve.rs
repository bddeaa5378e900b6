//! `packgate serve`: the README's serve command, over git:// on loopback.

use crate::{
    http::{Push, Server},
    util::{assert_same_refs, fsck, refs, shared_fixture, Dir, Git},
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
    let server = Server::start(&root, Push::Refused);
    let git = Git::newest();
    for path in ["../outside.git", "%2e%2e/outside.git", "missing.git"] {
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
