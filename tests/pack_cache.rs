//! The pack cache of `packgate serve` and `packgate daemon`: identical fetches share one
//! pack generation (single flight, then the cached pack from a key's second sighting), a
//! push changes the key, and fetches that differ in what changes the pack (depth, filter,
//! include-tag) never share bytes with a plain clone.
//!
//! Sharing is proven by the cache's log events (`packgate::pack_cache`), not by timing:
//! `generating` for a pack made, `joined` for a request that read a generation under way,
//! `hit` for one served a finished, cached pack.

use std::path::{Path, PathBuf};

use crate::daemon::Daemon;
use crate::http::{Push, Server, ServerOptions};
use crate::util::{fsck, shared_fixture, Dir, Git};

/// The log filter that shows the cache's events.
const LOG: &str = "warn,packgate::pack_cache=info";

/// How many requests the cache generated a pack for, and how many it served from another's.
fn generated_and_shared(log: &str) -> (usize, usize) {
    let count = |needle: &str| log.lines().filter(|line| line.contains(needle)).count();
    (
        count("pack cache: generating"),
        count("pack cache: joined") + count("pack cache: hit"),
    )
}

/// A root with a private copy of the `small` fixture as `small.git`.
fn root_with_small(dir: &Dir) -> PathBuf {
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|error| panic!("mkdir: {error}"));
    dir.copy_tree(&shared_fixture("small").path, &root.join("small.git"));
    root
}

/// `git clone --bare <url> <destination>` over protocol v2, checked with fsck.
fn clone(dir: &Dir, git: &Git, url: &str, destination: &Path, extra: &[&str]) {
    dir.git(git)
        .args(["-c", "protocol.version=2", "clone", "--bare"])
        .args(extra)
        .arg(url)
        .arg(destination)
        .run();
    fsck(dir, git, destination);
}

/// The pack files of a clone, by name, with their bytes.
fn packs(repo: &Path) -> Vec<(String, Vec<u8>)> {
    fn must<T>(result: std::io::Result<T>, repo: &Path) -> T {
        result.unwrap_or_else(|error| panic!("reading {}: {error}", repo.display()))
    }
    let mut packs: Vec<(String, Vec<u8>)> =
        must(std::fs::read_dir(repo.join("objects/pack")), repo)
            .map(|entry| must(entry, repo).path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "pack"))
            .map(|path| {
                let name = path.file_name().unwrap_or_default();
                let name = name.to_string_lossy().into_owned();
                (name, must(std::fs::read(&path), repo))
            })
            .collect();
    packs.sort();
    packs
}

#[test]
fn identical_concurrent_clones_share_one_generation_over_git_and_http() {
    let dir = Dir::new("pack-cache-share");
    let root = root_with_small(&dir);
    let server = Server::start_with(
        &root,
        &ServerOptions {
            log_filter: Some(LOG),
            ..ServerOptions::new(Push::Refused)
        },
    );
    let git = Git::newest();
    let url = server.git_url("small.git");
    // The first sighting of the key: generated, not kept.
    clone(&dir, &git, &url, &dir.join("first"), &[]);
    // Concurrent identical clones: the first of them generates (and keeps it), every other
    // one reads that generation, under way or finished.
    const CLIENTS: usize = 6;
    std::thread::scope(|scope| {
        for n in 0..CLIENTS {
            let (dir, git, url) = (&dir, &git, &url);
            scope.spawn(move || clone(dir, git, url, &dir.join(&format!("clone-{n}")), &[]));
        }
    });
    // Over HTTP, the same process: the cached pack.
    clone(
        &dir,
        &git,
        &server.http_url("small.git"),
        &dir.join("http"),
        &[],
    );
    let expected = packs(&dir.join("first"));
    assert_eq!(expected.len(), 1);
    for name in (0..CLIENTS)
        .map(|n| format!("clone-{n}"))
        .chain(["http".to_owned()])
    {
        assert!(
            packs(&dir.join(&name)) == expected,
            "{name} received another pack"
        );
    }
    let log = server.stop_and_read_log();
    assert_eq!(
        generated_and_shared(&log),
        (2, CLIENTS),
        "two generations, every other clone shared one:\n{log}"
    );
}

#[test]
fn a_push_changes_the_key() {
    let dir = Dir::new("pack-cache-push");
    let root = root_with_small(&dir);
    let repo = root.join("small.git");
    let git = Git::newest();
    let daemon = Daemon::start_with_env(
        &dir,
        &["--export-all", "--base-path", &root.to_string_lossy()],
        &[("PACKGATE_LOG", Some(std::ffi::OsStr::new(LOG)))],
    );
    let url = daemon.url("/small.git");
    clone(&dir, &git, &url, &dir.join("a"), &[]);
    clone(&dir, &git, &url, &dir.join("b"), &[]);
    assert_eq!(generated_and_shared(&daemon.log_text()), (2, 0));
    clone(&dir, &git, &url, &dir.join("c"), &[]);
    assert_eq!(generated_and_shared(&daemon.log_text()), (2, 1), "cached");
    // A new commit on HEAD's branch, written by git into the served repository.
    let text = |args: &[&str]| dir.git_in(&git, &repo).args(args).run().stdout_text();
    let tree = text(&["rev-parse", "HEAD^{tree}"]);
    let head = text(&["rev-parse", "HEAD"]);
    let commit = text(&[
        "commit-tree",
        tree.trim(),
        "-p",
        head.trim(),
        "-m",
        "pushed",
    ]);
    let branch = text(&["symbolic-ref", "HEAD"]);
    text(&["update-ref", branch.trim(), commit.trim()]);
    clone(&dir, &git, &url, &dir.join("d"), &[]);
    let cloned = dir
        .git_in(&git, &dir.join("d"))
        .args(["rev-parse", "HEAD"])
        .run()
        .stdout_text();
    assert_eq!(cloned.trim(), commit.trim(), "the new commit was served");
    assert_eq!(generated_and_shared(&daemon.log_text()), (3, 1));
}

#[test]
fn depth_filter_and_include_tag_variants_do_not_share_a_plain_clone() {
    let dir = Dir::new("pack-cache-variants");
    let root = root_with_small(&dir);
    let repo = root.join("small.git");
    let git = Git::newest();
    dir.git_in(&git, &repo)
        .args(["config", "uploadpack.allowFilter", "true"])
        .run();
    let server = Server::start_with(
        &root,
        &ServerOptions {
            log_filter: Some(LOG),
            ..ServerOptions::new(Push::Refused)
        },
    );
    let url = server.git_url("small.git");
    for name in ["plain-1", "plain-2", "plain-3"] {
        clone(&dir, &git, &url, &dir.join(name), &[]);
    }
    let variants: [(&str, &[&str]); 2] = [
        ("depth", &["--depth=1"]),
        ("filter", &["--filter=blob:none"]),
    ];
    for (name, extra) in variants {
        clone(&dir, &git, &url, &dir.join(name), extra);
    }
    let count = |repo: &str, args: &[&str]| {
        dir.git_in(&git, &dir.join(repo))
            .args(args)
            .run()
            .stdout_text()
            .lines()
            .count()
    };
    assert_eq!(count("depth", &["rev-list", "HEAD"]), 1);
    let missing = ["rev-list", "--objects", "--missing=print", "HEAD"];
    let missing_blobs = |repo: &str| {
        dir.git_in(&git, &dir.join(repo))
            .args(missing)
            .run()
            .stdout_text()
            .lines()
            .filter(|line| line.starts_with('?'))
            .count()
    };
    assert!(missing_blobs("filter") > 0);
    assert_eq!(missing_blobs("plain-3"), 0);
    // One branch, with tags followed (include-tag) and without: the same wants.
    let branch = dir
        .git_in(&git, &repo)
        .args(["symbolic-ref", "HEAD"])
        .run()
        .stdout_text();
    let refspec = format!("{0}:{0}", branch.trim());
    let mut tags = Vec::new();
    for (name, extra) in [("tags", &[][..]), ("no-tags", &["--no-tags"][..])] {
        let destination = dir.join(name);
        dir.git(&git)
            .args(["init", "--bare", "-q"])
            .arg(&destination)
            .run();
        dir.git_in(&git, &destination)
            .args(["-c", "protocol.version=2", "fetch"])
            .args(extra)
            .arg(&url)
            .arg(&refspec)
            .run();
        fsck(&dir, &git, &destination);
        tags.push(count(name, &["tag", "-l"]));
    }
    assert!(tags[0] > 0, "include-tag brought tags");
    assert_eq!(tags[1], 0);
    let log = server.stop_and_read_log();
    // Plain: 2 generations, 1 hit; each variant generated its own.
    assert_eq!(generated_and_shared(&log), (2 + 4, 1), "{log}");
}
