//! scour: cleans stale and vulnerable container images off Kubernetes nodes.
//!
//! The data path of a node pass is
//! collect → scan → decide → guard → remove → report; the decision runs as a
//! sandboxed WebAssembly component ([`policy`]).
//!
//! No input may panic it: outside tests, `unwrap`, `expect`, `panic!` and
//! unchecked indexing are refused by clippy, and the few justified
//! exceptions say why next to an `allow`.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)
)]

pub mod authoring;
pub mod bounded;
pub mod cli;
pub mod collect;
pub mod config;
pub mod controller;
pub mod cri;
pub mod exclusions;
pub mod fsutil;
pub mod guard;
pub mod memory;
pub mod output;
pub mod policy;
pub mod remove;
pub mod report;
pub mod scan;
pub mod text;
pub mod units;
pub mod worker;
