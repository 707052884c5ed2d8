//! The few filesystem calls std lacks on `wasm32-wasip1`.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Creates symlink `link` pointing at `target`.
#[cfg(unix)]
pub fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

/// Creates symlink `link` pointing at `target`.
#[cfg(target_os = "wasi")]
pub fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::wasi::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (t, l) = (c(target)?, c(link)?);
    // SAFETY: two valid NUL-terminated strings; errors come back through errno.
    if unsafe { libc::symlink(t.as_ptr(), l.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A time in nanoseconds since the epoch as a `SystemTime`.
pub fn system_time(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

/// Sets the modification time of a file or directory (best effort for directories).
pub fn set_mtime(path: &Path, mtime: SystemTime) -> io::Result<()> {
    let f = fs::File::open(path)?;
    f.set_modified(mtime)
}

/// Whether `path` exists without following a final symlink.
pub fn exists_nofollow(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// A path from raw bytes (archive member names).
#[cfg(unix)]
pub fn path_from_bytes(b: &[u8]) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(b).into()
}

/// A path from raw bytes (archive member names).
#[cfg(target_os = "wasi")]
pub fn path_from_bytes(b: &[u8]) -> std::path::PathBuf {
    use std::os::wasi::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(b).into()
}
