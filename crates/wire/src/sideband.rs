//! Sideband multiplexing: pack data, progress and errors interleaved in one pkt-line stream.
//!
//! Each data pkt-line starts with a [`Band`] byte: 1 for the data itself (a pack), 2 for
//! progress messages the client prints, 3 for an error message that ends the response.
//! Clients ask for it with the `side-band` or `side-band-64k` capability; protocol v2 always
//! uses the 64k flavour for `fetch`'s packfile section ([`SidebandMode`]).
//!
//! [`SidebandWriter`] writes such a stream; [`demux`] splits one apart again, for tests.

use std::io::{self, Write};

pub mod keepalive;

use crate::pkt_line::{
    self, decode, push_length_prefix, DecodeError, Decoded, Packet, LENGTH_PREFIX_LENGTH,
};

/// Payloads from this size on are written without copying them into a packet buffer.
const COPY_LIMIT: usize = 4096;
/// The band a sideband packet belongs to, its first payload byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Band {
    /// Band 1: the data, usually a pack.
    Data = 1,
    /// Band 2: progress messages for the client to show, typically ending in CR or LF.
    Progress = 2,
    /// Band 3: a fatal error message; the client stops reading.
    Error = 3,
}

impl Band {
    /// The band whose number is `byte`, or `None` if there is none.
    pub fn from_byte(byte: u8) -> Option<Band> {
        match byte {
            1 => Some(Band::Data),
            2 => Some(Band::Progress),
            3 => Some(Band::Error),
            _ => None,
        }
    }

    /// This band's number, as written in front of each payload.
    pub fn as_byte(self) -> u8 {
        self as u8
    }
}

/// How large sideband packets may be, as negotiated with the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SidebandMode {
    /// The `side-band` capability: packets of at most 1000 bytes.
    SideBand,
    /// The `side-band-64k` capability, and protocol v2: packets of at most
    /// [`pkt_line::MAX_PACKET_LENGTH`] (65520) bytes.
    #[default]
    SideBand64k,
}

impl SidebandMode {
    /// The largest packet in this mode, length prefix and band byte included.
    pub const fn max_packet_length(self) -> usize {
        match self {
            SidebandMode::SideBand => 1000,
            SidebandMode::SideBand64k => pkt_line::MAX_PACKET_LENGTH,
        }
    }

    /// The largest payload of one packet in this mode, without length prefix and band byte:
    /// 995 or 65515 bytes.
    pub const fn max_payload_length(self) -> usize {
        self.max_packet_length() - LENGTH_PREFIX_LENGTH - 1
    }
}

/// Writes sideband packets to a blocking stream.
///
/// Its [`Write`] implementation sends band-1 data: each `write` sends one packet of at most
/// [`SidebandMode::max_payload_length`] bytes, so `write_all` splits large buffers. It keeps
/// nothing back: put a [`std::io::BufWriter`] with a capacity of the maximum payload in
/// front of it to send full packets from many small writes.
#[derive(Debug)]
pub struct SidebandWriter<W> {
    inner: W,
    mode: SidebandMode,
    buffer: Vec<u8>,
}

impl<W: Write> SidebandWriter<W> {
    /// Writes sideband packets sized for `mode` to `inner`.
    pub fn new(inner: W, mode: SidebandMode) -> Self {
        SidebandWriter {
            inner,
            mode,
            buffer: Vec::new(),
        }
    }

    /// The packet size this writer uses.
    pub fn mode(&self) -> SidebandMode {
        self.mode
    }

    /// Writes all of `payload` to `band`, in as many packets as it takes. An empty payload
    /// writes nothing.
    pub fn write_band(&mut self, band: Band, payload: &[u8]) -> io::Result<()> {
        for chunk in payload.chunks(self.mode.max_payload_length()) {
            self.write_packet(band, chunk)?;
        }
        Ok(())
    }

    /// Writes a progress message (band 2), such as `Counting objects: 42\r`.
    pub fn progress(&mut self, message: &[u8]) -> io::Result<()> {
        self.write_band(Band::Progress, message)
    }

    /// Writes an error message (band 3); the client reports it and stops reading.
    pub fn error(&mut self, message: &[u8]) -> io::Result<()> {
        self.write_band(Band::Error, message)
    }

    /// Writes an empty band-1 packet, `0005\x01`, which tells the client the server is still
    /// working without adding any data.
    pub fn keepalive(&mut self) -> io::Result<()> {
        self.write_packet(Band::Data, b"")
    }

    /// Writes one packet; `payload` fits in this writer's mode.
    ///
    /// A small packet is put together in a buffer and written at once; a large one (a pack's
    /// data) goes out as its header and the caller's payload in one vectored write, not copied
    /// first: a clone sends its whole pack through here.
    fn write_packet(&mut self, band: Band, payload: &[u8]) -> io::Result<()> {
        debug_assert!(payload.len() <= self.mode.max_payload_length());
        self.buffer.clear();
        push_length_prefix(LENGTH_PREFIX_LENGTH + 1 + payload.len(), &mut self.buffer);
        self.buffer.push(band.as_byte());
        if payload.len() < COPY_LIMIT {
            self.buffer.extend_from_slice(payload);
            return self.inner.write_all(&self.buffer);
        }
        let mut slices = [io::IoSlice::new(&self.buffer), io::IoSlice::new(payload)];
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match self.inner.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => io::IoSlice::advance_slices(&mut slices, written),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The underlying stream, for example to write the flush-pkt that ends the sideband
    /// stream.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The underlying stream.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for SidebandWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let length = data.len().min(self.mode.max_payload_length());
        self.write_packet(Band::Data, &data[..length])?;
        Ok(length)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The bands of a sideband stream, each concatenated, as [`demux`] returns them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Demultiplexed {
    /// Everything sent on band 1.
    pub data: Vec<u8>,
    /// Everything sent on band 2.
    pub progress: Vec<u8>,
    /// Everything sent on band 3.
    pub error: Vec<u8>,
    /// How many bytes of the input were sideband packets, the ending flush-pkt included.
    pub consumed: usize,
}

/// A stream [`demux`] could not split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemuxError {
    /// A length prefix is invalid.
    #[error("invalid sideband packet at offset {offset}")]
    Decode {
        /// Where the packet starts in the input.
        offset: usize,
        /// What is wrong with it.
        source: DecodeError,
    },
    /// The input ends inside a packet.
    #[error("sideband stream ends inside the packet at offset {offset}, {needed} bytes short")]
    Incomplete {
        /// Where the packet starts in the input.
        offset: usize,
        /// How many bytes are missing.
        needed: usize,
    },
    /// A data packet is empty, so it has no band byte.
    #[error("sideband packet at offset {offset} has no band byte")]
    MissingBand {
        /// Where the packet starts in the input.
        offset: usize,
    },
    /// A packet's band byte is not 1, 2 or 3.
    #[error("sideband packet at offset {offset} has unknown band {band}")]
    UnknownBand {
        /// Where the packet starts in the input.
        offset: usize,
        /// The band byte.
        band: u8,
    },
    /// A delim-pkt or response-end-pkt appears in the sideband stream.
    #[error("unexpected {kind} at offset {offset} in a sideband stream")]
    UnexpectedPacket {
        /// Where the packet starts in the input.
        offset: usize,
        /// Which packet it is, as [`Packet::kind_name`] calls it.
        kind: &'static str,
    },
    /// A packet is larger than the mode allows.
    #[error("sideband packet at offset {offset} is {length} bytes long, more than the {max} bytes allowed")]
    PacketTooLarge {
        /// Where the packet starts in the input.
        offset: usize,
        /// The packet's length, prefix included.
        length: usize,
        /// The largest packet the mode allows.
        max: usize,
    },
}

/// Splits a sideband stream into its bands, without doing any I/O.
///
/// It reads packets up to and including the first flush-pkt, or to the end of `stream`, and
/// checks each against `mode`'s packet size. Whatever follows the flush-pkt is left alone:
/// [`Demultiplexed::consumed`] says where it starts.
///
/// ```
/// use packgate_wire::sideband::{demux, SidebandMode, SidebandWriter};
/// use std::io::Write;
///
/// let mut writer = SidebandWriter::new(Vec::new(), SidebandMode::SideBand64k);
/// writer.progress(b"Counting objects: 1, done.\n")?;
/// writer.write_all(b"PACK")?;
/// let bands = demux(&writer.into_inner(), SidebandMode::SideBand64k)?;
/// assert_eq!(bands.data, b"PACK");
/// assert_eq!(bands.progress, b"Counting objects: 1, done.\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn demux(stream: &[u8], mode: SidebandMode) -> Result<Demultiplexed, DemuxError> {
    let mut bands = Demultiplexed::default();
    while let Some(rest) = stream.get(bands.consumed..).filter(|rest| !rest.is_empty()) {
        let offset = bands.consumed;
        let (packet, consumed) = match decode(rest) {
            Ok(Decoded::Complete { packet, consumed }) => (packet, consumed),
            Ok(Decoded::Incomplete { needed }) => {
                return Err(DemuxError::Incomplete { offset, needed })
            }
            Err(source) => return Err(DemuxError::Decode { offset, source }),
        };
        bands.consumed += consumed;
        let payload = match packet {
            Packet::Data(payload) => payload,
            Packet::Flush => break,
            Packet::Delimiter | Packet::ResponseEnd => {
                return Err(DemuxError::UnexpectedPacket {
                    offset,
                    kind: packet.kind_name(),
                })
            }
        };
        if consumed > mode.max_packet_length() {
            return Err(DemuxError::PacketTooLarge {
                offset,
                length: consumed,
                max: mode.max_packet_length(),
            });
        }
        let Some((&band, payload)) = payload.split_first() else {
            return Err(DemuxError::MissingBand { offset });
        };
        let destination = match Band::from_byte(band) {
            Some(Band::Data) => &mut bands.data,
            Some(Band::Progress) => &mut bands.progress,
            Some(Band::Error) => &mut bands.error,
            None => return Err(DemuxError::UnknownBand { offset, band }),
        };
        destination.extend_from_slice(payload);
    }
    Ok(bands)
}

#[cfg(test)]
mod tests;
