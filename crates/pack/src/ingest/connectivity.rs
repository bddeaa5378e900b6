//! The connectivity check of a push: every object reachable from the new tips is in the
//! quarantine or the repository.

use packgate_object::{
    tag_target,
    tree::{self, EntryKind},
    CommitHeader, QueueEntry,
};

use super::OBJECT_HASH;

use std::collections::BinaryHeap;

use gix_hash::{oid, ObjectId};
use gix_hashtable::{HashMap, HashSet};
use gix_object::Kind;

/// The error returned by [`check_connectivity()`].
#[derive(Debug, thiserror::Error)]
pub enum ConnectivityError {
    /// An object reachable from a new tip is neither in the quarantine nor in the repository.
    #[error("{} {id} is missing (reachable from new tip {tip})", kind_name(*kind))]
    Missing {
        /// The missing object.
        id: ObjectId,
        /// What it was expected to be; `None` for a tip itself.
        kind: Option<Kind>,
        /// The new tip it is reachable from.
        tip: ObjectId,
    },
    /// An object reachable from a new tip cannot be walked.
    #[error("{id} (reachable from new tip {tip}) is malformed: {reason}")]
    Malformed {
        /// The object.
        id: ObjectId,
        /// The new tip it is reachable from.
        tip: ObjectId,
        /// What is wrong.
        reason: &'static str,
    },
    /// Reading an object failed.
    #[error("could not read object {id}")]
    Read {
        /// The object.
        id: ObjectId,
        /// What went wrong.
        #[source]
        source: gix_error::Error,
    },
}

pub(super) fn kind_name(kind: Option<Kind>) -> &'static str {
    match kind {
        Some(Kind::Commit) => "commit",
        Some(Kind::Tree) => "tree",
        Some(Kind::Blob) => "blob",
        Some(Kind::Tag) => "tag",
        None => "object",
    }
}

/// How much [`check_connectivity()`] had to look at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectivityOutcome {
    /// Commits reachable from the new tips and not from the existing ones, whose trees were
    /// checked.
    pub new_commits: usize,
    /// Trees read and blobs looked up.
    pub objects_checked: usize,
}

/// Check that every object reachable from `new_tips` is in `objects`, assuming (as git does)
/// that everything reachable from `existing_tips` is.
///
/// `objects` is usually [`Quarantine::objects()`]; `new_tips` are the non-null new values of
/// the push's ref updates, `existing_tips` the values of all refs before the push (tags are
/// peeled here; tips that cannot be read are ignored).
///
/// The walk, and why it is sound:
/// * Commits are walked newest first from both sides, existing tips painting their ancestors
///   "old", like `git rev-list <new> --not <existing>`. The walk stops once only old commits are
///   queued, so every commit reached from a new tip is either old (reachable from an existing
///   tip, hence complete) or walked as new, with all its parents classified. A clock skew only
///   makes the walk longer, never wrong: "old" is only ever painted from existing tips.
/// * New commits are checked oldest first; every tree read and blob found is remembered as
///   complete, so what a commit shares with its new parents is not looked at again. What it
///   shares with its old parents is found by comparing its trees with theirs, level by level:
///   an entry whose id also appears in an old parent's tree at the same level is complete.
///   Everything else is read (trees) or looked up (blobs). So an incremental push costs about
///   the size of the change, and a push of a whole history about one `git rev-list --objects`.
/// * Submodule commits (gitlinks) are not required, as in git.
///
/// Trees are read through `objects` for every changed path; pass a reader with a delta-base
/// cache ([`crate::reader::CachingReader`]) rather than a bare handle for large pushes.
pub fn check_connectivity(
    objects: &(impl gix_object::Find + gix_object::Exists),
    new_tips: &[ObjectId],
    existing_tips: &[ObjectId],
) -> Result<ConnectivityOutcome, ConnectivityError> {
    let mut walk = Walk {
        objects,
        commits: Vec::new(),
        parents: Vec::new(),
        by_id: HashMap::default(),
        queue: BinaryHeap::new(),
        sequence: 0,
        new_in_queue: 0,
        complete: HashSet::default(),
        buffer: Vec::new(),
        objects_checked: 0,
    };
    for &tip in existing_tips {
        walk.add_existing_tip(tip);
    }
    let mut tree_tips = Vec::new();
    for &tip in new_tips {
        walk.add_new_tip(tip, &mut tree_tips)?;
    }
    let new_commits = walk.walk_commits()?;
    let mut checked_commits = 0;
    // Oldest first: what a commit shares with its parents has mostly been seen already.
    for index in new_commits.into_iter().rev() {
        let commit = &walk.commits[index];
        if commit.flags & OLD != 0 {
            continue;
        }
        checked_commits += 1;
        let (tree, tip) = (commit.tree, commit.tip);
        let bases = walk.parents[commit.parents.clone()]
            .iter()
            .filter_map(|parent| match walk.by_id.get(parent) {
                // What this commit shares with new parents is known complete by now (mostly:
                // commit dates decide the order).
                Some(Slot::Commit(parent)) if walk.commits[*parent].flags & OLD != 0 => {
                    Some(walk.commits[*parent].tree)
                }
                _ => None,
            })
            .collect();
        walk.check_tree(tree, bases, tip)?;
    }
    for (tree, tip) in tree_tips {
        walk.check_tree(tree, Vec::new(), tip)?;
    }
    Ok(ConnectivityOutcome {
        new_commits: checked_commits,
        objects_checked: walk.objects_checked,
    })
}

pub(super) const NEW: u8 = 1;
pub(super) const OLD: u8 = 2;

pub(super) struct Commit {
    pub(super) tree: ObjectId,
    pub(super) parents: std::ops::Range<usize>,
    pub(super) time: u64,
    pub(super) flags: u8,
    /// Queue entries for this commit.
    pub(super) queued: u32,
    pub(super) expanded_as_new: bool,
    pub(super) expanded_as_old: bool,
    /// The first new tip it was reached from.
    pub(super) tip: ObjectId,
}

pub(super) enum Slot {
    Commit(usize),
    Missing,
}

pub(super) struct Walk<'a, O> {
    pub(super) objects: &'a O,
    pub(super) commits: Vec<Commit>,
    pub(super) parents: Vec<ObjectId>,
    pub(super) by_id: HashMap<ObjectId, Slot>,
    /// Newest first; `node` is the index in `commits`.
    pub(super) queue: BinaryHeap<QueueEntry>,
    pub(super) sequence: u64,
    /// Queue entries whose commit is not (yet) old; the walk ends when this is zero.
    pub(super) new_in_queue: usize,
    /// Trees and blobs known to be complete (and tags of existing tips).
    pub(super) complete: HashSet<ObjectId>,
    pub(super) buffer: Vec<u8>,
    pub(super) objects_checked: usize,
}

impl<O> Walk<'_, O>
where
    O: gix_object::Find + gix_object::Exists,
{
    pub(super) fn read(&mut self, id: &oid) -> Result<Option<(Kind, &[u8])>, gix_error::Error> {
        Ok(self
            .objects
            .try_find(id, &mut self.buffer)?
            .map(|data| (data.kind, data.data)))
    }

    pub(super) fn add_existing_tip(&mut self, tip: ObjectId) {
        let mut id = tip;
        // Peel tags, with a bound against cycles.
        for _ in 0..64 {
            let Ok(Some((kind, data))) = self.read(&id) else {
                return;
            };
            match kind {
                Kind::Tag => {
                    let Some(target) = tag_target(data) else {
                        return;
                    };
                    self.complete.insert(id);
                    id = target;
                }
                Kind::Commit => {
                    self.add(id, OLD, tip).ok();
                    return;
                }
                Kind::Tree | Kind::Blob => {
                    self.complete.insert(id);
                    return;
                }
            }
        }
    }

    pub(super) fn add_new_tip(
        &mut self,
        tip: ObjectId,
        tree_tips: &mut Vec<(ObjectId, ObjectId)>,
    ) -> Result<(), ConnectivityError> {
        let mut id = tip;
        for _ in 0..64 {
            if self.complete.contains(&id) {
                return Ok(());
            }
            let kind = match self.read(&id) {
                Ok(Some((kind, data))) => {
                    if kind == Kind::Tag {
                        let target = tag_target(data).ok_or(ConnectivityError::Malformed {
                            id,
                            tip,
                            reason: "tag without a valid 'object' line",
                        })?;
                        self.objects_checked += 1;
                        id = target;
                        continue;
                    }
                    kind
                }
                Ok(None) => {
                    return Err(ConnectivityError::Missing {
                        id,
                        kind: None,
                        tip,
                    })
                }
                Err(source) => return Err(ConnectivityError::Read { id, source }),
            };
            match kind {
                Kind::Commit => return self.add(id, NEW, tip),
                Kind::Tree => tree_tips.push((id, tip)),
                Kind::Blob => {
                    self.objects_checked += 1;
                    self.complete.insert(id);
                }
                Kind::Tag => {}
            }
            return Ok(());
        }
        Err(ConnectivityError::Malformed {
            id,
            tip,
            reason: "too many nested tags",
        })
    }

    /// Give commit `id` the `flag`, loading it first if needed, and queue it if that changed
    /// anything. A missing commit is an error only when reached from a new tip.
    pub(super) fn add(
        &mut self,
        id: ObjectId,
        flag: u8,
        tip: ObjectId,
    ) -> Result<(), ConnectivityError> {
        let index = match self.by_id.get(&id) {
            Some(Slot::Commit(index)) => *index,
            Some(Slot::Missing) if flag == OLD => return Ok(()),
            Some(Slot::Missing) => {
                return Err(ConnectivityError::Missing {
                    id,
                    kind: Some(Kind::Commit),
                    tip,
                })
            }
            None => match self.load(id, tip) {
                Ok(index) => index,
                Err(_) if flag == OLD => {
                    self.by_id.insert(id, Slot::Missing);
                    return Ok(());
                }
                Err(err) => {
                    if matches!(err, ConnectivityError::Missing { .. }) {
                        self.by_id.insert(id, Slot::Missing);
                    }
                    return Err(err);
                }
            },
        };
        let commit = &mut self.commits[index];
        if commit.flags & (flag | OLD) != 0 {
            return Ok(());
        }
        if flag == OLD {
            // Its queue entries no longer count as new.
            self.new_in_queue -= commit.queued as usize;
        } else {
            commit.tip = tip;
        }
        commit.flags |= flag;
        commit.queued += 1;
        if commit.flags & OLD == 0 {
            self.new_in_queue += 1;
        }
        self.sequence += 1;
        self.queue.push(QueueEntry {
            date: commit.time,
            seq: self.sequence,
            // `load()` numbers no more commits than `u32` holds.
            node: u32::try_from(index).unwrap_or(u32::MAX),
        });
        Ok(())
    }

    pub(super) fn load(&mut self, id: ObjectId, tip: ObjectId) -> Result<usize, ConnectivityError> {
        // The fields, not `self.read()`: the header borrows the buffer while `parents` grows.
        let (kind, data) = match self.objects.try_find(&id, &mut self.buffer) {
            Ok(Some(found)) => (found.kind, found.data),
            Ok(None) => {
                return Err(ConnectivityError::Missing {
                    id,
                    kind: Some(Kind::Commit),
                    tip,
                })
            }
            Err(source) => return Err(ConnectivityError::Read { id, source }),
        };
        if kind != Kind::Commit {
            return Err(ConnectivityError::Malformed {
                id,
                tip,
                reason: "expected a commit",
            });
        }
        let header =
            CommitHeader::parse(data, OBJECT_HASH).map_err(|_| ConnectivityError::Malformed {
                id,
                tip,
                reason: "the commit cannot be parsed",
            })?;
        let index = self.commits.len();
        if u32::try_from(index).is_err() {
            return Err(ConnectivityError::Malformed {
                id,
                tip,
                reason: "too many commits",
            });
        }
        let start = self.parents.len();
        self.parents.extend(header.parents());
        self.commits.push(Commit {
            tree: header.tree,
            parents: start..self.parents.len(),
            time: header.date,
            flags: 0,
            queued: 0,
            expanded_as_new: false,
            expanded_as_old: false,
            tip,
        });
        self.by_id.insert(id, Slot::Commit(index));
        self.objects_checked += 1;
        Ok(index)
    }

    /// Walk until only old commits are queued; returns the commits walked as new, newest first
    /// (some may have turned out old later).
    pub(super) fn walk_commits(&mut self) -> Result<Vec<usize>, ConnectivityError> {
        let mut new_commits = Vec::new();
        while self.new_in_queue > 0 {
            let Some(QueueEntry { node, .. }) = self.queue.pop() else {
                break;
            };
            let index = node as usize;
            let commit = &mut self.commits[index];
            commit.queued -= 1;
            let parents = commit.parents.clone();
            if commit.flags & OLD == 0 {
                self.new_in_queue -= 1;
                if commit.expanded_as_new {
                    continue;
                }
                commit.expanded_as_new = true;
                let tip = commit.tip;
                new_commits.push(index);
                for position in parents {
                    self.add(self.parents[position], NEW, tip)?;
                }
            } else {
                if commit.expanded_as_old {
                    continue;
                }
                commit.expanded_as_old = true;
                let tip = commit.tip;
                for position in parents {
                    self.add(self.parents[position], OLD, tip)?;
                }
            }
        }
        Ok(new_commits)
    }

    /// Check that `root` and everything below it exists, skipping what is known complete or
    /// also appears at the same place in one of the `bases`: the trees of the commit's old
    /// parents, complete by assumption (and remembered as complete).
    pub(super) fn check_tree(
        &mut self,
        root: ObjectId,
        bases: Vec<ObjectId>,
        tip: ObjectId,
    ) -> Result<(), ConnectivityError> {
        let hash_len = OBJECT_HASH.len_in_bytes();
        let mut stack = vec![(root, bases)];
        let mut base_data: Vec<Vec<u8>> = Vec::new();
        while let Some((tree, bases)) = stack.pop() {
            if self.complete.contains(&tree) {
                continue;
            }
            if bases.contains(&tree) {
                self.complete.insert(tree);
                continue;
            }
            let data = match self.objects.try_find(&tree, &mut self.buffer) {
                Ok(Some(data)) if data.kind == Kind::Tree => data.data.to_vec(),
                Ok(Some(_)) => {
                    return Err(ConnectivityError::Malformed {
                        id: tree,
                        tip,
                        reason: "a tree entry names an object that is not a tree",
                    })
                }
                Ok(None) => {
                    return Err(ConnectivityError::Missing {
                        id: tree,
                        kind: Some(Kind::Tree),
                        tip,
                    })
                }
                Err(source) => return Err(ConnectivityError::Read { id: tree, source }),
            };
            self.objects_checked += 1;
            self.complete.insert(tree);

            base_data.clear();
            for base in &bases {
                if let Ok(Some(data)) = self.objects.try_find(base, &mut self.buffer) {
                    if data.kind == Kind::Tree {
                        base_data.push(data.data.to_vec());
                    }
                }
            }
            let mut base_ids: std::collections::HashSet<&oid> = Default::default();
            let mut base_subtrees: std::collections::HashMap<&[u8], Vec<ObjectId>> =
                Default::default();
            for data in &base_data {
                let mut rest = data.as_slice();
                while let Ok((entry, after)) = tree::next_entry(rest, hash_len) {
                    rest = after;
                    base_ids.insert(entry.id);
                    if entry.kind() == EntryKind::Tree {
                        base_subtrees
                            .entry(entry.name)
                            .or_default()
                            .push(entry.id.to_owned());
                    }
                }
            }

            let mut rest = data.as_slice();
            while !rest.is_empty() {
                let (entry, after) =
                    tree::next_entry(rest, hash_len).map_err(|_| ConnectivityError::Malformed {
                        id: tree,
                        tip,
                        reason: "the tree cannot be parsed",
                    })?;
                rest = after;
                if self.complete.contains(entry.id) {
                    continue;
                }
                if base_ids.contains(&entry.id) {
                    self.complete.insert(entry.id.to_owned());
                    continue;
                }
                match entry.kind() {
                    EntryKind::Tree => stack.push((
                        entry.id.to_owned(),
                        base_subtrees.get(entry.name).cloned().unwrap_or_default(),
                    )),
                    EntryKind::Blob => {
                        self.objects_checked += 1;
                        if !self.objects.exists(entry.id) {
                            return Err(ConnectivityError::Missing {
                                id: entry.id.to_owned(),
                                kind: Some(Kind::Blob),
                                tip,
                            });
                        }
                        self.complete.insert(entry.id.to_owned());
                    }
                    // Gitlinks name commits of other repositories.
                    EntryKind::Gitlink => {}
                }
            }
        }
        Ok(())
    }
}
