//! Developer tasks for packgate: fixtures, benchmarks, interop drivers.
//!
//! Run as `cargo xtask <task>` (an alias in `.cargo/config.toml`).
//!
//! - `cargo xtask fixture <preset> <dest>`: build a deterministic repository (see
//!   `packgate-fixture`); `--packing repacked` gives the normal repacked repository without
//!   bitmaps that benchmarks want.

mod bench;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use packgate_fixture::{Packing, RefStorage, Spec, PRESETS};

#[derive(Parser)]
#[command(name = "xtask", about = "Developer tasks for packgate")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build a deterministic bare repository from a named preset.
    Fixture(FixtureArgs),
    /// Measure packgate against git (upload-pack, receive-pack) on the same repository.
    Bench(bench::BenchArgs),
}

#[derive(clap::Args)]
struct FixtureArgs {
    /// Preset: empty, tiny, small, many-refs, medium or large.
    preset: String,
    /// Where to create the bare repository (must not exist or be empty).
    destination: PathBuf,
    /// Override how objects are stored.
    #[arg(long, value_enum)]
    packing: Option<PackingArg>,
    /// Override how refs are stored.
    #[arg(long, value_enum)]
    refs: Option<RefsArg>,
    /// Override the seed of the generated content.
    #[arg(long)]
    seed: Option<u64>,
    /// The git to run.
    #[arg(long, default_value = "git")]
    git: PathBuf,
    /// Print the fast-import stream to standard output instead of building.
    #[arg(long)]
    stream: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum PackingArg {
    /// fast-import's own pack.
    FastImport,
    /// `git repack -a -d --no-write-bitmap-index`.
    Repacked,
    /// `git repack -a -d --write-bitmap-index`.
    Bitmaps,
    /// Every object loose.
    Loose,
}

#[derive(Clone, Copy, ValueEnum)]
enum RefsArg {
    /// One file per ref.
    Loose,
    /// All in packed-refs.
    Packed,
    /// Packed, with some loose refs shadowing stale packed entries.
    Mixed,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Fixture(args) => fixture(args),
        Task::Bench(args) => bench::run(args),
    }
}

fn fixture(args: FixtureArgs) -> anyhow::Result<()> {
    let Some(mut spec) = Spec::preset(&args.preset) else {
        bail!(
            "unknown preset {:?}; known presets: {}",
            args.preset,
            PRESETS.join(", ")
        );
    };
    if let Some(packing) = args.packing {
        spec.packing = match packing {
            PackingArg::FastImport => Packing::FastImport,
            PackingArg::Repacked => Packing::Repacked,
            PackingArg::Bitmaps => Packing::RepackedWithBitmaps,
            PackingArg::Loose => Packing::Loose,
        };
    }
    if let Some(refs) = args.refs {
        spec.refs = match refs {
            RefsArg::Loose => RefStorage::Loose,
            RefsArg::Packed => RefStorage::Packed,
            RefsArg::Mixed => RefStorage::Mixed,
        };
    }
    if let Some(seed) = args.seed {
        spec.seed = seed;
    }
    spec.git = args.git;
    if args.stream {
        let stdout = std::io::stdout().lock();
        spec.write_stream(std::io::BufWriter::new(stdout))?;
        return Ok(());
    }
    let started = Instant::now();
    let built = spec
        .build(&args.destination)
        .with_context(|| format!("building preset {}", args.preset))?;
    eprintln!(
        "built {} ({:?} objects, {:?} refs) in {:.1?}",
        built,
        spec.packing,
        spec.refs,
        started.elapsed()
    );
    Ok(())
}
