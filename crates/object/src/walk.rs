//! The commit graph as history walks see it, and git's date-ordered walk over it
//! (`limit_list()`): newest first from interesting and uninteresting commits, spreading the
//! uninteresting mark to parents, until only uninteresting commits are left (plus git's slop
//! for clock skew, which a check can do without: [`Stop`]). Negotiation, enumeration and
//! connectivity all walk this way.

use std::{collections::BinaryHeap, ops::Range};

use gix_hash::{oid, ObjectId};
use gix_hashtable::{HashMap, HashSet};
use gix_object::Kind;

use crate::{CommitError, CommitHeader};

/// The flags of a [`Node`] that the graph and the walk set. Bits from [`flag::FIRST_FREE`] up
/// are the caller's.
pub mod flag {
    /// Tree, parents and date are known.
    pub const PARSED: u16 = 1 << 0;
    /// Reading it failed once (missing, not a commit, or a header that can't be read).
    pub const UNPARSABLE: u16 = 1 << 1;
    /// [`LimitedWalk`](super::LimitedWalk): put into the queue (at most once).
    pub const SEEN: u16 = 1 << 2;
    /// [`LimitedWalk`](super::LimitedWalk): in the queue now.
    pub const IN_QUEUE: u16 = 1 << 3;
    /// [`LimitedWalk`](super::LimitedWalk): reachable from an uninteresting commit.
    pub const UNINTERESTING: u16 = 1 << 4;
    /// The lowest bit the caller may use for its own marks.
    pub const FIRST_FREE: u16 = 1 << 8;
}

/// A commit met during a walk; `tree`, `date` and `parents` are set once it is
/// [parsed](flag::PARSED).
#[derive(Debug, Clone)]
pub struct Node {
    /// The commit.
    pub id: ObjectId,
    /// Its root tree.
    pub tree: ObjectId,
    /// Its committer date, as [`commit_date()`](crate::commit_date) reads it.
    pub date: u64,
    /// Its parents: positions in [`CommitGraph::parents`].
    pub parents: Range<u32>,
    /// [`flag`]s, and the caller's own from [`flag::FIRST_FREE`] up.
    pub flags: u16,
}

/// Why a commit could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unparsable {
    /// The database does not have it.
    Missing,
    /// It is not a commit.
    NotACommit(Kind),
    /// Its header can't be read.
    Corrupt(CommitError),
    /// More commits than a walk can number.
    TooManyCommits,
}

/// Reading a commit from the database failed.
#[derive(Debug, thiserror::Error)]
#[error("could not read object {id}")]
pub struct ReadError {
    /// The object.
    pub id: ObjectId,
    /// What went wrong.
    #[source]
    pub source: gix_error::Error,
}

/// The commits a walk has met, numbered in the order met, with their parents as numbers.
#[derive(Debug, Default)]
pub struct CommitGraph {
    /// Every commit met, by number.
    pub nodes: Vec<Node>,
    index: HashMap<ObjectId, u32>,
    /// The parents of all parsed nodes, as node numbers, referred to by [`Node::parents`].
    pub parents: Vec<u32>,
    buf: Vec<u8>,
    /// Commits parsed as if they had no parents: git's shallow grafts.
    grafts: HashSet<ObjectId>,
    /// The repository's commit-graph file(s), read instead of commit objects.
    commit_graph: Option<CommitGraphFile>,
}

/// A repository's commit-graph (`objects/info/commit-graph` or a chain of them), opened
/// once and shared by the walks that read commits from it.
#[derive(Clone)]
pub struct CommitGraphFile(std::sync::Arc<gix_commitgraph::Graph>);

impl std::fmt::Debug for CommitGraphFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitGraphFile")
            .field("commits", &self.0.num_commits())
            .finish()
    }
}

/// The same opened graph.
impl PartialEq for CommitGraphFile {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CommitGraphFile {}

impl CommitGraphFile {
    /// The commit-graph of the object directory `objects`, if it has a readable one.
    pub fn open(objects: &std::path::Path) -> Option<Self> {
        // None, or a broken one: commits are read from the database, as git falls back.
        gix_commitgraph::at(objects.join("info"), gix_hash::Kind::Sha1, None)
            .ok()
            .map(|graph| CommitGraphFile(std::sync::Arc::new(graph)))
    }
}

impl CommitGraph {
    /// A graph in which the commits of `grafts` have no parents, as git parses commits
    /// registered as shallow (`$GIT_DIR/shallow`, a shallow client's boundary): walks stop
    /// there.
    pub fn with_grafts(grafts: HashSet<ObjectId>) -> Self {
        CommitGraph {
            grafts,
            ..CommitGraph::default()
        }
    }

    /// Read commits from `graph` (the repository's commit-graph) where it has them, as git
    /// does: their tree, parents and date without inflating the commit. Grafts still apply.
    pub fn use_commit_graph(&mut self, graph: Option<CommitGraphFile>) {
        self.commit_graph = graph;
    }

    /// Whether any commit is parsed as parentless (see [`Self::with_grafts()`]).
    pub fn has_grafts(&self) -> bool {
        !self.grafts.is_empty()
    }

    /// Whether `id` is parsed as parentless (see [`Self::with_grafts()`]).
    pub fn is_grafted(&self, id: &oid) -> bool {
        self.grafts.contains(id)
    }

    /// The number of `id`, which is added (unparsed) if it was not met before.
    pub fn node(&mut self, id: &oid) -> u32 {
        if let Some(node) = self.index.get(id) {
            return *node;
        }
        let node = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        self.nodes.push(Node {
            id: id.to_owned(),
            tree: id.kind().null(),
            date: 0,
            parents: 0..0,
            flags: 0,
        });
        self.index.insert(id.to_owned(), node);
        node
    }

    /// The commit numbered `node`.
    pub fn get(&self, node: u32) -> &Node {
        &self.nodes[node as usize]
    }

    /// The flags of `node`.
    pub fn flags(&self, node: u32) -> u16 {
        self.nodes[node as usize].flags
    }

    /// The parent at `position` of [`Self::parents`].
    pub fn parent(&self, position: u32) -> u32 {
        self.parents[position as usize]
    }

    /// Read and parse the commit `node` from `db` unless it is [parsed](flag::PARSED) already.
    /// A failure marks it [`flag::UNPARSABLE`], but a later call reads it again: use
    /// [`Self::parse_gently()`] to remember failures.
    pub fn parse(
        &mut self,
        db: &impl gix_object::Find,
        node: u32,
    ) -> Result<Result<(), Unparsable>, ReadError> {
        if self.flags(node) & flag::PARSED != 0 {
            return Ok(Ok(()));
        }
        let id = self.nodes[node as usize].id;
        if self.parse_from_commit_graph(node, &id) {
            return Ok(Ok(()));
        }
        let mut buf = std::mem::take(&mut self.buf);
        let found = crate::read(db, &id, &mut buf).map_err(|source| ReadError { id, source });
        let parsed = match found {
            Ok(Some((Kind::Commit, range))) => Ok(self.add_parsed(node, &buf[range])),
            Ok(Some((kind, _))) => Ok(Err(Unparsable::NotACommit(kind))),
            Ok(None) => Ok(Err(Unparsable::Missing)),
            Err(err) => Err(err),
        };
        self.buf = buf;
        if let Ok(Err(_)) = parsed {
            self.nodes[node as usize].flags |= flag::UNPARSABLE;
        }
        parsed
    }

    /// [`Self::parse()`], with failures as `false` and remembered: git's walks below
    /// uninteresting commits, and negotiation everywhere.
    pub fn parse_gently(
        &mut self,
        db: &impl gix_object::Find,
        node: u32,
    ) -> Result<bool, ReadError> {
        let flags = self.flags(node);
        if flags & flag::PARSED != 0 {
            return Ok(true);
        }
        if flags & flag::UNPARSABLE != 0 {
            return Ok(false);
        }
        Ok(self.parse(db, node)?.is_ok())
    }

    /// Parse `node` from the commit-graph; `false` if it is not there (or its entry is
    /// broken), to be read from the database instead.
    fn parse_from_commit_graph(&mut self, node: u32, id: &ObjectId) -> bool {
        let Some(CommitGraphFile(graph)) = self.commit_graph.clone() else {
            return false;
        };
        let Some(position) = graph.lookup(id) else {
            return false;
        };
        let commit = graph.commit_at(position);
        let (tree, date) = (
            commit.root_tree_id().to_owned(),
            commit.committer_timestamp(),
        );
        let mut parents = Vec::new();
        if !self.grafts.contains(id) {
            for parent in commit.iter_parents() {
                match parent {
                    Ok(parent) if parent.0 < graph.num_commits() => {
                        parents.push(graph.id_at(parent).to_owned());
                    }
                    _ => return false,
                }
            }
        }
        self.set_parsed(node, tree, date, parents).is_ok()
    }

    fn add_parsed(&mut self, node: u32, data: &[u8]) -> Result<(), Unparsable> {
        let id = self.nodes[node as usize].id;
        let header = CommitHeader::parse(data, id.kind()).map_err(Unparsable::Corrupt)?;
        let parents: Vec<ObjectId> = if self.grafts.contains(&id) {
            Vec::new()
        } else {
            header.parents().collect()
        };
        self.set_parsed(node, header.tree, header.date, parents)
    }

    /// Record what parsing `node` found, its parents numbered.
    fn set_parsed(
        &mut self,
        node: u32,
        tree: ObjectId,
        date: u64,
        parents: Vec<ObjectId>,
    ) -> Result<(), Unparsable> {
        let start = u32::try_from(self.parents.len()).map_err(|_| Unparsable::TooManyCommits)?;
        for parent in parents {
            let parent = self.node(&parent);
            self.parents.push(parent);
        }
        let end = u32::try_from(self.parents.len()).map_err(|_| Unparsable::TooManyCommits)?;
        let node = &mut self.nodes[node as usize];
        node.tree = tree;
        node.date = date;
        node.parents = start..end;
        node.flags |= flag::PARSED;
        Ok(())
    }
}

/// An entry of a date-ordered commit queue (a `BinaryHeap`): newest first, first come first
/// served among equal dates, like git's `commit_list_insert_by_date()`. `node` is the
/// walker's own handle for the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueEntry {
    /// The commit date, as [`commit_date`](crate::commit_date) reads it.
    pub date: u64,
    /// The order of insertion, to break ties.
    pub seq: u64,
    /// The commit, in the walker's numbering.
    pub node: u32,
}

impl Ord for QueueEntry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.date
            .cmp(&other.date)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for QueueEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// git's `SLOP`: how many uninteresting commits to take after the walk could stop.
const SLOP: u8 = 5;

/// When [`LimitedWalk::run()`] stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Stop {
    /// git's `limit_list()`: once only uninteresting commits are queued, after a few more of
    /// them (git's slop), and not while they are as new as the last interesting commit taken.
    /// A clock skew can delay an uninteresting mark; the slop lets it arrive, so the commits
    /// the walk returns are (nearly always) exactly those not reachable from uninteresting
    /// ones. What to send, and what is reachable, depend on that.
    #[default]
    AfterSlop,
    /// As soon as no interesting commit is queued. Every commit reached from an interesting
    /// start is then uninteresting or was taken with all its parents parsed, which is all a
    /// check of the interesting side needs (connectivity); a delayed mark only leaves a few
    /// commits interesting that are not. Cheaper: the slop's commits are not read, nor
    /// (in histories with equal commit dates) every uninteresting commit as new as the last
    /// interesting one.
    NothingInteresting,
}

/// git's `limit_list()` over a [`CommitGraph`]: queue the starting commits (the
/// uninteresting ones marked with [`Self::set_uninteresting()`] and
/// [`Self::mark_parents_uninteresting()`]), then [`Self::run()`]; it stops as its [`Stop`]
/// says ([`Stop::AfterSlop`] unless made with [`Self::new()`]).
#[derive(Debug, Default)]
pub struct LimitedWalk {
    stop: Stop,
    /// git's `--max-age`: commits older than this become uninteresting when taken.
    max_age: Option<u64>,
    queue: BinaryHeap<QueueEntry>,
    next_seq: u64,
    /// How many queued commits are not uninteresting (git's `everybody_uninteresting()`).
    interesting_in_queue: usize,
    /// [`Self::mark_parents_uninteresting()`]'s stack, kept to spare an allocation per call.
    stack: Vec<u32>,
}

/// A parent that [`LimitedWalk::run()`] is about to parse and queue, and the commit it was
/// reached from: what a caller needs to say which walk start a broken parent came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// The commit just taken from the queue.
    pub child: u32,
    /// One of its parents.
    pub parent: u32,
    /// `child` is uninteresting: parse `parent` gently (git ignores what it can't read
    /// there); below an interesting commit the caller chooses between skipping and failing.
    pub gently: bool,
}

impl LimitedWalk {
    /// A walk that stops as `stop` says.
    pub fn new(stop: Stop) -> Self {
        LimitedWalk {
            stop,
            ..LimitedWalk::default()
        }
    }

    /// git's `rev-list --max-age=<date>` in `limit_list()`: a commit whose committer date is
    /// older than `date` becomes uninteresting when the walk takes it, and so does what is
    /// below it.
    pub fn with_max_age(self, date: u64) -> Self {
        LimitedWalk {
            max_age: Some(date),
            ..self
        }
    }

    /// Queue the parsed commit `node` unless it was queued before.
    pub fn push(&mut self, graph: &mut CommitGraph, node: u32) {
        let entry = &mut graph.nodes[node as usize];
        if entry.flags & flag::SEEN != 0 {
            return;
        }
        entry.flags |= flag::SEEN | flag::IN_QUEUE;
        if entry.flags & flag::UNINTERESTING == 0 {
            self.interesting_in_queue += 1;
        }
        self.queue.push(QueueEntry {
            date: entry.date,
            seq: self.next_seq,
            node,
        });
        self.next_seq += 1;
    }

    /// Mark `node` uninteresting; `true` if it wasn't before.
    pub fn set_uninteresting(&mut self, graph: &mut CommitGraph, node: u32) -> bool {
        let entry = &mut graph.nodes[node as usize];
        if entry.flags & flag::UNINTERESTING != 0 {
            return false;
        }
        entry.flags |= flag::UNINTERESTING;
        if entry.flags & flag::IN_QUEUE != 0 {
            self.interesting_in_queue -= 1;
        }
        true
    }

    /// Spread the uninteresting mark from `node` through every ancestor parsed so far.
    pub fn mark_parents_uninteresting(&mut self, graph: &mut CommitGraph, node: u32) {
        let mut stack = std::mem::take(&mut self.stack);
        stack.clear();
        let parents = graph.nodes[node as usize].parents.clone();
        stack.extend(parents.map(|position| graph.parents[position as usize]));
        while let Some(node) = stack.pop() {
            if self.set_uninteresting(graph, node) {
                let parents = graph.nodes[node as usize].parents.clone();
                stack.extend(parents.map(|position| graph.parents[position as usize]));
            }
        }
        self.stack = stack;
    }

    /// Walk newest first until only uninteresting commits are left (see [`Stop`]); return the commits that
    /// were interesting when taken from the queue, in that order (a later one can have made
    /// an earlier one uninteresting).
    ///
    /// `parse(graph, edge)` parses [`Edge::parent`] before it is queued; `Ok(false)` skips
    /// that parent. It is called for every parent of every commit taken from the queue, in
    /// the order taken and then in parent order, so the first edge to a commit that is not a
    /// start is the one the walk reached it by. `popped(graph, node)` is called for every
    /// commit taken from the queue, before its parents are looked at.
    pub fn run<E>(
        &mut self,
        graph: &mut CommitGraph,
        mut parse: impl FnMut(&mut CommitGraph, Edge) -> Result<bool, E>,
        mut popped: impl FnMut(&CommitGraph, u32) -> Result<(), E>,
    ) -> Result<Vec<u32>, E> {
        let mut interesting = Vec::new();
        let mut last_interesting_date = u64::MAX;
        let mut slop = SLOP;
        loop {
            if self.stop == Stop::NothingInteresting && self.interesting_in_queue == 0 {
                break;
            }
            let Some(QueueEntry { node, .. }) = self.queue.pop() else {
                break;
            };
            popped(graph, node)?;
            if self
                .max_age
                .is_some_and(|max_age| graph.nodes[node as usize].date < max_age)
            {
                self.set_uninteresting(graph, node);
            }
            let entry = &mut graph.nodes[node as usize];
            entry.flags &= !flag::IN_QUEUE;
            let uninteresting = entry.flags & flag::UNINTERESTING != 0;
            if !uninteresting {
                self.interesting_in_queue -= 1;
            }
            // git's `process_parents()`.
            for position in graph.nodes[node as usize].parents.clone() {
                let parent = graph.parents[position as usize];
                if uninteresting {
                    self.set_uninteresting(graph, parent);
                }
                let edge = Edge {
                    child: node,
                    parent,
                    gently: uninteresting,
                };
                if !parse(graph, edge)? {
                    continue;
                }
                if uninteresting {
                    self.mark_parents_uninteresting(graph, parent);
                }
                self.push(graph, parent);
            }
            if graph.nodes[node as usize].flags & flag::UNINTERESTING != 0 {
                self.mark_parents_uninteresting(graph, node);
                // git's `still_interesting()`.
                slop = match self.queue.peek() {
                    None => 0,
                    Some(head)
                        if last_interesting_date <= head.date || self.interesting_in_queue > 0 =>
                    {
                        SLOP
                    }
                    Some(_) => slop - 1,
                };
                if slop == 0 {
                    break;
                }
                continue;
            }
            last_interesting_date = graph.nodes[node as usize].date;
            interesting.push(node);
        }
        Ok(interesting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::{numbered_id as id, NumberedCommits as Db};

    /// A walk from `interesting` and `uninteresting` (numbers), parsed as enumeration does.
    fn start(
        db: &Db,
        interesting: &[u32],
        uninteresting: &[u32],
        stop: Stop,
    ) -> (CommitGraph, LimitedWalk) {
        let mut graph = CommitGraph::default();
        let mut walk = LimitedWalk::new(stop);
        for &n in uninteresting {
            let node = graph.node(&id(n));
            walk.set_uninteresting(&mut graph, node);
            assert!(graph.parse_gently(db, node).unwrap());
            walk.mark_parents_uninteresting(&mut graph, node);
            walk.push(&mut graph, node);
        }
        for &n in interesting {
            let node = graph.node(&id(n));
            assert_eq!(graph.parse(db, node).unwrap(), Ok(()));
            walk.push(&mut graph, node);
        }
        (graph, walk)
    }

    /// The number a node's commit was made with.
    fn name(graph: &CommitGraph, node: u32) -> u32 {
        let hex = graph.get(node).id.to_string();
        u32::from_str_radix(&hex, 16).unwrap()
    }

    #[test]
    fn run_reports_each_parent_with_the_commit_it_was_reached_from() {
        let mut db = Db::default();
        db.commit(1, &[], 1);
        db.commit(2, &[1], 2);
        db.commit(3, &[2], 3);
        db.commit(4, &[3], 4);
        db.commit(5, &[4, 2], 5);
        let (mut graph, mut walk) = start(&db, &[5], &[2], Stop::AfterSlop);
        let mut edges = Vec::new();
        let mut popped = Vec::new();
        let interesting = walk
            .run(
                &mut graph,
                |graph, edge| {
                    let named = (name(graph, edge.child), name(graph, edge.parent));
                    edges.push((named, edge.gently));
                    graph.parse_gently(&db, edge.parent)
                },
                |graph, node| {
                    popped.push(name(graph, node));
                    Ok::<_, ReadError>(())
                },
            )
            .unwrap();
        assert_eq!(
            edges,
            [
                ((5, 4), false),
                ((5, 2), false),
                ((4, 3), false),
                ((3, 2), false),
                ((2, 1), true)
            ],
            "every parent of every commit taken, in the order taken, with its child"
        );
        assert_eq!(popped, [5, 4, 3, 2, 1]);
        let interesting: Vec<u32> = interesting.iter().map(|&node| name(&graph, node)).collect();
        assert_eq!(interesting, [5, 4, 3]);
    }

    #[test]
    fn run_skips_or_fails_on_unparsable_parents_as_the_caller_says() {
        let mut db = Db::default();
        // 8 and 9 are missing.
        db.commit(3, &[8], 3);
        db.commit(5, &[9], 5);
        let (mut graph, mut walk) = start(&db, &[3], &[5], Stop::AfterSlop);
        let mut gentle = Vec::new();
        let result = walk.run(
            &mut graph,
            |graph, edge| {
                if edge.gently {
                    gentle.push(name(graph, edge.parent));
                    return Ok(graph.parse_gently(&db, edge.parent).unwrap());
                }
                match graph.parse(&db, edge.parent).unwrap() {
                    Ok(()) => Ok(true),
                    Err(why) => Err((name(graph, edge.child), name(graph, edge.parent), why)),
                }
            },
            |_, _| Ok(()),
        );
        assert_eq!(gentle, [9], "skipped below the uninteresting commit");
        assert_eq!(
            result,
            Err((3, 8, Unparsable::Missing)),
            "the caller's error names the commit the missing parent was reached from"
        );
    }

    #[test]
    fn run_stops_a_few_commits_after_only_uninteresting_ones_are_left() {
        let mut db = Db::default();
        db.commit(1, &[], 1);
        for n in 2..=20 {
            db.commit(n, &[n - 1], u64::from(n));
        }
        db.commit(100, &[20], 100);
        let walk = |stop| {
            let (mut graph, mut walk) = start(&db, &[100], &[20], stop);
            let mut popped = Vec::new();
            let interesting = walk
                .run(
                    &mut graph,
                    |graph, edge| graph.parse_gently(&db, edge.parent),
                    |graph, node| {
                        popped.push(name(graph, node));
                        Ok(())
                    },
                )
                .unwrap();
            let interesting: Vec<u32> =
                interesting.iter().map(|&node| name(&graph, node)).collect();
            (interesting, popped)
        };
        assert_eq!(
            walk(Stop::AfterSlop),
            (vec![100], vec![100, 20, 19, 18, 17, 16]),
            "git's slop: five more uninteresting commits"
        );
        assert_eq!(
            walk(Stop::NothingInteresting),
            (vec![100], vec![100]),
            "nothing after the last interesting commit"
        );
    }

    #[test]
    fn slop_lets_a_late_uninteresting_mark_arrive_and_nothing_interesting_does_not_wait() {
        // 3 is reachable from the uninteresting 10 only through 2 and 1, older than 3.
        let mut db = Db::default();
        db.commit(3, &[], 3);
        db.commit(1, &[3], 1);
        db.commit(2, &[1], 2);
        db.commit(10, &[2], 10);
        db.commit(5, &[3], 5);
        let walk = |stop| {
            let (mut graph, mut walk) = start(&db, &[5], &[10], stop);
            let interesting = walk
                .run(
                    &mut graph,
                    |graph, edge| graph.parse_gently(&db, edge.parent),
                    |_, _| Ok(()),
                )
                .unwrap();
            interesting
                .iter()
                .filter(|&&node| graph.flags(node) & flag::UNINTERESTING == 0)
                .map(|&node| name(&graph, node))
                .collect::<Vec<u32>>()
        };
        assert_eq!(walk(Stop::AfterSlop), [5], "3 is reachable from 10");
        assert_eq!(
            walk(Stop::NothingInteresting),
            [5, 3],
            "3 is left interesting: the walk stopped before 2 was taken"
        );
    }

    #[test]
    fn grafted_commits_have_no_parents_and_max_age_makes_old_commits_uninteresting() {
        let mut db = Db::default();
        db.commit(1, &[], 1);
        for n in 2..=6 {
            db.commit(n, &[n - 1], u64::from(n));
        }
        let mut graph = CommitGraph::with_grafts([id(4)].into_iter().collect());
        let mut walk = LimitedWalk::default();
        let tip = graph.node(&id(6));
        assert!(graph.parse_gently(&db, tip).unwrap());
        walk.push(&mut graph, tip);
        let interesting = walk
            .run(
                &mut graph,
                |graph, edge| graph.parse_gently(&db, edge.parent),
                |_, _| Ok::<_, ReadError>(()),
            )
            .unwrap();
        let names: Vec<u32> = interesting.iter().map(|&node| name(&graph, node)).collect();
        assert_eq!(names, [6, 5, 4], "the walk stops at the graft");
        assert!(graph.is_grafted(&id(4)) && !graph.is_grafted(&id(5)));

        let (mut graph, walk) = start(&db, &[6], &[], Stop::AfterSlop);
        let mut walk = walk.with_max_age(4);
        let interesting = walk
            .run(
                &mut graph,
                |graph, edge| graph.parse_gently(&db, edge.parent),
                |_, _| Ok::<_, ReadError>(()),
            )
            .unwrap();
        let names: Vec<u32> = interesting
            .iter()
            .filter(|&&node| graph.flags(node) & flag::UNINTERESTING == 0)
            .map(|&node| name(&graph, node))
            .collect();
        assert_eq!(names, [6, 5, 4], "older than 4: uninteresting");
    }

    #[test]
    fn queue_order() {
        let entry = |date, seq, node| QueueEntry { date, seq, node };
        let mut queue: BinaryHeap<QueueEntry> = [
            entry(5, 0, 0),
            entry(7, 1, 1),
            entry(5, 2, 2),
            entry(9, 3, 3),
            entry(7, 4, 4),
        ]
        .into_iter()
        .collect();
        let order: Vec<u32> = std::iter::from_fn(|| queue.pop().map(|entry| entry.node)).collect();
        assert_eq!(
            order,
            [3, 1, 4, 0, 2],
            "newest first, first come first served"
        );
    }
}
