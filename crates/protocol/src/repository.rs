//! The repository model: a git directory on disk with its object database, refs and
//! configuration, opened the way git's `enter_repo()` finds it.

use std::path::{Path, PathBuf};

use bstr::{BStr, BString, ByteSlice};
use gix_hash::ObjectId;
use gix_object::Find;

use crate::config::{self, ConfigError};
use crate::refname::{Namespace, PrefixScope, RefPrefix};

/// How strictly [`Repository::open()`] interprets the directory it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathLookup {
    /// Like git without `--strict`: try `<dir>/.git`, `<dir>`, `<dir>.git/.git` and `<dir>.git`.
    #[default]
    Lenient,
    /// Like git's `--strict`: `<dir>` must be a git directory itself.
    Strict,
}

/// The error returned by [`Repository::open()`].
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Nothing at the path looks like a git repository.
    #[error("'{path}' does not appear to be a git repository")]
    NotARepository {
        /// The path that was asked for.
        path: PathBuf,
    },
    /// The repository uses an object format packgate does not serve.
    #[error("repository '{path}' uses an unsupported object format")]
    UnsupportedObjectFormat {
        /// The git directory.
        path: PathBuf,
    },
    /// The git directory found at the path could not be resolved to an absolute path.
    #[error("could not resolve the git directory '{path}'")]
    Resolve {
        /// The git directory as found.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The object database could not be opened.
    #[error("could not open the object database of '{path}'")]
    Objects {
        /// The git directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The configuration could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The error returned when reading refs or objects fails.
#[derive(Debug, thiserror::Error)]
pub enum RefsError {
    /// Listing or reading references failed.
    #[error("could not read references")]
    Read(#[source] gix_error::Error),
    /// Listing references failed while reading the ref directories.
    #[error("could not list references")]
    List(#[source] std::io::Error),
    /// `packed-refs` holds a line that is not a record.
    #[error("malformed packed-refs line: {line:?}")]
    PackedRefs {
        /// The line, cut to a readable length.
        line: BString,
    },
    /// An object needed for peeling could not be read.
    #[error("could not read object {id}")]
    Object {
        /// The object.
        id: ObjectId,
        /// What went wrong.
        #[source]
        source: gix_error::Error,
    },
}

/// A reference as served: its name, what it points at, and where it leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefRecord {
    /// The full name, like `refs/heads/main` or `HEAD`.
    pub name: BString,
    /// The object the reference resolves to, following symbolic references.
    pub id: ObjectId,
    /// For a symbolic reference, the name of the reference it points to.
    pub symref_target: Option<BString>,
    /// What `packed-refs` says of the object's peeled value, if it says anything.
    pub peeled: Peeled,
}

/// A reference as a listing visits it ([`Repository::visit_refs()`]): [`RefRecord`]
/// borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefView<'a> {
    /// The full name, like `refs/heads/main`.
    pub name: &'a BStr,
    /// The object the reference resolves to, following symbolic references.
    pub id: ObjectId,
    /// For a symbolic reference, the name of the reference it points to.
    pub symref_target: Option<&'a BStr>,
    /// What `packed-refs` says of the object's peeled value, if it says anything.
    pub peeled: Peeled,
}

impl RefView<'_> {
    /// The owned record.
    pub fn to_record(&self) -> RefRecord {
        RefRecord {
            name: self.name.to_owned(),
            id: self.id,
            symref_target: self.symref_target.map(ToOwned::to_owned),
            peeled: self.peeled,
        }
    }
}

impl RefRecord {
    /// The record borrowed, as a listing visits it.
    pub fn view(&self) -> RefView<'_> {
        RefView {
            name: self.name.as_bstr(),
            id: self.id,
            symref_target: self.symref_target.as_ref().map(|target| target.as_bstr()),
            peeled: self.peeled,
        }
    }
}

/// A reference's peeled value as far as it is known without reading its object: git's
/// `packed-refs` records it (the `^` lines), and with its `fully-peeled` trait (or `peeled`,
/// for tags) a ref without one is known not to point at an annotated tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Peeled {
    /// Not recorded: read the object to know ([`Repository::peeled`]).
    #[default]
    Unknown,
    /// The reference does not point at an annotated tag.
    NotATag,
    /// The reference points at an annotated tag that peels to this object.
    Tag(ObjectId),
}

/// `HEAD` as it is: pointing at a branch that exists, at one that does not yet, or detached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// `HEAD` resolves to an object.
    Born(RefRecord),
    /// `HEAD` is a symbolic reference to a branch that does not exist yet.
    Unborn {
        /// The branch `HEAD` points at.
        target: BString,
    },
    /// There is no usable `HEAD`.
    Missing,
}

/// Opened repositories shared between the requests for them (a server's [`Registry`]
/// keeps one): a request for a git directory opened before gets a clone of it — the object
/// store (its loaded pack indexes), the ref store (its `packed-refs` buffer) and the parsed
/// configuration shared, not read again — as long as what it was opened from is unchanged.
///
/// Checked by the stamps (device, inode, size, modification and change times) of the
/// configuration files read (the repository's, the global and system ones, the included
/// ones), `objects/pack`, `objects/info` (alternates, commit-graph) and the commit-graph
/// chain's directory, a few `stat` calls; a repository whose stamps are within the racy
/// window ([`RACY_WINDOW`]) is not kept. A configuration change is seen by the next
/// request, as when every request opened the repository anew.
///
/// Ten thousand waiting clients of one repository (`wait-refs`, `GET <repo>/refs`) then
/// hold one opened repository, not one each.
///
/// [`Registry`]: crate::registry::Registry
#[derive(Debug, Default)]
pub struct SharedRepositories {
    entries: std::sync::Mutex<std::collections::HashMap<PathBuf, SharedRepository>>,
}

#[derive(Debug)]
struct SharedRepository {
    stamps: Vec<(PathBuf, Option<FileStamp>)>,
    repo: Repository,
}

/// The most repositories kept; the cache starts over when full.
const MAX_SHARED_REPOSITORIES: usize = 256;

/// What a file or directory looked like (`None` in a list: absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// `Err` when it cannot be told (then nothing is kept).
    fn of(path: &Path) -> Result<Option<FileStamp>, ()> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(path) {
            Ok(meta) => Ok(Some(FileStamp {
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.size(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                ctime: (meta.ctime(), meta.ctime_nsec()),
            })),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(None)
            }
            Err(_) => Err(()),
        }
    }

    /// Whether it changed more recently than the racy window before `now`.
    fn racy(&self, now: std::time::SystemTime) -> bool {
        let newest = self.mtime.max(self.ctime);
        let Ok(newest_secs) = u64::try_from(newest.0) else {
            return true;
        };
        let nanos = u32::try_from(newest.1).unwrap_or(0);
        let at = std::time::UNIX_EPOCH + std::time::Duration::new(newest_secs, nanos);
        now.duration_since(at).map_or(true, |age| age < RACY_WINDOW)
    }
}

impl SharedRepositories {
    /// [`Repository::open`] without configuration parameters, sharing what it can.
    pub fn open(&self, path: &Path, lookup: PathLookup) -> Result<Repository, OpenError> {
        self.open_at(path, lookup, std::time::SystemTime::now())
    }

    /// [`SharedRepositories::open`] as if at `now`: what the racy window is measured from.
    fn open_at(
        &self,
        path: &Path,
        lookup: PathLookup,
        now: std::time::SystemTime,
    ) -> Result<Repository, OpenError> {
        let found = find_git_dir(path, lookup).ok_or_else(|| OpenError::NotARepository {
            path: path.to_owned(),
        })?;
        let git_dir = found.canonicalize().map_err(|source| OpenError::Resolve {
            path: found.clone(),
            source,
        })?;
        let known = self.lock().get(&git_dir).map(|entry| entry.stamps.clone());
        if let Some(stamps) = known {
            let unchanged = stamps
                .iter()
                .all(|(path, stamp)| FileStamp::of(path).is_ok_and(|now| now == *stamp));
            if unchanged {
                if let Some(entry) = self.lock().get(&git_dir) {
                    if entry.stamps == stamps {
                        return Ok(entry.repo.clone());
                    }
                }
            }
        }
        // Stamped before reading: a change in between makes the entry stale, never wrong.
        let stamps = stamp_sources(&git_dir, now);
        let repo = Repository::open_git_dir(git_dir.clone(), None)?;
        let mut entries = self.lock();
        match stamps.and_then(|stamps| complete_stamps(stamps, &repo, now)) {
            Some(stamps) => {
                if entries.len() >= MAX_SHARED_REPOSITORIES {
                    entries.clear();
                }
                entries.insert(
                    git_dir,
                    SharedRepository {
                        stamps,
                        repo: repo.clone(),
                    },
                );
            }
            None => {
                entries.remove(&git_dir);
            }
        }
        Ok(repo)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<PathBuf, SharedRepository>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The stamps of what opening the repository at `git_dir` reads, but the included
/// configuration files (see [`complete_stamps`]); `None` if one cannot be told or is racy.
fn stamp_sources(
    git_dir: &Path,
    now: std::time::SystemTime,
) -> Option<Vec<(PathBuf, Option<FileStamp>)>> {
    let mut paths = config::source_files()?;
    paths.push(git_dir.join("config"));
    paths.push(git_dir.join("config.worktree"));
    paths.push(git_dir.join("commondir"));
    paths.push(git_dir.join("objects/pack"));
    paths.push(git_dir.join("objects/info"));
    paths.push(git_dir.join("objects/info/alternates"));
    paths.push(git_dir.join("objects/info/commit-graph"));
    paths.push(git_dir.join("objects/info/commit-graphs"));
    paths.push(git_dir.join("objects/info/commit-graphs/commit-graph-chain"));
    stamp_all(paths, now)
}

/// `stamps` with the configuration files `repo`'s configuration was read from (includes).
fn complete_stamps(
    mut stamps: Vec<(PathBuf, Option<FileStamp>)>,
    repo: &Repository,
    now: std::time::SystemTime,
) -> Option<Vec<(PathBuf, Option<FileStamp>)>> {
    let mut included: Vec<PathBuf> = Vec::new();
    for section in repo.config.sections() {
        if let Some(path) = &section.meta().path {
            if !stamps.iter().any(|(known, _)| known == path) && !included.contains(path) {
                included.push(path.clone());
            }
        }
    }
    stamps.extend(stamp_all(included, now)?);
    Some(stamps)
}

fn stamp_all(
    paths: Vec<PathBuf>,
    now: std::time::SystemTime,
) -> Option<Vec<(PathBuf, Option<FileStamp>)>> {
    paths
        .into_iter()
        .map(|path| {
            let stamp = FileStamp::of(&path).ok()?;
            if stamp.is_some_and(|stamp| stamp.racy(now)) {
                return None;
            }
            Some((path, stamp))
        })
        .collect()
}

/// A repository's object database handle, made on first use.
///
/// A handle owns a zlib inflate state (about 47 KiB) besides its caches: a clone of a
/// repository (each session's, see [`SharedRepositories`]) makes its own handle only when
/// it reads an object, so a client that only waits (`wait-refs`, `GET <repo>/refs`) holds
/// none.
struct Objects {
    /// The handle opened, which every clone's own is cloned from (sharing its store).
    opened: std::sync::Arc<std::sync::Mutex<gix_odb::Handle>>,
    own: std::cell::OnceCell<gix_odb::Handle>,
}

impl Objects {
    fn new(handle: gix_odb::Handle) -> Objects {
        Objects {
            opened: std::sync::Arc::new(std::sync::Mutex::new(handle)),
            own: std::cell::OnceCell::new(),
        }
    }

    fn handle(&self) -> &gix_odb::Handle {
        self.own.get_or_init(|| {
            self.opened
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone()
        })
    }
}

impl Clone for Objects {
    fn clone(&self) -> Objects {
        Objects {
            opened: std::sync::Arc::clone(&self.opened),
            own: std::cell::OnceCell::new(),
        }
    }
}

/// An opened repository.
///
/// A clone shares the object store and ref store on disk but has its own caches: a
/// repository can't be shared between threads, a clone can be sent to another one.
#[derive(Clone)]
pub struct Repository {
    git_dir: PathBuf,
    objects: Objects,
    refs: gix_ref::file::Store,
    /// Shared by clones: read once when opened, never changed.
    config: std::sync::Arc<gix_config::File>,
    namespace: Option<Namespace>,
    commit_graph: std::sync::OnceLock<Option<packgate_object::CommitGraphFile>>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("git_dir", &self.git_dir)
            .finish_non_exhaustive()
    }
}

impl Repository {
    /// Open the repository at `path` (a bare repository or a work tree), then read its
    /// configuration followed by `config_parameters` (git's `GIT_CONFIG_PARAMETERS`).
    ///
    /// `path` may be relative (to the process's working directory). The git directory found
    /// is resolved here, once, to an absolute path with symlinks followed — what git's
    /// `enter_repo()` gets by changing into it — and every other path (configuration, hooks,
    /// quarantine, lock) is derived from [`Repository::git_dir()`].
    pub fn open(
        path: &Path,
        lookup: PathLookup,
        config_parameters: Option<&str>,
    ) -> Result<Self, OpenError> {
        let found = find_git_dir(path, lookup).ok_or_else(|| OpenError::NotARepository {
            path: path.to_owned(),
        })?;
        let git_dir = found.canonicalize().map_err(|source| OpenError::Resolve {
            path: found.clone(),
            source,
        })?;
        Self::open_git_dir(git_dir, config_parameters)
    }

    /// [`Repository::open`] of a git directory already found and canonicalized.
    fn open_git_dir(git_dir: PathBuf, config_parameters: Option<&str>) -> Result<Self, OpenError> {
        let config = config::load(&git_dir, config_parameters)?;
        let object_format = config.string("extensions.objectFormat");
        if object_format.is_some_and(|format| !format.eq_ignore_ascii_case(b"sha1")) {
            return Err(OpenError::UnsupportedObjectFormat { path: git_dir });
        }
        let mut objects =
            gix_odb::at(git_dir.join("objects"), gix_hash::Kind::Sha1).map_err(|source| {
                OpenError::Objects {
                    path: git_dir.clone(),
                    source,
                }
            })?;
        // Small reads (refs, peeling, negotiation) reuse recent delta bases; walks over many
        // trees go through packgate_pack::reader::CachingReader instead.
        objects.set_pack_cache(|| Box::<gix_pack::cache::lru::StaticLinkedList<64>>::default());
        let refs = gix_ref::file::Store::at(git_dir.clone(), gix_hash::Kind::Sha1);
        Ok(Repository {
            git_dir,
            objects: Objects::new(objects),
            refs,
            config: std::sync::Arc::new(config),
            namespace: None,
            commit_graph: std::sync::OnceLock::new(),
        })
    }

    /// The repository's commit-graph, for walks to read commits from, unless
    /// `core.commitGraph` is false (git's default: true). Opened on first use.
    pub fn commit_graph(&self) -> Option<packgate_object::CommitGraphFile> {
        self.commit_graph
            .get_or_init(|| {
                let enabled = self
                    .config
                    .boolean("core.commitGraph")
                    .ok()
                    .flatten()
                    .unwrap_or(true);
                enabled
                    .then(|| {
                        packgate_object::CommitGraphFile::open(
                            self.objects.handle().store_ref().path(),
                        )
                    })
                    .flatten()
            })
            .clone()
    }

    /// Serve the refs of `namespace` only (git's `GIT_NAMESPACE`): [`Repository::refs()`],
    /// [`Repository::head()`] and [`Repository::find_ref()`] then see the refs below its
    /// prefix, named without it, and `HEAD` is the namespace's own.
    pub fn with_namespace(mut self, namespace: Option<Namespace>) -> Self {
        self.namespace = namespace;
        self
    }

    /// The namespace served, if any.
    pub fn namespace(&self) -> Option<&Namespace> {
        self.namespace.as_ref()
    }

    /// A handle on the ref store to read or update refs with (a push's transactions).
    pub(crate) fn ref_store(&self) -> gix_ref::file::Store {
        self.refs.clone()
    }

    /// The git directory: absolute, symlinks resolved.
    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// The object database.
    pub fn objects(&self) -> &gix_odb::Handle {
        self.objects.handle()
    }

    /// The configuration: repository, then overrides.
    pub fn config(&self) -> &gix_config::File {
        &self.config
    }

    /// Where `HEAD` points: the namespace's `HEAD` (named `HEAD`, its target without the
    /// namespace's prefix) when a namespace is served.
    pub fn head(&self) -> Result<Head, RefsError> {
        let Some(namespace) = &self.namespace else {
            return self.repository_head();
        };
        let Ok(name) = gix_ref::FullName::try_from(namespace.full(b"HEAD")) else {
            return Ok(Head::Missing);
        };
        let strip = |target: BString| match namespace.strip(&target) {
            Some(stripped) => stripped.into(),
            None => target,
        };
        Ok(match self.head_at(name.as_ref())? {
            Head::Born(mut record) => {
                record.name = "HEAD".into();
                record.symref_target = record.symref_target.map(strip);
                Head::Born(record)
            }
            Head::Unborn { target } => Head::Unborn {
                target: strip(target),
            },
            Head::Missing => Head::Missing,
        })
    }

    /// Where the repository's own `HEAD` points, whatever the namespace.
    pub(crate) fn repository_head(&self) -> Result<Head, RefsError> {
        let Ok(name) = gix_ref::FullName::try_from("HEAD") else {
            return Ok(Head::Missing);
        };
        self.head_at(name.as_ref())
    }

    fn head_at(&self, name: &gix_ref::FullNameRef) -> Result<Head, RefsError> {
        let Some(head) = self.refs.try_find(name).map_err(RefsError::Read)? else {
            return Ok(Head::Missing);
        };
        Ok(match self.resolve(head)? {
            Some(record) => Head::Born(record),
            None => match self.refs.try_find_loose(name).map_err(RefsError::Read)? {
                Some(gix_ref::file::loose::Reference {
                    target: gix_ref::Target::Symbolic(target),
                    ..
                }) => Head::Unborn {
                    target: target.as_bstr().to_owned(),
                },
                _ => Head::Missing,
            },
        })
    }

    /// The reference named exactly `name` (a full name below `refs/`, or `HEAD`), with
    /// symbolic references resolved; `None` when there is none, it dangles, or `name` is
    /// no valid full ref name. Unlike git's DWIM lookups, `main` does not find
    /// `refs/heads/main`.
    pub fn find_ref(&self, name: &[u8]) -> Result<Option<RefRecord>, RefsError> {
        if name != b"HEAD" && !name.starts_with(b"refs/") {
            return Ok(None);
        }
        let full = crate::refname::full_name(self.namespace.as_ref(), name);
        let Ok(full_name) = gix_ref::FullName::try_from(BString::from(full.as_ref())) else {
            return Ok(None);
        };
        let record = match self
            .refs
            .try_find(full_name.as_ref())
            .map_err(RefsError::Read)?
        {
            Some(reference) => self.resolve(reference)?,
            None => None,
        };
        Ok(record.map(|mut record| {
            // Named as asked: `HEAD` stays `HEAD` in a namespace.
            record.name = name.into();
            if let (Some(namespace), Some(target)) = (&self.namespace, &record.symref_target) {
                if let Some(stripped) = namespace.strip(target) {
                    record.symref_target = Some(stripped.into());
                }
            }
            record
        }))
    }

    /// Every reference below `refs/` of the namespace served (all of them without one) whose
    /// name, without the namespace's prefix, starts with one of `prefixes` (all of them when
    /// `prefixes` is `None`), named without that prefix; otherwise as
    /// [`Repository::all_refs()`].
    pub fn refs(&self, prefixes: Option<&[RefPrefix]>) -> Result<Vec<RefRecord>, RefsError> {
        let mut out = Vec::new();
        self.visit_refs(prefixes, |view| {
            out.push(view.to_record());
            Ok::<_, RefsError>(())
        })?;
        Ok(out)
    }

    /// [`Repository::refs()`] without the list: `visit` sees each reference in turn, in the
    /// same order, borrowed (nothing is allocated per packed ref). What `visit` returns
    /// stops the listing at its first error.
    pub fn visit_refs<E: From<RefsError>>(
        &self,
        prefixes: Option<&[RefPrefix]>,
        mut visit: impl FnMut(RefView<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(namespace) = &self.namespace else {
            return self.visit_all_refs(prefixes, visit);
        };
        let everything = [RefPrefix::new(namespace.full(b"refs/"))];
        let mapped: Vec<RefPrefix>;
        let prefixes: &[RefPrefix] = match prefixes {
            Some(prefixes)
                if !prefixes
                    .iter()
                    .any(|prefix| prefix.scope() == PrefixScope::AllRefs) =>
            {
                // The stripped names all start with `refs/`: the other prefixes match none.
                mapped = prefixes
                    .iter()
                    .filter(|prefix| prefix.scope() == PrefixScope::Loose)
                    .map(|prefix| RefPrefix::new(namespace.full(prefix.as_bstr())))
                    .collect();
                if mapped.is_empty() {
                    return Ok(());
                }
                &mapped
            }
            _ => &everything,
        };
        self.visit_all_refs(Some(prefixes), |view| {
            let Some(name) = namespace.strip(view.name) else {
                return Ok(());
            };
            if !name.starts_with(b"refs/") {
                return Ok(());
            }
            let symref_target = view
                .symref_target
                .map(|target| namespace.strip(target).unwrap_or(target));
            visit(RefView {
                name: name.as_bstr(),
                symref_target: symref_target.map(|target| target.as_bstr()),
                ..view
            })
        })
    }

    /// Every reference below `refs/` whose name starts with one of `prefixes` (all of them
    /// when `prefixes` is `None`), sorted by name, with symbolic references resolved.
    /// Dangling symbolic references are left out. Only prefixes that can begin a ref name
    /// ([`PrefixScope::Loose`]) lead to directories read; the others match nothing below
    /// `refs/` unless one is a prefix of `refs/` itself, which matches everything.
    ///
    /// The namespace served is not looked at: names are the repository's own.
    pub fn all_refs(&self, prefixes: Option<&[RefPrefix]>) -> Result<Vec<RefRecord>, RefsError> {
        let mut out = Vec::new();
        self.visit_all_refs(prefixes, |view| {
            out.push(view.to_record());
            Ok::<_, RefsError>(())
        })?;
        Ok(out)
    }

    /// [`Repository::all_refs()`] without the list, as [`Repository::visit_refs()`].
    pub fn visit_all_refs<E: From<RefsError>>(
        &self,
        prefixes: Option<&[RefPrefix]>,
        mut visit: impl FnMut(RefView<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let prefixes = prefixes.filter(|prefixes| {
            !prefixes
                .iter()
                .any(|prefix| prefix.scope() == PrefixScope::AllRefs)
        });
        let everything = [RefPrefix::new("refs/")];
        // Sorted, and none a prefix of another: the listings of the prefixes one after the
        // other are sorted by name, without repeats.
        let prefixes: Vec<&RefPrefix> = match prefixes {
            None => everything.iter().collect(),
            Some(prefixes) => minimal_prefixes(prefixes),
        };
        let packed = self.refs.cached_packed_buffer().map_err(RefsError::Read)?;
        let traits = match &packed {
            Some(_) => PackedTraits::of(&self.git_dir.join("packed-refs")),
            None => PackedTraits::default(),
        };
        let visit_loose = |reference: gix_ref::Reference,
                           visit: &mut dyn FnMut(RefView<'_>) -> Result<(), E>|
         -> Result<(), E> {
            match self.resolve(reference)? {
                Some(record) => visit(record.view()),
                None => Ok(()),
            }
        };
        for prefix in prefixes {
            // Loose refs win over packed ones of the same name; both lists are sorted.
            let mut loose: Vec<(BString, gix_ref::Reference)> =
                loose_ref_names(&self.git_dir, prefix)
                    .map_err(RefsError::List)?
                    .into_iter()
                    .filter_map(|name| {
                        let full_name = gix_ref::FullName::try_from(name.clone()).ok()?;
                        // Gone since the directory was read, or not a ref: skip it.
                        let reference = self.refs.try_find_loose(full_name.as_ref()).ok()??;
                        Some((name, reference.into()))
                    })
                    .collect();
            loose.sort_by(|a, b| a.0.cmp(&b.0));
            let mut loose = loose.into_iter().peekable();
            if let Some(packed) = &packed {
                let buffer: &gix_ref::packed::Buffer = packed;
                let records = crate::packed_refs::prefixed(buffer.as_ref(), prefix.as_bstr());
                for record in records {
                    let record = record.map_err(|err| RefsError::PackedRefs { line: err.line })?;
                    let name = record.name;
                    // git skips (and reports as broken) a packed ref with a bad name.
                    if !crate::refname::is_valid_full_name(name) {
                        tracing::debug!(name = %name, "packed ref with a bad name left out");
                        continue;
                    }
                    let mut shadowed = false;
                    while let Some((loose_name, _)) = loose.peek() {
                        match loose_name.as_bstr().cmp(name) {
                            std::cmp::Ordering::Greater => break,
                            order => {
                                shadowed = order == std::cmp::Ordering::Equal;
                                if let Some((_, reference)) = loose.next() {
                                    visit_loose(reference, &mut visit)?;
                                }
                            }
                        }
                    }
                    if shadowed {
                        continue;
                    }
                    let peeled = match record.peeled {
                        Some(peeled) => Peeled::Tag(peeled),
                        None if traits.fully_peeled
                            || (traits.peeled && name.starts_with(b"refs/tags/")) =>
                        {
                            Peeled::NotATag
                        }
                        None => Peeled::Unknown,
                    };
                    visit(RefView {
                        name,
                        id: record.target,
                        symref_target: None,
                        peeled,
                    })?;
                }
            }
            for (_, reference) in loose {
                visit_loose(reference, &mut visit)?;
            }
        }
        Ok(())
    }

    /// The object `record` peels to if it points at an annotated tag; `None` if it does not.
    /// Reads the object only when `packed-refs` did not say.
    pub fn peeled(&self, record: RefView<'_>) -> Result<Option<ObjectId>, RefsError> {
        match record.peeled {
            Peeled::Unknown => self.peel_tag(&record.id),
            Peeled::NotATag => Ok(None),
            Peeled::Tag(id) => Ok(Some(id)),
        }
    }

    /// Follow `reference` through symbolic references to an object.
    fn resolve(&self, reference: gix_ref::Reference) -> Result<Option<RefRecord>, RefsError> {
        let name = reference.name.as_bstr().to_owned();
        let mut target = reference.target;
        let mut symref_target = None;
        // git gives up after five levels of symbolic references.
        for _ in 0..5 {
            match target {
                gix_ref::Target::Object(id) => {
                    return Ok(Some(RefRecord {
                        name,
                        id,
                        symref_target,
                        peeled: Peeled::Unknown,
                    }))
                }
                gix_ref::Target::Symbolic(next) => {
                    if symref_target.is_none() {
                        symref_target = Some(next.as_bstr().to_owned());
                    }
                    match self.refs.try_find(next.as_ref()).map_err(RefsError::Read)? {
                        Some(found) => target = found.target,
                        None => return Ok(None),
                    }
                }
            }
        }
        Ok(None)
    }

    /// The object a `sparse:oid=` filter names: a full object id, a ref name (git's
    /// rev-parse order), or `<rev>:<path>`; `None` if it names nothing.
    pub fn sparse_object(&self, expression: &[u8]) -> Option<ObjectId> {
        match expression.iter().position(|&b| b == b':') {
            None => ObjectId::from_hex(expression)
                .ok()
                .or_else(|| self.resolve_rev(expression)),
            Some(colon) => {
                let (rev, path) = (&expression[..colon], &expression[colon + 1..]);
                let start = match ObjectId::from_hex(rev) {
                    Ok(id) => id,
                    Err(_) => self.resolve_rev(rev)?,
                };
                self.lookup_path(start, path)
            }
        }
    }

    /// The content of the blob `expression` names, as `sparse:oid=<expression>` names it: a
    /// full object id, or `<rev>:<path>` with `<rev>` an object id or a ref name as git's
    /// rev-parse finds it (`<rev>`, `refs/<rev>`, `refs/tags/<rev>`, `refs/heads/<rev>`,
    /// `refs/remotes/<rev>`, `refs/remotes/<rev>/HEAD`), peeled to a tree. `None` when it
    /// names no blob (or the name is in a form packgate does not resolve: abbreviated ids,
    /// `@{...}`, `^`/`~` suffixes, the index).
    pub fn sparse_blob(&self, expression: &[u8]) -> Option<Vec<u8>> {
        let id = self.sparse_object(expression)?;
        let mut buf = Vec::new();
        let data = self.objects.handle().try_find(&id, &mut buf).ok()??;
        (data.kind == gix_object::Kind::Blob).then(|| data.data.to_vec())
    }

    /// A ref name to the object it points at, with git's rev-parse rules for which ref.
    fn resolve_rev(&self, rev: &[u8]) -> Option<ObjectId> {
        let rev = rev.to_str().ok()?;
        let candidates = [
            rev.to_owned(),
            format!("refs/{rev}"),
            format!("refs/tags/{rev}"),
            format!("refs/heads/{rev}"),
            format!("refs/remotes/{rev}"),
            format!("refs/remotes/{rev}/HEAD"),
        ];
        for name in candidates {
            let Ok(full) = gix_ref::FullName::try_from(name.as_str()) else {
                continue;
            };
            if name != "HEAD" && !name.starts_with("refs/") {
                continue;
            }
            if let Ok(Some(reference)) = self.refs.try_find(full.as_ref()) {
                return self
                    .resolve(reference)
                    .ok()
                    .flatten()
                    .map(|record| record.id);
            }
        }
        None
    }

    /// Follow `path` (`/`-separated) from the tree of `start` (peeled through tags and
    /// commits); an empty path is the tree itself.
    fn lookup_path(&self, start: ObjectId, path: &[u8]) -> Option<ObjectId> {
        let mut id = self.peel_tag(&start).ok()?.unwrap_or(start);
        let mut buf = Vec::new();
        let data = self.objects.handle().try_find(&id, &mut buf).ok()??;
        match data.kind {
            gix_object::Kind::Commit => {
                id = gix_object::CommitRefIter::from_bytes(data.data, gix_hash::Kind::Sha1)
                    .tree_id()
                    .ok()?;
            }
            gix_object::Kind::Tree => {}
            _ => return None,
        }
        for name in path.split(|&b| b == b'/').filter(|name| !name.is_empty()) {
            let data = self.objects.handle().try_find(&id, &mut buf).ok()??;
            if data.kind != gix_object::Kind::Tree {
                return None;
            }
            let entry = gix_object::TreeRefIter::from_bytes(data.data, gix_hash::Kind::Sha1)
                .filter_map(Result::ok)
                .find(|entry| entry.filename == name)?;
            id = entry.oid.to_owned();
        }
        Some(id)
    }

    /// Peel `id` through annotated tags. Returns `None` when `id` is not a tag.
    pub fn peel_tag(&self, id: &ObjectId) -> Result<Option<ObjectId>, RefsError> {
        peel_tag_in(self.objects.handle(), id, &mut Vec::new())
    }

    /// What `record` peels to, as [`Repository::peeled`] says, reading tags from `db` (a
    /// request's own reader) when `packed-refs` does not say.
    pub fn peeled_in(
        db: &(impl gix_object::Find + gix_object::FindHeader),
        record: RefView<'_>,
        buf: &mut Vec<u8>,
    ) -> Result<Option<ObjectId>, RefsError> {
        match record.peeled {
            Peeled::Unknown => peel_tag_in(db, &record.id, buf),
            Peeled::NotATag => Ok(None),
            Peeled::Tag(id) => Ok(Some(id)),
        }
    }

    /// Whether the object exists.
    pub fn has_object(&self, id: &ObjectId) -> bool {
        use gix_object::Exists;
        self.objects.handle().exists(id)
    }

    /// The objects `name` can mean as git's `expand_ref()` reads a short ref name: the first
    /// of `name`, `refs/name`, `refs/tags/name`, `refs/heads/name`, `refs/remotes/name` and
    /// `refs/remotes/name/HEAD` that exists, and how many of them exist (more than one is
    /// ambiguous). Of the names outside `refs/` only `HEAD` is looked at.
    pub fn expand_ref(&self, name: &[u8]) -> Result<(Option<ObjectId>, usize), RefsError> {
        let mut candidates: Vec<BString> = Vec::with_capacity(6);
        for prefix in ["", "refs/", "refs/tags/", "refs/heads/", "refs/remotes/"] {
            let mut full = BString::from(prefix);
            full.extend_from_slice(name);
            candidates.push(full);
        }
        let mut remote_head = BString::from("refs/remotes/");
        remote_head.extend_from_slice(name);
        remote_head.extend_from_slice(b"/HEAD");
        candidates.push(remote_head);
        let mut found: std::collections::HashMap<BString, ObjectId> = self
            .refs(None)?
            .into_iter()
            .map(|record| (record.name, record.id))
            .collect();
        if let Head::Born(head) = self.head()? {
            found.insert(head.name, head.id);
        }
        let mut first = None;
        let mut count = 0;
        for candidate in &candidates {
            if let Some(id) = found.get(candidate) {
                first.get_or_insert(*id);
                count += 1;
            }
        }
        Ok((first, count))
    }

    /// The commits listed in `$GIT_DIR/shallow`: this repository's own shallow boundary,
    /// whose parents it does not have. Empty when the file does not exist (a complete
    /// repository). Read on every call, as a push may change it.
    pub fn shallow_commits(&self) -> Result<Vec<ObjectId>, ShallowFileError> {
        let path = self.git_dir.join("shallow");
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(ShallowFileError::Read { path, source }),
        };
        parse_shallow_file(&data).ok_or(ShallowFileError::Malformed { path })
    }
}

/// The error returned when `$GIT_DIR/shallow` cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ShallowFileError {
    /// Reading the file failed.
    #[error("could not read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A line is not one object id.
    #[error("{} holds a line that is not an object id", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

/// The ids of a shallow file, one per line; `None` if a line is anything else.
pub(crate) fn parse_shallow_file(data: &[u8]) -> Option<Vec<ObjectId>> {
    data.lines()
        .filter(|line| !line.is_empty())
        .map(|line| ObjectId::from_hex(line).ok())
        .collect()
}

/// Reduce `prefixes` to the ones that can begin a ref name below `refs/` and are not covered
/// by a shorter one, so each ref is listed once.
/// The traits a `packed-refs` file's header line declares.
#[derive(Debug, Clone, Copy, Default)]
struct PackedTraits {
    /// `peeled`: every annotated tag below `refs/tags/` has its `^` line.
    peeled: bool,
    /// `fully-peeled`: every ref that points at an annotated tag has its `^` line.
    fully_peeled: bool,
}

impl PackedTraits {
    /// The header of the file at `path`. gix keeps the parsed file but not its header, so the
    /// first line is read here; should the file have been replaced in between by a writer
    /// declaring more (git has declared both for over a decade), a tag could lose its peeled
    /// value in the listing, never gain a wrong one.
    fn of(path: &Path) -> PackedTraits {
        use std::io::Read as _;
        let mut head = [0u8; 128];
        let Ok(read) = std::fs::File::open(path).and_then(|mut file| file.read(&mut head)) else {
            return PackedTraits::default();
        };
        let head = &head[..read];
        let Some(line) = head
            .strip_prefix(b"# pack-refs with:")
            .and_then(|rest| rest.split(|&b| b == b'\n').next())
        else {
            return PackedTraits::default();
        };
        let has = |word: &[u8]| line.split(|&b| b == b' ').any(|w| w == word);
        PackedTraits {
            peeled: has(b"peeled"),
            fully_peeled: has(b"fully-peeled"),
        }
    }
}

pub(crate) fn minimal_prefixes(prefixes: &[RefPrefix]) -> Vec<&RefPrefix> {
    let mut sorted: Vec<&RefPrefix> = prefixes
        .iter()
        .filter(|p| p.scope() == PrefixScope::Loose)
        .collect();
    sorted.sort_by(|a, b| a.as_bstr().cmp(b.as_bstr()));
    let mut out: Vec<&RefPrefix> = Vec::new();
    for prefix in sorted {
        if out
            .last()
            .is_some_and(|last| last.matches(prefix.as_bstr()))
        {
            continue;
        }
        out.push(prefix);
    }
    out
}

/// The names of the loose refs in `git_dir` that start with `prefix` (`refs/…`); nothing,
/// and no directory read, for a prefix that cannot begin a ref name below `refs/`.
///
/// Only the directory that holds the prefix's last component is listed, and only its
/// entries that match are looked into: `refs/heads/team/a` reads `refs/heads/team/` and
/// descends into nothing but `a*`. (gix-ref's prefixed iteration walks and sorts the whole
/// parent directory, which dominated the cost of a prefixed `ls-refs` on repositories with
/// thousands of loose refs.) Large directories are listed through [`dir_listing`]'s cache.
fn loose_ref_names(git_dir: &Path, prefix: &RefPrefix) -> std::io::Result<Vec<BString>> {
    use std::os::unix::ffi::OsStrExt;
    let prefix = match prefix.scope() {
        PrefixScope::Loose => prefix.as_bstr(),
        // Every ref lives below `refs/`.
        PrefixScope::AllRefs => b"refs/".as_bstr(),
        PrefixScope::NoRefs => return Ok(Vec::new()),
    };
    let (directory, partial) = match prefix.rfind_byte(b'/') {
        Some(slash) => (&prefix[..slash], &prefix[slash + 1..]),
        None => return Ok(Vec::new()),
    };
    let mut names = Vec::new();
    // Directories to list, as ref-name prefixes, with the start their entries must have.
    let mut pending: Vec<(BString, &[u8])> = vec![(directory.into(), partial)];
    while let Some((directory, partial)) = pending.pop() {
        let path = git_dir.join(std::ffi::OsStr::from_bytes(&directory));
        let Some(listing) = dir_listing(&path)? else {
            continue;
        };
        for (file_name, is_dir) in listing.iter() {
            if !file_name.starts_with(partial) {
                continue;
            }
            let mut name = directory.clone();
            name.push(b'/');
            name.extend_from_slice(file_name);
            if *is_dir {
                pending.push((name, b""));
            } else {
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// A directory's entries: name, and whether it is a directory (otherwise a regular file;
/// anything else is left out).
pub(crate) type Listing = std::sync::Arc<Vec<(BString, bool)>>;

/// Listings of large loose-ref directories, shared by every repository this process opens:
/// a prefixed `ls-refs` on a repository with thousands of loose refs in one directory would
/// otherwise read that directory on every request.
///
/// An entry is used only while the directory's modification time is what it was when the
/// entry was made — adding, removing or renaming a ref file changes it — and an entry is
/// made only if that time lies well in the past, so two changes within one tick of the
/// file system's clock cannot hide each other (git's "racy" rule for its index).
static LISTINGS: std::sync::OnceLock<
    std::sync::Mutex<std::collections::HashMap<PathBuf, (std::time::SystemTime, Listing)>>,
> = std::sync::OnceLock::new();

/// Directories with fewer entries are read every time.
const CACHED_LISTING_MIN_ENTRIES: usize = 256;
/// The most directories remembered; the cache starts over when it is full.
const CACHED_LISTINGS_MAX: usize = 4096;
/// How far in the past a modification time must lie for its listing to be remembered.
pub(crate) const RACY_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);

/// The entries of the directory at `path`, `None` if there is none.
pub(crate) fn dir_listing(path: &Path) -> std::io::Result<Option<Listing>> {
    use std::os::unix::ffi::OsStrExt;
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => metadata,
        Ok(_) => return Ok(None),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let modified = metadata.modified()?;
    let cache = LISTINGS.get_or_init(Default::default);
    if let Ok(cache) = cache.lock() {
        if let Some((when, listing)) = cache.get(path) {
            if *when == modified {
                return Ok(Some(listing.clone()));
            }
        }
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let file_type = entry.file_type()?;
        if file_type.is_dir() || file_type.is_file() {
            entries.push((
                BString::from(entry.file_name().as_bytes()),
                file_type.is_dir(),
            ));
        }
    }
    let listing = Listing::new(entries);
    let settled = std::time::SystemTime::now()
        .duration_since(modified)
        .is_ok_and(|age| age >= RACY_WINDOW);
    if settled && listing.len() >= CACHED_LISTING_MIN_ENTRIES {
        if let Ok(mut cache) = cache.lock() {
            if cache.len() >= CACHED_LISTINGS_MAX {
                cache.clear();
            }
            cache.insert(path.to_owned(), (modified, listing.clone()));
        }
    }
    Ok(Some(listing))
}

/// git's repository discovery for a server: no walking up, a fixed list of candidates.
fn find_git_dir(path: &Path, lookup: PathLookup) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match lookup {
        PathLookup::Strict => vec![path.to_owned()],
        PathLookup::Lenient => {
            let with_suffix = |suffix: &str| {
                let mut s = path.as_os_str().to_owned();
                s.push(suffix);
                PathBuf::from(s)
            };
            vec![
                path.join(".git"),
                path.to_owned(),
                with_suffix(".git").join(".git"),
                with_suffix(".git"),
            ]
        }
    };
    candidates.into_iter().find_map(|candidate| {
        let candidate = follow_gitfile(&candidate).unwrap_or(candidate);
        is_git_dir(&candidate).then_some(candidate)
    })
}

/// A `.git` file (`gitdir: <path>`) as left by worktrees and submodules.
fn follow_gitfile(path: &Path) -> Option<PathBuf> {
    if !path.is_file() {
        return None;
    }
    let content = std::fs::read(path).ok()?;
    let target = content.strip_prefix(b"gitdir: ")?.trim_end();
    let target = gix_path::from_byte_slice(target).ok()?;
    Some(match path.parent() {
        Some(parent) if target.is_relative() => parent.join(target),
        _ => target.to_owned(),
    })
}

/// git's test: `objects/` and `refs/` directories and a `HEAD` file.
fn is_git_dir(path: &Path) -> bool {
    path.join("objects").is_dir() && path.join("refs").is_dir() && path.join("HEAD").is_file()
}

/// Peel `id` through annotated tags read from `db`, with `buf` for their data. Returns `None`
/// when `id` is not a tag.
fn peel_tag_in(
    db: &(impl gix_object::Find + gix_object::FindHeader),
    id: &ObjectId,
    buf: &mut Vec<u8>,
) -> Result<Option<ObjectId>, RefsError> {
    let mut current = *id;
    let mut peeled = None;
    // Bound the chain: a tag of a tag of … cannot be longer than this in practice.
    for _ in 0..64 {
        // Most refs point at commits: their type is in the pack entry's header, and
        // nothing needs inflating to tell they are not tags.
        let header = gix_object::FindHeader::try_header(db, &current).map_err(|source| {
            RefsError::Object {
                id: current,
                source,
            }
        })?;
        match header {
            Some(header) if header.kind == gix_object::Kind::Tag => {}
            _ => return Ok(peeled),
        }
        let data = db
            .try_find(&current, buf)
            .map_err(|source| RefsError::Object {
                id: current,
                source,
            })?;
        let Some(data) = data else { return Ok(peeled) };
        if data.kind != gix_object::Kind::Tag {
            return Ok(peeled);
        }
        let target = gix_object::TagRefIter::from_bytes(data.data, gix_hash::Kind::Sha1)
            .target_id()
            .map_err(|source| RefsError::Object {
                id: current,
                source,
            })?;
        current = target;
        peeled = Some(target);
    }
    Ok(peeled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let output = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .unwrap_or_else(|err| panic!("git {args:?}: {err}"));
        assert!(output.status.success(), "git {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    #[test]
    fn shallow_file_lists_ids_and_nothing_else() {
        let a = "0123456789012345678901234567890123456789";
        let b = "89abcdef0123456789abcdef0123456789abcdef";
        let parsed = parse_shallow_file(format!("{a}\n{b}\n").as_bytes());
        assert_eq!(
            parsed.map(|ids| ids.iter().map(ToString::to_string).collect::<Vec<_>>()),
            Some(vec![a.to_owned(), b.to_owned()])
        );
        assert_eq!(parse_shallow_file(b""), Some(Vec::new()));
        assert_eq!(
            parse_shallow_file(format!("{a}\nnot an id\n").as_bytes()),
            None
        );
    }

    /// Prefixed listing (own loose-ref walk + packed-refs) agrees with the full listing
    /// filtered by prefix, with loose refs overriding packed ones.
    #[test]
    fn prefixed_refs_match_the_filtered_full_listing() {
        let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
        let path = dir.path();
        git(path, &["init", "-q"]);
        git(path, &["commit", "-q", "--allow-empty", "-m", "one"]);
        let one = git(path, &["rev-parse", "HEAD"]);
        for name in [
            "refs/heads/team/a",
            "refs/heads/team/ab",
            "refs/heads/team/b/c",
            "refs/heads/teamx",
            "refs/tags/v1",
        ] {
            git(path, &["update-ref", name, &one]);
        }
        git(path, &["pack-refs", "--all"]);
        git(path, &["commit", "-q", "--allow-empty", "-m", "two"]);
        let two = git(path, &["rev-parse", "HEAD"]);
        // Loose refs: one overrides a packed ref, one is new, one is nested.
        for name in [
            "refs/heads/team/a",
            "refs/heads/team/new",
            "refs/heads/team/b/d/e",
        ] {
            git(path, &["update-ref", name, &two]);
        }
        let repo =
            Repository::open(path, PathLookup::Lenient, None).unwrap_or_else(|err| panic!("{err}"));
        let all = repo.refs(None).unwrap_or_else(|err| panic!("{err}"));
        assert!(all.iter().any(|r| r.name == "refs/heads/team/a"
            && ObjectId::from_hex(two.as_bytes()).is_ok_and(|two| r.id == two)));
        for prefix in [
            "refs/heads/team/a",
            "refs/heads/team",
            "refs/heads/team/",
            "refs/heads/team/b/",
            "refs/heads/team/b/d",
            "refs/heads/",
            "refs/",
            "refs/tags/v",
            "refs/nothing/",
            "refs/heads/team/a/",
        ] {
            let expected: Vec<_> = all
                .iter()
                .filter(|r| r.name.starts_with(prefix.as_bytes()))
                .cloned()
                .collect();
            let actual = repo
                .refs(Some(&[RefPrefix::new(prefix)]))
                .unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(actual, expected, "prefix {prefix}");
        }
    }

    /// The listing cache of a large ref directory never hides a change: refs added or
    /// deleted after the directory was listed (and cached) show up at once.
    #[test]
    fn cached_directory_listings_follow_changes() {
        let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
        let path = dir.path();
        git(path, &["init", "-q", "--bare"]);
        let blob = {
            let output = std::process::Command::new("git")
                .arg("-C")
                .arg(path)
                .args(["hash-object", "-w", "--stdin"])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap_or_else(|err| panic!("{err}"));
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        };
        let many = path.join("refs/tags/many");
        std::fs::create_dir_all(&many).unwrap_or_else(|err| panic!("{err}"));
        for n in 0..300 {
            std::fs::write(many.join(format!("{n:04}")), format!("{blob}\n"))
                .unwrap_or_else(|err| panic!("{err}"));
        }
        // Settled: last modified an hour ago, so its listing is cached.
        let touch = std::process::Command::new("touch")
            .args(["-d", "1 hour ago"])
            .arg(&many)
            .status()
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(touch.success());
        let repo =
            Repository::open(path, PathLookup::Strict, None).unwrap_or_else(|err| panic!("{err}"));
        let names = |prefix: &str| -> Vec<String> {
            repo.refs(Some(&[RefPrefix::new(prefix)]))
                .unwrap_or_else(|err| panic!("{err}"))
                .into_iter()
                .map(|r| r.name.to_string())
                .collect()
        };
        assert_eq!(names("refs/tags/many/029").len(), 10);
        let cached = LISTINGS
            .get()
            .and_then(|cache| cache.lock().ok())
            .is_some_and(|cache| cache.contains_key(&many));
        assert!(cached, "the settled directory's listing is not cached");
        git(path, &["update-ref", "refs/tags/many/0299x", &blob]);
        git(path, &["update-ref", "-d", "refs/tags/many/0291"]);
        let after = names("refs/tags/many/029");
        assert_eq!(after.len(), 10, "{after:?}");
        assert!(after.contains(&"refs/tags/many/0299x".to_owned()));
        assert!(!after.contains(&"refs/tags/many/0291".to_owned()));
    }

    #[test]
    fn shared_repositories_are_shared_until_their_configuration_changes() {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("r.git");
        git(
            dir.path(),
            &["init", "-q", "--bare", bare.to_str().unwrap()],
        );
        git(&bare, &["config", "packgate.test", "one"]);
        let shared = SharedRepositories::default();
        let later = || std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        let value =
            |repo: &Repository| repo.config().string("packgate.test").map(|v| v.to_string());
        let first = shared.open_at(&bare, PathLookup::Strict, later()).unwrap();
        let second = shared.open_at(&bare, PathLookup::Strict, later()).unwrap();
        assert!(std::sync::Arc::ptr_eq(&first.config, &second.config));
        assert_eq!(value(&second).as_deref(), Some("one"));
        // A clone makes its own object handle, from the shared store.
        assert!(second.objects.own.get().is_none());
        assert!(second.objects().store_ref().path().ends_with("objects"));
        git(&bare, &["config", "packgate.test", "two"]);
        let third = shared.open_at(&bare, PathLookup::Strict, later()).unwrap();
        assert!(!std::sync::Arc::ptr_eq(&first.config, &third.config));
        assert_eq!(value(&third).as_deref(), Some("two"));
        // Within the racy window of a change nothing is kept.
        git(&bare, &["config", "packgate.test", "three"]);
        let now = std::time::SystemTime::now();
        let fourth = shared.open_at(&bare, PathLookup::Strict, now).unwrap();
        let fifth = shared.open_at(&bare, PathLookup::Strict, now).unwrap();
        assert_eq!(value(&fifth).as_deref(), Some("three"));
        assert!(!std::sync::Arc::ptr_eq(&fourth.config, &fifth.config));
    }
}
