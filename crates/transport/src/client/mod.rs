//! The client transports: what opens a [`Connection`] to a git server for packgate's fetch
//! and push clients (`packgate-protocol`'s `client` module).
//!
//! * [`process`]: a child process's standard input and output (local paths and `file://`,
//!   and ssh, which runs the system's `ssh`).
//! * [`Client`]: the [`Connector`] that picks the transport from the URL.
//!
//! [`Connection`]: packgate_wire::client::Connection

pub mod process;

use std::path::PathBuf;

use packgate_wire::client::{ConnectError, ConnectOptions, Connection, Connector};
use packgate_wire::service::Service;

/// The [`Connector`] for every URL packgate's clients accept.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// The packgate executable run for local paths and `file://` when
    /// [`ConnectOptions::program`] names none (`<exe> upload-pack <path>`). `None`:
    /// local repositories cannot be reached without a program.
    pub local_executable: Option<PathBuf>,
}

impl Connector for Client {
    fn connect(
        &self,
        url: &str,
        service: Service,
        options: &ConnectOptions,
    ) -> Result<Box<dyn Connection>, ConnectError> {
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.contains("://") {
            let scheme = url.split("://").next().unwrap_or(url);
            return Err(ConnectError::Unsupported(scheme.to_owned()));
        }
        let command = match (&options.program, &self.local_executable) {
            (Some(program), _) => process::shell_command(program, path),
            (None, Some(exe)) => {
                let mut command = std::process::Command::new(exe);
                command.arg(subcommand(service)?).arg(path);
                command
            }
            (None, None) => {
                return Err(ConnectError::Unsupported(
                    "a local repository without a program to serve it".to_owned(),
                ))
            }
        };
        let connection = process::ProcessConnection::spawn(command, options)?;
        Ok(Box::new(connection))
    }
}

/// packgate's subcommand for a service.
fn subcommand(service: Service) -> Result<&'static str, ConnectError> {
    match service {
        Service::UploadPack => Ok("upload-pack"),
        Service::ReceivePack => Ok("receive-pack"),
        Service::UploadArchive => Err(ConnectError::Unsupported(
            "upload-archive as a client".to_owned(),
        )),
    }
}
