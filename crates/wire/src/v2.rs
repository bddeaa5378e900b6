//! Assembling protocol v2 requests from pkt-lines.
//!
//! A request, as `gitprotocol-v2` defines it, is:
//!
//! ```text
//! command=<name> LF
//! <capability> LF ...     zero or more, for example agent=git/2.47.0
//! 0001                    delim-pkt
//! <argument> LF ...       zero or more, for example want <oid>
//! 0000                    flush-pkt
//! ```
//!
//! As in git's `serve.c`, the `command=` line may come anywhere among the capability lines
//! (a request without one is [`RequestError::NoCommand`]), a flush-pkt right after the
//! capabilities also ends the request, with no arguments, and a flush-pkt instead of a request
//! ends the session.
//!
//! [`RequestParser`] is the sans-IO state machine, fed one packet at a time;
//! [`read_request`] drives it from a [`PacketReader`]. Neither knows what commands,
//! capabilities or arguments mean: that is for the protocol crate.

use std::io::Read;

use bstr::{BString, ByteSlice};

use crate::pkt_line::{
    self, strip_one_line_feed, EncodeError, Excerpt, Packet, PacketReader, ReadError,
};

/// The prefix of a request's first line.
const COMMAND_PREFIX: &[u8] = b"command=";

/// One protocol v2 request, its lines without their trailing LF.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Request {
    /// The command's name, such as `ls-refs` or `fetch`: non-empty, only ASCII letters,
    /// digits, `-` and `_`.
    pub command: String,
    /// The capability lines, such as `agent=git/2.47.0` or `object-format=sha1`.
    pub capabilities: Vec<BString>,
    /// The argument lines, such as `want <oid>` or `done`.
    pub arguments: Vec<BString>,
}

impl Request {
    /// Appends this request as a client sends it: every line with a LF, and a delim-pkt
    /// even if there are no arguments. Leaves `out` partly written if a line is too long.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_line(COMMAND_PREFIX, self.command.as_bytes(), out)?;
        for capability in &self.capabilities {
            encode_line(b"", capability, out)?;
        }
        pkt_line::encode_delimiter(out);
        for argument in &self.arguments {
            encode_line(b"", argument, out)?;
        }
        pkt_line::encode_flush(out);
        Ok(())
    }
}

/// Appends `prefix`, `line` and a LF as one data packet.
fn encode_line(prefix: &[u8], line: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut payload = Vec::with_capacity(prefix.len() + line.len() + 1);
    payload.extend_from_slice(prefix);
    payload.extend_from_slice(line);
    payload.push(b'\n');
    pkt_line::encode_data(&payload, out)
}

/// How much of a client's request the server holds in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// The most lines in one request, command line included.
    pub max_lines: usize,
    /// The most payload bytes in one request, LFs included, length prefixes not.
    pub max_bytes: usize,
}

impl Default for Limits {
    /// Room for a `fetch` of about a million wants: 1 048 576 lines and 64 MiB.
    fn default() -> Self {
        Limits {
            max_lines: 1 << 20,
            max_bytes: 64 << 20,
        }
    }
}

/// A malformed or oversized request.
///
/// The messages are meant for the client, in an `ERR <message>` packet.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The lines before the delim-pkt or flush-pkt hold no `command=` line. The capabilities
    /// are kept: git judges them first (an unknown one is reported before the missing command).
    #[error("no command requested")]
    NoCommand {
        /// The capability lines of the request, without their LF.
        capabilities: Vec<BString>,
    },
    /// The first line is `command=` with nothing after it.
    #[error("empty command name")]
    EmptyCommand,
    /// The command name has characters other than ASCII letters, digits, `-` and `_`.
    #[error("invalid command name {}", Excerpt(name))]
    InvalidCommand {
        /// The name, after `command=`.
        name: BString,
    },
    /// A second `command=` line comes among the capabilities.
    #[error(
        "command {} requested after already requesting command {first}",
        Excerpt(second)
    )]
    RepeatedCommand {
        /// The command of the first line.
        first: String,
        /// The name in the second `command=` line.
        second: BString,
    },
    /// A second delim-pkt comes among the arguments (git's wording).
    #[error("expected flush after {command} arguments")]
    DelimiterInArguments {
        /// The request's command.
        command: String,
    },
    /// A response-end-pkt comes in a request.
    #[error("unexpected response-end-pkt in a request")]
    ResponseEnd,
    /// The stream ends before the flush-pkt that ends the request.
    #[error(
        "unexpected end of stream in a {}request",
        command.as_deref().map(|command| format!("{command} ")).unwrap_or_default()
    )]
    UnexpectedEof {
        /// The request's command, if it came.
        command: Option<String>,
    },
    /// The request has more lines than [`Limits::max_lines`].
    #[error("request exceeds the limit of {limit} lines")]
    TooManyLines {
        /// The limit.
        limit: usize,
    },
    /// The request has more bytes than [`Limits::max_bytes`].
    #[error("request exceeds the limit of {limit} bytes")]
    TooManyBytes {
        /// The limit.
        limit: usize,
    },
    /// A packet could not be read: a bad length, the stream ending inside a packet, or an
    /// I/O error.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// What [`RequestParser::push`] made of a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The request is not complete yet.
    NeedMorePackets,
    /// The packet completed this request.
    Complete(Request),
    /// A flush-pkt came instead of a request: the client ends the session.
    SessionEnd,
}

/// Where the parser is in a request.
#[derive(Debug, Default)]
enum State {
    /// Between requests.
    #[default]
    Idle,
    /// Reading the command and capability lines.
    Capabilities(Started),
    /// After the delim-pkt, reading arguments.
    Arguments(Request),
}

/// The lines of a request before its delim-pkt: the command may not have come yet.
#[derive(Debug, Default)]
struct Started {
    command: Option<String>,
    capabilities: Vec<BString>,
}

impl Started {
    /// Take one line before the delim-pkt: the command or a capability.
    fn take_line(&mut self, line: &[u8]) -> Result<(), RequestError> {
        if line.starts_with(COMMAND_PREFIX) {
            let name = parse_command_line(line)?;
            if let Some(first) = &self.command {
                return Err(RequestError::RepeatedCommand {
                    first: first.clone(),
                    second: name.into(),
                });
            }
            self.command = Some(name);
        } else {
            self.capabilities.push(line.into());
        }
        Ok(())
    }

    /// The request so far, once its command is known.
    fn into_request(self) -> Result<Request, RequestError> {
        match self.command {
            Some(command) => Ok(Request {
                command,
                capabilities: self.capabilities,
                arguments: Vec::new(),
            }),
            None => Err(RequestError::NoCommand {
                capabilities: self.capabilities,
            }),
        }
    }
}

/// Assembles protocol v2 requests from packets, without doing any I/O.
///
/// Feed it packets with [`push`](RequestParser::push) until it returns a complete request,
/// and tell it when the input ends with [`end_of_input`](RequestParser::end_of_input). It
/// starts over after each request and after each error, though after an error the stream
/// is rarely worth reading on.
///
/// ```
/// use packgate_wire::{pkt_line::Packet, v2::{Limits, Parsed, RequestParser}};
///
/// let mut parser = RequestParser::new(Limits::default());
/// assert_eq!(parser.push(Packet::Data(b"command=ls-refs\n"))?, Parsed::NeedMorePackets);
/// assert_eq!(parser.push(Packet::Delimiter)?, Parsed::NeedMorePackets);
/// assert_eq!(parser.push(Packet::Data(b"peel\n"))?, Parsed::NeedMorePackets);
/// let Parsed::Complete(request) = parser.push(Packet::Flush)? else { panic!("complete") };
/// assert_eq!(request.command, "ls-refs");
/// assert_eq!(request.arguments, ["peel"]);
/// assert_eq!(parser.push(Packet::Flush)?, Parsed::SessionEnd);
/// # Ok::<(), packgate_wire::v2::RequestError>(())
/// ```
#[derive(Debug, Default)]
pub struct RequestParser {
    limits: Limits,
    state: State,
    lines: usize,
    bytes: usize,
}

impl RequestParser {
    /// A parser that rejects requests beyond `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            ..RequestParser::default()
        }
    }

    /// Whether the parser holds part of a request.
    pub fn is_in_request(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// Takes the next packet of the request.
    pub fn push(&mut self, packet: Packet<'_>) -> Result<Parsed, RequestError> {
        let result = self.step(packet);
        if !matches!(result, Ok(Parsed::NeedMorePackets)) {
            self.reset();
        }
        result
    }

    /// Reports the end of the input: an error if it cuts a request short.
    pub fn end_of_input(&mut self) -> Result<(), RequestError> {
        let state = std::mem::take(&mut self.state);
        self.reset();
        let command = match state {
            State::Idle => return Ok(()),
            State::Capabilities(started) => started.command,
            State::Arguments(request) => Some(request.command),
        };
        Err(RequestError::UnexpectedEof { command })
    }

    fn reset(&mut self) {
        self.state = State::Idle;
        self.lines = 0;
        self.bytes = 0;
    }

    fn step(&mut self, packet: Packet<'_>) -> Result<Parsed, RequestError> {
        if let Packet::Data(data) = packet {
            self.count(data)?;
        }
        match (std::mem::take(&mut self.state), packet) {
            (_, Packet::ResponseEnd) => Err(RequestError::ResponseEnd),
            (State::Idle, Packet::Flush) => Ok(Parsed::SessionEnd),
            (State::Idle, Packet::Delimiter) => Err(RequestError::NoCommand {
                capabilities: Vec::new(),
            }),
            (State::Idle, Packet::Data(data)) => {
                let mut started = Started::default();
                started.take_line(strip_one_line_feed(data))?;
                self.state = State::Capabilities(started);
                Ok(Parsed::NeedMorePackets)
            }
            (State::Capabilities(mut started), Packet::Data(data)) => {
                started.take_line(strip_one_line_feed(data))?;
                self.state = State::Capabilities(started);
                Ok(Parsed::NeedMorePackets)
            }
            (State::Capabilities(started), Packet::Delimiter) => {
                self.state = State::Arguments(started.into_request()?);
                Ok(Parsed::NeedMorePackets)
            }
            (State::Capabilities(started), Packet::Flush) => {
                Ok(Parsed::Complete(started.into_request()?))
            }
            (State::Arguments(mut request), Packet::Data(data)) => {
                request.arguments.push(strip_one_line_feed(data).into());
                self.state = State::Arguments(request);
                Ok(Parsed::NeedMorePackets)
            }
            (State::Arguments(request), Packet::Delimiter) => {
                Err(RequestError::DelimiterInArguments {
                    command: request.command,
                })
            }
            (State::Arguments(request), Packet::Flush) => Ok(Parsed::Complete(request)),
        }
    }

    /// Counts a data packet against the limits.
    fn count(&mut self, data: &[u8]) -> Result<(), RequestError> {
        self.lines += 1;
        self.bytes += data.len();
        if self.lines > self.limits.max_lines {
            return Err(RequestError::TooManyLines {
                limit: self.limits.max_lines,
            });
        }
        if self.bytes > self.limits.max_bytes {
            return Err(RequestError::TooManyBytes {
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }
}

/// The command name of a `command=` line, without its LF.
fn parse_command_line(line: &[u8]) -> Result<String, RequestError> {
    let name = line.strip_prefix(COMMAND_PREFIX).unwrap_or(line);
    if name.is_empty() {
        return Err(RequestError::EmptyCommand);
    }
    let is_key_character = |byte: &u8| byte.is_ascii_alphanumeric() || b"-_".contains(byte);
    match name.to_str() {
        Ok(name) if name.as_bytes().iter().all(is_key_character) => Ok(name.to_owned()),
        _ => Err(RequestError::InvalidCommand { name: name.into() }),
    }
}

/// Reads the next request from `reader`.
///
/// Returns `Ok(None)` if the client ends the session: the stream ends (also inside a packet),
/// or a flush-pkt comes, before a request starts. A stream ending inside a request is
/// [`RequestError::UnexpectedEof`].
pub fn read_request<R: Read>(
    reader: &mut PacketReader<R>,
    limits: &Limits,
) -> Result<Option<Request>, RequestError> {
    let mut parser = RequestParser::new(*limits);
    loop {
        let packet = match reader.read_packet() {
            Ok(packet) => packet,
            // A stream that ends inside a packet before a request began: the client left,
            // as git's serve loop reads it (its reader is gentle on EOF there).
            Err(ReadError::UnexpectedEof { .. }) if !parser.is_in_request() => None,
            Err(err) => return Err(err.into()),
        };
        let Some(packet) = packet else {
            parser.end_of_input()?;
            return Ok(None);
        };
        match parser.push(packet)? {
            Parsed::NeedMorePackets => {}
            Parsed::Complete(request) => {
                tracing::debug!(
                    command = request.command,
                    capabilities = request.capabilities.len(),
                    arguments = request.arguments.len(),
                    "protocol v2 request"
                );
                return Ok(Some(request));
            }
            Parsed::SessionEnd => return Ok(None),
        }
    }
}

#[cfg(test)]
mod tests;
