//! `packgate serve`: both network front-ends (git:// and smart HTTP) in one process.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use crate::config::{ConfigFile, Listen};
use anyhow::Context;
use clap::Args;
use packgate::{
    protocol::{
        daemon::{DaemonConfig, DaemonService, ErrorDetail},
        http::{HttpService, PushAccess},
        refname::Namespace,
        registry::{Namespaces, Registry},
        upstream::{Refresher, Upstreams},
    },
    transport::{
        credentials::CredentialsFile,
        daemon::{self, DaemonOptions},
        http::{self, tls, HttpOptions},
        ssh::{self, AccessPolicy, AuthorizedKeys, SshOptions},
    },
};

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// The directory of repositories to serve; created if missing [default: ./repos].
    root: Option<PathBuf>,
    /// A TOML file with these settings and more (timeouts, connection caps, body limits,
    /// push over git://); a flag wins over the file. See README.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the git:// front-end listens, or `off` [default: 127.0.0.1:9418].
    #[arg(long = "git", value_name = "ADDR|off")]
    git: Option<Listen>,
    /// Where the smart HTTP front-end listens, or `off` (fetch with protocols v0-v2; push only
    /// with --http-credentials or --http-allow-push-without-auth) [default: 127.0.0.1:8080].
    #[arg(long = "http", value_name = "ADDR|off")]
    http: Option<Listen>,
    /// Accept pushes over HTTP from the users of FILE (HTTP Basic authentication): one
    /// `user:hash` per line, bcrypt (`htpasswd -B`) or argon2; see `packgate passwd`. Use
    /// with --tls-cert/--tls-key unless the network is trusted: Basic sends the password.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "http_allow_push_without_auth"
    )]
    http_credentials: Option<PathBuf>,
    /// DANGEROUS: accept pushes over HTTP from anyone who can reach --http, to every
    /// repository served, without authentication. Only for trusted networks or behind a
    /// proxy that authenticates.
    #[arg(long)]
    http_allow_push_without_auth: bool,
    /// Serve HTTPS instead of HTTP with this PEM certificate chain (leaf first); needs
    /// --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where the SSH front-end listens, or `off` (the default): git's services for the
    /// users of --ssh-authorized-keys, who may fetch and push.
    #[arg(long = "ssh", value_name = "ADDR|off")]
    ssh: Option<Listen>,
    /// The OpenSSH `authorized_keys` file of the SSH front-end: one key a line, its comment
    /// naming the user; lines with options are skipped.
    #[arg(long, value_name = "FILE")]
    ssh_authorized_keys: Option<PathBuf>,
    /// The SSH host key (OpenSSH format), generated (ed25519, mode 0600) if missing; serve
    /// prints its fingerprint at start [default: ROOT/.packgate/ssh_host_ed25519_key].
    #[arg(long, value_name = "FILE")]
    ssh_host_key: Option<PathBuf>,
    /// Tell refused clients why, instead of only "access denied or repository not exported".
    #[arg(long)]
    informative_errors: bool,
    #[command(flatten)]
    budget: crate::budget::BudgetArgs,
}

/// What `serve` runs with: the flags, then the configuration file, then the defaults.
#[derive(Debug)]
struct Settings {
    root: PathBuf,
    git: Option<SocketAddr>,
    http: Option<SocketAddr>,
    credentials: Option<PathBuf>,
    allow_push_without_auth: bool,
    tls: Option<(PathBuf, PathBuf)>,
    daemon: DaemonConfig,
    daemon_options: DaemonOptions,
    http_options: HttpOptions,
    /// The SSH front-end: where, whose keys, the host key, its limits.
    ssh: Option<SocketAddr>,
    ssh_authorized_keys: Option<PathBuf>,
    ssh_host_key: PathBuf,
    ssh_options: SshOptions,
    ssh_policy: AccessPolicy,
    /// The namespace of every repository, then per repository path below the root.
    namespace: Option<Namespace>,
    repository_namespaces: Vec<(String, Option<Namespace>)>,
    /// `[pack-cache]`: shared by both front-ends.
    pack_cache: crate::config::PackCacheSection,
    /// Shared by both front-ends.
    budget: packgate::protocol::budget::Budget,
    /// `[maintenance]`: after pushes, and every `maintenance_interval`.
    auto_maintenance: bool,
    maintenance_interval: Option<std::time::Duration>,
    /// The gate: every repository's upstream below `upstream`, single repositories' own.
    upstream: Option<String>,
    repository_upstreams: Vec<(String, String)>,
    refresh_timeout: Duration,
    /// `[[mirror]]`.
    mirrors: Vec<crate::config::MirrorSection>,
}

impl Settings {
    fn new(args: ServeArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::default(),
        };
        // Paths in the file are relative to the file.
        let base = args
            .config
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_owned)
            .unwrap_or_default();
        let from_file = |path: Option<PathBuf>| path.map(|path| base.join(path));
        let budget = crate::budget::budget(&args.budget, &file.budget)?;
        let (git, http, ssh) = (file.git, file.http, file.ssh);
        let ssh_policy = ssh.policy();
        let auto_maintenance = file.maintenance.auto_after_push.unwrap_or(true);
        let maintenance_interval = file
            .maintenance
            .interval
            .as_deref()
            .map(crate::maintenance::parse_interval)
            .transpose()?;
        let mut pack_cache = file.pack_cache;
        pack_cache.temp_dir = from_file(pack_cache.temp_dir);
        let parse_namespace = |raw: &[u8], what: &str| {
            Namespace::new(raw).with_context(|| format!("invalid namespace for {what}"))
        };
        // As git's services: GIT_NAMESPACE of the environment, unless the file says.
        let namespace = match (&file.namespace, std::env::var_os("GIT_NAMESPACE")) {
            (Some(raw), _) => parse_namespace(raw.as_bytes(), "namespace")?,
            (None, Some(raw)) => parse_namespace(raw.as_encoded_bytes(), "GIT_NAMESPACE")?,
            (None, None) => None,
        };
        let mut repository_namespaces = Vec::new();
        let mut repository_upstreams = Vec::new();
        for (path, section) in file.repositories {
            if let Some(url) = section.upstream.as_deref().map(str::trim) {
                if url.is_empty() {
                    anyhow::bail!("repository {path}: empty upstream");
                }
                repository_upstreams.push((path.clone(), url.to_owned()));
            }
            if let Some(raw) = &section.namespace {
                let parsed = parse_namespace(raw.as_bytes(), &format!("repository {path}"))?;
                repository_namespaces.push((path, parsed));
            }
        }
        let root = args
            .root
            .or_else(|| from_file(file.root))
            .unwrap_or_else(|| PathBuf::from("./repos"));
        let listen = |flag: Option<Listen>, file: Option<Listen>, default: SocketAddr| {
            flag.or(file).map_or(Some(default), |listen| listen.0)
        };
        let git_addr = listen(
            args.git,
            git.listen,
            SocketAddr::from(([127, 0, 0, 1], 9418)),
        );
        let http_addr = listen(
            args.http,
            http.listen,
            SocketAddr::from(([127, 0, 0, 1], 8080)),
        );
        let credentials = args
            .http_credentials
            .or_else(|| from_file(http.credentials));
        let allow_push_without_auth =
            args.http_allow_push_without_auth || http.allow_push_without_auth == Some(true);
        if credentials.is_some() && allow_push_without_auth {
            anyhow::bail!("HTTP credentials and allow-push-without-auth exclude each other");
        }
        let tls = match (
            args.tls_cert.or_else(|| from_file(http.tls_cert)),
            args.tls_key.or_else(|| from_file(http.tls_key)),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => anyhow::bail!("a TLS certificate needs its key, and a key its certificate"),
        };
        let ssh_addr = args.ssh.or(ssh.listen).and_then(|listen| listen.0);
        let ssh_authorized_keys = args
            .ssh_authorized_keys
            .or_else(|| from_file(ssh.authorized_keys));
        let ssh_host_key = args
            .ssh_host_key
            .or_else(|| from_file(ssh.host_key))
            .unwrap_or_else(|| root.join(DEFAULT_HOST_KEY));
        if ssh_addr.is_some() && ssh_authorized_keys.is_none() {
            anyhow::bail!(
                "the SSH front-end needs an authorized keys file (--ssh-authorized-keys)"
            );
        }
        if git_addr.is_none() && http_addr.is_none() && ssh_addr.is_none() {
            anyhow::bail!("every front-end is off: nothing to serve");
        }
        if http_addr.is_none() {
            for (given, what) in [
                (allow_push_without_auth, "allow-push-without-auth"),
                (credentials.is_some(), "HTTP credentials"),
                (tls.is_some(), "TLS"),
            ] {
                if given {
                    anyhow::bail!("{what} needs the HTTP front-end (it is off)");
                }
            }
        }
        let informative_errors = args.informative_errors || git.informative_errors == Some(true);
        let mut daemon = DaemonConfig {
            errors: if informative_errors {
                ErrorDetail::Informative
            } else {
                ErrorDetail::Terse
            },
            ..DaemonConfig::default()
        };
        if let Some(enabled) = git.receive_pack {
            daemon.receive_pack.enabled = enabled;
        }
        for (name, value) in [
            ("git.init-timeout", git.init_timeout),
            ("git.timeout", git.timeout),
            ("http.header-timeout", http.header_timeout),
            ("http.timeout", http.timeout),
            ("ssh.init-timeout", ssh.init_timeout),
            ("ssh.timeout", ssh.timeout),
        ] {
            // No "0 means none": a session without a bound is what these settings prevent.
            if value == Some(0) {
                anyhow::bail!("{name} must be at least 1 (seconds)");
            }
        }
        let defaults = DaemonOptions::default();
        let daemon_options = DaemonOptions {
            init_timeout: git
                .init_timeout
                .map_or(defaults.init_timeout, Duration::from_secs),
            idle_timeout: git
                .timeout
                .map_or(defaults.idle_timeout, Duration::from_secs),
            max_connections: git.max_connections.unwrap_or(defaults.max_connections),
            max_waiting_connections: git
                .max_waiting_connections
                .unwrap_or(defaults.max_waiting_connections),
            max_waiting_per_address: git
                .max_waiting_per_address
                .unwrap_or(defaults.max_waiting_per_address),
        };
        let defaults = HttpOptions::default();
        let http_options = HttpOptions {
            header_timeout: http
                .header_timeout
                .map_or(defaults.header_timeout, Duration::from_secs),
            idle_timeout: http
                .timeout
                .map_or(defaults.idle_timeout, Duration::from_secs),
            max_connections: http.max_connections.unwrap_or(defaults.max_connections),
            max_waiting_connections: http
                .max_waiting_connections
                .unwrap_or(defaults.max_waiting_connections),
            max_waiting_per_address: http
                .max_waiting_per_address
                .unwrap_or(defaults.max_waiting_per_address),
            max_fetch_request: http.max_fetch_request.unwrap_or(defaults.max_fetch_request),
            max_push_request: http.max_push_request.unwrap_or(defaults.max_push_request),
            ..defaults
        };
        let defaults = SshOptions::default();
        let ssh_options = SshOptions {
            init_timeout: ssh
                .init_timeout
                .map_or(defaults.init_timeout, Duration::from_secs),
            idle_timeout: ssh
                .timeout
                .map_or(defaults.idle_timeout, Duration::from_secs),
            max_connections: ssh.max_connections.unwrap_or(defaults.max_connections),
            max_waiting_connections: ssh
                .max_waiting_connections
                .unwrap_or(defaults.max_waiting_connections),
            max_waiting_per_address: ssh
                .max_waiting_per_address
                .unwrap_or(defaults.max_waiting_per_address),
        };
        for (name, value) in [
            ("ssh.max-connections", ssh_options.max_connections),
            (
                "ssh.max-waiting-connections",
                ssh_options.max_waiting_connections,
            ),
            (
                "ssh.max-waiting-per-address",
                ssh_options.max_waiting_per_address,
            ),
            ("git.max-connections", daemon_options.max_connections),
            (
                "git.max-waiting-connections",
                daemon_options.max_waiting_connections,
            ),
            (
                "git.max-waiting-per-address",
                daemon_options.max_waiting_per_address,
            ),
            ("http.max-connections", http_options.max_connections),
            (
                "http.max-waiting-connections",
                http_options.max_waiting_connections,
            ),
            (
                "http.max-waiting-per-address",
                http_options.max_waiting_per_address,
            ),
        ] {
            if value == 0 {
                anyhow::bail!("{name} must be at least 1");
            }
        }
        Ok(Settings {
            root,
            git: git_addr,
            http: http_addr,
            credentials,
            allow_push_without_auth,
            tls,
            daemon,
            daemon_options,
            http_options,
            ssh: ssh_addr,
            ssh_authorized_keys,
            ssh_host_key,
            ssh_options,
            ssh_policy,
            namespace,
            repository_namespaces,
            pack_cache,
            budget,
            auto_maintenance,
            maintenance_interval,
            upstream: file.upstream.map(|url| url.trim().to_owned()),
            repository_upstreams,
            refresh_timeout: match file.refresh_timeout {
                Some(0) => anyhow::bail!("refresh-timeout must be at least 1 (seconds)"),
                Some(seconds) => Duration::from_secs(seconds),
                None => packgate::protocol::upstream::DEFAULT_REFRESH_TIMEOUT,
            },
            mirrors: file.mirror,
        })
    }
}

/// The namespaces of the settings, each repository's found below the registry's root.
fn namespaces(settings: &Settings, registry: &Registry) -> anyhow::Result<Namespaces> {
    let mut namespaces = Namespaces {
        default: settings.namespace.clone(),
        ..Namespaces::default()
    };
    for (path, namespace) in &settings.repository_namespaces {
        let repo = registry
            .open(path.as_bytes(), None)
            .with_context(|| format!("repository {path} of the configuration"))?;
        namespaces
            .by_git_dir
            .insert(repo.git_dir().to_owned(), namespace.clone());
    }
    Ok(namespaces)
}

/// The connector packgate's own clients use: every transport, and this executable for local
/// paths (`<exe> upload-pack <path>`, never git).
pub(crate) fn client() -> packgate::transport::client::Client {
    packgate::transport::client::Client {
        local_executable: std::env::current_exe().ok(),
        ..Default::default()
    }
}

/// The push client gated repositories forward with.
fn forward() -> Option<Arc<dyn packgate::protocol::receive_pack::gate::Forward>> {
    Some(Arc::new(
        packgate::protocol::client::upstream::PushForward::new(Arc::new(client())),
    ))
}

/// The fetch client gated repositories (`packgate.refreshOnFetch`) and mirrors refresh with.
fn refresh() -> Option<Arc<dyn packgate::protocol::upstream::Refresh>> {
    Some(Arc::new(
        packgate::protocol::client::upstream::FetchRefresh::new(Arc::new(client())),
    ))
}

/// The upstream clients of a front-end without a configuration file (`daemon`,
/// `http-backend`, the stdio services): gated repositories are those with
/// `packgate.upstream` in their own configuration.
pub(crate) fn plugged_upstreams() -> Upstreams {
    Upstreams {
        forward: forward(),
        refresher: refresh().map(|refresh| {
            Arc::new(Refresher::new(
                refresh,
                packgate::protocol::upstream::DEFAULT_REFRESH_TIMEOUT,
            ))
        }),
        ..Upstreams::default()
    }
}

/// The gate's and the mirrors' settings, for both front-ends.
fn upstreams(settings: &Settings, registry: &Registry) -> anyhow::Result<Upstreams> {
    let canonical = |path: &Path| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mut upstreams = Upstreams {
        forward: forward(),
        refresher: refresh()
            .map(|refresh| Arc::new(Refresher::new(refresh, settings.refresh_timeout))),
        root: settings
            .upstream
            .clone()
            .map(|url| (canonical(registry.root()), url)),
        ..Upstreams::default()
    };
    for (path, url) in &settings.repository_upstreams {
        let repo = registry
            .open(path.as_bytes(), None)
            .with_context(|| format!("repository {path} of the configuration"))?;
        upstreams
            .repositories
            .insert(canonical(repo.git_dir()), url.clone());
    }
    Ok(upstreams)
}

/// Where the SSH host key is kept unless configured: with the repositories it serves, in a
/// directory no repository path can name as a repository.
const DEFAULT_HOST_KEY: &str = ".packgate/ssh_host_ed25519_key";

pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::new(args)?;
    crate::trim::spawn_trimmer();
    let root = &settings.root;
    std::fs::create_dir_all(root)
        .with_context(|| format!("could not create {}", root.display()))?;
    let registry =
        Registry::new(root).with_context(|| format!("could not open {}", root.display()))?;
    let registry = {
        let namespaces = namespaces(&settings, &registry)?;
        registry.with_namespaces(namespaces)
    };
    let upstreams = upstreams(&settings, &registry)?;
    let mirrors = crate::mirror::mirrors(&settings.mirrors, registry.root())?;
    // One cache for both front-ends: a clone over git:// and one over HTTP share a pack.
    let pack_cache = settings.pack_cache.build();
    let maintainer = crate::maintenance::Maintainer::new(settings.budget.clone());
    if let Some(interval) = settings.maintenance_interval {
        crate::maintenance::start_schedule(
            maintainer.clone(),
            registry.root().to_owned(),
            interval,
        );
    }
    let mut service = DaemonService::new(registry.clone(), settings.daemon.clone())
        .with_pack_cache(pack_cache.clone())
        .with_budget(settings.budget.clone())
        .with_upstreams(upstreams.clone());
    if settings.auto_maintenance {
        service = service.with_hook(crate::maintenance::AutoMaintenanceHook::InProcess(
            maintainer.clone(),
        ));
    }
    // SSH users are authenticated: they may fetch and push every repository (as with git
    // behind sshd), whatever git://'s switches and the repositories' daemon.* settings say.
    let ssh_service: Arc<dyn daemon::ConnectionHandler> = {
        let switch = packgate::protocol::daemon::ServiceSwitch {
            enabled: true,
            overridable: false,
        };
        let config = DaemonConfig {
            errors: ErrorDetail::Informative,
            upload_pack: switch,
            receive_pack: switch,
        };
        let mut service = DaemonService::new(registry.clone(), config)
            .with_pack_cache(pack_cache.clone())
            .with_budget(settings.budget.clone())
            .with_upstreams(upstreams.clone());
        if settings.auto_maintenance {
            service = service.with_hook(crate::maintenance::AutoMaintenanceHook::InProcess(
                maintainer.clone(),
            ));
        }
        Arc::new(service)
    };
    let ssh_setup = match (settings.ssh, &settings.ssh_authorized_keys) {
        (Some(_), Some(keys_path)) => {
            let keys = AuthorizedKeys::load(keys_path)?;
            if keys.is_empty() {
                eprintln!(
                    "packgate: warning: {} names no usable key; nobody can log in over SSH",
                    keys_path.display()
                );
            }
            let host_key = ssh::load_or_generate_host_key(&settings.ssh_host_key)?;
            // What the client's first connection shows, to compare before trusting it.
            eprintln!(
                "packgate: SSH host key {}: {}",
                settings.ssh_host_key.display(),
                ssh::fingerprint(&host_key)
            );
            Some((Arc::new(keys), host_key))
        }
        _ => None,
    };
    let service = Arc::new(service);
    let push = if settings.allow_push_without_auth {
        PushAccess::AllowedWithoutAuthentication
    } else if let Some(path) = &settings.credentials {
        let credentials = CredentialsFile::load(path)?;
        if credentials.is_empty() {
            eprintln!(
                "packgate: warning: {} names no user; nobody can push",
                path.display()
            );
        }
        PushAccess::authenticated(credentials)
    } else {
        PushAccess::Refused
    };
    let tls = match &settings.tls {
        Some((cert, key)) => Some(tls::server_config(cert, key)?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let allowed_without_authentication = matches!(push, PushAccess::AllowedWithoutAuthentication);
    let authenticated = matches!(push, PushAccess::Authenticated(_));
    // One policy for SSH and HTTP: a user gets the same decisions over both.
    let access = Arc::new(settings.ssh_policy.clone());
    let mut http_service = HttpService::new(registry.clone(), push)
        .with_access(Arc::clone(&access))
        .with_pack_cache(pack_cache)
        .with_budget(settings.budget.clone())
        .with_upstreams(upstreams.clone());
    if settings.auto_maintenance {
        http_service = http_service.with_hook(crate::maintenance::AutoMaintenanceHook::InProcess(
            maintainer,
        ));
    }
    let http_service = Arc::new(http_service);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        let bind = |addr: Option<SocketAddr>| async move {
            match addr {
                Some(addr) => tokio::net::TcpListener::bind(addr)
                    .await
                    .map(Some)
                    .with_context(|| format!("could not listen on {addr}")),
                None => Ok(None),
            }
        };
        let git_listener = bind(settings.git).await?;
        let http_listener = bind(settings.http).await?;
        let ssh_listener = bind(settings.ssh).await?;
        if let Some(listener) = &ssh_listener {
            eprintln!(
                "packgate: serving {} on ssh://{} (pid {})",
                registry.root().display(),
                listener.local_addr()?,
                std::process::id()
            );
        }
        if let Some(listener) = &git_listener {
            eprintln!(
                "packgate: serving {} on git://{} (pid {})",
                registry.root().display(),
                listener.local_addr()?,
                std::process::id()
            );
            if !access.is_open() {
                eprintln!(
                    "packgate: warning: the access policy ([[ssh.access]]) does not apply to \
                     git://, which has no users; use --git off to serve only SSH and HTTP"
                );
            }
            if settings.daemon.receive_pack.enabled {
                eprintln!(
                    "packgate: warning: anyone who can reach git://{} may push, without \
                     authentication",
                    listener.local_addr()?
                );
            }
        }
        if let Some(http_listener) = &http_listener {
            eprintln!(
                "packgate: serving {} on {scheme}://{} (pid {})",
                registry.root().display(),
                http_listener.local_addr()?,
                std::process::id()
            );
            if allowed_without_authentication {
                eprintln!(
                    "packgate: warning: anyone who can reach {scheme}://{} may push, without \
                     authentication",
                    http_listener.local_addr()?
                );
            }
            if authenticated && tls.is_none() && !http_listener.local_addr()?.ip().is_loopback() {
                eprintln!(
                    "packgate: warning: passwords cross the network in clear over http://; \
                     use --tls-cert and --tls-key"
                );
            }
        }
        if let (Some(refresher), false) = (upstreams.refresher.clone(), mirrors.is_empty()) {
            let (trigger, triggered) = tokio::sync::watch::channel(0);
            crate::mirror::on_sighup(trigger);
            crate::mirror::spawn(refresher, mirrors, triggered);
        }
        // One signal stops both front-ends.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let git = async {
            match git_listener {
                Some(listener) => {
                    daemon::serve(
                        listener,
                        service,
                        settings.daemon_options,
                        until_stopped(stopped.clone()),
                    )
                    .await
                }
                None => Ok(()),
            }
        };
        let smart_http = async {
            match (http_listener, tls) {
                (Some(http_listener), None) => {
                    http::serve(
                        http_listener,
                        http_service,
                        settings.http_options,
                        until_stopped(stopped.clone()),
                    )
                    .await
                }
                (Some(http_listener), Some(tls)) => {
                    tls::serve_tls(
                        http_listener,
                        http_service,
                        settings.http_options,
                        tls,
                        until_stopped(stopped.clone()),
                    )
                    .await
                }
                (None, _) => Ok(()),
            }
        };
        let ssh_front = async {
            match (ssh_listener, ssh_setup) {
                (Some(listener), Some((keys, host_key))) => {
                    ssh::serve(
                        listener,
                        ssh_service,
                        keys,
                        access,
                        host_key,
                        settings.ssh_options,
                        until_stopped(stopped.clone()),
                    )
                    .await
                }
                _ => Ok(()),
            }
        };
        tokio::try_join!(git, smart_http, ssh_front)?;
        eprintln!("packgate: shutting down");
        anyhow::Ok(ExitCode::SUCCESS)
    });
    // Sessions still in flight (a push writing its pack, say) get a moment to end through
    // their own error paths; after that the process ends without waiting for them.
    runtime.shutdown_timeout(crate::daemon::SHUTDOWN_GRACE);
    result
}

/// Completes on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        // Without a SIGTERM handler, Ctrl-C still works.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;

    #[test]
    fn push_and_tls_flags_go_together_or_not_at_all() {
        let parses = |args: &[&str]| {
            Cli::try_parse_from(["packgate", "serve"].iter().chain(args))
                .map(drop)
                .map_err(|err| err.kind())
        };
        assert_eq!(parses(&["--http-credentials", "users"]), Ok(()));
        assert_eq!(
            parses(&["--tls-cert", "cert.pem", "--tls-key", "key.pem"]),
            Ok(())
        );
        assert_eq!(
            parses(&["--tls-cert", "cert.pem"]),
            Err(clap::error::ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(
            parses(&["--tls-key", "key.pem"]),
            Err(clap::error::ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(
            parses(&[
                "--http-credentials",
                "users",
                "--http-allow-push-without-auth"
            ]),
            Err(clap::error::ErrorKind::ArgumentConflict)
        );
    }

    /// `packgate serve <args>`'s settings.
    fn settings(args: &[&str]) -> Result<Settings, String> {
        let cli = Cli::try_parse_from(["packgate", "serve"].iter().chain(args))
            .map_err(|err| err.to_string())?;
        let Command::Serve(args) = cli.command else {
            return Err("not serve".into());
        };
        Settings::new(*args).map_err(|err| format!("{err:#}"))
    }

    #[test]
    fn serve_defaults_to_both_front_ends_on_loopback() {
        let settings = settings(&[]);
        let Ok(settings) = settings else {
            panic!("{settings:?}");
        };
        assert_eq!(settings.root, PathBuf::from("./repos"));
        assert_eq!(settings.git, Some(SocketAddr::from(([127, 0, 0, 1], 9418))));
        assert_eq!(
            settings.http,
            Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
        assert!(!settings.daemon.receive_pack.enabled);
        assert_eq!(
            settings.daemon_options.idle_timeout,
            DaemonOptions::default().idle_timeout
        );
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
        let file = dir.path().join("packgate.toml");
        std::fs::write(
            &file,
            "root = \"repos\"\n[git]\nlisten = \"127.0.0.1:1\"\ntimeout = 7\nreceive-pack = true\n\
             [http]\nlisten = \"off\"\n",
        )
        .unwrap_or_else(|err| panic!("{err}"));
        let config = file.to_string_lossy().into_owned();
        let from_file = settings(&["--config", &config]).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(from_file.root, dir.path().join("repos"));
        assert_eq!(from_file.git, Some(SocketAddr::from(([127, 0, 0, 1], 1))));
        assert_eq!(from_file.http, None);
        assert_eq!(
            from_file.daemon_options.idle_timeout,
            Duration::from_secs(7)
        );
        assert!(from_file.daemon.receive_pack.enabled);
        let flags = settings(&[
            "--config",
            &config,
            "--git",
            "127.0.0.1:2",
            "--http",
            "127.0.0.1:3",
            "/srv",
        ])
        .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(flags.root, PathBuf::from("/srv"));
        assert_eq!(flags.git, Some(SocketAddr::from(([127, 0, 0, 1], 2))));
        assert_eq!(flags.http, Some(SocketAddr::from(([127, 0, 0, 1], 3))));
        assert!(settings(&["--git", "off", "--http", "off"]).is_err());
        // SSH needs its keys; with them it may be the only front-end.
        let ssh_without_keys = settings(&["--ssh", "127.0.0.1:0"]).map(drop);
        assert!(
            ssh_without_keys
                .as_ref()
                .is_err_and(|err| err.contains("authorized keys")),
            "{ssh_without_keys:?}"
        );
        let ssh_only = settings(&[
            "--git",
            "off",
            "--http",
            "off",
            "--ssh",
            "127.0.0.1:0",
            "--ssh-authorized-keys",
            "keys",
        ])
        .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(ssh_only.ssh, Some(SocketAddr::from(([127, 0, 0, 1], 0))));
        assert_eq!(
            ssh_only.ssh_host_key,
            PathBuf::from("./repos/.packgate/ssh_host_ed25519_key")
        );
        assert!(settings(&["--http", "off", "--http-allow-push-without-auth"]).is_err());
        assert!(settings(&["--http", "8080"]).is_err());
        std::fs::write(&file, "[git]\ntimeout = 0\n").unwrap_or_else(|err| panic!("{err}"));
        let zero = settings(&["--config", &config]).map(drop);
        assert!(
            zero.as_ref().is_err_and(|err| err.contains("git.timeout")),
            "{zero:?}"
        );
    }
}
