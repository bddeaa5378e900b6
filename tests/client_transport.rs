//! packgate's client transports (`transport::client::Client`) against real servers on
//! 127.0.0.1: `git daemon` and `git http-backend` (git 2.47), `packgate serve` over HTTP and
//! HTTPS with credentials, ssh through a recording `core.sshCommand` shim that runs the
//! remote command locally, and local paths. Each connection reads the advertisement with
//! the protocol crate's reader; v2 sends `ls-refs`, v0 compares the refs with
//! `git ls-remote`. And the failure paths: refused, stalled (bounded by the timeout), 404,
//! malformed URLs.

use std::collections::BTreeSet;
use std::io::{BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use packgate::protocol::client::advertisement::{read_advertisement, Advertisement};
use packgate::transport::client::Client;
use packgate::wire::client::{ConnectError, ConnectOptions, Connection, Connector, WireVersion};
use packgate::wire::pkt_line::{Packet, PacketReader};
use packgate::wire::service::Service;

use crate::cgi_host::{CgiHost, CgiHostOptions};
use crate::daemon::Daemon;
use crate::http::{Push, Server, ServerOptions};
use crate::http_auth::{credentials_file, self_signed_certificate, PASSWORD, USER};
use crate::pkt;
use crate::util::{shared_fixture, write_file, Dir, Git, PACKGATE};

/// `unwrap` with the error in the panic, for the tests' own steps.
trait Must<T> {
    fn must(self) -> T;
}

impl<T, E: std::fmt::Debug> Must<T> for Result<T, E> {
    #[track_caller]
    fn must(self) -> T {
        self.unwrap_or_else(|error| panic!("{error:?}"))
    }
}

impl<T> Must<T> for Option<T> {
    #[track_caller]
    fn must(self) -> T {
        self.unwrap_or_else(|| panic!("nothing"))
    }
}

/// `unwrap_err` for a step that must fail.
trait MustFail<E> {
    fn must_fail(self) -> E;
}

impl<T, E> MustFail<E> for Result<T, E> {
    #[track_caller]
    fn must_fail(self) -> E {
        match self {
            Ok(_) => panic!("succeeded"),
            Err(error) => error,
        }
    }
}

/// The bound on every wait in these tests' connections.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The bound for the stalled-server tests.
const SHORT: Duration = Duration::from_secs(1);

fn client() -> Client {
    Client {
        local_executable: Some(PathBuf::from(PACKGATE)),
        // The harness's environment may carry GIT_SSL_CAINFO and the like.
        ignore_environment: true,
        ..Client::default()
    }
}

fn options(version: WireVersion) -> ConnectOptions {
    ConnectOptions {
        version,
        timeout: Some(TIMEOUT),
        ..ConnectOptions::default()
    }
}

/// A root holding a copy of the `small` preset as `small.git` and `with space.git`.
fn root(dir: &Dir) -> PathBuf {
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).must();
    let small = shared_fixture("small");
    dir.copy_tree(&small.path, &root.join("small.git"));
    dir.copy_tree(&small.path, &root.join("with space.git"));
    root
}

/// `git ls-remote <repo>` as `<id> <name>` lines (peeled tags as `<name>^{}`).
fn ls_remote(dir: &Dir, repo: &Path) -> BTreeSet<String> {
    let output = dir.git(&Git::newest()).arg("ls-remote").arg(repo).run();
    let lines: BTreeSet<String> = output
        .stdout_text()
        .lines()
        .map(|line| line.replacen('\t', " ", 1))
        .collect();
    assert!(lines.len() > 2, "no refs: {output}");
    lines
}

/// Connects and reads the advertisement.
fn advertise(
    client: &Client,
    url: &str,
    service: Service,
    options: &ConnectOptions,
) -> (Box<dyn Connection>, Advertisement) {
    let mut connection = client
        .connect(url, service, options)
        .unwrap_or_else(|error| panic!("{url}: {error}"));
    let advertisement = read_advertisement(&mut PacketReader::new(connection.reader()))
        .unwrap_or_else(|error| panic!("{url}: the advertisement: {error:?}"));
    (connection, advertisement)
}

/// A v0 advertisement's refs as `ls_remote` lines.
fn v0_refs(advertisement: &Advertisement) -> BTreeSet<String> {
    let Advertisement::V0 { refs, .. } = advertisement else {
        panic!("not a v0 advertisement: {advertisement:?}");
    };
    let mut lines = BTreeSet::new();
    for advertised in refs {
        lines.insert(format!("{} {}", advertised.id, advertised.name));
        if let Some(peeled) = advertised.peeled {
            lines.insert(format!("{peeled} {}^{{}}", advertised.name));
        }
    }
    lines
}

/// Sends `ls-refs` with `peel` and reads the refs as `ls_remote` lines.
fn ls_refs(connection: &mut dyn Connection) -> BTreeSet<String> {
    let request = pkt::concat([
        pkt::line("command=ls-refs\n"),
        pkt::line("object-format=sha1\n"),
        pkt::DELIM.to_vec(),
        pkt::line("peel\n"),
        pkt::FLUSH.to_vec(),
    ]);
    connection.writer().write_all(&request).must();
    connection.end_request().must();
    let mut reader = PacketReader::new(connection.reader());
    let mut lines = BTreeSet::new();
    for _ in 0..10_000 {
        match reader.read_packet().must() {
            Some(Packet::Data(data)) => {
                let text = String::from_utf8_lossy(data).trim_end().to_owned();
                let mut words = text.split(' ');
                let (Some(id), Some(name)) = (words.next(), words.next()) else {
                    panic!("bad ls-refs line {text:?}");
                };
                lines.insert(format!("{id} {name}"));
                for attribute in words {
                    if let Some(peeled) = attribute.strip_prefix("peeled:") {
                        lines.insert(format!("{peeled} {name}^{{}}"));
                    }
                }
            }
            Some(Packet::Flush) => return lines,
            other => panic!("unexpected packet in ls-refs: {other:?}"),
        }
    }
    panic!("ls-refs did not end");
}

/// v2: the capabilities, then `ls-refs` equal to `git ls-remote`; v0: the refs equal to it.
fn check_upload_pack(client: &Client, url: &str, expected: &BTreeSet<String>) {
    let (mut connection, advertisement) =
        advertise(client, url, Service::UploadPack, &options(WireVersion::V2));
    assert!(
        matches!(advertisement, Advertisement::V2 { .. }) && advertisement.has("ls-refs"),
        "{url}: {advertisement:?}"
    );
    assert_eq!(&ls_refs(connection.as_mut()), expected, "{url}: v2 ls-refs");
    connection
        .finish()
        .unwrap_or_else(|error| panic!("{url}: finish: {error}"));

    let (connection, advertisement) =
        advertise(client, url, Service::UploadPack, &options(WireVersion::V0));
    assert_eq!(&v0_refs(&advertisement), expected, "{url}: v0 refs");
    assert!(advertisement.has("multi_ack_detailed"), "{advertisement:?}");
    let mut connection = connection;
    if !connection.stateless() {
        // No wants: a flush ends the session, as `git ls-remote` does.
        connection.writer().write_all(pkt::FLUSH).must();
        connection.end_request().must();
        connection
            .finish()
            .unwrap_or_else(|error| panic!("{url}: v0 finish: {error}"));
    }
}

/// `git daemon`, v2 and v0, and a path with a space in it.
#[test]
fn over_git_daemon() {
    let dir = Dir::new("client-git");
    let root = root(&dir);
    let expected = ls_remote(&dir, &root.join("small.git"));
    let base_path = format!("--base-path={}", root.display());
    let daemon = Daemon::start_git(&dir, &Git::newest(), &["--export-all", &base_path]);
    check_upload_pack(&client(), &daemon.url("/small.git"), &expected);
    check_upload_pack(&client(), &daemon.url("/with%20space.git"), &expected);
    // A missing repository: git daemon hangs up without a word.
    let mut connection = client()
        .connect(
            &daemon.url("/missing.git"),
            Service::UploadPack,
            &options(WireVersion::V2),
        )
        .must();
    assert!(read_advertisement(&mut PacketReader::new(connection.reader())).is_err());
}

/// The CGI host running `git http-backend` over `root`.
fn git_http_backend(root: &Path) -> CgiHost {
    let git = Git::newest();
    CgiHost::start(CgiHostOptions {
        project_root: root.to_path_buf(),
        export_all: true,
        program: Some(vec![git.program.into_os_string(), "http-backend".into()]),
        ..CgiHostOptions::default()
    })
}

/// `git http-backend`: v2 and v0, a stateless v0 fetch that returns a pack, 404.
#[test]
fn over_git_http_backend() {
    let dir = Dir::new("client-http-backend");
    let root = root(&dir);
    let expected = ls_remote(&dir, &root.join("small.git"));
    let host = git_http_backend(&root);
    check_upload_pack(&client(), &host.url("small.git"), &expected);
    check_upload_pack(&client(), &host.url("with%20space.git"), &expected);

    // Stateless v0: the wants and `done` in one POST; the answer is NAK and the pack.
    assert!(stateless_fetch(&host.url("small.git/"), 0) > 10);
    // With haves the server does not know: 10 KiB (sent gzip-compressed) and 1.2 MiB (past
    // git's post buffer: streamed in chunks while written).
    assert!(stateless_fetch(&host.url("small.git"), 200) > 10);
    assert!(stateless_fetch(&host.url("small.git"), 25_000) > 10);

    // A missing repository.
    let error = client()
        .connect(
            &host.url("missing.git"),
            Service::UploadPack,
            &options(WireVersion::V2),
        )
        .err();
    assert!(
        matches!(&error, Some(ConnectError::Refused(message)) if message.contains("not found")),
        "{error:?}"
    );
}

/// One stateless v0 fetch of every advertised ref with `haves` unknown commits: checks
/// the `NAK` and returns the number of objects in the pack.
fn stateless_fetch(url: &str, haves: usize) -> u32 {
    let (mut connection, advertisement) = advertise(
        &client(),
        url,
        Service::UploadPack,
        &options(WireVersion::V0),
    );
    assert!(connection.stateless());
    let Advertisement::V0 { refs, .. } = &advertisement else {
        panic!("{advertisement:?}");
    };
    let mut request = Vec::new();
    for (n, advertised) in refs.iter().enumerate() {
        let line = if n == 0 {
            format!("want {} ofs-delta agent=packgate-test\n", advertised.id)
        } else {
            format!("want {}\n", advertised.id)
        };
        request.extend(pkt::line(line));
    }
    request.extend_from_slice(pkt::FLUSH);
    for n in 0..haves {
        request.extend(pkt::line(format!("have {:040x}\n", n + 1)));
    }
    request.extend(pkt::line("done\n"));
    // Written in small pieces through one writer, as a client does.
    let writer = connection.writer();
    for piece in request.chunks(1000) {
        writer.write_all(piece).must();
    }
    connection.end_request().must();
    let mut reader = PacketReader::new(connection.reader());
    let nak = reader.read_packet().must();
    assert!(matches!(nak, Some(Packet::Data(b"NAK\n"))), "{nak:?}");
    let mut pack = Vec::new();
    connection.reader().read_to_end(&mut pack).must();
    assert!(
        pack.starts_with(b"PACK") && pack.len() > 12,
        "no pack: {:?}",
        &pack[..pack.len().min(16)]
    );
    connection.finish().must();
    u32::from_be_bytes([pack[8], pack[9], pack[10], pack[11]])
}

/// A request a [`fake_http`] server received: request line, headers (names in lower
/// case) and the body (chunked encoding removed, content encoding kept).
struct Received {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Reads one request (bounded: 100 headers, a 64 MiB body).
fn read_request(reader: &mut impl std::io::BufRead) -> std::io::Result<Received> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut headers = Vec::new();
    for _ in 0..100 {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let mut received = Received {
        line: line.trim_end().to_owned(),
        headers,
        body: Vec::new(),
    };
    if let Some(length) = received.header("content-length") {
        let length: u64 = length.parse().unwrap_or(0).min(64 << 20);
        reader.take(length).read_to_end(&mut received.body)?;
    } else if received.header("transfer-encoding") == Some("chunked") {
        for _ in 0..100_000 {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = u64::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 || received.body.len() > 64 << 20 {
                let mut end = String::new();
                reader.read_line(&mut end)?;
                break;
            }
            reader.by_ref().take(size).read_to_end(&mut received.body)?;
            let mut crlf = String::new();
            reader.read_line(&mut crlf)?;
        }
    }
    Ok(received)
}

/// A web server that answers each of at most `connections` requests with `answer(request)`
/// and passes the requests on; returns its port.
fn fake_http(
    connections: usize,
    answer: impl Fn(&Received) -> Vec<u8> + Send + 'static,
) -> (u16, std::sync::mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").must();
    let port = listener.local_addr().must().port();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(stream) = stream else { break };
            let _ = stream.set_read_timeout(Some(TIMEOUT));
            let mut reader = BufReader::new(stream);
            let Ok(request) = read_request(&mut reader) else {
                continue;
            };
            let _ = reader.get_mut().write_all(&answer(&request));
            let _ = sender.send(request);
        }
    });
    (port, receiver)
}

/// An HTTP response with `Connection: close`.
fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut text = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The first request's redirect is followed and the POSTs go to the new base; a gzip
/// response is decoded; a dumb server is refused.
#[test]
fn http_redirects_gzip_and_dumb_servers() {
    let dir = Dir::new("client-http-details");
    let root = root(&dir);
    let expected = ls_remote(&dir, &root.join("small.git"));
    let host = git_http_backend(&root);
    let target = host.url("small.git/info/refs?service=git-upload-pack");
    let (redirector, _) = fake_http(1, move |_| {
        response("302 Found", &[("Location", &target)], b"")
    });
    let url = format!("http://127.0.0.1:{redirector}/old.git");
    let (mut connection, advertisement) = advertise(
        &client(),
        &url,
        Service::UploadPack,
        &options(WireVersion::V2),
    );
    assert!(matches!(advertisement, Advertisement::V2 { .. }));
    assert_eq!(ls_refs(connection.as_mut()), expected);
    connection.finish().must();
    let posts: Vec<_> = host
        .access_log()
        .into_iter()
        .filter(|logged| logged.method == "POST")
        .map(|logged| logged.target)
        .collect();
    assert_eq!(posts, ["/small.git/git-upload-pack"]);

    let id = "0123456789012345678901234567890123456789";
    let mut advertisement = pkt::line("# service=git-upload-pack\n");
    advertisement.extend_from_slice(pkt::FLUSH);
    advertisement.extend(pkt::line(format!(
        "{id} refs/heads/main\0multi_ack_detailed\n"
    )));
    advertisement.extend_from_slice(pkt::FLUSH);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&advertisement).must();
    let gzipped = gzip.finish().must();
    let (server, _) = fake_http(2, move |request| {
        if request
            .line
            .starts_with("GET /gz.git/info/refs?service=git-upload-pack ")
        {
            response(
                "200 OK",
                &[
                    (
                        "Content-Type",
                        "application/x-git-upload-pack-advertisement",
                    ),
                    ("Content-Encoding", "gzip"),
                ],
                &gzipped,
            )
        } else {
            response(
                "200 OK",
                &[("Content-Type", "text/plain")],
                format!("{id}\trefs/heads/main\n").as_bytes(),
            )
        }
    });
    let (_, advertisement) = advertise(
        &client(),
        &format!("http://127.0.0.1:{server}/gz.git"),
        Service::UploadPack,
        &options(WireVersion::V0),
    );
    assert_eq!(
        v0_refs(&advertisement),
        BTreeSet::from([format!("{id} refs/heads/main")])
    );
    let error = client()
        .connect(
            &format!("http://127.0.0.1:{server}/dumb.git"),
            Service::UploadPack,
            &options(WireVersion::V0),
        )
        .err();
    assert!(
        matches!(&error, Some(ConnectError::Refused(message)) if message.contains("dumb")),
        "{error:?}"
    );

    // Request bodies as git sends them: plain when small, gzip above 1 KiB, chunked (and
    // streamed) past 1 MiB; the headers of each POST.
    let mut v2 = pkt::line("version 2\n");
    v2.extend(pkt::line("ls-refs\n"));
    v2.extend_from_slice(pkt::FLUSH);
    let (server, requests) = fake_http(4, move |request| {
        if request.line.starts_with("GET ") {
            response(
                "200 OK",
                &[(
                    "Content-Type",
                    "application/x-git-upload-pack-advertisement",
                )],
                &v2,
            )
        } else {
            response(
                "200 OK",
                &[("Content-Type", "application/x-git-upload-pack-result")],
                pkt::FLUSH,
            )
        }
    });
    let url = format!("http://127.0.0.1:{server}/r.git");
    let (mut connection, _) = advertise(
        &client(),
        &url,
        Service::UploadPack,
        &options(WireVersion::V2),
    );
    let get = requests.recv_timeout(TIMEOUT).must();
    assert_eq!(
        get.line,
        "GET /r.git/info/refs?service=git-upload-pack HTTP/1.1"
    );
    assert_eq!(get.header("git-protocol"), Some("version=2"));
    assert!(get
        .header("user-agent")
        .is_some_and(|agent| agent.starts_with("git/")));
    for size in [100usize, 10_000, 2_000_000] {
        let body: Vec<u8> = (0..size).map(|n| b'a' + (n % 26) as u8).collect();
        let writer = connection.writer();
        for piece in body.chunks(4096) {
            writer.write_all(piece).must();
        }
        connection.end_request().must();
        let mut answer = Vec::new();
        connection.reader().read_to_end(&mut answer).must();
        assert_eq!(answer, pkt::FLUSH);
        let post = requests.recv_timeout(TIMEOUT).must();
        assert_eq!(post.line, "POST /r.git/git-upload-pack HTTP/1.1");
        assert_eq!(
            post.header("content-type"),
            Some("application/x-git-upload-pack-request")
        );
        assert_eq!(
            post.header("accept"),
            Some("application/x-git-upload-pack-result")
        );
        assert_eq!(post.header("git-protocol"), Some("version=2"));
        let sent = match post.header("content-encoding") {
            Some("gzip") => {
                assert!(
                    (1024..=1 << 20).contains(&size),
                    "{size} bytes gzip-compressed"
                );
                let mut plain = Vec::new();
                flate2::read::GzDecoder::new(&post.body[..])
                    .read_to_end(&mut plain)
                    .must();
                plain
            }
            _ => {
                assert!(
                    !(1024..=1 << 20).contains(&size),
                    "{size} bytes not compressed"
                );
                post.body.clone()
            }
        };
        assert_eq!(sent, body, "{size} bytes");
        assert_eq!(
            post.header("transfer-encoding") == Some("chunked"),
            size > 1 << 20,
            "{size} bytes: {:?}",
            post.headers
        );
    }
    connection.finish().must();
}

/// `packgate serve` with credentials required for pushes: 401 without, the advertisement
/// with the URL's userinfo or the options' credentials; over HTTP and HTTPS (the
/// certificate as the CA file).
#[test]
fn over_packgate_serve_with_credentials() {
    let dir = Dir::new("client-serve");
    let root = root(&dir);
    let expected: BTreeSet<String> = ls_remote(&dir, &root.join("small.git"))
        .into_iter()
        .filter(|line| !line.ends_with("^{}") && !line.ends_with(" HEAD"))
        .collect();
    let credentials = credentials_file(&dir, &[(USER, PASSWORD)], 4);
    let (certificate, key) = self_signed_certificate(&dir);
    for tls in [false, true] {
        let server = Server::start_with(
            &root,
            &ServerOptions {
                credentials: Some(credentials.clone()),
                tls: tls.then(|| (certificate.clone(), key.clone())),
                ..ServerOptions::new(Push::Refused)
            },
        );
        let client = Client {
            ssl_ca_info: tls.then(|| certificate.clone()),
            ..client()
        };
        let label = if tls { "https" } else { "http" };
        check_upload_pack(
            &client,
            &server.http_url("small.git"),
            &ls_remote(&dir, &root.join("small.git")),
        );

        let error = client
            .connect(
                &server.http_url("small.git"),
                Service::ReceivePack,
                &options(WireVersion::V2),
            )
            .err();
        assert!(
            matches!(&error, Some(ConnectError::Refused(message)) if message.contains("authentication required")),
            "{label}: {error:?}"
        );
        let wrong = server.http_url_as(USER, "wrong", "small.git");
        let error = client
            .connect(&wrong, Service::ReceivePack, &options(WireVersion::V2))
            .err();
        assert!(
            matches!(&error, Some(ConnectError::Refused(message)) if message.contains("Authentication failed")),
            "{label}: {error:?}"
        );
        let url = server.http_url_as(USER, PASSWORD, "small.git");
        let (connection, advertisement) = advertise(
            &client,
            &url,
            Service::ReceivePack,
            &options(WireVersion::V2),
        );
        assert_eq!(
            v0_refs(&advertisement),
            expected,
            "{label}: receive-pack refs"
        );
        assert!(advertisement.has("report-status"), "{advertisement:?}");
        drop(connection);
        let with_options = ConnectOptions {
            credentials: Some((USER.to_owned(), PASSWORD.to_owned())),
            ..options(WireVersion::V0)
        };
        let (_, advertisement) = advertise(
            &client,
            &server.http_url("small.git"),
            Service::ReceivePack,
            &with_options,
        );
        assert_eq!(
            v0_refs(&advertisement),
            expected,
            "{label}: with options' credentials"
        );

        if tls {
            // Without the CA file the server's certificate is not trusted.
            let error = self::client()
                .connect(
                    &server.http_url("small.git"),
                    Service::UploadPack,
                    &options(WireVersion::V2),
                )
                .err();
            assert!(
                matches!(&error, Some(ConnectError::Io(error)) if error.to_string().contains("certificate")),
                "{error:?}"
            );
        }
    }
}

/// A test ssh program: records each call's arguments (one a line, then `--`) in `log`,
/// answers OpenSSH's `-G` probe, and runs the remote command (its last argument) locally
/// by the shell, with git 2.47's upload-pack and receive-pack as `git-upload-pack` and
/// `git-receive-pack`.
pub(crate) struct SshShim {
    /// The program, for `core.sshCommand` or `GIT_SSH_COMMAND` (quote it).
    pub(crate) program: PathBuf,
    /// Where the calls are recorded.
    pub(crate) log: PathBuf,
}

pub(crate) fn ssh_shim(dir: &Dir) -> SshShim {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).must();
    let git = Git::newest();
    for service in ["upload-pack", "receive-pack"] {
        write_script(
            &bin.join(format!("git-{service}")),
            &format!("exec '{}' {service} \"$@\"\n", git.program.display()),
        );
    }
    let log = dir.join("ssh-args");
    let program = dir.join("ssh-shim");
    write_script(
        &program,
        &format!(
            "for a in \"$@\"; do printf '%s\\n' \"$a\" >> '{log}'; done\n\
             if [ \"$1\" = -G ]; then echo -- >> '{log}'; exit 0; fi\n\
             echo \"GIT_PROTOCOL=$GIT_PROTOCOL\" >> '{log}'\n\
             echo -- >> '{log}'\n\
             for a in \"$@\"; do command=\"$a\"; done\n\
             PATH='{bin}':\"$PATH\" exec sh -c \"$command\"\n",
            log = log.display(),
            bin = bin.display(),
        ),
    );
    SshShim { program, log }
}

/// ssh through `core.sshCommand`: the [`ssh_shim`].
#[test]
fn over_ssh_shim() {
    let dir = Dir::new("client-ssh");
    let root = root(&dir);
    let expected = ls_remote(&dir, &root.join("small.git"));
    let SshShim { program: shim, log } = ssh_shim(&dir);
    let client = Client {
        ssh_command: Some(format!("'{}'", shim.display())),
        ..client()
    };
    let path = root.join("with space.git");
    let url = format!("ssh://git@example.invalid:2222{}", path.display());
    check_upload_pack(&client, &url, &expected);
    let recorded = std::fs::read_to_string(&log).must();
    let calls: Vec<&str> = recorded.split("--\n").collect();
    let quoted = format!("git-upload-pack '{}'", path.display());
    let v2_call = format!(
        "-o\nSendEnv=GIT_PROTOCOL\n-p\n2222\ngit@example.invalid\n{quoted}\nGIT_PROTOCOL=version=2\n"
    );
    assert!(calls.iter().any(|call| *call == v2_call), "{recorded}");
    let v0_call = format!("-p\n2222\ngit@example.invalid\n{quoted}\nGIT_PROTOCOL=\n");
    assert!(calls.iter().any(|call| *call == v0_call), "{recorded}");
    assert!(
        recorded.starts_with("-G\n"),
        "no -G probe first: {recorded}"
    );

    // scp-like, no port.
    std::fs::remove_file(&log).must();
    let url = format!("host:{}", root.join("small.git").display());
    check_upload_pack(&client, &url, &expected);
    let recorded = std::fs::read_to_string(&log).must();
    assert!(!recorded.contains("-p\n"), "{recorded}");
    assert!(recorded.contains("\nhost\ngit-upload-pack '"), "{recorded}");
}

pub(crate) fn write_script(path: &Path, body: &str) {
    write_file(path, format!("#!/bin/sh\n{body}").as_bytes());
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).must();
}

/// `path` relative to the current directory, as `./…` when below it, else `../…`.
fn relative(path: &Path) -> String {
    let cwd = std::env::current_dir().must();
    if let Ok(below) = path.strip_prefix(&cwd) {
        return format!("./{}", below.display());
    }
    let ups = cwd.components().count() - 1;
    format!(
        "{}{}",
        "../".repeat(ups),
        path.strip_prefix("/").must().display()
    )
}

/// Local paths: absolute, `file://`, relative `./x` and `../x`, a symlink; served by
/// `packgate upload-pack`.
#[test]
fn local_paths() {
    let dir = Dir::new("client-local");
    let root = root(&dir);
    let expected = ls_remote(&dir, &root.join("small.git"));
    let below = tempfile::Builder::new()
        .prefix("client-local-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .must();
    dir.copy_tree(&root.join("small.git"), &below.path().join("r.git"));
    let link = dir.join("link.git");
    std::os::unix::fs::symlink(root.join("with space.git"), &link).must();
    let urls = [
        root.join("with space.git").display().to_string(),
        format!("file://{}", root.join("with%20space.git").display()),
        relative(&below.path().join("r.git")),
        relative(&root.join("small.git")),
        link.display().to_string(),
    ];
    assert!(urls[2].starts_with("./"), "{urls:?}");
    assert!(urls[3].starts_with("../"), "{urls:?}");
    for url in &urls {
        check_upload_pack(&client(), url, &expected);
    }
}

/// A listener that accepts connections and never answers; they are held until dropped.
struct Stalled {
    port: u16,
    _holder: std::thread::JoinHandle<()>,
}

fn stalled() -> Stalled {
    let listener = TcpListener::bind("127.0.0.1:0").must();
    let port = listener.local_addr().must().port();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        // Bounded: the tests connect a few times.
        for stream in listener.incoming().take(8) {
            match stream {
                Ok(stream) => held.push(stream),
                Err(_) => break,
            }
        }
    });
    Stalled {
        port,
        _holder: holder,
    }
}

fn short(version: WireVersion) -> ConnectOptions {
    ConnectOptions {
        timeout: Some(SHORT),
        ..options(version)
    }
}

/// Refused, stalled (bounded by the timeout), malformed and unsupported URLs.
#[test]
fn failures() {
    // Nothing listens: an I/O error at once.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").must();
        listener.local_addr().must().port()
    };
    for url in [
        format!("git://127.0.0.1:{port}/r.git"),
        format!("http://127.0.0.1:{port}/r.git"),
    ] {
        let started = Instant::now();
        let error = client()
            .connect(&url, Service::UploadPack, &short(WireVersion::V2))
            .err();
        assert!(
            matches!(&error, Some(ConnectError::Io(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused),
            "{url}: {error:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{url}: slow refusal"
        );
    }

    // Accepted, never answered: TimedOut after the timeout, not before, not much later.
    let server = stalled();
    let started = Instant::now();
    let mut connection = client()
        .connect(
            &format!("git://127.0.0.1:{}/r.git", server.port),
            Service::UploadPack,
            &short(WireVersion::V2),
        )
        .must();
    let mut byte = [0u8; 1];
    let error = connection.reader().read(&mut byte).must_fail();
    assert!(error.kind() == std::io::ErrorKind::TimedOut, "{error:?}");
    let elapsed = started.elapsed();
    assert!(elapsed >= SHORT / 2 && elapsed < SHORT * 10, "{elapsed:?}");

    let started = Instant::now();
    let error = client()
        .connect(
            &format!("http://127.0.0.1:{}/r.git", server.port),
            Service::UploadPack,
            &short(WireVersion::V2),
        )
        .err();
    assert!(
        matches!(&error, Some(ConnectError::Io(error)) if error.kind() == std::io::ErrorKind::TimedOut),
        "{error:?}"
    );
    let elapsed = started.elapsed();
    assert!(elapsed >= SHORT / 2 && elapsed < SHORT * 10, "{elapsed:?}");

    for url in [
        "git://",
        "git://host",
        "ssh://-oProxyCommand=x/r",
        "-oProxyCommand=x:r",
        "http://host:70000/r",
        "http://a b/r",
    ] {
        let error = client()
            .connect(url, Service::UploadPack, &short(WireVersion::V2))
            .err();
        assert!(
            matches!(error, Some(ConnectError::Url { .. })),
            "{url}: {error:?}"
        );
    }
    let error = client()
        .connect("ftp://host/r", Service::UploadPack, &short(WireVersion::V2))
        .err();
    assert!(
        matches!(error, Some(ConnectError::Unsupported(_))),
        "{error:?}"
    );
}
