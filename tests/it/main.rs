//! Integration tests of the hookspool engine: one binary, one module per area. (The webhook,
//! HTTP and CLI crates have their own, beside their code.)

// Helpers outside `#[test]` functions unwrap too: a test that cannot set up should panic.
#![allow(clippy::unwrap_used)]

mod conformance_memory;
mod crash_kit;
mod store;
