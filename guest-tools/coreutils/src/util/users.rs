//! Users and groups, from the rootfs's `/etc/passwd` and `/etc/group`.

use std::fs;

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

fn lines(path: &str) -> Vec<String> {
    fs::read(path)
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Parses one `/etc/passwd` line.
pub fn parse_user(line: &str) -> Option<User> {
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 4 {
        return None;
    }
    Some(User {
        name: f[0].to_string(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        home: f.get(5).copied().unwrap_or("").to_string(),
    })
}

/// Parses one `/etc/group` line.
pub fn parse_group(line: &str) -> Option<Group> {
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 3 {
        return None;
    }
    Some(Group {
        name: f[0].to_string(),
        gid: f[2].parse().ok()?,
        members: f
            .get(3)
            .map(|m| {
                m.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Every user of the rootfs.
pub fn users() -> Vec<User> {
    lines(PASSWD).iter().filter_map(|l| parse_user(l)).collect()
}

/// Every group of the rootfs.
pub fn groups() -> Vec<Group> {
    lines(GROUP).iter().filter_map(|l| parse_group(l)).collect()
}

pub fn user_by_name(name: &str) -> Option<User> {
    users().into_iter().find(|u| u.name == name)
}

pub fn user_by_uid(uid: u32) -> Option<User> {
    users().into_iter().find(|u| u.uid == uid)
}

pub fn group_by_name(name: &str) -> Option<Group> {
    groups().into_iter().find(|g| g.name == name)
}

pub fn group_by_gid(gid: u32) -> Option<Group> {
    groups().into_iter().find(|g| g.gid == gid)
}

/// The name of `uid`, or the number.
pub fn user_name(uid: u32) -> String {
    user_by_uid(uid).map_or_else(|| uid.to_string(), |u| u.name)
}

/// The name of `gid`, or the number.
pub fn group_name(gid: u32) -> String {
    group_by_gid(gid).map_or_else(|| gid.to_string(), |g| g.name)
}

/// A user given by name or number.
pub fn resolve_uid(spec: &str) -> Option<u32> {
    if let Some(u) = user_by_name(spec) {
        return Some(u.uid);
    }
    spec.parse().ok()
}

/// A group given by name or number.
pub fn resolve_gid(spec: &str) -> Option<u32> {
    if let Some(g) = group_by_name(spec) {
        return Some(g.gid);
    }
    spec.parse().ok()
}

/// The groups of user `name` (primary group `gid` first), as `id -G` lists them.
pub fn group_list(name: Option<&str>, gid: u32) -> Vec<u32> {
    let mut out = vec![gid];
    if let Some(name) = name {
        for g in groups() {
            if g.members.iter().any(|m| m == name) && !out.contains(&g.gid) {
                out.push(g.gid);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries() {
        let u = parse_user("app:x:1000:1001:App:/home/app:/bin/sh").expect("user");
        assert_eq!(
            (u.name.as_str(), u.uid, u.gid, u.home.as_str()),
            ("app", 1000, 1001, "/home/app")
        );
        assert!(parse_user("broken:x:y:1").is_none());
        let g = parse_group("wheel:x:10:root,app").expect("group");
        assert_eq!(g.members, vec!["root".to_string(), "app".to_string()]);
        assert_eq!(parse_group("empty:x:5:").expect("group").members.len(), 0);
    }
}
