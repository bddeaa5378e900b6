//! The contract of the smart HTTP front-end: a routed request, why a handler refuses one,
//! the handler itself, and the Basic credentials a request may carry.

use std::io::{Read, Write};

use bstr::BString;

use super::Service;

mod basic;

pub use basic::{basic_challenge, BasicCredentials};

/// Which of a service's two requests this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `GET <repo>/info/refs?service=<service>`: the advertisement.
    Advertisement,
    /// `POST <repo>/<service>`: one stateless request.
    Rpc,
    /// `GET <repo>/refs`: the refs watch (`docs/refs-watch.md`), opened as a fetch from the
    /// repository (`service` is upload-pack) and answered by
    /// [`SmartHttpHandler::watch_refs`].
    Refs,
}

/// A smart HTTP request, as routed: which service, which repository, which protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRequest {
    /// `git-upload-pack` or `git-receive-pack`.
    pub service: Service,
    /// Advertisement or request.
    pub kind: RequestKind,
    /// The repository path, percent-decoded, with its leading `/`: `/project.git`.
    pub repository: BString,
    /// The `Git-Protocol` header, e.g. `version=2`.
    pub git_protocol: Option<String>,
    /// The credentials the client sent (`Authorization: Basic`), not yet checked. Never log
    /// them; their `Debug` hides the password.
    pub credentials: Option<BasicCredentials>,
    /// A user the front-end has already authenticated, e.g. the web server's `REMOTE_USER`
    /// for a CGI front-end. The HTTP front-end's router leaves it `None` (no header can
    /// claim it); only a front-end that did the authentication itself may set it.
    pub remote_user: Option<String>,
    /// The client's network address (`REMOTE_ADDR` for a CGI front-end, the peer for the
    /// HTTP server), for the reflog identity of a push (`<user>@http.<address>`, as git's
    /// http-backend writes it).
    pub remote_address: Option<String>,
}

impl GitRequest {
    /// Whether the client asked for protocol version 2.
    pub fn wants_version_2(&self) -> bool {
        self.protocol_entries().any(|entry| entry == "version=2")
    }

    /// Whether the client asked for protocol version 1.
    pub fn wants_version_1(&self) -> bool {
        self.protocol_entries().any(|entry| entry == "version=1")
    }

    fn protocol_entries(&self) -> impl Iterator<Item = &str> {
        self.git_protocol.iter().flat_map(|value| value.split(':'))
    }

    /// The content type of a successful response.
    pub fn response_content_type(&self) -> String {
        let suffix = match self.kind {
            RequestKind::Advertisement => "advertisement",
            RequestKind::Rpc => "result",
            RequestKind::Refs => return "application/json".to_owned(),
        };
        format!("application/x-{}-{suffix}", self.service.as_str())
    }
}

/// Why a handler does not serve a request: the response is a short `text/plain` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `404 Not Found`: no such repository here, or not exported. The message is fixed, so
    /// nothing about the server's files leaks.
    NotFound,
    /// `403 Forbidden`: the repository exists but the service is not enabled, with a message
    /// for the user (git shows it as `remote: …`).
    Forbidden(String),
    /// `401 Unauthorized` with `WWW-Authenticate: Basic realm="<realm>"`: the request needs
    /// credentials, and came without (git then asks its credential helper and retries) or
    /// with ones that were not accepted (git then gives up: "Authentication failed").
    Unauthorized {
        /// The protection space the client's credentials belong to (shown by some clients).
        realm: String,
    },
}

/// What serves routed requests; implemented by the protocol layer. Both methods run on the
/// blocking pool.
pub trait SmartHttpHandler: Send + Sync + 'static {
    /// What [`open`](SmartHttpHandler::open) found, handed to
    /// [`serve`](SmartHttpHandler::serve): typically the opened repository.
    type Session: Send + 'static;

    /// Decide whether to serve `request`, before anything of the response is sent.
    fn open(&self, request: &GitRequest) -> Result<Self::Session, Refusal>;

    /// Answer `request` (status `200`, its content type): read the request body from
    /// `input` (empty for an advertisement) and write the response body to `output`.
    /// Errors are the handler's to report inside the response (`ERR`, sideband) and to log;
    /// the response ends when this returns.
    fn serve(
        &self,
        session: Self::Session,
        request: &GitRequest,
        input: &mut dyn Read,
        output: &mut dyn Write,
    );

    /// Start answering a `GET <repo>/refs` request ([`RequestKind::Refs`]) that
    /// [`open`](SmartHttpHandler::open) let through: a [`RefsWatcher`] the front-end asks
    /// for events until it ends. Runs on the blocking pool. By default the endpoint is not
    /// served (`404`).
    fn watch_refs(
        &self,
        session: Self::Session,
        request: &GitRequest,
        query: &RefsQuery,
    ) -> Result<Box<dyn RefsWatcher>, WatchRefusal> {
        let _ = (session, request, query);
        Err(WatchRefusal::NotServed)
    }
}

/// The query of a `GET <repo>/refs` request, as the front-end read it (the handler
/// validates the token and the wait against its limits).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RefsQuery {
    /// The token the client saw: `Last-Event-ID` if sent, else `since=`; not yet validated.
    pub since: Option<String>,
    /// The `prefix=` values, percent-decoded, in order; none means all refs.
    pub prefixes: Vec<BString>,
    /// `wait=`: how many seconds to wait for a change; `None` if not given.
    pub wait: Option<u64>,
    /// The client asked for Server-Sent Events (`Accept: text/event-stream`).
    pub event_stream: bool,
}

/// Why a `GET <repo>/refs` request is not answered with events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchRefusal {
    /// `404 Not Found`: the handler does not serve the endpoint.
    NotServed,
    /// `400 Bad Request`: a malformed token, a wait above the maximum, …
    BadRequest(String),
    /// `403 Forbidden`: the repository does not allow it.
    Forbidden(String),
    /// `500 Internal Server Error`; the message is logged, not sent.
    Failed(String),
}

/// What a refs watcher says when asked to look at the refs.
#[derive(Debug)]
pub enum RefsLook {
    /// The client has not seen the current state: send it. `id` is its token (the SSE
    /// event's `id:`), `data` its JSON text (one line).
    Event {
        /// The token of the state.
        id: String,
        /// The event as JSON.
        data: String,
    },
    /// Nothing new: look again when the wait's future resolves, or at its deadline.
    Wait(super::Wait),
    /// Nothing new and the time is up: a long-poll answers `data` (JSON); a stream ends.
    End(Option<String>),
    /// The refs could not be read (logged by the front-end): `500`, or the stream ends.
    Failed(String),
}

/// One `GET <repo>/refs` request being answered: the front-end asks it to [look](RefsWatcher::look)
/// (on the blocking pool) at first, after every [`RefsLook::Event`], and whenever a
/// [`RefsLook::Wait`] resolves or reaches its deadline. Dropping it ends the watch.
pub trait RefsWatcher: Send + 'static {
    /// Compare the refs with what the client saw.
    fn look(&mut self) -> RefsLook;
}

/// Checks a user's password: the pluggable half of a handler that requires authentication
/// (`packgate-protocol`'s `PushAccess::Authenticated`).
///
/// Called on tokio's blocking pool, once per request that needs it (an HTTP push makes two
/// or more), so it may be slow — a password hash is meant to be — but should remember what
/// it recently accepted if it is very slow. `packgate-transport`'s `CredentialsFile` is the
/// implementation the `packgate` binary uses; a closure `Fn(&str, &str) -> Option<String>`
/// is one too.
pub trait Authenticator: Send + Sync {
    /// The name of the user `user` authenticates as, if `password` is right for them
    /// (usually `user` itself); `None` refuses.
    fn authenticate(&self, user: &str, password: &str) -> Option<String>;
}

impl<F> Authenticator for F
where
    F: Fn(&str, &str) -> Option<String> + Send + Sync,
{
    fn authenticate(&self, user: &str, password: &str) -> Option<String> {
        self(user, password)
    }
}
