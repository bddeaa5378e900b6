use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
};

use bstr::BString;
use gix_hash::ObjectId;

use crate::{Finding, Hook, HookContext, Hooks, RefUpdate, SecretScanner, Verdict};

fn null() -> ObjectId {
    ObjectId::null(gix_hash::Kind::Sha1)
}

fn id(hex_digit: char) -> ObjectId {
    ObjectId::from_hex(hex_digit.to_string().repeat(40).as_bytes()).unwrap()
}

fn ctx() -> HookContext<'static> {
    HookContext {
        git_dir: Path::new("."),
        quarantine: None,
        objects: &gix_object::find::Never,
        push_options: None,
        remote_user: None,
        push_certificate: None,
    }
}

#[test]
fn ref_update_kinds() {
    let create = RefUpdate::new(null(), id('1'), "refs/heads/new");
    let delete = RefUpdate::new(id('1'), null(), "refs/heads/old");
    let update = RefUpdate::new(id('1'), id('2'), "refs/heads/main");
    assert!(create.is_create() && !create.is_delete());
    assert!(!delete.is_create() && delete.is_delete());
    assert!(!update.is_create() && !update.is_delete());
}

/// Records its calls in a shared log and answers with a fixed verdict.
struct Recorder {
    name: &'static str,
    verdict: Verdict,
    log: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn record(&self, phase: &str, output: &mut dyn Write) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{} {phase}", self.name));
        writeln!(output, "{} {phase}", self.name).unwrap();
    }
}

impl Hook for Recorder {
    fn pre_receive(&self, _: &HookContext<'_>, _: &[RefUpdate], output: &mut dyn Write) -> Verdict {
        self.record("pre-receive", output);
        self.verdict.clone()
    }

    fn update(&self, _: &HookContext<'_>, _: &RefUpdate, output: &mut dyn Write) -> Verdict {
        self.record("update", output);
        self.verdict.clone()
    }

    fn post_receive(&self, _: &HookContext<'_>, _: &[RefUpdate], output: &mut dyn Write) {
        self.record("post-receive", output);
    }

    fn post_update(&self, _: &HookContext<'_>, _: &[BString], output: &mut dyn Write) {
        self.record("post-update", output);
    }
}

fn chain(verdicts: &[(&'static str, Verdict)]) -> (Hooks, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut hooks = Hooks::new();
    for (name, verdict) in verdicts {
        hooks.push(Recorder {
            name,
            verdict: verdict.clone(),
            log: log.clone(),
        });
    }
    (hooks, log)
}

#[test]
fn chain_runs_in_order_and_first_refusal_wins() {
    let (hooks, log) = chain(&[
        ("a", Verdict::Accept),
        ("b", Verdict::refuse("b says no")),
        ("c", Verdict::refuse("c says no")),
    ]);
    assert_eq!(hooks.len(), 3);
    let update = RefUpdate::new(id('1'), id('2'), "refs/heads/main");
    let mut output = Vec::new();
    assert_eq!(
        hooks.pre_receive(&ctx(), std::slice::from_ref(&update), &mut output),
        Verdict::refuse("b says no")
    );
    assert_eq!(
        hooks.update(&ctx(), &update, &mut output),
        Verdict::refuse("b says no")
    );
    // Post hooks cannot refuse: every hook runs.
    hooks.post_receive(&ctx(), std::slice::from_ref(&update), &mut output);
    hooks.post_update(&ctx(), std::slice::from_ref(&update.name), &mut output);
    let expected = [
        "a pre-receive",
        "b pre-receive",
        "a update",
        "b update",
        "a post-receive",
        "b post-receive",
        "c post-receive",
        "a post-update",
        "b post-update",
        "c post-update",
    ];
    assert_eq!(*log.lock().unwrap(), expected);
    let written: Vec<&str> = std::str::from_utf8(&output).unwrap().lines().collect();
    assert_eq!(written, expected);
}

#[test]
fn chain_of_accepting_hooks_accepts() {
    let (hooks, log) = chain(&[("a", Verdict::Accept), ("b", Verdict::Accept)]);
    let update = RefUpdate::new(null(), id('2'), "refs/heads/new");
    let mut output = Vec::new();
    assert_eq!(
        hooks.pre_receive(&ctx(), std::slice::from_ref(&update), &mut output),
        Verdict::Accept
    );
    assert_eq!(hooks.update(&ctx(), &update, &mut output), Verdict::Accept);
    assert_eq!(
        *log.lock().unwrap(),
        ["a pre-receive", "b pre-receive", "a update", "b update"]
    );
    assert!(Hooks::new().is_empty());
    assert_eq!(
        Hooks::new().pre_receive(&ctx(), &[update], &mut output),
        Verdict::Accept
    );
}

#[test]
fn chains_nest_and_shared_hooks_work() {
    let (inner, log) = chain(&[("inner", Verdict::refuse("inner says no"))]);
    let shared: Arc<dyn Hook> = Arc::new(Recorder {
        name: "shared",
        verdict: Verdict::Accept,
        log: log.clone(),
    });
    let outer = Hooks::new().with(shared).with(inner);
    let update = RefUpdate::new(id('1'), id('2'), "refs/heads/main");
    assert_eq!(
        outer.update(&ctx(), &update, &mut Vec::new()),
        Verdict::refuse("inner says no")
    );
    assert_eq!(*log.lock().unwrap(), ["shared update", "inner update"]);
}

/// A non-bare repository built with git, its objects read through gix-odb.
struct Repo {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        std::fs::create_dir(&path).unwrap();
        let repo = Repo { _dir: dir, path };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .args(args)
            .current_dir(&self.path)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "A")
            .env("GIT_AUTHOR_EMAIL", "a@example.com")
            .env("GIT_AUTHOR_DATE", "1700000000 +0000")
            .env("GIT_COMMITTER_NAME", "C")
            .env("GIT_COMMITTER_EMAIL", "c@example.com")
            .env("GIT_COMMITTER_DATE", "1700000000 +0000")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "git {args:?} in {}: {}",
            self.path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn write(&self, file: &str, content: &str) {
        let path = self.path.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn commit(&self, message: &str) -> ObjectId {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.id("HEAD")
    }

    fn id(&self, rev: &str) -> ObjectId {
        ObjectId::from_hex(self.git(&["rev-parse", "--verify", rev]).trim().as_bytes()).unwrap()
    }

    fn db(&self) -> gix_odb::Handle {
        gix_odb::at(self.path.join(".git/objects"), gix_hash::Kind::Sha1).unwrap()
    }
}

const SECRET: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";

/// History: `clean` (two files), `leak` (adds a key under `dir/sub`), `later` (changes
/// `a.txt`, the key stays), `fixed` (removes the key).
struct History {
    repo: Repo,
    clean: ObjectId,
    leak: ObjectId,
    later: ObjectId,
    fixed: ObjectId,
}

fn history() -> History {
    let repo = Repo::new();
    repo.write("a.txt", "hello\n");
    repo.write("dir/b.txt", "world\n");
    let clean = repo.commit("clean");
    repo.write(
        "dir/sub/key",
        &format!("{SECRET}\nb3BlbnNzaC1rZXktdjEAAAAA\n"),
    );
    let leak = repo.commit("leak");
    repo.write("a.txt", "hello again\n");
    let later = repo.commit("later");
    std::fs::remove_file(repo.path.join("dir/sub/key")).unwrap();
    let fixed = repo.commit("fixed");
    History {
        repo,
        clean,
        leak,
        later,
        fixed,
    }
}

#[test]
fn secret_scanner_finds_introduced_secrets_only() {
    let history = history();
    let db = history.repo.db();
    let scanner = SecretScanner::new(SECRET);
    let key = history.repo.id(&format!("{}:dir/sub/key", history.leak));
    let scan = |old: ObjectId, new: ObjectId| {
        scanner
            .scan(&db, &[RefUpdate::new(old, new, "refs/heads/main")])
            .unwrap()
    };
    let leak_finding = Finding {
        refname: "refs/heads/main".into(),
        commit: Some(history.leak),
        path: "dir/sub/key".into(),
        blob: key,
    };

    assert_eq!(scan(null(), history.clean), None);
    assert_eq!(scan(null(), history.leak), Some(leak_finding.clone()));
    assert_eq!(
        scan(history.clean, history.leak),
        Some(leak_finding.clone())
    );
    // Reached through a later commit's tree, the key is reported there first.
    assert_eq!(
        scan(history.clean, history.later),
        Some(Finding {
            commit: Some(history.later),
            ..leak_finding.clone()
        })
    );
    // Already in the old value: not this push's doing.
    assert_eq!(scan(history.leak, history.later), None);
    assert_eq!(scan(history.leak, history.fixed), None);
    // Removed again, but the history in between still holds it.
    assert_eq!(
        scan(history.clean, history.fixed),
        Some(Finding {
            commit: Some(history.later),
            ..leak_finding
        })
    );
    // Deletions are not scanned.
    assert_eq!(scan(history.leak, null()), None);
}

#[test]
fn secret_scanner_stops_at_its_commit_limit() {
    let history = history();
    let db = history.repo.db();
    let updates = [RefUpdate::new(null(), history.fixed, "refs/heads/main")];
    let found = SecretScanner::new(SECRET).scan(&db, &updates).unwrap();
    // `fixed` has no key; its parent `later` does.
    assert_eq!(
        found.map(|finding| finding.commit),
        Some(Some(history.later))
    );
    let limited = SecretScanner::new(SECRET).with_commit_limit(1);
    assert_eq!(limited.commit_limit(), 1);
    assert_eq!(limited.scan(&db, &updates).unwrap(), None);
}

#[test]
fn secret_scanner_follows_tags_and_scans_every_ref() {
    let history = history();
    history
        .repo
        .git(&["tag", "-a", "-m", "leaky", "v1", &history.leak.to_string()]);
    let tag = history.repo.id("refs/tags/v1");
    let db = history.repo.db();
    let updates = [
        RefUpdate::new(null(), history.clean, "refs/heads/main"),
        RefUpdate::new(null(), tag, "refs/tags/v1"),
    ];
    let finding = SecretScanner::new(SECRET)
        .scan(&db, &updates)
        .unwrap()
        .unwrap();
    assert_eq!(finding.refname, "refs/tags/v1");
    assert_eq!(finding.commit, Some(history.leak));
    assert_eq!(finding.path, "dir/sub/key");
}

#[test]
fn secret_scanner_as_pre_receive_hook() {
    let history = history();
    let db = history.repo.db();
    let ctx = HookContext {
        git_dir: &history.repo.path,
        quarantine: None,
        objects: &db,
        push_options: None,
        remote_user: None,
        push_certificate: None,
    };
    let scanner = SecretScanner::new(SECRET);
    let key = history.repo.id(&format!("{}:dir/sub/key", history.leak));

    let mut output = Vec::new();
    let clean = [RefUpdate::new(null(), history.clean, "refs/heads/main")];
    assert_eq!(
        scanner.pre_receive(&ctx, &clean, &mut output),
        Verdict::Accept
    );
    assert!(output.is_empty());

    let leak = [RefUpdate::new(
        history.clean,
        history.leak,
        "refs/heads/main",
    )];
    assert_eq!(
        scanner.pre_receive(&ctx, &leak, &mut output),
        Verdict::refuse(format!("secret found in blob {key}"))
    );
    assert_eq!(
        std::str::from_utf8(&output).unwrap(),
        format!(
            "error: blob {key} at dir/sub/key in commit {} (refs/heads/main) contains a secret\n",
            history.leak
        )
    );
}

#[test]
fn secret_scanner_refuses_what_it_cannot_read() {
    let history = history();
    let db = history.repo.db();
    let missing = [RefUpdate::new(null(), id('e'), "refs/heads/main")];
    let scanner = SecretScanner::new(SECRET);
    let err = scanner.scan(&db, &missing).unwrap_err();
    assert_eq!(err.to_string(), format!("object {} is missing", id('e')));
    let ctx = HookContext {
        objects: &db,
        ..ctx()
    };
    let mut output = Vec::new();
    assert_eq!(
        scanner.pre_receive(&ctx, &missing, &mut output),
        Verdict::refuse("secret scan failed")
    );
    assert_eq!(
        std::str::from_utf8(&output).unwrap(),
        format!("error: secret scan failed: object {} is missing\n", id('e'))
    );
    // An old value the repository lacks is no reason to refuse.
    let stale_old = [RefUpdate::new(id('e'), history.clean, "refs/heads/main")];
    assert_eq!(scanner.scan(&db, &stale_old).unwrap(), None);
}

#[test]
fn empty_pattern_matches_nothing() {
    let history = history();
    let db = history.repo.db();
    let updates = [RefUpdate::new(null(), history.leak, "refs/heads/main")];
    assert_eq!(SecretScanner::new("").scan(&db, &updates).unwrap(), None);
}

/// Takes over the work tree (or not) with a fixed answer.
struct Checkouts(Option<Verdict>);

impl Hook for Checkouts {
    fn push_to_checkout(
        &self,
        _: &HookContext<'_>,
        _: &crate::Checkout<'_>,
        output: &mut dyn Write,
    ) -> Option<Verdict> {
        let _ = writeln!(output, "{:?}", self.0);
        self.0.clone()
    }
}

#[test]
fn the_first_hook_that_takes_the_work_tree_over_decides() {
    let path = std::path::Path::new("/work");
    let checkout = crate::Checkout {
        name: "refs/heads/main".into(),
        new: id('1'),
        git_dir: path,
        work_tree: path,
    };
    let ask = |hooks: Hooks| {
        let mut output = Vec::new();
        let verdict = hooks.push_to_checkout(&ctx(), &checkout, &mut output);
        (verdict, String::from_utf8(output).unwrap())
    };
    // By default nobody does: receive-pack checks the work tree out itself.
    assert_eq!(
        ask(Hooks::new().with(Checkouts(None))),
        (None, "None\n".into())
    );
    let refuse = Verdict::refuse("not now");
    assert_eq!(
        ask(Hooks::new()
            .with(Checkouts(None))
            .with(Checkouts(Some(refuse.clone())))
            .with(Checkouts(Some(Verdict::Accept)))),
        (Some(refuse.clone()), format!("None\nSome({refuse:?})\n"))
    );
}
