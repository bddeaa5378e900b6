//! Temporary directories, isolated git clients, and subprocesses with a time limit whose
//! failures print the command, the directory and the output.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use packgate_fixture::{BuiltFixture, Spec};

/// The binary under test.
pub const PACKGATE: &str = env!("CARGO_BIN_EXE_packgate");

/// How long any one subprocess may run unless a test says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A git client installed on this machine.
#[derive(Clone, Debug)]
pub struct Git {
    /// The `git` binary.
    pub program: PathBuf,
    /// `git version` output, e.g. `git version 2.47.3`.
    pub version: String,
}

impl fmt::Display for Git {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.version, self.program.display())
    }
}

/// Where the git clients are looked for; a missing one is skipped with a message.
const GIT_CLIENTS: [&str; 2] = ["/usr/local/bin/git", "/usr/bin/git"];

impl Git {
    /// Every installed git client (at least one, or the test fails).
    pub fn all() -> Vec<Git> {
        static ALL: OnceLock<Vec<Git>> = OnceLock::new();
        let all = ALL.get_or_init(|| {
            let mut all = Vec::new();
            for program in GIT_CLIENTS {
                let program = PathBuf::from(program);
                // Both clients are part of the test matrix; a machine without one is not set
                // up (see .ci/run) unless told to make do.
                if !program.exists() {
                    assert!(
                        std::env::var_os("PACKGATE_TEST_ALLOW_MISSING_GIT").is_some(),
                        "git client {} is not installed (set PACKGATE_TEST_ALLOW_MISSING_GIT=1 \
                         to test with the others only)",
                        program.display()
                    );
                    eprintln!("skipping git client {}: not installed", program.display());
                    continue;
                }
                let output = Cmd::new(&program).arg("version").output();
                if !output.status.success() {
                    eprintln!("skipping git client {}: {output}", program.display());
                    continue;
                }
                all.push(Git {
                    program,
                    version: output.stdout_text().trim().to_owned(),
                });
            }
            all
        });
        assert!(
            !all.is_empty(),
            "no git client found in {GIT_CLIENTS:?}; the tests need one"
        );
        all.clone()
    }

    /// The newest installed client (the first of [`Git::all`]).
    pub fn newest() -> Git {
        Git::all().remove(0)
    }
}

/// A temporary directory with its own `$HOME` and git configuration; removed on drop.
pub struct Dir {
    temp: tempfile::TempDir,
    home: PathBuf,
}

impl Dir {
    /// A new directory; `name` is part of its path, to find it in messages.
    pub fn new(name: &str) -> Dir {
        let temp = tempfile::Builder::new()
            .prefix(&format!("packgate-{name}-"))
            .tempdir()
            .unwrap_or_else(|error| panic!("creating a temporary directory: {error}"));
        let home = temp.path().join("home");
        std::fs::create_dir_all(&home)
            .unwrap_or_else(|error| panic!("creating {}: {error}", home.display()));
        let config = "[user]\n\tname = Test User\n\temail = test@example.com\n\
                      [init]\n\tdefaultBranch = master\n\
                      [advice]\n\tdetachedHead = false\n\
                      [protocol]\n\tallow = always\n";
        write_file(&home.join(".gitconfig"), config.as_bytes());
        Dir { temp, home }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    /// A path inside the directory.
    pub fn join(&self, relative: &str) -> PathBuf {
        self.temp.path().join(relative)
    }

    /// A command for `git`, isolated from the user's and the system's configuration, running
    /// in this directory.
    pub fn git(&self, git: &Git) -> Cmd {
        let mut cmd = Cmd::new(&git.program);
        cmd.command
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", self.home.join(".gitconfig"))
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "/bin/false")
            .current_dir(self.path());
        cmd
    }

    /// A command for `git --git-dir=<repo>`.
    pub fn git_in(&self, git: &Git, repo: &Path) -> Cmd {
        self.git(git).arg(format!("--git-dir={}", repo.display()))
    }

    /// A command for the packgate binary, with the same isolated environment.
    pub fn packgate(&self) -> Cmd {
        let mut cmd = Cmd::new(Path::new(PACKGATE));
        cmd.command
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", self.home.join(".gitconfig"))
            .current_dir(self.path());
        cmd
    }

    /// Copies the directory tree `from` to `to` (inside this directory or not).
    pub fn copy_tree(&self, from: &Path, to: &Path) {
        Cmd::new(Path::new("cp")).arg("-a").arg(from).arg(to).run();
    }

    /// Builds a fresh, private copy of a fixture (for tests that change the source).
    pub fn fixture(&self, spec: &Spec) -> BuiltFixture {
        let destination = self.join(&format!("{}-source.git", spec.name));
        spec.build(&destination)
            .unwrap_or_else(|error| panic!("building fixture {}: {error}", spec.name))
    }
}

/// A shared, read-only fixture of a preset, built once per test run (and kept between runs
/// in cargo's target directory, keyed by the generator's fingerprint).
pub fn shared_fixture(preset: &str) -> BuiltFixture {
    static BUILT: Mutex<BTreeMap<String, Arc<OnceLock<BuiltFixture>>>> =
        Mutex::new(BTreeMap::new());
    let spec = preset_spec(preset);
    let slot = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(preset.to_owned())
        .or_default()
        .clone();
    // Tests asking for the same preset wait for one build; other presets build meanwhile.
    slot.get_or_init(|| {
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
        let started = Instant::now();
        let fixture = spec
            .build_cached(&cache)
            .unwrap_or_else(|error| panic!("building fixture {preset}: {error}"));
        eprintln!("fixture {fixture} ready in {:.1?}", started.elapsed());
        fixture
    })
    .clone()
}

/// A preset, or a failed test.
pub fn preset_spec(preset: &str) -> Spec {
    Spec::preset(preset).unwrap_or_else(|| panic!("unknown fixture preset {preset}"))
}

/// `--upload-pack=<packgate> upload-pack`, for `git clone`, `fetch` and `ls-remote`.
pub fn packgate_upload_pack_option() -> String {
    format!("--upload-pack={}", packgate_upload_pack_command())
}

/// The command git runs (through the shell, with the repository appended) to reach packgate.
pub fn packgate_upload_pack_command() -> String {
    format!("{} upload-pack", shell_quote(PACKGATE))
}

/// `--upload-pack=<git> upload-pack`: git's own server, the reference.
pub fn git_upload_pack_option(git: &Git) -> String {
    format!(
        "--upload-pack={} upload-pack",
        shell_quote(&git.program.to_string_lossy())
    )
}

/// Every object present in a repository's object database (not merely referenced).
pub fn present_objects(dir: &Dir, git: &Git, repo: &Path) -> BTreeSet<String> {
    dir.git_in(git, repo)
        .args([
            "cat-file",
            "--batch-all-objects",
            "--batch-check=%(objectname)",
        ])
        .run()
        .stdout_text()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `file://<path>`, which makes git run upload-pack instead of copying the repository.
pub fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Writes a file or fails the test.
pub fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes)
        .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
}

/// The refs of a repository matching `patterns` (as `git for-each-ref` takes them; none for
/// all), as name → object id.
pub fn refs(dir: &Dir, git: &Git, repo: &Path, patterns: &[&str]) -> BTreeMap<String, String> {
    let output = dir
        .git_in(git, repo)
        .args(["for-each-ref", "--format=%(objectname) %(refname)"])
        .args(patterns)
        .run();
    output
        .stdout_text()
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(oid, name)| (name.to_owned(), oid.to_owned()))
        .collect()
}

/// Replaces the prefix `from` of every name by `to`.
pub fn rename_refs(
    refs: &BTreeMap<String, String>,
    from: &str,
    to: &str,
) -> BTreeMap<String, String> {
    refs.iter()
        .map(|(name, oid)| match name.strip_prefix(from) {
            Some(rest) => (format!("{to}{rest}"), oid.clone()),
            None => (name.clone(), oid.clone()),
        })
        .collect()
}

/// Asserts two ref maps are equal, printing what differs.
#[track_caller]
pub fn assert_same_refs(
    actual: &BTreeMap<String, String>,
    expected: &BTreeMap<String, String>,
    context: &str,
) {
    if actual == expected {
        return;
    }
    let mut differences = String::new();
    for (name, oid) in expected {
        match actual.get(name) {
            None => differences.push_str(&format!("  missing {name} ({oid})\n")),
            Some(other) if other != oid => {
                differences.push_str(&format!("  {name}: {other}, expected {oid}\n"))
            }
            Some(_) => {}
        }
    }
    for (name, oid) in actual {
        if !expected.contains_key(name) {
            differences.push_str(&format!("  unexpected {name} ({oid})\n"));
        }
    }
    panic!(
        "{context}: refs differ ({} expected, {} actual):\n{differences}",
        expected.len(),
        actual.len()
    );
}

/// `git fsck --strict` of a repository (or a work tree's repository), which must pass.
pub fn fsck(dir: &Dir, git: &Git, repo: &Path) {
    dir.git_in(git, repo)
        .args(["fsck", "--strict", "--no-progress", "--no-dangling"])
        .timeout(Duration::from_secs(300))
        .run();
}

/// What a subprocess gets on standard input.
enum Input {
    /// Nothing: standard input is closed at once.
    Closed,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// These bytes, then standard input stays open until the process exits: for checking
    /// that it answers without waiting for more.
    BytesThenOpen(Vec<u8>),
    /// Whatever comes from here (another process's output).
    From(Stdio),
}

/// A subprocess with a time limit.
pub struct Cmd {
    command: Command,
    input: Input,
    timeout: Duration,
}

impl Cmd {
    /// A command for `program`.
    pub fn new(program: &Path) -> Cmd {
        let mut command = Command::new(program);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("GIT_") {
                command.env_remove(&name);
            }
        }
        command.env("LC_ALL", "C").env("LANGUAGE", "C");
        Cmd {
            command,
            input: Input::Closed,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.command.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, name: &str, value: impl AsRef<OsStr>) -> Cmd {
        self.command.env(name, value);
        self
    }

    /// Runs in `dir`.
    pub fn current_dir(mut self, dir: &Path) -> Cmd {
        self.command.current_dir(dir);
        self
    }

    /// Writes `bytes` to standard input, then closes it.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.input = Input::Bytes(bytes.into());
        self
    }

    /// Writes `bytes` to standard input and keeps it open until the process exits.
    pub fn stdin_then_keep_open(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.input = Input::BytesThenOpen(bytes.into());
        self
    }

    /// Reads standard input from `stdin`, e.g. another process's output.
    pub fn stdin_from(mut self, stdin: impl Into<Stdio>) -> Cmd {
        self.input = Input::From(stdin.into());
        self
    }

    /// Changes the time limit.
    pub fn timeout(mut self, timeout: Duration) -> Cmd {
        self.timeout = timeout;
        self
    }

    /// Runs, and fails the test unless the command succeeds.
    #[track_caller]
    pub fn run(self) -> Output {
        let output = self.output();
        assert!(output.status.success(), "command failed: {output}");
        output
    }

    /// Runs and returns whatever happened. Fails the test only if the command can't start,
    /// outlives its time limit (it is killed with its process group), or a Rust panic shows
    /// (exit status 101 or "panicked at" on standard error).
    #[track_caller]
    pub fn output(mut self) -> Output {
        let (input, keep_open) = match std::mem::replace(&mut self.input, Input::Closed) {
            Input::Closed => (Vec::new(), false),
            Input::Bytes(bytes) => (bytes, false),
            Input::BytesThenOpen(bytes) => (bytes, true),
            from @ Input::From(_) => {
                // For `start()`.
                self.input = from;
                (Vec::new(), false)
            }
        };
        let Started {
            description,
            directory,
            started,
            mut child,
        } = self.start();
        let stdout = child.stdout.take().map(read_in_background);
        let stderr = child.stderr.take().map(read_in_background);
        let stdin = child.stdin.take();
        let (stdin_done_sender, stdin_done) = mpsc::channel::<()>();
        let writer = stdin.map(|mut stdin| {
            std::thread::spawn(move || {
                // The process may exit without reading: a broken pipe is its business.
                let _ = stdin.write_all(&input);
                let _ = stdin.flush();
                if keep_open {
                    let _ = stdin_done.recv();
                }
            })
        });

        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() > self.timeout => {
                    timed_out = true;
                    kill_group(child.id());
                    let _ = child.kill();
                    match child.wait() {
                        Ok(status) => break status,
                        Err(error) => panic!("waiting for `{description}`: {error}"),
                    }
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(error) => panic!("waiting for `{description}`: {error}"),
            }
        };
        let elapsed = started.elapsed();
        drop(stdin_done_sender);
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        // Children that outlive the process may hold its pipes: don't wait for them forever.
        let collect = |receiver: Option<mpsc::Receiver<Vec<u8>>>| {
            receiver
                .and_then(|receiver| receiver.recv_timeout(Duration::from_secs(10)).ok())
                .unwrap_or_default()
        };
        let output = Output {
            description,
            directory,
            status,
            stdout: collect(stdout),
            stderr: collect(stderr),
            elapsed,
        };
        assert!(
            !timed_out,
            "command timed out after {:?} and was killed: {output}",
            self.timeout
        );
        assert!(!output.panicked(), "a process panicked: {output}");
        output
    }

    /// Starts the command in a process group of its own, so a timeout or a kill also ends
    /// what it started (git's upload-pack, a shell). Standard input is a pipe unless
    /// [`Cmd::stdin_from`] says otherwise; output and error are pipes.
    #[track_caller]
    fn start(&mut self) -> Started {
        let description = describe(&self.command);
        let directory = self
            .command
            .get_current_dir()
            .map(|dir| dir.display().to_string())
            .unwrap_or_else(|| ".".to_owned());
        match std::mem::replace(&mut self.input, Input::Closed) {
            Input::From(stdin) => {
                self.command.stdin(stdin);
            }
            Input::Closed | Input::Bytes(_) | Input::BytesThenOpen(_) => {
                self.command.stdin(Stdio::piped());
            }
        }
        self.command
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let child = self
            .command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run `{description}` in {directory}: {error}"));
        Started {
            description,
            directory,
            started,
            child,
        }
    }

    /// Starts the command in the background, in a process group of its own. Standard input
    /// is closed at once unless it comes from elsewhere ([`Cmd::stdin_from`]).
    #[track_caller]
    pub fn spawn(mut self) -> Background {
        let Started {
            description,
            directory,
            started,
            mut child,
        } = self.start();
        drop(child.stdin.take());
        let stdout = child.stdout.take().map(read_in_background);
        let stderr = child.stderr.take().map(read_in_background);
        Background {
            description,
            directory,
            started,
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    /// [`Cmd::spawn`], handing over standard output (to feed another process).
    #[track_caller]
    pub fn spawn_with_stdout(mut self) -> (Background, ChildStdout) {
        let Started {
            description,
            directory,
            started,
            mut child,
        } = self.start();
        drop(child.stdin.take());
        let Some(stdout) = child.stdout.take() else {
            panic!("`{description}` has no standard output pipe");
        };
        let stderr = child.stderr.take().map(read_in_background);
        let background = Background {
            description,
            directory,
            started,
            child,
            stdout: None,
            stderr,
            status: None,
        };
        (background, stdout)
    }
}

/// A process just started by [`Cmd::start`].
struct Started {
    description: String,
    directory: String,
    started: Instant,
    child: Child,
}

/// A command running in the background in a process group of its own (from [`Cmd::spawn`]);
/// the group is killed when this is dropped.
pub struct Background {
    description: String,
    directory: String,
    started: Instant,
    child: Child,
    stdout: Option<mpsc::Receiver<Vec<u8>>>,
    stderr: Option<mpsc::Receiver<Vec<u8>>>,
    status: Option<ExitStatus>,
}

impl Background {
    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        if self.status.is_none() {
            match self.child.try_wait() {
                Ok(status) => self.status = status,
                Err(error) => panic!("waiting for `{}`: {error}", self.description),
            }
        }
        self.status.is_some()
    }

    /// Sends SIGKILL to the whole process group, then waits for the process.
    pub fn kill_group(mut self) -> Output {
        kill_group(self.child.id());
        self.finish()
    }

    /// Waits for the process to exit on its own, at most `timeout` (then its group is
    /// killed and the test fails).
    #[track_caller]
    pub fn wait(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        while !self.has_exited() {
            if Instant::now() > deadline {
                kill_group(self.child.id());
                let output = self.finish();
                panic!("command did not end within {timeout:?} and was killed: {output}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let output = self.finish();
        assert!(!output.panicked(), "a process panicked: {output}");
        output
    }

    fn finish(&mut self) -> Output {
        let status = match self.status {
            Some(status) => status,
            None => match self.child.wait() {
                Ok(status) => status,
                Err(error) => panic!("waiting for `{}`: {error}", self.description),
            },
        };
        self.status = Some(status);
        let elapsed = self.started.elapsed();
        // Children that outlive the process may hold its pipes: don't wait for them forever.
        let collect = |receiver: Option<mpsc::Receiver<Vec<u8>>>| {
            receiver
                .and_then(|receiver| receiver.recv_timeout(Duration::from_secs(10)).ok())
                .unwrap_or_default()
        };
        Output {
            description: self.description.clone(),
            directory: self.directory.clone(),
            status,
            stdout: collect(self.stdout.take()),
            stderr: collect(self.stderr.take()),
            elapsed,
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.status.is_none() {
            kill_group(self.child.id());
            let _ = self.child.wait();
        }
    }
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = sender.send(bytes);
    });
    receiver
}

fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn describe(command: &Command) -> String {
    let mut text = String::new();
    for (name, value) in command.get_envs() {
        let name = name.to_string_lossy();
        if name == "GIT_PROTOCOL" {
            if let Some(value) = value {
                text.push_str(&format!("{name}={} ", value.to_string_lossy()));
            }
        }
    }
    text.push_str(&command.get_program().to_string_lossy());
    for arg in command.get_args() {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains([' ', '\'', '"']) {
            text.push(' ');
            text.push_str(&shell_quote(&arg));
        } else {
            text.push(' ');
            text.push_str(&arg);
        }
    }
    text
}

/// What a finished subprocess did.
pub struct Output {
    /// The command line.
    pub description: String,
    /// Where it ran.
    pub directory: String,
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Output {
    /// Standard output as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (lossy).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Whether a Rust panic shows: exit status 101, or "panicked at" on standard error.
    pub fn panicked(&self) -> bool {
        self.status.code() == Some(101) || self.stderr_text().contains("panicked at")
    }

    /// Whether the process was killed by a signal (a crash, not an orderly error exit).
    pub fn signalled(&self) -> Option<i32> {
        self.status.signal()
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const LIMIT: usize = 8_000;
        let show = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            if text.len() > LIMIT {
                let mut end = LIMIT;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}\n[... {} more bytes]", &text[..end], text.len() - end)
            } else {
                text.into_owned()
            }
        };
        write!(
            f,
            "\n  command: {}\n  directory: {}\n  status: {} after {:.1?}\n  \
             --- stdout ---\n{}\n  --- stderr ---\n{}\n  ---",
            self.description,
            self.directory,
            self.status,
            self.elapsed,
            show(&self.stdout),
            show(&self.stderr)
        )
    }
}
