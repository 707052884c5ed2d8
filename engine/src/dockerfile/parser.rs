//! The line layer and the per-instruction argument rules of BuildKit's Dockerfile parser
//! (`frontend/dockerfile/parser`): physical lines -> logical lines (BOM, directives, comments,
//! continuations, heredoc bodies) -> one [`Node`] per instruction.
//!
//! The rules are BuildKit's, quirks included, because they decide what a Dockerfile means:
//! continuation lines keep their leading blanks, `RUN x \\` is not a continuation, an unknown
//! instruction is not an error here (the typed layer rejects it), flags are split off byte by
//! byte. `shared/conformance/buildkit-parser/README.md` lists them; the conformance tests in
//! `tests/integration/conformance_parser.rs` hold this module to BuildKit's own test data.

use super::ast::{Directives, Dockerfile, Node, Warning};
use super::directives::DirectiveParser;
use super::error::{ParseError, ParseErrorKind};
use super::gocompat::{go_lower, is_go_space_byte};
use super::heredoc::heredocs_from_line;
use super::json::{parse_json_array, JsonArgs};

/// Go's `bufio.MaxScanTokenSize`: a physical line this long or longer is an error.
pub(crate) const MAX_LINE_BYTES: usize = 65_536;

/// How deep `ONBUILD ONBUILD …` may nest. BuildKit's parser has no limit but its next stage
/// rejects any nesting; the limit keeps the recursive node tree (and its dump) off the edge of
/// the stack on hostile input.
pub(crate) const MAX_ONBUILD_NESTING: usize = 64;

/// Parses Dockerfile text into its instructions (see [`super::parse`]).
pub(crate) fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let mut lines = Lines::new(text);
    let mut st = LineState {
        escape: '\\',
        directive_parser: DirectiveParser::new("#", 0),
        directives: Directives::default(),
    };
    let mut current = 0usize;
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    while let Some(raw) = lines.next_line() {
        let raw = if current == 0 {
            raw.strip_prefix('\u{feff}').unwrap_or(raw)
        } else {
            raw
        };
        let first = st.process_line(raw, true).map_err(|kind| ParseError {
            line: current + 1,
            kind,
        })?;
        current += 1;
        let start_line = current;
        let (first, mut end_of_line) = trim_continuation(first, st.escape);
        if end_of_line && first.is_empty() {
            continue;
        }
        let mut line = first.to_string();
        let mut empty_continuation = false;
        while !end_of_line {
            let Some(raw) = lines.next_line() else { break };
            let processed = st.process_line(raw, false).map_err(|kind| ParseError {
                line: current + 1,
                kind,
            })?;
            current += 1;
            if is_comment(raw) {
                continue;
            }
            if processed.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (part, eol) = trim_continuation(processed, st.escape);
            end_of_line = eol;
            line.push_str(part);
        }
        if empty_continuation {
            warnings.push(Warning {
                line: current,
                message: format!("Empty continuation line found in: {line}"),
            });
        }
        let mut node = node_from_line(&line, st.escape, 0).map_err(|kind| ParseError {
            line: start_line,
            kind,
        })?;
        if can_contain_heredoc(&node) && line.contains("<<") {
            let docs = heredocs_from_line(&line).map_err(|e| ParseError {
                line: start_line,
                kind: e.into(),
            })?;
            for mut doc in docs {
                let mut terminated = false;
                while let Some(raw) = lines.next_line() {
                    current += 1;
                    let mut candidate = raw.trim_end_matches(['\r', '\n']);
                    if doc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    doc.content.push_str(raw);
                }
                if !terminated {
                    return Err(ParseError {
                        line: start_line,
                        kind: ParseErrorKind::UnterminatedHeredoc,
                    });
                }
                node.heredocs.push(doc);
            }
        }
        set_lines(&mut node, start_line, current);
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(ParseError {
            line: current.max(1),
            kind: ParseErrorKind::NoInstructions,
        });
    }
    if let Some(line) = lines.too_long {
        return Err(ParseError {
            line,
            kind: ParseErrorKind::LineTooLong,
        });
    }
    Ok(Dockerfile {
        directives: st.directives,
        escape: st.escape,
        instructions: nodes,
        warnings,
    })
}

/// Physical lines with their line endings, stopping (as Go's `bufio.Scanner` does) at the
/// first line of [`MAX_LINE_BYTES`] or more.
struct Lines<'a> {
    rest: &'a str,
    line_no: usize,
    /// The 1-based number of the line that was too long, once one was met.
    too_long: Option<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            rest: text,
            line_no: 0,
            too_long: None,
        }
    }

    fn next_line(&mut self) -> Option<&'a str> {
        if self.too_long.is_some() || self.rest.is_empty() {
            return None;
        }
        let (end, content) = match self.rest.find('\n') {
            Some(i) => (i + 1, i),
            None => (self.rest.len(), self.rest.len()),
        };
        self.line_no += 1;
        if content >= MAX_LINE_BYTES {
            self.too_long = Some(self.line_no);
            return None;
        }
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(line)
    }
}

/// The escape character and directives, which change as the top of the file is read.
struct LineState {
    escape: char,
    directive_parser: DirectiveParser,
    directives: Directives,
}

impl LineState {
    /// BuildKit's `processLine`: drops the line ending (and, for the first line of an
    /// instruction, leading blanks), feeds the directive parser, and blanks out comments.
    fn process_line<'a>(
        &mut self,
        raw: &'a str,
        strip_left: bool,
    ) -> Result<&'a str, ParseErrorKind> {
        let mut token = raw.trim_end_matches(['\r', '\n']);
        if strip_left {
            token = token.trim_start();
        }
        if let Some(d) = self.directive_parser.parse_line(token)? {
            match d.name.as_str() {
                "escape" => {
                    self.escape = match d.value.as_str() {
                        "\\" => '\\',
                        "`" => '`',
                        _ => return Err(ParseErrorKind::InvalidEscapeToken(d.value)),
                    };
                    self.directives.escape = Some(self.escape);
                }
                "syntax" => self.directives.syntax = Some(d.value),
                _ => self.directives.check = Some(d.value),
            }
        }
        Ok(if is_comment(token) { "" } else { token })
    }
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Removes a line-continuation escape: BuildKit's regex ``([^\E])\E[ \t]*$|^\E[ \t]*$``
/// replaced by `$1`. Returns the line and whether the logical line ends here. A line ending in
/// two escape characters is not a continuation.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    let Some(before) = trimmed.strip_suffix(escape) else {
        return (line, true);
    };
    match before.chars().next_back() {
        None => ("", false),
        Some(c) if c != escape => (before, false),
        Some(_) => (line, true),
    }
}

fn set_lines(node: &mut Node, start: usize, end: usize) {
    node.start_line = start;
    node.end_line = end;
    let mut inner = node.onbuild.as_deref_mut();
    while let Some(n) = inner {
        n.start_line = start;
        n.end_line = end;
        inner = n.onbuild.as_deref_mut();
    }
}

/// RUN, COPY and ADD (also under ONBUILD) take heredocs, unless written as JSON.
fn can_contain_heredoc(node: &Node) -> bool {
    let node = match (&node.onbuild, node.keyword.as_str()) {
        (Some(inner), "onbuild") => inner,
        _ => node,
    };
    matches!(node.keyword.as_str(), "add" | "copy" | "run") && !node.json
}

/// The arguments of one instruction after its rule.
struct Args {
    args: Vec<String>,
    json: bool,
    onbuild: Option<Box<Node>>,
}

impl Args {
    fn plain(args: Vec<String>) -> Self {
        Self {
            args,
            json: false,
            onbuild: None,
        }
    }
}

/// BuildKit's `newNodeFromLine`: keyword, flags, then the instruction's argument rule.
fn node_from_line(line: &str, escape: char, depth: usize) -> Result<Node, ParseErrorKind> {
    let (raw_keyword, flags, rest) = split_command(line, escape);
    let keyword = go_lower(&raw_keyword);
    let Args {
        args,
        json,
        onbuild,
    } = match keyword.as_str() {
        "add" | "copy" | "volume" => maybe_json_to_list(&rest)?,
        "cmd" | "entrypoint" | "run" | "shell" => maybe_json(&rest)?,
        "arg" => Args::plain(parse_words(&rest, escape)),
        "env" => Args::plain(name_val(&rest, "ENV", escape)?),
        "label" => Args::plain(name_val(&rest, "LABEL", escape)?),
        "expose" | "from" => Args::plain(split_whitespace(&rest)),
        "healthcheck" => health_config(&rest)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            Args::plain(if rest.is_empty() { vec![] } else { vec![rest] })
        }
        "onbuild" => {
            if rest.is_empty() {
                Args::plain(vec![])
            } else if depth >= MAX_ONBUILD_NESTING {
                return Err(ParseErrorKind::OnbuildTooDeep);
            } else {
                Args {
                    args: vec![],
                    json: false,
                    onbuild: Some(Box::new(node_from_line(&rest, escape, depth + 1)?)),
                }
            }
        }
        // BuildKit keeps unknown instructions with one empty argument; the typed layer
        // rejects them.
        _ => Args::plain(vec![String::new()]),
    };
    Ok(Node {
        keyword,
        raw_keyword,
        flags,
        args,
        onbuild,
        json,
        heredocs: Vec::new(),
        original: line.to_string(),
        start_line: 0,
        end_line: 0,
    })
}

/// The ASCII blanks of BuildKit's `[\t\v\f\r ]+`.
fn is_blank(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// BuildKit's `splitCommand`: the keyword, the `--flags`, and the trimmed argument text.
fn split_command(line: &str, escape: char) -> (String, Vec<String>, String) {
    let line = line.trim();
    match line.find(is_blank) {
        None => (line.to_string(), Vec::new(), String::new()),
        Some(i) => {
            let (rest, flags) = extract_flags(line[i..].trim_start_matches(is_blank), escape);
            (line[..i].to_string(), flags, rest.trim().to_string())
        }
    }
}

/// BuildKit's `extractBuilderFlags`: reads the words that start with `--` (quotes removed, the
/// escape character escaping the next byte) up to the first word that does not; a lone `--`
/// ends the flags. Returns the rest of the line and the flags.
///
/// Note to maintainers: BuildKit walks bytes, not characters, here. Bytes 0x85 and 0xA0 count
/// as blanks and each byte of a flag becomes one character (Latin-1), so `--chown=José`
/// reaches the builder as `--chown=JosÃ©`. kiln does the same so that it means what
/// `docker build` means.
fn extract_flags(line: &str, escape: char) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let b = line.as_bytes();
    let esc = u8::try_from(escape).unwrap_or(b'\\');
    let rest = |pos: usize| String::from_utf8_lossy(&b[pos..]).into_owned();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut phase = Phase::Spaces;
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= b.len() {
        let ch = b.get(pos).copied();
        if phase == Phase::Spaces {
            let Some(c) = ch else { break };
            if is_go_space_byte(c) {
                pos += 1;
                continue;
            }
            if c != b'-' || b.get(pos + 1) != Some(&b'-') {
                return (rest(pos), words);
            }
            phase = Phase::Word;
        }
        let Some(mut c) = ch else {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        };
        if phase == Phase::Word {
            if is_go_space_byte(c) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (rest(pos), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if c == b'\'' || c == b'"' {
                quote = c;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            if c == esc {
                if pos + 1 == b.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = b[pos];
            }
            word.push(char::from(c));
            pos += 1;
            continue;
        }
        // In quotes.
        if c == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        if c == esc {
            if pos + 1 == b.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = b[pos];
        }
        word.push(char::from(c));
        pos += 1;
    }
    (String::new(), words)
}

/// BuildKit's `parseWords`, used for ENV, LABEL and ARG: splits on whitespace outside quotes,
/// keeping quotes and escapes in the words (the builder removes them when it expands
/// variables). Inside `'…'` the escape character is literal; a lone escape character at the
/// very end is dropped.
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let cs: Vec<char> = rest.chars().collect();
    let n = cs.len();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= n {
        if phase == Phase::Spaces {
            let Some(&c) = cs.get(pos) else { break };
            if c.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        let Some(&c) = cs.get(pos) else {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        };
        if phase == Phase::Word {
            if c.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if c == '\'' || c == '"' {
                quote = c;
                blank_ok = true;
                phase = Phase::Quote;
            }
            let mut c = c;
            if c == escape {
                if pos + 1 == n {
                    pos += 1;
                    continue;
                }
                word.push(c);
                pos += 1;
                c = cs[pos];
            }
            word.push(c);
            pos += 1;
            continue;
        }
        // In quotes.
        if c == quote {
            phase = Phase::Word;
        }
        let mut c = c;
        if c == escape && quote != '\'' {
            if pos + 1 == n {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            word.push(c);
            c = cs[pos];
        }
        word.push(c);
        pos += 1;
    }
    words
}

/// BuildKit's `parseNameVal` for ENV and LABEL: `key value…` (legacy form: key, the rest
/// verbatim, `""`) or `k=v …` (each word gives k, v, `"="`).
fn name_val(
    rest: &str,
    instruction: &'static str,
    escape: char,
) -> Result<Vec<String>, ParseErrorKind> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(vec![]);
    };
    if !first.contains('=') {
        let Some(i) = rest.find(is_blank) else {
            return Err(ParseErrorKind::MissingValue(instruction));
        };
        let value = rest[i..].trim_start_matches(is_blank);
        return Ok(vec![
            rest[..i].to_string(),
            value.to_string(),
            String::new(),
        ]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(ParseErrorKind::MissingEquals(word));
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(out)
}

/// BuildKit's `parseStringsWhitespaceDelimited` (FROM, EXPOSE, and non-JSON ADD/COPY/VOLUME).
fn split_whitespace(rest: &str) -> Vec<String> {
    rest.split(is_blank)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// BuildKit's `parseMaybeJSON` (RUN, CMD, ENTRYPOINT, SHELL): a JSON array of strings, or the
/// whole text as one argument.
fn maybe_json(rest: &str) -> Result<Args, ParseErrorKind> {
    if rest.is_empty() {
        return Ok(Args::plain(vec![]));
    }
    match parse_json_array(rest) {
        JsonArgs::Strings(args) => Ok(Args {
            args,
            json: true,
            onbuild: None,
        }),
        JsonArgs::NotAllStrings => Err(ParseErrorKind::JsonNotStrings),
        JsonArgs::NotJson => Ok(Args::plain(vec![rest.to_string()])),
    }
}

/// BuildKit's `parseMaybeJSONToList` (ADD, COPY, VOLUME): a JSON array of strings, or the
/// whitespace-separated words.
fn maybe_json_to_list(rest: &str) -> Result<Args, ParseErrorKind> {
    match parse_json_array(rest) {
        JsonArgs::Strings(args) => Ok(Args {
            args,
            json: true,
            onbuild: None,
        }),
        JsonArgs::NotAllStrings => Err(ParseErrorKind::JsonNotStrings),
        JsonArgs::NotJson => Ok(Args::plain(split_whitespace(rest))),
    }
}

/// BuildKit's `parseHealthConfig`: the first word (`CMD`, `NONE`, …) then the RUN rule.
fn health_config(rest: &str) -> Result<Args, ParseErrorKind> {
    let b = rest.as_bytes();
    let sep = b
        .iter()
        .position(|&c| is_go_space_byte(c))
        .unwrap_or(b.len());
    if sep == 0 {
        return Ok(Args::plain(vec![]));
    }
    let next = b[sep..]
        .iter()
        .position(|&c| !is_go_space_byte(c))
        .map_or(b.len(), |i| sep + i);
    let typ = String::from_utf8_lossy(&b[..sep]).into_owned();
    let cmd = maybe_json(&String::from_utf8_lossy(&b[next..]))?;
    let mut args = Vec::with_capacity(cmd.args.len() + 1);
    args.push(typ);
    args.extend(cmd.args);
    Ok(Args {
        args,
        json: cmd.json,
        onbuild: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_regex() {
        assert_eq!(trim_continuation("RUN a \\", '\\'), ("RUN a ", false));
        assert_eq!(trim_continuation("RUN a\\ \t ", '\\'), ("RUN a", false));
        assert_eq!(trim_continuation("\\  ", '\\'), ("", false));
        assert_eq!(trim_continuation("RUN x \\\\", '\\'), ("RUN x \\\\", true));
        assert_eq!(trim_continuation("RUN a `", '`'), ("RUN a ", false));
        assert_eq!(trim_continuation("RUN a \\", '`'), ("RUN a \\", true));
    }

    #[test]
    fn flags_are_split_off_like_buildkit() {
        let (rest, flags) = extract_flags("--a=\"x y\" --b=c\\ d -- --e f", '\\');
        assert_eq!(flags, ["--a=x y", "--b=c d"]);
        assert_eq!(rest, " --e f");
        let (rest, flags) = extract_flags("--chown=Jos\u{e9} x", '\\');
        assert_eq!(flags, ["--chown=Jos\u{c3}\u{a9}"]);
        assert_eq!(rest, "x");
        let (rest, flags) = extract_flags("--x", '\\');
        assert_eq!(
            (rest.as_str(), flags.as_slice()),
            ("", ["--x".to_string()].as_slice())
        );
    }

    #[test]
    fn onbuild_nesting_is_bounded() {
        let deep = "ONBUILD ".repeat(MAX_ONBUILD_NESTING + 2) + "RUN x";
        assert_eq!(
            parse(&deep).unwrap_err().kind,
            ParseErrorKind::OnbuildTooDeep
        );
        let ok = "ONBUILD ".repeat(3) + "RUN x";
        assert_eq!(
            parse(&ok).unwrap().dump(),
            "(onbuild (onbuild (onbuild (run \"x\"))))"
        );
    }

    #[test]
    fn line_limit_counts_bytes_before_the_newline() {
        let ok = format!("FROM {}\n", "a".repeat(MAX_LINE_BYTES - 6));
        assert!(parse(&ok).is_ok());
        let long = format!("FROM x\nLABEL a={}\n", "a".repeat(MAX_LINE_BYTES));
        let err = parse(&long).unwrap_err();
        assert_eq!((err.line, err.kind), (2, ParseErrorKind::LineTooLong));
    }

    #[test]
    fn readme_rules() {
        // Two or more escapes at the end of a line are not a continuation.
        assert_eq!(
            parse("RUN y \\\\\\\nRUN z\n").unwrap().dump(),
            "(run \"y \\\\\\\\\\\\\")\n(run \"z\")"
        );
        // BOM, CRLF, comments inside continuations, unknown instructions.
        let df = parse("\u{feff}FROM a\r\nRUN x \\\r\n  # note\r\n  y\r\nFOO bar baz\r\n").unwrap();
        assert_eq!(df.dump(), "(from \"a\")\n(run \"x   y\")\n(foo \"\")");
        assert_eq!(
            (df.instructions[1].start_line, df.instructions[1].end_line),
            (2, 4)
        );
        assert_eq!(df.instructions[2].raw_keyword, "FOO");
        assert!(df.warnings.is_empty());
    }

    #[test]
    fn directives_and_their_errors() {
        let df = parse(
            "# syntax=docker/dockerfile:1\n# escape=`\n# check=skip=all\nFROM a\nRUN b `\n c\n",
        )
        .unwrap();
        assert_eq!(df.escape, '`');
        assert_eq!(df.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(df.directives.check.as_deref(), Some("skip=all"));
        assert_eq!(df.dump(), "(from \"a\")\n(run \"b  c\")");
        let err = parse("# escape=`\n# ESCAPE=\\\nFROM a\n").unwrap_err();
        assert_eq!(
            (err.line, err.kind.to_string()),
            (2, "only one escape parser directive can be used".into())
        );
        let err = parse("# escape=x\nFROM a\n").unwrap_err();
        assert_eq!(err.kind, ParseErrorKind::InvalidEscapeToken("x".into()));
        // A directive after anything else is a comment.
        assert_eq!(parse("# hi\n# escape=`\nFROM a\n").unwrap().escape, '\\');
    }

    #[test]
    fn heredoc_errors_and_onbuild_heredocs() {
        let err = parse("FROM a\nRUN <<EOF\necho\n").unwrap_err();
        assert_eq!(
            (err.line, err.kind),
            (2, ParseErrorKind::UnterminatedHeredoc)
        );
        let df = parse("FROM a\nONBUILD RUN <<EOF\nx\nEOF\nCOPY [\"<<EOF\", \"/d\"]\n").unwrap();
        assert_eq!(df.instructions[1].heredocs.len(), 1);
        assert_eq!(df.instructions[1].heredocs[0].content, "x\n");
        assert_eq!(df.instructions[1].end_line, 4);
        assert!(df.instructions[2].heredocs.is_empty());
        // A line that does not lex has no heredocs (BuildKit ignores that error).
        let df = parse("FROM a\nRUN <<\"EOF\n").unwrap();
        assert!(df.instructions[1].heredocs.is_empty());
    }

    #[test]
    fn argument_errors() {
        assert_eq!(
            parse("LABEL a").unwrap_err().kind,
            ParseErrorKind::MissingValue("LABEL")
        );
        assert_eq!(
            parse("ENV a=1 b").unwrap_err().kind.to_string(),
            "syntax error - can't find = in \"b\". Must be of the form: name=value"
        );
        assert_eq!(
            parse("RUN [\"a\", 1]").unwrap_err().kind,
            ParseErrorKind::JsonNotStrings
        );
        assert_eq!(
            parse("RUN [\"a\", 1e999]").unwrap().dump(),
            "(run \"[\\\"a\\\", 1e999]\")"
        );
        assert_eq!(
            parse("").unwrap_err(),
            ParseError {
                line: 1,
                kind: ParseErrorKind::NoInstructions
            }
        );
    }

    #[test]
    fn lone_continuation_gives_an_empty_instruction() {
        assert_eq!(parse("\\\n").unwrap().dump(), "(\"\")");
    }
}
