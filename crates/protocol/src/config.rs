//! Configuration, read the way git reads it, without running any program: the system file,
//! the global files, the repository's file (and `config.worktree` with
//! `extensions.worktreeConfig`), then the overrides git passes down in `GIT_CONFIG_COUNT` /
//! `GIT_CONFIG_KEY_<n>` / `GIT_CONFIG_VALUE_<n>` and `GIT_CONFIG_PARAMETERS` (`git -c`).
//!
//! | source | file | switched by |
//! |--------|------|-------------|
//! | system | `/etc/gitconfig` | `GIT_CONFIG_SYSTEM` names another file, `GIT_CONFIG_NOSYSTEM` skips it |
//! | global | `$XDG_CONFIG_HOME/git/config` (else `$HOME/.config/git/config`), then `$HOME/.gitconfig` | `GIT_CONFIG_GLOBAL` names the one file instead |
//! | local  | `<git dir>/config`, `<git dir>/config.worktree` | |
//!
//! git's system file lives below its installation prefix (`/usr/local/etc/gitconfig` for a
//! git built with `prefix=/usr/local`); packgate has no installation of git to ask (gitoxide
//! would run `git config -l` to find it), so it takes git's documented default,
//! `/etc/gitconfig`. Missing files are skipped, as git does. `include.path` and
//! `includeIf.gitdir:` are followed in the files (`~/` is `$HOME`).

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use bstr::{BStr, BString, ByteSlice};
use gix_hash::ObjectId;

/// The error returned by [`load()`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file could not be parsed, or its includes not followed.
    #[error("could not read the configuration file {path}")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: gix_error::Error,
    },
    /// A configuration file exists but could not be read.
    #[error("could not read the configuration file {path}")]
    Io {
        /// The configuration file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// `GIT_CONFIG_PARAMETERS` is not in git's quoting format.
    #[error("GIT_CONFIG_PARAMETERS is malformed: {reason}")]
    Parameters {
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration environment variable (`GIT_CONFIG_COUNT`, `GIT_CONFIG_KEY_<n>`,
    /// `GIT_CONFIG_NOSYSTEM`, …) is malformed or missing.
    #[error("{variable}: {reason}")]
    Environment {
        /// The variable.
        variable: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An `uploadpack.blobPackfileUri` value git would not take.
    #[error("{0}")]
    PackfileUri(String),
    /// A value has the wrong type.
    #[error("bad value for {key}")]
    Value {
        /// The configuration key.
        key: String,
        /// What went wrong.
        #[source]
        source: gix_error::Error,
    },
    /// A key git must read a number from has none (git's wording).
    #[error("unable to parse '{key}' from configuration")]
    Unparsable {
        /// The configuration key.
        key: String,
    },
    /// A value is not one the key accepts (git's wording).
    #[error("invalid value for '{key}': '{value}'")]
    Invalid {
        /// The configuration key.
        key: String,
        /// The value found.
        value: BString,
    },
}

/// The `hideRefs` rules of `transfer` and of the service's own section (`uploadpack`,
/// `receive`), in the order the configuration holds them: git reads both keys in one pass,
/// and the last rule that matches a ref decides.
pub fn hide_refs(config: &gix_config::File, service: &str) -> Vec<BString> {
    config
        .sections()
        .filter(|section| {
            let header = section.header();
            header.subsection_name().is_none()
                && (header.name().eq_ignore_ascii_case(b"transfer")
                    || header.name().eq_ignore_ascii_case(service.as_bytes()))
        })
        .flat_map(|section| section.values("hideRefs"))
        .collect()
}

/// git's lock timeouts in milliseconds (`core.filesRefLockTimeout`, `core.packedRefsTimeout`):
/// 0 fails at once, a negative value waits (practically) forever.
pub(crate) fn lock_timeout(
    configured: Option<i64>,
    default_millis: u64,
) -> gix_lock::acquire::Fail {
    /// "Forever": a year.
    const FOREVER: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 60 * 60);
    match configured {
        None => std::time::Duration::from_millis(default_millis).into(),
        Some(millis) => match u64::try_from(millis) {
            Ok(millis) => std::time::Duration::from_millis(millis).into(),
            Err(_) => FOREVER.into(),
        },
    }
}

/// git's system configuration file unless `GIT_CONFIG_SYSTEM` names another.
pub const SYSTEM_CONFIG: &str = "/etc/gitconfig";

/// Load the configuration of the repository at `git_dir` (absolute) as git would with this
/// process's environment, then apply `config_parameters` (the value of
/// `GIT_CONFIG_PARAMETERS`, if any) on top.
pub fn load(
    git_dir: &Path,
    config_parameters: Option<&str>,
) -> Result<gix_config::File, ConfigError> {
    load_with(git_dir, &|name| std::env::var_os(name), config_parameters)
}

/// The global and system configuration files [`load()`] reads (present or not), for
/// telling whether they changed; `None` if that cannot be told.
pub(crate) fn source_files() -> Option<Vec<PathBuf>> {
    let var = |name: &str| std::env::var_os(name);
    let home = var("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from);
    file_sources(&var, home.as_deref())
        .ok()
        .map(|sources| sources.into_iter().map(|(path, _, _)| path).collect())
}

/// [`load()`] with the environment variables from `var`.
fn load_with(
    git_dir: &Path,
    var: &dyn Fn(&str) -> Option<OsString>,
    config_parameters: Option<&str>,
) -> Result<gix_config::File, ConfigError> {
    use gix_config::file::{includes, init};
    let home = var("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from);
    let options = init::Options {
        includes: includes::Options::follow(
            gix_config::path::interpolate::Context {
                home_dir: home.as_deref(),
                // git's installation prefix (`%(prefix)/`) is unknown without asking git; and
                // `~user/` would need the non-reentrant `getpwnam`: such includes are skipped.
                git_install_dir: None,
                home_for_user: None,
            },
            includes::conditional::Context {
                git_dir: Some(git_dir),
                branch_name: None,
            },
        ),
        ..Default::default()
    };
    let mut file = gix_config::File::new(gix_config::file::Metadata::api());
    for (path, source, gentle) in file_sources(var, home.as_deref())? {
        if let Some(loaded) = load_file(&path, source, gentle, options)? {
            append(&mut file, loaded, &path)?;
        }
    }
    let local = git_dir.join("config");
    if let Some(loaded) = load_file(&local, gix_config::Source::Local, false, options)? {
        let worktree_config = loaded
            .boolean("extensions.worktreeConfig")
            .ok()
            .flatten()
            .unwrap_or(false);
        append(&mut file, loaded, &local)?;
        if worktree_config {
            let path = git_dir.join("config.worktree");
            if let Some(loaded) = load_file(&path, gix_config::Source::Worktree, false, options)? {
                append(&mut file, loaded, &path)?;
            }
        }
    }
    for (key, value) in environment_parameters(var)? {
        apply_parameter(&mut file, &key, Some(&value))?;
    }
    if let Some(parameters) = config_parameters {
        for (key, value) in parse_config_parameters(parameters)? {
            apply_parameter(&mut file, &key, value.as_deref())?;
        }
    }
    Ok(file)
}

/// The system and global files to read, in git's order, with whether a file that can't be
/// read for lack of permission is skipped (git is gentle with the global files only).
fn file_sources(
    var: &dyn Fn(&str) -> Option<OsString>,
    home: Option<&Path>,
) -> Result<Vec<(PathBuf, gix_config::Source, bool)>, ConfigError> {
    let mut sources = Vec::new();
    let no_system = match var("GIT_CONFIG_NOSYSTEM") {
        None => false,
        Some(value) => {
            let value = gix_path::os_str_into_bstr(&value)
                .ok()
                .map(|v| v.to_owned());
            match value
                .as_ref()
                .map(|v| gix_config::Boolean::try_from(v.as_bstr()))
            {
                Some(Ok(boolean)) => boolean.0,
                _ => {
                    return Err(ConfigError::Environment {
                        variable: "GIT_CONFIG_NOSYSTEM".into(),
                        reason: "not a boolean".into(),
                    })
                }
            }
        }
    };
    if !no_system {
        let system = var("GIT_CONFIG_SYSTEM").unwrap_or_else(|| SYSTEM_CONFIG.into());
        sources.push((PathBuf::from(system), gix_config::Source::System, false));
    }
    match var("GIT_CONFIG_GLOBAL") {
        Some(global) => sources.push((PathBuf::from(global), gix_config::Source::User, true)),
        None => {
            let xdg = var("XDG_CONFIG_HOME")
                .filter(|xdg| !xdg.is_empty())
                .map(|xdg| PathBuf::from(xdg).join("git"))
                .or_else(|| home.map(|home| home.join(".config").join("git")));
            if let Some(xdg) = xdg {
                sources.push((xdg.join("config"), gix_config::Source::Git, true));
            }
            if let Some(home) = home {
                sources.push((home.join(".gitconfig"), gix_config::Source::User, true));
            }
        }
    }
    Ok(sources)
}

/// One configuration file with its includes, or `None` if there is none at `path`.
fn load_file(
    path: &Path,
    source: gix_config::Source,
    gentle: bool,
    options: gix_config::file::init::Options<'_>,
) -> Result<Option<gix_config::File>, ConfigError> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let mut bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None)
        }
        Err(err) if gentle && err.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::debug!(path = %path.display(), %err, "configuration file skipped");
            return Ok(None);
        }
        Err(source) => {
            return Err(ConfigError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let metadata = gix_config::file::Metadata::from(source).at(path);
    gix_config::File::from_bytes_owned(&mut bytes, metadata, options)
        .map(Some)
        .map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })
}

fn append(
    file: &mut gix_config::File,
    other: gix_config::File,
    path: &Path,
) -> Result<(), ConfigError> {
    file.append(other)
        .map(drop)
        .map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })
}

/// git's `GIT_CONFIG_COUNT` with `GIT_CONFIG_KEY_<n>` and `GIT_CONFIG_VALUE_<n>`.
fn environment_parameters(
    var: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let text = |variable: String| -> Result<String, ConfigError> {
        var(&variable)
            .ok_or_else(|| ConfigError::Environment {
                variable: variable.clone(),
                reason: "missing".into(),
            })?
            .into_string()
            .map_err(|_| ConfigError::Environment {
                variable,
                reason: "not UTF-8".into(),
            })
    };
    let Some(count) = var("GIT_CONFIG_COUNT") else {
        return Ok(Vec::new());
    };
    let count: u32 = count
        .to_str()
        .and_then(|count| count.parse().ok())
        .filter(|count| *count <= i32::MAX as u32)
        .ok_or_else(|| ConfigError::Environment {
            variable: "GIT_CONFIG_COUNT".into(),
            reason: "bogus count".into(),
        })?;
    let mut out = Vec::new();
    for index in 0..count {
        out.push((
            text(format!("GIT_CONFIG_KEY_{index}"))?,
            text(format!("GIT_CONFIG_VALUE_{index}"))?,
        ));
    }
    Ok(out)
}

fn apply_parameter(
    file: &mut gix_config::File,
    key: &str,
    value: Option<&str>,
) -> Result<(), ConfigError> {
    let bad_key = || ConfigError::Parameters {
        reason: format!("invalid key {key:?}"),
    };
    let parsed = gix_config::KeyRef::parse_unvalidated(key.into()).ok_or_else(bad_key)?;
    let section_name = parsed.section_name.to_owned();
    let subsection = parsed.subsection_name.map(|s| s.to_owned());
    let value_name = parsed.value_name.to_owned();
    let mut section = file
        .section_mut_or_create_new(
            section_name.as_str(),
            subsection.as_ref().map(|s| s.as_bstr()),
        )
        .map_err(|source| ConfigError::Value {
            key: key.to_owned(),
            source,
        })?;
    section
        .push(value_name.as_str(), value.map(|v| v.as_bytes().as_bstr()))
        .map_err(|source| ConfigError::Value {
            key: key.to_owned(),
            source,
        })?;
    Ok(())
}

/// Split `GIT_CONFIG_PARAMETERS` into `(key, value)` pairs.
///
/// git writes each entry single-quoted, either as `'key=value'` (old style) or as
/// `'key'='value'` (since git 2.31), separated by spaces; a quote inside is written `'\''`.
/// A key without `=value` (`'key'`) is a boolean set to true and has no value.
pub fn parse_config_parameters(input: &str) -> Result<Vec<(String, Option<String>)>, ConfigError> {
    let mut out = Vec::new();
    let mut rest = input.trim_start();
    while !rest.is_empty() {
        let (first, after) = take_quoted(rest)?;
        rest = after;
        if let Some(after_eq) = rest.strip_prefix('=') {
            // New style: 'key'='value' (the value may be absent: 'key'=).
            if after_eq.starts_with('\'') {
                let (value, after) = take_quoted(after_eq)?;
                out.push((first, Some(value)));
                rest = after;
            } else {
                out.push((first, Some(String::new())));
                rest = after_eq;
            }
        } else {
            // Old style: 'key=value' or a bare 'key'.
            match first.split_once('=') {
                Some((key, value)) => out.push((key.to_owned(), Some(value.to_owned()))),
                None => out.push((first, None)),
            }
        }
        match rest.chars().next() {
            None => {}
            Some(c) if c.is_ascii_whitespace() => rest = rest.trim_start(),
            Some(c) => {
                return Err(ConfigError::Parameters {
                    reason: format!("unexpected {c:?} after an entry"),
                })
            }
        }
    }
    Ok(out)
}

/// Take one single-quoted word, joining `'\''` escapes, from the front of `input`.
fn take_quoted(input: &str) -> Result<(String, &str), ConfigError> {
    let mut word = String::new();
    let mut rest = input;
    loop {
        let Some(after_quote) = rest.strip_prefix('\'') else {
            return Err(ConfigError::Parameters {
                reason: format!("expected a quote at {rest:?}"),
            });
        };
        let Some(end) = after_quote.find('\'') else {
            return Err(ConfigError::Parameters {
                reason: "unterminated quote".into(),
            });
        };
        word.push_str(&after_quote[..end]);
        rest = &after_quote[end + 1..];
        // `'\''` continues the word with a literal quote.
        if let Some(after_escape) = rest.strip_prefix("\\'") {
            word.push('\'');
            rest = after_escape;
            if !rest.starts_with('\'') {
                return Ok((word, rest));
            }
        } else {
            return Ok((word, rest));
        }
    }
}

/// The configuration key of [`UploadPackConfig::restrict_v2_wants`].
pub const RESTRICT_V2_WANTS: &str = "packgate.restrictV2Wants";

/// The settings upload-pack honours.
#[derive(Debug, Clone)]
pub struct UploadPackConfig {
    /// `transfer.hideRefs` followed by `uploadpack.hideRefs`, in order.
    pub hide_refs: Vec<BString>,
    /// `uploadpack.allowTipSHA1InWant`: wants may name hidden ref tips.
    pub allow_tip_sha1_in_want: bool,
    /// `uploadpack.allowReachableSHA1InWant`: wants may name commits reachable from a visible ref.
    pub allow_reachable_sha1_in_want: bool,
    /// `uploadpack.allowAnySHA1InWant`: wants may name any object in the repository.
    pub allow_any_sha1_in_want: bool,
    /// `packgate.restrictV2Wants` (packgate's own key, off by default): hold protocol v2
    /// wants to the rules git applies to v0/v1 — a visible ref tip (or what a visible tag
    /// peels to), and beyond that only what the three `allow*SHA1InWant` settings allow — so
    /// objects of hidden refs stay unreachable by id. Off, a v2 want may name any object the
    /// repository has, as with git 2.47 (which applies the `allow*` settings to v0/v1 only;
    /// packgate serves no v0/v1 upload-pack yet).
    pub restrict_v2_wants: bool,
    /// `pack.threads`: threads for pack generation; `None` (or 0) uses every core.
    pub pack_threads: Option<usize>,
    /// `core.deltaBaseCacheLimit`: decoded objects each walking thread keeps while walking
    /// trees (git's default, 96 MiB, unless configured).
    pub delta_base_cache_limit: usize,
    /// `pack.useBitmaps` (default true, as in git): count a fetch's objects with the
    /// repository's reachability bitmap when it has one.
    pub use_bitmaps: bool,
    /// `pack.useSparse` (default true, as in git since 2.27): which trees of the boundary a
    /// fetch reads to learn what the client has — only the paths where the fetched commits
    /// changed something ([`packgate_pack::TreeExclusion::Sparse`]), or the boundary's trees
    /// whole ([`packgate_pack::TreeExclusion::EdgeCommits`]).
    pub use_sparse: bool,
    /// `uploadpack.keepAlive`: how long the pack may be silent (enumeration, the start of
    /// generation) before an empty keepalive packet goes out; `None` (0 or negative in the
    /// configuration) sends none. Git's default, 5 seconds, unless configured.
    pub keepalive: Option<Duration>,
    /// `lsrefs.unborn`: whether `ls-refs` advertises and honours `unborn`.
    pub lsrefs_unborn: UnbornPolicy,
    /// `uploadpack.allowRefInWant`: v2 `fetch` takes `want-ref <ref>` (advertised as
    /// `ref-in-want`).
    pub allow_ref_in_want: bool,
    /// `uploadpack.allowSidebandAll`: v2 `fetch` takes `sideband-all`, which puts the whole
    /// response in band 1. git's `GIT_TEST_SIDEBAND_ALL` is a test hook and not honoured.
    pub allow_sideband_all: bool,
    /// `uploadpack.blobPackfileUri`: objects a v2 client that asks for `packfile-uris`
    /// (with `sideband-all`) gets from a pre-built pack at a URI instead of in the pack.
    pub blob_packfile_uris: Vec<PackfileUri>,
    /// Why a `uploadpack.blobPackfileUri` value is not `<object-hash> <pack-hash> <uri>`:
    /// as with git, whose pack-objects reads them, it fails a fetch that asks for
    /// `packfile-uris`, not the session (git's t5702).
    pub blob_packfile_uri_error: Option<String>,
    /// `transfer.advertiseSID`: advertise `session-id=<id>` and accept the client's.
    pub advertise_sid: bool,
    /// `transfer.advertiseObjectInfo`: advertise and serve the v2 `object-info` command.
    pub advertise_object_info: bool,
    /// `uploadpack.advertiseBundleURIs`: advertise and serve the v2 `bundle-uri` command.
    pub advertise_bundle_uris: bool,
    /// Every `bundle.*` setting as git's `bundle-uri` command sends it: the key with its
    /// section and variable names lowercased (the subsection as written) and the value, in
    /// the configuration's order.
    pub bundle_settings: Vec<(BString, BString)>,
    /// `uploadpack.allowFilter`: partial clone filters are advertised and accepted (off by
    /// default, as in git).
    pub allow_filter: bool,
    /// Which filters `uploadpack.allowFilter` lets in: git's `uploadpackfilter.*` keys.
    pub filters: FilterPolicy,
    /// `packgate.refsWatch` (packgate's own key, on by default): advertise and serve refs
    /// tokens (`ls-refs=refs-token`, `if-none-match`) and the `wait-refs` command
    /// (docs/refs-watch.md).
    pub refs_watch: bool,
    /// `packgate.waitRefsMaxTimeout` (seconds, 600 by default): the longest `timeout` a
    /// `wait-refs` request may ask for.
    pub wait_refs_max_timeout: Duration,
}

/// The key that turns refs tokens and `wait-refs` off.
pub const REFS_WATCH: &str = "packgate.refsWatch";
/// The key of the longest wait a `wait-refs` request may ask for, in seconds.
pub const WAIT_REFS_MAX_TIMEOUT: &str = "packgate.waitRefsMaxTimeout";
/// The default of [`WAIT_REFS_MAX_TIMEOUT`].
pub const DEFAULT_WAIT_REFS_MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// Read `packgate.waitRefsMaxTimeout`: a number of seconds, 0 or more.
fn wait_refs_max_timeout(config: &gix_config::File) -> Result<Duration, ConfigError> {
    let Some(seconds) =
        config
            .integer(WAIT_REFS_MAX_TIMEOUT)
            .map_err(|source| ConfigError::Value {
                key: WAIT_REFS_MAX_TIMEOUT.to_owned(),
                source,
            })?
    else {
        return Ok(DEFAULT_WAIT_REFS_MAX_TIMEOUT);
    };
    u64::try_from(seconds)
        .map(Duration::from_secs)
        .map_err(|_| ConfigError::Invalid {
            key: WAIT_REFS_MAX_TIMEOUT.to_owned(),
            value: seconds.to_string().into(),
        })
}

/// What `lsrefs.unborn` asks of `ls-refs` about an unborn `HEAD`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnbornPolicy {
    /// `advertise` (git's default): advertise `ls-refs=unborn` and answer `unborn`.
    #[default]
    Advertise,
    /// `allow`: answer a client's `unborn` without advertising it.
    Allow,
    /// `ignore`: neither; the client names no branch for an empty repository.
    Ignore,
}

impl UnbornPolicy {
    /// Read `lsrefs.unborn`; an unknown value is an error, as in git.
    fn from_config(config: &gix_config::File) -> Result<Self, ConfigError> {
        const KEY: &str = "lsrefs.unborn";
        let Some(value) = config.string(KEY) else {
            return Ok(UnbornPolicy::default());
        };
        let value: &BStr = value.as_ref();
        match value.as_bytes() {
            b"advertise" => Ok(UnbornPolicy::Advertise),
            b"allow" => Ok(UnbornPolicy::Allow),
            b"ignore" => Ok(UnbornPolicy::Ignore),
            _ => Err(ConfigError::Invalid {
                key: KEY.to_owned(),
                value: value.to_owned(),
            }),
        }
    }
}

/// One `uploadpack.blobPackfileUri` value: `<object-hash> <pack-hash> <uri>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackfileUri {
    /// The object left out of packs for clients that can download it.
    pub object: ObjectId,
    /// The checksum of the pre-built pack (the client checks the download against it).
    pub pack_hash: String,
    /// Where the pack is.
    pub uri: BString,
}

/// Parse the `uploadpack.blobPackfileUri` values, refusing what git's pack-objects refuses.
fn packfile_uris(values: Vec<BString>) -> Result<Vec<PackfileUri>, ConfigError> {
    let mut out: Vec<PackfileUri> = Vec::new();
    for value in values {
        let malformed = || {
            ConfigError::PackfileUri(format!(
                "value of uploadpack.blobpackfileuri must be of the form \
                 '<object-hash> <pack-hash> <uri>' (got '{}')",
                value.as_bstr()
            ))
        };
        let mut parts = value.splitn(3, |byte| *byte == b' ');
        let (Some(object), Some(pack_hash), Some(uri)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let object = ObjectId::from_hex(object).map_err(|_| malformed())?;
        ObjectId::from_hex(pack_hash).map_err(|_| malformed())?;
        if out.iter().any(|configured| configured.object == object) {
            return Err(ConfigError::PackfileUri(format!(
                "object already configured in another uploadpack.blobpackfileuri (got '{}')",
                value.as_bstr()
            )));
        }
        out.push(PackfileUri {
            object,
            pack_hash: String::from_utf8_lossy(pack_hash).into_owned(),
            uri: uri.into(),
        });
    }
    Ok(out)
}

/// Every `bundle.*` setting with a value, keys spelled as git's configuration callbacks see
/// them (`bundle.<id>.uri`, `bundle.mode`).
fn bundle_settings(config: &gix_config::File) -> Vec<(BString, BString)> {
    let mut out = Vec::new();
    for section in config.sections() {
        let header = section.header();
        if !header.name().eq_ignore_ascii_case(b"bundle") {
            continue;
        }
        let mut prefix = BString::from("bundle.");
        if let Some(subsection) = header.subsection_name() {
            prefix.extend_from_slice(subsection);
            prefix.push(b'.');
        }
        let mut seen: Vec<String> = Vec::new();
        for name in section.body().value_names() {
            let name = name.to_ascii_lowercase();
            if seen.contains(&name) {
                continue;
            }
            for value in section.body().values(&name) {
                let mut key = prefix.clone();
                key.extend_from_slice(name.as_bytes());
                out.push((key, value));
            }
            seen.push(name);
        }
    }
    out
}

/// Which partial clone filters the server accepts, and up to which `tree:` depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterPolicy {
    /// `uploadpackfilter.allow`: whether a filter without a setting of its own is accepted
    /// (default true).
    pub fallback: bool,
    /// `uploadpackfilter.<filter>.allow` for filter names as git spells them (`blob:none`,
    /// `blob:limit`, `tree`, `sparse:oid`, `object:type`, `combine`).
    pub allowed: Vec<(String, bool)>,
    /// `uploadpackfilter.tree.maxDepth`: the deepest `tree:<depth>` accepted (setting it
    /// also allows `tree` unless `uploadpackfilter.tree.allow` says otherwise).
    pub tree_max_depth: Option<u64>,
}

impl Default for FilterPolicy {
    fn default() -> Self {
        FilterPolicy {
            fallback: true,
            allowed: Vec::new(),
            tree_max_depth: None,
        }
    }
}

/// The filter names `uploadpackfilter.<name>.allow` knows.
const FILTER_NAMES: [&str; 6] = [
    "blob:none",
    "blob:limit",
    "tree",
    "sparse:oid",
    "object:type",
    "combine",
];

impl FilterPolicy {
    /// Read git's `uploadpackfilter.*` keys.
    pub fn from_config(config: &gix_config::File) -> Result<Self, ConfigError> {
        let boolean = |key: &str| -> Result<Option<bool>, ConfigError> {
            config.boolean(key).map_err(|source| ConfigError::Value {
                key: key.to_owned(),
                source,
            })
        };
        let mut policy = FilterPolicy {
            fallback: boolean("uploadpackfilter.allow")?.unwrap_or(true),
            ..FilterPolicy::default()
        };
        let key = "uploadpackfilter.tree.maxDepth";
        // `-c uploadpackfilter.tree.maxDepth` without a value: git refuses to start.
        let valueless = match config.string(key) {
            Some(value) => value.is_empty(),
            None => config.boolean(key).ok().flatten().is_some(),
        };
        if valueless {
            return Err(ConfigError::Unparsable {
                key: key.to_ascii_lowercase(),
            });
        }
        policy.tree_max_depth = config
            .integer(key)
            .map_err(|_| ConfigError::Unparsable {
                key: key.to_ascii_lowercase(),
            })?
            .map(|depth| u64::try_from(depth).unwrap_or(0));
        for name in FILTER_NAMES {
            let allowed = boolean(&format!("uploadpackfilter.{name}.allow"))?;
            let allowed = match (name, allowed) {
                (_, Some(allowed)) => Some(allowed),
                ("tree", None) if policy.tree_max_depth.is_some() => Some(true),
                (_, None) => None,
            };
            if let Some(allowed) = allowed {
                policy.allowed.push((name.to_owned(), allowed));
            }
        }
        Ok(policy)
    }

    /// Refuse a filter this policy does not allow, with git's message.
    pub fn check(&self, spec: &packgate_pack::filter::FilterSpec) -> Result<(), String> {
        for spec in spec.all() {
            let name = spec.config_name();
            let allowed = self
                .allowed
                .iter()
                .find(|(allowed, _)| allowed == name)
                .map_or(self.fallback, |(_, allowed)| *allowed);
            if !allowed {
                return Err(format!("filter '{name}' not supported"));
            }
            if let (packgate_pack::filter::FilterSpec::TreeDepth(depth), Some(max)) =
                (spec, self.tree_max_depth)
            {
                if *depth > max {
                    return Err(format!(
                        "tree filter allows max depth {max}, but got {depth}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// git's default for `uploadpack.keepAlive` and `receive.keepAlive`, in seconds.
pub const DEFAULT_KEEPALIVE_SECONDS: u64 = 5;

/// Read a keepalive interval in seconds (`uploadpack.keepAlive`, `receive.keepAlive`): git's
/// default when unset, `None` when 0 or negative.
pub(crate) fn keepalive(
    config: &gix_config::File,
    key: &str,
) -> Result<Option<Duration>, ConfigError> {
    let seconds = config
        .integer(key)
        .map_err(|source| ConfigError::Value {
            key: key.to_owned(),
            source,
        })?
        .unwrap_or(DEFAULT_KEEPALIVE_SECONDS as i64);
    Ok(u64::try_from(seconds)
        .ok()
        .filter(|seconds| *seconds > 0)
        .map(Duration::from_secs))
}

impl Default for UploadPackConfig {
    fn default() -> Self {
        UploadPackConfig {
            hide_refs: Vec::new(),
            allow_tip_sha1_in_want: false,
            allow_reachable_sha1_in_want: false,
            allow_any_sha1_in_want: false,
            restrict_v2_wants: false,
            pack_threads: None,
            delta_base_cache_limit: packgate_pack::reader::DEFAULT_CACHE_BYTES,
            use_bitmaps: true,
            use_sparse: true,
            keepalive: Some(Duration::from_secs(DEFAULT_KEEPALIVE_SECONDS)),
            lsrefs_unborn: UnbornPolicy::default(),
            allow_ref_in_want: false,
            allow_sideband_all: false,
            blob_packfile_uris: Vec::new(),
            blob_packfile_uri_error: None,
            advertise_sid: false,
            advertise_object_info: false,
            advertise_bundle_uris: false,
            bundle_settings: Vec::new(),
            allow_filter: false,
            filters: FilterPolicy::default(),
            refs_watch: true,
            wait_refs_max_timeout: DEFAULT_WAIT_REFS_MAX_TIMEOUT,
        }
    }
}

impl UploadPackConfig {
    /// Read the settings from `config`.
    pub fn from_config(config: &gix_config::File) -> Result<Self, ConfigError> {
        let packfile_uri_values = config
            .strings("uploadpack.blobPackfileUri")
            .unwrap_or_default();
        // A key without a value stops git's upload-pack at once; malformed values only the
        // fetches that would use them.
        if packfile_uri_values.iter().any(|value| value.is_empty()) {
            return Err(ConfigError::PackfileUri(
                "missing value for 'uploadpack.blobpackfileuri'".into(),
            ));
        }
        let packfile_uris = packfile_uris(packfile_uri_values);
        let boolean = |key: &str| -> Result<bool, ConfigError> {
            config
                .boolean(key)
                .map(|v| v.unwrap_or(false))
                .map_err(|source| ConfigError::Value {
                    key: key.to_owned(),
                    source,
                })
        };
        let hide_refs = hide_refs(config, "uploadpack");
        let allow_any = boolean("uploadpack.allowAnySHA1InWant")?;
        let pack_threads = config
            .integer("pack.threads")
            .map_err(|source| ConfigError::Value {
                key: "pack.threads".into(),
                source,
            })?
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0);
        let delta_base_cache_limit = config
            .integer("core.deltaBaseCacheLimit")
            .map_err(|source| ConfigError::Value {
                key: "core.deltaBaseCacheLimit".into(),
                source,
            })?
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(packgate_pack::reader::DEFAULT_CACHE_BYTES);
        Ok(UploadPackConfig {
            hide_refs,
            allow_tip_sha1_in_want: allow_any || boolean("uploadpack.allowTipSHA1InWant")?,
            allow_reachable_sha1_in_want: allow_any
                || boolean("uploadpack.allowReachableSHA1InWant")?,
            allow_any_sha1_in_want: allow_any,
            restrict_v2_wants: boolean(RESTRICT_V2_WANTS)?,
            pack_threads,
            delta_base_cache_limit,
            use_bitmaps: config
                .boolean("pack.useBitmaps")
                .map_err(|source| ConfigError::Value {
                    key: "pack.useBitmaps".into(),
                    source,
                })?
                .unwrap_or(true),
            use_sparse: config
                .boolean("pack.useSparse")
                .map_err(|source| ConfigError::Value {
                    key: "pack.useSparse".into(),
                    source,
                })?
                .unwrap_or(true),
            keepalive: keepalive(config, "uploadpack.keepAlive")?,
            lsrefs_unborn: UnbornPolicy::from_config(config)?,
            allow_ref_in_want: boolean("uploadpack.allowRefInWant")?,
            allow_sideband_all: boolean("uploadpack.allowSidebandAll")?,
            blob_packfile_uris: packfile_uris.as_ref().cloned().unwrap_or_default(),
            blob_packfile_uri_error: packfile_uris.err().map(|err| err.to_string()),
            advertise_sid: boolean("transfer.advertiseSID")?,
            advertise_object_info: boolean("transfer.advertiseObjectInfo")?,
            advertise_bundle_uris: boolean("uploadpack.advertiseBundleURIs")?,
            bundle_settings: bundle_settings(config),
            allow_filter: boolean("uploadpack.allowFilter")?,
            filters: FilterPolicy::from_config(config)?,
            refs_watch: config
                .boolean(REFS_WATCH)
                .map_err(|source| ConfigError::Value {
                    key: REFS_WATCH.to_owned(),
                    source,
                })?
                .unwrap_or(true),
            wait_refs_max_timeout: wait_refs_max_timeout(config)?,
        })
    }

    /// Whether `refname` (as the clients of `namespace` name it) is hidden by the `hideRefs`
    /// rules, with git's semantics: the last matching rule wins, `!` negates, a rule matches
    /// the ref itself or anything below it, and a `^` rule matches the full name, with the
    /// namespace's prefix.
    pub fn is_hidden(&self, refname: &[u8], namespace: Option<&crate::refname::Namespace>) -> bool {
        if self.hide_refs.is_empty() {
            return false;
        }
        let full = crate::refname::full_name(namespace, refname);
        self.is_hidden_as(Some(refname), &full)
    }

    /// [`UploadPackConfig::is_hidden()`] for a ref whose name is `full` in the repository and
    /// `stripped` for the namespace's clients (`None`: outside the namespace, which only
    /// `^` rules can match).
    pub fn is_hidden_as(&self, stripped: Option<&[u8]>, full: &[u8]) -> bool {
        for rule in self.hide_refs.iter().rev() {
            let (negated, pattern) = match rule.strip_prefix(b"!") {
                Some(rest) => (true, rest),
                None => (false, rule.as_slice()),
            };
            let (subject, pattern) = match pattern.strip_prefix(b"^") {
                Some(rest) => (Some(full), rest),
                None => (stripped, pattern),
            };
            let Some(subject) = subject else {
                continue;
            };
            // git trims every trailing slash (`refs/x//` hides what `refs/x` does).
            let mut pattern = pattern;
            while let Some(trimmed) = pattern.strip_suffix(b"/") {
                pattern = trimmed;
            }
            if let Some(rest) = subject.strip_prefix(pattern) {
                if rest.is_empty() || rest.starts_with(b"/") {
                    return !negated;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &[(&str, Option<&str>)]) {
        let parsed = parse_config_parameters(input).unwrap();
        let expected: Vec<_> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect();
        assert_eq!(parsed, expected, "input: {input}");
    }

    #[test]
    fn config_parameters() {
        check("", &[]);
        check("'core.bare=true'", &[("core.bare", Some("true"))]);
        check(
            "'a.b'='c' 'd.e'='f g'",
            &[("a.b", Some("c")), ("d.e", Some("f g"))],
        );
        check("'a.b'='it'\\''s'", &[("a.b", Some("it's"))]);
        check("'a.flag'", &[("a.flag", None)]);
        check("'a.b'=", &[("a.b", Some(""))]);
        assert!(parse_config_parameters("'unterminated").is_err());
        assert!(parse_config_parameters("noquote").is_err());
        assert!(parse_config_parameters("'a.b'x").is_err());
    }

    #[test]
    fn packfile_uri_values() {
        let object = "1".repeat(40);
        let pack = "2".repeat(40);
        let parsed = packfile_uris(vec![format!("{object} {pack} https://x/p a").into()]).unwrap();
        assert_eq!(
            parsed,
            vec![PackfileUri {
                object: ObjectId::from_hex(object.as_bytes()).unwrap(),
                pack_hash: pack.clone(),
                uri: "https://x/p a".into(),
            }]
        );
        for bad in [
            format!("{object} {pack}"),
            format!("{object} xyz u"),
            "u".into(),
        ] {
            let err = packfile_uris(vec![bad.clone().into()])
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("value of uploadpack.blobpackfileuri must be"),
                "{bad}: {err}"
            );
        }
        let twice = format!("{object} {pack} u");
        let err = packfile_uris(vec![twice.clone().into(), twice.into()]).unwrap_err();
        assert!(
            err.to_string().starts_with("object already configured"),
            "{err}"
        );
    }

    #[test]
    fn hidden_refs() {
        let config = UploadPackConfig {
            hide_refs: vec![
                "refs/hidden".into(),
                "!refs/hidden/shown".into(),
                "refs/pull/".into(),
                "refs/secret//".into(),
            ],
            ..Default::default()
        };
        assert!(config.is_hidden(b"refs/hidden", None));
        assert!(config.is_hidden(b"refs/hidden/x", None));
        assert!(!config.is_hidden(b"refs/hidden/shown", None));
        assert!(!config.is_hidden(b"refs/hiddenx", None));
        assert!(config.is_hidden(b"refs/pull/1/head", None));
        assert!(config.is_hidden(b"refs/secret/x", None));
        assert!(!config.is_hidden(b"refs/heads/main", None));
    }

    #[test]
    fn hidden_refs_in_a_namespace() {
        let config = UploadPackConfig {
            hide_refs: vec![
                "refs/tags".into(),
                "^refs/namespaces/x/refs/heads/secret".into(),
                "^refs/namespaces/y".into(),
            ],
            ..Default::default()
        };
        let x = crate::refname::Namespace::new(b"x").unwrap();
        let x = x.as_ref();
        assert!(
            config.is_hidden(b"refs/tags/v1", x),
            "plain rules see stripped names"
        );
        assert!(!config.is_hidden(b"refs/namespaces/x/refs/tags/v1", None));
        assert!(
            config.is_hidden(b"refs/heads/secret", x),
            "^ rules see full names"
        );
        assert!(!config.is_hidden(b"refs/heads/secret", None));
        assert!(!config.is_hidden(b"refs/heads/main", x));
        assert!(config.is_hidden_as(None, b"refs/namespaces/y/refs/heads/a"));
        assert!(
            !config.is_hidden_as(None, b"refs/tags/v1"),
            "outside: only ^ rules apply"
        );
    }

    #[test]
    fn filter_policy_as_git() {
        let policy = |text: &str| {
            let file: gix_config::File = text.parse().unwrap();
            let config = UploadPackConfig::from_config(&file).unwrap();
            (config.allow_filter, config.filters)
        };
        let check = |policy: &FilterPolicy, spec: &str| {
            policy.check(&packgate_pack::filter::FilterSpec::parse(spec.as_bytes()).unwrap())
        };
        let (allowed, default) = policy("");
        assert!(!allowed, "off by default");
        assert_eq!(check(&default, "combine:tree:9+blob:none"), Ok(()));
        let (allowed, strict) = policy(
            "[uploadpack]\n\tallowFilter\n[uploadpackfilter]\n\tallow = false\n             [uploadpackfilter \"blob:none\"]\n\tallow = true\n             [uploadpackfilter \"tree\"]\n\tmaxDepth = 2\n",
        );
        assert!(allowed);
        assert_eq!(check(&strict, "blob:none"), Ok(()));
        assert_eq!(check(&strict, "tree:2"), Ok(()));
        assert_eq!(
            check(&strict, "tree:3"),
            Err("tree filter allows max depth 2, but got 3".into())
        );
        assert_eq!(
            check(&strict, "blob:limit=1"),
            Err("filter 'blob:limit' not supported".into())
        );
        assert_eq!(
            check(&strict, "combine:blob:none+tree:1"),
            Err("filter 'combine' not supported".into())
        );
        let (_, no_tree) = policy("[uploadpackfilter \"tree\"]\n\tallow = false\n\tmaxDepth = 1\n");
        assert_eq!(
            check(&no_tree, "tree:0"),
            Err("filter 'tree' not supported".into())
        );
    }

    #[test]
    fn hide_refs_keep_the_configurations_order() {
        let rules = |text: &str| {
            let file: gix_config::File = text.parse().unwrap();
            let config = UploadPackConfig::from_config(&file).unwrap();
            (
                config.hide_refs.clone(),
                config.is_hidden(b"refs/secret/x", None),
            )
        };
        // The later rule decides, whichever of the two keys holds it (as in git).
        assert_eq!(
            rules(
                "[uploadpack]\n\thideRefs = !refs/secret\n[transfer]\n\thideRefs = refs/secret\n"
            ),
            (vec!["!refs/secret".into(), "refs/secret".into()], true)
        );
        assert_eq!(
            rules(
                "[transfer]\n\thideRefs = refs/secret\n[uploadpack]\n\thideRefs = !refs/secret\n"
            ),
            (vec!["refs/secret".into(), "!refs/secret".into()], false)
        );
        // Another service's rules and subsections do not count.
        assert_eq!(
            rules(
                "[receive]\n\thideRefs = refs/secret\n[transfer \"x\"]\n\thideRefs = refs/secret\n"
            ),
            (Vec::new(), false)
        );
    }

    #[test]
    fn parameters_override_repository_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config"),
            "[uploadpack]\n\tallowTipSHA1InWant = false\n",
        )
        .unwrap();
        let file = load(
            dir.path(),
            Some("'uploadpack.allowTipSHA1InWant'='true' 'transfer.hideRefs'='refs/x'"),
        )
        .unwrap();
        let config = UploadPackConfig::from_config(&file).unwrap();
        assert!(config.allow_tip_sha1_in_want);
        assert_eq!(
            config.delta_base_cache_limit,
            packgate_pack::reader::DEFAULT_CACHE_BYTES
        );
        let small = load(dir.path(), Some("'core.deltaBaseCacheLimit'='16m'")).unwrap();
        let small = UploadPackConfig::from_config(&small).unwrap();
        assert_eq!(small.delta_base_cache_limit, 16 * 1024 * 1024);
        assert_eq!(config.hide_refs, vec![BString::from("refs/x")]);
    }

    /// The files and variables git reads, in git's order of precedence, found from the
    /// environment alone.
    #[test]
    fn sources_in_gits_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |relative: &str, text: &str| {
            let path = root.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        // Each file sets its own key and overrides `t.order`.
        write("etc/gitconfig", "[t]\n\torder = system\n\tsystem = yes\n");
        write("xdg/git/config", "[t]\n\torder = xdg\n\txdg = yes\n");
        write(
            "home/.gitconfig",
            "[t]\n\torder = user\n\tuser = yes\n[include]\n\tpath = ~/included\n",
        );
        write("home/included", "[t]\n\tincluded = yes\n");
        write("global", "[t]\n\torder = global\n\tglobal = yes\n");
        write("repo.git/config", "[t]\n\torder = local\n\tlocal = yes\n");
        let git_dir = root.join("repo.git");
        let vars = |pairs: &[(&str, &str)]| -> Vec<(String, OsString)> {
            pairs
                .iter()
                .map(|(name, value)| {
                    let value = value.replace("ROOT", &root.to_string_lossy());
                    (name.to_string(), OsString::from(value))
                })
                .collect()
        };
        let load = |env: &[(String, OsString)], parameters: Option<&str>| {
            let var = |name: &str| {
                env.iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, value)| value.clone())
            };
            load_with(&git_dir, &var, parameters).unwrap()
        };
        let value = |file: &gix_config::File, key: &str| file.string(key).map(|v| v.to_string());
        let base = vars(&[
            ("HOME", "ROOT/home"),
            ("XDG_CONFIG_HOME", "ROOT/xdg"),
            ("GIT_CONFIG_SYSTEM", "ROOT/etc/gitconfig"),
        ]);
        let file = load(&base, None);
        for key in ["system", "xdg", "user", "included", "local"] {
            assert_eq!(
                value(&file, &format!("t.{key}")).as_deref(),
                Some("yes"),
                "{key}"
            );
        }
        assert_eq!(value(&file, "t.order").as_deref(), Some("local"));
        assert_eq!(value(&file, "t.global"), None);

        let mut overridden = base.clone();
        overridden.extend(vars(&[
            ("GIT_CONFIG_COUNT", "2"),
            ("GIT_CONFIG_KEY_0", "t.order"),
            ("GIT_CONFIG_VALUE_0", "count"),
            ("GIT_CONFIG_KEY_1", "t.count"),
            ("GIT_CONFIG_VALUE_1", "yes"),
        ]));
        let file = load(&overridden, None);
        assert_eq!(value(&file, "t.order").as_deref(), Some("count"));
        assert_eq!(value(&file, "t.count").as_deref(), Some("yes"));
        let file = load(&overridden, Some("'t.order'='parameters'"));
        assert_eq!(value(&file, "t.order").as_deref(), Some("parameters"));

        // GIT_CONFIG_GLOBAL replaces both global files; GIT_CONFIG_NOSYSTEM drops the system one.
        let mut replaced = base.clone();
        replaced.extend(vars(&[
            ("GIT_CONFIG_GLOBAL", "ROOT/global"),
            ("GIT_CONFIG_NOSYSTEM", "true"),
        ]));
        let file = load(&replaced, None);
        assert_eq!(value(&file, "t.global").as_deref(), Some("yes"));
        for key in ["system", "xdg", "user"] {
            assert_eq!(value(&file, &format!("t.{key}")), None, "{key}");
        }
        // Without XDG_CONFIG_HOME, the XDG file is below $HOME/.config.
        write("home/.config/git/config", "[t]\n\thomexdg = yes\n");
        let file = load(
            &vars(&[("HOME", "ROOT/home"), ("GIT_CONFIG_NOSYSTEM", "1")]),
            None,
        );
        assert_eq!(value(&file, "t.homexdg").as_deref(), Some("yes"));
        assert_eq!(value(&file, "t.system"), None);

        let var = |name: &str| (name == "GIT_CONFIG_COUNT").then(|| OsString::from("1"));
        assert!(matches!(
            load_with(&git_dir, &var, None),
            Err(ConfigError::Environment { .. })
        ));
    }

    #[test]
    fn keepalive_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let check = |parameters: Option<&str>, expected: Option<u64>| {
            let file = load(dir.path(), parameters).unwrap();
            assert_eq!(
                keepalive(&file, "uploadpack.keepAlive").unwrap(),
                expected.map(Duration::from_secs),
                "{parameters:?}"
            );
        };
        check(None, Some(5));
        check(Some("'uploadpack.keepAlive'='1'"), Some(1));
        check(Some("'uploadpack.keepAlive'='0'"), None);
        check(Some("'uploadpack.keepAlive'='-1'"), None);
        let file = load(dir.path(), Some("'uploadpack.keepAlive'='soon'")).unwrap();
        assert!(UploadPackConfig::from_config(&file).is_err());
        let file = load(dir.path(), Some("'uploadpack.keepAlive'='2'")).unwrap();
        let config = UploadPackConfig::from_config(&file).unwrap();
        assert_eq!(config.keepalive, Some(Duration::from_secs(2)));
    }
}
