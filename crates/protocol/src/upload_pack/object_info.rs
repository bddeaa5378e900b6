//! The v2 `object-info` command (`transfer.advertiseObjectInfo`): the sizes of objects by
//! id, without sending them.
//!
//! As git's `protocol-caps.c`: arguments `size` and `oid <id>`; the answer is `size`, then
//! one `<id> <size>` line per id as the client spelled it (`<id> ` when the object is
//! missing), then a flush; no ids, only the flush. Lines go without a trailing LF, as git
//! writes them.

use std::io::Write;

use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;
use packgate_wire::pkt_line::PacketWriter;

use super::{reject, Flow, ServeError, UploadPack};

/// The arguments of one `object-info` request.
#[derive(Debug, Default, PartialEq, Eq)]
struct Arguments {
    size: bool,
    /// The ids as sent; checked when answering, as git does.
    ids: Vec<BString>,
}

fn parse(arguments: &[BString]) -> Result<Arguments, String> {
    let mut parsed = Arguments::default();
    for argument in arguments {
        if argument == "size" {
            parsed.size = true;
        } else if let Some(id) = argument.strip_prefix(b"oid ") {
            parsed.ids.push(id.into());
        } else {
            return Err(format!(
                "object-info: unexpected line: '{}'",
                argument.as_bstr()
            ));
        }
    }
    Ok(parsed)
}

/// An id as git's `get_oid_hex` takes it: exactly 40 hex digits.
fn parse_id(hex: &[u8]) -> Option<ObjectId> {
    (hex.len() == 40)
        .then(|| ObjectId::from_hex(hex).ok())
        .flatten()
}

pub(super) fn handle<W: Write>(
    upload_pack: &UploadPack<'_>,
    arguments: &[BString],
    out: &mut PacketWriter<W>,
) -> Result<Flow, ServeError> {
    let arguments = match parse(arguments) {
        Ok(arguments) => arguments,
        Err(message) => return Err(reject(out, message)),
    };
    if !arguments.ids.is_empty() {
        if arguments.size {
            out.write_data(b"size")?;
        }
        for hex in &arguments.ids {
            let Some(id) = parse_id(hex) else {
                return Err(reject(
                    out,
                    format!(
                        "object-info: protocol error, expected to get oid, not '{}'",
                        hex.as_bstr()
                    ),
                ));
            };
            let mut line = hex.clone();
            if arguments.size {
                line.push(b' ');
                let header =
                    gix_object::FindHeader::try_header(upload_pack.repo.objects(), &id).ok();
                if let Some(header) = header.flatten() {
                    line.extend_from_slice(header.size.to_string().as_bytes());
                }
            }
            out.write_data(&line)?;
        }
    }
    out.flush_pkt()?;
    Ok(Flow::Continue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let parsed = parse(&["size".into(), "oid abc".into()]).unwrap();
        assert_eq!(
            parsed,
            Arguments {
                size: true,
                ids: vec!["abc".into()]
            }
        );
        assert_eq!(
            parse(&["sizes".into()]),
            Err("object-info: unexpected line: 'sizes'".into())
        );
        assert_eq!(parse_id(b"abc"), None);
        assert_eq!(parse_id(&[b'0'; 41]), None);
        assert!(parse_id(&[b'a'; 40]).is_some());
    }
}
