//! Which shallow roots a push from a shallow clone brings, per new tip.
//!
//! A shallow clone tells the server the commits its history stops at (`shallow <id>` lines,
//! its own `.git/shallow`). Where a pushed tip reaches one of them without passing through
//! history the server already has complete, accepting that tip makes the server's history
//! shallow there too: the commit has to join the server's `$GIT_DIR/shallow`, or its missing
//! parents make the repository corrupt. git calls this assigning shallow commits to refs
//! (`assign_shallow_commits_to_refs()` in its `shallow.c`); this is the same decision.
//!
//! The walk: new tips interesting, the existing ref tips uninteresting, newest first
//! ([`LimitedWalk`] with git's slop, so the uninteresting side is as exact as `git rev-list`'s),
//! a candidate root or a graft (the server's own shallow commits) ending its line of history
//! on the interesting side. Every commit still interesting afterwards is history the push
//! brings or the server has without a ref leading to it; from each new tip, the candidates
//! reached through those commits are the roots that tip needs. A candidate reached only
//! through existing history is complete on the server already (git's reachability test of
//! "our" shallow commits), and needs nothing.

use gix_hash::ObjectId;
use gix_hashtable::HashSet;
use gix_object::Kind;
use packgate_object::{flag, tag_target, CommitGraph, Edge, LimitedWalk, ReadError, Stop};

/// The error returned by [`shallow_roots_by_tip()`]: reading an object failed (a missing or
/// unparsable commit only ends a line of history here; the connectivity check judges those).
#[derive(Debug, thiserror::Error)]
#[error("could not read object {id} while looking for shallow roots")]
pub struct ShallowWalkError {
    /// The object.
    pub id: ObjectId,
    /// What went wrong.
    #[source]
    pub source: gix_error::Error,
}

impl From<ReadError> for ShallowWalkError {
    fn from(err: ReadError) -> Self {
        ShallowWalkError {
            id: err.id,
            source: err.source,
        }
    }
}

/// For each of `new_tips`, the `candidates` it reaches without passing through history that
/// `existing_tips` reach, in the order of `candidates`.
///
/// `candidates` are the client's shallow commits that `objects` has (the server's own
/// shallow commits left out: they are in `grafts` already); `grafts` are commits whose
/// parents are not part of the history (`$GIT_DIR/shallow`). Tags among the tips are peeled;
/// a tip that is not a commit reaches nothing. An empty list for a tip means its history is
/// complete with what the server has: no new shallow root.
pub fn shallow_roots_by_tip(
    objects: &impl gix_object::Find,
    new_tips: &[ObjectId],
    existing_tips: &[ObjectId],
    candidates: &[ObjectId],
    grafts: &HashSet<ObjectId>,
) -> Result<Vec<Vec<ObjectId>>, ShallowWalkError> {
    if candidates.is_empty() {
        return Ok(vec![Vec::new(); new_tips.len()]);
    }
    let bottoms: HashSet<ObjectId> = candidates.iter().copied().collect();
    let mut graph = CommitGraph::default();
    let mut walk = LimitedWalk::new(Stop::AfterSlop);
    let mut buffer = Vec::new();
    for &tip in existing_tips {
        let Some(commit) = peel_to_commit(objects, tip, &mut buffer)? else {
            continue;
        };
        let node = graph.node(&commit);
        walk.set_uninteresting(&mut graph, node);
        if graph.parse_gently(objects, node)? {
            walk.mark_parents_uninteresting(&mut graph, node);
            walk.push(&mut graph, node);
        }
    }
    let mut starts = Vec::with_capacity(new_tips.len());
    for &tip in new_tips {
        let node = match peel_to_commit(objects, tip, &mut buffer)? {
            Some(commit) => {
                let node = graph.node(&commit);
                if graph.parse_gently(objects, node)? {
                    walk.push(&mut graph, node);
                }
                Some(node)
            }
            None => None,
        };
        starts.push(node);
    }
    walk.run(
        &mut graph,
        |graph, edge: Edge| {
            let child = graph.get(edge.child).id;
            if grafts.contains(&child) || (!edge.gently && bottoms.contains(&child)) {
                return Ok(false);
            }
            graph.parse_gently(objects, edge.parent)
        },
        |_, _| Ok::<(), ReadError>(()),
    )?;

    // From each tip, through commits that stayed interesting: the candidates reached.
    let mut visited: Vec<u32> = Vec::new();
    let mut stamp = 0u32;
    let mut stack = Vec::new();
    let mut out = Vec::with_capacity(new_tips.len());
    for start in starts {
        let Some(start) = start else {
            out.push(Vec::new());
            continue;
        };
        stamp += 1;
        visited.resize(graph.nodes.len(), 0);
        let mut reached: HashSet<ObjectId> = HashSet::default();
        stack.clear();
        stack.push(start);
        while let Some(node) = stack.pop() {
            if visited[node as usize] == stamp {
                continue;
            }
            visited[node as usize] = stamp;
            let commit = graph.get(node);
            if commit.flags & flag::UNINTERESTING != 0 {
                continue;
            }
            if bottoms.contains(&commit.id) {
                reached.insert(commit.id);
                continue;
            }
            if grafts.contains(&commit.id) || commit.flags & flag::PARSED == 0 {
                continue;
            }
            stack.extend(
                commit
                    .parents
                    .clone()
                    .map(|position| graph.parent(position)),
            );
        }
        out.push(
            candidates
                .iter()
                .filter(|id| reached.contains(*id))
                .copied()
                .collect(),
        );
    }
    Ok(out)
}

/// The commit `tip` peels to; `None` for a tree, a blob or what can't be read.
fn peel_to_commit(
    objects: &impl gix_object::Find,
    tip: ObjectId,
    buffer: &mut Vec<u8>,
) -> Result<Option<ObjectId>, ShallowWalkError> {
    let mut id = tip;
    // Tags may point at tags: bounded against cycles.
    for _ in 0..64 {
        let data = objects
            .try_find(&id, buffer)
            .map_err(|source| ShallowWalkError { id, source })?;
        match data.map(|data| (data.kind, data.data)) {
            Some((Kind::Tag, data)) => match tag_target(data) {
                Some(target) => id = target,
                None => return Ok(None),
            },
            Some((Kind::Commit, _)) => return Ok(Some(id)),
            _ => return Ok(None),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    use packgate_object::testing::{numbered_id as id, NumberedCommits as Db};

    fn check(
        db: &Db,
        new: &[u32],
        existing: &[u32],
        candidates: &[u32],
        grafts: &[u32],
        expected: &[&[u32]],
    ) {
        let ids = |numbers: &[u32]| numbers.iter().map(|n| id(*n)).collect::<Vec<_>>();
        let grafts: HashSet<ObjectId> = grafts.iter().map(|n| id(*n)).collect();
        let actual =
            shallow_roots_by_tip(db, &ids(new), &ids(existing), &ids(candidates), &grafts).unwrap();
        let expected: Vec<Vec<ObjectId>> = expected.iter().map(|e| ids(e)).collect();
        assert_eq!(
            actual, expected,
            "new {new:?} existing {existing:?} candidates {candidates:?}"
        );
    }

    /// The common case: a depth-1 clone of the server's branch (boundary 2) pushes 3 on top.
    /// The server has 2 with its history: no new root.
    #[test]
    fn a_boundary_in_complete_history_needs_nothing() {
        let mut db = Db::default();
        db.numbered(1, &[]).numbered(2, &[1]).numbered(3, &[2]);
        check(&db, &[3], &[2], &[2], &[], &[&[]]);
        // Also when the branch moved on since the clone and 2 is deeper in its history.
        db.numbered(4, &[2]).numbered(5, &[4]);
        check(&db, &[3], &[5], &[2], &[], &[&[]]);
    }

    /// Into an empty repository, or one with unrelated history: the boundary commit the push
    /// brings becomes a shallow root of every tip that reaches it.
    #[test]
    fn a_boundary_the_push_brings_is_a_new_root() {
        let mut db = Db::default();
        // 2 is the client's boundary (its parent 1 is not sent), 3 and 4 are built on it.
        db.numbered(2, &[1]).numbered(3, &[2]).numbered(4, &[3]);
        check(&db, &[4, 3], &[], &[2], &[], &[&[2], &[2]]);
        db.numbered(10, &[]);
        check(&db, &[4], &[10], &[2], &[], &[&[2]]);
    }

    /// Of several refs, only those whose new history reaches a boundary need it; a tip
    /// reaching two boundaries needs both, in the client's order.
    #[test]
    fn roots_are_assigned_per_tip() {
        let mut db = Db::default();
        db.numbered(1, &[]).numbered(2, &[1]); // the server's history
        db.numbered(4, &[40]).numbered(5, &[4]); // 4 is a boundary it lacks
        db.numbered(6, &[2]).numbered(7, &[5, 6]);
        db.numbered(8, &[2]);
        check(&db, &[7, 8, 6], &[2], &[4, 2], &[], &[&[4], &[], &[]]);
        db.numbered(3, &[30])
            .numbered(9, &[3])
            .numbered(11, &[9, 5]); // 3 is another boundary
        check(&db, &[11], &[2], &[4, 3], &[], &[&[4, 3]]);
    }

    /// A boundary the server has only as an unreachable object (a leftover of an old push)
    /// is not complete history there: it becomes a root.
    #[test]
    fn an_unreachable_boundary_is_a_new_root() {
        let mut db = Db::default();
        db.numbered(1, &[]).numbered(2, &[1]);
        db.numbered(4, &[3]).numbered(5, &[4]);
        check(&db, &[5], &[2], &[4], &[], &[&[4]]);
    }

    /// The server's own shallow commits end history: nothing below them is looked for, and a
    /// client boundary hidden below one is not reached.
    #[test]
    fn grafts_end_history() {
        let mut db = Db::default();
        db.numbered(3, &[2]).numbered(2, &[1]).numbered(4, &[3]);
        // Force-push of 4 over nothing, server shallow at 3: the client boundary 2 is below.
        check(&db, &[4], &[], &[2], &[3], &[&[]]);
        check(&db, &[4], &[], &[2], &[], &[&[2]]);
    }

    /// Tags are peeled; a tip that is not a commit, or is missing, reaches nothing.
    #[test]
    fn missing_tips_reach_nothing() {
        let mut db = Db::default();
        db.numbered(2, &[1]).numbered(3, &[2]);
        check(&db, &[99, 3], &[], &[2], &[], &[&[], &[2]]);
        check(&db, &[3], &[], &[], &[], &[&[]]);
    }
}
