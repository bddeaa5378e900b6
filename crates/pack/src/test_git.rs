//! Running the real git in this crate's tests: as a fixture builder and as the reference.

use std::path::Path;

/// Runs `git <args>` in `cwd` with a fixed identity and no user or system configuration,
/// feeding it `stdin`; panics unless it succeeds. Returns its standard output.
pub(crate) fn git(cwd: &Path, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    packgate_object::testing::run_git("git", cwd, args, &[], stdin)
}

/// [`git`], its output as text.
pub(crate) fn git_text(cwd: &Path, args: &[&str], stdin: Option<&[u8]>) -> String {
    String::from_utf8(git(cwd, args, stdin)).unwrap()
}
