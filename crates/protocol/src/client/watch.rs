//! Following a repository's refs with protocol v2's `ls-refs refs-token` and `wait-refs`
//! (docs/refs-watch.md): one listing, then one waiting request after another, each answered
//! when a ref under the prefixes moved (or when its timeout ended).

use std::collections::BTreeMap;

use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;
use packgate_wire::client::Connection;
use packgate_wire::pkt_line::PacketReader;

use super::advertisement::{read_advertisement, Advertisement};
use super::fetch::wire::{self, Listing, TokenAsk};
use super::fetch::FetchError;

/// Why a watch ended.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The server cannot be watched this way.
    #[error("the server does not support {0}")]
    Unsupported(&'static str),
    /// The connection, or what the server said, failed.
    #[error(transparent)]
    Wire(#[from] FetchError),
}

/// One ref that moved between two listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// Its name as the server lists it (`HEAD`, `refs/heads/main`).
    pub name: BString,
    /// Its value before; `None`: it did not exist (or was an unborn `HEAD`).
    pub old: Option<ObjectId>,
    /// Its value now; `None`: it is gone.
    pub new: Option<ObjectId>,
}

/// A repository's refs under some prefixes, followed over one stateful v2 connection.
pub struct Watch {
    connection: Box<dyn Connection>,
    advertisement: Advertisement,
    prefixes: Vec<BString>,
    token: BString,
    refs: BTreeMap<BString, Option<ObjectId>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("prefixes", &self.prefixes)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

fn by_name(refs: Vec<super::fetch::RemoteRef>) -> BTreeMap<BString, Option<ObjectId>> {
    refs.into_iter().map(|r| (r.name, r.id)).collect()
}

impl Watch {
    /// Read the advertisement from `connection` (asked for protocol v2) and list the refs
    /// under `prefixes` (all when empty) with their token.
    pub fn start(
        mut connection: Box<dyn Connection>,
        prefixes: &[BString],
    ) -> Result<Watch, WatchError> {
        let advertisement = read_advertisement(&mut PacketReader::new(connection.reader()))
            .map_err(FetchError::from)?;
        if !matches!(advertisement, Advertisement::V2 { .. }) {
            return Err(WatchError::Unsupported("protocol v2"));
        }
        if connection.stateless() || !advertisement.has("wait-refs") {
            return Err(WatchError::Unsupported("wait-refs"));
        }
        if !wire::has_refs_token(&advertisement) {
            return Err(WatchError::Unsupported("ls-refs refs-token"));
        }
        let (refs, token) = match wire::ls_refs_token(
            connection.as_mut(),
            &advertisement,
            prefixes,
            TokenAsk::Token,
        )? {
            Listing::Refs {
                refs,
                token: Some(token),
            } => (refs, token),
            _ => {
                return Err(
                    FetchError::Protocol("no refs-token in the ls-refs answer".into()).into(),
                )
            }
        };
        Ok(Watch {
            connection,
            advertisement,
            prefixes: prefixes.to_vec(),
            token,
            refs: by_name(refs),
        })
    }

    /// The token of the refs last seen.
    pub fn token(&self) -> &str {
        self.token.to_str().unwrap_or_default()
    }

    /// The refs last seen, by name (`None`: an unborn `HEAD`).
    pub fn refs(&self) -> &BTreeMap<BString, Option<ObjectId>> {
        &self.refs
    }

    /// Wait up to `timeout` seconds for the refs to change: what moved (nothing when the
    /// timeout ended first).
    pub fn wait(&mut self, timeout: u64) -> Result<Vec<RefUpdate>, WatchError> {
        let since = self.token.to_string();
        match wire::wait_refs(
            self.connection.as_mut(),
            &self.advertisement,
            &since,
            &self.prefixes,
            timeout,
        )? {
            Listing::Unchanged(token) => {
                self.token = token;
                Ok(Vec::new())
            }
            Listing::Refs {
                refs,
                token: Some(token),
            } => {
                let refs = by_name(refs);
                let updates = diff(&self.refs, &refs);
                self.refs = refs;
                self.token = token;
                Ok(updates)
            }
            Listing::Refs { token: None, .. } => {
                Err(FetchError::Protocol("no token in the wait-refs answer".into()).into())
            }
        }
    }

    /// End the session (the flush that says no more commands).
    pub fn finish(mut self) -> Result<(), WatchError> {
        wire::end_session(self.connection.as_mut(), &self.advertisement)?;
        self.connection.finish().map_err(FetchError::from)?;
        Ok(())
    }
}

/// The refs whose values differ, in name order.
fn diff(
    old: &BTreeMap<BString, Option<ObjectId>>,
    new: &BTreeMap<BString, Option<ObjectId>>,
) -> Vec<RefUpdate> {
    let mut names: Vec<&BString> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let before = old.get(name).copied().flatten();
            let after = new.get(name).copied().flatten();
            (before != after).then(|| RefUpdate {
                name: name.clone(),
                old: before,
                new: after,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_names_created_moved_and_deleted_refs_in_order() {
        let a = ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap();
        let b = ObjectId::from_hex(b"2222222222222222222222222222222222222222").unwrap();
        let old: BTreeMap<BString, Option<ObjectId>> = [
            ("HEAD".into(), None),
            ("refs/heads/gone".into(), Some(a)),
            ("refs/heads/main".into(), Some(a)),
            ("refs/heads/same".into(), Some(a)),
        ]
        .into_iter()
        .collect();
        let new: BTreeMap<BString, Option<ObjectId>> = [
            ("HEAD".into(), Some(b)),
            ("refs/heads/main".into(), Some(b)),
            ("refs/heads/new".into(), Some(a)),
            ("refs/heads/same".into(), Some(a)),
        ]
        .into_iter()
        .collect();
        let update = |name: &str, old, new| RefUpdate {
            name: name.into(),
            old,
            new,
        };
        assert_eq!(
            diff(&old, &new),
            vec![
                update("HEAD", None, Some(b)),
                update("refs/heads/gone", Some(a), None),
                update("refs/heads/main", Some(a), Some(b)),
                update("refs/heads/new", None, Some(a)),
            ]
        );
    }
}
