//! The smart HTTP service: what runs once the front-end in `packgate-transport` has routed
//! a request (`GET <repo>/info/refs?service=…` or `POST <repo>/git-…-pack`).
//!
//! * upload-pack speaks protocol v2 only. `GET info/refs` with `Git-Protocol: version=2`
//!   gets the v2 capability advertisement — without the `# service=` header, as from git's
//!   http-backend — and each `POST` is one stateless v2 request. A v0/v1 client gets the
//!   `# service=git-upload-pack` header and then `ERR`, which git shows as
//!   `fatal: remote error: …`.
//! * receive-pack speaks v0 (v1 on request): `# service=git-receive-pack`, the ref
//!   advertisement, then one stateless push per `POST`. Push over HTTP ought to be
//!   authenticated, and packgate does not authenticate yet: unless the operator opens it
//!   with [`PushAccess::AllowedWithoutAuthentication`], receive-pack is refused with
//!   `403 Forbidden`. A repository can also refuse it itself with `http.receivepack=false`
//!   (and fetches with `http.uploadpack=false`).
//!
//! Repositories are found with the [`Registry`]; a path it refuses, or where no repository
//! is, is `404 Not Found` with a fixed message, so the response says nothing about the
//! server's files.

use std::io::{Read, Write};

use bstr::ByteSlice;
use packgate_transport::{
    daemon::Service,
    http::{GitRequest, Refusal, RequestKind, SmartHttpHandler},
    pkt_line::PacketWriter,
};

use crate::{
    receive_pack::{ProtocolVersion, ReceivePack, ReceivePackOptions},
    registry::Registry,
    repository::Repository,
    upload_pack::{ServeError, SessionOptions, UploadPack},
};

/// What a v0/v1 client of upload-pack is told.
const V2_ONLY: &str =
    "packgate serves fetches over protocol v2 only; use 'git -c protocol.version=2'";

/// Whether pushes are served over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PushAccess {
    /// receive-pack is refused with `403 Forbidden`: push needs authentication, which
    /// packgate does not implement yet.
    #[default]
    Refused,
    /// Anyone who can reach the server may push to every repository it serves. Only for
    /// trusted networks, or behind a proxy that authenticates.
    AllowedWithoutAuthentication,
}

/// Serves smart HTTP for the repositories of a [`Registry`].
#[derive(Debug)]
pub struct HttpService {
    registry: Registry,
    push: PushAccess,
}

impl HttpService {
    /// Serve the repositories of `registry`; pushes as `push` says.
    pub fn new(registry: Registry, push: PushAccess) -> Self {
        HttpService { registry, push }
    }
}

impl SmartHttpHandler for HttpService {
    type Session = Repository;

    fn open(&self, request: &GitRequest) -> Result<Repository, Refusal> {
        let repo = match self.registry.open(&request.repository, None) {
            Ok(repo) => repo,
            Err(err) => {
                tracing::info!(%err, "not found");
                return Err(Refusal::NotFound);
            }
        };
        let key = match request.service {
            Service::UploadPack => "http.uploadpack",
            Service::ReceivePack => {
                if self.push == PushAccess::Refused {
                    tracing::info!("push refused: not enabled over HTTP");
                    return Err(Refusal::Forbidden(
                        "push over HTTP is disabled: it needs authentication, which this \
                         server does not provide"
                            .into(),
                    ));
                }
                "http.receivepack"
            }
            Service::UploadArchive => {
                return Err(Refusal::Forbidden(format!(
                    "service not enabled: {}",
                    request.service.as_str()
                )))
            }
        };
        let enabled = match repo.config().boolean(key) {
            Ok(None) => true,
            Ok(Some(enabled)) => enabled,
            Err(err) => {
                tracing::warn!(%err, key, "invalid boolean; service disabled");
                false
            }
        };
        if !enabled {
            tracing::info!(key, "service disabled by the repository");
            return Err(Refusal::Forbidden(format!(
                "service not enabled: {}",
                request.service.as_str()
            )));
        }
        Ok(repo)
    }

    fn serve(
        &self,
        repo: Repository,
        request: &GitRequest,
        input: &mut dyn Read,
        output: &mut dyn Write,
    ) {
        let result = match request.service {
            Service::UploadPack => upload_pack(&repo, request, input, output),
            Service::ReceivePack => receive_pack(&repo, request, input, output),
            Service::UploadArchive => Ok(()),
        };
        match result {
            Ok(()) => {}
            Err(err) if err.is_disconnect() => tracing::debug!(%err, "client went away"),
            Err(err) => tracing::info!(
                %err,
                repository = %request.repository.as_bstr(),
                "session ended with an error"
            ),
        }
    }
}

fn upload_pack(
    repo: &Repository,
    request: &GitRequest,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<(), ServeError> {
    let mut out = PacketWriter::new(output);
    if !request.wants_version_2() {
        if request.kind == RequestKind::Advertisement {
            service_header(&mut out, request.service)?;
        }
        out.error(V2_ONLY)?;
        out.get_mut().flush()?;
        return Err(ServeError::BadRequest(V2_ONLY.into()));
    }
    let upload_pack = match UploadPack::new(repo) {
        Ok(upload_pack) => upload_pack,
        Err(err) => {
            let message = format!("upload-pack: {err}");
            out.error(&message)?;
            out.get_mut().flush()?;
            return Err(ServeError::Failed(message));
        }
    };
    let options = SessionOptions {
        stateless: true,
        advertise_only: request.kind == RequestKind::Advertisement,
        ..SessionOptions::default()
    };
    upload_pack.serve(input, out.into_inner(), &options)
}

fn receive_pack(
    repo: &Repository,
    request: &GitRequest,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<(), ServeError> {
    let mut out = PacketWriter::new(output);
    // Push has no protocol v2: a client asking for it gets v0, as from git.
    let version = if request.wants_version_1() {
        ProtocolVersion::V1
    } else {
        ProtocolVersion::V0
    };
    let receive_pack = match ReceivePack::new(repo) {
        Ok(receive_pack) => receive_pack,
        Err(err) => {
            let message = format!("receive-pack: {err}");
            if request.kind == RequestKind::Advertisement {
                service_header(&mut out, request.service)?;
            }
            out.error(&message)?;
            out.get_mut().flush()?;
            return Err(ServeError::Failed(message));
        }
    };
    if request.kind == RequestKind::Advertisement {
        service_header(&mut out, request.service)?;
    }
    let options = ReceivePackOptions {
        stateless: true,
        advertise_only: request.kind == RequestKind::Advertisement,
        version,
        ..ReceivePackOptions::default()
    };
    receive_pack
        .serve(input, out.into_inner(), &options)
        .map(|_report| ())
}

/// The `# service=<service>` packet and flush that open a v0/v1 advertisement over HTTP.
fn service_header<W: Write>(out: &mut PacketWriter<W>, service: Service) -> Result<(), ServeError> {
    out.write_text(format!("# service={}", service.as_str()))?;
    out.flush_pkt()?;
    Ok(())
}
