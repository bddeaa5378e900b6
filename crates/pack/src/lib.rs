//! Packs for packgate: which objects a fetch must send, and the pack that carries them.
//!
//! * [`enumerate`](mod@enumerate) finds every object reachable from the wants and not from the common haves.
//! * [`generate`] writes those objects as a pack stream, reusing the repository's deltas and
//!   computing new ones ([`delta`]) for objects that would otherwise be sent whole.
//! * [`ingest`] receives a pushed pack into a quarantine: indexing, thin-pack completion,
//!   fsck, connectivity, and migration into the repository once the push is accepted;
//!   [`explode`](mod@explode) turns a small one into loose objects first.
//!
//! This crate knows nothing about the wire: it reads an object database and writes bytes into
//! a [`std::io::Write`]. Framing (sideband, pkt-lines) is the caller's business.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod bitmap;
pub mod delta;
pub mod enumerate;
pub mod explode;
pub mod filter;
pub mod generate;
pub mod ingest;
mod lookup;
pub mod packs;
pub mod reader;
mod rev;
mod search;
#[cfg(test)]
mod test_git;
pub use bitmap::{write_bitmap, BitmapWriteError, BitmapWriteOptions, BitmapWritten};
pub use enumerate::{
    enumerate, Counts, EnumerateError, EnumerateOptions, Enumeration, TreeExclusion,
};
pub use generate::{
    write_pack, write_stored_pack, DeltaSearch, WriteError, WriteOptions, WriteOutcome,
};
pub use ingest::{
    check_connectivity, ingest_pack, ConnectivityError, ConnectivityOutcome, FsckObjects,
    FsckOptions, FsckProblem, FsckSettingError, FsckSeverity, FsckWarning, IngestError,
    IngestOptions, IngestOutcome, Quarantine,
};
pub use rev::write_rev;
