//! Every guest tool (`guest-tools/coreutils/tools.txt`) run inside kiln's WASI executor: RUN
//! steps exercise the tools and write what they saw into files, and the tests check the
//! resulting image (contents, modes, owners) and the step output.

use std::collections::BTreeMap;

use crate::harness::{image_tree, workspace_root, Env, FileInfo};

type Tree = BTreeMap<String, FileInfo>;

/// Builds a context of `dockerfile` and `files` as `me/tools`; returns the image and stderr.
fn build(dockerfile: &str, files: &[(&str, &[u8])]) -> (Env, Tree, String) {
    let env = Env::new();
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).expect("context folder");
    std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
    for (name, content) in files {
        env.write(&format!("ctx/{name}"), content);
    }
    let ctx_arg = ctx.to_str().expect("utf-8 temp path");
    let out = env
        .kiln()
        .args(["build", "--progress=plain", "-t", "me/tools", ctx_arg])
        .output()
        .expect("spawn kiln");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed:\n{err}");
    let tree = image_tree(&env.root(), "me/tools");
    (env, tree, err)
}

fn file<'a>(tree: &'a Tree, path: &str) -> &'a FileInfo {
    tree.get(path)
        .unwrap_or_else(|| panic!("{path} missing from the image: {:?}", tree.keys()))
}

fn text(tree: &Tree, path: &str) -> String {
    String::from_utf8_lossy(&file(tree, path).content).into_owned()
}

/// Asserts exact contents of files under `out/`.
fn expect_outputs(tree: &Tree, expected: &[(&str, &str)]) {
    let mut wrong = Vec::new();
    for (name, want) in expected {
        let path = format!("out/{name}");
        let got = tree
            .get(&path)
            .map(|f| String::from_utf8_lossy(&f.content).into_owned());
        if got.as_deref() != Some(*want) {
            wrong.push(format!("{path}: expected {want:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

const INPUT: &[u8] = b"b\na\nc\na\n";

/// The guest tools' own unit tests (the shell's parser and executor, the coreutils' option
/// parsing...), built natively: their workspace is not part of this one.
#[test]
fn guest_tools_unit_tests_pass() {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(root.join("guest-tools"))
        .args(["test", "--workspace", "--locked", "--target-dir"])
        .arg(root.join("target").join("guest-tools"));
    // Nothing of this test's cargo configuration applies to that build.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME")
            || k.starts_with("RUSTC_")
            || k == "RUSTFLAGS"
        {
            cmd.env_remove(k.as_ref());
        }
    }
    let out = cmd.output().expect("run cargo test for guest-tools");
    assert!(
        out.status.success(),
        "guest-tools unit tests failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Text tools: each writes into /out, compared with what GNU coreutils print.
#[test]
fn text_tools_in_the_sandbox() {
    let dockerfile = r#"FROM scratch
ENV FOO=bar
WORKDIR /w
COPY in s1 s2 j1 j2 /w/
RUN <<EOF
set -e
mkdir /out
/bin/echo hello > /out/echo
/bin/printf '%s-%d\n' x 5 > /out/printf
cat -n in > /out/cat
for h in md5sum sha1sum sha224sum sha256sum sha384sum sha512sum b2sum cksum sum; do $h in > /out/$h; done
base64 in > /out/base64
base64 -d /out/base64 > /out/base64-d
base32 in > /out/base32
base32 -d /out/base32 > /out/base32-d
basenc --base16 in > /out/basenc
basename /a/b/c.txt .txt > /out/basename
dirname /a/b/c.txt > /out/dirname
comm s1 s2 > /out/comm
csplit -s -f /out/part in /c/
printf 'a:b:c\n' | cut -d: -f2 > /out/cut
date -u -d @0 '+%Y-%m-%d %H:%M:%S' > /out/date
printf 'a\tb\n' | expand > /out/expand
printf 'a       b\n' | unexpand -a > /out/unexpand
expr 2 + 3 > /out/expr
factor 12 > /out/factor
if /bin/false; then echo yes > /out/false; else echo no > /out/false; fi
/bin/true && echo yes > /out/true
printf 'a b\nc\n' | fmt > /out/fmt
printf 'abcdef\n' | fold -w 3 > /out/fold
head -n 2 in > /out/head
tail -n 1 in > /out/tail
join j1 j2 > /out/join
nl in > /out/nl
nproc > /out/nproc
numfmt --to=iec 2048 > /out/numfmt
printf 'AB' | od -An -tx1 > /out/od
paste s1 s2 > /out/paste
pathchk /a/b && echo ok > /out/pathchk
pr -t in > /out/pr
printenv FOO > /out/printenv
/bin/pwd > /out/pwd
seq 3 > /out/seq
shuf -i 1-5 | sort -n > /out/shuf
sleep 0.1 && echo slept > /out/sleep
sort -u in > /out/sort
sort -u in | sort -c && echo sorted > /out/sort-c
if sort -c in 2> /out/sort-c-err; then echo sorted > /out/sort-c-bad; else echo $? > /out/sort-c-bad; fi
if sort -C -n -k2,2 s1 2> /out/sort-C-err; then echo sorted; else echo $?; fi > /out/sort-C
sort -c -t' ' -k2,2n s2 && echo sorted > /out/sort-key
split -l 2 in /out/split_
tac in > /out/tac
cat in | tac > /out/tac-pipe
echo tee | tee /out/tee1 > /out/tee2
echo abc | tr a-z A-Z > /out/tr
printf 'a b\nb c\n' | tsort > /out/tsort
tty > /out/tty || true
uname > /out/uname
uname -m > /out/uname-m
uname -srm > /out/uname-srm
sort in | uniq -c > /out/uniq
wc -l in > /out/wc
yes | head -n 3 > /out/yes
env A=1 printenv A > /out/env
printf '1\n2\n3\n' | xargs /bin/echo > /out/xargs
printf '1\n2\n' | xargs -n1 /bin/echo n > /out/xargs-n
grep -c a in > /out/grep
egrep 'a|c' in > /out/egrep
fgrep -x c in > /out/fgrep
id -u > /out/id
id -g > /out/id-g
groups > /out/groups
whoami > /out/whoami 2>&1 || true
which sh > /out/which
/bin/test -f in && echo yes > /out/test
/bin/[ -d /w ] && echo yes > /out/bracket
cp in sed-me && sed -i 's/a/A/g' sed-me && mv sed-me /out/sed
sed -n 2p in > /out/sed-n
EOF
"#;
    let (_env, tree, err) = build(
        dockerfile,
        &[
            ("in", INPUT),
            ("s1", b"a 3\nb 1\nc 2\n".as_slice()),
            ("s2", b"b 1\nc 2\nd 4\n".as_slice()),
            ("j1", b"1 a\n2 b\n".as_slice()),
            ("j2", b"1 x\n2 y\n".as_slice()),
        ],
    );
    expect_outputs(
        &tree,
        &[
            ("echo", "hello\n"),
            ("printf", "x-5\n"),
            ("cat", "     1\tb\n     2\ta\n     3\tc\n     4\ta\n"),
            ("md5sum", "048b34c9cc78d81f06998af8430082d5  in\n"),
            ("sha1sum", "a531bea4692b75eb5146a0899b92f61d86e9766c  in\n"),
            (
                "sha224sum",
                "709408768f6f2f6651c897fcfa2ac4a30b9197bcbe5def82bbe7a55a  in\n",
            ),
            (
                "sha256sum",
                "64fc772bee34e0ecc69e22e8aa24b1b5ee2f8312f36f01cd15125d74626a2613  in\n",
            ),
            (
                "sha384sum",
                "9343bdf04cebc1461eb04abed3bad52abfe21066cd633099a47d56934b9e55fb76cbd1ef7de8474fcf35c7ae41b9cd39  in\n",
            ),
            (
                "sha512sum",
                "d1d44c5f7c997e6eb0cbe4a94bf22017648cacc6027221847249b7d8f7b8ed4955089fa273da36c0a373855b659b401ccce0dbc71cc1a24fa66de07eb6a0f4b8  in\n",
            ),
            (
                "b2sum",
                "73a11005f0484f838ffc1dd92f39655384d617f5f635ff35c8a5dbf69706836b7619164e1e61233c1c84f8d022649352dd506cc28e349841cfcfa178d9cb5134  in\n",
            ),
            ("cksum", "177844208 8 in\n"),
            ("sum", "62541     1 in\n"),
            ("base64", "YgphCmMKYQo=\n"),
            ("base64-d", "b\na\nc\na\n"),
            ("base32", "MIFGCCTDBJQQU===\n"),
            ("base32-d", "b\na\nc\na\n"),
            ("basenc", "620A610A630A610A\n"),
            ("basename", "c\n"),
            ("dirname", "/a/b\n"),
            ("comm", "a 3\n\t\tb 1\n\t\tc 2\n\td 4\n"),
            ("part00", "b\na\n"),
            ("part01", "c\na\n"),
            ("cut", "b\n"),
            ("date", "1970-01-01 00:00:00\n"),
            ("expand", "a       b\n"),
            ("unexpand", "a\tb\n"),
            ("expr", "5\n"),
            ("factor", "12: 2 2 3\n"),
            ("false", "no\n"),
            ("true", "yes\n"),
            ("fmt", "a b c\n"),
            ("fold", "abc\ndef\n"),
            ("head", "b\na\n"),
            ("tail", "a\n"),
            ("join", "1 a x\n2 b y\n"),
            ("nl", "     1\tb\n     2\ta\n     3\tc\n     4\ta\n"),
            ("numfmt", "2.0K\n"),
            ("od", " 41 42\n"),
            ("paste", "a 3\tb 1\nb 1\tc 2\nc 2\td 4\n"),
            ("pathchk", "ok\n"),
            ("pr", "b\na\nc\na\n"),
            ("printenv", "bar\n"),
            ("pwd", "/w\n"),
            ("seq", "1\n2\n3\n"),
            ("shuf", "1\n2\n3\n4\n5\n"),
            ("sleep", "slept\n"),
            ("sort", "a\nb\nc\n"),
            ("sort-c", "sorted\n"),
            ("sort-c-bad", "1\n"),
            ("sort-c-err", "sort: in:2: disorder: a\n"),
            ("sort-C", "1\n"),
            ("sort-C-err", ""),
            ("sort-key", "sorted\n"),
            ("split_aa", "b\na\n"),
            ("split_ab", "c\na\n"),
            ("tac", "a\nc\na\nb\n"),
            ("tac-pipe", "a\nc\na\nb\n"),
            ("tee1", "tee\n"),
            ("tee2", "tee\n"),
            ("tr", "ABC\n"),
            ("tsort", "a\nb\nc\n"),
            ("tty", "not a tty\n"),
            ("uniq", "      2 a\n      1 b\n      1 c\n"),
            ("wc", "4 in\n"),
            ("yes", "y\ny\ny\n"),
            ("env", "1\n"),
            ("xargs", "1 2 3\n"),
            ("xargs-n", "n 1\nn 2\n"),
            ("grep", "2\n"),
            ("egrep", "a\nc\na\n"),
            ("fgrep", "c\n"),
            ("id", "0\n"),
            ("id-g", "0\n"),
            ("groups", "0\n"),
            ("whoami", "whoami: cannot find name for user ID 0\n"),
            ("test", "yes\n"),
            ("bracket", "yes\n"),
            ("sed", "b\nA\nc\nA\n"),
            ("sed-n", "a\n"),
        ],
    );
    assert!(text(&tree, "out/nproc")
        .trim()
        .parse::<u32>()
        .is_ok_and(|n| n > 0));
    // The Linux host, as a Linux program sees it, not wasm32/wasi: scripts pick downloads by it.
    assert_eq!(text(&tree, "out/uname"), "Linux\n");
    let host = rustix::system::uname();
    let machine = host.machine().to_string_lossy().into_owned();
    assert_eq!(text(&tree, "out/uname-m"), format!("{machine}\n"));
    assert_eq!(
        text(&tree, "out/uname-srm"),
        format!("Linux {} {machine}\n", host.release().to_string_lossy())
    );
    assert!(text(&tree, "out/which").trim_end().ends_with("/sh"));
    assert!(err.contains("Step"), "{err}");
}

/// File tools: modes, owners, links and archives, checked in the image's layer.
#[test]
fn file_tools_keep_modes_and_owners() {
    let dockerfile = r#"FROM scratch
COPY --chmod=755 run.sh /src/run.sh
COPY data.txt /src/data.txt
RUN <<EOF
set -e
mkdir -p /out /src/sub
cd /src
echo deep > sub/deep.txt
ln -s data.txt sub/link
chmod 4755 run.sh
stat -c %a run.sh > /out/chmod
chmod g+w,o-r data.txt
stat -c '%a %F' data.txt > /out/chmod-sym
mkdir /out/gdir
chmod =2775 /out/gdir
cp run.sh /out/op-mode
chmod 777 /out/op-mode
chmod -022 /out/op-mode
chmod +4000 /out/op-mode
stat -c '%a' /out/gdir /out/op-mode > /out/chmod-op
chown 1000:1000 data.txt
chgrp 2000 data.txt
stat -c '%u:%g' data.txt > /out/chown
cp run.sh /out/cp-plain
cp -p data.txt /out/cp-p
cp -a /src /out/cp-a
mkdir /out/cp-r
cp -r /src /out/cp-r
cp -r /src/. /out/cp-dot
cp --preserve=mode,ownership run.sh /out/cp-preserve
mkdir -p /out/parents
cp --parents sub/deep.txt /out/parents
printf old > /out/cp-n
cp -n data.txt /out/cp-n
cp -v data.txt /out/cp-v > /out/cp-v.log
mkdir /out/mv-dir
cp -a run.sh /out/to-move
mv /out/to-move /out/mv-dir/
cp -a data.txt /out/mv-owned
mv /out/mv-owned /out/mv-dir/owned
install -m 750 -o 1000 -g 1000 run.sh /out/installed
install -d -m 700 /out/idir
ls -l run.sh > /out/ls-l
ls -ln data.txt > /out/ls-ln
ls -1 /src > /out/ls-1
ls -a /src/sub > /out/ls-a
ls -R /src > /out/ls-R
ls -F /src > /out/ls-F
ls -ld /out/idir > /out/ls-ld
ls -l sub/link > /out/ls-link
touch -d @86400 /out/old
ls -l /out/old > /out/ls-old
ls -lh /out/cp-n > /out/ls-h
ls -S -1 /src/sub > /out/ls-S
printf 0123456789 > /out/dd-in
dd if=/out/dd-in of=/out/dd bs=2 count=2 skip=1
printf XXXXXXXX > /out/dd-notrunc
printf ab | dd of=/out/dd-notrunc bs=1 seek=2 conv=notrunc status=none
dd if=/dev/zero bs=1k count=4 status=none | wc -c > /out/dd-zero
dd if=/out/dd-in of=/out/dd-sync ibs=4 obs=3 conv=sync status=noxfer 2> /out/dd-sync.log
ln -s run.sh /out/symlink
readlink /out/symlink > /out/readlink
realpath /src/sub/../run.sh > /out/realpath
ln /out/dd-in /out/hard
stat -c %h /out/dd-in > /out/nlink
link /out/dd-in /out/hard2
unlink /out/hard2
mkdir /out/gone && rmdir /out/gone
touch /out/rm-me && rm /out/rm-me
truncate -s 10 /out/trunc
stat -c %s /out/trunc > /out/truncate
t=$(mktemp /out/tmp.XXXXXX) && test -f "$t" && echo ok > /out/mktemp && rm "$t"
sync && echo ok > /out/sync
tar czf /out/a.tgz -C /src .
mkdir /out/untar
tar xzf /out/a.tgz -C /out/untar
tar tzf /out/a.tgz | sort > /out/tar-list
tar cJf /out/a.txz -C /src data.txt
tar cjf /out/a.tbz -C /src data.txt
mkdir /out/unxz /out/unbz
tar xf /out/a.txz -C /out/unxz
tar -x -j -f /out/a.tbz -C /out/unbz
cp data.txt /out/gz && gzip /out/gz && gunzip -c /out/gz.gz > /out/gunzip
zcat /out/gz.gz > /out/zcat
find /src -name '*.txt' | sort > /out/find
find /src -type f -name '*.txt' -exec cat {} \; | sort > /out/find-exec
find /src -type f | sort | xargs wc -c > /out/xargs-wc
grep -rn deep /src > /out/grep-rn
/bin/test -x /src/run.sh && echo yes > /out/test-x
EOF
"#;
    let (_env, tree, err) = build(
        dockerfile,
        &[
            ("run.sh", b"#!/bin/sh\necho ran\n".as_slice()),
            ("data.txt", b"data\n".as_slice()),
        ],
    );
    let mode = |p: &str| file(&tree, p).mode;
    let owner = |p: &str| (file(&tree, p).uid, file(&tree, p).gid);

    // chmod / chown / chgrp, as stat sees them and as the layer records them.
    expect_outputs(
        &tree,
        &[
            ("chmod", "4755\n"),
            ("chmod-sym", "660 regular file\n"),
            ("chmod-op", "2775\n4755\n"),
            ("chown", "1000:2000\n"),
        ],
    );
    assert_eq!(mode("src/run.sh"), 0o4755);
    assert_eq!(owner("src/data.txt"), (1000, 2000));

    // cp: plain copies get the source mode less the umask (no set-id bits), -p/-a keep mode,
    // owner and symlinks, directories land inside existing directories like GNU.
    assert_eq!(mode("out/cp-plain"), 0o755);
    assert_eq!(owner("out/cp-plain"), (0, 0));
    assert_eq!((mode("out/cp-p"), owner("out/cp-p")), (0o660, (1000, 2000)));
    assert_eq!(mode("out/cp-a/run.sh"), 0o4755);
    assert_eq!(owner("out/cp-a/data.txt"), (1000, 2000));
    assert_eq!(file(&tree, "out/cp-a/sub/link").kind, 'l');
    assert_eq!(file(&tree, "out/cp-a/sub/link").content, b"data.txt");
    assert_eq!(text(&tree, "out/cp-r/src/sub/deep.txt"), "deep\n");
    assert_eq!(mode("out/cp-r/src/run.sh"), 0o755);
    assert_eq!(
        file(&tree, "out/cp-r/src/sub/link").kind,
        'l',
        "cp -r copies links as links"
    );
    assert_eq!(text(&tree, "out/cp-dot/data.txt"), "data\n");
    assert_eq!(
        (mode("out/cp-preserve"), owner("out/cp-preserve")),
        (0o4755, (0, 0))
    );
    assert_eq!(text(&tree, "out/parents/sub/deep.txt"), "deep\n");
    expect_outputs(
        &tree,
        &[
            ("cp-n", "old"),
            ("cp-v", "data\n"),
            ("cp-v.log", "'data.txt' -> '/out/cp-v'\n"),
        ],
    );

    // mv keeps everything; install sets what it is told.
    assert_eq!(mode("out/mv-dir/to-move"), 0o4755);
    assert!(!tree.contains_key("out/to-move"));
    assert_eq!(owner("out/mv-dir/owned"), (1000, 2000));
    assert_eq!(mode("out/mv-dir/owned"), 0o660);
    assert_eq!(
        (mode("out/installed"), owner("out/installed")),
        (0o750, (1000, 1000))
    );
    assert_eq!(file(&tree, "out/idir").kind, 'd');
    assert_eq!(mode("out/idir"), 0o700);

    // ls: real modes, numeric owners without /etc/passwd, GNU layout.
    let ls_l = text(&tree, "out/ls-l");
    assert!(ls_l.starts_with("-rwsr-xr-x 1 0 0 19 "), "{ls_l:?}");
    assert!(ls_l.ends_with(" run.sh\n"), "{ls_l:?}");
    let ls_ln = text(&tree, "out/ls-ln");
    assert!(ls_ln.starts_with("-rw-rw---- 1 1000 2000 5 "), "{ls_ln:?}");
    expect_outputs(
        &tree,
        &[
            ("ls-1", "data.txt\nrun.sh\nsub\n"),
            ("ls-a", ".\n..\ndeep.txt\nlink\n"),
            (
                "ls-R",
                "/src:\ndata.txt\nrun.sh\nsub\n\n/src/sub:\ndeep.txt\nlink\n",
            ),
            ("ls-F", "data.txt\nrun.sh*\nsub/\n"),
            ("ls-old", "-rw-r--r-- 1 0 0 0 Jan  2  1970 /out/old\n"),
            ("ls-S", "link\ndeep.txt\n"),
        ],
    );
    let ld = text(&tree, "out/ls-ld");
    assert!(ld.starts_with("drwx------ 2 0 0 "), "{ld:?}");
    assert!(ld.ends_with(" /out/idir\n"), "{ld:?}");
    let link = text(&tree, "out/ls-link");
    assert!(link.starts_with("lrwxrwxrwx 1 0 0 8 "), "{link:?}");
    assert!(link.ends_with(" sub/link -> data.txt\n"), "{link:?}");
    assert!(text(&tree, "out/ls-h").starts_with("-rw-r--r-- 1 0 0 3 "));

    // dd: blocks, notrunc, the summary on stderr.
    expect_outputs(
        &tree,
        &[
            ("dd", "2345"),
            ("dd-notrunc", "XXabXXXX"),
            ("dd-zero", "4096\n"),
            ("dd-sync", "0123456789\0\0"),
            ("dd-sync.log", "2+1 records in\n4+0 records out\n"),
        ],
    );
    assert!(
        err.contains("2+0 records in") && err.contains("2+0 records out"),
        "{err}"
    );
    assert!(err.contains("4 bytes copied, "), "{err}");

    // Links and the rest of the file tools.
    assert_eq!(file(&tree, "out/symlink").kind, 'l');
    expect_outputs(
        &tree,
        &[
            ("readlink", "run.sh\n"),
            ("realpath", "/src/run.sh\n"),
            ("nlink", "2\n"),
            ("truncate", "10\n"),
            ("mktemp", "ok\n"),
            ("sync", "ok\n"),
            ("gunzip", "data\n"),
            ("zcat", "data\n"),
            ("find", "/src/data.txt\n/src/sub/deep.txt\n"),
            ("find-exec", "data\ndeep\n"),
            (
                "xargs-wc",
                " 5 /src/data.txt\n19 /src/run.sh\n 5 /src/sub/deep.txt\n29 total\n",
            ),
            ("grep-rn", "/src/sub/deep.txt:1:deep\n"),
            ("test-x", "yes\n"),
        ],
    );
    // Member names compared without GNU's `./` prefix and folder slash (kiln's tar drops them).
    let listed: Vec<String> = text(&tree, "out/tar-list")
        .lines()
        .map(|l| match l.trim_start_matches("./").trim_end_matches('/') {
            "" => ".".to_owned(),
            name => name.to_owned(),
        })
        .collect();
    assert_eq!(
        listed,
        [".", "data.txt", "run.sh", "sub", "sub/deep.txt", "sub/link"]
    );
    assert!(!tree.contains_key("out/hard2") && !tree.contains_key("out/gone"));
    assert!(!tree.contains_key("out/rm-me"));
    assert_eq!(text(&tree, "out/untar/run.sh"), "#!/bin/sh\necho ran\n");
    // xz and bzip2: written and read back in the sandbox, and GNU's tools read them too.
    for (archive, tool, copy) in [
        ("out/a.txz", "xz", "out/unxz/data.txt"),
        ("out/a.tbz", "bzip2", "out/unbz/data.txt"),
    ] {
        assert_eq!(
            file(&tree, copy).content,
            file(&tree, "src/data.txt").content
        );
        let host = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(host.path(), &file(&tree, archive).content).unwrap();
        let st = std::process::Command::new(tool)
            .arg("-t")
            .arg(host.path())
            .status()
            .unwrap_or_else(|e| panic!("{tool} is missing ({e}): .ci/run installs it"));
        assert!(st.success(), "{tool} -t rejects {archive}");
    }
    assert_eq!(mode("out/untar/run.sh") & 0o755, 0o755);
    assert_eq!(file(&tree, "out/untar/sub/link").kind, 'l');
}

/// With an /etc/passwd and /etc/group in the image, names replace numbers.
#[test]
fn names_come_from_the_images_passwd() {
    let dockerfile = r#"FROM scratch
COPY passwd group /etc/
COPY data.txt /home/app/data.txt
RUN <<EOF
set -e
mkdir /out
id -un > /out/id-un
id -gn > /out/id-gn
whoami > /out/whoami
chown app:staff /home/app/data.txt
stat -c '%U:%G %u:%g' /home/app/data.txt > /out/stat
ls -l /home/app/data.txt > /out/ls-l
ls -ln /home/app/data.txt > /out/ls-ln
chown 4242 /home/app/data.txt
ls -l /home/app/data.txt > /out/ls-unknown
mkdir /work && chown app:app /work
EOF
USER app
RUN id -un > /work/user && id -u >> /work/user && groups >> /work/user
"#;
    let (_env, tree, _err) = build(
        dockerfile,
        &[
            (
                "passwd",
                b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\n"
                    .as_slice(),
            ),
            (
                "group",
                b"root:x:0:\nstaff:x:50:app\napp:x:1000:\n".as_slice(),
            ),
            ("data.txt", b"data\n".as_slice()),
        ],
    );
    expect_outputs(
        &tree,
        &[
            ("id-un", "root\n"),
            ("id-gn", "root\n"),
            ("whoami", "root\n"),
            ("stat", "app:staff 1000:50\n"),
        ],
    );
    assert_eq!(
        (
            file(&tree, "home/app/data.txt").uid,
            file(&tree, "home/app/data.txt").gid
        ),
        (4242, 50)
    );
    let ls_l = text(&tree, "out/ls-l");
    assert!(ls_l.starts_with("-rw-r--r-- 1 app staff 5 "), "{ls_l:?}");
    let ls_ln = text(&tree, "out/ls-ln");
    assert!(ls_ln.starts_with("-rw-r--r-- 1 1000 50 5 "), "{ls_ln:?}");
    let unknown = text(&tree, "out/ls-unknown");
    assert!(
        unknown.starts_with("-rw-r--r-- 1 4242 staff 5 "),
        "{unknown:?}"
    );
    assert_eq!(text(&tree, "work/user"), "app\n1000\napp staff\n");
}
