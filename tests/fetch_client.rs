//! packgate's own fetch client (`packgate fetch`, `packgate mirror`, and
//! `protocol::client::fetch` over a stateless connection) against `git upload-pack` and
//! packgate's upload-pack, protocols v2, v1 and v0: into an empty repository and
//! incrementally, refs equal to `git ls-remote`'s and `git fsck` clean; non-fast-forwards
//! rejected then forced; tags followed; prune; a mirror equal to `git clone --mirror` and
//! `git fetch`; an empty remote; and a fork far ahead of its parent, where packgate sends no
//! more haves and receives no bigger pack than `git fetch`.

// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, Cursor, Write};
use std::path::{Path, PathBuf};

use packgate::protocol::client::fetch::{self, ChangeKind, FetchOptions, Refspec};
use packgate::protocol::repository::{PathLookup, Repository};
use packgate::transport::client::process::{shell_command, ProcessConnection};
use packgate::wire::client::{ConnectOptions, Connection, WireVersion};
use packgate_fixture::{append_commits, Append};

use crate::fetch::move_source_forward;
use crate::util::{
    assert_same_refs, fsck, git_upload_pack_option, preset_spec, refs, Cmd, Dir, Git, PACKGATE,
};

/// The servers a fetch is tried against: packgate itself (the default), and git's.
fn servers(git: &Git) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("packgate", None),
        ("git", Some(git_upload_pack_option(git))),
    ]
}

/// `git ls-remote` of `repo`'s refs (no HEAD, no peeled lines), as name → id.
fn ls_remote(dir: &Dir, git: &Git, repo: &Path) -> BTreeMap<String, String> {
    dir.git(git)
        .arg("ls-remote")
        .arg("--refs")
        .arg(repo)
        .run()
        .stdout_text()
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(id, name)| (name.to_owned(), id.to_owned()))
        .collect()
}

/// `packgate fetch --git-dir <repo> --protocol <version> [<upload-pack>] <url> <refspecs>`.
fn packgate_fetch(
    dir: &Dir,
    repo: &Path,
    version: &str,
    upload_pack: &Option<String>,
    url: &Path,
    args: &[&str],
) -> Cmd {
    let mut cmd = dir
        .packgate()
        .arg("fetch")
        .arg("--git-dir")
        .arg(repo)
        .arg("--protocol")
        .arg(version);
    if let Some(option) = upload_pack {
        cmd = cmd.arg(option);
    }
    cmd.arg(url).args(args)
}

fn init_bare(dir: &Dir, git: &Git, path: &Path) {
    dir.git(git).args(["init", "-q", "--bare"]).arg(path).run();
}

#[test]
fn fetches_into_an_empty_repository_and_incrementally() {
    let git = Git::newest();
    for (server, upload_pack) in servers(&git) {
        for version in ["2", "1", "0"] {
            let context = format!("fetch from {server} over v{version}");
            let dir = Dir::new("fetch-client");
            let source = dir.fixture(&preset_spec("small"));
            let local = dir.join("local.git");
            init_bare(&dir, &git, &local);
            for round in ["initial", "incremental"] {
                let output = packgate_fetch(
                    &dir,
                    &local,
                    version,
                    &upload_pack,
                    &source.path,
                    &["--prune", "+refs/*:refs/*"],
                )
                .run();
                assert_same_refs(
                    &refs(&dir, &git, &local, &[]),
                    &ls_remote(&dir, &git, &source.path),
                    &format!("{context}, {round}"),
                );
                fsck(&dir, &git, &local);
                if round == "initial" {
                    assert!(
                        output.stderr_text().contains("[new branch]"),
                        "{context}: {output}"
                    );
                    move_source_forward(&dir, &git, &source.path);
                } else {
                    // The fetch brought what moved, not everything again.
                    let text = output.stderr_text();
                    assert!(
                        text.contains("..") && text.contains("[new tag]"),
                        "{context}: {output}"
                    );
                }
            }
            // Nothing new: no pack is asked for, nothing changes.
            let output = packgate_fetch(
                &dir,
                &local,
                version,
                &upload_pack,
                &source.path,
                &["+refs/*:refs/*"],
            )
            .run();
            assert!(
                !output.stderr_text().contains("->"),
                "{context}, no-op: {output}"
            );
        }
    }
}

#[test]
fn non_fast_forward_is_rejected_then_forced_and_tags_are_followed() {
    let git = Git::newest();
    let dir = Dir::new("fetch-client-nff");
    let source = dir.fixture(&preset_spec("small"));
    let local = dir.join("local.git");
    init_bare(&dir, &git, &local);
    let spec = "refs/heads/main:refs/remotes/origin/main";
    packgate_fetch(&dir, &local, "2", &None, &source.path, &[spec]).run();
    let before = refs(&dir, &git, &local, &["refs/remotes/"]);
    // Tags on main's history came along (auto-following); the fetched history has them.
    let tags = refs(&dir, &git, &local, &["refs/tags/"]);
    assert!(!tags.is_empty(), "no tag followed");
    for tag in tags.keys() {
        dir.git_in(&git, &local)
            .args([
                "merge-base",
                "--is-ancestor",
                tag,
                "refs/remotes/origin/main",
            ])
            .run();
    }
    // A tag on a commit main does not reach is not followed.
    dir.git_in(&git, &source.path)
        .args(["commit-tree", "-m", "elsewhere", "main^{tree}"])
        .run();
    let elsewhere = dir
        .git_in(&git, &source.path)
        .args(["commit-tree", "-m", "elsewhere", "main^{tree}"])
        .run()
        .stdout_text()
        .trim()
        .to_owned();
    dir.git_in(&git, &source.path)
        .args(["tag", "not-followed", &elsewhere])
        .run();

    // Rewrite main: not a fast-forward.
    dir.git_in(&git, &source.path)
        .args(["update-ref", "refs/heads/main", "main~3"])
        .run();
    let output = packgate_fetch(&dir, &local, "2", &None, &source.path, &[spec]).output();
    assert_eq!(output.status.code(), Some(1), "{output}");
    let text = output.stderr_text();
    assert!(
        text.contains("! [rejected]")
            && text.contains("main       -> origin/main  (non-fast-forward)"),
        "{output}"
    );
    assert_same_refs(
        &refs(&dir, &git, &local, &["refs/remotes/"]),
        &before,
        "after the rejection",
    );
    assert!(!refs(&dir, &git, &local, &["refs/tags/not-followed"])
        .contains_key("refs/tags/not-followed"));

    let forced = format!("+{spec}");
    let output = packgate_fetch(&dir, &local, "2", &None, &source.path, &[&forced]).run();
    assert!(output.stderr_text().contains("(forced update)"), "{output}");
    assert_eq!(
        refs(&dir, &git, &local, &["refs/remotes/origin/main"]),
        BTreeMap::from([(
            "refs/remotes/origin/main".to_owned(),
            refs(&dir, &git, &source.path, &["refs/heads/main"])["refs/heads/main"].clone()
        )])
    );

    // An existing tag that moved is not clobbered without force, as git ≥ 2.20.
    let tag = tags.keys().next().unwrap().clone();
    dir.git_in(&git, &source.path)
        .args(["tag", "-f", tag.trim_start_matches("refs/tags/"), "main"])
        .run();
    let output = packgate_fetch(
        &dir,
        &local,
        "2",
        &None,
        &source.path,
        &["refs/tags/*:refs/tags/*"],
    )
    .output();
    assert_eq!(output.status.code(), Some(1), "{output}");
    assert!(
        output
            .stderr_text()
            .contains("(would clobber existing tag)"),
        "{output}"
    );
    fsck(&dir, &git, &local);
}

#[test]
fn prune_removes_refs_the_remote_deleted() {
    let git = Git::newest();
    let dir = Dir::new("fetch-client-prune");
    let source = dir.fixture(&preset_spec("small"));
    let local = dir.join("local.git");
    init_bare(&dir, &git, &local);
    let spec = "+refs/heads/*:refs/remotes/origin/*";
    packgate_fetch(&dir, &local, "2", &None, &source.path, &[spec]).run();
    dir.git_in(&git, &source.path)
        .args(["branch", "-D", "topic/0"])
        .run();
    // Without --prune the ref stays.
    packgate_fetch(&dir, &local, "2", &None, &source.path, &[spec]).run();
    assert!(refs(&dir, &git, &local, &[]).contains_key("refs/remotes/origin/topic/0"));
    let output = packgate_fetch(&dir, &local, "0", &None, &source.path, &["--prune", spec]).run();
    assert!(
        output
            .stderr_text()
            .contains(" - [deleted]         (none)     -> origin/topic/0"),
        "{output}"
    );
    let expected = crate::util::rename_refs(
        &refs(&dir, &git, &source.path, &["refs/heads/"]),
        "refs/heads/",
        "refs/remotes/origin/",
    );
    assert_same_refs(
        &refs(&dir, &git, &local, &["refs/remotes/"]),
        &expected,
        "after prune",
    );
}

/// The refs and `HEAD` of a bare repository.
fn state(dir: &Dir, git: &Git, repo: &Path) -> (BTreeMap<String, String>, String) {
    let head = dir
        .git_in(git, repo)
        .args(["symbolic-ref", "HEAD"])
        .run()
        .stdout_text();
    (refs(dir, git, repo, &[]), head)
}

#[test]
fn mirror_creates_and_updates_like_git_clone_mirror() {
    let git = Git::newest();
    for version in ["2", "0"] {
        let dir = Dir::new("fetch-client-mirror");
        let source = dir.fixture(&preset_spec("small"));
        let ours = dir.join("ours.git");
        let theirs = dir.join("theirs.git");
        dir.packgate()
            .args(["mirror", "--protocol", version])
            .arg(&source.path)
            .arg(&ours)
            .run();
        dir.git(&git)
            .args(["clone", "-q", "--mirror"])
            .arg(&source.path)
            .arg(&theirs)
            .run();
        assert_eq!(
            state(&dir, &git, &ours),
            state(&dir, &git, &theirs),
            "v{version} create"
        );
        for (key, value) in [
            ("remote.origin.mirror", "true"),
            ("remote.origin.fetch", "+refs/*:refs/*"),
            ("core.bare", "true"),
        ] {
            let got = dir.git_in(&git, &ours).args(["config", key]).run();
            assert_eq!(got.stdout_text().trim(), value, "{key}");
        }
        fsck(&dir, &git, &ours);

        move_source_forward(&dir, &git, &source.path);
        dir.packgate()
            .args(["mirror", "--protocol", version])
            .arg(&source.path)
            .arg(&ours)
            .run();
        dir.git_in(&git, &theirs)
            .args(["fetch", "-q", "--prune"])
            .run();
        assert_eq!(
            state(&dir, &git, &ours),
            state(&dir, &git, &theirs),
            "v{version} update"
        );
        fsck(&dir, &git, &ours);

        // The remote's HEAD moved: a mirror follows it (git fetch leaves it; a new
        // git clone --mirror has it).
        dir.git_in(&git, &source.path)
            .args(["symbolic-ref", "HEAD", "refs/heads/topic/1"])
            .run();
        dir.packgate()
            .args(["mirror", "--protocol", version])
            .arg(&source.path)
            .arg(&ours)
            .run();
        let fresh = dir.join("fresh.git");
        dir.git(&git)
            .args(["clone", "-q", "--mirror"])
            .arg(&source.path)
            .arg(&fresh)
            .run();
        assert_eq!(
            state(&dir, &git, &ours),
            state(&dir, &git, &fresh),
            "v{version} HEAD"
        );
    }
}

#[test]
fn an_empty_remote_and_an_unborn_head() {
    let git = Git::newest();
    let dir = Dir::new("fetch-client-empty");
    let empty = dir.join("empty.git");
    init_bare(&dir, &git, &empty);
    dir.git_in(&git, &empty)
        .args(["symbolic-ref", "HEAD", "refs/heads/trunk"])
        .run();
    for version in ["2", "0"] {
        let local = dir.join(&format!("local-{version}.git"));
        init_bare(&dir, &git, &local);
        packgate_fetch(&dir, &local, version, &None, &empty, &["+refs/*:refs/*"]).run();
        assert!(refs(&dir, &git, &local, &[]).is_empty());
        let mirror = dir.join(&format!("mirror-{version}.git"));
        dir.packgate()
            .args(["mirror", "--protocol", version])
            .arg(&empty)
            .arg(&mirror)
            .run();
        assert!(refs(&dir, &git, &mirror, &[]).is_empty());
        if version == "2" {
            // v2's `unborn`: the mirror's HEAD names the remote's unborn branch.
            let head = dir
                .git_in(&git, &mirror)
                .args(["symbolic-ref", "HEAD"])
                .run();
            assert_eq!(head.stdout_text().trim(), "refs/heads/trunk");
        }
    }
    // Without refspecs: the remote's HEAD into FETCH_HEAD only, as `git fetch <url>`.
    let source = dir.fixture(&preset_spec("tiny"));
    let local = dir.join("head.git");
    init_bare(&dir, &git, &local);
    let output = packgate_fetch(&dir, &local, "2", &None, &source.path, &[]).run();
    assert!(
        output.stderr_text().contains("HEAD       -> FETCH_HEAD"),
        "{output}"
    );
    let fetch_head = std::fs::read_to_string(local.join("FETCH_HEAD")).unwrap();
    let head = dir
        .git_in(&git, &source.path)
        .args(["rev-parse", "HEAD"])
        .run();
    assert!(
        fetch_head.starts_with(head.stdout_text().trim()),
        "{fetch_head}"
    );
    assert!(refs(&dir, &git, &local, &[]).is_empty());
}

/// A smart-HTTP-like connection without HTTP: every request runs
/// `packgate upload-pack --stateless-rpc <repo>` with the request on standard input and
/// `GIT_PROTOCOL` set, and its output is the answer; the advertisement comes from
/// `--advertise-refs`, as smart HTTP's `info/refs`.
struct StatelessRpc {
    repo: PathBuf,
    protocol: Option<&'static str>,
    request: Vec<u8>,
    response: Cursor<Vec<u8>>,
    requests: usize,
    /// Answers are cut to this many bytes (a server that died midway).
    cut: Option<usize>,
}

impl StatelessRpc {
    fn new(repo: &Path, version: WireVersion) -> StatelessRpc {
        let mut connection = StatelessRpc {
            repo: repo.to_owned(),
            protocol: version.parameter(),
            request: Vec::new(),
            response: Cursor::new(Vec::new()),
            requests: 0,
            cut: None,
        };
        connection.response = Cursor::new(connection.run(&["--advertise-refs"], Vec::new()));
        connection
    }

    fn run(&self, args: &[&str], input: Vec<u8>) -> Vec<u8> {
        let mut cmd = Cmd::new(Path::new(PACKGATE))
            .args(["upload-pack", "--stateless-rpc"])
            .args(args)
            .arg(&self.repo)
            .stdin(input);
        if let Some(protocol) = self.protocol {
            cmd = cmd.env("GIT_PROTOCOL", protocol);
        }
        cmd.run().stdout
    }
}

impl Connection for StatelessRpc {
    fn stateless(&self) -> bool {
        true
    }
    fn reader(&mut self) -> &mut dyn BufRead {
        &mut self.response
    }
    fn writer(&mut self) -> &mut dyn Write {
        &mut self.request
    }
    fn end_request(&mut self) -> io::Result<()> {
        let request = std::mem::take(&mut self.request);
        self.requests += 1;
        let mut response = self.run(&[], request);
        if let Some(cut) = self.cut {
            response.truncate(cut);
        }
        self.response = Cursor::new(response);
        Ok(())
    }
    fn finish(self: Box<Self>) -> io::Result<()> {
        Ok(())
    }
}

fn open(repo: &Path) -> Repository {
    Repository::open(repo, PathLookup::Strict, None).unwrap()
}

fn options(refspecs: &[&str]) -> FetchOptions {
    FetchOptions {
        refspecs: refspecs
            .iter()
            .map(|s| Refspec::parse(s).unwrap())
            .collect(),
        quiet: true,
        ..FetchOptions::default()
    }
}

#[test]
fn stateless_connections_v2_and_v0() {
    let git = Git::newest();
    for version in [WireVersion::V2, WireVersion::V0] {
        let context = format!("stateless {version:?}");
        let dir = Dir::new("fetch-client-stateless");
        let source = dir.fixture(&preset_spec("small"));
        let local = dir.join("local.git");
        init_bare(&dir, &git, &local);
        for round in ["initial", "incremental"] {
            let connection = Box::new(StatelessRpc::new(&source.path, version));
            let mut progress = Vec::new();
            let outcome = fetch::fetch(
                connection,
                &open(&local),
                &FetchOptions {
                    prune: true,
                    ..options(&["+refs/*:refs/*"])
                },
                &mut progress,
            )
            .unwrap_or_else(|err| panic!("{context}, {round}: {err}"));
            assert!(
                outcome.pack_bytes > 0 && outcome.rounds >= 1,
                "{context}: {outcome:?}"
            );
            assert!(
                outcome.changes.iter().all(|c| !c.is_rejected()),
                "{outcome:?}"
            );
            assert_same_refs(
                &refs(&dir, &git, &local, &[]),
                &ls_remote(&dir, &git, &source.path),
                &format!("{context}, {round}"),
            );
            fsck(&dir, &git, &local);
            if round == "initial" {
                move_source_forward(&dir, &git, &source.path);
            } else {
                assert!(outcome.haves > 0, "{context}: incremental without haves");
                assert!(outcome
                    .changes
                    .iter()
                    .any(|c| c.kind == ChangeKind::FastForward));
            }
        }
    }
}

/// Distinct `have` ids git's client sent, from its `GIT_TRACE_PACKET` output.
fn haves_in_trace(trace: &str) -> usize {
    trace
        .lines()
        .filter(|line| line.contains("fetch") && line.contains("> have "))
        .filter_map(|line| line.split("> have ").nth(1))
        .map(|id| id.trim().to_owned())
        .collect::<BTreeSet<_>>()
        .len()
}

#[test]
fn a_fork_far_ahead_finds_the_base_with_no_more_haves_than_git() {
    let git = Git::newest();
    let dir = Dir::new("fetch-client-fork");
    let source = dir.fixture(&preset_spec("small"));
    // One delta-search thread in the serving pack-objects: with several, which deltas it
    // finds depends on timing, and the two packs compared below would differ by chance.
    dir.git_in(&git, &source.path)
        .args(["config", "pack.threads", "1"])
        .run();
    // The local repository: the source's main, then 3000 commits of its own.
    let through_git = dir.join("through-git.git");
    dir.git(&git)
        .args(["clone", "-q", "--bare", "--single-branch", "--no-tags"])
        .arg(&source.path)
        .arg(&through_git)
        .run();
    let ahead = Append {
        branch: "main".to_owned(),
        commits: 3000,
        files_changed_per_commit: 1,
        seed: 5,
        git: git.program.clone(),
    };
    append_commits(&through_git, &ahead).unwrap();
    dir.git_in(&git, &through_git)
        .args(["config", "--unset-all", "remote.origin.fetch"])
        .output();
    let through_packgate = dir.join("through-packgate.git");
    dir.copy_tree(&through_git, &through_packgate);
    // The remote moved on meanwhile.
    move_source_forward(&dir, &git, &source.path);

    for version in ["2", "0"] {
        let context = format!("fork over v{version}");
        let (git_repo, pg_repo) = (
            dir.join(&format!("git-{version}.git")),
            dir.join(&format!("pg-{version}.git")),
        );
        dir.copy_tree(&through_git, &git_repo);
        dir.copy_tree(&through_packgate, &pg_repo);
        let spec = "+refs/heads/*:refs/remotes/origin/*";
        let received = dir.join(&format!("git-{version}.pack"));
        let output = dir
            .git_in(&git, &git_repo)
            .env("GIT_TRACE_PACKET", "1")
            .env("GIT_TRACE_PACKFILE", &received)
            .args(["-c", &format!("protocol.version={version}")])
            .args(["-c", "fetch.unpackLimit=1"])
            .args(["fetch", "--no-tags"])
            .arg(git_upload_pack_option(&git))
            .arg(&source.path)
            .arg(spec)
            .run();
        let git_haves = haves_in_trace(&output.stderr_text());
        let git_pack = std::fs::metadata(&received).unwrap().len();

        let program = format!("'{}' upload-pack", git.program.display());
        let connect = ConnectOptions {
            version: if version == "2" {
                WireVersion::V2
            } else {
                WireVersion::V0
            },
            ..ConnectOptions::default()
        };
        let connection = ProcessConnection::spawn(
            shell_command(&program, &source.path.to_string_lossy()),
            &connect,
        )
        .unwrap();
        let mut options = options(&[spec]);
        options.tags = fetch::TagFollowing::None;
        let outcome = fetch::fetch(
            Box::new(connection),
            &open(&pg_repo),
            &options,
            &mut io::sink(),
        )
        .unwrap_or_else(|err| panic!("{context}: {err}"));
        eprintln!(
            "{context}: packgate {} haves, {} rounds, {} bytes; git {git_haves} haves, {git_pack} bytes",
            outcome.haves, outcome.rounds, outcome.pack_bytes
        );
        assert!(
            outcome.haves <= git_haves,
            "{context}: packgate sent {} haves, git {git_haves}",
            outcome.haves
        );
        assert!(
            outcome.pack_bytes <= git_pack,
            "{context}: packgate received {} bytes, git {git_pack}",
            outcome.pack_bytes
        );
        // It found the base: the pack is far smaller than the whole history.
        let full = std::fs::metadata(
            std::fs::read_dir(source.path.join("objects/pack"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|e| e == "pack"))
                .unwrap(),
        )
        .unwrap()
        .len();
        assert!(
            outcome.pack_bytes < full / 2,
            "{context}: {} of {full}",
            outcome.pack_bytes
        );
        assert_same_refs(
            &refs(&dir, &git, &pg_repo, &["refs/remotes/"]),
            &refs(&dir, &git, &git_repo, &["refs/remotes/"]),
            &context,
        );
        fsck(&dir, &git, &pg_repo);
    }
}

#[test]
fn a_fetch_cut_off_mid_pack_leaves_nothing_visible() {
    let git = Git::newest();
    let dir = Dir::new("fetch-client-cut");
    let source = dir.fixture(&preset_spec("small"));
    let local = dir.join("local.git");
    init_bare(&dir, &git, &local);
    for version in [WireVersion::V2, WireVersion::V0] {
        // The server's answer ends 20,000 bytes in: inside the pack.
        let mut connection = StatelessRpc::new(&source.path, version);
        connection.cut = Some(20_000);
        let result = fetch::fetch(
            Box::new(connection),
            &open(&local),
            &options(&["+refs/*:refs/*"]),
            &mut io::sink(),
        );
        assert!(
            matches!(result, Err(fetch::FetchError::Ingest(_))),
            "{version:?}: {result:?}"
        );
        assert!(refs(&dir, &git, &local, &[]).is_empty(), "{version:?}");
        let leftovers: Vec<_> = std::fs::read_dir(local.join("objects"))
            .unwrap()
            .chain(std::fs::read_dir(local.join("objects/pack")).unwrap())
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("tmp_objdir") || name.ends_with(".pack"))
            .collect();
        assert!(leftovers.is_empty(), "{version:?}: {leftovers:?}");
        fsck(&dir, &git, &local);
    }
}
