//! `kiln prune`.

use std::io::BufRead;

use anyhow::Context as _;

use clap::Args;

use super::images::human_size;
use super::Printer;
use crate::cache::Cache;
use crate::store::{GcOptions, Store};

/// Remove untagged images and unused data: blobs and snapshots no image or build-cache entry
/// uses, and what interrupted builds left behind. Tagged images are never removed (use `rmi`).
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also empty the build cache and the `RUN --mount=type=cache` folders, so what only the
    /// cache used is removed too.
    #[arg(short, long)]
    pub all: bool,

    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

/// Asks for confirmation (unless `--force`), then collects garbage; prints docker's
/// `Deleted Images:` list and `Total reclaimed space:`.
pub fn run(args: &PruneArgs, store: &Store, out: &mut Printer) -> anyhow::Result<()> {
    if !args.force {
        out.status("WARNING! This will remove:")?;
        out.status("  - all untagged images")?;
        out.status("  - all blobs and snapshots that no image uses")?;
        if args.all {
            out.status("  - all build cache, and the cache mounts no build uses")?;
        }
        out.status("Are you sure you want to continue? [y/N]")?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
    }
    let cache = Cache::new(store.cache_dir());
    let mut cache_entries = 0;
    let mut cache_error = None;
    let mut container_roots = Some(crate::container::Containers::new(store)?.gc_roots()?);
    let report = store.gc(
        || {
            // Runs under the store's lock, so no build adds cache entries meanwhile.
            if args.all {
                match cache.prune(None) {
                    Ok(n) => cache_entries = n,
                    Err(e) => cache_error = Some(e),
                }
            }
            // Whatever is still in the cache keeps its layers (all of it, without --all), and
            // containers keep their images.
            let mut roots = container_roots.take().unwrap_or_default();
            for l in cache.referenced_layers() {
                roots.add_layer(&l.diff_id);
                roots.blobs.insert(l.descriptor().digest);
            }
            roots
        },
        &GcOptions::default(),
    )?;
    let cache_mounts = if args.all {
        crate::build::prune_cache_mounts(store).context("remove the cache mounts")?
    } else {
        0
    };
    if !report.images.is_empty() {
        out.data("Deleted Images:")?;
        for id in &report.images {
            out.data(&format!("deleted: {id}"))?;
        }
        out.data("")?;
    }
    out.status(&format!(
        "removed {} blobs, {} snapshots, {} temporary entries, {} build cache entries, {} cache mounts",
        report.blobs.len(),
        report.snapshots.len(),
        report.temp_entries,
        cache_entries,
        cache_mounts
    ))?;
    out.data(&format!(
        "Total reclaimed space: {}",
        human_size(report.reclaimed_bytes)
    ))?;
    match cache_error {
        Some(e) => Err(anyhow::Error::new(e).context("empty the build cache")),
        None => Ok(()),
    }
}
