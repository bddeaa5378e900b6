//! Fetch negotiation, server side: which of a client's haves are common, and when the
//! server has seen enough to send a pack.
//!
//! For one protocol-v2 `fetch` request (v2 keeps no negotiation state between requests: the
//! client repeats its common haves each round), [`Negotiation::process_haves()`] follows
//! git's upload-pack:
//!
//! * every have the server has is common and is acknowledged, in the order received;
//! * a commit among them, and each of its parents, is marked as something the client has;
//! * `ready` (git's ok-to-give-up) holds when there is a common have and every wanted
//!   commit reaches a marked commit, without walking into commits older than the oldest
//!   common have commit (git's date cutoff). Wants that are not commits after peeling tags
//!   cannot be judged by ancestry and do not hold `ready` back, as in git.
//!
//! [`reachable_from()`] answers the other question upload-pack asks of the commit graph:
//! which wants are reachable from the advertised tips (`uploadpack.allowReachableSHA1InWant`).
//!
//! This crate knows nothing about the wire: it reads commits through [`gix_object::Find`]
//! and returns decisions. The client-side negotiator is not here yet.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = gix_odb::at("repo.git/objects", gix_hash::Kind::Sha1)?;
//! let want = gix_hash::ObjectId::from_hex(b"8b5d6aa0c5f4b0c8e5c1a2b3c4d5e6f708192a3b")?;
//! let have = gix_hash::ObjectId::from_hex(b"1f2e3d4c5b6a79880716253443526170f1e2d3c4")?;
//! let mut negotiation = packgate_negotiate::Negotiation::new(vec![want]);
//! let acks = negotiation.process_haves(&db, &[have])?;
//! println!("ACK {:?}, ready: {}", acks.common, acks.ready);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::collections::VecDeque;

use gix_hash::ObjectId;
use gix_hashtable::{HashMap, HashSet};
use gix_object::{CommitRefIter, Kind, TagRefIter};

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
    /// An object could not be parsed.
    #[error("{kind} {id} is corrupt")]
    Corrupt {
        /// The object.
        id: ObjectId,
        /// Its kind.
        kind: Kind,
        /// What went wrong.
        #[source]
        source: gix_error::Error,
    },
}

/// The answer to one round of haves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acknowledgments {
    /// The haves of this round that the server has, in the order the client sent them.
    pub common: Vec<ObjectId>,
    /// Every want reaches a common commit: the server can send a pack now.
    pub ready: bool,
}

/// A parsed commit: what the walks need of it.
#[derive(Debug, Clone)]
struct Commit {
    parents: Vec<ObjectId>,
    date: i64,
}

/// Reads and remembers commits.
#[derive(Default)]
struct CommitCache {
    commits: HashMap<ObjectId, Option<Commit>>,
    buf: Vec<u8>,
}

impl CommitCache {
    /// The commit `id`, or `None` if it is missing or not a commit.
    fn get(&mut self, db: &impl gix_object::Find, id: &ObjectId) -> Result<Option<&Commit>, Error> {
        if !self.commits.contains_key(id) {
            let commit = match db
                .try_find(id, &mut self.buf)
                .map_err(|source| Error::Read { id: *id, source })?
            {
                Some(data) if data.kind == Kind::Commit => Some(parse_commit(id, data.data)?),
                _ => None,
            };
            self.commits.insert(*id, commit);
        }
        Ok(self.commits.get(id).and_then(Option::as_ref))
    }
}

fn parse_commit(id: &ObjectId, data: &[u8]) -> Result<Commit, Error> {
    let corrupt = |source| Error::Corrupt {
        id: *id,
        kind: Kind::Commit,
        source,
    };
    let parents = CommitRefIter::from_bytes(data, gix_hash::Kind::Sha1)
        .parent_ids()
        .collect();
    let date = CommitRefIter::from_bytes(data, gix_hash::Kind::Sha1)
        .committer()
        .map_err(corrupt)?
        .seconds();
    Ok(Commit { parents, date })
}

/// Follow annotated tags from `id` to what they finally point at.
fn peel(
    db: &impl gix_object::Find,
    id: ObjectId,
    buf: &mut Vec<u8>,
) -> Result<Option<(ObjectId, Kind)>, Error> {
    let mut current = id;
    // Bounded: a cycle of tags cannot exist in a sound repository, but input is never trusted.
    for _ in 0..64 {
        let Some(data) = db.try_find(&current, buf).map_err(|source| Error::Read {
            id: current,
            source,
        })?
        else {
            return Ok(None);
        };
        if data.kind != Kind::Tag {
            return Ok(Some((current, data.kind)));
        }
        current = TagRefIter::from_bytes(data.data, gix_hash::Kind::Sha1)
            .target_id()
            .map_err(|source| Error::Corrupt {
                id: current,
                kind: Kind::Tag,
                source,
            })?;
    }
    Ok(None)
}

/// The server's side of negotiating one fetch request.
pub struct Negotiation {
    wants: Vec<ObjectId>,
    common: Vec<ObjectId>,
    /// Have commits and their parents: commits the client has.
    they_have: HashSet<ObjectId>,
    /// Any have that was found, commit or not.
    have_objects: usize,
    oldest_have: Option<i64>,
    commits: CommitCache,
}

impl Negotiation {
    /// Start negotiating for `wants`.
    pub fn new(wants: Vec<ObjectId>) -> Self {
        Negotiation {
            wants,
            common: Vec::new(),
            they_have: HashSet::default(),
            have_objects: 0,
            oldest_have: None,
            commits: CommitCache::default(),
        }
    }

    /// All common haves so far, in the order received.
    pub fn common(&self) -> &[ObjectId] {
        &self.common
    }

    /// Take a round of haves: acknowledge the ones the server has and say whether it is ready.
    pub fn process_haves(
        &mut self,
        db: &(impl gix_object::Find + gix_object::Exists),
        haves: &[ObjectId],
    ) -> Result<Acknowledgments, Error> {
        let mut acknowledged = Vec::new();
        for have in haves {
            if !db.exists(have) {
                continue;
            }
            acknowledged.push(*have);
            self.common.push(*have);
            self.have_objects += 1;
            if let Some(commit) = self.commits.get(db, have)? {
                let date = commit.date;
                let parents = commit.parents.clone();
                self.oldest_have = Some(self.oldest_have.map_or(date, |oldest| oldest.min(date)));
                self.they_have.insert(*have);
                self.they_have.extend(parents);
            } else {
                self.they_have.insert(*have);
            }
        }
        let ready = self.ok_to_give_up(db)?;
        Ok(Acknowledgments {
            common: acknowledged,
            ready,
        })
    }

    /// git's ok-to-give-up: every wanted commit reaches a commit the client has.
    fn ok_to_give_up(&mut self, db: &impl gix_object::Find) -> Result<bool, Error> {
        if self.have_objects == 0 {
            return Ok(false);
        }
        let cutoff = self.oldest_have.unwrap_or(i64::MIN);
        let mut buf = Vec::new();
        // Commits known to reach a have; shared between wants.
        let mut reaches: HashSet<ObjectId> = HashSet::default();
        for want in self.wants.clone() {
            let Some((commit, kind)) = peel(db, want, &mut buf)? else {
                continue;
            };
            if kind != Kind::Commit {
                continue;
            }
            if !self.reaches_a_have(db, commit, cutoff, &mut reaches)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn reaches_a_have(
        &mut self,
        db: &impl gix_object::Find,
        start: ObjectId,
        cutoff: i64,
        reaches: &mut HashSet<ObjectId>,
    ) -> Result<bool, Error> {
        let mut queue = VecDeque::from([start]);
        let mut seen: HashSet<ObjectId> = HashSet::default();
        seen.insert(start);
        while let Some(id) = queue.pop_front() {
            if self.they_have.contains(&id) || reaches.contains(&id) {
                reaches.insert(start);
                return Ok(true);
            }
            let Some(commit) = self.commits.get(db, &id)? else {
                continue;
            };
            for parent in commit.parents.clone() {
                if !seen.insert(parent) {
                    continue;
                }
                if self.they_have.contains(&parent) || reaches.contains(&parent) {
                    reaches.insert(start);
                    return Ok(true);
                }
                // Do not walk below the oldest have: the client would have said so.
                match self.commits.get(db, &parent)? {
                    Some(commit) if commit.date >= cutoff => queue.push_back(parent),
                    _ => {}
                }
            }
        }
        Ok(false)
    }
}

/// Which of `targets` are reachable from `tips` through commit ancestry (tags peeled).
/// Targets that are tips themselves are reachable; non-commit targets only then.
pub fn reachable_from(
    db: &impl gix_object::Find,
    tips: &[ObjectId],
    targets: &[ObjectId],
) -> Result<HashSet<ObjectId>, Error> {
    let mut pending: HashSet<ObjectId> = targets.iter().copied().collect();
    let mut found = HashSet::default();
    let mut buf = Vec::new();
    let mut commits = CommitCache::default();
    let mut queue = VecDeque::new();
    let mut seen: HashSet<ObjectId> = HashSet::default();
    for tip in tips {
        if pending.remove(tip) {
            found.insert(*tip);
        }
        if let Some((id, Kind::Commit)) = peel(db, *tip, &mut buf)? {
            if seen.insert(id) {
                queue.push_back(id);
            }
        }
    }
    while let Some(id) = queue.pop_front() {
        if pending.is_empty() {
            break;
        }
        if pending.remove(&id) {
            found.insert(id);
        }
        let Some(commit) = commits.get(db, &id)? else {
            continue;
        };
        for parent in commit.parents.clone() {
            if seen.insert(parent) {
                queue.push_back(parent);
            }
        }
    }
    Ok(found)
}
