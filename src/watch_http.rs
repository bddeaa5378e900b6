//! `packgate watch` over http(s): follow a repository through its `GET <repo>/refs` event
//! stream (`docs/refs-watch.md`), printing one line per changed ref.
//!
//! The first event of a stream is the current listing (nothing is printed for it); each
//! later one is compared with the listing before it, and every ref whose value differs is
//! printed as `<old-hex> <new-hex> <name>` (40 zeros for none), in name order. When the
//! server ends the stream (its maximum duration), it is reopened with `Last-Event-ID`, so
//! changes in between are seen in its first event.

use std::{
    collections::BTreeMap,
    io::{BufRead, Write},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use packgate_transport::client::Client;
use serde::Deserialize;

/// Each wait for the server (connecting, and between two lines of the stream, which sends a
/// keepalive every 15 seconds).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A stream that ends sooner than this is reopened only after it (a server that cannot wait,
/// such as `packgate http-backend`, answers at once).
const MIN_STREAM: Duration = Duration::from_secs(1);

/// Printed for a ref that does not exist (or an unborn `HEAD`).
const ZERO: &str = "0000000000000000000000000000000000000000";

#[derive(Deserialize)]
struct Event {
    token: String,
    #[serde(default)]
    changed: bool,
    #[serde(default)]
    refs: Vec<EventRef>,
}

#[derive(Deserialize)]
struct EventRef {
    name: String,
    id: Option<String>,
}

/// Ref names and values, as last seen.
type Listing = BTreeMap<String, Option<String>>;

/// Follow the repository at `url` (http or https) for changes under `prefixes` (all refs
/// when empty), printing each to `out` as it happens; returns only with an error (the
/// server could not be reached, answered other than `200`, or sent something malformed).
pub fn run(
    client: &Client,
    url: &str,
    prefixes: &[String],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut seen: Option<(String, Listing)> = None;
    loop {
        let started = Instant::now();
        follow(client, url, prefixes, &mut seen, out)?;
        let elapsed = started.elapsed();
        if elapsed < MIN_STREAM {
            std::thread::sleep(MIN_STREAM - elapsed);
        }
    }
}

/// One event stream, until the server ends it.
fn follow(
    client: &Client,
    url: &str,
    prefixes: &[String],
    seen: &mut Option<(String, Listing)>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut suffix = String::from("/refs");
    for (i, prefix) in prefixes.iter().enumerate() {
        suffix.push(if i == 0 { '?' } else { '&' });
        suffix.push_str("prefix=");
        suffix.push_str(&percent_encode(prefix));
    }
    let mut headers = vec![("accept", "text/event-stream")];
    if let Some((token, _)) = seen.as_ref() {
        headers.push(("last-event-id", token.as_str()));
    }
    let response = client
        .http_get(url, &suffix, &headers, Some(READ_TIMEOUT))
        .with_context(|| format!("unable to watch '{url}'"))?;
    let mut body = response.body;
    if response.status != 200 {
        let mut message = String::new();
        let _ = std::io::Read::take(&mut body, 4096).read_line(&mut message);
        bail!(
            "unable to watch '{url}': HTTP {}: {}",
            response.status,
            message.trim()
        );
    }
    if response.content_type != "text/event-stream" {
        bail!(
            "unable to watch '{url}': the server answered '{}', not an event stream (is it packgate?)",
            response.content_type
        );
    }
    let mut data = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = body
            .read_line(&mut line)
            .with_context(|| format!("watching '{url}'"))?;
        if n == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            if !data.is_empty() {
                let event: Event = serde_json::from_str(&data)
                    .with_context(|| format!("malformed event from '{url}'"))?;
                data.clear();
                apply(event, seen, out)?;
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        if field == "data" {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value);
        }
    }
}

/// Print what `event` changed since the listing before it, and remember it.
fn apply(
    event: Event,
    seen: &mut Option<(String, Listing)>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if !event.changed {
        return Ok(());
    }
    let listing: Listing = event.refs.into_iter().map(|r| (r.name, r.id)).collect();
    if let Some((_, before)) = seen.as_ref() {
        for line in diff(before, &listing) {
            writeln!(out, "{line}")?;
            out.flush()?;
        }
    }
    *seen = Some((event.token, listing));
    Ok(())
}

/// `<old> <new> <name>` for every ref whose value differs, in name order.
fn diff(before: &Listing, after: &Listing) -> Vec<String> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let old = before.get(name).cloned().flatten();
            let new = after.get(name).cloned().flatten();
            (old != new).then(|| {
                format!(
                    "{} {} {name}",
                    old.as_deref().unwrap_or(ZERO),
                    new.as_deref().unwrap_or(ZERO)
                )
            })
        })
        .collect()
}

/// Escape a query value (everything but unreserved characters and `/`).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn listing(pairs: &[(&str, Option<&str>)]) -> Listing {
        pairs
            .iter()
            .map(|(name, id)| (name.to_string(), id.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn listings_differ_ref_by_ref() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let before = listing(&[("refs/heads/main", Some(&a)), ("refs/tags/old", Some(&a))]);
        let after = listing(&[("refs/heads/main", Some(&b)), ("refs/heads/new", Some(&b))]);
        assert_eq!(
            diff(&before, &after),
            vec![
                format!("{a} {b} refs/heads/main"),
                format!("{ZERO} {b} refs/heads/new"),
                format!("{a} {ZERO} refs/tags/old"),
            ]
        );
        assert!(diff(&after, &after).is_empty());
    }

    #[test]
    fn events_print_only_after_the_first() {
        let event = |token: &str, id: &str| Event {
            token: token.into(),
            changed: true,
            refs: vec![EventRef {
                name: "refs/heads/main".into(),
                id: Some(id.repeat(40)),
            }],
        };
        let mut seen = None;
        let mut out = Vec::new();
        apply(event("t1", "a"), &mut seen, &mut out).unwrap();
        assert!(out.is_empty());
        apply(event("t2", "b"), &mut seen, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{} {} refs/heads/main\n", "a".repeat(40), "b".repeat(40))
        );
        assert_eq!(seen.unwrap().0, "t2");
        assert_eq!(percent_encode("refs/heads/a b&"), "refs/heads/a%20b%26");
    }
}
