//! The `incremental` (and `incremental-v0`, `incremental-50`) scenario: the repository is a copy
//! moved forward by [`BEHIND`](super::BEHIND) (or 50) commits on its default branch; the client has every ref
//! of the original and wants what changed.
//! The moved-forward copy is also the client of the `push-incremental` scenario.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::ensure;
use packgate_fixture::{append_commits, Append};

use super::{
    derived,
    fetch::{needed_objects, ref_values, repos_for, Request},
    git::Git,
    measure::Server,
    BenchArgs, Scenario,
};

pub(super) fn incremental_request(
    git: &Git<'_>,
    work: &Path,
    args: &BenchArgs,
    base: &Path,
    bitmapped: Option<&Path>,
    servers: &[Server],
    scenario: Scenario,
) -> anyhow::Result<Request> {
    let (protocol, behind) = (scenario.protocol(), scenario.behind());
    let append = ahead_append(git, args, base, behind)?;
    let ahead = ahead_copy(base, &append)?;
    let ahead_bitmapped = match bitmapped {
        Some(bitmapped) => Some(ahead_copy(bitmapped, &append)?),
        None => None,
    };
    let old: HashSet<String> = ref_values(git, base)?.into_iter().collect();
    let wants: Vec<String> = ref_values(git, &ahead)?
        .into_iter()
        .filter(|oid| !old.contains(oid))
        .collect();
    ensure!(
        !wants.is_empty(),
        "{} has no new ref values",
        ahead.display()
    );
    if let Some(ahead_bitmapped) = &ahead_bitmapped {
        ensure!(
            ref_values(git, ahead_bitmapped)? == ref_values(git, &ahead)?,
            "{} and {} differ",
            ahead.display(),
            ahead_bitmapped.display()
        );
    }
    // A fetching client sends the commits its refs point at, tags peeled.
    let haves = have_commits(git, base)?;
    let needed = needed_objects(git, &ahead, &wants, &haves)?;
    let file = work.join(format!("incremental{behind}{}.request", protocol.suffix()));
    fs::write(&file, protocol.request(&wants, &haves)?)?;
    Ok(Request {
        protocol,
        file,
        repos: repos_for(servers, &ahead, ahead_bitmapped.as_deref()),
        client_has: Some(base.to_owned()),
        wants,
        haves,
        needed,
    })
}

/// `behind` commits on the default branch of `base`.
pub(super) fn ahead_append(
    git: &Git<'_>,
    args: &BenchArgs,
    base: &Path,
    behind: usize,
) -> anyhow::Result<Append> {
    let head = git.run(Some(base), &["symbolic-ref", "--short", "HEAD"])?;
    Ok(Append {
        branch: head.trim().to_owned(),
        commits: behind,
        git: args.git.clone(),
        ..Append::default()
    })
}

/// The cached copy of `repo` moved forward by `append` (`<repo>.ahead10.git` for 10 commits).
pub(super) fn ahead_copy(repo: &Path, append: &Append) -> anyhow::Result<PathBuf> {
    derived(repo, &format!("ahead{}", append.commits), |dir| {
        append_commits(dir, append)?;
        Ok(())
    })
}

/// What the push scenarios push: the cached copy of `base` `behind` commits ahead, its
/// default branch's full name, the refspec that pushes it to the same name, and the id it
/// points at (what the server's ref must become).
pub(super) struct AheadPush {
    /// The repository to push from.
    pub client: PathBuf,
    /// `refs/heads/<default branch>`.
    pub refname: String,
    /// `<refname>:<refname>`.
    pub refspec: String,
    /// The commit `refname` points at in `client`.
    pub expected: String,
}

/// The [`AheadPush`] of `base` moved forward by `behind` commits.
pub(super) fn ahead_push(
    git: &Git<'_>,
    args: &BenchArgs,
    base: &Path,
    behind: usize,
) -> anyhow::Result<AheadPush> {
    let append = ahead_append(git, args, base, behind)?;
    let client = ahead_copy(base, &append)?;
    let refname = format!("refs/heads/{}", append.branch);
    let refspec = format!("{refname}:{refname}");
    let expected = git.run(Some(&client), &["rev-parse", &refname])?;
    Ok(AheadPush {
        expected: expected.trim().to_owned(),
        client,
        refname,
        refspec,
    })
}

/// The distinct commits the refs of `repo` point at, through one level of tag.
pub(super) fn have_commits(git: &Git<'_>, repo: &Path) -> anyhow::Result<Vec<String>> {
    let out = git.run(
        Some(repo),
        &[
            "for-each-ref",
            "--format=%(objectname) %(objecttype) %(*objectname) %(*objecttype)",
            "refs/heads",
            "refs/tags",
        ],
    )?;
    let mut seen = HashSet::new();
    let mut haves = Vec::new();
    for line in out.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let commit = match fields.as_slice() {
            [oid, "commit", ..] => *oid,
            [_, "tag", peeled, "commit"] => *peeled,
            _ => continue,
        };
        if seen.insert(commit.to_owned()) {
            haves.push(commit.to_owned());
        }
    }
    Ok(haves)
}
