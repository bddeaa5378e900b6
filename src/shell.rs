//! `packgate shell`: a drop-in for `git-shell` as an OpenSSH forced command
//! (`command="packgate shell --user alice" ssh-ed25519 AAAA… alice` in `authorized_keys`).
//!
//! The command comes from `-c` (as sshd runs a login shell) or else from
//! `SSH_ORIGINAL_COMMAND` (as sshd runs a forced command). Only `git-upload-pack '<path>'`
//! and `git-receive-pack '<path>'` (or `git upload-pack …`) run, through the same code as
//! `packgate upload-pack` / `receive-pack`; the path is taken below `--root` (default: the
//! current directory, which sshd makes the user's home) with the rules of `packgate serve`'s
//! front-ends. Everything else is refused in git-shell's words with exit status 128.
//!
//! With `--config`, the `[[ssh.access]]` policy of `packgate serve`'s configuration applies
//! to `--user`, as over `serve --ssh`.
//!
//! Differences from git-shell: no interactive mode and no `git-shell-commands` directory;
//! `git-upload-archive` is refused (packgate does not implement it); paths may not leave
//! the root (git-shell lets the user reach whatever the account can read).

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Args;
use packgate::{
    protocol::registry::Registry,
    transport::ssh::{parse_exec_command, AccessPolicy},
    wire::service::Service,
};

/// git-shell's exit status for what it refuses (`die`).
const EXIT_REFUSED: u8 = 128;

#[derive(Args, Debug)]
pub(crate) struct ShellArgs {
    /// The user the key belongs to: given to hooks as REMOTE_USER.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// The directory of repositories [default: the current directory].
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// A `packgate serve` configuration file whose `[[ssh.access]]` policy applies (to
    /// --user; without --user, a policy refuses everything).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The command, as a login shell is given it (`sh -c`); without it,
    /// SSH_ORIGINAL_COMMAND.
    #[arg(short = 'c', value_name = "COMMAND")]
    command: Option<String>,
}

/// What `packgate shell` runs: the service and the repository's git directory.
pub(crate) struct Plan {
    pub(crate) service: Service,
    pub(crate) git_dir: PathBuf,
}

fn refuse(message: &str) -> Result<Plan, ExitCode> {
    eprintln!("fatal: {message}");
    Err(ExitCode::from(EXIT_REFUSED))
}

/// Decide what to run, or refuse (the message is printed, the exit code returned).
pub(crate) fn plan(args: &ShellArgs) -> anyhow::Result<Result<Plan, ExitCode>> {
    if let Some(user) = &args.user {
        // Before any thread is started: hooks inherit the environment.
        std::env::set_var("REMOTE_USER", user);
    }
    let command = match args.command.clone() {
        Some(command) => command,
        None => match std::env::var("SSH_ORIGINAL_COMMAND") {
            Ok(command) => command,
            Err(_) => {
                return Ok(refuse(
                    "Interactive git shell is not enabled.\n\
                     hint: packgate shell runs only git-upload-pack and git-receive-pack",
                ))
            }
        },
    };
    // GIT_PROTOCOL reaches the service through the environment (sshd's AcceptEnv).
    let head = match parse_exec_command(command.as_bytes(), None) {
        Ok(head) => head,
        Err(err) => return Ok(refuse(&err.to_string())),
    };
    if let Some(path) = &args.config {
        let policy = crate::config::ConfigFile::load(path)?.ssh.policy();
        let user = args.user.as_deref().unwrap_or("");
        let write = head.service == Service::ReceivePack;
        if (user.is_empty() && !policy.is_open()) || !policy.allows(user, &head.path, write) {
            return Ok(refuse(&AccessPolicy::refusal(user, &head.path, write)));
        }
    }
    let root = match &args.root {
        Some(root) => root.clone(),
        None => std::env::current_dir().context("no current directory")?,
    };
    let registry =
        Registry::new(&root).with_context(|| format!("could not open {}", root.display()))?;
    let repo = match registry.open(&head.path, None) {
        Ok(repo) => repo,
        Err(err) => {
            tracing::info!("{err}");
            return Ok(refuse(&format!(
                "'{}' does not appear to be a git repository",
                head.path
            )));
        }
    };
    Ok(Ok(Plan {
        service: head.service,
        git_dir: repo.git_dir().to_owned(),
    }))
}
