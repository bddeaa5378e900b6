//! `packgate http-backend`, the CGI drop-in for git-http-backend: invoked directly with CGI
//! variables and a body on standard input (what it answers, what it refuses), then behind
//! the test's CGI host (`cgi_host`) with the real git clients: clone, fetch, push with and
//! without credentials, the export-ok rule.

use std::{os::unix::fs::symlink, path::Path, time::Duration};

use packgate_fixture::{append_commits, Append};

use crate::{
    cgi_host::{CgiHost, CgiHostOptions},
    http::root_with,
    pkt::{self, Packet},
    util::{assert_same_refs, fsck, refs, write_file, Cmd, Dir, Git},
};

/// What the CGI program answered.
pub(crate) struct CgiResponse {
    pub(crate) status: u16,
    /// The header lines, lower-cased, `Status:` included.
    pub(crate) headers: String,
    pub(crate) body: Vec<u8>,
    /// For failure messages: the command and its output.
    output: String,
}

impl CgiResponse {
    pub(crate) fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    pub(crate) fn assert_status(&self, status: u16) {
        assert_eq!(self.status, status, "{}", self.output);
    }

    #[track_caller]
    fn assert_header(&self, line: &str) {
        assert!(
            self.headers.lines().any(|header| header == line),
            "no header {line:?}: {}",
            self.output
        );
    }
}

/// Runs `packgate http-backend` with exactly `vars` as its CGI environment (beyond the
/// isolated basics) and `stdin` as the request body.
pub(crate) fn cgi(dir: &Dir, vars: &[(&str, &str)], stdin: &[u8]) -> CgiResponse {
    let mut cmd = dir.packgate().arg("http-backend").stdin(stdin.to_vec());
    for (name, value) in vars {
        cmd = cmd.env(name, value);
    }
    let output = cmd.output();
    assert!(output.status.success(), "http-backend failed: {output}");
    let split = output
        .stdout
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of CGI headers: {output}"));
    let headers = String::from_utf8_lossy(&output.stdout[..split]).to_lowercase();
    let status = headers
        .lines()
        .find_map(|line| line.strip_prefix("status: "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no Status header: {output}"));
    CgiResponse {
        status,
        headers,
        body: output.stdout[split + 4..].to_vec(),
        output: output.to_string(),
    }
}

/// The CGI variables of `GET <repo>/info/refs?service=<service>` below `root`.
fn info_refs<'a>(root: &'a str, path_info: &'a str, service: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", "GET"),
        ("GIT_PROJECT_ROOT", root),
        ("PATH_INFO", path_info),
        ("QUERY_STRING", service),
    ]
}

const UPLOAD: &str = "service=git-upload-pack";
const RECEIVE: &str = "service=git-receive-pack";
const EXPORT_ALL: (&str, &str) = ("GIT_HTTP_EXPORT_ALL", "");
const VERSION_2: (&str, &str) = ("HTTP_GIT_PROTOCOL", "version=2");

fn ls_refs_request() -> Vec<u8> {
    pkt::concat([
        pkt::line("command=ls-refs\n"),
        pkt::DELIM.to_vec(),
        pkt::line("peel\n"),
        pkt::line("symrefs\n"),
        pkt::FLUSH.to_vec(),
    ])
}

/// name → oid of every ref line of an ls-refs response but `HEAD`.
fn listed_refs(body: &[u8]) -> std::collections::BTreeMap<String, String> {
    let (packets, rest) = pkt::decode(body);
    assert!(rest.is_empty(), "trailing bytes after ls-refs: {rest:?}");
    assert_eq!(packets.last(), Some(&Packet::Flush), "{packets:?}");
    pkt::lines(&packets)
        .iter()
        .filter_map(|line| {
            let mut words = line.split(' ');
            let (oid, name) = (words.next()?, words.next()?);
            (name != "HEAD").then(|| (name.to_owned(), oid.to_owned()))
        })
        .collect()
}

#[test]
fn advertisements_of_both_services() {
    let dir = Dir::new("cgi-advertise");
    let root = root_with(&dir, "tiny");
    let root = root.to_string_lossy();

    // upload-pack v2: the capability advertisement, without a `# service=` line.
    let mut vars = info_refs(&root, "/tiny.git/info/refs", UPLOAD);
    vars.extend([EXPORT_ALL, VERSION_2]);
    let response = cgi(&dir, &vars, b"");
    response.assert_status(200);
    response.assert_header("content-type: application/x-git-upload-pack-advertisement");
    response.assert_header("expires: fri, 01 jan 1980 00:00:00 gmt");
    response.assert_header("pragma: no-cache");
    response.assert_header("cache-control: no-cache, max-age=0, must-revalidate");
    assert!(
        response.body_text().starts_with("000eversion 2\n"),
        "{}",
        response.output
    );
    assert!(response.body_text().contains("ls-refs"));

    // HEAD is answered as GET (the web server drops the body).
    let mut head = vars.clone();
    head[1] = ("REQUEST_METHOD", "HEAD");
    cgi(&dir, &head, b"").assert_status(200);

    // Without version 2: the service line, then the v0 reference advertisement.
    let mut vars = info_refs(&root, "/tiny.git/info/refs", UPLOAD);
    vars.push(EXPORT_ALL);
    let response = cgi(&dir, &vars, b"");
    response.assert_status(200);
    assert!(
        response
            .body_text()
            .starts_with("001e# service=git-upload-pack\n0000"),
        "{}",
        response.output
    );
    assert_eq!(pkt::error_reason(&response.body[34..]), None);
    assert!(
        response.body_text().contains(" HEAD\0multi_ack thin-pack "),
        "{}",
        response.output
    );

    // receive-pack, for an authenticated user: `# service=`, then the v0 advertisement.
    let mut vars = info_refs(&root, "/tiny.git/info/refs", RECEIVE);
    vars.extend([EXPORT_ALL, ("REMOTE_USER", "alice")]);
    let response = cgi(&dir, &vars, b"");
    response.assert_status(200);
    response.assert_header("content-type: application/x-git-receive-pack-advertisement");
    let body = response.body_text();
    assert!(
        body.starts_with("001f# service=git-receive-pack\n0000"),
        "{}",
        response.output
    );
    assert!(
        body.contains("refs/heads/main\0") && body.contains("report-status"),
        "{}",
        response.output
    );
}

#[test]
fn ls_refs_plain_gzip_and_content_length() {
    let dir = Dir::new("cgi-ls-refs");
    let root = root_with(&dir, "tiny");
    let git = Git::newest();
    let expected = refs(&dir, &git, &root.join("tiny.git"), &[]);
    let root = root.to_string_lossy();
    let request = ls_refs_request();
    let length = request.len().to_string();
    let post = |extra: &[(&'static str, &str)], body: &[u8]| {
        let mut vars = vec![
            ("REQUEST_METHOD", "POST"),
            ("GIT_PROJECT_ROOT", &*root),
            ("PATH_INFO", "/tiny.git/git-upload-pack"),
            ("CONTENT_TYPE", "application/x-git-upload-pack-request"),
            EXPORT_ALL,
            VERSION_2,
        ];
        vars.extend_from_slice(extra);
        cgi(&dir, &vars, body)
    };

    // Without CONTENT_LENGTH the body ends with standard input.
    let response = post(&[], &request);
    response.assert_status(200);
    response.assert_header("content-type: application/x-git-upload-pack-result");
    assert_eq!(listed_refs(&response.body), expected, "{}", response.output);

    // With it, what follows on standard input is not read.
    let mut padded = request.clone();
    padded.extend_from_slice(b"this is not a pkt-line");
    let response = post(&[("CONTENT_LENGTH", &length)], &padded);
    response.assert_status(200);
    assert_eq!(listed_refs(&response.body), expected, "{}", response.output);

    // gzip, as git sends large requests.
    let gzipped = Cmd::new(Path::new("gzip"))
        .args(["-c", "-n"])
        .stdin(request.clone())
        .run()
        .stdout;
    let gzipped_length = gzipped.len().to_string();
    for encoding in ["gzip", "x-gzip"] {
        let response = post(
            &[
                ("HTTP_CONTENT_ENCODING", encoding),
                ("CONTENT_LENGTH", &gzipped_length),
            ],
            &gzipped,
        );
        response.assert_status(200);
        assert_eq!(listed_refs(&response.body), expected, "{}", response.output);
    }

    // Too large by its CONTENT_LENGTH (GIT_HTTP_MAX_REQUEST_BUFFER, git's knob): 413.
    let response = post(
        &[
            ("CONTENT_LENGTH", &length),
            ("GIT_HTTP_MAX_REQUEST_BUFFER", "10"),
        ],
        &request,
    );
    response.assert_status(413);
    // A gzip bomb: small on the wire, too large decompressed — 413 before any session,
    // with CONTENT_LENGTH or without.
    let bomb = Cmd::new(Path::new("gzip"))
        .args(["-c", "-n"])
        .stdin(vec![b'0'; 64 * 1024])
        .run()
        .stdout;
    let bomb_length = bomb.len().to_string();
    for content_length in [None, Some(("CONTENT_LENGTH", bomb_length.as_str()))] {
        let mut extra = vec![
            ("HTTP_CONTENT_ENCODING", "gzip"),
            ("GIT_HTTP_MAX_REQUEST_BUFFER", "4k"),
        ];
        extra.extend(content_length);
        let response = post(&extra, &bomb);
        response.assert_status(413);
        assert!(
            response
                .body_text()
                .contains("request body larger than 4096 bytes"),
            "{}",
            response.output
        );
    }
    // A wrong content type: 415.
    let response = post(&[("CONTENT_TYPE", "text/plain")], &request);
    response.assert_status(415);
}

#[test]
fn repositories_not_exported_or_missing_are_not_found() {
    let dir = Dir::new("cgi-export");
    let root = root_with(&dir, "tiny");
    let root_text = root.to_string_lossy();
    let mut vars = info_refs(&root_text, "/tiny.git/info/refs", UPLOAD);
    vars.push(VERSION_2);
    // No GIT_HTTP_EXPORT_ALL and no git-daemon-export-ok.
    let response = cgi(&dir, &vars, b"");
    response.assert_status(404);
    response.assert_header("cache-control: no-cache, max-age=0, must-revalidate");
    assert_eq!(response.body_text(), "Repository not found\n");
    // The export-ok file opens it.
    write_file(&root.join("tiny.git/git-daemon-export-ok"), b"");
    cgi(&dir, &vars, b"").assert_status(200);
    // Found the way git finds repositories: without the `.git` suffix too.
    let mut vars = info_refs(&root_text, "/tiny/info/refs", UPLOAD);
    vars.push(VERSION_2);
    cgi(&dir, &vars, b"").assert_status(200);
    // A missing repository, exported or not.
    for export in [false, true] {
        let mut vars = info_refs(&root_text, "/missing.git/info/refs", UPLOAD);
        if export {
            vars.push(EXPORT_ALL);
        }
        cgi(&dir, &vars, b"").assert_status(404);
    }
}

#[test]
fn push_needs_remote_user_and_the_repository_switch() {
    let dir = Dir::new("cgi-push-rules");
    let root = root_with(&dir, "tiny");
    let git = Git::newest();
    let repo = root.join("tiny.git");
    let root_text = root.to_string_lossy();
    let check = |remote_user: Option<&str>, query: &str, expected: u16, message: &str| {
        let mut vars = info_refs(&root_text, "/tiny.git/info/refs", query);
        vars.extend([EXPORT_ALL, VERSION_2]);
        if let Some(user) = remote_user {
            vars.push(("REMOTE_USER", user));
        }
        let response = cgi(&dir, &vars, b"");
        response.assert_status(expected);
        assert!(
            response.body_text().contains(message),
            "{remote_user:?} {query}: {}",
            response.output
        );
    };
    let not_enabled = "service not enabled: git-receive-pack";
    check(None, RECEIVE, 403, not_enabled);
    check(Some(""), RECEIVE, 403, not_enabled);
    check(Some("alice"), RECEIVE, 200, "# service=git-receive-pack");
    // The POST too, not only the advertisement.
    let response = cgi(
        &dir,
        &[
            ("REQUEST_METHOD", "POST"),
            ("GIT_PROJECT_ROOT", &root_text),
            ("PATH_INFO", "/tiny.git/git-receive-pack"),
            ("CONTENT_TYPE", "application/x-git-receive-pack-request"),
            ("CONTENT_LENGTH", "4"),
            EXPORT_ALL,
        ],
        b"0000",
    );
    response.assert_status(403);

    // http.receivepack=false closes the repository even to an authenticated user.
    dir.git_in(&git, &repo)
        .args(["config", "http.receivepack", "false"])
        .run();
    check(Some("alice"), RECEIVE, 403, not_enabled);
    // As git's http-backend, http.receivepack=true opens it to anonymous pushes.
    dir.git_in(&git, &repo)
        .args(["config", "http.receivepack", "true"])
        .run();
    check(None, RECEIVE, 200, "# service=git-receive-pack");
    check(Some("alice"), RECEIVE, 200, "# service=git-receive-pack");
    // http.uploadpack=false closes fetches.
    dir.git_in(&git, &repo)
        .args(["config", "http.uploadpack", "false"])
        .run();
    check(
        Some("alice"),
        UPLOAD,
        403,
        "service not enabled: git-upload-pack",
    );
}

#[test]
fn path_attacks_are_not_found() {
    let dir = Dir::new("cgi-paths");
    let root = root_with(&dir, "tiny");
    let outside = dir.join("outside.git");
    write_file(&outside.join("git-daemon-export-ok"), b"");
    symlink(&outside, root.join("link.git")).unwrap_or_else(|error| panic!("symlink: {error}"));
    symlink(dir.path(), root.join("up")).unwrap_or_else(|error| panic!("symlink: {error}"));
    let root_text = root.to_string_lossy();
    let absolute = outside.display().to_string();
    // Web servers decode PATH_INFO: these are the decoded forms of `%2e%2e` and friends.
    for path in [
        "/../outside.git".to_owned(),
        "/tiny.git/../../outside.git".to_owned(),
        "/./tiny.git/../../outside.git".to_owned(),
        "/%2e%2e/outside.git".to_owned(),
        "//outside.git".to_owned(),
        format!("/{absolute}"),
        format!("/{absolute}/../outside.git"),
        "/link.git".to_owned(),
        "/up/outside.git".to_owned(),
        "/~/outside.git".to_owned(),
        "/tiny.git\\..\\..\\outside.git".to_owned(),
        "/tiny.git\n".to_owned(),
    ] {
        for export in [false, true] {
            let path_info = format!("{path}/info/refs");
            let mut vars = info_refs(&root_text, &path_info, UPLOAD);
            vars.push(VERSION_2);
            if export {
                vars.push(EXPORT_ALL);
            }
            let response = cgi(&dir, &vars, b"");
            response.assert_status(404);
            assert!(
                !response.body_text().contains("outside"),
                "{path}: {}",
                response.output
            );
        }
    }
    // The same repository through its real path is served.
    let mut vars = info_refs(&root_text, "/tiny.git/info/refs", UPLOAD);
    vars.extend([EXPORT_ALL, VERSION_2]);
    cgi(&dir, &vars, b"").assert_status(200);
}

#[test]
fn methods_dumb_paths_and_misconfiguration() {
    let dir = Dir::new("cgi-methods");
    let root = root_with(&dir, "tiny");
    let root_text = root.to_string_lossy();
    let run = |method: &str, path_info: &str, query: &str| {
        cgi(
            &dir,
            &[
                ("REQUEST_METHOD", method),
                ("GIT_PROJECT_ROOT", &root_text),
                ("PATH_INFO", path_info),
                ("QUERY_STRING", query),
                EXPORT_ALL,
                VERSION_2,
            ],
            b"",
        )
    };
    let response = run("POST", "/tiny.git/info/refs", UPLOAD);
    response.assert_status(405);
    response.assert_header("allow: get, head");
    let response = run("GET", "/tiny.git/git-upload-pack", "");
    response.assert_status(405);
    response.assert_header("allow: post");
    run("PUT", "/tiny.git/git-receive-pack", "").assert_status(405);
    // Dumb HTTP is not served.
    for path in [
        "/tiny.git/HEAD",
        "/tiny.git/objects/info/packs",
        "/tiny.git/objects/info/alternates",
        "/tiny.git/objects/12/3456789012345678901234567890123456789a",
        "/tiny.git/config",
        "/tiny.git",
    ] {
        run("GET", path, "").assert_status(404);
    }
    // info/refs without a service (a dumb client): 400, as from `packgate serve`.
    run("GET", "/tiny.git/info/refs", "").assert_status(400);

    // What the web server must provide.
    let response = cgi(&dir, &[("REQUEST_METHOD", "GET")], b"");
    response.assert_status(500);
    assert!(
        response
            .output
            .contains("no GIT_PROJECT_ROOT or PATH_TRANSLATED"),
        "the reason goes to the error log: {}",
        response.output
    );
    let response = cgi(
        &dir,
        &[("REQUEST_METHOD", "GET"), ("GIT_PROJECT_ROOT", &root_text)],
        b"",
    );
    response.assert_status(500);
    let missing_root = dir.join("no-such-root");
    let response = cgi(
        &dir,
        &info_refs(
            &missing_root.to_string_lossy(),
            "/tiny.git/info/refs",
            UPLOAD,
        ),
        b"",
    );
    response.assert_status(500);
    assert!(
        !response.body_text().contains("no-such-root"),
        "{}",
        response.output
    );
    // PATH_TRANSLATED (the web server's own mapping) instead of GIT_PROJECT_ROOT.
    let translated = format!("{}/tiny.git/info/refs", root.display());
    let response = cgi(
        &dir,
        &[
            ("REQUEST_METHOD", "GET"),
            ("PATH_TRANSLATED", &translated),
            ("QUERY_STRING", UPLOAD),
            EXPORT_ALL,
            VERSION_2,
        ],
        b"",
    );
    response.assert_status(200);
}

/// A project root with a copy of `preset` that the host serves to everyone and lets
/// `alice` push to.
fn host_for(dir: &Dir, preset: &str, export_all: bool) -> (std::path::PathBuf, CgiHost) {
    let root = root_with(dir, preset);
    let host = CgiHost::start(CgiHostOptions {
        project_root: root.clone(),
        export_all,
        users: vec![("alice".into(), "secret".into())],
        ..CgiHostOptions::default()
    });
    (root, host)
}

#[test]
fn clone_fetch_and_push_through_a_cgi_host() {
    let dir = Dir::new("cgi-host");
    let (root, host) = host_for(&dir, "small", true);
    let served = root.join("small.git");
    for (n, git) in Git::all().into_iter().enumerate() {
        let clone = dir.join(&format!("clone-{n}"));
        dir.git(&git)
            .args(["-c", "protocol.version=2", "clone"])
            .arg(host.url("small.git"))
            .arg(&clone)
            .run();
        fsck(&dir, &git, &clone.join(".git"));
        assert_same_refs(
            &refs(
                &dir,
                &git,
                &clone.join(".git"),
                &["refs/remotes/origin/main"],
            ),
            &crate::util::rename_refs(
                &refs(&dir, &git, &served, &["refs/heads/main"]),
                "refs/heads/",
                "refs/remotes/origin/",
            ),
            &format!("clone through the CGI host with {git}"),
        );

        // The server moves on; the client fetches.
        let append = Append {
            branch: "main".to_owned(),
            commits: 3,
            seed: 70 + n as u64,
            git: git.program.clone(),
            ..Append::default()
        };
        append_commits(&served, &append).unwrap_or_else(|error| panic!("append: {error}"));
        dir.git(&git)
            .current_dir(&clone)
            .args(["-c", "protocol.version=2", "pull", "--ff-only", "--quiet"])
            .run();
        fsck(&dir, &git, &clone.join(".git"));
        assert_eq!(
            refs(&dir, &git, &clone.join(".git"), &["refs/heads/main"])
                .values()
                .next(),
            refs(&dir, &git, &served, &["refs/heads/main"])
                .values()
                .next(),
            "fetch through the CGI host with {git}"
        );

        // A push without credentials: the host asks for them, git has none.
        write_file(&clone.join(format!("cgi-{n}.txt")), b"pushed through CGI\n");
        dir.git(&git).current_dir(&clone).args(["add", "."]).run();
        dir.git(&git)
            .current_dir(&clone)
            .args(["commit", "--quiet", "-m", "through CGI"])
            .run();
        let before = refs(&dir, &git, &served, &[]);
        let output = dir
            .git(&git)
            .current_dir(&clone)
            .args(["push", "origin", "HEAD:refs/heads/main"])
            .output();
        assert!(!output.status.success(), "{output}");
        assert_eq!(
            refs(&dir, &git, &served, &[]),
            before,
            "refused push changed refs"
        );
        let last = host.access_log().pop();
        assert_eq!(
            last.map(|logged| logged.status),
            Some(401),
            "{:?}",
            host.access_log()
        );
        // With wrong credentials: refused again.
        let output = dir
            .git(&git)
            .current_dir(&clone)
            .arg("push")
            .arg(host.url_as("alice", "wrong", "small.git"))
            .arg("HEAD:refs/heads/main")
            .output();
        assert!(!output.status.success(), "{output}");
        assert_eq!(
            refs(&dir, &git, &served, &[]),
            before,
            "refused push changed refs"
        );

        // With them: REMOTE_USER is set, the push goes through.
        let branch = format!("refs/heads/cgi-{n}");
        dir.git(&git)
            .current_dir(&clone)
            .arg("push")
            .arg(host.url_as("alice", "secret", "small.git"))
            .arg("HEAD:refs/heads/main")
            .arg(format!("HEAD:{branch}"))
            .run();
        fsck(&dir, &git, &served);
        let local = refs(&dir, &git, &clone.join(".git"), &["refs/heads/main"]);
        let remote = refs(&dir, &git, &served, &["refs/heads/main", &branch]);
        for name in ["refs/heads/main", branch.as_str()] {
            assert_eq!(
                remote.get(name),
                local.get("refs/heads/main"),
                "{name} after a push with {git}: {}",
                host.error_log()
            );
        }
    }
}

/// A whole repository pushed into an empty one with a small post buffer: git streams the
/// pack as a chunked request, which the host passes on without `CONTENT_LENGTH`.
#[test]
fn chunked_push_through_a_cgi_host() {
    let dir = Dir::new("cgi-host-chunked");
    let (root, host) = host_for(&dir, "small", true);
    let source = root.join("small.git");
    let empty = root.join("empty.git");
    let git = Git::newest();
    dir.git(&git)
        .args(["init", "--quiet", "--bare"])
        .arg(&empty)
        .run();
    let output = dir
        .git_in(&git, &source)
        .env("GIT_TRACE_CURL", "1")
        .env("GIT_TRACE_CURL_NO_DATA", "1")
        .args(["-c", "http.postBuffer=65536", "push", "--mirror"])
        .arg(host.url_as("alice", "secret", "empty.git"))
        .timeout(Duration::from_secs(120))
        .run();
    assert!(
        output.stderr_text().contains("Transfer-Encoding: chunked"),
        "git sent no chunked request: {output}"
    );
    fsck(&dir, &git, &empty);
    assert_same_refs(
        &refs(&dir, &git, &empty, &[]),
        &refs(&dir, &git, &source, &[]),
        "mirror push through the CGI host",
    );
}

/// Behind a web server that asks for no credentials on push URLs, a repository with
/// `http.receivepack=true` takes anonymous pushes, as from git's http-backend; without the
/// switch, the same push is refused.
#[test]
fn http_receivepack_true_opens_anonymous_push_through_a_cgi_host() {
    let dir = Dir::new("cgi-host-anonymous-push");
    let root = root_with(&dir, "tiny");
    let host = CgiHost::start(CgiHostOptions {
        project_root: root.clone(),
        export_all: true,
        users: Vec::new(),
        anonymous_push: true,
        ..CgiHostOptions::default()
    });
    let served = root.join("tiny.git");
    for (n, git) in Git::all().into_iter().enumerate() {
        let clone = dir.join(&format!("clone-{n}"));
        dir.git(&git)
            .args(["-c", "protocol.version=2", "clone", "--quiet"])
            .arg(host.url("tiny.git"))
            .arg(&clone)
            .run();
        write_file(&clone.join(format!("anonymous-{n}.txt")), b"no user\n");
        dir.git(&git).current_dir(&clone).args(["add", "."]).run();
        dir.git(&git)
            .current_dir(&clone)
            .args(["commit", "--quiet", "-m", "anonymous"])
            .run();
        let branch = format!("refs/heads/anonymous-{n}");
        let push = || {
            dir.git(&git)
                .current_dir(&clone)
                .args(["push", "origin"])
                .arg(format!("HEAD:{branch}"))
        };

        // No REMOTE_USER and no switch: refused.
        dir.git_in(&git, &served)
            .args(["config", "--unset-all", "http.receivepack"])
            .output();
        let output = push().output();
        assert!(!output.status.success(), "{output}");
        assert_eq!(
            host.access_log().pop().map(|logged| logged.status),
            Some(403),
            "{output}"
        );
        assert!(!refs(&dir, &git, &served, &[]).contains_key(&branch));

        dir.git_in(&git, &served)
            .args(["config", "http.receivepack", "true"])
            .run();
        dir.git_in(&git, &served)
            .args(["config", "core.logAllRefUpdates", "true"])
            .run();
        push().run();
        fsck(&dir, &git, &served);
        assert_eq!(
            refs(&dir, &git, &served, &[&branch]).get(&branch),
            refs(&dir, &git, &clone.join(".git"), &["refs/heads/main"]).get("refs/heads/main"),
            "anonymous push with {git}: {}",
            host.error_log()
        );
        // The reflog names the pusher as git's http-backend does.
        let who = dir
            .git_in(&git, &served)
            .args(["log", "-g", "-1", "--format=%gn <%ge>", &branch])
            .run()
            .stdout_text();
        assert_eq!(who.trim(), "anonymous <anonymous@http.127.0.0.1>", "{git}");
    }
}

#[test]
fn export_ok_through_a_cgi_host() {
    let dir = Dir::new("cgi-host-export");
    let (root, host) = host_for(&dir, "tiny", false);
    for git in Git::all() {
        let output = dir
            .git(&git)
            .args(["-c", "protocol.version=2", "ls-remote"])
            .arg(host.url("tiny.git"))
            .output();
        assert!(!output.status.success(), "{output}");
        assert!(output.stderr_text().contains("not found"), "{output}");
    }
    write_file(&root.join("tiny.git/git-daemon-export-ok"), b"");
    let expected = refs(
        &dir,
        &Git::newest(),
        &root.join("tiny.git"),
        &["refs/heads"],
    );
    for (n, git) in Git::all().into_iter().enumerate() {
        let clone = dir.join(&format!("clone-{n}"));
        dir.git(&git)
            .args(["-c", "protocol.version=2", "clone", "--bare"])
            .arg(host.url("tiny.git"))
            .arg(&clone)
            .run();
        fsck(&dir, &git, &clone);
        assert_same_refs(
            &refs(&dir, &git, &clone, &["refs/heads"]),
            &expected,
            &format!("clone of an exported repository with {git}"),
        );
    }
}
