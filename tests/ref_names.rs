//! Ref names and prefixes from clients: a `ref-prefix` that climbs out of the repository
//! reads nothing there, and push commands on symbolic or repeated refs end as with git.

use std::fs::{File, FileTimes, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::pkt::{concat, line, DELIM, FLUSH};
use crate::util::{preset_spec, write_file, Dir, Git, Output};

/// One stateless v2 `ls-refs` request with these `ref-prefix`es.
fn ls_refs_request(prefixes: &[&str]) -> Vec<u8> {
    let mut pieces = vec![line("command=ls-refs\n"), DELIM.to_vec()];
    pieces.extend(prefixes.iter().map(|p| line(format!("ref-prefix {p}\n"))));
    pieces.push(FLUSH.to_vec());
    concat(pieces)
}

fn packgate_ls_refs(dir: &Dir, repo: &Path, prefixes: &[&str]) -> Output {
    dir.packgate()
        .args(["upload-pack", "--stateless-rpc"])
        .arg(repo)
        .env("GIT_PROTOCOL", "version=2")
        .stdin(ls_refs_request(prefixes))
        .output()
}

fn git_ls_refs(dir: &Dir, git: &Git, repo: &Path, prefixes: &[&str]) -> Output {
    dir.git(git)
        .args(["upload-pack", "--stateless-rpc"])
        .arg(repo)
        .env("GIT_PROTOCOL", "version=2")
        .stdin(ls_refs_request(prefixes))
        .run()
}

/// An access time long past, so that reading the directory moves it even under `relatime`.
fn long_ago() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000)
}

fn accessed(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|metadata| metadata.accessed())
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, Permissions::from_mode(mode))
        .unwrap_or_else(|err| panic!("chmod {}: {err}", path.display()));
}

/// Makes a directory readable again when the test ends, so that it can be removed.
struct RestoreMode(std::path::PathBuf);

impl Drop for RestoreMode {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(&self.0, Permissions::from_mode(0o755));
    }
}

/// Sets the access time of the directories `outside` and `outside/secret` to [`long_ago`]
/// and leaves `secret` unreadable.
fn reset_access_times(outside: &Path) {
    let secret = outside.join("secret");
    set_mode(&secret, 0o755);
    for path in [outside, &secret] {
        File::open(path)
            .and_then(|file| file.set_times(FileTimes::new().set_accessed(long_ago())))
            .unwrap_or_else(|err| panic!("setting the access time of {}: {err}", path.display()));
    }
    set_mode(&secret, 0o000);
}

/// `ref-prefix`es that lead out of the git directory, to a directory holding files named
/// like refs (with a valid object id in them) and an unreadable subdirectory, get the answer
/// of a prefix that leads nowhere — git's own upload-pack's answer — and packgate opens
/// neither directory: their access times stay in the past (root reads unreadable
/// directories, so the permission alone would not tell). Prefixes that can begin a ref
/// name, or that are a prefix of `refs/` (which match every ref), answer as git does.
#[test]
fn ls_refs_prefix_out_of_the_repository_reads_nothing() {
    let git = Git::newest();
    let dir = Dir::new("ref-prefix-outside");
    let repo = dir.fixture(&preset_spec("tiny")).path;
    let main = dir
        .git_in(&git, &repo)
        .args(["rev-parse", "refs/heads/main"])
        .run()
        .stdout_text();
    // Next to the git directory: `<git dir>/refs/../../outside` is this.
    let outside = dir.join("outside");
    let secret = outside.join("secret");
    std::fs::create_dir_all(&secret).unwrap_or_else(|err| panic!("{err}"));
    for name in ["main", "master", "v1"] {
        write_file(&outside.join(name), main.as_bytes());
        write_file(&secret.join(name), main.as_bytes());
    }
    let _restore = RestoreMode(secret.clone());
    set_mode(&secret, 0o000);
    // Whether permissions stop this process (not root); else only access times tell.
    let permissions_bind = std::fs::read_dir(&secret).is_err();
    let absolute = format!(
        "refs/{}{}/",
        "../".repeat(64),
        outside
            .to_str()
            .and_then(|path| path.strip_prefix('/'))
            .unwrap_or_else(|| panic!("odd temporary path {}", outside.display()))
    );

    let nowhere = git_ls_refs(&dir, &git, &repo, &["refs/../../nowhere/"]);
    for prefix in [
        "refs/../../outside/",
        "refs/../../outside/ma",
        "refs/heads/../../../outside/",
        "refs/heads/../../../outside/secret/",
        absolute.as_str(),
    ] {
        reset_access_times(&outside);
        let actual = packgate_ls_refs(&dir, &repo, &[prefix]);
        let context = format!("ref-prefix {prefix}");
        assert!(actual.status.success(), "{context}: {actual}");
        assert_eq!(
            actual.stdout, nowhere.stdout,
            "{context}: packgate answered{actual}\n\nnot as to a prefix leading nowhere{nowhere}"
        );
        for path in [&outside, &secret] {
            assert_eq!(
                accessed(path),
                long_ago(),
                "{context}: packgate read {}",
                path.display()
            );
        }
    }

    // The probe works: reading the directories does move their access times.
    reset_access_times(&outside);
    set_mode(&secret, 0o755);
    for path in [&outside, &secret] {
        let entries = std::fs::read_dir(path).map(Iterator::count);
        assert!(entries.is_ok_and(|n| n > 0), "{}", path.display());
        assert!(
            permissions_bind || accessed(path) != long_ago(),
            "reading {} left its access time alone: this file system cannot show \
             whether packgate reads it",
            path.display()
        );
    }

    for prefixes in [
        &["refs/heads/ma"][..],
        &["refs/heads/"],
        &["r"],
        &["refs"],
        &["", "refs/heads/"],
        &["HEAD", "refs/tags/"],
        &["refs/heads/main/"],
    ] {
        let expected = git_ls_refs(&dir, &git, &repo, prefixes);
        let actual = packgate_ls_refs(&dir, &repo, prefixes);
        assert!(actual.status.success(), "{prefixes:?}: {actual}");
        assert_eq!(
            actual.stdout_text(),
            expected.stdout_text(),
            "ref-prefix {prefixes:?}"
        );
    }
}

/// `--receive-pack=…`: packgate's, or git 2.47's (the reference, the newest client).
fn receive_pack_option(server: Server) -> String {
    let program = match server {
        Server::Packgate => crate::util::PACKGATE.to_owned(),
        Server::Git => Git::newest().program.to_string_lossy().into_owned(),
    };
    format!(
        "--receive-pack='{}' receive-pack",
        program.replace('\'', r"'\''")
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    Packgate,
    Git,
}

/// Every ref of `repo` as `<name> <object id> <symref target>` lines: a symbolic ref that
/// stayed symbolic shows its target.
fn ref_state(dir: &Dir, git: &Git, repo: &Path) -> String {
    dir.git_in(git, repo)
        .args([
            "for-each-ref",
            "--format=%(refname) %(objectname) %(symref)",
        ])
        .run()
        .stdout_text()
}

fn rev_parse(dir: &Dir, git: &Git, repo: &Path, revision: &str) -> String {
    dir.git_in(git, repo)
        .args(["rev-parse", revision])
        .run()
        .stdout_text()
        .trim()
        .to_owned()
}

/// A client with commits `c0` ← `c1` ← `c2` ← `c3` on `master`, and a bare server holding
/// `c1` as `refs/heads/main`, `refs/heads/x` at `c2` and the symbolic ref
/// `refs/heads/alias` → `refs/heads/main`. Returns the client and the commits.
fn push_setup(dir: &Dir, git: &Git, server: &Path) -> (std::path::PathBuf, Vec<String>) {
    let client = dir.join("client");
    dir.git(git).args(["init", "-q"]).arg(&client).run();
    let mut commits = Vec::new();
    for n in 0..4 {
        let file = format!("c{n}.txt");
        write_file(&client.join(&file), file.as_bytes());
        dir.git(git).current_dir(&client).args(["add", &file]).run();
        dir.git(git)
            .current_dir(&client)
            .args(["commit", "-q", "-m", &file])
            .run();
        commits.push(rev_parse(dir, git, &client.join(".git"), "HEAD"));
    }
    dir.git(git)
        .args(["init", "-q", "--bare"])
        .arg(server)
        .run();
    dir.git(git)
        .current_dir(&client)
        .arg("push")
        .arg(crate::util::file_url(server))
        .arg(format!("{}:refs/heads/main", commits[1]))
        .arg(format!("{}:refs/heads/x", commits[2]))
        .run();
    dir.git_in(git, server)
        .args(["symbolic-ref", "refs/heads/alias", "refs/heads/main"])
        .run();
    (client, commits)
}

/// Pushes with the real git client whose refspecs reach one ref through a symbolic ref end
/// as through git's own receive-pack (same per-ref results, same refs after): a push to the
/// symbolic ref moves the ref it points to and leaves it symbolic; the symbolic ref and its
/// target set alike in one push are both done once; set differently, both are refused as an
/// inconsistent aliased update.
#[test]
fn pushes_through_a_symbolic_ref_end_as_with_git() {
    for git in Git::all() {
        let dir = Dir::new("push-symref");
        let template = dir.join("template.git");
        let (client, c) = push_setup(&dir, &git, &template);
        let scenarios: Vec<(&str, Vec<String>)> = vec![
            (
                "to the symbolic ref",
                vec![format!("{}:refs/heads/alias", c[2])],
            ),
            (
                "alike to both",
                vec![
                    format!("{}:refs/heads/main", c[2]),
                    format!("{}:refs/heads/alias", c[2]),
                ],
            ),
            (
                "alike to both, atomic",
                vec![
                    "--atomic".into(),
                    format!("{}:refs/heads/alias", c[3]),
                    format!("{}:refs/heads/main", c[3]),
                ],
            ),
            (
                "differently to both",
                vec![
                    format!("{}:refs/heads/main", c[2]),
                    format!("{}:refs/heads/alias", c[3]),
                ],
            ),
        ];
        for (n, (scenario, args)) in scenarios.iter().enumerate() {
            let mut results = Vec::new();
            for server in [Server::Git, Server::Packgate] {
                let repo = dir.join(&format!("{n}-{server:?}.git"));
                dir.copy_tree(&template, &repo);
                let output = dir
                    .git(&git)
                    .current_dir(&client)
                    .args(["push", "--porcelain"])
                    .arg(receive_pack_option(server))
                    .arg(crate::util::file_url(&repo))
                    .args(args)
                    .output();
                // The per-ref lines: flag, refspec, summary (the `To <url>` line differs).
                let lines: Vec<String> = output
                    .stdout_text()
                    .lines()
                    .filter(|line| line.contains('\t'))
                    .map(str::to_owned)
                    .collect();
                assert!(!lines.is_empty(), "{scenario} with {server:?}: {output}");
                results.push((output.status.success(), lines, ref_state(&dir, &git, &repo)));
                if server == Server::Packgate {
                    crate::util::fsck(&dir, &git, &repo);
                    let state = ref_state(&dir, &git, &repo);
                    assert!(
                        state.contains("refs/heads/alias ") && state.contains(" refs/heads/main\n"),
                        "{scenario}: the symbolic ref is gone: {state}"
                    );
                    if *scenario == "differently to both" {
                        assert!(
                            output
                                .stderr_text()
                                .contains("refusing inconsistent update between symref"),
                            "{scenario}: {output}"
                        );
                    }
                }
            }
            assert_eq!(
                results[1], results[0],
                "{scenario} with {git}: packgate (left) differs from git 2.47's receive-pack (right)"
            );
        }
    }
}

/// A push command: old value, new value, ref.
type Command<'a> = (&'a str, &'a str, &'a str);

const ZERO: &str = "0000000000000000000000000000000000000000";

/// A server template from [`push_setup`] for raw pushes, with its commits and the empty
/// pack that follows commands naming only objects the server has.
struct RawPushes {
    dir: Dir,
    git: Git,
    template: std::path::PathBuf,
    commits: Vec<String>,
    empty_pack: Vec<u8>,
    runs: usize,
}

impl RawPushes {
    fn new(name: &str, git: &Git) -> RawPushes {
        let dir = Dir::new(name);
        let template = dir.join("template.git");
        let (client, commits) = push_setup(&dir, git, &template);
        let empty_pack = dir
            .git(git)
            .current_dir(&client)
            .args(["pack-objects", "--stdout"])
            .run()
            .stdout;
        RawPushes {
            dir,
            git: git.clone(),
            template,
            commits,
            empty_pack,
            runs: 0,
        }
    }

    /// Sends `commands` (with `report-status`, and `atomic` if asked) to git's
    /// receive-pack and to packgate's, each on its own copy of the template; asserts both
    /// report the same and leave the same refs, and returns the report.
    #[track_caller]
    fn compare(&mut self, scenario: &str, atomic: bool, commands: &[Command<'_>]) -> Vec<String> {
        let mut pieces = Vec::new();
        for (index, (old, new, name)) in commands.iter().enumerate() {
            let capabilities = match (index, atomic) {
                (0, false) => "\0report-status",
                (0, true) => "\0report-status atomic",
                _ => "",
            };
            pieces.push(line(format!("{old} {new} {name}{capabilities}")));
        }
        pieces.push(FLUSH.to_vec());
        pieces.push(self.empty_pack.clone());
        let input = concat(pieces);
        self.runs += 1;
        let mut results = Vec::new();
        for server in [Server::Git, Server::Packgate] {
            let repo = self.dir.join(&format!("{}-{server:?}.git", self.runs));
            self.dir.copy_tree(&self.template, &repo);
            let program = match server {
                Server::Git => self.dir.git(&self.git),
                Server::Packgate => self.dir.packgate(),
            };
            let output = program
                .args(["receive-pack", "--stateless-rpc"])
                .arg(&repo)
                .stdin(input.clone())
                .output();
            let report = crate::pkt::lines(&crate::pkt::decode(&output.stdout).0);
            assert!(
                report.first().is_some_and(|l| l == "unpack ok"),
                "{scenario} with {server:?}: {output}"
            );
            results.push((report, ref_state(&self.dir, &self.git, &repo)));
        }
        assert_eq!(
            results[1], results[0],
            "{scenario}: packgate (left) differs from {} (right)",
            self.git
        );
        results.swap_remove(1).0
    }
}

/// Raw commands that name one ref twice (no git client sends them) end as with git 2.47's
/// receive-pack (no git client takes part): same report, same refs after. git carries the
/// commands out in turn, each checked against the value the ref has by then; an atomic push
/// of them fails whole.
#[test]
fn the_same_ref_twice_in_one_push_ends_as_with_git() {
    let mut pushes = RawPushes::new("push-twice", &Git::newest());
    let c = pushes.commits.clone();
    let (x, y) = ("refs/heads/x", "refs/heads/y");
    let (c0, c1, c2) = (c[0].as_str(), c[1].as_str(), c[2].as_str());
    let report = pushes.compare("in turn", false, &[(c2, c1, x), (c1, c0, x)]);
    assert_eq!(report, ["unpack ok", "ok refs/heads/x", "ok refs/heads/x"]);
    let report = pushes.compare("conflicting", false, &[(c2, c1, x), (c2, c0, x)]);
    assert_eq!(report.get(1).map(String::as_str), Some("ok refs/heads/x"));
    pushes.compare("identical", false, &[(c2, c1, x), (c2, c1, x)]);
    pushes.compare("created twice", false, &[(ZERO, c1, y), (ZERO, c0, y)]);
    pushes.compare("in turn, atomic", true, &[(c2, c1, x), (c1, c0, x)]);
}

/// Ref names git 2.47 refuses to update remotely ("funny refname") are refused by packgate
/// the same way, among them a one-level name below `refs/`, which only a deletion may use.
#[test]
fn funny_ref_names_are_refused_as_by_git() {
    let mut pushes = RawPushes::new("push-funny", &Git::newest());
    let c1 = pushes.commits[1].clone();
    for name in [
        "refs/one-level",
        "refs/heads/../../outside",
        "refs/heads/x.lock",
        "refs/heads/.hidden",
        "refs/heads/a..b",
        "HEAD",
        "heads/main",
    ] {
        let commands = [
            (ZERO, c1.as_str(), name),
            (ZERO, c1.as_str(), "refs/heads/ok"),
        ];
        let report = pushes.compare(name, false, &commands);
        assert_eq!(report.get(2).map(String::as_str), Some("ok refs/heads/ok"));
    }
    pushes.compare("delete one level", false, &[(ZERO, ZERO, "refs/one-level")]);
}
