//! `packgate serve`: the README's serve command, over git:// on loopback.

use std::{io::Write, time::Duration};

use crate::{
    http::{Push, Server, ServerOptions},
    util::{assert_same_refs, fsck, refs, shared_fixture, write_file, Dir, Git},
};

#[test]
fn clone_over_git_protocol() {
    let source = shared_fixture("small");
    let dir = Dir::new("serve-clone");
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|error| panic!("mkdir: {error}"));
    dir.copy_tree(&source.path, &root.join("small.git"));
    let server = Server::start(&root, Push::Refused);
    for (n, git) in Git::all().into_iter().enumerate() {
        let destination = dir.join(&format!("clone-{n}"));
        dir.git(&git)
            .args(["-c", "protocol.version=2", "clone", "--mirror"])
            .arg(server.git_url("small.git"))
            .arg(&destination)
            .run();
        fsck(&dir, &git, &destination);
        let expected = refs(&dir, &git, &source.path, &[]);
        let actual = refs(&dir, &git, &destination, &[]);
        assert_same_refs(
            &expected,
            &actual,
            &format!("git:// mirror clone with {git}"),
        );
    }
}

#[test]
fn refuses_paths_outside_the_root_and_unsupported_requests() {
    let source = shared_fixture("tiny");
    let dir = Dir::new("serve-refuse");
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|error| panic!("mkdir: {error}"));
    dir.copy_tree(&source.path, &root.join("tiny.git"));
    // A repository beside the root, reachable only by escaping it.
    dir.copy_tree(&source.path, &dir.join("outside.git"));
    std::os::unix::fs::symlink(dir.join("outside.git"), root.join("link.git"))
        .unwrap_or_else(|error| panic!("symlink: {error}"));
    let server = Server::start(&root, Push::Refused);
    let git = Git::newest();
    let absolute = dir.join("outside.git").display().to_string();
    for path in [
        "../outside.git",
        "%2e%2e/outside.git",
        "missing.git",
        "link.git",
        absolute.trim_start_matches('/'),
    ] {
        let output = dir
            .git(&git)
            .args(["-c", "protocol.version=2", "ls-remote"])
            .arg(server.git_url(path))
            .output();
        assert!(!output.status.success(), "{path} must be refused: {output}");
        assert!(
            output
                .stderr_text()
                .contains("access denied or repository not exported"),
            "{path}: {output}"
        );
    }
    let output = dir
        .git(&git)
        .args(["-c", "protocol.version=0", "ls-remote"])
        .arg(server.git_url("tiny.git"))
        .output();
    assert!(
        output.status.success() && output.stdout_text().contains("\trefs/heads/main\n"),
        "v0 is served: {output}"
    );
    let output = dir
        .git(&git)
        .args(["push", "--dry-run"])
        .arg(server.git_url("tiny.git"))
        .arg("refs/heads/main:refs/heads/other")
        .current_dir(&source.path)
        .output();
    assert!(
        !output.status.success(),
        "push over git:// must be refused: {output}"
    );
    // The server is still serving after all of that.
    dir.git(&git)
        .args(["-c", "protocol.version=2", "ls-remote"])
        .arg(server.git_url("tiny.git"))
        .run();
}

/// `--config FILE`: push over git:// for every repository and the idle timeout come from the
/// file; a typo in it stops the server with the key's name.
#[test]
fn config_file_settings() {
    let source = shared_fixture("tiny");
    let dir = Dir::new("serve-config");
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|error| panic!("mkdir: {error}"));
    let served = root.join("tiny.git");
    dir.copy_tree(&source.path, &served);
    let config = dir.join("packgate.toml");
    write_file(&config, b"[git]\nreceive-pack = true\ntimeout = 2\n");
    let server = Server::start_with(
        &root,
        &ServerOptions {
            config: Some(config),
            ..ServerOptions::new(Push::Refused)
        },
    );
    for (n, git) in Git::all().into_iter().enumerate() {
        crate::sessions::clone_commit_and_push(
            &dir,
            &git,
            &server.git_url("tiny.git"),
            &served,
            &format!("from-config-{n}"),
        );
    }
    // A client that stops in the middle of a request is cut off after `timeout`.
    let address = server
        .git_url("")
        .trim_start_matches("git://")
        .trim_end_matches('/')
        .to_owned();
    let mut stalled = crate::sessions::open_session(&address, "/tiny.git");
    stalled
        .write_all(&crate::pkt::line(b"command=ls-refs\n"))
        .unwrap_or_else(|error| panic!("sending half a request: {error}"));
    crate::sessions::wait_for_close(&mut stalled, Duration::from_secs(15));

    let bad = dir.join("bad.toml");
    write_file(&bad, b"[git]\ntimeuot = 2\n");
    let output = dir
        .packgate()
        .args(["serve", "--config"])
        .arg(&bad)
        .arg(&root)
        .output();
    assert!(!output.status.success(), "{output}");
    assert!(output.stderr_text().contains("timeuot"), "{output}");
}

/// SIGTERM ends `packgate serve` cleanly and promptly: idle sessions (git:// between commands,
/// an HTTP keep-alive connection) at once, a push stalled in the middle of its pack after the
/// shutdown grace period, with the repository as before.
#[test]
fn sigterm_shuts_down_promptly() {
    use crate::receive_pack::{
        setup_with_partial_request, temporary_pack_size, wait_until, Snapshot, END_LIMIT,
    };
    let git = Git::newest();
    let (setup, request) = setup_with_partial_request("serve-sigterm", &git);
    let config = setup.dir.join("packgate.toml");
    write_file(&config, b"[git]\nreceive-pack = true\n");
    let server = Server::start_with(
        setup.dir.path(),
        &ServerOptions {
            config: Some(config),
            ..ServerOptions::new(Push::Refused)
        },
    );
    let before = Snapshot::of(&setup.dir, &git, &setup.server);
    let address = server
        .git_url("")
        .trim_start_matches("git://")
        .trim_end_matches('/')
        .to_owned();
    let _idle_git = crate::sessions::open_session(&address, "/server.git");
    let _idle_http = std::net::TcpStream::connect(server.http_address())
        .unwrap_or_else(|error| panic!("connecting: {error}"));
    let mut stalled_push = std::net::TcpStream::connect(&address)
        .unwrap_or_else(|error| panic!("connecting: {error}"));
    stalled_push
        .write_all(&crate::pkt::line(
            b"git-receive-pack /server.git\0host=127.0.0.1\0",
        ))
        .unwrap_or_else(|error| panic!("sending the head: {error}"));
    stalled_push
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap_or_else(|error| panic!("set_read_timeout: {error}"));
    crate::sessions::read_until_flush(&mut stalled_push);
    stalled_push
        .write_all(&request)
        .unwrap_or_else(|error| panic!("sending half a push: {error}"));
    wait_until(END_LIMIT, "the pack to arrive", || {
        temporary_pack_size(&setup.server).is_some()
    });
    let started = std::time::Instant::now();
    let (status, log) = server.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?} to end",
        started.elapsed()
    );
    // No ref moved and nothing of the push was migrated (a quarantine directory may stay,
    // as after a crash of git's receive-pack; nothing refers to it).
    let now = Snapshot::of(&setup.dir, &git, &setup.server);
    assert_eq!(
        now, before,
        "a push cut off by shutdown changed the repository"
    );
}

/// How many connections wait in the accept queue of the loopback listener on `port`
/// (`/proc/net/tcp`: a listening socket's `rx_queue`), if it is found.
fn accept_queue(port: u16) -> Option<usize> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, state, queues) = (fields.get(1)?, fields.get(3)?, fields.get(4)?);
        let local_port = u16::from_str_radix(local.split(':').nth(1)?, 16).ok()?;
        if local_port != port || *state != "0A" {
            return None;
        }
        usize::from_str_radix(queues.split(':').nth(1)?, 16).ok()
    })
}

/// The port of `host:port`.
fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {address}"))
}

/// 1,000 connections from one address that never send a request (one idle connection costs
/// the server a few KiB) do not stop another client's clone, over git:// or HTTP: with the
/// default caps (the server closes the longest-waiting connections of that address to make
/// room), and with caps so large that the server keeps them all (waiting connections do not
/// count against the cap on sessions).
#[test]
fn idle_connections_do_not_stop_clones() {
    const IDLE: usize = 1000;
    let source = shared_fixture("tiny");
    let dir = Dir::new("serve-idle-flood");
    let root = dir.join("repos");
    std::fs::create_dir_all(&root).unwrap_or_else(|error| panic!("mkdir: {error}"));
    dir.copy_tree(&source.path, &root.join("tiny.git"));
    let roomy = dir.join("roomy.toml");
    let section = "max-connections = 8\nmax-waiting-connections = 5000\n\
                   max-waiting-per-address = 5000\n";
    write_file(
        &roomy,
        format!("[git]\n{section}[http]\n{section}").as_bytes(),
    );
    let mut clones = 0;
    for config in [None, Some(roomy)] {
        let server = Server::start_with(
            &root,
            &ServerOptions {
                config: config.clone(),
                ..ServerOptions::new(Push::Refused)
            },
        );
        let git_address = server
            .git_url("")
            .trim_start_matches("git://")
            .trim_end_matches('/')
            .to_owned();
        let http_address = server.http_address().to_owned();
        let mut idle = Vec::with_capacity(2 * IDLE);
        for address in [&git_address, &http_address] {
            for _ in 0..IDLE {
                idle.push(
                    std::net::TcpStream::connect(address).unwrap_or_else(|error| {
                        panic!("idle connection {} to {address}: {error}", idle.len())
                    }),
                );
            }
            // Until the server has accepted every one of them (bounded).
            let port = port_of(address);
            let started = std::time::Instant::now();
            while accept_queue(port) != Some(0) {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "{address}: connections still unaccepted: {:?}",
                    accept_queue(port)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for git in Git::all() {
            for url in [server.git_url("tiny.git"), server.http_url("tiny.git")] {
                clones += 1;
                let destination = dir.join(&format!("clone-{clones}"));
                let output = dir
                    .git(&git)
                    .args(["-c", "protocol.version=2", "clone", "--bare", "--quiet"])
                    .arg(&url)
                    .arg(&destination)
                    .timeout(Duration::from_secs(60))
                    .output();
                assert!(
                    output.status.success(),
                    "clone of {url} with {git} beside {IDLE} idle connections \
                     (config {config:?}): {output}"
                );
                assert_same_refs(
                    &refs(&dir, &git, &source.path, &[]),
                    &refs(&dir, &git, &destination, &[]),
                    &format!("clone of {url} with {git}"),
                );
            }
        }
        drop(idle);
    }
}
