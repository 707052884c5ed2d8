//! id, whoami and groups: ids from `kiln_rt::identity`, names and supplementary groups from the
//! rootfs's `/etc/passwd` and `/etc/group`.

use std::ffi::OsString;

use crate::util::args::{Opt, Parser};
use crate::util::{self, usage_error, users, warn};

const OPTS: &[Opt] = &[
    Opt::flag("user", 'u', "user"),
    Opt::flag("group", 'g', "group"),
    Opt::flag("groups", 'G', "groups"),
    Opt::flag("name", 'n', "name"),
    Opt::flag("real", 'r', "real"),
    Opt::flag("zero", 'z', "zero"),
];

/// The ids `id` reports.
struct Ids {
    uid: u32,
    gid: u32,
    euid: u32,
    egid: u32,
    name: Option<String>,
    groups: Vec<u32>,
}

fn current() -> Result<Ids, String> {
    let me = kiln_rt::identity().map_err(|e| util::strerror(&e))?;
    let name = users::user_by_uid(me.uid).map(|u| u.name);
    let groups = users::group_list(name.as_deref(), me.egid);
    Ok(Ids {
        uid: me.uid,
        gid: me.gid,
        euid: me.euid,
        egid: me.egid,
        name,
        groups,
    })
}

fn of_user(spec: &str) -> Option<Ids> {
    let user =
        users::user_by_name(spec).or_else(|| spec.parse().ok().and_then(users::user_by_uid))?;
    Some(Ids {
        uid: user.uid,
        gid: user.gid,
        euid: user.uid,
        egid: user.gid,
        groups: users::group_list(Some(&user.name), user.gid),
        name: Some(user.name),
    })
}

pub fn id(args: Vec<OsString>) -> i32 {
    if util::help_or_version("id", &args, "id [OPTION]... [USER]...") {
        return 0;
    }
    let p = match Parser::new(OPTS).parse(util::rest(args)) {
        Ok(p) => p,
        Err(e) => return usage_error("id", e, 1),
    };
    let selected = ["user", "group", "groups"]
        .iter()
        .filter(|k| p.has(k))
        .count();
    if selected > 1 {
        return usage_error("id", "cannot print \"only\" of more than one choice", 1);
    }
    if selected == 0 && (p.has("name") || p.has("real")) {
        return usage_error(
            "id",
            "cannot print only names or real IDs in default format",
            1,
        );
    }
    let targets: Vec<Option<String>> = if p.operands.is_empty() {
        vec![None]
    } else {
        p.operands
            .iter()
            .map(|o| Some(o.to_string_lossy().into_owned()))
            .collect()
    };
    let sep = if p.has("zero") { '\0' } else { ' ' };
    let end = if p.has("zero") { '\0' } else { '\n' };
    let mut status = 0;
    for target in targets {
        let ids = match &target {
            None => match current() {
                Ok(ids) => ids,
                Err(e) => {
                    warn("id", e);
                    return 1;
                }
            },
            Some(name) => match of_user(name) {
                Some(ids) => ids,
                None => {
                    warn("id", format!("'{name}': no such user"));
                    status = 1;
                    continue;
                }
            },
        };
        let names = p.has("name");
        let (uid, gid) = if p.has("real") {
            (ids.uid, ids.gid)
        } else {
            (ids.euid, ids.egid)
        };
        let line = if p.has("user") {
            if names {
                users::user_name(uid)
            } else {
                uid.to_string()
            }
        } else if p.has("group") {
            if names {
                users::group_name(gid)
            } else {
                gid.to_string()
            }
        } else if p.has("groups") {
            ids.groups
                .iter()
                .map(|&g| {
                    if names {
                        users::group_name(g)
                    } else {
                        g.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(&sep.to_string())
        } else {
            let named = |id: u32, name: Option<String>| match name {
                Some(n) => format!("{id}({n})"),
                None => id.to_string(),
            };
            let group = |g: u32| named(g, users::group_by_gid(g).map(|g| g.name));
            let mut s = format!(
                "uid={} gid={}",
                named(ids.uid, ids.name.clone()),
                group(ids.gid)
            );
            if ids.euid != ids.uid {
                s.push_str(&format!(
                    " euid={}",
                    named(ids.euid, users::user_by_uid(ids.euid).map(|u| u.name))
                ));
            }
            if ids.egid != ids.gid {
                s.push_str(&format!(" egid={}", group(ids.egid)));
            }
            let list: Vec<String> = ids.groups.iter().map(|&g| group(g)).collect();
            s.push_str(&format!(" groups={}", list.join(",")));
            s
        };
        print!("{line}{end}");
    }
    status
}

pub fn whoami(args: Vec<OsString>) -> i32 {
    if util::help_or_version("whoami", &args, "whoami") {
        return 0;
    }
    if args.len() > 1 {
        return usage_error(
            "whoami",
            format!("extra operand '{}'", args[1].to_string_lossy()),
            1,
        );
    }
    match kiln_rt::identity() {
        Ok(me) => match users::user_by_uid(me.euid) {
            Some(u) => {
                println!("{}", u.name);
                0
            }
            None => {
                warn(
                    "whoami",
                    format!("cannot find name for user ID {}", me.euid),
                );
                1
            }
        },
        Err(e) => {
            warn("whoami", util::strerror(&e));
            1
        }
    }
}

pub fn groups(args: Vec<OsString>) -> i32 {
    if util::help_or_version("groups", &args, "groups [USER]...") {
        return 0;
    }
    let mut status = 0;
    if args.len() <= 1 {
        match current() {
            Ok(ids) => {
                let names: Vec<String> = ids.groups.iter().map(|&g| users::group_name(g)).collect();
                println!("{}", names.join(" "));
            }
            Err(e) => {
                warn("groups", e);
                status = 1;
            }
        }
    }
    for user in util::rest(args) {
        let name = user.to_string_lossy();
        match of_user(&name) {
            Some(ids) => {
                let names: Vec<String> = ids.groups.iter().map(|&g| users::group_name(g)).collect();
                println!("{name} : {}", names.join(" "));
            }
            None => {
                warn("groups", format!("'{name}': no such user"));
                status = 1;
            }
        }
    }
    status
}
