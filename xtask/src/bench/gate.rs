//! The `gate` scenario: a gated push against a direct push of the same change. The fixture's
//! `ahead10` copy pushes its default branch ([`BEHIND`] new commits) with `git push` over
//! git://, either straight to the upstream (`packgate serve` of a copy of the fixture) or to
//! a gate (`packgate serve` of another copy, `packgate.upstream` pointing at that same
//! upstream), which checks the push, forwards it upstream from its quarantine and then moves
//! its own ref. A third row is one upstream round trip (`git ls-remote` of the upstream), the
//! yardstick of the target: gated ≤ direct + one round trip + 10 %.
//!
//! Both servers run for the whole scenario; before every run (warm-up and timed) the
//! upstream and the gate are put back to the fixture's state: the branch reset and every
//! file the previous push added to `objects/` removed. The warm-up run of each row is checked:
//! upstream's branch (and the gate's, for the gated push) must be the client's value, and the
//! repositories must pass `git fsck`. Times are the `git push` process tree under GNU time
//! (the servers' work is inside the wall time, not in the CPU column).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context as _};

use super::git::{isolate, path_str, Git};
use super::incremental::{ahead_push, AheadPush};
use super::measure::{
    summarize, timed, warm_up_then_time, Checked, Row, Sample, Server, Service, GNU_TIME,
};
use super::server::{free_port, RunningServer};
use super::{BenchArgs, Scenario, BEHIND};

/// The repository's name below each server's root.
const REPO: &str = "repo.git";

/// A served copy of the fixture and what to put back before each run.
struct Served {
    repo: PathBuf,
    /// Every file below `objects/` of the fresh copy.
    objects: BTreeSet<PathBuf>,
}

impl Served {
    /// A copy of `base` at `<root>/repo.git` with `config` set.
    fn copy(
        git: &Git<'_>,
        base: &Path,
        root: &Path,
        config: &[(&str, &str)],
    ) -> anyhow::Result<Served> {
        fs::create_dir_all(root)?;
        let repo = root.join(REPO);
        let status = Command::new("cp")
            .arg("-a")
            .arg(base)
            .arg(&repo)
            .status()
            .context("copying the fixture")?;
        ensure!(status.success(), "cp -a failed");
        for (key, value) in config {
            git.run(Some(&repo), &["config", key, value])?;
        }
        let objects = files_below(&repo.join("objects"))?;
        Ok(Served { repo, objects })
    }

    /// The fixture's state again: `refname` at `value`, no object file the pushes added.
    fn reset(&self, git: &Git<'_>, refname: &str, value: &str) -> anyhow::Result<()> {
        git.run(Some(&self.repo), &["update-ref", refname, value])?;
        for file in files_below(&self.repo.join("objects"))? {
            if !self.objects.contains(&file) {
                fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
            }
        }
        Ok(())
    }
}

/// Every file below `dir`, recursively.
fn files_below(dir: &Path) -> anyhow::Result<BTreeSet<PathBuf>> {
    let mut files = BTreeSet::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                files.insert(entry.path());
            }
        }
    }
    Ok(files)
}

/// `packgate serve --git 127.0.0.1:<port> --http off <root>`, running.
fn serve(packgate: &Path, root: &Path, log: &Path) -> anyhow::Result<RunningServer> {
    let port = free_port()?;
    let arguments = vec![
        "serve".to_owned(),
        "--git".to_owned(),
        format!("127.0.0.1:{port}"),
        "--http".to_owned(),
        "off".to_owned(),
        path_str(root)?,
    ];
    RunningServer::start(packgate, &arguments, log, port)
}

/// The scenario's rows: the direct push, the gated push, one upstream round trip.
pub(super) fn measure(
    git: &Git<'_>,
    work: &Path,
    args: &BenchArgs,
    base: &Path,
    packgate: &Path,
    runs: usize,
) -> anyhow::Result<Vec<Row>> {
    let AheadPush {
        client,
        refname,
        refspec,
        expected,
    } = ahead_push(git, args, base, BEHIND)?;
    let original = git.run(Some(base), &["rev-parse", &refname])?;
    let original = original.trim().to_owned();

    let scratch = work.join("gate");
    let _ = fs::remove_dir_all(&scratch);
    let upstream = Served::copy(
        git,
        base,
        &scratch.join("upstream"),
        &[("daemon.receivepack", "true"), ("receive.autogc", "false")],
    )?;
    let upstream_server = serve(
        packgate,
        &scratch.join("upstream"),
        &work.join("upstream.log"),
    )?;
    let upstream_url = format!("git://{}/{REPO}", upstream_server.addr);
    let gate = Served::copy(
        git,
        base,
        &scratch.join("gate"),
        &[
            ("daemon.receivepack", "true"),
            ("receive.autogc", "false"),
            ("packgate.upstream", &upstream_url),
        ],
    )?;
    let gate_server = serve(packgate, &scratch.join("gate"), &work.join("gate.log"))?;
    let gate_url = format!("git://{}/{REPO}", gate_server.addr);
    eprintln!("bench: gate: upstream {upstream_url}, gate {gate_url}");

    let client_dir = path_str(&client)?;
    let push = |label: &str, url: &str| Server {
        label: label.to_owned(),
        program: args.git.clone(),
        args: vec![
            format!("--git-dir={client_dir}"),
            "push".to_owned(),
            "-q".to_owned(),
            url.to_owned(),
            refspec.clone(),
        ],
        service: Service::ReceivePack,
        is_packgate: true,
        bitmaps: false,
    };
    let rows_of = [
        push("git push → upstream (direct)", &upstream_url),
        push("git push → gate → upstream", &gate_url),
        Server {
            label: "one upstream round trip (ls-remote)".to_owned(),
            program: args.git.clone(),
            args: vec![
                "ls-remote".to_owned(),
                upstream_url.clone(),
                refname.clone(),
            ],
            service: Service::ReceivePack,
            // No ratio columns: the rows are compared below, as the target says.
            is_packgate: true,
            bitmaps: false,
        },
    ];
    let prepare = || -> anyhow::Result<()> {
        upstream.reset(git, &refname, &original)?;
        gate.reset(git, &refname, &original)
    };
    let run = |row: &Server| -> anyhow::Result<Sample> {
        let times = work.join("time");
        let stderr_path = work.join("stderr");
        let mut command = Command::new(GNU_TIME);
        command
            .args(["-f", "%e %U %S %M", "-o"])
            .arg(&times)
            .arg(&row.program)
            .args(&row.args);
        isolate(&mut command);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr_path)?);
        timed(command, row, &stderr_path, &times)
    };
    let value = |repo: &Path| -> anyhow::Result<String> {
        Ok(git
            .run(Some(repo), &["rev-parse", &refname])?
            .trim()
            .to_owned())
    };
    let rows = warm_up_then_time(
        Scenario::Gate.name(),
        &rows_of,
        runs,
        |index, row| {
            prepare()?;
            run(row)?;
            upstream_server.check_alive()?;
            gate_server.check_alive()?;
            let (upstream_value, gate_value) = (value(&upstream.repo)?, value(&gate.repo)?);
            let want_upstream = if index == 2 { &original } else { &expected };
            ensure!(
                &upstream_value == want_upstream,
                "upstream's {refname} is {upstream_value}, not {want_upstream}"
            );
            if index == 1 {
                ensure!(
                    gate_value == expected,
                    "the gate's {refname} is {gate_value}, not {expected}"
                );
            }
            for repo in [&upstream.repo, &gate.repo] {
                git.run(Some(repo), &["fsck", "--no-progress", "--no-dangling"])?;
            }
            Ok(Checked {
                objects: 0,
                pack_bytes: 0,
            })
        },
        |_, row| {
            prepare()?;
            run(row)
        },
    );
    drop(gate_server);
    drop(upstream_server);
    let medians: Vec<Option<f64>> = rows
        .iter()
        .map(|row| {
            row.outcome
                .as_ref()
                .ok()
                .map(|(_, samples)| summarize(samples).wall)
        })
        .collect();
    if let [Some(direct), Some(gated), Some(round_trip)] = medians[..] {
        let target = round_trip + 0.1 * direct;
        eprintln!(
            "bench: gate: overhead {:.3} s ({:+.0} %) over the direct push; the target \
             (one round trip {round_trip:.3} s + 10 % of direct) is {target:.3} s: {}",
            gated - direct,
            (gated / direct - 1.0) * 100.0,
            if gated - direct <= target {
                "met"
            } else {
                "missed"
            }
        );
    }
    let _ = fs::remove_dir_all(&scratch);
    Ok(rows)
}
