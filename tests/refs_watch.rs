//! Refs tokens and `wait-refs` (docs/refs-watch.md) through `packgate upload-pack` (stdio)
//! and `packgate serve` (git://, HTTP), with a small raw v2 client: `if-none-match` answered
//! `unchanged` until a push or `git update-ref` moves a ref (not after `git pack-refs`),
//! waiters woken by pushes over every front-end and by writes on disk, timing out, never
//! told of hidden refs, leaving when their client hangs up, and bad input answered with
//! `ERR`; real git still clones and fetches through every front-end.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a failure is the test failing.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    http::{Push, Server, ServerOptions},
    pkt::{self, line, DELIM, FLUSH},
    sessions::{clone_commit_and_push, open_session, read_until_flush},
    util::{file_url, fsck, packgate_upload_pack_option, shared_fixture, Dir, Git, PACKGATE},
};

/// A v2 request: `command=<command>`, a delimiter, one line per argument, a flush.
fn request(command: &str, arguments: &[&str]) -> Vec<u8> {
    let mut bytes = line(format!("command={command}\n"));
    bytes.extend_from_slice(DELIM);
    for argument in arguments {
        bytes.extend_from_slice(&line(format!("{argument}\n")));
    }
    bytes.extend_from_slice(FLUSH);
    bytes
}

/// Payloads as text lines without their newline.
fn text_lines(payloads: Vec<Vec<u8>>) -> Vec<String> {
    payloads
        .into_iter()
        .map(|payload| String::from_utf8_lossy(&payload).trim_end().to_owned())
        .collect()
}

/// The served repository, a server for it (pushes allowed over git:// and HTTP), and the
/// directory holding both.
struct Setup {
    dir: Dir,
    served: PathBuf,
    server: Server,
}

impl Setup {
    fn new(name: &str, config: &[(&str, &str)], log_filter: Option<&'static str>) -> Setup {
        let source = shared_fixture("tiny");
        let dir = Dir::new(name);
        let root = dir.join("repos");
        std::fs::create_dir_all(&root).unwrap();
        let served = root.join("tiny.git");
        dir.copy_tree(&source.path, &served);
        let git = Git::newest();
        for (key, value) in [("daemon.receivepack", "true")].iter().chain(config) {
            dir.git_in(&git, &served).args(["config", key, value]).run();
        }
        let server = Server::start_with(
            &root,
            &ServerOptions {
                log_filter,
                ..ServerOptions::new(Push::AllowedWithoutAuthentication)
            },
        );
        Setup {
            dir,
            served,
            server,
        }
    }

    fn git_address(&self) -> String {
        self.server
            .git_url("")
            .trim_start_matches("git://")
            .trim_end_matches('/')
            .to_owned()
    }

    /// A new git:// v2 session.
    fn git_session(&self) -> TcpStream {
        open_session(&self.git_address(), "/tiny.git")
    }

    /// One request on a new session of `front`, its response's lines.
    fn ask(&self, front: Front, command: &str, arguments: &[&str]) -> Vec<String> {
        let body = request(command, arguments);
        match front {
            Front::Stdio => {
                let mut input = body;
                input.extend_from_slice(FLUSH);
                let output = self
                    .dir
                    .packgate()
                    .arg("upload-pack")
                    .arg(&self.served)
                    .env("GIT_PROTOCOL", "version=2")
                    .stdin(input)
                    .output();
                assert!(!output.panicked(), "upload-pack panicked: {output}");
                let (_, rest) = pkt::split_advertisement(&output.stdout)
                    .unwrap_or_else(|| panic!("no advertisement: {output}"));
                response_lines(rest)
            }
            Front::Git => {
                // The flush ends the session: the response is all the server sends.
                let mut session = self.git_session();
                session.write_all(&body).unwrap();
                session.write_all(FLUSH).unwrap();
                // After an `ERR` the server closes with the flush unread: a reset may follow
                // the response.
                let mut response = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(read @ 1..) = session.read(&mut chunk) {
                    response.extend_from_slice(&chunk[..read]);
                }
                response_lines(&response)
            }
            Front::Http => {
                let mut raw = format!(
                    "POST /tiny.git/git-upload-pack HTTP/1.1\r\nHost: {}\r\n\
                     Content-Type: application/x-git-upload-pack-request\r\n\
                     Git-Protocol: version=2\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    self.server.http_address(),
                    body.len()
                )
                .into_bytes();
                raw.extend_from_slice(&body);
                let response = self.server.raw(&raw);
                assert_eq!(response.status, 200, "{response}");
                response_lines(&response.body)
            }
        }
    }

    /// The capability lines `front` advertises.
    fn capabilities(&self, front: Front) -> Vec<String> {
        match front {
            Front::Stdio => {
                let output = self
                    .dir
                    .packgate()
                    .arg("upload-pack")
                    .arg(&self.served)
                    .env("GIT_PROTOCOL", "version=2")
                    .stdin(FLUSH.to_vec())
                    .run();
                let (advertisement, _) = pkt::split_advertisement(&output.stdout).unwrap();
                pkt::lines(&advertisement)
            }
            Front::Git => {
                let address = self.git_address();
                let mut stream = TcpStream::connect(&address).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let head = "git-upload-pack /tiny.git\0host=127.0.0.1\0\0version=2\0";
                stream.write_all(&line(head.as_bytes())).unwrap();
                text_lines(read_until_flush(&mut stream))
            }
            Front::Http => {
                let response = self.server.get(
                    "/tiny.git/info/refs?service=git-upload-pack",
                    "Git-Protocol: version=2\r\n",
                );
                let (advertisement, _) = pkt::split_advertisement(&response.body).unwrap();
                pkt::lines(&advertisement)
            }
        }
    }

    fn rev_parse(&self, name: &str) -> String {
        self.dir
            .git_in(&Git::newest(), &self.served)
            .args(["rev-parse", name])
            .run()
            .stdout_text()
            .trim()
            .to_owned()
    }

    /// `git update-ref` in the served repository, behind packgate's back.
    fn update_ref(&self, name: &str, value: &str) {
        self.dir
            .git_in(&Git::newest(), &self.served)
            .args(["update-ref", name, value])
            .run();
    }

    /// Push a new commit to `branch` with real git over `front`.
    fn push(&self, front: Front, branch: &str) {
        let git = Git::newest();
        match front {
            Front::Git => clone_commit_and_push(
                &self.dir,
                &git,
                &self.server.git_url("tiny.git"),
                &self.served,
                branch,
            ),
            Front::Http => clone_commit_and_push(
                &self.dir,
                &git,
                &self.server.http_url("tiny.git"),
                &self.served,
                branch,
            ),
            Front::Stdio => {
                let work = self.dir.join(&format!("work-{branch}"));
                let url = file_url(&self.served);
                self.dir
                    .git(&git)
                    .args(["-c", "protocol.version=2", "clone", "-q"])
                    .arg(packgate_upload_pack_option())
                    .arg(&url)
                    .arg(&work)
                    .run();
                self.dir
                    .git(&git)
                    .arg("-C")
                    .arg(&work)
                    .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
                    .args(["commit", "-q", "--allow-empty", "-m", "pushed"])
                    .run();
                self.dir
                    .git(&git)
                    .arg("-C")
                    .arg(&work)
                    .arg("push")
                    .arg(format!("--receive-pack='{PACKGATE}' receive-pack"))
                    .arg(&url)
                    .arg(format!("HEAD:refs/heads/{branch}"))
                    .run();
                fsck(&self.dir, &git, &self.served);
            }
        }
    }
}

/// The lines of the first response in `bytes` (up to its flush).
fn response_lines(bytes: &[u8]) -> Vec<String> {
    let (packets, _) = pkt::decode(bytes);
    let end = packets
        .iter()
        .position(|packet| *packet == pkt::Packet::Flush)
        .unwrap_or(packets.len());
    pkt::lines(&packets[..end])
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Front {
    Stdio,
    Git,
    Http,
}

const FRONTS: [Front; 3] = [Front::Stdio, Front::Git, Front::Http];

/// The token after `word` in the first line of `lines`.
fn token_after(word: &str, lines: &[String]) -> String {
    let first = lines.first().map(String::as_str).unwrap_or_default();
    let token = first
        .strip_prefix(word)
        .and_then(|rest| rest.strip_prefix(' '))
        .unwrap_or_else(|| panic!("expected '{word} <token>' first: {lines:?}"));
    assert_eq!(token.len(), 40, "{lines:?}");
    token.to_owned()
}

/// `ls-refs` with `if-none-match` over stdio, git:// and HTTP: one `unchanged` line while
/// nothing moved (also after `git pack-refs --all`), the listing and a new token after a push
/// and after `git update-ref` on disk; the same token from every front-end; tokens and
/// `wait-refs` advertised where they are served; malformed tokens answered with `ERR`.
#[test]
fn if_none_match_over_every_front_end() {
    let setup = Setup::new("refs-watch-if-none-match", &[], None);
    for front in FRONTS {
        let capabilities = setup.capabilities(front);
        assert!(
            capabilities.contains(&"ls-refs=unborn refs-token".to_owned()),
            "{front:?}: {capabilities:?}"
        );
        assert_eq!(
            capabilities.contains(&"wait-refs".to_owned()),
            front != Front::Http,
            "{front:?}: {capabilities:?}"
        );
    }
    let heads = ["ref-prefix refs/heads/", "symrefs"];
    let listing = |front: Front, since: Option<&str>| {
        let if_none_match = since.map(|token| format!("if-none-match {token}"));
        let mut arguments = heads.to_vec();
        match &if_none_match {
            Some(argument) => arguments.push(argument),
            None => arguments.push("refs-token"),
        }
        setup.ask(front, "ls-refs", &arguments)
    };
    let first = listing(Front::Stdio, None);
    let token = token_after("refs-token", &first);
    let main = setup.rev_parse("refs/heads/main");
    assert!(
        first.contains(&format!("{main} refs/heads/main")),
        "{first:?}"
    );
    for front in FRONTS {
        assert_eq!(listing(front, None), first, "{front:?}");
        assert_eq!(
            listing(front, Some(&token)),
            vec![format!("unchanged {token}")],
            "{front:?}"
        );
    }
    // Another prefix, another listing: the token does not match it.
    let all = setup.ask(Front::Git, "ls-refs", &[&format!("if-none-match {token}")]);
    assert_ne!(token_after("refs-token", &all), token);

    setup.push(Front::Http, "pushed");
    let pushed = setup.rev_parse("refs/heads/pushed");
    let after_push = listing(Front::Git, Some(&token));
    let new_token = token_after("refs-token", &after_push);
    assert_ne!(new_token, token);
    assert!(
        after_push.contains(&format!("{pushed} refs/heads/pushed")),
        "{after_push:?}"
    );
    for front in FRONTS {
        assert_eq!(listing(front, Some(&token)), after_push, "{front:?}");
    }

    // Packing refs changes no listing.
    setup
        .dir
        .git_in(&Git::newest(), &setup.served)
        .args(["pack-refs", "--all"])
        .run();
    for front in FRONTS {
        assert_eq!(
            listing(front, Some(&new_token)),
            vec![format!("unchanged {new_token}")],
            "{front:?} after pack-refs"
        );
    }
    // A ref written by git on disk does.
    setup.update_ref("refs/heads/on-disk", &main);
    for front in FRONTS {
        let lines = listing(front, Some(&new_token));
        assert_ne!(token_after("refs-token", &lines), new_token, "{front:?}");
        assert!(
            lines.contains(&format!("{main} refs/heads/on-disk")),
            "{front:?}: {lines:?}"
        );
    }

    for front in FRONTS {
        for bad in [
            "if-none-match nope",
            "if-none-match ",
            &format!("if-none-match {}", token.to_uppercase()),
        ] {
            let lines = setup.ask(front, "ls-refs", &[bad]);
            assert!(
                lines.len() == 1 && lines[0].starts_with("ERR malformed refs token"),
                "{front:?} {bad:?}: {lines:?}"
            );
        }
    }
    // Over HTTP nothing can wait.
    let lines = setup.ask(Front::Http, "wait-refs", &["timeout 1"]);
    assert_eq!(lines, vec!["ERR wait-refs needs a stateful connection"]);
    let log = setup.server.stop_and_read_log();
    assert!(!log.contains("panicked"), "{log}");
}

/// `packgate.refsWatch = false`: nothing advertised, the arguments and the command unknown.
#[test]
fn refs_watch_can_be_turned_off() {
    let setup = Setup::new("refs-watch-off", &[("packgate.refsWatch", "false")], None);
    for front in FRONTS {
        let capabilities = setup.capabilities(front);
        assert!(
            capabilities.contains(&"ls-refs=unborn".to_owned())
                && !capabilities.contains(&"wait-refs".to_owned()),
            "{front:?}: {capabilities:?}"
        );
        assert_eq!(
            setup.ask(front, "ls-refs", &["refs-token"]),
            vec!["ERR unexpected line: 'refs-token'"],
            "{front:?}"
        );
    }
    assert_eq!(
        setup.ask(Front::Git, "wait-refs", &["timeout 1"]),
        vec!["ERR invalid command 'wait-refs'"]
    );
}

/// The token of the refs under `refs/heads/`.
fn heads_token(setup: &Setup) -> String {
    let lines = setup.ask(
        Front::Git,
        "ls-refs",
        &["ref-prefix refs/heads/", "refs-token"],
    );
    token_after("refs-token", &lines)
}

/// Send a `wait-refs` for `refs/heads/` since `token` on a new git:// session.
fn git_waiter(setup: &Setup, token: &str, timeout: u64) -> TcpStream {
    let mut session = setup.git_session();
    session
        .write_all(&request(
            "wait-refs",
            &[
                &format!("since {token}"),
                "ref-prefix refs/heads/",
                &format!("timeout {timeout}"),
            ],
        ))
        .unwrap();
    session
}

/// `packgate upload-pack` over pipes, kept running.
struct StdioSession {
    child: Child,
    stdout: ChildStdout,
}

impl StdioSession {
    fn start(served: &Path) -> StdioSession {
        let mut child = Command::new(PACKGATE)
            .arg("upload-pack")
            .arg(served)
            .env("GIT_PROTOCOL", "version=2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let advertisement = text_lines(read_until_flush(&mut stdout));
        assert!(
            advertisement.contains(&"wait-refs".to_owned()),
            "{advertisement:?}"
        );
        StdioSession { child, stdout }
    }

    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for StdioSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waiters on git:// woken by real git pushes over git://, HTTP and stdio, and a waiter on
/// stdio (which blocks its thread) woken by a push over git://; each gets `changed`, the new
/// listing and its token, which `if-none-match` then calls current.
#[test]
fn wait_refs_is_woken_by_pushes_over_every_front_end() {
    let setup = Setup::new("refs-watch-pushes", &[], None);
    for front in FRONTS {
        let token = heads_token(&setup);
        let mut waiter = git_waiter(&setup, &token, 50);
        let branch = format!("pushed-{front:?}").to_lowercase();
        setup.push(front, &branch);
        let lines = text_lines(read_until_flush(&mut waiter));
        let changed = token_after("changed", &lines);
        assert_ne!(changed, token, "{front:?}");
        let pushed = setup.rev_parse(&format!("refs/heads/{branch}"));
        assert!(
            lines.contains(&format!("{pushed} refs/heads/{branch}")),
            "{front:?}: {lines:?}"
        );
        // The session goes on, and the token is the listing's.
        waiter
            .write_all(&request(
                "ls-refs",
                &[
                    "ref-prefix refs/heads/",
                    &format!("if-none-match {changed}"),
                ],
            ))
            .unwrap();
        assert_eq!(
            text_lines(read_until_flush(&mut waiter)),
            vec![format!("unchanged {changed}")]
        );
    }

    let token = heads_token(&setup);
    let mut stdio = StdioSession::start(&setup.served);
    stdio.send(&request(
        "wait-refs",
        &[
            &format!("since {token}"),
            "ref-prefix refs/heads/",
            "timeout 50",
        ],
    ));
    setup.push(Front::Git, "for-stdio");
    let lines = text_lines(read_until_flush(&mut stdio.stdout));
    assert_ne!(token_after("changed", &lines), token);
    let pushed = setup.rev_parse("refs/heads/for-stdio");
    assert!(
        lines.contains(&format!("{pushed} refs/heads/for-stdio")),
        "{lines:?}"
    );
}

/// A waiter times out `unchanged` (over git:// and stdio), one on a prefix whose refs are
/// hidden is never told while a hidden ref moves, a ref written by `git update-ref` wakes a
/// waiter within the re-check, a waiter without `since` waits from the current state, and
/// bad input gets `ERR` without hurting the server.
#[test]
fn wait_refs_times_out_ignores_hidden_refs_and_sees_disk_writes() {
    let setup = Setup::new(
        "refs-watch-wait",
        &[("uploadpack.hideRefs", "refs/heads/hidden")],
        None,
    );
    let token = heads_token(&setup);
    let mut waiter = git_waiter(&setup, &token, 1);
    assert_eq!(
        text_lines(read_until_flush(&mut waiter)),
        vec![format!("unchanged {token}")]
    );
    let mut stdio = StdioSession::start(&setup.served);
    stdio.send(&request(
        "wait-refs",
        &[
            &format!("since {token}"),
            "ref-prefix refs/heads/",
            "timeout 1",
        ],
    ));
    assert_eq!(
        text_lines(read_until_flush(&mut stdio.stdout)),
        vec![format!("unchanged {token}")]
    );
    drop(stdio);

    // A hidden ref moves while the waiter waits: the waiter may be woken, but it is not
    // told; it times out unchanged.
    let main = setup.rev_parse("refs/heads/main");
    let mut hidden_waiter = git_waiter(&setup, &token, 3);
    setup.update_ref("refs/heads/hidden/secret", &main);
    assert_eq!(
        text_lines(read_until_flush(&mut hidden_waiter)),
        vec![format!("unchanged {token}")]
    );
    assert_eq!(heads_token(&setup), token, "the hidden ref is in the token");

    // A write on disk wakes a waiter within the re-check (bounded at 20 s here).
    let mut disk_waiter = git_waiter(&setup, &token, 20);
    let started = Instant::now();
    setup.update_ref("refs/heads/on-disk", &main);
    let lines = text_lines(read_until_flush(&mut disk_waiter));
    assert_ne!(token_after("changed", &lines), token, "{lines:?}");
    assert!(
        lines.contains(&format!("{main} refs/heads/on-disk")),
        "{lines:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a write on disk took {:?} to wake the waiter",
        started.elapsed()
    );

    // Without `since`: the state when the request is read; a stale `since`: at once.
    let lines = setup.ask(
        Front::Git,
        "wait-refs",
        &["ref-prefix refs/heads/", "timeout 1"],
    );
    assert_eq!(lines, vec![format!("unchanged {}", heads_token(&setup))]);
    let lines = setup.ask(
        Front::Stdio,
        "wait-refs",
        &[
            &format!("since {token}"),
            "ref-prefix refs/heads/",
            "timeout 600",
        ],
    );
    assert_eq!(token_after("changed", &lines), heads_token(&setup));

    for front in [Front::Stdio, Front::Git] {
        for (arguments, expected) in [
            (vec!["since nope"], "ERR malformed refs token"),
            (
                vec!["timeout 601"],
                "ERR wait-refs: timeout 601 is above the maximum of 600 seconds",
            ),
            (
                vec!["timeout soon"],
                "ERR wait-refs: invalid timeout 'soon'",
            ),
            (
                vec!["timeout 99999999999999999999999999"],
                "ERR wait-refs: timeout 9",
            ),
            (vec!["frobnicate"], "ERR unexpected line: 'frobnicate'"),
        ] {
            let lines = setup.ask(front, "wait-refs", &arguments);
            assert!(
                lines.len() == 1 && lines[0].starts_with(expected),
                "{front:?} {arguments:?}: {lines:?}"
            );
        }
    }
    let log = setup.server.stop_and_read_log();
    assert!(!log.contains("panicked"), "{log}");
}

/// A git:// client that hangs up while its `wait-refs` waits ends that task at once (the
/// server's debug log says the waiter left), long before its timeout; the server goes on.
#[test]
fn a_client_hanging_up_ends_its_wait() {
    let setup = Setup::new(
        "refs-watch-hang-up",
        &[],
        Some("warn,packgate_transport::daemon=debug"),
    );
    let token = heads_token(&setup);
    let waiter = git_waiter(&setup, &token, 600);
    drop(waiter);
    let started = Instant::now();
    let left = "the client left while its request waited";
    while !setup.server.log_text().contains(left) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no '{left}' in the log:\n{}",
            setup.server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(heads_token(&setup), token);
}

/// Real git clones and fetches through every front-end with the new capabilities
/// advertised (git ignores what it does not know), with both gits.
#[test]
fn git_clones_and_fetches_through_every_front_end() {
    let setup = Setup::new("refs-watch-git", &[], None);
    for (n, git) in Git::all().into_iter().enumerate() {
        for front in FRONTS {
            let work = setup.dir.join(&format!("clone-{n}-{front:?}"));
            let (url, extra) = match front {
                Front::Stdio => (file_url(&setup.served), Some(packgate_upload_pack_option())),
                Front::Git => (setup.server.git_url("tiny.git"), None),
                Front::Http => (setup.server.http_url("tiny.git"), None),
            };
            let mut clone =
                setup
                    .dir
                    .git(&git)
                    .args(["-c", "protocol.version=2", "clone", "-q", "--bare"]);
            if let Some(extra) = &extra {
                clone = clone.arg(extra);
            }
            clone.arg(&url).arg(&work).run();
            fsck(&setup.dir, &git, &work);
            let mut fetch =
                setup
                    .dir
                    .git_in(&git, &work)
                    .args(["-c", "protocol.version=2", "fetch", "-q"]);
            if let Some(extra) = &extra {
                fetch = fetch.arg(extra);
            }
            fetch.arg(&url).arg("+refs/heads/*:refs/heads/*").run();
        }
    }
}
