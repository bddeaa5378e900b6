//! `cargo xtask bench`: packgate against `git upload-pack` and `git receive-pack` on the same
//! repository, in the same run, server side alone.
//!
//! # Fetch scenarios (`clone`, `incremental`)
//!
//! Each scenario writes one protocol-v2 `fetch` request to a file, exactly as a git client
//! would send it, and feeds it to `<server> upload-pack --stateless-rpc <repo>` under GNU
//! `/usr/bin/time`. Every server first gets one warm-up run whose response is checked: it must
//! hold a `packfile` section whose pack `git index-pack` accepts and which gives the client
//! every object it asked for. Then the timed runs are interleaved (packgate, git, packgate,
//! git…) so that drift on the machine hits every server alike, with the response sent to
//! `/dev/null`.
//!
//! Scenarios:
//! - `clone`: want every ref value under `refs/heads` and `refs/tags`, no haves.
//! - `incremental`: the repository is a copy moved forward by [`BEHIND`] commits on its default
//!   branch; the client has every ref of the original and wants what changed.
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

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use clap::ValueEnum;
use packgate_fixture::{append_commits, Append, BuiltFixture, Packing};
use packgate_wire::pkt_line::{self, Decoded, Packet};

mod connections;
mod large_push;

/// GNU time; its `-f` and `-o` options are what we need.
const GNU_TIME: &str = "/usr/bin/time";

/// How many commits the `incremental` scenario's client is behind.
const BEHIND: usize = 10;

/// The agent line of the request: what git 2.47.3 sends.
const AGENT: &str = "agent=git/2.47.3";

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// What to measure: `clone` (a full clone), `incremental` (a fetch 10 commits behind),
    /// `push-mirror` (a mirror push into an empty repository), `push-incremental` (a push of
    /// 10 commits), `push` (both pushes), `push-large` and `push-large-x4` (a 1 GiB blob of
    /// zeros, one push and four at once) or `connections` (idle git:// connections and
    /// `ls-refs` sessions against `git daemon`; runs alone).
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
    /// Also measure git on a copy of the repository repacked with a bitmap index
    /// (`git repack -adb`), as its own row (fetch scenarios only).
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
}

impl BenchArgs {
    /// `--preset`, or the default of the scenarios asked for.
    fn preset(&self) -> &str {
        match &self.preset {
            Some(preset) => preset,
            None if self.scenarios.contains(&Scenario::Connections) => "many-refs",
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
    /// Idle git:// connections and `ls-refs` sessions per second, against `git daemon`.
    Connections,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Clone => "clone",
            Scenario::Incremental => "incremental",
            Scenario::Push => "push",
            Scenario::PushMirror => "push-mirror",
            Scenario::PushIncremental => "push-incremental",
            Scenario::PushLarge => "push-large",
            Scenario::PushLargeX4 => "push-large-x4",
            Scenario::Connections => "connections",
        }
    }

    fn is_push(self) -> bool {
        matches!(
            self,
            Scenario::Push | Scenario::PushMirror | Scenario::PushIncremental
        ) || self.is_large_push()
    }

    fn is_large_push(self) -> bool {
        matches!(self, Scenario::PushLarge | Scenario::PushLargeX4)
    }
}

/// How a server is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    /// `<program> <args> --stateless-rpc <repo>` with `GIT_PROTOCOL=version=2`.
    UploadPackV2,
    /// `<program> <args> <repo>`, protocol v0: the advertisement, then the client's push.
    ReceivePack,
}

/// One server under test.
struct Server {
    label: String,
    program: PathBuf,
    /// Arguments before `--stateless-rpc <repo>` or `<repo>`.
    args: Vec<String>,
    service: Service,
    is_packgate: bool,
    /// Serves the bitmapped copy of the fixture.
    bitmaps: bool,
}

/// One request for every server: the repository each serves and what the client has.
struct Request {
    /// The request's pkt-lines.
    file: PathBuf,
    /// Repository per server, in the order of the servers.
    repos: Vec<PathBuf>,
    /// The repository the client already has (its objects are the thin pack's bases).
    client_has: Option<PathBuf>,
    wants: Vec<String>,
    haves: Vec<String>,
    /// `git rev-list --objects <wants> --not <haves>` on the server's repository.
    needed: Vec<String>,
}

/// What one run measured.
#[derive(Clone, Copy, Debug)]
struct Sample {
    wall: Duration,
    cpu: f64,
    rss_kib: u64,
}

/// What a checked response held.
struct Checked {
    objects: u32,
    pack_bytes: u64,
}

/// What one scenario gave.
struct Outcome {
    scenario: Scenario,
    /// A line under the scenario's heading; may be empty.
    note: String,
    rows: Vec<Row>,
}

/// The row of a server in one scenario.
/// Adds the sample of run `run` (0-based) of `runs` to `row`, or marks the row failed; says
/// which on stderr.
fn record(row: &mut Row, scenario: &str, run: usize, runs: usize, result: anyhow::Result<Sample>) {
    let Ok((_, samples)) = &mut row.outcome else {
        return;
    };
    match result {
        Ok(sample) => {
            eprintln!(
                "bench: {scenario} run {}/{runs}: {} {:.3}s wall, {:.2}s CPU, {} MiB",
                run + 1,
                row.label,
                sample.wall.as_secs_f64(),
                sample.cpu,
                sample.rss_kib / 1024
            );
            samples.push(sample);
        }
        Err(err) => {
            eprintln!("bench: {} FAILED: {err:#}", row.label);
            row.outcome = Err(format!("run {}: {err:#}", run + 1));
        }
    }
}

struct Row {
    label: String,
    is_packgate: bool,
    outcome: Result<(Checked, Vec<Sample>), String>,
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
            label: "git upload-pack, bitmaps".to_owned(),
            program: args.git.clone(),
            args: vec!["upload-pack".to_owned()],
            service: Service::UploadPackV2,
            is_packgate: false,
            bitmaps: true,
        });
    }
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
                Scenario::Clone => {
                    clone_request(&git, &work, &base, bitmapped.as_deref(), &servers)?
                }
                Scenario::Incremental => {
                    incremental_request(&git, &work, &args, &base, bitmapped.as_deref(), &servers)?
                }
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
                // Replaced by its parts in `expand`; run alone, above.
                Scenario::Push | Scenario::Connections => continue,
            };
            eprintln!(
                "bench: {}: {} wants, {} haves, {} objects needed",
                scenario.name(),
                request.wants.len(),
                request.haves.len(),
                request.needed.len()
            );
            let rows = measure(&git, &work, scenario, &servers, &request, args.runs);
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

/// `/proc/loadavg`'s 1, 5 and 15 minute load averages, as `uptime` prints them.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|load| !load.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
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

fn check_gnu_time() -> anyhow::Result<()> {
    let output = Command::new(GNU_TIME)
        .args(["-f", "%e %U %S %M", "true"])
        .output();
    match output {
        Ok(output) if output.status.success() => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            ensure!(
                parse_time_line(&stderr).is_ok(),
                "{GNU_TIME} is not GNU time (it printed {stderr:?}); \
                 install it with `apt-get install time`"
            );
            Ok(())
        }
        _ => bail!("GNU time is needed at {GNU_TIME}; install it with `apt-get install time`"),
    }
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

/// The repository each server serves: the base, or its bitmapped copy.
fn repos_for(servers: &[Server], base: &Path, bitmapped: Option<&Path>) -> Vec<PathBuf> {
    servers
        .iter()
        .map(|server| match (server.bitmaps, bitmapped) {
            (true, Some(bitmapped)) => bitmapped.to_owned(),
            _ => base.to_owned(),
        })
        .collect()
}

fn clone_request(
    git: &Git<'_>,
    work: &Path,
    base: &Path,
    bitmapped: Option<&Path>,
    servers: &[Server],
) -> anyhow::Result<Request> {
    let wants = ref_values(git, base)?;
    let needed = needed_objects(git, base, &wants, &[])?;
    let file = work.join("clone.request");
    fs::write(&file, fetch_request(&wants, &[])?)?;
    Ok(Request {
        file,
        repos: repos_for(servers, base, bitmapped),
        client_has: None,
        wants,
        haves: Vec::new(),
        needed,
    })
}

fn incremental_request(
    git: &Git<'_>,
    work: &Path,
    args: &BenchArgs,
    base: &Path,
    bitmapped: Option<&Path>,
    servers: &[Server],
) -> anyhow::Result<Request> {
    let append = ahead_append(git, args, base)?;
    let ahead = ahead_copy(base, &append)?;
    let ahead_bitmapped = match bitmapped {
        Some(bitmapped) => Some(ahead_copy(bitmapped, &append)?),
        None => None,
    };
    let old: HashSet<String> = ref_values(git, base)?.into_iter().collect();
    let wants: Vec<String> = ref_values(git, &ahead)?
        .into_iter()
        .filter(|oid| !old.contains(oid))
        .collect();
    ensure!(
        !wants.is_empty(),
        "{} has no new ref values",
        ahead.display()
    );
    if let Some(ahead_bitmapped) = &ahead_bitmapped {
        ensure!(
            ref_values(git, ahead_bitmapped)? == ref_values(git, &ahead)?,
            "{} and {} differ",
            ahead.display(),
            ahead_bitmapped.display()
        );
    }
    // A fetching client sends the commits its refs point at, tags peeled.
    let haves = have_commits(git, base)?;
    let needed = needed_objects(git, &ahead, &wants, &haves)?;
    let file = work.join("incremental.request");
    fs::write(&file, fetch_request(&wants, &haves)?)?;
    Ok(Request {
        file,
        repos: repos_for(servers, &ahead, ahead_bitmapped.as_deref()),
        client_has: Some(base.to_owned()),
        wants,
        haves,
        needed,
    })
}

/// [`BEHIND`] commits on the default branch of `base`.
fn ahead_append(git: &Git<'_>, args: &BenchArgs, base: &Path) -> anyhow::Result<Append> {
    let head = git.run(Some(base), &["symbolic-ref", "--short", "HEAD"])?;
    Ok(Append {
        branch: head.trim().to_owned(),
        commits: BEHIND,
        git: args.git.clone(),
        ..Append::default()
    })
}

/// The cached copy of `repo` moved forward by `append` (`<repo>.ahead10.git`).
fn ahead_copy(repo: &Path, append: &Append) -> anyhow::Result<PathBuf> {
    derived(repo, &format!("ahead{BEHIND}"), |dir| {
        append_commits(dir, append)?;
        Ok(())
    })
}

/// The distinct values of the refs under `refs/heads` and `refs/tags`: what a clone wants.
fn ref_values(git: &Git<'_>, repo: &Path) -> anyhow::Result<Vec<String>> {
    let out = git.run(
        Some(repo),
        &[
            "for-each-ref",
            "--format=%(objectname)",
            "refs/heads",
            "refs/tags",
        ],
    )?;
    let mut seen = HashSet::new();
    Ok(out
        .lines()
        .map(str::to_owned)
        .filter(|oid| seen.insert(oid.clone()))
        .collect())
}

/// The distinct commits the refs of `repo` point at, through one level of tag.
fn have_commits(git: &Git<'_>, repo: &Path) -> anyhow::Result<Vec<String>> {
    let out = git.run(
        Some(repo),
        &[
            "for-each-ref",
            "--format=%(objectname) %(objecttype) %(*objectname) %(*objecttype)",
            "refs/heads",
            "refs/tags",
        ],
    )?;
    let mut seen = HashSet::new();
    let mut haves = Vec::new();
    for line in out.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let commit = match fields.as_slice() {
            [oid, "commit", ..] => *oid,
            [_, "tag", peeled, "commit"] => *peeled,
            _ => continue,
        };
        if seen.insert(commit.to_owned()) {
            haves.push(commit.to_owned());
        }
    }
    Ok(haves)
}

/// `git rev-list --objects <wants> --not <haves>`: the object ids a correct pack must give.
fn needed_objects(
    git: &Git<'_>,
    repo: &Path,
    wants: &[String],
    haves: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut input = String::new();
    for want in wants {
        writeln!(input, "{want}")?;
    }
    input.push_str("--not\n");
    for have in haves {
        writeln!(input, "{have}")?;
    }
    let out = git.run_with_input(
        Some(repo),
        &["rev-list", "--objects", "--stdin"],
        input.as_bytes(),
    )?;
    Ok(out
        .lines()
        .filter_map(|line| line.split(' ').next())
        .map(str::to_owned)
        .collect())
}

/// A protocol-v2 fetch as `git clone`/`git fetch` 2.47 send it.
fn fetch_request(wants: &[String], haves: &[String]) -> anyhow::Result<Vec<u8>> {
    fn line(out: &mut Vec<u8>, text: &str) -> anyhow::Result<()> {
        Ok(pkt_line::encode_data(text.as_bytes(), out)?)
    }
    let mut out = Vec::new();
    line(&mut out, "command=fetch\n")?;
    line(&mut out, &format!("{AGENT}\n"))?;
    line(&mut out, "object-format=sha1\n")?;
    pkt_line::encode_delimiter(&mut out);
    for capability in ["thin-pack", "ofs-delta", "no-progress", "include-tag"] {
        line(&mut out, &format!("{capability}\n"))?;
    }
    for oid in wants {
        line(&mut out, &format!("want {oid}\n"))?;
    }
    for oid in haves {
        line(&mut out, &format!("have {oid}\n"))?;
    }
    line(&mut out, "done\n")?;
    pkt_line::encode_flush(&mut out);
    Ok(out)
}

/// Warm-up and check, then the interleaved timed runs.
fn measure(
    git: &Git<'_>,
    work: &Path,
    scenario: Scenario,
    servers: &[Server],
    request: &Request,
    runs: usize,
) -> Vec<Row> {
    let mut rows: Vec<Row> = servers
        .iter()
        .enumerate()
        .map(|(index, server)| {
            eprintln!(
                "bench: {}: warm-up and check of {}",
                scenario.name(),
                server.label
            );
            let repo = &request.repos[index];
            let response = work.join(format!("response-{index}"));
            let outcome = run_server(server, repo, &request.file, Some(&response), work)
                .and_then(|_| check_response(git, work, &response, request))
                .map(|checked| (checked, Vec::new()))
                .map_err(|err| format!("{err:#}"));
            let _ = fs::remove_file(&response);
            if let Err(err) = &outcome {
                eprintln!("bench: {} FAILED: {err}", server.label);
            }
            Row {
                label: server.label.clone(),
                is_packgate: server.is_packgate,
                outcome,
            }
        })
        .collect();
    for run in 0..runs {
        for (index, server) in servers.iter().enumerate() {
            if rows[index].outcome.is_err() {
                continue;
            }
            let result = run_server(server, &request.repos[index], &request.file, None, work);
            record(&mut rows[index], scenario.name(), run, runs, result);
        }
    }
    rows
}

/// The all-zero object id: "no such ref" in a push command.
const ZERO_OID: &str = "0000000000000000000000000000000000000000";

/// One `<old> <new> <ref>` command of a push.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PushCommand {
    old: String,
    new: String,
    refname: String,
}

/// A recorded push and what every server must make of it.
struct PushRequest {
    /// The bytes `git push` sent to receive-pack: commands, flush, pack.
    file: PathBuf,
    /// The server's repository before the push; every run pushes into a fresh copy.
    pristine: PathBuf,
    commands: Vec<PushCommand>,
    /// The capabilities on the first command.
    capabilities: String,
    /// Every ref of the server's repository after the push, name to value.
    expected_refs: BTreeMap<String, String>,
    pack_objects: u32,
    pack_bytes: u64,
}

impl PushRequest {
    /// The line under the scenario's heading.
    fn note(&self, scenario: Scenario) -> String {
        let what = match scenario {
            Scenario::PushMirror => {
                "`git push --mirror` of the fixture into an empty bare repository".to_owned()
            }
            Scenario::PushLarge => format!(
                "`git push` of one commit with a {} blob of zeros into an empty bare \
                 repository (the fixture is not used)",
                human_size(large_push::BLOB_BYTES)
            ),
            Scenario::PushLargeX4 => format!(
                "{} such pushes of a {} blob started at once, each into its own empty \
                 repository; peak RSS is the sum of the {0} processes' peaks, CPU their sum, \
                 wall time until the last ended",
                large_push::AT_ONCE,
                human_size(large_push::BLOB_BYTES)
            ),
            _ => format!(
                "`git push` of {BEHIND} new commits on the default branch (the fixture's \
                 `ahead{BEHIND}` copy) into a copy of the fixture"
            ),
        };
        format!(
            "{what}: {} ref update{}, a pack of {} objects ({}); the client's capabilities: \
             `{}`",
            self.commands.len(),
            if self.commands.len() == 1 { "" } else { "s" },
            self.pack_objects,
            human_size(self.pack_bytes),
            self.capabilities
        )
    }
}

/// Records the push of `scenario` and works out what the servers must do with it.
fn push_request(
    git: &Git<'_>,
    work: &Path,
    args: &BenchArgs,
    base: &Path,
    scenario: Scenario,
) -> anyhow::Result<PushRequest> {
    let (client, pristine, refspecs) = match scenario {
        Scenario::PushMirror => {
            let empty = work.join("push-mirror.empty.git");
            let _ = fs::remove_dir_all(&empty);
            git.run(
                None,
                &[
                    "-c",
                    "init.defaultBranch=main",
                    "init",
                    "--quiet",
                    "--bare",
                    &path_str(&empty)?,
                ],
            )?;
            (base.to_owned(), empty, vec!["--mirror".to_owned()])
        }
        Scenario::PushLarge | Scenario::PushLargeX4 => {
            let (client, pristine, refspec) = large_push::client(git, work)?;
            (client, pristine, vec![refspec])
        }
        _ => {
            let append = ahead_append(git, args, base)?;
            let ahead = ahead_copy(base, &append)?;
            let refname = format!("refs/heads/{}", append.branch);
            (ahead, base.to_owned(), vec![format!("{refname}:{refname}")])
        }
    };
    eprintln!(
        "bench: {}: recording `git push {}`…",
        scenario.name(),
        refspecs.join(" ")
    );
    let file = work.join(format!("{}.request", scenario.name()));
    let pushed = capture_push(git, work, &client, &pristine, &refspecs, &file)?;

    let request = fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let (commands, capabilities, pack) = parse_push_request(&request)?;
    ensure!(!commands.is_empty(), "the recorded push has no commands");
    ensure!(
        pack.len() >= 32 && pack.starts_with(b"PACK"),
        "the recorded push does not end in a pack"
    );
    let pack_objects = u32::from_be_bytes([pack[8], pack[9], pack[10], pack[11]]);
    let pack_bytes = pack.len() as u64;

    // What the push must leave: the server's refs with the commands applied, which must be
    // the client's values of the pushed refs and what git itself made of the recorded push.
    let mut expected_refs = all_refs(git, &pristine)?;
    let client_refs = all_refs(git, &client)?;
    for command in &commands {
        let old = expected_refs
            .get(&command.refname)
            .map_or(ZERO_OID, String::as_str);
        ensure!(
            old == command.old,
            "the recorded push expects {} at {}, the server has {old}",
            command.refname,
            command.old
        );
        ensure!(
            client_refs.get(&command.refname) == Some(&command.new),
            "the recorded push sets {} to {}, which is not the client's value",
            command.refname,
            command.new
        );
        expected_refs.insert(command.refname.clone(), command.new.clone());
    }
    if scenario == Scenario::PushMirror {
        ensure!(
            expected_refs == client_refs,
            "the recorded mirror push does not update every ref of the client"
        );
    }
    ensure!(
        pushed == expected_refs,
        "git receive-pack left other refs than the recorded commands say: {}",
        ref_differences(&expected_refs, &pushed)
    );
    Ok(PushRequest {
        file,
        pristine,
        commands,
        capabilities,
        expected_refs,
        pack_objects,
        pack_bytes,
    })
}

/// Pushes from `client` into a copy of `pristine` with `git push <refspecs>` (options like
/// `--mirror` among them go before the repository), through a
/// wrapper that copies the client's side of the conversation into `file` before
/// `git receive-pack` reads it. Returns the refs the copy has afterwards.
fn capture_push(
    git: &Git<'_>,
    work: &Path,
    client: &Path,
    pristine: &Path,
    refspecs: &[String],
    file: &Path,
) -> anyhow::Result<BTreeMap<String, String>> {
    let target = work.join("capture.git");
    copy_repo(pristine, &target)?;
    let wrapper = work.join("receive-pack-tee");
    fs::write(
        &wrapper,
        "#!/bin/sh\n\
         # What the client sends goes to a file, and on to git receive-pack, whose answers\n\
         # go straight back to the client.\n\
         tee \"$PACKGATE_BENCH_CAPTURE\" | \"$PACKGATE_BENCH_GIT\" receive-pack \"$@\"\n",
    )?;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))?;
    // A path relative to us would not be one for the wrapper.
    let git_program = if git.program.components().count() > 1 {
        fs::canonicalize(git.program)
            .with_context(|| format!("resolving {}", git.program.display()))?
    } else {
        git.program.to_owned()
    };
    let receive_pack = format!("--receive-pack={}", path_str(&wrapper)?);
    let target_str = path_str(&target)?;
    // `git push [<options>] <repository> [<refspec>…]`.
    let (options, refspecs): (Vec<&String>, Vec<&String>) =
        refspecs.iter().partition(|arg| arg.starts_with('-'));
    let mut push_args = vec!["push", receive_pack.as_str()];
    push_args.extend(options.iter().map(|arg| arg.as_str()));
    push_args.push(&target_str);
    push_args.extend(refspecs.iter().map(|arg| arg.as_str()));
    let mut command = git.command(Some(client));
    command
        .args(&push_args)
        .env("PACKGATE_BENCH_CAPTURE", file)
        .env("PACKGATE_BENCH_GIT", &git_program);
    git.finish(&mut command, &push_args, None)?;
    let refs = all_refs(git, &target)?;
    let _ = fs::remove_dir_all(&target);
    Ok(refs)
}

/// `cp -a from to`, after removing `to`; then the copy is written out (`sync -f`), so that
/// its dirty pages are not flushed while a server is timed.
fn copy_repo(from: &Path, to: &Path) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(to);
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .context("running cp")?;
    ensure!(
        status.success(),
        "`cp -a {} {}` failed",
        from.display(),
        to.display()
    );
    let status = Command::new("sync")
        .arg("-f")
        .arg(to)
        .status()
        .context("running sync")?;
    ensure!(status.success(), "`sync -f {}` failed", to.display());
    Ok(())
}

/// Every ref of `repo`, name to value.
fn all_refs(git: &Git<'_>, repo: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let out = git.run(
        Some(repo),
        &["for-each-ref", "--format=%(refname) %(objectname)"],
    )?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(name, oid)| (name.to_owned(), oid.to_owned()))
        .collect())
}

/// A short account of how `got` differs from `expected`.
fn ref_differences(expected: &BTreeMap<String, String>, got: &BTreeMap<String, String>) -> String {
    let mut differences = Vec::new();
    for (name, oid) in expected {
        match got.get(name) {
            None => differences.push(format!("{name} missing")),
            Some(other) if other != oid => {
                differences.push(format!("{name} at {other}, not {oid}"));
            }
            Some(_) => {}
        }
    }
    for name in got.keys().filter(|name| !expected.contains_key(*name)) {
        differences.push(format!("unexpected {name}"));
    }
    let count = differences.len();
    differences.truncate(5);
    if count > differences.len() {
        differences.push(format!("… {} more", count - differences.len()));
    }
    differences.join(", ")
}

/// One pkt-line.
enum Pkt<'a> {
    Flush,
    /// A delimiter (`0001`) or response-end (`0002`) packet.
    Special,
    Data(&'a [u8]),
}

/// The pkt-line at `*position` in `data`, or `None` at its end.
fn next_pkt<'a>(data: &'a [u8], position: &mut usize) -> anyhow::Result<Option<Pkt<'a>>> {
    let rest = &data[*position..];
    if rest.is_empty() {
        return Ok(None);
    }
    let (packet, consumed) = match pkt_line::decode(rest)? {
        Decoded::Complete { packet, consumed } => (packet, consumed),
        Decoded::Incomplete { .. } => bail!("truncated pkt-line"),
    };
    *position += consumed;
    Ok(Some(match packet {
        Packet::Flush => Pkt::Flush,
        Packet::Delimiter | Packet::ResponseEnd => Pkt::Special,
        Packet::Data(payload) => Pkt::Data(payload),
    }))
}

/// A push as the client sends it: the commands, the capabilities of the first, and the pack.
fn parse_push_request(request: &[u8]) -> anyhow::Result<(Vec<PushCommand>, String, &[u8])> {
    let mut position = 0;
    let mut commands = Vec::new();
    let mut capabilities = String::new();
    loop {
        let line = match next_pkt(request, &mut position)? {
            None => bail!("the recorded push ends before the flush after its commands"),
            Some(Pkt::Flush) => break,
            Some(Pkt::Special) => bail!("a special packet among the recorded push's commands"),
            Some(Pkt::Data(line)) => line,
        };
        let line = String::from_utf8_lossy(line);
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let (command, caps) = line.split_once('\0').unwrap_or((line, ""));
        if commands.is_empty() {
            caps.trim().clone_into(&mut capabilities);
        }
        let fields: Vec<&str> = command.split(' ').collect();
        let [old, new, refname] = fields.as_slice() else {
            bail!("a bad command in the recorded push: {command:?}");
        };
        commands.push(PushCommand {
            old: (*old).to_owned(),
            new: (*new).to_owned(),
            refname: (*refname).to_owned(),
        });
    }
    if capabilities.split(' ').any(|cap| cap == "push-options") {
        while !matches!(next_pkt(request, &mut position)?, None | Some(Pkt::Flush)) {}
    }
    Ok((commands, capabilities, &request[position..]))
}

/// Checks a receive-pack response to `push`: the advertisement, then a report (on band 1 of
/// the side band when the client asked for it) with `unpack ok` and `ok` for every command.
fn check_push_response(response: &Path, push: &PushRequest) -> anyhow::Result<()> {
    let data = fs::read(response)?;
    let mut position = 0;
    loop {
        match next_pkt(&data, &mut position)? {
            None => bail!("the response ends inside the advertisement"),
            Some(Pkt::Flush) => break,
            Some(Pkt::Data(line)) if line.starts_with(b"ERR ") => {
                bail!("the server sent {}", String::from_utf8_lossy(line).trim());
            }
            Some(_) => {}
        }
    }
    let sideband = push
        .capabilities
        .split(' ')
        .any(|cap| cap == "side-band-64k" || cap == "side-band");
    let report = if sideband {
        let mut report = Vec::new();
        while let Some(pkt) = next_pkt(&data, &mut position)? {
            let Pkt::Data(payload) = pkt else { break };
            match payload.first() {
                Some(1) => report.extend_from_slice(&payload[1..]),
                Some(2) => {}
                Some(3) => bail!(
                    "the server sent an error on band 3: {}",
                    String::from_utf8_lossy(&payload[1..]).trim()
                ),
                _ => bail!("a response packet without a side-band byte"),
            }
        }
        report
    } else {
        data[position..].to_vec()
    };

    let mut position = 0;
    let mut unpack = None;
    let mut accepted = HashSet::new();
    loop {
        let line = match next_pkt(&report, &mut position)? {
            None => bail!("the report ends without a flush"),
            Some(Pkt::Flush) => break,
            Some(Pkt::Special) => bail!("a special packet in the report"),
            Some(Pkt::Data(line)) => String::from_utf8_lossy(line).trim_end().to_owned(),
        };
        if let Some(status) = line.strip_prefix("unpack ") {
            unpack = Some(status.to_owned());
        } else if let Some(refname) = line.strip_prefix("ok ") {
            accepted.insert(refname.to_owned());
        } else if let Some(refused) = line.strip_prefix("ng ") {
            bail!("the server refused {refused}");
        } else if !line.starts_with("option ") {
            bail!("an unexpected report line {line:?}");
        }
    }
    ensure!(
        unpack.as_deref() == Some("ok"),
        "the report says unpack {}",
        unpack.as_deref().unwrap_or("nothing")
    );
    let missing: Vec<&str> = push
        .commands
        .iter()
        .filter(|command| !accepted.contains(&command.refname))
        .map(|command| command.refname.as_str())
        .collect();
    ensure!(
        missing.is_empty(),
        "the report has no `ok` for {} of {} refs, e.g. {}",
        missing.len(),
        push.commands.len(),
        missing[0]
    );
    Ok(())
}

/// Checks the repository after a push: exactly the expected refs, no quarantine left behind
/// and, with `fsck`, `git fsck` content.
fn check_pushed_repo(
    git: &Git<'_>,
    repo: &Path,
    push: &PushRequest,
    fsck: bool,
) -> anyhow::Result<()> {
    let refs = all_refs(git, repo)?;
    ensure!(
        refs == push.expected_refs,
        "wrong refs after the push: {}",
        ref_differences(&push.expected_refs, &refs)
    );
    for entry in fs::read_dir(repo.join("objects"))? {
        let name = entry?.file_name();
        ensure!(
            !name.to_string_lossy().starts_with("tmp_objdir"),
            "a quarantine was left behind: objects/{}",
            name.to_string_lossy()
        );
    }
    if fsck {
        git.run(Some(repo), &["fsck", "--no-progress"])
            .context("the repository after the push")?;
    }
    Ok(())
}

/// Warm-up and check, then the interleaved timed runs, of one push.
fn measure_push(
    git: &Git<'_>,
    work: &Path,
    scenario: Scenario,
    servers: &[Server],
    push: &PushRequest,
    runs: usize,
) -> Vec<Row> {
    let repo = work.join("push-target.git");
    let response = work.join("push-response");
    let checked = || Checked {
        objects: push.pack_objects,
        pack_bytes: push.pack_bytes,
    };
    let mut rows: Vec<Row> = servers
        .iter()
        .map(|server| {
            eprintln!(
                "bench: {}: warm-up and check of {}",
                scenario.name(),
                server.label
            );
            let outcome = push_once(git, work, server, push, &repo, &response, true)
                .map(|_| (checked(), Vec::new()))
                .map_err(|err| format!("{err:#}"));
            if let Err(err) = &outcome {
                eprintln!("bench: {} FAILED: {err}", server.label);
            }
            Row {
                label: server.label.clone(),
                is_packgate: server.is_packgate,
                outcome,
            }
        })
        .collect();
    for run in 0..runs {
        for (index, server) in servers.iter().enumerate() {
            if rows[index].outcome.is_err() {
                continue;
            }
            let result = push_once(git, work, server, push, &repo, &response, false);
            record(&mut rows[index], scenario.name(), run, runs, result);
        }
    }
    let _ = fs::remove_dir_all(&repo);
    let _ = fs::remove_file(&response);
    rows
}

/// One push: a fresh copy of the server's repository (not timed), the timed server run, and
/// the checks of its response and of the repository (not timed).
fn push_once(
    git: &Git<'_>,
    work: &Path,
    server: &Server,
    push: &PushRequest,
    repo: &Path,
    response: &Path,
    fsck: bool,
) -> anyhow::Result<Sample> {
    copy_repo(&push.pristine, repo)?;
    let sample = run_server(server, repo, &push.file, Some(response), work)?;
    check_push_response(response, push).context("the response")?;
    check_pushed_repo(git, repo, push, fsck)?;
    Ok(sample)
}

/// One run of `server` under GNU time, the response to `response` or `/dev/null`.
fn run_server(
    server: &Server,
    repo: &Path,
    request: &Path,
    response: Option<&Path>,
    work: &Path,
) -> anyhow::Result<Sample> {
    let times = work.join("time");
    let stderr_path = work.join("stderr");
    let stdout = match response {
        Some(path) => File::create(path)?,
        None => File::create("/dev/null")?,
    };
    let mut command = Command::new(GNU_TIME);
    command
        .args(["-f", "%e %U %S %M", "-o"])
        .arg(&times)
        .arg(&server.program)
        .args(&server.args);
    isolate(&mut command);
    match server.service {
        Service::UploadPackV2 => {
            command
                .arg("--stateless-rpc")
                .arg(repo)
                .env("GIT_PROTOCOL", "version=2");
        }
        // `isolate` removed any `GIT_PROTOCOL`: protocol v0.
        Service::ReceivePack => {
            command.arg(repo);
        }
    }
    command
        .stdin(File::open(request)?)
        .stdout(stdout)
        .stderr(File::create(&stderr_path)?);
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("running {}", server.program.display()))?;
    let wall = started.elapsed();
    if !status.success() {
        let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
        let stderr = stderr.trim();
        if stderr.is_empty() {
            bail!("{} failed ({status}) and printed nothing", server.label);
        }
        bail!("{} failed ({status}): {stderr}", server.label);
    }
    let (cpu, rss_kib) = parse_time_line(&fs::read_to_string(&times)?)?;
    Ok(Sample { wall, cpu, rss_kib })
}

/// `(user + system seconds, max RSS in KiB)` from the last line GNU time wrote for
/// `-f '%e %U %S %M'`.
fn parse_time_line(text: &str) -> anyhow::Result<(f64, u64)> {
    let line = text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_default();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [_, user, system, rss] = fields.as_slice() else {
        bail!("cannot read GNU time's output {text:?}");
    };
    let user: f64 = user.parse().context("user time")?;
    let system: f64 = system.parse().context("system time")?;
    let rss: u64 = rss.parse().context("max RSS")?;
    Ok((user + system, rss))
}

/// Checks a response: a `packfile` section whose pack `git index-pack` accepts and which,
/// with what the client has, holds every needed object (for a clone: exactly those).
fn check_response(
    git: &Git<'_>,
    work: &Path,
    response: &Path,
    request: &Request,
) -> anyhow::Result<Checked> {
    let pack = work.join("response.pack");
    let pack_bytes = demultiplex(response, &pack)?;
    let mut header = [0u8; 12];
    File::open(&pack)?
        .read_exact(&mut header)
        .context("the pack is shorter than its header")?;
    ensure!(&header[..4] == b"PACK", "the pack does not start with PACK");
    let objects = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);

    let verify = work.join("verify.git");
    let _ = fs::remove_dir_all(&verify);
    git.run(None, &["init", "--quiet", "--bare", &path_str(&verify)?])?;
    if let Some(client_has) = &request.client_has {
        let objects_dir = fs::canonicalize(client_has.join("objects"))?;
        fs::write(
            verify.join("objects").join("info").join("alternates"),
            format!("{}\n", path_str(&objects_dir)?),
        )?;
    }
    let mut command = git.command(Some(&verify));
    command
        .args(["index-pack", "--stdin", "--fix-thin"])
        .stdin(File::open(&pack)?);
    let output = command.output().context("running git index-pack")?;
    ensure!(
        output.status.success(),
        "git index-pack rejected the pack: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let _ = fs::remove_file(&pack);

    if request.client_has.is_none() {
        // A clone: the pack alone must be exactly the reachable objects.
        let listed = git.run(
            Some(&verify),
            &[
                "cat-file",
                "--batch-check=%(objectname)",
                "--batch-all-objects",
            ],
        )?;
        let got: BTreeSet<&str> = listed.lines().collect();
        let needed: BTreeSet<&str> = request.needed.iter().map(String::as_str).collect();
        let missing = needed.difference(&got).count();
        let extra = got.difference(&needed).count();
        ensure!(
            missing == 0 && extra == 0,
            "the pack has {} objects: {missing} needed ones missing, {extra} unneeded ones",
            got.len()
        );
        ensure!(
            objects as usize == needed.len(),
            "the pack header counts {objects} objects, the clone needs {}",
            needed.len()
        );
    } else {
        // A fetch: with what the client has, nothing may be missing.
        let mut input = request.needed.join("\n");
        input.push('\n');
        let checked = git.run_with_input(
            Some(&verify),
            &["cat-file", "--batch-check=%(objectname) %(objecttype)"],
            input.as_bytes(),
        )?;
        let missing = checked
            .lines()
            .filter(|line| line.ends_with(" missing"))
            .count();
        ensure!(
            missing == 0,
            "{missing} needed objects are neither in the pack nor on the client"
        );
    }
    let _ = fs::remove_dir_all(&verify);
    Ok(Checked {
        objects,
        pack_bytes,
    })
}

/// Reads a v2 fetch response, writes band 1 of its `packfile` section to `pack` and returns
/// its length.
fn demultiplex(response: &Path, pack: &Path) -> anyhow::Result<u64> {
    let mut input = BufReader::with_capacity(1 << 16, File::open(response)?);
    let mut output = std::io::BufWriter::new(File::create(pack)?);
    let mut in_packfile = false;
    let mut pack_bytes = 0u64;
    let mut buffer = vec![0u8; 65536];
    loop {
        let mut length = [0u8; 4];
        if input.fill_buf()?.is_empty() {
            bail!("the response ended without a flush packet");
        }
        input
            .read_exact(&mut length)
            .context("truncated pkt-line length")?;
        let length = std::str::from_utf8(&length)
            .ok()
            .and_then(|text| usize::from_str_radix(text, 16).ok())
            .with_context(|| {
                format!("bad pkt-line length {:?}", String::from_utf8_lossy(&length))
            })?;
        match length {
            0 if in_packfile => break,
            0 => bail!("the response ended without a packfile section"),
            1 | 2 => {
                ensure!(!in_packfile, "a delimiter inside the packfile section");
                continue;
            }
            3 => bail!("bad pkt-line length 3"),
            _ => {}
        }
        let payload = &mut buffer[..length - 4];
        input.read_exact(payload).context("truncated pkt-line")?;
        if payload.starts_with(b"ERR ") {
            bail!(
                "the server sent {}",
                String::from_utf8_lossy(payload).trim()
            );
        }
        if !in_packfile {
            in_packfile = payload == b"packfile\n" || payload == b"packfile";
            continue;
        }
        match payload.first() {
            Some(1) => {
                output.write_all(&payload[1..])?;
                pack_bytes += (payload.len() - 1) as u64;
            }
            Some(2) => {}
            Some(3) => bail!(
                "the server sent an error on band 3: {}",
                String::from_utf8_lossy(&payload[1..]).trim()
            ),
            _ => bail!("a packfile packet without a sideband byte"),
        }
    }
    output.flush()?;
    ensure!(pack_bytes > 0, "the packfile section holds no pack data");
    Ok(pack_bytes)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

struct Summary {
    wall: f64,
    wall_min: f64,
    wall_max: f64,
    cpu: f64,
    rss_mib: f64,
}

fn summarize(samples: &[Sample]) -> Summary {
    let mut walls: Vec<f64> = samples.iter().map(|s| s.wall.as_secs_f64()).collect();
    let mut cpus: Vec<f64> = samples.iter().map(|s| s.cpu).collect();
    let wall = median(&mut walls);
    Summary {
        wall,
        wall_min: walls.first().copied().unwrap_or_default(),
        wall_max: walls.last().copied().unwrap_or_default(),
        cpu: median(&mut cpus),
        rss_mib: samples.iter().map(|s| s.rss_kib).max().unwrap_or_default() as f64 / 1024.0,
    }
}

fn markdown_table(scenario: Scenario, note: &str, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "**{}**\n", scenario.name());
    if !note.is_empty() {
        let _ = writeln!(out, "{note}\n");
    }
    out.push_str(
        "| server | objects | pack | wall median s | wall min–max s | CPU median s \
         | peak RSS MiB | wall git/pg | CPU git/pg | RSS git/pg |\n",
    );
    out.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    let packgate = rows
        .iter()
        .find(|row| row.is_packgate)
        .and_then(|row| row.outcome.as_ref().ok())
        .map(|(_, samples)| summarize(samples));
    for row in rows {
        match &row.outcome {
            Ok((checked, samples)) => {
                let summary = summarize(samples);
                // No ratio against packgate itself, nor of values below GNU time's 10 ms.
                let ratio = |ours: f64, theirs: Option<f64>| match theirs {
                    Some(theirs) if !row.is_packgate && theirs > 0.0 && ours > 0.0 => {
                        format!("{:.2}", ours / theirs)
                    }
                    _ => "—".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.3} | {:.3}–{:.3} | {:.2} | {:.0} | {} | {} | {} |",
                    row.label,
                    checked.objects,
                    human_size(checked.pack_bytes),
                    summary.wall,
                    summary.wall_min,
                    summary.wall_max,
                    summary.cpu,
                    summary.rss_mib,
                    ratio(summary.wall, packgate.as_ref().map(|p| p.wall)),
                    ratio(summary.cpu, packgate.as_ref().map(|p| p.cpu)),
                    ratio(summary.rss_mib, packgate.as_ref().map(|p| p.rss_mib)),
                );
            }
            Err(err) => {
                let err = err.replace('|', "\\|").replace('\n', " ");
                let err: String = err.chars().take(300).collect();
                let _ = writeln!(out, "| {} | FAILED: {err} | | | | | | | | |", row.label);
            }
        }
    }
    out.push('\n');
    out
}

fn human_size(bytes: u64) -> String {
    if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// What every section of `benches/RESULTS.md` says about the run.
struct SectionHeader {
    /// `YYYY-MM-DD HH:MM UTC`.
    date: String,
    /// `N CPUs (model), M GiB RAM`.
    machine: String,
    /// `git version …`.
    git_version: String,
    /// `git describe --always --dirty` of the source tree.
    revision: String,
    /// The arguments after `cargo xtask`.
    command: String,
}

impl SectionHeader {
    fn new(git: &Git<'_>, root: &Path) -> anyhow::Result<SectionHeader> {
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .unwrap_or_default();
        let nproc = std::thread::available_parallelism().map_or(0, usize::from);
        let cpu_model = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let memory = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("MemTotal:"))
                    .and_then(|line| line.split_whitespace().nth(1))
                    .and_then(|kib| kib.parse::<u64>().ok())
            })
            .map_or_else(String::new, |kib| {
                format!(", {:.0} GiB RAM", kib as f64 / (1024.0 * 1024.0))
            });
        let git_version = git.run(None, &["--version"])?.trim().to_owned();
        let revision = Git {
            program: Path::new("git"),
        }
        .run_in(root, &["describe", "--always", "--dirty"])
        .map(|rev| rev.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
        let command: Vec<String> = std::env::args().skip(1).collect();
        Ok(SectionHeader {
            date,
            machine: format!("{nproc} CPUs ({cpu_model}){memory}"),
            git_version,
            revision,
            command: command.join(" "),
        })
    }

    /// The command, machine, and versions lines.
    fn lines(&self) -> String {
        format!(
            "- command: `cargo xtask {}`\n- machine: {}\n- {}; packgate at `{}`\n",
            self.command, self.machine, self.git_version, self.revision
        )
    }
}

fn record_section(
    git: &Git<'_>,
    root: &Path,
    built: &packgate_fixture::BuiltFixture,
    args: &BenchArgs,
    load: &str,
    table: &str,
) -> anyhow::Result<String> {
    let header = SectionHeader::new(git, root)?;
    let file_name = built
        .path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();

    let mut out = String::new();
    let scenarios = expand(&args.scenarios);
    let fetches = scenarios.iter().any(|scenario| !scenario.is_push());
    let pushes = scenarios.iter().any(|scenario| scenario.is_push());
    let scenarios: Vec<&str> = scenarios.iter().map(|s| s.name()).collect();
    let _ = writeln!(
        out,
        "## {}: {} on `{}`\n",
        header.date,
        scenarios.join(", "),
        args.preset()
    );
    out.push_str(&header.lines());
    let _ = writeln!(
        out,
        "- fixture: `{file_name}` (preset `{}`, `git repack -ad`{}), {} objects, {} refs",
        args.preset(),
        if args.bitmaps && fetches {
            "; bitmaps row: a copy after `git repack -adb`"
        } else {
            ""
        },
        built.objects,
        built.refs
    );
    if pushes {
        let _ = writeln!(
            out,
            "- push: the bytes a real `git push` sent to receive-pack (commands, flush, pack) \
             recorded once through a `tee` wrapper given as `--receive-pack`, then replayed \
             as standard input of `<server> receive-pack <repo>` (protocol v0, response to a \
             file); each run pushes into a fresh `cp -a` copy of the server's repository made \
             outside the timed region. Every run's report (`unpack ok`, `ok` per ref) and refs \
             are checked, and `git fsck` after each server's warm-up"
        );
    }
    let _ = writeln!(out, "- load average (1/5/15 min, shared machine): {load}");
    let _ = writeln!(
        out,
        "- {} timed runs per server after one checked warm-up, interleaved; medians, max RSS; \
         ratios are git/packgate (>1: packgate faster or smaller)\n",
        args.runs
    );
    out.push_str(table);
    Ok(out)
}

fn append_results(path: &Path, section: &str) -> anyhow::Result<()> {
    if !path.exists() {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(
            path,
            "# Benchmark results\n\n\
             Appended by `cargo xtask bench` (see `xtask/src/bench.rs`): packgate and \
             `git upload-pack` serving the same protocol-v2 fetch request \
             (`--stateless-rpc`, request from a file, response to `/dev/null`), server side \
             alone, same repository, same run. Wall time is measured around the server \
             process; CPU (user+sys) and peak RSS come from GNU time and include the \
             children the server waits for (git's `pack-objects`); peak RSS is that of the \
             largest single process. Push sections replay a recorded `git push` to \
             `receive-pack` instead (see each section).\n\n",
        )?;
    }
    let mut file = fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(section.as_bytes())?;
    Ok(())
}

fn path_str(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// Runs git isolated from the user's and the system's configuration.
struct Git<'a> {
    program: &'a Path,
}

impl Git<'_> {
    fn command(&self, git_dir: Option<&Path>) -> Command {
        let mut command = Command::new(self.program);
        isolate(&mut command);
        if let Some(git_dir) = git_dir {
            command.env("GIT_DIR", git_dir);
        }
        command.stdin(Stdio::null());
        command
    }

    fn run(&self, git_dir: Option<&Path>, args: &[&str]) -> anyhow::Result<String> {
        self.finish(self.command(git_dir).args(args), args, None)
    }

    fn run_with_input(
        &self,
        git_dir: Option<&Path>,
        args: &[&str],
        input: &[u8],
    ) -> anyhow::Result<String> {
        self.finish(self.command(git_dir).args(args), args, Some(input))
    }

    /// In a work tree, with the caller's configuration (for `git describe` of the source).
    fn run_in(&self, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new(self.program);
        command.current_dir(dir).stdin(Stdio::null());
        self.finish(command.args(args), args, None)
    }

    fn finish(
        &self,
        command: &mut Command,
        args: &[&str],
        input: Option<&[u8]>,
    ) -> anyhow::Result<String> {
        let description = format!("git {}", args.join(" "));
        let output = match input {
            None => command.output(),
            Some(input) => {
                // Through a file, so that a large input and output cannot deadlock.
                let path = input_file()?;
                fs::write(&path, input)?;
                let output = File::open(&path).and_then(|file| command.stdin(file).output());
                let _ = fs::remove_file(&path);
                output
            }
        }
        .with_context(|| format!("running `{description}`"))?;
        ensure!(
            output.status.success(),
            "`{description}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        String::from_utf8(output.stdout)
            .with_context(|| format!("`{description}` printed non-UTF-8"))
    }
}

/// A fresh path for a command's standard input.
fn input_file() -> anyhow::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    Ok(std::env::temp_dir().join(format!(
        "packgate-bench-{}-{}.in",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )))
}

/// Removes our `GIT_*` variables and any system or global configuration, so that both
/// servers and every helper see only the repository's own configuration.
fn isolate(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GIT_") {
            command.env_remove(&name);
        }
    }
    command
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LC_ALL", "C");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_pkt_lines() -> anyhow::Result<()> {
        let oid = "0123456789012345678901234567890123456789".to_owned();
        let request = fetch_request(std::slice::from_ref(&oid), &[])?;
        let text = String::from_utf8_lossy(&request);
        assert!(text.starts_with("0012command=fetch\n0015agent=git/2.47.3\n"));
        assert!(text.contains("0001000ethin-pack\n"));
        assert!(text.contains(&format!("0032want {oid}\n")));
        assert!(text.ends_with("0009done\n0000"));
        Ok(())
    }

    #[test]
    fn time_line() -> anyhow::Result<()> {
        let (cpu, rss) =
            parse_time_line("Command exited with non-zero status 1\n1.50 0.25 0.50 2048\n")?;
        assert!((cpu - 0.75).abs() < 1e-9);
        assert_eq!(rss, 2048);
        Ok(())
    }

    fn pkt(text: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        pkt_line::encode_data(text, &mut out)?;
        Ok(out)
    }

    #[test]
    fn push_request_is_parsed() -> anyhow::Result<()> {
        let new = "1111111111111111111111111111111111111111";
        let mut request = pkt(format!(
            "{ZERO_OID} {new} refs/heads/main\0 report-status-v2 side-band-64k\n"
        )
        .as_bytes())?;
        request.extend(pkt(format!("{ZERO_OID} {new} refs/tags/v1\n").as_bytes())?);
        request.extend_from_slice(b"0000PACK\0\0\0\x02\0\0\0\x05");
        let (commands, capabilities, pack) = parse_push_request(&request)?;
        assert_eq!(capabilities, "report-status-v2 side-band-64k");
        assert_eq!(commands.len(), 2);
        assert_eq!(commands[1].refname, "refs/tags/v1");
        assert_eq!(commands[0].new, new);
        assert_eq!(pack, b"PACK\0\0\0\x02\0\0\0\x05");
        Ok(())
    }

    #[test]
    fn push_response_is_checked() -> anyhow::Result<()> {
        let command = |refname: &str| PushCommand {
            old: ZERO_OID.to_owned(),
            new: ZERO_OID.replace('0', "1"),
            refname: refname.to_owned(),
        };
        let push = PushRequest {
            file: PathBuf::new(),
            pristine: PathBuf::new(),
            commands: vec![command("refs/heads/main"), command("refs/tags/v1")],
            capabilities: "report-status side-band-64k".to_owned(),
            expected_refs: BTreeMap::new(),
            pack_objects: 0,
            pack_bytes: 0,
        };
        let respond = |report: &[&[u8]]| -> anyhow::Result<()> {
            let mut inner = Vec::new();
            for line in report {
                inner.extend(pkt(line)?);
            }
            inner.extend_from_slice(b"0000");
            let mut response = pkt(b"0000... capabilities^{}\0report-status side-band-64k\n")?;
            response.extend_from_slice(b"0000");
            response.extend(pkt(b"\x02progress\n")?);
            for chunk in inner.chunks(10) {
                let mut band = vec![1];
                band.extend_from_slice(chunk);
                response.extend(pkt(&band)?);
            }
            response.extend_from_slice(b"0000");
            let path = input_file()?;
            fs::write(&path, response)?;
            let result = check_push_response(&path, &push);
            let _ = fs::remove_file(&path);
            result
        };
        respond(&[
            b"unpack ok\n",
            b"ok refs/heads/main\n",
            b"ok refs/tags/v1\n",
        ])?;
        assert!(respond(&[b"unpack ok\n", b"ok refs/heads/main\n"]).is_err());
        assert!(respond(&[
            b"unpack ok\n",
            b"ok refs/heads/main\n",
            b"ng refs/tags/v1 no\n"
        ])
        .is_err());
        assert!(respond(&[b"unpack index-pack failed\n"]).is_err());
        Ok(())
    }

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

    #[test]
    fn medians() {
        assert!((median(&mut [3.0, 1.0, 2.0]) - 2.0).abs() < 1e-9);
        assert!((median(&mut [4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-9);
    }
}
