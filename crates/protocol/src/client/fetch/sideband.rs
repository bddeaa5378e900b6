//! The pack as it arrives multiplexed (`side-band-64k`): band 1 is the pack, band 2 the
//! remote's progress, band 3 its fatal error; a flush ends the stream.

use std::io::{self, BufRead, Read, Write};

use packgate_wire::pkt_line::{Packet, PacketReader};

/// Band 1's bytes as a stream; progress written out as it comes, an error kept to be told.
pub(super) struct Demultiplexer<'a> {
    packets: PacketReader<&'a mut dyn BufRead>,
    progress: &'a mut dyn Write,
    data: Vec<u8>,
    position: usize,
    ended: bool,
    /// The next progress byte starts a line (gets `remote: ` in front).
    line_start: bool,
    /// The remote's band-3 message, once it sent one.
    pub(super) remote_error: Option<String>,
}

impl<'a> Demultiplexer<'a> {
    pub(super) fn new(input: &'a mut dyn BufRead, progress: &'a mut dyn Write) -> Self {
        Demultiplexer {
            packets: PacketReader::new(input),
            progress,
            data: Vec::new(),
            position: 0,
            ended: false,
            line_start: true,
            remote_error: None,
        }
    }

    #[cfg(test)]
    /// Whether the stream's closing flush was read.
    pub(super) fn ended(&self) -> bool {
        self.ended
    }
}

impl Read for Demultiplexer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position == self.data.len() {
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            let packet = self
                .packets
                .read_packet()
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
            match packet {
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the remote end hung up during the pack",
                    ))
                }
                Some(Packet::Flush) => {
                    self.ended = true;
                    return Ok(0);
                }
                Some(Packet::Data(data)) => match data.split_first() {
                    Some((1, payload)) => {
                        self.data.clear();
                        self.data.extend_from_slice(payload);
                        self.position = 0;
                    }
                    Some((2, payload)) => {
                        // Progress is best effort: a closed terminal ends nothing.
                        let _ = write_progress(self.progress, payload, &mut self.line_start);
                    }
                    Some((3, payload)) => {
                        let message = String::from_utf8_lossy(payload).trim_end().to_owned();
                        self.remote_error = Some(message.clone());
                        return Err(io::Error::other(message));
                    }
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "a sideband packet without a valid band",
                        ))
                    }
                },
                Some(other) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected {} in the pack stream", other.kind_name()),
                    ))
                }
            }
        }
        let n = buf.len().min(self.data.len() - self.position);
        buf[..n].copy_from_slice(&self.data[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

/// Progress as git shows it: `remote: ` before every line, a line ending at LF or CR, and a
/// non-empty line padded before its ending so that a shorter line written over a longer one
/// (after CR) leaves nothing of it: the terminal's clear-to-end-of-line when standard error
/// is a terminal, else eight spaces (git's rule, from `isatty(2)` and `TERM`).
fn write_progress(out: &mut dyn Write, payload: &[u8], line_start: &mut bool) -> io::Result<()> {
    write_progress_with(out, payload, line_start, line_suffix())
}

fn write_progress_with(
    out: &mut dyn Write,
    payload: &[u8],
    line_start: &mut bool,
    suffix: &[u8],
) -> io::Result<()> {
    for piece in payload.split_inclusive(|b| *b == b'\n' || *b == b'\r') {
        if *line_start {
            out.write_all(b"remote: ")?;
        }
        match piece.split_last() {
            Some((end @ (b'\n' | b'\r'), text)) => {
                out.write_all(text)?;
                // git pads a line that has text, counting from its last start.
                if !text.is_empty() || !*line_start {
                    out.write_all(suffix)?;
                }
                out.write_all(&[*end])?;
                *line_start = true;
            }
            _ => {
                out.write_all(piece)?;
                *line_start = false;
            }
        }
    }
    out.flush()
}

/// What ends a progress line before its LF or CR (see [`write_progress`]).
fn line_suffix() -> &'static [u8] {
    static SUFFIX: std::sync::OnceLock<&'static [u8]> = std::sync::OnceLock::new();
    SUFFIX.get_or_init(|| {
        use std::io::IsTerminal as _;
        let dumb = std::env::var_os("TERM").is_none_or(|term| term == "dumb");
        if std::io::stderr().is_terminal() && !dumb {
            b"\x1b[K"
        } else {
            b"        "
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use packgate_wire::pkt_line::PacketWriter;

    fn stream(packets: &[&[u8]]) -> Vec<u8> {
        let mut writer = PacketWriter::new(Vec::new());
        for packet in packets {
            writer.write_data(packet).unwrap();
        }
        writer.flush_pkt().unwrap();
        writer.into_inner()
    }

    #[test]
    fn bands_are_separated() {
        let bytes = stream(&[b"\x01PA", b"\x02counting\n", b"\x01CK"]);
        let mut input: &[u8] = &bytes;
        let mut progress = Vec::new();
        let mut demux = Demultiplexer::new(&mut input, &mut progress);
        let mut data = Vec::new();
        demux.read_to_end(&mut data).unwrap();
        assert!(demux.ended());
        drop(demux);
        assert_eq!(data, b"PACK");
        assert_eq!(
            progress,
            format!(
                "remote: counting{}\n",
                std::str::from_utf8(line_suffix()).unwrap()
            )
            .as_bytes()
        );
    }

    #[test]
    fn band_3_is_an_error_with_the_message() {
        let bytes = stream(&[b"\x01PA", b"\x03upload-pack: not our ref\n"]);
        let mut input: &[u8] = &bytes;
        let mut progress = Vec::new();
        let mut demux = Demultiplexer::new(&mut input, &mut progress);
        let mut data = Vec::new();
        assert!(demux.read_to_end(&mut data).is_err());
        assert_eq!(
            demux.remote_error.as_deref(),
            Some("upload-pack: not our ref")
        );
    }

    #[test]
    fn progress_lines_are_prefixed_and_padded_as_git_does() {
        let mut out = Vec::new();
        let mut line_start = true;
        for payload in [
            &b"Counting: 1\rCounting: 2"[..],
            b", done.\n",
            b"\n",
            b"Total 3\n",
        ] {
            write_progress_with(&mut out, payload, &mut line_start, b"~").unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "remote: Counting: 1~\rremote: Counting: 2, done.~\nremote: \nremote: Total 3~\n"
        );
    }
}
