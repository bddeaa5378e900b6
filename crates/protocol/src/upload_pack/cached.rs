//! Fetches through the process's [`PackCache`]: the key of a request's pack, the generation
//! on a thread of its own, and each client's copy of the spool, framed for it.
//!
//! The key covers everything that changes the pack's bytes: the repository (its canonical
//! git directory and namespace) and its upload-pack settings, the wants and common haves
//! (with a shallow request's extra wants and haves), the shallow grafts, the resolved filter,
//! `thin-pack`, `ofs-delta`, `include-tag`, and a digest of every ref with `HEAD`, so that a
//! ref update changes the key and nothing is ever served stale. Progress and sideband
//! framing are left out: each reader frames the spool for its own client.

use std::{io::Write, sync::Arc};

use gix_hash::ObjectId;
use packgate_negotiate::shallow::ShallowUpdate;
use sha2::{Digest as _, Sha256};

use super::{
    fetch::{produce_pack, Arguments, PackStream},
    ServeError, UploadPack,
};
use crate::pack_cache::{Event, Key, Lookup, PackCache, Spool, SpoolReader, LOG_TARGET};

/// Serve the pack through the cache when there is one and the request may use it:
/// `None` when the caller generates the pack itself.
pub(super) fn serve<W: Write>(
    upload_pack: &UploadPack<'_>,
    arguments: &Arguments,
    common: &[ObjectId],
    shallow: &ShallowUpdate,
    out: &mut PackStream<W>,
) -> Option<Result<(), ServeError>> {
    let cache = upload_pack.pack_cache.as_ref()?;
    // Packs by URI depend on what the client downloads by itself: rare, not shared.
    if !arguments.uri_protocols.is_empty() {
        return None;
    }
    let key = match key(upload_pack, arguments, common, shallow) {
        Ok(key) => key,
        Err(err) => {
            // The pack's own generation reports what is wrong with the repository.
            tracing::debug!(target: LOG_TARGET, %err, "no cache key, generating alone");
            return None;
        }
    };
    let spool = match cache.lookup(key) {
        Lookup::Read(spool) => spool,
        Lookup::Generate(spool, writer) => {
            generate(
                cache,
                key,
                upload_pack,
                arguments,
                common,
                shallow,
                &spool,
                writer,
            );
            spool
        }
    };
    Some(copy(spool, arguments.no_progress, out))
}

/// Start the generation of `key`'s pack on a thread of its own, so that no client paces it.
#[allow(clippy::too_many_arguments)]
fn generate(
    cache: &PackCache,
    key: Key,
    upload_pack: &UploadPack<'_>,
    arguments: &Arguments,
    common: &[ObjectId],
    shallow: &ShallowUpdate,
    spool: &Arc<Spool>,
    writer: crate::pack_cache::SpoolWriter,
) {
    let repo = upload_pack.repo.clone();
    let config = upload_pack.config.clone();
    let session_id = upload_pack.session_id.clone();
    // The generation takes its turn in the budget as the client that started it.
    let (budget, client) = (upload_pack.budget.clone(), upload_pack.client.clone());
    // Progress is recorded for every reader; each leaves it out or not.
    let arguments = Arguments {
        no_progress: false,
        ..arguments.clone()
    };
    let common = common.to_vec();
    let shallow = shallow.clone();
    let (thread_cache, thread_spool) = (cache.clone(), spool.clone());
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("pack-cache".into())
        .spawn(move || {
            let Ok(writer) = receiver.recv() else { return };
            let upload_pack = UploadPack {
                repo: &repo,
                config,
                session_id,
                pack_cache: None,
                budget,
                client,
                stateful: false,
            };
            // Ends the spool should the generation panic: no reader waits forever.
            let ender = Ender {
                cache: thread_cache,
                key,
                spool: thread_spool,
            };
            let result = produce_pack(
                &upload_pack,
                &arguments,
                &common,
                &shallow,
                PackStream::<std::io::Sink>::Spool(writer),
                // Other clients may join while it waits for the budget: it waits for them
                // too, whether or not the first is still there.
                &|| false,
            );
            let outcome = match result {
                Ok(()) => Ok(()),
                Err(ServeError::Failed(message)) => Err(message),
                Err(err) => Err(format!("could not write the pack: {err}")),
            };
            ender.spool.end(outcome);
            drop(ender);
        });
    match spawned {
        Ok(_) => {
            // The thread owns the writer from here; it cannot have gone yet.
            let _ = sender.send(writer);
        }
        Err(err) => {
            writer.end(Err(format!("could not start the pack generation: {err}")));
            cache.finish(key, spool);
        }
    }
}

/// Ends its spool in an error when dropped, unless it has ended already (a generation
/// that panicked), then tells the cache the generation is over.
struct Ender {
    cache: PackCache,
    key: Key,
    spool: Arc<Spool>,
}

impl Drop for Ender {
    fn drop(&mut self) {
        self.spool.end(Err("the pack generation stopped".into()));
        self.cache.finish(self.key, &self.spool);
    }
}

/// Copy the spool to one client: the bytes in its framing, progress unless it asked for
/// none, the generation's error in band 3 as without the cache.
fn copy<W: Write>(
    spool: Arc<Spool>,
    no_progress: bool,
    out: &mut PackStream<W>,
) -> Result<(), ServeError> {
    let mut reader = SpoolReader::new(spool);
    let mut buf = vec![0; out.max_payload_length()];
    loop {
        match reader.next(&mut buf)? {
            Event::Progress(message) => {
                if !no_progress {
                    out.progress(message.as_bytes())?;
                }
            }
            Event::Data(n) => out.write_all(&buf[..n]).map_err(|_| {
                ServeError::Io(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "the client stopped reading the pack",
                ))
            })?,
            Event::End(Ok(())) => {
                out.flush()?;
                return Ok(());
            }
            Event::End(Err(message)) => {
                tracing::warn!(%message, "fetch failed while sending the pack");
                let _ = out.error(format!("upload-pack: {message}\n").as_bytes());
                return Err(ServeError::Failed(message));
            }
        }
    }
}

/// The digest of everything that changes the bytes of the pack for this request.
fn key(
    upload_pack: &UploadPack<'_>,
    arguments: &Arguments,
    common: &[ObjectId],
    shallow: &ShallowUpdate,
) -> Result<Key, crate::repository::RefsError> {
    let repo = upload_pack.repo;
    let mut hasher = Sha256::new();
    let mut field = |name: &str, value: &[u8]| {
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value);
    };
    field("repository", repo.git_dir().as_os_str().as_encoded_bytes());
    let namespace = repo.namespace().map(|ns| format!("{ns:?}"));
    field("namespace", namespace.unwrap_or_default().as_bytes());
    field("config", format!("{:?}", upload_pack.config).as_bytes());
    let ids = |ids: &mut dyn Iterator<Item = &ObjectId>| -> Vec<u8> {
        let mut ids: Vec<&ObjectId> = ids.collect();
        ids.sort_unstable();
        ids.dedup();
        ids.iter().flat_map(|id| id.as_bytes().to_vec()).collect()
    };
    field(
        "wants",
        &ids(&mut arguments.wants.iter().chain(&shallow.extra_wants)),
    );
    field(
        "haves",
        &ids(&mut common.iter().chain(&shallow.extra_haves)),
    );
    field("grafts", &ids(&mut shallow.grafts.iter()));
    field("filter", format!("{:?}", arguments.filter).as_bytes());
    field(
        "options",
        &[
            u8::from(arguments.thin_pack),
            u8::from(arguments.ofs_delta),
            u8::from(arguments.include_tag),
        ],
    );
    // One pass over the refs: include-tag and the hidden-ref rules read them.
    match repo.head()? {
        crate::repository::Head::Born(head) => {
            field("HEAD", &head.name);
            field("HEAD id", head.id.as_bytes());
        }
        _ => field("HEAD", b""),
    }
    repo.visit_refs(None, |record| {
        field("ref", record.name);
        field("id", record.id.as_bytes());
        Ok::<_, crate::repository::RefsError>(())
    })?;
    Ok(hasher.finalize().into())
}
