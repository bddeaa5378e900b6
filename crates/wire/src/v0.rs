//! Protocol v0/v1 upload-pack requests, sans IO: the want section (`want` lines, the first
//! carrying the client's capabilities, ending in a flush) and the negotiation lines that
//! follow (`have`, flush, `done`).
//!
//! The want section's `shallow`, `deepen`, `deepen-since` and `deepen-not` lines are
//! gathered into [`Wants::shallow`] ([`crate::shallow`] reads them), its `filter` lines into
//! [`Wants::filters`], for the server to check.

use std::io::Read;

use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;

use crate::{
    pkt_line::{strip_one_line_feed, Excerpt, Packet, PacketReader, ReadError},
    shallow::{parse_shallow_line, ShallowArguments, ShallowLineError},
};

/// The want section of a v0 request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wants {
    /// The wanted objects, in the order first sent; a repeated want is dropped, as git
    /// keeps it out of its list by flag.
    pub wants: Vec<ObjectId>,
    /// The capabilities after the wants' ids, split at spaces: the first line carries them,
    /// and git reads them from any line, so they are gathered from all.
    pub capabilities: Vec<BString>,
    /// The specs of `filter <spec>` lines, in order, unchecked: whether the client may send
    /// one is the server's business (git 2.47 allows one, with the `filter` capability).
    pub filters: Vec<BString>,
    /// The `shallow` and `deepen*` lines among the wants.
    pub shallow: ShallowArguments,
}

impl Wants {
    /// Whether the client asked for the capability `name` (without a value).
    pub fn has(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c == name.as_bytes())
    }

    /// The value of the capability `name=<value>`, if the client sent it.
    pub fn value(&self, name: &str) -> Option<&[u8]> {
        self.capabilities.iter().find_map(|c| {
            c.strip_prefix(name.as_bytes())
                .and_then(|rest| rest.strip_prefix(b"="))
        })
    }
}

/// One line of the negotiation after the wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// `have <id>`.
    Have(ObjectId),
    /// A flush: the end of a round of haves.
    Flush,
    /// `done`.
    Done,
}

/// A malformed or oversized v0 request. The messages are meant for the client
/// (`ERR <message>`), in git's words where git has them.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A `want` line without a valid object id.
    #[error(
        "git upload-pack: protocol error, expected to get object ID, not {}",
        Excerpt(line)
    )]
    BadWant {
        /// The line, without its LF.
        line: BString,
    },
    /// A `filter` line, which is not advertised.
    #[error("git upload-pack: filtering capability not negotiated")]
    Filter,
    /// A malformed `shallow` or `deepen*` line.
    #[error(transparent)]
    Shallow(#[from] ShallowLineError),
    /// Any other line in the want section.
    #[error(
        "git upload-pack: protocol error, expected to get sha, not {}",
        Excerpt(line)
    )]
    ExpectedWant {
        /// The line, without its LF.
        line: BString,
    },
    /// A `have` line without a valid object id.
    #[error("git upload-pack: expected SHA1 object, got {}", Excerpt(line))]
    BadHave {
        /// The part after `have `.
        line: BString,
    },
    /// Anything else among the haves.
    #[error("git upload-pack: expected SHA1 list, got {}", Excerpt(line))]
    ExpectedHave {
        /// The line, without its LF.
        line: BString,
    },
    /// A packet kind v0 does not have.
    #[error("git upload-pack: unexpected {0} in a protocol v0 request")]
    UnexpectedPacket(&'static str),
    /// More wants than the limit.
    #[error("git upload-pack: too many wants (more than {0})")]
    TooManyWants(usize),
    /// More distinct capabilities than any client sends ([`MAX_CAPABILITIES`]).
    #[error("git upload-pack: too many capabilities (more than {MAX_CAPABILITIES})")]
    TooManyCapabilities,
    /// Reading the stream failed or it held a malformed pkt-line.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// The most distinct capabilities a want section may name: git's client sends about a dozen,
/// and every one is compared with those already kept.
pub const MAX_CAPABILITIES: usize = 64;

/// Parse one line of the want section (its LF already removed). Returns the id and the
/// capabilities after it.
pub fn parse_want(line: &[u8]) -> Result<(ObjectId, Vec<BString>), RequestError> {
    let Some(rest) = line.strip_prefix(b"want ") else {
        if line.starts_with(b"filter ") {
            return Err(RequestError::Filter);
        }
        return Err(RequestError::ExpectedWant { line: line.into() });
    };
    let (hex, capabilities) = match rest.split_once_str(" ") {
        Some((hex, capabilities)) => (hex, Some(capabilities)),
        None => (rest, None),
    };
    let id = ObjectId::from_hex(hex).map_err(|_| RequestError::BadWant { line: line.into() })?;
    let capabilities = capabilities
        .map(|capabilities| {
            capabilities
                .split_str(" ")
                .filter(|c| !c.is_empty())
                .map(BString::from)
                .collect()
        })
        .unwrap_or_default();
    Ok((id, capabilities))
}

/// Parse one negotiation line (its LF already removed).
pub fn parse_line(line: &[u8]) -> Result<Line, RequestError> {
    if let Some(hex) = line.strip_prefix(b"have ") {
        return ObjectId::from_hex(hex)
            .map(Line::Have)
            .map_err(|_| RequestError::BadHave { line: hex.into() });
    }
    if line == b"done" {
        return Ok(Line::Done);
    }
    Err(RequestError::ExpectedHave { line: line.into() })
}

/// Read the want section up to its flush. `Ok(None)`: the client wants nothing (a flush
/// first) or hung up before sending anything, both ordinary ends of a session.
pub fn read_wants<R: Read>(
    reader: &mut PacketReader<R>,
    max_wants: usize,
) -> Result<Option<Wants>, RequestError> {
    let mut wants = Wants::default();
    let mut seen = std::collections::HashSet::new();
    let mut lines = 0usize;
    loop {
        let packet = match reader.read_packet() {
            Ok(packet) => packet,
            Err(ReadError::UnexpectedEof { received: 0, .. }) if wants.wants.is_empty() => {
                return Ok(None)
            }
            Err(err) => return Err(err.into()),
        };
        match packet {
            None | Some(Packet::Flush) if wants.wants.is_empty() => return Ok(None),
            None => {
                return Err(ReadError::UnexpectedEof {
                    expected: 4,
                    received: 0,
                }
                .into())
            }
            Some(Packet::Flush) => return Ok(Some(wants)),
            Some(Packet::Data(data)) => {
                let line = strip_one_line_feed(data);
                if let Some(spec) = line.strip_prefix(b"filter ") {
                    if wants.filters.len() >= MAX_CAPABILITIES {
                        return Err(RequestError::TooManyCapabilities);
                    }
                    wants.filters.push(spec.into());
                    continue;
                }
                // Lines, not distinct ids: repeats cost reading too.
                if let Some(shallow) = parse_shallow_line(line)? {
                    lines += 1;
                    if lines > max_wants {
                        return Err(RequestError::TooManyWants(max_wants));
                    }
                    wants.shallow.add(shallow);
                    continue;
                }
                let (id, capabilities) = parse_want(line)?;
                // Lines, not distinct ids: repeats cost reading too.
                lines += 1;
                if lines > max_wants {
                    return Err(RequestError::TooManyWants(max_wants));
                }
                for capability in capabilities {
                    if !wants.capabilities.contains(&capability) {
                        if wants.capabilities.len() >= MAX_CAPABILITIES {
                            return Err(RequestError::TooManyCapabilities);
                        }
                        wants.capabilities.push(capability);
                    }
                }
                if seen.insert(id) {
                    wants.wants.push(id);
                }
            }
            Some(other) => return Err(RequestError::UnexpectedPacket(other.kind_name())),
        }
    }
}

/// Read one negotiation line. `Ok(None)`: the stream ended.
pub fn read_line<R: Read>(reader: &mut PacketReader<R>) -> Result<Option<Line>, RequestError> {
    match reader.read_packet()? {
        None => Ok(None),
        Some(Packet::Flush) => Ok(Some(Line::Flush)),
        Some(Packet::Data(data)) => parse_line(strip_one_line_feed(data)).map(Some),
        Some(other) => Err(RequestError::UnexpectedPacket(other.kind_name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_wants_are_kept_once_and_capabilities_are_bounded() {
        let other = "1123456789abcdef0123456789abcdef01234567";
        let mut input = Vec::new();
        for line in [
            format!("want {ID} multi_ack side-band-64k\n"),
            format!("want {other}\n"),
            format!("want {ID} side-band-64k\n"),
        ] {
            input.extend_from_slice(format!("{:04x}{line}", line.len() + 4).as_bytes());
        }
        input.extend_from_slice(b"0000");
        let mut reader = PacketReader::new(input.as_slice());
        let wants = read_wants(&mut reader, 10).unwrap().unwrap();
        assert_eq!(
            wants.wants,
            [id(), ObjectId::from_hex(other.as_bytes()).unwrap()]
        );
        assert_eq!(wants.capabilities, ["multi_ack", "side-band-64k"]);

        let many: Vec<String> = (0..=MAX_CAPABILITIES).map(|n| format!("c{n}")).collect();
        let line = format!("want {ID} {}\n", many.join(" "));
        let input = format!("{:04x}{line}0000", line.len() + 4);
        let mut reader = PacketReader::new(input.as_bytes());
        assert!(matches!(
            read_wants(&mut reader, 10),
            Err(RequestError::TooManyCapabilities)
        ));
    }

    const ID: &str = "0123456789abcdef0123456789abcdef01234567";

    fn id() -> ObjectId {
        ObjectId::from_hex(ID.as_bytes()).unwrap()
    }

    fn pkt(line: &str) -> String {
        format!("{:04x}{line}", line.len() + 4)
    }

    fn check_wants(input: &str, expected: Result<Option<Wants>, &str>) {
        let mut reader = PacketReader::new(input.as_bytes());
        let actual = read_wants(&mut reader, 2).map_err(|err| err.to_string());
        assert_eq!(
            actual,
            expected.map_err(ToOwned::to_owned),
            "input {input:?}"
        );
    }

    #[test]
    fn want_sections() {
        let caps = |c: &[&str]| c.iter().map(|c| BString::from(*c)).collect::<Vec<_>>();
        check_wants(
            &format!(
                "{}{}0000",
                pkt(&format!(
                    "want {ID} multi_ack side-band-64k agent=git/2.47\n"
                )),
                pkt(&format!("want {ID} multi_ack no-done\n"))
            ),
            Ok(Some(Wants {
                wants: vec![id()],
                capabilities: caps(&["multi_ack", "side-band-64k", "agent=git/2.47", "no-done"]),
                filters: Vec::new(),
                shallow: ShallowArguments::default(),
            })),
        );
        check_wants(
            &format!(
                "{}{}0000",
                pkt(&format!("want {ID} filter\n")),
                pkt("filter blob:none\n")
            ),
            Ok(Some(Wants {
                wants: vec![id()],
                capabilities: caps(&["filter"]),
                filters: caps(&["blob:none"]),
                shallow: ShallowArguments::default(),
            })),
        );
        check_wants("0000", Ok(None));
        check_wants("", Ok(None));
        check_wants(
            &pkt(&format!("want {ID}\n")),
            Err("unexpected end of stream inside a pkt-line: got 0 of 4 bytes"),
        );
        check_wants(
            &format!("{}0000", pkt("want 12345\n")),
            Err("git upload-pack: protocol error, expected to get object ID, not \"want 12345\""),
        );
        check_wants(
            &format!("{}{}0000", pkt(&format!("want {ID}\n")), pkt("deepen 0\n")),
            Err("Invalid deepen: deepen 0"),
        );
        // A filter line is gathered: whether it was negotiated is the server's to judge.
        check_wants(
            &format!(
                "{}{}0000",
                pkt(&format!("want {ID}\n")),
                pkt("filter blob:none\n")
            ),
            Ok(Some(Wants {
                wants: vec![id()],
                filters: vec!["blob:none".into()],
                ..Wants::default()
            })),
        );
        check_wants(
            &format!("{}0000", pkt(&format!("have {ID}\n"))),
            Err(&format!(
                "git upload-pack: protocol error, expected to get sha, not \"have {ID}\""
            )),
        );
        check_wants(
            &pkt(&format!("want {ID}\n")).repeat(3),
            Err("git upload-pack: too many wants (more than 2)"),
        );
        check_wants(
            "0001",
            Err("git upload-pack: unexpected delim-pkt in a protocol v0 request"),
        );
    }

    #[test]
    fn shallow_lines_are_gathered_and_count_as_lines() {
        let input = format!(
            "{}{}{}{}0000",
            pkt(&format!("want {ID}\n")),
            pkt("deepen 1\n"),
            pkt(&format!("shallow {ID}\n")),
            pkt("deepen-not main\n"),
        );
        let mut reader = PacketReader::new(input.as_bytes());
        let wants = read_wants(&mut reader, 4).unwrap().unwrap();
        assert_eq!(
            wants,
            Wants {
                wants: vec![id()],
                capabilities: Vec::new(),
                filters: Vec::new(),
                shallow: ShallowArguments {
                    shallows: vec![id()],
                    depth: 1,
                    not: vec!["main".into()],
                    ..ShallowArguments::default()
                },
            }
        );
        let mut reader = PacketReader::new(input.as_bytes());
        assert!(matches!(
            read_wants(&mut reader, 3),
            Err(RequestError::TooManyWants(3))
        ));
    }

    #[test]
    fn negotiation_lines() {
        let input = format!("{}0000{}", pkt(&format!("have {ID}\n")), pkt("done\n"));
        let mut reader = PacketReader::new(input.as_bytes());
        assert_eq!(read_line(&mut reader).unwrap(), Some(Line::Have(id())));
        assert_eq!(read_line(&mut reader).unwrap(), Some(Line::Flush));
        assert_eq!(read_line(&mut reader).unwrap(), Some(Line::Done));
        assert_eq!(read_line(&mut reader).unwrap(), None);
        assert_eq!(
            parse_line(b"have xyz").unwrap_err().to_string(),
            "git upload-pack: expected SHA1 object, got \"xyz\""
        );
        assert_eq!(
            parse_line(b"want x").unwrap_err().to_string(),
            "git upload-pack: expected SHA1 list, got \"want x\""
        );
    }
}
