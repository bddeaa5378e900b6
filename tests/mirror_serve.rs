//! Mirror mode and refresh-on-fetch with the real `packgate serve --config`: `[[mirror]]`
//! entries (upstream: a local path, `git daemon`) are created at start and served; they
//! follow the upstream on `SIGHUP` and on their interval, deleted branches pruned; a refresh
//! that stalls mid-pack (the upstream behind a proxy that stops forwarding) never shows:
//! clients get the old, whole state and the refresh ends by `refresh-timeout` leaving no
//! quarantine. A gated repository with `packgate.refreshOnFetch` serves upstream's new state
//! to `git clone`, and still serves when its upstream fails.

// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::fetch::move_source_forward;
use crate::http::{Push, Server, ServerOptions};
use crate::util::{assert_same_refs, fsck, refs, shared_fixture, write_file, Cmd, Dir, Git};

/// The bound on every wait for a mirror to change.
const LIMIT: Duration = Duration::from_secs(60);

/// Polls `check` until it holds, at most [`LIMIT`].
#[track_caller]
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `git ls-remote --refs <url>` as name → id; empty when it fails (not there yet).
fn ls_remote(dir: &Dir, url: &str) -> BTreeMap<String, String> {
    let output = dir
        .git(&Git::newest())
        .args(["ls-remote", "--refs", url])
        .output();
    output
        .stdout_text()
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(id, name)| (name.to_owned(), id.to_owned()))
        .collect()
}

/// A copy of the `small` preset at `path`.
fn upstream(dir: &Dir, path: &Path) -> BTreeMap<String, String> {
    dir.copy_tree(&shared_fixture("small").path, path);
    refs(dir, &Git::newest(), path, &[])
}

/// `packgate serve --config <config> <root>` with info logs.
fn serve(dir: &Dir, root: &Path, config: &str) -> Server {
    let file = dir.join("serve.toml");
    write_file(&file, config.as_bytes());
    Server::start_with(
        root,
        &ServerOptions {
            config: Some(file),
            log_filter: Some("info"),
            ..ServerOptions::new(Push::Refused)
        },
    )
}

fn hangup(server: &Server) {
    Cmd::new(Path::new("kill"))
        .args(["-HUP", &server.pid().to_string()])
        .run();
}

/// `git clone --mirror` from `url` into `dest`: its refs, checked with fsck.
fn clone(dir: &Dir, url: &str, dest: &Path) -> BTreeMap<String, String> {
    let git = Git::newest();
    dir.git(&git)
        .args(["clone", "-q", "--mirror", url])
        .arg(dest)
        .run();
    fsck(dir, &git, dest);
    refs(dir, &git, dest, &[])
}

#[test]
fn mirrors_are_created_served_and_follow_upstream() {
    let git = Git::newest();
    let dir = Dir::new("mirror-serve");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let local = dir.join("local upstream.git");
    let mut local_refs = upstream(&dir, &local);
    let served = dir.join("served");
    std::fs::create_dir_all(&served).unwrap();
    let by_daemon = served.join("d.git");
    let mut daemon_refs = upstream(&dir, &by_daemon);
    let often = dir.join("often.git");
    let mut often_refs = upstream(&dir, &often);
    let daemon = Daemon::start_git(
        &dir,
        &git,
        &["--export-all", &format!("--base-path={}", served.display())],
    );
    let server = serve(
        &dir,
        &root,
        &format!(
            "refresh-timeout = 30\n\
             [[mirror]]\npath = \"m/local.git\"\nurl = \"{}\"\ninterval = \"1h\"\n\
             [[mirror]]\npath = \"m/daemon.git\"\nurl = \"{}\"\ninterval = \"1h\"\n\
             [[mirror]]\npath = \"often.git\"\nurl = \"{}\"\ninterval = 1\n",
            local.display(),
            daemon.url("/d.git"),
            often.display(),
        ),
    );
    let mirrors = [
        ("m/local.git", &local, &mut local_refs),
        ("m/daemon.git", &by_daemon, &mut daemon_refs),
        ("often.git", &often, &mut often_refs),
    ];
    // Created at start, then served: a clone equals upstream.
    for (path, _, expected) in &mirrors {
        let url = server.git_url(path);
        wait_for(&format!("{path} to be created"), || {
            ls_remote(&dir, &url) == **expected
        });
        let cloned = clone(
            &dir,
            &url,
            &dir.join(&format!("clone-{}", path.replace('/', "-"))),
        );
        assert_same_refs(&cloned, expected, path);
    }

    // Upstream moves (and deletes topic/0): the interval alone moves `often.git`; SIGHUP
    // moves the others.
    for (path, source, expected) in mirrors {
        move_source_forward(&dir, &git, source);
        *expected = refs(&dir, &git, source, &[]);
        assert!(!expected.contains_key("refs/heads/topic/0"), "{path}");
    }
    let url = server.git_url("often.git");
    wait_for("often.git to follow on its interval", || {
        ls_remote(&dir, &url) == often_refs
    });
    hangup(&server);
    for (path, expected) in [("m/local.git", &local_refs), ("m/daemon.git", &daemon_refs)] {
        let url = server.git_url(path);
        wait_for(&format!("{path} to follow after SIGHUP"), || {
            ls_remote(&dir, &url) == *expected
        });
        let cloned = clone(
            &dir,
            &url,
            &dir.join(&format!("again-{}", path.replace('/', "-"))),
        );
        assert_same_refs(&cloned, expected, path);
        fsck(&dir, &git, &root.join(path));
    }
}

/// A TCP proxy to `target` that, once told to stall, forwards a new connection's answer only
/// up to the start of a pack and then holds it, forwarding nothing more.
struct StallProxy {
    port: u16,
    stall: Arc<AtomicBool>,
    /// Connections stalled so far.
    stalled: Arc<AtomicUsize>,
    release: Arc<AtomicBool>,
}

impl StallProxy {
    fn start(target: SocketAddr) -> StallProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = StallProxy {
            port,
            stall: Arc::default(),
            stalled: Arc::default(),
            release: Arc::default(),
        };
        let (stall, stalled, release) = (
            Arc::clone(&proxy.stall),
            Arc::clone(&proxy.stalled),
            Arc::clone(&proxy.release),
        );
        std::thread::spawn(move || {
            // Bounded: the test connects a few times.
            for client in listener.incoming().take(64) {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(target) else {
                    break;
                };
                let (mut to_server, mut from_client) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_client, &mut to_server);
                    let _ = to_server.shutdown(Shutdown::Write);
                });
                let stall = stall.load(Ordering::SeqCst);
                let (stalled, release) = (Arc::clone(&stalled), Arc::clone(&release));
                std::thread::spawn(move || answer(server, client, stall, &stalled, &release));
            }
        });
        proxy
    }

    fn url(&self, path: &str) -> String {
        format!("git://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.release.store(true, Ordering::SeqCst);
    }
}

/// Copies the server's answer to the client; when `stall`, only up to the pack's header.
fn answer(
    mut server: TcpStream,
    mut client: TcpStream,
    stall: bool,
    stalled: &AtomicUsize,
    release: &AtomicBool,
) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = match server.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buffer[..n];
        let pack = stall
            .then(|| chunk.windows(4).position(|w| w == b"PACK"))
            .flatten();
        if let Some(start) = pack {
            // The pack's 12-byte header, then nothing: held until the test ends (bounded).
            let _ = client.write_all(&chunk[..(start + 12).min(n)]);
            stalled.fetch_add(1, Ordering::SeqCst);
            let held = Instant::now();
            while !release.load(Ordering::SeqCst) && held.elapsed() < Duration::from_secs(120) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        if client.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Write);
}

#[test]
fn a_stalled_refresh_is_never_served_and_ends_by_its_timeout() {
    let git = Git::newest();
    let dir = Dir::new("mirror-stall");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let served = dir.join("served");
    std::fs::create_dir_all(&served).unwrap();
    let source = served.join("s.git");
    let old = upstream(&dir, &source);
    let daemon = Daemon::start_git(
        &dir,
        &git,
        &["--export-all", &format!("--base-path={}", served.display())],
    );
    let target: SocketAddr = daemon.url("").trim_start_matches("git://").parse().unwrap();
    let proxy = StallProxy::start(target);
    let server = serve(
        &dir,
        &root,
        &format!(
            "refresh-timeout = 3\n[[mirror]]\npath = \"m.git\"\nurl = \"{}\"\ninterval = \"1h\"\n",
            proxy.url("/s.git"),
        ),
    );
    let url = server.git_url("m.git");
    wait_for("the mirror to be created", || ls_remote(&dir, &url) == old);
    let mirror = root.join("m.git");
    let packs = |mirror: &Path| {
        std::fs::read_dir(mirror.join("objects/pack"))
            .unwrap()
            .filter(|entry| {
                entry
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".pack")
            })
            .count()
    };
    let packs_before = packs(&mirror);

    // Upstream moves; the refresh SIGHUP starts stalls inside the pack.
    move_source_forward(&dir, &git, &source);
    let new = refs(&dir, &git, &source, &[]);
    proxy.stall.store(true, Ordering::SeqCst);
    let failures = server.log_text().matches("refresh failed").count();
    hangup(&server);
    wait_for("the refresh to stall mid-pack", || {
        proxy.stalled.load(Ordering::SeqCst) > 0
    });
    // Meanwhile clients get the old state, whole.
    for round in 0..2 {
        let cloned = clone(&dir, &url, &dir.join(&format!("during-{round}")));
        assert_same_refs(&cloned, &old, "a clone during the stalled refresh");
    }
    // The refresh ends by its timeout, leaving no quarantine and no pack behind.
    wait_for("the stalled refresh to fail", || {
        server.log_text().matches("refresh failed").count() > failures
    });
    let leftovers: Vec<String> = std::fs::read_dir(mirror.join("objects"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("tmp_objdir"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(packs(&mirror), packs_before);
    assert_same_refs(&refs(&dir, &git, &mirror, &[]), &old, "after the stall");
    fsck(&dir, &git, &mirror);

    // Unstalled, the next signal brings the new state.
    proxy.stall.store(false, Ordering::SeqCst);
    hangup(&server);
    wait_for("the mirror to follow once upstream answers", || {
        ls_remote(&dir, &url) == new
    });
    fsck(&dir, &git, &mirror);
}

#[test]
fn refresh_on_fetch_serves_upstreams_new_state_and_survives_its_failure() {
    let git = Git::newest();
    let dir = Dir::new("mirror-refresh-on-fetch");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let source = dir.join("upstream.git");
    upstream(&dir, &source);
    let gate = root.join("gate.git");
    upstream(&dir, &gate);
    for (key, value) in [
        ("packgate.upstream", source.to_str().unwrap()),
        ("packgate.refreshOnFetch", "true"),
    ] {
        dir.git_in(&git, &gate).args(["config", key, value]).run();
    }
    let server = serve(&dir, &root, "refresh-timeout = 30\n");

    move_source_forward(&dir, &git, &source);
    let new = refs(&dir, &git, &source, &[]);
    let cloned = clone(&dir, &server.git_url("gate.git"), &dir.join("over-git"));
    assert_same_refs(&cloned, &new, "a clone over git:// after upstream moved");

    // Again over HTTP, after another move; then with upstream gone, the gate still serves.
    let append = packgate_fixture::Append {
        branch: "main".to_owned(),
        commits: 2,
        seed: 99,
        git: git.program.clone(),
        ..packgate_fixture::Append::default()
    };
    packgate_fixture::append_commits(&source, &append).unwrap();
    let newer = refs(&dir, &git, &source, &[]);
    let cloned = clone(&dir, &server.http_url("gate.git"), &dir.join("over-http"));
    assert_same_refs(&cloned, &newer, "a clone over HTTP after upstream moved");

    std::fs::rename(&source, dir.join("gone.git")).unwrap();
    for (name, url) in [
        ("git://", server.git_url("gate.git")),
        ("HTTP", server.http_url("gate.git")),
    ] {
        let cloned = clone(&dir, &url, &dir.join(&format!("failing-{}", name.len())));
        assert_same_refs(&cloned, &newer, &format!("{name} with upstream gone"));
    }
    assert!(
        server.log_text().contains("refresh failed"),
        "{}",
        server.log_text()
    );
}

/// A mirror over ssh whose server program never answers: the refresh ends by
/// `refresh-timeout` (the child is killed) instead of holding its thread forever.
#[test]
fn a_silent_ssh_upstream_ends_by_the_refresh_timeout() {
    let dir = Dir::new("mirror-ssh-stall");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let ssh = dir.join("silent-ssh");
    crate::client_transport::write_script(&ssh, "exec sleep 600\n");
    let file = dir.join("serve.toml");
    write_file(
        &file,
        b"refresh-timeout = 2\n[[mirror]]\npath = \"m.git\"\n\
          url = \"ssh://git@example.invalid/srv/r.git\"\ninterval = \"1h\"\n",
    );
    let server = Server::start_with(
        &root,
        &ServerOptions {
            config: Some(file),
            log_filter: Some("info"),
            env: vec![(
                "GIT_SSH_COMMAND",
                Some(format!("'{}'", ssh.display()).into()),
            )],
            ..ServerOptions::new(Push::Refused)
        },
    );
    wait_for("the silent refresh to fail", || {
        server.log_text().contains("refresh failed")
    });
    assert!(
        server.log_text().contains("no progress in"),
        "{}",
        server.log_text()
    );
}
