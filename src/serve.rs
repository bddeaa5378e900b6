//! `packgate serve`: both network front-ends (git:// and smart HTTP) in one process.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context;
use clap::Args;
use packgate::{
    protocol::{
        daemon::{DaemonConfig, DaemonService, ErrorDetail},
        http::{HttpService, PushAccess},
        registry::Registry,
    },
    transport::{
        daemon::{self, DaemonOptions},
        http::{self, HttpOptions},
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
    /// with --http-allow-push-without-auth).
    #[arg(long = "http", value_name = "ADDR|off", default_value = "127.0.0.1:8080", value_parser = parse_http_addr)]
    http: HttpListen,
    /// DANGEROUS: accept pushes over HTTP from anyone who can reach --http, to every
    /// repository served, without authentication (packgate does not authenticate yet). Only
    /// for trusted networks or behind a proxy that authenticates.
    #[arg(long)]
    http_allow_push_without_auth: bool,
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
    if args.http_allow_push_without_auth && args.http.0.is_none() {
        anyhow::bail!("--http-allow-push-without-auth needs the HTTP front-end (--http is off)");
    }
    let push = if args.http_allow_push_without_auth {
        PushAccess::AllowedWithoutAuthentication
    } else {
        PushAccess::Refused
    };
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
                "packgate: serving {} on http://{} (pid {})",
                registry.root().display(),
                http_listener.local_addr()?,
                std::process::id()
            );
            if push == PushAccess::AllowedWithoutAuthentication {
                eprintln!(
                    "packgate: warning: anyone who can reach http://{} may push, without \
                     authentication",
                    http_listener.local_addr()?
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
            match http_listener {
                Some(http_listener) => {
                    http::serve(
                        http_listener,
                        http_service,
                        HttpOptions::default(),
                        until_stopped(stopped),
                    )
                    .await
                }
                None => Ok(()),
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
