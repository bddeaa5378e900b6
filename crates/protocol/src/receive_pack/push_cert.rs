//! Signed pushes: the `push-cert=<nonce>` capability, the certificate a client sends instead
//! of plain commands (`git push --signed`), and what the hooks learn of it.
//!
//! As in git's receive-pack, with `receive.certNonceSeed` set the advertisement carries a
//! nonce, `<seconds>-<HMAC-SHA1 of "<path>:<seconds>" keyed with the seed>`, which the client
//! signs into its certificate. The certificate is stored as a blob (`GIT_PUSH_CERT`), and the
//! hooks get the nonce's verdict: `OK`, `SLOP` (an older nonce of ours, from another request
//! of a stateless session, more than `receive.certNonceSlop` seconds off), `BAD`, `MISSING` or
//! `UNSOLICITED`.
//!
//! The signature is verified as git verifies it, when a hook will hear of it: by the program
//! git's `gpg.*` settings name (gpg, gpgsm or ssh-keygen), run like a hook
//! ([`packgate_hooks::signature`]), whose verdict becomes `GIT_PUSH_CERT_STATUS`,
//! `GIT_PUSH_CERT_SIGNER` and `GIT_PUSH_CERT_KEY`. [`signature_verifier()`] reads those
//! settings.

use std::path::PathBuf;

use bstr::{BString, ByteSlice};
use hmac::{Hmac, Mac};
use packgate_hooks::signature::SignatureVerifier;
use sha1::Sha1;

/// The signature verification git's configuration asks for: `gpg.program` or
/// `gpg.openpgp.program` (whichever comes later), `gpg.x509.program`, `gpg.ssh.program`,
/// `gpg.ssh.allowedSignersFile` and `gpg.ssh.revocationFile` (paths, `~` expanded; relative
/// ones are taken in the git directory, where the programs run); each program may run for
/// `timeout`.
pub fn signature_verifier(
    config: &gix_config::File,
    timeout: std::time::Duration,
) -> Result<SignatureVerifier, crate::config::ConfigError> {
    let mut verifier = SignatureVerifier {
        timeout,
        ..SignatureVerifier::default()
    };
    for section in config.sections() {
        let header = section.header();
        if !header.name().eq_ignore_ascii_case(b"gpg") {
            continue;
        }
        // Subsection names are case-sensitive, as in git.
        let subsection = header.subsection_name().map(|name| name.to_vec());
        let program = match subsection.as_deref() {
            None | Some(b"openpgp") => &mut verifier.openpgp_program,
            Some(b"x509") => &mut verifier.x509_program,
            Some(b"ssh") => &mut verifier.ssh_program,
            Some(_) => continue,
        };
        if let Some(value) = section.values("program").into_iter().last() {
            *program = os_string(&value);
        }
        if subsection.as_deref() == Some(b"ssh") {
            for (key, slot) in [
                ("allowedSignersFile", &mut verifier.ssh_allowed_signers),
                ("revocationFile", &mut verifier.ssh_revocation_file),
            ] {
                if let Some(value) = section.values(key).into_iter().last() {
                    *slot = Some(interpolate(&format!("gpg.ssh.{key}"), &value)?);
                }
            }
        }
    }
    Ok(verifier)
}

/// A configured program name as the operating system takes it.
fn os_string(bytes: &[u8]) -> std::ffi::OsString {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(bytes).to_owned()
    }
    #[cfg(not(unix))]
    {
        bytes.to_str_lossy().into_owned().into()
    }
}

/// A pathname setting with git's `~` expansion.
fn interpolate(key: &str, value: &[u8]) -> Result<PathBuf, crate::config::ConfigError> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    gix_config::Path::from(std::borrow::Cow::Borrowed(value.as_bstr()))
        .interpolate(gix_config::path::interpolate::Context {
            home_dir: home.as_deref(),
            ..Default::default()
        })
        .map_err(|source| crate::config::ConfigError::Value {
            key: key.to_owned(),
            source,
        })
}

/// What the nonce in a certificate says about it (`GIT_PUSH_CERT_NONCE_STATUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceStatus {
    /// The certificate has a nonce but none was asked for.
    Unsolicited,
    /// The certificate has no nonce though one was asked for.
    Missing,
    /// The nonce is not one this server could have issued.
    Bad,
    /// The nonce is the one issued (or one of ours within `receive.certNonceSlop`).
    Ok,
    /// One of our nonces, issued this many seconds away from now (stateless sessions).
    Slop,
}

impl NonceStatus {
    /// The value git gives the hooks.
    pub fn as_str(self) -> &'static str {
        match self {
            NonceStatus::Unsolicited => "UNSOLICITED",
            NonceStatus::Missing => "MISSING",
            NonceStatus::Bad => "BAD",
            NonceStatus::Ok => "OK",
            NonceStatus::Slop => "SLOP",
        }
    }
}

/// The nonce for the repository at `path` issued at `stamp` (seconds since the epoch).
pub fn nonce(seed: &[u8], path: &str, stamp: u64) -> String {
    let hex = match Hmac::<Sha1>::new_from_slice(seed) {
        Ok(mut mac) => {
            mac.update(format!("{path}:{stamp}").as_bytes());
            to_hex(&mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => String::new(),
    };
    format!("{stamp}-{hex}")
}

/// A received push certificate: its text, where its signature starts, and its commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushCertificate {
    /// Everything between `push-cert` and `push-cert-end`, as sent.
    pub text: BString,
    /// The length of the signed part: where the last signature block starts.
    pub payload_len: usize,
}

/// The lines that begin a signature, as git knows them (OpenPGP, X.509, SSH).
const SIGNATURE_STARTS: &[&[u8]] = &[
    b"-----BEGIN PGP SIGNATURE-----",
    b"-----BEGIN PGP MESSAGE-----",
    b"-----BEGIN SIGNED MESSAGE-----",
    b"-----BEGIN SSH SIGNATURE-----",
];

impl PushCertificate {
    /// Wrap a certificate's text.
    pub fn new(text: BString) -> Self {
        let mut payload_len = text.len();
        let mut offset = 0;
        for line in text.lines_with_terminator() {
            if SIGNATURE_STARTS.iter().any(|start| line.starts_with(start)) {
                payload_len = offset;
            }
            offset += line.len();
        }
        PushCertificate { text, payload_len }
    }

    /// The signed part.
    pub fn payload(&self) -> &[u8] {
        &self.text[..self.payload_len]
    }

    /// The signature: everything after the payload (empty if there is none).
    pub fn signature(&self) -> &[u8] {
        &self.text[self.payload_len..]
    }

    /// The value of the first header `name` of the payload (the part before the first empty
    /// line), as git's `find_commit_header()`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().find_map(|line| header_value(line, name))
    }

    /// Every value of header `name`, in order (`push-option` may repeat).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers()
            .filter_map(move |line| header_value(line, name))
    }

    fn headers(&self) -> impl Iterator<Item = &[u8]> {
        self.payload().lines().take_while(|line| !line.is_empty())
    }

    /// The command lines: after the first empty line, up to the signature. `None` if the
    /// certificate has no empty line (git's "malformed push certificate").
    pub fn command_lines(&self) -> Option<impl Iterator<Item = &[u8]>> {
        let payload = self.payload();
        let start = payload.find(b"\n\n")? + 2;
        Some(payload[start..].lines())
    }
}

fn header_value<'a>(line: &'a [u8], name: &str) -> Option<&'a [u8]> {
    line.strip_prefix(name.as_bytes())?.strip_prefix(b" ")
}

/// What the hooks learn of a nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceVerdict {
    /// `GIT_PUSH_CERT_NONCE_STATUS`.
    pub status: NonceStatus,
    /// `GIT_PUSH_CERT_NONCE`: what was issued — or, when an older nonce of ours passed within
    /// the slop limit, that one, as git pretends it issued it.
    pub nonce: Option<String>,
    /// `GIT_PUSH_CERT_NONCE_SLOP`, with [`NonceStatus::Slop`]: how many seconds older the
    /// certificate's nonce is than ours (negative: from a clock ahead).
    pub slop: Option<i64>,
}

/// The inputs of a nonce check: what this session issued, and how to recognise our others.
#[derive(Debug, Clone)]
pub struct NonceCheck<'a> {
    /// The nonce advertised to this client (this process's, in a stateless session).
    pub issued: Option<&'a str>,
    /// `receive.certNonceSeed`.
    pub seed: &'a [u8],
    /// The repository path the nonces are made for.
    pub path: &'a str,
    /// Whether the session is stateless (HTTP): the certificate may carry the nonce of the
    /// advertisement, made by another process.
    pub stateless: bool,
    /// `receive.certNonceSlop`: seconds within which an older nonce of ours counts as `OK`.
    pub slop_limit: u64,
}

impl NonceCheck<'_> {
    /// Judge the nonce of `certificate`, as git's `check_nonce()`.
    pub fn judge(&self, certificate: &PushCertificate) -> NonceVerdict {
        let verdict = |status, nonce: Option<&str>, slop| NonceVerdict {
            status,
            nonce: nonce.map(str::to_owned),
            slop,
        };
        let Some(received) = certificate.header("nonce") else {
            return verdict(NonceStatus::Missing, self.issued, None);
        };
        let Some(issued) = self.issued else {
            return verdict(NonceStatus::Unsolicited, None, None);
        };
        if received == issued.as_bytes() {
            return verdict(NonceStatus::Ok, Some(issued), None);
        }
        if !self.stateless {
            return verdict(NonceStatus::Bad, Some(issued), None);
        }
        // One of ours from another process: the same seed and path make the same HMAC.
        let Some(stamp) = received
            .split_str("-")
            .next()
            .and_then(|digits| digits.to_str().ok())
            .filter(|digits| {
                digits
                    .bytes()
                    .next()
                    .is_some_and(|b| (b'1'..=b'9').contains(&b))
            })
            .and_then(|digits| digits.parse::<u64>().ok())
        else {
            return verdict(NonceStatus::Bad, Some(issued), None);
        };
        let expected = nonce(self.seed, self.path, stamp);
        if !constant_time_equal(expected.as_bytes(), received) {
            return verdict(NonceStatus::Bad, Some(issued), None);
        }
        let ours: i64 = issued
            .split('-')
            .next()
            .and_then(|digits| digits.parse().ok())
            .unwrap_or(0);
        let slop = ours - i64::try_from(stamp).unwrap_or(i64::MAX);
        if self.slop_limit > 0 && slop.unsigned_abs() <= self.slop_limit {
            let received = received.to_str_lossy();
            return verdict(NonceStatus::Ok, Some(&received), None);
        }
        verdict(NonceStatus::Slop, Some(issued), Some(slop))
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Compare without returning early, so the time taken says nothing about the HMAC.
fn constant_time_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &[u8] = b"sekrit";

    fn certificate(nonce: Option<&str>) -> PushCertificate {
        let mut text =
            String::from("certificate version 0.1\npusher A U Thor <a@example.com> 1 +0000\n");
        if let Some(nonce) = nonce {
            text.push_str(&format!("nonce {nonce}\n"));
        }
        text.push_str("push-option a\npush-option b\n\n");
        text.push_str(&format!(
            "{} {} refs/heads/main\n",
            "0".repeat(40),
            "1".repeat(40)
        ));
        text.push_str("-----BEGIN SSH SIGNATURE-----\nabc\n-----END SSH SIGNATURE-----\n");
        PushCertificate::new(text.into())
    }

    #[test]
    fn nonce_is_stamp_and_hmac() {
        let made = nonce(SEED, "/srv/r.git", 1_700_000_000);
        let (stamp, hmac) = made.split_once('-').unwrap();
        assert_eq!(stamp, "1700000000");
        assert_eq!(hmac.len(), 40);
        assert_eq!(made, nonce(SEED, "/srv/r.git", 1_700_000_000));
        assert_ne!(made, nonce(SEED, "/srv/other.git", 1_700_000_000));
        assert_ne!(made, nonce(b"other", "/srv/r.git", 1_700_000_000));
    }

    /// RFC 2202's first HMAC-SHA1 test case, through the same code path.
    #[test]
    fn hmac_is_rfc_2202() {
        let mut mac = Hmac::<Sha1>::new_from_slice(&[0x0b; 20]).unwrap();
        mac.update(b"Hi There");
        assert_eq!(
            to_hex(&mac.finalize().into_bytes()),
            "b617318655057264e28bc0b6fb378c8ef146be00"
        );
    }

    #[test]
    fn certificate_parts() {
        let cert = certificate(Some("123-abc"));
        assert_eq!(cert.header("nonce"), Some(&b"123-abc"[..]));
        assert_eq!(
            cert.header_values("push-option").collect::<Vec<_>>(),
            [&b"a"[..], b"b"]
        );
        let commands: Vec<&[u8]> = cert.command_lines().unwrap().collect();
        assert_eq!(commands.len(), 1);
        assert!(commands[0].ends_with(b" refs/heads/main"));
        assert!(cert.payload().ends_with(b"refs/heads/main\n"));
        assert_eq!(
            PushCertificate::new("no empty line\n".into())
                .command_lines()
                .map(|_| ()),
            None
        );
    }

    #[test]
    fn nonce_verdicts_as_git() {
        let path = "/srv/r.git";
        let issued = nonce(SEED, path, 2000);
        let older = nonce(SEED, path, 1990);
        let check = |issued: Option<&str>, stateless, slop_limit, cert: &PushCertificate| {
            NonceCheck {
                issued,
                seed: SEED,
                path,
                stateless,
                slop_limit,
            }
            .judge(cert)
        };
        let status = |verdict: NonceVerdict| verdict.status;
        assert_eq!(
            status(check(Some(&issued), false, 0, &certificate(None))),
            NonceStatus::Missing
        );
        assert_eq!(
            status(check(None, false, 0, &certificate(Some(&issued)))),
            NonceStatus::Unsolicited
        );
        assert_eq!(
            status(check(Some(&issued), false, 0, &certificate(Some(&issued)))),
            NonceStatus::Ok
        );
        assert_eq!(
            status(check(Some(&issued), false, 0, &certificate(Some(&older)))),
            NonceStatus::Bad
        );
        let slop = check(Some(&issued), true, 0, &certificate(Some(&older)));
        assert_eq!((slop.status, slop.slop), (NonceStatus::Slop, Some(10)));
        let within = check(Some(&issued), true, 30, &certificate(Some(&older)));
        assert_eq!(
            (within.status, within.nonce),
            (NonceStatus::Ok, Some(older.clone()))
        );
        let forged = format!("1990-{}", "0".repeat(40));
        assert_eq!(
            status(check(Some(&issued), true, 30, &certificate(Some(&forged)))),
            NonceStatus::Bad
        );
        assert_eq!(
            status(check(Some(&issued), true, 30, &certificate(Some("junk")))),
            NonceStatus::Bad
        );
    }
}
