//! One CPU and memory budget for the expensive work of a server process: pack generation
//! (enumeration, delta search, writing) and push ingestion (indexing a received pack).
//!
//! A [`Budget`] has a number of CPU slots and a number of memory bytes. Before it works, a
//! request asks for a [`Demand`] — how many threads it could use, and an estimate of the
//! memory it will hold — and gets a [`Grant`]: at least one slot (at most what it asked for)
//! and its memory. The grant gives everything back when dropped. A request that does not fit
//! waits in a queue; the queue is fair between clients: each client (an address, a user) has
//! its own line, and the lines are served round robin, so one client's ten clones take turns
//! with another client's one fetch instead of going first.
//!
//! Waiting is bounded ([`BudgetConfig::max_wait`]) and cancellable: the caller passes a
//! check that says when the client went away (the keepalive writer's, see
//! `upload_pack/fetch.rs`), and a cancelled or timed-out request leaves the queue at once.
//!
//! The budget is an object the embedding application creates and hands to the services
//! (`DaemonService::with_budget`, `HttpService::with_budget`, `UploadPack::with_budget`,
//! `ReceivePack::with_budget`); without one they share [`Budget::global()`], one per process
//! sized to the machine. Plain threads and a condition variable: no runtime.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock},
    time::{Duration, Instant},
};

/// How a [`Budget`] is sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetConfig {
    /// CPU slots: threads of pack generation and ingestion that may run at once.
    pub cpu_slots: usize,
    /// Bytes of working memory the requests may reserve together.
    pub memory_bytes: u64,
    /// The longest a request waits for its turn before it is refused.
    pub max_wait: Duration,
}

/// How long a request waits at most by default: long enough for a burst of clones to drain,
/// short enough that a client is told rather than kept forever.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(600);

/// The memory budget when the machine's memory cannot be read.
const FALLBACK_MEMORY_BYTES: u64 = 4 << 30;

impl BudgetConfig {
    /// Sized to this machine: a slot per core the process may use, half of the memory it
    /// may use ([`machine_memory()`]), and [`DEFAULT_MAX_WAIT`].
    pub fn for_machine() -> Self {
        BudgetConfig {
            cpu_slots: std::thread::available_parallelism().map_or(1, usize::from),
            memory_bytes: default_memory_bytes(),
            max_wait: DEFAULT_MAX_WAIT,
        }
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig::for_machine()
    }
}

/// The default memory budget: half of [`machine_memory()`] (the other half stays for the
/// page cache the packs are read through, the sessions' own buffers and other processes),
/// or 4 GiB when it cannot be read.
pub fn default_memory_bytes() -> u64 {
    machine_memory().map_or(FALLBACK_MEMORY_BYTES, |bytes| bytes / 2)
}

/// The memory this process may use: the machine's (`MemTotal` in `/proc/meminfo`), or its
/// control group's limit when that is lower (cgroup v2 `memory.max`, v1
/// `memory.limit_in_bytes`). `None` when neither can be read.
pub fn machine_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_meminfo_total(&text));
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|path| std::fs::read_to_string(path).ok())
    .find_map(|text| text.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(total), Some(limit)) => Some(total.min(limit)),
        (total, limit) => total.or(limit),
    }
}

/// `MemTotal:  16384 kB` in bytes.
fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    /// Threads it could use (at least one is granted, at most this many).
    pub threads: usize,
    /// Bytes of memory it expects to hold at most; more than the whole budget is taken as
    /// the whole budget (the request then runs alone).
    pub memory: u64,
}

/// Why a request did not get its turn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The caller's check said the client went away while it waited.
    #[error("the client went away while waiting for the server")]
    Cancelled,
    /// It waited [`BudgetConfig::max_wait`] without its turn coming.
    #[error("the server is busy (waited {0:?} for a turn); try again later")]
    TimedOut(Duration),
}

/// Counters of a [`Budget`], for logs, tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetStats {
    /// Requests granted so far.
    pub granted: u64,
    /// Of those, how many had to wait in the queue first.
    pub queued: u64,
    /// Requests that left the queue because their client went away.
    pub cancelled: u64,
    /// Requests refused after waiting too long.
    pub timed_out: u64,
    /// Requests waiting now.
    pub waiting: usize,
    /// Slots free now.
    pub free_slots: usize,
    /// Memory free now.
    pub free_memory: u64,
}

/// The process-wide budget of CPU slots and memory. Cloning shares it.
#[derive(Clone)]
pub struct Budget {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: BudgetConfig,
    state: Mutex<State>,
    changed: Condvar,
}

/// A waiting request.
struct Ticket {
    id: u64,
    demand: Demand,
}

#[derive(Default)]
struct State {
    free_slots: usize,
    free_memory: u64,
    /// One line per client with waiting requests, in the order they are served: the client
    /// at the front is served next, then goes to the back if it has more.
    lines: VecDeque<(String, VecDeque<Ticket>)>,
    /// Tickets granted but not yet collected by their waiter: slots and memory.
    granted: HashMap<u64, (usize, u64)>,
    next_ticket: u64,
    stats: BudgetStats,
}

impl State {
    fn waiting(&self) -> usize {
        self.lines.iter().map(|(_, line)| line.len()).sum()
    }

    /// Grant what fits, in turn: the front ticket of the front client's line, while it fits.
    /// A ticket that does not fit stops the dispatch, so large requests are not starved by
    /// small ones behind them.
    fn dispatch(&mut self, config: &BudgetConfig) -> bool {
        let mut any = false;
        loop {
            let waiting = self.waiting();
            let Some((_, line)) = self.lines.front_mut() else {
                break;
            };
            let Some(ticket) = line.front() else {
                self.lines.pop_front();
                continue;
            };
            let memory = ticket.demand.memory.min(config.memory_bytes);
            if self.free_slots == 0 || self.free_memory < memory {
                break;
            }
            // Share the free slots with those waiting: each gets its part, at least one.
            let share = (self.free_slots / waiting.max(1)).max(1);
            let slots = ticket.demand.threads.clamp(1, share);
            self.free_slots -= slots;
            self.free_memory -= memory;
            self.granted.insert(ticket.id, (slots, memory));
            line.pop_front();
            if let Some(served) = self.lines.pop_front() {
                if !served.1.is_empty() {
                    self.lines.push_back(served);
                }
            }
            any = true;
        }
        any
    }

    /// Take ticket `id` out of the queue (when its waiter gives up).
    fn remove(&mut self, id: u64) {
        for (_, line) in &mut self.lines {
            line.retain(|ticket| ticket.id != id);
        }
        self.lines.retain(|(_, line)| !line.is_empty());
    }
}

/// A request's share of the budget: given back when dropped.
#[must_use = "the budget is given back when the grant is dropped"]
pub struct Grant {
    shared: Arc<Shared>,
    slots: usize,
    memory: u64,
    waited: Duration,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("slots", &self.slots)
            .field("memory", &self.memory)
            .field("waited", &self.waited)
            .finish()
    }
}

impl Grant {
    /// Threads the request may run: the CPU slots it got.
    pub fn threads(&self) -> usize {
        self.slots
    }

    /// Memory reserved for it.
    pub fn memory(&self) -> u64 {
        self.memory
    }

    /// How long it waited for its turn.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        state.free_slots += self.slots;
        state.free_memory += self.memory;
        if state.dispatch(&shared.config) {
            shared.changed.notify_all();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state is consistent after every critical section: a panic elsewhere leaves it usable.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How often a waiting request asks whether its client is still there.
const POLL: Duration = Duration::from_millis(100);

impl Budget {
    /// A budget of `config`'s size (at least one slot and one byte).
    pub fn new(config: BudgetConfig) -> Self {
        let config = BudgetConfig {
            cpu_slots: config.cpu_slots.max(1),
            memory_bytes: config.memory_bytes.max(1),
            ..config
        };
        let state = State {
            free_slots: config.cpu_slots,
            free_memory: config.memory_bytes,
            ..State::default()
        };
        Budget {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(state),
                changed: Condvar::new(),
            }),
        }
    }

    /// The budget this process's services share unless given another: made on first use
    /// with [`BudgetConfig::for_machine()`].
    pub fn global() -> Budget {
        static GLOBAL: OnceLock<Budget> = OnceLock::new();
        GLOBAL
            .get_or_init(|| Budget::new(BudgetConfig::for_machine()))
            .clone()
    }

    /// Its size.
    pub fn config(&self) -> &BudgetConfig {
        &self.shared.config
    }

    /// Its counters now.
    pub fn stats(&self) -> BudgetStats {
        let state = lock(&self.shared.state);
        BudgetStats {
            waiting: state.waiting(),
            free_slots: state.free_slots,
            free_memory: state.free_memory,
            ..state.stats
        }
    }

    /// The delta-base cache one request may keep, in total over its threads: `configured`
    /// (`core.deltaBaseCacheLimit`), but no more than a quarter of a slot's share of the
    /// memory budget.
    pub fn delta_cache_bytes(&self, configured: usize) -> usize {
        let config = &self.shared.config;
        let share = config.memory_bytes / config.cpu_slots as u64 / 4;
        configured.min(usize::try_from(share).unwrap_or(usize::MAX))
    }

    /// Wait for `demand`'s turn as a request of `client`. `cancelled` is asked every 100 ms
    /// while waiting; when it says the client went away the request leaves the queue.
    pub fn acquire(
        &self,
        client: &str,
        demand: Demand,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Grant, BudgetError> {
        let shared = &self.shared;
        let started = Instant::now();
        let mut state = lock(&shared.state);
        let id = state.next_ticket;
        state.next_ticket += 1;
        let ticket = Ticket { id, demand };
        match state.lines.iter_mut().find(|(name, _)| name == client) {
            Some((_, line)) => line.push_back(ticket),
            None => state
                .lines
                .push_back((client.to_owned(), VecDeque::from([ticket]))),
        }
        if state.dispatch(&shared.config) {
            shared.changed.notify_all();
        }
        let mut queued = false;
        loop {
            if let Some((slots, memory)) = state.granted.remove(&id) {
                state.stats.granted += 1;
                if queued {
                    state.stats.queued += 1;
                }
                let waited = started.elapsed();
                drop(state);
                if queued {
                    tracing::debug!(
                        client,
                        slots,
                        memory,
                        ?waited,
                        "budget granted after waiting"
                    );
                }
                return Ok(Grant {
                    shared: Arc::clone(shared),
                    slots,
                    memory,
                    waited,
                });
            }
            if !queued {
                queued = true;
                tracing::info!(
                    client,
                    threads = demand.threads,
                    memory = demand.memory,
                    waiting = state.waiting(),
                    "request queued for the CPU and memory budget"
                );
            }
            let waited = started.elapsed();
            let gone = {
                // The check may take its own locks: not under ours.
                drop(state);
                let gone = cancelled();
                state = lock(&shared.state);
                gone
            };
            let error = if gone {
                state.stats.cancelled += 1;
                Some(BudgetError::Cancelled)
            } else if waited >= shared.config.max_wait {
                state.stats.timed_out += 1;
                Some(BudgetError::TimedOut(waited))
            } else {
                None
            };
            if let Some(error) = error {
                state.remove(id);
                // Granted meanwhile: give it back.
                if let Some((slots, memory)) = state.granted.remove(&id) {
                    state.free_slots += slots;
                    state.free_memory += memory;
                }
                if state.dispatch(&shared.config) {
                    shared.changed.notify_all();
                }
                tracing::info!(client, %error, "request left the budget's queue");
                return Err(error);
            }
            let timeout = POLL.min(shared.config.max_wait.saturating_sub(waited));
            state = match shared.changed.wait_timeout(state, timeout) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests;
