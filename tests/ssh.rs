//! `packgate serve --ssh`: git over the real OpenSSH client (`ssh`, keys made by
//! `ssh-keygen`, the host key pinned from the file serve wrote, `StrictHostKeyChecking=yes`):
//! clone, fetch and push over v2 and v0 with every git; an unknown key, other commands, a
//! shell, port forwarding and a path outside the root refused; a push whose input ends
//! mid-pack, or whose `ssh` is killed mid-pack, leaves nothing; the access policy decides
//! the same over SSH and HTTP; idle v2 sessions hold no thread; serve prints the host key's
//! fingerprint as OpenSSH computes it.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a failure is the test failing.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use crate::{
    receive_pack::{
        quarantines, setup_with_partial_request, temporary_pack_size, wait_until, Snapshot,
        END_LIMIT,
    },
    util::{fsck, refs, Cmd, Dir, Git, PACKGATE},
};

/// `ssh` and `ssh-keygen` (the `openssh-client` package).
const SSH: &str = "/usr/bin/ssh";
const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";

/// A running `packgate serve` with only the SSH front-end, killed when dropped.
struct SshServer {
    child: Child,
    port: u16,
    /// The client's private key, whose public half is in the authorized keys as `alice`.
    key: PathBuf,
    /// `known_hosts` with the server's host key.
    known_hosts: PathBuf,
    /// The HTTP front-end's port, if it was started.
    http_port: Option<u16>,
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new ed25519 key pair at `path` (and `path.pub`) with `comment`.
fn keygen(path: &Path, comment: &str) {
    assert!(
        Path::new(SSH_KEYGEN).exists() && Path::new(SSH).exists(),
        "the ssh tests need the OpenSSH client (apt-get install openssh-client)"
    );
    Cmd::new(Path::new(SSH_KEYGEN))
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .run();
}

impl SshServer {
    /// Serve `root` over SSH for one user, `alice`, whose key is made here in `dir`.
    fn start(dir: &Dir, root: &Path) -> SshServer {
        SshServer::start_with(dir, root, &[], &[])
    }

    /// [`SshServer::start`] with more arguments for `serve`.
    /// `more_keys`: public key files authorized too.
    fn start_with(
        dir: &Dir,
        root: &Path,
        args: &[&std::ffi::OsStr],
        more_keys: &[PathBuf],
    ) -> SshServer {
        SshServer::start_full(dir, root, args, more_keys, None)
    }

    /// [`SshServer::start_with`], with the HTTP front-end too if `http_credentials` names a
    /// credentials file for it.
    fn start_full(
        dir: &Dir,
        root: &Path,
        args: &[&std::ffi::OsStr],
        more_keys: &[PathBuf],
        http_credentials: Option<&Path>,
    ) -> SshServer {
        let key = dir.join("alice_key");
        keygen(&key, "alice");
        let authorized = dir.join("authorized_keys");
        let mut keys = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        for more in more_keys {
            keys.push_str(&std::fs::read_to_string(more).unwrap());
        }
        std::fs::write(&authorized, keys).unwrap();
        let host_key = dir.join("host_key");
        let mut child = Command::new(PACKGATE)
            .args(["serve", "--git", "off", "--ssh", "127.0.0.1:0", "--http"])
            .args(match http_credentials {
                Some(credentials) => vec![
                    std::ffi::OsStr::new("127.0.0.1:0"),
                    std::ffi::OsStr::new("--http-credentials"),
                    credentials.as_os_str(),
                ],
                None => vec![std::ffi::OsStr::new("off")],
            })
            .arg("--ssh-authorized-keys")
            .arg(&authorized)
            .arg("--ssh-host-key")
            .arg(&host_key)
            .args(args)
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start packgate serve: {err}"));
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line.clone()).is_err() {
                    eprintln!("{line}");
                }
            }
        });
        let (mut port, mut http_port, mut fingerprint) = (None, None, None);
        while port.is_none() || (http_credentials.is_some() && http_port.is_none()) {
            let line = receiver
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|err| panic!("packgate serve printed no ready line: {err}"));
            let port_of = |scheme: &str| {
                line.split(scheme).nth(1).map(|address| {
                    let address = address.split_whitespace().next().unwrap();
                    address.rsplit(':').next().unwrap().parse::<u16>().unwrap()
                })
            };
            if let Some(shown) = line.split(" key fingerprint is ").nth(1) {
                fingerprint = Some(shown.to_owned());
            }
            port = port.or(port_of(" on ssh://"));
            http_port = http_port.or(port_of(" on http://"));
        }
        let port = port.unwrap();
        drop(receiver);
        // The host key was written before the listener was ready; pin it.
        let metadata = std::fs::metadata(&host_key).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        }
        let public = Cmd::new(Path::new(SSH_KEYGEN))
            .arg("-y")
            .arg("-f")
            .arg(&host_key)
            .run()
            .stdout_text();
        // serve printed the fingerprint OpenSSH computes for the key.
        let listed = Cmd::new(Path::new(SSH_KEYGEN))
            .arg("-lf")
            .arg(&host_key)
            .run()
            .stdout_text();
        let fingerprint =
            fingerprint.unwrap_or_else(|| panic!("serve printed no host key fingerprint"));
        assert_eq!(
            listed.split_whitespace().nth(1),
            Some(fingerprint.as_str()),
            "{listed}"
        );
        let known_hosts = dir.join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{port} {}\n", public.trim()),
        )
        .unwrap();
        SshServer {
            child,
            port,
            key,
            known_hosts,
            http_port,
        }
    }

    /// The `ssh` command line git runs (`GIT_SSH_COMMAND`), with `key`.
    fn ssh_command_with(&self, key: &Path) -> String {
        format!(
            "{SSH} -F /dev/null -i {} -o IdentitiesOnly=yes -o BatchMode=yes \
             -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -p {}",
            key.display(),
            self.known_hosts.display(),
            self.port
        )
    }

    fn ssh_command(&self) -> String {
        self.ssh_command_with(&self.key)
    }

    /// `ssh` itself, with the key and the pinned host key, to 127.0.0.1.
    fn ssh(&self, args: &[&str]) -> Cmd {
        let command = self.ssh_command();
        let mut words = command.split(' ');
        let program = words.next().unwrap();
        Cmd::new(Path::new(program))
            .args(words)
            .args(args)
            .timeout(Duration::from_secs(30))
    }

    fn url(&self, path: &str) -> String {
        format!("ssh://alice@127.0.0.1/{path}")
    }
}

/// A `git` command that reaches the server through `ssh`.
fn git_over_ssh(dir: &Dir, git: &Git, server: &SshServer, version: u8) -> Cmd {
    dir.git(git)
        .env("GIT_SSH_COMMAND", server.ssh_command())
        .arg("-c")
        .arg(format!("protocol.version={version}"))
}

/// A pre-receive hook in `repo` that writes `$REMOTE_USER` to the file returned.
fn write_user_hook(dir: &Dir, repo: &Path) -> PathBuf {
    let seen = dir.join("remote-user");
    let hook = repo.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat >/dev/null\necho \"$REMOTE_USER\" > '{}'\n",
            seen.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    seen
}

#[test]
fn clone_fetch_and_push_over_v2_and_v0() {
    for git in Git::all() {
        for version in [2u8, 0] {
            let dir = Dir::new("ssh-git");
            let root = dir.join("root");
            std::fs::create_dir_all(&root).unwrap();
            dir.git(&git)
                .args(["init", "-q", "--bare"])
                .arg(root.join("project.git"))
                .run();
            let seen = write_user_hook(&dir, &root.join("project.git"));
            let server = SshServer::start(&dir, &root);
            let context = format!("{git}, protocol v{version}");

            // Push a new branch into the empty repository (scp-like path: below the root).
            dir.git(&git).args(["init", "-q", "work"]).run();
            let work = dir.join("work");
            for i in 0..3 {
                std::fs::write(work.join(format!("f{i}")), format!("{i}\n")).unwrap();
                dir.git(&git).current_dir(&work).args(["add", "."]).run();
                dir.git(&git)
                    .current_dir(&work)
                    .args(["commit", "-q", "-m", &format!("c{i}")])
                    .run();
            }
            let push = git_over_ssh(&dir, &git, &server, version)
                .current_dir(&work)
                .args(["push", "alice@127.0.0.1:project.git", "master"])
                .output();
            assert!(push.status.success(), "{context}: {push}");
            // The key's user (its comment) reaches the hooks.
            assert_eq!(std::fs::read_to_string(&seen).unwrap(), "alice\n");
            fsck(&dir, &git, &root.join("project.git"));
            assert_eq!(
                refs(&dir, &git, &root.join("project.git"), &[]),
                refs(&dir, &git, &work.join(".git"), &["refs/heads/master"]),
                "{context}"
            );

            // Clone it back (ssh:// URL with a leading slash: below the root too).
            git_over_ssh(&dir, &git, &server, version)
                .args(["clone", "-q", &server.url("project.git"), "clone"])
                .run();
            fsck(&dir, &git, &dir.join("clone/.git"));

            // A new commit pushed, then fetched.
            std::fs::write(work.join("more"), "more\n").unwrap();
            dir.git(&git).current_dir(&work).args(["add", "."]).run();
            dir.git(&git)
                .current_dir(&work)
                .args(["commit", "-q", "-m", "more"])
                .run();
            git_over_ssh(&dir, &git, &server, version)
                .current_dir(&work)
                .args(["push", "-q", &server.url("project.git"), "master"])
                .run();
            let fetch = git_over_ssh(&dir, &git, &server, version)
                .current_dir(&dir.join("clone"))
                .args(["fetch", "origin"])
                .output();
            assert!(fetch.status.success(), "{context}: {fetch}");
            assert_eq!(
                refs(
                    &dir,
                    &git,
                    &dir.join("clone/.git"),
                    &["refs/remotes/origin/master"]
                )
                .into_values()
                .collect::<Vec<_>>(),
                refs(&dir, &git, &work.join(".git"), &["refs/heads/master"])
                    .into_values()
                    .collect::<Vec<_>>(),
                "{context}"
            );
            fsck(&dir, &git, &dir.join("clone/.git"));
        }
    }
}

#[test]
fn unknown_keys_other_commands_and_paths_outside_the_root_are_refused() {
    let git = Git::newest();
    let dir = Dir::new("ssh-refused");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    dir.git(&git)
        .args(["init", "-q", "--bare"])
        .arg(root.join("project.git"))
        .run();
    // A repository beside the root, which no path may reach.
    dir.git(&git)
        .args(["init", "-q", "--bare"])
        .arg(dir.join("outside.git"))
        .run();
    let server = SshServer::start(&dir, &root);

    // A key that is not in the authorized keys.
    let stranger = dir.join("stranger_key");
    keygen(&stranger, "mallory");
    let output = dir
        .git(&git)
        .env("GIT_SSH_COMMAND", server.ssh_command_with(&stranger))
        .args(["ls-remote", &server.url("project.git")])
        .output();
    assert!(!output.status.success(), "{output}");
    assert!(
        output
            .stderr_text()
            .contains("Permission denied (publickey)"),
        "{output}"
    );

    // The known key works for git...
    let output = dir
        .git(&git)
        .env("GIT_SSH_COMMAND", server.ssh_command())
        .args(["ls-remote", &server.url("project.git")])
        .output();
    assert!(output.status.success(), "{output}");

    // ...and for nothing else: a command, a shell, a subsystem, port forwarding.
    let output = server.ssh(&["127.0.0.1", "ls", "-la"]).output();
    assert_eq!(output.status.code(), Some(128), "{output}");
    assert!(
        output
            .stderr_text()
            .contains("fatal: unrecognized command 'ls -la'"),
        "{output}"
    );
    let output = server.ssh(&["-T", "127.0.0.1"]).output();
    assert_eq!(output.status.code(), Some(128), "{output}");
    assert!(
        output
            .stderr_text()
            .contains("fatal: Interactive git shell is not enabled."),
        "{output}"
    );
    let output = server.ssh(&["-s", "127.0.0.1", "sftp"]).output();
    assert_eq!(output.status.code(), Some(128), "{output}");
    let forward = format!("127.0.0.1:{}", server.port);
    let output = server.ssh(&["-W", &forward, "127.0.0.1"]).output();
    assert!(!output.status.success(), "{output}");
    assert!(output.stderr_text().contains("open failed"), "{output}");

    // Paths that climb out of the root, absolute or relative, and other users' homes.
    for path in [
        "../outside.git",
        "/../outside.git",
        "~/../outside.git",
        "~bob/project.git",
    ] {
        let output = dir
            .git(&git)
            .env("GIT_SSH_COMMAND", server.ssh_command())
            .args(["ls-remote", &format!("alice@127.0.0.1:{path}")])
            .output();
        assert!(!output.status.success(), "{path}: {output}");
        assert!(output.stderr_text().contains("fatal:"), "{path}: {output}");
    }
}

#[test]
fn a_push_cut_off_mid_pack_leaves_nothing() {
    let git = Git::newest();
    let (setup, request) = setup_with_partial_request("ssh-cut", &git);
    let before = Snapshot::of(&setup.dir, &git, &setup.server);
    let server = SshServer::start(&setup.dir, setup.dir.path());
    // The commands and half the pack, then the end of the input: the client went away.
    let output = server
        .ssh(&["127.0.0.1", "git-receive-pack '/server.git'"])
        .stdin(request)
        .output();
    assert!(!output.panicked(), "{output}");
    // The exit status comes after the session ended, so its cleanup is done.
    before.assert_unchanged(&setup.dir, &git, &setup.server, "push cut off over ssh");
}

/// The real `ssh` client is killed (SIGKILL) while the server reads the pack: it has the
/// commands and half the pack, and the writer feeding `ssh` holds the rest back, so the kill
/// lands mid-pack every time. Nothing is published, the quarantine goes, and the next push
/// works at once.
#[test]
fn killing_the_ssh_client_mid_pack_leaves_nothing() {
    for git in Git::all() {
        let (setup, request) = setup_with_partial_request("ssh-kill", &git);
        let before = Snapshot::of(&setup.dir, &git, &setup.server);
        let server = SshServer::start(&setup.dir, setup.dir.path());
        let context = format!("ssh killed mid-pack, {git}");
        let request_file = setup.dir.join("request");
        std::fs::write(&request_file, &request).unwrap();
        let (writer, pipe) = Cmd::new(Path::new("/bin/sh"))
            .args(["-c", "cat \"$0\" && exec sleep 600"])
            .arg(&request_file)
            .spawn_with_stdout();
        let mut ssh = server
            .ssh(&["127.0.0.1", "git-receive-pack '/server.git'"])
            .stdin_from(pipe)
            .spawn();
        wait_until(END_LIMIT, "the pack to arrive over ssh", || {
            temporary_pack_size(&setup.server).is_some() || ssh.has_exited()
        });
        assert!(!ssh.has_exited(), "{context}: {}", ssh.kill_group());
        let killed = ssh.kill_group();
        assert_eq!(killed.signalled(), Some(9), "{context}: {killed}");
        drop(writer);
        // The next push, at once: no lock or quarantine of the killed one is in its way.
        let tip = refs(
            &setup.dir,
            &git,
            &setup.client.join(".git"),
            &["refs/heads/master"],
        );
        let push = git_over_ssh(&setup.dir, &git, &server, 0)
            .current_dir(&setup.client)
            .args([
                "push",
                &server.url("server.git"),
                "master:refs/heads/pushed",
            ])
            .output();
        assert!(push.status.success(), "{context}: {push}");
        // The killed session cleans up by itself.
        wait_until(END_LIMIT, "the killed push's quarantine to go", || {
            quarantines(&setup.server).is_empty()
        });
        fsck(&setup.dir, &git, &setup.server);
        let mut expected = before.refs.clone();
        expected.insert(
            "refs/heads/pushed".to_owned(),
            tip.into_values().next().unwrap(),
        );
        assert_eq!(
            refs(&setup.dir, &git, &setup.server, &[]),
            expected,
            "{context}"
        );
    }
}

/// A `GIT_SSH_COMMAND` named `ssh` (so git passes `GIT_PROTOCOL` as to ssh) that runs
/// `packgate shell` as sshd would for a forced command: the remote command in
/// `SSH_ORIGINAL_COMMAND`.
fn shell_shim(dir: &Dir, root: &Path) -> PathBuf {
    let shim_dir = dir.join("shim");
    std::fs::create_dir_all(&shim_dir).unwrap();
    let shim = shim_dir.join("ssh");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nfor last; do :; done\nSSH_ORIGINAL_COMMAND=\"$last\" exec {PACKGATE} \
             shell --user alice --root '{}'\n",
            root.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    shim
}

#[test]
fn packgate_shell_runs_git_services_only() {
    for git in Git::all() {
        let dir = Dir::new("ssh-shell");
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let repo = root.join("project.git");
        dir.git(&git)
            .args(["init", "-q", "--bare"])
            .arg(&repo)
            .run();
        // The user reaches the hooks.
        let seen = write_user_hook(&dir, &repo);
        let shim = shell_shim(&dir, &root);
        dir.git(&git).args(["init", "-q", "work"]).run();
        let work = dir.join("work");
        dir.git(&git)
            .current_dir(&work)
            .args(["commit", "-q", "--allow-empty", "-m", "one"])
            .run();
        let over_shell = |version: u8| {
            dir.git(&git)
                .env("GIT_SSH_COMMAND", &shim)
                .arg("-c")
                .arg(format!("protocol.version={version}"))
        };
        let push = over_shell(0)
            .current_dir(&work)
            .args(["push", "host:project.git", "master"])
            .output();
        assert!(push.status.success(), "{git}: {push}");
        assert_eq!(std::fs::read_to_string(&seen).unwrap(), "alice\n");
        fsck(&dir, &git, &repo);
        for version in [2u8, 0] {
            let clone = format!("clone-v{version}");
            over_shell(version)
                .args(["clone", "-q", "ssh://host/project.git", &clone])
                .run();
            assert_eq!(
                refs(
                    &dir,
                    &git,
                    &dir.join(&clone).join(".git"),
                    &["refs/heads/master"]
                ),
                refs(&dir, &git, &repo, &["refs/heads/master"]),
                "{git}: v{version}"
            );
        }
        // What git-shell refuses, with its words and status.
        for (command, message) in [
            ("ls", "fatal: unrecognized command 'ls'"),
            ("git-upload-pack 'a' 'b'", "fatal: bad argument"),
        ] {
            let output = dir
                .packgate()
                .args(["shell", "--root"])
                .arg(&root)
                .env("SSH_ORIGINAL_COMMAND", command)
                .output();
            assert_eq!(output.status.code(), Some(128), "{output}");
            assert!(output.stderr_text().contains(message), "{output}");
        }
        // The policy of a serve configuration, for --user.
        let config = dir.join("packgate.toml");
        std::fs::write(
            &config,
            "[[ssh.access]]\npath = \"*\"\nread = [\"*\"]\nwrite = [\"alice\"]\n",
        )
        .unwrap();
        let as_user = |user: &str, command: &str| {
            dir.packgate()
                .args(["shell", "--user", user, "--config"])
                .arg(&config)
                .arg("--root")
                .arg(&root)
                .env("SSH_ORIGINAL_COMMAND", command)
                .output()
        };
        let output = as_user("bob", "git-receive-pack 'project.git'");
        assert_eq!(output.status.code(), Some(128), "{output}");
        assert!(
            output
                .stderr_text()
                .contains("fatal: bob may not push to '/project.git'"),
            "{output}"
        );
        // bob may read: the advertisement comes, then the input ends.
        let output = as_user("bob", "git-upload-pack 'project.git'");
        assert!(output.status.success(), "{output}");
        assert!(
            output.stdout_text().contains("refs/heads/master"),
            "{output}"
        );
        let output = dir.packgate().args(["shell", "--root"]).arg(&root).output();
        assert_eq!(output.status.code(), Some(128), "{output}");
        assert!(
            output
                .stderr_text()
                .contains("Interactive git shell is not enabled."),
            "{output}"
        );
        let output = over_shell(2)
            .args(["ls-remote", "host:../project.git"])
            .output();
        assert!(!output.status.success(), "{output}");
    }
}

#[test]
fn connections_that_do_not_authenticate_in_time_are_closed() {
    use std::io::{Read, Write};
    let dir = Dir::new("ssh-init-timeout");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let config = dir.join("packgate.toml");
    std::fs::write(&config, "[ssh]\ninit-timeout = 1\n").unwrap();
    let server = SshServer::start_with(
        &dir,
        &root,
        &[std::ffi::OsStr::new("--config"), config.as_os_str()],
        &[],
    );
    // Silent from the start, and silent after the identification line.
    for greeting in [&b""[..], b"SSH-2.0-silent\r\n"] {
        let started = std::time::Instant::now();
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(greeting).unwrap();
        let mut received = Vec::new();
        // Ends when the server closes the connection (or after the read timeout: a failure).
        let end = stream.read_to_end(&mut received);
        assert!(
            end.is_ok()
                || end
                    .as_ref()
                    .is_err_and(|err| err.kind() == std::io::ErrorKind::ConnectionReset),
            "{end:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "closed after {:?}",
            started.elapsed()
        );
        assert!(received.starts_with(b"SSH-2.0-packgate"), "{received:?}");
    }
}

/// The access-policy tests' setup: `root` with `team/project.git` and `secret.git`, a key
/// for bob, and a TOML whose policy lets everyone read the team's repositories, the
/// `writers` group (alice) push to them, and only alice read the secret one.
fn access_fixture(dir: &Dir) -> (PathBuf, PathBuf, PathBuf) {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("team")).unwrap();
    for repo in ["team/project.git", "secret.git"] {
        dir.git(&Git::newest())
            .args(["init", "-q", "--bare"])
            .arg(root.join(repo))
            .run();
    }
    let bob = dir.join("bob_key");
    keygen(&bob, "bob");
    let config = dir.join("packgate.toml");
    std::fs::write(
        &config,
        "[ssh.groups]\nwriters = [\"alice\"]\n\
         [[ssh.access]]\npath = \"team/*\"\nread = [\"*\"]\nwrite = [\"@writers\"]\n\
         [[ssh.access]]\npath = \"secret\"\nread = [\"alice\"]\n",
    )
    .unwrap();
    (root, bob, config)
}

#[test]
fn the_access_policy_decides_who_reads_and_pushes() {
    let git = Git::newest();
    let dir = Dir::new("ssh-access");
    let (root, bob, config) = access_fixture(&dir);
    let server = SshServer::start_with(
        &dir,
        &root,
        &[std::ffi::OsStr::new("--config"), config.as_os_str()],
        &[bob.with_extension("pub")],
    );
    dir.git(&git).args(["init", "-q", "work"]).run();
    let work = dir.join("work");
    dir.git(&git)
        .current_dir(&work)
        .args(["commit", "-q", "--allow-empty", "-m", "one"])
        .run();
    let push_as = |key: &Path, path: &str| {
        dir.git(&git)
            .current_dir(&work)
            .env("GIT_SSH_COMMAND", server.ssh_command_with(key))
            .args(["push", &server.url(path), "master"])
            .output()
    };
    // alice (a writer) pushes; bob (a reader) is refused, and told so.
    let output = push_as(&server.key, "team/project.git");
    assert!(output.status.success(), "{output}");
    let output = push_as(&bob, "team/project.git");
    assert!(!output.status.success(), "{output}");
    assert!(
        output
            .stderr_text()
            .contains("fatal: bob may not push to '/team/project.git'"),
        "{output}"
    );
    // Both read the team's repository; only alice reads the secret; nobody pushes to it.
    for key in [&server.key, &bob] {
        let output = dir
            .git(&git)
            .env("GIT_SSH_COMMAND", server.ssh_command_with(key))
            .args(["ls-remote", &server.url("team/project.git")])
            .output();
        assert!(output.status.success(), "{output}");
    }
    let ls_secret = |key: &Path| {
        dir.git(&git)
            .env("GIT_SSH_COMMAND", server.ssh_command_with(key))
            .args(["ls-remote", &server.url("secret.git")])
            .output()
    };
    assert!(ls_secret(&server.key).status.success());
    let output = ls_secret(&bob);
    assert!(!output.status.success(), "{output}");
    assert!(
        output.stderr_text().contains("bob may not read"),
        "{output}"
    );
    assert!(!push_as(&server.key, "secret.git").status.success());
    assert!(refs(&dir, &git, &root.join("secret.git"), &[]).is_empty());
}

#[test]
fn the_access_policy_decides_the_same_over_http() {
    let dir = Dir::new("ssh-access-http");
    let (root, bob, config) = access_fixture(&dir);
    let credentials = crate::http_auth::credentials_file(
        &dir,
        &[("alice", "alice-password"), ("bob", "bob-password")],
        4,
    );
    let server = SshServer::start_full(
        &dir,
        &root,
        &[std::ffi::OsStr::new("--config"), config.as_os_str()],
        &[bob.with_extension("pub")],
        Some(&credentials),
    );
    let http_port = server.http_port.unwrap();
    let keys = [("alice", server.key.clone()), ("bob", bob.clone())];
    for (g, git) in Git::all().into_iter().enumerate() {
        for (n, transport) in ["ssh", "http"].into_iter().enumerate() {
            let context = format!("{git} over {transport}");
            let work = dir.join(&format!("work-{g}-{n}"));
            dir.git(&git).arg("init").arg("-q").arg(&work).run();
            dir.git(&git)
                .current_dir(&work)
                .args(["commit", "-q", "--allow-empty", "-m", &context])
                .run();
            // (user, repository, push?, allowed?)
            let cases = [
                ("alice", "team/project.git", true, true),
                ("bob", "team/project.git", true, false),
                ("alice", "team/project.git", false, true),
                ("bob", "team/project.git", false, true),
                ("alice", "secret.git", false, true),
                ("bob", "secret.git", false, false),
                ("alice", "secret.git", true, false),
            ];
            for (user, path, write, allowed) in cases {
                let (_, key) = keys.iter().find(|(name, _)| *name == user).unwrap();
                let url = match transport {
                    "ssh" => server.url(path),
                    _ => format!("http://{user}:{user}-password@127.0.0.1:{http_port}/{path}"),
                };
                let command = dir
                    .git(&git)
                    .env("GIT_SSH_COMMAND", server.ssh_command_with(key))
                    .current_dir(&work);
                let output = if write {
                    command
                        .args(["push", "-f", &url, "HEAD:refs/heads/main"])
                        .output()
                } else {
                    command.args(["ls-remote", &url]).output()
                };
                let case = format!("{context}: {user} {path} write={write}");
                assert_eq!(output.status.success(), allowed, "{case}: {output}");
                if !allowed {
                    // The same words in git's terminal over both ("fatal: …" from ssh,
                    // "remote: …" from the body of HTTP's 403).
                    let what = if write { "push to" } else { "read" };
                    let message = format!("{user} may not {what} '/{path}'");
                    assert!(output.stderr_text().contains(&message), "{case}: {output}");
                }
            }
            // alice's push landed (and nothing else did).
            let team = root.join("team/project.git");
            fsck(&dir, &git, &team);
            assert_eq!(
                refs(&dir, &git, &team, &[])
                    .into_values()
                    .collect::<Vec<_>>(),
                refs(&dir, &git, &work.join(".git"), &["refs/heads/master"])
                    .into_values()
                    .collect::<Vec<_>>(),
                "{context}"
            );
            assert!(refs(&dir, &git, &root.join("secret.git"), &[]).is_empty());
        }
        // Over HTTP the policy needs a user: anonymous and wrong passwords are asked for
        // credentials (git gives up without a terminal), even for a repository everyone reads.
        for url in [
            format!("http://127.0.0.1:{http_port}/team/project.git"),
            format!("http://bob:wrong@127.0.0.1:{http_port}/team/project.git"),
        ] {
            let output = dir.git(&git).args(["ls-remote", &url]).output();
            assert!(!output.status.success(), "{url}: {output}");
            assert!(
                output.stderr_text().contains("Authentication failed")
                    || output.stderr_text().contains("could not read Username"),
                "{url}: {output}"
            );
        }
    }
}

/// Idle v2 sessions over SSH hold no thread, as on git://: 64 real `ssh` clients with the
/// advertisement read and no request sent leave the server with a handful of threads, and
/// each session still answers `ls-refs` afterwards.
#[test]
fn idle_v2_sessions_hold_no_threads() {
    use std::io::Write;
    let git = Git::newest();
    let dir = Dir::new("ssh-idle");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let repo = root.join("project.git");
    dir.git(&git)
        .args(["init", "-q", "--bare"])
        .arg(&repo)
        .run();
    dir.git(&git).args(["init", "-q", "work"]).run();
    let work = dir.join("work");
    dir.git(&git)
        .current_dir(&work)
        .args(["commit", "-q", "--allow-empty", "-m", "one"])
        .run();
    let server = SshServer::start(&dir, &root);
    git_over_ssh(&dir, &git, &server, 2)
        .current_dir(&work)
        .args(["push", "-q", &server.url("project.git"), "master"])
        .run();
    let command = server.ssh_command();
    let mut words = command.split(' ');
    let program = words.next().unwrap();
    let words: Vec<&str> = words.collect();
    struct Client(Child);
    impl Drop for Client {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut clients: Vec<Client> = (0..64)
        .map(|_| {
            let mut child = Command::new(program)
                .args(&words)
                .args(["-o", "SetEnv=GIT_PROTOCOL=version=2", "127.0.0.1"])
                .arg("git-upload-pack '/project.git'")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let advertisement = crate::sessions::read_until_flush(child.stdout.as_mut().unwrap());
            assert_eq!(
                advertisement.first().map(Vec::as_slice),
                Some(&b"version 2\n"[..])
            );
            Client(child)
        })
        .collect();
    let threads = crate::sessions::server_threads(&root);
    assert!(threads < 40, "{threads} threads with 64 idle ssh sessions");
    let ls_refs = |client: &mut Client| {
        let mut request = crate::pkt::line(b"command=ls-refs\n");
        request.extend_from_slice(crate::pkt::DELIM);
        request.extend_from_slice(&crate::pkt::line(b"ref-prefix refs/heads/\n"));
        request.extend_from_slice(crate::pkt::FLUSH);
        client
            .0
            .stdin
            .as_mut()
            .unwrap()
            .write_all(&request)
            .unwrap();
        crate::sessions::read_until_flush(client.0.stdout.as_mut().unwrap())
    };
    let first = ls_refs(&mut clients[0]);
    assert!(
        first
            .iter()
            .any(|line| line.ends_with(b" refs/heads/master\n")),
        "{first:?}"
    );
    let last = clients.len() - 1;
    assert_eq!(ls_refs(&mut clients[last]), first);
    assert_eq!(ls_refs(&mut clients[0]), first);
}
