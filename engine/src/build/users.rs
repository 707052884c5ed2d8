//! Resolving `--chown` / `USER` names against an image's `/etc/passwd` and `/etc/group`, read as
//! data from the rootfs (never through the host's NSS).

use crate::rootfs::{ContainerPath, LayerView, RootfsError};

/// Largest passwd/group file read.
const MAX_DB: u64 = 4 * 1024 * 1024;

/// Errors resolving a user or group.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The name is not in the image's database.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    /// The group is not in the image's database.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    /// An id that is not a valid number.
    #[error("invalid user or group id {0:?}")]
    BadId(String),
    /// Reading the database failed.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
}

/// Resolves `user[:group]` (names or numbers) to numeric ids, Docker style: a user given alone
/// takes its primary group from passwd (0 when it is numeric and unknown); a numeric id needs no
/// database.
pub fn resolve_owner(spec: &str, rootfs: &LayerView) -> Result<(u32, u32), UserError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_db(rootfs, "/etc/passwd")?;
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => {
            let gid = passwd
                .as_deref()
                .and_then(|db| {
                    find(db, |f| {
                        f.get(2).and_then(|v| v.parse::<u32>().ok()) == Some(uid)
                    })
                })
                .and_then(|f| f.get(3).and_then(|g| g.parse().ok()))
                .unwrap_or(0);
            (uid, gid)
        }
        Err(_) if is_number_like(user) => return Err(UserError::BadId(user.to_owned())),
        Err(_) => {
            let f = passwd
                .as_deref()
                .and_then(|db| find(db, |f| f.first() == Some(&user)))
                .ok_or_else(|| UserError::NoUser(user.to_owned()))?;
            let uid = parse_id(f.get(2))?;
            let gid = parse_id(f.get(3))?;
            (uid, gid)
        }
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) if is_number_like(g) => return Err(UserError::BadId(g.to_owned())),
            Err(_) => {
                let groups = read_db(rootfs, "/etc/group")?;
                let f = groups
                    .as_deref()
                    .and_then(|db| find(db, |f| f.first() == Some(&g)))
                    .ok_or_else(|| UserError::NoGroup(g.to_owned()))?;
                parse_id(f.get(2))?
            }
        },
    };
    Ok((uid, gid))
}

/// The home folder of `uid` in the image's `/etc/passwd` (docker's default `HOME`): `/` when
/// the user has no entry.
pub fn home_dir(uid: u32, rootfs: &LayerView) -> Result<String, UserError> {
    let passwd = read_db(rootfs, "/etc/passwd")?;
    Ok(passwd
        .as_deref()
        .and_then(|db| {
            find(db, |f| {
                f.get(2).and_then(|v| v.parse::<u32>().ok()) == Some(uid)
            })
        })
        .and_then(|f| f.get(5).map(|h| (*h).to_owned()))
        .filter(|h| h.starts_with('/'))
        .unwrap_or_else(|| "/".to_owned()))
}

fn is_number_like(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_digit() || c == '-')
}

fn parse_id(field: Option<&&str>) -> Result<u32, UserError> {
    let f = field.copied().unwrap_or("");
    f.parse().map_err(|_| UserError::BadId(f.to_owned()))
}

fn read_db(rootfs: &LayerView, path: &str) -> Result<Option<String>, UserError> {
    Ok(rootfs
        .read_file(&ContainerPath::parse(path), MAX_DB)?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

fn find(db: &str, pred: impl Fn(&[&str]) -> bool) -> Option<Vec<&str>> {
    db.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| pred(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;
    use cap_std::fs::Dir;

    fn rootfs(passwd: &str, group: &str) -> (tempfile::TempDir, LayerView) {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(t.path().join("etc/group"), group).unwrap();
        let d = Dir::open_ambient_dir(t.path(), ambient_authority()).unwrap();
        (t, LayerView::new(vec![d]))
    }

    #[test]
    fn names_and_numbers() {
        let (_t, v) = rootfs(
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
            "root:x:0:\nstaff:x:50:\napp:x:1001:\n",
        );
        assert_eq!(resolve_owner("app", &v).unwrap(), (1000, 1001));
        assert_eq!(resolve_owner("app:staff", &v).unwrap(), (1000, 50));
        assert_eq!(resolve_owner("1000", &v).unwrap(), (1000, 1001));
        assert_eq!(resolve_owner("42:43", &v).unwrap(), (42, 43));
        assert_eq!(resolve_owner("42", &v).unwrap(), (42, 0));
        assert!(matches!(
            resolve_owner("nobody", &v),
            Err(UserError::NoUser(_))
        ));
        assert!(matches!(
            resolve_owner("app:nogroup", &v),
            Err(UserError::NoGroup(_))
        ));
        assert!(matches!(resolve_owner("-1", &v), Err(UserError::BadId(_))));
        assert_eq!(home_dir(1000, &v).unwrap(), "/home/app");
        assert_eq!(home_dir(7, &v).unwrap(), "/");
    }

    #[test]
    fn numeric_ids_need_no_database() {
        let v = LayerView::empty();
        assert_eq!(resolve_owner("5:6", &v).unwrap(), (5, 6));
        assert!(matches!(
            resolve_owner("app", &v),
            Err(UserError::NoUser(_))
        ));
    }
}
