//! Test support for scour's integration scenarios (`tests/*.rs`).

pub mod guests;
pub mod nodes;
