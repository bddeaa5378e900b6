//! `packgate serve`: both network front-ends (git:// and smart HTTP) in one process.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context;
use clap::Args;
use packgate::{
    protocol::{
        daemon::{DaemonConfig, DaemonService, ErrorDetail},
        http::{CredentialsFile, HttpService, PushAccess},
        registry::Registry,
    },
    transport::{
        daemon::{self, DaemonOptions},
        http::{self, tls, HttpOptions},
    },
};

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// The directory of repositories to serve; created if missing.
    #[arg(default_value = "./repos")]
    root: PathBuf,
    /// Where the git:// front-end listens.
    #[arg(long = "git", value_name = "ADDR", default_value = "127.0.0.1:9418")]
    git_addr: std::net::SocketAddr,
    /// Where the smart HTTP front-end listens, or `off` (fetch with protocol v2; push only
    /// with --http-credentials or --http-allow-push-without-auth).
    #[arg(long = "http", value_name = "ADDR|off", default_value = "127.0.0.1:8080", value_parser = parse_http_addr)]
    http: HttpListen,
    /// Accept pushes over HTTP from the users of FILE (HTTP Basic authentication): one
    /// `user:hash` per line, bcrypt (`htpasswd -B`) or argon2; see `packgate passwd`. Use
    /// with --tls-cert/--tls-key unless the network is trusted: Basic sends the password.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "http_allow_push_without_auth"
    )]
    http_credentials: Option<PathBuf>,
    /// DANGEROUS: accept pushes over HTTP from anyone who can reach --http, to every
    /// repository served, without authentication. Only for trusted networks or behind a
    /// proxy that authenticates.
    #[arg(long)]
    http_allow_push_without_auth: bool,
    /// Serve HTTPS instead of HTTP with this PEM certificate chain (leaf first); needs
    /// --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Tell refused clients why, instead of only "access denied or repository not exported".
    #[arg(long)]
    informative_errors: bool,
}

pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.root)
        .with_context(|| format!("could not create {}", args.root.display()))?;
    let registry = Registry::new(&args.root)
        .with_context(|| format!("could not open {}", args.root.display()))?;
    let errors = if args.informative_errors {
        ErrorDetail::Informative
    } else {
        ErrorDetail::Terse
    };
    let service = Arc::new(DaemonService::new(
        registry.clone(),
        DaemonConfig {
            errors,
            ..DaemonConfig::default()
        },
    ));
    if args.http.0.is_none() {
        for (given, flag) in [
            (
                args.http_allow_push_without_auth,
                "--http-allow-push-without-auth",
            ),
            (args.http_credentials.is_some(), "--http-credentials"),
            (args.tls_cert.is_some(), "--tls-cert"),
        ] {
            if given {
                anyhow::bail!("{flag} needs the HTTP front-end (--http is off)");
            }
        }
    }
    let push = if args.http_allow_push_without_auth {
        PushAccess::AllowedWithoutAuthentication
    } else if let Some(path) = &args.http_credentials {
        let credentials = CredentialsFile::load(path)?;
        if credentials.is_empty() {
            eprintln!(
                "packgate: warning: {} names no user; nobody can push",
                path.display()
            );
        }
        PushAccess::authenticated(credentials)
    } else {
        PushAccess::Refused
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let allowed_without_authentication = matches!(push, PushAccess::AllowedWithoutAuthentication);
    let authenticated = matches!(push, PushAccess::Authenticated(_));
    let http_service = Arc::new(HttpService::new(registry.clone(), push));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.git_addr)
            .await
            .with_context(|| format!("could not listen on {}", args.git_addr))?;
        let http_listener = match args.http.0 {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("could not listen on {addr}"))?,
            ),
            None => None,
        };
        eprintln!(
            "packgate: serving {} on git://{} (pid {})",
            registry.root().display(),
            listener.local_addr()?,
            std::process::id()
        );
        if let Some(http_listener) = &http_listener {
            eprintln!(
                "packgate: serving {} on {scheme}://{} (pid {})",
                registry.root().display(),
                http_listener.local_addr()?,
                std::process::id()
            );
            if allowed_without_authentication {
                eprintln!(
                    "packgate: warning: anyone who can reach {scheme}://{} may push, without \
                     authentication",
                    http_listener.local_addr()?
                );
            }
            if authenticated && tls.is_none() && !http_listener.local_addr()?.ip().is_loopback() {
                eprintln!(
                    "packgate: warning: passwords cross the network in clear over http://; \
                     use --tls-cert and --tls-key"
                );
            }
        }
        // One signal stops both front-ends.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let git = daemon::serve(
            listener,
            service,
            DaemonOptions::default(),
            until_stopped(stopped.clone()),
        );
        let smart_http = async {
            match (http_listener, tls) {
                (Some(http_listener), None) => {
                    http::serve(
                        http_listener,
                        http_service,
                        HttpOptions::default(),
                        until_stopped(stopped),
                    )
                    .await
                }
                (Some(http_listener), Some(tls)) => {
                    tls::serve_tls(
                        http_listener,
                        http_service,
                        HttpOptions::default(),
                        tls,
                        until_stopped(stopped),
                    )
                    .await
                }
                (None, _) => Ok(()),
            }
        };
        tokio::try_join!(git, smart_http)?;
        eprintln!("packgate: shutting down");
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// Where the HTTP front-end listens, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HttpListen(Option<std::net::SocketAddr>);

/// `--http ADDR`, or `off` for no HTTP front-end.
fn parse_http_addr(value: &str) -> Result<HttpListen, String> {
    if value == "off" {
        return Ok(HttpListen(None));
    }
    value
        .parse()
        .map(|addr| HttpListen(Some(addr)))
        .map_err(|err| format!("{err} (an address like 127.0.0.1:8080, or off)"))
}

/// Completes on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        // Without a SIGTERM handler, Ctrl-C still works.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;

    #[test]
    fn http_addresses() {
        assert_eq!(parse_http_addr("off"), Ok(HttpListen(None)));
        assert_eq!(
            parse_http_addr("127.0.0.1:8080"),
            Ok(HttpListen(Some(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                8080
            )))))
        );
        assert!(parse_http_addr("8080").is_err());
        assert!(parse_http_addr("").is_err());
    }

    #[test]
    fn push_and_tls_flags_go_together_or_not_at_all() {
        let parses = |args: &[&str]| {
            Cli::try_parse_from(["packgate", "serve"].iter().chain(args))
                .map(drop)
                .map_err(|err| err.kind())
        };
        assert_eq!(parses(&["--http-credentials", "users"]), Ok(()));
        assert_eq!(
            parses(&["--tls-cert", "cert.pem", "--tls-key", "key.pem"]),
            Ok(())
        );
        assert_eq!(
            parses(&["--tls-cert", "cert.pem"]),
            Err(clap::error::ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(
            parses(&["--tls-key", "key.pem"]),
            Err(clap::error::ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(
            parses(&[
                "--http-credentials",
                "users",
                "--http-allow-push-without-auth"
            ]),
            Err(clap::error::ErrorKind::ArgumentConflict)
        );
    }

    #[test]
    fn serve_defaults_to_both_front_ends_on_loopback() {
        let cli = Cli::try_parse_from(["packgate", "serve"]).map_err(|e| e.to_string());
        let Ok(Cli {
            command: Command::Serve(args),
        }) = cli
        else {
            panic!("serve did not parse: {cli:?}", cli = cli.err());
        };
        assert_eq!(args.root, PathBuf::from("./repos"));
        assert_eq!(
            args.git_addr,
            std::net::SocketAddr::from(([127, 0, 0, 1], 9418))
        );
        assert_eq!(
            args.http,
            HttpListen(Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8080))))
        );
    }
}
