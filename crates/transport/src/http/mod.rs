//! The smart HTTP front-end: an HTTP/1.1 server (hyper) that routes git's smart HTTP requests
//! to a [`SmartHttpHandler`].
//!
//! git's smart HTTP protocol has two requests per service, both below the repository's URL:
//!
//! * `GET <repo>/info/refs?service=git-upload-pack` (or `git-receive-pack`): the
//!   advertisement, answered as `application/x-<service>-advertisement`;
//! * `POST <repo>/git-upload-pack` (or `git-receive-pack`) with an
//!   `application/x-<service>-request` body: one stateless request, answered as
//!   `application/x-<service>-result`.
//!
//! The client's protocol wish travels in the `Git-Protocol` header (`version=2`). Request
//! bodies may be chunked and gzip-compressed (`Content-Encoding: gzip`); this module undoes
//! both, so the handler reads plain pkt-lines. Every other path is `404 Not Found`, a wrong
//! method `405`, a missing or unknown `service` `400`, a wrong content type or encoding `415`.
//! A fetch request is read and decompressed whole before its session starts, so one larger
//! than the limit either way (a gzip bomb too) is `413`. A client that shuts down its
//! sending side after the request is still answered (hyper's half-close).
//!
//! [`serve_connection`] serves one connection over any `AsyncRead + AsyncWrite`; [`serve`]
//! is an accept loop around it with a connection cap, like the git:// daemon. Parsing the
//! request line and headers is hyper's, bounded in size and by a header timeout (which also
//! bounds how long an idle keep-alive connection waits for its next request); a connection
//! on which nothing moves for the idle timeout is closed.
//!
//! The handler runs on tokio's blocking pool. It first decides whether to serve the request
//! at all ([`SmartHttpHandler::open`]: look the repository up, check the service is enabled)
//! — a refusal becomes a small `text/plain` error response — and then runs the session over
//! a blocking [`Read`](std::io::Read) of the request body and a [`Write`](std::io::Write) into the response body
//! ([`SmartHttpHandler::serve`]). Both are bounded channels: a slow client applies
//! back-pressure to the session, and no pack is ever held in memory whole. Request bodies
//! are limited in size (before and after decompression).
//!
//! # Authentication
//!
//! An `Authorization: Basic …` header is parsed into [`BasicCredentials`] on the
//! [`GitRequest`] (never logged; their `Debug` hides the password); checking them is the
//! handler's. A handler that wants credentials refuses with [`Refusal::Unauthorized`]:
//! `401 Unauthorized` with `WWW-Authenticate: Basic realm="…"`, upon which git asks its
//! credential helper (or uses the URL's `user:password@`) and retries. A front-end that has
//! authenticated the user itself — a CGI front-end behind a web server, with `REMOTE_USER`
//! — sets [`GitRequest::remote_user`] instead; [`route`] never sets it, so no header can
//! claim it.
//!
//! # TLS
//!
//! [`tls::serve_tls`] is [`serve`] behind rustls; [`tls::server_config`] reads a PEM
//! certificate and key.
//!
//! # Embedding
//!
//! [`respond`] answers one request of any body type (`Request<B>` where `B` is an
//! `http_body::Body` of [`Bytes`]), so the service can be mounted in another application's
//! router (axum, hyper) — under a path prefix ([`HttpOptions::path_prefix`]) if the router
//! does not strip it. It needs a tokio runtime (multi-threaded: the session runs on its
//! blocking pool). Connection limits and timeouts are then the application's.
//!
//! This module knows no repositories: what a path names and what to answer is the handler's.
//!
//! # Layout
//!
//! * `route`: the sans-IO [`route`] from method, path, query and headers to a [`GitRequest`]
//!   (and [`route_refs`] for the refs watch);
//! * `body`: request bodies (gzip, limits before and after decoding, read whole or streamed
//!   into the session) and response bodies (a bounded channel from the session);
//! * `idle`: the idle watchdog, which notes when anything last moved on a connection;
//! * `server`: the accept loop, one connection, and [`respond`] for one request;
//! * `watch`: advertisements' `ETag` ([`etag`], [`if_none_match`]: `304 Not Modified`) and
//!   `GET <repo>/refs` ([`route_refs`], [`SmartHttpHandler::watch_refs`]): a JSON long-poll
//!   or Server-Sent Events, waiting on the handler's [`RefsLook::Wait`] without a thread,
//!   with keepalives, ended when the client closes the connection (a duplicate of the socket
//!   that only peeks notices it: hyper, which lets a client half-close, does not);
//! * [`tls`]: the same behind rustls.
//!
//! This file holds what they share: the re-exported `http` types and [`HttpOptions`].

use std::time::Duration;

use crate::{daemon::Service, listener::ConnectionLimits};

mod body;
mod detach;
mod idle;
mod route;
mod server;
pub mod tls;
mod watch;

pub use body::{decode_whole_body, request_body_reader, BodyEncoding, BoxError, ResponseBody};
/// The `http` types of [`route`]'s signature, for front-ends that build a request themselves
/// (a CGI program from its environment).
pub use bytes::Bytes;
pub use hyper::{header, Method, StatusCode};
pub use packgate_wire::service::http::{
    basic_challenge, BasicCredentials, GitRequest, RefsLook, RefsQuery, RefsWatcher, Refusal,
    RequestKind, SmartHttpHandler, WatchRefusal,
};
pub use route::{route, route_refs, RouteError};
pub(crate) use server::serve_admitted;
pub use server::{respond, serve, serve_connection, PeerAddress};
pub(crate) use watch::SharedStream;
pub use watch::{etag, if_none_match, KEEPALIVE_INTERVAL};

/// Limits of the HTTP front-end.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// How long a client may take to send a request's line and headers, and how long an
    /// idle keep-alive connection waits for the next request.
    pub header_timeout: Duration,
    /// How long a connection may go without traffic in either direction (and without the
    /// session producing or consuming data) before it is closed.
    pub idle_timeout: Duration,
    /// The most connections with a request in (active sessions) at once; a request beyond
    /// that is answered `503` and its connection closed.
    pub max_connections: usize,
    /// The most connections still waiting for their first request (see
    /// [`crate::listener`]: the longest-waiting one is closed to make room).
    pub max_waiting_connections: usize,
    /// The same, from one client address.
    pub max_waiting_per_address: usize,
    /// The largest upload-pack request body, compressed and decompressed (git's
    /// http-backend allows 10 MiB).
    pub max_fetch_request: u64,
    /// The largest receive-pack request body (commands and pack), compressed and
    /// decompressed. The pack is also bounded by the repository's `receive.maxInputSize`.
    pub max_push_request: u64,
    /// The largest request line plus headers.
    pub max_header_bytes: usize,
    /// A path prefix every request path must start with (`/git` when the service is
    /// mounted at `/git/` in another application whose router does not strip it); it is
    /// removed before routing, and a path outside it is `404`. Empty by default.
    pub path_prefix: String,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            max_connections: 256,
            max_waiting_connections: ConnectionLimits::DEFAULT_MAX_WAITING,
            max_waiting_per_address: ConnectionLimits::DEFAULT_MAX_WAITING_PER_ADDRESS,
            max_fetch_request: 10 * 1024 * 1024,
            max_push_request: 4 * 1024 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            path_prefix: String::new(),
        }
    }
}

impl HttpOptions {
    /// The accept loop's caps.
    pub(crate) fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_active: self.max_connections,
            max_waiting: self.max_waiting_connections,
            max_waiting_per_address: self.max_waiting_per_address,
        }
    }

    fn max_request(&self, service: Service) -> u64 {
        match service {
            Service::ReceivePack => self.max_push_request,
            _ => self.max_fetch_request,
        }
    }

    /// `path` without [`path_prefix`](HttpOptions::path_prefix), or `None` if it is not
    /// below it.
    fn strip_prefix<'p>(&self, path: &'p str) -> Option<&'p str> {
        let prefix = self.path_prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Some(path);
        }
        let rest = path.strip_prefix(prefix)?;
        rest.starts_with('/').then_some(rest)
    }
}
