//! Push sessions in memory: a client's commands and pack in, the report parsed back, against
//! repositories built with git; in-process hooks included.

use std::{path::Path, process::Command};

use bstr::ByteSlice;
use packgate_wire::{
    pkt_line::{self, decode, Decoded, Packet},
    sideband::{demux, SidebandMode},
};

use super::{hooks::SecretScanner, ReceivePack, ReceivePackOptions};
use crate::repository::{PathLookup, Repository};

const NULL: &str = "0000000000000000000000000000000000000000";

fn git(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "A")
        .env("GIT_AUTHOR_EMAIL", "a@example.com")
        .env("GIT_COMMITTER_NAME", "A")
        .env("GIT_COMMITTER_EMAIL", "a@example.com")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        output.stderr.as_bstr()
    );
    output.stdout
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap().trim().to_owned()
}

/// A bare server repository, and a client repository with one commit holding `content`;
/// returns the directories, the commit id and a pack of everything in it.
fn setup(content: &str) -> (tempfile::TempDir, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "--bare", "server.git"], None);
    git(dir.path(), &["init", "-q", "client"], None);
    let client = dir.path().join("client");
    std::fs::write(client.join("file"), content).unwrap();
    git(&client, &["add", "file"], None);
    git(&client, &["commit", "-q", "-m", "one"], None);
    let commit = text(git(&client, &["rev-parse", "HEAD"], None));
    let pack = git(
        &client,
        &["pack-objects", "--stdout", "--revs", "-q"],
        Some(format!("{commit}\n").as_bytes()),
    );
    (dir, commit, pack)
}

/// The client's request: one command creating `refs/heads/main`, then the pack.
fn request(commit: &str, capabilities: &str, pack: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    pkt_line::encode_text(
        format!("{NULL} {commit} refs/heads/main\0{capabilities}"),
        &mut out,
    )
    .unwrap();
    pkt_line::encode_flush(&mut out);
    out.extend_from_slice(pack);
    out
}

fn packets(mut bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(Decoded::Complete { packet, consumed }) = decode(bytes) {
        out.push(match packet {
            Packet::Data(data) => data.as_bstr().to_string(),
            other => other.kind_name().to_owned(),
        });
        bytes = &bytes[consumed..];
    }
    out
}

fn serve(receive_pack: &ReceivePack<'_>, input: &[u8]) -> (Option<super::PushReport>, Vec<u8>) {
    let mut output = Vec::new();
    let options = ReceivePackOptions {
        stateless: true,
        ..ReceivePackOptions::default()
    };
    let report = receive_pack.serve(input, &mut output, &options).unwrap();
    (report, output)
}

fn quarantines(server: &Path) -> usize {
    std::fs::read_dir(server.join("objects"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().contains("incoming"))
        })
        .count()
}

#[test]
fn push_in_memory_with_report_status() {
    let (dir, commit, pack) = setup("harmless\n");
    let server = dir.path().join("server.git");
    let repo = Repository::open(&server, PathLookup::Strict, None).unwrap();
    let receive_pack = ReceivePack::new(&repo)
        .unwrap()
        .with_hook(SecretScanner::new("BEGIN PRIVATE KEY"));
    let (report, output) = serve(&receive_pack, &request(&commit, "report-status", &pack));
    assert!(report.unwrap().all_ok());
    assert_eq!(
        packets(&output),
        ["unpack ok\n", "ok refs/heads/main\n", "flush-pkt"]
    );
    let tip = text(git(&server, &["rev-parse", "refs/heads/main"], None));
    assert_eq!(tip, commit);
    git(&server, &["fsck", "--strict"], None);
    assert_eq!(quarantines(&server), 0);
}

/// `session-id=<id>` is advertised only under `transfer.advertiseSID`, where git puts it
/// (after `push-options`, before the object format), and a client's own is accepted.
#[test]
fn the_session_id_is_advertised_as_configured() {
    let (dir, commit, pack) = setup("harmless\n");
    let server = dir.path().join("server.git");
    let repo = Repository::open(&server, PathLookup::Strict, None).unwrap();
    assert!(!ReceivePack::new(&repo)
        .unwrap()
        .capabilities()
        .contains("session-id"));
    git(&server, &["config", "transfer.advertiseSID", "true"], None);
    git(
        &server,
        &["config", "receive.advertisePushOptions", "true"],
        None,
    );
    let repo = Repository::open(&server, PathLookup::Strict, None).unwrap();
    let receive_pack = ReceivePack::new(&repo).unwrap();
    let capabilities = receive_pack.capabilities();
    let words: Vec<&str> = capabilities.split(' ').collect();
    let at = |prefix: &str| words.iter().position(|w| w.starts_with(prefix)).unwrap();
    assert!(at("push-options") < at("session-id=") && at("session-id=") < at("object-format="));
    let id = &words[at("session-id=")]["session-id=".len()..];
    assert!(!id.is_empty() && !id.contains(char::is_whitespace));
    let (report, _) = serve(
        &receive_pack,
        &request(&commit, "report-status session-id=client-1", &pack),
    );
    assert!(report.unwrap().all_ok());
}

#[test]
fn configured_secret_patterns_refuse_the_push() {
    let (dir, commit, pack) = setup("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n");
    let server = dir.path().join("server.git");
    for (key, value) in [
        ("packgate.denySecret", "BEGIN RSA PRIVATE KEY"),
        ("packgate.denySecret", "BEGIN OPENSSH PRIVATE KEY"),
    ] {
        git(&server, &["config", "--add", key, value], None);
    }
    let repo = Repository::open(&server, PathLookup::Strict, None).unwrap();
    let receive_pack = ReceivePack::new(&repo).unwrap();
    let (report, _) = serve(&receive_pack, &request(&commit, "report-status", &pack));
    let report = report.unwrap();
    assert!(report.refs[0].result.is_err(), "{report:?}");
    assert_eq!(quarantines(&server), 0);
    let moved = Command::new("git")
        .args(["rev-parse", "--verify", "-q", "refs/heads/main"])
        .current_dir(&server)
        .status()
        .unwrap();
    assert!(!moved.success(), "the refused push moved the ref");
}

#[test]
fn in_process_secret_scanner_refuses_and_leaves_nothing() {
    let (dir, commit, pack) = setup("-----BEGIN PRIVATE KEY-----\nabc\n");
    let server = dir.path().join("server.git");
    let repo = Repository::open(&server, PathLookup::Strict, None).unwrap();
    let receive_pack = ReceivePack::new(&repo)
        .unwrap()
        .with_hook(SecretScanner::new("BEGIN PRIVATE KEY"));
    let (report, output) = serve(
        &receive_pack,
        &request(&commit, "report-status side-band-64k", &pack),
    );
    let report = report.unwrap();
    assert!(report.unpack.is_ok());
    assert!(report.refs[0].result.is_err(), "{report:?}");
    // The report travels in band 1, the scanner's explanation in band 2.
    let (outer, rest) = split_sideband(&output);
    let demuxed = demux(&outer, SidebandMode::SideBand64k).unwrap();
    let report_lines = packets(&demuxed.data);
    assert_eq!(report_lines[0], "unpack ok\n");
    assert!(
        report_lines[1].starts_with("ng refs/heads/main "),
        "{report_lines:?}"
    );
    assert!(rest.is_empty());
    // Nothing of the push is in the repository.
    let exists = Command::new("git")
        .args(["cat-file", "-e", &commit])
        .current_dir(&server)
        .status()
        .unwrap();
    assert!(!exists.success(), "the refused commit is in the repository");
    assert_eq!(quarantines(&server), 0);
    git(&server, &["fsck", "--strict"], None);
}

/// The sideband stream up to and including its final flush, and what follows.
fn split_sideband(bytes: &[u8]) -> (Vec<u8>, &[u8]) {
    let mut offset = 0;
    while let Ok(Decoded::Complete { packet, consumed }) = decode(&bytes[offset..]) {
        offset += consumed;
        if packet == Packet::Flush {
            break;
        }
    }
    (bytes[..offset].to_vec(), &bytes[offset..])
}

#[test]
fn delete_only_push_needs_no_pack() {
    let (dir, commit, pack) = setup("content\n");
    let server = dir.path().join("server.git");
    let repo = Repository::open(&server, PathLookup::Strict, None).unwrap();
    let receive_pack = ReceivePack::new(&repo).unwrap();
    let (report, _) = serve(&receive_pack, &request(&commit, "report-status", &pack));
    assert!(report.unwrap().all_ok());
    let mut input = Vec::new();
    pkt_line::encode_text(
        format!("{commit} {NULL} refs/heads/main\0report-status"),
        &mut input,
    )
    .unwrap();
    pkt_line::encode_flush(&mut input);
    let (report, output) = serve(&receive_pack, &input);
    assert!(report.unwrap().all_ok());
    assert_eq!(
        packets(&output),
        ["unpack ok\n", "ok refs/heads/main\n", "flush-pkt"]
    );
}

#[test]
fn incomplete_pack_is_refused_as_missing_objects() {
    let (dir, commit, _) = setup("content\n");
    let client = dir.path().join("client");
    // Only the commit, without its tree and blob.
    let pack = git(
        &client,
        &["pack-objects", "--stdout", "-q"],
        Some(format!("{commit}\n").as_bytes()),
    );
    let server = dir.path().join("server.git");
    let repo = Repository::open(&server, PathLookup::Strict, None).unwrap();
    let receive_pack = ReceivePack::new(&repo).unwrap();
    let (report, output) = serve(&receive_pack, &request(&commit, "report-status", &pack));
    assert_eq!(
        packets(&output),
        [
            "unpack ok\n",
            "ng refs/heads/main missing necessary objects\n",
            "flush-pkt"
        ]
    );
    assert!(!report.unwrap().all_ok());
    assert_eq!(quarantines(&server), 0);
    git(&server, &["fsck", "--strict"], None);
}

#[test]
fn max_input_size_refuses_the_pack() {
    let (dir, commit, pack) = setup(&"x".repeat(10_000));
    let server = dir.path().join("server.git");
    git(&server, &["config", "receive.maxInputSize", "100"], None);
    let repo = Repository::open(&server, PathLookup::Strict, None).unwrap();
    let receive_pack = ReceivePack::new(&repo).unwrap();
    let (report, output) = serve(&receive_pack, &request(&commit, "report-status", &pack));
    let lines = packets(&output);
    assert!(
        lines[0].starts_with("unpack pack exceeds maximum allowed size"),
        "{lines:?}"
    );
    assert_eq!(lines[1], "ng refs/heads/main unpacker error\n");
    assert!(report.unwrap().unpack.is_err());
    assert_eq!(quarantines(&server), 0);
}

/// A pre-receive hook that thinks for a while, says so, and accepts.
struct SlowHook;

impl super::hooks::Hook for SlowHook {
    fn pre_receive(
        &self,
        _ctx: &super::hooks::HookContext<'_>,
        _updates: &[super::hooks::RefUpdate],
        output: &mut dyn std::io::Write,
    ) -> super::hooks::Verdict {
        let _ = output.write_all(b"thinking\n");
        std::thread::sleep(std::time::Duration::from_millis(80));
        let _ = output.write_all(b"done thinking\n");
        super::hooks::Verdict::Accept
    }
}

/// Push with a slow hook and a keepalive of a few milliseconds; returns the outer packets
/// (band byte included) and the report.
fn push_with_keepalive(
    capabilities: &str,
    keepalive: Option<std::time::Duration>,
) -> (Vec<Vec<u8>>, Vec<u8>) {
    let (dir, commit, pack) = setup("content\n");
    let server = dir.path().join("server.git");
    let repo = Repository::open(&server, PathLookup::Strict, None).unwrap();
    let mut receive_pack = ReceivePack::new(&repo).unwrap().with_hook(SlowHook);
    receive_pack.config.keepalive = keepalive;
    let (report, output) = serve(&receive_pack, &request(&commit, capabilities, &pack));
    assert!(report.unwrap().all_ok());
    let tip = text(git(&server, &["rev-parse", "refs/heads/main"], None));
    assert_eq!(tip, commit);
    let mut raw = Vec::new();
    let mut rest = &output[..];
    while let Ok(Decoded::Complete { packet, consumed }) = decode(rest) {
        raw.push(match packet {
            Packet::Data(data) => data.to_vec(),
            other => other.kind_name().as_bytes().to_vec(),
        });
        rest = &rest[consumed..];
    }
    assert!(rest.is_empty(), "not pkt-lines: {:?}", rest.as_bstr());
    (raw, output)
}

#[test]
fn keepalives_while_the_hooks_run_with_sideband() {
    let interval = std::time::Duration::from_millis(5);
    let (raw, output) = push_with_keepalive("report-status side-band-64k", Some(interval));
    let keepalive = |p: &Vec<u8>| p.as_slice() == [1];
    let thinking = raw.iter().position(|p| p == b"\x02thinking\n").unwrap();
    let done = raw
        .iter()
        .position(|p| p == b"\x02done thinking\n")
        .unwrap();
    // 80 ms of silence in the hook: keepalives, all between two whole packets.
    assert!(
        raw[thinking..done].iter().filter(|p| keepalive(p)).count() >= 3,
        "{raw:?}"
    );
    let bands = demux(&output, SidebandMode::SideBand64k).unwrap();
    assert_eq!(
        packets(&bands.data),
        ["unpack ok\n", "ok refs/heads/main\n", "flush-pkt"]
    );
    assert_eq!(bands.consumed, output.len());
}

#[test]
fn no_keepalives_without_sideband_or_when_disabled() {
    let interval = std::time::Duration::from_millis(5);
    let (plain, _) = push_with_keepalive("report-status", Some(interval));
    assert_eq!(
        plain,
        [
            b"unpack ok\n".to_vec(),
            b"ok refs/heads/main\n".to_vec(),
            b"flush-pkt".to_vec()
        ]
    );
    let (disabled, _) = push_with_keepalive("report-status side-band-64k", None);
    assert!(disabled.iter().all(|p| p.as_slice() != [1]), "{disabled:?}");
}

/// Without sideband, a refusal's explanation goes to the caller's message sink, and the
/// client's stream holds nothing but the report.
#[test]
fn messages_without_sideband_go_to_the_callers_sink() {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let (dir, commit, pack) = setup("-----BEGIN PRIVATE KEY-----\nabc\n");
    let server = dir.path().join("server.git");
    let repo = Repository::open(&server, PathLookup::Strict, None).unwrap();
    let receive_pack = ReceivePack::new(&repo)
        .unwrap()
        .with_hook(SecretScanner::new("BEGIN PRIVATE KEY"));
    let sink = Shared::default();
    let options = ReceivePackOptions {
        stateless: true,
        messages: super::MessageSink::writer(sink.clone()),
        ..ReceivePackOptions::default()
    };
    let mut output = Vec::new();
    let input = request(&commit, "report-status", &pack);
    let report = receive_pack
        .serve(&input[..], &mut output, &options)
        .unwrap()
        .unwrap();
    assert!(report.refs[0].result.is_err(), "{report:?}");
    let lines = packets(&output);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[1].starts_with("ng refs/heads/main "), "{lines:?}");
    let messages = sink.0.lock().unwrap().clone();
    assert!(
        messages
            .lines()
            .any(|line| line.starts_with(b"error: ") && line.ends_with(b"contains a secret")),
        "{:?}",
        messages.as_bstr()
    );
}

/// An in-process `proc-receive` hook: review refs in Rust. It takes the pushes to
/// `refs/for/<branch>/<topic>` that `receive.procReceiveRefs` reserves, reports each as
/// the review ref `refs/changes/<n>` with its new value, refuses `refs/for/<branch>/wip`,
/// and leaves `refs/for/<branch>/direct` to receive-pack.
struct ReviewRefs;

impl super::hooks::Hook for ReviewRefs {
    fn proc_receive(
        &self,
        _ctx: &super::hooks::HookContext<'_>,
        request: &super::hooks::ProcReceiveRequest<'_>,
        output: &mut dyn std::io::Write,
    ) -> super::hooks::ProcReceive {
        use super::hooks::{CommandResult, ProcReceive, RefReport};
        let results = request
            .commands
            .iter()
            .enumerate()
            .map(|(n, command)| {
                let _ = writeln!(output, "review< {}", command.name);
                if command.name.ends_with(b"/wip") {
                    CommandResult::Rejected("work in progress".into())
                } else if command.name.ends_with(b"/direct") {
                    CommandResult::FallThrough(Vec::new())
                } else {
                    CommandResult::Ok(vec![RefReport {
                        refname: Some(format!("refs/changes/{}", n + 1).into()),
                        new: Some(command.new),
                        ..RefReport::default()
                    }])
                }
            })
            .collect();
        ProcReceive::reported(results)
    }
}

/// A push of `names`, each created at `commit`, with `capabilities` on the first command.
fn request_for(names: &[&str], commit: &str, capabilities: &str, pack: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let line = if index == 0 {
            format!("{NULL} {commit} {name}\0{capabilities}")
        } else {
            format!("{NULL} {commit} {name}")
        };
        pkt_line::encode_text(line, &mut out).unwrap();
    }
    pkt_line::encode_flush(&mut out);
    out.extend_from_slice(pack);
    out
}

#[test]
fn in_process_proc_receive_hook_reports_review_refs() {
    let (dir, commit, pack) = setup("review me\n");
    let server = dir.path().join("server.git");
    git(
        &server,
        &["config", "receive.procReceiveRefs", "refs/for"],
        None,
    );
    let repo = Repository::open(&server, PathLookup::Strict, None).unwrap();
    let receive_pack = ReceivePack::new(&repo)
        .unwrap()
        .with_hook(SecretScanner::new("BEGIN PRIVATE KEY"))
        .with_hook(ReviewRefs);
    let names = [
        "refs/for/main/topic",
        "refs/heads/next",
        "refs/for/main/wip",
        "refs/for/main/direct",
    ];
    let (report, output) = serve(
        &receive_pack,
        &request_for(&names, &commit, "report-status-v2 side-band-64k", &pack),
    );
    let report = report.unwrap();
    let results: Vec<_> = report.refs.iter().map(|r| r.result.clone()).collect();
    assert_eq!(
        results,
        [Ok(()), Ok(()), Err("work in progress".into()), Ok(())]
    );
    let (outer, _) = split_sideband(&output);
    let demuxed = demux(&outer, SidebandMode::SideBand64k).unwrap();
    assert_eq!(
        packets(&demuxed.data),
        [
            "unpack ok\n".to_owned(),
            "ok refs/for/main/topic\n".to_owned(),
            "option refname refs/changes/1\n".to_owned(),
            format!("option new-oid {commit}\n"),
            "ok refs/heads/next\n".to_owned(),
            "ng refs/for/main/wip work in progress\n".to_owned(),
            "ok refs/for/main/direct\n".to_owned(),
            "flush-pkt".to_owned(),
        ]
    );
    let progress = demuxed.progress.to_str_lossy();
    assert!(
        progress.contains("review< refs/for/main/topic\nreview< refs/for/main/wip\n"),
        "{progress}"
    );
    // The hook's refs are the hook's business; receive-pack updated the others, and the
    // objects are in the repository for the hook to point refs at.
    let listed = text(git(&server, &["for-each-ref", "--format=%(refname)"], None));
    assert_eq!(listed, "refs/for/main/direct\nrefs/heads/next");
    git(&server, &["cat-file", "-e", &commit], None);
    git(&server, &["fsck", "--strict"], None);
    assert_eq!(quarantines(&server), 0);
}

#[test]
fn proc_receive_refs_without_a_hook_fail_and_atomic_pushes_fail_whole() {
    let (dir, commit, pack) = setup("no hook\n");
    let server = dir.path().join("server.git");
    git(
        &server,
        &["config", "receive.procReceiveRefs", "refs/for"],
        None,
    );
    let repo = Repository::open(&server, PathLookup::Strict, None).unwrap();
    let receive_pack = ReceivePack::new(&repo).unwrap().with_hook_scripts(false);
    let names = ["refs/heads/next", "refs/for/main/topic"];
    let (report, output) = serve(
        &receive_pack,
        &request_for(&names, &commit, "report-status", &pack),
    );
    assert_eq!(
        report.unwrap().refs[1].result,
        Err("fail to run proc-receive hook".into())
    );
    assert_eq!(
        packets(&output),
        [
            "unpack ok\n",
            "ok refs/heads/next\n",
            "ng refs/for/main/topic fail to run proc-receive hook\n",
            "flush-pkt"
        ]
    );
    let names = ["refs/heads/other", "refs/for/main/topic"];
    let (_, output) = serve(
        &receive_pack,
        &request_for(&names, &commit, "report-status atomic", &pack),
    );
    assert_eq!(
        packets(&output),
        [
            "unpack ok\n",
            "ng refs/heads/other fail to run proc-receive hook\n",
            "ng refs/for/main/topic fail to run proc-receive hook\n",
            "flush-pkt"
        ]
    );
    let listed = text(git(&server, &["for-each-ref", "--format=%(refname)"], None));
    assert_eq!(listed, "refs/heads/next");
}

/// The gate: pushes forwarded to a fake upstream client before anything moves here.
mod gate {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
        time::{Duration, Instant},
    };

    use super::*;
    use crate::receive_pack::gate::{Forward, ForwardRequest, Forwarded};

    /// What the fake saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        upstream: String,
        updates: Vec<(String, String)>,
        atomic: bool,
        push_options: Vec<String>,
        /// Whether each new value could be read through `objects`.
        readable: Vec<bool>,
    }

    /// A fake upstream: records requests, answers from a script, can stall.
    #[derive(Default)]
    struct Fake {
        seen: Mutex<Vec<Seen>>,
        answers: Vec<Forwarded>,
        stall: Option<Duration>,
    }

    impl Forward for Fake {
        fn forward(
            &self,
            request: &ForwardRequest<'_>,
            progress: &mut dyn Write,
        ) -> Vec<Forwarded> {
            use gix_object::Find as _;
            let readable = request
                .updates
                .iter()
                .map(|update| {
                    let mut buf = Vec::new();
                    request
                        .objects
                        .try_find(&update.new, &mut buf)
                        .is_ok_and(|found| found.is_some())
                })
                .collect();
            self.seen.lock().unwrap().push(Seen {
                upstream: request.upstream.to_owned(),
                updates: request
                    .updates
                    .iter()
                    .map(|u| (u.name.to_string(), u.new.to_string()))
                    .collect(),
                atomic: request.atomic,
                push_options: request.push_options.to_vec(),
                readable,
            });
            progress.write_all(b"upstream says hello\n").unwrap();
            if let Some(stall) = self.stall {
                std::thread::sleep(stall);
            }
            self.answers.clone()
        }
    }

    fn gated(dir: &Path, timeout: Option<&str>) -> Repository {
        let server = dir.join("server.git");
        git(
            &server,
            &[
                "config",
                "packgate.upstream",
                "https://upstream.example/r.git",
            ],
            None,
        );
        git(
            &server,
            &["config", "receive.advertisePushOptions", "true"],
            None,
        );
        if let Some(seconds) = timeout {
            git(
                &server,
                &["config", "packgate.upstreamTimeout", seconds],
                None,
            );
        }
        Repository::open(&server, PathLookup::Strict, None).unwrap()
    }

    fn with_fake<'r>(repo: &'r Repository, fake: &Arc<Fake>) -> ReceivePack<'r> {
        ReceivePack::new(repo)
            .unwrap()
            .with_forward(Some(Arc::clone(fake) as Arc<dyn Forward>))
    }

    fn has_object(server: &Path, id: &str) -> bool {
        Command::new("git")
            .args(["cat-file", "-e", id])
            .current_dir(server)
            .status()
            .unwrap()
            .success()
    }

    fn tip(server: &Path, name: &str) -> Option<String> {
        let out = Command::new("git")
            .args(["rev-parse", "--verify", "-q", name])
            .current_dir(server)
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }

    /// The report lines and band-2 text of a sideband response.
    fn report_and_messages(output: &[u8]) -> (Vec<String>, String) {
        let (outer, _) = split_sideband(output);
        let demuxed = demux(&outer, SidebandMode::SideBand64k).unwrap();
        (
            packets(&demuxed.data),
            demuxed.progress.as_bstr().to_string(),
        )
    }

    #[test]
    fn accepted_upstream_moves_the_refs_and_the_forwarder_reads_the_quarantine() {
        let (dir, commit, pack) = setup("clean\n");
        let repo = gated(dir.path(), None);
        let fake = Arc::new(Fake {
            answers: vec![Forwarded::Accepted],
            ..Fake::default()
        });
        let receive_pack = with_fake(&repo, &fake);
        let (report, output) = serve(
            &receive_pack,
            &request(&commit, "report-status side-band-64k", &pack),
        );
        assert!(report.unwrap().all_ok());
        let (lines, messages) = report_and_messages(&output);
        assert_eq!(lines, ["unpack ok\n", "ok refs/heads/main\n", "flush-pkt"]);
        assert!(messages.contains("upstream says hello"), "{messages:?}");
        let seen = fake.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].upstream, "https://upstream.example/r.git");
        assert_eq!(
            seen[0].updates,
            [("refs/heads/main".to_owned(), commit.clone())]
        );
        assert!(!seen[0].atomic);
        assert_eq!(seen[0].readable, [true], "the quarantine is visible");
        let server = dir.path().join("server.git");
        assert_eq!(tip(&server, "refs/heads/main").as_deref(), Some(&*commit));
        git(&server, &["fsck", "--strict"], None);
        assert_eq!(quarantines(&server), 0);
    }

    #[test]
    fn refused_upstream_leaves_the_gate_unchanged_and_tells_why() {
        let (dir, commit, pack) = setup("clean\n");
        let repo = gated(dir.path(), None);
        let fake = Arc::new(Fake {
            answers: vec![Forwarded::Refused("non-fast-forward".into())],
            ..Fake::default()
        });
        let receive_pack = with_fake(&repo, &fake);
        let (report, output) = serve(
            &receive_pack,
            &request(&commit, "report-status side-band-64k", &pack),
        );
        assert!(!report.unwrap().all_ok());
        let (lines, _) = report_and_messages(&output);
        assert_eq!(
            lines[1], "ng refs/heads/main upstream: non-fast-forward\n",
            "{lines:?}"
        );
        let server = dir.path().join("server.git");
        assert_eq!(tip(&server, "refs/heads/main"), None);
        assert!(!has_object(&server, &commit), "nothing migrated");
        assert_eq!(quarantines(&server), 0);
    }

    fn two_refs(capabilities: &str) -> (tempfile::TempDir, String, Vec<u8>) {
        let (dir, commit, pack) = setup("clean\n");
        let mut input = request_for(
            &["refs/heads/main", "refs/heads/other"],
            &commit,
            capabilities,
            &[],
        );
        if capabilities.contains("push-options") {
            pkt_line::encode_text("ci.skip", &mut input).unwrap();
            pkt_line::encode_flush(&mut input);
        }
        input.extend_from_slice(&pack);
        (dir, commit, input)
    }

    #[test]
    fn mixed_results_move_exactly_what_upstream_accepted() {
        let (dir, commit, input) = two_refs("report-status push-options");
        let repo = gated(dir.path(), None);
        let fake = Arc::new(Fake {
            answers: vec![
                Forwarded::Accepted,
                Forwarded::Unreachable("connection reset".into()),
            ],
            ..Fake::default()
        });
        let receive_pack = with_fake(&repo, &fake);
        let (_, output) = serve(&receive_pack, &input);
        assert_eq!(
            packets(&output),
            [
                "unpack ok\n",
                "ok refs/heads/main\n",
                "ng refs/heads/other upstream unreachable: connection reset\n",
                "flush-pkt"
            ]
        );
        let server = dir.path().join("server.git");
        assert_eq!(tip(&server, "refs/heads/main").as_deref(), Some(&*commit));
        assert_eq!(tip(&server, "refs/heads/other"), None);
        let seen = fake.seen.lock().unwrap().clone();
        assert_eq!(seen[0].updates.len(), 2);
        assert_eq!(seen[0].push_options, ["ci.skip"]);
    }

    #[test]
    fn atomic_push_is_all_or_nothing_and_says_so_upstream() {
        let (dir, _commit, input) = two_refs("report-status atomic");
        let repo = gated(dir.path(), None);
        let fake = Arc::new(Fake {
            answers: vec![Forwarded::Accepted, Forwarded::Refused("hook".into())],
            ..Fake::default()
        });
        let receive_pack = with_fake(&repo, &fake);
        let (report, _) = serve(&receive_pack, &input);
        let report = report.unwrap();
        assert!(report.refs.iter().all(|r| r.result.is_err()), "{report:?}");
        assert!(fake.seen.lock().unwrap()[0].atomic);
        let server = dir.path().join("server.git");
        assert_eq!(tip(&server, "refs/heads/main"), None);
        assert_eq!(tip(&server, "refs/heads/other"), None);
    }

    #[test]
    fn refused_by_hooks_or_cut_off_mid_pack_never_reaches_upstream() {
        let (dir, commit, pack) = setup("-----BEGIN PRIVATE KEY-----\nabc\n");
        let repo = gated(dir.path(), None);
        let fake = Arc::new(Fake {
            answers: vec![Forwarded::Accepted],
            ..Fake::default()
        });
        let receive_pack =
            with_fake(&repo, &fake).with_hook(SecretScanner::new("BEGIN PRIVATE KEY"));
        let (report, _) = serve(&receive_pack, &request(&commit, "report-status", &pack));
        assert!(!report.unwrap().all_ok());
        // A client gone half-way through its pack.
        let receive_pack = with_fake(&repo, &fake);
        let input = request(&commit, "report-status", &pack[..pack.len() / 2]);
        let (report, _) = serve(&receive_pack, &input);
        assert!(report.unwrap().unpack.is_err());
        assert!(fake.seen.lock().unwrap().is_empty(), "forwarded anyway");
        assert_eq!(quarantines(&dir.path().join("server.git")), 0);
    }

    #[test]
    fn a_stalled_upstream_is_unreachable_within_the_timeout() {
        let (dir, commit, pack) = setup("clean\n");
        let repo = gated(dir.path(), Some("1"));
        let fake = Arc::new(Fake {
            answers: vec![Forwarded::Accepted],
            stall: Some(Duration::from_secs(20)),
            ..Fake::default()
        });
        let receive_pack = with_fake(&repo, &fake);
        let started = Instant::now();
        let (_, output) = serve(&receive_pack, &request(&commit, "report-status", &pack));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "waited too long"
        );
        assert_eq!(
            packets(&output)[1],
            "ng refs/heads/main upstream unreachable: no answer within 1 seconds\n"
        );
        let server = dir.path().join("server.git");
        assert!(!has_object(&server, &commit));
    }

    #[test]
    fn a_gate_without_an_upstream_client_refuses() {
        let (dir, commit, pack) = setup("clean\n");
        let repo = gated(dir.path(), None);
        let receive_pack = ReceivePack::new(&repo).unwrap();
        let (_, output) = serve(&receive_pack, &request(&commit, "report-status", &pack));
        assert_eq!(
            packets(&output)[1],
            "ng refs/heads/main gate has no upstream client\n"
        );
        assert!(!has_object(&dir.path().join("server.git"), &commit));
    }
}
