//! upload-pack over protocol v2: the capability advertisement, `ls-refs` and `fetch`.
//!
//! A session is driven by [`UploadPack::serve()`] over any blocking reader and writer
//! (standard input and output for `packgate upload-pack`). Front-ends that read requests
//! themselves (asynchronously, one HTTP body at a time) call [`UploadPack::advertise()`] and
//! [`UploadPack::handle()`] directly.
//!
//! Every request either gets a complete response or ends in an explicit error: `ERR <reason>`
//! while nothing else of the response has been sent, or a sideband-3 message once the pack
//! is streaming. After an error the session ends.

mod fetch;
mod ls_refs;
mod shallow;
mod v0;

pub use v0::V0Options;

use std::io::{Read, Write};

use bstr::{BString, ByteSlice};
use packgate_wire::{
    pkt_line::{PacketReader, PacketWriter},
    v2,
};

use crate::{config::UploadPackConfig, repository::Repository};

/// The agent string sent in the advertisement.
pub const AGENT: &str = concat!("packgate/", env!("CARGO_PKG_VERSION"));

/// How a session is run.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// HTTP-style: exactly one request per session, and no advertisement unless asked for.
    pub stateless: bool,
    /// Only send the capability advertisement, then end.
    pub advertise_only: bool,
    /// Limits on the size of one request.
    pub request_limits: v2::Limits,
}

/// The error that ends a session. The client has already been told what went wrong where
/// that was possible; the caller only needs to log this and drop the connection.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reading from or writing to the client failed.
    #[error("connection failed")]
    Io(#[from] std::io::Error),
    /// Writing a pkt-line to the client failed.
    #[error("could not write to the client")]
    Write(#[from] packgate_wire::pkt_line::WriteError),
    /// The client sent a request that is not valid; it was answered with `ERR`.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request could not be served; the client was told why.
    #[error("could not serve the request: {0}")]
    Failed(String),
}

impl ServeError {
    /// Whether the client went away (broken pipe, reset, early EOF): an ordinary end of a
    /// session for a server, not worth more than a debug log.
    pub fn is_disconnect(&self) -> bool {
        let io = match self {
            ServeError::Io(err) => err,
            ServeError::Write(packgate_wire::pkt_line::WriteError::Io(err)) => err,
            _ => return false,
        };
        matches!(
            io.kind(),
            std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::UnexpectedEof
        )
    }
}

/// What the session should do after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next request.
    Continue,
    /// The client ended the session.
    End,
}

/// upload-pack for one repository.
#[derive(Debug)]
pub struct UploadPack<'repo> {
    repo: &'repo Repository,
    config: UploadPackConfig,
}

impl<'repo> UploadPack<'repo> {
    /// Serve `repo` with its upload-pack settings.
    pub fn new(repo: &'repo Repository) -> Result<Self, crate::config::ConfigError> {
        Ok(UploadPack {
            repo,
            config: UploadPackConfig::from_config(repo.config())?,
        })
    }

    /// Write the v2 capability advertisement, ending in a flush.
    ///
    /// It lists exactly what is implemented: `ls-refs` with `unborn`, `fetch` with `shallow`
    /// (want, have, done, ofs-delta, thin-pack, no-progress, include-tag, and the shallow
    /// and deepen arguments), `server-option` and sha1.
    pub fn advertise<W: Write>(&self, out: &mut PacketWriter<W>) -> Result<(), ServeError> {
        out.write_text("version 2")?;
        out.write_text(format!("agent={AGENT}"))?;
        out.write_text("ls-refs=unborn")?;
        // git 2.47 also lists wait-for-done here: not implemented yet.
        out.write_text("fetch=shallow")?;
        out.write_text("server-option")?;
        out.write_text("object-format=sha1")?;
        out.flush_pkt()?;
        out.get_mut().flush()?;
        Ok(())
    }

    /// Run a whole session: the advertisement (unless stateless), then requests until the
    /// client ends the session (or, stateless, exactly one request).
    pub fn serve<R: Read, W: Write>(
        &self,
        input: R,
        output: W,
        options: &SessionOptions,
    ) -> Result<(), ServeError> {
        let mut reader = PacketReader::new(input);
        let mut out = PacketWriter::new(output);
        if options.advertise_only || !options.stateless {
            self.advertise(&mut out)?;
            if options.advertise_only {
                return Ok(());
            }
        }
        loop {
            let request = match v2::read_request(&mut reader, &options.request_limits) {
                Ok(Some(request)) => request,
                Ok(None) => return Ok(()),
                Err(err) => return Err(reject(&mut out, err.to_string())),
            };
            let flow = self.handle(request, &mut out)?;
            out.get_mut().flush()?;
            if flow == Flow::End {
                return Ok(());
            }
            if options.stateless {
                // One request per stateless session; anything after it is a protocol error.
                return match reader.read_packet() {
                    Ok(None) => Ok(()),
                    Ok(Some(_)) => {
                        Err(reject(&mut out, "unexpected data after the request".into()))
                    }
                    Err(err) => Err(reject(&mut out, err.to_string())),
                };
            }
        }
    }

    /// Answer one request. Errors in the request are answered with `ERR` before returning.
    pub fn handle<W: Write>(
        &self,
        request: v2::Request,
        out: &mut PacketWriter<W>,
    ) -> Result<Flow, ServeError> {
        if let Err(message) = check_capabilities(&request.capabilities) {
            return Err(reject(out, message));
        }
        match request.command.as_str() {
            "ls-refs" => ls_refs::handle(self, &request.arguments, out),
            "fetch" => fetch::handle(self, &request.arguments, out),
            other => Err(reject(out, format!("invalid command '{other}'"))),
        }
    }
}

/// Validate the capability lines of a request: only what we advertised may appear.
fn check_capabilities(capabilities: &[BString]) -> Result<(), String> {
    for capability in capabilities {
        let (key, value) = match capability.split_once_str("=") {
            Some((key, value)) => (key, Some(value)),
            None => (capability.as_slice(), None),
        };
        match (key, value) {
            (b"agent", Some(_)) | (b"server-option", Some(_)) => {}
            (b"object-format", Some(b"sha1")) => {}
            (b"object-format", Some(other)) => {
                return Err(format!(
                    "mismatched object format: server sha1, client {}",
                    other.as_bstr()
                ))
            }
            _ => return Err(format!("unknown capability '{}'", capability.as_bstr())),
        }
    }
    Ok(())
}

/// Tell the client why its request fails, then hand back the error that ends the session.
fn reject<W: Write>(out: &mut PacketWriter<W>, message: String) -> ServeError {
    tracing::debug!(%message, "rejecting request");
    // The client may be gone already; the error we return is what matters then.
    let _ = out.error(&message).and_then(|()| out.get_mut().flush());
    ServeError::BadRequest(message)
}

#[cfg(test)]
mod tests;
