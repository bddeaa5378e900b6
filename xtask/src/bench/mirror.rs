//! The mirror scenarios, client and server together: `mirror-clone` (`packgate mirror` of
//! the fixture into a new directory against `git clone --mirror`) and `mirror-update` (a
//! mirror of the fixture brought up to date with its copy moved forward by
//! [`BEHIND`](super::BEHIND) commits: `packgate mirror` against `git fetch --prune` with
//! `remote.origin.mirror`).
//!
//! Each side fetches from its own server over a local path: packgate serves itself
//! (`packgate upload-pack`), git runs `git upload-pack` (`clone --no-local`, so that it does
//! not copy the object files instead; the update with `fetch.unpackLimit=1`, so that it
//! keeps the pack as packgate does). GNU time's CPU therefore counts
//! client and server, and its peak RSS is the larger of the two. Every run starts from a fresh
//! destination (removed, or a `cp -a` of the fixture, outside the timed region). The warm-up
//! run of each side is checked: the mirror's refs and `HEAD` equal the source's; the pack
//! column is the mirror's new pack (for an update: the bytes added).

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context as _};

use super::git::{isolate, path_str, Git};
use super::incremental::{ahead_append, ahead_copy};
use super::measure::{warm_up_then_time, Checked, Row, Sample, Server, Service, GNU_TIME};
use super::{BenchArgs, Scenario, BEHIND};

/// The two sides: packgate's client and server, git's.
fn sides(packgate: &Path, git: &Path) -> Vec<Server> {
    let side = |label: &str, program: &Path, is_packgate| Server {
        label: label.to_owned(),
        program: program.to_owned(),
        args: Vec::new(),
        service: Service::ReceivePack,
        is_packgate,
        bitmaps: false,
    };
    vec![
        side("packgate mirror", packgate, true),
        side("git clone --mirror / fetch", git, false),
    ]
}

/// The scenario's rows.
pub(super) fn measure(
    git: &Git,
    args: &BenchArgs,
    work: &Path,
    scenario: Scenario,
    packgate: &Path,
    base: &Path,
) -> anyhow::Result<(String, Vec<Row>)> {
    let update = scenario == Scenario::MirrorUpdate;
    let source = if update {
        ahead_copy(base, &ahead_append(git, args, base, BEHIND)?)?
    } else {
        base.to_owned()
    };
    let expected = state(git, &source)?;
    let mirror = work.join("mirror.git");
    let prepare = || -> anyhow::Result<()> {
        let _ = fs::remove_dir_all(&mirror);
        if update {
            let status = Command::new("cp")
                .arg("-a")
                .arg(base)
                .arg(&mirror)
                .status()
                .context("copying the fixture")?;
            ensure!(status.success(), "cp -a failed");
            let url = path_str(&source)?;
            for (key, value) in [
                ("remote.origin.url", url.as_str()),
                ("remote.origin.fetch", "+refs/*:refs/*"),
                ("remote.origin.mirror", "true"),
                // git keeps the pack, as packgate always does (else fewer than 100
                // objects become loose ones).
                ("fetch.unpackLimit", "1"),
            ] {
                git.run(Some(&mirror), &["config", key, value])?;
            }
        }
        Ok(())
    };
    let before = if update { pack_size(base)? } else { 0 };
    let servers = sides(packgate, git.program);
    let rows = warm_up_then_time(
        scenario.name(),
        &servers,
        args.runs,
        |_, server| {
            prepare()?;
            run(server, &source, &mirror, update, work)?;
            let got = state(git, &mirror)?;
            ensure!(
                got == expected,
                "the mirror's refs or HEAD differ from the source's"
            );
            let counted = git.run(Some(&mirror), &["count-objects", "-v"])?;
            let objects = counted
                .lines()
                .find_map(|line| line.strip_prefix("in-pack: "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            Ok(Checked {
                objects,
                pack_bytes: pack_size(&mirror)?.saturating_sub(before),
            })
        },
        |_, server| {
            prepare()?;
            run(server, &source, &mirror, update, work)
        },
    );
    let _ = fs::remove_dir_all(&mirror);
    let note = if update {
        format!(
            "a mirror of the fixture updated from its copy {BEHIND} commits ahead; client and \
             server together; pack = bytes added"
        )
    } else {
        "a new mirror of the fixture; client and server together".to_owned()
    };
    Ok((note, rows))
}

/// The refs (with values) and `HEAD` of a repository.
fn state(git: &Git, repo: &Path) -> anyhow::Result<(String, String)> {
    Ok((
        git.run(
            Some(repo),
            &["for-each-ref", "--format=%(objectname) %(refname)"],
        )?,
        git.run(Some(repo), &["symbolic-ref", "HEAD"])?,
    ))
}

fn pack_size(repo: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(repo.join("objects/pack"))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(".pack") {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// One run under GNU time.
fn run(
    server: &Server,
    source: &Path,
    mirror: &Path,
    update: bool,
    work: &Path,
) -> anyhow::Result<Sample> {
    let times = work.join("time");
    let stderr_path = work.join("stderr");
    let mut command = Command::new(GNU_TIME);
    command
        .args(["-f", "%e %U %S %M", "-o"])
        .arg(&times)
        .arg(&server.program);
    isolate(&mut command);
    match (server.is_packgate, update) {
        (true, _) => {
            command.args(["mirror", "--quiet"]).arg(source).arg(mirror);
        }
        (false, false) => {
            command
                // --no-local: through upload-pack, not a copy of the object files.
                .args(["clone", "--mirror", "--no-local", "--quiet"])
                .arg(source)
                .arg(mirror);
        }
        (false, true) => {
            command
                .env("GIT_DIR", mirror)
                .args(["fetch", "--quiet", "--prune", "origin"]);
        }
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path)?);
    super::measure::timed(command, server, &stderr_path, &times)
}
