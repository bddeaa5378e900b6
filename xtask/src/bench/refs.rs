//! The ref-listing scenarios: what listing many refs costs the server, packgate against git on
//! the same repository, in the same run.
//!
//! The repository is the fixture with [`EXTRA_REFS`] more refs (cached beside it as
//! `<fixture>.refs50k.git`): half branches, half tags (every fourth an annotated tag), each
//! pointing at one of the 2,000 newest commits of the default branch, all packed with
//! `git pack-refs --all` as a server's refs mostly are.
//!
//! - `ls-refs`: a protocol-v2 `ls-refs` with `peel` and `symrefs` and no prefix, as
//!   `git ls-remote` sends it: every ref, tags peeled.
//! - `noop-fetch`: what `git fetch` 2.47 sends in protocol v2 when it is up to date — an
//!   `ls-refs` with `peel`, `symrefs` and the prefixes of its refspec and of tag following
//!   (`refs/heads/`, `refs/tags/`) — and nothing more, since no ref changed.
//! - `noop-fetch-v0`: the same fetch in protocol v0 over git:// or ssh: the server's whole
//!   reference advertisement, then the client's flush (it wants nothing), and the end.
//!
//! One request costs the server a few milliseconds, below GNU time's 10 ms resolution, so a
//! sample is [`BATCH`] requests run back to back: wall time by our clock and the CPU of the
//! finished children (`cutime` + `cstime` of `/proc/self/stat`), each divided by the batch.
//! Peak RSS is GNU time's, from the warm-up run, whose response is checked: it must list
//! exactly the refs `git for-each-ref` lists (and `HEAD`), each annotated tag with the object
//! it peels to.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context as _};
use packgate_wire::pkt_line;

use super::{
    derived,
    git::{isolate, Git},
    measure::{run_server, warm_up_then_time, Checked, Row, Sample, Server, Service},
    Scenario, AGENT,
};

/// How many refs the scenarios' repository has beyond the fixture's.
pub(super) const EXTRA_REFS: usize = 50_000;

/// Requests per timed sample.
const BATCH: u32 = 40;

/// The fixture `base` with [`EXTRA_REFS`] more refs, packed.
pub(super) fn many_refs_copy(git: &Git<'_>, base: &Path) -> anyhow::Result<PathBuf> {
    derived(base, "refs50k", |dir| {
        let head = git.run(Some(dir), &["rev-list", "--max-count=2000", "HEAD"])?;
        let commits: Vec<&str> = head.lines().collect();
        ensure!(!commits.is_empty(), "{} has no commits", dir.display());
        let mut stream = String::new();
        for number in 0..EXTRA_REFS / 2 {
            let target = commits[(number * 7919) % commits.len()];
            writeln!(stream, "reset refs/heads/many/{number:05}\nfrom {target}\n")?;
        }
        for number in 0..EXTRA_REFS / 2 {
            let target = commits[(number * 104_729) % commits.len()];
            if number % 4 == 0 {
                let message = format!("Tag many/{number:05}\n");
                write!(
                    stream,
                    "tag many/{number:05}\nfrom {target}\n\
                     tagger Bench <bench@example.com> 1700000000 +0000\n\
                     data {}\n{message}\n",
                    message.len()
                )?;
            } else {
                writeln!(stream, "reset refs/tags/many/{number:05}\nfrom {target}\n")?;
            }
        }
        git.run_with_input(Some(dir), &["fast-import", "--quiet"], stream.as_bytes())?;
        git.run(Some(dir), &["pack-refs", "--all"])?;
        Ok(())
    })
}

/// What one scenario asks.
struct Listing {
    protocol_v2: bool,
    /// The `ref-prefix` arguments; empty: every ref.
    prefixes: &'static [&'static str],
}

impl Listing {
    fn of(scenario: Scenario) -> anyhow::Result<Listing> {
        Ok(match scenario {
            Scenario::LsRefs => Listing {
                protocol_v2: true,
                prefixes: &[],
            },
            Scenario::NoopFetch => Listing {
                protocol_v2: true,
                prefixes: &["refs/heads/", "refs/tags/"],
            },
            Scenario::NoopFetchV0 => Listing {
                protocol_v2: false,
                prefixes: &[],
            },
            other => bail!("{} is not a ref-listing scenario", other.name()),
        })
    }

    /// The request's pkt-lines: an `ls-refs` command, or a v0 client's flush.
    fn request(&self) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        if !self.protocol_v2 {
            pkt_line::encode_flush(&mut out);
            return Ok(out);
        }
        let mut lines = vec![
            "command=ls-refs".to_owned(),
            AGENT.to_owned(),
            "object-format=sha1".to_owned(),
        ];
        let arguments = ["peel", "symrefs"].into_iter().map(str::to_owned).chain(
            self.prefixes
                .iter()
                .map(|prefix| format!("ref-prefix {prefix}")),
        );
        for (n, line) in lines.drain(..).enumerate() {
            pkt_line::encode_data(format!("{line}\n").as_bytes(), &mut out)?;
            if n == 2 {
                pkt_line::encode_delimiter(&mut out);
            }
        }
        for line in arguments {
            pkt_line::encode_data(format!("{line}\n").as_bytes(), &mut out)?;
        }
        pkt_line::encode_flush(&mut out);
        Ok(out)
    }

    /// The lines a correct response holds, as `<id> <name>` and `<peeled> <name>^{}`.
    fn expected(&self, git: &Git<'_>, repo: &Path) -> anyhow::Result<BTreeSet<String>> {
        let mut args = vec![
            "for-each-ref",
            "--format=%(objectname) %(refname) %(*objectname)",
        ];
        args.extend(self.prefixes.iter().copied());
        let listed = git.run(Some(repo), &args)?;
        let mut out = BTreeSet::new();
        if self.prefixes.is_empty() {
            let head = git.run(Some(repo), &["rev-parse", "HEAD"])?;
            out.insert(format!("{} HEAD", head.trim()));
        }
        for line in listed.lines() {
            let mut fields = line.split(' ');
            let (Some(id), Some(name), peeled) = (fields.next(), fields.next(), fields.next())
            else {
                bail!("unexpected for-each-ref line {line:?}");
            };
            out.insert(format!("{id} {name}"));
            if let Some(peeled) = peeled.filter(|peeled| !peeled.is_empty()) {
                out.insert(format!("{peeled} {name}^{{}}"));
            }
        }
        Ok(out)
    }

    /// The response's refs in the form of [`Listing::expected`].
    fn listed(&self, response: &[u8]) -> anyhow::Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        let mut reader = pkt_line::PacketReader::new(response);
        // A flush ends the listing.
        while let Some(pkt_line::Packet::Data(payload)) = reader.read_packet()? {
            // v0: capabilities after a NUL on the first line.
            let payload = payload.split(|&b| b == 0).next().unwrap_or(payload);
            let line = std::str::from_utf8(payload)?.trim_end_matches('\n');
            let mut fields = line.split(' ');
            let (Some(id), Some(name)) = (fields.next(), fields.next()) else {
                bail!("unexpected response line {line:?}");
            };
            if name == "capabilities^{}" {
                continue;
            }
            out.insert(format!("{id} {name}"));
            for field in fields {
                if let Some(peeled) = field.strip_prefix("peeled:") {
                    out.insert(format!("{peeled} {name}^{{}}"));
                }
            }
        }
        Ok(out)
    }
}

/// Warm-up and check, then the interleaved timed batches.
pub(super) fn measure_refs(
    git: &Git<'_>,
    work: &Path,
    scenario: Scenario,
    servers: &[Server],
    repo: &Path,
    runs: usize,
) -> anyhow::Result<Vec<Row>> {
    let listing = Listing::of(scenario)?;
    let request = work.join(format!("{}.request", scenario.name()));
    fs::write(&request, listing.request()?)?;
    let expected = listing.expected(git, repo)?;
    let servers: Vec<Server> = servers
        .iter()
        .map(|server| Server {
            service: if listing.protocol_v2 {
                Service::UploadPackV2
            } else {
                Service::UploadPackV0Stateful
            },
            ..server.clone()
        })
        .collect();
    // The batches are not under GNU time: each server's peak RSS is its warm-up run's.
    let rss = std::cell::RefCell::new(vec![0u64; servers.len()]);
    Ok(warm_up_then_time(
        scenario.name(),
        &servers,
        runs,
        |index, server| {
            let response = work.join("response");
            let sample = run_server(server, repo, &request, Some(&response), work)?;
            let listed = listing.listed(&fs::read(&response)?)?;
            let missing = expected.difference(&listed).count();
            let extra = listed.difference(&expected).count();
            ensure!(
                missing == 0 && extra == 0,
                "{} lines listed: {missing} expected ones missing, {extra} unexpected",
                listed.len()
            );
            let bytes = fs::metadata(&response)?.len();
            let _ = fs::remove_file(&response);
            rss.borrow_mut()[index] = sample.rss_kib;
            Ok(Checked {
                objects: u32::try_from(expected.len()).unwrap_or(u32::MAX),
                pack_bytes: bytes,
            })
        },
        |index, server| {
            batch(server, repo, &request).map(|sample| Sample {
                rss_kib: rss.borrow()[index],
                ..sample
            })
        },
    ))
}

/// [`BATCH`] requests back to back; wall and CPU per request.
fn batch(server: &Server, repo: &Path, request: &Path) -> anyhow::Result<Sample> {
    let cpu_before = children_cpu()?;
    let started = Instant::now();
    for _ in 0..BATCH {
        let mut command = Command::new(&server.program);
        command.args(&server.args);
        isolate(&mut command);
        server.service.add_args(&mut command, repo);
        let status = command
            .stdin(File::open(request)?)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("running {}", server.program.display()))?;
        ensure!(status.success(), "{} failed ({status})", server.label);
    }
    let wall = started.elapsed() / BATCH;
    let cpu = (children_cpu()? - cpu_before) / f64::from(BATCH);
    Ok(Sample {
        wall,
        cpu,
        rss_kib: 0,
    })
}

/// User and system CPU seconds of this process's waited-for children so far.
fn children_cpu() -> anyhow::Result<f64> {
    let stat = fs::read_to_string("/proc/self/stat")?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let after = stat
        .rsplit_once(')')
        .map(|(_, after)| after)
        .context("/proc/self/stat has no command name")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // cutime and cstime are fields 16 and 17 of the line; the first after the name is 3.
    let ticks = |n: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(n)
            .context("/proc/self/stat is too short")?
            .parse::<f64>()?)
    };
    // USER_HZ is 100 on Linux.
    Ok((ticks(13)? + ticks(14)?) / 100.0)
}
