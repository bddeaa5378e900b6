//! The network front-ends of packgate: adapters between sockets and the blocking sessions
//! of `packgate-protocol`, over the wire formats of `packgate-wire`.
//!
//! * [`listener`]: the accept loop both share (connection cap, refusal, shutdown).
//! * [`daemon`]: the git:// front-end (request head, async v2 requests, sessions on the
//!   blocking pool, timeouts).
//! * [`http`]: the smart HTTP front-end on hyper (routing, bodies, Basic credentials, TLS).
//! * [`credentials`]: authentication of HTTP users: a credentials file of bcrypt and argon2
//!   hashes, an [`Authenticator`](packgate_wire::service::http::Authenticator), and
//!   [`hash_password`](credentials::hash_password) for new entries.
//! * [`ssh`]: the SSH front-end (russh): host key, `authorized_keys`, git commands only.
//! * [`stdio`]: standard input and output of a stdio session (`packgate upload-pack` /
//!   `receive-pack` run by a client over file:// or ssh), with `--timeout`'s bound on every
//!   wait for the client.
//!
//! This crate knows no repositories and no protocol semantics: what a request means and
//! what to answer is the handler's (implemented by `packgate-protocol`).
//!
//! # Feature flags
//!
//! None.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod client;
pub mod credentials;
pub mod daemon;
pub mod http;
pub mod listener;
pub mod ssh;
pub mod stdio;
mod wake;
