//! packgate's fetch client: refs and objects from another git server into a local
//! repository, as `git fetch` (and `git clone --mirror`) get them.
//!
//! [`fetch()`] takes an open [`Connection`] (the caller connected with the protocol version
//! it wants, v2 by default) and:
//!
//! 1. reads the advertisement; for protocol v2 lists the refs with `ls-refs`, asking only for
//!    the `ref-prefix`es the refspecs need (plus `symrefs`, `peel`, `unborn`), for v0/v1 takes
//!    them from the advertisement;
//! 2. maps remote refs to local ones through the [`Refspec`]s, wants every object the
//!    repository lacks, and negotiates with [`ClientNegotiator`] (haves from every local
//!    ref, git's round sizes, ACK-gated in_vain), over v2's `fetch` or v0's
//!    `multi_ack_detailed`/`no-done` exchange, stateful or stateless;
//! 3. receives the pack exactly as a push's is received: [`ingest_pack`] into a
//!    [`Quarantine`] (thin packs completed, limits of [`FetchOptions::ingest`]), the new tips'
//!    connectivity checked, then migrated;
//! 4. moves refs with compare-and-swap on the values read before the fetch: fast-forwards,
//!    forced updates for `+` refspecs, rejections as git's (`non-fast-forward`, `would
//!    clobber existing tag`), prune, auto-followed tags; a mirror's `HEAD` follows the
//!    remote's.
//!
//! Nothing half-received is visible: objects are in the repository only after the whole pack
//! was indexed and checked, and refs move only after that. A killed fetch leaves at most a
//! quarantine directory, which [`packgate_pack::ingest::remove_stale_quarantines`] cleans.
//!
//! Not here: shallow fetches (`--depth`), partial clone filters, `packfile-uris`, fetching
//! by object id, submodules.

mod complete;
mod init;
mod mirror_token;
pub mod refspec;
mod sideband;
pub(crate) mod wire;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, Write};
use std::sync::atomic::AtomicBool;

use bstr::{BStr, BString, ByteSlice};
use gix_hash::ObjectId;
use gix_ref::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix_ref::{FullName, Target};
use packgate_negotiate::client::ClientNegotiator;
use packgate_pack::ingest::{
    self, ConnectivityError, IngestError, IngestOptions, IngestOutcome, Quarantine,
};
use packgate_wire::client::Connection;
use packgate_wire::pkt_line::PacketReader;

pub use init::init_mirror;
pub use packgate_negotiate::client::Algorithm;
pub use refspec::{Refspec, RefspecError};

use super::advertisement::{read_advertisement, Advertisement, AdvertisementError};
use crate::repository::{RefsError, Repository};

/// Which tags a fetch brings besides those its refspecs name (git's `--tags`/`--no-tags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagFollowing {
    /// git's default: a remote tag is stored (as `refs/tags/<name>`) when the object it
    /// points at arrives with this fetch or is already here (`include-tag`).
    #[default]
    Auto,
    /// Every remote tag (`refs/tags/*:refs/tags/*` added to the refspecs).
    All,
    /// None but those the refspecs name.
    None,
}

/// What to fetch and how.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Which remote refs, and where they land. Empty with [`mirror`](Self::mirror) false:
    /// nothing but auto-followed tags.
    pub refspecs: Vec<Refspec>,
    /// Delete local refs in a refspec's destination whose remote ref is gone.
    pub prune: bool,
    /// Tag following.
    pub tags: TagFollowing,
    /// The negotiation algorithm (`fetch.negotiationAlgorithm`).
    pub algorithm: Algorithm,
    /// A mirror: `+refs/*:refs/*` in place of the refspecs, prune, and `HEAD` made the
    /// symbolic ref the remote's `HEAD` is.
    pub mirror: bool,
    /// Ask the server for no progress (`no-progress`).
    pub quiet: bool,
    /// Limits and checks for the received pack.
    pub ingest: IngestOptions,
}

/// Why a ref was not updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not a fast-forward and not forced.
    NonFastForward,
    /// An existing tag would change, not forced (git ≥ 2.20).
    WouldClobberTag,
    /// The update itself failed (the ref moved meanwhile, a lock is held…).
    Failed(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::NonFastForward => f.write_str("non-fast-forward"),
            Rejection::WouldClobberTag => f.write_str("would clobber existing tag"),
            Rejection::Failed(reason) => f.write_str(reason),
        }
    }
}

/// What happened to one local ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created.
    New,
    /// Moved forward.
    FastForward,
    /// Moved, not forward, as a `+` refspec allows.
    Forced,
    /// Left as it was.
    Rejected(Rejection),
    /// Deleted: its remote ref is gone.
    Pruned,
    /// Already at the remote's value.
    UpToDate,
}

/// One local ref's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefChange {
    /// The remote ref it comes from (`None` for a pruned one).
    pub remote: Option<BString>,
    /// The local ref.
    pub local: BString,
    /// Its value before the fetch.
    pub old: Option<ObjectId>,
    /// Its value from the remote (`None` when pruned).
    pub new: Option<ObjectId>,
    /// What happened.
    pub kind: ChangeKind,
}

impl RefChange {
    /// Whether the ref was left as it was against the remote's wish.
    pub fn is_rejected(&self) -> bool {
        matches!(self.kind, ChangeKind::Rejected(_))
    }
}

/// What a fetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchOutcome {
    /// Each local ref considered, in the order of the remote's listing (pruned ones last).
    pub changes: Vec<RefChange>,
    /// Remote refs selected by a refspec without a destination: fetched, not stored (git
    /// writes them to `FETCH_HEAD`).
    pub fetched: Vec<(BString, ObjectId)>,
    /// Where the remote's `HEAD` points, when it said so.
    pub remote_head: Option<BString>,
    /// Whether the local `HEAD` was changed to follow the remote's (a mirror).
    pub head_updated: bool,
    /// `have` lines sent, not counting repeated common ones.
    pub haves: usize,
    /// Requests of the negotiation (0 when nothing was wanted).
    pub rounds: usize,
    /// Bytes of the received pack (0 when none was requested).
    pub pack_bytes: u64,
    /// Objects in the received pack.
    pub pack_objects: u32,
    /// A mirror's update found the remote's refs unchanged since its last update (by their
    /// refs token) and did nothing else.
    pub unchanged: bool,
}

/// Why a fetch failed. Refs rejected one by one are not errors: they are in
/// [`FetchOutcome::changes`].
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The advertisement could not be read.
    #[error(transparent)]
    Advertisement(#[from] AdvertisementError),
    /// The connection failed.
    #[error("the connection to the remote failed")]
    Io(#[from] io::Error),
    /// The pkt-line stream broke.
    #[error(transparent)]
    Packet(#[from] packgate_wire::pkt_line::ReadError),
    /// The remote said `ERR …` or sent an error on band 3.
    #[error("remote error: {0}")]
    Remote(String),
    /// The remote's answer is not what the protocol allows.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Negotiation failed.
    #[error(transparent)]
    Negotiate(#[from] packgate_negotiate::client::Error),
    /// The pack could not be received.
    #[error("could not receive the pack")]
    Ingest(#[from] IngestError),
    /// The quarantine could not be made or opened.
    #[error("could not create the quarantine")]
    Quarantine(#[source] io::Error),
    /// The received objects do not complete the new tips' history.
    #[error("the remote did not send all necessary objects")]
    Connectivity(#[from] ConnectivityError),
    /// Local refs could not be read.
    #[error(transparent)]
    Refs(#[from] RefsError),
}

/// A ref the remote listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteRef {
    pub(crate) name: BString,
    /// `None`: unborn (v2's `unborn HEAD`).
    pub(crate) id: Option<ObjectId>,
    pub(crate) symref_target: Option<BString>,
}

/// What a fetch needs of the negotiation and the transfer (see `wire`).
pub(crate) struct Transfer<'a> {
    pub(crate) repo: &'a Repository,
    pub(crate) options: &'a FetchOptions,
    pub(crate) received: Option<(Quarantine, IngestOutcome)>,
    pub(crate) haves: usize,
    pub(crate) rounds: usize,
}

impl Transfer<'_> {
    /// Receive the pack from `input` into a new quarantine.
    pub(crate) fn receive(&mut self, input: &mut dyn BufRead) -> Result<(), FetchError> {
        let quarantine = Quarantine::create(&self.repo.git_dir().join("objects"))
            .map_err(FetchError::Quarantine)?;
        let interrupt = AtomicBool::new(false);
        let outcome = ingest::ingest_pack(
            input,
            self.repo.objects(),
            &quarantine,
            &self.options.ingest,
            &interrupt,
        )?;
        tracing::debug!(
            objects = outcome.objects,
            bytes = outcome.bytes_read,
            "fetched pack received"
        );
        self.received = Some((quarantine, outcome));
        Ok(())
    }
}

/// One planned local ref update.
struct Planned {
    remote: BString,
    id: ObjectId,
    local: BString,
    force: bool,
}

/// Fetch from the server at the other end of `connection` into `repo`, writing the remote's
/// progress to `progress` (prefixed `remote: `, as git shows it).
pub fn fetch(
    mut connection: Box<dyn Connection>,
    repo: &Repository,
    options: &FetchOptions,
    progress: &mut dyn Write,
) -> Result<FetchOutcome, FetchError> {
    let advertisement = read_advertisement(&mut PacketReader::new(connection.reader()))?;
    let refspecs = effective_refspecs(options);
    let auto_tags = options.tags == TagFollowing::Auto
        && refspecs
            .iter()
            .any(|spec| !spec.negative && spec.dst.is_some());
    let mut remote_token: Option<BString> = None;
    let remote_refs = match &advertisement {
        Advertisement::V2 { .. } => {
            let mut prefixes: Vec<BString> = Vec::new();
            for spec in refspecs.iter().filter(|spec| !spec.negative) {
                prefixes.extend(spec.ref_prefixes());
            }
            if auto_tags {
                prefixes.push("refs/tags/".into());
            }
            if options.mirror {
                prefixes.push("HEAD".into());
            }
            prefixes.sort();
            prefixes.dedup();
            if prefixes.is_empty() {
                Vec::new()
            } else if options.mirror && wire::has_refs_token(&advertisement) {
                // A mirror remembers the remote's refs token of its last update: when the
                // remote's refs and its own are as they were then, there is nothing to do.
                let known = mirror_token::known(repo);
                let ask = match &known {
                    Some(token) => wire::TokenAsk::IfNoneMatch(token.as_str()),
                    None => wire::TokenAsk::Token,
                };
                match wire::ls_refs_token(connection.as_mut(), &advertisement, &prefixes, ask)? {
                    wire::Listing::Unchanged(_) => {
                        tracing::debug!(git_dir = %repo.git_dir().display(), "the remote's refs are unchanged: nothing to fetch");
                        wire::end_session(connection.as_mut(), &advertisement)?;
                        connection.finish()?;
                        return Ok(FetchOutcome {
                            unchanged: true,
                            ..FetchOutcome::default()
                        });
                    }
                    wire::Listing::Refs { refs, token } => {
                        remote_token = token;
                        refs
                    }
                }
            } else {
                wire::ls_refs(connection.as_mut(), &advertisement, &prefixes)?
            }
        }
        Advertisement::V0 {
            refs, capabilities, ..
        } => wire::v0_refs(refs, capabilities),
    };
    let remote_head = remote_refs
        .iter()
        .find(|r| r.name == "HEAD")
        .and_then(|r| r.symref_target.clone());

    // Local state, read once: the compare-and-swap values and the negotiation's tips.
    let local_records = repo.all_refs(None)?;
    let local: HashMap<BString, ObjectId> = local_records
        .iter()
        .map(|record| (record.name.clone(), record.id))
        .collect();

    let (mut planned, fetched) = plan(&refspecs, &remote_refs);
    let mut wants: Vec<ObjectId> = planned
        .iter()
        .map(|p| p.id)
        .chain(fetched.iter().map(|(_, id)| *id))
        .filter(|id| !repo.has_object(id))
        .collect();
    wants.sort();
    wants.dedup();

    let mut transfer = Transfer {
        repo,
        options,
        received: None,
        haves: 0,
        rounds: 0,
    };
    if wants.is_empty() {
        wire::end_session(connection.as_mut(), &advertisement)?;
    } else {
        let mut negotiator = ClientNegotiator::with_algorithm(
            wire::negotiation_protocol(&advertisement, connection.stateless()),
            options.algorithm,
        );
        negotiator.use_commit_graph(repo.commit_graph());
        let remote_ids: Vec<ObjectId> = remote_refs.iter().filter_map(|r| r.id).collect();
        let local_ids: Vec<ObjectId> = local_records.iter().map(|r| r.id).collect();
        for id in complete::known_common(repo.objects(), &remote_ids, &local_ids) {
            negotiator.known_common(repo.objects(), &id)?;
        }
        for record in &local_records {
            negotiator.add_tip(repo.objects(), &record.id)?;
        }
        wire::fetch_pack(
            connection.as_mut(),
            &advertisement,
            &wants,
            &mut negotiator,
            &mut transfer,
            progress,
        )?;
    }
    connection.finish()?;

    let (quarantine, ingested) = match transfer.received.take() {
        Some((quarantine, outcome)) => (Some(quarantine), Some(outcome)),
        None => (None, None),
    };
    let objects = match &quarantine {
        Some(quarantine) => quarantine.objects().map_err(FetchError::Quarantine)?,
        None => repo.objects().clone(),
    };

    // Auto-followed tags: those whose object is here now.
    if auto_tags {
        for remote in &remote_refs {
            let Some(id) = remote.id else { continue };
            if !remote.name.starts_with(b"refs/tags/")
                || remote.name.ends_with(b"^{}")
                || local.contains_key(&remote.name)
                || planned.iter().any(|p| p.local == remote.name)
                || !gix_object::Exists::exists(&objects, &id)
            {
                continue;
            }
            planned.push(Planned {
                remote: remote.name.clone(),
                id,
                local: remote.name.clone(),
                force: false,
            });
        }
    }

    let mut changes: Vec<RefChange> = planned
        .iter()
        .map(|p| decide(p, local.get(&p.local).copied(), &objects))
        .collect();

    if options.prune || options.mirror {
        let remote_names: std::collections::HashSet<&BStr> =
            remote_refs.iter().map(|r| r.name.as_bstr()).collect();
        let mut pruned = BTreeMap::new();
        for (name, id) in &local {
            if planned.iter().any(|p| &p.local == name) {
                continue;
            }
            let gone = refspecs.iter().filter(|s| !s.negative).any(|spec| {
                spec.source_for(name.as_bstr())
                    .is_some_and(|src| !remote_names.contains(src.as_bstr()))
            });
            if gone {
                pruned.insert(name.clone(), *id);
            }
        }
        changes.extend(pruned.into_iter().map(|(name, id)| RefChange {
            remote: None,
            local: name,
            old: Some(id),
            new: None,
            kind: ChangeKind::Pruned,
        }));
    }

    // Every tip that will be visible must be complete before anything moves.
    let tips: Vec<ObjectId> = changes
        .iter()
        .filter(|c| {
            matches!(
                c.kind,
                ChangeKind::New | ChangeKind::FastForward | ChangeKind::Forced
            )
        })
        .filter_map(|c| c.new)
        .chain(fetched.iter().map(|(_, id)| *id))
        .collect();
    if let Some(quarantine) = quarantine {
        let existing: Vec<ObjectId> = local.values().copied().collect();
        ingest::check_connectivity(&objects, &tips, &existing)?;
        quarantine.migrate()?;
    }

    update_refs(repo, &mut changes);
    let head_updated = match (&remote_head, options.mirror) {
        (Some(target), true) => update_head(repo, target.as_bstr()),
        _ => false,
    };
    // Waiters on this repository (`wait-refs`, HTTP watches) learn of it now.
    crate::refs_watch::changed(repo.git_dir());
    if options.mirror {
        match remote_token {
            Some(token) if !changes.iter().any(RefChange::is_rejected) => {
                mirror_token::remember(repo, token.as_bstr());
            }
            // Not all as the remote's: the next update must look.
            _ => mirror_token::forget(repo),
        }
    }

    Ok(FetchOutcome {
        changes,
        fetched,
        remote_head,
        head_updated,
        haves: transfer.haves,
        rounds: transfer.rounds,
        pack_bytes: ingested.as_ref().map_or(0, |o| o.bytes_read),
        pack_objects: ingested
            .as_ref()
            .map_or(0, |o| o.objects.saturating_sub(o.completed_bases)),
        unchanged: false,
    })
}

/// The refspecs a fetch applies: a mirror's, or the given ones plus `--tags`'.
fn effective_refspecs(options: &FetchOptions) -> Vec<Refspec> {
    let mirror = Refspec {
        force: true,
        negative: false,
        src: "refs/*".into(),
        dst: Some("refs/*".into()),
    };
    let mut refspecs = if options.mirror {
        vec![mirror]
    } else {
        options.refspecs.clone()
    };
    if options.tags == TagFollowing::All && !options.mirror {
        refspecs.push(Refspec {
            force: false,
            negative: false,
            src: "refs/tags/*".into(),
            dst: Some("refs/tags/*".into()),
        });
    }
    refspecs
}

/// Which remote refs go where: planned local updates, and refs fetched without a
/// destination. A remote ref matching a negative refspec is left out; a local ref named by
/// two refspecs takes the first.
fn plan(
    refspecs: &[Refspec],
    remote_refs: &[RemoteRef],
) -> (Vec<Planned>, Vec<(BString, ObjectId)>) {
    let mut planned: Vec<Planned> = Vec::new();
    let mut fetched = Vec::new();
    for remote in remote_refs {
        let Some(id) = remote.id else { continue };
        if refspecs
            .iter()
            .any(|spec| spec.negative && spec.matches(remote.name.as_bstr()))
        {
            continue;
        }
        for spec in refspecs.iter().filter(|spec| !spec.negative) {
            match spec.destination(remote.name.as_bstr()) {
                None => {}
                Some(None) if !fetched.iter().any(|(name, _)| name == &remote.name) => {
                    fetched.push((remote.name.clone(), id));
                }
                Some(Some(local)) if !planned.iter().any(|p| p.local == local) => {
                    planned.push(Planned {
                        remote: remote.name.clone(),
                        id,
                        local,
                        force: spec.force,
                    });
                }
                Some(_) => {}
            }
        }
    }
    (planned, fetched)
}

/// git's `update_local_ref()` rules, decided before anything moves.
fn decide(planned: &Planned, old: Option<ObjectId>, objects: &gix_odb::Handle) -> RefChange {
    let kind = match old {
        Some(old) if old == planned.id => ChangeKind::UpToDate,
        None => ChangeKind::New,
        Some(_) if planned.local.starts_with(b"refs/tags/") && !planned.force => {
            ChangeKind::Rejected(Rejection::WouldClobberTag)
        }
        Some(old) => {
            let forward = packgate_negotiate::reachable_from(objects, &[planned.id], &[old])
                .map(|found| found.contains(&old))
                .unwrap_or(false);
            if forward {
                ChangeKind::FastForward
            } else if planned.force {
                ChangeKind::Forced
            } else {
                ChangeKind::Rejected(Rejection::NonFastForward)
            }
        }
    };
    RefChange {
        remote: Some(planned.remote.clone()),
        local: planned.local.clone(),
        old,
        new: Some(planned.id),
        kind,
    }
}

/// Apply the changes, one compare-and-swap transaction per ref (as git's fetch without
/// `--atomic`); a failed one becomes a rejection.
fn update_refs(repo: &Repository, changes: &mut [RefChange]) {
    let mut store = repo.ref_store();
    store.write_reflog = write_reflog(repo);
    let committer = committer(repo);
    let mut time = gix_date::parse::TimeBuf::default();
    let committer = committer.to_ref(&mut time);
    for change in changes.iter_mut() {
        let (message, edit) = match (&change.kind, change.new) {
            (ChangeKind::New, Some(new)) => ("storing head", update(change.old, new)),
            (ChangeKind::FastForward, Some(new)) => ("fast-forward", update(change.old, new)),
            (ChangeKind::Forced, Some(new)) => ("forced-update", update(change.old, new)),
            (ChangeKind::Pruned, _) => (
                "prune",
                Change::Delete {
                    expected: change.old.map_or(PreviousValue::MustExist, |old| {
                        PreviousValue::MustExistAndMatch(Target::Object(old))
                    }),
                    log: RefLog::AndReference,
                },
            ),
            _ => continue,
        };
        let edit = match (FullName::try_from(change.local.clone()), edit) {
            (Ok(name), Change::Update { expected, new, .. }) => RefEdit {
                change: Change::Update {
                    log: LogChange {
                        mode: RefLog::AndReference,
                        force_create_reflog: false,
                        message: format!("fetch: {message}").into(),
                    },
                    expected,
                    new,
                },
                name,
                deref: false,
            },
            (Ok(name), change) => RefEdit {
                change,
                name,
                deref: false,
            },
            (Err(err), _) => {
                change.kind =
                    ChangeKind::Rejected(Rejection::Failed(format!("invalid ref name: {err}")));
                continue;
            }
        };
        let result = store
            .transaction()
            .prepare(vec![edit], lock_timeout(), lock_timeout())
            .and_then(|prepared| prepared.commit(committer));
        if let Err(err) = result {
            tracing::debug!(%err, r#ref = %change.local, "ref update failed");
            change.kind = ChangeKind::Rejected(Rejection::Failed(format!(
                "unable to update local ref: {err}"
            )));
        }
    }
}

fn update(old: Option<ObjectId>, new: ObjectId) -> Change {
    Change::Update {
        log: LogChange::default(),
        expected: match old {
            Some(old) => PreviousValue::MustExistAndMatch(Target::Object(old)),
            None => PreviousValue::MustNotExist,
        },
        new: Target::Object(new),
    }
}

/// Point `HEAD` at `target` (a mirror following the remote); whether it changed.
fn update_head(repo: &Repository, target: &BStr) -> bool {
    let store = repo.ref_store();
    let Ok(target) = FullName::try_from(target.to_owned()) else {
        return false;
    };
    match store.try_find("HEAD") {
        Ok(Some(gix_ref::Reference {
            target: Target::Symbolic(current),
            ..
        })) if current == target => return false,
        _ => {}
    }
    let Ok(name) = FullName::try_from("HEAD") else {
        return false;
    };
    let edit = RefEdit {
        change: Change::Update {
            log: LogChange::default(),
            expected: PreviousValue::Any,
            new: Target::Symbolic(target),
        },
        name,
        deref: false,
    };
    let mut time = gix_date::parse::TimeBuf::default();
    let committer = committer(repo);
    let result = store
        .transaction()
        .prepare(vec![edit], lock_timeout(), lock_timeout())
        .and_then(|prepared| prepared.commit(committer.to_ref(&mut time)));
    match result {
        Ok(_) => true,
        Err(err) => {
            tracing::warn!(%err, "could not update HEAD");
            false
        }
    }
}

fn lock_timeout() -> gix_lock::acquire::Fail {
    gix_lock::acquire::Fail::AfterDurationWithBackoff(std::time::Duration::from_secs(1))
}

/// git's `core.logAllRefUpdates` with its default (off in a bare repository).
fn write_reflog(repo: &Repository) -> gix_ref::store::WriteReflog {
    use gix_ref::store::WriteReflog;
    let config = repo.config();
    let bare = config.boolean("core.bare").ok().flatten().unwrap_or(false);
    match config.string("core.logAllRefUpdates") {
        Some(value) if value.eq_ignore_ascii_case(b"always") => WriteReflog::Always,
        Some(value) => match gix_config::Boolean::try_from(value.as_bstr()) {
            Ok(boolean) if boolean.0 => WriteReflog::Normal,
            _ => WriteReflog::Disable,
        },
        None if bare => WriteReflog::Disable,
        None => WriteReflog::Normal,
    }
}

/// Who the reflog names: `user.name`/`user.email`, or packgate.
fn committer(repo: &Repository) -> gix_actor::Signature {
    let config = repo.config();
    let name = config
        .string("user.name")
        .unwrap_or_else(|| "packgate".into());
    let email = config
        .string("user.email")
        .unwrap_or_else(|| "packgate@localhost".into());
    gix_actor::Signature {
        name,
        email,
        time: gix_date::Time::now_local_or_utc(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(name: &str, byte: u8) -> RemoteRef {
        RemoteRef {
            name: name.into(),
            id: Some(ObjectId::from_bytes_or_panic(&[byte; 20])),
            symref_target: None,
        }
    }

    #[test]
    fn plan_maps_excludes_and_keeps_the_first_destination() {
        let specs: Vec<Refspec> = [
            "+refs/heads/*:refs/remotes/o/*",
            "^refs/heads/secret",
            "refs/heads/main:refs/remotes/o/main",
            "refs/tags/v1",
        ]
        .iter()
        .map(|s| Refspec::parse(s).unwrap())
        .collect();
        let refs = [
            remote("refs/heads/main", 1),
            remote("refs/heads/secret", 2),
            remote("refs/tags/v1", 3),
        ];
        let (planned, fetched) = plan(&specs, &refs);
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].local, "refs/remotes/o/main");
        assert!(planned[0].force);
        assert_eq!(
            fetched,
            vec![(BString::from("refs/tags/v1"), refs[2].id.unwrap())]
        );
    }
}
