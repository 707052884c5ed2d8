//! kiln: a container-image build engine whose RUN steps execute in WebAssembly sandboxes.
//!
//! Data flows one way (see `shared/DESIGN.md`): [`dockerfile`] (text -> AST) -> [`plan`]
//! (stages, ARG/ENV scope, steps with cache keys) -> [`build`] (walks the plan, asks the cache,
//! runs steps) -> [`layer`] -> [`store`]. The engine never prints: it emits
//! [`progress::ProgressEvent`]s that the CLI or the server renders.

// Nothing from outside may panic kiln: no `unwrap()`/`expect()` outside tests (CI's clippy).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod archive;
pub mod build;
pub mod cache;
pub mod cli;
pub mod container;
pub mod context;
pub mod copy;
pub mod describe;
pub mod digest;
pub mod dockerfile;
pub mod fetch;
pub(crate) mod fsx;
pub mod ignore;
pub mod image;
pub mod layer;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod rootless;
pub mod sandbox;
pub mod server;
pub mod store;
