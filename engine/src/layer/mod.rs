//! Layers: deterministic tars with OCI whiteouts from an upper folder, and safe extraction.
