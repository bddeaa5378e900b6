//! What one push may make the server allocate: `receive.maxObjectSize` refuses objects (and
//! deltas' results) above it before anything is allocated for them, and blobs above
//! `core.bigFileThreshold` are hashed while they stream in, never held in memory.

use std::io::Write;
use std::path::Path;

use crate::pkt::{concat, line, FLUSH};
use crate::receive_pack::{assert_pushed, random_bytes, rev_parse, Setup, Snapshot};
use crate::util::{file_url, Git, Output, PACKGATE};

/// `git push` from the client of `setup` through `<prefix>packgate receive-pack`.
fn push(setup: &Setup, git_args: &[&str], prefix: &str, refspec: &str) -> Output {
    setup
        .dir
        .git(&setup.git)
        .current_dir(&setup.client)
        .args(git_args)
        .arg("push")
        .arg(format!(
            "--receive-pack={prefix}'{}' receive-pack",
            PACKGATE.replace('\'', r"'\''")
        ))
        .arg(file_url(&setup.server))
        .arg(refspec)
        .output()
}

/// Commits `bytes` as `name` in the client; returns the commit and the blob id.
fn commit_file(setup: &Setup, name: &str, bytes: &[u8]) -> (String, String) {
    crate::util::write_file(&setup.client.join(name), bytes);
    setup.client().args(["add", name]).run();
    setup.client().args(["commit", "-q", "-m", name]).run();
    let blob = rev_parse(setup.client(), &format!("HEAD:{name}"));
    (rev_parse(setup.client(), "HEAD"), blob)
}

/// A blob above `receive.maxObjectSize` is refused with an `unpack` error that says why, and
/// the repository is left as it was.
#[test]
fn object_above_max_object_size_is_refused() {
    for git in Git::all() {
        let setup = Setup::new("max-object-size", &git);
        assert_pushed(&push(&setup, &[], "", "master"));
        setup.server_config("receive.maxObjectSize", "100k");
        // 200 KB that do not compress: the declared size is what counts, not the pack's.
        let (commit, blob) = commit_file(&setup, "big.bin", &random_bytes(7, 200_000));
        let before = Snapshot::of(&setup.dir, &git, &setup.server);

        let output = push(&setup, &[], "", "master");
        let context = format!("push of a 200 KB blob with {git}");
        assert!(!output.status.success(), "{context}: accepted: {output}");
        assert!(
            output.stderr_text().contains("remote unpack failed")
                && output
                    .stderr_text()
                    .contains("is an object of 200000 bytes, more than the 102400 allowed"),
            "{context}: no clear unpack error: {output}"
        );
        before.assert_unchanged(&setup.dir, &git, &setup.server, &context);
        for id in [&commit, &blob] {
            assert!(!setup.has_object(&setup.server, id), "{context}: {id} kept");
        }

        // Within the limit, the same push goes through.
        setup.server_config("receive.maxObjectSize", "1m");
        assert_pushed(&push(&setup, &[], "", "master"));
        assert_eq!(setup.server_ref("refs/heads/master"), Some(commit));
        setup.fsck();
    }
}

/// A pack entry header: type and size (git's `encode_in_pack_object_header`).
fn entry_header(kind: u8, size: u64) -> Vec<u8> {
    let mut header = vec![(kind << 4) | (size & 0x0f) as u8];
    let mut rest = size >> 4;
    while rest > 0 {
        let last = header.len() - 1;
        header[last] |= 0x80;
        header.push((rest & 0x7f) as u8);
        rest >>= 7;
    }
    header
}

/// A delta header size (7 bits a byte, least significant first).
fn varint(mut value: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            bytes.push(byte);
            return bytes;
        }
        bytes.push(byte | 0x80);
    }
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(data)
        .and_then(|()| encoder.finish())
        .unwrap_or_else(|error| panic!("compressing: {error}"))
}

/// A pack of a 4-byte blob and an ofs-delta against it whose header claims a result of
/// `claimed` bytes (its one instruction copies the 4 bytes, so it is corrupt as well), and
/// the delta's offset.
fn pack_with_delta_claiming(claimed: u64) -> (Vec<u8>, usize) {
    let mut pack = b"PACK".to_vec();
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&2u32.to_be_bytes());
    let base_offset = pack.len();
    pack.extend(entry_header(3, 4));
    pack.extend(zlib(b"base"));
    let delta_offset = pack.len();
    let mut delta = varint(4);
    delta.extend(varint(claimed));
    delta.extend([0x90, 4]); // copy 4 bytes from offset 0
    pack.extend(entry_header(6, delta.len() as u64));
    // The distance back to the base: less than 128, one byte.
    let distance = delta_offset - base_offset;
    assert!(distance < 128);
    pack.push(distance as u8);
    pack.extend(zlib(&delta));
    let checksum = {
        use sha1::Digest;
        sha1::Sha1::digest(&pack)
    };
    pack.extend_from_slice(&checksum);
    (pack, delta_offset)
}

/// A delta that claims a 3 GiB result (more than the default `receive.maxObjectSize`) is
/// refused from its header. packgate runs with 1 GiB of address space: had it tried to
/// allocate the result, the allocation would fail and the report would say so instead.
#[test]
fn delta_claiming_a_huge_result_is_refused_before_allocating() {
    assert!(
        Path::new("/usr/bin/prlimit").exists(),
        "the test needs prlimit (util-linux)"
    );
    let git = Git::newest();
    let setup = Setup::new("huge-delta", &git);
    assert_pushed(&push(&setup, &[], "", "master"));
    let tip = rev_parse(setup.client(), "master");
    let before = Snapshot::of(&setup.dir, &git, &setup.server);
    let claimed: u64 = 3 << 30;
    let zero = "0".repeat(40);
    let (pack, delta_offset) = pack_with_delta_claiming(claimed);
    let request = concat([
        line(format!("{zero} {tip} refs/heads/huge\0report-status")),
        FLUSH.to_vec(),
        pack,
    ]);
    let output = crate::util::Cmd::new(Path::new("/usr/bin/prlimit"))
        .env("HOME", setup.dir.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .arg(format!("--as={}", 1u64 << 30))
        .arg(PACKGATE)
        .arg("receive-pack")
        .arg(&setup.server)
        .stdin(request)
        .output();
    let report = output.stdout_text();
    assert!(
        report.contains(&format!(
            "unpack the delta at offset {delta_offset} of the pack claims a result of {claimed} bytes, \
             more than the {} allowed",
            2u64 << 30
        )),
        "no clear unpack error: {output}"
    );
    assert!(
        report.contains("ng refs/heads/huge unpacker error"),
        "{output}"
    );
    before.assert_unchanged(&setup.dir, &git, &setup.server, "huge delta");
}

/// A blob above `core.bigFileThreshold` is pushed intact, whether the push is kept as a pack
/// (here with `receive.fsckObjects`) or exploded into loose objects, and `git fsck` agrees.
/// It is hashed while it streams in: the receiving process's peak RSS (GNU time) stays below
/// half the blob's size, where holding it would take all of it.
#[test]
fn blob_above_big_file_threshold_streams_through() {
    assert!(
        Path::new("/usr/bin/time").exists(),
        "the test needs GNU time"
    );
    const SIZE: usize = 128 << 20;
    for git in Git::all() {
        let setup = Setup::new("big-file-threshold", &git);
        assert_pushed(&push(&setup, &[], "", "master"));
        // Zeros: 128 MiB that compress to a few hundred KiB.
        let (commit, blob) = commit_file(&setup, "zeros.bin", &vec![0u8; SIZE]);
        for (index, (mode, config)) in [
            ("exploded", &[][..]),
            (
                "kept as a pack",
                &[
                    ("receive.unpackLimit", "1"),
                    ("receive.fsckObjects", "true"),
                ][..],
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let context = format!("{mode}, with {git}");
            // A server of its own for each mode, at `master` before the push.
            let server = setup.dir.join(&format!("server-{index}.git"));
            setup.dir.copy_tree(&setup.server, &server);
            let server_git = || setup.dir.git_in(&git, &server);
            server_git()
                .args(["config", "core.bigFileThreshold", "1m"])
                .run();
            for (key, value) in config {
                server_git().args(["config", key, value]).run();
            }
            let peak_file = setup.dir.join("peak-rss");
            let output = setup
                .dir
                .git(&git)
                .current_dir(&setup.client)
                .arg("push")
                .arg(format!(
                    "--receive-pack=/usr/bin/time -f %M -o '{}' '{}' receive-pack",
                    peak_file.display(),
                    PACKGATE
                ))
                .arg(file_url(&server))
                .arg("master")
                .output();
            assert_pushed(&output);
            assert_eq!(
                crate::util::refs(&setup.dir, &git, &server, &[]).get("refs/heads/master"),
                Some(&commit),
                "{context}"
            );
            assert_eq!(
                server_git()
                    .args(["cat-file", "-s", &blob])
                    .run()
                    .stdout_text()
                    .trim(),
                SIZE.to_string(),
                "{context}"
            );
            let loose = server.join("objects").join(&blob[..2]).join(&blob[2..]);
            assert_eq!(
                loose.exists(),
                mode == "exploded",
                "{context}: {}",
                loose.display()
            );
            crate::util::fsck(&setup.dir, &git, &server);
            let peak_kib: u64 = std::fs::read_to_string(&peak_file)
                .unwrap_or_default()
                .trim()
                .lines()
                .last()
                .and_then(|line| line.parse().ok())
                .unwrap_or_else(|| panic!("{context}: no peak RSS in {}", peak_file.display()));
            assert!(
                peak_kib * 1024 < SIZE as u64 / 2,
                "{context}: packgate's peak RSS was {peak_kib} KiB for a blob of {SIZE} bytes"
            );
        }
    }
}
