//! HTTP Basic credentials (RFC 7617), as a client sends them in `Authorization`; sans-IO.
//!
//! Parsing only: whether the credentials are any good is the handler's to decide. Their
//! [`Debug`](std::fmt::Debug) output hides the password, so a logged request leaks nothing.

use base64::Engine as _;

/// A user name and password from `Authorization: Basic …`, not yet checked.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    user: String,
    password: String,
}

impl BasicCredentials {
    /// Credentials for `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        BasicCredentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// Parse the value of an `Authorization` header: `Basic <base64 of user:password>`.
    /// `None` for another scheme, malformed base64, no `:`, or text that is not UTF-8 (the
    /// charset the challenge asks for).
    pub fn from_authorization(value: &[u8]) -> Option<Self> {
        let value = std::str::from_utf8(value).ok()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        Some(BasicCredentials::new(user, password))
    }

    /// The user name the client claims.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password, to check and forget. Never log it.
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The `WWW-Authenticate` value that asks for Basic credentials in `realm` (quotes,
/// backslashes and control characters in it are dropped).
pub fn basic_challenge(realm: &str) -> String {
    let realm: String = realm
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect();
    format!("Basic realm=\"{realm}\", charset=\"UTF-8\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: &str, expected: Option<(&str, &str)>) {
        let actual = BasicCredentials::from_authorization(header.as_bytes());
        let actual = actual
            .as_ref()
            .map(|credentials| (credentials.user(), credentials.password()));
        assert_eq!(actual, expected, "{header}");
    }

    #[test]
    fn parses_basic_credentials() {
        // "alice:secret", "bob:pa:ss" (the password may hold ':'), ":" and "ü:ß".
        check("Basic YWxpY2U6c2VjcmV0", Some(("alice", "secret")));
        check("basic YWxpY2U6c2VjcmV0 ", Some(("alice", "secret")));
        check("BASIC   YWxpY2U6c2VjcmV0", Some(("alice", "secret")));
        check("Basic Ym9iOnBhOnNz", Some(("bob", "pa:ss")));
        check("Basic Og==", Some(("", "")));
        check("Basic w7w6w58=", Some(("ü", "ß")));
    }

    #[test]
    fn refuses_what_is_not_basic_credentials() {
        check("", None);
        check("Basic", None);
        check("Bearer YWxpY2U6c2VjcmV0", None);
        check("Digest username=\"alice\"", None);
        // No ':' in "alice".
        check("Basic YWxpY2U=", None);
        check("Basic not*base64", None);
        // 0xff is not UTF-8.
        check("Basic /zph", None);
    }

    #[test]
    fn debug_hides_the_password() {
        let credentials = BasicCredentials::new("alice", "hunter2");
        let shown = format!("{credentials:?}");
        assert!(
            shown.contains("alice") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn challenges() {
        assert_eq!(
            basic_challenge("packgate"),
            "Basic realm=\"packgate\", charset=\"UTF-8\""
        );
        assert_eq!(
            basic_challenge("a\"b\\c\nd"),
            "Basic realm=\"abcd\", charset=\"UTF-8\""
        );
    }
}
