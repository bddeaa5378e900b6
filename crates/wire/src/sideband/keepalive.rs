//! Keepalive packets: what one is, and where in a stream of pkt-lines one may go.
//!
//! A server that works for a while without output (preparing a pack, running hooks) sends an
//! empty band-1 packet, [`KEEPALIVE_PACKET`], whenever its response has been silent for an
//! interval (git's `uploadpack.keepAlive` and `receive.keepAlive`), so clients and proxies
//! do not give up on it. Clients read and discard it. It may only go between two whole
//! packets: [`Framing`] follows the bytes of a response as they are written and says when
//! that is. Running the work while waiting for the interval is the caller's (this crate
//! starts no threads).
//!
//! ```
//! use packgate_wire::sideband::keepalive::{Framing, KEEPALIVE_PACKET};
//!
//! let mut framing = Framing::default();
//! framing.advance(b"0009\x01PA");
//! assert!(!framing.at_boundary()); // a keepalive now would split the packet
//! framing.advance(b"CK");
//! assert!(framing.at_boundary());
//! assert_eq!(KEEPALIVE_PACKET, b"0005\x01");
//! ```

use crate::pkt_line::LENGTH_PREFIX_LENGTH;

/// The keepalive packet: an empty packet on band 1, which clients read and discard.
pub const KEEPALIVE_PACKET: &[u8] = b"0005\x01";

/// Where a stream of pkt-lines written piece by piece stands: at a packet boundary, inside a
/// length prefix or a packet's payload, or no longer recognisable as pkt-lines (then it is
/// never at a boundary again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Framing(State);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `read` bytes of a length prefix seen (0: at a packet boundary); `value` so far.
    Prefix { read: usize, value: usize },
    /// This many payload bytes of the current packet are still to come.
    Payload { remaining: usize },
    /// Something that is not a pkt-line went through.
    Lost,
}

impl Default for State {
    fn default() -> Self {
        State::Prefix { read: 0, value: 0 }
    }
}

impl Framing {
    /// Whether a packet may be written now without splitting another one.
    pub fn at_boundary(self) -> bool {
        self.0 == State::default()
    }

    /// Follow `bytes` as they are written.
    pub fn advance(&mut self, bytes: &[u8]) {
        self.0.advance(bytes);
    }
}

impl State {
    fn advance(&mut self, mut bytes: &[u8]) {
        while let Some((&byte, rest)) = bytes.split_first() {
            match *self {
                State::Lost => return,
                State::Payload { remaining } => {
                    let taken = remaining.min(bytes.len());
                    bytes = &bytes[taken..];
                    *self = match remaining - taken {
                        0 => State::default(),
                        remaining => State::Payload { remaining },
                    };
                }
                State::Prefix { read, value } => {
                    bytes = rest;
                    let Some(digit) = char::from(byte).to_digit(16) else {
                        *self = State::Lost;
                        return;
                    };
                    let value = value * 16 + digit as usize;
                    let read = read + 1;
                    *self = match (read, value) {
                        (LENGTH_PREFIX_LENGTH, 0..=2) => State::default(),
                        (LENGTH_PREFIX_LENGTH, 3) => State::Lost,
                        (LENGTH_PREFIX_LENGTH, LENGTH_PREFIX_LENGTH) => State::default(),
                        (LENGTH_PREFIX_LENGTH, length) => State::Payload {
                            remaining: length - LENGTH_PREFIX_LENGTH,
                        },
                        (read, value) => State::Prefix { read, value },
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
