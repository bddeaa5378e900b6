//! Where a push's messages for the user go when the client has no sideband.
//!
//! With `side-band-64k` hook output and refusals travel to the client in band 2. Without it
//! git's receive-pack writes them to its standard error, and what that reaches depends on who
//! started it: the user's terminal for a stdio session (file://, ssh), git daemon's log for
//! git://, the web server's error log for smart HTTP. The library never picks a stream of
//! the process itself: the caller says where, in [`ReceivePackOptions::messages`].
//!
//! [`ReceivePackOptions::messages`]: super::ReceivePackOptions::messages

use std::{
    io::{self, Write},
    sync::{Arc, Mutex},
};

/// The tracing target of the messages [`MessageSink::Log`] logs.
pub const MESSAGE_LOG_TARGET: &str = "packgate::push_message";

/// The longest line [`MessageSink::Log`] keeps waiting for its end; a longer one is logged
/// in pieces of this size, so a hook that never ends a line costs bounded memory.
const MAX_LOG_LINE: usize = 16 * 1024;

/// Where messages for the user (hook output, `error: …` refusals) go when the client did
/// not ask for sideband. With sideband they always go to the client, in band 2.
#[derive(Clone, Default)]
pub enum MessageSink {
    /// Into the log: one `warn` event per line under [`MESSAGE_LOG_TARGET`] (a message the
    /// user could not be given is worth the operator's eye). What a network front-end uses:
    /// git's receive-pack writes them to git daemon's log, or the web server's error log.
    #[default]
    Log,
    /// Into this writer, one message at a time. A stdio session passes standard error,
    /// which reaches the user's terminal as git's receive-pack's does.
    Writer(Arc<Mutex<dyn Write + Send>>),
}

impl MessageSink {
    /// [`MessageSink::Writer`] for `writer`.
    pub fn writer(writer: impl Write + Send + 'static) -> Self {
        MessageSink::Writer(Arc::new(Mutex::new(writer)))
    }

    /// A writer for one session's messages.
    pub(crate) fn open(&self) -> SinkWriter {
        match self {
            MessageSink::Log => SinkWriter::Log(LogLines::default()),
            MessageSink::Writer(writer) => SinkWriter::Writer(Arc::clone(writer)),
        }
    }
}

impl std::fmt::Debug for MessageSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageSink::Log => f.write_str("Log"),
            MessageSink::Writer(_) => f.write_str("Writer(..)"),
        }
    }
}

/// One session's end of a [`MessageSink`].
pub(crate) enum SinkWriter {
    Log(LogLines),
    Writer(Arc<Mutex<dyn Write + Send>>),
}

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    /// One lock per call, so a message is not interleaved with another session's.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            SinkWriter::Log(lines) => {
                lines.push(buf);
                Ok(())
            }
            SinkWriter::Writer(writer) => lock(writer)?.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            // A line is logged when it ends (or on drop), never in pieces at a flush.
            SinkWriter::Log(_) => Ok(()),
            SinkWriter::Writer(writer) => lock(writer)?.flush(),
        }
    }
}

fn lock(
    writer: &Mutex<dyn Write + Send>,
) -> io::Result<std::sync::MutexGuard<'_, dyn Write + Send + 'static>> {
    writer
        .lock()
        .map_err(|_| io::Error::other("the message writer's lock is poisoned"))
}

/// Bytes cut into lines, each logged as it ends.
#[derive(Default)]
pub(crate) struct LogLines {
    pending: Vec<u8>,
}

impl LogLines {
    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.take(&bytes[..end]);
            self.emit();
            bytes = &bytes[end + 1..];
        }
        self.take(bytes);
    }

    /// Add to the pending line, logging full pieces of a line that grows too long.
    fn take(&mut self, mut bytes: &[u8]) {
        while self.pending.len() + bytes.len() > MAX_LOG_LINE {
            let room = MAX_LOG_LINE - self.pending.len();
            self.pending.extend_from_slice(&bytes[..room]);
            self.emit();
            bytes = &bytes[room..];
        }
        self.pending.extend_from_slice(bytes);
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.pending);
        let line = line.trim_end_matches('\r');
        if !line.is_empty() {
            tracing::warn!(target: MESSAGE_LOG_TARGET, "{line}");
        }
        self.pending.clear();
    }
}

impl Drop for LogLines {
    fn drop(&mut self) {
        self.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared buffer, for [`MessageSink::Writer`].
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_writer_sink_gets_the_bytes_as_they_are() {
        let buffer = Shared::default();
        let sink = MessageSink::writer(buffer.clone());
        let mut writer = sink.open();
        writer.write_all(b"error: one\npart").unwrap();
        writer.write_all(b"ial\n").unwrap();
        writer.flush().unwrap();
        assert_eq!(&*buffer.0.lock().unwrap(), b"error: one\npartial\n");
    }

    #[test]
    fn lines_too_long_are_logged_in_bounded_pieces() {
        let mut lines = LogLines::default();
        lines.push(&vec![b'x'; MAX_LOG_LINE * 2 + 10]);
        assert_eq!(lines.pending.len(), 10);
        lines.push(b"y\nz");
        assert_eq!(lines.pending, b"z");
    }
}
