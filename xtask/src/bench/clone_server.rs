//! `cargo xtask bench clone-repeat` and `clone-concurrent`: full clones from a long-running
//! server over git://, `packgate daemon` against `git daemon` serving the same repository in
//! the same run, where packgate's pack cache (single flight and cached packs) can pay off.
//!
//! Both servers run with the same flags (`--reuseaddr --listen=127.0.0.1 --port=P
//! --base-path=ROOT --export-all --max-connections=0 ROOT`), packgate with its default pack
//! cache. The client is minimal and blocking: it sends the git:// request head of a v2
//! upload-pack, reads the advertisement, sends `fetch` with `thin-pack`, `no-progress`,
//! `ofs-delta`, `include-tag`, a `want` of every ref's object and `done` (what `git clone`
//! sends), reads the response to its flush and checks the pack: `PACK` version 2, its
//! SHA-1 trailer, and its object count, which must be the same for every clone of both
//! servers. Each server first gets two warm-up clones (the second makes packgate keep the
//! pack: the cache stores a key from its second sighting); the first one's pack is checked by
//! `git index-pack`.
//!
//! - `clone-repeat`: `--repeat N` (default 20) clones one after the other; reported: the
//!   median wall time of one clone and the server's CPU time (user+system from `/proc`, git
//!   daemon with the children it reaped) per clone. The target: packgate ≤ 0.1× git's
//!   CPU.
//! - `clone-concurrent`: for each of `--clients 16,64,256`, that many clients start together
//!   (a barrier); reported: clones completed, wall time until the last ended, total
//!   throughput (pack bytes of completed clones / wall), the server's peak RSS (sampled from
//!   `/proc` every 100 ms, with descendants) and CPU time. The target: all complete, ≥ 2× git
//!   daemon's throughput. git daemon listens with a backlog of 5: its clients may wait for
//!   SYN retransmissions, which is part of what it costs. packgate closes the oldest of more
//!   than 256 connections from one address that have not had their request head read yet
//!   (`max-waiting-per-address`; at its earlier default of 64 a burst of 256 clients lost
//!   some): a client turned away (`ERR too many connections`) counts as not completed.
//!
//! Every socket has timeouts and every clone a deadline; every loop is bounded.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use packgate_wire::pkt_line;
use sha1::{Digest as _, Sha1};

use super::server::{
    clock_ticks, command_start, cpu_seconds, free_port, memory, pkt, read_advertisement,
    read_packet, settle, Packet, RunningServer,
};
use super::{
    build_fixture, build_packgate, copy_dir,
    git::{path_str, Git},
    measure::median,
    results::{human_size, load_average, ServerSection},
    target_dir, workspace_root, BenchArgs, Scenario,
};

/// The name the fixture is served under, below the root.
const REPO: &str = "repo.git";

/// Connect timeout: long enough for SYN retransmissions to a full listen backlog.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Read and write timeout: both servers send keepalives while they prepare a pack.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// How long one clone may take, start to end.
const CLONE_DEADLINE: Duration = Duration::from_secs(900);

/// Options of the clone-server scenarios.
#[derive(clap::Args)]
pub(super) struct CloneServerArgs {
    /// clone-repeat: timed clones per server, one after the other, after the warm-up.
    #[arg(long, value_name = "N", default_value_t = 20)]
    repeat: usize,
    /// clone-concurrent: how many clients start together, one run per count.
    #[arg(
        long,
        value_name = "N,…",
        value_delimiter = ',',
        default_values_t = [16, 64, 256]
    )]
    clients: Vec<usize>,
}

/// One server under test.
struct Target {
    label: &'static str,
    command: String,
    server: RunningServer,
    /// The `fetch` request, built from its advertisement.
    request: Vec<u8>,
}

/// What one clone received.
#[derive(Clone, Copy, Debug)]
struct Received {
    bytes: u64,
    objects: u32,
}

/// Runs the clone-server scenarios of `args` (only they may be asked for).
pub(super) fn run(args: &BenchArgs, scenarios: &[Scenario]) -> anyhow::Result<()> {
    let started = Instant::now();
    let options = &args.clone_server;
    ensure!(
        options.repeat > 0 && options.repeat <= 10_000,
        "--repeat must be between 1 and 10000"
    );
    ensure!(
        options.clients.iter().all(|&n| n > 0 && n <= 1024),
        "--clients must be between 1 and 1024"
    );
    let load_before = load_average();
    let root = workspace_root();
    let target = target_dir(&root);
    let git = Git { program: &args.git };
    let packgate = match &args.packgate {
        Some(path) => path.clone(),
        None => build_packgate(&root, &target)?,
    };
    let built = build_fixture(args, &target)?;
    let work = target.join(format!("bench-work-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    let repos = work.join("root");
    copy_dir(&built.path, &repos.join(REPO))?;
    let result = measure(args, scenarios, &git, &packgate, &work, &repos);
    let _ = fs::remove_dir_all(&work);
    let (tables, commands) = result?;
    let load_after = load_average();
    println!("{tables}");
    eprintln!("bench: load average before {load_before}, after {load_after}");
    if !args.no_record {
        let names: Vec<&str> = scenarios.iter().map(|s| s.name()).collect();
        ServerSection {
            title: &names.join(", "),
            preset: args.preset(),
            fixture: &format!("preset `{}` (`git repack -ad`)", args.preset()),
            built: &built,
            repo: REPO,
            commands: &commands,
            lines: &[
                format!("load average (1/5/15 min): {load_before} before, {load_after} after"),
                "client: git:// v2 `fetch` of every ref (thin-pack, ofs-delta, include-tag, \
                 no-progress), pack read to its end and checked (trailer, object count); two \
                 warm-up clones per server first"
                    .to_owned(),
            ],
            tables: &tables,
        }
        .append(&git, &root)?;
    }
    eprintln!("bench: done in {:.1?}", started.elapsed());
    Ok(())
}

/// Starts both servers, warms them up and runs the scenarios; the tables and the commands.
fn measure(
    args: &BenchArgs,
    scenarios: &[Scenario],
    git: &Git<'_>,
    packgate: &Path,
    work: &Path,
    repos: &Path,
) -> anyhow::Result<(String, Vec<String>)> {
    let repos_str = path_str(repos)?;
    let wants = wants(git, &repos.join(REPO))?;
    let mut targets = Vec::new();
    let mut objects = None;
    for (label, program) in [("packgate", packgate), ("git daemon", git.program)] {
        let port = free_port()?;
        let arguments = vec![
            "daemon".to_owned(),
            "--reuseaddr".to_owned(),
            "--listen=127.0.0.1".to_owned(),
            format!("--port={port}"),
            format!("--base-path={repos_str}"),
            "--export-all".to_owned(),
            "--max-connections=0".to_owned(),
            repos_str.clone(),
        ];
        let log = work.join(format!("{}.log", label.replace(' ', "-")));
        let server = RunningServer::start(program, &arguments, &log, port)?;
        let command = format!(
            "{} {}",
            program
                .file_name()
                .map_or_else(String::new, |name| name.to_string_lossy().into_owned()),
            arguments.join(" ")
        );
        eprintln!("bench: {command} (pid {})", server.pid);
        let request = {
            let stream = connect(server.addr)?;
            (&stream).write_all(&request_head()?)?;
            let capabilities = read_advertisement(&mut BufReader::new(&stream))?;
            (&stream).write_all(b"0000")?;
            fetch_request(&capabilities, &wants)?
        };
        // The warm-up: the first pack checked by git index-pack, the second makes it cached.
        let saved = work.join(format!("{}.pack", label.replace(' ', "-")));
        let first = clone(server.addr, &request, Some(&saved), None)
            .with_context(|| format!("{label}: first clone"))?;
        git.run(None, &["index-pack", &path_str(&saved)?])
            .with_context(|| format!("{label}: git index-pack of the first pack"))?;
        let _ = fs::remove_file(&saved);
        let _ = fs::remove_file(saved.with_extension("idx"));
        let expected = *objects.get_or_insert(first.objects);
        ensure!(
            first.objects == expected,
            "{label} sent {} objects, the other server {expected}",
            first.objects
        );
        clone(server.addr, &request, None, Some(expected))
            .with_context(|| format!("{label}: second clone"))?;
        targets.push(Target {
            label,
            command,
            server,
            request,
        });
    }
    let objects = objects.unwrap_or(0);
    let commands = targets.iter().map(|t| t.command.clone()).collect();
    let mut tables = String::new();
    for scenario in scenarios {
        match scenario {
            Scenario::CloneRepeat => tables.push_str(&repeat(args, &targets, objects)?),
            Scenario::CloneConcurrent => tables.push_str(&concurrent(args, &targets, objects)?),
            other => bail!("{} is not a clone-server scenario", other.name()),
        }
        tables.push('\n');
    }
    Ok((tables, commands))
}

/// `clone-repeat`: the same clone, one after the other.
fn repeat(args: &BenchArgs, targets: &[Target], objects: u32) -> anyhow::Result<String> {
    let count = args.clone_server.repeat;
    let ticks = clock_ticks();
    let mut rows = Vec::new();
    for target in targets {
        settle(&target.server);
        let cpu_before = cpu_seconds(target.server.pid, ticks);
        let mut walls = Vec::new();
        let mut bytes = 0;
        for n in 0..count {
            let started = Instant::now();
            let received = clone(target.server.addr, &target.request, None, Some(objects))
                .with_context(|| format!("{}: clone {}", target.label, n + 1))?;
            walls.push(started.elapsed().as_secs_f64());
            bytes = received.bytes;
        }
        let cpu = (cpu_seconds(target.server.pid, ticks) - cpu_before) / count as f64;
        let wall = median(&mut walls);
        eprintln!(
            "bench: clone-repeat {}: {count} clones, {:.3} s wall, {:.3} s server CPU each",
            target.label, wall, cpu
        );
        rows.push((target.label, wall, cpu, bytes));
    }
    let git_cpu = rows.last().map_or(0.0, |row| row.2);
    let mut out = format!(
        "### clone-repeat: {count} identical clones in a row\n\n\
         | server | wall per clone (median) | server CPU per clone | pack | CPU / git's |\n\
         |---|--:|--:|--:|--:|\n"
    );
    for (label, wall, cpu, bytes) in rows {
        let ratio = if git_cpu > 0.0 { cpu / git_cpu } else { 0.0 };
        let _ = writeln!(
            out,
            "| {label} | {:.1} ms | {:.1} ms | {} | {ratio:.3}× |",
            wall * 1000.0,
            cpu * 1000.0,
            human_size(bytes)
        );
    }
    Ok(out)
}

/// `clone-concurrent`: that many clients at once, for each count.
fn concurrent(args: &BenchArgs, targets: &[Target], objects: u32) -> anyhow::Result<String> {
    let ticks = clock_ticks();
    let mut out = String::from(
        "### clone-concurrent: clients starting together\n\n\
         | clients | server | completed | wall | throughput | peak RSS | server CPU | \
         throughput / git's |\n\
         |--:|---|--:|--:|--:|--:|--:|--:|\n",
    );
    for &clients in &args.clone_server.clients {
        let mut rows = Vec::new();
        for target in targets {
            settle(&target.server);
            let cpu_before = cpu_seconds(target.server.pid, ticks);
            let running = Arc::new(AtomicBool::new(true));
            let pid = target.server.pid;
            let sampler = {
                let running = running.clone();
                std::thread::spawn(move || {
                    let mut peak = 0;
                    let deadline = Instant::now() + CLONE_DEADLINE * 2;
                    while running.load(Ordering::Relaxed) && Instant::now() < deadline {
                        peak = peak.max(memory(pid).rss_kib);
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    peak
                })
            };
            let barrier = Arc::new(Barrier::new(clients));
            let started = Instant::now();
            let results: Vec<anyhow::Result<Received>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..clients)
                    .map(|_| {
                        let barrier = barrier.clone();
                        let (addr, request) = (target.server.addr, &target.request);
                        std::thread::Builder::new()
                            .stack_size(256 * 1024)
                            .spawn_scoped(scope, move || {
                                barrier.wait();
                                clone(addr, request, None, Some(objects))
                            })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|handle| match handle {
                        Ok(handle) => handle
                            .join()
                            .unwrap_or_else(|_| Err(anyhow::anyhow!("client panicked"))),
                        Err(err) => Err(err.into()),
                    })
                    .collect()
            });
            let wall = started.elapsed().as_secs_f64();
            running.store(false, Ordering::Relaxed);
            let peak = sampler.join().unwrap_or(0);
            let cpu = cpu_seconds(target.server.pid, ticks) - cpu_before;
            let completed: Vec<&Received> = results.iter().flatten().collect();
            if let Some(err) = results.iter().find_map(|result| result.as_ref().err()) {
                eprintln!(
                    "bench: clone-concurrent {}: a clone failed: {err:#}",
                    target.label
                );
            }
            let bytes: u64 = completed.iter().map(|r| r.bytes).sum();
            let throughput = bytes as f64 / wall / 1e6;
            eprintln!(
                "bench: clone-concurrent {clients} {}: {}/{clients} in {wall:.2} s, \
                 {throughput:.1} MB/s, peak {} MiB",
                target.label,
                completed.len(),
                peak / 1024
            );
            rows.push((target.label, completed.len(), wall, throughput, peak, cpu));
        }
        let git_throughput = rows.last().map_or(0.0, |row| row.3);
        for (label, completed, wall, throughput, peak, cpu) in rows {
            let ratio = if git_throughput > 0.0 {
                throughput / git_throughput
            } else {
                0.0
            };
            let _ = writeln!(
                out,
                "| {clients} | {label} | {completed}/{clients} | {wall:.2} s | \
                 {throughput:.1} MB/s | {:.0} MiB | {cpu:.2} s | {ratio:.2}× |",
                peak as f64 / 1024.0
            );
        }
    }
    Ok(out)
}

/// The object of every ref of `repo`, each once.
fn wants(git: &Git<'_>, repo: &Path) -> anyhow::Result<Vec<String>> {
    let out = git.run(Some(repo), &["for-each-ref", "--format=%(objectname)"])?;
    let mut wants: Vec<String> = out.lines().map(str::to_owned).collect();
    wants.sort();
    wants.dedup();
    ensure!(!wants.is_empty(), "{} has no refs", repo.display());
    Ok(wants)
}

/// A connected client socket with this module's timeouts.
fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
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

/// `command=fetch` of every want, as `git clone` sends it to a server with `capabilities`.
fn fetch_request(capabilities: &[String], wants: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    command_start(&mut out, "fetch", capabilities)?;
    for line in ["thin-pack", "no-progress", "ofs-delta", "include-tag"] {
        pkt(&mut out, format!("{line}\n").as_bytes())?;
    }
    for want in wants {
        pkt(&mut out, format!("want {want}\n").as_bytes())?;
    }
    pkt(&mut out, b"done\n")?;
    pkt_line::encode_flush(&mut out);
    Ok(out)
}

/// Checks a pack as it streams by: its header, and its trailer against the SHA-1 of the rest.
struct PackCheck {
    hasher: Sha1,
    /// The last bytes seen (at most 20): the trailer, once the pack has ended.
    tail: Vec<u8>,
    header: Vec<u8>,
    bytes: u64,
}

impl PackCheck {
    fn new() -> Self {
        PackCheck {
            hasher: Sha1::new(),
            tail: Vec::with_capacity(40),
            header: Vec::with_capacity(12),
            bytes: 0,
        }
    }

    fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        if self.header.len() < 12 {
            let take = (12 - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
        }
        self.tail.extend_from_slice(data);
        if self.tail.len() > 20 {
            let hashed = self.tail.len() - 20;
            self.hasher.update(&self.tail[..hashed]);
            self.tail.drain(..hashed);
        }
    }

    /// The object count, once header and trailer are right.
    fn finish(self) -> anyhow::Result<Received> {
        ensure!(
            self.header.len() == 12 && self.tail.len() == 20,
            "a pack of {} bytes is too short",
            self.bytes
        );
        ensure!(&self.header[..4] == b"PACK", "no PACK signature");
        ensure!(
            self.header[4..8] == [0, 0, 0, 2],
            "not a version 2 pack: {:?}",
            &self.header[4..8]
        );
        let objects = u32::from_be_bytes([
            self.header[8],
            self.header[9],
            self.header[10],
            self.header[11],
        ]);
        let digest = self.hasher.finalize();
        ensure!(
            digest.as_slice() == self.tail.as_slice(),
            "the pack's trailer is not the SHA-1 of its content"
        );
        Ok(Received {
            bytes: self.bytes,
            objects,
        })
    }
}

/// One whole clone session: the pack read to its end and checked, saved to `save` if given;
/// with `objects`, the pack must hold that many.
fn clone(
    addr: SocketAddr,
    request: &[u8],
    save: Option<&Path>,
    objects: Option<u32>,
) -> anyhow::Result<Received> {
    let deadline = Instant::now() + CLONE_DEADLINE;
    let stream = connect(addr).context("connecting")?;
    (&stream).write_all(&request_head()?)?;
    let mut reader = BufReader::with_capacity(128 * 1024, &stream);
    read_advertisement(&mut reader)?;
    (&stream).write_all(request)?;
    let mut file = match save {
        Some(path) => Some(io::BufWriter::new(
            fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let mut buf = Vec::with_capacity(65_536);
    let mut check = PackCheck::new();
    let mut in_pack = false;
    // Bounded: every packet carries at least a byte, and every clone has a deadline.
    loop {
        ensure!(
            Instant::now() < deadline,
            "the clone took over {CLONE_DEADLINE:?}"
        );
        match read_packet(&mut reader, &mut buf)? {
            Packet::Flush if in_pack => break,
            Packet::Data if !in_pack => {
                let line = String::from_utf8_lossy(&buf);
                match line.trim_end() {
                    "packfile" => in_pack = true,
                    other if other.starts_with("ERR ") => bail!("the server said {other}"),
                    // Other sections (none for a plain clone) are skipped.
                    _ => {}
                }
            }
            Packet::Data => match buf.split_first() {
                Some((1, data)) => {
                    check.update(data);
                    if let Some(file) = &mut file {
                        file.write_all(data)?;
                    }
                }
                Some((2, _)) => {}
                Some((3, message)) => {
                    bail!("the server failed: {}", String::from_utf8_lossy(message))
                }
                _ => bail!("a packet outside the sideband"),
            },
            Packet::Delim if !in_pack => {}
            other => bail!("unexpected {other:?} packet"),
        }
    }
    if let Some(mut file) = file {
        file.flush()?;
    }
    let received = check.finish()?;
    if let Some(expected) = objects {
        ensure!(
            received.objects == expected,
            "{} objects, {expected} expected",
            received.objects
        );
    }
    // End the session; the server closes.
    let _ = (&stream).write_all(b"0000");
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_asks_for_every_want_as_git_clone() -> anyhow::Result<()> {
        let capabilities = ["agent=git/2.47.3", "fetch=shallow", "object-format=sha1"];
        let capabilities = capabilities.map(str::to_owned);
        let request = fetch_request(&capabilities, &["a".repeat(40)])?;
        let text = String::from_utf8_lossy(&request);
        assert!(text.starts_with("0012command=fetch\n0015agent=git/2.47.3\n"));
        assert!(text.contains(&format!("0032want {}\n", "a".repeat(40))));
        assert!(text.ends_with("0009done\n0000"));
        assert!(fetch_request(&["ls-refs".to_owned()], &[]).is_err());
        Ok(())
    }

    #[test]
    fn packs_are_checked_as_they_stream() -> anyhow::Result<()> {
        let mut pack = b"PACK\0\0\0\x02\0\0\0\x03some objects".to_vec();
        let digest = Sha1::digest(&pack);
        pack.extend_from_slice(&digest);
        let mut check = PackCheck::new();
        for piece in pack.chunks(7) {
            check.update(piece);
        }
        let received = check.finish()?;
        assert_eq!((received.objects, received.bytes), (3, pack.len() as u64));
        let last = pack.len() - 1;
        pack[last] ^= 1;
        let mut check = PackCheck::new();
        check.update(&pack);
        assert!(check.finish().is_err());
        Ok(())
    }
}
