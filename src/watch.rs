//! `packgate watch`: print a repository's ref changes as they happen (docs/refs-watch.md),
//! over protocol v2's `wait-refs` (local paths, file://, git://, ssh) or the HTTP watch
//! endpoint (`watch_http`).

use std::io::Write;

use anyhow::Context;
use bstr::BString;
use clap::Args;
use packgate::{
    protocol::client::watch::{RefUpdate, Watch},
    transport::client::url::{self, RemoteUrl},
    wire::{
        client::{ConnectOptions, Connector, WireVersion},
        service::Service,
    },
};

/// How long one `wait-refs` request waits by default.
const DEFAULT_WAIT: u64 = 60;
/// How much longer than a request's wait the server may stay silent before it counts as
/// gone.
const GRACE: u64 = 30;

/// `packgate watch`.
#[derive(Args)]
pub(crate) struct WatchArgs {
    /// Only refs starting with this prefix (repeatable; none: every ref and HEAD).
    #[arg(long = "prefix", value_name = "P")]
    prefixes: Vec<String>,
    /// How long each request waits for a change before the server answers "unchanged" and
    /// the next is sent (at most the server's packgate.waitRefsMaxTimeout). A server that
    /// stays silent 30 seconds longer than that is taken to be gone.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_WAIT)]
    timeout: u64,
    /// The program run for a local path or file:// URL (git's --upload-pack); by default
    /// packgate serves itself.
    #[arg(long, value_name = "PROG")]
    upload_pack: Option<String>,
    /// The repository: a path, file://, git://, ssh or http(s) URL.
    url: String,
}

/// One output line: `<old-hex> <new-hex> <name>`, 40 zeros for none.
fn line(update: &RefUpdate) -> String {
    let hex = |id: Option<gix_hash::ObjectId>| {
        id.map(|id| id.to_string())
            .unwrap_or_else(|| "0".repeat(40))
    };
    format!("{} {} {}\n", hex(update.old), hex(update.new), update.name)
}

pub(crate) fn watch(args: WatchArgs) -> anyhow::Result<std::process::ExitCode> {
    let client = crate::serve::client();
    let mut out = std::io::stdout();
    if matches!(url::parse(&args.url), Ok(RemoteUrl::Http(_))) {
        crate::watch_http::run(&client, &args.url, &args.prefixes, &mut out)?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let options = ConnectOptions {
        version: WireVersion::V2,
        program: args.upload_pack.clone(),
        timeout: Some(std::time::Duration::from_secs(
            args.timeout.saturating_add(GRACE),
        )),
        ..ConnectOptions::default()
    };
    let connection = client
        .connect(&args.url, Service::UploadPack, &options)
        .with_context(|| format!("could not connect to '{}'", args.url))?;
    let prefixes: Vec<BString> = args
        .prefixes
        .iter()
        .map(|p| BString::from(p.as_str()))
        .collect();
    let mut watch = Watch::start(connection, &prefixes)
        .with_context(|| format!("cannot watch '{}'", args.url))?;
    tracing::debug!(token = watch.token(), refs = watch.refs().len(), "watching");
    loop {
        let updates = watch
            .wait(args.timeout)
            .with_context(|| format!("lost '{}'", args.url))?;
        for update in &updates {
            out.write_all(line(update).as_bytes())?;
        }
        out.flush()?;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_none_as_zeros() {
        let id = gix_hash::ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap();
        let update = RefUpdate {
            name: "refs/heads/main".into(),
            old: None,
            new: Some(id),
        };
        assert_eq!(
            line(&update),
            format!("{} {id} refs/heads/main\n", "0".repeat(40))
        );
    }
}
