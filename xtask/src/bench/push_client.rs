//! The `push-client` scenario: packgate's send-pack (`packgate push`) against `git push`,
//! both pushing [`BEHIND`] new commits on the default branch (the fixture's `ahead` copy)
//! into a fresh copy of the fixture served by `git receive-pack` — the same server for both,
//! so the difference is the client's work (advertisement, ancestry checks, enumeration, the
//! thin pack). Times are the client's process tree under GNU time, receive-pack included.
//!
//! The warm-up run of each client is checked: the server's ref must be the client's value
//! and the server must pass `git fsck`; the row's objects and pack size are what the push
//! added to the server's packs (`receive.unpackLimit=1` keeps the pack as received, with the
//! bases `index-pack --fix-thin` appended).

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context as _};

use super::git::{isolate, path_str, Git};
use super::incremental::{ahead_push, AheadPush};
use super::measure::{timed, warm_up_then_time, Checked, Row, Sample, Server, Service, GNU_TIME};
use super::{BenchArgs, Scenario, BEHIND};

/// The scenario's rows.
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
    let receive_pack = format!("--receive-pack={} receive-pack", path_str(git.program)?);
    let server_repo = work.join("push-client.server.git");
    let client_dir = path_str(&client)?;
    let clients = [
        Server {
            label: "packgate push".to_owned(),
            program: packgate.to_owned(),
            args: vec![
                "push".to_owned(),
                format!("--git-dir={client_dir}"),
                receive_pack.clone(),
            ],
            service: Service::ReceivePack,
            is_packgate: true,
            bitmaps: false,
        },
        Server {
            label: "git push".to_owned(),
            program: git.program.to_owned(),
            args: vec![
                format!("--git-dir={client_dir}"),
                "push".to_owned(),
                "-q".to_owned(),
                receive_pack,
            ],
            service: Service::ReceivePack,
            is_packgate: false,
            bitmaps: false,
        },
    ];
    let prepare = || -> anyhow::Result<(u64, u64)> {
        let _ = fs::remove_dir_all(&server_repo);
        let status = Command::new("cp")
            .arg("-a")
            .arg(base)
            .arg(&server_repo)
            .status()
            .context("copying the repository")?;
        ensure!(status.success(), "cp -a failed");
        // The push's pack is kept as received (completed), not exploded, to be measured.
        git.run(Some(&server_repo), &["config", "receive.unpackLimit", "1"])?;
        Ok((pack_size(&server_repo)?, in_pack(git, &server_repo)?))
    };
    let run = |client: &Server| -> anyhow::Result<Sample> {
        let times = work.join("time");
        let stderr_path = work.join("stderr");
        let mut command = Command::new(GNU_TIME);
        command
            .args(["-f", "%e %U %S %M", "-o"])
            .arg(&times)
            .arg(&client.program)
            .args(&client.args)
            .arg(&server_repo)
            .arg(&refspec);
        isolate(&mut command);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr_path)?);
        timed(command, client, &stderr_path, &times)
    };
    let rows = warm_up_then_time(
        Scenario::PushClient.name(),
        &clients,
        runs,
        |_, client| {
            let (bytes_before, objects_before) = prepare()?;
            run(client)?;
            let value = git.run(Some(&server_repo), &["rev-parse", &refname])?;
            ensure!(
                value.trim() == expected,
                "the server's {refname} is {}, not {expected}",
                value.trim()
            );
            git.run(
                Some(&server_repo),
                &["fsck", "--no-progress", "--no-dangling"],
            )?;
            let objects = in_pack(git, &server_repo)?.saturating_sub(objects_before);
            Ok(Checked {
                objects: u32::try_from(objects).unwrap_or(u32::MAX),
                pack_bytes: pack_size(&server_repo)?.saturating_sub(bytes_before),
            })
        },
        |_, client| {
            prepare()?;
            run(client)
        },
    );
    let _ = fs::remove_dir_all(&server_repo);
    Ok(rows)
}

/// `in-pack` of `git count-objects -v`.
fn in_pack(git: &Git<'_>, repo: &Path) -> anyhow::Result<u64> {
    let output = git.run(Some(repo), &["count-objects", "-v"])?;
    output
        .lines()
        .find_map(|line| line.strip_prefix("in-pack: "))
        .and_then(|value| value.trim().parse().ok())
        .context("no in-pack count")
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
