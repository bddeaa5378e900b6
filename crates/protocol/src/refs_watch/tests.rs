use std::{future::Future as _, process::Command};

use super::*;
use crate::repository::PathLookup;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_COMMITTER_DATE", "1700000000 +0000")
        .env("GIT_AUTHOR_DATE", "1700000000 +0000")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A bare repository with `main` and `next` and an annotated tag; the commit id.
fn fixture() -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["config", "user.name", "t"]);
    git(&work, &["config", "user.email", "t@t"]);
    git(&work, &["commit", "-q", "--allow-empty", "-m", "one"]);
    git(&work, &["tag", "-a", "-m", "t", "v1"]);
    git(&work, &["branch", "next"]);
    let bare = dir.path().join("r.git");
    git(
        dir.path(),
        &["clone", "-q", "--bare", "work", bare.to_str().unwrap()],
    );
    let id = git(&bare, &["rev-parse", "main"]);
    (dir, bare, id)
}

fn open(git_dir: &Path) -> Repository {
    Repository::open(git_dir, PathLookup::Strict, None).unwrap()
}

fn token(git_dir: &Path, prefixes: &[&str]) -> RefsToken {
    let repo = open(git_dir);
    let config = UploadPackConfig::from_config(repo.config()).unwrap();
    let prefixes: Vec<RefPrefix> = prefixes.iter().map(|p| RefPrefix::new(*p)).collect();
    refs_token(&repo, &config, &prefixes).unwrap()
}

#[test]
fn tokens_parse_strictly() {
    let good = "0123456789abcdef0123456789abcdef01234567";
    assert_eq!(RefsToken::parse(good.as_bytes()).unwrap().as_str(), good);
    for bad in [
        "",
        "0123",
        "0123456789ABCDEF0123456789abcdef01234567",
        "0123456789abcdef0123456789abcdef0123456g",
        "0123456789abcdef0123456789abcdef012345678",
    ] {
        assert!(RefsToken::parse(bad.as_bytes()).is_err(), "{bad:?}");
    }
}

#[test]
fn the_token_follows_every_kind_of_ref_update_and_only_those_under_its_prefixes() {
    let (_dir, bare, id) = fixture();
    let all = token(&bare, &[]);
    let heads = token(&bare, &["refs/heads/"]);
    let tags = token(&bare, &["refs/tags/"]);
    // Stable while nothing changes, and equal to what the state itself carries.
    assert_eq!(token(&bare, &[]), all);
    let repo = open(&bare);
    let config = UploadPackConfig::from_config(repo.config()).unwrap();
    let state = refs_state(&repo, &config, &[]).unwrap();
    assert_eq!(state.token, all);
    assert_eq!(state.refs[0].name, "HEAD");
    assert_eq!(
        state.refs[0].symref_target.as_ref().unwrap(),
        "refs/heads/main"
    );

    // git on the same disk, outside the prefix asked for.
    git(&bare, &["update-ref", "refs/heads/topic", &id]);
    let all2 = token(&bare, &[]);
    assert_ne!(all2, all);
    assert_ne!(token(&bare, &["refs/heads/"]), heads);
    assert_eq!(token(&bare, &["refs/tags/"]), tags);

    // Packing changes where refs live, not what they are.
    git(&bare, &["pack-refs", "--all"]);
    assert_eq!(token(&bare, &[]), all2);

    // A deleted ref (packed), then HEAD pointed elsewhere with the same value.
    git(&bare, &["update-ref", "-d", "refs/heads/topic"]);
    assert_eq!(token(&bare, &[]), all);
    git(&bare, &["symbolic-ref", "HEAD", "refs/heads/next"]);
    assert_ne!(token(&bare, &[]), all);
    assert_ne!(token(&bare, &["HEAD"]), token(&bare, &["refs/"]));
}

#[test]
fn hidden_refs_do_not_change_the_token() {
    let (_dir, bare, id) = fixture();
    git(&bare, &["config", "uploadpack.hideRefs", "refs/secret"]);
    let before = token(&bare, &[]);
    git(&bare, &["update-ref", "refs/secret/x", &id]);
    assert_eq!(token(&bare, &[]), before);
}

#[test]
fn a_waiter_is_woken_by_changes_under_its_prefixes_only() {
    let (_dir, bare, id) = fixture();
    let watch = RefsWatch::with_interval(None);
    let repo = open(&bare);
    let heads = watch
        .subscribe(&repo, &[RefPrefix::new("refs/heads/")])
        .unwrap();
    let tags = watch
        .subscribe(&repo, &[RefPrefix::new("refs/tags/")])
        .unwrap();
    assert_eq!(watch.waiters(), 2);
    git(&bare, &["update-ref", "refs/heads/topic", &id]);
    watch.check(repo.git_dir());
    assert!(heads.fired());
    assert!(!tags.fired());
    let told = heads.take();
    assert_eq!(told.changes.len(), 1);
    assert_eq!(told.changes[0].name, "refs/heads/topic");
    assert_eq!(told.changes[0].old, None);
    assert_eq!(told.changes[0].new.map(|id| id.to_string()), Some(id));
    assert!(!heads.fired());
    drop(heads);
    drop(tags);
    assert_eq!(watch.waiters(), 0);
}

#[test]
fn a_blocked_waiter_wakes_on_a_change_and_times_out_without_one() {
    let (_dir, bare, _) = fixture();
    let watch = RefsWatch::with_interval(None);
    let repo = open(&bare);
    let subscription = watch.subscribe(&repo, &[]).unwrap();
    let started = Instant::now();
    assert!(!subscription.wait_until(Instant::now() + Duration::from_millis(100)));
    assert!(started.elapsed() >= Duration::from_millis(100));

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        ready_tx.send(()).unwrap();
        subscription.wait_until(Instant::now() + Duration::from_secs(30))
    });
    ready_rx.recv().unwrap();
    git(&bare, &["update-ref", "-d", "refs/heads/next"]);
    watch.check(repo.git_dir());
    assert!(waiter.join().unwrap());
}

#[test]
fn the_recheck_notices_writes_by_other_programs() {
    let (_dir, bare, id) = fixture();
    let watch = RefsWatch::with_interval(Some(Duration::from_millis(50)));
    let repo = open(&bare);
    let subscription = watch.subscribe(&repo, &[]).unwrap();
    git(&bare, &["update-ref", "refs/heads/other", &id]);
    assert!(subscription.wait_until(Instant::now() + Duration::from_secs(20)));
}

/// A re-check reads the refs again only when the ref storage changed: while its stamps
/// (settled: the watch's clock is ahead) are as they were, it reads nothing.
#[test]
fn a_recheck_reads_an_unchanged_repository_no_more() {
    let (_dir, bare, id) = fixture();
    let watch = RefsWatch::with_clock_ahead(None, Duration::from_secs(3));
    let repo = open(&bare);
    let subscription = watch
        .subscribe(&repo, &[RefPrefix::new("refs/heads/")])
        .unwrap();
    assert_eq!(watch.reads(), 1);
    for _ in 0..3 {
        watch.check(repo.git_dir());
    }
    assert_eq!(watch.reads(), 1);
    assert!(!subscription.fired());
    git(&bare, &["update-ref", "refs/heads/other", &id]);
    watch.check(repo.git_dir());
    assert_eq!(watch.reads(), 2);
    assert!(subscription.fired());
    // A packed ref rewritten, then the loose one gone: each is a change of the storage.
    subscription.take();
    git(&bare, &["pack-refs", "--all"]);
    watch.check(repo.git_dir());
    assert_eq!(watch.reads(), 3);
    assert!(!subscription.fired(), "packing changed no ref");
    git(&bare, &["update-ref", "-d", "refs/heads/other"]);
    watch.check(repo.git_dir());
    watch.check(repo.git_dir());
    assert_eq!(watch.reads(), 4);
    assert!(subscription.fired());
}

#[test]
fn the_future_resolves_once_fired() {
    let (_dir, bare, id) = fixture();
    let watch = RefsWatch::with_interval(None);
    let repo = open(&bare);
    let subscription = watch.subscribe(&repo, &[]).unwrap();
    let mut notified = Box::pin(subscription.notified());
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(notified.as_mut().poll(&mut cx).is_pending());
    git(&bare, &["update-ref", "refs/tags/v2", &id]);
    watch.check(repo.git_dir());
    assert!(notified.as_mut().poll(&mut cx).is_ready());
}

#[test]
fn namespaced_waiters_see_their_namespace() {
    let (_dir, bare, id) = fixture();
    let watch = RefsWatch::with_interval(None);
    let namespace = crate::refname::Namespace::new(b"team").unwrap();
    let repo = open(&bare).with_namespace(namespace);
    let subscription = watch
        .subscribe(&repo, &[RefPrefix::new("refs/heads/")])
        .unwrap();
    git(&bare, &["update-ref", "refs/heads/elsewhere", &id]);
    watch.check(repo.git_dir());
    assert!(!subscription.fired());
    git(
        &bare,
        &["update-ref", "refs/namespaces/team/refs/heads/main", &id],
    );
    watch.check(repo.git_dir());
    let told = subscription.take();
    assert_eq!(told.changes.len(), 1);
    assert_eq!(
        visible_name(&repo, &told.changes[0]).unwrap(),
        "refs/heads/main"
    );
}

/// The token as computed from the refs, without any cache.
fn uncached(git_dir: &Path, prefixes: &[&str]) -> RefsToken {
    let repo = open(git_dir);
    let config = UploadPackConfig::from_config(repo.config()).unwrap();
    let prefixes: Vec<RefPrefix> = prefixes.iter().map(|p| RefPrefix::new(*p)).collect();
    visit_visible(&repo, &config, &prefixes, |_| {}).unwrap()
}

/// The token through `cache`, as if at `now`.
fn cached(
    cache: &cache::TokenCache,
    git_dir: &Path,
    prefixes: &[&str],
    now: SystemTime,
) -> RefsToken {
    let repo = open(git_dir);
    let config = UploadPackConfig::from_config(repo.config()).unwrap();
    let prefixes: Vec<RefPrefix> = prefixes.iter().map(|p| RefPrefix::new(*p)).collect();
    refs_token_with(cache, &repo, &config, &prefixes, now).unwrap()
}

/// A clock past the racy window of everything written so far.
fn settled() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3)
}

#[test]
fn a_remembered_token_is_reused_while_the_ref_storage_is_unchanged_and_only_then() {
    let (_dir, bare, id) = fixture();
    let tree = git(&bare, &["rev-parse", &format!("{id}^{{tree}}")]);
    let other = git(&bare, &["commit-tree", "-p", &id, "-m", "two", &tree]);
    let cache = cache::TokenCache::default();
    let prefix_sets: [&[&str]; 5] = [
        &[],
        &["refs/heads/"],
        &["HEAD"],
        &["refs/tags/", "HEAD"],
        &["refs/heads/ma"],
    ];
    // Every prefix set: the first look after a change agrees with the refs (remembered only
    // if the change did not touch what that prefix set reads), the second is remembered.
    let check = |what: &str| {
        for prefixes in prefix_sets {
            let truth = uncached(&bare, prefixes);
            assert_eq!(
                cached(&cache, &bare, prefixes, settled()),
                truth,
                "{what}: {prefixes:?}"
            );
            let hits = cache.hits();
            assert_eq!(
                cached(&cache, &bare, prefixes, settled()),
                truth,
                "{what}: {prefixes:?}"
            );
            assert_eq!(
                cache.hits(),
                hits + 1,
                "{what}: {prefixes:?} not remembered"
            );
        }
    };
    check("fresh");
    git(&bare, &["update-ref", "refs/heads/topic", &id]);
    check("a new loose ref");
    git(&bare, &["pack-refs", "--all"]);
    check("packed");
    git(&bare, &["update-ref", "refs/heads/main", &other]);
    check("a loose ref shadowing a packed one (HEAD's target)");
    git(&bare, &["update-ref", "-d", "refs/heads/topic"]);
    check("a packed ref deleted");
    git(&bare, &["update-ref", "refs/heads/team/a", &id]);
    check("a new directory");
    // A symbolic ref pointing outside the prefixes: dangling, then resolvable, then moved.
    git(
        &bare,
        &["symbolic-ref", "refs/heads/link", "refs/other/target"],
    );
    check("a dangling symbolic ref");
    git(&bare, &["update-ref", "refs/other/target", &id]);
    check("its target created");
    git(&bare, &["update-ref", "refs/other/target", &other]);
    check("its target moved");
    git(&bare, &["pack-refs", "--all"]);
    check("its target packed");
    git(&bare, &["symbolic-ref", "HEAD", "refs/heads/next"]);
    check("HEAD pointed elsewhere");
    git(
        &bare,
        &["update-ref", "--no-deref", "-d", "refs/heads/link"],
    );
    check("the symbolic ref deleted");

    // Hiding rules are part of what a token is remembered for.
    let hidden_before = cached(&cache, &bare, &["refs/heads/"], settled());
    git(&bare, &["config", "uploadpack.hideRefs", "refs/heads/team"]);
    let hidden = cached(&cache, &bare, &["refs/heads/"], settled());
    assert_ne!(hidden, hidden_before);
    assert_eq!(hidden, uncached(&bare, &["refs/heads/"]));

    // A namespace's refs, and its HEAD.
    git(
        &bare,
        &["update-ref", "refs/namespaces/ns/refs/heads/main", &id],
    );
    let repo = open(&bare).with_namespace(crate::refname::Namespace::new(b"ns").unwrap());
    let config = UploadPackConfig::from_config(repo.config()).unwrap();
    let in_ns = |now| refs_token_with(&cache, &repo, &config, &[], now).unwrap();
    let truth = visit_visible(&repo, &config, &[], |_| {}).unwrap();
    assert_eq!(in_ns(settled()), truth);
    assert_eq!(in_ns(settled()), truth);
    git(
        &bare,
        &[
            "symbolic-ref",
            "refs/namespaces/ns/HEAD",
            "refs/namespaces/ns/refs/heads/main",
        ],
    );
    let truth2 = visit_visible(&repo, &config, &[], |_| {}).unwrap();
    assert_ne!(truth2, truth);
    assert_eq!(in_ns(settled()), truth2);
    git(
        &bare,
        &["update-ref", "refs/namespaces/ns/refs/heads/main", &other],
    );
    let truth3 = visit_visible(&repo, &config, &[], |_| {}).unwrap();
    assert_ne!(truth3, truth2);
    assert_eq!(in_ns(settled()), truth3);
}

#[test]
fn a_change_within_the_racy_window_is_still_seen() {
    let (_dir, bare, id) = fixture();
    let tree = git(&bare, &["rev-parse", &format!("{id}^{{tree}}")]);
    let other = git(&bare, &["commit-tree", "-p", &id, "-m", "two", &tree]);
    let cache = cache::TokenCache::default();
    git(&bare, &["update-ref", "refs/heads/topic", &id]);
    let file = bare.join("refs/heads/topic");
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    // Just written: not remembered, whatever the stamps say, so that a second write in the
    // same tick of a coarse file-system clock could not go unnoticed.
    let now = SystemTime::now();
    let before = cached(&cache, &bare, &["refs/heads/"], now);
    assert_eq!(cached(&cache, &bare, &["refs/heads/"], now), before);
    assert_eq!(
        cache.hits(),
        0,
        "a token of refs within the racy window was remembered"
    );
    // Rewritten in place with the same size and modification time: still seen.
    std::fs::write(&file, format!("{other}\n")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let after = cached(&cache, &bare, &["refs/heads/"], now);
    assert_ne!(after, before);
    assert_eq!(after, uncached(&bare, &["refs/heads/"]));
    // Once the window has passed, it is remembered.
    assert_eq!(cached(&cache, &bare, &["refs/heads/"], settled()), after);
    assert_eq!(cached(&cache, &bare, &["refs/heads/"], settled()), after);
    assert_eq!(cache.hits(), 1);
}

#[test]
fn waiters_woken_by_one_change_share_one_listing_read_after_it() {
    let (_dir, bare, id) = fixture();
    let watch = RefsWatch::with_interval(None);
    let repo = open(&bare);
    let config = UploadPackConfig::default();
    let prefixes = [RefPrefix::new("refs/heads/")];
    let first = watch.subscribe(&repo, &prefixes).unwrap();
    let second = watch.subscribe(&repo, &prefixes).unwrap();
    // Nothing changed since they subscribed: each reads for itself.
    assert!(first.shared_state(&repo, &config, &prefixes).is_none());
    git(&bare, &["update-ref", "refs/heads/topic", &id]);
    watch.check(repo.git_dir());
    let one = first.shared_state(&repo, &config, &prefixes).unwrap();
    let two = second.shared_state(&repo, &config, &prefixes).unwrap();
    assert!(Arc::ptr_eq(&one, &two), "one read for both");
    assert_eq!(*one, refs_state(&repo, &config, &prefixes).unwrap());
    assert!(one.refs.iter().any(|r| r.name == "refs/heads/topic"));
    // Other prefixes: a listing of their own.
    let tags = [RefPrefix::new("refs/tags/")];
    let other = first.shared_state(&repo, &config, &tags).unwrap();
    assert!(!Arc::ptr_eq(&one, &other));
    // A later change: a new listing, with it.
    git(&bare, &["update-ref", "-d", "refs/heads/topic"]);
    watch.check(repo.git_dir());
    let after = second.shared_state(&repo, &config, &prefixes).unwrap();
    assert!(!after.refs.iter().any(|r| r.name == "refs/heads/topic"));
    // A waiter subscribed after the change reads for itself until the next one.
    let late = watch.subscribe(&repo, &prefixes).unwrap();
    assert!(late.shared_state(&repo, &config, &prefixes).is_none());
}
