//! Keepalive packets while the server works: an empty band-1 packet, `0005\x01`, whenever
//! a response has been silent for an interval (git's `uploadpack.keepAlive` and
//! `receive.keepAlive`), so clients and proxies do not give up on a busy server.
//!
//! [`run()`] runs the work on a scoped thread and keeps the output on the calling thread:
//! the work writes into a [`KeepaliveWriter`], whose bytes travel over a bounded channel to
//! the calling thread, which writes them out, or a keepalive packet when nothing came for
//! the interval. The output stream therefore needs no `Send` bound (front-ends hand out
//! `&mut dyn Write`), and only one thread ever writes to it.
//!
//! A keepalive goes out only between two packets: the calling thread follows the pkt-line
//! framing of what passes through ([`Framing`]), so the work may write a packet in as many
//! pieces as it likes. Should the bytes stop being pkt-lines, no keepalive is sent any more.

use std::{
    io::{self, Write},
    sync::{mpsc, OnceLock},
    time::Duration,
};

use packgate_wire::sideband::keepalive::{Framing, KEEPALIVE_PACKET};

/// How many writes may wait for the output before the work blocks (back-pressure).
const QUEUE_LENGTH: usize = 8;

/// What the work sends to the thread that owns the output.
enum Message {
    /// Bytes to write.
    Bytes(Vec<u8>),
    /// Flush the output.
    Flush,
}

/// Why the output failed, for the work's later writes.
struct Failure {
    kind: io::ErrorKind,
    message: String,
}

/// Where the work writes while [`run()`] sends keepalives: each write is handed to the
/// thread that owns the output.
///
/// Writing fails once the output has failed, with the kind of the original error (a client
/// that went away shows as `BrokenPipe`, as it would without keepalives).
pub struct KeepaliveWriter<'a> {
    sender: Option<mpsc::SyncSender<Message>>,
    failure: &'a OnceLock<Failure>,
}

impl std::fmt::Debug for KeepaliveWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepaliveWriter").finish_non_exhaustive()
    }
}

/// Says whether the output of a [`run()`] has failed (the client went away), without
/// borrowing the writer: for work that waits before it writes.
#[derive(Clone, Copy)]
pub struct ClosedWatch<'a> {
    failure: &'a OnceLock<Failure>,
}

impl ClosedWatch<'_> {
    /// Whether writing to the client has failed.
    pub fn is_closed(&self) -> bool {
        self.failure.get().is_some()
    }
}

impl<'a> KeepaliveWriter<'a> {
    /// A watch on this writer's output.
    pub fn watch(&self) -> ClosedWatch<'a> {
        ClosedWatch {
            failure: self.failure,
        }
    }
}

impl KeepaliveWriter<'_> {
    fn send(&mut self, message: Message) -> io::Result<()> {
        let sent = match &self.sender {
            Some(sender) => sender.send(message).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The output thread stopped reading: it failed.
        self.sender = None;
        Err(match self.failure.get() {
            Some(failure) => io::Error::new(failure.kind, failure.message.clone()),
            None => io::Error::new(io::ErrorKind::BrokenPipe, "the output is closed"),
        })
    }
}

impl Write for KeepaliveWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        self.send(Message::Bytes(data.to_vec()))?;
        Ok(data.len())
    }

    /// All of `bufs` as one message: a sideband packet's header and payload are one write.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let len = bufs.iter().map(|buf| buf.len()).sum();
        if len == 0 {
            return Ok(0);
        }
        let mut bytes = Vec::with_capacity(len);
        for buf in bufs {
            bytes.extend_from_slice(buf);
        }
        self.send(Message::Bytes(bytes))?;
        Ok(len)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send(Message::Flush)
    }
}

/// Run `work`, which writes a pkt-line response (sideband packets) into the
/// [`KeepaliveWriter`] it is given, on a scoped thread, while the calling thread writes its
/// output to `out` and a keepalive packet whenever `interval` passed without output.
///
/// Returns what `work` returns, once it has returned and everything it wrote is written and
/// flushed. A failure of `out` reaches `work` as an error of its next write; from then on
/// nothing more is written. A panic in `work` is resumed on the calling thread.
///
/// Call it only while the client reads sideband packets, and with a non-zero interval.
pub fn run<W, T, F>(out: &mut W, interval: Duration, work: F) -> T
where
    W: Write + ?Sized,
    T: Send,
    F: FnOnce(&mut KeepaliveWriter<'_>) -> T + Send,
{
    let failure = OnceLock::new();
    let (sender, receiver) = mpsc::sync_channel(QUEUE_LENGTH);
    let span = tracing::Span::current();
    std::thread::scope(|scope| {
        let failure = &failure;
        let worker = scope.spawn(move || {
            let _entered = span.enter();
            let mut writer = KeepaliveWriter {
                sender: Some(sender),
                failure,
            };
            work(&mut writer)
        });
        pump(out, interval, receiver, failure);
        match worker.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Write what arrives on `receiver` to `out`, and keepalives in the silences, until the
/// work drops its sender or `out` fails.
fn pump<W: Write + ?Sized>(
    out: &mut W,
    interval: Duration,
    receiver: mpsc::Receiver<Message>,
    failure: &OnceLock<Failure>,
) {
    let mut framing = Framing::default();
    let result = loop {
        let written = match receiver.recv_timeout(interval) {
            Ok(Message::Bytes(bytes)) => {
                framing.advance(&bytes);
                out.write_all(&bytes)
            }
            Ok(Message::Flush) => out.flush(),
            Err(mpsc::RecvTimeoutError::Timeout) if framing.at_boundary() => {
                tracing::trace!("sending a keepalive packet");
                out.write_all(KEEPALIVE_PACKET).and_then(|()| out.flush())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(()),
            Err(mpsc::RecvTimeoutError::Disconnected) => break out.flush(),
        };
        if let Err(err) = written {
            break Err(err);
        }
    };
    if let Err(err) = result {
        tracing::debug!(%err, "writing the response failed while the server works");
        let _ = failure.set(Failure {
            kind: err.kind(),
            message: err.to_string(),
        });
        // Dropping the receiver makes every later write of the work fail.
        drop(receiver);
    }
}

#[cfg(test)]
mod tests;
