//! The configuration maintenance reads, with git 2.47's defaults.

use std::time::{Duration, SystemTime};

/// Settings of one repository for maintenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// `gc.auto`: loose objects (estimated) above which `--auto` repacks; 0 or less disables.
    pub gc_auto: i64,
    /// `gc.autoPackLimit`: packs (local, not kept) above which `--auto` repacks everything.
    pub gc_auto_pack_limit: i64,
    /// `gc.pruneExpire`: unreachable objects older than this are removed; `None` = `never`.
    pub prune_expire: Option<Expiry>,
    /// `gc.writeCommitGraph`.
    pub write_commit_graph: bool,
    /// `gc.packRefs` (`notbare` = only in non-bare repositories).
    pub pack_refs: bool,
    /// `repack.writeBitmaps` (default: true in a bare repository, for full repacks).
    pub write_bitmaps: bool,
    /// `pack.writeBitmapHashCache`.
    pub bitmap_hash_cache: bool,
    /// `pack.writeBitmapLookupTable`.
    pub bitmap_lookup_table: bool,
    /// `repack.packKeptObjects` (default: as `write_bitmaps`).
    pub pack_kept_objects: bool,
    /// `maintenance.loose-objects.auto`.
    pub loose_objects_auto: i64,
    /// `maintenance.incremental-repack.auto`: packs from which `--auto` runs the task.
    pub incremental_repack_auto: i64,
    /// `repack.geometricFactor` (packgate's name for `repack --geometric=<factor>`; 2).
    pub geometric_factor: u64,
    /// `gc.cruftPacks` (git 2.47 default: true).
    pub cruft_packs: bool,
    /// `core.bare`.
    pub bare: bool,
}

/// A grace period: how old an unreachable object must be to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Everything unreachable goes (`now`).
    Now,
    /// Objects changed before `now - age` go.
    Age(Duration),
    /// Objects changed before this moment go (an absolute date).
    Before(SystemTime),
}

impl Expiry {
    /// The moment before which an unreachable object may go.
    pub fn cutoff(&self, now: SystemTime) -> SystemTime {
        match self {
            Expiry::Now => now + Duration::from_secs(1),
            Expiry::Age(age) => now.checked_sub(*age).unwrap_or(SystemTime::UNIX_EPOCH),
            Expiry::Before(moment) => *moment,
        }
    }
}

/// Why a setting could not be used.
#[derive(thiserror::Error, Debug)]
#[error("invalid value for '{key}': '{value}'")]
pub struct ConfigValueError {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// Parse an expiry as git's `parse_expiry_date()` does for the forms maintenance meets:
/// `never`/`false`, `now`/`all`, `<n>.<unit>.ago` (or with spaces), or a date.
pub fn parse_expiry(value: &str) -> Option<Option<Expiry>> {
    let value = value.trim();
    match value.to_ascii_lowercase().as_str() {
        "never" | "false" => return Some(None),
        "now" | "all" => return Some(Some(Expiry::Now)),
        _ => {}
    }
    let words: Vec<&str> = value
        .split(|c: char| c == '.' || c.is_ascii_whitespace())
        .filter(|word| !word.is_empty())
        .collect();
    if let [count, unit, rest @ ..] = words.as_slice() {
        if rest.iter().all(|word| word.eq_ignore_ascii_case("ago")) {
            if let Ok(count) = count.parse::<u64>() {
                let unit = unit.to_ascii_lowercase();
                let unit = unit.strip_suffix('s').unwrap_or(&unit);
                let seconds = match unit {
                    "second" | "sec" => Some(1),
                    "minute" | "min" => Some(60),
                    "hour" => Some(3600),
                    "day" => Some(86_400),
                    "week" => Some(7 * 86_400),
                    "month" => Some(30 * 86_400),
                    "year" => Some(365 * 86_400),
                    _ => None,
                };
                if let Some(seconds) = seconds {
                    return Some(Some(Expiry::Age(Duration::from_secs(
                        count.saturating_mul(seconds),
                    ))));
                }
            }
        }
    }
    let time = gix_date::parse(value, None).ok()?;
    let seconds = u64::try_from(time.seconds).unwrap_or(0);
    Some(Some(Expiry::Before(
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds),
    )))
}

impl MaintenanceConfig {
    /// Read the settings from a repository's configuration.
    pub fn from_config(config: &gix_config::File) -> Result<Self, ConfigValueError> {
        let int = |key: &str, default: i64| -> Result<i64, ConfigValueError> {
            match config.integer(key) {
                Ok(None) => Ok(default),
                Ok(Some(value)) => Ok(value),
                Err(_) => Err(ConfigValueError {
                    key: key.to_owned(),
                    value: config
                        .string(key)
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                }),
            }
        };
        let boolean = |key: &str| -> Result<Option<bool>, ConfigValueError> {
            match config.boolean(key) {
                Ok(value) => Ok(value),
                Err(_) => Err(ConfigValueError {
                    key: key.to_owned(),
                    value: config
                        .string(key)
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                }),
            }
        };
        let bare = boolean("core.bare")?.unwrap_or(false);
        let prune_expire = match config.string("gc.pruneExpire") {
            None => Some(Expiry::Age(Duration::from_secs(14 * 86_400))),
            Some(value) => {
                let text = value.to_string();
                parse_expiry(&text).ok_or(ConfigValueError {
                    key: "gc.pruneExpire".into(),
                    value: text,
                })?
            }
        };
        let pack_refs = match config.string("gc.packRefs") {
            Some(value) if value.eq_ignore_ascii_case(b"notbare") => !bare,
            _ => boolean("gc.packRefs")?.unwrap_or(true),
        };
        let write_bitmaps = boolean("repack.writeBitmaps")?.unwrap_or(bare);
        Ok(MaintenanceConfig {
            gc_auto: int("gc.auto", 6700)?,
            gc_auto_pack_limit: int("gc.autoPackLimit", 50)?,
            prune_expire,
            write_commit_graph: boolean("gc.writeCommitGraph")?.unwrap_or(true),
            pack_refs,
            write_bitmaps,
            bitmap_hash_cache: boolean("pack.writeBitmapHashCache")?.unwrap_or(true),
            bitmap_lookup_table: boolean("pack.writeBitmapLookupTable")?.unwrap_or(false),
            pack_kept_objects: boolean("repack.packKeptObjects")?.unwrap_or(write_bitmaps),
            loose_objects_auto: int("maintenance.loose-objects.auto", 100)?,
            incremental_repack_auto: int("maintenance.incremental-repack.auto", 10)?,
            geometric_factor: u64::try_from(int("repack.geometricFactor", 2)?)
                .unwrap_or(2)
                .max(2),
            cruft_packs: boolean("gc.cruftPacks")?.unwrap_or(true),
            bare,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn expiry_forms() {
        assert_eq!(parse_expiry("never"), Some(None));
        assert_eq!(parse_expiry("now"), Some(Some(Expiry::Now)));
        assert_eq!(
            parse_expiry("2.weeks.ago"),
            Some(Some(Expiry::Age(Duration::from_secs(14 * 86_400))))
        );
        assert_eq!(
            parse_expiry("3 days ago"),
            Some(Some(Expiry::Age(Duration::from_secs(3 * 86_400))))
        );
        assert_eq!(parse_expiry("bogus words here"), None);
    }

    #[test]
    fn defaults_are_gits() {
        let config = gix_config::File::default();
        let config = MaintenanceConfig::from_config(&config).unwrap();
        assert_eq!(config.gc_auto, 6700);
        assert_eq!(config.gc_auto_pack_limit, 50);
        assert!(config.write_commit_graph && config.pack_refs);
    }
}
