//! Turns on the blocking pool for clients that wait for ref changes (docs/refs-watch.md).
//!
//! One ref update can wake thousands of waiting clients at once, and each then needs a short
//! step on the blocking pool (look at the refs again, answer). tokio starts a new thread for
//! every step queued while no thread is idle, so 10,000 woken clients grew the pool to its
//! cap of 512 threads for a burst of sub-millisecond work. These steps take a turn here
//! first: at most [`turns`] run at once, the others wait as tasks (no thread).

use std::sync::OnceLock;

use tokio::sync::{Semaphore, SemaphorePermit};

/// How many steps of waiting clients run on the blocking pool at once: eight per CPU, at
/// least 16. The steps are short, but handing turns on costs a wake-up each; with fewer,
/// 10,000 woken clients took a third of a second longer to be answered.
pub(crate) fn turns() -> usize {
    std::thread::available_parallelism()
        .map_or(16, |cpus| cpus.get() * 8)
        .max(16)
}

fn semaphore() -> &'static Semaphore {
    static TURNS: OnceLock<Semaphore> = OnceLock::new();
    TURNS.get_or_init(|| Semaphore::new(turns()))
}

/// Wait for a turn; the step runs while the permit is held. (`None` only if the semaphore
/// were closed, which it never is: the step then runs without one.)
pub(crate) async fn turn() -> Option<SemaphorePermit<'static>> {
    semaphore().acquire().await.ok()
}

/// Run `work` on the blocking pool in a turn.
pub(crate) async fn spawn_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let _turn = turn().await;
    tokio::task::spawn_blocking(work).await
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use super::*;

    /// However many steps are started together, no more than `turns()` run at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_steps_run_at_once_than_there_are_turns() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let steps: Vec<_> = (0..64)
            .map(|_| {
                let running = Arc::clone(&running);
                let most = Arc::clone(&most);
                tokio::spawn(spawn_blocking(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // Long enough that unbounded steps would overlap.
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                }))
            })
            .collect();
        let mut done = 0;
        for step in steps {
            step.await.unwrap().unwrap();
            done += 1;
        }
        assert_eq!(done, 64);
        let most = most.load(Ordering::SeqCst);
        assert!((1..=turns()).contains(&most), "{most} steps ran at once");
    }
}
