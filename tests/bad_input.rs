//! Raw bytes on `packgate upload-pack`'s standard input: every malformed request ends in an
//! `ERR <reason>` pkt-line and a non-zero exit (never a panic, never a hang); a client that
//! simply goes away is a normal end.

use std::path::Path;
use std::time::Duration;

use crate::pkt::{concat, error_reason, line, split_advertisement, DELIM, FLUSH};
use crate::util::{shared_fixture, Dir, Git, Output};

/// How long a malformed request may take to be refused.
const TIME_LIMIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Capability advertisement first, then requests until the client leaves.
    Stateful,
    /// `--stateless-rpc`: one request, no advertisement.
    Stateless,
}

const BOTH: [Mode; 2] = [Mode::Stateful, Mode::Stateless];

fn upload_pack(dir: &Dir, repo: &Path, mode: Mode, input: Vec<u8>) -> Output {
    let mut command = dir
        .packgate()
        .arg("upload-pack")
        .env("GIT_PROTOCOL", "version=2");
    if mode == Mode::Stateless {
        command = command.arg("--stateless-rpc");
    }
    command.arg(repo).stdin(input).timeout(TIME_LIMIT).output()
}

/// The part of the output that answers the request: after the advertisement if stateful.
fn response(output: &Output, mode: Mode) -> Vec<u8> {
    match mode {
        Mode::Stateless => output.stdout.clone(),
        Mode::Stateful => match split_advertisement(&output.stdout) {
            Some((_, rest)) => rest.to_vec(),
            None => panic!("no capability advertisement: {output}"),
        },
    }
}

fn tip_and_older_commit(dir: &Dir, repo: &Path) -> (String, String) {
    let git = Git::newest();
    let rev_parse = |revision: &str| {
        dir.git_in(&git, repo)
            .args(["rev-parse", revision])
            .run()
            .stdout_text()
            .trim()
            .to_owned()
    };
    (rev_parse("main"), rev_parse("main~5"))
}

/// A request for messages: quoted, and cut if long.
fn show(request: &[u8]) -> String {
    const LIMIT: usize = 200;
    let text = format!(
        "{:?}",
        String::from_utf8_lossy(&request[..request.len().min(LIMIT)])
    );
    if request.len() > LIMIT {
        format!("{text}... ({} bytes)", request.len())
    } else {
        text
    }
}

/// Sends `request` in each mode and expects `ERR <reason>` (containing `reason_contains`:
/// what was wrong) and a non-zero exit status that is neither a panic nor a signal.
#[track_caller]
fn expect_error(modes: &[Mode], request: &[u8], reason_contains: &str) {
    let source = shared_fixture("small");
    let dir = Dir::new("bad-input");
    for &mode in modes {
        let output = upload_pack(&dir, &source.path, mode, request.to_vec());
        let context = format!("{mode:?} request {}", show(request));
        assert!(!output.status.success(), "{context}: succeeded: {output}");
        assert_eq!(
            output.signalled(),
            None,
            "{context}: killed by a signal: {output}"
        );
        let reason = error_reason(&response(&output, mode));
        match reason {
            Some(reason) if !reason.trim().is_empty() => assert!(
                reason.contains(reason_contains),
                "{context}: reason {reason:?} lacks {reason_contains:?}: {output}"
            ),
            _ => panic!("{context}: no `ERR <reason>` pkt-line: {output}"),
        }
    }
}

/// Sends `input` and expects a clean exit 0 with no `ERR`; returns the response per mode.
#[track_caller]
fn expect_normal_end(modes: &[Mode], input: &[u8]) -> Vec<Vec<u8>> {
    let source = shared_fixture("small");
    let dir = Dir::new("normal-end");
    modes
        .iter()
        .map(|&mode| {
            let output = upload_pack(&dir, &source.path, mode, input.to_vec());
            let context = format!("{mode:?} input {}", show(input));
            assert!(output.status.success(), "{context}: failed: {output}");
            let response = response(&output, mode);
            assert_eq!(error_reason(&response), None, "{context}: {output}");
            response
        })
        .collect()
}

#[test]
fn delim_twice() {
    let request = concat([
        line("command=ls-refs\n"),
        DELIM.to_vec(),
        DELIM.to_vec(),
        FLUSH.to_vec(),
    ]);
    expect_error(&BOTH, &request, "expected flush after ls-refs arguments");
    let request = concat([
        line("command=fetch\n"),
        line("object-format=sha1\n"),
        DELIM.to_vec(),
        DELIM.to_vec(),
    ]);
    expect_error(&BOTH, &request, "expected flush after fetch arguments");
}

#[test]
fn unknown_command() {
    let request = concat([line("command=frobnicate\n"), DELIM.to_vec(), FLUSH.to_vec()]);
    expect_error(&BOTH, &request, "frobnicate");
}

#[test]
fn no_command() {
    let request = concat([line("agent=test/1.0\n"), FLUSH.to_vec()]);
    expect_error(&BOTH, &request, "no command requested");
    let request = concat([line("agent=test/1.0\n"), DELIM.to_vec(), FLUSH.to_vec()]);
    expect_error(&BOTH, &request, "no command requested");
    // git names an unknown capability before the missing command.
    let request = concat([line("foobar\n"), FLUSH.to_vec()]);
    expect_error(&BOTH, &request, "unknown capability 'foobar'");
}

/// git's serve.c takes the `command=` line anywhere among the capabilities.
#[test]
fn capabilities_before_the_command() {
    let request = concat([
        line("agent=test/1.0\n"),
        line("command=ls-refs\n"),
        DELIM.to_vec(),
        FLUSH.to_vec(),
    ]);
    for response in expect_normal_end(&[Mode::Stateless], &request) {
        assert!(
            String::from_utf8_lossy(&response).contains(" HEAD"),
            "ls-refs answered without HEAD: {:?}",
            String::from_utf8_lossy(&response)
        );
    }
}

#[test]
fn unknown_capability_line() {
    let request = concat([
        line("command=ls-refs\n"),
        line("frobnicate=yes\n"),
        DELIM.to_vec(),
        FLUSH.to_vec(),
    ]);
    expect_error(&BOTH, &request, "frobnicate");
}

#[test]
fn unknown_ls_refs_argument() {
    let request = concat([
        line("command=ls-refs\n"),
        DELIM.to_vec(),
        line("frobnicate\n"),
        FLUSH.to_vec(),
    ]);
    expect_error(&BOTH, &request, "frobnicate");
}

#[test]
fn unknown_fetch_argument() {
    let request = concat([
        line("command=fetch\n"),
        DELIM.to_vec(),
        line("frobnicate\n"),
        FLUSH.to_vec(),
    ]);
    expect_error(&BOTH, &request, "frobnicate");
}

#[test]
fn want_that_is_not_an_object_id() {
    let request = concat([
        line("command=fetch\n"),
        DELIM.to_vec(),
        line("want xyz\n"),
        line("done\n"),
        FLUSH.to_vec(),
    ]);
    expect_error(&BOTH, &request, "xyz");
}

#[test]
fn want_of_a_missing_object() {
    let request = concat([
        line("command=fetch\n"),
        DELIM.to_vec(),
        line("want 0123456789abcdef0123456789abcdef01234567\n"),
        line("done\n"),
        FLUSH.to_vec(),
    ]);
    expect_error(&BOTH, &request, "not our ref");
}

#[test]
fn end_of_file_between_packets_of_a_request() {
    let source = shared_fixture("small");
    let dir = Dir::new("eof");
    let (tip, _) = tip_and_older_commit(&dir, &source.path);
    let request = concat([
        line("command=fetch\n"),
        DELIM.to_vec(),
        line(format!("want {tip}\n")),
    ]);
    expect_error(&BOTH, &request, "");
}

/// The stream ends inside a packet: inside a request, an error; before one began (the
/// first packet cut short, or a stray byte after the last request), the client left — git's
/// serve loop reads it so too (its reader is gentle on EOF there; git's t5500 ends a session
/// with a stray LF).
#[test]
fn end_of_file_inside_a_packet() {
    expect_error(&BOTH, b"0014command=ls-refs\n0030agent", "");
    expect_normal_end(&BOTH, b"0030command=fe");
    let responses = expect_normal_end(&[Mode::Stateful], b"0014command=ls-refs\n00010000\n");
    for response in responses {
        assert!(
            String::from_utf8_lossy(&response).contains(" HEAD"),
            "the request before the stray byte was answered"
        );
    }
}

#[test]
fn length_that_is_not_hex() {
    expect_error(&BOTH, b"zzzzcommand=ls-refs\n", "");
}

#[test]
fn length_beyond_the_maximum() {
    let mut request = b"ffff".to_vec();
    request.extend(std::iter::repeat_n(b'a', 70_000));
    expect_error(&BOTH, &request, "");
}

#[test]
fn length_0003() {
    expect_error(&BOTH, b"0003", "");
}

#[test]
fn data_after_the_flush_in_stateless_mode() {
    let request = concat([
        line("command=ls-refs\n"),
        DELIM.to_vec(),
        FLUSH.to_vec(),
        line("command=ls-refs\n"),
        FLUSH.to_vec(),
    ]);
    expect_error(&[Mode::Stateless], &request, "");
}

#[test]
fn client_leaves_after_the_advertisement() {
    let responses = expect_normal_end(&[Mode::Stateful], b"");
    assert_eq!(responses, [Vec::<u8>::new()]);
}

#[test]
fn client_ends_the_session_with_a_flush() {
    expect_normal_end(&BOTH, FLUSH);
}

#[test]
fn stateless_client_hangs_up_before_sending_a_request() {
    let responses = expect_normal_end(&[Mode::Stateless], b"");
    assert_eq!(responses, [Vec::<u8>::new()]);
}

/// Git accepts a command with a flush right after the capabilities (no delimiter, no
/// arguments).
#[test]
fn ls_refs_without_a_delimiter_or_arguments_is_valid() {
    let request = concat([line("command=ls-refs\n"), FLUSH.to_vec()]);
    for response in expect_normal_end(&BOTH, &request) {
        let text = String::from_utf8_lossy(&response);
        assert!(text.contains(" refs/heads/main\n"), "{text}");
    }
}

/// Protocol v0/v1 (no `GIT_PROTOCOL=version=2`): a client that hangs up after its wants,
/// before any have, or that wants nothing, ends the session normally (exit 0); malformed
/// wants and haves, and a bad `deepen`, get `ERR` and a
/// non-zero exit. Stateful and stateless, for each way of asking for v0 or v1.
#[test]
fn protocol_v0_requests() {
    let source = shared_fixture("small");
    let dir = Dir::new("v0-input");
    let (tip, _) = tip_and_older_commit(&dir, &source.path);
    let want = line(format!("want {tip} multi_ack_detailed side-band-64k\n"));
    let normal: [Vec<u8>; 3] = [
        concat([want.clone(), FLUSH.to_vec()]),
        FLUSH.to_vec(),
        Vec::new(),
    ];
    let bad: [(Vec<u8>, &str); 5] = [
        (
            concat([line("want 1234\n"), FLUSH.to_vec()]),
            "expected to get object ID",
        ),
        (
            concat([want.clone(), line("deepen 0\n"), FLUSH.to_vec()]),
            "Invalid deepen: deepen 0",
        ),
        (
            concat([want.clone(), FLUSH.to_vec(), line("have xyz\n")]),
            "expected SHA1 object",
        ),
        (
            concat([want.clone(), FLUSH.to_vec(), line("frobnicate\n")]),
            "expected SHA1 list",
        ),
        (
            concat([line(format!("want {}\n", "ab".repeat(20))), FLUSH.to_vec()]),
            "not our ref",
        ),
    ];
    for protocol in [None, Some("version=1"), Some("version=0")] {
        for stateless in [false, true] {
            let run = |input: &[u8]| {
                let mut command = dir.packgate().arg("upload-pack");
                if let Some(protocol) = protocol {
                    command = command.env("GIT_PROTOCOL", protocol);
                }
                if stateless {
                    command = command.arg("--stateless-rpc");
                }
                command
                    .arg(&source.path)
                    .stdin(input.to_vec())
                    .timeout(TIME_LIMIT)
                    .output()
            };
            let context = format!("GIT_PROTOCOL={protocol:?}, stateless {stateless}");
            for input in &normal {
                let output = run(input);
                let context = format!("{context}, input {}", show(input));
                assert!(output.status.success(), "{context}: {output}");
                assert_eq!(error_reason(&output.stdout), None, "{context}: {output}");
            }
            for (input, reason) in &bad {
                let output = run(input);
                let context = format!("{context}, input {}", show(input));
                assert!(!output.status.success(), "{context}: {output}");
                assert_eq!(output.signalled(), None, "{context}: {output}");
                let stdout = String::from_utf8_lossy(&output.stdout);
                assert!(
                    stdout.contains("ERR ") && stdout.contains(reason),
                    "{context}: expected ERR with {reason:?}: {output}"
                );
            }
        }
    }
}

/// `--timeout`: a client that sends nothing after the advertisement ends the session with a
/// non-zero exit once the limit has passed.
#[test]
fn timeout_while_the_client_sends_nothing() {
    let source = shared_fixture("tiny");
    let dir = Dir::new("upload-pack-timeout");
    let output = dir
        .packgate()
        .args(["upload-pack", "--timeout=1"])
        .env("GIT_PROTOCOL", "version=2")
        .arg(&source.path)
        .stdin_then_keep_open(Vec::new())
        .timeout(TIME_LIMIT)
        .output();
    assert_eq!(output.status.code(), Some(128), "{output}");
    assert!(output.elapsed >= Duration::from_secs(1), "{output}");
    assert!(output.elapsed < Duration::from_secs(10), "{output}");
    assert!(output.stderr_text().contains("timeout"), "{output}");
    assert!(
        split_advertisement(&output.stdout).is_some(),
        "no advertisement: {output}"
    );
}

/// v0/v1 wants follow git's rules: a commit that is no ref's tip is `not our ref` in a
/// stateful session, but accepted over `--stateless-rpc` when a visible ref reaches it (the
/// client may have an older advertisement, git's `check_non_tip()`).
#[test]
fn protocol_v0_wants_of_non_tips() {
    let source = shared_fixture("small");
    let dir = Dir::new("v0-non-tip");
    let (_, older) = tip_and_older_commit(&dir, &source.path);
    let request = concat([
        line(format!("want {older} side-band-64k\n")),
        FLUSH.to_vec(),
        line("done\n"),
    ]);
    for stateless in [false, true] {
        let mut command = dir.packgate().arg("upload-pack");
        if stateless {
            command = command.arg("--stateless-rpc");
        }
        let output = command
            .arg(&source.path)
            .stdin(request.clone())
            .timeout(TIME_LIMIT)
            .output();
        let stdout = String::from_utf8_lossy(&output.stdout);
        if stateless {
            assert!(output.status.success(), "{output}");
            assert!(
                stdout.contains("0008NAK\n") && stdout.contains("PACK"),
                "{output}"
            );
        } else {
            assert!(!output.status.success(), "{output}");
            assert!(
                stdout.contains(&format!("ERR upload-pack: not our ref {older}")),
                "{output}"
            );
        }
    }
}

/// v0 clients choose how the pack comes: without `side-band*` it follows the last `NAK`
/// as the bare pack; with `side-band` in band-1 packets of at most 1000 bytes, then a flush.
#[test]
fn protocol_v0_pack_with_and_without_sideband() {
    let source = shared_fixture("small");
    let dir = Dir::new("v0-sideband");
    let (tip, _) = tip_and_older_commit(&dir, &source.path);
    for capabilities in ["", " side-band", " side-band-64k"] {
        let request = concat([
            line(format!("want {tip}{capabilities}\n")),
            FLUSH.to_vec(),
            line("done\n"),
        ]);
        let output = dir
            .packgate()
            .args(["upload-pack", "--stateless-rpc"])
            .arg(&source.path)
            .stdin(request)
            .timeout(TIME_LIMIT)
            .output();
        assert!(output.status.success(), "{capabilities:?}: {output}");
        let rest = output
            .stdout
            .strip_prefix(b"0008NAK\n".as_slice())
            .unwrap_or_else(|| panic!("{capabilities:?}: no NAK first: {output}"));
        if capabilities.is_empty() {
            assert!(rest.starts_with(b"PACK"), "bare pack expected: {output}");
            continue;
        }
        let limit = if capabilities == " side-band" {
            1000
        } else {
            65520
        };
        let (packets, after) = crate::pkt::decode(rest);
        assert!(
            after.is_empty(),
            "{capabilities:?}: trailing bytes: {output}"
        );
        let mut pack = Vec::new();
        let mut flushed = false;
        for packet in &packets {
            match packet {
                crate::pkt::Packet::Data(data) => {
                    assert!(!flushed, "{capabilities:?}: data after the flush");
                    assert!(data.len() + 4 <= limit, "{capabilities:?}: packet too long");
                    if data.first() == Some(&1) {
                        pack.extend_from_slice(&data[1..]);
                    }
                }
                _ => flushed = true,
            }
        }
        assert!(flushed, "{capabilities:?}: no flush at the end");
        assert!(
            pack.starts_with(b"PACK"),
            "{capabilities:?}: no pack on band 1"
        );
    }
}
