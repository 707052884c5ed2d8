//! A POSIX shell parser that works like dash's: one complete command at a time (so aliases
//! defined by one line apply to the next, and a syntax error stops the script only where it
//! is), here-documents read at the end of their line, aliases substituted into the input.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::ast::*;

/// A syntax error: dash prints `sh: LINE: Syntax error: MSG` and exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: u32,
    pub msg: String,
}

type PResult<T> = Result<T, ParseError>;

const KEYWORDS: &[&[u8]] = &[
    b"if", b"then", b"else", b"elif", b"fi", b"do", b"done", b"case", b"esac", b"while", b"until",
    b"for", b"in", b"{", b"}", b"!",
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word {
        word: Word,
        start: usize,
        end: usize,
    },
    IoNum(u32),
    Op(&'static str),
    Newline,
    Eof,
}

const OPS: &[&str] = &[
    "&&", "||", ";;", "<<-", "<<", ">>", "<&", ">&", "<>", ">|", ";", "&", "|", "(", ")", "<", ">",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Unquoted,
    DQuote,
    /// The word of `${x-word}`; `dq` when the expansion is inside double quotes, `pattern` for
    /// the trimming operators (whose quotes always count).
    ParamWord {
        dq: bool,
        pattern: bool,
    },
    Arith,
    HereDoc,
}

struct PendingHereDoc {
    delim: Bytes,
    strip_tabs: bool,
    quoted: bool,
    body: Rc<RefCell<Word>>,
}

pub fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

pub fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

pub fn is_name(s: &[u8]) -> bool {
    matches!(s.first(), Some(&c) if is_name_start(c)) && s.iter().all(|&c| is_name_char(c))
}

pub struct Parser {
    buf: Vec<u8>,
    pos: usize,
    line: u32,
    peeked: Option<Tok>,
    /// Line of the first character of the peeked token.
    tok_line: u32,
    pending: Vec<PendingHereDoc>,
    aliases: HashMap<Bytes, Bytes>,
    /// (alias, end of its substituted text): an alias is not expanded inside its own text.
    alias_regions: Vec<(Bytes, usize)>,
    /// The previous alias ended in a blank: the word after its text (which ends here) is
    /// checked for an alias too.
    alias_next: Option<usize>,
    heredoc_at_eof: bool,
}

impl Parser {
    pub fn new(src: Vec<u8>, first_line: u32) -> Parser {
        Parser {
            buf: src,
            pos: 0,
            line: first_line,
            peeked: None,
            tok_line: first_line,
            pending: Vec::new(),
            aliases: HashMap::new(),
            alias_regions: Vec::new(),
            alias_next: None,
            heredoc_at_eof: false,
        }
    }

    /// Whether a here-document ran to the end of the input without its delimiter (input read
    /// a line at a time may bring it later).
    pub fn heredoc_at_eof(&self) -> bool {
        self.heredoc_at_eof
    }

    /// The input consumed since `start` (for `set -v`).
    pub fn text_since(&self, start: usize) -> &[u8] {
        let end = self.pos.min(self.buf.len());
        self.buf.get(start.min(end)..end).unwrap_or(&[])
    }

    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Parses the next complete command (a list up to a newline); `None` at end of input.
    pub fn next_command(&mut self, aliases: &HashMap<Bytes, Bytes>) -> PResult<Option<List>> {
        self.aliases.clone_from(aliases);
        loop {
            match self.peek()? {
                Tok::Newline => {
                    self.next()?;
                }
                Tok::Eof => return Ok(None),
                _ => break,
            }
        }
        let mut list = List::default();
        loop {
            let and_or = self.and_or()?;
            let background = match self.peek()? {
                Tok::Op("&") => {
                    self.next()?;
                    true
                }
                Tok::Op(";") => {
                    self.next()?;
                    false
                }
                _ => false,
            };
            list.items.push(Item { and_or, background });
            match self.peek()? {
                Tok::Newline => {
                    self.next()?;
                    return Ok(Some(list));
                }
                Tok::Eof => return Ok(Some(list)),
                t if self.ends_command(&t) => return Err(self.unexpected(&t)),
                _ => {}
            }
        }
    }

    /// Parses the whole input (backquoted command substitutions).
    fn parse_all(&mut self) -> PResult<List> {
        let aliases = self.aliases.clone();
        let mut list = List::default();
        while let Some(l) = self.next_command(&aliases)? {
            list.items.extend(l.items);
        }
        Ok(list)
    }

    fn err(&self, msg: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            msg: msg.into(),
        }
    }

    fn tok_text(&self, t: &Tok) -> String {
        match t {
            Tok::Word { start, end, .. } => {
                let s = self.buf.get(*start..*end).unwrap_or(&[]);
                format!("\"{}\"", String::from_utf8_lossy(s))
            }
            Tok::IoNum(n) => format!("\"{n}\""),
            Tok::Op(o) => format!("\"{o}\""),
            Tok::Newline => "newline".into(),
            Tok::Eof => "end of file".into(),
        }
    }

    fn unexpected(&self, t: &Tok) -> ParseError {
        let what = self.tok_text(t);
        ParseError {
            line: self.tok_line,
            msg: format!("{what} unexpected"),
        }
    }

    fn expecting(&self, t: &Tok, want: &str) -> ParseError {
        let what = self.tok_text(t);
        ParseError {
            line: self.tok_line,
            msg: format!("{what} unexpected (expecting \"{want}\")"),
        }
    }

    /// Tokens that cannot continue a command list.
    fn ends_command(&self, t: &Tok) -> bool {
        matches!(t, Tok::Op(")") | Tok::Op(";;")) || self.keyword_of(t).is_some_and(is_closer)
    }

    fn keyword_of(&self, t: &Tok) -> Option<&'static [u8]> {
        match t {
            Tok::Word { word, .. } => {
                let lit = word.as_literal()?;
                KEYWORDS.iter().copied().find(|k| *k == lit)
            }
            _ => None,
        }
    }

    // ---- tokens ----

    fn peek(&mut self) -> PResult<Tok> {
        if self.peeked.is_none() {
            let t = self.lex()?;
            self.peeked = Some(t);
        }
        Ok(self.peeked.clone().unwrap_or(Tok::Eof))
    }

    fn next(&mut self) -> PResult<Tok> {
        self.peek()?;
        Ok(self.peeked.take().unwrap_or(Tok::Eof))
    }

    fn peek_keyword(&mut self) -> PResult<Option<&'static [u8]>> {
        let t = self.peek()?;
        Ok(self.keyword_of(&t))
    }

    fn expect_keyword(&mut self, kw: &'static str) -> PResult<()> {
        let t = self.peek()?;
        if self.keyword_of(&t) == Some(kw.as_bytes()) {
            self.next()?;
            Ok(())
        } else {
            Err(self.expecting(&t, kw))
        }
    }

    fn skip_newlines(&mut self) -> PResult<()> {
        while self.peek()? == Tok::Newline {
            self.next()?;
        }
        Ok(())
    }

    fn byte(&self, at: usize) -> Option<u8> {
        self.buf.get(at).copied()
    }

    /// Skips backslash-newline pairs.
    fn skip_continuations(&mut self) {
        while self.byte(self.pos) == Some(b'\\') && self.byte(self.pos + 1) == Some(b'\n') {
            self.pos += 2;
            self.line += 1;
        }
    }

    fn cur(&mut self) -> Option<u8> {
        self.skip_continuations();
        self.byte(self.pos)
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.byte(self.pos)?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn lex(&mut self) -> PResult<Tok> {
        loop {
            match self.cur() {
                Some(b' ') | Some(b'\t') => {
                    self.pos += 1;
                }
                Some(b'#') => {
                    while let Some(c) = self.byte(self.pos) {
                        if c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
        self.tok_line = self.line;
        self.alias_regions.retain(|(_, end)| *end > self.pos);
        let Some(c) = self.cur() else {
            if !self.pending.is_empty() {
                self.read_heredocs()?;
            }
            return Ok(Tok::Eof);
        };
        if c == b'\n' {
            self.bump();
            self.read_heredocs()?;
            return Ok(Tok::Newline);
        }
        for op in OPS {
            let ob = op.as_bytes();
            if self.buf.get(self.pos..self.pos + ob.len()) == Some(ob) {
                self.pos += ob.len();
                return Ok(Tok::Op(op));
            }
        }
        let start = self.pos;
        let parts = self.lex_parts(Ctx::Unquoted)?;
        let end = self.pos;
        let word = Word { parts };
        if let Some(lit) = word.as_literal() {
            if matches!(self.byte(self.pos), Some(b'<') | Some(b'>'))
                && lit.len() == 1
                && lit[0].is_ascii_digit()
            {
                let n = std::str::from_utf8(lit)
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                    .unwrap_or(u32::MAX);
                return Ok(Tok::IoNum(n));
            }
        }
        Ok(Tok::Word { word, start, end })
    }

    // ---- words ----

    fn lex_parts(&mut self, ctx: Ctx) -> PResult<Vec<WordPart>> {
        let mut parts = Vec::new();
        let mut lit: Vec<u8> = Vec::new();
        let mut arith_depth = 0u32;
        let flush = |lit: &mut Vec<u8>, parts: &mut Vec<WordPart>| {
            if !lit.is_empty() {
                parts.push(WordPart::Lit(std::mem::take(lit)));
            }
        };
        loop {
            let Some(c) = self.cur() else {
                match ctx {
                    Ctx::Unquoted | Ctx::HereDoc => break,
                    Ctx::DQuote => return Err(self.err("Unterminated quoted string")),
                    Ctx::ParamWord { .. } => return Err(self.err("Missing '}'")),
                    Ctx::Arith => return Err(self.err("Missing '))'")),
                }
            };
            match ctx {
                Ctx::Unquoted if b" \t\n;&|<>()".contains(&c) => break,
                Ctx::DQuote if c == b'"' => {
                    self.pos += 1;
                    break;
                }
                Ctx::ParamWord { .. } if c == b'}' => {
                    self.pos += 1;
                    break;
                }
                Ctx::Arith if c == b'(' => {
                    arith_depth += 1;
                    lit.push(c);
                    self.pos += 1;
                    continue;
                }
                Ctx::Arith if c == b')' => {
                    self.pos += 1;
                    if arith_depth > 0 {
                        arith_depth -= 1;
                        lit.push(c);
                        continue;
                    }
                    if self.cur() == Some(b')') {
                        self.pos += 1;
                        break;
                    }
                    return Err(self.err("Missing '))'"));
                }
                _ => {}
            }
            let dq_like = matches!(
                ctx,
                Ctx::DQuote | Ctx::HereDoc | Ctx::Arith | Ctx::ParamWord { dq: true, .. }
            );
            match c {
                b'\\' => {
                    self.pos += 1;
                    let Some(n) = self.byte(self.pos) else {
                        lit.push(b'\\');
                        continue;
                    };
                    let escapes = if !dq_like {
                        true
                    } else {
                        matches!(n, b'$' | b'`' | b'\\')
                            || (n == b'"' && matches!(ctx, Ctx::DQuote | Ctx::ParamWord { .. }))
                            || (n == b'}' && matches!(ctx, Ctx::ParamWord { .. }))
                    };
                    if escapes {
                        self.bump();
                        flush(&mut lit, &mut parts);
                        parts.push(WordPart::Quoted(vec![n]));
                    } else {
                        lit.push(b'\\');
                    }
                }
                b'\''
                    if matches!(
                        ctx,
                        Ctx::Unquoted
                            | Ctx::ParamWord { dq: false, .. }
                            | Ctx::ParamWord { pattern: true, .. }
                    ) =>
                {
                    self.pos += 1;
                    let start = self.pos;
                    loop {
                        match self.bump() {
                            Some(b'\'') => break,
                            Some(_) => {}
                            None => return Err(self.err("Unterminated quoted string")),
                        }
                    }
                    flush(&mut lit, &mut parts);
                    let text = self.buf.get(start..self.pos - 1).unwrap_or(&[]).to_vec();
                    parts.push(WordPart::Quoted(text));
                }
                b'"' if matches!(ctx, Ctx::Unquoted | Ctx::ParamWord { .. }) => {
                    self.pos += 1;
                    flush(&mut lit, &mut parts);
                    let inner = self.lex_parts(Ctx::DQuote)?;
                    parts.push(WordPart::DQuoted(inner));
                }
                b'$' => {
                    self.pos += 1;
                    let in_dq = matches!(
                        ctx,
                        Ctx::DQuote | Ctx::HereDoc | Ctx::ParamWord { dq: true, .. }
                    );
                    match self.dollar(in_dq)? {
                        Some(p) => {
                            flush(&mut lit, &mut parts);
                            parts.push(p);
                        }
                        None => lit.push(b'$'),
                    }
                }
                b'`' => {
                    self.pos += 1;
                    flush(&mut lit, &mut parts);
                    let p = self.backquote(dq_like)?;
                    parts.push(p);
                }
                _ => {
                    self.bump();
                    lit.push(c);
                }
            }
        }
        flush(&mut lit, &mut parts);
        Ok(parts)
    }

    /// After a `$`: the expansion it starts, or `None` for a literal `$`.
    fn dollar(&mut self, in_dq: bool) -> PResult<Option<WordPart>> {
        let Some(c) = self.cur() else {
            return Ok(None);
        };
        match c {
            b'{' => {
                self.pos += 1;
                Ok(Some(self.brace_param(in_dq)?))
            }
            b'(' => {
                self.pos += 1;
                if self.cur() == Some(b'(') {
                    self.pos += 1;
                    let parts = self.lex_parts(Ctx::Arith)?;
                    return Ok(Some(WordPart::Arith(parts)));
                }
                let list = self.subcommand()?;
                Ok(Some(WordPart::CmdSub(Rc::new(list))))
            }
            c if is_name_start(c) => {
                let mut name = Vec::new();
                while let Some(c) = self.cur() {
                    if !is_name_char(c) {
                        break;
                    }
                    name.push(c);
                    self.pos += 1;
                }
                Ok(Some(param(Param::Var(name), ParamOp::Plain)))
            }
            c if c.is_ascii_digit() => {
                self.pos += 1;
                Ok(Some(param(
                    Param::Positional(usize::from(c - b'0')),
                    ParamOp::Plain,
                )))
            }
            b'@' | b'*' | b'#' | b'?' | b'-' | b'$' | b'!' => {
                self.pos += 1;
                Ok(Some(param(Param::Special(c), ParamOp::Plain)))
            }
            _ => Ok(None),
        }
    }

    /// The parameter name right after `${` (or `${#`).
    fn param_name(&mut self) -> PResult<Param> {
        let Some(c) = self.cur() else {
            return Err(self.err("Missing '}'"));
        };
        if is_name_start(c) {
            let mut name = Vec::new();
            while let Some(c) = self.cur() {
                if !is_name_char(c) {
                    break;
                }
                name.push(c);
                self.pos += 1;
            }
            Ok(Param::Var(name))
        } else if c.is_ascii_digit() {
            let mut n: usize = 0;
            while let Some(c) = self.cur() {
                if !c.is_ascii_digit() {
                    break;
                }
                n = n.saturating_mul(10).saturating_add(usize::from(c - b'0'));
                self.pos += 1;
            }
            Ok(Param::Positional(n))
        } else if b"@*#?-$!".contains(&c) {
            self.pos += 1;
            Ok(Param::Special(c))
        } else {
            Err(self.err("Bad substitution"))
        }
    }

    fn brace_param(&mut self, in_dq: bool) -> PResult<WordPart> {
        if self.cur() == Some(b'#') {
            let next = self.byte(self.pos + 1);
            let length = match next {
                Some(b'}') => false,
                Some(n) => is_name_char(n) || b"@*#?-$!".contains(&n),
                None => false,
            };
            if length {
                self.pos += 1;
                let p = self.param_name()?;
                if self.cur() != Some(b'}') {
                    return Err(self.err("Bad substitution"));
                }
                self.pos += 1;
                return Ok(param(p, ParamOp::Length));
            }
        }
        let p = self.param_name()?;
        let Some(c) = self.cur() else {
            return Err(self.err("Missing '}'"));
        };
        self.pos += 1;
        let colon = c == b':';
        let opc = if colon {
            match self.cur() {
                Some(o) if b"-=?+".contains(&o) => {
                    self.pos += 1;
                    o
                }
                _ => return Err(self.err("Bad substitution")),
            }
        } else {
            c
        };
        let word_ctx = |pattern| Ctx::ParamWord { dq: in_dq, pattern };
        let op = match opc {
            b'}' => return Ok(param(p, ParamOp::Plain)),
            b'-' => ParamOp::Default(colon, self.param_word(word_ctx(false))?),
            b'=' => ParamOp::Assign(colon, self.param_word(word_ctx(false))?),
            b'?' => ParamOp::Error(colon, self.param_word(word_ctx(false))?),
            b'+' => ParamOp::Alt(colon, self.param_word(word_ctx(false))?),
            b'%' | b'#' => {
                let longest = self.cur() == Some(opc);
                if longest {
                    self.pos += 1;
                }
                let w = self.param_word(word_ctx(true))?;
                if opc == b'%' {
                    ParamOp::TrimSuffix(longest, w)
                } else {
                    ParamOp::TrimPrefix(longest, w)
                }
            }
            _ => return Err(self.err("Bad substitution")),
        };
        Ok(param(p, op))
    }

    fn param_word(&mut self, ctx: Ctx) -> PResult<Word> {
        Ok(Word {
            parts: self.lex_parts(ctx)?,
        })
    }

    /// The list of a `$(...)`, up to and including its `)`.
    fn subcommand(&mut self) -> PResult<List> {
        let saved = self.peeked.take();
        let list = self.compound_list(true)?;
        let t = self.next()?;
        if t != Tok::Op(")") {
            return Err(self.expecting(&t, ")"));
        }
        self.peeked = saved;
        Ok(list)
    }

    /// A backquoted command: its text with the backslashes that quote `` ` ``, `$` and `\`
    /// removed, parsed on its own.
    fn backquote(&mut self, in_dq: bool) -> PResult<WordPart> {
        let line = self.line;
        let mut text = Vec::new();
        loop {
            match self.bump() {
                None => return Err(self.err("EOF in backquote substitution")),
                Some(b'`') => break,
                Some(b'\\') => match self.byte(self.pos) {
                    Some(b'\n') => {
                        self.bump();
                    }
                    Some(n) if n == b'$' || n == b'`' || n == b'\\' || (in_dq && n == b'"') => {
                        self.bump();
                        text.push(n);
                    }
                    _ => text.push(b'\\'),
                },
                Some(c) => text.push(c),
            }
        }
        let mut sub = Parser::new(text, line);
        sub.aliases.clone_from(&self.aliases);
        let list = sub.parse_all()?;
        Ok(WordPart::CmdSub(Rc::new(list)))
    }

    // ---- here-documents ----

    fn read_heredocs(&mut self) -> PResult<()> {
        let pending = std::mem::take(&mut self.pending);
        for hd in pending {
            let start_line = self.line;
            let mut body = Vec::new();
            let mut delimited = false;
            while self.pos < self.buf.len() {
                let mut line = Vec::new();
                loop {
                    match self.bump() {
                        None | Some(b'\n') => break,
                        Some(b'\\') if !hd.quoted && self.byte(self.pos) == Some(b'\n') => {
                            self.bump();
                        }
                        Some(c) => line.push(c),
                    }
                }
                let content: &[u8] = if hd.strip_tabs {
                    let n = line.iter().take_while(|&&c| c == b'\t').count();
                    &line[n..]
                } else {
                    &line
                };
                if content == hd.delim.as_slice() {
                    delimited = true;
                    break;
                }
                body.extend_from_slice(content);
                body.push(b'\n');
            }
            if !delimited {
                self.heredoc_at_eof = true;
            }
            let word = if hd.quoted {
                Word {
                    parts: vec![WordPart::Quoted(body)],
                }
            } else {
                let mut sub = Parser::new(body, start_line);
                sub.aliases.clone_from(&self.aliases);
                let parts = sub.lex_parts(Ctx::HereDoc)?;
                Word {
                    parts: vec![WordPart::DQuoted(parts)],
                }
            };
            *hd.body.borrow_mut() = word;
        }
        Ok(())
    }

    // ---- grammar ----

    /// A list inside a compound command, up to a closing keyword, `)`, `;;` or end of input.
    fn compound_list(&mut self, allow_empty: bool) -> PResult<List> {
        let mut list = List::default();
        loop {
            self.skip_newlines()?;
            let t = self.peek()?;
            if t == Tok::Eof || self.ends_command(&t) {
                break;
            }
            let and_or = self.and_or()?;
            let mut background = false;
            match self.peek()? {
                Tok::Op("&") => {
                    self.next()?;
                    background = true;
                }
                Tok::Op(";") | Tok::Newline => {
                    self.next()?;
                }
                _ => {
                    list.items.push(Item { and_or, background });
                    break;
                }
            }
            list.items.push(Item { and_or, background });
        }
        if list.items.is_empty() && !allow_empty {
            let t = self.peek()?;
            return Err(self.unexpected(&t));
        }
        Ok(list)
    }

    fn and_or(&mut self) -> PResult<AndOr> {
        let first = self.pipeline()?;
        let mut rest = Vec::new();
        loop {
            let op = match self.peek()? {
                Tok::Op("&&") => AndOrOp::And,
                Tok::Op("||") => AndOrOp::Or,
                _ => break,
            };
            self.next()?;
            self.skip_newlines()?;
            rest.push((op, self.pipeline()?));
        }
        Ok(AndOr { first, rest })
    }

    fn pipeline(&mut self) -> PResult<Pipeline> {
        let mut bang = false;
        while self.peek_keyword()? == Some(b"!") {
            self.next()?;
            bang = !bang;
        }
        let mut cmds = vec![self.command()?];
        while self.peek()? == Tok::Op("|") {
            self.next()?;
            self.skip_newlines()?;
            cmds.push(self.command()?);
        }
        Ok(Pipeline { bang, cmds })
    }

    /// Substitutes an alias for the peeked word when it names one; true if it did.
    fn try_alias(&mut self) -> PResult<bool> {
        let Some(Tok::Word { word, start, end }) = self.peeked.clone() else {
            return Ok(false);
        };
        let Some(lit) = word.as_literal() else {
            return Ok(false);
        };
        if KEYWORDS.contains(&lit) {
            return Ok(false);
        }
        let Some(value) = self.aliases.get(lit).cloned() else {
            return Ok(false);
        };
        if self
            .alias_regions
            .iter()
            .any(|(name, region_end)| name.as_slice() == lit && *region_end >= end)
        {
            return Ok(false);
        }
        if end != self.pos {
            return Ok(false);
        }
        let name = lit.to_vec();
        let old_len = end - start;
        self.buf.splice(start..end, value.iter().copied());
        for (_, e) in self.alias_regions.iter_mut() {
            if *e >= end {
                *e = (*e + value.len()).saturating_sub(old_len);
            }
        }
        self.alias_regions.push((name, start + value.len()));
        self.alias_next =
            matches!(value.last(), Some(b' ') | Some(b'\t')).then_some(start + value.len());
        self.pos = start;
        self.peeked = None;
        Ok(true)
    }

    fn command(&mut self) -> PResult<Command> {
        while self.try_alias()? {
            self.peek()?;
        }
        let t = self.peek()?;
        let line = self.tok_line;
        let compound = match self.keyword_of(&t) {
            Some(b"{") => {
                self.next()?;
                let body = self.compound_list(false)?;
                self.expect_keyword("}")?;
                Compound::Brace(body)
            }
            Some(b"if") => self.if_clause()?,
            Some(b"while") | Some(b"until") => {
                let until = self.keyword_of(&t) == Some(b"until");
                self.next()?;
                let cond = self.compound_list(false)?;
                self.expect_keyword("do")?;
                let body = self.compound_list(false)?;
                self.expect_keyword("done")?;
                Compound::While { until, cond, body }
            }
            Some(b"for") => self.for_clause()?,
            Some(b"case") => self.case_clause()?,
            Some(kw) if kw != b"!" => return Err(self.unexpected(&t)),
            _ => {
                if t == Tok::Op("(") {
                    self.next()?;
                    let body = self.compound_list(false)?;
                    let close = self.next()?;
                    if close != Tok::Op(")") {
                        return Err(self.expecting(&close, ")"));
                    }
                    Compound::Subshell(body)
                } else {
                    return self.simple_command();
                }
            }
        };
        let mut redirs = Vec::new();
        while let Some(r) = self.redirection()? {
            redirs.push(r);
        }
        Ok(Command::Compound {
            body: Box::new(compound),
            redirs,
            line,
        })
    }

    fn if_clause(&mut self) -> PResult<Compound> {
        self.next()?;
        let mut branches = Vec::new();
        let mut otherwise = None;
        loop {
            let cond = self.compound_list(false)?;
            self.expect_keyword("then")?;
            let body = self.compound_list(false)?;
            branches.push((cond, body));
            match self.peek_keyword()? {
                Some(b"elif") => {
                    self.next()?;
                }
                Some(b"else") => {
                    self.next()?;
                    otherwise = Some(self.compound_list(false)?);
                    self.expect_keyword("fi")?;
                    break;
                }
                _ => {
                    self.expect_keyword("fi")?;
                    break;
                }
            }
        }
        Ok(Compound::If {
            branches,
            otherwise,
        })
    }

    fn for_clause(&mut self) -> PResult<Compound> {
        self.next()?;
        let t = self.next()?;
        let var = match &t {
            Tok::Word { word, .. } => match word.as_literal() {
                Some(l) if is_name(l) => l.to_vec(),
                _ => return Err(self.err("Bad for loop variable")),
            },
            _ => return Err(self.unexpected(&t)),
        };
        self.skip_newlines()?;
        let mut words = None;
        if self.peek_keyword()? == Some(b"in") {
            self.next()?;
            let mut list = Vec::new();
            loop {
                match self.peek()? {
                    Tok::Word { word, .. } => {
                        self.next()?;
                        list.push(word);
                    }
                    Tok::Op(";") | Tok::Newline => {
                        self.next()?;
                        break;
                    }
                    t => return Err(self.unexpected(&t)),
                }
            }
            words = Some(list);
        } else if self.peek()? == Tok::Op(";") {
            self.next()?;
        }
        self.skip_newlines()?;
        self.expect_keyword("do")?;
        let body = self.compound_list(false)?;
        self.expect_keyword("done")?;
        Ok(Compound::For { var, words, body })
    }

    fn case_clause(&mut self) -> PResult<Compound> {
        self.next()?;
        let word = match self.next()? {
            Tok::Word { word, .. } => word,
            t => return Err(self.unexpected(&t)),
        };
        self.skip_newlines()?;
        self.expect_keyword("in")?;
        let mut arms = Vec::new();
        loop {
            self.skip_newlines()?;
            if self.peek_keyword()? == Some(b"esac") {
                self.next()?;
                break;
            }
            if self.peek()? == Tok::Op("(") {
                self.next()?;
            }
            let mut patterns = Vec::new();
            loop {
                match self.next()? {
                    Tok::Word { word, .. } => patterns.push(word),
                    t => return Err(self.unexpected(&t)),
                }
                match self.next()? {
                    Tok::Op("|") => {}
                    Tok::Op(")") => break,
                    t => return Err(self.expecting(&t, ")")),
                }
            }
            let body = self.compound_list(true)?;
            arms.push(CaseArm { patterns, body });
            match self.peek()? {
                Tok::Op(";;") => {
                    self.next()?;
                }
                _ => {
                    self.skip_newlines()?;
                    self.expect_keyword("esac")?;
                    break;
                }
            }
        }
        Ok(Compound::Case { word, arms })
    }

    /// A redirection, if the next tokens are one.
    fn redirection(&mut self) -> PResult<Option<Redir>> {
        let (fd, op) = match self.peek()? {
            Tok::IoNum(n) => {
                self.next()?;
                match self.next()? {
                    Tok::Op(op) => (Some(n), op),
                    t => return Err(self.unexpected(&t)),
                }
            }
            Tok::Op(op) if op.starts_with('<') || op.starts_with('>') => {
                self.next()?;
                (None, op)
            }
            _ => return Ok(None),
        };
        let target_tok = self.next()?;
        let Tok::Word { word, start, end } = target_tok else {
            return Err(self.unexpected(&target_tok));
        };
        let (default_fd, rop) = match op {
            "<" => (0, RedirOp::In),
            ">" => (1, RedirOp::Out),
            ">|" => (1, RedirOp::Clobber),
            ">>" => (1, RedirOp::Append),
            "<>" => (0, RedirOp::InOut),
            "<&" => (0, RedirOp::DupIn),
            ">&" => (1, RedirOp::DupOut),
            "<<" | "<<-" => {
                let raw = self.buf.get(start..end).unwrap_or(&[]).to_vec();
                if raw.windows(2).any(|w| w == b"$(") || raw.contains(&b'`') {
                    return Err(self.err("Bad here-document delimiter"));
                }
                let (delim, quoted) = heredoc_delim(&raw);
                let body = Rc::new(RefCell::new(Word::default()));
                self.pending.push(PendingHereDoc {
                    delim,
                    strip_tabs: op == "<<-",
                    quoted,
                    body: Rc::clone(&body),
                });
                return Ok(Some(Redir {
                    fd: fd.unwrap_or(0),
                    op: RedirOp::In,
                    target: RedirTarget::HereDoc(body),
                }));
            }
            _ => return Err(self.err(format!("\"{op}\" unexpected"))),
        };
        Ok(Some(Redir {
            fd: fd.unwrap_or(default_fd),
            op: rop,
            target: RedirTarget::Word(word),
        }))
    }

    fn simple_command(&mut self) -> PResult<Command> {
        let line = self.tok_line;
        let mut cmd = SimpleCmd {
            assigns: Vec::new(),
            words: Vec::new(),
            redirs: Vec::new(),
            line,
        };
        loop {
            if let Some(r) = self.redirection()? {
                cmd.redirs.push(r);
                continue;
            }
            if let Some(at) = self.alias_next.filter(|_| !cmd.words.is_empty()) {
                if let Tok::Word { start, .. } = self.peek()? {
                    if start >= at {
                        self.alias_next = None;
                        if self.try_alias()? {
                            continue;
                        }
                    }
                }
            }
            let Tok::Word { word, .. } = self.peek()? else {
                break;
            };
            if cmd.words.is_empty() {
                if let Some(a) = as_assignment(&word) {
                    self.next()?;
                    cmd.assigns.push(a);
                    continue;
                }
            }
            self.next()?;
            let first = cmd.words.is_empty() && cmd.assigns.is_empty();
            cmd.words.push(word);
            if first && self.peek()? == Tok::Op("(") {
                return self.function_def(cmd, line);
            }
        }
        let t = self.peek()?;
        if t == Tok::Op("(")
            || (cmd.words.is_empty() && cmd.assigns.is_empty() && cmd.redirs.is_empty())
        {
            return Err(self.unexpected(&t));
        }
        Ok(Command::Simple(cmd))
    }

    fn function_def(&mut self, cmd: SimpleCmd, line: u32) -> PResult<Command> {
        self.next()?;
        let close = self.next()?;
        if close != Tok::Op(")") {
            return Err(self.expecting(&close, ")"));
        }
        let name = match cmd.words.first().and_then(Word::as_literal) {
            Some(n) if cmd.redirs.is_empty() && is_name(n) => n.to_vec(),
            _ => return Err(self.err("Bad function name")),
        };
        self.skip_newlines()?;
        let body = self.command()?;
        Ok(Command::FuncDef {
            name,
            body: Rc::new(body),
            line,
        })
    }
}

fn param(p: Param, op: ParamOp) -> WordPart {
    WordPart::Param(Box::new(ParamExp { param: p, op }))
}

fn is_closer(kw: &[u8]) -> bool {
    matches!(
        kw,
        b"then" | b"else" | b"elif" | b"fi" | b"do" | b"done" | b"esac" | b"}"
    )
}

/// `name=value` words before the command name.
pub fn as_assignment(word: &Word) -> Option<Assign> {
    let Some(WordPart::Lit(first)) = word.parts.first() else {
        return None;
    };
    let eq = first.iter().position(|&c| c == b'=')?;
    if !is_name(&first[..eq]) {
        return None;
    }
    let mut parts = Vec::with_capacity(word.parts.len());
    if eq + 1 < first.len() {
        parts.push(WordPart::Lit(first[eq + 1..].to_vec()));
    }
    parts.extend(word.parts.iter().skip(1).cloned());
    Some(Assign {
        name: first[..eq].to_vec(),
        value: Word { parts },
    })
}

/// The delimiter of a here-document (its text with quotes removed) and whether any part of
/// it was quoted.
fn heredoc_delim(raw: &[u8]) -> (Bytes, bool) {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut i = 0;
    while let Some(&c) = raw.get(i) {
        i += 1;
        match c {
            b'\\' => {
                quoted = true;
                if let Some(&n) = raw.get(i) {
                    out.push(n);
                    i += 1;
                }
            }
            b'\'' => {
                quoted = true;
                while let Some(&n) = raw.get(i) {
                    i += 1;
                    if n == b'\'' {
                        break;
                    }
                    out.push(n);
                }
            }
            b'"' => {
                quoted = true;
                while let Some(&n) = raw.get(i) {
                    i += 1;
                    match n {
                        b'"' => break,
                        b'\\' if matches!(raw.get(i), Some(b'"' | b'\\' | b'$' | b'`')) => {
                            out.push(raw[i]);
                            i += 1;
                        }
                        _ => out.push(n),
                    }
                }
            }
            _ => out.push(c),
        }
    }
    (out, quoted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> PResult<Vec<List>> {
        let mut p = Parser::new(s.as_bytes().to_vec(), 1);
        let aliases = HashMap::new();
        let mut out = Vec::new();
        while let Some(l) = p.next_command(&aliases)? {
            out.push(l);
        }
        Ok(out)
    }

    #[test]
    fn parses_basic_forms() {
        assert!(parse("echo hi; ls | wc -l && true || false &\n").is_ok());
        assert!(parse("if a; then b; elif c; then d; else e; fi").is_ok());
        assert!(parse("for i in 1 2; do echo $i; done").is_ok());
        assert!(parse("case $x in (a|b) echo;; *) ;; esac").is_ok());
        assert!(parse("f() { echo \"${x:-a b}\" $(echo `echo y`) $((1+2)); }").is_ok());
        assert!(parse("cat <<EOF\nhello $x\nEOF\n").is_ok());
    }

    #[test]
    fn reports_syntax_errors() {
        let e = parse("if true; then echo; fi fi").err();
        assert!(e.is_some());
        assert_eq!(
            parse("echo 'abc").err().map(|e| e.msg),
            Some("Unterminated quoted string".into())
        );
        assert!(parse("{ }").is_err());
        assert!(parse("echo ${x").is_err());
    }

    #[test]
    fn heredoc_body_is_filled() {
        let lists = parse("cat <<-'E'\n\tx $y\n\tE\n").unwrap_or_default();
        let Some(Item { and_or, .. }) = lists.first().and_then(|l| l.items.first()) else {
            panic!("no command");
        };
        let Command::Simple(c) = &and_or.first.cmds[0] else {
            panic!("not simple");
        };
        let RedirTarget::HereDoc(b) = &c.redirs[0].target else {
            panic!("not a heredoc");
        };
        assert_eq!(b.borrow().parts, vec![WordPart::Quoted(b"x $y\n".to_vec())]);
    }

    #[test]
    fn garbage_does_not_panic() {
        let samples = [
            "((((",
            "))",
            "${",
            "${#",
            "$((",
            "`",
            "<<",
            "<<EOF",
            "case",
            "for",
            "f()",
            "&&",
            "|",
            "${x:}",
            "${x%",
            "\\",
            "'\"",
            "$(((",
            "a=b c=d <",
            "!",
            "! !",
            "{ ( ) }",
        ];
        for s in samples {
            let _ = parse(s);
        }
    }
}
