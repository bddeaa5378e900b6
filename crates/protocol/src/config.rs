//! Configuration, read the way git reads it: the repository's configuration (with git's
//! global and `GIT_CONFIG_COUNT` sources) and then the `-c` overrides that git passes down in
//! `GIT_CONFIG_PARAMETERS`.

use std::{path::Path, time::Duration};

use bstr::{BString, ByteSlice};

/// The error returned by [`load()`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file could not be read or parsed.
    #[error("could not read the configuration of {path}")]
    Read {
        /// The repository's git directory.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: gix_error::Error,
    },
    /// `GIT_CONFIG_PARAMETERS` is not in git's quoting format.
    #[error("GIT_CONFIG_PARAMETERS is malformed: {reason}")]
    Parameters {
        /// What is wrong with it.
        reason: String,
    },
    /// A value has the wrong type.
    #[error("bad value for {key}")]
    Value {
        /// The configuration key.
        key: String,
        /// What went wrong.
        #[source]
        source: gix_error::Error,
    },
}

/// Load the configuration of the repository at `git_dir`, then apply `config_parameters`
/// (the value of `GIT_CONFIG_PARAMETERS`, if any) on top.
pub fn load(
    git_dir: &Path,
    config_parameters: Option<&str>,
) -> Result<gix_config::File, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: git_dir.to_owned(),
        source,
    };
    // git serves a repository without a config file; so do we, with the overrides alone.
    let mut file = if git_dir.join("config").is_file() {
        gix_config::File::from_git_dir(git_dir.to_owned()).map_err(read_error)?
    } else {
        gix_config::File::from_environment_overrides().map_err(read_error)?
    };
    if let Some(parameters) = config_parameters {
        for (key, value) in parse_config_parameters(parameters)? {
            apply_parameter(&mut file, &key, value.as_deref())?;
        }
    }
    Ok(file)
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
    /// `uploadpack.keepAlive`: how long the pack may be silent (enumeration, the start of
    /// generation) before an empty keepalive packet goes out; `None` (0 or negative in the
    /// configuration) sends none. Git's default, 5 seconds, unless configured.
    pub keepalive: Option<Duration>,
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
            keepalive: Some(Duration::from_secs(DEFAULT_KEEPALIVE_SECONDS)),
        }
    }
}

impl UploadPackConfig {
    /// Read the settings from `config`.
    pub fn from_config(config: &gix_config::File) -> Result<Self, ConfigError> {
        let boolean = |key: &str| -> Result<bool, ConfigError> {
            config
                .boolean(key)
                .map(|v| v.unwrap_or(false))
                .map_err(|source| ConfigError::Value {
                    key: key.to_owned(),
                    source,
                })
        };
        let mut hide_refs = config.strings("transfer.hideRefs").unwrap_or_default();
        hide_refs.extend(config.strings("uploadpack.hideRefs").unwrap_or_default());
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
            keepalive: keepalive(config, "uploadpack.keepAlive")?,
        })
    }

    /// Whether `refname` is hidden by the `hideRefs` rules, with git's semantics: the last
    /// matching rule wins, `!` negates, and a rule matches the ref itself or anything below it.
    pub fn is_hidden(&self, refname: &[u8]) -> bool {
        for rule in self.hide_refs.iter().rev() {
            let (negated, pattern) = match rule.strip_prefix(b"!") {
                Some(rest) => (true, rest),
                None => (false, rule.as_slice()),
            };
            // `^` asks for the full name, before namespaces are stripped; packgate serves no
            // namespaces, so both forms compare against the same name.
            let pattern = pattern.strip_prefix(b"^").unwrap_or(pattern);
            let pattern = pattern.strip_suffix(b"/").unwrap_or(pattern);
            if let Some(rest) = refname.strip_prefix(pattern) {
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
    fn hidden_refs() {
        let config = UploadPackConfig {
            hide_refs: vec![
                "refs/hidden".into(),
                "!refs/hidden/shown".into(),
                "refs/pull/".into(),
            ],
            ..Default::default()
        };
        assert!(config.is_hidden(b"refs/hidden"));
        assert!(config.is_hidden(b"refs/hidden/x"));
        assert!(!config.is_hidden(b"refs/hidden/shown"));
        assert!(!config.is_hidden(b"refs/hiddenx"));
        assert!(config.is_hidden(b"refs/pull/1/head"));
        assert!(!config.is_hidden(b"refs/heads/main"));
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
