//! Serving: the accept loop, HTTP/1.1 on one connection (header timeout, idle watchdog,
//! session cap), and one request from routing to the streamed response.

use std::{convert::Infallible, future::Future, io::Write, pin::Pin, sync::Arc};

use bstr::ByteSlice;
use http_body_util::BodyExt;
use hyper::{
    body::Body,
    header::{HeaderMap, HeaderValue},
    Request, Response,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::{mpsc, oneshot},
};
use tracing::Instrument;

use super::{
    basic_challenge,
    body::{
        decode_whole_body, read_whole_body, request_body_reader, BodyEncoding, BoxError,
        ChannelWriter, RequestBody, ResponseBody, Source, RESPONSE_CHUNKS_IN_FLIGHT,
    },
    detach::{self, Detached, Detacher},
    header,
    idle::{Activity, Tracked},
    route, route_refs,
    watch::{etag, if_none_match, respond_refs, ClientProbe, SharedStream},
    Bytes, HttpOptions, Refusal, RequestKind, RouteError, SmartHttpHandler, StatusCode,
};
use crate::{daemon::Service, listener::Admission};

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
            async move {
                let (stream, probe) = SharedStream::new(stream);
                let (detacher, detached) = Detacher::new();
                let idle = options.idle_timeout;
                let kept = Arc::clone(&admission);
                let served = serve_admitted(
                    stream.clone(),
                    handler,
                    options,
                    Some(admission),
                    Some(peer),
                    Some(probe),
                    Some((detacher, detached)),
                )
                .await?;
                // A wait taken out of hyper goes on in a task of its own, so that nothing of
                // this one (hyper's connection) stays with it.
                if let Some(detached) = served {
                    tokio::spawn(
                        detach::finish(detached, stream, idle, Some(kept))
                            .instrument(tracing::Span::current()),
                    );
                }
                Ok::<(), hyper::Error>(())
            }
            .instrument(tracing::info_span!("http", %peer))
        },
    )
    .await
}

/// The client's address, as a request extension: our accept loops insert it, and an
/// application that mounts [`respond`] may too; it names the pusher's address in reflogs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddress(pub std::net::SocketAddr);

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
    serve_admitted(io, handler, options, None, None, None, None)
        .await
        .map(drop)
}

/// [`serve_connection`] for our accept loop: the first request makes the connection an
/// active session, or is answered `503` if the session cap is reached. With `detach`, a
/// refs-watch request about to wait can be taken out of hyper (`detach.rs`): hyper's
/// connection is then dropped and the wait returned, for the caller to finish.
pub(crate) async fn serve_admitted<H, I>(
    io: I,
    handler: Arc<H>,
    options: Arc<HttpOptions>,
    admission: Option<Arc<Admission>>,
    peer: Option<std::net::SocketAddr>,
    probe: Option<Arc<ClientProbe>>,
    detach: Option<(Detacher, tokio::sync::oneshot::Receiver<Detached>)>,
) -> Result<Option<Detached>, hyper::Error>
where
    H: SmartHttpHandler,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let io = hyper_util::rt::TokioIo::new(Tracked::new(io, activity.clone()));
    let (detacher, detached) = match detach {
        Some((detacher, detached)) => (Some(detacher), Some(detached)),
        None => (None, None),
    };
    let detached = async {
        match detached {
            Some(detached) => detached.await.ok(),
            None => None,
        }
    };
    let service = {
        let activity = activity.clone();
        let options = Arc::clone(&options);
        hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
            if let Some(peer) = peer {
                request.extensions_mut().insert(PeerAddress(peer));
            }
            if let Some(probe) = &probe {
                request.extensions_mut().insert(Arc::clone(probe));
            }
            if let Some(detacher) = &detacher {
                request.extensions_mut().insert(detacher.clone());
            }
            let admitted = admission
                .as_ref()
                .is_none_or(|admission| admission.activate());
            let response = admitted.then(|| {
                respond_tracked(
                    Arc::clone(&handler),
                    Arc::clone(&options),
                    activity.clone(),
                    request,
                )
            });
            async move {
                match response {
                    Some(response) => Ok::<_, Infallible>(response.await),
                    None => Ok(busy()),
                }
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
    tokio::pin!(detached);
    tokio::select! {
        result = connection => result.map(|()| None),
        // Dropping hyper's connection here: the wait goes on without it.
        Some(detached) = &mut detached => Ok(Some(detached)),
        () = activity.idle_for(options.idle_timeout) => {
            tracing::debug!("closing an idle connection");
            Ok(None)
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

/// [`respond`], recording activity on a connection of ours: routed here, answered by a
/// boxed future. hyper keeps a place for the future it awaits in every connection, sized
/// for that future's largest step; a box there is small, and a waiting client holds only
/// the step it is in.
fn respond_tracked<H, B>(
    handler: Arc<H>,
    options: Arc<HttpOptions>,
    activity: Activity,
    request: Request<B>,
) -> Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>
where
    H: SmartHttpHandler,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let uri = request.uri().clone();
    let Some(routed) = options
        .strip_prefix(uri.path())
        .and_then(|path| route_refs(request.method(), path, uri.query(), request.headers()))
    else {
        return Box::pin(respond_smart(handler, options, activity, request));
    };
    match routed {
        Ok((mut git, query)) => {
            git.remote_address = request
                .extensions()
                .get::<PeerAddress>()
                .map(|peer| peer.0.ip().to_string());
            tracing::info!(
                repository = %git.repository.as_bstr(),
                since = query.since.as_deref().unwrap_or(""),
                wait = query.wait,
                event_stream = query.event_stream,
                credentials = git.credentials.is_some(),
                "refs watch"
            );
            let probe = request.extensions().get::<Arc<ClientProbe>>().cloned();
            // What a detached wait writes is HTTP/1.1 (chunked events).
            let detacher = request
                .extensions()
                .get::<Detacher>()
                .filter(|_| request.version() == hyper::Version::HTTP_11)
                .cloned();
            Box::pin(respond_refs(handler, git, query, activity, probe, detacher))
        }
        Err(err) => Box::pin(std::future::ready(route_error_response(
            request.method(),
            uri.path(),
            err,
        ))),
    }
}

/// [`respond_tracked`] for the smart HTTP requests (not the refs watch).
async fn respond_smart<H, B>(
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
    let (mut git, encoding, limit) = match routed {
        Ok(routed) => routed,
        Err(err) => return route_error_response(request.method(), uri.path(), err),
    };
    git.remote_address = request
        .extensions()
        .get::<PeerAddress>()
        .map(|peer| peer.0.ip().to_string());
    tracing::info!(
        service = git.service.as_str(),
        kind = ?git.kind,
        repository = %git.repository.as_bstr(),
        protocol = git.git_protocol.as_deref().unwrap_or(""),
        credentials = git.credentials.is_some(),
        "request"
    );
    let content_type = git.response_content_type();
    let advertisement = git.kind == RequestKind::Advertisement;
    let if_none = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
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
        match Box::pin(read_whole_body(body, limit, patience, &activity))
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
                RequestBody::new(body, runtime, limit, activity.clone()),
                encoding,
                limit,
            ),
        };
        let mut output = ChannelWriter::new(chunk_sender, activity);
        handler.serve(session, &git, &mut input, &mut output);
        let _ = output.flush();
    });
    match decision.await {
        Ok(Ok(())) if advertisement => {
            Box::pin(advertisement_response(chunks, content_type, if_none)).await
        }
        Ok(Ok(())) => {
            let mut response = Response::new(ResponseBody::Channel(chunks));
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(&content_type) {
                headers.insert(header::CONTENT_TYPE, value);
            }
            no_cache(headers);
            response
        }
        Ok(Err(refusal)) => refusal_response(refusal),
        Err(_) => text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"),
    }
}

/// The most of an advertisement collected to compute its `ETag`; a larger one is streamed
/// without.
const MAX_TAGGED_ADVERTISEMENT: usize = 64 * 1024 * 1024;

/// An advertisement with its strong `ETag` (the digest of the body, so collected first), or
/// `304 Not Modified` if the client's `If-None-Match` names it.
async fn advertisement_response(
    mut chunks: mpsc::Receiver<Bytes>,
    content_type: String,
    if_none: Option<String>,
) -> Response<ResponseBody> {
    let mut collected = Vec::new();
    let mut size = 0;
    while size <= MAX_TAGGED_ADVERTISEMENT {
        match chunks.recv().await {
            Some(chunk) => {
                size += chunk.len();
                collected.push(chunk);
            }
            None => break,
        }
    }
    let complete = size <= MAX_TAGGED_ADVERTISEMENT;
    let mut response = if complete {
        let body: Vec<u8> = collected.concat();
        let tag = etag(&body);
        let not_modified = if_none
            .as_deref()
            .is_some_and(|value| if_none_match(value, &tag));
        let mut response = if not_modified {
            tracing::debug!("advertisement not modified");
            let mut response = Response::new(ResponseBody::Full(None));
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        } else {
            Response::new(ResponseBody::Full(Some(Bytes::from(body))))
        };
        if let Ok(value) = HeaderValue::from_str(&tag) {
            response.headers_mut().insert(header::ETAG, value);
        }
        response
    } else {
        Response::new(ResponseBody::Resumed(collected.into(), chunks))
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::VARY, HeaderValue::from_static("Git-Protocol"));
    no_cache(headers);
    response
}

/// The response to a request that was not routed.
fn route_error_response(
    method: &hyper::Method,
    path: &str,
    err: RouteError,
) -> Response<ResponseBody> {
    tracing::info!(%method, path, %err, "not routed");
    let mut response = text_response(err.status(), &err.to_string());
    if let RouteError::MethodNotAllowed { allow } = err {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    response
}

/// The response to a handler's refusal.
pub(super) fn refusal_response(refusal: Refusal) -> Response<ResponseBody> {
    match refusal {
        Refusal::NotFound => text_response(StatusCode::NOT_FOUND, "Repository not found"),
        Refusal::Forbidden(message) => text_response(StatusCode::FORBIDDEN, &message),
        Refusal::Unauthorized { realm } => {
            let mut response = text_response(StatusCode::UNAUTHORIZED, "Authentication required");
            if let Ok(value) = HeaderValue::from_str(&basic_challenge(&realm)) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            response
        }
    }
}

/// A small `text/plain` response.
pub(super) fn text_response(status: StatusCode, message: &str) -> Response<ResponseBody> {
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
pub(super) fn no_cache(headers: &mut HeaderMap) {
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

#[cfg(test)]
mod tests {
    use std::{
        io::Read,
        sync::atomic::{AtomicU64, Ordering},
        time::Duration,
    };

    use super::*;
    use crate::http::GitRequest;

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
            // Not an advertisement: that is collected whole for its ETag.
            .write_all(
                b"POST /flood/git-upload-pack HTTP/1.1\r\nHost: x\r\n\
                  Content-Type: application/x-git-upload-pack-request\r\n\
                  Content-Length: 0\r\n\r\n",
            )
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
        // The refs watch is opened as a fetch: the same refusal, before the endpoint (which
        // this handler does not serve: 404).
        let head = "GET /private/refs HTTP/1.1\r\nHost: x\r\n";
        let (status, _) = exchange(head, b"").await;
        assert_eq!(status, 401);
        let head = "GET /private/refs HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dTpw\r\n";
        assert_eq!(exchange(head, b"").await, (404, b"not found\n".to_vec()));
        let head = "GET /missing/refs?wait=1 HTTP/1.1\r\nHost: x\r\n";
        assert_eq!(exchange(head, b"").await.0, 404);
        // With credentials ("u:p"), the handler serves and sees them.
        let head = "GET /private/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n\
                    Authorization: Basic dTpw\r\n";
        assert_eq!(exchange(head, b"").await, (200, b"u:".to_vec()));
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
}
