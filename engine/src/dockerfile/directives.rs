//! Parser directives: `# syntax=…`, `# escape=…`, `# check=…` at the very top of a
//! Dockerfile (BuildKit's `parser/directives.go`).
//!
//! A directive is a comment matching `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` after the
//! comment marker. Scanning stops at the first line that is not one (a blank line, an
//! instruction, another comment, an unknown key); a repeated key is an error.

use super::error::{ParseError, ParseErrorKind};

/// One directive line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The key, lowercased: `syntax`, `escape` or `check`.
    pub name: String,
    /// The value, trimmed.
    pub value: String,
    /// 1-based line.
    pub line: usize,
}

/// A directive found by [`detect_syntax`] or [`find_directive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundDirective {
    /// The value up to its first space (the frontend image for `syntax`).
    pub reference: String,
    /// The whole value.
    pub cmdline: String,
    /// 1-based line (0 for a JSON document's `syntax` key without a shebang line).
    pub line: usize,
}

/// The directive scanner, fed one line at a time; shared by the parser and the functions here.
pub(crate) struct DirectiveParser {
    comment: &'static str,
    line: usize,
    seen: Vec<String>,
    done: bool,
}

impl DirectiveParser {
    /// A scanner for directives behind `comment` (`#`, or `//` for syntax detection), counting
    /// lines from `first_line + 1`.
    pub(crate) fn new(comment: &'static str, first_line: usize) -> Self {
        Self {
            comment,
            line: first_line,
            seen: Vec::new(),
            done: false,
        }
    }

    /// BuildKit's `DirectiveParser.ParseLine`.
    pub(crate) fn parse_line(&mut self, line: &str) -> Result<Option<Directive>, ParseErrorKind> {
        self.line += 1;
        if self.done {
            return Ok(None);
        }
        let Some((key, value)) = line
            .strip_prefix(self.comment)
            .and_then(|rest| match_directive(rest.trim_start()))
        else {
            self.done = true;
            return Ok(None);
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(None);
        }
        if self.seen.contains(&key) {
            return Err(ParseErrorKind::DuplicateDirective(key));
        }
        self.seen.push(key.clone());
        Ok(Some(Directive {
            name: key,
            value: value.to_string(),
            line: self.line,
        }))
    }

    /// BuildKit's `ParseAll`: the directives at the top of `text`.
    fn parse_all(&mut self, text: &str) -> Result<Vec<Directive>, ParseError> {
        let mut found = Vec::new();
        for line in text.lines() {
            if self.done {
                break;
            }
            let d = self.parse_line(line).map_err(|kind| ParseError {
                line: self.line,
                kind,
            })?;
            found.extend(d);
        }
        Ok(found)
    }
}

/// Go's `\s`: `[\t\n\f\r ]`.
fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

/// `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` on the text after the comment marker.
fn match_directive(s: &str) -> Option<(&str, &str)> {
    if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let key_len = s
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(s.len());
    let (key, rest) = s.split_at(key_len);
    let rest = rest.trim_start_matches(is_re_space).strip_prefix('=')?;
    if rest.is_empty() || rest.contains('\n') {
        return None;
    }
    let value = rest
        .trim_start_matches(is_re_space)
        .trim_end_matches(is_re_space);
    if value.is_empty() {
        // All blanks: the lazy `(.+?)` still takes the last one.
        return Some((key, &rest[rest.len() - 1..]));
    }
    Some((key, value))
}

/// The directives at the top of `text` (BuildKit's `DirectiveParser.ParseAll`), for tools
/// that want them without parsing the instructions.
pub fn scan_directives(text: &str) -> Result<Vec<Directive>, ParseError> {
    DirectiveParser::new("#", 0).parse_all(text)
}

/// BuildKit's `DetectSyntax`: the `syntax` directive, also in the `// syntax=` form or as the
/// `syntax` key of a whole-file JSON object; a UTF-8 BOM and a `#!` first line are skipped.
pub fn detect_syntax(text: &str) -> Option<FoundDirective> {
    detect("syntax", text, true)
}

/// BuildKit's `ParseDirective`: the directive `key` in its `#` form only.
pub fn find_directive(key: &str, text: &str) -> Option<FoundDirective> {
    detect(key, text, false)
}

fn detect(key: &str, text: &str, any_format: bool) -> Option<FoundDirective> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let (text, first_line) = if first.starts_with("#!") {
        (rest, 1)
    } else {
        (text, 0)
    };
    let from_comments = |comment| {
        let directives = DirectiveParser::new(comment, first_line)
            .parse_all(text)
            .unwrap_or_default();
        directives
            .into_iter()
            .find(|d| d.name == key)
            .map(|d| FoundDirective {
                reference: d.value.split(' ').next().unwrap_or_default().to_string(),
                cmdline: d.value,
                line: d.line,
            })
    };
    if let Some(found) = from_comments("#") {
        return Some(found);
    }
    if !any_format {
        return None;
    }
    if let Some(found) = from_comments("//") {
        return Some(found);
    }
    let doc: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    let value = doc.get(key)?.as_str()?;
    Some(FoundDirective {
        reference: value.to_string(),
        cmdline: value.to_string(),
        line: first_line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_regex() {
        assert_eq!(match_directive("escape=`"), Some(("escape", "`")));
        assert_eq!(match_directive("key = FOO bar  "), Some(("key", "FOO bar")));
        assert_eq!(match_directive("k=  "), Some(("k", " ")));
        assert_eq!(match_directive("k="), None);
        assert_eq!(match_directive("1k=v"), None);
        assert_eq!(match_directive("k v"), None);
    }

    #[test]
    fn repeated_directives_are_errors() {
        let err = scan_directives("# syntax=a\n# syntax=b\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(
            err.kind.to_string(),
            "only one syntax parser directive can be used"
        );
    }
}
