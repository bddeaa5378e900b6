//! Writing git's commit-graph (`git commit-graph write --reachable [--split]`).
//!
//! The file format is git's (`gitformat-commit-graph`): a `CGPH` header, a chunk table, then
//! the chunks `OIDF` (fan-out), `OIDL` (sorted ids), `CDAT` (tree, first two parents,
//! topological level and commit date), `GDA2`/`GDO2` (corrected commit date offsets, as git
//! 2.47 writes by default), `EDGE` (the third and later parents of octopus merges) and, in a
//! layer of a split chain, `BASE` (the hashes of the layers below), then the checksum of all of
//! it. Changed-path Bloom filters (`BIDX`/`BDAT`) are never written.
//!
//! Split chains live in `objects/info/commit-graphs/`: `commit-graph-chain` names the layers
//! (`graph-<hash>.graph`), base first. A write adds one layer holding the commits that are in
//! no layer yet, after merging into it every layer on top that is not more than
//! `size_multiple` times bigger than what it holds so far — git's default merge rule. Layers
//! that stay are not read again; merged layers' commits are read from the object database
//! again (as git does), which drops commits that were pruned since.
//!
//! Crash safety: every new file is written under a temporary name, synced, and renamed into
//! place; the chain file is replaced last, by renaming its lock file; files no longer used are
//! removed only after that. A kill at any moment leaves the old graph or the new one.
//!
//! Like git, nothing is written (and `Ok` with 0 commits is returned) in a repository where a
//! commit-graph would describe a history other than the one git walks: a shallow repository
//! (`shallow` exists: its boundary commits are parsed as parentless), one with grafts
//! (`info/grafts`) or replace refs (`refs/replace/`).

use std::{
    collections::HashSet,
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use gix_hash::{oid, ObjectId};
use gix_hashtable::HashMap;
use gix_object::Kind;
use sha1::Digest as _;

use crate::CommitHeader;

/// How [`write_commit_graph()`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitGraphWriteOptions {
    /// git's `--split`: add a layer on top of the chain and merge layers as git does
    /// (size multiple 2, `--max-commits` none by default); false = one file
    /// `objects/info/commit-graph`.
    pub split: bool,
    /// git's `--size-multiple` (default 2).
    pub size_multiple: u32,
}

impl Default for CommitGraphWriteOptions {
    fn default() -> Self {
        CommitGraphWriteOptions {
            split: true,
            size_multiple: 2,
        }
    }
}

/// What [`write_commit_graph()`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitGraphWritten {
    /// The number of commits in the graph file written (in split mode: the new layer, which
    /// includes the commits of the layers merged into it); 0 if nothing was written.
    pub commits: u64,
    /// The files written: the graph file, and in split mode the chain file after it.
    pub files: Vec<PathBuf>,
}

/// Why a commit-graph could not be written. The old graph is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum CommitGraphWriteError {
    /// A file operation failed.
    #[error("{action} '{path}': {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A lock file exists: another process is writing the graph.
    #[error("Unable to create '{0}': File exists.")]
    Locked(PathBuf),
    /// The object database failed to read an object.
    #[error("unable to read object {id}")]
    Read {
        /// The object.
        id: ObjectId,
        /// The error.
        #[source]
        source: gix_error::Error,
    },
    /// A reachable commit is missing or cannot be parsed (git's wording).
    #[error("unable to parse commit {0}")]
    Unparsable(ObjectId),
    /// More commits than the format can number.
    #[error("too many commits to write graph")]
    TooManyCommits,
    /// The repository's hash is not SHA-1.
    #[error("only SHA-1 repositories are supported")]
    UnsupportedHash,
}

type Result<T> = std::result::Result<T, CommitGraphWriteError>;

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CommitGraphWriteError {
    let path = path.to_owned();
    move |source| CommitGraphWriteError::Io {
        action,
        path,
        source,
    }
}

const PARENT_NONE: u32 = 0x7000_0000;
const EXTRA_EDGES_NEEDED: u32 = 0x8000_0000;
const LAST_EDGE: u32 = 0x8000_0000;
const EDGE_LAST_MASK: u32 = 0x7fff_ffff;
const GENERATION_V1_MAX: u32 = 0x3fff_ffff;
const OFFSET_MAX: u64 = 0x7fff_ffff;
const OFFSET_OVERFLOW: u32 = 0x8000_0000;

/// Write/update the commit-graph of `objects_dir` (the repository's `objects` directory) for
/// every commit reachable from `tips` (git's `commit-graph write --reachable [--split]`):
/// git's file format (OIDF, OIDL, CDAT, GDA2/GDO2 generation data as git 2.47 writes by
/// default, EDGE, BASE for split layers), temp file + rename, chain file updated atomically,
/// stale layers removed last. `git commit-graph verify` accepts the result; gix-commitgraph
/// reads it.
///
/// Tips that are annotated tags are peeled; tips that are not commits (or are missing) are
/// skipped, as git's `--reachable` skips refs that do not point at commits. See the module
/// documentation for when nothing is written. Configuration is the caller's: git writes
/// nothing when `core.commitGraph` is false, and this always writes generation data v2
/// (`commitGraph.generationVersion` 2, git's default) unless a kept layer below lacks it.
pub fn write_commit_graph(
    objects_dir: &Path,
    db: &impl gix_object::Find,
    tips: &[ObjectId],
    options: &CommitGraphWriteOptions,
) -> Result<CommitGraphWritten> {
    if let Some(git_dir) = objects_dir.parent() {
        if !graph_compatible(git_dir) {
            tracing::debug!(
                ?git_dir,
                "shallow, grafted or replaced history: no commit-graph"
            );
            return Ok(CommitGraphWritten::default());
        }
    }
    if tips.iter().any(|tip| tip.kind() != gix_hash::Kind::Sha1) {
        return Err(CommitGraphWriteError::UnsupportedHash);
    }
    let info = objects_dir.join("info");
    let graphs_dir = info.join("commit-graphs");
    let chain = if options.split {
        Chain::load(&info)
    } else {
        Chain::default()
    };
    let mut commits = collect(db, tips, &chain)?;
    if commits.is_empty() {
        if options.split {
            expire_unchained(&info, &graphs_dir);
        }
        return Ok(CommitGraphWritten::default());
    }
    if options.split {
        write_split(objects_dir, &graphs_dir, db, chain, commits, options)
    } else {
        let (ids, parsed) = sorted(&mut commits);
        let file = GraphFile::build(&ids, &parsed, &Chain::default(), 0, true)?;
        let path = info.join("commit-graph");
        let lock = Lock::acquire(&path)?;
        fs::create_dir_all(&info).map_err(io_error("create directory", &info))?;
        lock.write_and_commit(&file.bytes)?;
        sync_dir(&info);
        let written = CommitGraphWritten {
            commits: ids.len() as u64,
            files: vec![path.clone()],
        };
        if killed("graph committed") {
            return Ok(written);
        }
        // The single file now takes precedence; the chain and its layers go.
        remove_file_if_exists(&graphs_dir.join("commit-graph-chain"));
        if killed("chain removed") {
            return Ok(written);
        }
        expire(&graphs_dir, &HashSet::new());
        Ok(written)
    }
}

#[cfg(test)]
thread_local! {
    /// The phase after which a test's write stops as if killed: nothing after it is done, no
    /// lock is released.
    static KILL_AFTER: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Whether a test kills the write after `phase`.
#[cfg(test)]
fn killed(phase: &'static str) -> bool {
    KILL_AFTER.with(|kill| kill.get() == Some(phase))
}

#[cfg(not(test))]
fn killed(_phase: &'static str) -> bool {
    false
}

/// git's `commit_graph_compatible()` without the configuration: no shallow file, no grafts,
/// no replace refs.
fn graph_compatible(git_dir: &Path) -> bool {
    if git_dir.join("shallow").exists() {
        return false;
    }
    if let Ok(grafts) = fs::read(git_dir.join("info").join("grafts")) {
        if grafts
            .split(|&b| b == b'\n')
            .any(|line| !line.is_empty() && line[0] != b'#')
        {
            return false;
        }
    }
    if has_files(&git_dir.join("refs").join("replace"), 0) {
        return false;
    }
    if let Ok(packed) = fs::read(git_dir.join("packed-refs")) {
        if packed
            .windows(b" refs/replace/".len())
            .any(|w| w == b" refs/replace/")
        {
            return false;
        }
    }
    true
}

fn has_files(dir: &Path, depth: u32) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| match entry.file_type() {
        Ok(kind) if kind.is_dir() => depth < 64 && has_files(&entry.path(), depth + 1),
        Ok(_) => !entry.file_name().to_string_lossy().ends_with(".lock"),
        Err(_) => false,
    })
}

/// A commit as the writer needs it.
#[derive(Debug, Clone)]
struct Parsed {
    tree: ObjectId,
    parents: Vec<ObjectId>,
    date: u64,
}

fn parse(db: &impl gix_object::Find, id: &oid, buf: &mut Vec<u8>) -> Result<Option<Parsed>> {
    let Some((kind, range)) =
        crate::read(db, id, buf).map_err(|source| CommitGraphWriteError::Read {
            id: id.to_owned(),
            source,
        })?
    else {
        return Ok(None);
    };
    if kind != Kind::Commit {
        return Err(CommitGraphWriteError::Unparsable(id.to_owned()));
    }
    let header = CommitHeader::parse(&buf[range], id.kind())
        .map_err(|_| CommitGraphWriteError::Unparsable(id.to_owned()))?;
    Ok(Some(Parsed {
        tree: header.tree,
        parents: header.parents().collect(),
        date: header.date,
    }))
}

/// The commits reachable from `tips` that are not in `chain` (all of them if it is empty),
/// read from the database.
fn collect(
    db: &impl gix_object::Find,
    tips: &[ObjectId],
    chain: &Chain,
) -> Result<HashMap<ObjectId, Parsed>> {
    let mut buf = Vec::new();
    let mut seen: gix_hashtable::HashSet<ObjectId> = Default::default();
    let mut queue = Vec::new();
    for tip in tips {
        let mut id = *tip;
        // Peel annotated tags as git's `peel_iterated_oid()` does; a chain is bounded.
        for _ in 0..64 {
            let Some((kind, range)) = crate::read(db, &id, &mut buf)
                .map_err(|source| CommitGraphWriteError::Read { id, source })?
            else {
                break;
            };
            match kind {
                Kind::Commit => {
                    if seen.insert(id) {
                        queue.push(id);
                    }
                    break;
                }
                Kind::Tag => match crate::tag_target(&buf[range]) {
                    Some(target) => id = target,
                    None => break,
                },
                _ => break,
            }
        }
    }
    let mut commits = HashMap::default();
    while let Some(id) = queue.pop() {
        if chain.lookup(&id).is_some() {
            continue;
        }
        let parsed = parse(db, &id, &mut buf)?.ok_or(CommitGraphWriteError::Unparsable(id))?;
        for parent in &parsed.parents {
            if seen.insert(*parent) {
                queue.push(*parent);
            }
        }
        commits.insert(id, parsed);
    }
    Ok(commits)
}

fn sorted(commits: &mut HashMap<ObjectId, Parsed>) -> (Vec<ObjectId>, Vec<Parsed>) {
    let mut entries: Vec<(ObjectId, Parsed)> = commits.drain().collect();
    entries.sort_unstable_by_key(|entry| entry.0);
    entries.into_iter().unzip()
}

fn write_split(
    objects_dir: &Path,
    graphs_dir: &Path,
    db: &impl gix_object::Find,
    mut chain: Chain,
    mut commits: HashMap<ObjectId, Parsed>,
    options: &CommitGraphWriteOptions,
) -> Result<CommitGraphWritten> {
    // git's split_graph_merge_strategy(): merge the top layer while it is not more than
    // `size_multiple` times what the new layer holds so far.
    // As git, 0 means the default.
    let size_multiple = match options.size_multiple {
        0 => 2,
        multiple => u64::from(multiple),
    };
    let mut total = commits.len() as u64;
    let mut keep = chain.layers.len();
    while keep > 0 {
        let layer = &chain.layers[keep - 1];
        // The header counts the base layers in one byte.
        if u64::from(layer.count) > size_multiple.saturating_mul(total) && keep < 255 {
            break;
        }
        total += u64::from(layer.count);
        keep -= 1;
    }
    let merged = chain.layers.split_off(keep);
    let mut buf = Vec::new();
    for layer in &merged {
        for index in 0..layer.count {
            let id = layer.id_at(index);
            if commits.contains_key(id) {
                continue;
            }
            // Only commits that still exist are kept, as git's merge_commit_graph() does.
            if let Some(parsed) = parse(db, id, &mut buf)? {
                commits.insert(id.to_owned(), parsed);
            }
        }
    }
    let (ids, parsed) = sorted(&mut commits);
    let base_count = chain.commits();
    // The new layer has generation data if the layers below all have it.
    let generation_data = chain.layers.iter().all(|layer| layer.gda2.is_some());
    let file = GraphFile::build(&ids, &parsed, &chain, base_count, generation_data)?;

    fs::create_dir_all(graphs_dir).map_err(io_error("create directory", graphs_dir))?;
    let chain_path = graphs_dir.join("commit-graph-chain");
    let lock = Lock::acquire(&chain_path)?;
    let v1_path = objects_dir.join("info").join("commit-graph");
    // A single-file graph kept as the base moves into the chain under its hash; it is linked
    // rather than renamed so that the old graph stays readable until the chain is replaced.
    let mut names = Vec::new();
    for layer in &chain.layers {
        let name = layer_path(graphs_dir, &layer.hash);
        if layer.path != name {
            link_or_copy(&layer.path, &name)?;
        }
        names.push(layer.hash);
    }
    let path = layer_path(graphs_dir, &file.hash);
    write_new_file(graphs_dir, &path, &file.bytes)?;
    names.push(file.hash);
    let written = CommitGraphWritten {
        commits: ids.len() as u64,
        files: vec![path, chain_path.clone()],
    };
    if killed("layer written") {
        std::mem::forget(lock);
        return Ok(written);
    }
    let mut text = String::new();
    for hash in &names {
        text.push_str(&hash.to_string());
        text.push('\n');
    }
    lock.write_and_commit(text.as_bytes())?;
    sync_dir(graphs_dir);
    // Old files go last: the single-file graph (which would take precedence over the chain),
    // then the layers that are no longer in the chain — under the chain's lock again, so that
    // a concurrent writer's new layer is not taken for a stale one.
    if killed("chain committed") {
        return Ok(written);
    }
    remove_file_if_exists(&v1_path);
    if killed("single file removed") {
        return Ok(written);
    }
    if let Ok(lock) = Lock::acquire(&chain_path) {
        let keep: HashSet<PathBuf> = names
            .iter()
            .map(|hash| layer_path(graphs_dir, hash))
            .collect();
        expire(graphs_dir, &keep);
        drop(lock);
    }
    Ok(written)
}

fn layer_path(graphs_dir: &Path, hash: &oid) -> PathBuf {
    graphs_dir.join(format!("graph-{hash}.graph"))
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        return Ok(());
    }
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    let data = fs::read(from).map_err(io_error("read", from))?;
    let dir = to.parent().unwrap_or(Path::new("."));
    write_new_file(dir, to, &data)
}

/// Write `data` to a temporary file in `dir`, sync it, make it read-only as git does and
/// rename it to `path`.
fn write_new_file(dir: &Path, path: &Path, data: &[u8]) -> Result<()> {
    let mut temp = tempfile::Builder::new()
        .prefix("tmp_graph_")
        .tempfile_in(dir)
        .map_err(io_error("create a temporary file in", dir))?;
    temp.write_all(data)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(io_error("write", temp.path()))?;
    set_read_only(temp.as_file());
    temp.persist(path)
        .map_err(|err| CommitGraphWriteError::Io {
            action: "rename into",
            path: path.to_owned(),
            source: err.error,
        })?;
    Ok(())
}

fn set_read_only(file: &fs::File) {
    if let Ok(metadata) = file.metadata() {
        let mut permissions = metadata.permissions();
        permissions.set_readonly(true);
        // Only cosmetic (git's 0444): a failure does not matter.
        let _ = file.set_permissions(permissions);
    }
}

fn sync_dir(dir: &Path) {
    // Makes the renames durable; not every platform can open a directory.
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}

fn remove_file_if_exists(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => tracing::warn!(?path, %err, "could not remove an old commit-graph file"),
    }
}

/// Remove the layers that are not in the chain (left by a write killed before its clean-up),
/// under the chain's lock and reading the chain again under it. git leaves them until a write
/// has new commits; removing them when there is nothing to write is harmless.
fn expire_unchained(info: &Path, graphs_dir: &Path) {
    if info.join("commit-graph").exists() || !graphs_dir.is_dir() {
        return;
    }
    let Ok(lock) = Lock::acquire(&graphs_dir.join("commit-graph-chain")) else {
        return;
    };
    let chain = Chain::load(info);
    if !chain.layers.is_empty() {
        let keep: HashSet<PathBuf> = chain.layers.iter().map(|l| l.path.clone()).collect();
        expire(graphs_dir, &keep);
    }
    drop(lock);
}

/// git's expire_commit_graphs() with its default expiry time (now): every `*.graph` file of
/// `graphs_dir` that is not in `keep` and not newer than now goes.
fn expire(graphs_dir: &Path, keep: &HashSet<PathBuf>) {
    let Ok(entries) = fs::read_dir(graphs_dir) else {
        return;
    };
    let now = std::time::SystemTime::now();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "graph") || keep.contains(&path) {
            continue;
        }
        let newer = entry
            .metadata()
            .and_then(|metadata| metadata.modified())
            .is_ok_and(|modified| modified > now);
        if !newer {
            remove_file_if_exists(&path);
        }
    }
}

/// A lock file (git's `<path>.lock`, created exclusively), removed on drop unless committed.
struct Lock {
    lock: PathBuf,
    target: PathBuf,
    file: Option<fs::File>,
}

impl Lock {
    fn acquire(target: &Path) -> Result<Self> {
        let mut name = target.as_os_str().to_owned();
        name.push(".lock");
        let lock = PathBuf::from(name);
        if let Some(dir) = lock.parent() {
            fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        }
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(file) => Ok(Lock {
                lock,
                target: target.to_owned(),
                file: Some(file),
            }),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                Err(CommitGraphWriteError::Locked(lock))
            }
            Err(err) => Err(io_error("create", &lock)(err)),
        }
    }

    fn write_and_commit(mut self, data: &[u8]) -> Result<()> {
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        file.write_all(data)
            .and_then(|()| file.sync_all())
            .map_err(io_error("write", &self.lock))?;
        set_read_only(&file);
        drop(file);
        fs::rename(&self.lock, &self.target).map_err(io_error("rename into", &self.target))?;
        // Committed: nothing to remove any more.
        self.lock = PathBuf::new();
        Ok(())
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if !self.lock.as_os_str().is_empty() {
            self.file = None;
            let _ = fs::remove_file(&self.lock);
        }
    }
}

/// One commit-graph file of an existing graph, checked enough to be read safely.
#[derive(Debug)]
struct Layer {
    path: PathBuf,
    data: Vec<u8>,
    /// Its checksum, the name of a layer.
    hash: ObjectId,
    count: u32,
    oidl: usize,
    cdat: usize,
    gda2: Option<usize>,
    gdo2: Option<(usize, usize)>,
    bases: Vec<ObjectId>,
}

const HASH_LEN: usize = 20;

fn be32(data: &[u8], at: usize) -> u32 {
    data.get(at..at + 4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

impl Layer {
    fn load(path: &Path) -> Option<Layer> {
        let data = fs::read(path).ok()?;
        if data.len() < 8 + 12 + HASH_LEN || &data[..4] != b"CGPH" || data[4] != 1 || data[5] != 1 {
            return None;
        }
        let chunks = usize::from(data[6]);
        let base_count = usize::from(data[7]);
        let table_end = 8 + (chunks + 1) * 12;
        let body_end = data.len() - HASH_LEN;
        if table_end > body_end {
            return None;
        }
        let mut found: Vec<([u8; 4], usize, usize)> = Vec::new();
        for i in 0..chunks {
            let at = 8 + i * 12;
            let id: [u8; 4] = data[at..at + 4].try_into().ok()?;
            let start = u64::from_be_bytes(data[at + 4..at + 12].try_into().ok()?);
            let end = u64::from_be_bytes(data[at + 16..at + 24].try_into().ok()?);
            let (start, end) = (usize::try_from(start).ok()?, usize::try_from(end).ok()?);
            if start < table_end || end < start || end > body_end {
                return None;
            }
            found.push((id, start, end));
        }
        let chunk = |id: &[u8; 4]| found.iter().find(|c| &c.0 == id).map(|c| (c.1, c.2));
        let (oidf, oidf_end) = chunk(b"OIDF")?;
        if oidf_end - oidf != 256 * 4 {
            return None;
        }
        let count = be32(&data, oidf + 255 * 4);
        let n = count as usize;
        let (oidl, oidl_end) = chunk(b"OIDL")?;
        let (cdat, cdat_end) = chunk(b"CDAT")?;
        if oidl_end - oidl != n * HASH_LEN || cdat_end - cdat != n * (HASH_LEN + 16) {
            return None;
        }
        let gda2 = match chunk(b"GDA2") {
            Some((start, end)) if end - start == n * 4 => Some(start),
            Some(_) => return None,
            None => None,
        };
        let gdo2 = chunk(b"GDO2");
        let mut bases = Vec::new();
        if base_count > 0 {
            let (start, end) = chunk(b"BASE")?;
            if end - start != base_count * HASH_LEN {
                return None;
            }
            for i in 0..base_count {
                bases.push(ObjectId::from_bytes_or_panic(
                    &data[start + i * HASH_LEN..start + (i + 1) * HASH_LEN],
                ));
            }
        }
        let hash = ObjectId::from_bytes_or_panic(&data[body_end..]);
        Some(Layer {
            path: path.to_owned(),
            data,
            hash,
            count,
            oidl,
            cdat,
            gda2,
            gdo2,
            bases,
        })
    }

    fn id_at(&self, index: u32) -> &oid {
        let at = self.oidl + index as usize * HASH_LEN;
        oid::from_bytes_unchecked(&self.data[at..at + HASH_LEN])
    }

    fn lookup(&self, id: &oid) -> Option<u32> {
        let (mut lo, mut hi) = (0u32, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.id_at(mid).cmp(id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    fn commit_data(&self, index: u32) -> &[u8] {
        let at = self.cdat + index as usize * (HASH_LEN + 16);
        &self.data[at..at + HASH_LEN + 16]
    }

    /// The topological level and commit date of commit `index`.
    fn level_and_date(&self, index: u32) -> (u32, u64) {
        let data = self.commit_data(index);
        let high = be32(data, HASH_LEN + 8);
        let low = be32(data, HASH_LEN + 12);
        (high >> 2, (u64::from(high & 3) << 32) | u64::from(low))
    }

    /// The corrected commit date of commit `index`, if the layer has generation data.
    fn corrected_date(&self, index: u32) -> Option<u64> {
        let gda2 = self.gda2?;
        let (_, date) = self.level_and_date(index);
        let offset = be32(&self.data, gda2 + index as usize * 4);
        let offset = if offset & OFFSET_OVERFLOW != 0 {
            let (start, end) = self.gdo2?;
            let at = start + (offset & !OFFSET_OVERFLOW) as usize * 8;
            if at + 8 > end {
                return None;
            }
            u64::from_be_bytes(self.data[at..at + 8].try_into().ok()?)
        } else {
            u64::from(offset)
        };
        Some(date.saturating_add(offset))
    }
}

/// The layers of an existing graph, base first; empty if there is none.
#[derive(Debug, Default)]
struct Chain {
    layers: Vec<Layer>,
}

impl Chain {
    /// The graph git would read: `info/commit-graph` if it is readable, else the chain's
    /// readable layers up to the first that is not.
    fn load(info: &Path) -> Chain {
        if let Some(layer) = Layer::load(&info.join("commit-graph")) {
            if layer.bases.is_empty() {
                return Chain {
                    layers: vec![layer],
                };
            }
        }
        let graphs_dir = info.join("commit-graphs");
        let Ok(text) = fs::read_to_string(graphs_dir.join("commit-graph-chain")) else {
            return Chain::default();
        };
        let mut layers: Vec<Layer> = Vec::new();
        for line in text.lines() {
            let Ok(hash) = ObjectId::from_hex(line.trim().as_bytes()) else {
                break;
            };
            let Some(layer) = Layer::load(&layer_path(&graphs_dir, &hash)) else {
                break;
            };
            let expected: Vec<ObjectId> = layers.iter().map(|layer| layer.hash).collect();
            if layer.hash != hash || layer.bases != expected {
                break;
            }
            layers.push(layer);
        }
        Chain { layers }
    }

    fn commits(&self) -> u32 {
        self.layers.iter().map(|layer| layer.count).sum()
    }

    /// The position of `id` in the whole graph.
    fn lookup(&self, id: &oid) -> Option<u32> {
        let mut base = 0;
        for layer in &self.layers {
            if let Some(index) = layer.lookup(id) {
                return Some(base + index);
            }
            base += layer.count;
        }
        None
    }

    fn layer_of(&self, mut position: u32) -> Option<(&Layer, u32)> {
        for layer in &self.layers {
            if position < layer.count {
                return Some((layer, position));
            }
            position -= layer.count;
        }
        None
    }
}

/// A graph file's bytes and checksum.
struct GraphFile {
    bytes: Vec<u8>,
    hash: ObjectId,
}

impl GraphFile {
    /// The file holding `ids` (sorted) with their commits `parsed`, on top of `base` (whose
    /// commits number `base_count`).
    fn build(
        ids: &[ObjectId],
        parsed: &[Parsed],
        base: &Chain,
        base_count: u32,
        generation_data: bool,
    ) -> Result<GraphFile> {
        let n = ids.len();
        if n as u64 + u64::from(base_count) >= u64::from(EDGE_LAST_MASK) {
            return Err(CommitGraphWriteError::TooManyCommits);
        }
        // Parent positions in the whole graph.
        let position = |parent: &ObjectId, child: &ObjectId| -> Result<u32> {
            if let Ok(index) = ids.binary_search(parent) {
                return Ok(base_count + index as u32);
            }
            base.lookup(parent)
                .ok_or(CommitGraphWriteError::Unparsable(*child))
        };
        let mut parents: Vec<Vec<u32>> = Vec::with_capacity(n);
        for (id, commit) in ids.iter().zip(parsed) {
            let positions = commit
                .parents
                .iter()
                .map(|parent| position(parent, id))
                .collect::<Result<Vec<u32>>>()?;
            parents.push(positions);
        }

        // Topological levels and corrected commit dates, parents first, without recursion.
        let mut level = vec![0u32; n];
        let mut corrected = vec![0u64; n];
        let mut stack = Vec::new();
        for start in 0..n {
            if level[start] != 0 {
                continue;
            }
            stack.push(start);
            while let Some(&current) = stack.last() {
                if level[current] != 0 {
                    stack.pop();
                    continue;
                }
                let (mut max_level, mut max_date, mut ready) = (0u32, 0u64, true);
                for &parent in &parents[current] {
                    let (parent_level, parent_date) = if parent >= base_count {
                        let index = (parent - base_count) as usize;
                        if level[index] == 0 {
                            stack.push(index);
                            ready = false;
                            break;
                        }
                        (level[index], corrected[index])
                    } else {
                        let Some((layer, index)) = base.layer_of(parent) else {
                            return Err(CommitGraphWriteError::Unparsable(ids[current]));
                        };
                        let (level, date) = layer.level_and_date(index);
                        (level, layer.corrected_date(index).unwrap_or(date))
                    };
                    max_level = max_level.max(parent_level);
                    max_date = max_date.max(parent_date);
                }
                if ready {
                    stack.pop();
                    level[current] = max_level.min(GENERATION_V1_MAX - 1) + 1;
                    let date = parsed[current].date;
                    corrected[current] = if date != 0 && date > max_date {
                        date
                    } else {
                        max_date.saturating_add(1)
                    };
                }
            }
        }

        let mut fanout = vec![0u8; 256 * 4];
        {
            let mut count = 0usize;
            for byte in 0..256usize {
                while count < n && usize::from(ids[count].as_bytes()[0]) == byte {
                    count += 1;
                }
                fanout[byte * 4..byte * 4 + 4].copy_from_slice(&(count as u32).to_be_bytes());
            }
        }
        let mut oidl = Vec::with_capacity(n * HASH_LEN);
        for id in ids {
            oidl.extend_from_slice(id.as_bytes());
        }
        let mut cdat = Vec::with_capacity(n * (HASH_LEN + 16));
        let mut edges: Vec<u8> = Vec::new();
        let mut gda2 = Vec::with_capacity(n * 4);
        let mut gdo2 = Vec::new();
        for (index, commit) in parsed.iter().enumerate() {
            cdat.extend_from_slice(commit.tree.as_bytes());
            let positions = &parents[index];
            let first = positions.first().copied().unwrap_or(PARENT_NONE);
            let second = match positions.len() {
                0 | 1 => PARENT_NONE,
                2 => positions[1],
                _ => {
                    let at = (edges.len() / 4) as u32;
                    for (k, &position) in positions[1..].iter().enumerate() {
                        let last = k == positions.len() - 2;
                        let value = if last { position | LAST_EDGE } else { position };
                        edges.extend_from_slice(&value.to_be_bytes());
                    }
                    EXTRA_EDGES_NEEDED | at
                }
            };
            cdat.extend_from_slice(&first.to_be_bytes());
            cdat.extend_from_slice(&second.to_be_bytes());
            let high = (level[index] << 2) | ((commit.date >> 32) & 3) as u32;
            cdat.extend_from_slice(&high.to_be_bytes());
            cdat.extend_from_slice(&(commit.date as u32).to_be_bytes());
            let offset = corrected[index].saturating_sub(commit.date);
            if offset > OFFSET_MAX {
                let slot = (gdo2.len() / 8) as u32;
                gda2.extend_from_slice(&(OFFSET_OVERFLOW | slot).to_be_bytes());
                gdo2.extend_from_slice(&offset.to_be_bytes());
            } else {
                gda2.extend_from_slice(&(offset as u32).to_be_bytes());
            }
        }
        let mut bases = Vec::new();
        for layer in &base.layers {
            bases.extend_from_slice(layer.hash.as_bytes());
        }

        let mut chunks: Vec<(&[u8; 4], &[u8])> =
            vec![(b"OIDF", &fanout), (b"OIDL", &oidl), (b"CDAT", &cdat)];
        if generation_data {
            chunks.push((b"GDA2", &gda2));
            if !gdo2.is_empty() {
                chunks.push((b"GDO2", &gdo2));
            }
        }
        if !edges.is_empty() {
            chunks.push((b"EDGE", &edges));
        }
        if !bases.is_empty() {
            chunks.push((b"BASE", &bases));
        }
        let mut bytes = Vec::new();
        bytes.extend_from_slice(b"CGPH");
        bytes.push(1); // version
        bytes.push(1); // SHA-1
        bytes.push(chunks.len() as u8);
        bytes.push(base.layers.len() as u8);
        let mut offset = (8 + (chunks.len() + 1) * 12) as u64;
        for (id, data) in &chunks {
            bytes.extend_from_slice(*id);
            bytes.extend_from_slice(&offset.to_be_bytes());
            offset += data.len() as u64;
        }
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&offset.to_be_bytes());
        for (_, data) in &chunks {
            bytes.extend_from_slice(data);
        }
        let digest = sha1::Sha1::digest(&bytes);
        let hash = ObjectId::from_bytes_or_panic(digest.as_slice());
        bytes.extend_from_slice(digest.as_slice());
        Ok(GraphFile { bytes, hash })
    }
}

#[cfg(test)]
mod tests;
