//! Pushes from shallow clones (`git clone --depth 1`, made with git's own upload-pack):
//! into the repository they came from (no shallow update needed), and into repositories that
//! lack the history below the clone's boundary, refused unless `receive.shallowUpdate`, and
//! then with the same `$GIT_DIR/shallow` as `git receive-pack` writes. Over stdio, HTTP and
//! git://, with every git client; every server checked with `git fsck`.

use std::path::{Path, PathBuf};

use crate::http::{Push, Server};
use crate::receive_pack::{install_hook, receive_pack_option, rev_parse};
use crate::util::{file_url, fsck, git_upload_pack_option, refs, write_file, Dir, Git, Output};

/// A bare `origin.git` with three commits on `master`, its full clone `full`, and a depth-1
/// clone `shallow` (made by git's upload-pack) with one more commit on top.
struct Clones {
    dir: Dir,
    git: Git,
    origin: PathBuf,
    full: PathBuf,
    shallow: PathBuf,
    /// The shallow clone's boundary: origin's `master` when it was cloned.
    boundary: String,
    /// The commit the shallow clone made on top of it.
    tip: String,
}

impl Clones {
    fn new(name: &str, git: &Git) -> Clones {
        let dir = Dir::new(&format!("shallow-push-{name}"));
        let full = dir.join("full");
        let origin = dir.join("origin.git");
        let shallow = dir.join("shallow");
        dir.git(git).args(["init", "-q"]).arg(&full).run();
        for n in 1..=3 {
            commit(&dir, git, &full, &format!("history {n}"));
        }
        dir.git(git)
            .args(["clone", "-q", "--bare"])
            .arg(&full)
            .arg(&origin)
            .run();
        dir.git(git)
            .args(["clone", "-q", "--depth", "1", "--no-local"])
            .arg(git_upload_pack_option(git))
            .arg(file_url(&origin))
            .arg(&shallow)
            .run();
        let boundary = rev_parse(dir.git(git).current_dir(&shallow), "HEAD");
        assert_eq!(
            std::fs::read_to_string(shallow.join(".git/shallow"))
                .unwrap_or_else(|e| panic!("reading the clone's shallow file: {e}")),
            format!("{boundary}\n"),
            "the clone is shallow"
        );
        let tip = commit(&dir, git, &shallow, "on the shallow clone");
        Clones {
            dir,
            git: git.clone(),
            origin,
            full,
            shallow,
            boundary,
            tip,
        }
    }

    /// A new empty bare repository `name`.
    fn empty(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        self.dir
            .git(&self.git)
            .args(["init", "-q", "--bare"])
            .arg(&path)
            .run();
        path
    }

    /// `git push <url> <args>` from `from`, through packgate's receive-pack for a path, or
    /// as it is (an `http://` URL).
    fn push(&self, from: &Path, url: &str, packgate: bool, args: &[&str]) -> Output {
        let mut cmd = self.dir.git(&self.git).current_dir(from).arg("push");
        if packgate {
            cmd = cmd.arg(receive_pack_option());
        }
        cmd.arg(url).args(args).output()
    }

    fn set(&self, repo: &Path, key: &str, value: &str) {
        self.dir
            .git_in(&self.git, repo)
            .args(["config", key, value])
            .run();
    }

    fn shallow_file(&self, repo: &Path) -> Option<String> {
        std::fs::read_to_string(repo.join("shallow")).ok()
    }
}

/// Commits a new file in the work tree `work`; returns the commit id.
fn commit(dir: &Dir, git: &Git, work: &Path, message: &str) -> String {
    let file = format!("{}.txt", message.replace(' ', "-"));
    write_file(&work.join(&file), format!("{message}\n").as_bytes());
    dir.git(git).current_dir(work).args(["add", &file]).run();
    dir.git(git)
        .current_dir(work)
        .args(["commit", "-q", "-m", message])
        .run();
    rev_parse(dir.git(git).current_dir(work), "HEAD")
}

#[track_caller]
fn assert_refused_shallow_update(output: &Output, context: &str) {
    assert!(!output.status.success(), "{context}: accepted: {output}");
    assert!(
        output.stderr_text().contains("shallow update not allowed"),
        "{context}: {output}"
    );
}

/// (a) The common case: new commits on top of history the server has completely need no
/// shallow update and are accepted with the default configuration, over stdio, HTTP and
/// git://.
#[test]
fn push_from_a_shallow_clone_to_its_origin() {
    for git in Git::all() {
        let clones = Clones::new("origin", &git);
        let output = clones.push(
            &clones.shallow,
            &file_url(&clones.origin),
            true,
            &["master"],
        );
        assert!(output.status.success(), "{git}: {output}");
        fsck(&clones.dir, &git, &clones.origin);
        let origin_refs = refs(&clones.dir, &git, &clones.origin, &["refs/heads/master"]);
        assert_eq!(
            origin_refs.get("refs/heads/master"),
            Some(&clones.tip),
            "{git}"
        );
        assert_eq!(clones.shallow_file(&clones.origin), None, "{git}");

        // The same over HTTP (`packgate serve`), to a branch of a copy of the origin.
        let root = clones.dir.join("root");
        std::fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
        let served = root.join("served.git");
        clones.dir.copy_tree(&clones.origin, &served);
        let server = Server::start(&root, Push::AllowedWithoutAuthentication);
        let more = commit(&clones.dir, &git, &clones.shallow, "more");
        let output = clones.push(
            &clones.shallow,
            &server.http_url("served.git"),
            false,
            &["master:refs/heads/over-http"],
        );
        assert!(output.status.success(), "{git} over HTTP: {output}");
        fsck(&clones.dir, &git, &served);
        let served_refs = refs(&clones.dir, &git, &served, &["refs/heads/over-http"]);
        assert_eq!(
            served_refs.get("refs/heads/over-http"),
            Some(&more),
            "{git}"
        );
        assert_eq!(clones.shallow_file(&served), None, "{git}");
        // Nothing left to push: a shallow client still sends its `shallow` lines over HTTP.
        let output = clones.push(
            &clones.shallow,
            &server.http_url("served.git"),
            false,
            &["master:refs/heads/over-http"],
        );
        assert!(
            output.status.success(),
            "{git} up to date over HTTP: {output}"
        );
        assert!(
            output.stderr_text().contains("Everything up-to-date"),
            "{output}"
        );

        // And over git://, where the repository enables push.
        clones.set(&served, "daemon.receivepack", "true");
        let again = commit(&clones.dir, &git, &clones.shallow, "again");
        let output = clones.push(
            &clones.shallow,
            &server.git_url("served.git"),
            false,
            &["master:refs/heads/over-git"],
        );
        assert!(output.status.success(), "{git} over git://: {output}");
        fsck(&clones.dir, &git, &served);
        let served_refs = refs(&clones.dir, &git, &served, &["refs/heads/over-git"]);
        assert_eq!(
            served_refs.get("refs/heads/over-git"),
            Some(&again),
            "{git}"
        );
        assert_eq!(clones.shallow_file(&served), None, "{git}");
    }
}

/// (b) Into an empty repository the push would make the server shallow: refused with git's
/// words by default (over stdio and HTTP), accepted with `receive.shallowUpdate`, leaving
/// the shallow file, refs and advertisement `git receive-pack` leaves for the same push; the
/// hooks walk the new history with the shallow roots (`GIT_SHALLOW_FILE`); a later push that
/// brings the full history works as with git.
#[test]
fn shallow_update_into_an_empty_repository() {
    for git in Git::all() {
        let clones = Clones::new("empty", &git);
        let ours = clones.empty("ours.git");
        let output = clones.push(&clones.shallow, &file_url(&ours), true, &["master"]);
        assert_refused_shallow_update(&output, &format!("{git} over stdio"));
        assert!(refs(&clones.dir, &git, &ours, &[]).is_empty(), "{git}");
        assert_eq!(clones.shallow_file(&ours), None, "{git}");

        // Over HTTP, into a repository with unrelated history.
        let root = clones.dir.join("root");
        std::fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
        let unrelated = root.join("unrelated.git");
        clones
            .dir
            .git(&git)
            .args(["init", "-q", "--bare"])
            .arg(&unrelated)
            .run();
        let other = clones.dir.join("other");
        clones.dir.git(&git).args(["init", "-q"]).arg(&other).run();
        commit(&clones.dir, &git, &other, "unrelated");
        let output = clones.push(&other, &file_url(&unrelated), false, &["master"]);
        assert!(output.status.success(), "{output}");
        let before = refs(&clones.dir, &git, &unrelated, &[]);
        let server = Server::start(&root, Push::AllowedWithoutAuthentication);
        let output = clones.push(
            &clones.shallow,
            &server.http_url("unrelated.git"),
            false,
            &["master:refs/heads/from-shallow"],
        );
        assert_refused_shallow_update(&output, &format!("{git} over HTTP"));
        assert_eq!(refs(&clones.dir, &git, &unrelated, &[]), before, "{git}");
        assert_eq!(clones.shallow_file(&unrelated), None, "{git}");
        drop(server);

        // With receive.shallowUpdate: the same result as git's receive-pack.
        let theirs = clones.empty("theirs.git");
        // The hook walks the pushed history, which ends at the new root only with it.
        let hook = "while read old new ref; do git rev-list \"$new\" >/dev/null || exit 1; done";
        for repo in [&ours, &theirs] {
            clones.set(repo, "receive.shallowUpdate", "true");
            install_hook(&repo.join("hooks"), "pre-receive", hook);
        }
        let output = clones.push(&clones.shallow, &file_url(&ours), true, &["master"]);
        assert!(output.status.success(), "{git}: {output}");
        let output = clones.push(&clones.shallow, &file_url(&theirs), false, &["master"]);
        assert!(output.status.success(), "{git} with git: {output}");
        let expect_same = |context: &str| {
            fsck(&clones.dir, &git, &ours);
            fsck(&clones.dir, &git, &theirs);
            assert_eq!(
                clones.shallow_file(&ours),
                clones.shallow_file(&theirs),
                "{git}: {context}: shallow files"
            );
            assert_eq!(
                refs(&clones.dir, &git, &ours, &[]),
                refs(&clones.dir, &git, &theirs, &[]),
                "{git}: {context}: refs"
            );
            assert_eq!(
                advertisement(&clones.dir, &git, &ours, true),
                advertisement(&clones.dir, &git, &theirs, false),
                "{git}: {context}: advertisements"
            );
        };
        expect_same("after the shallow push");
        assert_eq!(
            clones.shallow_file(&ours),
            Some(format!("{}\n", clones.boundary)),
            "{git}"
        );
        assert!(!ours.join("shallow.lock").exists(), "{git}");

        // More from the shallow clone: its boundary is the server's now, nothing to add.
        commit(&clones.dir, &git, &clones.shallow, "after the update");
        for (repo, packgate) in [(&ours, true), (&theirs, false)] {
            let output = clones.push(&clones.shallow, &file_url(repo), packgate, &["master"]);
            assert!(output.status.success(), "{git}: {output}");
        }
        expect_same("after a second push from the shallow clone");

        // The full history, from a complete clone, to another branch.
        for (repo, packgate) in [(&ours, true), (&theirs, false)] {
            let output = clones.push(
                &clones.full,
                &file_url(repo),
                packgate,
                &["master:refs/heads/full"],
            );
            assert!(output.status.success(), "{git}: {output}");
        }
        expect_same("after a push of the full history");
    }
}

/// The lines of receive-pack's v0 advertisement for `repo` (packgate's or git's), each
/// without the capabilities after its NUL (git advertises fewer by default).
fn advertisement(dir: &Dir, git: &Git, repo: &Path, packgate: bool) -> Vec<String> {
    let cmd = if packgate {
        dir.packgate()
    } else {
        dir.git(git)
    };
    let output = cmd
        .args(["receive-pack", "--advertise-refs"])
        .arg(repo)
        .run();
    let (packets, rest) = crate::pkt::decode(&output.stdout);
    assert!(rest.is_empty(), "{output}");
    crate::pkt::lines(&packets)
        .into_iter()
        .map(|line| match line.split_once('\0') {
            Some((head, _capabilities)) => head.to_owned(),
            None => line,
        })
        .collect()
}

/// A shallow clone with two boundaries: `master`'s tip, which the origin has with its
/// history, and the tip of a branch `other` that the origin has deleted since (its commits
/// are still in its object store, unreachable: no complete history). Each branch gets a new
/// commit on the clone.
struct TwoBoundaries {
    clones: Clones,
    clone: PathBuf,
    /// The deleted branch's tip: the boundary the origin lacks complete history for.
    lost: String,
}

impl TwoBoundaries {
    fn new(name: &str, git: &Git) -> TwoBoundaries {
        let clones = Clones::new(name, git);
        let (dir, full) = (&clones.dir, &clones.full);
        dir.git(git)
            .current_dir(full)
            .args(["checkout", "-q", "-b", "other", "HEAD~2"])
            .run();
        let lost = commit(dir, git, full, "on other");
        let output = clones.push(full, &file_url(&clones.origin), false, &["other"]);
        assert!(output.status.success(), "{output}");
        let clone = dir.join("two-boundaries");
        dir.git(git)
            .args([
                "clone",
                "-q",
                "--depth",
                "1",
                "--no-single-branch",
                "--no-local",
            ])
            .arg(git_upload_pack_option(git))
            .arg(file_url(&clones.origin))
            .arg(&clone)
            .run();
        dir.git_in(git, &clones.origin)
            .args(["update-ref", "-d", "refs/heads/other"])
            .run();
        commit(dir, git, &clone, "master on the clone");
        dir.git(git)
            .current_dir(&clone)
            .args(["checkout", "-q", "-b", "other", "origin/other"])
            .run();
        commit(dir, git, &clone, "other on the clone");
        TwoBoundaries {
            clones,
            clone,
            lost,
        }
    }

    /// A copy of the origin (as it is now) named `name`, with `config` set.
    fn server(&self, name: &str, config: &[(&str, &str)]) -> PathBuf {
        let path = self.clones.dir.join(name);
        self.clones.dir.copy_tree(&self.clones.origin, &path);
        for (key, value) in config {
            self.clones.set(&path, key, value);
        }
        path
    }
}

/// Refs judged one by one, as git's receive-pack judges them: of a push of two branches, the
/// one whose new history needs the boundary the server lacks is refused and the other
/// accepted; with `receive.shallowUpdate` both are accepted and the server's shallow file
/// gains that boundary. Each result equals git's for the same push into a copy of the same
/// repository. With `--atomic` both are refused (git lets the other one through).
#[test]
fn refs_needing_a_shallow_update_are_judged_one_by_one() {
    for git in Git::all() {
        let setup = TwoBoundaries::new("mixed", &git);
        let clones = &setup.clones;
        for (mode, config, args) in [
            ("default", &[][..], &["master", "other"][..]),
            ("atomic", &[], &["--atomic", "master", "other"]),
            (
                "shallowUpdate",
                &[("receive.shallowUpdate", "true")],
                &["master", "other"],
            ),
        ] {
            let ours = setup.server(&format!("ours-{mode}.git"), config);
            let theirs = setup.server(&format!("theirs-{mode}.git"), config);
            let our_push = clones.push(&setup.clone, &file_url(&ours), true, args);
            let their_push = clones.push(&setup.clone, &file_url(&theirs), false, args);
            let context = format!("{git}, {mode}: {our_push}\ngit's: {their_push}");
            fsck(&clones.dir, &git, &ours);
            fsck(&clones.dir, &git, &theirs);
            assert_eq!(
                clones.shallow_file(&ours),
                clones.shallow_file(&theirs),
                "{context}"
            );
            if mode == "atomic" {
                // git 2.47 updates master here: a ref refused before its atomic transaction
                // (shallow update not allowed) does not fail the others. packgate keeps
                // --atomic's promise, all or nothing (README, "differs from git").
                assert!(!our_push.status.success(), "{context}");
                assert!(
                    our_push
                        .stderr_text()
                        .contains("[remote rejected] master -> master (atomic push failure)"),
                    "{context}"
                );
                assert_eq!(
                    refs(&clones.dir, &git, &ours, &[]),
                    refs(&clones.dir, &git, &clones.origin, &[]),
                    "{context}"
                );
                continue;
            }
            assert_eq!(
                our_push.status.success(),
                their_push.status.success(),
                "{context}"
            );
            assert_eq!(
                refs(&clones.dir, &git, &ours, &[]),
                refs(&clones.dir, &git, &theirs, &[]),
                "{context}"
            );
            match mode {
                "default" => {
                    assert!(
                        our_push.stderr_text().contains(
                            "[remote rejected] other -> other (shallow update not allowed)"
                        ),
                        "{context}"
                    );
                    let ours = refs(&clones.dir, &git, &ours, &[]);
                    assert!(ours.contains_key("refs/heads/master"), "{context}");
                    assert!(!ours.contains_key("refs/heads/other"), "{context}");
                }
                _ => assert_eq!(
                    clones.shallow_file(&ours),
                    Some(format!("{}\n", setup.lost)),
                    "{context}"
                ),
            }
        }
    }
}

/// (c) A server killed (SIGKILL) with the new shallow file written under `shallow.lock` but
/// not yet renamed leaves the old shallow file (none here), no moved ref and a repository
/// `git fsck` passes. The lock it leaves fails later shallow updates ("shallow error", other
/// refs go ahead), as git's would, until it is deleted; then the push works.
#[test]
fn a_server_killed_while_writing_the_shallow_file() {
    let git = Git::newest();
    let setup = TwoBoundaries::new("killed", &git);
    let clones = &setup.clones;
    let server = setup.server("server.git", &[("receive.shallowUpdate", "true")]);
    let before = refs(&clones.dir, &git, &server, &[]);
    let marker = clones.dir.join("marker");
    let mut push = clones
        .dir
        .git(&git)
        .current_dir(&setup.clone)
        .env("PACKGATE_TEST_PAUSE_BEFORE_SHALLOW_RENAME", &marker)
        .arg("push")
        .arg(receive_pack_option())
        .arg(file_url(&server))
        .args(["master", "other"])
        .spawn();
    crate::receive_pack::wait_until(
        crate::receive_pack::END_LIMIT,
        "the push to write the shallow file",
        || marker.exists() || push.has_exited(),
    );
    assert!(marker.exists(), "never paused: {}", push.kill_group());
    let pid =
        std::fs::read_to_string(&marker).unwrap_or_else(|e| panic!("reading the marker: {e}"));
    crate::util::Cmd::new(Path::new("kill"))
        .args(["-KILL", pid.trim()])
        .run();
    let output = push.wait(crate::receive_pack::END_LIMIT);
    assert!(!output.status.success(), "{output}");
    assert_eq!(clones.shallow_file(&server), None);
    assert!(server.join("shallow.lock").exists());
    assert_eq!(refs(&clones.dir, &git, &server, &[]), before);
    fsck(&clones.dir, &git, &server);

    // The stale lock: the ref that needs the update fails, the other one is done.
    let output = clones.push(&setup.clone, &file_url(&server), true, &["master", "other"]);
    assert!(
        output
            .stderr_text()
            .contains("[remote rejected] other -> other (shallow error)"),
        "{output}"
    );
    assert!(
        refs(&clones.dir, &git, &server, &[]).contains_key("refs/heads/master"),
        "{output}"
    );
    assert_eq!(clones.shallow_file(&server), None);
    fsck(&clones.dir, &git, &server);

    std::fs::remove_file(server.join("shallow.lock"))
        .unwrap_or_else(|e| panic!("removing the stale lock: {e}"));
    let output = clones.push(&setup.clone, &file_url(&server), true, &["other"]);
    assert!(output.status.success(), "{output}");
    assert_eq!(
        clones.shallow_file(&server),
        Some(format!("{}\n", setup.lost))
    );
    fsck(&clones.dir, &git, &server);
}

/// A `shallow` line that does not name an object ends the push with git's words; a shallow
/// client with nothing to push (its `shallow` lines, then a flush) ends it normally.
#[test]
fn shallow_lines_from_the_client() {
    use crate::pkt::{concat, error_reason, line, FLUSH};
    let git = Git::newest();
    let dir = Dir::new("shallow-push-lines");
    let repo = dir.join("repo.git");
    dir.git(&git)
        .args(["init", "-q", "--bare"])
        .arg(&repo)
        .run();
    let receive_pack = |input: Vec<u8>| {
        dir.packgate()
            .args(["receive-pack", "--stateless-rpc"])
            .arg(&repo)
            .stdin(input)
            .output()
    };
    let output = receive_pack(concat([line("shallow 1234\n"), FLUSH.to_vec()]));
    assert!(!output.status.success(), "{output}");
    assert_eq!(
        error_reason(&output.stdout).as_deref(),
        Some("protocol error: expected shallow sha, got '1234'"),
        "{output}"
    );
    let boundary = "1234567890123456789012345678901234567890";
    let output = receive_pack(concat([
        line(format!("shallow {boundary}\n")),
        FLUSH.to_vec(),
    ]));
    assert!(output.status.success(), "{output}");
    assert!(output.stdout.is_empty(), "{output}");
    assert!(refs(&dir, &git, &repo, &[]).is_empty());
}
