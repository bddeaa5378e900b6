use std::{
    io::{self, Write},
    time::{Duration, Instant},
};

use packgate_wire::{
    pkt_line::{decode, Decoded, Packet},
    sideband::{demux, Band, SidebandMode, SidebandWriter},
};

use super::*;

/// The packets of `stream`, which must be whole pkt-lines and nothing else.
fn packets(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        match decode(rest) {
            Ok(Decoded::Complete { packet, consumed }) => {
                out.push(match packet {
                    Packet::Data(data) => data.to_vec(),
                    Packet::Flush => b"0000".to_vec(),
                    other => panic!("unexpected {}", other.kind_name()),
                });
                rest = &rest[consumed..];
            }
            other => panic!(
                "not a pkt-line stream at {}: {other:?}",
                stream.len() - rest.len()
            ),
        }
    }
    out
}

fn keepalives(packets: &[Vec<u8>]) -> usize {
    packets.iter().filter(|p| p.as_slice() == [1]).count()
}

#[test]
fn a_slow_producer_gets_keepalives_between_whole_packets() {
    let mut out = Vec::new();
    let started = Instant::now();
    let result = run(&mut out, Duration::from_millis(5), |writer| {
        let mut sideband = SidebandWriter::new(writer, SidebandMode::SideBand64k);
        std::thread::sleep(Duration::from_millis(60));
        sideband.progress(b"Enumerating objects: 3, done.\n")?;
        for chunk in [&b"PACK"[..], b"\0\0\0\x02"] {
            sideband.write_all(chunk)?;
            std::thread::sleep(Duration::from_millis(30));
        }
        sideband.write_all(b"\0\0\0\x03")?;
        sideband.flush()?;
        Ok::<_, io::Error>(7)
    });
    assert_eq!(result.unwrap(), 7);
    assert!(started.elapsed() >= Duration::from_millis(120));
    let packets = packets(&out);
    // Every silence of 60 or 30 ms had room for several keepalives.
    assert!(keepalives(&packets) >= 4, "{packets:?}");
    assert_eq!(packets[0], [1], "the silence before the first packet");
    assert_eq!(
        packets.last().map(Vec::as_slice),
        Some(&[1, 0, 0, 0, 3][..]),
        "no keepalive once the work has returned"
    );
    let bands = demux(&out, SidebandMode::SideBand64k).unwrap();
    assert_eq!(bands.data, b"PACK\0\0\0\x02\0\0\0\x03");
    assert_eq!(bands.progress, b"Enumerating objects: 3, done.\n");
    assert_eq!(bands.consumed, out.len());
}

#[test]
fn a_packet_written_in_pieces_is_never_split() {
    let mut out = Vec::new();
    run(&mut out, Duration::from_millis(2), |writer| {
        // A progress packet, its prefix, band and payload written apart with pauses.
        let packet = b"000e\x02progress\n";
        for piece in [&packet[..2], &packet[2..4], &packet[4..5], &packet[5..]] {
            writer.write_all(piece)?;
            std::thread::sleep(Duration::from_millis(20));
        }
        writer.write_all(b"0000")?;
        std::thread::sleep(Duration::from_millis(20));
        writer.write_all(b"0009\x01PACK")
    })
    .unwrap();
    let packets = packets(&out);
    let without_keepalives: Vec<_> = packets.iter().filter(|p| p.as_slice() != [1]).collect();
    assert_eq!(
        without_keepalives,
        [
            &b"\x02progress\n".to_vec(),
            &b"0000".to_vec(),
            &b"\x01PACK".to_vec()
        ]
    );
    // The pauses inside the progress packet were ten intervals long, yet the packets are
    // intact; the pauses after it, at packet boundaries, got keepalives.
    let progress = packets.iter().position(|p| p[0] == 2).unwrap();
    assert!(keepalives(&packets[progress..]) >= 1, "{packets:?}");
}

#[test]
fn a_busy_producer_gets_none() {
    let mut out = Vec::new();
    run(&mut out, Duration::from_secs(60), |writer| {
        let mut sideband = SidebandWriter::new(writer, SidebandMode::SideBand64k);
        sideband.write_band(Band::Data, &[7; 200_000])
    })
    .unwrap();
    let packets = packets(&out);
    assert_eq!(keepalives(&packets), 0);
    assert_eq!(packets.len(), 4);
}

/// An output that takes `accept` bytes, then fails.
struct Failing {
    accept: usize,
    written: Vec<u8>,
    flushed: usize,
}

impl Write for Failing {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.accept == 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "client too slow"));
        }
        let n = data.len().min(self.accept);
        self.accept -= n;
        self.written.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flushed += 1;
        Ok(())
    }
}

#[test]
fn a_failed_output_fails_the_next_writes_with_its_error_kind() {
    let mut out = Failing {
        accept: 9,
        written: Vec::new(),
        flushed: 0,
    };
    let errors = run(&mut out, Duration::from_millis(1), |writer| {
        let mut sideband = SidebandWriter::new(writer, SidebandMode::SideBand64k);
        // The output fails after 9 bytes: data or keepalives in the silences between the
        // writes, in whatever order a loaded machine schedules them. Some write finds out.
        let deadline = Instant::now() + Duration::from_secs(10);
        let first = loop {
            std::thread::sleep(Duration::from_millis(5));
            match sideband.write_all(b"PACK") {
                Err(err) => break err,
                Ok(()) => assert!(Instant::now() < deadline, "writes go on succeeding"),
            }
        };
        let second = sideband.flush().unwrap_err();
        Ok::<_, io::Error>((first.kind(), second.kind()))
    })
    .unwrap();
    assert_eq!(errors, (io::ErrorKind::TimedOut, io::ErrorKind::TimedOut));
    // Nothing after the failure: the output took its 9 bytes (a keepalive may have come
    // first), and the pump stopped.
    assert_eq!(out.written.len(), 9);
}

#[test]
fn output_is_flushed_when_the_work_ends() {
    let mut out = Failing {
        accept: usize::MAX,
        written: Vec::new(),
        flushed: 0,
    };
    run(&mut out, Duration::from_secs(60), |writer| {
        writer.write_all(b"0000")
    })
    .unwrap();
    assert_eq!(out.written, b"0000");
    assert_eq!(out.flushed, 1);
}

#[test]
fn a_panic_in_the_work_reaches_the_caller() {
    let mut out = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(&mut out, Duration::from_millis(1), |_writer| -> () {
            panic!("work failed")
        })
    }));
    let message = result.unwrap_err();
    assert_eq!(message.downcast_ref::<&str>(), Some(&"work failed"));
}
