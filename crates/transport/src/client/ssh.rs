//! ssh: the system's ssh program runs the service on the remote host, as git does
//! (connect.c's `fill_ssh_args()`); never an ssh library, never git.
//!
//! Which program: `GIT_SSH_COMMAND` (a shell command line), then `core.sshCommand`
//! ([`Client::ssh_command`](super::Client::ssh_command), which the caller reads from its
//! configuration), then `GIT_SSH` (a program, run without a shell), then `ssh`. Its
//! arguments follow the ssh variant (`GIT_SSH_VARIANT`, else the program's name; an unknown
//! program is asked `-G` as git does): OpenSSH gets `-o SendEnv=GIT_PROTOCOL` when a
//! protocol version is asked for and `-p <port>`; plink and putty get `-P <port>`,
//! tortoiseplink `-batch` too; a "simple" ssh gets neither and cannot take a port. The
//! remote command is `git-upload-pack '<path>'` (or [`ConnectOptions::program`]) in git's
//! shell quoting.

use std::path::Path;
use std::process::{Command, Stdio};

use packgate_wire::client::{ConnectError, ConnectOptions};
use packgate_wire::service::Service;

use super::process::shell_quote;

/// How the ssh program takes its options (git's `ssh.variant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshVariant {
    /// Only `host command`: no port, no `SendEnv`.
    Simple,
    /// OpenSSH.
    Ssh,
    /// PuTTY's plink.
    Plink,
    /// PuTTY.
    Putty,
    /// TortoisePlink.
    TortoisePlink,
}

impl SshVariant {
    /// git's `ssh.variant` values (`auto` is `None`: decide from the program).
    pub fn from_config(value: &str) -> Option<SshVariant> {
        match value {
            "auto" => None,
            "plink" => Some(SshVariant::Plink),
            "putty" => Some(SshVariant::Putty),
            "tortoiseplink" => Some(SshVariant::TortoisePlink),
            "simple" => Some(SshVariant::Simple),
            _ => Some(SshVariant::Ssh),
        }
    }

    /// The variant a program's file name implies, if any.
    pub fn from_program(program: &str) -> Option<SshVariant> {
        let name = Path::new(program)
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or(program)
            .to_ascii_lowercase();
        match name.as_str() {
            "ssh" | "ssh.exe" => Some(SshVariant::Ssh),
            "plink" | "plink.exe" => Some(SshVariant::Plink),
            "tortoiseplink" | "tortoiseplink.exe" => Some(SshVariant::TortoisePlink),
            _ => None,
        }
    }
}

/// The ssh program to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshProgram {
    /// The program, or a shell command line.
    pub command: String,
    /// Run by the shell (`GIT_SSH_COMMAND`, `core.sshCommand`) with the arguments after it.
    pub shell: bool,
}

impl SshProgram {
    /// git's choice: `GIT_SSH_COMMAND`, `core_ssh_command`, `GIT_SSH`, `ssh`; `env` looks
    /// up an environment variable.
    pub fn choose(
        env: &dyn Fn(&str) -> Option<String>,
        core_ssh_command: Option<&str>,
    ) -> SshProgram {
        if let Some(command) = env("GIT_SSH_COMMAND") {
            return SshProgram {
                command,
                shell: true,
            };
        }
        if let Some(command) = core_ssh_command {
            return SshProgram {
                command: command.to_owned(),
                shell: true,
            };
        }
        SshProgram {
            command: env("GIT_SSH").unwrap_or_else(|| "ssh".to_owned()),
            shell: false,
        }
    }

    /// The program's name as git judges the variant by it (a command line's first word).
    fn name(&self) -> String {
        if !self.shell {
            return self.command.clone();
        }
        let first = self.command.split_whitespace().next().unwrap_or("");
        first.trim_matches(|c| c == '\'' || c == '"').to_owned()
    }

    /// A command that runs the program with `args`.
    pub fn command(&self, args: &[String]) -> Command {
        if self.shell {
            let mut command = Command::new("sh");
            command
                .arg("-c")
                .arg(format!("{} \"$@\"", self.command))
                .arg(&self.command)
                .args(args);
            command
        } else {
            let mut command = Command::new(&self.command);
            command.args(args);
            command
        }
    }

    /// The variant: `variant_override` (`GIT_SSH_VARIANT`), the program's name, or — as
    /// git — whether `<program> -G <options> <host>` succeeds (OpenSSH) or not (simple).
    pub fn variant(
        &self,
        variant_override: Option<&str>,
        user_host: &str,
        port: Option<u16>,
        options: &ConnectOptions,
    ) -> SshVariant {
        if let Some(variant) = variant_override.and_then(SshVariant::from_config) {
            return variant;
        }
        if let Some(variant) = SshVariant::from_program(&self.name()) {
            return variant;
        }
        let mut args = vec!["-G".to_owned()];
        args.extend(ssh_options(SshVariant::Ssh, port, options));
        args.push(user_host.to_owned());
        // Bounded by the connection's timeout: a program that never answers is no OpenSSH.
        let probe = self
            .command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut child| super::process::wait_bounded(&mut child, options.timeout));
        match probe {
            Ok(Some(status)) if status.success() => SshVariant::Ssh,
            _ => SshVariant::Simple,
        }
    }
}

/// The options before the host (git's `push_ssh_options()`).
pub fn ssh_options(
    variant: SshVariant,
    port: Option<u16>,
    options: &ConnectOptions,
) -> Vec<String> {
    let mut args = Vec::new();
    if variant == SshVariant::Ssh && options.version.parameter().is_some() {
        args.push("-o".to_owned());
        args.push("SendEnv=GIT_PROTOCOL".to_owned());
    }
    if variant == SshVariant::TortoisePlink {
        args.push("-batch".to_owned());
    }
    if let Some(port) = port {
        match variant {
            SshVariant::Simple => {}
            SshVariant::Ssh => args.push("-p".to_owned()),
            SshVariant::Plink | SshVariant::Putty | SshVariant::TortoisePlink => {
                args.push("-P".to_owned())
            }
        }
        if variant != SshVariant::Simple {
            args.push(port.to_string());
        }
    }
    args
}

/// The remote command: `<program> '<path>'`.
pub fn remote_command(service: Service, path: &str, options: &ConnectOptions) -> String {
    let program = options.program.as_deref().unwrap_or(service.as_str());
    format!("{program} {}", shell_quote(path))
}

/// Everything after the program: options, `[user@]host`, the remote command.
pub fn ssh_args(
    variant: SshVariant,
    user: Option<&str>,
    host: &str,
    port: Option<u16>,
    remote: String,
    options: &ConnectOptions,
) -> Result<Vec<String>, ConnectError> {
    if variant == SshVariant::Simple && port.is_some() {
        return Err(ConnectError::Unsupported(
            "ssh variant 'simple' does not support setting port".to_owned(),
        ));
    }
    let mut args = ssh_options(variant, port, options);
    args.push(user_host(user, host));
    args.push(remote);
    Ok(args)
}

/// `user@host` or `host`.
pub fn user_host(user: Option<&str>, host: &str) -> String {
    match user {
        Some(user) => format!("{user}@{host}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use packgate_wire::client::WireVersion;

    #[test]
    fn openssh_arguments() {
        let options = ConnectOptions::default();
        let remote = remote_command(Service::UploadPack, "/srv/a b.git", &options);
        assert_eq!(remote, "git-upload-pack '/srv/a b.git'");
        assert_eq!(
            ssh_args(
                SshVariant::Ssh,
                Some("git"),
                "h",
                Some(2222),
                remote,
                &options
            )
            .unwrap(),
            [
                "-o",
                "SendEnv=GIT_PROTOCOL",
                "-p",
                "2222",
                "git@h",
                "git-upload-pack '/srv/a b.git'"
            ]
        );
        let v0 = ConnectOptions {
            version: WireVersion::V0,
            program: Some("packgate receive-pack".to_owned()),
            ..ConnectOptions::default()
        };
        let remote = remote_command(Service::ReceivePack, "it's", &v0);
        assert_eq!(remote, "packgate receive-pack 'it'\\''s'");
        assert_eq!(
            ssh_args(SshVariant::Ssh, None, "h", None, remote, &v0).unwrap(),
            ["h", "packgate receive-pack 'it'\\''s'"]
        );
    }

    #[test]
    fn other_variants() {
        let options = ConnectOptions::default();
        let args = |variant| ssh_args(variant, None, "h", Some(22), "c".to_owned(), &options);
        assert_eq!(args(SshVariant::Plink).unwrap(), ["-P", "22", "h", "c"]);
        assert_eq!(args(SshVariant::Putty).unwrap(), ["-P", "22", "h", "c"]);
        assert_eq!(
            args(SshVariant::TortoisePlink).unwrap(),
            ["-batch", "-P", "22", "h", "c"]
        );
        assert!(matches!(
            args(SshVariant::Simple),
            Err(ConnectError::Unsupported(_))
        ));
        assert_eq!(
            ssh_args(SshVariant::Simple, None, "h", None, "c".into(), &options).unwrap(),
            ["h", "c"]
        );
    }

    #[test]
    fn program_choice_follows_git() {
        let env = |set: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                set.iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        let chosen = SshProgram::choose(
            &env(&[("GIT_SSH_COMMAND", "a -v"), ("GIT_SSH", "b")]),
            Some("c"),
        );
        assert_eq!(
            chosen,
            SshProgram {
                command: "a -v".into(),
                shell: true
            }
        );
        let chosen = SshProgram::choose(&env(&[("GIT_SSH", "b")]), Some("c"));
        assert_eq!(
            chosen,
            SshProgram {
                command: "c".into(),
                shell: true
            }
        );
        let chosen = SshProgram::choose(&env(&[("GIT_SSH", "b")]), None);
        assert_eq!(
            chosen,
            SshProgram {
                command: "b".into(),
                shell: false
            }
        );
        let chosen = SshProgram::choose(&env(&[]), None);
        assert_eq!(
            chosen,
            SshProgram {
                command: "ssh".into(),
                shell: false
            }
        );
    }

    #[test]
    fn variants_from_names() {
        assert_eq!(
            SshVariant::from_program("/usr/bin/ssh"),
            Some(SshVariant::Ssh)
        );
        assert_eq!(
            SshVariant::from_program("PLINK.EXE"),
            Some(SshVariant::Plink)
        );
        assert_eq!(SshVariant::from_program("putty"), None);
        assert_eq!(SshVariant::from_config("putty"), Some(SshVariant::Putty));
        assert_eq!(SshVariant::from_config("auto"), None);
        let program = SshProgram {
            command: "'/opt/ssh' -v".to_owned(),
            shell: true,
        };
        assert_eq!(program.name(), "/opt/ssh");
    }
}
