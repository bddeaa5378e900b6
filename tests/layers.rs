//! The layering of the workspace (ARCHITECTURE.md): the crates below the front-ends —
//! `protocol`, `negotiate`, `pack`, `object`, `hooks`, `maintenance` and `wire` — never depend on an async
//! runtime, an HTTP server or TLS, directly or through another crate.

use std::{path::Path, time::Duration};

use crate::util::Cmd;

/// The crates that must stay free of tokio, hyper and rustls.
const SANS_IO: &[&str] = &[
    "packgate-protocol",
    "packgate-negotiate",
    "packgate-pack",
    "packgate-object",
    "packgate-hooks",
    "packgate-maintenance",
    "packgate-wire",
];

/// Whether `name` is tokio, hyper or rustls, or one of their companion crates.
fn forbidden(name: &str) -> bool {
    ["tokio", "hyper", "rustls"]
        .iter()
        .any(|family| name == *family || name.starts_with(&format!("{family}-")))
}

/// The names of the packages in `crate_name`'s normal (non-dev) dependency graph, itself
/// included, as `cargo tree` resolves them from the lock file.
fn normal_dependencies(crate_name: &str) -> Vec<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let output = Cmd::new(Path::new(&cargo))
        .args(["tree", "--locked", "--edges", "normal", "--prefix", "none"])
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["--package", crate_name])
        .timeout(Duration::from_secs(120))
        .run();
    let mut names: Vec<String> = output
        .stdout_text()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn sans_io_crates_depend_on_no_runtime_http_or_tls() {
    for crate_name in SANS_IO {
        let names = normal_dependencies(crate_name);
        assert!(
            names.iter().any(|name| name == crate_name),
            "cargo tree did not list {crate_name}: {names:?}"
        );
        let offending: Vec<&String> = names.iter().filter(|name| forbidden(name)).collect();
        assert!(
            offending.is_empty(),
            "{crate_name} depends on {offending:?}; only packgate-transport and the binary may"
        );
    }
}

#[test]
fn the_front_ends_do_depend_on_them() {
    // The check above sees these crates where they are: in transport's graph.
    let names = normal_dependencies("packgate-transport");
    for expected in ["tokio", "hyper", "rustls"] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} not in {names:?}"
        );
    }
    assert!(
        !names.iter().any(|name| name == "packgate-protocol"),
        "transport meets the protocol only through packgate-wire's service traits"
    );
}
