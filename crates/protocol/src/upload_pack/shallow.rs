//! Shallow fetches, shared by v2 and v0/v1: the client's `shallow`/`deepen*` lines checked
//! against the repository (git's `process_shallow()`, `process_deepen_not()`), the boundary
//! (`packgate_negotiate::shallow`) and the lines that announce it.

use std::io::Write;

use gix_hash::ObjectId;
use gix_hashtable::HashSet;
use packgate_negotiate::shallow::{Deepen, ShallowRequest, ShallowUpdate, INFINITE_DEPTH};
use packgate_wire::{pkt_line::PacketWriter, shallow::ShallowArguments};

use super::{fetch, UploadPack};

/// Which protocol announces the boundary: v2's `shallow-info` section follows git's
/// `send_shallow_info()`, v0's lines after the wants its `receive_needs()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    V0,
    V2,
}

/// The shallow part of a request, checked against the repository.
#[derive(Debug)]
pub(super) struct Shallow {
    arguments: ShallowArguments,
    /// The client's shallow commits that the repository has.
    client: Vec<ObjectId>,
    /// What the `deepen-not` refs name.
    not: Vec<ObjectId>,
    /// `$GIT_DIR/shallow`.
    repository: Vec<ObjectId>,
}

/// The boundary to announce (or not) and to build the pack with.
#[derive(Debug)]
pub(super) struct Planned {
    pub(super) update: ShallowUpdate,
    /// Whether `shallow`/`unshallow` lines (v0) or the `shallow-info` section (v2) are sent.
    pub(super) announce: bool,
}

impl Shallow {
    /// Check the request's shallow lines: a shallow commit the repository lacks is ignored,
    /// one that is not a commit is refused; each `deepen-not` must name exactly one ref.
    /// Errors are the `ERR` messages, git's words.
    pub(super) fn check(
        upload_pack: &UploadPack<'_>,
        arguments: &ShallowArguments,
    ) -> Result<Shallow, String> {
        let repo = upload_pack.repo;
        let mut client = Vec::with_capacity(arguments.shallows.len());
        for id in &arguments.shallows {
            let header = gix_object::FindHeader::try_header(repo.objects(), id)
                .map_err(|err| format!("upload-pack: could not read object {id}: {err}"))?;
            match header.map(|header| header.kind) {
                None => continue,
                Some(gix_object::Kind::Commit) => client.push(*id),
                Some(_) => return Err(format!("invalid shallow object {id}")),
            }
        }
        let mut not = Vec::with_capacity(arguments.not.len());
        for name in &arguments.not {
            let (id, count) = repo
                .expand_ref(name)
                .map_err(|err| format!("upload-pack: {err}"))?;
            match id {
                Some(id) if count == 1 => {
                    if !not.contains(&id) {
                        not.push(id);
                    }
                }
                _ => {
                    return Err(format!(
                        "git upload-pack: ambiguous deepen-not: deepen-not {}",
                        bstr::ByteSlice::as_bstr(name.as_slice())
                    ))
                }
            }
        }
        let repository = repo
            .shallow_commits()
            .map_err(|err| format!("upload-pack: {err}"))?;
        Ok(Shallow {
            arguments: arguments.clone(),
            client,
            not,
            repository,
        })
    }

    /// What negotiation treats as parentless: the repository's shallow commits and the
    /// client's.
    pub(super) fn negotiation_grafts(&self) -> HashSet<ObjectId> {
        self.repository
            .iter()
            .chain(&self.client)
            .copied()
            .collect()
    }

    /// git's `send_shallow_list()` for `wants` (and, in v2 from a shallow repository without
    /// any deepening asked for, `deepen(INFINITE_DEPTH)`).
    pub(super) fn plan(
        &self,
        upload_pack: &UploadPack<'_>,
        wants: &[ObjectId],
        protocol: Protocol,
    ) -> Result<Planned, String> {
        let arguments = &self.arguments;
        let deepen_requested = arguments.depth > 0 || arguments.rev_list();
        let announce = match protocol {
            Protocol::V0 => deepen_requested,
            Protocol::V2 => !arguments.is_empty() || !self.repository.is_empty(),
        };
        if arguments.depth > 0 && arguments.rev_list() {
            return Err(
                "git upload-pack: deepen and deepen-since (or deepen-not) cannot be used together"
                    .into(),
            );
        }
        let deepen = if arguments.depth > 0 {
            Deepen::Depth {
                depth: arguments.depth,
                relative_to: arguments
                    .relative
                    .then(|| self.reachable_client_shallows(upload_pack))
                    .transpose()?,
            }
        } else if arguments.rev_list() {
            Deepen::RevList {
                since: arguments.since,
                not: self.not.clone(),
            }
        } else if announce && !self.repository.is_empty() {
            Deepen::Depth {
                depth: INFINITE_DEPTH,
                relative_to: None,
            }
        } else {
            Deepen::None
        };
        let update = packgate_negotiate::shallow::update_shallow(
            upload_pack.repo.objects(),
            &ShallowRequest {
                wants,
                client_shallows: &self.client,
                repository_shallows: &self.repository,
                deepen: &deepen,
            },
        )
        .map_err(|err| match err {
            packgate_negotiate::shallow::ShallowError::Read(err) => format!("upload-pack: {err}"),
            other => other.to_string(),
        })?;
        Ok(Planned { update, announce })
    }

    /// The client's shallow commits reachable from the refs it may see (git's
    /// `get_reachable_list()`): where `deepen-relative` counts from.
    fn reachable_client_shallows(
        &self,
        upload_pack: &UploadPack<'_>,
    ) -> Result<Vec<ObjectId>, String> {
        let tips = fetch::visible_tips(upload_pack).map_err(|err| format!("upload-pack: {err}"))?;
        let reachable =
            packgate_negotiate::reachable_from(upload_pack.repo.objects(), &tips, &self.client)
                .map_err(|err| format!("upload-pack: {err}"))?;
        Ok(self
            .client
            .iter()
            .filter(|id| reachable.contains(*id))
            .copied()
            .collect())
    }
}

/// The `shallow <id>` and `unshallow <id>` lines of `update`.
pub(super) fn write_lines<W: Write>(
    update: &ShallowUpdate,
    out: &mut PacketWriter<W>,
) -> Result<(), packgate_wire::pkt_line::WriteError> {
    // Without a LF, byte for byte as git writes them.
    for id in &update.shallow {
        out.write_data(format!("shallow {id}").as_bytes())?;
    }
    for id in &update.unshallow {
        out.write_data(format!("unshallow {id}").as_bytes())?;
    }
    Ok(())
}
