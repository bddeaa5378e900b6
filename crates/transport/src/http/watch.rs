//! Conditional advertisements (`ETag`, `If-None-Match`) and the refs watch endpoint
//! (`GET <repo>/refs`: a JSON long-poll, or Server-Sent Events), as `docs/refs-watch.md`
//! describes them. What the refs are is the handler's ([`SmartHttpHandler::watch_refs`]);
//! this module waits without a thread, sends keepalives and notices a client that left.

use std::{sync::Arc, time::Duration};

use hyper::{header::HeaderValue, Response};
use sha2::Digest as _;
use tokio::{net::TcpStream, sync::mpsc};
use tracing::Instrument as _;

use super::{
    body::ResponseBody,
    detach::{Detached, Detacher},
    header,
    idle::Activity,
    Bytes, GitRequest, RefsLook, RefsQuery, RefsWatcher, Refusal, SmartHttpHandler, StatusCode,
    WatchRefusal,
};

/// How often an event stream sends a `: keepalive` comment while nothing changes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// The strong entity tag of a response body: a quoted digest of it.
pub fn etag(body: &[u8]) -> String {
    let digest = sha2::Sha256::digest(body);
    let mut tag = String::with_capacity(66);
    tag.push('"');
    for byte in &digest[..20] {
        use std::fmt::Write as _;
        let _ = write!(tag, "{byte:02x}");
    }
    tag.push('"');
    tag
}

/// Whether an `If-None-Match` header value names `etag` (RFC 9110's weak comparison, as
/// `If-None-Match` uses: `W/"x"` names `"x"`; `*` names any).
pub fn if_none_match(value: &str, etag: &str) -> bool {
    value.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// A client's TCP connection shared by the HTTP connection that reads and writes it and the
/// [`ClientProbe`] that peeks at it: one descriptor and one registration with the runtime
/// (a duplicate socket for the probe cost a second of each, for every connection).
#[derive(Debug, Clone)]
pub(crate) struct SharedStream(Arc<TcpStream>);

impl SharedStream {
    /// The connection, and a probe of it.
    pub(crate) fn new(stream: TcpStream) -> (SharedStream, Arc<ClientProbe>) {
        let stream = Arc::new(stream);
        let probe = Arc::new(ClientProbe(Arc::clone(&stream)));
        (SharedStream(stream), probe)
    }
}

impl tokio::io::AsyncRead for SharedStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            // Into the unfilled part as it is (hyper's buffer is not zeroed first).
            match self.0.try_read_buf(buf) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                result => return std::task::Poll::Ready(result.map(drop)),
            }
        }
    }
}

impl tokio::io::AsyncWrite for SharedStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                result => return std::task::Poll::Ready(result),
            }
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                result => return std::task::Poll::Ready(result),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        // Shutting down the sending side does not block.
        std::task::Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

/// A handle on a client's TCP connection that only peeks, to notice while a request waits
/// (and nothing is read or written) that the client closed the connection.
#[derive(Debug)]
pub(crate) struct ClientProbe(Arc<TcpStream>);

impl ClientProbe {
    /// Resolves once the client closed its side (or the connection failed). Pending forever
    /// if the client sent more data (a pipelined request: it cannot be told apart).
    pub(crate) async fn gone(&self) {
        let mut byte = [0u8; 1];
        match self.0.peek(&mut byte).await {
            Ok(0) | Err(_) => {}
            Ok(_) => std::future::pending().await,
        }
    }
}

/// Answer a routed `GET <repo>/refs`: open it as a fetch, then a JSON long-poll or an event
/// stream driven by the handler's [`RefsWatcher`]. The opening runs on the blocking pool in
/// a turn (`crate::wake`); the future holds only what the wait needs, and the long-poll is boxed (a
/// waiting client holds it, and nothing of the opening).
pub(super) fn respond_refs<H: SmartHttpHandler>(
    handler: Arc<H>,
    git: GitRequest,
    query: RefsQuery,
    activity: Activity,
    probe: Option<Arc<ClientProbe>>,
    detacher: Option<Detacher>,
) -> impl std::future::Future<Output = Response<ResponseBody>> + Send {
    let event_stream = query.event_stream;
    // Many clients may start waiting at once (a reconnect after a restart): in a turn.
    // Boxed: what the opening holds is freed once it is done, not kept through the wait.
    let started = Box::pin(crate::wake::spawn_blocking(move || {
        let session = handler.open(&git).map_err(Err)?;
        let mut watcher = handler.watch_refs(session, &git, &query).map_err(Ok)?;
        let look = watcher.look();
        Ok::<_, Result<WatchRefusal, Refusal>>((watcher, look))
    }));
    async move {
        let (watcher, look) = match started.await {
            Ok(Ok(started)) => started,
            Ok(Err(Err(refusal))) => return super::server::refusal_response(refusal),
            Ok(Err(Ok(refusal))) => return watch_refusal(refusal),
            Err(err) => {
                tracing::warn!(%err, "refs watch failed");
                return super::server::text_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal server error",
                );
            }
        };
        let waits = event_stream || matches!(look, RefsLook::Wait(_));
        let (watcher, look, activity, probe) = match detacher.filter(|_| waits) {
            // Out of hyper: the connection carries on without it (see `detach`).
            Some(detacher) => match detacher.detach(Detached {
                watcher,
                look,
                activity,
                probe,
                events: event_stream,
            }) {
                Ok(()) => return std::future::pending().await,
                Err(back) => (back.watcher, back.look, back.activity, back.probe),
            },
            None => (watcher, look, activity, probe),
        };
        if event_stream {
            let (sender, receiver) = mpsc::channel(4);
            tokio::spawn(
                stream_events(watcher, look, sender, activity, probe)
                    .instrument(tracing::Span::current()),
            );
            return event_stream_response(ResponseBody::Channel(receiver));
        }
        Box::pin(long_poll(watcher, look, activity, probe)).await
    }
}

/// The response of an event stream whose events come as `body`.
pub(super) fn event_stream_response(body: ResponseBody) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    super::server::no_cache(headers);
    response
}

fn watch_refusal(refusal: WatchRefusal) -> Response<ResponseBody> {
    use super::server::text_response;
    match refusal {
        WatchRefusal::NotServed => text_response(StatusCode::NOT_FOUND, "not found"),
        WatchRefusal::BadRequest(message) => text_response(StatusCode::BAD_REQUEST, &message),
        WatchRefusal::Forbidden(message) => text_response(StatusCode::FORBIDDEN, &message),
        WatchRefusal::Failed(message) => {
            tracing::warn!(message, "refs watch failed");
            text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
        }
    }
}

/// Look again on the blocking pool.
async fn look_again(mut watcher: Box<dyn RefsWatcher>) -> Option<(Box<dyn RefsWatcher>, RefsLook)> {
    // Woken together with every other waiter of the change: in a turn.
    match crate::wake::spawn_blocking(move || {
        let look = watcher.look();
        (watcher, look)
    })
    .await
    {
        Ok(looked) => Some(looked),
        Err(err) => {
            tracing::warn!(%err, "refs watch failed");
            None
        }
    }
}

/// What ended one wait.
enum Woken {
    /// Look again: something may have changed, or the deadline passed.
    Look,
    /// Time for a keepalive (an event stream) or to tell the idle watchdog the wait is
    /// deliberate.
    Tick,
    /// The client left.
    Gone,
}

async fn wait_once(
    wait: &mut packgate_wire::service::Wait,
    probe: Option<&ClientProbe>,
    closed: impl std::future::Future<Output = ()>,
) -> Woken {
    let client_gone = async {
        match probe {
            Some(probe) => probe.gone().await,
            None => std::future::pending().await,
        }
    };
    // One timer for both (each costs a waiting client's memory).
    let tick = std::time::Instant::now() + KEEPALIVE_INTERVAL;
    let until = tick.min(wait.deadline);
    tokio::select! {
        () = &mut wait.changed => Woken::Look,
        () = tokio::time::sleep_until(until.into()) => {
            if until == wait.deadline {
                Woken::Look
            } else {
                Woken::Tick
            }
        }
        () = client_gone => Woken::Gone,
        () = closed => Woken::Gone,
    }
}

pub(super) async fn long_poll(
    mut watcher: Box<dyn RefsWatcher>,
    mut look: RefsLook,
    activity: Activity,
    probe: Option<Arc<ClientProbe>>,
) -> Response<ResponseBody> {
    loop {
        match look {
            RefsLook::Event { data, .. } | RefsLook::End(Some(data)) => return json_response(data),
            RefsLook::End(None) => return json_response(String::new()),
            RefsLook::Failed(message) => {
                tracing::warn!(message, "refs not readable");
                return super::server::text_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal server error",
                );
            }
            RefsLook::Wait(mut wait) => {
                tracing::debug!("refs watch waiting");
                loop {
                    match wait_once(&mut wait, probe.as_deref(), std::future::pending()).await {
                        Woken::Look => break,
                        // Waiting on purpose: not idle.
                        Woken::Tick => activity.touch(),
                        Woken::Gone => {
                            tracing::debug!("refs watch ended: the client went away");
                            return super::server::text_response(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "gone",
                            );
                        }
                    }
                }
                drop(wait);
                (watcher, look) = match look_again(watcher).await {
                    Some(looked) => looked,
                    None => {
                        return super::server::text_response(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "Internal server error",
                        )
                    }
                };
            }
        }
    }
}

fn json_response(data: String) -> Response<ResponseBody> {
    let mut body = data.into_bytes();
    body.push(b'\n');
    let mut response = Response::new(ResponseBody::Full(Some(Bytes::from(body))));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    super::server::no_cache(headers);
    response
}

/// The event stream's task: events as the watcher finds them, keepalives in between, until
/// the watcher ends it, the client leaves or a write fails.
pub(super) async fn stream_events(
    mut watcher: Box<dyn RefsWatcher>,
    mut look: RefsLook,
    sender: mpsc::Sender<Bytes>,
    activity: Activity,
    probe: Option<Arc<ClientProbe>>,
) {
    loop {
        match look {
            RefsLook::Event { id, data } => {
                let event = format!("id: {id}\nevent: refs\ndata: {data}\n\n");
                if sender.send(Bytes::from(event)).await.is_err() {
                    tracing::debug!("refs watch ended: the client went away");
                    return;
                }
            }
            RefsLook::End(_) => {
                tracing::debug!("refs event stream ended");
                return;
            }
            RefsLook::Failed(message) => {
                tracing::warn!(message, "refs not readable; event stream ended");
                return;
            }
            RefsLook::Wait(mut wait) => loop {
                tracing::debug!("refs watch waiting");
                match wait_once(&mut wait, probe.as_deref(), sender.closed()).await {
                    Woken::Look => break,
                    Woken::Tick => {
                        activity.touch();
                        let keepalive = Bytes::from_static(b": keepalive\n\n");
                        if sender.send(keepalive).await.is_err() {
                            tracing::debug!("refs watch ended: the client went away");
                            return;
                        }
                    }
                    Woken::Gone => {
                        tracing::debug!("refs watch ended: the client went away");
                        return;
                    }
                }
            },
        }
        (watcher, look) = match look_again(watcher).await {
            Some(looked) => looked,
            None => return,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_tags() {
        let tag = etag(b"0000");
        assert_eq!(tag.len(), 42);
        assert!(tag.starts_with('"') && tag.ends_with('"'));
        assert_ne!(tag, etag(b"0001"));
        assert!(if_none_match(&tag, &tag));
        assert!(if_none_match(&format!("\"x\", W/{tag}"), &tag));
        assert!(if_none_match("*", &tag));
        assert!(!if_none_match("\"x\"", &tag));
        assert!(!if_none_match(tag.trim_matches('"'), &tag));
    }
}
