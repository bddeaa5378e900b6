//! v0 ACK sequences compared with what `git upload-pack` answers for the same requests on the
//! same repository (the fixture of the v2 tests).

use std::io::Write as _;

use super::*;
use crate::tests::{fixture, git, resolve, Repo};

/// A session's script: rounds of haves, each ending in a flush, then `done` if `done`.
struct Script<'a> {
    capabilities: &'a str,
    wants: &'a [&'a str],
    rounds: &'a [&'a [&'a str]],
    done: bool,
}

fn pkt(out: &mut Vec<u8>, line: &str) {
    write!(out, "{:04x}{line}", line.len() + 4).unwrap();
}

/// The answer lines git's upload-pack sends before the pack (no sideband asked for, so the
/// pack begins with `PACK`, which is not a pkt-line length).
fn git_answers(repo: &Repo, script: &Script<'_>, stateless: bool) -> Vec<String> {
    let mut request = Vec::new();
    for (n, want) in script.wants.iter().enumerate() {
        let id = resolve(repo, want);
        if n == 0 {
            pkt(
                &mut request,
                &format!("want {id} {}\n", script.capabilities),
            );
        } else {
            pkt(&mut request, &format!("want {id}\n"));
        }
    }
    request.extend_from_slice(b"0000");
    for round in script.rounds {
        for have in *round {
            pkt(&mut request, &format!("have {}\n", resolve(repo, have)));
        }
        request.extend_from_slice(b"0000");
    }
    if script.done {
        pkt(&mut request, "done\n");
    }
    let mut args = vec!["-c", "uploadpack.allowAnySHA1InWant=true", "upload-pack"];
    if stateless {
        args.push("--stateless-rpc");
    }
    args.push(".");
    let response = git(&repo.path, &args, Some(&request), &[]);
    let mut rest = response.as_slice();
    let mut lines = Vec::new();
    let mut in_advertisement = !stateless;
    while rest.len() >= 4 {
        let Ok(len) = usize::from_str_radix(std::str::from_utf8(&rest[..4]).unwrap_or("x"), 16)
        else {
            break;
        };
        if len < 4 {
            in_advertisement = false;
            rest = &rest[4..];
            continue;
        }
        let line = std::str::from_utf8(&rest[4..len]).unwrap().trim_end();
        rest = &rest[len..];
        if !in_advertisement {
            lines.push(line.to_owned());
        }
    }
    lines
}

/// Our answers to the same script, in one session (`stateless`: stop after the first flush
/// that continues, as git's `--stateless-rpc` does).
fn our_answers(repo: &Repo, script: &Script<'_>, stateless: bool) -> Vec<String> {
    let mode = if script.capabilities.contains("multi_ack_detailed") {
        AckMode::Detailed
    } else if script.capabilities.contains("multi_ack") {
        AckMode::MultiAck
    } else {
        AckMode::Single
    };
    let no_done = script.capabilities.split(' ').any(|c| c == "no-done");
    let wants = script.wants.iter().map(|rev| resolve(repo, rev)).collect();
    let mut negotiation = V0Negotiation::new(wants, mode, no_done);
    let db = repo.db();
    let mut acks = Vec::new();
    let mut ended = false;
    for round in script.rounds {
        for have in *round {
            negotiation
                .have(&db, &resolve(repo, have), &mut acks)
                .unwrap();
        }
        match negotiation.flush(&db, &mut acks).unwrap() {
            Round::SendPack => {
                ended = true;
                break;
            }
            Round::Continue if stateless => {
                ended = true;
                break;
            }
            Round::Continue => {}
        }
    }
    if !ended && script.done {
        negotiation.done(&mut acks);
    }
    acks.iter().map(ToString::to_string).collect()
}

fn check(script: Script<'_>) {
    let repo = fixture();
    for stateless in [false, true] {
        let git = git_answers(repo, &script, stateless);
        let ours = our_answers(repo, &script, stateless);
        assert_eq!(
            ours, git,
            "capabilities '{}', wants {:?}, rounds {:?}, done {}, stateless {stateless}",
            script.capabilities, script.wants, script.rounds, script.done
        );
    }
}

const MODES: [&str; 4] = [
    "multi_ack_detailed no-done",
    "multi_ack_detailed",
    "multi_ack",
    "",
];

#[test]
fn one_round_then_done() {
    for capabilities in MODES {
        for haves in [
            &["main~4"][..],
            &["?1", "main~4", "?2", "main~6"],
            &["?1", "?2"],
            &["main~1", "main~2", "main~3"],
            &[],
        ] {
            check(Script {
                capabilities,
                wants: &["main"],
                rounds: &[haves],
                done: true,
            });
        }
    }
}

#[test]
fn many_rounds() {
    for capabilities in MODES {
        for rounds in [
            &[&["?1", "?2"][..], &["?3"], &["main~6", "?4"], &["main~7"]][..],
            &[&["side", "side~1"], &["side~2", "main~9"], &["main~8"]],
            &[&["topic"], &["?5", "topic~1"], &["main~2", "?6"]],
            &[&[], &["?1"]],
        ] {
            for wants in [&["main", "side"][..], &["merged"], &["skewed"]] {
                check(Script {
                    capabilities,
                    wants,
                    rounds,
                    done: true,
                });
            }
        }
    }
}

#[test]
fn done_without_common_haves() {
    for capabilities in MODES {
        check(Script {
            capabilities,
            wants: &["main"],
            rounds: &[&["?1"], &["?2"]],
            done: true,
        });
        check(Script {
            capabilities,
            wants: &["main", "v7"],
            rounds: &[],
            done: true,
        });
    }
}

#[test]
fn non_commit_haves_and_tag_wants() {
    for capabilities in MODES {
        check(Script {
            capabilities,
            wants: &["v7-of-v7", "tree-tag"],
            rounds: &[&["main:file1", "main^{tree}"], &["main~3", "?2"]],
            done: true,
        });
    }
}
