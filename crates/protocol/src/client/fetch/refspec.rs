//! Fetch refspecs (`[+]<src>[:<dst>]`, `^<src>`) as git reads them for `git fetch`: which
//! remote refs they select, where each lands locally, and which `ref-prefix`es ask a v2
//! server for exactly those.
//!
//! Written here rather than taken from `gix-refspec`: a fetch needs only parsing, one-`*`
//! glob matching and git's short-name rules, and `gix-refspec` would bring `gix-revision`
//! and its dependencies into the protocol crate for that.

use bstr::{BStr, BString, ByteSlice, ByteVec};

/// git's rules for expanding a short name (`main`, `v1.0`), in git's order
/// (`ref_rev_parse_rules`).
const SHORT_NAME_RULES: [&str; 6] = [
    "%s",
    "refs/%s",
    "refs/tags/%s",
    "refs/heads/%s",
    "refs/remotes/%s",
    "refs/remotes/%s/HEAD",
];

/// One parsed fetch refspec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refspec {
    /// `+`: update the destination even when it is not a fast-forward (and clobber tags).
    pub force: bool,
    /// `^<src>`: remote refs matching `src` are excluded.
    pub negative: bool,
    /// The remote side: a full or short ref name, or a pattern with one `*`.
    pub src: BString,
    /// The local side: `None` (or empty) fetches without storing (only `FETCH_HEAD`).
    pub dst: Option<BString>,
}

/// Why a refspec was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid refspec '{spec}': {reason}")]
pub struct RefspecError {
    /// The refspec as given.
    pub spec: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Refspec {
    /// Parse one fetch refspec as git's `parse_refspec()` does for fetching.
    pub fn parse(spec: &str) -> Result<Self, RefspecError> {
        let error = |reason| RefspecError {
            spec: spec.to_owned(),
            reason,
        };
        let (negative, force, rest) = if let Some(rest) = spec.strip_prefix('^') {
            (true, false, rest)
        } else if let Some(rest) = spec.strip_prefix('+') {
            (false, true, rest)
        } else {
            (false, false, spec)
        };
        let (src, dst) = match rest.rsplit_once(':') {
            Some((src, dst)) => (src, Some(dst)),
            None => (rest, None),
        };
        if negative && dst.is_some() {
            return Err(error("a negative refspec has no destination"));
        }
        let dst = dst.filter(|dst| !dst.is_empty());
        let src_glob = src.matches('*').count();
        let dst_glob = dst.map_or(0, |dst| dst.matches('*').count());
        if src_glob > 1 || dst_glob > 1 {
            return Err(error("more than one '*'"));
        }
        if dst.is_some() && src_glob != dst_glob {
            return Err(error("'*' on one side only"));
        }
        if src.is_empty() && !negative {
            // `:dst` fetches HEAD into dst in git; not a form a mirror needs.
            if dst.is_some() {
                return Err(error("an empty source is not supported"));
            }
        }
        for side in std::iter::once(src).chain(dst) {
            if side.is_empty() {
                continue;
            }
            let checked = side.replace('*', "x");
            if gix_validate::reference::name_partial(checked.as_bytes().as_bstr()).is_err() {
                return Err(error("not a valid ref name"));
            }
        }
        if src.len() == 40 && src.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(error("fetching an object id is not supported"));
        }
        Ok(Refspec {
            force,
            negative,
            src: src.into(),
            dst: dst.map(BString::from),
        })
    }

    /// Whether the refspec is a pattern.
    pub fn is_glob(&self) -> bool {
        self.src.contains(&b'*')
    }

    /// Whether `name` (a full remote ref name) is selected by the source side.
    pub fn matches(&self, name: &BStr) -> bool {
        self.source_match(name).is_some()
    }

    /// The `*` part of `name` for a glob, an empty string for a name that matches a
    /// non-glob source (directly or through git's short-name rules).
    fn source_match<'a>(&self, name: &'a BStr) -> Option<&'a [u8]> {
        if let Some((prefix, suffix)) = self.src.split_once_str("*") {
            let rest = name.strip_prefix(prefix)?;
            return rest.strip_suffix(suffix);
        }
        SHORT_NAME_RULES
            .iter()
            .any(|rule| expand(rule, &self.src) == name)
            .then_some(&name[..0])
    }

    /// Where remote ref `name` lands: `Some(None)` when it is selected without a
    /// destination, `None` when it is not selected.
    pub fn destination(&self, name: &BStr) -> Option<Option<BString>> {
        let star = self.source_match(name)?;
        let Some(dst) = &self.dst else {
            return Some(None);
        };
        let dst = match dst.split_once_str("*") {
            Some((prefix, suffix)) => {
                let mut full = BString::from(prefix);
                full.push_str(star);
                full.push_str(suffix);
                full
            }
            None => dst.clone(),
        };
        Some(Some(local_name(dst)))
    }

    /// Local ref `name` as the remote ref this refspec would fetch into it (for prune):
    /// `None` when `name` is not in its destination.
    pub fn source_for(&self, name: &BStr) -> Option<BString> {
        let dst = self.dst.as_ref()?;
        match dst.split_once_str("*") {
            Some((prefix, suffix)) => {
                let local = local_name(prefix.into());
                let star = name.strip_prefix(local.as_slice())?.strip_suffix(suffix)?;
                let (src_prefix, src_suffix) = self.src.split_once_str("*")?;
                let mut full = BString::from(src_prefix);
                full.push_str(star);
                full.push_str(src_suffix);
                Some(full)
            }
            None => (local_name(dst.clone()) == name).then(|| self.src.clone()),
        }
    }

    /// The `ref-prefix` arguments that make a v2 server list what this refspec selects
    /// (git's `refspec_ref_prefixes()`).
    pub fn ref_prefixes(&self) -> Vec<BString> {
        if let Some((prefix, _)) = self.src.split_once_str("*") {
            return vec![prefix.into()];
        }
        if self.src.starts_with(b"refs/") {
            return vec![self.src.clone()];
        }
        SHORT_NAME_RULES
            .iter()
            .map(|rule| expand(rule, &self.src))
            .collect()
    }
}

/// `rule` with its `%s` replaced by `name`.
fn expand(rule: &str, name: &[u8]) -> BString {
    let (before, after) = rule.split_once("%s").unwrap_or((rule, ""));
    let mut out = BString::from(before);
    out.push_str(name);
    out.push_str(after);
    out
}

/// git's destination rule for fetch: a full name stays, `heads/…`, `tags/…` and
/// `remotes/…` get `refs/` in front, anything else is a branch.
fn local_name(dst: BString) -> BString {
    if dst.starts_with(b"refs/") || dst == "HEAD" {
        dst
    } else if dst.starts_with(b"heads/")
        || dst.starts_with(b"tags/")
        || dst.starts_with(b"remotes/")
    {
        let mut full = BString::from("refs/");
        full.push_str(&dst);
        full
    } else {
        let mut full = BString::from("refs/heads/");
        full.push_str(&dst);
        full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: &str, remote: &str, expected: Option<Option<&str>>) {
        let refspec = Refspec::parse(spec).unwrap();
        let got = refspec.destination(remote.as_bytes().as_bstr());
        assert_eq!(
            got.as_ref().map(|d| d.as_ref().map(|d| d.to_string())),
            expected.map(|d| d.map(str::to_owned)),
            "{spec} on {remote}"
        );
    }

    #[test]
    fn globs_short_names_and_destinations() {
        check(
            "+refs/heads/*:refs/remotes/o/*",
            "refs/heads/a/b",
            Some(Some("refs/remotes/o/a/b")),
        );
        check("refs/heads/*:refs/remotes/o/*", "refs/tags/v1", None);
        check("refs/*:refs/*", "refs/tags/v1", Some(Some("refs/tags/v1")));
        check(
            "main:copy",
            "refs/heads/main",
            Some(Some("refs/heads/copy")),
        );
        check("main:tags/x", "refs/heads/main", Some(Some("refs/tags/x")));
        check("v1", "refs/tags/v1", Some(None));
        check("HEAD", "HEAD", Some(None));
        check("main", "refs/heads/mainline", None);
    }

    #[test]
    fn flags_prefixes_and_reverse_mapping() {
        let spec = Refspec::parse("+refs/heads/*:refs/remotes/o/*").unwrap();
        assert!(spec.force && spec.is_glob() && !spec.negative);
        assert_eq!(spec.ref_prefixes(), vec![BString::from("refs/heads/")]);
        assert_eq!(
            spec.source_for(b"refs/remotes/o/x".as_bstr()),
            Some("refs/heads/x".into())
        );
        assert_eq!(spec.source_for(b"refs/heads/x".as_bstr()), None);
        let short = Refspec::parse("main").unwrap();
        assert_eq!(short.ref_prefixes().len(), 6);
        assert!(Refspec::parse("^refs/heads/x").unwrap().negative);
    }

    #[test]
    fn invalid_refspecs_are_refused() {
        for bad in [
            "a*b*:c*",
            "refs/*:refs/x",
            "^a:b",
            "refs/heads/a..b:x",
            ":x",
        ] {
            assert!(Refspec::parse(bad).is_err(), "{bad}");
        }
    }
}
