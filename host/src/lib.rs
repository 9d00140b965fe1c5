//! scour: cleans stale and vulnerable container images off Kubernetes nodes.
//!
//! The data path of a node pass is
//! collect → scan → decide → guard → remove → report; the decision runs as a
//! sandboxed WebAssembly component ([`policy`]).

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
