//! `git clone` through `packgate upload-pack`, checked with `git fsck` and by comparing refs.

use crate::util::{
    assert_same_refs, file_url, fsck, git_upload_pack_option, packgate_upload_pack_option,
    present_objects, refs, rename_refs, shared_fixture, Dir, Git,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Bare,
    Mirror,
    WorkTree,
}

fn check_clone(preset: &str, mode: Mode) {
    let source = shared_fixture(preset);
    for git in Git::all() {
        let context = format!("{preset} {mode:?} clone with {git}");
        let dir = Dir::new(&format!("clone-{preset}"));
        let destination = dir.join("clone");
        let mut clone = dir
            .git(&git)
            .args(["-c", "protocol.version=2", "clone"])
            .arg(packgate_upload_pack_option());
        match mode {
            Mode::Bare => clone = clone.arg("--bare"),
            Mode::Mirror => clone = clone.arg("--mirror"),
            Mode::WorkTree => {}
        }
        let output = clone.arg(file_url(&source.path)).arg(&destination).run();
        let git_dir = match mode {
            Mode::WorkTree => destination.join(".git"),
            Mode::Bare | Mode::Mirror => destination.clone(),
        };

        let source_head = dir
            .git_in(&git, &source.path)
            .args(["symbolic-ref", "HEAD"])
            .run()
            .stdout_text();
        let clone_head = dir
            .git_in(&git, &git_dir)
            .args(["symbolic-ref", "HEAD"])
            .run()
            .stdout_text();
        assert_eq!(clone_head, source_head, "{context}: HEAD");

        if source.refs == 0 {
            assert!(
                output
                    .stderr_text()
                    .contains("You appear to have cloned an empty repository"),
                "{context}: no empty-repository warning: {output}"
            );
            assert!(
                refs(&dir, &git, &git_dir, &[]).is_empty(),
                "{context}: refs in an empty clone"
            );
            fsck(&dir, &git, &git_dir);
            continue;
        }

        let source_branches = refs(&dir, &git, &source.path, &["refs/heads"]);
        let source_tags = refs(&dir, &git, &source.path, &["refs/tags"]);
        match mode {
            Mode::Mirror => assert_same_refs(
                &refs(&dir, &git, &git_dir, &[]),
                &refs(&dir, &git, &source.path, &[]),
                &context,
            ),
            Mode::Bare => {
                assert_same_refs(
                    &refs(&dir, &git, &git_dir, &["refs/heads"]),
                    &source_branches,
                    &context,
                );
                assert_same_refs(
                    &refs(&dir, &git, &git_dir, &["refs/tags"]),
                    &source_tags,
                    &context,
                );
            }
            Mode::WorkTree => {
                let mut remote = refs(&dir, &git, &git_dir, &["refs/remotes/origin"]);
                remote.remove("refs/remotes/origin/HEAD");
                assert_same_refs(
                    &rename_refs(&remote, "refs/remotes/origin/", "refs/heads/"),
                    &source_branches,
                    &context,
                );
                assert_same_refs(
                    &refs(&dir, &git, &git_dir, &["refs/tags"]),
                    &source_tags,
                    &context,
                );
                let status = dir
                    .git(&git)
                    .current_dir(&destination)
                    .args(["status", "--porcelain"])
                    .run();
                assert_eq!(status.stdout_text(), "", "{context}: work tree {status}");
            }
        }
        let head_commit = |repo: &std::path::Path| {
            dir.git_in(&git, repo)
                .args(["rev-parse", "HEAD"])
                .run()
                .stdout_text()
        };
        assert_eq!(
            head_commit(&git_dir),
            head_commit(&source.path),
            "{context}"
        );
        fsck(&dir, &git, &git_dir);
    }
}

macro_rules! clone_tests {
    ($($name:ident: $preset:literal, $mode:ident;)*) => {
        $(
            #[test]
            fn $name() {
                check_clone($preset, Mode::$mode);
            }
        )*
    };
}

clone_tests! {
    empty_bare: "empty", Bare;
    empty_mirror: "empty", Mirror;
    empty_work_tree: "empty", WorkTree;
    tiny_bare: "tiny", Bare;
    tiny_mirror: "tiny", Mirror;
    tiny_work_tree: "tiny", WorkTree;
    small_bare: "small", Bare;
    small_mirror: "small", Mirror;
    small_work_tree: "small", WorkTree;
    many_refs_bare: "many-refs", Bare;
    many_refs_mirror: "many-refs", Mirror;
    many_refs_work_tree: "many-refs", WorkTree;
}

/// Every way objects and refs can be stored: fast-import's pack, a normal pack, a pack with
/// a bitmap, loose objects; loose, packed and mixed refs (loose refs shadowing stale packed
/// ones).
#[test]
fn every_object_and_ref_storage() {
    use packgate_fixture::{Packing, RefStorage};

    let git = Git::newest();
    let dir = Dir::new("storage");
    let storages = [
        (Packing::FastImport, RefStorage::Loose),
        (Packing::Repacked, RefStorage::Packed),
        (Packing::RepackedWithBitmaps, RefStorage::Mixed),
        (Packing::Loose, RefStorage::Mixed),
    ];
    for (number, (packing, ref_storage)) in storages.into_iter().enumerate() {
        let spec = packgate_fixture::Spec {
            name: format!("storage-{number}"),
            packing,
            refs: ref_storage,
            extra_branches: 30,
            extra_tags: 30,
            ..crate::util::preset_spec("small")
        };
        let source = dir.fixture(&spec);
        let context = format!("{packing:?} objects, {ref_storage:?} refs");
        let clone = dir.join(&format!("clone-{number}.git"));
        dir.git(&git)
            .args(["-c", "protocol.version=2", "clone", "--mirror"])
            .arg(packgate_upload_pack_option())
            .arg(file_url(&source.path))
            .arg(&clone)
            .run();
        assert_same_refs(
            &refs(&dir, &git, &clone, &[]),
            &refs(&dir, &git, &source.path, &[]),
            &context,
        );
        fsck(&dir, &git, &clone);
    }
}

/// git has the empty tree whether or not it is stored (t5702 68): a commit of it clones
/// from packgate as from git, the tree sent with it.
#[test]
fn the_empty_tree_is_sent_even_when_not_stored() {
    let dir = Dir::new("clone-empty-tree");
    let source = dir.join("source.git");
    for git in Git::all() {
        let _ = std::fs::remove_dir_all(&source);
        dir.git(&git)
            .args(["init", "-q", "--bare"])
            .arg(&source)
            .run();
        let empty_tree = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
        let commit = dir
            .git_in(&git, &source)
            .args(["hash-object", "-t", "commit", "-w", "--stdin"])
            .stdin(format!(
                "tree {empty_tree}\nauthor A <a@example.com> 1 +0000\n\
                 committer A <a@example.com> 1 +0000\n\nempty\n"
            ))
            .run()
            .stdout_text();
        dir.git_in(&git, &source)
            .args(["update-ref", "refs/heads/main", commit.trim()])
            .run();
        assert!(
            !present_objects(&dir, &git, &source).contains(empty_tree),
            "the empty tree must not be stored for this test"
        );
        let mut received = Vec::new();
        for (n, upload_pack) in [packgate_upload_pack_option(), git_upload_pack_option(&git)]
            .into_iter()
            .enumerate()
        {
            let clone = dir.join(&format!("clone-{}-{n}.git", git.version.replace(' ', "-")));
            dir.git(&git)
                .args(["clone", "-q", "--bare"])
                .arg(&upload_pack)
                .arg(file_url(&source))
                .arg(&clone)
                .run();
            fsck(&dir, &git, &clone);
            received.push(present_objects(&dir, &git, &clone));
        }
        assert!(received[0].contains(empty_tree), "with {git}");
        assert_eq!(
            received[0], received[1],
            "packgate and git upload-pack, with {git}"
        );
    }
}

/// A repository missing an object: the clone must end in an explicit error from the server
/// (sideband 3, shown as `remote: …`), never hang or end silently with a short pack.
#[test]
fn missing_object_ends_in_an_explicit_error() {
    let dir = Dir::new("clone-missing-object");
    // `tiny` keeps every object loose, so one can be removed.
    let source = dir.fixture(&crate::util::preset_spec("tiny"));
    let git = Git::newest();
    let blob = dir
        .git_in(&git, &source.path)
        .args(["rev-parse", "HEAD:"])
        .run()
        .stdout_text();
    let listing = dir
        .git_in(&git, &source.path)
        .args(["ls-tree", blob.trim()])
        .run()
        .stdout_text();
    let blob = listing
        .lines()
        .find_map(|line| {
            line.split_whitespace()
                .nth(2)
                .filter(|_| line.contains(" blob "))
        })
        .unwrap_or_else(|| panic!("no blob in the root tree: {listing}"))
        .to_owned();
    let loose = source
        .path
        .join("objects")
        .join(&blob[..2])
        .join(&blob[2..]);
    std::fs::remove_file(&loose)
        .unwrap_or_else(|error| panic!("removing {}: {error}", loose.display()));

    let output = dir
        .git(&git)
        .args(["-c", "protocol.version=2", "clone", "--bare"])
        .arg(packgate_upload_pack_option())
        .arg(file_url(&source.path))
        .arg(dir.join("clone"))
        .output();
    assert!(
        !output.status.success(),
        "clone of a broken repository succeeded: {output}"
    );
    assert!(
        output
            .stderr_text()
            .contains(&format!("remote: upload-pack: object {blob} is missing")),
        "the client was not told why: {output}"
    );
}

/// `<directory>` may be a work tree (its `.git` is served) or name a bare repository without
/// its `.git` suffix; `--strict` takes the path as the git directory itself, as git does.
#[test]
fn serves_work_trees_and_suffixless_paths_unless_strict() {
    let source = shared_fixture("tiny");
    let dir = Dir::new("clone-work-tree-source");
    let git = Git::newest();
    let work_tree = dir.join("work");
    dir.git(&git)
        .arg("clone")
        .arg(&source.path)
        .arg(&work_tree)
        .run();
    dir.copy_tree(&source.path, &dir.join("bare.git"));

    for (number, path) in [work_tree.clone(), dir.join("bare")]
        .into_iter()
        .enumerate()
    {
        let clone = dir.join(&format!("clone-{number}"));
        dir.git(&git)
            .args(["-c", "protocol.version=2", "clone", "--bare"])
            .arg(packgate_upload_pack_option())
            .arg(file_url(&path))
            .arg(&clone)
            .run();
        fsck(&dir, &git, &clone);
        let served = if number == 0 {
            work_tree.join(".git")
        } else {
            source.path.clone()
        };
        let expected = refs(&dir, &git, &served, &["refs/heads"]);
        let context = format!("clone of {}", path.display());
        assert_same_refs(
            &refs(&dir, &git, &clone, &["refs/heads"]),
            &expected,
            &context,
        );
    }

    let output = dir
        .packgate()
        .args(["upload-pack", "--strict", "--advertise-refs"])
        .arg(&work_tree)
        .env("GIT_PROTOCOL", "version=2")
        .output();
    assert!(
        !output.status.success(),
        "--strict accepted a work tree: {output}"
    );
    // As git's: the refusal is on standard error alone.
    assert!(
        output.stdout.is_empty()
            && output
                .stderr_text()
                .contains("does not appear to be a git repository"),
        "--strict refusal not as git's: {output}"
    );
    dir.packgate()
        .args(["upload-pack", "--strict", "--advertise-refs"])
        .arg(work_tree.join(".git"))
        .env("GIT_PROTOCOL", "version=2")
        .run();
}

/// `lsrefs.unborn` decides whether a clone of an empty repository learns the branch its `HEAD`
/// names: `advertise` (the default) tells it, `allow` answers only clients that ask without the
/// advertisement, `ignore` never tells; the client then falls back to its `init.defaultBranch`.
/// Each setting gives the branch git's own upload-pack gives.
#[test]
fn empty_clone_branch_follows_lsrefs_unborn() {
    for git in Git::all() {
        let dir = Dir::new("lsrefs-unborn");
        let server = dir.join("server.git");
        dir.git(&git)
            .args(["init", "--quiet", "--bare"])
            .arg(&server)
            .run();
        dir.git_in(&git, &server)
            .args(["symbolic-ref", "HEAD", "refs/heads/serverdefault"])
            .run();
        for setting in [None, Some("advertise"), Some("allow"), Some("ignore")] {
            if let Some(value) = setting {
                dir.git_in(&git, &server)
                    .args(["config", "lsrefs.unborn", value])
                    .run();
            }
            let branch = |name: &str, upload_pack: String| {
                let clone = dir.join(name);
                dir.git(&git)
                    .args(["-c", "init.defaultBranch=clientdefault"])
                    .args(["-c", "protocol.version=2", "clone", "--quiet", "--bare"])
                    .arg(upload_pack)
                    .arg(file_url(&server))
                    .arg(&clone)
                    .run();
                let head = dir
                    .git_in(&git, &clone)
                    .args(["symbolic-ref", "HEAD"])
                    .run()
                    .stdout_text();
                std::fs::remove_dir_all(&clone).unwrap_or_else(|err| panic!("{err}"));
                head
            };
            let ours = branch("ours", packgate_upload_pack_option());
            let theirs = branch("theirs", git_upload_pack_option(&git));
            let expected = match setting {
                None | Some("advertise") => "refs/heads/serverdefault",
                _ => "refs/heads/clientdefault",
            };
            assert_eq!(ours.trim(), expected, "{git}, lsrefs.unborn={setting:?}");
            assert_eq!(ours, theirs, "{git}, lsrefs.unborn={setting:?}");
        }
    }
}
