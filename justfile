# Trcker's front door for developers. Install just with `cargo install just --locked`.

postgres_url := env_var_or_default("TRCKER_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")

# List the recipes.
default:
    @just --list

# Run every role on the embedded SQLite database in ./data.
run:
    cargo run --release -p trcker -- serve

# Run the tests on SQLite and PostgreSQL.
test:
    TRCKER_TEST_POSTGRES_URL={{postgres_url}} cargo test --workspace

# Run the tests on SQLite and PostgreSQL, with the fault tests and the SSRF
# tests in network namespaces (needs root: they create, stop and start a second
# PostgreSQL cluster on port 5439, and make namespaces).
test-faults:
    TRCKER_TEST_NETNS=1 TRCKER_TEST_POSTGRES_URL={{postgres_url}} TRCKER_TEST_PG_FAULT_CLUSTER=$(bash .ci/fault-cluster) TRCKER_TEST_PG_FAULT_URL=postgres://postgres@127.0.0.1:5439/postgres cargo test --workspace

# Run the tests on SQLite only.
test-sqlite:
    cargo test --workspace

# Measure Trcker against baselines from the same run; writes target/bench-results.json.
bench seconds="10":
    cargo build --release -p trcker -p trcker-bench
    target/release/trcker-bench --seconds {{seconds}} --postgres-url {{postgres_url}}

# A quick run of every benchmark scenario (what CI runs; asserts nothing about speed).
bench-smoke:
    cargo build -p trcker -p trcker-bench
    target/debug/trcker-bench --trcker target/debug/trcker --smoke --postgres-url {{postgres_url}} --json target/bench-smoke.json

# The full fault run (needs root: it creates, stops and starts a second
# PostgreSQL cluster on port 5439): on PostgreSQL, two receivers and two worker
# processes, workers stopped every few seconds, a receiver SIGKILLed, PostgreSQL
# restarted, a receiver SIGTERMed under load; then the same on SQLite (one
# receiver, one worker process). Fails on any loss or duplicate.
chaos postbacks="20000":
    cargo build --release -p trcker -p trcker-bench
    target/release/trcker-chaos --database postgres --postbacks {{postbacks}} --pg-cluster $(bash .ci/fault-cluster) --postgres-url postgres://postgres@127.0.0.1:5439/postgres --json target/chaos-postgres.json
    target/release/trcker-chaos --database sqlite --postbacks {{postbacks}} --json target/chaos-sqlite.json

# The short fault run that CI makes (debug build).
chaos-smoke:
    cargo build -p trcker -p trcker-bench
    target/debug/trcker-chaos --trcker target/debug/trcker --database postgres --postbacks 2000 --kill-every 2 --pg-cluster $(bash .ci/fault-cluster) --postgres-url postgres://postgres@127.0.0.1:5439/postgres
    target/debug/trcker-chaos --trcker target/debug/trcker --database sqlite --postbacks 1000 --kill-every 2

# schemathesis over the whole admin API as a tenant, every check, against a
# live debug Trcker inside a loopback-only network namespace (needs root for
# unshare). Installs schemathesis into target/schemathesis from PyPI.
fuzz-api *args:
    cargo build -p trcker
    test -x target/schemathesis/bin/schemathesis || (python3 -m venv target/schemathesis && target/schemathesis/bin/pip install --quiet schemathesis==4.32.5)
    unshare -n .ci/schemathesis target/debug/trcker target/schemathesis/bin/schemathesis {{args}}

# Formatting, lints and unused dependencies, as CI runs them (needs
# `cargo install cargo-machete --locked`).
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo machete

# Format the code.
fmt:
    cargo fmt --all

# Write docs/openapi.json and docs/errors.md anew from the code (after a change
# to the API or to its error codes; the tests say when).
docs:
    TRCKER_BLESS=1 cargo test -p trcker --test e2e docs::

# What CI runs.
ci:
    bash .ci/run
