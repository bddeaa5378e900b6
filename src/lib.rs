//! packgate: a git server in pure Rust.
//!
//! The crates re-exported here are the embedding API: [`protocol`] (the services:
//! `UploadPack`, `ReceivePack`, `HttpService`, the registry of repositories), [`transport`]
//! (the git:// and smart HTTP front-ends, and `transport::http::respond` to mount the HTTP
//! service in another application), [`hooks`] (in-process push policies) and [`wire`]
//! (pkt-lines, sideband, v2 requests, and the service traits the front-ends call). See
//! `examples/axum.rs`.
pub use packgate_hooks as hooks;
pub use packgate_protocol as protocol;
pub use packgate_transport as transport;
pub use packgate_wire as wire;
