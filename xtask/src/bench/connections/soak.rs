//! `cargo xtask bench soak`: does the server's memory come back after load? Rounds of 1,000
//! git:// connections against packgate and `git daemon` serving the same repository (the
//! servers and the client of [`super`]), the server's memory read after each round.
//!
//! A round is `--connections` connections (default 1000): 60% idle v2 sessions (opened in
//! batches, advertisement read, held until all are open, then closed), 30% `ls-refs`
//! sessions (checked against the fixture's refs) and 10% small fetches (one ref tip wanted,
//! its parent had, `done`: a pack of one commit's changes, checked to start with `PACK`),
//! the sessions on 8 client threads. After each round the server is left to settle (its
//! per-connection processes gone, then 4.5 s idle: packgate gives freed memory back after
//! two quiet seconds) and its RSS and PSS are read from
//! `/proc/PID/smaps_rollup`, summed with its descendants'. `--runs` rounds after a warm-up
//! round (`--runs 10` for the ten rounds).
//!
//! The baseline is the memory after the warm-up round: the process has then created what
//! it keeps for good (runtime threads, the allocator's arenas, caches at their bounds), and
//! growth from there on is what a long-running server would accumulate. The table gives
//! every round and the last round against the baseline; the target is within 10%.

use std::{
    fmt::Write as _,
    io::{BufReader, Write as _},
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use anyhow::{bail, ensure, Context as _};

use crate::bench::results::ServerSection;

use super::{
    build_fixture, build_packgate, check_open_files, connect, copy_dir, expected_refs, hold_idle,
    ls_refs_session, memory, mib, packgate_mode, pkt, read_advertisement, request_head, settle,
    start_targets, target_dir, workspace_root, BenchArgs, Git, Memory, Target, AGENT, REPO,
};
use crate::bench::server::{read_packet, Packet};

/// How long the server is left idle after a round before its memory is read.
const IDLE_WAIT: std::time::Duration = std::time::Duration::from_secs(4);

/// Client threads for the sessions of a round.
const THREADS: usize = 8;

/// Runs `cargo xtask bench soak`.
pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let options = &args.connections;
    let per_round = options.idle_connections;
    ensure!(per_round >= 10, "--connections must be at least 10");
    check_open_files(per_round)?;
    let root = workspace_root();
    let target = target_dir(&root);
    let git = Git { program: &args.git };
    let packgate = match &args.packgate {
        Some(path) => path.clone(),
        None => build_packgate(&root, &target)?,
    };
    let mode = packgate_mode(&packgate);
    let built = build_fixture(args, &target)?;
    let expected = expected_refs(&git, &built.path, &options.ref_prefix)?;
    ensure!(
        !expected.is_empty(),
        "no ref starts with {:?}",
        options.ref_prefix
    );
    // The small fetch: a ref tip and its parent.
    let tip = expected[0]
        .split(' ')
        .next()
        .context("a ref line")?
        .to_owned();
    let parent = git
        .run(Some(&built.path), &["rev-parse", &format!("{tip}^")])
        .map(|out| out.trim().to_owned())
        .ok();
    let fetch = fetch_request(&tip, parent.as_deref())?;

    let work = target.join(format!("bench-work-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let repos = work.join("root");
    copy_dir(&built.path, &repos.join(REPO))?;
    let result = (|| {
        let targets = start_targets(
            &git,
            &packgate,
            mode,
            &work,
            &repos,
            &options.ref_prefix,
            &expected,
        )?;
        let rounds = args.runs.max(1);
        let mut memories: Vec<Vec<Memory>> = targets.iter().map(|_| Vec::new()).collect();
        let mut starts = Vec::new();
        for target in &targets {
            settle(&target.server);
            starts.push(memory(target.server.pid));
        }
        for round in 0..=rounds {
            for (index, target) in targets.iter().enumerate() {
                let started = Instant::now();
                let failures = soak_round(target, per_round, &expected, &fetch)?;
                settle(&target.server);
                // An idle server's time to give freed memory back (packgate trims after two
                // quiet seconds, see src/trim.rs); the same wait for both.
                std::thread::sleep(IDLE_WAIT);
                target.server.check_alive()?;
                let after = memory(target.server.pid);
                eprintln!(
                    "bench: soak: round {round}/{rounds} {}: {per_round} connections in \
                     {:.1?}, {failures} failed; RSS {:.1} MiB, PSS {:.1} MiB, {} threads",
                    target.label,
                    started.elapsed(),
                    mib(after.rss_kib),
                    mib(after.pss_kib),
                    after.threads
                );
                memories[index].push(after);
            }
        }
        let commands: Vec<String> = targets.iter().map(|t| t.command.clone()).collect();
        Ok::<_, anyhow::Error>((table(&targets, &starts, &memories, per_round), commands))
    })();
    let _ = std::fs::remove_dir_all(&work);
    let (table, commands) = result?;
    println!("{table}");
    if !args.no_record {
        ServerSection {
            title: "soak",
            preset: args.preset(),
            fixture: &format!("preset `{}` (`git repack -ad`)", args.preset()),
            built: &built,
            repo: REPO,
            commands: &commands,
            lines: &[format!(
                "`cargo xtask bench soak --runs {}`: a warm-up round, then {} rounds of \
                 {per_round} git:// connections (60% idle v2 sessions held until all are open, \
                 30% `ls-refs`, 10% small fetches, on {THREADS} client threads); after each \
                 round the server settles and idles 4 s, then RSS and PSS from \
                 `/proc/PID/smaps_rollup` (server and descendants); baseline: after the \
                 warm-up round",
                args.runs, args.runs
            )],
            tables: &table,
        }
        .append(&git, &root)?;
    }
    Ok(())
}

/// `command=fetch` wanting `tip`, having `parent`, `done`.
fn fetch_request(tip: &str, parent: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    pkt(&mut out, b"command=fetch\n")?;
    pkt(&mut out, format!("{AGENT}\n").as_bytes())?;
    pkt(&mut out, b"object-format=sha1\n")?;
    packgate_wire::pkt_line::encode_delimiter(&mut out);
    pkt(&mut out, b"thin-pack\n")?;
    pkt(&mut out, b"no-progress\n")?;
    pkt(&mut out, b"ofs-delta\n")?;
    pkt(&mut out, format!("want {tip}\n").as_bytes())?;
    if let Some(parent) = parent {
        pkt(&mut out, format!("have {parent}\n").as_bytes())?;
    }
    pkt(&mut out, b"done\n")?;
    packgate_wire::pkt_line::encode_flush(&mut out);
    Ok(out)
}

/// One fetch session: the pack must come whole (band 1 starts with `PACK`).
fn fetch_session(addr: SocketAddr, request: &[u8]) -> anyhow::Result<()> {
    let stream = connect(addr)?;
    (&stream).write_all(&request_head()?)?;
    let mut reader = BufReader::new(&stream);
    read_advertisement(&mut reader)?;
    (&stream).write_all(request)?;
    let mut buf = Vec::new();
    let mut pack = Vec::new();
    let mut in_pack = false;
    for _ in 0..100_000 {
        match read_packet(&mut reader, &mut buf)? {
            Packet::Flush => {
                ensure!(pack.starts_with(b"PACK"), "no pack in the response");
                (&stream).write_all(b"0000")?;
                return Ok(());
            }
            Packet::Data if !in_pack => {
                if buf.starts_with(b"ERR ") {
                    bail!("{}", String::from_utf8_lossy(&buf));
                }
                in_pack = buf == b"packfile\n";
            }
            Packet::Data => match buf.split_first() {
                Some((1, data)) => pack.extend_from_slice(data),
                Some((3, message)) => bail!("{}", String::from_utf8_lossy(message)),
                _ => {}
            },
            Packet::Delim | Packet::ResponseEnd => {}
        }
    }
    bail!("no flush after 100,000 packets")
}

/// One round against `target`; returns how many sessions failed.
fn soak_round(
    target: &Target,
    count: usize,
    expected: &[String],
    fetch: &[u8],
) -> anyhow::Result<usize> {
    let idle = count * 6 / 10;
    let fetches = count / 10;
    let ls_refs = count - idle - fetches;
    let held = hold_idle(target, idle, &request_head()?);
    let mut failures = held.requested - held.advertised;
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let first_error = std::sync::Mutex::new(None::<String>);
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= ls_refs + fetches {
                    break;
                }
                let result = if index % 4 == 3 && index / 4 < fetches {
                    fetch_session(target.server.addr, fetch)
                } else {
                    ls_refs_session(target.server.addr, &target.request, expected)
                };
                if let Err(err) = result {
                    failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut first) = first_error.lock() {
                        first.get_or_insert(format!("{err:#}"));
                    }
                }
            });
        }
    });
    failures += failed.load(Ordering::Relaxed);
    if let Ok(Some(error)) = first_error.lock().map(|first| first.clone()) {
        eprintln!("bench: soak: {}: first failure: {error}", target.label);
    }
    Ok(failures)
}

fn table(
    targets: &[Target],
    starts: &[Memory],
    memories: &[Vec<Memory>],
    per_round: usize,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "**server memory after rounds of {per_round} connections (RSS MiB, PSS in \
         parentheses; round 0 is the warm-up and the baseline)**\n"
    );
    let _ = writeln!(
        out,
        "| round | {} |",
        targets
            .iter()
            .map(|t| t.label)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(out, "|---|{}", "--:|".repeat(targets.len()));
    let cell = |memory: &Memory| format!("{:.1} ({:.1})", mib(memory.rss_kib), mib(memory.pss_kib));
    let _ = writeln!(
        out,
        "| start | {} |",
        starts.iter().map(cell).collect::<Vec<_>>().join(" | ")
    );
    let rounds = memories.iter().map(Vec::len).min().unwrap_or(0);
    for round in 0..rounds {
        let cells: Vec<String> = memories.iter().map(|m| cell(&m[round])).collect();
        let _ = writeln!(out, "| {round} | {} |", cells.join(" | "));
    }
    let growth: Vec<String> = memories
        .iter()
        .map(|m| match (m.first(), m.last()) {
            (Some(base), Some(last)) if base.rss_kib > 0 => format!(
                "{:+.1}%",
                (last.rss_kib as f64 / base.rss_kib as f64 - 1.0) * 100.0
            ),
            _ => "–".to_owned(),
        })
        .collect();
    let _ = writeln!(out, "| last vs round 0 (RSS) | {} |", growth.join(" | "));
    out
}
