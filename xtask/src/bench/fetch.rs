//! What the fetch scenarios (`clone`, `incremental`, and their `-v0` forms) share: a
//! protocol-v2 or v0 fetch request as git sends it, the objects a correct pack must give, and
//! the measurement of an `upload-pack` whose every warm-up response is checked with
//! `git index-pack`.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context as _};
use packgate_wire::pkt_line;

use super::{
    git::{path_str, Git},
    measure::{run_server, warm_up_then_time, Checked, Row, Server},
    Scenario, AGENT,
};

/// The protocol a fetch scenario speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Protocol {
    V2,
    V0,
}

impl Protocol {
    /// The request as git 2.47 sends it in this protocol.
    pub(super) fn request(self, wants: &[String], haves: &[String]) -> anyhow::Result<Vec<u8>> {
        match self {
            Protocol::V2 => fetch_request(wants, haves),
            Protocol::V0 => fetch_request_v0(wants, haves),
        }
    }

    /// `""` or `"-v0"`, for file names.
    pub(super) fn suffix(self) -> &'static str {
        match self {
            Protocol::V2 => "",
            Protocol::V0 => "-v0",
        }
    }
}

/// One request for every server: the repository each serves and what the client has.
pub(super) struct Request {
    /// The protocol of the request and of its response.
    pub(super) protocol: Protocol,
    /// The request's pkt-lines.
    pub(super) file: PathBuf,
    /// Repository per server, in the order of the servers.
    pub(super) repos: Vec<PathBuf>,
    /// The repository the client already has (its objects are the thin pack's bases).
    pub(super) client_has: Option<PathBuf>,
    pub(super) wants: Vec<String>,
    pub(super) haves: Vec<String>,
    /// `git rev-list --objects <wants> --not <haves>` on the server's repository.
    pub(super) needed: Vec<String>,
}

/// The repository each server serves: the base, or its bitmapped copy.
pub(super) fn repos_for(servers: &[Server], base: &Path, bitmapped: Option<&Path>) -> Vec<PathBuf> {
    servers
        .iter()
        .map(|server| match (server.bitmaps, bitmapped) {
            (true, Some(bitmapped)) => bitmapped.to_owned(),
            _ => base.to_owned(),
        })
        .collect()
}

/// The distinct values of the refs under `refs/heads` and `refs/tags`: what a clone wants.
pub(super) fn ref_values(git: &Git<'_>, repo: &Path) -> anyhow::Result<Vec<String>> {
    let out = git.run(
        Some(repo),
        &[
            "for-each-ref",
            "--format=%(objectname)",
            "refs/heads",
            "refs/tags",
        ],
    )?;
    let mut seen = HashSet::new();
    Ok(out
        .lines()
        .map(str::to_owned)
        .filter(|oid| seen.insert(oid.clone()))
        .collect())
}

/// `git rev-list --objects <wants> --not <haves>`: the object ids a correct pack must give.
pub(super) fn needed_objects(
    git: &Git<'_>,
    repo: &Path,
    wants: &[String],
    haves: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut input = String::new();
    for want in wants {
        writeln!(input, "{want}")?;
    }
    input.push_str("--not\n");
    for have in haves {
        writeln!(input, "{have}")?;
    }
    let out = git.run_with_input(
        Some(repo),
        &["rev-list", "--objects", "--stdin"],
        input.as_bytes(),
    )?;
    Ok(out
        .lines()
        .filter_map(|line| line.split(' ').next())
        .map(str::to_owned)
        .collect())
}

/// A protocol-v2 fetch as `git clone`/`git fetch` 2.47 send it.
pub(super) fn fetch_request(wants: &[String], haves: &[String]) -> anyhow::Result<Vec<u8>> {
    fetch_request_with(wants, haves, &[])
}

/// [`fetch_request`] with more argument lines (`deepen 1`, `filter …`) before the wants, where
/// git puts them.
pub(super) fn fetch_request_with(
    wants: &[String],
    haves: &[String],
    arguments: &[&str],
) -> anyhow::Result<Vec<u8>> {
    fn line(out: &mut Vec<u8>, text: &str) -> anyhow::Result<()> {
        Ok(pkt_line::encode_data(text.as_bytes(), out)?)
    }
    let mut out = Vec::new();
    line(&mut out, "command=fetch\n")?;
    line(&mut out, &format!("{AGENT}\n"))?;
    line(&mut out, "object-format=sha1\n")?;
    pkt_line::encode_delimiter(&mut out);
    for capability in ["thin-pack", "ofs-delta", "no-progress", "include-tag"] {
        line(&mut out, &format!("{capability}\n"))?;
    }
    for argument in arguments {
        line(&mut out, &format!("{argument}\n"))?;
    }
    for oid in wants {
        line(&mut out, &format!("want {oid}\n"))?;
    }
    for oid in haves {
        line(&mut out, &format!("have {oid}\n"))?;
    }
    line(&mut out, "done\n")?;
    pkt_line::encode_flush(&mut out);
    Ok(out)
}

/// A protocol-v0 fetch as git 2.47's `fetch-pack` sends the last request of a stateless
/// (HTTP) fetch: the first `want` with the capabilities, the other wants, a flush, every
/// `have`, then `done` (no flush before it: the server answers the haves and the pack at
/// once).
pub(super) fn fetch_request_v0(wants: &[String], haves: &[String]) -> anyhow::Result<Vec<u8>> {
    fn line(out: &mut Vec<u8>, text: &str) -> anyhow::Result<()> {
        Ok(pkt_line::encode_data(text.as_bytes(), out)?)
    }
    let mut out = Vec::new();
    for (n, oid) in wants.iter().enumerate() {
        if n == 0 {
            line(
                &mut out,
                &format!(
                    "want {oid} multi_ack_detailed no-done side-band-64k thin-pack no-progress \
                     include-tag ofs-delta {AGENT}\n"
                ),
            )?;
        } else {
            line(&mut out, &format!("want {oid}\n"))?;
        }
    }
    pkt_line::encode_flush(&mut out);
    for oid in haves {
        line(&mut out, &format!("have {oid}\n"))?;
    }
    line(&mut out, "done\n")?;
    Ok(out)
}

/// Warm-up and check, then the interleaved timed runs.
pub(super) fn measure_fetch(
    git: &Git<'_>,
    work: &Path,
    scenario: Scenario,
    servers: &[Server],
    request: &Request,
    runs: usize,
) -> Vec<Row> {
    warm_up_then_time(
        scenario.name(),
        servers,
        runs,
        |index, server| {
            let response = work.join(format!("response-{index}"));
            let checked = run_server(
                server,
                &request.repos[index],
                &request.file,
                Some(&response),
                work,
            )
            .and_then(|_| check_response(git, work, &response, request));
            let _ = fs::remove_file(&response);
            checked
        },
        |index, server| run_server(server, &request.repos[index], &request.file, None, work),
    )
}

/// Checks a response: a `packfile` section whose pack `git index-pack` accepts and which,
/// with what the client has, holds every needed object (for a clone: exactly those).
pub(super) fn check_response(
    git: &Git<'_>,
    work: &Path,
    response: &Path,
    request: &Request,
) -> anyhow::Result<Checked> {
    let pack = work.join("response.pack");
    let pack_bytes = demultiplex(response, &pack, request.protocol)?;
    let mut header = [0u8; 12];
    File::open(&pack)?
        .read_exact(&mut header)
        .context("the pack is shorter than its header")?;
    ensure!(&header[..4] == b"PACK", "the pack does not start with PACK");
    let objects = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);

    let verify = work.join("verify.git");
    let _ = fs::remove_dir_all(&verify);
    git.run(None, &["init", "--quiet", "--bare", &path_str(&verify)?])?;
    if let Some(client_has) = &request.client_has {
        let objects_dir = fs::canonicalize(client_has.join("objects"))?;
        fs::write(
            verify.join("objects").join("info").join("alternates"),
            format!("{}\n", path_str(&objects_dir)?),
        )?;
    }
    let mut command = git.command(Some(&verify));
    command
        .args(["index-pack", "--stdin", "--fix-thin"])
        .stdin(File::open(&pack)?);
    let output = command.output().context("running git index-pack")?;
    ensure!(
        output.status.success(),
        "git index-pack rejected the pack: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let _ = fs::remove_file(&pack);

    if request.client_has.is_none() {
        // A clone: the pack alone must be exactly the reachable objects.
        let listed = git.run(
            Some(&verify),
            &[
                "cat-file",
                "--batch-check=%(objectname)",
                "--batch-all-objects",
            ],
        )?;
        let got: BTreeSet<&str> = listed.lines().collect();
        let needed: BTreeSet<&str> = request.needed.iter().map(String::as_str).collect();
        let missing = needed.difference(&got).count();
        let extra = got.difference(&needed).count();
        ensure!(
            missing == 0 && extra == 0,
            "the pack has {} objects: {missing} needed ones missing, {extra} unneeded ones",
            got.len()
        );
        ensure!(
            objects as usize == needed.len(),
            "the pack header counts {objects} objects, the clone needs {}",
            needed.len()
        );
    } else {
        // A fetch: with what the client has, nothing may be missing.
        let mut input = request.needed.join("\n");
        input.push('\n');
        let checked = git.run_with_input(
            Some(&verify),
            &["cat-file", "--batch-check=%(objectname) %(objecttype)"],
            input.as_bytes(),
        )?;
        let missing = checked
            .lines()
            .filter(|line| line.ends_with(" missing"))
            .count();
        ensure!(
            missing == 0,
            "{missing} needed objects are neither in the pack nor on the client"
        );
    }
    let _ = fs::remove_dir_all(&verify);
    Ok(Checked {
        objects,
        pack_bytes,
    })
}

/// Reads a fetch response, writes band 1 of its pack (v2: of its `packfile` section; v0: of
/// the side band after the `ACK`/`NAK` lines) to `pack` and returns its length.
pub(super) fn demultiplex(response: &Path, pack: &Path, protocol: Protocol) -> anyhow::Result<u64> {
    let mut input = BufReader::with_capacity(1 << 16, File::open(response)?);
    let mut output = std::io::BufWriter::new(File::create(pack)?);
    let mut in_packfile = false;
    let mut pack_bytes = 0u64;
    let mut buffer = vec![0u8; 65536];
    loop {
        let mut length = [0u8; 4];
        if input.fill_buf()?.is_empty() {
            bail!("the response ended without a flush packet");
        }
        input
            .read_exact(&mut length)
            .context("truncated pkt-line length")?;
        let length = std::str::from_utf8(&length)
            .ok()
            .and_then(|text| usize::from_str_radix(text, 16).ok())
            .with_context(|| {
                format!("bad pkt-line length {:?}", String::from_utf8_lossy(&length))
            })?;
        match length {
            0 if in_packfile => break,
            0 => bail!("the response ended without a packfile section"),
            1 | 2 => {
                ensure!(!in_packfile, "a delimiter inside the packfile section");
                continue;
            }
            3 => bail!("bad pkt-line length 3"),
            _ => {}
        }
        let payload = &mut buffer[..length - 4];
        input.read_exact(payload).context("truncated pkt-line")?;
        if payload.starts_with(b"ERR ") {
            bail!(
                "the server sent {}",
                String::from_utf8_lossy(payload).trim()
            );
        }
        if !in_packfile && protocol == Protocol::V0 {
            // The negotiation's answers; the first side-band packet starts the pack.
            if payload.starts_with(b"ACK ") || payload.starts_with(b"NAK") {
                continue;
            }
            ensure!(
                matches!(payload.first(), Some(1..=3)),
                "expected ACK, NAK or the side band, got {:?}",
                String::from_utf8_lossy(payload).trim()
            );
            in_packfile = true;
        }
        if !in_packfile {
            in_packfile = payload == b"packfile\n" || payload == b"packfile";
            continue;
        }
        match payload.first() {
            Some(1) => {
                output.write_all(&payload[1..])?;
                pack_bytes += (payload.len() - 1) as u64;
            }
            Some(2) => {}
            Some(3) => bail!(
                "the server sent an error on band 3: {}",
                String::from_utf8_lossy(&payload[1..]).trim()
            ),
            _ => bail!("a packfile packet without a sideband byte"),
        }
    }
    output.flush()?;
    ensure!(pack_bytes > 0, "the packfile section holds no pack data");
    Ok(pack_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_pkt_lines() -> anyhow::Result<()> {
        let oid = "0123456789012345678901234567890123456789".to_owned();
        let request = fetch_request(std::slice::from_ref(&oid), &[])?;
        let text = String::from_utf8_lossy(&request);
        assert!(text.starts_with("0012command=fetch\n0015agent=git/2.47.3\n"));
        assert!(text.contains("0001000ethin-pack\n"));
        assert!(text.contains(&format!("0032want {oid}\n")));
        assert!(text.ends_with("0009done\n0000"));
        Ok(())
    }

    /// A v0 response: negotiation lines, then the pack on band 1 (progress on band 2).
    #[test]
    fn v0_response_is_demultiplexed() -> anyhow::Result<()> {
        let oid = "3".repeat(40);
        let mut response = Vec::new();
        for text in [format!("ACK {oid} common\n"), format!("ACK {oid}\n")] {
            pkt_line::encode_data(text.as_bytes(), &mut response)?;
        }
        pkt_line::encode_data(b"\x02counting\n", &mut response)?;
        pkt_line::encode_data(b"\x01PACK-one", &mut response)?;
        pkt_line::encode_data(b"\x01-two", &mut response)?;
        pkt_line::encode_flush(&mut response);
        let dir = std::env::temp_dir().join(format!("packgate-xtask-v0-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let (file, pack) = (dir.join("response"), dir.join("pack"));
        fs::write(&file, &response)?;
        let result = demultiplex(&file, &pack, Protocol::V0).and_then(|length| {
            let bytes = fs::read(&pack)?;
            Ok((length, bytes))
        });
        let mut bad = Vec::new();
        pkt_line::encode_data(b"unexpected\n", &mut bad)?;
        fs::write(&file, &bad)?;
        let refused = demultiplex(&file, &pack, Protocol::V0);
        fs::remove_dir_all(&dir)?;
        let (length, bytes) = result?;
        assert_eq!((length, bytes.as_slice()), (12, &b"PACK-one-two"[..]));
        assert!(
            refused.is_err(),
            "a v0 response without ACK/NAK or side band"
        );
        Ok(())
    }

    #[test]
    fn v0_request_is_pkt_lines() -> anyhow::Result<()> {
        let (a, b) = ("1".repeat(40), "2".repeat(40));
        let request = fetch_request_v0(&[a.clone(), b.clone()], std::slice::from_ref(&b))?;
        let text = String::from_utf8_lossy(&request);
        assert!(text[4..].starts_with(&format!("want {a} multi_ack_detailed ")));
        assert!(text.contains(&format!("0032want {b}\n0000")));
        assert!(text.ends_with(&format!("0032have {b}\n0009done\n")));
        Ok(())
    }
}
