//! Partial clone filters: the `--filter=<spec>` of `git rev-list` and of a `fetch` request.
//!
//! [`FilterSpec::parse()`] turns a client's spec into a typed value with git 2.47's rules and
//! error wording (`list-objects-filter-options.c`): `blob:none`, `blob:limit=<n>[kmg]`,
//! `tree:<depth>`, `object:type=<type>`, `sparse:oid=<blob-ish>` and
//! `combine:<spec>+<spec>+...` with %-encoded sub-specs. `sparse:path=` is refused, as git
//! dropped it.
//!
//! A spec names the blob of `sparse:oid` by an expression the server resolves; once it has the
//! blob's content, [`FilterSpec::resolve()`] makes the [`Filter`] that
//! [`enumerate`](crate::enumerate) applies.
//!
//! Sans I/O: nothing here reads a repository.

use bstr::{BStr, BString, ByteSlice};
use gix_object::Kind;

/// A parsed filter spec, as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterSpec {
    /// `blob:none`: no blobs.
    BlobNone,
    /// `blob:limit=<n>`: only blobs smaller than `n` bytes.
    BlobLimit(u64),
    /// `tree:<depth>`: no trees or blobs at depth `depth` or deeper (a commit's root tree is
    /// at depth 0, so `tree:0` sends no trees at all).
    TreeDepth(u64),
    /// `sparse:oid=<blob-ish>`: only blobs whose path the sparse-checkout patterns in that blob
    /// include. The expression is resolved by the server.
    SparseOid(BString),
    /// `object:type=<type>`: only objects of that type.
    ObjectType(Kind),
    /// `combine:<a>+<b>+...`: only objects every sub-filter includes.
    Combine(Vec<FilterSpec>),
}

/// Why a filter spec was refused; the messages are git's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterSpecError {
    /// Not a filter git knows, or a malformed `blob:limit`.
    #[error("invalid filter-spec '{0}'")]
    Invalid(BString),
    /// `tree:` without a valid depth.
    #[error("expected 'tree:<depth>'")]
    TreeDepth,
    /// `object:type=` with something else than blob, tree, commit or tag.
    #[error("'{0}' for 'object:type=<type>' is not a valid object type")]
    ObjectType(BString),
    /// `sparse:path=`, which git no longer supports.
    #[error("sparse:path filters support has been dropped")]
    SparsePath,
    /// A sub-spec of `combine:` with a character that must be %-encoded.
    #[error("must escape char in sub-filter-spec: '{}'", char::from(*.0))]
    MustEscape(u8),
    /// `combine:` and nothing after it.
    #[error("expected something after combine:")]
    EmptyCombine,
}

/// Characters besides whitespace and controls that a sub-spec of `combine:` must %-encode.
const RESERVED: &[u8] = b"~`!@#$^&*()[]{}\\;'\",<>?";

impl FilterSpec {
    /// Parse a filter spec with git's rules.
    pub fn parse(spec: &[u8]) -> Result<FilterSpec, FilterSpecError> {
        if spec == b"blob:none" {
            return Ok(FilterSpec::BlobNone);
        }
        if let Some(value) = spec.strip_prefix(b"blob:limit=") {
            if let Some(limit) = parse_ulong(value) {
                return Ok(FilterSpec::BlobLimit(limit));
            }
        } else if let Some(value) = spec.strip_prefix(b"tree:") {
            return parse_ulong(value)
                .map(FilterSpec::TreeDepth)
                .ok_or(FilterSpecError::TreeDepth);
        } else if let Some(value) = spec.strip_prefix(b"sparse:oid=") {
            return Ok(FilterSpec::SparseOid(value.into()));
        } else if spec.starts_with(b"sparse:path=") {
            return Err(FilterSpecError::SparsePath);
        } else if let Some(value) = spec.strip_prefix(b"object:type=") {
            let kind = match value {
                b"blob" => Kind::Blob,
                b"tree" => Kind::Tree,
                b"commit" => Kind::Commit,
                b"tag" => Kind::Tag,
                _ => return Err(FilterSpecError::ObjectType(value.into())),
            };
            return Ok(FilterSpec::ObjectType(kind));
        } else if let Some(value) = spec.strip_prefix(b"combine:") {
            return parse_combine(value);
        }
        Err(FilterSpecError::Invalid(spec.into()))
    }

    /// The name git's `uploadpackfilter.<name>.allow` uses for this kind of filter.
    pub fn config_name(&self) -> &'static str {
        match self {
            FilterSpec::BlobNone => "blob:none",
            FilterSpec::BlobLimit(_) => "blob:limit",
            FilterSpec::TreeDepth(_) => "tree",
            FilterSpec::SparseOid(_) => "sparse:oid",
            FilterSpec::ObjectType(_) => "object:type",
            FilterSpec::Combine(_) => "combine",
        }
    }

    /// This spec and, for `combine:`, every sub-spec below it, depth first.
    pub fn all(&self) -> Vec<&FilterSpec> {
        let mut out = vec![self];
        if let FilterSpec::Combine(subs) = self {
            for sub in subs {
                out.extend(sub.all());
            }
        }
        out
    }

    /// The filter to apply, with the content of each `sparse:oid` blob from `sparse_blob`
    /// (which gets the expression the client sent and returns the blob's data, or `None` if
    /// it names no blob). The error is the expression that did not resolve.
    pub fn resolve(
        &self,
        sparse_blob: &mut dyn FnMut(&BStr) -> Option<Vec<u8>>,
    ) -> Result<Filter, BString> {
        Ok(match self {
            FilterSpec::BlobNone => Filter::BlobNone,
            FilterSpec::BlobLimit(limit) => Filter::BlobLimit(*limit),
            FilterSpec::TreeDepth(depth) => Filter::TreeDepth(*depth),
            FilterSpec::ObjectType(kind) => Filter::ObjectType(*kind),
            FilterSpec::SparseOid(name) => match sparse_blob(name.as_bstr()) {
                Some(data) => Filter::Sparse(SparsePatterns::parse(&data)),
                None => return Err(name.clone()),
            },
            FilterSpec::Combine(subs) => Filter::Combine(
                subs.iter()
                    .map(|sub| sub.resolve(sparse_blob))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

/// `combine:`'s value: sub-specs separated by `+`, each %-decoded after checking that nothing
/// that must be encoded is left unencoded.
fn parse_combine(value: &[u8]) -> Result<FilterSpec, FilterSpecError> {
    if value.is_empty() {
        return Err(FilterSpecError::EmptyCombine);
    }
    // Git splits after each '+' and removes it from every part but the last, so a trailing
    // '+' stays in the last part and makes it invalid.
    let parts: Vec<&[u8]> = value.split_inclusive(|&byte| byte == b'+').collect();
    let last = parts.len() - 1;
    let mut subs = Vec::with_capacity(parts.len());
    for (index, part) in parts.into_iter().enumerate() {
        let part = match part.strip_suffix(b"+") {
            Some(stripped) if index != last => stripped,
            _ => part,
        };
        if let Some(&byte) = part
            .iter()
            .find(|&&byte| byte <= b' ' || RESERVED.contains(&byte))
        {
            return Err(FilterSpecError::MustEscape(byte));
        }
        subs.push(FilterSpec::parse(&percent_decode(part))?);
    }
    Ok(FilterSpec::Combine(subs))
}

/// `%XX` decoded; a `%` not followed by two hex digits stays as it is.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut index = 0;
    while let Some(&byte) = input.get(index) {
        if byte == b'%' {
            let high = input
                .get(index + 1)
                .and_then(|&b| char::from(b).to_digit(16));
            let low = input
                .get(index + 2)
                .and_then(|&b| char::from(b).to_digit(16));
            if let (Some(high), Some(low)) = (high, low) {
                // Two hex digits make at most 255.
                out.push(u8::try_from(high * 16 + low).unwrap_or(u8::MAX));
                index += 3;
                continue;
            }
        }
        out.push(byte);
        index += 1;
    }
    out
}

/// Git's `git_parse_ulong()`: a number as C's `strtoumax` with base 0 reads it (decimal,
/// `0x` hex, `0` octal), then an optional unit `k`, `m` or `g` (powers of 1024, either case);
/// nothing else, no minus sign anywhere, and no overflow.
fn parse_ulong(value: &[u8]) -> Option<u64> {
    if value.contains(&b'-') {
        return None;
    }
    let trimmed = value.trim_start();
    let unsigned = trimmed.strip_prefix(b"+").unwrap_or(trimmed);
    let (radix, digits) = match unsigned {
        [b'0', b'x' | b'X', next, ..] if next.is_ascii_hexdigit() => (16, &unsigned[2..]),
        [b'0', ..] => (8, unsigned),
        _ => (10, unsigned),
    };
    let end = digits
        .iter()
        .position(|&b| !char::from(b).is_digit(radix))
        .unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    let mut number: u64 = 0;
    for &byte in &digits[..end] {
        let digit = u64::from(char::from(byte).to_digit(radix)?);
        number = number.checked_mul(u64::from(radix))?.checked_add(digit)?;
    }
    let factor: u64 = match &digits[end..] {
        b"" => 1,
        [b'k' | b'K'] => 1 << 10,
        [b'm' | b'M'] => 1 << 20,
        [b'g' | b'G'] => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// A filter ready to apply: a [`FilterSpec`] with its `sparse:oid` blobs read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// No blobs.
    BlobNone,
    /// Only blobs smaller than this many bytes.
    BlobLimit(u64),
    /// No trees or blobs at this depth or deeper.
    TreeDepth(u64),
    /// Only blobs whose path these patterns include.
    Sparse(SparsePatterns),
    /// Only objects of this type.
    ObjectType(Kind),
    /// Only objects every sub-filter includes.
    Combine(Vec<Filter>),
}

/// Sparse-checkout patterns in git's non-cone mode: gitignore syntax, where the last pattern
/// that matches a path decides, a `!` pattern excluding it again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SparsePatterns {
    patterns: Vec<gix_glob::Pattern>,
}

/// What the patterns say about one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternMatch {
    /// The last matching pattern is a positive one.
    Matched,
    /// The last matching pattern is negated.
    NotMatched,
    /// No pattern matches: the path inherits its directory's answer.
    Undecided,
}

impl SparsePatterns {
    /// Read patterns from a file's content, as git reads a sparse-checkout file: one per line,
    /// blank lines and `#` comments skipped, trailing unescaped spaces removed.
    pub fn parse(data: &[u8]) -> SparsePatterns {
        let data = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
        let mut patterns = Vec::new();
        for line in data.lines() {
            if line.first() == Some(&b'#') {
                continue;
            }
            let line = trim_trailing_spaces(line);
            if let Some(pattern) = gix_glob::parse(line) {
                patterns.push(pattern);
            }
        }
        SparsePatterns { patterns }
    }

    /// Whether `path` (relative to the root, `/`-separated, no trailing slash) is included;
    /// `is_dir` for trees.
    pub fn matches(&self, path: &[u8], is_dir: bool) -> PatternMatch {
        let path = path.as_bstr();
        let basename = path.rfind_byte(b'/').map(|slash| slash + 1);
        for pattern in self.patterns.iter().rev() {
            if pattern.matches_repo_relative_path(
                path,
                basename,
                Some(is_dir),
                gix_glob::pattern::Case::Sensitive,
                gix_glob::wildmatch::Mode::NO_MATCH_SLASH_LITERAL,
            ) {
                return if pattern.is_negative() {
                    PatternMatch::NotMatched
                } else {
                    PatternMatch::Matched
                };
            }
        }
        PatternMatch::Undecided
    }
}

/// `line` without trailing spaces, unless the last one is escaped with a backslash.
fn trim_trailing_spaces(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && line[end - 1] == b' ' {
        if end >= 2 && line[end - 2] == b'\\' {
            break;
        }
        end -= 1;
    }
    &line[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<FilterSpec, String> {
        FilterSpec::parse(spec.as_bytes()).map_err(|err| err.to_string())
    }

    #[test]
    fn simple_specs() {
        assert_eq!(parse("blob:none"), Ok(FilterSpec::BlobNone));
        assert_eq!(parse("blob:limit=0"), Ok(FilterSpec::BlobLimit(0)));
        assert_eq!(parse("blob:limit=1k"), Ok(FilterSpec::BlobLimit(1024)));
        assert_eq!(parse("blob:limit=2M"), Ok(FilterSpec::BlobLimit(2 << 20)));
        assert_eq!(parse("blob:limit=1g"), Ok(FilterSpec::BlobLimit(1 << 30)));
        assert_eq!(parse("blob:limit=0x10"), Ok(FilterSpec::BlobLimit(16)));
        assert_eq!(parse("blob:limit=010"), Ok(FilterSpec::BlobLimit(8)));
        assert_eq!(parse("tree:0"), Ok(FilterSpec::TreeDepth(0)));
        assert_eq!(parse("tree:3"), Ok(FilterSpec::TreeDepth(3)));
        assert_eq!(
            parse("object:type=blob"),
            Ok(FilterSpec::ObjectType(Kind::Blob))
        );
        assert_eq!(
            parse("object:type=tag"),
            Ok(FilterSpec::ObjectType(Kind::Tag))
        );
        assert_eq!(
            parse("sparse:oid=main:.sparse"),
            Ok(FilterSpec::SparseOid("main:.sparse".into()))
        );
    }

    #[test]
    fn malformed_specs_with_gits_messages() {
        assert_eq!(
            parse("blob:nothing"),
            Err("invalid filter-spec 'blob:nothing'".into())
        );
        assert_eq!(
            parse("blob:limit="),
            Err("invalid filter-spec 'blob:limit='".into())
        );
        assert_eq!(
            parse("blob:limit=1x"),
            Err("invalid filter-spec 'blob:limit=1x'".into())
        );
        assert_eq!(
            parse("blob:limit=-1"),
            Err("invalid filter-spec 'blob:limit=-1'".into())
        );
        assert_eq!(
            parse("blob:limit=1kk"),
            Err("invalid filter-spec 'blob:limit=1kk'".into())
        );
        assert_eq!(
            parse("blob:limit=99999999999999999999"),
            Err("invalid filter-spec 'blob:limit=99999999999999999999'".into())
        );
        assert_eq!(
            parse("blob:limit=17179869184g"),
            Err("invalid filter-spec 'blob:limit=17179869184g'".into())
        );
        assert_eq!(parse(""), Err("invalid filter-spec ''".into()));
        assert_eq!(parse("tree:"), Err("expected 'tree:<depth>'".into()));
        assert_eq!(parse("tree:x"), Err("expected 'tree:<depth>'".into()));
        assert_eq!(parse("tree:-1"), Err("expected 'tree:<depth>'".into()));
        assert_eq!(
            parse("object:type=bolb"),
            Err("'bolb' for 'object:type=<type>' is not a valid object type".into())
        );
        assert_eq!(
            parse("object:type="),
            Err("'' for 'object:type=<type>' is not a valid object type".into())
        );
        assert_eq!(
            parse("sparse:path=x"),
            Err("sparse:path filters support has been dropped".into())
        );
        assert_eq!(
            parse("combine:"),
            Err("expected something after combine:".into())
        );
    }

    #[test]
    fn combine() {
        assert_eq!(
            parse("combine:blob:none+tree:2"),
            Ok(FilterSpec::Combine(vec![
                FilterSpec::BlobNone,
                FilterSpec::TreeDepth(2)
            ]))
        );
        // %-encoded sub-specs, nested combine.
        assert_eq!(
            parse("combine:sparse:oid=main%3a.sparse+combine:tree%3a1%2bblob%3anone"),
            Ok(FilterSpec::Combine(vec![
                FilterSpec::SparseOid("main:.sparse".into()),
                FilterSpec::Combine(vec![FilterSpec::TreeDepth(1), FilterSpec::BlobNone]),
            ]))
        );
        assert_eq!(
            parse("combine:sparse:oid=a%2Bb"),
            Ok(FilterSpec::Combine(vec![FilterSpec::SparseOid(
                "a+b".into()
            )]))
        );
        assert_eq!(
            parse("combine:blob:none+tree:x"),
            Err("expected 'tree:<depth>'".into())
        );
        assert_eq!(
            parse("combine:blob:none+"),
            Err("invalid filter-spec 'blob:none+'".into())
        );
        assert_eq!(
            parse("combine:blob:none++tree:1"),
            Err("invalid filter-spec ''".into())
        );
        assert_eq!(
            parse("combine:sparse:oid=a~b"),
            Err("must escape char in sub-filter-spec: '~'".into())
        );
        assert_eq!(
            parse("combine:sparse:oid=a b"),
            Err("must escape char in sub-filter-spec: ' '".into())
        );
        // An encoded reserved character is fine.
        assert_eq!(
            parse("combine:sparse:oid=a%7eb"),
            Ok(FilterSpec::Combine(vec![FilterSpec::SparseOid(
                "a~b".into()
            )]))
        );
        let spec = FilterSpec::parse(b"combine:blob:none+tree:2").unwrap();
        let names: Vec<_> = spec.all().iter().map(|s| s.config_name()).collect();
        assert_eq!(names, ["combine", "blob:none", "tree"]);
    }

    #[test]
    fn resolve() {
        let spec = FilterSpec::parse(b"combine:blob:limit=1+sparse:oid=x").unwrap();
        let filter = spec
            .resolve(&mut |name| (name == "x").then(|| b"/a\n".to_vec()))
            .unwrap();
        assert_eq!(
            filter,
            Filter::Combine(vec![
                Filter::BlobLimit(1),
                Filter::Sparse(SparsePatterns::parse(b"/a"))
            ])
        );
        let spec = FilterSpec::parse(b"sparse:oid=y").unwrap();
        assert_eq!(spec.resolve(&mut |_| None), Err(BString::from("y")));
    }

    #[test]
    fn sparse_patterns() {
        let patterns = SparsePatterns::parse(
            b"# comment\n/*\n!/*/\n/docs/\n!/docs/private/\n*.md  \n\n\\#hash\n",
        );
        let check = |path: &str, is_dir: bool| patterns.matches(path.as_bytes(), is_dir);
        assert_eq!(check("README", false), PatternMatch::Matched);
        assert_eq!(check("src", true), PatternMatch::NotMatched);
        assert_eq!(check("src/main.rs", false), PatternMatch::Undecided);
        assert_eq!(check("src/notes.md", false), PatternMatch::Matched);
        assert_eq!(check("docs", true), PatternMatch::Matched);
        assert_eq!(check("docs", false), PatternMatch::Matched);
        assert_eq!(check("docs/private", true), PatternMatch::NotMatched);
        assert_eq!(check("#hash", false), PatternMatch::Matched);
        assert_eq!(check("x/#hash", false), PatternMatch::Matched);
    }
}
