//! `packgate serve --config FILE`: the settings the command line does not carry, as TOML.
//!
//! ```toml
//! root = "/srv/git"
//!
//! [git]
//! listen = "127.0.0.1:9418"    # or "off"
//! init-timeout = 30            # seconds until the request head
//! timeout = 600                # seconds a session may go without traffic
//! max-connections = 256
//! max-waiting-connections = 4096
//! max-waiting-per-address = 256
//! informative-errors = false
//! receive-pack = false         # push over git:// to every repository (else per repository:
//!                              # daemon.receivepack)
//!
//! [http]
//! listen = "127.0.0.1:8080"    # or "off"
//! credentials = "/etc/packgate/users"   # `packgate passwd` entries: push for these users
//! allow-push-without-auth = false
//! tls-cert = "/etc/packgate/cert.pem"
//! tls-key = "/etc/packgate/key.pem"
//! header-timeout = 30
//! timeout = 600
//! max-connections = 256
//! max-waiting-connections = 4096
//! max-waiting-per-address = 256
//! max-fetch-request = 10485760
//! max-push-request = 4294967296
//!
//! [pack-cache]                 # identical fetches share one pack (git:// and HTTP)
//! enabled = true
//! ttl = 300                    # seconds a finished pack stays servable
//! max-bytes = 1073741824       # all cached packs together (memory and temporary files)
//! memory-per-entry = 16777216  # bytes of one pack kept in memory, the rest in a file
//! temp-dir = "/var/tmp"        # default: the system's temporary directory
//! [budget]                     # shared by every fetch's pack and push's indexing
//! cpu-slots = 8                # threads at once (default: the cores)
//! memory = "8g"                # bytes or k/m/g (default: half the machine's memory)
//! max-queue-wait = 600         # seconds a request may wait for its turn
//! [maintenance]                # git's `maintenance run --auto`, without git
//! auto-after-push = true       # after each push (each repository's receive.autogc too)
//! interval = "1h"              # also every hour for every repository (default: never)
//! ```
//!
//!
//! Git namespaces (git's `GIT_NAMESPACE`: several logical repositories sharing one object
//! store): `namespace` serves every repository in one, a `[repositories."<path>"]` table
//! (the path below `root` as clients name it) gives one repository its own (`""`: none):
//!
//! ```toml
//! namespace = "main"           # default: GIT_NAMESPACE of the environment, else none
//!
//! [repositories."forks.git"]
//! namespace = "alice"
//! ```
//!
//! Gate and mirror (see README's "Gate and mirror"): `upstream` gates every repository in front
//! of `<url>/<path below root>`, a repository's `upstream` in front of that URL (a
//! repository's own `packgate.upstream` wins over both); each `[[mirror]]` is kept current
//! from its `url` every `interval` (seconds, or `"10m"`, `"1h"`; default 5 minutes) and on
//! `SIGHUP`:
//!
//! ```toml
//! upstream = "https://forge.example/org"
//! refresh-timeout = 60         # seconds a refresh may take
//!
//! [repositories."special.git"]
//! upstream = "git://elsewhere.example/special.git"
//!
//! [[mirror]]
//! path = "mirrors/linux.git"   # below root
//! url = "https://git.example/linux.git"
//! interval = "10m"
//! ```
//!
//! Every key is optional; a flag on the command line wins over the file, and the file over
//! the built-in defaults. Unknown keys are errors, so a typo does not go unnoticed.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ConfigFile {
    /// The directory of repositories.
    pub(crate) root: Option<PathBuf>,
    /// The git:// front-end.
    #[serde(default)]
    pub(crate) git: GitSection,
    /// The smart HTTP front-end.
    #[serde(default)]
    pub(crate) http: HttpSection,
    /// The SSH front-end.
    #[serde(default)]
    pub(crate) ssh: SshSection,
    /// The git namespace every repository is served in (git's `GIT_NAMESPACE`).
    pub(crate) namespace: Option<String>,
    /// Single flight and the cache of generated packs.
    #[serde(default)]
    pub(crate) pack_cache: PackCacheSection,
    /// The CPU and memory budget of pack generation and push indexing.
    #[serde(default)]
    pub(crate) budget: crate::budget::BudgetSection,
    /// Maintenance after pushes and on a schedule.
    #[serde(default)]
    pub(crate) maintenance: MaintenanceSection,
    /// Settings of single repositories, by their path below the root.
    #[serde(default)]
    pub(crate) repositories: std::collections::BTreeMap<String, RepositorySection>,
    /// The upstream of every repository: `<upstream>/<path below root>` (the gate).
    pub(crate) upstream: Option<String>,
    /// Seconds a refresh from upstream may take.
    pub(crate) refresh_timeout: Option<u64>,
    /// Repositories kept current from an upstream.
    #[serde(default)]
    pub(crate) mirror: Vec<MirrorSection>,
}

/// `[[mirror]]`.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct MirrorSection {
    /// The repository, below the root.
    pub(crate) path: String,
    /// Where it is fetched from.
    pub(crate) url: String,
    /// How often: seconds, or `"10m"`, `"1h"` (default 5 minutes).
    pub(crate) interval: Option<Interval>,
}

/// An interval: seconds, or a number with a unit (`"10m"`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub(crate) enum Interval {
    Seconds(i64),
    Text(String),
}

/// `[maintenance]`.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct MaintenanceSection {
    /// Run `--auto` maintenance after pushes (default true; receive.autogc decides per
    /// repository).
    pub(crate) auto_after_push: Option<bool>,
    /// Run `--auto` maintenance of every repository this often (`"1h"`, `"30m"`, seconds).
    pub(crate) interval: Option<String>,
}

/// `[repositories."<path>"]`.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RepositorySection {
    /// The git namespace this repository is served in; `""` for none.
    pub(crate) namespace: Option<String>,
    /// The upstream this repository is a gate of.
    pub(crate) upstream: Option<String>,
}

/// `[git]`.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct GitSection {
    pub(crate) listen: Option<Listen>,
    pub(crate) init_timeout: Option<u64>,
    pub(crate) timeout: Option<u64>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_waiting_connections: Option<usize>,
    pub(crate) max_waiting_per_address: Option<usize>,
    pub(crate) informative_errors: Option<bool>,
    pub(crate) receive_pack: Option<bool>,
}

/// `[ssh]`.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct SshSection {
    pub(crate) listen: Option<Listen>,
    pub(crate) authorized_keys: Option<PathBuf>,
    pub(crate) host_key: Option<PathBuf>,
    pub(crate) init_timeout: Option<u64>,
    pub(crate) timeout: Option<u64>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_waiting_connections: Option<usize>,
    pub(crate) max_waiting_per_address: Option<usize>,
    /// `[[ssh.access]]`: who may read and push which repositories.
    #[serde(default)]
    pub(crate) access: Vec<AccessSection>,
    /// `[ssh.groups]`: `name = ["user", …]`, named `@name` in `[[ssh.access]]`.
    #[serde(default)]
    pub(crate) groups: std::collections::BTreeMap<String, Vec<String>>,
}

impl SshSection {
    /// `[[ssh.access]]` and `[ssh.groups]` as the SSH front-end and `packgate shell` apply
    /// them.
    pub(crate) fn policy(&self) -> packgate::transport::ssh::AccessPolicy {
        packgate::transport::ssh::AccessPolicy {
            rules: self
                .access
                .iter()
                .map(|rule| packgate::transport::ssh::AccessRule {
                    path: rule.path.clone(),
                    read: rule.read.clone(),
                    write: rule.write.clone(),
                })
                .collect(),
            groups: self.groups.clone().into_iter().collect(),
        }
    }
}

/// `[[ssh.access]]`.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct AccessSection {
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) read: Vec<String>,
    #[serde(default)]
    pub(crate) write: Vec<String>,
}

/// `[http]`.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct HttpSection {
    pub(crate) listen: Option<Listen>,
    pub(crate) credentials: Option<PathBuf>,
    pub(crate) allow_push_without_auth: Option<bool>,
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    pub(crate) header_timeout: Option<u64>,
    pub(crate) timeout: Option<u64>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_waiting_connections: Option<usize>,
    pub(crate) max_waiting_per_address: Option<usize>,
    pub(crate) max_fetch_request: Option<u64>,
    pub(crate) max_push_request: Option<u64>,
}

/// `[pack-cache]`, and `packgate daemon`'s `--pack-cache-*` flags.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct PackCacheSection {
    pub(crate) enabled: Option<bool>,
    pub(crate) ttl: Option<u64>,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) memory_per_entry: Option<u64>,
    pub(crate) temp_dir: Option<PathBuf>,
}

impl PackCacheSection {
    /// The cache's settings, the defaults where unset; `None` when it is switched off
    /// (`enabled = false`, or a budget or time to live of 0).
    pub(crate) fn config(&self) -> Option<packgate::protocol::pack_cache::PackCacheConfig> {
        let defaults = packgate::protocol::pack_cache::PackCacheConfig::default();
        let config = packgate::protocol::pack_cache::PackCacheConfig {
            ttl: self
                .ttl
                .map_or(defaults.ttl, std::time::Duration::from_secs),
            max_bytes: self.max_bytes.unwrap_or(defaults.max_bytes),
            memory_per_entry: self
                .memory_per_entry
                .map_or(defaults.memory_per_entry, |n| {
                    usize::try_from(n).unwrap_or(usize::MAX)
                }),
            temp_dir: self.temp_dir.clone(),
            ..defaults
        };
        let off = self.enabled == Some(false) || config.ttl.is_zero() || config.max_bytes == 0;
        (!off).then_some(config)
    }

    /// The cache itself, or `None` when switched off.
    pub(crate) fn build(&self) -> Option<packgate::protocol::pack_cache::PackCache> {
        self.config()
            .map(packgate::protocol::pack_cache::PackCache::new)
    }
}

/// Where a front-end listens, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listen(pub(crate) Option<SocketAddr>);

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        if value == "off" {
            return Ok(Listen(None));
        }
        value
            .parse()
            .map(|addr| Listen(Some(addr)))
            .map_err(|err| format!("{err} (an address like 127.0.0.1:8080, or off)"))
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl ConfigFile {
    /// Read and check `path`.
    pub(crate) fn load(path: &std::path::Path) -> anyhow::Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid configuration in {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<ConfigFile> {
        Ok(toml::from_str(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses() {
        let config = ConfigFile::parse(
            r#"
            root = "/srv/git"
            [git]
            listen = "off"
            init-timeout = 5
            timeout = 60
            max-connections = 1000
            informative-errors = true
            receive-pack = true
            [http]
            listen = "127.0.0.1:8443"
            credentials = "users"
            allow-push-without-auth = false
            tls-cert = "cert.pem"
            tls-key = "key.pem"
            header-timeout = 10
            timeout = 120
            max-connections = 50
            max-fetch-request = 1024
            max-push-request = 2048
            [budget]
            cpu-slots = 2
            memory = "512m"
            max-queue-wait = 30
            "#,
        )
        .map_err(|err| format!("{err:#}"));
        let Ok(config) = config else {
            panic!("{config:?}");
        };
        assert_eq!(config.root, Some(PathBuf::from("/srv/git")));
        assert_eq!(config.git.listen, Some(Listen(None)));
        assert_eq!(config.git.receive_pack, Some(true));
        assert_eq!(
            config.http.listen,
            Some(Listen(Some(SocketAddr::from(([127, 0, 0, 1], 8443)))))
        );
        assert_eq!(config.http.max_push_request, Some(2048));
        assert_eq!(config.budget.memory, Some(crate::budget::Size(512 << 20)));
        assert_eq!(config.budget.cpu_slots, Some(2));
    }

    #[test]
    fn namespaces_parse() {
        let config = ConfigFile::parse(
            "namespace = \"main\"\n[repositories.\"a/b.git\"]\nnamespace = \"alice\"\n\
             [repositories.plain]\nnamespace = \"\"\n",
        )
        .map_err(|err| format!("{err:#}"));
        let Ok(config) = config else {
            panic!("{config:?}");
        };
        assert_eq!(config.namespace.as_deref(), Some("main"));
        assert_eq!(
            config.repositories["a/b.git"].namespace.as_deref(),
            Some("alice")
        );
        assert_eq!(config.repositories["plain"].namespace.as_deref(), Some(""));
        assert!(ConfigFile::parse("[repositories.x]\nnamespaces = \"a\"").is_err());
    }

    #[test]
    fn gate_and_mirror_keys_parse() {
        let config = ConfigFile::parse(
            "upstream = \"https://forge.example/org\"\nrefresh-timeout = 5\n\
             [repositories.\"s.git\"]\nupstream = \"git://h/s.git\"\n\
             [[mirror]]\npath = \"m/a.git\"\nurl = \"https://x/a.git\"\ninterval = 60\n\
             [[mirror]]\npath = \"m/b.git\"\nurl = \"https://x/b.git\"\ninterval = \"1h\"\n",
        )
        .map_err(|err| format!("{err:#}"));
        let Ok(config) = config else {
            panic!("{config:?}");
        };
        assert_eq!(
            config.upstream.as_deref(),
            Some("https://forge.example/org")
        );
        assert_eq!(config.refresh_timeout, Some(5));
        assert_eq!(
            config.repositories["s.git"].upstream.as_deref(),
            Some("git://h/s.git")
        );
        assert_eq!(config.mirror.len(), 2);
        assert_eq!(config.mirror[1].path, "m/b.git");
        assert!(ConfigFile::parse("[[mirror]]\npath = \"a\"\nurl = \"u\"\nevery = 1").is_err());
    }

    #[test]
    fn pack_cache_table() {
        let config = ConfigFile::parse(
            "[pack-cache]\nttl = 60\nmax-bytes = 2048\nmemory-per-entry = 1024\n\
             temp-dir = \"spill\"\n",
        )
        .map_err(|err| format!("{err:#}"));
        let Ok(config) = config else {
            panic!("{config:?}");
        };
        let cache = config.pack_cache.config();
        let Some(cache) = cache else {
            panic!("switched off");
        };
        assert_eq!(cache.ttl, std::time::Duration::from_secs(60));
        assert_eq!((cache.max_bytes, cache.memory_per_entry), (2048, 1024));
        assert_eq!(cache.temp_dir, Some(PathBuf::from("spill")));
        // On by default, off on request.
        assert!(PackCacheSection::default().config().is_some());
        let off = ConfigFile::parse("[pack-cache]\nenabled = false\n").map(|c| c.pack_cache);
        assert!(matches!(off, Ok(section) if section.config().is_none()));
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(
            ConfigFile::parse("").map_err(|err| err.to_string()),
            Ok(ConfigFile::default())
        );
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        for bad in [
            "rooot = \"x\"",
            "[git]\nlisten = \"9418\"",
            "[http]\nmax-connections = -1",
            "[gti]\nlisten = \"off\"",
            "[git]\ntimeout = \"ten\"",
        ] {
            assert!(ConfigFile::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
