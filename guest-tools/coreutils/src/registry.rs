//! The dispatch table: every tool this program provides, and where it comes from.

use std::ffi::OsString;

use crate::tools;

/// Where a tool's implementation comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A uutils crate (`uu_*`, or uutils `sed`), used unmodified.
    Uutils,
    /// Our own, in `src/tools`.
    Kiln,
    /// A uutils crate behind our own front (`src/tools`) for what it cannot do on WASI.
    Wrapped,
}

/// One tool.
pub struct Tool {
    pub name: &'static str,
    pub main: fn(Vec<OsString>) -> i32,
    pub origin: Origin,
}

macro_rules! uu {
    ($name:literal, $($path:ident)::+) => {
        Tool {
            name: $name,
            main: {
                fn main(args: Vec<OsString>) -> i32 {
                    $($path)::+::uumain(args.into_iter())
                }
                main
            },
            origin: Origin::Uutils,
        }
    };
}

macro_rules! ours {
    ($name:literal, $($path:ident)::+) => {
        Tool {
            name: $name,
            main: $($path)::+,
            origin: Origin::Kiln,
        }
    };
}

/// Every tool, sorted by name (`tools.txt` lists the same names).
pub static TOOLS: &[Tool] = &[
    ours!("[", tools::test::bracket),
    uu!("b2sum", uu_b2sum),
    uu!("base32", uu_base32),
    uu!("base64", uu_base64),
    uu!("basename", uu_basename),
    uu!("basenc", uu_basenc),
    uu!("cat", uu_cat),
    ours!("chgrp", tools::chown::chgrp),
    ours!("chmod", tools::chmod::main),
    ours!("chown", tools::chown::chown),
    uu!("cksum", uu_cksum),
    uu!("comm", uu_comm),
    ours!("cp", tools::cp::main),
    uu!("csplit", uu_csplit),
    uu!("cut", uu_cut),
    uu!("date", uu_date),
    ours!("dd", tools::dd::main),
    uu!("dirname", uu_dirname),
    uu!("echo", uu_echo),
    ours!("egrep", tools::grep::egrep),
    ours!("env", tools::env::main),
    uu!("expand", uu_expand),
    uu!("expr", uu_expr),
    uu!("factor", uu_factor),
    ours!("false", tools::truth::r#false),
    ours!("fgrep", tools::grep::fgrep),
    ours!("find", tools::find::main),
    uu!("fmt", uu_fmt),
    uu!("fold", uu_fold),
    ours!("grep", tools::grep::main),
    ours!("groups", tools::id::groups),
    ours!("gunzip", tools::gzip::gunzip),
    ours!("gzip", tools::gzip::gzip),
    uu!("head", uu_head),
    ours!("id", tools::id::id),
    ours!("install", tools::install::main),
    uu!("join", uu_join),
    uu!("link", uu_link),
    uu!("ln", uu_ln),
    ours!("ls", tools::ls::main),
    uu!("md5sum", uu_md5sum),
    ours!("mkdir", tools::mkdir::main),
    uu!("mktemp", uu_mktemp),
    ours!("mv", tools::mv::main),
    uu!("nl", uu_nl),
    uu!("nproc", uu_nproc),
    uu!("numfmt", uu_numfmt),
    uu!("od", uu_od),
    uu!("paste", uu_paste),
    uu!("pathchk", uu_pathchk),
    uu!("pr", uu_pr),
    uu!("printenv", uu_printenv),
    uu!("printf", uu_printf),
    uu!("pwd", uu_pwd),
    uu!("readlink", uu_readlink),
    uu!("realpath", uu_realpath),
    uu!("rm", uu_rm),
    uu!("rmdir", uu_rmdir),
    uu!("sed", sed::sed),
    uu!("seq", uu_seq),
    uu!("sha1sum", uu_sha1sum),
    uu!("sha224sum", uu_sha224sum),
    uu!("sha256sum", uu_sha256sum),
    uu!("sha384sum", uu_sha384sum),
    uu!("sha512sum", uu_sha512sum),
    uu!("shuf", uu_shuf),
    uu!("sleep", uu_sleep),
    Tool {
        name: "sort",
        main: tools::sort::main,
        origin: Origin::Wrapped,
    },
    uu!("split", uu_split),
    ours!("stat", tools::stat::main),
    uu!("sum", uu_sum),
    ours!("sync", tools::sync::main),
    ours!("tac", tools::tac::main),
    uu!("tail", uu_tail),
    ours!("tar", tools::tar::main),
    uu!("tee", uu_tee),
    ours!("test", tools::test::test),
    uu!("touch", uu_touch),
    uu!("tr", uu_tr),
    ours!("true", tools::truth::r#true),
    uu!("truncate", uu_truncate),
    uu!("tsort", uu_tsort),
    uu!("tty", uu_tty),
    ours!("uname", tools::uname::main),
    uu!("unexpand", uu_unexpand),
    uu!("uniq", uu_uniq),
    uu!("unlink", uu_unlink),
    uu!("wc", uu_wc),
    ours!("which", tools::which::main),
    ours!("whoami", tools::id::whoami),
    ours!("xargs", tools::xargs::main),
    uu!("yes", uu_yes),
    ours!("zcat", tools::gzip::zcat),
];

/// The tool called `name`.
pub fn find(name: &str) -> Option<&'static Tool> {
    TOOLS
        .binary_search_by(|t| t.name.cmp(name))
        .ok()
        .map(|i| &TOOLS[i])
}

/// Runs `tool` with `args` (`args[0]` is the tool's name); `second_arg` tells that the
/// program was started as `coreutils NAME ...`.
pub fn run(tool: &Tool, args: Vec<OsString>, second_arg: bool) -> i32 {
    if matches!(tool.origin, Origin::Uutils | Origin::Wrapped) {
        if second_arg {
            uucore::set_utility_is_second_arg();
        }
        if let Err(e) = uucore::locale::setup_localization(tool.name) {
            eprintln!("{}: cannot load messages: {e}", tool.name);
            return 1;
        }
    }
    (tool.main)(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(TOOLS.windows(2).all(|w| w[0].name < w[1].name));
    }

    #[test]
    fn tools_txt_matches_the_table() {
        let listed: Vec<&str> = include_str!("../tools.txt").lines().collect();
        let table: Vec<&str> = TOOLS.iter().map(|t| t.name).collect();
        assert_eq!(listed, table);
    }
}
