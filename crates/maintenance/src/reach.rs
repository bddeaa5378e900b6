//! What maintenance counts as reachable: every ref (hidden ones and every namespace's
//! included), `HEAD` and the other work trees' `HEAD`s, every reflog entry, and the objects
//! named by the index of a non-bare repository (and of each work tree), as git's
//! `mark_reachable_objects()` does.

use std::{
    fs,
    path::{Path, PathBuf},
};

use gix_hash::ObjectId;
use packgate_protocol::repository::{Head, Repository};

use crate::MaintenanceError;

/// The starting points of the reachability walk.
#[derive(Debug, Default, Clone)]
pub struct Tips {
    /// Ref tips and `HEAD`: what bitmaps and the commit-graph are written for.
    pub refs: Vec<ObjectId>,
    /// Everything the walk starts from: `refs` plus reflog entries and index entries that
    /// exist in the repository.
    pub all: Vec<ObjectId>,
}

/// Collect the tips of `repo`.
pub fn tips(repo: &Repository) -> Result<Tips, MaintenanceError> {
    let mut refs: Vec<ObjectId> = repo
        .all_refs(None)
        .map_err(MaintenanceError::Refs)?
        .into_iter()
        .map(|record| record.id)
        .collect();
    if let Ok(Head::Born(head)) = repo.head() {
        refs.push(head.id);
    }
    let git_dir = repo.git_dir();
    let mut extra = Vec::new();
    let mut indexes = vec![git_dir.join("index")];
    if let Ok(entries) = fs::read_dir(git_dir.join("worktrees")) {
        for entry in entries.flatten() {
            if let Some(id) = fs::read_to_string(entry.path().join("HEAD"))
                .ok()
                .and_then(|head| ObjectId::from_hex(head.trim().as_bytes()).ok())
            {
                refs.push(id);
            }
            indexes.push(entry.path().join("index"));
        }
    }
    reflog_ids(&git_dir.join("logs"), &mut extra);
    for index in &indexes {
        index_ids(index, &mut extra);
    }
    refs.sort();
    refs.dedup();
    use gix_object::FindHeader as _;
    let objects = repo.objects();
    extra.retain(|id| !id.is_null() && objects.try_header(id).ok().flatten().is_some());
    let mut all = refs.clone();
    all.extend(extra);
    all.sort();
    all.dedup();
    // A ref naming a missing object is left to the walk, which refuses it as git does.
    Ok(Tips { refs, all })
}

fn reflog_ids(dir: &Path, out: &mut Vec<ObjectId>) {
    let mut stack: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                stack.push(path);
                continue;
            }
            let Ok(content) = fs::read(&path) else {
                continue;
            };
            for line in content.split(|byte| *byte == b'\n') {
                for field in line.splitn(3, |byte| *byte == b' ').take(2) {
                    if let Ok(id) = ObjectId::from_hex(field) {
                        out.push(id);
                    }
                }
            }
        }
    }
}

fn index_ids(path: &Path, out: &mut Vec<ObjectId>) {
    if !path.is_file() {
        return;
    }
    match gix_index::File::at(
        path,
        gix_hash::Kind::Sha1,
        false,
        gix_index::decode::Options::default(),
    ) {
        Ok(index) => {
            for entry in index.entries() {
                if entry.mode != gix_index::entry::Mode::COMMIT {
                    out.push(entry.id);
                }
            }
            if let Some(tree) = index.tree() {
                let mut stack = vec![tree];
                while let Some(tree) = stack.pop() {
                    if tree.num_entries.is_some() {
                        out.push(tree.id);
                    }
                    stack.extend(tree.children.iter());
                }
            }
        }
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "index unreadable; its objects are not counted as reachable")
        }
    }
}
