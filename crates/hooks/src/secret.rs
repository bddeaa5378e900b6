//! An example in-process hook: refuse pushes that introduce a secret.

use std::{collections::HashSet, io::Write};

use bstr::{BString, ByteSlice, ByteVec};
use gix_hash::ObjectId;
use gix_object::{Data, Kind, ObjectRef};

use crate::{Hook, HookContext, RefUpdate, Verdict};

/// A `pre-receive` hook refusing a push that introduces a blob containing a byte pattern,
/// such as the first line of a private key.
///
/// For each created or updated ref it walks the commits from the new value back to the old
/// one (or to the commit limit), reads their trees and the blobs in them, and looks for the
/// pattern. Trees and blobs already in the old value's tree are not read again, so content
/// that was already there does not refuse a push; anything else reachable from the new
/// commits is read, whether it came with this push or not. Deletions are not scanned. A
/// scan that cannot read an object refuses the push (it fails closed).
///
/// The walk stops after [`SecretScanner::commit_limit()`] commits per push: history beyond
/// that is not scanned.
#[derive(Debug, Clone)]
pub struct SecretScanner {
    pattern: Vec<u8>,
    commit_limit: usize,
}

/// Where [`SecretScanner`] found its pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The ref whose new value reaches the blob.
    pub refname: BString,
    /// The commit whose tree holds the blob, if the blob was reached through a commit.
    pub commit: Option<ObjectId>,
    /// The blob's path in that commit's tree; empty if the blob was reached directly (a ref
    /// or a tag pointing at a blob).
    pub path: BString,
    /// The blob containing the pattern.
    pub blob: ObjectId,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "blob {}", self.blob)?;
        if !self.path.is_empty() {
            write!(f, " at {}", self.path)?;
        }
        if let Some(commit) = self.commit {
            write!(f, " in commit {commit}")?;
        }
        write!(f, " ({}) contains a secret", self.refname)
    }
}

/// The error of [`SecretScanner::scan()`]: an object could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The object database failed to read an object.
    #[error("could not read object {id}")]
    Read {
        /// The object.
        id: ObjectId,
        /// What went wrong.
        #[source]
        source: gix_error::Error,
    },
    /// An object the walk reached is not in the object database.
    #[error("object {id} is missing")]
    Missing {
        /// The object.
        id: ObjectId,
    },
    /// An object could not be parsed.
    #[error("could not decode {kind} {id}")]
    Decode {
        /// The object.
        id: ObjectId,
        /// Its type.
        kind: Kind,
        /// What went wrong.
        #[source]
        source: gix_error::Error,
    },
}

impl SecretScanner {
    /// The default of [`SecretScanner::commit_limit()`].
    pub const DEFAULT_COMMIT_LIMIT: usize = 10_000;

    /// A scanner refusing blobs that contain `pattern`. An empty pattern matches nothing.
    pub fn new(pattern: impl Into<Vec<u8>>) -> Self {
        SecretScanner {
            pattern: pattern.into(),
            commit_limit: Self::DEFAULT_COMMIT_LIMIT,
        }
    }

    /// The same scanner, walking at most `commit_limit` commits per push.
    pub fn with_commit_limit(mut self, commit_limit: usize) -> Self {
        self.commit_limit = commit_limit;
        self
    }

    /// The pattern looked for.
    pub fn pattern(&self) -> &[u8] {
        &self.pattern
    }

    /// The most commits one push's scan walks.
    pub fn commit_limit(&self) -> usize {
        self.commit_limit
    }

    /// Scan what `updates` introduce, reading through `objects`: the first blob found to
    /// contain the pattern, or `None`.
    pub fn scan(
        &self,
        objects: &dyn gix_object::Find,
        updates: &[RefUpdate],
    ) -> Result<Option<Finding>, ScanError> {
        let mut walk = Walk {
            objects,
            pattern: &self.pattern,
            seen: HashSet::new(),
            commits_left: self.commit_limit,
            buf: Vec::new(),
        };
        for update in updates.iter().filter(|update| !update.is_delete()) {
            if !update.is_create() {
                walk.mark_known(update.old)?;
            }
        }
        for update in updates.iter().filter(|update| !update.is_delete()) {
            if let Some(finding) = walk.scan(update)? {
                return Ok(Some(finding));
            }
        }
        Ok(None)
    }
}

impl Hook for SecretScanner {
    fn pre_receive(
        &self,
        ctx: &HookContext<'_>,
        updates: &[RefUpdate],
        output: &mut dyn Write,
    ) -> Verdict {
        match self.scan(ctx.objects, updates) {
            Ok(None) => Verdict::Accept,
            Ok(Some(finding)) => {
                let _ = writeln!(output, "error: {finding}");
                Verdict::refuse(format!("secret found in blob {}", finding.blob))
            }
            Err(err) => {
                let _ = writeln!(output, "error: secret scan failed: {err}");
                tracing::warn!(%err, "secret scan failed");
                Verdict::refuse("secret scan failed")
            }
        }
    }
}

/// Something to read: an object, and where it was found.
struct Item {
    id: ObjectId,
    /// The commit whose tree led here.
    commit: Option<ObjectId>,
    /// The path in that tree.
    path: BString,
}

/// One push's scan: objects already judged (or known from the old values) are not read
/// again.
struct Walk<'a> {
    objects: &'a dyn gix_object::Find,
    pattern: &'a [u8],
    seen: HashSet<ObjectId>,
    commits_left: usize,
    buf: Vec<u8>,
}

impl Walk<'_> {
    /// Mark `old` (peeled to its commit), and the trees and blobs of its tree, as known:
    /// what a push leaves in place is not its doing. An `old` the repository lacks marks
    /// nothing.
    fn mark_known(&mut self, old: ObjectId) -> Result<(), ScanError> {
        let mut stack = vec![old];
        while let Some(id) = stack.pop() {
            if !self.seen.insert(id) {
                continue;
            }
            let data = match self.objects.try_find(&id, &mut self.buf) {
                Ok(Some(data)) => data,
                Ok(None) => continue,
                Err(source) => return Err(ScanError::Read { id, source }),
            };
            match decode(id, &data)? {
                ObjectRef::Commit(commit) => stack.push(commit.tree()),
                ObjectRef::Tag(tag) => stack.push(tag.target()),
                ObjectRef::Tree(tree) => {
                    for entry in tree.entries {
                        if entry.mode.is_tree() {
                            stack.push(entry.oid.to_owned());
                        } else if entry.mode.is_blob_or_symlink() {
                            // Known without reading it.
                            self.seen.insert(entry.oid.to_owned());
                        }
                    }
                }
                ObjectRef::Blob(_) => {}
            }
        }
        Ok(())
    }

    fn scan(&mut self, update: &RefUpdate) -> Result<Option<Finding>, ScanError> {
        let mut stack = vec![Item {
            id: update.new,
            commit: None,
            path: BString::default(),
        }];
        while let Some(item) = stack.pop() {
            if !self.seen.insert(item.id) {
                continue;
            }
            let data = read(self.objects, item.id, &mut self.buf)?;
            match decode(item.id, &data)? {
                ObjectRef::Commit(commit) => {
                    if self.commits_left == 0 {
                        tracing::debug!(commit = %item.id, "secret scan reached its commit limit");
                        continue;
                    }
                    self.commits_left -= 1;
                    // Parents below, so this commit's tree is read first.
                    for parent in commit.parents() {
                        stack.push(Item {
                            id: parent,
                            commit: None,
                            path: BString::default(),
                        });
                    }
                    stack.push(Item {
                        id: commit.tree(),
                        commit: Some(item.id),
                        path: BString::default(),
                    });
                }
                ObjectRef::Tag(tag) => stack.push(Item {
                    id: tag.target(),
                    commit: None,
                    path: BString::default(),
                }),
                ObjectRef::Tree(tree) => {
                    // In reverse, so entries are read in the tree's order.
                    for entry in tree.entries.iter().rev() {
                        // Submodule commits are in another repository.
                        if entry.mode.is_commit() {
                            continue;
                        }
                        let mut path = item.path.clone();
                        if !path.is_empty() {
                            path.push(b'/');
                        }
                        path.push_str(entry.filename);
                        stack.push(Item {
                            id: entry.oid.to_owned(),
                            commit: item.commit,
                            path,
                        });
                    }
                }
                ObjectRef::Blob(blob) => {
                    if !self.pattern.is_empty() && blob.data.find(self.pattern).is_some() {
                        return Ok(Some(Finding {
                            refname: update.name.clone(),
                            commit: item.commit,
                            path: item.path,
                            blob: item.id,
                        }));
                    }
                }
            }
        }
        Ok(None)
    }
}

fn read<'b>(
    objects: &dyn gix_object::Find,
    id: ObjectId,
    buf: &'b mut Vec<u8>,
) -> Result<Data<'b>, ScanError> {
    objects
        .try_find(&id, buf)
        .map_err(|source| ScanError::Read { id, source })?
        .ok_or(ScanError::Missing { id })
}

fn decode<'a>(id: ObjectId, data: &Data<'a>) -> Result<ObjectRef<'a>, ScanError> {
    data.decode().map_err(|source| ScanError::Decode {
        id,
        kind: data.kind,
        source,
    })
}
