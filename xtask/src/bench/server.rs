//! What the benchmarks against long-running servers share: a server process (packgate's or
//! git's daemon) with its descendants, their CPU time and memory read from `/proc`, and a
//! minimal blocking git:// client's pkt-line reading.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use packgate_wire::pkt_line::{self, PacketReader};

use super::git::isolate;

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Connect timeout of every client socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A port nobody listens on now.
pub(super) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A server process, killed with its descendants when dropped.
pub(super) struct RunningServer {
    child: Child,
    pub(super) pid: u32,
    pub(super) addr: SocketAddr,
    log: PathBuf,
    /// How many descendants it has with no connection open (`git daemon` runs `git-daemon`
    /// as a child).
    pub(super) resident: usize,
}

impl RunningServer {
    /// Starts `program arguments`, output to `log`, and waits until `port` accepts.
    pub(super) fn start(
        program: &Path,
        arguments: &[String],
        log: &Path,
        port: u16,
    ) -> anyhow::Result<RunningServer> {
        let output = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(program);
        isolate(&mut command);
        command
            .args(arguments)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut server = RunningServer {
            pid: child.id(),
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            log: log.to_owned(),
            resident: 0,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            server.check_alive()?;
            if TcpStream::connect_timeout(&server.addr, Duration::from_millis(200)).is_ok() {
                // The fewest descendants over half a second, once the probe's are gone.
                server.resident = (0..10)
                    .map(|_| {
                        std::thread::sleep(Duration::from_millis(50));
                        descendants(server.pid).len()
                    })
                    .min()
                    .unwrap_or(0);
                return Ok(server);
            }
            ensure!(
                Instant::now() < deadline,
                "{} does not accept on {} after {START_TIMEOUT:?}; its output: {}",
                program.display(),
                server.addr,
                server.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails if the server has exited.
    pub(super) fn check_alive(&self) -> anyhow::Result<()> {
        // `try_wait` needs `&mut`; /proc tells without reaping.
        let state = fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let running = stat_fields(&state).is_some_and(|fields| fields.first() != Some(&"Z"));
        ensure!(
            running,
            "the server (pid {}) has exited; its output: {}",
            self.pid,
            self.output()
        );
        Ok(())
    }

    /// The end of the server's output.
    pub(super) fn output(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{:?}", tail.join("\n"))
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let descendants = descendants(self.pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
        // git daemon's per-connection processes outlive it otherwise (until their client
        // goes away).
        if !descendants.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(descendants.iter().map(u32::to_string))
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The fields of `/proc/PID/stat` after the command name: state, ppid, …
pub(super) fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

/// Every process below `pid`.
pub(super) fn descendants(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if let Some(parent) = stat_fields(&stat)
            .and_then(|fields| fields.get(1).and_then(|ppid| ppid.parse::<u32>().ok()))
        {
            children.entry(parent).or_default().push(child);
        }
    }
    let mut out = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for &child in children.get(&parent).map_or(&[][..], Vec::as_slice) {
            // A pid cannot be its own ancestor, but /proc is read while it changes.
            if !out.contains(&child) && child != pid {
                out.push(child);
                queue.push(child);
            }
        }
    }
    out
}

/// Memory of a server and its descendants.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Memory {
    pub(super) rss_kib: u64,
    pub(super) pss_kib: u64,
    pub(super) processes: usize,
    pub(super) threads: usize,
}

pub(super) fn memory(pid: u32) -> Memory {
    let mut total = Memory::default();
    for pid in std::iter::once(pid).chain(descendants(pid)) {
        let Ok(rollup) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        let field = |name: &str| {
            rollup
                .lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
                .unwrap_or(0)
        };
        total.rss_kib += field("Rss:");
        total.pss_kib += field("Pss:");
        total.processes += 1;
        total.threads += fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|line| line.starts_with("Threads:"))
                    .and_then(|line| line.split_whitespace().nth(1))
                    .and_then(|n| n.parse::<usize>().ok())
            })
            .unwrap_or(0);
    }
    total
}

/// User+system CPU seconds of `pid` and its descendants, with the children they reaped.
pub(super) fn cpu_seconds(pid: u32, ticks_per_second: f64) -> f64 {
    let mut ticks = 0;
    for pid in std::iter::once(pid).chain(descendants(pid)) {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let Some(fields) = stat_fields(&stat) else {
            continue;
        };
        // After the name: state(0) ppid … utime(11) stime(12) cutime(13) cstime(14).
        ticks += (11..=14)
            .filter_map(|index| {
                fields
                    .get(index)
                    .and_then(|value| value.parse::<u64>().ok())
            })
            .sum::<u64>();
    }
    ticks as f64 / ticks_per_second
}

pub(super) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// Waits (bounded) until the server has no leftover per-connection processes, and a moment
/// for the rest.
pub(super) fn settle(server: &RunningServer) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while descendants(server.pid).len() > server.resident && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
}

// ---------------------------------------------------------------------------------------
// The client side.

/// Appends `text` as one pkt-line.
pub(super) fn pkt(out: &mut Vec<u8>, text: &[u8]) -> anyhow::Result<()> {
    Ok(pkt_line::encode_data(text, out)?)
}

/// The start of a v2 request as git 2.47 sends it to a server with `capabilities`:
/// `command=<command>`, `agent` and `object-format` when advertised, then the delim-pkt.
/// Fails when the command is not advertised.
pub(super) fn command_start(
    out: &mut Vec<u8>,
    command: &str,
    capabilities: &[String],
) -> anyhow::Result<()> {
    ensure!(
        capabilities
            .iter()
            .any(|c| c == command || c.starts_with(&format!("{command}="))),
        "{command} is not advertised: {capabilities:?}"
    );
    pkt(out, format!("command={command}\n").as_bytes())?;
    if capabilities.iter().any(|c| c.starts_with("agent=")) {
        pkt(out, format!("{}\n", super::AGENT).as_bytes())?;
    }
    if capabilities.iter().any(|c| c == "object-format=sha1") {
        pkt(out, b"object-format=sha1\n")?;
    }
    pkt_line::encode_delimiter(out);
    Ok(())
}

/// What one pkt-line was.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Packet {
    Flush,
    Delim,
    ResponseEnd,
    /// The payload is in the caller's buffer.
    Data,
}

/// Reads one pkt-line; a data line's payload goes to `buf`.
pub(super) fn read_packet(reader: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Packet> {
    // The reader takes exactly one packet's bytes from the stream, never more.
    let mut reader = PacketReader::new(reader);
    let packet = match reader.read_packet().map_err(io::Error::other)? {
        None => return Err(io::ErrorKind::UnexpectedEof.into()),
        Some(pkt_line::Packet::Flush) => Packet::Flush,
        Some(pkt_line::Packet::Delimiter) => Packet::Delim,
        Some(pkt_line::Packet::ResponseEnd) => Packet::ResponseEnd,
        Some(pkt_line::Packet::Data(payload)) => {
            buf.clear();
            buf.extend_from_slice(payload);
            Packet::Data
        }
    };
    Ok(packet)
}

/// Reads data lines up to a flush, each without its newline; `ERR` lines fail.
pub(super) fn read_until_flush(
    reader: &mut impl Read,
    lines: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    // Bounded: a response of more lines than refs in any fixture is an error.
    for _ in 0..1_000_000 {
        match read_packet(reader, &mut buf)? {
            Packet::Flush => return Ok(()),
            Packet::Data => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.strip_suffix('\n').unwrap_or(&line);
                if let Some(message) = line.strip_prefix("ERR ") {
                    bail!("the server said ERR {message}");
                }
                lines.push(line.to_owned());
            }
            other => bail!("unexpected {other:?} packet"),
        }
    }
    bail!("no flush after 1,000,000 lines")
}

/// A connected client socket with `io_timeout` for reads and writes.
pub(super) fn connect_with_timeout(
    addr: SocketAddr,
    io_timeout: Duration,
) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(io_timeout))?;
    stream.set_write_timeout(Some(io_timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads the v2 advertisement: its capability lines after `version 2`.
pub(super) fn read_advertisement(reader: &mut impl Read) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    read_until_flush(reader, &mut lines)?;
    ensure!(
        lines.first().map(String::as_str) == Some("version 2"),
        "not a protocol v2 advertisement: {lines:?}"
    );
    lines.remove(0);
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_read() -> anyhow::Result<()> {
        let mut input: &[u8] = b"000eversion 2\n000cls-refs\n00010000";
        let mut buf = Vec::new();
        assert_eq!(read_packet(&mut input, &mut buf)?, Packet::Data);
        assert_eq!(buf, b"version 2\n");
        let mut lines = Vec::new();
        assert!(read_until_flush(&mut input, &mut lines).is_err());
        assert_eq!(lines, ["ls-refs"]);
        let mut input: &[u8] = b"000eversion 2\n000aagent\n0000";
        assert_eq!(read_advertisement(&mut input)?, ["agent"]);
        let mut input: &[u8] = b"000dERR nope\n0000";
        assert!(read_advertisement(&mut input).is_err());
        let mut input: &[u8] = b"fff0";
        assert!(read_packet(&mut input, &mut buf).is_err());
        Ok(())
    }

    #[test]
    fn proc_stat_fields() {
        let fields = stat_fields("42 (a (b) c) S 7 42 42 0 -1").unwrap_or_default();
        assert_eq!(fields[..2], ["S", "7"]);
    }
}
