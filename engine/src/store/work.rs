//! Scratch folders for writers (a build step's upper folder) and turning a finished one into a
//! snapshot without copying it.

use std::path::{Path, PathBuf};

use super::snapshots::ROOTFS;
use super::{Store, StoreError, TempFile, TMP};
use crate::digest::DiffId;

/// A scratch folder of the store ([`Store::temp_dir`]), removed when dropped. What a step
/// wrote in it may be of any depth, so it is removed iteratively ([`crate::fsx::remove_all_at`]):
/// a recursive removal (`tempfile`'s, `std::fs::remove_dir_all`) would overflow the stack of
/// the thread that drops it, and abort `kiln serve` with every tenant's builds.
#[derive(Debug)]
pub struct WorkDir(Option<tempfile::TempDir>);

impl WorkDir {
    /// The folder.
    pub fn path(&self) -> &Path {
        self.0.as_ref().map_or(Path::new(""), |t| t.path())
    }

    /// Leaves the folder in place (it has been moved elsewhere, or is kept on purpose).
    pub fn keep(mut self) -> PathBuf {
        self.0
            .take()
            .map(tempfile::TempDir::keep)
            .unwrap_or_default()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let Some(t) = self.0.take() else { return };
        let path = t.keep();
        // Best effort: whatever is left is garbage that `gc` removes.
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return;
        };
        if let Ok(dir) = rustix::fs::open(parent, crate::fsx::DIR_FLAGS, rustix::fs::Mode::empty())
        {
            let _ =
                crate::fsx::remove_all_at(std::os::fd::AsFd::as_fd(&dir), name.as_encoded_bytes());
        }
    }
}

impl Store {
    /// A fresh, empty folder in `kiln/tmp`, on the store's filesystem (so it can become a
    /// snapshot by renaming). Removed when dropped (best effort); `gc` collects whatever is left
    /// once it is older than the grace period, or if the process dies. Hold a
    /// [`super::Lease`] while using it.
    pub fn temp_dir(&self) -> Result<WorkDir, StoreError> {
        let parent = self.root.join(TMP);
        tempfile::Builder::new()
            .prefix("work-")
            .tempdir_in(&parent)
            .map(|t| WorkDir(Some(t)))
            .map_err(|source| StoreError::Io {
                op: "create temporary folder in",
                path: parent,
                source,
            })
    }

    /// Makes `folder` (from [`Store::temp_dir`], holding exactly the unpacked layer `diff`) the
    /// snapshot of `diff`, unless one exists already. The folder is moved, not copied.
    pub fn adopt_snapshot(&self, diff: &DiffId, folder: WorkDir) -> Result<(), StoreError> {
        let _lease = self.lease()?;
        if self.has_snapshot(diff) {
            return Ok(());
        }
        let name = folder
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .filter(|_| folder.path().parent() == Some(self.root.join(TMP).as_path()))
            .ok_or_else(|| StoreError::Io {
                op: "adopt snapshot from",
                path: folder.path().to_path_buf(),
                source: std::io::Error::other("not a folder made by Store::temp_dir"),
            })?;
        let holder = self.create_temp_dir("snapshot")?;
        let holder = TempFile {
            store: self,
            rel: Some(holder),
        };
        let from = format!("{TMP}/{name}");
        let to = format!("{}/{ROOTFS}", holder.rel.as_deref().unwrap_or_default());
        self.dir
            .rename(&from, &self.dir, &to)
            .map_err(self.io("move upper folder to", &to))?;
        // The folder now lives under `holder`; forget it so its drop does not look for it.
        let _ = folder.keep();
        self.commit_snapshot(diff, holder).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopts_an_upper_folder() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let diff = DiffId::of(b"upper");
        let upper = s.temp_dir().unwrap();
        std::fs::write(upper.path().join("f"), "x").unwrap();
        s.adopt_snapshot(&diff, upper).unwrap();
        assert!(s.has_snapshot(&diff));
        assert_eq!(
            std::fs::read_to_string(s.snapshot_dir(&diff).join("f")).unwrap(),
            "x"
        );
        assert_eq!(
            std::fs::read_dir(t.path().join("kiln/tmp"))
                .unwrap()
                .count(),
            0
        );
        // A second copy of the same layer is discarded.
        let again = s.temp_dir().unwrap();
        s.adopt_snapshot(&diff, again).unwrap();
        assert_eq!(
            std::fs::read_dir(t.path().join("kiln/tmp"))
                .unwrap()
                .count(),
            0
        );
        let outside = WorkDir(Some(tempfile::tempdir().unwrap()));
        assert!(s.adopt_snapshot(&DiffId::of(b"o"), outside).is_err());
    }
}
