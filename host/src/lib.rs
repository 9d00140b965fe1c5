//! scour: cleans stale and vulnerable container images off Kubernetes nodes.
//!
//! The data path of a node pass is
//! collect → scan → decide → guard → remove → report; the decision runs as a
//! sandboxed WebAssembly component ([`policy`]).

pub mod cli;
pub mod output;
pub mod policy;
pub mod units;
