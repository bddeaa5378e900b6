//! `cargo xtask bench watch`: what the refs watch (docs/refs-watch.md) costs the server, on
//! the fixture with 50,000 more refs (`refs50k`, see [`super::refs`]), served by a long-running
//! `packgate serve` and, for the comparison, `git daemon` on the same repository in the same
//! run.
//!
//! # Unchanged answers
//!
//! Sessions run back to back for `--watch-duration` seconds (one client, `--runs` runs per
//! kind, interleaved), each over a new git:// connection: request head, advertisement, one
//! `ls-refs` with `peel`, `symrefs`, `ref-prefix refs/heads/` and `ref-prefix refs/tags/` (what
//! an up-to-date `git fetch` 2.47 sends, and all it sends), then the flush that ends the session:
//!
//! - packgate, `if-none-match <token>` of that listing: the answer must be `unchanged <token>`;
//! - packgate, the full listing (checked: exactly `git for-each-ref`'s refs);
//! - git daemon, the same full listing: git's no-op fetch;
//! - packgate, `if-none-match` again and again on one session (no connection per request).
//!
//! Reported: requests per second (median) and the server's CPU per request (user+system of
//! `/proc/PID/stat` around the run, git daemon with the children it reaped), and how many
//! times cheaper than git's no-op fetch in CPU. Target: unchanged ≥ 50× cheaper.
//!
//! # Waiters
//!
//! `--waiters N` (default 10,000) git:// connections to packgate each send `wait-refs` with
//! `since` the token of `ref-prefix refs/heads/watch/` (no ref yet) and a 600 s timeout, and
//! wait. The server's RSS is read before the first and with all waiting (then a moment to
//! settle); per waiter = (after − before) / N. Then `git push` over packgate's HTTP creates
//! `refs/heads/watch/x` (a commit the server has), and the client reads every connection
//! (non-blocking, polled) until each has its whole `changed` answer, which must name the new
//! ref. Reported: the time from the push's start to the last answer, the push's own time
//! (its 50,000-ref advertisement included), the time from the push's end (`git push`
//! returned: the ref has moved) to the last answer, and the time from the first answer to
//! the last (the fan-out once the ref moved). Targets: ≤ 10 KiB per waiter, all answered
//! within 1 s of the ref moving (push end → last answer).
//!
//! `--http-waiters N` (default 10,000; 0: none) do the same over HTTP: each connection sends
//! `GET /watch.git/refs?since=<token>&prefix=refs/heads/watch-http/&wait=600` (a long-poll,
//! `Connection: close`), and the push creates `refs/heads/watch-http/x`; an answer is whole
//! when the server closes the connection after it, and must name the new ref.
//! `--sse-waiters N` (default 10,000; 0: none) the same as event streams (`Accept:
//! text/event-stream`, on `refs/heads/watch-sse/`): the response head arrives at once and is
//! read before the memory is measured; an answer is whole at its event's empty line.
//!
//! The open-files limit is raised to its hard limit (`prlimit`) when N needs it; the server
//! inherits it.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufReader, ErrorKind, Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use packgate_wire::pkt_line;

use super::server::{
    clock_ticks, command_start, connect_with_timeout, cpu_seconds, free_port, memory, pkt,
    read_advertisement, read_until_flush, settle, Memory, RunningServer,
};
use super::{
    build_fixture, build_packgate, copy_dir,
    git::{path_str, Git},
    measure::median,
    refs::many_refs_copy,
    results::{load_average, ServerSection},
    target_dir, workspace_root, BenchArgs,
};

/// The name the repository is served under, below the root.
const REPO: &str = "watch.git";
/// The prefixes of the listing compared (an up-to-date `git fetch`'s).
const PREFIXES: [&str; 2] = ["refs/heads/", "refs/tags/"];
/// The prefix the waiters watch, and the ref the push creates below it.
const WATCHED: &str = "refs/heads/watch/";
const PUSHED: &str = "refs/heads/watch/x";
/// The same for the HTTP long-poll waiters.
const HTTP_WATCHED: &str = "refs/heads/watch-http/";
const HTTP_PUSHED: &str = "refs/heads/watch-http/x";
/// The same for the HTTP event-stream waiters.
const SSE_WATCHED: &str = "refs/heads/watch-sse/";
const SSE_PUSHED: &str = "refs/heads/watch-sse/x";

/// How an HTTP waiter waits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HttpWait {
    /// `GET <repo>/refs?since=…&wait=…`: one JSON answer, then the server closes.
    LongPoll,
    /// The same with `Accept: text/event-stream`: the head at once, then an event per change.
    Events,
}

impl HttpWait {
    fn watched(self) -> &'static str {
        match self {
            HttpWait::LongPoll => HTTP_WATCHED,
            HttpWait::Events => SSE_WATCHED,
        }
    }

    fn pushed(self) -> &'static str {
        match self {
            HttpWait::LongPoll => HTTP_PUSHED,
            HttpWait::Events => SSE_PUSHED,
        }
    }

    fn label(self) -> &'static str {
        match self {
            HttpWait::LongPoll => "HTTP long-poll waiters",
            HttpWait::Events => "HTTP event-stream waiters",
        }
    }
}
/// Read and write timeout of the client sockets.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// The bound on waiting for all waiters' answers.
const ANSWER_LIMIT: Duration = Duration::from_secs(60);
/// Most requests of one rate run.
const MAX_REQUESTS: usize = 1_000_000;

/// Options of `cargo xtask bench watch`.
#[derive(clap::Args)]
pub(super) struct WatchArgs {
    /// watch: how many clients wait with `wait-refs` at once.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    waiters: usize,
    /// watch: how many HTTP clients long-poll `GET <repo>/refs` at once (0: none).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    http_waiters: usize,
    /// watch: how many HTTP clients wait in an event stream of `GET <repo>/refs` at once
    /// (0: none).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    sse_waiters: usize,
    /// watch: seconds of each request-rate run.
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0)]
    watch_duration: f64,
}

/// One kind of request measured for its rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Unchanged,
    UnchangedOneSession,
    Full,
    GitNoopFetch,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Unchanged => "packgate: ls-refs if-none-match → unchanged (a session each)",
            Kind::UnchangedOneSession => {
                "packgate: ls-refs if-none-match → unchanged (one session)"
            }
            Kind::Full => "packgate: full ls-refs (a session each)",
            Kind::GitNoopFetch => "git daemon: no-op fetch's ls-refs (a session each)",
        }
    }
}

/// Runs `cargo xtask bench watch`.
pub(super) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let options = &args.watch;
    ensure!(options.waiters > 0, "--waiters must be at least 1");
    ensure!(
        options.watch_duration > 0.0 && options.watch_duration <= 600.0,
        "--watch-duration must be between 0 and 600 seconds"
    );
    // An HTTP connection holds a second descriptor in the server (its peeking probe).
    raise_open_files(
        options
            .waiters
            .max(options.http_waiters)
            .max(options.sse_waiters)
            + 512,
    )?;
    let load_before = load_average();
    let root = workspace_root();
    let target = target_dir(&root);
    let git = Git { program: &args.git };
    let packgate = match &args.packgate {
        Some(path) => path.clone(),
        None => build_packgate(&root, &target)?,
    };
    let built = build_fixture(args, &target)?;
    let many = many_refs_copy(&git, &built.path)?;
    let work = target.join(format!("bench-work-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    let repos = work.join("root");
    copy_dir(&many, &repos.join(REPO))?;
    let result = measure(args, &git, &packgate, &work, &repos, &many);
    let _ = fs::remove_dir_all(&work);
    let (tables, commands) = result?;
    let load_after = load_average();
    println!("{tables}");
    eprintln!("bench: load average before {load_before}, after {load_after}");
    if !args.no_record {
        let file_name = many
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        ServerSection {
            title: "watch",
            preset: args.preset(),
            fixture: &format!(
                "`{file_name}` (preset `{}` with 50,000 more refs, packed)",
                args.preset()
            ),
            built: &built,
            repo: REPO,
            commands: &commands,
            lines: &[
                format!(
                    "load average (1/5/15 min, shared machine): {load_before} before, \
                     {load_after} after"
                ),
                format!(
                    "rates: one client, sessions back to back for {} s, {} runs per kind \
                     (median); each `ls-refs` has `peel`, `symrefs`, `ref-prefix refs/heads/`, \
                     `ref-prefix refs/tags/` (an up-to-date `git fetch`); CPU is the server's \
                     user+system time per request (git daemon: with its children)",
                    options.watch_duration, args.runs
                ),
                format!(
                    "waiters: {} git:// connections each waiting in `wait-refs` on \
                     `{WATCHED}`; memory is the server's RSS; then `git push` over HTTP \
                     creates `{PUSHED}`",
                    options.waiters
                ),
                format!(
                    "HTTP waiters: {} connections each long-polling `GET {REPO}/refs` on \
                     `{HTTP_WATCHED}`; then `git push` over HTTP creates `{HTTP_PUSHED}`",
                    options.http_waiters
                ),
                format!(
                    "HTTP event-stream waiters: {} connections each waiting in `GET \
                     {REPO}/refs` with `Accept: text/event-stream` on `{SSE_WATCHED}` (the \
                     response head has arrived); then `git push` over HTTP creates \
                     `{SSE_PUSHED}`",
                    options.sse_waiters
                ),
            ],
            tables: &tables,
        }
        .append(&git, &root)?;
    }
    eprintln!("bench: done in {:.1?}", started.elapsed());
    Ok(())
}

/// Raise the soft open-files limit of this process (and so of the servers it starts) to at
/// least `needed`, up to the hard limit.
fn raise_open_files(needed: usize) -> anyhow::Result<()> {
    let limits = |which: usize| -> anyhow::Result<Option<usize>> {
        let text = fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
        let value = text
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .and_then(|line| line.split_whitespace().nth(which))
            .context("no `Max open files` in /proc/self/limits")?;
        Ok(value.parse::<usize>().ok())
    };
    let (Some(soft), hard) = (limits(3)?, limits(4)?) else {
        return Ok(());
    };
    if soft >= needed {
        return Ok(());
    }
    let hard_text = hard.map_or_else(|| "unlimited".to_owned(), |hard| hard.to_string());
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={hard_text}:{hard_text}"))
        .status()
        .context("running prlimit to raise the open-files limit")?;
    ensure!(status.success(), "prlimit failed ({status})");
    let soft = limits(3)?.unwrap_or(usize::MAX);
    ensure!(
        soft >= needed,
        "the open-files limit is {soft} even raised to the hard limit; {needed} are needed \
         (give fewer --waiters)"
    );
    Ok(())
}

/// Both servers started, measured; the tables and the servers' command lines.
fn measure(
    args: &BenchArgs,
    git: &Git<'_>,
    packgate: &Path,
    work: &Path,
    repos: &Path,
    source: &Path,
) -> anyhow::Result<(String, Vec<String>)> {
    let options = &args.watch;
    let repos_str = path_str(repos)?;
    let expected = expected_count(git, source)?;
    let config = work.join("serve.toml");
    fs::write(
        &config,
        format!(
            "[git]\nmax-connections = {}\nmax-waiting-connections = {}\n\
             max-waiting-per-address = {}\ntimeout = 600\n\
             [http]\nmax-connections = {http}\nmax-waiting-connections = {http}\n\
             max-waiting-per-address = {http}\ntimeout = 900\n",
            options.waiters + 64,
            options.waiters + 64,
            options.waiters + 64,
            http = options.http_waiters.max(options.sse_waiters) + 64,
        ),
    )?;
    let git_port = free_port()?;
    let http_port = free_port()?;
    let packgate_args = vec![
        "serve".to_owned(),
        "--config".to_owned(),
        path_str(&config)?,
        "--git".to_owned(),
        format!("127.0.0.1:{git_port}"),
        "--http".to_owned(),
        format!("127.0.0.1:{http_port}"),
        "--http-allow-push-without-auth".to_owned(),
        repos_str.clone(),
    ];
    let packgate_server = RunningServer::start(
        packgate,
        &packgate_args,
        &work.join("packgate.log"),
        git_port,
    )?;
    let daemon_port = free_port()?;
    let daemon_args = vec![
        "daemon".to_owned(),
        "--reuseaddr".to_owned(),
        "--listen=127.0.0.1".to_owned(),
        format!("--port={daemon_port}"),
        format!("--base-path={repos_str}"),
        "--export-all".to_owned(),
        "--max-connections=0".to_owned(),
        repos_str.clone(),
    ];
    let git_server = RunningServer::start(
        git.program,
        &daemon_args,
        &work.join("git-daemon.log"),
        daemon_port,
    )?;
    let commands = vec![
        format!("packgate {}", packgate_args.join(" ")),
        format!("git {}", daemon_args.join(" ")),
    ];
    let ticks = clock_ticks();

    // The requests, from each server's advertisement; the token of the listing.
    let capabilities = advertisement(packgate_server.addr)?;
    ensure!(
        capabilities
            .iter()
            .any(|c| c.starts_with("ls-refs=") && c.split([' ', '=']).any(|f| f == "refs-token")),
        "packgate advertises no refs-token: {capabilities:?}"
    );
    ensure!(
        capabilities.iter().any(|c| c == "wait-refs"),
        "packgate advertises no wait-refs: {capabilities:?}"
    );
    let git_capabilities = advertisement(git_server.addr)?;
    let token_lines = one_session(
        packgate_server.addr,
        &ls_refs(&capabilities, &["refs-token"], &PREFIXES)?,
    )?;
    let token = token_lines
        .first()
        .and_then(|line| line.strip_prefix("refs-token "))
        .context("no refs-token line")?
        .to_owned();
    ensure!(
        token_lines.len() == expected + 1,
        "ls-refs refs-token listed {} refs, {expected} expected",
        token_lines.len() - 1
    );
    let unchanged = ls_refs(
        &capabilities,
        &[&format!("if-none-match {token}")],
        &PREFIXES,
    )?;
    let full = ls_refs(&capabilities, &[], &PREFIXES)?;
    let git_full = ls_refs(&git_capabilities, &[], &PREFIXES)?;
    let unchanged_line = format!("unchanged {token}");
    let check_unchanged = |lines: &[String]| {
        ensure!(
            lines == [unchanged_line.as_str()],
            "not unchanged: {:?}",
            lines.first()
        );
        Ok(())
    };
    let check_full = |lines: &[String]| {
        ensure!(
            lines.len() == expected,
            "{} refs listed, {expected} expected",
            lines.len()
        );
        Ok(())
    };

    // Rates, interleaved.
    let kinds = [
        Kind::Unchanged,
        Kind::UnchangedOneSession,
        Kind::Full,
        Kind::GitNoopFetch,
    ];
    let mut rates: Vec<Vec<(f64, f64)>> = vec![Vec::new(); kinds.len()];
    for run in 0..=args.runs {
        for (index, &kind) in kinds.iter().enumerate() {
            let (server, request): (&RunningServer, &[u8]) = match kind {
                Kind::Unchanged | Kind::UnchangedOneSession => (&packgate_server, &unchanged),
                Kind::Full => (&packgate_server, &full),
                Kind::GitNoopFetch => (&git_server, &git_full),
            };
            let check: &dyn Fn(&[String]) -> anyhow::Result<()> = match kind {
                Kind::Unchanged | Kind::UnchangedOneSession => &check_unchanged,
                _ => &check_full,
            };
            settle(server);
            let cpu_before = cpu_seconds(server.pid, ticks);
            let started = Instant::now();
            let deadline = started + Duration::from_secs_f64(options.watch_duration);
            let count = if kind == Kind::UnchangedOneSession {
                many_in_one_session(server.addr, request, deadline, check)?
            } else {
                let mut count = 0;
                while Instant::now() < deadline && count < MAX_REQUESTS {
                    check(&one_session(server.addr, request)?)?;
                    count += 1;
                }
                count
            };
            let elapsed = started.elapsed().as_secs_f64();
            settle(server);
            let cpu = cpu_seconds(server.pid, ticks) - cpu_before;
            eprintln!(
                "bench: watch: {}: {count} requests in {elapsed:.2} s, {:.3} ms CPU each",
                kind.label(),
                cpu * 1000.0 / count.max(1) as f64
            );
            // Run 0 is the warm-up.
            if run > 0 {
                rates[index].push((count as f64 / elapsed, cpu / count.max(1) as f64));
            }
        }
    }
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| request ({expected} refs listed in full) | requests/s | server CPU per request | \
         × cheaper than git's no-op fetch |\n|---|---:|---:|---:|"
    );
    let summaries: Vec<(f64, f64)> = rates
        .iter()
        .map(|samples| {
            let mut rate: Vec<f64> = samples.iter().map(|s| s.0).collect();
            let mut cpu: Vec<f64> = samples.iter().map(|s| s.1).collect();
            (median(&mut rate), median(&mut cpu))
        })
        .collect();
    let git_cpu = summaries
        .iter()
        .zip(&kinds)
        .find(|(_, &kind)| kind == Kind::GitNoopFetch)
        .map_or(0.0, |(summary, _)| summary.1);
    for (summary, kind) in summaries.iter().zip(&kinds) {
        let ratio = if summary.1 > 0.0 {
            format!("{:.0}×", git_cpu / summary.1)
        } else {
            "below the clock's resolution".to_owned()
        };
        let _ = writeln!(
            table,
            "| {} | {:.0} | {:.1} µs | {ratio} |",
            kind.label(),
            summary.0,
            summary.1 * 1e6
        );
    }
    table.push('\n');

    // Waiters.
    let waiters = waiters(
        options.waiters,
        &packgate_server,
        &capabilities,
        source,
        git,
        http_port,
    )?;
    table.push_str(&waiters);
    for (count, wait) in [
        (options.http_waiters, HttpWait::LongPoll),
        (options.sse_waiters, HttpWait::Events),
    ] {
        if count > 0 {
            table.push('\n');
            table.push_str(&http_waiters(
                count,
                wait,
                &packgate_server,
                source,
                git,
                http_port,
            )?);
        }
    }
    Ok((table, commands))
}

/// The refs of `repo` under [`PREFIXES`].
fn expected_count(git: &Git<'_>, repo: &Path) -> anyhow::Result<usize> {
    let mut args = vec!["for-each-ref", "--format=%(refname)"];
    args.extend(PREFIXES);
    Ok(git.run(Some(repo), &args)?.lines().count())
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    connect_with_timeout(addr, IO_TIMEOUT)
}

/// The git:// request head of a protocol-v2 upload-pack of [`REPO`].
fn request_head() -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    pkt(
        &mut out,
        format!("git-upload-pack /{REPO}\0host=127.0.0.1\0\0version=2\0").as_bytes(),
    )?;
    Ok(out)
}

fn advertisement(addr: SocketAddr) -> anyhow::Result<Vec<String>> {
    let mut stream = connect(addr)?;
    stream.write_all(&request_head()?)?;
    let capabilities = read_advertisement(&mut BufReader::new(&stream))?;
    stream.write_all(b"0000")?;
    Ok(capabilities)
}

/// `ls-refs` with `peel`, `symrefs`, `extra` arguments and `prefixes`.
fn ls_refs(capabilities: &[String], extra: &[&str], prefixes: &[&str]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    command_start(&mut out, "ls-refs", capabilities)?;
    pkt(&mut out, b"peel\n")?;
    pkt(&mut out, b"symrefs\n")?;
    for line in extra {
        pkt(&mut out, format!("{line}\n").as_bytes())?;
    }
    for prefix in prefixes {
        pkt(&mut out, format!("ref-prefix {prefix}\n").as_bytes())?;
    }
    pkt_line::encode_flush(&mut out);
    Ok(out)
}

/// One session: advertisement, `request`, its answer's lines, the ending flush.
fn one_session(addr: SocketAddr, request: &[u8]) -> anyhow::Result<Vec<String>> {
    let stream = connect(addr)?;
    (&stream).write_all(&request_head()?)?;
    let mut reader = BufReader::new(&stream);
    read_advertisement(&mut reader)?;
    (&stream).write_all(request)?;
    let mut lines = Vec::new();
    read_until_flush(&mut reader, &mut lines)?;
    (&stream).write_all(b"0000")?;
    Ok(lines)
}

/// `request` again and again on one session until `deadline`: how many.
fn many_in_one_session(
    addr: SocketAddr,
    request: &[u8],
    deadline: Instant,
    check: &dyn Fn(&[String]) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let stream = connect(addr)?;
    (&stream).write_all(&request_head()?)?;
    let mut reader = BufReader::new(&stream);
    read_advertisement(&mut reader)?;
    let mut count = 0;
    let mut lines = Vec::new();
    while Instant::now() < deadline && count < MAX_REQUESTS {
        (&stream).write_all(request)?;
        lines.clear();
        read_until_flush(&mut reader, &mut lines)?;
        check(&lines)?;
        count += 1;
    }
    (&stream).write_all(b"0000")?;
    Ok(count)
}

/// One waiting client: its connection and what it has read of the answer.
struct Waiter {
    stream: TcpStream,
    read: Vec<u8>,
    answered: Option<Instant>,
}

/// Whether `bytes` hold a whole answer (up to its flush).
fn whole_answer(bytes: &[u8]) -> anyhow::Result<bool> {
    let mut rest = bytes;
    loop {
        match pkt_line::decode(rest) {
            Ok(pkt_line::Decoded::Complete { packet, consumed }) => {
                if packet == pkt_line::Packet::Flush {
                    return Ok(true);
                }
                rest = &rest[consumed..];
            }
            Ok(_) => return Ok(false),
            Err(err) => bail!("bad answer: {err}"),
        }
    }
}

/// The waiters' part: memory per waiter, and the time until all are answered after a push.
fn waiters(
    count: usize,
    server: &RunningServer,
    capabilities: &[String],
    source: &Path,
    git: &Git<'_>,
    http_port: u16,
) -> anyhow::Result<String> {
    let token_lines = one_session(
        server.addr,
        &ls_refs(capabilities, &["refs-token"], &[WATCHED])?,
    )?;
    let token = token_lines
        .first()
        .and_then(|line| line.strip_prefix("refs-token "))
        .context("no refs-token line")?
        .to_owned();
    let mut request = Vec::new();
    command_start(&mut request, "wait-refs", capabilities)?;
    pkt(&mut request, format!("since {token}\n").as_bytes())?;
    pkt(&mut request, format!("ref-prefix {WATCHED}\n").as_bytes())?;
    pkt(&mut request, b"timeout 600\n")?;
    pkt_line::encode_flush(&mut request);
    let head = request_head()?;

    settle(server);
    let before = memory(server.pid);
    eprintln!("bench: watch: opening {count} waiters…");
    let opening = Instant::now();
    let mut waiting = Vec::with_capacity(count);
    for _ in 0..count {
        let stream = connect(server.addr)?;
        (&stream).write_all(&head)?;
        read_advertisement(&mut BufReader::new(&stream))?;
        (&stream).write_all(&request)?;
        waiting.push(Waiter {
            stream,
            read: Vec::new(),
            answered: None,
        });
    }
    eprintln!("bench: watch: {count} waiters in {:.1?}", opening.elapsed());
    // A moment for the server to take every request in.
    std::thread::sleep(Duration::from_secs(2));
    let after = memory(server.pid);
    for waiter in &waiting {
        waiter.stream.set_nonblocking(true)?;
    }
    let mut early = 0;
    let mut buf = vec![0u8; 64 * 1024];
    for waiter in &mut waiting {
        match (&waiter.stream).read(&mut buf) {
            Ok(0) => bail!("the server closed a waiting connection"),
            Ok(_) => early += 1,
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(err) => return Err(err.into()),
        }
    }
    ensure!(early == 0, "{early} waiters were answered before the push");

    // The push: a commit the server has, to a new ref below the watched prefix.
    let commit = git.run(Some(source), &["rev-parse", "HEAD~1"])?;
    let url = format!("http://127.0.0.1:{http_port}/{REPO}");
    let pushed = Instant::now();
    let push = git
        .run(
            Some(source),
            &["push", "-q", &url, &format!("{}:{PUSHED}", commit.trim())],
        )
        .context("git push")?;
    let push_time = pushed.elapsed();
    let _ = push;
    await_answers(&mut waiting, pushed, "waiters", |read, closed| {
        ensure!(
            !closed,
            "the server closed a waiting connection before answering"
        );
        whole_answer(read)
    })?;
    for waiter in &waiting {
        let text = String::from_utf8_lossy(&waiter.read);
        ensure!(
            text.contains("changed ") && text.contains(PUSHED),
            "an answer without the change: {text:?}"
        );
    }
    Ok(answers_table(
        "waiters", &waiting, &before, &after, pushed, push_time,
    ))
}

/// `GET <path>` over HTTP/1.1 with `Connection: close`.
fn http_request(port: u16, path: &str) -> Vec<u8> {
    http_request_with(port, path, "")
}

/// [`http_request`] with more header lines (each ending in CRLF).
fn http_request_with(port: u16, path: &str, headers: &str) -> Vec<u8> {
    format!(
        "GET /{REPO}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Connection: \
         close\r\n\r\n"
    )
    .into_bytes()
}

/// The `"token"` of a JSON answer of `GET <repo>/refs`.
fn json_token(answer: &str) -> anyhow::Result<String> {
    let start = answer
        .find("\"token\":\"")
        .context("no token in the answer")?
        + "\"token\":\"".len();
    Ok(answer[start..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect())
}

/// The HTTP waiters' part: as [`waiters`], with long-polls of `GET <repo>/refs`.
fn http_waiters(
    count: usize,
    wait: HttpWait,
    server: &RunningServer,
    source: &Path,
    git: &Git<'_>,
    http_port: u16,
) -> anyhow::Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], http_port));
    let stream = connect(addr)?;
    (&stream).write_all(&http_request(
        http_port,
        &format!("/refs?prefix={}", wait.watched()),
    ))?;
    let mut answer = String::new();
    (&stream).read_to_string(&mut answer)?;
    ensure!(answer.starts_with("HTTP/1.1 200"), "GET refs: {answer}");
    let token = json_token(&answer)?;
    let request = http_request_with(
        http_port,
        &format!("/refs?since={token}&prefix={}&wait=600", wait.watched()),
        match wait {
            HttpWait::LongPoll => "",
            HttpWait::Events => "Accept: text/event-stream\r\n",
        },
    );
    let label = wait.label();

    settle(server);
    let before = memory(server.pid);
    eprintln!("bench: watch: opening {count} {label}…");
    let opening = Instant::now();
    let mut waiting = Vec::with_capacity(count);
    for _ in 0..count {
        let stream = connect(addr)?;
        (&stream).write_all(&request)?;
        waiting.push(Waiter {
            stream,
            read: Vec::new(),
            answered: None,
        });
    }
    eprintln!("bench: watch: {count} {label} in {:.1?}", opening.elapsed());
    // An event stream's head comes at once: read it before the memory is measured.
    if wait == HttpWait::Events {
        for waiter in &mut waiting {
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                ensure!(
                    (&waiter.stream).read(&mut byte)? == 1,
                    "an event stream closed before its head"
                );
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head);
            ensure!(
                head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream"),
                "not an event stream: {head}"
            );
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = memory(server.pid);
    for waiter in &waiting {
        waiter.stream.set_nonblocking(true)?;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut early = 0;
    for waiter in &mut waiting {
        match (&waiter.stream).read(&mut buf) {
            // An event stream's keepalive comments (every 15 s) are no answer.
            Ok(n) if wait == HttpWait::Events && n > 0 => {
                waiter.read.extend_from_slice(&buf[..n]);
                if whole_event(&waiter.read) {
                    early += 1;
                }
            }
            Ok(_) => early += 1,
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(err) => return Err(err.into()),
        }
    }
    ensure!(early == 0, "{early} {label} were answered before the push");

    let commit = git.run(Some(source), &["rev-parse", "HEAD~1"])?;
    let url = format!("http://127.0.0.1:{http_port}/{REPO}");
    let pushed = Instant::now();
    git.run(
        Some(source),
        &[
            "push",
            "-q",
            &url,
            &format!("{}:{}", commit.trim(), wait.pushed()),
        ],
    )
    .context("git push")?;
    let push_time = pushed.elapsed();
    await_answers(&mut waiting, pushed, label, |read, closed| match wait {
        // The server closes the connection after a long-poll's answer.
        HttpWait::LongPoll => Ok(closed),
        HttpWait::Events => {
            ensure!(!closed, "the server closed an event stream");
            Ok(whole_event(read))
        }
    })?;
    for waiter in &waiting {
        let text = String::from_utf8_lossy(&waiter.read);
        let whole = match wait {
            HttpWait::LongPoll => text.starts_with("HTTP/1.1 200"),
            HttpWait::Events => text.contains("event: refs"),
        };
        ensure!(
            whole && text.contains("\"changed\":true") && text.contains(wait.pushed()),
            "an HTTP answer without the change: {text:?}"
        );
    }
    Ok(answers_table(
        label, &waiting, &before, &after, pushed, push_time,
    ))
}

/// Whether an event stream's bytes hold a whole `refs` event (it ends at an empty line);
/// keepalive comments do not count.
fn whole_event(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    text.find("event: refs")
        .is_some_and(|at| text[at..].contains("\n\n"))
}

/// Read every waiter until it is answered (bounded by [`ANSWER_LIMIT`] from `pushed`):
/// `answered` is told what a waiter has read so far and whether the server closed its
/// connection, and says whether that is a whole answer.
fn await_answers(
    waiting: &mut [Waiter],
    pushed: Instant,
    label: &str,
    mut answered: impl FnMut(&[u8], bool) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let count = waiting.len();
    let mut left = count;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        ensure!(
            pushed.elapsed() < ANSWER_LIMIT,
            "{left} of {count} {label} not answered after {ANSWER_LIMIT:?}"
        );
        for waiter in waiting.iter_mut().filter(|w| w.answered.is_none()) {
            let closed = match (&waiter.stream).read(&mut buf) {
                Ok(0) => true,
                Ok(n) => {
                    waiter.read.extend_from_slice(&buf[..n]);
                    false
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err.into()),
            };
            if answered(&waiter.read, closed)? {
                waiter.answered = Some(Instant::now());
                left -= 1;
            }
        }
    }
    Ok(())
}

/// The table of one kind of waiter: memory before and with them, and when they were answered
/// (`pushed`: when the push started; `push_time`: how long it took).
fn answers_table(
    label: &str,
    waiting: &[Waiter],
    before: &Memory,
    after: &Memory,
    pushed: Instant,
    push_time: Duration,
) -> String {
    let count = waiting.len();
    let answered = || waiting.iter().filter_map(|w| w.answered);
    let last = answered().max().unwrap_or(pushed);
    let first = answered().min().unwrap_or(pushed);
    let per_waiter = (after.rss_kib.saturating_sub(before.rss_kib)) as f64 / count as f64;
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| {label} | server RSS before | with waiters | per waiter | threads before → with \
         waiters | push (`git push` over HTTP) | push start → last waiter answered | push end \
         → last answer | first → last answer |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let _ = writeln!(
        table,
        "| {count} | {:.1} MiB | {:.1} MiB | {per_waiter:.2} KiB | {} → {} | {:.0} ms | {:.0} ms \
         | {:.0} ms | {:.0} ms |",
        before.rss_kib as f64 / 1024.0,
        after.rss_kib as f64 / 1024.0,
        before.threads,
        after.threads,
        push_time.as_secs_f64() * 1000.0,
        last.duration_since(pushed).as_secs_f64() * 1000.0,
        after_push(last, pushed + push_time),
        last.duration_since(first).as_secs_f64() * 1000.0
    );
    table
}

/// Milliseconds from the push's end (when `git push` returned: the ref had moved) to
/// `last`; negative when the last answer came before the push returned.
fn after_push(last: Instant, push_end: Instant) -> f64 {
    match last.checked_duration_since(push_end) {
        Some(after) => after.as_secs_f64() * 1000.0,
        None => -(push_end.duration_since(last).as_secs_f64() * 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_whole_at_its_empty_line_and_keepalives_are_none() {
        assert!(!whole_event(b": keepalive\n\n"));
        assert!(!whole_event(
            b": keepalive\n\nid: 01\nevent: refs\ndata: {}\n"
        ));
        assert!(whole_event(
            b": keepalive\n\nid: 01\nevent: refs\ndata: {}\n\n"
        ));
    }

    #[test]
    fn an_answer_is_whole_at_its_flush() -> anyhow::Result<()> {
        let mut bytes = Vec::new();
        pkt(&mut bytes, b"changed 0123\n")?;
        assert!(!whole_answer(&bytes)?);
        assert!(!whole_answer(&bytes[..3])?);
        pkt_line::encode_flush(&mut bytes);
        assert!(whole_answer(&bytes)?);
        Ok(())
    }
}
