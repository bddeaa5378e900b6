//! git 2.47's protocol v2 fetch features beyond want/have: `want-ref`, `wait-for-done`,
//! `sideband-all`, `session-id`, `object-info` and `bundle-uri` — each through real git
//! clients where git has one (2.47 and 2.39 where both support it), and request by request
//! against `git upload-pack`'s answer to the same bytes.

use std::path::{Path, PathBuf};

use crate::cgi_host::{CgiHost, CgiHostOptions};
use crate::http::{Push, Server};
use crate::pkt::{concat, decode, error_reason, line, split_advertisement, Packet, DELIM, FLUSH};
use crate::util::{
    file_url, fsck, git_upload_pack_option, packgate_upload_pack_option, present_objects,
    preset_spec, Dir, Git, Output,
};

/// The servers a request is compared on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Git,
    Packgate,
}

/// A private `tiny` repository with `refs/heads/x` one commit ahead of `main`, and
/// `settings` in its configuration.
fn source(dir: &Dir, settings: &[(&str, &str)]) -> PathBuf {
    let git = Git::newest();
    let repo = dir.fixture(&preset_spec("tiny")).path;
    let x = text(
        dir,
        &git,
        &repo,
        &["commit-tree", "main^{tree}", "-p", "main", "-m", "x"],
    );
    text(dir, &git, &repo, &["update-ref", "refs/heads/x", &x]);
    for (key, value) in settings {
        dir.git_in(&git, &repo).args(["config", key, value]).run();
    }
    repo
}

/// The trimmed standard output of a git command in `repo`.
fn text(dir: &Dir, git: &Git, repo: &Path, args: &[&str]) -> String {
    dir.git_in(git, repo)
        .args(args)
        .run()
        .stdout_text()
        .trim()
        .to_owned()
}

/// One stateless v2 request (`command`, capability lines, arguments) on the wire.
fn v2_request(command: &str, capabilities: &[&str], arguments: &[String]) -> Vec<u8> {
    let mut pieces = vec![line(format!("command={command}\n"))];
    pieces.extend(capabilities.iter().map(|c| line(format!("{c}\n"))));
    pieces.push(DELIM.to_vec());
    pieces.extend(arguments.iter().map(|a| line(format!("{a}\n"))));
    pieces.push(FLUSH.to_vec());
    concat(pieces)
}

/// `request` answered by git's or packgate's upload-pack (`--stateless-rpc`, protocol v2).
fn answer(dir: &Dir, side: Side, repo: &Path, request: &[u8]) -> Output {
    let command = match side {
        Side::Git => dir.git(&Git::newest()).arg("upload-pack"),
        Side::Packgate => dir.packgate().arg("upload-pack"),
    };
    command
        .arg("--stateless-rpc")
        .arg(repo)
        .env("GIT_PROTOCOL", "version=2")
        .stdin(request.to_vec())
        .output()
}

/// Both servers' answers to `request`, which must both succeed.
fn both_answer(dir: &Dir, repo: &Path, request: &[u8]) -> [Vec<u8>; 2] {
    [Side::Git, Side::Packgate].map(|side| {
        let output = answer(dir, side, repo, request);
        assert!(output.status.success(), "{side:?}: {output}");
        output.stdout
    })
}

/// Both servers refuse `request`; packgate with `ERR <expected>` (git's wording), and git
/// the same way where it sends an `ERR` at all.
#[track_caller]
fn both_refuse(dir: &Dir, repo: &Path, request: &[u8], expected: &str) {
    for side in [Side::Git, Side::Packgate] {
        let output = answer(dir, side, repo, request);
        assert!(!output.status.success(), "{side:?} accepted: {output}");
        match (side, error_reason(&output.stdout)) {
            (_, Some(reason)) => assert_eq!(reason, expected, "{side:?}: {output}"),
            (Side::Git, None) => assert!(
                output.stderr_text().contains(expected),
                "git's reason: {output}"
            ),
            (Side::Packgate, None) => panic!("packgate sent no ERR: {output}"),
        }
    }
}

/// The packets of a fetch response before the pack data: up to and including the
/// `packfile` section header (in band 1 with sideband-all).
fn before_pack(response: &[u8]) -> Vec<Packet> {
    let mut out = Vec::new();
    for packet in decode(response).0 {
        let header = matches!(
            packet.text().as_deref(),
            Some("packfile\n" | "\u{1}packfile\n")
        );
        out.push(packet);
        if header {
            break;
        }
    }
    out
}

/// A fetch of `refspec` from `url` into a new bare repository, with packet tracing;
/// returns the repository and the trace. `extra` goes before `fetch` (`-c` settings).
fn traced_fetch(
    dir: &Dir,
    git: &Git,
    name: &str,
    url: &str,
    upload_pack: Option<&str>,
    extra: &[&str],
    refspec: &str,
) -> (PathBuf, String) {
    let client = dir.join(name);
    dir.git(git)
        .args(["init", "--quiet", "--bare"])
        .arg(&client)
        .run();
    let trace = dir.join(&format!("{name}.trace"));
    let mut command = dir
        .git_in(git, &client)
        .env("GIT_TRACE_PACKET", &trace)
        .args(["-c", "protocol.version=2"])
        .args(extra)
        .args(["fetch", "--quiet"]);
    if let Some(upload_pack) = upload_pack {
        command = command.arg(upload_pack);
    }
    command.arg(url).arg(refspec).run();
    fsck(dir, git, &client);
    let trace = std::fs::read_to_string(&trace).unwrap_or_default();
    (client, trace)
}

#[test]
fn want_ref_fetch_as_with_git() {
    let dir = Dir::new("want-ref");
    let repo = source(&dir, &[("uploadpack.allowRefInWant", "true")]);
    let x = text(&dir, &Git::newest(), &repo, &["rev-parse", "refs/heads/x"]);
    for (n, git) in Git::all().into_iter().enumerate() {
        let mut fetched = Vec::new();
        for (side, upload_pack) in [
            ("git", git_upload_pack_option(&git)),
            ("packgate", packgate_upload_pack_option()),
        ] {
            let (client, trace) = traced_fetch(
                &dir,
                &git,
                &format!("{side}-{n}"),
                &file_url(&repo),
                Some(&upload_pack),
                &[],
                "refs/heads/x:refs/remotes/origin/x",
            );
            assert!(
                trace.contains("want-ref refs/heads/x"),
                "{git} did not use want-ref with {side}: {trace}"
            );
            assert!(trace.contains("wanted-refs"), "{side}, {git}: {trace}");
            let got = text(&dir, &git, &client, &["rev-parse", "refs/remotes/origin/x"]);
            assert_eq!(got, x, "{side}, {git}");
            fetched.push(present_objects(&dir, &git, &client));
        }
        assert_eq!(
            fetched[0], fetched[1],
            "objects from git and packgate, {git}"
        );
    }
}

#[test]
fn want_ref_requests_as_git_answers_them() {
    let dir = Dir::new("want-ref-raw");
    let repo = source(
        &dir,
        &[
            ("uploadpack.allowRefInWant", "true"),
            ("uploadpack.hideRefs", "refs/hidden"),
        ],
    );
    let git = Git::newest();
    let main = text(&dir, &git, &repo, &["rev-parse", "main"]);
    text(&dir, &git, &repo, &["update-ref", "refs/hidden/y", &main]);
    let fetch = |arguments: &[&str]| {
        let mut all: Vec<String> = vec!["no-progress".into(), "done".into()];
        all.extend(arguments.iter().map(|a| a.to_string()));
        v2_request("fetch", &["object-format=sha1"], &all)
    };
    let [from_git, from_packgate] = both_answer(&dir, &repo, &fetch(&["want-ref refs/heads/x"]));
    assert_eq!(before_pack(&from_packgate), before_pack(&from_git));
    assert!(
        crate::pkt::lines(&before_pack(&from_packgate)).contains(&"wanted-refs".to_owned()),
        "{:?}",
        before_pack(&from_packgate)
    );
    for name in ["refs/heads/nope", "refs/hidden/y", "main"] {
        let request = fetch(&[&format!("want-ref {name}")]);
        both_refuse(&dir, &repo, &request, &format!("unknown ref {name}"));
    }
    let twice = fetch(&["want-ref refs/heads/x", "want-ref refs/heads/x"]);
    both_refuse(&dir, &repo, &twice, "duplicate want-ref refs/heads/x");

    // Not configured: the argument is unknown to both.
    dir.git_in(&git, &repo)
        .args(["config", "--unset", "uploadpack.allowRefInWant"])
        .run();
    let request = fetch(&["want-ref refs/heads/x"]);
    both_refuse(
        &dir,
        &repo,
        &request,
        "unexpected line: 'want-ref refs/heads/x'",
    );
    let request = fetch(&["packfile-uris https"]);
    both_refuse(
        &dir,
        &repo,
        &request,
        "unexpected line: 'packfile-uris https'",
    );
}

#[test]
fn wait_for_done_negotiation_as_with_git() {
    let dir = Dir::new("wait-for-done");
    let repo = source(&dir, &[]);
    for (n, git) in Git::all().into_iter().enumerate() {
        // The client has main and a commit of its own on top.
        let client = dir.join(&format!("client-{n}"));
        dir.git(&git)
            .args(["clone", "--quiet", "--bare", "--no-local"])
            .arg(&repo)
            .arg(&client)
            .run();
        let own = text(
            &dir,
            &git,
            &client,
            &["commit-tree", "main^{tree}", "-p", "main", "-m", "own"],
        );
        let mut common = Vec::new();
        // git 2.47's server is the reference: 2.39's acknowledged every common have, 2.47's
        // only those not implied by an earlier one.
        let reference = git_upload_pack_option(&Git::newest());
        for upload_pack in [reference, packgate_upload_pack_option()] {
            let output = dir
                .git_in(&git, &client)
                .args(["-c", "protocol.version=2", "fetch", "--negotiate-only"])
                .arg(format!("--negotiation-tip={own}"))
                .arg(&upload_pack)
                .arg(file_url(&repo))
                .run();
            common.push(output.stdout_text());
        }
        let main = text(&dir, &git, &repo, &["rev-parse", "main"]);
        assert!(
            common[0].lines().any(|id| id == main),
            "git's answer, {git}: {common:?}"
        );
        assert_eq!(common[1], common[0], "{git}");
    }

    // By hand: haves without wants are a negotiation; never `ready`, however common.
    let git = Git::newest();
    let main = text(&dir, &git, &repo, &["rev-parse", "main"]);
    let x = text(&dir, &git, &repo, &["rev-parse", "x"]);
    for arguments in [
        vec![format!("have {main}"), "wait-for-done".into()],
        vec![
            format!("want {x}"),
            format!("have {main}"),
            "wait-for-done".into(),
        ],
    ] {
        let request = v2_request("fetch", &["object-format=sha1"], &arguments);
        let [from_git, from_packgate] = both_answer(&dir, &repo, &request);
        assert_eq!(
            decode(&from_packgate).0,
            decode(&from_git).0,
            "{arguments:?}"
        );
        assert!(
            !crate::pkt::lines(&decode(&from_packgate).0).contains(&"ready".to_owned()),
            "{arguments:?}"
        );
    }
}

#[test]
fn sideband_all_as_with_git() {
    let dir = Dir::new("sideband-all");
    let repo = source(&dir, &[("uploadpack.allowSidebandAll", "true")]);
    let git = Git::newest();
    let main = text(&dir, &git, &repo, &["rev-parse", "main"]);
    let x = text(&dir, &git, &repo, &["rev-parse", "x"]);
    for (n, git) in Git::all().into_iter().enumerate() {
        let mut fetched = Vec::new();
        for (side, upload_pack) in [
            ("git", git_upload_pack_option(&git)),
            ("packgate", packgate_upload_pack_option()),
        ] {
            let (client, trace) = traced_fetch(
                &dir,
                &git,
                &format!("{side}-{n}"),
                &file_url(&repo),
                Some(&upload_pack),
                &[],
                "+refs/heads/*:refs/heads/*",
            );
            assert!(trace.contains("sideband-all"), "{side}, {git}: {trace}");
            fetched.push(present_objects(&dir, &git, &client));
        }
        assert_eq!(fetched[0], fetched[1], "{git}");
    }
    // The whole response before the pack goes in band 1, as git sends it.
    let arguments = [
        "sideband-all".to_owned(),
        "no-progress".to_owned(),
        format!("want {x}"),
        format!("have {main}"),
    ];
    let request = v2_request("fetch", &["object-format=sha1"], &arguments);
    let [from_git, from_packgate] = both_answer(&dir, &repo, &request);
    let packets = before_pack(&from_packgate);
    assert_eq!(packets, before_pack(&from_git));
    assert_eq!(
        packets.first().and_then(Packet::text).as_deref(),
        Some("\u{1}acknowledgments\n")
    );

    // An unknown want under sideband-all: the error in band 3.
    let missing = "1".repeat(40);
    let request = v2_request(
        "fetch",
        &[],
        &["sideband-all".to_owned(), format!("want {missing}")],
    );
    let output = answer(&dir, Side::Packgate, &repo, &request);
    assert!(!output.status.success(), "{output}");
    assert_eq!(
        decode(&output.stdout).0.first().and_then(Packet::text),
        Some(format!("\u{3}upload-pack: not our ref {missing}\n")),
        "{output}"
    );

    // Not configured: unknown to both.
    dir.git_in(&git, &repo)
        .args(["config", "--unset", "uploadpack.allowSidebandAll"])
        .run();
    let request = v2_request(
        "fetch",
        &[],
        &["sideband-all".to_owned(), format!("want {x}")],
    );
    both_refuse(&dir, &repo, &request, "unexpected line: 'sideband-all'");
}

/// The capability names of a v2 advertisement, values cut off (agent, session id).
fn v2_capabilities(output: &Output) -> Vec<String> {
    let (advertisement, _) =
        split_advertisement(&output.stdout).unwrap_or_else(|| panic!("no advertisement: {output}"));
    crate::pkt::lines(&advertisement)
        .into_iter()
        .map(|capability| match capability.split_once('=') {
            Some((key, value)) if key == "agent" || key == "session-id" => {
                assert!(!value.is_empty() && !value.contains(' '), "{capability}");
                key.to_owned()
            }
            _ => capability,
        })
        .collect()
}

#[test]
fn advertisement_lists_what_is_configured_in_gits_order() {
    let dir = Dir::new("advertise-features");
    let repo = source(&dir, &[]);
    let git = Git::newest();
    let advertise = |side: Side| {
        let command = match side {
            Side::Git => dir.git(&git).arg("upload-pack"),
            Side::Packgate => dir.packgate().arg("upload-pack"),
        };
        command
            .arg(&repo)
            .env("GIT_PROTOCOL", "version=2")
            .stdin(FLUSH.to_vec())
            .output()
    };
    let packgate = v2_capabilities(&advertise(Side::Packgate));
    assert!(
        packgate.contains(&"fetch=shallow wait-for-done".to_owned()),
        "{packgate:?}"
    );
    for key in ["session-id", "object-info", "bundle-uri"] {
        assert!(!packgate.iter().any(|c| c.starts_with(key)), "{packgate:?}");
    }
    // packgate's own additions (docs/refs-watch.md), off below to compare with git.
    for added in ["ls-refs=unborn refs-token", "wait-refs"] {
        assert!(packgate.contains(&added.to_owned()), "{packgate:?}");
    }
    for (key, value) in [
        ("packgate.refsWatch", "false"),
        ("uploadpack.allowRefInWant", "true"),
        ("uploadpack.allowSidebandAll", "true"),
        ("transfer.advertiseSID", "true"),
        ("transfer.advertiseObjectInfo", "true"),
        ("uploadpack.advertiseBundleURIs", "true"),
        ("uploadpack.allowFilter", "true"),
    ] {
        dir.git_in(&git, &repo).args(["config", key, value]).run();
    }
    let packgate = v2_capabilities(&advertise(Side::Packgate));
    let reference = v2_capabilities(&advertise(Side::Git));
    assert_eq!(packgate, reference);
    assert!(packgate
        .contains(&"fetch=shallow wait-for-done filter ref-in-want sideband-all".to_owned()));

    // v0: session-id after the symref, before object-format, as git orders it.
    let v0 = dir
        .packgate()
        .args(["upload-pack", "--advertise-refs"])
        .arg(&repo)
        .run()
        .stdout_text();
    let first = v0.split('\0').nth(1).unwrap_or_default();
    let names: Vec<&str> = first
        .split_whitespace()
        .map(|c| c.split('=').next().unwrap_or(c))
        .collect();
    let at = |name: &str| names.iter().position(|n| *n == name);
    assert!(at("session-id").is_some(), "{first}");
    assert!(
        at("symref") < at("session-id") && at("session-id") < at("object-format"),
        "{first}"
    );
}

#[test]
fn session_ids_are_exchanged() {
    let dir = Dir::new("session-id");
    let repo = source(&dir, &[("transfer.advertiseSID", "true")]);
    for (n, git) in Git::all().into_iter().enumerate() {
        let client = dir.join(&format!("clone-{n}"));
        let events = dir.join(&format!("events-{n}.json"));
        dir.git(&git)
            .env("GIT_TRACE2_EVENT", &events)
            .args([
                "-c",
                "protocol.version=2",
                "-c",
                "transfer.advertiseSID=true",
            ])
            .args(["clone", "--quiet", "--bare"])
            .arg(packgate_upload_pack_option())
            .arg(file_url(&repo))
            .arg(&client)
            .run();
        fsck(&dir, &git, &client);
        let events = std::fs::read_to_string(&events).unwrap_or_default();
        assert!(
            events.contains("\"key\":\"server-sid\",\"value\":\"packgate-"),
            "{git}: the client saw no server session id"
        );
    }
    // A request's session-id is taken when advertised…
    let request = v2_request("ls-refs", &["session-id=client-1"], &[]);
    for side in [Side::Git, Side::Packgate] {
        let output = answer(&dir, side, &repo, &request);
        assert!(output.status.success(), "{side:?}: {output}");
    }
    // …and an unknown capability otherwise, as in git (which dies without an ERR).
    let git = Git::newest();
    dir.git_in(&git, &repo)
        .args(["config", "transfer.advertiseSID", "false"])
        .run();
    both_refuse(
        &dir,
        &repo,
        &request,
        "unknown capability 'session-id=client-1'",
    );
}

#[test]
fn object_info_as_git_answers_it() {
    let dir = Dir::new("object-info");
    let repo = source(&dir, &[]);
    let git = Git::newest();
    let main = text(&dir, &git, &repo, &["rev-parse", "main"]);
    let tree = text(&dir, &git, &repo, &["rev-parse", "main^{tree}"]);
    let request_of =
        |arguments: &[String]| v2_request("object-info", &["object-format=sha1"], arguments);
    let ask = request_of(&[
        "size".into(),
        format!("oid {main}"),
        format!("oid {tree}"),
        format!("oid {}", "2".repeat(40)),
    ]);
    // Not advertised: not a command.
    both_refuse(&dir, &repo, &ask, "invalid command 'object-info'");

    dir.git_in(&git, &repo)
        .args(["config", "transfer.advertiseObjectInfo", "true"])
        .run();
    let [from_git, from_packgate] = both_answer(&dir, &repo, &ask);
    assert_eq!(from_packgate, from_git);
    let lines = crate::pkt::lines(&decode(&from_packgate).0);
    assert_eq!(lines.first().map(String::as_str), Some("size"), "{lines:?}");
    // No size asked for, or no ids.
    for arguments in [vec![format!("oid {main}")], vec!["size".into()]] {
        let [from_git, from_packgate] = both_answer(&dir, &repo, &request_of(&arguments));
        assert_eq!(from_packgate, from_git, "{arguments:?}");
    }
    // Malformed lines: git's first ERR, word for word (git goes on after it; packgate ends).
    for (argument, reason) in [
        (
            "sizes".to_owned(),
            "object-info: unexpected line: 'sizes'".to_owned(),
        ),
        (
            "oid 1234".to_owned(),
            "object-info: protocol error, expected to get oid, not '1234'".to_owned(),
        ),
    ] {
        let request = request_of(&["size".to_owned(), argument]);
        let from_git = answer(&dir, Side::Git, &repo, &request);
        assert_eq!(
            error_reason(&from_git.stdout).as_deref(),
            Some(reason.as_str())
        );
        let from_packgate = answer(&dir, Side::Packgate, &repo, &request);
        assert!(!from_packgate.status.success(), "{from_packgate}");
        assert_eq!(
            error_reason(&from_packgate.stdout),
            Some(reason),
            "{from_packgate}"
        );
    }
}

#[test]
fn bundle_uri_clone_as_with_git() {
    let dir = Dir::new("bundle-uri");
    let repo = source(&dir, &[]);
    let git = Git::newest();
    let bundle = dir.join("all.bundle");
    dir.git_in(&git, &repo)
        .args(["bundle", "create"])
        .arg(&bundle)
        .arg("main")
        .run();
    for (key, value) in [
        ("uploadpack.advertiseBundleURIs", "true".to_owned()),
        ("bundle.version", "1".to_owned()),
        ("bundle.mode", "all".to_owned()),
        ("bundle.everything.uri", file_url(&bundle)),
    ] {
        dir.git_in(&git, &repo).args(["config", key, &value]).run();
    }
    let request = v2_request("bundle-uri", &["object-format=sha1"], &[]);
    let [from_git, from_packgate] = both_answer(&dir, &repo, &request);
    assert_eq!(from_packgate, from_git);
    assert!(
        crate::pkt::lines(&decode(&from_packgate).0)
            .contains(&format!("bundle.everything.uri={}", file_url(&bundle))),
        "{:?}",
        decode(&from_packgate).0
    );
    both_refuse(
        &dir,
        &repo,
        &v2_request("bundle-uri", &[], &["x".into()]),
        "bundle-uri: unexpected argument: 'x'",
    );

    // git 2.47 asks for the list under transfer.bundleURI and fetches the bundle first
    // (2.39's client has no bundle-uri command).
    let client = dir.join("clone");
    let events = dir.join("events.json");
    dir.git(&git)
        .env("GIT_TRACE2_EVENT", &events)
        .args(["-c", "protocol.version=2", "-c", "transfer.bundleURI=true"])
        .args(["clone", "--quiet", "--bare"])
        .arg(packgate_upload_pack_option())
        .arg(file_url(&repo))
        .arg(&client)
        .run();
    fsck(&dir, &git, &client);
    let bundled = text(
        &dir,
        &git,
        &client,
        &["for-each-ref", "--format=%(refname)", "refs/bundles/"],
    );
    assert_eq!(bundled, "refs/bundles/main", "the bundle's refs");
    assert_eq!(
        text(&dir, &git, &client, &["rev-parse", "main"]),
        text(&dir, &git, &repo, &["rev-parse", "main"])
    );
}

#[test]
fn over_git_protocol_http_serve_and_http_backend() {
    let dir = Dir::new("features-http");
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|error| panic!("mkdir: {error}"));
    let repo = source(
        &dir,
        &[
            ("uploadpack.allowRefInWant", "true"),
            ("uploadpack.allowSidebandAll", "true"),
            ("transfer.advertiseObjectInfo", "true"),
            ("transfer.advertiseSID", "true"),
            ("http.uploadpack", "true"),
        ],
    );
    let served = root.join("tiny.git");
    dir.copy_tree(&repo, &served);
    let newest = Git::newest();
    let bundle = dir.join("main.bundle");
    dir.git_in(&newest, &served)
        .args(["bundle", "create"])
        .arg(&bundle)
        .arg("main")
        .run();
    for (key, value) in [
        ("uploadpack.advertiseBundleURIs", "true".to_owned()),
        ("bundle.version", "1".to_owned()),
        ("bundle.mode", "all".to_owned()),
        ("bundle.main.uri", file_url(&bundle)),
    ] {
        dir.git_in(&newest, &served)
            .args(["config", key, &value])
            .run();
    }
    let server = Server::start(&root, Push::Refused);
    let host = CgiHost::start(CgiHostOptions {
        project_root: root.clone(),
        export_all: true,
        ..CgiHostOptions::default()
    });
    let x = text(
        &dir,
        &Git::newest(),
        &served,
        &["rev-parse", "refs/heads/x"],
    );
    for (n, git) in Git::all().into_iter().enumerate() {
        for (front, url) in [
            ("git-protocol", server.git_url("tiny.git")),
            ("serve", server.http_url("tiny.git")),
            ("http-backend", host.url("tiny.git")),
        ] {
            let (client, trace) = traced_fetch(
                &dir,
                &git,
                &format!("{front}-{n}"),
                &url,
                None,
                &["-c", "transfer.advertiseSID=true"],
                "refs/heads/x:refs/remotes/origin/x",
            );
            for sent in [
                "want-ref refs/heads/x",
                "sideband-all",
                "session-id=packgate-",
            ] {
                assert!(
                    trace.contains(sent),
                    "{front}, {git}: no {sent:?} in {trace}"
                );
            }
            let got = text(&dir, &git, &client, &["rev-parse", "refs/remotes/origin/x"]);
            assert_eq!(got, x, "{front}, {git}");
            if n == 0 {
                // git 2.47 asks for the bundle list (its capabilities before the command).
                let clone = dir.join(&format!("{front}-bundled"));
                dir.git(&git)
                    .args(["-c", "protocol.version=2", "-c", "transfer.bundleURI=true"])
                    .args(["clone", "--quiet", "--bare"])
                    .arg(&url)
                    .arg(&clone)
                    .run();
                fsck(&dir, &git, &clone);
                let bundled = text(
                    &dir,
                    &git,
                    &clone,
                    &["for-each-ref", "--format=%(refname)", "refs/bundles/"],
                );
                assert_eq!(bundled, "refs/bundles/main", "{front}");
            }
        }
    }

    // object-info by hand over serve's HTTP: the same answer as git's upload-pack gives.
    let main = text(&dir, &newest, &served, &["rev-parse", "main"]);
    let request = v2_request(
        "object-info",
        &["object-format=sha1"],
        &["size".to_owned(), format!("oid {main}")],
    );
    let mut http = format!(
        "POST /tiny.git/git-upload-pack HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/x-git-upload-pack-request\r\n\
         Git-Protocol: version=2\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.http_address(),
        request.len()
    )
    .into_bytes();
    http.extend_from_slice(&request);
    let response = server.raw(&http);
    assert_eq!(response.status, 200, "{response}");
    let from_git = answer(&dir, Side::Git, &served, &request);
    assert!(from_git.status.success(), "{from_git}");
    assert_eq!(response.body, from_git.stdout, "{response}");
}

#[test]
fn packfile_uris_as_with_git() {
    let dir = Dir::new("packfile-uris");
    let repo = source(&dir, &[("uploadpack.allowSidebandAll", "true")]);
    let newest = Git::newest();
    // A branch `y` with a blob of its own, and a pre-built pack of just that blob, served
    // (as a dumb-HTTP file) by git http-backend on loopback.
    let blob = dir
        .git_in(&newest, &repo)
        .args(["hash-object", "-w", "--stdin"])
        .stdin(b"offered by URI\n".to_vec())
        .run()
        .stdout_text()
        .trim()
        .to_owned();
    let tree = dir
        .git_in(&newest, &repo)
        .arg("mktree")
        .stdin(format!("100644 blob {blob}\tbig\n").into_bytes())
        .run()
        .stdout_text()
        .trim()
        .to_owned();
    let y = text(
        &dir,
        &newest,
        &repo,
        &["commit-tree", &tree, "-p", "main", "-m", "y"],
    );
    text(&dir, &newest, &repo, &["update-ref", "refs/heads/y", &y]);
    let root = dir.join("files");
    let packs = root.join("packs.git");
    dir.git(&newest)
        .args(["init", "--quiet", "--bare"])
        .arg(&packs)
        .run();
    let pack_hash = dir
        .git_in(&newest, &repo)
        .arg("pack-objects")
        .arg(packs.join("objects/pack/pack"))
        .stdin(format!("{blob}\n").into_bytes())
        .run()
        .stdout_text()
        .trim()
        .to_owned();
    let host = CgiHost::start(CgiHostOptions {
        project_root: root.clone(),
        export_all: true,
        program: Some(vec![newest.program.clone().into(), "http-backend".into()]),
        ..CgiHostOptions::default()
    });
    let uri = host.url(&format!("packs.git/objects/pack/pack-{pack_hash}.pack"));
    dir.git_in(&newest, &repo)
        .args(["config", "uploadpack.blobPackfileUri"])
        .arg(format!("{blob} {pack_hash} {uri}"))
        .run();

    // The response up to the pack: the URI section, then the pack's header, as git's.
    let arguments = [
        "sideband-all".to_owned(),
        "packfile-uris http,https".to_owned(),
        "no-progress".to_owned(),
        format!("want {y}"),
        "done".to_owned(),
    ];
    let request = v2_request("fetch", &["object-format=sha1"], &arguments);
    let [from_git, from_packgate] = both_answer(&dir, &repo, &request);
    let packets = before_pack(&from_packgate);
    assert_eq!(packets, before_pack(&from_git));
    assert_eq!(
        crate::pkt::lines(&packets),
        [
            "\u{1}packfile-uris".to_owned(),
            format!("\u{1}{pack_hash} {uri}"),
            "\u{1}packfile".to_owned()
        ]
    );
    let request = v2_request(
        "fetch",
        &[],
        &[
            "packfile-uris http".to_owned(),
            "packfile-uris https".to_owned(),
        ],
    );
    both_refuse(
        &dir,
        &repo,
        &request,
        "multiple packfile-uris lines forbidden",
    );

    // Clients that download over http get the blob from the pre-built pack.
    for (n, git) in Git::all().into_iter().enumerate() {
        let mut fetched = Vec::new();
        for (side, upload_pack) in [
            ("git", git_upload_pack_option(&newest)),
            ("packgate", packgate_upload_pack_option()),
        ] {
            let (client, trace) = traced_fetch(
                &dir,
                &git,
                &format!("{side}-{n}"),
                &file_url(&repo),
                Some(&upload_pack),
                &["-c", "fetch.uriProtocols=http"],
                "+refs/heads/*:refs/heads/*",
            );
            assert!(
                trace.contains("packfile-uris http"),
                "{side}, {git}: {trace}"
            );
            dir.git_in(&git, &client)
                .args(["cat-file", "-e", &blob])
                .run();
            fetched.push(present_objects(&dir, &git, &client));
        }
        assert_eq!(fetched[0], fetched[1], "{git}");
    }
    let downloads = host
        .access_log()
        .iter()
        .filter(|logged| logged.target.ends_with(".pack") && logged.status == 200)
        .count();
    assert_eq!(downloads, 2 * Git::all().len(), "{:?}", host.access_log());
}

/// `uploadpack.blobPackfileUri` as git reads it (its t5702): `packfile-uris` is refused
/// when nothing is configured, a key without a value stops the service, and a value git's
/// pack-objects would refuse fails only a fetch that asks for URIs — a request that wants
/// nothing still ends well. Each outcome is git's upload-pack's.
#[test]
fn packfile_uri_settings_fail_where_gits_do() {
    let dir = Dir::new("packfile-uri-settings");
    let repo = source(&dir, &[("uploadpack.allowSidebandAll", "true")]);
    let git = Git::newest();
    let request = v2_request(
        "fetch",
        &["object-format=sha1"],
        &["packfile-uris https".to_owned(), "done".to_owned()],
    );
    let head = text(&dir, &git, &repo, &["rev-parse", "HEAD"]);
    let wanting = v2_request(
        "fetch",
        &["object-format=sha1"],
        &[
            "sideband-all".to_owned(),
            "packfile-uris https".to_owned(),
            format!("want {head}"),
            "done".to_owned(),
        ],
    );
    for (setting, request, succeeds) in [
        (None, &request, false),
        (Some("'uploadpack.blobpackfileuri'"), &request, false),
        (
            Some("'uploadpack.blobpackfileuri=anything'"),
            &request,
            true,
        ),
        (
            Some("'uploadpack.blobpackfileuri=anything'"),
            &wanting,
            false,
        ),
    ] {
        let outcomes: Vec<bool> = [Side::Packgate, Side::Git]
            .into_iter()
            .map(|side| {
                let command = match side {
                    Side::Git => dir.git(&git).arg("upload-pack"),
                    Side::Packgate => dir.packgate().arg("upload-pack"),
                };
                let command = match setting {
                    Some(setting) => command.env("GIT_CONFIG_PARAMETERS", setting),
                    None => command,
                };
                command
                    .arg("--stateless-rpc")
                    .arg(&repo)
                    .env("GIT_PROTOCOL", "version=2")
                    .stdin(request.clone())
                    .output()
                    .status
                    .success()
            })
            .collect();
        assert_eq!(outcomes, [succeeds, succeeds], "{setting:?}");
    }
}
