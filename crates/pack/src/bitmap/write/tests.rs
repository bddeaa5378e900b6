use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use gix_hash::ObjectId;

use super::*;
use crate::{
    bitmap::{tests::Repo, PackBitmap},
    test_git::git_text as git,
};

/// The git binaries to check against: the one on PATH (2.47) and Debian's 2.39.
fn gits() -> Vec<&'static str> {
    let mut gits = vec!["git"];
    if Path::new("/usr/bin/git").exists() {
        gits.push("/usr/bin/git");
    }
    gits
}

/// `<git> <args>` in `cwd` with `env`: its status, standard output and standard error.
fn run(git: &str, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = Command::new(git)
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn pack_of(bare: &Path) -> PathBuf {
    let packs: Vec<PathBuf> = std::fs::read_dir(bare.join("objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect();
    assert_eq!(packs.len(), 1, "{packs:?}");
    packs.into_iter().next().unwrap()
}

fn tips(bare: &Path) -> Vec<ObjectId> {
    git(bare, &["for-each-ref", "--format=%(objectname)"], None)
        .lines()
        .map(|line| ObjectId::from_hex(line.as_bytes()).unwrap())
        .collect()
}

/// A full repack by git without bitmap or reverse index: the pack maintenance would
/// write, left for us to index.
fn repack_plain(bare: &Path) -> PathBuf {
    git(
        bare,
        &[
            "-c",
            "repack.writeBitmaps=false",
            "-c",
            "pack.writeReverseIndex=false",
            "repack",
            "-adq",
        ],
        None,
    );
    pack_of(bare)
}

fn write_ours(bare: &Path, hashes: Option<&[u32]>, options: BitmapWriteOptions) -> BitmapWritten {
    let pack = pack_of(bare);
    let db = gix_odb::at(bare.join("objects"), gix_hash::Kind::Sha1).unwrap();
    crate::write_rev(&pack.with_extension("idx")).unwrap();
    write_bitmap(&pack, &db, &tips(bare), hashes, &options).unwrap()
}

/// Every check git has of a bitmap, with each git: `--test-bitmap` of each bitmapped
/// commit (with and without the lookup table), and counts and object lists with the bitmap
/// equal to those without.
fn git_accepts(bare: &Path, bitmapped: &[ObjectId]) {
    for git in gits() {
        for table in ["1", "0"] {
            let env = [("GIT_TEST_READ_COMMIT_TABLE", table)];
            // A sample: each check is a git process.
            let step = bitmapped.len().div_ceil(30).max(1);
            for commit in bitmapped.iter().step_by(step) {
                let (ok, _, stderr) = run(
                    git,
                    bare,
                    &["rev-list", "--test-bitmap", &commit.to_string()],
                    &env,
                );
                assert!(ok && stderr.contains("OK!"), "{git} {commit}: {stderr}");
            }
        }
        let env = [];
        for what in [&["--count", "--all"][..], &["--objects", "--all"][..]] {
            let plain = run(git, bare, &[&["rev-list"][..], what].concat(), &env);
            let (ok, with, stderr) = run(
                git,
                bare,
                &[&["rev-list", "--use-bitmap-index"][..], what].concat(),
                &env,
            );
            assert!(plain.0 && ok, "{git} {what:?}: {stderr}");
            let set = |out: &str| {
                out.lines()
                    .map(|line| line.split(' ').next().unwrap().to_owned())
                    .collect::<BTreeSet<_>>()
            };
            assert_eq!(set(&with), set(&plain.1), "{git} {what:?}");
            assert!(!with.is_empty());
        }
        let (ok, _, stderr) = run(git, bare, &["fsck", "--strict"], &env);
        assert!(ok, "{git}: {stderr}");
    }
}

/// The commits with a bitmap in `bitmap`, and each one's bits.
fn entries(bitmap: &PackBitmap) -> BTreeMap<ObjectId, Vec<u64>> {
    let mut resolved = std::collections::HashMap::new();
    bitmap
        .by_commit
        .iter()
        .map(|(id, &entry)| {
            let bits = bitmap.bitmap(entry, &mut resolved).unwrap();
            (*id, bits.trimmed_words().to_vec())
        })
        .collect()
}

/// The small history of the reader's tests, with an octopus merge, a tag of a tag and
/// annotated tags of a tree and a blob: we index git's pack, git and our reader agree.
#[test]
fn a_small_history_is_read_by_git_and_by_us() {
    let repo = Repo::history();
    git(&repo.work, &["checkout", "-q", "-b", "o1", "main~3"], None);
    repo.commits("o1", 200..202);
    git(&repo.work, &["checkout", "-q", "-b", "o2", "main~5"], None);
    repo.commits("o2", 300..303);
    git(&repo.work, &["checkout", "-q", "main"], None);
    git(&repo.work, &["merge", "-q", "--no-edit", "o1", "o2"], None);
    assert_eq!(
        git(&repo.work, &["rev-list", "--parents", "-1", "main"], None)
            .split(' ')
            .count(),
        4,
        "an octopus merge"
    );
    repo.commits("main", 40..42);
    git(
        &repo.work,
        &["tag", "-a", "-m", "inner", "inner", "main~1"],
        None,
    );
    git(
        &repo.work,
        &["tag", "-a", "-m", "outer", "outer", "inner"],
        None,
    );
    git(
        &repo.work,
        &["tag", "-a", "-m", "a tree", "tree-tag", "main^{tree}"],
        None,
    );
    repo.push();
    git(
        &repo.work,
        &["push", "-q", repo.bare.to_str().unwrap(), "o1", "o2"],
        None,
    );
    repack_plain(&repo.bare);
    let options = BitmapWriteOptions {
        hash_cache: true,
        lookup_table: true,
    };
    let written = write_ours(&repo.bare, None, options);
    let commits = git(&repo.bare, &["rev-list", "--all"], None);
    let commits: Vec<ObjectId> = commits
        .lines()
        .map(|line| ObjectId::from_hex(line.as_bytes()).unwrap())
        .collect();
    // Under 100 commits: every one has a bitmap.
    assert_eq!(written.commits as usize, commits.len());
    let bitmap = repo.bitmap().expect("our reader takes our bitmap");
    assert!(bitmap.lookup_table && !bitmap.name_hashes);
    assert_eq!(bitmap.num_entries(), commits.len());
    git_accepts(&repo.bare, &commits);
    for (wants, haves) in super::super::tests::requests(&repo) {
        repo.check(&wants, &haves);
    }
    let (main, outer, tree_tag) = (repo.id("main"), repo.id("outer"), repo.id("tree-tag"));
    repo.check(&[main, outer, tree_tag, repo.id("blob-tag")], &[]);
    repo.check(&[outer], &[repo.id("o1")]);
    // (A tree wanted beside a have is not: the walk sends the tree's blobs that only the
    // have's older history holds, bitmaps don't, in git too.)
    repo.check(&[repo.id("o2"), outer], &[repo.id("side")]);
    repo.check(&[repo.id("o1"), tree_tag], &[]);
}

/// A fast-import stream of `commits` commits on main with a side branch merged now and
/// then, octopus merges, tags, files in directories; every commit a minute after the last.
fn history_stream(commits: usize) -> Vec<u8> {
    let mut out = String::new();
    let mut mark = 0;
    let mut main_tip = 0;
    let mut side_tip = 0;
    let mut time = 1_600_000_000u64;
    for n in 0..commits {
        // A side commit every fifth, merged into main every 25th.
        let on_side = n % 5 == 4;
        mark += 1;
        time += 60;
        let branch = if on_side { "side" } else { "main" };
        let message = format!("c{n}\n");
        out += &format!(
            "commit refs/heads/{branch}\nmark :{mark}\ncommitter C <c@example.com> {time} +0000\ndata {}\n{message}",
            message.len()
        );
        let parent = if on_side { side_tip } else { main_tip };
        if parent != 0 {
            out += &format!("from :{parent}\n");
        } else if on_side && main_tip != 0 {
            out += &format!("from :{main_tip}\n");
        }
        if !on_side && n % 25 == 0 && side_tip != 0 {
            out += &format!("merge :{side_tip}\n");
        }
        if !on_side && n % 60 == 30 && main_tip > 3 {
            // An octopus with two older commits of main.
            out += &format!("merge :{}\nmerge :{}\n", main_tip - 2, main_tip - 3);
        }
        let content: String = (0..20).map(|i| format!("{n} {i}\n")).collect();
        out += &format!(
            "M 100644 inline d{}/s{}/f{}\ndata {}\n{}\n",
            n % 7,
            n % 3,
            n % 11,
            content.len(),
            content
        );
        if on_side {
            side_tip = mark;
        } else {
            main_tip = mark;
        }
        if n % 50 == 10 {
            let message = format!("v{n}\n");
            out += &format!(
                "tag v{n}\nfrom :{mark}\ntagger T <t@example.com> {time} +0000\ndata {}\n{message}",
                message.len()
            );
        }
    }
    out.into_bytes()
}

fn fast_imported(commits: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("repo.git");
    git(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", "repo.git"],
        None,
    );
    git(
        &bare,
        &["fast-import", "--quiet"],
        Some(&history_stream(commits)),
    );
    git(&bare, &["tag", "-a", "-m", "outer", "outer", "v10"], None);
    git(
        &bare,
        &["tag", "-a", "-m", "tree", "tree-tag", "main^{tree}"],
        None,
    );
    git(
        &bare,
        &["tag", "-a", "-m", "blob", "blob-tag", "main:d0/s0/f0"],
        None,
    );
    (dir, bare)
}

/// Past 100 commits git selects commits spaced by age and XORs bitmaps against earlier
/// ones. On git's own pack, with git's own name hashes and every ref preferred as a tip,
/// our file has git's commits, each with git's bits, and git's hash cache.
#[test]
fn selection_and_bits_match_gits_past_a_hundred_commits() {
    let (_dir, bare) = fast_imported(700);
    git(
        &bare,
        &[
            "-c",
            "pack.preferBitmapTips=refs/",
            "-c",
            "pack.writeBitmapHashCache=true",
            "-c",
            "pack.writeBitmapLookupTable=true",
            "repack",
            "-adbq",
        ],
        None,
    );
    let pack = pack_of(&bare);
    let bitmap_path = pack.with_extension("bitmap");
    let gits_file = std::fs::read(&bitmap_path).unwrap();
    let objects = crate::rev::open_index(&pack.with_extension("idx"))
        .unwrap()
        .num_objects() as usize;
    let hashes: Vec<u32> = gits_file[gits_file.len() - 20 - 4 * objects..gits_file.len() - 20]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let copy = bare.join("gits.bitmap");
    std::fs::write(&copy, &gits_file).unwrap();
    let options = BitmapWriteOptions {
        hash_cache: true,
        lookup_table: true,
    };
    let written = write_ours(&bare, Some(&hashes), options);
    let ours_file = std::fs::read(&written.path).unwrap();
    let open = |path: &Path| {
        let index = crate::rev::open_index(&pack.with_extension("idx")).unwrap();
        let order: Arc<[u32]> = crate::rev::pack_order(&index).into();
        PackBitmap::open(path, &pack.with_extension("idx"), order).unwrap()
    };
    let (theirs, ours) = (open(&copy), open(&written.path));
    assert!(ours.name_hashes && ours.lookup_table);
    assert!(
        ours.num_entries() > 20 && ours.num_entries() < 300,
        "{}",
        ours.num_entries()
    );
    for (ours, theirs) in ours.types.iter().zip(&theirs.types) {
        assert_eq!(ours.trimmed_words(), theirs.trimmed_words());
    }
    let (theirs_bits, ours_bits) = (entries(&theirs), entries(&ours));
    assert_eq!(
        ours_bits.keys().collect::<Vec<_>>(),
        theirs_bits.keys().collect::<Vec<_>>(),
        "the same commits selected"
    );
    assert_eq!(ours_bits, theirs_bits);
    assert!(
        ours.entries.iter().filter(|(xor, _)| *xor > 0).count() > ours.num_entries() / 2,
        "most bitmaps XOR-compressed"
    );
    // The entries in git's order, the hash cache as git wrote it.
    assert_eq!(
        (0..ours.num_entries())
            .map(|n| ours.data[ours.entries[n].1 - 6..ours.entries[n].1 - 2].to_vec())
            .collect::<Vec<_>>(),
        (0..theirs.num_entries())
            .map(|n| theirs.data[theirs.entries[n].1 - 6..theirs.entries[n].1 - 2].to_vec())
            .collect::<Vec<_>>()
    );
    let tail = 20 + 4 * objects;
    assert_eq!(
        ours_file[ours_file.len() - tail..ours_file.len() - 20],
        gits_file[gits_file.len() - tail..gits_file.len() - 20]
    );
    assert!(
        ours_file.len() <= gits_file.len() * 11 / 10,
        "{} vs {}",
        ours_file.len(),
        gits_file.len()
    );
    std::fs::remove_file(&copy).unwrap();
    let bitmapped: Vec<ObjectId> = ours_bits.keys().copied().collect();
    git_accepts(&bare, &bitmapped);
}

/// Without git's pack order or preferences: a pack git wrote without a bitmap, every tip
/// preferred, checked by git and counted by our reader like the walk.
#[test]
fn a_longer_history_is_read_by_git_and_by_us() {
    let (_dir, bare) = fast_imported(450);
    repack_plain(&bare);
    let written = write_ours(&bare, None, BitmapWriteOptions::default());
    assert!(written.commits > 50 && written.commits < 200, "{written:?}");
    let db = gix_odb::at(bare.join("objects"), gix_hash::Kind::Sha1).unwrap();
    let bitmap = crate::packs::PackSet::open(&db).bitmap().unwrap();
    assert!(!bitmap.name_hashes && !bitmap.lookup_table);
    // The branches are among the newest commits: they have bitmaps. (Older tips are
    // preferred in their windows, but two tags in one window get one bitmap.)
    for branch in ["main", "side"] {
        let tip = git(&bare, &["rev-parse", branch], None);
        let tip = ObjectId::from_hex(tip.trim().as_bytes()).unwrap();
        assert!(bitmap.entry_of(&tip).is_some(), "{branch}");
    }
    let bitmapped: Vec<ObjectId> = bitmap.by_commit.keys().copied().collect();
    git_accepts(&bare, &bitmapped);
    // Counting with the bitmap as a fetch does, against the walk.
    let id = |rev: &str| {
        ObjectId::from_hex(git(&bare, &["rev-parse", rev], None).trim().as_bytes()).unwrap()
    };
    for (wants, haves) in [
        (
            vec![id("main"), id("side"), id("outer"), id("tree-tag")],
            vec![],
        ),
        (vec![id("main")], vec![id("main~30")]),
        (vec![id("main"), id("blob-tag")], vec![id("side~4")]),
        (vec![id("side")], vec![id("v310")]),
    ] {
        let count = |bitmap: Option<Arc<PackBitmap>>| {
            let options = crate::EnumerateOptions {
                bitmap,
                bitmap_boundary_haves: true,
                ..Default::default()
            };
            let found = crate::enumerate(
                &db,
                &wants,
                &haves,
                &options,
                &std::sync::atomic::AtomicBool::new(false),
            )
            .unwrap();
            (
                found.objects().iter().copied().collect::<BTreeSet<_>>(),
                found.used_bitmap(),
            )
        };
        let (walked, walk_used) = count(None);
        let (counted, used) = count(Some(Arc::clone(&bitmap)));
        assert!(!walk_used && used);
        assert_eq!(counted, walked, "{wants:?} {haves:?}");
    }
}

#[test]
fn a_pack_without_full_closure_is_refused() {
    let (_dir, bare) = fast_imported(30);
    let db = gix_odb::at(bare.join("objects"), gix_hash::Kind::Sha1).unwrap();
    // A pack of main~5..main only.
    let listed = git(&bare, &["rev-list", "--objects", "main~5..main"], None);
    let ids: String = listed
        .lines()
        .map(|line| format!("{}\n", &line[..40]))
        .collect();
    let name = git(
        &bare,
        &["pack-objects", "objects/pack/pack"],
        Some(ids.as_bytes()),
    );
    let pack = bare.join(format!("objects/pack/pack-{}.pack", name.trim()));
    let main =
        ObjectId::from_hex(git(&bare, &["rev-parse", "main"], None).trim().as_bytes()).unwrap();
    let err = write_bitmap(&pack, &db, &[main], None, &BitmapWriteOptions::default()).unwrap_err();
    assert!(matches!(err, BitmapWriteError::NotClosed { .. }), "{err}");
    let missing = ObjectId::from_hex(b"0123456789012345678901234567890123456789").unwrap();
    let err =
        write_bitmap(&pack, &db, &[missing], None, &BitmapWriteOptions::default()).unwrap_err();
    assert!(
        matches!(err, BitmapWriteError::NotClosed { id } if id == missing),
        "{err}"
    );
    let err = write_bitmap(
        &pack,
        &db,
        &[],
        Some(&[1, 2]),
        &BitmapWriteOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, BitmapWriteError::NameHashes { given: 2, .. }),
        "{err}"
    );
    assert!(!pack.with_extension("bitmap").exists());
    // Nothing left behind.
    let leftovers: Vec<_> = std::fs::read_dir(bare.join("objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("tmp_"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn selection_windows_grow_with_age() {
    assert_eq!(next_commit_index(0), 0);
    assert_eq!(next_commit_index(100), 0);
    assert_eq!(next_commit_index(101), 1);
    assert_eq!(next_commit_index(150), 50);
    assert_eq!(next_commit_index(5000), 100);
    assert_eq!(next_commit_index(20_050), 100);
    assert_eq!(next_commit_index(23_000), 3000);
    assert_eq!(next_commit_index(90_000), 5000);
}
