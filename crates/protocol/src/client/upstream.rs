//! The real upstream clients of a gate and a mirror: [`PushForward`] forwards a gated push
//! with [`push`](super::push::push), [`FetchRefresh`] brings a gated repository or a mirror
//! up to date with [`fetch`](super::fetch::fetch), over whatever [`Connector`] the
//! application gives them (the `packgate` binary gives `transport::client::Client`).

use std::{
    io::{self, BufRead, Write},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use packgate_wire::client::{ConnectError, ConnectOptions, Connection, Connector, WireVersion};
use packgate_wire::service::Service;

use super::fetch::{self, FetchOptions};
use super::push::{self, Expected, PushCommand, PushError, PushOptions, RefStatus};
use crate::error_chain;
use crate::receive_pack::gate::{Forward, ForwardRequest, Forwarded};
use crate::repository::{PathLookup, Repository};
use crate::upstream::Refresh;

/// The shortest bound a forwarding's connection gets, even when the deadline is nearer: a
/// connection with no time at all would fail for nothing.
const MINIMUM_WAIT: Duration = Duration::from_millis(100);

/// A gate's [`Forward`]: pushes each update upstream with the gate's old value as the
/// expected one (`--force-with-lease=<ref>:<old>`), so upstream moves only from the state the
/// gate and the pushing client agreed on; a fast-forward rule is the gate's own (its
/// `receive.denyNonFastForwards` and hooks ran already) and upstream's, which applies its
/// own on top.
pub struct PushForward {
    connector: Arc<dyn Connector>,
}

impl PushForward {
    /// Forwards over `connector`.
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        PushForward { connector }
    }
}

impl std::fmt::Debug for PushForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushForward").finish_non_exhaustive()
    }
}

impl Forward for PushForward {
    fn forward(&self, request: &ForwardRequest<'_>, progress: &mut dyn Write) -> Vec<Forwarded> {
        let count = request.updates.len();
        let all = |outcome: Forwarded| vec![outcome; count];
        let mut commands = Vec::with_capacity(count);
        for update in request.updates {
            let name = match gix_ref::FullName::try_from(update.name.clone()) {
                Ok(name) => name,
                Err(err) => return all(Forwarded::Refused(format!("invalid ref name: {err}"))),
            };
            commands.push(PushCommand {
                name,
                new: update.new,
                expected: Expected::Exactly(update.old),
                force: true,
            });
        }
        let wait = time_left(request.deadline);
        let options = ConnectOptions {
            version: WireVersion::V0,
            timeout: Some(wait),
            ..ConnectOptions::default()
        };
        let connection =
            match self
                .connector
                .connect(request.upstream, Service::ReceivePack, &options)
            {
                Ok(connection) => connection,
                Err(err @ ConnectError::Refused(_)) => {
                    return all(Forwarded::Refused(err.to_string()))
                }
                Err(err) => return all(Forwarded::Unreachable(err.to_string())),
            };
        let options = PushOptions {
            atomic: request.atomic,
            push_options: request.push_options.to_vec(),
            ..PushOptions::default()
        };
        let connection = Box::new(Stoppable {
            inner: connection,
            stop: Arc::clone(&request.stop),
        });
        match push::push(connection, request.objects, &commands, &options, progress) {
            Ok(report) => report
                .refs
                .into_iter()
                .map(|result| match result.status {
                    RefStatus::Ok { .. } | RefStatus::UpToDate => Forwarded::Accepted,
                    RefStatus::Refused(reason) | RefStatus::NotSent(reason) => {
                        Forwarded::Refused(reason)
                    }
                    RefStatus::Unknown(reason) => {
                        Forwarded::Unreachable(format!("outcome unknown: {reason}"))
                    }
                })
                .collect(),
            Err(err @ (PushError::Io(_) | PushError::Advertisement(_))) => {
                all(Forwarded::Unreachable(error_chain(&err)))
            }
            Err(err) => all(Forwarded::Refused(error_chain(&err))),
        }
    }
}

/// The time left until `deadline`, at least [`MINIMUM_WAIT`].
fn time_left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(MINIMUM_WAIT)
}

/// A gate's or a mirror's [`Refresh`]: fetches every ref of upstream as `packgate mirror`
/// does (`+refs/*:refs/*`, deleted refs pruned, `HEAD` as upstream's), creating the mirror
/// repository first if it does not exist. Refs move only after the pack is checked and its
/// objects migrated, so a reader never sees a half-fetched state.
pub struct FetchRefresh {
    connector: Arc<dyn Connector>,
}

impl FetchRefresh {
    /// Refreshes over `connector`.
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        FetchRefresh { connector }
    }
}

impl std::fmt::Debug for FetchRefresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchRefresh").finish_non_exhaustive()
    }
}

impl Refresh for FetchRefresh {
    fn refresh(&self, git_dir: &Path, upstream: &str, deadline: Instant) -> Result<(), String> {
        let missing = !git_dir.exists()
            || std::fs::read_dir(git_dir)
                .map(|mut entries| entries.next().is_none())
                .unwrap_or(false);
        if missing {
            fetch::init_mirror(git_dir, upstream)
                .map_err(|err| format!("could not create {}: {err}", git_dir.display()))?;
        }
        let repo =
            Repository::open(git_dir, PathLookup::Strict, None).map_err(|err| error_chain(&err))?;
        let options = ConnectOptions {
            timeout: Some(time_left(deadline)),
            ..ConnectOptions::default()
        };
        let connection = self
            .connector
            .connect(upstream, Service::UploadPack, &options)
            .map_err(|err| format!("could not connect to '{upstream}': {err}"))?;
        let options = FetchOptions {
            mirror: true,
            quiet: true,
            ..FetchOptions::default()
        };
        let outcome = fetch::fetch(connection, &repo, &options, &mut std::io::sink())
            .map_err(|err| error_chain(&err))?;
        tracing::debug!(
            git_dir = %git_dir.display(),
            changes = outcome.changes.len(),
            unchanged = outcome.unchanged,
            "refreshed from upstream"
        );
        Ok(())
    }
}

/// A connection whose writes fail once the gate stopped waiting ([`ForwardRequest::stop`]):
/// upstream then sees a pack cut short and moves nothing, instead of completing a push the
/// gate's client was told had failed. (Bytes already in the transport's buffers still go
/// out; a pack is incomplete without its end, so that is harmless.)
struct Stoppable {
    inner: Box<dyn Connection>,
    stop: Arc<AtomicBool>,
}

impl Stoppable {
    fn check(&self) -> io::Result<()> {
        if self.stop.load(Ordering::SeqCst) {
            return Err(io::Error::other("the gate stopped waiting for upstream"));
        }
        Ok(())
    }
}

impl Write for Stoppable {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        self.inner.writer().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        self.inner.writer().flush()
    }
}

impl Connection for Stoppable {
    fn stateless(&self) -> bool {
        self.inner.stateless()
    }

    fn reader(&mut self) -> &mut dyn BufRead {
        self.inner.reader()
    }

    fn writer(&mut self) -> &mut dyn Write {
        self
    }

    fn end_request(&mut self) -> io::Result<()> {
        self.check()?;
        self.inner.end_request()
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        self.inner.finish()
    }
}
