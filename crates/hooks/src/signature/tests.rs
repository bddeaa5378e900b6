use super::*;

fn check(result: char, signer: Option<&str>, key: Option<&str>) -> SignatureCheck {
    SignatureCheck {
        result,
        signer: signer.map(str::to_owned),
        key: key.map(str::to_owned),
        error: None,
    }
}

#[test]
fn formats_by_their_first_line() {
    assert_eq!(
        SignatureFormat::of(b"-----BEGIN PGP SIGNATURE-----\n"),
        Some(SignatureFormat::OpenPgp)
    );
    assert_eq!(
        SignatureFormat::of(b"-----BEGIN PGP MESSAGE-----\n"),
        Some(SignatureFormat::OpenPgp)
    );
    assert_eq!(
        SignatureFormat::of(b"-----BEGIN SIGNED MESSAGE-----\n"),
        Some(SignatureFormat::X509)
    );
    assert_eq!(
        SignatureFormat::of(b"-----BEGIN SSH SIGNATURE-----\n"),
        Some(SignatureFormat::Ssh)
    );
    assert_eq!(SignatureFormat::of(b""), None);
    assert_eq!(SignatureFormat::of(b"signed, trust me\n"), None);
}

#[test]
fn gpg_status_as_git_reads_it() {
    let good = b"[GNUPG:] NEWSIG\n\
        [GNUPG:] KEY_CONSIDERED 73D758744BE721698EC54E8713B6F51ECDDE430D 0\n\
        [GNUPG:] SIG_ID abc 2005-04-07 1112911993\n\
        [GNUPG:] GOODSIG 13B6F51ECDDE430D C O Mitter <committer@example.com>\n\
        [GNUPG:] VALIDSIG 73D7 2005-04-07 1112911993 0 4 0 17 2 00 73D7\n\
        [GNUPG:] TRUST_ULTIMATE 0 pgp\n";
    assert_eq!(
        parse_gpg_status(good),
        check(
            'G',
            Some("C O Mitter <committer@example.com>"),
            Some("13B6F51ECDDE430D")
        )
    );
    assert_eq!(
        parse_gpg_status(b"[GNUPG:] BADSIG 13B6F51ECDDE430D C O Mitter <c@example.com>\n"),
        check(
            'B',
            Some("C O Mitter <c@example.com>"),
            Some("13B6F51ECDDE430D")
        )
    );
    // ERRSIG names the key but no signer.
    assert_eq!(
        parse_gpg_status(b"[GNUPG:] ERRSIG 13B6F51ECDDE430D 17 2 00 1112911993 9 -\n"),
        check('E', None, Some("13B6F51ECDDE430D"))
    );
    for (line, letter) in [("EXPSIG", 'X'), ("EXPKEYSIG", 'Y'), ("REVKEYSIG", 'R')] {
        let status = format!("[GNUPG:] {line} AAAA A U Thor <a@example.com>\n");
        assert_eq!(parse_gpg_status(status.as_bytes()).result, letter, "{line}");
    }
    // Two signatures, or a trust level git does not know: E, and nothing else.
    let twice = b"[GNUPG:] GOODSIG AAAA A <a@x>\n[GNUPG:] GOODSIG BBBB B <b@x>\n";
    assert_eq!(parse_gpg_status(twice), check('E', None, None));
    let odd_trust = b"[GNUPG:] GOODSIG AAAA A <a@x>\n[GNUPG:] TRUST_SOMEWHAT 0\n";
    assert_eq!(parse_gpg_status(odd_trust), check('E', None, None));
    // Not status lines, or nothing at all: N.
    assert_eq!(
        parse_gpg_status(b"gpg: Signature made ...\nGOODSIG AAAA\n"),
        check('N', None, None)
    );
    assert_eq!(parse_gpg_status(b""), check('N', None, None));
}

#[test]
fn ssh_output_as_git_reads_it() {
    assert_eq!(
        parse_ssh_output(
            b"Good \"git\" signature for principal with number 1 with ED25519 key SHA256:abc\n"
        ),
        check('G', Some("principal with number 1"), Some("SHA256:abc"))
    );
    // A key no allowed signer names (check-novalidate): good, without a signer.
    assert_eq!(
        parse_ssh_output(b"Good \"git\" signature with RSA key SHA256:def\nmore\n"),
        check('G', None, Some("SHA256:def"))
    );
    assert_eq!(
        parse_ssh_output(b"Could not verify signature.\n"),
        check('B', None, None)
    );
    assert_eq!(
        parse_ssh_output(b"Good \"git\" signature for nobody\n"),
        check('B', None, None)
    );
    assert_eq!(
        parse_ssh_output(b"Good \"git\" signature with a mystery\n"),
        check('B', None, None)
    );
    assert_eq!(parse_ssh_output(b""), check('B', None, None));
}

/// A verifier whose every program is `script` (a shell script written into `dir`).
fn fake(dir: &Path, script: &str) -> SignatureVerifier {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("verifier");
    std::fs::write(&path, format!("#!/bin/sh\n{script}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    SignatureVerifier {
        openpgp_program: path.clone().into(),
        x509_program: path.clone().into(),
        ssh_program: path.into(),
        ssh_allowed_signers: Some("allowed".into()),
        ssh_revocation_file: None,
        timeout: Duration::from_secs(30),
    }
}

const PGP: &[u8] = b"-----BEGIN PGP SIGNATURE-----\nxyz\n-----END PGP SIGNATURE-----\n";

/// The configured program runs in the git directory with git's arguments, the payload on
/// its standard input and the signature in the file it is given.
#[test]
fn runs_the_configured_program_as_git_does() {
    let dir = tempfile::tempdir().unwrap();
    let verifier = fake(
        dir.path(),
        r#"pwd >&2
printf '%s\n' "$@" >args
cat >payload
cat "$4" >signature
echo "[GNUPG:] GOODSIG 0123456789ABCDEF A U Thor <author@example.com>"
"#,
    );
    let checked = verifier.verify(b"the payload\n", PGP, dir.path()).unwrap();
    assert_eq!(
        checked,
        check(
            'G',
            Some("A U Thor <author@example.com>"),
            Some("0123456789ABCDEF")
        )
    );
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    let args: Vec<String> = read("args").lines().map(str::to_owned).collect();
    assert_eq!(
        args[..3],
        ["--keyid-format=long", "--status-fd=1", "--verify"]
    );
    assert_eq!(args[4], "-");
    assert_eq!(read("payload"), "the payload\n");
    assert_eq!(read("signature").as_bytes(), PGP);
    // The temporary file is gone afterwards.
    assert!(!Path::new(&args[3]).exists());
}

#[test]
fn ssh_signatures_take_principals_from_the_allowed_signers() {
    let dir = tempfile::tempdir().unwrap();
    let verifier = fake(
        dir.path(),
        r#"case "$2" in
find-principals) test "$4" = "$PWD/allowed" && echo "someone special" ;;
verify) cat >/dev/null; echo "Good \"git\" signature for $8 with ED25519 key SHA256:xyz" ;;
esac
"#,
    );
    let ssh = b"-----BEGIN SSH SIGNATURE-----\nxyz\n-----END SSH SIGNATURE-----\n";
    assert_eq!(
        verifier.verify(b"payload\n", ssh, dir.path()).unwrap(),
        check('G', Some("someone special"), Some("SHA256:xyz"))
    );
    let unconfigured = SignatureVerifier {
        ssh_allowed_signers: None,
        ..verifier
    };
    let checked = unconfigured.verify(b"payload\n", ssh, dir.path()).unwrap();
    assert_eq!(checked.result, 'N');
    assert!(checked
        .error
        .unwrap()
        .contains("gpg.ssh.allowedSignersFile needs to be configured"));
}

#[test]
fn what_cannot_be_checked_is_not_verified() {
    let dir = tempfile::tempdir().unwrap();
    // No such program: N, as git.
    let missing = SignatureVerifier {
        openpgp_program: dir.path().join("no-such-gpg").into(),
        ..SignatureVerifier::default()
    };
    let checked = missing.verify(b"payload\n", PGP, dir.path()).unwrap();
    assert_eq!((checked.result, checked.signer), ('N', None));
    assert!(checked.error.is_some());
    // A program that runs out of time is killed, with what it started.
    let slow = SignatureVerifier {
        timeout: Duration::from_millis(300),
        ..fake(dir.path(), "sleep 30 & echo $! >child; sleep 30\n")
    };
    let started = Instant::now();
    let checked = slow.verify(b"payload\n", PGP, dir.path()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(checked.result, 'N');
    assert!(checked.error.unwrap().contains("ran out of time"));
    let child = std::fs::read_to_string(dir.path().join("child")).unwrap();
    // Gone, or a zombie nobody reaped yet (its state after the command's name). A killed
    // process may take a moment to die: look for up to ten seconds.
    let state = || {
        std::fs::read_to_string(format!("/proc/{}/stat", child.trim()))
            .ok()
            .and_then(|stat| stat.rsplit_once(") ")?.1.chars().next())
    };
    let dead = |state: Option<char>| matches!(state, None | Some('Z' | 'X'));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dead(state()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        dead(state()),
        "the program's child survived ({:?})",
        state()
    );
    // A signature of no known kind: git's error.
    let err = SignatureVerifier::default()
        .verify(b"payload\n", b"", dir.path())
        .unwrap_err();
    assert_eq!(err.to_string(), "bad/incompatible signature ''");
}
