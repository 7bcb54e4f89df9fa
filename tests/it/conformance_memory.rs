//! Runs the whole conformance kit (every property and the model-based test) against the
//! memory backend, exactly as an outside backend author would.

hookspool::conformance_tests!(hookspool::conformance::MemoryFactory);
