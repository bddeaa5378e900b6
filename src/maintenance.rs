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
    let mut command = std::process::Command::new(exe);
    command
        .args(["maintenance", "run", "--auto", "--quiet"])
        .arg(git_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    // git's gc.autoDetach=false: the push waits for it (git's own tests rely on that).
    let detach = config
        .boolean("gc.autoDetach")
        .ok()
        .flatten()
        .unwrap_or(true);
    if !detach {
        if let Err(err) = command.status() {
            tracing::warn!(%err, "could not run auto maintenance");
        }
        return;
    }
    let spawned = command.spawn();
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

/// The in-process hook of `serve`, `daemon` and `http-backend`: after a push that moved
/// refs, `--auto` maintenance in the background when `receive.autogc` allows it.
pub(crate) enum AutoMaintenanceHook {
    /// On a thread of this (long-running) process.
    InProcess(Maintainer),
    /// In a detached `packgate maintenance run --auto` (a process that ends with the request).
    Detached,
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
        let Ok(config) = packgate::protocol::config::load(ctx.git_dir, None) else {
            return;
        };
        match self {
            AutoMaintenanceHook::InProcess(maintainer) => {
                if autogc_enabled(&config) {
                    maintainer.start(ctx.git_dir, true);
                }
            }
            AutoMaintenanceHook::Detached => spawn_auto_after_push(ctx.git_dir, &config),
        }
    }
}

/// `serve`'s scheduled maintenance: every `interval`, `--auto` maintenance of each repository
/// below `root` (bare ones and work trees, at most four levels down), one at a time per
/// repository through `maintainer`.
pub(crate) fn start_schedule(maintainer: Maintainer, root: PathBuf, interval: std::time::Duration) {
    let spawned = std::thread::Builder::new()
        .name("maintenance-schedule".into())
        .spawn(move || loop {
            std::thread::sleep(interval);
            for repository in repositories_below(&root, 4) {
                maintainer.start(&repository, true);
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(%err, "could not start scheduled maintenance");
    }
}

/// Git directories below `root`: a directory with `HEAD`, `objects` and `refs` is one (and is
/// not descended into); `<dir>/.git` is one.
fn repositories_below(root: &Path, depth: usize) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_owned(), 0)];
    while let Some((dir, level)) = stack.pop() {
        let is_git_dir = |dir: &Path| {
            dir.join("HEAD").is_file() && dir.join("objects").is_dir() && dir.join("refs").is_dir()
        };
        if is_git_dir(&dir) {
            found.push(dir);
            continue;
        }
        if is_git_dir(&dir.join(".git")) {
            found.push(dir.join(".git"));
            continue;
        }
        if level >= depth {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                stack.push((entry.path(), level + 1));
            }
        }
    }
    found
}

/// A duration as `[maintenance] interval` takes it: seconds, or a number with `s`, `m`, `h`
/// or `d`.
pub(crate) fn parse_interval(text: &str) -> anyhow::Result<std::time::Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid interval '{text}'"))?;
    let seconds = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("invalid interval '{text}' (use s, m, h or d)"),
    };
    if number == 0 {
        anyhow::bail!("invalid interval '{text}': must be more than 0");
    }
    Ok(std::time::Duration::from_secs(
        number.saturating_mul(seconds),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1h").unwrap().as_secs(), 3600);
        assert_eq!(parse_interval("90").unwrap().as_secs(), 90);
        assert_eq!(parse_interval("2d").unwrap().as_secs(), 172_800);
        assert!(parse_interval("0m").is_err());
        assert!(parse_interval("1w").is_err());
    }
}
