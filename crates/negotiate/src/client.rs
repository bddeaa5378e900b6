//! Fetch negotiation, client side: which `have` lines to send, in which rounds, and when to
//! stop and ask for the pack.
//!
//! [`ClientNegotiator`] follows git 2.47's `fetch-pack` with its default negotiator
//! (`negotiator/default.c`):
//!
//! * the local history is walked newest first by committer date (equal dates in the order
//!   met), starting from the tips given with [`ClientNegotiator::add_tip()`]; every commit
//!   met is sent as a `have` once;
//! * a commit the server acknowledges is common, and so are all its ancestors: they are
//!   never sent. A commit known to be common before negotiating (a ref the server advertised
//!   that the client has, [`ClientNegotiator::known_common()`]) is sent, its ancestors not;
//! * haves go in rounds that grow as git's do ([`next_flush()`]): 16, then doubling; over a
//!   stateful v0 connection 16, 16, then 32 at a time, the client keeping one round ahead of
//!   the server's answers;
//! * ACK-gated in_vain: after [`MAX_IN_VAIN`] haves without an acknowledgment the client
//!   gives up and sends `done`, but only once the server has acknowledged something. Until
//!   the first ACK every have is sent: a fork far ahead of its parent still finds the base.
//!
//! It knows nothing about the wire: the caller writes the [`Request`]s it returns (after
//! the wants and, for protocol v2 and stateless v0, the [`ClientNegotiator::common()`]
//! haves) and hands back the server's answers as types: a v2 `acknowledgments` section as
//! [`Acknowledgments`], a v0 line as an [`Ack`]. Each call says what to do next ([`Next`]).
//!
//! # Example (protocol v2)
//!
//! ```no_run
//! # use packgate_negotiate::{Acknowledgments, client::{ClientNegotiator, Next, Protocol}};
//! # fn read_acknowledgments() -> Acknowledgments { Acknowledgments::default() }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = gix_odb::at("repo.git/objects", gix_hash::Kind::Sha1)?;
//! let tip = gix_hash::ObjectId::from_hex(b"8b5d6aa0c5f4b0c8e5c1a2b3c4d5e6f708192a3b")?;
//! let mut negotiator = ClientNegotiator::new(Protocol::V2);
//! negotiator.add_tip(&db, &tip)?;
//! loop {
//!     let request = negotiator.next_request(&db)?;
//!     // write: command=fetch, wants, `have` for negotiator.common(), then request.haves,
//!     // `done` if request.done, flush.
//!     if request.then == Next::Pack {
//!         break;
//!     }
//!     if negotiator.receive_v2(&db, &read_acknowledgments())? == Next::Pack {
//!         break;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! [`Algorithm::Skipping`] is git's `fetch.negotiationAlgorithm=skipping` instead.

use std::{cmp::Reverse, collections::BinaryHeap};

use gix_hash::ObjectId;
use gix_hashtable::HashSet;
use packgate_object::{flag, CommitGraph};

use crate::{v0::Ack, v0::AckMode, Acknowledgments};

/// The first round's number of haves (git's `INITIAL_FLUSH`).
pub const INITIAL_FLUSH: usize = 16;
/// Over a stateful connection, rounds stop doubling at this size and grow by it instead
/// (git's `PIPESAFE_FLUSH`).
pub const PIPESAFE_FLUSH: usize = 32;
/// Over a stateless transport, rounds stop doubling at this size and grow by a tenth
/// instead (git's `LARGE_FLUSH`).
pub const LARGE_FLUSH: usize = 16384;
/// Haves without an acknowledgment after which the client gives up, once the server has
/// acknowledged something (git's `MAX_IN_VAIN`).
pub const MAX_IN_VAIN: usize = 256;

/// Bound on one round's haves, so a round can't grow without limit however long the walk.
const MAX_ROUND: usize = 1 << 24;

/// The size the next round ends at (git's `next_flush()`): for v0 the total of haves sent
/// when the next flush is due, given the total `count` now; for v2 the next round's size,
/// given this round's.
pub fn next_flush(stateless: bool, count: usize) -> usize {
    let next = if stateless {
        if count < LARGE_FLUSH {
            count.saturating_mul(2)
        } else {
            count.saturating_mul(11) / 10
        }
    } else if count < PIPESAFE_FLUSH {
        count.saturating_mul(2)
    } else {
        count.saturating_add(PIPESAFE_FLUSH)
    };
    next.max(1)
}

/// The protocol and transport the negotiation runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Protocol v2: each request repeats the wants and the common haves; rounds grow as over
    /// a stateless transport.
    V2,
    /// Protocol v0/v1.
    V0 {
        /// The acknowledgment mode both sides agreed on (`multi_ack_detailed`, `multi_ack` or
        /// neither).
        mode: AckMode,
        /// A stateless transport (smart HTTP): each request repeats the wants and the haves
        /// acknowledged `common`; every round's answers are read before the next.
        stateless: bool,
        /// `no-done` agreed on: after `ACK <id> ready` no `done` is sent.
        no_done: bool,
    },
}

/// The error of client negotiation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the local history failed.
    #[error(transparent)]
    Read(#[from] crate::Error),
    /// The server answered when no answer was expected, or with an answer that does not fit.
    #[error("unexpected answer from the server: {0}")]
    UnexpectedAnswer(String),
    /// A call out of order: the negotiation is over, or its walk already started.
    #[error("negotiation call out of order: {0}")]
    OutOfOrder(&'static str),
}

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send the next request: [`ClientNegotiator::next_request()`].
    Send,
    /// Read the server's answer: the `acknowledgments` section (v2,
    /// [`ClientNegotiator::receive_v2()`]) or the next `ACK`/`NAK` line (v0,
    /// [`ClientNegotiator::receive_v0()`]).
    Read,
    /// Negotiation is over: the pack (or, v2, the sections before it) follows.
    Pack,
}

/// One request's haves: sent after the wants (and, for v2 and stateless v0, the
/// [`ClientNegotiator::common()`] haves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The `have` lines of this round, in order.
    pub haves: Vec<ObjectId>,
    /// End with `done` (v0: instead of the flush); otherwise with a flush.
    pub done: bool,
    /// What to do once this is sent.
    pub then: Next,
}

/// The walk's marks (git's default negotiator flags).
const COMMON: u16 = flag::FIRST_FREE;
const COMMON_REF: u16 = flag::FIRST_FREE << 1;
const SEEN: u16 = flag::FIRST_FREE << 2;
const POPPED: u16 = flag::FIRST_FREE << 3;

/// git's default negotiator: a date-ordered walk that skips what is known to be common.
#[derive(Debug, Default)]
struct Walk {
    graph: CommitGraph,
    /// Newest first; equal dates first in, first out.
    queue: BinaryHeap<(u64, Reverse<u64>, u32)>,
    counter: u64,
    /// Queued commits not known to be common: the walk ends when none is left.
    non_common: usize,
}

impl Walk {
    fn flags(&self, node: u32) -> u16 {
        self.graph.flags(node)
    }

    fn set(&mut self, node: u32, flags: u16) {
        self.graph.nodes[node as usize].flags |= flags;
    }

    /// Queue `node` unless it carries `mark` already (git's `rev_list_push()`).
    fn push(&mut self, db: &impl gix_object::Find, node: u32, mark: u16) -> Result<(), Error> {
        if self.flags(node) & mark != 0 {
            return Ok(());
        }
        self.set(node, mark);
        if !self
            .graph
            .parse_gently(db, node)
            .map_err(crate::Error::from)?
        {
            return Ok(());
        }
        self.counter += 1;
        let date = self.graph.get(node).date;
        self.queue.push((date, Reverse(self.counter), node));
        if self.flags(node) & COMMON == 0 {
            self.non_common += 1;
        }
        Ok(())
    }

    /// A queued, not yet popped commit became common: one fewer that keeps the walk going.
    fn now_common(&mut self, node: u32) {
        let flags = self.flags(node);
        if flags & SEEN != 0 && flags & POPPED == 0 {
            self.non_common = self.non_common.saturating_sub(1);
        }
    }

    /// Mark `node` (unless `ancestors_only`) and its known ancestors common (git's
    /// `mark_common()`); commits not met yet are queued to be skipped when popped.
    fn mark_common(
        &mut self,
        db: &impl gix_object::Find,
        node: u32,
        ancestors_only: bool,
        parse: bool,
    ) -> Result<(), Error> {
        if self.flags(node) & COMMON != 0 {
            return Ok(());
        }
        if !ancestors_only {
            self.set(node, COMMON);
            self.now_common(node);
        }
        // Each commit is stacked once, when it becomes common (or first, `node`).
        let mut stack = vec![node];
        while let Some(commit) = stack.pop() {
            if self.flags(commit) & SEEN == 0 {
                self.push(db, commit, SEEN)?;
                continue;
            }
            if parse {
                self.graph
                    .parse_gently(db, commit)
                    .map_err(crate::Error::from)?;
            }
            for position in self.graph.get(commit).parents.clone() {
                let parent = self.graph.parent(position);
                if self.flags(parent) & COMMON != 0 {
                    continue;
                }
                self.set(parent, COMMON);
                self.now_common(parent);
                stack.push(parent);
            }
        }
        Ok(())
    }

    fn known_common(&mut self, db: &impl gix_object::Find, node: u32) -> Result<(), Error> {
        if self.flags(node) & SEEN == 0 {
            self.push(db, node, COMMON_REF | SEEN)?;
            self.mark_common(db, node, true, false)?;
        }
        Ok(())
    }

    /// Whether `node` was known to be common; it and its ancestors are now.
    fn ack(&mut self, db: &impl gix_object::Find, node: u32) -> Result<bool, Error> {
        let was_common = self.flags(node) & COMMON != 0;
        self.mark_common(db, node, false, false)?;
        Ok(was_common)
    }

    /// The next commit to send as a have, if any (git's `get_rev()`).
    fn next(&mut self, db: &impl gix_object::Find) -> Result<Option<ObjectId>, Error> {
        // Every commit is queued at most once, so this ends.
        loop {
            if self.non_common == 0 {
                return Ok(None);
            }
            let Some((_, _, node)) = self.queue.pop() else {
                return Ok(None);
            };
            self.set(node, POPPED);
            let flags = self.flags(node);
            if flags & COMMON == 0 {
                self.non_common = self.non_common.saturating_sub(1);
            }
            let (send, mark) = if flags & COMMON != 0 {
                (false, COMMON | SEEN)
            } else if flags & COMMON_REF != 0 {
                (true, COMMON | SEEN)
            } else {
                (true, SEEN)
            };
            for position in self.graph.get(node).parents.clone() {
                let parent = self.graph.parent(position);
                if self.flags(parent) & SEEN == 0 {
                    self.push(db, parent, mark)?;
                }
                if mark & COMMON != 0 {
                    self.mark_common(db, parent, true, true)?;
                }
            }
            if send {
                return Ok(Some(self.graph.get(node).id));
            }
        }
    }
}

/// Which walk chooses the haves (git's `fetch.negotiationAlgorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// git's default (`consecutive`): every commit, newest first.
    #[default]
    Consecutive,
    /// `skipping`: newest first, but skipping ever more commits between haves on each line
    /// of history; fewer rounds on long histories, a less exact common base.
    Skipping,
}

/// The walk of the chosen [`Algorithm`].
#[derive(Debug)]
enum Walker {
    Consecutive(Walk),
    Skipping(skipping::Skipping),
}

impl Walker {
    fn graph(&mut self) -> &mut CommitGraph {
        match self {
            Walker::Consecutive(walk) => &mut walk.graph,
            Walker::Skipping(walk) => &mut walk.graph,
        }
    }

    fn known_common(&mut self, db: &impl gix_object::Find, node: u32) -> Result<(), Error> {
        match self {
            Walker::Consecutive(walk) => walk.known_common(db, node),
            Walker::Skipping(walk) => walk.known_common(db, node),
        }
    }

    fn add_tip(&mut self, db: &impl gix_object::Find, node: u32) -> Result<(), Error> {
        match self {
            Walker::Consecutive(walk) => walk.push(db, node, SEEN),
            Walker::Skipping(walk) => walk.add_tip(db, node),
        }
    }

    fn ack(&mut self, db: &impl gix_object::Find, node: u32) -> Result<bool, Error> {
        match self {
            Walker::Consecutive(walk) => walk.ack(db, node),
            Walker::Skipping(walk) => walk.ack(node),
        }
    }

    fn next(&mut self, db: &impl gix_object::Find) -> Result<Option<ObjectId>, Error> {
        match self {
            Walker::Consecutive(walk) => walk.next(db),
            Walker::Skipping(walk) => walk.next(db),
        }
    }
}

/// Where a v0 negotiation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Sending rounds of haves.
    Haves,
    /// Reading one round's answers, up to its `NAK`.
    Answers,
    /// Gave up, ran out of haves, was acknowledged (single ACK) or is ready: `done` (or
    /// nothing, with `no-done`) is next.
    Finish,
    /// `done` was sent (or skipped): reading the last answers.
    Final,
    /// Over.
    Over,
}

/// The client side of negotiating one fetch.
#[derive(Debug)]
pub struct ClientNegotiator {
    walk: Walker,
    protocol: Protocol,
    /// A tip was added: too late for known_common().
    tips_added: bool,
    /// A request was made: too late for tips.
    requested: bool,
    phase: Phase,
    /// v2: the next round's size; v0: the total of haves at the next flush.
    flush_at: usize,
    /// v0: haves sent so far.
    count: usize,
    /// Haves sent since the last acknowledgment.
    in_vain: usize,
    /// An acknowledgment has arrived (git's `seen_ack` in v2, `got_continue` in v0).
    seen_ack: bool,
    /// Whether in_vain counts only after the first acknowledgment (git's rule).
    gated: bool,
    got_ready: bool,
    /// v0: something was acknowledged (git's `retval == 0`).
    acknowledged: bool,
    /// v0: rounds flushed whose answers are not read yet.
    flushes: usize,
    /// v0: still expecting a final `ACK` (git's `multi_ack` after `done`).
    multi_ack: bool,
    common: Vec<ObjectId>,
    common_set: HashSet<ObjectId>,
    buf: Vec<u8>,
}

impl ClientNegotiator {
    /// Start negotiating over `protocol` with git's default algorithm.
    pub fn new(protocol: Protocol) -> Self {
        Self::with_algorithm(protocol, Algorithm::Consecutive)
    }

    /// Start negotiating over `protocol`, choosing haves with `algorithm`.
    pub fn with_algorithm(protocol: Protocol, algorithm: Algorithm) -> Self {
        let multi_ack = matches!(
            protocol,
            Protocol::V0 {
                mode: AckMode::MultiAck | AckMode::Detailed,
                ..
            }
        );
        let walk = match algorithm {
            Algorithm::Consecutive => Walker::Consecutive(Walk::default()),
            Algorithm::Skipping => Walker::Skipping(skipping::Skipping::default()),
        };
        ClientNegotiator {
            walk,
            protocol,
            tips_added: false,
            requested: false,
            phase: Phase::Haves,
            flush_at: INITIAL_FLUSH,
            count: 0,
            in_vain: 0,
            seen_ack: false,
            gated: true,
            got_ready: false,
            acknowledged: false,
            flushes: 0,
            multi_ack,
            common: Vec::new(),
            common_set: HashSet::default(),
            buf: Vec::new(),
        }
    }

    /// Read commits from the repository's commit-graph where it has them.
    pub fn use_commit_graph(&mut self, graph: Option<packgate_object::CommitGraphFile>) {
        self.walk.graph().use_commit_graph(graph);
    }

    /// Count every have towards the in_vain cut-off, even before any acknowledgment: git's
    /// v2 client before the gate, which gave up on forks far ahead of their parent. For
    /// showing what the gate is for.
    #[cfg(test)]
    pub(crate) fn ungated(mut self) -> Self {
        self.gated = false;
        self
    }

    /// A commit the server is known to have before negotiating (a ref it advertised that the
    /// client has): sent as a have, its ancestors not. Tags are peeled; other objects and
    /// objects the client lacks are ignored. Only before the first [`Self::add_tip()`].
    pub fn known_common(&mut self, db: &impl gix_object::Find, id: &ObjectId) -> Result<(), Error> {
        if self.tips_added || self.requested {
            return Err(Error::OutOfOrder("known_common() after add_tip()"));
        }
        let Some(node) = self.commit(db, id)? else {
            return Ok(());
        };
        self.walk.known_common(db, node)
    }

    /// A local tip to walk from (git adds every local ref). Tags are peeled; other objects
    /// and objects the client lacks are ignored.
    pub fn add_tip(&mut self, db: &impl gix_object::Find, id: &ObjectId) -> Result<(), Error> {
        if self.requested {
            return Err(Error::OutOfOrder("add_tip() after the first request"));
        }
        self.tips_added = true;
        if let Some(node) = self.commit(db, id)? {
            self.walk.add_tip(db, node)?;
        }
        Ok(())
    }

    /// The haves the server acknowledged, each once, in the order acknowledged. Protocol v2
    /// sends them at the start of every request; stateless v0 those acknowledged `common`
    /// (a superset does no harm: the server acknowledges them again).
    pub fn common(&self) -> &[ObjectId] {
        &self.common
    }

    /// Whether the server said it is ready to send the pack.
    pub fn ready(&self) -> bool {
        self.got_ready
    }

    /// The next request.
    pub fn next_request(&mut self, db: &impl gix_object::Find) -> Result<Request, Error> {
        self.requested = true;
        match self.protocol {
            Protocol::V2 => self.next_v2(db),
            Protocol::V0 { stateless, .. } => self.next_v0(db, stateless),
        }
    }

    fn next_v2(&mut self, db: &impl gix_object::Find) -> Result<Request, Error> {
        if self.phase != Phase::Haves {
            return Err(Error::OutOfOrder("request after the last one"));
        }
        let size = self.flush_at.min(MAX_ROUND);
        let mut haves = Vec::new();
        while haves.len() < size {
            let Some(id) = self.walk.next(db)? else {
                break;
            };
            haves.push(id);
        }
        self.flush_at = next_flush(true, self.flush_at);
        self.in_vain = self.in_vain.saturating_add(haves.len());
        let done = haves.is_empty() || (self.counting() && self.in_vain >= MAX_IN_VAIN);
        let then = if done {
            self.phase = Phase::Over;
            Next::Pack
        } else {
            self.phase = Phase::Answers;
            Next::Read
        };
        Ok(Request { haves, done, then })
    }

    /// Whether the in_vain cut-off applies yet.
    fn counting(&self) -> bool {
        self.seen_ack || !self.gated
    }

    /// Take a v2 `acknowledgments` section: its `ACK`s (none: `NAK`) and `ready`.
    pub fn receive_v2(
        &mut self,
        db: &impl gix_object::Find,
        answer: &Acknowledgments,
    ) -> Result<Next, Error> {
        if self.protocol != Protocol::V2 || self.phase != Phase::Answers {
            return Err(Error::UnexpectedAnswer("acknowledgments".into()));
        }
        for id in &answer.common {
            self.ack(db, id)?;
            self.in_vain = 0;
            self.seen_ack = true;
        }
        if answer.ready {
            self.got_ready = true;
            self.phase = Phase::Over;
            return Ok(Next::Pack);
        }
        self.phase = Phase::Haves;
        Ok(Next::Send)
    }

    fn next_v0(&mut self, db: &impl gix_object::Find, stateless: bool) -> Result<Request, Error> {
        let mut haves = Vec::new();
        if self.phase == Phase::Haves {
            // One flush's worth, or what is left of the walk.
            loop {
                let Some(id) = self.walk.next(db)? else {
                    self.phase = Phase::Finish;
                    break;
                };
                haves.push(id);
                self.in_vain = self.in_vain.saturating_add(1);
                self.count = self.count.saturating_add(1);
                if self.count >= self.flush_at || haves.len() >= MAX_ROUND {
                    self.flushes += 1;
                    self.flush_at = next_flush(stateless, self.count);
                    // Over a stateful connection the client stays one round ahead.
                    let then = if !stateless && self.count == INITIAL_FLUSH {
                        Next::Send
                    } else {
                        self.phase = Phase::Answers;
                        Next::Read
                    };
                    return Ok(Request {
                        haves,
                        done: false,
                        then,
                    });
                }
            }
        }
        if self.phase != Phase::Finish {
            return Err(Error::OutOfOrder("request while answers are due"));
        }
        let then = self.finish();
        Ok(Request {
            haves,
            done: true,
            then,
        })
    }

    /// v0: negotiation is over, `done` sent or (no-done after `ready`) not: what is left to
    /// read.
    fn finish(&mut self) -> Next {
        if !self.acknowledged {
            // Nothing common: the server answers `done` with one more NAK.
            self.multi_ack = false;
            self.flushes += 1;
        }
        if self.flushes > 0 || self.multi_ack {
            self.phase = Phase::Final;
            Next::Read
        } else {
            self.phase = Phase::Over;
            Next::Pack
        }
    }

    /// Take one v0 answer line.
    pub fn receive_v0(&mut self, db: &impl gix_object::Find, answer: Ack) -> Result<Next, Error> {
        let Protocol::V0 {
            stateless, no_done, ..
        } = self.protocol
        else {
            return Err(Error::UnexpectedAnswer(answer.to_string()));
        };
        match self.phase {
            Phase::Answers => self.answer_v0(db, answer, stateless, no_done),
            Phase::Final => {
                match answer {
                    Ack::Ack(_) => {
                        self.phase = Phase::Over;
                        return Ok(Next::Pack);
                    }
                    Ack::Nak => {
                        if self.flushes == 0 {
                            return Err(Error::UnexpectedAnswer(answer.to_string()));
                        }
                        self.flushes -= 1;
                    }
                    Ack::Common(_) | Ack::Ready(_) | Ack::Continue(_) => self.multi_ack = true,
                }
                if self.flushes > 0 || self.multi_ack {
                    Ok(Next::Read)
                } else {
                    self.phase = Phase::Over;
                    Ok(Next::Pack)
                }
            }
            Phase::Haves | Phase::Finish | Phase::Over => {
                Err(Error::UnexpectedAnswer(answer.to_string()))
            }
        }
    }

    fn answer_v0(
        &mut self,
        db: &impl gix_object::Find,
        answer: Ack,
        stateless: bool,
        no_done: bool,
    ) -> Result<Next, Error> {
        match answer {
            Ack::Ack(_) => {
                // Single-ACK mode: found one, stop.
                self.flushes = 0;
                self.multi_ack = false;
                self.acknowledged = true;
                self.phase = Phase::Finish;
                Ok(Next::Send)
            }
            Ack::Common(id) | Ack::Ready(id) | Ack::Continue(id) => {
                let was_common = self.ack(db, &id)?;
                // Stateless: a `common` the client knew already does not reset in_vain (the
                // server only repeats what the client replayed).
                if !(stateless && matches!(answer, Ack::Common(_)) && was_common) {
                    self.in_vain = 0;
                }
                self.acknowledged = true;
                self.seen_ack = true;
                if matches!(answer, Ack::Ready(_)) {
                    self.got_ready = true;
                }
                Ok(Next::Read)
            }
            Ack::Nak => {
                self.flushes = self.flushes.saturating_sub(1);
                let give_up = self.counting() && self.in_vain > MAX_IN_VAIN;
                if self.got_ready && no_done {
                    // No `done`: the pack follows the answers still due.
                    return Ok(self.finish());
                }
                self.phase = if give_up || self.got_ready {
                    Phase::Finish
                } else {
                    Phase::Haves
                };
                Ok(Next::Send)
            }
        }
    }

    /// The server has `id`: it and its ancestors are common (git's `ack()`); whether it
    /// was known to be.
    fn ack(&mut self, db: &impl gix_object::Find, id: &ObjectId) -> Result<bool, Error> {
        if self.common_set.insert(*id) {
            self.common.push(*id);
        }
        let node = self.walk.graph().node(id);
        self.walk.ack(db, node)
    }

    /// The commit `id` peels to, as a node of the walk.
    fn commit(&mut self, db: &impl gix_object::Find, id: &ObjectId) -> Result<Option<u32>, Error> {
        let Some(commit) = crate::peel_to_commit(db, id, &mut self.buf)? else {
            return Ok(None);
        };
        Ok(Some(self.walk.graph().node(&commit)))
    }
}

mod skipping;
#[cfg(test)]
mod tests;
