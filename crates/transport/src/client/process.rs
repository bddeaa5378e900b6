//! A connection over a child process's standard input and output: what git does for local
//! paths and `file://` (it runs `git-upload-pack <path>`) and for ssh (it runs `ssh` with the
//! remote command).

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use packgate_wire::client::{ConnectOptions, Connection};

/// A running child process that serves one session on its standard input and output. Its
/// standard error is the caller's, as git passes a remote's messages on.
#[derive(Debug)]
pub struct ProcessConnection {
    child: Child,
    input: Option<BufWriter<ChildStdin>>,
    output: BufReader<ChildStdout>,
    closed: Closed,
}

impl ProcessConnection {
    /// Starts `command` with piped standard input and output and `GIT_PROTOCOL` set from
    /// `options.version`.
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
        Ok(ProcessConnection {
            child,
            input: Some(BufWriter::with_capacity(64 * 1024, input)),
            output: BufReader::with_capacity(64 * 1024, output),
            closed: Closed,
        })
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
        let status = self.child.wait()?;
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
}
