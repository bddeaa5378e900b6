//! `gc.pid`: git's convention that keeps two maintenance runs (git's or packgate's) off one
//! repository at the same time.
//!
//! The file holds `<pid> <hostname>`. Another run is taken to be going on when the file was
//! changed less than 12 hours ago and either names another host (whose processes cannot be
//! checked) or names a process of this host that is alive. Otherwise the file is taken over:
//! written under `gc.pid.lock` (created exclusively, as git's lock files are) and renamed into
//! place. It is removed when the [`GcLock`] is dropped.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

/// How long a `gc.pid` counts as held, whatever it says (git's 12 hours).
pub const STALE_AFTER: Duration = Duration::from_secs(12 * 3600);

/// Why the lock could not be taken.
#[derive(thiserror::Error, Debug)]
pub enum LockError {
    /// Another maintenance holds `gc.pid`.
    #[error("gc is already running on machine '{host}' pid {pid} (use --force if not)")]
    Held {
        /// The host named in `gc.pid`.
        host: String,
        /// The process named in `gc.pid`.
        pid: u64,
    },
    /// `gc.pid.lock` exists: someone is taking the lock right now.
    #[error("Unable to create '{}': File exists.", path.display())]
    LockFileExists {
        /// The lock file.
        path: PathBuf,
    },
    /// Reading or writing the files failed.
    #[error("could not lock {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// `gc.pid` held by this process; removed on drop.
#[derive(Debug)]
pub struct GcLock {
    path: PathBuf,
    content: String,
}

/// This host's name as git's `xgethostname()` gives it (`unknown` when it cannot be read).
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Whether process `pid` of this host exists (git's `kill(pid, 0)` succeeding or failing with
/// `EPERM`).
fn process_alive(pid: u64) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Who holds `gc.pid` in `git_dir`, if anyone does by git's rules.
pub fn holder(git_dir: &Path) -> Option<(u64, String)> {
    let path = git_dir.join("gc.pid");
    let modified = fs::metadata(&path).and_then(|meta| meta.modified()).ok()?;
    let age = SystemTime::now()
        .duration_since(modified)
        .unwrap_or(Duration::ZERO);
    if age > STALE_AFTER {
        return None;
    }
    let content = fs::read_to_string(&path).ok()?;
    let mut fields = content.split_ascii_whitespace();
    let pid: u64 = fields.next()?.parse().ok()?;
    let host = fields.next()?.to_owned();
    let held = host != hostname() || process_alive(pid);
    held.then_some((pid, host))
}

impl GcLock {
    /// Take `gc.pid` in `git_dir` unless another run holds it (`force` takes it anyway, as
    /// `git gc --force`).
    pub fn acquire(git_dir: &Path, force: bool) -> Result<GcLock, LockError> {
        let path = git_dir.join("gc.pid");
        let lock_path = git_dir.join("gc.pid.lock");
        let io_err = |source| LockError::Io {
            path: lock_path.clone(),
            source,
        };
        let mut lock = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock_path)
        {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                return Err(LockError::LockFileExists { path: lock_path })
            }
            Err(err) => return Err(io_err(err)),
        };
        if !force {
            if let Some((pid, host)) = holder(git_dir) {
                drop(lock);
                fs::remove_file(&lock_path).ok();
                return Err(LockError::Held { host, pid });
            }
        }
        let content = format!("{} {}", std::process::id(), hostname());
        let written = lock
            .write_all(content.as_bytes())
            .and_then(|()| lock.sync_all())
            .and_then(|()| fs::rename(&lock_path, &path));
        if let Err(err) = written {
            fs::remove_file(&lock_path).ok();
            return Err(io_err(err));
        }
        Ok(GcLock { path, content })
    }

    /// Refresh the file's modification time, so a long run is not taken for a stale one.
    pub fn touch(&self) {
        if let Ok(file) = fs::OpenOptions::new().write(true).open(&self.path) {
            file.set_modified(SystemTime::now()).ok();
        }
    }
}

impl Drop for GcLock {
    fn drop(&mut self) {
        // Only our own file: another run may have taken over a file it judged stale.
        if fs::read_to_string(&self.path).is_ok_and(|content| content == self.content) {
            fs::remove_file(&self.path).ok();
        }
    }
}

/// How old a lock file of what maintenance writes must be to count as left by a killed
/// process: every writer holds one for seconds.
pub const STALE_LOCK_AFTER: Duration = Duration::from_secs(3600);

/// The lock files of what maintenance writes (`packed-refs`, the commit-graph and its chain),
/// relative to the git directory.
const MAINTENANCE_LOCKS: [&str; 3] = [
    "packed-refs.lock",
    "objects/info/commit-graph.lock",
    "objects/info/commit-graphs/commit-graph-chain.lock",
];

/// Remove the lock files of what maintenance writes that are older than
/// [`STALE_LOCK_AFTER`]: a process killed while writing `packed-refs` or the commit-graph
/// leaves its lock behind (git's and packgate's alike), and it would stop every later
/// `pack-refs`, commit-graph write and packed-ref deletion for good. Call it only while
/// holding `gc.pid` (no other maintenance is writing them). Returns what was removed.
pub fn clear_stale_locks(git_dir: &Path) -> Vec<PathBuf> {
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for relative in MAINTENANCE_LOCKS {
        let path = git_dir.join(relative);
        let Ok(modified) = fs::metadata(&path).and_then(|meta| meta.modified()) else {
            continue;
        };
        let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
        if age > STALE_LOCK_AFTER && fs::remove_file(&path).is_ok() {
            tracing::warn!(lock = %path.display(), ?age, "removed a stale lock file");
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stale_maintenance_locks_go_and_fresh_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("objects/info/commit-graphs")).unwrap();
        for relative in MAINTENANCE_LOCKS {
            fs::write(dir.path().join(relative), "").unwrap();
        }
        // Another lock that is not maintenance's stays, however old.
        fs::write(dir.path().join("HEAD.lock"), "").unwrap();
        let old = SystemTime::now() - Duration::from_secs(2 * 3600);
        for relative in ["packed-refs.lock", MAINTENANCE_LOCKS[2], "HEAD.lock"] {
            let file = fs::OpenOptions::new()
                .write(true)
                .open(dir.path().join(relative))
                .unwrap();
            file.set_modified(old).unwrap();
        }
        let removed = clear_stale_locks(dir.path());
        assert_eq!(
            removed,
            vec![
                dir.path().join("packed-refs.lock"),
                dir.path().join(MAINTENANCE_LOCKS[2])
            ]
        );
        assert!(dir.path().join(MAINTENANCE_LOCKS[1]).exists(), "fresh");
        assert!(dir.path().join("HEAD.lock").exists());
        assert!(clear_stale_locks(dir.path()).is_empty());
    }

    #[test]
    fn held_by_live_process_blocks_and_dead_or_stale_does_not() {
        let dir = tempfile::tempdir().unwrap();
        // Our own parent is alive.
        let me = std::process::id();
        fs::write(dir.path().join("gc.pid"), format!("{me} {}", hostname())).unwrap();
        assert!(matches!(
            GcLock::acquire(dir.path(), false),
            Err(LockError::Held { .. })
        ));
        assert!(!dir.path().join("gc.pid.lock").exists());
        // Another host: held, whatever the pid.
        fs::write(dir.path().join("gc.pid"), "1 elsewhere.example").unwrap();
        assert!(GcLock::acquire(dir.path(), false).is_err());
        // Older than 12 hours: stale.
        let file = fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("gc.pid"))
            .unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(13 * 3600))
            .unwrap();
        let lock = GcLock::acquire(dir.path(), false).unwrap();
        let content = fs::read_to_string(dir.path().join("gc.pid")).unwrap();
        assert_eq!(content, format!("{me} {}", hostname()));
        drop(lock);
        assert!(!dir.path().join("gc.pid").exists());
        // A dead pid on this host: stale (pid_max is below 2^22).
        fs::write(dir.path().join("gc.pid"), format!("4999999 {}", hostname())).unwrap();
        assert!(GcLock::acquire(dir.path(), false).is_ok());
    }
}
