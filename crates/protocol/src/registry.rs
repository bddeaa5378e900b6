//! Which repositories a network front-end may serve, and where a requested path leads.
//!
//! Two policies:
//!
//! * [`Registry::new`] (`packgate serve`): every repository below one root directory. A
//!   requested path is taken apart into plain components (no `..`, no `.`, no NUL, no
//!   backslash), joined below the root, opened the way git's servers find repositories, and
//!   served only if the git directory it resolves to — symlinks followed — is still below
//!   the root.
//! * [`Registry::daemon`] (`packgate daemon`): git daemon's rules, set by a
//!   [`DaemonPolicy`] — `git-daemon-export-ok` unless everything is exported, an optional
//!   base path, a whitelist of directories, `--strict-paths` and `--interpolated-path`.
//!
//! # Where packgate is stricter than git daemon
//!
//! * The git directory a request resolves to is canonicalized (symlinks followed) before it
//!   is compared with the base path and the whitelist, and the whitelisted directories are
//!   canonicalized too. A symlink inside a served directory that points elsewhere is
//!   refused; git daemon compares the paths as text and follows such a symlink. Whitelisting
//!   a directory that is itself a symlink (`/pub` → `/mnt/pub`) still works.
//! * With an interpolated path, the expansion must still lead below the base path, if one
//!   is given (git daemon ignores the base path then), and a request without `host=` is
//!   refused (git daemon falls back to the base path, so a client could skip the virtual
//!   host by leaving the host out).
//! * A requested path must be UTF-8 without backslashes or control characters; `~user`
//!   paths (git daemon's `--user-path`) are not supported.
//! * In a template, `%CH` (the canonical host name, which needs a DNS lookup) and unknown
//!   placeholders are refused when the registry is built; git daemon leaves unknown ones as
//!   they are. `%IP` is the address the connection came in on (the server's address, as
//!   git's documentation says; git daemon looks the host name up instead).
//!
//! # Why one file
//!
//! It is over 800 lines, and stays whole: the code is about 540 lines of one idea — a request
//! path to a repository the operator exposes — and the rest its unit tests, which check both
//! policies through the same `check` helper. The parts (path components, the whitelist,
//! interpolation of `--interpolated-path`) are steps of resolving one request
//! ([`Registry::resolve`], [`Registry::open_for_request`]) and make sense only in that order.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use bstr::ByteSlice;

use crate::repository::{OpenError, PathLookup, Repository, SharedRepositories};

/// The file in a git directory that marks it as exported (git daemon's
/// `git-daemon-export-ok`).
pub const EXPORT_OK_FILE: &str = "git-daemon-export-ok";

/// Why a path is not served. Clients are told no more than "access denied or not exported"
/// unless the operator asks for informative errors.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The path is not a plain path below the root.
    #[error("refusing path {path:?}")]
    BadPath {
        /// The path as requested.
        path: String,
    },
    /// The path leads outside the root (through a symlink).
    #[error("path {path:?} leads outside the served root")]
    OutsideRoot {
        /// The path as requested.
        path: String,
    },
    /// No repository there.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The repository is not in (or, with strict paths, not exactly) a whitelisted
    /// directory.
    #[error("'{}': not in whitelist", git_dir.display())]
    NotInWhitelist {
        /// The git directory the request resolved to.
        git_dir: PathBuf,
    },
    /// The repository has no `git-daemon-export-ok` and not everything is exported.
    #[error("'{}': repository not exported", git_dir.display())]
    NotExported {
        /// The git directory the request resolved to.
        git_dir: PathBuf,
    },
    /// The interpolated path can't be built for this request.
    #[error("path {path:?}: cannot interpolate: {reason}")]
    Interpolation {
        /// The path as requested.
        path: String,
        /// What is missing or malformed.
        reason: InterpolationError,
    },
}

impl AccessError {
    /// Whether the repository exists but is not exported: git daemon's informative message
    /// is then "repository not exported" rather than "no such repository".
    pub fn is_not_exported(&self) -> bool {
        matches!(self, AccessError::NotExported { .. })
    }
}

/// Why an interpolated path can't be built for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    /// The request has no `host=` (or an empty one) and the template needs it.
    #[error("the request names no host")]
    NoHost,
    /// The `host=` value is not a host name with an optional numeric port.
    #[error("malformed host")]
    MalformedHost,
    /// `%IP` without the address the connection came in on.
    #[error("the server address is unknown")]
    NoServerAddress,
    /// The expansion is not an absolute path of plain components.
    #[error("the expanded path is not a plain absolute path")]
    BadExpansion,
}

/// Why a [`DaemonPolicy`] can't be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The base path is missing or not a directory.
    #[error("base-path '{}' does not exist or is not a directory", path.display())]
    BasePath {
        /// The base path as given.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// `strict_paths` without a whitelist, which would serve nothing (git daemon refuses to
    /// start too).
    #[error("option --strict-paths requires a whitelist")]
    StrictPathsNeedWhitelist,
    /// A whitelisted directory can't be made absolute.
    #[error("whitelist directory '{}'", path.display())]
    Whitelist {
        /// The directory as given.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The interpolated-path template is not usable.
    #[error("interpolated path {template:?}: {reason}")]
    Template {
        /// The template as given.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Which repositories are served at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Export {
    /// Only repositories whose git directory holds [`EXPORT_OK_FILE`] (git daemon without
    /// `--export-all`).
    #[default]
    MarkedOnly,
    /// Every repository found (`--export-all`, and `packgate serve`).
    All,
}

/// git daemon's repository-lookup options, for [`Registry::daemon`].
#[derive(Debug, Clone, Default)]
pub struct DaemonPolicy {
    /// `--export-all` or not.
    pub export: Export,
    /// `--base-path`: requested paths are taken below this directory, and the repository
    /// found must be below it. Without one, requested paths are absolute filesystem paths.
    pub base_path: Option<PathBuf>,
    /// The directories named on git daemon's command line. If any, a repository is served
    /// only if its git directory is one of them or below one (with `strict_paths`: exactly
    /// one of them). Relative ones are taken from the current directory.
    pub whitelist: Vec<PathBuf>,
    /// `--strict-paths`: the requested path must be the git directory itself (no `.git`
    /// suffix or `/.git` guessing) and match a whitelisted directory exactly.
    pub strict_paths: bool,
    /// `--interpolated-path`: a template for the path, with `%H` (the host the client asked
    /// for, lower case, without port), `%IP` (the address the connection came in on), `%P`
    /// (the port the client asked for), `%D` (the requested path) and `%%`.
    pub interpolated_path: Option<String>,
}

/// Where a request came from, for an interpolated path.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestLocation<'a> {
    /// The request's `host=` value as sent (`example.com:9418`), if any.
    pub host: Option<&'a [u8]>,
    /// The local address the connection came in on (`%IP`).
    pub server_address: Option<IpAddr>,
}

/// A set of repositories a front-end may serve, and the rules to find them.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Canonical: the served directory, the base path, or `/`.
    root: PathBuf,
    rules: Rules,
    namespaces: std::sync::Arc<Namespaces>,
    /// The repositories opened, shared between requests.
    shared: std::sync::Arc<SharedRepositories>,
}

/// Which git namespace (git's `GIT_NAMESPACE`, see [`Repository::with_namespace`]) the
/// repositories of a [`Registry`] are served in: one of their own for the git directories
/// named, else the default for all, else none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// The namespace of every repository without one of its own.
    pub default: Option<crate::refname::Namespace>,
    /// The namespace of a repository (`None`: none, whatever the default), by its canonical
    /// git directory (as [`Repository::git_dir`] gives it).
    pub by_git_dir: std::collections::HashMap<PathBuf, Option<crate::refname::Namespace>>,
}

impl Namespaces {
    /// The namespace `git_dir` is served in.
    pub fn for_git_dir(&self, git_dir: &Path) -> Option<&crate::refname::Namespace> {
        match self.by_git_dir.get(git_dir) {
            Some(own) => own.as_ref(),
            None => self.default.as_ref(),
        }
    }
}

/// The rules beyond "below the root".
#[derive(Debug, Clone)]
struct Rules {
    /// `packgate serve` takes `a.git` as well as `/a.git`; git daemon wants `/` first.
    leading_slash: bool,
    export: Export,
    /// Absolute, as given.
    whitelist: Vec<PathBuf>,
    strict_paths: bool,
    template: Option<Vec<Piece>>,
}

/// A part of an interpolated-path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Host,
    ServerAddress,
    Port,
    Directory,
}

impl Registry {
    /// Serve every repository below `root`, which must exist (`packgate serve`).
    pub fn new(root: &Path) -> std::io::Result<Self> {
        Ok(Registry {
            root: root.canonicalize()?,
            rules: Rules {
                leading_slash: false,
                export: Export::All,
                whitelist: Vec::new(),
                strict_paths: false,
                template: None,
            },
            namespaces: Default::default(),
            shared: Default::default(),
        })
    }

    /// Serve repositories by git daemon's rules (`packgate daemon`).
    pub fn daemon(policy: DaemonPolicy) -> Result<Self, PolicyError> {
        let root = match &policy.base_path {
            Some(base) => {
                let canonical = base.canonicalize().and_then(|canonical| {
                    if canonical.is_dir() {
                        Ok(canonical)
                    } else {
                        Err(std::io::Error::other("not a directory"))
                    }
                });
                canonical.map_err(|source| PolicyError::BasePath {
                    path: base.clone(),
                    source,
                })?
            }
            None => PathBuf::from("/"),
        };
        if policy.strict_paths && policy.whitelist.is_empty() {
            return Err(PolicyError::StrictPathsNeedWhitelist);
        }
        let whitelist = policy
            .whitelist
            .iter()
            .map(|path| {
                std::path::absolute(path).map_err(|source| PolicyError::Whitelist {
                    path: path.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        let template = match &policy.interpolated_path {
            Some(template) => {
                Some(
                    parse_template(template).map_err(|reason| PolicyError::Template {
                        template: template.clone(),
                        reason,
                    })?,
                )
            }
            None => None,
        };
        Ok(Registry {
            root,
            rules: Rules {
                leading_slash: true,
                export: policy.export,
                whitelist,
                strict_paths: policy.strict_paths,
                template,
            },
            namespaces: Default::default(),
            shared: Default::default(),
        })
    }

    /// Serve the repositories in `namespaces` (each repository opened by these rules is
    /// [`Repository::with_namespace`] the one it is given).
    pub fn with_namespaces(mut self, namespaces: Namespaces) -> Self {
        self.namespaces = std::sync::Arc::new(namespaces);
        self
    }

    /// The namespaces repositories are served in.
    pub fn namespaces(&self) -> &Namespaces {
        &self.namespaces
    }

    /// The root every served git directory is below, canonicalized: the served directory,
    /// the base path, or `/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Map a requested path (`/project.git`) to a path below the root (without
    /// interpolation).
    pub fn resolve(&self, requested: &[u8]) -> Result<PathBuf, AccessError> {
        let components = self.components(requested)?;
        let mut path = self.root.clone();
        path.extend(components);
        Ok(path)
    }

    /// Open the repository at the requested path, if these rules serve it. A registry with
    /// an interpolated path needs the request's host: use [`Registry::open_for_request`].
    pub fn open(
        &self,
        requested: &[u8],
        config_parameters: Option<&str>,
    ) -> Result<Repository, AccessError> {
        self.open_for_request(requested, &RequestLocation::default(), config_parameters)
    }

    /// Open the repository a request at `location` asks for at the requested path, if these
    /// rules serve it: the path is mapped (interpolated, or taken below the root), the
    /// repository found, its canonical git directory checked against the root and the
    /// whitelist, then for `git-daemon-export-ok` — in git daemon's order.
    pub fn open_for_request(
        &self,
        requested: &[u8],
        location: &RequestLocation<'_>,
        config_parameters: Option<&str>,
    ) -> Result<Repository, AccessError> {
        let shown = || requested.to_str_lossy().into_owned();
        let path = match &self.rules.template {
            Some(template) => {
                // Validates the requested path as well.
                self.components(requested)?;
                expand(template, requested, location).map_err(|reason| {
                    AccessError::Interpolation {
                        path: shown(),
                        reason,
                    }
                })?
            }
            None => self.resolve(requested)?,
        };
        let lookup = if self.rules.strict_paths {
            PathLookup::Strict
        } else {
            PathLookup::Lenient
        };
        let repo = match config_parameters {
            None => self.shared.open(&path, lookup)?,
            Some(_) => Repository::open(&path, lookup, config_parameters)?,
        };
        // Already absolute with symlinks resolved (`Repository::open`).
        let git_dir = repo.git_dir().to_owned();
        if !git_dir.starts_with(&self.root) {
            return Err(AccessError::OutsideRoot { path: shown() });
        }
        if !self.whitelisted(&git_dir) {
            return Err(AccessError::NotInWhitelist { git_dir });
        }
        if self.rules.export == Export::MarkedOnly && !git_dir.join(EXPORT_OK_FILE).exists() {
            return Err(AccessError::NotExported { git_dir });
        }
        Ok(match self.namespaces.for_git_dir(&git_dir) {
            Some(namespace) => repo.with_namespace(Some(namespace.clone())),
            None => repo,
        })
    }

    /// The plain components of a requested path.
    fn components<'p>(&self, requested: &'p [u8]) -> Result<Vec<&'p str>, AccessError> {
        let bad = || AccessError::BadPath {
            path: requested.to_str_lossy().into_owned(),
        };
        let text = requested.to_str().map_err(|_| bad())?;
        if text.contains(|c: char| c == '\\' || c.is_control()) || text.starts_with('~') {
            return Err(bad());
        }
        let rest = if self.rules.leading_slash {
            // As git daemon: absolute, and no `//` (a trailing `/` is fine).
            let rest = text.strip_prefix('/').ok_or_else(bad)?;
            let inner = rest.strip_suffix('/').unwrap_or(rest);
            if inner.split('/').any(str::is_empty) {
                return Err(bad());
            }
            rest
        } else {
            text
        };
        let components: Vec<&str> = rest.split('/').filter(|c| !c.is_empty()).collect();
        if components.is_empty() || components.iter().any(|c| *c == "." || *c == "..") {
            return Err(bad());
        }
        Ok(components)
    }

    /// Whether a canonical git directory is in the whitelist (always, without one).
    fn whitelisted(&self, git_dir: &Path) -> bool {
        if self.rules.whitelist.is_empty() {
            return true;
        }
        self.rules.whitelist.iter().any(|allowed| {
            // Canonicalized on each request: a directory may appear after startup.
            let Ok(allowed) = allowed.canonicalize() else {
                return false;
            };
            if self.rules.strict_paths {
                git_dir == allowed
            } else {
                git_dir.starts_with(&allowed)
            }
        })
    }
}

/// Split a template into its pieces.
fn parse_template(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(percent) = rest.find('%') {
        text.push_str(&rest[..percent]);
        let after = &rest[percent + 1..];
        let (piece, length) = if after.starts_with("CH") {
            return Err("%CH (the canonical host name) is not supported".into());
        } else if after.starts_with("IP") {
            (Some(Piece::ServerAddress), 2)
        } else if after.starts_with('H') {
            (Some(Piece::Host), 1)
        } else if after.starts_with('P') {
            (Some(Piece::Port), 1)
        } else if after.starts_with('D') {
            (Some(Piece::Directory), 1)
        } else if after.starts_with('%') {
            text.push('%');
            (None, 1)
        } else {
            let placeholder: String = after.chars().take(2).collect();
            return Err(format!(
                "unknown placeholder %{placeholder} (known: %H %IP %P %D %%)"
            ));
        };
        if let Some(piece) = piece {
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(piece);
        }
        rest = &after[length..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    if !matches!(pieces.first(), Some(Piece::Directory))
        && !matches!(pieces.first(), Some(Piece::Text(text)) if text.starts_with('/'))
    {
        return Err("must be an absolute path".into());
    }
    Ok(pieces)
}

/// The path a template gives for a request. The requested path is already validated.
fn expand(
    template: &[Piece],
    requested: &[u8],
    location: &RequestLocation<'_>,
) -> Result<PathBuf, InterpolationError> {
    let needs_host = template
        .iter()
        .any(|piece| matches!(piece, Piece::Host | Piece::Port));
    let (host, port) = match location.host {
        Some(value) => split_host(value)?,
        None if needs_host => return Err(InterpolationError::NoHost),
        None => (String::new(), String::new()),
    };
    let mut expanded = String::new();
    for piece in template {
        match piece {
            Piece::Text(text) => expanded.push_str(text),
            Piece::Host if host.is_empty() => return Err(InterpolationError::NoHost),
            Piece::Host => expanded.push_str(&host),
            Piece::Port => expanded.push_str(&port),
            Piece::ServerAddress => {
                let address = location
                    .server_address
                    .ok_or(InterpolationError::NoServerAddress)?;
                expanded.push_str(&address.to_canonical().to_string());
            }
            Piece::Directory => expanded.push_str(
                requested
                    .to_str()
                    .map_err(|_| InterpolationError::BadExpansion)?,
            ),
        }
    }
    let plain = expanded.starts_with('/')
        && expanded
            .split('/')
            .all(|c| c != "." && c != ".." && !c.contains(|c: char| c.is_control()));
    if !plain {
        return Err(InterpolationError::BadExpansion);
    }
    Ok(PathBuf::from(expanded))
}

/// The host (lower case, made safe for a path) and port of a `host=` value: `name`,
/// `name:port`, `[v6]`, `[v6]:port`.
fn split_host(value: &[u8]) -> Result<(String, String), InterpolationError> {
    let value = value
        .to_str()
        .map_err(|_| InterpolationError::MalformedHost)?;
    let (host, port) = match value.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or(InterpolationError::MalformedHost)?;
            match after {
                "" => (host, ""),
                _ => (
                    host,
                    after
                        .strip_prefix(':')
                        .ok_or(InterpolationError::MalformedHost)?,
                ),
            }
        }
        None => value.rsplit_once(':').unwrap_or((value, "")),
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InterpolationError::MalformedHost);
    }
    if host.contains(|c: char| c.is_control() || c == '\\') {
        return Err(InterpolationError::MalformedHost);
    }
    Ok((sanitize_host(host), port.to_owned()))
}

/// As git daemon: no `/`, no leading dots, runs of dots collapsed, no trailing dots, lower
/// case. What is left can't leave the directory it is put in.
fn sanitize_host(host: &str) -> String {
    let mut out = String::with_capacity(host.len());
    for c in host.chars() {
        if c == '/' || (c == '.' && (out.is_empty() || out.ends_with('.'))) {
            continue;
        }
        out.push(c.to_ascii_lowercase());
    }
    while out.ends_with('.') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bare-looking git directory at `path`.
    fn make_repo(path: &Path) {
        for dir in ["objects", "refs"] {
            std::fs::create_dir_all(path.join(dir)).unwrap();
        }
        std::fs::write(path.join("HEAD"), "ref: refs/heads/main\n").unwrap();
    }

    fn export(path: &Path) {
        std::fs::write(path.join(EXPORT_OK_FILE), "").unwrap();
    }

    /// Opens `requested` and returns the canonical git directory or the error's kind.
    fn check(
        registry: &Registry,
        requested: &str,
        host: Option<&str>,
        expected: Result<&Path, &str>,
    ) {
        let location = RequestLocation {
            host: host.map(str::as_bytes),
            server_address: Some(IpAddr::from([127, 0, 0, 1])),
        };
        let actual = registry
            .open_for_request(requested.as_bytes(), &location, None)
            .map(|repo| repo.git_dir().canonicalize().unwrap());
        match (actual, expected) {
            (Ok(actual), Ok(expected)) => assert_eq!(
                actual,
                expected.canonicalize().unwrap(),
                "{requested:?} opened the wrong repository"
            ),
            (Err(err), Err(kind)) => {
                let actual_kind = match &err {
                    AccessError::BadPath { .. } => "bad path",
                    AccessError::OutsideRoot { .. } => "outside root",
                    AccessError::Open(_) => "not found",
                    AccessError::NotInWhitelist { .. } => "not in whitelist",
                    AccessError::NotExported { .. } => "not exported",
                    AccessError::Interpolation { .. } => "interpolation",
                };
                assert_eq!(actual_kind, kind, "{requested:?}: {err}");
            }
            (actual, expected) => panic!("{requested:?}: {actual:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn resolve_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path()).unwrap();
        let root = registry.root().to_owned();
        assert_eq!(registry.resolve(b"/a.git").unwrap(), root.join("a.git"));
        assert_eq!(
            registry.resolve(b"/x//y").unwrap(),
            root.join("x").join("y")
        );
        for bad in [
            &b"/../etc"[..],
            b"/a/../../b",
            b"/./a",
            b"/",
            b"",
            b"/a\0b",
            b"~root/x",
            b"/a\\..\\b",
            b"/\xff",
        ] {
            assert!(
                registry.resolve(bad).is_err(),
                "{:?} must be refused",
                bad.as_bstr()
            );
        }
    }

    #[test]
    fn open_refuses_symlink_out_of_root() {
        let outside = tempfile::tempdir().unwrap();
        make_repo(&outside.path().join("repo.git"));
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("repo.git"),
            root.path().join("link.git"),
        )
        .unwrap();
        let registry = Registry::new(root.path()).unwrap();
        assert!(matches!(
            registry.open(b"/link.git", None),
            Err(AccessError::OutsideRoot { .. })
        ));
    }

    #[test]
    fn serve_policy_needs_no_export_marker_nor_leading_slash() {
        let root = tempfile::tempdir().unwrap();
        make_repo(&root.path().join("a.git"));
        let registry = Registry::new(root.path()).unwrap();
        let a = root.path().join("a.git");
        check(&registry, "/a.git", None, Ok(&a));
        check(&registry, "a.git", None, Ok(&a));
        check(&registry, "/a", None, Ok(&a));
    }

    #[test]
    fn daemon_base_path_and_export_ok() {
        let base = tempfile::tempdir().unwrap();
        let a = base.path().join("a.git");
        let b = base.path().join("sub/b.git");
        make_repo(&a);
        make_repo(&b);
        export(&a);
        let registry = Registry::daemon(DaemonPolicy {
            base_path: Some(base.path().to_owned()),
            ..DaemonPolicy::default()
        })
        .unwrap();
        check(&registry, "/a.git", None, Ok(&a));
        check(&registry, "/a", None, Ok(&a));
        check(&registry, "/a.git/", None, Ok(&a));
        check(&registry, "/sub/b.git", None, Err("not exported"));
        export(&b);
        check(&registry, "/sub/b.git", None, Ok(&b));
        for bad in [
            "a.git",
            "//a.git",
            "/sub//b.git",
            "/../a.git",
            "/sub/../a.git",
            "/./a.git",
            "/a.git/.",
            "~user/a.git",
            "/a\u{1}.git",
            "/a\\b",
        ] {
            check(&registry, bad, None, Err("bad path"));
        }
        // An absolute path is taken below the base path.
        check(&registry, &a.display().to_string(), None, Err("not found"));
        // Nothing at all below the base path, or not there.
        check(&registry, "/missing.git", None, Err("not found"));
    }

    #[test]
    fn daemon_refuses_symlinks_out_of_base_path() {
        let outside = tempfile::tempdir().unwrap();
        let elsewhere = outside.path().join("elsewhere.git");
        make_repo(&elsewhere);
        export(&elsewhere);
        let base = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&elsewhere, base.path().join("link.git")).unwrap();
        std::os::unix::fs::symlink(outside.path(), base.path().join("dir")).unwrap();
        let registry = Registry::daemon(DaemonPolicy {
            base_path: Some(base.path().to_owned()),
            export: Export::All,
            ..DaemonPolicy::default()
        })
        .unwrap();
        check(&registry, "/link.git", None, Err("outside root"));
        check(&registry, "/dir/elsewhere.git", None, Err("outside root"));
    }

    #[test]
    fn daemon_without_base_path_takes_absolute_paths_bounded_by_the_whitelist() {
        let top = tempfile::tempdir().unwrap();
        let public = top.path().join("pub");
        let a = public.join("a.git");
        let nested = public.join("team/b.git");
        let private = top.path().join("private/c.git");
        let sibling = top.path().join("pub-other/d.git");
        for repo in [&a, &nested, &private, &sibling] {
            make_repo(repo);
        }
        // A symlink inside the whitelisted directory that leads out of it.
        std::os::unix::fs::symlink(&private, public.join("link.git")).unwrap();
        let policy = DaemonPolicy {
            export: Export::All,
            whitelist: vec![public.clone()],
            ..DaemonPolicy::default()
        };
        let registry = Registry::daemon(policy.clone()).unwrap();
        assert_eq!(registry.root(), Path::new("/"));
        let path = |p: &Path| p.display().to_string();
        check(&registry, &path(&a), None, Ok(&a));
        check(&registry, &path(&public.join("a")), None, Ok(&a));
        check(&registry, &path(&nested), None, Ok(&nested));
        check(&registry, &path(&private), None, Err("not in whitelist"));
        // `/pub` must not admit `/pub-other`: prefixes end at a path component.
        check(&registry, &path(&sibling), None, Err("not in whitelist"));
        check(
            &registry,
            &path(&public.join("link.git")),
            None,
            Err("not in whitelist"),
        );

        // Strict paths: exactly a whitelisted git directory, no suffix guessing.
        let strict = Registry::daemon(DaemonPolicy {
            strict_paths: true,
            whitelist: vec![public.clone(), a.clone()],
            ..policy.clone()
        })
        .unwrap();
        check(&strict, &path(&a), None, Ok(&a));
        check(&strict, &path(&public.join("a")), None, Err("not found"));
        check(&strict, &path(&nested), None, Err("not in whitelist"));

        // Without a whitelist, anything (exported) goes, as with git daemon.
        let open = Registry::daemon(DaemonPolicy {
            export: Export::All,
            ..DaemonPolicy::default()
        })
        .unwrap();
        check(&open, &path(&private), None, Ok(&private));
    }

    #[test]
    fn daemon_policy_errors() {
        let missing = Path::new("/nonexistent/packgate/base");
        assert!(matches!(
            Registry::daemon(DaemonPolicy {
                base_path: Some(missing.to_owned()),
                ..DaemonPolicy::default()
            }),
            Err(PolicyError::BasePath { .. })
        ));
        assert!(matches!(
            Registry::daemon(DaemonPolicy {
                strict_paths: true,
                ..DaemonPolicy::default()
            }),
            Err(PolicyError::StrictPathsNeedWhitelist)
        ));
        for template in ["/pub/%CH%D", "/pub/%X%D", "pub/%H%D", "%H/x", "/pub/%"] {
            assert!(
                matches!(
                    Registry::daemon(DaemonPolicy {
                        interpolated_path: Some(template.into()),
                        ..DaemonPolicy::default()
                    }),
                    Err(PolicyError::Template { .. })
                ),
                "{template} must be refused"
            );
        }
    }

    #[test]
    fn templates() {
        assert_eq!(
            parse_template("/pub/%H%D").unwrap(),
            [Piece::Text("/pub/".into()), Piece::Host, Piece::Directory]
        );
        assert_eq!(
            parse_template("/srv/%IP/%P/100%%%D").unwrap(),
            [
                Piece::Text("/srv/".into()),
                Piece::ServerAddress,
                Piece::Text("/".into()),
                Piece::Port,
                Piece::Text("/100%".into()),
                Piece::Directory
            ]
        );
        assert_eq!(parse_template("%D").unwrap(), [Piece::Directory]);
    }

    #[test]
    fn hosts() {
        let host = |value: &str| split_host(value.as_bytes());
        let ok = |host: &str, port: &str| Ok((host.to_owned(), port.to_owned()));
        assert_eq!(host("Example.COM"), ok("example.com", ""));
        assert_eq!(host("example.com:9418"), ok("example.com", "9418"));
        assert_eq!(host("127.0.0.1:4242"), ok("127.0.0.1", "4242"));
        assert_eq!(host("[::1]:4242"), ok("::1", "4242"));
        assert_eq!(host("[::1]"), ok("::1", ""));
        assert_eq!(host("../../etc"), ok("etc", ""));
        assert_eq!(host(".."), ok("", ""));
        assert_eq!(host("a..b./c."), ok("a.b.c", ""));
        assert_eq!(host("[::1"), Err(InterpolationError::MalformedHost));
        assert_eq!(host("[::1]x"), Err(InterpolationError::MalformedHost));
        assert_eq!(host("h:9x"), Err(InterpolationError::MalformedHost));
        assert_eq!(host("h\\x"), Err(InterpolationError::MalformedHost));
        assert_eq!(split_host(b"h\xff"), Err(InterpolationError::MalformedHost));
    }

    #[test]
    fn daemon_interpolated_path() {
        let top = tempfile::tempdir().unwrap();
        let one = top.path().join("pub/one.example/a.git");
        let two = top.path().join("pub/two.example/a.git");
        let by_address = top.path().join("ip/127.0.0.1/b.git");
        let secret = top.path().join("secret.git");
        for repo in [&one, &two, &by_address, &secret] {
            make_repo(repo);
        }
        let pub_dir = top.path().join("pub").canonicalize().unwrap();
        let registry = Registry::daemon(DaemonPolicy {
            export: Export::All,
            interpolated_path: Some(format!("{}/%H%D", pub_dir.display())),
            whitelist: vec![pub_dir.clone()],
            ..DaemonPolicy::default()
        })
        .unwrap();
        check(&registry, "/a.git", Some("one.example:9418"), Ok(&one));
        // As the git:// service calls it with a request head's `host: Option<BString>`.
        let host: Option<bstr::BString> = Some("one.example:9418".into());
        let location = RequestLocation {
            host: host.as_deref().map(Vec::as_slice),
            server_address: None,
        };
        registry
            .open_for_request(b"/a.git", &location, None)
            .unwrap();
        check(&registry, "/a.git", Some("TWO.example"), Ok(&two));
        check(&registry, "/a.git", Some("three.example"), Err("not found"));
        check(&registry, "/a.git", None, Err("interpolation"));
        check(&registry, "/a.git", Some(".."), Err("interpolation"));
        check(&registry, "/a.git", Some("x:y"), Err("interpolation"));
        // The host can't climb out; the requested path is still checked.
        check(
            &registry,
            "/../secret.git",
            Some("one.example"),
            Err("bad path"),
        );
        check(&registry, "/a.git", Some("../../secret"), Err("not found"));

        let by_ip = Registry::daemon(DaemonPolicy {
            export: Export::All,
            interpolated_path: Some(format!("{}/ip/%IP%D", top.path().display())),
            ..DaemonPolicy::default()
        })
        .unwrap();
        check(&by_ip, "/b.git", Some("whatever"), Ok(&by_address));
        check(&by_ip, "/b.git", None, Ok(&by_address));

        // With a base path, the expansion must stay below it.
        let bounded = Registry::daemon(DaemonPolicy {
            export: Export::All,
            base_path: Some(pub_dir.clone()),
            interpolated_path: Some(format!("{}/%H", top.path().display())),
            ..DaemonPolicy::default()
        })
        .unwrap();
        check(&bounded, "/x", Some("secret.git"), Err("outside root"));
    }
}
