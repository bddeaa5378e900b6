//! Verifying the signature of a push certificate the way git's receive-pack does: by running
//! the verification program git would run (`gpg.program`, `gpg.x509.program`,
//! `gpg.ssh.program`) and reading its verdict as git reads it, so that the hooks get git's
//! `GIT_PUSH_CERT_SIGNER`, `GIT_PUSH_CERT_KEY` and `GIT_PUSH_CERT_STATUS`.
//!
//! The kind of signature decides the program, as in git's `gpg-interface.c`:
//!
//! | signature starts with                                      | program (default) | run as |
//! |------------------------------------------------------------|-------------------|--------|
//! | `-----BEGIN PGP SIGNATURE-----`, `-----BEGIN PGP MESSAGE-----` | `gpg`         | `gpg --keyid-format=long --status-fd=1 --verify <sig> -` |
//! | `-----BEGIN SIGNED MESSAGE-----`                            | `gpgsm`          | `gpgsm --status-fd=1 --verify <sig> -` |
//! | `-----BEGIN SSH SIGNATURE-----`                             | `ssh-keygen`     | `-Y find-principals`, then `-Y verify` per principal (or `-Y check-novalidate`) with `gpg.ssh.allowedSignersFile` |
//!
//! The signed payload goes to the program's standard input, the signature into a temporary
//! file. gpg's `[GNUPG:]` status lines give the letter (`G` good, `B` bad, `E` cannot be
//! checked, `X` expired signature, `Y` expired key, `R` revoked key; a second exclusive status
//! or an unknown trust level makes it `E`), the key id and the signer; ssh-keygen's
//! `Good "git" signature for <principal> with <algorithm> key <fingerprint>` gives `G` with
//! the principal as signer and the fingerprint as key, `Good "git" signature with …` (a key
//! not in the allowed signers, found by `check-novalidate`) `G` without a signer, and
//! anything else `B`. A program that cannot be started leaves `N`, as in git; so does an SSH
//! signature without `gpg.ssh.allowedSignersFile`.
//!
//! Like a hook script, the program is the configuration's choice and runs under the same
//! rules: started directly (no shell; a bare name is looked up in `PATH`), in the git
//! directory, in a process group of its own, with a time limit after which the group is
//! killed (the verdict is then `N`), and killed as well if the caller goes away before it
//! ends (the guard that owns it is dropped). What it prints is read up to a bound.

use std::{
    ffi::OsString,
    io::{self, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use bstr::ByteSlice;

/// The most bytes kept of what a verification program prints on each of its outputs; the
/// rest is read and dropped.
const MAX_OUTPUT: usize = 1 << 20;

/// The kinds of signature git knows, each with the program that checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureFormat {
    /// OpenPGP, checked by `gpg`.
    OpenPgp,
    /// X.509 (CMS), checked by `gpgsm`.
    X509,
    /// SSH, checked by `ssh-keygen`.
    Ssh,
}

impl SignatureFormat {
    /// The format of a signature, from how it starts (git's `get_format_by_sig()`).
    pub fn of(signature: &[u8]) -> Option<Self> {
        [
            (
                &b"-----BEGIN PGP SIGNATURE-----"[..],
                SignatureFormat::OpenPgp,
            ),
            (b"-----BEGIN PGP MESSAGE-----", SignatureFormat::OpenPgp),
            (b"-----BEGIN SIGNED MESSAGE-----", SignatureFormat::X509),
            (b"-----BEGIN SSH SIGNATURE-----", SignatureFormat::Ssh),
        ]
        .into_iter()
        .find_map(|(start, format)| signature.starts_with(start).then_some(format))
    }
}

/// The programs and files of signature verification: git's `gpg.*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureVerifier {
    /// `gpg.program` or `gpg.openpgp.program` (the later one), `gpg` by default.
    pub openpgp_program: OsString,
    /// `gpg.x509.program`, `gpgsm` by default.
    pub x509_program: OsString,
    /// `gpg.ssh.program`, `ssh-keygen` by default.
    pub ssh_program: OsString,
    /// `gpg.ssh.allowedSignersFile`: without it SSH signatures are not checked.
    pub ssh_allowed_signers: Option<PathBuf>,
    /// `gpg.ssh.revocationFile`: passed to `ssh-keygen -Y verify -r` if it exists.
    pub ssh_revocation_file: Option<PathBuf>,
    /// How long one program may run before it is killed.
    pub timeout: Duration,
}

impl Default for SignatureVerifier {
    fn default() -> Self {
        SignatureVerifier {
            openpgp_program: "gpg".into(),
            x509_program: "gpgsm".into(),
            ssh_program: "ssh-keygen".into(),
            ssh_allowed_signers: None,
            ssh_revocation_file: None,
            timeout: crate::ScriptHooks::DEFAULT_TIMEOUT,
        }
    }
}

/// What the verification found: git's `struct signature_check`, as far as hooks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureCheck {
    /// git's letter: `G`, `B`, `U`, `X`, `Y`, `R`, `E`, or `N` (nothing verified).
    pub result: char,
    /// Who signed (`GIT_PUSH_CERT_SIGNER`), if the program said.
    pub signer: Option<String>,
    /// The key (`GIT_PUSH_CERT_KEY`): gpg's key id, or an SSH key's fingerprint.
    pub key: Option<String>,
    /// Why nothing could be verified, in git's words where git has them (git prints them as
    /// `error: …`), for the operator's log.
    pub error: Option<String>,
}

impl SignatureCheck {
    fn unverified(error: impl Into<String>) -> Self {
        SignatureCheck {
            result: 'N',
            signer: None,
            key: None,
            error: Some(error.into()),
        }
    }
}

/// A signature of no kind git knows (git's receive-pack dies with this message).
#[derive(Debug, thiserror::Error)]
#[error("bad/incompatible signature '{signature}'")]
pub struct IncompatibleSignature {
    /// The signature's text (lossily decoded, shortened).
    pub signature: String,
}

impl SignatureVerifier {
    /// Verify `signature` over `payload`, running the program for its format in `git_dir`.
    pub fn verify(
        &self,
        payload: &[u8],
        signature: &[u8],
        git_dir: &Path,
    ) -> Result<SignatureCheck, IncompatibleSignature> {
        let Some(format) = SignatureFormat::of(signature) else {
            let shown: String = signature.to_str_lossy().chars().take(100).collect();
            return Err(IncompatibleSignature { signature: shown });
        };
        let file = match signature_file(signature) {
            Ok(file) => file,
            Err(err) => {
                return Ok(SignatureCheck::unverified(format!(
                    "could not write the signature to a temporary file: {err}"
                )))
            }
        };
        Ok(match format {
            SignatureFormat::OpenPgp => {
                self.gpg(&self.openpgp_program, true, payload, file.path(), git_dir)
            }
            SignatureFormat::X509 => {
                self.gpg(&self.x509_program, false, payload, file.path(), git_dir)
            }
            SignatureFormat::Ssh => self.ssh(payload, file.path(), git_dir),
        })
    }

    /// gpg or gpgsm: `--status-fd=1 --verify <file> -`, the status lines on stdout.
    fn gpg(
        &self,
        program: &OsString,
        openpgp: bool,
        payload: &[u8],
        signature: &Path,
        git_dir: &Path,
    ) -> SignatureCheck {
        let mut command = Command::new(program);
        if openpgp {
            command.arg("--keyid-format=long");
        }
        command
            .arg("--status-fd=1")
            .arg("--verify")
            .arg(signature)
            .arg("-");
        match run(command, Some(payload), git_dir, self.timeout) {
            Ok(ran) => {
                let mut check = parse_gpg_status(&ran.stdout);
                if check.result == 'N' {
                    check.error = Some(ran.describe(program));
                }
                check
            }
            Err(err) => SignatureCheck::unverified(format!(
                "cannot run {}: {err}",
                program.to_string_lossy()
            )),
        }
    }

    /// ssh-keygen, as git's `verify_ssh_signed_buffer()`.
    fn ssh(&self, payload: &[u8], signature: &Path, git_dir: &Path) -> SignatureCheck {
        let Some(allowed) = &self.ssh_allowed_signers else {
            return SignatureCheck::unverified(
                "gpg.ssh.allowedSignersFile needs to be configured and exist for ssh signature verification",
            );
        };
        let allowed = git_dir.join(allowed);
        let program = &self.ssh_program;
        let command = |args: &[&std::ffi::OsStr]| {
            let mut command = Command::new(program);
            command.args(args);
            command
        };
        let cannot_run =
            |err: io::Error| format!("cannot run {}: {err}", program.to_string_lossy());
        let find = command(&[
            "-Y".as_ref(),
            "find-principals".as_ref(),
            "-f".as_ref(),
            allowed.as_os_str(),
            "-s".as_ref(),
            signature.as_os_str(),
        ]);
        let principals = match run(find, None, git_dir, self.timeout) {
            Ok(ran) => ran,
            Err(err) => return SignatureCheck::unverified(cannot_run(err)),
        };
        if !principals.success() && principals.stderr.contains_str("usage:") {
            return SignatureCheck::unverified(
                "ssh-keygen -Y find-principals/verify is needed for ssh signature verification (available in openssh version 8.2p1+)",
            );
        }
        let mut last: Option<Ran> = None;
        if !principals.success() || principals.stdout.is_empty() {
            // No principal allows this key: check without validation, which names the key.
            let check = command(&[
                "-Y".as_ref(),
                "check-novalidate".as_ref(),
                "-n".as_ref(),
                "git".as_ref(),
                "-s".as_ref(),
                signature.as_os_str(),
            ]);
            match run(check, Some(payload), git_dir, self.timeout) {
                Ok(ran) => last = Some(ran),
                Err(err) => return SignatureCheck::unverified(cannot_run(err)),
            }
        } else {
            for principal in principals.stdout.lines() {
                if principal.is_empty() {
                    continue;
                }
                let mut verify = command(&[
                    "-Y".as_ref(),
                    "verify".as_ref(),
                    "-n".as_ref(),
                    "git".as_ref(),
                    "-f".as_ref(),
                    allowed.as_os_str(),
                    "-I".as_ref(),
                    os_str(principal),
                    "-s".as_ref(),
                    signature.as_os_str(),
                ]);
                if let Some(revocations) = &self.ssh_revocation_file {
                    let revocations = git_dir.join(revocations);
                    if revocations.exists() {
                        verify.arg("-r").arg(revocations);
                    } else {
                        tracing::warn!(
                            path = %revocations.display(),
                            "ssh signing revocation file configured but not found"
                        );
                    }
                }
                let ran = match run(verify, Some(payload), git_dir, self.timeout) {
                    Ok(ran) => ran,
                    Err(err) => return SignatureCheck::unverified(cannot_run(err)),
                };
                let good = ran.success() && ran.stdout.starts_with(b"Good");
                last = Some(ran);
                if good {
                    break;
                }
            }
        }
        // git's message: the last run's output, then what find-principals said on stderr,
        // then the last run's stderr.
        let mut output = Vec::new();
        if let Some(ran) = &last {
            output.extend_from_slice(ran.stdout.trim());
            output.extend_from_slice(&principals.stderr);
            output.extend_from_slice(ran.stderr.trim());
        } else {
            output.extend_from_slice(&principals.stderr);
        }
        parse_ssh_output(&output)
    }
}

/// Write `signature` into a temporary file, as git's `.git_vtag_tmpXXXXXX`.
fn signature_file(signature: &[u8]) -> io::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new()
        .prefix(".git_vtag_tmp")
        .tempfile()?;
    file.write_all(signature)?;
    file.flush()?;
    Ok(file)
}

/// gpg's `[GNUPG:]` status lines read as git's `parse_gpg_output()`.
pub fn parse_gpg_status(status: &[u8]) -> SignatureCheck {
    /// The status keywords git reads: the letter they set, whether only one of them may
    /// appear, and whether a key id and a user id follow.
    const RESULTS: &[(&[u8], char, bool)] = &[
        (b"GOODSIG ", 'G', true),
        (b"BADSIG ", 'B', true),
        (b"ERRSIG ", 'E', false),
        (b"EXPSIG ", 'X', true),
        (b"EXPKEYSIG ", 'Y', true),
        (b"REVKEYSIG ", 'R', true),
    ];
    const TRUST_LEVELS: &[&[u8]] = &[b"UNDEFINED", b"NEVER", b"MARGINAL", b"FULLY", b"ULTIMATE"];
    let mut check = SignatureCheck {
        result: 'N',
        signer: None,
        key: None,
        error: None,
    };
    let error = SignatureCheck {
        result: 'E',
        signer: None,
        key: None,
        error: None,
    };
    let mut seen_exclusive = false;
    for line in status.lines() {
        let Some(line) = line.strip_prefix(b"[GNUPG:] ") else {
            continue;
        };
        if let Some((rest, result, with_uid)) = RESULTS
            .iter()
            .find_map(|(keyword, result, uid)| Some((line.strip_prefix(*keyword)?, *result, *uid)))
        {
            // Each of these appears once per signature: two mean several signatures, which
            // git does not accept.
            if seen_exclusive {
                return error;
            }
            seen_exclusive = true;
            check.result = result;
            let (key, uid) = match rest.find_byte(b' ') {
                Some(space) => (&rest[..space], Some(&rest[space + 1..])),
                None => (rest, None),
            };
            check.key = Some(key.to_str_lossy().into_owned());
            if let (true, Some(uid)) = (with_uid, uid) {
                check.signer = Some(uid.to_str_lossy().into_owned());
            }
        } else if let Some(rest) = line.strip_prefix(b"TRUST_") {
            let level = rest.split(|&b| b == b' ').next().unwrap_or_default();
            if !TRUST_LEVELS.contains(&level) {
                return error;
            }
        }
    }
    check
}

/// ssh-keygen's first line of output read as git's `parse_ssh_output()`.
pub fn parse_ssh_output(output: &[u8]) -> SignatureCheck {
    let line = output.lines().next().unwrap_or_default();
    let bad = SignatureCheck {
        result: 'B',
        signer: None,
        key: None,
        error: None,
    };
    let (signer, rest) = if let Some(rest) = line.strip_prefix(br#"Good "git" signature for "#) {
        // The principal may hold spaces, and " with " too: the last " with " ends it.
        match rest.rfind(b" with ") {
            Some(at) => (
                Some(rest[..at].to_str_lossy().into_owned()),
                &rest[at + 1..],
            ),
            None => return bad,
        }
    } else if let Some(rest) = line.strip_prefix(br#"Good "git" signature with "#) {
        (None, rest)
    } else {
        return bad;
    };
    match rest.find(b"key ") {
        Some(at) => SignatureCheck {
            result: 'G',
            signer,
            key: Some(rest[at + 4..].to_str_lossy().into_owned()),
            error: None,
        },
        None => bad,
    }
}

/// What a program printed, and how it ended (`None`: killed after its time ran out).
struct Ran {
    status: Option<ExitStatus>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Ran {
    fn success(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    fn describe(&self, program: &OsString) -> String {
        let program = program.to_string_lossy();
        match self.status {
            None => format!("{program} ran out of time and was killed"),
            Some(status) => format!(
                "{program} verified nothing ({status}): {}",
                self.stderr.trim().to_str_lossy()
            ),
        }
    }
}

/// A running program, killed with its process group if dropped before it was reaped.
struct Running {
    child: Option<Child>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::script::kill(&mut child, "signature verification");
        }
    }
}

/// Run `command` in `dir` with `stdin` (else `/dev/null`) for at most `timeout`; read both
/// outputs. `Err` only if it could not be started.
fn run(
    mut command: Command,
    stdin: Option<&[u8]>,
    dir: &Path,
    timeout: Duration,
) -> io::Result<Ran> {
    command
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Its own process group, so that the time limit can end whatever it started.
        command.process_group(0);
    }
    let deadline = Instant::now() + timeout;
    let mut running = Running {
        child: Some(command.spawn()?),
    };
    let Some(child) = running.child.as_mut() else {
        return Err(io::Error::other("no child"));
    };
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = input.to_vec();
        thread::Builder::new()
            .name("signature stdin".into())
            .spawn(move || {
                // The program may stop reading early (a bad signature); that is its answer.
                let _ = pipe.write_all(&input);
            })?;
    }
    let (sender, receiver) = mpsc::channel();
    for (index, pipe) in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .enumerate()
    {
        let Some(mut pipe) = pipe else { continue };
        let sender = sender.clone();
        thread::Builder::new()
            .name("signature output".into())
            .spawn(move || {
                let mut kept = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let room = MAX_OUTPUT.saturating_sub(kept.len());
                            kept.extend_from_slice(&buf[..n.min(room)]);
                        }
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = sender.send((index, kept));
            })?;
    }
    drop(sender);
    let mut outputs = [Vec::new(), Vec::new()];
    let timed_out = |running: Running| {
        drop(running);
        Ok(Ran {
            status: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
        })
    };
    loop {
        match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((index, kept)) => outputs[index] = kept,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => return timed_out(running),
        }
    }
    let [stdout, stderr] = outputs;
    let Some(mut child) = running.child.take() else {
        return Err(io::Error::other("no child"));
    };
    // Both outputs closed: wait for the exit as a hook script is waited for (killed with its
    // process group at the deadline).
    let status = match crate::script::wait_until(&mut child, "signature verification", deadline) {
        Ok(crate::script::Outcome::Exited(status)) => Some(status),
        Ok(_) => None,
        Err(err) => return Err(io::Error::other(err)),
    };
    Ok(match status {
        Some(status) => Ran {
            status: Some(status),
            stdout,
            stderr,
        },
        None => Ran {
            status: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
        },
    })
}

fn os_str(bytes: &[u8]) -> &std::ffi::OsStr {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(bytes)
    }
    #[cfg(not(unix))]
    {
        std::ffi::OsStr::new(bytes.to_str().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests;
