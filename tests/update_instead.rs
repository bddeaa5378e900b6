//! `receive.denyCurrentBranch=updateInstead`: pushes into the branch checked out in a
//! non-bare repository (its main work tree, or a linked one) update the work tree and the
//! index, or are refused when they are not clean; a `push-to-checkout` hook takes over.
//! Every push goes to two copies of the same server, one through packgate and one through
//! git's own receive-pack, and both must end the same: refs, work tree, index, messages.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::receive_pack::{
    assert_pushed, assert_rejected, install_hook, receive_pack_option, rev_parse,
};
use crate::util::{file_url, fsck, write_file, Cmd, Dir, Git, Output};

/// A client and two non-bare servers cloned from it: `ours` is pushed to through packgate,
/// `theirs` through git's receive-pack.
struct Servers {
    dir: Dir,
    git: Git,
    client: PathBuf,
    ours: PathBuf,
    theirs: PathBuf,
}

impl Servers {
    /// A client with a few files in one commit, and both servers cloned from it, configured
    /// with `receive.denyCurrentBranch=updateInstead`.
    fn new(name: &str, git: &Git) -> Servers {
        let dir = Dir::new(&format!("update-instead-{name}"));
        let client = dir.join("client");
        dir.git(git).args(["init", "-q"]).arg(&client).run();
        let servers = Servers {
            // The same name in both, so that their work trees compare equal, links included.
            ours: dir.join("ours/server"),
            theirs: dir.join("theirs/server"),
            dir,
            git: git.clone(),
            client,
        };
        servers.write("README", "first\n");
        servers.write("lib/one.txt", "one\n");
        servers.write("lib/deep/two.txt", "two\n");
        servers.write("gone.txt", "gone soon\n");
        servers.commit("first");
        for server in servers.servers() {
            servers
                .dir
                .git(git)
                .args(["clone", "-q"])
                .arg(&servers.client)
                .arg(server)
                .run();
            servers.in_server(
                server,
                &["config", "receive.denyCurrentBranch", "updateInstead"],
            );
        }
        servers
    }

    fn servers(&self) -> [&Path; 2] {
        [&self.ours, &self.theirs]
    }

    fn client(&self) -> Cmd {
        self.dir.git(&self.git).current_dir(&self.client)
    }

    /// `git <args>` in `work_tree`.
    fn in_server(&self, work_tree: &Path, args: &[&str]) -> Output {
        self.dir
            .git(&self.git)
            .current_dir(work_tree)
            .args(args)
            .run()
    }

    /// The same `git <args>` in both servers.
    fn in_both(&self, args: &[&str]) {
        for server in self.servers() {
            self.in_server(server, args);
        }
    }

    fn write(&self, path: &str, content: &str) {
        write_in(&self.client, path, content);
    }

    fn commit(&self, message: &str) -> String {
        self.client().args(["add", "-A"]).run();
        self.client().args(["commit", "-q", "-m", message]).run();
        rev_parse(self.client(), "HEAD")
    }

    /// `git push <args>` to both servers; packgate's result first.
    fn push(&self, args: &[&str]) -> (Output, Output) {
        let push = |server: &Path, through_packgate: bool| {
            let mut cmd = self.client().arg("push");
            if through_packgate {
                cmd = cmd.arg(receive_pack_option());
            }
            cmd.arg(file_url(server)).args(args).output()
        };
        (push(&self.ours, true), push(&self.theirs, false))
    }

    /// Both servers' state: `HEAD`, the index (`ls-files --stage`), `git status`, and the
    /// work tree's files with their kind, mode and content.
    fn states(&self) -> [State; 2] {
        self.servers().map(|server| State {
            head: rev_parse(self.dir.git(&self.git).current_dir(server), "HEAD"),
            index: self
                .in_server(server, &["ls-files", "--stage"])
                .stdout_text(),
            stat_dirty: self
                .in_server(server, &["diff-files", "--name-only"])
                .stdout_text(),
            status: self
                .in_server(server, &["status", "--porcelain", "--untracked-files=all"])
                .stdout_text(),
            files: work_tree_files(server),
        })
    }

    /// Both servers are in the same state, and their repositories pass `git fsck`.
    #[track_caller]
    fn assert_same(&self, context: &str) -> State {
        let [ours, theirs] = self.states();
        assert_eq!(
            ours, theirs,
            "{context}: packgate's server (left) differs from git's"
        );
        for server in self.servers() {
            fsck(&self.dir, &self.git, &server.join(".git"));
        }
        ours
    }
}

#[derive(Debug, PartialEq, Eq)]
struct State {
    head: String,
    index: String,
    /// `git diff-files` before anything refreshes the index: empty when the index's stat
    /// data matches the files.
    stat_dirty: String,
    status: String,
    files: BTreeMap<String, String>,
}

fn write_in(work_tree: &Path, path: &str, content: &str) {
    let path = work_tree.join(path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|error| panic!("{error}"));
    }
    write_file(&path, content.as_bytes());
}

/// Every file, link and directory below `work_tree` but `.git`: kind, mode and content.
fn work_tree_files(work_tree: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut pending = vec![work_tree.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("{error}")) {
            let entry = entry.unwrap_or_else(|error| panic!("{error}"));
            let path = entry.path();
            let name = path
                .strip_prefix(work_tree)
                .unwrap_or_else(|error| panic!("{error}"))
                .to_string_lossy()
                .into_owned();
            if name == ".git" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap_or_else(|error| panic!("{error}"));
            let description = if meta.file_type().is_symlink() {
                format!(
                    "link -> {}",
                    std::fs::read_link(&path)
                        .unwrap_or_else(|error| panic!("{error}"))
                        .display()
                )
            } else if meta.is_dir() {
                pending.push(path);
                "dir".to_owned()
            } else {
                let executable = meta.permissions().mode() & 0o111 != 0;
                let content = String::from_utf8_lossy(
                    &std::fs::read(&path).unwrap_or_else(|error| panic!("{error}")),
                )
                .into_owned();
                format!("file executable={executable}: {content}")
            };
            files.insert(name, description);
        }
    }
    files
}

fn set_executable(path: &Path, executable: bool) {
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|error| panic!("{error}"));
}

/// Both pushes succeeded.
#[track_caller]
fn assert_both_pushed((ours, theirs): &(Output, Output)) {
    assert_pushed(theirs);
    assert_pushed(ours);
}

/// Both pushes were refused for `reason`, and packgate said `message` (git's `error:` line)
/// if git did.
#[track_caller]
fn assert_both_rejected((ours, theirs): &(Output, Output), reason: &str, message: Option<&str>) {
    assert_rejected(theirs, reason);
    assert_rejected(ours, reason);
    if let Some(message) = message {
        assert!(
            theirs.stderr_text().contains(message),
            "git did not say '{message}': {theirs}"
        );
        assert!(
            ours.stderr_text().contains(message),
            "packgate did not say '{message}': {ours}"
        );
    }
}

#[test]
fn a_clean_work_tree_follows_the_pushed_branch() {
    for git in Git::all() {
        let servers = Servers::new("clean", &git);
        // Added, changed, removed; a new directory, a removed one; an executable; a link.
        servers.write("README", "second\n");
        servers.write("new/dir/file.txt", "new\n");
        servers.write("run.sh", "#!/bin/sh\necho run\n");
        set_executable(&servers.client.join("run.sh"), true);
        std::os::unix::fs::symlink("README", servers.client.join("link"))
            .unwrap_or_else(|error| panic!("{error}"));
        std::fs::remove_file(servers.client.join("gone.txt"))
            .unwrap_or_else(|error| panic!("{error}"));
        std::fs::remove_dir_all(servers.client.join("lib/deep"))
            .unwrap_or_else(|error| panic!("{error}"));
        let second = servers.commit("second");
        assert_both_pushed(&servers.push(&["master"]));
        let state = servers.assert_same("after the first update");
        assert_eq!(state.head, second);
        assert_eq!(state.status, "", "the work tree is clean after the push");
        assert_eq!(state.stat_dirty, "", "the index has the files' stat data");
        assert_eq!(
            state.files["run.sh"],
            "file executable=true: #!/bin/sh\necho run\n"
        );
        assert_eq!(state.files["link"], "link -> README");
        assert_eq!(
            state.files["new/dir/file.txt"],
            "file executable=false: new\n"
        );
        assert!(!state.files.contains_key("gone.txt"));
        assert!(
            !state.files.contains_key("lib/deep"),
            "an emptied directory goes"
        );

        // The mode alone, a link retargeted, a file becoming a directory and back.
        set_executable(&servers.client.join("run.sh"), false);
        std::fs::remove_file(servers.client.join("link")).unwrap_or_else(|error| panic!("{error}"));
        std::os::unix::fs::symlink("lib/one.txt", servers.client.join("link"))
            .unwrap_or_else(|error| panic!("{error}"));
        std::fs::remove_file(servers.client.join("README"))
            .unwrap_or_else(|error| panic!("{error}"));
        servers.write("README/inside.txt", "inside\n");
        servers.commit("third");
        assert_both_pushed(&servers.push(&["master"]));
        let state = servers.assert_same("after the second update");
        assert_eq!(state.status, "");
        assert_eq!(
            state.files["run.sh"],
            "file executable=false: #!/bin/sh\necho run\n"
        );
        assert_eq!(state.files["README"], "dir");

        std::fs::remove_dir_all(servers.client.join("README"))
            .unwrap_or_else(|error| panic!("{error}"));
        servers.write("README", "a file again\n");
        servers.commit("fourth");
        assert_both_pushed(&servers.push(&["master"]));
        assert_eq!(servers.assert_same("after the third update").status, "");

        // A rewind (forced) is checked out the same way.
        servers
            .client()
            .args(["reset", "-q", "--hard", "HEAD~3"])
            .run();
        servers.write("other.txt", "other\n");
        servers.commit("rewritten");
        assert_both_pushed(&servers.push(&["--force", "master"]));
        assert_eq!(servers.assert_same("after a forced update").status, "");
    }
}

#[test]
fn files_that_only_need_a_refresh_are_clean() {
    for git in Git::all() {
        let servers = Servers::new("refresh", &git);
        // Same content, new stat data: git's `update-index --refresh` finds them unchanged.
        for server in servers.servers() {
            let file = server.join("lib/one.txt");
            write_file(&file, b"one\n");
            let later = std::time::SystemTime::now() + std::time::Duration::from_secs(100);
            std::fs::File::options()
                .write(true)
                .open(&file)
                .unwrap_or_else(|error| panic!("{error}"))
                .set_modified(later)
                .unwrap_or_else(|error| panic!("{error}"));
        }
        servers.write("README", "second\n");
        servers.commit("second");
        assert_both_pushed(&servers.push(&["master"]));
        assert_eq!(servers.assert_same("after the push").status, "");
    }
}

#[test]
fn a_dirty_work_tree_refuses_the_push_and_stays_as_it_was() {
    type Dirt = fn(&Servers, &Path);
    let cases: [(&str, Dirt, &str, Option<&str>); 7] = [
        (
            "a changed file",
            |_, server| write_in(server, "lib/one.txt", "changed\n"),
            "Working directory has unstaged changes",
            None,
        ),
        (
            "a deleted file",
            |_, server| {
                std::fs::remove_file(server.join("gone.txt"))
                    .unwrap_or_else(|error| panic!("{error}"))
            },
            "Working directory has unstaged changes",
            None,
        ),
        (
            "a changed mode",
            |_, server| set_executable(&server.join("README"), true),
            "Working directory has unstaged changes",
            None,
        ),
        (
            "a staged change",
            |servers, server| {
                write_in(server, "lib/one.txt", "staged\n");
                servers.in_server(server, &["add", "lib/one.txt"]);
            },
            "Working directory has staged changes",
            None,
        ),
        (
            "an untracked file in the way",
            |_, server| write_in(server, "added.txt", "untracked\n"),
            "Could not update working tree to new HEAD",
            Some("Untracked working tree file 'added.txt' would be overwritten by merge."),
        ),
        (
            "an untracked file where a directory goes",
            |_, server| write_in(server, "newdir", "untracked\n"),
            "Could not update working tree to new HEAD",
            Some("Untracked working tree file 'newdir' would be overwritten by merge."),
        ),
        (
            "a link out of the work tree where a directory goes",
            |_, server| {
                std::fs::create_dir_all(server.with_file_name("outside"))
                    .unwrap_or_else(|error| panic!("{error}"));
                std::os::unix::fs::symlink("../outside", server.join("newdir"))
                    .unwrap_or_else(|error| panic!("{error}"));
            },
            "Could not update working tree to new HEAD",
            Some("Untracked working tree file 'newdir' would be overwritten by merge."),
        ),
    ];
    for git in Git::all() {
        for (name, dirty, reason, message) in cases {
            let servers = Servers::new("dirty", &git);
            for server in servers.servers() {
                dirty(&servers, server);
            }
            let before = servers.states();
            servers.write("lib/one.txt", "pushed\n");
            servers.write("added.txt", "pushed\n");
            servers.write("newdir/file.txt", "pushed\n");
            servers.commit("second");
            let outputs = servers.push(&["master"]);
            assert_both_rejected(&outputs, reason, message);
            let after = servers.assert_same(name);
            assert_eq!(after, before[0], "{name}: packgate's server changed");
            assert_eq!(
                servers.states()[1],
                before[1],
                "{name}: git's server changed"
            );
            for server in servers.servers() {
                let outside = server.with_file_name("outside");
                if outside.exists() {
                    let written = std::fs::read_dir(&outside)
                        .unwrap_or_else(|error| panic!("{error}"))
                        .count();
                    assert_eq!(
                        written, 0,
                        "{name}: a file was written outside the work tree"
                    );
                }
            }
        }
    }
}

#[test]
fn untracked_files_elsewhere_and_empty_directories_in_the_way_do_not_matter() {
    for git in Git::all() {
        let servers = Servers::new("untracked", &git);
        for server in servers.servers() {
            write_in(server, "notes.txt", "mine\n");
            std::fs::create_dir_all(server.join("newdir/empty"))
                .unwrap_or_else(|error| panic!("{error}"));
        }
        // A file where the empty directory was.
        servers.write("newdir", "a file\n");
        servers.commit("second");
        assert_both_pushed(&servers.push(&["master"]));
        let state = servers.assert_same("after the push");
        assert_eq!(state.status, "?? notes.txt\n");
    }
}

#[test]
fn push_to_checkout_hook_decides() {
    for git in Git::all() {
        let servers = Servers::new("hook", &git);
        // git's example: a two-way read-tree that keeps unrelated local changes.
        let hook = r#"echo "push-to-checkout $1 in $(pwd) GIT_DIR=$GIT_DIR GIT_WORK_TREE=$GIT_WORK_TREE" >&2
git update-index -q --refresh && git read-tree -u -m HEAD "$1" || {
	status=$?
	echo >&2 read-tree failed
	exit $status
}"#;
        for server in servers.servers() {
            install_hook(&server.join(".git/hooks"), "push-to-checkout", hook);
            // Unrelated changes, which the default would refuse.
            write_in(server, "README", "local change\n");
        }
        servers.write("lib/one.txt", "pushed\n");
        let second = servers.commit("second");
        let outputs = servers.push(&["master"]);
        assert_both_pushed(&outputs);
        let state = servers.assert_same("after the hook accepted");
        assert_eq!(state.head, second);
        assert_eq!(state.status, " M README\n");
        let ours = std::fs::canonicalize(&servers.ours).unwrap_or_else(|error| panic!("{error}"));
        // As git runs it: in the git directory, told where the work tree is.
        let expected = format!(
            "push-to-checkout {second} in {} GIT_DIR={} GIT_WORK_TREE={}",
            ours.join(".git").display(),
            ours.join(".git").display(),
            ours.display()
        );
        assert!(outputs.0.stderr_text().contains(&expected), "{}", outputs.0);

        // A conflicting change: the hook's read-tree fails, and so does the push.
        servers.write("README", "pushed\n");
        servers.commit("third");
        let outputs = servers.push(&["master"]);
        assert_both_rejected(
            &outputs,
            "push-to-checkout hook declined",
            Some("read-tree failed"),
        );
        let state = servers.assert_same("after the hook refused");
        assert_eq!(state.head, second);
    }
}

#[test]
fn an_empty_repository_gets_its_first_commit_checked_out() {
    for git in Git::all() {
        let servers = Servers::new("unborn", &git);
        for server in servers.servers() {
            std::fs::remove_dir_all(server).unwrap_or_else(|error| panic!("{error}"));
            servers.dir.git(&git).args(["init", "-q"]).arg(server).run();
            servers.in_server(
                server,
                &["config", "receive.denyCurrentBranch", "updateInstead"],
            );
        }
        assert_both_pushed(&servers.push(&["master"]));
        let state = servers.assert_same("after the first push");
        assert_eq!(state.status, "");
        assert_eq!(
            state.files["lib/deep/two.txt"],
            "file executable=false: two\n"
        );
        // A later push that is not a fast-forward is refused by the check before.
        servers.in_both(&["config", "receive.denyNonFastForwards", "true"]);
        servers
            .client()
            .args(["commit", "-q", "--amend", "-m", "amended"])
            .run();
        let outputs = servers.push(&["--force", "master"]);
        assert_both_rejected(&outputs, "non-fast-forward", None);
        servers.assert_same("after the refused push");
    }
}

#[test]
fn a_branch_checked_out_in_a_linked_work_tree() {
    for git in Git::all() {
        let servers = Servers::new("worktrees", &git);
        let linked = |server: &Path| {
            server.with_file_name(format!(
                "{}-side",
                server.file_name().unwrap_or_default().to_string_lossy()
            ))
        };
        for server in servers.servers() {
            servers.in_server(server, &["config", "receive.denyCurrentBranch", "refuse"]);
            let path = linked(server);
            servers.in_server(
                server,
                &[
                    "worktree",
                    "add",
                    "-q",
                    "-b",
                    "side",
                    &path.to_string_lossy(),
                ],
            );
        }
        servers.write("side.txt", "side\n");
        let side = servers.commit("side");
        let outputs = servers.push(&["HEAD:side"]);
        assert_both_rejected(&outputs, "branch is currently checked out", None);

        servers.in_both(&["config", "receive.denyCurrentBranch", "updateInstead"]);
        assert_both_pushed(&servers.push(&["HEAD:side"]));
        let [ours, theirs] = servers.servers().map(|server| {
            let path = linked(server);
            (
                rev_parse(servers.dir.git(&git).current_dir(&path), "HEAD"),
                servers
                    .in_server(&path, &["status", "--porcelain"])
                    .stdout_text(),
                work_tree_files(&path),
            )
        });
        assert_eq!(ours, theirs, "the linked work trees differ");
        assert_eq!(ours.0, side);
        assert_eq!(ours.1, "");
        assert_eq!(ours.2["side.txt"], "file executable=false: side\n");
        // The main work tree (on master) stays as it was.
        let state = servers.assert_same("the main work trees");
        assert!(!state.files.contains_key("side.txt"));

        // Deleting it is refused, as deleting the current branch.
        let outputs = servers.push(&["--delete", "side"]);
        assert_both_rejected(&outputs, "deletion of the current branch prohibited", None);
    }
}

#[test]
fn a_linked_work_tree_of_a_bare_repository() {
    for git in Git::all() {
        let dir = Dir::new("update-instead-bare");
        let client = dir.join("client");
        dir.git(&git).args(["init", "-q"]).arg(&client).run();
        write_in(&client, "file.txt", "one\n");
        let in_client = || dir.git(&git).current_dir(&client);
        in_client().args(["add", "."]).run();
        in_client().args(["commit", "-q", "-m", "one"]).run();
        let mut results = Vec::new();
        for (name, through_packgate) in [("ours.git", true), ("theirs.git", false)] {
            let bare = dir.join(name);
            dir.git(&git)
                .args(["clone", "-q", "--bare"])
                .arg(&client)
                .arg(&bare)
                .run();
            let wt = bare.join("wt");
            dir.git_in(&git, &bare)
                .args(["worktree", "add", "-q"])
                .arg(&wt)
                .run();
            write_in(&client, "grape.txt", name);
            in_client().args(["add", "."]).run();
            in_client().args(["commit", "-q", "-m", name]).run();
            let push = |args: &[&str]| {
                let mut cmd = in_client().arg("push");
                if through_packgate {
                    cmd = cmd.arg(receive_pack_option());
                }
                cmd.arg(file_url(&bare)).args(args).output()
            };
            dir.git_in(&git, &bare)
                .args(["config", "receive.denyCurrentBranch", "refuse"])
                .run();
            assert_rejected(&push(&["HEAD:wt"]), "branch is currently checked out");
            dir.git_in(&git, &bare)
                .args(["config", "receive.denyCurrentBranch", "updateInstead"])
                .run();
            assert_pushed(&push(&["HEAD:wt"]));
            assert_eq!(
                std::fs::read_to_string(wt.join("grape.txt"))
                    .unwrap_or_else(|error| panic!("{error}")),
                name
            );
            let status = dir
                .git(&git)
                .current_dir(&wt)
                .args(["status", "--porcelain"])
                .run();
            assert_eq!(status.stdout_text(), "");
            assert_rejected(
                &push(&["--delete", "wt"]),
                "deletion of the current branch prohibited",
            );
            fsck(&dir, &git, &bare);
            results.push(work_tree_files(&wt).len());
        }
        assert_eq!(results[0], results[1]);
    }
}

#[test]
fn the_checked_out_branch_is_not_deleted() {
    for git in Git::all() {
        let servers = Servers::new("delete", &git);
        let outputs = servers.push(&["--delete", "master"]);
        assert_both_rejected(&outputs, "deletion of the current branch prohibited", None);
        // Allowed as a deletion, but there is nothing to check out.
        servers.in_both(&["config", "receive.denyDeleteCurrent", "ignore"]);
        let outputs = servers.push(&["--delete", "master"]);
        assert_both_rejected(&outputs, "Could not update working tree to new HEAD", None);
        servers.assert_same("after the refused deletion");
    }
}

#[test]
fn an_atomic_push_with_the_checked_out_branch() {
    for git in Git::all() {
        let servers = Servers::new("atomic", &git);
        servers.write("README", "second\n");
        servers.commit("second");
        // A dirty work tree fails the whole push.
        for server in servers.servers() {
            write_in(server, "lib/one.txt", "changed\n");
        }
        let outputs = servers.push(&["--atomic", "master", "master:refs/heads/other"]);
        assert_both_rejected(&outputs, "Working directory has unstaged changes", None);
        assert_both_rejected(&outputs, "atomic push failure", None);
        servers.assert_same("after the refused atomic push");
        // A clean one is updated with the refs.
        servers.in_both(&["checkout", "--", "lib/one.txt"]);
        assert_both_pushed(&servers.push(&["--atomic", "master", "master:refs/heads/other"]));
        assert_eq!(servers.assert_same("after the atomic push").status, "");
    }
}
