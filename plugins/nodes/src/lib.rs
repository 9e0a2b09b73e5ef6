//! The `nodes` collector (placeholder while the crate is written).
