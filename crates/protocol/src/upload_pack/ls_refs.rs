//! The `ls-refs` command.

use std::io::Write;

use bstr::{BString, ByteSlice};
use packgate_wire::pkt_line::PacketWriter;

use super::{reject, Flow, ServeError, UploadPack};
use crate::config::UnbornPolicy;
use crate::refname::RefPrefix;
use crate::repository::{Head, RefView, RefsError};

/// With this many prefixes or more, git lists everything instead; so do we.
const MAX_PREFIXES: usize = 65536;

/// The arguments of one `ls-refs` request.
#[derive(Debug, Default, PartialEq, Eq)]
struct Arguments {
    symrefs: bool,
    peel: bool,
    unborn: bool,
    /// Validated here, before anything reads the file system.
    prefixes: Vec<RefPrefix>,
}

fn parse(arguments: &[BString]) -> Result<Arguments, String> {
    let mut parsed = Arguments::default();
    for argument in arguments {
        match argument.as_slice() {
            b"symrefs" => parsed.symrefs = true,
            b"peel" => parsed.peel = true,
            b"unborn" => parsed.unborn = true,
            other => match other.strip_prefix(b"ref-prefix ") {
                Some(prefix) => parsed.prefixes.push(RefPrefix::new(prefix)),
                None => return Err(format!("unexpected line: '{}'", argument.as_bstr())),
            },
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
    let mut arguments = match parse(arguments) {
        Ok(arguments) => arguments,
        Err(message) => return Err(reject(out, message)),
    };
    // `lsrefs.unborn=ignore`: git accepts the argument and acts as if it was not sent.
    arguments.unborn &= upload_pack.config.lsrefs_unborn != UnbornPolicy::Ignore;
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
                if let Err(err) = format_ref(upload_pack, head.view(), &arguments, &mut line) {
                    return Err(failed(out, &err));
                }
                out.write_data(&line)?;
            }
            Ok(Head::Unborn { target }) if arguments.unborn => {
                line.clear();
                line.extend_from_slice(b"unborn HEAD");
                if arguments.symrefs {
                    line.extend_from_slice(b" symref-target:");
                    line.extend_from_slice(&target);
                }
                line.push(b'\n');
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
        format_ref(upload_pack, record, &arguments, &mut line)?;
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
    arguments: &Arguments,
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
            parse(&input),
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
                symrefs: true,
                peel: true,
                unborn: true,
                prefixes: vec![RefPrefix::new("refs/heads/"), RefPrefix::new("HEAD")],
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
            parse(&fewer.iter().map(|s| BString::from(*s)).collect::<Vec<_>>())
                .map(|arguments| arguments.prefixes.len()),
            Ok(MAX_PREFIXES - 1)
        );
        check(&["ref-prefix"], Err("unexpected line: 'ref-prefix'"));
    }
}
