//! Integration tests of hookspool: one binary, one module per area.

mod conformance_memory;
mod store;
