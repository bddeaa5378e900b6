//! Request and response bodies: a request body decoded (gzip) and limited before and after
//! decoding, read whole or pulled by the session as a blocking [`Read`]; a response body
//! the session writes as a blocking [`Write`] into a bounded channel.

use std::{
    convert::Infallible,
    io::{Read, Write},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http_body_util::{combinators::UnsyncBoxBody, BodyExt};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use super::{idle::Activity, Bytes};

/// The error type of request bodies [`respond`](super::respond) accepts.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How many chunks of a response body may wait for a slow client.
pub(super) const RESPONSE_CHUNKS_IN_FLIGHT: usize = 8;
/// The size of one chunk of a response body.
const RESPONSE_CHUNK: usize = 64 * 1024;

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    /// As is.
    Identity,
    /// `Content-Encoding: gzip` (or `x-gzip`).
    Gzip,
}
/// A response body: a fixed message, or the chunks a session writes.
#[derive(Debug)]
pub enum ResponseBody {
    /// A complete body, taken on the first poll.
    Full(Option<Bytes>),
    /// Chunks the session writes; ends when the session is done.
    Channel(mpsc::Receiver<Bytes>),
    /// Chunks already received from the session, then the rest of them.
    Resumed(std::collections::VecDeque<Bytes>, mpsc::Receiver<Bytes>),
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
            ResponseBody::Resumed(received, receiver) => match received.pop_front() {
                Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                None => receiver
                    .poll_recv(cx)
                    .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResponseBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Channel(_) | ResponseBody::Resumed(..) => SizeHint::default(),
        }
    }
}

/// The session's side of a response body: a blocking [`Write`] that sends chunks through a
/// bounded channel, so a slow client blocks the session instead of filling memory.
pub(super) struct ChannelWriter {
    sender: mpsc::Sender<Bytes>,
    buffer: Vec<u8>,
    activity: Activity,
}

impl ChannelWriter {
    pub(super) fn new(sender: mpsc::Sender<Bytes>, activity: Activity) -> Self {
        ChannelWriter {
            sender,
            buffer: Vec::with_capacity(RESPONSE_CHUNK),
            activity,
        }
    }

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
pub(super) struct RequestBody {
    body: UnsyncBoxBody<Bytes, BoxError>,
    runtime: tokio::runtime::Handle,
    pending: Bytes,
    remaining: u64,
    limit: u64,
    activity: Activity,
}

impl RequestBody {
    pub(super) fn new(
        body: UnsyncBoxBody<Bytes, BoxError>,
        runtime: tokio::runtime::Handle,
        limit: u64,
        activity: Activity,
    ) -> Self {
        RequestBody {
            body,
            runtime,
            pending: Bytes::new(),
            remaining: limit,
            limit,
            activity,
        }
    }
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
pub(super) enum Source {
    /// Read whole before the session started.
    Buffered(Bytes),
    /// Pulled from the connection as the session reads.
    Streaming(http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>),
}

/// Read a whole request body of at most `limit` bytes, waiting at most `idle` for each
/// frame. Too large is an `InvalidData` error, a stall `TimedOut`.
pub(super) async fn read_whole_body(
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
/// blocking [`Read`] (a CGI program's standard input); [`respond`](super::respond) uses it too.
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
