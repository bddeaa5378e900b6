use std::sync::Arc;

use super::*;

fn spool(memory: usize, dir: Option<&std::path::Path>) -> (Arc<Spool>, SpoolWriter) {
    let spool = Arc::new(Spool::new(memory, dir.map(Into::into)));
    let writer = SpoolWriter {
        spool: spool.clone(),
    };
    (spool, writer)
}

/// Everything a reader gets: progress messages as `[message]`, the bytes as they are, and
/// how it ended.
fn read_all(reader: &mut SpoolReader, chunk: usize) -> (Vec<u8>, Result<(), String>) {
    let mut out = Vec::new();
    let mut buf = vec![0; chunk];
    for _ in 0..1_000_000 {
        match reader.next(&mut buf).unwrap() {
            Event::Progress(message) => out.extend_from_slice(format!("[{message}]").as_bytes()),
            Event::Data(n) => out.extend_from_slice(&buf[..n]),
            Event::End(end) => return (out, end),
        }
    }
    panic!("the reader never reached the end");
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn progress_marks_come_where_they_were_written() {
    let (spool, mut writer) = spool(1 << 20, None);
    writer.progress(b"start");
    writer.write_all(b"abc").unwrap();
    writer.progress(b"middle");
    writer.write_all(b"def").unwrap();
    writer.progress(b"total");
    writer.end(Ok(()));
    let (out, end) = read_all(&mut SpoolReader::new(spool.clone()), 2);
    assert_eq!(out, b"[start]abc[middle]def[total]");
    assert_eq!(end, Ok(()));
    assert!(!spool.spilled());
}

#[test]
fn bytes_beyond_the_memory_bound_go_to_an_unlinked_file() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, mut writer) = spool(1000, Some(dir.path()));
    let data = pattern(100_000);
    for piece in data.chunks(777) {
        writer.write_all(piece).unwrap();
    }
    writer.end(Ok(()));
    assert!(spool.spilled());
    assert_eq!(spool.len(), 100_000);
    // The file has no name: nothing to clean up after a crash.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    for chunk in [1, 999, 4096] {
        let (out, end) = read_all(&mut SpoolReader::new(spool.clone()), chunk);
        assert_eq!(end, Ok(()));
        assert!(out == data, "chunk {chunk}");
    }
}

#[test]
fn a_reader_that_does_not_read_does_not_hold_up_the_generator_or_others() {
    let (spool, mut writer) = spool(4096, None);
    let data = pattern(1 << 20);
    // A slow reader that reads nothing yet, and one that leaves half-way.
    let mut slow = SpoolReader::new(spool.clone());
    let mut leaving = SpoolReader::new(spool.clone());
    let fast = {
        let spool = spool.clone();
        std::thread::spawn(move || read_all(&mut SpoolReader::new(spool), 65_000))
    };
    let generator = {
        let data = data.clone();
        std::thread::spawn(move || {
            for piece in data.chunks(10_000) {
                writer.write_all(piece).unwrap();
            }
            writer.end(Ok(()));
        })
    };
    let mut buf = vec![0; 100];
    assert_eq!(leaving.next(&mut buf).unwrap(), Event::Data(100));
    drop(leaving);
    // The generator finishes while the slow reader has read nothing.
    generator.join().unwrap();
    let (out, end) = fast.join().unwrap();
    assert_eq!(end, Ok(()));
    assert!(out == data);
    let (out, end) = read_all(&mut slow, 3000);
    assert_eq!(end, Ok(()));
    assert!(out == data);
}

#[test]
fn every_reader_gets_the_generation_error() {
    let (spool, mut writer) = spool(10, None);
    let waiting = {
        let spool = spool.clone();
        std::thread::spawn(move || read_all(&mut SpoolReader::new(spool), 5))
    };
    writer.write_all(b"PACK and more").unwrap();
    writer.end(Err("object missing".into()));
    let (out, end) = waiting.join().unwrap();
    assert_eq!(out, b"PACK and more");
    assert_eq!(end, Err("object missing".into()));
    // Only the first end counts.
    spool.end(Ok(()));
    let (_, end) = read_all(&mut SpoolReader::new(spool), 5);
    assert_eq!(end, Err("object missing".into()));
}

fn config(max_bytes: u64, ttl: Duration) -> PackCacheConfig {
    PackCacheConfig {
        ttl,
        max_bytes,
        memory_per_entry: 1 << 20,
        temp_dir: None,
        recent_keys: 16,
    }
}

/// Generate `size` bytes for `key` if the cache asks to; whether it did.
fn serve(cache: &PackCache, key: Key, size: usize) -> bool {
    match cache.lookup(key) {
        Lookup::Read(_) => false,
        Lookup::Generate(spool, mut writer) => {
            writer.write_all(&pattern(size)).unwrap();
            writer.end(Ok(()));
            cache.finish(key, &spool);
            true
        }
    }
}

#[test]
fn packs_are_kept_from_the_second_sighting_of_their_key() {
    let cache = PackCache::new(config(1 << 20, Duration::from_secs(3600)));
    let key = [1; 32];
    assert!(serve(&cache, key, 100), "first sighting generates");
    assert!(serve(&cache, key, 100), "not kept after the first sighting");
    assert!(!serve(&cache, key, 100), "kept after the second");
    assert!(!serve(&cache, key, 100));
    assert_eq!(
        cache.stats(),
        PackCacheStats {
            generated: 2,
            joined: 0,
            hits: 2,
            stored: 1,
            evicted: 0
        }
    );
    assert_eq!(cache.stored_bytes(), 100);
}

#[test]
fn requests_during_a_generation_join_it() {
    let cache = PackCache::new(config(1 << 20, Duration::from_secs(3600)));
    let key = [2; 32];
    let Lookup::Generate(spool, mut writer) = cache.lookup(key) else {
        panic!("nothing to join yet");
    };
    writer.write_all(b"first bytes").unwrap();
    let Lookup::Read(joined) = cache.lookup(key) else {
        panic!("the generation under way is shared");
    };
    assert!(Arc::ptr_eq(&spool, &joined));
    writer.write_all(b", more").unwrap();
    writer.end(Ok(()));
    cache.finish(key, &spool);
    let (out, _) = read_all(&mut SpoolReader::new(joined), 100);
    assert_eq!(out, b"first bytes, more");
    assert_eq!(cache.stats().joined, 1);
    // First sighting: gone once finished, though its readers still read it.
    assert!(matches!(cache.lookup(key), Lookup::Generate(..)));
}

#[test]
fn failed_generations_are_not_kept() {
    let cache = PackCache::new(config(1 << 20, Duration::from_secs(3600)));
    let key = [3; 32];
    assert!(serve(&cache, key, 10));
    let Lookup::Generate(spool, writer) = cache.lookup(key) else {
        panic!("not kept after one sighting");
    };
    writer.end(Err("broken".into()));
    cache.finish(key, &spool);
    assert!(serve(&cache, key, 10), "the failure was dropped");
    assert_eq!(cache.stats().stored, 1);
}

#[test]
fn packs_expire_after_their_time_to_live() {
    let cache = PackCache::new(config(1 << 20, Duration::ZERO));
    let key = [4; 32];
    assert!(serve(&cache, key, 10));
    assert!(serve(&cache, key, 10));
    assert_eq!(cache.stats().stored, 1);
    assert!(serve(&cache, key, 10), "expired at once");
    assert_eq!(cache.stats().evicted, 1);
}

#[test]
fn the_least_recently_used_pack_leaves_for_the_budget() {
    let cache = PackCache::new(config(250, Duration::from_secs(3600)));
    let (a, b, c) = ([5; 32], [6; 32], [7; 32]);
    for key in [a, b, c] {
        assert!(serve(&cache, key, 100));
    }
    assert!(serve(&cache, a, 100));
    assert!(serve(&cache, b, 100));
    assert!(
        !serve(&cache, a, 100),
        "a hit makes a the most recently used"
    );
    assert!(serve(&cache, c, 100), "storing c evicts b");
    assert_eq!(cache.stored_bytes(), 200);
    assert!(!serve(&cache, a, 100));
    assert!(!serve(&cache, c, 100));
    assert!(serve(&cache, b, 100), "b was evicted");
    // Too big for the whole budget: never stored.
    let d = [8; 32];
    assert!(serve(&cache, d, 1000));
    assert!(serve(&cache, d, 1000));
    assert!(serve(&cache, d, 1000));
}
