//! BuildKit's shell-lexer vectors (`buildkit-parser/shell`) against `kiln::dockerfile::shell`.
//!
//! Each test reads one vector file, runs every case and reports all failures at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kiln::dockerfile::shell::Lexer;

use crate::harness;

fn shell_dir() -> PathBuf {
    harness::conformance_dir().join("buildkit-parser/shell")
}

fn read(name: &str) -> String {
    let path = shell_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn assert_no_failures(file: &str, ran: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{file}: {} failure(s) over {ran} cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `envVarTest`: `PLATFORM | input | expected`, `ProcessWord` with a fixed environment, run
/// against both an ordered list and a map as upstream does. Windows-only (`W`) lines are skipped
/// because kiln has Unix (case-sensitive) semantics.
#[test]
fn shell_env_var_vectors() {
    let text = read("envVarTest");
    let list: Vec<(String, String)> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let map: BTreeMap<String, String> = list.iter().cloned().collect();
    let lexer = Lexer::new('\\');
    let mut ran = 0;
    let mut failures = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        if raw.starts_with('#') || raw.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = raw.trim().split('|').collect();
        let [platform, input, expected] = fields.as_slice() else {
            failures.push(format!(
                "line {lineno}: not `PLATFORM | input | expected`: {raw:?}"
            ));
            continue;
        };
        let (platform, input, expected) = (platform.trim(), input.trim(), expected.trim());
        match platform {
            "A" | "U" => {}
            "W" => continue,
            other => {
                failures.push(format!("line {lineno}: unknown platform {other:?}"));
                continue;
            }
        }
        ran += 1;
        for (env_kind, got) in [
            ("list", lexer.process_word(input, &list)),
            ("map", lexer.process_word(input, &map)),
        ] {
            match (expected, got) {
                ("error", Ok(v)) => failures.push(format!(
                    "line {lineno} ({env_kind}): {input:?}: expected an error, got {v:?}"
                )),
                ("error", Err(_)) => {}
                (want, Ok(v)) if v == want => {}
                (want, Ok(v)) => failures.push(format!(
                    "line {lineno} ({env_kind}): {input:?}: expected {want:?}, got {v:?}"
                )),
                (want, Err(e)) => failures.push(format!(
                    "line {lineno} ({env_kind}): {input:?}: expected {want:?}, got error: {e}"
                )),
            }
        }
    }
    assert_eq!(ran, 228, "envVarTest: expected 228 A+U cases, found {ran}");
    assert_no_failures("envVarTest", ran, &failures);
}

/// `wordsTest`: `input | w1,w2,...` through `ProcessWords`, with `ENV k=v` lines adding to the
/// environment for the lines after them.
#[test]
fn shell_words_vectors() {
    let text = read("wordsTest");
    let lexer = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let mut ran = 0;
    let mut failures = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        let lineno = idx + 1;
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let assignment = rest.trim_start_matches(' ');
            let (k, v) = assignment.split_once('=').unwrap_or((assignment, ""));
            env.push((k.to_owned(), v.to_owned()));
            continue;
        }
        let Some((input, expected)) = line.split_once('|').filter(|(_, e)| !e.contains('|')) else {
            failures.push(format!("line {lineno}: not `input | words`: {line:?}"));
            continue;
        };
        let input = input.trim();
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        ran += 1;
        let got = match lexer.process_words(input, &env) {
            Ok(words) => words,
            Err(_) => vec!["error".to_owned()],
        };
        if got != expected {
            failures.push(format!(
                "line {lineno}: {input:?}: expected {expected:?}, got {got:?}"
            ));
        }
    }
    assert_eq!(ran, 24, "wordsTest: expected 24 cases, found {ran}");
    assert_no_failures("wordsTest", ran, &failures);
}

/// `process-word-cases.json`: `ProcessWordWithMatches` cases, the mandatory-variable (`?`) cases
/// and the platform release-name cases, each with an exact environment.
#[test]
fn shell_process_word_cases() {
    let text = read("process-word-cases.json");
    let doc: serde_json::Value =
        serde_json::from_str(&text).expect("process-word-cases.json parses");
    let lexer = Lexer::new('\\');
    let mut ran = 0;
    let mut failures = Vec::new();
    for group in [
        "process_word_with_matches",
        "mandatory_vars",
        "platform_release_name",
    ] {
        let Some(cases) = doc.get(group).and_then(|g| g.as_array()) else {
            failures.push(format!("{group}: missing or not an array"));
            continue;
        };
        if cases.is_empty() {
            failures.push(format!("{group}: no cases"));
        }
        for (i, case) in cases.iter().enumerate() {
            ran += 1;
            let label = format!("{group}[{i}]");
            match run_case(&lexer, case) {
                Ok(()) => {}
                Err(msg) => failures.push(format!("{label}: {msg}")),
            }
        }
    }
    assert_no_failures("process-word-cases.json", ran, &failures);
}

fn string_set(case: &serde_json::Value, key: &str) -> Result<Option<BTreeSet<String>>, String> {
    let Some(v) = case.get(key) else {
        return Ok(None);
    };
    let items = v.as_array().ok_or(format!("{key} is not an array"))?;
    items
        .iter()
        .map(|s| {
            s.as_str()
                .map(str::to_owned)
                .ok_or(format!("{key} holds a non-string"))
        })
        .collect::<Result<BTreeSet<_>, _>>()
        .map(Some)
}

fn run_case(lexer: &Lexer, case: &serde_json::Value) -> Result<(), String> {
    let input = case
        .get("input")
        .and_then(|v| v.as_str())
        .ok_or("no input")?;
    let envs: BTreeMap<String, String> = case
        .get("envs")
        .and_then(|v| v.as_object())
        .ok_or(format!("{input:?}: no envs"))?
        .iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|s| (k.clone(), s.to_owned()))
                .ok_or(format!("{input:?}: env {k} is not a string"))
        })
        .collect::<Result<_, _>>()?;
    let got = lexer.process_word_with_matches(input, &envs);
    if case.get("expect_error").and_then(|v| v.as_bool()) == Some(true) {
        let err = match got {
            Ok((v, _, _)) => return Err(format!("{input:?}: expected an error, got {v:?}")),
            Err(e) => e.to_string(),
        };
        if let Some(needle) = case.get("error_contains").and_then(|v| v.as_str()) {
            if !err.contains(needle) {
                return Err(format!(
                    "{input:?}: error {err:?} does not contain {needle:?}"
                ));
            }
        }
        return Ok(());
    }
    let expected = case
        .get("expected")
        .and_then(|v| v.as_str())
        .ok_or(format!("{input:?}: neither expected nor expect_error"))?;
    let (value, matched, unmatched) =
        got.map_err(|e| format!("{input:?}: unexpected error: {e}"))?;
    if value != expected {
        return Err(format!("{input:?}: expected {expected:?}, got {value:?}"));
    }
    if let Some(want) = string_set(case, "matched")? {
        if matched != want {
            return Err(format!("{input:?}: matched {matched:?}, expected {want:?}"));
        }
    }
    if let Some(want) = string_set(case, "unmatched")? {
        if unmatched != want {
            return Err(format!(
                "{input:?}: unmatched {unmatched:?}, expected {want:?}"
            ));
        }
    }
    Ok(())
}
