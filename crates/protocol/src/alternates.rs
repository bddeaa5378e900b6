//! The refs of a repository's alternates, which receive-pack advertises as `.have` lines: a
//! fork that borrows objects from a shared repository tells the pushing client which commits
//! it already has through its alternate, so the client leaves them out of the pack.
//!
//! As git's `for_each_alternate_ref()`: every object directory in the chain of
//! `objects/info/alternates` whose path ends in `/objects` and whose parent has a `refs`
//! directory is a repository whose ref values count. `core.alternateRefsPrefixes` limits them
//! to refs below the given prefixes (space-separated, each matching whole path components as
//! `git for-each-ref` does); `core.alternateRefsCommand` replaces the listing with a command the
//! administrator configured, run through the shell with the alternate repository's path as its
//! argument, printing one object id per line — like a hook, it is the configuration's code, and
//! it runs with a time limit.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;

use crate::repository::{PathLookup, Repository};

/// The environment variables that describe the repository of this process (git's
/// `local_repo_env`): a command run for an alternate must not see them.
const LOCAL_REPOSITORY_ENVIRONMENT: &[&str] = &[
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_OBJECT_DIRECTORY",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_GRAFT_FILE",
    "GIT_INDEX_FILE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE",
    "GIT_PREFIX",
    "GIT_SHALLOW_FILE",
    "GIT_COMMON_DIR",
    "GIT_QUARANTINE_PATH",
];

/// The most ids read from one alternate: far more refs than any repository has, and a bound
/// on what a runaway command can make us hold.
const MAX_IDS_PER_ALTERNATE: usize = 1 << 22;

/// The values of the refs of `repo`'s alternates, in the order found (alternates in the order
/// of the chain), with repeats. Failures are logged and skip that alternate, as git does.
/// `timeout` bounds each `core.alternateRefsCommand`.
pub fn alternate_ref_values(repo: &Repository, timeout: Duration) -> Vec<ObjectId> {
    let objects = repo.git_dir().join("objects");
    let alternates = match gix_odb::alternate::resolve(objects, repo.git_dir()) {
        Ok(alternates) => alternates,
        Err(err) => {
            tracing::warn!(%err, "could not read the alternates");
            return Vec::new();
        }
    };
    let config = repo.config();
    let command = config
        .string("core.alternateRefsCommand")
        .map(|value| value.to_str_lossy().into_owned());
    let prefixes: Vec<BString> = config
        .string("core.alternateRefsPrefixes")
        .map(|value| {
            value
                .split_str(" ")
                .filter(|prefix| !prefix.is_empty())
                .map(BString::from)
                .collect()
        })
        .unwrap_or_default();
    let mut ids = Vec::new();
    for objects_dir in alternates {
        let Some(alternate) = alternate_repository(&objects_dir) else {
            continue;
        };
        let found = match &command {
            Some(command) => run_command(command, &alternate, repo.git_dir(), timeout),
            None => list_refs(&alternate, &prefixes),
        };
        match found {
            Ok(found) => ids.extend(found),
            Err(err) => {
                tracing::warn!(alternate = %alternate.display(), %err, "could not read the refs of an alternate");
            }
        }
    }
    ids
}

/// The repository an alternate object directory belongs to: `<repo>/objects` with a
/// `<repo>/refs` directory.
fn alternate_repository(objects_dir: &Path) -> Option<PathBuf> {
    if objects_dir.file_name()? != "objects" {
        return None;
    }
    let repository = objects_dir.parent()?;
    repository
        .join("refs")
        .is_dir()
        .then(|| repository.to_owned())
}

/// What `git for-each-ref --format=%(objectname) -- <prefixes>` prints for `alternate`.
fn list_refs(alternate: &Path, prefixes: &[BString]) -> Result<Vec<ObjectId>, String> {
    // Its own configuration only: what the alternate says about itself.
    let repository =
        Repository::open(alternate, PathLookup::Strict, None).map_err(|err| err.to_string())?;
    let refs = repository.refs(None).map_err(|err| err.to_string())?;
    Ok(refs
        .into_iter()
        .filter(|record| prefixes.is_empty() || prefixes.iter().any(|p| matches(p, &record.name)))
        .map(|record| record.id)
        .take(MAX_IDS_PER_ALTERNATE)
        .collect())
}

/// `git for-each-ref`'s pattern rule: the pattern is the ref's name or a leading part of it
/// that ends at a `/`.
fn matches(prefix: &[u8], name: &[u8]) -> bool {
    match name.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with(b"/") || prefix.ends_with(b"/"),
        None => false,
    }
}

/// Run `core.alternateRefsCommand` for `alternate` in `git_dir` and read its ids. A line that
/// is not one id ends the list, as in git.
fn run_command(
    command: &str,
    alternate: &Path,
    git_dir: &Path,
    timeout: Duration,
) -> Result<Vec<ObjectId>, String> {
    let mut process = Command::new("/bin/sh");
    process
        .arg("-c")
        .arg(format!("{command} \"$@\""))
        .arg(command)
        .arg(alternate)
        .current_dir(git_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for name in LOCAL_REPOSITORY_ENVIRONMENT {
        process.env_remove(name);
    }
    let mut child = process
        .spawn()
        .map_err(|err| format!("could not run {command:?}: {err}"))?;
    let Some(stdout) = child.stdout.take() else {
        return Err("no output pipe".into());
    };
    // Lines arrive on a channel so that the time limit holds even if the command stalls.
    let (sender, receiver) = mpsc::sync_channel::<Vec<u8>>(1024);
    std::thread::Builder::new()
        .name("alternateRefsCommand".into())
        .spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        })
        .map_err(|err| format!("could not start a thread: {err}"))?;
    let deadline = Instant::now() + timeout;
    let mut ids = Vec::new();
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok(line) => match ObjectId::from_hex(&line) {
                Ok(id) if ids.len() < MAX_IDS_PER_ALTERNATE => ids.push(id),
                Ok(_) => break Ok(()),
                Err(_) => {
                    tracing::warn!(line = %line.as_bstr(), "invalid line while parsing alternate refs");
                    break Ok(());
                }
            },
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                break Err(format!("{command:?} ran longer than {timeout:?}"))
            }
        }
    };
    // Whatever the command still does is of no use now.
    let _ = child.kill();
    let _ = child.wait();
    outcome.map(|()| ids)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn prefixes_match_whole_components() {
        assert!(matches(b"refs/heads/private", b"refs/heads/private/branch"));
        assert!(matches(b"refs/heads/private", b"refs/heads/private"));
        assert!(matches(b"refs/heads/", b"refs/heads/main"));
        assert!(!matches(b"refs/heads/private", b"refs/heads/privateer"));
        assert!(!matches(b"refs/tags", b"refs/heads/main"));
    }
}
