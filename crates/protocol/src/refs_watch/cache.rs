//! Remembered refs tokens: computing a token reads every ref under the prefixes (on a
//! repository with 50,000 refs, the whole `packed-refs`), but while the ref storage is
//! unchanged the token is too, and telling that costs a few `stat` calls.
//!
//! An entry is the token of (git directory, namespace, `hideRefs` rules, prefixes) together
//! with the *stamps* (device, inode, size, modification and change times) of everything its
//! listing was read from:
//!
//! * `packed-refs` (or its absence);
//! * every directory of loose refs that could hold a ref under the prefixes, and every file
//!   in them that matches — the walk `loose_ref_names` in `repository.rs` does, through the
//!   same [`dir_listing`] — so a ref created, deleted, renamed or rewritten shows;
//! * `HEAD` (the namespace's) when a prefix matches it, and every file a symbolic ref found
//!   on the way points at, hop by hop (a symbolic ref's value is its target's), present or
//!   absent: a dangling one that comes to point at something shows too.
//!
//! The entry answers only while all of these stamps are what they were. And an entry is made
//! only when every stamp lies more than [`RACY_WINDOW`] in the past when the walk began (the
//! rule `dir_listing` follows, git's "racy" rule for its index): a write in the same tick of
//! the file system's clock as the stamps — which a coarse clock could not tell apart — can
//! then no longer happen, and any later write leaves a newer change time. Stamps are taken
//! before the refs are read, so a write in between makes the entry stale, never wrong.
//!
//! Whatever cannot be stamped (an unreadable directory, a strange symbolic ref, a
//! repository whose refs live elsewhere) is simply not remembered.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::SystemTime,
};

use bstr::{BString, ByteSlice};

use super::RefsToken;
use crate::{
    config::UploadPackConfig,
    refname::{PrefixScope, RefPrefix},
    repository::{dir_listing, minimal_prefixes, Repository, RACY_WINDOW},
};

/// The most entries remembered; the cache starts over when it is full.
const MAX_ENTRIES: usize = 1024;
/// The most symbolic-ref hops followed while stamping (git's own limit is 5).
const MAX_HOPS: usize = 5;
/// Loose ref files larger than this are not read to look for a symbolic ref (no ref file is
/// anywhere near it): the token is not remembered.
const MAX_REF_FILE: u64 = 4096;

/// What a file or directory looked like; `None` in a walk: it did not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mode: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Option<Stamp>> {
        match std::fs::metadata(path) {
            Ok(meta) => Ok(Some(Stamp {
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.size(),
                mode: meta.mode(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                ctime: (meta.ctime(), meta.ctime_nsec()),
            })),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            // A path through a regular file (`refs/heads/a/b` while `refs/heads/a` is a ref).
            Err(err) if err.kind() == std::io::ErrorKind::NotADirectory => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The later of its modification and change times, in seconds and nanoseconds.
    fn newest(&self) -> (i64, i64) {
        self.mtime.max(self.ctime)
    }
}

/// What a token is remembered for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    git_dir: PathBuf,
    namespace: Option<BString>,
    hide_refs: Vec<BString>,
    prefixes: Vec<BString>,
}

/// Where the refs of one key live, in the order the walk stamps them.
#[derive(Debug, Clone)]
struct Plan {
    /// Loose-ref prefixes (full names, namespace included), minimal and sorted.
    loose: Vec<BString>,
    /// `HEAD`'s full name, when a prefix matches it.
    head: Option<BString>,
}

impl Plan {
    fn new(repo: &Repository, prefixes: &[RefPrefix]) -> Plan {
        let namespace = repo.namespace();
        let full = |name: &[u8]| -> BString {
            match namespace {
                Some(namespace) => namespace.full(name),
                None => name.into(),
            }
        };
        let everything = prefixes.is_empty()
            || prefixes
                .iter()
                .any(|prefix| prefix.scope() == PrefixScope::AllRefs);
        let loose = if everything {
            vec![full(b"refs/")]
        } else {
            let mapped: Vec<RefPrefix> = prefixes
                .iter()
                .filter(|prefix| prefix.scope() == PrefixScope::Loose)
                .map(|prefix| RefPrefix::new(full(prefix.as_bstr())))
                .collect();
            minimal_prefixes(&mapped)
                .into_iter()
                .map(|prefix| prefix.as_bstr().to_owned())
                .collect()
        };
        let head = (prefixes.is_empty() || prefixes.iter().any(|p| p.matches(b"HEAD")))
            .then(|| full(b"HEAD"));
        Plan { loose, head }
    }
}

/// The stamps of one walk.
#[derive(Debug, Default, PartialEq, Eq)]
struct Stamps {
    /// `packed-refs`, the loose directories and files, `HEAD`, in walk order.
    walked: Vec<Option<Stamp>>,
    /// The targets of symbolic refs, by full name (only when learning).
    targets: Vec<BString>,
    /// Their stamps.
    target_stamps: Vec<Option<Stamp>>,
}

impl Stamps {
    fn newest(&self) -> Option<(i64, i64)> {
        self.walked
            .iter()
            .chain(&self.target_stamps)
            .flatten()
            .map(Stamp::newest)
            .max()
    }

    /// Whether every stamp lies more than [`RACY_WINDOW`] before `now`.
    fn settled(&self, now: SystemTime) -> bool {
        let Ok(since_epoch) = now.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        let limit = since_epoch.saturating_sub(RACY_WINDOW);
        let limit = (
            i64::try_from(limit.as_secs()).unwrap_or(i64::MAX),
            i64::from(limit.subsec_nanos()),
        );
        self.newest().is_none_or(|newest| newest <= limit)
    }

    /// Whether a walk of `plan` without learning (the targets as these know them) finds
    /// the storage exactly as these stamps saw it.
    fn still(&self, git_dir: &Path, plan: &Plan) -> bool {
        walk(git_dir, plan, false, &self.targets)
            .is_ok_and(|now| now.walked == self.walked && now.target_stamps == self.target_stamps)
    }
}

/// The stamps of a repository's whole ref storage (`packed-refs`, `HEAD`, everything below
/// `refs/`, namespaces included), for the watch's re-check: taken before a snapshot is read,
/// they tell a later re-check that reading again cannot find anything new, by the same rules
/// as a remembered token (see the module's documentation).
#[derive(Debug)]
pub(super) struct StorageStamps(Stamps);

impl StorageStamps {
    /// The plan of the whole storage.
    fn plan() -> Plan {
        Plan {
            loose: vec!["refs/".into()],
            head: Some("HEAD".into()),
        }
    }

    /// Stamp `git_dir`'s ref storage at `now`: `None` when something cannot be stamped or a
    /// stamp is not settled (the storage is then read at every re-check until it is).
    pub(super) fn take(git_dir: &Path, now: SystemTime) -> Option<StorageStamps> {
        // Refs in another directory (a linked work tree's `commondir`): not stamped here.
        if git_dir.join("commondir").exists() {
            return None;
        }
        let stamps = walk(git_dir, &Self::plan(), true, &[]).ok()?;
        stamps.settled(now).then_some(StorageStamps(stamps))
    }

    /// Whether `git_dir`'s ref storage is still exactly as these stamps saw it.
    pub(super) fn unchanged(&self, git_dir: &Path) -> bool {
        self.0.still(git_dir, &Self::plan())
    }
}

/// Why a walk's stamps cannot make an entry.
struct Unstampable;

impl From<std::io::Error> for Unstampable {
    fn from(_: std::io::Error) -> Self {
        Unstampable
    }
}

/// A ref name that may be joined to the git directory: `HEAD` or below `refs/`, no empty,
/// `.` or `..` component.
fn safe_name(name: &[u8]) -> bool {
    (name == b"HEAD" || name.starts_with(b"refs/"))
        && name
            .split(|&b| b == b'/')
            .all(|component| !component.is_empty() && component != b"." && component != b"..")
        && !name.contains(&0)
}

fn path_of(git_dir: &Path, name: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    git_dir.join(std::ffi::OsStr::from_bytes(name))
}

/// Stamp the storage of `plan`. `learn`: also read every loose file to find symbolic refs,
/// whose targets are stamped (and followed) too; otherwise `targets` are stamped as given.
fn walk(
    git_dir: &Path,
    plan: &Plan,
    learn: bool,
    known_targets: &[BString],
) -> Result<Stamps, Unstampable> {
    let mut stamps = Stamps::default();
    stamps.walked.push(Stamp::of(&git_dir.join("packed-refs"))?);
    let mut symrefs: Vec<BString> = Vec::new();
    let look_at = |name: &[u8], stamp: &Option<Stamp>, symrefs: &mut Vec<BString>| {
        if !learn {
            return Ok(());
        }
        let Some(stamp) = stamp else {
            return Ok(());
        };
        if stamp.size > MAX_REF_FILE {
            return Err(Unstampable);
        }
        if let Some(target) = symbolic_target(&path_of(git_dir, name))? {
            symrefs.push(target);
        }
        Ok(())
    };
    if let Some(head) = &plan.head {
        let stamp = Stamp::of(&path_of(git_dir, head))?;
        look_at(head, &stamp, &mut symrefs)?;
        stamps.walked.push(stamp);
    }
    for prefix in &plan.loose {
        let (directory, partial) = match prefix.rfind_byte(b'/') {
            Some(slash) => (&prefix[..slash], &prefix[slash + 1..]),
            None => continue,
        };
        let mut pending: Vec<(BString, &[u8])> = vec![(directory.into(), partial)];
        while let Some((directory, partial)) = pending.pop() {
            let path = path_of(git_dir, &directory);
            let stamp = Stamp::of(&path)?;
            stamps.walked.push(stamp);
            if stamp.is_none() {
                continue;
            }
            let Some(listing) = dir_listing(&path)? else {
                continue;
            };
            for (file_name, is_dir) in listing.iter() {
                if !file_name.starts_with(partial) {
                    continue;
                }
                let mut name = directory.clone();
                name.push(b'/');
                name.extend_from_slice(file_name);
                if *is_dir {
                    pending.push((name, b""));
                } else {
                    let stamp = Stamp::of(&path_of(git_dir, &name))?;
                    look_at(&name, &stamp, &mut symrefs)?;
                    stamps.walked.push(stamp);
                }
            }
        }
    }
    if !learn {
        for target in known_targets {
            stamps
                .target_stamps
                .push(Stamp::of(&path_of(git_dir, target))?);
        }
        return Ok(stamps);
    }
    // Follow each symbolic ref to its end, stamping every hop.
    for mut target in symrefs {
        for hop in 0.. {
            if hop == MAX_HOPS || !safe_name(&target) {
                return Err(Unstampable);
            }
            let path = path_of(git_dir, &target);
            let stamp = Stamp::of(&path)?;
            let next = match &stamp {
                Some(stamp) if stamp.size <= MAX_REF_FILE && stamp.mode & 0o170000 == 0o100000 => {
                    symbolic_target(&path)?
                }
                Some(_) => return Err(Unstampable),
                None => None,
            };
            stamps.targets.push(target);
            stamps.target_stamps.push(stamp);
            match next {
                Some(next) => target = next,
                None => break,
            }
        }
    }
    Ok(stamps)
}

/// The target of the symbolic ref in the file at `path`; `None` for a direct ref or a file
/// that is gone.
fn symbolic_target(path: &Path) -> Result<Option<BString>, Unstampable> {
    let content = match std::fs::read(path) {
        Ok(content) => content,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Err(Unstampable),
    };
    Ok(content
        .strip_prefix(b"ref:")
        .map(|rest| BString::from(rest.trim())))
}

/// One remembered token.
#[derive(Debug)]
struct Entry {
    stamps: Stamps,
    token: RefsToken,
}

/// Remembered tokens (see the module's documentation).
#[derive(Debug, Default)]
pub(super) struct TokenCache {
    entries: Mutex<HashMap<Key, Arc<Entry>>>,
    hits: AtomicU64,
}

/// The process's cache.
pub(super) fn global() -> &'static TokenCache {
    static GLOBAL: OnceLock<TokenCache> = OnceLock::new();
    GLOBAL.get_or_init(TokenCache::default)
}

/// What a caller about to compute a token from the refs gets: the token, if remembered and
/// still valid, or what to remember the token it computes with.
pub(super) enum Lookup {
    /// The storage is as it was when this token was computed.
    Hit(RefsToken),
    /// Compute the token, then [`TokenCache::remember`] it with this.
    Miss(Option<Pending>),
}

/// The stamps taken before a token is computed.
pub(super) struct Pending {
    key: Key,
    stamps: Stamps,
}

impl TokenCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Entry>>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many lookups were answered from the cache.
    #[cfg(test)]
    pub(super) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Look `prefixes` of `repo` (as `config` hides them) up, at `now`: what the racy window
    /// is measured from.
    pub(super) fn lookup(
        &self,
        repo: &Repository,
        config: &UploadPackConfig,
        prefixes: &[RefPrefix],
        now: SystemTime,
    ) -> Lookup {
        let key = Key {
            git_dir: repo.git_dir().to_owned(),
            namespace: repo.namespace().map(|ns| ns.prefix().to_owned()),
            hide_refs: config.hide_refs.clone(),
            prefixes: prefixes.iter().map(|p| p.as_bstr().to_owned()).collect(),
        };
        // Refs in another directory (a linked work tree's `commondir`): not stamped here.
        if repo.git_dir().join("commondir").exists() {
            return Lookup::Miss(None);
        }
        let plan = Plan::new(repo, prefixes);
        let known = self.entries().get(&key).cloned();
        if let Some(entry) = known {
            if entry.stamps.still(repo.git_dir(), &plan) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Lookup::Hit(entry.token.clone());
            }
        }
        let Ok(stamps) = walk(repo.git_dir(), &plan, true, &[]) else {
            return Lookup::Miss(None);
        };
        // Only settled stamps make an entry.
        if !stamps.settled(now) {
            self.entries().remove(&key);
            return Lookup::Miss(None);
        }
        Lookup::Miss(Some(Pending { key, stamps }))
    }

    /// Remember `token`, computed after `pending`'s stamps were taken.
    pub(super) fn remember(&self, pending: Pending, token: &RefsToken) {
        let mut entries = self.entries();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            pending.key,
            Arc::new(Entry {
                stamps: pending.stamps,
                token: token.clone(),
            }),
        );
    }
}
