//! The `packgate` command line.
fn main() {}
