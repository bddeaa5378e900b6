//! The URLs git accepts for a remote, parsed into the transport they name (git's
//! `parse_connect_url()` in connect.c and the `http(s)://` URLs of remote-curl).
//!
//! * a local path (relative, absolute, `~/…`) or `file://<path>`;
//! * `git://host[:port]/path`;
//! * `http(s)://[user[:password]@]host[:port]/path`;
//! * `ssh://[user@]host[:port]/path`, `git+ssh://…`, `ssh+git://…`, and scp-like
//!   `[user@]host:path` — but a colon after a slash (`./a:b`, `dir/x:y`) makes a path, as
//!   in git.

use std::path::PathBuf;

use packgate_wire::client::ConnectError;

/// Where a remote is and how it is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteUrl {
    /// A repository on this machine (a path or `file://`).
    Local {
        /// The path as the serving program gets it (`~/` expanded, `file://` decoded).
        path: PathBuf,
    },
    /// `git://`: git daemon's protocol over TCP.
    Git {
        /// The host (an IPv6 address without its brackets).
        host: String,
        /// The port, when the URL names one (default 9418).
        port: Option<u16>,
        /// The path sent in the request head (`/repo.git`, or `~user/repo` as git sends it).
        path: String,
    },
    /// Smart HTTP or HTTPS.
    Http(HttpUrl),
    /// ssh: the system's ssh program runs the service on the host.
    Ssh {
        /// The user, when the URL names one.
        user: Option<String>,
        /// The host (an IPv6 address without its brackets).
        host: String,
        /// The port, when the URL names one.
        port: Option<u16>,
        /// The path given to the remote program.
        path: String,
    },
}

/// An `http(s)://` URL, with its credentials taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https`.
    pub tls: bool,
    /// The host as written (an IPv6 address keeps its brackets).
    pub host: String,
    /// The port, when the URL names one.
    pub port: Option<u16>,
    /// The path (percent-encoding kept), without a trailing slash; may be empty.
    pub path: String,
    /// The user and password of the URL's userinfo, percent-decoded.
    pub credentials: Option<(String, Option<String>)>,
}

impl HttpUrl {
    /// `http(s)://host[:port]` (no credentials).
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        match self.port {
            Some(port) => format!("{scheme}://{}:{port}", self.host),
            None => format!("{scheme}://{}", self.host),
        }
    }

    /// The repository's base URL without credentials (what git's messages show).
    pub fn base(&self) -> String {
        format!("{}{}", self.origin(), self.path)
    }

    /// The port to connect to.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(if self.tls { 443 } else { 80 })
    }

    /// The host without IPv6 brackets, for name resolution and TLS.
    pub fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }
}

fn invalid(url: &str, reason: impl Into<String>) -> ConnectError {
    ConnectError::Url {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

/// Parses `url` as git would for `git fetch <url>`.
pub fn parse(url: &str) -> Result<RemoteUrl, ConnectError> {
    if url.is_empty() {
        return Err(invalid(url, "empty"));
    }
    if url.contains(['\0', '\n']) {
        return Err(invalid(url, "control characters are not allowed"));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if scheme.is_empty() || !scheme.bytes().all(is_scheme_byte) {
            return Err(invalid(url, "malformed scheme"));
        }
        return match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                let mut path = decode(url, rest)?;
                if path.is_empty() {
                    return Err(invalid(url, "no path specified"));
                }
                // As git: `file://host/path` keeps the host as part of the path (`//host/path`).
                if !path.starts_with('/') {
                    path.insert_str(0, "//");
                }
                Ok(RemoteUrl::Local {
                    path: PathBuf::from(path),
                })
            }
            "git" => {
                let (user, host, port, path) = split_authority(url, rest)?;
                if user.is_some() {
                    return Err(invalid(url, "git:// URLs take no user"));
                }
                Ok(RemoteUrl::Git {
                    host,
                    port,
                    path: tilde_path(&decode(url, &path)?),
                })
            }
            "ssh" | "git+ssh" | "ssh+git" => {
                let (user, host, port, path) = split_authority(url, rest)?;
                let user = user.map(|u| decode(url, &u)).transpose()?;
                let path = tilde_path(&decode(url, &path)?);
                ssh(url, user, host, port, path)
            }
            "http" | "https" => parse_http(url, scheme.eq_ignore_ascii_case("https"), rest),
            other => Err(ConnectError::Unsupported(other.to_owned())),
        };
    }
    if is_local(url) {
        return Ok(RemoteUrl::Local {
            path: expand_home(url),
        });
    }
    // scp-like: [user@]host:path, or [user@][host:port]:path.
    let (authority, path) = if let Some(rest) = url.strip_prefix('[').or_else(|| {
        url.split_once("@[")
            .map(|(_, r)| r)
            .filter(|_| !url.starts_with('['))
    }) {
        let Some((bracketed, after)) = rest.split_once("]:") else {
            return Err(invalid(url, "unclosed '['"));
        };
        let user = url.split_once("@[").map(|(user, _)| user);
        let authority = match user {
            Some(user) if !url.starts_with('[') => format!("{user}@{bracketed}"),
            _ => bracketed.to_owned(),
        };
        (authority, after.to_owned())
    } else {
        let Some((authority, path)) = url.split_once(':') else {
            return Err(invalid(url, "no path specified"));
        };
        (authority.to_owned(), path.to_owned())
    };
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user.to_owned()), host.to_owned()),
        None => (None, authority),
    };
    // `[host:port]:path` names a port; a plain `host:path` does not.
    let (host, port) = if url.starts_with('[') || url.contains("@[") {
        match host_port.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => {
                (host.to_owned(), Some(parse_port(url, port)?))
            }
            _ => (host_port, None),
        }
    } else {
        (host_port, None)
    };
    let path = match path.strip_prefix("/~") {
        Some(rest) => format!("~{rest}"),
        None => path,
    };
    ssh(url, user, host, port, path)
}

fn ssh(
    url: &str,
    user: Option<String>,
    host: String,
    port: Option<u16>,
    path: String,
) -> Result<RemoteUrl, ConnectError> {
    if host.is_empty() {
        return Err(invalid(url, "no host specified"));
    }
    if path.is_empty() {
        return Err(invalid(
            url,
            "no path specified; see 'git help pull' for valid url syntax",
        ));
    }
    // An argument of ssh's: git blocks what ssh would take as an option.
    let user_host = match &user {
        Some(user) => format!("{user}@{host}"),
        None => host.clone(),
    };
    if user_host.starts_with('-') {
        return Err(invalid(
            url,
            format!("strange hostname '{user_host}' blocked"),
        ));
    }
    if path.starts_with('-') {
        return Err(invalid(url, format!("strange pathname '{path}' blocked")));
    }
    Ok(RemoteUrl::Ssh {
        user,
        host,
        port,
        path,
    })
}

fn parse_http(url: &str, tls: bool, rest: &str) -> Result<RemoteUrl, ConnectError> {
    // The query and fragment are not part of a repository's URL.
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    let (credentials, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(decode(url, password)?)),
                None => (userinfo, None),
            };
            (Some((decode(url, user)?, password)), host_port)
        }
        None => (None, authority),
    };
    let (host, port) = split_host_port(url, host_port)?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(invalid(
            url,
            "spaces and control characters must be percent-encoded",
        ));
    }
    Ok(RemoteUrl::Http(HttpUrl {
        tls,
        host,
        port,
        path: path.trim_end_matches('/').to_owned(),
        credentials,
    }))
}

/// `[user@]host[:port]` and the path (from its `/`) of `rest`, after `scheme://`.
#[allow(clippy::type_complexity)]
fn split_authority(
    url: &str,
    rest: &str,
) -> Result<(Option<String>, String, Option<u16>, String), ConnectError> {
    let Some(slash) = rest.find('/') else {
        return Err(invalid(
            url,
            "no path specified; see 'git help pull' for valid url syntax",
        ));
    };
    let (authority, path) = (&rest[..slash], &rest[slash..]);
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((user, host_port)) => (Some(user.to_owned()), host_port),
        None => (None, authority),
    };
    let (host, port) = split_host_port(url, host_port)?;
    Ok((user, host, port, path.to_owned()))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` into the host (no brackets) and port.
fn split_host_port(url: &str, host_port: &str) -> Result<(String, Option<u16>), ConnectError> {
    let (host, port) = if let Some(rest) = host_port.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(invalid(url, "unclosed '['"));
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Err(invalid(url, "garbage after ']'")),
            },
        };
        (host, port)
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(invalid(url, "no host specified"));
    }
    if host
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b"/\\?#@".contains(&b))
    {
        return Err(invalid(url, format!("bad host '{host}'")));
    }
    let port = match port {
        None | Some("") => None,
        Some(port) => Some(parse_port(url, port)?),
    };
    Ok((host.to_owned(), port))
}

fn parse_port(url: &str, port: &str) -> Result<u16, ConnectError> {
    match port.parse::<u16>() {
        Ok(number) if number > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(number),
        _ => Err(invalid(url, format!("bad port '{port}'"))),
    }
}

/// git's path rule for git:// and ssh://: `/~user/repo` is sent as `~user/repo`.
fn tilde_path(path: &str) -> String {
    match path.strip_prefix("/~") {
        Some(rest) => format!("~{rest}"),
        None => path.to_owned(),
    }
}

fn is_scheme_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.'
}

/// git's `url_is_local_not_ssh()`: no colon, or a slash before the first colon.
fn is_local(url: &str) -> bool {
    match url.find(':') {
        None => true,
        Some(colon) => url.find('/').is_some_and(|slash| slash < colon),
    }
}

/// A local path's leading `~/` (or a lone `~`) as the home directory.
fn expand_home(path: &str) -> PathBuf {
    let rest = match path {
        "~" => Some(""),
        _ => path.strip_prefix("~/"),
    };
    match (rest, std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// Percent-decodes `s`; the result must be UTF-8.
fn decode(url: &str, s: &str) -> Result<String, ConnectError> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| invalid(url, "percent-encoding that is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh_url(user: Option<&str>, host: &str, port: Option<u16>, path: &str) -> RemoteUrl {
        RemoteUrl::Ssh {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        }
    }

    fn local(path: &str) -> RemoteUrl {
        RemoteUrl::Local {
            path: PathBuf::from(path),
        }
    }

    #[test]
    fn local_paths() {
        assert_eq!(parse("repo.git").unwrap(), local("repo.git"));
        assert_eq!(parse("./a:b").unwrap(), local("./a:b"));
        assert_eq!(parse("../x y").unwrap(), local("../x y"));
        assert_eq!(parse("/srv/a b/r.git").unwrap(), local("/srv/a b/r.git"));
        assert_eq!(parse("dir/x:y").unwrap(), local("dir/x:y"));
        assert_eq!(
            parse("file:///srv/r%20s.git").unwrap(),
            local("/srv/r s.git")
        );
        if let Some(home) = std::env::var_os("HOME") {
            assert_eq!(
                parse("~/r.git").unwrap(),
                RemoteUrl::Local {
                    path: PathBuf::from(home).join("r.git")
                }
            );
        }
    }

    #[test]
    fn git_urls() {
        assert_eq!(
            parse("git://example.com/r.git").unwrap(),
            RemoteUrl::Git {
                host: "example.com".into(),
                port: None,
                path: "/r.git".into()
            }
        );
        assert_eq!(
            parse("git://127.0.0.1:9999/~alice/r").unwrap(),
            RemoteUrl::Git {
                host: "127.0.0.1".into(),
                port: Some(9999),
                path: "~alice/r".into()
            }
        );
        assert_eq!(
            parse("git://[::1]:9418/r").unwrap(),
            RemoteUrl::Git {
                host: "::1".into(),
                port: Some(9418),
                path: "/r".into()
            }
        );
    }

    #[test]
    fn ssh_urls() {
        assert_eq!(
            parse("ssh://git@host:2222/srv/r.git").unwrap(),
            ssh_url(Some("git"), "host", Some(2222), "/srv/r.git")
        );
        assert_eq!(
            parse("git+ssh://host/~/r").unwrap(),
            ssh_url(None, "host", None, "~/r")
        );
        assert_eq!(
            parse("ssh+git://host/a%20b").unwrap(),
            ssh_url(None, "host", None, "/a b")
        );
        assert_eq!(
            parse("git@host:org/r.git").unwrap(),
            ssh_url(Some("git"), "host", None, "org/r.git")
        );
        assert_eq!(parse("host:r").unwrap(), ssh_url(None, "host", None, "r"));
        assert_eq!(
            parse("host:/~u/r").unwrap(),
            ssh_url(None, "host", None, "~u/r")
        );
        assert_eq!(
            parse("[host:22]:r").unwrap(),
            ssh_url(None, "host", Some(22), "r")
        );
        assert_eq!(
            parse("u@[host:22]:r").unwrap(),
            ssh_url(Some("u"), "host", Some(22), "r")
        );
        assert_eq!(parse("[::1]:r").unwrap(), ssh_url(None, "::1", None, "r"));
    }

    #[test]
    fn http_urls() {
        let RemoteUrl::Http(url) =
            parse("https://al%40ice:p%3Ass@example.com:8443/a/r.git/").unwrap()
        else {
            panic!("not http");
        };
        assert!(url.tls);
        assert_eq!(url.host, "example.com");
        assert_eq!(url.port, Some(8443));
        assert_eq!(url.path, "/a/r.git");
        assert_eq!(
            url.credentials,
            Some(("al@ice".to_owned(), Some("p:ss".to_owned())))
        );
        assert_eq!(url.base(), "https://example.com:8443/a/r.git");
        let RemoteUrl::Http(url) = parse("http://[::1]/r").unwrap() else {
            panic!("not http");
        };
        assert_eq!(url.origin(), "http://[::1]");
        assert_eq!(url.bare_host(), "::1");
        assert_eq!(url.port_or_default(), 80);
    }

    #[test]
    fn refused() {
        for bad in [
            "",
            "git://",
            "git://host",
            "git://:9418/r",
            "git://host:99999/r",
            "git://host:x/r",
            "ssh://host",
            "ssh://-oProxyCommand=x/r",
            "-oProxyCommand=x:r",
            "host:-r",
            "http://",
            "http://a b/r",
            "http://host:0/r",
            "[host:22:r",
            "://x",
            "a\0b",
        ] {
            assert!(
                matches!(parse(bad), Err(ConnectError::Url { .. })),
                "{bad:?}: {:?}",
                parse(bad)
            );
        }
        assert!(matches!(
            parse("ftp://host/r"),
            Err(ConnectError::Unsupported(s)) if s == "ftp"
        ));
        assert!(matches!(
            parse("svn+ssh://host/r"),
            Err(ConnectError::Unsupported(_))
        ));
    }
}
