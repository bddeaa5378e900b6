//! A clone of more than 100,000 objects through packgate.

use std::time::{Duration, Instant};

use crate::util::{
    assert_same_refs, file_url, fsck, packgate_upload_pack_option, refs, shared_fixture, Dir, Git,
};

#[test]
fn clone_of_more_than_100k_objects() {
    let source = shared_fixture("large");
    assert!(source.objects >= 100_000, "{source}");
    // One git version: this test is about size, the others about versions.
    let git = Git::newest();
    let dir = Dir::new("large");
    let clone = dir.join("clone.git");
    let started = Instant::now();
    dir.git(&git)
        .args(["-c", "protocol.version=2", "clone", "--bare", "--quiet"])
        .arg(packgate_upload_pack_option())
        .arg(file_url(&source.path))
        .arg(&clone)
        .timeout(Duration::from_secs(600))
        .run();
    eprintln!("cloned {source} in {:.1?}", started.elapsed());
    assert_same_refs(
        &refs(&dir, &git, &clone, &["refs/heads", "refs/tags"]),
        &refs(&dir, &git, &source.path, &["refs/heads", "refs/tags"]),
        "large clone",
    );
    fsck(&dir, &git, &clone);
}
