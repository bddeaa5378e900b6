//! Which repositories a network front-end may serve: paths below one root directory.
//!
//! A requested path is taken apart into plain components (no `..`, no `.`, no NUL, no
//! backslash), joined below the root, opened the way git's servers find repositories, and
//! served only if the git directory it resolves to — symlinks followed — is still below the
//! root.

use std::path::{Path, PathBuf};

use bstr::ByteSlice;

use crate::repository::{OpenError, PathLookup, Repository};

/// Why a path is not served. Clients are told no more than "access denied or not exported"
/// unless the operator asks for informative errors.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The path is not a plain relative path below the root.
    #[error("refusing path {path:?}")]
    BadPath {
        /// The path as requested.
        path: String,
    },
    /// The path leads outside the root (through a symlink).
    #[error("path {path:?} leads outside the served root")]
    OutsideRoot {
        /// The path as requested.
        path: String,
    },
    /// No repository there.
    #[error(transparent)]
    Open(#[from] OpenError),
}

/// A root directory of repositories.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    /// Serve repositories below `root`, which must exist.
    pub fn new(root: &Path) -> std::io::Result<Self> {
        Ok(Registry {
            root: root.canonicalize()?,
        })
    }

    /// The root, canonicalized.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Map a requested path (`/project.git`) to a path below the root.
    pub fn resolve(&self, requested: &[u8]) -> Result<PathBuf, AccessError> {
        let bad = || AccessError::BadPath {
            path: requested.to_str_lossy().into_owned(),
        };
        let text = requested.to_str().map_err(|_| bad())?;
        if text.contains(['\0', '\\']) || text.starts_with('~') {
            return Err(bad());
        }
        let mut path = self.root.clone();
        let mut components = 0;
        for component in text.split('/').filter(|c| !c.is_empty()) {
            if component == "." || component == ".." {
                return Err(bad());
            }
            path.push(component);
            components += 1;
        }
        if components == 0 {
            return Err(bad());
        }
        Ok(path)
    }

    /// Open the repository at the requested path, if it is below the root.
    pub fn open(
        &self,
        requested: &[u8],
        config_parameters: Option<&str>,
    ) -> Result<Repository, AccessError> {
        let path = self.resolve(requested)?;
        let repo = Repository::open(&path, PathLookup::Lenient, config_parameters)?;
        let git_dir = repo
            .git_dir()
            .canonicalize()
            .map_err(|_| AccessError::BadPath {
                path: requested.to_str_lossy().into_owned(),
            })?;
        if !git_dir.starts_with(&self.root) {
            return Err(AccessError::OutsideRoot {
                path: requested.to_str_lossy().into_owned(),
            });
        }
        Ok(repo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path()).unwrap();
        let root = registry.root().to_owned();
        assert_eq!(registry.resolve(b"/a.git").unwrap(), root.join("a.git"));
        assert_eq!(
            registry.resolve(b"/x//y").unwrap(),
            root.join("x").join("y")
        );
        for bad in [
            &b"/../etc"[..],
            b"/a/../../b",
            b"/./a",
            b"/",
            b"",
            b"/a\0b",
            b"~root/x",
            b"/a\\..\\b",
            b"/\xff",
        ] {
            assert!(
                registry.resolve(bad).is_err(),
                "{:?} must be refused",
                bad.as_bstr()
            );
        }
    }

    #[test]
    fn open_refuses_symlink_out_of_root() {
        let outside = tempfile::tempdir().unwrap();
        for dir in ["objects", "refs"] {
            std::fs::create_dir_all(outside.path().join("repo.git").join(dir)).unwrap();
        }
        std::fs::write(
            outside.path().join("repo.git/HEAD"),
            "ref: refs/heads/main\n",
        )
        .unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("repo.git"),
            root.path().join("link.git"),
        )
        .unwrap();
        let registry = Registry::new(root.path()).unwrap();
        assert!(matches!(
            registry.open(b"/link.git", None),
            Err(AccessError::OutsideRoot { .. })
        ));
    }
}
