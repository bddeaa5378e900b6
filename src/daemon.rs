//! `packgate daemon`: a drop-in for `git daemon` — its flags (`--flag=value`), its
//! repository rules (base path, `git-daemon-export-ok`, whitelist, strict and interpolated
//! paths: [`packgate::protocol::registry::DaemonPolicy`]), its service switches, its log
//! lines on standard error (`[<pid>] Ready to rumble`) and its end on SIGTERM by that
//! signal.
//!
//! Where it differs from git daemon:
//!
//! * One process serves every connection (git daemon forks one per connection), so every
//!   log line carries the daemon's pid, and `--max-connections` bounds the connections of
//!   each listening address. On SIGTERM or SIGINT the daemon stops accepting, waits up to
//!   [`SHUTDOWN_GRACE`] for sessions in flight, removes the `--pid-file` and ends by the
//!   signal; git daemon's forked sessions outlive it.
//! * Without `--timeout`/`--init-timeout` a client still has [`DaemonOptions::default`]'s
//!   limits (git daemon waits forever); `=0` means no limit, as in git.
//! * `--reuseaddr` is accepted and changes nothing: tokio's listeners set `SO_REUSEADDR` on
//!   Unix anyway.
//! * `--enable=X` with `--disable=X` (or `--allow-override=X` with `--forbid-override=X`) is
//!   refused; git daemon lets the last one win.
//! * Not implemented, and refused at startup: `--inetd`, `--syslog` and
//!   `--log-destination=syslog`, `--detach`, `--user`, `--group`, `--user-path`,
//!   `--base-path-relaxed` (it would look outside the base path), `--access-hook`,
//!   `--enable=upload-archive`.
//! * The repository rules are stricter where symlinks and odd paths are concerned: see
//!   [`packgate::protocol::registry`].

use std::{
    fmt::Write as _, io::Write as _, net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use packgate::{
    protocol::{
        daemon::{DaemonConfig, DaemonService, ErrorDetail, ServiceSwitch},
        registry::{DaemonPolicy, Export, Registry},
    },
    transport::daemon::{self, DaemonOptions},
};
use tracing::{field::Field, Event, Subscriber};
use tracing_subscriber::{layer::Context as LayerContext, prelude::*, EnvFilter, Layer};

/// git's port.
const DEFAULT_PORT: u16 = 9418;

/// git daemon's default `--max-connections`.
const DEFAULT_MAX_CONNECTIONS: usize = 32;

/// How long sessions in flight may go on after SIGTERM or SIGINT.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What `--timeout=0` / `--init-timeout=0` (no limit) become: long enough never to matter.
const NO_TIMEOUT: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// The log target whose info events are git daemon's `--verbose` lines.
const LOG_TARGET: &str = "packgate::daemon";

/// git daemon's flags, in its `--flag=value` form (`--flag value` works too).
#[derive(Args, Debug)]
pub(crate) struct DaemonArgs {
    #[command(flatten)]
    budget: crate::budget::BudgetArgs,
    /// Listen on this host name or IP address (may be given more than once; default: every
    /// address).
    #[arg(long, value_name = "HOST_OR_IPADDR")]
    listen: Vec<String>,
    /// Listen on this port (0: the default).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Take requested paths below this directory (git://host/x.git is <PATH>/x.git); the
    /// repository found must be below it too.
    #[arg(long, value_name = "PATH")]
    base_path: Option<PathBuf>,
    /// Serve repositories without the git-daemon-export-ok file too.
    #[arg(long)]
    export_all: bool,
    /// Enable a service site-wide (upload-pack is enabled, receive-pack is not).
    #[arg(long, value_name = "SERVICE")]
    enable: Vec<ServiceName>,
    /// Disable a service site-wide.
    #[arg(long, value_name = "SERVICE")]
    disable: Vec<ServiceName>,
    /// Let a repository's daemon.uploadpack / daemon.receivepack decide (the default).
    #[arg(long, value_name = "SERVICE")]
    allow_override: Vec<ServiceName>,
    /// Ignore the repository's daemon.<service> setting.
    #[arg(long, value_name = "SERVICE")]
    forbid_override: Vec<ServiceName>,
    /// Tell refused clients why, instead of only "access denied or repository not exported".
    #[arg(long)]
    informative_errors: bool,
    /// Seconds a client has to send its request after connecting (0: no limit).
    #[arg(long, value_name = "N")]
    init_timeout: Option<u64>,
    /// Seconds a session may go without traffic (0: no limit).
    #[arg(long, value_name = "N")]
    timeout: Option<u64>,
    /// Connections served at once, per listening address (0 or less: no limit).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    max_connections: Option<i64>,
    /// Write the process id to this file once listening; removed on exit.
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Accepted for git daemon's sake: the listeners use SO_REUSEADDR anyway.
    #[arg(long)]
    reuseaddr: bool,
    /// Log connections and requests, and "Ready to rumble" once listening.
    #[arg(long)]
    verbose: bool,
    /// Serve exactly the whitelisted git directories: no `.git` suffix guessing, no
    /// subdirectories. Needs a whitelist.
    #[arg(long)]
    strict_paths: bool,
    /// Build the path from a template: %H host, %IP server address, %P port, %D requested
    /// path, %% a percent sign (e.g. /pub/%H%D).
    #[arg(long, value_name = "TEMPLATE")]
    interpolated_path: Option<String>,
    /// Where log lines go: stderr (the default) or none.
    #[arg(long, value_name = "DESTINATION")]
    log_destination: Option<String>,
    /// Generate every pack alone: no single flight, no cache of packs (packgate's own).
    #[arg(long)]
    no_pack_cache: bool,
    /// Seconds a generated pack stays cached for identical fetches (0: no cache) [default:
    /// 300].
    #[arg(long, value_name = "N")]
    pack_cache_ttl: Option<u64>,
    /// Bytes all cached packs may take together, memory and temporary files [default:
    /// 1073741824].
    #[arg(long, value_name = "N")]
    pack_cache_max_bytes: Option<u64>,
    /// Bytes of one pack kept in memory; the rest goes to a temporary file [default:
    /// 16777216].
    #[arg(long, value_name = "N")]
    pack_cache_memory: Option<u64>,
    /// Where cached packs spill to [default: the system's temporary directory].
    #[arg(long, value_name = "DIR")]
    pack_cache_dir: Option<PathBuf>,

    // git daemon's options that packgate does not implement: refused with a reason.
    #[arg(long, hide = true)]
    inetd: bool,
    #[arg(long, hide = true)]
    syslog: bool,
    #[arg(long, hide = true)]
    detach: bool,
    #[arg(long, hide = true)]
    user: Option<String>,
    #[arg(long, hide = true)]
    group: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "")]
    user_path: Option<String>,
    #[arg(long, hide = true)]
    base_path_relaxed: bool,
    #[arg(long, hide = true)]
    access_hook: Option<String>,

    /// Serve only repositories in (with --strict-paths: exactly) these directories.
    #[arg(value_name = "DIRECTORY")]
    directories: Vec<PathBuf>,
}

/// A service as git daemon's `--enable` and friends name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ServiceName {
    UploadPack,
    ReceivePack,
    UploadArchive,
}

impl ServiceName {
    fn as_str(self) -> &'static str {
        match self {
            ServiceName::UploadPack => "upload-pack",
            ServiceName::ReceivePack => "receive-pack",
            ServiceName::UploadArchive => "upload-archive",
        }
    }
}

/// Where log lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LogDestination {
    Stderr,
    None,
}

/// The flags, checked and turned into what the library takes.
#[derive(Debug)]
struct Settings {
    /// packgate's own: the CPU and memory budget of every session.
    budget: packgate::protocol::budget::Budget,
    policy: DaemonPolicy,
    config: DaemonConfig,
    options: DaemonOptions,
    listen: Vec<String>,
    port: u16,
    pid_file: Option<PathBuf>,
    verbose: bool,
    log: LogDestination,
    pack_cache: crate::config::PackCacheSection,
}

impl Settings {
    fn from_args(args: DaemonArgs) -> anyhow::Result<Settings> {
        refuse_unsupported(&args)?;
        let log = match args.log_destination.as_deref() {
            None | Some("stderr") => LogDestination::Stderr,
            Some("none") => LogDestination::None,
            Some("syslog") => bail!(
                "--log-destination=syslog is not supported by packgate daemon; it logs to \
                 standard error"
            ),
            Some(other) => bail!("unknown log destination '{other}'"),
        };
        let config = DaemonConfig {
            errors: if args.informative_errors {
                ErrorDetail::Informative
            } else {
                ErrorDetail::Terse
            },
            upload_pack: switch(ServiceName::UploadPack, &args)?,
            receive_pack: switch(ServiceName::ReceivePack, &args)?,
        };
        let defaults = DaemonOptions::default();
        let seconds = |n: u64| match n {
            0 => NO_TIMEOUT,
            n => Duration::from_secs(n),
        };
        let idle_timeout = args.timeout.map_or(defaults.idle_timeout, seconds);
        // As git: without an initial timeout, the session timeout bounds the request too.
        let init_timeout = match (args.init_timeout, args.timeout) {
            (Some(n), _) if n > 0 => seconds(n),
            (_, Some(n)) => seconds(n),
            (Some(_), None) => NO_TIMEOUT,
            (None, None) => defaults.init_timeout,
        };
        let max_connections = match args.max_connections {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(n) if n <= 0 => tokio::sync::Semaphore::MAX_PERMITS,
            Some(n) => usize::try_from(n).unwrap_or(tokio::sync::Semaphore::MAX_PERMITS),
        };
        let export = if args.export_all {
            Export::All
        } else {
            Export::MarkedOnly
        };
        Ok(Settings {
            budget: crate::budget::budget(&args.budget, &Default::default())?,
            policy: DaemonPolicy {
                export,
                base_path: args.base_path,
                whitelist: args.directories,
                strict_paths: args.strict_paths,
                interpolated_path: args.interpolated_path,
            },
            config,
            options: DaemonOptions {
                init_timeout,
                idle_timeout,
                max_connections,
                ..DaemonOptions::default()
            },
            listen: args
                .listen
                .iter()
                .map(|host| {
                    let host = host.to_ascii_lowercase();
                    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                        Some(inner) => inner.to_owned(),
                        None => host,
                    }
                })
                .collect(),
            port: if args.port == 0 {
                DEFAULT_PORT
            } else {
                args.port
            },
            pid_file: args.pid_file,
            verbose: args.verbose,
            log,
            pack_cache: crate::config::PackCacheSection {
                enabled: Some(!args.no_pack_cache),
                ttl: args.pack_cache_ttl,
                max_bytes: args.pack_cache_max_bytes,
                memory_per_entry: args.pack_cache_memory,
                temp_dir: args.pack_cache_dir,
            },
        })
    }
}

/// git daemon's options packgate does not implement, refused rather than ignored.
fn refuse_unsupported(args: &DaemonArgs) -> anyhow::Result<()> {
    let refused = [
        (
            args.inetd,
            "--inetd is not supported: packgate daemon listens itself (use --listen/--port)",
        ),
        (
            args.syslog,
            "--syslog is not supported: packgate daemon logs to standard error",
        ),
        (
            args.detach,
            "--detach is not supported: run packgate daemon under a service manager",
        ),
        (
            args.user.is_some() || args.group.is_some(),
            "--user/--group are not supported: start packgate daemon as the user it should \
             run as",
        ),
        (
            args.user_path.is_some(),
            "--user-path is not supported: ~user paths are refused",
        ),
        (
            args.base_path_relaxed,
            "--base-path-relaxed is not supported: repositories are only looked for below \
             --base-path",
        ),
        (args.access_hook.is_some(), "--access-hook is not supported"),
        (
            args.enable.contains(&ServiceName::UploadArchive),
            "--enable=upload-archive is not supported: packgate does not implement \
             upload-archive",
        ),
    ];
    match refused.into_iter().find(|(given, _)| *given) {
        Some((_, message)) => bail!("{message}"),
        None => Ok(()),
    }
}

/// A service's switch from git daemon's defaults and the four flags.
fn switch(service: ServiceName, args: &DaemonArgs) -> anyhow::Result<ServiceSwitch> {
    let named = |list: &[ServiceName]| list.contains(&service);
    let name = service.as_str();
    if named(&args.enable) && named(&args.disable) {
        bail!("--enable={name} and --disable={name} contradict each other");
    }
    if named(&args.allow_override) && named(&args.forbid_override) {
        bail!("--allow-override={name} and --forbid-override={name} contradict each other");
    }
    let default_on = service == ServiceName::UploadPack;
    Ok(ServiceSwitch {
        enabled: (default_on || named(&args.enable)) && !named(&args.disable),
        overridable: !named(&args.forbid_override),
    })
}

/// Runs `packgate daemon` until SIGTERM or SIGINT, then ends by that signal.
pub(crate) fn daemon(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_args(args)?;
    install_logging(settings.verbose, settings.log)?;
    crate::trim::spawn_trimmer();
    // git daemon's services inherit GIT_NAMESPACE: every repository is served in it.
    let namespace = match std::env::var_os("GIT_NAMESPACE") {
        Some(raw) => packgate::protocol::refname::Namespace::new(raw.as_encoded_bytes())
            .context("invalid GIT_NAMESPACE")?,
        None => None,
    };
    let registry = Registry::daemon(settings.policy.clone())?.with_namespaces(
        packgate::protocol::registry::Namespaces {
            default: namespace,
            ..Default::default()
        },
    );
    if settings.policy.export == Export::All
        && settings.policy.base_path.is_none()
        && settings.policy.whitelist.is_empty()
    {
        tracing::warn!(
            target: LOG_TARGET,
            "warning: --export-all without --base-path or directories serves every \
             repository this user can read"
        );
    }
    // As git daemon's receive-pack: `--auto` maintenance after a push (receive.autogc), here
    // on a thread of the daemon holding a slot of its CPU budget.
    let service = Arc::new(
        DaemonService::new(registry, settings.config.clone())
            .with_pack_cache(settings.pack_cache.build())
            .with_budget(settings.budget.clone())
            .with_upstreams(crate::serve::plugged_upstreams())
            .with_hook(crate::maintenance::AutoMaintenanceHook::InProcess(
                crate::maintenance::Maintainer::new(settings.budget.clone()),
            )),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let listeners = runtime.block_on(bind(&settings.listen, settings.port))?;
    if let Some(pid_file) = &settings.pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pid file '{}'", pid_file.display()))?;
    }
    let result = runtime.block_on(serve(listeners, service, &settings.options));
    // Sessions in flight get a little time; the process ends after that either way.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    if let Some(pid_file) = &settings.pid_file {
        if let Err(err) = std::fs::remove_file(pid_file) {
            tracing::warn!(
                target: LOG_TARGET,
                "could not remove pid file '{}': {err}",
                pid_file.display()
            );
        }
    }
    let signal = result?;
    // End by the signal, as git daemon does (its parent sees WIFSIGNALED).
    signal_hook::low_level::emulate_default_handler(signal)
        .context("could not end by the signal")?;
    Ok(ExitCode::from(
        128u8.saturating_add(u8::try_from(signal).unwrap_or(0)),
    ))
}

/// Serves on every listener until SIGTERM or SIGINT, and returns the signal.
async fn serve(
    listeners: Vec<tokio::net::TcpListener>,
    service: Arc<DaemonService>,
    options: &DaemonOptions,
) -> anyhow::Result<i32> {
    // Before anything says "ready": a signal from then on must find its handler.
    let stop_signal = stop_signal()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for listener in listeners {
        let mut stopped = stopped.clone();
        let handler: Arc<dyn daemon::ConnectionHandler> = service.clone();
        let options = options.clone();
        servers.spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            daemon::serve(listener, handler, options, shutdown).await
        });
    }
    tracing::info!(target: LOG_TARGET, "Ready to rumble");
    let signal = tokio::select! {
        signal = stop_signal => signal,
        Some(ended) = servers.join_next() => {
            // A front-end does not stop on its own: report why it did.
            let _ = stop.send(true);
            ended??;
            bail!("a listener stopped unexpectedly");
        }
    };
    let _ = stop.send(true);
    while let Some(ended) = servers.join_next().await {
        if let Err(err) = ended? {
            tracing::error!(target: LOG_TARGET, "{err}");
        }
    }
    Ok(signal)
}

/// Handles SIGTERM and SIGINT from now on; the future completes with the first of them.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = i32>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("could not handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("could not handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => signal_hook::consts::SIGTERM,
            _ = interrupt.recv() => signal_hook::consts::SIGINT,
        }
    })
}

/// Listeners on every address `hosts` name at `port` (every address of the machine if
/// none), as git daemon: an address that can't be bound is logged and skipped, and only
/// none at all is fatal.
async fn bind(hosts: &[String], port: u16) -> anyhow::Result<Vec<tokio::net::TcpListener>> {
    let mut listeners = Vec::new();
    if hosts.is_empty() {
        // `[::]` also takes IPv4 unless the system says otherwise; then `0.0.0.0` is
        // needed as well, and otherwise it is "in use" by the first.
        let wildcard_v6 = SocketAddr::from(([0u16; 8], port));
        let wildcard_v4 = SocketAddr::from(([0u8; 4], port));
        let v6 = tokio::net::TcpListener::bind(wildcard_v6).await;
        let v6_bound = v6.is_ok();
        match v6 {
            Ok(listener) => listeners.push(listener),
            Err(err) => log_bind_error(wildcard_v6, &err),
        }
        match tokio::net::TcpListener::bind(wildcard_v4).await {
            Ok(listener) => listeners.push(listener),
            Err(err) if v6_bound && err.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(err) => log_bind_error(wildcard_v4, &err),
        }
    }
    for host in hosts {
        let addresses = match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addresses) => addresses.collect::<Vec<_>>(),
            Err(err) => {
                tracing::error!(target: LOG_TARGET, "lookup of {host} failed: {err}");
                Vec::new()
            }
        };
        let before = listeners.len();
        for address in addresses {
            match tokio::net::TcpListener::bind(address).await {
                Ok(listener) => listeners.push(listener),
                Err(err) => log_bind_error(address, &err),
            }
        }
        if listeners.len() == before {
            tracing::error!(
                target: LOG_TARGET,
                "unable to allocate any listen sockets for host {host} on port {port}"
            );
        }
    }
    if listeners.is_empty() {
        bail!("unable to allocate any listen sockets on port {port}");
    }
    Ok(listeners)
}

fn log_bind_error(address: SocketAddr, err: &std::io::Error) {
    tracing::error!(target: LOG_TARGET, "Could not bind to {}: {err}", address.ip());
}

/// git daemon's log: `[<pid>] <message>` lines on standard error; the `--verbose` lines are
/// the info events of [`LOG_TARGET`], warnings and errors always show. `PACKGATE_LOG`, if
/// set, replaces the default filter (`warn`) for debugging.
fn install_logging(verbose: bool, destination: LogDestination) -> anyhow::Result<()> {
    if destination == LogDestination::None {
        return Ok(());
    }
    let mut filter =
        EnvFilter::try_from_env("PACKGATE_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    if verbose {
        filter = filter.add_directive(format!("{LOG_TARGET}=info").parse()?);
    }
    tracing_subscriber::registry()
        .with(
            GitDaemonLog {
                pid: std::process::id(),
            }
            .with_filter(filter),
        )
        .try_init()
        .context("could not set up logging")
}

/// Writes each event as one `[<pid>] <message> <field>=<value>…` line.
struct GitDaemonLog {
    pid: u32,
}

impl<S: Subscriber> Layer<S> for GitDaemonLog {
    fn on_event(&self, event: &Event<'_>, _context: LayerContext<'_, S>) {
        let mut line = LogLine::default();
        event.record(&mut line);
        let mut text = format!("[{}] {}", self.pid, line.message);
        if !line.fields.is_empty() {
            if !line.message.is_empty() {
                text.push(' ');
            }
            text.push_str(&line.fields);
        }
        text.push('\n');
        // One write per line, so lines from several threads don't interleave.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

/// An event's message and its other fields.
#[derive(Default)]
struct LogLine {
    message: String,
    fields: String,
}

impl tracing::field::Visit for LogLine {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.field(field, format_args!("{value}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }
}

impl LogLine {
    fn field(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{}={value}", field.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let cli = Cli::try_parse_from(["packgate", "daemon"].iter().chain(args))
            .map_err(|err| err.to_string())?;
        let Command::Daemon(args) = cli.command else {
            panic!("not the daemon command");
        };
        Settings::from_args(*args).map_err(|err| err.to_string())
    }

    /// The settings of `args`, or a failed test.
    fn settings(args: &[&str]) -> Settings {
        parse(args).unwrap_or_else(|err| panic!("{args:?} refused: {err}"))
    }

    #[test]
    fn git_daemon_defaults() {
        let settings = settings(&[]);
        assert_eq!(settings.port, DEFAULT_PORT);
        assert!(settings.listen.is_empty());
        assert_eq!(settings.policy.export, Export::MarkedOnly);
        assert_eq!(settings.config, DaemonConfig::default());
        assert_eq!(settings.options.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(settings.pid_file, None);
    }

    #[test]
    fn pack_cache_flags() {
        use packgate::protocol::pack_cache::PackCacheConfig;
        let defaults = PackCacheConfig::default();
        assert_eq!(settings(&[]).pack_cache.config(), Some(defaults.clone()));
        let settings = settings(&[
            "--pack-cache-ttl=10",
            "--pack-cache-max-bytes=1000",
            "--pack-cache-memory=100",
            "--pack-cache-dir=/var/tmp",
        ]);
        assert_eq!(
            settings.pack_cache.config(),
            Some(PackCacheConfig {
                ttl: Duration::from_secs(10),
                max_bytes: 1000,
                memory_per_entry: 100,
                temp_dir: Some("/var/tmp".into()),
                ..defaults
            })
        );
        for off in [
            ["--no-pack-cache"],
            ["--pack-cache-ttl=0"],
            ["--pack-cache-max-bytes=0"],
        ] {
            assert_eq!(self::settings(&off).pack_cache.config(), None, "{off:?}");
        }
    }

    #[test]
    fn git_daemon_flags() {
        let settings = settings(&[
            "--listen=LOCALHOST",
            "--listen=[::1]",
            "--port=0",
            "--base-path=/srv/git",
            "--export-all",
            "--enable=receive-pack",
            "--forbid-override=receive-pack",
            "--disable=upload-pack",
            "--informative-errors",
            "--init-timeout=5",
            "--timeout=0",
            "--max-connections=0",
            "--pid-file=/run/x.pid",
            "--reuseaddr",
            "--verbose",
            "--strict-paths",
            "--interpolated-path=/pub/%H%D",
            "--",
            "/pub/a",
            "/pub/b",
        ]);
        assert_eq!(settings.listen, ["localhost", "::1"]);
        assert_eq!(settings.port, DEFAULT_PORT);
        assert_eq!(settings.policy.base_path, Some(PathBuf::from("/srv/git")));
        assert_eq!(settings.policy.export, Export::All);
        assert_eq!(
            settings.policy.whitelist,
            [PathBuf::from("/pub/a"), PathBuf::from("/pub/b")]
        );
        assert!(settings.policy.strict_paths);
        assert_eq!(
            settings.policy.interpolated_path.as_deref(),
            Some("/pub/%H%D")
        );
        assert_eq!(settings.config.errors, ErrorDetail::Informative);
        assert_eq!(
            settings.config.receive_pack,
            ServiceSwitch {
                enabled: true,
                overridable: false
            }
        );
        assert_eq!(
            settings.config.upload_pack,
            ServiceSwitch {
                enabled: false,
                overridable: true
            }
        );
        assert_eq!(settings.options.init_timeout, Duration::from_secs(5));
        assert_eq!(settings.options.idle_timeout, NO_TIMEOUT);
        assert_eq!(
            settings.options.max_connections,
            tokio::sync::Semaphore::MAX_PERMITS
        );
        assert!(settings.verbose);
        assert_eq!(settings.pid_file, Some(PathBuf::from("/run/x.pid")));
    }

    #[test]
    fn timeouts_as_git() {
        let timeouts = |args: &[&str]| {
            let settings = settings(args);
            (settings.options.init_timeout, settings.options.idle_timeout)
        };
        let defaults = DaemonOptions::default();
        assert_eq!(
            timeouts(&[]),
            (defaults.init_timeout, defaults.idle_timeout)
        );
        assert_eq!(
            timeouts(&["--timeout=7"]),
            (Duration::from_secs(7), Duration::from_secs(7))
        );
        assert_eq!(
            timeouts(&["--init-timeout=0", "--timeout=7"]),
            (Duration::from_secs(7), Duration::from_secs(7))
        );
        assert_eq!(
            timeouts(&["--init-timeout=0"]),
            (NO_TIMEOUT, defaults.idle_timeout)
        );
    }

    #[test]
    fn unsupported_and_contradictory_flags_are_refused() {
        for (args, expected) in [
            (&["--inetd"][..], "--inetd is not supported"),
            (&["--syslog"], "--syslog is not supported"),
            (&["--detach"], "--detach is not supported"),
            (&["--user=git"], "--user/--group are not supported"),
            (&["--group=git"], "--user/--group are not supported"),
            (&["--user-path"], "--user-path is not supported"),
            (&["--user-path=pub"], "--user-path is not supported"),
            (
                &["--base-path-relaxed"],
                "--base-path-relaxed is not supported",
            ),
            (
                &["--access-hook=/bin/true"],
                "--access-hook is not supported",
            ),
            (
                &["--enable=upload-archive"],
                "upload-archive is not supported",
            ),
            (&["--log-destination=syslog"], "syslog is not supported"),
            (&["--log-destination=elsewhere"], "unknown log destination"),
            (
                &["--enable=receive-pack", "--disable=receive-pack"],
                "contradict",
            ),
            (
                &[
                    "--allow-override=upload-pack",
                    "--forbid-override=upload-pack",
                ],
                "contradict",
            ),
            (&["--enable=frobnicate"], "invalid value 'frobnicate'"),
            (&["--port=x"], "invalid value 'x'"),
        ] {
            match parse(args) {
                Ok(_) => panic!("{args:?} must be refused"),
                Err(err) => assert!(err.contains(expected), "{args:?}: {err}"),
            }
        }
        // Disabling what packgate doesn't have is harmless.
        settings(&[
            "--disable=upload-archive",
            "--forbid-override=upload-archive",
        ]);
    }
}
