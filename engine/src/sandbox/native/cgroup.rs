//! Memory and process limits through cgroups: v2 where the controller is enabled for our
//! cgroup's children, else v1 (a hybrid host such as one with `/sys/fs/cgroup/unified` and v1
//! `memory`/`pids` hierarchies), else not enforced (and said so).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::sandbox::{Limit, Limits};

static NEXT: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Memory,
    Pids,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
        }
    }
}

#[derive(Debug)]
struct Group {
    dir: PathBuf,
    controller: Controller,
    v2: bool,
}

/// The cgroups of one run (removed by [`Cgroups::remove`]).
#[derive(Debug, Default)]
pub(crate) struct Cgroups {
    groups: Vec<Group>,
    /// Limits that could not be set, with the reason.
    pub not_enforced: Vec<String>,
}

/// Where this process sits in each hierarchy: `(v2 dir, v1 dirs by controller)`.
fn own_dirs() -> (Option<PathBuf>, Vec<(String, PathBuf)>) {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    // (mount point, root, fstype, super options)
    let mounts: Vec<(String, String, String, String)> = mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some((
                f.get(4)?.to_string(),
                f.get(3)?.to_string(),
                r.first()?.to_string(),
                r.get(2).unwrap_or(&"").to_string(),
            ))
        })
        .collect();
    let join = |mount: &str, root: &str, path: &str| {
        let rel = path
            .strip_prefix(root)
            .unwrap_or(path)
            .trim_start_matches('/');
        Path::new(mount).join(rel)
    };
    let mut v2 = None;
    let mut v1 = Vec::new();
    for line in cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            v2 = mounts
                .iter()
                .find(|m| m.2 == "cgroup2")
                .map(|m| join(&m.0, &m.1, path));
            continue;
        }
        for ctrl in ctrls.split(',') {
            if let Some(m) = mounts
                .iter()
                .find(|m| m.2 == "cgroup" && m.3.split(',').any(|o| o == ctrl))
            {
                v1.push((ctrl.to_owned(), join(&m.0, &m.1, path)));
            }
        }
    }
    (v2, v1)
}

impl Cgroups {
    /// Creates the run's cgroups and sets the memory and pids limits.
    pub(crate) fn create(limits: &Limits) -> Cgroups {
        let (v2, v1) = own_dirs();
        let name = format!(
            "kiln-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut cg = Cgroups::default();
        for controller in [Controller::Memory, Controller::Pids] {
            let values: Vec<(&str, String)> = match controller {
                Controller::Memory => vec![
                    ("memory.max", limits.memory.to_string()),
                    ("memory.limit_in_bytes", limits.memory.to_string()),
                ],
                Controller::Pids => vec![("pids.max", limits.pids.to_string())],
            };
            let v2_ok = v2.as_ref().filter(|d| {
                fs::read_to_string(d.join("cgroup.subtree_control"))
                    .is_ok_and(|s| s.split_whitespace().any(|c| c == controller.name()))
            });
            let candidates = v2_ok.map(|d| (d.clone(), true)).into_iter().chain(
                v1.iter()
                    .filter(|(c, _)| c == controller.name())
                    .map(|(_, d)| (d.clone(), false)),
            );
            let mut why = "no cgroup controller".to_owned();
            let mut done = false;
            for (parent, is_v2) in candidates {
                let dir = parent.join(&name);
                let made = fs::create_dir(&dir).and_then(|()| {
                    let mut set = false;
                    for (file, value) in &values {
                        let p = dir.join(file);
                        if p.exists() {
                            fs::write(p, value)?;
                            set = true;
                        }
                    }
                    if set {
                        Ok(())
                    } else {
                        Err(std::io::Error::other("limit file missing"))
                    }
                });
                match made {
                    Ok(()) => {
                        cg.groups.push(Group {
                            dir,
                            controller,
                            v2: is_v2,
                        });
                        done = true;
                        break;
                    }
                    Err(e) => {
                        let _ = fs::remove_dir(&dir);
                        why = format!("cgroup {}: {e}", parent.display());
                    }
                }
            }
            if !done {
                let what = match controller {
                    Controller::Memory => "memory".to_owned(),
                    Controller::Pids => "pids (RLIMIT_NPROC only)".to_owned(),
                };
                cg.not_enforced.push(format!("{what} ({why})"));
            }
        }
        cg
    }

    /// Whether a pids cgroup limits the run.
    pub(crate) fn enforces_pids(&self) -> bool {
        self.groups.iter().any(|g| g.controller == Controller::Pids)
    }

    /// Moves `pid` (and so its future children) into the run's cgroups.
    pub(crate) fn add(&self, pid: libc::pid_t) -> std::io::Result<()> {
        for g in &self.groups {
            fs::write(g.dir.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }

    /// The limit the run hit, if the kernel recorded one.
    pub(crate) fn exceeded(&self) -> Option<Limit> {
        let count = |file: PathBuf, key: &str| -> u64 {
            fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == key).then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0)
        };
        for g in &self.groups {
            let hit = match (g.controller, g.v2) {
                (Controller::Memory, true) => count(g.dir.join("memory.events"), "oom_kill") > 0,
                (Controller::Memory, false) => {
                    count(g.dir.join("memory.oom_control"), "oom_kill") > 0
                }
                (Controller::Pids, _) => count(g.dir.join("pids.events"), "max") > 0,
            };
            if hit {
                return Some(match g.controller {
                    Controller::Memory => Limit::Memory,
                    Controller::Pids => Limit::Pids,
                });
            }
        }
        None
    }

    /// Removes the cgroups (their processes are gone once the sandbox's init was reaped;
    /// the kernel may take a moment to release them).
    pub(crate) fn remove(&self) {
        for g in &self.groups {
            for _ in 0..100 {
                if fs::remove_dir(&g.dir).is_ok() || !g.dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
