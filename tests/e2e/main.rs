//! Trcker's end-to-end suite: real Trcker apps on port 0, real HTTP, a real
//! SQLite file per test and, when `TRCKER_TEST_POSTGRES_URL` is set, a fresh
//! PostgreSQL database per test. Every scenario runs on both databases.

mod attribution;
mod binary;
mod cli;
mod clicks;
mod credentials;
mod debugger;
mod docs;
mod endpoints;
mod faults;
mod harness;
mod idempotency;
mod limits;
mod money;
mod notify;
mod operations;
mod portal;
mod postbacks;
mod quickstart;
mod reports;
mod resources;
mod ssrf;
mod tenants;
mod tokens;
mod walks;
