//! Wants of objects that are not advertised ref tips, fetched by id with `git fetch <url>
//! <oid>`: by default packgate serves any object it has over protocol v2, as git 2.47 does;
//! with `packgate.restrictV2Wants` it applies git's v0/v1 rules (`uploadpack.allowTipSHA1InWant`,
//! `allowReachableSHA1InWant`, `allowAnySHA1InWant`), so hidden refs stay unreachable by id.

use std::path::Path;

use crate::util::{
    file_url, git_upload_pack_option, packgate_upload_pack_option, preset_spec, Dir, Git,
};

/// The three kinds of object a want can name that are not visible tips.
struct Objects {
    /// A commit reachable from `main`, not a tip.
    reachable: String,
    /// The tip of `refs/hidden/x`, hidden by `uploadpack.hideRefs`.
    hidden: String,
    /// A commit no ref reaches.
    dangling: String,
}

/// Adds the objects of [`Objects`] to `repo` and hides `refs/hidden`.
fn prepare(dir: &Dir, git: &Git, repo: &Path) -> Objects {
    let text = |args: &[&str]| {
        dir.git_in(git, repo)
            .args(args)
            .run()
            .stdout_text()
            .trim()
            .to_owned()
    };
    let child = |parent: &str, message: &str| {
        text(&["commit-tree", "main^{tree}", "-p", parent, "-m", message])
    };
    let reachable = child("main", "reachable, not a tip");
    let new_main = child(&reachable, "the new tip of main");
    text(&["update-ref", "refs/heads/main", &new_main]);
    let hidden = child("main", "hidden");
    text(&["update-ref", "refs/hidden/x", &hidden]);
    let dangling = child("main", "dangling");
    text(&["config", "uploadpack.hideRefs", "refs/hidden"]);
    Objects {
        reachable,
        hidden,
        dangling,
    }
}

/// Whether `git fetch` of `oid` from `source` through `upload_pack` (an `--upload-pack=`
/// option) succeeds; a failure must be git's report of the server's `not our ref`.
fn fetches(dir: &Dir, git: &Git, upload_pack: &str, source: &Path, oid: &str, n: usize) -> bool {
    let client = dir.join(&format!("client-{n}"));
    dir.git(git)
        .args(["init", "--quiet", "--bare"])
        .arg(&client)
        .run();
    let output = dir
        .git_in(git, &client)
        .args(["-c", "protocol.version=2", "fetch", "--quiet"])
        .arg(upload_pack)
        .arg(file_url(source))
        .arg(oid)
        .output();
    if output.status.success() {
        let object_type = dir.git_in(git, &client).args(["cat-file", "-t", oid]).run();
        assert_eq!(object_type.stdout_text().trim(), "commit", "{output}");
        return true;
    }
    assert!(
        output.stderr_text().contains("not our ref"),
        "fetch of {oid} failed otherwise: {output}"
    );
    false
}

#[test]
fn v2_wants_of_any_object_as_git_and_restricted_on_request() {
    for git in Git::all() {
        let dir = Dir::new("wants");
        let source = dir.fixture(&preset_spec("tiny")).path;
        let objects = prepare(&dir, &git, &source);
        let all = [
            ("reachable", &objects.reachable),
            ("hidden", &objects.hidden),
            ("dangling", &objects.dangling),
        ];
        let mut n = 0;
        let mut fetch = |upload_pack: &str, oid: &str| {
            n += 1;
            fetches(&dir, &git, upload_pack, &source, oid, n)
        };

        // The reference: git's own upload-pack serves each of them over v2, and so does
        // packgate by default.
        for (name, oid) in all {
            assert!(
                fetch(&git_upload_pack_option(&git), oid),
                "git's upload-pack refused the {name} commit ({git})"
            );
            assert!(
                fetch(&packgate_upload_pack_option(), oid),
                "packgate refused the {name} commit by default ({git})"
            );
        }

        // packgate.restrictV2Wants: git's v0/v1 rules, setting by setting.
        let config = |key: &str, value: Option<&str>| {
            let mut command = dir.git_in(&git, &source).arg("config");
            command = match value {
                Some(value) => command.args([key, value]),
                None => command.args(["--unset", key]),
            };
            command.run();
        };
        config("packgate.restrictV2Wants", Some("true"));
        let cases: [(Option<&str>, [bool; 3]); 4] = [
            (None, [false, false, false]),
            (Some("uploadpack.allowTipSHA1InWant"), [false, true, false]),
            (
                Some("uploadpack.allowReachableSHA1InWant"),
                [true, false, false],
            ),
            (Some("uploadpack.allowAnySHA1InWant"), [true, true, true]),
        ];
        for (setting, expected) in cases {
            if let Some(key) = setting {
                config(key, Some("true"));
            }
            for ((name, oid), expected) in all.iter().zip(expected) {
                assert_eq!(
                    fetch(&packgate_upload_pack_option(), oid),
                    expected,
                    "the {name} commit with packgate.restrictV2Wants and {setting:?} ({git})"
                );
            }
            if let Some(key) = setting {
                config(key, None);
            }
        }
        // Visible tips stay fetchable by id under the switch.
        let main = dir
            .git_in(&git, &source)
            .args(["rev-parse", "main"])
            .run()
            .stdout_text()
            .trim()
            .to_owned();
        assert!(fetch(&packgate_upload_pack_option(), &main), "main ({git})");
    }
}
