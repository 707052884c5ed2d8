//! Runs the native `sh` binary on small scripts.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn sh(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sh"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sh");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("write script");
    }
    child.wait_with_output().expect("wait for sh")
}

fn run(script: &str) -> (String, String, i32) {
    let out = sh(&["-c", script], "");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn lists_and_status() {
    assert_eq!(run("true && echo a || echo b; false || echo c").0, "a\nc\n");
    assert_eq!(run("exit 3").2, 3);
    assert_eq!(run("nosuchcommand-xyz").2, 127);
    assert!(run("nosuchcommand-xyz")
        .1
        .ends_with("sh: 1: nosuchcommand-xyz: not found\n"));
}

#[test]
fn expansions() {
    let (out, _, _) = run(r#"x="a b"; set -- $x "$x"; echo $# ${x%b} ${#x} $((2*3+1)) "${u:-d}""#);
    assert_eq!(out, "3 a 3 7 d\n");
    assert_eq!(run("IFS=:; x=a::b; set -- $x; echo $#").0, "3\n");
}

#[test]
fn subshells_pipelines_and_substitutions() {
    let script = "x=1; (x=2; echo $x); echo $x; f() { echo f$1; }; echo $(f 1 | tr f g)";
    assert_eq!(run(script).0, "2\n1\ng1\n");
    assert_eq!(run("yes | head -n 2").0, "y\ny\n");
    let big = run("x=$(seq 1 100000); echo ${#x}");
    assert_eq!(big.0, "588894\n");
}

#[test]
fn here_documents_and_redirections() {
    let script = "x=v\ncat <<EOF\n$x\nEOF\ncat <<'E'\n$x\nE\necho err 2>&1 >/dev/null 1>&2\n";
    assert_eq!(run(script).0, "v\n$x\nerr\n");
}

#[test]
fn errexit_like_dash() {
    let (out, _, status) =
        run("set -e; false || true; if false; then :; fi; echo ok; false; echo no");
    assert_eq!((out.as_str(), status), ("ok\n", 1));
}

#[test]
fn script_from_stdin() {
    // `$-` leaves out `s` (see `Opts::letters`). Commands run as their lines arrive and the
    // shell reads no further ahead (POSIX; bash does the same, dash reads pipes in blocks):
    // `read` gets the line after it.
    let out = sh(
        &[],
        "echo \"<$->\"\nread x\nthe data\necho \"[$x]\"\ncat <<E\nbody\nE\nif true\nthen echo multi\nfi\necho a \\\nb\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "<>\n[the data]\nbody\nmulti\na b\n"
    );
}

#[test]
fn syntax_errors_are_reported() {
    let (_, err, status) = run("echo ok; if then");
    assert_eq!(status, 2);
    assert!(err.contains("Syntax error"), "{err}");
}

/// Random bytes from a small shell-ish alphabet: every script must end in an error or a status,
/// never in a panic.
#[test]
fn garbage_never_panics() {
    const ALPHABET: &[&str] = &[
        "(", ")", "{", "}", "$", "${", "$((", "`", "'", "\"", "\\", "|", "&", ";", ";;", "<", ">",
        "<<", "<<-", ">&", "<&", "\n", " ", "x", "1", "#", "*", "?", "[", "]", "=", ":", "-", "+",
        "%", "!", "if", "then", "fi", "case", "in", "esac", "for", "do", "done", "EOF",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..300 {
        let mut script = String::new();
        for _ in 0..24 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            script.push_str(ALPHABET[(seed % ALPHABET.len() as u64) as usize]);
        }
        let out = sh(&["-n", "-c", &script], "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "script {script:?}: {err}");
        assert!(out.status.code().is_some(), "script {script:?} died");
    }
}
