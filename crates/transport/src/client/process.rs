//! A connection over a child process's standard input and output: what git does for local
//! paths and `file://` (it runs `git-upload-pack <path>`) and for ssh (it runs `ssh` with the
//! remote command).
//!
//! With [`ConnectOptions::timeout`], every read and write goes through a helper thread and
//! waits for it at most that long: a read or a write that makes no progress for the timeout
//! fails with [`io::ErrorKind::TimedOut`], and the child is killed when the connection is
//! dropped (or when [`Connection::finish`] waits longer than the timeout for its exit). A
//! pipe cannot be given a timeout in std, and a thread that owns the pipe is the one way to
//! stop waiting for it without unsafe code. Without a timeout the pipes are used directly.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::{Duration, Instant};

use packgate_wire::client::{ConnectOptions, Connection};

/// How much the helper thread reads from the child at a time.
const CHUNK: usize = 64 * 1024;

/// A running child process that serves one session on its standard input and output. Its
/// standard error is the caller's, as git passes a remote's messages on.
#[derive(Debug)]
pub struct ProcessConnection {
    child: Child,
    input: Option<BufWriter<Input>>,
    output: BufReader<Output>,
    closed: Closed,
    timeout: Option<Duration>,
}

impl ProcessConnection {
    /// Starts `command` with piped standard input and output and `GIT_PROTOCOL` set from
    /// `options.version`; with `options.timeout`, reads and writes are bounded by it.
    pub fn spawn(mut command: Command, options: &ConnectOptions) -> io::Result<Self> {
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
        match options.version.parameter() {
            Some(value) => command.env("GIT_PROTOCOL", value),
            None => command.env_remove("GIT_PROTOCOL"),
        };
        let mut child = command.spawn()?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("the child process has no pipes"));
        };
        let (input, output) = match options.timeout {
            None => (Input::Direct(input), Output::Direct(output)),
            Some(timeout) => match (
                Input::threaded(input, timeout),
                Output::threaded(output, timeout),
            ) {
                (Ok(input), Ok(output)) => (input, output),
                (Err(err), _) | (_, Err(err)) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(err);
                }
            },
        };
        Ok(ProcessConnection {
            child,
            input: Some(BufWriter::with_capacity(CHUNK, input)),
            output: BufReader::with_capacity(CHUNK, output),
            closed: Closed,
            timeout: options.timeout,
        })
    }

    /// Waits for the child to exit, at most the timeout when there is one (then it is
    /// killed).
    fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        match wait_bounded(&mut self.child, self.timeout)? {
            Some(status) => Ok(status),
            None => Err(timed_out(
                self.timeout.unwrap_or_default(),
                "for the remote program to exit",
            )),
        }
    }
}

/// Waits for `child` to exit, at most `timeout` (`None`: no bound); past it the child is
/// killed and reaped, and the answer is `None`. The wait polls: std has no wait with a
/// deadline, and a thread that waited would own the child the caller must be able to kill.
pub(crate) fn wait_bounded(
    child: &mut Child,
    timeout: Option<Duration>,
) -> io::Result<Option<std::process::ExitStatus>> {
    let Some(timeout) = timeout else {
        return child.wait().map(Some);
    };
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The error of a wait that reached the timeout.
fn timed_out(timeout: Duration, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no progress in {}s waiting {what}", timeout.as_secs_f64()),
    )
}

/// The child's standard input: the pipe, or a helper thread that writes to it.
#[derive(Debug)]
enum Input {
    Direct(ChildStdin),
    Threaded {
        chunks: Option<Sender<Vec<u8>>>,
        written: Receiver<io::Result<()>>,
        timeout: Duration,
        /// Set once a write timed out: the helper may still be blocked in it, so nothing
        /// else may be written after it.
        stalled: bool,
    },
}

impl Input {
    fn threaded(mut pipe: ChildStdin, timeout: Duration) -> io::Result<Input> {
        let (chunks, to_write) = mpsc::channel::<Vec<u8>>();
        let (done, written) = mpsc::channel();
        std::thread::Builder::new()
            .name("packgate-child-input".to_owned())
            .spawn(move || {
                // Ends when the connection drops its sender (closing the child's input with
                // the pipe) or when a write fails.
                for chunk in to_write {
                    let result = pipe.write_all(&chunk).and_then(|()| pipe.flush());
                    let failed = result.is_err();
                    if done.send(result).is_err() || failed {
                        break;
                    }
                }
            })?;
        Ok(Input::Threaded {
            chunks: Some(chunks),
            written,
            timeout,
            stalled: false,
        })
    }
}

impl Write for Input {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Input::Direct(pipe) => pipe.write(buf),
            Input::Threaded {
                chunks,
                written,
                timeout,
                stalled,
            } => {
                if *stalled {
                    return Err(timed_out(*timeout, "to write to the remote program"));
                }
                let Some(sender) = chunks.as_ref() else {
                    return Err(io::Error::new(io::ErrorKind::BrokenPipe, "input closed"));
                };
                if sender.send(buf.to_vec()).is_err() {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the remote program's input is closed",
                    ));
                }
                match written.recv_timeout(*timeout) {
                    Ok(Ok(())) => Ok(buf.len()),
                    Ok(Err(err)) => Err(err),
                    Err(RecvTimeoutError::Timeout) => {
                        *stalled = true;
                        Err(timed_out(*timeout, "to write to the remote program"))
                    }
                    Err(RecvTimeoutError::Disconnected) => Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the remote program's input is closed",
                    )),
                }
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Input::Direct(pipe) => pipe.flush(),
            // Every write above waited until the pipe took it.
            Input::Threaded { .. } => Ok(()),
        }
    }
}

/// The child's standard output: the pipe, or a helper thread that reads it.
#[derive(Debug)]
enum Output {
    Direct(ChildStdout),
    Threaded {
        chunks: Receiver<io::Result<Vec<u8>>>,
        current: Vec<u8>,
        position: usize,
        timeout: Duration,
        ended: bool,
    },
}

impl Output {
    fn threaded(mut pipe: ChildStdout, timeout: Duration) -> io::Result<Output> {
        // A few chunks ahead at most: the child waits for the reader as it would on the pipe.
        let (sender, chunks): (SyncSender<io::Result<Vec<u8>>>, _) = mpsc::sync_channel(4);
        std::thread::Builder::new()
            .name("packgate-child-output".to_owned())
            .spawn(move || loop {
                let mut chunk = vec![0; CHUNK];
                match pipe.read(&mut chunk) {
                    Ok(0) => {
                        let _ = sender.send(Ok(Vec::new()));
                        break;
                    }
                    Ok(n) => {
                        chunk.truncate(n);
                        if sender.send(Ok(chunk)).is_err() {
                            break;
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => {
                        let _ = sender.send(Err(err));
                        break;
                    }
                }
            })?;
        Ok(Output::Threaded {
            chunks,
            current: Vec::new(),
            position: 0,
            timeout,
            ended: false,
        })
    }
}

impl Read for Output {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Output::Direct(pipe) => pipe.read(buf),
            Output::Threaded {
                chunks,
                current,
                position,
                timeout,
                ended,
            } => {
                while *position == current.len() {
                    if *ended {
                        return Ok(0);
                    }
                    match chunks.recv_timeout(*timeout) {
                        Ok(Ok(chunk)) if chunk.is_empty() => *ended = true,
                        Ok(Ok(chunk)) => {
                            *current = chunk;
                            *position = 0;
                        }
                        Ok(Err(err)) => return Err(err),
                        Err(RecvTimeoutError::Timeout) => {
                            return Err(timed_out(*timeout, "for the remote program's output"))
                        }
                        Err(RecvTimeoutError::Disconnected) => *ended = true,
                    }
                }
                let n = buf.len().min(current.len() - *position);
                buf[..n].copy_from_slice(&current[*position..*position + n]);
                *position += n;
                Ok(n)
            }
        }
    }
}

/// git's way to run a remote program: `sh -c '<program> <quoted path>'`.
pub fn shell_command(program: &str, path: &str) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("{program} {}", shell_quote(path)));
    command
}

/// `s` in single quotes for a POSIX shell (git's `sq_quote_buf`).
pub fn shell_quote(s: &str) -> String {
    let mut quoted = String::with_capacity(s.len() + 2);
    quoted.push('\'');
    for c in s.chars() {
        match c {
            '\'' | '!' => {
                quoted.push('\'');
                quoted.push('\\');
                quoted.push(c);
                quoted.push('\'');
            }
            c => quoted.push(c),
        }
    }
    quoted.push('\'');
    quoted
}

/// The writer once the input was closed: every write fails.
#[derive(Debug)]
struct Closed;

impl Write for Closed {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the connection's input is closed",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Connection for ProcessConnection {
    fn stateless(&self) -> bool {
        false
    }

    fn reader(&mut self) -> &mut dyn BufRead {
        &mut self.output
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self.input.as_mut() {
            Some(input) => input,
            None => &mut self.closed,
        }
    }

    fn end_request(&mut self) -> io::Result<()> {
        match self.input.as_mut() {
            Some(input) => input.flush(),
            None => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the connection's input is closed",
            )),
        }
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        if let Some(mut input) = self.input.take() {
            // The server may have ended first; its exit status says more than the pipe.
            let _ = input.flush();
        }
        let status = self.wait()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "the remote program ended: {status}"
            )))
        }
    }
}

impl Drop for ProcessConnection {
    fn drop(&mut self) {
        // Dropped without finish (an error on the way): the child must not outlive us.
        if self.input.take().is_some() || self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_follows_git() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("x!"), "'x'\\!''");
    }

    fn stalled(timeout: Option<Duration>) -> ProcessConnection {
        // A server that neither reads nor writes.
        let mut command = Command::new("sleep");
        command.arg("60");
        let options = ConnectOptions {
            timeout,
            ..ConnectOptions::default()
        };
        ProcessConnection::spawn(command, &options).unwrap()
    }

    #[test]
    fn a_stalled_read_times_out() {
        let mut connection = stalled(Some(Duration::from_millis(200)));
        let started = Instant::now();
        let mut line = String::new();
        let err = connection.reader().read_line(&mut line).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() < Duration::from_secs(30));
        // finish kills the child that did not exit within the timeout.
        let err = Box::new(connection).finish().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_stalled_write_times_out() {
        let mut connection = stalled(Some(Duration::from_millis(200)));
        let started = Instant::now();
        // More than a pipe holds: the writes block once it is full.
        let block = vec![b'x'; 64 * 1024];
        let err = (0..64)
            .find_map(|_| connection.writer().write_all(&block).err())
            .expect("a write must fail once the pipe is full");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        // Later writes fail at once (they reach the pipe at the flush).
        connection.writer().write_all(b"more").unwrap();
        let err = connection.end_request().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() < Duration::from_secs(30));
        drop(connection);
    }

    #[test]
    fn with_a_timeout_a_session_still_reads_and_writes() {
        // cat echoes what it is sent, and ends with its input.
        let options = ConnectOptions {
            timeout: Some(Duration::from_secs(20)),
            ..ConnectOptions::default()
        };
        let mut connection = ProcessConnection::spawn(Command::new("cat"), &options).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let reader = {
            connection.writer().write_all(&data[..1000]).unwrap();
            connection.end_request().unwrap();
            let mut first = vec![0; 1000];
            connection.reader().read_exact(&mut first).unwrap();
            first
        };
        assert_eq!(reader, data[..1000]);
        Box::new(connection).finish().unwrap();
    }
}
