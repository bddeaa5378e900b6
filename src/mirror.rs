//! Mirror mode of `packgate serve`: each `[[mirror]]` of the configuration is refreshed from
//! its upstream when the server starts, then every `interval`, and whenever the server gets
//! `SIGHUP` (`kill -HUP <pid>`: refresh every mirror now). Refreshes run on the blocking pool
//! through the server's [`Refresher`], single flight per repository, so a slow one never
//! overlaps the next; a failed one is logged and the mirror is served as it is (the fetch
//! client moves refs only after the objects migrated, so it is never half-fetched).

use std::{
    path::{Component, Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use packgate::protocol::upstream::Refresher;

use crate::config::Interval;

/// How often a mirror is refreshed unless its entry says.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

/// One mirror to keep current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mirror {
    pub(crate) git_dir: PathBuf,
    pub(crate) url: String,
    pub(crate) interval: Duration,
}

/// The mirrors of the configuration file, below `root`.
pub(crate) fn mirrors(
    sections: &[crate::config::MirrorSection],
    root: &Path,
) -> anyhow::Result<Vec<Mirror>> {
    sections
        .iter()
        .map(|section| {
            let path = Path::new(&section.path);
            let below = !section.path.is_empty()
                && path
                    .components()
                    .all(|component| matches!(component, Component::Normal(_)));
            if !below {
                anyhow::bail!(
                    "mirror path '{}' must be a relative path below the root",
                    section.path
                );
            }
            if section.url.trim().is_empty() {
                anyhow::bail!("mirror '{}' has no url", section.path);
            }
            let interval = match &section.interval {
                None => DEFAULT_INTERVAL,
                Some(Interval::Seconds(seconds)) if *seconds > 0 => {
                    Duration::from_secs(seconds.unsigned_abs())
                }
                Some(Interval::Text(text)) => crate::maintenance::parse_interval(text)
                    .with_context(|| format!("mirror '{}'", section.path))?,
                Some(Interval::Seconds(seconds)) => anyhow::bail!(
                    "mirror '{}': invalid interval {seconds} (more than 0 seconds, or like \"10m\")",
                    section.path
                ),
            };
            Ok(Mirror {
                git_dir: root.join(path),
                url: section.url.trim().to_owned(),
                interval,
            })
        })
        .collect()
}

/// Keep each of `mirrors` current on the current tokio runtime: now, every interval, and
/// each time `trigger` changes.
pub(crate) fn spawn(
    refresher: Arc<Refresher>,
    mirrors: Vec<Mirror>,
    trigger: tokio::sync::watch::Receiver<u64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    mirrors
        .into_iter()
        .map(|mirror| {
            let refresher = Arc::clone(&refresher);
            let mut trigger = trigger.clone();
            tokio::spawn(async move {
                loop {
                    let (refresher, job) = (Arc::clone(&refresher), mirror.clone());
                    let ran = tokio::task::spawn_blocking(move || {
                        refresher.refresh(&job.git_dir, &job.url)
                    })
                    .await;
                    match ran {
                        Ok(Ok(())) => {
                            tracing::debug!(git_dir = %mirror.git_dir.display(), "mirror refreshed")
                        }
                        // The refresher logged why.
                        Ok(Err(_)) => {}
                        Err(err) => tracing::warn!(%err, "mirror refresh task failed"),
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(mirror.interval) => {}
                        changed = trigger.changed() => {
                            if changed.is_err() {
                                // Nobody can trigger any more: keep to the interval.
                                tokio::time::sleep(mirror.interval).await;
                            }
                        }
                    }
                }
            })
        })
        .collect()
}

/// Refresh every mirror on `SIGHUP`: bumps `trigger` on each signal, until the runtime ends.
pub(crate) fn on_sighup(trigger: tokio::sync::watch::Sender<u64>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("could not listen for SIGHUP; mirrors refresh on their interval only");
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: refreshing every mirror");
            trigger.send_modify(|count| *count += 1);
        }
    });
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Instant,
    };

    use packgate::protocol::upstream::Refresh;

    use super::*;

    struct Counting {
        calls: AtomicUsize,
        fail: bool,
    }

    impl Refresh for Counting {
        fn refresh(&self, _: &Path, _: &str, _: Instant) -> Result<(), String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                Err("down".into())
            } else {
                Ok(())
            }
        }
    }

    /// Wait (bounded) until `fake` was called `count` times.
    fn until_calls(fake: &Counting, count: usize) {
        let started = Instant::now();
        while fake.calls.load(Ordering::SeqCst) < count {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{} calls",
                fake.calls.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn run(
        interval: Duration,
        fail: bool,
    ) -> (
        Arc<Counting>,
        tokio::runtime::Runtime,
        tokio::sync::watch::Sender<u64>,
    ) {
        let fake = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            fail,
        });
        let refresher = Arc::new(Refresher::new(fake.clone(), Duration::from_secs(10)));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build();
        let Ok(runtime) = runtime else {
            panic!("no runtime: {runtime:?}");
        };
        let (trigger, triggered) = tokio::sync::watch::channel(0);
        let mirror = Mirror {
            git_dir: PathBuf::from("/m.git"),
            url: "u".into(),
            interval,
        };
        let _guard = runtime.enter();
        spawn(refresher, vec![mirror], triggered);
        (fake, runtime, trigger)
    }

    #[test]
    fn mirrors_refresh_at_start_and_every_interval_even_after_failures() {
        let (fake, runtime, _trigger) = run(Duration::from_millis(20), true);
        until_calls(&fake, 3);
        runtime.shutdown_background();
    }

    #[test]
    fn a_trigger_refreshes_now() {
        let (fake, runtime, trigger) = run(Duration::from_secs(3600), false);
        until_calls(&fake, 1);
        trigger.send_modify(|count| *count += 1);
        until_calls(&fake, 2);
        runtime.shutdown_background();
    }

    #[test]
    fn mirror_entries_are_checked() {
        let section = |path: &str, interval: Option<Interval>| crate::config::MirrorSection {
            path: path.into(),
            url: "https://x/a.git".into(),
            interval,
        };
        let root = Path::new("/srv");
        let parsed = mirrors(
            &[section("m/a.git", Some(Interval::Text("2m".into())))],
            root,
        );
        assert_eq!(
            parsed.ok(),
            Some(vec![Mirror {
                git_dir: PathBuf::from("/srv/m/a.git"),
                url: "https://x/a.git".into(),
                interval: Duration::from_secs(120),
            }])
        );
        for bad in [
            section("../a.git", None),
            section("/abs.git", None),
            section("a.git", Some(Interval::Seconds(0))),
        ] {
            assert!(mirrors(&[bad], root).is_err());
        }
    }
}
