//! Hostile tars: a reusable corpus of archives that try to escape the destination, exhaust
//! resources or confuse the extractor, plus library-level tests that unpack each one.
//!
//! The tars are crafted from raw 512-byte headers, because well-behaved tar writers refuse to
//! produce most of them. [`corpus`] is meant for reuse by CLI tests (`kiln import`, `kiln load`,
//! build contexts on stdin): each case says what must happen when it is unpacked as a layer
//! ([`HostileTar::as_layer`], snapshot and apply modes) and as a plain archive
//! ([`HostileTar::as_archive`], ADD and build contexts). Escapes aim at a `sibling` folder next
//! to the destination and at `kiln-hostile-*` names in `/tmp` and `/`, so a test can check
//! that nothing appeared there.

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use kiln::layer::{unpack_layer, UnpackOptions};

/// Entries in the "many-entries" case: twice the default limit.
const MANY: u64 = 1_000_000;

/// A hostile archive and what unpacking it must do.
pub struct HostileTar {
    source: Source,
    /// Outcome when unpacked as a layer (snapshot and apply modes).
    pub as_layer: Expect,
    /// Outcome when unpacked as a plain archive (ADD of a local tar, a build context).
    pub as_archive: Expect,
}

enum Source {
    Bytes(Vec<u8>),
    /// `count` empty files, generated while reading.
    ManyEntries {
        count: u64,
    },
}

/// What unpacking a hostile tar must do.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// Fail with an error whose message contains this text.
    Fails(&'static str),
    /// Succeed, leaving this path (relative to the destination) with these contents, if given.
    Extracts(&'static str, Option<&'static [u8]>),
}

impl HostileTar {
    /// The archive's bytes, streamed (the big cases are never held in memory).
    pub fn reader(&self) -> Box<dyn Read + Send + '_> {
        match &self.source {
            Source::Bytes(b) => Box::new(&b[..]),
            Source::ManyEntries { count } => Box::new(ManyEntries::new(*count)),
        }
    }
}

/// Every hostile case, by name.
pub fn corpus() -> Vec<(&'static str, HostileTar)> {
    use Expect::{Extracts, Fails};
    const LEAVES: Expect = Fails("path leaves the destination");
    const SYMLINK: Expect = Fails("is a symlink; refusing to write through it");
    const NO_WHITEOUTS: Expect = Fails("whiteout entries are not allowed in this archive");
    let same = |e: Expect| (e, e);
    let cases: Vec<(&'static str, Vec<u8>, (Expect, Expect))> = vec![
        (
            "dotdot",
            tar(&[file("../sibling/pwned", b"x")]),
            same(LEAVES),
        ),
        (
            "dotdot-deep",
            tar(&[file("a/../../../kiln-hostile-dotdot", b"x")]),
            same(LEAVES),
        ),
        (
            "dotdot-from-root",
            tar(&[file("/../../../../kiln-hostile-absdotdot", b"x")]),
            same(LEAVES),
        ),
        (
            // Docker strips the leading `/`: the file lands inside the destination.
            "absolute",
            tar(&[file("/tmp/kiln-hostile-absolute", b"abs")]),
            same(Extracts("tmp/kiln-hostile-absolute", Some(b"abs"))),
        ),
        (
            "symlink-write-through",
            tar(&[symlink("escape", "../sibling"), file("escape/pwned", b"x")]),
            same(SYMLINK),
        ),
        (
            "symlink-absolute-write-through",
            tar(&[
                symlink("tmp", "/tmp"),
                file("tmp/kiln-hostile-symlink", b"x"),
            ]),
            same(SYMLINK),
        ),
        (
            "symlink-deep-write-through",
            tar(&[
                dir("a/"),
                symlink("a/b", "../../sibling"),
                file("a/b/c/kiln-hostile-deep", b"x"),
            ]),
            same(SYMLINK),
        ),
        (
            "dir-replaced-by-symlink",
            tar(&[dir("d/"), symlink("d", "../sibling"), file("d/pwned", b"x")]),
            same(SYMLINK),
        ),
        (
            // A later file replaces the symlink; it never writes through it.
            "symlink-then-file-same-name",
            tar(&[symlink("f", "../sibling/canary"), file("f", b"mine")]),
            same(Extracts("f", Some(b"mine"))),
        ),
        (
            "symlink-then-dir-same-name",
            tar(&[
                symlink("d", "../sibling"),
                dir("d/"),
                file("d/x", b"inside"),
            ]),
            same(Extracts("d/x", Some(b"inside"))),
        ),
        (
            // A file over a fifo replaces it instead of opening it (which would block).
            "fifo-then-file-same-name",
            tar(&[fifo("p"), file("p", b"data")]),
            same(Extracts("p", Some(b"data"))),
        ),
        (
            // A file over a hardlink replaces the link; the first name keeps its contents.
            "hardlink-then-file-same-name",
            tar(&[file("f", b"orig"), hardlink("h", "f"), file("h", b"new")]),
            same(Extracts("f", Some(b"orig"))),
        ),
        (
            "hardlink-dotdot",
            tar(&[hardlink("h", "../sibling/canary")]),
            same(Fails("leaves the destination")),
        ),
        (
            "hardlink-absolute",
            tar(&[hardlink("h", "/etc/passwd")]),
            same(Fails("is absolute")),
        ),
        (
            "hardlink-not-extracted",
            tar(&[hardlink("h", "etc/passwd")]),
            same(Fails("was not extracted earlier from this archive")),
        ),
        (
            "hardlink-through-symlink",
            tar(&[symlink("s", "../sibling"), hardlink("h", "s/canary")]),
            same(Fails("was not extracted earlier from this archive")),
        ),
        (
            "hardlink-pax-linkpath-escape",
            tar(&[
                pax(&[("linkpath", b"../sibling/canary")]),
                hardlink("h", "innocent"),
            ]),
            same(Fails("leaves the destination")),
        ),
        (
            "hardlink-to-directory",
            tar(&[dir("d/"), hardlink("h", "d")]),
            same(Fails("create hardlink")),
        ),
        (
            "char-device",
            tar(&[device(b'3', "dev/mem", 1, 1)]),
            (
                Extracts("dev/mem", None),
                Fails("device nodes are not allowed here"),
            ),
        ),
        (
            "block-device",
            tar(&[device(b'4', "dev/sda", 8, 0)]),
            (
                Extracts("dev/sda", None),
                Fails("device nodes are not allowed here"),
            ),
        ),
        (
            "zero-device",
            tar(&[device(b'3', "x", 0, 0)]),
            (
                Fails("a 0:0 character device would read as an overlay whiteout"),
                Fails("device nodes are not allowed here"),
            ),
        ),
        (
            "whiteout-dotdot-name",
            tar(&[file(".wh...", b"")]),
            (
                Fails("whiteout does not name a sibling entry"),
                NO_WHITEOUTS,
            ),
        ),
        (
            "whiteout-dot-name",
            tar(&[file("a/.wh..", b"")]),
            (
                Fails("whiteout does not name a sibling entry"),
                NO_WHITEOUTS,
            ),
        ),
        (
            "whiteout-empty-name",
            tar(&[file(".wh.", b"")]),
            (
                Fails("whiteout does not name a sibling entry"),
                NO_WHITEOUTS,
            ),
        ),
        (
            "whiteout-nested-escape",
            tar(&[file("a/../../.wh.x", b"")]),
            same(LEAVES),
        ),
        (
            "whiteout-through-symlink",
            tar(&[symlink("s", "../sibling"), file("s/.wh.canary", b"")]),
            (SYMLINK, NO_WHITEOUTS),
        ),
        (
            "whiteout-name-as-directory",
            tar(&[file(".wh.d/x", b"")]),
            same(Fails("a whiteout name is used as a directory")),
        ),
        (
            "opaque-through-symlink",
            tar(&[symlink("s", "../sibling"), file("s/.wh..wh..opq", b"")]),
            (SYMLINK, NO_WHITEOUTS),
        ),
        (
            "root-as-symlink",
            tar(&[symlink("./", "/")]),
            same(Fails("names the destination root")),
        ),
        (
            "pax-path-escape",
            tar(&[
                pax(&[("path", b"../sibling/pwned")]),
                file("innocent", b"x"),
            ]),
            same(LEAVES),
        ),
        (
            "gnu-longname-escape",
            tar(&[
                raw_entry(b"././@LongLink", b'L', b"../sibling/pwned\0", 0, 0),
                file("innocent", b"x"),
            ]),
            same(LEAVES),
        ),
        (
            "pax-nul-in-path",
            tar(&[pax(&[("path", b"a\0../../x")]), file("innocent", b"x")]),
            same(Fails("path contains a NUL byte")),
        ),
        (
            "path-too-long",
            tar(&[
                pax(&[("path", "p/".repeat(2500).as_bytes())]),
                file("innocent", b"x"),
            ]),
            same(Fails("more than the 4096-byte limit")),
        ),
        (
            "sparse-claim-10gib",
            sparse_claim_base256(),
            same(Fails("exceeds the 8589934592-byte limit")),
        ),
        (
            "pax-size-10gib",
            tar_unterminated(
                &[
                    pax(&[("size", b"10737418240")]),
                    header_only("big", b'0', 0).to_vec(),
                ],
                &[0xaa; 4096],
            ),
            same(Fails("exceeds the 8589934592-byte limit")),
        ),
        (
            "pax-header-huge",
            pax_claiming(64 << 20),
            same(Fails("extended header of 67108864 bytes exceeds")),
        ),
        (
            "gnu-sparse",
            tar(&[raw_entry(b"sparse", b'S', b"", 0, 0)]),
            same(Fails("sparse files are not supported")),
        ),
        (
            "bad-checksum",
            bad_checksum(),
            same(Fails("header checksum mismatch")),
        ),
        (
            "truncated-data",
            truncated(),
            same(Fails("archive ends inside the entry")),
        ),
        (
            "data-after-end",
            [
                file("a", b"a"),
                vec![0; 512],
                header_only("b", b'0', 0).to_vec(),
            ]
            .concat(),
            same(Fails("data after an end-of-archive block")),
        ),
    ];
    let mut out: Vec<(&'static str, HostileTar)> = cases
        .into_iter()
        .map(|(name, bytes, (as_layer, as_archive))| {
            (
                name,
                HostileTar {
                    source: Source::Bytes(bytes),
                    as_layer,
                    as_archive,
                },
            )
        })
        .collect();
    out.push((
        "many-entries",
        HostileTar {
            source: Source::ManyEntries { count: MANY },
            as_layer: Fails("archive has more than 500000 entries"),
            as_archive: Fails("archive has more than 500000 entries"),
        },
    ));
    out
}

// ---- raw tar construction -------------------------------------------------------------------

/// A ustar header; `size` is written in base-256 when octal cannot hold it.
fn raw_header(name: &[u8], typeflag: u8, size: u64, link: &[u8], dev: (u32, u32)) -> [u8; 512] {
    let mut h = [0u8; 512];
    assert!(
        name.len() <= 100 && link.len() <= 100,
        "use PAX for long names"
    );
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    if size < 8u64.pow(11) {
        octal(&mut h[124..136], size);
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    octal(&mut h[136..148], 1_600_000_000);
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], u64::from(dev.0));
    octal(&mut h[337..345], u64::from(dev.1));
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal(&mut h[148..155], sum);
    h
}

fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

fn pad(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(512) * 512, 0);
    v
}

fn raw_entry(name: &[u8], typeflag: u8, data: &[u8], major: u32, minor: u32) -> Vec<u8> {
    let mut v = raw_header(name, typeflag, data.len() as u64, b"", (major, minor)).to_vec();
    v.extend(pad(data));
    v
}

fn header_only(name: &str, typeflag: u8, size: u64) -> [u8; 512] {
    raw_header(name.as_bytes(), typeflag, size, b"", (0, 0))
}

fn file(name: &str, data: &[u8]) -> Vec<u8> {
    raw_entry(name.as_bytes(), b'0', data, 0, 0)
}

fn dir(name: &str) -> Vec<u8> {
    raw_entry(name.as_bytes(), b'5', b"", 0, 0)
}

fn fifo(name: &str) -> Vec<u8> {
    raw_entry(name.as_bytes(), b'6', b"", 0, 0)
}

fn device(typeflag: u8, name: &str, major: u32, minor: u32) -> Vec<u8> {
    raw_entry(name.as_bytes(), typeflag, b"", major, minor)
}

fn symlink(name: &str, target: &str) -> Vec<u8> {
    raw_header(name.as_bytes(), b'2', 0, target.as_bytes(), (0, 0)).to_vec()
}

fn hardlink(name: &str, target: &str) -> Vec<u8> {
    raw_header(name.as_bytes(), b'1', 0, target.as_bytes(), (0, 0)).to_vec()
}

/// A PAX extended header applying to the next entry.
fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3;
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} {k}=").as_bytes());
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    raw_entry(b"././@PaxHeader", b'x', &data, 0, 0)
}

fn tar(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut v = entries.concat();
    v.extend_from_slice(&[0u8; 1024]);
    v
}

/// Entries followed by raw bytes and no end-of-archive marker.
fn tar_unterminated(entries: &[Vec<u8>], tail: &[u8]) -> Vec<u8> {
    let mut v = entries.concat();
    v.extend_from_slice(tail);
    v
}

/// A header claiming 10 GiB (base-256 size) followed by 1 KiB of data and the end of input.
fn sparse_claim_base256() -> Vec<u8> {
    tar_unterminated(
        &[header_only("big", b'0', 10 << 30).to_vec()],
        &[0x55; 1024],
    )
}

/// A PAX header claiming `size` bytes, with only a little data behind it.
fn pax_claiming(size: u64) -> Vec<u8> {
    let header = raw_header(b"././@PaxHeader", b'x', size, b"", (0, 0));
    tar_unterminated(&[header.to_vec()], &[b'9'; 512])
}

fn bad_checksum() -> Vec<u8> {
    let mut v = tar(&[file("a", b"a")]);
    v[0] = b'b';
    v
}

fn truncated() -> Vec<u8> {
    let mut v = header_only("t", b'0', 1000).to_vec();
    v.extend_from_slice(&[b't'; 100]);
    v
}

/// Streams `count` tiny entries after an `m/` directory: the same directory declared again
/// and again, header-only.
///
/// The limit is what is under test: files would make every run pay for creating 500,000
/// inodes before the refusal (minutes on a slow disk), while repeated directory entries go
/// through the same header parsing and entry accounting at a few system calls each.
struct ManyEntries {
    remaining: u64,
    block: [u8; 512],
    pos: usize,
    trailer: u8,
}

impl ManyEntries {
    fn new(count: u64) -> Self {
        Self {
            remaining: count,
            block: raw_header(b"m/", b'5', 0, b"", (0, 0)),
            pos: 512,
            trailer: 2,
        }
    }
}

impl Read for ManyEntries {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == 512 {
            if self.remaining > 0 {
                self.remaining -= 1;
            } else if self.trailer > 0 {
                self.block = [0; 512];
                self.trailer -= 1;
            } else {
                return Ok(0);
            }
            self.pos = 0;
        }
        let n = buf.len().min(512 - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

// ---- tests ----------------------------------------------------------------------------------

/// `kiln-hostile-*` names in the places `..` and absolute-path escapes would reach.
fn escapes_outside(scratch: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let parent = scratch.parent().unwrap_or(Path::new("/tmp"));
    for place in [Path::new("/"), Path::new("/tmp"), parent] {
        if let Ok(rd) = fs::read_dir(place) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("kiln-hostile-") {
                    found.push(e.path().display().to_string());
                }
            }
        }
    }
    found
}

/// Unpacks one case into `<scratch>/dest` beside `<scratch>/sibling/canary` and checks the
/// outcome, that nothing changed outside `dest`, and the time it took.
fn check(name: &str, case: &HostileTar, opts: &UnpackOptions, expect: Expect, mode: &str) {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let dest = scratch.path().join("dest");
    let sibling = scratch.path().join("sibling");
    fs::create_dir(&dest).unwrap();
    fs::create_dir(&sibling).unwrap();
    fs::write(sibling.join("canary"), "canary").unwrap();
    let before = escapes_outside(scratch.path());
    assert!(
        before.is_empty(),
        "leftovers from an earlier run, remove them: {before:?}"
    );

    let dir = Dir::open_ambient_dir(&dest, ambient_authority()).unwrap();
    let start = Instant::now();
    let result = unpack_layer(case.reader(), &dir, opts);
    let took = start.elapsed();

    let ctx = format!("case {name} ({mode})");
    match (expect, &result) {
        (Expect::Fails(text), Err(e)) => {
            let msg = e.to_string();
            assert!(
                msg.contains(text),
                "{ctx}: error {msg:?} does not mention {text:?}"
            );
        }
        (Expect::Fails(text), Ok(stats)) => {
            panic!("{ctx}: expected an error mentioning {text:?}, unpacked {stats:?}")
        }
        (Expect::Extracts(path, contents), Ok(_)) => {
            let p = dest.join(path);
            assert!(fs::symlink_metadata(&p).is_ok(), "{ctx}: {path} missing");
            if let Some(c) = contents {
                assert_eq!(fs::read(&p).unwrap(), c, "{ctx}: {path} contents");
            }
        }
        (Expect::Extracts(path, _), Err(e)) => panic!("{ctx}: expected {path} extracted, got: {e}"),
    }
    let mut siblings: Vec<_> = fs::read_dir(&sibling)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    siblings.sort();
    assert_eq!(siblings, ["canary"], "{ctx}: sibling folder changed");
    assert_eq!(
        fs::read(sibling.join("canary")).unwrap(),
        b"canary",
        "{ctx}: canary changed"
    );
    let mut top: Vec<_> = fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    top.sort();
    assert_eq!(top, ["dest", "sibling"], "{ctx}: scratch folder changed");
    let after = escapes_outside(scratch.path());
    assert!(after.is_empty(), "{ctx}: escaped to {after:?}");
    let limit = Duration::from_secs(10);
    assert!(took < limit, "{ctx}: took {took:?}");
}

#[test]
fn hostile_corpus_as_snapshot() {
    for (name, case) in corpus() {
        check(
            name,
            &case,
            &UnpackOptions::snapshot(),
            case.as_layer,
            "snapshot",
        );
    }
}

#[test]
fn hostile_corpus_as_apply() {
    for (name, case) in corpus() {
        check(name, &case, &UnpackOptions::apply(), case.as_layer, "apply");
    }
}

#[test]
fn hostile_corpus_as_archive() {
    for (name, case) in corpus() {
        check(
            name,
            &case,
            &UnpackOptions::archive(),
            case.as_archive,
            "archive",
        );
    }
}

#[test]
fn size_claims_are_refused_before_writing() {
    for (name, case) in corpus() {
        if !name.ends_with("-10gib") {
            continue;
        }
        let scratch = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(scratch.path(), ambient_authority()).unwrap();
        assert!(unpack_layer(case.reader(), &dir, &UnpackOptions::snapshot()).is_err());
        assert_eq!(
            fs::read_dir(scratch.path()).unwrap().count(),
            0,
            "{name}: something was written"
        );
    }
}

#[test]
fn many_entries_generator_is_a_valid_tar() {
    // The generator itself must be sound, or the limit test proves nothing.
    let mut a = tar::Archive::new(ManyEntries::new(1000));
    let names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().to_vec()).unwrap())
        .collect();
    assert_eq!(names.len(), 1000);
    assert!(names.iter().all(|n| n == "m/"), "{:?}", &names[..3]);
}
