//! BuildKit's Dockerfile parser conformance data (`shared/conformance/buildkit-parser`, see its
//! README) against `kiln::dockerfile`, through the library and through `kiln debug parse`.
//!
//! One test per case family; each runs every case and reports all failures in one message.

use std::path::{Path, PathBuf};

use kiln::dockerfile::ast::Heredoc;
use kiln::dockerfile::directives::{detect_syntax, find_directive, scan_directives};
use kiln::dockerfile::{heredoc, parse, parse_words, ParseErrorKind};
use serde_json::Value;

use crate::harness;

fn suite() -> PathBuf {
    harness::conformance_dir().join("buildkit-parser")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// The case folders under `dir`, sorted by name.
fn cases(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.expect("read dir entry");
            (
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            )
        })
        .filter(|(_, p)| p.is_dir())
        .collect();
    out.sort();
    out
}

fn report(family: &str, total: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{family}: {} of {total} cases fail:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("field {key} missing in {v}"))
}

fn num_field(v: &Value, key: &str) -> usize {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("field {key} missing in {v}")) as usize
}

#[test]
fn testfiles_dump_like_buildkit() {
    let cases = cases(&suite().join("testfiles"));
    assert_eq!(cases.len(), 33, "expected BuildKit's 33 parser testfiles");
    let mut failures = Vec::new();
    for (name, dir) in &cases {
        let expected = read(&dir.join("result"));
        match parse(&read(&dir.join("Dockerfile"))) {
            Ok(df) => {
                let got = df.dump() + "\n";
                if got != expected {
                    failures.push(format!("{name}:\n--- expected\n{expected}--- got\n{got}"));
                }
            }
            Err(e) => failures.push(format!("{name}: parse failed: {e}")),
        }
    }
    report("testfiles", cases.len(), &failures);
}

#[test]
fn testfiles_dump_through_kiln_debug_parse() {
    let env = harness::Env::new();
    let cases = cases(&suite().join("testfiles"));
    assert_eq!(cases.len(), 33, "expected BuildKit's 33 parser testfiles");
    let mut failures = Vec::new();
    for (name, dir) in &cases {
        let file = dir.join("Dockerfile");
        let out = env.run(&["debug", "parse", &file.to_string_lossy()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let expected = read(&dir.join("result"));
        if !out.status.success() {
            failures.push(format!(
                "{name}: kiln debug parse exited {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        } else if stdout != expected {
            failures.push(format!(
                "{name}:\n--- expected\n{expected}--- got\n{stdout}"
            ));
        }
    }
    report("testfiles via kiln debug parse", cases.len(), &failures);
}

#[test]
fn negative_testfiles_are_rejected() {
    let env = harness::Env::new();
    let cases = cases(&suite().join("testfiles-negative"));
    assert_eq!(cases.len(), 4, "expected BuildKit's 4 negative testfiles");
    let mut failures = Vec::new();
    for (name, dir) in &cases {
        let file = dir.join("Dockerfile");
        let err = match parse(&read(&file)) {
            Ok(df) => {
                failures.push(format!("{name}: accepted, dump:\n{}", df.dump()));
                continue;
            }
            Err(e) => e,
        };
        let out = env.run(&["debug", "parse", &file.to_string_lossy()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let want = format!(":{}: {}", err.line, err.kind);
        if out.status.code() != Some(1) || !stderr.contains(&want) {
            failures.push(format!(
                "{name}: kiln debug parse exited {:?}, stderr {stderr:?}, wanted exit 1 and {want:?}",
                out.status.code()
            ));
        }
    }
    report("testfiles-negative", cases.len(), &failures);
}

#[test]
fn negative_testfiles_name_buildkit_errors() {
    let dir = suite().join("testfiles-negative");
    let expect = [
        ("empty_dockerfile", ParseErrorKind::NoInstructions),
        ("env_no_value", ParseErrorKind::MissingValue("ENV")),
        ("only_comments", ParseErrorKind::NoInstructions),
        ("shykes-nested-json", ParseErrorKind::JsonNotStrings),
    ];
    let mut failures = Vec::new();
    for (name, kind) in &expect {
        match parse(&read(&dir.join(name).join("Dockerfile"))) {
            Err(e) if &e.kind == kind => {}
            other => failures.push(format!("{name}: wanted {kind:?}, got {other:?}")),
        }
    }
    report("testfiles-negative messages", expect.len(), &failures);
}

#[test]
fn testfile_line_numbers() {
    let dir = suite().join("testfile-line");
    let expected = json(&dir.join("expected.json"));
    let df = parse(&read(&dir.join("Dockerfile"))).expect("testfile-line parses");
    let children = expected["children"].as_array().expect("children");
    let mut failures = Vec::new();
    if df.instructions.len() != children.len() {
        failures.push(format!(
            "{} instructions, expected {}",
            df.instructions.len(),
            children.len()
        ));
    }
    for (i, (node, want)) in df.instructions.iter().zip(children).enumerate() {
        let got = (node.start_line, node.end_line, node.dump());
        let exp = (
            num_field(want, "start_line"),
            num_field(want, "end_line"),
            str_field(want, "dump").to_string(),
        );
        if got != exp {
            failures.push(format!("child {i}: got {got:?}, expected {exp:?}"));
        }
    }
    let root = (
        df.instructions.first().map(|n| n.start_line),
        df.instructions.last().map(|n| n.end_line),
    );
    let want_root = (
        Some(num_field(&expected, "root_start_line")),
        Some(num_field(&expected, "root_end_line")),
    );
    if root != want_root {
        failures.push(format!("root span {root:?}, expected {want_root:?}"));
    }
    report("testfile-line", children.len() + 1, &failures);
}

fn heredoc_json(h: &Heredoc, with_content: bool) -> Value {
    let mut v = serde_json::json!({
        "name": h.name,
        "fd": h.fd,
        "expand": h.expand,
        "chomp": h.chomp,
    });
    if with_content {
        v["content"] = Value::String(h.content.clone());
    }
    v
}

/// Compares a parsed file with an `expected.json` listing every instruction's line, dump and
/// heredocs.
fn check_heredoc_case(dir: &Path, failures: &mut Vec<String>) -> usize {
    let case = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let expected = json(&dir.join("expected.json"));
    let children = expected["children"].as_array().expect("children");
    let df = match parse(&read(&dir.join("Dockerfile"))) {
        Ok(df) => df,
        Err(e) => {
            failures.push(format!("{case}: parse failed: {e}"));
            return children.len();
        }
    };
    if df.instructions.len() != children.len() {
        failures.push(format!(
            "{case}: {} instructions, expected {}",
            df.instructions.len(),
            children.len()
        ));
    }
    for (node, want) in df.instructions.iter().zip(children) {
        let heredocs = if node.heredocs.is_empty() {
            Value::Null
        } else {
            Value::Array(
                node.heredocs
                    .iter()
                    .map(|h| heredoc_json(h, true))
                    .collect(),
            )
        };
        let mut got = serde_json::json!({
            "line": node.start_line,
            "dump": node.dump(),
            "heredocs": heredocs,
        });
        if want.get("end_line").is_some() {
            got["end_line"] = Value::from(node.end_line);
        }
        if &got != want {
            failures.push(format!("{case}: got {got}, expected {want}"));
        }
    }
    children.len()
}

#[test]
fn heredocs_are_extracted_like_buildkit() {
    let mut failures = Vec::new();
    let mut total = 0;
    for case in ["extracts-heredoc", "json-no-heredoc"] {
        total += check_heredoc_case(&suite().join("heredoc").join(case), &mut failures);
    }
    report("heredoc extraction", total, &failures);
}

#[test]
fn heredoc_helpers_match_buildkit() {
    let data = json(&suite().join("heredoc/heredoc-helpers.json"));
    let words = &data["parse_heredoc_word"];
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|s| s.as_str().expect("string").to_string())
            .collect()
    };
    let mut failures = Vec::new();
    let mut total = 0;
    for word in list(&words["valid_name_EOF"]) {
        total += 1;
        match heredoc::parse_heredoc(&word) {
            Ok(Some(h)) if h.name == "EOF" => {}
            other => failures.push(format!("{word:?}: wanted name EOF, got {other:?}")),
        }
    }
    for word in list(&words["error"]) {
        total += 1;
        if let Ok(got) = heredoc::parse_heredoc(&word) {
            failures.push(format!("{word:?}: wanted an error, got {got:?}"));
        }
    }
    for word in list(&words["not_heredoc"]) {
        total += 1;
        match heredoc::parse_heredoc(&word) {
            Ok(None) => {}
            other => failures.push(format!("{word:?}: wanted no heredoc, got {other:?}")),
        }
    }
    for want in words["valid_details"].as_array().expect("valid_details") {
        total += 1;
        let word = str_field(want, "word");
        let mut want = want.clone();
        if let Some(obj) = want.as_object_mut() {
            obj.remove("word");
        }
        match heredoc::parse_heredoc(word) {
            Ok(Some(h)) if heredoc_json(&h, false) == want => {}
            other => failures.push(format!("{word:?}: wanted {want}, got {other:?}")),
        }
    }
    for case in data["heredocs_from_line"]["cases"]
        .as_array()
        .expect("heredocs_from_line cases")
    {
        total += 1;
        let line = str_field(case, "line");
        match heredoc::heredocs_from_line(line) {
            Ok(docs) => {
                let got = Value::Array(docs.iter().map(|h| heredoc_json(h, false)).collect());
                if got != case["actual"] {
                    failures.push(format!("{line:?}: got {got}, expected {}", case["actual"]));
                }
            }
            Err(e) => failures.push(format!("{line:?}: {e}")),
        }
    }
    total += 1;
    let chomp = &data["chomp"];
    let got = heredoc::chomp(str_field(chomp, "input"));
    if got != str_field(chomp, "expected") {
        failures.push(format!(
            "chomp: got {got:?}, expected {}",
            chomp["expected"]
        ));
    }
    report("heredoc helpers", total, &failures);
}

#[test]
fn empty_continuation_lines_warn_once_per_instruction() {
    let dir = suite().join("parser-extra/empty-continuation-warnings");
    let expected = json(&dir.join("expected.json"));
    let df = parse(&read(&dir.join("Dockerfile"))).expect("parses");
    let mut failures = Vec::new();
    let got: Vec<&str> = df.warnings.iter().map(|w| w.message.as_str()).collect();
    let want: Vec<&str> = expected["warnings_short"]
        .as_array()
        .expect("warnings_short")
        .iter()
        .map(|w| w.as_str().expect("string"))
        .collect();
    if got != want {
        failures.push(format!("warnings {got:?}, expected {want:?}"));
    }
    if df.dump() != str_field(&expected, "dump") {
        failures.push(format!(
            "dump:\n{}\nexpected:\n{}",
            df.dump(),
            expected["dump"]
        ));
    }
    report("empty continuation warnings", 2, &failures);
}

#[test]
fn parse_words_splits_like_buildkit() {
    let data = json(&suite().join("parser-extra/parse-words.json"));
    let cases = data["cases"].as_array().expect("cases");
    let mut failures = Vec::new();
    for case in cases {
        let input = str_field(case, "input");
        let got = Value::from(parse_words(input, '\\'));
        if got != case["expected"] {
            failures.push(format!(
                "{input:?}: got {got}, expected {}",
                case["expected"]
            ));
        }
    }
    report("parse words", cases.len(), &failures);
}

#[test]
fn directives_are_read_like_buildkit() {
    let data = json(&suite().join("parser-extra/directives.json"));
    let mut failures = Vec::new();
    let mut total = 0;
    for case in data["parse_all"].as_array().expect("parse_all") {
        total += 1;
        let input = str_field(case, "input");
        match scan_directives(input) {
            Ok(found) => {
                let got: Value = found
                    .iter()
                    .map(|d| serde_json::json!({"name": d.name, "value": d.value}))
                    .collect();
                if got != case["directives"] {
                    failures.push(format!(
                        "{input:?}: got {got}, expected {}",
                        case["directives"]
                    ));
                }
            }
            Err(e) => failures.push(format!("{input:?}: {e}")),
        }
    }
    let detect_cases = [
        (
            "detect_syntax",
            data["detect_syntax"].as_array().expect("detect_syntax"),
        ),
        (
            "parse_directive_check",
            data["parse_directive_check"]
                .as_array()
                .expect("parse_directive_check"),
        ),
    ];
    for (family, list) in detect_cases {
        for case in list {
            total += 1;
            let mut input = str_field(case, "input").to_string();
            match case.get("input_hex_prefix").and_then(Value::as_str) {
                Some("efbbbf") => input.insert(0, '\u{feff}'),
                Some(other) => panic!("unexpected input_hex_prefix {other}"),
                None => {}
            }
            let found = if family == "detect_syntax" {
                detect_syntax(&input)
            } else {
                find_directive("check", &input)
            };
            let ok = case["ok"].as_bool().expect("ok");
            let mut problems = Vec::new();
            match (&found, ok) {
                (Some(f), true) => {
                    for (key, got) in [
                        ("ref", Value::from(f.reference.as_str())),
                        ("cmdline", Value::from(f.cmdline.as_str())),
                        ("line", Value::from(f.line)),
                    ] {
                        if case.get(key).is_some_and(|want| want != &got) {
                            problems.push(format!("{key} {got}, expected {}", case[key]));
                        }
                    }
                }
                (None, false) => {}
                _ => problems.push(format!("found {found:?}, expected ok={ok}")),
            }
            if !problems.is_empty() {
                failures.push(format!("{family} {input:?}: {}", problems.join("; ")));
            }
        }
    }
    report("directives", total, &failures);
}

#[test]
fn overlong_lines_are_rejected() {
    let data = json(&suite().join("parser-extra/line-too-long.json"));
    let input = format!("\n\t\tFROM image\n\t\tLABEL test={}\n", "a".repeat(65_536));
    match parse(&input) {
        Ok(_) => panic!("a 65547-byte line was accepted"),
        Err(e) => {
            assert_eq!(e.kind, ParseErrorKind::LineTooLong);
            assert_eq!(e.kind.to_string(), str_field(&data, "expected_error"));
            assert_eq!(e.line, 3);
        }
    }
    let longest = format!("FROM image\nLABEL test={}\n", "a".repeat(65_535 - 11));
    assert!(
        parse(&longest).is_ok(),
        "a 65535-byte line must be accepted"
    );
}
