//! Fetches from a repository with a reachability bitmap (`git repack -adb`, or packgate's own
//! writer after git's plain repack): packgate counts with the bitmap (its debug event says
//! so) and sends what git's upload-pack sends.

use std::path::Path;

use crate::fetch::move_source_forward;
use crate::util::{
    file_url, fsck, git_upload_pack_option, packgate_upload_pack_option, present_objects,
    preset_spec, refs, Dir, Git,
};

/// The debug event of a count made with bitmaps.
const COUNTED_WITH_BITMAPS: &str = "counted objects with bitmaps";

/// `git <args>` in `dir` through packgate, its pack crate's debug events on standard error.
fn through_packgate(dir: &Dir, git: &Git, cwd: &Path, args: &[&str]) -> String {
    dir.git(git)
        .current_dir(cwd)
        .env("PACKGATE_LOG", "packgate_pack=debug")
        .args(["-c", "protocol.version=2"])
        .args(args)
        .arg(packgate_upload_pack_option())
        .run()
        .stderr_text()
}

/// `git fetch --prune origin` of every branch and tag into `clone` through packgate, after
/// `source` moved: counted with the bitmap, or walked when a have has none; then the clone
/// passes `git fsck` and has the source's refs. Returns packgate's log.
fn fetch_what_moved(dir: &Dir, git: &Git, clone: &Path, source: &Path) -> String {
    let log = through_packgate(
        dir,
        git,
        clone,
        &[
            "fetch",
            "--prune",
            "origin",
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        ],
    );
    assert!(
        log.contains(COUNTED_WITH_BITMAPS) || log.contains("enumerated objects"),
        "fetch with {git}: {log}"
    );
    fsck(dir, git, clone);
    let fetched = refs(dir, git, clone, &["refs/heads", "refs/tags"]);
    let expected = refs(dir, git, source, &["refs/heads", "refs/tags"]);
    crate::util::assert_same_refs(&fetched, &expected, &format!("fetch with {git}"));
    log
}

/// A fresh `small` fixture repacked with a bitmap.
fn bitmapped_source(dir: &Dir, git: &Git) -> std::path::PathBuf {
    let source = dir.fixture(&preset_spec("small")).path;
    dir.git_in(git, &source).args(["repack", "-adbq"]).run();
    dir.git_in(git, &source)
        .args(["config", "uploadpack.allowFilter", "true"])
        .run();
    source
}

/// A fresh `small` fixture fully repacked by git without a bitmap or reverse index, both
/// then written by packgate's writers (as its maintenance does after a full repack), with
/// the lookup table. git itself checks the bitmap of the tip.
fn packgate_bitmapped_source(dir: &Dir, git: &Git) -> std::path::PathBuf {
    let source = dir.fixture(&preset_spec("small")).path;
    dir.git_in(git, &source)
        .args([
            "-c",
            "repack.writeBitmaps=false",
            "-c",
            "pack.writeReverseIndex=false",
        ])
        .args(["repack", "-adq"])
        .run();
    let objects = dir
        .git_in(git, &source)
        .args([
            "rev-parse",
            "--path-format=absolute",
            "--git-path",
            "objects",
        ])
        .run()
        .stdout_text();
    let objects = Path::new(objects.trim());
    let packs: Vec<std::path::PathBuf> = std::fs::read_dir(objects.join("pack"))
        .unwrap_or_else(|err| panic!("{objects:?}: {err}"))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "pack"))
        .collect();
    assert_eq!(packs.len(), 1, "{packs:?}");
    let tips: Vec<gix_hash::ObjectId> = dir
        .git_in(git, &source)
        .args(["for-each-ref", "--format=%(objectname)"])
        .run()
        .stdout_text()
        .lines()
        .map(|line| {
            gix_hash::ObjectId::from_hex(line.as_bytes())
                .unwrap_or_else(|err| panic!("{line}: {err}"))
        })
        .collect();
    let db = gix_odb::at(objects, gix_hash::Kind::Sha1)
        .unwrap_or_else(|err| panic!("{objects:?}: {err}"));
    packgate_pack::write_rev(&packs[0].with_extension("idx"))
        .unwrap_or_else(|err| panic!("{git}: {err}"));
    let options = packgate_pack::BitmapWriteOptions {
        hash_cache: true,
        lookup_table: true,
    };
    let written = packgate_pack::write_bitmap(&packs[0], &db, &tips, None, &options)
        .unwrap_or_else(|err| panic!("{git}: {err}"));
    assert!(written.commits > 0);
    let tested = dir
        .git_in(git, &source)
        .args(["rev-list", "--test-bitmap", "HEAD"])
        .run()
        .stderr_text();
    assert!(tested.contains("OK!"), "{git}: {tested}");
    dir.git_in(git, &source)
        .args(["config", "uploadpack.allowFilter", "true"])
        .run();
    source
}

/// The same clone through git's upload-pack and through packgate: the same objects.
fn clone_both(dir: &Dir, git: &Git, source: &Path, name: &str, extra: &[&str]) -> String {
    let by_git = dir.join(&format!("{name}-git.git"));
    let by_packgate = dir.join(&format!("{name}-packgate.git"));
    dir.git(git)
        .args(["-c", "protocol.version=2", "clone", "--bare", "--no-local"])
        .args(extra)
        .arg(git_upload_pack_option(git))
        .arg(file_url(source))
        .arg(&by_git)
        .run();
    let mut args = vec!["clone", "--bare", "--no-local"];
    args.extend(extra);
    let url = file_url(source);
    let target = by_packgate.to_string_lossy().into_owned();
    args.extend([url.as_str(), target.as_str()]);
    let log = through_packgate(dir, git, dir.path(), &args);
    fsck(dir, git, &by_packgate);
    assert_eq!(
        present_objects(dir, git, &by_packgate),
        present_objects(dir, git, &by_git),
        "{name} with {git}: objects differ from git's"
    );
    assert_eq!(
        refs(dir, git, &by_packgate, &[]),
        refs(dir, git, &by_git, &[])
    );
    log
}

#[test]
fn clones_and_fetches_from_a_bitmapped_repository() {
    for git in Git::all() {
        let dir = Dir::new("bitmaps");
        let source = bitmapped_source(&dir, &git);

        let log = clone_both(&dir, &git, &source, "clone", &[]);
        assert!(
            log.contains(COUNTED_WITH_BITMAPS),
            "clone with {git}: {log}"
        );
        // A want of a tree under a filter is left to the walk (the tree is sent whatever the
        // filter says, its entries not): the tags of trees go for these.
        let listing = dir
            .git_in(&git, &source)
            .args([
                "for-each-ref",
                "--format=%(refname) %(objecttype) %(*objecttype)",
            ])
            .run()
            .stdout_text();
        for line in listing.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields[1..]
                .iter()
                .any(|kind| *kind == "tree" || *kind == "blob")
            {
                dir.git_in(&git, &source)
                    .args(["update-ref", "-d", fields[0]])
                    .run();
            }
        }
        let log = clone_both(&dir, &git, &source, "blobless", &["--filter=blob:none"]);
        assert!(
            log.contains(COUNTED_WITH_BITMAPS),
            "blob:none with {git}: {log}"
        );
        let log = clone_both(&dir, &git, &source, "treeless", &["--filter=tree:0"]);
        assert!(
            log.contains(COUNTED_WITH_BITMAPS),
            "tree:0 with {git}: {log}"
        );

        // New commits and tags after the bitmap, loose: the count walks from them to
        // commits with bitmaps (if every have has one; otherwise the fetch is walked).
        // Fetched into the clone that has the old history.
        move_source_forward(&dir, &git, &source);
        fetch_what_moved(&dir, &git, &dir.join("clone-packgate.git"), &source);
        // And a clone of the moved repository, with the same objects as git's.
        clone_both(&dir, &git, &source, "after", &[]);
    }
}

#[test]
fn clones_and_fetches_with_a_bitmap_packgate_wrote() {
    for git in Git::all() {
        let dir = Dir::new("bitmaps-written");
        let source = packgate_bitmapped_source(&dir, &git);
        for (name, extra) in [
            ("clone", &[][..]),
            ("blobless", &["--filter=blob:none"][..]),
        ] {
            let log = clone_both(&dir, &git, &source, name, extra);
            assert!(
                log.contains(COUNTED_WITH_BITMAPS),
                "{name} with {git}: {log}"
            );
        }
        // git's own upload-pack counts with it too.
        let counted = dir
            .git_in(&git, &source)
            .args(["rev-list", "--use-bitmap-index", "--objects", "--all"])
            .run()
            .stdout_text();
        let walked = dir
            .git_in(&git, &source)
            .args(["rev-list", "--objects", "--all"])
            .run()
            .stdout_text();
        assert_eq!(counted.lines().count(), walked.lines().count(), "{git}");
        move_source_forward(&dir, &git, &source);
        fetch_what_moved(&dir, &git, &dir.join("clone-packgate.git"), &source);
        clone_both(&dir, &git, &source, "after", &[]);
    }
}

#[test]
fn pack_use_bitmaps_false_counts_by_walking() {
    let git = Git::newest();
    let dir = Dir::new("bitmaps-off");
    let source = bitmapped_source(&dir, &git);
    dir.git_in(&git, &source)
        .args(["config", "pack.useBitmaps", "false"])
        .run();
    let clone = dir.join("clone.git").to_string_lossy().into_owned();
    let url = file_url(&source);
    let log = through_packgate(&dir, &git, dir.path(), &["clone", "--bare", &url, &clone]);
    assert!(!log.contains(COUNTED_WITH_BITMAPS), "{log}");
    assert!(log.contains("enumerated objects"), "{log}");
    fsck(&dir, &git, Path::new(&clone));
}

/// A multi-pack index's bitmap (`git multi-pack-index write --bitmap`, several packs, no pack
/// bitmap): clones and fetches are counted with it, and send what git sends.
#[test]
fn clones_and_fetches_with_a_multi_pack_index_bitmap() {
    let git = Git::newest();
    let dir = Dir::new("bitmaps-midx");
    let source = dir.fixture(&preset_spec("small")).path;
    dir.git_in(&git, &source)
        .args(["repack", "-adq", "--no-write-bitmap-index"])
        .run();
    let old = dir.join("old.git");
    dir.git(&git)
        .args(["clone", "-q", "--bare", "--no-local"])
        .arg(file_url(&source))
        .arg(&old)
        .run();
    // Newer history in a second pack, then one MIDX bitmap over both.
    move_source_forward(&dir, &git, &source);
    dir.git_in(&git, &source)
        .args(["repack", "-dq", "--no-write-bitmap-index"])
        .run();
    dir.git_in(&git, &source)
        .args(["multi-pack-index", "write", "--bitmap", "--no-progress"])
        .run();
    let pack_dir = source.join("objects/pack");
    let names: Vec<String> = std::fs::read_dir(&pack_dir)
        .unwrap_or_else(|error| panic!("{}: {error}", pack_dir.display()))
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().filter(|name| name.ends_with(".pack")).count() >= 2,
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|name| name.starts_with("multi-pack-index-") && name.ends_with(".bitmap")),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|name| name.starts_with("pack-") && name.ends_with(".bitmap")),
        "{names:?}"
    );

    let log = clone_both(&dir, &git, &source, "clone", &[]);
    assert!(log.contains(COUNTED_WITH_BITMAPS), "clone: {log}");
    assert!(log.contains("multi-pack-index-"), "clone: {log}");

    // The old clone fetches what moved (its haves have bitmaps or are walked to ones that do).
    fetch_what_moved(&dir, &git, &old, &source);
}
