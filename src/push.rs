//! `packgate push`: git's `git push <url> <refspec>…` with packgate's own send-pack
//! (`protocol::client::push`), from a local repository to any URL the client transports
//! reach. For local paths the remote side is this executable's `receive-pack`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use gix_hash::ObjectId;
use packgate::protocol::client::push::{
    push as send_pack, Expected, PushCommand, PushOptions, RefResult, RefStatus,
};
use packgate::protocol::repository::{Head, PathLookup, Repository};
use packgate::wire::client::{ConnectOptions, Connector, WireVersion};
use packgate::wire::service::Service;

/// The arguments of `packgate push`.
#[derive(Args)]
pub(crate) struct PushArgs {
    /// The local repository (default: `$GIT_DIR`, else the current directory).
    #[arg(long, value_name = "DIR")]
    git_dir: Option<PathBuf>,
    /// Update all refs or none (the remote must support `atomic`).
    #[arg(long)]
    atomic: bool,
    /// A push option for the remote's hooks (repeatable).
    #[arg(short = 'o', long = "push-option", value_name = "OPTION")]
    push_options: Vec<String>,
    /// Update refs that are not fast-forwards.
    #[arg(short = 'f', long)]
    force: bool,
    /// Update only if the remote ref has the expected value: `<ref>:<expect>`; without
    /// `<expect>` (or without a ref) the ref must not exist on the remote, as with git when
    /// there is no remote-tracking ref to expect.
    #[arg(long, value_name = "REF[:EXPECT]", num_args = 0..=1, require_equals = true,
          default_missing_value = "")]
    force_with_lease: Vec<String>,
    /// The program run for a local path (`sh -c '<PROG> <path>'`), git's `--receive-pack`.
    #[arg(long, value_name = "PROG", alias = "exec")]
    receive_pack: Option<String>,
    /// The protocol version to ask for (receive-pack speaks 0 and 1).
    #[arg(long, value_name = "0|1", default_value = "0")]
    protocol: u8,
    /// Send a full pack instead of a thin one.
    #[arg(long)]
    no_thin: bool,
    /// Ask the remote for no progress; print the summary only on failure.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Give up when connecting, or any single read or write, makes no progress for this
    /// many seconds (as `packgate fetch --timeout`). 0 or absent: no limit.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Where to push: a local path or `file://` URL (and what the client transports reach).
    url: String,
    /// What to push: `[+]<src>[:<dst>]`, `:<dst>` to delete.
    #[arg(required = true)]
    refspecs: Vec<String>,
}

/// One refspec, resolved against the local repository.
struct Planned {
    /// The local name shown in the summary (`None` for a deletion).
    source: Option<String>,
    command: PushCommand,
}

pub(crate) fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let git_dir = match (&args.git_dir, std::env::var_os("GIT_DIR")) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => PathBuf::from(dir),
        (None, None) => PathBuf::from("."),
    };
    let repo = Repository::open(&git_dir, PathLookup::Lenient, None)
        .with_context(|| format!("not a git repository: '{}'", git_dir.display()))?;
    let version = match args.protocol {
        0 => WireVersion::V0,
        1 => WireVersion::V1,
        other => bail!("protocol version {other} has no push: use 0 or 1"),
    };
    let mut planned = Vec::new();
    for spec in &args.refspecs {
        planned.push(plan(&repo, spec, args.force)?);
    }
    apply_leases(&repo, &mut planned, &args.force_with_lease)?;
    let commands: Vec<PushCommand> = planned.iter().map(|p| p.command.clone()).collect();
    for (i, command) in commands.iter().enumerate() {
        if commands[..i].iter().any(|c| c.name == command.name) {
            bail!(
                "multiple updates for ref '{}' not allowed",
                command.name.as_bstr()
            );
        }
    }
    let client = crate::serve::client();
    let options = ConnectOptions {
        version,
        program: args.receive_pack.clone(),
        timeout: crate::fetch::timeout(args.timeout),
        ..ConnectOptions::default()
    };
    let connection = client
        .connect(&args.url, Service::ReceivePack, &options)
        .with_context(|| format!("could not connect to '{}'", args.url))?;
    let push_options = PushOptions {
        atomic: args.atomic,
        push_options: args.push_options.clone(),
        thin: !args.no_thin,
        quiet: args.quiet,
        ..PushOptions::default()
    };
    let mut progress = RemotePrefix::new(std::io::stderr());
    let report = send_pack(
        connection,
        repo.objects(),
        &commands,
        &push_options,
        &mut progress,
    )
    .map_err(|err| anyhow!(err))?;
    let failed = !report.all_ok();
    if !args.quiet || failed {
        print_summary(&args.url, &planned, &report.refs);
    }
    if failed {
        eprintln!("error: failed to push some refs to '{}'", args.url);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `[+]<src>[:<dst>]` or `:<dst>`, with git's rules for a missing or short destination.
fn plan(repo: &Repository, spec: &str, force_all: bool) -> anyhow::Result<Planned> {
    let (force, spec) = match spec.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, spec),
    };
    let (src, dst) = match spec.split_once(':') {
        Some((src, dst)) => (src, Some(dst)),
        None => (spec, None),
    };
    if src.is_empty() {
        let Some(dst) = dst.filter(|d| !d.is_empty()) else {
            bail!("invalid refspec '{spec}'");
        };
        let name = full_destination(dst, None)?;
        return Ok(Planned {
            source: None,
            command: PushCommand {
                name,
                new: ObjectId::null(gix_hash_kind()),
                expected: Expected::Advertised,
                force: force || force_all,
            },
        });
    }
    let (source_name, id) = resolve_source(repo, src)?;
    let dst = match dst {
        Some(dst) if !dst.is_empty() => dst.to_owned(),
        Some(_) => bail!("invalid refspec '{spec}'"),
        None => match &source_name {
            Some(name) => name.clone(),
            None => bail!("the destination of '{src}' must be given as <src>:<dst>"),
        },
    };
    let name = full_destination(&dst, source_name.as_deref())?;
    Ok(Planned {
        source: Some(src.to_owned()),
        command: PushCommand {
            name,
            new: id,
            expected: Expected::Advertised,
            force: force || force_all,
        },
    })
}

fn gix_hash_kind() -> gix_hash::Kind {
    gix_hash::Kind::Sha1
}

/// A source: `HEAD` (its branch is the default destination), a ref by git's short-name
/// rules, or an object id.
fn resolve_source(repo: &Repository, src: &str) -> anyhow::Result<(Option<String>, ObjectId)> {
    if src == "HEAD" || src == "@" {
        return match repo.head()? {
            Head::Born(record) => {
                let target = record
                    .symref_target
                    .map(|t| t.to_string())
                    .filter(|t| t.starts_with("refs/heads/"));
                Ok((target, record.id))
            }
            _ => bail!("src refspec {src} does not match any"),
        };
    }
    let mut found = Vec::new();
    for prefix in ["", "refs/", "refs/tags/", "refs/heads/", "refs/remotes/"] {
        let name = format!("{prefix}{src}");
        if let Some(record) = repo.find_ref(name.as_bytes())? {
            found.push((name, record.id));
        }
    }
    if found.len() > 1 {
        bail!("src refspec {src} matches more than one");
    }
    if let Some((name, id)) = found.pop() {
        return Ok((Some(name), id));
    }
    if src.len() == 40 {
        if let Ok(id) = ObjectId::from_hex(src.as_bytes()) {
            if repo.has_object(&id) {
                return Ok((None, id));
            }
        }
    }
    bail!("src refspec {src} does not match any")
}

/// A destination as a full ref name: as given below `refs/`, else a branch (or a tag when
/// the source is one).
fn full_destination(dst: &str, source: Option<&str>) -> anyhow::Result<gix_ref::FullName> {
    let full = if dst.starts_with("refs/") {
        dst.to_owned()
    } else if source.is_some_and(|s| s.starts_with("refs/tags/")) {
        format!("refs/tags/{dst}")
    } else {
        format!("refs/heads/{dst}")
    };
    gix_ref::FullName::try_from(full.as_str())
        .map_err(|err| anyhow!("invalid destination ref '{dst}': {err}"))
}

/// `--force-with-lease[=<ref>[:<expect>]]`: the expected values.
fn apply_leases(
    repo: &Repository,
    planned: &mut [Planned],
    leases: &[String],
) -> anyhow::Result<()> {
    for lease in leases {
        let (refname, expect) = match lease.split_once(':') {
            Some((r, e)) => (r, Some(e)),
            None => (lease.as_str(), None),
        };
        let expected = match expect {
            None | Some("") => ObjectId::null(gix_hash_kind()),
            Some(e) => resolve_source(repo, e)
                .map(|(_, id)| id)
                .map_err(|_| anyhow!("cannot parse expected object name '{e}'"))?,
        };
        for p in planned.iter_mut() {
            let name = p.command.name.as_bstr().to_string();
            let short = name
                .strip_prefix("refs/heads/")
                .or_else(|| name.strip_prefix("refs/tags/"))
                .unwrap_or(&name);
            if refname.is_empty() || refname == name || refname == short {
                p.command.expected = Expected::Exactly(expected);
            }
        }
    }
    Ok(())
}

/// git's push summary (`transport_print_push_status()`), to standard error.
fn print_summary(url: &str, planned: &[Planned], results: &[RefResult]) {
    let mut lines = vec![format!("To {url}")];
    let mut printed = 0;
    for (plan, result) in planned.iter().zip(results) {
        let dst = pretty(&result.name.as_bstr().to_string());
        let from_to = match &plan.source {
            Some(src) => format!("{} -> {dst}", pretty(src)),
            None => dst.clone(),
        };
        let deletion = plan.command.new.is_null();
        let (flag, summary, what, message): (char, String, String, Option<String>) = match &result
            .status
        {
            RefStatus::UpToDate => continue,
            RefStatus::Ok { .. } if deletion => ('-', "[deleted]".into(), dst, None),
            RefStatus::Ok { forced } => match result.old {
                None => {
                    let kind = if dst_is(result, "refs/tags/") {
                        "[new tag]"
                    } else if dst_is(result, "refs/heads/") {
                        "[new branch]"
                    } else {
                        "[new reference]"
                    };
                    ('*', kind.into(), from_to, None)
                }
                Some(old) => {
                    let old = abbrev(&old);
                    let new = abbrev(&plan.command.new);
                    if *forced {
                        (
                            '+',
                            format!("{old}...{new}"),
                            from_to,
                            Some("forced update".into()),
                        )
                    } else {
                        (' ', format!("{old}..{new}"), from_to, None)
                    }
                }
            },
            RefStatus::NotSent(reason) => ('!', "[rejected]".into(), from_to, Some(reason.clone())),
            RefStatus::Refused(reason) => (
                '!',
                "[remote rejected]".into(),
                if deletion { dst } else { from_to },
                Some(reason.clone()),
            ),
            RefStatus::Unknown(reason) => (
                '!',
                "[remote failure]".into(),
                if deletion { dst } else { from_to },
                Some(reason.clone()),
            ),
        };
        let mut line = format!(" {flag} {summary:<17} {what}");
        if let Some(message) = message {
            line.push_str(&format!(" ({message})"));
        }
        lines.push(line);
        printed += 1;
    }
    let mut stderr = std::io::stderr().lock();
    if printed == 0 {
        let _ = writeln!(stderr, "Everything up-to-date");
        return;
    }
    for line in lines {
        let _ = writeln!(stderr, "{line}");
    }
}

fn dst_is(result: &RefResult, prefix: &str) -> bool {
    result.name.as_bstr().starts_with(prefix.as_bytes())
}

/// git's `prettify_refname()`.
fn pretty(name: &str) -> String {
    ["refs/heads/", "refs/tags/", "refs/remotes/"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name)
        .to_owned()
}

fn abbrev(id: &ObjectId) -> String {
    id.to_hex_with_len(7).to_string()
}

/// The remote's messages as git shows them: each line after `remote: `.
struct RemotePrefix<W: Write> {
    inner: W,
    at_line_start: bool,
}

impl<W: Write> RemotePrefix<W> {
    fn new(inner: W) -> Self {
        RemotePrefix {
            inner,
            at_line_start: true,
        }
    }
}

impl<W: Write> Write for RemotePrefix<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = Vec::with_capacity(buf.len() + 16);
        for &byte in buf {
            if self.at_line_start {
                out.extend_from_slice(b"remote: ");
                self.at_line_start = false;
            }
            out.push(byte);
            if byte == b'\n' || byte == b'\r' {
                self.at_line_start = true;
            }
        }
        self.inner.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
