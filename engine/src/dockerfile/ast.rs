//! The Dockerfile syntax tree: one [`Node`] per instruction, with the positions it came from.
//!
//! This mirrors BuildKit's `parser.Node` closely enough that [`Node::dump`] reproduces its
//! `Dump()` format byte for byte, but keeps arguments as plain strings: the only nesting a
//! Dockerfile has is `ONBUILD <instruction>`.

use super::go_quote;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// Parser directives found at the top (`# syntax=`, `# escape=`, `# check=`).
    pub directives: Directives,
    /// The escape character in force (`\` unless `# escape=` said otherwise).
    pub escape: char,
    /// The instructions, in order.
    pub instructions: Vec<Node>,
    /// Non-fatal findings, such as empty continuation lines.
    pub warnings: Vec<Warning>,
}

/// Parser directives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// `# syntax=...`
    pub syntax: Option<String>,
    /// `# escape=...`
    pub escape: Option<char>,
    /// `# check=...`
    pub check: Option<String>,
}

/// A warning with the line it refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line of the instruction the warning is about (its last line, as BuildKit
    /// reports it).
    pub line: usize,
    /// The message, e.g. `Empty continuation line found in: RUN echo hi`.
    pub message: String,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction word as written, lowercased (`run`, `copy`, or an unknown word).
    pub keyword: String,
    /// The instruction word exactly as written (`RUN`, `Run`), for messages.
    pub raw_keyword: String,
    /// `--name=value` flags before the arguments, quotes removed, as BuildKit's parser keeps them.
    pub flags: Vec<String>,
    /// The arguments after the per-instruction rule of BuildKit's parser (see `dump`).
    pub args: Vec<String>,
    /// For `ONBUILD`: the instruction it wraps (then `args` is empty).
    pub onbuild: Option<Box<Node>>,
    /// Whether `args` came from a JSON array (exec form).
    pub json: bool,
    /// Heredoc bodies attached to this instruction, in order.
    pub heredocs: Vec<Heredoc>,
    /// The logical line as written (continuations joined, comments removed), for history text.
    pub original: String,
    /// 1-based physical line where the instruction starts.
    pub start_line: usize,
    /// 1-based physical line where it ends (last continuation or heredoc terminator).
    pub end_line: usize,
}

/// A heredoc body (`<<EOF ... EOF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word with quotes removed.
    pub name: String,
    /// The file descriptor (`3<<EOF`), 0 when absent.
    pub fd: u32,
    /// False when any part of the delimiter was quoted: no variable expansion in the body.
    pub expand: bool,
    /// True for `<<-`: leading tabs are stripped from body lines at build time.
    pub chomp: bool,
    /// The body, lines verbatim including their newlines, un-chomped.
    pub content: String,
}

impl Dockerfile {
    /// BuildKit's `Node.Dump()` of the whole file: one `(…)` line per instruction, joined by
    /// newlines, without a final newline (the conformance `result` files add one).
    pub fn dump(&self) -> String {
        let lines: Vec<String> = self
            .instructions
            .iter()
            .map(|n| format!("({})", n.dump()))
            .collect();
        lines.join("\n")
    }
}

impl Node {
    /// BuildKit's `Node.Dump()` of one instruction: the lowercased keyword, the flags as a Go
    /// `%q` list, then each argument Go-quoted, or the nested instruction for ONBUILD:
    /// `run ["--mount=type=cache"] "make"`, `onbuild (copy "a" "b")`.
    pub fn dump(&self) -> String {
        let mut s = self.keyword.clone();
        if !self.flags.is_empty() {
            let flags: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            s.push_str(" [");
            s.push_str(&flags.join(" "));
            s.push(']');
        }
        if let Some(inner) = &self.onbuild {
            s.push_str(" (");
            s.push_str(&inner.dump());
            s.push(')');
        }
        for arg in &self.args {
            s.push(' ');
            s.push_str(&go_quote(arg));
        }
        s.trim().to_string()
    }
}
