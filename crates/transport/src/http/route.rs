//! Routing: which smart HTTP request a method, path, query and headers make, sans-IO.

use bstr::ByteSlice;
use hyper::header::HeaderMap;

use super::{
    header, BasicCredentials, BodyEncoding, GitRequest, Method, RefsQuery, RequestKind, StatusCode,
};
use crate::daemon::Service;

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
        // As git's http-backend, HEAD is answered as GET (hyper leaves the body out).
        if method != Method::GET && method != Method::HEAD {
            return Err(RouteError::MethodNotAllowed { allow: "GET, HEAD" });
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
            remote_address: None,
        },
        encoding,
    ))
}

/// Route a `GET <repo>/refs` request (the refs watch, `docs/refs-watch.md`); sans-IO.
/// `None` if the path is not one (then [`route`] routes it). The request is opened as a
/// fetch from the repository: `service` upload-pack, kind [`RequestKind::Refs`]. Unknown
/// query parameters are ignored; a `wait` that is not a number is `400`.
pub fn route_refs(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Option<Result<(GitRequest, RefsQuery), RouteError>> {
    if path.ends_with("/info/refs") {
        return None;
    }
    let repository = path.strip_suffix("/refs")?;
    Some(route_refs_at(method, repository, query, headers))
}

fn route_refs_at(
    method: &Method,
    repository: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(GitRequest, RefsQuery), RouteError> {
    if method != Method::GET {
        return Err(RouteError::MethodNotAllowed { allow: "GET" });
    }
    let repository = percent_decode(repository)
        .ok_or_else(|| RouteError::BadRequest("malformed percent-encoding in the path".into()))?;
    if repository.iter().all(|b| *b == b'/') {
        return Err(RouteError::NotFound);
    }
    let mut refs = RefsQuery::default();
    let malformed = || RouteError::BadRequest("malformed percent-encoding in the query".into());
    for pair in query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).ok_or_else(malformed)?;
        match name {
            "since" => refs.since = Some(String::from_utf8_lossy(&value).into_owned()),
            "prefix" => refs.prefixes.push(value.into()),
            "wait" => {
                let seconds = std::str::from_utf8(&value)
                    .ok()
                    .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|text| text.parse::<u64>().ok())
                    .ok_or_else(|| {
                        RouteError::BadRequest(format!(
                            "wait must be a whole number of seconds, not '{}'",
                            value.as_bstr()
                        ))
                    })?;
                refs.wait = Some(seconds);
            }
            _ => {}
        }
    }
    if let Some(last) = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
    {
        refs.since = Some(last.to_owned());
    }
    refs.event_stream = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| {
            item.split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/event-stream"))
        });
    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    let credentials = match (authorization.next(), authorization.next()) {
        (Some(value), None) => BasicCredentials::from_authorization(value.as_bytes()),
        _ => None,
    };
    let git = GitRequest {
        service: Service::UploadPack,
        kind: RequestKind::Refs,
        repository: repository.into(),
        git_protocol: None,
        credentials,
        remote_user: None,
        remote_address: None,
    };
    Ok((git, refs))
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
#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

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
            Err(RouteError::MethodNotAllowed { allow: "GET, HEAD" }),
        );
        // HEAD is answered as GET, as by git's http-backend.
        assert_eq!(
            route(
                &Method::HEAD,
                "/r/info/refs",
                Some("service=git-upload-pack"),
                &HeaderMap::new()
            )
            .map(|(request, _)| request.kind),
            Ok(RequestKind::Advertisement)
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

    #[test]
    fn refs_watch_queries() {
        let refs = |method: Method, target: &str, pairs: &[(&'static str, &'static str)]| {
            let (path, query) = match target.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (target, None),
            };
            route_refs(&method, path, query, &headers(pairs))
        };
        assert_eq!(
            refs(Method::GET, "/r/info/refs?service=git-upload-pack", &[]),
            None
        );
        assert_eq!(refs(Method::GET, "/r/git-upload-pack", &[]), None);
        let (git, query) = refs(
            Method::GET,
            "/a%20b.git/refs?since=abc&prefix=refs%2Fheads%2F&prefix=refs/tags/&wait=30&x=1",
            &[("authorization", "Basic dTpw")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (git.service, git.kind, git.repository.as_slice()),
            (Service::UploadPack, RequestKind::Refs, &b"/a b.git"[..])
        );
        assert_eq!(git.credentials, Some(BasicCredentials::new("u", "p")));
        assert_eq!(
            query,
            RefsQuery {
                since: Some("abc".into()),
                prefixes: vec!["refs/heads/".into(), "refs/tags/".into()],
                wait: Some(30),
                event_stream: false,
            }
        );
        // Last-Event-ID wins over since=; the Accept header asks for events.
        let (_, query) = refs(
            Method::GET,
            "/r/refs?since=abc",
            &[
                ("last-event-id", "def"),
                ("accept", "text/html, text/event-stream;q=0.9"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (query.since.as_deref(), query.event_stream),
            (Some("def"), true)
        );
        for bad in [
            "/r/refs?wait=x",
            "/r/refs?wait=-1",
            "/r/refs?wait=",
            "/r/refs?wait=1e3",
        ] {
            assert!(
                matches!(
                    refs(Method::GET, bad, &[]),
                    Some(Err(RouteError::BadRequest(_)))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            refs(Method::POST, "/r/refs", &[]),
            Some(Err(RouteError::MethodNotAllowed { allow: "GET" }))
        );
        assert_eq!(
            refs(Method::GET, "/refs", &[]),
            Some(Err(RouteError::NotFound))
        );
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
