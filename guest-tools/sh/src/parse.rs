//! Parsing: yash-syntax (the parser of yash-rs, a POSIX shell) reads one complete command at a
//! time, with the aliases defined so far, pulling lines from the input only as it needs them (so
//! a command that reads stdin gets what follows it, and a syntax error stops the script only
//! where it is). This module feeds it, turns its syntax tree into the executor's (`ast.rs`),
//! keeps dash's answers where yash accepts more (arrays, `;&`, `>>|`, `<<<`), edits the text
//! where yash reads it differently (see `Edit`), and words errors the way dash does.
//!
//! Shell text is bytes and yash reads `char`s: a byte that is not part of valid UTF-8 travels
//! through the parser as a private-use character (`U+10FF00` + byte) and comes back as itself.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU64;
use std::rc::Rc;

use futures_util::FutureExt;
use yash_syntax::alias::{Alias, Glossary};
use yash_syntax::parser::lex::Lexer;
use yash_syntax::parser::{Error as YashError, ErrorCause, SyntaxError};
use yash_syntax::source::{Code, Location, Source};
use yash_syntax::syntax as y;
use yash_syntax::syntax::{MaybeLiteral, Unquote};

use crate::ast::*;
use crate::io;

/// A syntax error: dash prints `sh: LINE: Syntax error: MSG` and exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: u32,
    pub msg: String,
}

type PResult<T> = Result<T, ParseError>;

pub fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

pub fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

pub fn is_name(s: &[u8]) -> bool {
    matches!(s.first(), Some(&c) if is_name_start(c)) && s.iter().all(|&c| is_name_char(c))
}

// ---- bytes <-> chars ----

const RAW_BYTE: u32 = 0x10_FF00;

/// `bytes` as text, each byte outside valid UTF-8 as `U+10FF00 + byte`.
fn decode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for &b in chunk.invalid() {
            out.extend(char::from_u32(RAW_BYTE + u32::from(b)));
        }
    }
    out
}

fn push_char(out: &mut Vec<u8>, c: char) {
    match u32::from(c).checked_sub(RAW_BYTE) {
        Some(b) if b <= 0xFF => out.push(b as u8),
        _ => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
    }
}

fn encode(s: &str) -> Bytes {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        push_char(&mut out, c);
    }
    out
}

// ---- input ----

enum Src {
    Memory { buf: Vec<u8>, pos: usize },
    Stdin,
}

/// Where the parser's lines come from, and what the shell tells it between commands.
struct Feed {
    src: Src,
    /// Lines read already and given again, after an edit (see `Edit`), before `src`'s next.
    replay: VecDeque<String>,
    /// `set -v`: lines are written to stderr as they are read, as dash does.
    verbose: bool,
    /// PS1 and PS2, when the shell is interactive.
    prompts: Option<(Bytes, Bytes)>,
    /// The last line read ended in a line continuation.
    continued: bool,
}

/// The lines yash asks for, one at a time.
struct Lines(Rc<RefCell<Feed>>);

impl yash_syntax::input::Input for Lines {
    async fn next_line(
        &mut self,
        context: &yash_syntax::input::Context,
    ) -> yash_syntax::input::Result {
        let mut feed = self.0.borrow_mut();
        if let Some(line) = feed.replay.pop_front() {
            return Ok(line);
        }
        let mut line = Vec::new();
        match &mut feed.src {
            Src::Memory { buf, pos } => {
                let rest = buf.get(*pos..).unwrap_or(&[]);
                let len = rest
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(rest.len(), |i| i + 1);
                line.extend_from_slice(&rest[..len]);
                *pos += len;
            }
            Src::Stdin => {
                if let Some((ps1, ps2)) = &feed.prompts {
                    io::write_all(2, if context.is_first_line() { ps1 } else { ps2 });
                }
                io::read_line(0, &mut line)?;
            }
        }
        if feed.verbose {
            io::write_all(2, &line);
        }
        // dash drops NUL bytes from its input.
        line.retain(|&c| c != 0);
        // Nothing is read past the end of the input (yash 0.21's lexer panics on `${` there):
        // a last line without its newline reads as if it had one, and an input that ends in a
        // line continuation gets an empty line.
        if line.is_empty() {
            if std::mem::take(&mut feed.continued) {
                return Ok("\n".to_owned());
            }
            return Ok(String::new());
        }
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        let backslashes = line
            .iter()
            .rev()
            .skip(1)
            .take_while(|&&c| c == b'\\')
            .count();
        feed.continued = backslashes % 2 == 1;
        Ok(decode(&line))
    }
}

/// Where yash and dash read the same text differently, the command's text is edited so that
/// yash reads it as dash does, and parsed again.
enum Edit {
    /// Insert the text at this character.
    Insert(usize, &'static str),
    /// Add these lines at the end (the delimiter of a here-document cut off by the end of the
    /// input, which dash accepts).
    Append(String),
}

/// Why a command could not be turned into the executor's tree.
enum Fail {
    Syntax(ParseError),
    /// Read the command in `Code` again, edited.
    Edit(Rc<Code>, Edit),
}

impl From<ParseError> for Fail {
    fn from(e: ParseError) -> Fail {
        Fail::Syntax(e)
    }
}

type CResult<T> = Result<T, Fail>;

/// The aliases, as yash looks them up.
#[derive(Debug)]
struct Aliases<'a>(&'a HashMap<Bytes, Bytes>);

impl Glossary for Aliases<'_> {
    fn look_up(&self, name: &str) -> Option<Rc<Alias>> {
        let value = self.0.get(&encode(name))?;
        Some(Rc::new(Alias {
            name: name.to_owned(),
            replacement: decode(value),
            global: false,
            origin: Location::dummy(""),
        }))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A parser step that is not ready at once: the input never waits, so this does not happen.
fn would_block() -> ParseError {
    ParseError {
        line: 0,
        msg: "input would block".to_owned(),
    }
}

pub struct Parser {
    lexer: Lexer<'static>,
    feed: Rc<RefCell<Feed>>,
    /// How many more edits the current command may get (each makes progress; this bounds
    /// them anyway).
    edits_left: u8,
}

const EDITS: u8 = 64;

impl Parser {
    /// A parser over `src`, whose first line is `first_line` (scripts, `eval`, `.`, traps).
    pub fn new(src: Vec<u8>, first_line: u32) -> Parser {
        Parser::with(Src::Memory { buf: src, pos: 0 }, first_line)
    }

    /// A parser that reads the shell's stdin a line at a time, as the lines are needed.
    pub fn stdin() -> Parser {
        Parser::with(Src::Stdin, 1)
    }

    fn with(src: Src, first_line: u32) -> Parser {
        let feed = Rc::new(RefCell::new(Feed {
            src,
            replay: VecDeque::new(),
            verbose: false,
            prompts: None,
            continued: false,
        }));
        Parser {
            lexer: lexer(&feed, u64::from(first_line)),
            feed,
            edits_left: EDITS,
        }
    }

    /// `set -v` for the lines read from now on.
    pub fn set_verbose(&self, on: bool) {
        self.feed.borrow_mut().verbose = on;
    }

    /// The prompts written before each line read from stdin (an interactive shell).
    pub fn set_prompts(&self, prompts: Option<(Bytes, Bytes)>) {
        self.feed.borrow_mut().prompts = prompts;
    }

    /// After a syntax error: drop the rest of what was read, and go on with the next line.
    pub fn recover(&mut self) {
        self.lexer.reset();
        self.feed.borrow_mut().replay.clear();
        self.edits_left = EDITS;
    }

    /// Parses the next complete command (a list up to a newline); `None` at end of input.
    pub fn next_command(&mut self, aliases: &HashMap<Bytes, Bytes>) -> PResult<Option<List>> {
        let glossary = Aliases(aliases);
        loop {
            let mut parser = yash_syntax::parser::Parser::config()
                .aliases(&glossary)
                .input(&mut self.lexer);
            let parsed = match parser.command_line().now_or_never() {
                Some(Ok(Some(list))) => Conv::new(aliases).list(&list),
                Some(Ok(None)) => return Ok(None),
                Some(Err(e)) => match edit_for(&e) {
                    Some(edit) => Err(edit),
                    None => return Err(error(&e)),
                },
                None => return Err(would_block()),
            };
            match parsed {
                Ok(list) => {
                    self.edits_left = EDITS;
                    if !self.lexer.pending() {
                        // Each command's text is its own code: line numbers cost only its length.
                        self.lexer.flush();
                    }
                    if !list.items.is_empty() {
                        return Ok(Some(list));
                    }
                }
                Err(Fail::Syntax(e)) => return Err(e),
                Err(Fail::Edit(code, edit)) => {
                    let Some(left) = self.edits_left.checked_sub(1) else {
                        return Err(ParseError {
                            line: u32::try_from(code.start_line_number.get()).unwrap_or(u32::MAX),
                            msg: "too many constructs dash reads differently".to_owned(),
                        });
                    };
                    self.edits_left = left;
                    self.replay(&code, edit);
                }
            }
        }
    }

    /// Gives the text of `code` (the command read so far), edited, to a new lexer, which reads
    /// it before the rest of the input.
    fn replay(&mut self, code: &Code, edit: Edit) {
        let mut text = code.value.borrow().clone();
        match edit {
            Edit::Insert(at, what) => {
                let byte = text.char_indices().nth(at).map_or(text.len(), |(i, _)| i);
                text.insert_str(byte, what);
            }
            Edit::Append(lines) => {
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&lines);
            }
        }
        {
            let mut feed = self.feed.borrow_mut();
            for line in text.split_inclusive('\n').rev() {
                feed.replay.push_front(line.to_owned());
            }
        }
        self.lexer = lexer(&self.feed, code.start_line_number.get());
    }
}

fn lexer(feed: &Rc<RefCell<Feed>>, first_line: u64) -> Lexer<'static> {
    let mut config = yash_env::parser::Config::with_input(Box::new(Lines(feed.clone())));
    config.start_line_number = NonZeroU64::new(first_line).unwrap_or(NonZeroU64::MIN);
    config.source = Some(Rc::new(Source::Unknown));
    Lexer::from(config)
}

/// The edit that makes yash read a command that it refused the way dash reads it.
fn edit_for(e: &YashError) -> Option<Fail> {
    let loc = &e.location;
    let code = match &*loc.code.source {
        Source::Alias { .. } => None,
        _ => Some(loc.code.clone()),
    };
    if let Some(code) = &code {
        let at = dq_delimiter_end(&code.value.borrow());
        if let Some(at) = at {
            return Some(Fail::Edit(code.clone(), Edit::Insert(at, "''")));
        }
    }
    let edit = match &e.cause {
        // yash 0.21 gives the delimiter's location as the operator's.
        ErrorCause::Syntax(SyntaxError::UnclosedHereDocContent {
            redir_op_location: delimiter,
        }) => {
            let code = delimiter.code.clone();
            let raw: String = (code.value.borrow().chars())
                .skip(delimiter.range.start)
                .take(delimiter.range.len())
                .collect();
            let line = raw.parse::<y::Word>().ok()?.unquote().0 + "\n";
            // Added already, and the body is still open (a delimiter no line can match).
            if code.value.borrow().ends_with(&format!("\n{line}")) {
                return None;
            }
            return Some(Fail::Edit(code, Edit::Append(line)));
        }
        // `[[` and `function` are reserved words for yash and ordinary command names for dash:
        // quoted, they are names for yash too.
        ErrorCause::Syntax(
            SyntaxError::UnsupportedDoubleBracketCommand
            | SyntaxError::UnsupportedFunctionDefinitionSyntax,
        ) => Edit::Insert(loc.range.start, "\\"),
        // dash reads only one digit before a redirection operator (`10>f` is the word `10`,
        // then `>f`) and no `{name}`.
        ErrorCause::Syntax(SyntaxError::FdOutOfRange | SyntaxError::InvalidIoLocation) => {
            Edit::Insert(loc.range.end, " ")
        }
        _ => return None,
    };
    Some(Fail::Edit(code?, edit))
}

/// yash 0.21 reads the body of a here-document whose delimiter is quoted with double quotes
/// only (`<<"EOF"`) with expansions, as if it were unquoted; the body may then even fail to
/// parse. The character after the first such delimiter in `text`, where an empty `''` makes
/// yash see the quotes.
fn dq_delimiter_end(text: &str) -> Option<usize> {
    use yash_syntax::parser::lex::{Operator, TokenId};
    if !text.contains("<<") {
        return None;
    }
    let mut lexer = Lexer::with_code(text);
    let mut pending: Vec<(String, bool)> = Vec::new();
    loop {
        lexer.skip_blanks_and_comment().now_or_never()?.ok()?;
        let token = lexer.token().now_or_never()?.ok()?;
        match token.id {
            TokenId::EndOfInput => return None,
            TokenId::Operator(op @ (Operator::LessLess | Operator::LessLessDash)) => {
                lexer.skip_blanks().now_or_never()?.ok()?;
                let word = lexer.token().now_or_never()?.ok()?.word;
                let (delimiter, seen) = word.unquote();
                if !seen
                    && word
                        .units
                        .iter()
                        .any(|u| matches!(u, y::WordUnit::DoubleQuote(_)))
                {
                    return Some(word.location.range.end);
                }
                pending.push((delimiter, op == Operator::LessLessDash));
            }
            TokenId::Operator(Operator::Newline) => {
                for (delimiter, strip_tabs) in pending.drain(..) {
                    loop {
                        let line = lexer.line().now_or_never()?.ok()?;
                        let ended = !lexer.skip_if(|c| c == '\n').now_or_never()?.ok()?;
                        let body = if strip_tabs {
                            line.trim_start_matches('\t')
                        } else {
                            &line
                        };
                        if ended || body == delimiter {
                            break;
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// Parses all of `text` (a command substitution's).
fn parse_all(text: &str, line: u32, aliases: &HashMap<Bytes, Bytes>) -> PResult<List> {
    let mut p = Parser::new(encode(text), line);
    let mut list = List::default();
    while let Some(l) = p.next_command(aliases)? {
        list.items.extend(l.items);
    }
    Ok(list)
}

// ---- errors ----

fn line_of(loc: &Location) -> u32 {
    match &*loc.code.source {
        Source::Alias { original, .. } => line_of(original),
        _ => u32::try_from(loc.code.line_number(loc.range.start).get()).unwrap_or(u32::MAX),
    }
}

/// dash's words for a syntax error.
fn error(e: &YashError) -> ParseError {
    use SyntaxError as S;
    let token: String = {
        let code = e.location.code.value.borrow();
        code.chars()
            .skip(e.location.range.start)
            .take(e.location.range.len())
            .collect()
    };
    let unexpected = match token.as_str() {
        "" => "end of file unexpected".to_owned(),
        "\n" => "newline unexpected".to_owned(),
        t => format!("\"{t}\" unexpected"),
    };
    let expecting = |what: &str| format!("{unexpected} (expecting \"{what}\")");
    let msg = match &e.cause {
        ErrorCause::Io(err) => err.to_string(),
        ErrorCause::Syntax(s) => match s {
            S::UnclosedSingleQuote { .. }
            | S::UnclosedDoubleQuote { .. }
            | S::UnclosedDollarSingleQuote { .. } => "Unterminated quoted string".to_owned(),
            S::UnclosedParam { .. } => "Missing '}'".to_owned(),
            S::EmptyParam | S::InvalidParam | S::InvalidModifier | S::MultipleModifier => {
                "Bad substitution".to_owned()
            }
            S::UnclosedArith { .. } => "Missing '))'".to_owned(),
            S::UnclosedBackquote { .. } => "EOF in backquote substitution".to_owned(),
            S::UnclosedCommandSubstitution { .. } | S::UnclosedSubshell { .. } => expecting(")"),
            S::UnclosedGrouping { .. } => expecting("}"),
            S::UnclosedDoClause { .. } => expecting("done"),
            S::UnopenedDoClause
            | S::MissingForBody { .. }
            | S::UnclosedWhileClause { .. }
            | S::UnclosedUntilClause { .. } => expecting("do"),
            S::IfMissingThen { .. } | S::ElifMissingThen { .. } => expecting("then"),
            S::UnclosedIf { .. } => expecting("fi"),
            S::MissingIn { .. } => expecting("in"),
            S::UnclosedCase { .. } | S::UnclosedPatternList => expecting("esac"),
            S::MissingForName | S::InvalidForName => "Bad for loop variable".to_owned(),
            S::MissingHereDocDelimiter | S::MissingRedirOperand => {
                format!("{unexpected} (expecting word)")
            }
            S::UnsupportedDoubleBracketCommand => {
                "\"[[\" is reserved: kiln's sh has no [[ ]] (dash neither)".to_owned()
            }
            S::UnsupportedFunctionDefinitionSyntax => {
                "\"function\" is reserved: write NAME() { ...; } instead".to_owned()
            }
            _ => unexpected,
        },
    };
    ParseError {
        line: line_of(&e.location),
        msg,
    }
}

// ---- yash's tree into ours ----

struct Conv<'a> {
    aliases: &'a HashMap<Bytes, Bytes>,
    /// Per code met, where its newlines are: a long command (a whole script in a function)
    /// costs one pass, not one per line number.
    newlines: RefCell<Vec<(Rc<Code>, Vec<usize>)>>,
}

fn refused(line: u32, what: &str) -> Fail {
    Fail::Syntax(ParseError {
        line,
        msg: format!("\"{what}\" unexpected"),
    })
}

impl<'a> Conv<'a> {
    fn new(aliases: &'a HashMap<Bytes, Bytes>) -> Conv<'a> {
        Conv {
            aliases,
            newlines: RefCell::new(Vec::new()),
        }
    }

    /// The line `loc` is on (the line of the alias's name, for text from an alias).
    fn line(&self, loc: &Location) -> u32 {
        if let Source::Alias { original, .. } = &*loc.code.source {
            return self.line(original);
        }
        let mut tables = self.newlines.borrow_mut();
        let i = match tables.iter().position(|(c, _)| Rc::ptr_eq(c, &loc.code)) {
            Some(i) => i,
            None => {
                let newlines = (loc.code.value.borrow().chars().enumerate())
                    .filter_map(|(i, c)| (c == '\n').then_some(i))
                    .collect();
                tables.push((loc.code.clone(), newlines));
                tables.len() - 1
            }
        };
        let before = tables[i].1.partition_point(|&n| n < loc.range.start);
        let line = loc
            .code
            .start_line_number
            .get()
            .saturating_add(before as u64);
        u32::try_from(line).unwrap_or(u32::MAX)
    }

    fn list(&self, l: &y::List) -> CResult<List> {
        let items =
            l.0.iter()
                .map(|item| {
                    Ok(Item {
                        and_or: self.and_or(&item.and_or)?,
                        background: item.async_flag.is_some(),
                    })
                })
                .collect::<CResult<_>>()?;
        Ok(List { items })
    }

    fn and_or(&self, a: &y::AndOrList) -> CResult<AndOr> {
        let rest = a
            .rest
            .iter()
            .map(|(op, p)| {
                let op = match op {
                    y::AndOr::AndThen => AndOrOp::And,
                    y::AndOr::OrElse => AndOrOp::Or,
                };
                Ok((op, self.pipeline(p)?))
            })
            .collect::<CResult<_>>()?;
        Ok(AndOr {
            first: self.pipeline(&a.first)?,
            rest,
        })
    }

    fn pipeline(&self, p: &y::Pipeline) -> CResult<Pipeline> {
        let cmds = p
            .commands
            .iter()
            .map(|c| self.command(c))
            .collect::<CResult<_>>()?;
        Ok(Pipeline {
            bang: p.negation,
            cmds,
        })
    }

    fn command(&self, c: &y::Command) -> CResult<Command> {
        match c {
            y::Command::Simple(s) => self.simple(s),
            y::Command::Compound(full) => self.compound(full),
            y::Command::Function(f) => {
                let name = f
                    .name
                    .to_string_if_literal()
                    .map(|s| encode(&s))
                    .filter(|n| is_name(n))
                    .ok_or_else(|| ParseError {
                        line: self.line(&f.name.location),
                        msg: "Bad function name".to_owned(),
                    })?;
                Ok(Command::FuncDef {
                    name,
                    body: Rc::new(self.compound(&f.body)?),
                    line: self.line(&f.name.location),
                })
            }
        }
    }

    fn simple(&self, s: &y::SimpleCommand) -> CResult<Command> {
        let mut line = None;
        let mut assigns = Vec::with_capacity(s.assigns.len());
        let mut words = Vec::with_capacity(s.words.len());
        for a in &s.assigns {
            line.get_or_insert_with(|| self.line(&a.location));
            let y::Value::Scalar(value) = &a.value else {
                return Err(refused(self.line(&a.location), "("));
            };
            let name = encode(&a.name);
            let value = self.word(value)?;
            if is_name(&name) && words.is_empty() {
                assigns.push(Assign { name, value });
            } else {
                // `a[1]=x` is a word for dash, and so is every assignment after one.
                let mut parts = Parts::default();
                parts.lit.extend_from_slice(&name);
                parts.lit.push(b'=');
                for p in value.parts {
                    match p {
                        WordPart::Lit(l) => parts.lit.extend_from_slice(&l),
                        p => parts.push(p),
                    }
                }
                words.push(Word {
                    parts: parts.done(),
                });
            }
        }
        for (w, _) in &s.words {
            line.get_or_insert_with(|| self.line(&w.location));
            words.push(self.word(w)?);
        }
        let mut redirs = Vec::with_capacity(s.redirs.len());
        for r in s.redirs.iter() {
            line.get_or_insert_with(|| self.line(&r.body.operand().location));
            redirs.push(self.redir(r)?);
        }
        Ok(Command::Simple(SimpleCmd {
            assigns,
            words,
            redirs,
            line: line.unwrap_or(0),
        }))
    }

    fn compound(&self, full: &y::FullCompoundCommand) -> CResult<Command> {
        let redirs = full
            .redirs
            .iter()
            .map(|r| self.redir(r))
            .collect::<CResult<Vec<_>>>()?;
        let (body, line) = match &full.command {
            y::CompoundCommand::Grouping(l) => (Compound::Brace(self.list(l)?), self.first_line(l)),
            y::CompoundCommand::Subshell { body, location } => (
                Compound::Subshell(self.list(body)?),
                Some(self.line(location)),
            ),
            y::CompoundCommand::For { name, values, body } => {
                let var = name
                    .to_string_if_literal()
                    .map(|s| encode(&s))
                    .filter(|n| is_name(n))
                    .ok_or_else(|| ParseError {
                        line: self.line(&name.location),
                        msg: "Bad for loop variable".to_owned(),
                    })?;
                let words = match values {
                    Some(ws) => Some(ws.iter().map(|w| self.word(w)).collect::<CResult<_>>()?),
                    None => None,
                };
                let body = self.list(body)?;
                (
                    Compound::For { var, words, body },
                    Some(self.line(&name.location)),
                )
            }
            y::CompoundCommand::While { condition, body }
            | y::CompoundCommand::Until { condition, body } => (
                Compound::While {
                    until: matches!(full.command, y::CompoundCommand::Until { .. }),
                    cond: self.list(condition)?,
                    body: self.list(body)?,
                },
                self.first_line(condition),
            ),
            y::CompoundCommand::If {
                condition,
                body,
                elifs,
                r#else,
            } => {
                let mut branches = vec![(self.list(condition)?, self.list(body)?)];
                for e in elifs {
                    branches.push((self.list(&e.condition)?, self.list(&e.body)?));
                }
                let otherwise = match r#else {
                    Some(l) => Some(self.list(l)?),
                    None => None,
                };
                (
                    Compound::If {
                        branches,
                        otherwise,
                    },
                    self.first_line(condition),
                )
            }
            y::CompoundCommand::Case { subject, items } => {
                let mut arms = Vec::with_capacity(items.len());
                for item in items {
                    if item.continuation != y::CaseContinuation::Break {
                        let at = item
                            .patterns
                            .first()
                            .map_or(&subject.location, |w| &w.location);
                        return Err(refused(self.line(at), &item.continuation.to_string()));
                    }
                    arms.push(CaseArm {
                        patterns: item
                            .patterns
                            .iter()
                            .map(|w| self.word(w))
                            .collect::<CResult<_>>()?,
                        body: self.list(&item.body)?,
                    });
                }
                (
                    Compound::Case {
                        word: self.word(subject)?,
                        arms,
                    },
                    Some(self.line(&subject.location)),
                )
            }
        };
        let line = line
            .or_else(|| {
                full.redirs
                    .first()
                    .map(|r| self.line(&r.body.operand().location))
            })
            .unwrap_or(0);
        Ok(Command::Compound {
            body: Box::new(body),
            redirs,
            line,
        })
    }

    fn redir(&self, r: &y::Redir) -> CResult<Redir> {
        let fd = u32::try_from(r.fd_or_default().0).unwrap_or(u32::MAX);
        if fd > 9 {
            return Err(self.split_io_number(&r.body.operand().location));
        }
        let (op, target) = match &r.body {
            y::RedirBody::HereDoc(hd) => {
                let delimiter = &hd.delimiter;
                let substitutes = delimiter.units.iter().any(|u| match u {
                    y::WordUnit::Unquoted(t) => substitutes(t),
                    y::WordUnit::DoubleQuote(t) => t.0.iter().any(substitutes),
                    _ => false,
                });
                if substitutes {
                    return Err(refused(
                        self.line(&delimiter.location),
                        &delimiter.to_string(),
                    ));
                }
                // Any quoting in the delimiter makes the body literal. yash 0.21 misses the
                // quotes of `"EOF"` and reads the body with expansions: an empty `''` after the
                // delimiter makes it see them.
                let quoted = delimiter.units.iter().any(|u| match u {
                    y::WordUnit::Unquoted(t) => matches!(t, y::TextUnit::Backslashed(_)),
                    y::WordUnit::Tilde { .. } => false,
                    _ => true,
                });
                if quoted && !delimiter.unquote().1 {
                    let at = Edit::Insert(delimiter.location.range.end, "''");
                    return Err(Fail::Edit(delimiter.location.code.clone(), at));
                }
                let content = hd.content.get().cloned().unwrap_or_default();
                let word = if quoted {
                    let mut body = Vec::new();
                    for u in &content.0 {
                        if let y::TextUnit::Literal(c) | y::TextUnit::Backslashed(c) = u {
                            push_char(&mut body, *c);
                        }
                    }
                    Word {
                        parts: vec![WordPart::Quoted(body)],
                    }
                } else {
                    Word {
                        parts: vec![WordPart::DQuoted(self.text(&content)?)],
                    }
                };
                (
                    RedirOp::In,
                    RedirTarget::HereDoc(Rc::new(RefCell::new(word))),
                )
            }
            y::RedirBody::Normal { operator, operand } => {
                let op = match operator {
                    y::RedirOp::FileIn => RedirOp::In,
                    y::RedirOp::FileInOut => RedirOp::InOut,
                    y::RedirOp::FileOut => RedirOp::Out,
                    y::RedirOp::FileAppend => RedirOp::Append,
                    y::RedirOp::FileClobber => RedirOp::Clobber,
                    y::RedirOp::FdIn => RedirOp::DupIn,
                    y::RedirOp::FdOut => RedirOp::DupOut,
                    y::RedirOp::Pipe | y::RedirOp::String => {
                        return Err(refused(self.line(&operand.location), &operator.to_string()));
                    }
                };
                (op, RedirTarget::Word(self.word(operand)?))
            }
        };
        Ok(Redir { fd, op, target })
    }

    fn word(&self, w: &y::Word) -> CResult<Word> {
        let mut parts = Parts::default();
        for u in &w.units {
            match u {
                y::WordUnit::Unquoted(t) => self.text_unit(t, &mut parts)?,
                y::WordUnit::SingleQuote(s) => parts.push(WordPart::Quoted(encode(s))),
                y::WordUnit::DoubleQuote(t) => parts.push(WordPart::DQuoted(self.text(t)?)),
                y::WordUnit::DollarSingleQuote(s) => match dollar_quote_at(&w.location) {
                    // dash reads `$'...'` as a `$` and then a quoted string.
                    Some(at) => {
                        return Err(Fail::Edit(w.location.code.clone(), Edit::Insert(at, "\\")))
                    }
                    None => parts.push(WordPart::Quoted(escaped(s))),
                },
                y::WordUnit::Tilde { name, .. } => {
                    parts.lit('~');
                    for c in name.chars() {
                        parts.lit(c);
                    }
                }
            }
        }
        Ok(Word {
            parts: parts.done(),
        })
    }

    fn text(&self, t: &y::Text) -> CResult<Vec<WordPart>> {
        let mut parts = Parts::default();
        for u in &t.0 {
            self.text_unit(u, &mut parts)?;
        }
        Ok(parts.done())
    }

    fn text_unit(&self, u: &y::TextUnit, parts: &mut Parts) -> CResult<()> {
        match u {
            y::TextUnit::Literal(c) => parts.lit(*c),
            y::TextUnit::Backslashed(c) => {
                let mut b = Vec::new();
                push_char(&mut b, *c);
                parts.push(WordPart::Quoted(b));
            }
            y::TextUnit::RawParam { param, .. } => {
                parts.push(WordPart::Param(Box::new(ParamExp {
                    param: self.param(param),
                    op: ParamOp::Plain,
                })))
            }
            y::TextUnit::BracedParam(b) => {
                let op = match &b.modifier {
                    y::Modifier::None => ParamOp::Plain,
                    y::Modifier::Length => ParamOp::Length,
                    y::Modifier::Switch(s) => {
                        let colon = s.condition == y::SwitchCondition::UnsetOrEmpty;
                        let w = self.word(&s.word)?;
                        match s.action {
                            y::SwitchAction::Alter => ParamOp::Alt(colon, w),
                            y::SwitchAction::Default => ParamOp::Default(colon, w),
                            y::SwitchAction::Assign => ParamOp::Assign(colon, w),
                            y::SwitchAction::Error => ParamOp::Error(colon, w),
                        }
                    }
                    y::Modifier::Trim(t) => {
                        let longest = t.length == y::TrimLength::Longest;
                        let w = self.word(&t.pattern)?;
                        match t.side {
                            y::TrimSide::Prefix => ParamOp::TrimPrefix(longest, w),
                            y::TrimSide::Suffix => ParamOp::TrimSuffix(longest, w),
                        }
                    }
                };
                parts.push(WordPart::Param(Box::new(ParamExp {
                    param: self.param(&b.param),
                    op,
                })));
            }
            y::TextUnit::CommandSubst { content, location } => {
                let list = parse_all(content, self.line(location), self.aliases)?;
                parts.push(WordPart::CmdSub(Rc::new(list)));
            }
            y::TextUnit::Backquote { content, location } => {
                let text: String = content
                    .iter()
                    .map(|u| match u {
                        y::BackquoteUnit::Literal(c) | y::BackquoteUnit::Backslashed(c) => *c,
                    })
                    .collect();
                let list = parse_all(&text, self.line(location), self.aliases)?;
                parts.push(WordPart::CmdSub(Rc::new(list)));
            }
            y::TextUnit::Arith { content, .. } => parts.push(WordPart::Arith(self.text(content)?)),
        }
        Ok(())
    }

    fn param(&self, p: &y::Param) -> Param {
        match p.r#type {
            y::ParamType::Variable => Param::Var(encode(&p.id)),
            y::ParamType::Positional(n) => Param::Positional(n),
            y::ParamType::Special(s) => match s {
                y::SpecialParam::Zero => Param::Positional(0),
                y::SpecialParam::At => Param::Special(b'@'),
                y::SpecialParam::Asterisk => Param::Special(b'*'),
                y::SpecialParam::Number => Param::Special(b'#'),
                y::SpecialParam::Question => Param::Special(b'?'),
                y::SpecialParam::Hyphen => Param::Special(b'-'),
                y::SpecialParam::Dollar => Param::Special(b'$'),
                y::SpecialParam::Exclamation => Param::Special(b'!'),
            },
        }
    }

    /// dash reads one digit before a redirection operator: `echo 10>f` is `echo 10 >f`. The
    /// edit that makes yash read it so, given the location of the operand after the operator.
    fn split_io_number(&self, operand: &Location) -> Fail {
        let code = &operand.code;
        let chars: Vec<char> = code
            .value
            .borrow()
            .chars()
            .take(operand.range.start)
            .collect();
        let mut at = chars.len();
        while at > 0 && matches!(chars[at - 1], ' ' | '\t') {
            at -= 1;
        }
        while at > 0 && matches!(chars[at - 1], '<' | '>' | '&' | '|') {
            at -= 1;
        }
        let is_number = at > 0 && chars[at - 1].is_ascii_digit();
        match &*code.source {
            Source::Alias { .. } => refused(self.line(operand), "redirection"),
            _ if !is_number => refused(self.line(operand), "redirection"),
            _ => Fail::Edit(code.clone(), Edit::Insert(at, " ")),
        }
    }

    /// The line of the first word in `l`.
    fn first_line(&self, l: &y::List) -> Option<u32> {
        let item = l.0.first()?;
        let cmd = item.and_or.first.commands.first()?;
        match &**cmd {
            y::Command::Simple(s) => s
                .assigns
                .first()
                .map(|a| &a.location)
                .or_else(|| s.words.first().map(|(w, _)| &w.location))
                .or_else(|| s.redirs.first().map(|r| &r.body.operand().location))
                .map(line_of),
            y::Command::Compound(c) => match &c.command {
                y::CompoundCommand::Grouping(l)
                | y::CompoundCommand::While { condition: l, .. }
                | y::CompoundCommand::Until { condition: l, .. }
                | y::CompoundCommand::If { condition: l, .. } => self.first_line(l),
                y::CompoundCommand::Subshell { location, .. } => Some(self.line(location)),
                y::CompoundCommand::For { name, .. } => Some(self.line(&name.location)),
                y::CompoundCommand::Case { subject, .. } => Some(self.line(&subject.location)),
            },
            y::Command::Function(f) => Some(self.line(&f.name.location)),
        }
    }
}

/// Whether a here-document delimiter's part substitutes a command or arithmetic (dash refuses
/// those).
fn substitutes(t: &y::TextUnit) -> bool {
    matches!(
        t,
        y::TextUnit::CommandSubst { .. }
            | y::TextUnit::Backquote { .. }
            | y::TextUnit::Arith { .. }
    )
}

/// Where in its code the word's first `$'` is, outside quotes (None for a word from an alias).
fn dollar_quote_at(word: &Location) -> Option<usize> {
    if let Source::Alias { .. } = &*word.code.source {
        return None;
    }
    let text = word.code.value.borrow();
    let mut chars = text
        .chars()
        .enumerate()
        .skip(word.range.start)
        .take(word.range.len())
        .peekable();
    let mut quote = None;
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (None, '\\') | (Some('"'), '\\') => {
                chars.next();
            }
            (None, '$') if chars.peek().is_some_and(|&(_, n)| n == '\'') => return Some(i),
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if q == c => quote = None,
            _ => {}
        }
    }
    None
}

/// `$'...'` with its escapes applied.
fn escaped(s: &y::EscapedString) -> Bytes {
    let mut out = Vec::new();
    for u in &s.0 {
        match *u {
            y::EscapeUnit::Literal(c) | y::EscapeUnit::Unicode(c) => push_char(&mut out, c),
            y::EscapeUnit::DoubleQuote => out.push(b'"'),
            y::EscapeUnit::SingleQuote => out.push(b'\''),
            y::EscapeUnit::Backslash => out.push(b'\\'),
            y::EscapeUnit::Question => out.push(b'?'),
            y::EscapeUnit::Alert => out.push(7),
            y::EscapeUnit::Backspace => out.push(8),
            y::EscapeUnit::Escape => out.push(0x1b),
            y::EscapeUnit::FormFeed => out.push(0x0c),
            y::EscapeUnit::Newline => out.push(b'\n'),
            y::EscapeUnit::CarriageReturn => out.push(b'\r'),
            y::EscapeUnit::Tab => out.push(b'\t'),
            y::EscapeUnit::VerticalTab => out.push(0x0b),
            y::EscapeUnit::Control(b) | y::EscapeUnit::Octal(b) | y::EscapeUnit::Hex(b) => {
                out.push(b);
            }
        }
    }
    out
}

/// Word parts under construction: adjacent literal characters become one `Lit`.
#[derive(Default)]
struct Parts {
    parts: Vec<WordPart>,
    lit: Vec<u8>,
}

impl Parts {
    fn lit(&mut self, c: char) {
        push_char(&mut self.lit, c);
    }

    fn push(&mut self, p: WordPart) {
        self.flush();
        self.parts.push(p);
    }

    fn flush(&mut self) {
        if !self.lit.is_empty() {
            self.parts
                .push(WordPart::Lit(std::mem::take(&mut self.lit)));
        }
    }

    fn done(mut self) -> Vec<WordPart> {
        self.flush();
        self.parts
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(s: &[u8], aliases: &HashMap<Bytes, Bytes>) -> PResult<Vec<List>> {
        let mut p = Parser::new(s.to_vec(), 1);
        let mut out = Vec::new();
        while let Some(l) = p.next_command(aliases)? {
            out.push(l);
        }
        Ok(out)
    }

    fn parse(s: &str) -> PResult<Vec<List>> {
        parse_with(s.as_bytes(), &HashMap::new())
    }

    /// The first command of the first list.
    fn first(s: &str) -> Command {
        let lists = parse(s).unwrap_or_else(|e| panic!("{s:?}: {e:?}"));
        lists[0].items[0].and_or.first.cmds[0].clone()
    }

    fn simple(s: &str) -> SimpleCmd {
        match first(s) {
            Command::Simple(c) => c,
            c => panic!("{s:?} is not a simple command: {c:?}"),
        }
    }

    fn lit(s: &str) -> Word {
        Word {
            parts: vec![WordPart::Lit(s.as_bytes().to_vec())],
        }
    }

    fn heredoc(c: &SimpleCmd) -> Word {
        match &c.redirs[0].target {
            RedirTarget::HereDoc(b) => b.borrow().clone(),
            t => panic!("not a here-document: {t:?}"),
        }
    }

    #[test]
    fn parses_basic_forms() {
        for s in [
            "echo hi; ls | wc -l && true || false &\n",
            "if a; then b; elif c; then d; else e; fi",
            "for i in 1 2; do echo $i; done",
            "case $x in (a|b) echo;; *) ;; esac",
            "f() { echo \"${x:-a b}\" $(echo `echo y`) $((1+2)); }",
            "cat <<EOF\nhello $x\nEOF\n",
        ] {
            assert!(parse(s).is_ok(), "{s}");
        }
        let c = simple("a=1 echo \"$b\" ${c%%x} 2>&1");
        assert_eq!(c.assigns[0].name, b"a");
        assert_eq!(c.words[0], lit("echo"));
        assert_eq!(
            c.words[2].parts,
            vec![WordPart::Param(Box::new(ParamExp {
                param: Param::Var(b"c".to_vec()),
                op: ParamOp::TrimSuffix(true, lit("x")),
            }))]
        );
        assert_eq!((c.redirs[0].fd, c.redirs[0].op), (2, RedirOp::DupOut));
        for (s, until) in [
            ("while a; do b; done", false),
            ("until a; do b; done", true),
        ] {
            let Command::Compound { body, .. } = first(s) else {
                panic!("{s} is not compound");
            };
            assert!(
                matches!(*body, Compound::While { until: u, .. } if u == until),
                "{s}"
            );
        }
    }

    #[test]
    fn commands_know_their_line() {
        let lists = parse("true\n\n  echo \\\n  a; { \n:\n}\n").unwrap_or_default();
        let Command::Simple(c) = &lists[1].items[0].and_or.first.cmds[0] else {
            panic!("not simple");
        };
        assert_eq!(c.line, 3);
        let Command::Compound { line, .. } = &lists[1].items[1].and_or.first.cmds[0] else {
            panic!("not compound");
        };
        assert_eq!(*line, 5);
    }

    #[test]
    fn reports_syntax_errors_in_dash_words() {
        let msg = |s: &str| parse(s).err().map(|e| e.msg);
        assert_eq!(msg("echo 'abc"), Some("Unterminated quoted string".into()));
        assert_eq!(
            msg("if true; then echo"),
            Some("end of file unexpected (expecting \"fi\")".into())
        );
        assert_eq!(msg("echo ${x"), Some("Missing '}'".into()));
        assert_eq!(msg("f-g() { :; }"), Some("Bad function name".into()));
        assert_eq!(msg("a=(1 2)"), Some("\"(\" unexpected".into()));
        assert!(parse("if true; then echo; fi fi").is_err());
        assert!(parse("{ }").is_err());
        assert_eq!(parse("echo\n\n)").err().map(|e| e.line), Some(3));
    }

    #[test]
    fn aliases_apply_from_the_next_command() {
        let aliases = HashMap::from([(b"ll".to_vec(), b"ls -l ".to_vec())]);
        let lists = parse_with(b"ll ll\n", &aliases).unwrap_or_default();
        let Command::Simple(c) = &lists[0].items[0].and_or.first.cmds[0] else {
            panic!("not simple");
        };
        // The alias ends in a blank, so the word after it is looked up too.
        assert_eq!(c.words, vec![lit("ls"), lit("-l"), lit("ls"), lit("-l")]);
    }

    #[test]
    fn here_documents() {
        let c = simple("cat <<-'E'\n\tx $y\n\tE\n");
        assert_eq!(
            heredoc(&c).parts,
            vec![WordPart::Quoted(b"x $y\n".to_vec())]
        );
        // yash 0.21 misses the quotes of "E"; the body must stay literal, even unparsable.
        let c = simple("cat <<\"E\"\n$y `a $(b\nE\n");
        assert_eq!(
            heredoc(&c).parts,
            vec![WordPart::Quoted(b"$y `a $(b\n".to_vec())]
        );
        let c = simple("cat <<E\na\\$ $y\nE\n");
        assert_eq!(
            heredoc(&c).parts,
            vec![WordPart::DQuoted(vec![
                WordPart::Lit(b"a".to_vec()),
                WordPart::Quoted(b"$".to_vec()),
                WordPart::Lit(b" ".to_vec()),
                WordPart::Param(Box::new(ParamExp {
                    param: Param::Var(b"y".to_vec()),
                    op: ParamOp::Plain,
                })),
                WordPart::Lit(b"\n".to_vec()),
            ])]
        );
        // The input ends before the delimiter: dash ends the body there.
        let c = simple("cat <<E\nabc");
        assert_eq!(
            heredoc(&c).parts,
            vec![WordPart::DQuoted(vec![WordPart::Lit(b"abc\n".to_vec())])]
        );
        assert!(parse("cat <<$(a)\nx\n$(a)\n").is_err());
    }

    #[test]
    fn reads_what_yash_reads_otherwise_as_dash_does() {
        // `[[` and `function` are command names.
        let c = simple("[[ -f x ]] || echo no");
        assert_eq!(
            c.words[0].parts,
            vec![
                WordPart::Quoted(b"[".to_vec()),
                WordPart::Lit(b"[".to_vec())
            ]
        );
        assert_eq!(c.words[3], lit("]]"));
        // `$'...'` is `$` and a quoted string.
        let c = simple("echo $'a\\n'");
        assert_eq!(
            c.words[1].parts,
            vec![
                WordPart::Quoted(b"$".to_vec()),
                WordPart::Quoted(b"a\\n".to_vec())
            ]
        );
        // One digit before a redirection operator.
        let c = simple("echo 10>&2 x");
        assert_eq!(c.words, vec![lit("echo"), lit("10"), lit("x")]);
        assert_eq!((c.redirs[0].fd, c.redirs[0].op), (1, RedirOp::DupOut));
        // `a[1]=x` is a word.
        let c = simple("a[1]=x b=2");
        assert!(c.assigns.is_empty());
        assert_eq!(c.words, vec![lit("a[1]=x"), lit("b=2")]);
        assert!(parse("case x in x) ;& esac").is_err());
        assert!(parse("cat <<< x").is_err());
    }

    #[test]
    fn bytes_that_are_not_utf8_come_back_as_themselves() {
        let lists = parse_with(b"echo \xff\xfeab \xce\xbc\n", &HashMap::new()).unwrap_or_default();
        let Command::Simple(c) = &lists[0].items[0].and_or.first.cmds[0] else {
            panic!("not simple");
        };
        assert_eq!(
            c.words[1].parts,
            vec![WordPart::Lit(b"\xff\xfeab".to_vec())]
        );
        assert_eq!(
            c.words[2].parts,
            vec![WordPart::Lit("μ".as_bytes().to_vec())]
        );
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
            "[[",
            "$'",
            "cat <<\"",
            "cat <<\"E\"",
            "9999999999999999999>x",
            "{a}>x",
            "function",
            "${#\\",
            "echo ${\\\n",
            "<<\\($(%${#\\",
            "cat <<'E'\nx\\",
            "cat <<'a\nb'\nx",
        ];
        for s in samples {
            let _ = parse(s);
        }
    }
}
