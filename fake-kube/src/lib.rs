//! Fake Kubernetes API server (placeholder while the crate is written).
