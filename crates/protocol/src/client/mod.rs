//! packgate's own git client: the other half of the protocol the server speaks, for the gate
//! (forwarding a push upstream) and the mirror (fetching from upstream).
//!
//! It speaks over any [`Connection`](packgate_wire::client::Connection); the transports that
//! make one live in `packgate-transport` (`transport::client`). Nothing here runs `git`.
//!
//! * [`advertisement`]: what a server says first (v0's refs and capabilities, or v2's
//!   capabilities), read once for both clients.
//! * [`fetch`]: `git fetch` and `git clone --mirror` into a local repository.
//! * [`push`]: send-pack, the push client.
//! * [`watch`]: following a repository's refs with `wait-refs` (`packgate watch`).
//! * [`upstream`]: the gate's [`Forward`](crate::receive_pack::gate::Forward) made of the push
//!   client, and the [`Refresh`](crate::upstream::Refresh) made of the fetch client.

pub mod advertisement;
pub mod fetch;
pub mod push;
pub mod upstream;
pub mod watch;
