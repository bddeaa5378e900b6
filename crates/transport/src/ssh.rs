//! The SSH front-end: an SSH server (russh) that runs git's services for the users of an
//! OpenSSH `authorized_keys` file, and nothing else.
//!
//! * The host key is an ed25519 key kept in a file (OpenSSH's private key format, mode
//!   0600), generated on the first start ([`load_or_generate_host_key`]).
//! * Authentication is by public key only, against [`AuthorizedKeys`]: ed25519, ECDSA and RSA
//!   keys (RSA signatures with rsa-sha2-256/512; russh decides which algorithms it accepts).
//!   The comment of a key's line names its user. A line with options (`command=`, `from=`,
//!   `restrict`, …) is skipped with a warning: packgate does not apply them, and serving such
//!   a key with more than its options allow would be worse than not serving it.
//! * A session channel may run exactly one command: `git-upload-pack '<path>'`,
//!   `git-receive-pack '<path>'` or the same with `git ` instead of `git-`, quoted as git
//!   quotes it ([`parse_exec_command`]). Shells, ptys, subsystems, X11, agent and port
//!   forwarding are refused; the one environment variable taken from `env` requests is
//!   `GIT_PROTOCOL`, so protocol v2 works. Refusals are written to the channel's standard
//!   error in git-shell's words, with exit status 128.
//! * The path is what git's ssh transport sends (`/srv/x.git` for `ssh://host/srv/x.git`,
//!   `x.git` for `host:x.git`, `~/x.git`): all of them are taken below the root, as the
//!   git:// front-end takes `/x.git` ([`RequestHead::path`]); `~user/` is refused.
//! * The command is run by the [`ConnectionHandler`] the git:// front-end uses, on the
//!   blocking pool, with the channel's data as its input and output, and the exit status
//!   sent at the end.
//!
//! Limits: a connection is *waiting* (in [`crate::listener`]'s sense, with its caps per
//! address) until its first command; it must authenticate within
//! [`SshOptions::init_timeout`] and costs a task, no thread, until then. The connection ends
//! after [`SshOptions::idle_timeout`] without traffic. A v2 fetch session, as on git://,
//! reads each request without a thread and answers it on the blocking pool, so a client idle
//! between requests costs a task; v0 fetches and pushes run on the blocking pool from their
//! advertisement to their end (the client speaks once).

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::Duration,
};

use bstr::{BString, ByteSlice};
use russh::{
    keys::{
        ssh_key::{authorized_keys::AuthorizedKeys as KeysFile, LineEnding},
        Algorithm, PrivateKey, PublicKey,
    },
    server::{Auth, ChannelOpenHandle, Msg, Session as SshSession},
    Channel, ChannelId, ChannelMsg, MethodKind, MethodSet,
};
use std::future::Future as _;
use tokio::{io::AsyncWriteExt, net::TcpStream, sync::Notify};
use tracing::Instrument;

use packgate_wire::{
    pkt_line::PacketWriter,
    service::{
        daemon::{Addresses, CommandHandler, ConnectionHandler, Next, RequestHead, Session},
        Service,
    },
    v2,
};

use crate::{
    daemon::{end_of_input, parse_buffered, RequestRead},
    listener::{Admission, ConnectionLimits},
};

/// The access policy lives with the other front-end contracts, since HTTP applies it too.
pub use packgate_wire::service::access::{AccessPolicy, AccessRule};

/// The `tracing` target of the SSH front-end's events.
pub const LOG_TARGET: &str = "packgate::ssh";

/// The exit status of a refused or failed command, as git-shell's `die`.
const EXIT_REFUSED: u32 = 128;

/// Limits of the SSH front-end.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// How long a client may take from connecting to being authenticated.
    pub init_timeout: Duration,
    /// How long a connection may go without traffic.
    pub idle_timeout: Duration,
    /// The most connections running a command at once; more are refused.
    pub max_connections: usize,
    /// The most connections that have not run a command yet (see [`crate::listener`]).
    pub max_waiting_connections: usize,
    /// The same, from one client address.
    pub max_waiting_per_address: usize,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            init_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            max_connections: 256,
            max_waiting_connections: ConnectionLimits::DEFAULT_MAX_WAITING,
            max_waiting_per_address: ConnectionLimits::DEFAULT_MAX_WAITING_PER_ADDRESS,
        }
    }
}

/// Why the SSH front-end could not start.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The host key file could not be read or written.
    #[error("host key {path}: {source}")]
    HostKeyIo {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The host key file is not an OpenSSH private key packgate can use.
    #[error("host key {path}: {message}")]
    HostKey {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The authorized keys file could not be read.
    #[error("authorized keys {path}: {source}")]
    KeysIo {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// A line of the authorized keys file is not a public key.
    #[error("authorized keys {path}: {message}")]
    Keys {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

/// Read the host key from `path`, or generate an ed25519 key there (mode 0600) if the file
/// does not exist.
pub fn load_or_generate_host_key(path: &Path) -> Result<PrivateKey, SshError> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_openssh(text.as_bytes()).map_err(|err| SshError::HostKey {
            path: shown,
            message: err.to_string(),
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(|err| {
                SshError::HostKey {
                    path: shown.clone(),
                    message: err.to_string(),
                }
            })?;
            let text = key
                .to_openssh(LineEnding::LF)
                .map_err(|err| SshError::HostKey {
                    path: shown.clone(),
                    message: err.to_string(),
                })?;
            let io_error = |source| SshError::HostKeyIo {
                path: shown.clone(),
                source,
            };
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(io_error)?;
            }
            let mut file = {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io_error)?
            };
            file.write_all(text.as_bytes()).map_err(io_error)?;
            file.sync_all().map_err(io_error)?;
            let public = key
                .public_key()
                .to_openssh()
                .unwrap_or_else(|_| String::from("?"));
            tracing::info!(target: LOG_TARGET, "generated host key {shown}: {public}");
            Ok(key)
        }
        Err(source) => Err(SshError::HostKeyIo {
            path: shown,
            source,
        }),
    }
}

/// The fingerprint of `key` as OpenSSH shows it (`ssh-keygen -lf`, and `ssh` on a first
/// connection): `ED25519 key fingerprint is SHA256:…`.
pub fn fingerprint(key: &PrivateKey) -> String {
    let kind = match key.algorithm() {
        Algorithm::Ed25519 => "ED25519",
        Algorithm::Ecdsa { .. } => "ECDSA",
        Algorithm::Rsa { .. } => "RSA",
        _ => "?",
    };
    let fingerprint = key.fingerprint(russh::keys::HashAlg::Sha256);
    format!("{kind} key fingerprint is {fingerprint}")
}

/// The public keys that may log in, each with its user (the comment of its line).
#[derive(Debug, Clone, Default)]
pub struct AuthorizedKeys {
    keys: Vec<(russh::keys::ssh_key::public::KeyData, String)>,
}

impl AuthorizedKeys {
    /// Parse OpenSSH's `authorized_keys` format. Lines with options or without a comment are
    /// skipped with a warning.
    pub fn parse(text: &str, path: &str) -> Result<AuthorizedKeys, SshError> {
        let mut keys = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut entries = KeysFile::new(trimmed);
            let entry = match entries.next() {
                Some(Ok(entry)) => entry,
                Some(Err(err)) => {
                    return Err(SshError::Keys {
                        path: path.to_owned(),
                        message: format!("line {}: {err}", number + 1),
                    })
                }
                None => continue,
            };
            if !entry.config_opts().is_empty() {
                tracing::warn!(
                    target: LOG_TARGET,
                    "{path}: line {}: key options are not supported; key skipped",
                    number + 1
                );
                continue;
            }
            let user = entry.public_key().comment().as_str_lossy();
            let user = user.trim();
            if user.is_empty() || user.contains(char::is_whitespace) {
                tracing::warn!(
                    target: LOG_TARGET,
                    "{path}: line {}: the comment must name the user (one word); key skipped",
                    number + 1
                );
                continue;
            }
            keys.push((entry.public_key().key_data().clone(), user.to_owned()));
        }
        Ok(AuthorizedKeys { keys })
    }

    /// Read and parse the file at `path`.
    pub fn load(path: &Path) -> Result<AuthorizedKeys, SshError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SshError::KeysIo {
            path: shown.clone(),
            source,
        })?;
        AuthorizedKeys::parse(&text, &shown)
    }

    /// The user of `key`, if it may log in.
    pub fn user(&self, key: &PublicKey) -> Option<&str> {
        self.keys
            .iter()
            .find(|(data, _)| data == key.key_data())
            .map(|(_, user)| user.as_str())
    }

    /// How many keys may log in.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key may log in.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Why a command is not run, in git-shell's words (after `fatal: `).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Not one of git's services.
    #[error("unrecognized command '{0}'")]
    Unrecognized(String),
    /// The argument is not one quoted path.
    #[error("bad argument")]
    BadArgument,
    /// A path of another user's home (`~user/`).
    #[error("'{0}': paths of other users' home directories are not served")]
    OtherHome(String),
}

/// Parse an SSH `exec` command into the request it makes: `git-upload-pack '/x.git'` and
/// the like, as git's ssh transport sends it, with `git_protocol` (the `GIT_PROTOCOL` of the
/// session's `env` requests) as its extra parameters.
pub fn parse_exec_command(
    command: &[u8],
    git_protocol: Option<&str>,
) -> Result<RequestHead, CommandError> {
    let text = command.trim();
    let unrecognized = || CommandError::Unrecognized(text.to_str_lossy().into_owned());
    // "git foo" is taken as "git-foo", as git-shell does.
    let (service, argument) = if let Some(rest) = text.strip_prefix(b"git ") {
        let rest = rest.trim_start();
        let end = rest.find_byte(b' ').unwrap_or(rest.len());
        (
            [b"git-".as_slice(), &rest[..end]].concat(),
            rest[end..].trim_start(),
        )
    } else {
        let end = text.find_byte(b' ').unwrap_or(text.len());
        (text[..end].to_vec(), text[end..].trim_start())
    };
    let service = match service.as_slice() {
        b"git-upload-pack" => Service::UploadPack,
        b"git-receive-pack" => Service::ReceivePack,
        _ => return Err(unrecognized()),
    };
    let path = dequote(argument).ok_or(CommandError::BadArgument)?;
    let path = below_root(&path)?;
    Ok(RequestHead {
        service,
        path,
        host: None,
        extra_parameters: git_protocol
            .unwrap_or("")
            .split(':')
            .filter(|p| !p.is_empty())
            .map(BString::from)
            .collect(),
    })
}

/// One argument, either single-quoted as git's `sq_quote` writes it (`'a'\''b'`, with `\!`
/// between quoted parts too) or a plain word.
fn dequote(argument: &[u8]) -> Option<Vec<u8>> {
    if argument.is_empty() {
        return None;
    }
    if argument.first() != Some(&b'\'') {
        let plain = !argument
            .iter()
            .any(|b| b.is_ascii_whitespace() || b"'\"\\".contains(b));
        return plain.then(|| argument.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = argument;
    loop {
        // Inside quotes up to the closing one.
        let inner = rest.strip_prefix(b"'")?;
        let close = inner.find_byte(b'\'')?;
        out.extend_from_slice(&inner[..close]);
        rest = &inner[close + 1..];
        match rest {
            [] => return Some(out),
            [b'\\', escaped @ (b'\'' | b'!'), tail @ ..] => {
                out.push(*escaped);
                rest = tail;
                if rest.is_empty() {
                    return Some(out);
                }
            }
            _ => return None,
        }
    }
}

/// The path as the git:// front-end's handler takes it (`/x.git`, below the root).
fn below_root(path: &[u8]) -> Result<BString, CommandError> {
    let relative = if let Some(rest) = path.strip_prefix(b"~") {
        match rest.find_byte(b'/') {
            Some(0) => &rest[1..],
            None if rest.is_empty() => rest,
            _ => return Err(CommandError::OtherHome(path.to_str_lossy().into_owned())),
        }
    } else {
        path.strip_prefix(b"/").unwrap_or(path)
    };
    if relative.is_empty() {
        return Err(CommandError::BadArgument);
    }
    let mut out = BString::from("/");
    out.extend_from_slice(relative);
    Ok(out)
}

/// Accept SSH connections on `listener` until `shutdown` completes; run commands with
/// `handler` for the users of `keys`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handler: Arc<dyn ConnectionHandler>,
    keys: Arc<AuthorizedKeys>,
    policy: Arc<AccessPolicy>,
    host_key: PrivateKey,
    options: SshOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    let config = Arc::new(russh::server::Config {
        server_id: russh::SshId::Standard(
            format!("SSH-2.0-packgate_{}", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        keys: vec![host_key],
        inactivity_timeout: Some(options.idle_timeout),
        auth_rejection_time: Duration::from_millis(200),
        auth_rejection_time_initial: Some(Duration::ZERO),
        max_auth_attempts: 6,
        nodelay: true,
        ..Default::default()
    });
    let limits = ConnectionLimits {
        max_active: options.max_connections,
        max_waiting: options.max_waiting_connections,
        max_waiting_per_address: options.max_waiting_per_address,
    };
    let options = Arc::new(options);
    crate::listener::accept_loop(
        listener,
        limits,
        shutdown,
        move |stream, peer, admission| {
            let connection = Connection {
                handler: Arc::clone(&handler),
                keys: Arc::clone(&keys),
                policy: Arc::clone(&policy),
                options: Arc::clone(&options),
                admission,
                peer,
                local: stream.local_addr().unwrap_or(peer),
                user: None,
                authenticated: Arc::new(Notify::new()),
                channels: HashMap::new(),
                git_protocol: HashMap::new(),
            };
            let config = Arc::clone(&config);
            async move { run(stream, config, connection).await }
                .instrument(tracing::info_span!("ssh", %peer))
        },
    )
    .await
}

/// Run one connection: the SSH session, closed if it does not authenticate in time.
async fn run(
    stream: TcpStream,
    config: Arc<russh::server::Config>,
    connection: Connection,
) -> Result<(), russh::Error> {
    tracing::info!(target: LOG_TARGET, "Connection");
    // The handshake and authentication share one deadline.
    let deadline = tokio::time::Instant::now() + connection.options.init_timeout;
    let authenticated = Arc::clone(&connection.authenticated);
    // However this future ends (also when the listener drops it to make room), the socket
    // fails from then on, which ends the session russh runs in a task of its own.
    let (_kill, killed) = tokio::sync::oneshot::channel::<()>();
    let stream = Killable {
        inner: stream,
        kill: killed,
        killed: false,
    };
    let running = match tokio::time::timeout_at(
        deadline,
        russh::server::run_stream(config, stream, connection),
    )
    .await
    {
        Ok(running) => running?,
        Err(_) => {
            tracing::info!(target: LOG_TARGET, "no SSH handshake in time");
            return Ok(());
        }
    };
    tokio::pin!(running);
    let result = tokio::select! {
        result = &mut running => result,
        timed_out = tokio::time::timeout_at(deadline, authenticated.notified()) => {
            if timed_out.is_err() {
                tracing::info!(target: LOG_TARGET, "not authenticated in time");
                return Ok(());
            }
            running.await
        }
    };
    match &result {
        Ok(()) => tracing::info!(target: LOG_TARGET, "Disconnected"),
        Err(err) => tracing::info!(target: LOG_TARGET, "Disconnected (with error: {err})"),
    }
    result
}

/// A socket that fails every read and write once its `kill` sender is dropped.
struct Killable {
    inner: TcpStream,
    kill: tokio::sync::oneshot::Receiver<()>,
    killed: bool,
}

impl Killable {
    fn check(&mut self, cx: &mut std::task::Context<'_>) -> io::Result<()> {
        if !self.killed && std::pin::Pin::new(&mut self.kill).poll(cx).is_ready() {
            self.killed = true;
        }
        if self.killed {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed by the server",
            ));
        }
        Ok(())
    }
}

impl tokio::io::AsyncRead for Killable {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if let Err(err) = self.check(cx) {
            return std::task::Poll::Ready(Err(err));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Killable {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        if let Err(err) = self.check(cx) {
            return std::task::Poll::Ready(Err(err));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if let Err(err) = self.check(cx) {
            return std::task::Poll::Ready(Err(err));
        }
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The state of one SSH connection.
struct Connection {
    handler: Arc<dyn ConnectionHandler>,
    keys: Arc<AuthorizedKeys>,
    policy: Arc<AccessPolicy>,
    options: Arc<SshOptions>,
    admission: Arc<Admission>,
    peer: SocketAddr,
    local: SocketAddr,
    /// Set once authenticated.
    user: Option<String>,
    authenticated: Arc<Notify>,
    /// Session channels opened and not yet running a command.
    channels: HashMap<ChannelId, Channel<Msg>>,
    git_protocol: HashMap<ChannelId, String>,
}

impl Connection {
    /// Tell the client why its request is refused, on the channel's standard error, and end
    /// the channel with status 128.
    fn refuse(&mut self, channel: ChannelId, message: &str, session: &mut SshSession) {
        tracing::info!(target: LOG_TARGET, "refused: {message}");
        self.channels.remove(&channel);
        let _ = session.channel_success(channel);
        let _ = session.extended_data(channel, 1, format!("fatal: {message}\n").into_bytes());
        let _ = session.exit_status_request(channel, EXIT_REFUSED);
        let _ = session.eof(channel);
        let _ = session.close(channel);
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.keys.user(offer.public_key).is_some() {
            Ok(Auth::Accept)
        } else {
            tracing::info!(target: LOG_TARGET, "unknown key offered for {user:?}");
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.keys.user(key.public_key) {
            Some(user) => {
                tracing::info!(target: LOG_TARGET, "authenticated as {user}");
                self.user = Some(user.to_owned());
                Ok(Auth::Accept)
            }
            None => Ok(Auth::reject()),
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut SshSession) -> Result<(), Self::Error> {
        self.authenticated.notify_one();
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut SshSession,
    ) -> Result<(), Self::Error> {
        if self.channels.len() >= 4 {
            // Dropping the reply refuses the channel.
            return Ok(());
        }
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut SshSession,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        self.git_protocol.remove(&channel);
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut SshSession,
    ) -> Result<(), Self::Error> {
        if variable_name == "GIT_PROTOCOL" && self.channels.contains_key(&channel) {
            self.git_protocol.insert(channel, variable_value.to_owned());
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut SshSession,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut SshSession,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut SshSession,
    ) -> Result<(), Self::Error> {
        self.refuse(
            channel,
            &format!("subsystem '{name}' is not served"),
            session,
        );
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut SshSession,
    ) -> Result<(), Self::Error> {
        // As git-shell without git-shell-commands.
        self.refuse(channel, "Interactive git shell is not enabled.", session);
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut SshSession,
    ) -> Result<(), Self::Error> {
        let git_protocol = self.git_protocol.remove(&channel);
        let head = match parse_exec_command(data, git_protocol.as_deref()) {
            Ok(head) => head,
            Err(err) => {
                self.refuse(channel, &err.to_string(), session);
                return Ok(());
            }
        };
        let user = self.user.clone().unwrap_or_default();
        let write = head.service == Service::ReceivePack;
        if !self.policy.allows(&user, &head.path, write) {
            let message = AccessPolicy::refusal(&user, &head.path, write);
            self.refuse(channel, &message, session);
            return Ok(());
        }
        if !self.admission.activate() {
            self.refuse(channel, "too many connections; try again later", session);
            return Ok(());
        }
        let Some(open) = self.channels.remove(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        session.channel_success(channel)?;
        tracing::info!(
            target: LOG_TARGET,
            "{user}: {} '{}' ({})",
            head.service.as_str(),
            head.path,
            head.git_protocol()
        );
        let addresses = Addresses {
            peer: self.peer,
            local: self.local,
        };
        let handler = Arc::clone(&self.handler);
        let idle = self.options.idle_timeout;
        tokio::spawn(
            async move {
                if let Err(err) = run_command(open, head, user, handler, addresses, idle).await {
                    tracing::info!(target: LOG_TARGET, "command ended with an error: {err}");
                }
            }
            .in_current_span(),
        );
        Ok(())
    }
}

/// Run the command of `channel` with `handler`, then send its exit status and close.
async fn run_command(
    channel: Channel<Msg>,
    head: RequestHead,
    user: String,
    handler: Arc<dyn ConnectionHandler>,
    addresses: Addresses,
    idle: Duration,
) -> Result<(), russh::Error> {
    let (input, output) = channel.split();
    let runtime = tokio::runtime::Handle::current();
    let writer = ChannelOutput {
        writer: Box::pin(output.make_writer()),
        runtime: runtime.clone(),
        idle,
    };
    // Open (and for a v2 session advertise) on the blocking pool.
    let opened = tokio::task::spawn_blocking(move || {
        let mut writer = writer;
        let opened = match handler.open_as(&head, addresses, Some(&user)) {
            Session::Commands(mut handler) => {
                let advertised = blocking_write(&mut writer, |output| handler.advertise(output));
                Opened::Commands(handler, advertised.is_ok())
            }
            other => Opened::Other(other),
        };
        (opened, writer)
    })
    .await;
    let status = match opened {
        Err(_) => EXIT_REFUSED,
        Ok((Opened::Commands(handler, true), writer)) => {
            commands(input, writer, handler, idle).await
        }
        Ok((Opened::Commands(_, false), _)) => EXIT_REFUSED,
        Ok((Opened::Other(session), writer)) => tokio::task::spawn_blocking(move || {
            let mut input = ChannelInput {
                channel: input,
                runtime,
                chunk: bytes::Bytes::new(),
                idle,
                ended: false,
            };
            let mut output = io::BufWriter::with_capacity(64 * 1024, writer);
            let status = run_session(session, &mut input, &mut output);
            match output.flush() {
                Ok(()) => status,
                Err(_) => EXIT_REFUSED,
            }
        })
        .await
        .unwrap_or(EXIT_REFUSED),
    };
    output.exit_status(status).await?;
    output.eof().await?;
    output.close().await?;
    Ok(())
}

/// What opening a session decided: a v2 session (and whether its advertisement went out),
/// or one run on the blocking pool from start to end.
enum Opened {
    Commands(Box<dyn CommandHandler>, bool),
    Other(Session),
}

/// Run `work` over `writer` buffered, then flush; `work`'s result, or the flush's error.
fn blocking_write<T>(
    writer: &mut ChannelOutput,
    work: impl FnOnce(&mut dyn Write) -> io::Result<T>,
) -> io::Result<T> {
    let mut output = io::BufWriter::with_capacity(64 * 1024, writer);
    let value = work(&mut output)?;
    output.flush()?;
    Ok(value)
}

/// A protocol v2 session after its advertisement, as on git://: each request is read
/// without a thread (an idle client costs a task), then answered on the blocking pool. The
/// exit status.
async fn commands(
    mut input: russh::ChannelReadHalf,
    mut writer: ChannelOutput,
    mut handler: Box<dyn CommandHandler>,
    idle: Duration,
) -> u32 {
    let mut parser = v2::RequestParser::new(handler.limits());
    let mut buffer = Vec::new();
    loop {
        let request = match read_request(&mut input, &mut parser, &mut buffer, idle).await {
            Ok(Some(request)) => request,
            Ok(None) => return 0,
            Err(RequestRead::Io(err)) => {
                tracing::info!(target: LOG_TARGET, "{err}");
                return EXIT_REFUSED;
            }
            Err(RequestRead::Invalid(err)) => {
                tracing::info!(target: LOG_TARGET, %err, "bad request");
                let _ = tokio::task::spawn_blocking(move || {
                    blocking_write(&mut writer, |output| {
                        handler.reject(&err, output);
                        Ok(())
                    })
                })
                .await;
                return EXIT_REFUSED;
            }
        };
        let answered = tokio::task::spawn_blocking(move || {
            let next = blocking_write(&mut writer, |output| Ok(handler.handle(request, output)));
            (handler, writer, next)
        })
        .await;
        match answered {
            Ok((returned, returned_writer, Ok(next))) => {
                handler = returned;
                writer = returned_writer;
                if next == Next::Close {
                    return 0;
                }
            }
            Ok((_, _, Err(_))) | Err(_) => return EXIT_REFUSED,
        }
    }
}

/// The next v2 request from the channel (see the git:// front-end's): `Ok(None)` when the
/// client ends the session. Each wait for data may last `idle`.
async fn read_request(
    input: &mut russh::ChannelReadHalf,
    parser: &mut v2::RequestParser,
    buffer: &mut Vec<u8>,
    idle: Duration,
) -> Result<Option<v2::Request>, RequestRead> {
    loop {
        if let Some(outcome) = parse_buffered(parser, buffer) {
            return outcome;
        }
        let message = tokio::time::timeout(idle, input.wait())
            .await
            .map_err(|_| {
                RequestRead::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client idle too long",
                ))
            })?;
        match message {
            Some(ChannelMsg::Data { data }) => buffer.extend_from_slice(&data),
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                return end_of_input(parser, buffer)
            }
            Some(_) => {}
        }
    }
}

/// Run what `handler.open` decided over `input` and `output`; the exit status.
fn run_session(session: Session, input: &mut dyn Read, output: &mut dyn Write) -> u32 {
    match session {
        Session::Refused(message) => {
            // git prints it as "fatal: remote error: <message>".
            let mut out = PacketWriter::new(&mut *output);
            let _ = out.error(&message);
            EXIT_REFUSED
        }
        Session::Exchange(mut handler) => {
            if handler.advertise(output).is_err() || output.flush().is_err() {
                return EXIT_REFUSED;
            }
            handler.exchange(input, output);
            0
        }
        // `run_command` runs v2 sessions itself (`commands`), without a thread between
        // requests.
        Session::Commands(_) => EXIT_REFUSED,
    }
}

/// The channel's data as a blocking reader (for the blocking pool).
struct ChannelInput {
    channel: russh::ChannelReadHalf,
    runtime: tokio::runtime::Handle,
    chunk: bytes::Bytes,
    idle: Duration,
    /// The client sent EOF (or closed): every later read returns 0 at once.
    ended: bool,
}

impl Read for ChannelInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            if self.ended {
                return Ok(0);
            }
            let message = self
                .runtime
                .block_on(tokio::time::timeout(self.idle, self.channel.wait()))
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client idle too long"))?;
            match message {
                Some(ChannelMsg::Data { data }) => self.chunk = data,
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                    self.ended = true;
                    return Ok(0);
                }
                Some(_) => {}
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// The channel's data (or standard error) as a blocking writer.
struct ChannelOutput {
    writer: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    runtime: tokio::runtime::Handle,
    idle: Duration,
}

impl Write for ChannelOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.runtime
            .block_on(tokio::time::timeout(self.idle, self.writer.write(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client took no data"))?
    }

    fn flush(&mut self) -> io::Result<()> {
        self.runtime
            .block_on(tokio::time::timeout(self.idle, self.writer.flush()))
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client took no data"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(command: &str) -> Result<(Service, String), CommandError> {
        parse_exec_command(command.as_bytes(), None)
            .map(|head| (head.service, head.path.to_string()))
    }

    #[test]
    fn commands_as_git_sends_them() {
        assert_eq!(
            head("git-upload-pack '/srv/x.git'"),
            Ok((Service::UploadPack, "/srv/x.git".into()))
        );
        assert_eq!(
            head("git-receive-pack 'x.git'"),
            Ok((Service::ReceivePack, "/x.git".into()))
        );
        assert_eq!(
            head("git upload-pack '~/x.git'"),
            Ok((Service::UploadPack, "/x.git".into()))
        );
        assert_eq!(
            head("git-upload-pack 'it'\\''s.git'"),
            Ok((Service::UploadPack, "/it's.git".into()))
        );
        assert_eq!(
            head("git-upload-pack plain.git"),
            Ok((Service::UploadPack, "/plain.git".into()))
        );
        assert_eq!(
            head("ls -la"),
            Err(CommandError::Unrecognized("ls -la".into()))
        );
        assert_eq!(
            head("git-upload-archive 'x'"),
            Err(CommandError::Unrecognized("git-upload-archive 'x'".into()))
        );
        assert_eq!(
            head("git-upload-pack 'a' 'b'"),
            Err(CommandError::BadArgument)
        );
        assert_eq!(head("git-upload-pack 'a"), Err(CommandError::BadArgument));
        assert_eq!(
            head("git-upload-pack a;b c"),
            Err(CommandError::BadArgument)
        );
        assert_eq!(head("git-upload-pack"), Err(CommandError::BadArgument));
        assert_eq!(head("git-upload-pack '/'"), Err(CommandError::BadArgument));
        assert_eq!(
            head("git-upload-pack '~bob/x'"),
            Err(CommandError::OtherHome("~bob/x".into()))
        );
        let v2 = parse_exec_command(b"git-upload-pack '/x'", Some("version=2"));
        assert!(v2.is_ok_and(|head| head.wants_version_2()));
    }

    #[test]
    fn authorized_keys_name_users_and_skip_options() {
        let text = "\
# comment
ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice
command=\"ls\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHu9kHvOVXsGqVN/6ZcAzOqo2jZJxQDZIHZ0nBUfDnUk bob
ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHu9kHvOVXsGqVN/6ZcAzOqo2jZJxQDZIHZ0nBUfDnUk
";
        let keys = AuthorizedKeys::parse(text, "keys").unwrap();
        assert_eq!(keys.len(), 1);
        assert!(AuthorizedKeys::parse("ssh-ed25519 !!! x\n", "keys").is_err());
    }
}
