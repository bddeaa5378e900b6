//! Upstreams: what a gated repository forwards pushes to (see
//! [`receive_pack::gate`](crate::receive_pack::gate)) and what a gate or a mirror fetches
//! from to stay current.
//!
//! Fetching from upstream is a [`Refresh`] the embedding application provides (packgate's
//! fetch client); a [`Refresher`] runs it *single flight* per repository: callers asking
//! while a refresh of that repository runs join it instead of starting another, and every
//! caller waits at most the refresher's timeout. A refresh that fails is logged and the
//! repository is served as it is: a fetch client moves refs only after the objects migrated,
//! so what is there is always whole.
//!
//! A repository refreshes before answering a fetch when its configuration says
//! `packgate.refreshOnFetch = true` and it has an upstream ([`Upstreams::refresh_before_fetch`]):
//! the front-ends call it once per fetch, at the advertisement (git://: when the connection
//! opens; HTTP: on `GET …/info/refs`, never on the POSTs of the same fetch).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use crate::{receive_pack::gate::Forward, repository::Repository};

/// How long a refresh may take unless configured otherwise.
pub const DEFAULT_REFRESH_TIMEOUT: Duration = Duration::from_secs(60);

/// The fetch client a gate or a mirror refreshes with.
pub trait Refresh: Send + Sync {
    /// Bring the repository at `git_dir` up to date with `upstream`, by `deadline`. Refs
    /// must move only once the objects they need are in the repository.
    fn refresh(&self, git_dir: &Path, upstream: &str, deadline: Instant) -> Result<(), String>;
}

/// One refresh in progress, which later callers join.
#[derive(Default)]
struct Flight {
    result: Mutex<Option<Result<(), String>>>,
    done: Condvar,
    /// The callers waiting for it.
    waiting: std::sync::atomic::AtomicUsize,
}

/// Counts a caller as waiting for a flight while it lives.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs a [`Refresh`] single flight per repository, bounded in time.
pub struct Refresher {
    refresh: Arc<dyn Refresh>,
    timeout: Duration,
    flights: Arc<Mutex<HashMap<PathBuf, Arc<Flight>>>>,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Refresher {
    /// Refresh with `refresh`, each caller waiting at most `timeout`.
    pub fn new(refresh: Arc<dyn Refresh>, timeout: Duration) -> Self {
        Refresher {
            refresh,
            timeout,
            flights: Arc::default(),
        }
    }

    /// How many callers wait for a refresh in progress, over all repositories.
    pub fn waiting(&self) -> usize {
        self.flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .map(|flight| flight.waiting.load(std::sync::atomic::Ordering::SeqCst))
            .sum()
    }

    /// Bring `git_dir` up to date with `upstream`: start a refresh, or join the one running
    /// for that repository. Returns its result, or an error once the timeout passed (the
    /// refresh itself may go on, and later callers join it until it ends). Failures are
    /// logged here; callers serve what the repository holds either way.
    pub fn refresh(&self, git_dir: &Path, upstream: &str) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        let (flight, leader) = {
            let mut flights = self
                .flights
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match flights.get(git_dir) {
                Some(flight) => (Arc::clone(flight), false),
                None => {
                    let flight = Arc::new(Flight::default());
                    flights.insert(git_dir.to_owned(), Arc::clone(&flight));
                    (flight, true)
                }
            }
        };
        if leader {
            self.start(git_dir, upstream, deadline, &flight);
        } else {
            tracing::debug!(git_dir = %git_dir.display(), "joining the refresh in progress");
        }
        let _waiting = Waiting::new(&flight.waiting);
        let mut result = flight
            .result
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            if let Some(result) = result.as_ref() {
                return result.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let why = format!("no refresh within {} seconds", self.timeout.as_secs());
                tracing::warn!(git_dir = %git_dir.display(), %upstream, "{why}; serving what is there");
                return Err(why);
            }
            result = flight
                .done
                .wait_timeout(result, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Run the refresh on a thread of its own; it ends the flight when it ends.
    fn start(&self, git_dir: &Path, upstream: &str, deadline: Instant, flight: &Arc<Flight>) {
        let refresh = Arc::clone(&self.refresh);
        let flights = Arc::clone(&self.flights);
        let (dir, url, flight) = (git_dir.to_owned(), upstream.to_owned(), Arc::clone(flight));
        let land = {
            let (flights, dir, flight) = (Arc::clone(&flights), dir.clone(), Arc::clone(&flight));
            move |result: Result<(), String>| {
                // Leave the map first: a caller that can see the result must not be able to
                // join this flight any more, or it would get a refresh that ended before it
                // asked.
                {
                    let mut flights = flights
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    if flights
                        .get(&dir)
                        .is_some_and(|current| Arc::ptr_eq(current, &flight))
                    {
                        flights.remove(&dir);
                    }
                }
                *flight
                    .result
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(result);
                flight.done.notify_all();
            }
        };
        let land_here = land.clone();
        let spawned = std::thread::Builder::new()
            .name("packgate-refresh".into())
            .spawn(move || {
                tracing::info!(git_dir = %dir.display(), upstream = %url, "refreshing from upstream");
                let result = refresh.refresh(&dir, &url, deadline);
                if let Err(err) = &result {
                    tracing::warn!(git_dir = %dir.display(), upstream = %url, %err, "refresh failed; serving what is there");
                }
                land(result);
            });
        if let Err(err) = spawned {
            land_here(Err(format!("could not start the refresh: {err}")));
        }
    }
}

/// What a server needs to gate and mirror: the push client, the refresher, and the upstreams
/// configured outside the repositories (e.g. the TOML of `packgate serve --config`). A
/// repository's own `packgate.upstream` wins over those.
#[derive(Clone, Default)]
pub struct Upstreams {
    /// The push client gated repositories forward with.
    pub forward: Option<Arc<dyn Forward>>,
    /// The refresher of gated repositories (`packgate.refreshOnFetch`) and mirrors.
    pub refresher: Option<Arc<Refresher>>,
    /// Upstreams of single repositories, by git directory.
    pub repositories: HashMap<PathBuf, String>,
    /// An upstream for every repository below a root directory: `<url>/<path below root>`.
    pub root: Option<(PathBuf, String)>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("forward", &self.forward.is_some())
            .field("refresher", &self.refresher)
            .field("repositories", &self.repositories)
            .field("root", &self.root)
            .finish()
    }
}

impl Upstreams {
    /// The upstream configured here for the repository at `git_dir`, if any (its own
    /// `packgate.upstream` is not looked at).
    pub fn configured(&self, git_dir: &Path) -> Option<String> {
        let git_dir = std::fs::canonicalize(git_dir).unwrap_or_else(|_| git_dir.to_owned());
        if let Some(url) = self.repositories.get(&git_dir) {
            return Some(url.clone());
        }
        let (root, base) = self.root.as_ref()?;
        let below = git_dir.strip_prefix(root).ok()?;
        let below = below.to_str()?.trim_matches('/');
        if below.is_empty() {
            return None;
        }
        Some(format!("{}/{below}", base.trim_end_matches('/')))
    }

    /// The upstream of `repo`: its `packgate.upstream`, else the one configured here.
    pub fn upstream(&self, repo: &Repository) -> Option<String> {
        repo.config()
            .string("packgate.upstream")
            .map(|url| {
                bstr::ByteSlice::to_str_lossy(url.as_slice())
                    .trim()
                    .to_owned()
            })
            .filter(|url| !url.is_empty())
            .or_else(|| self.configured(repo.git_dir()))
    }

    /// Refresh `repo` from its upstream if it asks for that before every fetch
    /// (`packgate.refreshOnFetch = true`) and a refresher is set. Returns whether a refresh
    /// ran and succeeded; failures are logged and the repository is served as it is.
    pub fn refresh_before_fetch(&self, repo: &Repository) -> bool {
        let Some(refresher) = &self.refresher else {
            return false;
        };
        match repo.config().boolean("packgate.refreshOnFetch") {
            Ok(Some(true)) => {}
            Ok(_) => return false,
            Err(err) => {
                tracing::warn!(%err, "packgate.refreshOnFetch: not a boolean; no refresh");
                return false;
            }
        }
        let Some(upstream) = self.upstream(repo) else {
            tracing::warn!(git_dir = %repo.git_dir().display(), "packgate.refreshOnFetch without an upstream");
            return false;
        };
        refresher.refresh(repo.git_dir(), &upstream).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts calls; each takes `pause` (or until released) and fails if told to.
    struct Counting {
        calls: AtomicUsize,
        release: Mutex<bool>,
        released: Condvar,
        fail: bool,
    }

    impl Counting {
        fn new(fail: bool) -> Arc<Self> {
            Arc::new(Counting {
                calls: AtomicUsize::new(0),
                release: Mutex::new(false),
                released: Condvar::new(),
                fail,
            })
        }

        fn release(&self) {
            *self.release.lock().unwrap() = true;
            self.released.notify_all();
        }
    }

    impl Refresh for Counting {
        fn refresh(&self, _: &Path, _: &str, deadline: Instant) -> Result<(), String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut released = self.release.lock().unwrap();
            while !*released {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err("deadline".into());
                }
                released = self.released.wait_timeout(released, left).unwrap().0;
            }
            if self.fail {
                Err("upstream is down".into())
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn concurrent_callers_share_one_refresh() {
        let fake = Counting::new(false);
        let refresher = Arc::new(Refresher::new(fake.clone(), Duration::from_secs(30)));
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let refresher = Arc::clone(&refresher);
                std::thread::spawn(move || refresher.refresh(Path::new("/r.git"), "u"))
            })
            .collect();
        // Callers arriving while it runs join it too.
        let late = {
            let refresher = Arc::clone(&refresher);
            std::thread::spawn(move || refresher.refresh(Path::new("/r.git"), "u"))
        };
        // Release it only once all nine wait on it.
        let started = Instant::now();
        while refresher.waiting() < 9 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{} waiting",
                refresher.waiting()
            );
            std::thread::yield_now();
        }
        fake.release();
        for caller in callers {
            assert_eq!(caller.join().unwrap(), Ok(()));
        }
        assert_eq!(late.join().unwrap(), Ok(()));
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        // Once it ended, the next caller runs a new one.
        refresher.refresh(Path::new("/r.git"), "u").unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        // Other repositories have flights of their own.
        refresher.refresh(Path::new("/other.git"), "u").unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_failed_or_stalled_refresh_is_an_error_within_the_timeout() {
        let fake = Counting::new(true);
        fake.release();
        let refresher = Refresher::new(fake.clone(), Duration::from_secs(30));
        assert_eq!(
            refresher.refresh(Path::new("/r.git"), "u"),
            Err("upstream is down".into())
        );
        let stalled = Counting::new(false);
        let refresher = Refresher::new(stalled, Duration::from_millis(300));
        let started = Instant::now();
        assert!(refresher.refresh(Path::new("/r.git"), "u").is_err());
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn configured_upstreams_by_repository_and_below_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let mut upstreams = Upstreams {
            root: Some((root.clone(), "https://forge.example/org/".into())),
            ..Upstreams::default()
        };
        upstreams
            .repositories
            .insert(root.join("special.git"), "git://elsewhere/s.git".into());
        assert_eq!(
            upstreams.configured(&root.join("team/a.git")).as_deref(),
            Some("https://forge.example/org/team/a.git")
        );
        assert_eq!(
            upstreams.configured(&root.join("special.git")).as_deref(),
            Some("git://elsewhere/s.git")
        );
        assert_eq!(upstreams.configured(Path::new("/elsewhere/x.git")), None);
    }
}
