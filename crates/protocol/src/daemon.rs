//! The git:// service: what runs once the front-end in `packgate-transport` has read a
//! request head.

use std::io::{Read, Write};

use bstr::ByteSlice;
use packgate_transport::{
    daemon::{ConnectionHandler, RequestHead, Service},
    pkt_line::PacketWriter,
};

use crate::{
    registry::Registry,
    upload_pack::{SessionOptions, UploadPack},
};

/// Serves upload-pack for the repositories of a [`Registry`].
#[derive(Debug)]
pub struct DaemonService {
    registry: Registry,
    informative_errors: bool,
}

/// How much a refused client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorDetail {
    /// Only "access denied or repository not exported", as git daemon by default.
    #[default]
    Terse,
    /// The actual reason, as git daemon's `--informative-errors`.
    Informative,
}

impl DaemonService {
    /// Serve the repositories of `registry`.
    pub fn new(registry: Registry, errors: ErrorDetail) -> Self {
        DaemonService {
            registry,
            informative_errors: errors == ErrorDetail::Informative,
        }
    }
}

impl ConnectionHandler for DaemonService {
    fn handle(&self, head: RequestHead, input: &mut dyn Read, output: &mut dyn Write) {
        let path = head.path.to_str_lossy().into_owned();
        let refuse = |output: &mut dyn Write, message: String| {
            tracing::info!(%message, "refused");
            let mut out = PacketWriter::new(output);
            let _ = out.error(message).and_then(|()| out.get_mut().flush());
        };
        if head.service != Service::UploadPack {
            return refuse(
                output,
                format!("service not enabled: {}", head.service.as_str()),
            );
        }
        if !head.wants_version_2() {
            return refuse(
                output,
                "packgate serves fetches over protocol v2 only; use 'git -c protocol.version=2'"
                    .into(),
            );
        }
        let repo = match self.registry.open(&head.path, None) {
            Ok(repo) => repo,
            Err(err) => {
                let message = if self.informative_errors {
                    format!("{err}")
                } else {
                    format!("access denied or repository not exported: {path}")
                };
                return refuse(output, message);
            }
        };
        let upload_pack = match UploadPack::new(&repo) {
            Ok(upload_pack) => upload_pack,
            Err(err) => return refuse(output, format!("upload-pack: {err}")),
        };
        if let Err(err) = upload_pack.serve(input, output, &SessionOptions::default()) {
            if err.is_disconnect() {
                tracing::debug!(%err, "client went away");
            } else {
                tracing::info!(%err, "session ended with an error");
            }
        }
    }
}
