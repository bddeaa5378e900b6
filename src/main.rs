//! The `packgate` command line: parses arguments, opens what they name, runs the library's
//! services and maps their errors to exit codes. No protocol logic lives here.

mod budget;
mod config;
mod daemon;
mod fetch;
mod http_backend;
mod maintenance;
mod mirror;
mod passwd;
mod push;
mod serve;
mod shell;
mod trim;
mod watch;
mod watch_http;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use packgate::{
    protocol::{
        receive_pack::{MessageSink, ProtocolVersion, ReceivePack, ReceivePackOptions},
        repository::{PathLookup, Repository},
        upload_pack::{ServeError, SessionOptions, UploadPack, V0Options},
    },
    transport::stdio,
};

/// Exit status for a session that ended in an error, as git's `die()` uses.
const EXIT_FATAL: u8 = 128;

#[derive(Parser)]
#[command(name = "packgate", version, about = "A git server in pure Rust")]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Send objects to a git client: a drop-in for git-upload-pack (protocols v0, v1 and v2).
    UploadPack(StdioServiceArgs),
    /// Receive objects from a git client: a drop-in for git-receive-pack (push, protocol v0/v1).
    ReceivePack(StdioServiceArgs),
    /// Serve the repositories below ROOT over git:// (upload-pack, protocols v0-v2), smart
    /// HTTP and, with --ssh, SSH.
    Serve(Box<serve::ServeArgs>),
    /// A drop-in for git-shell as an OpenSSH forced command: runs only the git service
    /// SSH_ORIGINAL_COMMAND (or -c) names, for a repository below --root.
    Shell(shell::ShellArgs),
    /// A drop-in for git daemon: serve repositories over git:// with git daemon's flags,
    /// rules (git-daemon-export-ok, --base-path, whitelist) and log lines.
    Daemon(Box<daemon::DaemonArgs>),
    /// Add or replace USER in a credentials file for `serve --http-credentials`, with a
    /// bcrypt hash of the password read from standard input.
    Passwd(passwd::PasswdArgs),
    /// A CGI program for a web server (Apache, nginx with fcgiwrap): a drop-in for
    /// git-http-backend, configured by GIT_PROJECT_ROOT, GIT_HTTP_EXPORT_ALL and REMOTE_USER.
    HttpBackend(http_backend::HttpBackendArgs),
    /// Repository maintenance as `git maintenance`: repack, prune, commit-graph, pack-refs.
    Maintenance(maintenance::MaintenanceArgs),
    /// Push to a git server with packgate's own send-pack: `push <url> <refspec>…`, as
    /// `git push`.
    Push(Box<push::PushArgs>),
    /// Fetch refs and objects from another repository into a local one (git's
    /// `git fetch <url> <refspec>…`), with packgate's own client.
    Fetch(fetch::FetchArgs),
    /// Create a bare mirror of a repository (`git clone --mirror`), or bring one up to date:
    /// every ref, deleted ones pruned, HEAD as the remote's.
    Mirror(fetch::MirrorArgs),
    /// Print a repository's ref changes as they happen, one line per ref (`<old> <new>
    /// <name>`), until the connection fails (packgate's wait-refs; docs/refs-watch.md).
    Watch(watch::WatchArgs),
}

/// The arguments git gives its stdio services (git-upload-pack, git-receive-pack).
#[derive(Args)]
struct StdioServiceArgs {
    /// Serve exactly one request, without the advertisement unless asked for (smart HTTP).
    #[arg(long)]
    stateless_rpc: bool,
    /// Only send the advertisement, then exit.
    #[arg(long)]
    advertise_refs: bool,
    /// The same as --advertise-refs, as git-http-backend calls it.
    #[arg(long)]
    http_backend_info_refs: bool,
    /// Do not try <directory>/.git or <directory>.git.
    #[arg(long)]
    strict: bool,
    /// End the session when the client sends or takes nothing for this many seconds while
    /// the server waits for it (time the server spends working does not count).
    #[arg(long, value_name = "N")]
    timeout: Option<u64>,
    /// The repository: a bare repository or a work tree.
    directory: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `packgate daemon` logs in git daemon's style and sets that up itself.
    if !matches!(cli.command, Command::Daemon(_)) {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            // No colour codes in web servers' logs or files.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("PACKGATE_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .init();
    }
    let result = match cli.command {
        Command::UploadPack(args) => upload_pack(args),
        Command::ReceivePack(args) => receive_pack(args),
        Command::Serve(args) => serve::serve(*args),
        Command::Shell(args) => shell(&args),
        Command::Daemon(args) => daemon::daemon(*args),
        Command::Passwd(args) => passwd::passwd(args),
        Command::HttpBackend(args) => http_backend::http_backend(args),
        Command::Maintenance(args) => maintenance::maintenance(args),
        Command::Push(args) => push::push(*args),
        Command::Fetch(args) => fetch::fetch(args),
        Command::Mirror(args) => fetch::mirror(args),
        Command::Watch(args) => watch::watch(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("fatal: {err:#}");
            ExitCode::from(EXIT_FATAL)
        }
    }
}

/// `packgate shell`: the service its command names, as `packgate upload-pack` /
/// `receive-pack --strict <git dir>` would run it.
fn shell(args: &shell::ShellArgs) -> anyhow::Result<ExitCode> {
    let plan = match shell::plan(args)? {
        Ok(plan) => plan,
        Err(code) => return Ok(code),
    };
    let args = StdioServiceArgs {
        stateless_rpc: false,
        advertise_refs: false,
        http_backend_info_refs: false,
        strict: true,
        timeout: None,
        directory: plan.git_dir,
    };
    match plan.service {
        packgate::wire::service::Service::ReceivePack => receive_pack(args),
        _ => upload_pack(args),
    }
}

fn upload_pack(args: StdioServiceArgs) -> anyhow::Result<ExitCode> {
    let protocol = std::env::var("GIT_PROTOCOL").unwrap_or_default();
    let repo = open_for_session(&args.directory, args.strict)?;
    let advertise_only = args.advertise_refs || args.http_backend_info_refs;
    // `packgate.refreshOnFetch`: once per fetch, so with --stateless-rpc only for the
    // advertisement, never for the requests of the same fetch.
    if advertise_only || !args.stateless_rpc {
        serve::plugged_upstreams().refresh_before_fetch(&repo);
    }
    let upload_pack = UploadPack::new(&repo)?;
    let stdio::SessionIo {
        input,
        output,
        timeout,
    } = session_io(args.timeout)?;
    let result = if asks_for_version_2(&protocol) {
        let options = SessionOptions {
            stateless: args.stateless_rpc,
            advertise_only,
            ..SessionOptions::default()
        };
        upload_pack.serve(input, output, &options)
    } else {
        // As git: a client that did not ask for version 2 gets v0, or v1 if it asked for it.
        let version = if protocol.split(':').any(|entry| entry == "version=1") {
            ProtocolVersion::V1
        } else {
            ProtocolVersion::V0
        };
        let options = V0Options {
            stateless: args.stateless_rpc,
            advertise_only,
            version,
        };
        upload_pack.serve_v0(input, output, &options)
    };
    session_end(result, timeout.as_ref())
}

fn receive_pack(args: StdioServiceArgs) -> anyhow::Result<ExitCode> {
    // Push has no protocol v2: a client asking for it gets v0, as from git.
    let version = match std::env::var("GIT_PROTOCOL") {
        Ok(value) if value.split(':').any(|entry| entry == "version=1") => ProtocolVersion::V1,
        _ => ProtocolVersion::V0,
    };
    let repo = open_for_session(&args.directory, args.strict)?;
    let receive_pack = ReceivePack::new(&repo)?.with_upstreams(&serve::plugged_upstreams());
    let options = ReceivePackOptions {
        stateless: args.stateless_rpc,
        advertise_only: args.advertise_refs || args.http_backend_info_refs,
        version,
        // Without sideband, messages go to standard error, which reaches the user's terminal
        // (over ssh too), as git's receive-pack's does.
        messages: MessageSink::writer(std::io::stderr()),
        ..ReceivePackOptions::default()
    };
    // With --timeout, a push that waits too long for the client fails like any other: its
    // quarantine is deleted before the process ends.
    let stdio::SessionIo {
        input,
        output,
        timeout,
    } = session_io(args.timeout)?;
    let result = receive_pack.serve(input, output, &options);
    // git's receive-pack runs `git maintenance run --auto` after a push (receive.autogc);
    // packgate starts its own, detached, so the client is not kept waiting.
    if let Ok(Some(report)) = &result {
        if report.unpack.is_ok() {
            maintenance::spawn_auto_after_push(repo.git_dir(), repo.config());
        }
    }
    session_end(result.map(drop), timeout.as_ref())
}

/// Open the repository a stdio session serves, the way git finds it (`strict`: the path must
/// be the git directory itself). As git's services do, a failure goes to standard error alone
/// (`fatal: '<path>' does not appear to be a git repository`), which git's client shows above
/// its own "Could not read from remote repository".
fn open_for_session(directory: &Path, strict: bool) -> anyhow::Result<Repository> {
    let lookup = if strict {
        PathLookup::Strict
    } else {
        PathLookup::Lenient
    };
    let config_parameters = std::env::var("GIT_CONFIG_PARAMETERS").ok();
    // git's services serve the namespace GIT_NAMESPACE names (ssh and http-backend pass it on).
    let namespace = match std::env::var_os("GIT_NAMESPACE") {
        Some(raw) => {
            use std::os::unix::ffi::OsStrExt;
            packgate_protocol::refname::Namespace::new(raw.as_bytes())?
        }
        None => None,
    };
    Ok(
        Repository::open(directory, lookup, config_parameters.as_deref())?
            .with_namespace(namespace),
    )
}

/// Standard input and output for a session, with `--timeout=N` (0: none).
fn session_io(timeout: Option<u64>) -> anyhow::Result<stdio::SessionIo> {
    let limit = timeout.filter(|s| *s > 0).map(Duration::from_secs);
    stdio::SessionIo::new(limit).context("could not set up standard input and output")
}

/// The exit status of a stdio session.
fn session_end(
    result: Result<(), ServeError>,
    timeout: Option<&stdio::Timeout>,
) -> anyhow::Result<ExitCode> {
    if let Some(timeout) = timeout.filter(|timeout| timeout.reached()) {
        // As git's upload-pack on --timeout: the session ends without a word to the client.
        if let Err(err) = &result {
            tracing::debug!(%err, "session ended by the timeout");
        }
        eprintln!(
            "fatal: timeout reached after {}s without traffic from the client",
            timeout.limit.as_secs()
        );
        return Ok(ExitCode::from(EXIT_FATAL));
    }
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(err) if err.is_disconnect() => {
            tracing::debug!(%err, "client hung up");
            Ok(ExitCode::from(EXIT_FATAL))
        }
        Err(err) => Err(err.into()),
    }
}

/// `GIT_PROTOCOL` is a colon-separated list of `key=value` entries.
fn asks_for_version_2(value: &str) -> bool {
    value.split(':').any(|entry| entry == "version=2")
}
