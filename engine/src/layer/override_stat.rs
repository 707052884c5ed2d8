//! `user.containers.override_stat`: ownership, mode and type that could not be set for real.
//!
//! The format is containers/storage's (`pkg/idtools`, `FormatContainersOverrideXattrDevice`),
//! also read by fuse-overlayfs: `uid:gid:mode[:type]`, uid and gid decimal, mode octal with the
//! setuid/setgid/sticky bits (written `%04o`), type one of `file`, `dir`, `symlink`, `pipe`,
//! `socket`, `char-<major>-<minor>`, `block-<major>-<minor>`. Parsing is as lenient as theirs:
//! the type is optional and anything after the fourth field is ignored.

use std::fmt;
use std::sync::OnceLock;

/// Whether kiln runs as root, so it can give objects any owner and mode for real: root, or
/// root of a user namespace with a system's worth of ids (subordinate ids). Root of a
/// namespace that maps one id (a user without subordinate ids) is not: its setuid files would
/// run as the user.
pub fn host_is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        rustix::process::geteuid().is_root()
            && crate::rootless::namespace_ids().is_none_or(|n| n >= crate::rootless::SYSTEM_IDS)
    })
}

/// The owner an object's real owner stands for where it has no override record. As root,
/// itself. Otherwise kiln's own uid and gid stand for root, as in a user namespace that maps
/// one id: kiln can give nothing another owner for real, so what it made and could not record
/// (a symlink, since Linux takes no user xattrs on one) belongs to root, like the rest of a
/// layer usually does. Other ids are themselves.
pub fn container_owner(uid: u32, gid: u32) -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    if host_is_root() {
        return (uid, gid);
    }
    let (my_uid, my_gid) = *IDS.get_or_init(|| {
        (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        )
    });
    (
        if uid == my_uid { 0 } else { uid },
        if gid == my_gid { 0 } else { gid },
    )
}

/// The mode kiln gives an object for real: without root, no setuid or setgid bit (the file
/// would run as kiln's user); the override record keeps the whole mode.
pub fn real_mode(mode: u32) -> u32 {
    if host_is_root() {
        mode
    } else {
        mode & !0o6000
    }
}

/// The file type an override records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symlink, stored as a regular file holding the target.
    Symlink,
    /// A named pipe.
    Pipe,
    /// A unix socket.
    Socket,
    /// A character device.
    Char {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    Block {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

/// A parsed `user.containers.override_stat` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverrideStat {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Permission bits with setuid/setgid/sticky (`0o7777` at most).
    pub mode: u32,
    /// The recorded type; `None` when the value has only three fields.
    pub kind: Option<OverrideType>,
}

impl OverrideStat {
    /// Parses an xattr value; `None` when it is not in the containers/storage format.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.split(':');
        let uid = parts.next()?.parse().ok()?;
        let gid = parts.next()?.parse().ok()?;
        let mode = u32::from_str_radix(parts.next()?, 8).ok()?;
        if mode > 0o7777 {
            return None;
        }
        let kind = match parts.next() {
            None => None,
            Some(t) => Some(parse_type(t)?),
        };
        Some(Self {
            uid,
            gid,
            mode,
            kind,
        })
    }
}

fn parse_type(t: &str) -> Option<OverrideType> {
    let device = |rest: &str| -> Option<(u32, u32)> {
        let mut it = rest.split('-');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        Some((major, minor))
    };
    Some(if let Some(rest) = t.strip_prefix("char-") {
        let (major, minor) = device(rest)?;
        OverrideType::Char { major, minor }
    } else if let Some(rest) = t.strip_prefix("block-") {
        let (major, minor) = device(rest)?;
        OverrideType::Block { major, minor }
    } else {
        match t {
            "file" => OverrideType::File,
            "dir" => OverrideType::Dir,
            "symlink" => OverrideType::Symlink,
            "pipe" => OverrideType::Pipe,
            "socket" => OverrideType::Socket,
            _ => return None,
        }
    })
}

impl fmt::Display for OverrideType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File => f.write_str("file"),
            Self::Dir => f.write_str("dir"),
            Self::Symlink => f.write_str("symlink"),
            Self::Pipe => f.write_str("pipe"),
            Self::Socket => f.write_str("socket"),
            Self::Char { major, minor } => write!(f, "char-{major}-{minor}"),
            Self::Block { major, minor } => write!(f, "block-{major}-{minor}"),
        }
    }
}

impl fmt::Display for OverrideStat {
    /// The xattr value, `uid:gid:%04o:type` (type `file` when none is recorded).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind.unwrap_or(OverrideType::File);
        write!(f, "{}:{}:{:04o}:{kind}", self.uid, self.gid, self.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_containers_storage() {
        let s = OverrideStat {
            uid: 0,
            gid: 0,
            mode: 0o755,
            kind: Some(OverrideType::Dir),
        };
        assert_eq!(s.to_string(), "0:0:0755:dir");
        let d = OverrideStat {
            uid: 5,
            gid: 6,
            mode: 0o4640,
            kind: Some(OverrideType::Char { major: 1, minor: 3 }),
        };
        assert_eq!(d.to_string(), "5:6:4640:char-1-3");
        assert_eq!(OverrideStat::parse(d.to_string().as_bytes()), Some(d));
    }

    #[test]
    fn parses_three_field_form_and_rejects_junk() {
        assert_eq!(
            OverrideStat::parse(b"1000:100:0644"),
            Some(OverrideStat {
                uid: 1000,
                gid: 100,
                mode: 0o644,
                kind: None
            })
        );
        assert_eq!(
            OverrideStat::parse(b"0:0:01777:dir:extra").map(|s| s.mode),
            Some(0o1777)
        );
        for bad in [
            &b"0:0"[..],
            b"a:0:0644",
            b"0:0:0999",
            b"0:0:0644:weird",
            b"0:0:0644:char-1",
            b"0:0:017777",
        ] {
            assert_eq!(OverrideStat::parse(bad), None, "{bad:?}");
        }
    }
}
