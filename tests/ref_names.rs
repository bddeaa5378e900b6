//! Ref names and prefixes from clients: a `ref-prefix` that climbs out of the repository
//! reads nothing there, and push commands on symbolic or repeated refs end as with git.

use std::fs::{File, FileTimes, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::pkt::{concat, line, DELIM, FLUSH};
use crate::util::{preset_spec, write_file, Dir, Git, Output};

/// One stateless v2 `ls-refs` request with these `ref-prefix`es.
fn ls_refs_request(prefixes: &[&str]) -> Vec<u8> {
    let mut pieces = vec![line("command=ls-refs\n"), DELIM.to_vec()];
    pieces.extend(prefixes.iter().map(|p| line(format!("ref-prefix {p}\n"))));
    pieces.push(FLUSH.to_vec());
    concat(pieces)
}

fn packgate_ls_refs(dir: &Dir, repo: &Path, prefixes: &[&str]) -> Output {
    dir.packgate()
        .args(["upload-pack", "--stateless-rpc"])
        .arg(repo)
        .env("GIT_PROTOCOL", "version=2")
        .stdin(ls_refs_request(prefixes))
        .output()
}

fn git_ls_refs(dir: &Dir, git: &Git, repo: &Path, prefixes: &[&str]) -> Output {
    dir.git(git)
        .args(["upload-pack", "--stateless-rpc"])
        .arg(repo)
        .env("GIT_PROTOCOL", "version=2")
        .stdin(ls_refs_request(prefixes))
        .run()
}

/// An access time long past, so that reading the directory moves it even under `relatime`.
fn long_ago() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000)
}

fn accessed(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|metadata| metadata.accessed())
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, Permissions::from_mode(mode))
        .unwrap_or_else(|err| panic!("chmod {}: {err}", path.display()));
}

/// Makes a directory readable again when the test ends, so that it can be removed.
struct RestoreMode(std::path::PathBuf);

impl Drop for RestoreMode {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(&self.0, Permissions::from_mode(0o755));
    }
}

/// Sets the access time of the directories `outside` and `outside/secret` to [`long_ago`]
/// and leaves `secret` unreadable.
fn reset_access_times(outside: &Path) {
    let secret = outside.join("secret");
    set_mode(&secret, 0o755);
    for path in [outside, &secret] {
        File::open(path)
            .and_then(|file| file.set_times(FileTimes::new().set_accessed(long_ago())))
            .unwrap_or_else(|err| panic!("setting the access time of {}: {err}", path.display()));
    }
    set_mode(&secret, 0o000);
}

/// `ref-prefix`es that lead out of the git directory, to a directory holding files named
/// like refs (with a valid object id in them) and an unreadable subdirectory, get the answer
/// of a prefix that leads nowhere — git's own upload-pack's answer — and packgate opens
/// neither directory: their access times stay in the past (root reads unreadable
/// directories, so the permission alone would not tell). Prefixes that can begin a ref
/// name, or that are a prefix of `refs/` (which match every ref), answer as git does.
#[test]
fn ls_refs_prefix_out_of_the_repository_reads_nothing() {
    let git = Git::newest();
    let dir = Dir::new("ref-prefix-outside");
    let repo = dir.fixture(&preset_spec("tiny")).path;
    let main = dir
        .git_in(&git, &repo)
        .args(["rev-parse", "refs/heads/main"])
        .run()
        .stdout_text();
    // Next to the git directory: `<git dir>/refs/../../outside` is this.
    let outside = dir.join("outside");
    let secret = outside.join("secret");
    std::fs::create_dir_all(&secret).unwrap_or_else(|err| panic!("{err}"));
    for name in ["main", "master", "v1"] {
        write_file(&outside.join(name), main.as_bytes());
        write_file(&secret.join(name), main.as_bytes());
    }
    let _restore = RestoreMode(secret.clone());
    set_mode(&secret, 0o000);
    // Whether permissions stop this process (not root); else only access times tell.
    let permissions_bind = std::fs::read_dir(&secret).is_err();
    let absolute = format!(
        "refs/{}{}/",
        "../".repeat(64),
        outside
            .to_str()
            .and_then(|path| path.strip_prefix('/'))
            .unwrap_or_else(|| panic!("odd temporary path {}", outside.display()))
    );

    let nowhere = git_ls_refs(&dir, &git, &repo, &["refs/../../nowhere/"]);
    for prefix in [
        "refs/../../outside/",
        "refs/../../outside/ma",
        "refs/heads/../../../outside/",
        "refs/heads/../../../outside/secret/",
        absolute.as_str(),
    ] {
        reset_access_times(&outside);
        let actual = packgate_ls_refs(&dir, &repo, &[prefix]);
        let context = format!("ref-prefix {prefix}");
        assert!(actual.status.success(), "{context}: {actual}");
        assert_eq!(
            actual.stdout, nowhere.stdout,
            "{context}: packgate answered{actual}\n\nnot as to a prefix leading nowhere{nowhere}"
        );
        for path in [&outside, &secret] {
            assert_eq!(
                accessed(path),
                long_ago(),
                "{context}: packgate read {}",
                path.display()
            );
        }
    }

    // The probe works: reading the directories does move their access times.
    reset_access_times(&outside);
    set_mode(&secret, 0o755);
    for path in [&outside, &secret] {
        let entries = std::fs::read_dir(path).map(Iterator::count);
        assert!(entries.is_ok_and(|n| n > 0), "{}", path.display());
        assert!(
            permissions_bind || accessed(path) != long_ago(),
            "reading {} left its access time alone: this file system cannot show \
             whether packgate reads it",
            path.display()
        );
    }

    for prefixes in [
        &["refs/heads/ma"][..],
        &["refs/heads/"],
        &["r"],
        &["refs"],
        &["", "refs/heads/"],
        &["HEAD", "refs/tags/"],
        &["refs/heads/main/"],
    ] {
        let expected = git_ls_refs(&dir, &git, &repo, prefixes);
        let actual = packgate_ls_refs(&dir, &repo, prefixes);
        assert!(actual.status.success(), "{prefixes:?}: {actual}");
        assert_eq!(
            actual.stdout_text(),
            expected.stdout_text(),
            "ref-prefix {prefixes:?}"
        );
    }
}
