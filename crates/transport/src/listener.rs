//! The accept loop the network front-ends share: a bounded number of connections at once,
//! each served by its own task, until shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

/// Accept connections on `listener` until `shutdown` completes. At most `max_connections`
/// are served at once; a connection beyond that is closed on arrival. Each accepted
/// connection is handed to `serve_one`, whose future runs as its own task; an error it
/// returns only ends that connection.
pub async fn accept_loop<Serve, Connection, Error>(
    listener: TcpListener,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
    serve_one: Serve,
) -> std::io::Result<()>
where
    Serve: Fn(TcpStream, SocketAddr) -> Connection,
    Connection: Future<Output = Result<(), Error>> + Send + 'static,
    Error: std::fmt::Display,
{
    accept_loop_refusing(
        listener,
        max_connections,
        shutdown,
        serve_one,
        |stream, peer| async move {
            tracing::warn!(%peer, "too many connections; closing");
            drop(stream);
        },
    )
    .await
}

/// [`accept_loop`], with `refuse_one` telling a connection beyond `max_connections` why it
/// is turned away (in its own task; it should be quick and bounded in time).
pub async fn accept_loop_refusing<Serve, Connection, Error, Refuse, Refusal>(
    listener: TcpListener,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
    serve_one: Serve,
    refuse_one: Refuse,
) -> std::io::Result<()>
where
    Serve: Fn(TcpStream, SocketAddr) -> Connection,
    Connection: Future<Output = Result<(), Error>> + Send + 'static,
    Error: std::fmt::Display,
    Refuse: Fn(TcpStream, SocketAddr) -> Refusal,
    Refusal: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections));
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
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tokio::spawn(refuse_one(stream, peer));
            continue;
        };
        let connection = serve_one(stream, peer);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "connection ended with an error");
            }
            drop(permit);
        });
    }
}
