//! The policy host: runs untrusted `scour:policy` components under wasmtime.
//!
//! - [`PolicyEngine`]: one wasmtime `Engine` and `Linker`, the per-call time
//!   and memory budget, and the precompiled-artifact cache;
//! - [`LoadedPolicy`]: one compiled, type-checked component with validated
//!   settings; every call gets a fresh `Store` and an empty WASI context;
//! - [`PolicyHandle`]: the current policy behind an `ArcSwap`, swapped only
//!   after a candidate passes every check;
//! - [`PolicyWatcher`]: polls a policy file by content digest and reloads it;
//! - [`golden`]: the policy's own test cases, used by `scour policy test` and
//!   as a reload gate.

mod abi;
mod cache;
mod engine;
pub mod golden;
mod guest_log;
mod handle;
mod loaded;
pub mod oci;
mod source;
mod watch;

use std::time::Duration;

pub use cache::ArtifactCache;
pub use engine::{Budget, Limits, PolicyEngine};
pub use handle::{HandleStatus, PolicyHandle};
pub use loaded::{DecisionSet, INTERFACE, LoadStats, LoadedPolicy, WORLD};
pub use source::{DigestPin, PolicySource, embedded_default_policy};
pub use watch::{PolicyWatcher, Poll, WatchGuard, WatchTarget};

/// The policy export being called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Instantiate,
    Info,
    ValidateSettings,
    Select,
    Decide,
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Call::Instantiate => "instantiation",
            Call::Info => "info",
            Call::ValidateSettings => "validate-settings",
            Call::Select => "select",
            Call::Decide => "decide",
        })
    }
}

/// A policy answer the host refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("{got} answers for {offered} images")]
    TooMany { got: usize, offered: usize },
    #[error("id {0:?} was not offered")]
    UnknownId(String),
    #[error("id {0:?} appears more than once")]
    DuplicateId(String),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The message carries the cause; it is not also a `source`, or error
    // chains would print it twice.
    #[error("reading policy {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("policy {origin} is not a loadable WebAssembly component: {message}")]
    Compile { origin: String, message: String },
    #[error("policy {origin} does not implement {WORLD}: {message}")]
    Incompatible { origin: String, message: String },
    #[error("policy rejected its settings: {0}")]
    SettingsRejected(String),
    #[error("policy {call} ran past its deadline of {}", humantime::format_duration(*.deadline))]
    Timeout { call: Call, deadline: Duration },
    #[error("policy {call} ran out of fuel ({fuel} units)")]
    OutOfFuel { call: Call, fuel: u64 },
    #[error("policy {call} exceeded its memory limit of {limit} bytes")]
    OutOfMemory { call: Call, limit: usize },
    #[error("policy {call} trapped: {message}")]
    Trap { call: Call, message: String },
    #[error("policy {call} returned an error: {message}")]
    Rejected { call: Call, message: String },
    #[error("policy {call} returned an invalid answer: {problem}")]
    InvalidAnswer { call: Call, problem: AnswerError },
    #[error("policy failed golden case {case:?}: {detail}")]
    CaseFailed { case: String, detail: String },
    #[error("policy digest {actual} is not the pinned {expected}")]
    PinMismatch { expected: String, actual: String },
    /// A `registry://` reference that cannot name a policy (no digest, no
    /// host, bad syntax).
    #[error("{0}")]
    Reference(String),
    /// The registry could not be reached, refused the credentials, or does
    /// not have the policy.
    #[error("cannot pull policy {reference}: {message}")]
    Registry { reference: String, message: String },
    /// The artifact is there but is not a scour policy.
    #[error("{reference} is not a scour policy: {message}")]
    NotAPolicy { reference: String, message: String },
    /// The input itself is unusable, e.g. an exclusion pattern that does not
    /// parse; the policy was not called.
    #[error("policy input is invalid: {0}")]
    Input(String),
}

impl Error {
    /// A short, stable label for metrics and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Read { .. } => "read",
            Error::Compile { .. } => "compile",
            Error::Incompatible { .. } => "incompatible",
            Error::SettingsRejected(_) => "settings-rejected",
            Error::Timeout { .. } => "timeout",
            Error::OutOfFuel { .. } => "out-of-fuel",
            Error::OutOfMemory { .. } => "out-of-memory",
            Error::Trap { .. } => "trap",
            Error::Rejected { .. } => "rejected",
            Error::InvalidAnswer { .. } => "invalid-answer",
            Error::CaseFailed { .. } => "case-failed",
            Error::Input(_) => "input",
            Error::PinMismatch { .. } => "pin-mismatch",
            Error::Reference(_) => "reference",
            Error::Registry { .. } => "registry",
            Error::NotAPolicy { .. } => "not-a-policy",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}
