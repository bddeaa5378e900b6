//! Refs tokens and waiting for ref changes.
//!
//! A [`RefsToken`] names the state of the refs a client can see under some prefixes: a
//! digest of exactly what `ls-refs` would list for them (names, values, symbolic targets,
//! `HEAD` when it matches), after hiding and namespacing. Equal tokens mean equal listings,
//! whoever wrote the refs (packgate, git on the same disk, a mirror update), so an
//! "unchanged" answer is never wrong; a token can only change spuriously if a listing changed
//! and changed back.
//!
//! A [`Subscription`] is a waiter's interest in a repository's refs under some prefixes. The
//! process-wide [`RefsWatch`] keeps one snapshot of every watched repository's refs (only
//! while somebody waits on it) and finds what changed by comparing it with a new one:
//!
//! * at once when packgate itself moved refs ([`changed`], called by receive-pack and the
//!   fetch client after their updates);
//! * otherwise by a bounded re-check: one thread looks at each watched repository every
//!   [`RECHECK_INTERVAL`], which is how writes by other programs are noticed. It re-reads the
//!   refs only when the ref storage's stamps differ from those taken before the last read
//!   (the rules of the token cache, `refs_watch/cache.rs`): an unchanged repository costs a
//!   few `stat` calls a second, not a read of its `packed-refs`. No file-system notification
//!   is used: it is not available everywhere (network file systems), and a re-check per
//!   repository (not per waiter) is cheap.
//!
//! Only the waiters whose prefixes cover a changed ref are woken. A waiter costs no thread:
//! [`Subscription::notified`] is a future any executor can await; blocking callers (a stdio
//! session) use [`Subscription::wait_until`].

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    task::{Poll, Waker},
    time::{Duration, Instant, SystemTime},
};

use bstr::{BStr, BString, ByteSlice};
use gix_hash::ObjectId;
use sha1::Digest as _;

use self::cache::StorageStamps;
use crate::{
    config::UploadPackConfig,
    refname::RefPrefix,
    repository::{Head, RefsError, Repository},
};

/// How often a watched repository is re-read to notice ref updates made by other programs.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The most changes remembered for one waiter between two looks; beyond it the waiter is
/// only told that something changed.
const MAX_CHANGES_PER_WAITER: usize = 1024;

/// An opaque name of the state of the refs a client sees: 40 lowercase hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefsToken(String);

/// Why a token a client sent is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed refs token {0:?}: expected 40 lowercase hexadecimal digits")]
pub struct BadToken(pub String);

impl RefsToken {
    /// The length of a token's text.
    pub const LEN: usize = 40;

    /// Validate a token a client sent.
    pub fn parse(text: &[u8]) -> Result<RefsToken, BadToken> {
        let valid = text.len() == Self::LEN
            && text
                .iter()
                .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            let shown: String = text.iter().take(64).map(|&b| char::from(b)).collect();
            return Err(BadToken(shown));
        }
        Ok(RefsToken(String::from_utf8_lossy(text).into_owned()))
    }

    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RefsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A ref as a client sees it (namespace taken off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisibleRef {
    /// Its name, like `refs/heads/main` or `HEAD`.
    pub name: BString,
    /// What it points at; `None` for an unborn `HEAD`.
    pub id: Option<ObjectId>,
    /// The ref a symbolic ref points at.
    pub symref_target: Option<BString>,
}

/// The refs a client sees under some prefixes, and their token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefsState {
    /// The token of exactly this listing.
    pub token: RefsToken,
    /// `HEAD` first when it matches (born or unborn), then the refs in `ls-refs` order.
    pub refs: Vec<VisibleRef>,
}

/// The refs of `repo` a client of upload-pack with `config` sees under `prefixes` (all when
/// empty), as `ls-refs` lists them, with their token.
pub fn refs_state(
    repo: &Repository,
    config: &UploadPackConfig,
    prefixes: &[RefPrefix],
) -> Result<RefsState, RefsError> {
    let pending = match cache::global().lookup(repo, config, prefixes, SystemTime::now()) {
        cache::Lookup::Miss(pending) => pending,
        cache::Lookup::Hit(_) => None,
    };
    let mut refs = Vec::new();
    let token = visit_visible(repo, config, prefixes, |visible| refs.push(visible))?;
    if let Some(pending) = pending {
        cache::global().remember(pending, &token);
    }
    Ok(RefsState { token, refs })
}

/// The token of [`refs_state`] alone.
///
/// Remembered while the ref storage it was read from is unchanged (`packed-refs` and the
/// loose refs that could match `prefixes`, by their files' and directories' stamps, once
/// these are older than a racy window): then answering costs a few `stat` calls instead of
/// reading every ref. Never stale: see the `cache` module.
pub fn refs_token(
    repo: &Repository,
    config: &UploadPackConfig,
    prefixes: &[RefPrefix],
) -> Result<RefsToken, RefsError> {
    refs_token_with(cache::global(), repo, config, prefixes, SystemTime::now())
}

/// [`refs_token`] with `cache`, as if at `now`.
fn refs_token_with(
    cache: &cache::TokenCache,
    repo: &Repository,
    config: &UploadPackConfig,
    prefixes: &[RefPrefix],
    now: SystemTime,
) -> Result<RefsToken, RefsError> {
    match cache.lookup(repo, config, prefixes, now) {
        cache::Lookup::Hit(token) => Ok(token),
        cache::Lookup::Miss(pending) => {
            let token = visit_visible(repo, config, prefixes, |_| {})?;
            if let Some(pending) = pending {
                cache.remember(pending, &token);
            }
            Ok(token)
        }
    }
}

fn visit_visible(
    repo: &Repository,
    config: &UploadPackConfig,
    prefixes: &[RefPrefix],
    mut visit: impl FnMut(VisibleRef),
) -> Result<RefsToken, RefsError> {
    let mut hasher = sha1::Sha1::new();
    hasher.update(b"packgate refs token 1\n");
    let mut add = |name: &[u8], id: Option<&gix_hash::oid>, target: Option<&[u8]>| {
        hasher.update(name);
        hasher.update([0]);
        match id {
            Some(id) => hasher.update(id.as_bytes()),
            None => hasher.update(b"unborn"),
        }
        if let Some(target) = target {
            hasher.update([1]);
            hasher.update(target);
        }
        hasher.update(b"\n");
    };
    let wanted = (!prefixes.is_empty()).then_some(prefixes);
    let matches =
        |name: &[u8]| wanted.is_none_or(|prefixes| prefixes.iter().any(|p| p.matches(name)));
    if matches(b"HEAD") && !config.is_hidden(b"HEAD", repo.namespace()) {
        match repo.head()? {
            Head::Born(head) => {
                add(
                    head.name.as_slice(),
                    Some(&head.id),
                    head.symref_target.as_ref().map(|t| t.as_slice()),
                );
                visit(VisibleRef {
                    name: head.name,
                    id: Some(head.id),
                    symref_target: head.symref_target,
                });
            }
            Head::Unborn { target } => {
                add(b"HEAD", None, Some(target.as_slice()));
                visit(VisibleRef {
                    name: "HEAD".into(),
                    id: None,
                    symref_target: Some(target),
                });
            }
            Head::Missing => {}
        }
    }
    repo.visit_refs(wanted, |view| {
        if config.is_hidden(view.name, repo.namespace()) {
            return Ok::<_, RefsError>(());
        }
        add(
            view.name.as_bytes(),
            Some(&view.id),
            view.symref_target.map(|t| t.as_bytes()),
        );
        visit(VisibleRef {
            name: view.name.to_owned(),
            id: Some(view.id),
            symref_target: view.symref_target.map(ToOwned::to_owned),
        });
        Ok(())
    })?;
    let digest = hasher.finalize();
    Ok(RefsToken(hex(&digest)))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(40), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// One ref that moved, by its full name in the repository (namespace included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefChange {
    /// The full name, e.g. `refs/heads/main`, `HEAD` or `refs/namespaces/a/refs/heads/x`.
    pub name: BString,
    /// Its value before; `None`: it did not exist (or `HEAD` was unborn).
    pub old: Option<ObjectId>,
    /// Its value now; `None`: it was deleted.
    pub new: Option<ObjectId>,
}

/// A repository's refs as the watch compares them: every ref by full name (`HEAD` and the
/// refs below `refs/`, symbolic ones resolved) with its value and symbolic target.
///
/// Kept sorted by name in a vector, not a map: the watch holds one per watched repository
/// for as long as anybody waits on it, and a map's nodes cost several times as much (50,000
/// refs: tens of MiB).
type Snapshot = Vec<(BString, (Option<ObjectId>, Option<BString>))>;

fn snapshot(repo: &Repository) -> Result<Snapshot, RefsError> {
    let mut refs = BTreeMap::new();
    match repo.repository_head()? {
        Head::Born(head) => {
            refs.insert("HEAD".into(), (Some(head.id), head.symref_target));
        }
        Head::Unborn { target } => {
            refs.insert("HEAD".into(), (None, Some(target)));
        }
        Head::Missing => {}
    }
    repo.visit_all_refs(None, |view| {
        refs.insert(
            view.name.to_owned(),
            (Some(view.id), view.symref_target.map(ToOwned::to_owned)),
        );
        Ok::<_, RefsError>(())
    })?;
    Ok(refs.into_iter().collect())
}

fn diff(old: &Snapshot, new: &Snapshot) -> Vec<RefChange> {
    let mut changes = Vec::new();
    let mut old_iter = old.iter().peekable();
    let mut new_iter = new.iter().peekable();
    loop {
        let order = match (old_iter.peek(), new_iter.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((a, _)), Some((b, _))) => a.cmp(b),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some((name, (id, _))) = old_iter.next() {
                    changes.push(RefChange {
                        name: name.clone(),
                        old: *id,
                        new: None,
                    });
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some((name, (id, _))) = new_iter.next() {
                    changes.push(RefChange {
                        name: name.clone(),
                        old: None,
                        new: *id,
                    });
                }
            }
            std::cmp::Ordering::Equal => {
                if let (Some((name, before)), Some((_, after))) = (old_iter.next(), new_iter.next())
                {
                    if before != after {
                        changes.push(RefChange {
                            name: name.clone(),
                            old: before.0,
                            new: after.0,
                        });
                    }
                }
            }
        }
    }
    changes
}

/// What one waiter waits for, and what it was told.
struct Slot {
    /// Full names (namespace included) whose changes concern it; `None`: every ref.
    prefixes: Option<Vec<BString>>,
    waker: Option<Waker>,
    fired: bool,
    changes: Vec<RefChange>,
    /// More changes happened than were kept.
    overflow: bool,
    /// The repository's [`Watched::generation`] when it subscribed.
    generation: u64,
}

impl Slot {
    fn concerns(&self, name: &[u8]) -> bool {
        self.prefixes
            .as_ref()
            .is_none_or(|prefixes| prefixes.iter().any(|p| name.starts_with(p)))
    }
}

/// A watched repository: its last snapshot and its waiters.
struct Watched {
    repo: Repository,
    snapshot: Arc<Snapshot>,
    /// The ref storage's stamps taken before `snapshot` was read, if they were settled:
    /// while the storage still has them, a re-check has nothing to read.
    stamps: Option<Arc<StorageStamps>>,
    waiters: HashMap<u64, Slot>,
    /// Held while a check reads and compares, so two checks never interleave.
    checking: Arc<Mutex<()>>,
    /// How many checks found a change.
    generation: u64,
    /// The listings read since the last change, shared by the waiters it woke (see
    /// [`Subscription::shared_state`]); emptied by every change.
    answers: HashMap<AnswerKey, SharedAnswer>,
}

/// What a shared listing is read for: the namespace, the `hideRefs` rules, the prefixes.
type AnswerKey = (Option<BString>, Vec<BString>, Vec<BString>);

/// One listing, read once by the first waiter that needs it (`None`: the read failed).
type SharedAnswer = Arc<OnceLock<Option<Arc<RefsState>>>>;

#[derive(Default)]
struct Hub {
    repos: Mutex<HashMap<PathBuf, Watched>>,
    next_id: AtomicU64,
    recheck: OnceLock<()>,
    /// Held while the first snapshot of a repository is read: the subscribers that come
    /// meanwhile wait for it instead of each reading its own (10,000 clients subscribing
    /// at once to a repository with 50,000 refs read it hundreds of times over, and the
    /// memory those reads took stayed with the process).
    first_snapshot: Mutex<()>,
    /// How many snapshots were read.
    reads: AtomicU64,
    /// How far ahead of the system's clock this watch's clock is (tests: so that stamps
    /// count as settled without waiting for the racy window to pass).
    clock_ahead: Duration,
}

/// The waiters of this process, by repository (see the module's documentation).
#[derive(Clone, Default)]
pub struct RefsWatch {
    hub: Arc<Hub>,
    interval: Option<Duration>,
}

impl std::fmt::Debug for RefsWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefsWatch")
            .field("waiters", &self.waiters())
            .finish_non_exhaustive()
    }
}

/// The process's watch, which packgate's own ref updates notify.
pub fn global() -> &'static RefsWatch {
    static GLOBAL: OnceLock<RefsWatch> = OnceLock::new();
    GLOBAL.get_or_init(RefsWatch::default)
}

/// Tell the process's watch that refs of the repository at `git_dir` may have moved: its
/// waiters whose refs did are woken before this returns. Cheap when nobody waits.
pub fn changed(git_dir: &Path) {
    global().check(git_dir);
}

impl RefsWatch {
    /// A watch of its own (tests), re-checking every `interval` (`None`: never on its own).
    pub fn with_interval(interval: Option<Duration>) -> RefsWatch {
        RefsWatch {
            hub: Arc::default(),
            interval,
        }
    }

    /// A watch as [`RefsWatch::with_interval`] whose clock runs `ahead` of the system's.
    #[cfg(test)]
    fn with_clock_ahead(interval: Option<Duration>, ahead: Duration) -> RefsWatch {
        RefsWatch {
            hub: Arc::new(Hub {
                clock_ahead: ahead,
                ..Hub::default()
            }),
            interval,
        }
    }

    /// How many snapshots of repositories this watch has read.
    #[cfg(test)]
    fn reads(&self) -> u64 {
        self.hub.reads.load(Ordering::Relaxed)
    }

    /// Now, by this watch's clock.
    fn now(&self) -> SystemTime {
        SystemTime::now() + self.hub.clock_ahead
    }

    /// Read `repo`'s snapshot, counted.
    fn read_snapshot(&self, repo: &Repository) -> Result<Snapshot, RefsError> {
        self.hub.reads.fetch_add(1, Ordering::Relaxed);
        snapshot(repo)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Watched>> {
        self.hub
            .repos
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many waiters there are, over all repositories.
    pub fn waiters(&self) -> usize {
        self.lock()
            .values()
            .map(|watched| watched.waiters.len())
            .sum()
    }

    /// Wait for changes of the refs of `repo` that a client of its namespace sees under
    /// `prefixes` (all when empty). Subscribe first, then read the state to compare against:
    /// anything that changes after this call wakes the subscription.
    pub fn subscribe(
        &self,
        repo: &Repository,
        prefixes: &[RefPrefix],
    ) -> Result<Subscription, RefsError> {
        let git_dir = repo.git_dir().to_owned();
        let first = if self.lock().contains_key(&git_dir) {
            None
        } else {
            Some(
                self.hub
                    .first_snapshot
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            )
        };
        let known = self.lock().contains_key(&git_dir);
        let fresh = if known {
            None
        } else {
            let plain = repo.clone().with_namespace(None);
            let stamps = StorageStamps::take(plain.git_dir(), self.now());
            let snapshot = self.read_snapshot(&plain)?;
            Some((plain, snapshot, stamps))
        };
        let id = self.hub.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            prefixes: full_prefixes(repo, prefixes),
            waker: None,
            fired: false,
            changes: Vec::new(),
            overflow: false,
            generation: 0,
        };
        {
            let mut repos = self.lock();
            let watched = match (repos.get_mut(&git_dir), fresh) {
                (Some(watched), _) => watched,
                (None, fresh) => {
                    let (plain, snapshot, stamps) = match fresh {
                        Some(fresh) => fresh,
                        // Dropped by its last waiter in between: read it again, unlocked.
                        None => {
                            drop(repos);
                            drop(first);
                            return self.subscribe(repo, prefixes);
                        }
                    };
                    repos.entry(git_dir.clone()).or_insert(Watched {
                        repo: plain,
                        snapshot: Arc::new(snapshot),
                        stamps: stamps.map(Arc::new),
                        waiters: HashMap::new(),
                        checking: Arc::default(),
                        generation: 0,
                        answers: HashMap::new(),
                    })
                }
            };
            let slot = Slot {
                generation: watched.generation,
                ..slot
            };
            watched.waiters.insert(id, slot);
        }
        drop(first);
        self.start_recheck();
        Ok(Subscription {
            watch: self.clone(),
            git_dir,
            id,
        })
    }

    /// Compare the refs of the watched repository at `git_dir` with its snapshot and wake
    /// the waiters of what changed. Nothing happens for a repository nobody waits on.
    pub fn check(&self, git_dir: &Path) {
        let (repo, checking) = match self.lock().get(git_dir) {
            Some(watched) => (watched.repo.clone(), Arc::clone(&watched.checking)),
            None => return,
        };
        let _checking = checking
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Read under the check's lock: the stamps of the snapshot that is current.
        let previous = self
            .lock()
            .get(git_dir)
            .and_then(|watched| watched.stamps.clone());
        if previous.is_some_and(|stamps| stamps.unchanged(git_dir)) {
            return;
        }
        let stamps = StorageStamps::take(git_dir, self.now()).map(Arc::new);
        let new = match self.read_snapshot(&repo) {
            Ok(new) => Arc::new(new),
            Err(err) => {
                tracing::debug!(git_dir = %git_dir.display(), %err, "refs not readable; checked later");
                return;
            }
        };
        let mut repos = self.lock();
        let Some(watched) = repos.get_mut(git_dir) else {
            return;
        };
        let changes = diff(&watched.snapshot, &new);
        watched.snapshot = new;
        watched.stamps = stamps;
        if changes.is_empty() {
            return;
        }
        watched.generation += 1;
        watched.answers.clear();
        for slot in watched.waiters.values_mut() {
            let mut concerned = false;
            for change in &changes {
                if !slot.concerns(&change.name) {
                    continue;
                }
                concerned = true;
                if slot.changes.len() < MAX_CHANGES_PER_WAITER {
                    slot.changes.push(change.clone());
                } else {
                    slot.overflow = true;
                }
            }
            if concerned {
                slot.fired = true;
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            }
        }
    }

    /// Start the thread that re-checks every watched repository, once.
    fn start_recheck(&self) {
        let Some(interval) = self.interval_or_default() else {
            return;
        };
        self.hub.recheck.get_or_init(|| {
            let hub = Arc::downgrade(&self.hub);
            let spawned = std::thread::Builder::new()
                .name("packgate-refs-watch".into())
                .spawn(move || loop {
                    std::thread::sleep(interval);
                    let Some(hub) = hub.upgrade() else {
                        return;
                    };
                    let watch = RefsWatch {
                        hub,
                        interval: Some(interval),
                    };
                    let dirs: Vec<PathBuf> = watch.lock().keys().cloned().collect();
                    for dir in dirs {
                        watch.check(&dir);
                    }
                });
            if let Err(err) = spawned {
                tracing::warn!(%err, "could not start the refs re-check; only packgate's own updates wake waiters");
            }
        });
    }

    fn interval_or_default(&self) -> Option<Duration> {
        if Arc::ptr_eq(&self.hub, &global().hub) {
            Some(RECHECK_INTERVAL)
        } else {
            self.interval
        }
    }
}

/// The full names whose changes concern a client of `repo`'s namespace asking for
/// `prefixes`: `None` for every ref.
fn full_prefixes(repo: &Repository, prefixes: &[RefPrefix]) -> Option<Vec<BString>> {
    let namespace = repo.namespace();
    let full = |name: &[u8]| -> BString {
        match namespace {
            Some(namespace) => namespace.full(name),
            None => name.into(),
        }
    };
    if prefixes.is_empty() {
        return namespace.map(|namespace| {
            // The namespace's refs, its HEAD, and the repository's HEAD it falls back to.
            vec![namespace.prefix().to_owned(), "HEAD".into()]
        });
    }
    let mut out = Vec::new();
    for prefix in prefixes {
        out.push(full(prefix.as_bstr()));
        if prefix.matches(b"HEAD") {
            out.push(full(b"HEAD"));
            out.push("HEAD".into());
        }
    }
    // A symbolic ref moves with its target: the snapshot holds its resolved value, so the
    // symbolic ref itself shows up as changed.
    Some(out)
}

/// One waiter's interest in a repository's refs; dropping it stops the waiting.
pub struct Subscription {
    watch: RefsWatch,
    git_dir: PathBuf,
    id: u64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("git_dir", &self.git_dir)
            .field("id", &self.id)
            .finish()
    }
}

/// What a subscription was told since the last look.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// The refs that moved under its prefixes, in order (full names; hidden ones included:
    /// the caller filters what it shows).
    pub changes: Vec<RefChange>,
    /// More moved than were kept: `changes` is only a part.
    pub overflow: bool,
}

impl Subscription {
    fn with_slot<T>(&self, f: impl FnOnce(Option<&mut Slot>) -> T) -> T {
        let mut repos = self.watch.lock();
        let slot = repos
            .get_mut(&self.git_dir)
            .and_then(|watched| watched.waiters.get_mut(&self.id));
        f(slot)
    }

    /// Whether something changed since it was created or last [taken](Self::take).
    pub fn fired(&self) -> bool {
        self.with_slot(|slot| slot.is_none_or(|slot| slot.fired))
    }

    /// What changed, and wait again from here.
    pub fn take(&self) -> Changes {
        self.with_slot(|slot| match slot {
            Some(slot) => {
                slot.fired = false;
                Changes {
                    changes: std::mem::take(&mut slot.changes),
                    overflow: std::mem::take(&mut slot.overflow),
                }
            }
            None => Changes::default(),
        })
    }

    /// The refs of `repo` (the subscription's repository) under `prefixes` as `config`
    /// shows them, read once for all the waiters a change woke: `None` when no change was
    /// seen since this subscription began (the caller reads for itself, as the answer must
    /// not be older than its request).
    ///
    /// Ten thousand waiters woken by one push then cost one read of the refs, not one
    /// each (the token cache cannot help: the ref just written is too recent for it). The
    /// listing shared was read after the change that woke them, so it is as fresh as an
    /// answer each read alone; a later change empties it.
    pub fn shared_state(
        &self,
        repo: &Repository,
        config: &UploadPackConfig,
        prefixes: &[RefPrefix],
    ) -> Option<Arc<RefsState>> {
        let key: AnswerKey = (
            repo.namespace().map(|ns| ns.prefix().to_owned()),
            config.hide_refs.clone(),
            prefixes.iter().map(|p| p.as_bstr().to_owned()).collect(),
        );
        let cell = {
            let mut repos = self.watch.lock();
            let watched = repos.get_mut(&self.git_dir)?;
            let slot = watched.waiters.get(&self.id)?;
            if slot.generation == watched.generation {
                return None;
            }
            Arc::clone(watched.answers.entry(key).or_default())
        };
        cell.get_or_init(|| refs_state(repo, config, prefixes).ok().map(Arc::new))
            .clone()
    }

    /// A future that resolves once something changed (at once if it already did); it holds
    /// no thread, and the subscription stays registered after it resolves.
    pub fn notified(&self) -> Notified {
        Notified {
            watch: self.watch.clone(),
            git_dir: self.git_dir.clone(),
            id: self.id,
        }
    }

    /// Block the calling thread until something changed or `deadline` passed: whether
    /// something changed.
    pub fn wait_until(&self, deadline: Instant) -> bool {
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        loop {
            let fired = self.with_slot(|slot| match slot {
                Some(slot) if !slot.fired => {
                    slot.waker = Some(waker.clone());
                    false
                }
                _ => true,
            });
            if fired {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::park_timeout(left);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut repos = self.watch.lock();
        if let Some(watched) = repos.get_mut(&self.git_dir) {
            watched.waiters.remove(&self.id);
            if watched.waiters.is_empty() {
                repos.remove(&self.git_dir);
            }
        }
    }
}

/// See [`Subscription::notified`].
pub struct Notified {
    watch: RefsWatch,
    git_dir: PathBuf,
    id: u64,
}

impl std::future::Future for Notified {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let mut repos = self.watch.lock();
        match repos
            .get_mut(&self.git_dir)
            .and_then(|watched| watched.waiters.get_mut(&self.id))
        {
            Some(slot) if !slot.fired => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            // Fired, or the subscription is gone: nothing more to wait for.
            _ => Poll::Ready(()),
        }
    }
}

struct ThreadWaker(std::thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// The name a client of `repo`'s namespace knows a changed ref by; `None` if it lies outside.
pub fn visible_name<'a>(repo: &Repository, change: &'a RefChange) -> Option<&'a BStr> {
    match repo.namespace() {
        Some(namespace) => namespace.strip(&change.name).map(|name| name.as_bstr()),
        None => Some(change.name.as_bstr()),
    }
}

mod cache;

#[cfg(test)]
mod tests;
