//! What a registry (or a token server, or a docker config) sends is untrusted: challenges,
//! manifests and indexes (with the platform choice over them), tokens, settings files and
//! credentials must parse or fail, never panic.
#![no_main]

use kiln::image::{ImageIndex, ImageManifest};
use kiln::registry::auth::parse_challenges;
use kiln::registry::creds::from_config_text;
use kiln::registry::pull::media_type_of;
use kiln::registry::{PlatformSpec, Settings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let header = String::from_utf8_lossy(head);
    let _ = parse_challenges(&header);
    let _ = media_type_of(body, Some(&header), "fuzz");
    let _ = media_type_of(body, None, "fuzz");
    if let Ok(index) = serde_json::from_slice::<ImageIndex>(body) {
        for p in ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/amd64/v3"] {
            if let Ok(spec) = PlatformSpec::parse(p) {
                let _ = spec.choose(&index.manifests);
            }
        }
    }
    let _ = serde_json::from_slice::<ImageManifest>(body);
    let _ = PlatformSpec::parse(&header);
    let _ = from_config_text(body, &header);
    if let Ok(text) = std::str::from_utf8(body) {
        // No `ca` file is read for a host that names none; one that does is refused or read.
        if !text.contains("ca") {
            let _ = Settings::parse(text);
        }
    }
});
