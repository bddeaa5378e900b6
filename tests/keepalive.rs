//! Keepalive packets (`receive.keepAlive`): while a push's hooks run, the server sends empty
//! band-1 packets, seen here in a copy of what `packgate receive-pack` wrote to the client.
//!
//! upload-pack's keepalives (`uploadpack.keepAlive`, whole seconds) need a pack that takes
//! seconds to prepare; they are tested in the protocol crate with a millisecond interval.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::pkt::{self, Packet};
use crate::receive_pack::Setup;
use crate::util::{file_url, write_file, Git, PACKGATE};

/// An executable shell script at `path`.
fn script(path: &Path, body: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("creating {parent:?}: {e}"));
    }
    write_file(path, format!("#!/bin/sh\n{body}\n").as_bytes());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Pushes a new commit through packgate with `receive.keepAlive=<keepalive>` and a
/// pre-receive hook that sleeps `sleep`; returns the sideband packets packgate sent.
fn push_past_a_slow_hook(git: &Git, keepalive: &str, sleep: &str) -> Vec<Packet> {
    let setup = Setup::new(&format!("keepalive-{keepalive}"), git);
    setup.server_config("receive.keepAlive", keepalive);
    script(
        &setup.server.join("hooks/pre-receive"),
        &format!("echo hook started >&2\nsleep {sleep}\necho hook done >&2"),
    );
    // The receive-pack command: packgate, its output copied to a file on the way.
    let capture: PathBuf = setup.dir.join("server-output");
    let wrapper = setup.dir.join("receive-pack-tee");
    script(
        &wrapper,
        &format!(
            "'{}' receive-pack \"$@\" | tee '{}'",
            PACKGATE.replace('\'', r"'\''"),
            capture.display()
        ),
    );
    let tip = setup.commit("second");
    let output = setup
        .client()
        .arg("push")
        .arg(format!("--receive-pack={}", wrapper.display()))
        .arg(file_url(&setup.server))
        .arg("master")
        .output();
    assert!(output.status.success(), "push failed: {output}");
    let stderr = output.stderr_text();
    assert!(stderr.contains("remote: hook done"), "{output}");
    assert_eq!(
        setup.server_ref("refs/heads/master").as_deref(),
        Some(&*tip)
    );
    setup.fsck();

    let captured = std::fs::read(&capture).unwrap_or_else(|e| panic!("reading capture: {e}"));
    let (_advertisement, response) = pkt::split_advertisement(&captured)
        .unwrap_or_else(|| panic!("no advertisement in {captured:?}"));
    let (packets, rest) = pkt::decode(response);
    assert!(rest.is_empty(), "not pkt-lines: {rest:?}");
    assert_eq!(packets.last(), Some(&Packet::Flush), "{packets:?}");
    packets
}

fn is_keepalive(packet: &Packet) -> bool {
    packet == &Packet::Data(vec![1])
}

fn position(packets: &[Packet], text: &str) -> usize {
    packets
        .iter()
        .position(|p| {
            p.text()
                .is_some_and(|t| t.starts_with('\u{2}') && t.contains(text))
        })
        .unwrap_or_else(|| panic!("no band-2 packet with {text:?} in {packets:?}"))
}

#[test]
fn push_gets_keepalives_while_the_pre_receive_hook_runs() {
    for git in Git::all() {
        let packets = push_past_a_slow_hook(&git, "1", "2.5");
        let started = position(&packets, "hook started");
        let done = position(&packets, "hook done");
        let keepalives = packets[started..done]
            .iter()
            .filter(|p| is_keepalive(p))
            .count();
        // 2.5 s of silence with a keepalive interval of 1 s.
        assert!(
            keepalives >= 1,
            "{git}: no keepalive during the hook: {packets:?}"
        );
        assert!(
            packets[..started].iter().all(|p| !is_keepalive(p)),
            "{git}: a keepalive before the hook, while the push was fast: {packets:?}"
        );
    }
}

#[test]
fn push_gets_no_keepalives_when_disabled() {
    for git in Git::all() {
        let packets = push_past_a_slow_hook(&git, "0", "1.5");
        assert!(
            packets.iter().all(|p| !is_keepalive(p)),
            "{git}: a keepalive with receive.keepAlive=0: {packets:?}"
        );
    }
}
