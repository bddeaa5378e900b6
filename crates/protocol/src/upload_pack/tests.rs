//! The upload-pack session in memory: requests in, responses parsed back, against
//! repositories built with git.

use std::{path::Path, process::Command};

use bstr::{BString, ByteSlice};
use packgate_wire::{
    pkt_line::{decode, Decoded, Packet},
    v2::Request,
};

use super::{SessionOptions, UploadPack};
use crate::repository::{PathLookup, Repository};

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "A")
        .env("GIT_AUTHOR_EMAIL", "a@example.com")
        .env("GIT_COMMITTER_NAME", "A")
        .env("GIT_COMMITTER_EMAIL", "a@example.com")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        output.stderr.as_bstr()
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A repository with main = A-B-C, each commit at a later date.
fn linear_repository() -> (tempfile::TempDir, [String; 3]) {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    let mut ids = Vec::new();
    for (n, name) in ["a", "b", "c"].iter().enumerate() {
        std::fs::write(dir.path().join(name), name).unwrap();
        git(dir.path(), &["add", name]);
        let date = format!("{} +0000", 1_700_000_000 + n * 1000);
        let output = Command::new("git")
            .args(["commit", "-q", "-m", name])
            .current_dir(dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "A")
            .env("GIT_AUTHOR_EMAIL", "a@example.com")
            .env("GIT_COMMITTER_NAME", "A")
            .env("GIT_COMMITTER_EMAIL", "a@example.com")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .output()
            .unwrap();
        assert!(output.status.success());
        ids.push(git(dir.path(), &["rev-parse", "HEAD"]));
    }
    let ids = [ids[0].clone(), ids[1].clone(), ids[2].clone()];
    (dir, ids)
}

fn request(command: &str, arguments: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    Request {
        command: command.into(),
        capabilities: vec!["agent=test".into(), "object-format=sha1".into()],
        arguments: arguments
            .iter()
            .map(|a| BString::from(a.as_str()))
            .collect(),
    }
    .encode(&mut out)
    .unwrap();
    out
}

/// The packets of a response, as text for data packets and `0000`/`0001` markers.
fn packets(mut response: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !response.is_empty() {
        match decode(response).unwrap() {
            Decoded::Complete { packet, consumed } => {
                out.push(match packet {
                    Packet::Data(data) if data.first() == Some(&1) => "<band 1>".into(),
                    Packet::Data(data) if data.first() == Some(&2) => "<band 2>".into(),
                    Packet::Data(data) => data.as_bstr().trim_end().to_str_lossy().into_owned(),
                    Packet::Flush => "0000".into(),
                    Packet::Delimiter => "0001".into(),
                    Packet::ResponseEnd => "0002".into(),
                });
                response = &response[consumed..];
            }
            Decoded::Incomplete { .. } => panic!("truncated response"),
        }
    }
    out.dedup();
    out
}

fn serve(repo_dir: &Path, input: &[u8], stateless: bool) -> Vec<String> {
    let repo = Repository::open(repo_dir, PathLookup::Lenient, None).unwrap();
    let upload_pack = UploadPack::new(&repo).unwrap();
    let mut output = Vec::new();
    let options = SessionOptions {
        stateless,
        ..SessionOptions::default()
    };
    upload_pack.serve(input, &mut output, &options).unwrap();
    packets(&output)
}

#[test]
fn stateless_round_acknowledges_common_haves_and_is_ready() {
    let (dir, [a, _b, c]) = linear_repository();
    let unknown = "1111111111111111111111111111111111111111".to_string();
    let input = request(
        "fetch",
        &[
            format!("want {c}"),
            format!("have {unknown}"),
            format!("have {a}"),
            "ofs-delta".into(),
            "no-progress".into(),
        ],
    );
    let response = serve(dir.path(), &input, true);
    assert_eq!(
        response,
        [
            "acknowledgments",
            &format!("ACK {a}"),
            "ready",
            "0001",
            "packfile",
            "<band 1>",
            "0000"
        ],
    );
}

#[test]
fn stateless_round_without_common_haves_says_nak_and_waits_for_more() {
    let (dir, [_a, _b, c]) = linear_repository();
    let unknown = "1111111111111111111111111111111111111111".to_string();
    let input = request("fetch", &[format!("want {c}"), format!("have {unknown}")]);
    let response = serve(dir.path(), &input, true);
    assert_eq!(response, ["acknowledgments", "NAK", "0000"]);
}

#[test]
fn done_skips_acknowledgments() {
    let (dir, [a, _b, c]) = linear_repository();
    let input = request(
        "fetch",
        &[
            format!("want {c}"),
            format!("have {a}"),
            "done".into(),
            "no-progress".into(),
        ],
    );
    let response = serve(dir.path(), &input, true);
    assert_eq!(response, ["packfile", "<band 1>", "0000"]);
}

#[test]
fn stateful_session_serves_several_commands() {
    let (dir, [_a, _b, c]) = linear_repository();
    let mut input = request("ls-refs", &["ref-prefix refs/heads/".into()]);
    input.extend(request(
        "fetch",
        &[format!("want {c}"), "done".into(), "no-progress".into()],
    ));
    input.extend(b"0000");
    let response = serve(dir.path(), &input, false);
    // The advertisement, the ls-refs answer, then the pack.
    let after_advertisement = response.iter().position(|p| p == "0000").unwrap() + 1;
    assert_eq!(
        response[after_advertisement..],
        [
            format!("{c} refs/heads/main"),
            "0000".into(),
            "packfile".into(),
            "<band 1>".into(),
            "0000".into()
        ],
    );
}

/// A repository with `commits` commits on main, each adding a file, made with fast-import.
fn repository_with_commits(commits: usize) -> (tempfile::TempDir, String) {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "--bare", "-b", "main"]);
    let mut stream = String::new();
    for n in 0..commits {
        let time = 1_700_000_000 + n;
        stream.push_str(&format!(
            "commit refs/heads/main\ncommitter A <a@example.com> {time} +0000\n\
             data 2\nc\nM 644 inline file{n}\ndata 3\n{n:02}\n\n"
        ));
    }
    let mut child = Command::new("git")
        // Loose objects, as a repository that was pushed to in small steps has them.
        .args([
            "-c",
            "fastimport.unpackLimit=100000",
            "fast-import",
            "--quiet",
        ])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stream.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let tip = git(dir.path(), &["rev-parse", "main"]);
    (dir, tip)
}

/// The raw packets of a fetch response: pkt-lines up to `packfile`, then sideband packets
/// (band byte included) up to the flush.
fn raw_packets(mut response: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Ok(Decoded::Complete { packet, consumed }) = decode(response) {
        out.push(match packet {
            Packet::Data(data) => data.to_vec(),
            Packet::Flush => b"0000".to_vec(),
            Packet::Delimiter => b"0001".to_vec(),
            Packet::ResponseEnd => b"0002".to_vec(),
        });
        response = &response[consumed..];
    }
    assert!(
        response.is_empty(),
        "not pkt-lines: {:?}",
        response.as_bstr()
    );
    out
}

fn fetch_with_keepalive(keepalive: Option<std::time::Duration>) -> Vec<Vec<u8>> {
    let (dir, tip) = repository_with_commits(300);
    let repo = Repository::open(dir.path(), PathLookup::Strict, None).unwrap();
    let upload_pack = UploadPack {
        repo: &repo,
        config: crate::config::UploadPackConfig {
            keepalive,
            ..crate::config::UploadPackConfig::from_config(repo.config()).unwrap()
        },
        session_id: super::new_session_id(),
        pack_cache: None,
        budget: crate::budget::Budget::global(),
        client: std::sync::Arc::from("test"),
        stateful: false,
    };
    let input = request(
        "fetch",
        &[format!("want {tip}"), "done".into(), "no-progress".into()],
    );
    let mut output = Vec::new();
    let options = SessionOptions {
        stateless: true,
        ..SessionOptions::default()
    };
    upload_pack
        .serve(&input[..], &mut output, &options)
        .unwrap();
    let packets = raw_packets(&output);
    assert_eq!(packets[0], b"packfile\n");
    assert_eq!(packets.last().unwrap(), b"0000");
    // The pack, with any keepalives dropped, is whole: git indexes it.
    let pack: Vec<u8> = packets[1..packets.len() - 1]
        .iter()
        .inspect(|p| assert_eq!(p[0], 1, "only band 1 with no-progress"))
        .flat_map(|p| p[1..].to_vec())
        .collect();
    assert!(pack.starts_with(b"PACK"));
    let pack_file = dir.path().join("received.pack");
    std::fs::write(&pack_file, &pack).unwrap();
    git(dir.path(), &["index-pack", pack_file.to_str().unwrap()]);
    packets
}

#[test]
fn keepalives_fill_the_silence_while_the_pack_is_prepared() {
    // 900 loose objects take far longer than a millisecond to enumerate, and nothing is
    // sent meanwhile (no progress): keepalives come first, right after `packfile`.
    let packets = fetch_with_keepalive(Some(std::time::Duration::from_millis(1)));
    assert_eq!(packets[1], [1], "a keepalive before the pack");
    let first_data = packets
        .iter()
        .position(|p| p.len() > 1 && p[0] == 1)
        .unwrap();
    assert!(packets[1..first_data].iter().all(|p| p == &[1]));
    assert!(packets[first_data][1..].starts_with(b"PACK"));
}

#[test]
fn no_keepalives_when_disabled() {
    let packets = fetch_with_keepalive(None);
    assert!(
        packets.iter().all(|p| p != &[1]),
        "an empty band-1 packet without keepalive"
    );
}

#[test]
fn agent_is_one_printable_token() {
    assert_eq!(super::sanitize_agent(b"FAKE"), "FAKE");
    assert_eq!(
        super::sanitize_agent(b"my agent\t\x7f\xc3\xa9/1"),
        "my.agent..../1"
    );
}

/// An upload-pack of `repo` with a 1 ms keepalive and its own `budget`.
fn budgeted<'r>(repo: &'r Repository, budget: &crate::budget::Budget) -> UploadPack<'r> {
    UploadPack {
        repo,
        config: crate::config::UploadPackConfig {
            keepalive: Some(std::time::Duration::from_millis(1)),
            ..crate::config::UploadPackConfig::from_config(repo.config()).unwrap()
        },
        session_id: super::new_session_id(),
        pack_cache: None,
        budget: budget.clone(),
        client: std::sync::Arc::from("test"),
        stateful: false,
    }
}

/// A budget of one slot, and a grant that holds it.
fn held_budget() -> (crate::budget::Budget, crate::budget::Grant) {
    let budget = crate::budget::Budget::new(crate::budget::BudgetConfig {
        cpu_slots: 1,
        memory_bytes: 1 << 30,
        max_wait: std::time::Duration::from_secs(60),
    });
    let demand = crate::budget::Demand {
        threads: 1,
        memory: 1,
    };
    let holder = budget.acquire("someone else", demand, &|| false).unwrap();
    (budget, holder)
}

/// Output shared with the test while the session writes it.
#[derive(Clone, Default)]
struct SharedOutput(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedOutput {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_fetch_waits_for_the_budget_with_keepalives() {
    let (dir, tip) = repository_with_commits(30);
    let (budget, holder) = held_budget();
    let input = request(
        "fetch",
        &[format!("want {tip}"), "done".into(), "no-progress".into()],
    );
    let output = SharedOutput::default();
    let options = SessionOptions {
        stateless: true,
        ..SessionOptions::default()
    };
    std::thread::scope(|scope| {
        let (mut out, budget, input, options) = (output.clone(), &budget, &input, &options);
        let path = dir.path();
        let session = scope.spawn(move || {
            // A repository stays on its thread.
            let repo = Repository::open(path, PathLookup::Strict, None).unwrap();
            budgeted(&repo, budget).serve(&input[..], &mut out, options)
        });
        // Queued, and the client hears keepalives meanwhile.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let written = output.0.lock().unwrap().clone();
            if budget.stats().waiting == 1 && written.ends_with(b"0005\x01") {
                assert!(!written.windows(4).any(|w| w == b"PACK"), "no pack yet");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{:?}", budget.stats());
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(holder);
        session.join().unwrap().unwrap();
    });
    let packets = raw_packets(&output.0.lock().unwrap());
    assert!(packets
        .iter()
        .any(|p| p.len() > 5 && p[1..].starts_with(b"PACK")));
    let stats = budget.stats();
    assert_eq!((stats.queued, stats.granted, stats.free_slots), (1, 2, 1));
}

/// Fails every write of a keepalive packet: a client that went away while the server was
/// silent.
struct GoneAtKeepalive;

impl std::io::Write for GoneAtKeepalive {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if data == b"0005\x01" {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_fetch_whose_client_went_away_leaves_the_budgets_queue() {
    let (dir, tip) = repository_with_commits(30);
    let repo = Repository::open(dir.path(), PathLookup::Strict, None).unwrap();
    let (budget, holder) = held_budget();
    let upload_pack = budgeted(&repo, &budget);
    let input = request(
        "fetch",
        &[format!("want {tip}"), "done".into(), "no-progress".into()],
    );
    let options = SessionOptions {
        stateless: true,
        ..SessionOptions::default()
    };
    let result = upload_pack.serve(&input[..], GoneAtKeepalive, &options);
    assert!(result.is_err(), "{result:?}");
    let stats = budget.stats();
    assert_eq!((stats.cancelled, stats.waiting, stats.granted), (1, 0, 1));
    drop(holder);
    assert_eq!(budget.stats().free_slots, 1);
}
