//! `packgate passwd FILE USER`: add or replace a user in a credentials file (what
//! `serve --http-credentials` reads), so operators and tests need no `htpasswd`.

use std::{
    io::{Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use clap::Args;
use packgate::transport::credentials::{check_user_name, hash_password, HashScheme};

/// The longest password line read from standard input.
const MAX_PASSWORD: u64 = 4096;

#[derive(Args)]
pub(crate) struct PasswdArgs {
    /// Hash with argon2id instead of bcrypt (which `htpasswd -B` also writes and reads).
    #[arg(long)]
    argon2: bool,
    /// The bcrypt cost (4 to 31): each step doubles the time a check takes.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 12,
        conflicts_with = "argon2"
    )]
    cost: u32,
    /// The credentials file; created (readable by its owner only) if missing.
    file: PathBuf,
    /// The user to add, or whose password to replace.
    user: String,
}

pub(crate) fn passwd(args: PasswdArgs) -> anyhow::Result<ExitCode> {
    check_user_name(&args.user)
        .map_err(|reason| anyhow::anyhow!("invalid user name '{}': {reason}", args.user))?;
    let password = read_password()?;
    let scheme = if args.argon2 {
        HashScheme::Argon2id
    } else {
        HashScheme::Bcrypt { cost: args.cost }
    };
    let hash = hash_password(&password, scheme).context("could not hash the password")?;
    let existing = match std::fs::read_to_string(&args.file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => {
            return Err(err).with_context(|| format!("could not read {}", args.file.display()))
        }
    };
    let (text, replaced) = with_entry(&existing, &args.user, &hash);
    write_atomically(&args.file, text.as_bytes())?;
    let done = if replaced { "updated" } else { "added" };
    let preposition = if replaced { "in" } else { "to" };
    eprintln!(
        "packgate: {done} user {} {preposition} {}",
        args.user,
        args.file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The first line of standard input, without its line ending; not empty.
fn read_password() -> anyhow::Result<String> {
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_PASSWORD + 2)
        .read_to_end(&mut input)
        .context("could not read the password from standard input")?;
    let line = input.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() as u64 > MAX_PASSWORD {
        anyhow::bail!("the password is longer than {MAX_PASSWORD} bytes");
    }
    let password = String::from_utf8(line.to_vec())
        .map_err(|_| anyhow::anyhow!("the password is not UTF-8"))?;
    if password.is_empty() {
        anyhow::bail!("no password on standard input (give it as its first line)");
    }
    Ok(password)
}

/// `text` with `user`'s line replaced by `user:hash`, or that line appended; and whether a
/// line was replaced.
fn with_entry(text: &str, user: &str, hash: &str) -> (String, bool) {
    let entry = format!("{user}:{hash}");
    let mut replaced = false;
    let mut out = String::with_capacity(text.len() + entry.len() + 1);
    for line in text.lines() {
        let is_user = line
            .split_once(':')
            .is_some_and(|(name, _)| name == user && !line.starts_with('#'));
        if is_user && !replaced {
            out.push_str(&entry);
            replaced = true;
        } else if !is_user {
            out.push_str(line);
        } else {
            continue;
        }
        out.push('\n');
    }
    if !replaced {
        out.push_str(&entry);
        out.push('\n');
    }
    (out, replaced)
}

/// Replace `path` with `contents` through a temporary file beside it (mode 0600 when new,
/// the old file's permissions otherwise), so a reader never sees half a file.
fn write_atomically(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let mut temporary_name = name.to_owned();
    temporary_name.push(format!(".tmp-{}", std::process::id()));
    let temporary = path.with_file_name(temporary_name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("could not create {}", temporary.display()))?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| match std::fs::metadata(path) {
            Ok(metadata) => file.set_permissions(metadata.permissions()),
            Err(_) => Ok(()),
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(err).with_context(|| format!("could not write {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_added_or_replaced() {
        assert_eq!(
            with_entry("", "alice", "H"),
            ("alice:H\n".to_owned(), false)
        );
        assert_eq!(
            with_entry("# users\nbob:B\nalice:A\n", "alice", "H"),
            ("# users\nbob:B\nalice:H\n".to_owned(), true)
        );
        assert_eq!(
            with_entry("alice:A\nbob:B", "carol", "H"),
            ("alice:A\nbob:B\ncarol:H\n".to_owned(), false)
        );
        // A second line for the user is dropped; a user whose name only starts alike stays.
        assert_eq!(
            with_entry("alice:A\nalicia:C\nalice:A2\n", "alice", "H"),
            ("alice:H\nalicia:C\n".to_owned(), true)
        );
    }
}
