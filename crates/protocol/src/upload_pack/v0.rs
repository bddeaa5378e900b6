//! upload-pack over protocol v0 and v1: the reference advertisement, the wants, the
//! negotiation (`packgate_negotiate::v0`) and the pack, as git 2.47's upload-pack serves
//! them to a client that did not ask for version 2.

use std::io::{Read, Write};

use bstr::ByteSlice;
use gix_hash::ObjectId;
use packgate_negotiate::v0::{AckMode, Round, V0Negotiation};
use packgate_wire::{
    pkt_line::{PacketReader, PacketWriter},
    sideband::SidebandMode,
    v0::{self as wire_v0, Line},
};

use super::{
    agent, fetch,
    ls_refs::{push_hex, Listing},
    reject,
    shallow::{self, Protocol, Shallow},
    ServeError, UploadPack,
};
use crate::{
    receive_pack::ProtocolVersion,
    repository::{Head, RefView},
};

/// The capabilities upload-pack advertises in v0/v1, in git's order, before the ones that
/// depend on configuration and the request.
const CAPABILITIES: &str = "multi_ack thin-pack side-band side-band-64k ofs-delta shallow \
                            deepen-since deepen-not deepen-relative no-progress include-tag \
                            multi_ack_detailed";

/// The most wants of one request (the v2 request limit's order of magnitude).
const MAX_WANTS: usize = 1 << 20;

/// How a v0/v1 session is run.
#[derive(Debug, Clone, Copy, Default)]
pub struct V0Options {
    /// HTTP-style: no advertisement unless asked for; one round of haves per request.
    pub stateless: bool,
    /// Only send the advertisement, then end (HTTP's `info/refs`).
    pub advertise_only: bool,
    /// The protocol version the client asked for: v1 adds a `version 1` line.
    pub version: ProtocolVersion,
}

impl UploadPack<'_> {
    /// Write the v0 reference advertisement: `HEAD` and every visible ref, each tag followed
    /// by its peeled `^{}` line, the capabilities after a NUL on the first line
    /// (`capabilities^{}` in an empty repository), then a flush. `advertise_refs`: for a
    /// stateless client's `info/refs`, which alone advertises `no-done`, as git does.
    pub fn advertise_v0<W: Write>(
        &self,
        out: &mut PacketWriter<W>,
        advertise_refs: bool,
    ) -> Result<(), ServeError> {
        let config = &self.config;
        let refs_failed = |err: crate::repository::RefsError| {
            ServeError::Failed(format!("could not list refs: {err}"))
        };
        let mut head = None;
        let mut symref = String::new();
        match self.repo.head().map_err(refs_failed)? {
            Head::Born(record) => {
                if let Some(target) = &record.symref_target {
                    symref = format!(" symref=HEAD:{}", target.as_bstr());
                }
                if !config.is_hidden(b"HEAD", self.repo.namespace()) {
                    head = Some(record);
                }
            }
            // git reads HEAD's target only when HEAD resolves.
            Head::Unborn { .. } | Head::Missing => {}
        }
        let any = config.allow_any_sha1_in_want;
        let session_id = if config.advertise_sid {
            format!(" session-id={}", self.session_id)
        } else {
            String::new()
        };
        let capabilities = format!(
            "{CAPABILITIES}{}{}{}{symref}{}{session_id} object-format=sha1 agent={}",
            if config.allow_tip_sha1_in_want || any {
                " allow-tip-sha1-in-want"
            } else {
                ""
            },
            if config.allow_reachable_sha1_in_want || any {
                " allow-reachable-sha1-in-want"
            } else {
                ""
            },
            if advertise_refs { " no-done" } else { "" },
            if config.allow_filter { " filter" } else { "" },
            agent(),
        );
        // Each ref as it is listed, into one reused line: nothing allocated per ref.
        let mut line = Vec::with_capacity(128);
        let mut first = true;
        let mut advertise = |record: RefView<'_>| -> Result<(), Listing> {
            line.clear();
            push_hex(&mut line, &record.id);
            line.push(b' ');
            line.extend_from_slice(record.name);
            if std::mem::take(&mut first) {
                line.push(0);
                line.extend_from_slice(capabilities.as_bytes());
            }
            line.push(b'\n');
            out.write_data(&line).map_err(Listing::Write)?;
            if let Some(peeled) = self.repo.peeled(record)? {
                line.clear();
                push_hex(&mut line, &peeled);
                line.push(b' ');
                line.extend_from_slice(record.name);
                line.extend_from_slice(b"^{}\n");
                out.write_data(&line).map_err(Listing::Write)?;
            }
            Ok(())
        };
        let mut listed = match &head {
            Some(head) => advertise(head.view()),
            None => Ok(()),
        };
        if listed.is_ok() {
            listed = self.repo.visit_refs(None, |record| {
                if config.is_hidden(record.name, self.repo.namespace()) {
                    return Ok(());
                }
                advertise(record)
            });
        }
        match listed {
            Ok(()) => {}
            Err(Listing::Refs(err)) => return Err(refs_failed(err)),
            Err(Listing::Write(err)) => return Err(err.into()),
        }
        if first {
            out.write_text(format!(
                "{} capabilities^{{}}\0{capabilities}",
                ObjectId::null(gix_hash::Kind::Sha1)
            ))?;
        }
        // git's `advertise_shallow_grafts()`: the repository's own shallow commits, in the
        // order of git's graft list (sorted).
        let mut shallows = self
            .repo
            .shallow_commits()
            .map_err(|err| ServeError::Failed(err.to_string()))?;
        shallows.sort();
        shallows.dedup();
        for id in shallows {
            out.write_text(format!("shallow {id}"))?;
        }
        out.flush_pkt()?;
        out.get_mut().flush()?;
        Ok(())
    }

    /// Run a v0/v1 session: the advertisement (unless stateless), the wants, the rounds of
    /// haves and the pack. A client that wants nothing, or hangs up after its wants, ends
    /// the session normally.
    pub fn serve_v0<R: Read, W: Write>(
        &self,
        input: R,
        output: W,
        options: &V0Options,
    ) -> Result<(), ServeError> {
        let mut out = PacketWriter::new(output);
        if options.advertise_only || !options.stateless {
            if options.version == ProtocolVersion::V1 {
                out.write_text("version 1")?;
            }
            self.advertise_v0(&mut out, options.advertise_only)?;
            if options.advertise_only {
                return Ok(());
            }
        }
        self.serve_v0_exchange(input, out.into_inner(), options.stateless)
    }

    /// What follows the advertisement of a v0/v1 session (sent by the caller, or in an
    /// earlier request when `stateless`): the wants, the rounds of haves (only one when
    /// `stateless`) and the pack.
    pub fn serve_v0_exchange<R: Read, W: Write>(
        &self,
        input: R,
        output: W,
        stateless: bool,
    ) -> Result<(), ServeError> {
        let mut reader = PacketReader::new(input);
        let mut out = PacketWriter::new(output);
        let wants = match wire_v0::read_wants(&mut reader, MAX_WANTS) {
            Ok(Some(wants)) => wants,
            Ok(None) => return Ok(()),
            Err(err) => return Err(reject(&mut out, err.to_string())),
        };
        let mut shallow_arguments = wants.shallow.clone();
        shallow_arguments.relative = wants.has("deepen-relative");
        let shallow = match Shallow::check(self, &shallow_arguments) {
            Ok(shallow) => shallow,
            Err(message) => return Err(reject(&mut out, message)),
        };
        if let Err(message) = fetch::check_wants(self, &wants.wants, true, stateless) {
            return Err(reject(&mut out, message));
        }
        if let Some(client_sid) = wants.value("session-id") {
            // git logs it whether or not it advertised its own.
            tracing::info!(client_sid = %client_sid.as_bstr(), "client session id");
        }
        // The shallow lines come before the negotiation (every request of a stateless one).
        let planned = match shallow.plan(self, &wants.wants, Protocol::V0) {
            Ok(planned) => planned,
            Err(message) => return Err(reject(&mut out, message)),
        };
        if planned.announce {
            shallow::write_lines(&planned.update, &mut out)?;
            out.flush_pkt()?;
            out.get_mut().flush()?;
        }
        let mode = if wants.has("multi_ack_detailed") {
            AckMode::Detailed
        } else if wants.has("multi_ack") {
            AckMode::MultiAck
        } else {
            AckMode::Single
        };
        let sideband = if wants.has("side-band-64k") {
            Some(SidebandMode::SideBand64k)
        } else if wants.has("side-band") {
            Some(SidebandMode::SideBand)
        } else {
            None
        };
        let filter = match self.v0_filter(&wants) {
            Ok(filter) => filter,
            Err(message) => return Err(reject(&mut out, message)),
        };
        let arguments = fetch::Arguments {
            filter,
            wants: wants.wants.clone(),
            thin_pack: wants.has("thin-pack"),
            no_progress: wants.has("no-progress"),
            include_tag: wants.has("include-tag"),
            ofs_delta: wants.has("ofs-delta"),
            ..fetch::Arguments::default()
        };
        let db = self.repo.objects();
        let no_done = wants.has("no-done");
        // git's unshallowed parents are wants of the negotiation too.
        let mut negotiation_wants = wants.wants;
        negotiation_wants.extend(planned.update.extra_wants.iter().copied());
        let mut inner = packgate_negotiate::Negotiation::with_grafts(
            negotiation_wants,
            planned.update.grafts.clone(),
        );
        inner.use_commit_graph(self.repo.commit_graph());
        let mut negotiation = V0Negotiation::with_negotiation(inner, mode, no_done);
        let mut acks = Vec::new();
        let mut first = true;
        loop {
            let line = match wire_v0::read_line(&mut reader) {
                Ok(Some(line)) => line,
                // Hanging up after the wants (before any have) is how a client that found
                // what it wanted in the advertisement leaves; later, it is leaving all the same.
                Ok(None) => {
                    tracing::debug!(first, "client hung up during negotiation");
                    return Ok(());
                }
                Err(err) => return Err(reject(&mut out, err.to_string())),
            };
            first = false;
            let round = match line {
                Line::Have(id) => negotiation.have(db, &id, &mut acks).map(|()| None),
                Line::Flush => negotiation.flush(db, &mut acks).map(Some),
                Line::Done => Ok(Some(negotiation.done(&mut acks))),
            };
            let round = match round {
                Ok(round) => round,
                Err(err) => return Err(reject(&mut out, format!("upload-pack: {err}"))),
            };
            for ack in acks.drain(..) {
                out.write_text(ack.to_string())?;
            }
            match round {
                None => {}
                Some(Round::SendPack) => break,
                Some(Round::Continue) => {
                    out.get_mut().flush()?;
                    if stateless {
                        return Ok(());
                    }
                }
            }
        }
        fetch::send_pack(
            self,
            &arguments,
            negotiation.negotiation().common(),
            &planned.update,
            &mut out,
            sideband,
        )?;
        out.get_mut().flush()?;
        Ok(())
    }

    /// The want section's `filter` line, checked as git checks it: only with the `filter`
    /// capability (which needs `uploadpack.allowFilter`), only one, an allowed filter.
    fn v0_filter(
        &self,
        wants: &wire_v0::Wants,
    ) -> Result<Option<packgate_pack::filter::Filter>, String> {
        let mut spec = None;
        for line in &wants.filters {
            if !(self.config.allow_filter && wants.has("filter")) {
                return Err("git upload-pack: filtering capability not negotiated".into());
            }
            spec = Some(fetch::parse_filter(
                &self.config.filters,
                line,
                spec.as_ref(),
            )?);
        }
        fetch::resolve_filter(self, spec.as_ref())
    }
}
