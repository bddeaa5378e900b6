//! git's server-side commands for packgate: the protocol core that ties transport,
//! negotiation and packs to repositories on disk.
//!
//! * [`repository`]: a git directory opened the way git's servers find it, its refs, its
//!   object database and configuration ([`config`]).
//! * [`upload_pack`]: protocol v2 — capability advertisement, `ls-refs`, `fetch`.
//! * [`receive_pack`]: push (protocol v0/v1) — quarantine, checks, hooks, atomic ref updates;
//!   [`alternates`]: the refs of the repositories whose objects it borrows (`.have` lines).
//! * [`pack_cache`]: single flight and a cache for generated packs, shared by the requests
//!   of a long-running server.
//! * [`refname`]: ref names and `ref-prefix`es from clients, validated before any file
//!   system access.
//! * [`registry`]: which repositories below a root a network front-end may serve, and
//!   [`daemon`]: the git:// service on top of it.
//!
//! This crate does no networking and starts no runtime: a session runs over any blocking
//! [`std::io::Read`]/[`std::io::Write`] pair, and front-ends (stdio, git://, HTTP) feed it.
//! It never runs `git`.
//!
//! ```no_run
//! use packgate_protocol::{repository::{PathLookup, Repository}, upload_pack::{SessionOptions, UploadPack}};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let repo = Repository::open("/srv/git/project.git".as_ref(), PathLookup::Lenient, None)?;
//! let upload_pack = UploadPack::new(&repo)?;
//! upload_pack.serve(std::io::stdin().lock(), std::io::stdout().lock(), &SessionOptions::default())?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod alternates;
pub mod budget;
pub mod client;
pub mod config;
pub mod daemon;
pub mod http;
mod keepalive;
pub mod pack_cache;
pub mod pack_refs;
pub use pack_refs::{pack_refs, PackRefsError, PackRefsOptions, PackRefsOutcome};
mod packed_refs;
pub mod receive_pack;
pub mod refname;
pub mod refs_watch;
pub mod registry;
pub mod repository;
pub mod upload_pack;
pub mod upstream;

/// An error with its sources, on one line.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        let next = err.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = err.source();
    }
    text
}
