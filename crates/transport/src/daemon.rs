//! The git:// front-end: a TCP listener that reads git daemon's request head and hands the
//! connection to a [`ConnectionHandler`].
//!
//! The head is one pkt-line: `git-upload-pack /path\0host=example.com\0\0version=2\0`.
//! Accepting and reading the head are async and bounded by an initial timeout; the session
//! itself runs on tokio's blocking pool over the socket with read and write timeouts, so a
//! stalled client is dropped after the idle timeout.

use std::{
    io::{Read, Write},
    sync::Arc,
    time::Duration,
};

use bstr::{BStr, BString, ByteSlice};
use tokio::{io::AsyncReadExt, net::TcpListener};
use tracing::Instrument;

use crate::pkt_line::{self, Decoded, Packet};

/// The service a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `git-upload-pack`: fetch and clone.
    UploadPack,
    /// `git-receive-pack`: push.
    ReceivePack,
    /// `git-upload-archive`: `git archive --remote`.
    UploadArchive,
}

impl Service {
    /// The name as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
            Service::UploadArchive => "git-upload-archive",
        }
    }
}

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
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    let (command, rest) = match data.find_byte(0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &b""[..]),
    };
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

/// What runs a session once the head is read. Implemented by the protocol layer; it sees
/// blocking streams only.
pub trait ConnectionHandler: Send + Sync + 'static {
    /// Serve the session `head` asks for over `input` and `output`. Errors are the handler's
    /// to report to the client and to log; the connection is closed afterwards either way.
    fn handle(&self, head: RequestHead, input: &mut dyn Read, output: &mut dyn Write);

    /// Tell a client whose head could not be parsed why (as an `ERR` line).
    fn reject(&self, error: &HeadError, output: &mut dyn Write) {
        let mut out = pkt_line::PacketWriter::new(output);
        let _ = out.error(error.to_string());
    }
}

/// Limits of the git:// front-end.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// How long a client may take to send its request head.
    pub init_timeout: Duration,
    /// How long a session may go without traffic in either direction.
    pub idle_timeout: Duration,
    /// The most connections served at once; more are closed on arrival.
    pub max_connections: usize,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            init_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            max_connections: 256,
        }
    }
}

/// Accept connections on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn ConnectionHandler>,
    options: DaemonOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let options = Arc::new(options);
    let max_connections = options.max_connections;
    crate::listener::accept_loop(listener, max_connections, shutdown, move |stream, peer| {
        let handler = Arc::clone(&handler);
        let options = Arc::clone(&options);
        async move { connection(stream, handler, &options).await }
            .instrument(tracing::info_span!("git", %peer))
    })
    .await
}

async fn connection(
    mut stream: tokio::net::TcpStream,
    handler: Arc<dyn ConnectionHandler>,
    options: &DaemonOptions,
) -> std::io::Result<()> {
    let head = tokio::time::timeout(options.init_timeout, read_head(&mut stream))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no request head in time")
        })??;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(options.idle_timeout))?;
    stream.set_write_timeout(Some(options.idle_timeout))?;
    tokio::task::spawn_blocking(move || {
        let mut input = std::io::BufReader::new(&stream);
        let mut output = std::io::BufWriter::new(&stream);
        match head {
            Ok(head) => {
                tracing::info!(service = head.service.as_str(), path = %BStr::new(&head.path), "request");
                handler.handle(head, &mut input, &mut output);
            }
            Err(err) => handler.reject(&err, &mut output),
        }
        let _ = output.flush();
    })
    .await
    .map_err(std::io::Error::other)
}

/// Read exactly one pkt-line (the head) without reading past it.
async fn read_head(
    stream: &mut tokio::net::TcpStream,
) -> std::io::Result<Result<RequestHead, HeadError>> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await?;
    let needed = match pkt_line::decode(&length) {
        Ok(Decoded::Incomplete { needed }) => needed,
        Ok(Decoded::Complete {
            packet: Packet::Data(data),
            ..
        }) => return Ok(parse_request_head(data)),
        Ok(Decoded::Complete { .. }) => return Ok(Err(HeadError::MissingPath)),
        Err(err) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, err)),
    };
    let mut packet = length.to_vec();
    packet.resize(4 + needed, 0);
    stream.read_exact(&mut packet[4..]).await?;
    match pkt_line::decode(&packet) {
        Ok(Decoded::Complete {
            packet: Packet::Data(data),
            ..
        }) => Ok(parse_request_head(data)),
        Ok(_) => Ok(Err(HeadError::MissingPath)),
        Err(err) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, err)),
    }
}

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
