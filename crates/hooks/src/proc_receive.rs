//! The `proc-receive` hook: how a push hands some of its commands to a program that carries
//! them out itself (the "AGit" flow of code-review servers: a push to `refs/for/main/topic`
//! becomes a review ref such as `refs/changes/12/34/1`), and what that program reports back.
//!
//! receive-pack decides which commands go to the hook (`receive.procReceiveRefs`); this
//! module has the types a hook answers with ([`ProcReceive`], [`CommandResult`],
//! [`RefReport`]) and git's pkt-line protocol between receive-pack and a `proc-receive`
//! script, as git's `githooks(5)` describes it:
//!
//! 1. receive-pack sends `version=1\0<capabilities>` (`atomic`, `push-options`, as the push
//!    uses them) and a flush; the hook answers `version=1[\0push-options]` and a flush;
//! 2. receive-pack sends one `<old> <new> <ref>` line per command, a flush, and, if the hook
//!    asked for them, the push options and a flush;
//! 3. the hook answers `ok <ref>` or `ng <ref> [<reason>]` per command, each `ok` followed
//!    by any `option refname <ref>`, `option old-oid <oid>`, `option new-oid <oid>`,
//!    `option forced-update` or `option fall-through` lines, then a flush.
//!
//! [`interpret_report`] judges step 3 as git's `read_proc_receive_report()` does, with its
//! error messages.
//!
//! # An in-process hook
//!
//! ```
//! use packgate_hooks::{
//!     CommandResult, Hook, HookContext, ProcReceive, ProcReceiveRequest, RefReport,
//! };
//!
//! /// Turns each push to `refs/for/<branch>/<topic>` into review `refs/changes/<n>`.
//! struct Reviews;
//!
//! impl Hook for Reviews {
//!     fn proc_receive(
//!         &self,
//!         _ctx: &HookContext<'_>,
//!         request: &ProcReceiveRequest<'_>,
//!         _output: &mut dyn std::io::Write,
//!     ) -> ProcReceive {
//!         let results = request
//!             .commands
//!             .iter()
//!             .enumerate()
//!             .map(|(n, command)| {
//!                 // Here the application records the review and creates its ref.
//!                 CommandResult::Ok(vec![RefReport {
//!                     refname: Some(format!("refs/changes/{n}").into()),
//!                     new: Some(command.new),
//!                     ..RefReport::default()
//!                 }])
//!             })
//!             .collect();
//!         ProcReceive::reported(results)
//!     }
//! }
//! ```

use std::io::{Read, Write};

use bstr::{BStr, BString, ByteSlice};
use gix_hash::ObjectId;
use packgate_wire::pkt_line::{self, Packet, PacketReader};

use crate::RefUpdate;

/// What receive-pack asks of a `proc-receive` hook.
#[derive(Debug, Clone, Copy)]
pub struct ProcReceiveRequest<'a> {
    /// The commands for the hook, in the client's order.
    pub commands: &'a [RefUpdate],
    /// The names of the push's other commands, which receive-pack carries out itself: a
    /// hook that reports on one of them is wrong ("unexpected ref").
    pub other_refs: &'a [BString],
    /// Whether the push is atomic (`git push --atomic`).
    pub atomic: bool,
}

/// What became of one ref a `proc-receive` hook updated, where that differs from the
/// command: the `option` lines after an `ok`. A field left `None` means the command's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefReport {
    /// The ref actually updated (`option refname`), e.g. `refs/changes/12/34/1`.
    pub refname: Option<BString>,
    /// Its value before (`option old-oid`).
    pub old: Option<ObjectId>,
    /// Its value after (`option new-oid`).
    pub new: Option<ObjectId>,
    /// Whether the update was not a fast-forward (`option forced-update`).
    pub forced_update: bool,
}

/// A `proc-receive` hook's answer for one of its commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandResult {
    /// The hook said nothing about it: the command fails ("proc-receive failed to report
    /// status").
    Unreported,
    /// `ok`: the hook carried it out; receive-pack leaves the ref alone. Each report (one per
    /// `ok` line with options) is a ref the hook updated; none means the command's own ref.
    Ok(Vec<RefReport>),
    /// `ng`: the hook refused it, for this reason.
    Rejected(String),
    /// `option fall-through`: receive-pack carries it out as an ordinary command (with any
    /// reports made before the fall-through).
    FallThrough(Vec<RefReport>),
}

/// A `proc-receive` hook's answer for a whole push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcReceive {
    /// This hook does not handle `proc-receive` (the default of [`crate::Hook`]; a script
    /// hook without a `proc-receive` script). The next hook of a chain is asked; if none
    /// handles it, every command for it fails ("fail to run proc-receive hook").
    Declined,
    /// The hook could not run, or broke off before it reported: every command for it fails
    /// ("fail to run proc-receive hook"), and with an atomic push every other one too.
    Failed,
    /// The hook reported.
    Reported {
        /// One result per command of [`ProcReceiveRequest::commands`], in that order.
        results: Vec<CommandResult>,
        /// Whether the hook failed as well (git's non-zero status of the hook: a malformed
        /// report, an unsuccessful exit). With an atomic push, the commands it did not
        /// accept then fail ("fail to run proc-receive hook"), and so do all others.
        failed: bool,
    },
}

impl ProcReceive {
    /// A report of `results`, one per command, in order.
    pub fn reported(results: Vec<CommandResult>) -> Self {
        ProcReceive::Reported {
            results,
            failed: false,
        }
    }
}

/// The first packet of the conversation: `version=1`, with the push's capabilities after a
/// NUL.
pub fn version_request(atomic: bool, push_options: bool) -> Vec<u8> {
    let mut capabilities = Vec::new();
    if atomic {
        capabilities.push("atomic");
    }
    if push_options {
        capabilities.push("push-options");
    }
    let mut line = b"version=1".to_vec();
    if !capabilities.is_empty() {
        line.push(0);
        line.extend_from_slice(capabilities.join(" ").as_bytes());
    }
    line.push(b'\n');
    let mut out = Vec::new();
    // One short line: cannot be too long.
    let _ = pkt_line::encode_data(&line, &mut out);
    pkt_line::encode_flush(&mut out);
    out
}

/// What the hook answered to the version request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The version it speaks (0 when it sent no `version=` line, as git counts it).
    pub version: i64,
    /// Whether it wants the push options.
    pub push_options: bool,
}

/// Read the hook's version lines up to their flush. `None` if the hook's output ended (or
/// broke) first: git's "fail to negotiate version with proc-receive hook".
pub fn read_version<R: Read>(reader: &mut PacketReader<R>) -> Option<Negotiated> {
    let mut negotiated = Negotiated {
        version: 0,
        push_options: false,
    };
    loop {
        match reader.read_packet() {
            Ok(Some(Packet::Data(line))) => {
                let line = chomp(line);
                // git reads the number only from a line longer than `version=`.
                if line.len() > 8 {
                    if let Some(rest) = line.strip_prefix(b"version=") {
                        let (number, features) = match rest.find_byte(0) {
                            Some(nul) => (&rest[..nul], Some(&rest[nul + 1..])),
                            None => (rest, None),
                        };
                        negotiated.version = atoi(number);
                        if let Some(features) = features {
                            negotiated.push_options = features
                                .split(|byte| *byte == b' ')
                                .any(|feature| feature == b"push-options");
                        }
                    }
                }
            }
            Ok(Some(_)) => return Some(negotiated),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// The commands as pkt-lines, then a flush.
pub fn commands_packet(commands: &[RefUpdate]) -> Vec<u8> {
    let mut out = Vec::new();
    for command in commands {
        let line = format!("{} {} {}", command.old, command.new, command.name);
        let _ = pkt_line::encode_data(&line.as_bytes()[..line.len().min(MAX_LINE)], &mut out);
    }
    pkt_line::encode_flush(&mut out);
    out
}

/// The push options as pkt-lines, then a flush.
pub fn push_options_packet(options: &[BString]) -> Vec<u8> {
    let mut out = Vec::new();
    for option in options {
        let _ = pkt_line::encode_data(&option[..option.len().min(MAX_LINE)], &mut out);
    }
    pkt_line::encode_flush(&mut out);
    out
}

const MAX_LINE: usize = pkt_line::MAX_DATA_LENGTH;

/// The hook's report lines (without their newlines), read up to the flush or the end of its
/// output. `None` if the output ended (or broke) before any line: git's "proc-receive exited
/// abnormally".
pub fn read_report<R: Read>(reader: &mut PacketReader<R>) -> Option<Vec<BString>> {
    let mut lines = Vec::new();
    loop {
        match reader.read_packet() {
            Ok(Some(Packet::Data(line))) => {
                if lines.len() >= MAX_REPORT_LINES {
                    tracing::warn!(
                        limit = MAX_REPORT_LINES,
                        "proc-receive hook reported too many lines; the rest is ignored"
                    );
                    return Some(lines);
                }
                lines.push(chomp(line).into());
            }
            Ok(Some(_)) => return Some(lines),
            Ok(None) | Err(_) if lines.is_empty() => return None,
            Ok(None) | Err(_) => return Some(lines),
        }
    }
}

/// The most report lines read from a hook: a few per command of the largest push.
const MAX_REPORT_LINES: usize = 1_000_000;

/// How a conversation with a `proc-receive` script went, up to its report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversation {
    /// The version exchange failed.
    NegotiationFailed,
    /// The hook speaks another version.
    UnsupportedVersion(i64),
    /// Writing the commands failed.
    CommandsNotWritten,
    /// Writing the push options failed.
    PushOptionsNotWritten,
    /// The hook's output ended before it reported anything.
    ExitedAbnormally,
    /// The hook's report lines.
    Report(Vec<BString>),
}

impl Conversation {
    /// git's message for a conversation that failed before the report.
    pub fn error(&self) -> Option<String> {
        Some(match self {
            Conversation::NegotiationFailed => {
                "fail to negotiate version with proc-receive hook".into()
            }
            Conversation::UnsupportedVersion(version) => {
                format!("proc-receive version '{version}' is not supported")
            }
            Conversation::CommandsNotWritten => {
                "fail to write commands to proc-receive hook".into()
            }
            Conversation::PushOptionsNotWritten => {
                "fail to write push-options to proc-receive hook".into()
            }
            Conversation::ExitedAbnormally => "proc-receive exited abnormally".into(),
            Conversation::Report(_) => return None,
        })
    }
}

/// Talk with a `proc-receive` hook whose standard input is `to_hook` and whose standard
/// output is `from_hook`, up to its report.
pub fn converse<W: Write, R: Read>(
    mut to_hook: W,
    from_hook: R,
    commands: &[RefUpdate],
    push_options: Option<&[BString]>,
    atomic: bool,
) -> Conversation {
    let mut reader = PacketReader::new(from_hook);
    let request = version_request(atomic, push_options.is_some());
    if to_hook
        .write_all(&request)
        .and_then(|()| to_hook.flush())
        .is_err()
    {
        return Conversation::NegotiationFailed;
    }
    let Some(negotiated) = read_version(&mut reader) else {
        return Conversation::NegotiationFailed;
    };
    if !matches!(negotiated.version, 0 | 1) {
        return Conversation::UnsupportedVersion(negotiated.version);
    }
    if to_hook
        .write_all(&commands_packet(commands))
        .and_then(|()| to_hook.flush())
        .is_err()
    {
        return Conversation::CommandsNotWritten;
    }
    if negotiated.push_options {
        let options = push_options.unwrap_or_default();
        if to_hook
            .write_all(&push_options_packet(options))
            .and_then(|()| to_hook.flush())
            .is_err()
        {
            return Conversation::PushOptionsNotWritten;
        }
    }
    match read_report(&mut reader) {
        Some(lines) => Conversation::Report(lines),
        None => Conversation::ExitedAbnormally,
    }
}

/// A report judged against the commands it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreted {
    /// One result per command, in order.
    pub results: Vec<CommandResult>,
    /// git's error messages, one per line (empty if none).
    pub errors: Vec<String>,
    /// Whether git would count the hook as failed: any error, `ng`, or unreported command.
    pub failed: bool,
}

/// Judge a hook's report lines as git's `read_proc_receive_report()` does: which command each
/// status line names (searching on from the last one named, then from the start), the
/// `option` lines that follow an `ok`, and git's complaints about the rest.
pub fn interpret_report(
    commands: &[RefUpdate],
    other_refs: &[BString],
    lines: &[BString],
) -> Interpreted {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum State {
        Scheduled,
        Returned,
        FallThrough,
    }
    let mut state = vec![State::Scheduled; commands.len()];
    let mut rejected: Vec<Option<String>> = vec![None; commands.len()];
    let mut reports: Vec<Vec<RefReport>> = vec![Vec::new(); commands.len()];
    let mut errors = Vec::new();
    let mut failed = false;
    // The command the last status line named (git's `hint`), and whether option lines may
    // follow: `Some(true)` right after `ok` (a new report starts with the first option),
    // `Some(false)` once that report exists.
    let mut hint: Option<usize> = None;
    let mut reporting: Option<bool> = None;
    let mut complained_about_option = false;
    // A status on another command of the push: option lines after it are errors.
    let mut hint_is_other = false;
    for line in lines {
        let Some((head, rest)) = line.split_once_str(" ") else {
            errors.push(format!(
                "proc-receive reported incomplete status line: '{}'",
                line.as_bstr()
            ));
            failed = true;
            continue;
        };
        if head == b"option" {
            let target = hint.filter(|_| !hint_is_other && reporting.is_some());
            let Some(index) = target else {
                if !complained_about_option {
                    complained_about_option = true;
                    errors.push(
                        "proc-receive reported 'option' without a matching 'ok/ng' directive"
                            .into(),
                    );
                }
                failed = true;
                continue;
            };
            if reporting == Some(true) {
                reports[index].push(RefReport::default());
                reporting = Some(false);
            }
            let (key, value) = match rest.split_once_str(" ") {
                Some((key, value)) => (key, Some(value)),
                None => (rest, None),
            };
            let Some(report) = reports[index].last_mut() else {
                continue;
            };
            match key {
                b"refname" => report.refname = value.map(BString::from),
                b"old-oid" => {
                    if let Some(id) = value.and_then(leading_oid) {
                        report.old = Some(id);
                    }
                }
                b"new-oid" => {
                    if let Some(id) = value.and_then(leading_oid) {
                        report.new = Some(id);
                    }
                }
                b"forced-update" => report.forced_update = true,
                b"fall-through" => state[index] = State::FallThrough,
                _ => {}
            }
            continue;
        }
        reporting = None;
        let (refname, message) = match rest.split_once_str(" ") {
            Some((refname, message)) => (refname, Some(message)),
            None => (rest, None),
        };
        let refname = refname.as_bstr();
        if head != b"ok" && head != b"ng" {
            errors.push(format!(
                "proc-receive reported bad status '{}' on ref '{refname}'",
                head.as_bstr()
            ));
            failed = true;
            continue;
        }
        let found = hint
            .filter(|_| !hint_is_other)
            .and_then(|from| find(commands, refname, from))
            .or_else(|| find(commands, refname, 0));
        let Some(index) = found else {
            if other_refs.iter().any(|other| other == refname) {
                errors.push(format!(
                    "proc-receive reported status on unexpected ref: {refname}"
                ));
                hint_is_other = true;
                hint = Some(0);
            } else {
                errors.push(format!(
                    "proc-receive reported status on unknown ref: {refname}"
                ));
                hint = None;
            }
            failed = true;
            continue;
        };
        hint = Some(index);
        hint_is_other = false;
        if state[index] == State::FallThrough {
            errors.push(format!(
                "proc-receive reported status on unexpected ref: {refname}"
            ));
            failed = true;
            continue;
        }
        state[index] = State::Returned;
        if head == b"ng" {
            rejected[index] = Some(message.map_or_else(
                || "failed".to_owned(),
                |message| message.to_str_lossy().into_owned(),
            ));
            failed = true;
            continue;
        }
        reporting = Some(true);
    }
    let results = state
        .into_iter()
        .zip(rejected)
        .zip(reports)
        .map(|((state, rejected), reports)| match (state, rejected) {
            (State::FallThrough, _) => CommandResult::FallThrough(reports),
            (State::Scheduled, _) => {
                failed = true;
                CommandResult::Unreported
            }
            (State::Returned, Some(reason)) => CommandResult::Rejected(reason),
            (State::Returned, None) => CommandResult::Ok(reports),
        })
        .collect();
    Interpreted {
        results,
        errors,
        failed,
    }
}

/// The first command from `from` on named `refname`.
fn find(commands: &[RefUpdate], refname: &BStr, from: usize) -> Option<usize> {
    commands
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, command)| command.name == refname)
        .map(|(index, _)| index)
}

/// An object id at the start of `value`, as git's `parse_oid_hex()` (what follows is
/// ignored).
fn leading_oid(value: &[u8]) -> Option<ObjectId> {
    let hex = value.get(..40)?;
    ObjectId::from_hex(hex).ok()
}

/// git's `atoi()`: optional blanks and sign, then digits; 0 if there are none.
fn atoi(text: &[u8]) -> i64 {
    let text = text.trim_start();
    let (negative, digits) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let mut value: i64 = 0;
    for digit in digits.iter().take_while(|byte| byte.is_ascii_digit()) {
        value = value
            .saturating_mul(10)
            .saturating_add(i64::from(digit - b'0'));
    }
    if negative {
        -value
    } else {
        value
    }
}

/// A line without its trailing newline (git's `PACKET_READ_CHOMP_NEWLINE`).
fn chomp(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    fn id(hex: &str) -> ObjectId {
        ObjectId::from_hex(hex.as_bytes()).unwrap()
    }

    fn commands(names: &[&str]) -> Vec<RefUpdate> {
        names
            .iter()
            .map(|name| RefUpdate::new(id(Z), id(A), *name))
            .collect()
    }

    fn check(
        names: &[&str],
        others: &[&str],
        lines: &[&str],
        results: Vec<CommandResult>,
        errors: &[&str],
    ) {
        let others: Vec<BString> = others.iter().map(|name| (*name).into()).collect();
        let lines: Vec<BString> = lines.iter().map(|line| (*line).into()).collect();
        let interpreted = interpret_report(&commands(names), &others, &lines);
        assert_eq!(interpreted.results, results, "lines: {lines:?}");
        assert_eq!(interpreted.errors, errors, "lines: {lines:?}");
        let failed = !errors.is_empty()
            || interpreted.results.iter().any(|result| {
                matches!(
                    result,
                    CommandResult::Unreported | CommandResult::Rejected(_)
                )
            });
        assert_eq!(interpreted.failed, failed, "lines: {lines:?}");
    }

    fn report(refname: Option<&str>, old: Option<&str>, new: Option<&str>) -> RefReport {
        RefReport {
            refname: refname.map(BString::from),
            old: old.map(id),
            new: new.map(id),
            forced_update: false,
        }
    }

    #[test]
    fn version_request_names_the_push_capabilities() {
        assert_eq!(
            version_request(false, false).as_bstr(),
            "000eversion=1\n0000"
        );
        assert_eq!(
            version_request(true, true).as_bstr(),
            "0022version=1\0atomic push-options\n0000"
        );
        assert_eq!(
            version_request(false, true).as_bstr(),
            "001bversion=1\0push-options\n0000"
        );
    }

    #[test]
    fn version_answers() {
        let read = |bytes: &[u8]| read_version(&mut PacketReader::new(bytes));
        let negotiated = |version, push_options| {
            Some(Negotiated {
                version,
                push_options,
            })
        };
        assert_eq!(read(b"000eversion=1\n0000"), negotiated(1, false));
        assert_eq!(
            read(b"001bversion=1\0push-options\n0000"),
            negotiated(1, true)
        );
        assert_eq!(read(b"000eversion=2\n0000"), negotiated(2, false));
        // No version line: version 0, as git counts it.
        assert_eq!(read(b"0000"), negotiated(0, false));
        assert_eq!(read(b"000dversion=\n0000"), negotiated(0, false));
        assert_eq!(read(b""), None);
        assert_eq!(read(b"000eversion=1\n"), None);
        assert_eq!(read(b"00"), None);
    }

    #[test]
    fn commands_and_options_out() {
        let out = commands_packet(&commands(&["refs/for/main/topic"]));
        assert_eq!(
            out.as_bstr(),
            format!("0069{Z} {A} refs/for/main/topic0000").as_str()
        );
        let options = push_options_packet(&["issue=123".into(), "reviewer=user1".into()]);
        assert_eq!(options.as_bstr(), "000dissue=1230012reviewer=user10000");
    }

    #[test]
    fn a_whole_conversation() {
        let hook_says = "001bversion=1\0push-options\n0000\
             001bok refs/for/main/topic\n\
             0026option refname refs/changes/1/1/1\n0000";
        let mut sent = Vec::new();
        let conversation = converse(
            &mut sent,
            hook_says.as_bytes(),
            &commands(&["refs/for/main/topic"]),
            Some(&["issue=1".into()]),
            true,
        );
        assert_eq!(
            conversation,
            Conversation::Report(vec![
                "ok refs/for/main/topic".into(),
                "option refname refs/changes/1/1/1".into()
            ])
        );
        assert_eq!(
            sent.as_bstr(),
            format!(
                "0022version=1\0atomic push-options\n0000\
                 0069{Z} {A} refs/for/main/topic0000\
                 000bissue=10000"
            )
            .as_str()
        );
        // Without the push options: none sent, even though the hook asks.
        let mut sent = Vec::new();
        converse(
            &mut sent,
            hook_says.as_bytes(),
            &commands(&["refs/for/main/topic"]),
            None,
            false,
        );
        assert!(sent.starts_with(b"000eversion=1\n0000"));
        assert!(!sent.ends_with(b"000bissue=10000"));
    }

    #[test]
    fn conversations_that_fail() {
        let run = |hook_says: &str| {
            converse(
                Vec::new(),
                hook_says.as_bytes(),
                &commands(&["refs/for/x"]),
                None,
                false,
            )
        };
        assert_eq!(run(""), Conversation::NegotiationFailed);
        assert_eq!(
            run("000eversion=2\n0000"),
            Conversation::UnsupportedVersion(2)
        );
        assert_eq!(run("000eversion=1\n0000"), Conversation::ExitedAbnormally);
        assert_eq!(
            run("000eversion=1\n00000000"),
            Conversation::Report(Vec::new())
        );
        assert_eq!(
            Conversation::UnsupportedVersion(2).error().unwrap(),
            "proc-receive version '2' is not supported"
        );
        // A hook that stopped reading.
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert_eq!(
            converse(Closed, &b""[..], &[], None, false),
            Conversation::NegotiationFailed
        );
    }

    #[test]
    fn reports() {
        use CommandResult::*;
        let topic = "refs/for/main/topic";
        check(
            &[topic],
            &[],
            &[&format!("ok {topic}")],
            vec![Ok(vec![])],
            &[],
        );
        check(
            &[topic],
            &[],
            &[
                &format!("ok {topic}"),
                "option refname refs/changes/1",
                &format!("option old-oid {B}"),
                &format!("option new-oid {A}"),
                "option forced-update",
                &format!("ok {topic}"),
                "option refname refs/changes/2",
            ],
            vec![Ok(vec![
                RefReport {
                    forced_update: true,
                    ..report(Some("refs/changes/1"), Some(B), Some(A))
                },
                report(Some("refs/changes/2"), None, None),
            ])],
            &[],
        );
        check(
            &[topic, "refs/for/next/topic"],
            &[],
            &[
                "ng refs/for/next/topic target branch not exist",
                &format!("ng {topic}"),
            ],
            vec![
                Rejected("failed".into()),
                Rejected("target branch not exist".into()),
            ],
            &[],
        );
        check(
            &[topic, "refs/for/x"],
            &[],
            &[&format!("ok {topic}"), "option fall-through"],
            vec![FallThrough(vec![RefReport::default()]), Unreported],
            &[],
        );
        // A trailing space after the name of an `ok` is nothing.
        check(
            &[topic],
            &[],
            &[&format!("ok {topic} ")],
            vec![Ok(vec![])],
            &[],
        );
    }

    #[test]
    fn bad_reports() {
        use CommandResult::*;
        let topic = "refs/for/main/topic";
        check(
            &[topic],
            &[],
            &["ok"],
            vec![Unreported],
            &["proc-receive reported incomplete status line: 'ok'"],
        );
        check(
            &[topic],
            &[],
            &[&format!("xx {topic}")],
            vec![Unreported],
            &["proc-receive reported bad status 'xx' on ref 'refs/for/main/topic'"],
        );
        check(
            &[topic],
            &[],
            &["option refname refs/pull/123/head", "option old-oid x"],
            vec![Unreported],
            &["proc-receive reported 'option' without a matching 'ok/ng' directive"],
        );
        check(
            &["refs/for/a/b/c/my/topic"],
            &[],
            &[&format!("ok {topic}")],
            vec![Unreported],
            &["proc-receive reported status on unknown ref: refs/for/main/topic"],
        );
        check(
            &[topic],
            &["refs/heads/main"],
            &["ok refs/heads/main", "option refname refs/x"],
            vec![Unreported],
            &[
                "proc-receive reported status on unexpected ref: refs/heads/main",
                "proc-receive reported 'option' without a matching 'ok/ng' directive",
            ],
        );
        check(
            &[topic],
            &[],
            &[&format!("ng {topic} no"), "option refname refs/x"],
            vec![Rejected("no".into())],
            &["proc-receive reported 'option' without a matching 'ok/ng' directive"],
        );
    }

    #[test]
    fn atoi_as_git() {
        assert_eq!(atoi(b"1"), 1);
        assert_eq!(atoi(b" 12x"), 12);
        assert_eq!(atoi(b"-3"), -3);
        assert_eq!(atoi(b"x"), 0);
        assert_eq!(atoi(b""), 0);
    }
}
