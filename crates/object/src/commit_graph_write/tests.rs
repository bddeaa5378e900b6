//! The writer against git's own `commit-graph write` on the same histories: byte-identical
//! files, the same split chains, and `git commit-graph verify` (2.47 and 2.39) accepting ours.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::*;

const GIT_239: &str = "/usr/bin/git";

fn run(git: &str, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    String::from_utf8(crate::testing::run_git(git, cwd, args, env, None)).unwrap()
}

/// A bare repository whose commits are made with `git commit-tree` at chosen dates.
struct Repo {
    _dir: tempfile::TempDir,
    path: PathBuf,
    tree: String,
    made: u32,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo.git");
        run(
            "git",
            dir.path(),
            &["init", "-q", "--bare", "repo.git"],
            &[],
        );
        let tree = run("git", &path, &["mktree"], &[]).trim().to_owned();
        Repo {
            _dir: dir,
            path,
            tree,
            made: 0,
        }
    }

    fn git(&self, args: &[&str]) -> String {
        run("git", &self.path, args, &[])
    }

    /// A commit with `parents` committed at `date`, and a branch `b<n>` at it.
    fn commit(&mut self, parents: &[&str], date: u64) -> String {
        self.made += 1;
        let mut args = vec!["commit-tree".to_owned(), self.tree.clone()];
        for parent in parents {
            args.push("-p".into());
            args.push((*parent).to_owned());
        }
        args.push("-m".into());
        args.push(format!("commit {}", self.made));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let when = format!("@{date} +0000");
        let id = run(
            "git",
            &self.path,
            &args,
            &[("GIT_COMMITTER_DATE", &when), ("GIT_AUTHOR_DATE", &when)],
        )
        .trim()
        .to_owned();
        self.git(&["update-ref", &format!("refs/heads/b{}", self.made), &id]);
        id
    }

    /// `count` commits in a line on top of `parent`, a second apart from `date`.
    fn line(&mut self, parent: Option<&str>, count: u32, date: u64) -> String {
        let mut tip = parent.map(str::to_owned);
        for k in 0..count {
            let parents: Vec<&str> = tip.iter().map(String::as_str).collect();
            tip = Some(self.commit(&parents, date + u64::from(k)));
        }
        tip.unwrap()
    }

    /// A copy of the repository (same objects and refs) to let git write its graph in.
    fn copy(&self) -> PathBuf {
        let path = self.path.with_file_name(format!("copy-{}.git", self.made));
        let status = Command::new("cp")
            .arg("-a")
            .arg(&self.path)
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        path
    }

    fn tips(&self) -> Vec<ObjectId> {
        self.git(&["for-each-ref", "--format=%(objectname)"])
            .lines()
            .map(|line| ObjectId::from_hex(line.as_bytes()).unwrap())
            .collect()
    }

    fn write(&self, split: bool) -> CommitGraphWritten {
        let objects = self.path.join("objects");
        let db = gix_odb::at(&objects, gix_hash::Kind::Sha1).unwrap();
        let options = CommitGraphWriteOptions {
            split,
            ..Default::default()
        };
        write_commit_graph(&objects, &db, &self.tips(), &options).unwrap()
    }

    /// Both git versions verify the graph, and walks agree with and without it; gix reads
    /// every commit.
    fn check(&self) {
        self.check_readable();
        let graph = gix_commitgraph::at(self.path.join("objects/info"), gix_hash::Kind::Sha1, None)
            .unwrap();
        let count = self.git(&["rev-list", "--all", "--count"]);
        assert_eq!(
            graph.num_commits().to_string(),
            count.trim(),
            "gix-commitgraph reads every commit"
        );
    }

    /// Both git versions verify the graph, and walks agree with and without it.
    fn check_readable(&self) {
        for git in ["git", GIT_239] {
            run(git, &self.path, &["commit-graph", "verify"], &[]);
        }
        let walk = |use_graph: &str| {
            let config = format!("core.commitGraph={use_graph}");
            (
                run(
                    "git",
                    &self.path,
                    &[
                        "-c",
                        &config,
                        "rev-list",
                        "--all",
                        "--topo-order",
                        "--parents",
                    ],
                    &[],
                ),
                run(
                    "git",
                    &self.path,
                    &["-c", &config, "log", "--graph", "--all", "--format=%H %ct"],
                    &[],
                ),
                run(
                    "git",
                    &self.path,
                    &["-c", &config, "rev-list", "--all", "--date-order"],
                    &[],
                ),
            )
        };
        assert_eq!(walk("true"), walk("false"));
        assert!(crate::CommitGraphFile::open(&self.path.join("objects")).is_some());
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// The graph files of a repository: the single file and the chain's layers by name.
fn graph_files(repo: &Path) -> Vec<(String, Vec<u8>)> {
    let info = repo.join("objects/info");
    let mut files = Vec::new();
    if let Ok(data) = std::fs::read(info.join("commit-graph")) {
        files.push(("commit-graph".to_owned(), data));
    }
    if let Ok(entries) = std::fs::read_dir(info.join("commit-graphs")) {
        for entry in entries {
            let entry = entry.unwrap();
            files.push((
                entry.file_name().to_string_lossy().into_owned(),
                read(&entry.path()),
            ));
        }
    }
    files.sort();
    files
}

/// A history with merges, an octopus merge and dates out of order.
fn history(repo: &mut Repo) {
    let base = repo.line(None, 5, 1_700_000_000);
    let left = repo.line(Some(&base), 3, 1_700_000_100);
    // Committed before its parent: corrected dates must move it after.
    let right = repo.commit(&[&base], 1_600_000_000);
    let right = repo.line(Some(&right), 2, 1_600_000_001);
    let third = repo.commit(&[&base], 1_700_000_050);
    let merge = repo.commit(&[&left, &right], 1_700_000_200);
    let octopus = repo.commit(&[&merge, &third, &right, &base], 1_650_000_000);
    repo.line(Some(&octopus), 2, 1_700_000_300);
    // A second root.
    repo.line(None, 2, 1_500_000_000);
}

#[test]
fn single_file_is_gits_byte_for_byte() {
    let mut repo = Repo::new();
    history(&mut repo);
    let reference = repo.copy();
    run(
        "git",
        &reference,
        &["commit-graph", "write", "--reachable"],
        &[],
    );
    let written = repo.write(false);
    assert_eq!(written.commits, 18);
    let path = repo.path.join("objects/info/commit-graph");
    assert_eq!(written.files, vec![path.clone()]);
    assert_eq!(graph_files(&repo.path), graph_files(&reference));
    assert!(read(&path).windows(4).any(|w| w == b"EDGE"));
    repo.check();
}

#[test]
fn overflowing_corrected_dates_are_gits() {
    let mut repo = Repo::new();
    // A child dated long before its parent: the offset needs the overflow chunk.
    let future = repo.commit(&[], 4_000_000_000);
    let past = repo.commit(&[&future], 100_000_000);
    repo.commit(&[&past], 100_000_001);
    repo.commit(&[&future], 3_999_999_999);
    let reference = repo.copy();
    run(
        "git",
        &reference,
        &["commit-graph", "write", "--reachable"],
        &[],
    );
    repo.write(false);
    let ours = graph_files(&repo.path);
    assert!(ours[0].1.windows(4).any(|w| w == b"GDO2"));
    assert_eq!(ours, graph_files(&reference));
    repo.check();
}

#[test]
fn split_chains_grow_and_merge_as_gits() {
    let mut repo = Repo::new();
    let reference = repo.copy();
    let mut tip = repo.line(None, 30, 1_700_000_000);
    // (commits added, layers expected afterwards); more than one added means two more: a
    // side branch and an octopus merge. The layers: [30], [30 4], [30 4 1], [30 6], [30 11],
    // [83].
    let steps = [(0, 1), (2, 2), (1, 3), (1, 2), (3, 2), (40, 1)];
    for (step, (add, layers)) in steps.into_iter().enumerate() {
        if add > 0 {
            let side = repo.commit(&[&tip], 1_700_001_000 + step as u64 * 100);
            tip = repo.line(Some(&tip), add - 1, 1_700_001_001 + step as u64 * 100);
            if add > 1 {
                // Merges and octopus merges whose parents are in lower layers.
                let other = repo.commit(&[&side], 1_600_000_000);
                tip = repo.commit(&[&tip, &side, &other], 1_700_001_050 + step as u64 * 100);
            }
        }
        // The same objects and refs in git's copy.
        run(
            "git",
            &reference,
            &["fetch", "-q", repo.path.to_str().unwrap(), "+refs/*:refs/*"],
            &[],
        );
        run(
            "git",
            &reference,
            &["commit-graph", "write", "--reachable", "--split"],
            &[],
        );
        repo.write(true);
        let chain = read(
            &repo
                .path
                .join("objects/info/commit-graphs/commit-graph-chain"),
        );
        assert_eq!(
            String::from_utf8(chain).unwrap().lines().count(),
            layers,
            "step {step}"
        );
        assert_eq!(
            graph_files(&repo.path),
            graph_files(&reference),
            "step {step}"
        );
        repo.check();
    }
    // Nothing new: nothing is written.
    assert_eq!(repo.write(true), CommitGraphWritten::default());
}

#[test]
fn switching_between_single_file_and_chain() {
    let mut repo = Repo::new();
    let reference = repo.copy();
    let tip = repo.line(None, 8, 1_700_000_000);
    let source = repo.path.clone();
    let sync = |args: &[&str]| {
        run(
            "git",
            &reference,
            &["fetch", "-q", source.to_str().unwrap(), "+refs/*:refs/*"],
            &[],
        );
        run("git", &reference, args, &[]);
    };
    sync(&["commit-graph", "write", "--reachable"]);
    repo.write(false);
    assert_eq!(graph_files(&repo.path), graph_files(&reference));
    // A split write keeps the single file as the chain's base, under its hash.
    repo.line(Some(&tip), 2, 1_700_000_100);
    sync(&["commit-graph", "write", "--reachable", "--split"]);
    repo.write(true);
    let files = graph_files(&repo.path);
    assert_eq!(
        files.len(),
        3,
        "{:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert_eq!(files, graph_files(&reference));
    repo.check();
    // A single-file write replaces the chain.
    repo.line(Some(&tip), 1, 1_700_000_200);
    sync(&["commit-graph", "write", "--reachable"]);
    repo.write(false);
    assert_eq!(graph_files(&repo.path), graph_files(&reference));
    assert_eq!(graph_files(&repo.path).len(), 1);
    repo.check();
}

#[test]
fn tags_are_peeled_and_other_tips_skipped() {
    let mut repo = Repo::new();
    let tip = repo.line(None, 3, 1_700_000_000);
    repo.git(&["tag", "-a", "-m", "t", "v1", &tip]);
    repo.git(&["update-ref", "-d", "refs/heads/b3"]);
    let blob = run("git", &repo.path, &["hash-object", "-w", "--stdin"], &[]);
    let mut tips = repo.tips();
    tips.push(ObjectId::from_hex(blob.trim().as_bytes()).unwrap());
    tips.push(ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap());
    let objects = repo.path.join("objects");
    let db = gix_odb::at(&objects, gix_hash::Kind::Sha1).unwrap();
    let written =
        write_commit_graph(&objects, &db, &tips, &CommitGraphWriteOptions::default()).unwrap();
    assert_eq!(written.commits, 3);
    repo.check();
}

#[test]
fn shallow_repositories_get_no_graph() {
    let mut repo = Repo::new();
    let tip = repo.line(None, 3, 1_700_000_000);
    std::fs::write(repo.path.join("shallow"), format!("{tip}\n")).unwrap();
    assert_eq!(repo.write(true), CommitGraphWritten::default());
    assert_eq!(repo.write(false), CommitGraphWritten::default());
    assert!(graph_files(&repo.path).is_empty());
}

#[test]
fn a_held_lock_is_respected() {
    let mut repo = Repo::new();
    repo.line(None, 3, 1_700_000_000);
    let graphs = repo.path.join("objects/info/commit-graphs");
    std::fs::create_dir_all(&graphs).unwrap();
    std::fs::write(graphs.join("commit-graph-chain.lock"), b"").unwrap();
    let objects = repo.path.join("objects");
    let db = gix_odb::at(&objects, gix_hash::Kind::Sha1).unwrap();
    let err = write_commit_graph(&objects, &db, &repo.tips(), &Default::default()).unwrap_err();
    assert!(matches!(err, CommitGraphWriteError::Locked(_)), "{err}");
    // Nothing but the other writer's lock is left behind.
    let names: Vec<String> = graph_files(&repo.path).into_iter().map(|f| f.0).collect();
    assert_eq!(names, vec!["commit-graph-chain.lock".to_owned()]);
}

#[test]
fn a_missing_commit_is_an_error() {
    let mut repo = Repo::new();
    let tip = repo.line(None, 2, 1_700_000_000);
    let parent = repo.git(&["rev-parse", &format!("{tip}^")]);
    let parent = parent.trim();
    let loose = repo
        .path
        .join("objects")
        .join(&parent[..2])
        .join(&parent[2..]);
    std::fs::remove_file(loose).unwrap();
    let objects = repo.path.join("objects");
    let db = gix_odb::at(&objects, gix_hash::Kind::Sha1).unwrap();
    let err = write_commit_graph(&objects, &db, &repo.tips(), &Default::default()).unwrap_err();
    assert_eq!(err.to_string(), format!("unable to parse commit {parent}"));
    assert!(graph_files(&repo.path).is_empty());
}

#[test]
fn dates_past_32_bits_get_correct_generations() {
    // git 2.47 itself computes these through a 32-bit maximum and writes a graph that its own
    // `commit-graph verify` rejects; ours holds the corrected dates the format defines.
    let mut repo = Repo::new();
    let far = repo.commit(&[], (1 << 33) + 8);
    let back = repo.commit(&[&far], 1_000_000_000);
    repo.commit(&[&back], 1_000_000_001);
    let written = repo.write(false);
    assert_eq!(written.commits, 3);
    let data = read(&repo.path.join("objects/info/commit-graph"));
    assert!(data.windows(4).any(|w| w == b"GDO2"));
    repo.check();
}

#[test]
fn merged_layers_drop_commits_that_are_gone() {
    let mut repo = Repo::new();
    let tip = repo.line(None, 4, 1_700_000_000);
    let doomed = repo.commit(&[&tip], 1_700_000_100);
    repo.write(true);
    // The branch and its commit go (as a prune would remove them).
    repo.git(&["update-ref", "-d", &format!("refs/heads/b{}", repo.made)]);
    let loose = repo
        .path
        .join("objects")
        .join(&doomed[..2])
        .join(&doomed[2..]);
    std::fs::remove_file(loose).unwrap();
    // Enough new commits to merge the layer holding it.
    repo.line(Some(&tip), 4, 1_700_000_200);
    let written = repo.write(true);
    assert_eq!(written.commits, 8);
    let chain = read(
        &repo
            .path
            .join("objects/info/commit-graphs/commit-graph-chain"),
    );
    assert_eq!(chain.iter().filter(|&&b| b == b'\n').count(), 1);
    repo.check();
}

#[test]
fn a_kill_after_any_phase_leaves_a_readable_graph() {
    // (start from a single file?, split?, phase)
    let phases = [
        (true, true, "layer written"),
        (true, true, "chain committed"),
        (true, true, "single file removed"),
        (false, true, "layer written"),
        (false, true, "chain committed"),
        (false, false, "graph committed"),
        (false, false, "chain removed"),
    ];
    for (single, split, phase) in phases {
        eprintln!("phase {phase}, from a single file: {single}, split: {split}");
        let mut repo = Repo::new();
        let tip = repo.line(None, 6, 1_700_000_000);
        if single {
            // The single file stays the base of the new chain.
            repo.write(false);
            repo.line(Some(&tip), 2, 1_700_000_100);
        } else {
            repo.write(true);
            let tip = repo.line(Some(&tip), 2, 1_700_000_100);
            repo.write(true);
            repo.line(Some(&tip), 20, 1_700_000_200);
        }
        KILL_AFTER.with(|kill| kill.set(Some(phase)));
        repo.write(split);
        KILL_AFTER.with(|kill| kill.set(None));
        repo.check_readable();
        // A kill leaves its lock behind (as git's would); once it is removed the next write
        // completes and cleans up.
        for lock in [
            "objects/info/commit-graphs/commit-graph-chain.lock",
            "objects/info/commit-graph.lock",
        ] {
            let _ = std::fs::remove_file(repo.path.join(lock));
        }
        repo.write(split);
        repo.check();
        let names: Vec<String> = graph_files(&repo.path).into_iter().map(|f| f.0).collect();
        if split {
            assert!(
                !names.contains(&"commit-graph".to_owned()),
                "{phase}: {names:?}"
            );
            // Nothing stale is left: every layer is in the chain.
            let chain = String::from_utf8(read(
                &repo
                    .path
                    .join("objects/info/commit-graphs/commit-graph-chain"),
            ))
            .unwrap();
            let mut expected: Vec<String> = chain
                .lines()
                .map(|hash| format!("graph-{hash}.graph"))
                .collect();
            expected.push("commit-graph-chain".to_owned());
            expected.sort();
            assert_eq!(names, expected, "{phase}");
        } else {
            assert_eq!(names, vec!["commit-graph".to_owned()], "{phase}");
        }
    }
}
