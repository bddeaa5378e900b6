//! The work trees of a repository, as receive-pack sees them: which one has the branch a push
//! updates checked out (`receive.denyCurrentBranch`), and, under `updateInstead`, bringing
//! that work tree and its index to the pushed commit (git's `update_worktree()`).
//!
//! git looks at every work tree: the main one (unless the repository is bare) and the linked
//! ones in `$GIT_DIR/worktrees/<id>`, whose `HEAD` names the branch (or which are in the
//! middle of rebasing or bisecting it). What git does with `git update-index --refresh`,
//! `git diff-files`, `git diff-index --cached` and `git read-tree -u -m` is done here without
//! running git: [`checkout`] compares the index with the work tree and with the checked-out
//! commit, then checks out the new commit's tree over the old one.

mod checkout;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use bstr::{BStr, BString, ByteSlice};
use gix_hash::ObjectId;

pub(super) use checkout::{update, Settings, UpdateError};

/// A work tree that has a branch checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Worktree {
    /// The work tree's top directory, absolute; `None` for a main work tree whose place git
    /// would guess (a non-bare git directory not named `.git`, without `core.worktree`).
    pub(super) path: Option<PathBuf>,
    /// Its own git directory (`HEAD`, `index`): the repository's for the main work tree.
    pub(super) git_dir: PathBuf,
    /// What its `HEAD` says.
    head: WorktreeHead,
}

/// What a work tree's `HEAD` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WorktreeHead {
    /// A symbolic ref to this branch (which may not exist yet).
    Branch(BString),
    /// A commit; while rebasing or bisecting, the branch that is being worked on.
    Detached {
        id: Option<ObjectId>,
        busy_with: Option<BString>,
    },
}

/// The work trees of a repository, read once per push.
#[derive(Debug, Default)]
pub(super) struct Worktrees {
    list: Vec<Worktree>,
}

impl Worktrees {
    /// The work trees of the repository at `git_dir` (its common git directory): the main
    /// one unless `bare`, then the linked ones, in git's order (`get_worktrees()`). What
    /// cannot be read is skipped, as git skips it.
    pub(super) fn read(git_dir: &Path, bare: bool, core_worktree: Option<PathBuf>) -> Self {
        let mut list = Vec::new();
        if !bare {
            let path = match core_worktree {
                Some(path) => Some(git_dir.join(path)),
                None if git_dir.file_name().is_some_and(|name| name == ".git") => {
                    git_dir.parent().map(Path::to_owned)
                }
                None => None,
            };
            if let Some(head) = read_head(git_dir) {
                list.push(Worktree {
                    path: path.map(|path| normalize(&path)),
                    git_dir: git_dir.to_owned(),
                    head,
                });
            }
        }
        let linked_dir = git_dir.join("worktrees");
        let mut linked: Vec<Worktree> = match std::fs::read_dir(&linked_dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter_map(|entry| linked_worktree(&entry.path()))
                .collect(),
            Err(err) => {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::debug!(%err, dir = %linked_dir.display(), "could not list linked work trees");
                }
                Vec::new()
            }
        };
        // git reads the directory in its own order; sorting keeps ours stable.
        linked.sort_by(|a, b| a.git_dir.cmp(&b.git_dir));
        list.extend(linked);
        Worktrees { list }
    }

    /// The first work tree that has `branch` (a full ref name as the client named it)
    /// checked out, as git's `find_shared_symref(worktrees, "HEAD", branch)`.
    pub(super) fn find(&self, branch: &BStr) -> Option<&Worktree> {
        self.list.iter().find(|worktree| match &worktree.head {
            WorktreeHead::Branch(name) => name == branch,
            WorktreeHead::Detached { busy_with, .. } => {
                busy_with.as_ref().is_some_and(|name| name == branch)
            }
        })
    }
}

impl Worktree {
    /// The commit checked out, as `git rev-parse HEAD` in the work tree: `None` on an unborn
    /// branch. `resolve` reads a branch from the repository's (shared) refs.
    pub(super) fn head_commit(
        &self,
        resolve: impl Fn(&BStr) -> Option<ObjectId>,
    ) -> Option<ObjectId> {
        match &self.head {
            WorktreeHead::Branch(name) => resolve(name.as_bstr()),
            WorktreeHead::Detached { id, .. } => *id,
        }
    }
}

/// A linked work tree's administrative directory `$GIT_DIR/worktrees/<id>`, if it is one
/// git would list: it has a `gitdir` file naming `<work tree>/.git`, and a `HEAD`.
fn linked_worktree(admin: &Path) -> Option<Worktree> {
    let gitdir = std::fs::read(admin.join("gitdir")).ok()?;
    let gitdir = gitdir.trim_end_with(|c| c == '\n' || c == '\r');
    let gitdir = gix_path::from_byte_slice(gitdir).ok()?;
    // git writes it absolute; a relative one is relative to the administrative directory.
    let gitdir = admin.join(gitdir);
    let path = match gitdir.file_name() {
        Some(name) if name == ".git" => gitdir.parent()?.to_owned(),
        _ => gitdir,
    };
    let head = read_head(admin)?;
    Some(Worktree {
        path: Some(normalize(&path)),
        git_dir: admin.to_owned(),
        head,
    })
}

/// Read `<git_dir>/HEAD`; `None` if it is missing or unreadable.
fn read_head(git_dir: &Path) -> Option<WorktreeHead> {
    let content = std::fs::read(git_dir.join("HEAD")).ok()?;
    let content = content.trim_end();
    if let Some(target) = content.strip_prefix(b"ref:") {
        return Some(WorktreeHead::Branch(
            target.trim_start().as_bstr().to_owned(),
        ));
    }
    let id = ObjectId::from_hex(content).ok();
    Some(WorktreeHead::Detached {
        id,
        busy_with: rebasing_or_bisecting(git_dir),
    })
}

/// The branch a work tree with a detached `HEAD` is rebasing or bisecting, as git's
/// `is_worktree_being_rebased()` and `is_worktree_being_bisected()` find it.
fn rebasing_or_bisecting(git_dir: &Path) -> Option<BString> {
    let read = |path: PathBuf| -> Option<BString> {
        let content = std::fs::read(path).ok()?;
        let content = content.trim();
        (!content.is_empty()).then(|| content.as_bstr().to_owned())
    };
    // `rebase-apply` without `applying` is a rebase; with it, `git am`.
    let rebasing = if git_dir.join("rebase-apply").is_dir() {
        if git_dir.join("rebase-apply/applying").exists() {
            None
        } else {
            read(git_dir.join("rebase-apply/head-name"))
        }
    } else if git_dir.join("rebase-merge").is_dir() {
        read(git_dir.join("rebase-merge/head-name"))
    } else {
        None
    };
    if let Some(name) = rebasing {
        // git keeps a full ref name there (`detached HEAD` otherwise).
        return name.starts_with(b"refs/heads/").then_some(name);
    }
    let bisecting = read(git_dir.join("BISECT_START"))?;
    let mut name = BString::from("refs/heads/");
    name.extend_from_slice(&bisecting);
    Some(name)
}

/// `path` made absolute, with `.` and `..` components resolved lexically (a work tree's
/// path as git prints it).
fn normalize(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}
