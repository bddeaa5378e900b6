//! `packgate maintenance run`: repacking after many pushes (a few packs, a bitmap, a
//! commit-graph, all read by git), the prune grace period, `gc.pid`, `--auto` thresholds,
//! maintenance started by pushes, maintenance beside pushes and clones, and kill -9 at each
//! phase — every result checked with `git fsck`, a push and a clone.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use crate::receive_pack::{rev_parse, Setup};
use crate::util::{file_url, fsck, packgate_upload_pack_option, refs, Dir, Git, Output};

/// `packgate maintenance run <args> <repo>`.
fn maintenance(dir: &Dir, repo: &Path, args: &[&str]) -> Output {
    dir.packgate()
        .args(["maintenance", "run"])
        .args(args)
        .arg(repo)
        .timeout(Duration::from_secs(300))
        .output()
}

/// The `pack-*.pack` files of a repository, sorted.
fn packs(repo: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo.join("objects/pack"))
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("pack-") && name.ends_with(".pack"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The packs with a `.mtimes` (cruft packs).
fn cruft_packs(repo: &Path) -> Vec<String> {
    packs(repo)
        .into_iter()
        .filter(|name| {
            repo.join("objects/pack")
                .join(name)
                .with_extension("mtimes")
                .is_file()
        })
        .collect()
}

/// How many loose objects a repository has.
fn loose_count(repo: &Path) -> usize {
    (0..=255u8)
        .map(|fanout| {
            std::fs::read_dir(repo.join(format!("objects/{fanout:02x}")))
                .map(|entries| entries.count())
                .unwrap_or(0)
        })
        .sum()
}

/// A push setup whose server keeps every push as a pack and starts no maintenance itself.
fn setup(name: &str, git: &Git) -> Setup {
    let setup = Setup::new(name, git);
    setup.server_config("receive.unpackLimit", "1");
    setup.server_config("receive.autogc", "false");
    setup
}

/// Settings that need only this branch's writers (no commit-graph, pack-refs or bitmap).
fn repack_only(setup: &Setup) {
    setup.server_config("gc.writeCommitGraph", "false");
    setup.server_config("gc.packRefs", "false");
    setup.server_config("repack.writeBitmaps", "false");
}

/// `count` pushes of one small commit each to `master`.
fn push_commits(setup: &Setup, prefix: &str, count: usize) {
    for i in 0..count {
        setup.commit(&format!("{prefix} {i}"));
        let pushed = setup.push(&["HEAD:refs/heads/master"]);
        assert!(pushed.status.success(), "push {i}: {pushed}");
    }
}

/// A clone through packgate's upload-pack, checked with fsck, whose refs equal the server's.
fn clone_matches(setup: &Setup, name: &str) {
    let target = setup.dir.join(name);
    setup
        .dir
        .git(&setup.git)
        .args(["clone", "-q", "--mirror"])
        .arg(packgate_upload_pack_option())
        .arg(file_url(&setup.server))
        .arg(&target)
        .timeout(Duration::from_secs(120))
        .run();
    fsck(&setup.dir, &setup.git, &target);
    assert_eq!(
        refs(&setup.dir, &setup.git, &target, &[]),
        refs(&setup.dir, &setup.git, &setup.server, &[]),
        "the clone's refs differ from the server's"
    );
}

fn set_mtime(path: &Path, age: Duration) {
    let file = std::fs::File::open(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    file.set_modified(SystemTime::now() - age)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
}

fn loose_path(repo: &Path, id: &str) -> PathBuf {
    repo.join("objects").join(&id[..2]).join(&id[2..])
}

const THREE_WEEKS: Duration = Duration::from_secs(21 * 86_400);

/// 200 small pushes leave 200 packs; `--auto` (above gc.autoPackLimit's 50) brings them to
/// one with a bitmap and a commit-graph that git reads; a clone matches.
#[test]
fn auto_after_200_pushes_repacks_with_bitmap_and_commit_graph() {
    let git = Git::newest();
    let setup = setup("many-pushes", &git);
    push_commits(&setup, "change", 200);
    assert!(packs(&setup.server).len() >= 200);
    let ran = maintenance(&setup.dir, &setup.server, &["--auto"]);
    assert!(ran.status.success(), "{ran}");
    let after = packs(&setup.server);
    assert!(after.len() <= 2, "packs after --auto: {after:?}");
    let pack = setup.server.join("objects/pack").join(&after[0]);
    assert!(pack.with_extension("bitmap").is_file(), "no bitmap");
    assert!(pack.with_extension("rev").is_file(), "no reverse index");
    let info = setup.server.join("objects/info");
    assert!(
        info.join("commit-graph").is_file() || info.join("commit-graphs").is_dir(),
        "no commit-graph"
    );
    fsck(&setup.dir, &git, &setup.server);
    let server_git = || setup.dir.git_in(&git, &setup.server);
    server_git().args(["commit-graph", "verify"]).run();
    server_git()
        .args(["rev-list", "--test-bitmap", "HEAD"])
        .run();
    server_git().args(["count-objects", "-v"]).run();
    clone_matches(&setup, "clone.git");
}

/// Lock files a killed writer left (of `packed-refs`, the commit-graph chain) older than an
/// hour are removed under gc.pid, so pack-refs and the commit-graph go on; a fresh one (a
/// writer at work) stays, and its task fails without touching it.
#[test]
fn stale_locks_of_killed_writers_do_not_stop_maintenance() {
    let git = Git::newest();
    let setup = setup("stale-locks", &git);
    push_commits(&setup, "change", 3);
    let packed_lock = setup.server.join("packed-refs.lock");
    let chain_dir = setup.server.join("objects/info/commit-graphs");
    std::fs::create_dir_all(&chain_dir).unwrap_or_else(|err| panic!("{err}"));
    let chain_lock = chain_dir.join("commit-graph-chain.lock");
    for lock in [&packed_lock, &chain_lock] {
        crate::util::write_file(lock, b"");
    }
    // Fresh: a writer may be at work; the gc task reports the failure and leaves them.
    let ran = maintenance(&setup.dir, &setup.server, &[]);
    assert!(!ran.status.success(), "{ran}");
    assert!(packed_lock.exists() && chain_lock.exists());
    // Left by a writer killed two hours ago: removed, and the task completes.
    for lock in [&packed_lock, &chain_lock] {
        set_mtime(lock, Duration::from_secs(2 * 3600));
    }
    let ran = maintenance(&setup.dir, &setup.server, &[]);
    assert!(ran.status.success(), "{ran}");
    assert!(!packed_lock.exists() && !chain_lock.exists());
    assert!(setup.server.join("packed-refs").is_file());
    fsck(&setup.dir, &git, &setup.server);
    setup
        .dir
        .git_in(&git, &setup.server)
        .args(["commit-graph", "verify"])
        .run();
}

/// The full repack without the other branches' writers: packs become one, git reads it, the
/// pushed history is all there, and the loose copies of packed objects go.
#[test]
fn full_repack_keeps_every_reachable_object() {
    for git in Git::all() {
        let setup = setup("full-repack", &git);
        repack_only(&setup);
        push_commits(&setup, "change", 12);
        // Loose objects too: a push below the unpack limit.
        setup.server_config("receive.unpackLimit", "100");
        push_commits(&setup, "loose", 3);
        assert!(loose_count(&setup.server) > 0);
        let before = refs(&setup.dir, &git, &setup.server, &[]);
        let ran = maintenance(&setup.dir, &setup.server, &[]);
        assert!(ran.status.success(), "{ran}");
        assert_eq!(packs(&setup.server).len(), 1);
        assert_eq!(
            loose_count(&setup.server),
            0,
            "loose objects were not packed"
        );
        assert_eq!(refs(&setup.dir, &git, &setup.server, &[]), before);
        fsck(&setup.dir, &git, &setup.server);
        setup
            .dir
            .git_in(&git, &setup.server)
            .args(["verify-pack"])
            .arg(
                setup
                    .server
                    .join("objects/pack")
                    .join(&packs(&setup.server)[0])
                    .with_extension("idx"),
            )
            .run();
        let counted = setup
            .dir
            .git_in(&git, &setup.server)
            .args(["count-objects", "-v"])
            .run()
            .stdout_text();
        assert!(counted.contains("packs: 1"), "{counted}");
        clone_matches(&setup, "clone.git");
        // Again: nothing changes but it still works (the pack may be the same file).
        let again = maintenance(&setup.dir, &setup.server, &[]);
        assert!(again.status.success(), "{again}");
        assert_eq!(packs(&setup.server).len(), 1);
        fsck(&setup.dir, &git, &setup.server);
    }
}

/// Unreachable objects younger than gc.pruneExpire (two weeks) survive a full repack, loose
/// or in a pack that goes; older ones go.
#[test]
fn unreachable_objects_younger_than_the_grace_period_survive() {
    let git = Git::newest();
    let setup = setup("grace", &git);
    repack_only(&setup);
    let server_git = || setup.dir.git_in(&git, &setup.server);
    push_commits(&setup, "base", 2);
    // Two commits pushed, then made unreachable by force pushes: each in a pack of its own.
    let young_commit = setup.commit("young side");
    setup.push(&["HEAD:refs/heads/young"]);
    let old_commit = setup.commit("old side");
    setup.push(&["HEAD:refs/heads/old"]);
    server_git()
        .args(["update-ref", "-d", "refs/heads/young"])
        .run();
    server_git()
        .args(["update-ref", "-d", "refs/heads/old"])
        .run();
    // The pack holding only the old commit is three weeks old.
    let old_pack = packs(&setup.server)
        .into_iter()
        .map(|name| setup.server.join("objects/pack").join(name))
        .find(|pack| {
            let idx = pack.with_extension("idx");
            let listed = setup
                .dir
                .git_in(&git, &setup.server)
                .args(["show-index"])
                .stdin(std::fs::read(&idx).unwrap_or_else(|err| panic!("{err}")))
                .run()
                .stdout_text();
            listed.contains(&old_commit)
        })
        .unwrap_or_else(|| panic!("no pack holds the old commit"));
    set_mtime(&old_pack, THREE_WEEKS);
    // Loose ones.
    let hash = |text: &str| {
        server_git()
            .args(["hash-object", "-w", "--stdin"])
            .stdin(text.as_bytes().to_vec())
            .run()
            .stdout_text()
            .trim()
            .to_owned()
    };
    let young_blob = hash("young loose\n");
    let old_blob = hash("old loose\n");
    set_mtime(&loose_path(&setup.server, &old_blob), THREE_WEEKS);

    // A copy for the same with gc.cruftPacks=false (young objects kept loose).
    let loose_kept = setup.dir.join("loose-kept.git");
    setup.dir.copy_tree(&setup.server, &loose_kept);

    let ran = maintenance(&setup.dir, &setup.server, &[]);
    assert!(ran.status.success(), "{ran}");
    assert!(
        setup.has_object(&setup.server, &young_blob),
        "young loose blob lost"
    );
    assert!(
        setup.has_object(&setup.server, &young_commit),
        "young commit lost"
    );
    assert!(
        !setup.has_object(&setup.server, &old_blob),
        "old loose blob kept"
    );
    assert!(
        !setup.has_object(&setup.server, &old_commit),
        "old commit kept"
    );
    fsck(&setup.dir, &git, &setup.server);
    // The young ones are in a cruft pack (git 2.47's gc.cruftPacks default) with `.mtimes`;
    // no loose object is left.
    let names = packs(&setup.server);
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(
        cruft_packs(&setup.server).len(),
        1,
        "no cruft pack: {names:?}"
    );
    assert_eq!(loose_count(&setup.server), 0);
    // git reads the cruft pack's times: its own gc with a grace period of one week keeps the
    // young objects (its new cruft pack carries our times on).
    let git_copy = setup.dir.join("git-gc.git");
    setup.dir.copy_tree(&setup.server, &git_copy);
    setup
        .dir
        .git_in(&git, &git_copy)
        .args(["gc", "-q", "--cruft", "--prune=1.week.ago"])
        .run();
    assert!(
        setup.has_object(&git_copy, &young_blob),
        "git dropped the young blob"
    );
    assert!(
        setup.has_object(&git_copy, &young_commit),
        "git dropped the young commit"
    );
    fsck(&setup.dir, &git, &git_copy);

    // gc.cruftPacks=false: young ones are kept as loose objects.
    setup
        .dir
        .git_in(&git, &loose_kept)
        .args(["config", "gc.cruftPacks", "false"])
        .run();
    let ran = maintenance(&setup.dir, &loose_kept, &[]);
    assert!(ran.status.success(), "{ran}");
    assert_eq!(packs(&loose_kept).len(), 1);
    assert!(loose_path(&loose_kept, &young_blob).is_file());
    assert!(loose_path(&loose_kept, &young_commit).is_file());
    assert!(!setup.has_object(&loose_kept, &old_blob));
    assert!(!setup.has_object(&loose_kept, &old_commit));
    fsck(&setup.dir, &git, &loose_kept);
    // And with gc.pruneExpire=now the young ones go too.
    setup.server_config("gc.pruneExpire", "now");
    let ran = maintenance(&setup.dir, &setup.server, &[]);
    assert!(ran.status.success(), "{ran}");
    assert!(!setup.has_object(&setup.server, &young_blob));
    assert!(!setup.has_object(&setup.server, &young_commit));
    fsck(&setup.dir, &git, &setup.server);
    clone_matches(&setup, "clone.git");
}

/// `--auto` below gc.auto and gc.autoPackLimit changes nothing.
#[test]
fn auto_below_thresholds_does_nothing() {
    let git = Git::newest();
    let setup = setup("auto-idle", &git);
    repack_only(&setup);
    push_commits(&setup, "change", 5);
    let before = packs(&setup.server);
    let loose = loose_count(&setup.server);
    let ran = maintenance(&setup.dir, &setup.server, &["--auto"]);
    assert!(ran.status.success(), "{ran}");
    assert_eq!(packs(&setup.server), before);
    assert_eq!(loose_count(&setup.server), loose);
    assert!(!setup.server.join("gc.pid").exists());
    // Above gc.autoPackLimit it repacks.
    setup.server_config("gc.autoPackLimit", "3");
    let ran = maintenance(&setup.dir, &setup.server, &["--auto"]);
    assert!(ran.status.success(), "{ran}");
    assert_eq!(packs(&setup.server).len(), 1);
}

/// A push through `packgate receive-pack` starts `--auto` maintenance once git's thresholds
/// say so (receive.autogc), detached: the push returns, the packs are then repacked.
#[test]
fn push_starts_auto_maintenance() {
    let git = Git::newest();
    let setup = Setup::new("push-autogc", &git);
    setup.server_config("receive.unpackLimit", "1");
    setup.server_config("gc.autoPackLimit", "3");
    repack_only(&setup);
    push_commits(&setup, "change", 3);
    assert_eq!(
        packs(&setup.server).len(),
        3,
        "maintenance ran below the limit"
    );
    push_commits(&setup, "more", 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while packs(&setup.server).len() > 1 || setup.server.join("gc.pid").exists() {
        assert!(
            Instant::now() < deadline,
            "no maintenance after the push: {:?}",
            packs(&setup.server)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    fsck(&setup.dir, &git, &setup.server);
    clone_matches(&setup, "clone.git");
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// gc.pid naming a live process of this host blocks maintenance (`--auto` quietly); a dead
/// one does not; and git's gc is blocked by packgate's own gc.pid.
#[test]
fn gc_pid_of_a_live_process_blocks() {
    let git = Git::newest();
    let setup = setup("gc-pid", &git);
    repack_only(&setup);
    push_commits(&setup, "change", 3);
    let gc_pid = setup.server.join("gc.pid");
    crate::util::write_file(
        &gc_pid,
        format!("{} {}", std::process::id(), hostname()).as_bytes(),
    );
    let before = packs(&setup.server);
    let refused = maintenance(&setup.dir, &setup.server, &[]);
    assert!(!refused.status.success());
    assert!(
        refused
            .stderr_text()
            .contains("gc is already running on machine"),
        "{refused}"
    );
    let auto = maintenance(&setup.dir, &setup.server, &["--auto"]);
    assert!(auto.status.success(), "{auto}");
    assert_eq!(packs(&setup.server), before);
    // A process that is gone (pids stay below 2^22) does not hold it.
    crate::util::write_file(&gc_pid, format!("4999999 {}", hostname()).as_bytes());
    let ran = maintenance(&setup.dir, &setup.server, &[]);
    assert!(ran.status.success(), "{ran}");
    assert_eq!(packs(&setup.server).len(), 1);
    assert!(!gc_pid.exists(), "gc.pid left behind");

    // packgate's gc.pid, while it runs, keeps git's gc out.
    push_commits(&setup, "again", 2);
    let marker = setup.dir.join("paused");
    let running = setup
        .dir
        .packgate()
        .args(["maintenance", "run"])
        .arg(&setup.server)
        .env("PACKGATE_TEST_MAINTENANCE_PAUSE", "packed")
        .env("PACKGATE_TEST_MAINTENANCE_PAUSED", &marker)
        .spawn();
    wait_for(&marker);
    let git_gc = setup.dir.git_in(&git, &setup.server).args(["gc"]).output();
    assert!(
        !git_gc.status.success(),
        "git gc ran beside packgate: {git_gc}"
    );
    assert!(
        git_gc.stderr_text().contains("gc is already running"),
        "{git_gc}"
    );
    running.kill_group();
}

/// Wait (at most a minute) until `marker` exists.
fn wait_for(marker: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "maintenance never reached its pause point ({})",
            marker.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// kill -9 at each phase of a full repack leaves a repository that passes `git fsck`, holds
/// every pushed commit, takes the next push and serves a clone; a later run completes.
#[test]
fn kill_at_each_phase_leaves_a_working_repository() {
    let git = Git::newest();
    let template = setup("kill", &git);
    repack_only(&template);
    push_commits(&template, "change", 6);
    // Something unreachable, young, in a pack that goes: the loosening phase has work.
    template.commit("side");
    template.push(&["HEAD:refs/heads/side"]);
    template
        .dir
        .git_in(&git, &template.server)
        .args(["update-ref", "-d", "refs/heads/side"])
        .run();
    template
        .client()
        .args(["reset", "-q", "--hard", "HEAD~1"])
        .run();
    for phase in [
        "refs-packed",
        "packed",
        "indexed",
        "installed",
        "unreachable-kept",
        "deleted",
        "pruning",
    ] {
        let server = template.dir.join(&format!("server-{phase}.git"));
        template.dir.copy_tree(&template.server, &server);
        let before = refs(&template.dir, &git, &server, &[]);
        let marker = template.dir.join(&format!("paused-{phase}"));
        let running = template
            .dir
            .packgate()
            .args(["maintenance", "run"])
            .arg(&server)
            .env("PACKGATE_TEST_MAINTENANCE_PAUSE", phase)
            .env("PACKGATE_TEST_MAINTENANCE_PAUSED", &marker)
            .spawn();
        wait_for(&marker);
        running.kill_group();
        fsck(&template.dir, &git, &server);
        assert_eq!(refs(&template.dir, &git, &server, &[]), before, "{phase}");
        // The next push and clone.
        template.commit(&format!("after {phase}"));
        let pushed = template
            .dir
            .git(&git)
            .current_dir(&template.client)
            .arg("push")
            .arg(crate::receive_pack::receive_pack_option())
            .arg(file_url(&server))
            .arg("HEAD:refs/heads/master")
            .output();
        assert!(
            pushed.status.success(),
            "push after a kill at {phase}: {pushed}"
        );
        let clone = template.dir.join(&format!("clone-{phase}"));
        template
            .dir
            .git(&git)
            .args(["clone", "-q", "--bare"])
            .arg(packgate_upload_pack_option())
            .arg(file_url(&server))
            .arg(&clone)
            .run();
        fsck(&template.dir, &git, &clone);
        // A later run is not blocked by what the killed one left.
        let ran = maintenance(&template.dir, &server, &[]);
        assert!(
            ran.status.success(),
            "maintenance after a kill at {phase}: {ran}"
        );
        fsck(&template.dir, &git, &server);
        assert_eq!(
            packs(&server).len() - cruft_packs(&server).len(),
            1,
            "{phase}"
        );
        template
            .client()
            .args(["reset", "-q", "--hard", "HEAD~1"])
            .run();
    }
}

/// Full repacks running while a bounded loop pushes and clones: every push lands, every
/// clone works, and nothing is lost.
#[test]
fn maintenance_beside_pushes_and_clones_loses_nothing() {
    let git = Git::newest();
    let setup = setup("concurrent", &git);
    repack_only(&setup);
    push_commits(&setup, "start", 5);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let runs = std::thread::scope(|scope| {
        let maintainer = scope.spawn(|| {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && runs < 50 {
                let ran = maintenance(&setup.dir, &setup.server, &[]);
                assert!(ran.status.success(), "{ran}");
                runs += 1;
            }
            runs
        });
        for i in 0..15 {
            let commit = setup.commit(&format!("during {i}"));
            let pushed = setup.push(&["HEAD:refs/heads/master"]);
            assert!(pushed.status.success(), "push {i}: {pushed}");
            assert_eq!(
                setup.server_ref("refs/heads/master").as_deref(),
                Some(&*commit)
            );
            let clone = setup.dir.join(&format!("clone-{i}.git"));
            let cloned = setup
                .dir
                .git(&git)
                .args(["clone", "-q", "--bare"])
                .arg(packgate_upload_pack_option())
                .arg(file_url(&setup.server))
                .arg(&clone)
                .output();
            assert!(cloned.status.success(), "clone {i}: {cloned}");
            fsck(&setup.dir, &git, &clone);
            std::fs::remove_dir_all(&clone).unwrap_or_else(|err| panic!("{err}"));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        maintainer
            .join()
            .unwrap_or_else(|_| panic!("the maintenance thread panicked"))
    });
    assert!(runs > 0);
    fsck(&setup.dir, &git, &setup.server);
    let head = rev_parse(setup.client(), "HEAD");
    assert_eq!(setup.server_ref("refs/heads/master"), Some(head));
    clone_matches(&setup, "final.git");
}

/// The repository may be named by a relative path with spaces, or through a symlink, as for
/// upload-pack.
#[test]
fn repository_paths_as_upload_pack_takes_them() {
    let git = Git::newest();
    let setup = setup("paths", &git);
    repack_only(&setup);
    push_commits(&setup, "change", 3);
    let spaced = setup.dir.join("with space.git");
    std::fs::rename(&setup.server, &spaced).unwrap_or_else(|err| panic!("{err}"));
    let ran = maintenance(&setup.dir, Path::new("with space.git"), &[]);
    assert!(ran.status.success(), "{ran}");
    assert_eq!(packs(&spaced).len(), 1);
    std::os::unix::fs::symlink(&spaced, setup.dir.join("link"))
        .unwrap_or_else(|err| panic!("{err}"));
    let ran = maintenance(&setup.dir, Path::new("link"), &[]);
    assert!(ran.status.success(), "{ran}");
    // git's lenient lookup: `<dir>.git`.
    let ran = maintenance(&setup.dir, Path::new("with space"), &[]);
    assert!(ran.status.success(), "{ran}");
    fsck(&setup.dir, &git, &spaced);
    let unknown = maintenance(&setup.dir, &spaced, &["--task", "bogus"]);
    assert!(!unknown.status.success());
    assert!(
        unknown
            .stderr_text()
            .contains("'bogus' is not a valid task"),
        "{unknown}"
    );
}

/// `--task incremental-repack` repacks geometrically: small packs merge into one, the big
/// pack (the last full repack) is left as it is; nothing is lost.
#[test]
fn incremental_repack_merges_small_packs_and_keeps_the_big_one() {
    let git = Git::newest();
    let setup = setup("geometric", &git);
    repack_only(&setup);
    push_commits(&setup, "base", 30);
    let ran = maintenance(&setup.dir, &setup.server, &[]);
    assert!(ran.status.success(), "{ran}");
    let big = packs(&setup.server);
    assert_eq!(big.len(), 1);
    push_commits(&setup, "small", 4);
    assert_eq!(packs(&setup.server).len(), 5);
    let ran = maintenance(&setup.dir, &setup.server, &["--task", "incremental-repack"]);
    assert!(ran.status.success(), "{ran}");
    let after = packs(&setup.server);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.contains(&big[0]),
        "the big pack was rewritten: {after:?}"
    );
    fsck(&setup.dir, &git, &setup.server);
    // Below maintenance.incremental-repack.auto (10 packs), --auto leaves them.
    push_commits(&setup, "more", 3);
    let ran = maintenance(
        &setup.dir,
        &setup.server,
        &["--auto", "--task", "incremental-repack"],
    );
    assert!(ran.status.success(), "{ran}");
    assert_eq!(packs(&setup.server).len(), 5);
    clone_matches(&setup, "clone.git");
}

/// `serve` runs `--auto` maintenance on a thread after pushes over HTTP and git://, and on
/// its `[maintenance] interval` schedule.
#[test]
fn serve_runs_maintenance_after_pushes_and_on_schedule() {
    use crate::http::{Push, Server, ServerOptions};
    let git = Git::newest();
    let setup = Setup::new("serve-autogc", &git);
    let repos = setup.dir.join("repos");
    std::fs::create_dir_all(&repos).unwrap_or_else(|err| panic!("{err}"));
    let served = repos.join("served.git");
    setup
        .dir
        .git(&git)
        .args(["init", "-q", "--bare"])
        .arg(&served)
        .run();
    for (key, value) in [
        ("receive.unpackLimit", "1"),
        ("gc.autoPackLimit", "3"),
        ("gc.writeCommitGraph", "false"),
        ("gc.packRefs", "false"),
        ("repack.writeBitmaps", "false"),
        ("daemon.receivepack", "true"),
    ] {
        setup
            .dir
            .git_in(&git, &served)
            .args(["config", key, value])
            .run();
    }
    let server = Server::start(&repos, Push::AllowedWithoutAuthentication);
    let wait_for_one_pack = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while packs(&served).len() > 1 || served.join("gc.pid").exists() {
            assert!(
                Instant::now() < deadline,
                "{what}: no maintenance: {:?}",
                packs(&served)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Each phase ends with the push that makes more than gc.autoPackLimit (3) packs: the
    // first starts from none, the second from the one the first left.
    for (what, url, pushes) in [
        ("http", server.http_url("served.git"), 4),
        ("git", server.git_url("served.git"), 3),
    ] {
        for i in 0..pushes {
            setup.commit(&format!("{what} {i}"));
            setup
                .client()
                .args(["push", "-q", &url, "HEAD:refs/heads/master"])
                .run();
        }
        wait_for_one_pack(what);
        fsck(&setup.dir, &git, &served);
    }
    drop(server);

    // The schedule: packs left by git itself (which is not to maintain them: no autogc),
    // then `serve` with an interval of one second.
    setup
        .dir
        .git_in(&git, &served)
        .args(["config", "receive.autogc", "false"])
        .run();
    for i in 0..4 {
        setup.commit(&format!("scheduled {i}"));
        setup
            .dir
            .git(&git)
            .current_dir(&setup.client)
            .args(["push", "-q"])
            .arg(&served)
            .arg("HEAD:refs/heads/master")
            .run();
    }
    assert!(packs(&served).len() > 3);
    let config = setup.dir.join("serve.toml");
    crate::util::write_file(&config, b"[maintenance]\ninterval = \"1s\"\n");
    let server = Server::start_with(
        &repos,
        &ServerOptions {
            config: Some(config),
            ..ServerOptions::new(Push::AllowedWithoutAuthentication)
        },
    );
    wait_for_one_pack("schedule");
    fsck(&setup.dir, &git, &served);
    drop(server);
}

/// A pack with a `.keep` file is never rewritten nor deleted, and (without bitmaps) its
/// objects are not copied into the new pack, as `git repack -a -d`.
#[test]
fn kept_packs_stay() {
    let git = Git::newest();
    let setup = setup("keep", &git);
    repack_only(&setup);
    push_commits(&setup, "change", 4);
    let first = packs(&setup.server)[0].clone();
    let keep = setup
        .server
        .join("objects/pack")
        .join(&first)
        .with_extension("keep");
    crate::util::write_file(&keep, b"");
    let ran = maintenance(&setup.dir, &setup.server, &[]);
    assert!(ran.status.success(), "{ran}");
    let after = packs(&setup.server);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.contains(&first), "the kept pack went: {after:?}");
    assert!(keep.is_file());
    let counted = setup
        .dir
        .git_in(&git, &setup.server)
        .args(["count-objects", "-v"])
        .run()
        .stdout_text();
    fsck(&setup.dir, &git, &setup.server);
    // Nothing of the kept pack was copied: the objects in packs are each in one pack.
    let listed = setup
        .dir
        .git_in(&git, &setup.server)
        .args(["rev-list", "--objects", "--all"])
        .run()
        .stdout_text()
        .lines()
        .count();
    assert!(
        counted.contains(&format!("in-pack: {listed}\n")),
        "objects counted twice: {counted} vs {listed} reachable"
    );
}
