//! The `clone` scenario: want every ref value under `refs/heads` and `refs/tags`, no haves.

use std::fs;
use std::path::Path;

use super::{
    fetch::{fetch_request, needed_objects, ref_values, repos_for, Request},
    git::Git,
    measure::Server,
};

pub(super) fn clone_request(
    git: &Git<'_>,
    work: &Path,
    base: &Path,
    bitmapped: Option<&Path>,
    servers: &[Server],
) -> anyhow::Result<Request> {
    let wants = ref_values(git, base)?;
    let needed = needed_objects(git, base, &wants, &[])?;
    let file = work.join("clone.request");
    fs::write(&file, fetch_request(&wants, &[])?)?;
    Ok(Request {
        file,
        repos: repos_for(servers, base, bitmapped),
        client_has: None,
        wants,
        haves: Vec::new(),
        needed,
    })
}
