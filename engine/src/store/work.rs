//! Scratch folders for writers (a build step's upper folder) and turning a finished one into a
//! snapshot without copying it.

use std::io::Write;

use super::snapshots::{MARKER, ROOTFS};
use super::{Store, StoreError, SNAPSHOTS, TMP};
use crate::digest::DiffId;

impl Store {
    /// A fresh, empty folder in `kiln/tmp`, on the store's filesystem (so it can become a
    /// snapshot by renaming). Removed when dropped; `gc` collects it if the process dies.
    pub fn temp_dir(&self) -> Result<tempfile::TempDir, StoreError> {
        let parent = self.root.join(TMP);
        tempfile::Builder::new()
            .prefix("work-")
            .tempdir_in(&parent)
            .map_err(|source| StoreError::Io {
                op: "create temporary folder in",
                path: parent,
                source,
            })
    }

    /// Makes `folder` (from [`Store::temp_dir`], holding exactly the unpacked layer `diff`) the
    /// snapshot of `diff`, unless one exists already. The folder is moved, not copied.
    pub fn adopt_snapshot(
        &self,
        diff: &DiffId,
        folder: tempfile::TempDir,
    ) -> Result<(), StoreError> {
        let _lease = self.lease()?;
        if self.has_snapshot(diff) {
            return Ok(());
        }
        let io = |op: &'static str, path: std::path::PathBuf| {
            move |source| StoreError::Io { op, path, source }
        };
        let tmp = self.root.join(TMP);
        let holder = tempfile::Builder::new()
            .prefix("snapshot-")
            .tempdir_in(&tmp)
            .map_err(io("create temporary folder in", tmp.clone()))?;
        let rootfs = holder.path().join(ROOTFS);
        std::fs::rename(folder.path(), &rootfs)
            .map_err(io("move upper folder to", rootfs.clone()))?;
        // The folder now lives under `holder`; forget it so its drop does not look for it.
        let _ = folder.keep();
        let marker = holder.path().join(MARKER);
        std::fs::File::create(&marker)
            .and_then(|mut f| {
                f.write_all(format!("{diff}\n").as_bytes())?;
                f.sync_all()
            })
            .map_err(io("write", marker.clone()))?;
        let dest = self.root.join(SNAPSHOTS).join(diff.hex());
        match std::fs::rename(holder.path(), &dest) {
            Ok(()) => {
                let _ = holder.keep();
                Ok(())
            }
            // Another writer committed the same snapshot first; ours is removed with `holder`.
            Err(_) if self.has_snapshot(diff) => Ok(()),
            Err(e) => Err(io("rename snapshot into place", dest)(e)),
        }
    }
}
