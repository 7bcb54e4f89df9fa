//! Integration tests of hookspool-webhooks: real receivers on 127.0.0.1, real processes
//! killed with SIGKILL, tokio's paused clock for schedules. One binary, one module per area.

// Helpers outside `#[test]` functions unwrap too: a test that cannot set up should panic.
#![allow(clippy::unwrap_used)]

mod callbacks;
mod compat;
mod delivery;
mod delivery_crash;
mod delivery_in_flight;
mod idempotency;
mod net;
mod postgres;
mod quarantine;
mod retention;
mod settler;
mod shared;
mod support;
