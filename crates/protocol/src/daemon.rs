//! The git:// service: what runs once the front-end in `packgate-transport` has read a
//! request head.
//!
//! Which services run follows git daemon: upload-pack is enabled and receive-pack is not,
//! unless the operator says otherwise ([`DaemonConfig`]); a service the operator left
//! overridable is switched per repository by `daemon.uploadpack` / `daemon.receivepack`. A
//! refused client is told `access denied or repository not exported: <path>` unless the
//! operator asked for informative errors.

use std::io::{Read, Write};

use bstr::ByteSlice;
use packgate_transport::{
    daemon::{ConnectionHandler, RequestHead, Service},
    pkt_line::PacketWriter,
};

use crate::{
    receive_pack::{ProtocolVersion, ReceivePack, ReceivePackOptions},
    registry::{AccessError, Registry},
    repository::Repository,
    upload_pack::{SessionOptions, UploadPack},
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
#[derive(Debug)]
pub struct DaemonService {
    registry: Registry,
    config: DaemonConfig,
}

/// Why a request is refused; what the client is told depends on [`ErrorDetail`].
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("service not enabled")]
    ServiceDisabled,
    #[error("no such repository")]
    NoRepository(#[source] AccessError),
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl DaemonService {
    /// Serve the repositories of `registry` as `config` says.
    pub fn new(registry: Registry, config: DaemonConfig) -> Self {
        DaemonService { registry, config }
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
    fn open(&self, head: &RequestHead) -> Result<Repository, Refused> {
        let switch = self.switch(head.service).ok_or(Refused::ServiceDisabled)?;
        if !switch.enabled && !switch.overridable {
            return Err(Refused::ServiceDisabled);
        }
        let repo = self
            .registry
            .open(&head.path, None)
            .map_err(Refused::NoRepository)?;
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
    fn handle(&self, head: RequestHead, input: &mut dyn Read, output: &mut dyn Write) {
        let path = head.path.to_str_lossy().into_owned();
        let refuse = |output: &mut dyn Write, message: String| {
            let mut out = PacketWriter::new(output);
            let _ = out.error(message).and_then(|()| out.get_mut().flush());
        };
        let repo = match self.open(&head) {
            Ok(repo) => repo,
            Err(refused) => {
                tracing::info!(service = head.service.as_str(), %path, reason = %refused, "refused");
                return refuse(output, self.refusal_message(&refused, &path));
            }
        };
        let result = match head.service {
            Service::ReceivePack => {
                // Push has no protocol v2: a client asking for it gets v0, as from git.
                let version = if head.extra_parameters.iter().any(|p| p == "version=1") {
                    ProtocolVersion::V1
                } else {
                    ProtocolVersion::V0
                };
                let receive_pack = match ReceivePack::new(&repo) {
                    Ok(receive_pack) => receive_pack,
                    Err(err) => return refuse(output, format!("receive-pack: {err}")),
                };
                let options = ReceivePackOptions {
                    version,
                    ..ReceivePackOptions::default()
                };
                receive_pack.serve(input, output, &options).map(drop)
            }
            _ => {
                if !head.wants_version_2() {
                    return refuse(
                        output,
                        "packgate serves fetches over protocol v2 only; use 'git -c \
                         protocol.version=2'"
                            .into(),
                    );
                }
                let upload_pack = match UploadPack::new(&repo) {
                    Ok(upload_pack) => upload_pack,
                    Err(err) => return refuse(output, format!("upload-pack: {err}")),
                };
                upload_pack.serve(input, output, &SessionOptions::default())
            }
        };
        if let Err(err) = result {
            if err.is_disconnect() {
                tracing::debug!(%err, "client went away");
            } else {
                tracing::info!(%err, "session ended with an error");
            }
        }
    }
}
