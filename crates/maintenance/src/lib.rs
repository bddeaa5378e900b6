//! Repository maintenance without git: git's `maintenance run` tasks (`gc`, `loose-objects`,
//! `commit-graph`, `pack-refs`) with git's thresholds and configuration, and the safety rules
//! git follows: `gc.pid` (no two maintenance runs on one repository, git's or ours), new files
//! written and renamed into place before old ones are removed, and no unreachable object
//! younger than `gc.pruneExpire` removed.
//!
//! A full repack (`git repack -a -d -l` with `-A`'s handling of unreachable objects) walks
//! every ref, `HEAD`, reflog and index with `packgate-pack`'s enumeration, writes one pack with
//! its generator (stored deltas reused), indexes it in a quarantine directory, adds the
//! reverse index and the reachability bitmap, moves it into place (`.idx` last), writes the
//! unreachable objects of the old packs that are younger than the grace period as loose
//! objects with the pack's time, and only then deletes the old packs. Loose objects then go as
//! git's `prune-packed` and `prune --expire` would.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
pub mod lock;
pub mod reach;
mod repack;

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

pub use config::{Expiry, MaintenanceConfig};
pub use lock::{GcLock, LockError};
pub use repack::{geometric_split, needs_gc, GcNeed};

/// One of git's maintenance tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    /// `gc`: pack-refs, repack, prune, commit-graph as `git gc` does.
    Gc,
    /// `commit-graph`: write the commit-graph (split) for every ref.
    CommitGraph,
    /// `loose-objects`: pack loose objects and remove the loose copies.
    LooseObjects,
    /// `incremental-repack`: geometric repacking (git's uses a multi-pack-index instead).
    IncrementalRepack,
    /// `pack-refs`: `git pack-refs --all --prune`.
    PackRefs,
    /// `prefetch`: a client-side task; refused.
    Prefetch,
}

impl Task {
    /// Every task, in git's order of running them.
    pub const ALL: [Task; 6] = [
        Task::Prefetch,
        Task::LooseObjects,
        Task::IncrementalRepack,
        Task::Gc,
        Task::CommitGraph,
        Task::PackRefs,
    ];

    /// git's name of the task.
    pub fn name(self) -> &'static str {
        match self {
            Task::Gc => "gc",
            Task::CommitGraph => "commit-graph",
            Task::LooseObjects => "loose-objects",
            Task::IncrementalRepack => "incremental-repack",
            Task::PackRefs => "pack-refs",
            Task::Prefetch => "prefetch",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A task name git does not know.
#[derive(thiserror::Error, Debug)]
#[error("'{0}' is not a valid task")]
pub struct UnknownTask(pub String);

impl FromStr for Task {
    type Err = UnknownTask;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Task::ALL
            .into_iter()
            .find(|task| task.name() == name)
            .ok_or_else(|| UnknownTask(name.to_owned()))
    }
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--auto`: run each task only when git's threshold for it is met.
    pub auto: bool,
    /// `--task`: these tasks in this order; empty = the tasks `maintenance.<task>.enabled`
    /// selects (`gc` by default).
    pub tasks: Vec<Task>,
    /// Take `gc.pid` even if another run seems to hold it (`git gc --force`).
    pub force: bool,
    /// The most threads to walk and index with; `None` = every core.
    pub threads: Option<usize>,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Tasks that ran.
    pub ran: Vec<Task>,
    /// Tasks that `--auto` found nothing to do for.
    pub skipped: Vec<Task>,
    /// Packs written.
    pub packs_written: Vec<PathBuf>,
    /// Packs deleted.
    pub packs_deleted: usize,
    /// Unreachable objects younger than the grace period kept (in the cruft pack, or as loose
    /// objects with `gc.cruftPacks=false`).
    pub loosened: usize,
    /// The cruft pack written, if any.
    pub cruft_pack: Option<PathBuf>,
    /// Loose objects deleted because a pack holds them.
    pub pruned_packed: usize,
    /// Unreachable loose objects deleted (older than the grace period).
    pub pruned_unreachable: usize,
    /// Whether a `.bitmap` was written.
    pub bitmap: bool,
    /// Whether the commit-graph was written.
    pub commit_graph: bool,
    /// Steps that failed without stopping the run (a bitmap that could not be written…).
    pub warnings: Vec<String>,
}

/// Why maintenance failed.
#[derive(thiserror::Error, Debug)]
pub enum MaintenanceError {
    /// The repository could not be opened.
    #[error(transparent)]
    Open(#[from] packgate_protocol::repository::OpenError),
    /// Another maintenance holds `gc.pid` (or `maintenance.lock`).
    #[error(transparent)]
    Locked(#[from] LockError),
    /// `objects/maintenance.lock` exists: git's maintenance is running.
    #[error("lock file '{}' exists, skipping maintenance", .0.display())]
    MaintenanceLocked(PathBuf),
    /// A configuration value is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigValueError),
    /// The task is not implemented.
    #[error("the '{0}' task is not supported by packgate")]
    Unsupported(Task),
    /// Refs could not be read.
    #[error("could not read refs")]
    Refs(#[source] packgate_protocol::repository::RefsError),
    /// The reachability walk failed (a ref naming a missing object…).
    #[error("could not walk the repository's objects")]
    Enumerate(#[source] packgate_pack::EnumerateError),
    /// Writing the pack failed.
    #[error("could not write the pack")]
    WritePack(#[source] packgate_pack::WriteError),
    /// Indexing or moving the pack failed.
    #[error("could not index the pack")]
    Index(#[source] packgate_pack::ingest::IngestError),
    /// Reading an object failed.
    #[error("could not read object {id}")]
    Read {
        /// The object.
        id: gix_hash::ObjectId,
        /// Why.
        message: String,
    },
    /// A file operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Some tasks failed; the others ran.
    #[error("task '{task}' failed: {message}")]
    TaskFailed {
        /// The task.
        task: Task,
        /// Why.
        message: String,
    },
}

/// Run maintenance on the repository at `git_dir` (a git directory or a work tree).
///
/// With [`Options::auto`], returns an empty report without taking any lock when no task's
/// threshold is met, and returns `Ok` quietly when another maintenance holds the locks (as
/// `git maintenance run --auto` does).
pub fn run(git_dir: &Path, options: &Options) -> Result<Report, MaintenanceError> {
    let repo = packgate_protocol::repository::Repository::open(
        git_dir,
        packgate_protocol::repository::PathLookup::Lenient,
        None,
    )?;
    let config = MaintenanceConfig::from_config(repo.config())?;
    let tasks = if options.tasks.is_empty() {
        enabled_tasks(repo.config())
    } else {
        options.tasks.clone()
    };
    for task in &tasks {
        if *task == Task::Prefetch {
            return Err(MaintenanceError::Unsupported(*task));
        }
    }
    let mut report = Report::default();
    let mut due = Vec::new();
    for task in tasks {
        if !options.auto || repack::auto_condition(&repo, &config, task)? {
            due.push(task);
        } else {
            report.skipped.push(task);
        }
    }
    if due.is_empty() {
        return Ok(report);
    }
    let locks = match Locks::acquire(repo.git_dir(), options.force) {
        Ok(locks) => locks,
        Err(err) if options.auto => {
            tracing::info!(%err, "maintenance skipped");
            return Ok(report);
        }
        Err(err) => return Err(err),
    };
    // Under gc.pid: locks a killed writer left would stop pack-refs and the commit-graph.
    lock::clear_stale_locks(repo.git_dir());
    let mut failed = None;
    for task in due {
        locks.gc.touch();
        let result = repack::run_task(&repo, &config, task, options, &mut report);
        match result {
            Ok(()) => report.ran.push(task),
            Err(err) => {
                tracing::debug!(task = %task, %err, "maintenance task failed");
                failed.get_or_insert(match err {
                    MaintenanceError::TaskFailed { .. } => err,
                    err => MaintenanceError::TaskFailed {
                        task,
                        message: error_chain(&err),
                    },
                });
            }
        }
    }
    drop(locks);
    match failed {
        Some(err) => Err(err),
        None => Ok(report),
    }
}

/// Whether `--auto` maintenance has anything to do for `git_dir` with its default tasks: the
/// cheap check a server makes after a push before starting maintenance.
pub fn auto_needed(git_dir: &Path) -> Result<bool, MaintenanceError> {
    let repo = packgate_protocol::repository::Repository::open(
        git_dir,
        packgate_protocol::repository::PathLookup::Lenient,
        None,
    )?;
    let config = MaintenanceConfig::from_config(repo.config())?;
    for task in enabled_tasks(repo.config()) {
        if repack::auto_condition(&repo, &config, task)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn enabled_tasks(config: &gix_config::File) -> Vec<Task> {
    let mut tasks: Vec<Task> = Task::ALL
        .into_iter()
        .filter(|task| {
            let key = format!("maintenance.{}.enabled", task.name());
            config
                .boolean(key.as_str())
                .ok()
                .flatten()
                .unwrap_or(*task == Task::Gc)
        })
        .filter(|task| *task != Task::Prefetch)
        .collect();
    tasks.dedup();
    tasks
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// `gc.pid`, held for a run, after a look at git's `objects/maintenance.lock`.
struct Locks {
    gc: GcLock,
}

impl Locks {
    /// git's `maintenance run` holds `objects/maintenance.lock` while it runs any task (some
    /// of which never take `gc.pid`): while that file exists (and is not older than 12
    /// hours), nothing runs. packgate itself holds `gc.pid` only, whose staleness git can
    /// judge (a lock file left by a killed process would block every later run).
    fn acquire(git_dir: &Path, force: bool) -> Result<Locks, MaintenanceError> {
        let maintenance = git_dir.join("objects").join("maintenance.lock");
        if let Ok(meta) = std::fs::metadata(&maintenance) {
            let stale = meta
                .modified()
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|age| age > lock::STALE_AFTER);
            if !stale && !force {
                return Err(MaintenanceError::MaintenanceLocked(maintenance));
            }
        }
        Ok(Locks {
            gc: GcLock::acquire(git_dir, force)?,
        })
    }
}

/// The test-only stopping points: with `PACKGATE_TEST_MAINTENANCE_PAUSE=<phase>` in the
/// environment, maintenance announces `maintenance paused at <phase>` on standard error (and
/// creates the file `PACKGATE_TEST_MAINTENANCE_PAUSED` names, if set) when it reaches that
/// phase and waits there (at most two minutes) to be killed.
pub(crate) fn pause_point(phase: &str) {
    if std::env::var_os("PACKGATE_TEST_MAINTENANCE_PAUSE").is_some_and(|wanted| wanted == phase) {
        eprintln!("maintenance paused at {phase}");
        if let Some(marker) = std::env::var_os("PACKGATE_TEST_MAINTENANCE_PAUSED") {
            let _ = std::fs::write(marker, phase);
        }
        std::thread::sleep(std::time::Duration::from_secs(120));
    }
}
