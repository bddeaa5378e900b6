//! The tasks: repacking (full and of loose objects), pruning, and the calls to the
//! commit-graph, pack-refs, `.rev` and `.bitmap` writers.

use std::{
    fs::{self, File},
    io::{BufReader, BufWriter, Write},
    path::{Path, PathBuf},
    sync::atomic::AtomicBool,
    time::SystemTime,
};

use gix_hash::ObjectId;
use gix_hashtable::HashSet;
use gix_object::{Find, Write as _};
use packgate_pack::{
    ingest::{ingest_pack, IngestOptions, Quarantine},
    reader::CachingReader,
    DeltaSearch, WriteOptions,
};
use packgate_protocol::repository::Repository;

use crate::{
    config::MaintenanceConfig, pause_point, reach, MaintenanceError, Options, Report, Task,
};
use packgate_object::{write_commit_graph, CommitGraphWriteOptions};
use packgate_pack::{
    bitmap::{write_bitmap, BitmapWriteOptions},
    write_rev,
};
use packgate_protocol::pack_refs::{pack_refs, PackRefsOptions};

const HASH: gix_hash::Kind = gix_hash::Kind::Sha1;

/// What `gc --auto` would do, by git's `need_to_gc()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcNeed {
    /// Below every threshold.
    Nothing,
    /// Too many loose objects: pack the reachable loose ones (`repack -d -l`).
    LooseObjects,
    /// Too many packs: repack everything (`repack -A -d -l`).
    AllIntoOne,
}

/// git's `need_to_gc()`: more than `gc.autoPackLimit` local packs without `.keep`, or more
/// than `gc.auto` loose objects as estimated from `objects/17`.
pub fn needs_gc(objects_dir: &Path, config: &MaintenanceConfig) -> GcNeed {
    if config.gc_auto <= 0 {
        return GcNeed::Nothing;
    }
    if config.gc_auto_pack_limit > 0 {
        let packs = local_packs(objects_dir)
            .iter()
            .filter(|pack| !pack.keep)
            .count();
        if i64::try_from(packs).unwrap_or(i64::MAX) > config.gc_auto_pack_limit {
            return GcNeed::AllIntoOne;
        }
    }
    let threshold = (config.gc_auto + 255) / 256;
    let mut count = 0i64;
    if let Ok(entries) = fs::read_dir(objects_dir.join("17")) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.as_encoded_bytes();
            if name.len() == 38 && name.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                count += 1;
                if count > threshold {
                    return GcNeed::LooseObjects;
                }
            }
        }
    }
    GcNeed::Nothing
}

pub(crate) fn auto_condition(
    repo: &Repository,
    config: &MaintenanceConfig,
    task: Task,
) -> Result<bool, MaintenanceError> {
    let objects_dir = objects_dir(repo);
    Ok(match task {
        Task::Gc => needs_gc(&objects_dir, config) != GcNeed::Nothing,
        Task::LooseObjects => match config.loose_objects_auto {
            0 => false,
            limit if limit < 0 => true,
            limit => i64::try_from(loose_objects(&objects_dir).len()).unwrap_or(i64::MAX) >= limit,
        },
        Task::CommitGraph | Task::PackRefs => true,
        Task::IncrementalRepack => match config.incremental_repack_auto {
            0 => false,
            limit if limit < 0 => true,
            limit => {
                let packs = local_packs(&objects_dir)
                    .iter()
                    .filter(|pack| !pack.keep)
                    .count();
                i64::try_from(packs).unwrap_or(i64::MAX) >= limit
            }
        },
        Task::Prefetch => false,
    })
}

pub(crate) fn run_task(
    repo: &Repository,
    config: &MaintenanceConfig,
    task: Task,
    options: &Options,
    report: &mut Report,
) -> Result<(), MaintenanceError> {
    match task {
        Task::Gc => gc(repo, config, options, report),
        Task::LooseObjects => pack_loose_objects(repo, options, report),
        Task::CommitGraph => {
            let tips = reach::tips(repo)?;
            commit_graph(repo, &tips, report)
                .map_err(|message| MaintenanceError::TaskFailed { task, message })
        }
        Task::PackRefs => {
            run_pack_refs(repo).map_err(|message| MaintenanceError::TaskFailed { task, message })
        }
        Task::IncrementalRepack => geometric_repack(repo, config, options, report),
        Task::Prefetch => Err(MaintenanceError::Unsupported(task)),
    }
}

/// Which of `counts` (object counts, sorted ascending) to roll up into one pack so that the
/// packs left and the new one form a geometric progression with `factor`, as git's
/// `repack --geometric=<factor>` splits them: the number of smallest packs to merge.
pub fn geometric_split(counts: &[u64], factor: u64) -> usize {
    if counts.len() < 2 {
        return 0;
    }
    // From the largest down, find the first pair out of progression.
    let mut split = 0;
    for i in (1..counts.len()).rev() {
        if counts[i] < factor.saturating_mul(counts[i - 1]) {
            split = i;
            break;
        }
    }
    if split == 0 {
        return 0;
    }
    // The larger pack of the pair that broke the progression is merged too.
    let mut split = split + 1;
    let mut rolled: u64 = counts[..split].iter().sum();
    // Packs above that the merged pack would outgrow join it.
    while split < counts.len() && counts[split] < factor.saturating_mul(rolled) {
        rolled += counts[split];
        split += 1;
    }
    split
}

/// The `incremental-repack` task as geometric repacking (git's `repack --geometric=2 -d`):
/// the smallest packs, and the loose objects, become one pack so that pack sizes (objects)
/// form a progression of factor `repack.geometricFactor`; larger packs are left alone. No
/// reachability walk: every object of the merged packs is kept.
fn geometric_repack(
    repo: &Repository,
    config: &MaintenanceConfig,
    options: &Options,
    report: &mut Report,
) -> Result<(), MaintenanceError> {
    let objects_dir = objects_dir(repo);
    // Cruft packs are not part of the progression, as in git.
    let mut packs: Vec<(u64, LocalPack, gix_pack::index::File)> = local_packs(&objects_dir)
        .into_iter()
        .filter(|pack| !pack.keep && !pack.idx.with_extension("mtimes").exists())
        .filter_map(|pack| {
            let index = gix_pack::index::File::at(&pack.idx, HASH).ok()?;
            Some((u64::from(index.num_objects()), pack, index))
        })
        .collect();
    packs.sort_by_key(|(count, _, _)| *count);
    let counts: Vec<u64> = packs.iter().map(|(count, _, _)| *count).collect();
    let split = geometric_split(&counts, config.geometric_factor.max(2));
    let loose = loose_objects(&objects_dir);
    if split < 2 && loose.is_empty() {
        return Ok(());
    }
    let rolled = &packs[..split];
    let mut seen: HashSet<ObjectId> = HashSet::default();
    let mut objects = Vec::new();
    for (_, _, index) in rolled {
        for entry in index.iter() {
            if seen.insert(entry.oid) {
                objects.push(entry.oid);
            }
        }
    }
    let kept = &packs[rolled.len()..];
    for object in &loose {
        let packed_elsewhere = kept
            .iter()
            .any(|(_, _, index)| index.lookup(object.id).is_some());
        if !packed_elsewhere && seen.insert(object.id) {
            objects.push(object.id);
        }
    }
    if objects.is_empty() {
        return Ok(());
    }
    let reader = CachingReader::new(
        repo.objects().clone(),
        packgate_pack::reader::DEFAULT_CACHE_BYTES,
    );
    let new_pack = write_and_install(
        repo,
        &reader,
        &objects,
        &[],
        None,
        None,
        config,
        options,
        report,
    )?;
    pause_point("installed");
    let new_name = new_pack
        .as_ref()
        .and_then(|path| path.file_name().map(ToOwned::to_owned));
    for (_, pack, _) in rolled {
        if pack.pack.file_name() != new_name.as_deref() {
            delete_pack(pack);
            report.packs_deleted += 1;
        }
    }
    prune_packed(&objects_dir, report);
    Ok(())
}

/// git's `gc`: pack-refs, repack (everything, or with `--auto` below the pack limit only the
/// loose objects), prune, commit-graph.
fn gc(
    repo: &Repository,
    config: &MaintenanceConfig,
    options: &Options,
    report: &mut Report,
) -> Result<(), MaintenanceError> {
    let mut failures = Vec::new();
    if config.pack_refs {
        if let Err(message) = run_pack_refs(repo) {
            failures.push(format!("pack-refs: {message}"));
        }
    }
    pause_point("refs-packed");
    let need = if options.auto {
        needs_gc(&objects_dir(repo), config)
    } else {
        GcNeed::AllIntoOne
    };
    let tips = reach::tips(repo)?;
    match need {
        GcNeed::AllIntoOne => full_repack(repo, config, &tips, options, report)?,
        GcNeed::LooseObjects | GcNeed::Nothing => {
            incremental_repack(repo, config, &tips, options, report)?
        }
    }
    if config.write_commit_graph {
        if let Err(message) = commit_graph(repo, &tips, report) {
            failures.push(format!("commit-graph: {message}"));
        }
    }
    match failures.is_empty() {
        true => Ok(()),
        false => Err(MaintenanceError::TaskFailed {
            task: Task::Gc,
            message: failures.join("; "),
        }),
    }
}

fn commit_graph(repo: &Repository, tips: &reach::Tips, report: &mut Report) -> Result<(), String> {
    let written = write_commit_graph(
        &objects_dir(repo),
        repo.objects(),
        &tips.refs,
        &CommitGraphWriteOptions::default(),
    )
    .map_err(|err| crate::error_chain(&err))?;
    tracing::debug!(commits = written.commits, "commit-graph written");
    report.commit_graph = true;
    Ok(())
}

fn run_pack_refs(repo: &Repository) -> Result<(), String> {
    let outcome = pack_refs(
        repo.git_dir(),
        &PackRefsOptions {
            all: true,
            prune: true,
        },
    )
    .map_err(|err| crate::error_chain(&err))?;
    tracing::debug!(
        packed = outcome.packed,
        pruned = outcome.pruned,
        "refs packed"
    );
    Ok(())
}

/// Everything reachable into one new pack (`repack -a -d -l`, git's `-A` for what is not):
/// see the crate documentation for the order of steps.
fn full_repack(
    repo: &Repository,
    config: &MaintenanceConfig,
    tips: &reach::Tips,
    options: &Options,
    report: &mut Report,
) -> Result<(), MaintenanceError> {
    let objects_dir = objects_dir(repo);
    let cutoff = config
        .prune_expire
        .map(|expiry| expiry.cutoff(SystemTime::now()));
    let old = local_packs(&objects_dir);
    let reader = CachingReader::new(
        repo.objects().clone(),
        packgate_pack::reader::DEFAULT_CACHE_BYTES,
    );
    let reachable = walk(repo, &reader, tips, options)?;
    let mut objects = reachable.objects.clone();
    let alternates = has_alternates(&objects_dir);
    if alternates {
        // `-l`: what an alternate holds stays there.
        let local = open_indices(&old);
        objects.retain(|id| {
            local.iter().any(|index| index.lookup(id).is_some())
                || loose_path(&objects_dir, id).is_file()
        });
    }
    let kept: Vec<&LocalPack> = old.iter().filter(|pack| pack.keep).collect();
    if !kept.is_empty() && !config.pack_kept_objects {
        let kept = open_indices(kept.iter().copied());
        objects.retain(|id| !kept.iter().any(|index| index.lookup(id).is_some()));
    }
    let all_in_one = objects.len() == reachable.objects.len();
    let bitmap_tips = (config.write_bitmaps && all_in_one).then_some(tips.refs.as_slice());
    if config.write_bitmaps && !all_in_one {
        report
            .warnings
            .push("disabling bitmap writing, as some objects are not being packed".into());
    }
    let new_pack = if objects.is_empty() {
        None
    } else {
        write_and_install(
            repo,
            &reader,
            &objects,
            &reachable.commits,
            bitmap_tips,
            reachable.whole_pack.filter(|_| all_in_one),
            config,
            options,
            report,
        )?
    };
    pause_point("installed");

    let new_name = new_pack
        .as_ref()
        .and_then(|path| path.file_name().map(ToOwned::to_owned));
    let new_index = new_pack
        .as_ref()
        .and_then(|pack| gix_pack::index::File::at(pack.with_extension("idx"), HASH).ok());
    let doomed: Vec<&LocalPack> = old
        .iter()
        .filter(|pack| !pack.keep && pack.pack.file_name() != new_name.as_deref())
        .collect();
    // Unreachable objects of the packs about to go: the young ones stay (their time is the
    // one a cruft pack's `.mtimes` records, else their pack's), in a cruft pack as git 2.47's
    // gc keeps them, or as loose objects with that time (`gc.cruftPacks=false`, git's older
    // `repack -A`), so the grace period counts from there. Older ones are dropped.
    let expired = |mtime: SystemTime| cutoff.is_some_and(|cutoff| mtime < cutoff);
    let mut unreachable: std::collections::HashMap<ObjectId, SystemTime> = Default::default();
    let mut deletable = Vec::new();
    for pack in doomed {
        let Ok(index) = gix_pack::index::File::at(&pack.idx, HASH) else {
            report
                .warnings
                .push(format!("{} unreadable; kept", pack.idx.display()));
            continue;
        };
        let mtimes = read_mtimes(&pack.idx.with_extension("mtimes"), index.num_objects());
        for (position, entry) in index.iter().enumerate() {
            let id = entry.oid;
            if reachable.set.contains(&id)
                || new_index
                    .as_ref()
                    .is_some_and(|new| new.lookup(id).is_some())
            {
                continue;
            }
            let mtime = mtimes
                .as_ref()
                .and_then(|mtimes| mtimes.get(position))
                .map_or(pack.mtime, |seconds| {
                    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(*seconds))
                });
            if expired(mtime) {
                continue;
            }
            let newest = unreachable.entry(id).or_insert(mtime);
            *newest = (*newest).max(mtime);
        }
        deletable.push(pack);
    }
    if config.cruft_packs {
        // The young unreachable loose objects join the cruft pack (their loose copies then go
        // as packed ones).
        for object in loose_objects(&objects_dir) {
            if !reachable.set.contains(&object.id) && !expired(object.mtime) {
                let newest = unreachable.entry(object.id).or_insert(object.mtime);
                *newest = (*newest).max(object.mtime);
            }
        }
        if !unreachable.is_empty() {
            let mut objects: Vec<ObjectId> = unreachable.keys().copied().collect();
            objects.sort();
            let mtimes: std::collections::HashMap<ObjectId, u32> = unreachable
                .iter()
                .map(|(id, mtime)| {
                    let seconds = mtime
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |age| age.as_secs());
                    (*id, u32::try_from(seconds).unwrap_or(u32::MAX))
                })
                .collect();
            let cruft = write_pack_files(
                repo,
                &reader,
                &objects,
                &[],
                Extras {
                    mtimes: Some(&mtimes),
                    ..Extras::default()
                },
                config,
                options,
                report,
            )?;
            report.loosened += objects.len();
            if let Some(cruft) = cruft {
                report.cruft_pack = Some(cruft);
            }
        }
    } else {
        let loose_store = gix_odb::loose::Store::at(&objects_dir, HASH);
        let mut buf = Vec::new();
        for (id, mtime) in &unreachable {
            if loose_path(&objects_dir, id).is_file() {
                continue;
            }
            let data = repo
                .objects()
                .try_find(id, &mut buf)
                .map_err(|err| MaintenanceError::Read {
                    id: *id,
                    message: err.to_string(),
                })?
                .ok_or_else(|| MaintenanceError::Read {
                    id: *id,
                    message: "not found".into(),
                })?;
            let (kind, data) = (data.kind, data.data.to_vec());
            loose_store
                .write_buf(kind, &data)
                .map_err(|err| MaintenanceError::Read {
                    id: *id,
                    message: format!("could not write it as a loose object: {err}"),
                })?;
            set_mtime(&loose_path(&objects_dir, id), *mtime);
            report.loosened += 1;
        }
    }
    pause_point("unreachable-kept");
    for pack in deletable {
        delete_pack(pack);
        report.packs_deleted += 1;
    }
    pause_point("deleted");
    prune_packed(&objects_dir, report);
    prune_unreachable(&objects_dir, &reachable.set, cutoff, report);
    Ok(())
}

/// `repack -d -l` without `-a`: the reachable loose objects into a new pack, then the loose
/// copies and the expired unreachable loose objects go.
fn incremental_repack(
    repo: &Repository,
    config: &MaintenanceConfig,
    tips: &reach::Tips,
    options: &Options,
    report: &mut Report,
) -> Result<(), MaintenanceError> {
    let objects_dir = objects_dir(repo);
    let cutoff = config
        .prune_expire
        .map(|expiry| expiry.cutoff(SystemTime::now()));
    let packs = local_packs(&objects_dir);
    let indices = open_indices(&packs);
    let reader = CachingReader::new(
        repo.objects().clone(),
        packgate_pack::reader::DEFAULT_CACHE_BYTES,
    );
    let reachable = walk(repo, &reader, tips, options)?;
    let loose: HashSet<ObjectId> = loose_objects(&objects_dir)
        .into_iter()
        .map(|object| object.id)
        .collect();
    let objects: Vec<ObjectId> = reachable
        .objects
        .iter()
        .filter(|id| {
            loose.contains(*id) && !indices.iter().any(|index| index.lookup(*id).is_some())
        })
        .copied()
        .collect();
    if !objects.is_empty() {
        let commits: Vec<ObjectId> = reachable
            .commits
            .iter()
            .filter(|id| loose.contains(*id))
            .copied()
            .collect();
        write_and_install(
            repo, &reader, &objects, &commits, None, None, config, options, report,
        )?;
    }
    pause_point("installed");
    prune_packed(&objects_dir, report);
    prune_unreachable(&objects_dir, &reachable.set, cutoff, report);
    Ok(())
}

/// The `loose-objects` task: every loose object (at most 50 000, git's batch size) into a
/// new pack, then the loose copies go.
fn pack_loose_objects(
    repo: &Repository,
    options: &Options,
    report: &mut Report,
) -> Result<(), MaintenanceError> {
    let objects_dir = objects_dir(repo);
    prune_packed(&objects_dir, report);
    let mut objects: Vec<ObjectId> = loose_objects(&objects_dir)
        .into_iter()
        .map(|object| object.id)
        .collect();
    objects.sort();
    objects.truncate(50_000);
    if !objects.is_empty() {
        let reader = CachingReader::new(
            repo.objects().clone(),
            packgate_pack::reader::DEFAULT_CACHE_BYTES,
        );
        let config = MaintenanceConfig::from_config(repo.config())?;
        write_and_install(
            repo,
            &reader,
            &objects,
            &[],
            None,
            None,
            &config,
            options,
            report,
        )?;
        prune_packed(&objects_dir, report);
    }
    Ok(())
}

struct Reachable {
    /// In pack order (commits first).
    objects: Vec<ObjectId>,
    commits: Vec<ObjectId>,
    set: HashSet<ObjectId>,
    whole_pack: Option<ObjectId>,
}

fn walk(
    repo: &Repository,
    reader: &CachingReader,
    tips: &reach::Tips,
    options: &Options,
) -> Result<Reachable, MaintenanceError> {
    if tips.all.is_empty() {
        return Ok(Reachable {
            objects: Vec::new(),
            commits: Vec::new(),
            set: HashSet::default(),
            whole_pack: None,
        });
    }
    let interrupt = AtomicBool::new(false);
    let enumeration = packgate_pack::enumerate(
        reader,
        &tips.all,
        &[],
        &packgate_pack::EnumerateOptions {
            thread_limit: options.threads,
            commit_graph: repo.commit_graph(),
            bitmap: reader.packs().bitmap(),
            ..Default::default()
        },
        &interrupt,
    )
    .map_err(MaintenanceError::Enumerate)?;
    let commits = enumeration.objects()[..enumeration.counts().commits].to_vec();
    let whole_pack = enumeration.whole_pack();
    let objects = enumeration.into_objects();
    let set = objects.iter().copied().collect();
    Ok(Reachable {
        objects,
        commits,
        set,
        whole_pack,
    })
}

/// Write `objects` as a pack in a quarantine, index it, add `.rev` and (with `bitmap_tips`)
/// `.bitmap`, and move it into `objects/pack` (`.idx` last). Returns the installed pack.
#[allow(clippy::too_many_arguments)]
fn write_and_install(
    repo: &Repository,
    reader: &CachingReader,
    objects: &[ObjectId],
    commits: &[ObjectId],
    bitmap_tips: Option<&[ObjectId]>,
    whole_pack: Option<ObjectId>,
    config: &MaintenanceConfig,
    options: &Options,
    report: &mut Report,
) -> Result<Option<PathBuf>, MaintenanceError> {
    write_pack_files(
        repo,
        reader,
        objects,
        commits,
        Extras {
            bitmap_tips,
            whole_pack,
            mtimes: None,
        },
        config,
        options,
        report,
    )
}

/// What a pack gets besides its index and reverse index.
#[derive(Default, Clone, Copy)]
struct Extras<'a> {
    /// Write a `.bitmap` for these tips.
    bitmap_tips: Option<&'a [ObjectId]>,
    /// The objects are exactly this pack's (copied as it is).
    whole_pack: Option<ObjectId>,
    /// A cruft pack: every object's time for `.mtimes`.
    mtimes: Option<&'a std::collections::HashMap<ObjectId, u32>>,
}

#[allow(clippy::too_many_arguments)]
fn write_pack_files(
    repo: &Repository,
    reader: &CachingReader,
    objects: &[ObjectId],
    commits: &[ObjectId],
    extras: Extras<'_>,
    config: &MaintenanceConfig,
    options: &Options,
    report: &mut Report,
) -> Result<Option<PathBuf>, MaintenanceError> {
    let Extras {
        bitmap_tips,
        whole_pack,
        mtimes,
    } = extras;
    let objects_dir = objects_dir(repo);
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| MaintenanceError::Io {
            action,
            path,
            source,
        }
    };
    let quarantine = Quarantine::create(&objects_dir).map_err(io(
        "could not create a temporary directory in",
        &objects_dir,
    ))?;
    let tmp = quarantine.path().join("pack").join("tmp_repack.pack");
    let interrupt = AtomicBool::new(false);
    {
        let file = File::create(&tmp).map_err(io("could not create", &tmp))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        packgate_pack::write_pack(
            repo.objects(),
            objects,
            &WriteOptions {
                client_has: None,
                ofs_delta: true,
                delta_search: Some(DeltaSearch::new(commits)),
                reader: Some(reader),
                whole_pack,
            },
            &mut out,
            &interrupt,
        )
        .map_err(MaintenanceError::WritePack)?;
        out.flush().map_err(io("could not write", &tmp))?;
        let file = out
            .into_inner()
            .map_err(|err| io("could not write", &tmp)(err.into_error()))?;
        file.sync_all().map_err(io("could not write", &tmp))?;
    }
    pause_point("packed");
    let input = File::open(&tmp).map_err(io("could not open", &tmp))?;
    let outcome = ingest_pack(
        &mut BufReader::with_capacity(1 << 20, input),
        repo.objects(),
        &quarantine,
        &IngestOptions {
            thread_limit: options.threads,
            ..Default::default()
        },
        &interrupt,
    )
    .map_err(MaintenanceError::Index)?;
    fs::remove_file(&tmp).ok();
    let (Some(pack), Some(idx)) = (outcome.pack, outcome.index) else {
        return Ok(None);
    };
    if let Err(err) = write_rev(&idx) {
        report
            .warnings
            .push(format!("no reverse index: {}", crate::error_chain(&err)));
    }
    if let Some(mtimes) = mtimes {
        write_mtimes(&idx, mtimes).map_err(|source| MaintenanceError::Io {
            action: "could not write the .mtimes of",
            path: idx.clone(),
            source,
        })?;
    }
    if let Some(tips) = bitmap_tips {
        match write_bitmap(
            &pack,
            reader,
            tips,
            None,
            &BitmapWriteOptions {
                hash_cache: config.bitmap_hash_cache,
                lookup_table: config.bitmap_lookup_table,
            },
        ) {
            Ok(written) => {
                tracing::debug!(commits = written.commits, "bitmap written");
                report.bitmap = true;
            }
            Err(err) => report.warnings.push(format!(
                "Failed to write bitmap index. Packs generated without bitmaps: {}",
                crate::error_chain(&err)
            )),
        }
    }
    pause_point("indexed");
    quarantine.migrate().map_err(MaintenanceError::Index)?;
    let Some(name) = pack.file_name() else {
        return Ok(None);
    };
    let installed = objects_dir.join("pack").join(name);
    report.packs_written.push(installed.clone());
    Ok(Some(installed))
}

fn objects_dir(repo: &Repository) -> PathBuf {
    repo.objects().store_ref().path().to_owned()
}

fn has_alternates(objects_dir: &Path) -> bool {
    fs::read(objects_dir.join("info").join("alternates"))
        .is_ok_and(|content| content.iter().any(|byte| !byte.is_ascii_whitespace()))
}

/// A pack of the repository's own `objects/pack`.
#[derive(Debug)]
pub(crate) struct LocalPack {
    pub(crate) idx: PathBuf,
    pub(crate) pack: PathBuf,
    pub(crate) keep: bool,
    pub(crate) mtime: SystemTime,
}

/// The packs with both `.idx` and `.pack`, newest first.
pub(crate) fn local_packs(objects_dir: &Path) -> Vec<LocalPack> {
    let mut packs = Vec::new();
    let Ok(entries) = fs::read_dir(objects_dir.join("pack")) else {
        return packs;
    };
    for entry in entries.flatten() {
        let idx = entry.path();
        let is_pack_index = idx.extension().is_some_and(|ext| ext == "idx")
            && idx
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("pack-"));
        if !is_pack_index {
            continue;
        }
        let pack = idx.with_extension("pack");
        // A pack that vanished between the listing and now is simply not there.
        let Ok(meta) = fs::metadata(&pack) else {
            continue;
        };
        packs.push(LocalPack {
            keep: idx.with_extension("keep").exists(),
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            idx,
            pack,
        });
    }
    packs.sort_by_key(|pack| std::cmp::Reverse(pack.mtime));
    packs
}

fn open_indices<'a>(packs: impl IntoIterator<Item = &'a LocalPack>) -> Vec<gix_pack::index::File> {
    packs
        .into_iter()
        .filter_map(|pack| gix_pack::index::File::at(&pack.idx, HASH).ok())
        .collect()
}

/// A cruft pack's `.mtimes` (gitformat-pack): `MTME`, version 1, SHA-1, one 4-byte time per
/// object in index order, the pack's checksum and the file's own.
fn write_mtimes(
    idx: &Path,
    mtimes: &std::collections::HashMap<ObjectId, u32>,
) -> std::io::Result<PathBuf> {
    use sha1::Digest as _;
    let index = gix_pack::index::File::at(idx, HASH).map_err(std::io::Error::other)?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |age| age.as_secs());
    let now = u32::try_from(now).unwrap_or(u32::MAX);
    let count = usize::try_from(index.num_objects()).unwrap_or(0);
    let mut out = Vec::with_capacity(12 + 4 * count + 40);
    out.extend_from_slice(b"MTME");
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&1u32.to_be_bytes());
    for entry in index.iter() {
        let mtime = mtimes.get(&entry.oid).copied().unwrap_or(now);
        out.extend_from_slice(&mtime.to_be_bytes());
    }
    out.extend_from_slice(index.pack_checksum().as_bytes());
    let digest = sha1::Sha1::digest(&out);
    out.extend_from_slice(&digest);
    let path = idx.with_extension("mtimes");
    fs::write(&path, out)?;
    Ok(path)
}

/// The times of a cruft pack's objects, in index order, if `path` is a valid `.mtimes` for
/// a pack of `count` objects.
fn read_mtimes(path: &Path, count: u32) -> Option<Vec<u32>> {
    let data = fs::read(path).ok()?;
    let count = usize::try_from(count).ok()?;
    if data.len() != 12 + 4 * count + 40
        || &data[..4] != b"MTME"
        || data[4..8] != 1u32.to_be_bytes()
        || data[8..12] != 1u32.to_be_bytes()
    {
        return None;
    }
    Some(
        data[12..12 + 4 * count]
            .chunks_exact(4)
            .map(|word| u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
            .collect(),
    )
}

/// Remove a pack: the index first, so no reader finds a pack without its data.
fn delete_pack(pack: &LocalPack) {
    let _ = fs::remove_file(&pack.idx);
    for ext in ["pack", "rev", "bitmap", "mtimes", "promisor"] {
        let path = pack.idx.with_extension(ext);
        if let Err(err) = fs::remove_file(&path) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), %err, "could not remove");
            }
        }
    }
}

/// A loose object.
#[derive(Debug)]
pub(crate) struct Loose {
    pub(crate) id: ObjectId,
    pub(crate) path: PathBuf,
    pub(crate) mtime: SystemTime,
}

pub(crate) fn loose_path(objects_dir: &Path, id: &gix_hash::oid) -> PathBuf {
    let hex = id.to_hex().to_string();
    objects_dir.join(&hex[..2]).join(&hex[2..])
}

/// Every loose object of `objects_dir`.
pub(crate) fn loose_objects(objects_dir: &Path) -> Vec<Loose> {
    let mut out = Vec::new();
    for fanout in 0..=255u8 {
        let dir = objects_dir.join(format!("{fanout:02x}"));
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() != 38 {
                continue;
            }
            let Ok(id) = ObjectId::from_hex(format!("{fanout:02x}{name}").as_bytes()) else {
                continue;
            };
            let mtime = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .unwrap_or(SystemTime::now());
            out.push(Loose {
                id,
                path: entry.path(),
                mtime,
            });
        }
    }
    out
}

/// git's `prune-packed`: loose objects that a pack holds go.
fn prune_packed(objects_dir: &Path, report: &mut Report) {
    let indices = open_indices(&local_packs(objects_dir));
    for object in loose_objects(objects_dir) {
        if indices
            .iter()
            .any(|index| index.lookup(object.id).is_some())
            && fs::remove_file(&object.path).is_ok()
        {
            report.pruned_packed += 1;
        }
    }
    remove_empty_fanouts(objects_dir);
}

/// git's `prune --expire`: unreachable loose objects older than the cutoff go.
fn prune_unreachable(
    objects_dir: &Path,
    reachable: &HashSet<ObjectId>,
    cutoff: Option<SystemTime>,
    report: &mut Report,
) {
    let Some(cutoff) = cutoff else { return };
    pause_point("pruning");
    for object in loose_objects(objects_dir) {
        if reachable.contains(&object.id) || object.mtime >= cutoff {
            continue;
        }
        // Looked at again right before: a push may have written it anew since the listing.
        let fresh = fs::metadata(&object.path)
            .and_then(|meta| meta.modified())
            .map_or(true, |mtime| mtime >= cutoff);
        if !fresh && fs::remove_file(&object.path).is_ok() {
            report.pruned_unreachable += 1;
        }
    }
    remove_stale_temporaries(objects_dir, cutoff);
    remove_empty_fanouts(objects_dir);
}

/// git's `prune` also removes what interrupted writers left: files named `tmp_*` in the
/// object directory, its fan-out directories and `pack/`, once older than the cutoff.
fn remove_stale_temporaries(objects_dir: &Path, cutoff: SystemTime) {
    let mut dirs = vec![objects_dir.to_owned(), objects_dir.join("pack")];
    dirs.extend((0..=255u8).map(|fanout| objects_dir.join(format!("{fanout:02x}"))));
    for dir in dirs {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let is_temporary = entry.file_name().to_string_lossy().starts_with("tmp_")
                && entry.file_type().is_ok_and(|kind| kind.is_file());
            let old = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .is_ok_and(|mtime| mtime < cutoff);
            if is_temporary && old {
                if let Err(err) = fs::remove_file(entry.path()) {
                    tracing::debug!(path = %entry.path().display(), %err, "could not remove");
                }
            }
        }
    }
}

fn remove_empty_fanouts(objects_dir: &Path) {
    for fanout in 0..=255u8 {
        // Fails unless empty, which is what is wanted.
        let _ = fs::remove_dir(objects_dir.join(format!("{fanout:02x}")));
    }
}

fn set_mtime(path: &Path, mtime: SystemTime) {
    if let Ok(file) = File::open(path) {
        if let Err(err) = file.set_modified(mtime) {
            tracing::debug!(path = %path.display(), %err, "could not set the time of a loose object");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::geometric_split;

    #[test]
    fn geometric_progression_is_left_alone() {
        assert_eq!(geometric_split(&[1, 2, 4, 8, 100], 2), 0);
        assert_eq!(geometric_split(&[5], 2), 0);
        assert_eq!(geometric_split(&[], 2), 0);
    }

    #[test]
    fn small_packs_roll_up() {
        // Many equal small packs under a big one: they all merge, the big one stays.
        assert_eq!(geometric_split(&[3, 3, 3, 3, 1000], 2), 4);
        // The merged pack outgrows the next one: that one joins.
        assert_eq!(geometric_split(&[1, 1, 3, 4, 100], 2), 4);
        // Everything out of progression: all merge.
        assert_eq!(geometric_split(&[10, 11, 12], 2), 3);
    }
}

#[cfg(test)]
mod mtimes_tests {
    use super::{read_mtimes, write_mtimes};

    /// What git's `write_mtimes_file()` lays out, read back; a file of the wrong length or
    /// magic is not taken.
    #[test]
    fn mtimes_round_trip_against_the_index_order() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("r.git");
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .arg("--git-dir")
                .arg(&repo)
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        std::process::Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&repo)
            .status()
            .unwrap();
        let mut ids = Vec::new();
        for text in ["a", "b", "c"] {
            let path = dir.path().join(text);
            std::fs::write(&path, text).unwrap();
            ids.push(
                git(&["hash-object", "-w", path.to_str().unwrap()])
                    .trim()
                    .to_owned(),
            );
        }
        let base = repo.join("objects/pack/pack");
        let out = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(&repo)
            .args(["pack-objects", "-q", base.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(ids.join("\n").as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        let name = String::from_utf8(out.stdout).unwrap();
        let idx = repo.join(format!("objects/pack/pack-{}.idx", name.trim()));
        let mut sorted: Vec<gix_hash::ObjectId> = ids
            .iter()
            .map(|id| gix_hash::ObjectId::from_hex(id.as_bytes()).unwrap())
            .collect();
        sorted.sort();
        let mtimes = sorted
            .iter()
            .zip([100u32, 200, 300])
            .map(|(id, time)| (*id, time))
            .collect();
        let path = write_mtimes(&idx, &mtimes).unwrap();
        assert_eq!(read_mtimes(&path, 3), Some(vec![100, 200, 300]));
        assert_eq!(read_mtimes(&path, 4), None);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 12 + 12 + 40);
    }
}
