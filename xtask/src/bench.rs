//! `cargo xtask bench`: packgate against `git upload-pack` and `git receive-pack` on the same
//! repository, in the same run, server side alone.
//!
//! # Fetch scenarios (`clone`, `incremental`, `clone-v0`, `incremental-v0`)
//!
//! Each scenario writes one protocol-v2 `fetch` request to a file, exactly as a git client
//! would send it, and feeds it to `<server> upload-pack --stateless-rpc <repo>` under GNU
//! `/usr/bin/time`. The `-v0` scenarios send the same wants and haves in protocol v0, as the
//! last request of a v0 fetch over HTTP (wants with `multi_ack_detailed`, `no-done`,
//! `side-band-64k`…, a flush, the haves, `done`), without `GIT_PROTOCOL`. Every server first gets one warm-up run whose response is checked: it must
//! hold a `packfile` section whose pack `git index-pack` accepts and which gives the client
//! every object it asked for. Then the timed runs are interleaved (packgate, git, packgate,
//! git…) so that drift on the machine hits every server alike, with the response sent to
//! `/dev/null`.
//!
//! Scenarios:
//! - `clone`: want every ref value under `refs/heads` and `refs/tags`, no haves.
//! - `incremental`: the repository is a copy moved forward by [`BEHIND`] commits on its default
//!   branch; the client has every ref of the original and wants what changed.
//! - `incremental-50`: the same, 50 commits behind.
//! - `clone-v0`, `incremental-v0`: the same in protocol v0.
//! - `clone-depth1`, `clone-blobless`: `git clone --depth 1` and `--filter=blob:none`
//!   (see [`partial`]).
//!
//! # Ref listings (`ls-refs`, `noop-fetch`, `noop-fetch-v0`)
//!
//! A full `ls-refs`, and an up-to-date `git fetch` in protocol v2 and v0, on the fixture with
//! 50,000 more refs: see [`refs`].
//!
//! # Push scenarios (`push` = `push-mirror` and `push-incremental`)
//!
//! Each scenario records once what a real `git push` sends to receive-pack — the command
//! pkt-lines with the client's capabilities, a flush, the pack exactly as git's
//! `pack-objects` made it for the push — by pushing with `--receive-pack` set to a wrapper that
//! `tee`s its standard input into a file before handing it to `git receive-pack`. Every run
//! then gets a fresh `cp -a` copy of the server's repository (outside the timed region) and
//! `<server> receive-pack <copy>` reads the recorded bytes from the file (protocol v0,
//! `GIT_PROTOCOL` unset), its response going to a file. Every run's response must report
//! `unpack ok` and `ok <ref>` for every command (band 1 of the side band) and leave exactly the
//! expected refs; after the warm-up run of each server the repository must also pass
//! `git fsck`. Timed runs are interleaved as for fetches.
//!
//! - `push-mirror`: `git push --mirror` of the fixture into an empty bare repository.
//! - `push-incremental`: the fixture's copy moved forward by [`BEHIND`] commits pushes its
//!   default branch into a copy of the fixture (a thin pack).
//!
//! - `push-large`, `push-large-x4`: a push of a 1 GiB blob of zeros into an empty
//!   repository, one at a time and four at once: see [`large_push`].
//!
//! - `push-client`: the client side: `packgate push` against `git push`, both into
//!   `git receive-pack`: see [`push_client`].
//!
//! - `gate`: a `git push` through a gate (`packgate serve` with `packgate.upstream`) against
//!   the same push straight to its upstream (`packgate serve`), and one upstream round trip:
//!   see [`gate`].
//!
//! # Maintenance (`repack`, `auto-gc`)
//!
//! `packgate maintenance run` against `git repack -adb` and `git gc --auto`, each run on a
//! fresh copy: see [`repack`].
//!
//! # Mirrors (`mirror` = `mirror-clone` and `mirror-update`)
//!
//! `packgate mirror` against `git clone --mirror` and `git fetch` of a mirror, client and
//! server together: see [`mirror`].
//!
//! # Measurements
//!
//! What is measured per run: wall time (our own clock around the process), user+system CPU
//! and peak RSS as GNU time reports them. GNU time takes them from `wait4`, so CPU includes
//! the children the server waited for (git's `pack-objects`, `index-pack`, `rev-list`…) and
//! the peak RSS is that of the largest single process of the server's tree, not their sum.
//!
//! # Connections (`connections`)
//!
//! Idle git:// connections and short `ls-refs` sessions against `git daemon`: see
//! [`connections`].
//!
//! # SSH (`ssh`)
//!
//! New SSH connections per second (`git ls-remote` of one branch, protocol v2) and memory
//! per idle SSH session, `packgate serve --ssh` against OpenSSH's sshd running
//! `git-upload-pack`: see [`ssh`].
//!
//! # Layout
//!
//! One module per scenario ([`clone`], [`incremental`], [`partial`], [`push`], [`large_push`],
//! [`connections`]); [`fetch`] is what the two fetch scenarios share; [`measure`] runs a
//! server under GNU time and keeps the samples; [`results`] makes the tables and the section
//! of `benches/RESULTS.md`; [`git`] runs git isolated from the user's configuration. This
//! file: the arguments, the order of the scenarios, the servers and the fixture.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context as _};
use clap::ValueEnum;
use packgate_fixture::{BuiltFixture, Packing};

mod clone;
mod clone_server;
mod connections;
mod fetch;
mod gate;
mod git;
mod incremental;
mod large_push;
mod measure;
mod mirror;
mod partial;
mod push;
mod push_client;
mod refs;
mod repack;
mod results;
mod server;
mod ssh;
mod watch;

use clone::clone_request;
use fetch::{measure_fetch, Protocol};
use git::Git;
use incremental::incremental_request;
use measure::{check_gnu_time, Row, Server, Service};
use partial::{partial_request, Partial};
use push::{measure_push, push_request, PushRequest};
use results::{append_results, human_size, load_average, markdown_table, record_section};

/// How many commits the `incremental` scenario's client is behind.
const BEHIND: usize = 10;

/// The agent line of the request: what git 2.47.3 sends.
const AGENT: &str = "agent=git/2.47.3";

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// What to measure: `clone` (a full clone), `incremental` (a fetch 10 commits behind),
    /// `incremental-50` (50 commits behind),
    /// `clone-v0` and `incremental-v0` (the same over protocol v0), `clone-depth1`
    /// (`git clone --depth 1`), `clone-blobless` (`git clone --filter=blob:none`),
    /// `push-mirror` (a mirror push into an empty repository), `push-incremental` (a push of
    /// 10 commits), `push` (both pushes), `push-large` and `push-large-x4` (a 1 GiB blob of
    /// zeros, one push and four at once), `ls-refs`, `noop-fetch` and `noop-fetch-v0` (ref
    /// listings with 50,000 more refs), `connections` (idle git:// connections and
    /// `ls-refs` sessions against `git daemon`; runs alone), `repack` (a full repack with
    /// a bitmap against `git repack -adb`), `auto-gc` (`--auto` maintenance after 100 pushes
    /// against `git gc --auto`), `mirror-clone` and `mirror-update` (`packgate mirror`
    /// against `git clone --mirror` and `git fetch` of a mirror; `mirror` for both), or
    /// `clone-repeat` and
    /// `clone-concurrent` (clones from `packgate daemon` and `git daemon`, see
    /// `--repeat` and `--clients`; apart from the others).
    #[arg(value_enum, required = true)]
    scenarios: Vec<Scenario>,
    /// The fixture preset; it is built repacked without bitmaps (`git repack -ad`) and cached
    /// under `target/bench-fixtures`. Default: `large`, or `many-refs` for `connections`, or
    /// `empty` (unused) for `push-large` and `push-large-x4` alone.
    #[arg(long)]
    preset: Option<String>,
    /// Timed runs per server, after one warm-up run each.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Also measure packgate and git on a copy of the repository repacked with a bitmap
    /// index (`git repack -adb`), each as its own row (fetch scenarios only).
    #[arg(long)]
    bitmaps: bool,
    /// The git to run, as server and for the fixture.
    #[arg(long, default_value = "git")]
    git: PathBuf,
    /// Use this packgate binary instead of building `target/release/packgate`.
    #[arg(long, value_name = "PATH")]
    packgate: Option<PathBuf>,
    /// Print the table only; do not append it to `benches/RESULTS.md`.
    #[arg(long)]
    no_record: bool,
    #[command(flatten)]
    connections: connections::ConnectionArgs,
    #[command(flatten)]
    clone_server: clone_server::CloneServerArgs,
    #[command(flatten)]
    watch: watch::WatchArgs,
    #[command(flatten)]
    ssh: ssh::SshArgs,
}

impl BenchArgs {
    /// `--preset`, or the default of the scenarios asked for.
    fn preset(&self) -> &str {
        match &self.preset {
            Some(preset) => preset,
            None if self.scenarios.contains(&Scenario::Connections)
                || self.scenarios.contains(&Scenario::Soak)
                || self.scenarios.contains(&Scenario::Ssh) =>
            {
                "many-refs"
            }
            None if self
                .scenarios
                .iter()
                .all(|scenario| scenario.is_large_push()) =>
            {
                "empty"
            }
            None => "large",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// A full clone: want every ref, no haves.
    Clone,
    /// A fetch by a client 10 commits behind on the default branch.
    Incremental,
    /// A fetch by a client 50 commits behind on the default branch.
    #[value(name = "incremental-50")]
    Incremental50,
    /// `clone` over protocol v0.
    CloneV0,
    /// `incremental` over protocol v0.
    IncrementalV0,
    /// `git clone --depth 1`: the default branch's tip alone.
    CloneDepth1,
    /// `git clone --filter=blob:none`: every ref, no blob.
    CloneBlobless,
    /// Both push scenarios.
    Push,
    /// `git push --mirror` into an empty bare repository.
    PushMirror,
    /// A push of 10 new commits on the default branch.
    PushIncremental,
    /// A push of a 1 GiB blob of zeros into an empty repository.
    PushLarge,
    /// Four such pushes at once.
    PushLargeX4,
    /// The push client: `packgate push` against `git push` of 10 new commits, both into
    /// `git receive-pack`.
    PushClient,
    /// A `git push` of 10 new commits through a gate (`packgate serve` forwarding to an
    /// upstream `packgate serve`) against the same push straight to the upstream.
    Gate,
    /// Idle git:// connections and `ls-refs` sessions per second, against `git daemon`.
    Connections,
    /// A full `ls-refs` (peel, symrefs) of the fixture with 50,000 more refs.
    LsRefs,
    /// A `git fetch` that is up to date, in protocol v2: `ls-refs` of its refspec's prefixes.
    NoopFetch,
    /// The same in protocol v0: the whole advertisement, then the client's flush.
    #[value(name = "noop-fetch-v0")]
    NoopFetchV0,
    /// The same clone over git:// again and again from `packgate daemon` (its pack cache)
    /// and `git daemon`: server CPU per clone.
    CloneRepeat,
    /// `--clients` clones over git:// starting together: throughput and peak memory.
    CloneConcurrent,
    /// Rounds of 1,000 git:// connections (idle, `ls-refs`, small fetches): the server's
    /// memory after each, against `git daemon`.
    Soak,
    /// A full repack with a bitmap: `packgate maintenance run --task gc` against
    /// `git repack -a -d -b`.
    Repack,
    /// `--auto` maintenance after 100 pushes: `packgate maintenance run --auto` against
    /// `git gc --auto`.
    AutoGc,
    /// Both mirror scenarios.
    Mirror,
    /// New SSH connections per second for a prefixed `ls-refs`, and memory per idle SSH
    /// session: `packgate serve --ssh` against OpenSSH's sshd with `git-upload-pack`.
    Ssh,
    /// `packgate mirror` of the fixture into a new directory against `git clone --mirror`
    /// (client and server together).
    MirrorClone,
    /// A mirror of the fixture updated from its copy 10 commits ahead: `packgate mirror`
    /// against `git fetch --prune` of a mirror remote.
    MirrorUpdate,
    /// The refs watch: unchanged `ls-refs if-none-match` answers against git daemon's no-op
    /// fetch, and waiting `wait-refs` clients woken by a push (50,000 more refs).
    Watch,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Clone => "clone",
            Scenario::Incremental => "incremental",
            Scenario::Incremental50 => "incremental-50",
            Scenario::CloneV0 => "clone-v0",
            Scenario::IncrementalV0 => "incremental-v0",
            Scenario::CloneDepth1 => "clone-depth1",
            Scenario::CloneBlobless => "clone-blobless",
            Scenario::Push => "push",
            Scenario::PushMirror => "push-mirror",
            Scenario::PushIncremental => "push-incremental",
            Scenario::PushLarge => "push-large",
            Scenario::PushLargeX4 => "push-large-x4",
            Scenario::PushClient => "push-client",
            Scenario::Gate => "gate",
            Scenario::Connections => "connections",
            Scenario::LsRefs => "ls-refs",
            Scenario::NoopFetch => "noop-fetch",
            Scenario::NoopFetchV0 => "noop-fetch-v0",
            Scenario::CloneRepeat => "clone-repeat",
            Scenario::CloneConcurrent => "clone-concurrent",
            Scenario::Soak => "soak",
            Scenario::Repack => "repack",
            Scenario::AutoGc => "auto-gc",
            Scenario::Mirror => "mirror",
            Scenario::Ssh => "ssh",
            Scenario::MirrorClone => "mirror-clone",
            Scenario::MirrorUpdate => "mirror-update",
            Scenario::Watch => "watch",
        }
    }

    /// The protocol of a fetch scenario.
    fn protocol(self) -> Protocol {
        match self {
            Scenario::CloneV0 | Scenario::IncrementalV0 => Protocol::V0,
            _ => Protocol::V2,
        }
    }

    /// How many commits the client of an incremental scenario is behind.
    fn behind(self) -> usize {
        match self {
            Scenario::Incremental50 => 50,
            _ => BEHIND,
        }
    }

    fn is_push(self) -> bool {
        matches!(
            self,
            Scenario::Push
                | Scenario::PushMirror
                | Scenario::PushIncremental
                | Scenario::PushClient
                | Scenario::Gate
        ) || self.is_large_push()
    }

    /// Against long-running servers over git:// ([`clone_server`]).
    fn is_clone_server(self) -> bool {
        matches!(self, Scenario::CloneRepeat | Scenario::CloneConcurrent)
    }

    fn is_large_push(self) -> bool {
        matches!(self, Scenario::PushLarge | Scenario::PushLargeX4)
    }
}

/// What one scenario gave.
struct Outcome {
    scenario: Scenario,
    /// A line under the scenario's heading; may be empty.
    note: String,
    rows: Vec<Row>,
}

/// Runs `cargo xtask bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let load_before = load_average();
    ensure!(args.runs > 0, "--runs must be at least 1");
    if args.scenarios.contains(&Scenario::Connections) {
        ensure!(
            args.scenarios.iter().all(|&s| s == Scenario::Connections),
            "`connections` runs alone: `cargo xtask bench connections`"
        );
        return connections::run(&args);
    }
    if args.scenarios.iter().any(|s| s.is_clone_server()) {
        ensure!(
            args.scenarios.iter().all(|s| s.is_clone_server()),
            "`clone-repeat` and `clone-concurrent` run apart from the other scenarios"
        );
        return clone_server::run(&args, &args.scenarios);
    }
    if args.scenarios.contains(&Scenario::Watch) {
        ensure!(
            args.scenarios.iter().all(|&s| s == Scenario::Watch),
            "`watch` runs alone: `cargo xtask bench watch`"
        );
        return watch::run(&args);
    }
    if args.scenarios.contains(&Scenario::Ssh) {
        ensure!(
            args.scenarios.iter().all(|&s| s == Scenario::Ssh),
            "`ssh` runs alone: `cargo xtask bench ssh`"
        );
        return ssh::run(&args);
    }
    if args.scenarios.contains(&Scenario::Soak) {
        ensure!(
            args.scenarios.iter().all(|&s| s == Scenario::Soak),
            "`soak` runs alone: `cargo xtask bench soak`"
        );
        return connections::run_soak(&args);
    }
    check_gnu_time()?;
    let root = workspace_root();
    let target = target_dir(&root);
    let git = Git { program: &args.git };

    let packgate = match &args.packgate {
        Some(path) => path.clone(),
        None => build_packgate(&root, &target)?,
    };

    let built = build_fixture(&args, &target)?;
    let base = built.path.clone();
    let scenarios = expand(&args.scenarios);
    let fetches = scenarios.iter().any(|scenario| !scenario.is_push());
    let bitmapped = if args.bitmaps && fetches {
        Some(derived(&base, "bitmaps", |dir| {
            git.run(
                Some(dir),
                &["repack", "-a", "-d", "-q", "--write-bitmap-index"],
            )?;
            Ok(())
        })?)
    } else {
        None
    };

    let mut servers = vec![
        Server {
            label: "packgate".to_owned(),
            program: packgate.clone(),
            args: vec!["upload-pack".to_owned()],
            service: Service::UploadPackV2,
            is_packgate: true,
            bitmaps: false,
        },
        Server {
            label: "git upload-pack".to_owned(),
            program: args.git.clone(),
            args: vec!["upload-pack".to_owned()],
            service: Service::UploadPackV2,
            is_packgate: false,
            bitmaps: false,
        },
    ];
    if args.bitmaps {
        servers.push(Server {
            label: "packgate, bitmaps".to_owned(),
            program: packgate.clone(),
            args: vec!["upload-pack".to_owned()],
            service: Service::UploadPackV2,
            is_packgate: true,
            bitmaps: true,
        });
        servers.push(Server {
            label: "git upload-pack, bitmaps".to_owned(),
            program: args.git.clone(),
            args: vec!["upload-pack".to_owned()],
            service: Service::UploadPackV2,
            is_packgate: false,
            bitmaps: true,
        });
    }
    // The same servers, spoken to in protocol v0.
    let servers_v0: Vec<Server> = servers
        .iter()
        .map(|server| Server {
            service: Service::UploadPackV0,
            label: format!("{} v0", server.label),
            ..server.clone()
        })
        .collect();
    let push_servers = [
        Server {
            label: "packgate".to_owned(),
            program: packgate.clone(),
            args: vec!["receive-pack".to_owned()],
            service: Service::ReceivePack,
            is_packgate: true,
            bitmaps: false,
        },
        Server {
            label: "git receive-pack".to_owned(),
            program: args.git.clone(),
            args: vec!["receive-pack".to_owned()],
            service: Service::ReceivePack,
            is_packgate: false,
            bitmaps: false,
        },
    ];

    let work = target.join(format!("bench-work-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = (|| -> anyhow::Result<Vec<Outcome>> {
        let mut results = Vec::new();
        // Recorded once for both large-push scenarios.
        let mut large_push: Option<PushRequest> = None;
        for &scenario in &scenarios {
            let request = match scenario {
                Scenario::Clone | Scenario::CloneV0 => clone_request(
                    &git,
                    &work,
                    &base,
                    bitmapped.as_deref(),
                    &servers,
                    scenario.protocol(),
                )?,
                Scenario::Incremental | Scenario::IncrementalV0 | Scenario::Incremental50 => {
                    incremental_request(
                        &git,
                        &work,
                        &args,
                        &base,
                        bitmapped.as_deref(),
                        &servers,
                        scenario,
                    )?
                }
                Scenario::CloneDepth1 => partial_request(
                    &git,
                    &work,
                    &base,
                    bitmapped.as_deref(),
                    &servers,
                    Partial::Depth1,
                )?,
                Scenario::CloneBlobless => partial_request(
                    &git,
                    &work,
                    &base,
                    bitmapped.as_deref(),
                    &servers,
                    Partial::Blobless,
                )?,
                Scenario::PushLarge | Scenario::PushLargeX4 => {
                    let push = match &mut large_push {
                        Some(push) => push,
                        None => large_push.insert(push_request(
                            &git,
                            &work,
                            &args,
                            &base,
                            Scenario::PushLarge,
                        )?),
                    };
                    let rows = if scenario == Scenario::PushLargeX4 {
                        large_push::measure_concurrent(
                            &git,
                            &work,
                            scenario,
                            &push_servers,
                            push,
                            args.runs,
                        )
                    } else {
                        measure_push(&git, &work, scenario, &push_servers, push, args.runs)
                    };
                    results.push(Outcome {
                        scenario,
                        note: push.note(scenario),
                        rows,
                    });
                    continue;
                }
                Scenario::PushMirror | Scenario::PushIncremental => {
                    let push = push_request(&git, &work, &args, &base, scenario)?;
                    eprintln!(
                        "bench: {}: {} ref update(s), {} objects in a pack of {}",
                        scenario.name(),
                        push.commands.len(),
                        push.pack_objects,
                        human_size(push.pack_bytes)
                    );
                    let rows = measure_push(&git, &work, scenario, &push_servers, &push, args.runs);
                    results.push(Outcome {
                        scenario,
                        note: push.note(scenario),
                        rows,
                    });
                    continue;
                }
                Scenario::PushClient => {
                    let rows =
                        push_client::measure(&git, &work, &args, &base, &packgate, args.runs)?;
                    results.push(Outcome {
                        scenario,
                        note: format!(
                            "the client side: {BEHIND} new commits on the default branch (the \
                             fixture's `ahead{BEHIND}` copy) pushed into a fresh copy of the \
                             fixture served by `git receive-pack` for both clients; times are \
                             the client's process tree (receive-pack included); pack = what \
                             the push added to the server"
                        ),
                        rows,
                    });
                    continue;
                }
                Scenario::Gate => {
                    let rows = gate::measure(&git, &work, &args, &base, &packgate, args.runs)?;
                    results.push(Outcome {
                        scenario,
                        note: format!(
                            "{BEHIND} new commits on the default branch (the fixture's \
                             `ahead{BEHIND}` copy) pushed with `git push` over git:// straight \
                             to an upstream `packgate serve`, and to a gate (`packgate serve`, \
                             `packgate.upstream` = that upstream); both reset to the fixture \
                             before every run; times are the `git push` process tree, the \
                             servers' work inside the wall time only; the last row is one \
                             `git ls-remote` of the upstream (the target: gated ≤ direct + one \
                             round trip + 10 %)"
                        ),
                        rows,
                    });
                    continue;
                }
                Scenario::LsRefs | Scenario::NoopFetch | Scenario::NoopFetchV0 => {
                    let repo = refs::many_refs_copy(&git, &base)?;
                    let rows =
                        refs::measure_refs(&git, &work, scenario, &servers, &repo, args.runs)?;
                    results.push(Outcome {
                        scenario,
                        note: format!(
                            "the fixture with {} more refs, packed (`{}`); per request, \
                             each sample a batch of requests",
                            refs::EXTRA_REFS,
                            repo.file_name()
                                .map(|name| name.to_string_lossy().into_owned())
                                .unwrap_or_default()
                        ),
                        rows,
                    });
                    continue;
                }
                Scenario::Repack | Scenario::AutoGc => {
                    let source = repack::source(&git, &base, scenario)?;
                    let maintainers = repack::maintainers(scenario, &packgate, &args.git);
                    let rows =
                        repack::measure(&git, &work, scenario, &maintainers, &source, args.runs)?;
                    let note = match scenario {
                        Scenario::AutoGc => format!(
                            "the fixture after {} pushes of one commit, each left as a pack; \
                             a fresh copy per run; pack = the resulting pack",
                            repack::PUSHES
                        ),
                        _ => "a fresh copy of the fixture per run; pack = the resulting pack"
                            .to_owned(),
                    };
                    results.push(Outcome {
                        scenario,
                        note,
                        rows,
                    });
                    continue;
                }
                Scenario::MirrorClone | Scenario::MirrorUpdate => {
                    let (note, rows) =
                        mirror::measure(&git, &args, &work, scenario, &packgate, &base)?;
                    results.push(Outcome {
                        scenario,
                        note,
                        rows,
                    });
                    continue;
                }
                // Replaced by its parts in `expand`; run alone, above.
                Scenario::Push
                | Scenario::Mirror
                | Scenario::Connections
                | Scenario::Soak
                | Scenario::Watch
                | Scenario::Ssh
                | Scenario::CloneRepeat
                | Scenario::CloneConcurrent => continue,
            };
            eprintln!(
                "bench: {}: {} wants, {} haves, {} objects needed",
                scenario.name(),
                request.wants.len(),
                request.haves.len(),
                request.needed.len()
            );
            let servers = match request.protocol {
                Protocol::V2 => &servers,
                Protocol::V0 => &servers_v0,
            };
            let rows = measure_fetch(&git, &work, scenario, servers, &request, args.runs);
            results.push(Outcome {
                scenario,
                note: String::new(),
                rows,
            });
        }
        Ok(results)
    })();
    let _ = fs::remove_dir_all(&work);
    let results = result?;
    let load_after = load_average();

    let mut table = String::new();
    for outcome in &results {
        table.push_str(&markdown_table(
            outcome.scenario,
            &outcome.note,
            &outcome.rows,
        ));
    }
    println!("{table}");
    eprintln!("bench: load average before {load_before}, after {load_after}");

    if !args.no_record {
        let load = format!("{load_before} before, {load_after} after");
        let section = record_section(&git, &root, &built, &args, &load, &table)?;
        let results_file = root.join("benches").join("RESULTS.md");
        append_results(&results_file, &section)?;
        eprintln!("bench: appended to {}", results_file.display());
    }
    eprintln!("bench: done in {:.1?}", started.elapsed());
    let failed: Vec<String> = results
        .iter()
        .flat_map(|outcome| {
            outcome
                .rows
                .iter()
                .filter(|row| row.outcome.is_err())
                .map(move |row| format!("{} ({})", row.label, outcome.scenario.name()))
        })
        .collect();
    ensure!(failed.is_empty(), "failed: {}", failed.join(", "));
    Ok(())
}

/// The scenarios in the order asked for, `push` replaced by its parts, each once.
fn expand(scenarios: &[Scenario]) -> Vec<Scenario> {
    let mut out = Vec::new();
    for &scenario in scenarios {
        let parts: &[Scenario] = match scenario {
            Scenario::Push => &[Scenario::PushMirror, Scenario::PushIncremental],
            Scenario::Mirror => &[Scenario::MirrorClone, Scenario::MirrorUpdate],
            _ => std::slice::from_ref(&scenario),
        };
        for &part in parts {
            if !out.contains(&part) {
                out.push(part);
            }
        }
    }
    out
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` or `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// The preset's fixture, repacked without bitmaps, cached under `<target>/bench-fixtures`.
fn build_fixture(args: &BenchArgs, target: &Path) -> anyhow::Result<BuiltFixture> {
    let preset = args.preset();
    let mut spec = packgate_fixture::preset_or_error(preset)?;
    spec.name = format!("{preset}-repacked");
    spec.packing = Packing::Repacked;
    spec.git = args.git.clone();
    let cache = target.join("bench-fixtures");
    eprintln!("bench: fixture {} (repacked, no bitmaps)…", spec.name);
    let fixture_started = Instant::now();
    let built = spec
        .build_cached(&cache)
        .with_context(|| format!("building fixture {}", spec.name))?;
    eprintln!("bench: {built} ({:.1?})", fixture_started.elapsed());
    Ok(built)
}

fn build_packgate(root: &Path, target: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: cargo build --release --bin packgate");
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "packgate"])
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    ensure!(
        status.success(),
        "`cargo build --release --bin packgate` failed"
    );
    let binary = target.join("release").join("packgate");
    ensure!(
        binary.exists(),
        "{} is missing after the build",
        binary.display()
    );
    Ok(binary)
}

/// A copy of the cached fixture `base` prepared by `prepare`, cached beside it as
/// `<base>.<suffix>.git`. The name starts with the base's name and fingerprint, so the
/// fixture cache removes it along with its base when the fixture changes.
fn derived(
    base: &Path,
    suffix: &str,
    prepare: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<PathBuf> {
    let file_name = base
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = file_name.strip_suffix(".git").unwrap_or(&file_name);
    let path = base.with_file_name(format!("{stem}.{suffix}.git"));
    let marker = path.join("packgate-bench-complete");
    if marker.exists() {
        return Ok(path);
    }
    eprintln!("bench: preparing {}…", path.display());
    let building = base.with_file_name(format!("{stem}.{suffix}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&building);
    copy_dir(base, &building)?;
    prepare(&building)?;
    File::create(building.join("packgate-bench-complete"))?;
    let _ = fs::remove_dir_all(&path);
    fs::rename(&building, &path)
        .with_context(|| format!("renaming {} into place", building.display()))?;
    Ok(path)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let destination = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &destination)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &destination)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_expands() {
        assert_eq!(
            expand(&[Scenario::PushIncremental, Scenario::Push, Scenario::Clone]),
            [
                Scenario::PushIncremental,
                Scenario::PushMirror,
                Scenario::Clone
            ]
        );
    }
}
