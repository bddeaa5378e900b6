//! Protocol v0/v1 negotiation: the `ACK`/`NAK` lines git's upload-pack answers a client's
//! `have` rounds with (`get_common_commits()`), for each acknowledgment mode.
//!
//! The rules of what is common and when the server is ready are [`Negotiation`]'s, shared
//! with protocol v2; this module only decides which answers to send and when. It returns
//! [`Ack`] values; the caller writes them.
//!
//! Over stateless HTTP each request repeats the wants and the common haves and ends in a
//! flush (more rounds follow) or `done`: the caller makes a new [`V0Negotiation`] per request
//! and ends the request after a flush that [`Round::Continue`]s.

use gix_hash::ObjectId;

use crate::{Error, Have, Negotiation};

/// How the client asked to be acknowledged (its `multi_ack*` capabilities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// Neither: one `ACK` for the first common have, then nothing until the pack.
    #[default]
    Single,
    /// `multi_ack`: `ACK <id> continue` for each common have.
    MultiAck,
    /// `multi_ack_detailed`: `ACK <id> common`, and `ACK <id> ready` once ready.
    Detailed,
}

/// One answer line of a v0 negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// `NAK`.
    Nak,
    /// `ACK <id>`.
    Ack(ObjectId),
    /// `ACK <id> continue`.
    Continue(ObjectId),
    /// `ACK <id> common`.
    Common(ObjectId),
    /// `ACK <id> ready`.
    Ready(ObjectId),
}

impl std::fmt::Display for Ack {
    /// The line's text, without its newline.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ack::Nak => f.write_str("NAK"),
            Ack::Ack(id) => write!(f, "ACK {id}"),
            Ack::Continue(id) => write!(f, "ACK {id} continue"),
            Ack::Common(id) => write!(f, "ACK {id} common"),
            Ack::Ready(id) => write!(f, "ACK {id} ready"),
        }
    }
}

/// What the session does after a flush or `done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Read the next round of haves (stateless: end this request).
    Continue,
    /// Send the pack now (after `done` without a common have: all of it, as git does).
    SendPack,
}

/// A v0 negotiation over one session (or one stateless request).
#[derive(Debug)]
pub struct V0Negotiation {
    negotiation: Negotiation,
    mode: AckMode,
    no_done: bool,
    got_common: bool,
    got_other: bool,
    sent_ready: bool,
    last: Option<ObjectId>,
}

impl V0Negotiation {
    /// Start negotiating for `wants` in `mode`; `no_done` if the client sent `no-done`.
    pub fn new(wants: Vec<ObjectId>, mode: AckMode, no_done: bool) -> Self {
        Self::with_negotiation(Negotiation::new(wants), mode, no_done)
    }

    /// Negotiate over `negotiation` (made with the shallow grafts, say) in `mode`.
    pub fn with_negotiation(negotiation: Negotiation, mode: AckMode, no_done: bool) -> Self {
        V0Negotiation {
            negotiation,
            mode,
            no_done,
            got_common: false,
            got_other: false,
            sent_ready: false,
            last: None,
        }
    }

    /// The shared negotiation state: its common haves are the pack's base.
    pub fn negotiation(&self) -> &Negotiation {
        &self.negotiation
    }

    /// One `have` line; the answers to send for it, appended to `acks`.
    pub fn have(
        &mut self,
        db: &(impl gix_object::Find + gix_object::FindHeader),
        id: &ObjectId,
        acks: &mut Vec<Ack>,
    ) -> Result<(), Error> {
        match self.negotiation.have(db, id)? {
            Have::Missing => {
                self.got_other = true;
                if self.mode != AckMode::Single && self.negotiation.ready(db)? {
                    if self.mode == AckMode::Detailed {
                        self.sent_ready = true;
                        acks.push(Ack::Ready(*id));
                    } else {
                        acks.push(Ack::Continue(*id));
                    }
                }
            }
            Have::Common { .. } => {
                self.got_common = true;
                self.last = Some(*id);
                match self.mode {
                    AckMode::Detailed => acks.push(Ack::Common(*id)),
                    AckMode::MultiAck => acks.push(Ack::Continue(*id)),
                    AckMode::Single if self.negotiation.new_haves() == 1 => {
                        acks.push(Ack::Ack(*id))
                    }
                    AckMode::Single => {}
                }
            }
        }
        Ok(())
    }

    /// The flush that ends a round of haves.
    pub fn flush(
        &mut self,
        db: &(impl gix_object::Find + gix_object::FindHeader),
        acks: &mut Vec<Ack>,
    ) -> Result<Round, Error> {
        if self.mode == AckMode::Detailed
            && self.got_common
            && !self.got_other
            && self.negotiation.ready(db)?
        {
            if let Some(last) = self.last {
                self.sent_ready = true;
                acks.push(Ack::Ready(last));
            }
        }
        if self.negotiation.new_haves() == 0 || self.mode != AckMode::Single {
            acks.push(Ack::Nak);
        }
        if self.no_done && self.sent_ready {
            if let Some(last) = self.last {
                acks.push(Ack::Ack(last));
                return Ok(Round::SendPack);
            }
        }
        self.got_common = false;
        self.got_other = false;
        Ok(Round::Continue)
    }

    /// The client's `done`.
    pub fn done(&mut self, acks: &mut Vec<Ack>) -> Round {
        match self.last {
            Some(last) if self.negotiation.new_haves() > 0 => {
                if self.mode != AckMode::Single {
                    acks.push(Ack::Ack(last));
                }
                Round::SendPack
            }
            _ => {
                acks.push(Ack::Nak);
                Round::SendPack
            }
        }
    }
}

#[cfg(test)]
mod tests;
