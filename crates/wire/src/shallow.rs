//! The shallow-fetch lines of an upload-pack request, sans IO: `shallow <id>`, `deepen <n>`,
//! `deepen-since <time>` and `deepen-not <ref>`, the same in a v0/v1 want section and among
//! the arguments of a v2 `fetch`, read as git 2.47's `upload-pack.c` reads them
//! (`process_shallow()`, `process_deepen()`, `process_deepen_since()`,
//! `process_deepen_not()`), with its error wording.
//!
//! What the lines mean (which shallow commits exist, which ref a `deepen-not` names) is for
//! the caller to judge: this module only checks their syntax.

use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;

/// git's `INFINITE_DEPTH`: the depth `git fetch --unshallow` asks for.
pub const INFINITE_DEPTH: u32 = 0x7fff_ffff;

/// One shallow-fetch line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShallowLine {
    /// `shallow <id>`: a commit the client has without its parents.
    Shallow(ObjectId),
    /// `deepen <n>`: a depth from the wants, at least 1.
    Deepen(u32),
    /// `deepen-since <time>`: no commits older than this (0: any age, but still a
    /// rev-list-style deepening, as in git).
    DeepenSince(u64),
    /// `deepen-not <ref>`: no commits reachable from this ref, as the client named it.
    DeepenNot(BString),
}

/// A malformed shallow-fetch line, in git's words (its `die()` messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShallowLineError {
    /// `shallow` without an object id.
    #[error("invalid shallow line: {}", Shown(line))]
    Shallow {
        /// The whole line.
        line: BString,
    },
    /// `deepen` without a positive number.
    #[error("Invalid deepen: {}", Shown(line))]
    Deepen {
        /// The whole line.
        line: BString,
    },
    /// `deepen-since` without a usable time.
    #[error("Invalid deepen-since: {}", Shown(line))]
    DeepenSince {
        /// The whole line.
        line: BString,
    },
}

/// A client's line in a message as git shows it (verbatim), cut after [`SHOWN_LENGTH`] bytes so
/// that the message fits in one pkt-line.
struct Shown<'a>(&'a BString);

/// How much of a line [`Shown`] shows.
const SHOWN_LENGTH: usize = 1000;

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get(..SHOWN_LENGTH) {
            Some(start) if start.len() < self.0.len() => write!(f, "{}...", start.as_bstr()),
            _ => write!(f, "{}", self.0.as_bstr()),
        }
    }
}

/// Parse `line` (without its LF) if it is a shallow-fetch line; `Ok(None)` if it is another
/// kind of line.
pub fn parse_shallow_line(line: &[u8]) -> Result<Option<ShallowLine>, ShallowLineError> {
    if let Some(arg) = line.strip_prefix(b"shallow ") {
        // git reads the id's digits and ignores whatever follows them.
        let id = arg
            .get(..gix_hash::Kind::Sha1.len_in_hex())
            .and_then(|hex| ObjectId::from_hex(hex).ok())
            .ok_or_else(|| ShallowLineError::Shallow { line: line.into() })?;
        return Ok(Some(ShallowLine::Shallow(id)));
    }
    if let Some(arg) = line.strip_prefix(b"deepen ") {
        // git: `(int)strtol(arg, &end, 0)`, nothing after the number, and above 0.
        let depth = strtol(arg)
            .map(|value| value as i32)
            .filter(|&depth| depth > 0)
            .ok_or_else(|| ShallowLineError::Deepen { line: line.into() })?;
        return Ok(Some(ShallowLine::Deepen(depth.unsigned_abs())));
    }
    if let Some(arg) = line.strip_prefix(b"deepen-since ") {
        // git: `strtoumax(arg, &end, 0)`, nothing after it, and not -1 (`--max-age`'s "unset").
        let since = strtoumax(arg)
            .filter(|&since| since != u64::MAX)
            .ok_or_else(|| ShallowLineError::DeepenSince { line: line.into() })?;
        return Ok(Some(ShallowLine::DeepenSince(since)));
    }
    if let Some(arg) = line.strip_prefix(b"deepen-not ") {
        return Ok(Some(ShallowLine::DeepenNot(arg.into())));
    }
    Ok(None)
}

/// The shallow-fetch part of one request, gathered from its lines in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShallowArguments {
    /// The client's shallow commits, each once, in the order sent.
    pub shallows: Vec<ObjectId>,
    /// The last `deepen`, 0 without one.
    pub depth: u32,
    /// The last `deepen-since`.
    pub since: Option<u64>,
    /// The `deepen-not` refs, each once, in the order sent.
    pub not: Vec<BString>,
    /// `deepen-relative` (a v2 argument, a v0 capability).
    pub relative: bool,
}

impl ShallowArguments {
    /// Take one parsed line.
    pub fn add(&mut self, line: ShallowLine) {
        match line {
            ShallowLine::Shallow(id) => {
                if !self.shallows.contains(&id) {
                    self.shallows.push(id);
                }
            }
            ShallowLine::Deepen(depth) => self.depth = depth,
            ShallowLine::DeepenSince(since) => self.since = Some(since),
            ShallowLine::DeepenNot(name) => {
                if !self.not.contains(&name) {
                    self.not.push(name);
                }
            }
        }
    }

    /// `deepen-since` or `deepen-not` was sent: git's `deepen_rev_list`.
    pub fn rev_list(&self) -> bool {
        self.since.is_some() || !self.not.is_empty()
    }

    /// Nothing shallow about the request: no shallow commits and no deepening.
    pub fn is_empty(&self) -> bool {
        self.depth == 0 && !self.rev_list() && self.shallows.is_empty()
    }
}

/// C's `strtol(s, &end, 0)` on the whole of `s` (`*end` must be the end): leading white
/// space, a sign, a base prefix (`0x`, `0`), clamped to `i64` on overflow. `None` if
/// anything follows the number. As in C, no digits at all reads as 0 with nothing consumed,
/// so only an empty (or blank) `s` gives `Some(0)` that way.
fn strtol(s: &[u8]) -> Option<i64> {
    let (negative, magnitude) = c_number(s)?;
    Some(match (negative, magnitude) {
        (false, m) => i64::try_from(m).unwrap_or(i64::MAX),
        (true, m) if m > i64::MAX as u64 + 1 => i64::MIN,
        (true, m) => (m as i64).wrapping_neg(),
    })
}

/// C's `strtoumax(s, &end, 0)` on the whole of `s`: a leading `-` negates in unsigned
/// arithmetic; overflow gives `u64::MAX`.
fn strtoumax(s: &[u8]) -> Option<u64> {
    let (negative, magnitude) = c_number(s)?;
    Some(if negative {
        magnitude.wrapping_neg()
    } else {
        magnitude
    })
}

/// The sign and magnitude (saturated at `u64::MAX`) of a C integer in base 0 that must fill
/// `s`, or `None`.
fn c_number(s: &[u8]) -> Option<(bool, u64)> {
    let start = s
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
        .count();
    let mut rest = &s[start..];
    let negative = match rest.first() {
        Some(b'-') => {
            rest = &rest[1..];
            true
        }
        Some(b'+') => {
            rest = &rest[1..];
            false
        }
        _ => false,
    };
    let (radix, digits) = match rest {
        [b'0', b'x' | b'X', tail @ ..] if tail.first().is_some_and(u8::is_ascii_hexdigit) => {
            (16, tail)
        }
        [b'0', ..] => (8, rest),
        _ => (10, rest),
    };
    let count = digits
        .iter()
        .take_while(|b| (**b as char).is_digit(radix))
        .count();
    if count == 0 {
        // No conversion: `end` is `s` itself, which is only "the end" when `s` is empty.
        return s.is_empty().then_some((false, 0));
    }
    if count != digits.len() {
        return None;
    }
    let mut value: u64 = 0;
    for &digit in digits {
        let digit = u64::from((digit as char).to_digit(radix).unwrap_or(0));
        value = value
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(digit))
            .unwrap_or(u64::MAX);
    }
    Some((negative, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expected: Result<Option<ShallowLine>, &str>) {
        assert_eq!(
            parse_shallow_line(line.as_bytes()).map_err(|err| err.to_string()),
            expected.map_err(str::to_owned),
            "{line:?}"
        );
    }

    #[test]
    fn lines() {
        let hex = "0123456789abcdef0123456789abcdef01234567";
        let id = ObjectId::from_hex(hex.as_bytes()).unwrap();
        check(
            &format!("shallow {hex}"),
            Ok(Some(ShallowLine::Shallow(id))),
        );
        check(
            &format!("shallow {hex}trailing"),
            Ok(Some(ShallowLine::Shallow(id))),
        );
        check("shallow 0123", Err("invalid shallow line: shallow 0123"));
        check("deepen 1", Ok(Some(ShallowLine::Deepen(1))));
        check("deepen 0x10", Ok(Some(ShallowLine::Deepen(16))));
        check("deepen 010", Ok(Some(ShallowLine::Deepen(8))));
        check(" deepen 1", Ok(None));
        check(
            "deepen 2147483647",
            Ok(Some(ShallowLine::Deepen(INFINITE_DEPTH))),
        );
        check("deepen 0", Err("Invalid deepen: deepen 0"));
        check("deepen -1", Err("Invalid deepen: deepen -1"));
        check("deepen ", Err("Invalid deepen: deepen "));
        check("deepen 1x", Err("Invalid deepen: deepen 1x"));
        check("deepen x", Err("Invalid deepen: deepen x"));
        // `(int)` of a long: git's truncation.
        check("deepen 4294967297", Ok(Some(ShallowLine::Deepen(1))));
        check(
            "deepen 4294967296",
            Err("Invalid deepen: deepen 4294967296"),
        );
        check(
            "deepen-since 1700000000",
            Ok(Some(ShallowLine::DeepenSince(1_700_000_000))),
        );
        check("deepen-since 0", Ok(Some(ShallowLine::DeepenSince(0))));
        check(
            "deepen-since -1",
            Err("Invalid deepen-since: deepen-since -1"),
        );
        check(
            "deepen-since 12a",
            Err("Invalid deepen-since: deepen-since 12a"),
        );
        check(
            "deepen-since 99999999999999999999999",
            Err("Invalid deepen-since: deepen-since 99999999999999999999999"),
        );
        check(
            "deepen-not refs/heads/main",
            Ok(Some(ShallowLine::DeepenNot("refs/heads/main".into()))),
        );
        check("deepen-relative", Ok(None));
        check(&format!("want {hex}"), Ok(None));
    }

    #[test]
    fn arguments_gather_lines_in_order() {
        let mut arguments = ShallowArguments::default();
        assert!(arguments.is_empty());
        let id = ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").unwrap();
        for line in [
            ShallowLine::Shallow(id),
            ShallowLine::Shallow(id),
            ShallowLine::Deepen(3),
            ShallowLine::Deepen(2),
            ShallowLine::DeepenNot("a".into()),
            ShallowLine::DeepenNot("a".into()),
        ] {
            arguments.add(line);
        }
        assert_eq!(arguments.shallows, [id]);
        assert_eq!(arguments.depth, 2);
        assert_eq!(arguments.not, ["a"]);
        assert!(arguments.rev_list());
        assert!(!arguments.is_empty());
    }
}
