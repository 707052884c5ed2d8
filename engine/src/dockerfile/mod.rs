//! The Dockerfile front end: text -> [`ast::Dockerfile`]. The only reader of Dockerfile text.

pub mod ast;
pub mod scope;
pub mod shell;
