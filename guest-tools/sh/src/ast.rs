//! The syntax tree the parser builds and the executor walks.
//!
//! Every type is serializable: child shells (subshells, pipeline stages, command substitutions,
//! background jobs) receive the tree they run, and the parent's functions, over a pipe.

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

/// Shell text is bytes: values, arguments and paths need not be UTF-8.
pub type Bytes = Vec<u8>;

/// A word: the concatenation of its parts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub parts: Vec<WordPart>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WordPart {
    /// Unquoted literal text (glob characters keep their meaning).
    Lit(Bytes),
    /// Quoted literal text: `'...'`, a backslash-escaped character, or literal text inside
    /// double quotes.
    Quoted(Bytes),
    /// `"..."`.
    DQuoted(Vec<WordPart>),
    /// `$name`, `${...}`.
    Param(Box<ParamExp>),
    /// `$(...)` or a backquoted command.
    CmdSub(Rc<List>),
    /// `$((...))`: the expression text, expanded like a double-quoted string first.
    Arith(Vec<WordPart>),
}

impl Word {
    /// The text of a word that is one unquoted literal (keywords, aliases, names).
    pub fn as_literal(&self) -> Option<&[u8]> {
        match self.parts.as_slice() {
            [WordPart::Lit(s)] => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Param {
    Var(Bytes),
    /// `$0`..`$9`, `${10}`...
    Positional(usize),
    /// One of `@ * # ? - $ !`.
    Special(u8),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamExp {
    pub param: Param,
    pub op: ParamOp,
}

/// What `${...}` does with the parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ParamOp {
    Plain,
    /// `${#x}`.
    Length,
    /// `${x-w}` / `${x:-w}`.
    Default(bool, Word),
    /// `${x=w}` / `${x:=w}`.
    Assign(bool, Word),
    /// `${x?w}` / `${x:?w}`.
    Error(bool, Word),
    /// `${x+w}` / `${x:+w}`.
    Alt(bool, Word),
    /// `${x%w}` (false) / `${x%%w}` (true).
    TrimSuffix(bool, Word),
    /// `${x#w}` / `${x##w}`.
    TrimPrefix(bool, Word),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedirOp {
    /// `<`
    In,
    /// `>`
    Out,
    /// `>|`
    Clobber,
    /// `>>`
    Append,
    /// `<>`
    InOut,
    /// `<&`
    DupIn,
    /// `>&`
    DupOut,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RedirTarget {
    Word(Word),
    /// A here-document body; filled in when the parser reaches the end of the line.
    HereDoc(Rc<RefCell<Word>>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Redir {
    pub fd: u32,
    pub op: RedirOp,
    pub target: RedirTarget,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assign {
    pub name: Bytes,
    pub value: Word,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimpleCmd {
    pub assigns: Vec<Assign>,
    pub words: Vec<Word>,
    pub redirs: Vec<Redir>,
    pub line: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseArm {
    pub patterns: Vec<Word>,
    pub body: List,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Compound {
    Brace(List),
    Subshell(List),
    For {
        var: Bytes,
        words: Option<Vec<Word>>,
        body: List,
    },
    While {
        until: bool,
        cond: List,
        body: List,
    },
    If {
        branches: Vec<(List, List)>,
        otherwise: Option<List>,
    },
    Case {
        word: Word,
        arms: Vec<CaseArm>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Simple(SimpleCmd),
    Compound {
        body: Box<Compound>,
        redirs: Vec<Redir>,
        line: u32,
    },
    FuncDef {
        name: Bytes,
        body: Rc<Command>,
        line: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub bang: bool,
    pub cmds: Vec<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AndOrOp {
    And,
    Or,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AndOr {
    pub first: Pipeline,
    pub rest: Vec<(AndOrOp, Pipeline)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub and_or: AndOr,
    pub background: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct List {
    pub items: Vec<Item>,
}
