//! The repository model: a git directory on disk with its object database, refs and
//! configuration, opened the way git's `enter_repo()` finds it.

use std::path::{Path, PathBuf};

use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;
use gix_object::Find;

use crate::config::{self, ConfigError};

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

/// An opened repository.
///
/// A clone shares the object store and ref store on disk but has its own caches: a
/// repository can't be shared between threads, a clone can be sent to another one.
#[derive(Clone)]
pub struct Repository {
    git_dir: PathBuf,
    objects: gix_odb::Handle,
    refs: gix_ref::file::Store,
    config: gix_config::File,
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
    pub fn open(
        path: &Path,
        lookup: PathLookup,
        config_parameters: Option<&str>,
    ) -> Result<Self, OpenError> {
        let git_dir = find_git_dir(path, lookup).ok_or_else(|| OpenError::NotARepository {
            path: path.to_owned(),
        })?;
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
            objects,
            refs,
            config,
        })
    }

    /// The git directory.
    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// The object database.
    pub fn objects(&self) -> &gix_odb::Handle {
        &self.objects
    }

    /// The configuration: repository, then overrides.
    pub fn config(&self) -> &gix_config::File {
        &self.config
    }

    /// Where `HEAD` points.
    pub fn head(&self) -> Result<Head, RefsError> {
        let Some(head) = self.refs.try_find("HEAD").map_err(RefsError::Read)? else {
            return Ok(Head::Missing);
        };
        Ok(match self.resolve(head)? {
            Some(record) => Head::Born(record),
            None => match self.refs.try_find_loose("HEAD").map_err(RefsError::Read)? {
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

    /// Every reference below `refs/` whose name starts with one of `prefixes` (all of them
    /// when `prefixes` is `None`), sorted by name, with symbolic references resolved.
    /// Dangling symbolic references are left out.
    pub fn refs(&self, prefixes: Option<&[BString]>) -> Result<Vec<RefRecord>, RefsError> {
        let platform = self.refs.iter().map_err(RefsError::Read)?;
        let mut out = Vec::new();
        match prefixes {
            None => {
                for reference in platform.all().map_err(RefsError::List)? {
                    self.push_resolved(reference.map_err(RefsError::Read)?, &mut out)?;
                }
            }
            Some(prefixes) => {
                for prefix in minimal_prefixes(prefixes) {
                    let Ok(relative) = <&gix_path::RelativePath>::try_from(prefix.as_bstr()) else {
                        continue;
                    };
                    for reference in platform.prefixed(relative).map_err(RefsError::List)? {
                        let reference = reference.map_err(RefsError::Read)?;
                        if reference.name.as_bstr().starts_with(prefix.as_slice()) {
                            self.push_resolved(reference, &mut out)?;
                        }
                    }
                }
                out.sort_by(|a, b| a.name.cmp(&b.name));
                out.dedup_by(|a, b| a.name == b.name);
            }
        }
        Ok(out)
    }

    fn push_resolved(
        &self,
        reference: gix_ref::Reference,
        out: &mut Vec<RefRecord>,
    ) -> Result<(), RefsError> {
        if let Some(record) = self.resolve(reference)? {
            out.push(record);
        }
        Ok(())
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

    /// Peel `id` through annotated tags. Returns `None` when `id` is not a tag.
    pub fn peel_tag(&self, id: &ObjectId) -> Result<Option<ObjectId>, RefsError> {
        let mut buf = Vec::new();
        let mut current = *id;
        let mut peeled = None;
        // Bound the chain: a tag of a tag of … cannot be longer than this in practice.
        for _ in 0..64 {
            let data = self
                .objects
                .try_find(&current, &mut buf)
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

    /// Whether the object exists.
    pub fn has_object(&self, id: &ObjectId) -> bool {
        use gix_object::Exists;
        self.objects.exists(id)
    }
}

/// Reduce `prefixes` to the ones not covered by a shorter one, so each ref is listed once.
fn minimal_prefixes(prefixes: &[BString]) -> Vec<&BString> {
    let mut sorted: Vec<&BString> = prefixes
        .iter()
        .filter(|p| p.starts_with(b"refs/"))
        .collect();
    sorted.sort();
    let mut out: Vec<&BString> = Vec::new();
    for prefix in sorted {
        if out
            .last()
            .is_some_and(|last| prefix.starts_with(last.as_slice()))
        {
            continue;
        }
        out.push(prefix);
    }
    out
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
