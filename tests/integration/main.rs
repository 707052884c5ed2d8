//! kiln's integration tests: one binary, a small harness, real images.

mod build;
mod conformance_ignore;
mod conformance_parser;
mod conformance_sh;
mod conformance_shell;
mod consumers;
mod containers;
mod context;
mod deploy;
mod farm;
mod guest_tools;
mod harness;
mod hostile;
mod hostile_cli;
mod hostile_load;
mod hostile_native;
mod races;
mod refusals;
mod registries;
mod registry;
mod registry_cache;
mod run;
mod serve;
mod serve_registry;
mod store;
