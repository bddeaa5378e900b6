//! git's reverse index (`pack-<hash>.rev`, RIDX version 1): a pack's index positions listed
//! in pack order, so that "which object starts at this offset" and "how long is this entry"
//! need no sort of the `.idx` at open.
//!
//! [`crate::packs`] reads these files; [`write_rev`] writes them for the packs maintenance
//! makes. The layout both share: the signature `RIDX`, the version, the hash function, one
//! 4-byte index position per object sorted by offset, then the pack's checksum and the
//! file's own.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use crate::bitmap::BitmapWriteError;

/// The signature a `.rev` file starts with.
pub(crate) const SIGNATURE: &[u8; 4] = b"RIDX";
/// The only version git writes and reads.
pub(crate) const VERSION: u32 = 1;
/// Signature, version and hash function identifier.
pub(crate) const HEADER_LEN: usize = 12;

/// git's number for a hash function in the `.rev`, `.mtimes` and multi-pack-index headers.
pub(crate) fn hash_id(kind: gix_hash::Kind) -> Option<u32> {
    match kind {
        gix_hash::Kind::Sha1 => Some(1),
        _ => None,
    }
}

/// The index positions of `index`'s objects in pack order (sorted by their offsets).
pub(crate) fn pack_order(index: &gix_pack::index::File) -> Vec<u32> {
    let mut pairs: Vec<(u64, u32)> = (0..index.num_objects())
        .map(|position| (index.pack_offset_at_index(position), position))
        .collect();
    pairs.sort_unstable();
    pairs.into_iter().map(|(_, position)| position).collect()
}

/// Open the `.idx` at `idx_path` for writing files about its pack.
pub(crate) fn open_index(idx_path: &Path) -> Result<gix_pack::index::File, BitmapWriteError> {
    gix_pack::index::File::at(idx_path, gix_hash::Kind::Sha1).map_err(|err| {
        BitmapWriteError::Index {
            path: idx_path.to_owned(),
            message: err.to_string(),
        }
    })
}

/// Write `pack-<hash>.rev` beside `pack-<hash>.idx` (git's RIDX v1, temp file + rename).
/// Returns the path of the `.rev` file.
pub fn write_rev(idx_path: &Path) -> Result<PathBuf, BitmapWriteError> {
    let index = open_index(idx_path)?;
    let order = pack_order(&index);
    let hash = hash_id(index.object_hash()).ok_or(BitmapWriteError::UnsupportedHash)?;
    let mut out = Vec::with_capacity(HEADER_LEN + 4 * order.len() + 40);
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&hash.to_be_bytes());
    for position in &order {
        out.extend_from_slice(&position.to_be_bytes());
    }
    out.extend_from_slice(index.pack_checksum().as_slice());
    let path = idx_path.with_extension("rev");
    write_checksummed(&path, "tmp_rev_", out)?;
    Ok(path)
}

/// Append the SHA-1 of `data` to it and write it to `path` as git writes pack metadata:
/// into a temporary file beside it (named `<prefix>XXXXXX`, which git's `gc` knows to clean),
/// read-only, synced, then renamed over `path`.
pub(crate) fn write_checksummed(
    path: &Path,
    prefix: &str,
    mut data: Vec<u8>,
) -> Result<(), BitmapWriteError> {
    use sha1::Digest as _;
    let digest = sha1::Sha1::digest(&data);
    data.extend_from_slice(&digest);
    let dir = path.parent().unwrap_or(Path::new("."));
    let io = |source: std::io::Error| BitmapWriteError::Io {
        path: path.to_owned(),
        source,
    };
    let mut temporary = tempfile::Builder::new()
        .prefix(prefix)
        .rand_bytes(6)
        .tempfile_in(dir)
        .map_err(io)?;
    temporary.write_all(&data).map_err(io)?;
    temporary.as_file().sync_all().map_err(io)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(temporary.path(), std::fs::Permissions::from_mode(0o444))
            .map_err(io)?;
    }
    temporary.persist(path).map_err(|err| io(err.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_git::git_text as git;

    /// Our `.rev` is byte for byte the one git writes for the same pack, and our reader
    /// takes it.
    #[test]
    fn same_as_gits() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        git(repo, &["init", "-q", "."], None);
        for n in 0..15 {
            std::fs::write(
                repo.join(format!("f{}", n % 4)),
                format!("{n}\n").repeat(n + 1),
            )
            .unwrap();
            git(repo, &["add", "-A"], None);
            git(repo, &["commit", "-q", "-m", &format!("c{n}")], None);
        }
        git(
            repo,
            &["-c", "pack.writeReverseIndex=true", "repack", "-adq"],
            None,
        );
        let pack_dir = repo.join(".git/objects/pack");
        let idx = std::fs::read_dir(&pack_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "idx"))
            .unwrap();
        let rev = idx.with_extension("rev");
        let gits = std::fs::read(&rev).unwrap();
        std::fs::remove_file(&rev).unwrap();
        assert_eq!(write_rev(&idx).unwrap(), rev);
        assert_eq!(std::fs::read(&rev).unwrap(), gits);
        // No temporary file left behind; read-only as git makes it.
        let names: Vec<String> = std::fs::read_dir(&pack_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with("tmp_")), "{names:?}");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&rev).unwrap().permissions().mode() & 0o777,
            0o444
        );
        // Written again over the read-only file: replaced, same bytes.
        write_rev(&idx).unwrap();
        assert_eq!(std::fs::read(&rev).unwrap(), gits);
        let index = open_index(&idx).unwrap();
        let (order, _) = crate::packs::read_reverse_index(&rev, &index).unwrap();
        assert_eq!(&*order, pack_order(&index).as_slice());
        git(repo, &["fsck", "--strict"], None);
    }
}
