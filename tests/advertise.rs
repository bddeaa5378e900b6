//! `--advertise-refs`, `--http-backend-info-refs` and `--stateless-rpc`: what a smart-HTTP
//! front end runs. Responses are compared with git's own `upload-pack`.

use std::path::Path;
use std::time::Duration;

use crate::pkt::{concat, error_reason, line, lines, packfile, split_advertisement, DELIM, FLUSH};
use crate::util::{fsck, shared_fixture, Dir, Git, Output};

fn server(dir: &Dir, git: Option<&Git>, options: &[&str], repo: &Path) -> crate::util::Cmd {
    let command = match git {
        Some(git) => dir.git(git).arg("upload-pack"),
        None => dir.packgate().arg("upload-pack"),
    };
    command
        .args(options)
        .arg(repo)
        .env("GIT_PROTOCOL", "version=2")
        .timeout(Duration::from_secs(30))
}

#[test]
fn advertisement_then_exit() {
    let source = shared_fixture("small");
    let dir = Dir::new("advertise");
    for options in [
        &["--advertise-refs"][..],
        &["--http-backend-info-refs"],
        &["--stateless-rpc", "--advertise-refs"],
        &["--stateless-rpc", "--http-backend-info-refs"],
    ] {
        // It must not wait for the client: standard input stays open.
        let output = server(&dir, None, options, &source.path)
            .stdin_then_keep_open(Vec::new())
            .run();
        let context = format!("{options:?}");
        let Some((advertisement, rest)) = split_advertisement(&output.stdout) else {
            panic!("{context}: no advertisement: {output}")
        };
        assert!(
            rest.is_empty(),
            "{context}: output after the flush: {output}"
        );
        let capabilities = lines(&advertisement);
        assert_eq!(
            capabilities.first().map(String::as_str),
            Some("version 2"),
            "{output}"
        );
        for needed in ["ls-refs", "fetch"] {
            assert!(
                capabilities.iter().any(|capability| capability == needed
                    || capability.starts_with(&format!("{needed}="))),
                "{context}: no {needed} capability: {output}"
            );
        }
        assert!(
            capabilities.iter().all(|capability| !capability.is_empty()),
            "{output}"
        );
    }
}

fn ls_refs_request() -> Vec<u8> {
    concat([
        line("command=ls-refs\n"),
        line("object-format=sha1\n"),
        DELIM.to_vec(),
        line("peel\n"),
        line("symrefs\n"),
        line("unborn\n"),
        line("ref-prefix HEAD\n"),
        line("ref-prefix refs/heads/\n"),
        line("ref-prefix refs/tags/\n"),
        FLUSH.to_vec(),
    ])
}

#[track_caller]
fn assert_same_response(actual: &[u8], expected: &[u8], context: &str, output: &Output) {
    assert!(
        actual == expected,
        "{context}: packgate answered\n{}\ngit answered\n{}\n{output}",
        String::from_utf8_lossy(actual),
        String::from_utf8_lossy(expected)
    );
}

#[test]
fn stateless_ls_refs_matches_git() {
    let git = Git::newest();
    for preset in ["empty", "small", "many-refs"] {
        let source = shared_fixture(preset);
        let dir = Dir::new("stateless-ls-refs");
        let expected = server(&dir, Some(&git), &["--stateless-rpc"], &source.path)
            .stdin(ls_refs_request())
            .run();
        let actual = server(&dir, None, &["--stateless-rpc"], &source.path)
            .stdin(ls_refs_request())
            .run();
        assert_same_response(&actual.stdout, &expected.stdout, preset, &actual);
    }
}

#[test]
fn stateful_session_answers_two_commands_then_ends() {
    let git = Git::newest();
    let source = shared_fixture("small");
    let dir = Dir::new("stateful");
    let mut input = ls_refs_request();
    input.extend(ls_refs_request());
    input.extend(FLUSH);
    let expected = server(&dir, Some(&git), &[], &source.path)
        .stdin(input.clone())
        .run();
    let actual = server(&dir, None, &[], &source.path).stdin(input).run();
    let after_advertisement = |output: &Output| match split_advertisement(&output.stdout) {
        Some((_, rest)) => rest.to_vec(),
        None => panic!("no advertisement: {output}"),
    };
    assert_same_response(
        &after_advertisement(&actual),
        &after_advertisement(&expected),
        "two ls-refs",
        &actual,
    );
}

/// A complete fetch over `--stateless-rpc`: the pack holds every object of the repository,
/// and with the refs it passes `git fsck`.
#[test]
fn stateless_fetch_sends_a_complete_pack() {
    let git = Git::newest();
    for preset in ["tiny", "small"] {
        let source = shared_fixture(preset);
        let dir = Dir::new("stateless-fetch");
        let listing = dir
            .git_in(&git, &source.path)
            .args(["for-each-ref", "--format=%(objectname) %(refname)"])
            .run()
            .stdout_text();
        let mut request = vec![
            line("command=fetch\n"),
            line("object-format=sha1\n"),
            DELIM.to_vec(),
            line("ofs-delta\n"),
            line("no-progress\n"),
        ];
        let mut wants: Vec<&str> = listing
            .lines()
            .filter_map(|line| line.split(' ').next())
            .collect();
        wants.sort_unstable();
        wants.dedup();
        request.extend(wants.iter().map(|oid| line(format!("want {oid}\n"))));
        request.push(line("done\n"));
        request.push(FLUSH.to_vec());
        let output = server(&dir, None, &["--stateless-rpc"], &source.path)
            .stdin(concat(request))
            .run();
        assert_eq!(error_reason(&output.stdout), None, "{output}");
        let Some(pack) = packfile(&output.stdout) else {
            panic!("{preset}: no packfile section: {output}")
        };
        assert!(pack.starts_with(b"PACK"), "{preset}: not a pack: {output}");

        let client = dir.join("client.git");
        dir.git(&git)
            .args(["init", "--quiet", "--bare"])
            .arg(&client)
            .run();
        dir.git_in(&git, &client)
            .args(["index-pack", "--stdin"])
            .stdin(pack)
            .run();
        let updates: String = listing
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(oid, name)| format!("create {name} {oid}\n"))
            .collect();
        dir.git_in(&git, &client)
            .args(["update-ref", "--stdin"])
            .stdin(updates)
            .run();
        fsck(&dir, &git, &client);
        let count = dir
            .git_in(&git, &client)
            .args(["count-objects", "-v"])
            .run()
            .stdout_text();
        assert!(
            count.contains(&format!("in-pack: {}\n", source.objects)),
            "{preset}: the source has {} objects: {count}",
            source.objects
        );
    }
}

/// `GIT_USER_AGENT` names the server's agent, as with git's services (git's t5555 compares the
/// whole v2 advertisement with `GIT_USER_AGENT=FAKE`).
#[test]
fn git_user_agent_names_the_agent() {
    let source = shared_fixture("small");
    let dir = Dir::new("user-agent");
    let v2 = server(&dir, None, &["--advertise-refs"], &source.path)
        .env("GIT_USER_AGENT", "FAKE agent")
        .run();
    let Some((advertisement, _)) = split_advertisement(&v2.stdout) else {
        panic!("no advertisement: {v2}")
    };
    assert!(
        lines(&advertisement)
            .iter()
            .any(|line| line == "agent=FAKE.agent"),
        "v2: {v2}"
    );
    for service in ["upload-pack", "receive-pack"] {
        let v0 = dir
            .packgate()
            .args([service, "--advertise-refs"])
            .arg(&source.path)
            .env("GIT_USER_AGENT", "FAKE agent")
            .run();
        assert!(
            String::from_utf8_lossy(&v0.stdout).contains(" agent=FAKE.agent\n"),
            "{service} v0: {v0}"
        );
    }
}
