//! Negotiation against repositories built by git, with `git upload-pack` as the reference.

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::OnceLock,
};

use super::*;

/// A bare repository built with `git fast-import`.
pub(crate) struct Repo {
    _dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
}

pub(crate) fn git(
    cwd: &std::path::Path,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &str)],
) -> Vec<u8> {
    let mut child = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "git {args:?} in {cwd:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

impl Repo {
    fn git(&self, args: &[&str]) -> String {
        String::from_utf8(git(&self.path, args, None, &[])).unwrap()
    }

    fn id(&self, rev: &str) -> ObjectId {
        ObjectId::from_hex(self.git(&["rev-parse", "--verify", rev]).trim().as_bytes()).unwrap()
    }

    pub(crate) fn db(&self) -> gix_odb::Handle {
        gix_odb::at(self.path.join("objects"), gix_hash::Kind::Sha1).unwrap()
    }

    fn tag(&self, name: &str, target: ObjectId, kind: &str) {
        let tag = format!(
            "object {target}\ntype {kind}\ntag {name}\ntagger T <t@example.com> 1700000000 +0000\n\n{name}\n"
        );
        let id = git(&self.path, &["mktag"], Some(tag.as_bytes()), &[]);
        let id = String::from_utf8(id).unwrap();
        self.git(&["update-ref", &format!("refs/tags/{name}"), id.trim()]);
    }

    /// One stateless protocol-v2 `fetch` round with `git upload-pack`: its ACKs and `ready`.
    fn upload_pack(&self, wants: &[ObjectId], haves: &[ObjectId]) -> Acknowledgments {
        fn pkt(out: &mut Vec<u8>, line: &str) {
            write!(out, "{:04x}{line}", line.len() + 4).unwrap();
        }
        let mut request = Vec::new();
        pkt(&mut request, "command=fetch\n");
        request.extend_from_slice(b"0001");
        for want in wants {
            pkt(&mut request, &format!("want {want}\n"));
        }
        for have in haves {
            pkt(&mut request, &format!("have {have}\n"));
        }
        request.extend_from_slice(b"0000");
        let response = git(
            &self.path,
            &[
                "-c",
                "uploadpack.allowAnySHA1InWant=true",
                "upload-pack",
                "--stateless-rpc",
                ".",
            ],
            Some(&request),
            &[("GIT_PROTOCOL", "version=2")],
        );
        let mut acknowledgments = Acknowledgments::default();
        let mut rest = response.as_slice();
        loop {
            let len = usize::from_str_radix(std::str::from_utf8(&rest[..4]).unwrap(), 16).unwrap();
            if len < 4 {
                break;
            }
            let line = std::str::from_utf8(&rest[4..len]).unwrap().trim_end();
            rest = &rest[len..];
            match line.split_once(' ') {
                Some(("ACK", id)) => acknowledgments
                    .common
                    .push(ObjectId::from_hex(id.as_bytes()).unwrap()),
                _ if line == "ready" => acknowledgments.ready = true,
                _ => assert!(matches!(line, "acknowledgments" | "NAK"), "{line}"),
            }
        }
        acknowledgments
    }
}

/// `main` is c0…c9 with a tag on c7; `topic` forks at c4 and is merged into `merged`; `side`
/// forks at c3 and is newer than all of main; `skewed` forks at c2 with a commit dated before
/// c2; `orphan` is an unrelated, very old commit.
pub(crate) fn fixture() -> &'static Repo {
    static REPO: OnceLock<Repo> = OnceLock::new();
    REPO.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        git(
            dir.path(),
            &["init", "--quiet", "--bare", "repo.git"],
            None,
            &[],
        );
        let path = dir.path().join("repo.git");
        let mut stream = String::new();
        let mut mark = 0;
        let mut commit = |stream: &mut String, branch: &str, time: u64, parents: &[usize]| {
            mark += 1;
            stream.push_str(&format!(
                "commit refs/heads/{branch}\nmark :{mark}\n\
                 author A <a@example.com> {time} +0000\ncommitter C <c@example.com> {time} +0000\n\
                 data 2\n{mark}\n"
            ));
            if let Some((first, rest)) = parents.split_first() {
                stream.push_str(&format!("from :{first}\n"));
                for parent in rest {
                    stream.push_str(&format!("merge :{parent}\n"));
                }
            }
            stream.push_str(&format!(
                "M 100644 inline file{}\ndata 3\n{mark:>3}\n\n",
                mark % 3
            ));
            mark
        };
        let base = 1_600_000_000;
        let mut main = Vec::new();
        for n in 0..10u64 {
            let parents: Vec<usize> = main.last().copied().into_iter().collect();
            main.push(commit(&mut stream, "main", base + n * 1000, &parents));
        }
        let mut topic = main[4];
        for n in 0..3 {
            topic = commit(&mut stream, "topic", base + 4500 + n * 100, &[topic]);
        }
        commit(&mut stream, "merged", base + 9500, &[main[9], topic]);
        let mut side = main[3];
        for n in 0..3 {
            side = commit(&mut stream, "side", base + 20_000 + n * 100, &[side]);
        }
        let mut skewed = main[2];
        for time in [base + 2500, base + 100, base + 3000, base + 3100] {
            skewed = commit(&mut stream, "skewed", time, &[skewed]);
        }
        commit(&mut stream, "orphan", base - 1_000_000, &[]);
        git(
            &path,
            &["fast-import", "--quiet"],
            Some(stream.as_bytes()),
            &[],
        );
        let repo = Repo { _dir: dir, path };
        repo.tag("v7", repo.id("main~2"), "commit");
        repo.tag("v7-of-v7", repo.id("v7"), "tag");
        repo.tag("tree-tag", repo.id("main^{tree}"), "tree");
        repo
    })
}

fn unknown(n: u8) -> ObjectId {
    ObjectId::from_hex(format!("{n:02x}").repeat(20).as_bytes()).unwrap()
}

/// Resolve `rev`; names starting with `?` are unknown objects.
pub(crate) fn resolve(repo: &Repo, rev: &str) -> ObjectId {
    match rev.strip_prefix('?') {
        Some(n) => unknown(n.parse().unwrap()),
        None => repo.id(rev),
    }
}

/// One round: the same ACKs and `ready` as `git upload-pack`, and `expect_ready`.
fn check(wants: &[&str], haves: &[&str], expect_ready: bool) {
    let repo = fixture();
    let wants: Vec<ObjectId> = wants.iter().map(|rev| resolve(repo, rev)).collect();
    let haves: Vec<ObjectId> = haves.iter().map(|rev| resolve(repo, rev)).collect();
    let mut negotiation = Negotiation::new(wants.clone());
    let ours = negotiation.process_haves(&repo.db(), &haves).unwrap();
    let git = repo.upload_pack(&wants, &haves);
    assert_eq!(
        ours, git,
        "wants {wants:?}, haves {haves:?}: differs from git"
    );
    assert_eq!(ours.ready, expect_ready, "wants {wants:?}, haves {haves:?}");
}

#[test]
fn acknowledges_known_haves_in_order() {
    check(&["main"], &["main~4"], true);
    check(&["main"], &["?1", "main~4", "?2", "main~6"], true);
    check(&["main"], &["?1", "?2"], false);
    check(&["main"], &["main~6", "main~4", "main~6"], true);
}

#[test]
fn ready_only_when_every_want_connects() {
    check(&["main", "side"], &["main~1"], false);
    check(&["main", "side"], &["main~1", "side~1"], true);
    check(&["main", "side"], &["main~6"], true);
    check(&["main", "topic", "side", "merged"], &["main~8"], true);
    check(&["main"], &["side"], false);
}

#[test]
fn cutoff_at_the_oldest_have() {
    // skewed~2 claims to be older than main~7, the have it descends from: the walk stops there.
    check(&["skewed"], &["main~7"], false);
    // An older have moves the cutoff.
    check(&["skewed"], &["main~7", "orphan"], true);
    // side is newer than all of main: main's commits are below the cutoff.
    check(&["merged"], &["side~2"], false);
    check(&["merged"], &["side~2", "main~1"], true);
}

#[test]
fn tag_wants() {
    check(&["v7"], &["main~3"], true);
    check(&["v7-of-v7"], &["main~3"], true);
    check(&["v7-of-v7"], &["side"], false);
    // Trees can't be judged by ancestry: any common have will do.
    check(&["tree-tag"], &["orphan"], true);
    check(&["tree-tag", "main"], &["orphan"], false);
    check(&["tree-tag"], &["?3"], false);
}

#[test]
fn merges() {
    check(&["merged"], &["topic~1"], true);
    check(&["merged"], &["main~3"], true);
    check(&["merged"], &["merged"], true);
    check(&["merged"], &["orphan"], false);
}

#[test]
fn non_commit_haves() {
    check(&["main"], &["main^{tree}"], false);
    check(&["main"], &["main:file1", "main~1"], true);
    check(&["tree-tag"], &["main:file1"], true);
    check(&["main"], &["v7"], false);
}

#[test]
fn rounds_accumulate() {
    let repo = fixture();
    let db = repo.db();
    let mut negotiation = Negotiation::new(vec![repo.id("main"), repo.id("side")]);
    let first = negotiation
        .process_haves(&db, &[unknown(1), repo.id("main~2")])
        .unwrap();
    assert_eq!(first.common, [repo.id("main~2")]);
    assert!(!first.ready);
    let second = negotiation
        .process_haves(&db, &[repo.id("main~2"), repo.id("side~1")])
        .unwrap();
    // A have the negotiation already knew is not acknowledged again, as in git.
    assert_eq!(second.common, [repo.id("side~1")]);
    assert!(second.ready);
    assert_eq!(negotiation.common(), [repo.id("main~2"), repo.id("side~1")]);
    let empty = Negotiation::new(vec![repo.id("main")])
        .process_haves(&db, &[])
        .unwrap();
    assert_eq!(empty, Acknowledgments::default());
}

#[test]
fn parents_of_earlier_haves_are_not_acknowledged() {
    // git's v2 acknowledges the haves it did not know the client had: a parent of a have
    // sent before it is common, but not news.
    let repo = fixture();
    let db = repo.db();
    let mut negotiation = Negotiation::new(vec![repo.id("main")]);
    let acknowledgments = negotiation
        .process_haves(
            &db,
            &[repo.id("main~1"), repo.id("main~2"), repo.id("main~4")],
        )
        .unwrap();
    assert_eq!(
        acknowledgments.common,
        [repo.id("main~1"), repo.id("main~4")]
    );
    assert_eq!(
        negotiation.common(),
        [repo.id("main~1"), repo.id("main~2"), repo.id("main~4")]
    );
}

#[test]
fn reachable() {
    let repo = fixture();
    let db = repo.db();
    let check = |tips: &[&str], targets: &[&str], expected: &[&str]| {
        let tips: Vec<ObjectId> = tips.iter().map(|rev| resolve(repo, rev)).collect();
        let targets: Vec<ObjectId> = targets.iter().map(|rev| resolve(repo, rev)).collect();
        let mut actual: Vec<ObjectId> = reachable_from(&db, &tips, &targets)
            .unwrap()
            .into_iter()
            .collect();
        let mut expected: Vec<ObjectId> = expected.iter().map(|rev| resolve(repo, rev)).collect();
        actual.sort();
        expected.sort();
        assert_eq!(actual, expected, "tips {tips:?}, targets {targets:?}");
        // git: a commit is reachable when `rev-list <target> --not <tips>` lists nothing.
        for target in &targets {
            let is_commit = repo.git(&["cat-file", "-t", &target.to_string()]).trim() == "commit";
            if !is_commit || tips.contains(target) {
                continue;
            }
            let mut args = vec!["rev-list".to_string(), target.to_string(), "--not".into()];
            args.extend(tips.iter().map(ToString::to_string));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let unreachable = !repo.git(&args).is_empty();
            assert_eq!(
                unreachable,
                !expected.contains(target),
                "git disagrees on {target}"
            );
        }
    };
    check(&["main"], &["main~3", "side", "main"], &["main~3", "main"]);
    check(
        &["side", "topic"],
        &["main~3", "main~4", "main~5", "topic~1"],
        &["main~5", "topic~1"],
    );
    check(
        &["v7-of-v7"],
        &["main~2", "main~5", "main"],
        &["main~2", "main~5"],
    );
    check(&["main"], &["main^{tree}", "main~1^{tree}", "v7"], &[]);
    check(&["main^{tree}"], &["main^{tree}", "main"], &["main^{tree}"]);
    check(&["merged"], &["skewed~3", "orphan"], &[]);
    check(
        &["skewed"],
        &["skewed~3", "main~7", "main~8"],
        &["skewed~3", "main~7", "main~8"],
    );
}
