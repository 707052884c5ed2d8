use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cap_std::ambient_authority;

use super::*;
use crate::layer::{write_layer, OPAQUE_XATTR, OVERRIDE_STAT_XATTR};

struct Fixture {
    tmp: tempfile::TempDir,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
}

impl Fixture {
    fn new(n: usize) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let lowers = (0..n)
            .map(|i| {
                let p = tmp.path().join(format!("l{i}"));
                std::fs::create_dir(&p).unwrap();
                p
            })
            .collect();
        let upper = tmp.path().join("upper");
        std::fs::create_dir(&upper).unwrap();
        Self { tmp, lowers, upper }
    }

    fn overlay_with(&self, shims: Shims, creds: Creds) -> Overlay {
        let open = |p: &Path| Dir::open_ambient_dir(p, ambient_authority()).unwrap();
        Overlay::new(
            self.lowers.iter().map(|p| open(p)).collect(),
            open(&self.upper),
            shims,
            creds,
        )
    }

    fn overlay(&self) -> Overlay {
        self.overlay_with(Shims::none(), Creds::default())
    }

    /// Every path in the upper, relative, sorted.
    fn upper_tree(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                let p = e.path();
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
                if e.file_type().unwrap().is_dir() {
                    walk(base, &p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.upper, &self.upper, &mut out);
        out.sort();
        out
    }

    /// The layer tar of the upper: name -> (type, mode, uid, gid, link target, data).
    fn tar(&self) -> BTreeMap<String, TarEntry> {
        let upper = Dir::open_ambient_dir(&self.upper, ambient_authority()).unwrap();
        let mut buf = Vec::new();
        write_layer(&upper, None, &mut buf).unwrap();
        let mut archive = tar::Archive::new(&buf[..]);
        let mut out = BTreeMap::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(
                name,
                TarEntry {
                    kind: h.entry_type(),
                    mode: h.mode().unwrap(),
                    uid: h.uid().unwrap(),
                    gid: h.gid().unwrap(),
                    link: h
                        .link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned()),
                    data,
                },
            );
        }
        out
    }
}

#[derive(Debug)]
struct TarEntry {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    link: Option<String>,
    data: Vec<u8>,
}

fn p(s: &str) -> ContainerPath {
    ContainerPath::parse(s)
}

fn mkwhiteout(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
}

fn set_xattr(path: &Path, name: &str, value: &str) {
    rustix::fs::lsetxattr(
        path,
        name,
        value.as_bytes(),
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
}

fn get_xattr(path: &Path, name: &str) -> Option<String> {
    let mut buf = [0u8; 256];
    let n = rustix::fs::lgetxattr(path, name, &mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn read(ov: &Overlay, path: &str) -> Result<String, VfsError> {
    match ov.open(&p(path), &OpenOptions::read_only(), 0, 0)? {
        Opened::File(mut f) => {
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            Ok(s)
        }
        other => panic!("{path}: not a file: {other:?}"),
    }
}

fn write_opts() -> OpenOptions {
    OpenOptions {
        write: true,
        create: true,
        truncate: true,
        follow: true,
        ..OpenOptions::default()
    }
}

fn write(ov: &Overlay, path: &str, data: &str) -> Result<(), VfsError> {
    match ov.open(&p(path), &write_opts(), 0o666, 0o022)? {
        Opened::File(mut f) => {
            f.write_all(data.as_bytes()).unwrap();
            Ok(())
        }
        other => panic!("{path}: not a file: {other:?}"),
    }
}

fn names(ov: &Overlay, path: &str) -> Vec<String> {
    ov.read_dir(&p(path))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

fn errno<T: std::fmt::Debug>(r: Result<T, VfsError>) -> i32 {
    r.unwrap_err().errno()
}

#[test]
fn overlay_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Overlay>();
}

#[test]
fn copy_up_on_write_keeps_the_lower_and_copies_parents() {
    let f = Fixture::new(1);
    let l = &f.lowers[0];
    std::fs::create_dir_all(l.join("etc/sub")).unwrap();
    std::fs::write(l.join("etc/conf"), "lower").unwrap();
    std::fs::write(l.join("etc/other"), "x").unwrap();
    std::fs::set_permissions(l.join("etc"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(l.join("etc"), Some(7), Some(8)).unwrap();
    std::os::unix::fs::chown(l.join("etc/conf"), Some(5), Some(6)).unwrap();
    std::fs::set_permissions(l.join("etc/conf"), std::fs::Permissions::from_mode(0o640)).unwrap();
    set_xattr(&l.join("etc/conf"), "user.note", "kept");
    let ov = f.overlay();
    assert_eq!(read(&ov, "/etc/conf").unwrap(), "lower");
    assert!(f.upper_tree().is_empty(), "reading copies nothing up");

    let opts = OpenOptions {
        write: true,
        append: true,
        follow: true,
        ..OpenOptions::default()
    };
    match ov.open(&p("/etc/conf"), &opts, 0, 0).unwrap() {
        Opened::File(mut file) => file.write_all(b"+upper").unwrap(),
        other => panic!("{other:?}"),
    }
    assert_eq!(read(&ov, "/etc/conf").unwrap(), "lower+upper");
    assert_eq!(
        std::fs::read_to_string(l.join("etc/conf")).unwrap(),
        "lower"
    );
    assert_eq!(f.upper_tree(), ["etc", "etc/conf"]);
    let meta = std::fs::metadata(f.upper.join("etc")).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o750, 7, 8)
    );
    let meta = std::fs::metadata(f.upper.join("etc/conf")).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o640, 5, 6)
    );
    assert_eq!(
        get_xattr(&f.upper.join("etc/conf"), "user.note").as_deref(),
        Some("kept")
    );
    let st = ov.stat(&p("/etc/conf"), true).unwrap();
    assert_eq!(
        (st.kind, st.mode, st.uid, st.gid, st.size),
        (NodeKind::File, 0o640, 5, 6, 11)
    );
    assert_eq!(names(&ov, "/etc"), ["conf", "other", "sub"]);

    // Truncating copies up no data.
    write(&ov, "/etc/other", "new").unwrap();
    assert_eq!(read(&ov, "/etc/other").unwrap(), "new");
    assert_eq!(std::fs::read_to_string(l.join("etc/other")).unwrap(), "x");
}

#[test]
fn new_files_belong_to_the_creds_with_the_umask_applied() {
    let f = Fixture::new(0);
    let ov = f.overlay_with(
        Shims::none(),
        Creds {
            uid: 1000,
            gid: 100,
        },
    );
    write(&ov, "/f", "hi").unwrap();
    ov.mkdir(&p("/d"), 0o777, 0o027).unwrap();
    let st = ov.stat(&p("/f"), true).unwrap();
    assert_eq!((st.mode, st.uid, st.gid, st.size), (0o644, 1000, 100, 2));
    let st = ov.stat(&p("/d"), true).unwrap();
    assert_eq!(
        (st.kind, st.mode, st.uid, st.gid),
        (NodeKind::Dir, 0o750, 1000, 100)
    );
    let tar = f.tar();
    assert_eq!(
        (tar["f"].mode, tar["f"].uid, tar["f"].gid),
        (0o644, 1000, 100)
    );
    assert_eq!(tar["f"].data, b"hi");
    assert_eq!((tar["d/"].mode, tar["d/"].uid), (0o750, 1000));
}

#[test]
fn deleting_a_lower_file_leaves_a_whiteout() {
    let f = Fixture::new(1);
    std::fs::create_dir(f.lowers[0].join("etc")).unwrap();
    std::fs::write(f.lowers[0].join("etc/gone"), "x").unwrap();
    std::fs::write(f.lowers[0].join("etc/stays"), "y").unwrap();
    let ov = f.overlay();
    ov.unlink(&p("/etc/gone")).unwrap();
    assert_eq!(errno(ov.stat(&p("/etc/gone"), false)), libc::ENOENT);
    assert_eq!(names(&ov, "/etc"), ["stays"]);
    let st = std::fs::symlink_metadata(f.upper.join("etc/gone")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &st.file_type()
    ));
    assert_eq!(st.rdev(), 0);
    assert!(f.lowers[0].join("etc/gone").exists());
    assert_eq!(errno(ov.unlink(&p("/etc/gone"))), libc::ENOENT);
    assert!(f.tar().contains_key("etc/.wh.gone"));
    // A new file takes the name back.
    write(&ov, "/etc/gone", "again").unwrap();
    assert_eq!(read(&ov, "/etc/gone").unwrap(), "again");
    assert!(!f.tar().contains_key("etc/.wh.gone"));
    // Deleting an upper-only file leaves nothing.
    write(&ov, "/new", "n").unwrap();
    ov.unlink(&p("/new")).unwrap();
    assert!(!f.upper.join("new").exists());
    assert_eq!(errno(ov.unlink(&p("/etc"))), libc::EISDIR);
}

#[test]
fn rm_r_of_a_lower_dir_then_mkdir_is_opaque() {
    let f = Fixture::new(1);
    let l = &f.lowers[0];
    std::fs::create_dir_all(l.join("d/sub")).unwrap();
    std::fs::write(l.join("d/a"), "a").unwrap();
    std::fs::write(l.join("d/sub/b"), "b").unwrap();
    let ov = f.overlay();
    assert_eq!(errno(ov.rmdir(&p("/d"))), libc::ENOTEMPTY);
    assert_eq!(errno(ov.rmdir(&p("/d/a"))), libc::ENOTDIR);
    ov.unlink(&p("/d/sub/b")).unwrap();
    ov.rmdir(&p("/d/sub")).unwrap();
    ov.unlink(&p("/d/a")).unwrap();
    assert!(names(&ov, "/d").is_empty());
    ov.rmdir(&p("/d")).unwrap();
    assert_eq!(errno(ov.stat(&p("/d"), true)), libc::ENOENT);
    assert_eq!(f.upper_tree(), ["d"]);
    ov.mkdir(&p("/d"), 0o755, 0).unwrap();
    assert!(names(&ov, "/d").is_empty());
    assert_eq!(
        get_xattr(&f.upper.join("d"), OPAQUE_XATTR).as_deref(),
        Some("y")
    );
    write(&ov, "/d/new", "n").unwrap();
    assert_eq!(names(&ov, "/d"), ["new"]);
    let tar = f.tar();
    let keys: Vec<_> = tar.keys().cloned().collect();
    assert_eq!(keys, ["d/", "d/.wh..wh..opq", "d/new"]);
    assert_eq!(errno(ov.mkdir(&p("/d"), 0o755, 0)), libc::EEXIST);
    assert_eq!(errno(ov.rmdir(&p("/"))), libc::EBUSY);
}

#[test]
fn opaque_and_whiteouts_in_lowers_are_honoured() {
    let f = Fixture::new(2);
    let (l0, l1) = (&f.lowers[0], &f.lowers[1]);
    std::fs::create_dir_all(l0.join("d")).unwrap();
    std::fs::write(l0.join("d/old"), "o").unwrap();
    std::fs::write(l0.join("marked"), "m").unwrap();
    std::fs::write(l0.join("dev-gone"), "m").unwrap();
    std::fs::create_dir_all(l1.join("d")).unwrap();
    std::fs::write(l1.join("d/new"), "n").unwrap();
    set_xattr(&l1.join("d"), OPAQUE_XATTR, "y");
    std::fs::write(l1.join(".wh.marked"), "").unwrap();
    mkwhiteout(&l1.join("dev-gone"));
    let ov = f.overlay();
    assert_eq!(names(&ov, "/"), ["d", "dev"]);
    assert_eq!(names(&ov, "/d"), ["new"]);
    assert_eq!(errno(ov.stat(&p("/d/old"), true)), libc::ENOENT);
    assert_eq!(errno(ov.stat(&p("/marked"), true)), libc::ENOENT);
    assert_eq!(errno(ov.stat(&p("/.wh.marked"), true)), libc::ENOENT);
    assert_eq!(errno(write(&ov, "/.wh.x", "")), libc::EPERM);
}

#[test]
fn override_stat_is_reported_and_survives_copy_up() {
    let f = Fixture::new(1);
    std::fs::write(f.lowers[0].join("f"), "x").unwrap();
    set_xattr(
        &f.lowers[0].join("f"),
        OVERRIDE_STAT_XATTR,
        "1000:1000:4750:file",
    );
    std::fs::write(f.lowers[0].join("dev"), "").unwrap();
    std::fs::create_dir(f.lowers[0].join("x")).unwrap();
    std::fs::write(f.lowers[0].join("x/tty"), "").unwrap();
    set_xattr(
        &f.lowers[0].join("x/tty"),
        OVERRIDE_STAT_XATTR,
        "0:5:0620:char-4-1",
    );
    let ov = f.overlay();
    let st = ov.stat(&p("/f"), true).unwrap();
    assert_eq!((st.mode, st.uid, st.gid), (0o4750, 1000, 1000));
    let st = ov.stat(&p("/x/tty"), true).unwrap();
    assert_eq!((st.kind, st.mode, st.gid), (NodeKind::CharDevice, 0o620, 5));
    ov.set_times(
        &p("/f"),
        Some(TimeSpec::Set(1_000_000_000)),
        Some(TimeSpec::Set(2_500_000_000)),
        true,
    )
    .unwrap();
    let st = ov.stat(&p("/f"), true).unwrap();
    assert_eq!((st.mode, st.uid, st.gid), (0o4750, 1000, 1000));
    assert_eq!((st.atime_ns, st.mtime_ns), (1_000_000_000, 2_500_000_000));
    let tar = f.tar();
    assert_eq!(
        (tar["f"].mode, tar["f"].uid, tar["f"].gid),
        (0o4750, 1000, 1000)
    );
}

#[test]
fn chmod_and_chown_land_in_the_layer() {
    let f = Fixture::new(1);
    let l = &f.lowers[0];
    std::fs::create_dir(l.join("bin")).unwrap();
    std::fs::write(l.join("bin/tool"), "t").unwrap();
    std::fs::set_permissions(l.join("bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    symlink("tool", l.join("bin/link")).unwrap();
    let ov = f.overlay();
    write(&ov, "/mine", "m").unwrap();
    ov.chmod(&p("/mine"), 0o4711, true).unwrap();
    ov.chown(&p("/mine"), Some(33), None, true).unwrap();
    ov.chown(&p("/bin/tool"), Some(1000), Some(1001), true)
        .unwrap();
    ov.chmod(&p("/bin/tool"), 0o700, true).unwrap();
    // chmod of the symlink itself does nothing, following it changes the target.
    ov.chmod(&p("/bin/link"), 0o777, false).unwrap();
    assert!(!f.upper.join("bin/link").exists());
    ov.chmod(&p("/bin/link"), 0o750, true).unwrap();
    ov.chown(&p("/bin/link"), Some(7), Some(7), false).unwrap();
    let st = ov.stat(&p("/mine"), true).unwrap();
    // chown clears setuid.
    assert_eq!((st.mode, st.uid, st.gid), (0o711, 33, 0));
    let tar = f.tar();
    assert_eq!(
        (tar["mine"].mode, tar["mine"].uid, tar["mine"].gid),
        (0o711, 33, 0)
    );
    let tool = &tar["bin/tool"];
    assert_eq!((tool.mode, tool.uid, tool.gid), (0o750, 1000, 1001));
    assert_eq!(tool.data, b"t");
    let link = &tar["bin/link"];
    assert_eq!(link.kind, tar::EntryType::Symlink);
    assert_eq!((link.uid, link.link.as_deref()), (7, Some("tool")));
    assert_eq!(std::fs::metadata(l.join("bin/tool")).unwrap().uid(), 0);
}

#[test]
fn rename_of_a_lower_directory_copies_it_up_whole() {
    let f = Fixture::new(2);
    let (l0, l1) = (&f.lowers[0], &f.lowers[1]);
    std::fs::create_dir_all(l0.join("a/sub")).unwrap();
    std::fs::write(l0.join("a/x"), "x0").unwrap();
    std::fs::write(l0.join("a/sub/y"), "y").unwrap();
    std::fs::write(l0.join("a/hidden"), "h").unwrap();
    std::fs::create_dir_all(l1.join("a")).unwrap();
    std::fs::write(l1.join("a/x"), "x1").unwrap();
    symlink("sub/y", l1.join("a/ln")).unwrap();
    mkwhiteout(&l1.join("a/hidden"));
    std::fs::create_dir(l1.join("b")).unwrap();
    std::fs::write(l1.join("b/old"), "old").unwrap();
    let ov = f.overlay();
    assert_eq!(errno(ov.rename(&p("/a"), &p("/b"))), libc::ENOTEMPTY);
    assert_eq!(errno(ov.rename(&p("/a"), &p("/a/sub/z"))), libc::EINVAL);
    assert_eq!(errno(ov.rename(&p("/a"), &p("/a/x"))), libc::EINVAL);
    ov.unlink(&p("/b/old")).unwrap();
    ov.rename(&p("/a"), &p("/b")).unwrap();
    assert_eq!(errno(ov.stat(&p("/a"), false)), libc::ENOENT);
    assert_eq!(names(&ov, "/b"), ["ln", "sub", "x"]);
    assert_eq!(read(&ov, "/b/x").unwrap(), "x1");
    assert_eq!(read(&ov, "/b/ln").unwrap(), "y");
    assert_eq!(read(&ov, "/b/sub/y").unwrap(), "y");
    assert_eq!(names(&ov, "/"), ["b", "dev"]);
    // The lowers are intact.
    assert_eq!(std::fs::read_to_string(l0.join("a/x")).unwrap(), "x0");
    let tar = f.tar();
    assert!(tar.contains_key(".wh.a"));
    assert!(tar.contains_key("b/.wh..wh..opq"));
    assert!(!tar
        .keys()
        .any(|k| k.starts_with("b/.wh.hidden") || k.starts_with("b/old")));
    // And back again, over an empty directory that only the upper has.
    ov.mkdir(&p("/c"), 0o755, 0).unwrap();
    ov.rename(&p("/b"), &p("/c")).unwrap();
    assert_eq!(read(&ov, "/c/sub/y").unwrap(), "y");
    assert_eq!(names(&ov, "/"), ["c", "dev"]);
}

#[test]
fn rename_follows_rename_2() {
    let f = Fixture::new(1);
    let l = &f.lowers[0];
    std::fs::create_dir(l.join("d")).unwrap();
    std::fs::create_dir(l.join("empty")).unwrap();
    std::fs::write(l.join("d/f"), "f").unwrap();
    std::fs::write(l.join("g"), "g").unwrap();
    let ov = f.overlay();
    assert_eq!(errno(ov.rename(&p("/g"), &p("/empty"))), libc::EISDIR);
    assert_eq!(errno(ov.rename(&p("/empty"), &p("/g"))), libc::ENOTDIR);
    assert_eq!(errno(ov.rename(&p("/nope"), &p("/g"))), libc::ENOENT);
    assert_eq!(errno(ov.rename(&p("/g"), &p("/nope/g"))), libc::ENOENT);
    ov.rename(&p("/g"), &p("/g")).unwrap();
    // A lower file over a lower file, across directories (never EXDEV).
    ov.rename(&p("/g"), &p("/d/f")).unwrap();
    assert_eq!(read(&ov, "/d/f").unwrap(), "g");
    assert_eq!(errno(ov.stat(&p("/g"), false)), libc::ENOENT);
    // A directory over an empty lower directory.
    ov.rename(&p("/d"), &p("/empty")).unwrap();
    assert_eq!(names(&ov, "/empty"), ["f"]);
    assert_eq!(names(&ov, "/"), ["dev", "empty"]);
    // An upper file onto an upper file.
    write(&ov, "/u1", "1").unwrap();
    write(&ov, "/u2", "2").unwrap();
    ov.rename(&p("/u1"), &p("/u2")).unwrap();
    assert_eq!(read(&ov, "/u2").unwrap(), "1");
    assert_eq!(errno(ov.rename(&p("/u2"), &p("/dev/null"))), libc::EROFS);
    assert_eq!(errno(ov.rename(&p("/dev"), &p("/x"))), libc::EBUSY);
}

#[test]
fn hard_links_copy_up_and_link_in_the_upper() {
    let f = Fixture::new(1);
    std::fs::write(f.lowers[0].join("a"), "data").unwrap();
    std::fs::hard_link(f.lowers[0].join("a"), f.lowers[0].join("a2")).unwrap();
    let ov = f.overlay();
    ov.link(&p("/a"), &p("/b")).unwrap();
    assert_eq!(read(&ov, "/b").unwrap(), "data");
    let (sa, sb) = (
        ov.stat(&p("/a"), false).unwrap(),
        ov.stat(&p("/b"), false).unwrap(),
    );
    assert_eq!(sa.ino, sb.ino);
    assert_eq!(sa.nlink, 2);
    // Copy-up broke the lower link: a2 still has the old content after a write through a.
    write(&ov, "/a", "new").unwrap();
    assert_eq!(read(&ov, "/b").unwrap(), "new");
    assert_eq!(read(&ov, "/a2").unwrap(), "data");
    assert_eq!(errno(ov.link(&p("/a"), &p("/b"))), libc::EEXIST);
    assert_eq!(errno(ov.link(&p("/"), &p("/c"))), libc::EPERM);
    let tar = f.tar();
    assert_eq!(tar["b"].kind, tar::EntryType::Link);
    assert_eq!(tar["b"].link.as_deref(), Some("a"));
}

#[test]
fn shims_are_a_virtual_layer_below_everything() {
    let f = Fixture::new(1);
    std::fs::create_dir_all(f.lowers[0].join("usr/bin")).unwrap();
    std::fs::write(f.lowers[0].join("usr/bin/cat"), "real cat").unwrap();
    let shims = Shims::new([
        (p("/bin/sh"), "sh".to_owned()),
        (p("/usr/bin/cat"), "coreutils".to_owned()),
        (p("/usr/bin/ls"), "coreutils".to_owned()),
    ]);
    let ov = f.overlay_with(shims, Creds::default());
    assert_eq!(names(&ov, "/"), ["bin", "dev", "usr"]);
    assert_eq!(names(&ov, "/bin"), ["sh"]);
    assert_eq!(names(&ov, "/usr/bin"), ["cat", "ls"]);
    let st = ov.stat(&p("/bin/sh"), true).unwrap();
    assert_eq!(
        (st.kind, st.mode, st.uid, st.size),
        (NodeKind::File, 0o755, 0, 0)
    );
    assert_eq!(ov.stat(&p("/bin"), true).unwrap().kind, NodeKind::Dir);
    match ov
        .open(&p("/bin/sh"), &OpenOptions::read_only(), 0, 0)
        .unwrap()
    {
        Opened::Shim(t) => assert_eq!(t, "sh"),
        other => panic!("{other:?}"),
    }
    assert_eq!(read(&ov, "/usr/bin/cat").unwrap(), "real cat");
    match ov
        .open(&p("/usr/bin/ls"), &OpenOptions::read_only(), 0, 0)
        .unwrap()
    {
        Opened::Shim(t) => assert_eq!(t, "coreutils"),
        other => panic!("{other:?}"),
    }
    assert!(f.upper_tree().is_empty());
    // Deleting a shim hides it without touching the upper.
    ov.unlink(&p("/usr/bin/ls")).unwrap();
    assert_eq!(names(&ov, "/usr/bin"), ["cat"]);
    assert!(f.upper_tree().is_empty());
    // Creating next to a shim copies up its directory as a plain root directory.
    write(&ov, "/bin/new", "n").unwrap();
    assert_eq!(f.upper_tree(), ["bin", "bin/new"]);
    let meta = std::fs::metadata(f.upper.join("bin")).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o755, 0));
    assert_eq!(names(&ov, "/bin"), ["new", "sh"]);
    // Writing a shim replaces it with an empty file.
    write(&ov, "/bin/sh", "#!").unwrap();
    assert_eq!(read(&ov, "/bin/sh").unwrap(), "#!");
}

#[test]
fn a_lower_whiteout_or_file_hides_shims() {
    let f = Fixture::new(1);
    std::fs::write(f.lowers[0].join("bin"), "not a dir").unwrap();
    mkwhiteout(&f.lowers[0].join("sbin"));
    let shims = Shims::new([
        (p("/bin/sh"), "sh".to_owned()),
        (p("/sbin/x"), "x".to_owned()),
    ]);
    let ov = f.overlay_with(shims, Creds::default());
    assert_eq!(names(&ov, "/"), ["bin", "dev"]);
    assert_eq!(errno(ov.stat(&p("/bin/sh"), true)), libc::ENOTDIR);
    assert_eq!(errno(ov.stat(&p("/sbin"), true)), libc::ENOENT);
}

#[test]
fn dev_is_virtual_and_read_only() {
    let f = Fixture::new(1);
    std::fs::create_dir(f.lowers[0].join("dev")).unwrap();
    std::fs::write(f.lowers[0].join("dev/sda"), "disk").unwrap();
    symlink("/dev/null", f.lowers[0].join("nul")).unwrap();
    let ov = f.overlay();
    assert_eq!(
        names(&ov, "/dev"),
        ["full", "null", "random", "stderr", "stdin", "stdout", "urandom", "zero"]
    );
    match ov.open(&p("/dev/null"), &write_opts(), 0o666, 0).unwrap() {
        Opened::Device(d) => assert_eq!(d, Device::Null),
        other => panic!("{other:?}"),
    }
    match ov
        .open(&p("/nul"), &OpenOptions::read_only(), 0, 0)
        .unwrap()
    {
        Opened::Device(d) => assert_eq!(d, Device::Null),
        other => panic!("{other:?}"),
    }
    let st = ov.stat(&p("/dev/null"), true).unwrap();
    assert_eq!(
        (st.kind, st.mode, st.rdev),
        (NodeKind::CharDevice, 0o666, rustix::fs::makedev(1, 3))
    );
    assert_eq!(errno(ov.stat(&p("/dev/sda"), true)), libc::ENOENT);
    assert_eq!(errno(write(&ov, "/dev/new", "x")), libc::EROFS);
    assert_eq!(errno(ov.mkdir(&p("/dev/d"), 0o755, 0)), libc::EROFS);
    assert_eq!(errno(ov.unlink(&p("/dev/null"))), libc::EROFS);
    assert_eq!(errno(ov.rmdir(&p("/dev"))), libc::EBUSY);
    assert_eq!(errno(ov.symlink("x", &p("/dev/l"))), libc::EROFS);
    assert_eq!(errno(ov.chmod(&p("/dev/null"), 0o600, true)), libc::EROFS);
    ov.set_times(
        &p("/dev/null"),
        Some(TimeSpec::Now),
        Some(TimeSpec::Now),
        true,
    )
    .unwrap();
    assert_eq!(errno(ov.stat(&p("/dev/null/x"), true)), libc::ENOTDIR);
    assert!(f.upper_tree().is_empty());
}

#[test]
fn symlinks_never_leave_the_rootfs() {
    let f = Fixture::new(1);
    let l = &f.lowers[0];
    std::fs::create_dir_all(l.join("etc")).unwrap();
    std::fs::create_dir_all(l.join("usr/bin")).unwrap();
    std::fs::write(l.join("etc/passwd"), "inside").unwrap();
    std::fs::write(l.join("usr/bin/prog"), "prog").unwrap();
    symlink("/etc/passwd", l.join("abs")).unwrap();
    symlink("../../../../../../etc/passwd", l.join("etc/rel")).unwrap();
    symlink("/", l.join("root")).unwrap();
    symlink(f.tmp.path(), l.join("host")).unwrap();
    symlink("usr/bin", l.join("bin")).unwrap();
    let ov = f.overlay();
    for link in [
        "/abs",
        "/etc/rel",
        "/root/etc/passwd",
        "/../../etc/passwd",
        "/root/../../etc/passwd",
    ] {
        assert_eq!(read(&ov, link).unwrap(), "inside", "{link}");
    }
    // The host's temp dir does not exist inside the rootfs.
    assert_eq!(errno(read(&ov, "/host/upper")), libc::ENOENT);
    assert_eq!(ov.resolve(&p("/etc"), "../../..", true).unwrap(), p("/"));
    assert_eq!(
        ov.resolve(&p("/etc"), "rel", true).unwrap(),
        p("/etc/passwd")
    );
    assert_eq!(ov.resolve(&p("/etc"), "rel", false).unwrap(), p("/etc/rel"));
    assert_eq!(
        ov.resolve(&p("/"), "bin/prog", true).unwrap(),
        p("/usr/bin/prog")
    );
    assert_eq!(ov.resolve(&p("/bin"), "..", true).unwrap(), p("/usr"));
    assert_eq!(read(&ov, "/bin/prog").unwrap(), "prog");
    // Creating through a symlinked parent lands in the real directory, copied up.
    write(&ov, "/bin/new", "n").unwrap();
    assert_eq!(f.upper_tree(), ["usr", "usr/bin", "usr/bin/new"]);
    // O_NOFOLLOW on a symlink.
    let nofollow = OpenOptions {
        read: true,
        ..OpenOptions::default()
    };
    assert_eq!(errno(ov.open(&p("/abs"), &nofollow, 0, 0)), libc::ELOOP);
    assert_eq!(ov.readlink(&p("/abs")).unwrap(), "/etc/passwd");
    assert_eq!(errno(ov.readlink(&p("/etc/passwd"))), libc::EINVAL);
    assert_eq!(ov.stat(&p("/abs"), false).unwrap().kind, NodeKind::Symlink);
    assert_eq!(ov.stat(&p("/abs"), true).unwrap().kind, NodeKind::File);
    // Writing through a symlink writes its target.
    write(&ov, "/abs", "changed").unwrap();
    assert_eq!(read(&ov, "/etc/passwd").unwrap(), "changed");
    assert_eq!(
        std::fs::read_to_string(l.join("etc/passwd")).unwrap(),
        "inside"
    );
}

#[test]
fn resolve_reports_missing_and_non_directory_parents() {
    let f = Fixture::new(1);
    std::fs::write(f.lowers[0].join("file"), "f").unwrap();
    symlink("missing/x", f.lowers[0].join("dangling")).unwrap();
    let ov = f.overlay();
    assert_eq!(ov.resolve(&p("/"), "/nope", true).unwrap(), p("/nope"));
    assert_eq!(errno(ov.resolve(&p("/"), "/nope/x", true)), libc::ENOENT);
    assert_eq!(errno(ov.resolve(&p("/"), "/file/x", true)), libc::ENOTDIR);
    assert_eq!(errno(ov.resolve(&p("/"), "/file/", true)), libc::ENOTDIR);
    assert_eq!(errno(ov.resolve(&p("/"), "/dangling", true)), libc::ENOENT);
    assert_eq!(
        ov.resolve(&p("/"), "/dangling", false).unwrap(),
        p("/dangling")
    );
    assert_eq!(ov.resolve(&p("/"), "/./", true).unwrap(), p("/"));
}

#[test]
fn symlink_loops_are_eloop() {
    let f = Fixture::new(1);
    let l = &f.lowers[0];
    symlink("/b", l.join("a")).unwrap();
    symlink("/a", l.join("b")).unwrap();
    symlink("self/x", l.join("self")).unwrap();
    for i in 0..45 {
        symlink(format!("c{}", i + 1), l.join(format!("c{i}"))).unwrap();
    }
    std::fs::write(l.join("c45"), "end").unwrap();
    for i in 0..40 {
        symlink(format!("d{}", i + 1), l.join(format!("d{i}"))).unwrap();
    }
    std::fs::write(l.join("d40"), "end").unwrap();
    let ov = f.overlay();
    assert_eq!(errno(ov.stat(&p("/a"), true)), libc::ELOOP);
    assert_eq!(errno(ov.stat(&p("/self"), true)), libc::ELOOP);
    assert_eq!(
        errno(ov.open(&p("/a/x"), &write_opts(), 0o644, 0)),
        libc::ELOOP
    );
    assert_eq!(errno(read(&ov, "/c0")), libc::ELOOP);
    assert_eq!(read(&ov, "/d0").unwrap(), "end");
    assert_eq!(ov.stat(&p("/a"), false).unwrap().kind, NodeKind::Symlink);
}

#[test]
fn open_follows_open_2() {
    let f = Fixture::new(1);
    std::fs::create_dir(f.lowers[0].join("d")).unwrap();
    std::fs::write(f.lowers[0].join("f"), "f").unwrap();
    symlink("target", f.lowers[0].join("dangling")).unwrap();
    let ov = f.overlay();
    let excl = OpenOptions {
        exclusive: true,
        ..write_opts()
    };
    assert_eq!(errno(ov.open(&p("/f"), &excl, 0o644, 0)), libc::EEXIST);
    assert_eq!(
        errno(ov.open(&p("/dangling"), &excl, 0o644, 0)),
        libc::EEXIST
    );
    assert_eq!(
        errno(ov.open(&p("/d"), &write_opts(), 0o644, 0)),
        libc::EISDIR
    );
    let dir = OpenOptions {
        directory: true,
        ..OpenOptions::read_only()
    };
    assert_eq!(errno(ov.open(&p("/f"), &dir, 0, 0)), libc::ENOTDIR);
    assert!(matches!(ov.open(&p("/d"), &dir, 0, 0).unwrap(), Opened::Dir(d) if d == p("/d")));
    assert_eq!(
        errno(ov.open(&p("/missing"), &OpenOptions::read_only(), 0, 0)),
        libc::ENOENT
    );
    assert_eq!(
        errno(ov.open(&p("/missing/x"), &write_opts(), 0o644, 0)),
        libc::ENOENT
    );
    // Creating through a dangling symlink creates its target.
    write(&ov, "/dangling", "t").unwrap();
    assert_eq!(read(&ov, "/target").unwrap(), "t");
    // fstat of an opened file.
    match ov
        .open(&p("/target"), &OpenOptions::read_only(), 0, 0)
        .unwrap()
    {
        Opened::File(file) => {
            let st = ov.fstat(&p("/target"), &file).unwrap();
            assert_eq!((st.kind, st.size), (NodeKind::File, 1));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn symlinks_and_times_are_created_in_the_upper() {
    let f = Fixture::new(1);
    std::fs::create_dir(f.lowers[0].join("d")).unwrap();
    let ov = f.overlay_with(Shims::none(), Creds { uid: 9, gid: 9 });
    ov.symlink("../x", &p("/d/l")).unwrap();
    assert_eq!(ov.readlink(&p("/d/l")).unwrap(), "../x");
    assert_eq!(errno(ov.symlink("y", &p("/d/l"))), libc::EEXIST);
    assert_eq!(ov.stat(&p("/d/l"), false).unwrap().uid, 9);
    ov.set_times(&p("/d"), None, Some(TimeSpec::Set(5_000_000_000)), true)
        .unwrap();
    assert_eq!(ov.stat(&p("/d"), true).unwrap().mtime_ns, 5_000_000_000);
    let tar = f.tar();
    assert_eq!(tar["d/l"].link.as_deref(), Some("../x"));
}

#[test]
fn racing_renames_never_escape() {
    let f = Fixture::new(1);
    std::fs::write(f.tmp.path().join("secret"), "HOST").unwrap();
    std::fs::create_dir(f.lowers[0].join("d")).unwrap();
    std::fs::write(f.lowers[0].join("d/secret"), "inside").unwrap();
    std::fs::write(f.lowers[0].join("secret"), "inside").unwrap();
    std::fs::create_dir(f.upper.join("d")).unwrap();
    std::fs::write(f.upper.join("d/secret"), "inside").unwrap();
    // A host symlink in the upper that a kernel lookup would follow out of the rootfs.
    symlink(f.tmp.path(), f.upper.join("out")).unwrap();
    symlink("../..", f.upper.join("up")).unwrap();
    let ov = Arc::new(f.overlay());
    let stop = Arc::new(AtomicBool::new(false));
    let upper = f.upper.clone();
    let swapper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Swaps the real directory with the escaping symlinks behind the overlay's back,
            // as a concurrent native process could.
            let (d, tmp) = (upper.join("d"), upper.join("tmp"));
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let other = if n % 2 == 0 { "out" } else { "up" };
                let _ = std::fs::rename(&d, &tmp);
                let _ = std::fs::rename(upper.join(other), &d);
                let _ = std::fs::rename(&d, upper.join(other));
                let _ = std::fs::rename(&tmp, &d);
                n += 1;
            }
        })
    };
    let renamer = {
        let (ov, stop) = (ov.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = ov.rename(&p("/d"), &p("/e"));
                let _ = ov.rename(&p("/e"), &p("/d"));
            }
        })
    };
    let start = std::time::Instant::now();
    let mut reads = 0;
    while start.elapsed() < std::time::Duration::from_millis(1500) {
        for path in [
            "/d/secret",
            "/e/secret",
            "/d/../secret",
            "/d/upper/../secret",
        ] {
            if let Ok(Opened::File(mut file)) = ov.open(&p(path), &OpenOptions::read_only(), 0, 0) {
                let mut s = String::new();
                file.read_to_string(&mut s).unwrap();
                assert_eq!(s, "inside", "{path} escaped");
                reads += 1;
            }
            if let Ok(entries) = ov.read_dir(&p("/d")) {
                assert!(!entries.iter().any(|e| e.name == "upper" || e.name == "l0"));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    renamer.join().unwrap();
    assert!(reads > 0);
}

#[test]
fn concurrent_writers_share_one_overlay() {
    let f = Fixture::new(1);
    std::fs::create_dir_all(f.lowers[0].join("a/b")).unwrap();
    let ov = Arc::new(f.overlay());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let ov = ov.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    write(&ov, &format!("/a/b/f{t}-{i}"), "x").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(names(&ov, "/a/b").len(), 200);
}

#[test]
fn without_root_ownership_and_mode_are_recorded() {
    let f = Fixture::new(1);
    std::fs::create_dir(f.lowers[0].join("d")).unwrap();
    let mut ov = f.overlay_with(
        Shims::none(),
        Creds {
            uid: 1000,
            gid: 100,
        },
    );
    ov.host.root = false;
    match ov.open(&p("/d/ro"), &write_opts(), 0o444, 0).unwrap() {
        Opened::File(mut file) => file.write_all(b"still writable").unwrap(),
        other => panic!("{other:?}"),
    }
    ov.mkdir(&p("/d/sealed"), 0o500, 0).unwrap();
    let real = std::fs::metadata(f.upper.join("d/ro")).unwrap();
    assert_eq!((real.uid(), real.mode() & 0o7777), (0, 0o644));
    assert_eq!(
        get_xattr(&f.upper.join("d/ro"), OVERRIDE_STAT_XATTR).as_deref(),
        Some("1000:100:0444:file")
    );
    assert_eq!(
        std::fs::metadata(f.upper.join("d/sealed")).unwrap().mode() & 0o7777,
        0o700
    );
    let st = ov.stat(&p("/d/ro"), true).unwrap();
    assert_eq!((st.mode, st.uid, st.gid), (0o444, 1000, 100));
    ov.chown(&p("/d/ro"), Some(0), Some(0), true).unwrap();
    ov.chmod(&p("/d/ro"), 0o644, true).unwrap();
    assert_eq!(get_xattr(&f.upper.join("d/ro"), OVERRIDE_STAT_XATTR), None);
    let tar = f.tar();
    assert_eq!((tar["d/ro"].mode, tar["d/ro"].uid), (0o644, 0));
    assert_eq!(
        (
            tar["d/sealed/"].mode,
            tar["d/sealed/"].uid,
            tar["d/sealed/"].gid
        ),
        (0o500, 1000, 100)
    );
}

#[test]
fn named_pipes_open_without_blocking_and_change_no_layer() {
    let f = Fixture::new(1);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        f.lowers[0].join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let ov = f.overlay();
    let rw = OpenOptions {
        read: true,
        write: true,
        follow: true,
        ..OpenOptions::default()
    };
    let Ok(Opened::Fifo(fd)) = ov.open(&p("/fifo"), &rw, 0o644, 0o022) else {
        panic!("a named pipe opens as one")
    };
    rustix::io::write(&fd, b"through").unwrap();
    let mut buf = [0u8; 16];
    let n = rustix::io::read(&fd, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"through");
    // Write-only with no reader fails at once instead of hanging the host thread.
    let wo = OpenOptions {
        write: true,
        follow: true,
        ..OpenOptions::default()
    };
    drop(fd);
    assert_eq!(errno(ov.open(&p("/fifo"), &wo, 0o644, 0o022)), libc::ENXIO);
    assert!(f.upper_tree().is_empty(), "opening copies nothing up");
}

#[test]
fn bind_mounts_are_host_folders_below_their_target() {
    let f = Fixture::new(1);
    let l = &f.lowers[0];
    std::fs::create_dir_all(l.join("etc")).unwrap();
    std::fs::write(l.join("etc/passwd"), "inside").unwrap();
    symlink("/srv", l.join("link")).unwrap();
    let host = f.tmp.path().join("host");
    std::fs::create_dir_all(host.join("sub")).unwrap();
    std::fs::write(host.join("in.txt"), "host").unwrap();
    // Names that mean something in a layer are only names in a bind mount.
    std::fs::write(host.join(".wh.kept"), "").unwrap();
    std::fs::write(host.join("kept"), "kept").unwrap();
    symlink("/etc/passwd", host.join("abs")).unwrap();
    let ro = f.tmp.path().join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("r"), "r").unwrap();
    let open = |p: &Path| Dir::open_ambient_dir(p, ambient_authority()).unwrap();
    let mut ov = f.overlay();
    // The target is made inside the rootfs, through its symlinks.
    assert_eq!(
        ov.mount(&p("/link/data"), open(&host), false).unwrap(),
        p("/srv/data")
    );
    assert_eq!(
        ov.mount(&p("/srv/data/sub/ro"), open(&ro), true).unwrap(),
        p("/srv/data/sub/ro")
    );
    assert_eq!(
        errno(ov.mount(&p("/srv/data"), open(&ro), true)),
        libc::EBUSY
    );
    assert_eq!(errno(ov.mount(&p("/"), open(&ro), true)), libc::EBUSY);
    assert_eq!(errno(ov.mount(&p("/dev/x"), open(&ro), true)), libc::EROFS);
    assert_eq!(f.upper_tree(), ["srv", "srv/data"]);
    assert!(host.join("sub/ro").is_dir());

    assert_eq!(read(&ov, "/link/data/in.txt").unwrap(), "host");
    assert_eq!(read(&ov, "/srv/data/kept").unwrap(), "kept");
    assert_eq!(
        names(&ov, "/srv/data"),
        [".wh.kept", "abs", "in.txt", "kept", "sub"]
    );
    // A symlink in the folder resolves inside the rootfs; `..` leaves the mount.
    assert_eq!(read(&ov, "/srv/data/abs").unwrap(), "inside");
    assert_eq!(
        ov.resolve(&p("/srv/data/sub"), "../../..", true).unwrap(),
        p("/")
    );
    assert_eq!(
        read(&ov, "/srv/data/sub/../../../etc/passwd").unwrap(),
        "inside"
    );

    // Writes go straight to the host folder, never to the upper.
    write(&ov, "/srv/data/out", "out").unwrap();
    write(&ov, "/srv/data/in.txt", "changed").unwrap();
    ov.mkdir(&p("/srv/data/d"), 0o777, 0o022).unwrap();
    ov.symlink("in.txt", &p("/srv/data/d/l")).unwrap();
    ov.rename(&p("/srv/data/out"), &p("/srv/data/d/out"))
        .unwrap();
    ov.link(&p("/srv/data/d/out"), &p("/srv/data/hard"))
        .unwrap();
    ov.chmod(&p("/srv/data/hard"), 0o640, true).unwrap();
    ov.unlink(&p("/srv/data/kept")).unwrap();
    assert_eq!(std::fs::read_to_string(host.join("d/out")).unwrap(), "out");
    assert_eq!(
        std::fs::read_to_string(host.join("in.txt")).unwrap(),
        "changed"
    );
    assert_eq!(
        std::fs::read_link(host.join("d/l")).unwrap(),
        Path::new("in.txt")
    );
    assert_eq!(host.join("d").metadata().unwrap().mode() & 0o7777, 0o755);
    assert_eq!(host.join("hard").metadata().unwrap().mode() & 0o7777, 0o640);
    assert_eq!(host.join("hard").metadata().unwrap().nlink(), 2);
    assert!(!host.join("kept").exists() && host.join(".wh.kept").exists());
    assert_eq!(get_xattr(&host.join("hard"), OVERRIDE_STAT_XATTR), None);
    ov.unlink(&p("/srv/data/hard")).unwrap();
    ov.unlink(&p("/srv/data/d/out")).unwrap();
    ov.unlink(&p("/srv/data/d/l")).unwrap();
    ov.rmdir(&p("/srv/data/d")).unwrap();
    assert!(!host.join("d").exists());
    assert_eq!(f.upper_tree(), ["srv", "srv/data"]);

    // Nothing crosses the mount's edge but by copying.
    assert_eq!(
        errno(ov.rename(&p("/srv/data/in.txt"), &p("/moved"))),
        libc::EXDEV
    );
    assert_eq!(
        errno(ov.rename(&p("/etc/passwd"), &p("/srv/data/p"))),
        libc::EXDEV
    );
    assert_eq!(
        errno(ov.link(&p("/etc/passwd"), &p("/srv/data/p"))),
        libc::EXDEV
    );
    assert_eq!(errno(ov.rmdir(&p("/srv/data"))), libc::EBUSY);
    assert_eq!(errno(ov.rename(&p("/srv/data"), &p("/x"))), libc::EBUSY);
    assert_eq!(errno(ov.rename(&p("/srv"), &p("/x"))), libc::EBUSY);

    // A read-only bind reads, and refuses every change.
    assert_eq!(read(&ov, "/srv/data/sub/ro/r").unwrap(), "r");
    assert_eq!(errno(write(&ov, "/srv/data/sub/ro/r", "x")), libc::EROFS);
    assert_eq!(errno(write(&ov, "/srv/data/sub/ro/new", "x")), libc::EROFS);
    assert_eq!(errno(ov.unlink(&p("/srv/data/sub/ro/r"))), libc::EROFS);
    assert_eq!(
        errno(ov.mkdir(&p("/srv/data/sub/ro/d"), 0o755, 0)),
        libc::EROFS
    );
    assert_eq!(
        errno(ov.chmod(&p("/srv/data/sub/ro"), 0o700, true)),
        libc::EROFS
    );
    assert_eq!(
        errno(ov.chmod(&p("/srv/data/sub/ro/r"), 0o600, true)),
        libc::EROFS
    );
    assert_eq!(std::fs::read_to_string(ro.join("r")).unwrap(), "r");
    assert_eq!(ro.join("r").metadata().unwrap().mode() & 0o777, 0o644);
}
