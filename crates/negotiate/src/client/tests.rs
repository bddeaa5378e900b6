//! The client negotiator against packgate's own server negotiator, in memory, over
//! repositories built by git; and against what `git fetch` sends.

use std::{collections::VecDeque, path::PathBuf};

use super::*;
use crate::{
    tests::git,
    v0::{Round, V0Negotiation},
    Negotiation,
};

/// Commits written with `git fast-import`, then split into a client and a server repository
/// by fetching `refs/heads/client/*` and `refs/heads/server/*` out of the full one.
#[derive(Default)]
struct History {
    stream: String,
    marks: usize,
}

impl History {
    /// A commit at `time` with `parents` (marks); its mark.
    fn commit(&mut self, time: u64, parents: &[usize]) -> usize {
        self.marks += 1;
        let mark = self.marks;
        if parents.is_empty() {
            self.stream.push_str("reset refs/build\n");
        }
        self.stream.push_str(&format!(
            "commit refs/build\nmark :{mark}\n\
             author A <a@example.com> {time} +0000\ncommitter C <c@example.com> {time} +0000\n\
             data {}\n{mark}\n",
            mark.to_string().len()
        ));
        if let Some((first, rest)) = parents.split_first() {
            self.stream.push_str(&format!("from :{first}\n"));
            for parent in rest {
                self.stream.push_str(&format!("merge :{parent}\n"));
            }
        }
        self.stream.push_str(&format!(
            "M 100644 inline f{}\ndata {}\n{mark}\n\n",
            mark % 7,
            mark.to_string().len()
        ));
        mark
    }

    /// `count` commits in a line on top of `from` (if any), `step` seconds apart from
    /// `time`; the marks, oldest first.
    fn line(&mut self, from: Option<usize>, count: usize, time: u64, step: u64) -> Vec<usize> {
        let mut marks = Vec::with_capacity(count);
        let mut parent = from;
        for n in 0..count as u64 {
            let mark = self.commit(time + n * step, &parent.into_iter().collect::<Vec<_>>());
            marks.push(mark);
            parent = Some(mark);
        }
        marks
    }

    fn branch(&mut self, name: &str, mark: usize) {
        self.stream
            .push_str(&format!("reset refs/heads/{name}\nfrom :{mark}\n\n"));
    }

    fn build(self) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full.git");
        git(
            dir.path(),
            &["init", "--quiet", "--bare", "full.git"],
            None,
            &[],
        );
        git(
            &full,
            &["fast-import", "--quiet", "--export-marks=marks"],
            Some(self.stream.as_bytes()),
            &[],
        );
        let marks = std::fs::read_to_string(full.join("marks")).unwrap();
        let mut ids = vec![ObjectId::null(gix_hash::Kind::Sha1); self.marks + 1];
        for line in marks.lines() {
            let (mark, id) = line.split_once(' ').unwrap();
            ids[mark[1..].parse::<usize>().unwrap()] = ObjectId::from_hex(id.as_bytes()).unwrap();
        }
        let side = |name: &str| {
            git(
                dir.path(),
                &["init", "--quiet", "--bare", &format!("{name}.git")],
                None,
                &[],
            );
            let path = dir.path().join(format!("{name}.git"));
            git(
                &path,
                &[
                    "fetch",
                    "--quiet",
                    "../full.git",
                    &format!("refs/heads/{name}/*:refs/heads/*"),
                ],
                None,
                &[],
            );
            path
        };
        let client = side("client");
        let server = side("server");
        Pair {
            _dir: dir,
            client,
            server,
            ids,
        }
    }
}

struct Pair {
    _dir: tempfile::TempDir,
    client: PathBuf,
    server: PathBuf,
    /// By mark.
    ids: Vec<ObjectId>,
}

impl Pair {
    fn refs(path: &std::path::Path) -> Vec<ObjectId> {
        let out = git(
            path,
            &["for-each-ref", "--format=%(objectname)", "refs/"],
            None,
            &[],
        );
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| ObjectId::from_hex(line.as_bytes()).unwrap())
            .collect()
    }

    fn client_db(&self) -> gix_odb::Handle {
        gix_odb::at(self.client.join("objects"), gix_hash::Kind::Sha1).unwrap()
    }

    fn server_db(&self) -> gix_odb::Handle {
        gix_odb::at(self.server.join("objects"), gix_hash::Kind::Sha1).unwrap()
    }

    /// A negotiator over `protocol` with every client ref as a tip (in refname order, as
    /// git adds them).
    fn negotiator(&self, protocol: Protocol) -> ClientNegotiator {
        self.negotiator_with(protocol, Algorithm::Consecutive)
    }

    fn negotiator_with(&self, protocol: Protocol, algorithm: Algorithm) -> ClientNegotiator {
        let mut negotiator = ClientNegotiator::with_algorithm(protocol, algorithm);
        for tip in Self::refs(&self.client) {
            negotiator.add_tip(&self.client_db(), &tip).unwrap();
        }
        negotiator
    }

    fn id(&self, mark: usize) -> ObjectId {
        self.ids[mark]
    }
}

/// How a negotiation went.
#[derive(Debug, Default)]
struct Outcome {
    /// The haves of each request (v0: each flush, and the haves before `done`).
    rounds: Vec<Vec<ObjectId>>,
    /// `done` was sent.
    done: bool,
    /// The server said `ready`.
    ready: bool,
    /// What the server knows is common when it sends the pack.
    common: Vec<ObjectId>,
    /// v0: every answer line.
    acks: Vec<Ack>,
}

impl Outcome {
    fn sizes(&self) -> Vec<usize> {
        self.rounds.iter().map(Vec::len).collect()
    }

    fn haves(&self) -> Vec<ObjectId> {
        self.rounds.concat()
    }
}

/// Protocol v2 against [`Negotiation`], a fresh one per request as upload-pack does.
fn drive_v2(pair: &Pair, mut negotiator: ClientNegotiator) -> Outcome {
    let (client, server) = (pair.client_db(), pair.server_db());
    let wants = Pair::refs(&pair.server);
    let mut outcome = Outcome::default();
    for _ in 0..1000 {
        let request = negotiator.next_request(&client).unwrap();
        let mut haves = negotiator.common().to_vec();
        haves.extend(&request.haves);
        outcome.rounds.push(request.haves);
        let mut negotiation = Negotiation::new(wants.clone());
        let answer = negotiation.process_haves(&server, &haves).unwrap();
        if request.done {
            assert_eq!(request.then, Next::Pack);
            outcome.done = true;
            outcome.common = negotiation.common().to_vec();
            return outcome;
        }
        assert_eq!(request.then, Next::Read);
        match negotiator.receive_v2(&client, &answer).unwrap() {
            Next::Send => {}
            Next::Pack => {
                assert!(answer.ready && negotiator.ready());
                outcome.ready = true;
                outcome.common = negotiation.common().to_vec();
                return outcome;
            }
            Next::Read => panic!("v2 reads one section per request"),
        }
    }
    panic!("negotiation did not end");
}

/// Protocol v0 (`multi_ack_detailed`) against [`V0Negotiation`]: one server over a stateful
/// connection, its answers queued as on a pipe; or one per request when `stateless`.
fn drive_v0(pair: &Pair, stateless: bool, no_done: bool, gated: bool) -> Outcome {
    drive_v0_in(pair, AckMode::Detailed, stateless, no_done, gated)
}

/// [`drive_v0()`] in acknowledgment mode `mode`.
fn drive_v0_in(pair: &Pair, mode: AckMode, stateless: bool, no_done: bool, gated: bool) -> Outcome {
    let (client, server) = (pair.client_db(), pair.server_db());
    let wants = Pair::refs(&pair.server);
    let protocol = Protocol::V0 {
        mode,
        stateless,
        no_done,
    };
    let mut negotiator = pair.negotiator(protocol);
    if !gated {
        negotiator = negotiator.ungated();
    }
    let mut session = V0Negotiation::new(wants.clone(), mode, no_done);
    let mut pipe: VecDeque<Ack> = VecDeque::new();
    let mut outcome = Outcome::default();
    let mut pack = false;
    let mut next = Next::Send;
    for _ in 0..100_000 {
        match next {
            Next::Send => {
                let request = negotiator.next_request(&client).unwrap();
                if pack {
                    // Only over a stateful connection with no-done: the client is a round
                    // ahead when the server sends `ready` and the pack; the server no longer
                    // reads.
                    assert!(no_done && !stateless, "the client sent after the pack");
                    outcome.rounds.push(request.haves);
                    next = request.then;
                    continue;
                }
                if stateless {
                    session = V0Negotiation::new(wants.clone(), mode, no_done);
                    for id in negotiator.common() {
                        session.have(&server, id, &mut Vec::new()).unwrap();
                    }
                }
                let mut acks = Vec::new();
                for id in &request.haves {
                    session.have(&server, id, &mut acks).unwrap();
                }
                // Neither haves nor `done`: v0 with no-done after `ready` sends nothing.
                let nothing = request.haves.is_empty() && !request.done;
                outcome.rounds.push(request.haves);
                if request.done {
                    outcome.done = true;
                    session.done(&mut acks);
                    pack = true;
                } else if !nothing && session.flush(&server, &mut acks).unwrap() == Round::SendPack
                {
                    pack = true;
                }
                outcome.ready |= acks.iter().any(|ack| matches!(ack, Ack::Ready(_)));
                outcome.acks.extend(acks.iter().copied());
                pipe.extend(acks);
                next = request.then;
            }
            Next::Read => {
                let answer = pipe
                    .pop_front()
                    .expect("the client waits for an answer never sent");
                next = negotiator.receive_v0(&client, answer).unwrap();
            }
            Next::Pack => {
                assert!(pack, "the client expects a pack the server does not send");
                // Single-ACK servers (git's too) acknowledge every common have while only one
                // was new; the client stops reading at the first.
                assert!(
                    mode == AckMode::Single || pipe.is_empty(),
                    "answers left unread: {pipe:?}"
                );
                outcome.common = session.negotiation().common().to_vec();
                return outcome;
            }
        }
    }
    panic!("negotiation did not end");
}

const BASE: u64 = 1_600_000_000;

#[test]
fn round_sizes_grow_as_gits() {
    let mut v2 = vec![INITIAL_FLUSH];
    for _ in 0..11 {
        v2.push(next_flush(true, *v2.last().unwrap()));
    }
    assert_eq!(
        v2,
        [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 18022]
    );
    let mut stateful = vec![INITIAL_FLUSH];
    for _ in 0..4 {
        stateful.push(next_flush(false, *stateful.last().unwrap()));
    }
    assert_eq!(stateful, [16, 32, 64, 96, 128]);
    assert_eq!(next_flush(true, 0), 1);
    assert!(next_flush(true, usize::MAX) > 0);
}

/// The client has 600 commits, the server an unrelated history: no ACK ever, so every have
/// is sent (the in_vain cut-off never starts counting), then `done`.
#[test]
fn unrelated_histories_send_every_have_then_done() {
    let mut history = History::default();
    let ours = history.line(None, 600, BASE, 10);
    history.branch("client/main", ours[599]);
    let theirs = history.line(None, 5, BASE, 7);
    history.branch("server/main", theirs[4]);
    let pair = history.build();

    let v2 = drive_v2(&pair, pair.negotiator(Protocol::V2));
    assert_eq!(v2.sizes(), [16, 32, 64, 128, 256, 104, 0]);
    assert!(v2.done && !v2.ready && v2.common.is_empty());
    let expected: Vec<ObjectId> = ours.iter().rev().map(|mark| pair.id(*mark)).collect();
    assert_eq!(v2.haves(), expected, "newest first");

    let stateful = drive_v0(&pair, false, false, true);
    assert_eq!(stateful.sizes()[..5], [16, 16, 32, 32, 32]);
    assert_eq!(stateful.haves(), expected);
    assert!(stateful.done);
    let stateless = drive_v0(&pair, true, false, true);
    assert_eq!(stateless.sizes(), [16, 16, 32, 64, 128, 256, 88]);
    assert_eq!(stateless.haves(), expected);
}

/// The server moved on from the client's tip: one round, the tip is acknowledged, ready.
#[test]
fn straight_fetch() {
    let mut history = History::default();
    let shared = history.line(None, 40, BASE, 10);
    history.branch("client/main", shared[39]);
    let new = history.line(Some(shared[39]), 3, BASE + 1000, 10);
    history.branch("server/main", new[2]);
    let pair = history.build();
    let tip = pair.id(shared[39]);

    let v2 = drive_v2(&pair, pair.negotiator(Protocol::V2));
    assert_eq!(v2.sizes(), [16]);
    assert_eq!(v2.rounds[0][0], tip);
    assert!(v2.ready && !v2.done);
    assert!(v2.common.contains(&tip));

    for stateless in [false, true] {
        for no_done in [false, true] {
            let v0 = drive_v0(&pair, stateless, no_done, true);
            assert!(v0.ready, "stateless {stateless} no-done {no_done}");
            assert_eq!(v0.done, !no_done);
            assert!(v0.common.contains(&tip));
        }
    }
}

/// The client is 100 commits ahead on a branch of its own: they are sent first (newest
/// first), then the shared tip is acknowledged and nothing below it is sent.
#[test]
fn client_ahead() {
    let mut history = History::default();
    let shared = history.line(None, 50, BASE, 10);
    let local = history.line(Some(shared[49]), 100, BASE + 10_000, 10);
    history.branch("client/main", shared[49]);
    history.branch("client/work", local[99]);
    let new = history.line(Some(shared[49]), 5, BASE + 5_000, 10);
    history.branch("server/main", new[4]);
    let pair = history.build();
    let tip = pair.id(shared[49]);

    let v2 = drive_v2(&pair, pair.negotiator(Protocol::V2));
    assert!(v2.ready && !v2.done);
    assert!(v2.common.contains(&tip));
    let haves = v2.haves();
    let position = haves.iter().position(|id| *id == tip).unwrap();
    assert_eq!(position, 100, "the local commits come first");
    assert_eq!(v2.sizes(), [16, 32, 64]);

    // The ACK's round had haves the server lacks, so no `ready`: the walk ends, `done`.
    let v0 = drive_v0(&pair, false, true, true);
    assert!(!v0.ready && v0.done);
    assert!(v0.common.contains(&tip));
}

/// A fork 3000 commits ahead of its parent, all newer than the common base: no ACK for 3000
/// haves. With the ACK gate the client keeps going and finds the base; without it (git's v2
/// client before the gate) it gives up after 256 haves and the server finds nothing common.
#[test]
fn fork_far_ahead_finds_the_base() {
    let mut history = History::default();
    let shared = history.line(None, 50, BASE, 10);
    let fork = history.line(Some(shared[49]), 3000, BASE + 100_000, 10);
    history.branch("client/main", fork[2999]);
    let upstream = history.line(Some(shared[49]), 20, BASE + 1_000, 10);
    history.branch("server/main", upstream[19]);
    let pair = history.build();
    let base = pair.id(shared[49]);

    let gated = drive_v2(&pair, pair.negotiator(Protocol::V2));
    assert!(gated.ready && !gated.done);
    assert!(gated.common.contains(&base));
    // 3050 commits: the base's round goes on below it, as the ACK comes after the round.
    assert_eq!(gated.sizes(), [16, 32, 64, 128, 256, 512, 1024, 1018]);
    assert!(gated.haves().contains(&base));
    // git 2.47 sends the same.
    assert_eq!(git_fetch_rounds(&pair, "2"), (gated.rounds.clone(), false));

    let ungated = drive_v2(&pair, pair.negotiator(Protocol::V2).ungated());
    assert!(ungated.done && !ungated.ready);
    assert_eq!(ungated.sizes(), [16, 32, 64, 128, 256]);
    assert!(ungated.common.is_empty(), "gave up before the base");

    for stateless in [false, true] {
        let gated = drive_v0(&pair, stateless, false, true);
        assert!(gated.common.contains(&base), "stateless {stateless}");
        if !stateless {
            assert_eq!(
                git_fetch_rounds(&pair, "0"),
                (gated.rounds.clone(), gated.done)
            );
        }
        let ungated = drive_v0(&pair, stateless, false, false);
        assert!(!ungated.ready && ungated.common.is_empty());
        // Stateful: read a round behind, 288 sent; stateless: after the round of 256, 512.
        assert_eq!(ungated.haves().len(), if stateless { 512 } else { 288 });
    }
}

/// `multi_ack` and single-ACK sessions (v0 without `multi_ack_detailed`) find the base too:
/// single ACK ends negotiation at the first common commit.
#[test]
fn other_ack_modes() {
    let mut history = History::default();
    let shared = history.line(None, 50, BASE, 10);
    let fork = history.line(Some(shared[49]), 600, BASE + 100_000, 10);
    history.branch("client/main", fork[599]);
    let upstream = history.line(Some(shared[49]), 20, BASE + 1_000, 10);
    history.branch("server/main", upstream[19]);
    let pair = history.build();
    let base = pair.id(shared[49]);
    for mode in [AckMode::Single, AckMode::MultiAck] {
        for stateless in [false, true] {
            let outcome = drive_v0_in(&pair, mode, stateless, false, true);
            assert!(outcome.done, "{mode:?} stateless {stateless}");
            assert!(outcome.common.contains(&base), "{mode:?} {stateless}");
            let first = outcome.acks.iter().find(|ack| !matches!(ack, Ack::Nak));
            match mode {
                AckMode::Single => assert_eq!(first, Some(&Ack::Ack(base))),
                _ => {
                    assert_eq!(first, Some(&Ack::Continue(base)));
                    assert!(matches!(outcome.acks.last(), Some(Ack::Ack(_))));
                }
            }
        }
    }
    let single = drive_v0_in(&pair, AckMode::Single, false, false, true);
    let last = single.rounds.last().unwrap();
    assert!(
        last.is_empty(),
        "the ACK ends the haves: `done` comes alone"
    );
}

/// After the first ACK, 256 haves in vain end the negotiation: the client has a second
/// root history the server lacks, older than the common commits, and does not send it all.
#[test]
fn in_vain_after_the_first_ack() {
    let mut history = History::default();
    let old = history.line(None, 2000, BASE - 1_000_000, 10);
    history.branch("client/old", old[1999]);
    let shared = history.line(None, 30, BASE, 10);
    history.branch("client/main", shared[29]);
    // The server wants something the shared tip does not reach: it is never ready.
    let theirs = history.line(None, 3, BASE + 50, 1);
    let merge = history.commit(BASE + 5_000, &[shared[29], theirs[2]]);
    history.branch("server/main", merge);
    history.branch("server/other", theirs[2]);
    let other = history.line(None, 2, BASE + 6_000, 1);
    history.branch("server/unrelated", other[1]);
    let pair = history.build();

    let v2 = drive_v2(&pair, pair.negotiator(Protocol::V2));
    assert!(v2.done && !v2.ready);
    assert!(v2.common.contains(&pair.id(shared[29])));
    // 16 + 32 (the ACK), then 64 + 128 in vain, then 256: 448 ≥ 256, done.
    assert_eq!(v2.sizes(), [16, 32, 64, 128, 256]);
    assert!(v2.haves().len() < 2030);
}

/// A merge: the server has main; the client merged a topic into it and went on. Once main's
/// tip is acknowledged, nothing below it is sent; the topic is, down to where it forked.
#[test]
fn merges() {
    let mut history = History::default();
    let main = history.line(None, 30, BASE, 100);
    let topic = history.line(Some(main[10]), 10, BASE + 1_050, 100);
    let merge = history.commit(BASE + 10_000, &[main[29], topic[9]]);
    let after = history.line(Some(merge), 20, BASE + 20_000, 10);
    history.branch("client/main", after[19]);
    history.branch("server/main", main[29]);
    let new = history.line(Some(main[29]), 2, BASE + 30_000, 10);
    history.branch("server/next", new[1]);
    // Something the client can't have: the server is never ready, the walk runs out.
    let unrelated = history.commit(BASE + 40_000, &[]);
    history.branch("server/unrelated", unrelated);
    let pair = history.build();

    let v2 = drive_v2(&pair, pair.negotiator(Protocol::V2));
    assert!(v2.done);
    assert_eq!(v2.sizes(), [16, 32, 1, 0]);
    // The round after main's tip is acknowledged: only the topic, down to its fork point.
    let acked = v2
        .rounds
        .iter()
        .position(|round| round.contains(&pair.id(main[29])))
        .unwrap();
    let later = v2.rounds[acked + 1..].concat();
    assert!(!later.is_empty());
    for id in &later {
        assert!(topic.iter().any(|mark| pair.id(*mark) == *id), "{id}");
    }
    let v0 = drive_v0(&pair, false, false, true);
    assert!(v0.done);
    assert!(v0.common.contains(&pair.id(main[29])));
}

/// A ref the server advertised that the client has is sent, its ancestors never.
#[test]
fn known_common_refs() {
    let mut history = History::default();
    let shared = history.line(None, 30, BASE, 10);
    let local = history.line(Some(shared[29]), 5, BASE + 1_000, 10);
    history.branch("client/main", local[4]);
    history.branch("client/base", shared[29]);
    history.branch("server/base", shared[29]);
    let new = history.line(Some(shared[29]), 5, BASE + 2_000, 10);
    history.branch("server/main", new[4]);
    let pair = history.build();
    let db = pair.client_db();
    let mut negotiator = ClientNegotiator::new(Protocol::V2);
    negotiator.known_common(&db, &pair.id(shared[29])).unwrap();
    negotiator.add_tip(&db, &pair.id(local[4])).unwrap();
    assert!(matches!(
        negotiator.known_common(&db, &pair.id(shared[0])),
        Err(Error::OutOfOrder(_))
    ));
    let outcome = drive_v2(&pair, negotiator);
    let mut expected: Vec<ObjectId> = local.iter().rev().map(|mark| pair.id(*mark)).collect();
    expected.push(pair.id(shared[29]));
    assert_eq!(outcome.haves(), expected);
    assert!(outcome.ready);
}

#[test]
fn answers_out_of_turn_are_errors() {
    let mut history = History::default();
    let line = history.line(None, 3, BASE, 10);
    history.branch("client/main", line[2]);
    history.branch("server/main", line[2]);
    let pair = history.build();
    let db = pair.client_db();
    let mut v2 = pair.negotiator(Protocol::V2);
    assert!(matches!(
        v2.receive_v2(&db, &Acknowledgments::default()),
        Err(Error::UnexpectedAnswer(_))
    ));
    assert!(v2.receive_v0(&db, Ack::Nak).is_err());
    let mut v0 = pair.negotiator(Protocol::V0 {
        mode: AckMode::Detailed,
        stateless: false,
        no_done: false,
    });
    assert!(v0.receive_v0(&db, Ack::Nak).is_err());
    let request = v0.next_request(&db).unwrap();
    assert!(request.done && request.then == Next::Read);
    assert_eq!(v0.receive_v0(&db, Ack::Nak).unwrap(), Next::Pack);
    assert!(v0.receive_v0(&db, Ack::Nak).is_err());
    assert!(v0.add_tip(&db, &pair.id(line[0])).is_err());
    // An ACK for something the client never had, a tree even, does no harm.
    let mut v2 = pair.negotiator(Protocol::V2);
    v2.next_request(&db).unwrap();
    let bogus = Acknowledgments {
        common: vec![ObjectId::from_hex(&[b'7'; 40]).unwrap()],
        ready: false,
    };
    assert_eq!(v2.receive_v2(&db, &bogus).unwrap(), Next::Send);
    assert!(v2.next_request(&db).unwrap().done);
}

/// The haves of each request `git fetch` (git 2.47, the default negotiator) sends to
/// `git upload-pack` over protocol `version` (a local path: a stateful connection for v0),
/// without the common haves v2 repeats; and whether it sent `done`. The fetch runs in a
/// copy of the client.
fn git_fetch_rounds(pair: &Pair, version: &str) -> (Vec<Vec<ObjectId>>, bool) {
    git_fetch_rounds_with(pair, version, "consecutive")
}

/// [`git_fetch_rounds()`] with `fetch.negotiationAlgorithm` `algorithm`.
fn git_fetch_rounds_with(
    pair: &Pair,
    version: &str,
    algorithm: &str,
) -> (Vec<Vec<ObjectId>>, bool) {
    let trace = pair.client.join(format!("../trace-v{version}-{algorithm}"));
    // A copy, so that what one fetch brings does not change the next.
    let copy = pair
        .client
        .join(format!("../copy-v{version}-{algorithm}.git"));
    git(
        &pair.client,
        &["clone", "--quiet", "--mirror", ".", copy.to_str().unwrap()],
        None,
        &[],
    );
    git(
        &copy,
        &[
            "-c",
            &format!("protocol.version={version}"),
            "-c",
            &format!("fetch.negotiationAlgorithm={algorithm}"),
            "fetch",
            "--quiet",
            "--no-tags",
            pair.server.to_str().unwrap(),
            "refs/heads/main:refs/remotes/origin/main",
        ],
        None,
        &[("GIT_TRACE_PACKET", trace.to_str().unwrap())],
    );
    let trace = std::fs::read_to_string(trace).unwrap();
    let mut rounds: Vec<Vec<ObjectId>> = Vec::new();
    let mut round: Vec<ObjectId> = Vec::new();
    let mut common: Vec<ObjectId> = Vec::new();
    let mut done = false;
    let mut in_fetch = false;
    for line in trace.lines() {
        if let Some((_, ack)) = line.split_once("fetch< ACK ") {
            let id = ack.split(' ').next().unwrap();
            common.push(ObjectId::from_hex(id.trim().as_bytes()).unwrap());
            continue;
        }
        let Some((_, packet)) = line.split_once("fetch> ") else {
            continue;
        };
        if packet == "command=fetch" {
            in_fetch = true;
        } else if let Some(id) = packet.strip_prefix("have ") {
            let id = ObjectId::from_hex(id.as_bytes()).unwrap();
            if version == "0" || !common.contains(&id) {
                round.push(id);
            }
        } else if packet == "done" {
            done = true;
            if version == "0" {
                rounds.push(std::mem::take(&mut round));
            }
        } else if packet == "0000" && (in_fetch || (version == "0" && !round.is_empty())) {
            // v2: every fetch request ends in a flush; v0: the wants end in one too.
            in_fetch = false;
            rounds.push(std::mem::take(&mut round));
        }
    }
    (rounds, done)
}

/// The same haves, in the same rounds, as git 2.47's `git fetch` against `git upload-pack`,
/// over protocol v2 and over a stateful v0 connection (`multi_ack_detailed`, a round ahead),
/// for a fork ahead of its parent with a merged topic.
#[test]
fn same_haves_as_git_fetch() {
    let mut history = History::default();
    let shared = history.line(None, 40, BASE, 10);
    let topic = history.line(Some(shared[20]), 15, BASE + 205, 10);
    let merge = history.commit(BASE + 5_000, &[shared[39], topic[14]]);
    let fork = history.line(Some(merge), 400, BASE + 10_000, 10);
    history.branch("client/main", fork[399]);
    history.branch("client/topic", topic[14]);
    let upstream = history.line(Some(shared[39]), 10, BASE + 6_000, 10);
    history.branch("server/main", upstream[9]);
    let pair = history.build();

    let v2 = drive_v2(&pair, pair.negotiator(Protocol::V2));
    assert!(v2.ready);
    let (rounds, done) = git_fetch_rounds(&pair, "2");
    assert_eq!(v2.rounds, rounds);
    assert_eq!(v2.done, done);

    let v0 = drive_v0(&pair, false, false, true);
    let (rounds, done) = git_fetch_rounds(&pair, "0");
    assert_eq!(v0.sizes(), rounds.iter().map(Vec::len).collect::<Vec<_>>());
    assert_eq!(v0.rounds, rounds);
    assert!(v0.done && done);
}

/// The skipping algorithm sends what git 2.47's sends with `fetch.negotiationAlgorithm=skipping`:
/// on a fork 3000 commits ahead, and on a history with a merged topic.
#[test]
fn skipping_sends_what_git_sends() {
    let mut history = History::default();
    let shared = history.line(None, 50, BASE, 10);
    let topic = history.line(Some(shared[20]), 15, BASE + 205, 10);
    let merge = history.commit(BASE + 5_000, &[shared[49], topic[14]]);
    let fork = history.line(Some(merge), 3000, BASE + 100_000, 10);
    history.branch("client/main", fork[2999]);
    history.branch("client/topic", topic[14]);
    let upstream = history.line(Some(shared[49]), 20, BASE + 6_000, 10);
    history.branch("server/main", upstream[19]);
    let pair = history.build();

    let v2 = drive_v2(
        &pair,
        pair.negotiator_with(Protocol::V2, Algorithm::Skipping),
    );
    assert!(v2.ready);
    let consecutive = drive_v2(&pair, pair.negotiator(Protocol::V2));
    assert!(v2.haves().len() < consecutive.haves().len() / 10);
    assert_eq!(
        git_fetch_rounds_with(&pair, "2", "skipping"),
        (v2.rounds.clone(), false)
    );
    // Along the fork: the tip, then skipping 1, 2, 4, 7, 11 commits. (The topic's tip comes
    // second: parents not read yet are queued as dated 0, as in git.)
    assert_eq!(v2.rounds[0][1], pair.id(topic[14]));
    let fork_ids: Vec<ObjectId> = fork.iter().map(|mark| pair.id(*mark)).collect();
    let along: Vec<ObjectId> = v2.rounds[0]
        .iter()
        .filter(|id| fork_ids.contains(id))
        .copied()
        .take(6)
        .collect();
    let expected: Vec<ObjectId> = [2999, 2997, 2994, 2989, 2981, 2969]
        .iter()
        .map(|n| fork_ids[*n])
        .collect();
    assert_eq!(along, expected);
}
