//! Running a repository's hook scripts the way git's receive-pack does.
//!
//! | hook           | arguments               | stdin                     | quarantine | push options |
//! |----------------|-------------------------|---------------------------|------------|--------------|
//! | `pre-receive`  | none                    | `<old> <new> <ref>` lines | yes        | yes          |
//! | `update`       | `<ref> <old> <new>`     | none                      | yes        | no           |
//! | `post-receive` | none                    | `<old> <new> <ref>` lines | no         | yes          |
//! | `post-update`  | the updated ref names   | none                      | no         | no           |
//! | `proc-receive` | none                    | pkt-lines, both ways      | no         | on its stdin |
//! | `push-to-checkout` | the new commit      | none                      | no         | no           |
//!
//! Every script runs in the git directory with `GIT_DIR=.`, except that `push-to-checkout`
//! (git's `receive.denyCurrentBranch=updateInstead`) gets `GIT_DIR` and `GIT_WORK_TREE`
//! naming the work tree it is to update (for a linked work tree, its own git directory), as
//! from git's receive-pack. With a quarantine,
//! `GIT_QUARANTINE_PATH` and `GIT_OBJECT_DIRECTORY` name it and the repository's object
//! directory is appended to `GIT_ALTERNATE_OBJECT_DIRECTORIES`. Push options are
//! `GIT_PUSH_OPTION_COUNT` and `GIT_PUSH_OPTION_0…`; when the client sent none (did not use
//! the capability), `GIT_PUSH_OPTION_COUNT` is removed from the environment.
//!
//! `proc-receive` holds a conversation ([`crate::proc_receive`]): its stdin and stdout carry
//! pkt-lines, only its stderr is forwarded to the caller, and it has the same time limit.
//!
//! The script's stdout and stderr are both read (each by its own thread) and forwarded, chunk
//! by chunk as they arrive, to the caller's `output` on the caller's thread. git gives a hook
//! one pipe for both; here they are two pipes, so a script writing to both in quick
//! succession may see the two interleaved slightly differently. stdin is written by its own
//! thread, so a script that does not read it cannot block the push; its broken pipe is
//! ignored. (That relies on `SIGPIPE` being ignored, as it is in every Rust program unless
//! the program changes it.)
//!
//! The time limit covers the whole run, until the script has exited and both its output pipes
//! are closed. When it is exceeded the script is killed: on unix it runs in a process group of
//! its own, and the whole group is sent `SIGKILL` (through `/bin/sh`'s `kill`, since this crate
//! has no `unsafe` to call `kill(2)` itself), then the script itself is killed through
//! [`std::process::Child::kill()`]. A descendant that left the group (`setsid`) survives; the
//! threads reading its pipes are then left behind until it closes them, but the push goes on.

use std::{
    ffi::OsString,
    io::{self, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use bstr::BString;

use crate::{
    proc_receive::{self, CommandResult, Conversation, ProcReceive, ProcReceiveRequest},
    Checkout, Hook, HookContext, RefUpdate, Verdict,
};

/// Runs the repository's own hook scripts: `pre-receive`, `update`, `post-receive` and
/// `post-update` in a hooks directory.
///
/// A script that is missing, or not executable, is skipped and accepts, as in git. A
/// `pre-receive` or `update` script that exits non-zero, cannot be started, or runs out of
/// time refuses; `post-receive` and `post-update` cannot refuse, and how they end is only
/// logged.
#[derive(Debug, Clone)]
pub struct ScriptHooks {
    hooks_dir: PathBuf,
    timeout: Duration,
}

impl ScriptHooks {
    /// The time limit of [`ScriptHooks::new()`]: five minutes per script.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

    /// Run the scripts found in `hooks_dir`, each with [`ScriptHooks::DEFAULT_TIMEOUT`].
    ///
    /// A relative `hooks_dir` is taken relative to the git directory, where scripts run
    /// (git's rule for a relative `core.hooksPath` in a bare repository).
    pub fn new(hooks_dir: impl Into<PathBuf>) -> Self {
        ScriptHooks {
            hooks_dir: hooks_dir.into(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// Run the scripts in `<git_dir>/hooks`, git's default place.
    ///
    /// A relative `git_dir` is taken relative to the working directory now, like the
    /// [`HookContext::git_dir`] the scripts run in, and made absolute here: kept relative, it
    /// would be taken relative to the git directory once more (`<dir>/<dir>/hooks`).
    pub fn for_repository(git_dir: &Path) -> Self {
        Self::new(absolute(&git_dir.join("hooks")))
    }

    /// The same scripts, each given at most `timeout` to run.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The directory the scripts are looked up in.
    pub fn hooks_dir(&self) -> &Path {
        &self.hooks_dir
    }

    /// The time limit of one script.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The absolute path of the script for `hook` (e.g. `"pre-receive"`) if it would run: it
    /// exists and is executable.
    fn script(&self, git_dir: &Path, hook: &str) -> Option<PathBuf> {
        let path = absolute(&git_dir.join(&self.hooks_dir).join(hook));
        let metadata = match std::fs::metadata(&path) {
            Ok(metadata) => metadata,
            Err(err) => {
                if err.kind() != io::ErrorKind::NotFound {
                    tracing::debug!(path = %path.display(), %err, "hook script not usable; skipped");
                }
                return None;
            }
        };
        if !metadata.is_file() || !is_executable(&metadata) {
            tracing::debug!(path = %path.display(), "hook script is not executable; ignored");
            return None;
        }
        Some(path)
    }

    /// Whether the script for `hook` (e.g. `"pre-receive"`) exists and is executable, so a
    /// push to the repository at `git_dir` would run it.
    pub fn would_run(&self, git_dir: &Path, hook: &str) -> bool {
        self.script(git_dir, hook).is_some()
    }

    /// Run the script for `invocation.hook`, if there is one.
    fn run(
        &self,
        ctx: &HookContext<'_>,
        invocation: Invocation,
        output: &mut dyn Write,
    ) -> Result<Outcome, RunError> {
        let hook = invocation.hook;
        let Some(script) = self.script(ctx.git_dir, hook) else {
            return Ok(Outcome::Skipped);
        };
        let started = Instant::now();
        let deadline = started + self.timeout;
        // stdout and stderr share one pipe, as git makes a hook's stdout its stderr: what
        // the script prints reaches the user in the order it printed it.
        let start = |program: &Path, script_argument: Option<&Path>| -> io::Result<_> {
            let (reader, writer) = io::pipe()?;
            let mut command = self.command(ctx, program, script_argument, &invocation);
            command.stdout(writer.try_clone()?).stderr(writer);
            // `command`, and with it our copies of the pipe's writing end, goes away here.
            spawn(command).map(|child| (child, reader))
        };
        let (mut child, output_pipe) = match start(&script, None) {
            Err(err) if is_not_executable_format(&err) => {
                start(Path::new("/bin/sh"), Some(&script))
            }
            result => result,
        }
        .map_err(|source| RunError::Spawn {
            hook,
            path: script.clone(),
            source,
        })?;
        tracing::debug!(hook, pid = child.id(), "hook started");

        if let (Some(stdin), Some(mut pipe)) = (invocation.stdin, child.stdin.take()) {
            spawn_thread(hook, "stdin", move || {
                if let Err(err) = pipe.write_all(&stdin) {
                    // A script need not read its input; it may exit before we are done.
                    tracing::debug!(hook, %err, "hook did not read all of its stdin");
                }
            });
        }

        let (sender, receiver) = mpsc::sync_channel(CHANNEL_CHUNKS);
        forward(hook, output_pipe, sender);
        let mut sink = Sink::new(output, hook);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(remaining) {
                Ok(Some(chunk)) => sink.write(&chunk),
                Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    kill(&mut child, hook);
                    return Ok(Outcome::TimedOut);
                }
            }
        }
        // The pipe is closed; the script has exited or is about to, unless it closed its
        // output on purpose and went on running.
        let outcome = wait_until(&mut child, hook, deadline)?;
        if let Outcome::Exited(status) = &outcome {
            tracing::debug!(hook, %status, elapsed = ?started.elapsed(), "hook finished");
        }
        Ok(outcome)
    }

    /// The command running `program` (the script, or a shell given the script as its first
    /// argument) for `invocation`.
    fn command(
        &self,
        ctx: &HookContext<'_>,
        program: &Path,
        script_argument: Option<&Path>,
        invocation: &Invocation,
    ) -> Command {
        let mut command = Command::new(program);
        command.args(script_argument).args(&invocation.args);
        command.current_dir(ctx.git_dir);
        match &invocation.work_tree {
            Some((git_dir, work_tree)) => command
                .env("GIT_DIR", git_dir)
                .env("GIT_WORK_TREE", work_tree),
            None => command.env("GIT_DIR", "."),
        };
        command.stdin(if invocation.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        match (invocation.quarantine, ctx.quarantine) {
            (true, Some(paths)) => {
                let quarantine = absolute(&paths.quarantine);
                let objects_dir = absolute(&paths.objects_dir);
                command
                    .env("GIT_QUARANTINE_PATH", &quarantine)
                    .env("GIT_OBJECT_DIRECTORY", &quarantine)
                    .env(
                        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
                        append_alternate(
                            std::env::var_os("GIT_ALTERNATE_OBJECT_DIRECTORIES"),
                            &objects_dir,
                        ),
                    );
                if let Some(shallow) = &paths.shallow_file {
                    command.env("GIT_SHALLOW_FILE", absolute(shallow));
                }
            }
            // A quarantine variable inherited from whoever started the server would make
            // git refuse ref updates the script attempts; there is no quarantine now.
            _ => {
                command.env_remove("GIT_QUARANTINE_PATH");
            }
        }
        if let Some(user) = ctx.remote_user {
            command.env("REMOTE_USER", user);
        }
        // As git's: the receive hooks (pre-receive, post-receive) hear of the certificate.
        if invocation.certificate {
            if let Some(certificate) = ctx.push_certificate {
                command
                    .env("GIT_PUSH_CERT", certificate.blob.to_string())
                    .env("GIT_PUSH_CERT_SIGNER", &certificate.signer)
                    .env("GIT_PUSH_CERT_KEY", &certificate.key)
                    .env("GIT_PUSH_CERT_STATUS", certificate.status.to_string());
                if let (Some(nonce), Some(status)) = (&certificate.nonce, &certificate.nonce_status)
                {
                    command
                        .env("GIT_PUSH_CERT_NONCE", nonce)
                        .env("GIT_PUSH_CERT_NONCE_STATUS", status);
                    if let Some(slop) = certificate.nonce_slop {
                        command.env("GIT_PUSH_CERT_NONCE_SLOP", slop.to_string());
                    }
                }
            }
        }
        if invocation.push_options {
            match ctx.push_options {
                Some(options) => {
                    for (index, option) in options.iter().enumerate() {
                        command.env(format!("GIT_PUSH_OPTION_{index}"), os_string(option));
                    }
                    command.env("GIT_PUSH_OPTION_COUNT", options.len().to_string());
                }
                None => {
                    command.env_remove("GIT_PUSH_OPTION_COUNT");
                }
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // Its own process group, so that a timeout can kill what it started, too.
            command.process_group(0);
        }
        command
    }

    fn verdict(
        &self,
        hook: &'static str,
        result: Result<Outcome, RunError>,
        declined: &str,
    ) -> Verdict {
        match result {
            Ok(Outcome::Skipped) => Verdict::Accept,
            Ok(Outcome::Exited(status)) if status.success() => Verdict::Accept,
            Ok(Outcome::Exited(status)) => {
                tracing::debug!(hook, %status, "hook refused");
                Verdict::refuse(declined)
            }
            Ok(Outcome::TimedOut) => {
                tracing::warn!(hook, timeout = ?self.timeout, "hook timed out and was killed");
                Verdict::refuse(format!("{hook} hook timed out after {:?}", self.timeout))
            }
            Err(err) => {
                tracing::warn!(hook, err = %ErrorChain(&err), "hook could not run");
                Verdict::refuse(declined)
            }
        }
    }

    /// Run the `proc-receive` script, if there is one, and hold git's conversation with it
    /// (see [`crate::proc_receive`]): its standard input and output carry pkt-lines, what it
    /// writes to standard error reaches `output` as it comes. git's complaints about the
    /// conversation or the report go to `output` as one `error: ` message once the script
    /// has exited, as git's receive-pack writes them.
    fn run_proc_receive(
        &self,
        ctx: &HookContext<'_>,
        request: &ProcReceiveRequest<'_>,
        output: &mut dyn Write,
    ) -> ProcReceive {
        let Some(script) = self.script(ctx.git_dir, PROC_RECEIVE) else {
            return ProcReceive::Declined;
        };
        let started = Instant::now();
        let deadline = started + self.timeout;
        // Run as git runs it: in the repository, no quarantine (the objects are in place),
        // the push options on the pipe rather than in the environment.
        let invocation = Invocation {
            hook: PROC_RECEIVE,
            args: Vec::new(),
            stdin: None,
            quarantine: false,
            push_options: false,
            certificate: false,
            work_tree: None,
        };
        let start = |program: &Path, script_argument: Option<&Path>| -> io::Result<Child> {
            let mut command = self.command(ctx, program, script_argument, &invocation);
            command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            spawn(command)
        };
        let started_child = match start(&script, None) {
            Err(err) if is_not_executable_format(&err) => {
                start(Path::new("/bin/sh"), Some(&script))
            }
            result => result,
        };
        let mut child = match started_child {
            Ok(child) => child,
            Err(source) => {
                let err = RunError::Spawn {
                    hook: PROC_RECEIVE,
                    path: script,
                    source,
                };
                tracing::warn!(hook = PROC_RECEIVE, err = %ErrorChain(&err), "hook could not run");
                return ProcReceive::Failed;
            }
        };
        tracing::debug!(hook = PROC_RECEIVE, pid = child.id(), "hook started");
        let (Some(to_hook), Some(from_hook), Some(errors)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            kill(&mut child, PROC_RECEIVE);
            return ProcReceive::Failed;
        };

        enum Event {
            Output(Option<Vec<u8>>),
            Done(Conversation),
        }
        let (sender, receiver) = mpsc::sync_channel(CHANNEL_CHUNKS);
        forward_as(PROC_RECEIVE, errors, sender.clone(), Event::Output);
        let commands = request.commands.to_vec();
        let push_options: Option<Vec<BString>> = ctx.push_options.map(<[BString]>::to_vec);
        let atomic = request.atomic;
        spawn_thread(PROC_RECEIVE, "conversation", move || {
            let conversation = proc_receive::converse(
                to_hook,
                io::BufReader::new(from_hook),
                &commands,
                push_options.as_deref(),
                atomic,
            );
            // Both pipes are closed here, as git closes them once it has the report.
            let _ = sender.send(Event::Done(conversation));
        });

        let mut sink = Sink::new(output, PROC_RECEIVE);
        let mut conversation = None;
        let mut output_open = true;
        while output_open || conversation.is_none() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(remaining) {
                Ok(Event::Output(Some(chunk))) => sink.write(&chunk),
                Ok(Event::Output(None)) => output_open = false,
                Ok(Event::Done(done)) => conversation = Some(done),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    kill(&mut child, PROC_RECEIVE);
                    tracing::warn!(hook = PROC_RECEIVE, timeout = ?self.timeout, "hook timed out and was killed");
                    sink.write(
                        format!(
                            "error: proc-receive hook timed out after {:?}\n",
                            self.timeout
                        )
                        .as_bytes(),
                    );
                    return ProcReceive::Failed;
                }
            }
        }
        let exited_ok = match wait_until(&mut child, PROC_RECEIVE, deadline) {
            Ok(Outcome::Exited(status)) => {
                tracing::debug!(hook = PROC_RECEIVE, %status, elapsed = ?started.elapsed(), "hook finished");
                status.success()
            }
            Ok(_) => {
                tracing::warn!(hook = PROC_RECEIVE, timeout = ?self.timeout, "hook timed out and was killed");
                false
            }
            Err(err) => {
                tracing::warn!(hook = PROC_RECEIVE, err = %ErrorChain(&err), "hook could not be waited for");
                false
            }
        };
        let conversation = conversation.unwrap_or(Conversation::ExitedAbnormally);
        let (answer, errors) = match conversation {
            Conversation::Report(lines) => {
                let judged =
                    proc_receive::interpret_report(request.commands, request.other_refs, &lines);
                (
                    ProcReceive::Reported {
                        results: judged.results,
                        failed: judged.failed || !exited_ok,
                    },
                    judged.errors,
                )
            }
            failed => (ProcReceive::Failed, failed.error().into_iter().collect()),
        };
        if !errors.is_empty() {
            // One message, as git's: only its first line says `error: `.
            sink.write(format!("error: {}\n", errors.join("\n")).as_bytes());
        }
        if let ProcReceive::Reported { results, .. } = &answer {
            tracing::debug!(
                commands = results.len(),
                ok = results
                    .iter()
                    .filter(|result| matches!(result, CommandResult::Ok(_)))
                    .count(),
                "proc-receive hook reported"
            );
        }
        answer
    }

    fn report(&self, hook: &'static str, result: Result<Outcome, RunError>) {
        match result {
            Ok(Outcome::Skipped) => {}
            Ok(Outcome::Exited(status)) => {
                if !status.success() {
                    tracing::info!(hook, %status, "hook failed; ignored");
                }
            }
            Ok(Outcome::TimedOut) => {
                tracing::warn!(hook, timeout = ?self.timeout, "hook timed out and was killed");
            }
            Err(err) => tracing::warn!(hook, err = %ErrorChain(&err), "hook could not run"),
        }
    }
}

impl Hook for ScriptHooks {
    fn pre_receive(
        &self,
        ctx: &HookContext<'_>,
        updates: &[RefUpdate],
        output: &mut dyn Write,
    ) -> Verdict {
        // git does not run the receive hooks for an empty list of commands.
        if updates.is_empty() {
            return Verdict::Accept;
        }
        let result = self.run(ctx, Invocation::receive(PRE_RECEIVE, updates, true), output);
        self.verdict(PRE_RECEIVE, result, "pre-receive hook declined")
    }

    fn update(&self, ctx: &HookContext<'_>, update: &RefUpdate, output: &mut dyn Write) -> Verdict {
        let invocation = Invocation {
            hook: UPDATE,
            args: vec![
                os_string(&update.name),
                update.old.to_string().into(),
                update.new.to_string().into(),
            ],
            stdin: None,
            quarantine: true,
            push_options: false,
            certificate: false,
            work_tree: None,
        };
        let result = self.run(ctx, invocation, output);
        self.verdict(UPDATE, result, "hook declined")
    }

    fn proc_receive(
        &self,
        ctx: &HookContext<'_>,
        request: &ProcReceiveRequest<'_>,
        output: &mut dyn Write,
    ) -> ProcReceive {
        self.run_proc_receive(ctx, request, output)
    }

    fn push_to_checkout(
        &self,
        ctx: &HookContext<'_>,
        checkout: &Checkout<'_>,
        output: &mut dyn Write,
    ) -> Option<Verdict> {
        let invocation = Invocation {
            hook: PUSH_TO_CHECKOUT,
            args: vec![checkout.new.to_string().into()],
            stdin: None,
            quarantine: false,
            push_options: false,
            certificate: false,
            work_tree: Some((absolute(checkout.git_dir), absolute(checkout.work_tree))),
        };
        match self.run(ctx, invocation, output) {
            Ok(Outcome::Skipped) => None,
            result => {
                Some(self.verdict(PUSH_TO_CHECKOUT, result, "push-to-checkout hook declined"))
            }
        }
    }

    fn post_receive(&self, ctx: &HookContext<'_>, updates: &[RefUpdate], output: &mut dyn Write) {
        if updates.is_empty() {
            return;
        }
        let result = self.run(
            ctx,
            Invocation::receive(POST_RECEIVE, updates, false),
            output,
        );
        self.report(POST_RECEIVE, result);
    }

    fn post_update(&self, ctx: &HookContext<'_>, refnames: &[BString], output: &mut dyn Write) {
        // git runs post-update only when some ref was updated.
        if refnames.is_empty() {
            return;
        }
        let invocation = Invocation {
            hook: POST_UPDATE,
            args: refnames.iter().map(|name| os_string(name)).collect(),
            stdin: None,
            quarantine: false,
            push_options: false,
            certificate: false,
            work_tree: None,
        };
        let result = self.run(ctx, invocation, output);
        self.report(POST_UPDATE, result);
    }
}

const PRE_RECEIVE: &str = "pre-receive";
const PROC_RECEIVE: &str = "proc-receive";
const UPDATE: &str = "update";
const POST_RECEIVE: &str = "post-receive";
const POST_UPDATE: &str = "post-update";
const PUSH_TO_CHECKOUT: &str = "push-to-checkout";

/// How many chunks of output may wait between the reading threads and the caller.
const CHANNEL_CHUNKS: usize = 16;
/// The most output read in one go.
const CHUNK_SIZE: usize = 8192;

/// How to run one hook script.
struct Invocation {
    hook: &'static str,
    args: Vec<OsString>,
    /// `None`: stdin is `/dev/null`.
    stdin: Option<Vec<u8>>,
    /// Whether to point the script into the quarantine (when there is one).
    quarantine: bool,
    /// Whether to set (or remove) the push-option variables.
    push_options: bool,
    /// Whether to set the push certificate's variables (the receive hooks).
    certificate: bool,
    /// For `push-to-checkout`: the work tree's git directory and the work tree (absolute),
    /// the script's `GIT_DIR` and `GIT_WORK_TREE`.
    work_tree: Option<(PathBuf, PathBuf)>,
}

impl Invocation {
    /// `pre-receive` or `post-receive`: `<old> <new> <ref>` lines on stdin.
    fn receive(hook: &'static str, updates: &[RefUpdate], quarantine: bool) -> Self {
        let mut stdin = Vec::with_capacity(updates.len() * 100);
        for update in updates {
            // Writing into a Vec cannot fail.
            let _ = writeln!(stdin, "{} {} {}", update.old, update.new, update.name);
        }
        Invocation {
            hook,
            args: Vec::new(),
            stdin: Some(stdin),
            quarantine,
            push_options: true,
            certificate: true,
            work_tree: None,
        }
    }
}

/// How a script run ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// There is no (executable) script.
    Skipped,
    /// The script exited, and closed its output.
    Exited(ExitStatus),
    /// The script ran out of time and was killed.
    TimedOut,
}

/// The error of running a script: the operating system failed us.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    /// The script could not be started.
    #[error("could not start the {hook} hook {path}")]
    Spawn {
        hook: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Waiting for the script to exit failed.
    #[error("could not wait for the {hook} hook")]
    Wait {
        hook: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Displays an error with its sources, `: `-separated.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

/// Start `command`, retrying briefly while the script is busy being written (`ETXTBSY`).
fn spawn(mut command: Command) -> io::Result<Child> {
    let mut busy_retries = 0;
    loop {
        match command.spawn() {
            Err(err) if err.kind() == io::ErrorKind::ExecutableFileBusy && busy_retries < 10 => {
                busy_retries += 1;
                thread::sleep(Duration::from_millis(5 * busy_retries));
            }
            result => return result,
        }
    }
}

/// Whether the system could not execute a file (`ENOEXEC`: e.g. a script without a `#!`
/// line), which git then runs with `/bin/sh`.
fn is_not_executable_format(err: &io::Error) -> bool {
    cfg!(unix) && err.raw_os_error() == Some(ENOEXEC)
}

/// `ENOEXEC` on the unix systems we know of (Linux, the BSDs, macOS).
const ENOEXEC: i32 = 8;

/// Read `pipe` on a thread of its own, sending each chunk, then `None` at its end.
fn forward(hook: &'static str, pipe: io::PipeReader, sender: mpsc::SyncSender<Option<Vec<u8>>>) {
    forward_as(hook, pipe, sender, |chunk| chunk);
}

/// [`forward()`] for any readable pipe, each chunk (and the end, `None`) wrapped by `wrap`.
fn forward_as<P: Read + Send + 'static, T: Send + 'static>(
    hook: &'static str,
    mut pipe: P,
    sender: mpsc::SyncSender<T>,
    wrap: fn(Option<Vec<u8>>) -> T,
) {
    spawn_thread(hook, "output", move || {
        let mut buf = vec![0; CHUNK_SIZE];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if sender.send(wrap(Some(buf[..n].to_vec()))).is_err() {
                        // The caller gave up on the script (time limit).
                        return;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    tracing::debug!(hook, %err, "reading hook output failed");
                    break;
                }
            }
        }
        let _ = sender.send(wrap(None));
    });
}

/// Run `work` on a new thread, which nobody joins: it ends with the pipe it serves.
fn spawn_thread(hook: &'static str, role: &str, work: impl FnOnce() + Send + 'static) {
    let spawned = thread::Builder::new()
        .name(format!("hook {hook} {role}"))
        .spawn(work);
    if let Err(err) = spawned {
        // The work is lost; the pipe it served stays unserved, and the time limit ends the
        // script if it waits for it.
        tracing::warn!(hook, role, %err, "could not start a thread for a hook's pipe");
    }
}

/// Where a script's output goes: the caller's writer, until it fails.
struct Sink<'a> {
    output: &'a mut dyn Write,
    hook: &'static str,
    failed: bool,
}

impl<'a> Sink<'a> {
    fn new(output: &'a mut dyn Write, hook: &'static str) -> Self {
        Sink {
            output,
            hook,
            failed: false,
        }
    }

    /// Forward `chunk`. Once writing fails (the client went away) the rest is dropped, but
    /// the script runs on: its verdict still decides the push.
    fn write(&mut self, chunk: &[u8]) {
        if self.failed {
            return;
        }
        if let Err(err) = self
            .output
            .write_all(chunk)
            .and_then(|()| self.output.flush())
        {
            tracing::debug!(hook = self.hook, %err, "hook output could not be forwarded; dropping the rest");
            self.failed = true;
        }
    }
}

/// Wait for a script that closed its output to exit, until `deadline`; past it, kill it.
pub(crate) fn wait_until(
    child: &mut Child,
    hook: &'static str,
    deadline: Instant,
) -> Result<Outcome, RunError> {
    let mut poll = Duration::from_millis(1);
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|source| RunError::Wait { hook, source })?
        {
            return Ok(Outcome::Exited(status));
        }
        let now = Instant::now();
        if now >= deadline {
            kill(child, hook);
            return Ok(Outcome::TimedOut);
        }
        thread::sleep(poll.min(deadline - now));
        poll = (poll * 2).min(Duration::from_millis(50));
    }
}

/// Kill a script that ran out of time, with its process group, and reap it.
pub(crate) fn kill(child: &mut Child, hook: &'static str) {
    #[cfg(unix)]
    {
        // The child is not reaped yet, so its id still names its process group and nothing
        // else. `kill -- -<pgid>` signals the whole group.
        let group = Command::new("/bin/sh")
            .arg("-c")
            .arg("kill -s KILL -- \"-$1\" 2>/dev/null")
            .arg("sh")
            .arg(child.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(err) = group {
            tracing::debug!(hook, %err, "could not kill the hook's process group");
        }
    }
    if let Err(err) = child.kill() {
        tracing::debug!(hook, %err, "could not kill the hook");
    }
    if let Err(err) = child.wait() {
        tracing::debug!(hook, %err, "could not reap the hook");
    }
}

#[cfg(unix)]
fn is_executable(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_metadata: &std::fs::Metadata) -> bool {
    true
}

/// Bytes from the wire as an argument or environment value. Like git, which passes C
/// strings, the value ends at a NUL byte.
fn os_string(bytes: &[u8]) -> OsString {
    let bytes = bytes.split(|&byte| byte == 0).next().unwrap_or_default();
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(bytes).to_owned()
    }
    #[cfg(not(unix))]
    {
        use bstr::ByteSlice;
        bytes.to_str_lossy().into_owned().into()
    }
}

/// `path` made absolute against the current directory (scripts run elsewhere).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(unix)]
const PATH_SEPARATOR: u8 = b':';
#[cfg(not(unix))]
const PATH_SEPARATOR: u8 = b';';

/// git's `env_append()`: `objects_dir` after the inherited alternates, C-quoted if it holds
/// the separator or starts with a quote.
fn append_alternate(inherited: Option<OsString>, objects_dir: &Path) -> OsString {
    let dir = path_bytes(objects_dir);
    let mut value: Vec<u8> = Vec::new();
    if let Some(inherited) = inherited {
        value.extend_from_slice(&path_bytes(Path::new(&inherited)));
        value.push(PATH_SEPARATOR);
    }
    if dir.first() == Some(&b'"') || dir.contains(&PATH_SEPARATOR) {
        quote_c_style(&dir, &mut value);
    } else {
        value.extend_from_slice(&dir);
    }
    os_string_lossless(value)
}

/// git's `quote_c_style()` with the surrounding quotes.
fn quote_c_style(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &byte in bytes {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x07 => out.extend_from_slice(b"\\a"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x0b => out.extend_from_slice(b"\\v"),
            byte if byte < 0x20 || byte == 0x7f => {
                out.extend_from_slice(format!("\\{byte:03o}").as_bytes());
            }
            byte => out.push(byte),
        }
    }
    out.push(b'"');
}

fn path_bytes(path: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        path.to_string_lossy().into_owned().into_bytes()
    }
}

fn os_string_lossless(bytes: Vec<u8>) -> OsString {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        OsString::from_vec(bytes)
    }
    #[cfg(not(unix))]
    {
        String::from_utf8_lossy(&bytes).into_owned().into()
    }
}

#[cfg(test)]
mod tests;
