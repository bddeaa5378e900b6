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
//! a blocking [`Read`] of the request body and a [`Write`] into the response body
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

use std::{
    convert::Infallible,
    io::{Read, Write},
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bstr::ByteSlice;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt};
use hyper::{
    body::{Body, Frame, SizeHint},
    header::{HeaderMap, HeaderValue},
    Request, Response,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::{mpsc, oneshot},
};

use tracing::Instrument;

use crate::{
    daemon::Service,
    listener::{Admission, ConnectionLimits},
};

pub mod tls;

/// The `http` types of [`route`]'s signature, for front-ends that build a request themselves
/// (a CGI program from its environment).
pub use bytes::Bytes;
pub use hyper::{header, Method, StatusCode};
pub use packgate_wire::service::http::{
    basic_challenge, BasicCredentials, GitRequest, Refusal, RequestKind, SmartHttpHandler,
};

/// The error type of request bodies [`respond`] accepts.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How many chunks of a response body may wait for a slow client.
const RESPONSE_CHUNKS_IN_FLIGHT: usize = 8;
/// The size of one chunk of a response body.
const RESPONSE_CHUNK: usize = 64 * 1024;

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

/// Why a request is not routed to the handler; each is an HTTP status with a short message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not a smart HTTP path (`404`).
    #[error("not found")]
    NotFound,
    /// A smart HTTP path with the wrong method (`405`); `allow` is the right one.
    #[error("method not allowed; use {allow}")]
    MethodNotAllowed {
        /// The method this path takes.
        allow: &'static str,
    },
    /// A bad query or path encoding (`400`).
    #[error("{0}")]
    BadRequest(String),
    /// A request body of the wrong type or encoding (`415`).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A request body larger than allowed (`413`).
    #[error("request body larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
}

impl RouteError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            RouteError::NotFound => StatusCode::NOT_FOUND,
            RouteError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            RouteError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RouteError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RouteError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    /// As is.
    Identity,
    /// `Content-Encoding: gzip` (or `x-gzip`).
    Gzip,
}

/// Route a request by its method, path, query and headers; sans-IO. Returns the request for
/// the handler and how its body is encoded.
pub fn route(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(GitRequest, BodyEncoding), RouteError> {
    let services = [Service::UploadPack, Service::ReceivePack];
    let (repository, kind, service) = if let Some(repository) = path.strip_suffix("/info/refs") {
        if method != Method::GET {
            return Err(RouteError::MethodNotAllowed { allow: "GET" });
        }
        let service = service_from_query(query)?;
        (repository, RequestKind::Advertisement, service)
    } else {
        let Some((repository, service)) = services.into_iter().find_map(|service| {
            path.strip_suffix(service.as_str())
                .and_then(|rest| rest.strip_suffix('/'))
                .map(|repository| (repository, service))
        }) else {
            return Err(RouteError::NotFound);
        };
        if method != Method::POST {
            return Err(RouteError::MethodNotAllowed { allow: "POST" });
        }
        (repository, RequestKind::Rpc, service)
    };
    let repository = percent_decode(repository)
        .ok_or_else(|| RouteError::BadRequest("malformed percent-encoding in the path".into()))?;
    if repository.iter().all(|b| *b == b'/') {
        return Err(RouteError::NotFound);
    }
    let mut encoding = BodyEncoding::Identity;
    if kind == RequestKind::Rpc {
        let expected = format!("application/x-{}-request", service.as_str());
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok());
        if content_type != Some(expected.as_str()) {
            return Err(RouteError::UnsupportedMediaType(format!(
                "expected Content-Type: {expected}"
            )));
        }
        for value in headers.get_all(header::CONTENT_ENCODING) {
            match value.to_str().map(str::trim) {
                Ok("gzip" | "x-gzip") if encoding == BodyEncoding::Identity => {
                    encoding = BodyEncoding::Gzip;
                }
                Ok("identity") => {}
                _ => {
                    return Err(RouteError::UnsupportedMediaType(
                        "unsupported Content-Encoding; use gzip or none".into(),
                    ))
                }
            }
        }
    }
    let git_protocol = headers
        .get("git-protocol")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    // Several Authorization headers are ambiguous: none is taken.
    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    let credentials = match (authorization.next(), authorization.next()) {
        (Some(value), None) => BasicCredentials::from_authorization(value.as_bytes()),
        _ => None,
    };
    Ok((
        GitRequest {
            service,
            kind,
            repository: repository.into(),
            git_protocol,
            credentials,
            remote_user: None,
        },
        encoding,
    ))
}

/// The `service=` of an info/refs query.
fn service_from_query(query: Option<&str>) -> Result<Service, RouteError> {
    let mut found = None;
    for pair in query.unwrap_or("").split('&') {
        let Some(value) = pair.strip_prefix("service=") else {
            continue;
        };
        if found.is_some() {
            return Err(RouteError::BadRequest(
                "more than one service= in the query".into(),
            ));
        }
        let value = percent_decode(value).ok_or_else(|| {
            RouteError::BadRequest("malformed percent-encoding in the query".into())
        })?;
        found = Some(value);
    }
    let Some(name) = found else {
        return Err(RouteError::BadRequest(
            "missing ?service= (packgate serves smart HTTP only)".into(),
        ));
    };
    [Service::UploadPack, Service::ReceivePack]
        .into_iter()
        .find(|service| name == service.as_str().as_bytes())
        .ok_or_else(|| RouteError::BadRequest(format!("unsupported service '{}'", name.as_bstr())))
}

/// Decode `%XX` escapes; `None` for a malformed escape.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Accept connections on `listener` until `shutdown` completes, serving each with
/// [`serve_connection`].
pub async fn serve<H: SmartHttpHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    options: HttpOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let options = Arc::new(options);
    crate::listener::accept_loop(
        listener,
        options.connection_limits(),
        shutdown,
        move |stream, peer, admission| {
            let handler = Arc::clone(&handler);
            let options = Arc::clone(&options);
            async move { serve_admitted(stream, handler, options, Some(admission)).await }
                .instrument(tracing::info_span!("http", %peer))
        },
    )
    .await
}

/// What a request beyond the session cap is answered: `503`, and the connection closes.
fn busy() -> Response<ResponseBody> {
    tracing::warn!("too many connections; answering 503");
    let mut response = text_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many connections; try again later",
    );
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Serve HTTP/1.1 (with keep-alive) on one connection until the client closes it, an error
/// ends it, or nothing moved for the idle timeout.
pub async fn serve_connection<H, I>(
    io: I,
    handler: Arc<H>,
    options: Arc<HttpOptions>,
) -> Result<(), hyper::Error>
where
    H: SmartHttpHandler,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_admitted(io, handler, options, None).await
}

/// [`serve_connection`] for our accept loop: the first request makes the connection an
/// active session, or is answered `503` if the session cap is reached.
pub(crate) async fn serve_admitted<H, I>(
    io: I,
    handler: Arc<H>,
    options: Arc<HttpOptions>,
    admission: Option<Arc<Admission>>,
) -> Result<(), hyper::Error>
where
    H: SmartHttpHandler,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let io = hyper_util::rt::TokioIo::new(Tracked {
        inner: io,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        let options = Arc::clone(&options);
        hyper::service::service_fn(move |request| {
            let admitted = admission
                .as_ref()
                .is_none_or(|admission| admission.activate());
            let response = respond_tracked(
                Arc::clone(&handler),
                Arc::clone(&options),
                activity.clone(),
                request,
            );
            async move {
                if !admitted {
                    return Ok::<_, Infallible>(busy());
                }
                Ok(response.await)
            }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .max_buf_size(options.max_header_bytes.max(8192))
        .keep_alive(true)
        // A client (or proxy) may shut down its sending side once the request is out; it
        // still waits for the answer. Without this, hyper drops the connection unanswered.
        .half_close(true)
        .serve_connection(io, service);
    tokio::select! {
        result = connection => result,
        () = activity.idle_for(options.idle_timeout) => {
            tracing::debug!("closing an idle connection");
            Ok(())
        }
    }
}

/// Answer one smart HTTP request: route it, let the handler decide on the blocking pool,
/// then stream the session's output as the response body.
///
/// This is the entry point for mounting the service in another application: `request` may
/// carry any body of [`Bytes`] (hyper's `Incoming`, axum's `Body`, …), and the response body
/// is an `http_body::Body` too. Every outcome is a response (errors are `4xx`/`5xx` with a
/// short `text/plain` message). Must be called within a multi-threaded tokio runtime. The
/// idle timeout is not applied here (it belongs to the connection); the request body limits
/// are.
pub async fn respond<H, B>(
    handler: Arc<H>,
    options: Arc<HttpOptions>,
    request: Request<B>,
) -> Response<ResponseBody>
where
    H: SmartHttpHandler,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    respond_tracked(handler, options, Activity::new(), request).await
}

/// [`respond`], recording activity on a connection of ours.
async fn respond_tracked<H, B>(
    handler: Arc<H>,
    options: Arc<HttpOptions>,
    activity: Activity,
    request: Request<B>,
) -> Response<ResponseBody>
where
    H: SmartHttpHandler,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let uri = request.uri().clone();
    let routed = options
        .strip_prefix(uri.path())
        .ok_or(RouteError::NotFound)
        .and_then(|path| route(request.method(), path, uri.query(), request.headers()))
        .and_then(|(git, encoding)| {
            let limit = options.max_request(git.service);
            match request
                .headers()
                .get(header::CONTENT_LENGTH)
                .map(|v| v.to_str().map(str::parse::<u64>))
            {
                Some(Ok(Ok(length))) if length > limit => Err(RouteError::TooLarge { limit }),
                Some(Ok(Ok(_))) | None => Ok((git, encoding, limit)),
                Some(_) => Err(RouteError::BadRequest("malformed Content-Length".into())),
            }
        });
    let (git, encoding, limit) = match routed {
        Ok(routed) => routed,
        Err(err) => {
            tracing::info!(method = %request.method(), path = uri.path(), %err, "not routed");
            let mut response = text_response(err.status(), &err.to_string());
            if let RouteError::MethodNotAllowed { allow } = err {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            return response;
        }
    };
    tracing::info!(
        service = git.service.as_str(),
        kind = ?git.kind,
        repository = %git.repository.as_bstr(),
        protocol = git.git_protocol.as_deref().unwrap_or(""),
        credentials = git.credentials.is_some(),
        "request"
    );
    let content_type = git.response_content_type();
    let (decision_sender, decision) = oneshot::channel();
    let (chunk_sender, chunks) = mpsc::channel(RESPONSE_CHUNKS_IN_FLIGHT);
    let body = request.into_body().map_err(Into::into).boxed_unsync();
    // A fetch request is small (`max_fetch_request`): it is read here, asynchronously, so a
    // client that stalls in the middle of it holds no thread. A push streams its pack into
    // the session instead.
    let body = if git.kind == RequestKind::Rpc && git.service != Service::ReceivePack {
        // A little under the idle timeout, so the client is answered before the
        // connection's own watchdog would close it without a word.
        let patience = options.idle_timeout - options.idle_timeout / 8;
        match read_whole_body(body, limit, patience, &activity)
            .await
            .and_then(|bytes| decode_whole_body(bytes, encoding, limit))
        {
            Ok(bytes) => Source::Buffered(bytes),
            Err(err) => {
                tracing::info!(%err, "request body not read");
                let status = if err.kind() == std::io::ErrorKind::InvalidData {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                return text_response(status, &err.to_string());
            }
        }
    } else {
        Source::Streaming(body)
    };
    let runtime = tokio::runtime::Handle::current();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let session = match handler.open(&git) {
            Ok(session) => session,
            Err(refusal) => {
                let _ = decision_sender.send(Err(refusal));
                return;
            }
        };
        if decision_sender.send(Ok(())).is_err() {
            return;
        }
        let mut input = match body {
            // Decoded already.
            Source::Buffered(bytes) => {
                request_body_reader(std::io::Cursor::new(bytes), BodyEncoding::Identity, limit)
            }
            Source::Streaming(body) => request_body_reader(
                RequestBody {
                    body,
                    runtime,
                    pending: Bytes::new(),
                    remaining: limit,
                    limit,
                    activity: activity.clone(),
                },
                encoding,
                limit,
            ),
        };
        let mut output = ChannelWriter {
            sender: chunk_sender,
            buffer: Vec::with_capacity(RESPONSE_CHUNK),
            activity,
        };
        handler.serve(session, &git, &mut input, &mut output);
        let _ = output.flush();
    });
    match decision.await {
        Ok(Ok(())) => {
            let mut response = Response::new(ResponseBody::Channel(chunks));
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(&content_type) {
                headers.insert(header::CONTENT_TYPE, value);
            }
            no_cache(headers);
            response
        }
        Ok(Err(Refusal::NotFound)) => text_response(StatusCode::NOT_FOUND, "Repository not found"),
        Ok(Err(Refusal::Forbidden(message))) => text_response(StatusCode::FORBIDDEN, &message),
        Ok(Err(Refusal::Unauthorized { realm })) => {
            let mut response = text_response(StatusCode::UNAUTHORIZED, "Authentication required");
            if let Ok(value) = HeaderValue::from_str(&basic_challenge(&realm)) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            response
        }
        Err(_) => text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"),
    }
}

/// A small `text/plain` response.
fn text_response(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Full(Some(Bytes::from(format!(
        "{message}\n"
    )))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    no_cache(headers);
    response
}

/// The caching headers git's http-backend sends with every smart response.
fn no_cache(headers: &mut HeaderMap) {
    headers.insert(
        header::EXPIRES,
        HeaderValue::from_static("Fri, 01 Jan 1980 00:00:00 GMT"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, max-age=0, must-revalidate"),
    );
}

/// A response body: a fixed message, or the chunks a session writes.
#[derive(Debug)]
pub enum ResponseBody {
    /// A complete body, taken on the first poll.
    Full(Option<Bytes>),
    /// Chunks the session writes; ends when the session is done.
    Channel(mpsc::Receiver<Bytes>),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Channel(receiver) => receiver
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResponseBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Channel(_) => SizeHint::default(),
        }
    }
}

/// The session's side of a response body: a blocking [`Write`] that sends chunks through a
/// bounded channel, so a slow client blocks the session instead of filling memory.
struct ChannelWriter {
    sender: mpsc::Sender<Bytes>,
    buffer: Vec<u8>,
    activity: Activity,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(RESPONSE_CHUNK),
        ));
        self.sender.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })?;
        self.activity.touch();
        Ok(())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = RESPONSE_CHUNK - self.buffer.len();
        let n = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() >= RESPONSE_CHUNK {
            self.send_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffer()
    }
}

/// The session's side of a request body: a blocking [`Read`] that pulls frames from hyper,
/// at most `limit` bytes.
struct RequestBody {
    body: UnsyncBoxBody<Bytes, BoxError>,
    runtime: tokio::runtime::Handle,
    pending: Bytes,
    remaining: u64,
    limit: u64,
    activity: Activity,
}

impl Read for RequestBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.is_empty() {
            let frame = match self.runtime.block_on(self.body.frame()) {
                None => return Ok(0),
                Some(Ok(frame)) => frame,
                Some(Err(err)) => return Err(std::io::Error::other(err)),
            };
            self.activity.touch();
            if let Ok(data) = frame.into_data() {
                let length = data.len() as u64;
                if length > self.remaining {
                    return Err(too_large(self.limit));
                }
                self.remaining -= length;
                self.pending = data;
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}

/// Where a session's request body comes from.
enum Source {
    /// Read whole before the session started.
    Buffered(Bytes),
    /// Pulled from the connection as the session reads.
    Streaming(http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>),
}

/// Read a whole request body of at most `limit` bytes, waiting at most `idle` for each
/// frame. Too large is an `InvalidData` error, a stall `TimedOut`.
async fn read_whole_body(
    mut body: http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>,
    limit: u64,
    idle: Duration,
    activity: &Activity,
) -> std::io::Result<Bytes> {
    let mut collected = bytes::BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request body stalled",
                ))
            }
            Ok(None) => return Ok(collected.freeze()),
            Ok(Some(Err(err))) => return Err(std::io::Error::other(err)),
            Ok(Some(Ok(frame))) => frame,
        };
        activity.touch();
        if let Ok(data) = frame.into_data() {
            if collected.len() as u64 + data.len() as u64 > limit {
                return Err(too_large(limit));
            }
            collected.extend_from_slice(&data);
        }
    }
}

/// A whole request body with `encoding` undone, before any session sees it: more than
/// `limit` bytes after decompression (a gzip bomb) is the `InvalidData` error of
/// [`request_body_reader`], so the front-end answers `413` instead of starting a session
/// that would read an error. Corrupt compressed data is an error of another kind.
pub fn decode_whole_body(
    body: Bytes,
    encoding: BodyEncoding,
    limit: u64,
) -> std::io::Result<Bytes> {
    match encoding {
        BodyEncoding::Identity => Ok(body),
        BodyEncoding::Gzip => {
            let mut decoded = Vec::new();
            request_body_reader(std::io::Cursor::new(body), encoding, limit)
                .read_to_end(&mut decoded)?;
            Ok(Bytes::from(decoded))
        }
    }
}

/// A request body as a session reads it: `encoding` undone, and failing with an
/// `InvalidData` error ("request body larger than `limit` bytes") once more than `limit`
/// bytes came in, or came out of the decompression. For front-ends that get the body as a
/// blocking [`Read`] (a CGI program's standard input); [`respond`] uses it too.
pub fn request_body_reader<'a, R: Read + 'a>(
    body: R,
    encoding: BodyEncoding,
    limit: u64,
) -> Box<dyn Read + 'a> {
    let body = Limited {
        inner: body,
        remaining: limit,
        limit,
    };
    match encoding {
        BodyEncoding::Identity => Box::new(body),
        BodyEncoding::Gzip => Box::new(Limited {
            inner: flate2::read::MultiGzDecoder::new(std::io::BufReader::new(body)),
            remaining: limit,
            limit,
        }),
    }
}

/// A reader that fails once more than `limit` bytes came through.
struct Limited<R> {
    inner: R,
    remaining: u64,
    limit: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.remaining = self
            .remaining
            .checked_sub(n as u64)
            .ok_or_else(|| too_large(self.limit))?;
        Ok(n)
    }
}

fn too_large(limit: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("request body larger than {limit} bytes"),
    )
}

/// When anything last moved on a connection.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_millis: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_millis: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(now, Ordering::Relaxed);
    }

    /// Completes once nothing moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
            let idle = self.start.elapsed().saturating_sub(last);
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

/// A stream that records activity.
struct Tracked<I> {
    inner: I,
    activity: Activity,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn check(
        method: Method,
        target: &str,
        header_pairs: &[(&'static str, &'static str)],
        expected: Result<(Service, RequestKind, &str, BodyEncoding), RouteError>,
    ) {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let actual = route(&method, path, query, &headers(header_pairs))
            .map(|(git, encoding)| (git.service, git.kind, git.repository.to_string(), encoding));
        let expected = expected.map(|(service, kind, repository, encoding)| {
            (service, kind, repository.to_owned(), encoding)
        });
        assert_eq!(actual, expected, "{method} {target}");
    }

    const UPLOAD_REQUEST: (&str, &str) = ("content-type", "application/x-git-upload-pack-request");

    #[test]
    fn routes() {
        use BodyEncoding::*;
        use RequestKind::*;
        use Service::*;
        check(
            Method::GET,
            "/a/b.git/info/refs?service=git-upload-pack",
            &[],
            Ok((UploadPack, Advertisement, "/a/b.git", Identity)),
        );
        check(
            Method::GET,
            "/r/info/refs?foo=1&service=git-receive-pack",
            &[],
            Ok((ReceivePack, Advertisement, "/r", Identity)),
        );
        check(
            Method::POST,
            "/r.git/git-upload-pack",
            &[UPLOAD_REQUEST],
            Ok((UploadPack, Rpc, "/r.git", Identity)),
        );
        check(
            Method::POST,
            "/r.git/git-upload-pack",
            &[UPLOAD_REQUEST, ("content-encoding", "gzip")],
            Ok((UploadPack, Rpc, "/r.git", Gzip)),
        );
        check(
            Method::POST,
            "/r.git/git-receive-pack",
            &[("content-type", "application/x-git-receive-pack-request")],
            Ok((ReceivePack, Rpc, "/r.git", Identity)),
        );
        // Percent-decoding happens here; judging the path is the handler's.
        check(
            Method::GET,
            "/%2e%2e/x/info/refs?service=git-upload-pack",
            &[],
            Ok((UploadPack, Advertisement, "/../x", Identity)),
        );
        check(
            Method::GET,
            "/a%00b/info/refs?service=git-upload-pack",
            &[],
            Ok((UploadPack, Advertisement, "/a\0b", Identity)),
        );
    }

    #[test]
    fn refusals() {
        check(Method::GET, "/r.git/HEAD", &[], Err(RouteError::NotFound));
        check(
            Method::GET,
            "/r.git/objects/info/packs",
            &[],
            Err(RouteError::NotFound),
        );
        check(
            Method::GET,
            "/info/refs?service=git-upload-pack",
            &[],
            Err(RouteError::NotFound),
        );
        check(
            Method::POST,
            "/git-upload-pack",
            &[UPLOAD_REQUEST],
            Err(RouteError::NotFound),
        );
        check(
            Method::POST,
            "/r/info/refs?service=git-upload-pack",
            &[],
            Err(RouteError::MethodNotAllowed { allow: "GET" }),
        );
        check(
            Method::GET,
            "/r/git-upload-pack",
            &[],
            Err(RouteError::MethodNotAllowed { allow: "POST" }),
        );
        check(
            Method::GET,
            "/r/info/refs",
            &[],
            Err(RouteError::BadRequest(
                "missing ?service= (packgate serves smart HTTP only)".into(),
            )),
        );
        check(
            Method::GET,
            "/r/info/refs?service=git-upload-archive",
            &[],
            Err(RouteError::BadRequest(
                "unsupported service 'git-upload-archive'".into(),
            )),
        );
        check(
            Method::GET,
            "/r/info/refs?service=git-upload-pack&service=git-receive-pack",
            &[],
            Err(RouteError::BadRequest(
                "more than one service= in the query".into(),
            )),
        );
        check(
            Method::GET,
            "/r%zz/info/refs?service=git-upload-pack",
            &[],
            Err(RouteError::BadRequest(
                "malformed percent-encoding in the path".into(),
            )),
        );
        check(
            Method::POST,
            "/r/git-upload-pack",
            &[("content-type", "text/plain")],
            Err(RouteError::UnsupportedMediaType(
                "expected Content-Type: application/x-git-upload-pack-request".into(),
            )),
        );
        check(
            Method::POST,
            "/r/git-upload-pack",
            &[UPLOAD_REQUEST, ("content-encoding", "br")],
            Err(RouteError::UnsupportedMediaType(
                "unsupported Content-Encoding; use gzip or none".into(),
            )),
        );
    }

    /// Echoes the request body; floods `/flood` until the client goes away.
    struct Echo {
        written: Arc<AtomicU64>,
    }

    impl SmartHttpHandler for Echo {
        type Session = ();

        fn open(&self, request: &GitRequest) -> Result<(), Refusal> {
            match (request.service, request.repository.as_slice()) {
                (_, b"/missing") => Err(Refusal::NotFound),
                (_, b"/private") if request.credentials.is_none() => Err(Refusal::Unauthorized {
                    realm: "test \"realm\"".into(),
                }),
                (Service::ReceivePack, _) => Err(Refusal::Forbidden("no pushes here".into())),
                _ => Ok(()),
            }
        }

        fn serve(
            &self,
            (): (),
            request: &GitRequest,
            input: &mut dyn Read,
            output: &mut dyn Write,
        ) {
            if let Some(credentials) = &request.credentials {
                let _ = write!(output, "{}:", credentials.user());
            }
            if request.repository == "/flood" {
                while output.write_all(&[b'x'; 4096]).is_ok() {
                    self.written.fetch_add(4096, Ordering::Relaxed);
                }
                return;
            }
            let mut body = Vec::new();
            let _ = match input.read_to_end(&mut body) {
                Ok(_) => output.write_all(&body),
                Err(err) => write!(output, "error: {err}"),
            };
        }
    }

    fn test_options() -> Arc<HttpOptions> {
        Arc::new(HttpOptions {
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(5),
            max_fetch_request: 1000,
            ..HttpOptions::default()
        })
    }

    /// A connection served in memory; the client's end.
    fn connect(written: &Arc<AtomicU64>) -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(16 * 1024);
        let handler = Arc::new(Echo {
            written: Arc::clone(written),
        });
        tokio::spawn(serve_connection(server, handler, test_options()));
        client
    }

    /// Sends `head` (without its final empty line) and `body`; returns status and body.
    async fn exchange(head: &str, body: &[u8]) -> (u16, Vec<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut client = connect(&Arc::default());
        let mut request = format!("{head}Connection: close\r\n\r\n").into_bytes();
        request.extend_from_slice(body);
        client.write_all(&request).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut response))
            .await
            .unwrap()
            .unwrap();
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut body = response[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            let mut plain = Vec::new();
            let mut rest = body.as_slice();
            loop {
                let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
                let size =
                    usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap(), 16).unwrap();
                rest = &rest[end + 2..];
                if size == 0 {
                    break;
                }
                plain.extend_from_slice(&rest[..size]);
                rest = &rest[size + 2..];
            }
            body = plain;
        }
        (status, body)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    const POST_HEAD: &str = "POST /r/git-upload-pack HTTP/1.1\r\nHost: x\r\n\
                             Content-Type: application/x-git-upload-pack-request\r\n";

    #[tokio::test(flavor = "multi_thread")]
    async fn bodies_are_decompressed_and_limited() {
        let body = b"0009done\n0000".repeat(10);
        let gzipped = gzip(&body);
        let head = format!(
            "{POST_HEAD}Content-Encoding: gzip\r\nContent-Length: {}\r\n",
            gzipped.len()
        );
        assert_eq!(exchange(&head, &gzipped).await, (200, body));

        // Small when compressed, too large when not: refused before the session starts.
        let bomb = gzip(&[b'0'; 5000]);
        let head = format!(
            "{POST_HEAD}Content-Encoding: gzip\r\nContent-Length: {}\r\n",
            bomb.len()
        );
        let (status, body) = exchange(&head, &bomb).await;
        assert_eq!(
            (status, body.as_slice()),
            (413, &b"request body larger than 1000 bytes\n"[..])
        );
        // Not gzip at all: 400.
        let head = format!("{POST_HEAD}Content-Encoding: gzip\r\nContent-Length: 4\r\n");
        assert_eq!(exchange(&head, b"0000").await.0, 400);

        // Too large by its Content-Length: refused before the handler runs.
        let head = format!("{POST_HEAD}Content-Length: 2000\r\n");
        assert_eq!(exchange(&head, &[b'0'; 2000]).await.0, 413);

        // Chunked, too large: a fetch request is read whole before the session, so it is
        // refused with 413 at the limit.
        let head = format!("{POST_HEAD}Transfer-Encoding: chunked\r\n");
        let chunked = b"3e8\r\n"
            .iter()
            .chain(&[b'0'; 1000])
            .chain(b"\r\n1\r\n0\r\n0\r\n\r\n");
        let (status, body) = exchange(&head, &chunked.copied().collect::<Vec<_>>()).await;
        assert_eq!(
            (status, body.as_slice()),
            (413, &b"request body larger than 1000 bytes\n"[..])
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn refusals_become_statuses() {
        let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n");
        let (status, body) =
            exchange(&get("/missing/info/refs?service=git-upload-pack"), b"").await;
        assert_eq!(
            (status, body.as_slice()),
            (404, &b"Repository not found\n"[..])
        );
        let (status, body) = exchange(&get("/r/info/refs?service=git-receive-pack"), b"").await;
        assert_eq!((status, body.as_slice()), (403, &b"no pushes here\n"[..]));
        assert_eq!(
            exchange(&get("/r/info/refs?service=git-upload-pack"), b"").await,
            (200, Vec::new())
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_client_that_sends_no_headers_is_dropped() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut client = connect(&Arc::default());
        client
            .write_all(b"GET /r/info/refs HTTP/1.1\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        // Closed after the header timeout (300ms), well before this one.
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut response))
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_slow_client_holds_the_session_back() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let written = Arc::new(AtomicU64::new(0));
        let mut client = connect(&written);
        client
            .write_all(b"GET /flood/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut start = [0u8; 1024];
        let n = client.read(&mut start).await.unwrap();
        assert!(start[..n].starts_with(b"HTTP/1.1 200 OK"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = written.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = written.load(Ordering::Relaxed);
        // The channel, hyper's buffer and the pipe hold a bounded amount; then it waits.
        assert_eq!(before, after, "the session kept writing");
        assert!(after < 4 * 1024 * 1024, "{after} bytes buffered");
        drop(client);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn unauthorized_asks_for_basic_credentials() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut client = connect(&Arc::default());
        client
            .write_all(
                b"GET /private/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n\
                  Connection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut response))
            .await
            .unwrap()
            .unwrap();
        let response = String::from_utf8_lossy(&response).to_lowercase();
        assert!(
            response.starts_with("http/1.1 401 unauthorized"),
            "{response}"
        );
        assert!(
            response.contains("www-authenticate: basic realm=\"test realm\", charset=\"utf-8\""),
            "{response}"
        );
        // With credentials ("u:p"), the handler serves and sees them.
        let head = "GET /private/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n\
                    Authorization: Basic dTpw\r\n";
        assert_eq!(exchange(head, b"").await, (200, b"u:".to_vec()));
    }

    #[test]
    fn credentials_are_parsed_and_never_shown() {
        let route_with = |pairs: &[(&'static str, &'static str)]| {
            route(
                &Method::GET,
                "/r/info/refs",
                Some("service=git-receive-pack"),
                &headers(pairs),
            )
            .unwrap()
            .0
        };
        // "alice:hunter2".
        let git = route_with(&[("authorization", "Basic YWxpY2U6aHVudGVyMg==")]);
        assert_eq!(
            git.credentials,
            Some(BasicCredentials::new("alice", "hunter2"))
        );
        assert_eq!(git.remote_user, None);
        assert!(!format!("{git:?}").contains("hunter2"));
        // Two Authorization headers: neither is taken.
        let git = route_with(&[
            ("authorization", "Basic YWxpY2U6aHVudGVyMg=="),
            ("authorization", "Basic Ym9iOng="),
        ]);
        assert_eq!(git.credentials, None);
        // Nor is a header claiming a user name.
        let git = route_with(&[("remote-user", "alice"), ("x-remote-user", "alice")]);
        assert_eq!((git.credentials, git.remote_user), (None, None));
    }

    /// [`respond`] as an embedding application calls it: another body type, a path prefix.
    #[tokio::test(flavor = "multi_thread")]
    async fn respond_under_a_prefix_with_any_body() {
        let handler = Arc::new(Echo {
            written: Arc::default(),
        });
        let options = Arc::new(HttpOptions {
            path_prefix: "/git/".into(),
            ..HttpOptions::default()
        });
        let request = |path: &str, body: &'static [u8]| {
            Request::post(path)
                .header(
                    header::CONTENT_TYPE,
                    "application/x-git-upload-pack-request",
                )
                .body(http_body_util::Full::new(Bytes::from_static(body)))
                .unwrap()
        };
        let response = respond(
            Arc::clone(&handler),
            Arc::clone(&options),
            request("/git/r/git-upload-pack", b"0000"),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.as_ref(), b"0000");
        for outside in ["/r/git-upload-pack", "/gitr/git-upload-pack", "/git"] {
            let response = respond(
                Arc::clone(&handler),
                Arc::clone(&options),
                request(outside, b""),
            )
            .await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{outside}");
        }
    }

    #[test]
    fn git_protocol_header() {
        let (git, _) = route(
            &Method::GET,
            "/r/info/refs",
            Some("service=git-upload-pack"),
            &headers(&[("git-protocol", "version=2:object-format=sha1")]),
        )
        .unwrap();
        assert!(git.wants_version_2());
        assert!(!git.wants_version_1());
        assert_eq!(
            git.response_content_type(),
            "application/x-git-upload-pack-advertisement"
        );
    }
}
