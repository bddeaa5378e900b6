//! The refs watch over HTTP (`docs/refs-watch.md`): conditional advertisements (`ETag`,
//! `304`) with real git clients still fetching, `GET <repo>/refs` as a long-poll and as
//! Server-Sent Events woken by pushes over HTTP and git://, hidden refs, refusals as for a
//! fetch, a client leaving while it waits, bad input, `packgate http-backend` answering at
//! once, and the client side (`packgate watch` on an http URL: `watch_http::run`).

// Tests may unwrap: a failure is a panic with its place either way.
#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::PathBuf,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    http::{root_with, Push, RawResponse, Server, ServerOptions},
    http_backend::cgi,
    util::{fsck, Dir, Git},
};

/// The log filter that shows the watch's waits and ends.
const WATCH_LOG: &str = "info,packgate_transport::http::watch=debug";
const WAITING: &str = "refs watch waiting";
const GONE: &str = "refs watch ended: the client went away";

/// A server of a copy of the `small` preset with pushes allowed over HTTP and git://, and a
/// work tree cloned from it to push from.
struct Setup {
    dir: Dir,
    server: Server,
    served: PathBuf,
    work: PathBuf,
}

impl Setup {
    fn new(name: &str, configure: &[(&str, &str)]) -> Setup {
        let dir = Dir::new(name);
        let root = root_with(&dir, "small");
        let served = root.join("small.git");
        let git = Git::newest();
        for (key, value) in [("daemon.receivepack", "true")]
            .iter()
            .chain(configure.iter())
        {
            dir.git_in(&git, &served).args(["config", key, value]).run();
        }
        let work = dir.join("work");
        dir.git(&git).arg("clone").arg(&served).arg(&work).run();
        let mut options = ServerOptions::new(Push::AllowedWithoutAuthentication);
        options.log_filter = Some(WATCH_LOG);
        let server = Server::start_with(&root, &options);
        Setup {
            dir,
            server,
            served,
            work,
        }
    }

    /// A new commit in the work tree, pushed to `refspec` at `url`; the new commit's id.
    fn push(&self, git: &Git, url: &str, refspec: &str) -> String {
        self.dir
            .git(git)
            .current_dir(&self.work)
            .args(["commit", "-q", "--allow-empty", "-m", "watched"])
            .run();
        self.dir
            .git(git)
            .current_dir(&self.work)
            .args(["push", "-q", url, refspec])
            .run();
        self.dir
            .git(git)
            .current_dir(&self.work)
            .args(["rev-parse", "HEAD"])
            .run()
            .stdout_text()
            .trim()
            .to_owned()
    }

    fn get(&self, target: &str, headers: &str) -> RawResponse {
        get(self.server.http_address(), target, headers)
    }

    /// `GET /small.git/refs<query>` as JSON.
    fn refs(&self, query: &str) -> Value {
        let response = self.get(&format!("/small.git/refs{query}"), "");
        assert_eq!(response.status, 200, "{response}");
        assert!(
            response.headers.contains("content-type: application/json"),
            "{response}"
        );
        json(&response.body_text())
    }

    /// Blocks until the server logged `needle` more than `before` times.
    fn await_log(&self, needle: &str, before: usize) {
        let started = Instant::now();
        while self.count(needle) <= before {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the server never logged {needle:?}:\n{}",
                self.server.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn count(&self, needle: &str) -> usize {
        self.server.log_text().matches(needle).count()
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

/// `GET <target>` on a connection of its own.
fn get(address: &str, target: &str, headers: &str) -> RawResponse {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {address}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    RawResponse::parse(&bytes)
}

/// The value of `name` in `refs` of an answer.
fn ref_id(answer: &Value, name: &str) -> Option<String> {
    answer["refs"]
        .as_array()
        .unwrap_or_else(|| panic!("no refs in {answer}"))
        .iter()
        .find(|entry| entry["name"] == name)
        .map(|entry| entry["id"].as_str().unwrap_or_default().to_owned())
}

fn token(answer: &Value) -> String {
    answer["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {answer}"))
        .to_owned()
}

#[test]
fn advertisements_have_an_etag_and_git_still_fetches() {
    let setup = Setup::new("watch-etag", &[]);
    for (service, protocol) in [
        ("git-upload-pack", "Git-Protocol: version=2\r\n"),
        ("git-upload-pack", ""),
        ("git-receive-pack", ""),
    ] {
        let target = format!("/small.git/info/refs?service={service}");
        let first = setup.get(&target, protocol);
        assert_eq!(first.status, 200, "{first}");
        let etag = first
            .headers
            .lines()
            .find_map(|line| line.strip_prefix("etag: "))
            .unwrap_or_else(|| panic!("no ETag: {first}"))
            .to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        assert!(first.headers.contains("vary: git-protocol"), "{first}");
        assert!(first.headers.contains("cache-control: no-cache"), "{first}");
        // The same again: same tag; naming it: 304 without a body.
        let again = setup.get(&target, protocol);
        assert!(again.headers.contains(&format!("etag: {etag}")), "{again}");
        let revalidated = setup.get(&target, &format!("{protocol}If-None-Match: {etag}\r\n"));
        assert_eq!(revalidated.status, 304, "{revalidated}");
        assert!(revalidated.body.is_empty(), "{revalidated}");
        let other = setup.get(&target, &format!("{protocol}If-None-Match: \"other\"\r\n"));
        assert_eq!(other.status, 200, "{other}");
        assert_eq!(other.body, first.body);
    }
    // A push changes the v0 advertisement, so its tag.
    let target = "/small.git/info/refs?service=git-upload-pack";
    let before = setup.get(target, "");
    let git = Git::newest();
    setup.push(
        &git,
        &setup.server.http_url("small.git"),
        "HEAD:refs/heads/etag",
    );
    let after = setup.get(target, "");
    let tag = |response: &RawResponse| {
        response
            .headers
            .lines()
            .find(|line| line.starts_with("etag: "))
            .map(str::to_owned)
    };
    assert_ne!(tag(&before), tag(&after));
    // Real git clients clone and fetch twice over HTTP as before.
    for (n, git) in Git::all().into_iter().enumerate() {
        let clone = setup.dir.join(&format!("clone-{n}"));
        setup
            .dir
            .git(&git)
            .arg("clone")
            .arg("-q")
            .arg(setup.server.http_url("small.git"))
            .arg(&clone)
            .run();
        for _ in 0..2 {
            setup
                .dir
                .git(&git)
                .current_dir(&clone)
                .args(["fetch", "-q", "origin"])
                .run();
        }
        fsck(&setup.dir, &git, &clone.join(".git"));
        let fetched = setup
            .dir
            .git(&git)
            .current_dir(&clone)
            .args(["rev-parse", "refs/remotes/origin/etag"])
            .run()
            .stdout_text();
        let served = setup
            .dir
            .git_in(&git, &setup.served)
            .args(["rev-parse", "refs/heads/etag"])
            .run()
            .stdout_text();
        assert_eq!(fetched, served, "{git}");
    }
}

/// A long-poll from `since`, in a thread; returns its answer when joined.
fn long_poll(setup: &Setup, query: String) -> std::thread::JoinHandle<(RawResponse, Duration)> {
    let address = setup.server.http_address().to_owned();
    std::thread::spawn(move || {
        let started = Instant::now();
        let response = get(&address, &format!("/small.git/refs{query}"), "");
        (response, started.elapsed())
    })
}

#[test]
fn a_long_poll_is_woken_by_pushes_over_http_and_git() {
    let setup = Setup::new("watch-long-poll", &[]);
    let git = Git::newest();
    let urls = [
        setup.server.http_url("small.git"),
        setup.server.git_url("small.git"),
    ];
    for (n, url) in urls.iter().enumerate() {
        // A token is only meaningful with the prefixes it was obtained for.
        let current = setup.refs("?prefix=refs/heads/");
        let branch = format!("refs/heads/polled-{n}");
        let waits = setup.count(WAITING);
        let poll = long_poll(
            &setup,
            format!("?since={}&wait=60&prefix=refs/heads/", token(&current)),
        );
        setup.await_log(WAITING, waits);
        let pushed = setup.push(&git, url, &format!("HEAD:{branch}"));
        let (response, _) = poll.join().unwrap();
        assert_eq!(response.status, 200, "{response}");
        let answer = json(&response.body_text());
        assert_eq!(answer["changed"], true, "{answer}");
        assert_ne!(token(&answer), token(&current));
        assert_eq!(ref_id(&answer, &branch).as_deref(), Some(pushed.as_str()));
        // Only refs under the prefix.
        assert_eq!(ref_id(&answer, "HEAD"), None, "{answer}");
        assert_eq!(
            answer["changes"],
            serde_json::json!([{"name": branch, "old": null, "new": pushed}]),
            "{url}"
        );
        // Asking again with the new token and no wait: unchanged at once.
        let again = setup.refs(&format!("?since={}&prefix=refs/heads/", token(&answer)));
        assert_eq!(
            again,
            serde_json::json!({"token": token(&answer), "changed": false})
        );
    }
}

#[test]
fn a_long_poll_times_out_unchanged_and_hidden_refs_are_never_told() {
    let setup = Setup::new("watch-timeout", &[("uploadpack.hideRefs", "refs/hidden")]);
    let git = Git::newest();
    let current = setup.refs("");
    let since = token(&current);
    let (response, took) = long_poll(&setup, format!("?since={since}&wait=1"))
        .join()
        .unwrap();
    assert_eq!(response.status, 200, "{response}");
    assert_eq!(
        json(&response.body_text()),
        serde_json::json!({"token": since, "changed": false})
    );
    assert!(took >= Duration::from_secs(1), "answered after {took:?}");

    // A push to a hidden ref while a client waits on every ref: it is not told, and the
    // listing and token stay as they were.
    let waits = setup.count(WAITING);
    let poll = long_poll(&setup, format!("?since={since}&wait=3"));
    setup.await_log(WAITING, waits);
    let hidden = setup.push(
        &git,
        &setup.server.http_url("small.git"),
        "HEAD:refs/hidden/secret",
    );
    let (response, _) = poll.join().unwrap();
    assert_eq!(
        json(&response.body_text()),
        serde_json::json!({"token": since, "changed": false}),
        "a hidden ref was told"
    );
    let listed = setup.refs("");
    assert_eq!(token(&listed), since);
    assert!(!listed.to_string().contains("refs/hidden"), "{listed}");
    assert!(!listed.to_string().contains(&hidden), "{listed}");
    let under_hidden = setup.refs("?prefix=refs/hidden/");
    assert_eq!(
        under_hidden["refs"],
        serde_json::json!([]),
        "{under_hidden}"
    );
}

#[test]
fn refusals_are_those_of_a_fetch() {
    let dir = Dir::new("watch-refusals");
    let root = root_with(&dir, "small");
    let git = Git::newest();
    // With credentials configured for pushes, fetching (and so watching) needs none.
    let credentials = dir.join("credentials");
    dir.packgate()
        .args(["passwd", "--cost", "4"])
        .arg(&credentials)
        .arg("alice")
        .stdin("secret\n")
        .run();
    let disabled = dir.join("repos/disabled.git");
    dir.copy_tree(&root.join("small.git"), &disabled);
    dir.git_in(&git, &disabled)
        .args(["config", "http.uploadpack", "false"])
        .run();
    let unwatched = dir.join("repos/unwatched.git");
    dir.copy_tree(&root.join("small.git"), &unwatched);
    dir.git_in(&git, &unwatched)
        .args(["config", "packgate.refsWatch", "false"])
        .run();
    let mut options = ServerOptions::new(Push::Refused);
    options.credentials = Some(credentials);
    let server = Server::start_with(&root, &options);
    let address = server.http_address();
    for (target, status) in [
        ("/small.git/refs", 200),
        ("/missing.git/refs", 404),
        ("/../outside.git/refs", 404),
        ("/disabled.git/refs", 403),
    ] {
        let response = get(address, target, "");
        assert_eq!(response.status, status, "{target}: {response}");
        let advertisement = get(
            address,
            &target.replace("/refs", "/info/refs?service=git-upload-pack"),
            "",
        );
        assert_eq!(
            advertisement.status, status,
            "{target} as a fetch: {advertisement}"
        );
    }
    assert_eq!(
        get(address, "/missing.git/refs", "").body_text(),
        "Repository not found\n"
    );
    // Turned off in the repository: fetches as before, no watch.
    let response = get(address, "/unwatched.git/refs", "");
    assert_eq!(response.status, 403, "{response}");
    let response = get(
        address,
        "/unwatched.git/info/refs?service=git-upload-pack",
        "",
    );
    assert_eq!(response.status, 200, "{response}");
}

#[test]
fn bad_input_is_400() {
    let setup = Setup::new("watch-bad-input", &[("packgate.waitRefsMaxTimeout", "5")]);
    for query in [
        "?since=abc",
        "?since=ABCDEF0123456789ABCDEF0123456789ABCDEF01",
        "?wait=6",
        "?wait=99999999999999999999999",
        "?wait=x",
        "?wait=-1",
        "?wait=",
    ] {
        let response = setup.get(&format!("/small.git/refs{query}"), "");
        assert_eq!(response.status, 400, "{query}: {response}");
        assert!(
            response.headers.contains("content-type: text/plain"),
            "{query}: {response}"
        );
    }
    let response = setup.get("/small.git/refs?wait=6", "");
    assert_eq!(
        response.body_text(),
        "wait 6 exceeds the maximum of 5 seconds\n"
    );
    let response = setup.get("/small.git/refs", "Last-Event-ID: nonsense\r\n");
    assert_eq!(response.status, 400, "{response}");
    // Unknown parameters are ignored; POST is not allowed.
    assert_eq!(setup.get("/small.git/refs?color=red", "").status, 200);
    let mut stream = TcpStream::connect(setup.server.http_address()).unwrap();
    write!(
        stream,
        "POST /small.git/refs HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    assert_eq!(RawResponse::parse(&bytes).status, 405);
}

/// An event stream being read: the events' `id` and parsed `data`.
struct EventStream {
    reader: BufReader<TcpStream>,
    chunked: bool,
    pending: String,
}

impl EventStream {
    fn open(address: &str, target: &str, headers: &str) -> EventStream {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            stream,
            "GET {target} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n{headers}\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line.to_lowercase());
        }
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        EventStream {
            chunked: head.contains("transfer-encoding: chunked"),
            reader,
            pending: String::new(),
        }
    }

    /// More of the body; `None` at its end.
    fn more(&mut self) -> Option<String> {
        if !self.chunked {
            let mut buf = [0u8; 4096];
            let n = self.reader.read(&mut buf).unwrap();
            return (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let mut size = String::new();
        self.reader.read_line(&mut size).unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            return None;
        }
        let mut data = vec![0u8; size + 2];
        self.reader.read_exact(&mut data).unwrap();
        Some(String::from_utf8_lossy(&data[..size]).into_owned())
    }

    /// The next event (comments skipped), or `None` when the stream ends.
    fn next(&mut self) -> Option<(String, Value)> {
        loop {
            while let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id: ") {
                        id = Some(value.to_owned());
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data = Some(json(value));
                    }
                }
                if let (Some(id), Some(data)) = (id, data) {
                    return Some((id, data));
                }
            }
            let more = self.more()?;
            self.pending.push_str(&more);
        }
    }
}

#[test]
fn an_event_stream_tells_each_push_and_resumes_from_last_event_id() {
    let setup = Setup::new("watch-sse", &[]);
    let git = Git::newest();
    let url = setup.server.http_url("small.git");
    let address = setup.server.http_address().to_owned();
    let waits = setup.count(WAITING);
    let mut stream = EventStream::open(&address, "/small.git/refs?wait=60", "");
    // The current state first.
    let (first_id, first) = stream.next().unwrap();
    assert_eq!(first_id, token(&first));
    assert_eq!(first["changed"], true);
    assert!(first.get("changes").is_none(), "{first}");
    let mut seen = vec![first_id];
    for n in 0..2 {
        setup.await_log(WAITING, waits + n);
        let pushed = setup.push(&git, &url, "HEAD:refs/heads/streamed");
        let (id, event) = stream.next().unwrap();
        assert_eq!(id, token(&event));
        assert!(!seen.contains(&id), "{event}");
        assert_eq!(
            ref_id(&event, "refs/heads/streamed").as_deref(),
            Some(pushed.as_str())
        );
        let changes = event["changes"].as_array().unwrap().clone();
        assert_eq!(changes.len(), 1, "{event}");
        assert_eq!(changes[0]["new"], pushed.as_str());
        seen.push(id);
    }
    drop(stream);
    // Resuming from the first push's event: the current state at once, then the end (wait=1).
    let mut resumed = EventStream::open(
        &address,
        "/small.git/refs?wait=1",
        &format!("Last-Event-ID: {}\r\n", seen[1]),
    );
    let (id, _) = resumed.next().unwrap();
    assert_eq!(id, seen[2]);
    assert!(resumed.next().is_none());
    // Resuming from the current state: nothing until the stream ends.
    let mut current = EventStream::open(
        &address,
        "/small.git/refs?wait=1",
        &format!("Last-Event-ID: {}\r\n", seen[2]),
    );
    assert!(current.next().is_none());
}

#[test]
fn a_client_that_leaves_while_waiting_ends_the_wait() {
    let setup = Setup::new("watch-leave", &[]);
    let since = token(&setup.refs(""));
    let address = setup.server.http_address().to_owned();
    for accept in ["", "Accept: text/event-stream\r\n"] {
        let waits = setup.count(WAITING);
        let gone = setup.count(GONE);
        let mut stream = TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "GET /small.git/refs?since={since}&wait=300 HTTP/1.1\r\nHost: x\r\n{accept}\r\n"
        )
        .unwrap();
        setup.await_log(WAITING, waits);
        drop(stream);
        // Long before the 300 seconds.
        setup.await_log(GONE, gone);
    }
}

/// The server's open descriptors.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A waiting HTTP client costs the server one descriptor: its connection, which also serves
/// to notice that it left (no duplicate of the socket). The wait leaves hyper (and its
/// buffers): the answer is written whole and the connection closed after it, though the
/// client asked for none of that.
#[test]
fn waiting_http_clients_cost_one_descriptor_and_are_answered_then_closed() {
    let setup = Setup::new("watch-descriptors", &[]);
    let since = token(&setup.refs(""));
    let address = setup.server.http_address().to_owned();
    let waits = setup.count(WAITING);
    let before = descriptors(setup.server.pid());
    const CLIENTS: usize = 16;
    let clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let mut stream = TcpStream::connect(&address).unwrap();
            write!(
                stream,
                "GET /small.git/refs?since={since}&wait=300 HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            .unwrap();
            stream
        })
        .collect();
    setup.await_log(WAITING, waits + CLIENTS - 1);
    let with_clients = descriptors(setup.server.pid());
    assert!(
        with_clients - before <= CLIENTS + 2,
        "{CLIENTS} waiting clients took {} descriptors",
        with_clients - before
    );
    let git = Git::newest();
    let pushed = setup.push(
        &git,
        &setup.server.http_url("small.git"),
        "HEAD:refs/heads/woken",
    );
    for mut client in clients {
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut answer = String::new();
        // To the end: the server closes the connection after the answer.
        client.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.lines()
                .any(|line| line.trim_end() == format!("content-length: {}", body.len())),
            "{head}"
        );
        let answer = json(body);
        assert_eq!(
            ref_id(&answer, "refs/heads/woken").as_deref(),
            Some(pushed.as_str())
        );
    }
}

#[test]
fn watch_http_prints_pushed_changes_and_fails_when_the_server_goes() {
    let setup = Setup::new("watch-client", &[]);
    let git = Git::newest();
    let waits = setup.count(WAITING);
    let (watcher, stdout) = setup
        .dir
        .packgate()
        .args(["watch", "--prefix", "refs/heads/"])
        .arg(setup.server.http_url("small.git"))
        .spawn_with_stdout();
    let mut lines = BufReader::new(stdout).lines();
    setup.await_log(WAITING, waits);
    let created = setup.push(
        &git,
        &setup.server.http_url("small.git"),
        "HEAD:refs/heads/watched",
    );
    let zero = "0".repeat(40);
    assert_eq!(
        lines.next().unwrap().unwrap(),
        format!("{zero} {created} refs/heads/watched")
    );
    // A push over git:// is seen too; a ref outside the prefix is not.
    setup.await_log(WAITING, waits + 1);
    setup.push(
        &git,
        &setup.server.git_url("small.git"),
        "HEAD:refs/tags/unwatched",
    );
    let updated = setup.push(
        &git,
        &setup.server.git_url("small.git"),
        "HEAD:refs/heads/watched",
    );
    assert_eq!(
        lines.next().unwrap().unwrap(),
        format!("{created} {updated} refs/heads/watched")
    );
    drop(setup.server);
    let output = watcher.wait(Duration::from_secs(60));
    assert!(!output.status.success(), "{output}");
    assert!(output.stderr_text().contains("watch"), "{output}");
}

/// The CGI variables of `GET <path_info>?<query>` below `root`, exported.
fn cgi_get<'a>(root: &'a str, path_info: &'a str, query: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", "GET"),
        ("GIT_PROJECT_ROOT", root),
        ("PATH_INFO", path_info),
        ("QUERY_STRING", query),
        ("GIT_HTTP_EXPORT_ALL", ""),
    ]
}

#[test]
fn http_backend_tags_advertisements_and_answers_the_watch_at_once() {
    let dir = Dir::new("watch-cgi");
    let root = root_with(&dir, "small");
    let root_text = root.to_str().unwrap();
    let info = cgi_get(root_text, "/small.git/info/refs", "service=git-upload-pack");
    let first = cgi(&dir, &info, b"");
    first.assert_status(200);
    let etag = first
        .headers
        .lines()
        .find_map(|line| line.strip_prefix("etag: "))
        .unwrap_or_else(|| panic!("no ETag: {}", first.headers))
        .to_owned();
    assert!(
        first.headers.contains("vary: git-protocol"),
        "{}",
        first.headers
    );
    let mut revalidate = info.clone();
    revalidate.push(("HTTP_IF_NONE_MATCH", &etag));
    let not_modified = cgi(&dir, &revalidate, b"");
    not_modified.assert_status(304);
    assert!(not_modified.body.is_empty());

    let listed = cgi(&dir, &cgi_get(root_text, "/small.git/refs", ""), b"");
    listed.assert_status(200);
    let answer = json(&listed.body_text());
    let since = token(&answer);
    // wait is capped at 0: answered at once, unchanged.
    let query = format!("since={since}&wait=60");
    let started = Instant::now();
    let unchanged = cgi(&dir, &cgi_get(root_text, "/small.git/refs", &query), b"");
    unchanged.assert_status(200);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        json(&unchanged.body_text()),
        serde_json::json!({"token": since, "changed": false})
    );
    // Events: the state the client has not seen, then the end.
    let mut events = cgi_get(root_text, "/small.git/refs", "");
    events.push(("HTTP_ACCEPT", "text/event-stream"));
    let stream = cgi(&dir, &events, b"");
    stream.assert_status(200);
    assert!(stream
        .body_text()
        .starts_with(&format!("id: {since}\nevent: refs\ndata: {{")));
    let bad = cgi(
        &dir,
        &cgi_get(root_text, "/small.git/refs", "since=zz"),
        b"",
    );
    bad.assert_status(400);
    let missing = cgi(&dir, &cgi_get(root_text, "/missing.git/refs", ""), b"");
    missing.assert_status(404);
}
