//! The `ls-refs` command.

use std::io::Write;

use bstr::{BString, ByteSlice};
use packgate_wire::pkt_line::PacketWriter;

use super::{reject, Flow, ServeError, UploadPack};
use crate::config::UnbornPolicy;
use crate::refname::RefPrefix;
use crate::refs_watch::{RefsToken, VisibleRef};
use crate::repository::{Head, Peeled, RefView, RefsError};

/// With this many prefixes or more, git lists everything instead; so do we.
const MAX_PREFIXES: usize = 65536;

/// How the lines of a listing are written (`ls-refs`, and `wait-refs`'s "changed" answer).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Format {
    pub(super) symrefs: bool,
    pub(super) peel: bool,
    pub(super) unborn: bool,
}

/// The arguments of one `ls-refs` request.
#[derive(Debug, Default, PartialEq, Eq)]
struct Arguments {
    format: Format,
    /// Validated here, before anything reads the file system.
    prefixes: Vec<RefPrefix>,
    /// `refs-token`: begin the response with the listing's token.
    refs_token: bool,
    /// `if-none-match <token>`: answer `unchanged` alone if the listing has this token.
    if_none_match: Option<RefsToken>,
}

/// Parse the arguments; `refs_watch`: whether `refs-token` and `if-none-match` are served.
fn parse(arguments: &[BString], refs_watch: bool) -> Result<Arguments, String> {
    let mut parsed = Arguments::default();
    for argument in arguments {
        match argument.as_slice() {
            b"symrefs" => parsed.format.symrefs = true,
            b"peel" => parsed.format.peel = true,
            b"unborn" => parsed.format.unborn = true,
            b"refs-token" if refs_watch => parsed.refs_token = true,
            other => {
                if let Some(prefix) = other.strip_prefix(b"ref-prefix ") {
                    parsed.prefixes.push(RefPrefix::new(prefix));
                } else if let Some(token) =
                    other.strip_prefix(b"if-none-match ").filter(|_| refs_watch)
                {
                    parsed.if_none_match =
                        Some(RefsToken::parse(token).map_err(|err| err.to_string())?);
                } else {
                    return Err(format!("unexpected line: '{}'", argument.as_bstr()));
                }
            }
        }
    }
    if parsed.prefixes.len() >= MAX_PREFIXES {
        parsed.prefixes.clear();
    }
    Ok(parsed)
}

pub(super) fn handle<W: Write>(
    upload_pack: &UploadPack<'_>,
    arguments: &[BString],
    out: &mut PacketWriter<W>,
) -> Result<Flow, ServeError> {
    let mut arguments = match parse(arguments, upload_pack.config.refs_watch) {
        Ok(arguments) => arguments,
        Err(message) => return Err(reject(out, message)),
    };
    // `lsrefs.unborn=ignore`: git accepts the argument and acts as if it was not sent.
    arguments.format.unborn &= upload_pack.config.lsrefs_unborn != UnbornPolicy::Ignore;
    if arguments.refs_token || arguments.if_none_match.is_some() {
        return with_token(upload_pack, &arguments, out);
    }
    let arguments = Arguments {
        format: arguments.format,
        prefixes: arguments.prefixes,
        ..Arguments::default()
    };
    let repo = upload_pack.repo;
    let prefixes = (!arguments.prefixes.is_empty()).then_some(arguments.prefixes.as_slice());
    let matches =
        |name: &[u8]| prefixes.is_none_or(|prefixes| prefixes.iter().any(|p| p.matches(name)));
    let failed = |out: &mut PacketWriter<W>, err: &dyn std::error::Error| {
        reject(out, format!("ls-refs: {err}"))
    };

    let mut line = Vec::with_capacity(128);
    if matches(b"HEAD") && !upload_pack.config.is_hidden(b"HEAD", repo.namespace()) {
        match repo.head() {
            Ok(Head::Born(head)) => {
                if let Err(err) = format_ref(upload_pack, head.view(), arguments.format, &mut line)
                {
                    return Err(failed(out, &err));
                }
                out.write_data(&line)?;
            }
            Ok(Head::Unborn { target }) if arguments.format.unborn => {
                format_unborn(&target, arguments.format, &mut line);
                out.write_data(&line)?;
            }
            Ok(_) => {}
            Err(err) => return Err(failed(out, &err)),
        }
    }
    let listed = repo.visit_refs(prefixes, |record| {
        if upload_pack.config.is_hidden(record.name, repo.namespace()) {
            return Ok(());
        }
        format_ref(upload_pack, record, arguments.format, &mut line)?;
        out.write_data(&line).map_err(Listing::Write)
    });
    match listed {
        Ok(()) => {}
        Err(Listing::Refs(err)) => return Err(failed(out, &err)),
        Err(Listing::Write(err)) => return Err(err.into()),
    }
    out.flush_pkt()?;
    Ok(Flow::Continue)
}

/// `ls-refs` with `refs-token` or `if-none-match`: the listing is read once, whole, so that
/// the token sent is the token of exactly the lines sent.
fn with_token<W: Write>(
    upload_pack: &UploadPack<'_>,
    arguments: &Arguments,
    out: &mut PacketWriter<W>,
) -> Result<Flow, ServeError> {
    // The token alone first: while the ref storage is unchanged it is remembered, and an
    // unchanged answer reads no ref.
    if let Some(known) = &arguments.if_none_match {
        match crate::refs_watch::refs_token(
            upload_pack.repo,
            &upload_pack.config,
            &arguments.prefixes,
        ) {
            Ok(token) if &token == known => {
                out.write_text(format!("unchanged {token}"))?;
                out.flush_pkt()?;
                return Ok(Flow::Continue);
            }
            Ok(_) => {}
            Err(err) => return Err(reject(out, format!("ls-refs: {err}"))),
        }
    }
    let state = match crate::refs_watch::refs_state(
        upload_pack.repo,
        &upload_pack.config,
        &arguments.prefixes,
    ) {
        Ok(state) => state,
        Err(err) => return Err(reject(out, format!("ls-refs: {err}"))),
    };
    if arguments.if_none_match.as_ref() == Some(&state.token) {
        out.write_text(format!("unchanged {}", state.token))?;
        out.flush_pkt()?;
        return Ok(Flow::Continue);
    }
    out.write_text(format!("refs-token {}", state.token))?;
    if let Err(err) = write_listing(upload_pack, &state.refs, arguments.format, out) {
        return Err(match err {
            Listing::Refs(err) => reject(out, format!("ls-refs: {err}")),
            Listing::Write(err) => err.into(),
        });
    }
    out.flush_pkt()?;
    Ok(Flow::Continue)
}

/// The lines of a listing read before (by [`crate::refs_watch::refs_state`]), as `ls-refs`
/// writes them, without the flush.
pub(super) fn write_listing<W: Write>(
    upload_pack: &UploadPack<'_>,
    refs: &[VisibleRef],
    format: Format,
    out: &mut PacketWriter<W>,
) -> Result<(), Listing> {
    let mut line = Vec::with_capacity(128);
    for visible in refs {
        match visible.id {
            Some(id) => {
                let view = RefView {
                    name: visible.name.as_bstr(),
                    id,
                    symref_target: visible.symref_target.as_ref().map(|t| t.as_bstr()),
                    peeled: Peeled::Unknown,
                };
                format_ref(upload_pack, view, format, &mut line)?;
            }
            None if format.unborn => {
                let target = visible
                    .symref_target
                    .as_deref()
                    .map_or(&b""[..], |t| t.as_slice());
                format_unborn(target, format, &mut line);
            }
            None => continue,
        }
        out.write_data(&line).map_err(Listing::Write)?;
    }
    Ok(())
}

/// The `unborn HEAD` line into `line`.
fn format_unborn(target: &[u8], format: Format, line: &mut Vec<u8>) {
    line.clear();
    line.extend_from_slice(b"unborn HEAD");
    if format.symrefs {
        line.extend_from_slice(b" symref-target:");
        line.extend_from_slice(target);
    }
    line.push(b'\n');
}

/// Why a listing stopped: reading the refs, or writing to the client.
pub(super) enum Listing {
    /// Reading the refs failed.
    Refs(RefsError),
    /// Writing to the client failed.
    Write(packgate_wire::pkt_line::WriteError),
}

impl From<RefsError> for Listing {
    fn from(err: RefsError) -> Self {
        Listing::Refs(err)
    }
}

/// One `ls-refs` line into `line`, without an allocation.
fn format_ref(
    upload_pack: &UploadPack<'_>,
    record: RefView<'_>,
    arguments: Format,
    line: &mut Vec<u8>,
) -> Result<(), RefsError> {
    line.clear();
    push_hex(line, &record.id);
    line.push(b' ');
    line.extend_from_slice(record.name);
    if arguments.symrefs {
        if let Some(target) = record.symref_target {
            line.extend_from_slice(b" symref-target:");
            line.extend_from_slice(target);
        }
    }
    if arguments.peel {
        if let Some(peeled) = upload_pack.repo.peeled(record)? {
            line.extend_from_slice(b" peeled:");
            push_hex(line, &peeled);
        }
    }
    line.push(b'\n');
    Ok(())
}

/// `id` in hexadecimal, appended to `line`.
pub(super) fn push_hex(line: &mut Vec<u8>, id: &gix_hash::oid) {
    let mut hex = [0u8; gix_hash::Kind::longest().len_in_hex()];
    line.extend_from_slice(id.hex_to_buf(&mut hex).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[&str], expected: Result<Arguments, &str>) {
        let input: Vec<BString> = input.iter().map(|s| BString::from(*s)).collect();
        assert_eq!(
            parse(&input, true),
            expected.map_err(str::to_owned),
            "input: {input:?}"
        );
    }

    #[test]
    fn arguments() {
        check(&[], Ok(Arguments::default()));
        check(
            &[
                "symrefs",
                "peel",
                "unborn",
                "ref-prefix refs/heads/",
                "ref-prefix HEAD",
            ],
            Ok(Arguments {
                format: Format {
                    symrefs: true,
                    peel: true,
                    unborn: true,
                },
                prefixes: vec![RefPrefix::new("refs/heads/"), RefPrefix::new("HEAD")],
                ..Arguments::default()
            }),
        );
        check(&["frobnicate"], Err("unexpected line: 'frobnicate'"));
        // git ignores every prefix from its 65536th on: the client gets all refs.
        let many: Vec<String> = (0..MAX_PREFIXES)
            .map(|n| format!("ref-prefix refs/heads/{n}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        check(&many, Ok(Arguments::default()));
        let fewer = &many[1..];
        assert_eq!(
            parse(
                &fewer.iter().map(|s| BString::from(*s)).collect::<Vec<_>>(),
                true
            )
            .map(|arguments| arguments.prefixes.len()),
            Ok(MAX_PREFIXES - 1)
        );
        check(&["ref-prefix"], Err("unexpected line: 'ref-prefix'"));
    }

    #[test]
    fn token_arguments() {
        let token = "0123456789abcdef0123456789abcdef01234567";
        check(
            &["refs-token", &format!("if-none-match {token}")],
            Ok(Arguments {
                refs_token: true,
                if_none_match: Some(RefsToken::parse(token.as_bytes()).unwrap()),
                ..Arguments::default()
            }),
        );
        let Err(message) = parse(&[BString::from("if-none-match xyz")], true) else {
            panic!("a malformed token was taken");
        };
        assert!(message.starts_with("malformed refs token"), "{message}");
        check(&["if-none-match"], Err("unexpected line: 'if-none-match'"));
        // Turned off (`packgate.refsWatch = false`), they are lines like any unknown one.
        assert_eq!(
            parse(&[BString::from("refs-token")], false),
            Err("unexpected line: 'refs-token'".to_owned())
        );
        assert_eq!(
            parse(&[BString::from(format!("if-none-match {token}"))], false),
            Err(format!("unexpected line: 'if-none-match {token}'"))
        );
    }
}
