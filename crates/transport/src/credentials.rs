//! A credentials file: the users who may push over HTTP, with hashed passwords.
//!
//! One `user:hash` per line, as `htpasswd -B` writes them: bcrypt (`$2y$`, `$2b$`, `$2a$`)
//! or an argon2 PHC string (`$argon2id$…`, also `$argon2i$`/`$argon2d$`). Blank lines and
//! lines starting with `#` are ignored. Weak schemes htpasswd also knows — plaintext,
//! `crypt()`, MD5 (`$apr1$`, `$1$`), SHA-1 (`{SHA}`), SHA-crypt (`$5$`, `$6$`) — are refused
//! when the file is loaded, with the line named. [`hash_password`] makes new entries.
//!
//! Checking a password is slow by design (that is the point of bcrypt and argon2), so
//! [`CredentialsFile`] remembers, for a few minutes, the pairs it accepted: keyed by a
//! SHA-256 of a random per-process key, the user and the password, so the memory holds no
//! password and no hash an attacker could test guesses against offline any faster than the
//! file itself. Each request of a push (the advertisement and the `POST`) thus pays for one
//! verification, not two. Refusals are not remembered: every wrong guess costs the full
//! verification. The file is read once; a changed file takes effect on restart.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use password_hash::{
    rand_core::{OsRng, RngCore},
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use sha2::{Digest, Sha256};

use packgate_wire::service::http::Authenticator;

/// How long an accepted (user, password) pair is remembered.
const VERIFIED_FOR: Duration = Duration::from_secs(5 * 60);
/// How many accepted pairs are remembered at most.
const VERIFIED_CAPACITY: usize = 1024;

/// Why a credentials file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file could not be read.
    #[error("could not read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A line is not `user:hash`.
    #[error("{path}:{line}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A line's password is stored in a scheme packgate refuses.
    #[error(
        "{path}:{line}: the password of '{user}' is {scheme}, which packgate refuses; \
         use bcrypt (htpasswd -B, or packgate passwd) or argon2"
    )]
    WeakHash {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// The user of that line.
        user: String,
        /// The scheme found, e.g. `MD5 ($apr1$)`.
        scheme: &'static str,
    },
    /// A user appears twice.
    #[error("{path}:{line}: user '{user}' appears a second time")]
    DuplicateUser {
        /// The file.
        path: PathBuf,
        /// The line number of the second entry, from 1.
        line: usize,
        /// The user.
        user: String,
    },
}

/// How [`hash_password`] hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashScheme {
    /// bcrypt with `2^cost` rounds, written as `$2y$` (what `htpasswd -B` writes).
    Bcrypt {
        /// The cost, 4 to 31; bcrypt's default is 12.
        cost: u32,
    },
    /// argon2id with the argon2 crate's default parameters (RFC 9106's second
    /// recommendation), as a PHC string.
    Argon2id,
}

impl Default for HashScheme {
    fn default() -> Self {
        HashScheme::Bcrypt {
            cost: bcrypt::DEFAULT_COST,
        }
    }
}

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// bcrypt failed (e.g. a cost out of range).
    #[error("bcrypt: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
    /// argon2 failed.
    #[error("argon2: {0}")]
    Argon2(argon2::password_hash::Error),
}

/// Hash `password` for a credentials file line (`user:<hash>`), with a fresh random salt.
pub fn hash_password(password: &str, scheme: HashScheme) -> Result<String, HashError> {
    match scheme {
        HashScheme::Bcrypt { cost } => {
            Ok(bcrypt::hash_with_result(password, cost)?.format_for_version(bcrypt::Version::TwoY))
        }
        HashScheme::Argon2id => {
            let salt = SaltString::generate(&mut OsRng);
            argon2::Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(HashError::Argon2)
        }
    }
}

/// A stored password hash, in a scheme that is checked when the file is loaded.
#[derive(Clone)]
enum StoredHash {
    Bcrypt(String),
    Argon2(String),
}

impl StoredHash {
    /// Parse the hash of a line, or say which refused scheme it is in.
    fn parse(hash: &str) -> Result<StoredHash, &'static str> {
        if ["$2y$", "$2b$", "$2a$"]
            .iter()
            .any(|prefix| hash.starts_with(prefix))
        {
            return hash
                .parse::<bcrypt::HashParts>()
                .map(|_| StoredHash::Bcrypt(hash.to_owned()))
                .map_err(|_| "a malformed bcrypt hash");
        }
        if ["$argon2id$", "$argon2i$", "$argon2d$"]
            .iter()
            .any(|prefix| hash.starts_with(prefix))
        {
            let well_formed = PasswordHash::new(hash).is_ok_and(|parsed| {
                parsed.salt.is_some()
                    && parsed.hash.is_some()
                    && argon2::Algorithm::try_from(parsed.algorithm).is_ok()
                    && argon2::Params::try_from(&parsed).is_ok()
            });
            return if well_formed {
                Ok(StoredHash::Argon2(hash.to_owned()))
            } else {
                Err("a malformed argon2 hash")
            };
        }
        Err(if hash.starts_with("$2x$") {
            "bcrypt $2x$ (the buggy variant)"
        } else if hash.starts_with("$apr1$") {
            "MD5 ($apr1$)"
        } else if hash.starts_with("$1$") {
            "MD5-crypt ($1$)"
        } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
            "SHA-crypt ($5$/$6$)"
        } else if hash.starts_with("{SHA}") {
            "SHA-1 ({SHA})"
        } else if hash.starts_with('$') {
            "an unknown scheme"
        } else {
            "plaintext or crypt()"
        })
    }

    fn verify(&self, password: &str) -> bool {
        match self {
            StoredHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            StoredHash::Argon2(hash) => PasswordHash::new(hash).is_ok_and(|hash| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok()
            }),
        }
    }
}

/// The users of a credentials file, as an [`Authenticator`].
pub struct CredentialsFile {
    users: HashMap<String, StoredHash>,
    /// A hash to check unknown users against, so they take as long as known ones.
    decoy: Option<StoredHash>,
    verified: VerifiedCache,
}

impl std::fmt::Debug for CredentialsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsFile")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl CredentialsFile {
    /// Read and check the file at `path`.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Check the text of a credentials file; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, CredentialsError> {
        let mut users = HashMap::new();
        let mut decoy = None;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(CredentialsError::Malformed {
                    path: path.to_owned(),
                    line: number,
                    reason: "expected user:hash".into(),
                });
            };
            if let Err(reason) = check_user_name(user) {
                return Err(CredentialsError::Malformed {
                    path: path.to_owned(),
                    line: number,
                    reason: reason.into(),
                });
            }
            let stored = StoredHash::parse(hash).map_err(|scheme| CredentialsError::WeakHash {
                path: path.to_owned(),
                line: number,
                user: user.to_owned(),
                scheme,
            })?;
            decoy.get_or_insert_with(|| stored.clone());
            if users.insert(user.to_owned(), stored).is_some() {
                return Err(CredentialsError::DuplicateUser {
                    path: path.to_owned(),
                    line: number,
                    user: user.to_owned(),
                });
            }
        }
        Ok(CredentialsFile {
            users,
            decoy,
            verified: VerifiedCache::new(),
        })
    }

    /// How many users the file names.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file names no user (then nobody can push).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Whether `user` may stand in a credentials file (and in HTTP Basic credentials).
pub fn check_user_name(user: &str) -> Result<(), &'static str> {
    if user.is_empty() {
        Err("empty user name")
    } else if user.contains(':') {
        Err("a user name cannot contain ':'")
    } else if user.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Err("a user name cannot contain whitespace or control characters")
    } else if user.starts_with('#') {
        Err("a user name cannot start with '#'")
    } else {
        Ok(())
    }
}

impl Authenticator for CredentialsFile {
    fn authenticate(&self, user: &str, password: &str) -> Option<String> {
        let key = self.verified.key(user, password);
        if key.is_some_and(|key| self.verified.contains(&key)) {
            return Some(user.to_owned());
        }
        let Some(stored) = self.users.get(user) else {
            // As slow as for a known user, so timing does not tell which users exist.
            if let Some(decoy) = &self.decoy {
                let _ = decoy.verify(password);
            }
            return None;
        };
        if !stored.verify(password) {
            return None;
        }
        if let Some(key) = key {
            self.verified.insert(key);
        }
        Some(user.to_owned())
    }
}

/// Recently accepted (user, password) pairs, by keyed digest.
struct VerifiedCache {
    /// A random key, so digests cannot be precomputed; `None` if the system had no
    /// randomness to give (then nothing is remembered).
    secret: Option<[u8; 32]>,
    entries: Mutex<HashMap<[u8; 32], Instant>>,
}

impl VerifiedCache {
    fn new() -> Self {
        let mut secret = [0u8; 32];
        let secret = OsRng.try_fill_bytes(&mut secret).ok().map(|()| secret);
        VerifiedCache {
            secret,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, user: &str, password: &str) -> Option<[u8; 32]> {
        let secret = self.secret?;
        let mut digest = Sha256::new();
        digest.update(secret);
        digest.update((user.len() as u64).to_be_bytes());
        digest.update(user.as_bytes());
        digest.update(password.as_bytes());
        Some(digest.finalize().into())
    }

    fn contains(&self, key: &[u8; 32]) -> bool {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(key)
            .is_some_and(|verified| verified.elapsed() < VERIFIED_FOR)
    }

    fn insert(&self, key: [u8; 32]) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= VERIFIED_CAPACITY {
            entries.retain(|_, verified| verified.elapsed() < VERIFIED_FOR);
        }
        if entries.len() >= VERIFIED_CAPACITY {
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, verified)| **verified)
                .map(|(key, _)| *key)
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: HashScheme = HashScheme::Bcrypt { cost: 4 };

    fn check(text: &str, expected: Result<usize, &str>) {
        let actual = CredentialsFile::parse(text, Path::new("users"))
            .map(|file| file.len())
            .map_err(|err| err.to_string());
        assert_eq!(actual, expected.map_err(str::to_owned), "{text}");
    }

    #[test]
    fn loads_bcrypt_and_argon2() {
        let bcrypt = hash_password("secret", FAST).unwrap();
        assert!(bcrypt.starts_with("$2y$04$"), "{bcrypt}");
        let argon2 = hash_password("secret", HashScheme::Argon2id).unwrap();
        assert!(argon2.starts_with("$argon2id$"), "{argon2}");
        let text = format!(
            "# users\n\nalice:{bcrypt}\r\nbob:{argon2}\ncarol:{}\n",
            bcrypt.replace("$2y$", "$2b$")
        );
        check(&text, Ok(3));
        let file = CredentialsFile::parse(&text, Path::new("users")).unwrap();
        for user in ["alice", "bob", "carol"] {
            assert_eq!(
                file.authenticate(user, "secret").as_deref(),
                Some(user),
                "{user}"
            );
            // Remembered now, and still only for the right password.
            assert_eq!(file.authenticate(user, "secret").as_deref(), Some(user));
            assert_eq!(file.authenticate(user, "Secret"), None, "{user}");
            assert_eq!(file.authenticate(user, ""), None, "{user}");
        }
        assert_eq!(file.authenticate("dave", "secret"), None);
        // The same password for another user is not a remembered pair.
        assert_eq!(file.authenticate("alic", "esecret"), None);
    }

    #[test]
    fn refuses_weak_and_malformed_lines() {
        let good = hash_password("x", FAST).unwrap();
        let weak = |line: &str, scheme: &str| {
            let text = format!("alice:{good}\n{line}\n");
            let expected = format!(
                "users:2: the password of 'bob' is {scheme}, which packgate refuses; use \
                 bcrypt (htpasswd -B, or packgate passwd) or argon2"
            );
            check(&text, Err(&expected));
        };
        weak("bob:$apr1$salt$hashhashhashhashhashha", "MD5 ($apr1$)");
        weak("bob:plain", "plaintext or crypt()");
        weak("bob:rqXexS6ZhobKA", "plaintext or crypt()");
        weak("bob:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=", "SHA-1 ({SHA})");
        weak("bob:$6$salt$hash", "SHA-crypt ($5$/$6$)");
        weak("bob:$2y$04$short", "a malformed bcrypt hash");
        weak("bob:$argon2id$nonsense", "a malformed argon2 hash");
        weak("bob:", "plaintext or crypt()");
        check("alice\n", Err("users:1: expected user:hash"));
        check(&format!(":{good}\n"), Err("users:1: empty user name"));
        check(
            &format!("al ice:{good}\n"),
            Err("users:1: a user name cannot contain whitespace or control characters"),
        );
        check(
            &format!("alice:{good}\nalice:{good}\n"),
            Err("users:2: user 'alice' appears a second time"),
        );
        check("", Ok(0));
    }

    #[test]
    fn the_cache_forgets_the_oldest_when_full() {
        let cache = VerifiedCache::new();
        for n in 0..VERIFIED_CAPACITY + 10 {
            let key = cache.key(&format!("user{n}"), "pw").unwrap();
            cache.insert(key);
        }
        let entries = cache.entries.lock().unwrap();
        assert_eq!(entries.len(), VERIFIED_CAPACITY);
    }
}
