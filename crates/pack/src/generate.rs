//! Pack generation: turn an enumerated object set into a pack data stream.
//!
//! Entries are taken from the repository's own packs where possible (existing deltas are
//! reused as they are), several threads resolve and copy entries, and the pack is written
//! chunk by chunk into any [`std::io::Write`]: a slow writer slows generation down instead of
//! making it buffer the whole pack.
//!
//! Thin packs: gitoxide's copier turns an out-of-pack delta base into a ref-delta no matter
//! who has that base. A client can only resolve a base it is known to have, so every such
//! entry whose base is not in [`WriteOptions::client_has`] is replaced by the full object.
//!
//! Computed deltas: gitoxide reuses the deltas stored in the repository's packs but cannot make
//! new ones, so objects that are stored whole — typically the newest version of each file, and
//! loose objects — would be sent whole, even to a client that has the previous version. With
//! [`WriteOptions::delta_search`], every entry that is about to be written whole is tried
//! against other versions of its path (see [`crate::delta`]): versions the client has (a thin
//! pack's *preferred bases*, referenced by id) and versions written earlier in this pack
//! (referenced by offset, or by id without `ofs-delta`). Entries whose stored delta is reused
//! are left alone, so no delta chain can loop.

use std::{io::Write, sync::atomic::AtomicBool};

use gix_hash::ObjectId;
use gix_hashtable::{HashMap, HashSet};
use gix_pack::data::output::{self, entry::Kind};

use crate::{
    delta::DeltaIndex,
    search::{CollectLimits, PathVersions},
};

/// How to write a pack.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions<'a> {
    /// Objects the client is known to have: the only bases a ref-delta may point at.
    /// `None` means the client did not ask for a thin pack, so every delta base is in the pack.
    pub client_has: Option<&'a HashSet<ObjectId>>,
    /// The client understands offset deltas (`ofs-delta`); without it in-pack deltas are
    /// written as ref-deltas.
    pub ofs_delta: bool,
    /// The most threads to use; `None` uses every core.
    pub thread_limit: Option<usize>,
    /// Compute deltas for objects that would be written whole; `None` only reuses stored
    /// deltas.
    pub delta_search: Option<DeltaSearch<'a>>,
    /// Where to read a stored delta's object in full when its base can't be sent (a thin
    /// pack's base the client lacks): give the enumeration's [`crate::reader::CachingReader`]
    /// and chains are resolved through its delta-base cache, as git's is; `None` reads
    /// through the handle, each chain from its base.
    pub reader: Option<&'a crate::reader::CachingReader>,
}

/// Where and how hard to look for delta bases of objects that would be written whole.
#[derive(Debug, Clone, Copy)]
pub struct DeltaSearch<'a> {
    /// The commits among the objects to pack, most recent first. Their trees are compared with
    /// their parents' to learn which objects are versions of the same path.
    pub commits: &'a [ObjectId],
    /// Of those, how many are compared with their parents (the most recent ones).
    pub max_commits: usize,
    /// The most trees read while comparing.
    pub max_trees: usize,
    /// The most bases tried per object (git's `pack.window`).
    pub window: usize,
    /// Objects and bases larger than this are not searched (git's `pack.bigFileThreshold`
    /// plays that role, at 512 MiB).
    pub max_object_size: usize,
    /// The most deltas computed in all, tried or kept: a bound on the work for one pack.
    pub max_attempts: usize,
    /// The longest delta chain a computed delta may extend within the pack (git's
    /// `pack.depth`).
    pub max_depth: u16,
}

impl<'a> DeltaSearch<'a> {
    /// git's limits where it has them, and bounds that keep the search of a clone short.
    pub fn new(commits: &'a [ObjectId]) -> Self {
        DeltaSearch {
            commits,
            max_commits: 100,
            max_trees: 1_000,
            window: 10,
            max_object_size: 16 << 20,
            max_attempts: 2_000,
            max_depth: 50,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Objects in the pack.
    pub objects: u32,
    /// Of those, entries written as deltas.
    pub deltas: u32,
    /// Entries that had to be inflated again because their delta base was not usable.
    pub recompressed_for_thin_pack: u32,
    /// Of the deltas, those computed here rather than copied from the repository's packs.
    pub computed_deltas: u32,
    /// Bytes written, including header and trailer.
    pub bytes: u64,
    /// The pack's trailing checksum.
    pub checksum: ObjectId,
}

/// The error returned by [`write_pack()`].
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// More objects than a pack header can count.
    #[error("{count} objects do not fit into one pack")]
    TooManyObjects {
        /// How many objects were asked for.
        count: usize,
    },
    /// An object to be packed is not in the repository.
    #[error("object {id} is missing from the repository")]
    MissingObject {
        /// The missing object.
        id: ObjectId,
    },
    /// Objects to be packed could not be found while copying entries.
    #[error("objects to be packed are missing from the repository")]
    MissingObjects,
    /// Reading objects or pack entries failed.
    #[error("could not read objects while generating the pack")]
    Read(#[source] gix_error::Error),
    /// `should_interrupt` was set.
    #[error("pack generation was interrupted")]
    Interrupted,
    /// Writing the pack failed, usually because the client went away.
    #[error("could not write the pack")]
    Write(#[source] gix_error::Error),
}

/// Write a pack holding exactly `objects` from `db` into `out`.
///
/// `objects` must not contain duplicates; their order does not matter (entries that can be
/// copied from existing packs are written in pack order for locality).
pub fn write_pack<W: Write>(
    db: &gix_odb::Handle,
    objects: &[ObjectId],
    options: &WriteOptions<'_>,
    out: W,
    should_interrupt: &AtomicBool,
) -> Result<WriteOutcome, WriteError> {
    let num_objects = u32::try_from(objects.len()).map_err(|_| WriteError::TooManyObjects {
        count: objects.len(),
    })?;
    let mut db = db.clone();
    db.prevent_pack_unload();
    db.ignore_replacements = true;

    let counts: Vec<output::Count> = objects
        .iter()
        .map(|id| output::Count {
            id: *id,
            entry_pack_location: output::count::PackLocation::NotLookedUp,
        })
        .collect();
    let entries = output::entry::iter_from_counts(
        counts,
        db.clone(),
        Box::new(gix_utils::progress::Discard),
        output::entry::iter_from_counts::Options {
            thread_limit: options.thread_limit,
            mode: output::entry::iter_from_counts::Mode::PackCopyAndBaseObjects,
            // Without anything the client has, no base can stay out of the pack, and a thin pack
            // only costs gix a table of every offset in the source pack.
            allow_thin_pack: options.client_has.is_some_and(|has| !has.is_empty()),
            chunk_size: 64,
            version: gix_pack::data::Version::V2,
            compression: gix_zlib::Compression::DEFAULT,
        },
    )
    .map_err(WriteError::Read)?;

    let searcher = options.delta_search.and_then(|search| {
        // Not a `CachingReader`: its first ofs-delta in a pack sorts all of the pack's offsets,
        // which costs more than the few chains resolved here. The handle's pack cache (if the
        // caller gave it one) serves them.
        let reader = db.clone();
        let started = std::time::Instant::now();
        let paths = PathVersions::collect(
            &reader,
            search.commits,
            CollectLimits {
                commits: search.max_commits,
                trees: search.max_trees,
            },
        );
        tracing::debug!(
            trees_read = paths.trees_read(),
            objects = paths.len(),
            elapsed = ?started.elapsed(),
            "collected path versions"
        );
        (!paths.is_empty()).then(|| DeltaSearcher {
            options: search,
            paths,
            reader,
            attempts: 0,
            written: HashMap::default(),
        })
    });
    let mut fixer = EntryFixer {
        db: &db,
        reader: options.reader,
        client_has: options.client_has,
        ofs_delta: options.ofs_delta,
        written_ids: Vec::with_capacity(objects.len()),
        depths: Vec::with_capacity(objects.len()),
        deltas: 0,
        recompressed: 0,
        computed: 0,
        buf: Vec::new(),
        error: None,
        searcher,
    };
    let in_order = gix_parallel::InOrderIter::from(entries);
    let fixed = in_order.map(|chunk| {
        let chunk = chunk?;
        fixer.fix_chunk(chunk)
    });
    let mut writer = output::bytes::FromEntriesIter::new(
        fixed,
        OutputErrors {
            inner: out,
            failed: false,
        },
        num_objects,
        gix_pack::data::Version::V2,
        gix_hash::Kind::Sha1,
    );
    let mut bytes = 0;
    for written in &mut writer {
        if should_interrupt.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(WriteError::Interrupted);
        }
        match written {
            Ok(n) => bytes += n,
            Err(err) => {
                // The writer reports input and output failures alike; tell them apart, since
                // only a failed read is worth telling the client about.
                let output_failed = writer.into_write().failed;
                return Err(if output_failed {
                    WriteError::Write(err)
                } else {
                    fixer.error.take().unwrap_or(WriteError::Read(err))
                });
            }
        }
    }
    let checksum = writer.digest().ok_or_else(|| {
        WriteError::Write(gix_error::message("pack writer ended without a trailer").into())
    })?;
    drop(writer);
    Ok(WriteOutcome {
        objects: num_objects,
        deltas: fixer.deltas,
        recompressed_for_thin_pack: fixer.recompressed,
        computed_deltas: fixer.computed,
        bytes,
        checksum,
    })
}

/// Remembers whether writing to the output failed.
struct OutputErrors<W> {
    inner: W,
    failed: bool,
}

impl<W: Write> Write for OutputErrors<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).inspect_err(|_| self.failed = true)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

/// Post-processes entries in pack order, on the writing thread.
struct EntryFixer<'a> {
    db: &'a gix_odb::Handle,
    reader: Option<&'a crate::reader::CachingReader>,
    client_has: Option<&'a HashSet<ObjectId>>,
    ofs_delta: bool,
    /// Ids of the entries written so far, by index: resolves in-pack delta bases.
    written_ids: Vec<ObjectId>,
    /// The delta chain length of the entries written so far, by index, counting bases
    /// outside the pack as whole objects; [`UNKNOWN_DEPTH`] if it can't be told.
    depths: Vec<u16>,
    deltas: u32,
    recompressed: u32,
    computed: u32,
    buf: Vec<u8>,
    error: Option<WriteError>,
    searcher: Option<DeltaSearcher<'a>>,
}

/// The depth of an entry whose chain can't be followed: never a base for a computed delta.
const UNKNOWN_DEPTH: u16 = u16::MAX;

/// Git skips objects this small in its delta search: a delta would hardly be smaller.
const MIN_DELTA_TARGET: usize = 50;

/// State of the delta search while the pack is written.
struct DeltaSearcher<'a> {
    options: DeltaSearch<'a>,
    paths: PathVersions,
    reader: gix_odb::Handle,
    attempts: usize,
    /// Of the entries written so far, those with a recorded path: their index.
    written: HashMap<ObjectId, usize>,
}

/// A computed delta: the base, how to name it, and the delta data.
struct Found {
    kind: Kind,
    depth: u16,
    data: Vec<u8>,
}

impl DeltaSearcher<'_> {
    /// The smallest delta for the whole-object `entry` (a tree or blob) against other
    /// versions of its path, smaller than half the object and than the entry itself.
    fn search(
        &mut self,
        entry: &output::Entry,
        client_has: Option<&HashSet<ObjectId>>,
        depths: &[u16],
        ofs_delta: bool,
    ) -> Option<Found> {
        let (id, whole_size) = (&entry.id, entry.compressed_data.len());
        let Kind::Base(target_kind) = entry.kind else {
            return None;
        };
        if entry.decompressed_size < MIN_DELTA_TARGET
            || entry.decompressed_size > self.options.max_object_size
        {
            return None;
        }
        if self.attempts >= self.options.max_attempts || !self.paths.contains(id) {
            return None;
        }
        let mut bases: Vec<(ObjectId, Kind, u16)> = Vec::new();
        for version in self.paths.other_versions(id) {
            if bases.len() >= self.options.window {
                break;
            }
            if client_has.is_some_and(|has| has.contains(version)) {
                bases.push((*version, Kind::DeltaOid { id: *version }, 1));
            } else if let Some(&index) = self.written.get(version) {
                let depth = depths.get(index).copied().unwrap_or(UNKNOWN_DEPTH);
                if depth >= self.options.max_depth {
                    continue;
                }
                let kind = if ofs_delta {
                    Kind::DeltaRef {
                        object_index: index,
                    }
                } else {
                    Kind::DeltaOid { id: *version }
                };
                bases.push((*version, kind, depth + 1));
            }
        }
        if bases.is_empty() {
            return None;
        }
        // The entry holds the object whole: inflating it beats looking it up again.
        let target = match self.paths.cached_tree(id) {
            Some(tree) => std::borrow::Cow::Borrowed(tree),
            None => std::borrow::Cow::Owned(inflate(entry)?),
        };
        let mut best: Option<Found> = None;
        for (base_id, kind, depth) in bases {
            if self.attempts >= self.options.max_attempts {
                break;
            }
            let Some(base) = read_version(&self.paths, &self.reader, &base_id) else {
                continue;
            };
            if base.0 != target_kind
                || base.1.len() > self.options.max_object_size
                || target.len() < base.1.len() / 32
            {
                continue;
            }
            // Smaller than half the object, than the entry as it would be written, and than
            // the best so far.
            let limit = (target.len() / 2)
                .min(whole_size)
                .min(best.as_ref().map_or(usize::MAX, |best| best.data.len() - 1));
            self.attempts += 1;
            if let Some(data) = DeltaIndex::new(&base.1).delta(&target, limit) {
                best = Some(Found { kind, depth, data });
            }
        }
        best
    }
}

impl EntryFixer<'_> {
    fn fix_chunk(
        &mut self,
        mut chunk: Vec<output::Entry>,
    ) -> gix_error::Result<Vec<output::Entry>> {
        for entry in &mut chunk {
            if entry.is_invalid() {
                // `iter_from_counts` marks objects it could not find as invalid; writing on would
                // produce a pack with fewer objects than its header says.
                self.error = Some(WriteError::MissingObjects);
                return Err(gix_error::message("object missing while generating the pack").into());
            }
            let mut depth = 0;
            match entry.kind {
                Kind::Base(_) => {}
                Kind::DeltaRef { object_index } => {
                    self.deltas += 1;
                    depth = self
                        .depths
                        .get(object_index)
                        .map_or(UNKNOWN_DEPTH, |base| base.saturating_add(1));
                    if !self.ofs_delta {
                        let Some(base) = self.written_ids.get(object_index) else {
                            return Err(gix_error::message(
                                "delta base index beyond written entries",
                            )
                            .into());
                        };
                        entry.kind = Kind::DeltaOid { id: *base };
                    }
                }
                Kind::DeltaOid { id } => {
                    let usable = self.client_has.is_some_and(|has| has.contains(&id));
                    if usable {
                        self.deltas += 1;
                        depth = 1;
                    } else {
                        self.replace_with_full_object(entry)?;
                    }
                }
            }
            if let Kind::Base(gix_object::Kind::Tree | gix_object::Kind::Blob) = entry.kind {
                if let Some(found) = self.try_delta(entry) {
                    depth = found;
                }
            }
            let index = self.written_ids.len();
            if let Some(searcher) = &mut self.searcher {
                if searcher.paths.contains(&entry.id) {
                    searcher.written.insert(entry.id, index);
                }
            }
            self.written_ids.push(entry.id);
            self.depths.push(depth);
        }
        Ok(chunk)
    }

    /// Turn the whole-object `entry` into a computed delta if one is small enough; its depth
    /// if so.
    fn try_delta(&mut self, entry: &mut output::Entry) -> Option<u16> {
        let searcher = self.searcher.as_mut()?;
        let found = searcher.search(entry, self.client_has, &self.depths, self.ofs_delta)?;
        let compressed = deflate(&found.data).ok()?;
        if compressed.len() >= entry.compressed_data.len() {
            return None;
        }
        entry.kind = found.kind;
        entry.decompressed_size = found.data.len();
        entry.compressed_data = compressed;
        self.deltas += 1;
        self.computed += 1;
        Some(found.depth)
    }

    fn replace_with_full_object(&mut self, entry: &mut output::Entry) -> gix_error::Result<()> {
        use gix_pack::Find;
        let id = entry.id;
        let found = match self.reader {
            Some(reader) => gix_object::Find::try_find(reader, &id, &mut self.buf)?,
            None => self
                .db
                .try_find(&id, &mut self.buf)?
                .map(|(object, _)| object),
        };
        let Some(object) = found else {
            self.error = Some(WriteError::MissingObject { id });
            return Err(gix_error::message("object missing while generating the pack").into());
        };
        let count = output::Count::from_data(id, None);
        *entry = output::Entry::from_data(&count, &object, gix_zlib::Compression::DEFAULT)?;
        self.recompressed += 1;
        Ok(())
    }
}

/// Object `id` in full, from the trees `paths` kept or through `reader`; `None` if it can't
/// be read, which only means no delta.
fn read_version<'a>(
    paths: &'a PathVersions,
    reader: &gix_odb::Handle,
    id: &ObjectId,
) -> Option<(gix_object::Kind, std::borrow::Cow<'a, [u8]>)> {
    use gix_object::Find as _;
    if let Some(tree) = paths.cached_tree(id) {
        return Some((gix_object::Kind::Tree, std::borrow::Cow::Borrowed(tree)));
    }
    let mut buf = Vec::new();
    match reader.try_find(id, &mut buf) {
        Ok(Some(data)) => Some((data.kind, std::borrow::Cow::Owned(data.data.to_vec()))),
        _ => None,
    }
}

/// The object a whole-object `entry` holds; `None` if its data doesn't inflate to its size.
fn inflate(entry: &output::Entry) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::with_capacity(entry.decompressed_size);
    flate2::read::ZlibDecoder::new(&entry.compressed_data[..])
        .take(entry.decompressed_size as u64 + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() == entry.decompressed_size).then_some(out)
}

/// `data` compressed as a pack entry's data is, at git's default level.
fn deflate(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(data.len() / 2 + 16),
        flate2::Compression::default(),
    );
    out.write_all(data)?;
    out.finish()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::enumerate::{enumerate, EnumerateOptions};

    use crate::test_git::git_text as git;

    fn file(version: usize) -> String {
        (0..400)
            .map(|line| {
                if line % 97 == version {
                    format!("line {line} edited in version {version}\n")
                } else {
                    format!(
                        "line {line}: some text that stays the same {}\n",
                        line * 7919
                    )
                }
            })
            .collect()
    }

    /// A repository with three commits changing `dir/file.txt` and `top.txt`, and loose
    /// objects (so gix-pack would write every object whole); the ids of the commits.
    fn repository(dir: &Path) -> (std::path::PathBuf, Vec<ObjectId>) {
        let work = dir.join("source");
        std::fs::create_dir_all(work.join("dir")).unwrap();
        git(&work, &["init", "-q", "-b", "main"], None);
        let mut commits = Vec::new();
        for version in 0..3 {
            std::fs::write(work.join("dir/file.txt"), file(version)).unwrap();
            std::fs::write(work.join("top.txt"), file(version + 10)).unwrap();
            git(&work, &["add", "."], None);
            git(&work, &["commit", "-q", "-m", &format!("v{version}")], None);
            let id = git(&work, &["rev-parse", "HEAD"], None);
            commits.push(ObjectId::from_hex(id.trim().as_bytes()).unwrap());
        }
        (work, commits)
    }

    fn pack(
        work: &Path,
        wants: &[ObjectId],
        haves: &[ObjectId],
        thin: bool,
        ofs_delta: bool,
    ) -> (Vec<u8>, WriteOutcome) {
        let db = gix_odb::at(work.join(".git/objects"), gix_hash::Kind::Sha1).unwrap();
        let enumeration = enumerate(
            &db,
            wants,
            haves,
            &EnumerateOptions::default(),
            &AtomicBool::new(false),
        )
        .unwrap();
        let objects = enumeration.objects();
        let options = WriteOptions {
            client_has: thin.then(|| enumeration.client_has()),
            ofs_delta,
            thread_limit: Some(2),
            delta_search: Some(DeltaSearch::new(&objects[..enumeration.counts().commits])),
            reader: None,
        };
        let mut out = Vec::new();
        let outcome =
            write_pack(&db, objects, &options, &mut out, &AtomicBool::new(false)).unwrap();
        assert_eq!(outcome.bytes, out.len() as u64);
        (out, outcome)
    }

    #[test]
    fn thin_pack_with_computed_deltas_is_completed_by_git() {
        let dir = tempfile::tempdir().unwrap();
        let (work, commits) = repository(dir.path());
        let (data, outcome) = pack(&work, &commits[2..], &commits[..2], true, true);
        // Commit, two trees, two blobs: the blobs are deltas against the client's versions
        // (the trees are too small to be worth it).
        assert_eq!(outcome.objects, 5);
        assert_eq!(outcome.computed_deltas, 2, "{outcome:?}");
        assert!(data.len() < 1000, "{} bytes", data.len());

        let client = dir.path().join("client.git");
        git(
            dir.path(),
            &["init", "-q", "--bare", client.to_str().unwrap()],
            None,
        );
        git(
            &work,
            &[
                "push",
                "-q",
                client.to_str().unwrap(),
                &format!("{}:refs/heads/main", commits[1]),
            ],
            None,
        );
        let (pack_only, _) = pack(&work, &commits[2..], &commits[..2], false, true);
        assert!(pack_only.len() > data.len());
        let indexed = git(
            &client,
            &["index-pack", "--fix-thin", "--stdin"],
            Some(&data),
        );
        assert!(indexed.starts_with("pack\t"), "{indexed}");
        git(
            &client,
            &["update-ref", "refs/heads/main", &commits[2].to_string()],
            None,
        );
        git(&client, &["fsck", "--full", "--strict"], None);
        let shown = git(&client, &["show", "main:dir/file.txt"], None);
        assert_eq!(shown, file(2));
    }

    #[test]
    fn in_pack_bases_by_offset_and_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let (work, commits) = repository(dir.path());
        for ofs_delta in [true, false] {
            let (data, outcome) = pack(&work, &commits[2..], &[], false, ofs_delta);
            // The older versions of the blobs are deltas against the newer ones, written
            // before them.
            assert_eq!(outcome.objects, 15);
            assert_eq!(outcome.computed_deltas, 4, "{outcome:?}");
            let client = dir.path().join(format!("client-{ofs_delta}.git"));
            git(
                dir.path(),
                &["init", "-q", "--bare", client.to_str().unwrap()],
                None,
            );
            git(&client, &["index-pack", "--stdin"], Some(&data));
            git(
                &client,
                &["update-ref", "refs/heads/main", &commits[2].to_string()],
                None,
            );
            git(&client, &["fsck", "--full", "--strict"], None);
            let verified = git(&client, &["verify-pack", "-v", &pack_path(&client)], None);
            let kind = if ofs_delta {
                "OBJ_OFS_DELTA"
            } else {
                "OBJ_REF_DELTA"
            };
            assert!(
                verified.contains("chain length = 2: 2 objects"),
                "{kind}: {verified}"
            );
        }
    }

    fn pack_path(repository: &Path) -> String {
        let packs = repository.join("objects/pack");
        let entry = std::fs::read_dir(&packs)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.extension().is_some_and(|ext| ext == "idx"))
            .unwrap();
        entry.to_string_lossy().into_owned()
    }
}
