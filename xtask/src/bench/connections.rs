//! `cargo xtask bench connections`: what an idle git:// connection costs the server, and how
//! many short git:// sessions it serves per second, packgate against `git daemon` serving the
//! same repository in the same run.
//!
//! Both servers listen on 127.0.0.1 (a free port each) and serve one copy of the fixture
//! (`many-refs` by default: about 10,000 refs, so that a `ref-prefix` matters) under a root
//! directory:
//!
//! - `git daemon --reuseaddr --listen=127.0.0.1 --port=P --base-path=ROOT --export-all
//!   --max-connections=0 ROOT`;
//! - `packgate daemon` with the same flags, or, with a packgate binary that has no `daemon`
//!   command yet, `packgate serve ROOT --git 127.0.0.1:P --http off` (which keeps its default
//!   connection cap). The section in `benches/RESULTS.md` says which.
//!
//! Every client socket has connect, read and write timeouts, and every loop is bounded in
//! time and count. Each server first gets one checked `ls-refs` session (the warm-up), then:
//!
//! # Idle connections
//!
//! `--connections N` (default 1000) connections are opened in batches; on each the client
//! sends the git:// request head of a protocol-v2 upload-pack
//! (`git-upload-pack /<repo>\0host=127.0.0.1\0\0version=2\0`) and reads the capability
//! advertisement up to its flush, then leaves the connection alone: a client between two
//! commands. The server's memory is read before the first connection and once all are open:
//! RSS and PSS from `/proc/PID/smaps_rollup`, summed over the server process and all its
//! descendants (git daemon forks a `git daemon --serve` per connection, which runs
//! `git upload-pack`; PSS counts their shared pages once in total, RSS once per process). The
//! cost per connection is (after − before) / connections that got their advertisement. The
//! table also gives the threads (packgate) and processes (git) with the connections open,
//! and how many connections the server closed or never answered (a connection cap).
//!
//! # ls-refs rate
//!
//! `--concurrency C` (default 8) client threads each run sessions back to back for
//! `--duration` seconds (default 5; at most `--max-sessions` sessions per run): connect, send
//! the request head, read the advertisement, send `command=ls-refs` (with `agent` and
//! `object-format` when advertised, as git does) with `peel`, `symrefs` and
//! `ref-prefix <--ref-prefix>`, read the response to its flush and check it lists exactly
//! the fixture's refs under the prefix, send a flush to end the session and read until the
//! server closes. `--runs` runs per server, interleaved. Reported: completed sessions per
//! second (median, min–max) and the server's CPU time per session (user+system from
//! `/proc/PID/stat`; for git daemon including its children, which it reaps).
//!
//! The client runs on the same machine as the servers and takes its own share of the CPUs,
//! alike for both.
//!
//! The long-running servers, their process tree, memory and CPU read from `/proc`, and the
//! client's pkt-line reading are in [`super::server`], shared with [`super::clone_server`].

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use packgate_wire::pkt_line;

use super::server::{
    clock_ticks, command_start, connect_with_timeout, cpu_seconds, free_port, memory, pkt,
    read_advertisement, read_until_flush, settle, stat_fields, Memory, RunningServer,
};
mod soak;
pub(super) use soak::run as run_soak;

use super::{
    build_fixture, build_packgate, copy_dir,
    git::{path_str, Git},
    measure::median,
    results::{load_average, ServerSection},
    target_dir, workspace_root, BenchArgs, AGENT,
};

/// The name the fixture is served under, below the root.
const REPO: &str = "many-refs.git";

/// Read and write timeout of every client socket.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections opened (heads sent) before their advertisements are read: fewer than git
/// daemon's listen backlog of 5, so that no connection waits for a SYN retransmission.
const BATCH: usize = 4;

/// After this many failed sessions a rate client thread gives up.
const MAX_FAILURES_PER_THREAD: usize = 50;

/// Options of `cargo xtask bench connections`.
#[derive(clap::Args)]
pub(super) struct ConnectionArgs {
    /// connections: how many idle git:// connections to hold open at once.
    #[arg(long = "connections", value_name = "N", default_value_t = 1000)]
    idle_connections: usize,
    /// connections: client threads running `ls-refs` sessions at once.
    #[arg(long, value_name = "C", default_value_t = 8)]
    concurrency: usize,
    /// connections: seconds of each `ls-refs` rate run.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    duration: f64,
    /// connections: stop a rate run after this many sessions (default: only --duration).
    #[arg(long, value_name = "M")]
    max_sessions: Option<usize>,
    /// connections: the `ref-prefix` of each `ls-refs`; it should match a few refs of the
    /// fixture.
    #[arg(long, value_name = "PREFIX", default_value = "refs/heads/many/0000")]
    ref_prefix: String,
}

/// How packgate is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PackgateMode {
    /// `packgate daemon` with git daemon's flags.
    Daemon,
    /// `packgate serve ROOT --git ADDR --http off`, for binaries without `daemon`.
    Serve,
}

/// One server under test.
struct Target {
    label: &'static str,
    is_packgate: bool,
    /// The command line, for the record.
    command: String,
    server: RunningServer,
    /// The `ls-refs` request built from its advertisement.
    request: Vec<u8>,
}

/// Runs `cargo xtask bench connections`.
pub(super) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let options = &args.connections;
    ensure!(
        options.idle_connections > 0,
        "--connections must be at least 1"
    );
    ensure!(
        options.concurrency > 0 && options.concurrency <= 256,
        "--concurrency must be between 1 and 256"
    );
    ensure!(
        options.duration > 0.0 && options.duration <= 600.0,
        "--duration must be between 0 and 600 seconds"
    );
    check_open_files(options.idle_connections)?;
    let load_before = load_average();
    let root = workspace_root();
    let target = target_dir(&root);
    let git = Git { program: &args.git };
    let packgate = match &args.packgate {
        Some(path) => path.clone(),
        None => build_packgate(&root, &target)?,
    };
    let mode = packgate_mode(&packgate);
    eprintln!("bench: connections: packgate mode {mode:?}");
    let built = build_fixture(args, &target)?;

    let expected = expected_refs(&git, &built.path, &options.ref_prefix)?;
    ensure!(
        !expected.is_empty(),
        "no ref of {} starts with {:?}; choose another --ref-prefix",
        built.path.display(),
        options.ref_prefix
    );
    eprintln!(
        "bench: connections: {} refs start with {}",
        expected.len(),
        options.ref_prefix
    );

    let work = target.join(format!("bench-work-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    let repos = work.join("root");
    copy_dir(&built.path, &repos.join(REPO))?;
    let result = measure(args, &git, &packgate, mode, &work, &repos, &expected);
    let _ = fs::remove_dir_all(&work);
    let (tables, commands) = result?;
    let load_after = load_average();

    println!("{tables}");
    eprintln!("bench: load average before {load_before}, after {load_after}");
    if !args.no_record {
        let file_name = built
            .path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        ServerSection {
            title: "connections",
            preset: args.preset(),
            fixture: &format!(
                "`{file_name}` (preset `{}`, `git repack -ad`)",
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
                    "idle: {} git:// connections opened in batches of {BATCH}, each sent a v2 \
                     upload-pack request head and read its advertisement, then left open; server \
                     memory from `/proc/PID/smaps_rollup` summed over the server and its \
                     descendants; per connection = (after − before) / connections advertised",
                    options.idle_connections
                ),
                format!(
                    "ls-refs: {} client threads, {} runs of {} s per server, interleaved; each \
                     session connects, reads the advertisement, sends `ls-refs` with `peel`, \
                     `symrefs`, `ref-prefix {}` ({} refs, checked), a flush, and reads until the \
                     server closes; CPU is the server's user+system time (git: with its children) \
                     per session",
                    options.concurrency,
                    args.runs,
                    options.duration,
                    options.ref_prefix,
                    expected.len()
                ),
            ],
            tables: &tables,
        }
        .append(&git, &root)?;
    }
    eprintln!("bench: done in {:.1?}", started.elapsed());
    Ok(())
}

/// Starts both servers and measures them; returns the tables and the server command lines.
fn measure(
    args: &BenchArgs,
    git: &Git<'_>,
    packgate: &Path,
    mode: PackgateMode,
    work: &Path,
    repos: &Path,
    expected: &[String],
) -> anyhow::Result<(String, Vec<String>)> {
    let options = &args.connections;
    let targets = start_targets(
        git,
        packgate,
        mode,
        work,
        repos,
        &options.ref_prefix,
        expected,
    )?;
    measure_targets(args, targets, expected)
}

/// Starts packgate and git daemon on the fixture below `repos`, each checked with one
/// `ls-refs` session (the warm-up).
fn start_targets(
    git: &Git<'_>,
    packgate: &Path,
    mode: PackgateMode,
    work: &Path,
    repos: &Path,
    ref_prefix: &str,
    expected: &[String],
) -> anyhow::Result<Vec<Target>> {
    let repos_str = path_str(repos)?;
    let mut targets = Vec::new();
    for is_packgate in [true, false] {
        let port = free_port()?;
        let daemon_flags = vec![
            "--reuseaddr".to_owned(),
            "--listen=127.0.0.1".to_owned(),
            format!("--port={port}"),
            format!("--base-path={repos_str}"),
            "--export-all".to_owned(),
            "--max-connections=0".to_owned(),
            repos_str.clone(),
        ];
        let (label, program, arguments) = if is_packgate {
            let arguments = match mode {
                PackgateMode::Daemon => [vec!["daemon".to_owned()], daemon_flags].concat(),
                PackgateMode::Serve => vec![
                    "serve".to_owned(),
                    repos_str.clone(),
                    "--git".to_owned(),
                    format!("127.0.0.1:{port}"),
                    "--http".to_owned(),
                    "off".to_owned(),
                ],
            };
            ("packgate", packgate.to_owned(), arguments)
        } else {
            let arguments = [vec!["daemon".to_owned()], daemon_flags].concat();
            ("git daemon", git.program.to_owned(), arguments)
        };
        let log = work.join(format!("{}.log", label.replace(' ', "-")));
        let server = RunningServer::start(&program, &arguments, &log, port)?;
        let command = format!(
            "{} {}",
            program
                .file_name()
                .map_or_else(String::new, |name| name.to_string_lossy().into_owned()),
            arguments.join(" ")
        );
        eprintln!("bench: connections: {command} (pid {})", server.pid);
        // The warm-up: one checked session, whose advertisement shapes the request.
        let capabilities =
            advertisement(server.addr).with_context(|| format!("{label}: first advertisement"))?;
        let request = ls_refs_request(&capabilities, ref_prefix)
            .with_context(|| format!("{label}: advertisement {capabilities:?}"))?;
        ls_refs_session(server.addr, &request, expected)
            .with_context(|| format!("{label}: the checked ls-refs session"))?;
        targets.push(Target {
            label,
            is_packgate,
            command,
            server,
            request,
        });
    }
    Ok(targets)
}

/// The idle and rate measurements of [`run()`].
fn measure_targets(
    args: &BenchArgs,
    targets: Vec<Target>,
    expected: &[String],
) -> anyhow::Result<(String, Vec<String>)> {
    let options = &args.connections;
    let mut idle = Vec::new();
    for target in &targets {
        settle(&target.server);
        eprintln!(
            "bench: connections: {}: opening {} idle connections…",
            target.label, options.idle_connections
        );
        let result = hold_idle(target, options.idle_connections, &request_head()?);
        settle(&target.server);
        idle.push(result);
    }

    let mut rates: Vec<Vec<RateSample>> = targets.iter().map(|_| Vec::new()).collect();
    for run in 0..args.runs {
        for (index, target) in targets.iter().enumerate() {
            let sample = rate_run(target, options, expected);
            eprintln!(
                "bench: connections: ls-refs run {}/{} {}: {} sessions in {:.2?} ({:.0}/s), \
                 {} failed",
                run + 1,
                args.runs,
                target.label,
                sample.sessions,
                sample.elapsed,
                sample.rate(),
                sample.failures
            );
            rates[index].push(sample);
            settle(&target.server);
        }
    }

    for target in &targets {
        target.server.check_alive()?;
    }
    let mut tables = idle_table(&targets, &idle);
    tables.push_str(&rate_table(&targets, &rates, expected.len()));
    let commands = targets.iter().map(|t| t.command.clone()).collect();
    Ok((tables, commands))
}

/// `daemon` if this packgate has it, else `serve`.
fn packgate_mode(packgate: &Path) -> PackgateMode {
    let status = Command::new(packgate)
        .args(["daemon", "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => PackgateMode::Daemon,
        _ => PackgateMode::Serve,
    }
}

/// Fails unless this process (and the servers it starts, which inherit the limit) may open
/// enough files for `connections` sockets.
fn check_open_files(connections: usize) -> anyhow::Result<()> {
    let limits = fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .context("no `Max open files` in /proc/self/limits")?;
    let needed = connections + 256;
    if let Ok(soft) = soft.parse::<usize>() {
        ensure!(
            soft >= needed,
            "the open files limit is {soft}, {connections} connections need about {needed}: \
             raise it with `ulimit -n {needed}` (or give fewer --connections)"
        );
    }
    Ok(())
}

/// The refs of `repo` that start with `prefix`, as `<oid> <name>` lines, sorted.
fn expected_refs(git: &Git<'_>, repo: &Path, prefix: &str) -> anyhow::Result<Vec<String>> {
    let out = git.run(
        Some(repo),
        &["for-each-ref", "--format=%(objectname) %(refname)"],
    )?;
    let mut refs: Vec<String> = out
        .lines()
        .filter(|line| {
            line.split_once(' ')
                .is_some_and(|(_, name)| name.starts_with(prefix))
        })
        .map(str::to_owned)
        .collect();
    refs.sort();
    Ok(refs)
}

// ---------------------------------------------------------------------------------------
// The client side.

/// A connected client socket with timeouts.
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

/// One connection's advertisement.
fn advertisement(addr: SocketAddr) -> anyhow::Result<Vec<String>> {
    let mut stream = connect(addr)?;
    stream.write_all(&request_head()?)?;
    let capabilities = read_advertisement(&mut BufReader::new(&stream))?;
    stream.write_all(b"0000")?;
    Ok(capabilities)
}

/// `command=ls-refs` as git 2.47 sends it to a server with `capabilities`.
fn ls_refs_request(capabilities: &[String], prefix: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    command_start(&mut out, "ls-refs", capabilities)?;
    pkt(&mut out, b"peel\n")?;
    pkt(&mut out, b"symrefs\n")?;
    pkt(&mut out, format!("ref-prefix {prefix}\n").as_bytes())?;
    pkt_line::encode_flush(&mut out);
    Ok(out)
}

/// One whole session: advertisement, the `ls-refs` request, its response checked against
/// `expected`, a flush, and the server's close.
fn ls_refs_session(addr: SocketAddr, request: &[u8], expected: &[String]) -> anyhow::Result<()> {
    let stream = connect(addr)?;
    (&stream).write_all(&request_head()?)?;
    let mut reader = BufReader::new(&stream);
    read_advertisement(&mut reader)?;
    (&stream).write_all(request)?;
    let mut lines = Vec::new();
    read_until_flush(&mut reader, &mut lines)?;
    // `<oid> <name>[ symref-target:…][ peeled:…]`: compare the first two fields.
    let mut refs: Vec<String> = lines
        .iter()
        .map(|line| line.splitn(3, ' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    refs.sort();
    ensure!(
        refs == expected,
        "ls-refs listed {} refs, {} expected (first: {:?})",
        refs.len(),
        expected.len(),
        lines.first()
    );
    (&stream).write_all(b"0000")?;
    // The server ends the session and closes; anything else it sends is an error.
    let mut rest = Vec::new();
    reader.take(64 * 1024).read_to_end(&mut rest)?;
    ensure!(rest.is_empty(), "{} bytes after the response", rest.len());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Idle connections.

/// What holding idle connections gave.
struct IdleResult {
    requested: usize,
    /// Connections that got their advertisement.
    advertised: usize,
    /// Connections refused on connect, or closed by the server before the advertisement.
    closed: usize,
    /// Connections the server did not answer in time.
    unanswered: usize,
    /// The first error of a refused, closed or unanswered connection.
    first_error: Option<String>,
    /// Advertised connections still open when the memory was read.
    still_open: usize,
    /// Opening stopped at the deadline.
    stopped_early: bool,
    opening: Duration,
    before: Memory,
    after: Memory,
}

/// Opens up to `count` connections to `target`, reads the server's memory with them idle,
/// then closes them.
fn hold_idle(target: &Target, count: usize, head: &[u8]) -> IdleResult {
    let server = &target.server;
    let before = memory(server.pid);
    let started = Instant::now();
    // Generous: git daemon forks two processes per connection.
    let deadline = started + Duration::from_secs(60) + Duration::from_millis(20) * count as u32;
    let mut open: Vec<TcpStream> = Vec::with_capacity(count);
    let mut result = IdleResult {
        requested: count,
        advertised: 0,
        closed: 0,
        unanswered: 0,
        first_error: None,
        still_open: 0,
        stopped_early: false,
        opening: Duration::ZERO,
        before,
        after: Memory::default(),
    };
    fn note_error(result: &mut IdleResult, error: String) {
        result.first_error.get_or_insert(error);
    }
    let mut remaining = count;
    while remaining > 0 {
        if Instant::now() >= deadline {
            result.stopped_early = true;
            break;
        }
        let batch = remaining.min(BATCH);
        remaining -= batch;
        let mut pending = Vec::with_capacity(batch);
        for _ in 0..batch {
            match connect(server.addr).and_then(|mut stream| {
                stream.write_all(head)?;
                Ok(stream)
            }) {
                Ok(stream) => pending.push(stream),
                Err(err) => {
                    result.closed += 1;
                    note_error(&mut result, format!("connect or request head: {err}"));
                }
            }
        }
        for stream in pending {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = left.clamp(Duration::from_millis(1), IO_TIMEOUT);
            if stream.set_read_timeout(Some(timeout)).is_err() {
                result.closed += 1;
                continue;
            }
            // A reader without a buffer: nothing beyond the advertisement may be left unread.
            match read_advertisement(&mut &stream) {
                Ok(_) => {
                    result.advertised += 1;
                    open.push(stream);
                }
                Err(err) => {
                    let timed_out = err.downcast_ref::<io::Error>().is_some_and(|err| {
                        matches!(
                            err.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        )
                    });
                    if timed_out {
                        result.unanswered += 1;
                    } else {
                        result.closed += 1;
                    }
                    note_error(&mut result, format!("advertisement: {err:#}"));
                }
            }
        }
    }
    result.opening = started.elapsed();
    // Let the server finish whatever it does after the advertisement.
    std::thread::sleep(Duration::from_secs(1));
    result.after = memory(server.pid);
    result.still_open = open.iter().filter(|stream| is_open(stream)).count();
    eprintln!(
        "bench: connections: {}: {} of {} advertised in {:.1?} ({} closed, {} unanswered), \
         {} still open; {} processes, {} threads, PSS {} → {} KiB",
        target.label,
        result.advertised,
        count,
        result.opening,
        result.closed,
        result.unanswered,
        result.still_open,
        result.after.processes,
        result.after.threads,
        result.before.pss_kib,
        result.after.pss_kib
    );
    drop(open);
    result
}

/// Whether the server still holds the connection: nothing to read yet, no end of stream.
fn is_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    let open = match stream.peek(&mut byte) {
        Err(err) => err.kind() == io::ErrorKind::WouldBlock,
        // Data the server sent unasked; still open.
        Ok(n) => n > 0,
    };
    let _ = stream.set_nonblocking(false);
    open
}

// ---------------------------------------------------------------------------------------
// The ls-refs rate.

/// One rate run against one server.
struct RateSample {
    sessions: usize,
    failures: usize,
    first_error: Option<String>,
    elapsed: Duration,
    /// The server's CPU seconds during the run.
    cpu: f64,
    /// This process's (the client's) CPU seconds during the run.
    client_cpu: f64,
    /// The machine's `TcpExt: ListenOverflows` during the run: connections a full accept
    /// queue dropped, which wait for a SYN retransmission (1 s).
    listen_overflows: u64,
}

impl RateSample {
    fn rate(&self) -> f64 {
        self.sessions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn rate_run(target: &Target, options: &ConnectionArgs, expected: &[String]) -> RateSample {
    let ticks = clock_ticks();
    let limit = options.max_sessions.unwrap_or(usize::MAX);
    let started_sessions = AtomicUsize::new(0);
    let sessions = AtomicUsize::new(0);
    let failures = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error = Mutex::new(None::<String>);
    let cpu_before = cpu_seconds(target.server.pid, ticks);
    let client_cpu_before = own_cpu_seconds(ticks);
    let overflows_before = listen_overflows();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(options.duration);
    std::thread::scope(|scope| {
        for _ in 0..options.concurrency {
            scope.spawn(|| {
                let mut my_failures = 0;
                while !stop.load(Ordering::Relaxed)
                    && Instant::now() < deadline
                    && started_sessions.fetch_add(1, Ordering::Relaxed) < limit
                {
                    match ls_refs_session(target.server.addr, &target.request, expected) {
                        Ok(()) => {
                            sessions.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut first) = first_error.lock() {
                                first.get_or_insert_with(|| format!("{err:#}"));
                            }
                            my_failures += 1;
                            if my_failures >= MAX_FAILURES_PER_THREAD {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let client_cpu = own_cpu_seconds(ticks) - client_cpu_before;
    let listen_overflows = listen_overflows().saturating_sub(overflows_before);
    // git daemon's CPU counts its children once it has reaped them.
    settle(&target.server);
    let cpu = cpu_seconds(target.server.pid, ticks) - cpu_before;
    RateSample {
        sessions: sessions.into_inner(),
        failures: failures.into_inner(),
        first_error: first_error.into_inner().ok().flatten(),
        elapsed,
        cpu,
        client_cpu,
        listen_overflows,
    }
}

/// User+system CPU seconds of this process, all threads (not its children: the servers).
fn own_cpu_seconds(ticks_per_second: f64) -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let ticks: u64 = stat_fields(&stat)
        .map(|fields| {
            (11..=12)
                .filter_map(|index| {
                    fields
                        .get(index)
                        .and_then(|value| value.parse::<u64>().ok())
                })
                .sum()
        })
        .unwrap_or(0);
    ticks as f64 / ticks_per_second
}

/// `TcpExt: ListenOverflows` of `/proc/net/netstat` (the whole machine).
fn listen_overflows() -> u64 {
    let netstat = fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = netstat.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        return names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(name, _)| *name == "ListenOverflows")
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0);
    }
    0
}

// ---------------------------------------------------------------------------------------
// Tables.

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn idle_table(targets: &[Target], results: &[IdleResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "**idle connections**\n");
    out.push_str(
        "| server | advertised | still open | processes | threads | RSS MiB before → after \
         | PSS MiB before → after | RSS KiB/conn | PSS KiB/conn | PSS git/pg |\n",
    );
    out.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    let per_connection = |result: &IdleResult, pick: fn(&Memory) -> u64| {
        (result.advertised > 0).then(|| {
            (pick(&result.after) as f64 - pick(&result.before) as f64) / result.advertised as f64
        })
    };
    let packgate_pss = targets
        .iter()
        .zip(results)
        .find(|(target, _)| target.is_packgate)
        .and_then(|(_, result)| per_connection(result, |m| m.pss_kib));
    let mut notes = Vec::new();
    for (target, result) in targets.iter().zip(results) {
        let rss = per_connection(result, |m| m.rss_kib);
        let pss = per_connection(result, |m| m.pss_kib);
        let show = |value: Option<f64>| value.map_or_else(|| "—".to_owned(), |v| format!("{v:.1}"));
        let ratio = match (pss, packgate_pss) {
            (Some(ours), Some(pg)) if !target.is_packgate && pg > 0.0 => {
                format!("{:.1}", ours / pg)
            }
            _ => "—".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} of {} | {} | {} | {} | {:.1} → {:.1} | {:.1} → {:.1} | {} | {} | {} |",
            target.label,
            result.advertised,
            result.requested,
            result.still_open,
            result.after.processes,
            result.after.threads,
            mib(result.before.rss_kib),
            mib(result.after.rss_kib),
            mib(result.before.pss_kib),
            mib(result.after.pss_kib),
            show(rss),
            show(pss),
            ratio
        );
        if result.closed + result.unanswered > 0 || result.stopped_early {
            notes.push(format!(
                "- {}: {} connections refused or closed before the advertisement, {} not \
                 answered in time{}; first error: {}",
                target.label,
                result.closed,
                result.unanswered,
                if result.stopped_early {
                    ", opening stopped at its deadline"
                } else {
                    ""
                },
                result.first_error.as_deref().unwrap_or("none")
            ));
        }
        if result.still_open < result.advertised {
            notes.push(format!(
                "- {}: {} of {} advertised connections were closed by the server before the \
                 memory was read",
                target.label,
                result.advertised - result.still_open,
                result.advertised
            ));
        }
        if target.is_packgate {
            if let Some(pss) = pss {
                notes.push(format!(
                    "- goal ≤ 100 KB (97.7 KiB) per idle connection: packgate {:.1} KiB PSS, \
                     {:.1} KiB RSS: {}",
                    pss,
                    rss.unwrap_or(0.0),
                    if pss.max(rss.unwrap_or(0.0)) <= 100_000.0 / 1024.0 {
                        "met"
                    } else {
                        "NOT met"
                    }
                ));
            }
        }
    }
    out.push('\n');
    if !notes.is_empty() {
        out.push_str(&notes.join("\n"));
        out.push_str("\n\n");
    }
    out
}

/// One server's rate runs together.
#[derive(Clone, Copy)]
struct RateSummary {
    /// Median sessions per second.
    rate: f64,
    min: f64,
    max: f64,
    sessions: usize,
    failures: usize,
    cpu_ms: f64,
    client_cpu_ms: f64,
    overflows: u64,
}

fn rate_table(targets: &[Target], rates: &[Vec<RateSample>], refs: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "**ls-refs sessions per second**\n");
    out.push_str(
        "| server | refs listed | sessions | failed | sessions/s median | sessions/s min–max \
         | server CPU ms/session | client CPU ms/session | listen overflows | rate pg/git |\n",
    );
    out.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    let summary = |samples: &[RateSample]| {
        let mut values: Vec<f64> = samples.iter().map(RateSample::rate).collect();
        let rate = median(&mut values);
        let cpu: f64 = samples.iter().map(|s| s.cpu).sum();
        let client_cpu: f64 = samples.iter().map(|s| s.client_cpu).sum();
        let sessions: usize = samples.iter().map(|s| s.sessions).sum();
        let failures: usize = samples.iter().map(|s| s.failures).sum();
        let overflows: u64 = samples.iter().map(|s| s.listen_overflows).sum();
        RateSummary {
            rate,
            min: values.first().copied().unwrap_or(0.0),
            max: values.last().copied().unwrap_or(0.0),
            sessions,
            failures,
            cpu_ms: cpu * 1000.0 / sessions.max(1) as f64,
            client_cpu_ms: client_cpu * 1000.0 / sessions.max(1) as f64,
            overflows,
        }
    };
    let summaries: Vec<_> = rates.iter().map(|samples| summary(samples)).collect();
    let packgate_rate = targets
        .iter()
        .zip(&summaries)
        .find(|(target, _)| target.is_packgate)
        .map(|(_, summary)| summary.rate);
    let git_rate = targets
        .iter()
        .zip(&summaries)
        .find(|(target, _)| !target.is_packgate)
        .map(|(_, summary)| summary.rate);
    let mut notes = Vec::new();
    for ((target, samples), summary) in targets.iter().zip(rates).zip(&summaries) {
        let RateSummary {
            rate,
            min,
            max,
            sessions,
            failures,
            cpu_ms,
            client_cpu_ms,
            overflows,
        } = *summary;
        let ratio = match (packgate_rate, git_rate) {
            (Some(pg), Some(git)) if target.is_packgate && git > 0.0 => format!("{:.1}", pg / git),
            _ => "—".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {refs} | {sessions} | {failures} | {rate:.0} | {min:.0}–{max:.0} | \
             {cpu_ms:.2} | {client_cpu_ms:.2} | {overflows} | {ratio} |",
            target.label
        );
        if let Some(error) = samples.iter().find_map(|s| s.first_error.as_deref()) {
            notes.push(format!("- {}: first failure: {error}", target.label));
        }
    }
    if let (Some(pg), Some(git)) = (packgate_rate, git_rate) {
        if git > 0.0 {
            notes.push(format!(
                "- goal ≥ 10× git daemon's rate: {:.1}×: {}",
                pg / git,
                if pg >= 10.0 * git { "met" } else { "NOT met" }
            ));
        }
    }
    out.push('\n');
    if !notes.is_empty() {
        out.push_str(&notes.join("\n"));
        out.push_str("\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_is_one_pkt_line() -> anyhow::Result<()> {
        let head = request_head()?;
        let text = String::from_utf8_lossy(&head);
        assert_eq!(
            text,
            "003dgit-upload-pack /many-refs.git\0host=127.0.0.1\0\0version=2\0"
        );
        Ok(())
    }

    #[test]
    fn ls_refs_follows_the_advertisement() -> anyhow::Result<()> {
        let capabilities =
            ["agent=git/2.47.3", "ls-refs=unborn", "object-format=sha1"].map(str::to_owned);
        let request = ls_refs_request(&capabilities, "refs/heads/a")?;
        assert_eq!(
            String::from_utf8_lossy(&request),
            "0014command=ls-refs\n0015agent=git/2.47.3\n0017object-format=sha1\n0001\
             0009peel\n000csymrefs\n001cref-prefix refs/heads/a\n0000"
        );
        let request = ls_refs_request(&["ls-refs".to_owned()], "x")?;
        assert_eq!(
            String::from_utf8_lossy(&request),
            "0014command=ls-refs\n00010009peel\n000csymrefs\n0011ref-prefix x\n0000"
        );
        assert!(ls_refs_request(&["fetch".to_owned()], "x").is_err());
        Ok(())
    }
}
