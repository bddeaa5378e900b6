//! Ref names and prefixes from clients, validated before anything reads the file system.
//!
//! Loose refs are files below the git directory, so a name or prefix that is not a valid ref
//! name (`refs/../../etc/`) would be a path out of the repository. Every client-supplied name
//! is turned into one of these types at the protocol boundary, with git's rules
//! (`git check-ref-format`, as gix-validate implements them).

use bstr::{BStr, BString, ByteSlice};

/// Where the refs a [`RefPrefix`] can match live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixScope {
    /// The prefix is a prefix of `refs/` itself (``, `r`, …, `refs/`): every ref matches.
    AllRefs,
    /// The prefix starts with `refs/` and can begin a valid ref name: the refs below the
    /// directory that holds its last component may match.
    Loose,
    /// No ref below `refs/` can start with it (`HEAD`, `refs/../x`, `refs/heads//`): only a
    /// plain string comparison (with `HEAD`) may match it, and it reads nothing.
    NoRefs,
}

/// An `ls-refs` `ref-prefix`: a string a ref name must start with (git compares strings),
/// classified by what it can match.
///
/// A prefix is a valid beginning of a ref name when each of its complete components is a
/// valid component and its last, partial one can begin one (no `..`, no leading `.`, no
/// empty component, no control characters, …): exactly when adding one ordinary character
/// makes a valid ref name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefPrefix {
    text: BString,
    scope: PrefixScope,
}

impl RefPrefix {
    /// Classify `text` as sent by a client.
    pub fn new(text: impl Into<BString>) -> RefPrefix {
        let text = text.into();
        let scope = if b"refs/".starts_with(&text) {
            PrefixScope::AllRefs
        } else if text.starts_with(b"refs/") && can_begin_ref_name(text.as_bstr()) {
            PrefixScope::Loose
        } else {
            PrefixScope::NoRefs
        };
        RefPrefix { text, scope }
    }

    /// The prefix as sent.
    pub fn as_bstr(&self) -> &BStr {
        self.text.as_bstr()
    }

    /// What it can match.
    pub fn scope(&self) -> PrefixScope {
        self.scope
    }

    /// Whether `name` starts with this prefix (git's comparison).
    pub fn matches(&self, name: &[u8]) -> bool {
        name.starts_with(&self.text)
    }
}

/// Whether some valid ref name starts with `prefix`.
fn can_begin_ref_name(prefix: &BStr) -> bool {
    // Every rule of a ref name is about a component or its neighbours; an ordinary character
    // after the prefix completes its last component (or starts one after a `/`) without
    // adding a violation, and can't remove one either.
    let mut candidate = BString::from(Vec::with_capacity(prefix.len() + 1));
    candidate.extend_from_slice(prefix);
    candidate.push(b'x');
    gix_ref::FullName::try_from(candidate).is_ok()
}

/// The error of [`pushable_ref_name`]: git refuses to update this ref remotely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing to update funny ref '{name}' remotely")]
pub struct FunnyRefName {
    /// The name as sent, lossily shown.
    pub name: String,
}

/// The ref a push command may update: below `refs/`, a valid ref name, and, unless it is a
/// deletion, with at least two components after `refs/` (git's `update()` in receive-pack).
pub fn pushable_ref_name(name: &BStr, is_delete: bool) -> Result<gix_ref::FullName, FunnyRefName> {
    let funny = || FunnyRefName {
        name: name.to_string(),
    };
    let rest = name.strip_prefix(b"refs/").ok_or_else(funny)?;
    if !is_delete && !rest.contains(&b'/') {
        return Err(funny());
    }
    gix_ref::FullName::try_from(name).map_err(|_| funny())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(prefix: &str, expected: PrefixScope) {
        assert_eq!(
            RefPrefix::new(prefix).scope(),
            expected,
            "prefix {prefix:?}"
        );
    }

    #[test]
    fn prefixes() {
        use PrefixScope::*;
        for all in ["", "r", "ref", "refs", "refs/"] {
            check(all, AllRefs);
        }
        for loose in [
            "refs/heads/",
            "refs/heads/ma",
            "refs/heads/main",
            "refs/heads/team/",
            "refs/heads/a.",
            "refs/heads/a./b",
            "refs/heads/a.lock",
            "refs/heads/x@",
            "refs/heads/@",
            "refs/tags/v1.0",
            "refs/h",
        ] {
            check(loose, Loose);
        }
        for none in [
            "HEAD",
            "H",
            "heads/",
            "/etc/",
            "refs/..",
            "refs/../",
            "refs/../../../../root/",
            "refs/heads/../../../x",
            "refs/heads/.",
            "refs/heads/.x",
            "refs/heads/a..",
            "refs/heads//",
            "refs//",
            "refs/heads/a.lock/",
            "refs/heads/x@{",
            "refs/heads/a b",
            "refs/heads/a\tb",
            "refs/heads/a\x7f",
            "refs/heads/a\\b",
            "refs/heads/a:b",
            "refs/heads/a*",
            "refs/heads/a?",
            "refs/heads/a[",
            "refs/heads/a~",
            "refs/heads/a^",
        ] {
            check(none, NoRefs);
        }
    }

    #[test]
    fn matching_is_string_comparison() {
        assert!(RefPrefix::new("refs/heads/ma").matches(b"refs/heads/main"));
        assert!(RefPrefix::new("H").matches(b"HEAD"));
        assert!(RefPrefix::new("").matches(b"HEAD"));
        assert!(!RefPrefix::new("refs/heads/main").matches(b"refs/heads/ma"));
    }

    #[test]
    fn push_names() {
        let ok = |name: &str, delete: bool| pushable_ref_name(name.into(), delete).is_ok();
        assert!(ok("refs/heads/main", false));
        assert!(ok("refs/heads/a/b", false));
        assert!(!ok("refs/foo", false));
        assert!(ok("refs/foo", true));
        assert!(!ok("HEAD", false));
        assert!(!ok("refs/heads/../x", false));
        assert!(!ok("refs/heads/x.lock", false));
        assert!(!ok("refs/heads/", true));
        assert!(!ok("heads/main", false));
    }
}
