//! The git:// service: what runs once the front-end in `packgate-transport` has read a
//! request head (the contract is `packgate_wire::service::daemon`).
//!
//! Which services run follows git daemon: upload-pack is enabled and receive-pack is not,
//! unless the operator says otherwise ([`DaemonConfig`]); a service the operator left
//! overridable is switched per repository by `daemon.uploadpack` / `daemon.receivepack`. A
//! refused client is told `access denied or repository not exported: <path>` unless the
//! operator asked for informative errors.

use std::{
    io::{Read, Write},
    net::SocketAddr,
};

use bstr::ByteSlice;
use packgate_wire::{
    pkt_line::PacketWriter,
    service::{
        daemon::{
            Addresses, CommandHandler, ConnectionHandler, ExchangeHandler, Next, RequestHead,
            Session, LOG_TARGET,
        },
        Service, Wait,
    },
    v2,
};

use crate::{
    budget::Budget,
    pack_cache::PackCache,
    receive_pack::{MessageSink, ProtocolVersion, ReceivePack, ReceivePackOptions},
    registry::{AccessError, Registry, RequestLocation},
    repository::Repository,
    upload_pack::{Flow, ServeError, SessionOptions, UploadPack, WaitState},
};

/// How much a refused client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorDetail {
    /// Only "access denied or repository not exported", as git daemon by default.
    #[default]
    Terse,
    /// The actual reason, as git daemon's `--informative-errors`.
    Informative,
}

/// Whether a service runs, site-wide, and whether a repository may say otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSwitch {
    /// On for every repository (`--enable=<service>`), unless a repository overrides it.
    pub enabled: bool,
    /// A repository's `daemon.<service>` setting decides (`--allow-override`, git daemon's
    /// default; `--forbid-override` turns it off).
    pub overridable: bool,
}

/// The operator's choices for the git:// service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// How much a refused client is told.
    pub errors: ErrorDetail,
    /// `git-upload-pack` (fetch): enabled by default.
    pub upload_pack: ServiceSwitch,
    /// `git-receive-pack` (push): disabled by default.
    pub receive_pack: ServiceSwitch,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            errors: ErrorDetail::Terse,
            upload_pack: ServiceSwitch {
                enabled: true,
                overridable: true,
            },
            receive_pack: ServiceSwitch {
                enabled: false,
                overridable: true,
            },
        }
    }
}

/// Serves upload-pack and receive-pack for the repositories of a [`Registry`].
pub struct DaemonService {
    registry: Registry,
    config: DaemonConfig,
    pack_cache: Option<PackCache>,
    budget: Budget,
    hooks: Vec<std::sync::Arc<dyn packgate_hooks::Hook>>,
    upstreams: crate::upstream::Upstreams,
}

impl std::fmt::Debug for DaemonService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonService")
            .field("registry", &self.registry)
            .field("config", &self.config)
            .field("pack_cache", &self.pack_cache)
            .field("budget", &self.budget)
            .field("hooks", &self.hooks.len())
            .field("upstreams", &self.upstreams)
            .finish()
    }
}

/// Why a request is refused; what the client is told depends on [`ErrorDetail`].
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("service not enabled")]
    ServiceDisabled,
    #[error("no such repository")]
    NoRepository(#[source] AccessError),
    #[error("repository not exported")]
    NotExported(#[source] AccessError),
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl DaemonService {
    /// Serve the repositories of `registry` as `config` says.
    pub fn new(registry: Registry, config: DaemonConfig) -> Self {
        DaemonService {
            registry,
            config,
            pack_cache: None,
            budget: Budget::global(),
            hooks: Vec::new(),
            upstreams: crate::upstream::Upstreams::default(),
        }
    }

    /// Gate and mirror with `upstreams`: pushes to a repository with an upstream are
    /// forwarded (see [`crate::receive_pack::gate`]), and a repository with
    /// `packgate.refreshOnFetch` is refreshed when a fetch connects (see [`crate::upstream`]).
    pub fn with_upstreams(mut self, upstreams: crate::upstream::Upstreams) -> Self {
        self.upstreams = upstreams;
        self
    }

    /// Add an in-process hook that every push over git:// runs (see
    /// [`ReceivePack::with_hook`]), before the repository's hook scripts.
    pub fn with_hook(mut self, hook: impl packgate_hooks::Hook + 'static) -> Self {
        self.hooks.push(std::sync::Arc::new(hook));
        self
    }

    /// Share packs between the fetches of this service through `cache` (see
    /// [`crate::pack_cache`]); `None`, the default, generates every pack alone.
    pub fn with_pack_cache(mut self, cache: Option<PackCache>) -> Self {
        self.pack_cache = cache;
        self
    }

    /// Take the CPU slots and memory of pack generation and push ingestion from `budget`
    /// (by default the process's [`Budget::global()`]); clients are told apart by address.
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// The service's switch, or `None` for a service packgate does not implement.
    fn switch(&self, service: Service) -> Option<ServiceSwitch> {
        match service {
            Service::UploadPack => Some(self.config.upload_pack),
            Service::ReceivePack => Some(self.config.receive_pack),
            Service::UploadArchive => None,
        }
    }

    /// Look the repository up and decide whether `head`'s service runs for it, in git
    /// daemon's order: a service that is off and not overridable is refused before the path
    /// is looked at.
    fn open(&self, head: &RequestHead, local: SocketAddr) -> Result<Repository, Refused> {
        let switch = self.switch(head.service).ok_or(Refused::ServiceDisabled)?;
        if !switch.enabled && !switch.overridable {
            return Err(Refused::ServiceDisabled);
        }
        let location = RequestLocation {
            host: head.host.as_deref().map(Vec::as_slice),
            server_address: Some(local.ip()),
        };
        let repo = self
            .registry
            .open_for_request(&head.path, &location, None)
            .map_err(|err| {
                if err.is_not_exported() {
                    Refused::NotExported(err)
                } else {
                    Refused::NoRepository(err)
                }
            })?;
        let mut enabled = switch.enabled;
        if switch.overridable {
            let key = match head.service {
                Service::ReceivePack => "daemon.receivepack",
                _ => "daemon.uploadpack",
            };
            match repo.config().boolean(key) {
                Ok(None) => {}
                Ok(Some(value)) => enabled = value,
                Err(err) => return Err(Refused::Config(format!("{key}: {err}"))),
            }
        }
        if !enabled {
            return Err(Refused::ServiceDisabled);
        }
        Ok(repo)
    }

    /// What a refused client reads after `ERR `.
    fn refusal_message(&self, refused: &Refused, path: &str) -> String {
        match self.config.errors {
            ErrorDetail::Terse => format!("access denied or repository not exported: {path}"),
            ErrorDetail::Informative => format!("{refused}: {path}"),
        }
    }
}

impl ConnectionHandler for DaemonService {
    fn open(&self, head: &RequestHead, addresses: Addresses) -> Session {
        self.session(head, addresses, None)
    }

    fn open_as(&self, head: &RequestHead, addresses: Addresses, user: Option<&str>) -> Session {
        self.session(head, addresses, user.map(str::to_owned))
    }
}

impl DaemonService {
    /// What [`ConnectionHandler::open`] decides, for `user` if the front-end authenticated one.
    fn session(&self, head: &RequestHead, addresses: Addresses, user: Option<String>) -> Session {
        let path = head.path.to_str_lossy().into_owned();
        let service = head.service.as_str().trim_start_matches("git-");
        tracing::info!(target: LOG_TARGET, "Request {service} for '{path}'");
        // The budget's queue takes turns between client addresses.
        let client = Client {
            budget: self.budget.clone(),
            address: addresses.peer.ip().to_string(),
            hooks: self.hooks.clone(),
            upstreams: self.upstreams.clone(),
            user,
        };
        let repo = match self.open(head, addresses.local) {
            Ok(repo) => repo,
            Err(refused) => {
                match &refused {
                    Refused::ServiceDisabled => {
                        tracing::warn!(target: LOG_TARGET, "'{service}': service not enabled for '{path}'")
                    }
                    other => tracing::warn!(target: LOG_TARGET, "'{path}': {other}"),
                }
                return Session::Refused(self.refusal_message(&refused, &path));
            }
        };
        match head.service {
            Service::ReceivePack => {
                // Push has no protocol v2: a client asking for it gets v0, as from git.
                let version = if head.extra_parameters.iter().any(|p| p == "version=1") {
                    ProtocolVersion::V1
                } else {
                    ProtocolVersion::V0
                };
                if let Err(err) = ReceivePack::new(&repo) {
                    return Session::Refused(format!("receive-pack: {err}"));
                }
                Session::Exchange(Box::new(PushSession {
                    repo,
                    version,
                    client,
                }))
            }
            _ => {
                if let Err(err) = UploadPack::new(&repo) {
                    return Session::Refused(format!("upload-pack: {err}"));
                }
                // One fetch is one connection: refresh once, before anything is advertised.
                self.upstreams.refresh_before_fetch(&repo);
                if head.wants_version_2() {
                    let pack_cache = self.pack_cache.clone();
                    return Session::Commands(Box::new(FetchSession {
                        repo,
                        pack_cache,
                        client,
                        waiting: WaitState::default(),
                    }));
                }
                // As git daemon: v0 (v1 on request) for a client that did not ask for v2.
                let version = if head.extra_parameters.iter().any(|p| p == "version=1") {
                    ProtocolVersion::V1
                } else {
                    ProtocolVersion::V0
                };
                let pack_cache = self.pack_cache.clone();
                Session::Exchange(Box::new(V0FetchSession {
                    repo,
                    version,
                    pack_cache,
                    client,
                }))
            }
        }
    }
}

/// A v0/v1 fetch: the reference advertisement, then wants, rounds of haves and the pack
/// in one exchange.
struct V0FetchSession {
    repo: Repository,
    version: ProtocolVersion,
    pack_cache: Option<PackCache>,
    client: Client,
}

/// Where a session's expensive work takes its budget from, and as whose.
struct Client {
    budget: Budget,
    address: String,
    hooks: Vec<std::sync::Arc<dyn packgate_hooks::Hook>>,
    upstreams: crate::upstream::Upstreams,
    /// The user the front-end authenticated, for the hooks.
    user: Option<String>,
}

impl ExchangeHandler for V0FetchSession {
    fn advertise(&mut self, output: &mut dyn Write) -> std::io::Result<()> {
        let upload_pack = UploadPack::new(&self.repo).map_err(std::io::Error::other)?;
        let mut out = PacketWriter::new(output);
        if self.version == ProtocolVersion::V1 {
            out.write_text("version 1").map_err(std::io::Error::other)?;
        }
        upload_pack
            .advertise_v0(&mut out, false)
            .map_err(std::io::Error::other)
    }

    fn exchange(self: Box<Self>, input: &mut dyn Read, output: &mut dyn Write) {
        let result = UploadPack::new(&self.repo)
            .map_err(|err| ServeError::Failed(err.to_string()))
            .map(|upload_pack| {
                upload_pack
                    .with_pack_cache(self.pack_cache.clone())
                    .with_budget(self.client.budget.clone(), &self.client.address)
            })
            .and_then(|upload_pack| upload_pack.serve_v0_exchange(input, output, false));
        if let Err(err) = result {
            log_session_error(&err);
        }
    }
}

/// A fetch session: upload-pack's commands, one request at a time.
struct FetchSession {
    repo: Repository,
    pack_cache: Option<PackCache>,
    client: Client,
    /// A `wait-refs` the front-end is waiting for.
    waiting: WaitState,
}

impl FetchSession {
    fn upload_pack(&self) -> std::io::Result<UploadPack<'_>> {
        // Checked when the session was opened; the configuration has not changed since.
        UploadPack::new(&self.repo)
            .map(|upload_pack| {
                upload_pack
                    .with_pack_cache(self.pack_cache.clone())
                    .with_budget(self.client.budget.clone(), &self.client.address)
                    .stateful(true)
            })
            .map_err(std::io::Error::other)
    }
}

impl CommandHandler for FetchSession {
    fn advertise(&mut self, output: &mut dyn Write) -> std::io::Result<()> {
        let mut out = PacketWriter::new(output);
        self.upload_pack()?
            .advertise(&mut out)
            .map_err(std::io::Error::other)
    }

    fn limits(&self) -> v2::Limits {
        SessionOptions::default().request_limits
    }

    fn prepare_wait(&mut self, request: &v2::Request) -> Option<Wait> {
        let mut waiting = std::mem::take(&mut self.waiting);
        let wait = self
            .upload_pack()
            .ok()
            .and_then(|upload_pack| upload_pack.prepare_wait(request, &mut waiting));
        self.waiting = waiting;
        wait
    }

    fn handle(&mut self, request: v2::Request, output: &mut dyn Write) -> Next {
        let mut out = PacketWriter::new(output);
        let mut waiting = std::mem::take(&mut self.waiting);
        let result = self
            .upload_pack()
            .map_err(ServeError::from)
            .and_then(|upload_pack| upload_pack.handle_prepared(request, &mut out, &mut waiting));
        match result {
            Ok(Flow::Continue) => Next::Continue,
            Ok(Flow::End) => Next::Close,
            Err(err) => {
                log_session_error(&err);
                Next::Close
            }
        }
    }
}

/// A push: the advertisement, then the client's commands and pack.
struct PushSession {
    repo: Repository,
    version: ProtocolVersion,
    client: Client,
}

impl ExchangeHandler for PushSession {
    fn advertise(&mut self, output: &mut dyn Write) -> std::io::Result<()> {
        let receive_pack = ReceivePack::new(&self.repo).map_err(std::io::Error::other)?;
        let mut out = PacketWriter::new(output);
        if self.version == ProtocolVersion::V1 {
            out.write_text("version 1").map_err(std::io::Error::other)?;
        }
        receive_pack
            .advertise(&mut out)
            .map_err(std::io::Error::other)
    }

    fn exchange(self: Box<Self>, input: &mut dyn Read, output: &mut dyn Write) {
        let result = ReceivePack::new(&self.repo)
            .map_err(|err| ServeError::Failed(err.to_string()))
            .map(|receive_pack| {
                self.client
                    .hooks
                    .iter()
                    .fold(receive_pack, |receive_pack, hook| {
                        receive_pack.with_hook(std::sync::Arc::clone(hook))
                    })
                    .with_budget(self.client.budget.clone(), &self.client.address)
                    .with_upstreams(&self.client.upstreams)
                    .with_remote_user(self.client.user.clone())
            })
            .and_then(|receive_pack| {
                // The advertisement is out; what follows is one stateless exchange.
                let options = ReceivePackOptions {
                    stateless: true,
                    version: self.version,
                    // Without sideband, messages go to the log: git daemon's receive-pack
                    // writes them to the daemon's standard error, never to the client.
                    messages: MessageSink::Log,
                    ..ReceivePackOptions::default()
                };
                receive_pack.serve(input, output, &options).map(drop)
            });
        if let Err(err) = result {
            log_session_error(&err);
        }
    }
}

fn log_session_error(err: &ServeError) {
    if err.is_disconnect() {
        tracing::debug!(%err, "client went away");
    } else {
        tracing::info!(%err, "session ended with an error");
    }
}
