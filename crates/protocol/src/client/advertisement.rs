//! The server's first words: a v0/v1 ref advertisement (refs, capabilities on the first
//! line, `.have` lines, `shallow` lines; `version 1` first for v1), or protocol v2's
//! capability advertisement. Both of packgate's clients start by reading one.

use std::io::Read;

use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;
use packgate_wire::pkt_line::{Packet, PacketReader, ReadError};

/// One ref of a v0 advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedRef {
    /// The full name (`refs/heads/main`, `HEAD`).
    pub name: BString,
    /// What it points at.
    pub id: ObjectId,
    /// For an annotated tag, the object it peels to (the `^{}` line that followed it).
    pub peeled: Option<ObjectId>,
}

/// What the server advertised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advertisement {
    /// Protocol v2: the capability lines after `version 2` (`agent=…`, `ls-refs=unborn`,
    /// `fetch=shallow wait-for-done`, `object-format=sha1`, …).
    V2 {
        /// The capability lines, as sent.
        capabilities: Vec<BString>,
    },
    /// Protocol v0 or v1: the refs and the capabilities of the first line.
    V0 {
        /// True when the server said `version 1` first.
        version1: bool,
        /// The refs in the order advertised (an empty repository advertises none).
        refs: Vec<AdvertisedRef>,
        /// The capabilities (`multi_ack_detailed`, `symref=HEAD:refs/heads/main`, …).
        capabilities: Vec<BString>,
        /// Objects the server has without a ref (`.have` lines: alternates).
        haves: Vec<ObjectId>,
        /// The server's shallow commits (`shallow` lines).
        shallow: Vec<ObjectId>,
    },
}

impl Advertisement {
    /// The capabilities, whichever the version.
    pub fn capabilities(&self) -> &[BString] {
        match self {
            Advertisement::V2 { capabilities } | Advertisement::V0 { capabilities, .. } => {
                capabilities
            }
        }
    }

    /// Whether capability `name` was advertised, alone or as `name=value`.
    pub fn has(&self, name: &str) -> bool {
        self.value(name).is_some()
    }

    /// The value of capability `name`: `Some(b"")` when it has none, `None` when absent.
    /// For v2 the value of `fetch=shallow filter` is `shallow filter`.
    pub fn value(&self, name: &str) -> Option<&[u8]> {
        self.capabilities().iter().find_map(|c| {
            let c = c.as_bytes();
            let rest = c.strip_prefix(name.as_bytes())?;
            if rest.is_empty() {
                Some(&rest[..0])
            } else {
                rest.strip_prefix(b"=")
            }
        })
    }
}

/// Why an advertisement could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AdvertisementError {
    /// The pkt-line stream broke.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The server sent `ERR <message>`.
    #[error("remote error: {0}")]
    Remote(String),
    /// The connection ended before anything was said.
    #[error("the remote end hung up before its advertisement")]
    Empty,
    /// A line is not what an advertisement holds.
    #[error("invalid advertisement line '{0}'")]
    Invalid(BString),
}

/// Reads one advertisement, up to and including its flush.
pub fn read_advertisement<R: Read>(
    reader: &mut PacketReader<R>,
) -> Result<Advertisement, AdvertisementError> {
    let mut version1 = false;
    let mut first = true;
    let mut refs: Vec<AdvertisedRef> = Vec::new();
    let mut capabilities = Vec::new();
    let mut haves = Vec::new();
    let mut shallow = Vec::new();
    loop {
        let line = match reader.read_packet()? {
            None if first => return Err(AdvertisementError::Empty),
            None => {
                return Err(AdvertisementError::Read(ReadError::UnexpectedEof {
                    expected: 4,
                    received: 0,
                }))
            }
            Some(Packet::Flush) => break,
            Some(Packet::Data(data)) => data.strip_suffix(b"\n").unwrap_or(data).to_vec(),
            Some(other) => {
                return Err(AdvertisementError::Invalid(other.kind_name().into()));
            }
        };
        if let Some(message) = line.strip_prefix(b"ERR ") {
            return Err(AdvertisementError::Remote(
                String::from_utf8_lossy(message).into_owned(),
            ));
        }
        if first && line == b"version 2" {
            return read_v2_capabilities(reader);
        }
        if first && line == b"version 1" {
            version1 = true;
            continue;
        }
        let was_first = std::mem::replace(&mut first, false);
        if let Some(id) = line.strip_prefix(b"shallow ") {
            shallow.push(parse_id(id, &line)?);
            continue;
        }
        // `<id> <name>[\0<capabilities>]`
        let (text, caps) = match line.find_byte(0) {
            Some(nul) => (&line[..nul], Some(&line[nul + 1..])),
            None => (&line[..], None),
        };
        if let Some(caps) = caps {
            if !was_first {
                return Err(AdvertisementError::Invalid(line.clone().into()));
            }
            capabilities = caps
                .split_str(" ")
                .filter(|c| !c.is_empty())
                .map(BString::from)
                .collect();
        }
        let Some((id, name)) = text.split_once_str(" ") else {
            return Err(AdvertisementError::Invalid(line.clone().into()));
        };
        let id = parse_id(id, &line)?;
        if name == b"capabilities^{}" {
            // An empty repository: no refs, only the capabilities.
            continue;
        }
        if name == b".have" {
            haves.push(id);
            continue;
        }
        if let Some(base) = name.strip_suffix(b"^{}") {
            match refs.last_mut() {
                Some(last) if last.name == base && last.peeled.is_none() => {
                    last.peeled = Some(id);
                    continue;
                }
                _ => return Err(AdvertisementError::Invalid(line.clone().into())),
            }
        }
        refs.push(AdvertisedRef {
            name: name.into(),
            id,
            peeled: None,
        });
    }
    Ok(Advertisement::V0 {
        version1,
        refs,
        capabilities,
        haves,
        shallow,
    })
}

fn read_v2_capabilities<R: Read>(
    reader: &mut PacketReader<R>,
) -> Result<Advertisement, AdvertisementError> {
    let mut capabilities = Vec::new();
    loop {
        match reader.read_packet()? {
            Some(Packet::Flush) => return Ok(Advertisement::V2 { capabilities }),
            Some(Packet::Data(data)) => {
                capabilities.push(data.strip_suffix(b"\n").unwrap_or(data).into());
            }
            Some(other) => return Err(AdvertisementError::Invalid(other.kind_name().into())),
            None => {
                return Err(AdvertisementError::Read(ReadError::UnexpectedEof {
                    expected: 4,
                    received: 0,
                }))
            }
        }
    }
}

fn parse_id(hex: &[u8], line: &[u8]) -> Result<ObjectId, AdvertisementError> {
    ObjectId::from_hex(hex).map_err(|_| AdvertisementError::Invalid(line.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use packgate_wire::pkt_line::PacketWriter;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn read(lines: &[&[u8]]) -> Result<Advertisement, AdvertisementError> {
        let mut writer = PacketWriter::new(Vec::new());
        for line in lines {
            writer.write_data(line).unwrap();
        }
        writer.flush_pkt().unwrap();
        let bytes = writer.into_inner();
        read_advertisement(&mut PacketReader::new(bytes.as_slice()))
    }

    #[test]
    fn v0_refs_capabilities_peeled_and_haves() {
        let first = format!("{A} HEAD\0multi_ack_detailed symref=HEAD:refs/heads/main agent=x\n");
        let main = format!("{A} refs/heads/main\n");
        let tag = format!("{B} refs/tags/v1\n");
        let peeled = format!("{A} refs/tags/v1^{{}}\n");
        let have = format!("{B} .have\n");
        let ad = read(&[
            first.as_bytes(),
            main.as_bytes(),
            tag.as_bytes(),
            peeled.as_bytes(),
            have.as_bytes(),
        ])
        .unwrap();
        let Advertisement::V0 {
            refs,
            haves,
            version1,
            ..
        } = &ad
        else {
            panic!("not v0: {ad:?}");
        };
        assert!(!version1);
        assert_eq!(refs.len(), 3);
        assert_eq!(
            refs[2].peeled,
            Some(ObjectId::from_hex(A.as_bytes()).unwrap())
        );
        assert_eq!(haves.len(), 1);
        assert_eq!(ad.value("symref"), Some(&b"HEAD:refs/heads/main"[..]));
        assert!(ad.has("multi_ack_detailed"));
        assert!(!ad.has("multi_ack"));
    }

    #[test]
    fn an_empty_repository_and_version_1() {
        let zero = "0".repeat(40);
        let line = format!("{zero} capabilities^{{}}\0report-status delete-refs\n");
        let ad = read(&[b"version 1\n", line.as_bytes()]).unwrap();
        let Advertisement::V0 { refs, version1, .. } = &ad else {
            panic!("not v0");
        };
        assert!(*version1 && refs.is_empty());
        assert!(ad.has("report-status"));
    }

    #[test]
    fn v2_capabilities() {
        let ad = read(&[
            b"version 2\n",
            b"agent=git/2.47\n",
            b"fetch=shallow filter\n",
        ])
        .unwrap();
        assert!(matches!(ad, Advertisement::V2 { .. }));
        assert_eq!(ad.value("fetch"), Some(&b"shallow filter"[..]));
    }

    #[test]
    fn errors_are_reported() {
        assert!(
            matches!(read(&[b"ERR access denied\n"]), Err(AdvertisementError::Remote(m)) if m == "access denied")
        );
        assert!(matches!(
            read(&[b"nonsense\n"]),
            Err(AdvertisementError::Invalid(_))
        ));
        let empty: &[u8] = &[];
        assert!(matches!(
            read_advertisement(&mut PacketReader::new(empty)),
            Err(AdvertisementError::Empty)
        ));
    }
}
