//! Push over smart HTTP with authentication (`serve --http-credentials`, `packgate passwd`),
//! over TLS (`--tls-cert`/`--tls-key`), and packgate's HTTP service embedded in an axum
//! application (`examples/axum.rs`) — all with the real git clients.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    http::{root_with, Push, Server, ServerOptions},
    util::{fsck, refs, write_file, Dir, Git, Output},
};

/// `examples/axum.rs`, whose `app()` the embedding test serves.
#[allow(dead_code)]
#[path = "../examples/axum.rs"]
mod axum_example;

pub(crate) const USER: &str = "alice";
pub(crate) const PASSWORD: &str = "correct-horse-battery-staple";

/// A credentials file written by `packgate passwd` (bcrypt of `cost`).
pub(crate) fn credentials_file(dir: &Dir, users: &[(&str, &str)], cost: u32) -> PathBuf {
    let file = dir.join("users");
    for (user, password) in users {
        dir.packgate()
            .args(["passwd", "--cost", &cost.to_string()])
            .arg(&file)
            .arg(user)
            .stdin(format!("{password}\n"))
            .run();
    }
    file
}

/// A clone of `url` with one new commit on top.
fn clone_with_a_commit(dir: &Dir, git: &Git, url: &str, name: &str, extra: &[&str]) -> PathBuf {
    let clone = dir.join(name);
    dir.git(git)
        .args(extra)
        .args(["clone", "--quiet"])
        .arg(url)
        .arg(&clone)
        .run();
    write_file(&clone.join(format!("{name}.txt")), name.as_bytes());
    dir.git(git).current_dir(&clone).args(["add", "."]).run();
    dir.git(git)
        .current_dir(&clone)
        .args(["commit", "--quiet", "-m", name])
        .run();
    clone
}

/// `git push <url> <refspec>` from `clone`, allowed to fail.
fn push(dir: &Dir, git: &Git, clone: &Path, url: &str, refspec: &str, extra: &[&str]) -> Output {
    dir.git(git)
        .args(extra)
        .current_dir(clone)
        .arg("push")
        .arg(url)
        .arg(refspec)
        .output()
}

/// The HEAD commit of a work tree.
fn head(dir: &Dir, git: &Git, clone: &Path) -> String {
    dir.git(git)
        .current_dir(clone)
        .args(["rev-parse", "HEAD"])
        .run()
        .stdout_text()
        .trim()
        .to_owned()
}

/// `Authorization: Basic …` for `user:password`, by hand.
fn basic(user: &str, password: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn push_needs_valid_credentials() {
    let dir = Dir::new("http-auth");
    let root = root_with(&dir, "tiny");
    let served = root.join("tiny.git");
    // bcrypt's default cost, as an operator would have it.
    let credentials = credentials_file(&dir, &[(USER, PASSWORD), ("bob", "other")], 12);
    let text = std::fs::read_to_string(&credentials).unwrap_or_default();
    assert!(
        text.starts_with("alice:$2y$12$") && text.contains("\nbob:$2y$12$"),
        "{text}"
    );
    // And one user with an argon2 hash.
    dir.packgate()
        .args(["passwd", "--argon2"])
        .arg(&credentials)
        .arg("carol")
        .stdin("carol's password\r\n")
        .run();
    let server = Server::start_with(
        &root,
        &ServerOptions {
            credentials: Some(credentials),
            ..ServerOptions::new(Push::Refused)
        },
    );
    for (n, git) in Git::all().into_iter().enumerate() {
        // Fetching needs no credentials.
        let clone = clone_with_a_commit(
            &dir,
            &git,
            &server.http_url("tiny.git"),
            &format!("c{n}"),
            &[],
        );
        let branch = format!("refs/heads/pushed-{n}");
        let refspec = format!("HEAD:{branch}");
        let before = refs(&dir, &git, &served, &[]);

        // No credentials: 401, git finds none to send and gives up.
        let output = push(
            &dir,
            &git,
            &clone,
            &server.http_url("tiny.git"),
            &refspec,
            &[],
        );
        assert!(!output.status.success(), "{output}");
        assert!(
            output.stderr_text().contains("could not read Username"),
            "{output}"
        );
        // Wrong password: 401 again, and git reports the failed authentication.
        let wrong = server.http_url_as(USER, "wrong", "tiny.git");
        let output = push(&dir, &git, &clone, &wrong, &refspec, &[]);
        assert!(!output.status.success(), "{output}");
        assert!(
            output.stderr_text().contains("Authentication failed"),
            "{output}"
        );
        // Another user's password.
        let output = push(
            &dir,
            &git,
            &clone,
            &server.http_url_as("bob", PASSWORD, "tiny.git"),
            &refspec,
            &[],
        );
        assert!(
            output.stderr_text().contains("Authentication failed"),
            "{output}"
        );
        assert_eq!(
            refs(&dir, &git, &served, &[]),
            before,
            "refused pushes moved refs"
        );

        // The right one.
        let right = server.http_url_as(USER, PASSWORD, "tiny.git");
        let output = push(&dir, &git, &clone, &right, &refspec, &[]);
        assert!(output.status.success(), "{output}");
        fsck(&dir, &git, &served);
        assert_eq!(
            refs(&dir, &git, &served, &[&branch]).get(&branch),
            Some(&head(&dir, &git, &clone)),
            "{branch} after an authenticated push with {git}"
        );
    }

    let git = Git::newest();
    let clone = clone_with_a_commit(&dir, &git, &server.http_url("tiny.git"), "carol", &[]);
    let output = push(
        &dir,
        &git,
        &clone,
        &server.http_url_as("carol", "carol%27s%20password", "tiny.git"),
        "HEAD:refs/heads/carol",
        &[],
    );
    assert!(output.status.success(), "{output}");

    // Both requests of a push ask for credentials, with a Basic challenge.
    let response = server.get("/tiny.git/info/refs?service=git-receive-pack", "");
    assert_eq!(response.status, 401, "{response}");
    assert!(
        response
            .headers
            .contains("www-authenticate: basic realm=\"packgate\""),
        "{response}"
    );
    let post = |authorization: &str| {
        server.raw(
            format!(
                "POST /tiny.git/git-receive-pack HTTP/1.1\r\nHost: x\r\n{authorization}\
                 Content-Type: application/x-git-receive-pack-request\r\n\
                 Content-Length: 4\r\nConnection: close\r\n\r\n0000"
            )
            .as_bytes(),
        )
    };
    assert_eq!(post("").status, 401);
    let wrong = format!("Authorization: Basic {}\r\n", basic(USER, "wrong"));
    assert_eq!(post(&wrong).status, 401);
    // A name without a password, and another scheme, are no credentials.
    assert_eq!(
        post(&format!("Authorization: Basic {}\r\n", basic(USER, ""))).status,
        401
    );
    assert_eq!(post("Authorization: Bearer abc\r\n").status, 401);
    let right = format!("Authorization: Basic {}\r\n", basic(USER, PASSWORD));
    let response = post(&right);
    assert_eq!(response.status, 200, "{response}");
    // The advertisement with credentials, too.
    let response = server.get("/tiny.git/info/refs?service=git-receive-pack", &right);
    assert_eq!(response.status, 200, "{response}");
    assert!(
        response
            .body_text()
            .starts_with("001f# service=git-receive-pack\n0000"),
        "{response}"
    );
}

#[test]
fn http_receivepack_false_refuses_authenticated_users() {
    let dir = Dir::new("http-auth-config");
    let root = root_with(&dir, "tiny");
    let served = root.join("tiny.git");
    let git = Git::newest();
    dir.git_in(&git, &served)
        .args(["config", "http.receivepack", "false"])
        .run();
    let credentials = credentials_file(&dir, &[(USER, PASSWORD)], 4);
    let server = Server::start_with(
        &root,
        &ServerOptions {
            credentials: Some(credentials),
            ..ServerOptions::new(Push::Refused)
        },
    );
    let right = format!("Authorization: Basic {}\r\n", basic(USER, PASSWORD));
    let response = server.get("/tiny.git/info/refs?service=git-receive-pack", &right);
    assert_eq!(response.status, 403, "{response}");
    assert_eq!(
        response.body_text(),
        "service not enabled: git-receive-pack\n"
    );
    for git in Git::all() {
        let clone = clone_with_a_commit(&dir, &git, &server.http_url("tiny.git"), "clone", &[]);
        let output = push(
            &dir,
            &git,
            &clone,
            &server.http_url_as(USER, PASSWORD, "tiny.git"),
            "HEAD:refs/heads/refused",
            &[],
        );
        assert!(!output.status.success(), "{output}");
        assert!(output.stderr_text().contains("403"), "{output}");
        std::fs::remove_dir_all(&clone).unwrap_or_else(|error| panic!("rm: {error}"));
    }
    assert!(refs(&dir, &git, &served, &["refs/heads/refused"]).is_empty());
}

#[test]
fn credentials_never_reach_the_log() {
    let dir = Dir::new("http-auth-log");
    let root = root_with(&dir, "tiny");
    let credentials = credentials_file(&dir, &[(USER, PASSWORD)], 4);
    let server = Server::start_with(
        &root,
        &ServerOptions {
            credentials: Some(credentials),
            log_filter: Some("trace"),
            ..ServerOptions::new(Push::Refused)
        },
    );
    let git = Git::newest();
    let clone = clone_with_a_commit(&dir, &git, &server.http_url("tiny.git"), "clone", &[]);
    let wrong_password = "a-wrong-password";
    let output = push(
        &dir,
        &git,
        &clone,
        &server.http_url_as(USER, wrong_password, "tiny.git"),
        "HEAD:refs/heads/x",
        &[],
    );
    assert!(!output.status.success(), "{output}");
    let output = push(
        &dir,
        &git,
        &clone,
        &server.http_url_as(USER, PASSWORD, "tiny.git"),
        "HEAD:refs/heads/x",
        &[],
    );
    assert!(output.status.success(), "{output}");
    let log = server.stop_and_read_log();
    assert!(
        log.contains("authenticated") && log.contains("authentication failed"),
        "the log lacks the authentication lines:\n{log}"
    );
    for secret in [
        PASSWORD.to_owned(),
        wrong_password.to_owned(),
        basic(USER, PASSWORD),
        basic(USER, wrong_password),
    ] {
        assert!(
            !log.contains(&secret),
            "the log contains {secret:?}:\n{log}"
        );
    }
}

#[test]
fn weak_credentials_files_are_refused() {
    let dir = Dir::new("http-auth-weak");
    let root = root_with(&dir, "tiny");
    let file = dir.join("users");
    write_file(
        &file,
        b"# htpasswd -m\nbob:$apr1$8wJ5Ygqa$nMOs2xMkP1BXWbT8gVk0j/\n",
    );
    let output = dir
        .packgate()
        .args(["serve", "--git", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--http-credentials")
        .arg(&file)
        .arg(&root)
        .output();
    assert!(!output.status.success(), "{output}");
    assert!(
        output
            .stderr_text()
            .contains(":2: the password of 'bob' is MD5 ($apr1$), which packgate refuses"),
        "{output}"
    );
}

/// A self-signed certificate for 127.0.0.1, as `(cert.pem, key.pem)`.
pub(crate) fn self_signed_certificate(dir: &Dir) -> (PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap_or_else(|error| panic!("generating a certificate: {error}"));
    let certificate = dir.join("cert.pem");
    let key = dir.join("key.pem");
    write_file(&certificate, certified.cert.pem().as_bytes());
    write_file(&key, certified.signing_key.serialize_pem().as_bytes());
    (certificate, key)
}

#[test]
fn clone_and_push_over_https() {
    let dir = Dir::new("https");
    let root = root_with(&dir, "tiny");
    let served = root.join("tiny.git");
    let (certificate, key) = self_signed_certificate(&dir);
    let credentials = credentials_file(&dir, &[(USER, PASSWORD)], 4);
    let server = Server::start_with(
        &root,
        &ServerOptions {
            credentials: Some(credentials),
            tls: Some((certificate.clone(), key)),
            ..ServerOptions::new(Push::Refused)
        },
    );
    let url = server.http_url("tiny.git");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let trust = format!("http.sslCAInfo={}", certificate.display());
    for (n, git) in Git::all().into_iter().enumerate() {
        // Without trusting the certificate, git refuses the server.
        let output = dir.git(&git).args(["ls-remote", &url]).output();
        assert!(!output.status.success(), "{output}");
        assert!(output.stderr_text().contains("certificate"), "{output}");

        let clone = clone_with_a_commit(&dir, &git, &url, &format!("c{n}"), &["-c", &trust]);
        fsck(&dir, &git, &clone.join(".git"));
        let branch = format!("refs/heads/over-tls-{n}");
        let output = push(
            &dir,
            &git,
            &clone,
            &server.http_url_as(USER, PASSWORD, "tiny.git"),
            &format!("HEAD:{branch}"),
            &["-c", &trust],
        );
        assert!(output.status.success(), "{output}");
        fsck(&dir, &git, &served);
        assert_eq!(
            refs(&dir, &git, &served, &[&branch]).get(&branch),
            Some(&head(&dir, &git, &clone)),
            "{branch} after a push over https with {git}"
        );
    }
}

/// `examples/axum.rs`'s application, served on a runtime of its own; shut down on drop.
struct Embedded {
    runtime: Option<tokio::runtime::Runtime>,
    address: std::net::SocketAddr,
}

impl Embedded {
    fn start(root: &Path) -> Embedded {
        let app = axum_example::app(root, USER, PASSWORD)
            .unwrap_or_else(|error| panic!("building the example's app: {error}"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|error| panic!("starting a runtime: {error}"));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap_or_else(|error| panic!("binding: {error}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("local_addr: {error}"));
        runtime.spawn(async move { axum::serve(listener, app).await });
        Embedded {
            runtime: Some(runtime),
            address,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.address)
    }

    fn url_as(&self, path: &str) -> String {
        format!("http://{USER}:{PASSWORD}@{}/{path}", self.address)
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

#[test]
fn embedded_in_an_axum_application() {
    let dir = Dir::new("http-embedded");
    let root = root_with(&dir, "tiny");
    let served = root.join("tiny.git");
    let app = Embedded::start(&root);

    // The application's own route.
    let mut stream = TcpStream::connect(app.address).unwrap_or_else(|error| panic!("{error}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap_or_else(|error| panic!("{error}"));
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap_or_else(|error| panic!("{error}"));
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        response.starts_with("HTTP/1.1 200") && response.ends_with("hello from the application\n"),
        "{response}"
    );

    for (n, git) in Git::all().into_iter().enumerate() {
        let clone =
            clone_with_a_commit(&dir, &git, &app.url("git/tiny.git"), &format!("c{n}"), &[]);
        fsck(&dir, &git, &clone.join(".git"));
        // Outside /git/, nothing of packgate's.
        let output = dir
            .git(&git)
            .args(["ls-remote", &app.url("tiny.git")])
            .output();
        assert!(!output.status.success(), "{output}");

        // Unauthenticated: refused.
        let output = push(
            &dir,
            &git,
            &clone,
            &app.url("git/tiny.git"),
            "HEAD:refs/heads/x",
            &[],
        );
        assert!(!output.status.success(), "{output}");

        // A branch: accepted.
        let branch = format!("refs/heads/embedded-{n}");
        let output = push(
            &dir,
            &git,
            &clone,
            &app.url_as("git/tiny.git"),
            &format!("HEAD:{branch}"),
            &[],
        );
        assert!(output.status.success(), "{output}");
        fsck(&dir, &git, &served);
        assert_eq!(
            refs(&dir, &git, &served, &[&branch]).get(&branch),
            Some(&head(&dir, &git, &clone)),
            "{branch} after a push with {git}"
        );

        // A tag: the application's pre-receive hook refuses it, and git says why.
        let tag = format!("refs/tags/embedded-{n}");
        let output = push(
            &dir,
            &git,
            &clone,
            &app.url_as("git/tiny.git"),
            &format!("HEAD:{tag}"),
            &[],
        );
        assert!(!output.status.success(), "{output}");
        let stderr = output.stderr_text();
        assert!(
            stderr.contains(&format!(
                "remote: this server takes branches only, not {tag}"
            )) && stderr.contains("[remote rejected]")
                && stderr.contains("(only branches may be pushed)"),
            "{output}"
        );
        assert!(
            refs(&dir, &git, &served, &[&tag]).is_empty(),
            "{tag} was created"
        );
    }
}

/// A push larger than git's post buffer goes chunked, which git cannot replay after a 401:
/// it must have authenticated already on the advertisement.
#[test]
fn large_authenticated_push_is_streamed() {
    let dir = Dir::new("http-auth-chunked");
    let root = root_with(&dir, "small");
    let source = root.join("small.git");
    let credentials = credentials_file(&dir, &[(USER, PASSWORD)], 4);
    let server = Server::start_with(
        &root,
        &ServerOptions {
            credentials: Some(credentials),
            ..ServerOptions::new(Push::Refused)
        },
    );
    for (n, git) in Git::all().into_iter().enumerate() {
        let name = format!("empty-{n}.git");
        let empty = root.join(&name);
        dir.git(&git)
            .args(["init", "--quiet", "--bare"])
            .arg(&empty)
            .run();
        let output = dir
            .git_in(&git, &source)
            .env("GIT_TRACE_CURL", "1")
            .env("GIT_TRACE_CURL_NO_DATA", "1")
            .args(["-c", "http.postBuffer=65536", "push", "--mirror"])
            .arg(server.http_url_as(USER, PASSWORD, &name))
            .timeout(Duration::from_secs(120))
            .run();
        assert!(
            output.stderr_text().contains("Transfer-Encoding: chunked"),
            "git sent no chunked request: {output}"
        );
        fsck(&dir, &git, &empty);
        crate::util::assert_same_refs(
            &refs(&dir, &git, &empty, &[]),
            &refs(&dir, &git, &source, &[]),
            &format!("authenticated mirror push with {git}"),
        );
    }
}

/// The authenticated user reaches the hooks: a pre-receive script sees `REMOTE_USER`, as
/// behind git http-backend.
#[test]
fn hooks_see_the_authenticated_user() {
    let dir = Dir::new("http-auth-remote-user");
    let root = root_with(&dir, "tiny");
    let served = root.join("tiny.git");
    let hook = served.join("hooks/pre-receive");
    std::fs::create_dir_all(served.join("hooks")).unwrap_or_else(|error| panic!("{error}"));
    write_file(
        &hook,
        b"#!/bin/sh\ncat >/dev/null\necho \"pushed by ${REMOTE_USER:-nobody}\" >&2\n",
    );
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap_or_else(|error| panic!("chmod: {error}"));
    dir.git_in(&Git::newest(), &served)
        .args(["config", "core.logAllRefUpdates", "always"])
        .run();
    let credentials = credentials_file(&dir, &[(USER, PASSWORD)], 4);
    let server = Server::start_with(
        &root,
        &ServerOptions {
            credentials: Some(credentials),
            ..ServerOptions::new(Push::Refused)
        },
    );
    for (n, git) in Git::all().into_iter().enumerate() {
        let clone = clone_with_a_commit(
            &dir,
            &git,
            &server.http_url("tiny.git"),
            &format!("clone-{n}"),
            &[],
        );
        let output = push(
            &dir,
            &git,
            &clone,
            &server.http_url_as(USER, PASSWORD, "tiny.git"),
            &format!("HEAD:refs/heads/by-{n}"),
            &[],
        );
        assert!(output.status.success(), "{output}");
        assert!(
            output.stderr_text().contains("remote: pushed by alice"),
            "the hook did not see the user: {output}"
        );
        // The reflog entry names the pusher too.
        let who = dir
            .git_in(&git, &served)
            .args([
                "log",
                "-g",
                "--format=%gn <%ge>",
                &format!("refs/heads/by-{n}"),
            ])
            .run()
            .stdout_text();
        assert_eq!(
            who.trim(),
            "alice <alice@http.127.0.0.1>",
            "reflog identity with {git}"
        );
    }
}
