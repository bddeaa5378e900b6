use proptest::prelude::*;

use super::*;

/// The lengths of the packets `stream` is made of.
fn packet_lengths(stream: &[u8]) -> Vec<usize> {
    let mut lengths = Vec::new();
    let mut rest = stream;
    while let Ok(Decoded::Complete { consumed, .. }) = decode(rest) {
        lengths.push(consumed);
        rest = &rest[consumed..];
    }
    assert!(rest.is_empty(), "trailing bytes {rest:?}");
    lengths
}

#[test]
fn modes() {
    assert_eq!(SidebandMode::default(), SidebandMode::SideBand64k);
    assert_eq!(SidebandMode::SideBand64k.max_packet_length(), 65520);
    assert_eq!(SidebandMode::SideBand64k.max_payload_length(), 65515);
    assert_eq!(SidebandMode::SideBand.max_packet_length(), 1000);
    assert_eq!(SidebandMode::SideBand.max_payload_length(), 995);
}

#[test]
fn bands() {
    for band in [Band::Data, Band::Progress, Band::Error] {
        assert_eq!(Band::from_byte(band.as_byte()), Some(band));
    }
    assert_eq!(Band::Data.as_byte(), 1);
    assert_eq!(Band::Progress.as_byte(), 2);
    assert_eq!(Band::Error.as_byte(), 3);
    assert_eq!(Band::from_byte(0), None);
    assert_eq!(Band::from_byte(4), None);
}

#[test]
fn data_is_split_at_the_largest_payload() {
    #[track_caller]
    fn check(mode: SidebandMode, length: usize, expected_lengths: &[usize]) {
        let payload: Vec<u8> = (0..length).map(|index| index as u8).collect();
        let mut writer = SidebandWriter::new(Vec::new(), mode);
        writer.write_all(&payload).unwrap();
        let stream = writer.into_inner();
        assert_eq!(
            packet_lengths(&stream),
            expected_lengths,
            "{mode:?}, {length} bytes"
        );
        assert_eq!(demux(&stream, mode).unwrap().data, payload);
    }

    check(SidebandMode::SideBand64k, 0, &[]);
    check(SidebandMode::SideBand64k, 1, &[6]);
    check(SidebandMode::SideBand64k, 65514, &[65519]);
    check(SidebandMode::SideBand64k, 65515, &[65520]);
    check(SidebandMode::SideBand64k, 65516, &[65520, 6]);
    check(SidebandMode::SideBand64k, 2 * 65515, &[65520, 65520]);
    check(SidebandMode::SideBand64k, 2 * 65515 + 1, &[65520, 65520, 6]);
    check(SidebandMode::SideBand, 995, &[1000]);
    check(SidebandMode::SideBand, 996, &[1000, 6]);
    check(SidebandMode::SideBand, 3000, &[1000, 1000, 1000, 20]);
}

#[test]
fn write_sends_one_packet_per_call() {
    let mut writer = SidebandWriter::new(Vec::new(), SidebandMode::SideBand);
    assert_eq!(writer.write(&[7; 2000]).unwrap(), 995);
    assert_eq!(writer.write(b"").unwrap(), 0);
    assert_eq!(packet_lengths(writer.get_ref()), [1000]);
}

/// Takes at most `step` bytes per call, vectored or not, and counts its calls.
struct Trickle {
    written: Vec<u8>,
    step: usize,
    calls: usize,
}

impl Write for Trickle {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        let n = data.len().min(self.step);
        self.written.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.calls += 1;
        let mut room = self.step;
        let mut n = 0;
        for buf in bufs {
            let taken = buf.len().min(room);
            self.written.extend_from_slice(&buf[..taken]);
            (room, n) = (room - taken, n + taken);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn large_packets_are_whole_through_partial_vectored_writes() {
    let payload: Vec<u8> = (0..3 * 65515 + 17)
        .map(|index| (index % 251) as u8)
        .collect();
    for step in [1, 3, 5, 6, 4096, 65519, 65520, usize::MAX] {
        let mut writer = SidebandWriter::new(
            Trickle {
                written: Vec::new(),
                step,
                calls: 0,
            },
            SidebandMode::SideBand64k,
        );
        writer.write_all(&payload).unwrap();
        let trickle = writer.into_inner();
        assert_eq!(
            packet_lengths(&trickle.written),
            [65520, 65520, 65520, 22],
            "step {step}"
        );
        assert_eq!(
            demux(&trickle.written, SidebandMode::SideBand64k)
                .unwrap()
                .data,
            payload,
            "step {step}"
        );
        if step == usize::MAX {
            // Header and payload of each large packet in one call, the small one in another.
            assert_eq!(trickle.calls, 4);
        }
    }
}

#[test]
fn writer_table() {
    #[track_caller]
    fn check(write: impl FnOnce(&mut SidebandWriter<Vec<u8>>) -> io::Result<()>, expected: &[u8]) {
        let mut writer = SidebandWriter::new(Vec::new(), SidebandMode::SideBand64k);
        write(&mut writer).unwrap();
        assert_eq!(writer.into_inner(), expected);
    }

    check(|writer| writer.write_all(b"PACK"), b"0009\x01PACK");
    check(
        |writer| writer.progress(b"Counting\r"),
        b"000e\x02Counting\r",
    );
    check(|writer| writer.error(b"oops\n"), b"000a\x03oops\n");
    check(|writer| writer.keepalive(), b"0005\x01");
    check(|writer| writer.progress(b""), b"");
    check(|writer| writer.write_band(Band::Data, b"x"), b"0006\x01x");
    check(
        |writer| {
            writer.write_all(b"a")?;
            writer.keepalive()?;
            writer.progress(b"b")?;
            writer.flush()
        },
        b"0006\x01a0005\x010006\x02b",
    );
}

#[test]
fn demux_table() {
    #[track_caller]
    fn check(stream: &[u8], mode: SidebandMode, expected: Result<Demultiplexed, DemuxError>) {
        assert_eq!(
            demux(stream, mode),
            expected,
            "stream {:?}",
            bstr::BStr::new(stream)
        );
    }
    fn bands(data: &[u8], progress: &[u8], error: &[u8], consumed: usize) -> Demultiplexed {
        Demultiplexed {
            data: data.to_vec(),
            progress: progress.to_vec(),
            error: error.to_vec(),
            consumed,
        }
    }
    use SidebandMode::*;

    check(b"", SideBand64k, Ok(bands(b"", b"", b"", 0)));
    check(
        b"0006\x01a0006\x02b0006\x03c0006\x01d",
        SideBand64k,
        Ok(bands(b"ad", b"b", b"c", 24)),
    );
    check(b"0005\x01", SideBand64k, Ok(bands(b"", b"", b"", 5)));
    check(
        b"0006\x01a0000rest",
        SideBand64k,
        Ok(bands(b"a", b"", b"", 10)),
    );
    check(
        b"0006\x01a0003",
        SideBand64k,
        Err(DemuxError::Decode {
            offset: 6,
            source: DecodeError::ReservedLength { length: 3 },
        }),
    );
    check(
        b"0006\x01a0007\x01",
        SideBand64k,
        Err(DemuxError::Incomplete {
            offset: 6,
            needed: 2,
        }),
    );
    check(
        b"0006\x01a0004",
        SideBand64k,
        Err(DemuxError::MissingBand { offset: 6 }),
    );
    check(
        b"0006\x04a",
        SideBand64k,
        Err(DemuxError::UnknownBand { offset: 0, band: 4 }),
    );
    check(
        b"0001",
        SideBand64k,
        Err(DemuxError::UnexpectedPacket {
            offset: 0,
            kind: "delim-pkt",
        }),
    );
    check(
        b"0002",
        SideBand64k,
        Err(DemuxError::UnexpectedPacket {
            offset: 0,
            kind: "response-end-pkt",
        }),
    );

    let mut oversized = b"03e9\x01".to_vec();
    oversized.resize(1001, b'x');
    check(
        &oversized,
        SideBand,
        Err(DemuxError::PacketTooLarge {
            offset: 0,
            length: 1001,
            max: 1000,
        }),
    );
    check(
        &oversized,
        SideBand64k,
        Ok(bands(&oversized[5..], b"", b"", 1001)),
    );
}

#[test]
fn demux_error_messages() {
    assert_eq!(
        DemuxError::UnknownBand { offset: 6, band: 4 }.to_string(),
        "sideband packet at offset 6 has unknown band 4"
    );
    assert_eq!(
        DemuxError::PacketTooLarge {
            offset: 0,
            length: 1001,
            max: 1000
        }
        .to_string(),
        "sideband packet at offset 0 is 1001 bytes long, more than the 1000 bytes allowed"
    );
}

/// One call to a sideband writer.
#[derive(Debug, Clone)]
enum Operation {
    Data(Vec<u8>),
    Progress(Vec<u8>),
    Error(Vec<u8>),
    Keepalive,
}

fn arbitrary_write() -> impl Strategy<Value = Operation> {
    let payload = prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..2000),
        1 => (0..200_000usize, any::<u8>()).prop_map(|(length, seed)| vec![seed; length]),
    ];
    prop_oneof![
        4 => payload.clone().prop_map(Operation::Data),
        2 => payload.clone().prop_map(Operation::Progress),
        1 => payload.prop_map(Operation::Error),
        1 => Just(Operation::Keepalive),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn demux_recovers_what_was_written(
        writes in proptest::collection::vec(arbitrary_write(), 0..8),
        small in any::<bool>(),
    ) {
        let mode = if small { SidebandMode::SideBand } else { SidebandMode::SideBand64k };
        let mut writer = SidebandWriter::new(Vec::new(), mode);
        let mut expected = Demultiplexed::default();
        for write in &writes {
            match write {
                Operation::Data(payload) => {
                    writer.write_all(payload).unwrap();
                    expected.data.extend_from_slice(payload);
                }
                Operation::Progress(payload) => {
                    writer.progress(payload).unwrap();
                    expected.progress.extend_from_slice(payload);
                }
                Operation::Error(payload) => {
                    writer.error(payload).unwrap();
                    expected.error.extend_from_slice(payload);
                }
                Operation::Keepalive => writer.keepalive().unwrap(),
            }
        }
        let mut stream = writer.into_inner();
        expected.consumed = stream.len();
        prop_assert_eq!(demux(&stream, mode), Ok(expected.clone()));

        // A flush-pkt ends the stream; what follows is left alone.
        pkt_line::encode_flush(&mut stream);
        expected.consumed = stream.len();
        stream.extend_from_slice(b"0009done\n");
        prop_assert_eq!(demux(&stream, mode), Ok(expected));
    }
}
