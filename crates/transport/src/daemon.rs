//! The git:// front-end: a TCP listener that reads git daemon's request head and hands the
//! connection to a [`ConnectionHandler`].
//!
//! The head is one pkt-line: `git-upload-pack /path\0host=example.com\0\0version=2\0`.
//! Accepting and reading the head are async and bounded by an initial timeout. The work of
//! a session (opening and advertising, answering each request) runs on tokio's blocking pool
//! over the socket, every read and write bounded by the idle timeout, so a stalled client is
//! dropped after it; between requests, and while a request waits, a session holds no thread.

use std::{
    io::{Read, Write},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use bstr::BStr;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tracing::Instrument;

use packgate_wire::{
    pkt_line::{self, Decoded, Packet},
    v2,
};

pub use packgate_wire::service::{
    daemon::{
        parse_request_head, Addresses, CommandHandler, ConnectionHandler, ExchangeHandler,
        HeadError, Next, RequestHead, Session, LOG_TARGET,
    },
    Service, Wait,
};

use crate::listener::{Admission, ConnectionLimits};

/// Limits of the git:// front-end.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// How long a client may take to send its request head.
    pub init_timeout: Duration,
    /// How long a session may go without traffic in either direction.
    pub idle_timeout: Duration,
    /// The most sessions (request head received) served at once; more are refused with
    /// `ERR too many connections…`.
    pub max_connections: usize,
    /// The most connections still waiting for their request head (see
    /// [`crate::listener`]: the longest-waiting one is closed to make room).
    pub max_waiting_connections: usize,
    /// The same, from one client address.
    pub max_waiting_per_address: usize,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            init_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            max_connections: 256,
            max_waiting_connections: ConnectionLimits::DEFAULT_MAX_WAITING,
            max_waiting_per_address: ConnectionLimits::DEFAULT_MAX_WAITING_PER_ADDRESS,
        }
    }
}

/// What a client beyond `max_connections` is told before the connection is closed.
const TOO_MANY_CONNECTIONS: &str = "too many connections; try again later";

/// Accept connections on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn ConnectionHandler>,
    options: DaemonOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let options = Arc::new(options);
    let limits = ConnectionLimits {
        max_active: options.max_connections,
        max_waiting: options.max_waiting_connections,
        max_waiting_per_address: options.max_waiting_per_address,
    };
    crate::listener::accept_loop(
        listener,
        limits,
        shutdown,
        move |stream, peer, admission| {
            let handler = Arc::clone(&handler);
            let options = Arc::clone(&options);
            async move {
                tracing::info!(target: LOG_TARGET, "Connection from {peer}");
                let result = connection(stream, peer, handler, &options, &admission).await;
                match &result {
                    Ok(()) => tracing::info!(target: LOG_TARGET, "Disconnected"),
                    Err(err) => {
                        tracing::info!(target: LOG_TARGET, "Disconnected (with error: {err})")
                    }
                }
                result
            }
            .instrument(tracing::info_span!("git", %peer))
        },
    )
    .await
}

/// Tell a client over the session cap why it is turned away (its head has been read, so
/// closing the socket is no reset), spending at most a moment on it.
async fn refuse_busy(mut stream: TcpStream, peer: SocketAddr) {
    tracing::warn!(target: LOG_TARGET, "Too many connections, refusing {peer}");
    let mut message = Vec::new();
    pkt_line::encode_error(TOO_MANY_CONNECTIONS, &mut message);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(&message).await?;
        stream.shutdown().await
    })
    .await;
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<dyn ConnectionHandler>,
    options: &DaemonOptions,
    admission: &Admission,
) -> std::io::Result<()> {
    // Every step but the session's requests is boxed, so that the task a connection is
    // (and a waiting client costs) is no larger than what the current step needs.
    let head = Box::pin(tokio::time::timeout(
        options.init_timeout,
        read_head(&mut stream),
    ))
    .await
    .map_err(|_| timed_out("no request head in time"))??;
    if !admission.activate() {
        Box::pin(refuse_busy(stream, peer)).await;
        return Ok(());
    }
    let head = match head {
        Ok(head) => head,
        Err(err) => {
            tracing::info!(target: LOG_TARGET, "Bad request: {err}");
            let handler = Arc::clone(&handler);
            Box::pin(blocking(stream, options, move |_input, output| {
                handler.reject(&err, output)
            }))
            .await?;
            return Ok(());
        }
    };
    if let Some(host) = &head.host {
        tracing::info!(target: LOG_TARGET, "Extended attribute \"host\": {}", BStr::new(host));
    }
    if !head.extra_parameters.is_empty() {
        tracing::info!(target: LOG_TARGET, "Extended attribute \"protocol\": {}", head.git_protocol());
    }
    let addresses = Addresses {
        peer,
        local: stream.local_addr()?,
    };
    // One trip to the blocking pool opens the repository and sends the advertisement (or
    // the refusal).
    let (stream, opened) = Box::pin(blocking(
        stream,
        options,
        move |_input, output| match handler.open(&head, addresses) {
            Session::Refused(message) => {
                let mut out = pkt_line::PacketWriter::new(output);
                let _ = out.error(message);
                Opened::Refused
            }
            Session::Commands(mut handler) => {
                let advertised = handler.advertise(output);
                Opened::Commands(handler, advertised)
            }
            Session::Exchange(mut handler) => {
                let advertised = handler.advertise(output);
                Opened::Exchange(handler, advertised)
            }
        },
    ))
    .await?;
    match opened {
        Opened::Refused => Ok(()),
        Opened::Commands(handler, advertised) => {
            advertised?;
            Box::pin(commands(stream, handler, options)).await
        }
        Opened::Exchange(handler, advertised) => {
            advertised?;
            Box::pin(exchange(stream, handler, options)).await
        }
    }
}

/// A session opened and advertised (or refused) on the blocking pool.
enum Opened {
    Refused,
    Commands(Box<dyn CommandHandler>, std::io::Result<()>),
    Exchange(Box<dyn ExchangeHandler>, std::io::Result<()>),
}

/// A protocol v2 session after its advertisement: requests until the client ends it.
async fn commands(
    mut stream: TcpStream,
    mut handler: Box<dyn CommandHandler>,
    options: &DaemonOptions,
) -> std::io::Result<()> {
    let mut parser = v2::RequestParser::new(handler.limits());
    let mut buffer = Vec::new();
    loop {
        let read = read_request(&mut stream, &mut parser, &mut buffer, options.idle_timeout).await;
        let request = match read {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(RequestRead::Io(err)) => return Err(err),
            Err(RequestRead::Invalid(err)) => {
                tracing::info!(%err, "bad request");
                blocking(stream, options, move |_input, output| {
                    handler.reject(&err, output)
                })
                .await?;
                return Ok(());
            }
        };
        // One trip to the blocking pool prepares the request and, unless it waits, answers
        // it; after each wait, one more trip does the same.
        let mut request = request;
        let mut waited = false;
        let next = loop {
            let step = move |_input: &mut dyn Read, output: &mut dyn Write| match handler
                .prepare_wait(&request)
            {
                None => {
                    let next = handler.handle(request, output);
                    (handler, Ok(next))
                }
                Some(wait) => (handler, Err((request, wait))),
            };
            let (returned_stream, (returned, answered)) = if waited {
                after_wait(stream, options, step).await?
            } else {
                blocking(stream, options, step).await?
            };
            stream = returned_stream;
            handler = returned;
            match answered {
                Ok(next) => break next,
                Err((returned, wait)) => {
                    request = returned;
                    waited = true;
                    if !wait_for(&mut stream, wait, &mut buffer).await {
                        tracing::debug!(
                            "the client left while its request waited; the waiter left"
                        );
                        return Ok(());
                    }
                }
            }
        };
        if next == Next::Close {
            return Ok(());
        }
    }
}

/// The most bytes read ahead (the client's next request) while a request waits; beyond
/// that the socket is no longer watched until the wait ends.
const MAX_READ_AHEAD: usize = 64 * 1024;

/// Await `wait` (until it fires or its deadline passes) without a thread and without the
/// idle timeout, watching the connection meanwhile: `false` when the client hung up. Bytes
/// the client sends meanwhile are kept in `buffer` for the next request.
async fn wait_for(stream: &mut TcpStream, wait: Wait, buffer: &mut Vec<u8>) -> bool {
    let Wait {
        mut changed,
        deadline,
    } = wait;
    // A waiting session keeps no read buffer it does not need.
    if buffer.is_empty() {
        buffer.shrink_to_fit();
    }
    let deadline = tokio::time::sleep_until(deadline.into());
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut changed => return true,
            () = &mut deadline => return true,
            // Readiness, then a read into a buffer on the stack: a waiting client's task
            // holds no read buffer.
            ready = stream.readable(), if buffer.len() < MAX_READ_AHEAD => {
                if ready.is_err() {
                    return false;
                }
                let mut chunk = [0u8; 512];
                match stream.try_read(&mut chunk) {
                    Ok(0) => return false,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return false,
                }
            }
        }
    }
}

/// A session in which the client speaks once after the advertisement.
async fn exchange(
    stream: TcpStream,
    handler: Box<dyn ExchangeHandler>,
    options: &DaemonOptions,
) -> std::io::Result<()> {
    // Wait for the client's first bytes (or its hang-up) without holding a thread.
    tokio::time::timeout(options.idle_timeout, stream.readable())
        .await
        .map_err(|_| timed_out("client idle for too long"))??;
    blocking(stream, options, move |input, output| {
        handler.exchange(input, output)
    })
    .await?;
    Ok(())
}

/// Why no request could be read.
pub(crate) enum RequestRead {
    /// The connection failed.
    Io(std::io::Error),
    /// The client sent something that is not a valid request.
    Invalid(v2::RequestError),
}

/// Read the next v2 request. `Ok(None)` when the client ends the session (a flush-pkt, or
/// the connection closing between requests). `buffer` keeps bytes read past the request.
/// Each read may wait `idle` for the client.
async fn read_request(
    stream: &mut TcpStream,
    parser: &mut v2::RequestParser,
    buffer: &mut Vec<u8>,
    idle: Duration,
) -> Result<Option<v2::Request>, RequestRead> {
    loop {
        if let Some(outcome) = parse_buffered(parser, buffer) {
            return outcome;
        }
        let start = buffer.len();
        buffer.resize(start + READ_CHUNK, 0);
        let read = match tokio::time::timeout(idle, stream.read(&mut buffer[start..])).await {
            Ok(read) => read,
            Err(_) => Err(timed_out("client idle for too long")),
        };
        buffer.truncate(start + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => return end_of_input(parser, buffer),
            Ok(_) => {}
            Err(err) => return Err(RequestRead::Io(err)),
        }
    }
}

/// Feed the whole packets of `buffer` to `parser` (and drop them from the buffer); the
/// outcome once a request (or the session's end, or an error) is complete, `None` while the
/// parser needs more.
pub(crate) fn parse_buffered(
    parser: &mut v2::RequestParser,
    buffer: &mut Vec<u8>,
) -> Option<Result<Option<v2::Request>, RequestRead>> {
    let mut consumed = 0;
    let outcome = loop {
        match pkt_line::decode(&buffer[consumed..]) {
            Ok(Decoded::Complete {
                packet,
                consumed: n,
            }) => {
                consumed += n;
                match parser.push(packet) {
                    Ok(v2::Parsed::NeedMorePackets) => {}
                    Ok(v2::Parsed::Complete(request)) => break Some(Ok(Some(request))),
                    Ok(v2::Parsed::SessionEnd) => break Some(Ok(None)),
                    Err(err) => break Some(Err(RequestRead::Invalid(err))),
                }
            }
            Ok(Decoded::Incomplete { .. }) => break None,
            Err(err) => {
                break Some(Err(RequestRead::Invalid(v2::RequestError::Read(
                    pkt_line::ReadError::Decode(err),
                ))))
            }
        }
    };
    buffer.drain(..consumed);
    if outcome.is_some() && buffer.capacity() > READ_CHUNK * 4 {
        buffer.shrink_to(READ_CHUNK);
    }
    outcome
}

/// The outcome when the client's input ends with `buffer` (what is left of it) unparsed:
/// the session's end between requests, else a request cut short.
pub(crate) fn end_of_input(
    parser: &mut v2::RequestParser,
    buffer: &[u8],
) -> Result<Option<v2::Request>, RequestRead> {
    if buffer.is_empty() {
        return parser
            .end_of_input()
            .map(|()| None)
            .map_err(RequestRead::Invalid);
    }
    Err(RequestRead::Invalid(v2::RequestError::Read(
        pkt_line::ReadError::UnexpectedEof {
            expected: pkt_line::decode(buffer)
                .ok()
                .and_then(|decoded| match decoded {
                    Decoded::Incomplete { needed } => Some(buffer.len() + needed),
                    Decoded::Complete { .. } => None,
                })
                .unwrap_or(buffer.len()),
            received: buffer.len(),
        },
    )))
}

/// How much is read from a connection at once while waiting for a request.
const READ_CHUNK: usize = 4096;

/// Run `work` on the blocking pool over the connection, with the idle timeout on every read
/// and write; hand the connection back afterwards with what `work` returned. The socket
/// stays registered with the runtime and non-blocking: [`BlockingSocket`] waits in poll(2)
/// when it would block (a connection changed modes and was registered anew at every step).
async fn blocking<T: Send + 'static>(
    stream: TcpStream,
    options: &DaemonOptions,
    work: impl FnOnce(&mut dyn Read, &mut dyn Write) -> T + Send + 'static,
) -> std::io::Result<(TcpStream, T)> {
    let (stream, (value, flushed)) = on_pool(stream, options, |socket| {
        let mut input = std::io::BufReader::new(socket);
        let mut output = std::io::BufWriter::with_capacity(64 * 1024, socket);
        let value = work(&mut input, &mut output);
        (value, output.flush())
    })
    .await?;
    flushed?;
    Ok((stream, value))
}

/// Run `work` on the blocking pool with the connection's socket as a [`BlockingSocket`];
/// hand the connection back with what it returned.
async fn on_pool<R: Send + 'static>(
    stream: TcpStream,
    options: &DaemonOptions,
    work: impl FnOnce(&BlockingSocket<'_>) -> R + Send + 'static,
) -> std::io::Result<(TcpStream, R)> {
    let idle = options.idle_timeout;
    tokio::task::spawn_blocking(move || {
        let result = work(&BlockingSocket {
            stream: &stream,
            idle,
        });
        (stream, result)
    })
    .await
    .map_err(std::io::Error::other)
}

/// What an answer after a wait collects in memory before it writes on through the socket.
const COLLECTED_ANSWER: usize = 64 * 1024;

/// [`blocking`] for the trip a request takes after it waited: clients woken by one change
/// take it together, so it runs in a turn ([`crate::wake`]), and its output is collected in
/// memory (up to [`COLLECTED_ANSWER`], beyond which it is written on through the socket) and
/// written after the turn without a thread, so a client that reads slowly holds no turn.
async fn after_wait<T: Send + 'static>(
    stream: TcpStream,
    options: &DaemonOptions,
    work: impl FnOnce(&mut dyn Read, &mut dyn Write) -> T + Send + 'static,
) -> std::io::Result<(TcpStream, T)> {
    let turn = crate::wake::turn().await;
    let (mut stream, result) = on_pool(stream, options, |socket| {
        let mut input = std::io::BufReader::new(socket);
        let mut output = Collected {
            collected: Vec::new(),
            through: None,
            socket,
        };
        let value = work(&mut input, &mut output);
        output.finish().map(|collected| (value, collected))
    })
    .await?;
    drop(turn);
    let (value, collected) = result?;
    tokio::time::timeout(options.idle_timeout, stream.write_all(&collected))
        .await
        .map_err(|_| timed_out("client idle for too long"))??;
    Ok((stream, value))
}

/// The output of [`after_wait`]: collected, or once that is too much, written through.
struct Collected<'a, 's> {
    collected: Vec<u8>,
    through: Option<std::io::BufWriter<&'a BlockingSocket<'s>>>,
    socket: &'a BlockingSocket<'s>,
}

impl Collected<'_, '_> {
    /// What is left to write: everything, unless it was written through.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self.through {
            Some(mut through) => through.flush().map(|()| Vec::new()),
            None => Ok(self.collected),
        }
    }
}

impl Write for Collected<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.through.is_none() && self.collected.len() + buf.len() <= COLLECTED_ANSWER {
            self.collected.extend_from_slice(buf);
            return Ok(buf.len());
        }
        let through = match &mut self.through {
            Some(through) => through,
            None => {
                let mut through = std::io::BufWriter::with_capacity(COLLECTED_ANSWER, self.socket);
                through.write_all(&std::mem::take(&mut self.collected))?;
                self.through.insert(through)
            }
        };
        through.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Collected output is written after the turn; written-through output on request.
        match &mut self.through {
            Some(through) => through.flush(),
            None => Ok(()),
        }
    }
}

/// Blocking reads and writes on a connection whose socket is non-blocking, for a thread of
/// the blocking pool: a call that would block waits in poll(2), at most `idle`, then fails
/// with `TimedOut`.
struct BlockingSocket<'a> {
    stream: &'a TcpStream,
    idle: Duration,
}

impl BlockingSocket<'_> {
    /// Retry `attempt` until it does not fail with `WouldBlock`, waiting for `ready` between.
    fn retry<T>(
        &self,
        ready: rustix::event::PollFlags,
        mut attempt: impl FnMut(&socket2::Socket) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let socket = socket2::SockRef::from(self.stream);
        loop {
            match attempt(&socket) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => self.wait(ready)?,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }

    fn wait(&self, ready: rustix::event::PollFlags) -> std::io::Result<()> {
        // A timeout too large for a timespec waits for ever.
        let timeout = rustix::event::Timespec::try_from(self.idle).ok();
        let mut fds = [rustix::event::PollFd::new(self.stream, ready)];
        loop {
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(0) => return Err(timed_out("client idle for too long")),
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::INTR) => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
}

impl Read for &BlockingSocket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.retry(rustix::event::PollFlags::IN, |mut socket| socket.read(buf))
    }
}

impl Write for &BlockingSocket<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.retry(rustix::event::PollFlags::OUT, |mut socket| {
            socket.write(buf)
        })
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        self.retry(rustix::event::PollFlags::OUT, |mut socket| {
            socket.write_vectored(bufs)
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn timed_out(message: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, message)
}

/// Read exactly one pkt-line (the head) without reading past it.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Result<RequestHead, HeadError>> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await?;
    let needed = match pkt_line::decode(&length) {
        Ok(Decoded::Incomplete { needed }) => needed,
        Ok(Decoded::Complete {
            packet: Packet::Data(data),
            ..
        }) => return Ok(parse_request_head(data)),
        Ok(Decoded::Complete { .. }) => return Ok(Err(HeadError::MissingPath)),
        Err(err) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, err)),
    };
    let mut packet = length.to_vec();
    packet.resize(4 + needed, 0);
    stream.read_exact(&mut packet[4..]).await?;
    match pkt_line::decode(&packet) {
        Ok(Decoded::Complete {
            packet: Packet::Data(data),
            ..
        }) => Ok(parse_request_head(data)),
        Ok(_) => Ok(Err(HeadError::MissingPath)),
        Err(err) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, err)),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
        time::Instant,
    };

    use tokio::sync::mpsc;

    use super::*;

    /// A session whose one command waits (`waits` times, each until its deadline `wait`
    /// from now), then answers `answered`. It reports when it is dropped.
    struct Waiting {
        waits: usize,
        wait: Duration,
        /// Data packets of 1,000 bytes answered after `answered`.
        packets: usize,
        prepared: Arc<AtomicUsize>,
        dropped: mpsc::UnboundedSender<()>,
    }

    impl Drop for Waiting {
        fn drop(&mut self) {
            let _ = self.dropped.send(());
        }
    }

    impl CommandHandler for Waiting {
        fn advertise(&mut self, output: &mut dyn Write) -> std::io::Result<()> {
            let mut out = pkt_line::PacketWriter::new(output);
            out.write_text("version 2").map_err(std::io::Error::other)?;
            out.flush_pkt()
        }

        fn prepare_wait(&mut self, _request: &v2::Request) -> Option<Wait> {
            if self.prepared.fetch_add(1, Ordering::SeqCst) >= self.waits {
                return None;
            }
            Some(Wait {
                changed: Box::pin(std::future::pending()),
                deadline: Instant::now() + self.wait,
            })
        }

        fn handle(&mut self, _request: v2::Request, output: &mut dyn Write) -> Next {
            let mut out = pkt_line::PacketWriter::new(output);
            let _ = out.write_text("answered");
            for _ in 0..self.packets {
                let _ = out.write_data(&[b'x'; 1000]);
            }
            let _ = out.flush_pkt();
            Next::Continue
        }
    }

    struct Opener {
        waits: usize,
        wait: Duration,
        packets: usize,
        prepared: Arc<AtomicUsize>,
        dropped: mpsc::UnboundedSender<()>,
    }

    impl ConnectionHandler for Opener {
        fn open(&self, _head: &RequestHead, _addresses: Addresses) -> Session {
            Session::Commands(Box::new(Waiting {
                waits: self.waits,
                wait: self.wait,
                packets: self.packets,
                prepared: Arc::clone(&self.prepared),
                dropped: self.dropped.clone(),
            }))
        }
    }

    /// A server whose sessions wait as `Opener` says; its address, how often a wait was
    /// prepared, and a channel told of every session dropped.
    async fn start(
        waits: usize,
        wait: Duration,
        idle_timeout: Duration,
    ) -> (SocketAddr, Arc<AtomicUsize>, mpsc::UnboundedReceiver<()>) {
        start_answering(waits, wait, idle_timeout, 0).await
    }

    /// [`start`] with `packets` more packets in each answer.
    async fn start_answering(
        waits: usize,
        wait: Duration,
        idle_timeout: Duration,
        packets: usize,
    ) -> (SocketAddr, Arc<AtomicUsize>, mpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let prepared = Arc::new(AtomicUsize::new(0));
        let (dropped, dropped_receiver) = mpsc::unbounded_channel();
        let handler = Arc::new(Opener {
            waits,
            wait,
            packets,
            prepared: Arc::clone(&prepared),
            dropped,
        });
        let options = DaemonOptions {
            idle_timeout,
            ..DaemonOptions::default()
        };
        tokio::spawn(serve(listener, handler, options, std::future::pending()));
        (address, prepared, dropped_receiver)
    }

    /// Connect, read the advertisement, send a `wait-refs` request.
    async fn waiting_client(address: SocketAddr) -> TcpStream {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let mut bytes = Vec::new();
        pkt_line::encode_data(b"git-upload-pack /r\0host=x\0\0version=2\0", &mut bytes).unwrap();
        stream.write_all(&bytes).await.unwrap();
        let mut advertisement = [0u8; 18];
        stream.read_exact(&mut advertisement).await.unwrap();
        assert_eq!(&advertisement, b"000eversion 2\n0000");
        let mut request = Vec::new();
        pkt_line::encode_data(b"command=wait-refs\n", &mut request).unwrap();
        request.extend_from_slice(b"0000");
        stream.write_all(&request).await.unwrap();
        stream
    }

    /// An answer after a wait larger than what is collected in memory is written through,
    /// whole and in order; one that fits is written after the turn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_after_a_wait_arrive_whole_whatever_their_size() {
        for packets in [1, 300] {
            let (address, _prepared, _dropped) = start_answering(
                1,
                Duration::from_millis(50),
                Duration::from_secs(600),
                packets,
            )
            .await;
            let mut stream = waiting_client(address).await;
            let mut expected = Vec::new();
            pkt_line::encode_data(b"answered\n", &mut expected).unwrap();
            for _ in 0..packets {
                pkt_line::encode_data(&[b'x'; 1000], &mut expected).unwrap();
            }
            expected.extend_from_slice(b"0000");
            assert_eq!(packets > 1, expected.len() > COLLECTED_ANSWER);
            let mut answer = vec![0u8; expected.len()];
            tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut answer))
                .await
                .expect("no answer")
                .unwrap();
            assert!(answer == expected, "answer of {packets} packets differs");
        }
    }

    /// A client that hangs up while its request waits ends its session (and what the
    /// handler waited with) at once, long before the wait's deadline.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_hanging_up_ends_the_wait() {
        let (address, prepared, mut dropped) =
            start(1, Duration::from_secs(600), Duration::from_secs(600)).await;
        let stream = waiting_client(address).await;
        // Bounded: the request reaches the handler.
        let started = Instant::now();
        while prepared.load(Ordering::SeqCst) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "never prepared"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(stream);
        tokio::time::timeout(Duration::from_secs(20), dropped.recv())
            .await
            .expect("the session still runs after its client hung up");
    }

    /// A wait is awaited as often as the handler asks, without the idle timeout (the waits
    /// outlast it), then the request is answered on the same session.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waits_outlast_the_idle_timeout_then_the_request_is_answered() {
        let (address, prepared, _dropped) =
            start(2, Duration::from_millis(400), Duration::from_millis(200)).await;
        let mut stream = waiting_client(address).await;
        let mut answer = [0u8; 17];
        tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut answer))
            .await
            .expect("no answer")
            .unwrap();
        assert_eq!(&answer, b"000danswered\n0000");
        assert_eq!(prepared.load(Ordering::SeqCst), 3);
    }
}
