//! Unit tests: determinism, the tar shape, round trips through unpack, apply mode, compression.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use rustix::fs::{FileType, Mode, XattrFlags};

use super::*;
use crate::fsx;

fn open(p: &Path) -> Dir {
    Dir::open_ambient_dir(p, ambient_authority()).unwrap()
}

fn set_mtime(p: &Path, secs: i64) {
    let t = fsx::times(secs, 0);
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &t,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn xattr(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, XattrFlags::empty()).unwrap();
}

fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(p, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// An upper folder exercising every kind of entry the layer format carries.
fn sample_upper(root: &Path) {
    let w = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        p
    };
    fs::create_dir_all(root.join("etc/ssl")).unwrap();
    w("etc/passwd", b"root:x:0:0::/root:/bin/sh\n");
    let suid = w("usr/bin/su", &[0x7f, b'E', b'L', b'F']);
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let big = w("data/big.bin", &vec![0xab; 3 * 1024 * 1024 + 17]);
    fs::hard_link(&big, root.join("data/big-link.bin")).unwrap();
    std::os::unix::fs::symlink("../etc/passwd", root.join("data/passwd-link")).unwrap();
    std::os::unix::fs::symlink("/absolute/target", root.join("abs-link")).unwrap();
    // Sorting trap: `a-b` sorts between `a/` contents in per-directory order but not here.
    w("a/inner", b"inner");
    w("a-b", b"dash");
    let long = format!("long/{}/{}", "d".repeat(120), "f".repeat(150));
    w(&long, b"long name");
    std::os::unix::fs::symlink("t".repeat(200), root.join("long-target")).unwrap();
    let cap = w("usr/bin/ping", b"ping");
    xattr(&cap, "user.kiln.test", b"value\0with bytes");
    xattr(&cap, "user.another", b"2");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo").as_path(),
        FileType::Fifo,
        Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    // Whiteouts: a 0:0 device, and a marker file.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("etc/gone").as_path(),
        FileType::CharacterDevice,
        Mode::empty(),
        0,
    )
    .unwrap();
    w("etc/.wh.also-gone", b"");
    // Opaque directories: by xattr and by marker file.
    fs::create_dir_all(root.join("opaque-x")).unwrap();
    xattr(&root.join("opaque-x"), OPAQUE_XATTR, b"y");
    w("opaque-x/kept", b"k");
    w("opaque-m/.wh..wh..opq", b"");
    // Ownership recorded rather than real.
    let owned = w("home/user/file", b"mine");
    xattr(&owned, OVERRIDE_STAT_XATTR, b"1000:1000:0640:file");
    xattr(
        &root.join("home/user"),
        OVERRIDE_STAT_XATTR,
        b"1000:1000:0750:dir",
    );
    // A device recorded on a placeholder file (what a rootless unpack leaves).
    let dev = w("dev/null-placeholder", b"");
    xattr(&dev, OVERRIDE_STAT_XATTR, b"0:0:0666:char-1-3");
    if is_root() {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("dev/null").as_path(),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        // Too big for the octal uid field: PAX.
        rustix::fs::chownat(
            rustix::fs::CWD,
            w("big-uid", b"u").as_path(),
            Some(rustix::process::Uid::from_raw(3_000_000)),
            Some(rustix::process::Gid::from_raw(3_000_001)),
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
        rustix::fs::chownat(
            rustix::fs::CWD,
            root.join("etc/passwd").as_path(),
            Some(rustix::process::Uid::from_raw(3)),
            Some(rustix::process::Gid::from_raw(4)),
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
    }
    // A socket is skipped.
    let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    // Fixed mtimes everywhere, so trees built at different times compare equal.
    for entry in walk(root) {
        set_mtime(&entry, 1_600_000_000);
    }
    set_mtime(&root.join("data/big.bin"), 1_700_000_000);
    // Before 1970: only a PAX record can say so.
    set_mtime(&w("old", b"1969"), -86_400);
    set_mtime(root, 1_600_000_000);
}

/// Every path below `root`, children before parents (so setting parent mtimes last sticks).
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

fn layer_bytes(upper: &Path, epoch: Option<i64>) -> (LayerTar, Vec<u8>) {
    let mut out = Vec::new();
    let t = write_layer(&open(upper), epoch, &mut out).unwrap();
    assert_eq!(t.size, out.len() as u64);
    assert_eq!(t.diff_id, crate::digest::DiffId::of(&out));
    let (piped, piped_out) = write_layer_pipelined(&open(upper), epoch, Vec::new()).unwrap();
    assert_eq!(piped, t, "the pipelined writer gives another tar");
    assert!(piped_out == out, "the pipelined writer gives other bytes");
    (t, out)
}

/// (name, type, mode, uid, gid, mtime, size, link) of every entry, via the `tar` crate.
type Row = (String, u8, u32, u64, u64, u64, u64, String);

fn rows(bytes: &[u8]) -> Vec<Row> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                String::from_utf8(e.path_bytes().to_vec()).unwrap(),
                h.entry_type().as_byte(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
                h.size().unwrap(),
                e.link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn row<'a>(rows: &'a [Row], name: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.0 == name)
        .unwrap_or_else(|| panic!("no entry {name}"))
}

#[test]
fn same_tree_gives_same_bytes() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    sample_upper(a.path());
    sample_upper(b.path());
    let (ta, ba) = layer_bytes(a.path(), None);
    let (tb, bb) = layer_bytes(b.path(), None);
    assert_eq!(ta, tb);
    assert!(ba == bb, "same tree, different bytes");
    // Touching one mtime changes the digest.
    set_mtime(&b.path().join("etc/passwd"), 1_600_000_001);
    assert_ne!(layer_bytes(b.path(), None).0.diff_id, ta.diff_id);
}

#[test]
fn tar_shape_matches_docker_conventions() {
    let d = tempfile::tempdir().unwrap();
    sample_upper(d.path());
    let (_, bytes) = layer_bytes(d.path(), None);
    let rows = rows(&bytes);
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    // Sorted byte-wise by tar name, except opaque markers right after their directory.
    let mut sorted = names.clone();
    sorted.sort();
    let without_opq: Vec<&&str> = names
        .iter()
        .filter(|n| !n.ends_with(OPAQUE_MARKER))
        .collect();
    let sorted_without: Vec<&&str> = sorted
        .iter()
        .filter(|n| !n.ends_with(OPAQUE_MARKER))
        .collect();
    assert_eq!(without_opq, sorted_without);
    for dir in ["opaque-x/", "opaque-m/"] {
        let i = names.iter().position(|n| *n == dir).unwrap();
        assert_eq!(names[i + 1], format!("{dir}{OPAQUE_MARKER}"));
    }
    assert!(names.iter().position(|n| *n == "a-b") < names.iter().position(|n| *n == "a/"));
    assert!(names
        .iter()
        .all(|n| !n.starts_with('/') && !n.starts_with("./")));
    assert!(!names.contains(&"sock"), "sockets are skipped");
    assert!(names.contains(&"etc/"));
    assert_eq!(row(&rows, "etc/").1, b'5');
    assert_eq!(row(&rows, "tmp/").2, 0o1777);
    assert_eq!(row(&rows, "usr/bin/su").2, 0o4755);
    // Whiteouts and opaque markers: empty regular files with zeroed metadata.
    for wh in ["etc/.wh.gone", "etc/.wh.also-gone", "opaque-x/.wh..wh..opq"] {
        let r = row(&rows, wh);
        assert_eq!(
            (r.1, r.2, r.3, r.4, r.5, r.6),
            (b'0', 0, 0, 0, 0, 0),
            "{wh}"
        );
    }
    assert!(!names.contains(&"etc/gone"));
    // Hardlink: the first in tar order carries the data.
    let link = row(&rows, "data/big.bin");
    assert_eq!((link.1, link.7.as_str()), (b'1', "data/big-link.bin"));
    assert_eq!(row(&rows, "data/big-link.bin").6, 3 * 1024 * 1024 + 17);
    assert_eq!(row(&rows, "data/passwd-link").7, "../etc/passwd");
    assert_eq!(row(&rows, "long-target").7, "t".repeat(200));
    let long = format!("long/{}/{}", "d".repeat(120), "f".repeat(150));
    assert_eq!(row(&rows, &long).6, 9);
    assert_eq!(row(&rows, "fifo").1, b'6');
    // override_stat wins, and is not itself archived.
    let owned = row(&rows, "home/user/file");
    assert_eq!((owned.2, owned.3, owned.4), (0o640, 1000, 1000));
    let dir = row(&rows, "home/user/");
    assert_eq!((dir.2, dir.3, dir.4), (0o750, 1000, 1000));
    assert_eq!(row(&rows, "dev/null-placeholder").1, b'3');
    if is_root() {
        assert_eq!(row(&rows, "dev/null").1, b'3');
        let p = row(&rows, "etc/passwd");
        assert_eq!((p.3, p.4), (3, 4));
    }
    // uname/gname empty, xattrs via PAX (kept ones only).
    let mut a = tar::Archive::new(&bytes[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        assert_eq!(e.header().username_bytes(), Some(&b""[..]));
        assert_eq!(e.header().groupname_bytes(), Some(&b""[..]));
        let name = String::from_utf8(e.path_bytes().to_vec()).unwrap();
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                if let Some(x) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(x.to_owned(), ext.value_bytes().to_vec());
                }
            }
        }
        if let Some(exts) = e.pax_extensions().unwrap() {
            let keys: Vec<String> = exts
                .map(|x| x.unwrap().key().unwrap().to_owned())
                .filter(|k| !k.starts_with("SCHILY.xattr."))
                .collect();
            let expected: &[&str] = match name.as_str() {
                "old" => &["mtime"],
                "big-uid" => &["gid", "uid"],
                "long-target" => &["linkpath"],
                n if n.len() > 100 => &["path"],
                _ => &[],
            };
            assert_eq!(keys, expected, "{name}");
        }
        if name == "usr/bin/ping" {
            assert_eq!(xattrs.len(), 2);
            assert_eq!(xattrs["user.kiln.test"], b"value\0with bytes");
        } else {
            assert!(
                xattrs
                    .keys()
                    .all(|k| !k.starts_with("user.overlay.") && k != OVERRIDE_STAT_XATTR),
                "{name}: {xattrs:?}"
            );
        }
    }
    assert!(bytes.ends_with(&[0u8; 1024]));
    assert_eq!(bytes.len() % 512, 0);
}

#[test]
fn xattr_values_with_newlines_round_trip() {
    // PAX records are length-prefixed, so any byte may appear in a value (the `tar` crate
    // splits on newlines and cannot read this; Go and kiln can).
    let up = tempfile::tempdir().unwrap();
    let f = up.path().join("f");
    fs::write(&f, "x").unwrap();
    xattr(&f, "user.multi", b"line one\nline two\n");
    let (t, bytes) = layer_bytes(up.path(), None);
    let d = tempfile::tempdir().unwrap();
    assert_eq!(
        unpack_into(&bytes, d.path(), &UnpackOptions::snapshot())
            .unwrap()
            .diff_id,
        t.diff_id
    );
    assert_eq!(
        get_xattr(&d.path().join("f"), "user.multi").as_deref(),
        Some(&b"line one\nline two\n"[..])
    );
}

#[test]
fn source_date_epoch_clamps_mtimes() {
    let d = tempfile::tempdir().unwrap();
    sample_upper(d.path());
    let epoch = 1_650_000_000;
    let (plain, _) = layer_bytes(d.path(), None);
    let (clamped, bytes) = layer_bytes(d.path(), Some(epoch));
    assert_ne!(plain.diff_id, clamped.diff_id);
    let rows = rows(&bytes);
    assert_eq!(row(&rows, "data/big-link.bin").5, epoch as u64);
    assert_eq!(row(&rows, "etc/passwd").5, 1_600_000_000);
    assert!(rows.iter().all(|r| r.5 <= epoch as u64));
    // An epoch above every mtime changes nothing.
    assert_eq!(layer_bytes(d.path(), Some(2_000_000_000)).0, plain);
}

fn unpack_into(bytes: &[u8], dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats, LayerError> {
    unpack_layer(bytes, &open(dest), opts)
}

#[test]
fn round_trip_through_a_snapshot_is_exact() {
    let src = tempfile::tempdir().unwrap();
    sample_upper(src.path());
    let (first, bytes) = layer_bytes(src.path(), None);
    let snap = tempfile::tempdir().unwrap();
    let stats = unpack_into(&bytes, snap.path(), &UnpackOptions::snapshot()).unwrap();
    assert_eq!(stats.diff_id, first.diff_id);
    assert_eq!(stats.tar_size, first.size);
    assert_eq!(stats.skipped_xattrs, 0);
    let s = snap.path();
    // Whiteouts and opaque directories are in overlay form, not `.wh.` files.
    for gone in ["etc/gone", "etc/also-gone"] {
        let m = fs::symlink_metadata(s.join(gone)).unwrap();
        assert!(
            std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()),
            "{gone}"
        );
        assert_eq!(m.rdev(), 0);
    }
    assert!(!s.join("etc/.wh.gone").exists());
    assert_eq!(
        get_xattr(&s.join("opaque-m"), OPAQUE_XATTR).as_deref(),
        Some(&b"y"[..])
    );
    assert!(!s.join("opaque-m/.wh..wh..opq").exists());
    let a = fs::metadata(s.join("data/big.bin")).unwrap();
    let b = fs::metadata(s.join("data/big-link.bin")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_eq!(
        fs::read_link(s.join("data/passwd-link")).unwrap(),
        Path::new("../etc/passwd")
    );
    assert_eq!(
        fs::metadata(s.join("usr/bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(fs::metadata(s.join("tmp")).unwrap().mode() & 0o7777, 0o1777);
    assert_eq!(
        fs::metadata(s.join("data/big.bin")).unwrap().mtime(),
        1_700_000_000
    );
    assert_eq!(fs::metadata(s.join("etc")).unwrap().mtime(), 1_600_000_000);
    assert_eq!(fs::metadata(s.join("old")).unwrap().mtime(), -86_400);
    assert_eq!(
        get_xattr(&s.join("usr/bin/ping"), "user.kiln.test").as_deref(),
        Some(&b"value\0with bytes"[..])
    );
    if is_root() {
        // As root, recorded ownership becomes real ownership.
        let m = fs::metadata(s.join("home/user/file")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1000, 0o640));
        assert_eq!(
            get_xattr(&s.join("home/user/file"), OVERRIDE_STAT_XATTR),
            None
        );
        let big = fs::metadata(s.join("big-uid")).unwrap();
        assert_eq!((big.uid(), big.gid()), (3_000_000, 3_000_001));
        let dev = fs::symlink_metadata(s.join("dev/null-placeholder")).unwrap();
        assert_eq!(dev.rdev(), rustix::fs::makedev(1, 3));
    }
    let (second, again) = layer_bytes(s, None);
    assert!(again == bytes, "re-archived snapshot differs");
    assert_eq!(second, first);
}

#[test]
fn apply_mode_deletes_and_clears_opaque_dirs() {
    let base = tempfile::tempdir().unwrap();
    let b = base.path();
    fs::create_dir_all(b.join("etc/keep")).unwrap();
    fs::write(b.join("etc/old"), "old").unwrap();
    fs::create_dir_all(b.join("var/cache/deep")).unwrap();
    fs::write(b.join("var/cache/deep/x"), "x").unwrap();
    fs::write(b.join("var/cache/stale"), "s").unwrap();
    fs::write(b.join("replaced"), "file").unwrap();

    let up = tempfile::tempdir().unwrap();
    let u = up.path();
    fs::create_dir_all(u.join("etc")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        u.join("etc/old").as_path(),
        FileType::CharacterDevice,
        Mode::empty(),
        0,
    )
    .unwrap();
    fs::create_dir_all(u.join("var/cache")).unwrap();
    xattr(&u.join("var/cache"), OPAQUE_XATTR, b"y");
    // Sorts before `.wh..wh..opq` would in a plain sort: must survive the opaque marker.
    fs::write(u.join("var/cache/+new"), "n").unwrap();
    fs::write(u.join("var/cache/fresh"), "f").unwrap();
    fs::create_dir_all(u.join("replaced")).unwrap();
    fs::write(u.join("replaced/inside"), "i").unwrap();
    fs::write(u.join("ghost-target"), "").unwrap();
    fs::write(u.join(".wh.never-existed"), "").unwrap();
    let (_, bytes) = layer_bytes(u, None);

    unpack_into(&bytes, b, &UnpackOptions::apply()).unwrap();
    assert!(!b.join("etc/old").exists() && fs::symlink_metadata(b.join("etc/old")).is_err());
    assert!(b.join("etc/keep").is_dir());
    let mut cache: Vec<String> = fs::read_dir(b.join("var/cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    cache.sort();
    assert_eq!(cache, ["+new", "fresh"]);
    assert_eq!(fs::read_to_string(b.join("replaced/inside")).unwrap(), "i");
    assert!(!b.join(".wh.never-existed").exists());
}

#[test]
fn snapshot_needs_an_empty_destination() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("x"), "").unwrap();
    let err = unpack_into(&[0u8; 1024], d.path(), &UnpackOptions::snapshot()).unwrap_err();
    assert!(matches!(err, LayerError::DestinationNotEmpty), "{err}");
}

#[test]
fn archive_mode_refuses_whiteouts_and_devices() {
    let up = tempfile::tempdir().unwrap();
    fs::write(up.path().join(".wh.x"), "").unwrap();
    let (_, bytes) = layer_bytes(up.path(), None);
    let d = tempfile::tempdir().unwrap();
    let err = unpack_into(&bytes, d.path(), &UnpackOptions::archive()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "refusing tar entry \".wh.x\": whiteout entries are not allowed in this archive"
    );
    let up = tempfile::tempdir().unwrap();
    let placeholder = up.path().join("dev");
    fs::write(&placeholder, "").unwrap();
    xattr(&placeholder, OVERRIDE_STAT_XATTR, b"0:0:0666:char-1-3");
    let (_, bytes) = layer_bytes(up.path(), None);
    let d = tempfile::tempdir().unwrap();
    let err = unpack_into(&bytes, d.path(), &UnpackOptions::archive()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "refusing tar entry \"dev\": device nodes are not allowed here"
    );
    assert!(!d.path().join("dev").exists());
}

#[test]
fn unpack_strips_leading_slash_and_reads_foreign_tars() {
    // A tar written by the `tar` crate in GNU format, with `./` and `/` prefixes.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "./", &[][..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(5);
    h.set_mtime(1_234_567_890);
    let long = format!("./dir/{}", "n".repeat(150));
    b.append_data(&mut h, &long, &b"hello"[..]).unwrap();
    let raw = b.into_inner().unwrap();
    let mut with_abs = raw[..raw.len() - 1024].to_vec();
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o600);
    h.set_size(3);
    h.set_path("abs").unwrap();
    h.as_mut_bytes()[..4].copy_from_slice(b"/abs");
    h.set_cksum();
    with_abs.extend_from_slice(h.as_bytes());
    with_abs.extend_from_slice(b"abs");
    with_abs.extend_from_slice(&[0u8; 509]);
    with_abs.extend_from_slice(&[0u8; 1024]);
    let d = tempfile::tempdir().unwrap();
    let stats = unpack_into(&with_abs, d.path(), &UnpackOptions::snapshot()).unwrap();
    assert_eq!(stats.entries, 3);
    assert_eq!(stats.file_bytes, 8);
    let f = d.path().join("dir").join("n".repeat(150));
    assert_eq!(fs::read(&f).unwrap(), b"hello");
    assert_eq!(fs::metadata(&f).unwrap().mtime(), 1_234_567_890);
    assert_eq!(fs::read(d.path().join("abs")).unwrap(), b"abs");
}

#[test]
fn compression_round_trips_and_is_detected() {
    let data: Vec<u8> = (0..200_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    for c in [Compression::Gzip, Compression::Zstd] {
        let mut blob = Vec::new();
        let out = compress(&data[..], &mut blob, c).unwrap();
        assert_eq!(out.size, blob.len() as u64);
        assert_eq!(out.digest, crate::digest::Digest::of(&blob));
        assert!(blob.len() < data.len() / 2);
        let mut again = Vec::new();
        assert_eq!(
            compress(&data[..], &mut again, c).unwrap(),
            out,
            "deterministic"
        );
        let mut d = decompress_auto(&blob[..]).unwrap();
        let expected = match c {
            Compression::Gzip => Format::Gzip,
            Compression::Zstd => Format::Zstd,
        };
        assert_eq!(d.format(), expected);
        let mut back = Vec::new();
        d.read_to_end(&mut back).unwrap();
        assert!(back == data);
    }
    let mut bz = Vec::new();
    bzip2::read::BzEncoder::new(&data[..], bzip2::Compression::fast())
        .read_to_end(&mut bz)
        .unwrap();
    let mut xz = Vec::new();
    xz2::read::XzEncoder::new(&data[..], 1)
        .read_to_end(&mut xz)
        .unwrap();
    for (blob, format) in [
        (bz, Format::Bzip2),
        (xz, Format::Xz),
        (data.clone(), Format::Plain),
    ] {
        let mut d = decompress_auto(&blob[..]).unwrap();
        assert_eq!(d.format(), format);
        let mut back = Vec::new();
        d.read_to_end(&mut back).unwrap();
        assert!(back == data, "{format:?}");
    }
    // Inputs shorter than any magic still read back.
    for short in [&b""[..], b"a", b"\x1f"] {
        let mut back = Vec::new();
        decompress_auto(short)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, short);
    }
}

#[test]
fn gzip_layers_unpack_with_their_uncompressed_diff_id() {
    let up = tempfile::tempdir().unwrap();
    fs::write(up.path().join("f"), "content").unwrap();
    let (t, bytes) = layer_bytes(up.path(), Some(0));
    let mut gz = Vec::new();
    compress(&bytes[..], &mut gz, Compression::Gzip).unwrap();
    let d = tempfile::tempdir().unwrap();
    let stats = unpack_into(&gz, d.path(), &UnpackOptions::snapshot()).unwrap();
    assert_eq!((stats.diff_id, stats.tar_size), (t.diff_id, t.size));
}

/// Without root, what cannot be set for real is recorded in `user.containers.override_stat`,
/// and re-archiving the snapshot gives the same layer.
#[test]
fn rootless_round_trip_records_what_it_cannot_set() {
    if is_root() {
        // The non-root code paths only run without privileges: run this test again as nobody.
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "layer::tests::rootless_round_trip_records_what_it_cannot_set",
                "--exact",
                "--test-threads=1",
            ])
            .uid(65534)
            .gid(65534)
            .env("TMPDIR", "/tmp")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "as nobody:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let up = tempfile::tempdir().unwrap();
    let u = up.path();
    fs::create_dir(u.join("ro-dir")).unwrap();
    fs::write(u.join("ro-dir/f"), "f").unwrap();
    xattr(&u.join("ro-dir/f"), OVERRIDE_STAT_XATTR, b"0:0:4755:file");
    xattr(&u.join("ro-dir"), OVERRIDE_STAT_XATTR, b"0:0:0555:dir");
    fs::write(u.join("null"), "").unwrap();
    xattr(&u.join("null"), OVERRIDE_STAT_XATTR, b"0:0:0666:char-1-3");
    fs::write(u.join(".wh.gone"), "").unwrap();
    fs::write(u.join("mine"), "m").unwrap();
    std::os::unix::fs::symlink("mine", u.join("link")).unwrap();
    for p in walk(u) {
        set_mtime(&p, 1_600_000_000);
    }
    let (first, bytes) = layer_bytes(u, None);
    let rows = rows(&bytes);
    let r = row(&rows, "ro-dir/");
    assert_eq!((r.2, r.3, r.4), (0o555, 0, 0));
    let r = row(&rows, "ro-dir/f");
    assert_eq!((r.2, r.3, r.4), (0o4755, 0, 0));
    assert_eq!(row(&rows, "null").1, b'3');
    // Without a record, kiln's own uid stands for root.
    assert_eq!(row(&rows, "mine").3, 0);

    let snap = tempfile::tempdir().unwrap();
    let s = snap.path();
    unpack_into(&bytes, s, &UnpackOptions::snapshot()).unwrap();
    // The directory stays usable (0755 for real), its 0555 and owner recorded.
    assert_eq!(
        fs::metadata(s.join("ro-dir")).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        get_xattr(&s.join("ro-dir"), OVERRIDE_STAT_XATTR).as_deref(),
        Some(&b"0:0:0555:dir"[..])
    );
    assert_eq!(
        get_xattr(&s.join("ro-dir/f"), OVERRIDE_STAT_XATTR).as_deref(),
        Some(&b"0:0:4755:file"[..])
    );
    let null = fs::symlink_metadata(s.join("null")).unwrap();
    assert!(null.is_file());
    assert_eq!(
        get_xattr(&s.join("null"), OVERRIDE_STAT_XATTR).as_deref(),
        Some(&b"0:0:0666:char-1-3"[..])
    );
    let gone = fs::symlink_metadata(s.join("gone"));
    let marker = s.join(".wh.gone").exists();
    assert!(
        marker || gone.is_ok_and(|m| m.rdev() == 0 && !m.is_file()),
        "whiteout missing"
    );
    assert_eq!(get_xattr(&s.join("mine"), OVERRIDE_STAT_XATTR), None);
    let (second, again) = layer_bytes(s, None);
    assert!(again == bytes, "re-archived rootless snapshot differs");
    assert_eq!(second, first);
}

#[test]
fn parallel_compression_is_deterministic_and_reads_back_as_one_stream() {
    use super::{compress, compress_parallel, decompress_auto, Compression};
    use std::io::Read;
    let mut x: u32 = 7;
    let data: Vec<u8> = (0..(9 << 20) + 123)
        .map(|i| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            if i % 3 == 0 {
                (x >> 24) as u8
            } else {
                b'a'
            }
        })
        .collect();
    for c in [Compression::Gzip, Compression::Zstd] {
        let mut a = Vec::new();
        let blob = compress_parallel(&data[..], &mut a, c).unwrap();
        let mut b = Vec::new();
        compress_parallel(&data[..], &mut b, c).unwrap();
        assert_eq!(a, b, "same input, same bytes");
        assert_eq!(blob.size, a.len() as u64);
        assert_eq!(blob.digest, crate::digest::Digest::of(&a));
        let mut back = Vec::new();
        decompress_auto(&a[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data, "round trip");
        // An input of one piece is what the one-core compressor writes.
        let small = &data[..1000];
        let (mut p, mut s) = (Vec::new(), Vec::new());
        compress_parallel(small, &mut p, c).unwrap();
        compress(small, &mut s, c).unwrap();
        assert_eq!(p, s);
        let (mut p, mut s) = (Vec::new(), Vec::new());
        compress_parallel(&[][..], &mut p, c).unwrap();
        compress(&[][..], &mut s, c).unwrap();
        assert_eq!(p, s, "empty input");
    }
}

#[test]
fn random_pieces_are_stored_and_still_read_back() {
    use super::{compress_parallel, decompress_auto, Compression};
    use std::io::Read;
    let mut x: u64 = 88_172_645_463_325_252;
    let mut data: Vec<u8> = (0..(6 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    // The second piece (from 4 MiB) is text: it is deflated as usual.
    for b in &mut data[4 << 20..] {
        *b = b'k';
    }
    let mut out = Vec::new();
    compress_parallel(&data[..], &mut out, Compression::Gzip).unwrap();
    // The random piece stored (a few bytes per 64 KiB more), the text one shrunk to nothing.
    assert!(
        out.len() > 4 << 20 && out.len() < (4 << 20) + (64 << 10),
        "{}",
        out.len()
    );
    let mut back = Vec::new();
    decompress_auto(&out[..])
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == data);
}
