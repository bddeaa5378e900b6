//! `cargo xtask bench`: packgate against `git upload-pack` on the same repository, in the
//! same run, server side alone.
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
//! What is measured per run: wall time (our own clock around the process), user+system CPU
//! and peak RSS as GNU time reports them. GNU time takes them from `wait4`, so CPU includes
//! the children the server waited for (git's `pack-objects`) and the peak RSS is that of the
//! largest single process of the server's tree, not their sum.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use clap::ValueEnum;
use packgate_fixture::{append_commits, Append, Packing};

/// GNU time; its `-f` and `-o` options are what we need.
const GNU_TIME: &str = "/usr/bin/time";

/// How many commits the `incremental` scenario's client is behind.
const BEHIND: usize = 10;

/// The agent line of the request: what git 2.47.3 sends.
const AGENT: &str = "agent=git/2.47.3";

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// What to measure: `clone` (a full clone) and/or `incremental` (a fetch 10 commits
    /// behind).
    #[arg(value_enum, required = true)]
    scenarios: Vec<Scenario>,
    /// The fixture preset; it is built repacked without bitmaps (`git repack -ad`) and cached
    /// under `target/bench-fixtures`.
    #[arg(long, default_value = "large")]
    preset: String,
    /// Timed runs per server, after one warm-up run each.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Also measure git on a copy of the repository repacked with a bitmap index
    /// (`git repack -adb`), as its own row.
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// A full clone: want every ref, no haves.
    Clone,
    /// A fetch by a client 10 commits behind on the default branch.
    Incremental,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Clone => "clone",
            Scenario::Incremental => "incremental",
        }
    }
}

/// One server under test.
struct Server {
    label: String,
    program: PathBuf,
    /// Arguments before `--stateless-rpc <repo>`.
    args: Vec<String>,
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

/// The row of a server in one scenario.
struct Row {
    label: String,
    is_packgate: bool,
    outcome: Result<(Checked, Vec<Sample>), String>,
}

/// Runs `cargo xtask bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    ensure!(args.runs > 0, "--runs must be at least 1");
    check_gnu_time()?;
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    let git = Git { program: &args.git };

    let packgate = match &args.packgate {
        Some(path) => path.clone(),
        None => build_packgate(&root, &target)?,
    };

    let mut spec = packgate_fixture::preset_or_error(&args.preset)?;
    spec.name = format!("{}-repacked", args.preset);
    spec.packing = Packing::Repacked;
    spec.git = args.git.clone();
    let cache = target.join("bench-fixtures");
    eprintln!("bench: fixture {} (repacked, no bitmaps)…", spec.name);
    let fixture_started = Instant::now();
    let built = spec
        .build_cached(&cache)
        .with_context(|| format!("building fixture {}", spec.name))?;
    eprintln!("bench: {built} ({:.1?})", fixture_started.elapsed());
    let base = built.path.clone();
    let bitmapped = if args.bitmaps {
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
            is_packgate: true,
            bitmaps: false,
        },
        Server {
            label: "git upload-pack".to_owned(),
            program: args.git.clone(),
            args: vec!["upload-pack".to_owned()],
            is_packgate: false,
            bitmaps: false,
        },
    ];
    if args.bitmaps {
        servers.push(Server {
            label: "git upload-pack, bitmaps".to_owned(),
            program: args.git.clone(),
            args: vec!["upload-pack".to_owned()],
            is_packgate: false,
            bitmaps: true,
        });
    }

    let work = target.join(format!("bench-work-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = (|| -> anyhow::Result<Vec<(Scenario, Vec<Row>)>> {
        let mut results = Vec::new();
        for &scenario in &dedup(&args.scenarios) {
            let request = match scenario {
                Scenario::Clone => {
                    clone_request(&git, &work, &base, bitmapped.as_deref(), &servers)?
                }
                Scenario::Incremental => {
                    incremental_request(&git, &work, &args, &base, bitmapped.as_deref(), &servers)?
                }
            };
            eprintln!(
                "bench: {}: {} wants, {} haves, {} objects needed",
                scenario.name(),
                request.wants.len(),
                request.haves.len(),
                request.needed.len()
            );
            let rows = measure(&git, &work, scenario, &servers, &request, args.runs);
            results.push((scenario, rows));
        }
        Ok(results)
    })();
    let _ = fs::remove_dir_all(&work);
    let results = result?;

    let mut table = String::new();
    for (scenario, rows) in &results {
        table.push_str(&markdown_table(*scenario, rows));
    }
    println!("{table}");

    if !args.no_record {
        let section = record_section(&git, &root, &built, &args, &table)?;
        let results_file = root.join("benches").join("RESULTS.md");
        append_results(&results_file, &section)?;
        eprintln!("bench: appended to {}", results_file.display());
    }
    eprintln!("bench: done in {:.1?}", started.elapsed());
    let failed: Vec<String> = results
        .iter()
        .flat_map(|(scenario, rows)| {
            rows.iter()
                .filter(|row| row.outcome.is_err())
                .map(move |row| format!("{} ({})", row.label, scenario.name()))
        })
        .collect();
    ensure!(failed.is_empty(), "failed: {}", failed.join(", "));
    Ok(())
}

fn dedup(scenarios: &[Scenario]) -> Vec<Scenario> {
    let mut out = Vec::new();
    for &scenario in scenarios {
        if !out.contains(&scenario) {
            out.push(scenario);
        }
    }
    out
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
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
    fs::write(&file, fetch_request(&wants, &[]))?;
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
    let head = git.run(Some(base), &["symbolic-ref", "--short", "HEAD"])?;
    let append = Append {
        branch: head.trim().to_owned(),
        commits: BEHIND,
        git: args.git.clone(),
        ..Append::default()
    };
    let suffix = format!("ahead{BEHIND}");
    let ahead = derived(base, &suffix, |dir| {
        append_commits(dir, &append)?;
        Ok(())
    })?;
    let ahead_bitmapped = match bitmapped {
        Some(bitmapped) => Some(derived(bitmapped, &suffix, |dir| {
            append_commits(dir, &append)?;
            Ok(())
        })?),
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
    fs::write(&file, fetch_request(&wants, &haves))?;
    Ok(Request {
        file,
        repos: repos_for(servers, &ahead, ahead_bitmapped.as_deref()),
        client_has: Some(base.to_owned()),
        wants,
        haves,
        needed,
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
fn fetch_request(wants: &[String], haves: &[String]) -> Vec<u8> {
    fn line(out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(format!("{:04x}", text.len() + 4).as_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    let mut out = Vec::new();
    line(&mut out, "command=fetch\n");
    line(&mut out, &format!("{AGENT}\n"));
    line(&mut out, "object-format=sha1\n");
    out.extend_from_slice(b"0001");
    for capability in ["thin-pack", "ofs-delta", "no-progress", "include-tag"] {
        line(&mut out, &format!("{capability}\n"));
    }
    for oid in wants {
        line(&mut out, &format!("want {oid}\n"));
    }
    for oid in haves {
        line(&mut out, &format!("have {oid}\n"));
    }
    line(&mut out, "done\n");
    out.extend_from_slice(b"0000");
    out
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
            let Ok((_, samples)) = &mut rows[index].outcome else {
                continue;
            };
            match run_server(server, &request.repos[index], &request.file, None, work) {
                Ok(sample) => {
                    eprintln!(
                        "bench: {} run {}/{runs}: {} {:.3}s wall, {:.2}s CPU, {} MiB",
                        scenario.name(),
                        run + 1,
                        server.label,
                        sample.wall.as_secs_f64(),
                        sample.cpu,
                        sample.rss_kib / 1024
                    );
                    samples.push(sample);
                }
                Err(err) => {
                    eprintln!("bench: {} FAILED: {err:#}", server.label);
                    rows[index].outcome = Err(format!("run {}: {err:#}", run + 1));
                }
            }
        }
    }
    rows
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
        .args(&server.args)
        .arg("--stateless-rpc")
        .arg(repo);
    isolate(&mut command);
    command
        .env("GIT_PROTOCOL", "version=2")
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

fn markdown_table(scenario: Scenario, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "**{}**\n", scenario.name());
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

fn record_section(
    git: &Git<'_>,
    root: &Path,
    built: &packgate_fixture::BuiltFixture,
    args: &BenchArgs,
    table: &str,
) -> anyhow::Result<String> {
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
    let file_name = built
        .path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();

    let mut out = String::new();
    let scenarios: Vec<&str> = dedup(&args.scenarios).iter().map(|s| s.name()).collect();
    let _ = writeln!(
        out,
        "## {date}: {} on `{}`\n",
        scenarios.join(", "),
        args.preset
    );
    let _ = writeln!(out, "- command: `cargo xtask {}`", command.join(" "));
    let _ = writeln!(out, "- machine: {nproc} CPUs ({cpu_model}){memory}");
    let _ = writeln!(out, "- {git_version}; packgate at `{revision}`");
    let _ = writeln!(
        out,
        "- fixture: `{file_name}` (preset `{}`, `git repack -ad`{}), {} objects, {} refs",
        args.preset,
        if args.bitmaps {
            "; bitmaps row: a copy after `git repack -adb`"
        } else {
            ""
        },
        built.objects,
        built.refs
    );
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
             largest single process.\n\n",
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
    fn request_is_pkt_lines() {
        let oid = "0123456789012345678901234567890123456789".to_owned();
        let request = fetch_request(std::slice::from_ref(&oid), &[]);
        let text = String::from_utf8_lossy(&request);
        assert!(text.starts_with("0012command=fetch\n0015agent=git/2.47.3\n"));
        assert!(text.contains("0001000ethin-pack\n"));
        assert!(text.contains(&format!("0032want {oid}\n")));
        assert!(text.ends_with("0009done\n0000"));
    }

    #[test]
    fn time_line() -> anyhow::Result<()> {
        let (cpu, rss) =
            parse_time_line("Command exited with non-zero status 1\n1.50 0.25 0.50 2048\n")?;
        assert!((cpu - 0.75).abs() < 1e-9);
        assert_eq!(rss, 2048);
        Ok(())
    }

    #[test]
    fn medians() {
        assert!((median(&mut [3.0, 1.0, 2.0]) - 2.0).abs() < 1e-9);
        assert!((median(&mut [4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-9);
    }
}
