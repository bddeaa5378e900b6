//! `cargo xtask bench ssh`: new SSH connections per second for a prefixed `ls-refs`, and the
//! memory of an idle SSH connection, `packgate serve --ssh` against OpenSSH's `sshd` running
//! `git-upload-pack`, serving the same repository in the same run.
//!
//! Both servers listen on 127.0.0.1 (a free port each) with a host key, the same
//! `authorized_keys` (one ed25519 key made with `ssh-keygen`) and the fixture (`many-refs` by
//! default) below a root directory:
//!
//! - `packgate serve ROOT --git off --http off --ssh 127.0.0.1:P --ssh-authorized-keys …
//!   --ssh-host-key …`;
//! - `/usr/sbin/sshd -D -e -f CONFIG`, unprivileged where the bench is (as root it needs
//!   `/run/sshd`, made if missing), its configuration its own: port, host key,
//!   `AuthorizedKeysFile`, public keys only, `AcceptEnv GIT_PROTOCOL`; the client runs git's
//!   `git-upload-pack` (`git --exec-path`) on the repository's absolute path, as git over ssh
//!   to a plain account does.
//!
//! The client is the real `ssh` (`-F /dev/null`, the key, the host key pinned,
//! `StrictHostKeyChecking=yes`). Every loop is bounded in count and time.
//!
//! # Connections per second
//!
//! `--ssh-concurrency C` (default 4) client threads each run `git -c protocol.version=2
//! ls-remote <url> <branch>` back to back for `--duration` seconds (the fixture's `HEAD`
//! branch: git sends `ls-refs` with `ref-prefix <branch>`); each run's output must be the
//! branch's one line. Each is a new SSH connection: handshake, key exchange, public-key
//! authentication, the command, the v2 advertisement and one `ls-refs`. `--runs` runs per
//! server, interleaved; reported: connections per second (median, min–max).
//!
//! # Idle connections
//!
//! `--ssh-connections N` (default 100) `ssh` clients each run the v2 upload-pack command
//! (`SetEnv GIT_PROTOCOL=version=2`), read its advertisement to the flush and leave the
//! session open. The server's memory (RSS and PSS summed over it and its descendants: sshd
//! forks per connection, and runs `git-upload-pack`) before and with all open gives the cost
//! per connection.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};

use super::server::{free_port, memory, read_advertisement, settle, Memory, RunningServer};
use super::{
    build_fixture, build_packgate, copy_dir,
    git::{isolate, path_str, Git},
    measure::median,
    results::{load_average, ServerSection},
    target_dir, workspace_root, BenchArgs,
};

/// The name the fixture is served under, below the root.
const REPO: &str = "many-refs.git";

/// OpenSSH's client and server.
const SSH: &str = "/usr/bin/ssh";
const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";
const SSHD: &str = "/usr/sbin/sshd";

/// After this many failed connections a rate client thread gives up.
const MAX_FAILURES_PER_THREAD: usize = 20;

/// Options of `cargo xtask bench ssh`.
#[derive(clap::Args)]
pub(super) struct SshArgs {
    /// ssh: how many idle SSH sessions to hold open at once.
    #[arg(long = "ssh-connections", value_name = "N", default_value_t = 100)]
    ssh_idle: usize,
    /// ssh: client threads running `git ls-remote` over SSH at once.
    #[arg(long = "ssh-concurrency", value_name = "C", default_value_t = 4)]
    ssh_concurrency: usize,
    /// ssh: seconds of each connection-rate run.
    #[arg(long = "ssh-duration", value_name = "SECONDS", default_value_t = 5.0)]
    ssh_duration: f64,
}

/// One server under test.
struct Target {
    label: &'static str,
    command: String,
    server: RunningServer,
    /// The URL git fetches from.
    url: String,
    /// `--upload-pack` for git, and the program of the idle sessions' command.
    upload_pack: String,
    /// The repository path in the idle sessions' command.
    path: String,
}

/// Runs `cargo xtask bench ssh`.
pub(super) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let options = &args.ssh;
    ensure!(options.ssh_idle > 0, "--ssh-connections must be at least 1");
    ensure!(
        options.ssh_concurrency > 0 && options.ssh_concurrency <= 64,
        "--ssh-concurrency must be between 1 and 64"
    );
    ensure!(
        options.ssh_duration > 0.0 && options.ssh_duration <= 600.0,
        "--ssh-duration must be between 0 and 600 seconds"
    );
    for program in [SSH, SSH_KEYGEN, SSHD] {
        ensure!(
            Path::new(program).exists(),
            "{program} is missing (apt-get install openssh-client openssh-server)"
        );
    }
    let load_before = load_average();
    let root = workspace_root();
    let target = target_dir(&root);
    let git = Git { program: &args.git };
    let packgate = match &args.packgate {
        Some(path) => path.clone(),
        None => build_packgate(&root, &target)?,
    };
    let built = build_fixture(args, &target)?;
    let branch = git
        .run(Some(&built.path), &["symbolic-ref", "HEAD"])?
        .trim()
        .to_owned();
    let expected = git
        .run(Some(&built.path), &["rev-parse", &branch])?
        .trim()
        .to_owned();
    let expected = format!("{expected}\t{branch}");

    let work = target.join(format!("bench-work-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    let repos = work.join("root");
    copy_dir(&built.path, &repos.join(REPO))?;
    let result = measure(args, &git, &packgate, &work, &repos, &branch, &expected);
    let _ = fs::remove_dir_all(&work);
    let (tables, commands) = result?;
    let load_after = load_average();

    println!("{tables}");
    eprintln!("bench: load average before {load_before}, after {load_after}");
    if !args.no_record {
        let file_name = built
            .path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        ServerSection {
            title: "ssh",
            preset: args.preset(),
            fixture: &format!(
                "`{file_name}` (preset `{}`, `git repack -ad`)",
                args.preset()
            ),
            built: &built,
            repo: REPO,
            commands: &commands,
            lines: &[
                format!(
                    "load average (1/5/15 min, shared machine): {load_before} before, \
                     {load_after} after"
                ),
                format!(
                    "connections: {} client threads, {} runs of {} s per server, interleaved; \
                     each a new `ssh` running `git -c protocol.version=2 ls-remote URL {branch}` \
                     (output checked)",
                    options.ssh_concurrency, args.runs, options.ssh_duration
                ),
                format!(
                    "idle: {} `ssh` sessions, each read its v2 advertisement and left open; \
                     server memory from `/proc/PID/smaps_rollup` over the server and its \
                     descendants; per connection = (after − before) / sessions",
                    options.ssh_idle
                ),
            ],
            tables: &tables,
        }
        .append(&git, &root)?;
    }
    eprintln!("bench: done in {:.1?}", started.elapsed());
    Ok(())
}

/// Starts both servers and measures them; the tables and the server command lines.
fn measure(
    args: &BenchArgs,
    git: &Git<'_>,
    packgate: &Path,
    work: &Path,
    repos: &Path,
    branch: &str,
    expected: &str,
) -> anyhow::Result<(String, Vec<String>)> {
    let options = &args.ssh;
    let key = work.join("client_key");
    keygen(&key, "bench")?;
    let authorized = work.join("authorized_keys");
    fs::copy(key.with_extension("pub"), &authorized).context("authorized_keys")?;
    let exec_path = git.run(None, &["--exec-path"])?.trim().to_owned();
    let targets = start_targets(packgate, work, repos, &authorized, &exec_path)?;
    let known_hosts = work.join("known_hosts");
    let mut pinned = String::new();
    for (target, host_key) in &targets {
        let public = output_of(Command::new(SSH_KEYGEN).arg("-y").arg("-f").arg(host_key))?;
        let _ = writeln!(
            pinned,
            "[127.0.0.1]:{} {}",
            target.server.addr.port(),
            public.trim()
        );
    }
    fs::write(&known_hosts, pinned).context("known_hosts")?;
    let ssh_command = format!(
        "{SSH} -F /dev/null -i {} -o IdentitiesOnly=yes -o BatchMode=yes \
         -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
        path_str(&key)?,
        path_str(&known_hosts)?
    );
    let targets: Vec<Target> = targets.into_iter().map(|(target, _)| target).collect();
    // The warm-up: one checked connection each.
    for target in &targets {
        let output = ls_remote(git, &ssh_command, target, branch)?;
        ensure!(
            output.trim() == expected,
            "{}: ls-remote said {output:?}, expected {expected:?}",
            target.label
        );
    }

    let mut rates: Vec<Vec<(usize, usize, Duration)>> =
        targets.iter().map(|_| Vec::new()).collect();
    for run in 0..args.runs {
        for (index, target) in targets.iter().enumerate() {
            let (done, failed, elapsed) =
                rate_run(git, &ssh_command, target, branch, expected, options);
            eprintln!(
                "bench: ssh: run {}/{} {}: {done} connections in {elapsed:.2?} ({:.1}/s), \
                 {failed} failed",
                run + 1,
                args.runs,
                target.label,
                done as f64 / elapsed.as_secs_f64()
            );
            rates[index].push((done, failed, elapsed));
            settle(&target.server);
        }
    }

    let mut idle = Vec::new();
    for target in &targets {
        settle(&target.server);
        let before = memory(target.server.pid);
        eprintln!(
            "bench: ssh: {}: opening {} idle sessions…",
            target.label, options.ssh_idle
        );
        let mut clients = Vec::new();
        let mut failed = 0;
        for _ in 0..options.ssh_idle {
            match idle_session(&ssh_command, target) {
                Ok(child) => clients.push(IdleClient(child)),
                Err(err) => {
                    failed += 1;
                    eprintln!("bench: ssh: {}: idle session failed: {err:#}", target.label);
                    if failed > MAX_FAILURES_PER_THREAD {
                        break;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        let during = memory(target.server.pid);
        idle.push((before, during, clients.len(), failed));
        drop(clients);
        settle(&target.server);
    }
    for target in &targets {
        target.server.check_alive()?;
    }
    let tables = tables(&targets, &rates, &idle);
    Ok((tables, targets.iter().map(|t| t.command.clone()).collect()))
}

/// Starts packgate and sshd on `repos`; each with its host key file.
fn start_targets(
    packgate: &Path,
    work: &Path,
    repos: &Path,
    authorized: &Path,
    exec_path: &str,
) -> anyhow::Result<Vec<(Target, PathBuf)>> {
    let repos_str = path_str(repos)?;
    let mut targets = Vec::new();

    let port = free_port()?;
    let host_key = work.join("packgate_host_key");
    let arguments = vec![
        "serve".to_owned(),
        repos_str.clone(),
        "--git".to_owned(),
        "off".to_owned(),
        "--http".to_owned(),
        "off".to_owned(),
        "--ssh".to_owned(),
        format!("127.0.0.1:{port}"),
        "--ssh-authorized-keys".to_owned(),
        path_str(authorized)?,
        "--ssh-host-key".to_owned(),
        path_str(&host_key)?,
    ];
    let server = RunningServer::start(packgate, &arguments, &work.join("packgate.log"), port)?;
    let command = format!("packgate {}", arguments.join(" "));
    eprintln!("bench: ssh: {command} (pid {})", server.pid);
    targets.push((
        Target {
            label: "packgate",
            command,
            url: format!("ssh://127.0.0.1:{port}/{REPO}"),
            upload_pack: "git-upload-pack".to_owned(),
            path: format!("/{REPO}"),
            server,
        },
        host_key,
    ));

    let port = free_port()?;
    let host_key = work.join("sshd_host_key");
    keygen(&host_key, "sshd")?;
    // As root, sshd wants its privilege separation directory.
    if Path::new("/run").exists() && !Path::new("/run/sshd").exists() {
        let _ = fs::create_dir_all("/run/sshd");
    }
    let config = work.join("sshd_config");
    fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
             PidFile none\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             AcceptEnv GIT_PROTOCOL\nMaxStartups 1000\nMaxSessions 1000\nLogLevel ERROR\n",
            path_str(&host_key)?,
            path_str(authorized)?
        ),
    )
    .context("sshd_config")?;
    let arguments = vec![
        "-D".to_owned(),
        "-e".to_owned(),
        "-f".to_owned(),
        path_str(&config)?,
    ];
    let server = RunningServer::start(Path::new(SSHD), &arguments, &work.join("sshd.log"), port)?;
    let command = format!(
        "sshd {} (git-upload-pack of {exec_path})",
        arguments.join(" ")
    );
    eprintln!("bench: ssh: {command} (pid {})", server.pid);
    let repo = format!("{repos_str}/{REPO}");
    targets.push((
        Target {
            label: "sshd + git-upload-pack",
            command,
            url: format!("ssh://127.0.0.1:{port}{repo}"),
            upload_pack: format!("{exec_path}/git-upload-pack"),
            path: repo,
            server,
        },
        host_key,
    ));
    Ok(targets)
}

/// An ed25519 key pair at `path` and `path.pub`.
fn keygen(path: &Path, comment: &str) -> anyhow::Result<()> {
    output_of(
        Command::new(SSH_KEYGEN)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
    )?;
    Ok(())
}

/// Runs `command`; its standard output, or an error with its standard error.
fn output_of(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `git ls-remote` of `branch` over a new SSH connection to `target`.
fn ls_remote(
    git: &Git<'_>,
    ssh_command: &str,
    target: &Target,
    branch: &str,
) -> anyhow::Result<String> {
    let mut command = Command::new(git.program);
    isolate(&mut command);
    command
        .env("GIT_SSH_COMMAND", ssh_command)
        .args(["-c", "protocol.version=2", "ls-remote", "--upload-pack"])
        .arg(&target.upload_pack)
        .arg(&target.url)
        .arg(branch);
    output_of(&mut command)
}

/// One connection-rate run against `target`: (connections, failures, elapsed).
fn rate_run(
    git: &Git<'_>,
    ssh_command: &str,
    target: &Target,
    branch: &str,
    expected: &str,
    options: &SshArgs,
) -> (usize, usize, Duration) {
    let done = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let duration = Duration::from_secs_f64(options.ssh_duration);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..options.ssh_concurrency {
            scope.spawn(|| {
                let mut failures = 0;
                while started.elapsed() < duration && !stop.load(Ordering::Relaxed) {
                    match ls_remote(git, ssh_command, target, branch) {
                        Ok(output) if output.trim() == expected => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        outcome => {
                            failures += 1;
                            failed.fetch_add(1, Ordering::Relaxed);
                            if failures == 1 {
                                eprintln!("bench: ssh: {}: {outcome:?}", target.label);
                            }
                            if failures >= MAX_FAILURES_PER_THREAD {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                }
            });
        }
    });
    (done.into_inner(), failed.into_inner(), started.elapsed())
}

/// An `ssh` client holding a session open; killed when dropped.
struct IdleClient(Child);

impl Drop for IdleClient {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A v2 upload-pack session over a new `ssh`, its advertisement read.
fn idle_session(ssh_command: &str, target: &Target) -> anyhow::Result<Child> {
    let mut words = ssh_command.split(' ');
    let program = words.next().unwrap_or(SSH);
    let mut command = Command::new(program);
    command
        .args(words)
        .args(["-o", "SetEnv=GIT_PROTOCOL=version=2", "-p"])
        .arg(target.server.addr.port().to_string())
        .arg("127.0.0.1")
        .arg(format!("{} '{}'", target.upload_pack, target.path))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().context("starting ssh")?;
    let read = match child.stdout.as_mut() {
        Some(stdout) => read_advertisement(stdout),
        None => Err(anyhow::anyhow!("no standard output")),
    };
    match read {
        Ok(_) => Ok(child),
        Err(err) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(err)
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The connection-rate and idle tables.
fn tables(
    targets: &[Target],
    rates: &[Vec<(usize, usize, Duration)>],
    idle: &[(Memory, Memory, usize, usize)],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| server | new SSH connections/s with ls-refs (median) | min–max | failed |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for (target, runs) in targets.iter().zip(rates) {
        let mut per_second: Vec<f64> = runs
            .iter()
            .map(|(done, _, elapsed)| *done as f64 / elapsed.as_secs_f64())
            .collect();
        let min = per_second.iter().copied().fold(f64::INFINITY, f64::min);
        let max = per_second.iter().copied().fold(0.0, f64::max);
        let failed: usize = runs.iter().map(|(_, failed, _)| failed).sum();
        let _ = writeln!(
            out,
            "| {} | {:.1} | {min:.1}–{max:.1} | {failed} |",
            target.label,
            median(&mut per_second)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| server | idle sessions | RSS per session | PSS per session | RSS with them | \
         processes | threads | failed |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (target, (before, during, open, failed)) in targets.iter().zip(idle) {
        let per = |after: u64, before: u64| {
            if *open == 0 {
                0.0
            } else {
                after.saturating_sub(before) as f64 / *open as f64
            }
        };
        let _ = writeln!(
            out,
            "| {} | {open} | {:.0} KiB | {:.0} KiB | {:.1} MiB | {} | {} | {failed} |",
            target.label,
            per(during.rss_kib, before.rss_kib),
            per(during.pss_kib, before.pss_kib),
            mib(during.rss_kib),
            during.processes,
            during.threads
        );
    }
    out
}
