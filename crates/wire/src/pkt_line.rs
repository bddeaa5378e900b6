//! The pkt-line framing every git protocol is built on.
//!
//! A pkt-line is a four-digit hexadecimal length, counting itself, followed by that many
//! bytes minus four of payload. Three lengths are special and carry no payload:
//!
//! | bytes  | packet                              |
//! |--------|-------------------------------------|
//! | `0000` | [`Packet::Flush`] (flush-pkt)       |
//! | `0001` | [`Packet::Delimiter`] (delim-pkt)   |
//! | `0002` | [`Packet::ResponseEnd`]             |
//! | `0003` | reserved, always an error           |
//! | `0004` | an empty [`Packet::Data`]           |
//!
//! The largest packet is [`MAX_PACKET_LENGTH`] (65520) bytes, so a payload holds at most
//! [`MAX_DATA_LENGTH`] (65516) bytes, as in git's `pkt-line.c`.
//!
//! * [`decode`] is the sans-IO decoder: it reports a complete packet and how many bytes it
//!   used, or how many more bytes it needs.
//! * [`PacketReader`] reads packets from any [`Read`], one at a time, into a reused buffer.
//! * [`PacketWriter`] and the `encode_*` functions write packets.

use std::{
    fmt,
    io::{self, Read, Write},
};

use bstr::{BStr, ByteSlice};

/// Length of the hexadecimal length prefix that starts every pkt-line.
pub const LENGTH_PREFIX_LENGTH: usize = 4;

/// The largest pkt-line, length prefix included (`LARGE_PACKET_MAX` in git).
pub const MAX_PACKET_LENGTH: usize = 65520;

/// The largest payload of a data pkt-line: [`MAX_PACKET_LENGTH`] minus the length prefix.
pub const MAX_DATA_LENGTH: usize = MAX_PACKET_LENGTH - LENGTH_PREFIX_LENGTH;

/// The prefix git puts in front of an error message sent as a pkt-line.
pub const ERROR_PREFIX: &[u8] = b"ERR ";

/// One pkt-line, borrowing its payload.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Packet<'a> {
    /// A data packet with its payload, trailing LF included (see [`Packet::as_text`]).
    Data(&'a [u8]),
    /// `0000`, the flush-pkt: ends a message or a section.
    Flush,
    /// `0001`, the delim-pkt: separates sections of a protocol v2 message.
    Delimiter,
    /// `0002`, the response-end-pkt: ends a protocol v2 response on stateless transports.
    ResponseEnd,
}

impl<'a> Packet<'a> {
    /// The payload of a data packet, or `None` for the special packets.
    pub fn as_data(&self) -> Option<&'a [u8]> {
        match self {
            Packet::Data(data) => Some(data),
            Packet::Flush | Packet::Delimiter | Packet::ResponseEnd => None,
        }
    }

    /// The payload of a data packet without one trailing LF, or `None` for the special packets.
    ///
    /// git terminates text lines with LF but does not require it, so readers strip it when
    /// present.
    pub fn as_text(&self) -> Option<&'a BStr> {
        self.as_data()
            .map(|data| strip_one_line_feed(data).as_bstr())
    }

    /// How many bytes this packet takes on the wire, length prefix included.
    pub fn encoded_length(&self) -> usize {
        LENGTH_PREFIX_LENGTH + self.as_data().map_or(0, <[u8]>::len)
    }

    /// The name git's documentation gives this kind of packet: `data`, `flush-pkt`,
    /// `delim-pkt` or `response-end-pkt`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Packet::Data(_) => "data",
            Packet::Flush => "flush-pkt",
            Packet::Delimiter => "delim-pkt",
            Packet::ResponseEnd => "response-end-pkt",
        }
    }
}

impl fmt::Debug for Packet<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Packet::Data(data) => formatter
                .debug_tuple("Data")
                .field(&data.as_bstr())
                .finish(),
            Packet::Flush => formatter.write_str("Flush"),
            Packet::Delimiter => formatter.write_str("Delimiter"),
            Packet::ResponseEnd => formatter.write_str("ResponseEnd"),
        }
    }
}

/// Removes one trailing LF, if there is one.
pub(crate) fn strip_one_line_feed(data: &[u8]) -> &[u8] {
    data.strip_suffix(b"\n").unwrap_or(data)
}

/// What [`decode`] found at the start of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole packet starts the input.
    Complete {
        /// The packet, borrowing its payload from the input.
        packet: Packet<'a>,
        /// How many bytes of the input the packet used; the next packet starts there.
        consumed: usize,
    },
    /// The input ends inside a packet.
    Incomplete {
        /// The least number of bytes to add to the input before decoding again. It is exact:
        /// the length prefix is complete, or it is the rest of the length prefix.
        needed: usize,
    },
}

/// A length prefix that is not a valid pkt-line length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The length prefix holds something other than four hexadecimal digits.
    #[error("invalid pkt-line length {:?}: expected four hexadecimal digits", prefix.as_bstr())]
    NonHexLength {
        /// The four bytes found where the length should be.
        prefix: [u8; LENGTH_PREFIX_LENGTH],
    },
    /// The length is larger than [`MAX_PACKET_LENGTH`].
    #[error("pkt-line length {length} exceeds the maximum of {MAX_PACKET_LENGTH}")]
    LengthTooLarge {
        /// The decoded length.
        length: usize,
    },
    /// The length is reserved: `0003` is neither a special packet nor long enough to hold
    /// its own length prefix.
    #[error("invalid pkt-line length {length:04x}: reserved")]
    ReservedLength {
        /// The decoded length.
        length: usize,
    },
}

/// What a length prefix announces.
enum Header {
    Flush,
    Delimiter,
    ResponseEnd,
    Data { payload_length: usize },
}

fn decode_length_prefix(prefix: [u8; LENGTH_PREFIX_LENGTH]) -> Result<Header, DecodeError> {
    let mut length = 0;
    for byte in prefix {
        let digit = char::from(byte)
            .to_digit(16)
            .ok_or(DecodeError::NonHexLength { prefix })?;
        length = length * 16 + digit as usize;
    }
    match length {
        0 => Ok(Header::Flush),
        1 => Ok(Header::Delimiter),
        2 => Ok(Header::ResponseEnd),
        3 => Err(DecodeError::ReservedLength { length }),
        length if length > MAX_PACKET_LENGTH => Err(DecodeError::LengthTooLarge { length }),
        length => Ok(Header::Data {
            payload_length: length - LENGTH_PREFIX_LENGTH,
        }),
    }
}

/// Decodes the packet at the start of `buffer`, without doing any I/O.
///
/// Invalid length prefixes are reported as soon as all four digits are present, even if the
/// payload is not.
///
/// ```
/// use packgate_wire::pkt_line::{decode, Decoded, Packet};
///
/// assert_eq!(
///     decode(b"0009done\n0000")?,
///     Decoded::Complete { packet: Packet::Data(b"done\n"), consumed: 9 }
/// );
/// assert_eq!(decode(b"0009do")?, Decoded::Incomplete { needed: 3 });
/// # Ok::<(), packgate_wire::pkt_line::DecodeError>(())
/// ```
pub fn decode(buffer: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let Some((prefix, rest)) = buffer.split_first_chunk::<LENGTH_PREFIX_LENGTH>() else {
        return Ok(Decoded::Incomplete {
            needed: LENGTH_PREFIX_LENGTH - buffer.len(),
        });
    };
    let packet = match decode_length_prefix(*prefix)? {
        Header::Flush => Packet::Flush,
        Header::Delimiter => Packet::Delimiter,
        Header::ResponseEnd => Packet::ResponseEnd,
        Header::Data { payload_length } => match rest.get(..payload_length) {
            Some(payload) => Packet::Data(payload),
            None => {
                return Ok(Decoded::Incomplete {
                    needed: payload_length - rest.len(),
                })
            }
        },
    };
    Ok(Decoded::Complete {
        packet,
        consumed: packet.encoded_length(),
    })
}

/// An error of [`PacketReader::read_packet`].
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream holds an invalid length prefix.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The stream ended inside a packet.
    #[error("unexpected end of stream inside a pkt-line: got {received} of {expected} bytes")]
    UnexpectedEof {
        /// The length of the packet, or of its length prefix if that was cut short.
        expected: usize,
        /// How many bytes of it arrived.
        received: usize,
    },
    /// Reading from the underlying stream failed.
    #[error("failed to read a pkt-line")]
    Io(#[from] io::Error),
}

/// Reads pkt-lines from a blocking stream, one at a time.
///
/// It reads exactly the bytes of each packet and never ahead, so after any packet the stream
/// can be handed to another reader (for example for the pack that follows a push's commands).
/// Wrap an unbuffered stream in a [`std::io::BufReader`] to save system calls.
#[derive(Debug)]
pub struct PacketReader<R> {
    inner: R,
    buffer: Vec<u8>,
}

impl<R: Read> PacketReader<R> {
    /// Reads packets from `inner`.
    pub fn new(inner: R) -> Self {
        PacketReader {
            inner,
            buffer: Vec::new(),
        }
    }

    /// Reads the next packet, which borrows the reader's buffer until the next call.
    ///
    /// Returns `Ok(None)` if the stream ends cleanly between two packets, and
    /// [`ReadError::UnexpectedEof`] if it ends inside one.
    pub fn read_packet(&mut self) -> Result<Option<Packet<'_>>, ReadError> {
        let mut prefix = [0; LENGTH_PREFIX_LENGTH];
        let received = read_until_full(&mut self.inner, &mut prefix)?;
        if received == 0 {
            tracing::trace!("pkt-line < end of stream");
            return Ok(None);
        }
        if received < LENGTH_PREFIX_LENGTH {
            return Err(ReadError::UnexpectedEof {
                expected: LENGTH_PREFIX_LENGTH,
                received,
            });
        }
        let packet = match decode_length_prefix(prefix)? {
            Header::Flush => Packet::Flush,
            Header::Delimiter => Packet::Delimiter,
            Header::ResponseEnd => Packet::ResponseEnd,
            Header::Data { payload_length } => {
                self.buffer.resize(payload_length, 0);
                let received = read_until_full(&mut self.inner, &mut self.buffer)?;
                if received < payload_length {
                    return Err(ReadError::UnexpectedEof {
                        expected: LENGTH_PREFIX_LENGTH + payload_length,
                        received: LENGTH_PREFIX_LENGTH + received,
                    });
                }
                Packet::Data(&self.buffer)
            }
        };
        tracing::trace!(packet = %Summary(packet), "pkt-line <");
        Ok(Some(packet))
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The underlying stream. Reading from it directly skips bytes this reader will not see.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The underlying stream, positioned right after the last packet read.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// Reads until `buffer` is full or the stream ends, returning how many bytes were read.
fn read_until_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// A payload too long for one pkt-line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The payload is longer than [`MAX_DATA_LENGTH`].
    #[error("pkt-line payload of {length} bytes exceeds the maximum of {MAX_DATA_LENGTH}")]
    DataTooLong {
        /// The payload's length.
        length: usize,
    },
}

/// Appends the length prefix of a packet of `packet_length` bytes, which the caller has
/// checked against [`MAX_PACKET_LENGTH`].
pub(crate) fn push_length_prefix(packet_length: usize, out: &mut Vec<u8>) {
    const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";
    debug_assert!(packet_length <= MAX_PACKET_LENGTH);
    for shift in [12, 8, 4, 0] {
        out.push(HEX_DIGITS[(packet_length >> shift) & 0xf]);
    }
}

/// Appends one data packet whose payload is `parts` concatenated, or leaves `out` alone if
/// the payload is too long.
fn encode_data_parts(parts: &[&[u8]], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let length = parts.iter().map(|part| part.len()).sum();
    if length > MAX_DATA_LENGTH {
        return Err(EncodeError::DataTooLong { length });
    }
    out.reserve(LENGTH_PREFIX_LENGTH + length);
    push_length_prefix(LENGTH_PREFIX_LENGTH + length, out);
    for part in parts {
        out.extend_from_slice(part);
    }
    Ok(())
}

/// Appends `packet` to `out`, or leaves `out` alone if its payload is too long.
pub fn encode(packet: Packet<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match packet {
        Packet::Data(data) => encode_data(data, out),
        Packet::Flush => {
            encode_flush(out);
            Ok(())
        }
        Packet::Delimiter => {
            encode_delimiter(out);
            Ok(())
        }
        Packet::ResponseEnd => {
            encode_response_end(out);
            Ok(())
        }
    }
}

/// Appends a data packet carrying `data` verbatim, or leaves `out` alone if `data` is longer
/// than [`MAX_DATA_LENGTH`].
pub fn encode_data(data: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_data_parts(&[data], out)
}

/// Appends a data packet carrying `text` and a LF unless `text` already ends with one, or
/// leaves `out` alone if that is longer than [`MAX_DATA_LENGTH`].
pub fn encode_text(text: impl AsRef<[u8]>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let text = text.as_ref();
    let line_feed: &[u8] = if text.ends_with(b"\n") { b"" } else { b"\n" };
    encode_data_parts(&[text, line_feed], out)
}

/// Appends an `ERR <message>` packet, ending in a LF, as git sends it to report a fatal error
/// to the client.
///
/// Error reports must not fail, so a message too long for one packet is cut short, at a UTF-8
/// character boundary if it is UTF-8.
pub fn encode_error(message: impl AsRef<[u8]>, out: &mut Vec<u8>) {
    let message = strip_one_line_feed(message.as_ref());
    let room = MAX_DATA_LENGTH - ERROR_PREFIX.len() - 1;
    let mut end = message.len().min(room);
    // A UTF-8 character has at most three continuation bytes; invalid UTF-8 is cut anywhere.
    let earliest_end = end.saturating_sub(3);
    while end > earliest_end && end < message.len() && is_utf8_continuation(message[end]) {
        end -= 1;
    }
    // Cannot fail: the payload is at most `MAX_DATA_LENGTH` bytes.
    let _ = encode_data_parts(&[ERROR_PREFIX, &message[..end], b"\n"], out);
}

fn is_utf8_continuation(byte: u8) -> bool {
    byte & 0b1100_0000 == 0b1000_0000
}

/// Appends a flush-pkt, `0000`.
pub fn encode_flush(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0000");
}

/// Appends a delim-pkt, `0001`.
pub fn encode_delimiter(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0001");
}

/// Appends a response-end-pkt, `0002`.
pub fn encode_response_end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0002");
}

/// An error of [`PacketWriter`].
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The payload does not fit in one packet; nothing was written.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Writing to the underlying stream failed.
    #[error("failed to write a pkt-line")]
    Io(#[from] io::Error),
}

impl From<WriteError> for io::Error {
    /// The I/O error itself, or an [`io::ErrorKind::InvalidInput`] error for a payload too
    /// long, so that code writing to a stream can report everything as [`io::Error`].
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Encode(error) => io::Error::new(io::ErrorKind::InvalidInput, error),
            WriteError::Io(error) => error,
        }
    }
}

/// Writes pkt-lines to a blocking stream.
///
/// Each packet goes to the stream in one `write_all`; the writer keeps nothing back, so
/// [`std::io::Write::flush`] on [`PacketWriter::get_mut`] is all a buffered stream needs.
#[derive(Debug)]
pub struct PacketWriter<W> {
    inner: W,
    buffer: Vec<u8>,
}

impl<W: Write> PacketWriter<W> {
    /// Writes packets to `inner`.
    pub fn new(inner: W) -> Self {
        PacketWriter {
            inner,
            buffer: Vec::new(),
        }
    }

    /// Writes `packet`; fails without writing if its payload is too long.
    pub fn write_packet(&mut self, packet: Packet<'_>) -> Result<(), WriteError> {
        self.buffer.clear();
        encode(packet, &mut self.buffer)?;
        Ok(self.send_buffer()?)
    }

    /// Writes a data packet carrying `data` verbatim; fails without writing if `data` is
    /// longer than [`MAX_DATA_LENGTH`].
    pub fn write_data(&mut self, data: &[u8]) -> Result<(), WriteError> {
        self.write_packet(Packet::Data(data))
    }

    /// Writes a data packet carrying `text` and a LF unless `text` already ends with one;
    /// fails without writing if that is longer than [`MAX_DATA_LENGTH`].
    pub fn write_text(&mut self, text: impl AsRef<[u8]>) -> Result<(), WriteError> {
        self.buffer.clear();
        encode_text(text, &mut self.buffer)?;
        Ok(self.send_buffer()?)
    }

    /// Writes a flush-pkt, `0000`.
    pub fn flush_pkt(&mut self) -> io::Result<()> {
        self.buffer.clear();
        encode_flush(&mut self.buffer);
        self.send_buffer()
    }

    /// Writes a delim-pkt, `0001`.
    pub fn delim(&mut self) -> io::Result<()> {
        self.buffer.clear();
        encode_delimiter(&mut self.buffer);
        self.send_buffer()
    }

    /// Writes a response-end-pkt, `0002`.
    pub fn response_end(&mut self) -> io::Result<()> {
        self.buffer.clear();
        encode_response_end(&mut self.buffer);
        self.send_buffer()
    }

    /// Writes an `ERR <message>` packet ending in a LF, cut short if it does not fit (see
    /// [`encode_error`]).
    pub fn error(&mut self, message: impl AsRef<[u8]>) -> io::Result<()> {
        self.buffer.clear();
        encode_error(message, &mut self.buffer);
        self.send_buffer()
    }

    /// Writes the one packet encoded in the buffer.
    fn send_buffer(&mut self) -> io::Result<()> {
        if tracing::enabled!(tracing::Level::TRACE) {
            if let Ok(Decoded::Complete { packet, .. }) = decode(&self.buffer) {
                tracing::trace!(packet = %Summary(packet), "pkt-line >");
            }
        }
        self.inner.write_all(&self.buffer)
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The underlying stream, for example to flush it at the end of a response.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The underlying stream.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// How many bytes of a line [`Excerpt`] shows.
const EXCERPT_LENGTH: usize = 80;

/// Shows the start of a client's line in an error message or trace: quoted and escaped,
/// and cut short with `...` after [`EXCERPT_LENGTH`] bytes.
pub(crate) struct Excerpt<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.get(..EXCERPT_LENGTH) {
            Some(start) if start.len() < self.0.len() => {
                write!(formatter, "{:?}...", start.as_bstr())
            }
            _ => write!(formatter, "{:?}", self.0.as_bstr()),
        }
    }
}

/// Shows a packet in traces the way `GIT_TRACE_PACKET` does: data as an excerpt, special
/// packets by their wire form.
struct Summary<'a>(Packet<'a>);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Packet::Data(data) => Excerpt(data).fmt(formatter),
            Packet::Flush => formatter.write_str("0000"),
            Packet::Delimiter => formatter.write_str("0001"),
            Packet::ResponseEnd => formatter.write_str("0002"),
        }
    }
}

#[cfg(test)]
mod tests;
