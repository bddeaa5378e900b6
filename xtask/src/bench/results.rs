//! The results: a markdown table per scenario, and the section appended to
//! `benches/RESULTS.md` with what the run was (machine, versions, command, load).

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use super::{
    expand,
    git::Git,
    measure::{summarize, Row},
    BenchArgs, Scenario,
};

/// `/proc/loadavg`'s 1, 5 and 15 minute load averages, as `uptime` prints them.
pub(super) fn load_average() -> String {
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

pub(super) fn markdown_table(scenario: Scenario, note: &str, rows: &[Row]) -> String {
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
    // Requests of a few milliseconds (the ref listings) need more digits.
    let short = rows.iter().all(|row| match &row.outcome {
        Ok((_, samples)) => summarize(samples).wall < 0.1,
        Err(_) => true,
    });
    let (wall_digits, cpu_digits) = if short { (4, 4) } else { (3, 2) };
    // Each git row is compared with the packgate row above it (on the same repository: the
    // bitmapped copy's rows come after the plain ones).
    let mut packgate = None;
    for row in rows {
        if row.is_packgate {
            packgate = row
                .outcome
                .as_ref()
                .ok()
                .map(|(_, samples)| summarize(samples));
        }
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
                    "| {} | {} | {} | {:.w$} | {:.w$}–{:.w$} | {:.c$} | {:.0} | {} | {} | {} |",
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
                    w = wall_digits,
                    c = cpu_digits,
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

pub(super) fn human_size(bytes: u64) -> String {
    if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// What every section of `benches/RESULTS.md` says about the run.
pub(super) struct SectionHeader {
    /// `YYYY-MM-DD HH:MM UTC`.
    pub(super) date: String,
    /// `N CPUs (model), M GiB RAM`.
    pub(super) machine: String,
    /// `git version …`.
    pub(super) git_version: String,
    /// `git describe --always --dirty` of the source tree.
    pub(super) revision: String,
    /// The arguments after `cargo xtask`.
    pub(super) command: String,
}

impl SectionHeader {
    pub(super) fn new(git: &Git<'_>, root: &Path) -> anyhow::Result<SectionHeader> {
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
    pub(super) fn lines(&self) -> String {
        format!(
            "- command: `cargo xtask {}`\n- machine: {}\n- {}; packgate at `{}`\n",
            self.command, self.machine, self.git_version, self.revision
        )
    }
}

/// A long-running-server run's section of `benches/RESULTS.md`, appended to it: the heading
/// (`title` on the preset), the header lines, the fixture served as `/<repo>` (`fixture`: its
/// description), each server's command line, the `lines` that say what the scenario did
/// (load averages among them where measured), then `tables`.
pub(super) struct ServerSection<'a> {
    pub(super) title: &'a str,
    pub(super) preset: &'a str,
    pub(super) fixture: &'a str,
    pub(super) built: &'a packgate_fixture::BuiltFixture,
    pub(super) repo: &'a str,
    pub(super) commands: &'a [String],
    pub(super) lines: &'a [String],
    pub(super) tables: &'a str,
}

impl ServerSection<'_> {
    /// Writes the section into `<root>/benches/RESULTS.md`.
    pub(super) fn append(&self, git: &Git<'_>, root: &Path) -> anyhow::Result<()> {
        let header = SectionHeader::new(git, root)?;
        let mut section = String::new();
        let _ = writeln!(
            section,
            "## {}: {} on `{}`\n",
            header.date, self.title, self.preset
        );
        section.push_str(&header.lines());
        let _ = writeln!(
            section,
            "- fixture: {}, {} objects, {} refs, served as `/{}` below a root directory",
            self.fixture, self.built.objects, self.built.refs, self.repo
        );
        for command in self.commands {
            let _ = writeln!(section, "- server: `{command}`");
        }
        for line in self.lines {
            let _ = writeln!(section, "- {line}");
        }
        section.push('\n');
        section.push_str(self.tables);
        let results_file = root.join("benches").join("RESULTS.md");
        append_results(&results_file, &section)?;
        eprintln!("bench: appended to {}", results_file.display());
        Ok(())
    }
}

pub(super) fn record_section(
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
            "; bitmaps rows: a copy after `git repack -adb`, each git row compared with the packgate row above it"
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

pub(super) fn append_results(path: &Path, section: &str) -> anyhow::Result<()> {
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
