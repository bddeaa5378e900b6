//! `packgate fetch` and `packgate mirror`: the fetch client on the command line, with git's
//! summary lines on standard error.

use std::{io::Write, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Args, ValueEnum};
use packgate::{
    protocol::{
        client::fetch::{
            self, Algorithm, ChangeKind, FetchOptions, FetchOutcome, Refspec, Rejection,
            TagFollowing,
        },
        repository::{PathLookup, Repository},
    },
    wire::{
        client::{ConnectOptions, Connection, Connector, WireVersion},
        service::Service,
    },
};

/// The protocol version to ask for (git's `-c protocol.version=N`).
#[derive(Clone, Copy, ValueEnum)]
enum Version {
    #[value(name = "0")]
    V0,
    #[value(name = "1")]
    V1,
    #[value(name = "2")]
    V2,
}

/// The negotiation algorithm (git's `fetch.negotiationAlgorithm`).
#[derive(Clone, Copy, ValueEnum)]
enum Negotiation {
    Default,
    Consecutive,
    Skipping,
}

/// What connects to the remote: shared by `fetch` and `mirror`.
#[derive(Args)]
pub(crate) struct RemoteArgs {
    /// The protocol version to ask for; the server may answer with a lower one.
    #[arg(long, value_enum, default_value = "2")]
    protocol: Version,
    /// The program run for a local path or file:// URL (git's --upload-pack); by default
    /// packgate serves itself.
    #[arg(long, value_name = "PROG")]
    upload_pack: Option<String>,
    /// How haves are chosen.
    #[arg(long, value_enum, default_value = "default")]
    negotiation: Negotiation,
    /// Print nothing but errors, and ask the remote for no progress.
    #[arg(short, long)]
    quiet: bool,
    /// Give up when connecting, or any single read or write, makes no progress for this
    /// many seconds (the remote program is then killed). 0 or absent: wait as long as it
    /// takes, as git does.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
}

/// `--timeout SECONDS` as the transports take it (0: none).
pub(crate) fn timeout(seconds: Option<u64>) -> Option<std::time::Duration> {
    seconds
        .filter(|s| *s > 0)
        .map(std::time::Duration::from_secs)
}

/// `packgate fetch`.
#[derive(Args)]
pub(crate) struct FetchArgs {
    /// The repository to fetch into (default: $GIT_DIR, or the current directory).
    #[arg(long, value_name = "DIR")]
    git_dir: Option<PathBuf>,
    /// Delete local refs in the refspecs' destinations that the remote no longer has.
    #[arg(long, short)]
    prune: bool,
    /// Fetch every tag (refs/tags/*:refs/tags/*).
    #[arg(long, short, conflicts_with = "no_tags")]
    tags: bool,
    /// Follow no tags.
    #[arg(long, short)]
    no_tags: bool,
    #[command(flatten)]
    remote: RemoteArgs,
    /// The remote repository: a path, file://, or another URL a transport handles.
    url: String,
    /// What to fetch, as git's refspecs ([+]<src>[:<dst>], ^<src>). None: the remote's HEAD,
    /// into FETCH_HEAD only (git's `git fetch <url>`).
    refspecs: Vec<String>,
}

/// `packgate mirror`.
#[derive(Args)]
pub(crate) struct MirrorArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// The remote repository.
    url: String,
    /// The mirror: created (bare, as `git clone --mirror`) if it does not exist, updated if
    /// it does.
    directory: PathBuf,
}

pub(crate) fn fetch(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let git_dir = args
        .git_dir
        .or_else(|| std::env::var_os("GIT_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    let repo = Repository::open(&git_dir, PathLookup::Lenient, None)
        .with_context(|| format!("not a git repository: {}", git_dir.display()))?;
    let mut refspecs = Vec::new();
    for spec in &args.refspecs {
        refspecs.push(Refspec::parse(spec)?);
    }
    if refspecs.is_empty() {
        refspecs.push(Refspec::parse("HEAD")?);
    }
    let options = FetchOptions {
        refspecs,
        prune: args.prune,
        tags: if args.tags {
            TagFollowing::All
        } else if args.no_tags {
            TagFollowing::None
        } else {
            TagFollowing::Auto
        },
        algorithm: algorithm(args.remote.negotiation),
        mirror: false,
        quiet: args.remote.quiet,
        ingest: Default::default(),
    };
    let outcome = run(&args.remote, &args.url, &repo, &options)?;
    write_fetch_head(&repo, &args.url, &outcome)?;
    Ok(report(&args.url, &outcome, args.remote.quiet))
}

pub(crate) fn mirror(args: MirrorArgs) -> anyhow::Result<ExitCode> {
    let directory = &args.directory;
    let create = !directory.exists()
        || (directory.is_dir()
            && std::fs::read_dir(directory)
                .map(|mut entries| entries.next().is_none())
                .unwrap_or(false));
    if create {
        fetch::init_mirror(directory, &args.url)
            .with_context(|| format!("could not create {}", directory.display()))?;
        if !args.remote.quiet {
            eprintln!("Cloning into bare repository '{}'...", directory.display());
        }
    }
    let result = (|| {
        let repo = Repository::open(directory, PathLookup::Strict, None)
            .with_context(|| format!("not a git repository: {}", directory.display()))?;
        let options = FetchOptions {
            mirror: true,
            algorithm: algorithm(args.remote.negotiation),
            quiet: args.remote.quiet,
            ..FetchOptions::default()
        };
        run(&args.remote, &args.url, &repo, &options)
    })();
    match result {
        Ok(outcome) => Ok(report(&args.url, &outcome, args.remote.quiet || create)),
        Err(err) => {
            if create {
                // As git clone: a failed clone leaves nothing behind.
                let _ = std::fs::remove_dir_all(directory);
            }
            Err(err)
        }
    }
}

fn algorithm(negotiation: Negotiation) -> Algorithm {
    match negotiation {
        Negotiation::Default | Negotiation::Consecutive => Algorithm::Consecutive,
        Negotiation::Skipping => Algorithm::Skipping,
    }
}

/// Connect and fetch.
fn run(
    remote: &RemoteArgs,
    url: &str,
    repo: &Repository,
    options: &FetchOptions,
) -> anyhow::Result<FetchOutcome> {
    let client = crate::serve::client();
    let connect = ConnectOptions {
        version: match remote.protocol {
            Version::V0 => WireVersion::V0,
            Version::V1 => WireVersion::V1,
            Version::V2 => WireVersion::V2,
        },
        program: remote.upload_pack.clone(),
        timeout: timeout(remote.timeout),
        ..ConnectOptions::default()
    };
    let connection: Box<dyn Connection> = client
        .connect(url, Service::UploadPack, &connect)
        .with_context(|| format!("could not connect to '{url}'"))?;
    let mut stderr = std::io::stderr();
    Ok(fetch::fetch(connection, repo, options, &mut stderr)?)
}

/// `FETCH_HEAD` for the refs fetched without a destination, as git writes it.
fn write_fetch_head(repo: &Repository, url: &str, outcome: &FetchOutcome) -> anyhow::Result<()> {
    let mut text = String::new();
    for (name, id) in &outcome.fetched {
        let name = name.to_string();
        let description = if name == "HEAD" {
            url.to_owned()
        } else if let Some(branch) = name.strip_prefix("refs/heads/") {
            format!("branch '{branch}' of {url}")
        } else if let Some(tag) = name.strip_prefix("refs/tags/") {
            format!("tag '{tag}' of {url}")
        } else {
            format!("'{name}' of {url}")
        };
        text.push_str(&format!("{id}\t\t{description}\n"));
    }
    if !outcome.fetched.is_empty() {
        std::fs::write(repo.git_dir().join("FETCH_HEAD"), text)
            .context("could not write FETCH_HEAD")?;
    }
    Ok(())
}

/// A ref name as git shows it in the summary.
fn short(name: &str) -> &str {
    ["refs/heads/", "refs/tags/", "refs/remotes/"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name)
}

fn abbrev(id: Option<impl std::fmt::Display>) -> String {
    let mut hex = id.map(|id| id.to_string()).unwrap_or_default();
    hex.truncate(7);
    hex
}

/// git's summary lines (`From <url>`, one per changed ref) and its exit status.
fn report(url: &str, outcome: &FetchOutcome, quiet: bool) -> ExitCode {
    let mut lines: Vec<(char, String, String, String, &'static str)> = Vec::new();
    let mut rejected = false;
    for change in &outcome.changes {
        let local = short(&change.local.to_string()).to_owned();
        let remote = change
            .remote
            .as_ref()
            .map(|r| short(&r.to_string()).to_owned())
            .unwrap_or_else(|| "(none)".to_owned());
        let (code, summary, suffix) = match &change.kind {
            ChangeKind::UpToDate => continue,
            ChangeKind::New => {
                let what = if change.local.starts_with(b"refs/tags/") {
                    "[new tag]"
                } else if change
                    .remote
                    .as_ref()
                    .is_some_and(|r| r.starts_with(b"refs/heads/"))
                {
                    "[new branch]"
                } else {
                    "[new ref]"
                };
                ('*', what.to_owned(), "")
            }
            ChangeKind::FastForward => (
                ' ',
                format!("{}..{}", abbrev(change.old), abbrev(change.new)),
                "",
            ),
            ChangeKind::Forced => (
                '+',
                format!("{}...{}", abbrev(change.old), abbrev(change.new)),
                "  (forced update)",
            ),
            ChangeKind::Pruned => ('-', "[deleted]".to_owned(), ""),
            ChangeKind::Rejected(reason) => {
                rejected = true;
                let suffix = match reason {
                    Rejection::NonFastForward => "  (non-fast-forward)",
                    Rejection::WouldClobberTag => "  (would clobber existing tag)",
                    Rejection::Failed(_) => "  (unable to update local ref)",
                };
                ('!', "[rejected]".to_owned(), suffix)
            }
        };
        lines.push((code, summary, remote, local, suffix));
    }
    for (name, _) in &outcome.fetched {
        let name = name.to_string();
        let what = if name.starts_with("refs/tags/") {
            "tag"
        } else if name.starts_with("refs/heads/") || name == "HEAD" {
            "branch"
        } else {
            ""
        };
        lines.push((
            '*',
            what.to_owned(),
            short(&name).to_owned(),
            "FETCH_HEAD".to_owned(),
            "",
        ));
    }
    if !quiet && !lines.is_empty() {
        let mut stderr = std::io::stderr().lock();
        let width = lines.iter().map(|l| l.2.len()).max().unwrap_or(0).max(10);
        let _ = writeln!(stderr, "From {url}");
        for (code, summary, remote, local, suffix) in &lines {
            let _ = writeln!(
                stderr,
                " {code} {summary:<17} {remote:<width$} -> {local}{suffix}"
            );
        }
    }
    if rejected {
        for change in outcome.changes.iter().filter(|c| c.is_rejected()) {
            if let ChangeKind::Rejected(Rejection::Failed(reason)) = &change.kind {
                eprintln!("error: cannot update ref '{}': {reason}", change.local);
            }
        }
        eprintln!("error: some local refs could not be updated");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
