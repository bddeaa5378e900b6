//! Enumeration under a partial clone filter, with the semantics of git's
//! `list-objects-filter.c` as `git rev-list --objects --filter=<spec>` applies it.
//!
//! Objects the client asked for by id (the wants, and what wanted tags peel to) are always
//! sent; the filter decides about everything reached from them. Each filter answers, for
//! every object the walk meets, whether to send it, whether to mark it seen (so it is not
//! considered again) and, for a tree, whether to skip its entries; the walk asks before it
//! reads a tree, so a tree whose entries are skipped is never read (`tree:0`, `object:type`
//! of commits or tags). `tree:<depth>` and `sparse:oid` answer by depth and path, so a tree
//! may be walked again where it is met shallower or under another path, as git does.
//!
//! This walk runs on one thread. `blob:none` alone takes the parallel walk of the unfiltered
//! enumeration instead, with blobs left out ([`parallel_blob_none()`]).

use gix_hash::{oid, ObjectId};
use gix_hashtable::{HashMap, HashSet};
use gix_object::Kind;
use packgate_object::tree::{self, EntryKind};

use super::{
    trees::{FoundKind, Interrupt, Item, TreeBuffers},
    EnumerateError,
};
use crate::filter::{Filter, PatternMatch, SparsePatterns};

/// A filter's answer about one object (git's `LOFR_*` bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Answer {
    show: bool,
    seen: bool,
    skip_tree: bool,
}

const SHOW_SEEN: Answer = Answer {
    show: true,
    seen: true,
    skip_tree: false,
};
const SEEN: Answer = Answer {
    show: false,
    seen: true,
    skip_tree: false,
};
const NOTHING: Answer = Answer {
    show: false,
    seen: false,
    skip_tree: false,
};
const SKIP: Answer = Answer {
    show: false,
    seen: false,
    skip_tree: true,
};

/// Where in the walk an object is met (git's `LOFS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Situation {
    Commit,
    BeginTree,
    EndTree,
    Blob,
}

/// A sparse filter's state per directory being walked.
#[derive(Debug, Clone, Copy)]
struct Frame {
    default_match: bool,
    child_omitted: bool,
}

/// A filter with the state it keeps during one walk.
enum State<'f> {
    BlobNone,
    BlobLimit(u64),
    TreeDepth {
        exclude: u64,
        current: u64,
        seen_at: HashMap<ObjectId, u64>,
    },
    Sparse {
        patterns: &'f SparsePatterns,
        frames: Vec<Frame>,
        shown: HashSet<ObjectId>,
    },
    ObjectType(Kind),
    Combine(Vec<Sub<'f>>),
}

/// One filter of a `combine:`, with its own seen set and the tree it is skipping.
struct Sub<'f> {
    state: State<'f>,
    seen: HashSet<ObjectId>,
    skipping: Option<ObjectId>,
}

/// What a filter may ask about an object besides its id: a blob's size, a path.
struct Context<'p, 's> {
    path: &'p [u8],
    size: &'s mut dyn FnMut(&oid) -> Option<u64>,
}

impl<'f> State<'f> {
    fn new(filter: &'f Filter) -> State<'f> {
        match filter {
            Filter::BlobNone => State::BlobNone,
            Filter::BlobLimit(limit) => State::BlobLimit(*limit),
            Filter::TreeDepth(depth) => State::TreeDepth {
                exclude: *depth,
                current: 0,
                seen_at: HashMap::default(),
            },
            Filter::Sparse(patterns) => State::Sparse {
                patterns,
                frames: vec![Frame {
                    default_match: false,
                    child_omitted: false,
                }],
                shown: HashSet::default(),
            },
            Filter::ObjectType(kind) => State::ObjectType(*kind),
            Filter::Combine(subs) => State::Combine(
                subs.iter()
                    .map(|sub| Sub {
                        state: State::new(sub),
                        seen: HashSet::default(),
                        skipping: None,
                    })
                    .collect(),
            ),
        }
    }

    /// Whether the filter's answers depend only on the object, never on where it is met.
    fn answers_by_object(&self) -> bool {
        match self {
            State::BlobNone | State::BlobLimit(_) | State::ObjectType(_) => true,
            State::TreeDepth { .. } | State::Sparse { .. } => false,
            State::Combine(subs) => subs.iter().all(|sub| sub.state.answers_by_object()),
        }
    }

    fn answer(&mut self, situation: Situation, id: &oid, context: &mut Context<'_, '_>) -> Answer {
        use Situation::*;
        match self {
            State::BlobNone => match situation {
                Commit | BeginTree => SHOW_SEEN,
                EndTree => NOTHING,
                Blob => SEEN,
            },
            State::BlobLimit(limit) => match situation {
                Commit | BeginTree => SHOW_SEEN,
                EndTree => NOTHING,
                // A blob whose size is unknown is sent, as git does.
                Blob => match (context.size)(id) {
                    Some(size) if size >= *limit => SEEN,
                    _ => SHOW_SEEN,
                },
            },
            State::TreeDepth {
                exclude,
                current,
                seen_at,
            } => {
                let include = *current < *exclude;
                match situation {
                    Commit => SHOW_SEEN,
                    EndTree => {
                        *current = current.saturating_sub(1);
                        NOTHING
                    }
                    Blob if include => SHOW_SEEN,
                    Blob => NOTHING,
                    BeginTree => {
                        // Walked already at this depth or shallower: nothing new below.
                        let walked = match seen_at.get_mut(id) {
                            Some(depth) if *current >= *depth => true,
                            Some(depth) => {
                                *depth = *current;
                                false
                            }
                            None => {
                                seen_at.insert(id.to_owned(), *current);
                                false
                            }
                        };
                        *current += 1;
                        if walked || !include {
                            SKIP
                        } else {
                            Answer {
                                show: true,
                                ..NOTHING
                            }
                        }
                    }
                }
            }
            State::Sparse {
                patterns,
                frames,
                shown,
            } => match situation {
                Commit => SHOW_SEEN,
                BeginTree => {
                    let inherited = frames.last().is_some_and(|frame| frame.default_match);
                    let matched = match patterns.matches(context.path, true) {
                        PatternMatch::Matched => true,
                        PatternMatch::NotMatched => false,
                        PatternMatch::Undecided => inherited,
                    };
                    frames.push(Frame {
                        default_match: matched,
                        child_omitted: false,
                    });
                    // Every tree is sent, once; it may be walked again under another path.
                    Answer {
                        show: shown.insert(id.to_owned()),
                        ..NOTHING
                    }
                }
                EndTree => {
                    let Some(frame) = frames.pop() else {
                        return NOTHING;
                    };
                    if let Some(parent) = frames.last_mut() {
                        parent.child_omitted |= frame.child_omitted;
                    }
                    if frame.child_omitted {
                        NOTHING
                    } else {
                        // Everything below was sent: no need to walk it again.
                        SEEN
                    }
                }
                Blob => {
                    let Some(frame) = frames.last_mut() else {
                        return NOTHING;
                    };
                    let matched = match patterns.matches(context.path, false) {
                        PatternMatch::Matched => true,
                        PatternMatch::NotMatched => false,
                        PatternMatch::Undecided => frame.default_match,
                    };
                    if matched {
                        SHOW_SEEN
                    } else {
                        // Omitted here, but the same blob may be included under another path.
                        frame.child_omitted = true;
                        NOTHING
                    }
                }
            },
            State::ObjectType(kind) => match situation {
                Commit if *kind == Kind::Commit => SHOW_SEEN,
                Commit => SEEN,
                BeginTree => match kind {
                    Kind::Commit | Kind::Tag => SKIP,
                    Kind::Tree => SHOW_SEEN,
                    Kind::Blob => SEEN,
                },
                EndTree => NOTHING,
                Blob if *kind == Kind::Blob => SHOW_SEEN,
                Blob => SEEN,
            },
            State::Combine(subs) => {
                let mut combined = Answer {
                    show: true,
                    seen: true,
                    skip_tree: true,
                };
                for sub in subs {
                    let answer = sub.answer(situation, id, context);
                    combined.show &= answer.show;
                    combined.seen &= answer.seen;
                    combined.skip_tree &= sub.skipping.is_some();
                }
                combined
            }
        }
    }
}

impl Sub<'_> {
    fn answer(&mut self, situation: Situation, id: &oid, context: &mut Context<'_, '_>) -> Answer {
        if let Some(skipping) = self.skipping {
            if situation == Situation::EndTree && skipping == id {
                self.skipping = None;
            } else {
                return NOTHING;
            }
        }
        if self.seen.contains(id) {
            return NOTHING;
        }
        let answer = self.state.answer(situation, id, context);
        if answer.seen {
            self.seen.insert(id.to_owned());
        }
        if answer.skip_tree {
            self.skipping = Some(id.to_owned());
        }
        answer
    }
}

/// What a filtered walk found, in order.
pub(super) struct Filtered {
    /// Commits to send, in walk order.
    pub(super) commits: Vec<ObjectId>,
    /// Tags, trees and blobs to send, in traversal order.
    pub(super) found: Vec<(ObjectId, FoundKind)>,
}

/// Whether `filter` is `blob:none` alone, which the parallel walk can do for `items`: unless
/// a blob is wanted together with a tree (the walk of the tree would make git filter it).
pub(super) fn parallel_blob_none(filter: &Filter, items: &[Item]) -> bool {
    let wants_tree = items.iter().any(|item| matches!(item, Item::Tree(_)));
    let wants_blob = items.iter().any(|item| matches!(item, Item::Blob(_)));
    matches!(filter, Filter::BlobNone) && !(wants_tree && wants_blob)
}

/// Walk `commits` (each with whether it was wanted, and its root tree) and `items` under
/// `filter`: git's `traverse_commit_list_filtered()`.
pub(super) fn walk<Find: gix_object::Find + gix_object::FindHeader>(
    db: &Find,
    filter: &Filter,
    commits: &[(ObjectId, bool, ObjectId)],
    items: &[Item],
    client_has: &HashSet<ObjectId>,
    interrupt: Interrupt<'_>,
) -> Result<Filtered, EnumerateError> {
    let mut walker = Walker {
        db,
        state: State::new(filter),
        client_has,
        seen: HashSet::default(),
        shown: HashSet::default(),
        found: Vec::new(),
        trees: TreeBuffers::default(),
        path: Vec::new(),
        met: None,
        interrupt,
    };
    tracing::debug!(
        by_object = walker.state.answers_by_object(),
        "filtered enumeration"
    );
    let mut out_commits = Vec::new();
    let mut commit_trees = Vec::with_capacity(commits.len());
    for &(id, wanted, tree) in commits {
        let answer = if wanted {
            SHOW_SEEN
        } else {
            walker.answer(Situation::Commit, &id)
        };
        if answer.show {
            out_commits.push(id);
        }
        commit_trees.push(tree);
    }
    // Git's "user given" is a flag on the object: a wanted tree or blob that is also a
    // commit's root tree, or was met in the walk of an earlier wanted tree, is filtered like
    // any other. Only the wanted items come before the commit trees, so only their walks
    // need to remember what they met.
    if !items.is_empty() {
        walker.met = Some(commit_trees.iter().copied().collect());
    }
    for item in items {
        let given = |walker: &Walker<'_, '_, Find>, id: &ObjectId| {
            walker.met.as_ref().is_none_or(|met| !met.contains(id))
        };
        match *item {
            Item::Tag(id) => walker.show(id, FoundKind::Tag),
            Item::Tree(id) | Item::CommitTree(id) => {
                let wanted = given(&walker, &id);
                walker.tree(id, wanted)?
            }
            Item::Blob(id) => {
                let wanted = given(&walker, &id);
                walker.blob(&id, wanted)
            }
        }
    }
    walker.met = None;
    for tree in commit_trees {
        walker.tree(tree, false)?;
    }
    Ok(Filtered {
        commits: out_commits,
        found: walker.found,
    })
}

struct Walker<'a, 'f, Find> {
    db: &'a Find,
    state: State<'f>,
    client_has: &'a HashSet<ObjectId>,
    /// Objects a filter marked seen (git's `SEEN`): not considered again.
    seen: HashSet<ObjectId>,
    shown: HashSet<ObjectId>,
    found: Vec<(ObjectId, FoundKind)>,
    trees: TreeBuffers,
    /// The path of the object being looked at, `/`-separated.
    path: Vec<u8>,
    /// Trees and blobs met in tree walks so far, while wanted objects are still to come.
    met: Option<HashSet<ObjectId>>,
    interrupt: Interrupt<'a>,
}

impl<Find: gix_object::Find + gix_object::FindHeader> Walker<'_, '_, Find> {
    fn answer(&mut self, situation: Situation, id: &oid) -> Answer {
        let db = self.db;
        let mut size = |id: &oid| match db.try_header(id) {
            Ok(Some(header)) if header.kind == Kind::Blob => Some(header.size),
            _ => None,
        };
        let mut context = Context {
            path: &self.path,
            size: &mut size,
        };
        self.state.answer(situation, id, &mut context)
    }

    fn show(&mut self, id: ObjectId, kind: FoundKind) {
        if self.shown.insert(id) {
            self.found.push((id, kind));
        }
    }

    fn apply(&mut self, answer: Answer, id: &oid, kind: FoundKind) {
        if answer.seen {
            self.seen.insert(id.to_owned());
        }
        if answer.show {
            self.show(id.to_owned(), kind);
        }
    }

    fn blob(&mut self, id: &oid, wanted: bool) {
        if self.client_has.contains(id) || self.seen.contains(id) {
            return;
        }
        let answer = if wanted {
            SHOW_SEEN
        } else {
            self.answer(Situation::Blob, id)
        };
        self.apply(answer, id, FoundKind::Blob);
    }

    /// Begin tree `id` at the current path; `Some(data range)` if its entries are to be walked.
    fn begin_tree(
        &mut self,
        id: &oid,
        wanted: bool,
        depth: usize,
    ) -> Result<Option<std::ops::Range<usize>>, EnumerateError> {
        if self.client_has.contains(id) || self.seen.contains(id) {
            return Ok(None);
        }
        let answer = if wanted {
            SHOW_SEEN
        } else {
            self.answer(Situation::BeginTree, id)
        };
        self.apply(answer, id, FoundKind::Tree);
        if !answer.skip_tree {
            self.interrupt.check()?;
            if let Some(range) = self.trees.load(self.db, id.to_owned(), depth, true)? {
                return Ok(Some(range));
            }
        }
        self.end_tree(id, wanted);
        Ok(None)
    }

    fn end_tree(&mut self, id: &oid, wanted: bool) {
        if !wanted {
            let answer = self.answer(Situation::EndTree, id);
            self.apply(answer, id, FoundKind::Tree);
        }
    }

    /// git's `process_tree()`, without recursion: one stack entry per tree being walked, with
    /// whether it was wanted and the length of its parent's path (`self.path` is the path of
    /// the tree on top of the stack).
    fn tree(&mut self, root: ObjectId, wanted: bool) -> Result<(), EnumerateError> {
        self.path.clear();
        let Some(range) = self.begin_tree(&root, wanted, 0)? else {
            return Ok(());
        };
        let mut stack = vec![(root, range, wanted, 0usize)];
        let hash_len = root.kind().len_in_bytes();
        while let Some(depth) = stack.len().checked_sub(1) {
            let (id, range, wanted, base_len) = &mut stack[depth];
            if range.start >= range.end {
                let (id, wanted, base_len) = (*id, *wanted, *base_len);
                stack.pop();
                self.end_tree(&id, wanted);
                self.path.truncate(base_len);
                continue;
            }
            let data = &self.trees.buffers[depth][range.clone()];
            let (entry, rest) =
                tree::next_entry(data, hash_len).map_err(|err| EnumerateError::Corrupt {
                    id: *id,
                    kind: Kind::Tree,
                    reason: err.as_str(),
                })?;
            range.start = range.end - rest.len();
            let kind = entry.kind();
            let child = entry.id.to_owned();
            let base_len = self.path.len();
            if kind == EntryKind::Gitlink {
                continue;
            }
            if let Some(met) = &mut self.met {
                met.insert(child);
            }
            if base_len > 0 {
                self.path.push(b'/');
            }
            self.path.extend_from_slice(entry.name);
            match kind {
                EntryKind::Tree => {
                    if let Some(range) = self.begin_tree(&child, false, depth + 1)? {
                        stack.push((child, range, false, base_len));
                        continue;
                    }
                }
                EntryKind::Blob => self.blob(&child, false),
                EntryKind::Gitlink => {}
            }
            self.path.truncate(base_len);
        }
        Ok(())
    }
}

impl<Find> super::walk::State<'_, Find>
where
    Find: gix_object::Find + gix_object::FindHeader + Clone + Send,
{
    /// [`collect()`](super::walk::State::collect) under `filter`, on this thread.
    pub(super) fn collect_filtered(
        &mut self,
        walked: &[u32],
        filter: &Filter,
        wanted: &std::collections::HashSet<u32>,
    ) -> Result<(), EnumerateError> {
        let commits: Vec<(ObjectId, bool, ObjectId)> = walked
            .iter()
            .filter_map(|&node| {
                let entry = self.graph.get(node);
                (entry.flags & packgate_object::flag::UNINTERESTING == 0)
                    .then(|| (entry.id, wanted.contains(&node), entry.tree))
            })
            .collect();
        let items = std::mem::take(&mut self.pending);
        let abort = std::sync::atomic::AtomicBool::new(false);
        let interrupt = Interrupt {
            user: self.should_interrupt,
            abort: &abort,
        };
        let filtered = walk(
            self.db,
            filter,
            &commits,
            &items,
            &self.out.client_has,
            interrupt,
        )?;
        let out = &mut self.out;
        out.counts.commits = filtered.commits.len();
        for id in filtered.commits {
            out.set.insert(id);
            out.objects.push(id);
        }
        for (id, kind) in filtered.found {
            if out.set.insert(id) {
                out.objects.push(id);
                kind.count(&mut out.counts);
            }
        }
        Ok(())
    }
}
