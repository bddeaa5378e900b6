//! Running the real git in this crate's tests: as a fixture builder and as the reference.

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

/// Runs `git <args>` in `cwd` with a fixed identity and no user or system configuration,
/// feeding it `stdin`; panics unless it succeeds. Returns its standard output.
pub(crate) fn git(cwd: &Path, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "A U Thor")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "C O Mitter")
        .env("GIT_COMMITTER_EMAIL", "committer@example.com")
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
        "git {args:?} in {cwd:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// [`git`], its output as text.
pub(crate) fn git_text(cwd: &Path, args: &[&str], stdin: Option<&[u8]>) -> String {
    String::from_utf8(git(cwd, args, stdin)).unwrap()
}
