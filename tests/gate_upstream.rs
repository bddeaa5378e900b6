//! The gate end to end with the real binary: git clients push to a gated repository served by
//! `packgate serve` (git:// and HTTP) or `packgate daemon`, which forwards to a real upstream
//! (`git daemon --enable=receive-pack`, `packgate serve`, or a local path) with packgate's own
//! push client. The gate's repository lives below a directory whose name has a space.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::{
    daemon::Daemon,
    http::{Push, Server, ServerOptions},
    util::{assert_same_refs, fsck, refs, write_file, Dir, Git, Output},
};

/// The value, or the test fails saying what it got instead.
trait Must<T> {
    fn must(self) -> T;
}

impl<T, E: std::fmt::Debug> Must<T> for Result<T, E> {
    #[track_caller]
    fn must(self) -> T {
        self.unwrap_or_else(|err| panic!("{err:?}"))
    }
}

impl<T> Must<T> for Option<T> {
    #[track_caller]
    fn must(self) -> T {
        self.unwrap_or_else(|| panic!("nothing there"))
    }
}

/// A secret-scanning `pre-receive` (the README's example): refuses a push whose new commits
/// add a line with a private key's header.
const SECRET_HOOK: &str = r#"#!/bin/sh
zero=0000000000000000000000000000000000000000
while read old new ref; do
    test "$new" = "$zero" && continue
    if git log -p --format= "$new" --not --all | grep -q 'BEGIN [A-Z ]*PRIVATE KEY'; then
        echo "secret-scan: $ref adds a private key; push refused" >&2
        exit 1
    fi
done
"#;

/// Where the upstream repository is served from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UpstreamKind {
    /// `git daemon --enable=receive-pack`.
    GitDaemon,
    /// `packgate serve` (git://, `daemon.receivepack=true` in the repository).
    Packgate,
}

/// Keeps an upstream server running (until dropped).
#[allow(dead_code)]
enum Running {
    Git(Daemon),
    Packgate(Server),
}

/// A work tree, an upstream repository and a gate repository with the same history.
struct Setup {
    dir: Dir,
    git: Git,
    work: PathBuf,
    upstream: PathBuf,
    gate_root: PathBuf,
    gate: PathBuf,
}

impl Setup {
    /// `up root/up.git` and `gate root/gate.git`, both with `main` at one commit; the gate
    /// runs the secret scanner and forwards within `timeout` seconds (its upstream is set by
    /// [`Setup::gate_to`]).
    fn new(name: &str, git: &Git, timeout: u32) -> Setup {
        let dir = Dir::new(name);
        let work = dir.join("work");
        let upstream = dir.join("up root/up.git");
        let gate_root = dir.join("gate root");
        let gate = gate_root.join("gate.git");
        dir.git(git)
            .args(["init", "-q", "--bare"])
            .arg(&upstream)
            .run();
        dir.git(git).args(["init", "-q"]).arg(&work).run();
        let setup = Setup {
            dir,
            git: git.clone(),
            work,
            upstream,
            gate_root,
            gate,
        };
        setup.commit("README", "hello\n");
        setup.push_to(
            &setup.upstream.display().to_string(),
            &["HEAD:refs/heads/main"],
        );
        std::fs::create_dir_all(&setup.gate_root).must();
        setup.dir.copy_tree(&setup.upstream, &setup.gate);
        for (key, value) in [
            ("daemon.receivepack", "true"),
            ("receive.advertisePushOptions", "true"),
        ] {
            setup.config(&setup.upstream, key, value);
            setup.config(&setup.gate, key, value);
        }
        setup.config(
            &setup.gate,
            "packgate.upstreamTimeout",
            &timeout.to_string(),
        );
        write_hook(&setup.gate.join("hooks/pre-receive"), SECRET_HOOK);
        // Upstream's own hook: says something (the client must see it as `remote:`) and
        // records the push options it got.
        let options = setup.dir.join("upstream-options");
        write_hook(
            &setup.upstream.join("hooks/pre-receive"),
            &format!(
                "#!/bin/sh\necho 'upstream hook: hello' >&2\n\
                 i=0\nwhile test \"$i\" -lt \"${{GIT_PUSH_OPTION_COUNT:-0}}\"; do\n\
                 eval \"echo \\\"\\$GIT_PUSH_OPTION_$i\\\"\" >>'{}'\n\
                 i=$((i + 1))\ndone\ncat >/dev/null\n",
                options.display()
            ),
        );
        setup
    }

    fn config(&self, repo: &Path, key: &str, value: &str) {
        self.dir
            .git_in(&self.git, repo)
            .args(["config", key, value])
            .run();
    }

    /// Serves the upstream repository; sets the gate's `packgate.upstream` to its URL.
    fn serve_upstream(&self, kind: UpstreamKind) -> Running {
        let root = self.upstream.parent().must();
        let (running, url) = match kind {
            UpstreamKind::GitDaemon => {
                let base_path = format!("--base-path={}", root.display());
                let daemon = Daemon::start_git(
                    &self.dir,
                    &self.git,
                    &["--export-all", "--enable=receive-pack", &base_path],
                );
                let url = daemon.url("/up.git");
                (Running::Git(daemon), url)
            }
            UpstreamKind::Packgate => {
                let server = Server::start(root, Push::Refused);
                let url = server.git_url("up.git");
                (Running::Packgate(server), url)
            }
        };
        self.gate_to(&url);
        running
    }

    fn gate_to(&self, url: &str) {
        self.config(&self.gate, "packgate.upstream", url);
    }

    /// `packgate serve` of the gate's root, pushes allowed over git:// and HTTP.
    fn serve_gate(&self) -> Server {
        Server::start_with(
            &self.gate_root,
            &ServerOptions::new(Push::AllowedWithoutAuthentication),
        )
    }

    /// Commits `content` to `file` in the work tree; the new commit's id.
    fn commit(&self, file: &str, content: &str) -> String {
        write_file(&self.work.join(file), content.as_bytes());
        self.work_git(&["add", file]).run();
        self.work_git(&["commit", "-q", "-m", &format!("change {file}")])
            .run();
        self.rev_parse("HEAD")
    }

    fn rev_parse(&self, what: &str) -> String {
        self.work_git(&["rev-parse", what])
            .run()
            .stdout_text()
            .trim()
            .to_owned()
    }

    fn work_git(&self, args: &[&str]) -> crate::util::Cmd {
        self.dir.git(&self.git).current_dir(&self.work).args(args)
    }

    /// `git push <url> <args>` from the work tree; whatever happened.
    fn push(&self, url: &str, args: &[&str]) -> Output {
        self.work_git(&["push", "--porcelain", url])
            .args(args)
            .timeout(Duration::from_secs(120))
            .output()
    }

    /// [`Setup::push`], which must succeed.
    #[track_caller]
    fn push_to(&self, url: &str, args: &[&str]) -> Output {
        let output = self.push(url, args);
        assert!(output.status.success(), "push to {url} failed: {output}");
        output
    }

    fn refs(&self, repo: &Path) -> std::collections::BTreeMap<String, String> {
        refs(&self.dir, &self.git, repo, &[])
    }

    fn has_object(&self, repo: &Path, id: &str) -> bool {
        self.dir
            .git_in(&self.git, repo)
            .args(["cat-file", "-e", id])
            .output()
            .status
            .success()
    }

    /// Both repositories have the same refs and pass fsck.
    #[track_caller]
    fn assert_in_sync(&self, context: &str) {
        assert_same_refs(&self.refs(&self.gate), &self.refs(&self.upstream), context);
        fsck(&self.dir, &self.git, &self.gate);
        fsck(&self.dir, &self.git, &self.upstream);
    }

    fn upstream_options(&self) -> String {
        std::fs::read_to_string(self.dir.join("upstream-options")).unwrap_or_default()
    }
}

fn write_hook(path: &Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    write_file(path, script.as_bytes());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).must();
}

/// A clean push lands in gate and upstream (upstream's hook output reaches the client); a
/// push with a secret is refused by the gate's scanner and upstream never sees its blob.
#[track_caller]
fn clean_and_secret_pushes(setup: &Setup, url: &str, branch: &str, context: &str) {
    let new = setup.commit(&format!("{branch}.txt"), "clean\n");
    let output = setup.push_to(url, &[&format!("HEAD:refs/heads/{branch}")]);
    let text = output.stderr_text();
    assert!(
        text.contains("remote: upstream hook: hello"),
        "{context}: upstream's hook output did not reach the client: {output}"
    );
    assert_eq!(
        setup
            .refs(&setup.upstream)
            .get(&format!("refs/heads/{branch}")),
        Some(&new),
        "{context}: upstream did not get the push"
    );
    setup.assert_in_sync(&format!("{context}: after a clean push"));

    let before = setup.refs(&setup.upstream);
    setup.commit(
        &format!("{branch}-key.pem"),
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n",
    );
    let blob = setup.rev_parse(&format!("HEAD:{branch}-key.pem"));
    let output = setup.push(url, &[&format!("HEAD:refs/heads/{branch}")]);
    assert!(
        !output.status.success(),
        "{context}: a push with a secret was accepted: {output}"
    );
    let text = output.stderr_text() + &output.stdout_text();
    assert!(
        text.contains("secret-scan: refs/heads/") && text.contains("pre-receive hook declined"),
        "{context}: the scanner's refusal is not what the client saw: {output}"
    );
    assert_same_refs(
        &setup.refs(&setup.upstream),
        &before,
        &format!("{context}: upstream after a refused push"),
    );
    assert!(
        !setup.has_object(&setup.upstream, &blob),
        "{context}: the secret blob reached upstream"
    );
    assert!(
        !setup.has_object(&setup.gate, &blob),
        "{context}: the secret blob stayed in the gate"
    );
    setup.assert_in_sync(&format!("{context}: after a refused push"));
    // The secret is dropped again; the work tree goes on from the accepted commit.
    setup.work_git(&["reset", "-q", "--hard", &new]).run();
}

/// Every git client → `packgate serve` (git:// and HTTP) → `git daemon` and `packgate serve`.
#[test]
fn clean_pushes_land_in_both_and_secrets_reach_neither() {
    for git in Git::all() {
        for kind in [UpstreamKind::GitDaemon, UpstreamKind::Packgate] {
            let setup = Setup::new("gate-up-clean", &git, 30);
            let _upstream = setup.serve_upstream(kind);
            let gate = setup.serve_gate();
            for (transport, url) in [
                ("git://", gate.git_url("gate.git")),
                ("HTTP", gate.http_url("gate.git")),
            ] {
                let context = format!("{git}, {transport} gate, {kind:?} upstream");
                let branch = if transport == "HTTP" { "http" } else { "git" };
                clean_and_secret_pushes(&setup, &url, branch, &context);
            }
        }
    }
}

/// `packgate daemon` as the gate, once.
#[test]
fn packgate_daemon_gates_too() {
    let git = Git::newest();
    let setup = Setup::new("gate-up-daemon", &git, 30);
    let _upstream = setup.serve_upstream(UpstreamKind::GitDaemon);
    let base_path = format!("--base-path={}", setup.gate_root.display());
    let gate = Daemon::start(
        &setup.dir,
        &["--export-all", "--enable=receive-pack", &base_path],
    );
    clean_and_secret_pushes(&setup, &gate.url("/gate.git"), "daemon", "packgate daemon");
}

/// `serve --config` with `upstream = <url>` at the top of the TOML: every repository of the
/// root is gated in front of `<url>/<path below root>`.
#[test]
fn a_toml_upstream_gates_the_root() {
    let git = Git::newest();
    let mut setup = Setup::new("gate-up-toml", &git, 30);
    // Upstream serves the repository under the gate's name.
    let renamed = setup.upstream.with_file_name("gate.git");
    std::fs::rename(&setup.upstream, &renamed).must();
    setup.upstream = renamed;
    let base_path = format!("--base-path={}", setup.upstream.parent().must().display());
    let upstream = Daemon::start_git(
        &setup.dir,
        &git,
        &["--export-all", "--enable=receive-pack", &base_path],
    );
    let toml = setup.dir.join("gate.toml");
    let base_url = upstream.url("");
    write_file(&toml, format!("upstream = \"{base_url}\"\n").as_bytes());
    let mut options = ServerOptions::new(Push::AllowedWithoutAuthentication);
    options.config = Some(toml);
    let gate = Server::start_with(&setup.gate_root, &options);
    for url in [gate.git_url("gate.git"), gate.http_url("gate.git")] {
        let branch = if url.starts_with("http") {
            "toml-http"
        } else {
            "toml-git"
        };
        clean_and_secret_pushes(&setup, &url, branch, &format!("TOML upstream via {url}"));
    }
}

/// A local path with a space as the upstream (the gate runs `packgate receive-pack` on it),
/// absolute and relative: a relative one is relative to the gate's git directory, where git
/// runs a push's hooks (so a `git push ../x.git` in a hook means the same), not to wherever
/// the server was started.
#[test]
fn local_upstream_paths_with_a_space_absolute_and_relative() {
    let git = Git::newest();
    let setup = Setup::new("gate-up-local", &git, 30);
    let gate = setup.serve_gate();
    for (branch, upstream) in [
        ("absolute", setup.upstream.display().to_string()),
        ("relative", "../../up root/up.git".to_owned()),
    ] {
        setup.gate_to(&upstream);
        let context = format!("local upstream {upstream:?}");
        clean_and_secret_pushes(&setup, &gate.git_url("gate.git"), branch, &context);
    }
}

/// Upstream refuses what the gate accepted: a forced non-fast-forward upstream denies, and a
/// push based on a state upstream has moved on from (the gate's lease is stale). The client
/// sees upstream's reason and fails; the gate does not move.
#[test]
fn upstream_refusals_reach_the_client_and_leave_the_gate() {
    for git in Git::all() {
        let setup = Setup::new("gate-up-refuse", &git, 30);
        let _upstream = setup.serve_upstream(UpstreamKind::GitDaemon);
        setup.config(&setup.upstream, "receive.denyNonFastForwards", "true");
        let gate = setup.serve_gate();
        for url in [gate.git_url("gate.git"), gate.http_url("gate.git")] {
            let context = format!("{git} via {url}");
            let base = setup.rev_parse("HEAD");
            setup.commit("ff.txt", &format!("{url}\n"));
            setup.push_to(&url, &["HEAD:refs/heads/main"]);
            setup.assert_in_sync(&format!("{context}: fast-forward"));

            // A forced rewrite: the gate allows it, upstream does not.
            setup.work_git(&["reset", "-q", "--hard", &base]).run();
            setup.commit("rewrite.txt", &format!("{url}\n"));
            let gate_before = setup.refs(&setup.gate);
            let output = setup.push(&url, &["--force", "HEAD:refs/heads/main"]);
            let text = output.stdout_text() + &output.stderr_text();
            assert!(
                !output.status.success()
                    && text.contains("[remote rejected]")
                    && text.contains("(upstream: non-fast-forward)"),
                "{context}: upstream's non-fast-forward refusal did not reach the client: {output}"
            );
            assert_same_refs(
                &setup.refs(&setup.gate),
                &gate_before,
                &format!("{context}: the gate after upstream refused"),
            );
            setup.assert_in_sync(&format!("{context}: after a non-fast-forward"));

            // Upstream moves on behind the gate's back; the gate's lease is then stale.
            let main = setup.refs(&setup.gate)["refs/heads/main"].clone();
            setup.work_git(&["reset", "-q", "--hard", &main]).run();
            let direct = setup.commit("direct.txt", &format!("{url}\n"));
            setup.push_to(
                &setup.upstream.display().to_string(),
                &["HEAD:refs/heads/main"],
            );
            setup.work_git(&["reset", "-q", "--hard", &main]).run();
            setup.commit("through-gate.txt", &format!("{url}\n"));
            let output = setup.push(&url, &["HEAD:refs/heads/main"]);
            let text = output.stdout_text() + &output.stderr_text();
            assert!(
                !output.status.success()
                    && text.contains("[remote rejected]")
                    && text.contains("(upstream: "),
                "{context}: the stale lease's refusal did not reach the client: {output}"
            );
            assert_same_refs(
                &setup.refs(&setup.gate),
                &gate_before,
                &format!("{context}: the gate after a stale lease"),
            );
            assert_eq!(
                setup.refs(&setup.upstream)["refs/heads/main"],
                direct,
                "{context}: upstream's own push was overwritten"
            );
            // Bring the gate level again (its operator's job: here, a direct copy of the ref).
            setup
                .dir
                .git_in(&setup.git, &setup.gate)
                .args(["fetch", "-q"])
                .arg(&setup.upstream)
                .arg("+refs/heads/*:refs/heads/*")
                .run();
            setup.work_git(&["reset", "-q", "--hard", &direct]).run();
            setup.assert_in_sync(&format!("{context}: levelled"));
        }
    }
}

/// A listener that accepts connections and never answers, until dropped.
struct Stalled {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Stalled {
    fn start() -> Stalled {
        let listener = TcpListener::bind("127.0.0.1:0").must();
        listener.set_nonblocking(true).must();
        let port = listener.local_addr().must().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let started = Instant::now();
            while !stopped.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(300) {
                match listener.accept() {
                    Ok((stream, _)) if held.len() < 64 => held.push(stream),
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Stalled { port, stop }
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Upstream down (nothing listens) and stalled (accepts, never answers): with
/// `packgate.upstreamTimeout = 2` the client gets `upstream unreachable` within the timeout
/// and a margin, the gate is unchanged, and once upstream is back the next push works.
#[test]
fn unreachable_and_stalled_upstreams_fail_within_the_timeout() {
    const TIMEOUT: u32 = 2;
    let git = Git::newest();
    let setup = Setup::new("gate-up-down", &git, TIMEOUT);
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").must();
        listener.local_addr().must().port()
    };
    let stalled = Stalled::start();
    let gate = setup.serve_gate();
    for url in [gate.git_url("gate.git"), gate.http_url("gate.git")] {
        for (what, upstream) in [
            ("down", format!("git://127.0.0.1:{closed}/up.git")),
            (
                "stalled",
                format!("git://127.0.0.1:{}/up.git", stalled.port),
            ),
            (
                "stalled HTTP",
                format!("http://127.0.0.1:{}/up.git", stalled.port),
            ),
        ] {
            let context = format!("{what} upstream via {url}");
            setup.gate_to(&upstream);
            let gate_before = setup.refs(&setup.gate);
            let upstream_before = setup.refs(&setup.upstream);
            setup.commit("unreachable.txt", &format!("{context}\n"));
            let started = Instant::now();
            let output = setup.push(&url, &["HEAD:refs/heads/main"]);
            let took = started.elapsed();
            let text = output.stdout_text() + &output.stderr_text();
            assert!(
                !output.status.success()
                    && text.contains("[remote rejected]")
                    && text.contains("(upstream unreachable: "),
                "{context}: the client was not told upstream is unreachable: {output}"
            );
            assert!(
                took < Duration::from_secs(u64::from(TIMEOUT) + 8),
                "{context}: the push took {took:?} with a {TIMEOUT} s timeout"
            );
            assert_same_refs(&setup.refs(&setup.gate), &gate_before, &context);
            assert_same_refs(&setup.refs(&setup.upstream), &upstream_before, &context);
            fsck(&setup.dir, &git, &setup.gate);
        }
    }
    // Upstream is back: the next push goes through at once.
    let _upstream = setup.serve_upstream(UpstreamKind::GitDaemon);
    let started = Instant::now();
    setup.push_to(&gate.git_url("gate.git"), &["HEAD:refs/heads/main"]);
    assert!(started.elapsed() < Duration::from_secs(20));
    setup.assert_in_sync("upstream back");
}

/// An atomic push with push options through the gate: both refs land upstream and upstream's
/// hook sees the options.
#[test]
fn atomic_pushes_carry_push_options_upstream() {
    for git in Git::all() {
        for kind in [UpstreamKind::GitDaemon, UpstreamKind::Packgate] {
            let setup = Setup::new("gate-up-atomic", &git, 30);
            let _upstream = setup.serve_upstream(kind);
            let gate = setup.serve_gate();
            for (n, url) in [gate.git_url("gate.git"), gate.http_url("gate.git")]
                .iter()
                .enumerate()
            {
                let context = format!("{git}, {kind:?} upstream, via {url}");
                let _ = std::fs::remove_file(setup.dir.join("upstream-options"));
                setup.commit("atomic.txt", &format!("{n}\n"));
                setup.push_to(
                    url,
                    &[
                        "--atomic",
                        "-o",
                        "ci.skip",
                        "-o",
                        &format!("reviewer=alice {n}"),
                        "HEAD:refs/heads/main",
                        &format!("HEAD:refs/heads/topic-{n}"),
                    ],
                );
                assert_eq!(
                    setup.upstream_options(),
                    format!("ci.skip\nreviewer=alice {n}\n"),
                    "{context}: upstream's hook did not get the push options"
                );
                setup.assert_in_sync(&context);
            }
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift): a blob that does not compress.
fn random_bytes(len: usize, mut state: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Whether the repository has a quarantine directory (`objects/tmp_objdir-incoming-*`).
fn has_quarantine(repo: &Path) -> bool {
    std::fs::read_dir(repo.join("objects")).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|entry| entry.file_name().to_string_lossy().contains("incoming"))
    })
}

/// A client killed while its pack is being sent pushes nothing upstream; the gate is
/// unchanged and clean, and the next push works at once.
#[test]
fn a_client_killed_mid_push_sends_nothing_upstream() {
    let git = Git::newest();
    let setup = Setup::new("gate-up-kill", &git, 30);
    let _upstream = setup.serve_upstream(UpstreamKind::GitDaemon);
    let gate = setup.serve_gate();
    for url in [gate.git_url("gate.git"), gate.http_url("gate.git")] {
        let context = format!("killed via {url}");
        let main = setup.rev_parse("HEAD");
        let gate_before = setup.refs(&setup.gate);
        let upstream_before = setup.refs(&setup.upstream);
        write_file(
            &setup.work.join("big.bin"),
            &random_bytes(64 << 20, 0x9e37_79b9_7f4a_7c15),
        );
        setup.work_git(&["add", "big.bin"]).run();
        setup.work_git(&["commit", "-q", "-m", "big"]).run();
        let big = setup.rev_parse("HEAD:big.bin");
        let push = setup
            .work_git(&["push", &url, "HEAD:refs/heads/main"])
            .timeout(Duration::from_secs(120))
            .spawn();
        let started = Instant::now();
        while !has_quarantine(&setup.gate) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{context}: no quarantine appeared"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let output = push.kill_group();
        assert!(
            output.signalled().is_some(),
            "{context}: push ended first: {output}"
        );
        // The gate notices the end of its input and cleans up; bounded wait.
        let started = Instant::now();
        while has_quarantine(&setup.gate) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{context}: the quarantine stayed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_same_refs(&setup.refs(&setup.gate), &gate_before, &context);
        assert_same_refs(&setup.refs(&setup.upstream), &upstream_before, &context);
        assert!(
            !setup.has_object(&setup.upstream, &big),
            "{context}: blob upstream"
        );
        assert!(
            !setup.has_object(&setup.gate, &big),
            "{context}: blob in the gate"
        );
        fsck(&setup.dir, &git, &setup.gate);
        fsck(&setup.dir, &git, &setup.upstream);

        setup.work_git(&["reset", "-q", "--hard", &main]).run();
        setup.commit("after-kill.txt", &format!("{url}\n"));
        let started = Instant::now();
        setup.push_to(&url, &["HEAD:refs/heads/main"]);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{context}: the next push was slow"
        );
        setup.assert_in_sync(&format!("{context}: next push"));
    }
}

/// Known gap (ignored until fixed): the gate stops waiting at `packgate.upstreamTimeout` even
/// when the push was already sent and upstream is only slow (here its `pre-receive` sleeps
/// past the timeout). The client is told `upstream unreachable`, the gate does not move, but
/// upstream then accepts: gate and upstream disagree, and every later push through the gate
/// is refused as `stale info` until someone levels them. A fix needs the gate to learn the
/// outcome after sending (wait for the report, or read upstream's refs once it is late).
#[test]
#[ignore = "known gap: a slow upstream accepts after the gate gave up"]
fn a_slow_upstream_that_accepts_late_leaves_gate_and_upstream_agreeing() {
    let git = Git::newest();
    let setup = Setup::new("gate-up-slow", &git, 1);
    write_hook(
        &setup.upstream.join("hooks/pre-receive"),
        "#!/bin/sh\ncat >/dev/null\nsleep 3\n",
    );
    let _upstream = setup.serve_upstream(UpstreamKind::GitDaemon);
    let gate = setup.serve_gate();
    let new = setup.commit("slow.txt", "slow\n");
    let output = setup.push(&gate.git_url("gate.git"), &["HEAD:refs/heads/main"]);
    // Bounded wait for upstream's hook to end and its ref to settle.
    let started = Instant::now();
    while setup.refs(&setup.upstream)["refs/heads/main"] != new
        && started.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_same_refs(
        &setup.refs(&setup.gate),
        &setup.refs(&setup.upstream),
        &format!("gate and upstream after a slow upstream: {output}"),
    );
}

/// A TCP proxy in front of `target` that passes the client's bytes on at about `rate` bytes
/// a second (the answers at full speed): an upstream that is slow to take a pack.
struct Throttle {
    port: u16,
    /// Connections whose both directions have ended.
    finished: Arc<std::sync::atomic::AtomicUsize>,
}

impl Throttle {
    fn start(target: u16, rate: usize) -> Throttle {
        use std::io::{Read, Write};
        use std::net::{Shutdown, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").must();
        let port = listener.local_addr().must().port();
        let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let done = Arc::clone(&finished);
        std::thread::spawn(move || {
            for client in listener.incoming().take(4).filter_map(Result::ok) {
                let upstream = TcpStream::connect(("127.0.0.1", target)).must();
                let done = Arc::clone(&done);
                std::thread::spawn(move || {
                    let (mut answers, mut to_client) =
                        (upstream.try_clone().must(), client.try_clone().must());
                    let back = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut answers, &mut to_client);
                        let _ = to_client.shutdown(Shutdown::Write);
                    });
                    let (mut from_client, mut to_upstream) = (client, upstream);
                    let chunk = 16 * 1024;
                    let mut buf = vec![0; chunk];
                    let started = Instant::now();
                    while started.elapsed() < Duration::from_secs(120) {
                        match from_client.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if to_upstream.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                                // The throttle itself.
                                let pace = n as f64 / rate as f64;
                                std::thread::sleep(Duration::from_secs_f64(pace));
                            }
                        }
                    }
                    let _ = to_upstream.shutdown(Shutdown::Write);
                    let _ = back.join();
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Throttle { port, finished }
    }
}

/// Upstream takes the pack too slowly for `packgate.upstreamTimeout`: the client hears
/// `upstream unreachable` at the timeout, and the gate stops sending, so upstream gets a
/// pack cut short and moves nothing (before, the forward went on and upstream accepted a
/// push the client was told had failed).
#[test]
fn a_forward_cut_off_by_the_timeout_never_lands_upstream() {
    let git = Git::newest();
    let setup = Setup::new("gate-up-throttle", &git, 1);
    let running = setup.serve_upstream(UpstreamKind::GitDaemon);
    let Running::Git(daemon) = &running else {
        unreachable!()
    };
    let daemon_port: u16 = daemon
        .url("")
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .must();
    let throttle = Throttle::start(daemon_port, 4 << 20);
    setup.gate_to(&format!("git://127.0.0.1:{}/up.git", throttle.port));
    let gate = setup.serve_gate();
    let upstream_before = setup.refs(&setup.upstream);
    let gate_before = setup.refs(&setup.gate);
    // 48 MiB that do not compress: about 12 s through the throttle, well past the buffers.
    write_file(
        &setup.work.join("big.bin"),
        &random_bytes(48 << 20, 0x2545_f491_4f6c_dd1d),
    );
    setup.work_git(&["add", "big.bin"]).run();
    setup.work_git(&["commit", "-q", "-m", "big"]).run();
    let big = setup.rev_parse("HEAD:big.bin");
    let output = setup.push(&gate.git_url("gate.git"), &["HEAD:refs/heads/main"]);
    let text = output.stdout_text() + &output.stderr_text();
    assert!(
        !output.status.success() && text.contains("(upstream unreachable: "),
        "the slow forward was not reported as unreachable: {output}"
    );
    // The forward's connection ends (the gate stopped it, or it ran to the end).
    let started = Instant::now();
    while throttle.finished.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the forward's connection did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the forward went on after the gate gave up ({:?})",
        started.elapsed()
    );
    assert_same_refs(&setup.refs(&setup.gate), &gate_before, "the gate");
    assert_same_refs(&setup.refs(&setup.upstream), &upstream_before, "upstream");
    assert!(
        !setup.has_object(&setup.upstream, &big),
        "the blob reached upstream"
    );
    fsck(&setup.dir, &git, &setup.upstream);
}
