//! The build context: a folder or a tar stream, filtered by `.dockerignore`, hashed with a stat cache.
