//! A guest drives the overlay rootfs with arbitrary paths and operations: nothing may panic,
//! and nothing outside the rootfs (the lowers are read-only, the upper is the only place
//! writes land) may change.
#![no_main]

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use kiln::rootfs::{ContainerPath, Creds, OpenOptions, Overlay, Shims};
use libfuzzer_sys::fuzz_target;

/// Path words the fuzzer combines: symlink traps, `..`, the virtual /dev, shims.
const WORDS: &[&str] = &[
    "a", "b", "lnk", "abs", "up", "loop", "..", ".", "dev", "null", "bin", "sh", "etc", "passwd",
    "", "x",
];

fn path(bytes: &[u8]) -> String {
    let mut p = String::new();
    if bytes.first().is_some_and(|b| b & 1 == 0) {
        p.push('/');
    }
    for (i, b) in bytes.iter().enumerate().skip(1) {
        if i > 1 {
            p.push('/');
        }
        p.push_str(WORDS[usize::from(*b) % WORDS.len()]);
    }
    p
}

fn tree_of(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let len = std::fs::symlink_metadata(&p).map(|m| m.len()).unwrap_or(0);
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push((p, len));
        }
    }
    out.sort();
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(root) = tempfile::tempdir() else { return };
    let lower = root.path().join("lower");
    let upper = root.path().join("upper");
    let outside = root.path().join("outside");
    for d in [&lower, &upper, &outside] {
        if std::fs::create_dir_all(d).is_err() {
            return;
        }
    }
    let _ = std::fs::create_dir_all(lower.join("a/b"));
    let _ = std::fs::write(lower.join("a/file"), b"lower");
    let _ = std::fs::create_dir_all(lower.join("etc"));
    let _ = std::fs::write(lower.join("etc/passwd"), b"root:x:0:0::/:/bin/sh\n");
    let _ = std::fs::write(outside.join("secret"), b"host");
    let _ = std::os::unix::fs::symlink("/etc/passwd", lower.join("abs"));
    let _ = std::os::unix::fs::symlink("../../../outside", lower.join("up"));
    let _ = std::os::unix::fs::symlink("loop", lower.join("loop"));
    let _ = std::os::unix::fs::symlink("a", lower.join("lnk"));
    let before_lower = tree_of(&lower);
    let before_outside = tree_of(&outside);
    let (Ok(l), Ok(u)) = (
        Dir::open_ambient_dir(&lower, ambient_authority()),
        Dir::open_ambient_dir(&upper, ambient_authority()),
    ) else {
        return;
    };
    let shims = Shims::new([(ContainerPath::parse("/bin/sh"), "sh".to_owned())]);
    let ov = Overlay::new(vec![l], u, shims, Creds { uid: 0, gid: 0 });
    let cwd = ContainerPath::root();
    // Each operation: an opcode, two path lengths, then the path bytes.
    let mut rest = data;
    let mut ops = 0;
    while rest.len() >= 3 && ops < 64 {
        ops += 1;
        let (op, n1, n2) = (rest[0], usize::from(rest[1] % 6), usize::from(rest[2] % 6));
        rest = &rest[3..];
        let a = path(&rest[..n1.min(rest.len())]);
        rest = &rest[n1.min(rest.len())..];
        let b = path(&rest[..n2.min(rest.len())]);
        rest = &rest[n2.min(rest.len())..];
        let follow = op & 0x80 != 0;
        let Ok(pa) = ov.resolve(&cwd, &a, follow) else { continue };
        let pb = ov.resolve(&cwd, &b, false);
        let _ = match op % 12 {
            0 => ov.stat(&pa, follow).map(drop),
            1 => {
                let opts = OpenOptions {
                    read: true,
                    write: op & 0x40 != 0,
                    create: op & 0x20 != 0,
                    truncate: op & 0x10 != 0,
                    follow,
                    ..OpenOptions::default()
                };
                ov.open(&pa, &opts, 0o644, 0o022).map(drop)
            }
            2 => ov.read_dir(&pa).map(drop),
            3 => ov.mkdir(&pa, 0o755, 0o022),
            4 => ov.unlink(&pa),
            5 => ov.rmdir(&pa),
            6 => match &pb {
                Ok(pb) => ov.rename(&pa, pb),
                Err(_) => Ok(()),
            },
            7 => match &pb {
                Ok(pb) => ov.symlink(&b, pb).and(ov.symlink(&a, pb)),
                Err(_) => Ok(()),
            },
            8 => match &pb {
                Ok(pb) => ov.link(&pa, pb),
                Err(_) => Ok(()),
            },
            9 => ov.chmod(&pa, u32::from(op) << 3, follow),
            10 => ov.chown(&pa, Some(u32::from(op)), None, follow),
            _ => ov.readlink(&pa).map(drop),
        };
    }
    assert_eq!(tree_of(&lower), before_lower, "a lower changed");
    assert_eq!(tree_of(&outside), before_outside, "something outside the rootfs changed");
});
