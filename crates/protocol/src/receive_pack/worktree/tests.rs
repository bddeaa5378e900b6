use std::path::Path;

use bstr::ByteSlice;

use super::Worktrees;

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

#[test]
fn every_work_tree_and_the_branch_it_has_checked_out() {
    let temp = tempfile::tempdir().unwrap();
    let git_dir = temp.path().join("repo/.git");
    write(&git_dir.join("HEAD"), "ref: refs/heads/main\n");
    let admin = git_dir.join("worktrees");
    write(&admin.join("side/gitdir"), "/elsewhere/side/.git\n");
    write(&admin.join("side/HEAD"), "ref: refs/heads/side\n");
    // Detached while rebasing `topic`, or bisecting `feature`.
    let detached = "0123456789012345678901234567890123456789\n";
    write(&admin.join("rebasing/gitdir"), "/elsewhere/rebasing/.git\n");
    write(&admin.join("rebasing/HEAD"), detached);
    write(
        &admin.join("rebasing/rebase-merge/head-name"),
        "refs/heads/topic\n",
    );
    write(
        &admin.join("bisecting/gitdir"),
        "/elsewhere/bisecting/.git\n",
    );
    write(&admin.join("bisecting/HEAD"), detached);
    write(&admin.join("bisecting/BISECT_START"), "feature\n");
    // git lists neither a work tree without `gitdir` nor one without `HEAD`.
    write(&admin.join("pruned/HEAD"), "ref: refs/heads/pruned\n");
    write(&admin.join("headless/gitdir"), "/elsewhere/headless/.git\n");

    let worktrees = Worktrees::read(&git_dir, false, None);
    let path_of = |branch: &str| {
        worktrees
            .find(branch.as_bytes().as_bstr())
            .map(|worktree| worktree.path.clone().unwrap())
    };
    assert_eq!(path_of("refs/heads/main"), Some(temp.path().join("repo")));
    assert_eq!(path_of("refs/heads/side"), Some("/elsewhere/side".into()));
    assert_eq!(
        path_of("refs/heads/topic"),
        Some("/elsewhere/rebasing".into())
    );
    assert_eq!(
        path_of("refs/heads/feature"),
        Some("/elsewhere/bisecting".into())
    );
    assert_eq!(path_of("refs/heads/pruned"), None);
    assert_eq!(path_of("refs/heads/other"), None);
    let side = worktrees.find(b"refs/heads/side".as_bstr()).unwrap();
    assert_eq!(side.git_dir, admin.join("side"));

    // A bare repository has no main work tree; its linked ones count.
    let bare = Worktrees::read(&git_dir, true, None);
    assert!(bare.find(b"refs/heads/main".as_bstr()).is_none());
    assert!(bare.find(b"refs/heads/side".as_bstr()).is_some());
}

#[test]
fn where_the_main_work_tree_is() {
    let temp = tempfile::tempdir().unwrap();
    let odd = temp.path().join("repo.git");
    write(&odd.join("HEAD"), "ref: refs/heads/main\n");
    // Not bare, not named `.git`: git would take the git directory itself; we don't guess.
    let worktrees = Worktrees::read(&odd, false, None);
    assert_eq!(
        worktrees.find(b"refs/heads/main".as_bstr()).unwrap().path,
        None
    );
    // `core.worktree` says where, relative to the git directory.
    let worktrees = Worktrees::read(&odd, false, Some("../checkout".into()));
    assert_eq!(
        worktrees.find(b"refs/heads/main".as_bstr()).unwrap().path,
        Some(temp.path().join("checkout"))
    );
}
