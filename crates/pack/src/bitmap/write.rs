//! Writing git's `.bitmap` (version 1) for a pack that holds everything reachable from the
//! repository's refs: what `git repack -adb` writes.
//!
//! The steps, as git's `pack-bitmap-write.c` takes them:
//!
//! 1. **Selection.** The commits reachable from the tips, newest first by committer date:
//!    all of them in a small repository (under 100); otherwise the newest 100, then one
//!    per window of commits whose width grows with age (up to 100 apart until the 20,000th
//!    commit, then wider, up to 5,000). In each window the first ref tip wins (git does that
//!    for `pack.preferBitmapTips`; here every tip is preferred), else the last merge, else the
//!    window's last commit.
//! 2. **Building.** Each selected commit's bitmap starts as a copy of the bitmap of the
//!    nearest selected commit down its first-parent line, then walks from the commit
//!    through every commit and tree not yet in it: one walk per stretch of history, not per
//!    bitmap. Dense bitmaps are kept only while a later one still starts from them; finished
//!    ones are stored EWAH-compressed.
//! 3. **XOR compression.** Each bitmap is stored as the XOR with one of the ten before it
//!    when that is smaller (git's rule), the offset in the entry.
//! 4. **The file**: header, the four type bitmaps, the entries in selection order, the lookup
//!    table and the name-hash cache when asked for, the trailing checksum; written to a
//!    temporary file and renamed.

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    time::Instant,
};

use gix_hash::ObjectId;
use gix_object::Kind;

use super::{
    bits::{encode_ewah, ewah_len},
    graph::{Decoder, PackGraph, DESCEND, GITLINK, MISSING},
    Bits, FLAG_FULL_DAG, FLAG_HASH_CACHE, FLAG_LOOKUP_TABLE,
};

/// Which optional parts of the bitmap file to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitmapWriteOptions {
    /// pack.writeBitmapHashCache (git default true): the name-hash extension.
    pub hash_cache: bool,
    /// pack.writeBitmapLookupTable (git 2.47 default false): the lookup table extension.
    pub lookup_table: bool,
}

impl Default for BitmapWriteOptions {
    /// git 2.47's defaults: the name-hash cache, no lookup table.
    fn default() -> Self {
        BitmapWriteOptions {
            hash_cache: true,
            lookup_table: false,
        }
    }
}

/// A bitmap file written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapWritten {
    /// The `.bitmap` file.
    pub path: PathBuf,
    /// How many commits have a bitmap in it.
    pub commits: u32,
}

/// Why a `.rev` or `.bitmap` file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BitmapWriteError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The pack's index could not be read.
    #[error("could not read pack index {path}: {message}")]
    Index {
        /// The `.idx` file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The pack could not be read, or does not belong to its index.
    #[error("could not read pack {path}: {message}")]
    Pack {
        /// The `.pack` file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The pack's objects are not named by SHA-1.
    #[error("only SHA-1 repositories are supported")]
    UnsupportedHash,
    /// More objects than a bitmap can number here (2³¹).
    #[error("too many objects in the pack for a bitmap")]
    TooManyObjects,
    /// Something reachable from the tips is not in the pack: git's "Packfile doesn't have
    /// full closure".
    #[error("failed to write bitmap index: packfile doesn't have full closure (object {id} is missing or refers to a missing object)")]
    NotClosed {
        /// The missing object, or the object whose reference leads out of the pack.
        id: ObjectId,
    },
    /// An object in the pack could not be read.
    #[error("object {id} in the pack: {message}")]
    Corrupt {
        /// The object.
        id: ObjectId,
        /// What is wrong with it.
        message: String,
    },
    /// A bug: the writer's own bookkeeping disagrees with itself.
    #[error("bitmap writer: {0}")]
    Internal(&'static str),
    /// The name hashes given are not one per object of the pack.
    #[error("{given} name hashes for a pack of {objects} objects")]
    NameHashes {
        /// How many were given.
        given: usize,
        /// How many objects the pack has.
        objects: usize,
    },
}

/// The most entries git looks back for an XOR base.
const XOR_SEARCH: usize = 10;

/// Write `pack-<hash>.bitmap` for the pack at `pack_path` (its .idx exists), which must be
/// closed under reachability from `tips` (a full repack). Commit selection as git's
/// `pack-bitmap-write.c` (every ref tip commit, then spaced commits), XOR-compressed bitmaps,
/// EWAH as git writes it. `name_hashes`, if given, is git's pack name-hash per object in the
/// pack's index (sorted-by-id) order, for the hash-cache extension.
/// `git rev-list --test-bitmap` / `--use-bitmap-index` and packgate's own reader accept it.
///
/// Without `name_hashes` no hash cache is written, whatever `options.hash_cache` says: the
/// hashes are of the paths the pack's writer found the objects at.
pub fn write_bitmap(
    pack_path: &Path,
    db: &impl gix_object::Find,
    tips: &[ObjectId],
    name_hashes: Option<&[u32]>,
    options: &BitmapWriteOptions,
) -> Result<BitmapWritten, BitmapWriteError> {
    let started = Instant::now();
    let index = crate::rev::open_index(&pack_path.with_extension("idx"))?;
    let objects = index.num_objects() as usize;
    if let Some(hashes) = name_hashes {
        if hashes.len() != objects {
            return Err(BitmapWriteError::NameHashes {
                given: hashes.len(),
                objects,
            });
        }
    }
    let graph = PackGraph::load(pack_path, index, db)?;
    let loaded = started.elapsed();
    let (commits, preferred) = reachable_commits(&graph, tips)?;
    let selected = select_commits(&graph, commits, &preferred);
    let (bitmaps, trees_parsed) = build(&graph, db, &selected)?;
    let built = started.elapsed();
    let entries = xor_compress(&bitmaps, objects)?;

    let hash_cache = options.hash_cache && name_hashes.is_some();
    let mut flags = FLAG_FULL_DAG;
    if hash_cache {
        flags |= FLAG_HASH_CACHE;
    }
    if options.lookup_table {
        flags |= FLAG_LOOKUP_TABLE;
    }
    let count = u32::try_from(selected.len()).map_err(|_| BitmapWriteError::TooManyObjects)?;
    let mut out = Vec::new();
    out.extend_from_slice(b"BITM");
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(graph.pack.index.pack_checksum().as_slice());
    for kind in [Kind::Commit, Kind::Tree, Kind::Blob, Kind::Tag] {
        let mut bits = Bits::with_capacity(objects);
        for (pos, _) in graph.kinds.iter().enumerate().filter(|(_, k)| **k == kind) {
            bits.set(pos);
        }
        // git sets type bits one by one: the stated size ends at the last one.
        let size = bits.ones().last().map_or(0, |last| last + 1);
        encode_ewah(bits.trimmed_words(), size as u32, &mut out);
    }
    let mut offsets = Vec::with_capacity(entries.len());
    for (&commit, (xor, ewah)) in selected.iter().zip(&entries) {
        offsets.push(out.len() as u64);
        out.extend_from_slice(&graph.pack.order[commit as usize].to_be_bytes());
        out.push(*xor);
        out.push(0);
        out.extend_from_slice(ewah);
    }
    if options.lookup_table {
        // Rows by the commit's index position; an XOR base named by its row.
        let mut rows: Vec<usize> = (0..selected.len()).collect();
        rows.sort_by_key(|&entry| graph.pack.order[selected[entry] as usize]);
        let mut row_of = vec![0u32; selected.len()];
        for (row, &entry) in rows.iter().enumerate() {
            row_of[entry] = row as u32;
        }
        for &entry in &rows {
            let xor = usize::from(entries[entry].0);
            let xor_row = if xor == 0 {
                u32::MAX
            } else {
                row_of[entry - xor]
            };
            out.extend_from_slice(&graph.pack.order[selected[entry] as usize].to_be_bytes());
            out.extend_from_slice(&offsets[entry].to_be_bytes());
            out.extend_from_slice(&xor_row.to_be_bytes());
        }
    }
    if let (true, Some(hashes)) = (hash_cache, name_hashes) {
        for hash in hashes {
            out.extend_from_slice(&hash.to_be_bytes());
        }
    }
    let path = pack_path.with_extension("bitmap");
    crate::rev::write_checksummed(&path, "tmp_bitmap_", out)?;
    tracing::debug!(
        bitmap = %path.display(),
        objects,
        commits = count,
        load_ms = loaded.as_millis() as u64,
        build_ms = (built - loaded).as_millis() as u64,
        trees_parsed,
        total_ms = started.elapsed().as_millis() as u64,
        "bitmap written"
    );
    Ok(BitmapWritten {
        path,
        commits: count,
    })
}

/// The commits reachable from `tips` (pack positions), and the tips' commits (tags peeled).
fn reachable_commits(
    graph: &PackGraph,
    tips: &[ObjectId],
) -> Result<(Vec<u32>, Bits), BitmapWriteError> {
    let n = graph.len();
    let mut seen = Bits::with_capacity(n);
    let mut preferred = Bits::with_capacity(n);
    let mut stack = Vec::new();
    for tip in tips {
        let mut pos = graph
            .position(tip)
            .ok_or(BitmapWriteError::NotClosed { id: *tip })?;
        // Tags of tags end somewhere: at most one step per object.
        for _ in 0..=n {
            match graph.kinds[pos as usize] {
                Kind::Tag => {
                    let target = graph.edges(pos).first().copied().unwrap_or(MISSING);
                    if target == MISSING {
                        return Err(BitmapWriteError::NotClosed { id: graph.id(pos) });
                    }
                    pos = target;
                }
                Kind::Commit => {
                    preferred.set(pos as usize);
                    if !seen.get(pos as usize) {
                        seen.set(pos as usize);
                        stack.push(pos);
                    }
                    break;
                }
                Kind::Tree | Kind::Blob => break,
            }
        }
    }
    let mut commits = Vec::new();
    while let Some(commit) = stack.pop() {
        commits.push(commit);
        for &parent in graph.edges(commit).iter().skip(1) {
            if parent == MISSING {
                return Err(BitmapWriteError::NotClosed {
                    id: graph.id(commit),
                });
            }
            if graph.kinds[parent as usize] != Kind::Commit {
                return Err(BitmapWriteError::Corrupt {
                    id: graph.id(commit),
                    message: "a parent is not a commit".into(),
                });
            }
            if !seen.get(parent as usize) {
                seen.set(parent as usize);
                stack.push(parent);
            }
        }
        if graph
            .edges(commit)
            .first()
            .is_none_or(|&tree| tree == MISSING)
        {
            return Err(BitmapWriteError::NotClosed {
                id: graph.id(commit),
            });
        }
    }
    Ok((commits, preferred))
}

/// How far the next selected commit is from the `index`th newest: git's
/// `next_commit_index()`.
fn next_commit_index(index: usize) -> usize {
    const MIN_COMMITS: usize = 100;
    const MAX_COMMITS: usize = 5000;
    const MUST_REGION: usize = 100;
    const MIN_REGION: usize = 20000;
    if index <= MUST_REGION {
        0
    } else if index <= MIN_REGION {
        (index - MUST_REGION).min(MIN_COMMITS)
    } else {
        (index - MIN_REGION).clamp(MIN_COMMITS, MAX_COMMITS)
    }
}

/// The commits that get a bitmap, in the order they are written: git's
/// `bitmap_writer_select_commits()` with every commit in `preferred` marked as needing one.
fn select_commits(graph: &PackGraph, mut commits: Vec<u32>, preferred: &Bits) -> Vec<u32> {
    // Newest first; among equal dates, the one earlier in the pack (git writes newer
    // commits first).
    commits.sort_unstable_by_key(|&c| (std::cmp::Reverse(graph.dates[c as usize]), c));
    if commits.len() < 100 {
        return commits;
    }
    let mut selected = Vec::new();
    let mut i = 0;
    loop {
        let next = next_commit_index(i);
        if i + next >= commits.len() {
            break;
        }
        let chosen = if next == 0 {
            commits[i]
        } else {
            let mut chosen = commits[i + next];
            for &candidate in &commits[i..=i + next] {
                if preferred.get(candidate as usize) {
                    chosen = candidate;
                    break;
                }
                if graph.edges(candidate).len() > 2 {
                    chosen = candidate;
                }
            }
            chosen
        };
        selected.push(chosen);
        i += next + 1;
    }
    selected
}

/// One selected commit's bitmap, EWAH-encoded, with its stated size in bits.
struct Encoded {
    bit_size: u32,
    ewah: Vec<u8>,
}

/// The bitmap of every selected commit (by its place in `selected`).
fn build(
    graph: &PackGraph,
    db: &impl gix_object::Find,
    selected: &[u32],
) -> Result<(Vec<Encoded>, usize), BitmapWriteError> {
    let n = graph.len();
    let mut decoder = Decoder::new(&graph.pack, db);
    let mut entry_of: HashMap<u32, usize> = HashMap::with_capacity(selected.len());
    for (entry, &commit) in selected.iter().enumerate() {
        entry_of.insert(commit, entry);
    }
    // Each bitmap starts from the nearest selected commit down the first-parent line.
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); selected.len()];
    let mut roots = Vec::new();
    for (entry, &commit) in selected.iter().enumerate() {
        let mut current = commit;
        let mut base = None;
        for _ in 0..n {
            match graph.edges(current).get(1) {
                Some(&parent) if parent != MISSING => {
                    if let Some(&found) = entry_of.get(&parent) {
                        base = Some(found);
                        break;
                    }
                    current = parent;
                }
                _ => break,
            }
        }
        match base {
            Some(base) => children[base].push(entry),
            None => roots.push(entry),
        }
    }
    let mut encoded: Vec<Option<Encoded>> = (0..selected.len()).map(|_| None).collect();
    // Bitmaps later ones start from, until the last of those is done.
    let mut kept: HashMap<usize, (Bits, usize)> = HashMap::new();
    let mut walk = Walk::default();
    let mut stack: Vec<(usize, Option<usize>)> =
        roots.into_iter().rev().map(|root| (root, None)).collect();
    while let Some((entry, base)) = stack.pop() {
        let mut bits = match base {
            None => Bits::with_capacity(n),
            Some(base) => {
                let (bits, waiting) = kept.get_mut(&base).ok_or(BitmapWriteError::Internal(
                    "a base bitmap was dropped early",
                ))?;
                *waiting -= 1;
                if *waiting == 0 {
                    kept.remove(&base).map(|(bits, _)| bits).unwrap_or_default()
                } else {
                    bits.clone()
                }
            }
        };
        walk.fill(graph, &mut decoder, &mut bits, selected[entry])?;
        let words = bits.trimmed_words();
        let bit_size = (words.len().max(1) * 64) as u32;
        let mut ewah = Vec::new();
        encode_ewah(words, bit_size, &mut ewah);
        encoded[entry] = Some(Encoded { bit_size, ewah });
        let next = &children[entry];
        if !next.is_empty() {
            kept.insert(entry, (bits, next.len()));
            stack.extend(next.iter().rev().map(|&child| (child, Some(entry))));
        }
    }
    let encoded = encoded
        .into_iter()
        .map(|e| {
            e.ok_or(BitmapWriteError::Internal(
                "a selected commit got no bitmap",
            ))
        })
        .collect::<Result<_, _>>()?;
    Ok((encoded, decoder.parsed))
}

/// The stacks of one bitmap's walk, kept between walks.
#[derive(Default)]
struct Walk {
    commits: Vec<u32>,
    trees: Vec<u32>,
    stack: Vec<u32>,
}

impl Walk {
    /// Add to `bits` everything reachable from `commit` that is not in it yet. Whatever is
    /// in `bits` already must be closed (a set commit's history and trees are all set).
    fn fill(
        &mut self,
        graph: &PackGraph,
        decoder: &mut Decoder<'_, impl gix_object::Find>,
        bits: &mut Bits,
        commit: u32,
    ) -> Result<(), BitmapWriteError> {
        let not_closed = |pos: u32| BitmapWriteError::NotClosed { id: graph.id(pos) };
        self.commits.clear();
        self.trees.clear();
        if !bits.get(commit as usize) {
            bits.set(commit as usize);
            self.commits.push(commit);
        }
        while let Some(commit) = self.commits.pop() {
            let edges = graph.edges(commit);
            let tree = *edges.first().ok_or_else(|| not_closed(commit))?;
            if tree == MISSING {
                return Err(not_closed(commit));
            }
            self.trees.push(tree & !DESCEND);
            for &parent in &edges[1..] {
                if parent == MISSING {
                    return Err(not_closed(commit));
                }
                if !bits.get(parent as usize) {
                    bits.set(parent as usize);
                    self.commits.push(parent);
                }
            }
        }
        for &tree in &self.trees {
            if bits.get(tree as usize) {
                continue;
            }
            bits.set(tree as usize);
            self.stack.push(tree);
            while let Some(tree) = self.stack.pop() {
                if graph.kinds[tree as usize] != Kind::Tree {
                    return Err(BitmapWriteError::Corrupt {
                        id: graph.id(tree),
                        message: "reached as a tree, but is not one".into(),
                    });
                }
                let decoded = decoder.tree(tree)?;
                for &edge in &decoded.edges {
                    match edge {
                        MISSING => return Err(not_closed(tree)),
                        GITLINK => continue,
                        _ => {}
                    }
                    let pos = (edge & !DESCEND) as usize;
                    if bits.get(pos) {
                        continue;
                    }
                    bits.set(pos);
                    if edge & DESCEND != 0 {
                        self.stack.push(edge & !DESCEND);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Each bitmap as written: its XOR offset and its EWAH, XORed with one of the
/// [`XOR_SEARCH`] before it when that is smaller.
fn xor_compress(
    bitmaps: &[Encoded],
    objects: usize,
) -> Result<Vec<(u8, Vec<u8>)>, BitmapWriteError> {
    let mut recent: VecDeque<(Bits, u32)> = VecDeque::with_capacity(XOR_SEARCH + 1);
    let mut scratch = Bits::default();
    let mut out = Vec::with_capacity(bitmaps.len());
    for bitmap in bitmaps {
        let (bits, _) = super::decode_ewah(&bitmap.ewah, objects)
            .map_err(|_| BitmapWriteError::Internal("a bitmap just encoded does not decode"))?;
        let mut best = (0usize, bitmap.ewah.len());
        for back in 1..=recent.len() {
            let (base, _) = &recent[recent.len() - back];
            scratch.set_xor_of(base, &bits);
            let len = ewah_len(scratch.trimmed_words());
            if len < best.1 {
                best = (back, len);
            }
        }
        let ewah = match best.0 {
            0 => bitmap.ewah.clone(),
            back => {
                let (base, base_size) = &recent[recent.len() - back];
                scratch.set_xor_of(base, &bits);
                let mut ewah = Vec::with_capacity(best.1);
                encode_ewah(
                    scratch.trimmed_words(),
                    bitmap.bit_size.max(*base_size),
                    &mut ewah,
                );
                ewah
            }
        };
        out.push((best.0 as u8, ewah));
        recent.push_back((bits, bitmap.bit_size));
        if recent.len() > XOR_SEARCH {
            recent.pop_front();
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
