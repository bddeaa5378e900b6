//! `git push` through `packgate receive-pack`: ref updates, config switches, hooks, atomic
//! pushes and concurrent pushers, each result checked with `git fsck` on the server.
//!
//! # Why one file
//!
//! It is over 800 lines, and stays whole: every test pushes with the real git clients through
//! the same `Setup` (a server repository, a client, hooks installed by `install_hook`) and
//! checks the result the same way (`git fsck`, the server's refs); the groups (switches, hooks,
//! interrupted pushes, object layout) share that harness, which a split would only move.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::pkt::{concat, line, FLUSH};
use crate::util::{
    assert_same_refs, file_url, fsck, refs, shared_fixture, Cmd, Dir, Git, Output, PACKGATE,
};

/// `--receive-pack=<packgate> receive-pack`, for `git push`.
pub(crate) fn receive_pack_option() -> String {
    receive_pack_option_with("", "")
}

/// `--receive-pack=<prefix><packgate> receive-pack<suffix>`: git runs it through the shell.
pub(crate) fn receive_pack_option_with(prefix: &str, suffix: &str) -> String {
    format!(
        "--receive-pack={prefix}'{}' receive-pack{suffix}",
        PACKGATE.replace('\'', r"'\''")
    )
}

/// A bare server repository and a client work tree with one commit on `master`.
pub(crate) struct Setup {
    pub(crate) dir: Dir,
    pub(crate) git: Git,
    pub(crate) server: PathBuf,
    pub(crate) client: PathBuf,
}

impl Setup {
    pub(crate) fn new(name: &str, git: &Git) -> Setup {
        let dir = Dir::new(&format!("push-{name}"));
        let server = dir.join("server.git");
        let client = dir.join("client");
        dir.git(git)
            .args(["init", "-q", "--bare"])
            .arg(&server)
            .run();
        dir.git(git).args(["init", "-q"]).arg(&client).run();
        let setup = Setup {
            dir,
            git: git.clone(),
            server,
            client,
        };
        setup.commit("first");
        setup
    }

    /// A command for `git` in the client work tree.
    pub(crate) fn client(&self) -> crate::util::Cmd {
        self.dir.git(&self.git).current_dir(&self.client)
    }

    /// Commits 32 MiB that do not compress (sending them takes a moment); returns the
    /// commit id.
    pub(crate) fn commit_incompressible(&self) -> String {
        for i in 0..8 {
            crate::util::write_file(
                &self.client.join(format!("random-{i}.bin")),
                &random_bytes(i, 4 << 20),
            );
        }
        self.client()
            .args(["-c", "core.looseCompression=0", "add", "."])
            .run();
        self.client().args(["commit", "-q", "-m", "big"]).run();
        rev_parse(self.client(), "HEAD")
    }

    /// A command for `git` on the server repository.
    fn server(&self) -> crate::util::Cmd {
        self.dir.git_in(&self.git, &self.server)
    }

    /// Commits a new file in the client; returns the commit id.
    pub(crate) fn commit(&self, message: &str) -> String {
        self.commit_in(&self.client, message)
    }

    fn commit_in(&self, work_tree: &Path, message: &str) -> String {
        let file = format!("{}.txt", message.replace(' ', "-"));
        crate::util::write_file(&work_tree.join(&file), format!("{message}\n").as_bytes());
        let git = || self.dir.git(&self.git).current_dir(work_tree);
        git().args(["add", &file]).run();
        git().args(["commit", "-q", "-m", message]).run();
        rev_parse(git(), "HEAD")
    }

    /// `git push <args>` from the client to the server through packgate.
    pub(crate) fn push(&self, args: &[&str]) -> Output {
        self.push_from(&self.client, args)
    }

    fn push_from(&self, work_tree: &Path, args: &[&str]) -> Output {
        self.dir
            .git(&self.git)
            .current_dir(work_tree)
            .arg("push")
            .arg(receive_pack_option())
            .arg(file_url(&self.server))
            .args(args)
            .output()
    }

    /// The server's value of `name`, if it exists.
    pub(crate) fn server_ref(&self, name: &str) -> Option<String> {
        refs(&self.dir, &self.git, &self.server, &[]).remove(name)
    }

    pub(crate) fn server_config(&self, key: &str, value: &str) {
        self.server().args(["config", key, value]).run();
    }

    pub(crate) fn has_object(&self, repo: &Path, id: &str) -> bool {
        self.dir
            .git_in(&self.git, repo)
            .args(["cat-file", "-e", id])
            .output()
            .status
            .success()
    }

    /// Installs an executable hook script in the server repository.
    pub(crate) fn hook(&self, name: &str, script: &str) {
        install_hook(&self.server.join("hooks"), name, script);
    }

    pub(crate) fn fsck(&self) {
        fsck(&self.dir, &self.git, &self.server);
        let incoming = std::fs::read_dir(self.server.join("objects"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().contains("incoming"))
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(incoming, 0, "a quarantine directory was left behind");
    }
}

pub(crate) fn install_hook(hooks_dir: &Path, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(hooks_dir).unwrap_or_else(|e| panic!("creating hooks dir: {e}"));
    let path = hooks_dir.join(name);
    crate::util::write_file(&path, format!("#!/bin/sh\n{script}\n").as_bytes());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

pub(crate) fn rev_parse(cmd: crate::util::Cmd, revision: &str) -> String {
    cmd.args(["rev-parse", revision])
        .run()
        .stdout_text()
        .trim()
        .to_owned()
}

#[track_caller]
pub(crate) fn assert_pushed(output: &Output) {
    assert!(output.status.success(), "push failed: {output}");
}

#[track_caller]
pub(crate) fn assert_rejected(output: &Output, reason: &str) {
    assert!(!output.status.success(), "push succeeded: {output}");
    assert!(
        output.stderr_text().contains(reason),
        "push output lacks '{reason}': {output}"
    );
}

#[test]
fn branches_and_tags() {
    for git in Git::all() {
        let setup = Setup::new("basic", &git);
        let first = rev_parse(setup.client(), "HEAD");
        // A new branch.
        assert_pushed(&setup.push(&["master"]));
        assert_eq!(setup.server_ref("refs/heads/master"), Some(first.clone()));
        // A fast-forward.
        let second = setup.commit("second");
        assert_pushed(&setup.push(&["master"]));
        assert_eq!(setup.server_ref("refs/heads/master"), Some(second.clone()));
        // A forced update.
        setup.client().args(["reset", "-q", "--hard", &first]).run();
        let rewritten = setup.commit("rewritten");
        assert_rejected(&setup.push(&["master"]), "rejected");
        assert_pushed(&setup.push(&["--force", "master"]));
        assert_eq!(
            setup.server_ref("refs/heads/master"),
            Some(rewritten.clone())
        );
        // Another branch, then its deletion.
        assert_pushed(&setup.push(&["master:refs/heads/other"]));
        assert_eq!(
            setup.server_ref("refs/heads/other"),
            Some(rewritten.clone())
        );
        assert_pushed(&setup.push(&[":other"]));
        assert_eq!(setup.server_ref("refs/heads/other"), None);
        // Annotated and lightweight tags.
        setup.client().args(["tag", "-a", "-m", "v1", "v1"]).run();
        setup.client().args(["tag", "light"]).run();
        assert_pushed(&setup.push(&["--tags"]));
        let client_tags = refs(&setup.dir, &git, &setup.client.join(".git"), &["refs/tags"]);
        assert_same_refs(
            &refs(&setup.dir, &git, &setup.server, &["refs/tags"]),
            &client_tags,
            &format!("tags with {git}"),
        );
        // A delete-only push of a tag (no pack).
        assert_pushed(&setup.push(&[":refs/tags/light"]));
        assert_eq!(setup.server_ref("refs/tags/light"), None);
        setup.fsck();
    }
}

#[test]
fn mirror_into_empty_repository_then_incremental() {
    let source = shared_fixture("small");
    for git in Git::all() {
        let dir = Dir::new("push-mirror");
        let client = dir.join("client.git");
        let server = dir.join("server.git");
        dir.git(&git)
            .args(["clone", "-q", "--mirror"])
            .arg(&source.path)
            .arg(&client)
            .run();
        dir.git(&git)
            .args(["init", "-q", "--bare"])
            .arg(&server)
            .run();
        let push = |args: &[&str]| {
            dir.git_in(&git, &client)
                .arg("push")
                .arg(receive_pack_option())
                .args(args)
                .arg(file_url(&server))
                .output()
        };
        assert_pushed(&push(&["--mirror"]));
        assert_same_refs(
            &refs(&dir, &git, &server, &[]),
            &refs(&dir, &git, &client, &[]),
            &format!("mirror push with {git}"),
        );
        fsck(&dir, &git, &server);

        // Incremental: a new commit on top of main only sends what is new.
        let work = dir.join("work");
        dir.git(&git)
            .args(["clone", "-q"])
            .arg(&client)
            .arg(&work)
            .run();
        crate::util::write_file(&work.join("new-file"), b"new\n");
        dir.git(&git)
            .current_dir(&work)
            .args(["add", "new-file"])
            .run();
        dir.git(&git)
            .current_dir(&work)
            .args(["commit", "-q", "-m", "incremental"])
            .run();
        let output = dir
            .git(&git)
            .current_dir(&work)
            .arg("push")
            .arg(receive_pack_option())
            .arg(file_url(&server))
            .arg("HEAD:refs/heads/main")
            .output();
        assert_pushed(&output);
        let pushed = rev_parse(dir.git(&git).current_dir(&work), "HEAD");
        assert_eq!(
            refs(&dir, &git, &server, &["refs/heads/main"]).get("refs/heads/main"),
            Some(&pushed)
        );
        fsck(&dir, &git, &server);
    }
}

#[test]
fn atomic_push_with_one_refused_ref_updates_nothing() {
    for git in Git::all() {
        let setup = Setup::new("atomic", &git);
        let first = rev_parse(setup.client(), "HEAD");
        // b: first, then x on the server; the client rewrites it to y (not a descendant of x).
        setup.client().args(["checkout", "-q", "-b", "b"]).run();
        let x = setup.commit("x");
        assert_pushed(&setup.push(&["master", "b"]));
        setup.client().args(["reset", "-q", "--hard", &first]).run();
        setup.commit("y");
        setup.client().args(["checkout", "-q", "master"]).run();
        setup.server_config("receive.denyNonFastForwards", "true");
        let second = setup.commit("second");
        let output = setup.push(&["--atomic", "--force", "master", "b"]);
        assert_rejected(&output, "non-fast-forward");
        assert_eq!(setup.server_ref("refs/heads/master"), Some(first.clone()));
        assert_eq!(setup.server_ref("refs/heads/b"), Some(x.clone()));
        assert!(
            !setup.has_object(&setup.server, &second),
            "objects of a refused push arrived"
        );
        // Without --atomic the fast-forward goes through and the other is refused.
        let output = setup.push(&["--force", "master", "b"]);
        assert_rejected(&output, "non-fast-forward");
        assert_eq!(setup.server_ref("refs/heads/master"), Some(second));
        assert_eq!(setup.server_ref("refs/heads/b"), Some(x));
        setup.fsck();
    }
}

#[test]
fn push_options_reach_hooks() {
    for git in Git::all() {
        let setup = Setup::new("push-options", &git);
        // Not advertised by default, as by git: the client refuses to send options.
        let output = setup.push(&["-o", "foo", "master"]);
        assert!(!output.status.success(), "{output}");
        assert!(
            output
                .stderr_text()
                .contains("the receiving end does not support push options"),
            "{output}"
        );
        setup.server_config("receive.advertisePushOptions", "true");
        setup.hook(
            "pre-receive",
            "echo \"count=$GIT_PUSH_OPTION_COUNT\"\n\
             i=0\n\
             while [ $i -lt \"${GIT_PUSH_OPTION_COUNT:-0}\" ]; do\n\
               eval \"echo option=\\$GIT_PUSH_OPTION_$i\"\n\
               i=$((i + 1))\n\
             done\n\
             cat >/dev/null",
        );
        let output = setup.push(&["-o", "foo", "-o", "bar=baz qux", "master"]);
        assert_pushed(&output);
        let stderr = output.stderr_text();
        for expected in [
            "remote: count=2",
            "remote: option=foo",
            "remote: option=bar=baz qux",
        ] {
            assert!(stderr.contains(expected), "no '{expected}': {output}");
        }
        setup.fsck();
    }
}

#[test]
fn deny_non_fast_forwards_and_deletes() {
    for git in Git::all() {
        let setup = Setup::new("deny", &git);
        let first = rev_parse(setup.client(), "HEAD");
        assert_pushed(&setup.push(&["master", "master:refs/heads/topic"]));
        setup.server_config("receive.denyNonFastForwards", "true");
        setup.server_config("receive.denyDeletes", "true");
        setup
            .client()
            .args(["commit", "-q", "--amend", "-m", "amended"])
            .run();
        assert_rejected(&setup.push(&["--force", "master"]), "non-fast-forward");
        assert_eq!(setup.server_ref("refs/heads/master"), Some(first.clone()));
        assert_rejected(&setup.push(&[":topic"]), "deletion prohibited");
        assert_eq!(setup.server_ref("refs/heads/topic"), Some(first.clone()));
        // Tags are not branches: they may still be deleted.
        assert_pushed(&setup.push(&["master:refs/tags/t"]));
        assert_pushed(&setup.push(&[":refs/tags/t"]));
        // The current branch cannot be deleted by default, unless configured.
        setup.server_config("receive.denyDeletes", "false");
        assert_rejected(
            &setup.push(&[":master"]),
            "deletion of the current branch prohibited",
        );
        setup.server_config("receive.denyDeleteCurrent", "ignore");
        assert_pushed(&setup.push(&[":master"]));
        assert_eq!(setup.server_ref("refs/heads/master"), None);
        setup.fsck();
    }
}

#[test]
fn deny_current_branch_in_a_work_tree() {
    for git in Git::all() {
        let setup = Setup::new("current-branch", &git);
        // The server has a work tree on master.
        let server_work = setup.dir.join("server-work");
        setup
            .dir
            .git(&git)
            .args(["clone", "-q"])
            .arg(&setup.client)
            .arg(&server_work)
            .run();
        let server_git_dir = server_work.join(".git");
        let before = rev_parse(setup.dir.git_in(&git, &server_git_dir), "HEAD");
        setup.commit("second");
        let push = |args: &[&str]| {
            setup
                .dir
                .git(&git)
                .current_dir(&setup.client)
                .arg("push")
                .arg(receive_pack_option())
                .arg(file_url(&server_work))
                .args(args)
                .output()
        };
        let set = |value: &str| {
            setup
                .dir
                .git_in(&git, &server_git_dir)
                .args(["config", "receive.denyCurrentBranch", value])
                .run();
        };
        let output = push(&["master"]);
        assert_rejected(&output, "branch is currently checked out");
        assert!(
            output
                .stderr_text()
                .contains("By default, updating the current branch"),
            "{output}"
        );
        set("refuse");
        assert_rejected(&push(&["master"]), "branch is currently checked out");
        // (`updateInstead`: tests/update_instead.rs.)
        assert_eq!(
            rev_parse(setup.dir.git_in(&git, &server_git_dir), "HEAD"),
            before
        );
        // Other branches are fine.
        assert_pushed(&push(&["master:refs/heads/side"]));
        set("warn");
        let output = push(&["master"]);
        assert_pushed(&output);
        assert!(
            output.stderr_text().contains("updating the current branch"),
            "{output}"
        );
        setup.commit("third");
        set("ignore");
        assert_pushed(&push(&["master"]));
        fsck(&setup.dir, &git, &server_git_dir);
    }
}

#[test]
fn hidden_refs_are_neither_shown_nor_updatable() {
    for git in Git::all() {
        let setup = Setup::new("hidden", &git);
        assert_pushed(&setup.push(&["master", "master:refs/hidden/x"]));
        setup.server_config("receive.hideRefs", "refs/hidden");
        let advertisement = setup
            .dir
            .packgate()
            .args(["receive-pack", "--advertise-refs"])
            .arg(&setup.server)
            .run();
        assert!(
            !advertisement.stdout_text().contains("refs/hidden"),
            "{advertisement}"
        );
        setup.commit("second");
        assert_rejected(
            &setup.push(&["--force", "master:refs/hidden/x"]),
            "deny updating a hidden ref",
        );
        setup.fsck();
    }
}

#[test]
fn pre_receive_refusal_leaves_nothing() {
    for git in Git::all() {
        let setup = Setup::new("pre-receive", &git);
        assert_pushed(&setup.push(&["master"]));
        setup.hook(
            "pre-receive",
            "while read old new ref; do echo \"checking $ref\"; done\n\
             test -n \"$GIT_QUARANTINE_PATH\" || echo 'no quarantine'\n\
             echo 'nope, not today' >&2\nexit 1",
        );
        let before = setup.server_ref("refs/heads/master");
        let second = setup.commit("second");
        let output = setup.push(&["master", "master:refs/heads/new"]);
        assert_rejected(&output, "pre-receive hook declined");
        let stderr = output.stderr_text();
        assert!(
            stderr.contains("remote: checking refs/heads/master"),
            "{output}"
        );
        assert!(stderr.contains("remote: nope, not today"), "{output}");
        assert!(!stderr.contains("no quarantine"), "{output}");
        assert_eq!(setup.server_ref("refs/heads/master"), before);
        assert_eq!(setup.server_ref("refs/heads/new"), None);
        assert!(
            !setup.has_object(&setup.server, &second),
            "the refused commit is in the repository"
        );
        setup.fsck();
    }
}

#[test]
fn update_hook_refuses_one_ref_and_post_hooks_run() {
    for git in Git::all() {
        let setup = Setup::new("update-hook", &git);
        setup.hook(
            "update",
            "case \"$1\" in refs/heads/protected) echo \"no push to $1\"; exit 1;; esac\nexit 0",
        );
        setup.hook(
            "post-receive",
            "while read old new ref; do echo \"post-receive $ref\"; done",
        );
        setup.hook("post-update", "echo \"post-update $*\"");
        let output = setup.push(&["master", "master:refs/heads/protected"]);
        assert_rejected(&output, "hook declined");
        let stderr = output.stderr_text();
        assert!(
            stderr.contains("remote: no push to refs/heads/protected"),
            "{output}"
        );
        assert!(
            stderr.contains("remote: post-receive refs/heads/master"),
            "{output}"
        );
        assert!(
            !stderr.contains("post-receive refs/heads/protected"),
            "{output}"
        );
        assert!(
            stderr.contains("remote: post-update refs/heads/master"),
            "{output}"
        );
        assert!(setup.server_ref("refs/heads/master").is_some());
        assert_eq!(setup.server_ref("refs/heads/protected"), None);

        // Deleting a ref that does not exist is `ok` and reaches pre-receive, but the post
        // hooks do not hear of it — and alone, it runs no post hook at all (git's t5516).
        setup.hook(
            "pre-receive",
            "while read old new ref; do echo \"pre-receive $ref\"; done",
        );
        let output = setup.push(&["master", ":refs/heads/nonexistent"]);
        let stderr = output.stderr_text();
        assert!(output.status.success(), "{output}");
        assert!(
            stderr.contains("remote: pre-receive refs/heads/nonexistent"),
            "{output}"
        );
        assert!(
            !stderr.contains("post-receive refs/heads/nonexistent"),
            "{output}"
        );
        assert!(
            !stderr.contains("post-update refs/heads/nonexistent"),
            "{output}"
        );
        let output = setup.push(&[":refs/heads/nonexistent"]);
        assert!(output.status.success(), "{output}");
        let stderr = output.stderr_text();
        assert!(
            !stderr.contains("post-receive") && !stderr.contains("post-update"),
            "{output}"
        );
        setup.fsck();
    }
}

#[test]
fn concurrent_pushes_to_one_branch() {
    const PUSHERS: usize = 6;
    for git in Git::all() {
        let setup = Setup::new("concurrent", &git);
        assert_pushed(&setup.push(&["master"]));
        let base = setup.server_ref("refs/heads/master");
        let work_trees: Vec<PathBuf> = (0..PUSHERS)
            .map(|i| {
                let work = setup.dir.join(&format!("pusher-{i}"));
                setup.dir.copy_tree(&setup.client, &work);
                setup.commit_in(&work, &format!("pusher {i}"));
                work
            })
            .collect();
        let outputs: Vec<Output> = std::thread::scope(|scope| {
            let handles: Vec<_> = work_trees
                .iter()
                .map(|work| scope.spawn(|| setup.push_from(work, &["master"])))
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|_| panic!("a pusher panicked"))
                })
                .collect()
        });
        let winners = outputs.iter().filter(|o| o.status.success()).count();
        assert_eq!(
            winners,
            1,
            "exactly one pusher should win: {outputs:#?}",
            outputs = outputs.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
        // A loser either raced the winner inside the server (its compare-and-swap fails) or
        // started after the winner was done, and its client saw the new tip in the
        // advertisement and refused by itself ("fetch first").
        for output in outputs.iter().filter(|o| !o.status.success()) {
            let stderr = output.stderr_text();
            assert!(
                stderr.contains("failed to update ref") || stderr.contains("(fetch first)"),
                "unclear refusal: {output}"
            );
        }
        assert_ne!(setup.server_ref("refs/heads/master"), base);
        setup.fsck();
    }
}

#[test]
fn advertisement_matches_git() {
    let source = shared_fixture("small");
    for git in Git::all() {
        let dir = Dir::new("push-advertise");
        let packgate = dir
            .packgate()
            .args(["receive-pack", "--advertise-refs"])
            .arg(&source.path)
            .run();
        let reference = dir
            .git(&git)
            .args(["receive-pack", "--advertise-refs"])
            .arg(&source.path)
            .run();
        let refs_of = |output: &Output| -> Vec<String> {
            output
                .stdout_text()
                .lines()
                .map(|l| {
                    l.split('\0')
                        .next()
                        .unwrap_or_default()
                        .get(4..)
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        };
        assert_eq!(
            refs_of(&packgate),
            refs_of(&reference),
            "refs advertised, with {git}"
        );
        assert!(
            packgate.stdout_text().contains(" agent=packgate/"),
            "{packgate}"
        );
        // The capabilities, in git's order, by default and with each setting turned.
        let copy = dir.join("settings.git");
        dir.git(&git)
            .args(["clone", "--quiet", "--bare"])
            .arg(&source.path)
            .arg(&copy)
            .run();
        for (key, value) in [
            ("", ""),
            ("receive.advertiseAtomic", "false"),
            ("receive.advertisePushOptions", "true"),
            ("repack.useDeltaBaseOffset", "false"),
        ] {
            if !key.is_empty() {
                dir.git_in(&git, &copy).args(["config", key, value]).run();
            }
            let capabilities = |server: crate::util::Cmd| -> String {
                let output = server
                    .args(["receive-pack", "--advertise-refs"])
                    .arg(&copy)
                    .run();
                let first = output.stdout_text();
                let list = first.split('\0').nth(1).unwrap_or_default();
                let list = list.split(" agent=").next().unwrap_or_default();
                list.to_owned()
            };
            assert_eq!(
                capabilities(dir.packgate()),
                capabilities(dir.git(&git)),
                "{git}, after {key}={value}"
            );
        }
        // An empty repository, and protocol version 1.
        let empty = dir.join("empty.git");
        dir.git(&git)
            .args(["init", "-q", "--bare"])
            .arg(&empty)
            .run();
        let output = dir
            .packgate()
            .env("GIT_PROTOCOL", "version=1")
            .args(["receive-pack", "--advertise-refs"])
            .arg(&empty)
            .run();
        let expected_start = "000eversion 1\n00";
        assert!(output.stdout_text().starts_with(expected_start), "{output}");
        assert!(
            output.stdout_text().contains(
                "0000000000000000000000000000000000000000 capabilities^{}\0report-status"
            ),
            "{output}"
        );
        // version=2 gets v0.
        let output = dir
            .packgate()
            .env("GIT_PROTOCOL", "version=2")
            .args(["receive-pack", "--advertise-refs"])
            .arg(&empty)
            .run();
        assert!(
            output.stdout_text().contains(" capabilities^{}\0"),
            "{output}"
        );
        assert!(!output.stdout_text().contains("version"), "{output}");
    }
}

#[test]
fn bad_commands_end_in_an_error() {
    let dir = Dir::new("push-bad-input");
    let git = Git::newest();
    let server = dir.join("server.git");
    dir.git(&git)
        .args(["init", "-q", "--bare"])
        .arg(&server)
        .run();
    let zero = "0000000000000000000000000000000000000000";
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            concat([line("hello\0report-status"), FLUSH.to_vec()]),
            "expected old/new/ref",
        ),
        (
            line(format!("{zero} {zero} refs/heads/x\0report-status")),
            "without a flush",
        ),
        (b"00zz".to_vec(), "protocol error"),
        (
            concat([
                line(format!(
                    "{zero} 1111111111111111111111111111111111111111 refs/heads/x\0report-status"
                )),
                FLUSH.to_vec(),
                b"garbage".to_vec(),
            ]),
            "unpack ",
        ),
    ];
    for (input, expected) in cases {
        let output = dir
            .packgate()
            .args(["receive-pack", "--stateless-rpc"])
            .arg(&server)
            .stdin(input)
            .output();
        let all = format!("{}{}", output.stdout_text(), output.stderr_text());
        assert!(all.contains(expected), "expected '{expected}': {output}");
    }
    // Nothing to push: a flush alone, or nothing at all, is a quiet success.
    for input in [FLUSH.to_vec(), Vec::new()] {
        dir.packgate()
            .args(["receive-pack", "--stateless-rpc"])
            .arg(&server)
            .stdin(input)
            .run();
    }
    assert!(refs(&dir, &git, &server, &[]).is_empty());
    fsck(&dir, &git, &server);
}

#[test]
fn fsck_objects_refuses_malformed_objects() {
    for git in Git::all() {
        let setup = Setup::new("fsck", &git);
        let empty_tree = setup
            .client()
            .args(["hash-object", "-t", "tree", "-w", "--stdin"])
            .stdin(Vec::new())
            .run()
            .stdout_text()
            .trim()
            .to_owned();
        let bad_commit = format!("tree {empty_tree}\nauthor bad\ncommitter bad\n\nmalformed\n");
        let id = setup
            .client()
            .args([
                "hash-object",
                "-t",
                "commit",
                "-w",
                "--literally",
                "--stdin",
            ])
            .stdin(bad_commit)
            .run()
            .stdout_text()
            .trim()
            .to_owned();
        setup
            .client()
            .args(["update-ref", "refs/heads/bad", &id])
            .run();
        setup.server_config("receive.fsckObjects", "true");
        let output = setup.push(&["bad"]);
        assert_rejected(&output, "unpack");
        assert_eq!(setup.server_ref("refs/heads/bad"), None);
        assert!(!setup.has_object(&setup.server, &id));
        setup.fsck();
    }
}

// ---------------------------------------------------------------------------------------------
// Pushes that end half-way: nothing of them may remain.
// ---------------------------------------------------------------------------------------------

/// How long a session may take to end once its client is gone or stalled.
pub(crate) const END_LIMIT: Duration = Duration::from_secs(20);

/// The quarantine directories in a repository's object store.
pub(crate) fn quarantines(repo: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(repo.join("objects")) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("tmp_objdir-incoming-")
        })
        .map(|entry| entry.path())
        .collect()
}

/// The size of the temporary pack in a quarantine, once ingestion has read the pack header.
pub(crate) fn temporary_pack_size(repo: &Path) -> Option<u64> {
    quarantines(repo).iter().find_map(|quarantine| {
        std::fs::read_dir(quarantine.join("pack"))
            .ok()?
            .filter_map(Result::ok)
            .find(|entry| entry.file_name().to_string_lossy().starts_with("tmp_pack_"))
            .and_then(|entry| entry.metadata().ok())
            .map(|metadata| metadata.len())
    })
}

/// The processes of the packgate binary serving `repo` (found by their command line).
fn packgate_processes(repo: &Path) -> Vec<String> {
    let repo = repo.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .filter(|cmdline| {
            let args: Vec<String> = cmdline
                .split(|byte| *byte == 0)
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            args.first().is_some_and(|program| program == PACKGATE)
                && args.iter().any(|arg| arg.contains(&repo))
        })
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .collect()
}

/// Polls `condition` every 10 ms until it holds; fails the test after `limit`.
#[track_caller]
pub(crate) fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What an abandoned push must leave alone.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) refs: BTreeMap<String, String>,
    packs: BTreeSet<String>,
}

impl Snapshot {
    pub(crate) fn of(dir: &Dir, git: &Git, repo: &Path) -> Snapshot {
        let packs = std::fs::read_dir(repo.join("objects").join("pack"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        Snapshot {
            refs: refs(dir, git, repo, &[]),
            packs,
        }
    }

    /// Asserts the repository is as it was: no quarantine, the same refs and
    /// packs, and `git fsck --strict` passes.
    #[track_caller]
    pub(crate) fn assert_unchanged(&self, dir: &Dir, git: &Git, repo: &Path, context: &str) {
        assert_eq!(
            quarantines(repo),
            Vec::<PathBuf>::new(),
            "{context}: a quarantine was left behind"
        );
        let now = Snapshot::of(dir, git, repo);
        assert_same_refs(&now.refs, &self.refs, context);
        assert_eq!(now.packs, self.packs, "{context}: packs changed");
        fsck(dir, git, repo);
    }
}

/// `len` bytes that do not compress, the same for the same `seed` (xorshift64*).
pub(crate) fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// A server with `master` pushed and a client with three more commits on it; returns the
/// request for `packgate receive-pack` that creates `refs/heads/pushed` at the client's tip:
/// the command, then only the first half of the pack.
pub(crate) fn setup_with_partial_request(name: &str, git: &Git) -> (Setup, Vec<u8>) {
    let setup = Setup::new(name, git);
    assert_pushed(&setup.push(&["master"]));
    for i in 0..3 {
        setup.commit(&format!("more {i}"));
    }
    let tip = rev_parse(setup.client(), "master");
    let pack = setup
        .client()
        .args(["pack-objects", "--stdout", "--revs", "-q"])
        .stdin("master\n")
        .run()
        .stdout;
    assert!(pack.len() > 100, "a pack of {} bytes", pack.len());
    let zero = "0".repeat(40);
    let request = concat([
        line(format!("{zero} {tip} refs/heads/pushed\0report-status")),
        FLUSH.to_vec(),
        pack[..pack.len() / 2].to_vec(),
    ]);
    (setup, request)
}

/// The client is killed (SIGKILL to git and its pack-objects) while the pack streams. packgate
/// runs in a session of its own (`setsid`), as a server would: it sees the pack end early and
/// must clean up by itself. Once it has ended, the repository is as before.
#[test]
fn killing_the_pushing_client_mid_pack_leaves_nothing() {
    assert!(
        Path::new("/usr/bin/setsid").exists(),
        "the test needs setsid (util-linux)"
    );
    for git in Git::all() {
        let setup = Setup::new("kill-client", &git);
        assert_pushed(&setup.push(&["master"]));
        let big = setup.commit_incompressible();
        let before = Snapshot::of(&setup.dir, &git, &setup.server);
        let context = format!("killed push with {git}");

        let mut push = setup
            .dir
            .git(&git)
            .current_dir(&setup.client)
            // No delta search among the random files: the pack starts streaming at once.
            .args(["-c", "pack.window=0", "push"])
            .arg(receive_pack_option_with("setsid ", ""))
            .arg(file_url(&setup.server))
            .arg("master")
            .spawn();
        // Until the pack streams: its first 64 KiB are in the quarantine.
        wait_until(END_LIMIT, "the pack to stream", || {
            temporary_pack_size(&setup.server).is_some_and(|size| size > 0) || push.has_exited()
        });
        assert!(
            !push.has_exited(),
            "{context}: the push ended before it could be killed: {}",
            push.kill_group()
        );
        let killed = push.kill_group();
        assert_eq!(
            killed.signalled(),
            Some(9),
            "{context}: the push was not killed (it may have finished first): {killed}"
        );
        // The session has ended when packgate has.
        wait_until(END_LIMIT, "packgate receive-pack to end", || {
            packgate_processes(&setup.server).is_empty()
        });
        before.assert_unchanged(&setup.dir, &git, &setup.server, &context);
        assert!(
            !setup.has_object(&setup.server, &big),
            "{context}: the killed push's commit is in the repository"
        );
    }
}

/// The deterministic version: the input ends in the middle of the pack.
#[test]
fn end_of_input_mid_pack_leaves_nothing() {
    let git = Git::newest();
    let (setup, request) = setup_with_partial_request("eof-mid-pack", &git);
    let before = Snapshot::of(&setup.dir, &git, &setup.server);
    let output = setup
        .dir
        .packgate()
        .arg("receive-pack")
        .arg(&setup.server)
        .stdin(request)
        .timeout(END_LIMIT)
        .output();
    assert_eq!(output.signalled(), None, "{output}");
    assert!(
        output.stdout_text().contains("unpack ") && !output.stdout_text().contains("unpack ok"),
        "no unpack error in the report: {output}"
    );
    before.assert_unchanged(&setup.dir, &git, &setup.server, "input ended mid-pack");
}

/// `packgate receive-pack` fed the commands and part of the pack of `request` by a writer
/// that then waits: returns once packgate has read into the pack, with the writer and the
/// server to kill.
pub(crate) fn stalled_mid_pack(
    setup: &Setup,
    request: &[u8],
) -> (crate::util::Background, crate::util::Background) {
    let request_file = setup.dir.join("request");
    crate::util::write_file(&request_file, request);
    let (writer, pipe) = Cmd::new(Path::new("/bin/sh"))
        .args(["-c", "cat \"$0\" && exec sleep 600"])
        .arg(&request_file)
        .spawn_with_stdout();
    let server = setup
        .dir
        .packgate()
        .arg("receive-pack")
        .arg(&setup.server)
        .stdin_from(pipe)
        .spawn();
    wait_until(END_LIMIT, "the pack to arrive", || {
        temporary_pack_size(&setup.server).is_some()
    });
    (writer, server)
}

/// The process writing the push is killed while packgate waits for the rest of the pack.
#[test]
fn killing_the_writer_mid_pack_leaves_nothing() {
    let git = Git::newest();
    let (setup, request) = setup_with_partial_request("kill-writer", &git);
    let before = Snapshot::of(&setup.dir, &git, &setup.server);
    let (writer, server) = stalled_mid_pack(&setup, &request);
    let killed = writer.kill_group();
    assert_eq!(killed.signalled(), Some(9), "{killed}");
    let output = server.wait(END_LIMIT);
    assert_eq!(output.signalled(), None, "{output}");
    before.assert_unchanged(&setup.dir, &git, &setup.server, "writer killed mid-pack");
}

/// `--timeout`: a client that stalls in the middle of the pack ends the session with an
/// error, and the quarantine is deleted before the process ends.
#[test]
fn timeout_while_the_client_stalls_mid_pack() {
    let git = Git::newest();
    let (setup, request) = setup_with_partial_request("stall", &git);
    let before = Snapshot::of(&setup.dir, &git, &setup.server);
    let output = setup
        .dir
        .packgate()
        .args(["receive-pack", "--timeout=1"])
        .arg(&setup.server)
        .stdin_then_keep_open(request)
        .timeout(END_LIMIT)
        .output();
    assert_eq!(output.status.code(), Some(128), "{output}");
    assert!(output.elapsed < Duration::from_secs(10), "{output}");
    assert!(output.stderr_text().contains("timeout"), "{output}");
    before.assert_unchanged(&setup.dir, &git, &setup.server, "client stalled mid-pack");
}

/// `--timeout` counts only waiting for the client: a pre-receive hook that takes longer than
/// the limit does not end the push.
#[test]
fn timeout_does_not_count_a_slow_hook() {
    for git in Git::all() {
        let setup = Setup::new("slow-hook", &git);
        setup.hook("pre-receive", "cat >/dev/null\nsleep 3");
        let tip = rev_parse(setup.client(), "master");
        let started = Instant::now();
        let output = setup
            .dir
            .git(&git)
            .current_dir(&setup.client)
            .arg("push")
            .arg(receive_pack_option_with("", " --timeout=1"))
            .arg(file_url(&setup.server))
            .arg("master")
            .output();
        assert_pushed(&output);
        assert!(started.elapsed() >= Duration::from_secs(3), "{output}");
        assert_eq!(setup.server_ref("refs/heads/master"), Some(tip));
        setup.fsck();
    }
}

/// `git count-objects -v` of a repository: (loose objects, packs).
fn object_layout(setup: &Setup) -> (u64, u64) {
    let text = setup
        .server()
        .args(["count-objects", "-v"])
        .run()
        .stdout_text();
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    (value("count:"), value("packs:"))
}

/// As git's receive-pack: a push of fewer objects than `receive.unpackLimit` (100 unless
/// configured, also through `transfer.unpackLimit`) is stored as loose objects — including
/// a thin one, whose bases are not copied — and a larger one (or any, with a limit of 1)
/// as a pack.
#[test]
fn small_pushes_become_loose_objects() {
    for git in Git::all() {
        let setup = Setup::new("unpack-limit", &git);
        assert_pushed(&setup.push(&["master"]));
        assert_eq!(object_layout(&setup), (3, 0), "the first push with {git}");
        // A thin push on top: its new objects only.
        let tip = setup.commit("second");
        assert_pushed(&setup.push(&["master"]));
        assert_eq!(object_layout(&setup), (6, 0), "a thin push with {git}");
        assert_eq!(setup.server_ref("refs/heads/master"), Some(tip));
        setup.fsck();

        setup.server_config("receive.unpackLimit", "1");
        setup.commit("third");
        assert_pushed(&setup.push(&["master"]));
        assert_eq!(object_layout(&setup), (6, 1), "unpackLimit=1 with {git}");
        setup
            .server()
            .args(["config", "--unset", "receive.unpackLimit"])
            .run();
        setup.server_config("transfer.unpackLimit", "2");
        setup.commit("fourth");
        assert_pushed(&setup.push(&["master"]));
        assert_eq!(
            object_layout(&setup),
            (6, 2),
            "transfer.unpackLimit=2 with {git}"
        );
        setup.fsck();
    }
}

/// The `.have` lines of a fork that borrows its objects from a shared repository
/// (`git clone -s`): the values of the shared repository's refs, each once and none that a
/// ref of the fork already shows, limited by `core.alternateRefsPrefixes` or replaced by what
/// `core.alternateRefsCommand` prints — the same lines as git's receive-pack (git's t5400 and
/// t5410). A push on top of a commit only the shared repository has then works.
#[test]
fn alternates_refs_are_advertised_as_have_lines() {
    for git in Git::all() {
        let dir = Dir::new("alternates");
        let shared = dir.join("shared.git");
        dir.git(&git)
            .args(["init", "--quiet", "--bare"])
            .arg(&shared)
            .run();
        // Stored, so that fsck finds it.
        let empty_tree = dir.git_in(&git, &shared).arg("mktree").run().stdout_text();
        // A commit on `branch`, on top of `parent`'s tip if given.
        let commit = |branch: &str, parent: Option<&str>| {
            let mut command = dir
                .git_in(&git, &shared)
                .args(["commit-tree", empty_tree.trim()]);
            if let Some(parent) = parent {
                command = command.args(["-p", parent]);
            }
            let id = command.args(["-m", branch]).run().stdout_text();
            dir.git_in(&git, &shared)
                .args(["update-ref", &format!("refs/heads/{branch}"), id.trim()])
                .run();
        };
        commit("main", None);
        let fork = dir.join("fork.git");
        dir.git(&git)
            .args(["clone", "--quiet", "--bare", "-s"])
            .arg(&shared)
            .arg(&fork)
            .run();
        commit("public/branch", Some("main"));
        commit("private/branch", Some("main"));
        // A second ref with the same value: one `.have` for both.
        dir.git_in(&git, &shared)
            .args(["update-ref", "refs/heads/same", "refs/heads/private/branch"])
            .run();
        let advertised = |server: Cmd| -> BTreeSet<String> {
            let output = server.arg("--advertise-refs").arg(&fork).run();
            let Some((advertisement, _)) = crate::pkt::split_advertisement(&output.stdout) else {
                panic!("no advertisement: {output}")
            };
            crate::pkt::lines(&advertisement)
                .iter()
                .map(|line| line.split('\0').next().unwrap_or_default().to_owned())
                .collect()
        };
        let compare = |what: &str| {
            let ours = advertised(dir.packgate().arg("receive-pack"));
            let theirs = advertised(dir.git(&git).arg("receive-pack"));
            assert_eq!(ours, theirs, "{git}, {what}");
            ours.iter().filter(|line| line.ends_with(" .have")).count()
        };
        assert_eq!(compare("every ref"), 2);
        dir.git_in(&git, &fork)
            .args(["config", "core.alternateRefsPrefixes", "refs/heads/private"])
            .run();
        assert_eq!(compare("core.alternateRefsPrefixes"), 1);
        crate::util::write_file(
            &fork.join("alternate-refs"),
            b"#!/bin/sh\ncat \"$1/refs/heads/public/branch\"\n",
        );
        std::fs::set_permissions(
            fork.join("alternate-refs"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap_or_else(|err| panic!("{err}"));
        dir.git_in(&git, &fork)
            .args(["config", "core.alternateRefsCommand", "./alternate-refs"])
            .run();
        assert_eq!(compare("core.alternateRefsCommand"), 1);

        // A push of a commit on top of one only the shared repository has.
        commit("pushed", Some("public/branch"));
        dir.git_in(&git, &shared)
            .args(["push", "--quiet"])
            .arg(receive_pack_option())
            .arg(&fork)
            .arg("refs/heads/pushed:refs/heads/pushed")
            .run();
        fsck(&dir, &git, &fork);
    }
}

/// Reflog entries name `GIT_COMMITTER_NAME`/`GIT_COMMITTER_EMAIL` when receive-pack's
/// environment has them, before `user.*`, as git's do (git's t5541 sets them in the web
/// server's environment).
#[test]
fn reflog_identity_comes_from_the_environment_first() {
    let git = Git::newest();
    let setup = Setup::new("reflog-identity", &git);
    setup.server_config("core.logAllRefUpdates", "true");
    setup.server_config("user.name", "Configured");
    setup.server_config("user.email", "configured@example.com");
    // The branch's reflog, and HEAD's, which git's files backend writes for the branch
    // HEAD names: the same entry in both.
    setup
        .server()
        .args(["symbolic-ref", "HEAD", "refs/heads/master"])
        .run();
    let who = || {
        let entry = |name: &str| {
            setup
                .server()
                .args(["log", "-g", "-1", "--format=%gn <%ge> %H", name])
                .run()
                .stdout_text()
                .trim()
                .to_owned()
        };
        let branch = entry("refs/heads/master");
        assert_eq!(entry("HEAD"), branch, "HEAD's reflog");
        branch
            .rsplit_once(' ')
            .map(|(who, _)| who.to_owned())
            .unwrap_or_default()
    };
    setup.commit("one");
    assert!(setup.push(&["master"]).status.success());
    assert_eq!(who(), "Configured <configured@example.com>");
    setup.commit("two");
    let output = setup
        .client()
        .arg("push")
        .arg(receive_pack_option_with(
            "GIT_COMMITTER_NAME='Custom User' GIT_COMMITTER_EMAIL=custom@example.com ",
            "",
        ))
        .arg(file_url(&setup.server))
        .arg("master")
        .run();
    assert_eq!(who(), "Custom User <custom@example.com>", "{output}");
}

/// A new ref where another is in the way (`refs/heads/other/conflict` blocks
/// `refs/heads/other`, `refs/heads/main` blocks `refs/heads/main/x`): an atomic push moves
/// nothing and reports every ref `atomic transaction failed`; otherwise only the blocked ref
/// fails. The user reads what git's receive-pack makes the client print (git's t5541).
#[test]
fn refs_in_the_way_fail_the_push_as_in_git() {
    for git in Git::all() {
        let dir = Dir::new("ref-in-the-way");
        let client = dir.join("client");
        dir.git(&git).args(["init", "--quiet"]).arg(&client).run();
        let in_client = || dir.git(&git).current_dir(&client);
        in_client()
            .args(["commit", "--quiet", "--allow-empty", "-m", "base"])
            .run();
        let base = rev_parse(in_client(), "HEAD");
        in_client()
            .args(["commit", "--quiet", "--allow-empty", "-m", "new"])
            .run();
        // packgate, and the client's own git receive-pack.
        let servers: Vec<(Option<String>, PathBuf)> = [Some(receive_pack_option()), None]
            .into_iter()
            .enumerate()
            .map(|(n, option)| {
                let server = dir.join(&format!("server-{n}.git"));
                dir.git(&git)
                    .args(["init", "--quiet", "--bare"])
                    .arg(&server)
                    .run();
                in_client()
                    .args(["push", "--quiet"])
                    .arg(file_url(&server))
                    .arg(format!("{base}:refs/heads/main"))
                    .run();
                dir.git_in(&git, &server)
                    .args(["update-ref", "refs/heads/other/conflict", &base])
                    .run();
                (option, server)
            })
            .collect();
        for atomic in [true, false] {
            let outcomes: Vec<(Vec<String>, BTreeMap<String, String>)> = servers
                .iter()
                .map(|(option, server)| {
                    let mut push = in_client().arg("push").args(option);
                    if atomic {
                        push = push.arg("--atomic");
                    }
                    let output = push
                        .arg(file_url(server))
                        .args([
                            "HEAD:refs/heads/fresh",
                            "HEAD:refs/heads/other",
                            "HEAD:refs/heads/main/x",
                        ])
                        .output();
                    assert!(!output.status.success(), "{output}");
                    let lines = output
                        .stderr_text()
                        .lines()
                        .filter(|line| line.starts_with(" ") || line.starts_with("remote: error"))
                        .map(|line| line.trim_end().to_owned())
                        .collect();
                    (lines, refs(&dir, &git, server, &[]))
                })
                .collect();
            assert_eq!(outcomes[0], outcomes[1], "{git}, atomic: {atomic}");
            assert_eq!(
                outcomes[0].1.contains_key("refs/heads/fresh"),
                !atomic,
                "{git}, atomic: {atomic}"
            );
        }
    }
}

/// `git push --signed` (an SSH-signed certificate) with `receive.certNonceSeed`: the
/// advertisement carries a nonce, the hooks get the certificate as a blob with git's
/// `GIT_PUSH_CERT*` variables (the signature unverified, status `N`, as git without a
/// verification setup) and the nonce judged `OK`; what the hook prints matches git's
/// receive-pack, but for the ids that differ per push. Without a certificate, no variables.
#[test]
fn signed_push_reaches_the_hooks_as_with_git() {
    let hook = "#!/bin/sh\n\
                env | grep '^GIT_PUSH_CERT' | sort | \
                sed -e 's/^GIT_PUSH_CERT=.*/GIT_PUSH_CERT=<blob>/' -e 's/^GIT_PUSH_CERT_NONCE=.*/GIT_PUSH_CERT_NONCE=<nonce>/'\n\
                test -z \"$GIT_PUSH_CERT\" || git cat-file blob \"$GIT_PUSH_CERT\" | sed -n 's/^\\(certificate\\|pushee\\).*/\\1/p'\n\
                cat >/dev/null\n";
    for git in Git::all() {
        let dir = Dir::new("signed-push");
        let key = dir.join("key");
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(&key)
            .status()
            .map(|status| assert!(status.success()))
            .unwrap_or_else(|err| panic!("ssh-keygen: {err}"));
        let client = dir.join("client");
        dir.git(&git).args(["init", "--quiet"]).arg(&client).run();
        let in_client = || dir.git(&git).current_dir(&client);
        in_client()
            .args(["commit", "--quiet", "--allow-empty", "-m", "signed"])
            .run();
        let printed: Vec<String> = [Some(receive_pack_option()), None]
            .into_iter()
            .enumerate()
            .map(|(n, option)| {
                let server = dir.join(&format!("server-{n}.git"));
                dir.git(&git)
                    .args(["init", "--quiet", "--bare"])
                    .arg(&server)
                    .run();
                dir.git_in(&git, &server)
                    .args(["config", "receive.certNonceSeed", "sekrit"])
                    .run();
                install_hook(
                    &server.join("hooks"),
                    "pre-receive",
                    hook.trim_start_matches("#!/bin/sh\n"),
                );
                let signed = in_client()
                    .args(["-c", "gpg.format=ssh", "-c"])
                    .arg(format!("user.signingKey={}", key.display()))
                    .args(["push", "--signed"])
                    .args(option.clone())
                    .arg(file_url(&server))
                    .arg("HEAD:refs/heads/main")
                    .run();
                let unsigned = in_client()
                    .arg("push")
                    .args(option)
                    .arg(file_url(&server))
                    .arg("HEAD:refs/heads/unsigned")
                    .run();
                assert!(
                    !unsigned.stderr_text().contains("GIT_PUSH_CERT"),
                    "{unsigned}"
                );
                signed
                    .stderr_text()
                    .lines()
                    .filter_map(|line| line.strip_prefix("remote: "))
                    .map(|line| line.trim_end().to_owned())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect();
        assert!(
            printed[0].contains("GIT_PUSH_CERT_NONCE_STATUS=OK")
                && printed[0].contains("GIT_PUSH_CERT_STATUS=N")
                && printed[0].contains("certificate\npushee"),
            "{git}: {}",
            printed[0]
        );
        assert_eq!(printed[0], printed[1], "{git}");
    }
}
