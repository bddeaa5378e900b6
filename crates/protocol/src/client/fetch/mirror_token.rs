//! A mirror's memory of its last update: the remote's refs token (docs/refs-watch.md) for
//! the prefixes a mirror lists (`refs/`, `HEAD`), and the mirror's own token at that moment.
//!
//! Kept in the file `packgate-mirror-token` in the mirror's git directory (one line: the
//! remote's token, a space, the mirror's token). A file rather than a configuration key: it
//! changes on every update, and rewriting `config` would race with people editing it. git
//! ignores the file.
//!
//! The remote's token is offered (`if-none-match`) only while the mirror's own refs are
//! what the last update left, so a mirror changed by anything else is brought back by the
//! next update as before.

use bstr::{BStr, ByteSlice};

use crate::{
    config::UploadPackConfig,
    refs_watch::{refs_token, RefsToken},
    repository::Repository,
};

/// The file's name in the git directory.
const FILE: &str = "packgate-mirror-token";

/// The mirror's own token: every ref and `HEAD`, nothing hidden, no namespace.
fn local_token(repo: &Repository) -> Option<RefsToken> {
    let plain = repo.clone().with_namespace(None);
    match refs_token(&plain, &UploadPackConfig::default(), &[]) {
        Ok(token) => Some(token),
        Err(err) => {
            tracing::debug!(%err, "the mirror's refs token could not be computed");
            None
        }
    }
}

/// The remote's token of the last update, if the mirror is still as that update left it.
pub(super) fn known(repo: &Repository) -> Option<RefsToken> {
    let text = std::fs::read(repo.git_dir().join(FILE)).ok()?;
    let mut fields = text.trim().split_str(" ");
    let remote = RefsToken::parse(fields.next()?).ok()?;
    let local = RefsToken::parse(fields.next()?).ok()?;
    (local_token(repo)? == local).then_some(remote)
}

/// Remember `remote`, the remote's token of the update just made.
pub(super) fn remember(repo: &Repository, remote: &BStr) {
    let (Ok(remote), Some(local)) = (RefsToken::parse(remote), local_token(repo)) else {
        forget(repo);
        return;
    };
    let path = repo.git_dir().join(FILE);
    let temporary = repo
        .git_dir()
        .join(format!("{FILE}.tmp{}", std::process::id()));
    let written = std::fs::write(&temporary, format!("{remote} {local}\n"))
        .and_then(|()| std::fs::rename(&temporary, &path));
    if let Err(err) = written {
        tracing::debug!(%err, "could not remember the remote's refs token");
        let _ = std::fs::remove_file(&temporary);
        forget(repo);
    }
}

/// Forget the last update's token: the next update lists the remote's refs in full.
pub(super) fn forget(repo: &Repository) {
    match std::fs::remove_file(repo.git_dir().join(FILE)) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => tracing::debug!(%err, "could not forget the remote's refs token"),
    }
}
