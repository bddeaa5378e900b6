//! What the server says back during and after a push: messages for the user (`remote: …`)
//! and the status report (`unpack ok`, `ok <ref>` / `ng <ref> <reason>`).

use std::{
    io::{self, Write},
    time::Duration,
};

use bstr::BString;
#[cfg(test)]
use bstr::ByteSlice;
use packgate_wire::{
    pkt_line,
    sideband::{Band, SidebandMode, SidebandWriter},
};

use crate::keepalive::{self, KeepaliveWriter};

/// The result of one command, as reported to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefStatus {
    /// The ref, as the client named it.
    pub name: BString,
    /// `Ok` if the ref was updated, else why not (the `ng` reason).
    pub result: Result<(), String>,
    /// What a `proc-receive` hook reported it updated instead (one entry per ref it
    /// updated; empty for an ordinary command): `report-status-v2` sends them as `option`
    /// lines after the `ok`.
    pub reports: Vec<packgate_hooks::RefReport>,
}

/// The outcome of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// `Ok` if the pack was received and indexed (or none was needed), else why not.
    pub unpack: Result<(), String>,
    /// One entry per command, in the order the client sent them.
    pub refs: Vec<RefStatus>,
}

impl PushReport {
    /// Whether every command succeeded.
    pub fn all_ok(&self) -> bool {
        self.unpack.is_ok() && self.refs.iter().all(|status| status.result.is_ok())
    }

    /// The report as pkt-lines, ending in a flush: `report-status`, or with `v2`
    /// `report-status-v2`, where each of a ref's [`RefStatus::reports`] follows an `ok` line
    /// of its own with its `option refname`, `old-oid`, `new-oid` and `forced-update` lines,
    /// as git's receive-pack writes them. (A `report-status` client learns only `ok`.)
    pub fn encode(&self, v2: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line = |text: &[u8]| {
            // A line too long for a pkt-line (a very long ref name) is cut rather than lost.
            let text = &text[..text.len().min(pkt_line::MAX_DATA_LENGTH)];
            let _ = pkt_line::encode_data(text, &mut out);
        };
        match &self.unpack {
            Ok(()) => line(b"unpack ok\n"),
            Err(reason) => line(format!("unpack {}\n", one_line(reason)).as_bytes()),
        }
        for status in &self.refs {
            let text = match &status.result {
                Ok(()) => format!("ok {}\n", status.name),
                Err(reason) => format!("ng {} {}\n", status.name, one_line(reason)),
            };
            line(text.as_bytes());
            if !v2 || status.result.is_err() {
                continue;
            }
            for (index, report) in status.reports.iter().enumerate() {
                if index > 0 {
                    line(text.as_bytes());
                }
                if let Some(refname) = &report.refname {
                    line(format!("option refname {refname}\n").as_bytes());
                }
                if let Some(old) = &report.old {
                    line(format!("option old-oid {old}\n").as_bytes());
                }
                if let Some(new) = &report.new {
                    line(format!("option new-oid {new}\n").as_bytes());
                }
                if report.forced_update {
                    line(b"option forced-update\n");
                }
            }
        }
        pkt_line::encode_flush(&mut out);
        out
    }
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// The way back to the client: sideband-multiplexed or plain, with messages for the user going
/// to band 2 or to `diagnostics` (the caller's [`super::MessageSink`]).
pub(crate) struct Channel<'d, W: Write> {
    out: SidebandWriter<W>,
    sideband: bool,
    diagnostics: &'d mut dyn Write,
}

impl<'d, W: Write> Channel<'d, W> {
    pub(crate) fn new(out: W, sideband: bool, diagnostics: &'d mut dyn Write) -> Self {
        Channel {
            out: SidebandWriter::new(out, SidebandMode::SideBand64k),
            sideband,
            diagnostics,
        }
    }

    /// A message for the user, shown as `remote: <text>`. Write failures are ignored: a
    /// client that went away is noticed when the report is sent.
    pub(crate) fn message(&mut self, text: &[u8]) {
        let result = if self.sideband {
            self.out
                .write_band(Band::Progress, text)
                .and_then(|()| self.out.flush())
        } else {
            self.diagnostics
                .write_all(text)
                .and_then(|()| self.diagnostics.flush())
        };
        if let Err(err) = result {
            tracing::debug!(%err, "could not pass a message on to the client");
        }
    }

    /// `error: <text>`, as git's receive-pack reports refusals; each line gets the prefix.
    pub(crate) fn error(&mut self, text: impl std::fmt::Display) {
        self.prefixed("error: ", &text.to_string());
    }

    /// `warning: <text>`.
    pub(crate) fn warning(&mut self, text: impl std::fmt::Display) {
        self.prefixed("warning: ", &text.to_string());
    }

    fn prefixed(&mut self, prefix: &str, text: &str) {
        let mut message = String::new();
        for line in text.lines() {
            message.push_str(prefix);
            message.push_str(line);
            message.push('\n');
        }
        self.message(message.as_bytes());
    }

    /// A fatal error: band 3 with sideband, else an `ERR` pkt-line. (The front-end also
    /// logs the error that ends the session.)
    pub(crate) fn fatal(&mut self, text: &str) -> io::Result<()> {
        if self.sideband {
            self.out.error(format!("{text}\n").as_bytes())?;
        } else {
            let mut packet = Vec::new();
            pkt_line::encode_error(text, &mut packet);
            self.out.get_mut().write_all(&packet)?;
        }
        self.out.flush()
    }

    /// The status report (`report-status-v2` with `v2`): in band 1, or as it is.
    pub(crate) fn report(&mut self, report: &PushReport, v2: bool) -> io::Result<()> {
        let encoded = report.encode(v2);
        if self.sideband {
            self.out.write_band(Band::Data, &encoded)?;
        } else {
            self.out.get_mut().write_all(&encoded)?;
        }
        self.out.flush()
    }

    /// End the response: the flush-pkt that closes the sideband stream.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        if self.sideband {
            let mut flush = Vec::new();
            pkt_line::encode_flush(&mut flush);
            self.out.get_mut().write_all(&flush)?;
        }
        self.out.flush()
    }

    /// Run `work` on a thread of its own with a channel whose packets this thread writes,
    /// adding a keepalive packet whenever nothing was sent for `interval`
    /// ([`keepalive::run()`]). Only with sideband: without it there is no room for one.
    pub(crate) fn with_keepalive<T: Send>(
        &mut self,
        interval: Duration,
        work: impl FnOnce(&mut Channel<'_, &mut KeepaliveWriter<'_>>) -> T + Send,
    ) -> T {
        debug_assert!(self.sideband, "keepalives need sideband");
        keepalive::run(self.out.get_mut(), interval, |writer| {
            // With sideband, messages go to band 2: nothing reaches the diagnostics.
            let mut unused = io::sink();
            let mut channel = Channel::new(writer, true, &mut unused);
            work(&mut channel)
        })
    }

    /// A writer whose bytes become user messages (for hook output).
    pub(crate) fn messages(&mut self) -> Messages<'_, 'd, W> {
        Messages { channel: self }
    }
}

/// [`Channel::message`] as a [`Write`].
pub(crate) struct Messages<'c, 'd, W: Write> {
    channel: &'c mut Channel<'d, W>,
}

impl<W: Write> Write for Messages<'_, '_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.channel.message(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_report() {
        let report = PushReport {
            unpack: Ok(()),
            refs: vec![
                RefStatus {
                    name: "refs/heads/a".into(),
                    result: Ok(()),
                    reports: Vec::new(),
                },
                RefStatus {
                    name: "refs/heads/b".into(),
                    result: Err("non-fast-forward".into()),
                    reports: Vec::new(),
                },
            ],
        };
        assert_eq!(
            report.encode(false).as_bstr(),
            "000eunpack ok\n0014ok refs/heads/a\n0025ng refs/heads/b non-fast-forward\n0000"
        );
        let failed = PushReport {
            unpack: Err("index-pack abnormal exit\nsecond".into()),
            refs: vec![],
        };
        assert_eq!(
            failed.encode(true).as_bstr(),
            "002bunpack index-pack abnormal exit second\n0000"
        );
    }

    /// What a proc-receive hook reported: in v2 one `ok` per report, each with its options;
    /// in v1 the command's `ok` only.
    #[test]
    fn encode_report_v2() {
        use packgate_hooks::RefReport;
        let old = gix_hash::ObjectId::from_hex(&[b'b'; 40]).unwrap();
        let new = gix_hash::ObjectId::from_hex(&[b'a'; 40]).unwrap();
        let report = PushReport {
            unpack: Ok(()),
            refs: vec![
                RefStatus {
                    name: "refs/for/main/topic".into(),
                    result: Ok(()),
                    reports: vec![
                        RefReport {
                            refname: Some("refs/changes/23/123/1".into()),
                            new: Some(new),
                            ..RefReport::default()
                        },
                        RefReport {
                            refname: Some("refs/changes/24/124/2".into()),
                            old: Some(old),
                            new: Some(new),
                            forced_update: true,
                        },
                    ],
                },
                RefStatus {
                    name: "refs/for/next/topic".into(),
                    result: Err("no".into()),
                    reports: vec![RefReport::default()],
                },
            ],
        };
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        assert_eq!(
            report.encode(true).as_bstr(),
            format!(
                "000eunpack ok\n001bok refs/for/main/topic\n0029option refname refs/changes/23/123/1\n\
                 003coption new-oid {a}\n001bok refs/for/main/topic\n\
                 0029option refname refs/changes/24/124/2\n003coption old-oid {b}\n\
                 003coption new-oid {a}\n0019option forced-update\n\
                 001eng refs/for/next/topic no\n0000"
            )
            .as_str()
        );
        assert_eq!(
            report.encode(false).as_bstr(),
            "000eunpack ok\n001bok refs/for/main/topic\n001eng refs/for/next/topic no\n0000"
        );
    }
}
