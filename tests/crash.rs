//! A push whose server is killed with SIGKILL (a crash, the OOM killer) at any point blocks no
//! later push: the next push to the same ref and to another ref succeed, and `git fsck`
//! passes. Pushes to different refs run at the same time; a killed push's quarantine is
//! removed by a later push once it is old; a ref's stale `.lock` fails only that ref, as in git.
//!
//! The server is stopped at a known point before it is killed: a hook that writes the
//! server's process id (its `$PPID`) to a marker file and waits, the test-only pause between
//! migration and ref update (`PACKGATE_TEST_PAUSE_AFTER_MIGRATION`), or half a pack.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::receive_pack::{
    assert_pushed, quarantines, receive_pack_option, rev_parse, setup_with_partial_request,
    stalled_mid_pack, wait_until, Setup, END_LIMIT,
};
use crate::util::{file_url, fsck, Cmd, Git, Output};

/// Where a push's server is killed.
#[derive(Clone, Copy, Debug)]
enum KillPoint {
    /// While this hook script runs.
    Hook(&'static str),
    /// After the objects moved into the repository, before any ref moved.
    AfterMigration,
}

/// Sends a signal with kill(1): `args` are its arguments.
fn kill(args: &[&str]) {
    Cmd::new(Path::new("kill")).args(args).output();
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// A hook that writes "<server pid> <own pid>" to `marker` (whole, by a rename) and then
/// waits to be killed.
fn announcing_hook(marker: &Path) -> String {
    let marker = quote(marker);
    format!("cat >/dev/null\necho \"$PPID $$\" >{marker}.partial && mv {marker}.partial {marker}\nexec sleep 300")
}

/// Pushes a new commit to `master` and kills the server with SIGKILL at `point`; returns the
/// client's output once it has ended. The hook, and what it started, are gone afterwards.
fn push_killed_at(setup: &Setup, point: KillPoint) -> Output {
    let marker = setup.dir.join("marker");
    setup.commit("doomed");
    let mut push = setup
        .client()
        .arg("push")
        .arg(receive_pack_option())
        .arg(file_url(&setup.server))
        .arg("master");
    match point {
        KillPoint::Hook(name) => setup.hook(name, &announcing_hook(&marker)),
        KillPoint::AfterMigration => {
            push = push.env("PACKGATE_TEST_PAUSE_AFTER_MIGRATION", &marker);
        }
    }
    let mut push = push.spawn();
    wait_until(END_LIMIT, &format!("the push to reach {point:?}"), || {
        marker.exists() || push.has_exited()
    });
    assert!(
        marker.exists(),
        "the push never reached {point:?}: {}",
        push.kill_group()
    );
    let pids = std::fs::read_to_string(&marker).unwrap_or_else(|e| panic!("reading marker: {e}"));
    let mut pids = pids.split_whitespace();
    let server = pids
        .next()
        .unwrap_or_else(|| panic!("no process id in the marker"));
    kill(&["-KILL", server]);
    let output = push.wait(END_LIMIT);
    if let Some(hook) = pids.next() {
        // The hook runs in a process group of its own, which outlives the server.
        kill(&["-KILL", "--", &format!("-{hook}")]);
    }
    if let KillPoint::Hook(name) = point {
        std::fs::remove_file(setup.server.join("hooks").join(name))
            .unwrap_or_else(|e| panic!("removing the {name} hook: {e}"));
    }
    output
}

/// After a killed push: a push to the same ref and one to another ref succeed, and the
/// repository passes `git fsck --strict`.
#[track_caller]
fn assert_next_pushes_succeed(setup: &Setup, context: &str) {
    let tip = setup.commit("after the kill");
    assert_pushed(&setup.push(&["master"]));
    assert_eq!(
        setup.server_ref("refs/heads/master"),
        Some(tip.clone()),
        "{context}"
    );
    assert_pushed(&setup.push(&["master:refs/heads/other"]));
    assert_eq!(setup.server_ref("refs/heads/other"), Some(tip), "{context}");
    fsck(&setup.dir, &setup.git, &setup.server);
}

#[test]
fn killed_during_each_hook_and_after_migration() {
    let points = [
        KillPoint::Hook("pre-receive"),
        KillPoint::Hook("update"),
        KillPoint::AfterMigration,
        KillPoint::Hook("post-receive"),
        KillPoint::Hook("post-update"),
    ];
    for git in Git::all() {
        for point in points {
            let context = format!("killed at {point:?} with {git}");
            let setup = Setup::new("crash", &git);
            assert_pushed(&setup.push(&["master"]));
            let before = setup.server_ref("refs/heads/master");
            let killed = push_killed_at(&setup, point);
            assert!(
                killed.signalled().is_none(),
                "{context}: the client was killed, not the server: {killed}"
            );
            if matches!(point, KillPoint::Hook("pre-receive" | "update")) {
                assert!(!killed.status.success(), "{context}: {killed}");
                assert_eq!(setup.server_ref("refs/heads/master"), before, "{context}");
            }
            if matches!(point, KillPoint::AfterMigration) {
                // The objects are in, the ref is not.
                let doomed = rev_parse(setup.client(), "master");
                assert!(setup.has_object(&setup.server, &doomed), "{context}");
                assert_eq!(setup.server_ref("refs/heads/master"), before, "{context}");
            }
            assert_next_pushes_succeed(&setup, &context);
        }
    }
}

/// The server is killed while it reads the pack (half of it sent, the rest never comes).
#[test]
fn killed_during_pack_receipt() {
    for git in Git::all() {
        let (setup, request) = setup_with_partial_request("crash-pack", &git);
        let (writer, server) = stalled_mid_pack(&setup, &request);
        let killed = server.kill_group();
        assert_eq!(killed.signalled(), Some(9), "{killed}");
        writer.kill_group();
        // What a crash leaves: the quarantine, which blocks nothing.
        assert_eq!(quarantines(&setup.server).len(), 1);
        assert_next_pushes_succeed(&setup, &format!("killed during pack receipt with {git}"));
    }
}

/// Two pushes to different refs of one repository run at the same time: each one's
/// pre-receive hook waits until the other's has started (a bounded wait that fails the push),
/// so both succeed only if they overlap.
#[test]
fn pushes_to_different_refs_overlap() {
    for git in Git::all() {
        let setup = Setup::new("overlap", &git);
        assert_pushed(&setup.push(&["master"]));
        let started = setup.dir.join("started");
        std::fs::create_dir(&started).unwrap_or_else(|e| panic!("mkdir: {e}"));
        let started_q = quote(&started);
        setup.hook(
            "pre-receive",
            &format!(
                "read old new ref\n\
                 touch {started_q}/\"${{ref##*/}}\"\n\
                 i=0\n\
                 while [ \"$(ls {started_q} | wc -l)\" -lt 2 ]; do\n\
                 \x20 i=$((i + 1))\n\
                 \x20 if [ $i -gt 2000 ]; then echo 'the other push is not here' >&2; exit 1; fi\n\
                 \x20 sleep 0.01\n\
                 done"
            ),
        );
        let work_trees: Vec<(PathBuf, String)> = ["one", "two"]
            .iter()
            .map(|name| {
                let work = setup.dir.join(&format!("work-{name}"));
                setup.dir.copy_tree(&setup.client, &work);
                crate::util::write_file(&work.join(format!("{name}.txt")), name.as_bytes());
                let git_in = || setup.dir.git(&git).current_dir(&work);
                git_in().args(["add", "."]).run();
                git_in().args(["commit", "-q", "-m", name]).run();
                (work, format!("master:refs/heads/{name}"))
            })
            .collect();
        let outputs: Vec<Output> = std::thread::scope(|scope| {
            let handles: Vec<_> = work_trees
                .iter()
                .map(|(work, refspec)| {
                    let push = setup
                        .dir
                        .git(&git)
                        .current_dir(work)
                        .arg("push")
                        .arg(receive_pack_option())
                        .arg(file_url(&setup.server))
                        .arg(refspec);
                    scope.spawn(move || push.output())
                })
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
        for output in &outputs {
            assert_pushed(output);
        }
        for (work, refspec) in &work_trees {
            let name = refspec.trim_start_matches("master:");
            let tip = rev_parse(setup.dir.git(&git).current_dir(work), "master");
            assert_eq!(setup.server_ref(name), Some(tip), "{name}");
        }
        fsck(&setup.dir, &git, &setup.server);
    }
}

/// Sets the modification time of `path` and everything below it to `age` ago.
fn age(path: &Path, age: Duration) {
    let then = SystemTime::now() - age;
    let seconds = then
        .duration_since(UNIX_EPOCH)
        .unwrap_or_else(|e| panic!("clock: {e}"))
        .as_secs();
    Cmd::new(Path::new("find"))
        .arg(path)
        .args([
            "-exec",
            "touch",
            "-h",
            "-d",
            &format!("@{seconds}"),
            "{}",
            "+",
        ])
        .run();
}

/// A killed push's quarantine stays until it is older than `receive.quarantineExpiry` (a day
/// by default); the next push to start then removes it.
#[test]
fn stale_quarantines_are_removed_when_a_push_starts() {
    const HOUR: Duration = Duration::from_secs(3600);
    for git in Git::all() {
        let setup = Setup::new("stale", &git);
        assert_pushed(&setup.push(&["master"]));
        push_killed_at(&setup, KillPoint::Hook("pre-receive"));
        let left = quarantines(&setup.server);
        assert_eq!(left.len(), 1, "what the killed push left: {left:?}");
        let old = &left[0];
        let young = setup.server.join("objects/tmp_objdir-incoming-young");
        setup.dir.copy_tree(old, &young);
        age(old, 25 * HOUR);
        age(&young, 12 * HOUR);

        assert_pushed(&setup.push(&["master"]));
        assert_eq!(quarantines(&setup.server), vec![young.clone()], "{git}");

        setup.server_config("receive.quarantineExpiry", "3600");
        setup.commit("once more");
        assert_pushed(&setup.push(&["master"]));
        assert_eq!(quarantines(&setup.server), Vec::<PathBuf>::new(), "{git}");
        fsck(&setup.dir, &git, &setup.server);
    }
}

/// A ref's `.lock` left by a process killed while it updated the ref (the only lock a crash
/// can leave now) fails that ref at once, naming the file, as git's receive-pack does; other
/// refs are pushed as usual. git waits `core.filesRefLockTimeout` (100 ms) for a ref lock;
/// packgate waited 10 s.
#[test]
fn a_stale_ref_lock_fails_only_its_ref_as_in_git() {
    for git in Git::all() {
        for server in ["packgate", "git"] {
            let context = format!("{server} receive-pack, {git}");
            let setup = Setup::new("ref-lock", &git);
            assert_pushed(&setup.push(&["master"]));
            let before = setup.server_ref("refs/heads/master");
            crate::util::write_file(&setup.server.join("refs/heads/master.lock"), b"");
            setup.commit("blocked");
            let push = |refspec: &str| {
                let mut push = setup.client().arg("push");
                if server == "packgate" {
                    push = push.arg(receive_pack_option());
                }
                push.arg(file_url(&setup.server)).arg(refspec).output()
            };
            let output = push("master");
            assert!(!output.status.success(), "{context}: {output}");
            let stderr = output.stderr_text();
            assert!(
                stderr.contains("failed to update ref") && stderr.contains("master.lock"),
                "{context}: {output}"
            );
            assert!(
                output.elapsed < Duration::from_secs(8),
                "{context}: the push waited for the lock: {output}"
            );
            assert_eq!(setup.server_ref("refs/heads/master"), before, "{context}");
            assert_pushed(&push("master:refs/heads/other"));
            std::fs::remove_file(setup.server.join("refs/heads/master.lock"))
                .unwrap_or_else(|e| panic!("{context}: removing the lock: {e}"));
            assert_pushed(&push("master"));
            fsck(&setup.dir, &git, &setup.server);
        }
    }
}
