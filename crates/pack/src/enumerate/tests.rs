use std::{
    collections::BTreeSet,
    io::Write as _,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use gix_hashtable::HashMap;

use super::*;

/// A bare repository built by `git fast-import`, with the real `git` as the reference.
struct Repo {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo.git");
        let repo = Repo { _dir: dir, path };
        repo.git_in(
            repo._dir.path(),
            &["init", "--quiet", "--bare", "repo.git"],
            None,
        );
        repo
    }

    fn git_in(&self, cwd: &Path, args: &[&str], stdin: Option<&[u8]>) -> String {
        crate::test_git::git_text(cwd, args, stdin)
    }

    fn git(&self, args: &[&str]) -> String {
        self.git_in(&self.path, args, None)
    }

    fn id(&self, rev: &str) -> ObjectId {
        ObjectId::from_hex(self.git(&["rev-parse", "--verify", rev]).trim().as_bytes()).unwrap()
    }

    fn db(&self) -> gix_odb::Handle {
        let mut db = gix_odb::at(self.path.join("objects"), gix_hash::Kind::Sha1).unwrap();
        db.set_pack_cache(|| Box::new(gix_pack::cache::lru::StaticLinkedList::<64>::default()));
        db
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors.
    fn is_ancestor(&self, ancestor: &ObjectId, descendant: &ObjectId) -> bool {
        std::process::Command::new("git")
            .args(["merge-base", "--is-ancestor"])
            .arg(ancestor.to_string())
            .arg(descendant.to_string())
            .current_dir(&self.path)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .status()
            .unwrap()
            .success()
    }

    /// `git rev-list --objects`, ids only, in git's order.
    fn rev_list(&self, wants: &[ObjectId], haves: &[ObjectId]) -> Vec<ObjectId> {
        let mut args = vec!["rev-list".to_string(), "--objects".to_string()];
        args.extend(wants.iter().map(ToString::to_string));
        if !haves.is_empty() {
            args.push("--not".into());
            args.extend(haves.iter().map(ToString::to_string));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.git(&args)
            .lines()
            .map(|line| ObjectId::from_hex(&line.as_bytes()[..40]).unwrap())
            .collect()
    }

    /// The objects `git pack-objects --revs --sparse` packs for `wants` minus `haves`: what
    /// `git upload-pack` sends by default (`pack.useSparse`).
    fn pack_objects_sparse(&self, wants: &[ObjectId], haves: &[ObjectId]) -> BTreeSet<ObjectId> {
        let out = tempfile::tempdir().unwrap();
        let mut input = String::new();
        for want in wants {
            input.push_str(&format!("{want}\n"));
        }
        for have in haves {
            input.push_str(&format!("^{have}\n"));
        }
        let base = out.path().join("p");
        let hash = self.git_in(
            &self.path,
            &[
                "pack-objects",
                "--revs",
                "--sparse",
                "-q",
                base.to_str().unwrap(),
            ],
            Some(input.as_bytes()),
        );
        let idx = std::fs::read(out.path().join(format!("p-{}.idx", hash.trim()))).unwrap();
        self.git_in(&self.path, &["show-index"], Some(&idx))
            .lines()
            .map(|line| ObjectId::from_hex(line.split(' ').nth(1).unwrap().as_bytes()).unwrap())
            .collect()
    }

    /// Make an annotated tag object of `target` (of `kind`) and return its id.
    fn tag(&self, name: &str, target: ObjectId, kind: &str) -> ObjectId {
        let tag = format!(
            "object {target}\ntype {kind}\ntag {name}\ntagger T Agger <tagger@example.com> 1700000000 +0000\n\n{name}\n"
        );
        let id = self.git_in(&self.path, &["mktag"], Some(tag.as_bytes()));
        let id = ObjectId::from_hex(id.trim().as_bytes()).unwrap();
        self.git(&["update-ref", &format!("refs/tags/{name}"), &id.to_string()]);
        id
    }
}

/// A `git fast-import` stream.
#[derive(Default)]
struct Stream {
    out: Vec<u8>,
    mark: usize,
}

enum Change<'a> {
    File(&'a str, String),
    Mode(&'a str, &'a str, String),
    Gitlink(&'a str),
    Delete(&'a str),
    DeleteAll,
}

impl Stream {
    fn blob(&mut self, data: &str) -> usize {
        self.mark += 1;
        write!(
            self.out,
            "blob\nmark :{}\ndata {}\n{data}\n",
            self.mark,
            data.len()
        )
        .unwrap();
        self.mark
    }

    fn commit(
        &mut self,
        branch: &str,
        time: u64,
        parents: &[usize],
        changes: &[Change<'_>],
    ) -> usize {
        let mut lines = Vec::new();
        for change in changes {
            match change {
                Change::File(path, content) => {
                    let blob = self.blob(content);
                    lines.push(format!("M 100644 :{blob} {path}"));
                }
                Change::Mode(mode, path, content) => {
                    let blob = self.blob(content);
                    lines.push(format!("M {mode} :{blob} {path}"));
                }
                Change::Gitlink(path) => {
                    lines.push(format!("M 160000 {} {path}", "5".repeat(40)));
                }
                Change::Delete(path) => lines.push(format!("D {path}")),
                Change::DeleteAll => lines.push("deleteall".into()),
            }
        }
        self.mark += 1;
        let message = format!("commit {}", self.mark);
        write!(
            self.out,
            "commit refs/heads/{branch}\nmark :{}\nauthor A U Thor <a@example.com> {time} +0000\n\
             committer C O Mitter <c@example.com> {time} +0000\ndata {}\n{message}\n",
            self.mark,
            message.len()
        )
        .unwrap();
        if let Some((first, rest)) = parents.split_first() {
            writeln!(self.out, "from :{first}").unwrap();
            for parent in rest {
                writeln!(self.out, "merge :{parent}").unwrap();
            }
        }
        for line in lines {
            writeln!(self.out, "{line}").unwrap();
        }
        writeln!(self.out).unwrap();
        self.mark
    }

    fn reset(&mut self, branch: &str, mark: usize) {
        write!(self.out, "reset refs/heads/{branch}\nfrom :{mark}\n\n").unwrap();
    }
}

/// A history with nested directories, a merged and an unmerged branch, a merge of two
/// branches at once, renames, reverts, deletions, symlinks, executables, a submodule,
/// commits with equal dates, clock skew, an empty tree, and tags of all kinds.
fn fixture() -> &'static Repo {
    static REPO: OnceLock<Repo> = OnceLock::new();
    REPO.get_or_init(|| {
        let repo = Repo::new();
        let mut s = Stream::default();
        let dirs = ["a", "a/b", "a/b/c", "d", "d/e", "f/g/h/i"];
        let mut time = 1_600_000_000;
        let mut initial = Vec::new();
        for (n, dir) in dirs.iter().enumerate() {
            for k in 0..4 {
                initial.push((format!("{dir}/file{k}"), format!("{dir} {k} v0\n")));
            }
            initial.push((
                format!("{dir}/shared"),
                "same content everywhere\n".to_string(),
            ));
            initial.push((format!("{dir}/n{n}"), format!("{n}\n")));
        }
        let changes: Vec<Change<'_>> = initial
            .iter()
            .map(|(path, content)| Change::File(path, content.clone()))
            .chain([
                Change::Mode("100755", "tool.sh", "#!/bin/sh\n".into()),
                Change::Mode("120000", "link", "a/b/file0".into()),
                Change::Gitlink("sub"),
            ])
            .collect();
        let mut main = s.commit("main", time, &[], &changes);
        let mut marks = vec![main];
        for n in 1..160u64 {
            // Commits 40 and 41 share their date with their parent; 90 is older than it.
            if n != 40 && n != 41 {
                time += 100;
            }
            let commit_time = if n == 90 { time - 5000 } else { time };
            let dir = dirs[n as usize % dirs.len()];
            let path = format!("{dir}/file{}", n % 4);
            let mut changes = vec![Change::File(&path, format!("{path} at {n}\n"))];
            let moved;
            if n % 25 == 0 {
                moved = format!("moved/{n}");
                changes.push(Change::File(&moved, "a/b/c file0 v0\n".into()));
            }
            if n == 70 {
                changes.push(Change::File("a/b/c/file1", "a/b/c 1 v0\n".into()));
            }
            if n == 120 {
                changes.push(Change::Delete("d/e"));
            }
            // A file that changes at 140, again at 145, and is reverted at 150.
            if n == 140 || n == 150 {
                changes.push(Change::File("reverted", "as at 140\n".into()));
            }
            if n == 145 {
                changes.push(Change::File("reverted", "as at 145\n".into()));
            }
            main = s.commit("main", commit_time, &[main], &changes);
            marks.push(main);
        }
        // A branch forked at main~130, merged at main~40 together with a second one.
        let mut topic = marks[30];
        let mut topic_time = 1_600_000_000 + 30 * 100;
        for n in 0..20 {
            topic_time += 37;
            let path = format!("topic/t{}", n % 3);
            topic = s.commit(
                "topic",
                topic_time,
                &[topic],
                &[Change::File(&path, format!("t{n}\n"))],
            );
        }
        let other = s.commit(
            "other",
            topic_time + 1,
            &[marks[100]],
            &[
                Change::File("other", "other\n".into()),
                Change::File("a/b/c/file0", "a/b/c 0 v0\n".into()),
            ],
        );
        time += 100;
        main = s.commit(
            "main",
            time,
            &[main, topic, other],
            &[Change::File("merged", "octopus\n".into())],
        );
        // An unmerged branch from main~50, with an empty tree somewhere in its history.
        let mut side = marks[110];
        let mut side_time = 1_600_000_000 + 110 * 100;
        for n in 0..12 {
            side_time += 250;
            let changes = if n == 5 {
                vec![Change::DeleteAll]
            } else {
                vec![Change::File("side", format!("side {n}\n"))]
            };
            side = s.commit("side", side_time, &[side], &changes);
        }
        for n in 0..5 {
            time += 100;
            main = s.commit(
                "main",
                time,
                &[main],
                &[Change::File("a/file0", format!("late {n}\n"))],
            );
        }
        s.reset("main", main);
        s.reset("topic", topic);
        s.reset("side", side);
        s.reset("old", marks[20]);
        repo.git_in(&repo.path, &["fast-import", "--quiet"], Some(&s.out));

        let commit = repo.id("main~30");
        let tag = repo.tag("v1", commit, "commit");
        repo.tag("v1-of-v1", tag, "tag");
        repo.tag("tree-tag", repo.id("main~3^{tree}"), "tree");
        repo.tag("blob-tag", repo.id("main~2:a/b/file1"), "blob");
        repo.git(&[
            "update-ref",
            "refs/tags/light",
            &repo.id("main~60").to_string(),
        ]);
        // For the walks that read commits from it (`check`); git's own use it too.
        repo.git(&["commit-graph", "write", "--reachable"]);
        repo
    })
}

fn run(
    repo: &Repo,
    wants: &[ObjectId],
    haves: &[ObjectId],
    options: EnumerateOptions,
) -> Enumeration {
    enumerate(&repo.db(), wants, haves, &options, &AtomicBool::new(false)).unwrap()
}

fn options(tree_exclusion: TreeExclusion, threads: usize) -> EnumerateOptions {
    EnumerateOptions {
        tree_exclusion,
        thread_limit: Some(threads),
        filter: None,
        shallow: Default::default(),
        commit_graph: None,
        bitmap: None,
        bitmap_boundary_haves: false,
    }
}

/// Compare with git: the same objects in the same order with edges, a subset of them that
/// still holds everything the client lacks with visited commits, the same for any number
/// of threads.
fn check(wants: &[&str], haves: &[&str]) {
    let repo = fixture();
    let wants: Vec<ObjectId> = wants.iter().map(|rev| repo.id(rev)).collect();
    let haves: Vec<ObjectId> = haves.iter().map(|rev| repo.id(rev)).collect();
    let context = format!("wants {wants:?}, haves {haves:?}");

    let git = repo.rev_list(&wants, &haves);
    let edges = run(repo, &wants, &haves, options(TreeExclusion::EdgeCommits, 1));
    assert_eq!(
        edges.objects(),
        git.as_slice(),
        "{context}: not git's objects and order"
    );
    for threads in [2, 3, 8] {
        let parallel = run(
            repo,
            &wants,
            &haves,
            options(TreeExclusion::EdgeCommits, threads),
        );
        assert_eq!(
            parallel.objects(),
            edges.objects(),
            "{context}: {threads} threads differ"
        );
        assert_eq!(
            parallel.client_has(),
            edges.client_has(),
            "{context}: {threads} threads"
        );
    }

    let reachable_from_haves: BTreeSet<ObjectId> = repo.rev_list(&haves, &[]).into_iter().collect();
    let exact: BTreeSet<ObjectId> = repo
        .rev_list(&wants, &[])
        .into_iter()
        .filter(|id| !reachable_from_haves.contains(id))
        .collect();
    let git: BTreeSet<ObjectId> = git.into_iter().collect();
    for threads in [1, 4] {
        let visited = run(
            repo,
            &wants,
            &haves,
            options(TreeExclusion::VisitedCommits, threads),
        );
        let ours: BTreeSet<ObjectId> = visited.objects().iter().copied().collect();
        assert_eq!(ours.len(), visited.len(), "{context}: duplicates");
        assert!(ours.is_subset(&git), "{context}: sends more than git");
        assert!(
            exact.is_subset(&ours),
            "{context}: misses objects the client lacks"
        );
        for id in visited.client_has() {
            assert!(
                reachable_from_haves.contains(id),
                "{context}: client can't have {id}"
            );
            assert!(!visited.contains(id), "{context}: {id} both sent and had");
        }
    }

    // Sparse marking, as `git upload-pack` does by default: git's objects, at least what the
    // client lacks, and nothing it has in both lists.
    let sparse = run(repo, &wants, &haves, options(TreeExclusion::Sparse, 1));
    let ours: BTreeSet<ObjectId> = sparse.objects().iter().copied().collect();
    assert_eq!(ours.len(), sparse.len(), "{context}: sparse: duplicates");
    assert_eq!(
        ours,
        repo.pack_objects_sparse(&wants, &haves),
        "{context}: not the objects of git's sparse pack-objects"
    );
    assert!(exact.is_subset(&ours), "{context}: sparse misses objects");
    for id in sparse.client_has() {
        assert!(
            reachable_from_haves.contains(id),
            "{context}: sparse: client can't have {id}"
        );
        assert!(
            !sparse.contains(id),
            "{context}: sparse: {id} both sent and had"
        );
    }

    // Commits read from the commit-graph walk the same.
    let commit_graph = packgate_object::CommitGraphFile::open(&repo.path.join("objects"));
    assert!(
        commit_graph.is_some(),
        "{context}: the fixture has a commit-graph"
    );
    let from_graph = run(
        repo,
        &wants,
        &haves,
        EnumerateOptions {
            commit_graph,
            ..options(TreeExclusion::EdgeCommits, 2)
        },
    );
    assert_eq!(
        from_graph.objects(),
        edges.objects(),
        "{context}: with the commit-graph"
    );
    assert_eq!(
        from_graph.client_has(),
        edges.client_has(),
        "{context}: with the commit-graph"
    );

    let counts = edges.counts();
    assert_eq!(
        counts.commits + counts.tags + counts.trees + counts.blobs,
        edges.len()
    );
    for id in edges.objects() {
        assert!(edges.contains(id));
    }
}

#[test]
fn clone_everything() {
    let repo = fixture();
    let refs = repo.git(&["for-each-ref", "--format=%(objectname)"]);
    let refs: Vec<&str> = refs.lines().collect();
    check(&refs, &[]);
    let all = run(repo, &[repo.id("main")], &[], EnumerateOptions::default());
    assert!(all.client_has().is_empty());
}

#[test]
fn incremental_fetches() {
    check(&["main"], &["main~1"]);
    check(&["main"], &["main~10"]);
    check(&["main"], &["main~100"]);
    check(&["main", "side"], &["main~30"]);
    check(&["side"], &["main"]);
    check(&["main"], &["side", "old"]);
}

#[test]
fn merges() {
    check(&["main"], &["topic"]);
    check(&["main"], &["other", "topic"]);
    check(&["main~5"], &["main~6"]);
    check(&["main~5^2"], &["main~5^3"]);
    check(&["topic", "other"], &["main~5^1"]);
}

#[test]
fn clock_skew_and_equal_dates() {
    check(&["main~60"], &["main~80"]);
    check(&["main~70"], &["main~75"]);
    check(&["main"], &["main~75"]);
    check(&["main~120"], &["main~130"]);
}

#[test]
fn tags_trees_and_blobs() {
    check(&["v1"], &[]);
    check(&["v1-of-v1"], &["main~100"]);
    check(&["tree-tag", "blob-tag"], &[]);
    check(&["tree-tag", "v1-of-v1", "main"], &["main~2"]);
    check(&["main^{tree}", "main:a/b/file1"], &[]);
    check(&["main"], &["v1-of-v1"]);
    check(&["v1-of-v1"], &["v1"]);
    check(&["main"], &["main~1^{tree}", "main~1:a/b/file0"]);
}

/// The sparse-checkout patterns the filter tests use, as a blob in the fixture.
const SPARSE: &str = "/*\n!/*/\n/a/\n!/a/b/c/\nfile1\n/d/e/\n";

/// Compare a filtered enumeration with `git rev-list --objects --filter=<spec>`: the same
/// objects in the same order, for any number of threads; the client is only assumed to
/// have commits and the haves themselves.
fn check_filtered(spec: &str, wants: &[&str], haves: &[&str]) {
    let repo = fixture();
    let sparse = repo.git_in(
        &repo.path,
        &["hash-object", "-w", "--stdin"],
        Some(SPARSE.as_bytes()),
    );
    let spec = spec.replace("SPARSE", sparse.trim());
    let wants: Vec<ObjectId> = wants.iter().map(|rev| repo.id(rev)).collect();
    let haves: Vec<ObjectId> = haves.iter().map(|rev| repo.id(rev)).collect();
    let context = format!("filter {spec}, wants {wants:?}, haves {haves:?}");
    let mut args = vec![
        "rev-list".to_string(),
        "--objects".into(),
        format!("--filter={spec}"),
    ];
    args.extend(wants.iter().map(ToString::to_string));
    if !haves.is_empty() {
        args.push("--not".into());
        args.extend(haves.iter().map(ToString::to_string));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let git: Vec<ObjectId> = repo
        .git(&args)
        .lines()
        .map(|line| ObjectId::from_hex(&line.as_bytes()[..40]).unwrap())
        .collect();
    let parsed = crate::filter::FilterSpec::parse(spec.as_bytes()).unwrap();
    let filter = parsed
        .resolve(&mut |name| {
            let id = ObjectId::from_hex(name).ok()?;
            let data = repo.git(&["cat-file", "blob", &id.to_string()]);
            Some(data.into_bytes())
        })
        .unwrap();
    let unfiltered = run(repo, &wants, &haves, options(TreeExclusion::EdgeCommits, 1));
    let commits: BTreeSet<ObjectId> = repo
        .git(&["rev-list", "--all"])
        .lines()
        .map(|line| ObjectId::from_hex(line.as_bytes()).unwrap())
        .collect();
    for threads in [1, 2, 3, 8] {
        let filtered = run(
            repo,
            &wants,
            &haves,
            EnumerateOptions {
                filter: Some(filter.clone()),
                ..options(TreeExclusion::EdgeCommits, threads)
            },
        );
        if filtered.objects() != git.as_slice() {
            let ours: BTreeSet<_> = filtered.objects().iter().collect();
            let theirs: BTreeSet<_> = git.iter().collect();
            let first = filtered
                .objects()
                .iter()
                .zip(&git)
                .position(|(a, b)| a != b);
            panic!(
                "{context}, {threads} threads: not git's objects and order: only ours {:?}, only git's {:?}, first difference at {first:?}",
                ours.difference(&theirs).map(|id| repo.git(&["cat-file", "-t", &id.to_string()]) + &id.to_string()).collect::<Vec<_>>(),
                theirs.difference(&ours).collect::<Vec<_>>(),
            );
        }
        let counts = filtered.counts();
        assert_eq!(
            counts.commits + counts.tags + counts.trees + counts.blobs,
            filtered.len()
        );
        for id in filtered.client_has() {
            assert!(
                commits.contains(id) || haves.contains(id),
                "{context}: the client may lack {id}"
            );
        }
        assert!(filtered.len() <= unfiltered.len());
    }
}

#[test]
fn filters_as_git() {
    let refs = fixture().git(&["for-each-ref", "--format=%(objectname)"]);
    let refs: Vec<&str> = refs.lines().collect();
    for spec in [
        "blob:none",
        "blob:limit=0",
        "blob:limit=16",
        "blob:limit=1k",
        "tree:0",
        "tree:1",
        "tree:2",
        "tree:4",
        "object:type=blob",
        "object:type=tree",
        "object:type=commit",
        "object:type=tag",
        "sparse:oid=SPARSE",
        "combine:blob:limit=16+tree:3",
        "combine:sparse:oid=SPARSE+blob:limit=18",
        "combine:tree:2+object:type=blob",
    ] {
        check_filtered(spec, &refs, &[]);
        check_filtered(spec, &["main"], &["main~10"]);
        check_filtered(spec, &["main", "side"], &["main~30", "topic"]);
        check_filtered(spec, &["tree-tag", "v1-of-v1", "blob-tag"], &["main~100"]);
        check_filtered(spec, &["main^{tree}", "main:a/b/file1", "main:a"], &[]);
    }
}

#[test]
fn a_tree_met_too_deep_first_is_sent_where_met_shallower() {
    // The newest commit holds the directory `x` three levels down, its parent at the top.
    let repo = Repo::new();
    let mut s = Stream::default();
    let files = [("x/f", "same\n"), ("x/y/g", "also the same\n")];
    let shallow: Vec<Change<'_>> = files
        .iter()
        .map(|(path, content)| Change::File(path, (*content).to_owned()))
        .collect();
    let old = s.commit("main", 1_600_000_000, &[], &shallow);
    let deep_paths: Vec<String> = files
        .iter()
        .map(|(path, _)| format!("a/b/{path}"))
        .collect();
    let mut deep: Vec<Change<'_>> = vec![Change::DeleteAll];
    deep.extend(
        deep_paths
            .iter()
            .zip(files)
            .map(|(path, (_, content))| Change::File(path, content.to_owned())),
    );
    let new = s.commit("main", 1_600_000_100, &[old], &deep);
    s.reset("main", new);
    repo.git_in(&repo.path, &["fast-import", "--quiet"], Some(&s.out));
    let main = repo.id("main");
    for depth in 0..6 {
        let spec = format!("tree:{depth}");
        // rev-list shows a tree again where it is met shallower; a pack holds it once.
        let mut listed = BTreeSet::new();
        let git: Vec<ObjectId> = repo
            .git(&["rev-list", "--objects", &format!("--filter={spec}"), "main"])
            .lines()
            .map(|line| ObjectId::from_hex(&line.as_bytes()[..40]).unwrap())
            .filter(|id| listed.insert(*id))
            .collect();
        let ours = run(
            &repo,
            &[main],
            &[],
            EnumerateOptions {
                filter: Some(Filter::TreeDepth(depth)),
                ..EnumerateOptions::default()
            },
        );
        assert_eq!(ours.objects(), git.as_slice(), "{spec}");
    }
    let x = repo.id("main~1:x");
    let at_depth_3 = run(
        &repo,
        &[main],
        &[],
        EnumerateOptions {
            filter: Some(Filter::TreeDepth(3)),
            ..EnumerateOptions::default()
        },
    );
    assert!(at_depth_3.contains(&x), "x is at depth 1 in main~1");
}

#[test]
fn tree_0_and_commits_only_read_no_tree() {
    // The commit's tree is missing: a walk that never looks into trees doesn't notice.
    let missing_tree = ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap();
    let (db, ids) = memory(&[
        (Kind::Blob, b"wanted".to_vec()),
        (Kind::Commit, commit(&missing_tree, &[], 1)),
    ]);
    let wants = [ids[1], ids[0]];
    for filter in [Filter::TreeDepth(0), Filter::ObjectType(Kind::Commit)] {
        let found = enumerate(
            &db,
            &wants,
            &[],
            &EnumerateOptions {
                filter: Some(filter),
                ..EnumerateOptions::default()
            },
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(found.objects(), &wants[..]);
    }
    for filter in [Filter::TreeDepth(1), Filter::BlobNone] {
        let options = EnumerateOptions {
            filter: Some(filter),
            ..EnumerateOptions::default()
        };
        let err = enumerate(&db, &wants, &[], &options, &AtomicBool::new(false));
        assert!(
            matches!(err, Err(EnumerateError::Missing { .. })),
            "{err:?}"
        );
    }
}

/// Shallow grafts bound the walk as `git --shallow-file <file> rev-list --objects` does, and
/// nothing beyond them is counted as the client's.
#[test]
fn shallow_grafts_are_parentless() {
    let repo = fixture();
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        (&["main"], &[], &["main~2"]),
        (&["main"], &["main~1"], &["main~3"]),
        (&["main"], &["main~4"], &["main~2", "main~5^2"]),
        (&["main", "side"], &["main~30"], &["main~10", "main~31"]),
    ];
    for &(wants, haves, shallow) in cases {
        let wants: Vec<ObjectId> = wants.iter().map(|rev| repo.id(rev)).collect();
        let haves: Vec<ObjectId> = haves.iter().map(|rev| repo.id(rev)).collect();
        let shallow: Vec<ObjectId> = shallow.iter().map(|rev| repo.id(rev)).collect();
        let file = tempfile::NamedTempFile::new().unwrap();
        let lines: String = shallow.iter().map(|id| format!("{id}\n")).collect();
        std::fs::write(file.path(), lines).unwrap();
        let mut args = vec![
            "--shallow-file".to_string(),
            file.path().display().to_string(),
            "rev-list".into(),
            "--objects".into(),
        ];
        args.extend(wants.iter().map(ToString::to_string));
        if !haves.is_empty() {
            args.push("--not".into());
            args.extend(haves.iter().map(ToString::to_string));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // What the haves' own trees hold is the client's too, as `pack-objects --shallow`
        // counts it (`--objects-edge-aggressive`): rev-list alone would list it again.
        let mut in_have_trees = BTreeSet::new();
        for have in &haves {
            let tree = format!("{have}^{{tree}}");
            for line in repo.git(&["rev-list", "--objects", &tree]).lines() {
                in_have_trees.insert(ObjectId::from_hex(&line.as_bytes()[..40]).unwrap());
            }
        }
        let git: Vec<ObjectId> = repo
            .git(&args)
            .lines()
            .map(|line| ObjectId::from_hex(&line.as_bytes()[..40]).unwrap())
            .filter(|id| !in_have_trees.contains(id))
            .collect();
        let options = EnumerateOptions {
            shallow: shallow.iter().copied().collect(),
            ..options(TreeExclusion::EdgeCommits, 2)
        };
        let ours = run(repo, &wants, &haves, options);
        assert_eq!(ours.objects(), git.as_slice(), "shallow {shallow:?}");
        // The client's commits stop at the grafts too.
        let below: Vec<ObjectId> = shallow
            .iter()
            .filter(|id| haves.iter().any(|have| repo.is_ancestor(id, have)))
            .flat_map(|id| {
                repo.git(&["rev-parse", &format!("{id}^@")])
                    .lines()
                    .map(|l| ObjectId::from_hex(l.as_bytes()).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        for parent in below {
            assert!(
                !ours.client_has().contains(&parent),
                "{parent} is below a graft, not the client's"
            );
        }
    }
}

#[test]
fn visited_commits_are_tighter_than_git() {
    let repo = fixture();
    // main~15 reverts a file to what it was at main~25; the client has main~18.
    let (wants, haves) = ([repo.id("main~15")], [repo.id("main~18")]);
    let reverted = repo.id("main~15:reverted");
    let edges = run(repo, &wants, &haves, options(TreeExclusion::EdgeCommits, 1));
    let visited = run(
        repo,
        &wants,
        &haves,
        options(TreeExclusion::VisitedCommits, 1),
    );
    assert!(edges.contains(&reverted), "git sends it again");
    assert!(!visited.contains(&reverted));
    assert!(visited.client_has().contains(&reverted));
    assert_eq!(visited.len() + 1, edges.len());
    check(&["main~15"], &["main~18"]);
}

#[test]
fn nothing_to_send() {
    check(&["main"], &["main"]);
    check(&["main~10"], &["main"]);
    let repo = fixture();
    let none = run(
        repo,
        &[repo.id("main")],
        &[repo.id("main")],
        EnumerateOptions::default(),
    );
    assert!(none.is_empty());
    assert!(none.client_has().contains(&repo.id("main")));
}

#[test]
fn submodules_and_empty_trees() {
    let repo = fixture();
    let all = run(repo, &[repo.id("side")], &[], EnumerateOptions::default());
    assert!(
        all.contains(&repo.id("side~6^{tree}")),
        "the empty tree is sent"
    );
    assert!(all.contains(&ObjectId::empty_tree(gix_hash::Kind::Sha1)));
    let gitlink = ObjectId::from_hex("5".repeat(40).as_bytes()).unwrap();
    assert!(!all.contains(&gitlink));
}

#[test]
fn haves_the_repository_lacks_are_ignored() {
    let repo = fixture();
    let unknown = ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").unwrap();
    let with = run(
        repo,
        &[repo.id("main")],
        &[unknown, repo.id("main~10")],
        EnumerateOptions::default(),
    );
    let without = run(
        repo,
        &[repo.id("main")],
        &[repo.id("main~10")],
        EnumerateOptions::default(),
    );
    assert_eq!(with.objects(), without.objects());
}

#[test]
fn missing_want() {
    let repo = fixture();
    let unknown = ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").unwrap();
    let err = enumerate(
        &repo.db(),
        &[repo.id("main"), unknown],
        &[],
        &EnumerateOptions::default(),
        &AtomicBool::new(false),
    )
    .unwrap_err();
    assert!(
        matches!(err, EnumerateError::WantNotFound { id } if id == unknown),
        "{err:?}"
    );
}

/// An object database in memory, for objects git would refuse to write.
#[derive(Clone, Default)]
struct Memory(std::sync::Arc<HashMap<ObjectId, (Kind, Vec<u8>)>>);

impl gix_object::Find for Memory {
    fn try_find<'a>(
        &self,
        id: &oid,
        buffer: &'a mut Vec<u8>,
    ) -> gix_error::Result<Option<gix_object::Data<'a>>> {
        Ok(self.0.get(id).map(|(kind, data)| {
            buffer.clear();
            buffer.extend_from_slice(data);
            gix_object::Data {
                kind: *kind,
                object_hash: gix_hash::Kind::Sha1,
                data: buffer.as_slice(),
            }
        }))
    }
}

impl gix_object::FindHeader for Memory {
    fn try_header(&self, id: &oid) -> gix_error::Result<Option<gix_object::Header>> {
        Ok(self.0.get(id).map(|(kind, data)| gix_object::Header {
            kind: *kind,
            size: data.len() as u64,
        }))
    }
}

fn memory(objects: &[(Kind, Vec<u8>)]) -> (Memory, Vec<ObjectId>) {
    let mut map = HashMap::default();
    let ids = objects
        .iter()
        .map(|(kind, data)| {
            let id = gix_object::compute_hash(gix_hash::Kind::Sha1, *kind, data).unwrap();
            map.insert(id, (*kind, data.clone()));
            id
        })
        .collect();
    (Memory(std::sync::Arc::new(map)), ids)
}

fn tree_entry(mode: &str, name: &str, id: &oid) -> Vec<u8> {
    let mut entry = format!("{mode} {name}\0").into_bytes();
    entry.extend_from_slice(id.as_bytes());
    entry
}

fn commit(tree: &oid, parents: &[ObjectId], time: u64) -> Vec<u8> {
    let mut commit = format!("tree {tree}\n");
    for parent in parents {
        commit.push_str(&format!("parent {parent}\n"));
    }
    commit.push_str(&format!(
        "author A <a@example.com> {time} +0000\ncommitter C <c@example.com> {time} +0000\n\nm\n"
    ));
    commit.into_bytes()
}

fn enumerate_memory(
    db: &Memory,
    wants: &[ObjectId],
    haves: &[ObjectId],
) -> Result<Enumeration, EnumerateError> {
    enumerate(
        db,
        wants,
        haves,
        &EnumerateOptions::default(),
        &AtomicBool::new(false),
    )
}

#[test]
fn corrupt_and_missing_objects() {
    let missing = ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap();
    let (db, ids) = memory(&[
        (Kind::Blob, b"blob".to_vec()),
        (Kind::Tree, b"100644 no-hash\0abc".to_vec()),
    ]);
    let (blob, broken_tree) = (ids[0], ids[1]);
    let (db2, ids2) = memory(&[
        (Kind::Tree, tree_entry("100644", "file", &blob)),
        (Kind::Tree, tree_entry("40000", "dir", &missing)),
        (Kind::Tree, tree_entry("40000", "blob-as-tree", &blob)),
    ]);
    let mut objects: Vec<(Kind, Vec<u8>)> = db.0.values().cloned().collect();
    objects.extend(db2.0.values().cloned());
    let (good_tree, tree_with_missing, tree_with_blob) = (ids2[0], ids2[1], ids2[2]);
    let commits = [
        (Kind::Commit, commit(&good_tree, &[], 1)),
        (Kind::Commit, commit(&good_tree, &[missing], 2)),
        (Kind::Commit, commit(&broken_tree, &[], 3)),
        (Kind::Commit, commit(&tree_with_missing, &[], 4)),
        (Kind::Commit, commit(&tree_with_blob, &[], 5)),
        (Kind::Commit, b"tree nonsense\n".to_vec()),
    ];
    objects.extend(commits.iter().cloned());
    let (db, ids) = memory(&objects);
    let commit_ids = &ids[ids.len() - commits.len()..];
    let [good, missing_parent, broken, with_missing, with_blob, bogus] = commit_ids else {
        unreachable!()
    };

    let all = enumerate_memory(&db, &[*good], &[]).unwrap();
    assert_eq!(all.objects(), &[*good, good_tree, blob]);

    let err = enumerate_memory(&db, &[*missing_parent], &[]).unwrap_err();
    assert!(
        matches!(err, EnumerateError::Missing { id } if id == missing),
        "{err:?}"
    );
    let err = enumerate_memory(&db, &[*broken], &[]).unwrap_err();
    assert!(
        matches!(err, EnumerateError::Corrupt { id, kind: Kind::Tree, .. } if id == broken_tree),
        "{err:?}"
    );
    let err = enumerate_memory(&db, &[*with_missing], &[]).unwrap_err();
    assert!(
        matches!(err, EnumerateError::Missing { id } if id == missing),
        "{err:?}"
    );
    let err = enumerate_memory(&db, &[*with_blob], &[]).unwrap_err();
    assert!(
        matches!(err, EnumerateError::WrongKind { id, expected: Kind::Tree, actual: Kind::Blob } if id == blob),
        "{err:?}"
    );
    let err = enumerate_memory(&db, &[*bogus], &[]).unwrap_err();
    assert!(
        matches!(err, EnumerateError::Corrupt { id, kind: Kind::Commit, .. } if id == *bogus),
        "{err:?}"
    );

    // Below a have, whatever is missing or broken is ignored. These haves are no parents of
    // the want, so only with visited commits do their trees count.
    let haves = [*missing_parent, *with_missing, *bogus];
    let some = enumerate_memory(&db, &[*good], &haves).unwrap();
    assert_eq!(some.objects(), &[*good, good_tree, blob]);
    let options = options(TreeExclusion::VisitedCommits, 1);
    let some = enumerate(&db, &[*good], &haves, &options, &AtomicBool::new(false)).unwrap();
    assert_eq!(some.objects(), &[*good]);
    assert!(some.client_has().contains(&blob));
}

#[test]
fn interrupted() {
    let repo = fixture();
    for threads in [1, 4] {
        let err = enumerate(
            &repo.db(),
            &[repo.id("main")],
            &[],
            &options(TreeExclusion::EdgeCommits, threads),
            &AtomicBool::new(true),
        )
        .unwrap_err();
        assert!(matches!(err, EnumerateError::Interrupted), "{err:?}");
    }
}

/// With a commit-graph, commits are parsed without reading their objects at all: a database
/// that has nothing still gives their trees, parents and dates, the same as the objects say.
#[test]
fn commits_come_from_the_commit_graph() {
    struct Nothing;
    impl gix_object::Find for Nothing {
        fn try_find<'a>(
            &self,
            _id: &gix_hash::oid,
            _buffer: &'a mut Vec<u8>,
        ) -> Result<Option<gix_object::Data<'a>>, gix_error::Error> {
            Ok(None)
        }
    }
    let repo = fixture();
    let db = repo.db();
    let mut from_objects = packgate_object::CommitGraph::default();
    let mut from_graph = packgate_object::CommitGraph::default();
    from_graph.use_commit_graph(packgate_object::CommitGraphFile::open(
        &repo.path.join("objects"),
    ));
    for rev in ["main", "main~7", "topic", "side", "old"] {
        let id = repo.id(rev);
        let (a, b) = (from_objects.node(&id), from_graph.node(&id));
        assert_eq!(from_objects.parse(&db, a).unwrap(), Ok(()));
        assert_eq!(from_graph.parse(&Nothing, b).unwrap(), Ok(()), "{rev}");
        let parents = |graph: &packgate_object::CommitGraph, node: u32| -> Vec<ObjectId> {
            graph
                .get(node)
                .parents
                .clone()
                .map(|position| graph.get(graph.parent(position)).id)
                .collect()
        };
        assert_eq!(from_graph.get(b).tree, from_objects.get(a).tree, "{rev}");
        assert_eq!(from_graph.get(b).date, from_objects.get(a).date, "{rev}");
        assert_eq!(parents(&from_graph, b), parents(&from_objects, a), "{rev}");
    }
}

#[test]
fn sparse_marking_sends_a_moved_file_again_as_git_does() {
    // The client's commit has `a/old-name` and `keep/file`; the wanted one moved the file to
    // `b/new-name`, dropped `a`, and changed `keep/other`.
    let repo = Repo::new();
    let mut s = Stream::default();
    let old = s.commit(
        "main",
        1_600_000_000,
        &[],
        &[
            Change::File("a/old-name", "moved content\n".to_owned()),
            Change::File("keep/file", "kept\n".to_owned()),
            Change::File("keep/other", "one\n".to_owned()),
        ],
    );
    let new = s.commit(
        "main",
        1_600_000_100,
        &[old],
        &[
            Change::DeleteAll,
            Change::File("b/new-name", "moved content\n".to_owned()),
            Change::File("keep/file", "kept\n".to_owned()),
            Change::File("keep/other", "two\n".to_owned()),
        ],
    );
    s.reset("main", new);
    repo.git_in(&repo.path, &["fast-import", "--quiet"], Some(&s.out));
    let (want, have) = (repo.id("main"), repo.id("main~1"));
    let moved = repo.id("main:b/new-name");

    let edges = run(
        &repo,
        &[want],
        &[have],
        options(TreeExclusion::EdgeCommits, 1),
    );
    assert!(!edges.contains(&moved), "the boundary's whole tree has it");
    let sparse = run(&repo, &[want], &[have], options(TreeExclusion::Sparse, 1));
    assert!(
        sparse.contains(&moved),
        "`a` differs on one side only: not read"
    );
    assert!(sparse.client_has().contains(&repo.id("main~1:keep/other")));
    assert!(!sparse.contains(&repo.id("main:keep/file")));
    let ours: BTreeSet<ObjectId> = sparse.objects().iter().copied().collect();
    assert_eq!(ours, repo.pack_objects_sparse(&[want], &[have]));
}
