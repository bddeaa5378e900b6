//! The standard input and output of a stdio session (`upload-pack`, `receive-pack`), with
//! `--timeout`.
//!
//! `--timeout=N` bounds every wait for the client: a read that gets no byte for N seconds, or
//! a write of which the client takes no byte for N seconds, fails with
//! [`io::ErrorKind::TimedOut`]. The session then ends through its ordinary error path, so
//! whatever it holds is released as usual (a push's quarantine is deleted); the process is never ended under it. Time the server spends working (finding
//! objects, indexing a pack, running hooks) is not waiting for the client and does not count.
//!
//! Blocking pipes have no time limit of their own, so standard input and output are served by
//! one helper thread each (on duplicates of the descriptors), and the session waits for them
//! with a limit. After a timeout the session is over: every later read and write fails at once.

use std::{
    fs::File,
    io::{self, BufWriter, Read, Write},
    os::fd::AsFd,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

/// Bytes the input thread reads at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes the output thread writes at a time: a pipe write blocks until all of it is taken, so
/// smaller pieces show that a slow client still reads.
const WRITE_PIECE: usize = 16 * 1024;
/// The buffer between the session and standard output: small pkt-lines are gathered into
/// writes of up to this size, and larger writes (a pack's 64 KiB sideband packets) pass
/// straight through, not copied into it.
const OUTPUT_BUFFER: usize = 32 * 1024;

/// A session's input and output.
pub struct SessionIo {
    /// Standard input.
    pub input: Box<dyn Read>,
    /// Standard output, buffered: the session flushes it.
    pub output: Box<dyn Write>,
    /// With `--timeout`: the limit, and whether it was reached.
    pub timeout: Option<Timeout>,
}

/// `--timeout` of a session.
pub struct Timeout {
    /// The longest wait for the client.
    pub limit: Duration,
    expired: Expired,
}

impl Timeout {
    /// Whether a wait for the client outlasted the limit, which ended the session.
    pub fn reached(&self) -> bool {
        self.expired.is_set()
    }
}

impl SessionIo {
    /// Standard input and output; with a `limit`, no wait for the client may last longer.
    pub fn new(limit: Option<Duration>) -> io::Result<SessionIo> {
        let Some(limit) = limit else {
            // Standard output as a file, not std's `Stdout`, which looks for newlines in what
            // it is given and copies what follows the last one: a pack is binary.
            let stdout = File::from(io::stdout().as_fd().try_clone_to_owned()?);
            return Ok(SessionIo {
                input: Box::new(io::stdin().lock()),
                output: Box::new(BufWriter::with_capacity(OUTPUT_BUFFER, stdout)),
                timeout: None,
            });
        };
        let expired = Expired::default();
        let stdin = File::from(io::stdin().as_fd().try_clone_to_owned()?);
        let stdout = File::from(io::stdout().as_fd().try_clone_to_owned()?);
        Ok(SessionIo {
            input: Box::new(TimedReader::spawn(stdin, limit, expired.clone())?),
            output: Box::new(BufWriter::with_capacity(
                OUTPUT_BUFFER,
                TimedWriter::spawn(stdout, limit, expired.clone())?,
            )),
            timeout: Some(Timeout { limit, expired }),
        })
    }
}

/// Set once a wait for the client outlasted the limit; shared by input and output.
#[derive(Clone, Default)]
struct Expired(Arc<AtomicBool>);

impl Expired {
    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

fn timed_out(limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no traffic from the client for {}s", limit.as_secs()),
    )
}

/// Reads what a helper thread reads from the real input, waiting at most the limit for it.
struct TimedReader {
    chunks: Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    position: usize,
    ended: bool,
    limit: Duration,
    expired: Expired,
}

impl TimedReader {
    /// Start reading `input` on a helper thread. It reads ahead by at most two chunks.
    fn spawn(
        mut input: impl Read + Send + 'static,
        limit: Duration,
        expired: Expired,
    ) -> io::Result<TimedReader> {
        let (sender, chunks): (SyncSender<io::Result<Vec<u8>>>, _) = mpsc::sync_channel(1);
        thread::Builder::new()
            .name("session-input".into())
            .spawn(move || loop {
                let mut buffer = vec![0; READ_CHUNK];
                let result = match input.read(&mut buffer) {
                    Ok(n) => {
                        buffer.truncate(n);
                        Ok(buffer)
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => Err(err),
                };
                // The end of the input or an error is the last thing sent.
                let last = !matches!(&result, Ok(bytes) if !bytes.is_empty());
                if sender.send(result).is_err() || last {
                    return;
                }
            })?;
        Ok(TimedReader {
            chunks,
            chunk: Vec::new(),
            position: 0,
            ended: false,
            limit,
            expired,
        })
    }
}

impl Read for TimedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.position == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            if self.expired.is_set() {
                return Err(timed_out(self.limit));
            }
            match self.chunks.recv_timeout(self.limit) {
                Ok(Ok(chunk)) => {
                    self.ended = chunk.is_empty();
                    self.chunk = chunk;
                    self.position = 0;
                }
                Ok(Err(err)) => {
                    self.ended = true;
                    return Err(err);
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.expired.set();
                    return Err(timed_out(self.limit));
                }
                Err(RecvTimeoutError::Disconnected) => self.ended = true,
            }
        }
        let n = buf.len().min(self.chunk.len() - self.position);
        buf[..n].copy_from_slice(&self.chunk[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

/// When the output last moved, for the writer's limit.
struct Clock {
    start: Instant,
    last_nanos: AtomicU64,
}

impl Clock {
    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_nanos.store(now, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_nanos(self.last_nanos.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Hands each write to a helper thread that writes to the real output, and waits until it is
/// written; fails if the client takes nothing for the limit.
struct TimedWriter {
    jobs: Sender<Vec<u8>>,
    done: Receiver<io::Result<()>>,
    clock: Arc<Clock>,
    limit: Duration,
    expired: Expired,
    failed: bool,
}

impl TimedWriter {
    /// Start the helper thread writing to `output`.
    fn spawn(
        mut output: impl Write + Send + 'static,
        limit: Duration,
        expired: Expired,
    ) -> io::Result<TimedWriter> {
        let (jobs, job_receiver) = mpsc::channel::<Vec<u8>>();
        let (done_sender, done) = mpsc::channel();
        let clock = Arc::new(Clock {
            start: Instant::now(),
            last_nanos: AtomicU64::new(0),
        });
        let progress = Arc::clone(&clock);
        thread::Builder::new()
            .name("session-output".into())
            .spawn(move || {
                for job in job_receiver {
                    let result = write_in_pieces(&mut output, &job, &progress);
                    let failed = result.is_err();
                    if done_sender.send(result).is_err() || failed {
                        return;
                    }
                }
            })?;
        Ok(TimedWriter {
            jobs,
            done,
            clock,
            limit,
            expired,
            failed: false,
        })
    }
}

fn write_in_pieces(output: &mut impl Write, mut bytes: &[u8], clock: &Clock) -> io::Result<()> {
    while !bytes.is_empty() {
        let piece = bytes.len().min(WRITE_PIECE);
        match output.write(&bytes[..piece]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = &bytes[n..];
                clock.touch();
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    output.flush()
}

impl Write for TimedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.failed || self.expired.is_set() {
            self.failed = true;
            return Err(timed_out(self.limit));
        }
        self.clock.touch();
        if self.jobs.send(buf.to_vec()).is_err() {
            self.failed = true;
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        loop {
            let wait = self.limit.saturating_sub(self.clock.idle());
            match self.done.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(result) => {
                    self.failed = result.is_err();
                    return result;
                }
                // The client still takes bytes, only slowly: wait on.
                Err(RecvTimeoutError::Timeout) if self.clock.idle() < self.limit => {}
                Err(RecvTimeoutError::Timeout) => {
                    self.failed = true;
                    self.expired.set();
                    return Err(timed_out(self.limit));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.failed = true;
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        // Every write is complete when it returns.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader fed through a channel: it blocks while nothing is sent, ends when the sender
    /// is dropped.
    struct Fed(Receiver<Vec<u8>>);

    impl Read for Fed {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.recv() {
                Ok(bytes) => {
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    Ok(bytes.len())
                }
                Err(_) => Ok(0),
            }
        }
    }

    /// A writer that takes one piece each time it is allowed to.
    struct Gated(Receiver<()>, Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0.recv().is_err() {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            self.1
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const LIMIT: Duration = Duration::from_millis(200);

    fn check_read(result: io::Result<usize>, expected: Result<usize, io::ErrorKind>) {
        assert_eq!(result.map_err(|err| err.kind()), expected);
    }

    #[test]
    fn reads_pass_through_and_end() {
        let (feed, fed) = mpsc::channel();
        let expired = Expired::default();
        let mut reader =
            TimedReader::spawn(Fed(fed), LIMIT, expired.clone()).unwrap_or_else(|e| panic!("{e}"));
        feed.send(b"hello".to_vec())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0; 3];
        check_read(reader.read(&mut buf), Ok(3));
        assert_eq!(&buf, b"hel");
        check_read(reader.read(&mut buf), Ok(2));
        assert_eq!(&buf[..2], b"lo");
        drop(feed);
        check_read(reader.read(&mut buf), Ok(0));
        check_read(reader.read(&mut buf), Ok(0));
        assert!(!expired.is_set());
    }

    #[test]
    fn a_stalled_read_times_out_and_stays_timed_out() {
        let (feed, fed) = mpsc::channel();
        let expired = Expired::default();
        let mut reader =
            TimedReader::spawn(Fed(fed), LIMIT, expired.clone()).unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0; 8];
        let started = Instant::now();
        check_read(reader.read(&mut buf), Err(io::ErrorKind::TimedOut));
        assert!(started.elapsed() >= LIMIT);
        assert!(expired.is_set());
        // Late bytes do not revive the session.
        feed.send(b"late".to_vec())
            .unwrap_or_else(|e| panic!("{e}"));
        check_read(reader.read(&mut buf), Err(io::ErrorKind::TimedOut));
    }

    #[test]
    fn time_between_reads_does_not_count() {
        let (feed, fed) = mpsc::channel();
        let expired = Expired::default();
        let mut reader =
            TimedReader::spawn(Fed(fed), LIMIT, expired.clone()).unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0; 8];
        feed.send(b"a".to_vec()).unwrap_or_else(|e| panic!("{e}"));
        check_read(reader.read(&mut buf), Ok(1));
        // The server works for longer than the limit; the client's bytes wait meanwhile.
        feed.send(b"b".to_vec()).unwrap_or_else(|e| panic!("{e}"));
        thread::sleep(LIMIT * 2);
        check_read(reader.read(&mut buf), Ok(1));
        assert!(!expired.is_set());
    }

    #[test]
    fn slow_progress_is_not_a_timeout_but_a_stall_is() {
        // Generous, so that a busy machine's scheduling does not look like a stall.
        const LIMIT: Duration = Duration::from_millis(400);
        const PIECES: usize = 8;
        let (gate, gated) = mpsc::channel();
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let expired = Expired::default();
        let mut writer =
            TimedWriter::spawn(Gated(gated, Arc::clone(&written)), LIMIT, expired.clone())
                .unwrap_or_else(|e| panic!("{e}"));
        let bytes = vec![7u8; WRITE_PIECE * PIECES];
        // One piece every quarter of the limit: the whole write takes twice the limit.
        let opener = thread::spawn(move || {
            for _ in 0..PIECES {
                thread::sleep(LIMIT / 4);
                if gate.send(()).is_err() {
                    return;
                }
            }
            // Then stall, holding the gate.
            thread::sleep(LIMIT * 3);
            drop(gate);
        });
        writer.write_all(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            written.lock().map(|w| w.len()).unwrap_or_default(),
            bytes.len()
        );
        assert!(!expired.is_set());
        let started = Instant::now();
        let result = writer.write_all(b"stalled");
        assert_eq!(
            result.map_err(|err| err.kind()),
            Err(io::ErrorKind::TimedOut)
        );
        assert!(started.elapsed() >= LIMIT);
        assert!(expired.is_set());
        assert_eq!(
            writer.write_all(b"x").map_err(|err| err.kind()),
            Err(io::ErrorKind::TimedOut)
        );
        opener
            .join()
            .unwrap_or_else(|_| panic!("the gate thread panicked"));
    }
}
