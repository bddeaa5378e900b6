//! Which remote refs the local repository has completely and recently (git's
//! `mark_complete_and_common_ref()`): those are told to the negotiator as known common.
//!
//! git marks every local ref's commit complete, then walks their history newest first down
//! to the date of the newest remote ref the repository has (the cut-off), marking parents
//! complete. A remote ref whose commit ends up marked is known common: sent as a have, its
//! ancestors not. One that is present but older than the cut-off, or not reachable from a
//! local ref, is not: the negotiation finds it like any other commit.

use std::collections::BinaryHeap;

use gix_hash::ObjectId;
use gix_hashtable::HashSet;
use packgate_object::{tag_target, CommitHeader};

/// Bound on tag chains followed while peeling.
const MAX_PEEL: usize = 64;

/// The commit `id` peels to and its date, if the repository has it.
fn commit(db: &impl gix_object::Find, id: &ObjectId, buf: &mut Vec<u8>) -> Option<(ObjectId, u64)> {
    let mut current = *id;
    for _ in 0..MAX_PEEL {
        let data = db.try_find(&current, buf).ok()??;
        match data.kind {
            gix_object::Kind::Tag => current = tag_target(data.data)?,
            gix_object::Kind::Commit => {
                let header = CommitHeader::parse(data.data, gix_hash::Kind::Sha1).ok()?;
                return Some((current, header.date));
            }
            _ => return None,
        }
    }
    None
}

/// Of `remote` (the remote refs' ids), the commits that are complete here, given the local
/// refs' ids `local`.
pub(super) fn known_common(
    db: &impl gix_object::Find,
    remote: &[ObjectId],
    local: &[ObjectId],
) -> Vec<ObjectId> {
    let mut buf = Vec::new();
    let remote: Vec<(ObjectId, u64)> = remote
        .iter()
        .filter_map(|id| commit(db, id, &mut buf))
        .collect();
    let Some(cutoff) = remote.iter().map(|(_, date)| *date).max() else {
        return Vec::new();
    };
    let mut complete: HashSet<ObjectId> = HashSet::default();
    let mut queue = BinaryHeap::new();
    for id in local {
        if let Some((commit, date)) = commit(db, id, &mut buf) {
            if complete.insert(commit) {
                queue.push((date, commit));
            }
        }
    }
    while let Some((date, id)) = queue.pop() {
        if date < cutoff {
            break;
        }
        let Ok(Some(data)) = db.try_find(&id, &mut buf) else {
            continue;
        };
        let Ok(header) = CommitHeader::parse(data.data, gix_hash::Kind::Sha1) else {
            continue;
        };
        let parents: Vec<ObjectId> = header.parents().collect();
        for parent in parents {
            if complete.insert(parent) {
                if let Some((_, date)) = commit(db, &parent, &mut buf) {
                    queue.push((date, parent));
                }
            }
        }
    }
    let mut known: Vec<ObjectId> = remote
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| complete.contains(id))
        .collect();
    known.dedup();
    known
}
