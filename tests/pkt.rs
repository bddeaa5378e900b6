//! Pkt-lines, written and read by hand so the tests stay black-box (no packgate crate).

/// A flush packet.
pub const FLUSH: &[u8] = b"0000";
/// A delimiter packet (protocol v2).
pub const DELIM: &[u8] = b"0001";

/// One data pkt-line holding `payload`.
pub fn line(payload: impl AsRef<[u8]>) -> Vec<u8> {
    let payload = payload.as_ref();
    let mut packet = format!("{:04x}", payload.len() + 4).into_bytes();
    packet.extend_from_slice(payload);
    packet
}

/// Concatenates pieces of a request: pkt-lines, [`FLUSH`], [`DELIM`] or raw bytes.
pub fn concat<I, B>(pieces: I) -> Vec<u8>
where
    I: IntoIterator<Item = B>,
    B: AsRef<[u8]>,
{
    pieces
        .into_iter()
        .flat_map(|piece| piece.as_ref().to_vec())
        .collect()
}

/// A decoded packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// A data packet's payload.
    Data(Vec<u8>),
    /// `0000`.
    Flush,
    /// `0001`.
    Delim,
    /// `0002`.
    ResponseEnd,
}

impl Packet {
    /// The payload as text, if it is a data packet.
    pub fn text(&self) -> Option<String> {
        match self {
            Packet::Data(payload) => Some(String::from_utf8_lossy(payload).into_owned()),
            _ => None,
        }
    }
}

/// Decodes packets from the start of `bytes` until the end or until something is not a valid
/// packet; returns the packets and the bytes left over.
pub fn decode(mut bytes: &[u8]) -> (Vec<Packet>, &[u8]) {
    let mut packets = Vec::new();
    while bytes.len() >= 4 {
        let Some(length) = std::str::from_utf8(&bytes[..4])
            .ok()
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
        else {
            break;
        };
        let packet = match length {
            0 => Packet::Flush,
            1 => Packet::Delim,
            2 => Packet::ResponseEnd,
            3 => break,
            _ if length > bytes.len() => break,
            _ => Packet::Data(bytes[4..length].to_vec()),
        };
        bytes = &bytes[length.max(4)..];
        packets.push(packet);
    }
    (packets, bytes)
}

/// Splits a stateful server's output after its capability advertisement (which ends with the
/// first flush); `None` if there is no complete advertisement.
pub fn split_advertisement(output: &[u8]) -> Option<(Vec<Packet>, &[u8])> {
    let mut rest = output;
    let mut advertisement = Vec::new();
    loop {
        let (mut packets, _) = decode(rest);
        if packets.is_empty() {
            return None;
        }
        // Take one packet at a time, to know where the first flush ends.
        let packet = packets.remove(0);
        let length = match &packet {
            Packet::Data(payload) => payload.len() + 4,
            _ => 4,
        };
        rest = &rest[length..];
        let flush = packet == Packet::Flush;
        advertisement.push(packet);
        if flush {
            return Some((advertisement, rest));
        }
    }
}

/// The reason of the first `ERR <reason>` packet in `bytes`, if any.
pub fn error_reason(bytes: &[u8]) -> Option<String> {
    decode(bytes).0.iter().find_map(|packet| {
        let text = packet.text()?;
        text.strip_prefix("ERR ")
            .map(|reason| reason.trim_end().to_owned())
    })
}

/// The payloads of the data packets of `packets` as text lines (without the newline).
pub fn lines(packets: &[Packet]) -> Vec<String> {
    packets
        .iter()
        .filter_map(Packet::text)
        .map(|text| text.trim_end_matches('\n').to_owned())
        .collect()
}

/// The pack data of a v2 fetch response: the payloads of sideband channel 1 after the
/// `packfile` section header, or `None` without one.
pub fn packfile(response: &[u8]) -> Option<Vec<u8>> {
    let (packets, _) = decode(response);
    let start = packets
        .iter()
        .position(|packet| packet.text().as_deref() == Some("packfile\n"))?;
    let mut pack = Vec::new();
    for packet in &packets[start + 1..] {
        match packet {
            Packet::Data(payload) if payload.first() == Some(&1) => {
                pack.extend_from_slice(&payload[1..])
            }
            Packet::Data(_) => {}
            _ => break,
        }
    }
    Some(pack)
}

#[test]
fn round_trip() {
    let bytes = concat([
        line("a\n"),
        DELIM.to_vec(),
        line("b"),
        FLUSH.to_vec(),
        b"zz".to_vec(),
    ]);
    assert_eq!(bytes, b"0006a\n00010005b0000zz");
    let (packets, rest) = decode(&bytes);
    assert_eq!(
        packets,
        [
            Packet::Data(b"a\n".to_vec()),
            Packet::Delim,
            Packet::Data(b"b".to_vec()),
            Packet::Flush
        ]
    );
    assert_eq!(rest, b"zz");
    let (advertisement, rest) = split_advertisement(&bytes).unwrap_or_default();
    assert_eq!(advertisement.len(), 4);
    assert_eq!(rest, b"zz");
    let response = concat([line("a"), line("ERR oh no\n"), FLUSH.to_vec()]);
    assert_eq!(error_reason(&response).as_deref(), Some("oh no"));
}
