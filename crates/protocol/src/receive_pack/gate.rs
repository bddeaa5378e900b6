//! The gate: a repository with an upstream (`packgate.upstream`) forwards every push that
//! passed quarantine, connectivity and all hooks to that upstream, from the quarantine,
//! *before* its objects migrate and any of its refs move; then only the refs upstream
//! accepted move here.
//!
//! The push client itself is not in this module: it is a [`Forward`] the embedding
//! application gives [`ReceivePack::with_forward()`](super::ReceivePack::with_forward). A
//! gated repository without one refuses every push ("gate has no upstream client"), rather
//! than accepting it locally and leaving gate and upstream disagreeing.
//!
//! Forwarding is bounded: the [`Forward`] gets the deadline (`packgate.upstreamTimeout`
//! seconds, default [`DEFAULT_UPSTREAM_TIMEOUT`]) and runs on a thread of its own; if it has
//! not answered by then, every update it was given fails as `upstream unreachable`, the
//! request's [`stop`](ForwardRequest::stop) flag is set (a forward still sending its pack
//! stops, so upstream never completes a push the client was told failed), and the thread is
//! left to end on its own (it holds no lock and moves nothing here). A push whose pack was
//! all sent before the deadline is upstream's to decide: if upstream accepts it after the
//! deadline, gate and upstream disagree (a known gap, see README).
//!
//! Refs that `receive.procReceiveRefs` gives to the `proc-receive` hook are not forwarded:
//! the hook decides what they become, after migration, which is too late for a gate. They are
//! refused in a gated repository ("proc-receive refs cannot pass a gate").

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use packgate_hooks::RefUpdate;

/// How long a push waits for its upstream unless `packgate.upstreamTimeout` says otherwise.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// The push client a gate forwards with.
pub trait Forward: Send + Sync {
    /// Push `request.updates` to `request.upstream`, sending objects from `request.objects`,
    /// and return one result per update, in order. Upstream's progress goes to `progress`
    /// (the pushing client sees it on band 2). Must return by `request.deadline`; a gate
    /// stops waiting then anyway.
    fn forward(&self, request: &ForwardRequest<'_>, progress: &mut dyn Write) -> Vec<Forwarded>;
}

/// One push to forward.
pub struct ForwardRequest<'a> {
    /// The upstream's URL, as configured.
    pub upstream: &'a str,
    /// The updates still to carry out, in the client's order.
    pub updates: &'a [RefUpdate],
    /// Whether the client asked for an atomic push.
    pub atomic: bool,
    /// The client's push options.
    pub push_options: &'a [String],
    /// The quarantine with the repository behind it: every object the updates need.
    pub objects: &'a gix_odb::Handle,
    /// When the gate stops waiting for an answer.
    pub deadline: Instant,
    /// Set when the gate stopped waiting (the deadline passed): a forward still sending
    /// should stop rather than let upstream complete a push reported as failed.
    pub stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for ForwardRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardRequest")
            .field("upstream", &self.upstream)
            .field("updates", &self.updates)
            .field("atomic", &self.atomic)
            .field("push_options", &self.push_options)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// What upstream made of one update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarded {
    /// Upstream moved the ref.
    Accepted,
    /// Upstream refused it, for this reason (its `ng` reason).
    Refused(String),
    /// Upstream could not be reached, or did not answer in time.
    Unreachable(String),
}

/// A forwarding to run, owned, for the thread it runs on.
pub(super) struct Job {
    pub(super) upstream: String,
    pub(super) updates: Vec<RefUpdate>,
    pub(super) atomic: bool,
    pub(super) push_options: Vec<String>,
    pub(super) objects: gix_odb::Handle,
    pub(super) timeout: Duration,
}

/// Run `forward` on its own thread and wait for it until the job's deadline, passing its
/// progress to `progress` meanwhile. Always returns exactly one result per update.
pub(super) fn run(
    forward: &Arc<dyn Forward>,
    job: Job,
    progress: &mut dyn Write,
) -> Vec<Forwarded> {
    let Job {
        upstream,
        updates,
        atomic,
        push_options,
        objects,
        timeout,
    } = job;
    enum Event {
        Progress(Vec<u8>),
        Done(Vec<Forwarded>),
    }
    struct Sender(mpsc::Sender<Event>);
    impl Write for Sender {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .send(Event::Progress(buf.to_vec()))
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let deadline = Instant::now() + timeout;
    let count = updates.len();
    let (sender, receiver) = mpsc::channel();
    let forward = Arc::clone(forward);
    let upstream_owned = upstream.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_forward = Arc::clone(&stop);
    let spawned = std::thread::Builder::new()
        .name("packgate-forward".into())
        .spawn(move || {
            let request = ForwardRequest {
                upstream: &upstream_owned,
                updates: &updates,
                atomic,
                push_options: &push_options,
                objects: &objects,
                deadline,
                stop: stop_forward,
            };
            let mut writer = Sender(sender.clone());
            let results = forward.forward(&request, &mut writer);
            let _ = sender.send(Event::Done(results));
        });
    if let Err(err) = spawned {
        let why = format!("could not start the upstream client: {err}");
        return vec![Forwarded::Unreachable(why); count];
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok(Event::Progress(bytes)) => {
                let _ = progress.write_all(&bytes);
            }
            Ok(Event::Done(mut results)) => {
                if results.len() != count {
                    tracing::warn!(
                        expected = count,
                        got = results.len(),
                        %upstream,
                        "the upstream client answered for a different number of refs"
                    );
                }
                results.resize(
                    count,
                    Forwarded::Unreachable("the upstream client gave no result".into()),
                );
                results.truncate(count);
                return results;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                stop.store(true, Ordering::SeqCst);
                tracing::warn!(%upstream, ?timeout, "upstream did not answer in time");
                let why = format!("no answer within {} seconds", timeout.as_secs());
                return vec![Forwarded::Unreachable(why); count];
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                tracing::warn!(%upstream, "the upstream client ended without a result");
                let why = "the upstream client failed".to_owned();
                return vec![Forwarded::Unreachable(why); count];
            }
        }
    }
}

/// `packgate.upstream` as the gate uses it: a relative local path is taken relative to the
/// repository's git directory, where git runs a push's hooks (a `git push ../other.git` in a
/// hook means the same), not to wherever the server happened to start. URLs (`scheme://…`),
/// scp-like `host:path`, absolute paths and `~…` are kept as they are.
pub(super) fn resolve_upstream(upstream: &str, git_dir: &std::path::Path) -> String {
    let is_url = upstream.contains("://");
    // git's rule: a colon before the first slash makes `host:path` (ssh).
    let scp_like = upstream
        .find(':')
        .is_some_and(|colon| upstream.find('/').is_none_or(|slash| colon < slash));
    if is_url || scp_like || upstream.starts_with('/') || upstream.starts_with('~') {
        return upstream.to_owned();
    }
    git_dir.join(upstream).to_string_lossy().into_owned()
}

/// The `ng` reason of an update upstream did not accept; `None` if it did.
pub(super) fn reason(result: &Forwarded) -> Option<String> {
    match result {
        Forwarded::Accepted => None,
        Forwarded::Refused(why) => Some(format!("upstream: {why}")),
        Forwarded::Unreachable(why) => Some(format!("upstream unreachable: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::resolve_upstream;

    #[test]
    fn relative_local_upstreams_are_relative_to_the_git_dir() {
        let git_dir = Path::new("/srv/git/gate.git");
        for (upstream, resolved) in [
            ("../up.git", "/srv/git/gate.git/../up.git"),
            ("up stream.git", "/srv/git/gate.git/up stream.git"),
            ("./a/b:c", "/srv/git/gate.git/./a/b:c"),
            ("/abs/up.git", "/abs/up.git"),
            ("~/up.git", "~/up.git"),
            ("git://host/up.git", "git://host/up.git"),
            ("file:///srv/up.git", "file:///srv/up.git"),
            ("https://host/up.git", "https://host/up.git"),
            ("host:up.git", "host:up.git"),
            ("user@host:dir/up.git", "user@host:dir/up.git"),
        ] {
            assert_eq!(resolve_upstream(upstream, git_dir), resolved, "{upstream}");
        }
    }
}
