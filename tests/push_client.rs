//! `packgate push` (packgate's own send-pack) into `packgate receive-pack` and into
//! `git receive-pack` (git as the server): new branches, fast-forwards, deletions, tags,
//! refusals decided here and by the remote, leases, atomic pushes, push options, hook output,
//! thin packs, a stateless (smart-HTTP-like) connection, and a remote that dies after the
//! pack (the outcome is unknown, never ok). Every remote is checked with `git fsck`.

use std::io::{BufRead, Cursor, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::receive_pack::{rev_parse, wait_until, Setup};
use crate::util::{Git, Output, PACKGATE};
use packgate::protocol::client::push::{push, Expected, PushCommand, PushOptions, RefStatus};
use packgate::wire::client::Connection;

/// Which receive-pack the push goes to.
#[derive(Clone, Copy, Debug)]
enum Server {
    /// `packgate receive-pack` (the push client's default for a local path).
    Packgate,
    /// `git receive-pack`, through `--receive-pack`.
    Git,
}

fn servers() -> [Server; 2] {
    [Server::Packgate, Server::Git]
}

/// `packgate push [args] <server> <refspecs>` from the client work tree.
fn packgate_push(setup: &Setup, server: Server, args: &[&str]) -> Output {
    let mut cmd = setup.dir.packgate().current_dir(&setup.client).arg("push");
    if let Server::Git = server {
        cmd = cmd.arg(format!(
            "--receive-pack={} receive-pack",
            setup.git.program.display()
        ));
    }
    let (options, rest): (Vec<&str>, Vec<&str>) = args.iter().partition(|a| a.starts_with('-'));
    cmd.args(options).arg(&setup.server).args(rest).output()
}

fn head(setup: &Setup) -> String {
    rev_parse(setup.client(), "HEAD")
}

#[track_caller]
fn assert_ok(output: &Output) {
    assert!(output.status.success(), "push failed: {output}");
}

#[track_caller]
fn assert_failed_with(output: &Output, line: &str) {
    assert_eq!(output.status.code(), Some(1), "push did not fail: {output}");
    assert!(
        output.stderr_text().contains(line),
        "push output lacks '{line}': {output}"
    );
}

#[test]
fn new_branch_fast_forward_tag_and_delete() {
    for git in Git::all() {
        for server in servers() {
            let setup = Setup::new("client-basics", &git);
            let first = head(&setup);
            let out = packgate_push(&setup, server, &["master", "master:refs/heads/other"]);
            assert_ok(&out);
            assert!(
                out.stderr_text()
                    .contains(" * [new branch]      master -> master"),
                "{out}"
            );
            assert_eq!(setup.server_ref("refs/heads/master"), Some(first.clone()));
            let second = setup.commit("second");
            setup
                .client()
                .args(["tag", "-a", "-m", "release", "v1"])
                .run();
            let out = packgate_push(&setup, server, &["HEAD", "v1", ":other"]);
            assert_ok(&out);
            let text = out.stderr_text();
            let ff = format!("   {}..{}  HEAD -> master", &first[..7], &second[..7]);
            assert!(text.contains(&ff), "{server:?}: {out}");
            assert!(text.contains(" * [new tag]         v1 -> v1"), "{out}");
            assert!(text.contains(" - [deleted]         other"), "{out}");
            assert_eq!(setup.server_ref("refs/heads/master"), Some(second));
            assert_eq!(setup.server_ref("refs/heads/other"), None);
            assert_eq!(
                setup.server_ref("refs/tags/v1"),
                Some(rev_parse(setup.client(), "v1"))
            );
            // Nothing left to do.
            let out = packgate_push(&setup, server, &["master"]);
            assert_ok(&out);
            assert!(out.stderr_text().contains("Everything up-to-date"), "{out}");
            setup.fsck();
        }
    }
}

#[test]
fn protocol_version_1() {
    let setup = Setup::new("client-v1", &Git::newest());
    for server in servers() {
        setup.commit(&format!("for {server:?}"));
        assert_ok(&packgate_push(&setup, server, &["--protocol=1", "master"]));
        assert_eq!(setup.server_ref("refs/heads/master"), Some(head(&setup)));
    }
    setup.fsck();
}

#[test]
fn non_fast_forward_is_not_sent_then_forced() {
    for server in servers() {
        let setup = Setup::new("client-nonff", &Git::newest());
        setup.commit("second");
        assert_ok(&packgate_push(&setup, server, &["master"]));
        let pushed = head(&setup);
        setup
            .client()
            .args(["reset", "-q", "--hard", "HEAD~1"])
            .run();
        let rewritten = setup.commit("rewritten");
        let out = packgate_push(&setup, server, &["master"]);
        assert_failed_with(
            &out,
            " ! [rejected]        master -> master (non-fast-forward)",
        );
        assert!(
            out.stderr_text()
                .contains("error: failed to push some refs to"),
            "{out}"
        );
        assert_eq!(setup.server_ref("refs/heads/master"), Some(pushed.clone()));
        // The remote has a commit the client lacks.
        let out = packgate_push(&setup, server, &["master:refs/heads/x"]);
        assert_ok(&out);
        setup
            .client()
            .args(["commit", "-q", "--amend", "-m", "again"])
            .run();
        let out = packgate_push(&setup, server, &["+master"]);
        assert_ok(&out);
        let forced = format!(
            " + {}...{} master -> master (forced update)",
            &pushed[..7],
            &head(&setup)[..7]
        );
        assert!(out.stderr_text().contains(&forced), "{out}");
        assert_ne!(head(&setup), rewritten);
        assert_eq!(setup.server_ref("refs/heads/master"), Some(head(&setup)));
        // An existing tag is not moved without force.
        setup.client().args(["tag", "t1", "HEAD~1"]).run();
        assert_ok(&packgate_push(&setup, server, &["t1"]));
        setup.client().args(["tag", "-f", "t1", "HEAD"]).run();
        assert_failed_with(
            &packgate_push(&setup, server, &["t1"]),
            " ! [rejected]        t1 -> t1 (already exists)",
        );
        assert_ok(&packgate_push(&setup, server, &["--force", "t1"]));
        setup.fsck();
    }
}

#[test]
fn fetch_first_when_the_remote_has_unknown_history() {
    let setup = Setup::new("client-fetch-first", &Git::newest());
    assert_ok(&packgate_push(&setup, Server::Packgate, &["master"]));
    // Another client pushes a commit this one never saw.
    let other = setup.dir.join("other");
    setup
        .dir
        .git(&setup.git)
        .args(["clone", "-q"])
        .arg(&setup.server)
        .arg(&other)
        .run();
    crate::util::write_file(&other.join("o.txt"), b"o\n");
    let git = || setup.dir.git(&setup.git).current_dir(&other);
    git().args(["add", "o.txt"]).run();
    git().args(["commit", "-q", "-m", "o"]).run();
    git().args(["push", "-q", "origin", "master"]).run();
    setup.commit("mine");
    for server in servers() {
        assert_failed_with(
            &packgate_push(&setup, server, &["master"]),
            " ! [rejected]        master -> master (fetch first)",
        );
    }
}

#[test]
fn the_remote_refuses() {
    for server in servers() {
        let setup = Setup::new("client-refused", &Git::newest());
        setup.commit("second");
        assert_ok(&packgate_push(&setup, server, &["master"]));
        let pushed = head(&setup);
        setup.server_config("receive.denyNonFastForwards", "true");
        setup
            .client()
            .args(["reset", "-q", "--hard", "HEAD~1"])
            .run();
        setup.commit("rewritten");
        let out = packgate_push(&setup, server, &["--force", "master"]);
        assert_failed_with(
            &out,
            " ! [remote rejected] master -> master (non-fast-forward)",
        );
        assert_eq!(setup.server_ref("refs/heads/master"), Some(pushed.clone()));
        // A pre-receive hook that says no: its words reach the pusher, with its reason.
        setup.hook("pre-receive", "echo 'no secrets here, please' >&2\nexit 1");
        let out = packgate_push(&setup, server, &["master:refs/heads/new"]);
        assert_failed_with(
            &out,
            " ! [remote rejected] master -> new (pre-receive hook declined)",
        );
        assert!(
            out.stderr_text()
                .contains("remote: no secrets here, please"),
            "{server:?}: {out}"
        );
        assert_eq!(setup.server_ref("refs/heads/new"), None);
        setup.fsck();
    }
}

#[test]
fn force_with_lease() {
    for server in servers() {
        let setup = Setup::new("client-lease", &Git::newest());
        let first = head(&setup);
        setup.commit("second");
        assert_ok(&packgate_push(&setup, server, &["master"]));
        let pushed = head(&setup);
        setup
            .client()
            .args(["reset", "-q", "--hard", "HEAD~1"])
            .run();
        setup.commit("rewritten");
        // Expecting the old value: someone moved it since.
        let stale = format!("--force-with-lease=master:{first}");
        let out = packgate_push(&setup, server, &[&stale, "master"]);
        assert_failed_with(&out, " ! [rejected]        master -> master (stale info)");
        // Expecting no ref at all (no remote-tracking ref to take a value from).
        let out = packgate_push(&setup, server, &["--force-with-lease", "master"]);
        assert_failed_with(&out, "(stale info)");
        assert_eq!(setup.server_ref("refs/heads/master"), Some(pushed.clone()));
        let current = format!("--force-with-lease=master:{pushed}");
        let out = packgate_push(&setup, server, &[&current, "master"]);
        assert_ok(&out);
        assert!(out.stderr_text().contains("(forced update)"), "{out}");
        assert_eq!(setup.server_ref("refs/heads/master"), Some(head(&setup)));
        setup.fsck();
    }
}

#[test]
fn atomic_pushes_move_nothing_when_one_ref_fails() {
    for server in servers() {
        let setup = Setup::new("client-atomic", &Git::newest());
        let first = head(&setup);
        setup.commit("second");
        assert_ok(&packgate_push(
            &setup,
            server,
            &["master", "master:refs/heads/b"],
        ));
        let before = head(&setup);
        // Decided here: b would not be a fast-forward, so nothing is sent.
        setup.commit("third");
        let old_b = format!("{first}:refs/heads/b");
        let out = packgate_push(&setup, server, &["--atomic", "master", &old_b]);
        assert_failed_with(
            &out,
            " ! [rejected]        master -> master (atomic push failed)",
        );
        assert!(out.stderr_text().contains("(non-fast-forward)"), "{out}");
        assert_eq!(setup.server_ref("refs/heads/master"), Some(before.clone()));
        // Refused by the remote: its update hook turns b down, so master stays too.
        setup.hook(
            "update",
            "case \"$1\" in refs/heads/b) echo 'not b' >&2; exit 1;; esac",
        );
        let out = packgate_push(
            &setup,
            server,
            &["--atomic", "master", "master:refs/heads/b"],
        );
        assert_eq!(out.status.code(), Some(1), "{out}");
        let text = out.stderr_text();
        assert!(
            text.contains(" ! [remote rejected] master -> b (hook declined)"),
            "{out}"
        );
        assert!(
            text.contains(" ! [remote rejected] master -> master ("),
            "{out}"
        );
        assert_eq!(setup.server_ref("refs/heads/master"), Some(before));
        setup.fsck();
    }
}

#[test]
fn push_options_reach_the_hooks() {
    for server in servers() {
        let setup = Setup::new("client-options", &Git::newest());
        // Without receive.advertisePushOptions the remote lacks them: refused before sending.
        let out = packgate_push(&setup, server, &["--push-option=ci.skip", "master"]);
        assert_eq!(out.status.code(), Some(128), "{out}");
        assert!(
            out.stderr_text()
                .contains("the receiving end does not support push options"),
            "{out}"
        );
        assert_eq!(setup.server_ref("refs/heads/master"), None);
        setup.server_config("receive.advertisePushOptions", "true");
        setup.hook(
            "pre-receive",
            "echo \"options=$GIT_PUSH_OPTION_COUNT 0=$GIT_PUSH_OPTION_0 1=$GIT_PUSH_OPTION_1\"",
        );
        let out = packgate_push(
            &setup,
            server,
            &["--push-option=ci.skip", "--push-option=x=y z", "master"],
        );
        assert_ok(&out);
        assert!(
            out.stderr_text()
                .contains("remote: options=2 0=ci.skip 1=x=y z"),
            "{server:?}: {out}"
        );
        setup.fsck();
    }
}

/// The bytes of the pack a push sent, from the client's debug event.
fn pack_bytes(out: &Output) -> u64 {
    let text = out.stderr_text();
    let line = text
        .lines()
        .find(|l| l.contains("pack sent"))
        .unwrap_or_else(|| panic!("no pack event: {out}"));
    let bytes = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("bytes="))
        .unwrap_or_else(|| panic!("no bytes in '{line}'"));
    bytes
        .parse()
        .unwrap_or_else(|e| panic!("bytes in '{line}': {e}"))
}

#[test]
fn thin_packs_send_deltas_against_what_the_remote_has() {
    for server in servers() {
        let setup = Setup::new("client-thin", &Git::newest());
        let text: String = (0..4000)
            .map(|i| format!("line {i} of a long file\n"))
            .collect();
        crate::util::write_file(&setup.client.join("big.txt"), text.as_bytes());
        setup.client().args(["add", "big.txt"]).run();
        setup.client().args(["commit", "-q", "-m", "big"]).run();
        assert_ok(&packgate_push(&setup, server, &["master"]));
        let changed = text.replace("line 2000 of", "line two thousand of");
        crate::util::write_file(&setup.client.join("big.txt"), changed.as_bytes());
        setup
            .client()
            .args(["commit", "-q", "-a", "-m", "small change"])
            .run();
        let debug = |args: &[&str], refspec: &str| {
            let mut cmd = setup.dir.packgate().current_dir(&setup.client).arg("push");
            if let Server::Git = server {
                cmd = cmd.arg(format!(
                    "--receive-pack={} receive-pack",
                    setup.git.program.display()
                ));
            }
            cmd.env("PACKGATE_LOG", "packgate_protocol::client::push=debug")
                .args(args)
                .arg(&setup.server)
                .arg(refspec)
                .output()
        };
        let full = debug(&["--no-thin"], "master:refs/heads/full");
        assert_ok(&full);
        // Deleted again: the remote keeps the objects but no longer advertises them, so the
        // same objects go out once more, thin this time.
        assert_ok(&packgate_push(&setup, server, &[":full"]));
        let thin = debug(&[], "master:refs/heads/thin");
        assert_ok(&thin);
        let (full, thin) = (pack_bytes(&full), pack_bytes(&thin));
        assert!(
            thin * 4 < full,
            "{server:?}: a thin pack of a one-line change took {thin} bytes, the full one {full}"
        );
        setup.fsck();
    }
}

/// A connection as smart HTTP makes one: each request is answered alone by
/// `packgate receive-pack --stateless-rpc`, the advertisement by `--advertise-refs`.
struct Stateless {
    repo: PathBuf,
    request: Vec<u8>,
    answer: Cursor<Vec<u8>>,
    requests: usize,
}

impl Stateless {
    fn new(repo: &Path) -> Stateless {
        let advertisement = Self::run(repo, &["--advertise-refs"], &[]);
        Stateless {
            repo: repo.to_owned(),
            request: Vec::new(),
            answer: Cursor::new(advertisement),
            requests: 0,
        }
    }

    fn run(repo: &Path, extra: &[&str], input: &[u8]) -> Vec<u8> {
        let output = crate::util::Cmd::new(Path::new(PACKGATE))
            .arg("receive-pack")
            .arg("--stateless-rpc")
            .args(extra)
            .arg(repo)
            .stdin(input.to_vec())
            .run();
        output.stdout
    }
}

impl Connection for Stateless {
    fn stateless(&self) -> bool {
        true
    }
    fn reader(&mut self) -> &mut dyn BufRead {
        &mut self.answer
    }
    fn writer(&mut self) -> &mut dyn Write {
        &mut self.request
    }
    fn end_request(&mut self) -> std::io::Result<()> {
        let body = std::mem::take(&mut self.request);
        self.answer = Cursor::new(Self::run(&self.repo, &[], &body));
        self.requests += 1;
        Ok(())
    }
    fn finish(self: Box<Self>) -> std::io::Result<()> {
        assert_eq!(self.requests, 1, "a push is one request");
        Ok(())
    }
}

fn open_client_objects(setup: &Setup) -> gix_odb::Handle {
    gix_odb::at(setup.client.join(".git/objects"), gix_hash::Kind::Sha1)
        .unwrap_or_else(|e| panic!("the client's objects: {e}"))
}

fn command(name: &str, new: &str) -> PushCommand {
    PushCommand {
        name: name
            .try_into()
            .unwrap_or_else(|e| panic!("ref name {name}: {e:?}")),
        new: gix_hash::ObjectId::from_hex(new.as_bytes())
            .unwrap_or_else(|e| panic!("object id {new}: {e}")),
        expected: Expected::Advertised,
        force: false,
    }
}

#[test]
fn over_a_stateless_connection_with_progress() {
    let setup = Setup::new("client-stateless", &Git::newest());
    setup.server_config("receive.advertisePushOptions", "true");
    setup.hook(
        "post-receive",
        "echo \"post-receive saw $GIT_PUSH_OPTION_0\"",
    );
    let db = open_client_objects(&setup);
    let first = head(&setup);
    let options = PushOptions {
        push_options: vec!["hello".into()],
        atomic: true,
        ..PushOptions::default()
    };
    let mut progress = Vec::new();
    let report = push(
        Box::new(Stateless::new(&setup.server)),
        &db,
        &[
            command("refs/heads/master", &first),
            command("refs/heads/b", &first),
        ],
        &options,
        &mut progress,
    )
    .unwrap_or_else(|e| panic!("push: {e}"));
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(report.refs[0].status, RefStatus::Ok { forced: false });
    let progress = String::from_utf8_lossy(&progress);
    assert!(progress.contains("post-receive saw hello"), "{progress}");
    let second = setup.commit("second");
    let report = push(
        Box::new(Stateless::new(&setup.server)),
        &db,
        &[
            command("refs/heads/master", &second),
            command("refs/heads/b", &first),
        ],
        &PushOptions::default(),
        &mut Vec::new(),
    )
    .unwrap_or_else(|e| panic!("push: {e}"));
    assert_eq!(report.refs[0].status, RefStatus::Ok { forced: false });
    assert_eq!(report.refs[1].status, RefStatus::UpToDate);
    assert_eq!(setup.server_ref("refs/heads/master"), Some(second));
    setup.fsck();
}

#[test]
fn the_outcome_is_unknown_when_the_remote_dies_after_the_pack() {
    let setup = Setup::new("client-unknown", &Git::newest());
    let marker = setup.dir.join("paused");
    let background = setup
        .dir
        .packgate()
        .current_dir(&setup.client)
        .env("PACKGATE_TEST_PAUSE_AFTER_MIGRATION", &marker)
        .args(["push"])
        .arg(&setup.server)
        .arg("master")
        .spawn();
    wait_until(Duration::from_secs(30), "the remote's pause", || {
        marker.exists()
    });
    let pid = std::fs::read_to_string(&marker)
        .unwrap_or_else(|e| panic!("reading {}: {e}", marker.display()));
    crate::util::Cmd::new(Path::new("kill"))
        .args(["-9", pid.trim()])
        .run();
    let out = background.wait(Duration::from_secs(30));
    assert_failed_with(&out, " ! [remote failure]  master -> master (");
    assert!(!out.stderr_text().contains("[new branch]"), "{out}");
    // The remote never moved the ref (it was killed before), and the client did not claim it.
    assert_eq!(setup.server_ref("refs/heads/master"), None);
}
