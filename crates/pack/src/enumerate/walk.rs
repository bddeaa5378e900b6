//! The commit walk of an enumeration and its state: git's `limit_list()` from the wants and
//! haves, then which trees the client has and what to collect.

use std::{
    collections::BinaryHeap,
    ops::Range,
    sync::atomic::{AtomicBool, Ordering as AtomicOrdering},
};

use super::{
    header_kind, read_object,
    trees::{collect_items, mark_in_parallel, Interrupt, Item, TreeBuffers, Visit},
    CommitHeader, EnumerateError, Enumeration, TreeExclusion,
};
use gix_hash::{oid, ObjectId};
use gix_hashtable::HashMap;
use gix_object::Kind;
use packgate_object::QueueEntry;

/// Git's `SLOP`: how many uninteresting commits to take after the walk could stop.
pub(super) const SLOP: u8 = 5;

pub(super) mod flag {
    /// Tree, parents and date are known.
    pub const PARSED: u8 = 1 << 0;
    /// Has been put into the queue (at most once).
    pub const SEEN: u8 = 1 << 1;
    /// Reachable from a have.
    pub const UNINTERESTING: u8 = 1 << 2;
    /// Currently in the queue.
    pub const IN_QUEUE: u8 = 1 << 3;
    /// Could not be parsed (missing or not a commit) below a have.
    pub const UNPARSABLE: u8 = 1 << 4;
}

/// A commit met during the walk; only those with [`flag::PARSED`] have `tree`, `date` and
/// `parents`.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) id: ObjectId,
    pub(super) tree: ObjectId,
    pub(super) date: u64,
    pub(super) parents: Range<u32>,
    pub(super) flags: u8,
}

#[derive(Default)]
pub(super) struct Graph {
    pub(super) nodes: Vec<Node>,
    pub(super) index: HashMap<ObjectId, u32>,
    /// The parents of all parsed nodes, as node indices, referred to by [`Node::parents`].
    pub(super) parents: Vec<u32>,
}

impl Graph {
    pub(super) fn node(&mut self, id: &oid) -> u32 {
        if let Some(index) = self.index.get(id) {
            return *index;
        }
        let index = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        self.nodes.push(Node {
            id: id.to_owned(),
            tree: id.kind().null(),
            date: 0,
            parents: 0..0,
            flags: 0,
        });
        self.index.insert(id.to_owned(), index);
        index
    }

    pub(super) fn get(&self, index: u32) -> &Node {
        &self.nodes[index as usize]
    }

    pub(super) fn flags(&self, index: u32) -> u8 {
        self.nodes[index as usize].flags
    }

    pub(super) fn parent(&self, position: u32) -> u32 {
        self.parents[position as usize]
    }
}

pub(super) struct State<'a, Find> {
    pub(super) db: &'a Find,
    pub(super) should_interrupt: &'a AtomicBool,
    pub(super) graph: Graph,
    pub(super) queue: BinaryHeap<QueueEntry>,
    pub(super) next_seq: u64,
    /// How many queued commits are not uninteresting (git's `everybody_uninteresting()`).
    pub(super) interesting_in_queue: usize,
    pub(super) commit_buf: Vec<u8>,
    pub(super) trees: TreeBuffers,
    pub(super) pending: Vec<Item>,
    /// Trees given as haves (or peeled from tags given as haves).
    pub(super) uninteresting_roots: Vec<ObjectId>,
    pub(super) out: Enumeration,
}

impl<Find: gix_object::Find + gix_object::FindHeader + Clone + Send> State<'_, Find> {
    pub(super) fn check_interrupt(&self) -> Result<(), EnumerateError> {
        if self.should_interrupt.load(AtomicOrdering::Relaxed) {
            Err(EnumerateError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Resolve a want: tags are queued for sending and peeled, commits become walk tips.
    ///
    /// Only tags and commits are read here; for trees and blobs the header is enough.
    pub(super) fn add_want(
        &mut self,
        want: &ObjectId,
        starts: &mut Vec<u32>,
    ) -> Result<(), EnumerateError> {
        let mut id = *want;
        let mut is_want = true;
        loop {
            let Some(kind) = header_kind(self.db, &id)? else {
                return Err(if is_want {
                    EnumerateError::WantNotFound { id }
                } else {
                    EnumerateError::Missing { id }
                });
            };
            is_want = false;
            match kind {
                Kind::Tag => {
                    self.pending.push(Item::Tag(id));
                    let Some((_, range)) = read_object(self.db, &id, &mut self.commit_buf)? else {
                        return Err(EnumerateError::Missing { id });
                    };
                    id = packgate_object::tag_target(&self.commit_buf[range]).ok_or(
                        EnumerateError::Corrupt {
                            id,
                            kind,
                            reason: "no valid 'object' line",
                        },
                    )?;
                }
                Kind::Commit => {
                    let node = self.graph.node(&id);
                    self.parse(node, false)?;
                    starts.push(node);
                    return Ok(());
                }
                Kind::Tree => {
                    self.pending.push(Item::Tree(id));
                    return Ok(());
                }
                Kind::Blob => {
                    self.pending.push(Item::Blob(id));
                    return Ok(());
                }
            }
        }
    }

    /// Resolve a have: everything it reaches is uninteresting. Missing objects end the chain.
    pub(super) fn add_have(
        &mut self,
        have: &ObjectId,
        starts: &mut Vec<u32>,
    ) -> Result<(), EnumerateError> {
        let mut id = *have;
        loop {
            let Some(kind) = header_kind(self.db, &id)? else {
                return Ok(());
            };
            match kind {
                Kind::Tag => {
                    self.out.client_has.insert(id);
                    let Some((_, range)) = read_object(self.db, &id, &mut self.commit_buf)? else {
                        return Ok(());
                    };
                    match packgate_object::tag_target(&self.commit_buf[range]) {
                        Some(target) => id = target,
                        None => return Ok(()),
                    }
                }
                Kind::Commit => {
                    let node = self.graph.node(&id);
                    self.set_uninteresting(node);
                    if self.parse(node, true)? {
                        self.mark_parents_uninteresting(node);
                        starts.push(node);
                    }
                    return Ok(());
                }
                Kind::Tree => {
                    self.uninteresting_roots.push(id);
                    return Ok(());
                }
                Kind::Blob => {
                    self.out.client_has.insert(id);
                    return Ok(());
                }
            }
        }
    }

    /// Read and parse the commit at `node` unless that was done already.
    ///
    /// With `gently`, a missing or broken commit is remembered as unparsable and `Ok(false)`
    /// is returned, as git does below uninteresting commits.
    pub(super) fn parse(&mut self, node: u32, gently: bool) -> Result<bool, EnumerateError> {
        let flags = self.graph.flags(node);
        if flags & flag::PARSED != 0 {
            return Ok(true);
        }
        let id = self.graph.get(node).id;
        if flags & flag::UNPARSABLE != 0 && gently {
            return Ok(false);
        }
        let result = match read_object(self.db, &id, &mut self.commit_buf)? {
            None => Err(EnumerateError::Missing { id }),
            Some((Kind::Commit, range)) => self.parse_loaded_commit(node, range),
            Some((actual, _)) => Err(EnumerateError::WrongKind {
                id,
                expected: Kind::Commit,
                actual,
            }),
        };
        match result {
            Ok(()) => Ok(true),
            Err(_) if gently => {
                self.graph.nodes[node as usize].flags |= flag::UNPARSABLE;
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    /// Parse the commit in `self.commit_buf[range]` into `node`.
    pub(super) fn parse_loaded_commit(
        &mut self,
        node: u32,
        range: Range<usize>,
    ) -> Result<(), EnumerateError> {
        let id = self.graph.get(node).id;
        let data = &self.commit_buf[range];
        let corrupt = |reason| EnumerateError::Corrupt {
            id,
            kind: Kind::Commit,
            reason,
        };
        let header = CommitHeader::parse(data, id.kind()).map_err(corrupt)?;
        let start =
            u32::try_from(self.graph.parents.len()).map_err(|_| corrupt("too many commits"))?;
        for parent in header.parents(data, id.kind()) {
            let parent = parent.map_err(corrupt)?;
            let parent = self.graph.node(&parent);
            self.graph.parents.push(parent);
        }
        let end =
            u32::try_from(self.graph.parents.len()).map_err(|_| corrupt("too many commits"))?;
        let node = &mut self.graph.nodes[node as usize];
        node.tree = header.tree;
        node.date = header.date;
        node.parents = start..end;
        node.flags |= flag::PARSED;
        Ok(())
    }

    /// Mark `node` uninteresting; returns `true` if it wasn't before.
    pub(super) fn set_uninteresting(&mut self, node: u32) -> bool {
        let node = &mut self.graph.nodes[node as usize];
        if node.flags & flag::UNINTERESTING != 0 {
            return false;
        }
        node.flags |= flag::UNINTERESTING;
        if node.flags & flag::IN_QUEUE != 0 {
            self.interesting_in_queue -= 1;
        }
        true
    }

    /// Spread the uninteresting mark from `node` through every ancestor parsed so far.
    pub(super) fn mark_parents_uninteresting(&mut self, node: u32) {
        let mut stack: Vec<u32> = Vec::new();
        let parents = self.graph.get(node).parents.clone();
        stack.extend(parents.map(|position| self.graph.parent(position)));
        while let Some(node) = stack.pop() {
            if self.set_uninteresting(node) {
                let parents = self.graph.get(node).parents.clone();
                stack.extend(parents.map(|position| self.graph.parent(position)));
            }
        }
    }

    pub(super) fn enqueue(&mut self, node: u32) {
        let entry = &mut self.graph.nodes[node as usize];
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

    /// Git's `limit_list()`: walk commits newest first until only uninteresting ones are left,
    /// and return the interesting ones in the order they were taken from the queue.
    pub(super) fn walk_commits(&mut self) -> Result<Vec<u32>, EnumerateError> {
        let mut interesting = Vec::new();
        let mut last_interesting_date = u64::MAX;
        let mut slop = SLOP;
        while let Some(QueueEntry { node, .. }) = self.queue.pop() {
            self.check_interrupt()?;
            let flags = {
                let entry = &mut self.graph.nodes[node as usize];
                entry.flags &= !flag::IN_QUEUE;
                entry.flags
            };
            if flags & flag::UNINTERESTING == 0 {
                self.interesting_in_queue -= 1;
            }
            self.process_parents(node)?;
            if self.graph.flags(node) & flag::UNINTERESTING != 0 {
                self.mark_parents_uninteresting(node);
                slop = self.still_interesting(last_interesting_date, slop);
                if slop == 0 {
                    break;
                }
                continue;
            }
            last_interesting_date = self.graph.get(node).date;
            interesting.push(node);
        }
        Ok(interesting)
    }

    /// Git's `still_interesting()`: the slop left, zero to stop.
    pub(super) fn still_interesting(&self, last_interesting_date: u64, slop: u8) -> u8 {
        let Some(head) = self.queue.peek() else {
            return 0;
        };
        if last_interesting_date <= head.date || self.interesting_in_queue > 0 {
            return SLOP;
        }
        slop - 1
    }

    /// Git's `process_parents()`: queue the parents of `node`, passing on its uninteresting mark.
    pub(super) fn process_parents(&mut self, node: u32) -> Result<(), EnumerateError> {
        let parents = self.graph.get(node).parents.clone();
        if self.graph.flags(node) & flag::UNINTERESTING != 0 {
            for position in parents {
                let parent = self.graph.parent(position);
                self.set_uninteresting(parent);
                if !self.parse(parent, true)? {
                    continue;
                }
                self.mark_parents_uninteresting(parent);
                self.enqueue(parent);
            }
        } else {
            for position in parents {
                let parent = self.graph.parent(position);
                self.parse(parent, false)?;
                self.enqueue(parent);
            }
        }
        Ok(())
    }

    /// Mark the trees and blobs the client has, per `exclusion`.
    pub(super) fn mark_uninteresting_trees(
        &mut self,
        interesting: &[u32],
        exclusion: TreeExclusion,
        threads: usize,
    ) -> Result<(), EnumerateError> {
        let mut roots = std::mem::take(&mut self.uninteresting_roots);
        match exclusion {
            TreeExclusion::VisitedCommits => {
                roots.extend(self.graph.nodes.iter().filter_map(|node| {
                    let wanted = flag::PARSED | flag::UNINTERESTING;
                    (node.flags & wanted == wanted).then_some(node.tree)
                }));
            }
            TreeExclusion::EdgeCommits => {
                for &node in interesting {
                    let entry = self.graph.get(node);
                    if entry.flags & flag::UNINTERESTING != 0 {
                        roots.push(entry.tree);
                        continue;
                    }
                    for position in entry.parents.clone() {
                        let parent = self.graph.get(self.graph.parent(position));
                        let wanted = flag::PARSED | flag::UNINTERESTING;
                        if parent.flags & wanted == wanted {
                            roots.push(parent.tree);
                        }
                    }
                }
            }
        }
        for node in &self.graph.nodes {
            if node.flags & flag::UNINTERESTING != 0 {
                self.out.client_has.insert(node.id);
            }
        }
        let interrupt = Interrupt {
            user: self.should_interrupt,
            abort: &AtomicBool::new(false),
        };
        if threads <= 1 || roots.is_empty() {
            for root in roots {
                interrupt.check()?;
                let visit = Visit::Uninteresting(&mut self.out.client_has);
                self.trees.walk(self.db, root, visit, None, interrupt)?;
            }
            return Ok(());
        }
        let marked = mark_in_parallel(self.db, &roots, threads, interrupt)?;
        let client_has = &mut self.out.client_has;
        for set in marked {
            if set.len() > client_has.len() {
                let smaller = std::mem::replace(client_has, set);
                client_has.extend(smaller);
            } else {
                client_has.extend(set);
            }
        }
        Ok(())
    }

    /// Fill the output: commits, then pending tags, trees and blobs, then commit trees.
    pub(super) fn collect(&mut self, walked: &[u32], threads: usize) -> Result<(), EnumerateError>
    where
        Find: Clone + Send,
    {
        let commits: Vec<&Node> = walked
            .iter()
            .map(|&node| self.graph.get(node))
            .filter(|node| node.flags & flag::UNINTERESTING == 0)
            .collect();
        let mut items = std::mem::take(&mut self.pending);
        items.extend(commits.iter().map(|node| Item::Tree(node.tree)));
        let out = &mut self.out;
        out.objects.extend(commits.iter().map(|node| node.id));
        out.counts.commits = commits.len();
        collect_items(
            self.db,
            &items,
            threads,
            &mut self.trees,
            self.should_interrupt,
            out,
        )?;
        out.set.extend(commits.iter().map(|node| node.id));
        Ok(())
    }
}
