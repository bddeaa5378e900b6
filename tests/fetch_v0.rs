//! Protocol v0 and v1 fetches through `packgate upload-pack` over stdio (file://): clones,
//! incremental fetches (tags included), a fork far ahead of its parent and an empty
//! repository, with every git and `protocol.version=0` and `=1`.

use packgate_fixture::{append_commits, Append};

use crate::fetch::{fetch_and_count, move_source_forward};
use crate::util::{
    assert_same_refs, file_url, fsck, git_upload_pack_option, packgate_upload_pack_command,
    packgate_upload_pack_option, preset_spec, refs, rename_refs, Dir, Git,
};

const VERSIONS: [&str; 2] = ["0", "1"];

/// Bare, mirror and work-tree clones hold the source's refs and pass fsck; a later fetch in
/// the work tree after the source moved forward brings its branches and tags.
#[test]
fn clone_and_fetch() {
    for git in Git::all() {
        for version in VERSIONS {
            let context = format!("{git}, protocol.version={version}");
            let dir = Dir::new("v0-clone");
            let source = dir.fixture(&preset_spec("small"));
            let protocol = format!("protocol.version={version}");
            for (kind, flag) in [("bare", "--bare"), ("mirror", "--mirror")] {
                let clone = dir.join(&format!("{kind}.git"));
                dir.git(&git)
                    .args(["-c", &protocol, "clone", flag])
                    .arg(packgate_upload_pack_option())
                    .arg(file_url(&source.path))
                    .arg(&clone)
                    .run();
                let patterns: &[&str] = if kind == "bare" {
                    &["refs/heads", "refs/tags"]
                } else {
                    &[]
                };
                assert_same_refs(
                    &refs(&dir, &git, &clone, patterns),
                    &refs(&dir, &git, &source.path, patterns),
                    &format!("{context}, {kind} clone"),
                );
                fsck(&dir, &git, &clone);
            }

            let clone = dir.join("work");
            dir.git(&git)
                .args(["-c", &protocol, "clone"])
                .arg(packgate_upload_pack_option())
                .arg(file_url(&source.path))
                .arg(&clone)
                .run();
            dir.git(&git)
                .current_dir(&clone)
                .args(["config", "remote.origin.uploadpack"])
                .arg(packgate_upload_pack_command())
                .run();
            move_source_forward(&dir, &git, &source.path);
            dir.git(&git)
                .current_dir(&clone)
                .args(["-c", &protocol, "fetch", "--prune", "origin"])
                .run();
            let mut remote = refs(&dir, &git, &clone.join(".git"), &["refs/remotes/origin"]);
            remote.remove("refs/remotes/origin/HEAD");
            assert_same_refs(
                &rename_refs(&remote, "refs/remotes/origin/", "refs/heads/"),
                &refs(&dir, &git, &source.path, &["refs/heads"]),
                &format!("{context}, fetch"),
            );
            assert_same_refs(
                &refs(&dir, &git, &clone.join(".git"), &["refs/tags"]),
                &refs(&dir, &git, &source.path, &["refs/tags"]),
                &format!("{context}, fetched tags"),
            );
            fsck(&dir, &git, &clone.join(".git"));
        }
    }
}

/// A client that is a fork far ahead of its parent (hundreds of commits the server lacks,
/// so negotiation takes many rounds of haves) fetches the parent's new commits: packgate
/// sends no more objects than git's upload-pack does for the same fetch.
#[test]
fn fork_far_ahead_fetches_no_more_objects_than_git() {
    for git in Git::all() {
        for version in VERSIONS {
            let context = format!("{git}, protocol.version={version}");
            let dir = Dir::new("v0-fork");
            let source = dir.fixture(&preset_spec("small"));
            let through_git = dir.join("through-git.git");
            let through_packgate = dir.join("through-packgate.git");
            dir.git(&git)
                .args(["-c", "protocol.version=2", "clone", "--bare"])
                .arg(git_upload_pack_option(&git))
                .arg(file_url(&source.path))
                .arg(&through_git)
                .run();
            let fork = Append {
                branch: "fork".to_owned(),
                commits: 300,
                seed: 99,
                git: git.program.clone(),
                ..Append::default()
            };
            append_commits(&through_git, &fork).unwrap_or_else(|err| panic!("{context}: {err}"));
            dir.copy_tree(&through_git, &through_packgate);
            for repo in [&through_git, &through_packgate] {
                dir.git_in(&git, repo)
                    .args(["config", "remote.origin.fetch", "+refs/*:refs/*"])
                    .run();
            }
            move_source_forward(&dir, &git, &source.path);
            let by_packgate = fetch_and_count(
                &dir,
                &git,
                &through_packgate,
                packgate_upload_pack_option(),
                version,
            );
            let by_git = fetch_and_count(
                &dir,
                &git,
                &through_git,
                git_upload_pack_option(&git),
                version,
            );
            assert!(
                by_packgate <= by_git,
                "{context}: packgate sent {by_packgate} objects, git {by_git}"
            );
            assert_same_refs(
                &refs(&dir, &git, &through_packgate, &[]),
                &refs(&dir, &git, &source.path, &[]),
                &context,
            );
            fsck(&dir, &git, &through_packgate);
        }
    }
}

/// Cloning an empty repository succeeds (`capabilities^{}`), and so does fetching it.
#[test]
fn empty_repository() {
    for git in Git::all() {
        for version in VERSIONS {
            let dir = Dir::new("v0-empty");
            let source = dir.join("empty.git");
            dir.git(&git)
                .args(["init", "--quiet", "--bare"])
                .arg(&source)
                .run();
            let clone = dir.join("clone");
            let output = dir
                .git(&git)
                .args(["-c", &format!("protocol.version={version}"), "clone"])
                .arg(packgate_upload_pack_option())
                .arg(file_url(&source))
                .arg(&clone)
                .run();
            assert!(
                output.stderr_text().contains("empty repository"),
                "{git}, protocol.version={version}: {output}"
            );
            fsck(&dir, &git, &clone.join(".git"));
        }
    }
}

/// The v0/v1 reference advertisement is git's, line for line (peeled tags, `symref=`,
/// `version 1`, `no-done` only for `--advertise-refs`), except for the capabilities packgate
/// does not implement (shallow, deepen-*) and the agent.
#[test]
fn advertisement_matches_git() {
    let git = Git::newest();
    let dir = Dir::new("v0-advertisement");
    let source = dir.fixture(&preset_spec("small"));
    dir.git_in(&git, &source.path)
        .args(["tag", "-a", "-m", "Release", "v9", "main"])
        .run();
    let empty = dir.join("empty.git");
    dir.git(&git)
        .args(["init", "--quiet", "--bare"])
        .arg(&empty)
        .run();
    let normalize = |stdout: &[u8]| -> String {
        let text = String::from_utf8_lossy(stdout)
            .replace(" shallow deepen-since deepen-not deepen-relative", "");
        match text.find(" agent=") {
            Some(start) => {
                let end = text[start..].find('\n').map_or(text.len(), |n| start + n);
                format!("{}{}", &text[..start], &text[end..])
            }
            None => text,
        }
    };
    for repo in [&source.path, &empty] {
        for protocol in [None, Some("version=1")] {
            for options in [&["--advertise-refs"][..], &[]] {
                let run = |mut command: crate::util::Cmd| {
                    if let Some(protocol) = protocol {
                        command = command.env("GIT_PROTOCOL", protocol);
                    }
                    command
                        .args(options)
                        .arg(repo)
                        .stdin(b"0000".to_vec())
                        .run()
                };
                let ours = run(dir.packgate().arg("upload-pack"));
                let theirs = run(dir.git(&git).arg("upload-pack"));
                let context = format!("{}, {protocol:?}, {options:?}", repo.display());
                assert!(ours.stdout.len() > 50, "{context}: {ours}");
                // Lengths differ with the capabilities: compare the text only.
                let strip = |text: String| -> Vec<String> {
                    text.split('\n')
                        .map(|line| line.get(4..).unwrap_or_default().to_owned())
                        .collect()
                };
                assert_eq!(
                    strip(normalize(&ours.stdout)),
                    strip(normalize(&theirs.stdout)),
                    "{context}"
                );
            }
        }
    }
}
