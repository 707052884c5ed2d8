//! Heredoc recognition (`RUN <<EOF`, `COPY <<-'A' <<B /dest`), as BuildKit's parser does it.
//!
//! BuildKit splits an instruction line into words with its shell lexer (raw quotes, raw
//! escapes, unset variables left as written, always `\` as the escape) and matches each word
//! against `^(\d*)<<(-?)\s*([^<]*)$`; the delimiter is then lexed again with and without quotes
//! to learn its name and whether any part was quoted (a quoted delimiter turns off expansion in
//! the body). The lexer here is that lexer restricted to an empty environment, which is all
//! heredoc detection needs; variable expansion proper lives with the planner.
//!
//! Note to maintainers: the quirks are deliberate. Nested `${…}` processing resets the word
//! being built (BuildKit shares one buffer), `\x` inside double quotes with raw escapes keeps
//! the backslash twice, and `<<` swallows the blanks after it into the same word (so
//! `RUN << EOF` finds `EOF` while `RUN <<- EOF` finds nothing). Every one of them changes which
//! heredocs a Dockerfile has.

use super::ast::Heredoc;
use super::gocompat::{go_quote, is_go_digit, is_go_letter, parse_uint, NumError};

/// BuildKit's heredoc lexer always uses `\`, whatever `# escape=` says.
const ESCAPE: char = '\\';

/// How deep `${…}` and quotes may nest before the lexer gives up (BuildKit has no limit; this
/// one keeps hostile input from exhausting the stack and is far beyond any real Dockerfile).
const MAX_NESTING: usize = 128;

/// A shell-lexing failure, with BuildKit's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    /// `'` without its closing quote.
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    /// `"` without its closing quote.
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    /// The text ended inside `${…}` before the given character.
    #[error("unexpected end of statement while looking for matching {0}")]
    UnexpectedEnd(char),
    /// `${` without `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${}`, `${:…}` and the like.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// `${a!b}`, `${a:#b}`: a modifier the lexer does not support.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${a/b` without the second `/`.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// Deeper nesting than [`MAX_NESTING`].
    #[error("variable substitutions and quotes nested more than {MAX_NESTING} levels deep")]
    TooDeep,
}

/// A heredoc delimiter that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeredocError {
    /// The delimiter does not lex (an unterminated quote, say).
    #[error("failed to process {}: {source}", go_quote(.word))]
    Lex {
        /// The delimiter text after `<<`.
        word: String,
        /// Why lexing failed.
        source: LexError,
    },
    /// Lexing with and without quotes gave different word counts.
    #[error("internal lexing of heredoc produced inconsistent results: {word}")]
    Inconsistent {
        /// The delimiter text after `<<`.
        word: String,
    },
}

/// BuildKit's `ParseHeredoc`: reads one word such as `<<EOF`, `3<<-'END'` or `<< "A B"`.
///
/// `Ok(None)` when the word is not a heredoc (`<<`, `<EOF`, `<<EOF sh`); the returned heredoc
/// has empty content.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, HeredocError> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(rest) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    // Go's `\s` is [\t\n\f\r ].
    let rest = rest.trim_start_matches(['\t', '\n', '\x0c', '\r', ' ']);
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    // As Go's `strconv.ParseUint(…, 10, 0)` with the error ignored: empty gives 0, too
    // large gives the maximum.
    let fd = match parse_uint(&word[..digits], 10, 64) {
        Ok(v) => u32::try_from(v).unwrap_or(u32::MAX),
        Err(NumError::Range) => u32::MAX,
        Err(NumError::Syntax) => 0,
    };
    let lex_err = |source| HeredocError::Lex {
        word: rest.to_string(),
        source,
    };
    let words = Lexer::new(rest, false, false)
        .process_words()
        .map_err(lex_err)?;
    let Ok([name]) = <[String; 1]>::try_from(words) else {
        return Ok(None);
    };
    let raw = Lexer::new(rest, true, false)
        .process_words()
        .map_err(lex_err)?;
    let [raw_name] = <[String; 1]>::try_from(raw).map_err(|_| HeredocError::Inconsistent {
        word: rest.to_string(),
    })?;
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    Ok(Some(Heredoc {
        expand: quotes(&name) == quotes(&raw_name),
        name,
        fd,
        chomp,
        content: String::new(),
    }))
}

/// BuildKit's `heredocsFromLine`: the heredocs an instruction line opens, in order (contents
/// empty; the parser reads them from the lines that follow).
pub fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, HeredocError> {
    // A line that does not lex has no heredocs (BuildKit ignores this error).
    let words = Lexer::new(line, true, true)
        .process_words()
        .unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// BuildKit's `ChompHeredocContent`: removes the leading tabs of every line (for `<<-`).
pub fn chomp(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    let mut at_line_start = true;
    for c in content.chars() {
        if at_line_start && c == '\t' {
            continue;
        }
        at_line_start = c == '\n';
        out.push(c);
    }
    out
}

/// Words being built. The buffer for the current word lives in [`Lexer::word_buf`], because
/// BuildKit shares it between nested calls.
#[derive(Default)]
struct Words {
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char, buf: &mut String) {
        if ch.is_whitespace() {
            if self.in_word && !buf.is_empty() {
                self.words.push(std::mem::take(buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch, buf);
        }
    }

    fn add_raw_char(&mut self, ch: char, buf: &mut String) {
        buf.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str, buf: &mut String) {
        for ch in s.chars() {
            self.add_char(ch, buf);
        }
    }

    fn add_raw_string(&mut self, s: &str, buf: &mut String) {
        buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self, buf: &mut String) -> Vec<String> {
        if !buf.is_empty() {
            self.words.push(std::mem::take(buf));
        }
        self.words
    }
}

/// BuildKit's shell lexer over an empty environment with `SkipUnsetEnv`.
struct Lexer {
    chars: Vec<char>,
    pos: usize,
    raw_quotes: bool,
    raw_escapes: bool,
    word_buf: String,
    depth: usize,
}

impl Lexer {
    fn new(src: &str, raw_quotes: bool, raw_escapes: bool) -> Self {
        let mut chars: Vec<char> = src.chars().collect();
        // Go's text/scanner skips a byte-order mark at the very start.
        if chars.first() == Some(&'\u{feff}') {
            chars.remove(0);
        }
        Self {
            chars,
            pos: 0,
            raw_quotes,
            raw_escapes,
            word_buf: String::new(),
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// `ProcessWords`: the words of the whole text.
    fn process_words(mut self) -> Result<Vec<String>, LexError> {
        let raw = self.raw_escapes;
        self.stop_on(None, raw).map(|(_, words)| words)
    }

    /// `processStopOn`: reads up to `stop` (or the end), returning the text and its words.
    fn stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), LexError> {
        if self.depth >= MAX_NESTING {
            return Err(LexError::TooDeep);
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        result
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), LexError> {
        let mut result = String::new();
        self.word_buf.clear();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.pos += 1;
                return Ok((result, words.finish(&mut self.word_buf)));
            }
            match ch {
                '$' => {
                    let tmp = self.dollar()?;
                    result.push_str(&tmp);
                    words.add_string(&tmp, &mut self.word_buf);
                }
                '<' | '\'' | '"' => {
                    let tmp = match ch {
                        '<' => self.possible_heredoc(),
                        '\'' => self.single_quote()?,
                        _ => self.double_quote()?,
                    };
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp, &mut self.word_buf);
                }
                _ => {
                    self.pos += 1;
                    if ch == ESCAPE {
                        if self.raw_escapes {
                            words.add_raw_char(ch, &mut self.word_buf);
                            result.push(ch);
                        }
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped, &mut self.word_buf);
                        result.push(escaped);
                    } else {
                        words.add_char(ch, &mut self.word_buf);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(c) = stop {
            return Err(LexError::UnexpectedEnd(c));
        }
        Ok((result, words.finish(&mut self.word_buf)))
    }

    fn single_quote(&mut self) -> Result<String, LexError> {
        self.pos += 1;
        let mut out = String::new();
        if self.raw_quotes {
            out.push('\'');
        }
        loop {
            match self.next() {
                None => return Err(LexError::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, LexError> {
        self.pos += 1;
        let mut out = String::new();
        if self.raw_quotes {
            out.push('"');
        }
        loop {
            match self.peek() {
                None => return Err(LexError::UnterminatedDoubleQuote),
                Some('"') => {
                    self.pos += 1;
                    if self.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    out.push_str(&value);
                }
                Some(c) => {
                    self.pos += 1;
                    let mut ch = c;
                    if ch == ESCAPE {
                        if self.raw_escapes {
                            out.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(e @ ('"' | '$' | ESCAPE)) => {
                                self.pos += 1;
                                ch = e;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    /// `processDollar` with every variable unset and left as written.
    fn dollar(&mut self) -> Result<String, LexError> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            return Ok(format!("${name}"));
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(LexError::MissingBrace),
            Some('{' | '}' | ':') => return Err(LexError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.name();
        let ch = self.next();
        let mut chs = rune_string(ch);
        match ch {
            Some('}') => Ok(format!("${{{name}}}")),
            Some(':') => {
                let modifier = self.next();
                chs.push_str(&rune_string(modifier));
                self.modifier(&name, modifier, &chs, true)
            }
            Some('+' | '-' | '?' | '#' | '%') => self.modifier(&name, ch, &chs, false),
            Some('/') => {
                if self.peek() == Some('/') {
                    self.pos += 1;
                }
                let (pattern, _) = self
                    .stop_on(Some('/'), true)
                    .map_err(|e| self.at_end_or(LexError::MissingSlash, e))?;
                let (replacement, _) = self
                    .stop_on(Some('}'), true)
                    .map_err(|e| self.at_end_or(LexError::MissingBrace, e))?;
                Ok(format!("${{{name}/{pattern}/{replacement}}}"))
            }
            _ => Err(LexError::UnsupportedModifier(chs)),
        }
    }

    /// `${name<mod>word}` with `name` unset: the text is kept as written.
    fn modifier(
        &mut self,
        name: &str,
        modifier: Option<char>,
        chs: &str,
        null_is_unset: bool,
    ) -> Result<String, LexError> {
        let raw_escapes = matches!(modifier, Some('#' | '%'));
        if null_is_unset && raw_escapes {
            return Err(LexError::UnsupportedModifier(chs.to_string()));
        }
        let (word, _) = self
            .stop_on(Some('}'), raw_escapes)
            .map_err(|e| self.at_end_or(LexError::MissingBrace, e))?;
        Ok(format!("${{{name}{chs}{word}}}"))
    }

    /// BuildKit reports running off the end as the missing delimiter.
    fn at_end_or(&self, at_end: LexError, other: LexError) -> LexError {
        if self.peek().is_none() && other != LexError::TooDeep {
            at_end
        } else {
            other
        }
    }

    /// `processName`: a variable name, a run of digits, or one special parameter.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_go_digit(ch) {
                while let Some(d) = self.peek().filter(|&c| is_go_digit(c)) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return ch.to_string();
            }
            if !is_go_letter(ch) && !is_go_digit(ch) && ch != '_' {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }

    /// `processPossibleHeredoc`: `<<` plus the blanks after it, or a lone `<`.
    fn possible_heredoc(&mut self) -> String {
        self.pos += 1;
        if self.peek() != Some('<') {
            return "<".to_string();
        }
        self.pos += 1;
        let mut s = String::from("<<");
        while let Some(c @ ('\t' | '\r' | ' ')) = self.peek() {
            s.push(c);
            self.pos += 1;
        }
        s
    }
}

/// Go's `string(rune)`, where the end of input (-1) reads as U+FFFD.
fn rune_string(c: Option<char>) -> String {
    c.unwrap_or('\u{fffd}').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(src: &str, raw_quotes: bool, raw_escapes: bool) -> Result<Vec<String>, LexError> {
        Lexer::new(src, raw_quotes, raw_escapes).process_words()
    }

    #[test]
    fn lexer_keeps_unset_variables_and_raw_text() {
        assert_eq!(
            words("a $B ${C} ${D:-x y}", false, false).unwrap(),
            ["a", "$B", "${C}", "${D:-x", "y}"]
        );
        assert_eq!(
            words(r#"'a b' "c\"d""#, true, true).unwrap(),
            ["'a b'", r#""c\"d""#]
        );
        assert_eq!(words(r#"x"\a""#, true, true).unwrap(), [r#"x"\\a""#]);
        assert_eq!(words("<<  EOF x", false, false).unwrap(), ["<<  EOF", "x"]);
        assert_eq!(words("${a/b/c}", false, false).unwrap(), ["${a/b/c}"]);
        assert_eq!(words("ab${x:-c}d", false, false).unwrap(), ["${x:-c}d"]);
    }

    #[test]
    fn lexer_errors_match_buildkit() {
        assert_eq!(
            words("'a", false, false),
            Err(LexError::UnterminatedSingleQuote)
        );
        assert_eq!(
            words("\"a", false, false),
            Err(LexError::UnterminatedDoubleQuote)
        );
        assert_eq!(
            words("${a", false, false),
            Err(LexError::UnsupportedModifier("\u{fffd}".into()))
        );
        assert_eq!(words("${a:-b", false, false), Err(LexError::MissingBrace));
        assert_eq!(words("${}", false, false), Err(LexError::BadSubstitution));
        assert_eq!(
            words("${a:#b}", false, false),
            Err(LexError::UnsupportedModifier(":#".into()))
        );
        assert_eq!(words("${a/b", false, false), Err(LexError::MissingSlash));
        let deep = "${a:-".repeat(10_000);
        assert_eq!(words(&deep, false, false), Err(LexError::TooDeep));
    }

    #[test]
    fn heredoc_words() {
        let h = parse_heredoc("3<<-'E'O\\'F").unwrap().unwrap();
        assert_eq!(
            (h.name.as_str(), h.fd, h.chomp, h.expand),
            ("EO'F", 3, true, false)
        );
        assert_eq!(parse_heredoc("<<EOF sh").unwrap(), None);
        assert!(parse_heredoc("<<'EOF").is_err());
        assert_eq!(
            parse_heredoc("99999999999<<A").unwrap().unwrap().fd,
            u32::MAX
        );
    }

    #[test]
    fn chomp_strips_leading_tabs_per_line() {
        assert_eq!(chomp("\thello\n\t\tworld\n \tx\n"), "hello\nworld\n \tx\n");
    }
}
