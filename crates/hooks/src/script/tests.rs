use std::{
    fs,
    io::{self, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bstr::BString;
use gix_hash::ObjectId;

use super::{append_alternate, ScriptHooks};
use crate::{Hook, HookContext, QuarantinePaths, RefUpdate, Verdict};

/// A bare-looking repository directory with a hooks directory, in a temporary directory.
struct Repo {
    _dir: tempfile::TempDir,
    git_dir: PathBuf,
    quarantine: QuarantinePaths,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let git_dir = dir.path().join("repo.git");
        fs::create_dir_all(git_dir.join("hooks")).unwrap();
        let objects_dir = git_dir.join("objects");
        let quarantine = objects_dir.join("tmp_objdir-incoming-test");
        fs::create_dir_all(&quarantine).unwrap();
        Repo {
            _dir: dir,
            git_dir,
            quarantine: QuarantinePaths {
                quarantine,
                objects_dir,
                shallow_file: None,
            },
        }
    }

    /// Write an executable `sh` script for `hook`.
    fn hook(&self, hook: &str, body: &str) {
        self.script(hook, &format!("#!/bin/sh\n{body}\n"), 0o755);
    }

    fn script(&self, hook: &str, text: &str, mode: u32) {
        let path = self.git_dir.join("hooks").join(hook);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn read(&self, file: &str) -> String {
        fs::read_to_string(self.git_dir.join(file)).unwrap()
    }

    fn hooks(&self) -> ScriptHooks {
        ScriptHooks::for_repository(&self.git_dir).with_timeout(Duration::from_secs(20))
    }

    /// The context of pre-receive and update: with the quarantine.
    fn ctx<'a>(&'a self, push_options: Option<&'a [BString]>) -> HookContext<'a> {
        HookContext {
            git_dir: &self.git_dir,
            quarantine: Some(&self.quarantine),
            objects: &gix_object::find::Never,
            push_options,
            remote_user: None,
            push_certificate: None,
        }
    }

    /// The context of post-receive and post-update: no quarantine.
    fn after_ctx<'a>(&'a self, push_options: Option<&'a [BString]>) -> HookContext<'a> {
        HookContext {
            quarantine: None,
            ..self.ctx(push_options)
        }
    }
}

fn id(hex_digit: char) -> ObjectId {
    ObjectId::from_hex(hex_digit.to_string().repeat(40).as_bytes()).unwrap()
}

fn null() -> ObjectId {
    ObjectId::null(gix_hash::Kind::Sha1)
}

fn updates() -> Vec<RefUpdate> {
    vec![
        RefUpdate::new(id('1'), id('2'), "refs/heads/main"),
        RefUpdate::new(null(), id('3'), "refs/heads/new"),
        RefUpdate::new(id('4'), null(), "refs/tags/gone"),
    ]
}

fn text(output: &[u8]) -> &str {
    std::str::from_utf8(output).unwrap()
}

fn canonical(path: &Path) -> String {
    fs::canonicalize(path).unwrap().display().to_string()
}

#[test]
fn pre_receive_gets_git_stdin_lines_and_runs_in_the_repository() {
    let repo = Repo::new();
    repo.hook(
        "pre-receive",
        r#"cat > received
echo "args: $#"
echo "dir: $(pwd -P) GIT_DIR=$GIT_DIR""#,
    );
    let mut output = Vec::new();
    let verdict = repo
        .hooks()
        .pre_receive(&repo.ctx(None), &updates(), &mut output);
    assert_eq!(verdict, Verdict::Accept);
    assert_eq!(
        repo.read("received"),
        format!(
            "{one} {two} refs/heads/main\n{null} {three} refs/heads/new\n{four} {null} refs/tags/gone\n",
            one = id('1'),
            two = id('2'),
            three = id('3'),
            four = id('4'),
            null = null(),
        )
    );
    assert_eq!(
        text(&output),
        format!("args: 0\ndir: {} GIT_DIR=.\n", canonical(&repo.git_dir))
    );
}

#[test]
fn update_gets_ref_old_new_arguments_and_no_stdin() {
    let repo = Repo::new();
    repo.hook(
        "update",
        r#"printf '%s\n' "$@" > args
cat > stdin"#,
    );
    let mut output = Vec::new();
    let update = RefUpdate::new(id('a'), id('b'), "refs/heads/topic");
    let verdict = repo.hooks().update(&repo.ctx(None), &update, &mut output);
    assert_eq!(verdict, Verdict::Accept);
    assert_eq!(
        repo.read("args"),
        format!("refs/heads/topic\n{}\n{}\n", id('a'), id('b'))
    );
    assert_eq!(repo.read("stdin"), "");
    assert!(output.is_empty());
}

#[test]
fn post_receive_gets_stdin_lines_and_post_update_gets_ref_names() {
    let repo = Repo::new();
    repo.hook("post-receive", "cat > received; echo post-receive ran");
    repo.hook(
        "post-update",
        r#"printf '%s\n' "$@" > args; echo post-update ran >&2"#,
    );
    let hooks = repo.hooks();
    let ctx = repo.after_ctx(None);
    let mut output = Vec::new();
    let updates = &updates()[..2];
    hooks.post_receive(&ctx, updates, &mut output);
    let refnames = [
        BString::from("refs/heads/main"),
        BString::from("refs/heads/new"),
    ];
    hooks.post_update(&ctx, &refnames, &mut output);
    assert_eq!(
        repo.read("received"),
        format!(
            "{} {} refs/heads/main\n{} {} refs/heads/new\n",
            id('1'),
            id('2'),
            null(),
            id('3')
        )
    );
    assert_eq!(repo.read("args"), "refs/heads/main\nrefs/heads/new\n");
    assert_eq!(text(&output), "post-receive ran\npost-update ran\n");
}

/// Prints the variables scripts get, one per line.
const PRINT_ENV: &str = r#"for name in GIT_DIR GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY \
    GIT_ALTERNATE_OBJECT_DIRECTORIES GIT_PUSH_OPTION_COUNT GIT_PUSH_OPTION_0 GIT_PUSH_OPTION_1; do
  eval "value=\${$name-(unset)}"
  echo "$name=$value"
done"#;

fn env_lines(
    git_dir: &str,
    quarantine: Option<(&Path, &Path)>,
    push_options: Option<[&str; 3]>,
) -> String {
    let (quarantine, alternates) = match quarantine {
        Some((quarantine, objects)) => (
            quarantine.display().to_string(),
            objects.display().to_string(),
        ),
        None => ("(unset)".into(), "(unset)".into()),
    };
    let [count, first, second] = push_options.unwrap_or(["(unset)"; 3]);
    format!(
        "GIT_DIR={git_dir}\nGIT_QUARANTINE_PATH={quarantine}\nGIT_OBJECT_DIRECTORY={quarantine}\n\
         GIT_ALTERNATE_OBJECT_DIRECTORIES={alternates}\nGIT_PUSH_OPTION_COUNT={count}\n\
         GIT_PUSH_OPTION_0={first}\nGIT_PUSH_OPTION_1={second}\n"
    )
}

#[test]
fn environment_points_into_quarantine_and_carries_push_options() {
    let repo = Repo::new();
    for hook in ["pre-receive", "update", "post-receive", "post-update"] {
        repo.hook(hook, PRINT_ENV);
    }
    let hooks = repo.hooks();
    let options = [BString::from("ci.skip"), BString::from("reviewer=a b")];
    let quarantined = repo.ctx(Some(&options));
    let paths = Some((
        repo.quarantine.quarantine.as_path(),
        repo.quarantine.objects_dir.as_path(),
    ));
    let with_options = Some(["2", "ci.skip", "reviewer=a b"]);

    let mut output = Vec::new();
    let verdict = hooks.pre_receive(&quarantined, &updates(), &mut output);
    assert_eq!(verdict, Verdict::Accept);
    assert_eq!(text(&output), env_lines(".", paths, with_options));

    // update: the quarantine, but no push options (as in git).
    let mut output = Vec::new();
    let verdict = hooks.update(&quarantined, &updates()[0], &mut output);
    assert_eq!(verdict, Verdict::Accept);
    assert_eq!(text(&output), env_lines(".", paths, None));

    let after = repo.after_ctx(Some(&options));
    let mut output = Vec::new();
    hooks.post_receive(&after, &updates(), &mut output);
    assert_eq!(text(&output), env_lines(".", None, with_options));

    let mut output = Vec::new();
    hooks.post_update(&after, &[BString::from("refs/heads/main")], &mut output);
    assert_eq!(text(&output), env_lines(".", None, None));
}

/// The receive hooks see the push certificate as git's `GIT_PUSH_CERT*` variables, the
/// slop only with `SLOP`; `update` and `post-update` do not, as in git.
#[test]
fn receive_hooks_see_the_push_certificate() {
    let repo = Repo::new();
    let print = r#"for name in GIT_PUSH_CERT GIT_PUSH_CERT_SIGNER GIT_PUSH_CERT_KEY \
    GIT_PUSH_CERT_STATUS GIT_PUSH_CERT_NONCE GIT_PUSH_CERT_NONCE_STATUS GIT_PUSH_CERT_NONCE_SLOP; do
  eval "value=\${$name-(unset)}"
  echo "$name=$value"
done"#;
    for hook in ["pre-receive", "update", "post-receive"] {
        repo.hook(hook, print);
    }
    let certificate = crate::PushCertificate {
        blob: id('c'),
        signer: String::new(),
        key: String::new(),
        status: 'N',
        nonce: Some("1700000000-abc".into()),
        nonce_status: Some("SLOP".into()),
        nonce_slop: Some(-3),
    };
    let ctx = HookContext {
        push_certificate: Some(&certificate),
        ..repo.ctx(None)
    };
    let hooks = repo.hooks();
    let expected = format!(
        "GIT_PUSH_CERT={}\nGIT_PUSH_CERT_SIGNER=\nGIT_PUSH_CERT_KEY=\nGIT_PUSH_CERT_STATUS=N\n\
         GIT_PUSH_CERT_NONCE=1700000000-abc\nGIT_PUSH_CERT_NONCE_STATUS=SLOP\n\
         GIT_PUSH_CERT_NONCE_SLOP=-3\n",
        id('c')
    );
    let mut output = Vec::new();
    assert_eq!(
        hooks.pre_receive(&ctx, &updates(), &mut output),
        Verdict::Accept
    );
    assert_eq!(text(&output), expected);
    let mut output = Vec::new();
    hooks.post_receive(&ctx, &updates(), &mut output);
    assert_eq!(text(&output), expected);
    let mut output = Vec::new();
    assert_eq!(
        hooks.update(&ctx, &updates()[0], &mut output),
        Verdict::Accept
    );
    assert!(
        text(&output).starts_with("GIT_PUSH_CERT=(unset)\n"),
        "{}",
        text(&output)
    );
}

#[test]
fn push_option_count_is_zero_with_the_capability_and_unset_without() {
    let repo = Repo::new();
    repo.hook(
        "pre-receive",
        r#"echo "count=${GIT_PUSH_OPTION_COUNT-(unset)}""#,
    );
    let hooks = repo.hooks();
    let mut output = Vec::new();
    let verdict = hooks.pre_receive(&repo.ctx(Some(&[])), &updates(), &mut output);
    assert_eq!(verdict, Verdict::Accept);
    let verdict = hooks.pre_receive(&repo.ctx(None), &updates(), &mut output);
    assert_eq!(verdict, Verdict::Accept);
    assert_eq!(text(&output), "count=0\ncount=(unset)\n");
}

#[test]
fn quarantine_paths_are_made_absolute() {
    let repo = Repo::new();
    repo.hook("pre-receive", r#"echo "$GIT_QUARANTINE_PATH""#);
    let cwd = std::env::current_dir().unwrap();
    let relative = QuarantinePaths {
        quarantine: PathBuf::from("relative/quarantine"),
        objects_dir: PathBuf::from("relative/objects"),
        shallow_file: None,
    };
    let ctx = HookContext {
        quarantine: Some(&relative),
        ..repo.ctx(None)
    };
    let mut output = Vec::new();
    let verdict = repo.hooks().pre_receive(&ctx, &updates(), &mut output);
    assert_eq!(verdict, Verdict::Accept);
    assert_eq!(
        text(&output),
        format!("{}\n", cwd.join("relative/quarantine").display())
    );
}

#[test]
fn alternates_are_appended_to_inherited_ones_and_quoted_like_git() {
    let check = |inherited: Option<&str>, dir: &str, expected: &str| {
        let value = append_alternate(inherited.map(Into::into), Path::new(dir));
        assert_eq!(value.to_str().unwrap(), expected, "{inherited:?} + {dir:?}");
    };
    check(None, "/srv/repo.git/objects", "/srv/repo.git/objects");
    check(
        Some("/srv/shared/objects"),
        "/srv/repo.git/objects",
        "/srv/shared/objects:/srv/repo.git/objects",
    );
    check(None, "/srv/a:b/objects", r#""/srv/a:b/objects""#);
    check(None, "\"quoted/objects", r#""\"quoted/objects""#);
    check(
        None,
        "/srv/tab\tand:colon\\/objects",
        r#""/srv/tab\tand:colon\\/objects""#,
    );
}

#[test]
fn stdout_and_stderr_both_reach_the_output_in_order() {
    let repo = Repo::new();
    // One pipe for both, as git gives a hook: the order is the script's, without waiting.
    repo.hook(
        "pre-receive",
        "i=0; while [ $i -lt 200 ]; do echo out $i; echo err $i >&2; i=$((i + 1)); done",
    );
    let mut output = Vec::new();
    let verdict = repo
        .hooks()
        .pre_receive(&repo.ctx(None), &updates(), &mut output);
    assert_eq!(verdict, Verdict::Accept);
    let expected: String = (0..200).map(|i| format!("out {i}\nerr {i}\n")).collect();
    assert_eq!(text(&output), expected);
}

/// A writer recording when each write arrived.
struct Timed {
    start: Instant,
    writes: Vec<(Duration, Vec<u8>)>,
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes.push((self.start.elapsed(), buf.to_vec()));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn output_is_streamed_while_the_hook_runs() {
    let repo = Repo::new();
    repo.hook("post-receive", "echo early; sleep 1; echo late");
    let mut output = Timed {
        start: Instant::now(),
        writes: Vec::new(),
    };
    repo.hooks()
        .post_receive(&repo.after_ctx(None), &updates(), &mut output);
    let total = output.start.elapsed();
    assert_eq!(output.writes.len(), 2, "{:?}", output.writes);
    let (early_at, early) = &output.writes[0];
    assert_eq!(early, b"early\n");
    assert_eq!(output.writes[1].1, b"late\n");
    assert!(
        *early_at + Duration::from_millis(500) < total,
        "early output at {early_at:?} arrived only near the end ({total:?})"
    );
}

#[test]
fn failing_pre_receive_is_declined_with_its_output() {
    let repo = Repo::new();
    repo.hook("pre-receive", "echo 'no pushes on Friday' >&2; exit 1");
    let mut output = Vec::new();
    let verdict = repo
        .hooks()
        .pre_receive(&repo.ctx(None), &updates(), &mut output);
    assert_eq!(verdict, Verdict::refuse("pre-receive hook declined"));
    assert_eq!(text(&output), "no pushes on Friday\n");
}

#[test]
fn failing_update_is_declined_per_ref() {
    let repo = Repo::new();
    repo.hook(
        "update",
        r#"case "$1" in refs/heads/main) echo "main is frozen"; exit 7;; esac"#,
    );
    let hooks = repo.hooks();
    let ctx = repo.ctx(None);
    let mut output = Vec::new();
    let verdicts: Vec<Verdict> = updates()
        .iter()
        .map(|update| hooks.update(&ctx, update, &mut output))
        .collect();
    assert_eq!(
        verdicts,
        [
            Verdict::refuse("hook declined"),
            Verdict::Accept,
            Verdict::Accept
        ]
    );
    assert_eq!(text(&output), "main is frozen\n");
}

#[test]
fn failing_post_hooks_change_nothing() {
    let repo = Repo::new();
    repo.hook("post-receive", "echo failing; exit 1");
    repo.hook("post-update", "exit 1");
    let hooks = repo.hooks();
    let mut output = Vec::new();
    hooks.post_receive(&repo.after_ctx(None), &updates(), &mut output);
    hooks.post_update(
        &repo.after_ctx(None),
        &[BString::from("refs/heads/main")],
        &mut output,
    );
    assert_eq!(text(&output), "failing\n");
}

fn is_running(pid: &str) -> bool {
    // A zombie has no command line.
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| !cmdline.is_empty())
}

fn wait_until_gone(pid: &str) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if !is_running(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn hung_pre_receive_is_killed_with_what_it_started_and_refused() {
    let repo = Repo::new();
    repo.hook(
        "pre-receive",
        "sleep 1000 & echo $! > sleeper; echo waiting; wait",
    );
    let hooks = repo.hooks().with_timeout(Duration::from_secs(1));
    let start = Instant::now();
    let mut output = Vec::new();
    let verdict = hooks.pre_receive(&repo.ctx(None), &updates(), &mut output);
    let elapsed = start.elapsed();
    assert_eq!(
        verdict,
        Verdict::refuse("pre-receive hook timed out after 1s")
    );
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    assert_eq!(text(&output), "waiting\n");
    let sleeper = repo.read("sleeper");
    assert!(
        wait_until_gone(sleeper.trim()),
        "the hook's child {sleeper} survived"
    );
}

#[test]
fn hung_update_is_killed_and_refused() {
    let repo = Repo::new();
    repo.hook("update", "exec sleep 1000");
    let hooks = repo.hooks().with_timeout(Duration::from_millis(300));
    let start = Instant::now();
    let verdict = hooks.update(&repo.ctx(None), &updates()[0], &mut Vec::new());
    assert_eq!(
        verdict,
        Verdict::refuse("update hook timed out after 300ms")
    );
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn background_process_holding_the_output_is_cut_off_at_the_time_limit() {
    let repo = Repo::new();
    // The hook exits at once, but its child keeps the output pipes open. git would wait for
    // the child; the time limit ends the wait and kills the child.
    repo.hook("post-receive", "sleep 1000 & echo $! > sleeper; echo done");
    let hooks = repo.hooks().with_timeout(Duration::from_secs(1));
    let start = Instant::now();
    let mut output = Vec::new();
    hooks.post_receive(&repo.after_ctx(None), &updates(), &mut output);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(text(&output), "done\n");
    let sleeper = repo.read("sleeper");
    assert!(wait_until_gone(sleeper.trim()));
}

#[test]
fn hook_closing_its_output_and_running_on_is_killed_at_the_time_limit() {
    let repo = Repo::new();
    repo.hook("pre-receive", "echo bye; exec >&- 2>&-; exec sleep 1000");
    let hooks = repo.hooks().with_timeout(Duration::from_millis(500));
    let start = Instant::now();
    let mut output = Vec::new();
    let verdict = hooks.pre_receive(&repo.ctx(None), &updates(), &mut output);
    assert_eq!(
        verdict,
        Verdict::refuse("pre-receive hook timed out after 500ms")
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(text(&output), "bye\n");
}

fn many_updates() -> Vec<RefUpdate> {
    (0..50_000)
        .map(|n| RefUpdate::new(null(), id('5'), format!("refs/heads/branch-{n}")))
        .collect()
}

#[test]
fn hook_not_reading_a_large_stdin_does_not_deadlock() {
    let repo = Repo::new();
    let hooks = repo.hooks().with_timeout(Duration::from_secs(10));
    let updates = many_updates();
    let start = Instant::now();

    repo.hook("pre-receive", "echo accepted without reading");
    let mut output = Vec::new();
    let verdict = hooks.pre_receive(&repo.ctx(None), &updates, &mut output);
    assert_eq!(verdict, Verdict::Accept);
    assert_eq!(text(&output), "accepted without reading\n");

    repo.hook("pre-receive", "head -n 1 >/dev/null; exit 1");
    let verdict = hooks.pre_receive(&repo.ctx(None), &updates, &mut Vec::new());
    assert_eq!(verdict, Verdict::refuse("pre-receive hook declined"));

    repo.hook("pre-receive", "wc -l");
    let mut output = Vec::new();
    let verdict = hooks.pre_receive(&repo.ctx(None), &updates, &mut output);
    assert_eq!(verdict, Verdict::Accept);
    assert_eq!(text(&output).trim(), "50000");

    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn large_output_is_forwarded_whole() {
    let repo = Repo::new();
    // 200000 lines of "y": far more than a pipe holds.
    repo.hook(
        "pre-receive",
        "yes | head -n 200000; yes | head -n 1000 >&2",
    );
    let mut output = Vec::new();
    let verdict = repo
        .hooks()
        .pre_receive(&repo.ctx(None), &updates(), &mut output);
    assert_eq!(verdict, Verdict::Accept);
    assert_eq!(output.len(), 201_000 * 2);
}

#[test]
fn missing_or_non_executable_hooks_accept() {
    let repo = Repo::new();
    let hooks = repo.hooks();
    let mut output = Vec::new();
    assert_eq!(
        hooks.pre_receive(&repo.ctx(None), &updates(), &mut output),
        Verdict::Accept
    );
    repo.script("pre-receive", "#!/bin/sh\necho ran; exit 1\n", 0o644);
    repo.script("update", "#!/bin/sh\necho ran; exit 1\n", 0o600);
    fs::create_dir(repo.git_dir.join("hooks/post-receive")).unwrap();
    assert_eq!(
        hooks.pre_receive(&repo.ctx(None), &updates(), &mut output),
        Verdict::Accept
    );
    assert_eq!(
        hooks.update(&repo.ctx(None), &updates()[0], &mut output),
        Verdict::Accept
    );
    hooks.post_receive(&repo.after_ctx(None), &updates(), &mut output);
    hooks.post_update(
        &repo.after_ctx(None),
        &[BString::from("refs/heads/main")],
        &mut output,
    );
    assert!(output.is_empty());

    let nowhere = ScriptHooks::new("/nonexistent/hooks");
    assert_eq!(
        nowhere.pre_receive(&repo.ctx(None), &updates(), &mut output),
        Verdict::Accept
    );
}

#[test]
fn receive_hooks_do_not_run_without_commands() {
    let repo = Repo::new();
    repo.hook("pre-receive", "echo ran; exit 1");
    repo.hook("post-receive", "echo ran");
    repo.hook("post-update", "echo ran");
    let hooks = repo.hooks();
    let mut output = Vec::new();
    assert_eq!(
        hooks.pre_receive(&repo.ctx(None), &[], &mut output),
        Verdict::Accept
    );
    hooks.post_receive(&repo.after_ctx(None), &[], &mut output);
    hooks.post_update(&repo.after_ctx(None), &[], &mut output);
    assert!(output.is_empty());
}

#[test]
fn script_without_interpreter_line_runs_with_sh() {
    let repo = Repo::new();
    repo.script("update", "echo \"no shebang: $1\"\nexit 3\n", 0o755);
    let mut output = Vec::new();
    let verdict = repo
        .hooks()
        .update(&repo.ctx(None), &updates()[0], &mut output);
    assert_eq!(verdict, Verdict::refuse("hook declined"));
    assert_eq!(text(&output), "no shebang: refs/heads/main\n");
}

#[test]
fn script_that_cannot_start_is_declined() {
    let repo = Repo::new();
    repo.script("pre-receive", "#!/nonexistent/interpreter\n", 0o755);
    let verdict = repo
        .hooks()
        .pre_receive(&repo.ctx(None), &updates(), &mut Vec::new());
    assert_eq!(verdict, Verdict::refuse("pre-receive hook declined"));
}

#[test]
fn relative_hooks_dir_is_relative_to_the_repository() {
    let repo = Repo::new();
    fs::create_dir(repo.git_dir.join("custom")).unwrap();
    let path = repo.git_dir.join("custom/pre-receive");
    fs::write(&path, "#!/bin/sh\necho custom; exit 1\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    let hooks = ScriptHooks::new("custom");
    let mut output = Vec::new();
    let verdict = hooks.pre_receive(&repo.ctx(None), &updates(), &mut output);
    assert_eq!(verdict, Verdict::refuse("pre-receive hook declined"));
    assert_eq!(text(&output), "custom\n");
}

/// A client that went away.
struct Broken;

impl Write for Broken {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::BrokenPipe.into())
    }

    fn flush(&mut self) -> io::Result<()> {
        Err(io::ErrorKind::BrokenPipe.into())
    }
}

#[test]
fn output_that_cannot_be_written_does_not_change_the_verdict() {
    let repo = Repo::new();
    repo.hook(
        "pre-receive",
        "yes | head -n 100000; cat > received; exit 1",
    );
    let verdict = repo
        .hooks()
        .pre_receive(&repo.ctx(None), &updates(), &mut Broken);
    assert_eq!(verdict, Verdict::refuse("pre-receive hook declined"));
    assert_eq!(repo.read("received").lines().count(), 3);
}

#[test]
fn ref_names_and_push_options_end_at_nul_like_git() {
    let repo = Repo::new();
    repo.hook("update", r#"echo "$1""#);
    repo.hook("pre-receive", r#"echo "$GIT_PUSH_OPTION_0""#);
    let hooks = repo.hooks();
    let mut output = Vec::new();
    let update = RefUpdate::new(id('1'), id('2'), &b"refs/heads/a\0b"[..]);
    let verdict = hooks.update(&repo.ctx(None), &update, &mut output);
    assert_eq!(verdict, Verdict::Accept);
    let options = [BString::from(&b"opt\0ion"[..])];
    let verdict = hooks.pre_receive(&repo.ctx(Some(&options)), &updates(), &mut output);
    assert_eq!(verdict, Verdict::Accept);
    assert_eq!(text(&output), "refs/heads/a\nopt\n");
}

/// A repository named by a relative path, as a server started with `receive-pack ../x.git`
/// has it: its hooks are found (not looked for at `<dir>/<dir>/hooks`) and judge the push.
#[test]
fn hooks_of_a_repository_named_by_a_relative_path_run() {
    let cwd = std::env::current_dir().unwrap();
    let dir = tempfile::tempdir_in(&cwd).unwrap();
    let relative = dir.path().strip_prefix(&cwd).unwrap().join("repo.git");
    fs::create_dir_all(relative.join("hooks")).unwrap();
    let path = relative.join("hooks/pre-receive");
    fs::write(&path, "#!/bin/sh\necho refused; exit 1\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    let ctx = HookContext {
        git_dir: &relative,
        quarantine: None,
        objects: &gix_object::find::Never,
        push_options: None,
        remote_user: None,
        push_certificate: None,
    };
    let mut output = Vec::new();
    let verdict = ScriptHooks::for_repository(&relative).pre_receive(&ctx, &updates(), &mut output);
    assert_eq!(verdict, Verdict::refuse("pre-receive hook declined"));
    assert_eq!(text(&output), "refused\n");
}

/// A `proc-receive` script answering `ok` with a new ref name for every command, after
/// logging what it was sent (the raw pkt-lines, NULs as `|`) to `sent`.
const PROC_RECEIVE_OK: &str = r#"
read_pkt() {
	len=$(head -c 4)
	case "$len" in "" | 0000) return 1 ;; esac
	pkt=$(head -c $((0x$len - 4)) | tr '\0' '|')
	echo "$pkt" >>sent
}
while read_pkt; do :; done
printf '001bversion=1\000push-options\n0000'
: >commands
while read_pkt; do echo "$pkt" >>commands; done
while read_pkt; do :; done
echo "proc-receive says hello" >&2
while read old new ref; do
	line="ok $ref"; printf '%04x%s\n' $((${#line} + 5)) "$line"
	line="option refname refs/changes/${ref##*/}"; printf '%04x%s\n' $((${#line} + 5)) "$line"
done <commands
printf '0000'
"#;

fn proc_receive_request<'a>(
    commands: &'a [RefUpdate],
    other_refs: &'a [BString],
) -> crate::ProcReceiveRequest<'a> {
    crate::ProcReceiveRequest {
        commands,
        other_refs,
        atomic: true,
    }
}

#[test]
fn proc_receive_script_converses_in_pkt_lines() {
    use crate::{CommandResult, ProcReceive, RefReport};
    let repo = Repo::new();
    repo.hook("proc-receive", PROC_RECEIVE_OK);
    let commands = vec![RefUpdate::new(null(), id('3'), "refs/for/main/topic")];
    let options: Vec<BString> = vec!["reviewer=alice".into()];
    let mut output = Vec::new();
    let answer = repo.hooks().proc_receive(
        &repo.after_ctx(Some(&options)),
        &proc_receive_request(&commands, &[]),
        &mut output,
    );
    assert_eq!(
        answer,
        ProcReceive::reported(vec![CommandResult::Ok(vec![RefReport {
            refname: Some("refs/changes/topic".into()),
            ..RefReport::default()
        }])])
    );
    assert_eq!(text(&output), "proc-receive says hello\n");
    let sent = repo.read("sent");
    assert_eq!(
        sent,
        format!(
            "version=1|atomic push-options\n{} {} refs/for/main/topic\nreviewer=alice\n",
            null(),
            id('3')
        )
    );
}

#[test]
fn proc_receive_without_a_script_declines() {
    let repo = Repo::new();
    let commands = updates();
    let answer = repo.hooks().proc_receive(
        &repo.after_ctx(None),
        &proc_receive_request(&commands, &[]),
        &mut Vec::new(),
    );
    assert_eq!(answer, crate::ProcReceive::Declined);
}

/// git's complaints about a report come after the script's own output, as one message; a
/// script that exits non-zero after a good report has still failed.
#[test]
fn proc_receive_report_errors_and_exit_status() {
    use crate::{CommandResult, ProcReceive};
    let repo = Repo::new();
    repo.hook(
        "proc-receive",
        r#"printf '000eversion=1\n0000'
exec 3<&0
cat <&3 >/dev/null &
echo "bye" >&2
printf '001aok refs/heads/unknown\n0006x\n0000'
exit 3"#,
    );
    let commands = vec![RefUpdate::new(null(), id('3'), "refs/for/main/topic")];
    let mut output = Vec::new();
    let answer = repo.hooks().proc_receive(
        &repo.after_ctx(None),
        &proc_receive_request(&commands, &[]),
        &mut output,
    );
    assert_eq!(
        answer,
        ProcReceive::Reported {
            results: vec![CommandResult::Unreported],
            failed: true
        }
    );
    assert_eq!(
        text(&output),
        "bye\nerror: proc-receive reported status on unknown ref: refs/heads/unknown\n\
         proc-receive reported incomplete status line: 'x'\n"
    );
}

#[test]
fn proc_receive_that_dies_or_speaks_another_version_fails() {
    let repo = Repo::new();
    let commands = updates();
    let run = |body: &str| {
        repo.hook("proc-receive", body);
        let mut output = Vec::new();
        let answer = repo.hooks().proc_receive(
            &repo.after_ctx(None),
            &proc_receive_request(&commands, &[]),
            &mut output,
        );
        (answer, String::from_utf8(output).unwrap())
    };
    assert_eq!(
        run("echo dying >&2; exit 1"),
        (
            crate::ProcReceive::Failed,
            "dying\nerror: fail to negotiate version with proc-receive hook\n".to_owned()
        )
    );
    assert_eq!(
        run("printf '000eversion=2\\n0000'; cat >/dev/null"),
        (
            crate::ProcReceive::Failed,
            "error: proc-receive version '2' is not supported\n".to_owned()
        )
    );
}

#[test]
fn hung_proc_receive_is_killed_at_the_time_limit() {
    let repo = Repo::new();
    repo.hook(
        "proc-receive",
        "sleep 1000 & echo $! > sleeper; echo waiting >&2; wait",
    );
    let hooks = repo.hooks().with_timeout(Duration::from_millis(500));
    let commands = updates();
    let start = Instant::now();
    let mut output = Vec::new();
    let answer = hooks.proc_receive(
        &repo.after_ctx(None),
        &proc_receive_request(&commands, &[]),
        &mut output,
    );
    let elapsed = start.elapsed();
    assert_eq!(answer, crate::ProcReceive::Failed);
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert!(text(&output).starts_with("waiting\n"), "{}", text(&output));
    assert!(text(&output).contains("error: proc-receive hook timed out"));
    let sleeper = repo.read("sleeper");
    assert!(
        wait_until_gone(sleeper.trim()),
        "the hook's child {sleeper} survived"
    );
}

#[test]
fn push_to_checkout_gets_the_work_tree_and_the_new_commit() {
    let repo = Repo::new();
    let work_tree = repo.git_dir.parent().unwrap().join("work");
    fs::create_dir_all(&work_tree).unwrap();
    let new = ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap();
    let checkout = crate::Checkout {
        name: "refs/heads/main".into(),
        new,
        git_dir: &repo.git_dir,
        work_tree: &work_tree,
    };
    let mut output = Vec::new();
    // No script: receive-pack updates the work tree itself.
    assert_eq!(
        repo.hooks()
            .push_to_checkout(&repo.after_ctx(None), &checkout, &mut output),
        None
    );
    repo.hook(
        "push-to-checkout",
        r#"echo "$# $1 $(pwd) $GIT_DIR $GIT_WORK_TREE ${GIT_QUARANTINE_PATH-none}"
test "$1" != 2222222222222222222222222222222222222222"#,
    );
    let verdict = repo
        .hooks()
        .push_to_checkout(&repo.after_ctx(None), &checkout, &mut output);
    assert_eq!(verdict, Some(Verdict::Accept));
    assert_eq!(
        String::from_utf8(output).unwrap(),
        format!(
            "1 {new} {} {} {} none\n",
            repo.git_dir.display(),
            repo.git_dir.display(),
            work_tree.display()
        )
    );
    let refused = crate::Checkout {
        new: ObjectId::from_hex(b"2222222222222222222222222222222222222222").unwrap(),
        ..checkout
    };
    let verdict = repo
        .hooks()
        .push_to_checkout(&repo.after_ctx(None), &refused, &mut Vec::new());
    assert_eq!(
        verdict,
        Some(Verdict::refuse("push-to-checkout hook declined"))
    );
}
