//! Switches on the end-to-end suite's PostgreSQL tests when their database is
//! configured at build time, so that `cargo test` reports them as ignored, with
//! the reason, rather than as passed when they would run nothing:
//!
//! - `trcker_pg`: `TRCKER_TEST_POSTGRES_URL` is set (every scenario's
//!   PostgreSQL variant runs, and fails if the server cannot be reached);
//! - `trcker_pg_faults`: `TRCKER_TEST_PG_FAULT_CLUSTER` is set (the fault test
//!   that stops and starts that cluster runs);
//! - `trcker_netns`: `TRCKER_TEST_NETNS` is set (the SSRF tests that run
//!   Trcker in a loopback-only network namespace run; they need `unshare`,
//!   `ip` and the privilege to make namespaces, as root has);
//! - `trcker_promtool`: `promtool` is on the `PATH` (the metrics are checked
//!   with it).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(trcker_pg)");
    println!("cargo::rustc-check-cfg=cfg(trcker_pg_faults)");
    println!("cargo::rustc-check-cfg=cfg(trcker_promtool)");
    println!("cargo::rustc-check-cfg=cfg(trcker_netns)");
    // `promtool check metrics` checks the /metrics output where it is
    // installed (CI installs Debian's prometheus package).
    println!("cargo::rerun-if-env-changed=PATH");
    let promtool = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("promtool").is_file()));
    if promtool {
        println!("cargo::rustc-cfg=trcker_promtool");
    }
    for (var, cfg) in [
        ("TRCKER_TEST_POSTGRES_URL", "trcker_pg"),
        ("TRCKER_TEST_PG_FAULT_CLUSTER", "trcker_pg_faults"),
        ("TRCKER_TEST_NETNS", "trcker_netns"),
    ] {
        println!("cargo::rerun-if-env-changed={var}");
        if std::env::var(var).is_ok_and(|v| !v.is_empty()) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
