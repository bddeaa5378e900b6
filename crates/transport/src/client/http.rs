//! Smart HTTP(S) as a client (git's remote-curl, and gitprotocol-http): hyper 1 over
//! tokio, TLS by rustls.
//!
//! `connect` sends `GET <base>/info/refs?service=<service>` (with `Git-Protocol: version=N`
//! unless v0), follows its redirects (git's `http.followRedirects=initial`: the requests
//! after it go to the redirected base), checks that the answer is a smart one (content type
//! `application/x-<service>-advertisement`; a dumb server is refused) and hands the reader
//! the advertisement without the `# service=` packet and its flush. Each
//! [`Connection::end_request`] is then one `POST <base>/<service>`: requests of upload-pack
//! above 1 KiB are gzip-compressed as git's are; a request that grows past 1 MiB (git's
//! `http.postBuffer`) is streamed with chunked encoding while it is written. Responses are
//! decoded (gzip) and streamed to the reader chunk by chunk, never held whole.
//!
//! The connection owns a small tokio runtime (one worker, which drives the HTTP connection
//! and a streamed request body); the blocking calls wait on it, each wait bounded by
//! [`ConnectOptions::timeout`]. Keep-alive connections are reused between requests. Being
//! blocking, it is called from a plain thread or a runtime's blocking pool
//! (`spawn_blocking`), never from an async task.

use std::future::Future;
use std::io::{self, BufRead, BufReader, Cursor, Read, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use packgate_wire::client::{ConnectError, ConnectOptions, Connection};
use packgate_wire::service::Service;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_rustls::rustls::{self, pki_types::ServerName, ClientConfig, RootCertStore};

use super::url::HttpUrl;

/// The most redirects the first request follows (curl's default in git).
const MAX_REDIRECTS: usize = 20;
/// A request above this size is gzip-compressed (upload-pack only, as git).
const GZIP_ABOVE: usize = 1024;
/// A request above this size is streamed (git's default `http.postBuffer`).
const POST_BUFFER: usize = 1024 * 1024;
/// Chunks of a streamed request in flight.
const STREAM_CHUNKS: usize = 4;
/// The most `# service=` header packets skipped before the advertisement.
const MAX_HEADER_PACKETS: usize = 100;
/// How long a kept connection may take to become free before a new one is made.
const REUSE_WAIT: Duration = Duration::from_secs(1);
/// How much of an error page is read for its message.
const MAX_ERROR_BODY: usize = 4096;

/// Sent as the `User-Agent`: some git hosts give their smart HTTP service only to user
/// agents that start with `git/`.
fn user_agent() -> String {
    format!("git/2.47-compatible packgate/{}", env!("CARGO_PKG_VERSION"))
}

/// Where TLS trust comes from.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// A PEM file of CA certificates (git's `http.sslCAInfo` or `GIT_SSL_CAINFO`);
    /// replaces the built-in roots, as with git.
    pub ca_file: Option<std::path::PathBuf>,
}

impl TlsSettings {
    fn client_config(&self) -> Result<ClientConfig, ConnectError> {
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => load_ca_file(&mut roots, path)?,
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| io::Error::other(format!("TLS: {error}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn load_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), ConnectError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let bad = |reason: String| {
        ConnectError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("CA file {}: {reason}", path.display()),
        ))
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| bad(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| bad(error.to_string()))?;
    let (added, _) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(bad("no usable certificate".to_owned()));
    }
    Ok(())
}

/// A byte stream to an HTTP server, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A request body: complete, or chunks sent while the request is written.
enum RequestBody {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Bytes>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            RequestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Channel(receiver) => receiver
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, RequestBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            RequestBody::Full(None) => SizeHint::with_exact(0),
            RequestBody::Channel(_) => SizeHint::default(),
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("timed out {what}"))
}

/// `future` bounded by `timeout`.
async fn bounded<T>(
    timeout: Option<Duration>,
    what: &str,
    future: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match timeout {
        Some(limit) => tokio::time::timeout(limit, future)
            .await
            .map_err(|_| timed_out(what))?,
        None => future.await,
    }
}

/// What the connection and its response reader share.
struct Shared {
    /// Taken only when dropped.
    runtime: Option<Runtime>,
    timeout: Option<Duration>,
}

impl Shared {
    fn runtime(&self) -> io::Result<&Runtime> {
        self.runtime
            .as_ref()
            .ok_or_else(|| io::Error::other("the HTTP client's runtime is gone"))
    }
}

/// The HTTP side: a kept-alive connection to one origin.
struct Agent {
    shared: Arc<Shared>,
    tls: Option<Arc<ClientConfig>>,
    tls_settings: TlsSettings,
    /// The origin the kept connection goes to, and its sender.
    kept: Option<(String, SendRequest<RequestBody>)>,
}

impl Agent {
    /// A sender for `url`'s origin: the kept one if it is free, else a new connection.
    async fn sender(&mut self, url: &HttpUrl) -> Result<SendRequest<RequestBody>, ConnectError> {
        let origin = url.origin();
        if let Some((kept_origin, mut sender)) = self.kept.take() {
            if kept_origin == origin && !sender.is_closed() {
                // A connection whose last answer was not read to its end is closed by hyper;
                // one that is free is ready at once. Either way the wait is short.
                let limit = self
                    .shared
                    .timeout
                    .map_or(REUSE_WAIT, |timeout| timeout.min(REUSE_WAIT));
                let ready = bounded(Some(limit), "waiting for the connection", async {
                    sender.ready().await.map_err(io::Error::other)
                })
                .await;
                if ready.is_ok() {
                    return Ok(sender);
                }
            }
        }
        let timeout = self.shared.timeout;
        let tcp = bounded(timeout, &format!("connecting to {origin}"), async {
            let host = url.bare_host().to_owned();
            let port = url.port_or_default();
            let mut last = io::Error::new(
                io::ErrorKind::NotFound,
                format!("unable to look up {host} (port {port})"),
            );
            for address in tokio::net::lookup_host((host.as_str(), port)).await? {
                match tokio::net::TcpStream::connect(address).await {
                    Ok(stream) => return Ok(stream),
                    Err(error) => {
                        last = io::Error::new(
                            error.kind(),
                            format!("unable to connect to {host} ({address}): {error}"),
                        )
                    }
                }
            }
            Err(last)
        })
        .await?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if url.tls {
            let config = match &self.tls {
                Some(config) => Arc::clone(config),
                None => {
                    let config = Arc::new(self.tls_settings.client_config()?);
                    self.tls = Some(Arc::clone(&config));
                    config
                }
            };
            let name = ServerName::try_from(url.bare_host().to_owned()).map_err(|_| {
                ConnectError::Url {
                    url: url.base(),
                    reason: "the host is not a valid TLS server name".to_owned(),
                }
            })?;
            let connector = tokio_rustls::TlsConnector::from(config);
            let tls = bounded(timeout, "in the TLS handshake", async {
                connector.connect(name, tcp).await.map_err(|error| {
                    io::Error::new(
                        error.kind(),
                        format!("TLS handshake with {origin}: {error}"),
                    )
                })
            })
            .await?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (sender, connection) = bounded(timeout, "in the HTTP handshake", async {
            hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(io::Error::other)
        })
        .await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP client connection ended");
            }
        });
        Ok(sender)
    }
}

impl Agent {
    /// Sends `request` to `url`'s origin; the response's head is awaited when `wait`.
    async fn start(
        &mut self,
        url: &HttpUrl,
        request: Request<RequestBody>,
    ) -> Result<ResponseFuture, ConnectError> {
        let mut sender = self.sender(url).await?;
        let response: ResponseFuture = Box::pin(sender.send_request(request));
        self.kept = Some((url.origin(), sender));
        Ok(response)
    }
}

/// The response to a request that was sent.
type ResponseFuture = Pin<Box<dyn Future<Output = hyper::Result<Response<Incoming>>> + Send>>;

/// The response of a request that was sent.
async fn response_head(
    timeout: Option<Duration>,
    response: ResponseFuture,
) -> io::Result<Response<Incoming>> {
    bounded(timeout, "waiting for the server's response", async {
        response.await.map_err(|error| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("the HTTP request failed: {error}"),
            )
        })
    })
    .await
}

/// A response body as a blocking [`Read`]: each frame awaited on the runtime, bounded by
/// the timeout.
struct BodyRead {
    shared: Arc<Shared>,
    body: Incoming,
    chunk: Bytes,
    done: bool,
}

impl Read for BodyRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            if self.done {
                return Ok(0);
            }
            let timeout = self.shared.timeout;
            let body = &mut self.body;
            let frame = self.shared.runtime()?.block_on(bounded(
                timeout,
                "reading the server's response",
                async { body.frame().await.transpose().map_err(io::Error::other) },
            ))?;
            match frame {
                None => self.done = true,
                Some(frame) => {
                    if let Ok(data) = frame.into_data() {
                        self.chunk = data;
                    }
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        Ok(n)
    }
}

/// The reader over a response: its body, gzip-decoded when the server says so.
fn body_reader(shared: &Arc<Shared>, response: Response<Incoming>) -> Box<dyn BufRead + Send> {
    let gzip = response
        .headers()
        .get(hyper::header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip")
        });
    let body = BodyRead {
        shared: Arc::clone(shared),
        body: response.into_body(),
        chunk: Bytes::new(),
        done: false,
    };
    if gzip {
        Box::new(BufReader::with_capacity(
            64 * 1024,
            flate2::read::GzDecoder::new(BufReader::with_capacity(64 * 1024, body)),
        ))
    } else {
        Box::new(BufReader::with_capacity(64 * 1024, body))
    }
}

/// The media type of a response (`Content-Type` without parameters).
fn content_type(response: &Response<Incoming>) -> String {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// A smart HTTP connection to one repository and service.
pub struct HttpConnection {
    shared: Arc<Shared>,
    reader: Box<dyn BufRead + Send>,
    writer: RequestWriter,
}

impl std::fmt::Debug for HttpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConnection")
            .field("service", &self.writer.poster.service)
            .field("base", &self.writer.poster.base.base())
            .finish_non_exhaustive()
    }
}

/// What every POST of a connection carries, and the agent that sends it.
struct Poster {
    agent: Agent,
    service: Service,
    /// The repository's base after the first request's redirects.
    base: HttpUrl,
    authorization: Option<HeaderValue>,
    protocol: Option<&'static str>,
}

impl Poster {
    /// A POST to the service with git's headers.
    fn post(&self, body: RequestBody, gzip: bool) -> Result<Request<RequestBody>, io::Error> {
        let service = self.service.as_str();
        let target = format!("{}/{service}", self.base.path);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(target)
            .header(hyper::header::HOST, host_header(&self.base))
            .header(hyper::header::USER_AGENT, user_agent())
            .header(CONTENT_TYPE, format!("application/x-{service}-request"))
            .header(ACCEPT, format!("application/x-{service}-result"))
            .header(hyper::header::ACCEPT_ENCODING, "gzip");
        if gzip {
            request = request.header(hyper::header::CONTENT_ENCODING, "gzip");
        }
        if let Some(protocol) = self.protocol {
            request = request.header("Git-Protocol", protocol);
        }
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        request.body(body).map_err(io::Error::other)
    }
}

/// Where a request goes while it is written: a buffer, then (past [`POST_BUFFER`]) the
/// chunks of a POST already under way.
struct RequestWriter {
    shared: Arc<Shared>,
    poster: Poster,
    buffer: Vec<u8>,
    streaming: Option<Streaming>,
    /// Set when a streamed request failed; later writes fail too.
    failed: bool,
}

/// A POST whose body is being sent.
struct Streaming {
    chunks: mpsc::Sender<Bytes>,
    response: tokio::task::JoinHandle<io::Result<Response<Incoming>>>,
}

impl RequestWriter {
    /// Starts a POST whose body follows in chunks.
    fn start_streaming(&mut self) -> io::Result<()> {
        let (chunks, receiver) = mpsc::channel(STREAM_CHUNKS);
        let request = self.poster.post(RequestBody::Channel(receiver), false)?;
        let timeout = self.shared.timeout;
        let base = self.poster.base.clone();
        let agent = &mut self.poster.agent;
        let runtime = self.shared.runtime()?;
        let future = runtime
            .block_on(agent.start(&base, request))
            .map_err(into_io)?;
        let response = runtime.spawn(response_head(timeout, future));
        self.streaming = Some(Streaming { chunks, response });
        Ok(())
    }

    fn send_chunk(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        let Some(streaming) = &self.streaming else {
            return Ok(());
        };
        let sender = streaming.chunks.clone();
        let timeout = self.shared.timeout;
        let sent = self.shared.runtime().and_then(|runtime| {
            runtime.block_on(bounded(timeout, "sending the request", async move {
                sender.send(Bytes::from(chunk)).await.map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the server stopped reading the request",
                    )
                })
            }))
        });
        if sent.is_err() {
            self.failed = true;
        }
        sent
    }

    /// Sends the request written since the last one; returns the response's head.
    fn send(&mut self) -> io::Result<Response<Incoming>> {
        if self.failed {
            self.streaming = None;
            self.failed = false;
            self.buffer.clear();
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the request could not be sent",
            ));
        }
        let timeout = self.shared.timeout;
        if self.streaming.is_some() {
            let rest = std::mem::take(&mut self.buffer);
            let sent = if rest.is_empty() {
                Ok(())
            } else {
                self.send_chunk(rest)
            };
            // Whatever happened, the next request starts afresh.
            let streaming = self.streaming.take();
            self.failed = false;
            sent?;
            let Some(Streaming { chunks, response }) = streaming else {
                return Err(io::Error::other("no request under way"));
            };
            // The end of the body.
            drop(chunks);
            return self.await_response(response, timeout);
        }
        let body = std::mem::take(&mut self.buffer);
        let gzip = self.poster.service == Service::UploadPack && body.len() > GZIP_ABOVE;
        let body = if gzip {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 2),
                flate2::Compression::best(),
            );
            encoder.write_all(&body)?;
            encoder.finish()?
        } else {
            body
        };
        let request = self
            .poster
            .post(RequestBody::Full(Some(Bytes::from(body))), gzip)?;
        let base = self.poster.base.clone();
        let agent = &mut self.poster.agent;
        self.shared.runtime()?.block_on(async move {
            let future = agent.start(&base, request).await.map_err(into_io)?;
            response_head(timeout, future).await
        })
    }

    fn await_response(
        &self,
        response: tokio::task::JoinHandle<io::Result<Response<Incoming>>>,
        timeout: Option<Duration>,
    ) -> io::Result<Response<Incoming>> {
        self.shared.runtime()?.block_on(async move {
            bounded(timeout, "waiting for the server's response", async {
                response.await.map_err(io::Error::other)?
            })
            .await
        })
    }
}

impl Write for RequestWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the request could not be sent",
            ));
        }
        self.buffer.extend_from_slice(buf);
        if self.streaming.is_none() && self.buffer.len() > POST_BUFFER {
            if let Err(error) = self.start_streaming() {
                self.failed = true;
                return Err(error);
            }
        }
        if self.streaming.is_some() && self.buffer.len() >= 64 * 1024 {
            let chunk = std::mem::take(&mut self.buffer);
            self.send_chunk(chunk)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl HttpConnection {
    /// Discovers the service at `url`: the first GET, its redirects, and the smart
    /// response's checks.
    pub fn connect(
        url: HttpUrl,
        service: Service,
        options: &ConnectOptions,
        tls: TlsSettings,
    ) -> Result<Self, ConnectError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("packgate-http-client")
            .enable_io()
            .enable_time()
            .build()?;
        let shared = Arc::new(Shared {
            runtime: Some(runtime),
            timeout: options.timeout,
        });
        let mut agent = Agent {
            shared: Arc::clone(&shared),
            tls: None,
            tls_settings: tls,
            kept: None,
        };
        // git asks for v0 when it pushes over HTTP (v2 has no push).
        let protocol = match service {
            Service::UploadPack => options.version.parameter(),
            _ => match options.version {
                packgate_wire::client::WireVersion::V1 => Some("version=1"),
                _ => None,
            },
        };
        let credentials = match &url.credentials {
            Some((user, password)) => Some((user.clone(), password.clone().unwrap_or_default())),
            None => options.credentials.clone(),
        };
        let authorization = credentials
            .as_ref()
            .map(|(user, password)| basic(user, password));
        let (base, response) = shared.runtime()?.block_on(discover(
            &mut agent,
            url,
            service,
            protocol,
            authorization.clone(),
            options.timeout,
        ))?;
        let advertisement = body_reader(&shared, response);
        let reader = strip_service_header(advertisement, service)?;
        Ok(HttpConnection {
            writer: RequestWriter {
                shared: Arc::clone(&shared),
                poster: Poster {
                    agent,
                    service,
                    base,
                    authorization,
                    protocol,
                },
                buffer: Vec::new(),
                streaming: None,
                failed: false,
            },
            shared,
            reader,
        })
    }

    /// Checks a POST's response and makes it the reader.
    fn take_response(&mut self, response: Response<Incoming>) -> io::Result<()> {
        let status = response.status();
        if status != StatusCode::OK {
            let message = self
                .shared
                .runtime()?
                .block_on(error_message(self.shared.timeout, response));
            return Err(io::Error::other(format!(
                "RPC failed; HTTP {}{}",
                status.as_u16(),
                message
            )));
        }
        let expected = format!(
            "application/x-{}-result",
            self.writer.poster.service.as_str()
        );
        let kind = content_type(&response);
        if kind != expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("invalid content-type: '{kind}' (expected '{expected}')"),
            ));
        }
        self.reader = body_reader(&self.shared, response);
        Ok(())
    }
}

/// The answer to a plain [`get`]: its status, media type and body (read as it arrives).
pub struct HttpGetResponse {
    /// The status code.
    pub status: u16,
    /// The media type (`Content-Type` without parameters, lower case).
    pub content_type: String,
    /// The body, gzip-decoded if the server says so; each read waits at most the timeout.
    pub body: Box<dyn BufRead + Send>,
    /// Kept for the body's reads.
    _shared: Arc<Shared>,
}

impl std::fmt::Debug for HttpGetResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpGetResponse")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// `GET <url's base><suffix>` (`suffix` is a path and query below the repository, e.g.
/// `/refs?wait=60`) with `headers`, the URL's credentials as Basic authentication, and
/// each wait (connecting, the response's head, every read of the body) bounded by
/// `timeout`. No redirects are followed. For clients of packgate's own endpoints (the refs
/// watch); blocking, like [`HttpConnection`].
pub fn get(
    url: &HttpUrl,
    suffix: &str,
    headers: &[(&str, &str)],
    tls: TlsSettings,
    timeout: Option<Duration>,
) -> Result<HttpGetResponse, ConnectError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("packgate-http-client")
        .enable_io()
        .enable_time()
        .build()?;
    let shared = Arc::new(Shared {
        runtime: Some(runtime),
        timeout,
    });
    let mut agent = Agent {
        shared: Arc::clone(&shared),
        tls: None,
        tls_settings: tls,
        kept: None,
    };
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(format!("{}{suffix}", url.path))
        .header(hyper::header::HOST, host_header(url))
        .header(hyper::header::USER_AGENT, user_agent());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some((user, password)) = &url.credentials {
        request = request.header(
            AUTHORIZATION,
            basic(user, password.as_deref().unwrap_or("")),
        );
    }
    let request = request
        .body(RequestBody::Full(None))
        .map_err(|error| ConnectError::Url {
            url: url.base(),
            reason: error.to_string(),
        })?;
    let response = shared.runtime()?.block_on(async {
        let sent = agent.start(url, request).await?;
        response_head(timeout, sent)
            .await
            .map_err(ConnectError::from)
    })?;
    let status = response.status().as_u16();
    let content_type = content_type(&response);
    let body = body_reader(&shared, response);
    Ok(HttpGetResponse {
        status,
        content_type,
        body,
        _shared: shared,
    })
}

fn into_io(error: ConnectError) -> io::Error {
    match error {
        ConnectError::Io(error) => error,
        other => io::Error::other(other.to_string()),
    }
}

impl Connection for HttpConnection {
    fn stateless(&self) -> bool {
        true
    }

    fn reader(&mut self) -> &mut dyn BufRead {
        &mut self.reader
    }

    fn writer(&mut self) -> &mut dyn Write {
        &mut self.writer
    }

    fn end_request(&mut self) -> io::Result<()> {
        // The previous answer is no longer read (hyper closes its connection if unfinished).
        self.reader = Box::new(Cursor::new(Vec::new()));
        let response = self.writer.send()?;
        self.take_response(response)
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        // Nothing is pending: each request was answered; the runtime ends with the
        // connection.
        Ok(())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Never waits for a stalled server or name lookup.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `Basic <base64(user:password)>`.
fn basic(user: &str, password: &str) -> HeaderValue {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}").as_bytes());
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

/// The `Host` header of a URL.
fn host_header(url: &HttpUrl) -> String {
    match url.port {
        Some(port) => format!("{}:{port}", url.host),
        None => url.host.clone(),
    }
}

/// A short message from an error page (`text/plain` only, as git shows), or nothing.
async fn error_message(timeout: Option<Duration>, response: Response<Incoming>) -> String {
    if content_type(&response) != "text/plain" {
        return String::new();
    }
    let mut body = response.into_body();
    let mut text = Vec::new();
    while text.len() < MAX_ERROR_BODY {
        let frame = bounded(timeout, "reading an error page", async {
            body.frame().await.transpose().map_err(io::Error::other)
        })
        .await;
        match frame {
            Ok(Some(frame)) => {
                if let Ok(data) = frame.into_data() {
                    text.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    text.truncate(MAX_ERROR_BODY);
    let text = String::from_utf8_lossy(&text);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// The first GET and its redirects: the final base and the advertisement's response.
async fn discover(
    agent: &mut Agent,
    mut url: HttpUrl,
    service: Service,
    protocol: Option<&'static str>,
    mut authorization: Option<HeaderValue>,
    timeout: Option<Duration>,
) -> Result<(HttpUrl, Response<Incoming>), ConnectError> {
    let query = format!("/info/refs?service={}", service.as_str());
    let original = url.base();
    let mut redirects = 0;
    loop {
        let target = format!("{}{query}", url.path);
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(&target)
            .header(hyper::header::HOST, host_header(&url))
            .header(hyper::header::USER_AGENT, user_agent())
            .header(ACCEPT, "*/*")
            .header(hyper::header::ACCEPT_ENCODING, "gzip")
            .header(hyper::header::PRAGMA, "no-cache")
            .header(hyper::header::CACHE_CONTROL, "no-cache");
        if let Some(protocol) = protocol {
            request = request.header("Git-Protocol", protocol);
        }
        if let Some(authorization) = &authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(RequestBody::Full(None))
            .map_err(|error| ConnectError::Url {
                url: original.clone(),
                reason: error.to_string(),
            })?;
        let future = agent.start(&url, request).await?;
        let response = response_head(timeout, future).await?;
        let status = response.status();
        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(ConnectError::Refused(format!(
                    "unable to access '{original}': too many redirects"
                )));
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let next = redirect_base(&url, &location, &query).ok_or_else(|| {
                ConnectError::Refused(format!(
                    "unable to update url base from redirection:\n  asked for: {}{query}\n   redirect: {location}",
                    url.base()
                ))
            })?;
            if next.origin() != url.origin() {
                // Credentials are for the host they were given for.
                authorization = None;
            }
            tracing::debug!(from = %url.base(), to = %next.base(), "following a redirect");
            url = next;
            continue;
        }
        return match status {
            StatusCode::OK => {
                let expected = format!("application/x-{}-advertisement", service.as_str());
                if content_type(&response) != expected {
                    return Err(ConnectError::Refused(format!(
                        "'{}' is not a smart HTTP git server (no {expected} answer): the dumb HTTP transport is not supported",
                        url.base()
                    )));
                }
                Ok((url, response))
            }
            StatusCode::UNAUTHORIZED if authorization.is_none() => {
                Err(ConnectError::Refused(format!(
                    "authentication required for '{}' (no credentials were given)",
                    url.base()
                )))
            }
            StatusCode::UNAUTHORIZED => Err(ConnectError::Refused(format!(
                "Authentication failed for '{}'",
                url.base()
            ))),
            StatusCode::NOT_FOUND | StatusCode::GONE => Err(ConnectError::Refused(format!(
                "repository '{}' not found",
                url.base()
            ))),
            other => {
                let message = error_message(timeout, response).await;
                Err(ConnectError::Refused(format!(
                    "unable to access '{}': The requested URL returned error: {}{message}",
                    url.base(),
                    other.as_u16()
                )))
            }
        };
    }
}

/// The new base a redirect of `<base><query>` to `location` gives, as git computes it: the
/// location must still end in the query.
fn redirect_base(current: &HttpUrl, location: &str, query: &str) -> Option<HttpUrl> {
    let absolute = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else if location.starts_with("//") {
        format!("{}:{location}", if current.tls { "https" } else { "http" })
    } else if location.starts_with('/') {
        format!("{}{location}", current.origin())
    } else {
        return None;
    };
    let base = absolute.strip_suffix(query)?;
    match super::url::parse(base).ok()? {
        super::url::RemoteUrl::Http(mut url) => {
            url.credentials = None;
            Some(url)
        }
        _ => None,
    }
}

/// Reads one pkt-line: `None` for a flush (or another special packet), else its payload.
fn read_packet(reader: &mut dyn BufRead, raw: &mut Vec<u8>) -> io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 4];
    reader.read_exact(&mut length)?;
    raw.extend_from_slice(&length);
    let length = std::str::from_utf8(&length)
        .ok()
        .and_then(|hex| usize::from_str_radix(hex, 16).ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "invalid server response: bad packet length",
            )
        })?;
    if length < 4 {
        return Ok(None);
    }
    let mut payload = vec![0; length - 4];
    reader.read_exact(&mut payload)?;
    raw.extend_from_slice(&payload);
    Ok(Some(payload))
}

/// git's `check_smart_http()`: `# service=<service>` and the packets up to a flush are
/// removed; a v2 answer (`version 2` first) is left whole.
fn strip_service_header(
    mut reader: Box<dyn BufRead + Send>,
    service: Service,
) -> Result<Box<dyn BufRead + Send>, ConnectError> {
    let invalid = |what: String| ConnectError::Io(io::Error::new(io::ErrorKind::InvalidData, what));
    let mut raw = Vec::new();
    let Some(first) = read_packet(&mut reader, &mut raw)? else {
        return Err(invalid(
            "invalid server response; expected service, got flush packet".to_owned(),
        ));
    };
    let line = first.strip_suffix(b"\n").unwrap_or(&first);
    if line == format!("# service={}", service.as_str()).as_bytes() {
        for _ in 0..MAX_HEADER_PACKETS {
            let mut skipped = Vec::new();
            if read_packet(&mut reader, &mut skipped)?.is_none() {
                return Ok(reader);
            }
        }
        return Err(invalid(
            "invalid server response; the service header does not end".to_owned(),
        ));
    }
    if line == b"version 2" {
        return Ok(Box::new(Cursor::new(raw).chain(reader)));
    }
    if let Some(message) = line.strip_prefix(b"ERR ") {
        return Err(ConnectError::Refused(format!(
            "remote error: {}",
            String::from_utf8_lossy(message)
        )));
    }
    Err(invalid(format!(
        "invalid server response; got '{}'",
        String::from_utf8_lossy(line)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gate calls the client from a server's blocking pool: the connection's own
    /// runtime must work (and be dropped) there.
    #[test]
    fn usable_from_a_blocking_pool_thread() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let server = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let result = server.block_on(async move {
            tokio::task::spawn_blocking(move || {
                let url = http(&format!("http://127.0.0.1:{port}/r.git"));
                let options = ConnectOptions {
                    timeout: Some(Duration::from_secs(5)),
                    ..ConnectOptions::default()
                };
                HttpConnection::connect(url, Service::UploadPack, &options, TlsSettings::default())
                    .map(|_| ())
            })
            .await
            .unwrap()
        });
        assert!(
            matches!(&result, Err(ConnectError::Io(error)) if error.kind() == io::ErrorKind::ConnectionRefused),
            "{result:?}"
        );
    }

    #[test]
    fn basic_credentials() {
        assert_eq!(basic("alice", "s3cr3t"), "Basic YWxpY2U6czNjcjN0");
    }

    fn http(url: &str) -> HttpUrl {
        match super::super::url::parse(url) {
            Ok(super::super::url::RemoteUrl::Http(url)) => url,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn redirects_keep_the_query() {
        let query = "/info/refs?service=git-upload-pack";
        let current = http("http://a.example/r.git");
        let next = redirect_base(
            &current,
            "https://b.example/s/r.git/info/refs?service=git-upload-pack",
            query,
        )
        .unwrap();
        assert_eq!(next.base(), "https://b.example/s/r.git");
        let next =
            redirect_base(&current, "/moved/info/refs?service=git-upload-pack", query).unwrap();
        assert_eq!(next.base(), "http://a.example/moved");
        assert!(redirect_base(&current, "/login", query).is_none());
        assert!(redirect_base(
            &current,
            "relative/info/refs?service=git-upload-pack",
            query
        )
        .is_none());
    }

    #[test]
    fn service_header_removed() {
        let v0: &[u8] = b"001e# service=git-upload-pack\n0000003fabc";
        let mut reader = strip_service_header(Box::new(v0), Service::UploadPack).unwrap();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"003fabc");
        let v2: &[u8] = b"000eversion 2\n0000";
        let mut reader = strip_service_header(Box::new(v2), Service::UploadPack).unwrap();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, v2);
        let flush: &[u8] = b"0000";
        assert!(strip_service_header(Box::new(flush), Service::UploadPack).is_err());
        let other: &[u8] = b"001f# service=git-receive-pack\n0000";
        assert!(strip_service_header(Box::new(other), Service::UploadPack).is_err());
    }
}
