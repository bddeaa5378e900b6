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

/// The error of [`Namespace::new`]: the namespace makes no valid ref names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad git namespace path \"{raw}\"")]
pub struct BadNamespace {
    /// The namespace as given, lossily shown.
    pub raw: String,
}

/// A git namespace (`GIT_NAMESPACE`, gitnamespaces(7)): the services see only the refs below
/// its prefix, with the prefix taken off. The one place where names map both ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// `refs/namespaces/a/refs/namespaces/b/` for `a/b`, always ending in `/`.
    prefix: BString,
}

impl Namespace {
    /// The namespace `raw` names, as git expands it: each `/`-separated component `c` becomes
    /// `refs/namespaces/c/`, empty components are skipped. `None` for an empty string (no
    /// namespace); an error when the result is no valid ref name (`a/`, `a..b`, …).
    pub fn new(raw: &[u8]) -> Result<Option<Namespace>, BadNamespace> {
        if raw.is_empty() {
            return Ok(None);
        }
        let components: Vec<&[u8]> = raw.split(|&b| b == b'/').collect();
        let last = components.len() - 1;
        let mut prefix = BString::default();
        for (index, component) in components.iter().enumerate() {
            if component.is_empty() {
                continue;
            }
            prefix.extend_from_slice(b"refs/namespaces/");
            prefix.extend_from_slice(component);
            if index != last {
                prefix.push(b'/');
            }
        }
        let bad = || BadNamespace {
            raw: raw.as_bstr().to_string(),
        };
        gix_ref::FullName::try_from(prefix.clone()).map_err(|_| bad())?;
        prefix.push(b'/');
        Ok(Some(Namespace { prefix }))
    }

    /// The prefix every ref of the namespace has, ending in `/`.
    pub fn prefix(&self) -> &BStr {
        self.prefix.as_bstr()
    }

    /// The name in the repository of `name` as the namespace's clients know it
    /// (`refs/heads/main` → `refs/namespaces/a/refs/heads/main`, `HEAD` →
    /// `refs/namespaces/a/HEAD`).
    pub fn full(&self, name: &[u8]) -> BString {
        let mut full = self.prefix.clone();
        full.extend_from_slice(name);
        full
    }

    /// The name a client of the namespace knows `full` by: `None` when it is outside.
    pub fn strip<'a>(&self, full: &'a [u8]) -> Option<&'a [u8]> {
        full.strip_prefix(self.prefix.as_slice())
    }
}

/// Whether `name` is a valid full ref name (git's `check_refname_format` with one-level
/// names allowed, as gix-validate implements it), as a listing of `packed-refs` asks for
/// every ref it reads.
///
/// Names made of letters, digits, `_`, `-`, `/` and `.` alone — nearly all — are judged here
/// in one pass over the bytes (the rules that can concern them: no empty component, no
/// component that starts with `.` or ends with `.lock`, no `..`, no trailing `.`); any other
/// name goes to gix-validate, whose general checks cost several times more per name.
pub fn is_valid_full_name(name: &BStr) -> bool {
    match plain_name_is_valid(name) {
        Some(valid) => valid,
        None => <&gix_ref::FullNameRef>::try_from(name).is_ok(),
    }
}

/// [`is_valid_full_name()`] for names below `refs/` of the plain characters; `None` for
/// other names (gix-validate has further rules for names outside `refs/`).
fn plain_name_is_valid(name: &[u8]) -> Option<bool> {
    if !name.starts_with(b"refs/") {
        return None;
    }
    let mut previous = b'/';
    for &byte in name {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' => {}
            // An empty component, or one that starts with `.` (`..` included).
            b'/' | b'.' if previous == b'/' => return Some(false),
            b'.' if previous == b'.' => return Some(false),
            b'/' | b'.' => {}
            _ => return None,
        }
        previous = byte;
    }
    let valid = !name.is_empty()
        && previous != b'/'
        && previous != b'.'
        && !name
            .split(|&byte| byte == b'/')
            .any(|component| component.ends_with(b".lock"));
    Some(valid)
}

/// `name` with `namespace` applied, when there is one.
pub fn full_name<'a>(namespace: Option<&Namespace>, name: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
    match namespace {
        Some(namespace) => std::borrow::Cow::Owned(namespace.full(name).into()),
        None => std::borrow::Cow::Borrowed(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_judged_as_gix_validate_judges_them() {
        let names = [
            "refs/heads/main",
            "refs/tags/v2.47.0",
            "refs/heads/a.b.c",
            "refs/a./b",
            "refs/heads/-x",
            "refs/heads/_",
            "refs/heads/x.lock",
            "refs/heads/x.lock/y",
            "refs/heads/x.locks",
            "refs/heads/.x",
            "refs/heads/x.",
            "refs/heads/a..b",
            "refs//x",
            "refs/x/",
            "refs/heads/",
            "refs/.lock",
            "refs/heads/..",
            "refs/heads/lock",
            "refs/heads/.lock.x",
            "refs/heads/x/.",
            "refs/heads/x/..",
            "refs/tags/1.0-rc.1",
            "refs/a/b/c/d/e/f",
            "refs/heads/x.y/z",
        ];
        for name in names {
            let gix = <&gix_ref::FullNameRef>::try_from(name.as_bytes().as_bstr()).is_ok();
            assert_eq!(plain_name_is_valid(name.as_bytes()), Some(gix), "{name:?}");
            assert_eq!(is_valid_full_name(name.into()), gix, "{name:?}");
        }
        // Other characters go to gix-validate.
        for name in [
            "HEAD",
            "a",
            "",
            "/refs/x",
            "refs/heads/a b",
            "refs/heads/a@{b",
            "refs/heads/a:b",
            "refs/heads/é",
            "refs/heads/a@b",
        ] {
            assert_eq!(plain_name_is_valid(name.as_bytes()), None, "{name:?}");
            let gix = <&gix_ref::FullNameRef>::try_from(name.as_bytes().as_bstr()).is_ok();
            assert_eq!(is_valid_full_name(name.into()), gix, "{name:?}");
        }
    }

    #[test]
    fn namespaces_expand_like_git() {
        let prefix = |raw: &str| {
            Namespace::new(raw.as_bytes()).map(|ns| ns.map(|ns| ns.prefix().to_string()))
        };
        assert_eq!(prefix(""), Ok(None));
        assert_eq!(prefix("a").unwrap().unwrap(), "refs/namespaces/a/");
        assert_eq!(
            prefix("a/b").unwrap().unwrap(),
            "refs/namespaces/a/refs/namespaces/b/"
        );
        assert_eq!(
            prefix("a//b").unwrap().unwrap(),
            "refs/namespaces/a/refs/namespaces/b/"
        );
        assert_eq!(prefix("/a").unwrap().unwrap(), "refs/namespaces/a/");
        for bad in ["a/", "a..b", "a b", ".a", "a.lock", "a:b", "/"] {
            assert!(prefix(bad).is_err(), "{bad}");
        }
        let ns = Namespace::new(b"x").unwrap().unwrap();
        assert_eq!(ns.full(b"HEAD"), "refs/namespaces/x/HEAD");
        assert_eq!(
            ns.strip(b"refs/namespaces/x/refs/heads/m"),
            Some(&b"refs/heads/m"[..])
        );
        assert_eq!(ns.strip(b"refs/namespaces/y/refs/heads/m"), None);
        assert_eq!(full_name(None, b"refs/heads/m").as_ref(), b"refs/heads/m");
    }

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
