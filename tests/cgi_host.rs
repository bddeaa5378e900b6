//! A minimal web server that runs `packgate http-backend` (or another CGI program, such as
//! `git http-backend` for reference) as a CGI program, so the real git clients can talk to
//! it: what Apache with `ScriptAlias` and `Require valid-user` on the push URLs does, in a
//! few hundred lines and on loopback only.
//!
//! One thread per connection (at most [`MAX_CONNECTIONS`]; more get `503`), one request per
//! connection (`Connection: close`). The request line and headers are parsed by hand
//! (bounded), a `Content-Length` or chunked body is streamed to the program's standard
//! input, the CGI environment is set from the request, and the program's `Status:` header
//! becomes the response's status line. Push URLs (`…/git-receive-pack`, `?service=
//! git-receive-pack`) need Basic credentials of a configured user: the host answers `401`
//! itself and sets `REMOTE_USER` once they match, as Apache does. The programs' standard
//! error is kept as the host's error log. Dropping the host stops accepting and kills the
//! programs still running.

use std::{
    collections::BTreeSet,
    ffi::OsStr,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::util::PACKGATE;

/// The most connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 16;
/// The most header lines, and the longest line, of a request.
const MAX_HEADER_LINES: usize = 100;
const MAX_LINE: u64 = 16 * 1024;
/// The largest request body the host passes on.
const MAX_BODY: u64 = 1 << 30;
/// How long a socket read or write may wait.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the host accepts connections at most.
const LIFETIME: Duration = Duration::from_secs(600);
/// The realm of the host's Basic challenge.
const REALM: &str = "cgi-host";

/// What the host serves and who may push.
#[derive(Clone, Debug, Default)]
pub(crate) struct CgiHostOptions {
    /// `GIT_PROJECT_ROOT`.
    pub(crate) project_root: PathBuf,
    /// Sets `GIT_HTTP_EXPORT_ALL` (empty, as Apache's `SetEnv GIT_HTTP_EXPORT_ALL`).
    pub(crate) export_all: bool,
    /// Users and passwords the host accepts on push URLs.
    pub(crate) users: Vec<(String, String)>,
    /// Push URLs need no credentials (a web server without `Require valid-user` on them);
    /// credentials sent anyway still set `REMOTE_USER`.
    pub(crate) anonymous_push: bool,
    /// The programs' `PATH` instead of the host's own.
    pub(crate) path: Option<std::ffi::OsString>,
    /// Another CGI program and its arguments instead of `packgate http-backend` (e.g. `git
    /// http-backend`, the reference other clients are checked against).
    pub(crate) program: Option<Vec<std::ffi::OsString>>,
    /// More variables for the programs (as Apache's `SetEnv`), e.g. `GIT_NAMESPACE`.
    pub(crate) env: Vec<(String, std::ffi::OsString)>,
}

/// One request the host answered: method, target and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Logged {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) status: u16,
}

/// A running CGI host on `127.0.0.1`; stopped (programs killed) when dropped.
pub(crate) struct CgiHost {
    address: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// What the acceptor and the connection threads share.
struct Shared {
    options: CgiHostOptions,
    stop: AtomicBool,
    active: AtomicUsize,
    /// Process ids (and process groups) of the programs running now.
    children: Mutex<BTreeSet<u32>>,
    access_log: Mutex<Vec<Logged>>,
    error_log: Mutex<Vec<String>>,
}

impl CgiHost {
    /// Listen on an ephemeral loopback port and serve until dropped.
    pub(crate) fn start(options: CgiHostOptions) -> CgiHost {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|error| panic!("cgi host: bind: {error}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("cgi host: local_addr: {error}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|error| panic!("cgi host: set_nonblocking: {error}"));
        let shared = Arc::new(Shared {
            options,
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            children: Mutex::new(BTreeSet::new()),
            access_log: Mutex::new(Vec::new()),
            error_log: Mutex::new(Vec::new()),
        });
        let acceptor = std::thread::spawn({
            let shared = Arc::clone(&shared);
            move || accept_loop(&listener, &shared)
        });
        CgiHost {
            address,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:<port>/<path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.address)
    }

    /// The URL of `path` with `user:password@` in it.
    pub(crate) fn url_as(&self, user: &str, password: &str, path: &str) -> String {
        format!("http://{user}:{password}@{}/{path}", self.address)
    }

    /// The requests answered so far.
    pub(crate) fn access_log(&self) -> Vec<Logged> {
        lock(&self.shared.access_log).clone()
    }

    /// What the programs wrote to standard error so far.
    pub(crate) fn error_log(&self) -> String {
        lock(&self.shared.error_log).join("\n")
    }
}

impl Drop for CgiHost {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for pid in lock(&self.shared.children).iter() {
            kill_group(*pid);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Accept until stopped or [`LIFETIME`] is over, polling the non-blocking listener.
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let started = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) && started.elapsed() < LIFETIME {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(error) => {
                lock(&shared.error_log).push(format!("cgi host: accept: {error}"));
                continue;
            }
        };
        if shared.active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_nonblocking(false);
            let _ = write_simple(&stream, 503, &[], "too many connections");
            continue;
        }
        let shared = Arc::clone(shared);
        std::thread::spawn(move || {
            if let Err(error) = serve_connection(stream, &shared) {
                lock(&shared.error_log).push(format!("cgi host: connection: {error}"));
            }
            shared.active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// A parsed request head.
struct Head {
    method: String,
    target: String,
    /// Names lower-cased.
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(candidate, _)| candidate == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Read one line (without its line ending), at most [`MAX_LINE`] bytes.
fn read_line(reader: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = Vec::new();
    reader.take(MAX_LINE).read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(std::io::Error::other("line too long or connection closed"));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| std::io::Error::other("line is not UTF-8"))
}

fn read_head(reader: &mut impl BufRead) -> std::io::Result<Head> {
    let request_line = read_line(reader)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(_version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(std::io::Error::other(format!(
            "bad request line {request_line:?}"
        )));
    };
    let mut headers = Vec::new();
    for _ in 0..MAX_HEADER_LINES {
        let line = read_line(reader)?;
        if line.is_empty() {
            return Ok(Head {
                method: method.to_owned(),
                target: target.to_owned(),
                headers,
            });
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(std::io::Error::other(format!("bad header line {line:?}")));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Err(std::io::Error::other("too many header lines"))
}

fn serve_connection(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(SOCKET_TIMEOUT))?;
    stream.set_write_timeout(Some(SOCKET_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader)?;
    let log = |status: u16| {
        lock(&shared.access_log).push(Logged {
            method: head.method.clone(),
            target: head.target.clone(),
            status,
        });
    };
    let (path, query) = head
        .target
        .split_once('?')
        .unwrap_or((head.target.as_str(), ""));

    // As Apache with `Require valid-user` on the push URLs.
    let push = path.ends_with("/git-receive-pack") || query.contains("service=git-receive-pack");
    let remote_user = head.header("authorization").and_then(|value| {
        shared
            .options
            .users
            .iter()
            .find(|(user, password)| {
                value == format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
            })
            .map(|(user, _)| user.clone())
    });
    if push && remote_user.is_none() && !shared.options.anonymous_push {
        let challenge = format!("Basic realm=\"{REALM}\"");
        write_simple(
            &writer,
            401,
            &[("WWW-Authenticate", &challenge)],
            "authentication required",
        )?;
        log(401);
        return Ok(());
    }

    let Some(path_info) = percent_decode(path) else {
        write_simple(&writer, 400, &[], "bad path")?;
        log(400);
        return Ok(());
    };
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|value| value.eq_ignore_ascii_case("chunked"));
    let content_length = match head.header("content-length").map(str::parse::<u64>) {
        None => None,
        Some(Ok(length)) if length <= MAX_BODY => Some(length),
        Some(_) => {
            write_simple(&writer, 400, &[], "bad or too large Content-Length")?;
            log(400);
            return Ok(());
        }
    };

    let mut command = match &shared.options.program {
        Some(program) => {
            let mut command =
                Command::new(program.first().map_or(OsStr::new(""), |p| p.as_os_str()));
            command.args(program.iter().skip(1));
            command
        }
        None => {
            let mut command = Command::new(PACKGATE);
            command.arg("http-backend");
            command
        }
    };
    command
        .env_clear()
        .env(
            "PATH",
            (shared.options.path.clone())
                .or_else(|| std::env::var_os("PATH"))
                .unwrap_or_default(),
        )
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SERVER_SOFTWARE", "packgate-test-cgi-host")
        .env("REQUEST_METHOD", &head.method)
        .env("PATH_INFO", OsStr::from_bytes(&path_info))
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GIT_PROJECT_ROOT", &shared.options.project_root);
    if shared.options.export_all {
        command.env("GIT_HTTP_EXPORT_ALL", "");
    }
    for (name, value) in &shared.options.env {
        command.env(name, value);
    }
    if let Some(user) = &remote_user {
        command.env("REMOTE_USER", user).env("AUTH_TYPE", "Basic");
    }
    if let Some(length) = content_length.filter(|_| !chunked) {
        command.env("CONTENT_LENGTH", length.to_string());
    }
    for (name, value) in &head.headers {
        match name.as_str() {
            "content-type" => {
                command.env("CONTENT_TYPE", value);
            }
            // Like Apache: not passed to CGI programs.
            "authorization" | "content-length" | "transfer-encoding" => {}
            _ => {
                command.env(
                    format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_")),
                    value,
                );
            }
        }
    }
    let child = command
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut child = Running::new(child, shared);

    // The body goes to the program's standard input on a thread of its own.
    let stdin = child.child.stdin.take();
    let body_writer = std::thread::spawn(move || -> std::io::Result<()> {
        let Some(mut stdin) = stdin else {
            return Ok(());
        };
        let result = if chunked {
            copy_chunked(&mut reader, &mut stdin)
        } else {
            let length = content_length.unwrap_or(0);
            std::io::copy(&mut (&mut reader).take(length), &mut stdin).map(drop)
        };
        // The program may stop reading early (a refusal): its business.
        match result {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    });
    let error_reader = child.child.stderr.take().map(|stderr| {
        std::thread::spawn(move || {
            BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        })
    });

    let Some(stdout) = child.child.stdout.take() else {
        return Err(std::io::Error::other("no stdout pipe"));
    };
    let mut cgi_output = BufReader::new(stdout);
    let mut status = 200u16;
    let mut reason = String::from("OK");
    let mut response_headers = Vec::new();
    for _ in 0..MAX_HEADER_LINES {
        let line = read_line(&mut cgi_output)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(std::io::Error::other(format!("bad CGI header {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let (code, text) = value.split_once(' ').unwrap_or((value, ""));
            status = code
                .parse()
                .map_err(|_| std::io::Error::other(format!("bad CGI status {value:?}")))?;
            reason = text.to_owned();
        } else {
            response_headers.push(format!("{name}: {value}\r\n"));
        }
    }
    // Logged before the response goes out: once the client has it, a test may read the log.
    log(status);
    write!(writer, "HTTP/1.1 {status} {reason}\r\n")?;
    for header in &response_headers {
        writer.write_all(header.as_bytes())?;
    }
    // As Apache does for HTTP/1.1: a body of unknown length is sent chunked (some clients,
    // libgit2 among them, do not read a body that only the closing connection ends).
    let length_known = response_headers
        .iter()
        .any(|header| header.to_ascii_lowercase().starts_with("content-length:"));
    if !length_known {
        writer.write_all(b"Transfer-Encoding: chunked\r\n")?;
    }
    writer.write_all(b"Connection: close\r\n\r\n")?;
    if length_known {
        std::io::copy(&mut cgi_output, &mut writer)?;
    } else {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let n = cgi_output.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            write!(writer, "{n:x}\r\n")?;
            writer.write_all(&buffer[..n])?;
            writer.write_all(b"\r\n")?;
        }
        writer.write_all(b"0\r\n\r\n")?;
    }
    writer.flush()?;
    child.wait()?;
    if let Some(error_reader) = error_reader {
        if let Ok(lines) = error_reader.join() {
            lock(&shared.error_log).extend(lines);
        }
    }
    match body_writer.join() {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::other("the body writer panicked")),
    }
}

/// A running program, killed (with its process group) unless it was waited for.
struct Running<'s> {
    child: Child,
    shared: &'s Shared,
    waited: bool,
}

impl<'s> Running<'s> {
    fn new(child: Child, shared: &'s Shared) -> Self {
        lock(&shared.children).insert(child.id());
        Running {
            child,
            shared,
            waited: false,
        }
    }

    fn wait(&mut self) -> std::io::Result<()> {
        self.child.wait()?;
        self.waited = true;
        lock(&self.shared.children).remove(&self.child.id());
        Ok(())
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.waited {
            kill_group(self.child.id());
            let _ = self.child.wait();
            lock(&self.shared.children).remove(&self.child.id());
        }
    }
}

/// Undo chunked transfer coding from `reader` into `out`, at most [`MAX_BODY`] bytes.
fn copy_chunked(reader: &mut impl BufRead, out: &mut impl Write) -> std::io::Result<()> {
    let mut total = 0u64;
    // Each chunk is at least one byte, so the body limit bounds the loop.
    for _ in 0..=MAX_BODY {
        let line = read_line(reader)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // Trailers, then the empty line.
            for _ in 0..MAX_HEADER_LINES {
                if read_line(reader)?.is_empty() {
                    return Ok(());
                }
            }
            return Err(std::io::Error::other("too many trailer lines"));
        }
        total += size;
        if total > MAX_BODY {
            return Err(std::io::Error::other("chunked body too large"));
        }
        let copied = std::io::copy(&mut reader.take(size), out)?;
        if copied != size {
            return Err(std::io::Error::other("chunked body cut short"));
        }
        if !read_line(reader)?.is_empty() {
            return Err(std::io::Error::other("no line end after a chunk"));
        }
    }
    Err(std::io::Error::other("too many chunks"))
}

/// A small response the host makes itself.
fn write_simple(
    mut stream: &TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    message: &str,
) -> std::io::Result<()> {
    let mut response = format!("HTTP/1.1 {status} {message}\r\n");
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str(&format!(
        "Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{message}\n",
        message.len() + 1
    ));
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

/// Decode `%XX` escapes, as a web server does for `PATH_INFO`.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Standard base64 with padding, for comparing `Authorization` headers.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_matches_the_rfc_examples() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("alice:secret", "YWxpY2U6c2VjcmV0"),
    ] {
        assert_eq!(base64(plain.as_bytes()), encoded);
    }
}
