//! The hostile-tar corpus through the command line: `kiln import`, `kiln load` and build
//! contexts on stdin each refuse what they must with one clear line and exit 1, never write
//! outside their folders, stay within bounded memory, and leave a store that `kiln fsck` passes.

use std::io::Write;
use std::process::Stdio;

use crate::harness::Env;
use crate::hostile::{corpus, Expect};

struct Outcome {
    code: Option<i32>,
    stderr: String,
    max_rss_kb: u64,
}

/// GNU time, which reports the peak memory of the process it starts.
const TIME: &str = "/usr/bin/time";

/// Runs `kiln ARGS` with `input` streamed to stdin; measures kiln's peak memory.
///
/// The measurement goes through GNU time rather than `wait4` on our own child: a process
/// spawned from this test binary starts with the binary's high-water mark (vfork shares its
/// memory until exec, and Linux carries that peak into the child's figure), so kiln would be
/// charged for whatever the other tests in this process had held.
fn run_with_stdin(env: &Env, args: &[&str], input: &mut dyn std::io::Read) -> Outcome {
    assert!(
        std::path::Path::new(TIME).is_file(),
        "{TIME} is missing: install Debian's `time` package (.ci/run does)"
    );
    let report = env.dir.path().join("peak-memory");
    let mut child = std::process::Command::new(TIME)
        .args(["-f", "%M", "-o"])
        .arg(&report)
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("KILN_ROOT", env.root())
        .env("NO_COLOR", "1")
        .env_remove("SOURCE_DATE_EPOCH")
        .current_dir(env.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    // kiln may stop reading early (it refused the archive): a broken pipe is expected then.
    let _ = std::io::copy(input, &mut stdin);
    let _ = stdin.flush();
    drop(stdin);
    let status = child.wait().unwrap();
    // The last line is the figure; a line before it may say how the command ended.
    let report = std::fs::read_to_string(&report).unwrap();
    let max_rss_kb = report
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak memory from {TIME}: {report:?}"));
    Outcome {
        code: status.code(),
        stderr: err_reader.join().unwrap(),
        max_rss_kb,
    }
}

fn assert_one_line_failure(case: &str, what: &str, o: &Outcome, needle: Option<&str>) {
    assert_eq!(
        o.code,
        Some(1),
        "{case} via {what}: expected exit 1:\n{}",
        o.stderr
    );
    let lines: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.starts_with("kiln:"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{case} via {what}: one error line:\n{}",
        o.stderr
    );
    assert!(
        !o.stderr.contains("panicked"),
        "{case} via {what}: panic:\n{}",
        o.stderr
    );
    if let Some(n) = needle {
        assert!(
            lines[0].contains(n),
            "{case} via {what}: expected {n:?} in:\n{}",
            o.stderr
        );
    }
}

fn no_escapes() {
    for dir in ["/tmp", "/"] {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with("kiln-hostile"),
                "{dir}/{name} was written by an archive"
            );
        }
    }
}

#[test]
fn hostile_tars_are_refused_by_import_load_and_build_contexts() {
    let env = Env::new();
    for (name, case) in corpus() {
        // import: a root filesystem tarball, devices allowed, whiteouts refused.
        let o = run_with_stdin(
            &env,
            &["import", "-", "kiln-test/hostile"],
            &mut case.reader(),
        );
        let device_case = name.contains("device");
        match case.as_archive {
            Expect::Fails(msg) if !device_case => {
                assert_one_line_failure(name, "import", &o, Some(msg))
            }
            _ => assert!(
                matches!(o.code, Some(0) | Some(1)),
                "{name} via import: exit {:?}:\n{}",
                o.code,
                o.stderr
            ),
        }
        assert!(
            o.max_rss_kb < 256 * 1024,
            "{name} via import used {} KiB",
            o.max_rss_kb
        );

        // load: never an image archive, so always refused, one way or another.
        let o = run_with_stdin(&env, &["load"], &mut case.reader());
        assert_one_line_failure(name, "load", &o, None);
        assert!(
            o.max_rss_kb < 256 * 1024,
            "{name} via load used {} KiB",
            o.max_rss_kb
        );

        // A build context on stdin: refused, or (no Dockerfile inside) a failed build.
        let o = run_with_stdin(&env, &["build", "-q", "-"], &mut case.reader());
        assert_one_line_failure(name, "build -", &o, None);
        assert!(
            o.max_rss_kb < 256 * 1024,
            "{name} via build used {} KiB",
            o.max_rss_kb
        );
        no_escapes();
    }
    env.ok(&["fsck"]);
}
