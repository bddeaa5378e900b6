//! Fetch negotiation, server side: which of a client's haves are common, and when the
//! server has seen enough to send a pack.
//!
//! For one protocol-v2 `fetch` request (v2 keeps no negotiation state between requests: the
//! client repeats its common haves each round), [`Negotiation::process_haves()`] follows
//! git's `upload-pack`:
//!
//! * every have the server has is common and acknowledged, once, in the order received (a
//!   have the server lacks is skipped; a round without any common have is answered `NAK`);
//! * a commit among them is marked as something the client has, and so is each of its parents;
//!   the oldest of their committer dates is the walk's cutoff;
//! * `ready` (git's `ok_to_give_up()`) holds when there is at least one common have, of any
//!   kind, and every wanted commit (tags peeled) is a marked commit or reaches one through
//!   its parents without stepping onto a commit older than the cutoff. The walk is shared by
//!   all wants, so a thousand wanted branches cost one walk of their history, not a thousand.
//!
//! Wants that are not commits after peeling — trees, blobs, tags of either — cannot be judged
//! by ancestry and do not hold `ready` back, as in git (`can_all_from_reach_with_flag()`).
//! Neither does a want that is missing or not a commit: checking wants is the caller's job.
//!
//! [`reachable_from()`] answers the other question upload-pack asks of the commit graph:
//! which wants are reachable from the advertised tips (`uploadpack.allowReachableSHA1InWant`).
//!
//! # What this crate does not do
//!
//! It knows nothing about the wire: it reads objects through [`gix_object::Find`] and
//! returns decisions, which the caller turns into `acknowledgments` sections. It keeps no state
//! between requests beyond what the caller keeps in a [`Negotiation`]. It does not enumerate
//! the objects to send (that is `packgate-pack`'s job, given [`Negotiation::common()`]), and
//! it does not handle `shallow`/`deepen` yet. The client-side negotiator is not here yet.
//!
//! # Example
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = gix_odb::at("repo.git/objects", gix_hash::Kind::Sha1)?;
//! let want = gix_hash::ObjectId::from_hex(b"8b5d6aa0c5f4b0c8e5c1a2b3c4d5e6f708192a3b")?;
//! let have = gix_hash::ObjectId::from_hex(b"1f2e3d4c5b6a79880716253443526170f1e2d3c4")?;
//! let mut negotiation = packgate_negotiate::Negotiation::new(vec![want]);
//! let acknowledgments = negotiation.process_haves(&db, &[have])?;
//! for id in &acknowledgments.common {
//!     println!("ACK {id}");
//! }
//! if acknowledgments.ready {
//!     println!("ready");
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::{collections::BinaryHeap, ops::Range};

use packgate_object::QueueEntry;

use gix_hash::{oid, ObjectId};
use gix_hashtable::{HashMap, HashSet};
use gix_object::Kind;

/// The error of negotiation: reading the commit graph failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object database failed to read an object.
    #[error("could not read object {id}")]
    Read {
        /// The object.
        id: ObjectId,
        /// What went wrong.
        #[source]
        source: gix_error::Error,
    },
}

/// The answer to one round of haves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acknowledgments {
    /// The haves of this round that the server has, in the order the client sent them and
    /// each once: one `ACK` each. Empty means `NAK`.
    pub common: Vec<ObjectId>,
    /// Every want reaches a common commit: the server can send a pack now.
    pub ready: bool,
}

/// The server's side of negotiating a fetch: the wants, and what the haves so far tell.
///
/// Commits read once are remembered, so further rounds on the same instance are cheaper.
#[derive(Debug)]
pub struct Negotiation {
    wants: Vec<ObjectId>,
    common: Vec<ObjectId>,
    common_set: HashSet<ObjectId>,
    /// Whether any have was found, commit or not (git's `have_obj.nr > 0`).
    found_any: bool,
    /// The oldest committer date of a common have commit, 0 while there is none.
    oldest_have: u64,
    graph: Graph,
}

impl Negotiation {
    /// Start negotiating for `wants`.
    pub fn new(wants: Vec<ObjectId>) -> Self {
        Negotiation {
            wants,
            common: Vec::new(),
            common_set: HashSet::default(),
            found_any: false,
            oldest_have: 0,
            graph: Graph::default(),
        }
    }

    /// The wants this negotiation is for.
    pub fn wants(&self) -> &[ObjectId] {
        &self.wants
    }

    /// Every common have so far, each once, in the order first received: what the client is
    /// known to have, the haves for enumerating the pack.
    pub fn common(&self) -> &[ObjectId] {
        &self.common
    }

    /// Take a round of haves: acknowledge the ones the server has and say whether it is ready.
    ///
    /// Only commits (and tags, to peel wants) are read; for other haves the object header is
    /// enough.
    pub fn process_haves(
        &mut self,
        db: &(impl gix_object::Find + gix_object::FindHeader),
        haves: &[ObjectId],
    ) -> Result<Acknowledgments, Error> {
        let mut acknowledged = Vec::new();
        let mut this_round = HashSet::default();
        for have in haves {
            // git acknowledges a have sent twice once.
            if !this_round.insert(*have) {
                continue;
            }
            let header = db
                .try_header(have)
                .map_err(|source| Error::Read { id: *have, source })?;
            let Some(header) = header else {
                continue;
            };
            acknowledged.push(*have);
            if self.common_set.insert(*have) {
                self.common.push(*have);
            }
            self.found_any = true;
            if header.kind != Kind::Commit {
                continue;
            }
            let node = self.graph.node(have);
            if !self.graph.parse(db, node)? {
                continue;
            }
            // git treats 0 as "no have yet", even after a commit dated 0.
            let date = self.graph.nodes[node as usize].date;
            if self.oldest_have == 0 || date < self.oldest_have {
                self.oldest_have = date;
            }
            self.graph.nodes[node as usize].they_have = true;
            for position in self.graph.nodes[node as usize].parents.clone() {
                let parent = self.graph.parents[position as usize];
                self.graph.nodes[parent as usize].they_have = true;
            }
        }
        let ready = self.ok_to_give_up(db)?;
        Ok(Acknowledgments {
            common: acknowledged,
            ready,
        })
    }

    /// git's `ok_to_give_up()`: every wanted commit reaches a commit the client has.
    fn ok_to_give_up(&mut self, db: &impl gix_object::Find) -> Result<bool, Error> {
        if !self.found_any {
            return Ok(false);
        }
        let mut starts = Vec::with_capacity(self.wants.len());
        for want in &self.wants {
            let Some(commit) = self.graph.peel_to_commit(db, want)? else {
                // Not a commit: ancestry can't tell, so it doesn't count against `ready`.
                continue;
            };
            let node = self.graph.node(&commit);
            if !self.graph.parse(db, node)? {
                return Ok(false);
            }
            starts.push(node);
        }
        self.graph
            .all_reach_they_have(db, &starts, self.oldest_have)
    }
}

/// Which of `targets` are reachable from `tips`, for `uploadpack.allowReachableSHA1InWant`.
///
/// A target that is one of `tips` is reachable whatever its kind; otherwise only commits can
/// be, through the ancestry of the commits the tips peel to (git would also let a tree or blob
/// through, as its `rev-list` without `--objects` ignores them; here they are refused). Like git (which runs
/// `git rev-list <targets> --not <tips>` for this), the walk goes newest first and stops once
/// only commits reachable from the tips are left, plus a few more to tolerate clock skew: the
/// cost is the history between the targets and the tips, not the whole history.
pub fn reachable_from(
    db: &(impl gix_object::Find + gix_object::FindHeader),
    tips: &[ObjectId],
    targets: &[ObjectId],
) -> Result<HashSet<ObjectId>, Error> {
    let tip_set: HashSet<ObjectId> = tips.iter().copied().collect();
    let mut found: HashSet<ObjectId> = targets
        .iter()
        .filter(|id| tip_set.contains(*id))
        .copied()
        .collect();
    let mut graph = Graph::default();
    let mut walk = LimitedWalk::default();
    let mut target_nodes = Vec::new();
    for target in targets.iter().filter(|id| !found.contains(*id)) {
        let header = db.try_header(target).map_err(|source| Error::Read {
            id: *target,
            source,
        })?;
        if header.map(|header| header.kind) != Some(Kind::Commit) {
            continue;
        }
        let node = graph.node(target);
        if graph.parse(db, node)? {
            target_nodes.push((node, *target));
            walk.start(&mut graph, node);
        }
    }
    if target_nodes.is_empty() {
        return Ok(found);
    }
    for tip in tips {
        let Some(commit) = graph.peel_to_commit(db, tip)? else {
            continue;
        };
        let node = graph.node(&commit);
        if graph.parse(db, node)? {
            walk.set_uninteresting(&mut graph, node);
            walk.mark_parents_uninteresting(&mut graph, node);
            walk.start(&mut graph, node);
        }
    }
    walk.run(db, &mut graph)?;
    found.extend(
        target_nodes
            .into_iter()
            .filter(|(node, _)| graph.nodes[*node as usize].flags & UNINTERESTING != 0)
            .map(|(_, id)| id),
    );
    Ok(found)
}

/// A commit met during a walk; `date` and `parents` are only set once it is parsed.
#[derive(Debug, Clone)]
struct Node {
    id: ObjectId,
    date: u64,
    parents: Range<u32>,
    state: State,
    /// git's `THEY_HAVE`: a have commit or a parent of one.
    they_have: bool,
    /// Flags of the current walk.
    flags: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unparsed,
    Parsed,
    /// Missing, not a commit, or without a valid tree and parents.
    Unparsable,
}

/// [`Graph::all_reach_they_have()`]: visited (git's `COMMON_KNOWN` assign flag).
const ASSIGNED: u8 = 1 << 0;
/// [`Graph::all_reach_they_have()`]: reaches a commit the client has (git's `RESULT`).
const REACHES: u8 = 1 << 1;
/// [`LimitedWalk`]: reachable from a tip.
const UNINTERESTING: u8 = 1 << 2;
/// [`LimitedWalk`]: was put into the queue.
const SEEN: u8 = 1 << 3;
/// [`LimitedWalk`]: is in the queue now.
const IN_QUEUE: u8 = 1 << 4;

/// The commits read so far, as nodes with parent indices.
#[derive(Debug, Default)]
struct Graph {
    nodes: Vec<Node>,
    index: HashMap<ObjectId, u32>,
    parents: Vec<u32>,
    buf: Vec<u8>,
}

impl Graph {
    fn node(&mut self, id: &oid) -> u32 {
        if let Some(node) = self.index.get(id) {
            return *node;
        }
        let node = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        self.nodes.push(Node {
            id: id.to_owned(),
            date: 0,
            parents: 0..0,
            state: State::Unparsed,
            they_have: false,
            flags: 0,
        });
        self.index.insert(id.to_owned(), node);
        node
    }

    /// Read the commit at `node` unless that happened already; `false` if it can't be parsed.
    ///
    /// Like git, a commit is usable with a tree line and well-formed parent lines, and a
    /// committer date that can't be read is 0.
    fn parse(&mut self, db: &impl gix_object::Find, node: u32) -> Result<bool, Error> {
        match self.nodes[node as usize].state {
            State::Parsed => return Ok(true),
            State::Unparsable => return Ok(false),
            State::Unparsed => {}
        }
        let id = self.nodes[node as usize].id;
        let mut buf = std::mem::take(&mut self.buf);
        let parsed = match read(db, &id, &mut buf)? {
            Some((Kind::Commit, range)) => parse_commit(&buf[range], id.kind()),
            _ => None,
        };
        let Some((date, parents)) = parsed else {
            self.buf = buf;
            self.nodes[node as usize].state = State::Unparsable;
            return Ok(false);
        };
        let start = u32::try_from(self.parents.len()).unwrap_or(u32::MAX);
        for parent in parents {
            let parent = self.node(&parent);
            self.parents.push(parent);
        }
        let end = u32::try_from(self.parents.len()).unwrap_or(u32::MAX);
        self.buf = buf;
        let node = &mut self.nodes[node as usize];
        node.date = date;
        node.parents = start..end;
        node.state = State::Parsed;
        Ok(true)
    }

    /// Follow annotated tags from `id`; the commit at the end, if it is one.
    fn peel_to_commit(
        &mut self,
        db: &impl gix_object::Find,
        id: &ObjectId,
    ) -> Result<Option<ObjectId>, Error> {
        let mut current = *id;
        let mut buf = std::mem::take(&mut self.buf);
        // Tags can't form cycles, but the input is not trusted to be sound.
        let mut result = None;
        for _ in 0..64 {
            match read(db, &current, &mut buf)? {
                Some((Kind::Tag, range)) => match packgate_object::tag_target(&buf[range]) {
                    Some(target) => current = target,
                    None => break,
                },
                Some((Kind::Commit, _)) => {
                    result = Some(current);
                    break;
                }
                Some(_) | None => break,
            }
        }
        self.buf = buf;
        Ok(result)
    }

    /// git's `can_all_from_reach_with_flag()`: does every commit in `starts` reach a commit
    /// the client has, walking parents depth first but not onto commits older than `cutoff`?
    ///
    /// What a start's walk learns (a commit reaches, or was explored and does not) holds for
    /// the next start too, so shared history is walked once.
    fn all_reach_they_have(
        &mut self,
        db: &impl gix_object::Find,
        starts: &[u32],
        cutoff: u64,
    ) -> Result<bool, Error> {
        for node in &mut self.nodes {
            node.flags &= !(ASSIGNED | REACHES);
        }
        let reaches = |node: &Node| node.they_have || node.flags & REACHES != 0;
        let mut stack: Vec<u32> = Vec::new();
        for &start in starts {
            stack.clear();
            stack.push(start);
            while let Some(&top) = stack.last() {
                if reaches(&self.nodes[top as usize]) {
                    stack.pop();
                    if let Some(&below) = stack.last() {
                        self.nodes[below as usize].flags |= REACHES;
                    }
                    continue;
                }
                let mut descended = false;
                for position in self.nodes[top as usize].parents.clone() {
                    let parent = self.parents[position as usize];
                    if reaches(&self.nodes[parent as usize]) {
                        self.nodes[top as usize].flags |= REACHES;
                        break;
                    }
                    if self.nodes[parent as usize].flags & ASSIGNED != 0 {
                        continue;
                    }
                    self.nodes[parent as usize].flags |= ASSIGNED;
                    if !self.parse(db, parent)? || self.nodes[parent as usize].date < cutoff {
                        continue;
                    }
                    stack.push(parent);
                    descended = true;
                    break;
                }
                if !descended && !reaches(&self.nodes[top as usize]) {
                    stack.pop();
                }
            }
            if !reaches(&self.nodes[start as usize]) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// git's `SLOP`: how many uninteresting commits to take after the walk could stop.
const SLOP: u8 = 5;

/// git's `limit_list()`: walk newest first from interesting and uninteresting commits, spread
/// the uninteresting mark to parents, and stop once only uninteresting commits are left.
#[derive(Default)]
struct LimitedWalk {
    queue: BinaryHeap<QueueEntry>,
    next_seq: u64,
    interesting_in_queue: usize,
}

impl LimitedWalk {
    /// Queue the parsed commit `node` unless it was queued before.
    fn start(&mut self, graph: &mut Graph, node: u32) {
        let entry = &mut graph.nodes[node as usize];
        if entry.flags & SEEN != 0 {
            return;
        }
        entry.flags |= SEEN | IN_QUEUE;
        if entry.flags & UNINTERESTING == 0 {
            self.interesting_in_queue += 1;
        }
        self.queue.push(QueueEntry {
            date: entry.date,
            seq: self.next_seq,
            node,
        });
        self.next_seq += 1;
    }

    fn set_uninteresting(&mut self, graph: &mut Graph, node: u32) -> bool {
        let entry = &mut graph.nodes[node as usize];
        if entry.flags & UNINTERESTING != 0 {
            return false;
        }
        entry.flags |= UNINTERESTING;
        if entry.flags & IN_QUEUE != 0 {
            self.interesting_in_queue -= 1;
        }
        true
    }

    /// Spread the uninteresting mark from `node` through every ancestor parsed so far.
    fn mark_parents_uninteresting(&mut self, graph: &mut Graph, node: u32) {
        let mut stack: Vec<u32> = Vec::new();
        let parents = graph.nodes[node as usize].parents.clone();
        stack.extend(parents.map(|position| graph.parents[position as usize]));
        while let Some(node) = stack.pop() {
            if self.set_uninteresting(graph, node) {
                let parents = graph.nodes[node as usize].parents.clone();
                stack.extend(parents.map(|position| graph.parents[position as usize]));
            }
        }
    }

    fn run(&mut self, db: &impl gix_object::Find, graph: &mut Graph) -> Result<(), Error> {
        let mut last_interesting_date = u64::MAX;
        let mut slop = SLOP;
        while let Some(QueueEntry { node, .. }) = self.queue.pop() {
            let entry = &mut graph.nodes[node as usize];
            entry.flags &= !IN_QUEUE;
            let uninteresting = entry.flags & UNINTERESTING != 0;
            if !uninteresting {
                self.interesting_in_queue -= 1;
            }
            for position in graph.nodes[node as usize].parents.clone() {
                let parent = graph.parents[position as usize];
                if uninteresting {
                    self.set_uninteresting(graph, parent);
                }
                // Unlike `git rev-list`, a missing parent is not fatal here: that history
                // just can't make anything reachable.
                if !graph.parse(db, parent)? {
                    continue;
                }
                if uninteresting {
                    self.mark_parents_uninteresting(graph, parent);
                }
                self.start(graph, parent);
            }
            if graph.nodes[node as usize].flags & UNINTERESTING != 0 {
                self.mark_parents_uninteresting(graph, node);
                slop = match self.queue.peek() {
                    None => 0,
                    Some(head)
                        if last_interesting_date <= head.date || self.interesting_in_queue > 0 =>
                    {
                        SLOP
                    }
                    Some(_) => slop - 1,
                };
                if slop == 0 {
                    break;
                }
                continue;
            }
            last_interesting_date = graph.nodes[node as usize].date;
        }
        Ok(())
    }
}

/// Read `id` into `buf`; its kind and where in `buf` its data is.
fn read(
    db: &impl gix_object::Find,
    id: &oid,
    buf: &mut Vec<u8>,
) -> Result<Option<(Kind, Range<usize>)>, Error> {
    packgate_object::read(db, id, buf).map_err(|source| Error::Read {
        id: id.to_owned(),
        source,
    })
}

/// The committer date and parents of a commit, the way git's `parse_commit_buffer()` reads
/// them: `None` without a tree line or with a malformed parent line.
fn parse_commit(data: &[u8], kind: gix_hash::Kind) -> Option<(u64, Vec<ObjectId>)> {
    let hex_len = kind.len_in_hex();
    let tree_line_len = b"tree ".len() + hex_len + 1;
    let tree_line = data.get(..tree_line_len)?;
    if !tree_line.starts_with(b"tree ") || tree_line[tree_line_len - 1] != b'\n' {
        return None;
    }
    ObjectId::from_hex(&tree_line[5..5 + hex_len]).ok()?;
    let parent_line_len = b"parent ".len() + hex_len + 1;
    let mut end = tree_line_len;
    let mut parents = Vec::new();
    while let Some(line) = data.get(end..end + parent_line_len) {
        if !line.starts_with(b"parent ") {
            break;
        }
        if line[parent_line_len - 1] != b'\n' {
            return None;
        }
        parents.push(ObjectId::from_hex(&line[7..7 + hex_len]).ok()?);
        end += parent_line_len;
    }
    Some((packgate_object::commit_date(&data[end..]), parents))
}

#[cfg(test)]
mod tests;
