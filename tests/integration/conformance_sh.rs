//! The POSIX shell spec suite (`shared/conformance/posix-shell`) against kiln's guest sh inside
//! the WASI sandbox (`kiln debug sh`): the 16 files the WASI issue requires must pass whole.

use crate::harness::conformance_dir;

const REQUIRED: &[&str] = &[
    "errexit",
    "sh-options",
    "xtrace",
    "var-op-test",
    "var-op-strip",
    "command-sub",
    "word-split",
    "quote",
    "here-doc",
    "redirect",
    "pipeline",
    "builtin-bracket",
    "case_",
    "loop",
    "builtin-meta",
    "glob",
];

#[test]
fn required_spec_files_pass_through_kiln_debug_sh() {
    let suite = conformance_dir().join("posix-shell");
    let runner = suite.join("run_spec.py");
    assert!(runner.is_file(), "missing {}", runner.display());
    let shell = format!("{} debug sh", env!("CARGO_BIN_EXE_kiln"));
    let files: Vec<String> = REQUIRED
        .iter()
        .map(|f| format!("spec/{f}.test.sh"))
        .collect();
    let out = std::process::Command::new("python3")
        .current_dir(&suite)
        .arg(&runner)
        .args(["--shell", &shell])
        .args(["--expect-from", "dash-0.5.12-debian-deltas.json"])
        // POSIX 2024's pipefail and `source`, which kiln's sh has and dash 0.5.12 lacks.
        .arg("--accept-default")
        .args(["-j", "2"])
        // The runner's 5 s per case is for an idle machine; CI runs this beside the other tests.
        .args(["--timeout", "30"])
        // A failure prints its case, expected and actual output.
        .arg("-v")
        .args(&files)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
