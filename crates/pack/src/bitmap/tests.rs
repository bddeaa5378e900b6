use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::atomic::AtomicBool,
};

use gix_hash::ObjectId;

use crate::{
    enumerate::{enumerate, EnumerateOptions, Enumeration},
    filter::Filter,
    packs::PackSet,
    test_git::git_text as git,
};

/// A bare repository with history on two branches, a merge, an annotated tag and files in
/// subdirectories, fully packed with a bitmap (lookup table and name-hash cache included).
pub(super) struct Repo {
    _dir: tempfile::TempDir,
    pub(super) bare: PathBuf,
    pub(super) work: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let repo = Repo::history();
        git(
            &repo.bare,
            &[
                "-c",
                "pack.writeBitmapLookupTable=true",
                "-c",
                "pack.writeBitmapHashCache=true",
                "repack",
                "-adbq",
            ],
            None,
        );
        assert!(repo.bitmap_path().is_some(), "git wrote a bitmap");
        repo
    }

    /// The history, pushed to the bare repository and not repacked.
    pub(super) fn history() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("repo.git");
        let work = dir.path().join("work");
        git(dir.path(), &["init", "-q", "--bare", "repo.git"], None);
        git(dir.path(), &["init", "-q", "-b", "main", "work"], None);
        let repo = Repo {
            _dir: dir,
            bare,
            work,
        };
        repo.commits("main", 0..12);
        git(
            &repo.work,
            &["checkout", "-q", "-b", "side", "main~4"],
            None,
        );
        repo.commits("side", 100..105);
        git(&repo.work, &["checkout", "-q", "main"], None);
        git(&repo.work, &["merge", "-q", "--no-edit", "side"], None);
        repo.commits("main", 12..15);
        git(&repo.work, &["tag", "-a", "-m", "v1", "v1", "main~2"], None);
        git(
            &repo.work,
            &["tag", "-a", "-m", "a blob", "blob-tag", "main~5:top-main"],
            None,
        );
        repo.push();
        repo
    }

    pub(super) fn commits(&self, branch: &str, range: std::ops::Range<usize>) {
        for n in range {
            let dir = self.work.join(format!("dir{}", n % 3)).join("sub");
            std::fs::create_dir_all(&dir).unwrap();
            let content: String = (0..50)
                .map(|i| format!("{branch} {n} line {i}\n"))
                .collect();
            std::fs::write(dir.join(format!("{branch}{}", n % 5)), content).unwrap();
            std::fs::write(self.work.join(format!("top-{branch}")), format!("{n}\n")).unwrap();
            git(&self.work, &["add", "-A"], None);
            git(
                &self.work,
                &["commit", "-q", "-m", &format!("{branch} {n}")],
                None,
            );
        }
    }

    pub(super) fn push(&self) {
        git(
            &self.work,
            &[
                "push",
                "-q",
                "--follow-tags",
                self.bare.to_str().unwrap(),
                "main",
                "side",
            ],
            None,
        );
        git(
            &self.work,
            &["push", "-q", "-f", self.bare.to_str().unwrap(), "--tags"],
            None,
        );
    }

    pub(super) fn id(&self, rev: &str) -> ObjectId {
        ObjectId::from_hex(
            git(&self.bare, &["rev-parse", "--verify", rev], None)
                .trim()
                .as_bytes(),
        )
        .unwrap()
    }

    pub(super) fn bitmap_path(&self) -> Option<PathBuf> {
        std::fs::read_dir(self.bare.join("objects/pack"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "bitmap"))
    }

    pub(super) fn db(&self) -> gix_odb::Handle {
        gix_odb::at(self.bare.join("objects"), gix_hash::Kind::Sha1).unwrap()
    }

    pub(super) fn bitmap(&self) -> Option<std::sync::Arc<super::PackBitmap>> {
        PackSet::open(&self.db()).bitmap()
    }

    pub(super) fn enumerate(
        &self,
        wants: &[ObjectId],
        haves: &[ObjectId],
        filter: Option<Filter>,
        bitmap: bool,
    ) -> Enumeration {
        let options = EnumerateOptions {
            filter,
            bitmap: if bitmap { self.bitmap() } else { None },
            bitmap_boundary_haves: true,
            thread_limit: Some(1),
            ..Default::default()
        };
        let found = enumerate(&self.db(), wants, haves, &options, &AtomicBool::new(false)).unwrap();
        assert_eq!(found.used_bitmap(), bitmap);
        found
    }

    /// git's own answer with its bitmaps: `rev-list --objects --use-bitmap-index`.
    pub(super) fn git_bitmap_answer(
        &self,
        wants: &[ObjectId],
        haves: &[ObjectId],
    ) -> BTreeSet<ObjectId> {
        let mut args = vec![
            "rev-list".to_string(),
            "--objects".into(),
            "--use-bitmap-index".into(),
        ];
        args.extend(wants.iter().map(ToString::to_string));
        let db = self.db();
        let haves: Vec<&ObjectId> = haves
            .iter()
            .filter(|id| gix_object::Exists::exists(&db, id))
            .collect();
        if !haves.is_empty() {
            args.push("--not".into());
            args.extend(haves.iter().map(ToString::to_string));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        git(&self.bare, &args, None)
            .lines()
            .map(|line| ObjectId::from_hex(&line.as_bytes()[..40]).unwrap())
            .collect()
    }

    /// The bitmap count of a request equals the walk's and git's, kinds counted alike.
    pub(super) fn check(&self, wants: &[ObjectId], haves: &[ObjectId]) -> Enumeration {
        let walked = self.enumerate(wants, haves, None, false);
        let counted = self.enumerate(wants, haves, None, true);
        let set = |e: &Enumeration| e.objects().iter().copied().collect::<BTreeSet<_>>();
        assert_eq!(
            set(&counted),
            set(&walked),
            "wants {wants:?} haves {haves:?}"
        );
        assert_eq!(counted.len(), walked.len(), "no duplicates");
        assert_eq!(counted.counts(), walked.counts());
        assert_eq!(set(&counted), self.git_bitmap_answer(wants, haves));
        for id in walked.objects() {
            assert!(counted.contains(id));
        }
        let commits = counted.counts().commits;
        for id in &counted.objects()[..commits] {
            assert_eq!(
                git(&self.bare, &["cat-file", "-t", &id.to_string()], None).trim(),
                "commit"
            );
        }
        counted
    }
}

pub(super) fn requests(repo: &Repo) -> Vec<(Vec<ObjectId>, Vec<ObjectId>)> {
    let (main, side, tag) = (repo.id("main"), repo.id("side"), repo.id("v1"));
    let blob_tag = repo.id("blob-tag");
    vec![
        (vec![main, side, tag], vec![]),
        (vec![main, side, tag, blob_tag], vec![]),
        (vec![main, blob_tag], vec![side]),
        (vec![main], vec![repo.id("main~3")]),
        (vec![main], vec![side]),
        (vec![side, tag], vec![repo.id("main~6")]),
        (vec![tag], vec![main]),
        (vec![main], vec![main]),
        // A have the server does not know is ignored.
        (
            vec![main],
            vec![ObjectId::from_hex(b"0123456789012345678901234567890123456789").unwrap()],
        ),
    ]
}

#[test]
fn counts_agree_with_the_walk_and_with_git() {
    let repo = Repo::new();
    let bitmap = repo.bitmap().unwrap();
    assert!(bitmap.num_entries() > 0 && bitmap.lookup_table && bitmap.name_hashes);
    for (wants, haves) in requests(&repo) {
        repo.check(&wants, &haves);
    }
}

#[test]
fn objects_added_after_the_bitmap_are_walked() {
    let repo = Repo::new();
    let old_main = repo.id("main");
    // New commits, loose: no bitmap covers them.
    repo.commits("main", 20..24);
    git(&repo.work, &["checkout", "-q", "side"], None);
    repo.commits("side", 120..122);
    git(&repo.work, &["checkout", "-q", "main"], None);
    git(&repo.work, &["tag", "-a", "-m", "v2", "v2", "main"], None);
    repo.push();
    let (main, side, tag) = (repo.id("main"), repo.id("side"), repo.id("v2"));
    repo.check(&[main, side, tag], &[]);
    repo.check(&[main], &[old_main]);
    repo.check(&[main], &[side]);
    repo.check(&[side], &[main]);
    let counted = repo.check(&[main, side], &[old_main]);
    // A thin pack may use what the client has: the old tip, its trees, an old blob.
    let has = counted.known_to_client();
    assert!(has.contains(&old_main));
    assert!(has.contains(&repo.id("main~6:top-main")));
    assert!(!has.contains(&main));
    for (wants, haves) in requests(&repo) {
        repo.check(&wants, &haves);
    }
}

#[test]
fn filters_agree_with_the_walk() {
    let repo = Repo::new();
    repo.commits("main", 30..32);
    repo.push();
    for filter in [Filter::BlobNone, Filter::TreeDepth(0)] {
        for (wants, haves) in requests(&repo) {
            let walked = repo.enumerate(&wants, &haves, Some(filter.clone()), false);
            let counted = repo.enumerate(&wants, &haves, Some(filter.clone()), true);
            let set = |e: &Enumeration| e.objects().iter().copied().collect::<BTreeSet<_>>();
            assert_eq!(
                set(&counted),
                set(&walked),
                "{filter:?} {wants:?} {haves:?}"
            );
            assert_eq!(counted.counts(), walked.counts());
            // Under a filter only commits (and the haves) count as the client's.
            let has = counted.known_to_client();
            for have in &haves {
                if gix_object::Exists::exists(&repo.db(), have) {
                    assert!(has.contains(have));
                }
            }
            if let Some(have) = haves
                .first()
                .filter(|id| gix_object::Exists::exists(&repo.db(), id))
            {
                let tree = repo.id(&format!("{have}^{{tree}}"));
                assert!(!has.contains(&tree));
            }
        }
    }
    // A have without a bitmap of its own: the walk, unless asked to walk to bitmaps.
    let unbitmapped = (1..10)
        .map(|n| repo.id(&format!("main~{n}")))
        .find(|id| repo.bitmap().unwrap().entry_of(id).is_none())
        .unwrap();
    let options = EnumerateOptions {
        bitmap: repo.bitmap(),
        ..Default::default()
    };
    let found = enumerate(
        &repo.db(),
        &[repo.id("main")],
        &[unbitmapped],
        &options,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert!(!found.used_bitmap());
    let tip = repo.id("side");
    if repo.bitmap().unwrap().entry_of(&tip).is_some() {
        let found = enumerate(
            &repo.db(),
            &[repo.id("main")],
            &[tip],
            &options,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(found.used_bitmap());
    }
    // A filter the bitmaps do not implement: the walk.
    let options = EnumerateOptions {
        filter: Some(Filter::BlobLimit(10)),
        bitmap: repo.bitmap(),
        ..Default::default()
    };
    let found = enumerate(
        &repo.db(),
        &[repo.id("main")],
        &[],
        &options,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert!(!found.used_bitmap());
}

#[test]
fn shallow_requests_walk() {
    let repo = Repo::new();
    let options = EnumerateOptions {
        bitmap: repo.bitmap(),
        shallow: [repo.id("main~2")].into_iter().collect(),
        ..Default::default()
    };
    let found = enumerate(
        &repo.db(),
        &[repo.id("main")],
        &[],
        &options,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert!(!found.used_bitmap());
}

#[test]
fn a_missing_want_is_an_error_as_with_the_walk() {
    let repo = Repo::new();
    let missing = ObjectId::from_hex(b"0123456789012345678901234567890123456789").unwrap();
    let options = EnumerateOptions {
        bitmap: repo.bitmap(),
        ..Default::default()
    };
    let err = enumerate(
        &repo.db(),
        &[missing],
        &[],
        &options,
        &AtomicBool::new(false),
    )
    .unwrap_err();
    assert!(
        matches!(err, crate::EnumerateError::WantNotFound { .. }),
        "{err}"
    );
}

fn corrupt_and_open(repo: &Repo, path: &Path, change: impl FnOnce(&mut Vec<u8>)) -> bool {
    let mut data = std::fs::read(path).unwrap();
    change(&mut data);
    std::fs::write(path, &data).unwrap();
    repo.bitmap().is_some()
}

/// Re-hash a changed bitmap so only the structural checks can catch the change.
fn rehash(data: &mut [u8]) {
    use sha1::Digest as _;
    let body = data.len() - 20;
    let digest = sha1::Sha1::digest(&data[..body]);
    data[body..].copy_from_slice(&digest);
}

#[test]
fn bad_or_stale_bitmaps_are_ignored() {
    let repo = Repo::new();
    let path = repo.bitmap_path().unwrap();
    let good = std::fs::read(&path).unwrap();
    let main = repo.id("main");
    // Each damage: the bitmap is refused and the fetch is counted by walking, same result.
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let damages: Vec<(&str, Damage)> = vec![
        ("checksum", Box::new(|d: &mut Vec<u8>| d[40] ^= 1)),
        (
            "truncated",
            Box::new(|d: &mut Vec<u8>| d.truncate(d.len() - 7)),
        ),
        (
            "version",
            Box::new(|d: &mut Vec<u8>| {
                d[5] = 2;
                rehash(d)
            }),
        ),
        (
            "stale pack",
            Box::new(|d: &mut Vec<u8>| {
                d[12] ^= 0xff;
                rehash(d)
            }),
        ),
        (
            "entry count",
            Box::new(|d: &mut Vec<u8>| {
                d[11] = d[11].wrapping_add(1);
                rehash(d)
            }),
        ),
        (
            "type bitmap",
            Box::new(|d: &mut Vec<u8>| {
                d[32 + 4 + 3] ^= 0x40;
                rehash(d)
            }),
        ),
        ("too short", Box::new(|d: &mut Vec<u8>| d.truncate(10))),
    ];
    for (what, damage) in damages {
        assert!(!corrupt_and_open(&repo, &path, |d| damage(d)), "{what}");
        let options = EnumerateOptions {
            bitmap: repo.bitmap(),
            ..Default::default()
        };
        let found = enumerate(&repo.db(), &[main], &[], &options, &AtomicBool::new(false)).unwrap();
        assert!(!found.used_bitmap(), "{what}");
        std::fs::write(&path, &good).unwrap();
    }
    assert!(repo.bitmap().is_some());
    // Every XOR reference and entry bitmap damaged in turn: never a panic.
    for at in (32..good.len() - 20).step_by(7) {
        let mut data = good.clone();
        data[at] ^= 0x5a;
        rehash(&mut data);
        std::fs::write(&path, &data).unwrap();
        if let Some(bitmap) = repo.bitmap() {
            let options = EnumerateOptions {
                bitmap: Some(bitmap),
                ..Default::default()
            };
            let _ = enumerate(&repo.db(), &[main], &[], &options, &AtomicBool::new(false));
        }
    }
    std::fs::write(&path, &good).unwrap();
    // A bitmap whose pack is gone (renamed beside another pack) names the wrong pack.
    let other = path.with_file_name("pack-0000000000000000000000000000000000000000.bitmap");
    std::fs::rename(&path, &other).unwrap();
    assert!(repo.bitmap().is_none());
}

/// The pack of `wants`/`haves` counted with the bitmap, as a client without `ofs_delta` or
/// with a thin pack would get it, checked by `git index-pack --strict` and fsck in a fresh
/// repository that has the haves.
fn pack_and_check(
    repo: &Repo,
    wants: &[ObjectId],
    haves: &[ObjectId],
    thin: bool,
    ofs_delta: bool,
) -> (Vec<u8>, crate::WriteOutcome) {
    let found = repo.enumerate(wants, haves, None, true);
    let options = crate::WriteOptions {
        client_has: thin.then(|| found.known_to_client()),
        ofs_delta,
        delta_search: None,
        reader: None,
        // As a fetch passes it: the count says when the objects are the whole pack.
        whole_pack: found.whole_pack(),
    };
    let mut out = Vec::new();
    let outcome = crate::write_pack(
        &repo.db(),
        found.objects(),
        &options,
        &mut out,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(outcome.objects as usize, found.len());
    assert_eq!(outcome.bytes, out.len() as u64);
    let client = tempfile::tempdir().unwrap();
    git(client.path(), &["init", "-q", "--bare", "."], None);
    if !haves.is_empty() {
        git(
            &repo.bare,
            &["push", "-q", client.path().to_str().unwrap()]
                .into_iter()
                .map(str::to_owned)
                .chain(
                    haves
                        .iter()
                        .enumerate()
                        .map(|(n, id)| format!("{id}:refs/heads/have{n}")),
                )
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            None,
        );
    }
    let mut args = vec!["index-pack", "--strict", "--stdin"];
    if thin {
        args.push("--fix-thin");
    }
    let indexed = git(client.path(), &args, Some(&out));
    assert!(indexed.starts_with("pack\t"), "{indexed}");
    for (n, want) in wants.iter().enumerate() {
        git(
            client.path(),
            &["update-ref", &format!("refs/want/{n}"), &want.to_string()],
            None,
        );
    }
    git(
        client.path(),
        &["fsck", "--full", "--strict", "--no-dangling"],
        None,
    );
    (out, outcome)
}

#[test]
fn a_bitmapped_clone_is_one_copy_of_the_pack() {
    let repo = Repo::new();
    let everything: Vec<ObjectId> = ["main", "side", "v1", "blob-tag"]
        .iter()
        .map(|r| repo.id(r))
        .collect();
    // The count knows it is the whole pack: the writer need not look the objects up.
    let stored_checksum = repo.enumerate(&everything, &[], None, true).whole_pack();
    assert!(stored_checksum.is_some());
    assert_eq!(
        repo.enumerate(&everything[..3], &[], None, true)
            .whole_pack(),
        None
    );
    let (out, outcome) = pack_and_check(&repo, &everything, &[], false, true);
    // Every object of the pack is sent: the pack file is the pack, byte for byte.
    assert_eq!(outcome.verbatim, outcome.objects, "{outcome:?}");
    assert_eq!(outcome.verbatim_copies, 1, "{outcome:?}");
    let stored = std::fs::read(repo.bitmap_path().unwrap().with_extension("pack")).unwrap();
    assert!(out == stored, "the stored pack");
    let verified = git(
        &repo.bare,
        &[
            "verify-pack",
            "-v",
            repo.bitmap_path()
                .unwrap()
                .with_extension("idx")
                .to_str()
                .unwrap(),
        ],
        None,
    );
    let deltas = verified
        .lines()
        .filter(|line| line.split_whitespace().count() == 7)
        .count();
    assert_eq!(outcome.deltas as usize, deltas, "{verified}");

    // One object less (the blob tag's target is left out): runs of entries, one copy
    // each, and the same entries otherwise.
    let (out, outcome) = pack_and_check(&repo, &everything[..3], &[], false, true);
    assert_eq!(outcome.verbatim, outcome.objects, "{outcome:?}");
    assert!(outcome.verbatim_copies <= 3, "{outcome:?}");
    assert!(out.len() < stored.len());
}

#[test]
fn gaps_rewrite_offset_deltas() {
    let repo = Repo::new();
    let (main, side) = (repo.id("main"), repo.id("side"));
    // Part of the pack: runs with gaps between them, offset deltas whose base moved.
    let (_, outcome) = pack_and_check(&repo, &[main], &[side], false, true);
    assert!(
        outcome.verbatim > 0 && outcome.verbatim < outcome.objects,
        "{outcome:?}"
    );
    assert!(outcome.verbatim_copies > 1, "{outcome:?}");
    pack_and_check(&repo, &[main], &[repo.id("main~3")], true, true);
    // Without ofs-delta every in-pack delta gets a ref-delta header, its data as stored.
    let (_, outcome) = pack_and_check(&repo, &[main, side], &[], false, false);
    assert!(outcome.deltas > 0, "{outcome:?}");
    assert!(outcome.verbatim < outcome.objects, "{outcome:?}");
}

#[test]
fn a_multi_pack_index_bitmap_counts_as_the_walk_and_git() {
    let repo = Repo::new();
    // More history in packs of their own, then one MIDX bitmap over all packs.
    repo.commits("main", 15..20);
    repo.push();
    git(&repo.bare, &["repack", "-dq"], None);
    repo.commits("side", 105..108);
    repo.push();
    git(&repo.bare, &["repack", "-dq"], None);
    git(
        &repo.bare,
        &["multi-pack-index", "write", "--bitmap", "--no-progress"],
        None,
    );
    if let Some(path) = repo.bitmap_path().filter(|path| {
        path.file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("pack-"))
    }) {
        std::fs::remove_file(path).unwrap();
    }
    let packs = std::fs::read_dir(repo.bare.join("objects/pack"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "pack")
        })
        .count();
    assert!(packs >= 3, "{packs} packs");
    let bitmap = repo.bitmap().unwrap();
    assert!(
        bitmap
            .path()
            .to_string_lossy()
            .contains("multi-pack-index-"),
        "{}",
        bitmap.path().display()
    );
    assert!(bitmap.pack_checksum().is_none(), "no one pack's");
    for (wants, haves) in requests(&repo) {
        let counted = repo.check(&wants, &haves);
        assert!(counted.whole_pack().is_none());
    }
    // A MIDX without its RIDX chunk (the bitmap's order) is not used.
    let midx = repo.bare.join("objects/pack/multi-pack-index");
    let mut data = std::fs::read(&midx).unwrap();
    let chunks = usize::from(data[6]);
    let table = 12..12 + chunks * 12;
    let row = data[table]
        .chunks_exact(12)
        .position(|row| &row[..4] == b"RIDX")
        .unwrap();
    data[12 + row * 12..12 + row * 12 + 4].copy_from_slice(b"XXXX");
    std::fs::write(&midx, &data).unwrap();
    assert!(super::PackBitmap::open_midx(bitmap.path(), &midx).is_err());
}
