//! Shallow fetches with every git, protocol v2 and v0: each client step is run twice, once
//! through `git upload-pack` and once through packgate, on the same repository, and the two
//! clients must end with the same `.git/shallow`, the same objects and the same refs, and
//! packgate's must pass `git fsck`. Over stdio, git:// and HTTP (`packgate serve`), and from a
//! repository that is itself shallow. Bad shallow requests get git's words in `ERR`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use packgate_fixture::{append_commits, Append};

use crate::cgi_host::{CgiHost, CgiHostOptions};
use crate::http::{Push, Server};
use crate::pkt::{concat, decode, error_reason, line, lines, split_advertisement, DELIM, FLUSH};
use crate::util::{
    assert_same_refs, file_url, fsck, git_upload_pack_option, packgate_upload_pack_option,
    present_objects, preset_spec, refs, shared_fixture, Dir, Git, Output,
};

const PROTOCOLS: [&str; 2] = ["2", "0"];

/// The same client steps against git's upload-pack (the reference) and against packgate.
struct Twins<'a> {
    dir: &'a Dir,
    git: &'a Git,
    protocol: &'a str,
    /// How git's upload-pack is reached: a URL, and the `--upload-pack` option if over stdio.
    reference_url: String,
    reference_option: Option<String>,
    /// How packgate is reached: a URL, and the `--upload-pack` option if over stdio.
    packgate_url: String,
    packgate_option: Option<String>,
    reference: PathBuf,
    ours: PathBuf,
    context: String,
}

impl<'a> Twins<'a> {
    fn new(dir: &'a Dir, git: &'a Git, protocol: &'a str, source: &Path, name: &str) -> Self {
        Twins {
            dir,
            git,
            protocol,
            reference_url: file_url(source),
            reference_option: Some(git_upload_pack_option(git)),
            packgate_url: file_url(source),
            packgate_option: Some(packgate_upload_pack_option()),
            reference: dir.join(&format!("{name}-git")),
            ours: dir.join(&format!("{name}-packgate")),
            context: format!("{git}, protocol.version={protocol}, {name}"),
        }
    }

    /// packgate over a network URL instead of stdio, and git's upload-pack behind
    /// `reference_url` if given (the client follows tags differently over HTTP).
    fn over(mut self, url: String, reference_url: Option<String>) -> Self {
        self.context = format!("{}, {url}", self.context);
        self.packgate_url = url;
        self.packgate_option = None;
        if let Some(reference_url) = reference_url {
            self.reference_url = reference_url;
            self.reference_option = None;
        }
        self
    }

    /// `git clone <args>` into both, then compare.
    fn clone(&self, args: &[&str]) {
        let protocol = format!("protocol.version={}", self.protocol);
        self.dir
            .git(self.git)
            .args(["-c", &protocol, "clone", "--no-checkout"])
            .args(args)
            .args(self.reference_option.iter())
            .arg(&self.reference_url)
            .arg(&self.reference)
            .run();
        self.dir
            .git(self.git)
            .args(["-c", &protocol, "clone", "--no-checkout"])
            .args(args)
            .args(self.packgate_option.iter())
            .arg(&self.packgate_url)
            .arg(&self.ours)
            .run();
        self.compare(&format!("clone {args:?}"));
    }

    /// `git fetch <args>` in both, then compare.
    fn fetch(&self, args: &[&str]) {
        let protocol = format!("protocol.version={}", self.protocol);
        self.dir
            .git(self.git)
            .current_dir(&self.reference)
            .args(["-c", &protocol, "fetch"])
            .args(self.reference_option.iter())
            .args(args)
            .run();
        self.dir
            .git(self.git)
            .current_dir(&self.ours)
            .args(["-c", &protocol, "fetch"])
            .args(self.packgate_option.iter())
            .args(args)
            .run();
        self.compare(&format!("fetch {args:?}"));
    }

    fn compare(&self, step: &str) {
        let context = format!("{}, {step}", self.context);
        assert_eq!(
            shallow_file(&self.ours),
            shallow_file(&self.reference),
            "{context}: .git/shallow differs from git's"
        );
        let (ours_repo, reference_repo) = (self.ours.join(".git"), self.reference.join(".git"));
        let (ours, reference) = (
            present_objects(self.dir, self.git, &ours_repo),
            present_objects(self.dir, self.git, &reference_repo),
        );
        assert!(
            ours == reference,
            "{context}: objects differ: {} only through packgate, {} only through git",
            ours.difference(&reference).count(),
            reference.difference(&ours).count()
        );
        assert_same_refs(
            &refs(self.dir, self.git, &ours_repo, &[]),
            &refs(self.dir, self.git, &reference_repo, &[]),
            &context,
        );
        fsck(self.dir, self.git, &ours_repo);
    }
}

/// The lines of a clone's `.git/shallow`, sorted; empty without one.
fn shallow_file(clone: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(clone.join(".git/shallow"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

fn rev_parse(dir: &Dir, git: &Git, repo: &Path, revision: &str) -> String {
    dir.git_in(git, repo)
        .args(["rev-parse", "--verify", revision])
        .run()
        .stdout_text()
        .trim()
        .to_owned()
}

/// The committer date of `revision`, as `@<seconds>` for `--shallow-since`.
fn date_of(dir: &Dir, git: &Git, repo: &Path, revision: &str) -> String {
    let seconds = dir
        .git_in(git, repo)
        .args(["log", "-1", "--format=%ct", revision])
        .run()
        .stdout_text();
    format!("@{}", seconds.trim())
}

fn append(source: &Path, git: &Git, commits: usize, seed: u64) {
    let append = Append {
        branch: "main".to_owned(),
        commits,
        seed,
        git: git.program.clone(),
        ..Append::default()
    };
    append_commits(source, &append).unwrap_or_else(|err| panic!("appending: {err}"));
}

/// `clone --depth 1`, `--deepen` (deepen-relative), new commits then `--depth`, `--deepen`
/// again and `--unshallow`: every step as git's upload-pack answers it.
#[test]
fn depth_deepen_and_unshallow() {
    for git in Git::all() {
        for protocol in PROTOCOLS {
            let dir = Dir::new("shallow-depth");
            let source = dir.fixture(&preset_spec("small"));
            let twins = Twins::new(&dir, &git, protocol, &source.path, "clone");
            twins.clone(&["--depth", "1"]);
            twins.fetch(&["--deepen=2"]);
            append(&source.path, &git, 4, 31);
            twins.fetch(&["--depth", "3"]);
            twins.fetch(&["--deepen=1"]);
            twins.fetch(&["--unshallow"]);
            assert!(shallow_file(&twins.ours).is_empty(), "{}", twins.context);
        }
    }
}

/// `--shallow-since` and `--shallow-exclude` (deepen-since, deepen-not), then a fetch that
/// deepens by date.
#[test]
fn since_and_exclude() {
    for git in Git::all() {
        for protocol in PROTOCOLS {
            let dir = Dir::new("shallow-since");
            let source = dir.fixture(&preset_spec("small"));
            dir.git_in(&git, &source.path)
                .args(["tag", "exclude-here", "main~6"])
                .run();
            let since = date_of(&dir, &git, &source.path, "main~4");
            let twins = Twins::new(&dir, &git, protocol, &source.path, "since");
            twins.clone(&["--single-branch", &format!("--shallow-since={since}")]);
            let earlier = date_of(&dir, &git, &source.path, "main~9");
            twins.fetch(&[&format!("--shallow-since={earlier}")]);

            let twins = Twins::new(&dir, &git, protocol, &source.path, "exclude");
            twins.clone(&["--single-branch", "--shallow-exclude=exclude-here"]);
            twins.fetch(&["--deepen=1"]);
        }
    }
}

/// The same over `packgate serve` (git:// and smart HTTP) and `packgate http-backend` (HTTP
/// being stateless, every v0 request repeats the shallow section); over HTTP the reference is
/// `git http-backend`.
#[test]
fn over_git_and_http() {
    let dir = Dir::new("shallow-serve");
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|err| panic!("mkdir: {err}"));
    let source = dir.fixture(&preset_spec("small"));
    dir.copy_tree(&source.path, &root.join("small.git"));
    let served = root.join("small.git");
    let server = Server::start(&root, Push::Refused);
    let cgi = |program: Option<Vec<std::ffi::OsString>>| {
        CgiHost::start(CgiHostOptions {
            project_root: root.clone(),
            export_all: true,
            program,
            ..CgiHostOptions::default()
        })
    };
    let git_http_backend = cgi(Some(vec![
        Git::newest().program.into(),
        "http-backend".into(),
    ]));
    let packgate_http_backend = cgi(None);
    let reference = Some(git_http_backend.url("small.git"));
    for git in Git::all() {
        for protocol in PROTOCOLS {
            for (name, url, reference) in [
                ("git", server.git_url("small.git"), None),
                ("http", server.http_url("small.git"), reference.clone()),
                (
                    "http-backend",
                    packgate_http_backend.url("small.git"),
                    reference.clone(),
                ),
            ] {
                let name = format!("{}-{protocol}-{name}", git.version.replace(' ', "-"));
                let twins = Twins::new(&dir, &git, protocol, &served, &name).over(url, reference);
                twins.clone(&["--depth", "1"]);
                twins.fetch(&["--deepen=3"]);
                twins.fetch(&["--depth", "2"]);
                twins.fetch(&["--unshallow"]);
            }
        }
    }
}

/// A repository that is itself shallow (`$GIT_DIR/shallow`) is served as git serves it: full
/// and `--depth` clones, then a deepening.
#[test]
fn from_a_shallow_repository() {
    let newest = Git::newest();
    let dir = Dir::new("shallow-source");
    let complete = shared_fixture("small");
    let served = dir.join("shallow-source.git");
    dir.git(&newest)
        .args(["clone", "--bare", "--depth", "5", "--no-single-branch"])
        .arg(file_url(&complete.path))
        .arg(&served)
        .run();
    assert!(!shallow_file_bare(&served).is_empty());
    for git in Git::all() {
        for protocol in PROTOCOLS {
            let name = format!("{}-{protocol}", git.version.replace(' ', "-"));
            let twins = Twins::new(&dir, &git, protocol, &served, &format!("full-{name}"));
            twins.clone(&[]);
            let twins = Twins::new(&dir, &git, protocol, &served, &format!("depth-{name}"));
            twins.clone(&["--depth", "2"]);
            twins.fetch(&["--deepen=10"]);
        }
    }
}

fn shallow_file_bare(repo: &Path) -> String {
    std::fs::read_to_string(repo.join("shallow")).unwrap_or_default()
}

/// How long a bad request may take to be refused.
const TIME_LIMIT: Duration = Duration::from_secs(20);

/// `upload-pack` (packgate's, or git's with `git`) over stdio with `input`, v2 when
/// `protocol` is "2", stateless (`--stateless-rpc`, no advertisement) or not.
fn upload_pack(
    dir: &Dir,
    git: Option<&Git>,
    repo: &Path,
    protocol: &str,
    stateless: bool,
    input: Vec<u8>,
) -> Output {
    let mut command = match git {
        Some(git) => dir.git(git).arg("upload-pack"),
        None => dir.packgate().arg("upload-pack"),
    };
    if protocol == "2" {
        command = command.env("GIT_PROTOCOL", "version=2");
    }
    if stateless {
        command = command.arg("--stateless-rpc");
    }
    command.arg(repo).stdin(input).timeout(TIME_LIMIT).output()
}

/// A v2 fetch request with `arguments`, and a v0 want section with the same lines.
fn requests(tip: &str, arguments: &[String]) -> [(&'static str, Vec<u8>); 2] {
    let mut v2 = vec![
        line("command=fetch\n"),
        DELIM.to_vec(),
        line(format!("want {tip}\n")),
    ];
    let mut v0 = vec![line(format!(
        "want {tip} multi_ack_detailed side-band-64k\n"
    ))];
    for argument in arguments {
        v2.push(line(format!("{argument}\n")));
        v0.push(line(format!("{argument}\n")));
    }
    v2.push(line("done\n"));
    v2.push(FLUSH.to_vec());
    v0.push(FLUSH.to_vec());
    v0.push(line("done\n"));
    [("2", concat(v2)), ("0", concat(v0))]
}

/// Bad shallow requests, v2 and v0, stateless and not: `ERR` with git's words, a non-zero
/// exit, no panic, no hang.
#[test]
fn bad_requests_get_gits_words() {
    let git = Git::newest();
    let dir = Dir::new("shallow-bad");
    let source = shared_fixture("small");
    let tip = rev_parse(&dir, &git, &source.path, "main");
    let tree = rev_parse(&dir, &git, &source.path, "main^{tree}");
    let cases: Vec<(Vec<String>, String)> = vec![
        (vec!["deepen 0".into()], "Invalid deepen: deepen 0".into()),
        (vec!["deepen -1".into()], "Invalid deepen: deepen -1".into()),
        (
            vec!["deepen-since x1".into()],
            "Invalid deepen-since: deepen-since x1".into(),
        ),
        (
            vec!["deepen-not refs/heads/no-such-branch".into()],
            "git upload-pack: ambiguous deepen-not: deepen-not refs/heads/no-such-branch".into(),
        ),
        (
            vec!["deepen 1".into(), "deepen-since 1".into()],
            "git upload-pack: deepen and deepen-since (or deepen-not) cannot be used together"
                .into(),
        ),
        (
            vec!["deepen-since 99999999999".into()],
            "no commits selected for shallow requests".into(),
        ),
        (
            vec![format!("shallow {tree}")],
            format!("invalid shallow object {tree}"),
        ),
        (
            vec!["shallow 12345".into()],
            "invalid shallow line: shallow 12345".into(),
        ),
    ];
    for (arguments, expected) in &cases {
        for (protocol, request) in requests(&tip, arguments) {
            for stateless in [true, false] {
                let context = format!("{arguments:?}, protocol {protocol}, stateless {stateless}");
                let output = upload_pack(
                    &dir,
                    None,
                    &source.path,
                    protocol,
                    stateless,
                    request.clone(),
                );
                assert!(!output.status.success(), "{context}: succeeded: {output}");
                assert!(
                    !output.panicked() && output.signalled().is_none(),
                    "{context}: {output}"
                );
                let response = if stateless {
                    output.stdout.clone()
                } else {
                    split_advertisement(&output.stdout)
                        .unwrap_or_else(|| panic!("{context}: no advertisement: {output}"))
                        .1
                        .to_vec()
                };
                assert_eq!(
                    error_reason(&response).as_deref(),
                    Some(expected.as_str()),
                    "{context}: {output}"
                );
            }
        }
    }
}

/// A stateless v0 client reads the shallow section and hangs up before its haves (as
/// `git fetch` over HTTP does): a normal end, and the section is git's, line for line. The
/// same request over v2 gets git's `shallow-info` section.
#[test]
fn shallow_sections_match_gits() {
    let git = Git::newest();
    let dir = Dir::new("shallow-section");
    let source = shared_fixture("small");
    let tip = rev_parse(&dir, &git, &source.path, "main");
    let client_shallow = rev_parse(&dir, &git, &source.path, "main~1");
    let since = date_of(&dir, &git, &source.path, "main~3");
    let argument_sets: Vec<Vec<String>> = vec![
        vec!["deepen 3".into()],
        vec![format!("shallow {client_shallow}"), "deepen 4".into()],
        vec![
            format!("shallow {client_shallow}"),
            "deepen 2147483647".into(),
        ],
        vec![format!("deepen-since {}", &since[1..])],
        vec![format!("shallow {client_shallow}")],
    ];
    for arguments in &argument_sets {
        for (protocol, request) in requests(&tip, arguments) {
            let request = if protocol == "0" {
                // Up to the want section's flush: the client hangs up after the shallow lines.
                let end = request.len() - line("done\n").len();
                request[..end].to_vec()
            } else {
                request
            };
            let context = format!("{arguments:?}, protocol {protocol}");
            let ours = upload_pack(&dir, None, &source.path, protocol, true, request.clone());
            let theirs = upload_pack(&dir, Some(&git), &source.path, protocol, true, request);
            assert!(ours.status.success(), "{context}: {ours}");
            assert!(theirs.status.success(), "{context}: git: {theirs}");
            let section = |output: &Output| -> Vec<String> {
                let (packets, _) = decode(&output.stdout);
                let mut text = lines(&packets);
                if protocol == "2" {
                    // Up to the packfile section.
                    text.truncate(text.iter().position(|l| l == "packfile").unwrap_or(0));
                } else {
                    text.truncate(
                        text.iter()
                            .position(|l| !l.contains("shallow "))
                            .unwrap_or(text.len()),
                    );
                }
                text
            };
            assert_eq!(section(&ours), section(&theirs), "{context}");
        }
    }
}
