//! A client that is not git: libgit2 1.9 through pygit2 (from PyPI, installed by
//! `tests/clients/setup.sh`, which `.ci/run` runs), driven by `tests/clients/pygit2_client.py`.
//! libgit2 fetches over protocol v0 only, and sends no `version=2` over git:// or HTTP.
//!
//! Each test serves one root (a copy of `small` and the `empty` repository) from git's own
//! `git daemon` — the reference — and from the servers under test, and runs the same steps
//! against each: work-tree, bare and mirror clones, a clone of the empty repository, then
//! the server moves forward (commits, tags) and every clone fetches (the work tree after
//! [`LOCAL_COMMITS`] commits of its own, so that negotiation takes many rounds), and fetches
//! all tags.
//! After every step `git fsck` passes and the refs equal the served repository's; an
//! incremental fetch receives no more objects than from `git daemon`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use packgate_fixture::{append_commits, Append};

use crate::cgi_host::{CgiHost, CgiHostOptions};
use crate::daemon::Daemon;
use crate::http::{Push, Server};
use crate::util::{
    assert_same_refs, fsck, refs, rename_refs, shared_fixture, Cmd, Dir, Git, Output,
};

/// Commits a work-tree clone makes on a local branch before it fetches again.
const LOCAL_COMMITS: usize = 400;

/// The script that installs pygit2 (`.ci/run` runs it).
const SETUP: &str = "tests/clients/setup.sh";

/// The Python of the virtual environment `SETUP` makes (or `PACKGATE_TEST_PYGIT2_PYTHON`),
/// checked once to import pygit2. A missing pygit2 fails the test, naming `SETUP`.
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let python = std::env::var_os("PACKGATE_TEST_PYGIT2_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/clients/venv/bin/python")
                });
            let missing = format!(
                "pygit2 is not installed for {}: run {SETUP} (CI's .ci/run does) or set \
                 PACKGATE_TEST_PYGIT2_PYTHON to a Python that has it",
                python.display()
            );
            assert!(python.exists(), "{missing}");
            let output = Cmd::new(&python)
                .args(["-c", "import pygit2; print(pygit2.LIBGIT2_VERSION)"])
                .output();
            assert!(output.status.success(), "{missing}: {output}");
            eprintln!("libgit2 {}", output.stdout_text().trim());
            python
        })
        .clone()
}

/// Runs one step of `pygit2_client.py`, which must succeed.
fn pygit2(dir: &Dir, args: &[OsString]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/pygit2_client.py");
    Cmd::new(&python())
        .arg(script)
        .args(args)
        .env("HOME", dir.join("home"))
        .env("XDG_CONFIG_HOME", dir.join("home/.config"))
        .current_dir(dir.path())
        .timeout(Duration::from_secs(120))
        .run()
}

/// `received_objects <n>` from the client's output.
fn received_objects(output: &Output) -> u64 {
    output
        .stdout_text()
        .lines()
        .find_map(|line| line.strip_prefix("received_objects "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no received_objects line: {output}"))
}

/// A server to run the steps against: `<base>/<repository>` is a repository's URL.
struct Endpoint {
    label: &'static str,
    base: String,
}

impl Endpoint {
    fn new(label: &'static str, url_of_root: &str) -> Endpoint {
        Endpoint {
            label,
            base: url_of_root.trim_end_matches('/').to_owned(),
        }
    }

    fn url(&self, repository: &str) -> OsString {
        format!("{}/{repository}", self.base).into()
    }
}

/// A root holding a private copy of `small` (it is moved forward) and of `empty`.
fn root(dir: &Dir) -> PathBuf {
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|error| panic!("mkdir: {error}"));
    dir.copy_tree(&shared_fixture("small").path, &root.join("small.git"));
    dir.copy_tree(&shared_fixture("empty").path, &root.join("empty.git"));
    root
}

/// `git daemon --export-all --base-path=<root>`: the reference.
fn git_daemon(dir: &Dir, git: &Git, root: &Path) -> Daemon {
    let base_path = format!("--base-path={}", root.display());
    Daemon::start_git(dir, git, &["--export-all", &base_path])
}

/// Checks a clone's remote-tracking branches and tags against the served repository.
fn check_clone(dir: &Dir, git: &Git, served: &Path, clone: &Path, context: &str) {
    fsck(dir, git, clone);
    let mut tracking = refs(dir, git, clone, &["refs/remotes/origin/"]);
    tracking.remove("refs/remotes/origin/HEAD");
    let heads = refs(dir, git, served, &["refs/heads/"]);
    assert_same_refs(
        &tracking,
        &rename_refs(&heads, "refs/heads/", "refs/remotes/origin/"),
        &format!("{context}: branches"),
    );
}

/// Checks that a clone has exactly the served repository's tags.
fn check_tags(dir: &Dir, git: &Git, served: &Path, clone: &Path, context: &str) {
    assert_same_refs(
        &refs(dir, git, clone, &["refs/tags/"]),
        &refs(dir, git, served, &["refs/tags/"]),
        &format!("{context}: tags"),
    );
}

/// The steps, against every endpoint; the first is `git daemon`, the reference.
fn exercise(dir: &Dir, root: &Path, endpoints: &[Endpoint]) {
    let git = Git::newest();
    let served = root.join("small.git");
    let work = |n: usize| dir.join(&format!("work-{n}"));
    let bare = |n: usize| dir.join(&format!("bare-{n}.git"));
    let mirror = |n: usize| dir.join(&format!("mirror-{n}.git"));

    for (n, endpoint) in endpoints.iter().enumerate() {
        let label = endpoint.label;
        let url = endpoint.url("small.git");
        let output = pygit2(dir, &["clone".into(), url.clone(), work(n).into()]);
        check_clone(dir, &git, &served, &work(n).join(".git"), label);
        check_tags(dir, &git, &served, &work(n).join(".git"), label);
        let head = dir
            .git_in(&git, &served)
            .args(["rev-parse", "HEAD"])
            .run()
            .stdout_text();
        assert!(
            output
                .stdout_text()
                .contains(&format!("head {}", head.trim())),
            "{label}: the clone's HEAD is not the served HEAD {head}: {output}"
        );
        let status = dir
            .git(&git)
            .current_dir(&work(n))
            .args(["status", "--porcelain"])
            .run();
        assert_eq!(status.stdout_text(), "", "{label}: work tree not clean");
        // Local work the server never saw: the next fetch's first `have`s are unknown to
        // the server, so its negotiation takes many rounds before it finds common commits.
        dir.git(&git)
            .current_dir(&work(n))
            .args(["branch", "local", "origin/main"])
            .run();
        let local = Append {
            branch: "local".to_owned(),
            commits: LOCAL_COMMITS,
            seed: 7,
            git: git.program.clone(),
            ..Append::default()
        };
        append_commits(&work(n).join(".git"), &local)
            .unwrap_or_else(|error| panic!("{label}: local commits: {error}"));

        pygit2(dir, &["clone-bare".into(), url.clone(), bare(n).into()]);
        check_clone(dir, &git, &served, &bare(n), &format!("{label} bare"));

        pygit2(dir, &["mirror".into(), url, mirror(n).into()]);
        fsck(dir, &git, &mirror(n));
        assert_same_refs(
            &refs(dir, &git, &mirror(n), &[]),
            &refs(dir, &git, &served, &[]),
            &format!("{label} mirror"),
        );

        let empty = dir.join(&format!("empty-{n}"));
        let output = pygit2(
            dir,
            &[
                "clone".into(),
                endpoint.url("empty.git"),
                empty.clone().into(),
            ],
        );
        assert!(
            output.stdout_text().contains("head unborn"),
            "{label}: clone of the empty repository: {output}"
        );
        assert!(refs(dir, &git, &empty.join(".git"), &[]).is_empty());
    }

    // The server moves forward: new commits on main, an annotated tag on the new tip and a
    // lightweight tag on an old commit (only an explicit tag fetch brings the latter).
    let append = Append {
        branch: "main".to_owned(),
        commits: 5,
        seed: 90,
        git: git.program.clone(),
        ..Append::default()
    };
    append_commits(&served, &append).unwrap_or_else(|error| panic!("append: {error}"));
    dir.git_in(&git, &served)
        .args(["tag", "-a", "-m", "new release", "v-new", "refs/heads/main"])
        .run();
    dir.git_in(&git, &served)
        .args(["tag", "old-light", "refs/heads/main~30"])
        .run();

    let mut received = Vec::new();
    for (n, endpoint) in endpoints.iter().enumerate() {
        let label = endpoint.label;
        let fetched = received_objects(&pygit2(dir, &["fetch".into(), work(n).into()]));
        check_clone(
            dir,
            &git,
            &served,
            &work(n).join(".git"),
            &format!("{label} incremental fetch"),
        );
        assert!(
            fetched > 0,
            "{label}: the incremental fetch received nothing"
        );
        pygit2(dir, &["fetch-tags".into(), work(n).into()]);
        check_tags(
            dir,
            &git,
            &served,
            &work(n).join(".git"),
            &format!("{label} tag fetch"),
        );
        fsck(dir, &git, &work(n).join(".git"));

        let mirrored = received_objects(&pygit2(dir, &["fetch".into(), mirror(n).into()]));
        fsck(dir, &git, &mirror(n));
        assert_same_refs(
            &refs(dir, &git, &mirror(n), &[]),
            &refs(dir, &git, &served, &[]),
            &format!("{label} mirror fetch"),
        );
        received.push((label, fetched, mirrored));
    }
    eprintln!("objects received by incremental fetches (work tree, mirror): {received:?}");
    let (reference, reference_work, reference_mirror) = received[0];
    for &(label, work, mirror) in &received[1..] {
        assert!(
            work <= reference_work && mirror <= reference_mirror,
            "{label} sent more objects ({work} and {mirror}) than {reference} \
             ({reference_work} and {reference_mirror})"
        );
    }
}

/// Over HTTP the fetch after the local commits negotiated over several stateless requests
/// (each POST repeats the wants and the common haves): the multi-round case was exercised.
#[track_caller]
fn assert_multi_round(host: &CgiHost) {
    let log = host.access_log();
    let (mut longest, mut posts) = (0, 0);
    for logged in &log {
        if logged.method == "POST" {
            posts += 1;
            longest = longest.max(posts);
        } else {
            posts = 0;
        }
    }
    // How libgit2 batches its haves decides the exact count (runs against git's own
    // http-backend gave 3 and 4): three POSTs are at least two rounds of haves before the one
    // that gets the pack.
    assert!(
        longest >= 3,
        "no HTTP fetch took 3 requests or more: {log:#?}"
    );
}

/// The harness itself, against git's servers only: `git daemon`, and `git http-backend`
/// behind the CGI host. If this fails, the client or its setup is broken, not packgate.
#[test]
fn pygit2_through_git_daemon_and_git_http_backend() {
    let dir = Dir::new("libgit2-git");
    let root = root(&dir);
    let git = Git::newest();
    let daemon = git_daemon(&dir, &git, &root);
    let host = CgiHost::start(CgiHostOptions {
        project_root: root.clone(),
        export_all: true,
        program: Some(vec![git.program.clone().into(), "http-backend".into()]),
        ..CgiHostOptions::default()
    });
    exercise(
        &dir,
        &root,
        &[
            Endpoint::new("git daemon", &daemon.url("/")),
            Endpoint::new("git http-backend", &host.url("")),
        ],
    );
    assert_multi_round(&host);
    // libgit2 asked for no protocol version: every fetch above was protocol v0.
    let log = daemon.log_text();
    assert!(log.contains("Connection from"), "{log}");
    assert!(
        !log.contains("\"protocol\""),
        "libgit2 asked for a protocol: {log}"
    );
}

/// `packgate serve`, the README's serve command: git:// and smart HTTP.
#[test]
fn pygit2_through_packgate_serve() {
    let dir = Dir::new("libgit2-serve");
    let root = root(&dir);
    let daemon = git_daemon(&dir, &Git::newest(), &root);
    let server = Server::start(&root, Push::Refused);
    exercise(
        &dir,
        &root,
        &[
            Endpoint::new("git daemon", &daemon.url("/")),
            Endpoint::new("packgate serve git://", &server.git_url("")),
            Endpoint::new("packgate serve HTTP", &server.http_url("")),
        ],
    );
}

/// The drop-ins: `packgate daemon` and `packgate http-backend` behind the CGI host.
#[test]
fn pygit2_through_packgate_daemon_and_http_backend() {
    let dir = Dir::new("libgit2-dropins");
    let root = root(&dir);
    let daemon = git_daemon(&dir, &Git::newest(), &root);
    let base_path = format!("--base-path={}", root.display());
    let packgate_daemon = Daemon::start_with_env(&dir, &["--export-all", &base_path], &[]);
    let host = CgiHost::start(CgiHostOptions {
        project_root: root.clone(),
        export_all: true,
        ..CgiHostOptions::default()
    });
    exercise(
        &dir,
        &root,
        &[
            Endpoint::new("git daemon", &daemon.url("/")),
            Endpoint::new("packgate daemon", &packgate_daemon.url("/")),
            Endpoint::new("packgate http-backend", &host.url("")),
        ],
    );
    assert_multi_round(&host);
}
