//! Who may read and push which repositories: the policy of `serve`'s `[[ssh.access]]` and
//! `[ssh.groups]`, applied by every front-end that knows its user (SSH keys, `packgate
//! shell --user`, HTTP Basic credentials), so one user gets the same decisions over each.

use std::collections::HashMap;

use bstr::ByteSlice;

/// Who may fetch (read) and push (write) which repositories: rules tried in order,
/// the first whose pattern matches the repository's path decides. Without rules every user
/// may read and write; with rules, a path no rule matches is refused.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// The rules, in order.
    pub rules: Vec<AccessRule>,
    /// Groups (`@name` in a rule) and their users.
    pub groups: HashMap<String, Vec<String>>,
}

/// One rule of an [`AccessPolicy`].
#[derive(Debug, Clone, Default)]
pub struct AccessRule {
    /// The repository path below the root, with `*` (within one path component) and `**`
    /// (across components); a trailing `.git` is not part of the comparison.
    pub path: String,
    /// Users (`alice`), groups (`@team`) or everyone (`*`) who may fetch.
    pub read: Vec<String>,
    /// The same for pushes (who may push may also fetch).
    pub write: Vec<String>,
}

impl AccessPolicy {
    /// Whether the policy has no rules, so that every user may read and push.
    pub fn is_open(&self) -> bool {
        self.rules.is_empty()
    }

    /// What a user refused by [`AccessPolicy::allows`] is told (after `fatal: ` over SSH,
    /// as the body of a `403` over HTTP): `bob may not push to '/x.git'`.
    pub fn refusal(user: &str, path: &[u8], write: bool) -> String {
        let what = if write { "push to" } else { "read" };
        format!("{user} may not {what} '{}'", path.as_bstr())
    }

    /// Whether `user` may read (or, with `write`, push to) the repository requested as
    /// `path` (as [`parse_exec_command`] puts it: `/x.git`).
    pub fn allows(&self, user: &str, path: &[u8], write: bool) -> bool {
        if self.rules.is_empty() {
            return true;
        }
        let Some(path) = normalize(path) else {
            // `.`/`..` components or empty ones could name another repository than the
            // pattern sees: refused whenever a policy is in force.
            return false;
        };
        let Some(rule) = self
            .rules
            .iter()
            .find(|rule| normalize(rule.path.as_bytes()).is_some_and(|p| glob(&p, &path)))
        else {
            return false;
        };
        let named = |list: &[String]| {
            list.iter().any(|entry| {
                entry == "*"
                    || entry == user
                    || entry.strip_prefix('@').is_some_and(|group| {
                        self.groups
                            .get(group)
                            .is_some_and(|users| users.iter().any(|u| u == user))
                    })
            })
        };
        named(&rule.write) || (!write && named(&rule.read))
    }
}

/// A path without leading and trailing slashes and without a trailing `.git` (or `/.git`);
/// `None` if it has empty, `.` or `..` components.
fn normalize(path: &[u8]) -> Option<Vec<u8>> {
    let path = path.trim_start_with(|c| c == '/');
    let path = path.strip_suffix(b"/").unwrap_or(path);
    let path = path
        .strip_suffix(b"/.git")
        .or_else(|| path.strip_suffix(b".git"))
        .unwrap_or(path);
    if path.is_empty()
        || path
            .split(|b| *b == b'/')
            .any(|part| part.is_empty() || part == b"." || part == b"..")
    {
        return None;
    }
    Some(path.to_vec())
}

/// Whether `pattern` (`*` within a component, `**` across) matches all of `text`.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        [b'*', rest @ ..] => (0..=text.len())
            .take_while(|&i| i == 0 || text[i - 1] != b'/')
            .any(|i| glob(rest, &text[i..])),
        [c, rest @ ..] => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_policy_first_match_decides() {
        let open = AccessPolicy::default();
        assert!(open.allows("anyone", b"/x.git", true));
        let policy = AccessPolicy {
            rules: vec![
                AccessRule {
                    path: "team/*".into(),
                    read: vec!["*".into()],
                    write: vec!["@devs".into()],
                },
                AccessRule {
                    path: "private/**".into(),
                    read: vec!["alice".into()],
                    write: vec![],
                },
            ],
            groups: [("devs".to_owned(), vec!["bob".to_owned()])].into(),
        };
        assert!(policy.allows("bob", b"/team/x.git", true));
        assert!(policy.allows("carol", b"/team/x", false));
        assert!(!policy.allows("carol", b"/team/x.git", true));
        assert!(!policy.allows("bob", b"/team/a/b.git", false));
        assert!(policy.allows("alice", b"/private/a/b.git", false));
        assert!(!policy.allows("alice", b"/private/a/b.git", true));
        assert!(!policy.allows("bob", b"/other.git", false));
        assert!(!policy.allows("bob", b"/team/../private/a.git", false));
        assert!(!policy.allows("bob", b"/team//x.git", false));
    }
}
