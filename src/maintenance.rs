//! `packgate maintenance run`, and maintenance started after pushes: detached for a stdio
//! `receive-pack` (git's `receive.autogc`), on a background thread for `serve` and `daemon`
//! (one per repository at a time, holding a CPU slot of the server's budget), and on a
//! schedule for `serve`.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, Mutex},
};

use clap::{Args, Subcommand};
use packgate_maintenance::{MaintenanceError, Options, Task};

/// `packgate maintenance …`.
#[derive(Args)]
pub(crate) struct MaintenanceArgs {
    #[command(subcommand)]
    command: MaintenanceCommand,
}

#[derive(Subcommand)]
enum MaintenanceCommand {
    /// Run maintenance tasks on a repository (git's `maintenance run`).
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Run each task only when git's threshold for it is met (gc.auto, gc.autoPackLimit…).
    #[arg(long)]
    auto: bool,
    /// Run this task (gc, loose-objects, commit-graph, pack-refs); may be repeated.
    #[arg(long = "task", value_name = "TASK")]
    tasks: Vec<String>,
    /// Run even if gc.pid says another maintenance is running.
    #[arg(long)]
    force: bool,
    /// Print nothing but errors (the default; accepted as git's `--quiet`).
    #[arg(long)]
    quiet: bool,
    /// The repository: a bare repository or a work tree.
    directory: PathBuf,
}

pub(crate) fn maintenance(args: MaintenanceArgs) -> anyhow::Result<ExitCode> {
    let MaintenanceCommand::Run(args) = args.command;
    let mut tasks = Vec::new();
    for name in &args.tasks {
        let task: Task = name.parse()?;
        if tasks.contains(&task) {
            anyhow::bail!("task '{name}' cannot be selected multiple times");
        }
        tasks.push(task);
    }
    let options = Options {
        auto: args.auto,
        tasks,
        force: args.force,
        threads: None,
    };
    let report = packgate_maintenance::run(&args.directory, &options)?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    tracing::info!(?report, "maintenance done");
    Ok(ExitCode::SUCCESS)
}

/// Whether `receive.autogc` (default true) asks for maintenance after a push.
fn autogc_enabled(config: &gix_config::File) -> bool {
    config
        .boolean("receive.autogc")
        .ok()
        .flatten()
        .unwrap_or(true)
}

/// After a push over stdio: start `packgate maintenance run --auto` in its own process group,
/// detached, when `receive.autogc` allows it and git's thresholds say so.
pub(crate) fn spawn_auto_after_push(git_dir: &Path, config: &gix_config::File) {
    if !autogc_enabled(config) {
        return;
    }
    match packgate_maintenance::auto_needed(git_dir) {
        Ok(true) => {}
        Ok(false) => return,
        Err(err) => {
            tracing::debug!(%err, "not starting maintenance");
            return;
        }
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            tracing::warn!(%err, "cannot start maintenance: own executable unknown");
            return;
        }
    };
    use std::os::unix::process::CommandExt;
    let spawned = std::process::Command::new(exe)
        .args(["maintenance", "run", "--auto", "--quiet"])
        .arg(git_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    match spawned {
        // Not waited for: it outlives this session; init reaps it.
        Ok(child) => tracing::debug!(pid = child.id(), "auto maintenance started"),
        Err(err) => tracing::warn!(%err, "could not start auto maintenance"),
    }
}

/// Maintenance in a server process: at most one run per repository at a time, each on its own
/// thread holding one CPU slot of the server's budget while it works.
#[derive(Clone)]
pub(crate) struct Maintainer {
    budget: packgate::protocol::budget::Budget,
    running: Arc<Mutex<HashSet<PathBuf>>>,
}

impl Maintainer {
    pub(crate) fn new(budget: packgate::protocol::budget::Budget) -> Self {
        Maintainer {
            budget,
            running: Arc::default(),
        }
    }

    /// Start `--auto` maintenance of `git_dir` in the background unless one is running there.
    pub(crate) fn start(&self, git_dir: &Path, auto: bool) {
        let git_dir = git_dir.to_owned();
        {
            let Ok(mut running) = self.running.lock() else {
                return;
            };
            if !running.insert(git_dir.clone()) {
                return;
            }
        }
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("maintenance".into())
            .spawn(move || {
                this.run(&git_dir, auto);
                if let Ok(mut running) = this.running.lock() {
                    running.remove(&git_dir);
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(%err, "could not start maintenance");
        }
    }

    fn run(&self, git_dir: &Path, auto: bool) {
        if auto && !matches!(packgate_maintenance::auto_needed(git_dir), Ok(true)) {
            return;
        }
        let grant = self.budget.acquire(
            "maintenance",
            packgate::protocol::budget::Demand {
                threads: 1,
                memory: 256 << 20,
            },
            &|| false,
        );
        let grant = match grant {
            Ok(grant) => grant,
            Err(err) => {
                tracing::info!(%err, repository = %git_dir.display(), "maintenance postponed");
                return;
            }
        };
        let options = Options {
            auto,
            threads: Some(grant.threads()),
            ..Options::default()
        };
        match packgate_maintenance::run(git_dir, &options) {
            Ok(report) => {
                tracing::info!(repository = %git_dir.display(), ran = ?report.ran, "maintenance done")
            }
            Err(MaintenanceError::Locked(err)) => {
                tracing::info!(%err, repository = %git_dir.display(), "maintenance skipped")
            }
            Err(err) => {
                tracing::warn!(%err, repository = %git_dir.display(), "maintenance failed")
            }
        }
        drop(grant);
    }
}

/// The in-process hook of `serve` and `daemon`: after a push that moved refs, `--auto`
/// maintenance in the background when `receive.autogc` allows it.
pub(crate) struct AutoMaintenanceHook {
    pub(crate) maintainer: Maintainer,
}

impl packgate::hooks::Hook for AutoMaintenanceHook {
    fn post_receive(
        &self,
        ctx: &packgate::hooks::HookContext<'_>,
        updates: &[packgate::hooks::RefUpdate],
        _output: &mut dyn std::io::Write,
    ) {
        if updates.is_empty() {
            return;
        }
        let config = packgate::protocol::config::load(ctx.git_dir, None);
        if config.as_ref().is_ok_and(autogc_enabled) {
            self.maintainer.start(ctx.git_dir, true);
        }
    }
}
