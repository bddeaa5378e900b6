//! The gate and refresh-on-fetch through the real git:// and HTTP services, in process, with
//! fake upstream clients (the real push and fetch clients plug into the same traits): real
//! git clients push to a gated repository and fetch from one that refreshes first.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Condvar, Mutex,
    },
    time::{Duration, Instant},
};

use packgate::{
    hooks::RefUpdate,
    protocol::{
        daemon::{DaemonConfig, DaemonService},
        http::{HttpService, PushAccess},
        receive_pack::gate::{Forward, ForwardRequest, Forwarded},
        registry::Registry,
        upstream::{Refresh, Refresher, Upstreams},
    },
    transport::{
        daemon::{self, DaemonOptions},
        http::{self, HttpOptions},
    },
};

use crate::util::{fsck, refs, Dir, Git};

/// The value, or the test fails naming what failed.
fn ok<T, E: std::fmt::Debug>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|err| panic!("{what}: {err:?}"))
}

/// A fake upstream push client: records each request's updates, answers from a script.
struct FakeForward {
    seen: Mutex<Vec<Vec<RefUpdate>>>,
    answer: Forwarded,
}

impl Forward for FakeForward {
    fn forward(
        &self,
        request: &ForwardRequest<'_>,
        progress: &mut dyn std::io::Write,
    ) -> Vec<Forwarded> {
        use Forwarded as F;
        let _ = progress.write_all(b"upstream: forwarding\n");
        // The new commits are there to send, in the quarantine.
        let readable = request.updates.iter().all(|update| {
            let mut buf = Vec::new();
            gix_object::Find::try_find(request.objects, &update.new, &mut buf)
                .is_ok_and(|found| found.is_some())
        });
        ok(self.seen.lock(), "lock").push(request.updates.to_vec());
        if !readable {
            return vec![F::Refused("objects missing".into()); request.updates.len()];
        }
        vec![self.answer.clone(); request.updates.len()]
    }
}

/// A fake fetch client: counts refreshes; each waits until released (or its deadline), then
/// succeeds or fails.
struct FakeRefresh {
    calls: AtomicUsize,
    released: Mutex<bool>,
    release: Condvar,
    fail: bool,
}

impl FakeRefresh {
    fn new(fail: bool, released: bool) -> Arc<FakeRefresh> {
        Arc::new(FakeRefresh {
            calls: AtomicUsize::new(0),
            released: Mutex::new(released),
            release: Condvar::new(),
            fail,
        })
    }

    fn release(&self) {
        *ok(self.released.lock(), "lock") = true;
        self.release.notify_all();
    }
}

impl Refresh for FakeRefresh {
    fn refresh(&self, _: &Path, _: &str, deadline: Instant) -> Result<(), String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut released = ok(self.released.lock(), "lock");
        while !*released {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("deadline".into());
            }
            released = ok(self.release.wait_timeout(released, left), "wait").0;
        }
        if self.fail {
            Err("upstream down".into())
        } else {
            Ok(())
        }
    }
}

/// Both front-ends over one root, in process, with `upstreams`.
struct Server {
    /// Runs both front-ends until dropped.
    _runtime: tokio::runtime::Runtime,
    git_port: u16,
    http_port: u16,
    stop: Option<tokio::sync::watch::Sender<bool>>,
}

impl Server {
    fn start(root: &Path, upstreams: Upstreams) -> Server {
        let registry = ok(Registry::new(root), "registry");
        let mut config = DaemonConfig::default();
        config.receive_pack.enabled = true;
        let daemon_service =
            DaemonService::new(registry.clone(), config).with_upstreams(upstreams.clone());
        let http_service = HttpService::new(registry, PushAccess::AllowedWithoutAuthentication)
            .with_upstreams(upstreams);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build();
        let runtime = ok(runtime, "runtime");
        let bind = || {
            let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"));
            let listener = ok(listener, "bind");
            let port = ok(listener.local_addr(), "address").port();
            (listener, port)
        };
        let ((git_listener, git_port), (http_listener, http_port)) = (bind(), bind());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        runtime.spawn(daemon::serve(
            git_listener,
            Arc::new(daemon_service),
            DaemonOptions::default(),
            until(stopped.clone()),
        ));
        runtime.spawn(http::serve(
            http_listener,
            Arc::new(http_service),
            HttpOptions::default(),
            until(stopped),
        ));
        Server {
            _runtime: runtime,
            git_port,
            http_port,
            stop: Some(stop),
        }
    }

    fn urls(&self, path: &str) -> [String; 2] {
        [
            format!("git://127.0.0.1:{}/{path}", self.git_port),
            format!("http://127.0.0.1:{}/{path}", self.http_port),
        ]
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}

/// A root with `gate.git` (bare, gated in front of a made-up upstream) and a work
/// repository `work` with one commit; returns the root and the commit.
fn setup(dir: &Dir, git: &Git, gate_config: &[(&str, &str)]) -> (PathBuf, String) {
    let root = dir.join("root");
    let gate = root.join("gate.git");
    let run = |cmd: crate::util::Cmd| {
        let output = cmd.run();
        assert!(output.status.success(), "{output}");
        output.stdout_text().trim().to_owned()
    };
    run(dir.git(git).args(["init", "-q", "--bare"]).arg(&gate));
    for (key, value) in [("packgate.upstream", "git://upstream.invalid/r.git")]
        .iter()
        .chain(gate_config)
    {
        run(dir.git_in(git, &gate).args(["config", key, value]));
    }
    run(dir.git(git).args(["init", "-q", "work"]));
    let work = dir.join("work");
    crate::util::write_file(&work.join("file"), b"clean\n");
    run(dir.git(git).current_dir(&work).args(["add", "file"]));
    run(dir
        .git(git)
        .current_dir(&work)
        .args(["commit", "-q", "-m", "one"]));
    let commit = run(dir.git(git).current_dir(&work).args(["rev-parse", "HEAD"]));
    (root, commit)
}

fn push(dir: &Dir, git: &Git, url: &str, refspec: &str) -> crate::util::Output {
    dir.git(git)
        .current_dir(&dir.join("work"))
        .args(["push", "--porcelain", url, refspec])
        .timeout(Duration::from_secs(120))
        .output()
}

#[test]
fn pushes_move_the_gate_only_as_far_as_upstream_accepted() {
    for git in Git::all() {
        let dir = Dir::new("gate-push");
        let (root, commit) = setup(&dir, &git, &[]);
        let gate = root.join("gate.git");
        let accepting = Arc::new(FakeForward {
            seen: Mutex::default(),
            answer: Forwarded::Accepted,
        });
        let refusing = Arc::new(FakeForward {
            seen: Mutex::default(),
            answer: Forwarded::Refused("non-fast-forward".into()),
        });
        let with = |forward: &Arc<FakeForward>| Upstreams {
            forward: Some(Arc::clone(forward) as Arc<dyn Forward>),
            ..Upstreams::default()
        };
        // Upstream refuses: the client hears upstream's reason, the gate is unchanged.
        let server = Server::start(&root, with(&refusing));
        for url in server.urls("gate.git") {
            let output = push(&dir, &git, &url, "HEAD:refs/heads/main");
            assert!(!output.status.success(), "{output}");
            let text = output.stdout_text();
            assert!(
                text.contains("[remote rejected] (upstream: non-fast-forward)"),
                "{url}: {output}"
            );
            assert!(refs(&dir, &git, &gate, &["refs/heads/"]).is_empty());
        }
        assert_eq!(ok(refusing.seen.lock(), "lock").len(), 2);
        drop(server);
        // Upstream accepts: the ref moves here too.
        let server = Server::start(&root, with(&accepting));
        for (n, url) in server.urls("gate.git").iter().enumerate() {
            let name = format!("refs/heads/b{n}");
            let output = push(&dir, &git, url, &format!("HEAD:{name}"));
            assert!(output.status.success(), "{output}");
            assert!(
                output.stderr_text().contains("upstream: forwarding"),
                "{output}"
            );
            let here = refs(&dir, &git, &gate, &[&name]);
            assert_eq!(here.get(&name), Some(&commit), "{url}");
        }
        let seen = ok(accepting.seen.lock(), "lock").clone();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0][0].name, "refs/heads/b0");
        fsck(&dir, &git, &gate);
    }
}

#[test]
fn a_gate_without_an_upstream_client_refuses_pushes() {
    let git = Git::newest();
    let dir = Dir::new("gate-no-client");
    let (root, _) = setup(&dir, &git, &[]);
    let server = Server::start(&root, Upstreams::default());
    for url in server.urls("gate.git") {
        let output = push(&dir, &git, &url, "HEAD:refs/heads/main");
        assert!(!output.status.success(), "{output}");
        assert!(
            output
                .stdout_text()
                .contains("(gate has no upstream client)"),
            "{output}"
        );
    }
    assert!(refs(&dir, &git, &root.join("gate.git"), &["refs/"]).is_empty());
}

/// Wait (bounded) until `count` fetches wait for a refresh.
fn until_waiting(refresher: &Refresher, count: usize) {
    let started = Instant::now();
    while refresher.waiting() < count {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} waiting",
            refresher.waiting()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn concurrent_fetches_share_one_refresh_and_http_refreshes_once_per_fetch() {
    let git = Git::newest();
    let dir = Dir::new("gate-refresh");
    let (root, commit) = setup(&dir, &git, &[("packgate.refreshOnFetch", "true")]);
    // Something to fetch: a branch the gate has already.
    let output = dir
        .git(&git)
        .current_dir(&dir.join("work"))
        .args(["push", "-q"])
        .arg(root.join("gate.git"))
        .arg("HEAD:refs/heads/main")
        .run();
    assert!(output.status.success(), "{output}");
    let fake = FakeRefresh::new(false, false);
    let refresher = Arc::new(Refresher::new(
        Arc::clone(&fake) as Arc<dyn Refresh>,
        Duration::from_secs(60),
    ));
    let upstreams = Upstreams {
        refresher: Some(Arc::clone(&refresher)),
        ..Upstreams::default()
    };
    let server = Server::start(&root, upstreams);
    // Four fetches over git:// (v2 and v0) wait on one refresh.
    let clones: Vec<_> = (0..4)
        .map(|n| {
            let version = if n % 2 == 0 { "2" } else { "0" };
            let [git_url, _] = server.urls("gate.git");
            let background = dir
                .git(&git)
                .args([
                    "-c",
                    &format!("protocol.version={version}"),
                    "clone",
                    "-q",
                    "--bare",
                ])
                .arg(git_url)
                .arg(dir.join(&format!("clone-{n}")))
                .spawn();
            (n, background)
        })
        .collect();
    // All four wait on the one refresh in progress before it may end.
    until_waiting(&refresher, 4);
    fake.release();
    for (n, background) in clones {
        let output = background.wait(Duration::from_secs(120));
        assert!(output.status.success(), "{output}");
        let cloned = refs(
            &dir,
            &git,
            &dir.join(&format!("clone-{n}")),
            &["refs/heads/"],
        );
        assert_eq!(cloned.get("refs/heads/main"), Some(&commit));
    }
    let after_git = fake.calls.load(Ordering::SeqCst);
    assert_eq!(after_git, 1, "refreshes for four concurrent fetches");
    // One clone over HTTP with v2 is a GET and two POSTs: one refresh.
    let [_, http_url] = server.urls("gate.git");
    let output = dir
        .git(&git)
        .args(["-c", "protocol.version=2", "clone", "-q", "--bare"])
        .arg(&http_url)
        .arg(dir.join("clone-http"))
        .timeout(Duration::from_secs(120))
        .run();
    assert!(output.status.success(), "{output}");
    assert_eq!(fake.calls.load(Ordering::SeqCst), after_git + 1);
}

#[test]
fn a_failing_refresh_still_serves_what_is_there() {
    let git = Git::newest();
    let dir = Dir::new("gate-refresh-fails");
    let (root, commit) = setup(&dir, &git, &[("packgate.refreshOnFetch", "true")]);
    let output = dir
        .git(&git)
        .current_dir(&dir.join("work"))
        .args(["push", "-q"])
        .arg(root.join("gate.git"))
        .arg("HEAD:refs/heads/main")
        .run();
    assert!(output.status.success(), "{output}");
    let fake = FakeRefresh::new(true, true);
    let upstreams = Upstreams {
        refresher: Some(Arc::new(Refresher::new(
            Arc::clone(&fake) as Arc<dyn Refresh>,
            Duration::from_secs(60),
        ))),
        ..Upstreams::default()
    };
    let server = Server::start(&root, upstreams);
    for (n, url) in server.urls("gate.git").iter().enumerate() {
        let output = dir
            .git(&git)
            .args(["ls-remote", url])
            .timeout(Duration::from_secs(120))
            .run();
        assert!(output.status.success(), "{output}");
        assert!(output.stdout_text().contains(&commit), "{output}");
        assert_eq!(fake.calls.load(Ordering::SeqCst), n + 1);
    }
    drop(server);
}
