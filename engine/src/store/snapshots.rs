//! Snapshots: unpacked layers, one folder per diff ID, used as read-only overlay lowers.
//!
//! `kiln/snapshots/<diff-id hex>/` holds `rootfs/` (the unpacked layer) and `complete`, a marker
//! holding the diff ID. A snapshot is unpacked into a fresh folder in `kiln/tmp`, marked complete
//! and renamed into place, so a snapshot folder either is complete or does not exist; whoever
//! loses a race to create the same snapshot discards its copy.
//!
//! Durability: a snapshot can always be made again from its layer blob (which is `fsync`ed), so
//! its files are not flushed to disk one by one (a `syncfs` per layer cost a fifth of a build).
//! Instead the marker records the kernel's boot ID: a process crash (`kill -9`) keeps the page
//! cache, so within one boot an unflushed snapshot is complete; only a machine crash can lose
//! its data, and that changes the boot ID. A snapshot whose marker names another boot is stale:
//! it counts as missing and is replaced when next needed. Where the boot ID cannot be read, the
//! snapshot is flushed (`syncfs`) and its marker carries no boot ID.

use std::io::{self, Write};
use std::path::PathBuf;

use cap_std::fs::Dir;

use super::{Store, StoreError, TempFile, SNAPSHOTS};
use crate::digest::{DiffId, Digest};

/// The marker file written last into a snapshot folder.
pub(super) const MARKER: &str = "complete";
/// The unpacked layer inside a snapshot folder.
pub(super) const ROOTFS: &str = "rootfs";
/// Optional bookkeeping beside `rootfs/`: where a COPY's files came from (`copy::Sources`).
const SOURCES: &str = "sources";
/// The most of a `sources` file that is read.
const MAX_SOURCES: u64 = 64 << 20;

/// This boot's ID (`/proc/sys/kernel/random/boot_id`), if the kernel tells it.
fn boot_id() -> Option<&'static str> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty() && s.len() < 64)
    })
    .as_deref()
}

/// What a snapshot's marker says.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum MarkerState {
    /// Complete: flushed, or written in this boot.
    Valid,
    /// Written without a flush in an earlier boot: its data may be lost.
    Stale,
    /// Missing, unreadable or naming another layer.
    Invalid,
}

/// Judges a marker's text for `diff`.
pub(super) fn marker_state(text: &str, diff: &DiffId) -> MarkerState {
    let mut lines = text.lines();
    if lines.next() != Some(diff.to_string().as_str()) {
        return MarkerState::Invalid;
    }
    match lines.next() {
        None => MarkerState::Valid,
        Some(l) => match l.strip_prefix("boot ") {
            Some(b) if Some(b) == boot_id() => MarkerState::Valid,
            Some(_) => MarkerState::Stale,
            None => MarkerState::Invalid,
        },
    }
}

fn snapshot_rel(diff: &DiffId) -> String {
    format!("{SNAPSHOTS}/{}", diff.hex())
}

impl Store {
    /// The folder holding the unpacked layer `diff` (it exists once
    /// [`Store::create_snapshot`] has returned). For read-only use, under a [`super::Lease`].
    pub fn snapshot_dir(&self, diff: &DiffId) -> PathBuf {
        self.root.join(snapshot_rel(diff)).join(ROOTFS)
    }

    /// Whether a complete snapshot of `diff` exists.
    pub fn has_snapshot(&self, diff: &DiffId) -> bool {
        self.snapshot_state(diff) == MarkerState::Valid
    }

    /// What the marker of `diff`'s snapshot says.
    fn snapshot_state(&self, diff: &DiffId) -> MarkerState {
        use std::io::Read;
        let mut text = String::new();
        match self
            .dir
            .open(format!("{}/{MARKER}", snapshot_rel(diff)))
            .and_then(|f| f.take(256).read_to_string(&mut text))
        {
            Ok(_) => marker_state(&text, diff),
            Err(_) => MarkerState::Invalid,
        }
    }

    /// Opens the unpacked layer `diff` as a capability.
    pub fn open_snapshot(&self, diff: &DiffId) -> Result<Dir, StoreError> {
        if !self.has_snapshot(diff) {
            return Err(StoreError::SnapshotNotFound(*diff));
        }
        let rel = format!("{}/{ROOTFS}", snapshot_rel(diff));
        self.dir
            .open_dir(&rel)
            .map_err(self.io("open snapshot", &rel))
    }

    /// Creates the snapshot of `diff` unless it exists: calls `unpack` with an empty folder to
    /// fill, then commits it atomically. Returns [`Store::snapshot_dir`]. `unpack` is trusted to
    /// write exactly the layer whose diff ID is `diff`; the store cannot check that.
    pub fn create_snapshot<E>(
        &self,
        diff: &DiffId,
        unpack: impl FnOnce(&Dir) -> Result<(), E>,
    ) -> Result<PathBuf, StoreError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let _lease = self.lease()?;
        if self.has_snapshot(diff) {
            return Ok(self.snapshot_dir(diff));
        }
        // One unpacker per layer: concurrent builds over a new base wait for it instead of each
        // unpacking the same layer (256 stripes keep the lock files few).
        let stripe = format!("{}/snapshot-{}.lock", super::LOCKS, &diff.hex()[..2]);
        let _unpacking = self.lock_exclusive(&stripe)?;
        if self.has_snapshot(diff) {
            return Ok(self.snapshot_dir(diff));
        }
        let tmp = self.create_temp_dir("snapshot")?;
        let guard = TempFile {
            store: self,
            rel: Some(tmp.clone()),
        };
        let rootfs_rel = format!("{tmp}/{ROOTFS}");
        self.dir
            .create_dir(&rootfs_rel)
            .map_err(self.io("create folder", &rootfs_rel))?;
        let rootfs = self
            .dir
            .open_dir(&rootfs_rel)
            .map_err(self.io("open folder", &rootfs_rel))?;
        unpack(&rootfs).map_err(|e| StoreError::Unpack {
            diff_id: *diff,
            source: e.into(),
        })?;
        self.commit_snapshot(diff, guard)
    }

    /// Creates the snapshot of layer `diff` from the stored blob `blob` unless it exists,
    /// checking that the blob's uncompressed content hashes to `diff`: a registry or archive
    /// that pairs a layer with another layer's diff ID gets an error, never a snapshot that
    /// every image naming that diff ID would then share.
    pub fn layer_snapshot(&self, diff: &DiffId, blob: &Digest) -> Result<PathBuf, StoreError> {
        if self.has_snapshot(diff) {
            return Ok(self.snapshot_dir(diff));
        }
        self.create_snapshot(diff, |dir: &Dir| {
            let reader = self.open_blob(blob)?;
            let stats = crate::layer::unpack_layer(
                io::BufReader::with_capacity(1 << 16, reader),
                dir,
                &crate::layer::UnpackOptions::snapshot(),
            )?;
            if stats.diff_id != *diff {
                return Err(Box::new(StoreError::DiffIdMismatch {
                    blob: *blob,
                    expected: *diff,
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(())
        })
    }

    /// Completes the snapshot being built in the temporary folder `holder` (which holds
    /// `rootfs/`): flushes it to disk, writes the marker, renames it into place. The caller holds
    /// a lease. Losing a race to an identical snapshot is success.
    pub(super) fn commit_snapshot(
        &self,
        diff: &DiffId,
        holder: TempFile<'_>,
    ) -> Result<PathBuf, StoreError> {
        let tmp = holder.rel.clone().unwrap_or_default();
        let rootfs_rel = format!("{tmp}/{ROOTFS}");
        let rootfs = self
            .dir
            .open_dir(&rootfs_rel)
            .map_err(self.io("open folder", &rootfs_rel))?;
        let text = match boot_id() {
            // See the module docs: valid for this boot without a flush.
            Some(boot) => format!("{diff}\nboot {boot}\n"),
            None => {
                // Everything unpacked must be on disk before the marker says it is complete.
                crate::fsx::reopen_readable(&rootfs)
                    .and_then(rustix::fs::syncfs)
                    .map_err(|e| self.io("sync", &rootfs_rel)(e.into()))?;
                format!("{diff}\n")
            }
        };
        let marker = format!("{tmp}/{MARKER}");
        self.dir
            .create(&marker)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(self.io("write", &marker))?;
        let dest = snapshot_rel(diff);
        if self.snapshot_state(diff) == MarkerState::Stale {
            // A stale snapshot from an earlier boot: nobody trusts it, move it out of the way.
            let trash = format!("{}/{}", super::TMP, super::unique_name("stale"));
            let _ = self.dir.rename(&dest, &self.dir, &trash);
        }
        match self.dir.rename(&tmp, &self.dir, &dest) {
            Ok(()) => holder.disarm(),
            // Another writer committed the same snapshot first; ours is dropped with `holder`.
            Err(e) if is_not_empty(&e) && self.has_snapshot(diff) => {}
            Err(e) => return Err(self.io("rename snapshot into place", &dest)(e)),
        }
        self.sync_dir(SNAPSHOTS)?;
        Ok(self.snapshot_dir(diff))
    }

    /// The complete snapshots.
    /// Keeps `notes` (what a copy recorded about the files of the snapshot of `diff`) beside
    /// the snapshot, replacing earlier notes. Bookkeeping: not flushed, and losing it only
    /// costs a later copy its reuse of unchanged files.
    pub fn set_snapshot_sources(&self, diff: &DiffId, notes: &[u8]) -> Result<(), StoreError> {
        let rel = snapshot_rel(diff);
        let (tmp, mut file) = self.create_temp(SOURCES)?;
        let tmp = TempFile {
            store: self,
            rel: Some(tmp),
        };
        let tmp_rel = tmp.rel.clone().unwrap_or_default();
        file.write_all(notes).map_err(self.io("write", &tmp_rel))?;
        let dest = format!("{rel}/{SOURCES}");
        self.dir
            .rename(&tmp_rel, &self.dir, &dest)
            .map_err(self.io("rename to", &dest))?;
        tmp.disarm();
        Ok(())
    }

    /// What [`Store::set_snapshot_sources`] kept for `diff`, if anything.
    pub fn snapshot_sources(&self, diff: &DiffId) -> Option<Vec<u8>> {
        use std::io::Read;
        let f = self
            .dir
            .open(format!("{}/{SOURCES}", snapshot_rel(diff)))
            .ok()?;
        let mut out = Vec::new();
        f.take(MAX_SOURCES).read_to_end(&mut out).ok()?;
        Some(out)
    }

    pub fn list_snapshots(&self) -> Result<Vec<DiffId>, StoreError> {
        let mut out = Vec::new();
        for entry in self
            .dir
            .read_dir(SNAPSHOTS)
            .map_err(self.io("list", SNAPSHOTS))?
        {
            let entry = entry.map_err(self.io("list", SNAPSHOTS))?;
            if let Some(diff) = entry
                .file_name()
                .to_str()
                .and_then(|n| DiffId::from_hex(n).ok())
            {
                if self.has_snapshot(&diff) {
                    out.push(diff);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes the snapshot of `diff`; returns whether there was one. Waits until no
    /// [`super::Lease`] is held, since a running build may be using it.
    pub fn remove_snapshot(&self, diff: &DiffId) -> Result<bool, StoreError> {
        let _gc = self.lock_exclusive(super::GC_LOCK)?;
        self.discard_snapshot(&snapshot_rel(diff))
    }

    /// Moves a snapshot folder to `kiln/tmp` (so it vanishes atomically) and deletes it there.
    /// The caller excludes leases.
    pub(super) fn discard_snapshot(&self, rel: &str) -> Result<bool, StoreError> {
        let trash = format!("{}/{}", super::TMP, super::unique_name("trash"));
        match self.dir.rename(rel, &self.dir, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.io("move snapshot to trash", rel)(e)),
        }
        self.remove_tree(&trash)?;
        Ok(true)
    }
}

/// `rename(2)` onto a non-empty folder fails with `ENOTEMPTY` or `EEXIST`.
fn is_not_empty(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_is_atomic_and_idempotent() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let diff = DiffId::of(b"layer");
        assert!(!s.has_snapshot(&diff));
        let p = s
            .create_snapshot(&diff, |d: &Dir| d.write("hello.txt", "hi"))
            .unwrap();
        assert_eq!(p, s.snapshot_dir(&diff));
        assert_eq!(std::fs::read_to_string(p.join("hello.txt")).unwrap(), "hi");
        // A second create does not call the unpacker.
        s.create_snapshot(&diff, |_: &Dir| -> io::Result<()> {
            panic!("unpacked twice")
        })
        .unwrap();
        assert_eq!(s.list_snapshots().unwrap(), vec![diff]);
        assert_eq!(
            s.open_snapshot(&diff)
                .unwrap()
                .read_to_string("hello.txt")
                .unwrap(),
            "hi"
        );
        assert!(s.remove_snapshot(&diff).unwrap());
        assert!(!s.remove_snapshot(&diff).unwrap());
        assert!(s.list_snapshots().unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(t.path().join("kiln/tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn failed_unpack_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let diff = DiffId::of(b"bad");
        let err = s
            .create_snapshot(&diff, |d: &Dir| {
                d.write("partial", "x")?;
                Err(io::Error::other("truncated tar"))
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::Unpack { .. }), "{err}");
        assert!(err.to_string().contains("truncated tar"));
        assert!(!s.has_snapshot(&diff));
        assert_eq!(
            std::fs::read_dir(t.path().join("kiln/tmp"))
                .unwrap()
                .count(),
            0
        );
        assert!(s.list_snapshots().unwrap().is_empty());
    }

    #[test]
    fn racing_creators_agree() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let diff = DiffId::of(b"shared");
        std::thread::scope(|scope| {
            for i in 0..4 {
                let s = &s;
                scope.spawn(move || {
                    s.create_snapshot(&diff, |d: &Dir| d.write("f", format!("{i}")))
                        .unwrap();
                });
            }
        });
        assert_eq!(s.list_snapshots().unwrap(), vec![diff]);
        assert_eq!(
            std::fs::read_dir(t.path().join("kiln/tmp"))
                .unwrap()
                .count(),
            0
        );
    }
}

#[cfg(test)]
mod boot_tests {
    use super::*;

    #[test]
    fn a_snapshot_from_an_earlier_boot_is_stale_and_replaced() {
        let t = tempfile::tempdir().unwrap();
        // Made by kiln, so private (a folder made by someone else keeps its mode).
        let root = t.path().join("store");
        let s = Store::open(&root).unwrap();
        let diff = DiffId::of(b"layer");
        s.create_snapshot(&diff, |d: &Dir| d.write("f", "one"))
            .unwrap();
        assert!(s.has_snapshot(&diff));
        let marker = root.join(snapshot_rel(&diff)).join(MARKER);
        let text = std::fs::read_to_string(&marker).unwrap();
        assert!(text.starts_with(&format!("{diff}\n")), "{text}");
        // As if the machine had crashed and rebooted since the snapshot was made.
        std::fs::write(&marker, format!("{diff}\nboot 00000000-dead-beef\n")).unwrap();
        assert!(!s.has_snapshot(&diff), "a stale snapshot is not trusted");
        let problems = s.fsck().unwrap().problems;
        assert!(problems.is_empty(), "stale is not damage: {problems:?}");
        s.create_snapshot(&diff, |d: &Dir| d.write("f", "two"))
            .unwrap();
        assert!(s.has_snapshot(&diff));
        assert_eq!(
            std::fs::read_to_string(s.snapshot_dir(&diff).join("f")).unwrap(),
            "two"
        );
        assert_eq!(
            marker_state(&format!("{diff}\n"), &diff),
            MarkerState::Valid
        );
        assert_eq!(marker_state("junk\n", &diff), MarkerState::Invalid);
    }
}
