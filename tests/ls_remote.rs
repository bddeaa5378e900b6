//! `git ls-remote` with protocol v2 through packgate prints what it prints through git's own
//! upload-pack.

use std::path::Path;

use crate::util::{
    file_url, git_upload_pack_option, packgate_upload_pack_option, preset_spec, shared_fixture,
    Dir, Git,
};

/// Options and patterns of each `ls-remote` run.
const VARIANTS: &[(&[&str], &[&str])] = &[
    (&[], &[]),
    (&["--symref"], &[]),
    (&["--symref"], &["HEAD"]),
    (&[], &["main"]),
    (&[], &["v1.*"]),
    (&[], &["refs/heads/topic/*"]),
    (&["--heads"], &[]),
    (&["--tags"], &[]),
    (&["--tags"], &["many/0000*"]),
    (&[], &["no-such-ref"]),
    (&["--symref"], &["refs/heads/alias", "refs/pull/*"]),
];

fn check_ls_remote(preset: &str) {
    let source = shared_fixture(preset);
    for git in Git::all() {
        let dir = Dir::new("ls-remote");
        compare_ls_remote(&dir, &git, &source.path, preset);
    }
}

/// Runs every variant through both servers and compares what `git ls-remote` prints.
fn compare_ls_remote(dir: &Dir, git: &Git, source: &Path, what: &str) {
    for (options, patterns) in VARIANTS {
        let ls_remote = |upload_pack: String| {
            dir.git(git)
                .args(["-c", "protocol.version=2", "ls-remote"])
                .arg(upload_pack)
                .args(*options)
                .arg(file_url(source))
                .args(*patterns)
                .output()
        };
        let expected = ls_remote(git_upload_pack_option(git));
        let actual = ls_remote(packgate_upload_pack_option());
        let context = format!("{what}: ls-remote {options:?} {patterns:?} with {git}");
        assert!(
            expected.status.success(),
            "{context}: git's own failed: {expected}"
        );
        assert!(actual.status.success(), "{context}: {actual}");
        assert!(
            actual.stdout == expected.stdout,
            "{context}: packgate printed{actual}\n\ngit's upload-pack printed{expected}"
        );
    }
}

#[test]
fn empty() {
    check_ls_remote("empty");
}

#[test]
fn tiny() {
    check_ls_remote("tiny");
}

#[test]
fn small() {
    check_ls_remote("small");
}

#[test]
fn many_refs() {
    check_ls_remote("many-refs");
}

/// Refs outside heads and tags, a symbolic ref besides `HEAD`, a detached `HEAD`, and a
/// `HEAD` pointing at a branch that doesn't exist in a repository that has others.
#[test]
fn unusual_refs_and_heads() {
    for git in Git::all() {
        let dir = Dir::new("unusual-refs");
        let source = dir.fixture(&preset_spec("tiny"));
        let repo = &source.path;
        for args in [
            &["update-ref", "refs/notes/commits", "main"][..],
            &["update-ref", "refs/pull/1/head", "main~1"],
            &["update-ref", "refs/remotes/upstream/main", "main~2"],
            &["symbolic-ref", "refs/heads/alias", "refs/heads/main"],
        ] {
            dir.git_in(&git, repo).args(args).run();
        }
        compare_ls_remote(&dir, &git, repo, "unusual refs");

        let main = dir.git_in(&git, repo).args(["rev-parse", "main~1"]).run();
        dir.git_in(&git, repo)
            .args(["update-ref", "--no-deref", "HEAD"])
            .arg(main.stdout_text().trim())
            .run();
        compare_ls_remote(&dir, &git, repo, "detached HEAD");

        dir.git_in(&git, repo)
            .args(["symbolic-ref", "HEAD", "refs/heads/gone"])
            .run();
        compare_ls_remote(&dir, &git, repo, "unborn HEAD");
    }
}

/// A path that is no repository: the user sees what git's upload-pack makes the client print
/// (`fatal: '<path>' does not appear to be a git repository` above the client's own lines),
/// in every protocol version, and the client fails.
#[test]
fn missing_repository_reads_as_with_git() {
    for git in Git::all() {
        let dir = Dir::new("ls-remote-missing");
        for version in ["0", "2"] {
            let ls_remote = |upload_pack: String| {
                let output = dir
                    .git(&git)
                    .args(["-c", &format!("protocol.version={version}"), "ls-remote"])
                    .arg(upload_pack)
                    .arg("refs*main")
                    .output();
                assert!(!output.status.success(), "{git} v{version}: {output}");
                output.stderr_text()
            };
            let ours = ls_remote(packgate_upload_pack_option());
            let theirs = ls_remote(git_upload_pack_option(&git));
            assert!(
                ours.starts_with("fatal: 'refs*main' does not appear to be a git repository\n"),
                "{git} v{version}: {ours}"
            );
            assert_eq!(ours, theirs, "{git} v{version}");
        }
    }
}
