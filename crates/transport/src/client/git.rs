//! git://: git daemon's protocol over a TCP connection (git's `git_connect_git()`).
//!
//! The client sends one pkt-line, `git-upload-pack <path>\0host=<host>[:<port>]\0`, with
//! `\0version=N\0` after it when it asks for v1 or v2; the rest of the connection is the
//! service's own conversation. Every wait (connecting, each read and write) is bounded by
//! [`ConnectOptions::timeout`].

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use packgate_wire::client::{ConnectError, ConnectOptions, Connection};
use packgate_wire::service::Service;

/// How much a finished connection reads and drops at most before it closes.
const MAX_DRAIN: usize = 1 << 20;

/// git daemon's port.
pub const DEFAULT_PORT: u16 = 9418;

/// The request head git sends: `<program> <path>\0host=<host>\0[\0version=N\0]`, without
/// its pkt-line length.
pub fn request_head(
    program: &str,
    path: &str,
    host: &str,
    port: Option<u16>,
    options: &ConnectOptions,
) -> Vec<u8> {
    let host = match (host.contains(':'), port) {
        (true, Some(port)) => format!("[{host}]:{port}"),
        (true, None) => format!("[{host}]"),
        (false, Some(port)) => format!("{host}:{port}"),
        (false, None) => host.to_owned(),
    };
    let mut head = format!("{program} {path}\0host={host}\0").into_bytes();
    if let Some(version) = options.version.parameter() {
        head.push(0);
        head.extend_from_slice(version.as_bytes());
        head.push(0);
    }
    head
}

/// Resolves `host:port` and connects to the first address that answers, each attempt
/// bounded by `timeout`.
pub(crate) fn tcp_connect(
    host: &str,
    port: u16,
    timeout: Option<Duration>,
) -> io::Result<TcpStream> {
    let addresses: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("unable to look up {host} (port {port})"),
    );
    for address in addresses {
        let attempt = match timeout {
            Some(timeout) => TcpStream::connect_timeout(&address, timeout),
            None => TcpStream::connect(address),
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(error) => {
                last = io::Error::new(
                    error.kind(),
                    format!("unable to connect to {host} ({address}): {error}"),
                )
            }
        }
    }
    Err(last)
}

/// A git:// connection.
#[derive(Debug)]
pub struct GitConnection {
    stream: TcpStream,
    reader: BufReader<Timed>,
    writer: BufWriter<Timed>,
}

/// The socket, with a timed-out read or write reported as [`io::ErrorKind::TimedOut`]
/// (the socket timeout shows as `WouldBlock` on Unix).
#[derive(Debug)]
struct Timed(TcpStream);

fn timed_out(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "timed out waiting for the git:// server",
        )
    } else {
        error
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                result => return result.map_err(timed_out),
            }
        }
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(timed_out)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(timed_out)
    }
}

impl GitConnection {
    /// Connects to git daemon at `host:port` and sends the request head for `service` and
    /// `path` (`program` instead of the service's name when given, as git's
    /// `--upload-pack`).
    pub fn connect(
        host: &str,
        port: Option<u16>,
        path: &str,
        service: Service,
        options: &ConnectOptions,
    ) -> Result<Self, ConnectError> {
        let program = match &options.program {
            Some(program) => program.as_str(),
            None => service.as_str(),
        };
        let head = request_head(program, path, host, port, options);
        let pkt_len = head.len() + 4;
        if pkt_len > 65520 {
            return Err(ConnectError::Url {
                url: path.to_owned(),
                reason: "the path is too long for a git:// request".to_owned(),
            });
        }
        let stream = tcp_connect(host, port.unwrap_or(DEFAULT_PORT), options.timeout)?;
        stream.set_read_timeout(options.timeout)?;
        stream.set_write_timeout(options.timeout)?;
        let _ = stream.set_nodelay(true);
        let mut writer = BufWriter::with_capacity(64 * 1024, Timed(stream.try_clone()?));
        writer.write_all(format!("{pkt_len:04x}").as_bytes())?;
        writer.write_all(&head)?;
        writer.flush()?;
        let reader = BufReader::with_capacity(64 * 1024, Timed(stream.try_clone()?));
        Ok(GitConnection {
            stream,
            reader,
            writer,
        })
    }
}

impl Connection for GitConnection {
    fn stateless(&self) -> bool {
        false
    }

    fn reader(&mut self) -> &mut dyn BufRead {
        &mut self.reader
    }

    fn writer(&mut self) -> &mut dyn Write {
        &mut self.writer
    }

    fn end_request(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        let flushed = self.writer.flush();
        // The server sees the end of its input; whatever it still says is read and dropped
        // (bounded by the read timeout), so it is not cut off with a reset.
        let _ = self.stream.shutdown(Shutdown::Write);
        let mut sink = [0u8; 8192];
        let mut drained = 0usize;
        // Bounded: a server that keeps talking is cut off after a while.
        while drained < MAX_DRAIN {
            match self.reader.read(&mut sink) {
                Ok(0) => break,
                Ok(n) => drained += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use packgate_wire::client::WireVersion;

    #[test]
    fn heads_as_git_sends_them() {
        let mut options = ConnectOptions::default();
        assert_eq!(
            request_head("git-upload-pack", "/r.git", "h", None, &options),
            b"git-upload-pack /r.git\0host=h\0\0version=2\0"
        );
        options.version = WireVersion::V0;
        assert_eq!(
            request_head("git-receive-pack", "~u/r", "h", Some(9000), &options),
            b"git-receive-pack ~u/r\0host=h:9000\0"
        );
        options.version = WireVersion::V1;
        assert_eq!(
            request_head("git-upload-pack", "/r", "::1", Some(1), &options),
            b"git-upload-pack /r\0host=[::1]:1\0\0version=1\0"
        );
    }
}
