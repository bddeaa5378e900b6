//! packgate's send-pack: pushes objects and ref updates to a git server's receive-pack over
//! any [`Connection`], as git's `send-pack` does (protocol v0/v1; receive-pack has no v2).
//!
//! The flow: the remote's ref advertisement; each command decided locally
//! ([`decide`]: up to date, the fast-forward rules, leases, atomic); the pack enumerated
//! before anything is sent (so an error there sends nothing); the commands with their
//! capabilities, push options, the pack streamed straight into the connection; then the
//! remote's report (in sideband when negotiated, band 2 going to the caller's progress).
//!
//! Each ref's [`RefStatus`] says exactly which of these happened: sent and accepted (`Ok`),
//! not needed (`UpToDate`), refused by the remote (`Refused`), never sent (`NotSent`), or sent
//! without an answer (`Unknown`: the connection ended before the report).
//!
//! The remote's answer is read only once the whole pack is written (git reads it on a
//! demultiplexing thread meanwhile): over a stream, what the remote says while it receives
//! (index-pack's throttled progress) waits in the connection's buffers, well below a pipe's
//! 64 KiB for any push; a remote that wrote far more before reading the pack's end would
//! stall the push until the connection's timeout.

pub mod decide;
pub mod report;

use std::io::{self, Write};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;
use packgate_wire::client::Connection;
use packgate_wire::pkt_line::{Packet, PacketReader, PacketWriter};

use super::advertisement::{read_advertisement, Advertisement, AdvertisementError};
use decide::{Decision, History};
pub use report::RemoteReport;
use report::{Report, ReportParser};

/// One ref update to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushCommand {
    /// The remote ref to update.
    pub name: gix_ref::FullName,
    /// Its new value; the null id deletes it.
    pub new: ObjectId,
    /// What the remote's value must be.
    pub expected: Expected,
    /// Override the fast-forward rules (`+src:dst`, `--force`).
    pub force: bool,
}

/// What a command expects of the remote's current value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Whatever the remote advertises; the fast-forward rules apply unless forced.
    Advertised,
    /// Exactly this value (`--force-with-lease=<ref>:<id>`; the null id: the ref must not
    /// exist). A match overrides the fast-forward rules, a mismatch is "stale info".
    Exactly(ObjectId),
}

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// All or nothing (`atomic`; refused when the remote lacks it).
    pub atomic: bool,
    /// Push options (`-o`; refused when the remote lacks `push-options`).
    pub push_options: Vec<String>,
    /// Send a thin pack (deltas against objects the remote advertised), unless the remote
    /// said `no-thin`.
    pub thin: bool,
    /// Ask the remote for no progress (`quiet`).
    pub quiet: bool,
    /// Set to stop enumerating or writing the pack (the push then ends with an error, or
    /// with its refs `Unknown` if the pack was under way).
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            atomic: false,
            push_options: Vec::new(),
            thin: true,
            quiet: false,
            interrupt: None,
        }
    }
}

/// What came of a push: one result per command, in the commands' order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// The results.
    pub refs: Vec<RefResult>,
}

impl PushReport {
    /// True when every ref is `Ok` or `UpToDate`.
    pub fn all_ok(&self) -> bool {
        self.refs
            .iter()
            .all(|r| matches!(r.status, RefStatus::Ok { .. } | RefStatus::UpToDate))
    }
}

/// What came of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefResult {
    /// The command's ref.
    pub name: gix_ref::FullName,
    /// What happened.
    pub status: RefStatus,
    /// The value the remote advertised (`None`: it had no such ref).
    pub old: Option<ObjectId>,
    /// report-status-v2's reports of what the remote did instead (a `proc-receive` hook's
    /// `option` lines); empty with report-status v1 or when the remote did what was asked.
    pub remote_reports: Vec<RemoteReport>,
}

/// The outcome of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefStatus {
    /// The remote accepted it (`ok`); `forced` when it was not a fast-forward.
    Ok {
        /// The update overrode the fast-forward rules.
        forced: bool,
    },
    /// The remote already had it: nothing sent.
    UpToDate,
    /// The remote refused it (`ng <ref> <reason>`): the reason.
    Refused(String),
    /// Decided here, never sent: git's reason (`non-fast-forward`, `fetch first`, `stale
    /// info`, `already exists`, `needs force`, `atomic push failed`, …).
    NotSent(String),
    /// Sent, but the outcome is not known: the connection ended (or the remote failed)
    /// after the request went out and before the report said anything about the ref.
    Unknown(String),
}

/// Why a push failed as a whole, before any command was sent.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The advertisement could not be read.
    #[error(transparent)]
    Advertisement(#[from] AdvertisementError),
    /// The remote answered with protocol v2, which has no push.
    #[error(
        "the remote answered a push with protocol v2, which has no push: ask for version 0 or 1"
    )]
    ProtocolV2,
    /// The remote lacks a capability the push needs (git's wording).
    #[error("the receiving end does not support {0}")]
    Unsupported(&'static str),
    /// An object to push is not in the local object database.
    #[error("object {0} to push is missing")]
    MissingObject(ObjectId),
    /// Listing the objects to send failed.
    #[error("could not enumerate the objects to push")]
    Enumerate(#[from] packgate_pack::enumerate::EnumerateError),
    /// Writing the request failed before any command was complete.
    #[error("could not send the push")]
    Io(#[from] io::Error),
}

/// What the remote supports, from its advertisement.
#[derive(Debug, Default)]
struct Remote {
    refs: Vec<(BString, ObjectId)>,
    haves: Vec<ObjectId>,
    report_status: u8,
    delete_refs: bool,
    ofs_delta: bool,
    sideband: bool,
    quiet: bool,
    agent: bool,
    no_thin: bool,
    atomic: bool,
    push_options: bool,
    object_format: bool,
}

impl Remote {
    fn from_advertisement(advertisement: Advertisement) -> Result<Remote, PushError> {
        let Advertisement::V0 { .. } = &advertisement else {
            return Err(PushError::ProtocolV2);
        };
        let mut remote = Remote {
            report_status: if advertisement.has("report-status-v2") {
                2
            } else if advertisement.has("report-status") {
                1
            } else {
                0
            },
            delete_refs: advertisement.has("delete-refs"),
            ofs_delta: advertisement.has("ofs-delta"),
            sideband: advertisement.has("side-band-64k"),
            quiet: advertisement.has("quiet"),
            agent: advertisement.has("agent"),
            no_thin: advertisement.has("no-thin"),
            atomic: advertisement.has("atomic"),
            push_options: advertisement.has("push-options"),
            object_format: advertisement.has("object-format"),
            ..Remote::default()
        };
        // As git's `server_supports_hash()`: no object-format means SHA-1.
        if let Some(format) = advertisement.value("object-format") {
            if format != b"sha1" {
                return Err(PushError::Unsupported("this repository's hash algorithm"));
            }
        }
        if let Advertisement::V0 { refs, haves, .. } = advertisement {
            remote.refs = refs.into_iter().map(|r| (r.name, r.id)).collect();
            remote.haves = haves;
        }
        Ok(remote)
    }

    fn old(&self, name: &gix_ref::FullName) -> Option<ObjectId> {
        self.refs
            .iter()
            .find(|(n, _)| n.as_bstr() == name.as_bstr())
            .map(|(_, id)| *id)
    }

    /// The first command line's capabilities, as git's send-pack lists them.
    fn capabilities(&self, options: &PushOptions, atomic: bool, push_options: bool) -> String {
        let mut caps = String::new();
        match self.report_status {
            2 => caps.push_str(" report-status-v2"),
            1 => caps.push_str(" report-status"),
            _ => {}
        }
        if self.sideband {
            caps.push_str(" side-band-64k");
        }
        if self.quiet && options.quiet {
            caps.push_str(" quiet");
        }
        if atomic {
            caps.push_str(" atomic");
        }
        if push_options {
            caps.push_str(" push-options");
        }
        if self.object_format {
            caps.push_str(" object-format=sha1");
        }
        if self.agent {
            caps.push_str(" agent=");
            caps.push_str(&crate::upload_pack::agent());
        }
        caps
    }
}

/// The most bytes of report (band 1) read before the remote is considered broken.
const MAX_REPORT_BYTES: usize = 16 << 20;

/// Pushes `commands` over `connection` (a receive-pack connection that asked for v0 or v1),
/// with the objects from `db`, which must see every object the push may need. Band 2 of the
/// remote's answer (its progress, its hooks' output) goes to `progress` as received.
pub fn push(
    mut connection: Box<dyn Connection>,
    db: &gix_odb::Handle,
    commands: &[PushCommand],
    options: &PushOptions,
    progress: &mut dyn Write,
) -> Result<PushReport, PushError> {
    let advertisement = read_advertisement(&mut PacketReader::new(connection.reader()))?;
    let remote = Remote::from_advertisement(advertisement)?;
    if options.atomic && !remote.atomic {
        return Err(PushError::Unsupported("--atomic push"));
    }
    if !options.push_options.is_empty() && !remote.push_options {
        return Err(PushError::Unsupported("push options"));
    }
    let history = Objects(db);
    for command in commands {
        if !command.new.is_null() && !history.has(&command.new) {
            return Err(PushError::MissingObject(command.new));
        }
    }
    let decisions = decide::decide_all(
        commands,
        |c| remote.old(&c.name),
        remote.delete_refs,
        options.atomic,
        &history,
    );
    let mut results: Vec<RefResult> = commands
        .iter()
        .zip(&decisions)
        .map(|(command, decision)| RefResult {
            name: command.name.clone(),
            status: match decision {
                Decision::UpToDate => RefStatus::UpToDate,
                Decision::Reject(reason) => RefStatus::NotSent((*reason).to_owned()),
                Decision::Send { forced } => RefStatus::Ok { forced: *forced },
            },
            old: remote.old(&command.name),
            remote_reports: Vec::new(),
        })
        .collect();
    let to_send: Vec<usize> = (0..commands.len())
        .filter(|&i| matches!(decisions[i], Decision::Send { .. }))
        .collect();
    if to_send.is_empty() {
        // As git: a stateful connection gets the empty command list (a flush); nothing at
        // all goes over a stateless one.
        if !connection.stateless() {
            let mut writer = PacketWriter::new(connection.writer());
            writer.flush_pkt()?;
            connection.end_request()?;
        }
        if let Err(err) = connection.finish() {
            tracing::debug!(%err, "the remote ended after an empty push");
        }
        return Ok(PushReport { refs: results });
    }

    // The pack's objects, before anything is sent: an error here sends nothing.
    let wants: Vec<ObjectId> = to_send
        .iter()
        .map(|&i| commands[i].new)
        .filter(|id| !id.is_null())
        .collect();
    let pack = if wants.is_empty() {
        None
    } else {
        let mut haves: Vec<ObjectId> = remote
            .refs
            .iter()
            .map(|(_, id)| *id)
            .chain(remote.haves.iter().copied())
            .filter(|id| !id.is_null() && history.has(id))
            .collect();
        haves.sort();
        haves.dedup();
        Some(Pack::enumerate(
            db,
            wants,
            haves,
            options.thin && !remote.no_thin,
            options,
        )?)
    };

    // The request: commands, push options, pack.
    let use_atomic = options.atomic && remote.atomic;
    let use_push_options = !options.push_options.is_empty() && remote.push_options;
    let caps = remote.capabilities(options, use_atomic, use_push_options);
    let written = write_commands(
        connection.writer(),
        commands,
        &results,
        &to_send,
        &caps,
        use_push_options.then_some(options.push_options.as_slice()),
    );
    if let Err(err) = written {
        // The remote never saw a whole request: nothing can have moved.
        drop(connection);
        return Err(PushError::Io(err));
    }
    let mut lost: Option<String> = None;
    if let Some(pack) = &pack {
        if let Err(err) = pack.write(db, connection.writer(), remote.ofs_delta, options) {
            lost = Some(format!("could not send the pack: {err}"));
        }
    }
    if lost.is_none() {
        if let Err(err) = connection.end_request() {
            lost = Some(format!("could not send the push: {err}"));
        }
    }
    tracing::debug!(commands = to_send.len(), "push sent");

    // The answer. Read even after a failed write: the remote may have said why.
    let report = if remote.report_status > 0 {
        let (report, problem) = read_report(connection.reader(), remote.sideband, progress);
        if let Some(problem) = problem {
            lost.get_or_insert(problem);
        }
        Some(report)
    } else if remote.sideband {
        // No report, but the remote's messages still come in sideband.
        let (_, problem) = read_report(connection.reader(), true, progress);
        if let Some(problem) = problem {
            tracing::debug!(%problem, "after a push without report-status");
        }
        None
    } else {
        None
    };
    let finished = connection.finish();
    if let Err(err) = &finished {
        tracing::debug!(%err, "the remote's end of the push");
    }
    for &i in &to_send {
        let result = &mut results[i];
        let forced = matches!(result.status, RefStatus::Ok { forced: true });
        result.status = match &report {
            None => match (&lost, &finished) {
                (Some(problem), _) => RefStatus::Unknown(problem.clone()),
                (None, Err(err)) => RefStatus::Unknown(format!("the remote ended: {err}")),
                // As git: without report-status, a push that went through is taken as done.
                (None, Ok(())) => RefStatus::Ok { forced },
            },
            Some(report) => ref_status(report, result, forced, lost.as_deref()),
        };
    }
    Ok(PushReport { refs: results })
}

/// One sent command's status from the report.
fn ref_status(
    report: &Report,
    result: &mut RefResult,
    forced: bool,
    lost: Option<&str>,
) -> RefStatus {
    let lines: Vec<_> = report
        .refs
        .iter()
        .filter(|line| line.name.as_bstr() == result.name.as_bstr())
        .collect();
    // git keeps the last status a ref was given.
    match lines.last() {
        Some(line) => match &line.outcome {
            Err(reason) => RefStatus::Refused(reason.clone()),
            Ok(()) => {
                result.remote_reports = lines
                    .iter()
                    .filter(|l| l.outcome.is_ok())
                    .flat_map(|l| l.reports.iter().cloned())
                    .collect();
                let forced = forced || result.remote_reports.iter().any(|r| r.forced_update);
                RefStatus::Ok { forced }
            }
        },
        None if report.complete => RefStatus::Unknown("remote failed to report status".to_owned()),
        None => RefStatus::Unknown(
            lost.map(str::to_owned)
                .or_else(|| report.problems.first().cloned())
                .unwrap_or_else(|| "the remote hung up before its report".to_owned()),
        ),
    }
}

/// The commands (capabilities on the first), their flush, and the push options with theirs.
fn write_commands(
    out: &mut dyn Write,
    commands: &[PushCommand],
    results: &[RefResult],
    to_send: &[usize],
    caps: &str,
    push_options: Option<&[String]>,
) -> io::Result<()> {
    let mut writer = PacketWriter::new(out);
    for (n, &i) in to_send.iter().enumerate() {
        let command = &commands[i];
        let old = results[i]
            .old
            .unwrap_or_else(|| ObjectId::null(command.new.kind()));
        let mut line: Vec<u8> = format!("{old} {} ", command.new).into_bytes();
        line.extend_from_slice(command.name.as_bstr());
        if n == 0 {
            line.push(0);
            line.extend_from_slice(caps.trim_start().as_bytes());
        }
        writer.write_data(&line)?;
    }
    writer.flush_pkt()?;
    if let Some(push_options) = push_options {
        for option in push_options {
            writer.write_data(option.as_bytes())?;
        }
        writer.flush_pkt()?;
    }
    Ok(())
}

/// The objects of the pack, enumerated.
struct Pack {
    reader: packgate_pack::reader::CachingReader,
    enumeration: packgate_pack::enumerate::Enumeration,
    thin: bool,
}

impl Pack {
    fn enumerate(
        db: &gix_odb::Handle,
        wants: Vec<ObjectId>,
        haves: Vec<ObjectId>,
        thin: bool,
        options: &PushOptions,
    ) -> Result<Pack, PushError> {
        let reader = packgate_pack::reader::CachingReader::new(
            db.clone(),
            packgate_pack::reader::DEFAULT_CACHE_BYTES,
        );
        let never = AtomicBool::new(false);
        let interrupt = options.interrupt.as_deref().unwrap_or(&never);
        let enumeration = packgate_pack::enumerate::enumerate(
            &reader,
            &wants,
            &haves,
            &packgate_pack::enumerate::EnumerateOptions::default(),
            interrupt,
        )?;
        Ok(Pack {
            reader,
            enumeration,
            thin,
        })
    }

    /// Streams the pack into `out`.
    fn write(
        &self,
        db: &gix_odb::Handle,
        out: &mut dyn Write,
        ofs_delta: bool,
        options: &PushOptions,
    ) -> Result<packgate_pack::WriteOutcome, packgate_pack::generate::WriteError> {
        let never = AtomicBool::new(false);
        let interrupt = options.interrupt.as_deref().unwrap_or(&never);
        let commits = &self.enumeration.objects()[..self.enumeration.counts().commits];
        let write_options = packgate_pack::WriteOptions {
            client_has: self.thin.then(|| self.enumeration.known_to_client()),
            ofs_delta,
            delta_search: Some(packgate_pack::DeltaSearch::new(commits)),
            reader: Some(&self.reader),
            whole_pack: None,
        };
        let outcome = packgate_pack::write_pack(
            db,
            self.enumeration.objects(),
            &write_options,
            out,
            interrupt,
        )?;
        tracing::debug!(
            objects = outcome.objects,
            bytes = outcome.bytes,
            thin = self.thin,
            "pack sent"
        );
        Ok(outcome)
    }
}

/// Reads the remote's answer: the report (in band 1 with sideband), band 2 to `progress`.
/// Returns what was read and, if the answer was cut off or broken, why.
fn read_report(
    input: &mut dyn io::BufRead,
    sideband: bool,
    progress: &mut dyn Write,
) -> (Report, Option<String>) {
    let mut parser = ReportParser::new();
    let mut reader = PacketReader::new(input);
    let mut band1: Vec<u8> = Vec::new();
    let mut problem = None;
    loop {
        let packet = match reader.read_packet() {
            Ok(packet) => packet,
            Err(err) => {
                problem = Some(format!("the remote's answer broke off: {err}"));
                break;
            }
        };
        match packet {
            None => {
                problem = Some("the remote hung up before its report".to_owned());
                break;
            }
            Some(Packet::Flush) => {
                if !sideband {
                    parser.flush();
                }
                break;
            }
            Some(Packet::Data(data)) if !sideband => parser.line(data),
            Some(Packet::Data(data)) => match data.split_first() {
                Some((1, rest)) => {
                    if band1.len() + rest.len() > MAX_REPORT_BYTES {
                        problem = Some("the remote's report is too long".to_owned());
                        break;
                    }
                    band1.extend_from_slice(rest);
                }
                Some((2, rest)) => {
                    let _ = progress.write_all(rest).and_then(|()| progress.flush());
                }
                Some((3, rest)) => {
                    problem = Some(format!("remote error: {}", rest.to_str_lossy().trim_end()));
                    break;
                }
                _ => {
                    problem = Some("the remote's answer has an invalid sideband packet".to_owned());
                    break;
                }
            },
            Some(other) => {
                problem = Some(format!(
                    "unexpected {} in the remote's report",
                    other.kind_name()
                ));
                break;
            }
        }
    }
    if sideband {
        let mut inner = PacketReader::new(band1.as_slice());
        loop {
            match inner.read_packet() {
                Ok(Some(Packet::Data(line))) => parser.line(line),
                Ok(Some(Packet::Flush)) => {
                    parser.flush();
                    break;
                }
                Ok(_) | Err(_) => break,
            }
        }
    }
    let report = parser.finish();
    for problem in &report.problems {
        tracing::warn!(%problem, "the remote's report");
    }
    // A complete report is the answer, whatever happened to the connection after it.
    let problem = if report.complete { None } else { problem };
    (report, problem)
}

/// [`History`] over an object database.
struct Objects<'a>(&'a gix_odb::Handle);

impl History for Objects<'_> {
    fn has(&self, id: &ObjectId) -> bool {
        gix_object::Exists::exists(self.0, id)
    }

    fn commit_of(&self, id: &ObjectId) -> Option<ObjectId> {
        let mut current = *id;
        let mut buf = Vec::new();
        // Tags of tags, boundedly.
        for _ in 0..32 {
            let header = gix_object::FindHeader::try_header(self.0, &current).ok()??;
            match header.kind {
                gix_object::Kind::Commit => return Some(current),
                gix_object::Kind::Tag => {
                    let data = gix_object::Find::try_find(self.0, &current, &mut buf).ok()??;
                    current = packgate_object::tag_target(data.data)?;
                }
                _ => return None,
            }
        }
        None
    }

    fn is_ancestor(&self, ancestor: &ObjectId, descendant: &ObjectId) -> bool {
        match packgate_negotiate::reachable_from(self.0, &[*descendant], &[*ancestor]) {
            Ok(found) => found.contains(ancestor),
            Err(err) => {
                tracing::debug!(%err, "fast-forward check failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(lines: &[&[u8]], flush: bool) -> Vec<u8> {
        let mut writer = PacketWriter::new(Vec::new());
        for line in lines {
            writer.write_data(line).unwrap();
        }
        if flush {
            writer.flush_pkt().unwrap();
        }
        writer.into_inner()
    }

    /// A remote that said `advertisement` and records what it was sent.
    struct Memory {
        answer: io::Cursor<Vec<u8>>,
        sent: Vec<u8>,
    }

    impl Connection for Memory {
        fn stateless(&self) -> bool {
            false
        }
        fn reader(&mut self) -> &mut dyn io::BufRead {
            &mut self.answer
        }
        fn writer(&mut self) -> &mut dyn Write {
            &mut self.sent
        }
        fn end_request(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn finish(self: Box<Self>) -> io::Result<()> {
            // At most the empty command list.
            assert!(
                self.sent.is_empty() || self.sent == b"0000",
                "{:?}",
                self.sent
            );
            Ok(())
        }
    }

    fn push_to(advertisement: &[&[u8]], options: &PushOptions) -> Result<PushReport, PushError> {
        let answer = io::Cursor::new(framed(advertisement, true));
        let connection = Box::new(Memory {
            answer,
            sent: Vec::new(),
        });
        let dir = tempfile::tempdir().unwrap();
        let db = gix_odb::at(dir.path(), gix_hash::Kind::Sha1).unwrap();
        push(connection, &db, &[], options, &mut Vec::new())
    }

    #[test]
    fn refusals_before_anything_is_sent() {
        let v2 = push_to(
            &[b"version 2\n", b"agent=git/2.47\n"],
            &PushOptions::default(),
        );
        assert!(matches!(v2, Err(PushError::ProtocolV2)), "{v2:?}");
        let zero = "0".repeat(40);
        let empty = format!("{zero} capabilities^{{}}\0report-status delete-refs\n");
        let atomic = PushOptions {
            atomic: true,
            ..PushOptions::default()
        };
        let err = push_to(&[empty.as_bytes()], &atomic).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the receiving end does not support --atomic push"
        );
        let options = PushOptions {
            push_options: vec!["x".into()],
            ..PushOptions::default()
        };
        let err = push_to(&[empty.as_bytes()], &options).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the receiving end does not support push options"
        );
        let sha256 = format!("{zero} capabilities^{{}}\0report-status object-format=sha256\n");
        let err = push_to(&[sha256.as_bytes()], &PushOptions::default()).unwrap_err();
        assert!(err.to_string().contains("hash algorithm"), "{err}");
        // Nothing to do: the empty command list, nothing else.
        let report = push_to(&[empty.as_bytes()], &PushOptions::default()).unwrap();
        assert!(report.refs.is_empty());
    }

    #[test]
    fn sideband_report_with_progress() {
        let inner = framed(&[b"unpack ok\n", b"ok refs/heads/main\n"], true);
        let mut band1 = vec![1u8];
        band1.extend_from_slice(&inner);
        let outer = framed(&[b"\x02hook says hi\n", &band1, b"\x02after\n"], true);
        let mut progress = Vec::new();
        let (report, problem) = read_report(&mut outer.as_slice(), true, &mut progress);
        assert!(report.complete && problem.is_none());
        assert_eq!(report.refs.len(), 1);
        assert_eq!(progress, b"hook says hi\nafter\n");
    }

    #[test]
    fn a_cut_off_answer_is_a_problem() {
        let outer = framed(&[b"\x02Resolving deltas\r"], false);
        let (report, problem) = read_report(&mut outer.as_slice(), true, &mut Vec::new());
        assert!(!report.complete);
        assert!(problem.unwrap().contains("hung up"));
        let plain = framed(&[b"unpack ok\n"], false);
        let (report, problem) = read_report(&mut plain.as_slice(), false, &mut Vec::new());
        assert!(!report.complete && problem.is_some());
        let error = framed(&[b"\x03fatal: out of memory\n"], false);
        let (_, problem) = read_report(&mut error.as_slice(), true, &mut Vec::new());
        assert_eq!(problem.unwrap(), "remote error: fatal: out of memory");
    }

    #[test]
    fn statuses_from_a_report() {
        let name: gix_ref::FullName = "refs/heads/main".try_into().unwrap();
        let mut result = RefResult {
            name,
            status: RefStatus::Ok { forced: false },
            old: None,
            remote_reports: Vec::new(),
        };
        let mut parser = ReportParser::new();
        parser.line(b"unpack ok");
        parser.line(b"ng refs/heads/main hook declined");
        parser.flush();
        let report = parser.finish();
        assert_eq!(
            ref_status(&report, &mut result, false, None),
            RefStatus::Refused("hook declined".to_owned())
        );
        let mut parser = ReportParser::new();
        parser.line(b"unpack ok");
        let cut = parser.finish();
        assert!(matches!(
            ref_status(&cut, &mut result, false, Some("gone")),
            RefStatus::Unknown(m) if m == "gone"
        ));
        let mut parser = ReportParser::new();
        parser.line(b"unpack ok");
        parser.flush();
        assert!(matches!(
            ref_status(&parser.finish(), &mut result, false, None),
            RefStatus::Unknown(m) if m == "remote failed to report status"
        ));
    }
}
