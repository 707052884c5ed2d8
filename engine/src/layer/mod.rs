//! Layers: deterministic tars with OCI whiteouts from an upper folder, and safe extraction.
//!
//! Two on-disk shapes meet here (DESIGN.md "Layers" and "Rootfs / overlay"):
//!
//! - **Upper / snapshot folder**: a plain tree that kernel overlayfs (mounted with `userxattr`)
//!   understands. A deleted entry is a whiteout, a character device 0:0 with the deleted name;
//!   an opaque directory carries `user.overlay.opaque=y`. Ownership and mode that could not be
//!   set for real are recorded in `user.containers.override_stat` (containers/storage format
//!   `uid:gid:0mode[:type]`, type `file`, `dir`, `symlink`, `pipe`, `socket`, `char-M-m`,
//!   `block-M-m`); when present it wins over the real stat. An OCI-style `.wh.<name>` or
//!   `.wh..wh..opq` *regular file* is accepted as a marker too, for writers that cannot create
//!   device nodes or user xattrs.
//! - **Layer tar**: what [`write_layer`] produces and [`unpack_layer`] consumes; see
//!   [`write_layer`] for the exact shape and [`UnpackOptions`] for the extraction modes.
//!
//! [`compress`] and [`decompress_auto`] turn layer tars into shippable blobs and back.

mod compress;

mod override_stat;
mod reader;
mod tarfmt;
#[cfg(test)]
mod tests;
mod unpack;
mod write;

use std::io;

pub use compress::{
    compress, compress_parallel, decompress_auto, ChannelReader, CompressedBlob, Compression,
    Decompressor, Format, Tee,
};
pub use override_stat::{container_owner, host_is_root, real_mode, OverrideStat, OverrideType};
pub use reader::Limits;
pub use unpack::{unpack_layer, UnpackOptions, UnpackStats, Whiteouts};
pub use write::{write_layer, write_layer_pipelined, LayerTar};

/// The xattr holding ownership and mode that could not be set for real (containers/storage).
pub const OVERRIDE_STAT_XATTR: &str = "user.containers.override_stat";

/// The xattr marking an overlay directory opaque (overlayfs mounted with `userxattr`).
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";

/// The OCI whiteout prefix: `.wh.<name>` deletes `<name>` from the layers below.
pub const WHITEOUT_PREFIX: &str = ".wh.";

/// The OCI opaque marker: `<dir>/.wh..wh..opq` hides everything the layers below put in `<dir>`.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Why a layer could not be written, read, or extracted.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A tar entry that kiln refuses to extract; nothing of it was written.
    #[error("refusing tar entry {path:?}: {reason}")]
    Refused {
        /// The entry's name as the archive spells it (lossy UTF-8).
        path: String,
        /// What is wrong with it.
        reason: Refusal,
    },
    /// The archive is not a well-formed tar.
    #[error("malformed tar at byte {offset}: {reason}")]
    Malformed {
        /// Offset of the offending header in the uncompressed stream.
        offset: u64,
        /// What is malformed.
        reason: Malformed,
    },
    /// The archive ended inside an entry's data.
    #[error("tar entry {path:?}: archive ends inside the entry")]
    Truncated {
        /// The entry's name (lossy UTF-8).
        path: String,
    },
    /// Reading or decompressing the archive failed.
    #[error("read archive: {0}")]
    ReadArchive(#[source] io::Error),
    /// A snapshot is unpacked into an empty folder, and this one is not.
    #[error("unpack snapshot: destination folder is not empty")]
    DestinationNotEmpty,
    /// A filesystem operation on the destination failed.
    #[error("extract {path:?}: {op}: {source}")]
    Extract {
        /// The entry's name (lossy UTF-8).
        path: String,
        /// The operation that failed (`create`, `chown`, ...).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A filesystem operation on the upper folder failed.
    #[error("read upper entry {path:?}: {op}: {source}")]
    ReadUpper {
        /// The path inside the upper (lossy UTF-8).
        path: String,
        /// The operation that failed (`open`, `stat`, ...).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The upper holds something a layer tar cannot represent.
    #[error("upper entry {path:?}: {reason}")]
    Unrepresentable {
        /// The path inside the upper (lossy UTF-8).
        path: String,
        /// What cannot be represented.
        reason: Unrepresentable,
    },
    /// Writing the tar to its destination failed.
    #[error("write layer tar: {0}")]
    WriteTar(#[source] io::Error),
    /// Compressing a blob failed.
    #[error("compress layer: {0}")]
    Compress(#[source] io::Error),
}

/// Why a tar entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A `..` component: the path would leave the destination.
    #[error("path leaves the destination")]
    LeavesDestination,
    /// The entry names the destination folder itself with a type other than directory.
    #[error("a non-directory entry names the destination root")]
    NamesRoot,
    /// A NUL byte cannot be part of a file name.
    #[error("path contains a NUL byte")]
    NulByte,
    /// The name or link target is longer than [`Limits::max_path_len`].
    #[error("path is {len} bytes, more than the {limit}-byte limit")]
    PathTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A parent component is a symlink; writing through it could leave the destination.
    #[error("parent {parent:?} is a symlink; refusing to write through it")]
    ThroughSymlink {
        /// The parent path (lossy UTF-8).
        parent: String,
    },
    /// A parent component exists and is not a directory.
    #[error("parent {parent:?} is not a directory")]
    ParentNotDirectory {
        /// The parent path (lossy UTF-8).
        parent: String,
    },
    /// A hardlink to an absolute path.
    #[error("hardlink target {target:?} is absolute")]
    AbsoluteLinkTarget {
        /// The link target (lossy UTF-8).
        target: String,
    },
    /// A hardlink whose target has a `..` component.
    #[error("hardlink target {target:?} leaves the destination")]
    LinkTargetLeaves {
        /// The link target (lossy UTF-8).
        target: String,
    },
    /// A hardlink to something this archive did not extract earlier.
    #[error("hardlink target {target:?} was not extracted earlier from this archive")]
    LinkTargetUnknown {
        /// The link target (lossy UTF-8).
        target: String,
    },
    /// A device node where [`UnpackOptions::allow_devices`] is off.
    #[error("device nodes are not allowed here")]
    DeviceNotAllowed,
    /// A 0:0 character device in a layer would read as an overlay whiteout in a snapshot.
    #[error("a 0:0 character device would read as an overlay whiteout")]
    WhiteoutDevice,
    /// A `.wh.` entry where whiteouts are not allowed ([`Whiteouts::Refuse`]).
    #[error("whiteout entries are not allowed in this archive")]
    WhiteoutNotAllowed,
    /// A whiteout that names `""`, `.` or `..` instead of a sibling entry.
    #[error("whiteout does not name a sibling entry")]
    BadWhiteout,
    /// A `.wh.` name used as a directory.
    #[error("a whiteout name is used as a directory")]
    WhiteoutAsDirectory,
    /// More entries than [`Limits::max_entries`].
    #[error("archive has more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// The entry's size would push the archive past [`Limits::max_total_bytes`].
    #[error(
        "entry claims {claimed} bytes; after {before} bytes that exceeds the {limit}-byte limit"
    )]
    TooLarge {
        /// The size the header claims.
        claimed: u64,
        /// Bytes claimed by the entries before it.
        before: u64,
        /// The limit.
        limit: u64,
    },
    /// An extended header (PAX, GNU long name) bigger than kiln reads.
    #[error("extended header of {size} bytes exceeds the {limit}-byte limit")]
    ExtensionTooLarge {
        /// The size the header claims.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// GNU sparse files are not supported.
    #[error("sparse files are not supported")]
    Sparse,
    /// An entry type kiln does not extract.
    #[error("unsupported entry type {0:?}")]
    UnsupportedType(char),
    /// A uid or gid that does not fit 32 bits.
    #[error("owner id {0} is out of range")]
    IdOutOfRange(u64),
}

/// How a tar archive is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The header checksum does not match.
    #[error("header checksum mismatch")]
    Checksum,
    /// A numeric header field is not octal or base-256.
    #[error("invalid number in header field {0}")]
    Number(&'static str),
    /// A PAX extended header record is not `<len> <key>=<value>\n`.
    #[error("invalid PAX record")]
    PaxRecord,
    /// A PAX value that should be a number is not.
    #[error("invalid PAX value for {0}")]
    PaxValue(&'static str),
    /// A zero block followed by a non-zero block.
    #[error("data after an end-of-archive block")]
    DataAfterEnd,
    /// Extension headers with no entry after them.
    #[error("extended header not followed by an entry")]
    DanglingExtension,
    /// More consecutive extension headers than kiln accepts.
    #[error("too many consecutive extended headers")]
    TooManyExtensions,
    /// More bytes after the end-of-archive marker than the size limit leaves room for.
    #[error("too much data after the end-of-archive marker")]
    TrailingData,
    /// The archive ends in the middle of a header block.
    #[error("archive ends inside a header block")]
    TruncatedHeader,
}

/// Something in an upper folder that a layer tar cannot represent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unrepresentable {
    /// A non-regular file with a `.wh.` name: a layer would read it as a whiteout.
    #[error("only regular files may carry a .wh. name")]
    WhiteoutName,
    /// `user.containers.override_stat` cannot be parsed.
    #[error("invalid {xattr} value {value:?}", xattr = OVERRIDE_STAT_XATTR)]
    BadOverride {
        /// The raw value (lossy UTF-8).
        value: String,
    },
    /// `user.containers.override_stat` names a type that contradicts the real file.
    #[error("{xattr} says {claimed} but the entry is a {actual}", xattr = OVERRIDE_STAT_XATTR)]
    OverrideMismatch {
        /// The type the xattr claims.
        claimed: &'static str,
        /// The real type.
        actual: &'static str,
    },
    /// A symlink recorded as a regular file whose content is too long to be a link target.
    #[error("recorded symlink target is longer than {0} bytes")]
    LinkTargetTooLong(usize),
    /// A regular file changed size while it was archived.
    #[error("file changed size while being archived")]
    Changed,
    /// The name is longer than a layer may carry: kiln never writes a layer that it (or
    /// docker) would refuse to read back.
    #[error("its name is longer than {0} bytes")]
    PathTooLong(usize),
    /// The layer would hold more entries than a layer may.
    #[error("the layer would hold more than {0} entries")]
    TooManyEntries(u64),
}

/// Lossy UTF-8 for error messages.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether an xattr travels in layer tars: `security.capability` and `user.*`, except overlay's
/// own bookkeeping and the override record (which becomes the entry's real uid/gid/mode).
fn keep_xattr(name: &[u8]) -> bool {
    name == b"security.capability"
        || (name.starts_with(b"user.")
            && !name.starts_with(b"user.overlay.")
            && name != SOURCE_XATTR.as_bytes()
            && name != OVERRIDE_STAT_XATTR.as_bytes())
}

/// The bookkeeping xattr that earlier versions of kiln put on copied files in uppers and snapshots (which
/// source file a file was copied from; kept in a `sources` file beside the snapshot now).
/// Snapshots in older stores still carry it: it never goes into a layer.
pub const SOURCE_XATTR: &str = "user.kiln.copied-from";
