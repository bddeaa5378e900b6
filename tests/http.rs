//! `packgate serve --http`: git's smart HTTP on loopback — clone, fetch and push with the
//! real git clients, and what the server refuses (checked with hand-written requests too).
//!
//! # Why one file
//!
//! It is a little over 800 lines, and stays whole: the tests share one `Server` harness
//! (`packgate serve --http` on a free port, `RawResponse` for hand-written requests,
//! `dechunk`; `http_auth`, `serve` and `sessions` use it too), and the
//! hand-written-request tests check the same server the git clients use.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use packgate_fixture::{append_commits, Append};

use crate::util::{
    assert_same_refs, fsck, refs, shared_fixture, write_file, Cmd, Dir, Git, PACKGATE,
};

/// A running `packgate serve` with both front-ends on ephemeral loopback ports, killed when
/// dropped. `serve` tests use it too.
pub(crate) struct Server {
    child: Child,
    git_address: String,
    http_address: String,
    /// `http` or `https`.
    http_scheme: &'static str,
    /// Everything the server wrote to stderr so far, line by line.
    log: Arc<Mutex<Vec<String>>>,
    log_reader: Option<JoinHandle<()>>,
}

/// Whether the server accepts pushes over HTTP.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    Refused,
    AllowedWithoutAuthentication,
}

/// How to start a [`Server`] beyond the defaults.
#[derive(Clone)]
pub(crate) struct ServerOptions {
    pub(crate) push: Push,
    /// `--http-credentials FILE`.
    pub(crate) credentials: Option<PathBuf>,
    /// `--tls-cert CERT --tls-key KEY`.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    /// `PACKGATE_LOG`.
    pub(crate) log_filter: Option<&'static str>,
    /// `--config FILE` (the harness's listen flags win over the file's).
    pub(crate) config: Option<PathBuf>,
    /// Environment variables set (`Some`) or removed (`None`) for the server only.
    pub(crate) env: Vec<(&'static str, Option<std::ffi::OsString>)>,
}

impl ServerOptions {
    pub(crate) fn new(push: Push) -> ServerOptions {
        ServerOptions {
            push,
            credentials: None,
            tls: None,
            log_filter: None,
            config: None,
            env: Vec::new(),
        }
    }
}

impl Server {
    /// Serve `root` and wait (bounded) for the ready lines of both front-ends.
    pub(crate) fn start(root: &Path, push: Push) -> Server {
        Server::start_with(root, &ServerOptions::new(push))
    }

    /// [`Server::start`] with more options.
    pub(crate) fn start_with(root: &Path, options: &ServerOptions) -> Server {
        let mut command = Command::new(PACKGATE);
        command.args(["serve", "--git", "127.0.0.1:0", "--http", "127.0.0.1:0"]);
        if options.push == Push::AllowedWithoutAuthentication {
            command.arg("--http-allow-push-without-auth");
        }
        if let Some(credentials) = &options.credentials {
            command.arg("--http-credentials").arg(credentials);
        }
        if let Some((certificate, key)) = &options.tls {
            command
                .arg("--tls-cert")
                .arg(certificate)
                .arg("--tls-key")
                .arg(key);
        }
        if let Some(config) = &options.config {
            command.arg("--config").arg(config);
        }
        if let Some(filter) = options.log_filter {
            command.env("PACKGATE_LOG", filter);
        }
        for (name, value) in &options.env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let mut child = command
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start packgate serve: {error}"));
        let stderr = child
            .stderr
            .take()
            .unwrap_or_else(|| panic!("no stderr pipe"));
        let (sender, receiver) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log_reader = std::thread::spawn({
            let log = Arc::clone(&log);
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    log.lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(line.clone());
                    // Later lines (logs) go to the test's output.
                    if sender.send(line.clone()).is_err() {
                        eprintln!("{line}");
                    }
                }
            }
        });
        let address_after = |line: &str, scheme: &str| {
            line.split(scheme)
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned)
        };
        let http_scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let http_prefix = format!("{http_scheme}://");
        let (mut git_address, mut http_address) = (None, None);
        while git_address.is_none() || http_address.is_none() {
            let line = receiver
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|error| panic!("packgate serve printed no ready line: {error}"));
            git_address = git_address.or_else(|| address_after(&line, "git://"));
            http_address = http_address.or_else(|| address_after(&line, &http_prefix));
        }
        drop(receiver);
        Server {
            child,
            git_address: git_address.unwrap_or_default(),
            http_address: http_address.unwrap_or_default(),
            http_scheme,
            log,
            log_reader: Some(log_reader),
        }
    }

    pub(crate) fn http_url(&self, path: &str) -> String {
        format!("{}://{}/{path}", self.http_scheme, self.http_address)
    }

    /// The URL of `path` with `user:password@` in it.
    pub(crate) fn http_url_as(&self, user: &str, password: &str, path: &str) -> String {
        format!(
            "{}://{user}:{password}@{}/{path}",
            self.http_scheme, self.http_address
        )
    }

    /// Stops the server and returns everything it wrote to stderr.
    pub(crate) fn stop_and_read_log(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader ends with the server's stderr.
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
        let log = self
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        log.join("\n")
    }

    /// Sends SIGTERM and waits (at most `limit`) for the server to end; returns its exit
    /// status and everything it wrote to stderr.
    pub(crate) fn terminate(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|error| panic!("kill: {error}"));
        assert!(status.success(), "kill -TERM failed");
        let started = std::time::Instant::now();
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() < limit => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => panic!("packgate serve still runs {limit:?} after SIGTERM"),
                Err(error) => panic!("waiting for packgate serve: {error}"),
            }
        };
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
        let log = self
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .join("\n");
        (status, log)
    }

    /// The HTTP front-end's `host:port`.
    pub(crate) fn http_address(&self) -> &str {
        &self.http_address
    }

    /// The server's process id (for signals).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far.
    pub(crate) fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .join("\n")
    }

    pub(crate) fn git_url(&self, path: &str) -> String {
        format!("git://{}/{path}", self.git_address)
    }

    /// Sends `request` as is (it should say `Connection: close`) and reads the response.
    pub(crate) fn raw(&self, request: &[u8]) -> RawResponse {
        let mut stream = TcpStream::connect(&self.http_address)
            .unwrap_or_else(|error| panic!("connecting to {}: {error}", self.http_address));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap_or_else(|error| panic!("set_read_timeout: {error}"));
        stream
            .write_all(request)
            .unwrap_or_else(|error| panic!("sending the request: {error}"));
        let mut bytes = Vec::new();
        stream
            .read_to_end(&mut bytes)
            .unwrap_or_else(|error| panic!("reading the response: {error}"));
        RawResponse::parse(&bytes)
    }

    /// `GET <path>` (the path as sent, not normalised).
    pub(crate) fn get(&self, path: &str, extra_headers: &str) -> RawResponse {
        self.raw(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\n{extra_headers}Connection: close\r\n\r\n",
                self.http_address
            )
            .as_bytes(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response, read to the end.
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    /// The header lines, lower-cased.
    pub(crate) headers: String,
    /// The body, with chunked transfer coding undone.
    pub(crate) body: Vec<u8>,
}

impl RawResponse {
    pub(crate) fn parse(bytes: &[u8]) -> RawResponse {
        let split = bytes
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(bytes)));
        let head = String::from_utf8_lossy(&bytes[..split]).to_lowercase();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|status| status.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        let mut body = bytes[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        RawResponse {
            status,
            headers: head,
            body,
        }
    }

    pub(crate) fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl std::fmt::Display for RawResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n\n{}", self.headers, self.body_text())
    }
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else {
            panic!("truncated chunked body");
        };
        let size = std::str::from_utf8(&bytes[..end])
            .ok()
            .and_then(|size| usize::from_str_radix(size.trim(), 16).ok())
            .unwrap_or_else(|| panic!("bad chunk size line"));
        bytes = &bytes[end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&bytes[..size]);
        bytes = &bytes[size + 2..];
    }
}

/// A root with a private copy of `preset` as `<preset>.git`, and a repository beside the
/// root that can only be reached by escaping it.
pub(crate) fn root_with(dir: &Dir, preset: &str) -> std::path::PathBuf {
    let source = shared_fixture(preset);
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|error| panic!("mkdir: {error}"));
    dir.copy_tree(&source.path, &root.join(format!("{preset}.git")));
    dir.copy_tree(&source.path, &dir.join("outside.git"));
    root
}

#[test]
fn clone_and_incremental_fetch_over_http() {
    let dir = Dir::new("http-clone");
    let root = root_with(&dir, "small");
    let served = root.join("small.git");
    let server = Server::start(&root, Push::Refused);
    for (n, git) in Git::all().into_iter().enumerate() {
        let mirror = dir.join(&format!("mirror-{n}"));
        dir.git(&git)
            .args(["-c", "protocol.version=2", "clone", "--mirror"])
            .arg(server.http_url("small.git"))
            .arg(&mirror)
            .run();
        fsck(&dir, &git, &mirror);
        assert_same_refs(
            &refs(&dir, &git, &mirror, &[]),
            &refs(&dir, &git, &served, &[]),
            &format!("HTTP mirror clone with {git}"),
        );
        // A work-tree clone, then the server moves forward and the client fetches.
        let clone = dir.join(&format!("clone-{n}"));
        dir.git(&git)
            .args(["-c", "protocol.version=2", "clone"])
            .arg(server.http_url("small.git"))
            .arg(&clone)
            .run();
        let append = Append {
            branch: "main".to_owned(),
            commits: 4,
            seed: 40 + n as u64,
            git: git.program.clone(),
            ..Append::default()
        };
        append_commits(&served, &append).unwrap_or_else(|error| panic!("append: {error}"));
        dir.git(&git)
            .current_dir(&clone)
            .args(["-c", "protocol.version=2", "fetch", "origin"])
            .run();
        fsck(&dir, &git, &clone.join(".git"));
        let fetched = refs(
            &dir,
            &git,
            &clone.join(".git"),
            &["refs/remotes/origin/main"],
        );
        let expected = refs(&dir, &git, &served, &["refs/heads/main"]);
        assert_eq!(
            fetched.values().collect::<Vec<_>>(),
            expected.values().collect::<Vec<_>>(),
            "fetch over HTTP with {git}"
        );
    }
}

/// git compresses fetch requests over 1 KiB: a mirror clone of thousands of refs sends
/// hundreds of wants in one gzip body.
#[test]
fn gzip_request_bodies_from_git() {
    let dir = Dir::new("http-gzip");
    let root = root_with(&dir, "many-refs");
    let served = root.join("many-refs.git");
    let server = Server::start(&root, Push::Refused);
    let git = Git::newest();
    let mirror = dir.join("mirror");
    let output = dir
        .git(&git)
        .env("GIT_TRACE_CURL", "1")
        .env("GIT_TRACE_CURL_NO_DATA", "1")
        .args(["-c", "protocol.version=2", "clone", "--mirror"])
        .arg(server.http_url("many-refs.git"))
        .arg(&mirror)
        .timeout(Duration::from_secs(120))
        .run();
    assert!(
        output.stderr_text().contains("Content-Encoding: gzip"),
        "git sent no gzip request: {output}"
    );
    fsck(&dir, &git, &mirror);
    assert_same_refs(
        &refs(&dir, &git, &mirror, &[]),
        &refs(&dir, &git, &served, &[]),
        "HTTP mirror clone of many refs",
    );
}

/// A v2 `ls-refs` request written by hand, gzip-compressed and sent chunked.
#[test]
fn gzip_and_chunked_request_by_hand() {
    let dir = Dir::new("http-gzip-hand");
    let root = root_with(&dir, "tiny");
    let server = Server::start(&root, Push::Refused);
    let request = b"0014command=ls-refs\n0001000bunborn\n0009peel\n0000";
    let gzipped = Cmd::new(Path::new("gzip"))
        .args(["-c", "-n"])
        .stdin(request.to_vec())
        .run()
        .stdout;
    let mut http = format!(
        "POST /tiny.git/git-upload-pack HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/x-git-upload-pack-request\r\n\
         Content-Encoding: gzip\r\nGit-Protocol: version=2\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        server.http_address
    )
    .into_bytes();
    for chunk in gzipped.chunks(7) {
        http.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        http.extend_from_slice(chunk);
        http.extend_from_slice(b"\r\n");
    }
    http.extend_from_slice(b"0\r\n\r\n");
    let response = server.raw(&http);
    assert_eq!(response.status, 200, "{response}");
    assert!(
        response
            .headers
            .contains("content-type: application/x-git-upload-pack-result"),
        "{response}"
    );
    assert!(
        response.body_text().contains(" refs/heads/main") && response.body_text().ends_with("0000"),
        "{response}"
    );
}

/// A fetch request that is a few KiB on the wire and 11 MiB once inflated: past the default
/// `max-fetch-request` (and `GIT_HTTP_MAX_REQUEST_BUFFER`) of 10 MiB.
fn gzip_bomb() -> Vec<u8> {
    let mut request = b"0014command=ls-refs\n0001".to_vec();
    request.resize(11 << 20, b'0');
    let bomb = Cmd::new(Path::new("gzip"))
        .args(["-c", "-n"])
        .stdin(request)
        .run()
        .stdout;
    assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
    bomb
}

/// A gzip body that inflates past the limit is refused with `413` before a session starts,
/// not answered `200` with an `ERR` from the session.
#[test]
fn gzip_bomb_is_413() {
    let dir = Dir::new("http-gzip-bomb");
    let root = root_with(&dir, "tiny");
    let server = Server::start(&root, Push::Refused);
    let bomb = gzip_bomb();
    let mut http = format!(
        "POST /tiny.git/git-upload-pack HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/x-git-upload-pack-request\r\n\
         Content-Encoding: gzip\r\nGit-Protocol: version=2\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        server.http_address,
        bomb.len()
    )
    .into_bytes();
    http.extend_from_slice(&bomb);
    let response = server.raw(&http);
    assert_eq!(response.status, 413, "{response}");
    assert!(
        response.body_text().contains("request body larger than"),
        "{response}"
    );
}

/// A client that shuts down its sending side right after a complete POST (as some proxies
/// and tools do) still gets the whole answer.
#[test]
fn half_closed_client_is_answered() {
    let dir = Dir::new("http-half-close");
    let root = root_with(&dir, "tiny");
    let server = Server::start(&root, Push::Refused);
    let request = b"0014command=ls-refs\n0001000bunborn\n0009peel\n0000";
    for connection in ["keep-alive", "close"] {
        let mut http = format!(
            "POST /tiny.git/git-upload-pack HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/x-git-upload-pack-request\r\n\
             Git-Protocol: version=2\r\nContent-Length: {}\r\n\
             Connection: {connection}\r\n\r\n",
            server.http_address,
            request.len()
        )
        .into_bytes();
        http.extend_from_slice(request);
        let mut stream = TcpStream::connect(&server.http_address)
            .unwrap_or_else(|error| panic!("connecting: {error}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap_or_else(|error| panic!("set_read_timeout: {error}"));
        stream
            .write_all(&http)
            .unwrap_or_else(|error| panic!("sending the request: {error}"));
        stream
            .shutdown(std::net::Shutdown::Write)
            .unwrap_or_else(|error| panic!("shutdown: {error}"));
        let mut bytes = Vec::new();
        stream
            .read_to_end(&mut bytes)
            .unwrap_or_else(|error| panic!("reading the response: {error}"));
        assert!(!bytes.is_empty(), "no response at all ({connection})");
        let response = RawResponse::parse(&bytes);
        assert_eq!(response.status, 200, "{response}");
        assert!(
            response.body_text().contains(" refs/heads/main")
                && response.body_text().ends_with("0000"),
            "{connection}: {response}"
        );
    }
}

#[test]
fn push_over_http_when_allowed() {
    let dir = Dir::new("http-push");
    let root = root_with(&dir, "small");
    let served = root.join("small.git");
    let server = Server::start(&root, Push::AllowedWithoutAuthentication);
    for (n, git) in Git::all().into_iter().enumerate() {
        let clone = dir.join(&format!("clone-{n}"));
        dir.git(&git)
            .args(["clone"])
            .arg(server.http_url("small.git"))
            .arg(&clone)
            .run();
        for i in 0..3 {
            write_file(
                &clone.join(format!("pushed-{n}-{i}.txt")),
                format!("pushed over HTTP by client {n}, commit {i}\n").as_bytes(),
            );
            dir.git(&git).current_dir(&clone).args(["add", "."]).run();
            dir.git(&git)
                .current_dir(&clone)
                .args(["commit", "--quiet", "-m", &format!("commit {i}")])
                .run();
        }
        let branch = format!("refs/heads/pushed-{n}");
        dir.git(&git)
            .current_dir(&clone)
            .args(["push", "origin"])
            .arg(format!("HEAD:{branch}"))
            .arg("HEAD:refs/heads/main")
            .run();
        fsck(&dir, &git, &served);
        let local = refs(&dir, &git, &clone.join(".git"), &["refs/heads/main"]);
        let remote = refs(&dir, &git, &served, &["refs/heads/main", &branch]);
        for name in ["refs/heads/main", branch.as_str()] {
            assert_eq!(
                remote.get(name),
                local.get("refs/heads/main"),
                "{name} after a push with {git}"
            );
        }
        // A push the server refuses (not a fast-forward) is reported, not a transport error.
        let output = dir
            .git(&git)
            .current_dir(&clone)
            .args(["push", "origin", "HEAD~1:refs/heads/main"])
            .output();
        assert!(!output.status.success(), "{output}");
        assert!(output.stderr_text().contains("rejected"), "{output}");
    }
}

/// A whole repository pushed into an empty one: a pack larger than git's post buffer, so
/// the request body is streamed chunked.
#[test]
fn push_into_an_empty_repository_chunked() {
    let dir = Dir::new("http-push-empty");
    let root = root_with(&dir, "small");
    let source = root.join("small.git");
    let empty = root.join("empty.git");
    let git = Git::newest();
    dir.git(&git)
        .args(["init", "--quiet", "--bare"])
        .arg(&empty)
        .run();
    let server = Server::start(&root, Push::AllowedWithoutAuthentication);
    let output = dir
        .git_in(&git, &source)
        .env("GIT_TRACE_CURL", "1")
        .env("GIT_TRACE_CURL_NO_DATA", "1")
        .args(["-c", "http.postBuffer=65536", "push", "--mirror"])
        .arg(server.http_url("empty.git"))
        .timeout(Duration::from_secs(120))
        .run();
    assert!(
        output.stderr_text().contains("Transfer-Encoding: chunked"),
        "git sent no chunked request: {output}"
    );
    fsck(&dir, &git, &empty);
    assert_same_refs(
        &refs(&dir, &git, &empty, &[]),
        &refs(&dir, &git, &source, &[]),
        "mirror push over HTTP",
    );
}

#[test]
fn push_over_http_refused_by_default() {
    let dir = Dir::new("http-push-refused");
    let root = root_with(&dir, "tiny");
    let served = root.join("tiny.git");
    let server = Server::start(&root, Push::Refused);
    let git = Git::newest();
    let before = refs(&dir, &git, &served, &[]);
    let output = dir
        .git(&git)
        .args(["push", "--mirror"])
        .arg(server.http_url("tiny.git"))
        .current_dir(&dir.join("outside.git"))
        .output();
    assert!(!output.status.success(), "{output}");
    let stderr = output.stderr_text();
    assert!(
        stderr.contains("403") && stderr.contains("push over HTTP is disabled"),
        "{output}"
    );
    assert_eq!(refs(&dir, &git, &served, &[]), before);
    // And the POST itself is refused too, not only the advertisement.
    let response = server.raw(
        b"POST /tiny.git/git-receive-pack HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/x-git-receive-pack-request\r\n\
          Content-Length: 4\r\nConnection: close\r\n\r\n0000",
    );
    assert_eq!(response.status, 403, "{response}");
}

/// A client that does not ask for v2 gets v0: `ls-remote` works, and the advertisement is
/// the `# service=` line and the reference advertisement, as from git http-backend.
#[test]
fn upload_pack_v0_is_served() {
    let dir = Dir::new("http-v0");
    let root = root_with(&dir, "tiny");
    let server = Server::start(&root, Push::Refused);
    for git in Git::all() {
        let output = dir
            .git(&git)
            .args(["-c", "protocol.version=0", "ls-remote"])
            .arg(server.http_url("tiny.git"))
            .run();
        assert!(
            output.stdout_text().contains("\trefs/heads/main\n"),
            "{output}"
        );
    }
    let response = server.get("/tiny.git/info/refs?service=git-upload-pack", "");
    assert_eq!(response.status, 200, "{response}");
    let body = response.body_text();
    assert!(
        body.starts_with("001e# service=git-upload-pack\n0000")
            && body.contains(" HEAD\0multi_ack thin-pack "),
        "{response}"
    );
    // With version 2 there is no service line, as from git http-backend.
    let response = server.get(
        "/tiny.git/info/refs?service=git-upload-pack",
        "Git-Protocol: version=2\r\n",
    );
    assert!(
        response.body_text().starts_with("000eversion 2\n"),
        "{response}"
    );
    for header in [
        "content-type: application/x-git-upload-pack-advertisement",
        "cache-control: no-cache",
        "pragma: no-cache",
        "expires: fri, 01 jan 1980 00:00:00 gmt",
    ] {
        assert!(response.headers.contains(header), "{header}: {response}");
    }
}

#[test]
fn unknown_repositories_and_escapes_are_not_found() {
    let dir = Dir::new("http-refuse");
    let root = root_with(&dir, "tiny");
    let server = Server::start(&root, Push::Refused);
    let git = Git::newest();
    let output = dir
        .git(&git)
        .args(["ls-remote"])
        .arg(server.http_url("missing.git"))
        .output();
    assert!(!output.status.success(), "{output}");
    assert!(output.stderr_text().contains("not found"), "{output}");

    let outside = dir.join("outside.git");
    // A real repository beside the root, and a symlink to it inside the root.
    dir.copy_tree(&shared_fixture("tiny").path, &outside);
    std::os::unix::fs::symlink(&outside, root.join("link.git"))
        .unwrap_or_else(|error| panic!("symlink: {error}"));
    let absolute = outside.display().to_string();
    let encoded_absolute = absolute.replace('/', "%2f");
    for path in [
        "/missing.git".to_owned(),
        "/../outside.git".to_owned(),
        "/%2e%2e/outside.git".to_owned(),
        "/tiny.git/%2e%2e/%2e%2e/outside.git".to_owned(),
        "/%2E%2E%2Foutside.git".to_owned(),
        format!("/{absolute}"),
        format!("/{encoded_absolute}"),
        "/tiny.git%00".to_owned(),
        "/tiny.git%00/x".to_owned(),
        "/~/outside.git".to_owned(),
        "/link.git".to_owned(),
        "/link".to_owned(),
    ] {
        for (method, target, headers) in [
            (
                "GET",
                format!("{path}/info/refs?service=git-upload-pack"),
                "",
            ),
            (
                "POST",
                format!("{path}/git-upload-pack"),
                "Content-Type: application/x-git-upload-pack-request\r\nContent-Length: 4\r\n",
            ),
        ] {
            let body = if method == "POST" { "0000" } else { "" };
            let response = server.raw(
                format!(
                    "{method} {target} HTTP/1.1\r\nHost: x\r\nGit-Protocol: version=2\r\n\
                     {headers}Connection: close\r\n\r\n{body}"
                )
                .as_bytes(),
            );
            assert_eq!(response.status, 404, "{method} {target}: {response}");
            let text = response.body_text();
            assert!(
                !text.contains(&*root.to_string_lossy()) && !text.contains("outside"),
                "{method} {target} reveals a path: {response}"
            );
        }
    }
    // Not smart HTTP: paths, methods and queries.
    for (request, status) in [
        ("GET /tiny.git/HEAD HTTP/1.1", 404),
        ("GET /tiny.git/objects/info/packs HTTP/1.1", 404),
        ("GET /tiny.git/info/refs HTTP/1.1", 400),
        (
            "GET /tiny.git/info/refs?service=git-upload-archive HTTP/1.1",
            400,
        ),
        ("GET /tiny.git/git-upload-pack HTTP/1.1", 405),
        (
            "PUT /tiny.git/info/refs?service=git-upload-pack HTTP/1.1",
            405,
        ),
    ] {
        let response =
            server.raw(format!("{request}\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
        assert_eq!(response.status, status, "{request}: {response}");
    }
    let response = server.raw(
        b"POST /tiny.git/git-upload-pack HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
          Content-Length: 4\r\nConnection: close\r\n\r\n0000",
    );
    assert_eq!(response.status, 415, "{response}");
    // The server still serves after all of that.
    dir.git(&git)
        .args(["ls-remote"])
        .arg(server.http_url("tiny.git"))
        .run();
}

/// The done-criterion: one `serve` process, a clone over each front-end.
#[test]
fn git_protocol_and_http_from_one_server() {
    let dir = Dir::new("http-both");
    let root = root_with(&dir, "small");
    let served = root.join("small.git");
    let server = Server::start(&root, Push::Refused);
    let git = Git::newest();
    let expected = refs(&dir, &git, &served, &["refs/heads", "refs/tags"]);
    for (name, url) in [
        ("over-git", server.git_url("small.git")),
        ("over-http", server.http_url("small.git")),
    ] {
        let clone = dir.join(name);
        dir.git(&git)
            .args(["-c", "protocol.version=2", "clone", "--bare"])
            .arg(&url)
            .arg(&clone)
            .run();
        fsck(&dir, &git, &clone);
        assert_same_refs(
            &refs(&dir, &git, &clone, &["refs/heads", "refs/tags"]),
            &expected,
            &format!("clone of {url}"),
        );
    }
}

/// Keep-alive: two requests on one connection get two responses (the second closes it).
#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let dir = Dir::new("http-keep-alive");
    let root = root_with(&dir, "tiny");
    let server = Server::start(&root, Push::Refused);
    let request = |connection: &str| {
        format!(
            "GET /tiny.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n\
             Git-Protocol: version=2\r\nConnection: {connection}\r\n\r\n"
        )
    };
    let mut stream = TcpStream::connect(server.http_address())
        .unwrap_or_else(|error| panic!("connecting: {error}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap_or_else(|error| panic!("set_read_timeout: {error}"));
    stream
        .write_all(format!("{}{}", request("keep-alive"), request("close")).as_bytes())
        .unwrap_or_else(|error| panic!("sending: {error}"));
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .unwrap_or_else(|error| panic!("reading: {error}"));
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(
        text.matches("HTTP/1.1 200 OK\r\n").count(),
        2,
        "two responses on one connection: {text}"
    );
    assert_eq!(text.matches("version 2\n").count(), 2, "{text}");
}
