//! The exec-form test: does an instruction's argument text read as a JSON array of strings?
//!
//! BuildKit decides with Go's `json.Unmarshal` into `[]any`, and the details decide what a
//! Dockerfile means: any syntax error (trailing garbage, single quotes) makes the text shell
//! form, an array holding a non-string is a hard error, and a number too large for a float64 is
//! a decoding error (shell form again). This module reproduces that decision without
//! recursion, so deep nesting in hostile input costs a small stack of bytes, not the call stack.

/// What the argument text turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonArgs {
    /// Not a JSON array: the caller falls back to the non-JSON rule.
    NotJson,
    /// A JSON array of strings, decoded.
    Strings(Vec<String>),
    /// A valid JSON array holding something other than a string (a hard error).
    NotAllStrings,
}

/// Go's `encoding/json` nesting limit.
const MAX_DEPTH: usize = 10_000;

/// Reads `rest` the way BuildKit's `parseJSON` does: leading whitespace is skipped, the text
/// must start with `[` and be exactly one JSON value.
pub(crate) fn parse_json_array(rest: &str) -> JsonArgs {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return JsonArgs::NotJson;
    }
    match Decoder::new(rest.as_bytes()).run() {
        Some(Top {
            strings,
            all_strings: true,
            overflow: false,
        }) => JsonArgs::Strings(strings),
        Some(Top {
            overflow: false, ..
        }) => JsonArgs::NotAllStrings,
        _ => JsonArgs::NotJson,
    }
}

/// The top-level array, as far as the caller cares.
struct Top {
    strings: Vec<String>,
    all_strings: bool,
    /// A number somewhere overflowed float64: Go's `Unmarshal` returns an error.
    overflow: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Container {
    Array,
    Object,
}

struct Decoder<'a> {
    b: &'a [u8],
    i: usize,
    stack: Vec<Container>,
    top: Top,
}

impl<'a> Decoder<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self {
            b,
            i: 0,
            stack: Vec::new(),
            top: Top {
                strings: Vec::new(),
                all_strings: true,
                overflow: false,
            },
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.skip_ws();
        (self.peek() == Some(c)).then(|| self.i += 1)
    }

    /// Decodes the whole input; `None` on any syntax error.
    fn run(mut self) -> Option<Top> {
        // `true` while a value is expected next, `false` after one was read.
        let mut want_value = true;
        loop {
            self.skip_ws();
            if want_value {
                match self.peek()? {
                    open @ (b'[' | b'{') => {
                        let (kind, close) = if open == b'[' {
                            (Container::Array, b']')
                        } else {
                            (Container::Object, b'}')
                        };
                        self.i += 1;
                        self.stack.push(kind);
                        if self.stack.len() > MAX_DEPTH {
                            return None;
                        }
                        self.skip_ws();
                        if self.peek() == Some(close) {
                            self.i += 1;
                            self.stack.pop();
                            self.finish_value(None);
                            want_value = false;
                        } else if kind == Container::Object {
                            self.key()?;
                        }
                    }
                    b'"' => {
                        let s = self.string()?;
                        self.finish_value(Some(s));
                        want_value = false;
                    }
                    b't' | b'f' | b'n' => {
                        self.literal()?;
                        self.finish_value(None);
                        want_value = false;
                    }
                    b'-' | b'0'..=b'9' => {
                        self.number()?;
                        self.finish_value(None);
                        want_value = false;
                    }
                    _ => return None,
                }
                continue;
            }
            let Some(&kind) = self.stack.last() else {
                // The top-level value is complete: only whitespace may follow.
                return (self.i == self.b.len()).then_some(self.top);
            };
            match (kind, self.peek()?) {
                (_, b',') => {
                    self.i += 1;
                    if kind == Container::Object {
                        self.key()?;
                    }
                    want_value = true;
                }
                (Container::Array, b']') | (Container::Object, b'}') => {
                    self.i += 1;
                    self.stack.pop();
                    self.finish_value(None);
                }
                _ => return None,
            }
        }
    }

    /// Records a completed value; only the top-level array's own elements matter.
    fn finish_value(&mut self, string: Option<String>) {
        if self.stack.len() != 1 {
            return;
        }
        match string {
            Some(s) => self.top.strings.push(s),
            None => self.top.all_strings = false,
        }
    }

    /// An object key and its colon.
    fn key(&mut self) -> Option<()> {
        self.skip_ws();
        if self.peek()? != b'"' {
            return None;
        }
        self.string()?;
        self.eat(b':')
    }

    fn literal(&mut self) -> Option<()> {
        let rest = &self.b[self.i..];
        let word: &[u8] = [b"true".as_slice(), b"false", b"null"]
            .into_iter()
            .find(|w| rest.starts_with(w))?;
        self.i += word.len();
        Some(())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`; flags a float64 overflow.
    fn number(&mut self) -> Option<()> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).ok()?;
        if text.parse::<f64>().map_or(true, f64::is_infinite) {
            self.top.overflow = true;
        }
        Some(())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn hex4_at(&self, at: usize) -> Option<u32> {
        let h = self.b.get(at..at + 4)?;
        let s = std::str::from_utf8(h).ok()?;
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(s, 16).ok()
    }

    /// A string literal, decoded as Go decodes it (bad surrogates become U+FFFD).
    fn string(&mut self) -> Option<String> {
        self.i += 1;
        let mut out = String::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    let e = *self.b.get(self.i + 1)?;
                    self.i += 2;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\x08'),
                        b'f' => out.push('\x0c'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let r = self.hex4_at(self.i)?;
                            self.i += 4;
                            out.push(self.code_point(r));
                        }
                        _ => return None,
                    }
                }
                c if c < 0x20 => return None,
                _ => {
                    let start = self.i;
                    while matches!(self.peek(), Some(c) if c >= 0x20 && c != b'"' && c != b'\\') {
                        self.i += 1;
                    }
                    out.push_str(std::str::from_utf8(&self.b[start..self.i]).ok()?);
                }
            }
        }
    }

    /// The rune for `\uXXXX` at the current position, joining a following low surrogate.
    fn code_point(&mut self, r: u32) -> char {
        if (0xd800..0xe000).contains(&r) {
            if r < 0xdc00 && self.b[self.i..].starts_with(b"\\u") {
                if let Some(low @ 0xdc00..=0xdfff) = self.hex4_at(self.i + 2) {
                    self.i += 6;
                    let c = 0x1_0000 + ((r - 0xd800) << 10) + (low - 0xdc00);
                    return char::from_u32(c).unwrap_or('\u{fffd}');
                }
            }
            return '\u{fffd}';
        }
        char::from_u32(r).unwrap_or('\u{fffd}')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> JsonArgs {
        JsonArgs::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn arrays_of_strings_decode() {
        assert_eq!(parse_json_array(r#"["a", "b"]"#), strings(&["a", "b"]));
        assert_eq!(parse_json_array(" [ ] "), strings(&[]));
        assert_eq!(
            parse_json_array(r#"["\/\u2603\u0000\ud83d\ude00\ud800x"]"#),
            strings(&["/\u{2603}\u{0}\u{1f600}\u{fffd}x"])
        );
    }

    #[test]
    fn syntax_errors_fall_back() {
        for text in [
            r#"["a"];"#,
            "['a']",
            r#"["a""#,
            r#"["a",]"#,
            "[01]",
            r#"["\x"]"#,
            "[\"a\tb\"]",
            r#"{"a": 1}"#,
            r#"[1e400, "a"]"#,
            r#"[{"a": -1e999}]"#,
            "x[]",
        ] {
            assert_eq!(parse_json_array(text), JsonArgs::NotJson, "{text}");
        }
    }

    #[test]
    fn non_strings_are_reported() {
        for text in [
            r#"["a", 1]"#,
            "[null]",
            r#"[["a"]]"#,
            r#"[{"a":"b"}]"#,
            "[true]",
        ] {
            assert_eq!(parse_json_array(text), JsonArgs::NotAllStrings, "{text}");
        }
    }

    #[test]
    fn nesting_is_bounded_without_recursion() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(parse_json_array(&deep), JsonArgs::NotAllStrings);
        let deeper = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(parse_json_array(&deeper), JsonArgs::NotJson);
        assert_eq!(parse_json_array(&"[".repeat(1_000_000)), JsonArgs::NotJson);
    }
}
