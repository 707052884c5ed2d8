//! Choosing a manifest from an index by platform, with containerd's rules: the OS and
//! architecture must match; a variant falls back to older ones (`amd64/v3` takes v3, v2, v1;
//! `arm/v7` takes v7, v6, v5; `arm64` means `arm64/v8`); attestation entries are skipped.

use std::fmt;

use crate::image::Descriptor;

/// A platform to pull for: `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    /// `linux`.
    pub os: String,
    /// Go's architecture name (`amd64`, `arm64`).
    pub architecture: String,
    /// The variant, normalised (`v8` for arm64, empty for amd64 v1).
    pub variant: String,
}

impl fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

impl PlatformSpec {
    /// This machine's platform.
    pub fn host() -> Self {
        Self::normalised(
            "linux",
            crate::build::state::host_arch(),
            if cfg!(target_arch = "aarch64") {
                "v8"
            } else {
                ""
            },
        )
    }

    /// Parses `os/arch[/variant]` (or `arch` alone, which means linux).
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || format!("invalid platform {s:?}: expected os/arch[/variant]");
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [arch] => Ok(Self::normalised("linux", arch, "")),
            [os, arch] => Ok(Self::normalised(os, arch, "")),
            [os, arch, variant] => Ok(Self::normalised(os, arch, variant)),
            _ => Err(bad()),
        }
    }

    fn normalised(os: &str, arch: &str, variant: &str) -> Self {
        let os = os.to_ascii_lowercase();
        let arch = arch.to_ascii_lowercase();
        let mut variant = variant.to_ascii_lowercase();
        let arch = match arch.as_str() {
            "x86_64" | "x86-64" => "amd64".to_owned(),
            "i386" | "i686" => "386".to_owned(),
            "aarch64" => "arm64".to_owned(),
            "armhf" => {
                variant = "v7".into();
                "arm".to_owned()
            }
            "armel" => {
                variant = "v6".into();
                "arm".to_owned()
            }
            _ => arch,
        };
        match (arch.as_str(), variant.as_str()) {
            ("arm64", "" | "8" | "v8.0") => variant = "v8".into(),
            ("amd64", "v1") => variant.clear(),
            ("arm", "") => variant = "v7".into(),
            ("arm", "5" | "6" | "7" | "8") => variant = format!("v{variant}"),
            _ => {}
        }
        Self {
            os,
            architecture: arch,
            variant,
        }
    }

    /// How well a manifest for `p` serves this platform: `None` if it cannot run here, else a
    /// rank (higher is better).
    fn rank(&self, os: &str, arch: &str, variant: &str) -> Option<u32> {
        let p = Self::normalised(os, arch, variant);
        if p.os != self.os {
            return None;
        }
        if p.architecture == self.architecture {
            let want = level(&self.variant);
            let have = level(&p.variant);
            return match (want, have) {
                _ if p.variant == self.variant => Some(100),
                (Some(w), Some(h)) if h <= w => Some(50 + h),
                _ => None,
            };
        }
        // arm64 runs arm/v8 images, after its own.
        if self.architecture == "arm64" && p.architecture == "arm" && p.variant == "v8" {
            return Some(10);
        }
        None
    }

    /// The entry of `manifests` to use, if any.
    pub fn choose<'a>(&self, manifests: &'a [Descriptor]) -> Option<&'a Descriptor> {
        let mut best: Option<(u32, &Descriptor)> = None;
        for d in manifests {
            let Some(p) = &d.platform else { continue };
            let attestation = d
                .annotations
                .get("vnd.docker.reference.type")
                .is_some_and(|t| t == "attestation-manifest");
            if attestation || p.os == "unknown" || p.architecture == "unknown" {
                continue;
            }
            if let Some(r) = self.rank(&p.os, &p.architecture, &p.variant) {
                if best.is_none_or(|(b, _)| r > b) {
                    best = Some((r, d));
                }
            }
        }
        best.map(|(_, d)| d)
    }
}

/// `v3` → 3; the empty variant of amd64 is level 1.
fn level(v: &str) -> Option<u32> {
    if v.is_empty() {
        return Some(1);
    }
    v.strip_prefix('v')?.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::image::{media_types, Platform};

    fn entry(os: &str, arch: &str, variant: &str, n: u8) -> Descriptor {
        let mut d = Descriptor::new(media_types::OCI_MANIFEST, Digest::of(&[n]), 1);
        d.platform = Some(Platform {
            architecture: arch.into(),
            os: os.into(),
            variant: variant.into(),
            ..Platform::default()
        });
        d
    }

    #[test]
    fn platforms_are_chosen_like_containerd() {
        let mut att = entry("unknown", "unknown", "", 9);
        att.annotations.insert(
            "vnd.docker.reference.type".into(),
            "attestation-manifest".into(),
        );
        let list = vec![
            att,
            entry("linux", "arm64", "v8", 1),
            entry("linux", "amd64", "", 2),
            entry("linux", "amd64", "v3", 3),
            entry("linux", "arm", "v6", 4),
            entry("linux", "arm", "v7", 5),
            entry("windows", "amd64", "", 6),
        ];
        let pick = |s: &str| {
            PlatformSpec::parse(s)
                .unwrap()
                .choose(&list)
                .map(|d| d.digest)
        };
        assert_eq!(pick("linux/amd64"), Some(Digest::of(&[2])));
        assert_eq!(pick("linux/amd64/v2"), Some(Digest::of(&[2])));
        assert_eq!(pick("linux/amd64/v4"), Some(Digest::of(&[3])));
        assert_eq!(pick("linux/arm64"), Some(Digest::of(&[1])));
        assert_eq!(pick("linux/arm/v7"), Some(Digest::of(&[5])));
        assert_eq!(pick("linux/arm/v6"), Some(Digest::of(&[4])));
        assert_eq!(pick("linux/arm/v5"), None);
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(pick("windows/amd64"), Some(Digest::of(&[6])));
        let only_att = vec![list[0].clone()];
        assert!(PlatformSpec::parse("linux/amd64")
            .unwrap()
            .choose(&only_att)
            .is_none());
        assert_eq!(
            PlatformSpec::parse("aarch64").unwrap().to_string(),
            "linux/arm64/v8"
        );
        assert!(PlatformSpec::parse("linux//x").is_err());
        assert!(PlatformSpec::parse("a/b/c/d").is_err());
    }
}
