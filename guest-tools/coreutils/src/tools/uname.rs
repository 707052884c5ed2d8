//! uname: the system's name, as GNU's prints it. Ours, through `kiln_rt::uname`, so that a WASI
//! step sees the Linux host it runs on (`x86_64`, `Linux`): scripts that pick a download by
//! `uname -m` pick the right one.

use std::ffi::OsString;

use crate::util::args::{Opt, Parser};
use crate::util::{self, strerror, usage_error, warn};

const TOOL: &str = "uname";
const USAGE: &str =
    "uname [OPTION]...\nPrint certain system information.  With no OPTION, same as -s.";

const OPTS: &[Opt] = &[
    Opt::flag("all", 'a', "all"),
    Opt::flag("kernel-name", 's', "kernel-name"),
    Opt::flag("nodename", 'n', "nodename"),
    Opt::flag("kernel-release", 'r', "kernel-release"),
    Opt::flag("kernel-version", 'v', "kernel-version"),
    Opt::flag("machine", 'm', "machine"),
    Opt::flag("processor", 'p', "processor"),
    Opt::flag("hardware-platform", 'i', "hardware-platform"),
    Opt::flag("operating-system", 'o', "operating-system"),
];

pub fn main(args: Vec<OsString>) -> i32 {
    if util::help_or_version(TOOL, &args, USAGE) {
        return 0;
    }
    let p = match Parser::new(OPTS).parse(util::rest(args)) {
        Ok(p) => p,
        Err(e) => return usage_error(TOOL, e, 1),
    };
    if let Some(extra) = p.operands.first() {
        return usage_error(
            TOOL,
            format!("extra operand '{}'", extra.to_string_lossy()),
            1,
        );
    }
    let u = match kiln_rt::uname() {
        Ok(u) => u,
        Err(e) => {
            warn(TOOL, format!("cannot get system name: {}", strerror(&e)));
            return 1;
        }
    };
    println!("{}", fields(&p, &u).join(" "));
    0
}

/// The fields asked for, in GNU's order; `-a` leaves out the unknown processor and platform.
fn fields(p: &crate::util::args::Parsed, u: &kiln_rt::Uname) -> Vec<String> {
    let all = p.has("all");
    let any = OPTS.iter().any(|o| p.has(o.key));
    let want = |k: &str| all || p.has(k);
    let mut out = Vec::new();
    if want("kernel-name") || !any {
        out.push(u.sysname.clone());
    }
    if want("nodename") {
        out.push(u.nodename.clone());
    }
    if want("kernel-release") {
        out.push(u.release.clone());
    }
    if want("kernel-version") {
        out.push(u.version.clone());
    }
    if want("machine") {
        out.push(u.machine.clone());
    }
    if p.has("processor") {
        out.push("unknown".to_owned());
    }
    if p.has("hardware-platform") {
        out.push("unknown".to_owned());
    }
    if want("operating-system") {
        out.push("GNU/Linux".to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(a: &[&str]) -> Vec<String> {
        let p = Parser::new(OPTS)
            .parse(a.iter().map(OsString::from))
            .expect("valid options");
        let u = kiln_rt::Uname {
            sysname: "Linux".into(),
            nodename: "c0ffee".into(),
            release: "6.1.0".into(),
            version: "#1 SMP".into(),
            machine: "x86_64".into(),
        };
        fields(&p, &u)
    }

    #[test]
    fn fields_come_in_gnus_order() {
        assert_eq!(run(&[]), ["Linux"]);
        assert_eq!(run(&["-m"]), ["x86_64"]);
        assert_eq!(run(&["-m", "-s"]), ["Linux", "x86_64"]);
        assert_eq!(
            run(&["-a"]),
            ["Linux", "c0ffee", "6.1.0", "#1 SMP", "x86_64", "GNU/Linux"]
        );
        assert_eq!(run(&["-p", "-i"]), ["unknown", "unknown"]);
    }
}
