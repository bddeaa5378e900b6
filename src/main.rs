//! The `packgate` command line: parses arguments, opens what they name, runs the library's
//! services and maps their errors to exit codes. No protocol logic lives here.

use std::{
    io::{Read, Write},
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use packgate::{
    protocol::{
        daemon::{DaemonService, ErrorDetail},
        receive_pack::{ProtocolVersion, ReceivePack, ReceivePackOptions},
        registry::Registry,
        repository::{PathLookup, Repository},
        upload_pack::{SessionOptions, UploadPack},
    },
    transport::{
        daemon::{self, DaemonOptions},
        pkt_line::PacketWriter,
    },
};

/// Exit status for a session that ended in an error, as git's `die()` uses.
const EXIT_FATAL: u8 = 128;

#[derive(Parser)]
#[command(name = "packgate", version, about = "A git server in pure Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send objects to a git client: a drop-in for git-upload-pack (protocol v2).
    UploadPack(UploadPackArgs),
    /// Receive objects from a git client: a drop-in for git-receive-pack (push, protocol v0/v1).
    ReceivePack(ReceivePackArgs),
    /// Serve the repositories below ROOT over git:// (upload-pack, protocol v2).
    Serve(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// The directory of repositories to serve; created if missing.
    #[arg(default_value = "./repos")]
    root: PathBuf,
    /// Where the git:// front-end listens.
    #[arg(long = "git", value_name = "ADDR", default_value = "127.0.0.1:9418")]
    git_addr: std::net::SocketAddr,
    /// Tell refused clients why, instead of only "access denied or repository not exported".
    #[arg(long)]
    informative_errors: bool,
}

#[derive(Args)]
struct UploadPackArgs {
    /// Serve exactly one request, without the advertisement unless asked for (smart HTTP).
    #[arg(long)]
    stateless_rpc: bool,
    /// Only send the capability advertisement, then exit.
    #[arg(long)]
    advertise_refs: bool,
    /// The same as --advertise-refs, as git-http-backend calls it.
    #[arg(long)]
    http_backend_info_refs: bool,
    /// Do not try <directory>/.git or <directory>.git.
    #[arg(long)]
    strict: bool,
    /// End the session after this many seconds without traffic.
    #[arg(long, value_name = "N")]
    timeout: Option<u64>,
    /// The repository: a bare repository or a work tree.
    directory: PathBuf,
}

#[derive(Args)]
struct ReceivePackArgs {
    /// Serve exactly one push, without the advertisement unless asked for (smart HTTP).
    #[arg(long)]
    stateless_rpc: bool,
    /// Only send the ref advertisement, then exit.
    #[arg(long)]
    advertise_refs: bool,
    /// The same as --advertise-refs, as git-http-backend calls it.
    #[arg(long)]
    http_backend_info_refs: bool,
    /// Do not try <directory>/.git or <directory>.git.
    #[arg(long)]
    strict: bool,
    /// End the session after this many seconds without traffic.
    #[arg(long, value_name = "N")]
    timeout: Option<u64>,
    /// The repository: a bare repository or a work tree.
    directory: PathBuf,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PACKGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::UploadPack(args) => upload_pack(args),
        Command::ReceivePack(args) => receive_pack(args),
        Command::Serve(args) => serve(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("fatal: {err:#}");
            ExitCode::from(EXIT_FATAL)
        }
    }
}

fn upload_pack(args: UploadPackArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout().lock();
    let version_2 = std::env::var("GIT_PROTOCOL").is_ok_and(|value| asks_for_version_2(&value));
    if !version_2 {
        // Refuse clearly rather than leave a v0/v1 client waiting for an advertisement.
        let mut out = PacketWriter::new(stdout);
        out.error(
            "packgate serves fetches over protocol v2 only; use 'git -c protocol.version=2'",
        )?;
        out.get_mut().flush()?;
        return Ok(ExitCode::from(EXIT_FATAL));
    }
    let lookup = if args.strict {
        PathLookup::Strict
    } else {
        PathLookup::Lenient
    };
    let config_parameters = std::env::var("GIT_CONFIG_PARAMETERS").ok();
    let repo = match Repository::open(&args.directory, lookup, config_parameters.as_deref()) {
        Ok(repo) => repo,
        Err(err) => {
            let mut out = PacketWriter::new(stdout);
            out.error(format!("upload-pack: {err}"))?;
            out.get_mut().flush()?;
            return Err(err).context("could not open the repository");
        }
    };
    let upload_pack = UploadPack::new(&repo)?;
    let options = SessionOptions {
        stateless: args.stateless_rpc,
        advertise_only: args.advertise_refs || args.http_backend_info_refs,
        ..SessionOptions::default()
    };
    let activity = Activity::new();
    if let Some(seconds) = args.timeout.filter(|s| *s > 0) {
        activity.watch(Duration::from_secs(seconds));
    }
    let input = Tracked {
        inner: std::io::stdin().lock(),
        activity: activity.clone(),
    };
    let output = Tracked {
        inner: std::io::BufWriter::with_capacity(64 * 1024, stdout),
        activity,
    };
    match upload_pack.serve(input, output, &options) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(err) if err.is_disconnect() => {
            tracing::debug!(%err, "client hung up");
            Ok(ExitCode::from(EXIT_FATAL))
        }
        Err(err) => Err(err.into()),
    }
}

fn receive_pack(args: ReceivePackArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout().lock();
    // Push has no protocol v2: a client asking for it gets v0, as from git.
    let version = match std::env::var("GIT_PROTOCOL") {
        Ok(value) if value.split(':').any(|entry| entry == "version=1") => ProtocolVersion::V1,
        _ => ProtocolVersion::V0,
    };
    let lookup = if args.strict {
        PathLookup::Strict
    } else {
        PathLookup::Lenient
    };
    let config_parameters = std::env::var("GIT_CONFIG_PARAMETERS").ok();
    let repo = match Repository::open(&args.directory, lookup, config_parameters.as_deref()) {
        Ok(repo) => repo,
        Err(err) => {
            let mut out = PacketWriter::new(stdout);
            out.error(format!("receive-pack: {err}"))?;
            out.get_mut().flush()?;
            return Err(err).context("could not open the repository");
        }
    };
    let receive_pack = ReceivePack::new(&repo)?;
    let options = ReceivePackOptions {
        stateless: args.stateless_rpc,
        advertise_only: args.advertise_refs || args.http_backend_info_refs,
        version,
        ..ReceivePackOptions::default()
    };
    let activity = Activity::new();
    if let Some(seconds) = args.timeout.filter(|s| *s > 0) {
        activity.watch(Duration::from_secs(seconds));
    }
    let input = Tracked {
        inner: std::io::stdin().lock(),
        activity: activity.clone(),
    };
    let output = Tracked {
        inner: std::io::BufWriter::with_capacity(64 * 1024, stdout),
        activity,
    };
    match receive_pack.serve(input, output, &options) {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(err) if err.is_disconnect() => {
            tracing::debug!(%err, "client hung up");
            Ok(ExitCode::from(EXIT_FATAL))
        }
        Err(err) => Err(err.into()),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.root)
        .with_context(|| format!("could not create {}", args.root.display()))?;
    let registry = Registry::new(&args.root)
        .with_context(|| format!("could not open {}", args.root.display()))?;
    let errors = if args.informative_errors {
        ErrorDetail::Informative
    } else {
        ErrorDetail::Terse
    };
    let service = Arc::new(DaemonService::new(registry.clone(), errors));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.git_addr)
            .await
            .with_context(|| format!("could not listen on {}", args.git_addr))?;
        eprintln!(
            "packgate: serving {} on git://{} (pid {})",
            registry.root().display(),
            listener.local_addr()?,
            std::process::id()
        );
        daemon::serve(
            listener,
            service,
            DaemonOptions::default(),
            shutdown_signal(),
        )
        .await?;
        eprintln!("packgate: shutting down");
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
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

/// `GIT_PROTOCOL` is a colon-separated list of `key=value` entries.
fn asks_for_version_2(value: &str) -> bool {
    value.split(':').any(|entry| entry == "version=2")
}

/// When traffic last moved, for `--timeout`.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_millis: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_millis: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(now, Ordering::Relaxed);
    }

    /// End the process once nothing moved for `limit`, as git's upload-pack does on
    /// `--timeout`: a stalled client must not hold a session forever.
    fn watch(&self, limit: Duration) {
        let activity = self.clone();
        std::thread::spawn(move || loop {
            let last = Duration::from_millis(activity.last_millis.load(Ordering::Relaxed));
            let idle = activity.start.elapsed().saturating_sub(last);
            if idle >= limit {
                eprintln!(
                    "fatal: timeout reached after {}s without traffic",
                    limit.as_secs()
                );
                std::process::exit(i32::from(EXIT_FATAL));
            }
            std::thread::sleep((limit - idle).min(Duration::from_secs(1)));
        });
    }
}

/// A reader or writer that records activity.
struct Tracked<T> {
    inner: T,
    activity: Activity,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.activity.touch();
        Ok(n)
    }
}

impl<W: Write> Write for Tracked<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.activity.touch();
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()?;
        self.activity.touch();
        Ok(())
    }
}
