//! `pack_refs()` against `git pack-refs` on copies of the same repository: the same
//! `packed-refs`, the same loose files left, and git, gix-ref and packgate's reader agreeing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::*;

fn git(cwd: &Path, args: &[&str]) -> String {
    let dates = [
        ("GIT_COMMITTER_DATE", "@1700000000 +0000"),
        ("GIT_AUTHOR_DATE", "@1700000000 +0000"),
    ];
    let out = packgate_object::testing::run_git("git", cwd, args, &dates, None);
    String::from_utf8(out).unwrap()
}

struct Repo {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Repo {
    /// Branches (nested ones too), lightweight and annotated tags, a tag of a tag, a tag of a
    /// tree, a symbolic ref, refs already packed (one of them overridden by a loose value).
    /// With `broken`: refs git never packs — pointing at a missing object, garbage, a bad
    /// name, per-worktree refs.
    fn new(broken: bool) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo.git");
        git(dir.path(), &["init", "-q", "--bare", "repo.git"]);
        let tree = git(&path, &["mktree"]).trim().to_owned();
        let first = git(&path, &["commit-tree", &tree, "-m", "first"])
            .trim()
            .to_owned();
        let second = git(&path, &["commit-tree", &tree, "-p", &first, "-m", "second"])
            .trim()
            .to_owned();
        for (name, id) in [
            ("refs/heads/main", &first),
            ("refs/heads/packed-only", &first),
            ("refs/tags/old", &first),
        ] {
            git(&path, &["update-ref", name, id]);
        }
        git(&path, &["pack-refs", "--all", "--prune"]);
        for (name, id) in [
            ("refs/heads/main", &second),
            ("refs/heads/a/b/c", &second),
            ("refs/heads/a/d", &first),
            ("refs/remotes/origin/main", &first),
            ("refs/tags/light", &second),
            ("refs/notes/deep/er/x", &first),
        ] {
            git(&path, &["update-ref", name, id]);
        }
        git(
            &path,
            &["tag", "-a", "-m", "annotated", "annotated", &second],
        );
        git(
            &path,
            &["tag", "-a", "-m", "of a tag", "tag-of-tag", "annotated"],
        );
        git(&path, &["tag", "-a", "-m", "of a tree", "tree-tag", &tree]);
        git(
            &path,
            &[
                "symbolic-ref",
                "refs/remotes/origin/HEAD",
                "refs/remotes/origin/main",
            ],
        );
        if broken {
            let write = |name: &str, content: &str| {
                let file = path.join(name);
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(file, content).unwrap();
            };
            write(
                "refs/heads/missing",
                "1111111111111111111111111111111111111111\n",
            );
            write("refs/tags/garbage", "not a ref\n");
            write("refs/heads/bad..name", &format!("{first}\n"));
            write("refs/bisect/bad", &format!("{first}\n"));
            write("refs/worktree/x", &format!("{first}\n"));
            write("refs/rewritten/y", &format!("{first}\n"));
            write("refs/heads/.hidden", &format!("{first}\n"));
            // An old-style symbolic ref: a link whose text is `refs/…`, here also one that
            // resolves (to the ref `refs/heads/refs/heads/main`).
            write("refs/heads/refs/heads/main", &format!("{first}\n"));
            std::os::unix::fs::symlink("refs/heads/main", path.join("refs/heads/link")).unwrap();
        }
        Repo { _dir: dir, path }
    }

    fn copy(&self, name: &str) -> PathBuf {
        let copy = self.path.with_file_name(name);
        let status = Command::new("cp")
            .arg("-a")
            .arg(&self.path)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(status.success());
        copy
    }
}

/// Every file below `refs/`, with its content, and the directories.
fn loose_files(repo: &Path) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if entry.file_type().unwrap().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.push((name, format!("-> {}", target.display())));
            } else if entry.file_type().unwrap().is_dir() {
                out.push((name + "/", String::new()));
                walk(root, &path, out);
            } else {
                out.push((name, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(repo, &repo.join("refs"), &mut out);
    out.sort();
    out
}

fn same_as_git(broken: bool, options: PackRefsOptions, git_args: &[&str]) -> Repo {
    let repo = Repo::new(broken);
    let reference = repo.copy("reference.git");
    git(&reference, git_args);
    let before = loose_files(&repo.path);
    let outcome = pack_refs(&repo.path, &options).unwrap();
    assert_eq!(
        std::fs::read_to_string(repo.path.join("packed-refs")).unwrap(),
        std::fs::read_to_string(reference.join("packed-refs")).unwrap(),
        "{git_args:?}"
    );
    let after = loose_files(&repo.path);
    assert_eq!(after, loose_files(&reference), "{git_args:?}");
    let files = |list: &[(String, String)]| list.iter().filter(|f| !f.0.ends_with('/')).count();
    assert_eq!(outcome.pruned, files(&before) - files(&after));
    assert!(!repo.path.join("packed-refs.lock").exists());
    if broken {
        // git cannot list refs while one points at a missing object.
        return repo;
    }
    for args in [
        &["for-each-ref"][..],
        &[
            "for-each-ref",
            "--format=%(refname) %(objectname) %(*objectname)",
        ],
        &["show-ref", "--dereference"],
    ] {
        assert_eq!(git(&repo.path, args), git(&reference, args), "{args:?}");
    }
    repo
}

#[test]
fn all_and_prune_as_git() {
    let repo = same_as_git(
        true,
        PackRefsOptions {
            all: true,
            prune: true,
        },
        &["pack-refs", "--all", "--prune"],
    );
    let packed = std::fs::read_to_string(repo.path.join("packed-refs")).unwrap();
    assert!(packed.starts_with(PACKED_REFS_HEADER));
    assert!(packed.contains("refs/heads/a/b/c"));
    assert!(!packed.contains("missing") && !packed.contains("bisect"));
    // Emptied directories go, refs/<x>/ stays.
    assert!(!repo.path.join("refs/heads/a").exists());
    assert!(repo.path.join("refs/heads").is_dir());
}

#[test]
fn tags_only_as_git() {
    let repo = same_as_git(
        true,
        PackRefsOptions {
            all: false,
            prune: true,
        },
        &["pack-refs"],
    );
    assert!(repo.path.join("refs/heads/a/b/c").exists());
    assert!(!repo.path.join("refs/tags/annotated").exists());
}

#[test]
fn without_prune_as_git() {
    let repo = same_as_git(
        false,
        PackRefsOptions {
            all: true,
            prune: false,
        },
        &["pack-refs", "--all", "--no-prune"],
    );
    assert!(repo.path.join("refs/heads/a/b/c").exists());
}

#[test]
fn readers_agree_and_fsck_passes() {
    let repo = same_as_git(
        false,
        PackRefsOptions {
            all: true,
            prune: true,
        },
        &["pack-refs", "--all", "--prune"],
    );
    git(&repo.path, &["fsck", "--strict"]);
    let listed = git(
        &repo.path,
        &["for-each-ref", "--format=%(refname) %(objectname)"],
    );
    for line in listed.lines() {
        let (name, id) = line.split_once(' ').unwrap();
        assert_eq!(
            git(&repo.path, &["show-ref", "--verify", "--hash", name]).trim(),
            id
        );
    }
    let data = std::fs::read(repo.path.join("packed-refs")).unwrap();
    let body = &data[PACKED_REFS_HEADER.len()..];
    let ours: Vec<String> = crate::packed_refs::prefixed(body, b"".as_bstr())
        .map(|record| {
            let record = record.unwrap();
            format!("{} {} {:?}", record.name, record.target, record.peeled)
        })
        .collect();
    let buffer =
        gix_ref::packed::Buffer::open(repo.path.join("packed-refs"), 0, gix_hash::Kind::Sha1)
            .unwrap();
    let theirs: Vec<String> = buffer
        .iter()
        .unwrap()
        .map(|record| {
            let record = record.unwrap();
            let peeled = record.object.map(|hex| ObjectId::from_hex(hex).unwrap());
            format!("{} {} {:?}", record.name.as_bstr(), record.target(), peeled)
        })
        .collect();
    assert_eq!(ours, theirs);
    // The packed refs are what git lists, except the symbolic ref, which stays loose.
    let packed_names: Vec<&str> = ours.iter().map(|r| r.split(' ').next().unwrap()).collect();
    let listed: Vec<&str> = listed
        .lines()
        .map(|line| line.split(' ').next().unwrap())
        .filter(|name| *name != "refs/remotes/origin/HEAD")
        .collect();
    assert_eq!(packed_names, listed);
}

#[test]
fn a_ref_updated_while_packing_keeps_its_new_value() {
    let repo = Repo::new(false);
    let main = repo.path.join("refs/heads/main");
    let packed_value = std::fs::read_to_string(&main).unwrap();
    let first = git(&repo.path, &["rev-parse", "refs/heads/main^"]);
    let outcome = pack_refs_with(
        &repo.path,
        &PackRefsOptions {
            all: true,
            prune: true,
        },
        &mut || {
            // Between the snapshot and the prune, another writer moves the branch.
            git(&repo.path, &["update-ref", "refs/heads/main", first.trim()]);
        },
    )
    .unwrap();
    assert_eq!(outcome.pruned, outcome.packed - 1);
    assert_eq!(std::fs::read_to_string(&main).unwrap(), first);
    assert_ne!(packed_value, first);
    assert_eq!(
        git(&repo.path, &["rev-parse", "refs/heads/main"]),
        first,
        "the new value is not lost"
    );
    git(&repo.path, &["fsck"]);
}

#[test]
fn a_locked_ref_is_not_pruned() {
    let repo = Repo::new(false);
    std::fs::write(repo.path.join("refs/heads/a/d.lock"), b"").unwrap();
    let outcome = pack_refs(
        &repo.path,
        &PackRefsOptions {
            all: true,
            prune: true,
        },
    )
    .unwrap();
    assert_eq!(outcome.pruned, outcome.packed - 1);
    assert!(repo.path.join("refs/heads/a/d").exists());
    assert!(repo.path.join("refs/heads/a/d.lock").exists());
}

#[test]
fn a_held_packed_refs_lock_fails_cleanly() {
    let repo = Repo::new(false);
    let before = std::fs::read(repo.path.join("packed-refs")).unwrap();
    std::fs::write(repo.path.join("packed-refs.lock"), b"").unwrap();
    let err = pack_refs(
        &repo.path,
        &PackRefsOptions {
            all: true,
            prune: true,
        },
    )
    .unwrap_err();
    assert!(matches!(err, PackRefsError::Lock { .. }), "{err}");
    assert_eq!(
        std::fs::read(repo.path.join("packed-refs")).unwrap(),
        before
    );
    assert!(repo.path.join("refs/heads/main").exists());
}

#[test]
fn old_style_packed_refs_are_peeled_again() {
    let repo = Repo::new(false);
    let reference = repo.copy("reference.git");
    // A file from before fully-peeled, unsorted, peeling nothing.
    for path in [&repo.path, &reference] {
        git(path, &["pack-refs", "--all"]);
        let packed = std::fs::read_to_string(path.join("packed-refs")).unwrap();
        let mut lines: Vec<&str> = packed
            .lines()
            .skip(1)
            .filter(|line| !line.starts_with('^'))
            .collect();
        lines.reverse();
        std::fs::write(path.join("packed-refs"), lines.join("\n") + "\n").unwrap();
    }
    git(&reference, &["pack-refs", "--all"]);
    pack_refs(
        &repo.path,
        &PackRefsOptions {
            all: true,
            prune: true,
        },
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(repo.path.join("packed-refs")).unwrap(),
        std::fs::read_to_string(reference.join("packed-refs")).unwrap()
    );
}

#[test]
fn the_configured_ref_lock_timeout_is_waited_for() {
    let repo = Repo::new(false);
    git(&repo.path, &["config", "core.filesRefLockTimeout", "20000"]);
    let lock = repo.path.join("refs/heads/a/d.lock");
    std::fs::write(&lock, b"").unwrap();
    // Another writer holds the ref's lock for a while (longer than git's default 100 ms).
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(500));
        std::fs::remove_file(lock).unwrap();
    });
    let outcome = pack_refs(
        &repo.path,
        &PackRefsOptions {
            all: true,
            prune: true,
        },
    )
    .unwrap();
    holder.join().unwrap();
    assert_eq!(outcome.pruned, outcome.packed);
    assert!(!repo.path.join("refs/heads/a").exists());
}
