//! Developer tasks for packgate: fixtures, benchmarks, interop drivers.
fn main() {}
