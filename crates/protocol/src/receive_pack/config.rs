//! The settings receive-pack honours, read from the repository's configuration.

use std::path::PathBuf;

use bstr::{BString, ByteSlice};

use crate::config::{ConfigError, UploadPackConfig};

/// What to do about a push that touches the checked-out branch (`receive.denyCurrentBranch`,
/// `receive.denyDeleteCurrent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Deny {
    /// Not configured: refuse, and explain how to configure it.
    #[default]
    Unconfigured,
    /// Allow it.
    Ignore,
    /// Allow it with a warning to the client.
    Warn,
    /// Refuse it.
    Refuse,
    /// `updateInstead`: update the work tree too (or let the `push-to-checkout` hook do it);
    /// for a deletion of the current branch, refuse.
    UpdateInstead,
}

impl Deny {
    fn parse(key: &str, value: Option<&[u8]>) -> Result<Deny, ConfigError> {
        let Some(value) = value else {
            return Ok(Deny::Unconfigured);
        };
        Ok(match value.to_ascii_lowercase().as_slice() {
            b"ignore" => Deny::Ignore,
            b"warn" => Deny::Warn,
            b"refuse" => Deny::Refuse,
            b"updateinstead" => Deny::UpdateInstead,
            other => match gix_config::Boolean::try_from(other.as_bstr()) {
                Ok(boolean) if boolean.0 => Deny::Refuse,
                Ok(_) => Deny::Ignore,
                Err(source) => {
                    return Err(ConfigError::Value {
                        key: key.to_owned(),
                        source,
                    })
                }
            },
        })
    }
}

/// How long a quarantine directory may stay unchanged before a push removes it: one day.
pub const DEFAULT_QUARANTINE_EXPIRY_SECONDS: u64 = 24 * 60 * 60;

use crate::config::lock_timeout;

/// The default of `receive.maxObjectSize`: 2 GiB, twice the largest object git's
/// `core.bigFileThreshold` default lets a client deltify, and more than most hosts accept.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 2 << 30;

/// The default of `core.bigFileThreshold`, git's.
pub const DEFAULT_BIG_FILE_THRESHOLD: u64 = 512 << 20;

/// The settings receive-pack honours.
#[derive(Debug, Clone)]
pub struct ReceivePackConfig {
    /// `receive.denyNonFastForwards`: refuse branch updates that drop commits.
    pub deny_non_fast_forwards: bool,
    /// `receive.denyDeletes`: refuse deleting branches.
    pub deny_deletes: bool,
    /// `receive.denyCurrentBranch`.
    pub deny_current_branch: Deny,
    /// `receive.denyDeleteCurrent`.
    pub deny_delete_current: Deny,
    /// `receive.fsckObjects`, falling back to `transfer.fsckObjects`.
    pub fsck_objects: bool,
    /// `receive.fsck.<msg-id>` severities, in the configuration's order (not `fsck.*`: git's
    /// receive-pack does not fall back on them either).
    pub fsck_options: packgate_pack::ingest::FsckOptions,
    /// `receive.fsck.skipList` files, in order, as configured (`~` expanded; a relative path
    /// is taken in the git directory, where git's index-pack runs): their objects are never
    /// reported. Read for each push
    /// that is checked, as git's index-pack reads them.
    pub fsck_skip_lists: Vec<PathBuf>,
    /// `receive.fsck.<msg-id>` keys that name no fsck message: git's receive-pack warns
    /// "skipping unknown msg id" and goes on.
    pub fsck_unknown_ids: Vec<String>,
    /// `receive.maxInputSize`: the most bytes a pack may have (`None`: unlimited).
    pub max_input_size: Option<u64>,
    /// `receive.maxObjects` (packgate's own): the most objects a pack may have.
    pub max_objects: Option<u32>,
    /// `receive.maxObjectSize` (packgate's own): the largest object a push may bring, as its
    /// pack entry or a delta's result declares it. Default [`DEFAULT_MAX_OBJECT_SIZE`].
    pub max_object_size: u64,
    /// `core.bigFileThreshold`: larger blobs are hashed while they stream in, never held in
    /// memory. Default 512 MiB, as git's.
    pub big_file_threshold: u64,
    /// `receive.unpackLimit`, falling back to `transfer.unpackLimit`, 100 by default: a push
    /// of fewer objects is stored as loose objects rather than as a pack of its own.
    pub unpack_limit: u32,
    /// `core.hooksPath`, or `<git dir>/hooks`.
    pub hooks_dir: PathBuf,
    /// `receive.hookTimeout` (packgate's own), in seconds: how long one hook script may run.
    pub hook_timeout_seconds: Option<u64>,
    /// `core.filesRefLockTimeout`: how long a ref update waits for another process's lock
    /// on that ref (`<ref>.lock`) before the ref fails. git's default, 100 ms; negative: wait
    /// (practically) forever.
    pub ref_lock_timeout: gix_lock::acquire::Fail,
    /// `core.packedRefsTimeout`: the same for `packed-refs.lock` (deleting a packed ref).
    /// git's default, 1 s.
    pub packed_refs_timeout: gix_lock::acquire::Fail,
    /// `receive.quarantineExpiry` (packgate's own), in seconds: a push removes quarantine
    /// directories (`objects/tmp_objdir-incoming-*`) last changed longer ago than this, left
    /// behind by a server that was killed. One day by default (also for 0 or less).
    pub quarantine_expiry: std::time::Duration,
    /// Whether the repository has a work tree (`core.bare`, else the git dir's name).
    pub bare: bool,
    /// `core.logAllRefUpdates`: `None` when unset.
    pub log_all_ref_updates: Option<BString>,
    /// The identity in reflog entries: `GIT_COMMITTER_NAME`/`GIT_COMMITTER_EMAIL`, else
    /// `user.name`/`user.email`, else packgate's own.
    pub committer_name: BString,
    /// See `committer_name`.
    pub committer_email: BString,
    /// `pack.threads` (0 or unset: every core), for indexing the pack.
    pub threads: Option<usize>,
    /// `receive.keepAlive`: once the pack is in, how long the response may be silent
    /// (connectivity check, hooks, ref updates) before an empty keepalive packet goes out,
    /// with `side-band-64k` only; `None` (0 or negative) sends none. Default 5 seconds.
    pub keepalive: Option<std::time::Duration>,
    /// `receive.advertiseAtomic` (default true): advertise and honour `atomic`.
    pub advertise_atomic: bool,
    /// `receive.advertisePushOptions` (default false, as git): advertise and honour
    /// `push-options`.
    pub advertise_push_options: bool,
    /// `repack.useDeltaBaseOffset` (default true): advertise `ofs-delta`.
    pub ofs_delta: bool,
    /// `transfer.advertiseSID` (default false, as git): advertise `session-id=<id>`.
    pub advertise_sid: bool,
    /// `receive.certNonceSeed`: with it, `push-cert=<nonce>` is advertised and signed pushes
    /// are taken (see [`super::push_cert`]).
    pub cert_nonce_seed: Option<BString>,
    /// `receive.certNonceSlop`: seconds within which an older nonce of ours counts as `OK`
    /// in a stateless session (0, git's default: never).
    pub cert_nonce_slop: u64,
    /// How push certificates' signatures are verified: git's `gpg.*` programs and files
    /// (see [`super::push_cert::signature_verifier()`]), each run bounded by the hooks' time
    /// limit.
    pub signature_verifier: packgate_hooks::signature::SignatureVerifier,
    /// `receive.shallowUpdate`: whether a push from a shallow clone may make this
    /// repository's history shallow where it brings commits whose parents it does not send
    /// (new lines in `$GIT_DIR/shallow`). Off by default, as in git: such refs are refused
    /// with "shallow update not allowed".
    pub shallow_update: bool,
    /// `receive.procReceiveRefs`: the commands the `proc-receive` hook carries out.
    pub proc_receive_refs: super::ProcReceiveRefs,
    /// `packgate.upstream`: the URL a gated repository forwards every push to before its
    /// own refs move (see [`super::gate`]).
    pub upstream: Option<String>,
    /// `packgate.upstreamTimeout` (seconds): how long a push waits for its upstream.
    pub upstream_timeout: std::time::Duration,
    /// `packgate.denySecret` (one value per pattern): a push introducing a blob that contains
    /// one of these byte strings is refused before its pre-receive hook runs (an in-process
    /// [`SecretScanner`](packgate_hooks::SecretScanner) per pattern; what a gate scans
    /// before forwarding, with no script to run).
    pub secret_patterns: Vec<BString>,
    /// `transfer.hideRefs` followed by `receive.hideRefs` (not advertised, not updatable),
    /// evaluated as upload-pack evaluates its rules.
    hidden: UploadPackConfig,
}

impl ReceivePackConfig {
    /// Read the settings from `config` for the repository at `git_dir`.
    pub fn from_config(
        config: &gix_config::File,
        git_dir: &std::path::Path,
    ) -> Result<Self, ConfigError> {
        let boolean = |key: &str| -> Result<Option<bool>, ConfigError> {
            config.boolean(key).map_err(|source| ConfigError::Value {
                key: key.to_owned(),
                source,
            })
        };
        let integer = |key: &str| -> Result<Option<i64>, ConfigError> {
            config.integer(key).map_err(|source| ConfigError::Value {
                key: key.to_owned(),
                source,
            })
        };
        let positive =
            |value: Option<i64>| value.and_then(|n| u64::try_from(n).ok()).filter(|n| *n > 0);
        let hide_refs = crate::config::hide_refs(config, "receive");
        let deny = |key: &str| -> Result<Deny, ConfigError> {
            let value = config.string(key);
            Deny::parse(key, value.as_deref().map(|v| v.as_slice()))
        };
        let fsck_objects = match boolean("receive.fsckObjects")? {
            Some(value) => value,
            None => boolean("transfer.fsckObjects")?.unwrap_or(false),
        };
        let (fsck_options, fsck_skip_lists, fsck_unknown_ids) = fsck_settings(config)?;
        // `git_dir` is absolute (`Repository::open`), and so is every hooks directory made
        // from it: `ScriptHooks` would take a relative one relative to the git directory again.
        let hooks_dir = match config.path("core.hooksPath") {
            Some(path) => {
                let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
                let path = path
                    .interpolate(gix_config::path::interpolate::Context {
                        home_dir: home.as_deref(),
                        ..Default::default()
                    })
                    .map_err(|source| ConfigError::Value {
                        key: "core.hooksPath".into(),
                        source,
                    })?;
                // git resolves a relative hooksPath against where the hooks run, and a push's
                // hooks run in the git directory (bare or not).
                git_dir.join(path)
            }
            None => git_dir.join("hooks"),
        };
        let bare = match boolean("core.bare")? {
            Some(bare) => bare,
            None => git_dir.file_name().is_none_or(|name| name != ".git"),
        };
        // As git: the environment first, then the configuration.
        let environment = |name: &str| {
            std::env::var_os(name)
                .filter(|value| !value.is_empty())
                .map(|value| BString::from(value.as_encoded_bytes()))
        };
        let committer_name = environment("GIT_COMMITTER_NAME")
            .or_else(|| config.string("user.name").map(|v| v.to_owned()))
            .unwrap_or_else(|| "packgate".into());
        let committer_email = environment("GIT_COMMITTER_EMAIL")
            .or_else(|| config.string("user.email").map(|v| v.to_owned()))
            .unwrap_or_else(|| "packgate@localhost".into());
        Ok(ReceivePackConfig {
            hidden: UploadPackConfig {
                hide_refs,
                ..UploadPackConfig::default()
            },
            deny_non_fast_forwards: boolean("receive.denyNonFastForwards")?.unwrap_or(false),
            deny_deletes: boolean("receive.denyDeletes")?.unwrap_or(false),
            deny_current_branch: deny("receive.denyCurrentBranch")?,
            deny_delete_current: deny("receive.denyDeleteCurrent")?,
            fsck_objects,
            fsck_options,
            fsck_skip_lists,
            fsck_unknown_ids,
            max_input_size: positive(integer("receive.maxInputSize")?),
            max_objects: positive(integer("receive.maxObjects")?)
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            max_object_size: positive(integer("receive.maxObjectSize")?)
                .unwrap_or(DEFAULT_MAX_OBJECT_SIZE),
            big_file_threshold: positive(integer("core.bigFileThreshold")?)
                .unwrap_or(DEFAULT_BIG_FILE_THRESHOLD),
            unpack_limit: match integer("receive.unpackLimit")? {
                Some(limit) if limit >= 0 => limit,
                _ => integer("transfer.unpackLimit")?
                    .filter(|limit| *limit >= 0)
                    .unwrap_or(100),
            }
            .try_into()
            .unwrap_or(u32::MAX),
            hooks_dir,
            hook_timeout_seconds: positive(integer("receive.hookTimeout")?),
            ref_lock_timeout: lock_timeout(integer("core.filesRefLockTimeout")?, 100),
            packed_refs_timeout: lock_timeout(integer("core.packedRefsTimeout")?, 1000),
            quarantine_expiry: std::time::Duration::from_secs(
                // 0 would remove the quarantines of pushes in progress: the default instead.
                positive(integer("receive.quarantineExpiry")?)
                    .unwrap_or(DEFAULT_QUARANTINE_EXPIRY_SECONDS),
            ),
            bare,
            log_all_ref_updates: config.string("core.logAllRefUpdates").map(|v| v.to_owned()),
            committer_name,
            committer_email,
            threads: positive(integer("pack.threads")?).and_then(|n| usize::try_from(n).ok()),
            keepalive: crate::config::keepalive(config, "receive.keepAlive")?,
            advertise_atomic: boolean("receive.advertiseAtomic")?.unwrap_or(true),
            advertise_push_options: boolean("receive.advertisePushOptions")?.unwrap_or(false),
            ofs_delta: boolean("repack.useDeltaBaseOffset")?.unwrap_or(true),
            advertise_sid: boolean("transfer.advertiseSID")?.unwrap_or(false),
            cert_nonce_seed: config
                .string("receive.certNonceSeed")
                .map(|seed| BString::from(seed.to_vec())),
            cert_nonce_slop: integer("receive.certNonceSlop")?
                .and_then(|slop| u64::try_from(slop).ok())
                .unwrap_or(0),
            shallow_update: boolean("receive.shallowUpdate")?.unwrap_or(false),
            upstream: config
                .string("packgate.upstream")
                .map(|url| url.to_str_lossy().trim().to_owned())
                .filter(|url| !url.is_empty())
                .map(|url| super::gate::resolve_upstream(&url, git_dir)),
            upstream_timeout: positive(integer("packgate.upstreamTimeout")?).map_or(
                super::gate::DEFAULT_UPSTREAM_TIMEOUT,
                std::time::Duration::from_secs,
            ),
            secret_patterns: config
                .strings("packgate.denySecret")
                .unwrap_or_default()
                .iter()
                .filter(|pattern| !pattern.is_empty())
                .map(|pattern| BString::from(pattern.to_vec()))
                .collect(),
            proc_receive_refs: super::ProcReceiveRefs::from_config(config),
            signature_verifier: super::push_cert::signature_verifier(
                config,
                positive(integer("receive.hookTimeout")?).map_or(
                    packgate_hooks::ScriptHooks::DEFAULT_TIMEOUT,
                    std::time::Duration::from_secs,
                ),
            )?,
        })
    }

    /// Whether `refname` (as the clients of `namespace` name it) is hidden, with git's
    /// `hideRefs` rules.
    pub fn is_hidden(&self, refname: &[u8], namespace: Option<&crate::refname::Namespace>) -> bool {
        // The rules are the same as upload-pack's; only the configuration keys differ.
        self.hidden.is_hidden(refname, namespace)
    }

    /// Whether the ref named `full` in the repository, `stripped` in the namespace (`None`
    /// outside it), is hidden.
    pub fn is_hidden_as(&self, stripped: Option<&[u8]>, full: &[u8]) -> bool {
        self.hidden.is_hidden_as(stripped, full)
    }

    /// How reflogs are written: git's `core.logAllRefUpdates`, whose default is true in a
    /// repository with a work tree and false in a bare one. (When false, git still appends to
    /// reflogs that exist; packgate then writes none.)
    pub fn write_reflog(&self) -> gix_ref::store::WriteReflog {
        use gix_ref::store::WriteReflog;
        match self
            .log_all_ref_updates
            .as_ref()
            .map(|v| v.to_ascii_lowercase())
        {
            Some(value) if value == b"always" => WriteReflog::Always,
            Some(value) => match gix_config::Boolean::try_from(value.as_bstr()) {
                Ok(boolean) if boolean.0 => WriteReflog::Normal,
                _ => WriteReflog::Disable,
            },
            None if self.bare => WriteReflog::Disable,
            None => WriteReflog::Normal,
        }
    }
}

/// The `receive.fsck.*` settings, read in order as git's receive-pack reads them: each
/// `<msg-id> = error|warn|ignore` (an unknown id is kept to be warned about; an unknown
/// severity is an error, as git dies on it), and each `skipList` path.
#[allow(clippy::type_complexity)]
fn fsck_settings(
    config: &gix_config::File,
) -> Result<
    (
        packgate_pack::ingest::FsckOptions,
        Vec<PathBuf>,
        Vec<String>,
    ),
    ConfigError,
> {
    let mut options = packgate_pack::ingest::FsckOptions::default();
    let mut skip_lists = Vec::new();
    let mut unknown = Vec::new();
    let sections = config.sections().filter(|section| {
        let header = section.header();
        header.name().eq_ignore_ascii_case(b"receive")
            && header.subsection_name().is_some_and(|name| name == "fsck")
    });
    for section in sections {
        let body = section.body();
        // Each occurrence of a key, in order, with its value (a key may repeat).
        let mut seen: std::collections::HashMap<String, usize> = Default::default();
        for key in body.value_names() {
            let name = key.to_ascii_lowercase();
            let occurrence = seen.entry(name.clone()).or_default();
            let value = body.values(&name).get(*occurrence).cloned();
            *occurrence += 1;
            let full = format!("receive.fsck.{name}");
            let Some(value) = value else {
                continue;
            };
            if name == "skiplist" {
                let home = std::env::var_os("HOME").map(PathBuf::from);
                let path = gix_config::Path::from(std::borrow::Cow::Owned(value))
                    .interpolate(gix_config::path::interpolate::Context {
                        home_dir: home.as_deref(),
                        ..Default::default()
                    })
                    .map_err(|source| ConfigError::Value {
                        key: full.clone(),
                        source,
                    })?;
                skip_lists.push(path);
                continue;
            }
            if !packgate_pack::ingest::is_fsck_message_id(&name) {
                unknown.push(name);
                continue;
            }
            let severity = value.to_str_lossy().into_owned();
            if let Err(err) = options.set(&name, &severity) {
                tracing::debug!(%err, key = full, "fsck setting refused");
                return Err(ConfigError::Invalid { key: full, value });
            }
        }
    }
    Ok((options, skip_lists, unknown))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use gix_lock::acquire::Fail;

    use super::lock_timeout;

    #[test]
    fn lock_timeouts_as_git_reads_them() {
        let check = |configured, expected| assert_eq!(lock_timeout(configured, 100), expected);
        check(
            None,
            Fail::AfterDurationWithBackoff(Duration::from_millis(100)),
        );
        check(
            Some(250),
            Fail::AfterDurationWithBackoff(Duration::from_millis(250)),
        );
        check(Some(0), Fail::Immediately);
        match lock_timeout(Some(-1), 100) {
            Fail::AfterDurationWithBackoff(wait) => assert!(wait > Duration::from_secs(86_400)),
            Fail::Immediately => panic!("a negative timeout waits"),
        }
    }
}
