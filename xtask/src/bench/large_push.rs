//! `cargo xtask bench push-large push-large-x4`: the memory a push of one large blob costs
//! the server, packgate against `git receive-pack`.
//!
//! The client is a fresh repository with one commit holding [`BLOB_BYTES`] of zeros (which
//! compress to about a thousandth of that); its `git push` into an empty bare repository is
//! recorded as for the other push scenarios and replayed to `<server> receive-pack <repo>`.
//! Three objects are fewer than `receive.unpackLimit`, so both servers write them as loose
//! objects (git's `unpack-objects` streams a blob above `core.bigFileThreshold` into its loose
//! object, and so does packgate).
//!
//! - `push-large`: one push at a time, as the other push scenarios.
//! - `push-large-x4`: [`AT_ONCE`] pushes started together, each into its own copy of the
//!   empty repository. A run's peak RSS is the sum of the four processes' peaks (for git, of
//!   each push the largest process of its tree, as GNU time reports it): what the machine must
//!   hold when the four peaks coincide, and what four concurrent pushes would cost one
//!   `packgate serve` process. Wall time is until the last push ended; CPU is the sum.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Instant;

use anyhow::{bail, Context as _};

use super::{
    git::{isolate, Git},
    measure::{parse_time_line, warm_up_then_time, Checked, Row, Sample, Server, GNU_TIME},
    push::{check_push_response, check_pushed_repo, copy_repo, PushRequest},
    Scenario,
};

/// The size of the pushed blob: 1 GiB.
pub(super) const BLOB_BYTES: u64 = 1 << 30;

/// How many pushes `push-large-x4` starts at once.
pub(super) const AT_ONCE: usize = 4;

/// The client (the git directory of a repository whose `main` holds one commit with the
/// blob), the server's
/// repository before the push (empty, bare) and the refspec to push.
pub(super) fn client(git: &Git<'_>, work: &Path) -> anyhow::Result<(PathBuf, PathBuf, String)> {
    let client = work.join("push-large.client");
    let pristine = work.join("push-large.empty.git");
    for dir in [&client, &pristine] {
        let _ = fs::remove_dir_all(dir);
    }
    git.init(&pristine, true)?;
    git.init(&client, false)?;
    let file = client.join("zeros.bin");
    eprintln!(
        "bench: push-large: writing {} of zeros…",
        super::results::human_size(BLOB_BYTES)
    );
    {
        let mut out =
            File::create(&file).with_context(|| format!("creating {}", file.display()))?;
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..BLOB_BYTES / chunk.len() as u64 {
            out.write_all(&chunk)?;
        }
        out.sync_all()?;
    }
    let work_tree = |args: &[&str]| -> anyhow::Result<String> {
        let mut command = git.command(None);
        command.current_dir(&client).args(args);
        git.finish(&mut command, args, None)
    };
    work_tree(&["add", "zeros.bin"])?;
    work_tree(&[
        "-c",
        "user.name=bench",
        "-c",
        "user.email=bench@example.invalid",
        "commit",
        "--quiet",
        "-m",
        "1 GiB of zeros",
    ])?;
    // The client's copy of the blob is not needed any more.
    fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
    // Its git directory: the push runs with `GIT_DIR` set.
    Ok((
        client.join(".git"),
        pristine,
        "refs/heads/main:refs/heads/main".to_owned(),
    ))
}

/// Warm-up and check of [`AT_ONCE`] concurrent pushes per server, then the interleaved timed
/// runs.
pub(super) fn measure_concurrent(
    git: &Git<'_>,
    work: &Path,
    scenario: Scenario,
    servers: &[Server],
    push: &PushRequest,
    runs: usize,
) -> Vec<Row> {
    let checked = || Checked {
        objects: push.pack_objects,
        pack_bytes: push.pack_bytes,
    };
    warm_up_then_time(
        scenario.name(),
        servers,
        runs,
        |_, server| push_at_once(git, work, server, push, true).map(|_| checked()),
        |_, server| push_at_once(git, work, server, push, false),
    )
}

/// One run: [`AT_ONCE`] fresh copies of the server's repository (not timed), the pushes
/// started together under GNU time, then the checks of every response and repository.
fn push_at_once(
    git: &Git<'_>,
    work: &Path,
    server: &Server,
    push: &PushRequest,
    fsck: bool,
) -> anyhow::Result<Sample> {
    struct Instance {
        repo: PathBuf,
        response: PathBuf,
        times: PathBuf,
        stderr: PathBuf,
    }
    let instances: Vec<Instance> = (0..AT_ONCE)
        .map(|index| Instance {
            repo: work.join(format!("push-large-{index}.git")),
            response: work.join(format!("push-large-{index}.response")),
            times: work.join(format!("push-large-{index}.time")),
            stderr: work.join(format!("push-large-{index}.stderr")),
        })
        .collect();
    for instance in &instances {
        copy_repo(&push.pristine, &instance.repo)?;
    }
    let started = Instant::now();
    let mut children: Vec<Child> = Vec::new();
    for instance in &instances {
        let mut command = Command::new(GNU_TIME);
        command
            .args(["-f", "%e %U %S %M", "-o"])
            .arg(&instance.times)
            .arg(&server.program)
            .args(&server.args)
            .arg(&instance.repo);
        isolate(&mut command);
        command
            .stdin(File::open(&push.file)?)
            .stdout(File::create(&instance.response)?)
            .stderr(File::create(&instance.stderr)?);
        match command.spawn() {
            Ok(child) => children.push(child),
            Err(err) => {
                for mut child in children {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(err).with_context(|| format!("running {}", server.program.display()));
            }
        }
    }
    let mut statuses = Vec::new();
    for mut child in children {
        statuses.push(child.wait()?);
    }
    let wall = started.elapsed();
    let mut cpu = 0.0;
    let mut rss_kib = 0;
    for (instance, status) in instances.iter().zip(statuses) {
        if !status.success() {
            let stderr = fs::read_to_string(&instance.stderr).unwrap_or_default();
            bail!("{} failed ({status}): {}", server.label, stderr.trim());
        }
        let (seconds, peak) = parse_time_line(&fs::read_to_string(&instance.times)?)?;
        cpu += seconds;
        rss_kib += peak;
        check_push_response(&instance.response, push).context("the response")?;
        check_pushed_repo(git, &instance.repo, push, fsck)?;
    }
    for instance in &instances {
        let _ = fs::remove_dir_all(&instance.repo);
        for file in [&instance.response, &instance.times, &instance.stderr] {
            let _ = fs::remove_file(file);
        }
    }
    Ok(Sample { wall, cpu, rss_kib })
}
