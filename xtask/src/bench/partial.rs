//! The `clone-depth1` and `clone-blobless` scenarios: what CI systems and large repositories
//! fetch instead of a full clone. `clone-depth1` is `git clone --depth 1` (the default branch's
//! tip alone, `deepen 1`); `clone-blobless` is `git clone --filter=blob:none` (every ref, no
//! blob). Every server reads a copy of its repository with `uploadpack.allowFilter` set, which
//! git needs to accept a filter (packgate too, as git).

use std::fs;
use std::path::Path;

use anyhow::Context as _;

use super::{
    derived,
    fetch::{fetch_request_with, ref_values, repos_for, Protocol, Request},
    git::Git,
    measure::Server,
};

/// What a partial clone leaves out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Partial {
    /// `--depth 1`: the tip of the default branch and its tree, no history.
    Depth1,
    /// `--filter=blob:none`: every commit and tree of every ref, no blob.
    Blobless,
}

pub(super) fn partial_request(
    git: &Git<'_>,
    work: &Path,
    base: &Path,
    bitmapped: Option<&Path>,
    servers: &[Server],
    partial: Partial,
) -> anyhow::Result<Request> {
    let allow_filter = |repo: &Path| {
        derived(repo, "allow-filter", |dir| {
            git.run(Some(dir), &["config", "uploadpack.allowFilter", "true"])?;
            Ok(())
        })
    };
    let repo = allow_filter(base)?;
    let bitmapped = bitmapped.map(allow_filter).transpose()?;
    let (wants, argument, list): (Vec<String>, &str, Vec<&str>) = match partial {
        Partial::Depth1 => {
            let head = git.run(Some(&repo), &["rev-parse", "HEAD"])?;
            let head = head.trim().to_owned();
            (vec![head], "deepen 1", vec!["--max-count=1"])
        }
        Partial::Blobless => (
            ref_values(git, &repo)?,
            "filter blob:none",
            vec!["--filter=blob:none"],
        ),
    };
    let mut args = vec!["rev-list", "--objects"];
    args.extend(list);
    args.extend(wants.iter().map(String::as_str));
    let listed = git
        .run(Some(&repo), &args)
        .context("listing the objects the partial clone needs")?;
    let mut needed: Vec<String> = listed
        .lines()
        .filter_map(|line| line.split(' ').next())
        .map(str::to_owned)
        .collect();
    // The request has `include-tag`: annotated tags of what is sent come too.
    let sent: std::collections::HashSet<String> = needed.iter().cloned().collect();
    let tags = git.run(
        Some(&repo),
        &[
            "for-each-ref",
            "--format=%(objectname) %(objecttype) %(*objectname)",
            "refs/tags",
        ],
    )?;
    for line in tags.lines() {
        let mut fields = line.split(' ');
        if let (Some(tag), Some("tag"), Some(peeled)) =
            (fields.next(), fields.next(), fields.next())
        {
            if sent.contains(peeled) && !sent.contains(tag) && !needed.iter().any(|n| n == tag) {
                needed.push(tag.to_owned());
            }
        }
    }
    let name = match partial {
        Partial::Depth1 => "clone-depth1",
        Partial::Blobless => "clone-blobless",
    };
    let file = work.join(format!("{name}.request"));
    fs::write(&file, fetch_request_with(&wants, &[], &[argument])?)?;
    Ok(Request {
        protocol: Protocol::V2,
        file,
        repos: repos_for(servers, &repo, bitmapped.as_deref()),
        client_has: None,
        wants,
        haves: Vec::new(),
        needed,
    })
}
