use std::{
    io::{Cursor, Write as _},
    process::{Command, Stdio},
    time::{Duration, SystemTime},
};

use gix_object::{Exists as _, Find as _};

use super::*;

use crate::test_git::git;

mod connectivity;
mod fsck;

fn id(hex: &str) -> ObjectId {
    ObjectId::from_hex(hex.trim().as_bytes()).unwrap()
}

/// A client work tree and an empty bare server repository, made by git.
struct Fixture {
    _dir: tempfile::TempDir,
    client: PathBuf,
    server: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let client = dir.path().join("client");
        let server = dir.path().join("server.git");
        git(
            dir.path(),
            &["init", "--quiet", "-b", "main", "client"],
            None,
        );
        git(
            dir.path(),
            &["init", "--quiet", "--bare", "server.git"],
            None,
        );
        Fixture {
            _dir: dir,
            client,
            server,
        }
    }

    fn client(&self, args: &[&str]) -> String {
        String::from_utf8(git(&self.client, args, None)).unwrap()
    }

    fn server(&self, args: &[&str]) -> String {
        String::from_utf8(git(&self.server, args, None)).unwrap()
    }

    /// Write `files` in the client, commit everything, return the commit.
    fn commit(&self, files: &[(&str, &str)], message: &str) -> ObjectId {
        for (path, content) in files {
            let path = self.client.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        self.client(&["add", "--all"]);
        self.client(&["commit", "--quiet", "--allow-empty", "-m", message]);
        id(&self.client(&["rev-parse", "HEAD"]))
    }

    /// `git pack-objects --stdout <args>` in the client, fed `input`.
    fn pack(&self, args: &[&str], input: &str) -> Vec<u8> {
        let mut all = vec!["pack-objects", "--quiet", "--stdout"];
        all.extend_from_slice(args);
        git(&self.client, &all, Some(input.as_bytes()))
    }

    /// Every object reachable from `revs` (`git rev-list --objects`).
    fn objects(&self, revs: &[&str]) -> Vec<ObjectId> {
        let mut args = vec!["rev-list", "--objects"];
        args.extend_from_slice(revs);
        self.client(&args)
            .lines()
            .map(|line| id(&line[..40]))
            .collect()
    }

    fn push(&self, commit: ObjectId, reference: &str) {
        let refspec = format!("{commit}:{reference}");
        self.client(&["push", "--quiet", self.server.to_str().unwrap(), &refspec]);
    }

    fn objects_dir(&self) -> PathBuf {
        self.server.join("objects")
    }

    fn repository(&self) -> gix_odb::Handle {
        gix_odb::at(self.objects_dir(), OBJECT_HASH).unwrap()
    }

    fn ingest(
        &self,
        pack: &[u8],
        options: &IngestOptions,
    ) -> (Quarantine, Result<IngestOutcome, IngestError>) {
        let quarantine = Quarantine::create(&self.objects_dir()).unwrap();
        let outcome = ingest_pack(
            &mut Cursor::new(pack),
            &self.repository(),
            &quarantine,
            options,
            &AtomicBool::new(false),
        );
        (quarantine, outcome)
    }

    /// Quarantine directories left in the server's object store.
    fn leftovers(&self) -> Vec<String> {
        fs::read_dir(self.objects_dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.contains("incoming"))
            .collect()
    }

    fn fsck(&self) {
        self.server(&["fsck", "--strict", "--no-dangling", "--no-progress"]);
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn history(fixture: &Fixture) -> ObjectId {
    fixture.commit(
        &[("README", "hello\n"), ("src/main.rs", "fn main() {}\n")],
        "first",
    );
    fixture.commit(
        &[
            ("src/lib.rs", "pub fn f() {}\n"),
            ("docs/a/b/c.md", "deep\n"),
        ],
        "second",
    );
    fixture.commit(&[("README", "hello again\n")], "third")
}

fn fsck_on() -> IngestOptions {
    IngestOptions {
        fsck: FsckObjects::On,
        thread_limit: Some(2),
        ..IngestOptions::default()
    }
}

#[test]
fn quarantine_sees_the_repository_and_is_removed_on_drop() {
    let fixture = Fixture::new();
    let first = history(&fixture);
    fixture.push(first, "refs/heads/main");
    let quarantine = Quarantine::create(&fixture.objects_dir()).unwrap();
    let path = quarantine.path().to_owned();
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with(QUARANTINE_PREFIX), "{name}");
    assert_eq!(path.parent().unwrap(), quarantine.objects_dir());
    assert!(path.join("pack").is_dir());
    let alternates = fs::read_to_string(path.join("info/alternates")).unwrap();
    assert_eq!(
        alternates,
        format!(
            "{}\n",
            fixture.objects_dir().canonicalize().unwrap().display()
        )
    );
    assert!(quarantine.objects().unwrap().exists(&first));

    let second = Quarantine::create(&fixture.objects_dir()).unwrap();
    assert_ne!(second.path(), quarantine.path());
    drop(second);
    drop(quarantine);
    assert!(!path.exists());
    assert_eq!(fixture.leftovers(), Vec::<String>::new());
}

#[test]
fn full_pack_is_indexed_checked_and_migrated() {
    let fixture = Fixture::new();
    let head = history(&fixture);
    let pack = fixture.pack(&["--revs"], "HEAD\n");
    let objects = fixture.objects(&["HEAD"]);

    let (quarantine, outcome) = fixture.ingest(&pack, &fsck_on());
    let outcome = outcome.unwrap();
    assert_eq!(outcome.objects as usize, objects.len());
    assert_eq!(outcome.completed_bases, 0);
    assert_eq!(outcome.bytes_read, pack.len() as u64);
    let checksum = ObjectId::from_bytes_or_panic(&pack[pack.len() - 20..]);
    assert_eq!(
        outcome.checksum, checksum,
        "an untouched pack keeps its checksum"
    );
    let pack_path = outcome.pack.clone().unwrap();
    assert_eq!(pack_path.parent().unwrap(), quarantine.path().join("pack"));
    assert_eq!(
        files_in(&quarantine.path().join("pack")),
        vec![
            format!("pack-{checksum}.idx"),
            format!("pack-{checksum}.pack")
        ]
    );

    let quarantined = quarantine.objects().unwrap();
    let mut buffer = Vec::new();
    for object in &objects {
        assert!(quarantined.try_find(object, &mut buffer).unwrap().is_some());
    }
    assert!(
        !fixture.repository().exists(&head),
        "nothing is visible in the repository before migration"
    );
    let connectivity = check_connectivity(&quarantined, &[head], &[]).unwrap();
    assert_eq!(connectivity.new_commits, 3);

    quarantine.migrate().unwrap();
    assert_eq!(fixture.leftovers(), Vec::<String>::new());
    assert!(fixture.repository().exists(&head));
    fixture.server(&["update-ref", "refs/heads/main", &head.to_string()]);
    fixture.fsck();
    for object in &objects {
        fixture.server(&["cat-file", "-e", &object.to_string()]);
    }
}

#[test]
fn thin_pack_is_completed_from_the_repository() {
    let fixture = Fixture::new();
    let big: String = (0..2000).map(|line| format!("line {line}\n")).collect();
    let old = fixture.commit(&[("big.txt", &big), ("other", "x\n")], "old");
    fixture.push(old, "refs/heads/main");
    let changed = big.replace("line 1000\n", "line one thousand\n");
    let new = fixture.commit(&[("big.txt", &changed)], "new");
    let pack = fixture.pack(&["--revs", "--thin"], &format!("{new}\n^{old}\n"));
    let announced = u32::from_be_bytes(pack[8..12].try_into().unwrap());
    assert_eq!(announced, 3, "commit, tree and the big blob as a delta");

    let (quarantine, outcome) = fixture.ingest(&pack, &fsck_on());
    let outcome = outcome.unwrap();
    assert_eq!(outcome.completed_bases, 1, "the old blob was added as base");
    assert_eq!(outcome.objects, announced + 1);
    assert_eq!(outcome.bytes_read, pack.len() as u64);

    let connectivity = check_connectivity(&quarantine.objects().unwrap(), &[new], &[old]).unwrap();
    assert_eq!(connectivity.new_commits, 1);
    quarantine.migrate().unwrap();
    fixture.server(&["update-ref", "refs/heads/main", &new.to_string()]);
    fixture.fsck();
    let content = fixture.server(&["cat-file", "blob", &format!("{new}:big.txt")]);
    assert_eq!(content, changed);
}

#[test]
fn in_pack_deltas_of_every_kind_are_resolved() {
    let fixture = Fixture::new();
    let big: String = (0..3000).map(|line| format!("line {line}\n")).collect();
    let mut commits = vec![fixture.commit(&[("big.txt", &big)], "0")];
    for step in 1..6 {
        let changed = big.replace(&format!("line {step}00\n"), "changed\n");
        commits.push(fixture.commit(&[("big.txt", &changed)], &step.to_string()));
    }
    let head = *commits.last().unwrap();
    // The server already has some of the objects the pack carries in full: ref-delta bases
    // are then found in the repository and in the pack.
    fixture.push(commits[2], "refs/heads/main");
    for args in [&["--revs"][..], &["--revs", "--delta-base-offset"]] {
        let pack = fixture.pack(args, "HEAD\n");
        let (quarantine, outcome) = fixture.ingest(&pack, &fsck_on());
        let outcome = outcome.unwrap();
        // A ref-delta base the repository has is copied in even if the pack carries it too:
        // the index then lists that object twice, which git reads and fscks fine.
        assert_eq!(
            outcome.objects as usize,
            fixture.objects(&["HEAD"]).len() + outcome.completed_bases as usize
        );
        let objects = quarantine.objects().unwrap();
        check_connectivity(&objects, &[head], &[]).unwrap();
        let mut buffer = Vec::new();
        let data = objects
            .try_find(
                &id(&fixture.client(&["rev-parse", "HEAD:big.txt"])),
                &mut buffer,
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            data.data,
            fixture.client(&["show", "HEAD:big.txt"]).as_bytes()
        );
        quarantine.migrate().unwrap();
        fixture.server(&["update-ref", "refs/heads/main", &head.to_string()]);
        fixture.fsck();
    }
}

#[test]
fn migration_moves_loose_objects_and_keeps_existing_packs() {
    let fixture = Fixture::new();
    let head = history(&fixture);
    let pack = fixture.pack(&["--revs"], "HEAD\n");
    let (quarantine, outcome) = fixture.ingest(&pack, &IngestOptions::default());
    outcome.unwrap();
    // A hook writes an object, as git lets it: into the quarantine.
    let mut hook = Command::new("git")
        .args(["hash-object", "-w", "--stdin"])
        .current_dir(&fixture.server)
        .env("GIT_OBJECT_DIRECTORY", quarantine.path())
        .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", quarantine.objects_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    hook.stdin
        .take()
        .unwrap()
        .write_all(b"from a hook\n")
        .unwrap();
    let output = hook.wait_with_output().unwrap();
    assert!(output.status.success());
    let loose = id(std::str::from_utf8(&output.stdout).unwrap());
    assert!(quarantine.objects().unwrap().exists(&loose));
    assert!(!fixture.repository().exists(&loose));
    quarantine.migrate().unwrap();
    let repository = fixture.repository();
    assert!(repository.exists(&loose));
    assert!(repository.exists(&head));

    // The same pack again: the repository's copy stays, the quarantine goes.
    let before = files_in(&fixture.objects_dir().join("pack"));
    let (quarantine, outcome) = fixture.ingest(&pack, &IngestOptions::default());
    outcome.unwrap();
    quarantine.migrate().unwrap();
    assert_eq!(files_in(&fixture.objects_dir().join("pack")), before);
    assert_eq!(fixture.leftovers(), Vec::<String>::new());
    fixture.server(&["update-ref", "refs/heads/main", &head.to_string()]);
    fixture.fsck();
}

#[test]
fn dropping_an_unmigrated_quarantine_leaves_nothing() {
    let fixture = Fixture::new();
    let head = history(&fixture);
    let pack = fixture.pack(&["--revs"], "HEAD\n");
    let (quarantine, outcome) = fixture.ingest(&pack, &IngestOptions::default());
    outcome.unwrap();
    let path = quarantine.path().to_owned();
    assert_eq!(files_in(&path.join("pack")).len(), 2);
    drop(quarantine);
    assert!(!path.exists());
    assert_eq!(fixture.leftovers(), Vec::<String>::new());
    assert!(!fixture.repository().exists(&head));
    assert_eq!(
        files_in(&fixture.objects_dir().join("pack")),
        Vec::<String>::new()
    );
}

#[test]
fn truncated_or_corrupt_packs_are_refused_and_leave_nothing() {
    let fixture = Fixture::new();
    history(&fixture);
    let pack = fixture.pack(&["--revs"], "HEAD\n");
    for cut in [
        0,
        5,
        12,
        15,
        pack.len() / 2,
        pack.len() - 21,
        pack.len() - 1,
    ] {
        let (quarantine, outcome) = fixture.ingest(&pack[..cut], &fsck_on());
        match outcome {
            Err(IngestError::Truncated { bytes_read }) => assert_eq!(bytes_read, cut as u64),
            other => panic!("cut at {cut}: {other:?}"),
        }
        assert_eq!(
            files_in(&quarantine.path().join("pack")),
            Vec::<String>::new()
        );
    }

    let mut bad_checksum = pack.clone();
    *bad_checksum.last_mut().unwrap() ^= 1;
    let mut bad_entry = pack.clone();
    bad_entry[pack.len() / 2] ^= 0x55;
    let mut bad_signature = pack.clone();
    bad_signature[0] = b'K';
    for (name, corrupt) in [
        ("checksum", bad_checksum),
        ("entry", bad_entry),
        ("signature", bad_signature),
    ] {
        let (quarantine, outcome) = fixture.ingest(&corrupt, &fsck_on());
        match outcome {
            Err(IngestError::InvalidPack { .. } | IngestError::InvalidHeader { .. }) => {}
            other => panic!("corrupt {name}: {other:?}"),
        }
        assert_eq!(
            files_in(&quarantine.path().join("pack")),
            Vec::<String>::new()
        );
        let path = quarantine.path().to_owned();
        drop(quarantine);
        assert!(!path.exists());
    }
    assert_eq!(fixture.leftovers(), Vec::<String>::new());
}

#[test]
fn limits_refuse_large_packs() {
    let fixture = Fixture::new();
    history(&fixture);
    let pack = fixture.pack(&["--revs"], "HEAD\n");
    let count = u32::from_be_bytes(pack[8..12].try_into().unwrap());
    let repository = fixture.repository();

    let quarantine = Quarantine::create(&fixture.objects_dir()).unwrap();
    let mut input = Cursor::new(&pack);
    let options = IngestOptions {
        max_objects: Some(count - 1),
        ..IngestOptions::default()
    };
    let refused = ingest_pack(
        &mut input,
        &repository,
        &quarantine,
        &options,
        &AtomicBool::new(false),
    );
    assert!(
        matches!(refused, Err(IngestError::TooManyObjects { announced, limit })
            if announced == count && limit == count - 1),
        "{refused:?}"
    );
    assert_eq!(input.position(), 12, "refused after the header");
    let (_quarantine, accepted) = fixture.ingest(
        &pack,
        &IngestOptions {
            max_objects: Some(count),
            ..IngestOptions::default()
        },
    );
    accepted.unwrap();

    for limit in [0, 11, 12, pack.len() as u64 / 2, pack.len() as u64 - 1] {
        let (quarantine, refused) = fixture.ingest(
            &pack,
            &IngestOptions {
                max_input_bytes: Some(limit),
                ..IngestOptions::default()
            },
        );
        let err = refused.unwrap_err();
        assert!(
            matches!(err, IngestError::TooLarge { .. }),
            "{limit}: {err:?}"
        );
        assert_eq!(err.to_string(), "pack exceeds maximum allowed size");
        assert_eq!(
            files_in(&quarantine.path().join("pack")),
            Vec::<String>::new()
        );
    }
    let (_quarantine, accepted) = fixture.ingest(
        &pack,
        &IngestOptions {
            max_input_bytes: Some(pack.len() as u64),
            ..IngestOptions::default()
        },
    );
    accepted.unwrap();
}

#[test]
fn the_stream_is_read_up_to_the_trailer_and_no_further() {
    let fixture = Fixture::new();
    history(&fixture);
    let empty = fixture.pack(&[], "");
    assert_eq!(empty.len(), 32);
    let full = fixture.pack(&["--revs"], "HEAD\n");
    for pack in [empty, full] {
        for capacity in [1, 7, 8192] {
            let mut stream = pack.clone();
            stream.extend_from_slice(b"0000more");
            let mut input = io::BufReader::with_capacity(capacity, Cursor::new(stream));
            let quarantine = Quarantine::create(&fixture.objects_dir()).unwrap();
            let outcome = ingest_pack(
                &mut input,
                &fixture.repository(),
                &quarantine,
                &IngestOptions {
                    max_input_bytes: Some(pack.len() as u64),
                    ..fsck_on()
                },
                &AtomicBool::new(false),
            )
            .unwrap();
            assert_eq!(outcome.bytes_read, pack.len() as u64);
            assert_eq!(outcome.pack.is_none(), outcome.objects == 0);
            let mut rest = Vec::new();
            input.read_to_end(&mut rest).unwrap();
            assert_eq!(rest, b"0000more");
        }
    }
}

#[test]
fn an_empty_pack_writes_nothing_and_its_checksum_is_verified() {
    let fixture = Fixture::new();
    let empty = fixture.pack(&[], "");
    let (quarantine, outcome) = fixture.ingest(&empty, &fsck_on());
    let outcome = outcome.unwrap();
    assert_eq!(outcome.objects, 0);
    assert_eq!((outcome.pack, outcome.index), (None, None));
    assert_eq!(
        files_in(&quarantine.path().join("pack")),
        Vec::<String>::new()
    );
    quarantine.migrate().unwrap();
    assert_eq!(fixture.leftovers(), Vec::<String>::new());

    let mut corrupt = empty.clone();
    corrupt[20] ^= 1;
    let (_quarantine, outcome) = fixture.ingest(&corrupt, &fsck_on());
    assert!(
        matches!(outcome, Err(IngestError::ChecksumMismatch { .. })),
        "{outcome:?}"
    );
}

#[test]
fn an_interrupted_ingestion_leaves_nothing() {
    let fixture = Fixture::new();
    history(&fixture);
    let pack = fixture.pack(&["--revs"], "HEAD\n");
    let quarantine = Quarantine::create(&fixture.objects_dir()).unwrap();
    let outcome = ingest_pack(
        &mut Cursor::new(&pack),
        &fixture.repository(),
        &quarantine,
        &IngestOptions::default(),
        &AtomicBool::new(true),
    );
    assert!(
        matches!(outcome, Err(IngestError::Interrupted)),
        "{outcome:?}"
    );
    assert_eq!(
        files_in(&quarantine.path().join("pack")),
        Vec::<String>::new()
    );
}

/// `git hash-object --literally` in the client.
fn write_literally(fixture: &Fixture, kind: &str, data: &[u8]) -> ObjectId {
    let out = git(
        &fixture.client,
        &["hash-object", "-t", kind, "--literally", "-w", "--stdin"],
        Some(data),
    );
    id(std::str::from_utf8(&out).unwrap())
}

fn tree_entry(mode: &str, name: &str, id: ObjectId) -> Vec<u8> {
    let mut entry = format!("{mode} {name}\0").into_bytes();
    entry.extend_from_slice(id.as_bytes());
    entry
}

#[test]
fn fsck_refuses_malformed_objects_written_by_git() {
    let fixture = Fixture::new();
    let blob = write_literally(&fixture, "blob", b"content\n");
    let good_tree = write_literally(
        &fixture,
        "tree",
        &[
            tree_entry("100644", "a", blob),
            tree_entry("100644", "b", blob),
        ]
        .concat(),
    );
    let unsorted_tree = write_literally(
        &fixture,
        "tree",
        &[
            tree_entry("100644", "b", blob),
            tree_entry("100644", "a", blob),
        ]
        .concat(),
    );
    let dotgit_tree = write_literally(&fixture, "tree", &tree_entry("40000", ".GIT", good_tree));
    let no_author = write_literally(
        &fixture,
        "commit",
        format!(
            "tree {good_tree}\ncommitter C O Mitter <c@example.com> 1700000000 +0000\n\nmessage\n"
        )
        .as_bytes(),
    );
    let good_commit = write_literally(
        &fixture,
        "commit",
        format!(
            "tree {good_tree}\nauthor A <a@example.com> 1700000000 +0100\ncommitter C <c@example.com> 1700000000 -0130\n\nmessage\n"
        )
        .as_bytes(),
    );
    let old_tag = write_literally(
        &fixture,
        "tag",
        format!("object {good_commit}\ntype commit\ntag v0.1\n\nno tagger, as in 2005\n")
            .as_bytes(),
    );

    for (bad, expected) in [
        (unsorted_tree, "treeNotSorted"),
        (dotgit_tree, "hasDotgit"),
        (no_author, "missingAuthor"),
    ] {
        let pack = fixture.pack(&[], &format!("{bad}\n{blob}\n{good_tree}\n"));
        let (quarantine, outcome) = fixture.ingest(&pack, &fsck_on());
        match outcome {
            Err(IngestError::Fsck { id, problem, .. }) => {
                assert_eq!((id, problem.id), (bad, expected));
            }
            other => panic!("{expected}: {other:?}"),
        }
        assert_eq!(
            files_in(&quarantine.path().join("pack")),
            Vec::<String>::new()
        );
        let (_quarantine, unchecked) = fixture.ingest(&pack, &IngestOptions::default());
        unchecked.unwrap();
    }

    let pack = fixture.pack(
        &[],
        &format!("{old_tag}\n{good_commit}\n{good_tree}\n{blob}\n"),
    );
    let (_quarantine, outcome) = fixture.ingest(&pack, &fsck_on());
    assert_eq!(outcome.unwrap().objects, 4);
}

/// Blobs above the threshold: the one no delta needs is hashed while streaming (and
/// fsck does not inflate it either); the one a delta is based on is resolved in memory.
/// Both paths give the ids git gives, in a pack and exploded into loose objects.
#[test]
fn blobs_above_the_big_file_threshold_are_hashed_while_streaming() {
    let text = |seed: &str, lines: usize| -> String {
        (0..lines)
            .map(|line| format!("{seed} line {line}\n"))
            .collect()
    };
    for explode in [false, true] {
        let fixture = Fixture::new();
        let first = fixture.commit(
            &[("based.txt", &text("based", 10_000)), ("small", "small\n")],
            "first",
        );
        let mut changed = text("based", 10_000);
        changed.push_str("one more line\n");
        let second = fixture.commit(
            &[
                ("based.txt", &changed),
                ("alone.txt", &text("alone", 10_000)),
            ],
            "second",
        );
        let alone = id(&fixture.client(&["rev-parse", "HEAD:alone.txt"]));
        let pack = fixture.pack(&["--revs"], &format!("{second}\n"));
        let options = IngestOptions {
            big_file_threshold: Some(100_000),
            ..fsck_on()
        };
        let (quarantine, outcome) = fixture.ingest(&pack, &options);
        let outcome = outcome.unwrap();
        assert_eq!(
            outcome.large_blobs,
            vec![alone],
            "only the blob no delta needs"
        );
        let index =
            gix_pack::index::File::at(outcome.index.as_ref().unwrap(), OBJECT_HASH).unwrap();
        let mut indexed: Vec<ObjectId> = index.iter().map(|entry| entry.oid).collect();
        indexed.sort();
        let mut expected = fixture.objects(&[&second.to_string()]);
        expected.sort();
        assert_eq!(indexed, expected);
        if explode {
            let written = crate::explode::explode(&quarantine, &outcome).unwrap();
            assert_eq!(written as usize, expected.len());
        }
        quarantine.migrate().unwrap();
        fixture.server(&["update-ref", "refs/heads/main", &second.to_string()]);
        fixture.server(&["update-ref", "refs/heads/first", &first.to_string()]);
        fixture.fsck();
        assert_eq!(
            fixture
                .server(&["cat-file", "-s", &alone.to_string()])
                .trim(),
            text("alone", 10_000).len().to_string()
        );
    }
}

#[test]
fn empty_blob_entry_is_the_empty_blob() {
    let data = gix_pack::data::Entry::from_bytes(EMPTY_BLOB_ENTRY, 0, OBJECT_HASH).unwrap();
    assert_eq!(data.header, gix_pack::data::entry::Header::Blob);
    assert_eq!(data.decompressed_size, 0);
    let compressed = &EMPTY_BLOB_ENTRY[data.header_size()..];
    assert_eq!(
        hash_while_inflating(Kind::Blob, 0, compressed).unwrap(),
        ObjectId::empty_blob(OBJECT_HASH)
    );
}

#[test]
fn delta_result_size_reads_the_second_header_varint() {
    let deflate = |data: &[u8]| {
        let mut encoder =
            flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    };
    // Base 4, result 3 GiB (0xc0000000), then an instruction.
    let header = [0x04, 0x80, 0x80, 0x80, 0x80, 0x0c, 0x90, 0x04];
    assert_eq!(delta_result_size(&deflate(&header)), Some(3 << 30));
    assert_eq!(delta_result_size(&deflate(&[0x7f, 0x01])), Some(1));
    // Ten bytes of continuation: saturates rather than wrapping to a small size.
    let mut overlong = vec![0x01];
    overlong.extend([0xff; 9]);
    overlong.push(0x7f);
    assert_eq!(delta_result_size(&deflate(&overlong)), Some(u64::MAX));
    assert_eq!(delta_result_size(&deflate(&[0x80])), None);
    assert_eq!(delta_result_size(b"not zlib"), None);
}

/// A quarantine is stale when nothing in it changed for longer than the expiry: one that
/// is still receiving a pack (a fresh file in `pack/`) stays, and so do other directories
/// and what a symlink with a quarantine's name points to.
#[test]
fn stale_quarantines_are_judged_by_their_newest_change() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    let elsewhere = dir.path().join("elsewhere");
    let old = SystemTime::now() - Duration::from_secs(2 * 86_400);
    let make = |path: &Path, age: Option<SystemTime>| {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"data").unwrap();
        let mut chain = vec![path.to_owned()];
        chain.extend(path.ancestors().skip(1).take(2).map(Path::to_owned));
        for path in chain.iter().filter(|_| age.is_some()) {
            File::open(path)
                .unwrap()
                .set_modified(age.unwrap())
                .unwrap();
        }
    };
    let dead = objects.join(format!("{QUARANTINE_PREFIX}dead"));
    make(&dead.join("pack").join("tmp_pack_1"), Some(old));
    let busy = objects.join(format!("{QUARANTINE_PREFIX}busy"));
    make(&busy.join("pack").join("tmp_pack_2"), Some(old));
    File::options()
        .append(true)
        .open(busy.join("pack").join("tmp_pack_2"))
        .unwrap()
        .set_modified(SystemTime::now())
        .unwrap();
    make(&objects.join("pack").join("pack-1.pack"), Some(old));
    make(&elsewhere.join("pack").join("keep"), Some(old));
    std::os::unix::fs::symlink(&elsewhere, objects.join(format!("{QUARANTINE_PREFIX}link")))
        .unwrap();

    let removed = remove_stale_quarantines(&objects, Duration::from_secs(86_400)).unwrap();
    assert_eq!(removed, 1);
    assert!(!dead.exists());
    assert!(busy.join("pack").join("tmp_pack_2").exists());
    assert!(objects.join("pack").join("pack-1.pack").exists());
    assert!(elsewhere.join("pack").join("keep").exists());

    // With a shorter expiry than the busy one's age, it goes too.
    assert_eq!(
        remove_stale_quarantines(&objects, Duration::ZERO).unwrap(),
        1
    );
    assert!(!busy.exists());
}
