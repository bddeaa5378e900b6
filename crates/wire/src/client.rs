//! The client side's contract: a connection to a git server's service, whatever carries it.
//!
//! packgate's fetch and push clients (`packgate-protocol`'s `client` module) speak git's
//! protocol over a [`Connection`]; the transports that make one (a local or ssh child
//! process, git://, smart HTTP) live in `packgate-transport` and are reached through a
//! [`Connector`]. As with the server's [`service`](crate::service) traits, this sits below
//! both so that the protocol never depends on sockets, processes or HTTP.
//!
//! A connection hides one difference that matters to the protocol and says so through
//! [`Connection::stateless`]: over smart HTTP every request is a POST answered alone, so the
//! client must repeat its state (v0: wants and every have so far) in each; over a stream
//! (git://, ssh, a child process) requests follow each other on one connection.
//!
//! What the reader yields is the same on every transport: first the server's advertisement
//! (v0's ref advertisement, or `version 2` and the v2 capabilities; smart HTTP's
//! `# service=…` header and its flush are removed by the transport), then, after each
//! [`Connection::end_request`], the server's answer to that request.

use std::io::{self, BufRead, Write};
use std::time::Duration;

use crate::service::Service;

/// The protocol version a client asks for (`GIT_PROTOCOL=version=N` or its equivalent on the
/// transport). The server may answer with a lower one; the client reads which from the
/// advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireVersion {
    /// v0: nothing is sent, the server advertises refs.
    V0,
    /// v1: `version=1`, a v0 advertisement preceded by `version 1`.
    V1,
    /// v2: `version=2`, the capability advertisement (git's default).
    #[default]
    V2,
}

impl WireVersion {
    /// The value a transport passes on (`version=2`), or `None` for v0.
    pub fn parameter(self) -> Option<&'static str> {
        match self {
            WireVersion::V0 => None,
            WireVersion::V1 => Some("version=1"),
            WireVersion::V2 => Some("version=2"),
        }
    }
}

/// How a [`Connector`] should connect.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// The protocol version to ask for.
    pub version: WireVersion,
    /// The bound on connecting and on every single wait for the server (a read or a write
    /// that makes no progress for this long fails with [`io::ErrorKind::TimedOut`]).
    /// `None`: no bound.
    pub timeout: Option<Duration>,
    /// The command run on the other end for local paths, `file://` and ssh (git's
    /// `--upload-pack`/`--receive-pack`): run by a shell with the quoted path appended, as
    /// git does. `None`: the connector's default for the service.
    pub program: Option<String>,
    /// HTTP Basic credentials (user, password) for smart HTTP, used when the URL carries
    /// none.
    pub credentials: Option<(String, String)>,
}

/// One open connection to a service (`git-upload-pack` or `git-receive-pack`).
///
/// Blocking: every call may wait for the server, at most [`ConnectOptions::timeout`] at a
/// time where the transport can bound it.
pub trait Connection: Send {
    /// True when every request is answered alone (smart HTTP), so it must carry all the
    /// state the server needs.
    fn stateless(&self) -> bool;

    /// The server's output: the advertisement first, then the answer to each request after
    /// its [`end_request`](Connection::end_request).
    fn reader(&mut self) -> &mut dyn BufRead;

    /// Where a request is written. Stateful transports send it as it is written (buffered);
    /// stateless ones collect it until [`end_request`](Connection::end_request).
    fn writer(&mut self) -> &mut dyn Write;

    /// Ends a request: a stateful transport flushes it to the server; a stateless one sends
    /// everything written since the last request and makes [`reader`](Connection::reader)
    /// read its answer.
    fn end_request(&mut self) -> io::Result<()>;

    /// Ends the connection: the server sees the end of its input, then the transport waits
    /// for it to finish (a child process's exit status) and reports a failure.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// What opens [`Connection`]s: a URL (or a local path, or git's scp-like `host:path`) and a
/// service.
pub trait Connector: Send + Sync {
    /// Connects to `service` at `url`.
    fn connect(
        &self,
        url: &str,
        service: Service,
        options: &ConnectOptions,
    ) -> Result<Box<dyn Connection>, ConnectError>;
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL could not be understood.
    #[error("invalid URL '{url}': {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL names a transport this connector does not have.
    #[error("transport '{0}' is not supported")]
    Unsupported(String),
    /// The server answered, and refused (git://'s `ERR`, an HTTP status, authentication).
    #[error("{0}")]
    Refused(String),
    /// The server could not be reached or the connection failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}
