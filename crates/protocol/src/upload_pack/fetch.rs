//! The `fetch` command: wants and haves in, acknowledgments and a pack out.

use std::{io::Write, sync::atomic::AtomicBool};

use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;
use gix_hashtable::HashSet;
use packgate_wire::{
    pkt_line::PacketWriter,
    sideband::{Band, SidebandMode, SidebandWriter},
};

use packgate_negotiate::shallow::ShallowUpdate;
use packgate_pack::filter::{Filter, FilterSpec};
use packgate_wire::shallow::{parse_shallow_line, ShallowArguments};

use super::{
    shallow::{Protocol, Shallow},
    Flow, Reply, ServeError, UploadPack,
};
use crate::keepalive;

/// The arguments of one `fetch` request (and of a v0 request, from its capabilities).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Arguments {
    pub(super) wants: Vec<ObjectId>,
    /// `want-ref`s in the order asked for, with what each ref pointed at; their objects are
    /// in `wants` too.
    pub(super) want_refs: Vec<(BString, ObjectId)>,
    pub(super) haves: Vec<ObjectId>,
    /// Whether any `have` line came (git's `seen_haves`).
    pub(super) seen_haves: bool,
    pub(super) done: bool,
    pub(super) wait_for_done: bool,
    pub(super) sideband_all: bool,
    /// `packfile-uris <protocol>,…`: the URI schemes the client downloads packs over.
    pub(super) uri_protocols: Vec<BString>,
    pub(super) thin_pack: bool,
    pub(super) no_progress: bool,
    pub(super) include_tag: bool,
    pub(super) ofs_delta: bool,
    /// `filter <spec>`, when `uploadpack.allowFilter` lets the client send one.
    pub(super) filter_spec: Option<FilterSpec>,
    /// The filter to enumerate with: `filter_spec` resolved against the repository.
    pub(super) filter: Option<Filter>,
    pub(super) shallow: ShallowArguments,
}

/// Finds the object a visible ref points at: `None` when the ref is hidden or unknown.
pub(super) type ResolveRef<'a> = &'a dyn Fn(&[u8]) -> Result<Option<ObjectId>, String>;

/// What `fetch` may take beyond the basics, from the configuration, and how a `want-ref`
/// finds its ref.
pub(super) struct Allowed<'a> {
    pub(super) ref_in_want: bool,
    pub(super) sideband_all: bool,
    pub(super) packfile_uris: bool,
    /// With `uploadpack.allowFilter`: the `uploadpackfilter.*` policy a `filter` line is
    /// checked against.
    pub(super) filter: Option<&'a crate::config::FilterPolicy>,
    pub(super) resolve_ref: ResolveRef<'a>,
}

/// A request git refuses, and whether `sideband-all` had been asked for by then (the error
/// then goes in band 3, as git's writer switches to sideband when it reads that line).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ParseError {
    pub(super) message: String,
    pub(super) sideband_all: bool,
}

/// Parse a `filter <spec>` line's spec and check it against the configuration, with git's
/// messages; `seen` is the spec of an earlier line, if any.
pub(super) fn parse_filter(
    policy: &crate::config::FilterPolicy,
    spec: &[u8],
    seen: Option<&FilterSpec>,
) -> Result<FilterSpec, String> {
    if seen.is_some() {
        return Err("multiple filter-specs cannot be combined".into());
    }
    let spec = FilterSpec::parse(spec).map_err(|err| err.to_string())?;
    policy.check(&spec)?;
    Ok(spec)
}

/// The filter `spec` asks for, with its `sparse:oid` blobs read from the repository.
pub(super) fn resolve_filter(
    upload_pack: &UploadPack<'_>,
    spec: Option<&FilterSpec>,
) -> Result<Option<Filter>, String> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    let repo = upload_pack.repo;
    // What names an object that is no blob gets git's other message.
    for sub in spec.all() {
        if let FilterSpec::SparseOid(name) = sub {
            if let Some(id) = repo.sparse_object(name) {
                if repo.sparse_blob(name).is_none() && repo.has_object(&id) {
                    return Err(format!("unable to parse sparse filter data in {id}"));
                }
            }
        }
    }
    spec.resolve(&mut |name| repo.sparse_blob(name))
        .map(Some)
        .map_err(|name| format!("unable to access sparse blob in '{name}'"))
}

fn parse(arguments: &[BString], allowed: &Allowed<'_>) -> Result<Arguments, ParseError> {
    let mut parsed = Arguments::default();
    for argument in arguments {
        let fail = |message: String, parsed: &Arguments| ParseError {
            message,
            sideband_all: parsed.sideband_all,
        };
        let line = argument.as_slice();
        if let Some(shallow) =
            parse_shallow_line(line).map_err(|err| fail(err.to_string(), &parsed))?
        {
            parsed.shallow.add(shallow);
        } else if line == b"deepen-relative" {
            parsed.shallow.relative = true;
        } else if let (Some(policy), Some(spec)) = (allowed.filter, line.strip_prefix(b"filter ")) {
            let spec = parse_filter(policy, spec, parsed.filter_spec.as_ref())
                .map_err(|message| fail(message, &parsed))?;
            parsed.filter_spec = Some(spec);
        } else if let Some(hex) = line.strip_prefix(b"want ") {
            let id = parse_id(hex).map_err(|message| fail(message, &parsed))?;
            parsed.wants.push(id);
        } else if let (true, Some(name)) = (allowed.ref_in_want, line.strip_prefix(b"want-ref ")) {
            let unknown = || format!("unknown ref {}", name.as_bstr());
            let id = match (allowed.resolve_ref)(name) {
                Ok(Some(id)) => id,
                Ok(None) => return Err(fail(unknown(), &parsed)),
                Err(err) => return Err(fail(err, &parsed)),
            };
            if parsed.want_refs.iter().any(|(seen, _)| seen == name) {
                let message = format!("duplicate want-ref {}", name.as_bstr());
                return Err(fail(message, &parsed));
            }
            parsed.want_refs.push((name.into(), id));
            if !parsed.wants.contains(&id) {
                parsed.wants.push(id);
            }
        } else if let (true, Some(protocols)) =
            (allowed.packfile_uris, line.strip_prefix(b"packfile-uris "))
        {
            if !parsed.uri_protocols.is_empty() {
                let message = "multiple packfile-uris lines forbidden".to_owned();
                return Err(fail(message, &parsed));
            }
            parsed.uri_protocols = protocols
                .split(|byte| *byte == b',')
                .map(BString::from)
                .collect();
        } else if let Some(hex) = line.strip_prefix(b"have ") {
            let id = parse_id(hex).map_err(|message| fail(message, &parsed))?;
            parsed.haves.push(id);
            parsed.seen_haves = true;
        } else {
            match line {
                b"done" => parsed.done = true,
                b"wait-for-done" => parsed.wait_for_done = true,
                b"sideband-all" if allowed.sideband_all => parsed.sideband_all = true,
                b"thin-pack" => parsed.thin_pack = true,
                b"no-progress" => parsed.no_progress = true,
                b"include-tag" => parsed.include_tag = true,
                b"ofs-delta" => parsed.ofs_delta = true,
                _ => {
                    let message = format!("unexpected line: '{}'", argument.as_bstr());
                    return Err(fail(message, &parsed));
                }
            }
        }
    }
    // Packs by URI only come with sideband-all, as in git.
    if !parsed.sideband_all {
        parsed.uri_protocols.clear();
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

/// The object a `want-ref` names: a visible ref of exactly that name.
fn resolve_ref(upload_pack: &UploadPack<'_>, name: &[u8]) -> Result<Option<ObjectId>, String> {
    if upload_pack
        .config
        .is_hidden(name, upload_pack.repo.namespace())
    {
        return Ok(None);
    }
    upload_pack
        .repo
        .find_ref(name)
        .map(|found| found.map(|record| record.id))
        .map_err(|err| format!("upload-pack: {err}"))
}

pub(super) fn handle<W: Write>(
    upload_pack: &UploadPack<'_>,
    arguments: &[BString],
    out: &mut PacketWriter<W>,
) -> Result<Flow, ServeError> {
    let config = &upload_pack.config;
    let resolve = |name: &[u8]| resolve_ref(upload_pack, name);
    let allowed = Allowed {
        ref_in_want: config.allow_ref_in_want,
        sideband_all: config.allow_sideband_all,
        packfile_uris: !config.blob_packfile_uris.is_empty()
            || config.blob_packfile_uri_error.is_some(),
        filter: config.allow_filter.then_some(&config.filters),
        resolve_ref: &resolve,
    };
    let arguments = match parse(arguments, &allowed) {
        Ok(arguments) => arguments,
        Err(err) => return Err(Reply::new(out, err.sideband_all).reject(err.message)),
    };
    let mut reply = Reply::new(out, arguments.sideband_all);
    let shallow = match Shallow::check(upload_pack, &arguments.shallow) {
        Ok(shallow) => shallow,
        Err(message) => return Err(reply.reject(message)),
    };
    let restrict = config.restrict_v2_wants;
    if let Err(message) = check_wants(upload_pack, &arguments.wants, restrict, false) {
        return Err(reply.reject(message));
    }
    let mut arguments = arguments;
    match resolve_filter(upload_pack, arguments.filter_spec.as_ref()) {
        Ok(filter) => arguments.filter = filter,
        Err(message) => return Err(reply.reject(message)),
    }
    if !arguments.want_refs.is_empty() {
        tracing::debug!(want_refs = arguments.want_refs.len(), "want-ref");
    }
    if arguments.wants.is_empty() && !arguments.wait_for_done {
        // Nothing asked for, nothing to send: an empty response.
        reply.flush()?;
        return Ok(Flow::Continue);
    }
    let repo = upload_pack.repo;
    let mut negotiation = packgate_negotiate::Negotiation::with_grafts(
        arguments.wants.clone(),
        shallow.negotiation_grafts(),
    );
    negotiation.use_commit_graph(repo.commit_graph());
    if arguments.seen_haves {
        let acknowledgments = match negotiation.process_haves(repo.objects(), &arguments.haves) {
            Ok(acknowledgments) => acknowledgments,
            Err(err) => return Err(reply.reject(format!("upload-pack: {err}"))),
        };
        if !arguments.done {
            reply.text("acknowledgments")?;
            if acknowledgments.common.is_empty() {
                reply.text("NAK")?;
            }
            for id in &acknowledgments.common {
                reply.text(format!("ACK {id}"))?;
            }
            // With wait-for-done the client decides when negotiation ends: never `ready`.
            if arguments.wait_for_done || !acknowledgments.ready {
                // The client goes on negotiating with another request.
                reply.flush()?;
                return Ok(Flow::Continue);
            }
            reply.text("ready")?;
            reply.delim()?;
        }
    }
    if !arguments.want_refs.is_empty() {
        reply.text("wanted-refs")?;
        for (name, id) in &arguments.want_refs {
            reply.text(format!("{id} {}", name.as_bstr()))?;
        }
        reply.delim()?;
    }
    // git's `send_shallow_info()`, after `wanted-refs`.
    let planned = match shallow.plan(upload_pack, &arguments.wants, Protocol::V2) {
        Ok(planned) => planned,
        Err(message) => return Err(reply.reject(message)),
    };
    if planned.announce {
        reply.text("shallow-info")?;
        // Without a LF, byte for byte as git writes them.
        for id in &planned.update.shallow {
            reply.data(format!("shallow {id}").as_bytes())?;
        }
        for id in &planned.update.unshallow {
            reply.data(format!("unshallow {id}").as_bytes())?;
        }
        reply.delim()?;
    }
    // With packfile-uris the section header follows the enumeration: `packfile-uris` comes
    // first when objects are left out.
    if arguments.uri_protocols.is_empty() {
        reply.text("packfile")?;
    }
    send_pack(
        upload_pack,
        &arguments,
        negotiation.common(),
        &planned.update,
        reply.packets(),
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
    for peeled in tips.peeled(upload_pack.repo) {
        if let Some(peeled) = peeled? {
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
        .peeled(repo)
        .filter_map(|peeled| peeled.ok().flatten())
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

/// The object ids that refs point at, split by visibility, and what the visible ones peel
/// to where `packed-refs` says (the rest are read only when asked, [`Tips::peeled`]).
struct Tips {
    visible: HashSet<ObjectId>,
    hidden: HashSet<ObjectId>,
    /// Visible tips' peeled values recorded in `packed-refs`.
    known_peeled: HashSet<ObjectId>,
    /// Visible tips whose peeled value is not recorded: read to know.
    unknown_peeled: HashSet<ObjectId>,
}

impl Tips {
    fn collect(upload_pack: &UploadPack<'_>) -> Result<Self, crate::repository::RefsError> {
        let mut tips = Tips {
            visible: HashSet::default(),
            hidden: HashSet::default(),
            known_peeled: HashSet::default(),
            unknown_peeled: HashSet::default(),
        };
        if let crate::repository::Head::Born(head) = upload_pack.repo.head()? {
            tips.add(upload_pack, head.view());
        }
        upload_pack.repo.visit_refs(None, |record| {
            tips.add(upload_pack, record);
            Ok::<_, crate::repository::RefsError>(())
        })?;
        Ok(tips)
    }

    fn add(&mut self, upload_pack: &UploadPack<'_>, record: crate::repository::RefView<'_>) {
        if upload_pack
            .config
            .is_hidden(record.name, upload_pack.repo.namespace())
        {
            self.hidden.insert(record.id);
            return;
        }
        self.visible.insert(record.id);
        match record.peeled {
            crate::repository::Peeled::Tag(peeled) => {
                self.known_peeled.insert(peeled);
            }
            crate::repository::Peeled::NotATag => {}
            crate::repository::Peeled::Unknown => {
                self.unknown_peeled.insert(record.id);
            }
        }
    }

    /// What the visible tips peel to: `packed-refs`' values, then the tags read for the rest
    /// (`None` for a tip that is not a tag).
    fn peeled<'a>(
        &'a self,
        repo: &'a crate::repository::Repository,
    ) -> impl Iterator<Item = Result<Option<ObjectId>, crate::repository::RefsError>> + 'a {
        self.known_peeled
            .iter()
            .map(|id| Ok(Some(*id)))
            .chain(self.unknown_peeled.iter().map(|id| repo.peel_tag(id)))
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
            let session_id = upload_pack.session_id.clone();
            let pack_cache = upload_pack.pack_cache.clone();
            let (budget, client) = (upload_pack.budget.clone(), upload_pack.client.clone());
            keepalive::run(out.get_mut(), interval, move |writer| {
                let upload_pack = UploadPack {
                    repo: &repo,
                    config,
                    session_id,
                    pack_cache,
                    budget,
                    client,
                    stateful: false,
                };
                // While it waits for the budget, keepalives go out and a client that went
                // away (a keepalive could not be written) leaves the queue.
                let watch = writer.watch();
                let gone = move || watch.is_closed();
                write_pack_section(
                    &upload_pack,
                    arguments,
                    common,
                    shallow,
                    writer,
                    sideband,
                    &gone,
                )
            })?;
        }
        _ => write_pack_section(
            upload_pack,
            arguments,
            common,
            shallow,
            out.get_mut(),
            sideband,
            &|| false,
        )?,
    }
    if sideband.is_some() {
        out.flush_pkt()?;
    }
    Ok(())
}

/// Where the pack goes: sideband packets, the stream itself, or a pack cache's spool.
pub(super) enum PackStream<W: Write> {
    Sideband(SidebandWriter<W>),
    Raw(W),
    /// The bytes and progress messages for the clients of the pack cache to read.
    Spool(crate::pack_cache::SpoolWriter),
}

impl<W: Write> PackStream<W> {
    /// Progress for the user: band 2, or nowhere without sideband.
    pub(super) fn progress(&mut self, message: &[u8]) -> std::io::Result<()> {
        match self {
            PackStream::Sideband(sideband) => {
                sideband.progress(message)?;
                sideband.flush()
            }
            PackStream::Raw(_) => Ok(()),
            PackStream::Spool(spool) => {
                spool.progress(message);
                Ok(())
            }
        }
    }

    /// With `packfile-uris`: the `packfile-uris` section when objects were left out (each
    /// `<pack-hash> <uri>`, then a delim-pkt), then the `packfile` header, in band 1 as git
    /// sends them.
    fn section_headers(&mut self, offered: &[String]) -> std::io::Result<()> {
        let PackStream::Sideband(sideband) = self else {
            return Ok(());
        };
        if !offered.is_empty() {
            sideband.write_band(Band::Data, b"packfile-uris\n")?;
            for line in offered {
                sideband.write_band(Band::Data, format!("{line}\n").as_bytes())?;
            }
            let mut delim = Vec::new();
            packgate_wire::pkt_line::encode_delimiter(&mut delim);
            sideband.get_mut().write_all(&delim)?;
        }
        sideband.write_band(Band::Data, b"packfile\n")?;
        sideband.flush()
    }

    /// A fatal error for the user: band 3; without sideband the client only sees the
    /// pack end early.
    pub(super) fn error(&mut self, message: &[u8]) -> std::io::Result<()> {
        match self {
            PackStream::Sideband(sideband) => {
                sideband.error(message)?;
                sideband.flush()
            }
            // The spool's readers get the error from the generation's result.
            PackStream::Raw(_) | PackStream::Spool(_) => Ok(()),
        }
    }

    pub(super) fn max_payload_length(&self) -> usize {
        match self {
            PackStream::Sideband(sideband) => sideband.mode().max_payload_length(),
            PackStream::Raw(_) | PackStream::Spool(_) => {
                SidebandMode::SideBand64k.max_payload_length()
            }
        }
    }
}

impl<W: Write> Write for PackStream<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            PackStream::Sideband(sideband) => sideband.write(data),
            PackStream::Raw(out) => out.write(data),
            PackStream::Spool(spool) => spool.write(data),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            PackStream::Sideband(sideband) => sideband.flush(),
            PackStream::Raw(out) => out.flush(),
            PackStream::Spool(spool) => spool.flush(),
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
    gone: &dyn Fn() -> bool,
) -> Result<(), ServeError> {
    let mut sideband = match mode {
        Some(mode) => PackStream::Sideband(SidebandWriter::new(out, mode)),
        None => PackStream::Raw(out),
    };
    if let Some(served) =
        super::cached::serve(upload_pack, arguments, common, shallow, &mut sideband)
    {
        return served;
    }
    produce_pack(upload_pack, arguments, common, shallow, sideband, gone)
}

/// Enumerate and write the pack into `sideband`, with progress messages, once the budget
/// gives the request its turn (or `gone` says its client left the queue).
pub(super) fn produce_pack<W: Write>(
    upload_pack: &UploadPack<'_>,
    arguments: &Arguments,
    common: &[ObjectId],
    shallow: &ShallowUpdate,
    mut sideband: PackStream<W>,
    gone: &dyn Fn() -> bool,
) -> Result<(), ServeError> {
    let repo = upload_pack.repo;
    let progress = |sideband: &mut PackStream<W>, message: &str| -> std::io::Result<()> {
        if arguments.no_progress {
            return Ok(());
        }
        sideband.progress(message.as_bytes())
    };
    let fail = |sideband: &mut PackStream<W>, message: String| fail_pack(sideband, message);
    let interrupt = AtomicBool::new(false);

    // The process's CPU slots and memory: wait for a turn (fairly between clients).
    let (demand, cache_bytes) = budget_demand(upload_pack, common.is_empty());
    let grant = match upload_pack
        .budget
        .acquire(&upload_pack.client, demand, gone)
    {
        Ok(grant) => grant,
        Err(err) => return Err(fail(&mut sideband, err.to_string())),
    };
    // No line before the count: git's pack-objects shows "Enumerating objects" only with a
    // number (its first update comes after a second), and a count-less line ended by CR
    // stays glued to the next one wherever CR does not return (logs, CI output).
    let started = std::time::Instant::now();
    // Walks read trees along delta chains: resolve each chain step once, as git does. The
    // request's cache is shared out between its threads (each has a reader).
    let reader = packgate_pack::reader::CachingReader::new(
        repo.objects().clone(),
        cache_bytes / grant.threads(),
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
            thread_limit: Some(grant.threads()),
            filter: arguments.filter.clone(),
            shallow: shallow.grafts.clone(),
            commit_graph: repo.commit_graph(),
            bitmap: upload_pack
                .config
                .use_bitmaps
                .then(|| reader.packs().bitmap())
                .flatten(),
            tree_exclusion: if upload_pack.config.use_sparse {
                packgate_pack::TreeExclusion::Sparse
            } else {
                packgate_pack::TreeExclusion::EdgeCommits
            },
            ..Default::default()
        },
        &interrupt,
    ) {
        Ok(enumeration) => enumeration,
        Err(err) => return Err(fail(&mut sideband, err.to_string())),
    };
    let tags = if arguments.include_tag {
        match tags_to_include(upload_pack, &enumeration, &reader) {
            Ok(tags) => tags,
            Err(err) => return Err(fail(&mut sideband, err.to_string())),
        }
    } else {
        Vec::new()
    };
    // A clone counted with the bitmap that is its whole pack goes out as stored, without
    // listing its objects.
    if tags.is_empty() && arguments.uri_protocols.is_empty() {
        if let Some(checksum) = enumeration.whole_pack() {
            let options = packgate_pack::WriteOptions {
                // As below: a thin pack whose client has objects gets a delta search, not
                // the stored pack.
                client_has: arguments.thin_pack.then(|| enumeration.known_to_client()),
                ofs_delta: arguments.ofs_delta,
                delta_search: Some(packgate_pack::DeltaSearch::new(&[])),
                reader: Some(&reader),
                whole_pack: Some(checksum),
            };
            let objects = enumeration.len();
            progress(
                &mut sideband,
                &format!("Enumerating objects: {objects}, done.\n"),
            )?;
            tracing::debug!(objects, elapsed = ?started.elapsed(), "enumerated");
            let started = std::time::Instant::now();
            let mut buffered =
                std::io::BufWriter::with_capacity(sideband.max_payload_length(), &mut sideband);
            let written = packgate_pack::write_stored_pack(
                reader.packs(),
                objects,
                &options,
                &mut buffered,
                &interrupt,
            );
            let written = buffered.flush().map(|()| written);
            drop(buffered);
            if let Some(outcome) = pack_written(&mut sideband, written)? {
                return finish_pack(&mut sideband, &outcome, started, arguments.no_progress);
            }
        }
    }
    let mut objects: Vec<ObjectId> = enumeration.objects().to_vec();
    objects.extend(tags);
    if !arguments.uri_protocols.is_empty() {
        if let Some(message) = &upload_pack.config.blob_packfile_uri_error {
            return Err(fail(&mut sideband, message.clone()));
        }
        let offered = leave_out_by_uri(
            &upload_pack.config.blob_packfile_uris,
            &arguments.uri_protocols,
            &mut objects,
        );
        sideband.section_headers(&offered)?;
    }
    progress(
        &mut sideband,
        &format!("Enumerating objects: {}, done.\n", objects.len()),
    )?;
    tracing::debug!(objects = objects.len(), elapsed = ?started.elapsed(), "enumerated");
    let started = std::time::Instant::now();

    let options = packgate_pack::WriteOptions {
        client_has: arguments.thin_pack.then(|| enumeration.known_to_client()),
        ofs_delta: arguments.ofs_delta,
        // `objects` starts with the enumeration's commits, most recent first. A shallow clone
        // has no older versions of anything: nothing to search.
        delta_search: (!common.is_empty() || shallow.grafts.is_empty()).then(|| {
            delta_search(
                &enumeration.objects()[..enumeration.counts().commits],
                common,
            )
        }),
        // Whole objects for a thin pack's missing bases come through the walk's cache.
        reader: Some(&reader),
        // What the bitmap counted, unless include-tag added or packfile-uris took objects.
        whole_pack: (arguments.uri_protocols.is_empty()
            && objects.len() == enumeration.objects().len())
        .then(|| enumeration.whole_pack())
        .flatten(),
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
    let outcome = pack_written(&mut sideband, written)?;
    finish_pack(&mut sideband, &outcome, started, arguments.no_progress)
}

/// A fetch that fails while its pack section is open: the message goes out on band 3 (as
/// far as the client still reads), and ends the request.
fn fail_pack<W: Write>(sideband: &mut PackStream<W>, message: String) -> ServeError {
    tracing::warn!(%message, "fetch failed while sending the pack");
    let _ = sideband.error(format!("upload-pack: {message}\n").as_bytes());
    ServeError::Failed(message)
}

/// What writing the pack (then flushing it) came to: its outcome, or how the request ends —
/// a client that stopped reading, or an error it is told of.
fn pack_written<W: Write, T>(
    sideband: &mut PackStream<W>,
    written: std::io::Result<Result<T, packgate_pack::WriteError>>,
) -> Result<T, ServeError> {
    match written {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(packgate_pack::WriteError::Write(_))) | Err(_) => {
            Err(ServeError::Io(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client stopped reading the pack",
            )))
        }
        Ok(Err(err)) => Err(fail_pack(sideband, err.to_string())),
    }
}

/// After the pack: log it, tell the client its totals (unless `no_progress`), flush.
fn finish_pack<W: Write>(
    sideband: &mut PackStream<W>,
    outcome: &packgate_pack::WriteOutcome,
    started: std::time::Instant,
    no_progress: bool,
) -> Result<(), ServeError> {
    tracing::debug!(
        objects = outcome.objects,
        deltas = outcome.deltas,
        recompressed = outcome.recompressed,
        computed_deltas = outcome.computed_deltas,
        bytes = outcome.bytes,
        elapsed = ?started.elapsed(),
        "pack written"
    );
    if !no_progress {
        sideband.progress(
            format!("Total {} (delta {})\n", outcome.objects, outcome.deltas).as_bytes(),
        )?;
    }
    sideband.flush()?;
    Ok(())
}

/// What one pack generation asks of the budget, and the delta-base cache it may keep in
/// total: `pack.threads` threads (the budget's slots by default) and, as memory, that cache
/// plus what enumerating and writing hold per object of the repository — about 320 bytes for
/// a clone (git.git's 419k objects: ~130 MiB), a tenth of that for a fetch with common
/// commits, which walks only the difference.
fn budget_demand(upload_pack: &UploadPack<'_>, clone: bool) -> (crate::budget::Demand, usize) {
    let budget = &upload_pack.budget;
    let cache_bytes = budget.delta_cache_bytes(upload_pack.config.delta_base_cache_limit);
    let threads = upload_pack
        .config
        .pack_threads
        .unwrap_or(budget.config().cpu_slots);
    let objects = upload_pack
        .repo
        .objects()
        .packed_object_count()
        .unwrap_or(0);
    let per_object = if clone { 320 } else { 32 };
    let memory = (cache_bytes as u64).saturating_add(objects.saturating_mul(per_object));
    (crate::budget::Demand { threads, memory }, cache_bytes)
}

/// git's `pack-objects --uri-protocol`: leave out of `objects` each configured object whose
/// URI starts with `<protocol>:` for one of the client's protocols; the `<pack-hash> <uri>`
/// lines to send instead, one per object left out.
fn leave_out_by_uri(
    configured: &[crate::config::PackfileUri],
    protocols: &[BString],
    objects: &mut Vec<ObjectId>,
) -> Vec<String> {
    let usable: Vec<&crate::config::PackfileUri> = configured
        .iter()
        .filter(|entry| {
            protocols.iter().any(|protocol| {
                entry
                    .uri
                    .strip_prefix(protocol.as_slice())
                    .is_some_and(|rest| rest.starts_with(b":"))
            })
        })
        .collect();
    if usable.is_empty() {
        return Vec::new();
    }
    let mut offered = Vec::new();
    objects.retain(|id| match usable.iter().find(|entry| entry.object == *id) {
        Some(entry) => {
            offered.push(format!("{} {}", entry.pack_hash, entry.uri.as_bstr()));
            false
        }
        None => true,
    });
    offered
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
///
/// Tags are read through `reader`, the request's: its lookups and headers come from the pack
/// set directly, and a repository's tags are mostly loose refs to peel.
fn tags_to_include(
    upload_pack: &UploadPack<'_>,
    enumeration: &packgate_pack::enumerate::Enumeration,
    reader: &packgate_pack::reader::CachingReader,
) -> Result<Vec<ObjectId>, crate::repository::RefsError> {
    use gix_object::Find;
    let repo = upload_pack.repo;
    let mut added: HashSet<ObjectId> = HashSet::default();
    let mut out = Vec::new();
    let prefixes = [crate::refname::RefPrefix::new("refs/tags/")];
    let mut buf = Vec::new();
    repo.visit_refs(Some(&prefixes), |record| {
        if upload_pack.config.is_hidden(record.name, repo.namespace())
            || enumeration.contains(&record.id)
        {
            return Ok(());
        }
        let Some(peeled) = crate::repository::Repository::peeled_in(reader, record, &mut buf)?
        else {
            return Ok(());
        };
        if !enumeration.contains(&peeled) {
            return Ok(());
        }
        // Walk the chain of tags down to the peeled object, adding each tag not sent yet.
        let mut current = record.id;
        while current != peeled && !enumeration.contains(&current) && added.insert(current) {
            out.push(current);
            let data = reader.try_find(&current, &mut buf).map_err(|source| {
                crate::repository::RefsError::Object {
                    id: current,
                    source,
                }
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
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789012345678901234567890123456789";

    /// Refs under `refs/heads/` resolve to [`ID`]; everything else is unknown.
    fn resolve(name: &[u8]) -> Result<Option<ObjectId>, String> {
        Ok(name
            .starts_with(b"refs/heads/")
            .then(|| ObjectId::from_hex(ID.as_bytes()).unwrap()))
    }

    fn parse_with(input: &[&str], everything: bool) -> Result<Arguments, ParseError> {
        parse_filtered(input, everything, None)
    }

    fn parse_filtered(
        input: &[&str],
        everything: bool,
        filter: Option<&crate::config::FilterPolicy>,
    ) -> Result<Arguments, ParseError> {
        let input: Vec<BString> = input.iter().map(|s| BString::from(*s)).collect();
        let allowed = Allowed {
            ref_in_want: everything,
            sideband_all: everything,
            packfile_uris: everything,
            filter,
            resolve_ref: &resolve,
        };
        parse(&input, &allowed)
    }

    fn check(input: &[&str], expected: Result<Arguments, &str>) {
        assert_eq!(
            parse_with(input, false).map_err(|err| err.message),
            expected.map_err(str::to_owned),
            "input: {input:?}"
        );
    }

    #[test]
    fn arguments() {
        let id = ID;
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
                "wait-for-done",
            ],
            Ok(Arguments {
                wants: vec![oid],
                haves: vec![oid],
                seen_haves: true,
                done: true,
                wait_for_done: true,
                thin_pack: true,
                no_progress: true,
                include_tag: true,
                ofs_delta: true,
                ..Arguments::default()
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
        // Not configured: git does not know these lines.
        check(&["sideband-all"], Err("unexpected line: 'sideband-all'"));
        check(
            &["want-ref refs/heads/main"],
            Err("unexpected line: 'want-ref refs/heads/main'"),
        );
        check(
            &["packfile-uris https"],
            Err("unexpected line: 'packfile-uris https'"),
        );
    }

    #[test]
    fn objects_left_out_by_uri() {
        let id = |n: u8| ObjectId::from_hex(format!("{n}").repeat(40).as_bytes()).unwrap();
        let configured = vec![
            crate::config::PackfileUri {
                object: id(1),
                pack_hash: "a".repeat(40),
                uri: "https://example.com/a.pack".into(),
            },
            crate::config::PackfileUri {
                object: id(2),
                pack_hash: "b".repeat(40),
                uri: "httpsx://example.com/b.pack".into(),
            },
        ];
        let mut objects = vec![id(1), id(2), id(3)];
        let offered = leave_out_by_uri(&configured, &["http".into(), "https".into()], &mut objects);
        assert_eq!(
            offered,
            [format!("{} https://example.com/a.pack", "a".repeat(40))]
        );
        assert_eq!(objects, [id(2), id(3)]);
        let mut objects = vec![id(1)];
        assert!(leave_out_by_uri(&configured, &["http".into()], &mut objects).is_empty());
        assert_eq!(objects, [id(1)]);
    }

    #[test]
    fn want_refs_and_sideband_all() {
        let oid = ObjectId::from_hex(ID.as_bytes()).unwrap();
        assert_eq!(
            parse_with(
                &[
                    "sideband-all",
                    &format!("want {ID}"),
                    "want-ref refs/heads/a",
                    "want-ref refs/heads/b",
                ],
                true
            ),
            Ok(Arguments {
                wants: vec![oid],
                want_refs: vec![("refs/heads/a".into(), oid), ("refs/heads/b".into(), oid)],
                sideband_all: true,
                ..Arguments::default()
            })
        );
        // Errors name the ref as git does, in band 3 once sideband-all was read.
        assert_eq!(
            parse_with(&["want-ref refs/tags/x", "sideband-all"], true),
            Err(ParseError {
                message: "unknown ref refs/tags/x".into(),
                sideband_all: false
            })
        );
        assert_eq!(
            parse_with(
                &[
                    "sideband-all",
                    "want-ref refs/heads/a",
                    "want-ref refs/heads/a"
                ],
                true
            ),
            Err(ParseError {
                message: "duplicate want-ref refs/heads/a".into(),
                sideband_all: true
            })
        );
    }

    #[test]
    fn filters_only_when_allowed() {
        let check_with = |policy: &crate::config::FilterPolicy,
                          input: &[&str],
                          expected: Result<Arguments, &str>| {
            assert_eq!(
                parse_filtered(input, false, Some(policy)).map_err(|err| err.message),
                expected.map_err(str::to_owned),
                "input: {input:?}"
            );
        };
        let mut policy = crate::config::FilterPolicy::default();
        check_with(
            &policy,
            &["filter blob:none"],
            Ok(Arguments {
                filter_spec: Some(FilterSpec::BlobNone),
                ..Arguments::default()
            }),
        );
        check_with(
            &policy,
            &["filter blob:none", "filter tree:0"],
            Err("multiple filter-specs cannot be combined"),
        );
        check_with(&policy, &["filter tree:"], Err("expected 'tree:<depth>'"));
        check_with(&policy, &["filter nope"], Err("invalid filter-spec 'nope'"));
        policy.fallback = false;
        check_with(
            &policy,
            &["filter blob:none"],
            Err("filter 'blob:none' not supported"),
        );
    }
}
