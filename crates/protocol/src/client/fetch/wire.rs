//! The fetch client's side of the wire: protocol v2's `ls-refs` and `fetch`, and the v0/v1
//! want/have exchange, over a stateful or a stateless [`Connection`].

use std::io::{BufReader, Read, Write};

use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;
use packgate_negotiate::client::{ClientNegotiator, Next, Protocol};
use packgate_negotiate::v0::{Ack, AckMode};
use packgate_negotiate::Acknowledgments;
use packgate_wire::client::Connection;
use packgate_wire::pkt_line::{self, Packet, PacketReader};

use super::sideband::Demultiplexer;
use super::{FetchError, RemoteRef, Transfer};
use crate::client::advertisement::{AdvertisedRef, Advertisement};

/// Bound on negotiation steps (requests written plus answers read): far above any real
/// negotiation (every have is sent once), so that a server that never ends cannot keep us.
const MAX_STEPS: usize = 10_000_000;

/// `agent=packgate/<version>`.
fn agent() -> String {
    format!("agent=packgate/{}", env!("CARGO_PKG_VERSION"))
}

/// A request being built: pkt-lines in memory, written at once.
#[derive(Default)]
struct Request(Vec<u8>);

impl Request {
    fn line(&mut self, text: impl AsRef<[u8]>) -> Result<(), FetchError> {
        pkt_line::encode_text(text, &mut self.0)
            .map_err(|err| FetchError::Protocol(format!("request line too long: {err}")))
    }
    fn flush(&mut self) {
        pkt_line::encode_flush(&mut self.0);
    }
    fn delimiter(&mut self) {
        pkt_line::encode_delimiter(&mut self.0);
    }
    fn send(self, connection: &mut dyn Connection) -> Result<(), FetchError> {
        connection.writer().write_all(&self.0)?;
        connection.end_request()?;
        Ok(())
    }
}

/// The command header of a v2 request: `command=…`, agent, object format, delimiter.
fn v2_header(request: &mut Request, command: &str, ad: &Advertisement) -> Result<(), FetchError> {
    request.line(format!("command={command}"))?;
    if ad.has("agent") {
        request.line(agent())?;
    }
    if let Some(format) = ad.value("object-format") {
        request.line([b"object-format=", format].concat())?;
    }
    request.delimiter();
    Ok(())
}

/// One data line of a response, without its LF; `ERR` lines become errors.
fn data_line(packet: Option<Packet<'_>>) -> Result<Option<Vec<u8>>, FetchError> {
    match packet {
        Some(Packet::Data(data)) => {
            let line = data.strip_suffix(b"\n").unwrap_or(data);
            if let Some(message) = line.strip_prefix(b"ERR ") {
                return Err(FetchError::Remote(
                    String::from_utf8_lossy(message).into_owned(),
                ));
            }
            Ok(Some(line.to_vec()))
        }
        _ => Ok(None),
    }
}

fn parse_id(hex: &[u8], line: &[u8]) -> Result<ObjectId, FetchError> {
    ObjectId::from_hex(hex)
        .map_err(|_| FetchError::Protocol(format!("invalid object id in '{}'", line.as_bstr())))
}

/// v2 `ls-refs` for `prefixes`.
pub(super) fn ls_refs(
    connection: &mut dyn Connection,
    ad: &Advertisement,
    prefixes: &[BString],
) -> Result<Vec<RemoteRef>, FetchError> {
    match ls_refs_token(connection, ad, prefixes, TokenAsk::None)? {
        Listing::Refs { refs, .. } => Ok(refs),
        Listing::Unchanged(_) => Err(FetchError::Protocol(
            "unexpected 'unchanged' in ls-refs".into(),
        )),
    }
}

/// What an `ls-refs` asks of the refs token (docs/refs-watch.md).
#[derive(Debug, Clone, Copy)]
pub(crate) enum TokenAsk<'a> {
    /// Nothing: a plain listing.
    None,
    /// `refs-token`: the listing with its token.
    Token,
    /// `if-none-match <token>`: `unchanged` when the listing has this token.
    IfNoneMatch(&'a str),
}

/// The answer of an `ls-refs` or a `wait-refs`.
#[derive(Debug, Clone)]
pub(crate) enum Listing {
    /// `unchanged <token>`: nothing but the token.
    Unchanged(BString),
    /// The refs, after `refs-token <token>` or `changed <token>` when there was one.
    Refs {
        refs: Vec<RemoteRef>,
        token: Option<BString>,
    },
}

/// Whether the server's `ls-refs` takes `refs-token` and `if-none-match`.
pub(crate) fn has_refs_token(ad: &Advertisement) -> bool {
    has_ls_refs_feature(ad, b"refs-token")
}

fn has_ls_refs_feature(ad: &Advertisement, feature: &[u8]) -> bool {
    ad.value("ls-refs")
        .is_some_and(|features| features.split_str(" ").any(|f| f == feature))
}

/// The lines `symrefs`, `unborn` (when the server lists unborn refs) and the prefixes.
fn listing_arguments(
    request: &mut Request,
    ad: &Advertisement,
    prefixes: &[BString],
) -> Result<(), FetchError> {
    request.line("symrefs")?;
    if has_ls_refs_feature(ad, b"unborn") {
        request.line("unborn")?;
    }
    for prefix in prefixes {
        request.line([b"ref-prefix ", prefix.as_slice()].concat())?;
    }
    Ok(())
}

/// v2 `ls-refs` for `prefixes`, asking for the refs token as `ask` says.
pub(crate) fn ls_refs_token(
    connection: &mut dyn Connection,
    ad: &Advertisement,
    prefixes: &[BString],
    ask: TokenAsk<'_>,
) -> Result<Listing, FetchError> {
    let mut request = Request::default();
    v2_header(&mut request, "ls-refs", ad)?;
    request.line("peel")?;
    match ask {
        TokenAsk::None => {}
        TokenAsk::Token => request.line("refs-token")?,
        TokenAsk::IfNoneMatch(token) => request.line(format!("if-none-match {token}"))?,
    }
    listing_arguments(&mut request, ad, prefixes)?;
    request.flush();
    request.send(connection)?;
    read_listing(connection, "ls-refs", b"refs-token ")
}

/// v2 `wait-refs`: wait up to `timeout` seconds for the listing of `prefixes` to differ
/// from `since`.
pub(crate) fn wait_refs(
    connection: &mut dyn Connection,
    ad: &Advertisement,
    since: &str,
    prefixes: &[BString],
    timeout: u64,
) -> Result<Listing, FetchError> {
    let mut request = Request::default();
    v2_header(&mut request, "wait-refs", ad)?;
    request.line(format!("since {since}"))?;
    request.line(format!("timeout {timeout}"))?;
    listing_arguments(&mut request, ad, prefixes)?;
    request.flush();
    request.send(connection)?;
    read_listing(connection, "wait-refs", b"changed ")
}

/// A listing up to its flush: an optional first line (`<token_line><token>` or `unchanged
/// <token>`), then `ls-refs` lines.
fn read_listing(
    connection: &mut dyn Connection,
    command: &str,
    token_line: &[u8],
) -> Result<Listing, FetchError> {
    let mut reader = PacketReader::new(connection.reader());
    let mut refs = Vec::new();
    let mut token = None;
    let mut first = true;
    loop {
        let packet = reader.read_packet()?;
        let line = match packet {
            Some(Packet::Flush) => return Ok(Listing::Refs { refs, token }),
            None => {
                return Err(FetchError::Protocol(format!(
                    "the remote end hung up during {command}"
                )))
            }
            other => match data_line(other)? {
                Some(line) => line,
                None => {
                    return Err(FetchError::Protocol(format!(
                        "unexpected packet in {command}"
                    )))
                }
            },
        };
        if std::mem::take(&mut first) {
            if let Some(value) = line.strip_prefix(token_line) {
                token = Some(BString::from(value));
                continue;
            }
            if let Some(value) = line.strip_prefix(b"unchanged ") {
                return match reader.read_packet()? {
                    Some(Packet::Flush) => Ok(Listing::Unchanged(value.into())),
                    _ => Err(FetchError::Protocol(format!(
                        "no flush after 'unchanged' in {command}"
                    ))),
                };
            }
        }
        let mut fields = line.split_str(" ");
        let (Some(id), Some(name)) = (fields.next(), fields.next()) else {
            return Err(FetchError::Protocol(format!(
                "invalid {command} line '{}'",
                line.as_bstr()
            )));
        };
        let id = if id == b"unborn" {
            None
        } else {
            Some(parse_id(id, &line)?)
        };
        let mut symref_target = None;
        for attribute in fields {
            if let Some(target) = attribute.strip_prefix(b"symref-target:") {
                symref_target = Some(BString::from(target));
            }
        }
        refs.push(RemoteRef {
            name: name.into(),
            id,
            symref_target,
        });
    }
}

/// The refs of a v0 advertisement, `HEAD`'s target from its `symref=` capability.
pub(super) fn v0_refs(refs: &[AdvertisedRef], capabilities: &[BString]) -> Vec<RemoteRef> {
    let symrefs: Vec<(&[u8], &[u8])> = capabilities
        .iter()
        .filter_map(|c| c.strip_prefix(b"symref="))
        .filter_map(|c| c.split_once_str(":"))
        .collect();
    refs.iter()
        .map(|r| RemoteRef {
            name: r.name.clone(),
            id: Some(r.id),
            symref_target: symrefs
                .iter()
                .find(|(name, _)| *name == r.name.as_slice())
                .map(|(_, target)| BString::from(*target)),
        })
        .collect()
}

/// How negotiation runs over this advertisement and connection.
pub(super) fn negotiation_protocol(ad: &Advertisement, stateless: bool) -> Protocol {
    match ad {
        Advertisement::V2 { .. } => Protocol::V2,
        Advertisement::V0 { .. } => Protocol::V0 {
            mode: ack_mode(ad),
            stateless,
            // git asks for no-done only over a stateless transport.
            no_done: stateless && ad.has("no-done"),
        },
    }
}

fn ack_mode(ad: &Advertisement) -> AckMode {
    if ad.has("multi_ack_detailed") {
        AckMode::Detailed
    } else if ad.has("multi_ack") {
        AckMode::MultiAck
    } else {
        AckMode::Single
    }
}

/// Ends a session in which nothing is fetched: a stateful connection gets the flush git
/// sends (v0: no wants; v2: no more commands).
pub(crate) fn end_session(
    connection: &mut dyn Connection,
    _ad: &Advertisement,
) -> Result<(), FetchError> {
    if connection.stateless() {
        return Ok(());
    }
    let mut request = Request::default();
    request.flush();
    // The server may be gone already; its exit status tells.
    let _ = request.send(connection);
    Ok(())
}

/// Negotiate and receive the pack for `wants`.
pub(super) fn fetch_pack(
    connection: &mut dyn Connection,
    ad: &Advertisement,
    wants: &[ObjectId],
    negotiator: &mut ClientNegotiator,
    transfer: &mut Transfer<'_>,
    progress: &mut dyn Write,
) -> Result<(), FetchError> {
    match ad {
        Advertisement::V2 { .. } => fetch_v2(connection, ad, wants, negotiator, transfer, progress),
        Advertisement::V0 { .. } => fetch_v0(connection, ad, wants, negotiator, transfer, progress),
    }
}

fn fetch_v2(
    connection: &mut dyn Connection,
    ad: &Advertisement,
    wants: &[ObjectId],
    negotiator: &mut ClientNegotiator,
    transfer: &mut Transfer<'_>,
    progress: &mut dyn Write,
) -> Result<(), FetchError> {
    let db = transfer.repo.objects().clone();
    for _ in 0..MAX_STEPS {
        let round = negotiator.next_request(&db)?;
        transfer.rounds += 1;
        transfer.haves += round.haves.len();
        let mut request = Request::default();
        v2_header(&mut request, "fetch", ad)?;
        request.line("thin-pack")?;
        request.line("ofs-delta")?;
        if transfer.options.quiet {
            request.line("no-progress")?;
        }
        if transfer.options.tags == super::TagFollowing::Auto {
            request.line("include-tag")?;
        }
        for want in wants {
            request.line(format!("want {want}"))?;
        }
        for have in negotiator.common().iter().chain(&round.haves) {
            request.line(format!("have {have}"))?;
        }
        if round.done {
            request.line("done")?;
        }
        request.flush();
        request.send(connection)?;

        let mut reader = PacketReader::new(connection.reader());
        let mut section = section_header(&mut reader)?;
        if section == b"acknowledgments" {
            let mut answer = Acknowledgments::default();
            let end = loop {
                match reader.read_packet()? {
                    Some(Packet::Flush) => break Packet::Flush,
                    Some(Packet::Delimiter) => break Packet::Delimiter,
                    other => {
                        let Some(line) = data_line(other)? else {
                            return Err(FetchError::Protocol(
                                "the remote end hung up during acknowledgments".into(),
                            ));
                        };
                        if line == b"NAK" {
                        } else if line == b"ready" {
                            answer.ready = true;
                        } else if let Some(id) = line.strip_prefix(b"ACK ") {
                            answer.common.push(parse_id(id, &line)?);
                        } else {
                            return Err(FetchError::Protocol(format!(
                                "unexpected acknowledgment '{}'",
                                line.as_bstr()
                            )));
                        }
                    }
                }
            };
            if round.done {
                return Err(FetchError::Protocol("acknowledgments after done".into()));
            }
            let next = negotiator.receive_v2(&db, &answer)?;
            match (next, end) {
                (Next::Pack, Packet::Delimiter) => section = section_header(&mut reader)?,
                (Next::Send, Packet::Flush) => continue,
                _ => return Err(FetchError::Protocol("expected packfile after ready".into())),
            }
        }
        // Sections we did not ask for are skipped as git skips unknown ones up to their end.
        while section != b"packfile" {
            if !matches!(
                section.as_slice(),
                b"shallow-info" | b"wanted-refs" | b"packfile-uris"
            ) {
                return Err(FetchError::Protocol(format!(
                    "unknown section '{}'",
                    section.as_bstr()
                )));
            }
            loop {
                match reader.read_packet()? {
                    Some(Packet::Delimiter) => break,
                    Some(Packet::Data(_)) => {}
                    _ => {
                        return Err(FetchError::Protocol(format!(
                            "section '{}' not followed by packfile",
                            section.as_bstr()
                        )))
                    }
                }
            }
            section = section_header(&mut reader)?;
        }
        drop(reader);
        return receive_pack_stream(connection, true, transfer, progress);
    }
    Err(FetchError::Protocol("negotiation did not end".into()))
}

/// The first line of a v2 response section.
fn section_header<R: Read>(reader: &mut PacketReader<R>) -> Result<Vec<u8>, FetchError> {
    let packet = reader.read_packet()?;
    match data_line(packet)? {
        Some(line) => Ok(line),
        None => Err(FetchError::Protocol("expected a response section".into())),
    }
}

fn fetch_v0(
    connection: &mut dyn Connection,
    ad: &Advertisement,
    wants: &[ObjectId],
    negotiator: &mut ClientNegotiator,
    transfer: &mut Transfer<'_>,
    progress: &mut dyn Write,
) -> Result<(), FetchError> {
    let db = transfer.repo.objects().clone();
    let stateless = connection.stateless();
    let Protocol::V0 { no_done, .. } = negotiation_protocol(ad, stateless) else {
        return Err(FetchError::Protocol("not a v0 advertisement".into()));
    };
    let mut capabilities: Vec<String> = Vec::new();
    match ack_mode(ad) {
        AckMode::Detailed => capabilities.push("multi_ack_detailed".into()),
        AckMode::MultiAck => capabilities.push("multi_ack".into()),
        AckMode::Single => {}
    }
    let sideband = if ad.has("side-band-64k") {
        capabilities.push("side-band-64k".into());
        true
    } else if ad.has("side-band") {
        capabilities.push("side-band".into());
        true
    } else {
        false
    };
    for capability in ["thin-pack", "ofs-delta"] {
        if ad.has(capability) {
            capabilities.push(capability.into());
        }
    }
    if no_done {
        capabilities.push("no-done".into());
    }
    if transfer.options.quiet && ad.has("no-progress") {
        capabilities.push("no-progress".into());
    }
    if transfer.options.tags == super::TagFollowing::Auto && ad.has("include-tag") {
        capabilities.push("include-tag".into());
    }
    if ad.has("agent") {
        capabilities.push(agent());
    }
    let mut want_lines = Request::default();
    for (index, want) in wants.iter().enumerate() {
        if index == 0 {
            want_lines.line(format!("want {want} {}", capabilities.join(" ")))?;
        } else {
            want_lines.line(format!("want {want}"))?;
        }
    }
    want_lines.flush();

    let mut wants_sent = false;
    let mut next = Next::Send;
    for _ in 0..MAX_STEPS {
        match next {
            Next::Send => {
                let round = negotiator.next_request(&db)?;
                next = round.then;
                if round.haves.is_empty() && !round.done {
                    // no-done after `ready`: nothing to send.
                    continue;
                }
                transfer.rounds += 1;
                transfer.haves += round.haves.len();
                let mut request = Request::default();
                if stateless || !wants_sent {
                    request.0.extend_from_slice(&want_lines.0);
                    wants_sent = true;
                }
                if stateless {
                    for have in negotiator.common() {
                        request.line(format!("have {have}"))?;
                    }
                }
                for have in &round.haves {
                    request.line(format!("have {have}"))?;
                }
                if round.done {
                    request.line("done")?;
                } else {
                    request.flush();
                }
                request.send(connection)?;
            }
            Next::Read => {
                let mut reader = PacketReader::new(connection.reader());
                let packet = reader.read_packet()?;
                let Some(line) = data_line(packet)? else {
                    return Err(FetchError::Protocol("expected ACK/NAK".into()));
                };
                let ack = parse_ack(&line)?;
                next = negotiator.receive_v0(&db, ack)?;
            }
            Next::Pack => return receive_pack_stream(connection, sideband, transfer, progress),
        }
    }
    Err(FetchError::Protocol("negotiation did not end".into()))
}

/// One v0 answer line.
fn parse_ack(line: &[u8]) -> Result<Ack, FetchError> {
    if line == b"NAK" {
        return Ok(Ack::Nak);
    }
    let invalid = || FetchError::Protocol(format!("expected ACK/NAK, got '{}'", line.as_bstr()));
    let rest = line.strip_prefix(b"ACK ").ok_or_else(invalid)?;
    let (id, status) = match rest.split_once_str(" ") {
        Some((id, status)) => (id, Some(status)),
        None => (rest, None),
    };
    let id = parse_id(id, line)?;
    Ok(match status {
        None => Ack::Ack(id),
        Some(b"continue") => Ack::Continue(id),
        Some(b"common") => Ack::Common(id),
        Some(b"ready") => Ack::Ready(id),
        Some(_) => return Err(invalid()),
    })
}

/// Receive the pack that follows, multiplexed or not, and read what is left of the stream.
fn receive_pack_stream(
    connection: &mut dyn Connection,
    sideband: bool,
    transfer: &mut Transfer<'_>,
    progress: &mut dyn Write,
) -> Result<(), FetchError> {
    if !sideband {
        return transfer.receive(connection.reader());
    }
    let mut demux = Demultiplexer::new(connection.reader(), progress);
    let result = {
        let mut input = BufReader::with_capacity(64 * 1024, &mut demux);
        let result = transfer.receive(&mut input);
        // What follows the pack up to the flush: progress, or an error.
        let mut rest = Vec::new();
        let drained = if result.is_ok() {
            input.read_to_end(&mut rest).map(|_| ())
        } else {
            Ok(())
        };
        result.and(drained.map_err(FetchError::Io))
    };
    if let Some(message) = demux.remote_error.take() {
        return Err(FetchError::Remote(message));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_parsed() {
        let id = "1111111111111111111111111111111111111111";
        let oid = ObjectId::from_hex(id.as_bytes()).unwrap();
        assert_eq!(parse_ack(b"NAK").unwrap(), Ack::Nak);
        assert_eq!(
            parse_ack(format!("ACK {id}").as_bytes()).unwrap(),
            Ack::Ack(oid)
        );
        assert_eq!(
            parse_ack(format!("ACK {id} ready").as_bytes()).unwrap(),
            Ack::Ready(oid)
        );
        assert!(parse_ack(format!("ACK {id} maybe").as_bytes()).is_err());
        assert!(parse_ack(b"hello").is_err());
    }
}
