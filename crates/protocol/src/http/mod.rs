//! The smart HTTP service: what runs once the front-end in `packgate-transport` has routed
//! a request (`GET <repo>/info/refs?service=…` or `POST <repo>/git-…-pack`).
//!
//! * upload-pack: `GET info/refs` with `Git-Protocol: version=2` gets the v2 capability
//!   advertisement — without the `# service=` header, as from git's http-backend — and each
//!   `POST` is one stateless v2 request. Any other client gets v0 (v1 on request): the
//!   `# service=git-upload-pack` header, the reference advertisement, then one stateless
//!   round of wants and haves per `POST`.
//! * receive-pack speaks v0 (v1 on request): `# service=git-receive-pack`, the ref
//!   advertisement, then one stateless push per `POST`. Who may push is the operator's
//!   [`PushAccess`]: nobody (the default, `403 Forbidden`), authenticated users
//!   ([`PushAccess::Authenticated`]: HTTP Basic credentials checked by an
//!   [`Authenticator`] such as transport's `CredentialsFile`, or a user the front-end
//!   authenticated itself, [`GitRequest::remote_user`]), only users the front-end
//!   authenticated ([`PushAccess::RemoteUser`], git http-backend's rule behind a web
//!   server), or anyone
//!   ([`PushAccess::AllowedWithoutAuthentication`]). A push without acceptable credentials
//!   gets `401 Unauthorized` with a Basic challenge — on the advertisement already, so git
//!   asks for credentials before it sends a pack. A repository can refuse pushes itself with
//!   `http.receivepack=false` (`403`, whoever asks) and fetches with `http.uploadpack=false`.
//!   Under [`PushAccess::RemoteUser`] (git http-backend's rules) `http.receivepack=true`
//!   opens the repository to anonymous pushes, as in git; under the other kinds of access
//!   a repository can close what the operator opened, not the reverse.
//! * Fetches need no credentials; any sent are ignored.
//! * In-process [`Hook`]s added with [`HttpService::with_hook`] judge every push over HTTP,
//!   before the repository's hook scripts (a pre-receive policy of an embedding application).
//!
//! Repositories are found with the [`Registry`]; a path it refuses, or where no repository
//! is, is `404 Not Found` with a fixed message, so the response says nothing about the
//! server's files.

use std::{
    io::{Read, Write},
    sync::Arc,
};

use bstr::ByteSlice;
use packgate_hooks::Hook;
use packgate_wire::{
    pkt_line::PacketWriter,
    service::{
        http::{
            GitRequest, RefsQuery, RefsWatcher, Refusal, RequestKind, SmartHttpHandler,
            WatchRefusal,
        },
        Service,
    },
};

/// Checks a user's password; defined with the other front-end contracts in `packgate-wire`.
pub use packgate_wire::service::http::Authenticator;

/// Who may read and push which repositories; see [`HttpService::with_access`].
pub use packgate_wire::service::access::AccessPolicy;

use crate::{
    receive_pack::{MessageSink, ProtocolVersion, ReceivePack, ReceivePackOptions},
    registry::Registry,
    repository::Repository,
    upload_pack::{ServeError, SessionOptions, UploadPack, V0Options},
};

mod refs;

/// What a push is told when the server serves none over HTTP.
const PUSH_DISABLED: &str = "push over HTTP is disabled on this server";

/// The realm of the Basic challenge unless [`HttpService::with_realm`] says otherwise.
pub const DEFAULT_REALM: &str = "packgate";

/// Who may push over HTTP. Whatever it says, a repository with `http.receivepack=false`
/// refuses pushes.
#[derive(Clone, Default)]
pub enum PushAccess {
    /// receive-pack is refused with `403 Forbidden`.
    #[default]
    Refused,
    /// Anyone who can reach the server may push to every repository it serves. Only for
    /// trusted networks, or behind a proxy that authenticates.
    AllowedWithoutAuthentication,
    /// Authenticated users only: the user the front-end vouches for
    /// ([`GitRequest::remote_user`]) if there is one, else the user of the request's Basic
    /// credentials if the authenticator accepts them. Anyone else gets `401 Unauthorized`.
    Authenticated(Arc<dyn Authenticator>),
    /// git http-backend's rule behind a web server: users the front-end authenticated
    /// itself ([`GitRequest::remote_user`]) may push, and so may anyone to a repository that
    /// sets `http.receivepack=true` (authentication is the web server's business; the
    /// repository's explicit setting says it has none to do). Anyone else gets
    /// `403 Forbidden`, since asking them for credentials is the web server's business too.
    RemoteUser,
}

impl std::fmt::Debug for PushAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PushAccess::Refused => "Refused",
            PushAccess::AllowedWithoutAuthentication => "AllowedWithoutAuthentication",
            PushAccess::Authenticated(_) => "Authenticated(..)",
            PushAccess::RemoteUser => "RemoteUser",
        })
    }
}

impl PushAccess {
    /// [`PushAccess::Authenticated`] with `authenticator`.
    pub fn authenticated(authenticator: impl Authenticator + 'static) -> Self {
        PushAccess::Authenticated(Arc::new(authenticator))
    }
}

/// Serves smart HTTP for the repositories of a [`Registry`].
pub struct HttpService {
    registry: Registry,
    push: PushAccess,
    realm: String,
    hooks: Vec<Arc<dyn Hook>>,
    hook_scripts: bool,
    namespace: Option<crate::refname::Namespace>,
    pack_cache: Option<crate::pack_cache::PackCache>,
    budget: crate::budget::Budget,
    upstreams: crate::upstream::Upstreams,
    refs_wait_cap: Option<u64>,
    access: Arc<AccessPolicy>,
}

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpService")
            .field("registry", &self.registry)
            .field("push", &self.push)
            .field("realm", &self.realm)
            .field("hooks", &self.hooks.len())
            .field("hook_scripts", &self.hook_scripts)
            .field("namespace", &self.namespace)
            .field("pack_cache", &self.pack_cache)
            .field("upstreams", &self.upstreams)
            .field("access", &self.access)
            .finish()
    }
}

impl HttpService {
    /// Serve the repositories of `registry`; pushes as `push` says, with the repositories'
    /// hook scripts and no in-process hooks.
    pub fn new(registry: Registry, push: PushAccess) -> Self {
        HttpService {
            registry,
            push,
            realm: DEFAULT_REALM.to_owned(),
            hooks: Vec::new(),
            hook_scripts: true,
            namespace: None,
            pack_cache: None,
            budget: crate::budget::Budget::global(),
            upstreams: crate::upstream::Upstreams::default(),
            refs_wait_cap: None,
            access: Arc::new(AccessPolicy::default()),
        }
    }

    /// Answer `GET <repo>/refs` waiting at most `seconds` (beyond the repository's
    /// `packgate.waitRefsMaxTimeout`): a CGI front-end, which holds a process per request,
    /// passes 0 and answers at once. `None`, the default, leaves the repository's maximum.
    pub fn with_refs_wait_cap(mut self, seconds: Option<u64>) -> Self {
        self.refs_wait_cap = seconds;
        self
    }

    /// Decide who may fetch and push which repository with `policy`, as the SSH front-end
    /// does for its users. Under a policy with rules every request needs an authenticated
    /// user — the front-end's ([`GitRequest::remote_user`]) or one whose Basic credentials
    /// the [`PushAccess::Authenticated`] authenticator accepts (`401` with a challenge
    /// otherwise, so git asks for them; `403` without an authenticator) — and a user the
    /// policy refuses gets `403` with the same words as over SSH. Pushes still need the
    /// [`PushAccess`] to allow them first. The default policy has no rules: fetches need no
    /// credentials.
    pub fn with_access(mut self, policy: Arc<AccessPolicy>) -> Self {
        self.access = policy;
        self
    }

    /// Gate and mirror with `upstreams`: pushes to a repository with an upstream are
    /// forwarded (see [`crate::receive_pack::gate`]), and a repository with
    /// `packgate.refreshOnFetch` is refreshed on a fetch's `GET …/info/refs` (once per fetch:
    /// never on its POSTs; see [`crate::upstream`]).
    pub fn with_upstreams(mut self, upstreams: crate::upstream::Upstreams) -> Self {
        self.upstreams = upstreams;
        self
    }

    /// Take the CPU slots and memory of pack generation and push ingestion from `budget`
    /// (by default the process's [`Budget::global()`](crate::budget::Budget::global));
    /// clients are told apart by user, else by address.
    pub fn with_budget(mut self, budget: crate::budget::Budget) -> Self {
        self.budget = budget;
        self
    }

    /// Serve only the refs of `namespace` of every repository (git's `GIT_NAMESPACE`, see
    /// [`Repository::with_namespace`]).
    pub fn with_namespace(mut self, namespace: Option<crate::refname::Namespace>) -> Self {
        self.namespace = namespace;
        self
    }

    /// Share packs between the fetches of this service through `cache` (see
    /// [`crate::pack_cache`]); `None`, the default, generates every pack alone.
    pub fn with_pack_cache(mut self, cache: Option<crate::pack_cache::PackCache>) -> Self {
        self.pack_cache = cache;
        self
    }

    /// The realm named in the `401` challenge (git's credential helpers do not use it;
    /// browsers and some clients show it). [`DEFAULT_REALM`] unless set.
    pub fn with_realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// Add an in-process hook that judges every push over HTTP (see
    /// [`ReceivePack::with_hook`]): hooks run in the order added, before the repository's
    /// hook scripts, and what they write reaches the client as `remote: …` lines.
    pub fn with_hook(mut self, hook: impl Hook + 'static) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Whether pushes run the repositories' hook scripts (`hooks/pre-receive`, …); on by
    /// default.
    pub fn with_hook_scripts(mut self, run: bool) -> Self {
        self.hook_scripts = run;
        self
    }

    /// The authenticated user of a request under an access policy: the front-end's, else
    /// the one whose Basic credentials the authenticator accepts.
    fn authenticate(&self, request: &GitRequest) -> Result<String, Refusal> {
        if let Some(user) = request.remote_user.clone().filter(|user| !user.is_empty()) {
            return Ok(user);
        }
        let PushAccess::Authenticated(authenticator) = &self.push else {
            tracing::info!("refused: the access policy needs a user, and none can log in");
            return Err(Refusal::Forbidden(
                "this server's access policy needs an authenticated user".into(),
            ));
        };
        let unauthorized = Refusal::Unauthorized {
            realm: self.realm.clone(),
        };
        let Some(credentials) = &request.credentials else {
            tracing::info!("the access policy needs credentials; asking for them");
            return Err(unauthorized);
        };
        authenticator
            .authenticate(credentials.user(), credentials.password())
            .ok_or_else(|| {
                tracing::info!("refused: authentication failed");
                unauthorized
            })
    }

    /// Who may push, or the refusal: `Ok(None)` when anyone may and nobody is known.
    /// `repository_enabled` is the repository's `http.receivepack=true`, set explicitly.
    fn authorize_push(
        &self,
        request: &GitRequest,
        repository_enabled: bool,
    ) -> Result<Option<String>, Refusal> {
        let remote_user = request.remote_user.clone().filter(|user| !user.is_empty());
        match &self.push {
            PushAccess::Refused => Err(Refusal::Forbidden(PUSH_DISABLED.into())),
            PushAccess::AllowedWithoutAuthentication => Ok(remote_user),
            PushAccess::RemoteUser => match remote_user {
                Some(user) => Ok(Some(user)),
                // As git's http-backend: the repository's explicit switch enables pushes
                // whoever asks.
                None if repository_enabled => {
                    tracing::info!("anonymous push: the repository sets http.receivepack=true");
                    Ok(None)
                }
                None => {
                    tracing::info!("push refused: no authenticated user");
                    Err(Refusal::Forbidden(format!(
                        "service not enabled: {}",
                        request.service.as_str()
                    )))
                }
            },
            PushAccess::Authenticated(authenticator) => {
                if let Some(user) = remote_user {
                    return Ok(Some(user));
                }
                let unauthorized = Refusal::Unauthorized {
                    realm: self.realm.clone(),
                };
                let Some(credentials) = &request.credentials else {
                    tracing::info!("push needs credentials; asking for them");
                    return Err(unauthorized);
                };
                match authenticator.authenticate(credentials.user(), credentials.password()) {
                    Some(user) => Ok(Some(user)),
                    None => {
                        // Neither the password nor the claimed name is logged.
                        tracing::info!("push refused: authentication failed");
                        Err(unauthorized)
                    }
                }
            }
        }
    }
}

/// A request [`HttpService`] decided to serve: the repository, and who pushes.
#[derive(Debug)]
pub struct HttpSession {
    repo: Repository,
    user: Option<String>,
}

impl HttpSession {
    /// The repository.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The authenticated user, if there is one (pushes, and every request under an access
    /// policy).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

impl SmartHttpHandler for HttpService {
    type Session = HttpSession;

    fn open(&self, request: &GitRequest) -> Result<HttpSession, Refusal> {
        let repo = match self.registry.open(&request.repository, None) {
            // The service's namespace, else the registry's for this repository.
            Ok(repo) => match &self.namespace {
                Some(namespace) => repo.with_namespace(Some(namespace.clone())),
                None => repo,
            },
            Err(err) => {
                tracing::info!(%err, "not found");
                return Err(Refusal::NotFound);
            }
        };
        let key = match request.service {
            Service::UploadPack => "http.uploadpack",
            Service::ReceivePack => {
                if matches!(self.push, PushAccess::Refused) {
                    tracing::info!("push refused: not enabled over HTTP");
                    return Err(Refusal::Forbidden(PUSH_DISABLED.into()));
                }
                "http.receivepack"
            }
            Service::UploadArchive => {
                return Err(Refusal::Forbidden(format!(
                    "service not enabled: {}",
                    request.service.as_str()
                )))
            }
        };
        let explicit = match repo.config().boolean(key) {
            Ok(explicit) => explicit,
            Err(err) => {
                tracing::warn!(%err, key, "invalid boolean; service disabled");
                Some(false)
            }
        };
        if explicit == Some(false) {
            tracing::info!(key, "service disabled by the repository");
            return Err(Refusal::Forbidden(format!(
                "service not enabled: {}",
                request.service.as_str()
            )));
        }
        // Authentication last: a push the repository refuses anyway costs no password check.
        let write = request.service == Service::ReceivePack;
        let user = match request.service {
            Service::ReceivePack => self.authorize_push(request, explicit == Some(true))?,
            _ => None,
        };
        let user = if self.access.is_open() {
            user
        } else {
            let user = match user {
                Some(user) => user,
                None => self.authenticate(request)?,
            };
            if !self.access.allows(&user, &request.repository, write) {
                let message = AccessPolicy::refusal(&user, &request.repository, write);
                tracing::info!("refused: {message}");
                return Err(Refusal::Forbidden(message));
            }
            Some(user)
        };
        if let Some(user) = &user {
            tracing::info!(user, "authenticated");
        }
        Ok(HttpSession { repo, user })
    }

    fn serve(
        &self,
        session: HttpSession,
        request: &GitRequest,
        input: &mut dyn Read,
        output: &mut dyn Write,
    ) {
        let repo = &session.repo;
        let result = match request.service {
            Service::UploadPack => {
                if request.kind == RequestKind::Advertisement {
                    self.upstreams.refresh_before_fetch(repo);
                }
                let client = budget_client(session.user(), request);
                upload_pack(
                    repo,
                    self.pack_cache.clone(),
                    request,
                    (&self.budget, &client),
                    input,
                    output,
                )
            }
            Service::ReceivePack => self.receive_pack(repo, session.user(), request, input, output),
            Service::UploadArchive => Ok(()),
        };
        match result {
            Ok(()) => {}
            Err(err) if err.is_disconnect() => tracing::debug!(%err, "client went away"),
            Err(err) => tracing::info!(
                %err,
                repository = %request.repository.as_bstr(),
                "session ended with an error"
            ),
        }
    }
    fn watch_refs(
        &self,
        session: HttpSession,
        _request: &GitRequest,
        query: &RefsQuery,
    ) -> Result<Box<dyn RefsWatcher>, WatchRefusal> {
        refs::watch(session.repo, query, self.refs_wait_cap)
    }
}

/// Who a request is from, for the budget's turns: the user, else the address.
fn budget_client(user: Option<&str>, request: &GitRequest) -> String {
    match (user, request.remote_address.as_deref()) {
        (Some(user), _) => format!("user {user}"),
        (None, Some(address)) => address.to_owned(),
        (None, None) => "unknown".to_owned(),
    }
}

fn upload_pack(
    repo: &Repository,
    pack_cache: Option<crate::pack_cache::PackCache>,
    request: &GitRequest,
    (budget, client): (&crate::budget::Budget, &str),
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<(), ServeError> {
    let mut out = PacketWriter::new(output);
    let version_2 = request.wants_version_2();
    let advertisement = request.kind == RequestKind::Advertisement;
    if !version_2 && advertisement {
        service_header(&mut out, request.service)?;
    }
    let upload_pack = match UploadPack::new(repo) {
        Ok(upload_pack) => upload_pack
            .with_pack_cache(pack_cache)
            .with_budget(budget.clone(), client),
        Err(err) => {
            let message = format!("upload-pack: {err}");
            out.error(&message)?;
            out.get_mut().flush()?;
            return Err(ServeError::Failed(message));
        }
    };
    if !version_2 {
        // As git's http-backend: v0 (v1 on request) for a client that did not ask for v2;
        // each POST is one stateless round.
        let options = V0Options {
            stateless: true,
            advertise_only: advertisement,
            version: if request.wants_version_1() {
                ProtocolVersion::V1
            } else {
                ProtocolVersion::V0
            },
        };
        return upload_pack.serve_v0(input, out.into_inner(), &options);
    }
    let options = SessionOptions {
        stateless: true,
        advertise_only: request.kind == RequestKind::Advertisement,
        ..SessionOptions::default()
    };
    upload_pack.serve(input, out.into_inner(), &options)
}

impl HttpService {
    fn receive_pack(
        &self,
        repo: &Repository,
        user: Option<&str>,
        request: &GitRequest,
        input: &mut dyn Read,
        output: &mut dyn Write,
    ) -> Result<(), ServeError> {
        let mut out = PacketWriter::new(output);
        // Push has no protocol v2: a client asking for it gets v0, as from git.
        let version = if request.wants_version_1() {
            ProtocolVersion::V1
        } else {
            ProtocolVersion::V0
        };
        let receive_pack = match ReceivePack::new(repo) {
            Ok(receive_pack) => self
                .hooks
                .iter()
                .fold(receive_pack, |receive_pack, hook| {
                    receive_pack.with_hook(Arc::clone(hook))
                })
                .with_hook_scripts(self.hook_scripts)
                .with_budget(self.budget.clone(), &budget_client(user, request))
                .with_upstreams(&self.upstreams)
                .with_remote_user(user.map(str::to_owned))
                .with_reflog_identity(
                    reflog_name(user),
                    reflog_email(user, request.remote_address.as_deref()),
                ),
            Err(err) => {
                let message = format!("receive-pack: {err}");
                if request.kind == RequestKind::Advertisement {
                    service_header(&mut out, request.service)?;
                }
                out.error(&message)?;
                out.get_mut().flush()?;
                return Err(ServeError::Failed(message));
            }
        };
        if request.kind == RequestKind::Advertisement {
            service_header(&mut out, request.service)?;
        }
        let options = ReceivePackOptions {
            stateless: true,
            advertise_only: request.kind == RequestKind::Advertisement,
            version,
            // Without sideband, messages go to the log: git http-backend's receive-pack
            // writes them to the web server's error log, never to the client.
            messages: MessageSink::Log,
            ..ReceivePackOptions::default()
        };
        receive_pack
            .serve(input, out.into_inner(), &options)
            .map(|_report| ())
    }
}

/// The `# service=<service>` packet and flush that open a v0/v1 advertisement over HTTP.
fn service_header<W: Write>(out: &mut PacketWriter<W>, service: Service) -> Result<(), ServeError> {
    out.write_text(format!("# service={}", service.as_str()))?;
    out.flush_pkt()?;
    Ok(())
}

/// The name of a push's reflog entries over HTTP, as git's http-backend sets it:
/// `GIT_COMMITTER_NAME` if the environment has it, else the user, else `anonymous`.
fn reflog_name(user: Option<&str>) -> bstr::BString {
    match std::env::var_os("GIT_COMMITTER_NAME").filter(|name| !name.is_empty()) {
        Some(name) => name.as_encoded_bytes().into(),
        None => user.unwrap_or("anonymous").into(),
    }
}

/// The email of a push's reflog entries over HTTP, as git's http-backend sets it:
/// `GIT_COMMITTER_EMAIL` if the environment has it, else `<user>@http.<client address>`.
fn reflog_email(user: Option<&str>, address: Option<&str>) -> bstr::BString {
    match std::env::var_os("GIT_COMMITTER_EMAIL").filter(|email| !email.is_empty()) {
        Some(email) => email.as_encoded_bytes().into(),
        None => format!(
            "{}@http.{}",
            user.unwrap_or("anonymous"),
            address.unwrap_or("(none)")
        )
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use packgate_wire::service::http::BasicCredentials;

    fn request(credentials: Option<(&str, &str)>, remote_user: Option<&str>) -> GitRequest {
        GitRequest {
            service: Service::ReceivePack,
            kind: RequestKind::Advertisement,
            repository: "/r.git".into(),
            git_protocol: None,
            credentials: credentials.map(|(user, password)| BasicCredentials::new(user, password)),
            remote_user: remote_user.map(str::to_owned),
            remote_address: None,
        }
    }

    fn check(push: PushAccess, request: GitRequest, expected: Result<Option<&str>, Refusal>) {
        check_with(push, request, false, expected);
    }

    fn check_with(
        push: PushAccess,
        request: GitRequest,
        repository_enabled: bool,
        expected: Result<Option<&str>, Refusal>,
    ) {
        let root = tempfile::tempdir().unwrap();
        let service = HttpService::new(Registry::new(root.path()).unwrap(), push.clone());
        let actual = service.authorize_push(&request, repository_enabled);
        assert_eq!(
            actual,
            expected.map(|user| user.map(str::to_owned)),
            "{push:?} {request:?} {repository_enabled}"
        );
    }

    #[test]
    fn who_may_push() {
        let unauthorized = || {
            Err(Refusal::Unauthorized {
                realm: DEFAULT_REALM.into(),
            })
        };
        let not_enabled = || {
            Err(Refusal::Forbidden(
                "service not enabled: git-receive-pack".into(),
            ))
        };
        let disabled = || Err(Refusal::Forbidden(PUSH_DISABLED.into()));
        let alice = PushAccess::authenticated(|user: &str, password: &str| {
            (user == "alice" && password == "secret").then(|| "Alice".to_owned())
        });

        check(PushAccess::Refused, request(None, None), disabled());
        check(
            PushAccess::Refused,
            request(Some(("alice", "secret")), Some("carol")),
            disabled(),
        );

        check(
            PushAccess::AllowedWithoutAuthentication,
            request(None, None),
            Ok(None),
        );
        check(
            PushAccess::AllowedWithoutAuthentication,
            request(None, Some("carol")),
            Ok(Some("carol")),
        );

        // As git http-backend: REMOTE_USER or nothing.
        check(
            PushAccess::RemoteUser,
            request(None, Some("carol")),
            Ok(Some("carol")),
        );
        check(
            PushAccess::RemoteUser,
            request(None, Some("")),
            not_enabled(),
        );
        check(
            PushAccess::RemoteUser,
            request(Some(("alice", "secret")), None),
            not_enabled(),
        );
        // ... unless the repository sets http.receivepack=true: then anyone.
        check_with(PushAccess::RemoteUser, request(None, None), true, Ok(None));
        check_with(
            PushAccess::RemoteUser,
            request(None, Some("carol")),
            true,
            Ok(Some("carol")),
        );
        // The repository's switch opens nothing under the other kinds of access.
        check_with(PushAccess::Refused, request(None, None), true, disabled());
        check_with(alice.clone(), request(None, None), true, unauthorized());

        check(alice.clone(), request(None, None), unauthorized());
        check(
            alice.clone(),
            request(Some(("alice", "wrong")), None),
            unauthorized(),
        );
        check(
            alice.clone(),
            request(Some(("bob", "secret")), None),
            unauthorized(),
        );
        // The authenticator names the user.
        check(
            alice.clone(),
            request(Some(("alice", "secret")), None),
            Ok(Some("Alice")),
        );
        // A user the front-end authenticated needs no credentials.
        check(
            alice.clone(),
            request(None, Some("carol")),
            Ok(Some("carol")),
        );
        check(
            alice,
            request(Some(("alice", "wrong")), Some("")),
            unauthorized(),
        );
    }
}
