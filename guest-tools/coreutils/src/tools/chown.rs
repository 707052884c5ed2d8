//! chown and chgrp, through `kiln_rt::chown`; names come from the rootfs's `/etc/passwd` and
//! `/etc/group`.

use std::ffi::OsString;
use std::path::Path;

use crate::util::args::{Opt, Parser};
use crate::util::{self, quote, strerror, usage_error, users, warn};

const OPTS: &[Opt] = &[
    Opt::flag("recursive", 'R', "recursive"),
    Opt::flag("verbose", 'v', "verbose"),
    Opt::flag("changes", 'c', "changes"),
    Opt::flag("silent", 'f', "silent"),
    Opt::long("silent", "quiet"),
    Opt::flag("no-dereference", 'h', "no-dereference"),
    Opt::long("dereference", "dereference"),
    Opt::short("physical", 'P'),
    Opt::long("reference", "reference").with_value(),
    Opt::long("preserve-root", "preserve-root"),
    Opt::long("no-preserve-root", "no-preserve-root"),
];

struct Run {
    tool: &'static str,
    uid: Option<u32>,
    gid: Option<u32>,
    recursive: bool,
    verbose: bool,
    changes: bool,
    silent: bool,
    failed: bool,
}

impl Run {
    fn fail(&mut self, msg: String) {
        if !self.silent {
            warn(self.tool, msg);
        }
        self.failed = true;
    }

    fn describe(&self, uid: u32, gid: u32) -> String {
        match (self.tool, self.uid) {
            ("chown", Some(_)) if self.gid.is_some() => {
                format!("{}:{}", users::user_name(uid), users::group_name(gid))
            }
            ("chown", Some(_)) => users::user_name(uid),
            _ => users::group_name(gid),
        }
    }

    fn apply(&mut self, path: &Path, follow: bool) {
        let st = match kiln_rt::stat(path, follow) {
            Ok(st) => st,
            Err(e) => {
                return self.fail(format!("cannot access {}: {}", quote(path), strerror(&e)));
            }
        };
        let (new_uid, new_gid) = (self.uid.unwrap_or(st.uid), self.gid.unwrap_or(st.gid));
        let what = if self.tool == "chown" && self.uid.is_some() {
            "ownership"
        } else {
            "group"
        };
        if let Err(e) = kiln_rt::chown(path, self.uid, self.gid, follow) {
            self.fail(format!(
                "changing {what} of {}: {}",
                quote(path),
                strerror(&e)
            ));
        } else if (new_uid, new_gid) != (st.uid, st.gid) {
            if self.verbose || self.changes {
                println!(
                    "changed {what} of {} from {} to {}",
                    quote(path),
                    self.describe(st.uid, st.gid),
                    self.describe(new_uid, new_gid)
                );
            }
        } else if self.verbose {
            println!(
                "{what} of {} retained as {}",
                quote(path),
                self.describe(st.uid, st.gid)
            );
        }
        if self.recursive && st.is_dir() {
            match util::read_dir_sorted(path) {
                Ok(children) => {
                    for child in children {
                        self.apply(&child, false);
                    }
                }
                Err(e) => self.fail(format!(
                    "cannot read directory {}: {}",
                    quote(path),
                    strerror(&e)
                )),
            }
        }
    }
}

/// Parses `OWNER[:[GROUP]]` (or the old `OWNER.GROUP`).
fn parse_owner(spec: &str) -> Result<(Option<u32>, Option<u32>), String> {
    let split = spec.split_once(':').or_else(|| {
        // `user.group` only when the whole spec is not itself a user name.
        if users::user_by_name(spec).is_none() {
            spec.split_once('.')
        } else {
            None
        }
    });
    let (user, group) = match split {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = if user.is_empty() {
        None
    } else {
        Some(users::resolve_uid(user).ok_or_else(|| format!("invalid user: {}", quote(spec)))?)
    };
    let gid = match group {
        None => None,
        // `user:` means the user's login group.
        Some("") => match (user.is_empty(), users::user_by_name(user)) {
            (true, _) => None,
            (false, Some(u)) => Some(u.gid),
            (false, None) => {
                return Err(format!("invalid spec: {}", quote(spec)));
            }
        },
        Some(g) => {
            Some(users::resolve_gid(g).ok_or_else(|| format!("invalid group: {}", quote(spec)))?)
        }
    };
    Ok((uid, gid))
}

fn run(tool: &'static str, args: Vec<OsString>) -> i32 {
    let usage = if tool == "chown" {
        "chown [OPTION]... [OWNER][:[GROUP]] FILE...\n   or: chown [OPTION]... --reference=RFILE FILE..."
    } else {
        "chgrp [OPTION]... GROUP FILE...\n   or: chgrp [OPTION]... --reference=RFILE FILE..."
    };
    if util::help_or_version(tool, &args, usage) {
        return 0;
    }
    let p = match Parser::new(OPTS).parse(util::rest(args)) {
        Ok(p) => p,
        Err(e) => return usage_error(tool, e, 1),
    };
    let mut operands = p.operands.clone().into_iter();
    let (uid, gid) = if let Some(r) = p.value("reference") {
        match kiln_rt::stat(Path::new(r), true) {
            Ok(st) if tool == "chown" => (Some(st.uid), Some(st.gid)),
            Ok(st) => (None, Some(st.gid)),
            Err(e) => {
                warn(
                    tool,
                    format!("failed to get attributes of {}: {}", quote(r), strerror(&e)),
                );
                return 1;
            }
        }
    } else {
        let Some(spec) = operands.next() else {
            return usage_error(tool, "missing operand", 1);
        };
        let spec = spec.to_string_lossy();
        let parsed = if tool == "chown" {
            parse_owner(&spec)
        } else {
            users::resolve_gid(&spec)
                .map(|g| (None, Some(g)))
                .ok_or_else(|| format!("invalid group: {}", quote(&*spec)))
        };
        match parsed {
            Ok(ids) => ids,
            Err(e) => {
                warn(tool, e);
                return 1;
            }
        }
    };
    let files: Vec<OsString> = operands.collect();
    if files.is_empty() {
        return usage_error(tool, "missing operand", 1);
    }
    let recursive = p.has("recursive");
    // Like GNU: -R without -H/-L never follows symlinks; otherwise -h decides.
    let follow = !recursive && !p.has("no-dereference");
    let preserve_root = p
        .opts
        .iter()
        .rev()
        .find(|(k, _)| *k == "preserve-root" || *k == "no-preserve-root")
        .is_some_and(|(k, _)| *k == "preserve-root");
    let mut run = Run {
        tool,
        uid,
        gid,
        recursive,
        verbose: p.has("verbose"),
        changes: p.has("changes"),
        silent: p.has("silent"),
        failed: false,
    };
    for f in &files {
        let path = Path::new(f);
        if recursive && preserve_root && path == Path::new("/") {
            warn(tool, "it is dangerous to operate recursively on '/'");
            warn(tool, "use --no-preserve-root to override this failsafe");
            run.failed = true;
            continue;
        }
        run.apply(path, follow);
    }
    i32::from(run.failed)
}

pub fn chown(args: Vec<OsString>) -> i32 {
    run("chown", args)
}

pub fn chgrp(args: Vec<OsString>) -> i32 {
    run("chgrp", args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_owner_specs() {
        assert_eq!(parse_owner("1234"), Ok((Some(1234), None)));
        assert_eq!(parse_owner("1234:5678"), Ok((Some(1234), Some(5678))));
        assert_eq!(parse_owner(":5678"), Ok((None, Some(5678))));
        assert_eq!(parse_owner("1234.5678"), Ok((Some(1234), Some(5678))));
        assert!(parse_owner("no-such-user-here").is_err());
        assert!(parse_owner("1:no-such-group-here").is_err());
    }
}
