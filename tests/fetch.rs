//! `git fetch` through packgate after the source moved forward.

use std::collections::BTreeSet;
use std::path::Path;

use packgate_fixture::{append_commits, Append};

use crate::util::{
    assert_same_refs, file_url, fsck, git_upload_pack_option, packgate_upload_pack_command,
    packgate_upload_pack_option, preset_spec, refs, rename_refs, Dir, Git,
};

/// Moves `source` forward: commits on `main` and `topic/1`, a new branch, a deleted branch, a
/// rewound branch, a new annotated tag on the new `main` and a new lightweight tag on an old
/// commit (a fetch follows both automatically).
pub(crate) fn move_source_forward(dir: &Dir, git: &Git, source: &Path) {
    for (branch, commits, seed) in [("main", 5, 11), ("topic/1", 3, 12)] {
        let append = Append {
            branch: branch.to_owned(),
            commits,
            seed,
            git: git.program.clone(),
            ..Append::default()
        };
        append_commits(source, &append)
            .unwrap_or_else(|error| panic!("appending to {branch}: {error}"));
    }
    for args in [
        &["branch", "feature/new", "topic/0"][..],
        &["branch", "-D", "topic/0"],
        &["update-ref", "refs/heads/topic/2", "main~50"],
        &["tag", "-a", "-m", "Release 2", "v2.0.0", "main"],
        &["tag", "snapshot-old", "main~20"],
    ] {
        dir.git_in(git, source).args(args).run();
    }
}

#[test]
fn incremental_fetch_after_the_source_moved() {
    for git in Git::all() {
        let context = format!("fetch with {git}");
        let dir = Dir::new("fetch");
        let source = dir.fixture(&preset_spec("small"));
        let clone = dir.join("clone");
        dir.git(&git)
            .args(["-c", "protocol.version=2", "clone"])
            .arg(packgate_upload_pack_option())
            .arg(file_url(&source.path))
            .arg(&clone)
            .run();
        // Later fetches reach packgate through the remote's configuration.
        dir.git(&git)
            .current_dir(&clone)
            .args(["config", "remote.origin.uploadpack"])
            .arg(packgate_upload_pack_command())
            .run();

        // The client has commits of its own, which the server doesn't know.
        let work_file = clone.join("local.txt");
        crate::util::write_file(&work_file, b"local work\n");
        dir.git(&git)
            .current_dir(&clone)
            .args(["add", "local.txt"])
            .run();
        dir.git(&git)
            .current_dir(&clone)
            .args(["commit", "--quiet", "-m", "local work"])
            .run();

        move_source_forward(&dir, &git, &source.path);
        dir.git(&git)
            .current_dir(&clone)
            .args(["-c", "protocol.version=2", "fetch", "--prune", "origin"])
            .run();

        let check = |when: &str| {
            assert_fetched_everything(
                &dir,
                &git,
                &clone.join(".git"),
                &source.path,
                &format!("{context}, {when}"),
            );
        };
        check("after the fetch");

        // Nothing new: a no-op fetch succeeds and changes nothing.
        dir.git(&git)
            .current_dir(&clone)
            .args(["-c", "protocol.version=2", "fetch", "--prune", "origin"])
            .run();
        check("after a no-op fetch");
    }
}

fn pack_indexes(repo: &Path) -> BTreeSet<String> {
    std::fs::read_dir(repo.join("objects/pack"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".idx"))
        .collect()
}

/// Fetches into `repo` through `upload_pack` keeping the received pack, and returns how many
/// objects the server sent: the objects the pack holds, less the thin-pack bases that
/// `index-pack --fix-thin` appended from `repo` (objects `repo` had before, written whole, that
/// another entry of the pack is a delta of).
pub(crate) fn fetch_and_count(
    dir: &Dir,
    git: &Git,
    repo: &Path,
    upload_pack: String,
    protocol: &str,
) -> usize {
    fetch_and_count_traced(dir, git, repo, upload_pack, protocol).0
}

/// [`fetch_and_count`], and the fetch's output with curl's headers traced (for HTTP).
pub(crate) fn fetch_and_count_traced(
    dir: &Dir,
    git: &Git,
    repo: &Path,
    upload_pack: String,
    protocol: &str,
) -> (usize, crate::util::Output) {
    let before = pack_indexes(repo);
    let had: BTreeSet<String> = dir
        .git_in(git, repo)
        .args(["rev-list", "--objects", "--all"])
        .run()
        .stdout_text()
        .lines()
        .filter_map(|line| line.split(' ').next().map(str::to_owned))
        .collect();
    let output = dir
        .git_in(git, repo)
        .env("GIT_TRACE_CURL", "1")
        .env("GIT_TRACE_CURL_NO_DATA", "1")
        .env("GIT_TRACE_PACKET", "1")
        .args(["-c", &format!("protocol.version={protocol}")])
        .args(["-c", "fetch.unpackLimit=1", "-c", "transfer.unpackLimit=1"])
        .args(["fetch", "--prune"])
        .arg(upload_pack)
        .arg("origin")
        .run();
    let new: Vec<String> = pack_indexes(repo).difference(&before).cloned().collect();
    assert_eq!(new.len(), 1, "one new pack in {}: {new:?}", repo.display());
    let index_path = repo.join("objects/pack").join(&new[0]);
    // Per entry: `<id> <type> <size> <size in pack> <offset> [<depth> <base id>]`.
    let listing = dir
        .git_in(git, repo)
        .arg("verify-pack")
        .arg("-v")
        .arg(&index_path)
        .run()
        .stdout_text();
    let entries: Vec<Vec<&str>> = listing
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.len() >= 5 && fields[0].len() == 40)
        .collect();
    assert!(
        !entries.is_empty(),
        "no entries in {}: {listing}",
        index_path.display()
    );
    let bases: BTreeSet<&str> = entries
        .iter()
        .filter_map(|fields| fields.get(6).copied())
        .collect();
    let appended = entries
        .iter()
        .filter(|fields| fields.len() == 5 && had.contains(fields[0]) && bases.contains(fields[0]))
        .count();
    (entries.len() - appended, output)
}

#[test]
fn incremental_fetch_sends_no_more_objects_than_git() {
    for git in Git::all() {
        let context = format!("fetch with {git}");
        let dir = Dir::new("fetch-count");
        let source = dir.fixture(&preset_spec("small"));
        let through_git = dir.join("through-git.git");
        let through_packgate = dir.join("through-packgate.git");
        dir.git(&git)
            .args(["-c", "protocol.version=2", "clone", "--mirror"])
            .arg(git_upload_pack_option(&git))
            .arg(file_url(&source.path))
            .arg(&through_git)
            .run();
        dir.copy_tree(&through_git, &through_packgate);

        let client_tips: Vec<String> = refs(&dir, &git, &through_git, &[]).into_values().collect();
        move_source_forward(&dir, &git, &source.path);
        // Every object the client lacks must come, whatever the pack looks like.
        let missing = dir
            .git_in(&git, &source.path)
            .args(["rev-list", "--objects", "--all", "--not"])
            .args(&client_tips)
            .run()
            .stdout_text()
            .lines()
            .count();
        let by_packgate = fetch_and_count(
            &dir,
            &git,
            &through_packgate,
            packgate_upload_pack_option(),
            "2",
        );
        let by_git = fetch_and_count(&dir, &git, &through_git, git_upload_pack_option(&git), "2");
        assert!(
            by_packgate <= by_git,
            "{context}: packgate sent {by_packgate} objects, git {by_git}"
        );
        assert!(
            missing <= by_packgate && missing <= by_git,
            "{context}: {missing} objects missing, packgate sent {by_packgate}, git {by_git}"
        );
        eprintln!(
            "{context}: {missing} objects missing; packgate sent {by_packgate}, git {by_git}"
        );

        assert_same_refs(
            &refs(&dir, &git, &through_packgate, &[]),
            &refs(&dir, &git, &through_git, &[]),
            &context,
        );
        assert_same_refs(
            &refs(&dir, &git, &through_packgate, &[]),
            &refs(&dir, &git, &source.path, &[]),
            &context,
        );
        fsck(&dir, &git, &through_packgate);
        fsck(&dir, &git, &through_git);
    }
}

/// The clone's remote-tracking branches and tags are the source's branches and tags, and
/// `git fsck` passes on it.
pub(crate) fn assert_fetched_everything(
    dir: &Dir,
    git: &Git,
    clone_git_dir: &Path,
    source: &Path,
    context: &str,
) {
    let mut remote = refs(dir, git, clone_git_dir, &["refs/remotes/origin"]);
    remote.remove("refs/remotes/origin/HEAD");
    assert_same_refs(
        &rename_refs(&remote, "refs/remotes/origin/", "refs/heads/"),
        &refs(dir, git, source, &["refs/heads"]),
        &format!("{context}: branches"),
    );
    assert_same_refs(
        &refs(dir, git, clone_git_dir, &["refs/tags"]),
        &refs(dir, git, source, &["refs/tags"]),
        &format!("{context}: tags"),
    );
    fsck(dir, git, clone_git_dir);
}

/// The `objects` count of the "enumerated objects" event in `log`.
fn enumerated_objects(log: &str) -> usize {
    let line = log
        .lines()
        .find(|line| line.contains("enumerated objects"))
        .unwrap_or_else(|| panic!("no enumeration in {log}"));
    let field = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("objects="))
        .unwrap_or_else(|| panic!("no count in {line}"));
    field.parse().unwrap_or_else(|_| panic!("count in {line}"))
}

/// A fetch learns what the client has as git's upload-pack does (`pack.useSparse`, on by
/// default): only the paths the fetched commits changed are compared, so a file moved into a
/// new directory is sent again; `pack.useSparse=false` walks the client's trees whole.
#[test]
fn a_fetch_compares_trees_sparsely_unless_configured_off() {
    let git = Git::newest();
    let dir = Dir::new("fetch-sparse");
    let source = dir.join("source");
    dir.git(&git)
        .args(["init", "-q", "-b", "main"])
        .arg(&source)
        .run();
    let in_source = || dir.git(&git).current_dir(&source);
    let commit = |message: &str| {
        in_source()
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(["commit", "-q", "-m", message])
            .run();
    };
    for (path, content) in [
        ("a/old-name", "moved\n"),
        ("keep/file", "kept\n"),
        ("keep/other", "one\n"),
    ] {
        let path = source.join(path);
        let parent = path.parent().unwrap_or(&source);
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|error| panic!("creating {}: {error}", parent.display()));
        crate::util::write_file(&path, content.as_bytes());
    }
    in_source().args(["add", "."]).run();
    commit("first");
    let clones = [("sparse.git", "true", 6), ("whole.git", "false", 5)];
    for (clone, _, _) in clones {
        dir.git(&git)
            .args(["-c", "protocol.version=2", "clone", "-q", "--bare"])
            .arg(packgate_upload_pack_option())
            .arg(file_url(&source))
            .arg(dir.join(clone))
            .run();
    }
    std::fs::create_dir(source.join("b")).unwrap_or_else(|error| panic!("creating b: {error}"));
    in_source().args(["mv", "a/old-name", "b/new-name"]).run();
    crate::util::write_file(&source.join("keep/other"), b"two\n");
    in_source().args(["add", "."]).run();
    commit("second");

    // commit, root tree, `b`, `keep`, `keep/other` — and with sparse marking `b/new-name`.
    for (clone, use_sparse, expected) in clones {
        in_source()
            .args(["config", "pack.useSparse", use_sparse])
            .run();
        let clone = dir.join(clone);
        let log = dir
            .git(&git)
            .current_dir(&clone)
            .env("PACKGATE_LOG", "packgate_pack=debug")
            .args(["-c", "protocol.version=2", "fetch", "-q"])
            .arg(packgate_upload_pack_option())
            .arg(file_url(&source))
            .arg("+refs/heads/*:refs/heads/*")
            .run()
            .stderr_text();
        assert_eq!(
            enumerated_objects(&log),
            expected,
            "pack.useSparse={use_sparse}: {log}"
        );
        fsck(&dir, &git, &clone);
        assert_same_refs(
            &refs(&dir, &git, &clone, &["refs/heads"]),
            &refs(&dir, &git, &source.join(".git"), &["refs/heads"]),
            &format!("pack.useSparse={use_sparse}"),
        );
    }
}
