//! The scour policy SDK: what the host and every Rust policy share.
//!
//! - [`reference`]: Docker image reference parsing and normalisation;
//! - [`pattern`]: exclusion and ImageList matching, the single implementation
//!   used by the host's guards and compiled into every Rust guest;
//! - [`severity`]: vulnerability severities;
//! - [`model`]: the policy's view of a node and the snapshot file format;
//! - [`settings`]: strict JSON settings whose errors name the key.
//!
//! The crate is plain Rust with no WebAssembly-only code. Guests get their WIT
//! glue from `scour-policy-guest`.
//!
//! It parses what people and other programs write (references, patterns,
//! settings, snapshots) inside the host, so, as there, no panic may be
//! reachable from input: clippy refuses `unwrap`, `expect`, `panic!` and
//! unchecked indexing outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)
)]

pub mod model;
pub mod pattern;
pub mod reference;
pub mod settings;
pub mod severity;

pub use model::{
    Action, Context, Decision, Finding, Image, ImageFs, Matches, Mode, OsInfo, PolicyInfo, ScanOutcome, ScanReport,
    ScanStatus, SeverityCount, Snapshot, VulnSummary, annotate, matches,
};
pub use pattern::{ImageNames, Pattern, PatternError, PatternSet};
pub use severity::Severity;
