//! The tree walks of an enumeration: marking what the client has and collecting what to
//! send, depth first, on several threads with the result of one.

use std::{
    ops::Range,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering},
};

use super::{read_object, Counts, EnumerateError, Enumeration};
use gix_hash::{oid, ObjectId};
use gix_hashtable::HashSet;
use gix_object::Kind;
use packgate_object::tree::{self, EntryKind};

/// Everything reachable from the trees `roots`, as one set per thread: each thread walks its
/// [`Partition`] of every root.
pub(super) fn mark_in_parallel<Find: gix_object::Find + Clone + Send>(
    db: &Find,
    roots: &[ObjectId],
    threads: usize,
    interrupt: Interrupt<'_>,
) -> Result<Vec<HashSet<ObjectId>>, EnumerateError> {
    let count = threads as u64;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..count)
            .map(|index| {
                let db = db.clone();
                scope.spawn(move || {
                    let mut trees = TreeBuffers::default();
                    let mut marked = HashSet::default();
                    let partition = Some(Partition { index, count });
                    for root in roots {
                        interrupt.check()?;
                        let visit = Visit::Uninteresting(&mut marked);
                        trees.walk(&db, *root, visit, partition, interrupt)?;
                    }
                    Ok(marked)
                })
            })
            .collect();
        let mut sets = Vec::with_capacity(workers.len());
        let mut first_error = None;
        for worker in workers {
            match worker.join() {
                Ok(Ok(set)) => sets.push(set),
                Ok(Err(err)) => {
                    interrupt.abort.store(true, AtomicOrdering::Relaxed);
                    first_error.get_or_insert(err);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(sets),
        }
    })
}

/// Something to send after the commits, in order: what wants resolved to, then commit trees.
#[derive(Debug, Clone, Copy)]
pub(super) enum Item {
    Tag(ObjectId),
    /// A tree the client asked for (a want, or what a wanted tag peels to).
    Tree(ObjectId),
    /// A commit's root tree.
    CommitTree(ObjectId),
    Blob(ObjectId),
}

/// Fewest items per chunk worth a thread of its own: each chunk walks the whole tree of its
/// first commit again, and starts with a cold delta cache. For the same reason there is one
/// chunk per thread: smaller chunks balance better but measured slower.
pub(super) const MIN_ITEMS_PER_CHUNK: usize = 64;

/// Walk the trees of `items`, in order, into `out`, whose `set` must still be empty.
///
/// With several threads the items are cut into consecutive chunks, each walked on its own as if
/// it came first, and the chunks are merged in order: an object already found by an earlier
/// chunk is dropped, and with a tree the whole subtree that the chunk found below it, as the
/// earlier chunk found all of that already. What remains is exactly what one sequential walk
/// would have found, in the same order.
///
/// Without `blobs`, blobs in trees are left out (`blob:none`); wanted blobs are still taken.
pub(super) fn collect_items<Find: gix_object::Find + Clone + Send>(
    db: &Find,
    items: &[Item],
    blobs: bool,
    threads: usize,
    trees: &mut TreeBuffers,
    should_interrupt: &AtomicBool,
    out: &mut Enumeration,
) -> Result<(), EnumerateError> {
    let chunks = threads.min(items.len() / MIN_ITEMS_PER_CHUNK);
    if threads <= 1 || chunks <= 1 {
        let interrupt = Interrupt {
            user: should_interrupt,
            abort: &AtomicBool::new(false),
        };
        let chunk = walk_chunk(db, items, blobs, &out.client_has, trees, interrupt)?;
        merge(out, chunk);
        return Ok(());
    }
    let chunk_len = items.len().div_ceil(chunks);
    let chunks: Vec<&[Item]> = items.chunks(chunk_len).collect();
    let next_chunk = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let interrupt = Interrupt {
        user: should_interrupt,
        abort: &abort,
    };
    let client_has = &out.client_has;
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::channel();
        for _ in 0..threads.min(chunks.len()) {
            let sender = sender.clone();
            let db = db.clone();
            let (chunks, next_chunk) = (&chunks, &next_chunk);
            scope.spawn(move || {
                let mut trees = TreeBuffers::default();
                loop {
                    let index = next_chunk.fetch_add(1, AtomicOrdering::Relaxed);
                    let Some(items) = chunks.get(index) else {
                        break;
                    };
                    let result = walk_chunk(&db, items, blobs, client_has, &mut trees, interrupt);
                    let failed = result.is_err();
                    if sender.send((index, result)).is_err() || failed {
                        break;
                    }
                }
            });
        }
        drop(sender);
        let mut walked: Vec<Option<Result<Chunk, EnumerateError>>> =
            chunks.iter().map(|_| None).collect();
        let mut next_to_merge = 0;
        let mut merged = Vec::new();
        for (index, result) in receiver {
            walked[index] = Some(result);
            while let Some(result) = walked.get_mut(next_to_merge).and_then(Option::take) {
                match result {
                    Ok(chunk) => merged.push(chunk),
                    Err(err) => {
                        abort.store(true, AtomicOrdering::Relaxed);
                        return Err(err);
                    }
                }
                next_to_merge += 1;
            }
        }
        // Every worker is done; a chunk that never arrived means a worker stopped early.
        if next_to_merge < chunks.len() {
            return Err(EnumerateError::Interrupted);
        }
        Ok(merged)
    })
    .map(|merged| {
        for chunk in merged {
            merge(out, chunk);
        }
    })
}

/// Add the objects of `chunk` that earlier chunks didn't find to `out`.
pub(super) fn merge(out: &mut Enumeration, chunk: Chunk) {
    if out.set.is_empty() {
        out.set = chunk.set;
        for found in &chunk.found {
            out.objects.push(found.id);
            found.kind.count(&mut out.counts);
        }
        return;
    }
    let mut index = 0;
    while let Some(found) = chunk.found.get(index) {
        if out.set.insert(found.id) {
            out.objects.push(found.id);
            found.kind.count(&mut out.counts);
            index += 1;
        } else {
            index = found.end as usize;
        }
    }
}

/// Why a walk should stop early.
#[derive(Clone, Copy)]
pub(super) struct Interrupt<'a> {
    /// The caller's flag.
    pub(super) user: &'a AtomicBool,
    /// Set when another thread failed.
    pub(super) abort: &'a AtomicBool,
}

impl Interrupt<'_> {
    pub(super) fn check(&self) -> Result<(), EnumerateError> {
        if self.user.load(AtomicOrdering::Relaxed) || self.abort.load(AtomicOrdering::Relaxed) {
            Err(EnumerateError::Interrupted)
        } else {
            Ok(())
        }
    }
}

/// The kind of a [`Found`] object.
#[derive(Debug, Clone, Copy)]
pub(super) enum FoundKind {
    Tag,
    Tree,
    Blob,
}

impl FoundKind {
    pub(super) fn count(self, counts: &mut Counts) {
        match self {
            FoundKind::Tag => counts.tags += 1,
            FoundKind::Tree => counts.trees += 1,
            FoundKind::Blob => counts.blobs += 1,
        }
    }
}

/// An object a chunk found.
#[derive(Debug, Clone, Copy)]
pub(super) struct Found {
    pub(super) id: ObjectId,
    /// The index in [`Chunk::found`] after this object's subtree: where to go on if an earlier
    /// chunk found this object already.
    pub(super) end: u32,
    pub(super) kind: FoundKind,
}

/// What one chunk of items found, in order.
pub(super) struct Chunk {
    pub(super) found: Vec<Found>,
    /// The ids in `found`.
    pub(super) set: HashSet<ObjectId>,
}

/// Walk `items` in order as if nothing was found before them.
pub(super) fn walk_chunk<Find: gix_object::Find>(
    db: &Find,
    items: &[Item],
    blobs: bool,
    client_has: &HashSet<ObjectId>,
    trees: &mut TreeBuffers,
    interrupt: Interrupt<'_>,
) -> Result<Chunk, EnumerateError> {
    let mut collector = Collector {
        client_has,
        blobs,
        chunk: Chunk {
            found: Vec::new(),
            set: HashSet::default(),
        },
        open_trees: Vec::new(),
    };
    for item in items {
        match *item {
            Item::Tag(id) => {
                collector.take(&id, FoundKind::Tag);
            }
            Item::Tree(id) | Item::CommitTree(id) => {
                trees.walk(db, id, Visit::Interesting(&mut collector), None, interrupt)?
            }
            Item::Blob(id) => {
                collector.take(&id, FoundKind::Blob);
            }
        }
    }
    Ok(collector.chunk)
}

/// Where interesting objects go.
pub(super) struct Collector<'a> {
    pub(super) client_has: &'a HashSet<ObjectId>,
    /// Whether blobs met in trees are taken.
    pub(super) blobs: bool,
    pub(super) chunk: Chunk,
    /// Indices in `chunk.found` of the trees whose subtree is being walked.
    pub(super) open_trees: Vec<u32>,
}

impl Collector<'_> {
    /// Record `id` if it is new and the client doesn't have it; `true` if it was recorded.
    #[inline]
    pub(super) fn take(&mut self, id: &oid, kind: FoundKind) -> bool {
        if self.client_has.contains(id) || !self.chunk.set.insert(id.to_owned()) {
            return false;
        }
        let found = &mut self.chunk.found;
        let end = u32::try_from(found.len() + 1).unwrap_or(u32::MAX);
        found.push(Found {
            id: id.to_owned(),
            end,
            kind,
        });
        true
    }
}

/// What a tree walk does with what it finds.
pub(super) enum Visit<'a, 'b> {
    /// Record unseen objects the client doesn't have, descending into new trees.
    Interesting(&'a mut Collector<'b>),
    /// Add objects to the client's set, descending into trees that weren't in it.
    Uninteresting(&'a mut HashSet<ObjectId>),
}

impl Visit<'_, '_> {
    /// Take a tree; `true` to descend into it.
    #[inline]
    pub(super) fn tree(&mut self, id: &oid) -> bool {
        match self {
            Visit::Interesting(collector) => {
                let taken = collector.take(id, FoundKind::Tree);
                if taken {
                    let index = collector.chunk.found.len() - 1;
                    collector
                        .open_trees
                        .push(u32::try_from(index).unwrap_or(u32::MAX));
                }
                taken
            }
            Visit::Uninteresting(client_has) => client_has.insert(id.to_owned()),
        }
    }

    /// The subtree of the last tree taken with `tree()` that isn't left yet is done.
    #[inline]
    pub(super) fn leave_tree(&mut self) {
        if let Visit::Interesting(collector) = self {
            if let Some(index) = collector.open_trees.pop() {
                let end = u32::try_from(collector.chunk.found.len()).unwrap_or(u32::MAX);
                collector.chunk.found[index as usize].end = end;
            }
        }
    }

    #[inline]
    pub(super) fn blob(&mut self, id: &oid) {
        match self {
            Visit::Interesting(collector) => {
                if collector.blobs {
                    collector.take(id, FoundKind::Blob);
                }
            }
            Visit::Uninteresting(client_has) => {
                client_has.insert(id.to_owned());
            }
        }
    }

    pub(super) fn is_interesting(&self) -> bool {
        matches!(self, Visit::Interesting(_))
    }
}

/// The share of a tree walk one of several threads does; see [`TreeBuffers::walk()`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Partition {
    pub(super) index: u64,
    pub(super) count: u64,
}

impl Partition {
    #[inline]
    pub(super) fn owns(self, hash: u64) -> bool {
        hash % self.count == self.index
    }
}

/// FNV-1a of `name`, continuing from `seed`: a path's first names decide which thread walks it.
#[inline]
pub(super) fn name_hash(seed: u64, name: &[u8]) -> u64 {
    let mut hash = seed ^ 0xcbf2_9ce4_8422_2325;
    for &byte in name {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Reusable state for depth-first tree walks: one buffer per depth.
#[derive(Default)]
pub(super) struct TreeBuffers {
    pub(super) buffers: Vec<Vec<u8>>,
    /// Per depth: the tree's id, the data range in the buffer of the same depth, and the
    /// position of the next entry.
    pub(super) stack: Vec<(ObjectId, Range<usize>)>,
}

impl TreeBuffers {
    /// Walk the tree `root` depth first, pre-order, as git's `process_tree()` does.
    ///
    /// Missing or unreadable trees are errors for interesting walks and skipped in
    /// uninteresting ones, like git does.
    ///
    /// With a `partition`, only the part of the tree this thread owns is walked: the root and
    /// the trees directly in it are walked by every thread, and below them each entry belongs
    /// to one thread, chosen by its path's first two names. Different threads walking the
    /// same roots together reach everything the roots reach.
    pub(super) fn walk<Find: gix_object::Find>(
        &mut self,
        db: &Find,
        root: ObjectId,
        mut visit: Visit<'_, '_>,
        partition: Option<Partition>,
        interrupt: Interrupt<'_>,
    ) -> Result<(), EnumerateError> {
        if !visit.tree(&root) {
            return Ok(());
        }
        let strict = visit.is_interesting();
        self.stack.clear();
        if let Some(range) = self.load(db, root, 0, strict)? {
            self.stack.push((root, range));
        }
        let hash_len = root.kind().len_in_bytes();
        // The hash of the name of the tree being walked at depth 1, for the partition.
        let mut branch = 0;
        while let Some(depth) = self.stack.len().checked_sub(1) {
            let (id, range) = &mut self.stack[depth];
            if range.start >= range.end {
                self.stack.pop();
                visit.leave_tree();
                continue;
            }
            let data = &self.buffers[depth][range.clone()];
            let (entry, rest) = match tree::next_entry(data, hash_len) {
                Ok(parsed) => parsed,
                Err(err) => {
                    return Err(EnumerateError::Corrupt {
                        id: *id,
                        kind: Kind::Tree,
                        reason: err.as_str(),
                    })
                }
            };
            range.start = range.end - rest.len();
            let kind = entry.kind();
            if let Some(partition) = partition {
                let owned = match (depth, kind) {
                    (0, EntryKind::Tree) => {
                        branch = name_hash(0, entry.name);
                        true
                    }
                    (0, _) => partition.owns(name_hash(0, entry.name)),
                    (1, _) => partition.owns(name_hash(branch, entry.name)),
                    _ => true,
                };
                if !owned {
                    continue;
                }
            }
            match kind {
                EntryKind::Tree => {
                    if visit.tree(entry.id) {
                        let child = entry.id.to_owned();
                        interrupt.check()?;
                        if let Some(range) = self.load(db, child, depth + 1, strict)? {
                            self.stack.push((child, range));
                        }
                    }
                }
                EntryKind::Blob => visit.blob(entry.id),
                EntryKind::Gitlink => {}
            }
        }
        Ok(())
    }

    /// Load tree `id` into the buffer for `depth`.
    pub(super) fn load<Find: gix_object::Find>(
        &mut self,
        db: &Find,
        id: ObjectId,
        depth: usize,
        strict: bool,
    ) -> Result<Option<Range<usize>>, EnumerateError> {
        if self.buffers.len() <= depth {
            self.buffers.resize_with(depth + 1, Vec::new);
        }
        match read_object(db, &id, &mut self.buffers[depth])? {
            Some((Kind::Tree, range)) => Ok(Some(range)),
            Some((actual, _)) if strict => Err(EnumerateError::WrongKind {
                id,
                expected: Kind::Tree,
                actual,
            }),
            None if strict => Err(EnumerateError::Missing { id }),
            Some(_) | None => Ok(None),
        }
    }
}

/// git's sparse marking of what the client has (`pack.useSparse`, `mark_trees_uninteresting_sparse()`):
/// `roots` are the root trees of the interesting commits and of the boundary, the boundary's
/// already in `client_has`. Trees are compared path by path: where one path has versions on
/// both sides, every version there is read, what the client's versions hold is marked as the
/// client's (their entries, not below them), and the subtrees are compared again one level
/// down. A path with versions on one side only is not read at all, which is what makes this
/// cheaper than walking the boundary's trees whole.
///
/// The price is git's: an object the client has only at another path than where the fetched
/// commits have it is not found, and is sent again.
pub(super) fn mark_sparse<Find: gix_object::Find>(
    db: &Find,
    roots: Vec<ObjectId>,
    client_has: &mut HashSet<ObjectId>,
    interrupt: Interrupt<'_>,
) -> Result<(), EnumerateError> {
    let mut buf = Vec::new();
    let mut groups = vec![roots];
    let mut subtrees: std::collections::HashMap<Vec<u8>, Vec<ObjectId>> =
        std::collections::HashMap::new();
    while let Some(group) = groups.pop() {
        interrupt.check()?;
        let clients = group.iter().filter(|id| client_has.contains(*id)).count();
        if clients == 0 || clients == group.len() {
            continue;
        }
        for id in &group {
            let clients_version = client_has.contains(id);
            let Some((Kind::Tree, range)) = read_object(db, id, &mut buf)? else {
                // Missing below the boundary is ignored, as git does; missing below a want
                // is reported by the walk that collects it.
                continue;
            };
            for entry in tree::entries(&buf[range], id.kind().len_in_bytes()) {
                let Ok(entry) = entry else {
                    break;
                };
                match entry.kind() {
                    EntryKind::Tree => {
                        if clients_version {
                            client_has.insert(entry.id.to_owned());
                        }
                        let versions = match subtrees.get_mut(entry.name) {
                            Some(versions) => versions,
                            None => subtrees.entry(entry.name.to_vec()).or_default(),
                        };
                        if !versions.iter().any(|version| version.as_ref() == entry.id) {
                            versions.push(entry.id.to_owned());
                        }
                    }
                    EntryKind::Blob => {
                        if clients_version {
                            client_has.insert(entry.id.to_owned());
                        }
                    }
                    EntryKind::Gitlink => {}
                }
            }
        }
        groups.extend(
            subtrees
                .drain()
                .map(|(_, versions)| versions)
                .filter(|versions| versions.len() > 1),
        );
    }
    Ok(())
}
