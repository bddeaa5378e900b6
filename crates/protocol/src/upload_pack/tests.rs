//! The upload-pack session in memory: requests in, responses parsed back, against
//! repositories built with git.

use std::{path::Path, process::Command};

use bstr::{BString, ByteSlice};
use packgate_transport::{
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
