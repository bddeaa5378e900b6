//! Counting the objects of a fetch with bitmaps, as git's `prepare_bitmap_walk` does.
//!
//! The objects to send are everything reachable from the wants minus everything reachable
//! from the haves. Each side is the OR of its commits' bitmaps; from a commit without one
//! (newer than the last repack, or not selected for a bitmap) the commits are walked until
//! ones with a bitmap or already counted, and their trees read, skipping each tree already
//! counted (a counted tree's whole contents are counted: every set is closed under
//! reachability). Objects outside the bitmapped pack (loose, or in newer packs) get
//! positions after the pack's, as git's "extended index" does.
//!
//! The haves are counted first; the wants' walk stops at whatever the haves reach too.
//! This is tighter than the walk's `rev-list --objects` semantics: an object the client has
//! anywhere in its history is not sent again, even if no boundary commit holds it.

use std::sync::{atomic::AtomicBool, Arc};

use gix_hash::{oid, ObjectId};
use gix_hashtable::HashMap;
use gix_object::Kind;

use super::{BitmapError, Bits, PackBitmap};
use crate::{enumerate::EnumerateError, filter::Filter};

/// Why counting with bitmaps stopped.
#[derive(Debug, thiserror::Error)]
pub enum CountError {
    /// The bitmap turned out unusable: count by walking instead.
    #[error(transparent)]
    Bitmap(#[from] BitmapError),
    /// Reading the repository failed, or a want is missing: the same error the walk gives.
    #[error(transparent)]
    Walk(#[from] EnumerateError),
}

/// Whether counting with bitmaps gives exactly what the walk gives under `filter`.
pub fn supports(filter: Option<&Filter>) -> bool {
    matches!(
        filter,
        None | Some(Filter::BlobNone) | Some(Filter::TreeDepth(0))
    )
}

/// The result of [`count()`]: which objects to send, which the client has.
#[derive(Debug, Clone)]
pub struct Counted {
    bitmap: Arc<PackBitmap>,
    /// The objects to send.
    send: Bits,
    /// Everything reachable from the haves.
    haves: Bits,
    /// Objects outside the bitmapped pack, at positions `num_objects()..`.
    extended: Vec<(ObjectId, Kind)>,
    extended_at: HashMap<ObjectId, u32>,
    /// Under a filter the client may lack trees and blobs below its commits: only commits
    /// and the haves themselves count as the client's.
    commits_only: bool,
    have_tips: Vec<ObjectId>,
}

impl Counted {
    fn position(&self, id: &oid) -> Option<usize> {
        self.bitmap.position(id).or_else(|| {
            self.extended_at
                .get(id)
                .map(|&n| self.bitmap.num_objects() + n as usize)
        })
    }

    fn kind_at(&self, position: usize) -> Option<Kind> {
        match position.checked_sub(self.bitmap.num_objects()) {
            Some(n) => self.extended.get(n).map(|(_, kind)| *kind),
            None => self.bitmap.kind_at(position),
        }
    }

    /// Whether `id` is to be sent.
    pub fn sends(&self, id: &oid) -> bool {
        self.position(id).is_some_and(|n| self.send.get(n))
    }

    /// Whether the client is known to have `id` (a thin pack may use it as a base).
    pub fn client_has(&self, id: &oid) -> bool {
        if self.commits_only {
            return self.have_tips.iter().any(|tip| tip.as_ref() == id)
                || self
                    .position(id)
                    .is_some_and(|n| self.haves.get(n) && self.kind_at(n) == Some(Kind::Commit));
        }
        self.position(id).is_some_and(|n| self.haves.get(n))
    }

    /// The checksum of the bitmapped pack when the objects to send are exactly its objects
    /// (every one of them, nothing outside it): a clone of a fully bitmapped repository.
    pub fn sends_whole_pack(&self) -> Option<ObjectId> {
        let pack_objects = self.bitmap.num_objects();
        let outside = (0..self.extended.len())
            .filter(|n| self.send.get(pack_objects + n))
            .count();
        let checksum = self.bitmap.pack_checksum()?;
        (outside == 0 && self.send.count() == pack_objects).then(|| checksum.to_owned())
    }

    /// How many objects the client is known to have.
    pub fn client_has_len(&self) -> usize {
        self.haves.count()
    }

    /// How many objects of each kind are to be sent, from the bits alone.
    pub fn counts(&self) -> crate::Counts {
        let mut counts = crate::Counts {
            commits: self.send.count_and(self.bitmap.of_kind(Kind::Commit)),
            tags: self.send.count_and(self.bitmap.of_kind(Kind::Tag)),
            trees: self.send.count_and(self.bitmap.of_kind(Kind::Tree)),
            blobs: self.send.count_and(self.bitmap.of_kind(Kind::Blob)),
        };
        let pack_objects = self.bitmap.num_objects();
        for (n, (_, kind)) in self.extended.iter().enumerate() {
            if self.send.get(pack_objects + n) {
                tally(&mut counts, *kind);
            }
        }
        counts
    }

    /// The objects to send: commits first (those found by walking, then the pack's in pack
    /// order, which is newest first in packs git wrote), then tags, trees and blobs.
    pub fn objects(&self) -> (Vec<ObjectId>, crate::Counts) {
        let mut commits = Vec::new();
        let mut rest = Vec::new();
        let mut counts = crate::Counts::default();
        let pack_objects = self.bitmap.num_objects();
        for (n, (id, kind)) in self.extended.iter().enumerate() {
            if self.send.get(pack_objects + n) {
                tally(&mut counts, *kind);
                if *kind == Kind::Commit {
                    commits.push(*id);
                } else {
                    rest.push(*id);
                }
            }
        }
        let commit_bits = self.bitmap.of_kind(Kind::Commit);
        for n in self.send.ones().take_while(|&n| n < pack_objects) {
            let Some(id) = self.bitmap.id_at(n) else {
                continue;
            };
            if commit_bits.get(n) {
                counts.commits += 1;
                commits.push(id);
            } else {
                tally(&mut counts, self.bitmap.kind_at(n).unwrap_or(Kind::Blob));
                rest.push(id);
            }
        }
        commits.extend(rest);
        (commits, counts)
    }
}

fn tally(counts: &mut crate::Counts, kind: Kind) {
    match kind {
        Kind::Commit => counts.commits += 1,
        Kind::Tag => counts.tags += 1,
        Kind::Tree => counts.trees += 1,
        Kind::Blob => counts.blobs += 1,
    }
}

/// Count what a fetch of `wants` by a client with `haves` must send, with `bitmap`.
///
/// Wants and haves resolve as in [`crate::enumerate()`]: tags are sent and peeled, a missing
/// want is an error, a missing have (or anything missing below one) is ignored. `filter` must
/// be one [`supports()`] allows.
pub fn count<Find: gix_object::Find + gix_object::FindHeader>(
    bitmap: &Arc<PackBitmap>,
    db: &Find,
    wants: &[ObjectId],
    haves: &[ObjectId],
    filter: Option<&Filter>,
    should_interrupt: &AtomicBool,
) -> Result<Counted, CountError> {
    if !supports(filter) {
        return Err(BitmapError::Unsupported("filter").into());
    }
    let mut counter = Counter {
        bitmap,
        db,
        should_interrupt,
        resolved: Default::default(),
        extended: Vec::new(),
        extended_at: HashMap::default(),
        buf: Vec::new(),
        named_trees: false,
        named_blobs: Vec::new(),
        found: HashMap::default(),
    };
    let no_haves = Bits::default();
    let have_bits = if haves.is_empty() {
        no_haves.clone()
    } else {
        counter.reach(haves, false, &no_haves)?
    };
    let mut send = counter.reach(wants, true, &have_bits)?;
    send.and_not(&have_bits);
    if let Some(filter) = filter {
        if counter.named_trees {
            // A wanted tree is sent whatever the filter says, its entries not: leave that
            // to the walk.
            return Err(BitmapError::Unsupported("filter with a tree wanted").into());
        }
        let mut leave_out: Vec<Kind> = vec![Kind::Blob];
        if matches!(filter, Filter::TreeDepth(0)) {
            leave_out.push(Kind::Tree);
        }
        for kind in &leave_out {
            send.and_not(bitmap.of_kind(*kind));
        }
        let pack_objects = bitmap.num_objects();
        for (n, (_, kind)) in counter.extended.iter().enumerate() {
            if leave_out.contains(kind) && send.get(pack_objects + n) {
                let mut one = Bits::default();
                one.set(pack_objects + n);
                send.and_not(&one);
            }
        }
        // A wanted blob is sent whatever the filter says, unless the client has it.
        for &at in &counter.named_blobs {
            if !have_bits.get(at) {
                send.set(at);
            }
        }
    }
    Ok(Counted {
        bitmap: Arc::clone(bitmap),
        send,
        haves: have_bits,
        extended: counter.extended,
        extended_at: counter.extended_at,
        commits_only: filter.is_some(),
        have_tips: haves.to_vec(),
    })
}

struct Counter<'a, Find> {
    bitmap: &'a PackBitmap,
    db: &'a Find,
    should_interrupt: &'a AtomicBool,
    resolved: std::collections::HashMap<u32, Arc<Bits>>,
    extended: Vec<(ObjectId, Kind)>,
    extended_at: HashMap<ObjectId, u32>,
    buf: Vec<u8>,
    /// A want named (or peeled to) a tree.
    named_trees: bool,
    /// The positions of blobs wants named (or peeled to).
    named_blobs: Vec<usize>,
    /// Pack positions looked up so far: the trees of the commits a boundary walk reads share
    /// most entries (a wide root tree repeats in every commit), and a lookup in this small
    /// table costs a fraction of one in the pack index.
    found: HashMap<ObjectId, usize>,
}

impl<Find: gix_object::Find + gix_object::FindHeader> Counter<'_, Find> {
    /// The position of `id` of `kind`: in the pack, or a new or known extended one.
    fn position(&mut self, id: &oid, kind: Kind) -> usize {
        if let Some(&n) = self.found.get(id) {
            return n;
        }
        if let Some(n) = self.bitmap.position(id) {
            self.found.insert(id.to_owned(), n);
            return n;
        }
        let next = self.extended.len() as u32;
        let n = *self.extended_at.entry(id.to_owned()).or_insert_with(|| {
            self.extended.push((id.to_owned(), kind));
            next
        });
        self.bitmap.num_objects() + n as usize
    }

    fn interrupted(&self) -> Result<(), CountError> {
        if self
            .should_interrupt
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(EnumerateError::Interrupted.into());
        }
        Ok(())
    }

    /// Everything reachable from `roots`, skipping what `seen` holds (and is closed).
    /// For wants (`strict`) anything missing is an error, for haves it is left out.
    fn reach(&mut self, roots: &[ObjectId], strict: bool, seen: &Bits) -> Result<Bits, CountError> {
        let mut bits = Bits::with_capacity(self.bitmap.num_objects());
        let mut commits: Vec<ObjectId> = Vec::new();
        let mut trees: Vec<ObjectId> = Vec::new();
        for root in roots {
            let mut id = *root;
            let mut first = true;
            loop {
                let kind = match crate::enumerate::header_kind(self.db, &id)? {
                    Some(kind) => kind,
                    None if !strict => break,
                    None if first => return Err(EnumerateError::WantNotFound { id }.into()),
                    None => return Err(EnumerateError::Missing { id }.into()),
                };
                first = false;
                match kind {
                    Kind::Tag => {
                        let at = self.position(&id, Kind::Tag);
                        bits.set(at);
                        let Some((_, range)) =
                            crate::enumerate::read_object(self.db, &id, &mut self.buf)?
                        else {
                            if strict {
                                return Err(EnumerateError::Missing { id }.into());
                            }
                            break;
                        };
                        match packgate_object::tag_target(&self.buf[range]) {
                            Some(target) => id = target,
                            None if strict => {
                                return Err(EnumerateError::Corrupt {
                                    id,
                                    kind,
                                    reason: "no valid 'object' line",
                                }
                                .into())
                            }
                            None => break,
                        }
                    }
                    Kind::Commit => {
                        commits.push(id);
                        break;
                    }
                    Kind::Tree => {
                        self.named_trees |= strict;
                        trees.push(id);
                        break;
                    }
                    Kind::Blob => {
                        let at = self.position(&id, Kind::Blob);
                        if strict {
                            self.named_blobs.push(at);
                        }
                        bits.set(at);
                        break;
                    }
                }
            }
        }
        // Commits first: their bitmaps cover most trees the walked ones share.
        let mut walked = 0usize;
        let (mut commits_walked, mut bitmaps_used) = (0usize, 0usize);
        // The roots' own bitmaps first: what one covers need not be walked from another
        // root (many ref tips of a clone lead to commits other tips' bitmaps hold).
        for commit in &commits {
            if let Some(entry) = self.bitmap.entry_of(commit) {
                let at = self.position(commit, Kind::Commit);
                if !bits.get(at) && !seen.get(at) {
                    let reachable = self.bitmap.bitmap(entry, &mut self.resolved)?;
                    bits.or(&reachable);
                    bitmaps_used += 1;
                }
            }
        }

        while let Some(commit) = commits.pop() {
            let at = self.position(&commit, Kind::Commit);
            if bits.get(at) || seen.get(at) {
                continue;
            }
            if let Some(entry) = self.bitmap.entry_of(&commit) {
                let reachable = self.bitmap.bitmap(entry, &mut self.resolved)?;
                bits.or(&reachable);
                bitmaps_used += 1;
                continue;
            }
            walked += 1;
            commits_walked += 1;
            if walked.is_multiple_of(1024) {
                self.interrupted()?;
            }
            bits.set(at);
            let Some((kind, range)) =
                crate::enumerate::read_object(self.db, &commit, &mut self.buf)?
            else {
                if strict {
                    return Err(EnumerateError::Missing { id: commit }.into());
                }
                continue;
            };
            if kind != Kind::Commit {
                return Err(EnumerateError::WrongKind {
                    id: commit,
                    expected: Kind::Commit,
                    actual: kind,
                }
                .into());
            }
            let header = match packgate_object::CommitHeader::parse(
                &self.buf[range],
                gix_hash::Kind::Sha1,
            ) {
                Ok(header) => header,
                Err(_) if !strict => continue,
                Err(_) => {
                    return Err(EnumerateError::Corrupt {
                        id: commit,
                        kind,
                        reason: "unparsable commit",
                    }
                    .into())
                }
            };
            trees.push(header.tree);
            commits.extend(header.parents());
        }
        let mut entries: Vec<(ObjectId, bool)> = Vec::new();
        while let Some(tree) = trees.pop() {
            let at = self.position(&tree, Kind::Tree);
            if bits.get(at) || seen.get(at) {
                continue;
            }
            walked += 1;
            if walked.is_multiple_of(1024) {
                self.interrupted()?;
            }
            bits.set(at);
            let Some((kind, range)) = crate::enumerate::read_object(self.db, &tree, &mut self.buf)?
            else {
                if strict {
                    return Err(EnumerateError::Missing { id: tree }.into());
                }
                continue;
            };
            if kind != Kind::Tree {
                return Err(EnumerateError::WrongKind {
                    id: tree,
                    expected: Kind::Tree,
                    actual: kind,
                }
                .into());
            }
            entries.clear();
            for entry in packgate_object::tree::entries(&self.buf[range], 20) {
                let Ok(entry) = entry else {
                    if strict {
                        return Err(EnumerateError::Corrupt {
                            id: tree,
                            kind,
                            reason: "unparsable tree",
                        }
                        .into());
                    }
                    break;
                };
                match entry.kind() {
                    packgate_object::tree::EntryKind::Tree => {
                        entries.push((entry.id.to_owned(), true))
                    }
                    packgate_object::tree::EntryKind::Blob => {
                        entries.push((entry.id.to_owned(), false))
                    }
                    packgate_object::tree::EntryKind::Gitlink => {}
                }
            }
            for (id, is_tree) in entries.drain(..) {
                if is_tree {
                    trees.push(id);
                } else {
                    let at = self.position(&id, Kind::Blob);
                    bits.set(at);
                }
            }
        }
        tracing::debug!(
            wants = strict,
            commits_walked,
            trees_read = walked - commits_walked,
            bitmaps_used,
            "bitmap boundary walked"
        );
        Ok(bits)
    }
}
