//! Waiting refs-watch requests taken out of hyper (plain HTTP on our own listener).
//!
//! hyper keeps a read buffer and a write buffer of 8 KiB each, and its connection state,
//! for every connection as long as it serves it: on a fresh server, 15.5 KiB of RSS per
//! waiting long-poll (`cargo xtask bench watch`). A long-poll or an event stream that is
//! about to wait therefore *detaches*: its future hands the wait to the connection
//! ([`Detacher::detach`]) and never completes; the connection drops hyper's connection (and
//! its buffers) and a new task of its own carries on: it waits, then writes the answer —
//! a complete response, or the event stream in chunks — and closes the connection
//! (`Connection: close`; a request pipelined behind the wait is not answered, and the client
//! sends it again on a new connection, as HTTP allows for a closed connection).
//!
//! Over TLS (and in an application that mounts [`super::respond`]) nothing detaches: the
//! wait stays inside hyper's response.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::Response;
use tokio::{io::AsyncWriteExt as _, sync::oneshot};

use super::{
    body::ResponseBody,
    idle::Activity,
    watch::{ClientProbe, SharedStream},
    RefsLook, RefsWatcher,
};
use crate::listener::Admission;

/// A wait handed out of hyper.
pub(crate) struct Detached {
    pub(super) watcher: Box<dyn RefsWatcher>,
    pub(super) look: RefsLook,
    pub(super) activity: Activity,
    pub(super) probe: Option<Arc<ClientProbe>>,
    /// An event stream (else a long-poll).
    pub(super) events: bool,
}

/// Where a request's future hands its wait to its connection: a request extension.
#[derive(Clone)]
pub(crate) struct Detacher(Arc<std::sync::Mutex<Option<oneshot::Sender<Detached>>>>);

impl Detacher {
    /// A detacher, and what the connection awaits.
    pub(crate) fn new() -> (Detacher, oneshot::Receiver<Detached>) {
        let (sender, receiver) = oneshot::channel();
        (
            Detacher(Arc::new(std::sync::Mutex::new(Some(sender)))),
            receiver,
        )
    }

    /// Hand `detached` to the connection; it is given back if the connection cannot take it
    /// (it did already, or it is gone).
    pub(super) fn detach(&self, detached: Detached) -> Result<(), Detached> {
        let sender = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match sender {
            Some(sender) => sender.send(detached),
            None => Err(detached),
        }
    }
}

/// Carry a detached wait to its end on `stream`: every write bounded by `idle`; the
/// connection's place under the session cap (`admission`) is kept until then.
pub(crate) async fn finish(
    detached: Detached,
    mut stream: SharedStream,
    idle: Duration,
    admission: Option<Arc<Admission>>,
) {
    let Detached {
        watcher,
        look,
        activity,
        probe,
        events,
    } = detached;
    let result = if events {
        let produce = |sender| super::watch::stream_events(watcher, look, sender, activity, probe);
        write_events(produce, &mut stream, idle).await
    } else {
        let response = super::watch::long_poll(watcher, look, activity, probe).await;
        respond(&mut stream, response, idle).await
    };
    if let Err(err) = result {
        tracing::debug!(%err, "refs watch ended: the answer could not be written");
    }
    let _ = bounded(idle, stream.shutdown()).await;
    drop(admission);
}

async fn bounded<T>(
    idle: Duration,
    write: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(idle, write).await.map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::TimedOut, "client idle for too long")
    })?
}

/// The head of `response` as HTTP/1.1 bytes, with `extra` header lines; the connection
/// closes after it.
fn head(response: &Response<ResponseBody>, extra: &str) -> Vec<u8> {
    let status = response.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in response.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(
        format!(
            "date: {}\r\nconnection: close\r\n{extra}\r\n",
            httpdate::fmt_http_date(std::time::SystemTime::now())
        )
        .as_bytes(),
    );
    head
}

/// Write a long-poll's whole answer.
async fn respond(
    stream: &mut SharedStream,
    response: Response<ResponseBody>,
    idle: Duration,
) -> std::io::Result<()> {
    let body = match response.body() {
        ResponseBody::Full(Some(bytes)) => bytes.clone(),
        _ => Bytes::new(),
    };
    let mut bytes = head(&response, &format!("content-length: {}\r\n", body.len()));
    bytes.extend_from_slice(&body);
    bounded(idle, stream.write_all(&bytes)).await
}

/// Write an event stream: its head at once, then each chunk as `produce` makes it.
async fn write_events<P: std::future::Future<Output = ()>>(
    produce: impl FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> P,
    stream: &mut SharedStream,
    idle: Duration,
) -> std::io::Result<()> {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let response = super::watch::event_stream_response(ResponseBody::Channel(receiver));
    bounded(
        idle,
        stream.write_all(&head(&response, "transfer-encoding: chunked\r\n")),
    )
    .await?;
    let produce = produce(sender);
    let write = async {
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            // The body cannot fail (`Infallible`); a frame that is not data is skipped.
            let Ok(Ok(data)) = frame.map(|frame| frame.into_data()) else {
                continue;
            };
            let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
            chunk.extend_from_slice(&data);
            chunk.extend_from_slice(b"\r\n");
            bounded(idle, stream.write_all(&chunk)).await?;
        }
        bounded(idle, stream.write_all(b"0\r\n\r\n")).await
    };
    // The writer ends when the producer does (its sender dropped) or the client is gone
    // (a write fails: the receiver is dropped, and the producer notices).
    let ((), written) = tokio::join!(produce, write);
    written
}
