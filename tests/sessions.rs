//! git:// sessions of `packgate serve`: push when a repository enables it, and what an idle
//! connection costs (a task, not a thread).

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    time::Duration,
};

use crate::{
    http::{Push, Server},
    pkt::{line, DELIM, FLUSH},
    util::{fsck, shared_fixture, Dir, Git},
};

/// Reads pkt-lines until a flush-pkt; returns the payloads. Panics on a timeout or EOF.
pub(crate) fn read_until_flush(stream: &mut impl Read) -> Vec<Vec<u8>> {
    let mut payloads = Vec::new();
    // Bounded: an advertisement or ls-refs response of a test repository is short.
    for _ in 0..10_000 {
        let mut length = [0u8; 4];
        stream
            .read_exact(&mut length)
            .unwrap_or_else(|error| panic!("reading a pkt-line length: {error}"));
        let length = std::str::from_utf8(&length)
            .ok()
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
            .unwrap_or_else(|| panic!("bad pkt-line length {length:?}"));
        if length == 0 {
            return payloads;
        }
        let mut payload = vec![0; length.saturating_sub(4)];
        stream
            .read_exact(&mut payload)
            .unwrap_or_else(|error| panic!("reading a pkt-line: {error}"));
        payloads.push(payload);
    }
    panic!("no flush-pkt after 10000 packets");
}

/// Opens a git:// v2 upload-pack session and reads the capability advertisement.
pub(crate) fn open_session(address: &str, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address)
        .unwrap_or_else(|error| panic!("connecting to {address}: {error}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap_or_else(|error| panic!("set_read_timeout: {error}"));
    let head = format!("git-upload-pack {path}\0host=127.0.0.1\0\0version=2\0");
    stream
        .write_all(&line(head.as_bytes()))
        .unwrap_or_else(|error| panic!("sending the request head: {error}"));
    let advertisement = read_until_flush(&mut stream);
    assert_eq!(
        advertisement.first().map(Vec::as_slice),
        Some(&b"version 2\n"[..]),
        "not a v2 advertisement: {advertisement:?}"
    );
    stream
}

/// Sends `ls-refs` for `refs/heads/` and returns the ref lines.
fn ls_refs(stream: &mut TcpStream) -> Vec<String> {
    let mut request = line(b"command=ls-refs\n");
    request.extend_from_slice(DELIM);
    request.extend_from_slice(&line(b"ref-prefix refs/heads/\n"));
    request.extend_from_slice(FLUSH);
    stream
        .write_all(&request)
        .unwrap_or_else(|error| panic!("sending ls-refs: {error}"));
    read_until_flush(stream)
        .into_iter()
        .map(|line| String::from_utf8_lossy(&line).trim_end().to_owned())
        .collect()
}

/// The number of threads of the `packgate serve` process serving `root`.
pub(crate) fn server_threads(root: &Path) -> usize {
    let root = root.to_string_lossy().into_owned();
    let entries = std::fs::read_dir("/proc").unwrap_or_else(|error| panic!("/proc: {error}"));
    let pids: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|entry| {
            std::fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| {
                let args: Vec<_> = cmdline.split(|byte| *byte == 0).collect();
                args.first()
                    .is_some_and(|program| program.ends_with(b"packgate"))
                    && args.contains(&b"serve".as_slice())
                    && args.iter().any(|arg| arg == &root.as_bytes())
            })
        })
        .map(|entry| entry.path())
        .collect();
    assert_eq!(pids.len(), 1, "expected one server for {root}: {pids:?}");
    let status = std::fs::read_to_string(pids[0].join("status"))
        .unwrap_or_else(|error| panic!("reading the server's status: {error}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no thread count in {status}"))
}

/// Idle v2 connections between commands hold no thread: 200 of them, opened one after the
/// other, leave the server with a handful of threads, and each still answers afterwards.
#[test]
fn idle_connections_hold_no_threads() {
    let source = shared_fixture("tiny");
    let dir = Dir::new("sessions-idle");
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|error| panic!("mkdir: {error}"));
    dir.copy_tree(&source.path, &root.join("tiny.git"));
    let server = Server::start(&root, Push::Refused);
    let address = server
        .git_url("")
        .trim_start_matches("git://")
        .trim_end_matches('/')
        .to_owned();
    let mut sessions: Vec<TcpStream> = (0..200)
        .map(|_| open_session(&address, "/tiny.git"))
        .collect();
    let threads = server_threads(&root);
    // The runtime's workers, the blocking pool's few reused threads, signal handling: far
    // fewer than one per connection.
    assert!(threads < 40, "{threads} threads with 200 idle connections");
    let first = ls_refs(&mut sessions[0]);
    assert!(
        first
            .iter()
            .any(|line| line.ends_with("refs/heads/main") || line.contains(" refs/heads/")),
        "no branches in {first:?}"
    );
    let last = sessions.len() - 1;
    assert_eq!(ls_refs(&mut sessions[last]), first);
    // A second command on the same connection.
    assert_eq!(ls_refs(&mut sessions[0]), first);
}

/// Push over git:// runs when the repository enables it (`daemon.receivepack`, overridable
/// as in git daemon), with both clients; the result passes `git fsck`.
#[test]
fn push_over_git_protocol_when_the_repository_enables_it() {
    let source = shared_fixture("tiny");
    let dir = Dir::new("sessions-push");
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|error| panic!("mkdir: {error}"));
    let served = root.join("tiny.git");
    dir.copy_tree(&source.path, &served);
    let server = Server::start(&root, Push::Refused);
    let newest = Git::newest();
    dir.git(&newest)
        .arg("-C")
        .arg(&served)
        .args(["config", "daemon.receivepack", "true"])
        .run();
    for (n, git) in Git::all().into_iter().enumerate() {
        clone_commit_and_push(
            &dir,
            &git,
            &server.git_url("tiny.git"),
            &served,
            &format!("pushed-{n}"),
        );
    }
}

/// Clones `url` with `git`, commits, pushes to `branch` over `url`, and checks the served
/// repository `served` has the commit there and passes `git fsck`.
pub(crate) fn clone_commit_and_push(dir: &Dir, git: &Git, url: &str, served: &Path, branch: &str) {
    let work = dir.join(&format!("work-{branch}"));
    dir.git(git)
        .args(["-c", "protocol.version=2", "clone", "-q", url])
        .arg(&work)
        .run();
    dir.git(git)
        .arg("-C")
        .arg(&work)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(["commit", "-q", "--allow-empty", "-m", "pushed"])
        .run();
    let output = dir
        .git(git)
        .arg("-C")
        .arg(&work)
        .args(["push", url])
        .arg(format!("HEAD:refs/heads/{branch}"))
        .output();
    assert!(output.status.success(), "push with {git}: {output}");
    let pushed = dir
        .git(git)
        .arg("-C")
        .arg(&work)
        .args(["rev-parse", "HEAD"])
        .run()
        .stdout_text();
    let served_ref = dir
        .git(git)
        .arg("-C")
        .arg(served)
        .args(["rev-parse", &format!("refs/heads/{branch}")])
        .run()
        .stdout_text();
    assert_eq!(served_ref.trim(), pushed.trim(), "pushed ref with {git}");
    fsck(dir, git, served);
}

/// Smart HTTP: a client that stalls in its request head or in the middle of a push's body is
/// cut off after the configured timeouts (nothing of the push stays), and a client beyond
/// the session cap is answered `503` instead of being dropped.
#[test]
fn stalled_http_clients_are_reaped_and_the_cap_answers_503() {
    use crate::receive_pack::{
        quarantines, setup_with_partial_request, temporary_pack_size, wait_until, Snapshot,
        END_LIMIT,
    };
    let git = Git::newest();
    let (setup, request) = setup_with_partial_request("http-stall", &git);
    let config = setup.dir.join("packgate.toml");
    crate::util::write_file(
        &config,
        // The stalled sessions must outlive the probing below on a busy machine (CI's two
        // cores building and testing at once reaped them before the over-the-cap check).
        b"[http]\nheader-timeout = 3\ntimeout = 20\nmax-connections = 2\n",
    );
    let server = Server::start_with(
        setup.dir.path(),
        &crate::http::ServerOptions {
            config: Some(config),
            ..crate::http::ServerOptions::new(Push::AllowedWithoutAuthentication)
        },
    );
    let before = Snapshot::of(&setup.dir, &git, &setup.server);
    let connect = || {
        let stream = TcpStream::connect(server.http_address())
            .unwrap_or_else(|error| panic!("connecting: {error}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap_or_else(|error| panic!("set_read_timeout: {error}"));
        stream
    };

    // Half a request head, then nothing: it holds a slot until the header timeout.
    let half_head_request =
        b"GET /server.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n";
    let mut half_head = connect();
    half_head
        .write_all(half_head_request)
        .unwrap_or_else(|error| panic!("sending half a head: {error}"));
    // Others are served meanwhile.
    setup
        .dir
        .git(&git)
        .args(["ls-remote", &server.http_url("server.git")])
        .run();
    // A stalled head is a waiting connection, not a session: two clients stalled in the
    // body of a request take both session slots; a client over the cap is told so.
    let half_body_request = b"POST /server.git/git-upload-pack HTTP/1.1\r\nHost: x\r\n\
        Git-Protocol: version=2\r\nContent-Type: application/x-git-upload-pack-request\r\n\
        Content-Length: 100\r\n\r\n0014command=ls-refs\n";
    let mut half_bodies = [connect(), connect()];
    for stream in &mut half_bodies {
        stream
            .write_all(half_body_request)
            .unwrap_or_else(|error| panic!("sending half a body: {error}"));
    }
    // Both are sessions once the server has read their heads: until then a probe may still
    // get a slot, so wait for the first probe that is turned away. A session that just
    // ended (the `ls-remote` above) may still have held a slot when a half body arrived:
    // that one was answered 503 and closed, so it is sent again.
    wait_until(Duration::from_secs(15), "both session slots taken", || {
        for stream in &mut half_bodies {
            if answered_or_closed(stream) {
                *stream = connect();
                stream
                    .write_all(half_body_request)
                    .unwrap_or_else(|error| panic!("sending half a body again: {error}"));
            }
        }
        let mut probe = connect();
        probe
            .write_all(
                b"GET /server.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n\
                  Connection: close\r\n\r\n",
            )
            .unwrap_or_else(|error| panic!("sending a probe: {error}"));
        wait_for_close(&mut probe, Duration::from_secs(10)).starts_with(b"HTTP/1.1 503")
    });
    let output = setup
        .dir
        .git(&git)
        .args(["ls-remote", &server.http_url("server.git")])
        .output();
    assert!(!output.status.success(), "over the cap: {output}");
    assert!(
        output.stderr_text().contains("503"),
        "over the cap: {output}"
    );
    wait_for_close(&mut half_head, Duration::from_secs(30));
    for stream in &mut half_bodies {
        wait_for_close(stream, Duration::from_secs(30));
    }

    // Half a fetch request: it is read without a thread, and answered 400 after the timeout.
    let mut half_fetch = connect();
    half_fetch
        .write_all(
            b"POST /server.git/git-upload-pack HTTP/1.1\r\nHost: x\r\nGit-Protocol: version=2\r\n\
              Content-Type: application/x-git-upload-pack-request\r\nContent-Length: 100\r\n\r\n\
              0014command=ls-refs\n",
        )
        .unwrap_or_else(|error| panic!("sending half a fetch: {error}"));
    let answer = wait_for_close(&mut half_fetch, Duration::from_secs(30));
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("stalled"), "{answer}");

    // Half a push: the whole head, the commands and half of the pack.
    let mut half_push = connect();
    let mut post = format!(
        "POST /server.git/git-receive-pack HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/x-git-receive-pack-request\r\n\
         Content-Length: {}\r\n\r\n",
        request.len() * 2
    )
    .into_bytes();
    post.extend_from_slice(&request);
    half_push
        .write_all(&post)
        .unwrap_or_else(|error| panic!("sending half a push: {error}"));
    wait_until(END_LIMIT, "the pack to arrive", || {
        temporary_pack_size(&setup.server).is_some()
    });
    wait_for_close(&mut half_push, Duration::from_secs(30));
    wait_until(END_LIMIT, "the quarantine to go", || {
        quarantines(&setup.server).is_empty()
    });
    before.assert_unchanged(&setup.dir, &git, &setup.server, "stalled push over HTTP");
    // And the server serves again.
    setup
        .dir
        .git(&git)
        .args(["ls-remote", &server.http_url("server.git")])
        .run();
}

/// Waits (at most `limit`) for the server to close `stream`; returns what it sent meanwhile.
#[track_caller]
/// Whether the server has answered on `stream` or closed it, without waiting.
fn answered_or_closed(stream: &mut TcpStream) -> bool {
    stream
        .set_nonblocking(true)
        .unwrap_or_else(|error| panic!("set_nonblocking: {error}"));
    let mut byte = [0u8; 1];
    let answered = match stream.peek(&mut byte) {
        Ok(_) => true,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream
        .set_nonblocking(false)
        .unwrap_or_else(|error| panic!("set_nonblocking: {error}"));
    answered
}

pub(crate) fn wait_for_close(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let started = std::time::Instant::now();
    stream
        .set_read_timeout(Some(limit))
        .unwrap_or_else(|error| panic!("set_read_timeout: {error}"));
    let mut received = Vec::new();
    let mut buffer = [0u8; 65536];
    // Bounded by `limit`: every read either returns data, ends, or times out.
    while started.elapsed() < limit {
        match stream.read(&mut buffer) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            // A read that waited out its time: the connection is still open.
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the server did not close the connection: {error}")
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            // Reset, aborted: the server closed it with our bytes unread.
            Err(_) => return received,
        }
    }
    panic!("the server did not close the connection within {limit:?}");
}
