use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread,
    time::{Duration, Instant},
};

use super::*;

fn budget(slots: usize, memory: u64) -> Budget {
    Budget::new(BudgetConfig {
        cpu_slots: slots,
        memory_bytes: memory,
        max_wait: Duration::from_secs(30),
    })
}

fn demand(threads: usize, memory: u64) -> Demand {
    Demand { threads, memory }
}

fn never() -> bool {
    false
}

/// Wait (bounded) until `count` requests wait in the queue.
fn until_waiting(budget: &Budget, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while budget.stats().waiting != count {
        assert!(
            Instant::now() < deadline,
            "never {count} waiting: {:?}",
            budget.stats()
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// A queued request on its own thread: it reports its label once granted and holds the
/// grant until told to let go.
struct Waiter {
    label: &'static str,
    release: mpsc::Sender<()>,
    handle: thread::JoinHandle<Result<usize, BudgetError>>,
}

fn queue(
    budget: &Budget,
    client: &'static str,
    label: &'static str,
    granted: &mpsc::Sender<&'static str>,
) -> Waiter {
    let (release, released) = mpsc::channel();
    let budget_clone = budget.clone();
    let granted = granted.clone();
    let before = budget.stats().waiting;
    let handle = thread::spawn(move || {
        let grant = budget_clone.acquire(client, demand(1, 1), &never)?;
        granted.send(label).unwrap();
        let _ = released.recv();
        Ok(grant.threads())
    });
    // One at a time, so that the queue's order is the order of these calls.
    until_waiting(budget, before + 1);
    Waiter {
        label,
        release,
        handle,
    }
}

/// Release the holder, then each waiter once it is granted: the order they were granted in.
fn drain(
    holder: Grant,
    waiters: Vec<Waiter>,
    granted: &mpsc::Receiver<&'static str>,
) -> Vec<&'static str> {
    drop(holder);
    let mut order = Vec::new();
    for _ in 0..waiters.len() {
        let label = granted.recv_timeout(Duration::from_secs(10)).unwrap();
        order.push(label);
        let waiter = waiters.iter().find(|w| w.label == label).unwrap();
        waiter.release.send(()).unwrap();
    }
    for waiter in waiters {
        assert_eq!(waiter.handle.join().unwrap(), Ok(1));
    }
    order
}

#[test]
fn a_request_that_fits_is_granted_at_once_and_gives_back_when_dropped() {
    let budget = budget(4, 1000);
    let grant = budget.acquire("a", demand(8, 300), &never).unwrap();
    assert_eq!(grant.threads(), 4, "no more slots than the budget has");
    assert_eq!(grant.memory(), 300);
    let stats = budget.stats();
    assert_eq!((stats.free_slots, stats.free_memory), (0, 700));
    drop(grant);
    let stats = budget.stats();
    assert_eq!((stats.free_slots, stats.free_memory), (4, 1000));
    assert_eq!((stats.granted, stats.queued), (1, 0));
}

#[test]
fn requests_beyond_the_slots_wait_in_order_of_arrival() {
    let budget = budget(1, 1000);
    let holder = budget.acquire("a", demand(1, 1), &never).unwrap();
    let (sender, granted) = mpsc::channel();
    let waiters = vec![
        queue(&budget, "a", "first", &sender),
        queue(&budget, "a", "second", &sender),
        queue(&budget, "a", "third", &sender),
    ];
    assert!(
        granted.try_recv().is_err(),
        "nobody runs while the slot is held"
    );
    assert_eq!(
        drain(holder, waiters, &granted),
        ["first", "second", "third"]
    );
    let stats = budget.stats();
    assert_eq!((stats.granted, stats.queued, stats.waiting), (4, 3, 0));
}

#[test]
fn clients_take_turns_so_one_clients_burst_does_not_starve_another() {
    let budget = budget(1, 1000);
    let holder = budget.acquire("busy", demand(1, 1), &never).unwrap();
    let (sender, granted) = mpsc::channel();
    let mut waiters = Vec::new();
    for label in ["busy 1", "busy 2", "busy 3", "busy 4"] {
        waiters.push(queue(&budget, "busy", label, &sender));
    }
    waiters.push(queue(&budget, "other", "other 1", &sender));
    waiters.push(queue(&budget, "third", "third 1", &sender));
    let order = drain(holder, waiters, &granted);
    assert_eq!(
        order,
        ["busy 1", "other 1", "third 1", "busy 2", "busy 3", "busy 4"]
    );
}

#[test]
fn a_waiting_request_whose_client_went_away_leaves_the_queue() {
    let budget = budget(1, 1000);
    let holder = budget.acquire("a", demand(1, 1), &never).unwrap();
    let gone = Arc::new(AtomicBool::new(false));
    let waiting = {
        let (budget, gone) = (budget.clone(), Arc::clone(&gone));
        thread::spawn(move || {
            budget
                .acquire("a", demand(1, 1), &|| gone.load(Ordering::Relaxed))
                .map(|grant| grant.threads())
        })
    };
    until_waiting(&budget, 1);
    let (sender, granted) = mpsc::channel();
    let behind = queue(&budget, "b", "behind", &sender);
    gone.store(true, Ordering::Relaxed);
    assert_eq!(waiting.join().unwrap(), Err(BudgetError::Cancelled));
    assert_eq!(budget.stats().waiting, 1, "only the one behind still waits");
    assert_eq!(budget.stats().cancelled, 1);
    // The one behind gets the slot once it is free.
    assert_eq!(drain(holder, vec![behind], &granted), ["behind"]);
    assert_eq!(budget.stats().free_slots, 1);
}

#[test]
fn waits_are_bounded() {
    let budget = Budget::new(BudgetConfig {
        cpu_slots: 1,
        memory_bytes: 1000,
        max_wait: Duration::from_millis(20),
    });
    let holder = budget.acquire("a", demand(1, 1), &never).unwrap();
    let refused = budget.acquire("b", demand(1, 1), &never);
    assert!(
        matches!(refused, Err(BudgetError::TimedOut(_))),
        "{refused:?}"
    );
    let stats = budget.stats();
    assert_eq!((stats.timed_out, stats.waiting), (1, 0));
    drop(holder);
    assert_eq!(
        budget.stats().free_slots,
        1,
        "nothing leaked by the refusal"
    );
}

#[test]
fn memory_is_reserved_and_a_request_larger_than_the_budget_runs_alone() {
    let budget = budget(4, 1000);
    let big = budget.acquire("a", demand(1, 5000), &never).unwrap();
    assert_eq!(big.memory(), 1000, "clamped to the whole budget");
    assert_eq!(budget.stats().free_slots, 3);
    let (sender, granted) = mpsc::channel();
    // Slots are free, memory is not: it waits.
    let waiter = queue(&budget, "b", "small", &sender);
    assert!(granted.try_recv().is_err());
    assert_eq!(drain(big, vec![waiter], &granted), ["small"]);
}

#[test]
fn free_slots_are_shared_with_those_waiting() {
    let budget = budget(4, 1000);
    let holder = budget.acquire("a", demand(4, 1), &never).unwrap();
    let (sender, granted) = mpsc::channel();
    let mut threads = Vec::new();
    for client in ["b", "c"] {
        let budget_clone = budget.clone();
        let sender = sender.clone();
        let before = budget.stats().waiting;
        threads.push(thread::spawn(move || {
            let grant = budget_clone.acquire(client, demand(4, 1), &never).unwrap();
            sender.send(grant.threads()).unwrap();
            grant
        }));
        until_waiting(&budget, before + 1);
    }
    drop(holder);
    let first = granted.recv_timeout(Duration::from_secs(10)).unwrap();
    let second = granted.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        (first, second),
        (2, 2),
        "two waiting for four slots: two each"
    );
    for thread in threads {
        drop(thread.join().unwrap());
    }
}

#[test]
fn delta_cache_is_a_part_of_a_slots_share() {
    let budget = budget(4, 1 << 30);
    assert_eq!(budget.delta_cache_bytes(96 << 20), 64 << 20);
    assert_eq!(budget.delta_cache_bytes(16 << 20), 16 << 20);
}

#[test]
fn meminfo() {
    let text = "MemTotal:       16318576 kB\nMemFree:         1000 kB\n";
    assert_eq!(parse_meminfo_total(text), Some(16318576 * 1024));
    assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
    assert!(default_memory_bytes() > 0);
}
