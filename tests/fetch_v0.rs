//! Protocol v0 and v1 fetches with every git and `protocol.version=0` and `=1`: through
//! `packgate upload-pack` over stdio (file://) clones, incremental fetches (tags included), a
//! fork far ahead of its parent and an empty repository; the same over git:// (`serve`,
//! `daemon`) and smart HTTP (`serve`, `http-backend` behind a CGI host; plain and gzip
//! request bodies).

use std::path::Path;

use packgate_fixture::{append_commits, Append};

use crate::cgi_host::{CgiHost, CgiHostOptions};
use crate::daemon::Daemon;
use crate::fetch::{
    assert_fetched_everything, fetch_and_count, fetch_and_count_traced, move_source_forward,
};
use crate::http::{Push, Server};
use crate::util::{
    assert_same_refs, file_url, fsck, git_upload_pack_option, packgate_upload_pack_command,
    packgate_upload_pack_option, preset_spec, refs, shared_fixture, Dir, Git,
};

const VERSIONS: [&str; 2] = ["0", "1"];

/// `through_git` and `through_packgate`: bare copies of `served` whose only ref is `main`,
/// 300 commits ahead of the served `main` (a fork far ahead of its parent), fetching
/// `+refs/*:refs/*`. Fetching then takes many rounds of haves before one is common.
fn fork(dir: &Dir, git: &Git, served: &Path, through_git: &Path, through_packgate: &Path) {
    dir.git(git)
        .args(["-c", "protocol.version=2", "clone", "--bare"])
        .arg(git_upload_pack_option(git))
        .arg(file_url(served))
        .arg(through_git)
        .run();
    let names = dir
        .git_in(git, through_git)
        .args(["for-each-ref", "--format=%(refname)"])
        .run()
        .stdout_text();
    for name in names.lines().filter(|name| *name != "refs/heads/main") {
        dir.git_in(git, through_git)
            .args(["update-ref", "-d", name])
            .run();
    }
    let ahead = Append {
        branch: "main".to_owned(),
        commits: 300,
        seed: 77,
        git: git.program.clone(),
        ..Append::default()
    };
    append_commits(through_git, &ahead).unwrap_or_else(|err| panic!("fork: {err}"));
    dir.copy_tree(through_git, through_packgate);
    for repo in [through_git, through_packgate] {
        dir.git_in(git, repo)
            .args(["config", "remote.origin.fetch", "+refs/*:refs/*"])
            .run();
    }
}

/// After the same fork fetched through git's upload-pack (`through.0`, fetched here) and
/// through packgate (`through.1`, which received `sent.0` objects over protocol `sent.1`):
/// packgate sent no more objects than git, and the fork has every ref of `served`.
fn assert_fetched_like_git(
    dir: &Dir,
    git: &Git,
    through: (&Path, &Path),
    served: &Path,
    sent: (usize, &str),
    context: &str,
) {
    let (through_git, through_packgate) = through;
    let (by_packgate, version) = sent;
    let by_git = fetch_and_count(dir, git, through_git, git_upload_pack_option(git), version);
    assert!(
        by_packgate <= by_git,
        "{context}: packgate sent {by_packgate} objects, git {by_git}"
    );
    assert_same_refs(
        &refs(dir, git, through_packgate, &[]),
        &refs(dir, git, served, &[]),
        context,
    );
}

/// How many rounds of haves the client sent: the `NAK`s it read (multi_ack and
/// multi_ack_detailed answer each round's flush with one), from `GIT_TRACE_PACKET`.
fn rounds(output: &crate::util::Output) -> usize {
    output
        .stderr_text()
        .lines()
        .filter(|line| line.ends_with("< NAK"))
        .count()
}

/// Bare, mirror and work-tree clones hold the source's refs and pass fsck; a later fetch in
/// the work tree after the source moved forward brings its branches and tags.
#[test]
fn clone_and_fetch() {
    for git in Git::all() {
        for version in VERSIONS {
            let context = format!("{git}, protocol.version={version}");
            let dir = Dir::new("v0-clone");
            let source = dir.fixture(&preset_spec("small"));
            let protocol = format!("protocol.version={version}");
            for (kind, flag) in [("bare", "--bare"), ("mirror", "--mirror")] {
                let clone = dir.join(&format!("{kind}.git"));
                dir.git(&git)
                    .args(["-c", &protocol, "clone", flag])
                    .arg(packgate_upload_pack_option())
                    .arg(file_url(&source.path))
                    .arg(&clone)
                    .run();
                let patterns: &[&str] = if kind == "bare" {
                    &["refs/heads", "refs/tags"]
                } else {
                    &[]
                };
                assert_same_refs(
                    &refs(&dir, &git, &clone, patterns),
                    &refs(&dir, &git, &source.path, patterns),
                    &format!("{context}, {kind} clone"),
                );
                fsck(&dir, &git, &clone);
            }

            let clone = dir.join("work");
            dir.git(&git)
                .args(["-c", &protocol, "clone"])
                .arg(packgate_upload_pack_option())
                .arg(file_url(&source.path))
                .arg(&clone)
                .run();
            dir.git(&git)
                .current_dir(&clone)
                .args(["config", "remote.origin.uploadpack"])
                .arg(packgate_upload_pack_command())
                .run();
            move_source_forward(&dir, &git, &source.path);
            dir.git(&git)
                .current_dir(&clone)
                .args(["-c", &protocol, "fetch", "--prune", "origin"])
                .run();
            assert_fetched_everything(
                &dir,
                &git,
                &clone.join(".git"),
                &source.path,
                &format!("{context}, fetch"),
            );
        }
    }
}

/// A client that is a fork far ahead of its parent (hundreds of commits the server lacks,
/// so negotiation takes many rounds of haves) fetches the parent's new commits: packgate
/// sends no more objects than git's upload-pack does for the same fetch.
#[test]
fn fork_far_ahead_fetches_no_more_objects_than_git() {
    for git in Git::all() {
        for version in VERSIONS {
            let context = format!("{git}, protocol.version={version}");
            let dir = Dir::new("v0-fork");
            let source = dir.fixture(&preset_spec("small"));
            let through_git = dir.join("through-git.git");
            let through_packgate = dir.join("through-packgate.git");
            fork(&dir, &git, &source.path, &through_git, &through_packgate);
            move_source_forward(&dir, &git, &source.path);
            let (by_packgate, output) = fetch_and_count_traced(
                &dir,
                &git,
                &through_packgate,
                packgate_upload_pack_option(),
                version,
            );
            assert!(rounds(&output) >= 3, "{context}: few rounds: {output}");
            assert_fetched_like_git(
                &dir,
                &git,
                (&through_git, &through_packgate),
                &source.path,
                (by_packgate, version),
                &context,
            );
            fsck(&dir, &git, &through_packgate);
        }
    }
}

/// Cloning an empty repository succeeds (`capabilities^{}`), and so does fetching it.
#[test]
fn empty_repository() {
    for git in Git::all() {
        for version in VERSIONS {
            let dir = Dir::new("v0-empty");
            let source = dir.join("empty.git");
            dir.git(&git)
                .args(["init", "--quiet", "--bare"])
                .arg(&source)
                .run();
            let clone = dir.join("clone");
            let output = dir
                .git(&git)
                .args(["-c", &format!("protocol.version={version}"), "clone"])
                .arg(packgate_upload_pack_option())
                .arg(file_url(&source))
                .arg(&clone)
                .run();
            assert!(
                output.stderr_text().contains("empty repository"),
                "{git}, protocol.version={version}: {output}"
            );
            fsck(&dir, &git, &clone.join(".git"));
        }
    }
}

/// The v0/v1 reference advertisement is git's, line for line (peeled tags, `symref=`,
/// `version 1`, `no-done` only for `--advertise-refs`, a shallow repository's `shallow`
/// lines), capabilities included, except for the agent.
#[test]
fn advertisement_matches_git() {
    let git = Git::newest();
    let dir = Dir::new("v0-advertisement");
    let source = dir.fixture(&preset_spec("small"));
    dir.git_in(&git, &source.path)
        .args(["tag", "-a", "-m", "Release", "v9", "main"])
        .run();
    let empty = dir.join("empty.git");
    dir.git(&git)
        .args(["init", "--quiet", "--bare"])
        .arg(&empty)
        .run();
    // A shallow repository advertises its shallow commits after the refs.
    let shallow = dir.join("shallow.git");
    dir.git(&git)
        .args([
            "clone",
            "--quiet",
            "--bare",
            "--depth",
            "3",
            "--no-single-branch",
        ])
        .arg(crate::util::file_url(&source.path))
        .arg(&shallow)
        .run();
    let normalize = |stdout: &[u8]| -> String {
        let text = String::from_utf8_lossy(stdout).into_owned();
        match text.find(" agent=") {
            Some(start) => {
                let end = text[start..].find('\n').map_or(text.len(), |n| start + n);
                format!("{}{}", &text[..start], &text[end..])
            }
            None => text,
        }
    };
    for repo in [&source.path, &empty, &shallow] {
        for protocol in [None, Some("version=1")] {
            for options in [&["--advertise-refs"][..], &[]] {
                let run = |mut command: crate::util::Cmd| {
                    if let Some(protocol) = protocol {
                        command = command.env("GIT_PROTOCOL", protocol);
                    }
                    command
                        .args(options)
                        .arg(repo)
                        .stdin(b"0000".to_vec())
                        .run()
                };
                let ours = run(dir.packgate().arg("upload-pack"));
                let theirs = run(dir.git(&git).arg("upload-pack"));
                let context = format!("{}, {protocol:?}, {options:?}", repo.display());
                assert!(ours.stdout.len() > 50, "{context}: {ours}");
                // Lengths differ with the capabilities: compare the text only.
                let strip = |text: String| -> Vec<String> {
                    text.split('\n')
                        .map(|line| line.get(4..).unwrap_or_default().to_owned())
                        .collect()
                };
                assert_eq!(
                    strip(normalize(&ours.stdout)),
                    strip(normalize(&theirs.stdout)),
                    "{context}"
                );
            }
        }
    }
}

/// For each git and version, against a fresh copy of the `small` preset below `root`
/// (served at `url(name)`): bare, mirror and work-tree clones; a fork 300 commits ahead of
/// the served repository fetches its new commits (many rounds of haves; over HTTP in gzip
/// bodies, the clones' in plain ones) with no more objects than git's upload-pack sends;
/// and a clone of an empty repository.
fn fetch_over(dir: &Dir, root: &Path, url: &dyn Fn(&str) -> String, http: bool, front: &str) {
    let fixture = shared_fixture("small");
    let empty = root.join("empty.git");
    if !empty.exists() {
        dir.git(&Git::newest())
            .args(["init", "--quiet", "--bare"])
            .arg(&empty)
            .run();
    }
    for (n, git) in Git::all().into_iter().enumerate() {
        for version in VERSIONS {
            let context = format!("{front}, {git}, protocol.version={version}");
            let protocol = format!("protocol.version={version}");
            let name = format!("small-{front}-{n}-{version}.git");
            let served = root.join(&name);
            dir.copy_tree(&fixture.path, &served);
            let work = dir.join(&format!("{front}-{n}-{version}"));
            std::fs::create_dir_all(&work).unwrap_or_else(|err| panic!("mkdir: {err}"));

            for flag in ["--bare", "--mirror"] {
                let clone = work.join(format!("clone{flag}.git"));
                let output = dir
                    .git(&git)
                    .env("GIT_TRACE_CURL", "1")
                    .env("GIT_TRACE_CURL_NO_DATA", "1")
                    .args(["-c", &protocol, "clone", flag])
                    .arg(url(&name))
                    .arg(&clone)
                    .run();
                if http {
                    assert!(
                        output.stderr_text().contains("POST /")
                            && !output.stderr_text().contains("Content-Encoding: gzip"),
                        "{context}: the clone should POST a plain body: {output}"
                    );
                }
                assert_same_refs(
                    &refs(dir, &git, &clone, &["refs/heads", "refs/tags"]),
                    &refs(dir, &git, &served, &["refs/heads", "refs/tags"]),
                    &format!("{context}, clone {flag}"),
                );
                fsck(dir, &git, &clone);
            }
            let clone = work.join("work");
            dir.git(&git)
                .args(["-c", &protocol, "clone"])
                .arg(url(&name))
                .arg(&clone)
                .run();
            fsck(dir, &git, &clone.join(".git"));

            let through_git = work.join("through-git.git");
            let through_packgate = work.join("through-packgate.git");
            fork(dir, &git, &served, &through_git, &through_packgate);
            dir.git_in(&git, &through_packgate)
                .args(["config", "remote.origin.url"])
                .arg(url(&name))
                .run();
            move_source_forward(dir, &git, &served);
            // The remote's URL leads to the server; `--upload-pack` would be sent over
            // git:// as the service name, so the option slot gets a harmless repeat.
            let (by_packgate, output) =
                fetch_and_count_traced(dir, &git, &through_packgate, "--prune".to_owned(), version);
            assert!(rounds(&output) >= 3, "{context}: few rounds: {output}");
            if http {
                assert!(
                    output.stderr_text().contains("Content-Encoding: gzip"),
                    "{context}: the fork's haves should come gzip-compressed: {output}"
                );
            }
            assert_fetched_like_git(
                dir,
                &git,
                (&through_git, &through_packgate),
                &served,
                (by_packgate, version),
                &context,
            );
            fsck(dir, &git, &through_packgate);

            let output = dir
                .git(&git)
                .args(["-c", &protocol, "clone"])
                .arg(url("empty.git"))
                .arg(work.join("empty"))
                .run();
            assert!(
                output.stderr_text().contains("empty repository"),
                "{context}: {output}"
            );
        }
    }
}

#[test]
fn over_serve_git_protocol_and_http() {
    let dir = Dir::new("v0-serve");
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|err| panic!("mkdir: {err}"));
    let server = Server::start(&root, Push::Refused);
    fetch_over(
        &dir,
        &root,
        &|name| server.git_url(name),
        false,
        "serve-git",
    );
    fetch_over(
        &dir,
        &root,
        &|name| server.http_url(name),
        true,
        "serve-http",
    );
}

#[test]
fn over_daemon() {
    let dir = Dir::new("v0-daemon");
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|err| panic!("mkdir: {err}"));
    let daemon = Daemon::start(
        &dir,
        &["--export-all", &format!("--base-path={}", root.display())],
    );
    fetch_over(
        &dir,
        &root,
        &|name| daemon.url(&format!("/{name}")),
        false,
        "daemon",
    );
}

#[test]
fn over_http_backend() {
    let dir = Dir::new("v0-http-backend");
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|err| panic!("mkdir: {err}"));
    let host = CgiHost::start(CgiHostOptions {
        project_root: root.clone(),
        export_all: true,
        ..CgiHostOptions::default()
    });
    fetch_over(&dir, &root, &|name| host.url(name), true, "http-backend");
}
