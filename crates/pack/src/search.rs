//! Which objects share a path: the candidates for a computed delta's base.
//!
//! git's `pack-objects` sorts objects by a hash of the path they were found at and tries each
//! against its neighbours, and adds the client's versions of the changed paths as *preferred
//! bases* for thin packs. [`PathVersions::collect()`] finds the same relationships directly:
//! it compares each commit's tree with its parents' trees, descending only where they differ,
//! and records, per path, every version met on either side. The versions of a path that the
//! client has are bases a thin pack may use; the ones written earlier in the pack are bases any
//! pack may use.

use gix_hash::{oid, ObjectId};
use gix_hashtable::{HashMap, HashSet};
use gix_object::Kind;

use crate::reader::{CachingReader, Shared};
use packgate_object::{
    tree::{self, EntryKind},
    CommitHeader,
};

/// How much [`PathVersions::collect()`] may read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CollectLimits {
    /// Commits compared with their parents, most recent first.
    pub commits: usize,
    /// Trees read in all.
    pub trees: usize,
}

/// Per path, the versions of it that commits and their parents have, and for each version its
/// path.
#[derive(Debug, Default)]
pub(crate) struct PathVersions {
    /// The path (hash) each recorded object was first found at.
    path_of: HashMap<ObjectId, u64>,
    /// Trees read.
    trees_read: usize,
    /// The trees read, while they fit into [`TREE_CACHE_BYTES`]: most are targets or bases of
    /// the delta search that follows.
    trees: HashMap<ObjectId, Shared>,
    tree_bytes: usize,
    /// Per path (hash): the versions found there, in the order found (newest commits first).
    /// The keys are hashes already: not hashed again.
    versions: std::collections::HashMap<u64, Vec<ObjectId>, BuildPathHasher>,
}

impl PathVersions {
    /// Compare the trees of `commits` (most recent first) with their parents' trees, within
    /// `limits`. Objects that cannot be read are skipped: this only finds candidates, and a
    /// missing object is reported by whoever needs it.
    pub(crate) fn collect(db: &CachingReader, commits: &[ObjectId], limits: CollectLimits) -> Self {
        let mut out = PathVersions::default();
        let mut buf = Vec::new();
        let mut parent_buf = Vec::new();
        let mut seen_pairs: HashSet<(ObjectId, ObjectId)> = HashSet::default();
        let mut pending: Vec<(ObjectId, ObjectId, u64)> = Vec::new();
        for commit in commits.iter().take(limits.commits) {
            let Some((tree, parents)) = read_commit(db, commit, &mut buf) else {
                continue;
            };
            for parent in parents {
                let Some((parent_tree, _)) = read_commit(db, &parent, &mut parent_buf) else {
                    continue;
                };
                pending.push((tree, parent_tree, ROOT));
            }
            while let Some((new, old, path)) = pending.pop() {
                if new == old || !seen_pairs.insert((new, old)) {
                    continue;
                }
                out.record(new, path);
                out.record(old, path);
                if out.trees_read + 2 > limits.trees {
                    return out;
                }
                out.compare_trees(db, &new, &old, path, &mut pending);
            }
        }
        out
    }

    /// Record the entries of trees `new` and `old` at `path` that differ; queue changed
    /// subtrees.
    fn compare_trees(
        &mut self,
        db: &CachingReader,
        new: &oid,
        old: &oid,
        path: u64,
        pending: &mut Vec<(ObjectId, ObjectId, u64)>,
    ) {
        let hash_len = new.kind().len_in_bytes();
        let (Some(new_tree), Some(old_tree)) = (self.load_tree(db, new), self.load_tree(db, old))
        else {
            return;
        };
        let (new_data, old_data) = (&new_tree.1[..], &old_tree.1[..]);
        // Both trees are sorted in git's order: one merge pass pairs the entries of a name
        // (and kind: a tree and a blob of one name are apart in that order, and no pair).
        let entries = |data| {
            tree::entries(data, hash_len)
                .map_while(Result::ok)
                .filter(|entry| entry.kind() != EntryKind::Gitlink)
        };
        let mut old_entries = entries(old_data).peekable();
        for entry in entries(new_data) {
            let is_tree = entry.kind() == EntryKind::Tree;
            let mut old = None;
            while let Some(candidate) = old_entries.peek() {
                let candidate_is_tree = candidate.kind() == EntryKind::Tree;
                match git_order(candidate.name, candidate_is_tree, entry.name, is_tree) {
                    std::cmp::Ordering::Less => {
                        old_entries.next();
                    }
                    std::cmp::Ordering::Equal => {
                        old = old_entries.next();
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
            let Some(old) = old else {
                continue;
            };
            if old.id == entry.id {
                continue;
            }
            let child_path = path_hash(path, entry.name);
            if is_tree {
                pending.push((entry.id.to_owned(), old.id.to_owned(), child_path));
            } else {
                self.record(entry.id.to_owned(), child_path);
                self.record(old.id.to_owned(), child_path);
            }
        }
    }

    /// Tree `id`, from the trees kept if it is there (in a line of commits, each tree is
    /// compared as the newer and then as the older side), shared, not copied; `None` if it
    /// can't be read.
    fn load_tree(&mut self, db: &CachingReader, id: &oid) -> Option<Shared> {
        if let Some(data) = self.trees.get(id) {
            return Some(std::sync::Arc::clone(data));
        }
        self.trees_read += 1;
        let data = db.shared(id).ok().flatten()?;
        if data.0 != Kind::Tree {
            return None;
        }
        if self.tree_bytes + data.1.len() <= TREE_CACHE_BYTES {
            self.tree_bytes += data.1.len();
            self.trees
                .insert(id.to_owned(), std::sync::Arc::clone(&data));
        }
        Some(data)
    }

    fn record(&mut self, id: ObjectId, path: u64) {
        self.path_of.entry(id).or_insert(path);
        let versions = self.versions.entry(path).or_default();
        if !versions.contains(&id) {
            versions.push(id);
        }
    }

    /// How many trees were read.
    pub(crate) fn trees_read(&self) -> usize {
        self.trees_read
    }

    /// How many objects were recorded.
    pub(crate) fn len(&self) -> usize {
        self.path_of.len()
    }

    /// Tree `id` if it was read and kept.
    pub(crate) fn cached_tree(&self, id: &oid) -> Option<&[u8]> {
        self.trees.get(id).map(|tree| &tree.1[..])
    }

    /// Whether nothing was recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.path_of.is_empty()
    }

    /// Whether `id` was recorded at some path.
    pub(crate) fn contains(&self, id: &oid) -> bool {
        self.path_of.contains_key(id)
    }

    /// The other versions of the path `id` was found at, in the order found.
    pub(crate) fn other_versions<'a>(&'a self, id: &'a oid) -> impl Iterator<Item = &'a ObjectId> {
        self.path_of
            .get(id)
            .and_then(|path| self.versions.get(path))
            .into_iter()
            .flatten()
            .filter(move |version| version.as_ref() != id)
    }
}

/// Hashes a path hash (a `u64` already well mixed) as itself.
#[derive(Default)]
struct PathHasher(u64);

impl std::hash::Hasher for PathHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for the keys; anything else is folded in, FNV-style.
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type BuildPathHasher = std::hash::BuildHasherDefault<PathHasher>;

/// How many bytes of trees [`PathVersions`] keeps.
const TREE_CACHE_BYTES: usize = 16 << 20;

/// The path hash of the root tree.
const ROOT: u64 = 0xcbf2_9ce4_8422_2325;

/// The order of two tree entries in a git tree: by name, a tree's name compared as if it
/// ended in `/`.
fn git_order(a: &[u8], a_is_tree: bool, b: &[u8], b_is_tree: bool) -> std::cmp::Ordering {
    let common = a.len().min(b.len());
    a[..common].cmp(&b[..common]).then_with(|| {
        let next = |name: &[u8], is_tree: bool| match name.get(common) {
            Some(&byte) => byte,
            None if is_tree => b'/',
            None => 0,
        };
        next(a, a_is_tree).cmp(&next(b, b_is_tree))
    })
}

/// FNV-1a of `name` after `parent`'s hash and a separator.
fn path_hash(parent: u64, name: &[u8]) -> u64 {
    let mut hash = parent;
    for &byte in std::iter::once(&b'/').chain(name) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn read_kind<'a, Find: gix_object::Find>(
    db: &Find,
    id: &oid,
    kind: Kind,
    buf: &'a mut Vec<u8>,
) -> Option<&'a [u8]> {
    match db.try_find(id, buf) {
        Ok(Some(data)) if data.kind == kind => Some(data.data),
        _ => None,
    }
}

fn read_commit<Find: gix_object::Find>(
    db: &Find,
    id: &oid,
    buf: &mut Vec<u8>,
) -> Option<(ObjectId, Vec<ObjectId>)> {
    let data = read_kind(db, id, Kind::Commit, buf)?;
    let commit = CommitHeader::parse(data, id.kind()).ok()?;
    Some((commit.tree, commit.parents().collect()))
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering::{Equal, Greater, Less};

    use super::git_order;

    #[test]
    fn entries_compare_in_git_tree_order() {
        // git sorts the tree `foo` as `foo/`: after the blob `foo-bar`, before `foo0`.
        assert_eq!(git_order(b"foo", false, b"foo-bar", false), Less);
        assert_eq!(git_order(b"foo-bar", false, b"foo", true), Less);
        assert_eq!(git_order(b"foo", true, b"foo0", false), Less);
        assert_eq!(git_order(b"foo", false, b"foo", true), Less);
        assert_eq!(git_order(b"foo", true, b"foo", true), Equal);
        assert_eq!(git_order(b"b", false, b"a", true), Greater);
        let mut names = [
            (&b"foo0"[..], false),
            (b"foo", true),
            (b"foo-bar", false),
            (b"foo", false),
        ];
        names.sort_by(|a, b| git_order(a.0, a.1, b.0, b.1));
        assert_eq!(
            names,
            [
                (&b"foo"[..], false),
                (b"foo-bar", false),
                (b"foo", true),
                (b"foo0", false)
            ]
        );
    }
}
