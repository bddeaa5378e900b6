//! The maintenance scenarios: `repack` (a full repack with a bitmap of the fixture:
//! `packgate maintenance run --task gc` against `git repack -a -d -b`) and `auto-gc`
//! (`packgate maintenance run --auto` against `git gc --auto` on the fixture after 100
//! pushes, each of which left a pack).
//!
//! Every run gets a fresh copy of the repository (outside the timed region); the server runs
//! under GNU time. The warm-up run of each server is checked: afterwards the repository must
//! hold exactly one pack (`git count-objects -v`) with every object the fixture had (and the
//! pushes added), every ref must still resolve, and `git rev-list --objects --all` must list
//! as many objects as before. The row's pack size is the size of the resulting pack, which is
//! what the target (≤ 1.1× git's) is about.
//!
//! Both servers see the same repository settings: `gc.autoDetach=false` (git's `gc --auto`
//! would otherwise return before its work is done). With `PACKGATE_BENCH_REPACK_ONLY=1` in the
//! environment both also get `gc.writeCommitGraph=false` and `gc.packRefs=false`, for trying the
//! scenario on a branch without the commit-graph and pack-refs writers.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context as _};

use super::git::{isolate, path_str, Git};
use super::measure::{warm_up_then_time, Checked, Row, Sample, GNU_TIME};
use super::{derived, Scenario};

/// How many pushes the `auto-gc` repository had.
pub(super) const PUSHES: usize = 100;

/// A maintenance command under test: `<program> <args> <repo>`.
pub(super) struct Maintainer {
    pub(super) label: &'static str,
    pub(super) program: PathBuf,
    pub(super) args: Vec<&'static str>,
    pub(super) is_packgate: bool,
}

/// The commands of `scenario` for packgate and git.
pub(super) fn maintainers(scenario: Scenario, packgate: &Path, git: &Path) -> Vec<Maintainer> {
    match scenario {
        Scenario::AutoGc => vec![
            Maintainer {
                label: "packgate maintenance run --auto",
                program: packgate.to_owned(),
                args: vec!["maintenance", "run", "--auto"],
                is_packgate: true,
            },
            Maintainer {
                label: "git gc --auto",
                program: git.to_owned(),
                args: vec!["gc", "--auto", "--quiet"],
                is_packgate: false,
            },
        ],
        _ => vec![
            Maintainer {
                label: "packgate maintenance run --task gc",
                program: packgate.to_owned(),
                args: vec!["maintenance", "run", "--task", "gc"],
                is_packgate: true,
            },
            Maintainer {
                label: "git repack -a -d -b",
                program: git.to_owned(),
                args: vec!["repack", "-a", "-d", "-b", "-q"],
                is_packgate: false,
            },
        ],
    }
}

/// The repository a scenario starts from: the fixture itself (`repack`), or its copy after
/// [`PUSHES`] pushes of one commit each, each in a pack of its own (`auto-gc`), cached beside
/// the fixture.
pub(super) fn source(git: &Git, base: &Path, scenario: Scenario) -> anyhow::Result<PathBuf> {
    let prepared = match scenario {
        Scenario::AutoGc => derived(base, &format!("pushed{PUSHES}"), |dir| {
            pushes(git, dir, PUSHES)
        })?,
        _ => base.to_owned(),
    };
    Ok(prepared)
}

/// `count` commits on the default branch, each adding a file, each written as its own pack
/// as a push above `receive.unpackLimit` leaves it.
fn pushes(git: &Git, repo: &Path, count: usize) -> anyhow::Result<()> {
    let head = git.run(Some(repo), &["symbolic-ref", "HEAD"])?;
    let head = head.trim().to_owned();
    let pack_base = path_str(&repo.join("objects/pack/pack"))?;
    for i in 0..count {
        let parent = git.run(Some(repo), &["rev-parse", "HEAD"])?;
        let parent = parent.trim().to_owned();
        let blob = git.run_with_input(
            Some(repo),
            &["hash-object", "-w", "--stdin"],
            format!("push {i}\n").as_bytes(),
        )?;
        let mut entries = git.run(Some(repo), &["ls-tree", "HEAD^{tree}"])?;
        entries.push_str(&format!("100644 blob {}\tpushed-{i}.txt\n", blob.trim()));
        let tree = git.run_with_input(Some(repo), &["mktree"], entries.as_bytes())?;
        let commit = git.run(
            Some(repo),
            &[
                "-c",
                "user.name=Bench",
                "-c",
                "user.email=bench@example.com",
                "commit-tree",
                tree.trim(),
                "-p",
                &parent,
                "-m",
                &format!("push {i}"),
            ],
        )?;
        let commit = commit.trim().to_owned();
        git.run_with_input(
            Some(repo),
            &["pack-objects", "--revs", "-q", &pack_base],
            format!("{commit}\n^{parent}\n").as_bytes(),
        )?;
        git.run(Some(repo), &["update-ref", &head, &commit, &parent])?;
    }
    git.run(Some(repo), &["prune-packed"])?;
    Ok(())
}

/// What a repository holds, to compare before and after maintenance.
#[derive(Debug, PartialEq, Eq)]
struct Contents {
    refs: String,
    objects: usize,
}

fn contents(git: &Git, repo: &Path) -> anyhow::Result<Contents> {
    let refs = git.run(
        Some(repo),
        &["for-each-ref", "--format=%(objectname) %(refname)"],
    )?;
    let listed = git.run(Some(repo), &["rev-list", "--objects", "--all"])?;
    Ok(Contents {
        refs,
        objects: listed.lines().count(),
    })
}

/// `git count-objects -v` as pairs.
fn count_objects(git: &Git, repo: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    let output = git.run(Some(repo), &["count-objects", "-v"])?;
    Ok(output
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(": ")?;
            Some((key.to_owned(), value.trim().parse().ok()?))
        })
        .collect())
}

/// The scenario's rows: every server's warm-up run checked, then `runs` timed runs each.
pub(super) fn measure(
    git: &Git,
    work: &Path,
    scenario: Scenario,
    maintainers: &[Maintainer],
    source: &Path,
    runs: usize,
) -> anyhow::Result<Vec<Row>> {
    let expected = contents(git, source)?;
    eprintln!(
        "bench: {}: {} objects, {} packs",
        scenario.name(),
        expected.objects,
        count_objects(git, source)?
            .iter()
            .find(|(key, _)| key == "packs")
            .map_or(0, |(_, value)| *value)
    );
    let copy = work.join("maintained.git");
    let prepare = || -> anyhow::Result<()> {
        let _ = fs::remove_dir_all(&copy);
        let status = Command::new("cp")
            .arg("-a")
            .arg(source)
            .arg(&copy)
            .status()
            .context("copying the repository")?;
        ensure!(status.success(), "cp -a failed");
        git.run(Some(&copy), &["config", "gc.autoDetach", "false"])?;
        if std::env::var_os("PACKGATE_BENCH_REPACK_ONLY").is_some() {
            git.run(Some(&copy), &["config", "gc.writeCommitGraph", "false"])?;
            git.run(Some(&copy), &["config", "gc.packRefs", "false"])?;
        }
        Ok(())
    };
    let servers: Vec<super::measure::Server> = maintainers
        .iter()
        .map(|maintainer| super::measure::Server {
            label: maintainer.label.to_owned(),
            program: maintainer.program.clone(),
            args: maintainer
                .args
                .iter()
                .map(|arg| (*arg).to_owned())
                .collect(),
            service: super::measure::Service::ReceivePack,
            is_packgate: maintainer.is_packgate,
            bitmaps: false,
        })
        .collect();
    let rows = warm_up_then_time(
        scenario.name(),
        &servers,
        runs,
        |_, server| {
            prepare()?;
            run_maintenance(server, &copy, work)?;
            let counted = count_objects(git, &copy)?;
            let value = |key: &str| {
                counted
                    .iter()
                    .find(|(name, _)| name == key)
                    .map_or(0, |(_, value)| *value)
            };
            ensure!(
                value("packs") == 1,
                "{} packs afterwards, not one: {counted:?}",
                value("packs")
            );
            let after = contents(git, &copy)?;
            ensure!(
                after == expected,
                "objects or refs differ after maintenance"
            );
            let pack_bytes = pack_size(&copy)?;
            let objects = u32::try_from(value("in-pack")).unwrap_or(u32::MAX);
            Ok(Checked {
                objects,
                pack_bytes,
            })
        },
        |_, server| {
            prepare()?;
            run_maintenance(server, &copy, work)
        },
    );
    let _ = fs::remove_dir_all(&copy);
    Ok(rows)
}

/// The size of the repository's `.pack` files together.
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
fn run_maintenance(
    server: &super::measure::Server,
    repo: &Path,
    work: &Path,
) -> anyhow::Result<Sample> {
    let times = work.join("time");
    let stderr_path = work.join("stderr");
    let mut command = Command::new(GNU_TIME);
    command
        .args(["-f", "%e %U %S %M", "-o"])
        .arg(&times)
        .arg(&server.program)
        .args(&server.args);
    isolate(&mut command);
    // git's commands find the repository through GIT_DIR; packgate takes it as an argument.
    if server.is_packgate {
        command.arg(repo);
    } else {
        command.env("GIT_DIR", repo);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path)?);
    super::measure::timed(command, server, &stderr_path, &times)
}
