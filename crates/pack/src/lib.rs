//! Packs for packgate: which objects a fetch must send, and the pack that carries them.
//!
//! * [`enumerate`] finds every object reachable from the wants and not from the common haves.
//! * [`generate`] writes those objects as a pack stream, reusing the repository's deltas.
//!
//! This crate knows nothing about the wire: it reads an object database and writes bytes into
//! a [`std::io::Write`]. Framing (sideband, pkt-lines) is the caller's business.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod enumerate;
pub mod generate;
pub use enumerate::{
    enumerate, Counts, EnumerateError, EnumerateOptions, Enumeration, TreeExclusion,
};
pub use generate::{write_pack, WriteError, WriteOptions, WriteOutcome};
