use super::*;

#[test]
fn connectivity_names_the_missing_object() {
    let fixture = Fixture::new();
    let first = fixture.commit(&[("a", "a\n"), ("dir/b", "b\n")], "first");
    let second = fixture.commit(&[("c", "c\n")], "second");
    let blob_b = id(&fixture.client(&["rev-parse", "HEAD:dir/b"]));

    // Everything of `first` except one blob.
    let partial: String = fixture
        .objects(&[&first.to_string()])
        .into_iter()
        .filter(|object| *object != blob_b)
        .map(|object| format!("{object}\n"))
        .collect();
    let pack = fixture.pack(&[], &partial);
    // With fsck (git's `index-pack --strict`) the pack itself is refused: a tree names the
    // blob, which neither the pack nor the repository has.
    let (_quarantine, strict) = fixture.ingest(&pack, &fsck_on());
    match strict {
        Err(err @ IngestError::ExpectedObjectMissing { id }) if id == blob_b => assert_eq!(
            err.to_string(),
            format!("did not receive expected object {blob_b}")
        ),
        other => panic!("{other:?}"),
    }
    let (quarantine, outcome) = fixture.ingest(&pack, &IngestOptions::default());
    outcome.unwrap();
    let err = check_connectivity(&quarantine.objects().unwrap(), &[first], &[]).unwrap_err();
    match &err {
        ConnectivityError::Missing { id, kind, tip } => {
            assert_eq!((*id, *kind, *tip), (blob_b, Some(Kind::Blob), first));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("blob {blob_b} is missing (reachable from new tip {first})")
    );

    // `second` without its parent.
    let pack = fixture.pack(&["--revs"], &format!("{second}\n^{first}\n"));
    let (_quarantine, strict) = fixture.ingest(&pack, &fsck_on());
    assert!(
        matches!(strict, Err(IngestError::ExpectedObjectMissing { .. })),
        "{strict:?}"
    );
    // Everything but the parent: refused with fsck, unless `second` is shallow (the
    // client's shallow line, git's `--shallow-file`).
    let all_but_parent: String = fixture
        .objects(&[&second.to_string()])
        .into_iter()
        .filter(|object| *object != first)
        .map(|object| format!("{object}\n"))
        .collect();
    let without_parent = fixture.pack(&[], &all_but_parent);
    let (_quarantine, strict) = fixture.ingest(&without_parent, &fsck_on());
    assert!(
        matches!(strict, Err(IngestError::ExpectedObjectMissing { id }) if id == first),
        "{strict:?}"
    );
    let shallow_second = IngestOptions {
        shallow: [second].into_iter().collect(),
        ..fsck_on()
    };
    let (_quarantine, shallow) = fixture.ingest(&without_parent, &shallow_second);
    shallow.unwrap();
    let (quarantine, outcome) = fixture.ingest(&pack, &IngestOptions::default());
    outcome.unwrap();
    let objects = quarantine.objects().unwrap();
    let err = check_connectivity(&objects, &[second], &[]).unwrap_err();
    assert!(
        matches!(err, ConnectivityError::Missing { id, kind: Some(Kind::Commit), tip }
            if id == first && tip == second),
        "{err:?}"
    );
    let err = check_connectivity(&objects, &[ObjectId::empty_blob(OBJECT_HASH)], &[]).unwrap_err();
    assert!(
        matches!(err, ConnectivityError::Missing { kind: None, .. }),
        "{err:?}"
    );

    // Once the parent is in the repository (and a ref points at it), all is well.
    drop(objects);
    fixture.push(first, "refs/heads/main");
    let objects = quarantine.objects().unwrap();
    let outcome = check_connectivity(&objects, &[second], &[first]).unwrap();
    assert_eq!(outcome.new_commits, 1);
    // Without the ref, `first` is walked too (and found complete).
    let outcome = check_connectivity(&objects, &[second], &[]).unwrap();
    assert_eq!(outcome.new_commits, 2);
}

#[test]
fn connectivity_stops_at_existing_history() {
    let fixture = Fixture::new();
    let mut files = Vec::new();
    for dir in 0..20 {
        for file in 0..10 {
            files.push((format!("dir{dir}/file{file}"), format!("{dir} {file}\n")));
        }
    }
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(path, content)| (path.as_str(), content.as_str()))
        .collect();
    let mut old = fixture.commit(&files, "base");
    for step in 0..30 {
        old = fixture.commit(&[("dir3/file3", &format!("step {step}\n"))], "old");
    }
    fixture.client(&["checkout", "--quiet", "-b", "side", &format!("{old}~10")]);
    let side = fixture.commit(&[("dir9/side", "side\n")], "side");
    fixture.client(&["checkout", "--quiet", "main"]);
    fixture.push(old, "refs/heads/main");
    fixture.push(side, "refs/heads/side");

    fixture.commit(&[("dir7/new", "new\n")], "new 1");
    let merge_message = "merge side";
    fixture.client(&[
        "merge",
        "--quiet",
        "-s",
        "ours",
        "-m",
        merge_message,
        "side",
    ]);
    let new = fixture.commit(&[("dir7/file1", "changed\n")], "new 2");
    fixture.client(&["tag", "-a", "-m", "release", "v1", &new.to_string()]);
    let tag = id(&fixture.client(&["rev-parse", "v1"]));

    let pack = fixture.pack(&["--revs", "--thin"], &format!("{tag}\n^{old}\n^{side}\n"));
    let (quarantine, outcome) = fixture.ingest(&pack, &fsck_on());
    outcome.unwrap();
    let objects = quarantine.objects().unwrap();
    let outcome = check_connectivity(&objects, &[tag, new], &[old, side]).unwrap();
    assert_eq!(outcome.new_commits, 3, "two commits and the merge");
    assert!(
        outcome.objects_checked < 30,
        "only changed paths are looked at: {outcome:?}"
    );
    quarantine.migrate().unwrap();
    fixture.server(&["update-ref", "refs/tags/v1", &tag.to_string()]);
    fixture.fsck();
}

#[test]
fn connectivity_checks_new_trees_that_reuse_old_subtrees_elsewhere() {
    let fixture = Fixture::new();
    let old = fixture.commit(&[("a/x", "x\n"), ("a/y", "y\n")], "old");
    fixture.push(old, "refs/heads/main");
    // Move the subtree: same id under another name, plus a new blob.
    fixture.client(&["mv", "a", "b"]);
    let new = fixture.commit(&[("b/z", "z\n")], "moved");
    let pack = fixture.pack(&["--revs", "--thin"], &format!("{new}\n^{old}\n"));
    let (quarantine, outcome) = fixture.ingest(&pack, &fsck_on());
    outcome.unwrap();
    check_connectivity(&quarantine.objects().unwrap(), &[new], &[old]).unwrap();
}
