//! upload-pack over protocol v2: the capability advertisement, `ls-refs`, `fetch` and, when
//! configured, `object-info`, `bundle-uri` and `wait-refs` (with refs tokens for `ls-refs`,
//! docs/refs-watch.md).
//!
//! A session is driven by [`UploadPack::serve()`] over any blocking reader and writer
//! (standard input and output for `packgate upload-pack`). Front-ends that read requests
//! themselves (asynchronously, one HTTP body at a time) call [`UploadPack::advertise()`] and
//! [`UploadPack::handle()`] directly.
//!
//! Every request either gets a complete response or ends in an explicit error: `ERR <reason>`
//! while nothing else of the response has been sent (a band-3 message instead once a
//! `fetch` asked for `sideband-all`), or a sideband-3 message once the pack is streaming. After an error the session ends.

mod bundle_uri;
mod cached;
mod fetch;
mod ls_refs;
mod object_info;
mod shallow;
mod v0;
mod wait_refs;

pub use v0::V0Options;
pub use wait_refs::{WaitState, DEFAULT_TIMEOUT as DEFAULT_WAIT_REFS_TIMEOUT};

use std::io::{Read, Write};

use bstr::{BString, ByteSlice};
use packgate_wire::{
    pkt_line::{PacketReader, PacketWriter},
    v2,
};

use crate::{
    config::{UnbornPolicy, UploadPackConfig},
    repository::Repository,
};

/// The agent string sent in the advertisement, unless `GIT_USER_AGENT` names another.
pub const AGENT: &str = concat!("packgate/", env!("CARGO_PKG_VERSION"));

/// The agent this server names in its advertisements: [`AGENT`], or `GIT_USER_AGENT` as git
/// honours it, with every character that is not printable ASCII or is a space replaced by `.`
/// (git's `git_user_agent_sanitized()`), since the agent is one space-separated capability.
pub fn agent() -> String {
    match std::env::var_os("GIT_USER_AGENT") {
        Some(agent) => sanitize_agent(agent.as_encoded_bytes()),
        None => AGENT.to_owned(),
    }
}

fn sanitize_agent(agent: &[u8]) -> String {
    agent
        .iter()
        .map(|&byte| {
            if byte.is_ascii_graphic() {
                char::from(byte)
            } else {
                '.'
            }
        })
        .collect()
}

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
    #[error("{0}")]
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
    /// This server session's id, advertised under `transfer.advertiseSID`.
    session_id: String,
    /// Where packs are shared with other requests of this process, if anywhere.
    pack_cache: Option<crate::pack_cache::PackCache>,
    /// Where pack generation takes its CPU slots and memory from.
    budget: crate::budget::Budget,
    /// Who the request is from, for the budget's fairness between clients.
    client: std::sync::Arc<str>,
    /// Whether [`UploadPack::advertise()`] and [`UploadPack::handle()`] serve a stateful
    /// connection, which can wait (`wait-refs`). [`UploadPack::serve()`] decides by its
    /// options instead.
    stateful: bool,
}

/// A new session id: unique to this process and call, without spaces (it goes into the
/// v0 capability list), like git's trace2 session ids (time, then process id).
pub(crate) fn new_session_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros())
        .unwrap_or(0);
    format!(
        "packgate-{micros}-P{:08x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The features of the v2 `fetch` command, in git's order, each only when configured and
/// implemented: git 2.47 sends "shallow wait-for-done filter ref-in-want sideband-all
/// packfile-uris".
fn fetch_features(config: &UploadPackConfig) -> Vec<&'static str> {
    let mut features = vec!["shallow", "wait-for-done"];
    if config.allow_filter {
        features.push("filter");
    }
    if config.allow_ref_in_want {
        features.push("ref-in-want");
    }
    if config.allow_sideband_all {
        features.push("sideband-all");
    }
    if !config.blob_packfile_uris.is_empty() || config.blob_packfile_uri_error.is_some() {
        features.push("packfile-uris");
    }
    features
}

impl<'repo> UploadPack<'repo> {
    /// Serve `repo` with its upload-pack settings.
    pub fn new(repo: &'repo Repository) -> Result<Self, crate::config::ConfigError> {
        Ok(UploadPack {
            repo,
            config: UploadPackConfig::from_config(repo.config())?,
            session_id: new_session_id(),
            pack_cache: None,
            budget: crate::budget::Budget::global(),
            client: std::sync::Arc::from("local"),
            stateful: false,
        })
    }

    /// Say whether [`UploadPack::advertise()`] and [`UploadPack::handle()`] serve a stateful
    /// connection (git://, SSH: one connection for the whole session), where a request may
    /// wait: only then is `wait-refs` advertised and served. Off by default (HTTP).
    pub fn stateful(mut self, stateful: bool) -> Self {
        self.stateful = stateful;
        self
    }

    /// Share packs with the other requests of this process through `cache` (single flight
    /// and cached responses, see [`crate::pack_cache`]); `None`, the default, generates every
    /// pack for its request alone.
    pub fn with_pack_cache(mut self, cache: Option<crate::pack_cache::PackCache>) -> Self {
        self.pack_cache = cache;
        self
    }

    /// Take pack generation's CPU slots and memory from `budget`, as a request of `client`
    /// (an address or a user: the budget's queue takes turns between clients). Without this
    /// the process-wide [`Budget::global()`](crate::budget::Budget::global) is used.
    pub fn with_budget(mut self, budget: crate::budget::Budget, client: &str) -> Self {
        self.budget = budget;
        self.client = std::sync::Arc::from(client);
        self
    }

    /// The v2 capabilities, in git's order (packgate's own last): exactly what is configured
    /// and implemented. `wait-refs` only on a `stateful` connection.
    fn capabilities(&self, stateful: bool) -> Vec<String> {
        let config = &self.config;
        let ls_refs = match (config.lsrefs_unborn, config.refs_watch) {
            (UnbornPolicy::Advertise, true) => "ls-refs=unborn refs-token",
            (UnbornPolicy::Advertise, false) => "ls-refs=unborn",
            (UnbornPolicy::Allow | UnbornPolicy::Ignore, true) => "ls-refs=refs-token",
            (UnbornPolicy::Allow | UnbornPolicy::Ignore, false) => "ls-refs",
        };
        let mut capabilities = vec![format!("agent={}", agent()), ls_refs.to_owned()];
        let features = fetch_features(config);
        if features.is_empty() {
            capabilities.push("fetch".to_owned());
        } else {
            capabilities.push(format!("fetch={}", features.join(" ")));
        }
        capabilities.push("server-option".to_owned());
        capabilities.push("object-format=sha1".to_owned());
        if config.advertise_sid {
            capabilities.push(format!("session-id={}", self.session_id));
        }
        if config.advertise_object_info {
            capabilities.push("object-info".to_owned());
        }
        if config.advertise_bundle_uris {
            capabilities.push("bundle-uri".to_owned());
        }
        if self.serves_wait_refs(stateful) {
            capabilities.push("wait-refs".to_owned());
        }
        capabilities
    }

    /// Write the v2 capability advertisement, ending in a flush.
    ///
    /// It lists exactly what is implemented and configured: `ls-refs` with `unborn` and
    /// `refs-token`, `fetch` with its features, `server-option`, sha1, and `session-id`,
    /// `object-info`, `bundle-uri` and `wait-refs` (on a [stateful](Self::stateful)
    /// connection) when their settings ask for them.
    pub fn advertise<W: Write>(&self, out: &mut PacketWriter<W>) -> Result<(), ServeError> {
        self.advertise_as(out, self.stateful)
    }

    fn advertise_as<W: Write>(
        &self,
        out: &mut PacketWriter<W>,
        stateful: bool,
    ) -> Result<(), ServeError> {
        out.write_text("version 2")?;
        for capability in self.capabilities(stateful) {
            out.write_text(capability)?;
        }
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
        let stateful = !options.stateless;
        if options.advertise_only || !options.stateless {
            self.advertise_as(&mut out, stateful)?;
            if options.advertise_only {
                return Ok(());
            }
        }
        loop {
            let request = match v2::read_request(&mut reader, &options.request_limits) {
                Ok(Some(request)) => request,
                Ok(None) => return Ok(()),
                // git reads capabilities as they come: an unknown one is named before the
                // missing command.
                Err(v2::RequestError::NoCommand { capabilities }) => {
                    let message = check_capabilities(&self.config, &capabilities)
                        .err()
                        .unwrap_or_else(|| "no command requested".to_owned());
                    return Err(reject(&mut out, message));
                }
                Err(err) => return Err(reject(&mut out, err.to_string())),
            };
            // A `wait-refs` blocks this thread: a pipe or an SSH channel has no cheaper way.
            let flow = self.handle_as(request, &mut out, stateful, &mut WaitState::default())?;
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
    /// A `wait-refs` blocks the calling thread until it can be answered.
    pub fn handle<W: Write>(
        &self,
        request: v2::Request,
        out: &mut PacketWriter<W>,
    ) -> Result<Flow, ServeError> {
        self.handle_as(request, out, self.stateful, &mut WaitState::default())
    }

    /// [`UploadPack::handle()`] after [`UploadPack::prepare_wait()`] with the same `state`:
    /// a `wait-refs` it prepared is answered at once, with the state of the refs now.
    pub fn handle_prepared<W: Write>(
        &self,
        request: v2::Request,
        out: &mut PacketWriter<W>,
        state: &mut WaitState,
    ) -> Result<Flow, ServeError> {
        self.handle_as(request, out, self.stateful, state)
    }

    fn handle_as<W: Write>(
        &self,
        request: v2::Request,
        out: &mut PacketWriter<W>,
        stateful: bool,
        state: &mut WaitState,
    ) -> Result<Flow, ServeError> {
        if let Err(message) = check_capabilities(&self.config, &request.capabilities) {
            return Err(reject(out, message));
        }
        let config = &self.config;
        match request.command.as_str() {
            "ls-refs" => ls_refs::handle(self, &request.arguments, out),
            "wait-refs" if config.refs_watch => {
                wait_refs::handle(self, &request.arguments, out, stateful, state)
            }
            "fetch" => fetch::handle(self, &request.arguments, out),
            "object-info" if config.advertise_object_info => {
                object_info::handle(self, &request.arguments, out)
            }
            "bundle-uri" if config.advertise_bundle_uris => {
                bundle_uri::handle(self, &request.arguments, out)
            }
            other => Err(reject(out, format!("invalid command '{other}'"))),
        }
    }
}

/// Validate the capability lines of a request: only what we advertised may appear.
/// `session-id` is one of them only under `transfer.advertiseSID`, as in git; the client's
/// id is logged.
fn check_capabilities(config: &UploadPackConfig, capabilities: &[BString]) -> Result<(), String> {
    for capability in capabilities {
        let (key, value) = match capability.split_once_str("=") {
            Some((key, value)) => (key, Some(value)),
            None => (capability.as_slice(), None),
        };
        match (key, value) {
            (b"agent", Some(_)) | (b"server-option", Some(_)) => {}
            (b"session-id", value) if config.advertise_sid => {
                let client_sid = value.unwrap_or_default().as_bstr();
                tracing::info!(%client_sid, "client session id");
            }
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

/// A response's packets as git's packet writer sends them: with `sideband-all`, each data
/// packet in band 1 and an error in band 3; flush and delimiter packets as they are.
pub(super) struct Reply<'a, W> {
    out: &'a mut PacketWriter<W>,
    sideband_all: bool,
}

impl<'a, W: Write> Reply<'a, W> {
    /// Packets to `out`, in band 1 when `sideband_all`.
    pub(super) fn new(out: &'a mut PacketWriter<W>, sideband_all: bool) -> Self {
        Reply { out, sideband_all }
    }

    /// A line of text, ending in LF.
    pub(super) fn text(&mut self, text: impl AsRef<[u8]>) -> Result<(), ServeError> {
        let text = text.as_ref();
        if self.sideband_all {
            let mut payload = Vec::with_capacity(text.len() + 2);
            payload.push(1);
            payload.extend_from_slice(text);
            if !text.ends_with(b"\n") {
                payload.push(b'\n');
            }
            self.out.write_data(&payload)?;
        } else {
            self.out.write_text(text)?;
        }
        Ok(())
    }

    /// A packet of `payload` as it is, without a LF added (git writes some lines so).
    pub(super) fn data(&mut self, payload: &[u8]) -> Result<(), ServeError> {
        if self.sideband_all {
            let mut banded = Vec::with_capacity(payload.len() + 1);
            banded.push(1);
            banded.extend_from_slice(payload);
            self.out.write_data(&banded)?;
        } else {
            self.out.write_data(payload)?;
        }
        Ok(())
    }

    /// A delim-pkt.
    pub(super) fn delim(&mut self) -> Result<(), ServeError> {
        Ok(self.out.delim()?)
    }

    /// A flush-pkt.
    pub(super) fn flush(&mut self) -> Result<(), ServeError> {
        Ok(self.out.flush_pkt()?)
    }

    /// The writer underneath, for the pack.
    pub(super) fn packets(&mut self) -> &mut PacketWriter<W> {
        self.out
    }

    /// Tell the client why its request fails (`ERR`, or band 3 with `sideband-all`), then
    /// hand back the error that ends the session.
    pub(super) fn reject(&mut self, message: String) -> ServeError {
        if !self.sideband_all {
            return reject(self.out, message);
        }
        tracing::debug!(%message, "rejecting request");
        let mut payload = vec![3];
        payload.extend_from_slice(message.as_bytes());
        payload.push(b'\n');
        let _ = self
            .out
            .write_data(&payload)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.get_mut().flush());
        ServeError::BadRequest(message)
    }
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
