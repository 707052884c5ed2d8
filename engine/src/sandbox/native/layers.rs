//! Reading the rootfs from the host before the run: overlay lookup across the layer folders
//! (to find missing mount points) and the user database (supplementary groups).

use std::fs::{self, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::plan::{InitEntry, InitKind};

/// What a path is in the merged view of some layers.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// Nothing there (or whited out).
    Missing,
    /// The topmost entry: its host path and metadata.
    Found(PathBuf, Metadata),
    /// An ancestor is not a directory (a symlink, a file): not followed.
    Blocked,
}

fn is_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(p: &Path) -> bool {
    let mut b = [0u8; 2];
    matches!(rustix::fs::lgetxattr(p, "user.overlay.opaque", &mut b), Ok(1) if b[0] == b'y')
}

/// Looks `rel` (slash-separated, relative) up through `layers` (top first) the way overlayfs
/// does: whiteouts hide, opaque directories stop the descent, a non-directory hides the
/// layers below.
pub(crate) fn lookup(layers: &[PathBuf], rel: &str) -> Lookup {
    let names: Vec<&str> = rel.split('/').filter(|n| !n.is_empty()).collect();
    let mut dirs: Vec<PathBuf> = layers.to_vec();
    for (i, name) in names.iter().enumerate() {
        let mut found: Option<(PathBuf, Metadata)> = None;
        let mut next = Vec::new();
        for d in &dirs {
            let p = d.join(name);
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            if is_whiteout(&m) {
                break;
            }
            if found.is_none() {
                found = Some((p.clone(), m.clone()));
            }
            if !m.is_dir() {
                break;
            }
            let opaque = is_opaque(&p);
            next.push(p);
            if opaque {
                break;
            }
        }
        let Some((path, meta)) = found else {
            return Lookup::Missing;
        };
        if i + 1 == names.len() {
            return Lookup::Found(path, meta);
        }
        if !meta.is_dir() {
            return Lookup::Blocked;
        }
        dirs = next;
    }
    Lookup::Blocked
}

/// Why the rootfs cannot host the sandbox's mount points.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadMountPoint(pub String);

/// The init-layer entries for the directories kiln mounts on (`proc`, `sys`, `dev`) and the
/// `/etc` files it binds, plus which `/etc` files can be bound (those the rootfs has as
/// something other than a regular file, or under a non-directory `/etc`, are left alone).
pub(crate) fn mount_points(
    layers: &[PathBuf],
    dirs: &[&str],
    etc_files: &[&'static str],
) -> Result<(Vec<InitEntry>, Vec<&'static str>), BadMountPoint> {
    let mut init = Vec::new();
    for d in dirs {
        match lookup(layers, d) {
            Lookup::Found(_, m) if m.is_dir() => {}
            Lookup::Missing => init.push(InitEntry {
                path: (*d).to_owned(),
                kind: InitKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: (0, 0),
            }),
            _ => return Err(BadMountPoint(format!("/{d} is not a directory"))),
        }
    }
    let mut bound = Vec::new();
    let etc = lookup(layers, "etc");
    let etc_entry = match &etc {
        Lookup::Found(_, m) if m.is_dir() => Some(InitEntry {
            path: "etc".to_owned(),
            kind: InitKind::Dir,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime: (m.mtime(), m.mtime_nsec()),
        }),
        Lookup::Missing => Some(InitEntry {
            path: "etc".to_owned(),
            kind: InitKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: (0, 0),
        }),
        _ => None,
    };
    let Some(etc_entry) = etc_entry else {
        return Ok((init, bound));
    };
    let mut need_etc = matches!(etc, Lookup::Missing);
    let mut files = Vec::new();
    for name in etc_files {
        match lookup(layers, &format!("etc/{name}")) {
            Lookup::Found(_, m) if m.is_file() => bound.push(*name),
            Lookup::Missing => {
                need_etc = true;
                bound.push(*name);
                files.push(InitEntry {
                    path: format!("etc/{name}"),
                    kind: InitKind::File,
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    mtime: (0, 0),
                });
            }
            _ => {}
        }
    }
    if need_etc {
        init.push(etc_entry);
    }
    init.extend(files);
    Ok((init, bound))
}

/// Reads a regular file of the merged rootfs (at most 16 MiB), if there is one.
pub(crate) fn read_file(layers: &[PathBuf], rel: &str) -> Option<String> {
    let Lookup::Found(path, m) = lookup(layers, rel) else {
        return None;
    };
    if !m.is_file() {
        return None;
    }
    let mut s = String::new();
    fs::File::open(path)
        .ok()?
        .take(16 << 20)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// The supplementary groups of `uid`: the groups of `/etc/group` listing its `/etc/passwd`
/// name as a member.
pub(crate) fn supplementary_groups(
    passwd: Option<&str>,
    group: Option<&str>,
    uid: u32,
) -> Vec<u32> {
    let (Some(passwd), Some(group)) = (passwd, group) else {
        return Vec::new();
    };
    let uid = uid.to_string();
    let Some(name) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid).then(|| f[0].to_owned())
    }) else {
        return Vec::new();
    };
    let mut gids = Vec::new();
    for l in group.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || !f[3].split(',').any(|m| m.trim() == name) {
            continue;
        }
        if let Ok(g) = f[2].parse::<u32>() {
            if !gids.contains(&g) {
                gids.push(g);
            }
        }
    }
    gids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_follows_overlay_rules() {
        let t = tempfile::tempdir().unwrap();
        let (top, bottom) = (t.path().join("top"), t.path().join("bottom"));
        for d in ["etc", "opaque", "gone"] {
            fs::create_dir_all(bottom.join(d)).unwrap();
        }
        fs::write(bottom.join("etc/hosts"), "x").unwrap();
        fs::write(bottom.join("opaque/f"), "x").unwrap();
        fs::create_dir_all(top.join("opaque")).unwrap();
        rustix::fs::setxattr(
            top.join("opaque"),
            "user.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            top.join("gone"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            0,
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc", top.join("link")).unwrap();
        let layers = vec![top.clone(), bottom.clone()];
        assert!(
            matches!(lookup(&layers, "etc/hosts"), Lookup::Found(p, _) if p == bottom.join("etc/hosts"))
        );
        assert!(matches!(lookup(&layers, "opaque/f"), Lookup::Missing));
        assert!(matches!(lookup(&layers, "gone"), Lookup::Missing));
        assert!(matches!(lookup(&layers, "link/hosts"), Lookup::Blocked));
        assert!(matches!(lookup(&layers, "nothing/here"), Lookup::Missing));

        let (init, bound) =
            mount_points(&layers, &["proc", "etc"], &["hosts", "resolv.conf"]).unwrap();
        assert_eq!(bound, vec!["hosts", "resolv.conf"]);
        let paths: Vec<_> = init.iter().map(|e| (e.path.as_str(), e.kind)).collect();
        assert_eq!(
            paths,
            vec![
                ("proc", InitKind::Dir),
                ("etc", InitKind::Dir),
                ("etc/resolv.conf", InitKind::File)
            ]
        );
        let m = fs::metadata(bottom.join("etc")).unwrap();
        assert_eq!(init[1].mode, m.mode() & 0o7777);
        assert_eq!(init[1].mtime, (m.mtime(), m.mtime_nsec()));
        assert_eq!(
            mount_points(&layers, &["link"], &[]).unwrap_err(),
            BadMountPoint("/link is not a directory".into())
        );
    }

    #[test]
    fn groups_from_the_user_database() {
        let passwd = "root:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n";
        let group = "root:x:0:\nstaff:x:50:bob,alice\naudio:x:29:alice\nusers:x:100: bob\n";
        assert_eq!(
            supplementary_groups(Some(passwd), Some(group), 1000),
            vec![50, 100]
        );
        assert_eq!(
            supplementary_groups(Some(passwd), Some(group), 0),
            Vec::<u32>::new()
        );
        assert_eq!(
            supplementary_groups(Some(passwd), None, 1000),
            Vec::<u32>::new()
        );
        assert_eq!(
            supplementary_groups(None, Some(group), 1000),
            Vec::<u32>::new()
        );
    }
}
