//! The `clone` (and `clone-v0`) scenario: want every ref value under `refs/heads` and
//! `refs/tags`, no haves.

use std::fs;
use std::path::Path;

use super::{
    fetch::{needed_objects, ref_values, repos_for, Protocol, Request},
    git::Git,
    measure::Server,
};

pub(super) fn clone_request(
    git: &Git<'_>,
    work: &Path,
    base: &Path,
    bitmapped: Option<&Path>,
    servers: &[Server],
    protocol: Protocol,
) -> anyhow::Result<Request> {
    let wants = ref_values(git, base)?;
    let needed = needed_objects(git, base, &wants, &[])?;
    let file = work.join(format!("clone{}.request", protocol.suffix()));
    fs::write(&file, protocol.request(&wants, &[])?)?;
    Ok(Request {
        protocol,
        file,
        repos: repos_for(servers, base, bitmapped),
        client_has: None,
        wants,
        haves: Vec::new(),
        needed,
    })
}
