//! `.dockerignore` semantics, ported from moby/patternmatcher, plus Go's `filepath.Match`.
//!
//! Two matchers live here:
//!
//! - [`glob_match`]: Go's `path/filepath.Match` on Unix, byte for byte (`*` and `?` never match
//!   `/`, `[...]` and `[^...]` classes with ranges, `\` escapes, [`BadPattern`] for malformed
//!   patterns, checked over the whole pattern even when the name does not match). COPY/ADD
//!   source globs use it, one path component at a time.
//! - [`PatternMatcher`]: the `.dockerignore` matcher. Patterns are trimmed, `path.Clean`ed and may
//!   start with `!` (re-include); the last matching pattern wins; `**` matches any number of
//!   directories; a pattern that matches a directory matches everything below it
//!   ([`PatternMatcher::matches_or_parent_matches`], or
//!   [`PatternMatcher::matches_using_parent_results`] when walking a tree top-down).
//!
//! moby compiles each pattern to a Go regexp; kiln compiles it to a small token list run as an
//! NFA (linear time in the path length, no backtracking blow-up on hostile patterns) with the same
//! results, including moby's exact/prefix/suffix shortcuts, which differ subtly from the regexp
//! (`**file` matches `xfile`). Deliberate differences, all in corners nobody writes on purpose:
//!
//! - `**` also crosses a newline in a file name (Go's regexp `.` does not), so a file named
//!   `a\nb/secret.key` cannot slip past `**/*.key`.
//! - Inside `[...]`, `*` and `?` are literal and `\c` is the character `c`, as in
//!   `filepath.Match`; moby's translation pastes them into the regexp (`[*]` becomes a broken
//!   class, `\d` a digit class, `[[:alpha:]]` a POSIX class).
//! - Outside classes `\c` is always the literal `c` (moby hands `\d`, `\w`, ... to the regexp).
//!
//! As upstream, a pattern that `filepath.Match` accepts but that cannot be compiled (a reversed
//! range such as `[Local-Only]`) is accepted by [`PatternMatcher::new`] and fails every match with
//! [`IgnoreError::BadPattern`].

use std::borrow::Cow;

/// A malformed glob pattern (Go's `filepath.ErrBadPattern`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern {pattern:?}")]
pub struct BadPattern {
    /// The pattern as given.
    pub pattern: String,
}

/// Errors from building or running a [`PatternMatcher`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    /// A pattern that is only `!`.
    #[error("illegal exclusion pattern: \"!\"")]
    IllegalExclusion,
    /// A pattern that is not valid glob syntax.
    #[error(transparent)]
    BadPattern(#[from] BadPattern),
    /// A [`MatchInfo`] that was produced by a matcher with a different number of patterns.
    #[error("wrong number of values in parent match info: expected {expected}, found {found}")]
    ParentInfoMismatch {
        /// The number of patterns of this matcher.
        expected: usize,
        /// The number of entries in the given match info.
        found: usize,
    },
}

/// Go's `filepath.Match` (Unix flavour): whether `name` matches the shell pattern `pattern`.
///
/// The whole pattern is checked for syntax even when the name does not match, so a malformed
/// pattern always returns [`BadPattern`].
pub fn glob_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    go_match(pattern.as_bytes(), name.as_bytes()).map_err(|BadSyntax| BadPattern {
        pattern: pattern.to_owned(),
    })
}

/// Reads `.dockerignore` text into patterns, as moby's `ignorefile.ReadAll`.
///
/// A UTF-8 byte-order mark is dropped; lines starting with `#` are comments; lines are trimmed and
/// empty ones skipped; a leading `!` is kept and the rest trimmed; the pattern is `path.Clean`ed
/// and a leading `/` removed (absolute patterns mean the context root).
pub fn read_ignore_file(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::with_capacity(pattern.len() + 1);
        if invert {
            cleaned.push('!');
        }
        if !pattern.is_empty() {
            let c = clean(pattern);
            match c.strip_prefix('/') {
                Some(rest) if !rest.is_empty() => cleaned.push_str(rest),
                _ => cleaned.push_str(&c),
            }
        }
        out.push(cleaned);
    }
    out
}

/// Go's `path.Clean`: the shortest equivalent slash path (`.` for empty, `..` kept only at the
/// start of a relative path, removed at the root of an absolute one, no trailing `/`).
///
/// Borrows the input when it is already clean.
pub fn clean(path: &str) -> Cow<'_, str> {
    if is_clean(path) {
        return Cow::Borrowed(path);
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if !rooted => parts.push(".."),
                _ => {}
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    Cow::Owned(match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    })
}

/// Whether `path` is already in `path.Clean` form.
fn is_clean(path: &str) -> bool {
    if path == "/" || path == "." {
        return true;
    }
    let body = path.strip_prefix('/').unwrap_or(path);
    !body.is_empty() && body.split('/').all(|c| !matches!(c, "" | "." | ".."))
}

/// Go's `filepath.Dir` on Unix: everything before the last `/`, cleaned.
fn dir(path: &str) -> Cow<'_, str> {
    match path.rfind('/') {
        Some(i) => clean(&path[..=i]),
        None => Cow::Borrowed("."),
    }
}

/// The parent-match results of one directory, reused for its children while walking.
///
/// The default value means "no information" (the matcher then checks parents itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// A compiled `.dockerignore` pattern list (moby's `PatternMatcher`).
#[derive(Debug, Clone)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned pattern without its `!`.
    text: String,
    exclusion: bool,
    compiled: Result<Compiled, BadPattern>,
}

#[derive(Debug, Clone)]
enum Compiled {
    /// No wildcard: the path must equal the pattern.
    Exact,
    /// `literal**`: the path must start with the literal.
    Prefix(String),
    /// `**literal`: the path ends with the literal, or equals it without a leading `/`.
    Suffix(String),
    /// Anything else, run as an NFA.
    Tokens(Vec<Tok>),
}

/// One NFA state: what it consumes and where it goes.
#[derive(Debug, Clone)]
enum Tok {
    /// One given character.
    Lit(char),
    /// `?`: one character other than `/`.
    Any,
    /// `*`: any run of characters other than `/` (stays in place).
    Star,
    /// `.*` of `**`: any run of characters, `/` included.
    AnyRun,
    /// Optional group: ε-moves to the next state and to `self + skip`.
    Opt(usize),
    /// `[...]`.
    Class(Class),
}

#[derive(Debug, Clone)]
struct Class {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl Class {
    fn matches(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

impl PatternMatcher {
    /// Compiles `patterns` (moby's `New`): each is trimmed, empty ones dropped, `path.Clean`ed,
    /// a leading `!` marks an exclusion (re-include), and the syntax is checked with
    /// [`glob_match`].
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, IgnoreError> {
        let mut out = Vec::with_capacity(patterns.len());
        let mut exclusions = false;
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let cleaned = clean(p);
            let (exclusion, body) = match cleaned.strip_prefix('!') {
                Some("") => return Err(IgnoreError::IllegalExclusion),
                Some(rest) => (true, rest),
                None => (false, &*cleaned),
            };
            exclusions |= exclusion;
            go_match(body.as_bytes(), b".").map_err(|BadSyntax| BadPattern {
                pattern: body.to_owned(),
            })?;
            out.push(Pattern {
                text: body.to_owned(),
                exclusion,
                compiled: compile(body).map_err(|BadSyntax| BadPattern {
                    pattern: body.to_owned(),
                }),
            });
        }
        Ok(Self {
            patterns: out,
            exclusions,
        })
    }

    /// Whether any pattern starts with `!`.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// The number of patterns kept after cleaning (empty lines are dropped).
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Whether there are no patterns at all (nothing is ever ignored).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (slash-separated, relative to the context) is ignored: the last pattern
    /// that matches it or one of its parent directories decides.
    pub fn matches_or_parent_matches(&self, path: &str) -> Result<bool, IgnoreError> {
        let parent = dir(path);
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut m = pattern.matches(path)?;
            if !m && parent != "." {
                m = pattern.matches_a_parent(&parent);
            }
            if m {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Whether `path` is ignored, reusing the results of its parent directory (`parent`, from the
    /// call on the parent, or [`MatchInfo::default`] at the top or without information).
    ///
    /// Writes this path's results into `out`, to be passed to its children if it is a directory.
    /// Gives the same answer as [`Self::matches_or_parent_matches`] when walking top-down.
    pub fn matches_using_parent_results(
        &self,
        path: &str,
        parent: &MatchInfo,
        out: &mut MatchInfo,
    ) -> Result<bool, IgnoreError> {
        let known = &parent.parent_matched;
        if !known.is_empty() && known.len() != self.patterns.len() {
            return Err(IgnoreError::ParentInfoMismatch {
                expected: self.patterns.len(),
                found: known.len(),
            });
        }
        out.parent_matched.clear();
        out.parent_matched.resize(self.patterns.len(), false);
        let mut matched = false;
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut m = known.get(i).copied().unwrap_or(false);
            if !m {
                if pattern.exclusion != matched {
                    continue;
                }
                m = pattern.matches(path)?;
                if !m && known.is_empty() {
                    let parent = dir(path);
                    if parent != "." {
                        m = pattern.matches_a_parent(&parent);
                    }
                }
            }
            if let Some(slot) = out.parent_matched.get_mut(i) {
                *slot = m;
            }
            if m {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> Result<bool, BadPattern> {
        let compiled = self.compiled.as_ref().map_err(Clone::clone)?;
        Ok(match compiled {
            Compiled::Exact => path == self.text,
            Compiled::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Compiled::Suffix(suffix) => {
                path.ends_with(suffix.as_str()) || suffix.strip_prefix('/') == Some(path)
            }
            Compiled::Tokens(tokens) => run_nfa(tokens, path),
        })
    }

    /// Whether the pattern matches one of the directories `a`, `a/b`, ... of `parent` (errors
    /// count as no match, as upstream).
    fn matches_a_parent(&self, parent: &str) -> bool {
        parent
            .match_indices('/')
            .map(|(i, _)| &parent[..i])
            .chain(std::iter::once(parent))
            .any(|prefix| self.matches(prefix).unwrap_or(false))
    }
}

/// Internal marker for a syntax error; the public wrappers attach the pattern.
#[derive(Debug, Clone, Copy)]
struct BadSyntax;

/// Compiles a cleaned pattern (without its `!`) the way moby's `Pattern.compile` classifies and
/// translates it.
fn compile(pattern: &str) -> Result<Compiled, BadSyntax> {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let mut kind = Kind::Exact;
    let mut toks = Vec::new();
    let mut it = pattern.chars().peekable();
    let mut first = true;
    while let Some(ch) = it.next() {
        match ch {
            '*' if it.peek() == Some(&'*') => {
                it.next();
                if it.peek() == Some(&'/') {
                    it.next();
                }
                if it.peek().is_none() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        toks.push(Tok::AnyRun);
                        kind = Kind::Regex;
                    }
                } else {
                    toks.extend([Tok::Opt(3), Tok::AnyRun, Tok::Lit('/')]);
                    kind = Kind::Regex;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                toks.push(Tok::Star);
                kind = Kind::Regex;
            }
            '?' => {
                toks.push(Tok::Any);
                kind = Kind::Regex;
            }
            '\\' => {
                let next = it.next().ok_or(BadSyntax)?;
                toks.push(Tok::Lit(next));
                kind = Kind::Regex;
            }
            '[' => {
                toks.push(Tok::Class(compile_class(&mut it)?));
                kind = Kind::Regex;
            }
            ']' => {
                toks.push(Tok::Lit(']'));
                kind = Kind::Regex;
            }
            c => toks.push(Tok::Lit(c)),
        }
        first = false;
    }
    // moby slices the `**` off the raw pattern text; so do we, without indexing.
    Ok(match kind {
        Kind::Exact => Compiled::Exact,
        Kind::Prefix => Compiled::Prefix(pattern.strip_suffix("**").ok_or(BadSyntax)?.to_owned()),
        Kind::Suffix => Compiled::Suffix(pattern.strip_prefix("**").ok_or(BadSyntax)?.to_owned()),
        Kind::Regex => Compiled::Tokens(toks),
    })
}

/// Parses a class body after `[`, through its `]`. A reversed range is an error, as in Go's
/// regexp.
fn compile_class(it: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<Class, BadSyntax> {
    fn element(it: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, BadSyntax> {
        match it.next().ok_or(BadSyntax)? {
            '\\' => it.next().ok_or(BadSyntax),
            c => Ok(c),
        }
    }
    let negated = it.peek() == Some(&'^');
    if negated {
        it.next();
    }
    let mut ranges = Vec::new();
    loop {
        if it.peek() == Some(&']') && !ranges.is_empty() {
            it.next();
            return Ok(Class { negated, ranges });
        }
        let lo = element(it)?;
        let hi = if it.peek() == Some(&'-') {
            it.next();
            element(it)?
        } else {
            lo
        };
        if lo > hi {
            return Err(BadSyntax);
        }
        ranges.push((lo, hi));
    }
}

/// A set of NFA states, as bits.
struct States<'a>(&'a mut [u64]);

impl States<'_> {
    fn set(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }
    fn has(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    fn clear(&mut self) {
        self.0.fill(0);
    }
    fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }
    /// Adds every state reachable by ε-moves; they only go forward, so one pass suffices.
    fn close(&mut self, toks: &[Tok]) {
        for (i, t) in toks.iter().enumerate() {
            if !self.has(i) {
                continue;
            }
            match t {
                Tok::Star | Tok::AnyRun => self.set(i + 1),
                Tok::Opt(skip) => {
                    self.set(i + 1);
                    self.set(i + skip);
                }
                Tok::Lit(_) | Tok::Any | Tok::Class(_) => {}
            }
        }
    }
}

/// Runs the token NFA over `text`; true if it accepts the whole text.
fn run_nfa(toks: &[Tok], text: &str) -> bool {
    const INLINE_WORDS: usize = 8;
    let words = (toks.len() + 1).div_ceil(64);
    let mut inline = [0u64; 2 * INLINE_WORDS];
    let mut heap = Vec::new();
    let buf: &mut [u64] = if words <= INLINE_WORDS {
        &mut inline[..2 * words]
    } else {
        heap.resize(2 * words, 0);
        &mut heap
    };
    let (a, b) = buf.split_at_mut(words);
    let (mut cur, mut next) = (States(a), States(b));
    cur.set(0);
    cur.close(toks);
    for c in text.chars() {
        next.clear();
        for (i, t) in toks.iter().enumerate() {
            if !cur.has(i) {
                continue;
            }
            match t {
                Tok::Lit(l) if *l == c => next.set(i + 1),
                Tok::Any if c != '/' => next.set(i + 1),
                Tok::Class(class) if class.matches(c) => next.set(i + 1),
                Tok::Star if c != '/' => next.set(i),
                Tok::AnyRun => next.set(i),
                _ => {}
            }
        }
        next.close(toks);
        if next.is_empty() {
            return false;
        }
        std::mem::swap(&mut cur, &mut next);
    }
    cur.has(toks.len())
}

/// Go's `filepath.Match` over bytes (so a `*` may stop inside a multi-byte character, as Go's
/// does).
fn go_match(mut pattern: &[u8], mut name: &[u8]) -> Result<bool, BadSyntax> {
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            return Ok(!name.contains(&b'/'));
        }
        let (t, ok) = match_chunk(chunk, name)?;
        if ok && (t.is_empty() || !pattern.is_empty()) {
            name = t;
            continue;
        }
        if star {
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                let (t, ok) = match_chunk(chunk, &name[i + 1..])?;
                if ok {
                    if pattern.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    continue 'pattern;
                }
                i += 1;
            }
        }
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, b"")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Splits off the next run of non-`*` pattern (after any leading stars).
fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while let Some(rest) = pattern.strip_prefix(b"*") {
        pattern = rest;
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Matches a star-free chunk against the start of `s`; returns the rest and whether it matched.
/// Keeps parsing after a mismatch so that syntax errors are always reported.
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> Result<(&'a [u8], bool), BadSyntax> {
    let mut failed = false;
    while let Some(&c0) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c0 {
            b'[' => {
                let mut r = '\0';
                if !failed {
                    let (ch, n) = decode_rune(s);
                    r = ch;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let mut negated = false;
                if let Some(rest) = chunk.strip_prefix(b"^") {
                    negated = true;
                    chunk = rest;
                }
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if nrange > 0 {
                        if let Some(rest) = chunk.strip_prefix(b"]") {
                            chunk = rest;
                            break;
                        }
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if let Some(rest) = chunk.strip_prefix(b"-") {
                        let (h, rest) = get_esc(rest)?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s.first() == Some(&b'/') {
                        failed = true;
                    }
                    let (_, n) = decode_rune(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if c0 == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return Err(BadSyntax);
                    }
                }
                if !failed {
                    if chunk.first() != s.first() {
                        failed = true;
                    }
                    s = s.get(1..).unwrap_or_default();
                }
                chunk = &chunk[1..];
            }
        }
    }
    if failed {
        Ok((&[], false))
    } else {
        Ok((s, true))
    }
}

/// A possibly escaped character of a class; the chunk must not end right after it.
fn get_esc(chunk: &[u8]) -> Result<(char, &[u8]), BadSyntax> {
    let chunk = match chunk.first() {
        None | Some(b'-') | Some(b']') => return Err(BadSyntax),
        Some(b'\\') => &chunk[1..],
        Some(_) => chunk,
    };
    if chunk.is_empty() {
        return Err(BadSyntax);
    }
    let (r, n) = decode_rune(chunk);
    if r == char::REPLACEMENT_CHARACTER && n == 1 {
        return Err(BadSyntax);
    }
    let rest = &chunk[n..];
    if rest.is_empty() {
        return Err(BadSyntax);
    }
    Ok((r, rest))
}

/// Go's `utf8.DecodeRune`: the first character and its width; U+FFFD and width 1 for an invalid
/// byte, width 0 for empty input.
fn decode_rune(s: &[u8]) -> (char, usize) {
    if s.is_empty() {
        return (char::REPLACEMENT_CHARACTER, 0);
    }
    let end = s.len().min(4);
    let valid = match std::str::from_utf8(&s[..end]) {
        Ok(v) => v,
        Err(e) => std::str::from_utf8(&s[..e.valid_up_to()]).unwrap_or_default(),
    };
    match valid.chars().next() {
        Some(c) => (c, c.len_utf8()),
        None => (char::REPLACEMENT_CHARACTER, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        for (input, want) in [
            ("", "."),
            ("a/b/../c", "a/c"),
            ("/../a", "/a"),
            ("../a/..", ".."),
            ("a//b/./", "a/b"),
            ("/", "/"),
            ("!docs/../x", "x"),
            ("abc", "abc"),
        ] {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn glob_star_stops_inside_multibyte_without_panicking() {
        assert_eq!(glob_match("*\u{263a}?", "a\u{263a}\u{263a}"), Ok(true));
        assert_eq!(glob_match("[^a]*", "\u{263a}x"), Ok(true));
    }

    #[test]
    fn bad_pattern_is_reported_even_without_a_match() {
        assert!(glob_match("x[", "y").is_err());
        assert!(glob_match("*x[", "abc").is_err());
    }

    #[test]
    fn nfa_is_linear_on_hostile_patterns() {
        let pattern = "*a".repeat(200) + "b";
        let m = PatternMatcher::new(&[pattern]).expect("valid pattern");
        let path = "a".repeat(5000);
        assert_eq!(m.matches_or_parent_matches(&path), Ok(false));
    }

    #[test]
    fn double_star_crosses_newlines() {
        let m = PatternMatcher::new(&["**/*.key"]).expect("valid pattern");
        assert_eq!(m.matches_or_parent_matches("a\nb/x.key"), Ok(true));
    }

    #[test]
    fn foreign_match_info_is_refused() {
        let m = PatternMatcher::new(&["a", "b"]).expect("valid patterns");
        let other = PatternMatcher::new(&["a"]).expect("valid pattern");
        let mut info = MatchInfo::default();
        other
            .matches_using_parent_results("a", &MatchInfo::default(), &mut info)
            .expect("match");
        let mut out = MatchInfo::default();
        assert_eq!(
            m.matches_using_parent_results("a/b", &info, &mut out),
            Err(IgnoreError::ParentInfoMismatch {
                expected: 2,
                found: 1
            })
        );
    }
}
