//! The shallow boundary over small histories in memory.

use super::*;
use packgate_object::testing::{numbered_id as id, NumberedCommits as Db};

fn ids(ns: &[u32]) -> Vec<ObjectId> {
    ns.iter().map(|&n| id(n)).collect()
}

fn run(
    db: &Db,
    wants: &[u32],
    client: &[u32],
    repository: &[u32],
    deepen: Deepen,
) -> Result<ShallowUpdate, String> {
    let (wants, client, repository) = (ids(wants), ids(client), ids(repository));
    update_shallow(
        db,
        &ShallowRequest {
            wants: &wants,
            client_shallows: &client,
            repository_shallows: &repository,
            deepen: &deepen,
        },
    )
    .map_err(|err| err.to_string())
}

fn depth(depth: u32) -> Deepen {
    Deepen::Depth {
        depth,
        relative_to: None,
    }
}

/// The update's lines as numbers: (shallow, unshallow, extra wants, extra haves).
fn lines(update: &ShallowUpdate) -> (Vec<ObjectId>, Vec<ObjectId>, Vec<ObjectId>, Vec<ObjectId>) {
    (
        update.shallow.clone(),
        update.unshallow.clone(),
        update.extra_wants.clone(),
        update.extra_haves.clone(),
    )
}

#[test]
fn depth_one_makes_the_wants_shallow() {
    let db = Db::line(5);
    let update = run(&db, &[5], &[], &[], depth(1)).unwrap();
    assert_eq!(lines(&update), (ids(&[5]), vec![], vec![], vec![]));
    assert_eq!(update.grafts, ids(&[5]).into_iter().collect());
}

#[test]
fn deepening_a_shallow_client_unshallows_its_boundary() {
    let db = Db::line(5);
    // The client has 5 shallow (a depth-1 clone) and asks for depth 3 from 5.
    let update = run(&db, &[5], &[5], &[], depth(3)).unwrap();
    assert_eq!(lines(&update), (ids(&[3]), ids(&[5]), ids(&[4]), ids(&[5])));
    assert_eq!(update.grafts, ids(&[3, 5]).into_iter().collect());
    // Already shallow at the same place: nothing new.
    let update = run(&db, &[5], &[5], &[], depth(1)).unwrap();
    assert_eq!(lines(&update), (vec![], vec![], vec![], vec![]));
}

#[test]
fn the_last_parent_is_walked_first_and_a_shorter_path_walks_a_commit_again() {
    // 6 merges 5 and 2; 5 -> 4 -> 3 -> 2 -> 1. git walks the last parent first: 2 (depth 2),
    // 1 (3: shallow); then 5 (2), 4 (3: shallow). Its list is most recent first.
    let mut db = Db::line(5);
    db.commit(6, &[5, 2], 6);
    let update = run(&db, &[6], &[], &[], depth(3)).unwrap();
    assert_eq!(update.shallow, ids(&[4, 1]));

    // 11 merges 2 and 10 -> 3 -> 2 -> 1: 2 is first reached at depth 4 through 10 and 3,
    // then at depth 2 directly, and walked again from there.
    let mut db = Db::line(3);
    db.commit(10, &[3], 10);
    db.commit(11, &[2, 10], 11);
    let update = run(&db, &[11], &[], &[], depth(4)).unwrap();
    assert!(
        update.shallow.is_empty(),
        "2 was found inside the depth later"
    );
    assert!(!update.grafts.contains(&id(2)));
    let update = run(&db, &[11], &[], &[], depth(3)).unwrap();
    // 10 (2), 3 (3: shallow); then 2 (2), 1 (3: shallow).
    assert_eq!(update.shallow, ids(&[1, 3]));
}

#[test]
fn unshallow_on_a_complete_repository_unshallows_every_client_commit() {
    let db = Db::line(5);
    let update = run(&db, &[5], &[3, 4], &[], depth(INFINITE_DEPTH)).unwrap();
    assert_eq!(
        lines(&update),
        (vec![], ids(&[3, 4]), ids(&[2, 3]), ids(&[3, 4]))
    );
}

#[test]
fn a_shallow_repository_bounds_the_walk() {
    // The repository has 3 shallow: 2 and 1 are "not there" for it.
    let db = Db::line(5);
    let update = run(&db, &[5], &[], &[3], depth(INFINITE_DEPTH)).unwrap();
    assert_eq!(update.shallow, ids(&[3]));
    let update = run(&db, &[5], &[], &[3], depth(10)).unwrap();
    assert_eq!(update.shallow, ids(&[3]));
    // A clone wants HEAD and its branch: the same commit twice, one shallow line (t5601 99).
    let update = run(&db, &[5, 5], &[], &[3], depth(INFINITE_DEPTH)).unwrap();
    assert_eq!(update.shallow, ids(&[3]));
    let update = run(&db, &[5, 5], &[], &[], depth(1)).unwrap();
    assert_eq!(update.shallow, ids(&[5]));
    let update = run(&db, &[5], &[], &[3], Deepen::None).unwrap();
    assert!(update.shallow.is_empty());
    assert_eq!(update.grafts, ids(&[3]).into_iter().collect());
}

#[test]
fn deepen_relative_counts_from_the_client_boundary() {
    let db = Db::line(8);
    let update = run(
        &db,
        &[8],
        &[6],
        &[],
        Deepen::Depth {
            depth: 2,
            relative_to: Some(ids(&[6])),
        },
    )
    .unwrap();
    assert_eq!(lines(&update), (ids(&[4]), ids(&[6]), ids(&[5]), ids(&[6])));
}

#[test]
fn since_and_not_select_by_date_and_reachability() {
    let db = Db::line(6);
    let since = |since| Deepen::RevList {
        since: Some(since),
        not: vec![],
    };
    let update = run(&db, &[6], &[], &[], since(4)).unwrap();
    assert_eq!(update.shallow, ids(&[4]));
    assert_eq!(
        run(&db, &[6], &[], &[], since(7)).unwrap_err(),
        "no commits selected for shallow requests"
    );
    let update = run(&db, &[6], &[], &[], since(0)).unwrap();
    assert!(update.shallow.is_empty(), "0 is no limit");
    let not = Deepen::RevList {
        since: None,
        not: ids(&[3]),
    };
    let update = run(&db, &[6], &[], &[], not).unwrap();
    assert_eq!(update.shallow, ids(&[4]));
    // The client is shallow at 5 and wants history since 2: 5 is unshallowed.
    let update = run(&db, &[6], &[5], &[], since(2)).unwrap();
    assert_eq!(lines(&update), (ids(&[2]), ids(&[5]), ids(&[4]), ids(&[5])));
    let not = Deepen::RevList {
        since: None,
        not: ids(&[6]),
    };
    assert_eq!(
        run(&db, &[6], &[], &[], not).unwrap_err(),
        "no commits selected for shallow requests"
    );
}

#[test]
fn a_merge_with_one_parent_outside_is_on_the_boundary() {
    // 5 merges 4 and 2; 2 is too old.
    let mut db = Db::line(4);
    db.commit(2, &[1], 1);
    db.commit(5, &[4, 2], 5);
    let update = run(
        &db,
        &[5],
        &[],
        &[],
        Deepen::RevList {
            since: Some(3),
            not: vec![],
        },
    )
    .unwrap();
    assert_eq!(update.shallow, ids(&[5, 3]));
}

#[test]
fn a_missing_commit_inside_the_depth_is_an_error() {
    let mut db = Db::line(3);
    db.remove(2);
    assert_eq!(
        run(&db, &[3], &[], &[], depth(5)).unwrap_err(),
        format!("unable to parse commit {}", id(2))
    );
    assert!(
        run(&db, &[3], &[], &[], depth(1)).is_ok(),
        "2 is not walked"
    );
}
