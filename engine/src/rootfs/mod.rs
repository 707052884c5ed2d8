//! The root filesystem of a build step as seen through its layers.
//!
//! A step's rootfs is a stack of read-only layer snapshots (bottom first) plus, while a step
//! writes, an upper folder. All of them share one on-disk format, kernel-overlayfs compatible (see
//! `layer`): a whiteout is a character device 0:0 (or an OCI `.wh.<name>` marker file), an opaque
//! directory carries the `user.overlay.opaque=y` xattr. [`LayerView`] merges such a stack
//! read-only, the way overlayfs would: lookups go top-down, a whiteout hides what is below, an
//! opaque directory hides lower directories of the same path, a non-directory ends the search.
//! [`Overlay`] is the writable counterpart that RUN steps see: the same merge over the lowers,
//! plus the step's upper folder (copy-up, whiteouts, opaque directories, ownership records),
//! guest-tool shims below all layers and a virtual `/dev`.
//!
//! Paths are resolved entirely inside the rootfs: `..` stops at the root, and a symlink's target
//! is interpreted relative to the rootfs (an absolute target means the rootfs root), so nothing
//! here can name a host path. Every access goes through an already-opened `cap_std::fs::Dir`.

mod overlay;
mod view;

pub use overlay::{
    Creds, Device, DirEntry, NodeKind, NodeStat, OpenOptions, Opened, Overlay, Shims, TimeSpec,
    VfsError,
};
pub use view::{ContainerPath, Entry, EntryKind, LayerView, MergedDir, RootfsError};
