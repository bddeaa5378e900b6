//! `receive.fsckObjects` as git's receive-pack runs it (`index-pack --strict`): the
//! `receive.fsck.<msg-id>` severities, `receive.fsck.skipList`, warnings told to the client,
//! and a pack that lacks an object its own objects name refused as an unpacker error. Each
//! sequence runs against packgate and against git's receive-pack, which must agree.

use crate::receive_pack::{rev_parse, Setup};
use crate::util::{file_url, Git, Output};

/// Which receive-pack serves the push.
#[derive(Clone, Copy, Debug)]
enum Server {
    Packgate,
    Git,
}

fn push(setup: &Setup, server: Server, args: &[&str]) -> Output {
    let mut command = setup.client().arg("push");
    if let Server::Packgate = server {
        command = command.arg(crate::receive_pack::receive_pack_option());
    }
    command.arg(file_url(&setup.server)).args(args).output()
}

fn config(setup: &Setup, args: &[&str]) {
    setup
        .dir
        .git_in(&setup.git, &setup.server)
        .arg("config")
        .args(args)
        .run();
}

/// A commit whose author has no email (git's `missingEmail`), on `refs/heads/bogus` of the
/// client.
fn bogus_commit(setup: &Setup) -> String {
    let tree = rev_parse(setup.client(), "HEAD^{tree}");
    let commit = format!(
        "tree {tree}\nauthor Bugs Bunny 1234567890 +0000\n\
         committer Bugs Bunny <bugs@bun.ni> 1234567890 +0000\n\nbroken on purpose\n"
    );
    let id = setup
        .client()
        .args([
            "hash-object",
            "--literally",
            "-t",
            "commit",
            "-w",
            "--stdin",
        ])
        .stdin(commit)
        .run()
        .stdout_text()
        .trim()
        .to_owned();
    setup
        .client()
        .args(["update-ref", "refs/heads/bogus", &id])
        .run();
    id
}

/// One step of a sequence: whether the push succeeded, and which of the texts looked for
/// its output holds.
fn step(output: &Output, texts: &[&str]) -> (bool, Vec<bool>) {
    let all = format!("{}{}", output.stdout_text(), output.stderr_text());
    (
        output.status.success(),
        texts.iter().map(|text| all.contains(text)).collect(),
    )
}

/// t5504's sequences: severities do not fall back on `fsck.*`, an unknown id is warned about,
/// `warn` lets the object in with a warning, `ignore` silently; skip lists; a fatal message
/// cannot be demoted.
#[test]
fn severities_and_skip_lists_as_git() {
    for git in Git::all() {
        let outcomes: Vec<Vec<(bool, Vec<bool>)>> = [Server::Packgate, Server::Git]
            .into_iter()
            .map(|server| {
                let setup = Setup::new("receive-fsck", &git);
                let commit = bogus_commit(&setup);
                config(&setup, &["receive.fsckObjects", "true"]);
                let mut steps = Vec::new();
                let email = &["missingEmail", "skipping unknown msg id 'whatever'"][..];
                steps.push(step(&push(&setup, server, &["bogus"]), email));
                config(&setup, &["fsck.missingEmail", "warn"]);
                steps.push(step(&push(&setup, server, &["bogus"]), email));
                config(&setup, &["receive.fsck.whatEver", "error"]);
                config(&setup, &["receive.fsck.missingEmail", "warn"]);
                steps.push(step(&push(&setup, server, &["bogus"]), email));
                config(&setup, &["--add", "receive.fsck.missingEmail", "ignore"]);
                steps.push(step(
                    &push(&setup, server, &["bogus:refs/heads/again"]),
                    email,
                ));

                config(&setup, &["--unset-all", "receive.fsck.missingEmail"]);
                let lists = &["could not open object name list: does-not-exist"][..];
                config(&setup, &["receive.fsck.skipList", "does-not-exist"]);
                steps.push(step(
                    &push(&setup, server, &["bogus:refs/heads/skip"]),
                    lists,
                ));
                crate::util::write_file(
                    &setup.server.join("SKIP"),
                    format!("# the bogus commit\n  {commit} # trailing\n\n").as_bytes(),
                );
                config(&setup, &["receive.fsck.skipList", "SKIP"]);
                steps.push(step(
                    &push(&setup, server, &["bogus:refs/heads/skip"]),
                    lists,
                ));

                config(&setup, &["receive.fsck.unterminatedheader", "warn"]);
                let demote = &["Cannot demote unterminatedheader to warn"][..];
                steps.push(step(&push(&setup, server, &["master"]), demote));
                steps
            })
            .collect();
        assert_eq!(outcomes[0], outcomes[1], "{git}: packgate, then git");
        let successes: Vec<bool> = outcomes[0].iter().map(|(ok, _)| *ok).collect();
        assert_eq!(
            successes,
            [false, false, true, true, false, true, false],
            "{git}"
        );
        assert_eq!(
            outcomes[0][2].1,
            [true, true],
            "{git}: a warning, and the unknown id"
        );
        assert_eq!(outcomes[0][3].1, [false, true], "{git}: ignored");
        assert!(outcomes[0][4].1[0] && outcomes[0][6].1[0], "{git}");
    }
}

/// A pack that lacks an object its tree names (the client's loose object holds another
/// blob's content): with `receive.fsckObjects` an unpacker error, "did not receive expected
/// object", as git's `index-pack --strict`; without, the connectivity check's "missing
/// necessary objects" (both as git says them when it keeps a pack, below
/// `receive.unpackLimit`). An informational message (a bad file mode) is a warning, not a refusal.
#[test]
fn strict_packs_bring_what_they_name() {
    for git in Git::all() {
        let results: Vec<Vec<(bool, Vec<bool>)>> = [Server::Packgate, Server::Git]
            .into_iter()
            .map(|server| {
                let setup = Setup::new("receive-strict", &git);
                let objects = setup.client.join(".git/objects");
                let loose = |id: &str| objects.join(&id[..2]).join(&id[2..]);
                let wanted = rev_parse(setup.client(), "HEAD:first.txt");
                let other = setup
                    .client()
                    .args(["hash-object", "-w", "--stdin"])
                    .stdin("bye\n")
                    .run()
                    .stdout_text()
                    .trim()
                    .to_owned();
                std::fs::rename(loose(&other), loose(&wanted))
                    .unwrap_or_else(|err| panic!("moving a loose object: {err}"));
                let texts = &[
                    "unpacker error",
                    "did not receive expected object",
                    "missing necessary objects",
                ][..];
                // A pack, not loose objects: git's index-pack, not unpack-objects (whose
                // wording differs).
                config(&setup, &["receive.unpackLimit", "1"]);
                let mut steps = vec![step(&push(&setup, server, &["master"]), texts)];
                config(&setup, &["receive.fsckObjects", "true"]);
                steps.push(step(&push(&setup, server, &["master"]), texts));

                let blob = setup
                    .client()
                    .args(["hash-object", "-w", "--stdin"])
                    .stdin("blob\n")
                    .run()
                    .stdout_text()
                    .trim()
                    .to_owned();
                let mut tree = b"100600 foo\0".to_vec();
                tree.extend_from_slice(&hex_to_bytes(&blob));
                let tree = setup
                    .client()
                    .args(["hash-object", "--literally", "-t", "tree", "-w", "--stdin"])
                    .stdin(tree)
                    .run()
                    .stdout_text()
                    .trim()
                    .to_owned();
                let modes = format!("object {tree}: badFilemode: contains bad file modes");
                steps.push(step(
                    &push(&setup, server, &[&format!("{tree}:refs/tags/tree")]),
                    &[&modes],
                ));
                steps
            })
            .collect();
        assert_eq!(results[0], results[1], "{git}: packgate, then git");
        assert_eq!(
            results[0],
            [
                (false, vec![false, false, true]),
                (false, vec![true, true, false]),
                (true, vec![true]),
            ],
            "{git}"
        );
    }
}

fn hex_to_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or_else(|err| panic!("{hex}: {err}"))
        })
        .collect()
}
