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
/// errors), for commits, trees and tags: header order and format, identities and dates, tree
/// entry names (`/`, `.`, `..`, `.git` and its HFS+/NTFS spellings), zero-padded modes,
/// duplicates and sort order, `.gitmodules` symlinks. In addition, tree entry modes must be
/// ones git writes (plus the historic `100664`); git only notes other modes. Not checked: the
/// contents of `.gitmodules` blobs.
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

pub(super) fn fsck_pack(
    index_path: &Path,
    pack_path: &Path,
    skip: &HashSet<ObjectId>,
    streamed: &ByOffset<ObjectId>,
    options: &IngestOptions,
    should_interrupt: &AtomicBool,
) -> Result<(), IngestError> {
    let invalid = |source| IngestError::InvalidPack { source };
    let index = gix_pack::index::File::at(index_path, OBJECT_HASH).map_err(invalid)?;
    let pack = gix_pack::data::File::at(pack_path, OBJECT_HASH)
        .map_err(invalid)?
        .with_alloc_limit_bytes(allocation_limit(options));
    let failure: Mutex<Option<(ObjectId, Kind, FsckProblem)>> = Mutex::new(None);
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
        let Err(problem) = fsck_object(kind, context.decompressed) else {
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
    Ok(())
}

/// Check one decoded object like git's `fsck_object()` in strict mode.
///
/// Git's rules, not gitoxide's parsers: those refuse objects git accepts (a commit without a
/// message body, for one), and packgate reads commits and trees with parsers of its own that
/// follow git's.
pub(super) fn fsck_object(kind: Kind, data: &[u8]) -> Result<(), FsckProblem> {
    match kind {
        Kind::Commit => fsck_commit(data),
        Kind::Tree => fsck_tree(data),
        Kind::Tag => fsck_tag(data),
        Kind::Blob => Ok(()),
    }
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
pub(super) fn fsck_commit(data: &[u8]) -> Result<(), FsckProblem> {
    verify_headers(data)?;
    let rest = data.strip_prefix(b"tree ").ok_or(problem(
        "missingTree",
        "invalid format - expected 'tree' line",
    ))?;
    let mut rest = hex_line(rest).ok_or(problem(
        "badTreeSha1",
        "invalid 'tree' line format - bad sha1",
    ))?;
    while let Some(parent) = rest.strip_prefix(b"parent ") {
        rest = hex_line(parent).ok_or(problem(
            "badParentSha1",
            "invalid 'parent' line format - bad sha1",
        ))?;
    }
    let mut authors = 0;
    while let Some(author) = rest.strip_prefix(b"author ") {
        authors += 1;
        rest = fsck_ident(author)?;
    }
    match authors {
        0 => {
            return Err(problem(
                "missingAuthor",
                "invalid format - expected 'author' line",
            ))
        }
        1 => {}
        _ => {
            return Err(problem(
                "multipleAuthors",
                "invalid format - multiple 'author' lines",
            ))
        }
    }
    let committer = rest.strip_prefix(b"committer ").ok_or(problem(
        "missingCommitter",
        "invalid format - expected 'committer' line",
    ))?;
    fsck_ident(committer)?;
    if data.contains(&0) {
        return Err(problem("nulInCommit", "NUL byte in the commit object body"));
    }
    Ok(())
}

/// Git's `fsck_tag_standalone()`.
pub(super) fn fsck_tag(data: &[u8]) -> Result<(), FsckProblem> {
    verify_headers(data)?;
    let rest = data.strip_prefix(b"object ").ok_or(problem(
        "missingObject",
        "invalid format - expected 'object' line",
    ))?;
    let rest = hex_line(rest).ok_or(problem(
        "badObjectSha1",
        "invalid 'object' line format - bad sha1",
    ))?;
    let rest = rest.strip_prefix(b"type ").ok_or(problem(
        "missingTypeEntry",
        "invalid format - expected 'type' line",
    ))?;
    let end = rest.iter().position(|&b| b == b'\n').ok_or(problem(
        "missingType",
        "invalid format - unexpected end after 'type' line",
    ))?;
    if !matches!(&rest[..end], b"commit" | b"tree" | b"blob" | b"tag") {
        return Err(problem("badType", "invalid 'type' value"));
    }
    let rest = rest[end + 1..].strip_prefix(b"tag ").ok_or(problem(
        "missingTagEntry",
        "invalid format - expected 'tag' line",
    ))?;
    let end = rest.iter().position(|&b| b == b'\n').ok_or(problem(
        "missingTag",
        "invalid format - unexpected end after 'type' line",
    ))?;
    // A missing tagger (early tags) and extra headers are only informational for git.
    if let Some(tagger) = rest[end + 1..].strip_prefix(b"tagger ") {
        fsck_ident(tagger)?;
    }
    Ok(())
}

/// Git's `fsck_ident()` on `name <email> date tz\n`; returns what follows the line.
pub(super) fn fsck_ident(line: &[u8]) -> Result<&[u8], FsckProblem> {
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
        return Err(problem(
            "missingNameBeforeEmail",
            "invalid author/committer line - missing space before email",
        ));
    }
    p = span_until(p, b"<>\n");
    if at(p) == b'>' {
        return Err(problem(
            "badName",
            "invalid author/committer line - bad name",
        ));
    }
    if at(p) != b'<' {
        return Err(problem(
            "missingEmail",
            "invalid author/committer line - missing email",
        ));
    }
    if p == 0 || at(p - 1) != b' ' {
        return Err(problem(
            "missingSpaceBeforeEmail",
            "invalid author/committer line - missing space before email",
        ));
    }
    p = span_until(p + 1, b"<>\n");
    if at(p) != b'>' {
        return Err(problem(
            "badEmail",
            "invalid author/committer line - bad email",
        ));
    }
    p += 1;
    if at(p) != b' ' {
        return Err(problem(
            "missingSpaceBeforeDate",
            "invalid author/committer line - missing space before date",
        ));
    }
    p += 1;
    if at(p) == b'0' && at(p + 1) != b' ' {
        return Err(problem(
            "zeroPaddedDate",
            "invalid author/committer line - zero-padded date",
        ));
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
        return Err(problem(
            "badDateOverflow",
            "invalid author/committer line - date causes integer overflow",
        ));
    }
    if q == p || at(q) != b' ' {
        return Err(problem(
            "badDate",
            "invalid author/committer line - bad date",
        ));
    }
    p = q + 1;
    if !matches!(at(p), b'+' | b'-')
        || !(1..=4).all(|offset| at(p + offset).is_ascii_digit())
        || at(p + 5) != b'\n'
    {
        return Err(problem(
            "badTimezone",
            "invalid author/committer line - bad time zone",
        ));
    }
    Ok(rest)
}

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

/// Git's `fsck_tree()` in strict mode.
pub(super) fn fsck_tree(data: &[u8]) -> Result<(), FsckProblem> {
    let bad_tree = problem("badTree", "cannot be parsed as a tree");
    let hash_len = OBJECT_HASH.len_in_bytes();
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
        let (entry, after) = tree::next_entry(rest, hash_len).map_err(|_| bad_tree)?;
        // git's `decode_tree_entry()` takes an empty mode for 0; fsck refuses the tree.
        if entry.mode_bytes.is_empty() {
            return Err(bad_tree);
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
        if is_symlink && (is_hfs_dot(name, b"gitmodules") || is_ntfs_dotgitmodules(name)) {
            return Err(problem(
                "gitmodulesSymlink",
                ".gitmodules is a symbolic link",
            ));
        }
        for (position, _) in name.iter().enumerate().filter(|(_, &b)| b == b'\\') {
            let after_backslash = &name[position + 1..];
            has_dotgit |= is_ntfs_dotgit(after_backslash);
            if is_symlink && is_ntfs_dotgitmodules(after_backslash) {
                return Err(problem(
                    "gitmodulesSymlink",
                    ".gitmodules is a symbolic link",
                ));
            }
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
    let checks = [
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
    match checks.into_iter().find(|(failed, _)| *failed) {
        Some((_, found)) => Err(found),
        None => Ok(()),
    }
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
