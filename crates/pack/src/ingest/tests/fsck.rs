use super::*;

/// Check `data` with our fsck (receive-pack's default severities: the first error), and with
/// git's: `git hash-object` runs it in strict mode and refuses on every message, where
/// receive-pack only refuses on errors and warnings, not on git's informational messages
/// (bad file modes, a tag without tagger), which it reports as warnings.
fn check(kind: Kind, data: &[u8], expected: Option<&str>) {
    let actual = fsck_object(kind, data).err().map(|problem| problem.id);
    assert_eq!(
        actual,
        expected,
        "{kind} {:?}",
        String::from_utf8_lossy(data)
    );

    let mut child = Command::new("git")
        .args(["hash-object", "--stdin", "-t", &kind.to_string()])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let git_says = stderr
        .lines()
        .find_map(|line| line.strip_prefix("error: object fails fsck: "))
        .and_then(|line| line.split(':').next());
    assert_eq!(output.status.success(), git_says.is_none(), "{stderr}");
    const INFO_ONLY: &[&str] = &["badFilemode", "missingTaggerEntry", "badTagName"];
    let git_says = git_says.filter(|id| !INFO_ONLY.contains(id));
    assert_eq!(
        git_says,
        expected,
        "git disagrees on {kind} {:?}",
        String::from_utf8_lossy(data)
    );
}

const TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

fn commit_with(lines: &str) -> Vec<u8> {
    format!("tree {TREE}\n{lines}\nmessage\n").into_bytes()
}

#[test]
fn fsck_commits() {
    let author = "author A U Thor <a@example.com> 1700000000 +0000\n";
    let committer = "committer C O Mitter <c@example.com> 1700000000 -0800\n";
    let good = format!("{author}{committer}");
    check(Kind::Commit, &commit_with(&good), None);
    check(
        Kind::Commit,
        &commit_with(&format!(
            "parent {TREE}\nparent {TREE}\n{good}encoding latin1\n"
        )),
        None,
    );
    check(
        Kind::Commit,
        format!("tree {TREE}\n{good}").as_bytes(),
        None,
    );
    check(
        Kind::Commit,
        &commit_with(&format!(
            "{good}gpgsig -----BEGIN PGP SIGNATURE-----\n \n -----END PGP SIGNATURE-----\n"
        )),
        None,
    );
    for odd_but_valid in [
        "author  <a> 1 +0000\n",
        "author A <a>  1 +0000\n",
        "author A <a> \t1 +0000\n",
        "author A <a> 9223372036854775807 +0000\n",
        "author A B C <a@b> 1 -9999\n",
    ] {
        check(
            Kind::Commit,
            &commit_with(&format!("{odd_but_valid}{committer}")),
            None,
        );
    }
    let cases: &[(&str, &str)] = &[
        ("", "unterminatedHeader"),
        ("parent x\n", "missingTree"),
        ("tree 1234\n", "badTreeSha1"),
        (
            "tree 4b825dc642cb6eb9a060e54bf8d69288fbee490z\n\n",
            "badTreeSha1",
        ),
    ];
    for (data, expected) in cases {
        check(Kind::Commit, data.as_bytes(), Some(expected));
    }
    let bodies: &[(String, &str)] = &[
        (committer.to_owned(), "missingAuthor"),
        (format!("{author}{author}{committer}"), "multipleAuthors"),
        (author.to_owned(), "missingCommitter"),
        (format!("parent 12\n{good}"), "badParentSha1"),
        (format!("{committer}{author}"), "missingAuthor"),
        (
            format!("author <a@example.com> 1 +0000\n{committer}"),
            "missingNameBeforeEmail",
        ),
        (format!("author A> 1 +0000\n{committer}"), "badName"),
        (format!("author A 1 +0000\n{committer}"), "missingEmail"),
        (
            format!("author A<a> 1 +0000\n{committer}"),
            "missingSpaceBeforeEmail",
        ),
        (format!("author A <a 1 +0000\n{committer}"), "badEmail"),
        (
            format!("author A <a>1 +0000\n{committer}"),
            "missingSpaceBeforeDate",
        ),
        (
            format!("author A <a> 01 +0000\n{committer}"),
            "zeroPaddedDate",
        ),
        (format!("author A <a> x +0000\n{committer}"), "badDate"),
        (format!("author A <a> +1 +0000\n{committer}"), "badDate"),
        (format!("author A <a> -0 +0000\n{committer}"), "badDate"),
        (format!("author A <a> 1x +0000\n{committer}"), "badDate"),
        (
            format!("author A <a> 9223372036854775808 +0000\n{committer}"),
            "badDateOverflow",
        ),
        (format!("author A <a> 1+0000\n{committer}"), "badDate"),
        (
            format!("author A <a> 99999999999999999999 +0000\n{committer}"),
            "badDateOverflow",
        ),
        (format!("author A <a> 1 +000\n{committer}"), "badTimezone"),
        (format!("author A <a> 1 0000\n{committer}"), "badTimezone"),
        (format!("author A <a> 1 +0000 \n{committer}"), "badTimezone"),
    ];
    for (lines, expected) in bodies {
        check(Kind::Commit, &commit_with(lines), Some(expected));
    }
    check(
        Kind::Commit,
        &commit_with(&format!("author A <a> 0 +0000\n{committer}")),
        None,
    );
    let mut nul_in_header = commit_with(&good);
    nul_in_header[50] = 0;
    check(Kind::Commit, &nul_in_header, Some("nulInHeader"));
    let mut nul_in_body = commit_with(&good);
    nul_in_body.extend_from_slice(b"\0");
    check(Kind::Commit, &nul_in_body, Some("nulInCommit"));
    check(
        Kind::Commit,
        format!("tree {TREE}\n{author}{}", committer.trim_end()).as_bytes(),
        Some("unterminatedHeader"),
    );
}

#[test]
fn fsck_tags() {
    let object = format!("object {TREE}\n");
    let tagger = "tagger T <t@example.com> 1700000000 +0000\n";
    check(
        Kind::Tag,
        format!("{object}type tree\ntag v1\n{tagger}\nmessage\n").as_bytes(),
        None,
    );
    check(
        Kind::Tag,
        format!("{object}type commit\ntag v1\n\nmessage\n").as_bytes(),
        None,
    );
    let cases: &[(String, &str)] = &[
        ("type tree\ntag v1\n\n".into(), "missingObject"),
        ("object 12\ntype tree\n\n".into(), "badObjectSha1"),
        (format!("{object}tag v1\n\n"), "missingTypeEntry"),
        (format!("{object}type tree"), "unterminatedHeader"),
        (format!("{object}type shrub\ntag v1\n\n"), "badType"),
        (format!("{object}type tree\n\n"), "missingTagEntry"),
        (
            format!("{object}type tree\ntag v1\ntagger T 1 +0000\n\n"),
            "missingEmail",
        ),
    ];
    for (data, expected) in cases {
        check(Kind::Tag, data.as_bytes(), Some(expected));
    }
}

fn tree(entries: &[(&str, &str)]) -> Vec<u8> {
    let blob = ObjectId::empty_blob(OBJECT_HASH);
    entries
        .iter()
        .flat_map(|(mode, name)| tree_entry(mode, name, blob))
        .collect()
}

#[test]
fn fsck_trees() {
    check(Kind::Tree, b"", None);
    check(
        Kind::Tree,
        &tree(&[
            ("100644", ".github"),
            ("100644", ".gitignore"),
            ("100644", "a"),
            ("100755", "a.b"),
            ("40000", "a0"),
            ("120000", "b"),
            ("160000", "c"),
            ("100664", "d"),
            ("100644", "git~2"),
        ]),
        None,
    );
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("100644", "b"), ("100644", "a")], "treeNotSorted"),
        (&[("40000", "a"), ("100644", "a.b")], "treeNotSorted"),
        (&[("100644", "a"), ("100644", "a")], "duplicateEntries"),
        (&[("100644", "a"), ("40000", "a")], "duplicateEntries"),
        (
            &[("100644", "a"), ("100644", "a.b"), ("40000", "a")],
            "duplicateEntries",
        ),
        (&[("40000", "a"), ("100644", "a-b")], "treeNotSorted"),
        (&[("100644", "a-b"), ("40000", "a")], ""),
        (&[("100644", "a/b")], "fullPathname"),
        (&[("40000", ".git\\x")], "hasDotgit"),
        (&[("100644", ".")], "hasDot"),
        (&[("40000", "..")], "hasDotdot"),
        (&[("40000", ".git")], "hasDotgit"),
        (&[("40000", ".Git")], "hasDotgit"),
        (&[("40000", ".g\u{200c}it")], "hasDotgit"),
        (&[("40000", "GIT~1")], "hasDotgit"),
        (&[("40000", ".git. . ")], "hasDotgit"),
        (&[("40000", ".git::$INDEX_ALLOCATION")], "hasDotgit"),
        (&[("100644", "a\\.git")], "hasDotgit"),
        (&[("040000", "a")], "zeroPaddedFilemode"),
        // Informational for git: reported as a warning (see `severities_as_configured`).
        (&[("100600", "a")], ""),
        (&[("170000", "a")], ""),
        (&[("120000", ".gitmodules")], "gitmodulesSymlink"),
        (&[("120000", ".GITMODULES ")], "gitmodulesSymlink"),
        (&[("120000", "gitmod~1")], "gitmodulesSymlink"),
        (&[("120000", "gi7eba~9")], "gitmodulesSymlink"),
        (&[("100644", "a b")], ""),
    ];
    for (entries, expected) in cases {
        let expected = (!expected.is_empty()).then_some(*expected);
        check(Kind::Tree, &tree(entries), expected);
    }

    let mut null_id = tree(&[("100644", "a")]);
    let len = null_id.len();
    null_id[len - 20..].fill(0);
    check(Kind::Tree, &null_id, Some("nullSha1"));
    for broken in [
        &b"100644 a\0short"[..],
        b"100644a\0aaaaaaaaaaaaaaaaaaaa",
        b"10064x a\0aaaaaaaaaaaaaaaaaaaa",
        b" a\0aaaaaaaaaaaaaaaaaaaaaaaaaaa",
        b"100644 \0aaaaaaaaaaaaaaaaaaaa",
    ] {
        check(Kind::Tree, broken, Some("badTree"));
    }
}
#[test]
fn dot_git_spellings() {
    for name in [
        ".git",
        ".GIT",
        ".git.",
        ".git ",
        "git~1",
        "GIT~1...",
        ".git:stream",
    ] {
        assert!(is_ntfs_dotgit(name.as_bytes()), "{name}");
    }
    for name in [".gitx", "git~2", ".gi", "git", ".git x", "x.git"] {
        assert!(!is_ntfs_dotgit(name.as_bytes()), "{name}");
    }
    for name in [".git", ".GiT", "\u{feff}.git", ".gi\u{200d}t", ".git/"] {
        assert!(is_hfs_dotgit(name.as_bytes()), "{name}");
    }
    for name in [".gitx", ".g", "\u{e9}.git", ".git\u{e9}"] {
        assert!(!is_hfs_dotgit(name.as_bytes()), "{name}");
    }
    assert!(
        is_hfs_dotgit(b".git\xff"),
        "git stops at malformed UTF-8, and so do we"
    );
    for name in [
        ".gitmodules",
        ".GitModules..",
        "GITMOD~4",
        "gi7eba~1",
        "gi7eb~12",
    ] {
        assert!(is_ntfs_dotgitmodules(name.as_bytes()), "{name}");
    }
    for name in [".gitmodulesx", "gitmod~5", "gi7ebb~1", "gitmodules"] {
        assert!(!is_ntfs_dotgitmodules(name.as_bytes()), "{name}");
    }
}

/// What one object's check reports under `options`: its first error, and its warnings.
fn judged(
    options: &FsckOptions,
    kind: Kind,
    data: &[u8],
) -> (Option<&'static str>, Vec<&'static str>) {
    let mut warnings = Vec::new();
    let result = fsck_object_with(kind, data, &mut |found| {
        if options.judge(found)? {
            warnings.push(found.id);
        }
        Ok(())
    });
    (result.err().map(|problem| problem.id), warnings)
}

/// `receive.fsck.<msg-id>` as git's `fsck_set_msg_type()`: errors made warnings or ignored,
/// warnings made errors, informational messages reported as warnings by default, fatal ones
/// not demoted; ids in any case, with or without underscores.
#[test]
fn severities_as_configured() {
    let no_email = commit_with("author A 1 +0000\ncommitter C <c@example.com> 1 +0000");
    let defaults = FsckOptions::default();
    assert_eq!(
        judged(&defaults, Kind::Commit, &no_email),
        (Some("missingEmail"), vec![])
    );
    let mut warn = FsckOptions::default();
    warn.set("missingemail", "warn").unwrap();
    assert_eq!(
        judged(&warn, Kind::Commit, &no_email),
        (None, vec!["missingEmail"])
    );
    // The later setting wins.
    warn.set("MISSING_EMAIL", "ignore").unwrap();
    assert_eq!(judged(&warn, Kind::Commit, &no_email), (None, vec![]));

    let bad_mode = tree(&[("100600", "a")]);
    assert_eq!(
        judged(&defaults, Kind::Tree, &bad_mode),
        (None, vec!["badFilemode"])
    );
    let mut strict = FsckOptions::default();
    strict.set("badfilemode", "error").unwrap();
    assert_eq!(
        judged(&strict, Kind::Tree, &bad_mode),
        (Some("badFilemode"), vec![])
    );
    let untagged = format!("object {TREE}\ntype tree\ntag v1\n\nold\n");
    assert_eq!(
        judged(&defaults, Kind::Tag, untagged.as_bytes()),
        (None, vec!["missingTaggerEntry"])
    );

    let mut odd = FsckOptions::default();
    assert_eq!(
        odd.set("whatever", "error").unwrap_err().to_string(),
        "Unhandled message id: whatever"
    );
    assert_eq!(
        odd.set("missingemail", "sometimes")
            .unwrap_err()
            .to_string(),
        "Unknown fsck message type: 'sometimes'"
    );
    assert!(odd.refusal().is_none());
    odd.set("unterminatedheader", "warn").unwrap();
    assert_eq!(
        odd.refusal().map(ToString::to_string).as_deref(),
        Some("Cannot demote unterminatedheader to warn")
    );
    assert!(is_fsck_message_id("zeroPaddedFilemode") && !is_fsck_message_id("zeroPadded"));
}

/// Skip lists as git reads them: comments, blank lines and white space allowed, anything
/// else but a full object name an error.
#[test]
fn skip_lists_as_git_reads_them() {
    let mut options = FsckOptions::default();
    let text = format!(
        "# A commented line\n\n \n # after white space\n{TREE} # trailing comment\n  {}\n",
        "1".repeat(40)
    );
    options.read_skip_list(text.as_bytes()).unwrap();
    assert_eq!(options.skip_list.len(), 2);
    assert!(options
        .skip_list
        .contains(&ObjectId::from_hex(TREE.as_bytes()).unwrap()));
    for bad in ["[core]\n", "4b825dc642cb6eb9a060\n", &format!("{TREE}x\n")] {
        assert_eq!(
            FsckOptions::default().read_skip_list(bad.as_bytes()),
            Err(format!("invalid object name: {}", bad.trim_end()))
        );
    }
}
