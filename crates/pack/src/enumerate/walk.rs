//! The commit walk of an enumeration and its state: git's `limit_list()` from the wants and
//! haves, then which trees the client has and what to collect.

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use super::{
    filtered::parallel_blob_none,
    header_kind, read_object,
    trees::{collect_items, mark_in_parallel, mark_sparse, Interrupt, Item, TreeBuffers, Visit},
    EnumerateError, Enumeration, TreeExclusion,
};
use crate::filter::Filter;
use gix_hash::ObjectId;
use gix_object::Kind;
use packgate_object::{flag, CommitGraph, LimitedWalk, Node, Unparsable};

pub(super) struct State<'a, Find> {
    pub(super) db: &'a Find,
    pub(super) should_interrupt: &'a AtomicBool,
    pub(super) graph: CommitGraph,
    pub(super) walk: LimitedWalk,
    pub(super) commit_buf: Vec<u8>,
    pub(super) trees: TreeBuffers,
    pub(super) pending: Vec<Item>,
    /// Trees given as haves (or peeled from tags given as haves).
    pub(super) uninteresting_roots: Vec<ObjectId>,
    /// The commits given as haves (or peeled from tags given as haves) that could be read.
    pub(super) have_commits: Vec<u32>,
    pub(super) out: Enumeration,
}

impl<Find: gix_object::Find + gix_object::FindHeader + Clone + Send> State<'_, Find> {
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
                    self.walk.set_uninteresting(&mut self.graph, node);
                    if self.parse(node, true)? {
                        self.walk.mark_parents_uninteresting(&mut self.graph, node);
                        starts.push(node);
                        self.have_commits.push(node);
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

    /// Read and parse the commit at `node` unless that was done already; see [`parse()`].
    pub(super) fn parse(&mut self, node: u32, gently: bool) -> Result<bool, EnumerateError> {
        parse(self.db, &mut self.graph, node, gently)
    }

    /// Git's `limit_list()`: walk commits newest first until only uninteresting ones are left,
    /// and return the interesting ones in the order they were taken from the queue. A parent
    /// of an interesting commit must be there; below uninteresting ones anything goes.
    pub(super) fn walk_commits(&mut self) -> Result<Vec<u32>, EnumerateError> {
        let (db, should_interrupt) = (self.db, self.should_interrupt);
        self.walk.run(
            &mut self.graph,
            |graph, edge| parse(db, graph, edge.parent, edge.gently),
            |_, _| {
                if should_interrupt.load(AtomicOrdering::Relaxed) {
                    Err(EnumerateError::Interrupted)
                } else {
                    Ok(())
                }
            },
        )
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
            TreeExclusion::Sparse if !self.graph.has_grafts() => {
                for node in &self.graph.nodes {
                    if node.flags & flag::UNINTERESTING != 0 {
                        self.out.client_has.insert(node.id);
                    }
                }
                // git's `mark_edges_uninteresting()` with `sparse`: every interesting
                // commit's tree and the trees of its uninteresting parents, compared path by
                // path. Trees given as haves are the client's whole, as without it.
                let mut compared = Vec::new();
                for &node in interesting {
                    let entry = self.graph.get(node);
                    if entry.flags & flag::UNINTERESTING != 0 {
                        self.out.client_has.insert(entry.tree);
                    }
                    compared.push(entry.tree);
                    for position in entry.parents.clone() {
                        let parent = self.graph.get(self.graph.parent(position));
                        let wanted = flag::PARSED | flag::UNINTERESTING;
                        if parent.flags & wanted == wanted {
                            self.out.client_has.insert(parent.tree);
                            compared.push(parent.tree);
                        }
                    }
                }
                compared.sort_unstable();
                compared.dedup();
                let interrupt = Interrupt {
                    user: self.should_interrupt,
                    abort: &AtomicBool::new(false),
                };
                mark_sparse(self.db, compared, &mut self.out.client_has, interrupt)?;
                for root in roots {
                    interrupt.check()?;
                    let visit = Visit::Uninteresting(&mut self.out.client_has);
                    self.trees.walk(self.db, root, visit, None, interrupt)?;
                }
                return Ok(());
            }
            // Under shallow grafts sparse marking is not enough: `pack-objects --shallow`
            // marks the trees of every negative commit whole (`--objects-edge-aggressive`).
            TreeExclusion::EdgeCommits | TreeExclusion::Sparse => {
                // Under shallow grafts a have may be no interesting commit's parent (the
                // graft cut the link): its tree counts all the same, as `pack-objects
                // --shallow` marks the trees of every negative commit
                // (`--objects-edge-aggressive`).
                if self.graph.has_grafts() {
                    roots.extend(
                        self.have_commits
                            .iter()
                            .map(|&node| self.graph.get(node).tree),
                    );
                }
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
        // A fetch's few edge trees share most of their subtrees: threads, each with a cold
        // cache of its own, would decode them twice, and the delta search that follows reads
        // them again through this walk's reader. One thread, as git's walk, unless there are
        // many trees to mark.
        if threads <= 1 || roots.len() < MIN_ROOTS_FOR_THREADS {
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
    pub(super) fn collect(
        &mut self,
        walked: &[u32],
        threads: usize,
        filter: Option<&Filter>,
        wanted: &std::collections::HashSet<u32>,
    ) -> Result<(), EnumerateError>
    where
        Find: Clone + Send,
    {
        if let Some(filter) = filter.filter(|filter| !parallel_blob_none(filter, &self.pending)) {
            return self.collect_filtered(walked, filter, wanted);
        }
        let commits: Vec<&Node> = walked
            .iter()
            .map(|&node| self.graph.get(node))
            .filter(|node| node.flags & flag::UNINTERESTING == 0)
            .collect();
        let mut items = std::mem::take(&mut self.pending);
        items.extend(commits.iter().map(|node| Item::CommitTree(node.tree)));
        let out = &mut self.out;
        out.objects.extend(commits.iter().map(|node| node.id));
        out.counts.commits = commits.len();
        collect_items(
            self.db,
            &items,
            filter.is_none(),
            threads,
            &mut self.trees,
            self.should_interrupt,
            out,
        )?;
        out.set.extend(commits.iter().map(|node| node.id));
        Ok(())
    }
}

/// Fewest trees to mark before the marking takes threads.
const MIN_ROOTS_FOR_THREADS: usize = 16;

/// Read and parse the commit at `node` of `graph` unless that was done already.
///
/// With `gently`, a missing or broken commit is remembered as unparsable and `Ok(false)`
/// is returned, as git does below uninteresting commits; otherwise it is an error.
fn parse<Find: gix_object::Find>(
    db: &Find,
    graph: &mut CommitGraph,
    node: u32,
    gently: bool,
) -> Result<bool, EnumerateError> {
    let read_error = |err: packgate_object::ReadError| EnumerateError::Read {
        id: err.id,
        source: err.source,
    };
    if gently {
        return graph.parse_gently(db, node).map_err(read_error);
    }
    let id = graph.get(node).id;
    let corrupt = |reason| EnumerateError::Corrupt {
        id,
        kind: Kind::Commit,
        reason,
    };
    match graph.parse(db, node).map_err(read_error)? {
        Ok(()) => Ok(true),
        Err(Unparsable::Missing) => Err(EnumerateError::Missing { id }),
        Err(Unparsable::NotACommit(actual)) => Err(EnumerateError::WrongKind {
            id,
            expected: Kind::Commit,
            actual,
        }),
        Err(Unparsable::Corrupt(err)) => Err(corrupt(err.as_str())),
        Err(Unparsable::TooManyCommits) => Err(corrupt("too many commits")),
    }
}
