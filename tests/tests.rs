//! End-to-end tests with real git clients.
