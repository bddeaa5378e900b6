//! What every timed scenario shares: the servers under test, one run of a server under GNU
//! time, a row of samples per server, and their medians.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};

use super::git::isolate;

/// GNU time; its `-f` and `-o` options are what we need.
pub(super) const GNU_TIME: &str = "/usr/bin/time";

/// How a server is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Service {
    /// `<program> <args> --stateless-rpc <repo>` with `GIT_PROTOCOL=version=2`.
    UploadPackV2,
    /// `<program> <args> --stateless-rpc <repo>` without `GIT_PROTOCOL`: protocol v0, one
    /// request as the last POST of a v0 fetch over HTTP (wants, haves, `done`).
    UploadPackV0,
    /// `<program> <args> <repo>`, protocol v0: the advertisement, then the client's push.
    ReceivePack,
    /// `<program> <args> <repo>` without `GIT_PROTOCOL`: a v0 fetch over git:// or ssh, the
    /// advertisement first.
    UploadPackV0Stateful,
}

impl Service {
    /// The arguments after the server's own, and its environment.
    pub(super) fn add_args(self, command: &mut Command, repo: &Path) {
        match self {
            Service::UploadPackV2 => {
                command
                    .arg("--stateless-rpc")
                    .arg(repo)
                    .env("GIT_PROTOCOL", "version=2");
            }
            // `isolate` removed any `GIT_PROTOCOL`: protocol v0.
            Service::UploadPackV0 => {
                command.arg("--stateless-rpc").arg(repo);
            }
            Service::ReceivePack | Service::UploadPackV0Stateful => {
                command.arg(repo);
            }
        }
    }
}

/// One server under test.
#[derive(Clone)]
pub(super) struct Server {
    pub(super) label: String,
    pub(super) program: PathBuf,
    /// Arguments before `--stateless-rpc <repo>` or `<repo>`.
    pub(super) args: Vec<String>,
    pub(super) service: Service,
    pub(super) is_packgate: bool,
    /// Serves the bitmapped copy of the fixture.
    pub(super) bitmaps: bool,
}

/// What one run measured.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sample {
    pub(super) wall: Duration,
    pub(super) cpu: f64,
    pub(super) rss_kib: u64,
}

/// What a checked response held.
pub(super) struct Checked {
    pub(super) objects: u32,
    pub(super) pack_bytes: u64,
}

/// The row of a server in one scenario.
pub(super) struct Row {
    pub(super) label: String,
    pub(super) is_packgate: bool,
    pub(super) outcome: Result<(Checked, Vec<Sample>), String>,
}

/// Adds the sample of run `run` (0-based) of `runs` to `row`, or marks the row failed; says
/// which on stderr.
pub(super) fn record(
    row: &mut Row,
    scenario: &str,
    run: usize,
    runs: usize,
    result: anyhow::Result<Sample>,
) {
    let Ok((_, samples)) = &mut row.outcome else {
        return;
    };
    match result {
        Ok(sample) => {
            eprintln!(
                "bench: {scenario} run {}/{runs}: {} {:.3}s wall, {:.2}s CPU, {} MiB",
                run + 1,
                row.label,
                sample.wall.as_secs_f64(),
                sample.cpu,
                sample.rss_kib / 1024
            );
            samples.push(sample);
        }
        Err(err) => {
            eprintln!("bench: {} FAILED: {err:#}", row.label);
            row.outcome = Err(format!("run {}: {err:#}", run + 1));
        }
    }
}

/// Every server's warm-up, which checks what it served (`warm_up`), then `runs` timed runs
/// interleaved across the servers (`timed`); a server whose warm-up failed is not timed.
/// Both closures get the server's index and the server.
pub(super) fn warm_up_then_time(
    scenario: &str,
    servers: &[Server],
    runs: usize,
    mut warm_up: impl FnMut(usize, &Server) -> anyhow::Result<Checked>,
    mut timed: impl FnMut(usize, &Server) -> anyhow::Result<Sample>,
) -> Vec<Row> {
    let mut rows: Vec<Row> = servers
        .iter()
        .enumerate()
        .map(|(index, server)| {
            eprintln!("bench: {scenario}: warm-up and check of {}", server.label);
            let outcome = warm_up(index, server)
                .map(|checked| (checked, Vec::new()))
                .map_err(|err| format!("{err:#}"));
            if let Err(err) = &outcome {
                eprintln!("bench: {} FAILED: {err}", server.label);
            }
            Row {
                label: server.label.clone(),
                is_packgate: server.is_packgate,
                outcome,
            }
        })
        .collect();
    for run in 0..runs {
        for (index, server) in servers.iter().enumerate() {
            if rows[index].outcome.is_err() {
                continue;
            }
            let result = timed(index, server);
            record(&mut rows[index], scenario, run, runs, result);
        }
    }
    rows
}

pub(super) fn check_gnu_time() -> anyhow::Result<()> {
    let output = Command::new(GNU_TIME)
        .args(["-f", "%e %U %S %M", "true"])
        .output();
    match output {
        Ok(output) if output.status.success() => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            ensure!(
                parse_time_line(&stderr).is_ok(),
                "{GNU_TIME} is not GNU time (it printed {stderr:?}); \
                 install it with `apt-get install time`"
            );
            Ok(())
        }
        _ => bail!("GNU time is needed at {GNU_TIME}; install it with `apt-get install time`"),
    }
}

/// One run of `server` under GNU time, the response to `response` or `/dev/null`.
pub(super) fn run_server(
    server: &Server,
    repo: &Path,
    request: &Path,
    response: Option<&Path>,
    work: &Path,
) -> anyhow::Result<Sample> {
    let times = work.join("time");
    let stderr_path = work.join("stderr");
    let stdout = match response {
        Some(path) => File::create(path)?,
        None => File::create("/dev/null")?,
    };
    let mut command = Command::new(GNU_TIME);
    command
        .args(["-f", "%e %U %S %M", "-o"])
        .arg(&times)
        .arg(&server.program)
        .args(&server.args);
    isolate(&mut command);
    server.service.add_args(&mut command, repo);
    command
        .stdin(File::open(request)?)
        .stdout(stdout)
        .stderr(File::create(&stderr_path)?);
    timed(command, server, &stderr_path, &times)
}

/// Run `command` (GNU time around `server`, writing `times`; the server's standard error to
/// `stderr_path`) to its end: the wall time around it, GNU time's CPU and peak RSS.
pub(super) fn timed(
    mut command: Command,
    server: &Server,
    stderr_path: &Path,
    times: &Path,
) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("running {}", server.program.display()))?;
    let wall = started.elapsed();
    if !status.success() {
        let stderr = fs::read_to_string(stderr_path).unwrap_or_default();
        let stderr = stderr.trim();
        if stderr.is_empty() {
            bail!("{} failed ({status}) and printed nothing", server.label);
        }
        bail!("{} failed ({status}): {stderr}", server.label);
    }
    let (cpu, rss_kib) = parse_time_line(&fs::read_to_string(times)?)?;
    Ok(Sample { wall, cpu, rss_kib })
}

/// `(user + system seconds, max RSS in KiB)` from the last line GNU time wrote for
/// `-f '%e %U %S %M'`.
pub(super) fn parse_time_line(text: &str) -> anyhow::Result<(f64, u64)> {
    let line = text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_default();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [_, user, system, rss] = fields.as_slice() else {
        bail!("cannot read GNU time's output {text:?}");
    };
    let user: f64 = user.parse().context("user time")?;
    let system: f64 = system.parse().context("system time")?;
    let rss: u64 = rss.parse().context("max RSS")?;
    Ok((user + system, rss))
}

pub(super) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

pub(super) struct Summary {
    pub(super) wall: f64,
    pub(super) wall_min: f64,
    pub(super) wall_max: f64,
    pub(super) cpu: f64,
    pub(super) rss_mib: f64,
}

pub(super) fn summarize(samples: &[Sample]) -> Summary {
    let mut walls: Vec<f64> = samples.iter().map(|s| s.wall.as_secs_f64()).collect();
    let mut cpus: Vec<f64> = samples.iter().map(|s| s.cpu).collect();
    let wall = median(&mut walls);
    Summary {
        wall,
        wall_min: walls.first().copied().unwrap_or_default(),
        wall_max: walls.last().copied().unwrap_or_default(),
        cpu: median(&mut cpus),
        rss_mib: samples.iter().map(|s| s.rss_kib).max().unwrap_or_default() as f64 / 1024.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_line() -> anyhow::Result<()> {
        let (cpu, rss) =
            parse_time_line("Command exited with non-zero status 1\n1.50 0.25 0.50 2048\n")?;
        assert!((cpu - 0.75).abs() < 1e-9);
        assert_eq!(rss, 2048);
        Ok(())
    }

    #[test]
    fn medians() {
        assert!((median(&mut [3.0, 1.0, 2.0]) - 2.0).abs() < 1e-9);
        assert!((median(&mut [4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-9);
    }
}
