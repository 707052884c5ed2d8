//! moby/patternmatcher's test tables (`shared/conformance/patternmatcher/cases.json`) run against
//! `kiln::ignore`. Every section is checked and all failures are reported in one assertion.
//!
//! Upstream runs `single_pattern` through four APIs; the two deprecated ones
//! (`Matches`, `MatchesUsingParentResult`) have no kiln equivalent, so each case runs through
//! `matches_or_parent_matches` and `matches_using_parent_results` (parents walked top-down, and
//! with no parent information). The `filepath_match` table, which upstream feeds to the deprecated
//! `Matches`, runs through `matches_or_parent_matches`, and its error cases through `glob_match`.

use kiln::ignore::{glob_match, read_ignore_file, IgnoreError, MatchInfo, PatternMatcher};
use serde_json::Value;

use crate::harness;

fn cases() -> Value {
    let path = harness::conformance_dir().join("patternmatcher/cases.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn section<'a>(all: &'a Value, name: &str) -> &'a [Value] {
    all[name]
        .as_array()
        .unwrap_or_else(|| panic!("cases.json: section {name} is not a list"))
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a list of strings, got {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect()
}

fn str_field<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("case {case}: missing string {key}"))
}

/// Walks `path`'s parent directories top-down with `matches_using_parent_results`, as
/// upstream's test does, then matches `path` with the last parent's results.
fn match_walking_parents(pm: &PatternMatcher, path: &str) -> Result<bool, IgnoreError> {
    let parent = match path.rfind('/') {
        Some(i) => kiln::ignore::clean(&path[..=i]).into_owned(),
        None => ".".to_owned(),
    };
    let mut info = MatchInfo::default();
    if parent != "." {
        let mut prefixes: Vec<&str> = parent
            .match_indices('/')
            .map(|(i, _)| &parent[..i])
            .collect();
        prefixes.push(&parent);
        for prefix in prefixes {
            let mut next = MatchInfo::default();
            pm.matches_using_parent_results(prefix, &info, &mut next)?;
            info = next;
        }
    }
    let mut out = MatchInfo::default();
    pm.matches_using_parent_results(path, &info, &mut out)
}

#[test]
fn patternmatcher_conformance() {
    let all = cases();
    let mut failures = Vec::new();
    let mut checks = 0;

    for case in section(&all, "single_pattern") {
        checks += 1;
        let pattern = str_field(case, "pattern");
        let path = str_field(case, "path");
        let expected = case["expected"].as_bool();
        let pm = match PatternMatcher::new(&[pattern]) {
            Ok(pm) => pm,
            Err(e) => {
                failures.push(format!("single_pattern {pattern:?}: new failed: {e}"));
                continue;
            }
        };
        let results = [
            (
                "matches_or_parent_matches",
                pm.matches_or_parent_matches(path),
            ),
            (
                "using_parent_results (walked)",
                match_walking_parents(&pm, path),
            ),
            (
                "using_parent_results (no info)",
                pm.matches_using_parent_results(
                    path,
                    &MatchInfo::default(),
                    &mut MatchInfo::default(),
                ),
            ),
        ];
        for (api, got) in results {
            if got.as_ref().ok().copied() != expected {
                failures.push(format!(
                    "single_pattern {pattern:?} on {path:?} via {api}: expected {expected:?}, got {got:?}"
                ));
            }
        }
    }

    for name in ["multi_pattern", "simple"] {
        for case in section(&all, name) {
            checks += 1;
            let patterns = string_list(&case["patterns"]);
            let path = str_field(case, "path");
            let got = PatternMatcher::new(&patterns).and_then(|pm| {
                let first = pm.matches_or_parent_matches(path);
                // The malformed-pattern case must fail again, not panic, on a repeated call.
                let second = pm.matches_or_parent_matches(path);
                if first != second {
                    failures.push(format!(
                        "{name} {patterns:?}: second call gave {second:?}, first {first:?}"
                    ));
                }
                first
            });
            let ok = match (case.get("expected_error"), case["expected"].as_bool(), &got) {
                (Some(_), _, Err(IgnoreError::IllegalExclusion)) => {
                    got.as_ref().err().map(ToString::to_string).as_deref()
                        == case["expected_error"].as_str()
                }
                (Some(_), _, Err(IgnoreError::BadPattern(_))) => true,
                (Some(_), _, _) => false,
                (None, Some(want), Ok(have)) => want == *have,
                (None, _, _) => false,
            };
            if !ok {
                failures.push(format!(
                    "{name} {patterns:?} on {path:?}: case {case}, got {got:?}"
                ));
            }
        }
    }

    for case in section(&all, "filepath_match") {
        checks += 1;
        let pattern = str_field(case, "pattern");
        let path = str_field(case, "path");
        let got = PatternMatcher::new(&[pattern]).and_then(|pm| pm.matches_or_parent_matches(path));
        let ok = if case.get("expected_error").is_some() {
            matches!(got, Err(IgnoreError::BadPattern(_))) && glob_match(pattern, path).is_err()
        } else {
            got.as_ref().ok().copied() == case["expected"].as_bool()
        };
        if !ok {
            failures.push(format!(
                "filepath_match {pattern:?} on {path:?}: case {case}, got {got:?}"
            ));
        }
    }

    for case in section(&all, "clean_patterns") {
        checks += 1;
        let patterns = string_list(&case["patterns"]);
        let got = PatternMatcher::new(&patterns);
        let ok = match (&got, case.get("expected_error")) {
            (Err(IgnoreError::IllegalExclusion), Some(_)) => true,
            (Ok(pm), None) => {
                let count_ok = case
                    .get("cleaned_count")
                    .and_then(Value::as_u64)
                    .is_none_or(|n| Some(pm.len()) == usize::try_from(n).ok());
                count_ok && Some(pm.has_exclusions()) == case["exclusions"].as_bool()
            }
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "clean_patterns {patterns:?}: case {case}, got {got:?}"
            ));
        }
    }

    let readall = &all["ignorefile_readall"];
    checks += 1;
    let got = read_ignore_file(str_field(readall, "input"));
    let want = string_list(&readall["expected"]);
    if got != want {
        failures.push(format!(
            "ignorefile_readall: expected {want:?}, got {got:?}"
        ));
    }

    assert!(
        checks >= 139,
        "cases.json holds only {checks} checks, expected at least 139"
    );
    assert!(
        failures.is_empty(),
        "{} of {checks} patternmatcher checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
