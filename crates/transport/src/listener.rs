//! The accept loop the network front-ends share: each connection served by its own task,
//! until shutdown, under two caps.
//!
//! A connection is *waiting* from its arrival until its request head has come in, then
//! *active* (the front-end calls [`Admission::activate`]). Waiting connections are cheap (a
//! task and a small buffer) and are what an idle client holds, so they have their own caps:
//! a total and one per client address. A connection that arrives when either is full makes
//! room by closing the waiting connection that has waited longest (of its own address, if
//! that address is at its cap): a flood of idle connections can only push out itself, and
//! a real client, which sends its request at once, gets in. Active sessions, which cost
//! threads and memory, are capped as before: the front-end refuses one beyond the cap in
//! its own words (`ERR too many connections…`, `503`).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

/// How many connections the accept loop keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Active sessions (request head received) at once; beyond that the front-end refuses.
    pub max_active: usize,
    /// Connections still waiting for their request head, from all clients.
    pub max_waiting: usize,
    /// Connections still waiting for their request head, from one client address.
    pub max_waiting_per_address: usize,
}

impl ConnectionLimits {
    /// Default of [`ConnectionLimits::max_waiting`]: an idle connection costs a few KiB.
    pub const DEFAULT_MAX_WAITING: usize = 4096;
    /// Default of [`ConnectionLimits::max_waiting_per_address`]: a burst of clones from one
    /// address (CI runners behind one NAT address) connects faster than the request heads
    /// are read, and at 64 a burst of 256 clients lost a quarter of them; 256 waiting
    /// connections cost about a megabyte.
    pub const DEFAULT_MAX_WAITING_PER_ADDRESS: usize = 256;

    /// `max_active` sessions and the default caps on waiting connections.
    pub fn with_max_active(max_active: usize) -> Self {
        ConnectionLimits {
            max_active,
            max_waiting: Self::DEFAULT_MAX_WAITING,
            max_waiting_per_address: Self::DEFAULT_MAX_WAITING_PER_ADDRESS,
        }
    }
}

/// Who is connected: waiting connections in arrival order, and the count of active ones.
#[derive(Default)]
struct State {
    next_id: u64,
    /// id → address and the means to close it.
    waiting: BTreeMap<u64, (IpAddr, oneshot::Sender<()>)>,
    /// The ids of each address's waiting connections.
    by_address: HashMap<IpAddr, BTreeSet<u64>>,
    active: usize,
}

impl State {
    /// Stop tracking waiting connection `id`; its sender, if closed, is returned to be used
    /// or dropped.
    fn remove_waiting(&mut self, id: u64) -> Option<oneshot::Sender<()>> {
        let (address, close) = self.waiting.remove(&id)?;
        if let Some(ids) = self.by_address.get_mut(&address) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_address.remove(&address);
            }
        }
        Some(close)
    }

    /// Close the waiting connection `id`.
    fn evict(&mut self, id: u64) {
        if let Some(close) = self.remove_waiting(id) {
            let _ = close.send(());
        }
    }
}

struct Shared {
    limits: ConnectionLimits,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements; a panic elsewhere cannot break it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A connection's place under the caps, handed to the front-end with the connection.
/// Dropping it frees the place.
pub struct Admission {
    shared: Arc<Shared>,
    id: u64,
    stage: Mutex<Stage>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Waiting,
    Active,
    /// Refused by the active cap, or closed to make room: holds no place.
    Gone,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("id", &self.id)
            .field("stage", &*self.stage())
            .finish()
    }
}

impl Admission {
    fn stage(&self) -> MutexGuard<'_, Stage> {
        self.stage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The request head arrived: the connection becomes an active session if there is room
    /// (`true`; also when it is active already). `false`: the active cap is reached, and the
    /// front-end refuses the client. An active connection is never closed to make room.
    pub fn activate(&self) -> bool {
        let mut stage = self.stage();
        match *stage {
            Stage::Active => return true,
            Stage::Gone => return false,
            Stage::Waiting => {}
        }
        let mut state = self.shared.state();
        // Dropping the sender (not sending) tells the connection's task it stays. No sender
        // left: it was closed to make room just now, and its task is on its way out.
        if state.remove_waiting(self.id).is_none() {
            *stage = Stage::Gone;
            return false;
        }
        if state.active >= self.shared.limits.max_active {
            *stage = Stage::Gone;
            return false;
        }
        state.active += 1;
        *stage = Stage::Active;
        true
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let stage = *self.stage();
        let mut state = self.shared.state();
        match stage {
            Stage::Waiting => drop(state.remove_waiting(self.id)),
            Stage::Active => state.active = state.active.saturating_sub(1),
            Stage::Gone => {}
        }
    }
}

/// Accept connections on `listener` until `shutdown` completes, under `limits` (see the
/// module's documentation). Each accepted connection is handed to `serve_one` with its
/// [`Admission`], whose future runs as its own task; an error it returns only ends that
/// connection. The front-end calls [`Admission::activate`] once the request head is in and
/// refuses the client if that says no.
pub async fn accept_loop<Serve, Connection, Error>(
    listener: TcpListener,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    serve_one: Serve,
) -> std::io::Result<()>
where
    Serve: Fn(TcpStream, SocketAddr, Arc<Admission>) -> Connection,
    Connection: Future<Output = Result<(), Error>> + Send + 'static,
    Error: std::fmt::Display,
{
    let shared = Arc::new(Shared {
        limits,
        state: Mutex::default(),
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let (admission, closed) = admit(&shared, peer.ip());
        // Boxed: the task's own future then holds a pointer, not a second copy of it (a
        // future moved into `select!` is stored twice), which a waiting client pays for.
        let connection = Box::pin(serve_one(stream, peer, admission));
        tokio::spawn(async move {
            // Closed to make room: the sender fires. Activated: it is dropped, and the
            // connection runs to its end.
            let evicted = async {
                if closed.await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                result = connection => {
                    if let Err(err) = result {
                        tracing::debug!(%err, "connection ended with an error");
                    }
                }
                () = evicted => {
                    tracing::info!(%peer, "closed a connection that sent no request, to make room");
                }
            }
        });
    }
}

/// A place for a new waiting connection from `address`, made by closing the longest-waiting
/// one of that address, or of all, if a cap is reached.
fn admit(shared: &Arc<Shared>, address: IpAddr) -> (Arc<Admission>, oneshot::Receiver<()>) {
    let limits = shared.limits;
    let mut state = shared.state();
    let oldest_of_address = state
        .by_address
        .get(&address)
        .filter(|ids| ids.len() >= limits.max_waiting_per_address.max(1))
        .and_then(|ids| ids.first().copied());
    if let Some(id) = oldest_of_address {
        state.evict(id);
    }
    if state.waiting.len() >= limits.max_waiting.max(1) {
        if let Some(id) = state.waiting.keys().next().copied() {
            state.evict(id);
        }
    }
    let id = state.next_id;
    state.next_id += 1;
    let (close, closed) = oneshot::channel();
    state.waiting.insert(id, (address, close));
    state.by_address.entry(address).or_default().insert(id);
    drop(state);
    let admission = Arc::new(Admission {
        shared: Arc::clone(shared),
        id,
        stage: Mutex::new(Stage::Waiting),
    });
    (admission, closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(max_active: usize, max_waiting: usize, per_address: usize) -> Arc<Shared> {
        Arc::new(Shared {
            limits: ConnectionLimits {
                max_active,
                max_waiting,
                max_waiting_per_address: per_address,
            },
            state: Mutex::default(),
        })
    }

    fn closed(receiver: &mut oneshot::Receiver<()>) -> bool {
        receiver.try_recv().is_ok()
    }

    #[test]
    fn idle_connections_of_one_address_push_out_each_other() {
        let shared = shared(2, 10, 3);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let mut from_a: Vec<_> = (0..3).map(|_| admit(&shared, a)).collect();
        let (_b, mut b_closed) = admit(&shared, b);
        // A fourth from `a`: its oldest goes, nobody else's.
        let (newest, _newest_closed) = admit(&shared, a);
        assert!(closed(&mut from_a[0].1));
        assert!(!closed(&mut from_a[1].1) && !closed(&mut b_closed));
        // The one closed to make room can no longer become active.
        assert!(!from_a[0].0.activate());
        // Active sessions are capped on their own and never closed for room.
        assert!(newest.activate() && newest.activate());
        assert!(from_a[1].0.activate());
        assert!(!from_a[2].0.activate(), "third active session");
        assert_eq!(shared.state().active, 2);
        drop(newest);
        assert_eq!(shared.state().active, 1);
        let state = shared.state();
        assert_eq!(state.waiting.len(), 1, "only b waits");
        assert_eq!(state.by_address.len(), 1);
    }

    #[test]
    fn the_total_of_waiting_connections_is_capped() {
        let shared = shared(1, 2, 10);
        let mut first = admit(&shared, [10, 0, 0, 1].into());
        let mut second = admit(&shared, [10, 0, 0, 2].into());
        let third = admit(&shared, [10, 0, 0, 3].into());
        assert!(closed(&mut first.1) && !closed(&mut second.1));
        drop(first);
        assert_eq!(shared.state().waiting.len(), 2);
        drop((second, third));
        let state = shared.state();
        assert!(state.waiting.is_empty() && state.by_address.is_empty());
    }
}
