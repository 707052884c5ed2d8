//! kiln's guest tools (built from `guest-tools/` by `engine/build.rs` and embedded) and the
//! rootfs shims that show them inside a rootfs (`rootfs-shims/shims.txt`).

use std::sync::OnceLock;

use crate::rootfs::{ContainerPath, Shims};

/// An embedded WebAssembly module and its sha256 (computed at build time).
pub struct ToolModule {
    pub bytes: &'static [u8],
    pub sha256: [u8; 32],
}

mod embedded {
    use super::ToolModule;
    include!(concat!(env!("OUT_DIR"), "/guest_tools.rs"));
}

/// The guest tools this kiln carries.
pub struct GuestTools {
    sh: Option<&'static ToolModule>,
    coreutils: Option<&'static ToolModule>,
    coreutils_names: &'static [&'static str],
    shims: Vec<(ContainerPath, String)>,
    identity: OnceLock<String>,
}

impl std::fmt::Debug for GuestTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestTools")
            .field("sh", &self.sh.is_some())
            .field("coreutils", &self.coreutils_names.len())
            .finish()
    }
}

impl GuestTools {
    /// The tools embedded in this binary.
    pub fn embedded() -> &'static GuestTools {
        static TOOLS: OnceLock<GuestTools> = OnceLock::new();
        TOOLS.get_or_init(|| {
            let mut t = GuestTools {
                sh: embedded::SH.as_ref(),
                coreutils: embedded::COREUTILS.as_ref(),
                coreutils_names: embedded::COREUTILS_NAMES,
                shims: Vec::new(),
                identity: OnceLock::new(),
            };
            t.shims = parse_shims(embedded::SHIMS, &t);
            t
        })
    }

    /// Whether the tools are present (a fuzzing build carries none).
    pub fn available(&self) -> bool {
        self.sh.is_some()
    }

    /// The module for tool `name`, and the argv[0] it must see (`None`: keep the caller's).
    pub fn tool(&self, name: &str) -> Option<(&'static ToolModule, Option<&'static str>)> {
        if name == "sh" {
            return self.sh.map(|m| (m, None));
        }
        let n = self.coreutils_names.iter().find(|n| **n == name)?;
        self.coreutils.map(|m| (m, Some(*n)))
    }

    /// Identifies these tools and where they appear: part of every RUN step's cache key, so a
    /// kiln with other guest tools does not reuse layers made by the old ones.
    pub fn identity(&self) -> &str {
        self.identity.get_or_init(|| {
            let mut h = blake3::Hasher::new();
            for m in [self.sh, self.coreutils].into_iter().flatten() {
                h.update(&m.sha256);
            }
            for (path, tool) in &self.shims {
                h.update(path.as_str().as_bytes());
                h.update(b"\0");
                h.update(tool.as_bytes());
                h.update(b"\n");
            }
            h.finalize().to_hex().to_string()
        })
    }

    /// The shim table for an overlay.
    pub fn shims(&self) -> Shims {
        Shims::new(self.shims.iter().cloned())
    }
}

fn parse_shims(text: &str, tools: &GuestTools) -> Vec<(ContainerPath, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(dir) = words.next() else { continue };
        let dir = ContainerPath::parse(dir);
        for w in words {
            let names: Vec<&str> = if w == "@coreutils" {
                tools.coreutils_names.to_vec()
            } else {
                vec![w]
            };
            for n in names {
                if tools.tool(n).is_some() {
                    out.push((dir.join(n), n.to_owned()));
                }
            }
        }
    }
    out
}
