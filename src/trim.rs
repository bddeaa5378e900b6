//! Giving freed memory back to the system once a server is idle again.
//!
//! Measured with `cargo xtask bench soak` (rounds of 1,000 git:// connections): without
//! this, `packgate daemon`'s RSS went 37 → 46 → 51 → 57 → 60 MiB over rounds, with one malloc
//! arena (`MALLOC_ARENA_MAX=1`) 35 → 47 MiB. `malloc_trim(0)` called from outside (gdb)
//! after each round brought it back to 13–15 MiB every time, flat over the rounds: the
//! memory was freed, glibc's malloc kept it (free chunks inside its heaps, which only the
//! top of a heap gives back by itself). Not a leak; so no allocator crate, only a trim when
//! the load is over.
//!
//! A thread looks once a second at the process's CPU time and RSS (`/proc/self`): after two
//! quiet seconds (under 2% of a core) with RSS at least 8 MiB above what the last trim left,
//! it calls glibc's `malloc_trim(0)`. Under load it never runs (the CPU is busy), and while
//! idle only when there is something to give back. Other C libraries: nothing to do.

use std::time::Duration;

/// How often the process is looked at.
const INTERVAL: Duration = Duration::from_secs(1);
/// Quiet intervals in a row before a trim.
const QUIET_INTERVALS: u32 = 2;
/// CPU seconds per interval below which the process counts as quiet.
const QUIET_CPU_SECONDS: f64 = 0.02;
/// RSS growth since the last trim worth a trim.
const WORTH_TRIMMING_KIB: u64 = 8 * 1024;

/// Start the thread that trims after load (glibc only; elsewhere nothing happens).
pub(crate) fn spawn_trimmer() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    let started = std::thread::Builder::new()
        .name("packgate-trim".into())
        .spawn(trimmer);
    if let Err(err) = started {
        tracing::warn!(%err, "could not start the memory trimmer");
    }
}

fn trimmer() {
    let mut last_cpu = cpu_seconds();
    let mut quiet = 0;
    let mut after_trim = rss_kib().unwrap_or(0);
    loop {
        std::thread::sleep(INTERVAL);
        let cpu = cpu_seconds();
        let used = cpu - last_cpu;
        last_cpu = cpu;
        if used > QUIET_CPU_SECONDS {
            quiet = 0;
            continue;
        }
        quiet += 1;
        let Some(rss) = rss_kib() else { continue };
        if quiet < QUIET_INTERVALS || rss < after_trim + WORTH_TRIMMING_KIB {
            // Memory given back by other means (or a smaller load) lowers the mark.
            after_trim = after_trim.min(rss);
            continue;
        }
        glibc::trim();
        after_trim = rss_kib().unwrap_or(rss);
        tracing::debug!(
            before_kib = rss,
            after_kib = after_trim,
            "freed memory given back"
        );
        // The trim's own CPU time is not load.
        last_cpu = cpu_seconds();
    }
}

/// This process's user+system CPU seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name (in parentheses): state(0) … utime(11) stime(12).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|index| fields.get(*index).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    ticks as f64 / TICKS_PER_SECOND
}

/// Clock ticks per second of `/proc` times: `USER_HZ`, 100 on every Linux in use (what
/// `getconf CLK_TCK` says).
const TICKS_PER_SECOND: f64 = 100.0;

/// Resident memory in KiB (`VmRSS` of `/proc/self/status`).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::os::raw::c_int;
    }

    /// glibc's `malloc_trim(0)`: give back every free page of every malloc arena.
    #[allow(unsafe_code)]
    pub(super) fn trim() {
        // SAFETY: `malloc_trim` takes no pointer and touches only the allocator's own state,
        // under each arena's lock; glibc documents it as thread-safe (MT-Safe). The
        // declaration matches glibc's `int malloc_trim(size_t pad)`.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    pub(super) fn trim() {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_its_own_process() {
        assert!(super::rss_kib().is_some_and(|kib| kib > 0));
        let spent = super::cpu_seconds();
        assert!(spent >= 0.0);
        super::glibc::trim();
    }
}
