//! The cluster controller: on an interval, or when the ImageList named
//! `imagelist` changes, it starts one worker pod per selected node and
//! records what each node removed in an ImageJob.
//!
//! The data path of a run: select nodes → check exclusions → launch worker
//! pods within the rollout cap → collect each pod's termination summary →
//! report (ImageJob and ImageList status, events, metrics) → clean up pods.

mod api;
pub mod crd;
mod error;
mod lease;
pub mod metrics;
mod nodes;
pub mod pods;
mod reconcile;
pub mod serve;
mod state;

pub use error::{Error, Result};
pub use reconcile::{CONFIG_KEY, Controller, EXCLUSION_LABEL, IMAGELIST_NAME, Options, Tick};
