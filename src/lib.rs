//! packgate: a git server in pure Rust.
pub use packgate_protocol as protocol;
pub use packgate_transport as transport;
