//! Single flight and a cache for generated packs: what a long-running server (`packgate
//! serve`, `packgate daemon`) shares between requests, and git's process-per-request design
//! cannot.
//!
//! A request's pack is named by a [`Key`]: a digest of everything that changes its bytes
//! (computed by upload-pack, see `upload_pack::cached`). The first request for a key starts
//! one generation on a thread of its own, writing into a [`Spool`]; every request for the
//! same key — the first one included — reads the spool from its start with a cursor of its
//! own, while it is still being written. The generator never waits for a reader: a slow
//! reader only falls behind, and a reader that goes away drops its cursor.
//!
//! A spool keeps its first bytes in memory (up to [`PackCacheConfig::memory_per_entry`])
//! and the rest in an unlinked temporary file, gone when the last reader and the cache let
//! go of it. Progress messages are not part of the bytes: they are marks at byte offsets,
//! which each reader frames for its own client (or leaves out), as it frames the bytes.
//!
//! A finished spool stays cached for [`PackCacheConfig::ttl`] within
//! [`PackCacheConfig::max_bytes`] (least recently used first out), but only for a key seen
//! before (a bounded set of recent keys): a one-off fetch costs no cache space. A generation
//! that fails hands its error to every reader and leaves nothing behind.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs::File,
    io::{self, Write},
    os::unix::fs::FileExt as _,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

/// The log target of the cache's events (one info event per request it serves).
pub const LOG_TARGET: &str = "packgate::pack_cache";

/// What names one pack: a SHA-256 digest of everything that changes its bytes.
pub type Key = [u8; 32];

/// How much the cache keeps, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackCacheConfig {
    /// How long a finished pack stays servable after it was written.
    pub ttl: Duration,
    /// The bytes all cached packs may take together (memory and temporary files).
    pub max_bytes: u64,
    /// The bytes of one pack kept in memory; the rest goes to a temporary file.
    pub memory_per_entry: usize,
    /// Where the temporary files go: the system's temporary directory unless set.
    pub temp_dir: Option<PathBuf>,
    /// How many recently seen keys are remembered for the second-sighting rule.
    pub recent_keys: usize,
}

impl Default for PackCacheConfig {
    fn default() -> Self {
        PackCacheConfig {
            ttl: DEFAULT_TTL,
            max_bytes: DEFAULT_MAX_BYTES,
            memory_per_entry: DEFAULT_MEMORY_PER_ENTRY,
            temp_dir: None,
            recent_keys: DEFAULT_RECENT_KEYS,
        }
    }
}

/// Default [`PackCacheConfig::ttl`]: five minutes, long enough for a burst of CI clones of
/// one commit, short enough that a quiet repository's packs do not linger.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Default [`PackCacheConfig::max_bytes`]: 1 GiB, a few clones of a large repository.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Default [`PackCacheConfig::memory_per_entry`]: 16 MiB; small packs never touch the disk.
pub const DEFAULT_MEMORY_PER_ENTRY: usize = 16 << 20;
/// Default [`PackCacheConfig::recent_keys`].
pub const DEFAULT_RECENT_KEYS: usize = 4096;

/// How many requests the cache served, and how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackCacheStats {
    /// Packs generated (the first request for a key that nothing held).
    pub generated: u64,
    /// Requests that joined a generation still under way.
    pub joined: u64,
    /// Requests served from a finished, cached pack.
    pub hits: u64,
    /// Finished packs kept in the cache.
    pub stored: u64,
    /// Cached packs dropped for the byte budget or their age.
    pub evicted: u64,
}

/// The pack cache of one server process; cloning it shares it.
#[derive(Clone)]
pub struct PackCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PackCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackCache")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: PackCacheConfig,
    state: Mutex<State>,
    generated: AtomicU64,
    joined: AtomicU64,
    hits: AtomicU64,
    stored: AtomicU64,
    evicted: AtomicU64,
}

#[derive(Default)]
struct State {
    entries: HashMap<Key, Entry>,
    /// Keys seen recently, oldest first, and the same as a set.
    recent: VecDeque<Key>,
    recent_set: HashSet<Key>,
    /// The bytes of the finished entries.
    stored_bytes: u64,
    /// A counter for least-recently-used order.
    clock: u64,
}

struct Entry {
    spool: Arc<Spool>,
    /// Whether the entry stays once finished (its key had been seen before).
    keep: bool,
    /// When it finished, for entries kept in the cache.
    finished: Option<Instant>,
    last_used: u64,
}

/// What [`PackCache::lookup()`] found for a key.
pub enum Lookup {
    /// Read this spool: a generation is under way, or it is finished and cached.
    Read(Arc<Spool>),
    /// Nothing holds the key: generate the pack into this [`SpoolWriter`] (then
    /// [`PackCache::finish()`]), and read it like everyone else.
    Generate(Arc<Spool>, SpoolWriter),
}

impl PackCache {
    /// An empty cache.
    pub fn new(config: PackCacheConfig) -> Self {
        PackCache {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State::default()),
                generated: AtomicU64::new(0),
                joined: AtomicU64::new(0),
                hits: AtomicU64::new(0),
                stored: AtomicU64::new(0),
                evicted: AtomicU64::new(0),
            }),
        }
    }

    /// The settings it was made with.
    pub fn config(&self) -> &PackCacheConfig {
        &self.inner.config
    }

    /// How many requests it served, and how.
    pub fn stats(&self) -> PackCacheStats {
        let inner = &self.inner;
        PackCacheStats {
            generated: inner.generated.load(Ordering::Relaxed),
            joined: inner.joined.load(Ordering::Relaxed),
            hits: inner.hits.load(Ordering::Relaxed),
            stored: inner.stored.load(Ordering::Relaxed),
            evicted: inner.evicted.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere leaves consistent maps behind: every update is a few statements.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The spool for `key`: an existing one to read, or a new one to generate into.
    pub fn lookup(&self, key: Key) -> Lookup {
        let inner = &self.inner;
        let mut state = self.lock();
        self.expire(&mut state, Instant::now());
        state.clock += 1;
        let clock = state.clock;
        if let Some(entry) = state.entries.get_mut(&key) {
            entry.last_used = clock;
            let (counter, outcome) = match entry.finished {
                Some(_) => (&inner.hits, "hit"),
                None => (&inner.joined, "joined"),
            };
            counter.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: LOG_TARGET, key = %hex(&key), "pack cache: {outcome}");
            return Lookup::Read(entry.spool.clone());
        }
        let keep = state.recent_set.contains(&key);
        if !keep {
            state.recent.push_back(key);
            state.recent_set.insert(key);
            while state.recent.len() > inner.config.recent_keys {
                if let Some(old) = state.recent.pop_front() {
                    state.recent_set.remove(&old);
                }
            }
        }
        let spool = Arc::new(Spool::new(
            inner.config.memory_per_entry,
            inner.config.temp_dir.clone(),
        ));
        state.entries.insert(
            key,
            Entry {
                spool: spool.clone(),
                keep,
                finished: None,
                last_used: clock,
            },
        );
        inner.generated.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: LOG_TARGET, key = %hex(&key), keep, "pack cache: generating");
        let writer = SpoolWriter {
            spool: spool.clone(),
        };
        Lookup::Generate(spool, writer)
    }

    /// The generation of `key` into `spool` is over (its writer ended it): keep the pack if
    /// its key was seen before and it fits the budget, else let it go once read.
    pub fn finish(&self, key: Key, spool: &Arc<Spool>) {
        let succeeded = matches!(spool.lock().end, Some(Ok(())));
        let size = spool.len();
        let mut state = self.lock();
        let Some(entry) = state.entries.get(&key) else {
            return;
        };
        if !Arc::ptr_eq(&entry.spool, spool) {
            return;
        }
        if !succeeded || !entry.keep || size > self.inner.config.max_bytes {
            state.entries.remove(&key);
            return;
        }
        if let Some(entry) = state.entries.get_mut(&key) {
            entry.finished = Some(Instant::now());
        }
        state.stored_bytes += size;
        self.inner.stored.fetch_add(1, Ordering::Relaxed);
        // Least recently used out until the budget holds.
        while state.stored_bytes > self.inner.config.max_bytes {
            let oldest = state
                .entries
                .iter()
                .filter(|(_, entry)| entry.finished.is_some())
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| *key);
            let Some(oldest) = oldest else { break };
            self.remove(&mut state, &oldest);
        }
    }

    /// Drop the finished entries older than the time to live.
    fn expire(&self, state: &mut State, now: Instant) {
        let ttl = self.inner.config.ttl;
        let expired: Vec<Key> = state
            .entries
            .iter()
            .filter(|(_, entry)| {
                entry
                    .finished
                    .is_some_and(|finished| now.saturating_duration_since(finished) >= ttl)
            })
            .map(|(key, _)| *key)
            .collect();
        for key in expired {
            self.remove(state, &key);
        }
    }

    fn remove(&self, state: &mut State, key: &Key) {
        if let Some(entry) = state.entries.remove(key) {
            if entry.finished.is_some() {
                state.stored_bytes = state.stored_bytes.saturating_sub(entry.spool.len());
                self.inner.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The bytes of the finished packs held now.
    pub fn stored_bytes(&self) -> u64 {
        self.lock().stored_bytes
    }
}

fn hex(key: &Key) -> String {
    key.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// One pack's bytes and progress marks, written once, read by any number of cursors.
pub struct Spool {
    state: Mutex<SpoolState>,
    changed: Condvar,
}

struct SpoolState {
    /// The first bytes.
    memory: Vec<u8>,
    memory_limit: usize,
    temp_dir: Option<PathBuf>,
    /// The bytes after `memory`, in an unlinked temporary file.
    file: Option<Arc<File>>,
    /// All bytes written so far (memory and file).
    len: u64,
    /// Progress messages, each at the byte offset where it was written.
    marks: Vec<(u64, Arc<str>)>,
    /// How the generation ended, once it has.
    end: Option<Result<(), String>>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Spool {
    fn new(memory_limit: usize, temp_dir: Option<PathBuf>) -> Self {
        Spool {
            state: Mutex::new(SpoolState {
                memory: Vec::new(),
                memory_limit,
                temp_dir,
                file: None,
                len: 0,
                marks: Vec::new(),
                end: None,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SpoolState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The bytes written so far.
    pub fn len(&self) -> u64 {
        self.lock().len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether some of the bytes went to a temporary file.
    pub fn spilled(&self) -> bool {
        self.lock().file.is_some()
    }

    /// End the spool: readers get `Err(message)` after the bytes, or the end. Only the
    /// first end counts.
    pub fn end(&self, result: Result<(), String>) {
        let mut state = self.lock();
        if state.end.is_none() {
            state.end = Some(result);
        }
        drop(state);
        self.changed.notify_all();
    }
}

/// Writes a [`Spool`]: the generator's end. The generator ends the spool when it is done
/// ([`SpoolWriter::end()`] or [`Spool::end()`]); until then, readers wait.
pub struct SpoolWriter {
    spool: Arc<Spool>,
}

impl std::fmt::Debug for SpoolWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolWriter").finish_non_exhaustive()
    }
}

impl SpoolWriter {
    /// A progress message, shown to each reader when it has read what was written so far.
    pub fn progress(&mut self, message: &[u8]) {
        let message: Arc<str> = String::from_utf8_lossy(message).into();
        let mut state = self.spool.lock();
        let at = state.len;
        state.marks.push((at, message));
        drop(state);
        self.spool.changed.notify_all();
    }

    /// The generation is over: readers get `Err(message)` after the bytes, or the end.
    pub fn end(self, result: Result<(), String>) {
        self.spool.end(result);
    }
}

impl Write for SpoolWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let mut state = self.spool.lock();
        let room = state.memory_limit.saturating_sub(state.memory.len());
        if room > 0 {
            let taken = room.min(data.len());
            state.memory.extend_from_slice(&data[..taken]);
            state.len += taken as u64;
            drop(state);
            self.spool.changed.notify_all();
            return Ok(taken);
        }
        let file = match &state.file {
            Some(file) => file.clone(),
            None => {
                let file = match &state.temp_dir {
                    Some(dir) => tempfile::tempfile_in(dir)?,
                    None => tempfile::tempfile()?,
                };
                let file = Arc::new(file);
                state.file = Some(file.clone());
                file
            }
        };
        let offset = state.len - state.memory.len() as u64;
        // The only writer: nobody else appends while the lock is released, and readers
        // read only below `len`.
        drop(state);
        file.write_all_at(data, offset)?;
        self.spool.lock().len += data.len() as u64;
        self.spool.changed.notify_all();
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a [`SpoolReader`] read next.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A progress message.
    Progress(Arc<str>),
    /// This many bytes of the pack, now in the caller's buffer.
    Data(usize),
    /// The end of the pack: complete, or the generation's error.
    End(Result<(), String>),
}

/// One reader's cursor over a [`Spool`].
#[derive(Debug)]
pub struct SpoolReader {
    spool: Arc<Spool>,
    offset: u64,
    next_mark: usize,
}

impl SpoolReader {
    /// A cursor at the start of `spool`.
    pub fn new(spool: Arc<Spool>) -> Self {
        SpoolReader {
            spool,
            offset: 0,
            next_mark: 0,
        }
    }

    /// The next event, waiting while the generator has nothing new; data comes in pieces of
    /// at most `buf.len()` bytes.
    pub fn next(&mut self, buf: &mut [u8]) -> io::Result<Event> {
        let mut state = self.spool.lock();
        loop {
            if let Some((at, message)) = state.marks.get(self.next_mark) {
                if *at <= self.offset {
                    self.next_mark += 1;
                    return Ok(Event::Progress(message.clone()));
                }
            }
            if self.offset < state.len && !buf.is_empty() {
                let mut until = state.len;
                if let Some((at, _)) = state.marks.get(self.next_mark) {
                    until = until.min(*at);
                }
                let wanted = usize::try_from(until - self.offset)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                let in_memory = state.memory.len() as u64;
                if self.offset < in_memory {
                    let start = self.offset as usize;
                    let n = wanted.min(state.memory.len() - start);
                    buf[..n].copy_from_slice(&state.memory[start..start + n]);
                    self.offset += n as u64;
                    return Ok(Event::Data(n));
                }
                let file = state
                    .file
                    .clone()
                    .ok_or_else(|| io::Error::other("the pack spool lost its temporary file"))?;
                drop(state);
                file.read_exact_at(&mut buf[..wanted], self.offset - in_memory)?;
                self.offset += wanted as u64;
                return Ok(Event::Data(wanted));
            }
            if let Some(end) = &state.end {
                return Ok(Event::End(end.clone()));
            }
            state = self
                .spool
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

#[cfg(test)]
mod tests;
