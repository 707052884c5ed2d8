//! The Dockerfile front end: text -> [`ast::Dockerfile`] -> typed [`instruction::Instruction`]s.
//! The only reader of Dockerfile text.
//!
//! [`parse`] follows BuildKit's parser rule for rule (see `parser`), so that a Dockerfile means
//! in kiln what it means to `docker build`; [`ast::Dockerfile::dump`] prints BuildKit's AST
//! dump byte for byte, which is how the conformance suite checks it. [`instruction::instructions`]
//! then applies BuildKit's instruction checks (flags, argument counts, stage names, mounts) and
//! keeps every value the builder expands as written, for the planner.

pub mod ast;
pub mod directives;
mod error;
mod gocompat;
pub mod heredoc;
pub mod instruction;
mod json;
pub mod mount;
mod parser;
pub mod scope;
pub mod shell;

pub use error::{FlagError, ParseError, ParseErrorKind};
pub use gocompat::{go_quote, DurationError};
pub use parser::parse_words;

/// Parses Dockerfile text into its instructions, as BuildKit's parser does (BOM, directives,
/// comments, continuations, flags, per-instruction argument rules, heredocs).
///
/// Unknown instructions are kept (the typed layer, [`instruction::instructions`], rejects
/// them). Errors carry the 1-based line.
pub fn parse(text: &str) -> Result<ast::Dockerfile, ParseError> {
    parser::parse(text)
}
