//! `.dockerignore` matching with moby/patternmatcher semantics.
