//! `git ls-remote` with protocol v2 through packgate prints what it prints through git's own
//! upload-pack.

use crate::util::{
    file_url, git_upload_pack_option, packgate_upload_pack_option, shared_fixture, Dir, Git,
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
];

fn check_ls_remote(preset: &str) {
    let source = shared_fixture(preset);
    for git in Git::all() {
        let dir = Dir::new("ls-remote");
        for (options, patterns) in VARIANTS {
            let ls_remote = |upload_pack: String| {
                dir.git(&git)
                    .args(["-c", "protocol.version=2", "ls-remote"])
                    .arg(upload_pack)
                    .args(*options)
                    .arg(file_url(&source.path))
                    .args(*patterns)
                    .output()
            };
            let expected = ls_remote(git_upload_pack_option(&git));
            let actual = ls_remote(packgate_upload_pack_option());
            let context = format!("{preset}: ls-remote {options:?} {patterns:?} with {git}");
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
