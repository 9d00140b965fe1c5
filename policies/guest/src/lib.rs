//! WIT glue for scour policies written in Rust.
//!
//! Implement [`Policy`] on the SDK's plain types and export it; build with
//! `cargo build --target wasm32-wasip2` and a `cdylib` crate type:
//!
//! ```
//! use scour_policy_guest::Policy;
//! use scour_policy_guest::sdk::{Context, Decision, Image, PolicyInfo};
//!
//! struct KeepEverything;
//!
//! impl Policy for KeepEverything {
//!     fn info() -> PolicyInfo {
//!         PolicyInfo { name: "keep-everything".into(), version: "1.0.0".into(), max_findings: 0 }
//!     }
//!     fn validate_settings(settings: &str) -> Result<(), String> {
//!         if settings.trim().is_empty() { Ok(()) } else { Err("takes no settings".into()) }
//!     }
//!     fn select(_: &str, _: &Context, _: &[Image]) -> Result<Vec<String>, String> {
//!         Ok(Vec::new())
//!     }
//!     fn decide(_: &str, _: &Context, images: &[Image]) -> Result<Vec<Decision>, String> {
//!         Ok(images.iter().map(|i| Decision::keep(&i.id, "kept by policy")).collect())
//!     }
//! }
//!
//! scour_policy_guest::export_policy!(KeepEverything);
//! # fn main() {}
//! ```
//!
//! The conversions from WIT values move every string, so they cost next to
//! nothing beside the canonical ABI itself.

pub use scour_policy_sdk as sdk;

#[cfg(target_arch = "wasm32")]
pub mod bump;

/// Installs the bump allocator (see [`bump`]) in a policy.
#[cfg(target_arch = "wasm32")]
#[macro_export]
macro_rules! use_bump_allocator {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::bump::BumpAllocator = $crate::bump::BumpAllocator::new();
    };
}
use scour_policy_sdk::{
    Action, Context, Decision, Finding, Image, ImageFs, Mode, OsInfo, PolicyInfo, ScanOutcome, ScanReport, Severity,
    SeverityCount, VulnSummary,
};

extern crate self as scour_policy_guest;
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "__export_policy_world",
        default_bindings_module: "scour_policy_guest::bindings",
        runtime_path: "scour_policy_guest::__wit_bindgen::rt",
    });
}

use bindings::scour::policy::types as wit;

/// Messages for whoever runs the policy, through the `scour:policy/log`
/// import: `scour policy eval` and `test` print them, a worker writes them to
/// its pod log. They change nothing the policy decides. Natively (a policy's
/// unit tests) they go to stderr.
pub mod log {
    use crate::bindings::scour::policy::log::Level;

    /// Shown only when the host runs with `--log-level debug`.
    pub fn debug(message: &str) {
        emit(Level::Debug, message);
    }

    pub fn info(message: &str) {
        emit(Level::Info, message);
    }

    pub fn warn(message: &str) {
        emit(Level::Warn, message);
    }

    fn emit(level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        crate::bindings::scour::policy::log::emit(level, message);
        #[cfg(not(target_arch = "wasm32"))]
        eprintln!("{level:?}: {message}");
    }
}

/// A cleanup policy. Every call gets the raw settings string; parse it with
/// [`sdk::settings::Settings`] so errors name the key.
pub trait Policy {
    /// Name, version and how many findings per image the policy reads.
    fn info() -> PolicyInfo;

    /// Rejects bad settings with a message that names the key.
    fn validate_settings(settings: &str) -> Result<(), String>;

    /// Ids of the images worth a vulnerability scan.
    fn select(settings: &str, ctx: &Context, images: &[Image]) -> Result<Vec<String>, String>;

    /// A verdict per image; images left out are kept.
    fn decide(settings: &str, ctx: &Context, images: &[Image]) -> Result<Vec<Decision>, String>;
}

/// Exports a [`Policy`] implementation as the component's `policy` world.
/// It expands to nothing off wasm32, so a policy crate also builds natively
/// (for its unit tests).
#[macro_export]
macro_rules! export_policy {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_policy_world!($ty with_types_in $crate::bindings);
        // Natively, still use the implementation, so it is not dead code.
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = <$ty as $crate::Policy>::decide;
        };
    };
}

impl<T: Policy> bindings::exports::scour::policy::cleanup::Guest for T {
    fn info() -> wit::PolicyInfo {
        let i = T::info();
        wit::PolicyInfo {
            name: i.name,
            version: i.version,
            max_findings: i.max_findings,
        }
    }

    fn validate_settings(settings: String) -> Result<(), String> {
        T::validate_settings(&settings)
    }

    fn select(settings: String, ctx: wit::Context, images: Vec<wit::Image>) -> Result<Vec<String>, String> {
        let images = convert_images(images);
        let selected = T::select(&settings, &context(ctx), &images);
        discard(images);
        selected
    }

    fn decide(settings: String, ctx: wit::Context, images: Vec<wit::Image>) -> Result<Vec<wit::Decision>, String> {
        let images = convert_images(images);
        let decisions = T::decide(&settings, &context(ctx), &images);
        discard(images);
        let decisions = decisions?;
        Ok(decisions
            .into_iter()
            .map(|d| wit::Decision {
                id: d.id,
                action: match d.action {
                    Action::Keep => wit::Action::Keep,
                    Action::Remove => wit::Action::Remove,
                },
                reason: d.reason,
            })
            .collect())
    }
}

/// scour runs every call on a fresh instance and drops it afterwards, so
/// freeing thousands of input strings one by one would be wasted work.
fn discard<T>(value: T) {
    std::mem::forget(value);
}

fn context(c: wit::Context) -> Context {
    Context {
        node: c.node,
        node_labels: c.node_labels,
        now: c.now,
        mode: match c.mode {
            wit::Mode::Automatic => Mode::Automatic,
            wit::Mode::Manual => Mode::Manual,
        },
        imagelist: c.imagelist,
        exclusions: c.exclusions,
        image_fs: c.image_fs.map(|f| ImageFs {
            used_bytes: f.used_bytes,
            capacity_bytes: f.capacity_bytes,
        }),
    }
}

fn convert_images(images: Vec<wit::Image>) -> Vec<Image> {
    images.into_iter().map(image).collect()
}

fn image(i: wit::Image) -> Image {
    Image {
        id: i.id,
        tags: i.tags,
        digests: i.digests,
        size: i.size,
        pinned: i.pinned,
        in_use: i.in_use,
        first_seen: i.first_seen,
        excluded_by: i.excluded_by,
        listed_by: i.listed_by,
        scan: match i.scan {
            wit::ScanOutcome::NotScanned => ScanOutcome::NotScanned,
            wit::ScanOutcome::Failed(reason) => ScanOutcome::Failed(reason),
            wit::ScanOutcome::Scanned(r) => ScanOutcome::Scanned(ScanReport {
                os: r.os.map(|o| OsInfo {
                    family: o.family,
                    name: o.name,
                    eol: o.eol,
                }),
                summary: summary(r.summary),
                findings: r.findings.into_iter().map(finding).collect(),
            }),
        },
    }
}

fn count(c: wit::SeverityCount) -> SeverityCount {
    SeverityCount {
        total: c.total,
        fixable: c.fixable,
    }
}

fn summary(s: wit::VulnSummary) -> VulnSummary {
    VulnSummary {
        unknown: count(s.unknown),
        low: count(s.low),
        medium: count(s.medium),
        high: count(s.high),
        critical: count(s.critical),
    }
}

fn finding(f: wit::Finding) -> Finding {
    Finding {
        id: f.id,
        pkg: f.pkg,
        installed: f.installed,
        fixed: f.fixed,
        severity: match f.severity {
            wit::Severity::Unknown => Severity::Unknown,
            wit::Severity::Low => Severity::Low,
            wit::Severity::Medium => Severity::Medium,
            wit::Severity::High => Severity::High,
            wit::Severity::Critical => Severity::Critical,
        },
    }
}
