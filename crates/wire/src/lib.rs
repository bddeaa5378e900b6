//! git's wire formats for packgate: pkt-line framing, sideband multiplexing, keepalive
//! packets and the assembly of protocol v2 requests, over any blocking byte stream or none.
//!
//! * [`pkt_line`]: the sans-IO [`decode`](pkt_line::decode)r, [`PacketReader`] and
//!   [`PacketWriter`] over [`std::io::Read`] and [`std::io::Write`].
//! * [`sideband`]: [`SidebandWriter`](sideband::SidebandWriter) to interleave pack data,
//!   progress and errors, [`demux`](sideband::demux) to split them again in tests, and
//!   [`keepalive`](sideband::keepalive): what a keepalive packet is and where in a stream of
//!   pkt-lines one may go.
//! * [`shallow`]: the shallow-fetch lines (`shallow`, `deepen`, `deepen-since`,
//!   `deepen-not`) of v0 and v2 fetch requests, with git's error wording.
//! * [`v2`]: the sans-IO [`RequestParser`](v2::RequestParser) and
//!   [`read_request`](v2::read_request), which turn packets into a
//!   [`Request`](v2::Request): a command with its capability and argument lines.
//!
//! # What this crate does not do
//!
//! It knows no repositories and no protocol semantics: it does not know which commands or
//! capabilities exist, what a `want` means, or what to answer; that lives in
//! `packgate-protocol`. It has no sockets, no async runtime and starts no threads: parsers
//! of client input do no I/O, so they can be fed from any source, and the rest works over
//! blocking [`std::io::Read`]/[`std::io::Write`]. The network front-ends live in
//! `packgate-transport`.
//!
//! # Example
//!
//! A client's `ls-refs` request followed by the flush-pkt that ends its session, as the
//! server reads them:
//!
//! ```
//! use packgate_wire::pkt_line::{PacketReader, PacketWriter};
//! use packgate_wire::v2::{read_request, Limits};
//!
//! let mut client = PacketWriter::new(Vec::new());
//! client.write_text("command=ls-refs")?;
//! client.write_text("agent=git/2.47.0")?;
//! client.delim()?;
//! client.write_text("peel")?;
//! client.flush_pkt()?;
//! client.flush_pkt()?;
//! let sent = client.into_inner();
//!
//! let mut server = PacketReader::new(sent.as_slice());
//! let request = read_request(&mut server, &Limits::default())?.ok_or("no request")?;
//! assert_eq!(request.command, "ls-refs");
//! assert_eq!(request.capabilities, ["agent=git/2.47.0"]);
//! assert_eq!(request.arguments, ["peel"]);
//! assert_eq!(read_request(&mut server, &Limits::default())?, None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Feature flags
//!
//! None.
//!
//! [`PacketReader`]: pkt_line::PacketReader
//! [`PacketWriter`]: pkt_line::PacketWriter
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod client;
pub mod pkt_line;
pub mod service;
pub mod shallow;
pub mod sideband;
pub mod v0;
pub mod v2;
