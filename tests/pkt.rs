//! Pkt-lines for requests written by hand and responses read back, on `packgate-wire`'s
//! codec (the tests stay black-box otherwise: they talk to the binary, not the library).

use packgate::wire::pkt_line::{self, Decoded};

/// A flush packet.
pub const FLUSH: &[u8] = b"0000";
/// A delimiter packet (protocol v2).
pub const DELIM: &[u8] = b"0001";

/// One data pkt-line holding `payload`.
pub fn line(payload: impl AsRef<[u8]>) -> Vec<u8> {
    let mut packet = Vec::new();
    let encoded = pkt_line::encode_data(payload.as_ref(), &mut packet);
    assert!(encoded.is_ok(), "a test's payload is too long: {encoded:?}");
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

impl From<pkt_line::Packet<'_>> for Packet {
    fn from(packet: pkt_line::Packet<'_>) -> Self {
        match packet {
            pkt_line::Packet::Data(payload) => Packet::Data(payload.to_vec()),
            pkt_line::Packet::Flush => Packet::Flush,
            pkt_line::Packet::Delimiter => Packet::Delim,
            pkt_line::Packet::ResponseEnd => Packet::ResponseEnd,
        }
    }
}

/// The first packet of `bytes` and the bytes after it, if it starts with a whole valid one.
fn next_packet(bytes: &[u8]) -> Option<(Packet, &[u8])> {
    match pkt_line::decode(bytes) {
        Ok(Decoded::Complete { packet, consumed }) => Some((packet.into(), &bytes[consumed..])),
        Ok(Decoded::Incomplete { .. }) | Err(_) => None,
    }
}

/// Decodes packets from the start of `bytes` until the end or until something is not a valid
/// packet; returns the packets and the bytes left over.
pub fn decode(mut bytes: &[u8]) -> (Vec<Packet>, &[u8]) {
    let mut packets = Vec::new();
    while let Some((packet, rest)) = next_packet(bytes) {
        packets.push(packet);
        bytes = rest;
    }
    (packets, bytes)
}

/// Splits a stateful server's output after its capability advertisement (which ends with the
/// first flush); `None` if there is no complete advertisement.
pub fn split_advertisement(output: &[u8]) -> Option<(Vec<Packet>, &[u8])> {
    let mut rest = output;
    let mut advertisement = Vec::new();
    loop {
        let (packet, after) = next_packet(rest)?;
        rest = after;
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
    let (mut flush, mut delim) = (Vec::new(), Vec::new());
    pkt_line::encode_flush(&mut flush);
    pkt_line::encode_delimiter(&mut delim);
    assert_eq!((flush.as_slice(), delim.as_slice()), (FLUSH, DELIM));
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
