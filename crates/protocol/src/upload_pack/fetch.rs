//! The `fetch` command: wants and haves in, acknowledgments and a pack out.

use std::{io::Write, sync::atomic::AtomicBool};

use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;
use gix_hashtable::HashSet;
use packgate_wire::{
    pkt_line::PacketWriter,
    sideband::{SidebandMode, SidebandWriter},
};

use packgate_negotiate::shallow::ShallowUpdate;
use packgate_wire::shallow::{parse_shallow_line, ShallowArguments};

use super::{
    reject,
    shallow::{self, Protocol, Shallow},
    Flow, ServeError, UploadPack,
};
use crate::keepalive;

/// The arguments of one `fetch` request (and of a v0 request, from its capabilities).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Arguments {
    pub(super) wants: Vec<ObjectId>,
    pub(super) haves: Vec<ObjectId>,
    pub(super) done: bool,
    pub(super) thin_pack: bool,
    pub(super) no_progress: bool,
    pub(super) include_tag: bool,
    pub(super) ofs_delta: bool,
    pub(super) shallow: ShallowArguments,
}

fn parse(arguments: &[BString]) -> Result<Arguments, String> {
    let mut parsed = Arguments::default();
    for argument in arguments {
        let line = argument.as_slice();
        if let Some(shallow) = parse_shallow_line(line).map_err(|err| err.to_string())? {
            parsed.shallow.add(shallow);
        } else if line == b"deepen-relative" {
            parsed.shallow.relative = true;
        } else if let Some(hex) = line.strip_prefix(b"want ") {
            parsed.wants.push(parse_id(hex)?);
        } else if let Some(hex) = line.strip_prefix(b"have ") {
            parsed.haves.push(parse_id(hex)?);
        } else {
            match line {
                b"done" => parsed.done = true,
                b"thin-pack" => parsed.thin_pack = true,
                b"no-progress" => parsed.no_progress = true,
                b"include-tag" => parsed.include_tag = true,
                b"ofs-delta" => parsed.ofs_delta = true,
                _ => return Err(format!("unexpected line: '{}'", argument.as_bstr())),
            }
        }
    }
    Ok(parsed)
}

fn parse_id(hex: &[u8]) -> Result<ObjectId, String> {
    ObjectId::from_hex(hex).map_err(|_| {
        format!(
            "protocol error, expected to get object ID, not '{}'",
            hex.as_bstr()
        )
    })
}

pub(super) fn handle<W: Write>(
    upload_pack: &UploadPack<'_>,
    arguments: &[BString],
    out: &mut PacketWriter<W>,
) -> Result<Flow, ServeError> {
    let arguments = match parse(arguments) {
        Ok(arguments) => arguments,
        Err(message) => return Err(reject(out, message)),
    };
    let shallow = match Shallow::check(upload_pack, &arguments.shallow) {
        Ok(shallow) => shallow,
        Err(message) => return Err(reject(out, message)),
    };
    let restrict = upload_pack.config.restrict_v2_wants;
    if let Err(message) = check_wants(upload_pack, &arguments.wants, restrict, false) {
        return Err(reject(out, message));
    }
    if arguments.wants.is_empty() {
        // Nothing asked for, nothing to send: an empty response.
        out.flush_pkt()?;
        return Ok(Flow::Continue);
    }
    let repo = upload_pack.repo;
    let mut negotiation = packgate_negotiate::Negotiation::with_grafts(
        arguments.wants.clone(),
        shallow.negotiation_grafts(),
    );
    if !arguments.haves.is_empty() {
        let acknowledgments = match negotiation.process_haves(repo.objects(), &arguments.haves) {
            Ok(acknowledgments) => acknowledgments,
            Err(err) => return Err(reject(out, format!("upload-pack: {err}"))),
        };
        if !arguments.done {
            out.write_text("acknowledgments")?;
            if acknowledgments.common.is_empty() {
                out.write_text("NAK")?;
            }
            for id in &acknowledgments.common {
                out.write_text(format!("ACK {id}"))?;
            }
            if !acknowledgments.ready {
                // The client goes on negotiating with another request.
                out.flush_pkt()?;
                return Ok(Flow::Continue);
            }
            out.write_text("ready")?;
            out.delim()?;
        }
    }
    // git's `send_shallow_info()`.
    let planned = match shallow.plan(upload_pack, &arguments.wants, Protocol::V2) {
        Ok(planned) => planned,
        Err(message) => return Err(reject(out, message)),
    };
    if planned.announce {
        out.write_text("shallow-info")?;
        shallow::write_lines(&planned.update, out)?;
        out.delim()?;
    }
    out.write_text("packfile")?;
    send_pack(
        upload_pack,
        &arguments,
        negotiation.common(),
        &planned.update,
        out,
        Some(SidebandMode::SideBand64k),
    )?;
    Ok(Flow::Continue)
}

/// The objects of the refs a client may see, tags also peeled: where its wants may be
/// reachable from.
pub(super) fn visible_tips(
    upload_pack: &UploadPack<'_>,
) -> Result<Vec<ObjectId>, crate::repository::RefsError> {
    let tips = Tips::collect(upload_pack)?;
    let mut out: Vec<ObjectId> = tips.visible.iter().copied().collect();
    for id in &tips.visible {
        if let Some(peeled) = upload_pack.repo.peel_tag(id)? {
            out.push(peeled);
        }
    }
    Ok(out)
}

/// A want must name an object the repository has: git 2.47's only rule for protocol v2.
/// With `restrict` (v0/v1, or v2 under `packgate.restrictV2Wants`) it must also name a
/// visible ref tip unless the `uploadpack.allow*SHA1InWant` settings allow more, git's rules
/// for v0/v1; over a `stateless` transport git also accepts commits reachable from the
/// visible tips (`check_non_tip()`), since the client may ask for tips of an earlier
/// advertisement.
pub(super) fn check_wants(
    upload_pack: &UploadPack<'_>,
    wants: &[ObjectId],
    restrict: bool,
    stateless: bool,
) -> Result<(), String> {
    let not_our_ref = |id: &ObjectId| format!("upload-pack: not our ref {id}");
    let repo = upload_pack.repo;
    if let Some(missing) = wants.iter().find(|id| !repo.has_object(id)) {
        return Err(not_our_ref(missing));
    }
    let config = &upload_pack.config;
    if wants.is_empty() || !restrict || config.allow_any_sha1_in_want {
        return Ok(());
    }
    let tips = Tips::collect(upload_pack).map_err(|err| format!("upload-pack: {err}"))?;
    let mut unresolved: Vec<ObjectId> = wants
        .iter()
        .filter(|id| {
            let tip = tips.visible.contains(*id)
                || (config.allow_tip_sha1_in_want && tips.hidden.contains(*id));
            !tip
        })
        .copied()
        .collect();
    if unresolved.is_empty() {
        return Ok(());
    }
    // Peeled tags are tips too; peel only when a want was not a ref value itself.
    let peeled: HashSet<ObjectId> = tips
        .visible
        .iter()
        .filter_map(|id| repo.peel_tag(id).ok().flatten())
        .collect();
    unresolved.retain(|id| !peeled.contains(id));
    if unresolved.is_empty() {
        return Ok(());
    }
    if config.allow_reachable_sha1_in_want || stateless {
        let starts: Vec<ObjectId> = tips.visible.iter().chain(peeled.iter()).copied().collect();
        let reachable = packgate_negotiate::reachable_from(repo.objects(), &starts, &unresolved)
            .map_err(|err| format!("upload-pack: {err}"))?;
        unresolved.retain(|id| !reachable.contains(id));
    }
    match unresolved.first() {
        Some(id) => Err(not_our_ref(id)),
        None => Ok(()),
    }
}

/// The object ids that refs point at, split by visibility.
struct Tips {
    visible: HashSet<ObjectId>,
    hidden: HashSet<ObjectId>,
}

impl Tips {
    fn collect(upload_pack: &UploadPack<'_>) -> Result<Self, crate::repository::RefsError> {
        let mut tips = Tips {
            visible: HashSet::default(),
            hidden: HashSet::default(),
        };
        if let crate::repository::Head::Born(head) = upload_pack.repo.head()? {
            tips.add(upload_pack, &head.name, head.id);
        }
        for record in upload_pack.repo.refs(None)? {
            tips.add(upload_pack, &record.name, record.id);
        }
        Ok(tips)
    }

    fn add(&mut self, upload_pack: &UploadPack<'_>, name: &[u8], id: ObjectId) {
        if upload_pack.config.is_hidden(name) {
            self.hidden.insert(id);
        } else {
            self.visible.insert(id);
        }
    }
}

/// Write the packfile section: progress on band 2, the pack on band 1, errors on band 3,
/// then the flush-pkt (without `sideband`, a v0 client's choice: the pack alone). With `uploadpack.keepAlive`, the pack is prepared on a thread of its
/// own while this one sends a keepalive packet whenever the section has been silent for the
/// interval, as git's upload-pack does while pack-objects works.
///
/// `shallow` bounds the pack: its grafts are parentless, its extra wants and haves (the
/// parents and the commits of an unshallowing) join the request's.
pub(super) fn send_pack<W: Write>(
    upload_pack: &UploadPack<'_>,
    arguments: &Arguments,
    common: &[ObjectId],
    shallow: &ShallowUpdate,
    out: &mut PacketWriter<W>,
    sideband: Option<SidebandMode>,
) -> Result<(), ServeError> {
    match upload_pack.config.keepalive {
        // Keepalives are sideband packets: without sideband the pack is all there is.
        Some(interval) if sideband.is_some() => {
            // The repository's object caches stay on this thread; the work gets its own.
            let repo = upload_pack.repo.clone();
            let config = upload_pack.config.clone();
            keepalive::run(out.get_mut(), interval, move |writer| {
                let upload_pack = UploadPack {
                    repo: &repo,
                    config,
                };
                write_pack_section(&upload_pack, arguments, common, shallow, writer, sideband)
            })?;
        }
        _ => write_pack_section(
            upload_pack,
            arguments,
            common,
            shallow,
            out.get_mut(),
            sideband,
        )?,
    }
    if sideband.is_some() {
        out.flush_pkt()?;
    }
    Ok(())
}

/// Where the pack goes: sideband packets, or the stream itself.
enum PackStream<W: Write> {
    Sideband(SidebandWriter<W>),
    Raw(W),
}

impl<W: Write> PackStream<W> {
    /// Progress for the user: band 2, or nowhere without sideband.
    fn progress(&mut self, message: &[u8]) -> std::io::Result<()> {
        match self {
            PackStream::Sideband(sideband) => {
                sideband.progress(message)?;
                sideband.flush()
            }
            PackStream::Raw(_) => Ok(()),
        }
    }

    /// A fatal error for the user: band 3; without sideband the client only sees the
    /// pack end early.
    fn error(&mut self, message: &[u8]) -> std::io::Result<()> {
        match self {
            PackStream::Sideband(sideband) => {
                sideband.error(message)?;
                sideband.flush()
            }
            PackStream::Raw(_) => Ok(()),
        }
    }

    fn max_payload_length(&self) -> usize {
        match self {
            PackStream::Sideband(sideband) => sideband.mode().max_payload_length(),
            PackStream::Raw(_) => SidebandMode::SideBand64k.max_payload_length(),
        }
    }
}

impl<W: Write> Write for PackStream<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            PackStream::Sideband(sideband) => sideband.write(data),
            PackStream::Raw(out) => out.write(data),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            PackStream::Sideband(sideband) => sideband.flush(),
            PackStream::Raw(out) => out.flush(),
        }
    }
}

/// The sideband part of the packfile section.
fn write_pack_section<W: Write>(
    upload_pack: &UploadPack<'_>,
    arguments: &Arguments,
    common: &[ObjectId],
    shallow: &ShallowUpdate,
    out: W,
    mode: Option<SidebandMode>,
) -> Result<(), ServeError> {
    let repo = upload_pack.repo;
    let mut sideband = match mode {
        Some(mode) => PackStream::Sideband(SidebandWriter::new(out, mode)),
        None => PackStream::Raw(out),
    };
    let progress = |sideband: &mut PackStream<W>, message: &str| -> std::io::Result<()> {
        if arguments.no_progress {
            return Ok(());
        }
        sideband.progress(message.as_bytes())
    };
    let fail = |sideband: &mut PackStream<W>, message: String| -> ServeError {
        tracing::warn!(%message, "fetch failed while sending the pack");
        let _ = sideband.error(format!("upload-pack: {message}\n").as_bytes());
        ServeError::Failed(message)
    };
    let interrupt = AtomicBool::new(false);

    progress(&mut sideband, "Enumerating objects: ...\r")?;
    let started = std::time::Instant::now();
    // Walks read trees along delta chains: resolve each chain step once, as git does.
    let reader = packgate_pack::reader::CachingReader::new(
        repo.objects().clone(),
        upload_pack.config.delta_base_cache_limit,
    );
    let mut wants = arguments.wants.clone();
    wants.extend(shallow.extra_wants.iter().copied());
    let mut haves = common.to_vec();
    haves.extend(shallow.extra_haves.iter().copied());
    let common = haves.as_slice();
    let enumeration = match packgate_pack::enumerate::enumerate(
        &reader,
        &wants,
        common,
        &packgate_pack::enumerate::EnumerateOptions {
            thread_limit: upload_pack.config.pack_threads,
            shallow: shallow.grafts.clone(),
            ..Default::default()
        },
        &interrupt,
    ) {
        Ok(enumeration) => enumeration,
        Err(err) => return Err(fail(&mut sideband, err.to_string())),
    };
    let mut objects: Vec<ObjectId> = enumeration.objects().to_vec();
    if arguments.include_tag {
        match tags_to_include(upload_pack, &enumeration) {
            Ok(tags) => objects.extend(tags),
            Err(err) => return Err(fail(&mut sideband, err.to_string())),
        }
    }
    progress(
        &mut sideband,
        &format!("Enumerating objects: {}, done.\n", objects.len()),
    )?;
    tracing::debug!(objects = objects.len(), elapsed = ?started.elapsed(), "enumerated");
    let started = std::time::Instant::now();

    let options = packgate_pack::WriteOptions {
        client_has: arguments.thin_pack.then(|| enumeration.client_has()),
        ofs_delta: arguments.ofs_delta,
        thread_limit: upload_pack.config.pack_threads,
        // `objects` starts with the enumeration's commits, most recent first.
        delta_search: Some(delta_search(
            &objects[..enumeration.counts().commits],
            common,
        )),
    };
    let written = {
        // Fill whole sideband packets instead of sending one per small write.
        let mut buffered =
            std::io::BufWriter::with_capacity(sideband.max_payload_length(), &mut sideband);
        let outcome = packgate_pack::write_pack(
            repo.objects(),
            &objects,
            &options,
            &mut buffered,
            &interrupt,
        );
        buffered.flush().map(|()| outcome)
    };
    let outcome = match written {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(packgate_pack::WriteError::Write(_))) | Err(_) => {
            return Err(ServeError::Io(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client stopped reading the pack",
            )))
        }
        Ok(Err(err)) => return Err(fail(&mut sideband, err.to_string())),
    };
    tracing::debug!(
        objects = outcome.objects,
        deltas = outcome.deltas,
        recompressed = outcome.recompressed_for_thin_pack,
        computed_deltas = outcome.computed_deltas,
        bytes = outcome.bytes,
        elapsed = ?started.elapsed(),
        "pack written"
    );
    progress(
        &mut sideband,
        &format!("Total {} (delta {})\n", outcome.objects, outcome.deltas),
    )?;
    sideband.flush()?;
    Ok(())
}

/// How hard to look for deltas gix-pack can't reuse. Without common commits (a clone) there
/// are no client versions to delta against and the repository's own deltas cover nearly
/// everything: on a 112k-object repository, comparing its newest 100 commits with their
/// parents cost ~10 % of the clone's time for 0.5 % of its size. Search only the newest
/// commits of a clone.
fn delta_search<'a>(
    commits: &'a [ObjectId],
    common: &[ObjectId],
) -> packgate_pack::DeltaSearch<'a> {
    let search = packgate_pack::DeltaSearch::new(commits);
    if common.is_empty() {
        packgate_pack::DeltaSearch {
            max_commits: CLONE_DELTA_SEARCH_COMMITS,
            ..search
        }
    } else {
        search
    }
}

/// How many of a clone's newest commits [`delta_search()`] compares with their parents.
const CLONE_DELTA_SEARCH_COMMITS: usize = 10;

/// `include-tag`: annotated tags under `refs/tags/` whose target is being sent, but which
/// are not themselves, together with the tags they point through.
fn tags_to_include(
    upload_pack: &UploadPack<'_>,
    enumeration: &packgate_pack::enumerate::Enumeration,
) -> Result<Vec<ObjectId>, crate::repository::RefsError> {
    use gix_object::Find;
    let repo = upload_pack.repo;
    let mut added: HashSet<ObjectId> = HashSet::default();
    let mut out = Vec::new();
    let prefixes = [crate::refname::RefPrefix::new("refs/tags/")];
    let mut buf = Vec::new();
    for record in repo.refs(Some(&prefixes))? {
        if upload_pack.config.is_hidden(&record.name) || enumeration.contains(&record.id) {
            continue;
        }
        let Some(peeled) = repo.peel_tag(&record.id)? else {
            continue;
        };
        if !enumeration.contains(&peeled) {
            continue;
        }
        // Walk the chain of tags down to the peeled object, adding each tag not sent yet.
        let mut current = record.id;
        while current != peeled && !enumeration.contains(&current) && added.insert(current) {
            out.push(current);
            let data = repo
                .objects()
                .try_find(&current, &mut buf)
                .map_err(|source| crate::repository::RefsError::Object {
                    id: current,
                    source,
                })?;
            let Some(data) = data.filter(|d| d.kind == gix_object::Kind::Tag) else {
                break;
            };
            current = gix_object::TagRefIter::from_bytes(data.data, gix_hash::Kind::Sha1)
                .target_id()
                .map_err(|source| crate::repository::RefsError::Object {
                    id: current,
                    source,
                })?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[&str], expected: Result<Arguments, &str>) {
        let input: Vec<BString> = input.iter().map(|s| BString::from(*s)).collect();
        assert_eq!(
            parse(&input),
            expected.map_err(str::to_owned),
            "input: {input:?}"
        );
    }

    #[test]
    fn arguments() {
        let id = "0123456789012345678901234567890123456789";
        let oid = ObjectId::from_hex(id.as_bytes()).unwrap();
        check(&[], Ok(Arguments::default()));
        check(
            &[
                &format!("want {id}"),
                &format!("have {id}"),
                "done",
                "thin-pack",
                "no-progress",
                "include-tag",
                "ofs-delta",
            ],
            Ok(Arguments {
                wants: vec![oid],
                haves: vec![oid],
                done: true,
                thin_pack: true,
                no_progress: true,
                include_tag: true,
                ofs_delta: true,
                shallow: ShallowArguments::default(),
            }),
        );
        check(
            &["want 123"],
            Err("protocol error, expected to get object ID, not '123'"),
        );
        check(
            &[
                &format!("shallow {id}"),
                "deepen 3",
                "deepen-relative",
                "deepen-since 5",
                "deepen-not main",
            ],
            Ok(Arguments {
                shallow: ShallowArguments {
                    shallows: vec![oid],
                    depth: 3,
                    since: Some(5),
                    not: vec!["main".into()],
                    relative: true,
                },
                ..Arguments::default()
            }),
        );
        check(&["deepen 0"], Err("Invalid deepen: deepen 0"));
        check(&["deepen -1"], Err("Invalid deepen: deepen -1"));
        check(
            &["deepen-since x"],
            Err("Invalid deepen-since: deepen-since x"),
        );
        check(
            &["filter blob:none"],
            Err("unexpected line: 'filter blob:none'"),
        );
        check(&["shallow 0123"], Err("invalid shallow line: shallow 0123"));
    }
}
