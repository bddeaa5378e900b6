//! Running git isolated from the user's and the system's configuration.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context as _};

pub(super) fn path_str(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// Runs git isolated from the user's and the system's configuration.
pub(super) struct Git<'a> {
    pub(super) program: &'a Path,
}

impl Git<'_> {
    pub(super) fn command(&self, git_dir: Option<&Path>) -> Command {
        let mut command = Command::new(self.program);
        isolate(&mut command);
        if let Some(git_dir) = git_dir {
            command.env("GIT_DIR", git_dir);
        }
        command.stdin(Stdio::null());
        command
    }

    pub(super) fn run(&self, git_dir: Option<&Path>, args: &[&str]) -> anyhow::Result<String> {
        self.finish(self.command(git_dir).args(args), args, None)
    }

    /// `git init` of a new repository at `path` (`bare` or with a work tree) whose first
    /// branch is `main`.
    pub(super) fn init(&self, path: &Path, bare: bool) -> anyhow::Result<()> {
        let path = path_str(path)?;
        let mut args = vec!["-c", "init.defaultBranch=main", "init", "--quiet"];
        if bare {
            args.push("--bare");
        }
        args.push(&path);
        self.run(None, &args).map(drop)
    }

    pub(super) fn run_with_input(
        &self,
        git_dir: Option<&Path>,
        args: &[&str],
        input: &[u8],
    ) -> anyhow::Result<String> {
        self.finish(self.command(git_dir).args(args), args, Some(input))
    }

    /// In a work tree, with the caller's configuration (for `git describe` of the source).
    pub(super) fn run_in(&self, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new(self.program);
        command.current_dir(dir).stdin(Stdio::null());
        self.finish(command.args(args), args, None)
    }

    pub(super) fn finish(
        &self,
        command: &mut Command,
        args: &[&str],
        input: Option<&[u8]>,
    ) -> anyhow::Result<String> {
        let description = format!("git {}", args.join(" "));
        let output = match input {
            None => command.output(),
            Some(input) => {
                // Through a file, so that a large input and output cannot deadlock.
                let path = input_file()?;
                fs::write(&path, input)?;
                let output = File::open(&path).and_then(|file| command.stdin(file).output());
                let _ = fs::remove_file(&path);
                output
            }
        }
        .with_context(|| format!("running `{description}`"))?;
        ensure!(
            output.status.success(),
            "`{description}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        String::from_utf8(output.stdout)
            .with_context(|| format!("`{description}` printed non-UTF-8"))
    }
}

/// A fresh path for a command's standard input.
pub(super) fn input_file() -> anyhow::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    Ok(std::env::temp_dir().join(format!(
        "packgate-bench-{}-{}.in",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )))
}

/// Removes our `GIT_*` variables and any system or global configuration, so that both
/// servers and every helper see only the repository's own configuration.
pub(super) fn isolate(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GIT_") {
            command.env_remove(&name);
        }
    }
    command
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LC_ALL", "C");
}
