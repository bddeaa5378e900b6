//! The remote's answer to a push: `report-status` and `report-status-v2` as git's
//! `receive_status()` reads them (sans I/O: lines in, a [`Report`] out).
//!
//! ```text
//! unpack ok | unpack <error>
//! ok <ref> | ng <ref> <reason>
//! option refname <ref> | option old-oid <id> | option new-oid <id> | option forced-update   (v2)
//! ```

use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;

/// What the remote said about one ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefLine {
    /// The ref the line names, as sent in the command.
    pub name: BString,
    /// `ok` (`Ok`), or `ng` with its reason (`failed` when it gave none, as git reads it).
    pub outcome: Result<(), String>,
    /// report-status-v2's `option` lines after an `ok`: one entry per report (a
    /// `proc-receive` hook may report several updates for one command).
    pub reports: Vec<RemoteReport>,
}

/// One `option` block of report-status-v2: what the remote actually did for a command (a
/// `proc-receive` hook may update another ref than the one pushed, or report old and new
/// values of its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteReport {
    /// `option refname <ref>`: the ref really updated.
    pub ref_name: Option<BString>,
    /// `option old-oid <id>`.
    pub old: Option<ObjectId>,
    /// `option new-oid <id>`.
    pub new: Option<ObjectId>,
    /// `option forced-update`.
    pub forced_update: bool,
}

/// The whole answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// `unpack ok` (`None`), or the remote's unpack error (`Some`; also when the first line
    /// was missing or not an `unpack` line).
    pub unpack_error: Option<String>,
    /// The ref lines in the order received.
    pub refs: Vec<RefLine>,
    /// Problems with lines the parser skipped or stopped at (git's `error: …` lines).
    pub problems: Vec<String>,
    /// True once the report's closing flush was seen: a report without it was cut off.
    pub complete: bool,
}

/// Reads a report line by line.
#[derive(Debug, Default)]
pub struct ReportParser {
    report: Report,
    started: bool,
    /// Lines after an invalid one are not read (git stops there).
    stopped: bool,
    /// An `ok` was the last ref line: `option` lines may follow and start a new report.
    new_report: bool,
}

impl ReportParser {
    /// A parser waiting for the `unpack` line.
    pub fn new() -> Self {
        Self::default()
    }

    /// One line (without its pkt-line header; a trailing newline is ignored).
    pub fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        if !self.started {
            self.started = true;
            self.report.unpack_error = match line.strip_prefix(b"unpack ") {
                Some(b"ok") => None,
                Some(error) => Some(error.to_str_lossy().into_owned()),
                None => {
                    let problem = format!(
                        "unable to parse remote unpack status: {}",
                        line.to_str_lossy()
                    );
                    self.report.problems.push(problem.clone());
                    Some(problem)
                }
            };
            return;
        }
        if self.stopped {
            return;
        }
        let Some((head, rest)) = line.split_once_str(" ") else {
            self.stop(format!(
                "invalid status line from remote: {}",
                line.to_str_lossy()
            ));
            return;
        };
        if head == b"option" {
            self.option(rest);
            return;
        }
        self.new_report = false;
        let (name, message) = match rest.split_once_str(" ") {
            Some((name, message)) => (name, Some(message)),
            None => (rest, None),
        };
        let outcome = match head {
            b"ok" => {
                self.new_report = true;
                Ok(())
            }
            b"ng" => Err(message
                .map(|m| m.to_str_lossy().into_owned())
                .unwrap_or_else(|| "failed".to_owned())),
            _ => {
                self.stop(format!(
                    "invalid ref status from remote: {}",
                    head.to_str_lossy()
                ));
                return;
            }
        };
        self.report.refs.push(RefLine {
            name: name.into(),
            outcome,
            reports: Vec::new(),
        });
    }

    /// The report's flush: it is complete.
    pub fn flush(&mut self) {
        if !self.started {
            self.report.unpack_error =
                Some("unexpected flush packet while reading remote unpack status".to_owned());
            self.report
                .problems
                .push("unexpected flush packet while reading remote unpack status".to_owned());
        }
        self.report.complete = true;
    }

    /// The report as read so far.
    pub fn finish(self) -> Report {
        self.report
    }

    fn stop(&mut self, problem: String) {
        self.report.problems.push(problem);
        self.stopped = true;
    }

    fn option(&mut self, rest: &[u8]) {
        let Some(last) = self.report.refs.last_mut().filter(|l| l.outcome.is_ok()) else {
            self.report
                .problems
                .push("'option' without a matching 'ok/ng' directive".to_owned());
            return;
        };
        if self.new_report || last.reports.is_empty() {
            last.reports.push(RemoteReport::default());
            self.new_report = false;
        }
        let Some(report) = last.reports.last_mut() else {
            return;
        };
        let (key, value) = match rest.split_once_str(" ") {
            Some((key, value)) => (key, Some(value)),
            None => (rest, None),
        };
        let id = || value.and_then(|v| ObjectId::from_hex(v).ok());
        match key {
            b"refname" => report.ref_name = value.map(BString::from),
            b"old-oid" => report.old = id(),
            b"new-oid" => report.new = id(),
            b"forced-update" => report.forced_update = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str], flush: bool) -> Report {
        let mut parser = ReportParser::new();
        for line in lines {
            parser.line(line.as_bytes());
        }
        if flush {
            parser.flush();
        }
        parser.finish()
    }

    #[test]
    fn ok_and_ng() {
        let report = parse(
            &[
                "unpack ok\n",
                "ok refs/heads/main\n",
                "ng refs/heads/x pre-receive hook declined\n",
                "ng refs/heads/y",
            ],
            true,
        );
        assert!(report.complete);
        assert_eq!(report.unpack_error, None);
        assert_eq!(report.refs.len(), 3);
        assert_eq!(report.refs[0].outcome, Ok(()));
        assert_eq!(
            report.refs[1].outcome,
            Err("pre-receive hook declined".to_owned())
        );
        assert_eq!(report.refs[2].outcome, Err("failed".to_owned()));
    }

    #[test]
    fn unpack_error_and_cut_off() {
        let report = parse(
            &[
                "unpack index-pack abnormal exit",
                "ng refs/heads/main unpacker error",
            ],
            false,
        );
        assert!(!report.complete);
        assert_eq!(
            report.unpack_error.as_deref(),
            Some("index-pack abnormal exit")
        );
        assert_eq!(report.refs.len(), 1);
        let report = parse(&[], true);
        assert!(report.unpack_error.is_some());
    }

    #[test]
    fn v2_options() {
        let a = "1".repeat(40);
        let b = "2".repeat(40);
        let report = parse(
            &[
                "unpack ok",
                "ok refs/for/main",
                "option refname refs/changes/1",
                &format!("option old-oid {a}"),
                &format!("option new-oid {b}"),
                "option forced-update",
                "ok refs/heads/x",
            ],
            true,
        );
        let reports = &report.refs[0].reports;
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].ref_name, Some(BString::from("refs/changes/1")));
        assert_eq!(reports[0].old, ObjectId::from_hex(a.as_bytes()).ok());
        assert_eq!(reports[0].new, ObjectId::from_hex(b.as_bytes()).ok());
        assert!(reports[0].forced_update);
        assert!(report.refs[1].reports.is_empty());
    }

    #[test]
    fn invalid_lines() {
        let report = parse(
            &["unpack ok", "option refname x", "what", "ok refs/heads/a"],
            true,
        );
        assert_eq!(report.problems.len(), 2);
        assert!(report.refs.is_empty(), "git stops at an invalid line");
        let report = parse(&["unpack ok", "maybe refs/heads/a"], true);
        assert_eq!(
            report.problems,
            vec!["invalid ref status from remote: maybe".to_owned()]
        );
    }
}
