//! kiln's integration tests: one binary, a small harness, real images.
