use std::io;

use proptest::prelude::*;

use super::*;

/// An owned copy of a [`Packet`], to keep packets across reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnedPacket {
    Data(Vec<u8>),
    Flush,
    Delimiter,
    ResponseEnd,
}

impl OwnedPacket {
    pub(crate) fn as_packet(&self) -> Packet<'_> {
        match self {
            OwnedPacket::Data(data) => Packet::Data(data),
            OwnedPacket::Flush => Packet::Flush,
            OwnedPacket::Delimiter => Packet::Delimiter,
            OwnedPacket::ResponseEnd => Packet::ResponseEnd,
        }
    }
}

impl From<Packet<'_>> for OwnedPacket {
    fn from(packet: Packet<'_>) -> Self {
        match packet {
            Packet::Data(data) => OwnedPacket::Data(data.to_vec()),
            Packet::Flush => OwnedPacket::Flush,
            Packet::Delimiter => OwnedPacket::Delimiter,
            Packet::ResponseEnd => OwnedPacket::ResponseEnd,
        }
    }
}

/// A stream that hands out at most `chunk` bytes per read, and is interrupted before each
/// read, the way a socket may be.
pub(crate) struct TrickleReader<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) chunk: usize,
    pub(crate) interrupt_next: bool,
}

impl io::Read for TrickleReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.interrupt_next = !self.interrupt_next;
        if !self.interrupt_next {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let count = buffer.len().min(self.chunk).min(self.data.len());
        let (head, tail) = self.data.split_at(count);
        buffer[..count].copy_from_slice(head);
        self.data = tail;
        Ok(count)
    }
}

#[test]
fn decode_table() {
    #[track_caller]
    fn check(input: &[u8], expected: Result<Decoded<'_>, DecodeError>) {
        assert_eq!(decode(input), expected, "input {:?}", input.as_bstr());
    }
    fn complete(packet: Packet<'_>, consumed: usize) -> Result<Decoded<'_>, DecodeError> {
        Ok(Decoded::Complete { packet, consumed })
    }

    check(b"0000", complete(Packet::Flush, 4));
    check(b"0001", complete(Packet::Delimiter, 4));
    check(b"0002", complete(Packet::ResponseEnd, 4));
    check(b"0004", complete(Packet::Data(b""), 4));
    check(b"0005a", complete(Packet::Data(b"a"), 5));
    check(b"0009done\n0000", complete(Packet::Data(b"done\n"), 9));
    check(b"000Aabcdef", complete(Packet::Data(b"abcdef"), 10));
    check(b"000aabcdef", complete(Packet::Data(b"abcdef"), 10));
    check(b"00000009done\n", complete(Packet::Flush, 4));

    check(b"", Ok(Decoded::Incomplete { needed: 4 }));
    check(b"0", Ok(Decoded::Incomplete { needed: 3 }));
    check(b"000", Ok(Decoded::Incomplete { needed: 1 }));
    check(b"0005", Ok(Decoded::Incomplete { needed: 1 }));
    check(b"0009do", Ok(Decoded::Incomplete { needed: 3 }));
    check(b"fff0", Ok(Decoded::Incomplete { needed: 65516 }));

    check(b"0003", Err(DecodeError::ReservedLength { length: 3 }));
    check(b"0003abc", Err(DecodeError::ReservedLength { length: 3 }));
    check(b"fff1", Err(DecodeError::LengthTooLarge { length: 65521 }));
    check(b"ffff", Err(DecodeError::LengthTooLarge { length: 65535 }));
    check(b"00g5", Err(DecodeError::NonHexLength { prefix: *b"00g5" }));
    check(b"+005", Err(DecodeError::NonHexLength { prefix: *b"+005" }));
    check(b" 005", Err(DecodeError::NonHexLength { prefix: *b" 005" }));
    check(b"PACK", Err(DecodeError::NonHexLength { prefix: *b"PACK" }));
    check(
        b"\xff\x00\x00\x00",
        Err(DecodeError::NonHexLength {
            prefix: *b"\xff\x00\x00\x00",
        }),
    );
}

#[test]
fn decode_accepts_the_longest_packet() {
    let mut packet = b"fff0".to_vec();
    packet.resize(MAX_PACKET_LENGTH, b'x');
    assert_eq!(
        decode(&packet),
        Ok(Decoded::Complete {
            packet: Packet::Data(&packet[4..]),
            consumed: MAX_PACKET_LENGTH
        })
    );
}

#[test]
fn decode_error_messages() {
    #[track_caller]
    fn check(error: DecodeError, expected: &str) {
        assert_eq!(error.to_string(), expected);
    }
    check(
        DecodeError::NonHexLength { prefix: *b"PA\nK" },
        r#"invalid pkt-line length "PA\nK": expected four hexadecimal digits"#,
    );
    check(
        DecodeError::LengthTooLarge { length: 65521 },
        "pkt-line length 65521 exceeds the maximum of 65520",
    );
    check(
        DecodeError::ReservedLength { length: 3 },
        "invalid pkt-line length 0003: reserved",
    );
}

#[test]
fn packet_text_strips_one_line_feed() {
    #[track_caller]
    fn check(packet: Packet<'_>, expected: Option<&str>) {
        assert_eq!(
            packet.as_text(),
            expected.map(|text| text.as_bytes().as_bstr())
        );
    }
    check(Packet::Data(b"want x\n"), Some("want x"));
    check(Packet::Data(b"want x"), Some("want x"));
    check(Packet::Data(b"two\n\n"), Some("two\n"));
    check(Packet::Data(b"\n"), Some(""));
    check(Packet::Data(b""), Some(""));
    check(Packet::Flush, None);
    check(Packet::Delimiter, None);
    check(Packet::ResponseEnd, None);
}

/// Reads packets until the end of `input` or an error, rendering the error as a string.
fn read_all(input: &[u8]) -> (Vec<OwnedPacket>, Result<(), String>) {
    let mut reader = PacketReader::new(input);
    let mut packets = Vec::new();
    loop {
        match reader.read_packet() {
            Ok(Some(packet)) => packets.push(packet.into()),
            Ok(None) => return (packets, Ok(())),
            Err(error) => return (packets, Err(error.to_string())),
        }
    }
}

#[test]
fn reader_table() {
    #[track_caller]
    fn check(input: &[u8], expected_packets: &[Packet<'_>], expected_end: Result<(), &str>) {
        let (packets, end) = read_all(input);
        let packets: Vec<Packet<'_>> = packets.iter().map(OwnedPacket::as_packet).collect();
        assert_eq!(packets, expected_packets, "input {:?}", input.as_bstr());
        assert_eq!(
            end.as_ref().map_err(String::as_str).copied(),
            expected_end,
            "input {:?}",
            input.as_bstr()
        );
    }
    use Packet::*;

    check(b"", &[], Ok(()));
    check(b"0000", &[Flush], Ok(()));
    check(
        b"0014command=ls-refs\n00010008peel0004000000020000",
        &[
            Data(b"command=ls-refs\n"),
            Delimiter,
            Data(b"peel"),
            Data(b""),
            Flush,
            ResponseEnd,
            Flush,
        ],
        Ok(()),
    );
    check(
        b"0000000",
        &[Flush],
        Err("unexpected end of stream inside a pkt-line: got 3 of 4 bytes"),
    );
    check(
        b"0009do",
        &[],
        Err("unexpected end of stream inside a pkt-line: got 6 of 9 bytes"),
    );
    check(
        b"0005",
        &[],
        Err("unexpected end of stream inside a pkt-line: got 4 of 5 bytes"),
    );
    check(
        b"0000003",
        &[Flush],
        Err("unexpected end of stream inside a pkt-line: got 3 of 4 bytes"),
    );
    check(
        b"00000003",
        &[Flush],
        Err("invalid pkt-line length 0003: reserved"),
    );
    check(
        b"0000ffff",
        &[Flush],
        Err("pkt-line length 65535 exceeds the maximum of 65520"),
    );
    check(
        b"0005aPACK",
        &[Data(b"a")],
        Err(r#"invalid pkt-line length "PACK": expected four hexadecimal digits"#),
    );
}

#[test]
fn reader_reads_exactly_one_packet_at_a_time() -> Result<(), ReadError> {
    let input = b"0009done\n0000PACK...";
    let mut reader = PacketReader::new(&input[..]);
    assert_eq!(reader.read_packet()?, Some(Packet::Data(b"done\n")));
    assert_eq!(reader.read_packet()?, Some(Packet::Flush));
    assert_eq!(reader.into_inner(), b"PACK...");
    Ok(())
}

#[test]
fn reader_wraps_io_errors() {
    struct Failing;
    impl io::Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::ConnectionReset.into())
        }
    }
    let mut reader = PacketReader::new(Failing);
    match reader.read_packet() {
        Err(ReadError::Io(error)) => assert_eq!(error.kind(), io::ErrorKind::ConnectionReset),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn writer_table() {
    #[track_caller]
    fn check(
        write: impl FnOnce(&mut PacketWriter<Vec<u8>>) -> Result<(), WriteError>,
        expected: &[u8],
    ) {
        let mut writer = PacketWriter::new(Vec::new());
        write(&mut writer).unwrap();
        assert_eq!(writer.into_inner().as_bstr(), expected.as_bstr());
    }

    check(|writer| writer.write_data(b"abc"), b"0007abc");
    check(|writer| writer.write_data(b""), b"0004");
    check(|writer| writer.write_text("version 2"), b"000eversion 2\n");
    check(
        |writer| writer.write_text("version 2\n"),
        b"000eversion 2\n",
    );
    check(|writer| writer.write_text(""), b"0005\n");
    check(|writer| writer.write_text(b"\xff".as_bstr()), b"0006\xff\n");
    check(|writer| Ok(writer.flush_pkt()?), b"0000");
    check(|writer| Ok(writer.delim()?), b"0001");
    check(|writer| Ok(writer.response_end()?), b"0002");
    check(
        |writer| Ok(writer.error("not our ref")?),
        b"0014ERR not our ref\n",
    );
    check(
        |writer| Ok(writer.error("not our ref\n")?),
        b"0014ERR not our ref\n",
    );
    check(|writer| writer.write_packet(Packet::Delimiter), b"0001");
    check(
        |writer| writer.write_packet(Packet::Data(b"x\n")),
        b"0006x\n",
    );
}

#[test]
fn writer_rejects_oversized_payloads_without_writing() {
    let mut writer = PacketWriter::new(Vec::new());
    writer.write_data(&[b'x'; MAX_DATA_LENGTH]).unwrap();
    assert_eq!(writer.get_ref().len(), MAX_PACKET_LENGTH);
    assert_eq!(&writer.get_ref()[..4], b"fff0");

    let mut writer = PacketWriter::new(Vec::new());
    let too_long = [b'x'; MAX_DATA_LENGTH + 1];
    assert!(matches!(
        writer.write_data(&too_long),
        Err(WriteError::Encode(EncodeError::DataTooLong {
            length: 65517
        }))
    ));
    assert!(matches!(
        writer.write_text(&too_long[..MAX_DATA_LENGTH]),
        Err(WriteError::Encode(EncodeError::DataTooLong {
            length: 65517
        }))
    ));
    assert!(writer.get_ref().is_empty());
    assert_eq!(
        EncodeError::DataTooLong { length: 65517 }.to_string(),
        "pkt-line payload of 65517 bytes exceeds the maximum of 65516"
    );
}

#[test]
fn error_packets_are_cut_at_a_character_boundary() -> Result<(), DecodeError> {
    // Room for 65511 bytes of message: an odd number, which splits a two-byte character.
    let message = "é".repeat(MAX_DATA_LENGTH);
    let mut out = Vec::new();
    encode_error(&message, &mut out);
    let Decoded::Complete { packet, consumed } = decode(&out)? else {
        panic!("incomplete")
    };
    assert_eq!(consumed, out.len());
    let text = packet.as_text().unwrap().to_str().unwrap();
    assert_eq!(text, format!("ERR {}", "é".repeat(65510 / 2)));

    let message = "x".repeat(MAX_DATA_LENGTH);
    let mut out = Vec::new();
    encode_error(&message, &mut out);
    assert_eq!(out.len(), MAX_PACKET_LENGTH);
    Ok(())
}

#[test]
fn excerpts_are_quoted_and_cut_short() {
    assert_eq!(Excerpt(b"a\tb").to_string(), r#""a\tb""#);
    assert_eq!(
        Excerpt(&[b'x'; 80]).to_string(),
        format!("\"{}\"", "x".repeat(80))
    );
    assert_eq!(
        Excerpt(&[b'x'; 81]).to_string(),
        format!("\"{}\"...", "x".repeat(80))
    );
}

/// Arbitrary packets, data packets of any length up to the maximum with the edges favoured.
pub(crate) fn arbitrary_packet() -> impl Strategy<Value = OwnedPacket> {
    let fill = |(length, seed): (usize, u8)| {
        (0..length)
            .map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>()
    };
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(OwnedPacket::Data),
        1 => (0..=MAX_DATA_LENGTH, any::<u8>()).prop_map(fill).prop_map(OwnedPacket::Data),
        1 => (MAX_DATA_LENGTH - 8..=MAX_DATA_LENGTH, any::<u8>())
            .prop_map(fill)
            .prop_map(OwnedPacket::Data),
        1 => Just(OwnedPacket::Flush),
        1 => Just(OwnedPacket::Delimiter),
        1 => Just(OwnedPacket::ResponseEnd),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn written_packets_read_back_identically(
        packets in proptest::collection::vec(arbitrary_packet(), 0..12),
        chunk in 1..70_000usize,
    ) {
        let mut writer = PacketWriter::new(Vec::new());
        for packet in &packets {
            writer.write_packet(packet.as_packet()).unwrap();
        }
        let bytes = writer.into_inner();
        prop_assert_eq!(bytes.len(), packets.iter().map(|packet| packet.as_packet().encoded_length()).sum::<usize>());

        let mut reader = PacketReader::new(TrickleReader { data: &bytes, chunk, interrupt_next: false });
        for packet in &packets {
            let read = reader.read_packet().unwrap().map(OwnedPacket::from);
            prop_assert_eq!(read.as_ref(), Some(packet));
        }
        prop_assert!(reader.read_packet().unwrap().is_none());

        // The sans-IO decoder agrees, and reports exactly what a cut-short packet needs.
        let mut rest = &bytes[..];
        for packet in &packets {
            let length = packet.as_packet().encoded_length();
            let cut = chunk % length;
            let needed = if cut < 4 { 4 - cut } else { length - cut };
            prop_assert_eq!(decode(&rest[..cut]), Ok(Decoded::Incomplete { needed }));
            prop_assert_eq!(decode(rest), Ok(Decoded::Complete { packet: packet.as_packet(), consumed: length }));
            rest = &rest[length..];
        }
    }

    #[test]
    fn encoding_agrees_with_gix_packetline(packet in arbitrary_packet()) {
        let mut ours = Vec::new();
        encode(packet.as_packet(), &mut ours).unwrap();
        let theirs = match packet.as_packet() {
            // gix-packetline rejects empty data packets, which git accepts.
            Packet::Data([]) => return Ok(()),
            Packet::Data(data) => gix_packetline::PacketLineRef::Data(data),
            Packet::Flush => gix_packetline::PacketLineRef::Flush,
            Packet::Delimiter => gix_packetline::PacketLineRef::Delimiter,
            Packet::ResponseEnd => gix_packetline::PacketLineRef::ResponseEnd,
        };
        let mut expected = Vec::new();
        gix_packetline::blocking_io::encode::write_packet_line(&theirs, &mut expected).unwrap();
        prop_assert_eq!(&ours, &expected);
        let decoded = gix_packetline::decode::all_at_once(&ours).unwrap();
        prop_assert_eq!(decoded, theirs);
    }

    #[test]
    fn every_length_prefix_decodes_like_gix_packetline(prefix in proptest::array::uniform4(prop_oneof![
        Just(b'0'), Just(b'f'), Just(b'F'), Just(b'3'), Just(b'g'), any::<u8>()
    ])) {
        let ours = decode(&prefix);
        let theirs = gix_packetline::decode::streaming(&prefix);
        match (&ours, &theirs) {
            (Ok(Decoded::Complete { packet, consumed: 4 }), Ok(gix_packetline::decode::Stream::Complete { line, bytes_consumed: 4 })) => {
                prop_assert_eq!(packet.kind_name(), match line {
                    gix_packetline::PacketLineRef::Flush => "flush-pkt",
                    gix_packetline::PacketLineRef::Delimiter => "delim-pkt",
                    gix_packetline::PacketLineRef::ResponseEnd => "response-end-pkt",
                    gix_packetline::PacketLineRef::Data(_) => "data",
                });
            }
            (Ok(Decoded::Incomplete { needed }), Ok(gix_packetline::decode::Stream::Incomplete { bytes_needed })) => {
                prop_assert_eq!(needed, bytes_needed);
            }
            (Err(_), Err(_)) => {}
            // The one deliberate difference: `0004`, an empty data packet.
            (Ok(Decoded::Complete { packet: Packet::Data(b""), .. }), Err(_)) => prop_assert_eq!(&prefix, b"0004"),
            _ => prop_assert!(false, "{:?}: ours {:?}, gix-packetline {:?}", prefix.as_bstr(), ours, theirs.is_ok()),
        }
    }
}

#[test]
fn write_errors_convert_to_io_errors() {
    let error = io::Error::from(WriteError::Encode(EncodeError::DataTooLong {
        length: 65517,
    }));
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(
        error.to_string(),
        "pkt-line payload of 65517 bytes exceeds the maximum of 65516"
    );

    let error = io::Error::from(WriteError::Io(io::ErrorKind::BrokenPipe.into()));
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
}
