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
//! it does not write `shallow-info`: [`shallow`] computes the boundary, the caller sends it.
//! The client side of negotiation is [`client`].
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

use std::ops::Range;

use packgate_object::{flag, CommitGraph, LimitedWalk};

use gix_hash::{oid, ObjectId};
use gix_hashtable::HashSet;
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

impl From<packgate_object::ReadError> for Error {
    fn from(err: packgate_object::ReadError) -> Self {
        Error::Read {
            id: err.id,
            source: err.source,
        }
    }
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

/// What the server makes of one have (protocol v0/v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Have {
    /// The server does not have the object.
    Missing,
    /// The server has it; `new` unless it is a commit already known to be the client's.
    Common {
        /// Whether it told something new (git's `got_oid()` returning 1).
        new: bool,
    },
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
    /// git's `have_obj.nr`: see [`Negotiation::new_haves()`].
    new_haves: usize,
    graph: CommitGraph,
    /// For reading tags.
    buf: Vec<u8>,
}

impl Negotiation {
    /// Start negotiating for `wants`.
    pub fn new(wants: Vec<ObjectId>) -> Self {
        Self::with_grafts(wants, HashSet::default())
    }

    /// Start negotiating for `wants`, with the commits of `grafts` taken as parentless (git's
    /// registered shallow commits: the repository's and the client's): a have's parents
    /// beyond the client's boundary are not the client's.
    pub fn with_grafts(wants: Vec<ObjectId>, grafts: HashSet<ObjectId>) -> Self {
        Negotiation {
            wants,
            common: Vec::new(),
            common_set: HashSet::default(),
            found_any: false,
            oldest_have: 0,
            new_haves: 0,
            graph: CommitGraph::with_grafts(grafts),
            buf: Vec::new(),
        }
    }

    /// Read commits from the repository's commit-graph where it has them.
    pub fn use_commit_graph(&mut self, graph: Option<packgate_object::CommitGraphFile>) {
        self.graph.use_commit_graph(graph);
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
            // git acknowledges only what it did not know the client had (`have_obj`): a
            // commit that is a parent of an earlier have is common without an ACK.
            if self.mark(db, have, header.kind)? {
                acknowledged.push(*have);
            }
        }
        let ready = self.ok_to_give_up(db)?;
        Ok(Acknowledgments {
            common: acknowledged,
            ready,
        })
    }

    /// Take one have, as protocol v0/v1 sends them (git's `got_oid()`): whether the server
    /// has it, and if so whether it told something new. A commit the client was already known
    /// to have (sent before, or a parent of a have) tells nothing new.
    pub fn have(
        &mut self,
        db: &(impl gix_object::Find + gix_object::FindHeader),
        id: &ObjectId,
    ) -> Result<Have, Error> {
        let header = db
            .try_header(id)
            .map_err(|source| Error::Read { id: *id, source })?;
        match header {
            None => Ok(Have::Missing),
            Some(header) => Ok(Have::Common {
                new: self.mark(db, id, header.kind)?,
            }),
        }
    }

    /// How many haves told something new (git's `have_obj.nr`): every common non-commit,
    /// and every common commit not known to be the client's before.
    pub fn new_haves(&self) -> usize {
        self.new_haves
    }

    /// git's `ok_to_give_up()`: there is a common have and every wanted commit reaches a
    /// commit the client has.
    pub fn ready(
        &mut self,
        db: &(impl gix_object::Find + gix_object::FindHeader),
    ) -> Result<bool, Error> {
        self.ok_to_give_up(db)
    }

    /// Record a have the server has (git's `do_got_oid()`); `true` unless it is a commit
    /// already marked as the client's.
    fn mark(
        &mut self,
        db: &impl gix_object::Find,
        have: &ObjectId,
        kind: Kind,
    ) -> Result<bool, Error> {
        if self.common_set.insert(*have) {
            self.common.push(*have);
        }
        self.found_any = true;
        let mut known = false;
        if kind == Kind::Commit {
            let node = self.graph.node(have);
            if parse(&mut self.graph, db, node)? {
                // git treats 0 as "no have yet", even after a commit dated 0.
                let date = self.graph.nodes[node as usize].date;
                if self.oldest_have == 0 || date < self.oldest_have {
                    self.oldest_have = date;
                }
                known = self.graph.flags(node) & THEY_HAVE != 0;
                self.graph.nodes[node as usize].flags |= THEY_HAVE;
                for position in self.graph.get(node).parents.clone() {
                    let parent = self.graph.parent(position);
                    self.graph.nodes[parent as usize].flags |= THEY_HAVE;
                }
            }
        }
        if !known {
            self.new_haves += 1;
        }
        Ok(!known)
    }

    /// git's `ok_to_give_up()`: every wanted commit reaches a commit the client has.
    fn ok_to_give_up(&mut self, db: &impl gix_object::Find) -> Result<bool, Error> {
        if !self.found_any {
            return Ok(false);
        }
        let mut starts = Vec::with_capacity(self.wants.len());
        for want in &self.wants {
            let Some(commit) = peel_to_commit(db, want, &mut self.buf)? else {
                // Not a commit: ancestry can't tell, so it doesn't count against `ready`.
                continue;
            };
            let node = self.graph.node(&commit);
            if !parse(&mut self.graph, db, node)? {
                return Ok(false);
            }
            starts.push(node);
        }
        all_reach_they_have(&mut self.graph, db, &starts, self.oldest_have)
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
    let mut graph = CommitGraph::default();
    let mut buf = Vec::new();
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
        if parse(&mut graph, db, node)? {
            target_nodes.push((node, *target));
            walk.push(&mut graph, node);
        }
    }
    if target_nodes.is_empty() {
        return Ok(found);
    }
    for tip in tips {
        let Some(commit) = peel_to_commit(db, tip, &mut buf)? else {
            continue;
        };
        let node = graph.node(&commit);
        if parse(&mut graph, db, node)? {
            walk.set_uninteresting(&mut graph, node);
            walk.mark_parents_uninteresting(&mut graph, node);
            walk.push(&mut graph, node);
        }
    }
    // Unlike `git rev-list`, a missing parent is not fatal here: that history just can't
    // make anything reachable.
    walk.run(
        &mut graph,
        |graph, edge| parse(graph, db, edge.parent),
        |_, _| Ok(()),
    )?;
    found.extend(
        target_nodes
            .into_iter()
            .filter(|(node, _)| graph.flags(*node) & flag::UNINTERESTING != 0)
            .map(|(_, id)| id),
    );
    Ok(found)
}

/// [`all_reach_they_have()`]: visited (git's `COMMON_KNOWN` assign flag).
const ASSIGNED: u16 = flag::FIRST_FREE;
/// [`all_reach_they_have()`]: reaches a commit the client has (git's `RESULT`).
const REACHES: u16 = flag::FIRST_FREE << 1;
/// git's `THEY_HAVE`: a have commit or a parent of one.
const THEY_HAVE: u16 = flag::FIRST_FREE << 2;

/// Read the commit at `node` unless that happened already; `false` if it can't be parsed.
///
/// Like git, a commit is usable with a tree line and well-formed parent lines, and a
/// committer date that can't be read is 0.
fn parse(graph: &mut CommitGraph, db: &impl gix_object::Find, node: u32) -> Result<bool, Error> {
    graph.parse_gently(db, node).map_err(Error::from)
}

/// Follow annotated tags from `id`; the commit at the end, if it is one.
fn peel_to_commit(
    db: &impl gix_object::Find,
    id: &ObjectId,
    buf: &mut Vec<u8>,
) -> Result<Option<ObjectId>, Error> {
    let mut current = *id;
    // Tags can't form cycles, but the input is not trusted to be sound.
    for _ in 0..64 {
        match read(db, &current, buf)? {
            Some((Kind::Tag, range)) => match packgate_object::tag_target(&buf[range]) {
                Some(target) => current = target,
                None => return Ok(None),
            },
            Some((Kind::Commit, _)) => return Ok(Some(current)),
            Some(_) | None => return Ok(None),
        }
    }
    Ok(None)
}

/// git's `can_all_from_reach_with_flag()`: does every commit in `starts` reach a commit
/// the client has, walking parents depth first but not onto commits older than `cutoff`?
///
/// What a start's walk learns (a commit reaches, or was explored and does not) holds for
/// the next start too, so shared history is walked once.
fn all_reach_they_have(
    graph: &mut CommitGraph,
    db: &impl gix_object::Find,
    starts: &[u32],
    cutoff: u64,
) -> Result<bool, Error> {
    for node in &mut graph.nodes {
        node.flags &= !(ASSIGNED | REACHES);
    }
    let reaches = |graph: &CommitGraph, node: u32| graph.flags(node) & (THEY_HAVE | REACHES) != 0;
    let mut stack: Vec<u32> = Vec::new();
    for &start in starts {
        stack.clear();
        stack.push(start);
        while let Some(&top) = stack.last() {
            if reaches(graph, top) {
                stack.pop();
                if let Some(&below) = stack.last() {
                    graph.nodes[below as usize].flags |= REACHES;
                }
                continue;
            }
            let mut descended = false;
            for position in graph.get(top).parents.clone() {
                let parent = graph.parent(position);
                if reaches(graph, parent) {
                    graph.nodes[top as usize].flags |= REACHES;
                    break;
                }
                if graph.flags(parent) & ASSIGNED != 0 {
                    continue;
                }
                graph.nodes[parent as usize].flags |= ASSIGNED;
                if !parse(graph, db, parent)? || graph.get(parent).date < cutoff {
                    continue;
                }
                stack.push(parent);
                descended = true;
                break;
            }
            if !descended && !reaches(graph, top) {
                stack.pop();
            }
        }
        if !reaches(graph, start) {
            return Ok(false);
        }
    }
    Ok(true)
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

pub mod client;
pub mod shallow;
pub mod v0;

#[cfg(test)]
mod tests;
