//! Partial clones (`--filter=<spec>`) from packgate with `uploadpack.allowFilter`: the objects
//! a filtered clone receives equal what git's upload-pack sends for the same request, over
//! protocol v2 and v0, stdio and HTTP (`packgate serve`); lazy fetches of what a filter left
//! out (a checkout of another commit) work; without `uploadpack.allowFilter` the filter is not
//! advertised and the client gets a full clone; bad and refused filters end in `ERR` with
//! git's words.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::http::{Push, Server};
use crate::pkt::{concat, error_reason, line, DELIM, FLUSH};
use crate::util::{
    file_url, fsck, git_upload_pack_option, packgate_upload_pack_option, present_objects,
    preset_spec, Dir, Git,
};

/// The sparse-checkout patterns of the `sparse:oid` tests: top-level files, and one
/// directory of the fixture's.
const SPARSE_PATTERNS: &str = "/*\n!/*/\n/dir0/\n";

/// A private copy of the `small` fixture with `uploadpack.allowFilter` and the sparse
/// patterns as `.sparse` on the branch `sparse-spec`; returns its path.
fn source(dir: &Dir, git: &Git) -> PathBuf {
    let source = dir.fixture(&preset_spec("small")).path;
    let text = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = dir.git_in(git, &source).args(args);
        if let Some(stdin) = stdin {
            cmd = cmd.stdin(stdin.as_bytes().to_vec());
        }
        cmd.run().stdout_text().trim().to_owned()
    };
    text(&["config", "uploadpack.allowFilter", "true"], None);
    let blob = text(&["hash-object", "-w", "--stdin"], Some(SPARSE_PATTERNS));
    let tree = text(&["mktree"], Some(&format!("100644 blob {blob}\t.sparse\n")));
    let commit = text(&["commit-tree", &tree, "-m", "sparse patterns"], None);
    text(&["update-ref", "refs/heads/sparse-spec", &commit], None);
    source
}

/// `git clone --filter=<filter> <options>` of `url` with protocol `version` through
/// `upload_pack` (an `--upload-pack=` option, or none for a network URL); returns its
/// standard error.
fn clone(
    dir: &Dir,
    git: &Git,
    version: &str,
    upload_pack: Option<&str>,
    url: &str,
    destination: &Path,
    (filter, options): (&str, &[&str]),
) -> String {
    let mut cmd = dir
        .git(git)
        .args(["-c", &format!("protocol.version={version}"), "clone"])
        .args(options)
        .arg(format!("--filter={filter}"));
    if let Some(upload_pack) = upload_pack {
        cmd = cmd.arg(upload_pack);
    }
    let output = cmd
        .arg(url)
        .arg(destination)
        .timeout(Duration::from_secs(120))
        .run();
    output.stderr_text()
}

/// The filters a clone is checked with; `SPARSE` stands for the sparse blob's id.
const SPECS: [&str; 9] = [
    "blob:none",
    "blob:limit=1k",
    "tree:0",
    "tree:2",
    "object:type=commit",
    "object:type=tree",
    "combine:blob:limit=2k+tree:3",
    "sparse:oid=SPARSE",
    "sparse:oid=sparse-spec:.sparse",
];

#[test]
fn filtered_clones_receive_what_git_sends() {
    for git in Git::all() {
        let dir = Dir::new("filter-clone");
        let source = source(&dir, &git);
        let sparse = dir
            .git_in(&git, &source)
            .args(["rev-parse", "sparse-spec:.sparse"])
            .run()
            .stdout_text()
            .trim()
            .to_owned();
        let url = file_url(&source);
        let ours_option = packgate_upload_pack_option();
        let theirs_option = git_upload_pack_option(&git);
        let mut n = 0;
        for version in ["2", "0"] {
            for spec in SPECS {
                n += 1;
                let spec = spec.replace("SPARSE", &sparse);
                let context = format!("--filter={spec}, protocol {version}, {git}");
                let ours = dir.join(&format!("ours-{n}.git"));
                let theirs = dir.join(&format!("theirs-{n}.git"));
                let how = (spec.as_str(), &["--bare"][..]);
                clone(&dir, &git, version, Some(&ours_option), &url, &ours, how);
                clone(
                    &dir,
                    &git,
                    version,
                    Some(&theirs_option),
                    &url,
                    &theirs,
                    how,
                );
                let (received, expected) = (
                    present_objects(&dir, &git, &ours),
                    present_objects(&dir, &git, &theirs),
                );
                assert!(
                    received.len() < present_objects(&dir, &git, &source).len(),
                    "{context}: nothing was filtered"
                );
                assert_eq!(
                    received.symmetric_difference(&expected).count(),
                    0,
                    "{context}: {} objects received, git sends {}",
                    received.len(),
                    expected.len()
                );
                fsck(&dir, &git, &ours);
            }
        }
    }
}

/// `uploadpack.allowAnySHA1InWant`: a v0/v1 client fetches missing objects by id only from a
/// server that advertises it may (`allow-tip-sha1-in-want` is not enough for blobs), with git
/// as with packgate; v2 needs nothing.
fn allow_any_want(dir: &Dir, git: &Git, repo: &Path) {
    dir.git_in(git, repo)
        .args(["config", "uploadpack.allowAnySHA1InWant", "true"])
        .run();
}

/// Clones with `--filter`, then checks out older commits: the client fetches what the filter
/// left out by id, with the same filter, from packgate.
fn clone_then_checkout(dir: &Dir, git: &Git, url: &str, upload_pack: Option<&str>, n: usize) {
    for version in ["2", "0"] {
        for spec in ["blob:none", "tree:0", "blob:limit=1k"] {
            let context = format!("--filter={spec}, protocol {version}, {git}, {url}");
            let work = dir.join(&format!("work-{n}-{version}-{}", spec.replace(':', "-")));
            clone(dir, git, version, upload_pack, url, &work, (spec, &[]));
            for revision in ["main~5", "main~40"] {
                let checkout = dir
                    .git(git)
                    .current_dir(&work)
                    .args(["-c", &format!("protocol.version={version}")])
                    .args(["checkout", "--quiet", "--detach", revision])
                    .timeout(Duration::from_secs(120))
                    .run();
                let status = dir
                    .git(git)
                    .current_dir(&work)
                    .args(["status", "--porcelain"])
                    .run();
                assert_eq!(status.stdout_text(), "", "{context}: {checkout}");
            }
            fsck(dir, git, &work.join(".git"));
            let promisor = dir
                .git(git)
                .current_dir(&work)
                .args(["config", "remote.origin.promisor"])
                .run();
            assert_eq!(promisor.stdout_text().trim(), "true", "{context}");
        }
    }
}

#[test]
fn partial_clone_then_lazy_fetches_over_stdio() {
    for (n, git) in Git::all().into_iter().enumerate() {
        let dir = Dir::new("filter-lazy");
        let source = source(&dir, &git);
        allow_any_want(&dir, &git, &source);
        let upload_pack = packgate_upload_pack_option();
        clone_then_checkout(&dir, &git, &file_url(&source), Some(&upload_pack), n);
    }
}

#[test]
fn partial_clone_then_lazy_fetches_over_http() {
    let dir = Dir::new("filter-http");
    let git = Git::newest();
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|error| panic!("mkdir: {error}"));
    let source = source(&dir, &git);
    allow_any_want(&dir, &git, &source);
    dir.copy_tree(&source, &root.join("small.git"));
    let server = Server::start(&root, Push::Refused);
    for (n, git) in Git::all().into_iter().enumerate() {
        clone_then_checkout(&dir, &git, &server.http_url("small.git"), None, n);
    }
}

#[test]
fn sparse_clone_with_a_sparse_filter() {
    for git in Git::all() {
        let dir = Dir::new("filter-sparse");
        let source = source(&dir, &git);
        for version in ["2", "0"] {
            let work = dir.join(&format!("work-{version}"));
            clone(
                &dir,
                &git,
                version,
                Some(&packgate_upload_pack_option()),
                &file_url(&source),
                &work,
                ("sparse:oid=sparse-spec:.sparse", &["--sparse"]),
            );
            let status = dir
                .git(&git)
                .current_dir(&work)
                .args(["status", "--porcelain"])
                .run();
            assert_eq!(status.stdout_text(), "", "protocol {version}, {git}");
            fsck(&dir, &git, &work.join(".git"));
        }
    }
}

#[test]
fn without_allow_filter_the_client_gets_a_full_clone() {
    for git in Git::all() {
        let dir = Dir::new("filter-off");
        let source = source(&dir, &git);
        dir.git_in(&git, &source)
            .args(["config", "--unset", "uploadpack.allowFilter"])
            .run();
        for version in ["2", "0"] {
            let clone_dir = dir.join(&format!("clone-{version}.git"));
            let stderr = clone(
                &dir,
                &git,
                version,
                Some(&packgate_upload_pack_option()),
                &file_url(&source),
                &clone_dir,
                ("blob:none", &["--bare"]),
            );
            let context = format!("protocol {version}, {git}");
            assert!(
                stderr.contains("filtering not recognized by server, ignoring"),
                "{context}: {stderr}"
            );
            let all = present_objects(&dir, &git, &clone_dir);
            let reachable = dir
                .git_in(&git, &clone_dir)
                .args(["rev-list", "--objects", "--all"])
                .run()
                .stdout_text();
            assert_eq!(all.len(), reachable.lines().count(), "{context}");
            fsck(&dir, &git, &clone_dir);
        }
    }
}

/// One v2 `fetch` request over `packgate upload-pack --stateless-rpc`; returns the `ERR`
/// reason, if any.
fn v2_fetch_error(dir: &Dir, repo: &Path, arguments: &[String]) -> Option<String> {
    let request = concat(
        [line("command=fetch\n"), DELIM.to_vec()]
            .into_iter()
            .chain(
                arguments
                    .iter()
                    .map(|argument| line(format!("{argument}\n"))),
            )
            .chain([FLUSH.to_vec()]),
    );
    let output = dir
        .packgate()
        .args(["upload-pack", "--stateless-rpc"])
        .env("GIT_PROTOCOL", "version=2")
        .arg(repo)
        .stdin(request)
        .timeout(Duration::from_secs(20))
        .output();
    assert!(!output.panicked(), "{output}");
    assert_eq!(output.signalled(), None, "{output}");
    error_reason(&output.stdout)
}

/// A v0 request (wants with `capabilities`, then `filter` lines) over
/// `packgate upload-pack --stateless-rpc`; returns the `ERR` reason, if any.
fn v0_fetch_error(
    dir: &Dir,
    repo: &Path,
    want: &str,
    capabilities: &str,
    filters: &[&str],
) -> Option<String> {
    let request = concat(
        [line(format!("want {want} {capabilities}\n"))]
            .into_iter()
            .chain(filters.iter().map(|spec| line(format!("filter {spec}\n"))))
            .chain([FLUSH.to_vec(), line("done\n")]),
    );
    let output = dir
        .packgate()
        .args(["upload-pack", "--stateless-rpc"])
        .arg(repo)
        .stdin(request)
        .timeout(Duration::from_secs(20))
        .output();
    assert!(!output.panicked(), "{output}");
    assert_eq!(output.signalled(), None, "{output}");
    error_reason(&output.stdout)
}

#[test]
fn bad_and_refused_filters_get_gits_errors() {
    let git = Git::newest();
    let dir = Dir::new("filter-bad");
    let source = source(&dir, &git);
    let main = dir
        .git_in(&git, &source)
        .args(["rev-parse", "main"])
        .run()
        .stdout_text()
        .trim()
        .to_owned();
    let want = format!("want {main}");
    let v2 = |filters: &[&str]| {
        let mut arguments = vec![want.clone(), "done".to_owned()];
        arguments.extend(filters.iter().map(|spec| format!("filter {spec}")));
        v2_fetch_error(&dir, &source, &arguments)
    };
    let expect = |reason: Option<String>, expected: &str| {
        assert_eq!(reason.as_deref(), Some(expected));
    };
    assert_eq!(v2(&["blob:none"]), None, "an allowed filter");
    expect(v2(&["nope"]), "invalid filter-spec 'nope'");
    expect(v2(&["tree:x"]), "expected 'tree:<depth>'");
    expect(
        v2(&["object:type=bolb"]),
        "'bolb' for 'object:type=<type>' is not a valid object type",
    );
    expect(
        v2(&["sparse:path=x"]),
        "sparse:path filters support has been dropped",
    );
    expect(v2(&["combine:"]), "expected something after combine:");
    expect(
        v2(&["combine:tree:1+sparse:oid=a~b"]),
        "must escape char in sub-filter-spec: '~'",
    );
    expect(
        v2(&["blob:none", "tree:0"]),
        "multiple filter-specs cannot be combined",
    );
    expect(
        v2(&["sparse:oid=nothing:.sparse"]),
        "unable to access sparse blob in 'nothing:.sparse'",
    );
    // A ref to a commit names an object, but no patterns (git's t5616).
    expect(
        v2(&["sparse:oid=main"]),
        &format!("unable to parse sparse filter data in {main}"),
    );
    expect(
        v0_fetch_error(&dir, &source, &main, "side-band-64k", &["blob:none"]),
        "git upload-pack: filtering capability not negotiated",
    );
    assert_eq!(
        v0_fetch_error(&dir, &source, &main, "side-band-64k filter", &["blob:none"]),
        None
    );
    expect(
        v0_fetch_error(&dir, &source, &main, "filter", &["blob:nope"]),
        "invalid filter-spec 'blob:nope'",
    );

    // Configured limits.
    let config = |key: &str, value: &str| {
        dir.git_in(&git, &source).args(["config", key, value]).run();
    };
    config("uploadpackfilter.allow", "false");
    config("uploadpackfilter.tree.maxDepth", "1");
    expect(v2(&["blob:none"]), "filter 'blob:none' not supported");
    assert_eq!(v2(&["tree:1"]), None);
    expect(v2(&["tree:2"]), "tree filter allows max depth 1, but got 2");
    expect(
        v0_fetch_error(&dir, &source, &main, "filter", &["tree:3"]),
        "tree filter allows max depth 1, but got 3",
    );

    // Without uploadpack.allowFilter a v2 filter line is an unknown argument, as in git.
    config("uploadpack.allowFilter", "false");
    expect(v2(&["tree:1"]), "unexpected line: 'filter tree:1'");
    // `-c uploadpackfilter.tree.maxDepth` without a value: the service does not start.
    let output = dir
        .packgate()
        .args(["upload-pack", "--advertise-refs"])
        .arg(&source)
        .env("GIT_CONFIG_PARAMETERS", "'uploadpackfilter.tree.maxdepth'")
        .output();
    assert!(
        !output.status.success()
            && output
                .stderr_text()
                .contains("unable to parse 'uploadpackfilter.tree.maxdepth'"),
        "{output}"
    );
}
