//! Commit histories in memory for unit tests of the crates that walk them (feature
//! `test-support`): commits named by number, with chosen parents and dates; and [`run_git()`],
//! the real git as those tests' fixture builder and reference.

use gix_hash::{oid, ObjectId};
use gix_hashtable::HashMap;
use gix_object::Kind;

/// The id of commit number `n`: `n` in hex, zero-padded.
pub fn numbered_id(n: u32) -> ObjectId {
    let hex = format!("{n:040x}");
    ObjectId::from_hex(hex.as_bytes()).unwrap_or_else(|_| ObjectId::null(gix_hash::Kind::Sha1))
}

/// Commits in memory, named by number ([`numbered_id`]); a number with no commit is missing.
/// Every commit names the same (absent) tree, number 0.
#[derive(Debug, Default, Clone)]
pub struct NumberedCommits(HashMap<ObjectId, Vec<u8>>);

impl NumberedCommits {
    /// Add commit `n` with `parents`, committed at `date` (seconds since the epoch).
    pub fn commit(&mut self, n: u32, parents: &[u32], date: u64) -> &mut Self {
        let mut data = format!("tree {}\n", numbered_id(0));
        for parent in parents {
            data += &format!("parent {}\n", numbered_id(*parent));
        }
        data += &format!("author A <a> 1 +0000\ncommitter C <c> {date} +0000\n\n{n}\n");
        self.0.insert(numbered_id(n), data.into_bytes());
        self
    }

    /// Add commit `n` with `parents`, dated `n`: newer numbers are newer commits.
    pub fn numbered(&mut self, n: u32, parents: &[u32]) -> &mut Self {
        self.commit(n, parents, u64::from(n))
    }

    /// Remove commit `n`: it becomes a missing object.
    pub fn remove(&mut self, n: u32) -> &mut Self {
        self.0.remove(&numbered_id(n));
        self
    }

    /// A line of commits `1..=n`, each the parent of the next, commit `k` dated `k`.
    pub fn line(n: u32) -> Self {
        let mut commits = NumberedCommits::default();
        commits.numbered(1, &[]);
        for k in 2..=n {
            commits.numbered(k, &[k - 1]);
        }
        commits
    }
}

impl gix_object::Find for NumberedCommits {
    fn try_find<'a>(
        &self,
        id: &oid,
        buffer: &'a mut Vec<u8>,
    ) -> Result<Option<gix_object::Data<'a>>, gix_error::Error> {
        let Some(data) = self.0.get(id) else {
            return Ok(None);
        };
        buffer.clear();
        buffer.extend_from_slice(data);
        Ok(Some(gix_object::Data::new(
            buffer,
            Kind::Commit,
            gix_hash::Kind::Sha1,
        )))
    }
}

impl gix_object::FindHeader for NumberedCommits {
    fn try_header(&self, id: &oid) -> Result<Option<gix_object::Header>, gix_error::Error> {
        Ok(self.0.get(id).map(|data| gix_object::Header {
            kind: Kind::Commit,
            size: data.len() as u64,
        }))
    }
}

/// Runs `program <args>` (a git) in `cwd` with a fixed identity, no user or system
/// configuration and the extra `env`, feeding it `stdin`; panics unless it succeeds. Returns
/// its standard output.
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub fn run_git(
    program: &str,
    cwd: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> Vec<u8> {
    use std::{
        io::Write as _,
        process::{Command, Stdio},
    };
    let mut child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "A U Thor")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "C O Mitter")
        .env("GIT_COMMITTER_EMAIL", "committer@example.com")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Fed from a thread: a large input must not deadlock against a full output pipe.
    let writer = stdin.map(|input| {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || pipe.write_all(&input).unwrap())
    });
    let output = child.wait_with_output().unwrap();
    if let Some(writer) = writer {
        writer.join().unwrap();
    }
    assert!(
        output.status.success(),
        "{program} {args:?} in {cwd:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}
