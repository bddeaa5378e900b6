//! Signed pushes whose signature packgate verifies as git's receive-pack does: `git push
//! --signed` with an OpenPGP key made for the test (a throwaway `GNUPGHOME`), the server's
//! `gpg.program` a wrapper that records its runs, and a `pre-receive` hook that writes down
//! what it learns (`GIT_PUSH_CERT_STATUS`, `_SIGNER`, `_KEY`, the nonce's status). Every
//! server is run twice, as packgate and as git's receive-pack, and the two must agree.

use std::path::{Path, PathBuf};

use crate::receive_pack::{install_hook, receive_pack_option};
use crate::util::{file_url, write_file, Cmd, Dir, Git};

/// The identity of the test's signing key.
const SIGNER: &str = "Push Signer <signer@example.com>";

/// A `GNUPGHOME` with one signing key (no passphrase); its agent is stopped on drop.
struct Keyring {
    home: PathBuf,
    /// The key's long id, as gpg's status lines (and so `GIT_PUSH_CERT_KEY`) give it.
    key_id: String,
}

impl Keyring {
    fn new(dir: &Dir) -> Keyring {
        use std::os::unix::fs::PermissionsExt;
        let home = dir.join("gnupg");
        std::fs::create_dir(&home).unwrap_or_else(|err| panic!("{}: {err}", home.display()));
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|err| panic!("{}: {err}", home.display()));
        let mut keyring = Keyring {
            home,
            key_id: String::new(),
        };
        keyring
            .gpg()
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(["--quick-generate-key", SIGNER, "ed25519", "sign", "never"])
            .run();
        let listing = keyring
            .gpg()
            .args([
                "--batch",
                "--with-colons",
                "--list-keys",
                "signer@example.com",
            ])
            .run()
            .stdout_text();
        keyring.key_id = listing
            .lines()
            .find_map(|line| line.strip_prefix("pub:"))
            .and_then(|fields| fields.split(':').nth(3))
            .unwrap_or_else(|| panic!("no key in {listing}"))
            .to_owned();
        keyring
    }

    fn gpg(&self) -> Cmd {
        Cmd::new(Path::new("gpg")).env("GNUPGHOME", &self.home)
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        let _ = std::process::Command::new("gpgconf")
            .args(["--kill", "all"])
            .env("GNUPGHOME", &self.home)
            .status();
    }
}

/// The hook: the `GIT_PUSH_CERT*` variables, sorted, with the ids that differ per server
/// replaced, into `push-cert-status` in the git directory.
const STATUS_HOOK: &str = "env | grep '^GIT_PUSH_CERT' | sort | \
    sed -e 's/^GIT_PUSH_CERT=.*/GIT_PUSH_CERT=<blob>/' \
        -e 's/^GIT_PUSH_CERT_NONCE=.*/GIT_PUSH_CERT_NONCE=<nonce>/' >push-cert-status\n\
    cat >/dev/null";

/// A bare repository that asks for signed pushes, with [`STATUS_HOOK`] and a `gpg.program`
/// that records where and how it ran in `gpg-runs`, then runs gpg.
fn server(dir: &Dir, git: &Git, name: &str) -> PathBuf {
    let wrapper = dir.join("recording-gpg");
    write_file(
        &wrapper,
        b"#!/bin/sh\necho \"$PWD $*\" >>gpg-runs\nexec gpg \"$@\"\n",
    );
    Cmd::new(Path::new("chmod")).arg("+x").arg(&wrapper).run();
    let server = dir.join(name);
    dir.git(git)
        .args(["init", "--quiet", "--bare"])
        .arg(&server)
        .run();
    for (key, value) in [
        ("receive.certNonceSeed", "sekrit"),
        ("gpg.program", &wrapper.to_string_lossy()),
    ] {
        dir.git_in(git, &server).args(["config", key, value]).run();
    }
    server
}

fn status(server: &Path) -> String {
    std::fs::read_to_string(server.join("push-cert-status"))
        .unwrap_or_else(|err| panic!("no status from the hook of {}: {err}", server.display()))
}

/// A good signature: `G`, the signer and the key as gpg names them, the nonce `OK` — what git's
/// receive-pack tells its hooks — and the configured program ran in the git directory.
#[test]
fn good_signatures_are_verified_as_by_git() {
    for git in Git::all() {
        let dir = Dir::new("push-cert-good");
        let keyring = Keyring::new(&dir);
        let client = dir.join("client");
        dir.git(&git).args(["init", "--quiet"]).arg(&client).run();
        dir.git(&git)
            .current_dir(&client)
            .args(["commit", "--quiet", "--allow-empty", "-m", "signed"])
            .run();
        let statuses: Vec<String> = [Some(receive_pack_option()), None]
            .into_iter()
            .enumerate()
            .map(|(n, option)| {
                let server = server(&dir, &git, &format!("server-{n}.git"));
                install_hook(&server.join("hooks"), "pre-receive", STATUS_HOOK);
                dir.git(&git)
                    .current_dir(&client)
                    .env("GNUPGHOME", &keyring.home)
                    .args(["-c", "user.signingKey=signer@example.com"])
                    .args(["push", "--quiet", "--signed"])
                    .args(option)
                    .arg(file_url(&server))
                    .arg("HEAD:refs/heads/main")
                    .run();
                let runs = std::fs::read_to_string(server.join("gpg-runs")).unwrap_or_default();
                let canonical = server
                    .canonicalize()
                    .unwrap_or_else(|err| panic!("{}: {err}", server.display()));
                assert!(
                    runs.starts_with(&format!("{} ", canonical.display()))
                        && runs.contains("--status-fd=1 --verify"),
                    "{git}, server {n}: gpg ran as {runs:?}"
                );
                status(&server)
            })
            .collect();
        assert_eq!(statuses[0], statuses[1], "{git}: packgate, then git");
        for expected in [
            "GIT_PUSH_CERT_STATUS=G".to_owned(),
            format!("GIT_PUSH_CERT_SIGNER={SIGNER}"),
            format!("GIT_PUSH_CERT_KEY={}", keyring.key_id),
            "GIT_PUSH_CERT_NONCE_STATUS=OK".to_owned(),
        ] {
            assert!(
                statuses[0].lines().any(|line| line == expected),
                "{git}: {expected} not in\n{}",
                statuses[0]
            );
        }
    }
}

/// A certificate changed after it was signed: `B` (gpg's BADSIG, with the key and signer it
/// names), where the same push unchanged is `G`; the nonce of a replayed push is `BAD` either
/// way. packgate and git's receive-pack are given the same recorded push.
#[test]
fn tampered_certificates_are_bad_as_with_git() {
    let git = Git::newest();
    let dir = Dir::new("push-cert-tampered");
    let keyring = Keyring::new(&dir);
    let client = dir.join("client");
    dir.git(&git).args(["init", "--quiet"]).arg(&client).run();
    dir.git(&git)
        .current_dir(&client)
        .args(["commit", "--quiet", "--allow-empty", "-m", "doomed"])
        .run();
    // A repository with the branch the push deletes (a push without a pack).
    let with_branch = |name: &str| {
        let server = server(&dir, &git, name);
        dir.git(&git)
            .current_dir(&client)
            .args(["push", "--quiet"])
            .arg(file_url(&server))
            .arg("HEAD:refs/heads/doomed")
            .run();
        install_hook(&server.join("hooks"), "pre-receive", STATUS_HOOK);
        server
    };
    // Record the push: a receive-pack that advertises as packgate does, then answers
    // nonsense once it has read everything.
    let recorded = with_branch("recorded.git");
    let preamble = dir
        .packgate()
        .args(["receive-pack", "--advertise-refs"])
        .arg(&recorded)
        .run()
        .stdout;
    write_file(&dir.join("preamble"), &preamble);
    let recorder = dir.join("recorder");
    write_file(
        &recorder,
        format!(
            "#!/bin/sh\ncat '{0}/preamble'\nprintf xxxx\ncat >'{0}/push'\n",
            dir.path().display()
        )
        .as_bytes(),
    );
    Cmd::new(Path::new("chmod")).arg("+x").arg(&recorder).run();
    let _ = dir
        .git(&git)
        .current_dir(&client)
        .env("GNUPGHOME", &keyring.home)
        .args(["-c", "user.signingKey=signer@example.com"])
        .arg("push")
        .arg(format!("--receive-pack={}", recorder.display()))
        .args(["--signed", "--delete"])
        .arg(file_url(&recorded))
        .arg("doomed")
        .output();
    let push =
        std::fs::read(dir.join("push")).unwrap_or_else(|err| panic!("the recorded push: {err}"));
    let at = push
        .windows(8)
        .position(|window| window == b"pusher s")
        .unwrap_or_else(|| panic!("no pusher line in {:?}", String::from_utf8_lossy(&push)));
    let mut tampered = push.clone();
    tampered[at + 7] = b'X';

    let mut seen = Vec::new();
    for (name, input) in [("unchanged", &push), ("tampered", &tampered)] {
        let statuses: Vec<String> = ["packgate", "git"]
            .into_iter()
            .map(|server_name| {
                let server = with_branch(&format!("{name}-{server_name}.git"));
                let receive_pack = match server_name {
                    "packgate" => dir.packgate().arg("receive-pack"),
                    _ => dir.git(&git).arg("receive-pack"),
                };
                let output = receive_pack
                    .env("GNUPGHOME", &keyring.home)
                    .arg(&server)
                    .stdin(input.clone())
                    .output();
                assert!(output.status.success(), "{server_name}, {name}: {output}");
                status(&server)
            })
            .collect();
        assert_eq!(statuses[0], statuses[1], "{name}: packgate, then git");
        assert!(
            statuses[0].contains("GIT_PUSH_CERT_NONCE_STATUS=BAD\n")
                && statuses[0].contains(&format!("GIT_PUSH_CERT_KEY={}\n", keyring.key_id)),
            "{name}: {}",
            statuses[0]
        );
        seen.push(statuses.into_iter().next().unwrap_or_default());
    }
    assert!(seen[0].contains("GIT_PUSH_CERT_STATUS=G\n"), "{}", seen[0]);
    assert!(seen[1].contains("GIT_PUSH_CERT_STATUS=B\n"), "{}", seen[1]);
}
