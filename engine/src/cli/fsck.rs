//! `kiln fsck`.

use clap::Args;

use super::{Printer, UserError};
use crate::store::Store;

/// Check the store: re-hash every blob, check every image and snapshot, and that no other
/// user can enter the store's folders.
///
/// Prints one line per problem on stdout and exits 1 if there is any. Leftovers of interrupted
/// writes are not damage; `kiln prune` removes them.
#[derive(Debug, Args)]
pub struct FsckArgs {
    /// First narrow the store's folders that other users can enter to 0700 (other damage is
    /// reported, not repaired).
    #[arg(long)]
    pub repair: bool,
}

/// Runs the check.
pub fn run(args: &FsckArgs, store: &Store, out: &mut Printer) -> anyhow::Result<()> {
    if args.repair {
        for folder in store.repair_modes()? {
            out.status(&format!("{folder}: narrowed to 0700"))?;
        }
    }
    let report = store.fsck()?;
    for p in &report.problems {
        out.data(&p.to_string())?;
    }
    out.status(&format!(
        "checked {} blobs, {} images, {} snapshots; {} temporary entries",
        report.blobs, report.images, report.snapshots, report.temp_entries
    ))?;
    if report.is_clean() {
        return Ok(());
    }
    let n = report.problems.len();
    Err(anyhow::Error::new(UserError(format!(
        "store damaged: {n} problem{} found",
        if n == 1 { "" } else { "s" }
    ))))
}
