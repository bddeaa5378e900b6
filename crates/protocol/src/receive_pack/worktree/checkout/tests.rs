use std::path::Path;

use bstr::ByteSlice;
use gix_hash::ObjectId;
use gix_index::entry::{Flags, Mode, Stat};

use super::{check_file_directory_conflicts, staged_changes, worktree_path, Plan};

/// An index with `entries` (path, mode, id digit), sorted as git sorts them.
fn state(entries: &[(&str, Mode, u8)]) -> gix_index::State {
    let mut state = gix_index::State::new(gix_hash::Kind::Sha1);
    for (path, mode, digit) in entries {
        let id = ObjectId::from_hex(&[b'0' + digit; 40]).unwrap();
        state.dangerously_push_entry(
            Stat::default(),
            id,
            Flags::empty(),
            *mode,
            path.as_bytes().as_bstr(),
        );
    }
    state.sort_entries();
    state
}

#[test]
fn paths_from_trees_stay_inside_the_work_tree() {
    let root = Path::new("/work");
    let check = |path: &str, expected: Option<&str>| {
        let result = worktree_path(root, path.as_bytes().as_bstr()).ok();
        assert_eq!(result.as_deref(), expected.map(Path::new), "{path}");
    };
    check("a", Some("/work/a"));
    check("a/b/c.txt", Some("/work/a/b/c.txt"));
    check(".gitignore", Some("/work/.gitignore"));
    check("..", None);
    check("a/../../etc/passwd", None);
    check("./a", None);
    check(".git/config", None);
    check("a/.GIT/hooks/post-checkout", None);
    check("", None);
    check("a//b", None);
    check("/etc/passwd", None);
    check("a/\0b", None);
}

#[test]
fn a_file_with_something_below_it_is_refused() {
    let ok = state(&[
        ("a", Mode::FILE, 1),
        ("a.b", Mode::FILE, 1),
        ("b/a", Mode::FILE, 1),
    ]);
    assert!(check_file_directory_conflicts(&ok).is_ok());
    // Not neighbours in git's order (`a`, `a.`, `a/x`): found all the same.
    let conflict = state(&[
        ("a", Mode::FILE, 1),
        ("a.", Mode::FILE, 1),
        ("a/x", Mode::FILE, 1),
    ]);
    let err = check_file_directory_conflicts(&conflict).unwrap_err();
    assert_eq!(err.to_string(), "Could not update working tree to new HEAD");
    assert_eq!(
        err.detail(),
        Some("Entry 'a' overlaps with 'a/x'.  Cannot bind.")
    );
}

#[test]
fn staged_changes_are_any_difference_but_a_submodule_commit() {
    let head = state(&[("a", Mode::FILE, 1), ("m", Mode::COMMIT, 2)]);
    assert!(!staged_changes(
        &state(&[("a", Mode::FILE, 1), ("m", Mode::COMMIT, 3)]),
        &head
    ));
    assert!(staged_changes(
        &state(&[("a", Mode::FILE, 4), ("m", Mode::COMMIT, 2)]),
        &head
    ));
    assert!(staged_changes(
        &state(&[("a", Mode::FILE_EXECUTABLE, 1), ("m", Mode::COMMIT, 2)]),
        &head
    ));
    assert!(staged_changes(&state(&[("a", Mode::FILE, 1)]), &head));
    assert!(staged_changes(
        &state(&[("b", Mode::FILE, 1), ("m", Mode::COMMIT, 2)]),
        &head
    ));
}

#[test]
fn the_plan_removes_rewrites_and_adds() {
    let old = state(&[
        ("same", Mode::FILE, 1),
        ("changed", Mode::FILE, 1),
        ("mode", Mode::FILE, 1),
        ("gone", Mode::FILE, 1),
        ("dir/file", Mode::FILE, 1),
        ("sub", Mode::COMMIT, 1),
    ]);
    let new = state(&[
        ("same", Mode::FILE, 1),
        ("changed", Mode::FILE, 2),
        ("mode", Mode::FILE_EXECUTABLE, 1),
        ("dir", Mode::SYMLINK, 3),
        ("added", Mode::FILE, 4),
        ("sub", Mode::COMMIT, 5),
    ]);
    let plan = Plan::new(&old, &new);
    let names =
        |paths: Vec<&bstr::BString>| paths.into_iter().map(|p| p.to_string()).collect::<Vec<_>>();
    assert_eq!(
        names(plan.remove.iter().collect()),
        ["changed", "dir/file", "gone", "mode"]
    );
    let mut written = names(plan.write.iter().map(|(path, _)| path).collect());
    written.sort();
    assert_eq!(written, ["added", "changed", "dir", "mode"]);
    let mut added = names(plan.added.iter().collect());
    added.sort();
    assert_eq!(added, ["added", "dir"]);
}
