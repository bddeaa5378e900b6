//! The connectivity check of a push: every object reachable from the new tips is in the
//! quarantine or the repository.
//!
//! The commit walk is `packgate-object`'s [`LimitedWalk`] over a [`CommitGraph`], the walk of
//! negotiation and enumeration (git's `limit_list()`, as in git's own check, `rev-list
//! --objects <new> --not --all`): existing tips are its uninteresting starts, new tips its
//! interesting ones. It stops as soon as no interesting commit is queued
//! ([`Stop::NothingInteresting`], without git's slop): the check needs every new commit
//! walked, not an exact set of them. What is particular to connectivity stays here: which new
//! tip each commit was first reached from (for the error message, from the walk's [`Edge`]s),
//! the strictness (a parent of a new commit must be there; below existing history nothing is
//! required), and the tree check.

use packgate_object::{
    flag, tag_target,
    tree::{self, EntryKind},
    CommitGraph, Edge, LimitedWalk, Stop, Unparsable,
};

use super::OBJECT_HASH;

use gix_hash::{oid, ObjectId};
use gix_hashtable::HashSet;
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

fn kind_name(kind: Option<Kind>) -> &'static str {
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
/// `objects` is usually [`Quarantine::objects()`](super::Quarantine::objects); `new_tips` are the non-null new values of
/// the push's ref updates, `existing_tips` the values of all refs before the push (tags are
/// peeled here; tips that cannot be read are ignored).
///
/// The walk, and why it is sound:
/// * Commits are walked newest first from both sides, existing tips painting their ancestors
///   uninteresting, like `git rev-list <new> --not <existing>` ([`LimitedWalk`]). The walk
///   stops once only uninteresting commits are queued, so every commit reached from a new tip
///   is either uninteresting (reachable from an existing tip, hence complete) or walked as
///   interesting, with all its parents read. A clock skew only makes the check longer (a
///   commit whose uninteresting mark is late has its tree checked), never wrong: the
///   uninteresting mark is only ever spread from existing tips.
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
    check_connectivity_with_grafts(objects, new_tips, existing_tips, &HashSet::default())
}

/// [`check_connectivity()`] in a shallow repository: the commits in `grafts` count as
/// having no parents (git's `--shallow-file`), so their history is not required. A push
/// passes the repository's own shallow commits (`$GIT_DIR/shallow`), and for a push from a
/// shallow clone the new shallow roots it brings.
pub fn check_connectivity_with_grafts(
    objects: &(impl gix_object::Find + gix_object::Exists),
    new_tips: &[ObjectId],
    existing_tips: &[ObjectId],
    grafts: &HashSet<ObjectId>,
) -> Result<ConnectivityOutcome, ConnectivityError> {
    let mut check = Check {
        objects,
        complete: HashSet::default(),
        buffer: Vec::new(),
        objects_checked: 0,
    };
    let mut graph = CommitGraph::default();
    let mut walk = LimitedWalk::new(Stop::NothingInteresting);
    let mut reached = ReachedFrom::default();
    for &tip in existing_tips {
        let Some(commit) = check.peel_existing_tip(tip) else {
            continue;
        };
        let node = graph.node(&commit);
        walk.set_uninteresting(&mut graph, node);
        if parse_gently(&mut graph, objects, node) {
            walk.mark_parents_uninteresting(&mut graph, node);
            walk.push(&mut graph, node);
        }
    }
    let mut tree_tips = Vec::new();
    for (index, &tip) in new_tips.iter().enumerate() {
        match check.peel_new_tip(tip)? {
            Peeled::Commit(commit) => {
                let node = graph.node(&commit);
                parse(&mut graph, objects, node, tip)?;
                reached.first(node, index);
                walk.push(&mut graph, node);
            }
            Peeled::Tree(tree) => tree_tips.push((tree, tip)),
            Peeled::Complete => {}
        }
    }
    let walked = walk.run(
        &mut graph,
        |graph, edge: Edge| {
            // A shallow commit's parents are not part of the history.
            if !grafts.is_empty() && grafts.contains(&graph.get(edge.child).id) {
                return Ok(false);
            }
            if edge.gently {
                return Ok(parse_gently(graph, objects, edge.parent));
            }
            let tip = reached.tip(new_tips, graph, edge.child);
            reached.inherit(edge.parent, edge.child);
            parse(graph, objects, edge.parent, tip).map(|()| true)
        },
        |_, _| Ok(()),
    )?;
    let mut checked_commits = 0;
    // Oldest first: what a commit shares with its parents has mostly been seen already.
    for &node in walked.iter().rev() {
        let commit = graph.get(node);
        if commit.flags & flag::UNINTERESTING != 0 {
            continue;
        }
        checked_commits += 1;
        // What this commit shares with interesting parents is known complete by now (mostly:
        // commit dates decide the order); what it shares with uninteresting ones is complete.
        let bases = commit
            .parents
            .clone()
            .map(|position| graph.get(graph.parent(position)))
            .filter(|parent| parent.flags & OLD == OLD)
            .map(|parent| parent.tree)
            .collect();
        let tip = reached.tip(new_tips, &graph, node);
        check.check_tree(commit.tree, bases, tip)?;
    }
    for (tree, tip) in tree_tips {
        check.check_tree(tree, Vec::new(), tip)?;
    }
    let commits_read = graph
        .nodes
        .iter()
        .filter(|node| node.flags & flag::PARSED != 0)
        .count();
    Ok(ConnectivityOutcome {
        new_commits: checked_commits,
        objects_checked: check.objects_checked + commits_read,
    })
}

/// The flags of a commit of existing history whose tree is known.
const OLD: u16 = flag::PARSED | flag::UNINTERESTING;

/// Parse `node` below existing history: what can't be read there (even a read error) only
/// ends that line of history, as in git.
fn parse_gently(graph: &mut CommitGraph, objects: &impl gix_object::Find, node: u32) -> bool {
    graph.parse_gently(objects, node).unwrap_or(false)
}

/// Parse `node`, reached from the new tip `tip`: it must be a readable commit.
fn parse(
    graph: &mut CommitGraph,
    objects: &impl gix_object::Find,
    node: u32,
    tip: ObjectId,
) -> Result<(), ConnectivityError> {
    let id = graph.get(node).id;
    let malformed = |reason| ConnectivityError::Malformed { id, tip, reason };
    match graph.parse(objects, node) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(Unparsable::Missing)) => Err(ConnectivityError::Missing {
            id,
            kind: Some(Kind::Commit),
            tip,
        }),
        Ok(Err(Unparsable::NotACommit(_))) => Err(malformed("expected a commit")),
        Ok(Err(Unparsable::Corrupt(_))) => Err(malformed("the commit cannot be parsed")),
        Ok(Err(Unparsable::TooManyCommits)) => Err(malformed("too many commits")),
        Err(err) => Err(ConnectivityError::Read {
            id: err.id,
            source: err.source,
        }),
    }
}

/// For each commit of the graph (by node number), the new tip it was first reached from, as
/// an index into the new tips; grown as the graph grows, so a commit costs four bytes here.
#[derive(Default)]
struct ReachedFrom(Vec<u32>);

impl ReachedFrom {
    const NONE: u32 = u32::MAX;

    /// Record that `node` was reached from new tip number `tip` unless it was reached before.
    fn first(&mut self, node: u32, tip: usize) {
        let node = node as usize;
        if self.0.len() <= node {
            self.0.resize(node + 1, Self::NONE);
        }
        if self.0[node] == Self::NONE {
            self.0[node] = u32::try_from(tip).unwrap_or(Self::NONE);
        }
    }

    /// `parent` was reached from `child`: it was reached from `child`'s tip, unless earlier.
    fn inherit(&mut self, parent: u32, child: u32) {
        if let Some(&tip) = self.0.get(child as usize) {
            if tip != Self::NONE {
                self.first(parent, tip as usize);
            }
        }
    }

    /// The new tip `node` was first reached from. Every commit walked as new was reached from
    /// one; the commit itself stands in should that ever not hold.
    fn tip(&self, new_tips: &[ObjectId], graph: &CommitGraph, node: u32) -> ObjectId {
        self.0
            .get(node as usize)
            .and_then(|&tip| new_tips.get(tip as usize))
            .copied()
            .unwrap_or(graph.get(node).id)
    }
}

/// What a new tip peels to.
enum Peeled {
    /// A commit: walk it.
    Commit(ObjectId),
    /// A tree: check it.
    Tree(ObjectId),
    /// Nothing more to check.
    Complete,
}

/// The tree check's state: what is known complete, and the counts.
struct Check<'a, O> {
    objects: &'a O,
    /// Trees and blobs known to be complete (and tags of existing tips).
    complete: HashSet<ObjectId>,
    buffer: Vec<u8>,
    objects_checked: usize,
}

impl<O> Check<'_, O>
where
    O: gix_object::Find + gix_object::Exists,
{
    fn read(&mut self, id: &oid) -> Result<Option<(Kind, &[u8])>, gix_error::Error> {
        Ok(self
            .objects
            .try_find(id, &mut self.buffer)?
            .map(|data| (data.kind, data.data)))
    }

    /// The commit an existing tip peels to, remembering its tags (and a tree or blob) as
    /// complete; `None` if there is none or it can't be read.
    fn peel_existing_tip(&mut self, tip: ObjectId) -> Option<ObjectId> {
        let mut id = tip;
        // Peel tags, with a bound against cycles.
        for _ in 0..64 {
            let Ok(Some((kind, data))) = self.read(&id) else {
                return None;
            };
            match kind {
                Kind::Tag => {
                    let target = tag_target(data)?;
                    self.complete.insert(id);
                    id = target;
                }
                Kind::Commit => return Some(id),
                Kind::Tree | Kind::Blob => {
                    self.complete.insert(id);
                    return None;
                }
            }
        }
        None
    }

    /// Peel a new tip: its tags must be readable and lead to an object that is there.
    fn peel_new_tip(&mut self, tip: ObjectId) -> Result<Peeled, ConnectivityError> {
        let mut id = tip;
        for _ in 0..64 {
            if self.complete.contains(&id) {
                return Ok(Peeled::Complete);
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
            return Ok(match kind {
                Kind::Commit => Peeled::Commit(id),
                Kind::Tree => Peeled::Tree(id),
                Kind::Blob => {
                    self.objects_checked += 1;
                    self.complete.insert(id);
                    Peeled::Complete
                }
                Kind::Tag => Peeled::Complete,
            });
        }
        Err(ConnectivityError::Malformed {
            id,
            tip,
            reason: "too many nested tags",
        })
    }

    /// Check that `root` and everything below it exists, skipping what is known complete or
    /// also appears at the same place in one of the `bases`: the trees of the commit's old
    /// parents, complete by assumption (and remembered as complete).
    fn check_tree(
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
