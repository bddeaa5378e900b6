//! The contract of the git:// front-end: the request head it reads (and its parser), and the
//! handlers it asks what to run.

use std::{
    io::{Read, Write},
    net::SocketAddr,
};

use bstr::{BString, ByteSlice};

use super::Service;
use crate::{pkt_line, v2};

/// A parsed git:// request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// What the client wants to run.
    pub service: Service,
    /// The repository path as sent, e.g. `/project.git`.
    pub path: BString,
    /// The `host=` parameter, if any.
    pub host: Option<BString>,
    /// Extra parameters after the second NUL, e.g. `version=2`.
    pub extra_parameters: Vec<BString>,
}

impl RequestHead {
    /// The extra parameters joined as the `GIT_PROTOCOL` environment variable would be.
    pub fn git_protocol(&self) -> String {
        self.extra_parameters
            .iter()
            .map(|p| p.to_str_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Whether the client asked for protocol version 2.
    pub fn wants_version_2(&self) -> bool {
        self.extra_parameters.iter().any(|p| p == "version=2")
    }
}

/// Why a request head is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The service name is not one git daemon knows.
    #[error("unknown service in request {0:?}")]
    UnknownService(BString),
    /// The path is missing or empty.
    #[error("missing repository path")]
    MissingPath,
    /// A parameter is not `key=value` text.
    #[error("malformed parameter {0:?}")]
    MalformedParameter(BString),
}

/// Parse the payload of the first pkt-line of a git:// connection.
pub fn parse_request_head(data: &[u8]) -> Result<RequestHead, HeadError> {
    let (command, rest) = match data.find_byte(0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &b""[..]),
    };
    // As git's daemon: one LF ending the part before the parameters is dropped.
    let command = command.strip_suffix(b"\n").unwrap_or(command);
    let (service, path) = [
        Service::UploadPack,
        Service::ReceivePack,
        Service::UploadArchive,
    ]
    .into_iter()
    .find_map(|service| {
        command
            .strip_prefix(service.as_str().as_bytes())
            .and_then(|rest| rest.strip_prefix(b" "))
            .map(|path| (service, path))
    })
    .ok_or_else(|| HeadError::UnknownService(command.into()))?;
    if path.is_empty() {
        return Err(HeadError::MissingPath);
    }
    let mut host = None;
    let mut extra_parameters = Vec::new();
    // `host=…\0` comes first; after an empty field (a second NUL) come extra parameters.
    let mut in_extra = false;
    for field in rest.split(|b| *b == 0) {
        if field.is_empty() {
            in_extra = true;
            continue;
        }
        if in_extra {
            if !field.contains(&b'=') && field.iter().any(|b| b.is_ascii_control()) {
                return Err(HeadError::MalformedParameter(field.into()));
            }
            extra_parameters.push(field.into());
        } else if let Some(value) = field.strip_prefix(b"host=") {
            host = Some(value.into());
        } else {
            return Err(HeadError::MalformedParameter(field.into()));
        }
    }
    Ok(RequestHead {
        service,
        path: path.into(),
        host,
        extra_parameters,
    })
}

/// What the front-end does with a connection once its head is read: decided by the
/// [`ConnectionHandler`].
pub enum Session {
    /// Refuse: the client is sent `ERR <message>` and the connection is closed.
    Refused(String),
    /// A protocol v2 session. The front-end sends the handler's advertisement, then reads
    /// each request itself — asynchronously, so a client that sits idle between commands
    /// holds no thread — and hands it to the handler on the blocking pool.
    Commands(Box<dyn CommandHandler>),
    /// A session whose client speaks once after the advertisement (a push: its commands,
    /// then the pack). The front-end sends the advertisement, waits without a thread until
    /// the client sends something, then runs the exchange on the blocking pool.
    Exchange(Box<dyn ExchangeHandler>),
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Session::Refused(message) => f.debug_tuple("Refused").field(message).finish(),
            Session::Commands(_) => f.write_str("Commands"),
            Session::Exchange(_) => f.write_str("Exchange"),
        }
    }
}

/// The two ends of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The client's address.
    pub peer: SocketAddr,
    /// The server's address the client connected to.
    pub local: SocketAddr,
}

/// Whether a session goes on after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Read the next request.
    Continue,
    /// Close the connection.
    Close,
}

/// Answers the requests of a protocol v2 session. Its methods run on the blocking pool and
/// write to the connection (with the idle timeout on every write).
pub trait CommandHandler: Send + 'static {
    /// Write the capability advertisement.
    fn advertise(&mut self, output: &mut dyn Write) -> std::io::Result<()>;

    /// How large a request may be.
    fn limits(&self) -> v2::Limits {
        v2::Limits::default()
    }

    /// Before [`CommandHandler::handle`]: whether `request` must first wait for something
    /// (a `wait-refs` until a ref changes). The front-end then awaits the [`Wait`](super::Wait)
    /// without a thread — ending the session if the client hangs up meanwhile, and without
    /// the idle timeout — and asks again, until this returns `None`; then it calls `handle`,
    /// which answers without blocking. The handler remembers what it prepared. By default
    /// nothing waits, and `handle` may block for as long as a request needs.
    fn prepare_wait(&mut self, request: &v2::Request) -> Option<super::Wait> {
        let _ = request;
        None
    }

    /// Answer one request, completely or ending in an error the client is told about.
    fn handle(&mut self, request: v2::Request, output: &mut dyn Write) -> Next;

    /// Tell the client its request is malformed; the connection is closed afterwards.
    fn reject(&mut self, error: &v2::RequestError, output: &mut dyn Write) {
        let mut out = pkt_line::PacketWriter::new(output);
        let _ = out.error(error.to_string());
    }
}

/// Runs a session in which the client speaks once, after the advertisement. Its methods run
/// on the blocking pool; reads and writes have the idle timeout.
pub trait ExchangeHandler: Send + 'static {
    /// Write the advertisement.
    fn advertise(&mut self, output: &mut dyn Write) -> std::io::Result<()>;

    /// Read the client's part and answer it. Errors are the handler's to report to the
    /// client and to log; the connection is closed afterwards.
    fn exchange(self: Box<Self>, input: &mut dyn Read, output: &mut dyn Write);
}

/// What decides, per connection, what to run. Implemented by the protocol layer.
pub trait ConnectionHandler: Send + Sync + 'static {
    /// Decide what to do with the session `head` asks for. Runs on the blocking pool (it may
    /// open a repository).
    fn open(&self, head: &RequestHead, addresses: Addresses) -> Session;

    /// [`ConnectionHandler::open`] for a `user` the front-end authenticated (the SSH
    /// front-end's key owner), whom a push's hooks are told (`REMOTE_USER`). By default the
    /// user is not used.
    fn open_as(&self, head: &RequestHead, addresses: Addresses, user: Option<&str>) -> Session {
        let _ = user;
        self.open(head, addresses)
    }

    /// Tell a client whose head could not be parsed why (as an `ERR` line).
    fn reject(&self, error: &HeadError, output: &mut dyn Write) {
        let mut out = pkt_line::PacketWriter::new(output);
        let _ = out.error(error.to_string());
    }
}

/// The `tracing` target of the events an operator of a git daemon expects in its log
/// (connections, their parameters, requests, refusals), worded as git daemon words them.
pub const LOG_TARGET: &str = "packgate::daemon";

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[u8], expected: Result<RequestHead, HeadError>) {
        assert_eq!(
            parse_request_head(input),
            expected,
            "input: {:?}",
            input.as_bstr()
        );
    }

    fn head(service: Service, path: &str, host: Option<&str>, extra: &[&str]) -> RequestHead {
        RequestHead {
            service,
            path: path.into(),
            host: host.map(Into::into),
            extra_parameters: extra.iter().map(|s| BString::from(*s)).collect(),
        }
    }

    #[test]
    fn request_heads() {
        check(
            b"git-upload-pack /project.git\0host=example.com\0",
            Ok(head(
                Service::UploadPack,
                "/project.git",
                Some("example.com"),
                &[],
            )),
        );
        check(
            b"git-upload-pack /p\0host=h:9418\0\0version=2\0",
            Ok(head(
                Service::UploadPack,
                "/p",
                Some("h:9418"),
                &["version=2"],
            )),
        );
        check(
            b"git-receive-pack /p\n",
            Ok(head(Service::ReceivePack, "/p", None, &[])),
        );
        // The LF goes with the path, before the parameters (git's t5570).
        check(
            b"git-upload-pack /interp.git\n\0host=localhost",
            Ok(head(
                Service::UploadPack,
                "/interp.git",
                Some("localhost"),
                &[],
            )),
        );
        check(b"git-upload-pack \0", Err(HeadError::MissingPath));
        check(
            b"git-frobnicate /p\0",
            Err(HeadError::UnknownService("git-frobnicate /p".into())),
        );
        check(
            b"git-upload-pack /p\0bogus\0",
            Err(HeadError::MalformedParameter("bogus".into())),
        );
    }

    #[test]
    fn git_protocol_joins_parameters() {
        let head = head(
            Service::UploadPack,
            "/p",
            None,
            &["version=2", "object-format=sha1"],
        );
        assert_eq!(head.git_protocol(), "version=2:object-format=sha1");
        assert!(head.wants_version_2());
    }
}
