//! `packgate daemon`, the drop-in for `git daemon`: real daemons on 127.0.0.1 and real git
//! clients — lookup rules (base path, `git-daemon-export-ok`, whitelist, strict and
//! interpolated paths), path attacks, push switches, log lines (and hook output of a push
//! without sideband), pid file and SIGTERM.
//!
//! # Why one file
//!
//! It is over 800 lines, and stays whole: every test starts the same `Daemon` (a real `packgate
//! daemon` on a free port, with its log captured), and they group by flag of the same command;
//! the harness and its helpers (`raw_request`, `ls_remote`, `assert_refused`) are this file's
//! first 250 lines, and a split would only move them into a shared submodule.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pkt::{self, line};
use crate::receive_pack::rev_parse;
use crate::sessions::{open_session, read_until_flush, wait_for_close};
use crate::util::{
    assert_same_refs, fsck, refs, shared_fixture, write_file, Dir, Git, Output, PACKGATE,
};

/// What git daemon tells a refused client unless `--informative-errors`.
const TERSE: &str = "access denied or repository not exported";

/// How long a daemon may take to say it is ready, or to end after SIGTERM.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A `packgate daemon` on 127.0.0.1, killed on drop.
pub(crate) struct Daemon {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Starts `packgate daemon --verbose --listen=127.0.0.1 --port=<free port> <args>` and
    /// waits for its ready line.
    pub(crate) fn start(dir: &Dir, args: &[&str]) -> Daemon {
        Daemon::start_with_env(dir, args, &[])
    }

    /// [`Daemon::start`] with environment variables set (`Some`) or removed (`None`) after
    /// the harness's own.
    pub(crate) fn start_with_env(
        dir: &Dir,
        args: &[&str],
        env: &[(&str, Option<&std::ffi::OsStr>)],
    ) -> Daemon {
        Daemon::start_program(Path::new(PACKGATE), dir, args, env)
    }

    /// `git daemon` itself under the same harness (same flags, same ready line): the
    /// reference other clients are checked against.
    pub(crate) fn start_git(dir: &Dir, git: &Git, args: &[&str]) -> Daemon {
        Daemon::start_program(&git.program, dir, args, &[])
    }

    /// `<program> daemon --verbose --listen=127.0.0.1 --port=<free port> <args>`.
    fn start_program(
        program: &Path,
        dir: &Dir,
        args: &[&str],
        env: &[(&str, Option<&std::ffi::OsStr>)],
    ) -> Daemon {
        for _ in 0..5 {
            let port = free_port();
            let mut command = Command::new(program);
            command
                .arg("daemon")
                .arg("--verbose")
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .args(args)
                .env("HOME", dir.join("home"))
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", dir.join("home/.gitconfig"))
                .env_remove("PACKGATE_LOG");
            for (name, value) in env {
                match value {
                    Some(value) => command.env(name, value),
                    None => command.env_remove(name),
                };
            }
            let mut child = command
                .current_dir(dir.path())
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|error| {
                    panic!("cannot start {} daemon: {error}", program.display())
                });
            let stderr = child
                .stderr
                .take()
                .unwrap_or_else(|| panic!("no stderr pipe"));
            let log = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    sink.lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(line);
                }
            });
            let mut daemon = Daemon {
                child,
                port,
                log,
                status: None,
            };
            let started = Instant::now();
            loop {
                if daemon.log_text().contains("Ready to rumble") {
                    return daemon;
                }
                if daemon.has_exited() {
                    let log = daemon.log_text();
                    if log.contains("Could not bind") || log.contains("unable to allocate") {
                        break; // The port was taken meanwhile: try another.
                    }
                    panic!(
                        "{} daemon {args:?} exited before it was ready:\n{log}",
                        program.display()
                    );
                }
                assert!(
                    started.elapsed() < START_LIMIT,
                    "{} daemon {args:?} printed no ready line:\n{}",
                    program.display(),
                    daemon.log_text()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!(
            "could not find a free port for {} daemon",
            program.display()
        );
    }

    /// `git://127.0.0.1:<port><path>`; `path` starts with `/`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("git://127.0.0.1:{}{path}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .join("\n")
    }

    fn has_exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|error| panic!("waiting for packgate daemon: {error}"));
        }
        self.status.is_some()
    }

    /// Waits (bounded) until the log has a line containing each of `needles`.
    #[track_caller]
    fn wait_for_log(&self, needles: &[&str]) {
        let started = Instant::now();
        loop {
            let log = self.log_text();
            if needles.iter().all(|needle| log.contains(needle)) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the daemon's log lacks one of {needles:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits (bounded) for the process to end.
    fn terminate(mut self) -> ExitStatus {
        signal(self.pid(), "TERM");
        let started = Instant::now();
        while !self.has_exited() {
            assert!(
                started.elapsed() < START_LIMIT,
                "packgate daemon did not end after SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.status
            .unwrap_or_else(|| panic!("packgate daemon has no exit status"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The whole process group: `git daemon` runs `git-daemon` as a child of its own,
        // which outlived the test when only the `git` process was killed.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pid())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap_or_else(|error| panic!("kill -{name} {pid}: {error}"));
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A port that was free a moment ago (the daemon retries if it is taken meanwhile).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("finding a free port: {error}"))
}

fn mkdir(path: &Path) {
    std::fs::create_dir_all(path)
        .unwrap_or_else(|error| panic!("mkdir {}: {error}", path.display()));
}

/// `git ls-remote <url>` over protocol v2.
fn ls_remote(dir: &Dir, git: &Git, url: &str) -> Output {
    dir.git(git)
        .args(["-c", "protocol.version=2", "ls-remote", url])
        .output()
}

#[track_caller]
fn assert_served(output: &Output, what: &str) {
    assert!(output.status.success(), "{what} must be served: {output}");
    assert!(
        output.stdout_text().contains("refs/heads/"),
        "{what}: no refs listed: {output}"
    );
}

#[track_caller]
fn assert_refused(output: &Output, message: &str, what: &str) {
    assert!(!output.status.success(), "{what} must be refused: {output}");
    assert!(
        output.stderr_text().contains(message),
        "{what}: the client was not told '{message}': {output}"
    );
}

/// A repository tree: `<dir>/repos` with a copy of the tiny fixture at each of `names`.
fn repos_with_tiny(dir: &Dir, names: &[&str]) -> PathBuf {
    let source = shared_fixture("tiny");
    let root = dir.join("repos");
    mkdir(&root);
    for name in names {
        let destination = root.join(name);
        if let Some(parent) = destination.parent() {
            mkdir(parent);
        }
        dir.copy_tree(&source.path, &destination);
    }
    root
}

#[test]
fn clone_and_ls_remote_with_base_path_and_export_all() {
    let source = shared_fixture("small");
    let dir = Dir::new("daemon-clone");
    let root = dir.join("repos");
    mkdir(&root);
    dir.copy_tree(&source.path, &root.join("small.git"));
    let daemon = Daemon::start(
        &dir,
        &["--export-all", &format!("--base-path={}", root.display())],
    );
    let expected = refs(&dir, &Git::newest(), &source.path, &[]);
    for (n, git) in Git::all().into_iter().enumerate() {
        let destination = dir.join(&format!("clone-{n}"));
        dir.git(&git)
            .args(["-c", "protocol.version=2", "clone", "--mirror"])
            .arg(daemon.url("/small.git"))
            .arg(&destination)
            .run();
        fsck(&dir, &git, &destination);
        assert_same_refs(
            &refs(&dir, &git, &destination, &[]),
            &expected,
            &format!("git:// mirror clone with {git}"),
        );
        // Without the suffix, as git daemon finds it.
        assert_served(&ls_remote(&dir, &git, &daemon.url("/small")), "/small");
    }
}

#[test]
fn export_ok_file_required_without_export_all() {
    let dir = Dir::new("daemon-export-ok");
    let root = repos_with_tiny(&dir, &["tiny.git"]);
    let daemon = Daemon::start(&dir, &[&format!("--base-path={}", root.display())]);
    for git in Git::all() {
        let output = ls_remote(&dir, &git, &daemon.url("/tiny.git"));
        assert_refused(&output, TERSE, &format!("unexported /tiny.git with {git}"));
        assert!(
            output.stderr_text().contains("/tiny.git"),
            "the refusal names the path: {output}"
        );
    }
    write_file(&root.join("tiny.git/git-daemon-export-ok"), b"");
    for git in Git::all() {
        let output = ls_remote(&dir, &git, &daemon.url("/tiny.git"));
        assert_served(&output, &format!("exported /tiny.git with {git}"));
    }
}

#[test]
fn whitelisted_directories_with_and_without_strict_paths() {
    let dir = Dir::new("daemon-whitelist");
    let root = repos_with_tiny(
        &dir,
        &[
            "pub/a.git",
            "pub/team/b.git",
            "private/c.git",
            "pub-other/d.git",
        ],
    );
    let public = root.join("pub");
    let url_of = |daemon: &Daemon, path: &Path| daemon.url(&path.display().to_string());
    let git = Git::newest();

    // Without a base path, requests name absolute paths; the whitelist bounds them.
    let daemon = Daemon::start(&dir, &["--export-all", &public.display().to_string()]);
    for inside in ["pub/a.git", "pub/a", "pub/team/b.git"] {
        let output = ls_remote(&dir, &git, &url_of(&daemon, &root.join(inside)));
        assert_served(&output, inside);
    }
    for outside in ["private/c.git", "pub-other/d.git"] {
        let output = ls_remote(&dir, &git, &url_of(&daemon, &root.join(outside)));
        assert_refused(&output, TERSE, outside);
    }
    drop(daemon);

    // Strict paths: exactly the whitelisted git directories.
    let daemon = Daemon::start(
        &dir,
        &[
            "--export-all",
            "--strict-paths",
            &public.join("a.git").display().to_string(),
        ],
    );
    let output = ls_remote(&dir, &git, &url_of(&daemon, &public.join("a.git")));
    assert_served(&output, "strict pub/a.git");
    for refused in ["pub/a", "pub/team/b.git", "private/c.git"] {
        let output = ls_remote(&dir, &git, &url_of(&daemon, &root.join(refused)));
        assert_refused(&output, TERSE, &format!("strict {refused}"));
    }
}

#[test]
fn interpolated_path_by_host() {
    let dir = Dir::new("daemon-interpolated");
    // git sends host=127.0.0.1:<port>; %H is the host without the port.
    let root = repos_with_tiny(&dir, &["127.0.0.1/a.git", "a.git"]);
    let host_repo = root.join("127.0.0.1/a.git");
    let git = Git::newest();
    dir.git_in(&git, &host_repo)
        .args(["update-ref", "refs/heads/only-on-this-host", "HEAD"])
        .run();
    let daemon = Daemon::start(
        &dir,
        &[
            "--export-all",
            &format!("--interpolated-path={}/%H%D", root.display()),
        ],
    );
    for git in Git::all() {
        let output = ls_remote(&dir, &git, &daemon.url("/a.git"));
        assert_served(&output, &format!("/a.git for host 127.0.0.1 with {git}"));
        assert!(
            output
                .stdout_text()
                .contains("refs/heads/only-on-this-host"),
            "the host's repository must be served, not {}: {output}",
            root.join("a.git").display()
        );
        let output = ls_remote(&dir, &git, &daemon.url("/missing.git"));
        assert_refused(&output, TERSE, "/missing.git for host 127.0.0.1");
    }
}

#[test]
fn informative_errors_tell_the_reason() {
    let dir = Dir::new("daemon-informative");
    let root = repos_with_tiny(&dir, &["tiny.git"]);
    let base = format!("--base-path={}", root.display());
    let git = Git::newest();
    let terse = Daemon::start(&dir, &["--export-all", &base]);
    let output = ls_remote(&dir, &git, &terse.url("/missing.git"));
    assert_refused(
        &output,
        &format!("{TERSE}: /missing.git"),
        "terse /missing.git",
    );
    drop(terse);
    let informative = Daemon::start(&dir, &["--export-all", "--informative-errors", &base]);
    let output = ls_remote(&dir, &git, &informative.url("/missing.git"));
    assert_refused(
        &output,
        "no such repository: /missing.git",
        "informative /missing.git",
    );
    assert!(!output.stderr_text().contains(TERSE), "{output}");
}

/// A bare repository `server.git` below `<dir>/repos` and a client work tree with one commit.
struct PushSetup {
    dir: Dir,
    root: PathBuf,
    server: PathBuf,
    client: PathBuf,
}

impl PushSetup {
    fn new(name: &str, git: &Git) -> PushSetup {
        let dir = Dir::new(name);
        let root = dir.join("repos");
        mkdir(&root);
        let server = root.join("server.git");
        let client = dir.join("client");
        dir.git(git)
            .args(["init", "-q", "--bare"])
            .arg(&server)
            .run();
        dir.git(git).args(["init", "-q"]).arg(&client).run();
        write_file(&client.join("file.txt"), b"content\n");
        let in_client = || dir.git(git).current_dir(&client);
        in_client().args(["add", "file.txt"]).run();
        in_client().args(["commit", "-q", "-m", "first"]).run();
        PushSetup {
            dir,
            root,
            server,
            client,
        }
    }

    fn daemon(&self, args: &[&str]) -> Daemon {
        let base = format!("--base-path={}", self.root.display());
        let mut all = vec!["--export-all", base.as_str()];
        all.extend_from_slice(args);
        Daemon::start(&self.dir, &all)
    }

    fn push(&self, git: &Git, daemon: &Daemon, refspec: &str) -> Output {
        self.dir
            .git(git)
            .current_dir(&self.client)
            .arg("push")
            .arg(daemon.url("/server.git"))
            .arg(refspec)
            .output()
    }

    /// Pushes `master` to `branch` and checks it arrived intact.
    #[track_caller]
    fn assert_push_accepted(&self, git: &Git, daemon: &Daemon, branch: &str) {
        let output = self.push(git, daemon, &format!("master:refs/heads/{branch}"));
        assert!(output.status.success(), "push to {branch} failed: {output}");
        let client_head = rev_parse(self.dir.git(git).current_dir(&self.client), "HEAD");
        let server_refs = refs(&self.dir, git, &self.server, &[]);
        assert_eq!(
            server_refs.get(&format!("refs/heads/{branch}")),
            Some(&client_head),
            "the server's {branch} after the push: {server_refs:?}"
        );
        fsck(&self.dir, git, &self.server);
    }

    #[track_caller]
    fn assert_push_refused(&self, git: &Git, daemon: &Daemon, branch: &str) {
        let output = self.push(git, daemon, &format!("master:refs/heads/{branch}"));
        assert_refused(&output, TERSE, &format!("push to {branch}"));
        assert!(
            !refs(&self.dir, git, &self.server, &[]).contains_key(&format!("refs/heads/{branch}")),
            "a refused push created {branch}"
        );
    }
}

#[test]
fn push_refused_unless_enabled() {
    for git in Git::all() {
        let setup = PushSetup::new("daemon-push", &git);
        let daemon = setup.daemon(&[]);
        setup.assert_push_refused(&git, &daemon, "by-default");
        drop(daemon);

        let daemon = setup.daemon(&["--enable=receive-pack"]);
        setup.assert_push_accepted(&git, &daemon, "enabled");
        drop(daemon);

        // Overridable (git daemon's default): the repository may switch it on...
        setup
            .dir
            .git_in(&git, &setup.server)
            .args(["config", "daemon.receivepack", "true"])
            .run();
        let daemon = setup.daemon(&[]);
        setup.assert_push_accepted(&git, &daemon, "by-repository");
        drop(daemon);

        // ... unless the operator forbids it.
        let daemon = setup.daemon(&["--forbid-override=receive-pack"]);
        setup.assert_push_refused(&git, &daemon, "forbidden");
        drop(daemon);

        // And a repository may switch it off when it is enabled.
        setup
            .dir
            .git_in(&git, &setup.server)
            .args(["config", "daemon.receivepack", "false"])
            .run();
        let daemon = setup.daemon(&["--enable=receive-pack"]);
        setup.assert_push_refused(&git, &daemon, "off-by-repository");
    }
}

/// Sends one hand-made request head and returns what the daemon answers before it closes.
fn raw_request(daemon: &Daemon, head: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port))
        .unwrap_or_else(|error| panic!("connecting to the daemon: {error}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap_or_else(|error| panic!("set_read_timeout: {error}"));
    stream
        .write_all(&line(head))
        .unwrap_or_else(|error| panic!("sending the request head: {error}"));
    let mut answer = Vec::new();
    // The daemon closes the connection after refusing; a timeout here fails the test below.
    let _ = stream.read_to_end(&mut answer);
    answer
}

#[test]
fn path_attacks_are_refused() {
    let dir = Dir::new("daemon-attacks");
    let root = repos_with_tiny(&dir, &["tiny.git"]);
    // Repositories beside the base path, reachable only by escaping it.
    let source = shared_fixture("tiny");
    let outside = dir.join("outside.git");
    dir.copy_tree(&source.path, &outside);
    std::os::unix::fs::symlink(&outside, root.join("link.git"))
        .unwrap_or_else(|error| panic!("symlink: {error}"));
    std::os::unix::fs::symlink(dir.path(), root.join("up"))
        .unwrap_or_else(|error| panic!("symlink: {error}"));
    let daemon = Daemon::start(
        &dir,
        &["--export-all", &format!("--base-path={}", root.display())],
    );
    let absolute = outside.display().to_string();
    for git in Git::all() {
        for path in [
            "/../outside.git",
            "/tiny.git/../../outside.git",
            "/%2e%2e/outside.git",
            "/%2E%2E/%2e%2e/outside.git",
            absolute.as_str(),
            "/link.git",
            "/up/outside.git",
            "/~root",
        ] {
            let output = ls_remote(&dir, &git, &daemon.url(path));
            assert_refused(&output, TERSE, &format!("{path} with {git}"));
        }
    }
    for head in [
        &b"git-upload-pack /../outside.git\0host=127.0.0.1\0\0version=2\0"[..],
        b"git-upload-pack /tiny.git\0/../../outside.git\0\0version=2\0",
        b"git-upload-pack /outside\0.git\0host=127.0.0.1\0\0version=2\0",
        b"git-upload-pack /tiny.git/\0../../outside.git\0",
        b"git-upload-pack /link.git\0host=127.0.0.1\0\0version=2\0",
    ] {
        let answer = raw_request(&daemon, head);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            pkt::error_reason(&answer).is_some(),
            "{:?} must be answered with ERR, got {text:?}",
            String::from_utf8_lossy(head)
        );
        assert!(
            !text.contains("version 2") && !text.contains("refs/heads"),
            "{:?} must not reach a repository: {text:?}",
            String::from_utf8_lossy(head)
        );
    }
    // Still serving.
    for git in Git::all() {
        assert_served(
            &ls_remote(&dir, &git, &daemon.url("/tiny.git")),
            "/tiny.git",
        );
    }
}

#[test]
fn verbose_log_lines() {
    let dir = Dir::new("daemon-log");
    let root = repos_with_tiny(&dir, &["tiny.git"]);
    let daemon = Daemon::start(
        &dir,
        &["--export-all", &format!("--base-path={}", root.display())],
    );
    let git = Git::newest();
    assert_served(
        &ls_remote(&dir, &git, &daemon.url("/tiny.git")),
        "/tiny.git",
    );
    let prefix = format!("[{}] ", daemon.pid());
    daemon.wait_for_log(&[
        &format!("{prefix}Ready to rumble"),
        &format!("{prefix}Connection from 127.0.0.1:"),
        &format!("{prefix}Request upload-pack for '/tiny.git'"),
    ]);
    let log = daemon.log_text();
    for line in log.lines() {
        assert!(
            line.starts_with(&prefix),
            "not git daemon's style: {line:?}\n{log}"
        );
    }
}

#[test]
fn pid_file_and_sigterm() {
    let dir = Dir::new("daemon-sigterm");
    let root = repos_with_tiny(&dir, &["tiny.git"]);
    let pid_file = dir.join("daemon.pid");
    let daemon = Daemon::start(
        &dir,
        &[
            "--export-all",
            "--reuseaddr",
            &format!("--base-path={}", root.display()),
            &format!("--pid-file={}", pid_file.display()),
        ],
    );
    let written = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|error| panic!("reading {}: {error}", pid_file.display()));
    assert_eq!(written, format!("{}\n", daemon.pid()));
    assert_served(
        &ls_remote(&dir, &Git::newest(), &daemon.url("/tiny.git")),
        "/tiny.git",
    );
    let log = daemon.log.clone();
    let status = daemon.terminate();
    assert_eq!(
        status.signal(),
        Some(15),
        "the daemon must end by SIGTERM, not {status}; log:\n{}",
        log.lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .join("\n")
    );
    assert!(!pid_file.exists(), "the pid file was left behind");
}

#[test]
fn init_timeout_closes_silent_connections() {
    let dir = Dir::new("daemon-init-timeout");
    let root = repos_with_tiny(&dir, &["tiny.git"]);
    let daemon = Daemon::start(
        &dir,
        &[
            "--export-all",
            "--init-timeout=1",
            &format!("--base-path={}", root.display()),
        ],
    );
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port))
        .unwrap_or_else(|error| panic!("connecting to the daemon: {error}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap_or_else(|error| panic!("set_read_timeout: {error}"));
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    // Closed (or reset), perhaps after an ERR line saying why; not left waiting.
    assert!(
        read.is_ok() || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "a silent client must be disconnected, got {read:?} after {:?}",
        started.elapsed()
    );
    assert!(
        answer.is_empty() || pkt::error_reason(&answer).is_some(),
        "unexpected answer to a silent client: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "disconnected only after {:?}",
        started.elapsed()
    );
    assert_served(
        &ls_remote(&dir, &Git::newest(), &daemon.url("/tiny.git")),
        "/tiny.git",
    );
}

#[test]
fn unsupported_and_invalid_options_are_refused() {
    let dir = Dir::new("daemon-options");
    for (args, message) in [
        (&["--inetd"][..], "--inetd is not supported"),
        (&["--syslog"], "--syslog is not supported"),
        (&["--detach"], "--detach is not supported"),
        (&["--user=nobody"], "not supported"),
        (&["--user-path"], "--user-path is not supported"),
        (
            &["--base-path-relaxed"],
            "--base-path-relaxed is not supported",
        ),
        (
            &["--enable=upload-archive"],
            "upload-archive is not supported",
        ),
        (&["--strict-paths"], "--strict-paths requires a whitelist"),
        (
            &["--base-path=/nonexistent/packgate"],
            "base-path '/nonexistent/packgate' does not exist",
        ),
        (&["--interpolated-path=/pub/%CH%D"], "%CH"),
        (&["--frobnicate"], "--frobnicate"),
    ] {
        let output = dir
            .packgate()
            .arg("daemon")
            .args(["--listen=127.0.0.1", "--port=1"])
            .args(args)
            .timeout(Duration::from_secs(30))
            .output();
        assert!(
            !output.status.success(),
            "{args:?} must be refused: {output}"
        );
        assert!(
            output.stderr_text().contains(message),
            "{args:?}: no '{message}': {output}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Bounded sessions: stalled and killed clients, the connection cap.

/// Clients that stall — in the middle of a v2 request, in the middle of a push's pack — are
/// cut off after the timeouts, the push leaves nothing in the
/// repository, and other clients are served all the while.
#[test]
fn stalled_clients_are_reaped() {
    use crate::receive_pack::{setup_with_partial_request, Snapshot};
    let git = Git::newest();
    let (setup, request) = setup_with_partial_request("daemon-stall", &git);
    let daemon = Daemon::start(
        &setup.dir,
        &[
            "--export-all",
            &format!("--base-path={}", setup.dir.path().display()),
            "--timeout=2",
            "--enable=receive-pack",
        ],
    );
    let address = format!("127.0.0.1:{}", daemon.port);
    let before = Snapshot::of(&setup.dir, &git, &setup.server);

    // Half a v2 request: the command, no flush.
    let mut half_request = open_session(&address, "/server.git");
    half_request
        .write_all(&line(b"command=ls-refs\n"))
        .unwrap_or_else(|error| panic!("sending half a request: {error}"));
    // Half a push: the command and half the pack.
    let mut half_push =
        TcpStream::connect(&address).unwrap_or_else(|error| panic!("connect: {error}"));
    half_push
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap_or_else(|error| panic!("set_read_timeout: {error}"));
    half_push
        .write_all(&line(b"git-receive-pack /server.git\0host=127.0.0.1\0"))
        .unwrap_or_else(|error| panic!("sending the head: {error}"));
    let advertisement = read_until_flush(&mut half_push);
    assert!(
        advertisement
            .first()
            .is_some_and(|line| line.windows(13).any(|w| w == b"report-status")),
        "not a receive-pack advertisement: {advertisement:?}"
    );
    half_push
        .write_all(&request)
        .unwrap_or_else(|error| panic!("sending half a push: {error}"));
    crate::receive_pack::wait_until(crate::receive_pack::END_LIMIT, "the pack to arrive", || {
        crate::receive_pack::temporary_pack_size(&setup.server).is_some()
    });
    // Others are served while those three stall.
    assert_served(
        &ls_remote(&setup.dir, &git, &daemon.url("/server.git")),
        "/server.git",
    );

    let limit = Duration::from_secs(15);
    wait_for_close(&mut half_request, limit);
    wait_for_close(&mut half_push, limit);
    crate::receive_pack::wait_until(
        crate::receive_pack::END_LIMIT,
        "the quarantine to go",
        || crate::receive_pack::quarantines(&setup.server).is_empty(),
    );
    before.assert_unchanged(&setup.dir, &git, &setup.server, "stalled push over git://");
    assert_served(
        &ls_remote(&setup.dir, &git, &daemon.url("/server.git")),
        "/server.git",
    );
}

/// `git push` over git:// killed with SIGKILL while its pack streams: the daemon notices,
/// drops the quarantine, and the repository is as before.
#[test]
fn killing_a_push_over_git_protocol_mid_pack_leaves_nothing() {
    use crate::receive_pack::{
        assert_pushed, quarantines, temporary_pack_size, wait_until, Setup, Snapshot, END_LIMIT,
    };
    for git in Git::all() {
        let setup = Setup::new("daemon-kill", &git);
        let daemon = Daemon::start(
            &setup.dir,
            &[
                "--export-all",
                &format!("--base-path={}", setup.dir.path().display()),
                "--enable=receive-pack",
            ],
        );
        let first = setup
            .client()
            .arg("push")
            .arg(daemon.url("/server.git"))
            .arg("master")
            .output();
        assert_pushed(&first);
        let big = setup.commit_incompressible();
        let before = Snapshot::of(&setup.dir, &git, &setup.server);
        let context = format!("killed push over git:// with {git}");
        let mut push = setup
            .client()
            .args(["-c", "pack.window=0", "push"])
            .arg(daemon.url("/server.git"))
            .arg("master")
            .spawn();
        wait_until(END_LIMIT, "the pack to stream", || {
            temporary_pack_size(&setup.server).is_some_and(|size| size > 0) || push.has_exited()
        });
        // Other clients are served while the push streams.
        assert_served(
            &ls_remote(&setup.dir, &git, &daemon.url("/server.git")),
            "/server.git",
        );
        assert!(
            !push.has_exited(),
            "{context}: the push ended before it could be killed: {}",
            push.kill_group()
        );
        let killed = push.kill_group();
        assert_eq!(killed.signalled(), Some(9), "{context}: {killed}");
        wait_until(END_LIMIT, "the quarantine to go", || {
            quarantines(&setup.server).is_empty()
        });
        before.assert_unchanged(&setup.dir, &git, &setup.server, &context);
        assert!(
            !setup.has_object(&setup.server, &big),
            "{context}: the killed push's commit is in the repository"
        );
        assert_served(
            &ls_remote(&setup.dir, &git, &daemon.url("/server.git")),
            "/server.git",
        );
    }
}

/// A client beyond `--max-connections` is told why, and served once a slot is free.
#[test]
fn connections_beyond_the_cap_are_told_why() {
    let dir = Dir::new("daemon-cap");
    let root = repos_with_tiny(&dir, &["tiny.git"]);
    let daemon = Daemon::start(
        &dir,
        &[
            "--export-all",
            &format!("--base-path={}", root.display()),
            "--max-connections=2",
        ],
    );
    let address = format!("127.0.0.1:{}", daemon.port);
    let first = open_session(&address, "/tiny.git");
    let _second = open_session(&address, "/tiny.git");
    for git in Git::all() {
        let output = dir
            .git(&git)
            .args(["-c", "protocol.version=2", "ls-remote"])
            .arg(daemon.url("/tiny.git"))
            .output();
        assert!(
            !output.status.success(),
            "over the cap with {git}: {output}"
        );
        assert!(
            output.stderr_text().contains("too many connections"),
            "with {git}: {output}"
        );
    }
    drop(first);
    // The slot frees once the server has seen the hang-up.
    let started = std::time::Instant::now();
    loop {
        let output = dir
            .git(&Git::newest())
            .args(["-c", "protocol.version=2", "ls-remote"])
            .arg(daemon.url("/tiny.git"))
            .output();
        if output.status.success() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no slot freed: {output}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `--disable=upload-pack` turns fetching off, and a repository may turn it back on with
/// `daemon.uploadpack` unless `--forbid-override=upload-pack`.
#[test]
fn upload_pack_switches() {
    let dir = Dir::new("daemon-upload-switch");
    let root = repos_with_tiny(&dir, &["off.git", "on.git"]);
    let base = format!("--base-path={}", root.display());
    let git = Git::newest();
    dir.git_in(&git, &root.join("on.git"))
        .args(["config", "daemon.uploadpack", "true"])
        .run();
    let disabled = Daemon::start(
        &dir,
        &[
            "--export-all",
            "--informative-errors",
            "--disable=upload-pack",
            &base,
        ],
    );
    assert_refused(
        &ls_remote(&dir, &git, &disabled.url("/off.git")),
        "service not enabled: /off.git",
        "--disable=upload-pack",
    );
    assert_served(
        &ls_remote(&dir, &git, &disabled.url("/on.git")),
        "daemon.uploadpack=true overrides --disable",
    );
    drop(disabled);
    let forbidden = Daemon::start(
        &dir,
        &[
            "--export-all",
            "--informative-errors",
            "--disable=upload-pack",
            "--forbid-override=upload-pack",
            &base,
        ],
    );
    assert_refused(
        &ls_remote(&dir, &git, &forbidden.url("/on.git")),
        "service not enabled: /on.git",
        "--forbid-override=upload-pack",
    );
}

/// A relay on 127.0.0.1 for one git:// connection to `upstream_port` that takes
/// ` side-band-64k` out of the advertisement's capability line: real git clients always ask
/// for sideband when it is offered, and this makes one push without it. The thread returns
/// whether it found the capability to take out.
fn sideband_stripping_relay(upstream_port: u16) -> (u16, std::thread::JoinHandle<bool>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|error| panic!("binding the relay: {error}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("the relay's address: {error}"))
        .port();
    let relay = std::thread::spawn(move || {
        let (client, _) = listener
            .accept()
            .unwrap_or_else(|error| panic!("the relay's accept: {error}"));
        let server = TcpStream::connect(("127.0.0.1", upstream_port))
            .unwrap_or_else(|error| panic!("the relay's connection to the daemon: {error}"));
        for stream in [&client, &server] {
            stream
                .set_read_timeout(Some(START_LIMIT))
                .unwrap_or_else(|error| panic!("set_read_timeout: {error}"));
        }
        let clone = |stream: &TcpStream| {
            stream
                .try_clone()
                .unwrap_or_else(|error| panic!("cloning a socket: {error}"))
        };
        let (mut from_client, mut to_server) = (clone(&client), clone(&server));
        let upstream = std::thread::spawn(move || {
            let _ = std::io::copy(&mut from_client, &mut to_server);
            let _ = to_server.shutdown(std::net::Shutdown::Write);
        });
        let (mut from_server, mut to_client) = (BufReader::new(server), client);
        let mut stripped = false;
        // Relay pkt-lines up to the first one with capabilities (after a NUL), rewritten.
        loop {
            let mut length = [0u8; 4];
            if from_server.read_exact(&mut length).is_err() {
                break;
            }
            let size = std::str::from_utf8(&length)
                .ok()
                .and_then(|hex| usize::from_str_radix(hex, 16).ok())
                .unwrap_or_else(|| panic!("not a pkt-line length: {length:?}"));
            let mut payload = vec![0u8; size.saturating_sub(4)];
            from_server
                .read_exact(&mut payload)
                .unwrap_or_else(|error| panic!("reading the advertisement: {error}"));
            if !payload.contains(&0) {
                let _ = to_client.write_all(&length);
                let _ = to_client.write_all(&payload);
                continue;
            }
            let text = String::from_utf8_lossy(&payload).into_owned();
            let rewritten = text.replace(" side-band-64k", "");
            stripped = rewritten != text;
            let _ = to_client.write_all(&line(rewritten.as_bytes()));
            break;
        }
        let _ = std::io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(std::net::Shutdown::Write);
        let _ = upstream.join();
        stripped
    });
    (port, relay)
}

/// A pre-receive hook that says something on both of its output streams.
fn talkative_pre_receive(server: &Path, words: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let hook = server.join("hooks/pre-receive");
    write_file(
        &hook,
        format!("#!/bin/sh\necho '{words} (stdout)'\necho '{words} (stderr)' >&2\n").as_bytes(),
    );
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|error| panic!("chmod {}: {error}", hook.display()));
}

/// Without sideband, git daemon's receive-pack writes hook output to the daemon's standard
/// error, its log, and never to the client: packgate daemon logs it as log lines
/// (`[<pid>] …`) and the client is not told. With sideband it is the client's (`remote: `).
#[test]
fn hook_output_without_sideband_goes_to_the_daemon_log() {
    for git in Git::all() {
        let setup = PushSetup::new("daemon-hook-log", &git);
        talkative_pre_receive(&setup.server, "hook says hello");
        let daemon = setup.daemon(&["--enable=receive-pack"]);
        let prefix = format!("[{}] ", daemon.pid());

        let with_sideband = setup.push(&git, &daemon, "master:refs/heads/banded");
        assert!(with_sideband.status.success(), "{with_sideband}");
        for stream in ["stdout", "stderr"] {
            assert!(
                with_sideband
                    .stderr_text()
                    .contains(&format!("remote: hook says hello ({stream})")),
                "{git}: the hook's {stream} did not reach the client: {with_sideband}"
            );
        }

        let (relay_port, relay) = sideband_stripping_relay(daemon.port);
        let plain = setup
            .dir
            .git(&git)
            .current_dir(&setup.client)
            .arg("push")
            .arg(format!("git://127.0.0.1:{relay_port}/server.git"))
            .arg("master:refs/heads/plain")
            .output();
        assert!(
            relay.join().unwrap_or(false),
            "{git}: no side-band-64k to take out"
        );
        assert!(plain.status.success(), "{git}: {plain}");
        assert!(
            refs(&setup.dir, &git, &setup.server, &[]).contains_key("refs/heads/plain"),
            "{git}: the push without sideband did not arrive"
        );
        assert!(
            !plain.stderr_text().contains("hook says hello")
                && !plain.stdout_text().contains("hook says hello"),
            "{git}: without sideband the client is not told, as with git daemon: {plain}"
        );
        daemon.wait_for_log(&[
            &format!("{prefix}hook says hello (stdout)"),
            &format!("{prefix}hook says hello (stderr)"),
        ]);
        let log = daemon.log_text();
        for line in log.lines() {
            assert!(
                line.starts_with(&prefix),
                "{git}: hook output outside the log's lines: {line:?}\n{log}"
            );
        }
    }
}

/// With `--log-destination=none` git daemon's standard error is /dev/null, and with it the
/// hook output of pushes without sideband: packgate daemon writes nothing either.
#[test]
fn hook_output_without_sideband_follows_log_destination_none() {
    let git = Git::newest();
    let setup = PushSetup::new("daemon-hook-quiet", &git);
    talkative_pre_receive(&setup.server, "hook says hello");
    let stderr_path = setup.dir.join("daemon.stderr");
    let mut started = None;
    for _ in 0..5 {
        let port = free_port();
        let stderr = std::fs::File::create(&stderr_path)
            .unwrap_or_else(|error| panic!("creating {}: {error}", stderr_path.display()));
        let mut child = Command::new(PACKGATE)
            .arg("daemon")
            .arg("--log-destination=none")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg("--export-all")
            .arg(format!("--base-path={}", setup.root.display()))
            .arg("--enable=receive-pack")
            .env("HOME", setup.dir.join("home"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", setup.dir.join("home/.gitconfig"))
            .env("PACKGATE_LOG", "info")
            .current_dir(setup.dir.path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start packgate daemon: {error}"));
        let since = Instant::now();
        // Without a log there is no ready line: ready is when the port takes connections.
        let ready = loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break true;
            }
            if child.try_wait().ok().flatten().is_some() || since.elapsed() > START_LIMIT {
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if ready {
            started = Some((child, port));
            break;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    let (mut child, port) = started.unwrap_or_else(|| panic!("packgate daemon did not start"));

    let (relay_port, relay) = sideband_stripping_relay(port);
    let plain = setup
        .dir
        .git(&git)
        .current_dir(&setup.client)
        .arg("push")
        .arg(format!("git://127.0.0.1:{relay_port}/server.git"))
        .arg("master:refs/heads/plain")
        .output();
    let stripped = relay.join().unwrap_or(false);
    // The hook ran before the client got its report: whatever the daemon wrote of it is in
    // the file once the daemon is gone.
    let _ = child.kill();
    let _ = child.wait();
    assert!(stripped, "no side-band-64k to take out");
    assert!(plain.status.success(), "{plain}");
    assert!(
        refs(&setup.dir, &git, &setup.server, &[]).contains_key("refs/heads/plain"),
        "the push without sideband did not arrive"
    );
    let written = std::fs::read_to_string(&stderr_path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", stderr_path.display()));
    assert!(
        !written.contains("hook says hello"),
        "packgate daemon --log-destination=none wrote hook output to its stderr:\n{written}"
    );
    assert!(
        !plain.stderr_text().contains("hook says hello"),
        "without sideband the client is not told, as with git daemon: {plain}"
    );
}
