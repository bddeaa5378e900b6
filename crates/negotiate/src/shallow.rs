//! The shallow boundary of a fetch, as git 2.47's upload-pack computes it: which commits
//! the client is to see without their parents (`shallow <id>`), which of its shallow commits
//! it now gets the parents of (`unshallow <id>`), and what that adds to the pack.
//!
//! [`update_shallow()`] follows upload-pack's `send_shallow_list()`:
//!
//! * `deepen <n>` (git's `deepen()` and `get_shallow_commits()`): a depth-first walk from the
//!   wants (or, with `deepen-relative`, from the client's shallow commits reachable from the
//!   server's refs, one deeper); a commit at depth `n` (the wants are at depth 1), or one of
//!   the repository's own shallow commits, is on the new boundary; a commit met again by a
//!   shorter path is walked again from there. [`INFINITE_DEPTH`] (what `--unshallow` sends)
//!   on a complete repository unshallows every client shallow commit instead of walking.
//! * `deepen-since`/`deepen-not` (git's `get_shallow_commits_by_rev_list()`): the commits
//!   `git rev-list --max-age=<since> <wants> --not <deepen-not refs>` lists; one of them with
//!   a parent outside that list is on the new boundary.
//! * `send_shallow()`: a boundary commit is announced unless the client has it shallow
//!   already or it was found inside the depth too; `send_unshallow()`: a client shallow commit
//!   found inside the depth is unshallowed, its parents become wants and the commit itself a
//!   have (git's "extra edge").
//!
//! The repository's own shallow commits (`$GIT_DIR/shallow`) are parentless throughout, as
//! git parses them. [`ShallowUpdate::grafts`] is every commit the rest of the fetch must treat
//! as parentless (git's registered shallows): the repository's, the client's, and the new
//! boundary; negotiation and enumeration walk the history the client will have, and so never
//! count on (or use as a delta base) anything beyond its boundary.

use gix_hash::ObjectId;
use gix_hashtable::HashSet;
use packgate_object::{flag, CommitGraph, LimitedWalk};

use crate::{parse, peel_to_commit, Error};

/// git's `INFINITE_DEPTH`: the depth `git fetch --unshallow` asks for.
pub const INFINITE_DEPTH: u32 = 0x7fff_ffff;

/// What the client asked for, its shallow commits, and the repository's own.
#[derive(Debug, Clone, Copy)]
pub struct ShallowRequest<'a> {
    /// The wants of the request.
    pub wants: &'a [ObjectId],
    /// The client's `shallow` lines that name commits the repository has (others are
    /// ignored, as in git), each once, in the order sent.
    pub client_shallows: &'a [ObjectId],
    /// `$GIT_DIR/shallow`: the repository's own shallow commits.
    pub repository_shallows: &'a [ObjectId],
    /// How to deepen.
    pub deepen: &'a Deepen,
}

/// The deepening a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deepen {
    /// None: the client's shallow commits only bound the walks.
    None,
    /// `deepen <depth>`.
    Depth {
        /// The depth, at least 1; [`INFINITE_DEPTH`] for `--unshallow`.
        depth: u32,
        /// With `deepen-relative`: the client's shallow commits that are reachable from the
        /// server's refs (git's `get_reachable_list()`), the walk's starts instead of the
        /// wants.
        relative_to: Option<Vec<ObjectId>>,
    },
    /// `deepen-since` and/or `deepen-not`.
    RevList {
        /// `deepen-since`; `Some(0)` is no age limit, as in git.
        since: Option<u64>,
        /// The objects the `deepen-not` refs name.
        not: Vec<ObjectId>,
    },
}

/// The outcome: the lines to send and what they change for the pack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShallowUpdate {
    /// `shallow <id>` lines, in git's order.
    pub shallow: Vec<ObjectId>,
    /// `unshallow <id>` lines, in the order of the client's shallow lines.
    pub unshallow: Vec<ObjectId>,
    /// The parents of the unshallowed commits: more wants.
    pub extra_wants: Vec<ObjectId>,
    /// The unshallowed commits: more haves (git's extra edges).
    pub extra_haves: Vec<ObjectId>,
    /// Every commit to treat as parentless from here on.
    pub grafts: HashSet<ObjectId>,
}

/// Why the boundary could not be computed; the messages are git's.
#[derive(Debug, thiserror::Error)]
pub enum ShallowError {
    /// Reading an object failed.
    #[error(transparent)]
    Read(#[from] Error),
    /// A commit the depth walk reached can't be read.
    #[error("unable to parse commit {0}")]
    Unparsable(ObjectId),
    /// The rev-list walk selected nothing (everything too old or excluded).
    #[error("no commits selected for shallow requests")]
    NoCommitsSelected,
    /// A commit the rev-list walk needs below a selected commit is missing or broken.
    #[error("revision walk setup failed: could not parse commit {0}")]
    Walk(ObjectId),
}

/// On the boundary (git's `SHALLOW`).
const SHALLOW: u16 = flag::FIRST_FREE;
/// Inside the depth (git's `NOT_SHALLOW`).
const NOT_SHALLOW: u16 = flag::FIRST_FREE << 1;

/// Compute the shallow boundary of a fetch (git's `send_shallow_list()`, with `deepen()` or
/// `deepen_by_rev_list()`, `send_shallow()` and `send_unshallow()`).
pub fn update_shallow(
    db: &(impl gix_object::Find + gix_object::FindHeader),
    request: &ShallowRequest<'_>,
) -> Result<ShallowUpdate, ShallowError> {
    // Each want once, as git's `WANTED` flag keeps its want list: a clone wants HEAD and its
    // branch, and a head walked twice would give its shallow line twice (t5601 99). Distinct
    // wants that reach one boundary commit do give it twice, as with git.
    let mut seen: HashSet<ObjectId> = HashSet::default();
    let wants: Vec<ObjectId> = request
        .wants
        .iter()
        .copied()
        .filter(|id| seen.insert(*id))
        .collect();
    let repository_grafts: HashSet<ObjectId> =
        request.repository_shallows.iter().copied().collect();
    let mut graph = CommitGraph::with_grafts(repository_grafts.clone());
    let mut boundary = Vec::new();
    let mut unshallow_all = false;
    match request.deepen {
        Deepen::None => {}
        Deepen::Depth { depth, .. }
            if *depth == INFINITE_DEPTH && request.repository_shallows.is_empty() =>
        {
            unshallow_all = true;
        }
        Deepen::Depth { depth, relative_to } => {
            let (heads, depth) = match relative_to {
                Some(heads) => (heads.as_slice(), depth.saturating_add(1)),
                None => (wants.as_slice(), *depth),
            };
            boundary = shallow_commits(db, &mut graph, heads, depth)?;
        }
        Deepen::RevList { since, not } => {
            boundary = shallow_commits_by_rev_list(db, &mut graph, &wants, *since, not)?;
        }
    }

    let client: HashSet<ObjectId> = request.client_shallows.iter().copied().collect();
    let mut update = ShallowUpdate {
        grafts: repository_grafts,
        ..ShallowUpdate::default()
    };
    let mut buf = Vec::new();
    // send_shallow()
    for node in boundary {
        let entry = graph.get(node);
        if entry.flags & NOT_SHALLOW == 0 && !client.contains(&entry.id) {
            update.shallow.push(entry.id);
            update.grafts.insert(entry.id);
        }
    }
    // send_unshallow()
    for id in request.client_shallows {
        let inside = unshallow_all || {
            let node = graph.node(id);
            graph.flags(node) & NOT_SHALLOW != 0
        };
        if inside {
            update.unshallow.push(*id);
            update.extra_wants.extend(real_parents(db, id, &mut buf)?);
            update.extra_haves.push(*id);
        }
        update.grafts.insert(*id);
    }
    Ok(update)
}

/// The parents a commit's object names, grafts or not (git unregisters the shallow commit
/// to read them).
fn real_parents(
    db: &impl gix_object::Find,
    id: &ObjectId,
    buf: &mut Vec<u8>,
) -> Result<Vec<ObjectId>, ShallowError> {
    match crate::read(db, id, buf)? {
        Some((gix_object::Kind::Commit, range)) => {
            let header = packgate_object::CommitHeader::parse(&buf[range], id.kind())
                .map_err(|_| ShallowError::Unparsable(*id))?;
            Ok(header.parents().collect())
        }
        _ => Err(ShallowError::Unparsable(*id)),
    }
}

/// git's `get_shallow_commits()`: walk depth first from `heads` (tags peeled, non-commits
/// skipped), each head at depth 1; a commit at `depth`, or a repository shallow commit, is on
/// the boundary (flag [`SHALLOW`]), every other commit walked is inside ([`NOT_SHALLOW`]) and
/// its parents are walked unless they were met before at the same depth or less. The boundary
/// in git's order (most recently found first), possibly with repeats, as git's list has them.
fn shallow_commits(
    db: &(impl gix_object::Find + gix_object::FindHeader),
    graph: &mut CommitGraph,
    heads: &[ObjectId],
    depth: u32,
) -> Result<Vec<u32>, ShallowError> {
    let mut found = Vec::new();
    let mut depths: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    let mut stack: Vec<u32> = Vec::new();
    let mut heads = heads.iter();
    let mut buf = Vec::new();
    let mut commit: Option<u32> = None;
    let mut current_depth = 0u32;
    loop {
        let node = match commit.take() {
            Some(node) => node,
            None => {
                if let Some(head) = heads.next() {
                    let Some(id) = peel_to_commit(db, head, &mut buf)? else {
                        continue;
                    };
                    let node = graph.node(&id);
                    depths.insert(node, 0);
                    current_depth = 0;
                    node
                } else if let Some(node) = stack.pop() {
                    current_depth = depths.get(&node).copied().unwrap_or(0);
                    node
                } else {
                    break;
                }
            }
        };
        if !parse(graph, db, node)? {
            return Err(ShallowError::Unparsable(graph.get(node).id));
        }
        current_depth = current_depth.saturating_add(1);
        let entry = graph.get(node);
        let repository_shallow = entry.parents.is_empty() && graph.is_grafted(&entry.id);
        if (depth != INFINITE_DEPTH && current_depth >= depth) || repository_shallow {
            found.push(node);
            graph.nodes[node as usize].flags |= SHALLOW;
            continue;
        }
        graph.nodes[node as usize].flags |= NOT_SHALLOW;
        let parents: Vec<u32> = graph
            .get(node)
            .parents
            .clone()
            .map(|position| graph.parent(position))
            .collect();
        for (index, &parent) in parents.iter().enumerate() {
            match depths.get_mut(&parent) {
                None => {
                    depths.insert(parent, current_depth);
                }
                Some(known) if current_depth >= *known => continue,
                Some(known) => *known = current_depth,
            }
            if index + 1 < parents.len() {
                stack.push(parent);
            } else {
                commit = Some(parent);
                current_depth = depths.get(&parent).copied().unwrap_or(current_depth);
            }
        }
    }
    found.reverse();
    Ok(found)
}

/// git's `get_shallow_commits_by_rev_list()`: the commits of
/// `rev-list --max-age=<since> <wants> --not <not>` are inside ([`NOT_SHALLOW`]); those of
/// them with a parent outside are the boundary, in the order listed.
fn shallow_commits_by_rev_list(
    db: &(impl gix_object::Find + gix_object::FindHeader),
    graph: &mut CommitGraph,
    wants: &[ObjectId],
    since: Option<u64>,
    not: &[ObjectId],
) -> Result<Vec<u32>, ShallowError> {
    let max_age = since.filter(|&since| since != 0);
    let mut buf = Vec::new();
    let mut starts = Vec::new();
    for want in wants {
        if let Some(id) = peel_to_commit(db, want, &mut buf)? {
            let node = graph.node(&id);
            if !parse(graph, db, node)? {
                return Err(ShallowError::Walk(id));
            }
            starts.push(node);
        }
    }
    let listed = if not.is_empty() {
        // Without negative revisions rev-list does not limit: an old commit is just not
        // shown, and its parents not walked.
        date_order_walk(db, graph, &starts, max_age)?
    } else {
        let mut walk = LimitedWalk::default();
        if let Some(max_age) = max_age {
            walk = walk.with_max_age(max_age);
        }
        for id in not {
            let Some(commit) = peel_to_commit(db, id, &mut buf)? else {
                continue;
            };
            let node = graph.node(&commit);
            walk.set_uninteresting(graph, node);
            if parse(graph, db, node)? {
                walk.mark_parents_uninteresting(graph, node);
                walk.push(graph, node);
            }
        }
        for &node in &starts {
            walk.push(graph, node);
        }
        let walked = walk.run(
            graph,
            |graph, edge| {
                if edge.gently {
                    return parse(graph, db, edge.parent).map_err(ShallowError::from);
                }
                match parse(graph, db, edge.parent)? {
                    true => Ok(true),
                    false => Err(ShallowError::Walk(graph.get(edge.parent).id)),
                }
            },
            |_, _| Ok(()),
        )?;
        walked
            .into_iter()
            .filter(|&node| graph.flags(node) & flag::UNINTERESTING == 0)
            .collect()
    };
    if listed.is_empty() {
        return Err(ShallowError::NoCommitsSelected);
    }
    for &node in &listed {
        graph.nodes[node as usize].flags |= NOT_SHALLOW;
    }
    let mut boundary = Vec::new();
    for &node in &listed {
        let outside = graph
            .get(node)
            .parents
            .clone()
            .any(|position| graph.flags(graph.parent(position)) & NOT_SHALLOW == 0);
        if outside {
            boundary.push(node);
        }
    }
    for &node in &boundary {
        let entry = &mut graph.nodes[node as usize];
        entry.flags = (entry.flags | SHALLOW) & !NOT_SHALLOW;
    }
    Ok(boundary)
}

/// rev-list without negative revisions: newest first from `starts` (first come first served
/// among equal dates), a commit older than `max_age` neither listed nor walked through.
fn date_order_walk(
    db: &impl gix_object::Find,
    graph: &mut CommitGraph,
    starts: &[u32],
    max_age: Option<u64>,
) -> Result<Vec<u32>, ShallowError> {
    use std::{cmp::Reverse, collections::BinaryHeap};
    let mut queue: BinaryHeap<(u64, Reverse<u64>, u32)> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut seen: std::collections::HashSet<u32> = std::collections::HashSet::new();
    for &node in starts {
        if seen.insert(node) {
            queue.push((graph.get(node).date, Reverse(seq), node));
            seq += 1;
        }
    }
    let mut listed = Vec::new();
    while let Some((date, _, node)) = queue.pop() {
        if max_age.is_some_and(|max_age| date < max_age) {
            continue;
        }
        listed.push(node);
        for position in graph.get(node).parents.clone() {
            let parent = graph.parent(position);
            if !seen.insert(parent) {
                continue;
            }
            if !parse(graph, db, parent)? {
                return Err(ShallowError::Walk(graph.get(parent).id));
            }
            queue.push((graph.get(parent).date, Reverse(seq), parent));
            seq += 1;
        }
    }
    Ok(listed)
}

#[cfg(test)]
mod tests;
