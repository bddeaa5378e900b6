//! The push scenarios (`push-mirror`, `push-incremental`, and the recording and checks
//! `push-large` shares): a real `git push` recorded once through a `tee` wrapper, replayed
//! into a fresh copy of the server's repository per run, every report and the refs checked.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context as _};
use packgate_wire::pkt_line::{self, Decoded, Packet};

use super::{
    git::{path_str, Git},
    incremental::{ahead_append, ahead_copy},
    large_push,
    measure::{run_server, warm_up_then_time, Checked, Row, Sample, Server},
    results::human_size,
    BenchArgs, Scenario, BEHIND,
};

/// The all-zero object id: "no such ref" in a push command.
pub(super) const ZERO_OID: &str = "0000000000000000000000000000000000000000";

/// One `<old> <new> <ref>` command of a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PushCommand {
    pub(super) old: String,
    pub(super) new: String,
    pub(super) refname: String,
}

/// A recorded push and what every server must make of it.
pub(super) struct PushRequest {
    /// The bytes `git push` sent to receive-pack: commands, flush, pack.
    pub(super) file: PathBuf,
    /// The server's repository before the push; every run pushes into a fresh copy.
    pub(super) pristine: PathBuf,
    pub(super) commands: Vec<PushCommand>,
    /// The capabilities on the first command.
    pub(super) capabilities: String,
    /// Every ref of the server's repository after the push, name to value.
    pub(super) expected_refs: BTreeMap<String, String>,
    pub(super) pack_objects: u32,
    pub(super) pack_bytes: u64,
}

impl PushRequest {
    /// The line under the scenario's heading.
    pub(super) fn note(&self, scenario: Scenario) -> String {
        let what = match scenario {
            Scenario::PushMirror => {
                "`git push --mirror` of the fixture into an empty bare repository".to_owned()
            }
            Scenario::PushLarge => format!(
                "`git push` of one commit with a {} blob of zeros into an empty bare \
                 repository (the fixture is not used)",
                human_size(large_push::BLOB_BYTES)
            ),
            Scenario::PushLargeX4 => format!(
                "{} such pushes of a {} blob started at once, each into its own empty \
                 repository; peak RSS is the sum of the {0} processes' peaks, CPU their sum, \
                 wall time until the last ended",
                large_push::AT_ONCE,
                human_size(large_push::BLOB_BYTES)
            ),
            _ => format!(
                "`git push` of {BEHIND} new commits on the default branch (the fixture's \
                 `ahead{BEHIND}` copy) into a copy of the fixture"
            ),
        };
        format!(
            "{what}: {} ref update{}, a pack of {} objects ({}); the client's capabilities: \
             `{}`",
            self.commands.len(),
            if self.commands.len() == 1 { "" } else { "s" },
            self.pack_objects,
            human_size(self.pack_bytes),
            self.capabilities
        )
    }
}

/// Records the push of `scenario` and works out what the servers must do with it.
pub(super) fn push_request(
    git: &Git<'_>,
    work: &Path,
    args: &BenchArgs,
    base: &Path,
    scenario: Scenario,
) -> anyhow::Result<PushRequest> {
    let (client, pristine, refspecs) = match scenario {
        Scenario::PushMirror => {
            let empty = work.join("push-mirror.empty.git");
            let _ = fs::remove_dir_all(&empty);
            git.init(&empty, true)?;
            (base.to_owned(), empty, vec!["--mirror".to_owned()])
        }
        Scenario::PushLarge | Scenario::PushLargeX4 => {
            let (client, pristine, refspec) = large_push::client(git, work)?;
            (client, pristine, vec![refspec])
        }
        _ => {
            let append = ahead_append(git, args, base, BEHIND)?;
            let ahead = ahead_copy(base, &append)?;
            let refname = format!("refs/heads/{}", append.branch);
            (ahead, base.to_owned(), vec![format!("{refname}:{refname}")])
        }
    };
    eprintln!(
        "bench: {}: recording `git push {}`…",
        scenario.name(),
        refspecs.join(" ")
    );
    let file = work.join(format!("{}.request", scenario.name()));
    let pushed = capture_push(git, work, &client, &pristine, &refspecs, &file)?;

    let request = fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let (commands, capabilities, pack) = parse_push_request(&request)?;
    ensure!(!commands.is_empty(), "the recorded push has no commands");
    ensure!(
        pack.len() >= 32 && pack.starts_with(b"PACK"),
        "the recorded push does not end in a pack"
    );
    let pack_objects = u32::from_be_bytes([pack[8], pack[9], pack[10], pack[11]]);
    let pack_bytes = pack.len() as u64;

    // What the push must leave: the server's refs with the commands applied, which must be
    // the client's values of the pushed refs and what git itself made of the recorded push.
    let mut expected_refs = all_refs(git, &pristine)?;
    let client_refs = all_refs(git, &client)?;
    for command in &commands {
        let old = expected_refs
            .get(&command.refname)
            .map_or(ZERO_OID, String::as_str);
        ensure!(
            old == command.old,
            "the recorded push expects {} at {}, the server has {old}",
            command.refname,
            command.old
        );
        ensure!(
            client_refs.get(&command.refname) == Some(&command.new),
            "the recorded push sets {} to {}, which is not the client's value",
            command.refname,
            command.new
        );
        expected_refs.insert(command.refname.clone(), command.new.clone());
    }
    if scenario == Scenario::PushMirror {
        ensure!(
            expected_refs == client_refs,
            "the recorded mirror push does not update every ref of the client"
        );
    }
    ensure!(
        pushed == expected_refs,
        "git receive-pack left other refs than the recorded commands say: {}",
        ref_differences(&expected_refs, &pushed)
    );
    Ok(PushRequest {
        file,
        pristine,
        commands,
        capabilities,
        expected_refs,
        pack_objects,
        pack_bytes,
    })
}

/// Pushes from `client` into a copy of `pristine` with `git push <refspecs>` (options like
/// `--mirror` among them go before the repository), through a
/// wrapper that copies the client's side of the conversation into `file` before
/// `git receive-pack` reads it. Returns the refs the copy has afterwards.
pub(super) fn capture_push(
    git: &Git<'_>,
    work: &Path,
    client: &Path,
    pristine: &Path,
    refspecs: &[String],
    file: &Path,
) -> anyhow::Result<BTreeMap<String, String>> {
    let target = work.join("capture.git");
    copy_repo(pristine, &target)?;
    let wrapper = work.join("receive-pack-tee");
    fs::write(
        &wrapper,
        "#!/bin/sh\n\
         # What the client sends goes to a file, and on to git receive-pack, whose answers\n\
         # go straight back to the client.\n\
         tee \"$PACKGATE_BENCH_CAPTURE\" | \"$PACKGATE_BENCH_GIT\" receive-pack \"$@\"\n",
    )?;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))?;
    // A path relative to us would not be one for the wrapper.
    let git_program = if git.program.components().count() > 1 {
        fs::canonicalize(git.program)
            .with_context(|| format!("resolving {}", git.program.display()))?
    } else {
        git.program.to_owned()
    };
    let receive_pack = format!("--receive-pack={}", path_str(&wrapper)?);
    let target_str = path_str(&target)?;
    // `git push [<options>] <repository> [<refspec>…]`.
    let (options, refspecs): (Vec<&String>, Vec<&String>) =
        refspecs.iter().partition(|arg| arg.starts_with('-'));
    let mut push_args = vec!["push", receive_pack.as_str()];
    push_args.extend(options.iter().map(|arg| arg.as_str()));
    push_args.push(&target_str);
    push_args.extend(refspecs.iter().map(|arg| arg.as_str()));
    let mut command = git.command(Some(client));
    command
        .args(&push_args)
        .env("PACKGATE_BENCH_CAPTURE", file)
        .env("PACKGATE_BENCH_GIT", &git_program);
    git.finish(&mut command, &push_args, None)?;
    let refs = all_refs(git, &target)?;
    let _ = fs::remove_dir_all(&target);
    Ok(refs)
}

/// `cp -a from to`, after removing `to`; then the copy is written out (`sync -f`), so that
/// its dirty pages are not flushed while a server is timed.
pub(super) fn copy_repo(from: &Path, to: &Path) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(to);
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .context("running cp")?;
    ensure!(
        status.success(),
        "`cp -a {} {}` failed",
        from.display(),
        to.display()
    );
    let status = Command::new("sync")
        .arg("-f")
        .arg(to)
        .status()
        .context("running sync")?;
    ensure!(status.success(), "`sync -f {}` failed", to.display());
    Ok(())
}

/// Every ref of `repo`, name to value.
pub(super) fn all_refs(git: &Git<'_>, repo: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let out = git.run(
        Some(repo),
        &["for-each-ref", "--format=%(refname) %(objectname)"],
    )?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(name, oid)| (name.to_owned(), oid.to_owned()))
        .collect())
}

/// A short account of how `got` differs from `expected`.
pub(super) fn ref_differences(
    expected: &BTreeMap<String, String>,
    got: &BTreeMap<String, String>,
) -> String {
    let mut differences = Vec::new();
    for (name, oid) in expected {
        match got.get(name) {
            None => differences.push(format!("{name} missing")),
            Some(other) if other != oid => {
                differences.push(format!("{name} at {other}, not {oid}"));
            }
            Some(_) => {}
        }
    }
    for name in got.keys().filter(|name| !expected.contains_key(*name)) {
        differences.push(format!("unexpected {name}"));
    }
    let count = differences.len();
    differences.truncate(5);
    if count > differences.len() {
        differences.push(format!("… {} more", count - differences.len()));
    }
    differences.join(", ")
}

/// One pkt-line.
pub(super) enum Pkt<'a> {
    Flush,
    /// A delimiter (`0001`) or response-end (`0002`) packet.
    Special,
    Data(&'a [u8]),
}

/// The pkt-line at `*position` in `data`, or `None` at its end.
pub(super) fn next_pkt<'a>(
    data: &'a [u8],
    position: &mut usize,
) -> anyhow::Result<Option<Pkt<'a>>> {
    let rest = &data[*position..];
    if rest.is_empty() {
        return Ok(None);
    }
    let (packet, consumed) = match pkt_line::decode(rest)? {
        Decoded::Complete { packet, consumed } => (packet, consumed),
        Decoded::Incomplete { .. } => bail!("truncated pkt-line"),
    };
    *position += consumed;
    Ok(Some(match packet {
        Packet::Flush => Pkt::Flush,
        Packet::Delimiter | Packet::ResponseEnd => Pkt::Special,
        Packet::Data(payload) => Pkt::Data(payload),
    }))
}

/// A push as the client sends it: the commands, the capabilities of the first, and the pack.
pub(super) fn parse_push_request(
    request: &[u8],
) -> anyhow::Result<(Vec<PushCommand>, String, &[u8])> {
    let mut position = 0;
    let mut commands = Vec::new();
    let mut capabilities = String::new();
    loop {
        let line = match next_pkt(request, &mut position)? {
            None => bail!("the recorded push ends before the flush after its commands"),
            Some(Pkt::Flush) => break,
            Some(Pkt::Special) => bail!("a special packet among the recorded push's commands"),
            Some(Pkt::Data(line)) => line,
        };
        let line = String::from_utf8_lossy(line);
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let (command, caps) = line.split_once('\0').unwrap_or((line, ""));
        if commands.is_empty() {
            caps.trim().clone_into(&mut capabilities);
        }
        let fields: Vec<&str> = command.split(' ').collect();
        let [old, new, refname] = fields.as_slice() else {
            bail!("a bad command in the recorded push: {command:?}");
        };
        commands.push(PushCommand {
            old: (*old).to_owned(),
            new: (*new).to_owned(),
            refname: (*refname).to_owned(),
        });
    }
    if capabilities.split(' ').any(|cap| cap == "push-options") {
        while !matches!(next_pkt(request, &mut position)?, None | Some(Pkt::Flush)) {}
    }
    Ok((commands, capabilities, &request[position..]))
}

/// Checks a receive-pack response to `push`: the advertisement, then a report (on band 1 of
/// the side band when the client asked for it) with `unpack ok` and `ok` for every command.
pub(super) fn check_push_response(response: &Path, push: &PushRequest) -> anyhow::Result<()> {
    let data = fs::read(response)?;
    let mut position = 0;
    loop {
        match next_pkt(&data, &mut position)? {
            None => bail!("the response ends inside the advertisement"),
            Some(Pkt::Flush) => break,
            Some(Pkt::Data(line)) if line.starts_with(b"ERR ") => {
                bail!("the server sent {}", String::from_utf8_lossy(line).trim());
            }
            Some(_) => {}
        }
    }
    let sideband = push
        .capabilities
        .split(' ')
        .any(|cap| cap == "side-band-64k" || cap == "side-band");
    let report = if sideband {
        let mut report = Vec::new();
        while let Some(pkt) = next_pkt(&data, &mut position)? {
            let Pkt::Data(payload) = pkt else { break };
            match payload.first() {
                Some(1) => report.extend_from_slice(&payload[1..]),
                Some(2) => {}
                Some(3) => bail!(
                    "the server sent an error on band 3: {}",
                    String::from_utf8_lossy(&payload[1..]).trim()
                ),
                _ => bail!("a response packet without a side-band byte"),
            }
        }
        report
    } else {
        data[position..].to_vec()
    };

    let mut position = 0;
    let mut unpack = None;
    let mut accepted = HashSet::new();
    loop {
        let line = match next_pkt(&report, &mut position)? {
            None => bail!("the report ends without a flush"),
            Some(Pkt::Flush) => break,
            Some(Pkt::Special) => bail!("a special packet in the report"),
            Some(Pkt::Data(line)) => String::from_utf8_lossy(line).trim_end().to_owned(),
        };
        if let Some(status) = line.strip_prefix("unpack ") {
            unpack = Some(status.to_owned());
        } else if let Some(refname) = line.strip_prefix("ok ") {
            accepted.insert(refname.to_owned());
        } else if let Some(refused) = line.strip_prefix("ng ") {
            bail!("the server refused {refused}");
        } else if !line.starts_with("option ") {
            bail!("an unexpected report line {line:?}");
        }
    }
    ensure!(
        unpack.as_deref() == Some("ok"),
        "the report says unpack {}",
        unpack.as_deref().unwrap_or("nothing")
    );
    let missing: Vec<&str> = push
        .commands
        .iter()
        .filter(|command| !accepted.contains(&command.refname))
        .map(|command| command.refname.as_str())
        .collect();
    ensure!(
        missing.is_empty(),
        "the report has no `ok` for {} of {} refs, e.g. {}",
        missing.len(),
        push.commands.len(),
        missing[0]
    );
    Ok(())
}

/// Checks the repository after a push: exactly the expected refs, no quarantine left behind
/// and, with `fsck`, `git fsck` content.
pub(super) fn check_pushed_repo(
    git: &Git<'_>,
    repo: &Path,
    push: &PushRequest,
    fsck: bool,
) -> anyhow::Result<()> {
    let refs = all_refs(git, repo)?;
    ensure!(
        refs == push.expected_refs,
        "wrong refs after the push: {}",
        ref_differences(&push.expected_refs, &refs)
    );
    for entry in fs::read_dir(repo.join("objects"))? {
        let name = entry?.file_name();
        ensure!(
            !name.to_string_lossy().starts_with("tmp_objdir"),
            "a quarantine was left behind: objects/{}",
            name.to_string_lossy()
        );
    }
    if fsck {
        git.run(Some(repo), &["fsck", "--no-progress"])
            .context("the repository after the push")?;
    }
    Ok(())
}

/// Warm-up and check, then the interleaved timed runs, of one push.
pub(super) fn measure_push(
    git: &Git<'_>,
    work: &Path,
    scenario: Scenario,
    servers: &[Server],
    push: &PushRequest,
    runs: usize,
) -> Vec<Row> {
    let repo = work.join("push-target.git");
    let response = work.join("push-response");
    let checked = || Checked {
        objects: push.pack_objects,
        pack_bytes: push.pack_bytes,
    };
    let rows = warm_up_then_time(
        scenario.name(),
        servers,
        runs,
        |_, server| push_once(git, work, server, push, &repo, &response, true).map(|_| checked()),
        |_, server| push_once(git, work, server, push, &repo, &response, false),
    );
    let _ = fs::remove_dir_all(&repo);
    let _ = fs::remove_file(&response);
    rows
}

/// One push: a fresh copy of the server's repository (not timed), the timed server run, and
/// the checks of its response and of the repository (not timed).
pub(super) fn push_once(
    git: &Git<'_>,
    work: &Path,
    server: &Server,
    push: &PushRequest,
    repo: &Path,
    response: &Path,
    fsck: bool,
) -> anyhow::Result<Sample> {
    copy_repo(&push.pristine, repo)?;
    let sample = run_server(server, repo, &push.file, Some(response), work)?;
    check_push_response(response, push).context("the response")?;
    check_pushed_repo(git, repo, push, fsck)?;
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::git::input_file;

    fn pkt(text: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        pkt_line::encode_data(text, &mut out)?;
        Ok(out)
    }

    #[test]
    fn push_request_is_parsed() -> anyhow::Result<()> {
        let new = "1111111111111111111111111111111111111111";
        let mut request = pkt(format!(
            "{ZERO_OID} {new} refs/heads/main\0 report-status-v2 side-band-64k\n"
        )
        .as_bytes())?;
        request.extend(pkt(format!("{ZERO_OID} {new} refs/tags/v1\n").as_bytes())?);
        request.extend_from_slice(b"0000PACK\0\0\0\x02\0\0\0\x05");
        let (commands, capabilities, pack) = parse_push_request(&request)?;
        assert_eq!(capabilities, "report-status-v2 side-band-64k");
        assert_eq!(commands.len(), 2);
        assert_eq!(commands[1].refname, "refs/tags/v1");
        assert_eq!(commands[0].new, new);
        assert_eq!(pack, b"PACK\0\0\0\x02\0\0\0\x05");
        Ok(())
    }

    #[test]
    fn push_response_is_checked() -> anyhow::Result<()> {
        let command = |refname: &str| PushCommand {
            old: ZERO_OID.to_owned(),
            new: ZERO_OID.replace('0', "1"),
            refname: refname.to_owned(),
        };
        let push = PushRequest {
            file: PathBuf::new(),
            pristine: PathBuf::new(),
            commands: vec![command("refs/heads/main"), command("refs/tags/v1")],
            capabilities: "report-status side-band-64k".to_owned(),
            expected_refs: BTreeMap::new(),
            pack_objects: 0,
            pack_bytes: 0,
        };
        let respond = |report: &[&[u8]]| -> anyhow::Result<()> {
            let mut inner = Vec::new();
            for line in report {
                inner.extend(pkt(line)?);
            }
            inner.extend_from_slice(b"0000");
            let mut response = pkt(b"0000... capabilities^{}\0report-status side-band-64k\n")?;
            response.extend_from_slice(b"0000");
            response.extend(pkt(b"\x02progress\n")?);
            for chunk in inner.chunks(10) {
                let mut band = vec![1];
                band.extend_from_slice(chunk);
                response.extend(pkt(&band)?);
            }
            response.extend_from_slice(b"0000");
            let path = input_file()?;
            fs::write(&path, response)?;
            let result = check_push_response(&path, &push);
            let _ = fs::remove_file(&path);
            result
        };
        respond(&[
            b"unpack ok\n",
            b"ok refs/heads/main\n",
            b"ok refs/tags/v1\n",
        ])?;
        assert!(respond(&[b"unpack ok\n", b"ok refs/heads/main\n"]).is_err());
        assert!(respond(&[
            b"unpack ok\n",
            b"ok refs/heads/main\n",
            b"ng refs/tags/v1 no\n"
        ])
        .is_err());
        assert!(respond(&[b"unpack index-pack failed\n"]).is_err());
        Ok(())
    }
}
