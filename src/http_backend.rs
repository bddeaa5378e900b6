//! `packgate http-backend`: a CGI program that serves git's smart HTTP behind a web server
//! (Apache, nginx with fcgiwrap), a drop-in for git-http-backend.
//!
//! The web server runs it once per request with the CGI variables in the environment and the
//! request body on standard input; it answers on standard output with CGI headers (`Status:`,
//! `Content-Type`, no-cache headers), an empty line and the body. The request is routed by
//! the HTTP front-end's sans-IO [`http::route`] and answered by the protocol crate's
//! [`HttpService`], the same code `packgate serve --http` runs:
//!
//! * the repository is `GIT_PROJECT_ROOT` + `PATH_INFO` (or, without `GIT_PROJECT_ROOT`,
//!   `PATH_TRANSLATED`), found by git daemon's rules ([`Registry::daemon`]): served only if
//!   its git directory holds `git-daemon-export-ok`, unless `GIT_HTTP_EXPORT_ALL` is set;
//!   paths with `..`, or leading out of the root through a symlink, are `404`;
//! * upload-pack is served unless the repository says `http.uploadpack=false`;
//!   receive-pack to a user the web server authenticated (`REMOTE_USER`, non-empty) unless
//!   the repository says `http.receivepack=false`, and to anyone if it says
//!   `http.receivepack=true` ([`PushAccess::RemoteUser`], git's rules);
//! * `HTTP_GIT_PROTOCOL` is the client's `Git-Protocol` header, `HTTP_CONTENT_ENCODING: gzip`
//!   a compressed body; `CONTENT_LENGTH` bounds what is read from standard input (without
//!   it the body ends with standard input);
//! * only smart HTTP is served: dumb-HTTP paths (`HEAD`, `objects/…`) are `404`.
//!
//! Logs go to standard error (the web server's error log), filtered by `PACKGATE_LOG`.

use std::{
    ffi::{OsStr, OsString},
    io::{BufWriter, Read, Write},
    os::unix::ffi::OsStrExt as _,
    path::PathBuf,
    process::ExitCode,
};

use clap::Args;
use packgate::{
    protocol::{
        http::{HttpService, PushAccess},
        refname::Namespace,
        registry::{DaemonPolicy, Export, Registry},
    },
    transport::daemon::Service,
    transport::http::{
        self, basic_challenge,
        header::{self, HeaderMap, HeaderName, HeaderValue},
        BodyEncoding::Identity,
        GitRequest, HttpOptions, Method, RefsLook, Refusal, RequestKind, RouteError,
        SmartHttpHandler, StatusCode, WatchRefusal,
    },
};

/// How much of the response is collected before it is written to standard output (the
/// session also flushes at every point where the client must see what was written).
const OUTPUT_BUFFER: usize = 64 * 1024;

/// `packgate http-backend` takes no options: everything comes from the CGI environment.
#[derive(Args)]
pub(crate) struct HttpBackendArgs {
    /// Ignored: a web server may pass the words of a query without `=` as arguments, as CGI
    /// allows.
    #[arg(hide = true, trailing_var_arg = true, allow_hyphen_values = true)]
    ignored: Vec<OsString>,
}

/// Answer the one request described by the CGI environment.
pub(crate) fn http_backend(_args: HttpBackendArgs) -> anyhow::Result<ExitCode> {
    let cgi = CgiEnvironment::from_process();
    let mut output = BufWriter::with_capacity(OUTPUT_BUFFER, std::io::stdout().lock());
    if let Some(answer) = watch_refs(&cgi) {
        match answer {
            Ok(body) => output.write_all(&body)?,
            Err(response) => response.write(&mut output)?,
        }
        output.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    match prepare(&cgi) {
        Ok(prepared) => serve(prepared, &cgi, std::io::stdin().lock(), &mut output)?,
        Err(response) => response.write(&mut output)?,
    }
    output.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The CGI variables this program reads, taken from the environment once. Empty values
/// count as unset, except `GIT_HTTP_EXPORT_ALL`, which counts if present at all (Apache's
/// `SetEnv GIT_HTTP_EXPORT_ALL` sets it empty).
#[derive(Debug, Default)]
struct CgiEnvironment {
    request_method: Option<OsString>,
    project_root: Option<OsString>,
    path_info: Option<OsString>,
    path_translated: Option<OsString>,
    query_string: Option<OsString>,
    content_type: Option<OsString>,
    content_length: Option<OsString>,
    content_encoding: Option<OsString>,
    git_protocol: Option<OsString>,
    /// `HTTP_IF_NONE_MATCH`: an advertisement the client has (`304` if it is current).
    if_none_match: Option<OsString>,
    /// `HTTP_ACCEPT` and `HTTP_LAST_EVENT_ID`, for `GET <repo>/refs`.
    accept: Option<OsString>,
    last_event_id: Option<OsString>,
    remote_user: Option<OsString>,
    /// `REMOTE_ADDR`: the client's address, for the reflog identity of a push.
    remote_address: Option<OsString>,
    export_all: bool,
    /// `GIT_NAMESPACE`, which git's http-backend passes on to its services.
    namespace: Option<OsString>,
    max_request_buffer: Option<OsString>,
}

impl CgiEnvironment {
    fn from_process() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        CgiEnvironment {
            request_method: var("REQUEST_METHOD"),
            project_root: var("GIT_PROJECT_ROOT"),
            path_info: var("PATH_INFO"),
            path_translated: var("PATH_TRANSLATED"),
            query_string: var("QUERY_STRING"),
            content_type: var("CONTENT_TYPE"),
            content_length: var("CONTENT_LENGTH"),
            content_encoding: var("HTTP_CONTENT_ENCODING"),
            git_protocol: var("HTTP_GIT_PROTOCOL"),
            if_none_match: var("HTTP_IF_NONE_MATCH"),
            accept: var("HTTP_ACCEPT"),
            last_event_id: var("HTTP_LAST_EVENT_ID"),
            remote_user: var("REMOTE_USER"),
            remote_address: var("REMOTE_ADDR"),
            export_all: std::env::var_os("GIT_HTTP_EXPORT_ALL").is_some(),
            namespace: var("GIT_NAMESPACE"),
            max_request_buffer: var("GIT_HTTP_MAX_REQUEST_BUFFER"),
        }
    }
}

/// A request this program will serve: the service decided to, and the body's terms.
struct Prepared {
    service: HttpService,
    session: <HttpService as SmartHttpHandler>::Session,
    git: GitRequest,
    encoding: http::BodyEncoding,
    /// The largest body, before and after decompression.
    limit: u64,
    /// `CONTENT_LENGTH`: exactly this much is read from standard input.
    content_length: Option<u64>,
}

/// Route the request and let the service decide; every refusal is a small response.
fn prepare(cgi: &CgiEnvironment) -> Result<Prepared, SmallResponse> {
    let Some(method) = &cgi.request_method else {
        return Err(SmallResponse::misconfigured(
            "no REQUEST_METHOD from the web server",
        ));
    };
    // As git's http-backend: HEAD is answered as GET (the web server drops the body).
    let method = match method.as_bytes() {
        b"HEAD" => Method::GET,
        other => Method::from_bytes(other).map_err(|_| {
            SmallResponse::text(StatusCode::BAD_REQUEST, "malformed request method")
        })?,
    };
    let (registry, path) = locate(cgi)?;
    let query = cgi.query_string.as_deref().map(OsStr::to_string_lossy);
    let (mut git, encoding) = http::route(&method, &path, query.as_deref(), &headers(cgi))
        .map_err(|err| {
            tracing::info!(%method, path, %err, "not routed");
            SmallResponse::from_route_error(&err)
        })?;
    git.remote_user = cgi
        .remote_user
        .as_deref()
        .map(|user| user.to_string_lossy().into_owned());
    git.remote_address = cgi
        .remote_address
        .as_deref()
        .map(|address| address.to_string_lossy().into_owned());
    let limit = request_limit(cgi, git.service);
    let content_length = match &cgi.content_length {
        None => None,
        Some(value) => match value
            .to_str()
            .and_then(|text| text.trim().parse::<u64>().ok())
        {
            Some(length) if length > limit => {
                return Err(SmallResponse::from_route_error(&RouteError::TooLarge {
                    limit,
                }))
            }
            Some(length) => Some(length),
            None => {
                return Err(SmallResponse::text(
                    StatusCode::BAD_REQUEST,
                    "malformed CONTENT_LENGTH",
                ))
            }
        },
    };
    tracing::info!(
        service = git.service.as_str(),
        kind = ?git.kind,
        repository = %String::from_utf8_lossy(&git.repository),
        protocol = git.git_protocol.as_deref().unwrap_or(""),
        user = git.remote_user.as_deref().unwrap_or(""),
        "request"
    );
    let service = service(cgi, registry)?;
    let session = service.open(&git).map_err(SmallResponse::from_refusal)?;
    Ok(Prepared {
        service,
        session,
        git,
        encoding,
        limit,
        content_length,
    })
}

/// The service answering this process's request.
fn service(cgi: &CgiEnvironment, registry: Registry) -> Result<HttpService, SmallResponse> {
    let namespace = match &cgi.namespace {
        Some(raw) => Namespace::new(raw.as_bytes())
            .map_err(|err| SmallResponse::misconfigured(&err.to_string()))?,
        None => None,
    };
    // git http-backend's receive-pack runs `--auto` maintenance after a push; the CGI process
    // ends with the request, so it is a detached `packgate maintenance run --auto`.
    Ok(HttpService::new(registry, PushAccess::RemoteUser)
        .with_namespace(namespace)
        .with_upstreams(crate::serve::plugged_upstreams())
        .with_hook(crate::maintenance::AutoMaintenanceHook::Detached)
        // A process per request: the refs watch answers at once, never waits.
        .with_refs_wait_cap(Some(0)))
}

/// `GET <repo>/refs` (the refs watch) answered at once: the whole CGI response, or the
/// refusal; `None` if the request is not one.
fn watch_refs(cgi: &CgiEnvironment) -> Option<Result<Vec<u8>, SmallResponse>> {
    let method = match cgi.request_method.as_deref().map(OsStr::as_bytes) {
        Some(b"HEAD") => Method::GET,
        Some(other) => Method::from_bytes(other).ok()?,
        None => return None,
    };
    let (registry, path) = match locate(cgi) {
        Ok(located) => located,
        Err(response) => return Some(Err(response)),
    };
    let query = cgi.query_string.as_deref().map(OsStr::to_string_lossy);
    let routed = http::route_refs(&method, &path, query.as_deref(), &headers(cgi))?;
    Some((|| {
        let (mut git, query) = routed.map_err(|err| SmallResponse::from_route_error(&err))?;
        git.remote_user = cgi
            .remote_user
            .as_deref()
            .map(|user| user.to_string_lossy().into_owned());
        tracing::info!(
            repository = %String::from_utf8_lossy(&git.repository),
            since = query.since.as_deref().unwrap_or(""),
            event_stream = query.event_stream,
            "refs watch"
        );
        let service = service(cgi, registry)?;
        let session = service.open(&git).map_err(SmallResponse::from_refusal)?;
        let mut watcher = service
            .watch_refs(session, &git, &query)
            .map_err(SmallResponse::from_watch_refusal)?;
        let mut body = Vec::new();
        // The wait is capped at 0: the watcher sends what the client has not seen, then ends.
        for _ in 0..2 {
            match watcher.look() {
                RefsLook::Event { id, data } if query.event_stream => {
                    body.extend_from_slice(
                        format!("id: {id}\nevent: refs\ndata: {data}\n\n").as_bytes(),
                    );
                }
                RefsLook::Event { data, .. } | RefsLook::End(Some(data)) => {
                    body = data.into_bytes();
                    body.push(b'\n');
                    break;
                }
                RefsLook::End(None) | RefsLook::Wait(_) => break,
                RefsLook::Failed(message) => {
                    tracing::error!(message, "refs not readable");
                    return Err(SmallResponse::text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Internal server error",
                    ));
                }
            }
        }
        let content_type = if query.event_stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let mut response =
            format!("Status: 200 OK\r\nContent-Type: {content_type}\r\n").into_bytes();
        write_no_cache(&mut response).map_err(|_| SmallResponse::misconfigured("write"))?;
        response.extend_from_slice(b"\r\n");
        response.extend_from_slice(&body);
        Ok(response)
    })())
}

/// The registry to look the repository up in, and the request path for [`http::route`]
/// (percent-encoded, since the web server has decoded `PATH_INFO` already).
fn locate(cgi: &CgiEnvironment) -> Result<(Registry, String), SmallResponse> {
    let (base_path, requested) = match (&cgi.project_root, &cgi.path_translated) {
        (Some(root), _) => {
            let Some(path_info) = &cgi.path_info else {
                return Err(SmallResponse::misconfigured(
                    "GIT_PROJECT_ROOT is set but PATH_INFO is not",
                ));
            };
            (Some(PathBuf::from(root)), path_info)
        }
        // PATH_TRANSLATED is a filesystem path the web server made from PATH_INFO.
        (None, Some(translated)) => (None, translated),
        (None, None) => {
            return Err(SmallResponse::misconfigured(
                "no GIT_PROJECT_ROOT or PATH_TRANSLATED from the web server",
            ))
        }
    };
    let policy = DaemonPolicy {
        export: if cgi.export_all {
            Export::All
        } else {
            Export::MarkedOnly
        },
        base_path,
        ..DaemonPolicy::default()
    };
    let registry = Registry::daemon(policy)
        .map_err(|err| SmallResponse::misconfigured(&format!("GIT_PROJECT_ROOT: {err}")))?;
    let mut path = String::new();
    if !requested.as_bytes().starts_with(b"/") {
        path.push('/');
    }
    percent_encode_into(requested.as_bytes(), &mut path);
    Ok((registry, path))
}

/// Escape `%` and every byte that is not printable ASCII, so that [`http::route`]'s
/// percent-decoding gives back exactly `bytes`.
fn percent_encode_into(bytes: &[u8], out: &mut String) {
    for &byte in bytes {
        if byte == b'%' || !byte.is_ascii_graphic() {
            out.push_str(&format!("%{byte:02X}"));
        } else {
            out.push(char::from(byte));
        }
    }
}

/// The request headers [`http::route`] reads, from their CGI variables. A value that is not
/// a valid header value is left out (and the route refuses what it needed).
fn headers(cgi: &CgiEnvironment) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let pairs = [
        (header::CONTENT_TYPE, &cgi.content_type),
        (header::CONTENT_ENCODING, &cgi.content_encoding),
        (HeaderName::from_static("git-protocol"), &cgi.git_protocol),
        (header::ACCEPT, &cgi.accept),
        (HeaderName::from_static("last-event-id"), &cgi.last_event_id),
    ];
    for (name, value) in pairs {
        if let Some(value) = value
            .as_deref()
            .and_then(|value| HeaderValue::from_bytes(value.as_bytes()).ok())
        {
            headers.insert(name, value);
        }
    }
    headers
}

/// The largest request body for `service`: for upload-pack git's `GIT_HTTP_MAX_REQUEST_BUFFER`
/// (10 MiB unless set), for receive-pack the HTTP front-end's push limit.
fn request_limit(cgi: &CgiEnvironment, service: Service) -> u64 {
    let defaults = HttpOptions::default();
    match service {
        Service::ReceivePack => defaults.max_push_request,
        _ => match &cgi.max_request_buffer {
            None => defaults.max_fetch_request,
            Some(value) => parse_size(value).unwrap_or_else(|| {
                tracing::warn!(
                    value = %value.to_string_lossy(),
                    "invalid GIT_HTTP_MAX_REQUEST_BUFFER; using the default"
                );
                defaults.max_fetch_request
            }),
        },
    }
}

/// A size as git's configuration writes it: a number with an optional `k`, `m` or `g`.
fn parse_size(value: &OsStr) -> Option<u64> {
    let text = value.to_str()?.trim();
    let (digits, factor) = match text.chars().last()?.to_ascii_lowercase() {
        'k' => (&text[..text.len() - 1], 1 << 10),
        'm' => (&text[..text.len() - 1], 1 << 20),
        'g' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

/// Write the success headers, then run the session from standard input to `output`.
fn serve(
    prepared: Prepared,
    cgi: &CgiEnvironment,
    stdin: impl Read,
    output: &mut impl Write,
) -> std::io::Result<()> {
    let Prepared {
        service,
        session,
        git,
        encoding,
        limit,
        content_length,
    } = prepared;
    // The body is exactly CONTENT_LENGTH bytes; without it, it ends with standard input.
    let body: Box<dyn Read> = match content_length {
        Some(length) => Box::new(stdin.take(length)),
        None => Box::new(stdin),
    };
    // A fetch request is small: read and decoded whole before the answer starts, so one
    // that is too large once decompressed (a gzip bomb) is a `413`, not a session's `ERR`.
    // A push streams its pack into the session.
    let mut input = if git.kind == RequestKind::Rpc && git.service != Service::ReceivePack {
        match read_fetch_request(body, encoding, limit) {
            Ok(bytes) => http::request_body_reader(std::io::Cursor::new(bytes), Identity, limit),
            Err(response) => return response.write(output),
        }
    } else {
        http::request_body_reader(body, encoding, limit)
    };
    if git.kind == RequestKind::Advertisement {
        // Collected whole for its ETag (the digest of the body).
        let mut body = Vec::new();
        service.serve(session, &git, &mut input, &mut body);
        let tag = http::etag(&body);
        let not_modified = cgi
            .if_none_match
            .as_deref()
            .and_then(OsStr::to_str)
            .is_some_and(|value| http::if_none_match(value, &tag));
        if not_modified {
            output.write_all(b"Status: 304 Not Modified\r\n")?;
        } else {
            write!(
                output,
                "Status: 200 OK\r\nContent-Type: {}\r\n",
                git.response_content_type()
            )?;
        }
        write!(output, "ETag: {tag}\r\nVary: Git-Protocol\r\n")?;
        write_no_cache(output)?;
        output.write_all(b"\r\n")?;
        if !not_modified {
            output.write_all(&body)?;
        }
        return Ok(());
    }
    write!(
        output,
        "Status: 200 OK\r\nContent-Type: {}\r\n",
        git.response_content_type()
    )?;
    write_no_cache(output)?;
    output.write_all(b"\r\n")?;
    service.serve(session, &git, &mut input, output);
    Ok(())
}

/// A whole fetch request of at most `limit` bytes, before and after decompression, or the
/// response that refuses it.
fn read_fetch_request(
    body: impl Read,
    encoding: http::BodyEncoding,
    limit: u64,
) -> Result<http::Bytes, SmallResponse> {
    let refuse = |err: std::io::Error| {
        tracing::info!(%err, "request body not read");
        if err.kind() == std::io::ErrorKind::InvalidData {
            SmallResponse::from_route_error(&RouteError::TooLarge { limit })
        } else {
            SmallResponse::text(StatusCode::BAD_REQUEST, &err.to_string())
        }
    };
    let mut raw = Vec::new();
    http::request_body_reader(body, http::BodyEncoding::Identity, limit)
        .read_to_end(&mut raw)
        .map_err(refuse)?;
    http::decode_whole_body(raw.into(), encoding, limit).map_err(refuse)
}

/// A response without a session: a status, a short `text/plain` message and maybe a header.
struct SmallResponse {
    status: StatusCode,
    header: Option<(&'static str, String)>,
    message: String,
}

impl SmallResponse {
    fn text(status: StatusCode, message: &str) -> Self {
        SmallResponse {
            status,
            header: None,
            message: message.to_owned(),
        }
    }

    /// `500`: the web server did not give what a CGI program needs. The details go to the
    /// log, not to the client.
    fn misconfigured(problem: &str) -> Self {
        tracing::error!("{problem}");
        SmallResponse::text(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    }

    fn from_route_error(err: &RouteError) -> Self {
        let mut response = SmallResponse::text(err.status(), &err.to_string());
        if let RouteError::MethodNotAllowed { allow } = err {
            // HEAD is served as GET.
            let allow = if *allow == "GET" { "GET, HEAD" } else { allow };
            response.header = Some(("Allow", allow.to_owned()));
        }
        response
    }

    fn from_refusal(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NotFound => SmallResponse::text(StatusCode::NOT_FOUND, "Repository not found"),
            Refusal::Forbidden(message) => SmallResponse::text(StatusCode::FORBIDDEN, &message),
            Refusal::Unauthorized { realm } => SmallResponse {
                header: Some(("WWW-Authenticate", basic_challenge(&realm))),
                ..SmallResponse::text(StatusCode::UNAUTHORIZED, "Authentication required")
            },
        }
    }

    fn from_watch_refusal(refusal: WatchRefusal) -> Self {
        match refusal {
            WatchRefusal::NotServed => SmallResponse::text(StatusCode::NOT_FOUND, "not found"),
            WatchRefusal::BadRequest(message) => {
                SmallResponse::text(StatusCode::BAD_REQUEST, &message)
            }
            WatchRefusal::Forbidden(message) => {
                SmallResponse::text(StatusCode::FORBIDDEN, &message)
            }
            WatchRefusal::Failed(message) => SmallResponse::misconfigured(&message),
        }
    }

    fn write(&self, output: &mut impl Write) -> std::io::Result<()> {
        write!(
            output,
            "Status: {} {}\r\nContent-Type: text/plain; charset=utf-8\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or("")
        )?;
        if let Some((name, value)) = &self.header {
            write!(output, "{name}: {value}\r\n")?;
        }
        write_no_cache(output)?;
        write!(output, "\r\n{}\n", self.message)
    }
}

/// The caching headers git's http-backend sends with every response.
fn write_no_cache(output: &mut impl Write) -> std::io::Result<()> {
    output.write_all(
        b"Expires: Fri, 01 Jan 1980 00:00:00 GMT\r\n\
          Pragma: no-cache\r\n\
          Cache-Control: no-cache, max-age=0, must-revalidate\r\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_survive_route_decoding() {
        let mut path = String::new();
        percent_encode_into(b"/a b/%41/\xff.git", &mut path);
        assert_eq!(path, "/a%20b/%2541/%FF.git");
    }

    #[test]
    fn sizes() {
        let check = |text: &str, expected: Option<u64>| {
            assert_eq!(parse_size(OsStr::new(text)), expected, "{text}");
        };
        check("100", Some(100));
        check("2k", Some(2048));
        check("10M", Some(10 << 20));
        check("1g", Some(1 << 30));
        check("", None);
        check("m", None);
        check("-1", None);
        check("99999999999g", None);
    }
}
