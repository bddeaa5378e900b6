//! The `proc-receive` hook (`receive.procReceiveRefs`, the "AGit" flow of review servers):
//! `git push` through `packgate receive-pack` and through git's own receive-pack into two
//! servers set up alike, with the same hook scripts; the client's `--porcelain` lines, its
//! `remote:` lines, the refs and what the hooks saw must be the same. Over stdio with every
//! git, one case over HTTP (`packgate serve`), and report-status (v1) by hand.

use std::path::{Path, PathBuf};

use crate::http::{Push, Server};
use crate::pkt::{concat, line, FLUSH};
use crate::receive_pack::{install_hook, receive_pack_option, rev_parse, Setup};
use crate::util::{file_url, fsck, refs, Git, Output};

/// A review server's `proc-receive` hook, in plain sh, speaking git's pkt-line protocol:
/// `refs/for/<branch>/<topic>` becomes `refs/changes/<n>/<branch>/<topic>` (reported with
/// `option refname`, `old-oid` and `new-oid`); a topic named `reject` is refused (`ng`),
/// `fallthrough` is left to receive-pack, `silent` gets no report; push options are logged.
const REVIEW_HOOK: &str = r##"
read_pkt() {
	len=$(head -c 4)
	case "$len" in
	"") return 2 ;;
	0000) return 1 ;;
	esac
	pkt=$(head -c $((0x$len - 4)) | tr '\0' ' ')
}
write_pkt() {
	printf '%04x%s\n' $((${#1} + 5)) "$1"
}
echo "# proc-receive hook" >&2
offered=
while read_pkt; do offered="$offered $pkt"; done
case "$offered" in
*push-options*) printf '001bversion=1\000push-options\n0000'; options=yes ;;
*) printf '000eversion=1\n0000'; options= ;;
esac
: >commands.tmp
while read_pkt; do echo "$pkt" >>commands.tmp; done
if test -n "$options"; then
	while read_pkt; do echo "proc-receive< option $pkt" >&2; done
fi
n=0
while read old new ref; do
	echo "proc-receive< $old $new $ref" >&2
	n=$((n + 1))
	case "$ref" in
	*/reject) write_pkt "ng $ref rejected by review" ;;
	*/fallthrough) write_pkt "ok $ref"; write_pkt "option fall-through" ;;
	*/silent) ;;
	refs/for/*)
		change="refs/changes/$n/${ref#refs/for/}"
		git update-ref "$change" "$new" || exit 1
		write_pkt "ok $ref"
		write_pkt "option refname $change"
		write_pkt "option old-oid $old"
		write_pkt "option new-oid $new"
		;;
	*) write_pkt "ok $ref" ;;
	esac
done <commands.tmp
rm -f commands.tmp
printf '0000'
"##;

/// The receive hooks log what they are given, to standard error (the client's `remote:`
/// lines).
const PRE_RECEIVE: &str =
    "while read old new ref; do echo \"pre-receive< $old $new $ref\" >&2; done";
const POST_RECEIVE: &str =
    "while read old new ref; do echo \"post-receive< $old $new $ref\" >&2; done";

/// A client and two servers set up alike: one pushed to through packgate, one through git's
/// receive-pack (of the newest git).
struct Twins {
    setup: Setup,
    reference: PathBuf,
    reference_git: Git,
}

/// What a push looked like from the client and left on the server.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    success: bool,
    /// `git push --porcelain`'s standard output, the server's URL as `<URL>`.
    porcelain: String,
    /// The `remote:` lines.
    remote: Vec<String>,
    /// `refname value` of every ref on the server.
    refs: Vec<String>,
}

impl Twins {
    fn new(name: &str, git: &Git, config: &[(&str, &str)], proc_receive: &str) -> Twins {
        let setup = Setup::new(&format!("proc-receive-{name}"), git);
        let reference = setup.dir.join("reference.git");
        let reference_git = Git::newest();
        setup
            .dir
            .git(git)
            .args(["init", "-q", "--bare"])
            .arg(&reference)
            .run();
        let twins = Twins {
            setup,
            reference,
            reference_git,
        };
        // Both servers start with the client's master, before any hook.
        for server in twins.servers() {
            let output = twins.push_to(&server, &["master"]);
            assert!(output.status.success(), "{output}");
            for (key, value) in config {
                twins
                    .setup
                    .dir
                    .git_in(git, &server)
                    .args(["config", "--add", key, value])
                    .run();
            }
            let hooks = server.join("hooks");
            install_hook(&hooks, "pre-receive", PRE_RECEIVE);
            install_hook(&hooks, "post-receive", POST_RECEIVE);
            install_hook(&hooks, "proc-receive", proc_receive);
            // git's receive-pack would start `git maintenance` (of whichever git is first on
            // PATH) after the push: not what is compared.
            twins
                .setup
                .dir
                .git_in(git, &server)
                .args(["config", "receive.autogc", "false"])
                .run();
        }
        twins
    }

    fn servers(&self) -> [PathBuf; 2] {
        [self.setup.server.clone(), self.reference.clone()]
    }

    /// `git push --porcelain <url> <args>` from the client, through packgate for the first
    /// server and git's receive-pack for the other.
    fn push_to(&self, server: &Path, args: &[&str]) -> Output {
        let program = if *server == self.setup.server {
            receive_pack_option()
        } else {
            format!(
                "--receive-pack='{}' receive-pack",
                self.reference_git.program.display()
            )
        };
        self.setup
            .client()
            .args(["push", "--porcelain"])
            .arg(program)
            .arg(file_url(server))
            .args(args)
            .output()
    }

    /// The push through both; asserts that the client saw the same from each, and returns
    /// what it saw from packgate.
    fn push(&self, args: &[&str]) -> Seen {
        let [ours, theirs] = self.servers().map(|server| {
            let output = self.push_to(&server, args);
            self.seen(&server, &file_url(&server), &output)
        });
        assert_eq!(
            ours, theirs,
            "packgate (left) and git (right) differ: {args:?}"
        );
        fsck(&self.setup.dir, &self.setup.git, &self.setup.server);
        ours
    }

    fn seen(&self, server: &Path, url: &str, output: &Output) -> Seen {
        let listed = refs(&self.setup.dir, &self.setup.git, server, &[]);
        Seen {
            success: output.status.success(),
            porcelain: output.stdout_text().replace(url, "<URL>"),
            remote: output
                .stderr_text()
                .lines()
                .filter(|line| line.starts_with("remote:"))
                .map(|line| line.trim_end().to_owned())
                .collect(),
            refs: listed
                .into_iter()
                .map(|(name, value)| format!("{name} {value}"))
                .collect(),
        }
    }

    fn head(&self) -> String {
        rev_parse(self.setup.client(), "HEAD")
    }
}

const ZERO: &str = "0000000000000000000000000000000000000000";

/// The AGit flow: a push to `refs/for/master/topic` becomes a review ref the hook creates
/// (`option refname`, `old-oid`, `new-oid`), next to an ordinary branch update; the client
/// prints the review ref, `post-receive` sees it, and `refs/for/…` itself is never created.
#[test]
fn review_refs_as_with_git() {
    for git in Git::all() {
        let twins = Twins::new(
            "review",
            &git,
            &[("receive.procReceiveRefs", "refs/for")],
            REVIEW_HOOK,
        );
        let first = twins.head();
        let second = twins.setup.commit("second");
        let seen = twins.push(&["HEAD:refs/for/master/topic", "HEAD:refs/heads/next"]);
        assert!(seen.success, "{seen:?} with {git}");
        assert!(
            seen.porcelain
                .contains("*\tHEAD:refs/changes/1/master/topic\t[new reference]"),
            "{seen:?} with {git}"
        );
        assert!(
            seen.remote.contains(&format!(
                "remote: post-receive< {ZERO} {second} refs/changes/1/master/topic"
            )),
            "{seen:?}"
        );
        assert_eq!(
            seen.refs,
            [
                format!("refs/changes/1/master/topic {second}"),
                format!("refs/heads/master {first}"),
                format!("refs/heads/next {second}"),
            ],
            "with {git}"
        );
    }
}

/// `ng`, `fall-through` and a command the hook does not report on, in one push.
#[test]
fn rejected_fall_through_and_unreported_as_with_git() {
    for git in Git::all() {
        let twins = Twins::new(
            "mixed",
            &git,
            &[("receive.procReceiveRefs", "refs/for")],
            REVIEW_HOOK,
        );
        let second = twins.setup.commit("second");
        let seen = twins.push(&[
            "HEAD:refs/for/master/reject",
            "HEAD:refs/for/master/fallthrough",
            "HEAD:refs/for/master/silent",
            "HEAD:refs/for/master/topic",
        ]);
        assert!(!seen.success, "{seen:?}");
        let porcelain = &seen.porcelain;
        for expected in [
            "!\tHEAD:refs/for/master/reject\t[remote rejected] (rejected by review)",
            "*\tHEAD:refs/for/master/fallthrough\t[new reference]",
            "!\tHEAD:refs/for/master/silent\t[remote rejected] (proc-receive failed to report status)",
            "*\tHEAD:refs/changes/4/master/topic\t[new reference]",
        ] {
            assert!(porcelain.contains(expected), "{expected} in {porcelain} with {git}");
        }
        // The fall-through ref is receive-pack's to create.
        assert!(
            seen.refs
                .contains(&format!("refs/for/master/fallthrough {second}")),
            "{seen:?}"
        );
    }
}

/// A hook that fails before it reports fails its commands; with `--atomic`, the ordinary
/// ones too. Without `--atomic` those go through.
#[test]
fn failing_hook_and_atomic_pushes_as_with_git() {
    let failing = "echo \"proc-receive: giving up\" >&2; exit 1";
    for git in Git::all() {
        let twins = Twins::new(
            "failing",
            &git,
            &[("receive.procReceiveRefs", "refs/for")],
            failing,
        );
        twins.setup.commit("second");
        let seen = twins.push(&[
            "--atomic",
            "HEAD:refs/heads/next",
            "HEAD:refs/for/master/topic",
        ]);
        assert!(!seen.success);
        assert!(
            seen.porcelain.contains(
                "!\tHEAD:refs/for/master/topic\t[remote rejected] (fail to run proc-receive hook)"
            ),
            "{seen:?}"
        );
        assert!(
            !seen.refs.iter().any(|r| r.starts_with("refs/heads/next")),
            "{seen:?}"
        );
        let seen = twins.push(&["HEAD:refs/heads/next", "HEAD:refs/for/master/topic"]);
        assert!(
            seen.refs.iter().any(|r| r.starts_with("refs/heads/next")),
            "{seen:?}"
        );
    }
}

/// An atomic push mixing a branch and review refs, with push options, which the hook asks
/// for (`version=1\0push-options`) and receives on its pipe.
#[test]
fn atomic_push_with_options_as_with_git() {
    for git in Git::all() {
        let twins = Twins::new(
            "atomic",
            &git,
            &[
                ("receive.procReceiveRefs", "refs/for"),
                ("receive.advertisePushOptions", "true"),
            ],
            REVIEW_HOOK,
        );
        twins.setup.commit("second");
        let seen = twins.push(&[
            "--atomic",
            "-o",
            "reviewer=alice",
            "-o",
            "topic=x",
            "HEAD:refs/heads/next",
            "HEAD:refs/for/master/topic",
        ]);
        assert!(seen.success, "{seen:?}");
        assert!(
            seen.remote
                .contains(&"remote: proc-receive< option reviewer=alice".to_owned()),
            "{seen:?}"
        );
        // One refused review ref fails an atomic push whole.
        twins.setup.commit("third");
        let seen = twins.push(&[
            "--atomic",
            "HEAD:refs/heads/next",
            "HEAD:refs/for/master/reject",
        ]);
        assert!(!seen.success, "{seen:?}");
        assert!(
            seen.porcelain.contains(
                "!\tHEAD:refs/heads/next\t[remote rejected] (fail to run proc-receive hook)"
            ),
            "{seen:?}"
        );
    }
}

/// `receive.procReceiveRefs` with modifiers and negation (`m:`, `ad:`, `a!:`): which
/// commands reach the hook.
#[test]
fn modifiers_select_commands_as_with_git() {
    let git = Git::newest();
    let twins = Twins::new(
        "modifiers",
        &git,
        &[
            ("receive.procReceiveRefs", "m:refs/heads/master"),
            ("receive.procReceiveRefs", "a!:refs/heads"),
        ],
        REVIEW_HOOK,
    );
    twins.setup.commit("second");
    let seen = twins.push(&[
        "HEAD:refs/heads/master",
        "HEAD:refs/tags/v1",
        "HEAD:refs/heads/new",
    ]);
    assert!(seen.success, "{seen:?}");
    let hook_saw: Vec<&String> = seen
        .remote
        .iter()
        .filter(|line| line.starts_with("remote: proc-receive< "))
        .collect();
    assert_eq!(hook_saw.len(), 2, "{seen:?}");
}

/// Over HTTP (`packgate serve`): the same review ref, reported to the client.
#[test]
fn review_refs_over_http() {
    let git = Git::newest();
    let setup = Setup::new("proc-receive-http", &git);
    let root = setup.dir.join("root");
    let served = root.join("served.git");
    setup
        .dir
        .git(&git)
        .args(["init", "-q", "--bare"])
        .arg(&served)
        .run();
    setup
        .dir
        .git_in(&git, &served)
        .args(["config", "receive.procReceiveRefs", "refs/for"])
        .run();
    install_hook(&served.join("hooks"), "proc-receive", REVIEW_HOOK);
    install_hook(&served.join("hooks"), "post-receive", POST_RECEIVE);
    let server = Server::start(&root, Push::AllowedWithoutAuthentication);
    let head = rev_parse(setup.client(), "HEAD");
    let output = setup
        .client()
        .args(["push", "--porcelain"])
        .arg(server.http_url("served.git"))
        .args(["HEAD:refs/heads/master", "HEAD:refs/for/master/topic"])
        .output();
    assert!(output.status.success(), "{output}");
    assert!(
        output
            .stdout_text()
            .contains("*\tHEAD:refs/changes/1/master/topic\t[new reference]"),
        "{output}"
    );
    assert!(
        output.stderr_text().contains(&format!(
            "remote: post-receive< {ZERO} {head} refs/changes/1/master/topic"
        )),
        "{output}"
    );
    let listed = refs(&setup.dir, &git, &served, &[]);
    assert_eq!(listed.get("refs/changes/1/master/topic"), Some(&head));
    assert!(!listed.contains_key("refs/for/master/topic"));
    fsck(&setup.dir, &git, &served);
}

/// A report-status (v1) client learns only `ok` for a review ref, as from git: the rewritten
/// names travel in report-status-v2 only. The whole response, byte for byte, against git's.
#[test]
fn report_status_v1_as_with_git() {
    let git = Git::newest();
    let twins = Twins::new(
        "v1",
        &git,
        &[("receive.procReceiveRefs", "refs/for")],
        REVIEW_HOOK,
    );
    let head = twins.head();
    // The objects are there already: an empty pack, as git's t5411 sends.
    let empty_pack = twins
        .setup
        .dir
        .git_in(&git, &twins.reference)
        .args(["pack-objects", "--stdout"])
        .stdin("")
        .output()
        .stdout;
    let request = concat([
        line(format!(
            "{ZERO} {head} refs/for/master/topic\0report-status"
        )),
        line(format!("{ZERO} {head} refs/for/master/reject")),
        line(format!("{ZERO} {head} refs/heads/other")),
        FLUSH.to_vec(),
        empty_pack,
    ]);
    let [ours, theirs] = twins.servers().map(|server| {
        let mut command = if server == twins.setup.server {
            twins.setup.dir.packgate().arg("receive-pack")
        } else {
            twins.setup.dir.git(&git).arg("receive-pack")
        };
        command = command
            .arg("--stateless-rpc")
            .arg(&server)
            .stdin(request.clone());
        let output = command.output();
        assert!(output.status.success(), "{output}");
        (output.stdout, refs(&twins.setup.dir, &git, &server, &[]))
    });
    assert_eq!(
        String::from_utf8_lossy(&ours.0),
        String::from_utf8_lossy(&theirs.0)
    );
    assert_eq!(ours.1, theirs.1);
    let text = String::from_utf8_lossy(&ours.0).into_owned();
    assert!(text.contains("ok refs/for/master/topic\n"), "{text}");
    assert!(!text.contains("option"), "{text}");
}

/// The script is found as the other hooks are: here in a relative `core.hooksPath`, taken
/// from the repository, whatever the directory the server was started in.
#[test]
fn script_in_a_relative_hooks_path() {
    let git = Git::newest();
    let setup = Setup::new("proc-receive-hooks-path", &git);
    setup.server_config("receive.procReceiveRefs", "refs/for");
    setup.server_config("core.hooksPath", "custom-hooks");
    install_hook(
        &setup.server.join("custom-hooks"),
        "proc-receive",
        REVIEW_HOOK,
    );
    let head = rev_parse(setup.client(), "HEAD");
    let output = setup.push(&["HEAD:refs/for/master/topic"]);
    assert!(output.status.success(), "{output}");
    assert_eq!(
        setup.server_ref("refs/changes/1/master/topic").as_deref(),
        Some(head.as_str())
    );
    assert_eq!(setup.server_ref("refs/for/master/topic"), None);
}
