//! The client transports: what opens a [`Connection`] to a git server for packgate's fetch
//! and push clients (`packgate-protocol`'s `client` module).
//!
//! * [`url`]: the URLs git accepts, parsed into the transport they name.
//! * [`process`]: a child process's standard input and output (local paths and `file://`,
//!   and ssh, which runs the system's `ssh`).
//! * [`git`]: git://, git daemon's protocol over TCP.
//! * [`ssh`]: the system's ssh program and git's rules for its arguments.
//! * [`http`]: smart HTTP(S) on hyper and rustls.
//! * [`Client`]: the [`Connector`] that picks the transport from the URL.
//!
//! [`Connection`]: packgate_wire::client::Connection

pub mod git;
pub mod http;
pub mod process;
pub mod ssh;
pub mod url;

use std::path::{Path, PathBuf};

use packgate_wire::client::{ConnectError, ConnectOptions, Connection, Connector};
use packgate_wire::service::Service;

use self::url::RemoteUrl;

/// The [`Connector`] for every URL packgate's clients accept.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// The packgate executable run for local paths and `file://` when
    /// [`ConnectOptions::program`] names none (`<exe> upload-pack <path>`). `None`:
    /// local repositories cannot be reached without a program.
    pub local_executable: Option<PathBuf>,
    /// git's `core.sshCommand` (the caller reads it from its configuration): the ssh
    /// command line when `GIT_SSH_COMMAND` is not set.
    pub ssh_command: Option<String>,
    /// git's `http.sslCAInfo`: a PEM file of the CAs HTTPS servers are checked against,
    /// instead of the built-in roots. `GIT_SSL_CAINFO` in the environment wins.
    pub ssl_ca_info: Option<PathBuf>,
    /// Read none of git's environment variables (`GIT_SSH_COMMAND`, `GIT_SSH`,
    /// `GIT_SSH_VARIANT`, `GIT_SSL_CAINFO`), only the fields above: for an embedding
    /// application (or a test) whose environment is not meant for git.
    pub ignore_environment: bool,
}

impl Connector for Client {
    fn connect(
        &self,
        url: &str,
        service: Service,
        options: &ConnectOptions,
    ) -> Result<Box<dyn Connection>, ConnectError> {
        if service == Service::UploadArchive {
            return Err(ConnectError::Unsupported(
                "upload-archive as a client".to_owned(),
            ));
        }
        match url::parse(url)? {
            RemoteUrl::Local { path } => self.local(&path, service, options),
            RemoteUrl::Git { host, port, path } => {
                tracing::debug!(%host, ?port, %path, "connecting over git://");
                let connection = git::GitConnection::connect(&host, port, &path, service, options)?;
                Ok(Box::new(connection))
            }
            RemoteUrl::Ssh {
                user,
                host,
                port,
                path,
            } => self.ssh(user.as_deref(), &host, port, &path, service, options),
            RemoteUrl::Http(http_url) => {
                tracing::debug!(url = %http_url.base(), "connecting over smart HTTP");
                // As git: the environment wins over the configuration.
                let tls = http::TlsSettings {
                    ca_file: self
                        .env("GIT_SSL_CAINFO")
                        .map(PathBuf::from)
                        .or_else(|| self.ssl_ca_info.clone()),
                };
                let connection = http::HttpConnection::connect(http_url, service, options, tls)?;
                Ok(Box::new(connection))
            }
        }
    }
}

impl Client {
    /// A plain `GET` below an http(s) repository URL (see [`http::get`]), with this
    /// client's TLS trust: for packgate's own endpoints, such as the refs watch.
    pub fn http_get(
        &self,
        url: &str,
        suffix: &str,
        headers: &[(&str, &str)],
        timeout: Option<std::time::Duration>,
    ) -> Result<http::HttpGetResponse, ConnectError> {
        let RemoteUrl::Http(http_url) = url::parse(url)? else {
            return Err(ConnectError::Url {
                url: url.to_owned(),
                reason: "not an http(s) URL".to_owned(),
            });
        };
        let tls = http::TlsSettings {
            ca_file: self
                .env("GIT_SSL_CAINFO")
                .map(PathBuf::from)
                .or_else(|| self.ssl_ca_info.clone()),
        };
        http::get(&http_url, suffix, headers, tls, timeout)
    }
}

impl Client {
    /// A git environment variable, unless ignored; empty counts as unset.
    fn env(&self, name: &str) -> Option<String> {
        if self.ignore_environment {
            return None;
        }
        std::env::var(name).ok().filter(|value| !value.is_empty())
    }

    /// A local repository: `options.program` by the shell, or packgate itself.
    fn local(
        &self,
        path: &Path,
        service: Service,
        options: &ConnectOptions,
    ) -> Result<Box<dyn Connection>, ConnectError> {
        let command = match (&options.program, &self.local_executable) {
            (Some(program), _) => {
                let Some(path) = path.to_str() else {
                    return Err(ConnectError::Url {
                        url: path.display().to_string(),
                        reason: "a path that is not UTF-8 cannot be given to a program".to_owned(),
                    });
                };
                process::shell_command(program, path)
            }
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

    /// ssh: the ssh program with git's arguments and the remote command.
    fn ssh(
        &self,
        user: Option<&str>,
        host: &str,
        port: Option<u16>,
        path: &str,
        service: Service,
        options: &ConnectOptions,
    ) -> Result<Box<dyn Connection>, ConnectError> {
        let program = ssh::SshProgram::choose(&|name| self.env(name), self.ssh_command.as_deref());
        let user_host = ssh::user_host(user, host);
        let variant_override = self.env("GIT_SSH_VARIANT");
        let variant = program.variant(variant_override.as_deref(), &user_host, port, options);
        let remote = ssh::remote_command(service, path, options);
        let args = ssh::ssh_args(variant, user, host, port, remote, options)?;
        tracing::debug!(program = %program.command, ?args, "connecting over ssh");
        let connection = process::ProcessConnection::spawn(program.command(&args), options)?;
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
