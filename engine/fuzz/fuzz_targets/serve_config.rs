//! `kiln serve --config`: any text either parses into tenants that pass the checks or is refused
//! with a message; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = kiln::server::ServerConfig::parse(text) {
        assert!(!cfg.tenants.is_empty());
        for t in &cfg.tenants {
            assert!(t.token.len() >= 16);
            assert!(!t.name.is_empty() && !t.name.contains('/') && !t.name.contains(".."));
            assert!(t.quotas.concurrent_builds >= 1);
        }
    }
});
