//! The `wait-refs` command (docs/refs-watch.md): answer once the refs a client sees under
//! some prefixes differ from a token it names, or when its timeout ends.
//!
//! Two ways to wait: a front-end that can wait without a thread (git://) asks
//! [`UploadPack::prepare_wait`] first and awaits the [`Wait`] it gets, as often as it gets
//! one, then calls [`UploadPack::handle_prepared`], which answers at once; every other caller
//! (stdio, SSH) just calls [`UploadPack::handle`], which blocks its thread until a change or
//! the timeout.

use std::{
    io::Write,
    sync::Arc,
    time::{Duration, Instant},
};

use bstr::{BString, ByteSlice};
use packgate_wire::{pkt_line::PacketWriter, service::Wait, v2};

use super::{
    ls_refs::{self, Format, Listing},
    reject, Flow, ServeError, UploadPack,
};
use crate::{
    config::UnbornPolicy,
    refname::RefPrefix,
    refs_watch::{self, RefsToken, Subscription},
};

/// How long a request without `timeout` waits (at most the configured maximum).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a client refused a `wait-refs` is told when its connection cannot wait (HTTP).
pub(super) const NEEDS_STATEFUL: &str = "wait-refs needs a stateful connection";

/// The arguments of one `wait-refs` request.
#[derive(Debug, PartialEq, Eq)]
struct Arguments {
    since: Option<RefsToken>,
    prefixes: Vec<RefPrefix>,
    timeout: Duration,
    format: Format,
}

fn parse(arguments: &[BString], max_timeout: Duration) -> Result<Arguments, String> {
    let mut parsed = Arguments {
        since: None,
        prefixes: Vec::new(),
        timeout: DEFAULT_TIMEOUT.min(max_timeout),
        format: Format::default(),
    };
    for argument in arguments {
        let (key, value) = match argument.split_once_str(" ") {
            Some((key, value)) => (key, Some(value)),
            None => (argument.as_slice(), None),
        };
        match (key, value) {
            (b"symrefs", None) => parsed.format.symrefs = true,
            (b"peel", None) => parsed.format.peel = true,
            (b"unborn", None) => parsed.format.unborn = true,
            (b"ref-prefix", Some(prefix)) => parsed.prefixes.push(RefPrefix::new(prefix)),
            (b"since", Some(token)) => {
                parsed.since = Some(RefsToken::parse(token).map_err(|err| err.to_string())?)
            }
            (b"timeout", Some(seconds)) => parsed.timeout = timeout(seconds, max_timeout)?,
            _ => return Err(format!("unexpected line: '{}'", argument.as_bstr())),
        }
    }
    Ok(parsed)
}

/// A `timeout` value: decimal seconds, at most `max`.
fn timeout(seconds: &[u8], max: Duration) -> Result<Duration, String> {
    if seconds.is_empty() || !seconds.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "wait-refs: invalid timeout '{}': expected a number of seconds",
            seconds.as_bstr()
        ));
    }
    let too_long = || {
        format!(
            "wait-refs: timeout {} is above the maximum of {} seconds",
            seconds.as_bstr(),
            max.as_secs()
        )
    };
    // Only digits: the one way to fail is a number too large for u64.
    let value: u64 = std::str::from_utf8(seconds)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(too_long)?;
    let value = Duration::from_secs(value);
    if value > max {
        return Err(too_long());
    }
    Ok(value)
}

/// What a `wait-refs` request that a front-end waits for holds between
/// [`UploadPack::prepare_wait`] and [`UploadPack::handle_prepared`]: its subscription (so
/// no change is lost), the token it compares against, and when it ends.
#[derive(Debug, Default)]
pub struct WaitState {
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    subscription: Subscription,
    since: RefsToken,
    deadline: Instant,
}

impl UploadPack<'_> {
    /// Whether `wait-refs` is advertised and served: configured, on a stateful session.
    pub(super) fn serves_wait_refs(&self, stateful: bool) -> bool {
        self.config.refs_watch && stateful
    }

    /// For a front-end that waits without a thread: if `request` is a `wait-refs` that must
    /// wait (nothing changed yet, time left), what to await before calling
    /// [`UploadPack::handle_prepared`] with the same `state`; `None` when it can be answered
    /// now (or is no `wait-refs`, or is malformed: the answer says so). Called again after
    /// the `Wait` ends, it returns another one when the wake-up was for nothing the client
    /// sees (a hidden ref moved) and time is left.
    pub fn prepare_wait(&self, request: &v2::Request, state: &mut WaitState) -> Option<Wait> {
        if request.command != "wait-refs" || !self.serves_wait_refs(self.stateful) {
            return None;
        }
        // A request `handle` refuses is refused before it waits.
        super::check_capabilities(&self.config, &request.capabilities).ok()?;
        let arguments = parse(&request.arguments, self.config.wait_refs_max_timeout).ok()?;
        if let Some(pending) = &state.pending {
            // Woken (or the deadline passed): wait on only if nothing visible changed.
            pending.subscription.take();
            // Woken by a change: the listing its waiters share, read once for all of them.
            let current = match pending.subscription.shared_state(
                self.repo,
                &self.config,
                &arguments.prefixes,
            ) {
                Some(state) => state.token.clone(),
                None => {
                    refs_watch::refs_token(self.repo, &self.config, &arguments.prefixes).ok()?
                }
            };
            if current != pending.since || Instant::now() >= pending.deadline {
                return None;
            }
            return Some(Wait {
                changed: Box::pin(pending.subscription.notified()),
                deadline: pending.deadline,
            });
        }
        let deadline = Instant::now() + arguments.timeout;
        // Subscribe before reading the state compared against: no change falls in between.
        let subscription = refs_watch::global()
            .subscribe(self.repo, &arguments.prefixes)
            .ok()?;
        let current = refs_watch::refs_token(self.repo, &self.config, &arguments.prefixes).ok()?;
        let since = arguments.since.unwrap_or_else(|| current.clone());
        let wait = (current == since && !arguments.timeout.is_zero()).then(|| Wait {
            changed: Box::pin(subscription.notified()),
            deadline,
        });
        state.pending = Some(Pending {
            subscription,
            since,
            deadline,
        });
        wait
    }
}

pub(super) fn handle<W: Write>(
    upload_pack: &UploadPack<'_>,
    arguments: &[BString],
    out: &mut PacketWriter<W>,
    stateful: bool,
    state: &mut WaitState,
) -> Result<Flow, ServeError> {
    let pending = state.pending.take();
    if !stateful {
        return Err(reject(out, NEEDS_STATEFUL.to_owned()));
    }
    let config = &upload_pack.config;
    let mut arguments = match parse(arguments, config.wait_refs_max_timeout) {
        Ok(arguments) => arguments,
        Err(message) => return Err(reject(out, message)),
    };
    arguments.format.unborn &= config.lsrefs_unborn != UnbornPolicy::Ignore;
    let failed = |out: &mut PacketWriter<W>, err: &dyn std::error::Error| {
        reject(out, format!("wait-refs: {err}"))
    };
    let repo = upload_pack.repo;
    let (state, since) = match pending {
        // The front-end waited already: answer with what is there now.
        Some(pending) => {
            match pending
                .subscription
                .shared_state(repo, config, &arguments.prefixes)
            {
                Some(state) => (state, pending.since),
                None => match refs_watch::refs_state(repo, config, &arguments.prefixes) {
                    Ok(state) => (Arc::new(state), pending.since),
                    Err(err) => return Err(failed(out, &err)),
                },
            }
        }
        // Wait here, blocking this thread.
        None => {
            let deadline = Instant::now() + arguments.timeout;
            let subscription = match refs_watch::global().subscribe(repo, &arguments.prefixes) {
                Ok(subscription) => subscription,
                Err(err) => return Err(failed(out, &err)),
            };
            let mut since = arguments.since.take();
            loop {
                let state = match refs_watch::refs_state(repo, config, &arguments.prefixes) {
                    Ok(state) => state,
                    Err(err) => return Err(failed(out, &err)),
                };
                let since = since.get_or_insert_with(|| state.token.clone());
                if state.token != *since || Instant::now() >= deadline {
                    break (Arc::new(state), since.clone());
                }
                if subscription.wait_until(deadline) {
                    subscription.take();
                }
            }
        }
    };
    if state.token == since {
        out.write_text(format!("unchanged {since}"))?;
    } else {
        out.write_text(format!("changed {}", state.token))?;
        match ls_refs::write_listing(upload_pack, &state.refs, arguments.format, out) {
            Ok(()) => {}
            Err(Listing::Refs(err)) => return Err(failed(out, &err)),
            Err(Listing::Write(err)) => return Err(err.into()),
        }
    }
    out.flush_pkt()?;
    Ok(Flow::Continue)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(600);

    fn parse_lines(lines: &[&str]) -> Result<Arguments, String> {
        let lines: Vec<BString> = lines.iter().map(|line| BString::from(*line)).collect();
        parse(&lines, MAX)
    }

    #[test]
    fn arguments() {
        let token = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            parse_lines(&[
                &format!("since {token}"),
                "ref-prefix refs/heads/",
                "timeout 5",
                "symrefs",
                "peel",
                "unborn",
            ]),
            Ok(Arguments {
                since: Some(RefsToken::parse(token.as_bytes()).unwrap()),
                prefixes: vec![RefPrefix::new("refs/heads/")],
                timeout: Duration::from_secs(5),
                format: Format {
                    symrefs: true,
                    peel: true,
                    unborn: true,
                },
            })
        );
        let defaults = parse_lines(&[]).unwrap();
        assert_eq!(defaults.timeout, DEFAULT_TIMEOUT);
        assert_eq!(defaults.since, None);
        // A maximum below the default caps the default.
        let lines = [BString::from("peel")];
        assert_eq!(
            parse(&lines, Duration::from_secs(10)).unwrap().timeout,
            Duration::from_secs(10)
        );
        assert_eq!(parse_lines(&["timeout 600"]).unwrap().timeout, MAX);
        assert_eq!(parse_lines(&["timeout 0"]).unwrap().timeout, Duration::ZERO);
    }

    #[test]
    fn bad_arguments() {
        let error = |lines: &[&str]| parse_lines(lines).unwrap_err();
        assert_eq!(
            error(&["timeout 601"]),
            "wait-refs: timeout 601 is above the maximum of 600 seconds"
        );
        assert_eq!(
            error(&["timeout 99999999999999999999999"]),
            "wait-refs: timeout 99999999999999999999999 is above the maximum of 600 seconds"
        );
        for bad in [
            "timeout soon",
            "timeout -1",
            "timeout +5",
            "timeout ",
            "timeout 1.5",
        ] {
            assert!(
                error(&[bad]).starts_with("wait-refs: invalid timeout"),
                "{bad}: {}",
                error(&[bad])
            );
        }
        assert!(error(&["since nope"]).starts_with("malformed refs token"));
        assert_eq!(error(&["timeout"]), "unexpected line: 'timeout'");
        assert_eq!(error(&["frobnicate"]), "unexpected line: 'frobnicate'");
        assert_eq!(error(&["peel yes"]), "unexpected line: 'peel yes'");
    }
}
