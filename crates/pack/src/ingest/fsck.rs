//! fsck of received objects: git's `fsck.c` rules in strict mode, as `receive.fsckObjects`
//! runs them. The walks read objects leniently (`packgate-object`); this must refuse what they
//! tolerate.

use super::{
    allocation_limit,
    streamed::{entry_bytes, ByOffset, PackWithStreamedBlobs},
    IngestError, IngestOptions, OBJECT_HASH,
};

use std::{
    fmt,
    path::Path,
    sync::{atomic::AtomicBool, Mutex},
};

use gix_hash::ObjectId;
use gix_hashtable::HashSet;
use gix_object::Kind;
use packgate_object::tree;

/// Why an object was refused: git's fsck message id (`missingTree`, `treeNotSorted`, …) and
/// git's explanation.
///
/// The rules are git's `fsck.c` in strict mode (as `receive.fsckObjects` runs it: warnings are
/// errors, informational messages warnings, unless [`FsckOptions`] says otherwise), for
/// commits, trees and tags: header order and format, identities and dates, tree entry names
/// (`/`, `.`, `..`, `.git` and its HFS+/NTFS spellings), zero-padded and unusual modes
/// (`badFilemode`, informational), duplicates and sort order, `.gitmodules` symlinks, a tag
/// without tagger (`missingTaggerEntry`, informational). Not checked: the contents of
/// `.gitmodules` and `.gitattributes` blobs, tag names (`badTagName`), empty and overlong
/// entry names (`emptyName`, `largePathname`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsckProblem {
    /// Git's message id.
    pub id: &'static str,
    /// What it means.
    pub message: &'static str,
}

impl fmt::Display for FsckProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.id, self.message)
    }
}

pub(super) const fn problem(id: &'static str, message: &'static str) -> FsckProblem {
    FsckProblem { id, message }
}

/// What a fsck message's level makes of a finding, as set by `receive.fsck.<msg-id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsckSeverity {
    /// The pack is refused.
    Error,
    /// The client is warned; the pack is taken.
    Warn,
    /// Nothing is said.
    Ignore,
}

/// git's levels of its fsck messages (`fsck.h`): `Fatal` ones cannot be demoted, `Info` ones
/// are reported as warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Fatal,
    Error,
    Warn,
    Info,
    Ignore,
}

/// git's fsck message ids (camel-cased as git prints them) and their default levels.
const MESSAGE_IDS: &[(&str, Level)] = {
    use Level::*;
    &[
        ("nulInHeader", Fatal),
        ("unterminatedHeader", Fatal),
        ("badDate", Error),
        ("badDateOverflow", Error),
        ("badEmail", Error),
        ("badName", Error),
        ("badObjectSha1", Error),
        ("badParentSha1", Error),
        ("badRefFiletype", Error),
        ("badRefName", Error),
        ("badTimezone", Error),
        ("badTree", Error),
        ("badTreeSha1", Error),
        ("badType", Error),
        ("duplicateEntries", Error),
        ("missingAuthor", Error),
        ("missingCommitter", Error),
        ("missingEmail", Error),
        ("missingNameBeforeEmail", Error),
        ("missingObject", Error),
        ("missingSpaceBeforeDate", Error),
        ("missingSpaceBeforeEmail", Error),
        ("missingTag", Error),
        ("missingTagEntry", Error),
        ("missingTree", Error),
        ("missingType", Error),
        ("missingTypeEntry", Error),
        ("multipleAuthors", Error),
        ("treeNotSorted", Error),
        ("unknownType", Error),
        ("zeroPaddedDate", Error),
        ("gitmodulesMissing", Error),
        ("gitmodulesBlob", Error),
        ("gitmodulesLarge", Error),
        ("gitmodulesName", Error),
        ("gitmodulesSymlink", Error),
        ("gitmodulesUrl", Error),
        ("gitmodulesPath", Error),
        ("gitmodulesUpdate", Error),
        ("gitattributesMissing", Error),
        ("gitattributesLarge", Error),
        ("gitattributesLineLength", Error),
        ("gitattributesBlob", Error),
        ("emptyName", Warn),
        ("fullPathname", Warn),
        ("hasDot", Warn),
        ("hasDotdot", Warn),
        ("hasDotgit", Warn),
        ("nullSha1", Warn),
        ("zeroPaddedFilemode", Warn),
        ("nulInCommit", Warn),
        ("largePathname", Warn),
        ("badFilemode", Info),
        ("gitmodulesParse", Info),
        ("gitignoreSymlink", Info),
        ("gitattributesSymlink", Info),
        ("mailmapSymlink", Info),
        ("badTagName", Info),
        ("missingTaggerEntry", Info),
        ("extraHeaderEntry", Ignore),
    ]
};

/// The message id git's configuration names: case and underscores do not matter
/// (`receive.fsck.missingEmail`, `missingemail`).
fn message_id(name: &str) -> Option<(&'static str, Level)> {
    let wanted: String = name
        .chars()
        .filter(|&c| c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    MESSAGE_IDS
        .iter()
        .find(|(id, _)| id.eq_ignore_ascii_case(&wanted))
        .copied()
}

/// Whether `name` is one of git's fsck message ids.
pub fn is_fsck_message_id(name: &str) -> bool {
    message_id(name).is_some()
}

/// Why a `receive.fsck.*` setting cannot be used (git's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsckSettingError {
    /// Not one of git's message ids.
    #[error("Unhandled message id: {0}")]
    UnknownId(String),
    /// Not `error`, `warn` or `ignore`.
    #[error("Unknown fsck message type: '{0}'")]
    UnknownSeverity(String),
    /// A fatal message made a warning or ignored.
    #[error("Cannot demote {id} to {severity}")]
    CannotDemote {
        /// The id as configured.
        id: String,
        /// The severity asked for.
        severity: String,
    },
}

/// How the fsck of a received pack judges what it finds, as receive-pack runs it
/// (`index-pack --strict`): git's levels with warnings made errors, then the
/// `receive.fsck.<msg-id>` severities, and objects on the skip list never reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsckOptions {
    /// `receive.fsck.<msg-id>` settings, in order (the later one wins).
    severities: Vec<(&'static str, FsckSeverity)>,
    /// A setting git's index-pack would die on: every pack that is checked is refused with it.
    refusal: Option<FsckSettingError>,
    /// `receive.fsck.skipList`: objects never reported.
    pub skip_list: HashSet<ObjectId>,
}

impl FsckOptions {
    /// Apply `receive.fsck.<id> = <severity>` as git's `fsck_set_msg_type()`. An unknown id
    /// or severity is an error for the caller to report; demoting a fatal message is kept,
    /// and refuses every checked pack (as git's index-pack dies on it).
    pub fn set(&mut self, id: &str, severity: &str) -> Result<(), FsckSettingError> {
        let Some((known, level)) = message_id(id) else {
            return Err(FsckSettingError::UnknownId(id.to_owned()));
        };
        let parsed = match severity {
            "error" => FsckSeverity::Error,
            "warn" => FsckSeverity::Warn,
            "ignore" => FsckSeverity::Ignore,
            other => return Err(FsckSettingError::UnknownSeverity(other.to_owned())),
        };
        if level == Level::Fatal && parsed != FsckSeverity::Error {
            self.refusal.get_or_insert(FsckSettingError::CannotDemote {
                id: id.to_owned(),
                severity: severity.to_owned(),
            });
            return Ok(());
        }
        self.severities.push((known, parsed));
        Ok(())
    }

    /// Add the object names of a skip list file's `text` to [`FsckOptions::skip_list`], as
    /// git reads `fsck.skipList`: a `#` starts a comment, white space around a name and empty
    /// lines are ignored, anything but one full object name per line is an error (git's
    /// "invalid object name: <line>").
    pub fn read_skip_list(&mut self, text: &[u8]) -> Result<(), String> {
        for line in text.split(|&b| b == b'\n') {
            let line = line.split(|&b| b == b'#').next().unwrap_or_default();
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            match ObjectId::from_hex(line) {
                Ok(id) if line.len() == OBJECT_HASH.len_in_hex() => {
                    self.skip_list.insert(id);
                }
                _ => {
                    return Err(format!(
                        "invalid object name: {}",
                        String::from_utf8_lossy(line)
                    ))
                }
            }
        }
        Ok(())
    }

    /// The setting that refuses every checked pack, if any.
    pub fn refusal(&self) -> Option<&FsckSettingError> {
        self.refusal.as_ref()
    }

    /// What `found` amounts to: `Err` an error, `Ok(true)` a warning, `Ok(false)` nothing.
    pub(super) fn judge(&self, found: FsckProblem) -> Result<bool, FsckProblem> {
        let configured = self
            .severities
            .iter()
            .rev()
            .find(|(id, _)| *id == found.id)
            .map(|(_, severity)| *severity);
        let severity = configured.unwrap_or_else(|| {
            match message_id(found.id).map_or(Level::Error, |(_, level)| level) {
                // Strict: warnings are errors.
                Level::Fatal | Level::Error | Level::Warn => FsckSeverity::Error,
                Level::Info => FsckSeverity::Warn,
                Level::Ignore => FsckSeverity::Ignore,
            }
        });
        match severity {
            FsckSeverity::Error => Err(found),
            FsckSeverity::Warn => Ok(true),
            FsckSeverity::Ignore => Ok(false),
        }
    }
}

/// A warning of the fsck of a received pack: the object and what was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsckWarning {
    /// The object.
    pub id: ObjectId,
    /// What was found.
    pub problem: FsckProblem,
}

impl fmt::Display for FsckWarning {
    /// git's `object <id>: <msg-id>: <message>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "object {}: {}", self.id, self.problem)
    }
}

/// What the fsck of a pack found that did not refuse it.
#[derive(Debug, Default)]
pub(super) struct PackFsck {
    /// Warnings, in no particular order.
    pub(super) warnings: Vec<FsckWarning>,
}

pub(super) fn fsck_pack(
    index_path: &Path,
    pack_path: &Path,
    skip: &HashSet<ObjectId>,
    streamed: &ByOffset<ObjectId>,
    options: &IngestOptions,
    repository_objects: &gix_odb::Handle,
    should_interrupt: &AtomicBool,
) -> Result<PackFsck, IngestError> {
    let fsck = &options.fsck_options;
    if let Some(refusal) = fsck.refusal() {
        return Err(IngestError::FsckSetting {
            source: refusal.clone(),
        });
    }
    let invalid = |source| IngestError::InvalidPack { source };
    let index = gix_pack::index::File::at(index_path, OBJECT_HASH).map_err(invalid)?;
    let pack = gix_pack::data::File::at(pack_path, OBJECT_HASH)
        .map_err(invalid)?
        .with_alloc_limit_bytes(allocation_limit(options));
    let failure: Mutex<Option<(ObjectId, Kind, FsckProblem)>> = Mutex::new(None);
    let warnings: Mutex<Vec<FsckWarning>> = Mutex::new(Vec::new());
    // Objects the received ones name (git's FLAG_LINK), with the kind expected.
    let links: Mutex<Vec<(ObjectId, Kind)>> = Mutex::new(Vec::new());
    let processor = |entry: &mut gix_pack::index::Entry,
                     _progress: &dyn gix_utils::progress::Progress,
                     context: gix_pack::cache::delta::traverse::Context<'_>|
     -> gix_error::Result {
        let Some(kind) = context.entry.header.as_kind() else {
            return Err(gix_error::message("a resolved object is still a delta").into());
        };
        if kind == Kind::Blob || skip.contains(&entry.oid) {
            return Ok(());
        }
        let mut found_links = Vec::new();
        linked_objects(
            kind,
            context.decompressed,
            &options.shallow,
            &entry.oid,
            &mut found_links,
        );
        if let Ok(mut links) = links.lock() {
            links.extend(found_links);
        }
        let skipped = fsck.skip_list.contains(&entry.oid);
        let mut object_warnings = Vec::new();
        let checked = fsck_object_with(kind, context.decompressed, &mut |found| {
            if skipped {
                return Ok(());
            }
            if fsck.judge(found)? {
                object_warnings.push(FsckWarning {
                    id: entry.oid,
                    problem: found,
                });
            }
            Ok(())
        });
        if !object_warnings.is_empty() {
            if let Ok(mut warnings) = warnings.lock() {
                warnings.extend(object_warnings);
            }
        }
        let Err(problem) = checked else {
            return Ok(());
        };
        if let Ok(mut failure) = failure.lock() {
            failure.get_or_insert((entry.oid, kind, problem));
        }
        Err(gix_error::message("object failed fsck").into())
    };
    // gitoxide's `index::File::traverse()` without its pack lookups, so that blobs hashed
    // while streaming are not inflated here either.
    let mut entries: Vec<gix_pack::index::Entry> = index.iter().collect();
    entries.sort_by_key(|entry| entry.pack_offset);
    let tree = gix_pack::cache::delta::Tree::from_offsets_in_pack(
        pack_path,
        entries.into_iter(),
        &|entry: &gix_pack::index::Entry| entry.pack_offset,
        &|id| {
            Ok(index
                .lookup(id)
                .map(|position| index.pack_offset_at_index(position)))
        },
        &mut gix_utils::progress::Discard,
        should_interrupt,
        OBJECT_HASH,
    )
    .map_err(invalid)?;
    let pack_end = pack.pack_end() as u64;
    let data = PackWithStreamedBlobs {
        pack,
        streamed: streamed.clone(),
    };
    let traversed = tree.traverse(
        entry_bytes,
        &data,
        pack_end,
        processor,
        gix_pack::cache::delta::traverse::Options {
            object_progress: Box::new(gix_utils::progress::Discard),
            size_progress: &mut gix_utils::progress::Discard,
            thread_limit: options.thread_limit,
            should_interrupt,
            object_hash: OBJECT_HASH,
            alloc_limit_bytes: allocation_limit(options),
        },
    );
    if let Some((id, kind, problem)) = failure.into_inner().ok().flatten() {
        return Err(IngestError::Fsck { id, kind, problem });
    }
    traversed.map_err(invalid)?;
    // git's `index-pack --strict`: what the pack's objects name is in the pack or in the
    // repository, with the kind they name it as.
    let mut links = links.into_inner().unwrap_or_default();
    links.sort_unstable();
    links.dedup();
    for (id, expected) in links {
        if index.lookup(id).is_some() {
            continue;
        }
        use gix_object::FindHeader as _;
        match repository_objects.try_header(&id) {
            Ok(Some(header)) if header.kind == expected => {}
            Ok(Some(header)) => {
                return Err(IngestError::UnexpectedKind {
                    id,
                    expected,
                    found: header.kind,
                })
            }
            Ok(None) | Err(_) => return Err(IngestError::ExpectedObjectMissing { id }),
        }
    }
    Ok(PackFsck {
        warnings: warnings.into_inner().unwrap_or_default(),
    })
}

/// The objects `data` (an object of `kind`) names, as git's `fsck_walk()` finds them: a
/// commit's tree and parents (none for a commit in `shallow`), a tree's entries but
/// submodules, a tag's object. Whatever cannot be parsed names nothing (fsck reports it).
fn linked_objects(
    kind: Kind,
    data: &[u8],
    shallow: &HashSet<ObjectId>,
    id: &ObjectId,
    links: &mut Vec<(ObjectId, Kind)>,
) {
    let hex_id = |line: &[u8]| -> Option<ObjectId> {
        let hex = line.get(..OBJECT_HASH.len_in_hex())?;
        ObjectId::from_hex(hex).ok()
    };
    match kind {
        Kind::Commit => {
            let mut rest = data;
            if let Some(tree) = rest.strip_prefix(b"tree ").and_then(hex_id) {
                links.push((tree, Kind::Tree));
                rest = after_line(rest);
            }
            while let Some(parent) = rest.strip_prefix(b"parent ") {
                if let (Some(parent), false) = (hex_id(parent), shallow.contains(id)) {
                    links.push((parent, Kind::Commit));
                }
                rest = after_line(rest);
            }
        }
        Kind::Tree => {
            let mut rest = data;
            while !rest.is_empty() {
                let Ok((entry, after)) = tree::next_entry(rest, OBJECT_HASH.len_in_bytes()) else {
                    break;
                };
                rest = after;
                let linked = match entry.mode & S_IFMT {
                    S_IFDIR => Kind::Tree,
                    S_IFGITLINK => continue,
                    _ => Kind::Blob,
                };
                links.push((entry.id.to_owned(), linked));
            }
        }
        Kind::Tag => {
            let Some(rest) = data.strip_prefix(b"object ") else {
                return;
            };
            let Some(target) = hex_id(rest) else { return };
            let kind = after_line(rest)
                .strip_prefix(b"type ")
                .map(|line| &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())])
                .and_then(|name| Kind::from_bytes(name).ok());
            if let Some(kind) = kind {
                links.push((target, kind));
            }
        }
        Kind::Blob => {}
    }
}

/// How `fsck_object` and its checks hand each finding over: `Err` ends the check (an
/// error), `Ok` lets it go on (a warning or an ignored message).
pub(super) type Report<'a> = dyn FnMut(FsckProblem) -> Result<(), FsckProblem> + 'a;

/// Check one decoded object like git's `fsck_object()`, every finding through `report`.
///
/// Git's rules, not gitoxide's parsers: those refuse objects git accepts (a commit without a
/// message body, for one), and packgate reads commits and trees with parsers of its own that
/// follow git's.
pub(super) fn fsck_object_with(
    kind: Kind,
    data: &[u8],
    report: &mut Report<'_>,
) -> Result<(), FsckProblem> {
    match kind {
        Kind::Commit => fsck_commit(data, report),
        Kind::Tree => fsck_tree(data, report),
        Kind::Tag => fsck_tag(data, report),
        Kind::Blob => Ok(()),
    }
}

/// [`fsck_object_with()`] with receive-pack's default severities: the first error, if any.
#[cfg(test)]
pub(super) fn fsck_object(kind: Kind, data: &[u8]) -> Result<(), FsckProblem> {
    let options = FsckOptions::default();
    fsck_object_with(kind, data, &mut |found| options.judge(found).map(|_| ()))
}

/// Git's `verify_headers()`: no NUL in the header, and a header that ends with a newline.
pub(super) fn verify_headers(data: &[u8]) -> Result<(), FsckProblem> {
    for (position, &byte) in data.iter().enumerate() {
        match byte {
            0 => return Err(problem("nulInHeader", "unterminated header: NUL in header")),
            b'\n' if data.get(position + 1) == Some(&b'\n') => return Ok(()),
            _ => {}
        }
    }
    if data.last() == Some(&b'\n') {
        Ok(())
    } else {
        Err(problem("unterminatedHeader", "unterminated header"))
    }
}

/// `<hex id>\n` at the start of `data`: what follows it.
pub(super) fn hex_line(data: &[u8]) -> Option<&[u8]> {
    let hex_len = OBJECT_HASH.len_in_hex();
    let hex = data.get(..hex_len)?;
    if !hex.iter().all(u8::is_ascii_hexdigit) || data.get(hex_len) != Some(&b'\n') {
        return None;
    }
    Some(&data[hex_len + 1..])
}

/// Git's `fsck_commit()`.
pub(super) fn fsck_commit(data: &[u8], report: &mut Report<'_>) -> Result<(), FsckProblem> {
    if let Err(found) = verify_headers(data) {
        return report(found);
    }
    let Some(rest) = data.strip_prefix(b"tree ") else {
        return report(problem(
            "missingTree",
            "invalid format - expected 'tree' line",
        ));
    };
    let mut rest = match hex_line(rest) {
        Some(rest) => rest,
        None => {
            report(problem(
                "badTreeSha1",
                "invalid 'tree' line format - bad sha1",
            ))?;
            after_line(rest)
        }
    };
    while let Some(parent) = rest.strip_prefix(b"parent ") {
        rest = match hex_line(parent) {
            Some(rest) => rest,
            None => {
                report(problem(
                    "badParentSha1",
                    "invalid 'parent' line format - bad sha1",
                ))?;
                after_line(parent)
            }
        };
    }
    let mut authors = 0;
    while let Some(author) = rest.strip_prefix(b"author ") {
        authors += 1;
        rest = fsck_ident(author, report)?;
    }
    match authors {
        0 => report(problem(
            "missingAuthor",
            "invalid format - expected 'author' line",
        ))?,
        1 => {}
        _ => report(problem(
            "multipleAuthors",
            "invalid format - multiple 'author' lines",
        ))?,
    }
    let Some(committer) = rest.strip_prefix(b"committer ") else {
        return report(problem(
            "missingCommitter",
            "invalid format - expected 'committer' line",
        ));
    };
    fsck_ident(committer, report)?;
    if data.contains(&0) {
        report(problem("nulInCommit", "NUL byte in the commit object body"))?;
    }
    Ok(())
}

/// What follows the first line of `data`.
fn after_line(data: &[u8]) -> &[u8] {
    match data.iter().position(|&b| b == b'\n') {
        Some(end) => &data[end + 1..],
        None => &data[data.len()..],
    }
}

/// Git's `fsck_tag_standalone()`.
pub(super) fn fsck_tag(data: &[u8], report: &mut Report<'_>) -> Result<(), FsckProblem> {
    if let Err(found) = verify_headers(data) {
        return report(found);
    }
    let Some(rest) = data.strip_prefix(b"object ") else {
        return report(problem(
            "missingObject",
            "invalid format - expected 'object' line",
        ));
    };
    let Some(rest) = hex_line(rest) else {
        return report(problem(
            "badObjectSha1",
            "invalid 'object' line format - bad sha1",
        ));
    };
    let Some(rest) = rest.strip_prefix(b"type ") else {
        return report(problem(
            "missingTypeEntry",
            "invalid format - expected 'type' line",
        ));
    };
    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
        return report(problem(
            "missingType",
            "invalid format - unexpected end after 'type' line",
        ));
    };
    if !matches!(&rest[..end], b"commit" | b"tree" | b"blob" | b"tag") {
        report(problem("badType", "invalid 'type' value"))?;
    }
    let Some(rest) = rest[end + 1..].strip_prefix(b"tag ") else {
        return report(problem(
            "missingTagEntry",
            "invalid format - expected 'tag' line",
        ));
    };
    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
        return report(problem(
            "missingTag",
            "invalid format - unexpected end after 'type' line",
        ));
    };
    // Early tags have no tagger: only informational for git.
    match rest[end + 1..].strip_prefix(b"tagger ") {
        Some(tagger) => {
            fsck_ident(tagger, report)?;
        }
        None => report(problem(
            "missingTaggerEntry",
            "invalid format - expected 'tagger' line",
        ))?,
    }
    Ok(())
}

/// Git's `fsck_ident()` on `name <email> date tz\n`; returns what follows the line.
pub(super) fn fsck_ident<'a>(
    line: &'a [u8],
    report: &mut Report<'_>,
) -> Result<&'a [u8], FsckProblem> {
    let rest = match line.iter().position(|&b| b == b'\n') {
        Some(end) => &line[end + 1..],
        None => &line[line.len()..],
    };
    // Git reads a NUL-terminated buffer.
    let at = |position: usize| line.get(position).copied().unwrap_or(0);
    let span_until = |start: usize, stops: &[u8]| {
        (start..)
            .find(|&position| {
                let byte = at(position);
                byte == 0 || stops.contains(&byte)
            })
            .unwrap_or(start)
    };
    let mut p = 0;
    if at(p) == b'<' {
        return report(problem(
            "missingNameBeforeEmail",
            "invalid author/committer line - missing space before email",
        ))
        .map(|()| rest);
    }
    p = span_until(p, b"<>\n");
    if at(p) == b'>' {
        return report(problem(
            "badName",
            "invalid author/committer line - bad name",
        ))
        .map(|()| rest);
    }
    if at(p) != b'<' {
        return report(problem(
            "missingEmail",
            "invalid author/committer line - missing email",
        ))
        .map(|()| rest);
    }
    if p == 0 || at(p - 1) != b' ' {
        return report(problem(
            "missingSpaceBeforeEmail",
            "invalid author/committer line - missing space before email",
        ))
        .map(|()| rest);
    }
    p = span_until(p + 1, b"<>\n");
    if at(p) != b'>' {
        return report(problem(
            "badEmail",
            "invalid author/committer line - bad email",
        ))
        .map(|()| rest);
    }
    p += 1;
    if at(p) != b' ' {
        return report(problem(
            "missingSpaceBeforeDate",
            "invalid author/committer line - missing space before date",
        ))
        .map(|()| rest);
    }
    p += 1;
    if at(p) == b'0' && at(p + 1) != b' ' {
        return report(problem(
            "zeroPaddedDate",
            "invalid author/committer line - zero-padded date",
        ))
        .map(|()| rest);
    }
    // Git's parse_timestamp(): leading white space, then digits (no sign).
    let mut q = p;
    while matches!(at(q), b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r') {
        q += 1;
    }
    let digits_start = q;
    let mut value: u64 = 0;
    let mut overflow = false;
    while at(q).is_ascii_digit() {
        match value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(at(q) - b'0')))
        {
            Some(v) => value = v,
            None => overflow = true,
        }
        q += 1;
    }
    if q == digits_start {
        q = p; // `end` is the start when nothing was parsed
    }
    if overflow || value > i64::MAX as u64 {
        return report(problem(
            "badDateOverflow",
            "invalid author/committer line - date causes integer overflow",
        ))
        .map(|()| rest);
    }
    if q == p || at(q) != b' ' {
        return report(problem(
            "badDate",
            "invalid author/committer line - bad date",
        ))
        .map(|()| rest);
    }
    p = q + 1;
    if !matches!(at(p), b'+' | b'-')
        || !(1..=4).all(|offset| at(p + offset).is_ascii_digit())
        || at(p + 5) != b'\n'
    {
        return report(problem(
            "badTimezone",
            "invalid author/committer line - bad time zone",
        ))
        .map(|()| rest);
    }
    Ok(rest)
}

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
const S_IFGITLINK: u32 = 0o160000;

/// Git's `fsck_tree()` in strict mode.
pub(super) fn fsck_tree(data: &[u8], report: &mut Report<'_>) -> Result<(), FsckProblem> {
    let bad_tree = problem("badTree", "cannot be parsed as a tree");
    let hash_len = OBJECT_HASH.len_in_bytes();
    let mut has_bad_tree = false;
    let mut has_gitmodules_symlink = false;
    let mut has_null_id = false;
    let mut has_full_path = false;
    let mut has_dot = false;
    let mut has_dotdot = false;
    let mut has_dotgit = false;
    let mut has_zero_pad = false;
    let mut has_bad_modes = false;
    let mut has_duplicates = false;
    let mut not_sorted = false;
    let mut previous: Option<(u32, &[u8])> = None;
    let mut candidates: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let Ok((entry, after)) = tree::next_entry(rest, hash_len) else {
            // What came before is still reported, as git's loop does.
            has_bad_tree = true;
            break;
        };
        // git's `decode_tree_entry()` takes an empty mode for 0; fsck refuses the tree.
        if entry.mode_bytes.is_empty() {
            has_bad_tree = true;
            break;
        }
        rest = after;
        let name = entry.name;
        has_null_id |= entry.id.is_null();
        has_full_path |= name.contains(&b'/');
        has_dot |= name == b".";
        has_dotdot |= name == b"..";
        has_dotgit |= is_hfs_dotgit(name) || is_ntfs_dotgit(name);
        has_zero_pad |= entry.mode_bytes.first() == Some(&b'0');
        let is_symlink = entry.mode & S_IFMT == S_IFLNK;
        has_gitmodules_symlink |=
            is_symlink && (is_hfs_dot(name, b"gitmodules") || is_ntfs_dotgitmodules(name));
        for (position, _) in name.iter().enumerate().filter(|(_, &b)| b == b'\\') {
            let after_backslash = &name[position + 1..];
            has_dotgit |= is_ntfs_dotgit(after_backslash);
            has_gitmodules_symlink |= is_symlink && is_ntfs_dotgitmodules(after_backslash);
        }
        has_bad_modes |= !matches!(
            entry.mode,
            0o100755 | 0o100644 | 0o100664 | 0o120000 | 0o040000 | 0o160000
        );
        if let Some((previous_mode, previous_name)) = previous {
            match verify_ordered(
                previous_mode,
                previous_name,
                entry.mode,
                name,
                &mut candidates,
            ) {
                Order::Ordered => {}
                Order::Unordered => not_sorted = true,
                Order::Duplicate => has_duplicates = true,
            }
        }
        previous = Some((entry.mode, name));
    }
    // As git's `fsck_tree()`: every finding is reported; the first error decides.
    let checks = [
        (
            has_gitmodules_symlink,
            problem("gitmodulesSymlink", ".gitmodules is a symbolic link"),
        ),
        (has_bad_tree, bad_tree),
        (
            has_null_id,
            problem("nullSha1", "contains entries pointing to null sha1"),
        ),
        (
            has_full_path,
            problem("fullPathname", "contains full pathnames"),
        ),
        (has_dot, problem("hasDot", "contains '.'")),
        (has_dotdot, problem("hasDotdot", "contains '..'")),
        (has_dotgit, problem("hasDotgit", "contains '.git'")),
        (
            has_zero_pad,
            problem("zeroPaddedFilemode", "contains zero-padded file modes"),
        ),
        (
            has_bad_modes,
            problem("badFilemode", "contains bad file modes"),
        ),
        (
            has_duplicates,
            problem("duplicateEntries", "contains duplicate file entries"),
        ),
        (not_sorted, problem("treeNotSorted", "not properly sorted")),
    ];
    let mut first_error = None;
    for (_, found) in checks.into_iter().filter(|(failed, _)| *failed) {
        if let Err(error) = report(found) {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

pub(super) enum Order {
    Ordered,
    Unordered,
    Duplicate,
}

pub(super) fn is_less_than_slash(byte: u8) -> bool {
    byte != 0 && byte < b'/'
}

/// Git's `verify_ordered()`, with its stack of names that could be duplicated by a later
/// directory (`foo`, `foo.bar`, `foo/`).
pub(super) fn verify_ordered<'a>(
    mode1: u32,
    name1: &'a [u8],
    mode2: u32,
    name2: &'a [u8],
    candidates: &mut Vec<&'a [u8]>,
) -> Order {
    let common = name1.len().min(name2.len());
    match name1[..common].cmp(&name2[..common]) {
        std::cmp::Ordering::Less => return Order::Ordered,
        std::cmp::Ordering::Greater => return Order::Unordered,
        std::cmp::Ordering::Equal => {}
    }
    let mut c1 = name1.get(common).copied().unwrap_or(0);
    let mut c2 = name2.get(common).copied().unwrap_or(0);
    if c1 == 0 && c2 == 0 {
        return Order::Duplicate;
    }
    if c1 == 0 && mode1 & S_IFMT == S_IFDIR {
        c1 = b'/';
    }
    if c2 == 0 && mode2 & S_IFMT == S_IFDIR {
        c2 = b'/';
    }
    if c1 == 0 && is_less_than_slash(c2) {
        candidates.push(name1);
    } else if c2 == b'/' && is_less_than_slash(c1) {
        while let Some(&file) = candidates.last() {
            let Some(after) = name2.strip_prefix(file) else {
                break;
            };
            match after.first() {
                None => return Order::Duplicate,
                Some(&byte) if is_less_than_slash(byte) => {
                    candidates.pop();
                }
                Some(_) => break,
            }
        }
    }
    if c1 < c2 {
        Order::Ordered
    } else {
        Order::Unordered
    }
}

/// Git's `next_hfs_char()` over a whole name: characters with HFS+'s ignored code points left
/// out and ASCII lowercased; malformed UTF-8 ends the name (git returns 0 there too).
pub(super) fn hfs_chars(name: &[u8]) -> impl Iterator<Item = char> + '_ {
    name.utf8_chunks()
        .scan(false, |ended, chunk| {
            if *ended {
                return None;
            }
            *ended = !chunk.invalid().is_empty();
            Some(chunk.valid().chars())
        })
        .flatten()
        .filter(|c| {
            !matches!(
                c,
                '\u{200c}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{206a}'..='\u{206f}' | '\u{feff}'
            )
        })
        .map(|c| c.to_ascii_lowercase())
}

/// Git's `is_hfs_dot_generic()`: `.<needle>` as HFS+ would see it.
pub(super) fn is_hfs_dot(name: &[u8], needle: &[u8]) -> bool {
    let mut chars = hfs_chars(name);
    if chars.next() != Some('.') {
        return false;
    }
    for &expected in needle {
        if chars.next() != Some(char::from(expected)) {
            return false;
        }
    }
    matches!(chars.next(), None | Some('/'))
}

pub(super) fn is_hfs_dotgit(name: &[u8]) -> bool {
    is_hfs_dot(name, b"git")
}

/// Git's `is_ntfs_dotgit()`: `.git` or `git~1`, followed only by spaces and dots up to the
/// end, a directory separator or `:`.
pub(super) fn is_ntfs_dotgit(name: &[u8]) -> bool {
    let at = |position: usize| name.get(position).copied().unwrap_or(0);
    let rest_start = if at(0) == b'.' {
        if !name
            .get(1..4)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"git"))
        {
            return false;
        }
        4
    } else if at(0).eq_ignore_ascii_case(&b'g') {
        if !name
            .get(1..5)
            .is_some_and(|s| s[..2].eq_ignore_ascii_case(b"it") && s[2] == b'~' && s[3] == b'1')
        {
            return false;
        }
        5
    } else {
        return false;
    };
    for position in rest_start.. {
        match at(position) {
            0 | b'/' | b'\\' | b':' => return true,
            b'.' | b' ' => {}
            _ => return false,
        }
    }
    false
}

/// Git's `is_ntfs_dot_generic()` for `.gitmodules` (short names `gitmod~N`, `gi7eba~N`).
pub(super) fn is_ntfs_dotgitmodules(name: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"gitmodules";
    const SHORT_PREFIX: &[u8] = b"gi7eba";
    let at = |position: usize| name.get(position).copied().unwrap_or(0);
    let only_spaces_and_periods = |mut position: usize| loop {
        match at(position) {
            0 | b':' => return true,
            b' ' | b'.' => position += 1,
            _ => return false,
        }
    };
    if at(0) == b'.'
        && name
            .get(1..1 + NEEDLE.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(NEEDLE))
    {
        return only_spaces_and_periods(1 + NEEDLE.len());
    }
    if name
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case(&NEEDLE[..6]))
        && at(6) == b'~'
        && (b'1'..=b'4').contains(&at(7))
    {
        return only_spaces_and_periods(8);
    }
    let mut saw_tilde = false;
    let mut position = 0;
    while position < 8 {
        let byte = at(position);
        if byte == 0 {
            return false;
        } else if saw_tilde {
            if !byte.is_ascii_digit() {
                return false;
            }
        } else if byte == b'~' {
            position += 1;
            if !(b'1'..=b'9').contains(&at(position)) {
                return false;
            }
            saw_tilde = true;
        } else if position >= 6
            || byte & 0x80 != 0
            || byte.to_ascii_lowercase() != SHORT_PREFIX[position]
        {
            return false;
        }
        position += 1;
    }
    only_spaces_and_periods(8)
}
