//! The CPU and memory budget shared by a server's requests: more clones than CPU slots at
//! once over git:// all complete, after waiting their turn in the budget's queue.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use packgate::{
    protocol::{
        budget::{Budget, BudgetConfig, Demand},
        daemon::{DaemonConfig, DaemonService},
        registry::Registry,
    },
    transport::daemon::{self, DaemonOptions},
};

use crate::util::{fsck, shared_fixture, Dir, Git};

/// The value, or the test fails naming what failed.
fn ok<T, E: std::fmt::Debug>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|err| panic!("{what}: {err:?}"))
}

/// Wait (bounded) until `count` requests wait for the budget.
fn until_waiting(budget: &Budget, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while budget.stats().waiting < count {
        assert!(
            Instant::now() < deadline,
            "never {count} waiting: {:?}",
            budget.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn more_clones_than_slots_wait_their_turn_and_all_complete() {
    let source = shared_fixture("small");
    let dir = Dir::new("budget-clones");
    let root = dir.join("repos");
    ok(std::fs::create_dir_all(&root), "mkdir");
    dir.copy_tree(&source.path, &root.join("small.git"));
    let budget = Budget::new(BudgetConfig {
        cpu_slots: 1,
        memory_bytes: 1 << 30,
        max_wait: Duration::from_secs(300),
    });
    let service = DaemonService::new(
        ok(Registry::new(&root), "registry"),
        DaemonConfig::default(),
    )
    .with_budget(budget.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let runtime = ok(runtime, "runtime");
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"));
    let listener = ok(listener, "bind");
    let port = ok(listener.local_addr(), "address").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(daemon::serve(
        listener,
        Arc::new(service),
        DaemonOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    // The only slot is taken: every clone has to queue.
    let demand = Demand {
        threads: 1,
        memory: 1,
    };
    let holder = ok(budget.acquire("someone else", demand, &|| false), "acquire");
    let gits = Git::all();
    let clones: Vec<_> = (0..4)
        .map(|n| {
            let git = &gits[n % gits.len()];
            // v2 and v0, whose packs take different paths to the budget.
            let version = if n % 2 == 0 { "2" } else { "0" };
            let destination = dir.join(&format!("clone-{n}"));
            let background = dir
                .git(git)
                .args([
                    "-c",
                    &format!("protocol.version={version}"),
                    "clone",
                    "--bare",
                ])
                .arg(format!("git://127.0.0.1:{port}/small.git"))
                .arg(&destination)
                .spawn();
            (git.clone(), destination, background)
        })
        .collect();
    until_waiting(&budget, clones.len());
    assert_eq!(budget.stats().free_slots, 0);
    drop(holder);
    for (git, destination, background) in clones {
        let output = background.wait(Duration::from_secs(300));
        assert!(output.status.success(), "{output}");
        fsck(&dir, &git, &destination);
    }
    let stats = budget.stats();
    assert_eq!(
        stats.queued, 4,
        "every clone waited in the queue: {stats:?}"
    );
    assert_eq!(stats.granted, 5, "{stats:?}");
    assert_eq!((stats.waiting, stats.free_slots), (0, 1), "{stats:?}");
    let _ = stop.send(());
    ok(ok(runtime.block_on(server), "server task"), "server");
}
