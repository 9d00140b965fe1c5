//! scour's default policy, with the semantics of AKS Image Cleaner and Eraser.
//!
//! Automatic mode removes an unused, unpinned, unexcluded image that has a
//! finding at a configured severity (fixable ones only with `ignoreUnfixed`),
//! is end-of-life (with `deleteEOLImages`), or failed to scan (with
//! `deleteFailedImages`). With `scanDisabled` it removes every unused,
//! unexcluded image and scans nothing. Manual mode removes the unused,
//! unexcluded images that an ImageList entry names; `*` prunes them all.
//!
//! The logic is plain Rust so that it runs natively in tests and benchmarks;
//! on wasm32 it is exported as the `scour:policy` component.

use scour_policy_sdk::settings::Settings;
use scour_policy_sdk::{Context, Decision, Image, Mode, PolicyInfo, ScanOutcome, ScanReport, Severity};

pub const NAME: &str = "scour-default";

/// The default policy's settings, in Eraser's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultSettings {
    /// Severities that make an image vulnerable; least severe first.
    pub severities: Vec<Severity>,
    /// Count only findings that have a fix.
    pub ignore_unfixed: bool,
    pub delete_eol_images: bool,
    pub delete_failed_images: bool,
    pub scan_disabled: bool,
}

impl Default for DefaultSettings {
    fn default() -> Self {
        Self {
            severities: vec![Severity::Low, Severity::Medium, Severity::High, Severity::Critical],
            ignore_unfixed: false,
            delete_eol_images: true,
            delete_failed_images: false,
            scan_disabled: false,
        }
    }
}

impl DefaultSettings {
    /// Parses JSON settings; empty text means all defaults. Errors name the key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let d = Self::default();
        let mut s = Settings::parse(text).map_err(|e| e.0)?;
        let mut severities = s.severities("severities").map_err(|e| e.0)?.unwrap_or(d.severities);
        severities.sort();
        severities.dedup();
        let parsed = Self {
            severities,
            ignore_unfixed: s.bool("ignoreUnfixed").map_err(|e| e.0)?.unwrap_or(d.ignore_unfixed),
            delete_eol_images: s
                .bool("deleteEOLImages")
                .map_err(|e| e.0)?
                .unwrap_or(d.delete_eol_images),
            delete_failed_images: s
                .bool("deleteFailedImages")
                .map_err(|e| e.0)?
                .unwrap_or(d.delete_failed_images),
            scan_disabled: s.bool("scanDisabled").map_err(|e| e.0)?.unwrap_or(d.scan_disabled),
        };
        s.finish().map_err(|e| e.0)?;
        Ok(parsed)
    }

    /// Whether a scan result could ever lead to a removal.
    fn scanning_matters(&self) -> bool {
        !self.scan_disabled && (!self.severities.is_empty() || self.delete_eol_images)
    }
}

pub fn info() -> PolicyInfo {
    PolicyInfo {
        name: NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        // Only the per-severity summary is read.
        max_findings: 0,
    }
}

pub fn validate_settings(settings: &str) -> Result<(), String> {
    DefaultSettings::parse(settings).map(drop)
}

/// Images worth a scan: in automatic mode, the unused, unpinned, unexcluded
/// ones, unless no scan result could change the verdict.
pub fn select(settings: &str, ctx: &Context, images: &[Image]) -> Result<Vec<String>, String> {
    let s = DefaultSettings::parse(settings)?;
    if ctx.mode == Mode::Manual || !s.scanning_matters() {
        return Ok(Vec::new());
    }
    Ok(images
        .iter()
        .filter(|img| !img.in_use && !img.pinned && img.excluded_by.is_none())
        .map(|img| img.id.clone())
        .collect())
}

/// A verdict for every image. Exclusions and ImageList entries come matched
/// by the host (`excluded_by`, `listed_by`).
pub fn decide(settings: &str, ctx: &Context, images: &[Image]) -> Result<Vec<Decision>, String> {
    let s = DefaultSettings::parse(settings)?;
    Ok(images.iter().map(|img| decide_one(&s, ctx.mode, img)).collect())
}

fn decide_one(s: &DefaultSettings, mode: Mode, img: &Image) -> Decision {
    if img.in_use {
        return Decision::keep(&img.id, "in-use");
    }
    if img.pinned {
        return Decision::keep(&img.id, "pinned");
    }
    if let Some(p) = &img.excluded_by {
        return Decision::keep(&img.id, labelled("excluded: ", p));
    }
    if mode == Mode::Manual {
        return match img.listed_by.as_deref() {
            Some("*") => Decision::remove(&img.id, "prune"),
            Some(entry) => Decision::remove(&img.id, labelled("imagelist: ", entry)),
            None => Decision::keep(&img.id, "not-listed"),
        };
    }
    if s.scan_disabled {
        return Decision::remove(&img.id, "unused");
    }
    match &img.scan {
        ScanOutcome::NotScanned => Decision::keep(&img.id, "not-scanned"),
        ScanOutcome::Failed(reason) => {
            let reason = labelled("scan-failed: ", reason);
            if s.delete_failed_images {
                Decision::remove(&img.id, reason)
            } else {
                Decision::keep(&img.id, reason)
            }
        }
        ScanOutcome::Scanned(report) => match findings_verdict(s, report) {
            Some(reason) => Decision::remove(&img.id, reason),
            None => Decision::keep(&img.id, "clean"),
        },
    }
}

/// `vulnerable: 2 HIGH, 1 CRITICAL` and/or `eol: alpine 3.5`, or None.
/// Built by hand: this runs for every image, and `format!` is slow in Wasm.
fn findings_verdict(s: &DefaultSettings, report: &ScanReport) -> Option<String> {
    let mut reason = String::new();
    for &sev in &s.severities {
        let c = report.summary.get(sev);
        let n = if s.ignore_unfixed { c.fixable } else { c.total };
        if n > 0 {
            reason.push_str(if reason.is_empty() { "vulnerable: " } else { ", " });
            push_u32(&mut reason, n);
            reason.push(' ');
            reason.push_str(sev.as_str());
        }
    }
    if let Some(os) = report.os.as_ref().filter(|os| os.eol && s.delete_eol_images) {
        if !reason.is_empty() {
            reason.push_str("; ");
        }
        reason.push_str("eol: ");
        reason.push_str(&os.family);
        reason.push(' ');
        reason.push_str(&os.name);
    }
    (!reason.is_empty()).then_some(reason)
}

fn labelled(label: &str, text: &str) -> String {
    let mut s = String::with_capacity(label.len() + text.len());
    s.push_str(label);
    s.push_str(text);
    s
}

fn push_u32(out: &mut String, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[i..].iter().map(|&d| d as char));
}

#[cfg(target_arch = "wasm32")]
mod component {
    use super::*;

    struct DefaultPolicy;

    impl scour_policy_guest::Policy for DefaultPolicy {
        fn info() -> PolicyInfo {
            info()
        }

        fn validate_settings(settings: &str) -> Result<(), String> {
            validate_settings(settings)
        }

        fn select(settings: &str, ctx: &Context, images: &[Image]) -> Result<Vec<String>, String> {
            select(settings, ctx, images)
        }

        fn decide(settings: &str, ctx: &Context, images: &[Image]) -> Result<Vec<Decision>, String> {
            decide(settings, ctx, images)
        }
    }

    scour_policy_guest::export_policy!(DefaultPolicy);
    scour_policy_guest::use_bump_allocator!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_eraser() {
        assert_eq!(DefaultSettings::parse("").unwrap(), DefaultSettings::default());
        let d = DefaultSettings::parse(
            r#"{"severities":["LOW","MEDIUM","HIGH","CRITICAL"],"ignoreUnfixed":false,"deleteEOLImages":true,"deleteFailedImages":false,"scanDisabled":false}"#,
        )
        .unwrap();
        assert_eq!(d, DefaultSettings::default());
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, 10, 1234, u32::MAX] {
            let mut s = String::new();
            push_u32(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn bad_settings_name_the_key() {
        for (text, key) in [
            (r#"{"severity":["HIGH"]}"#, "`severity`"),
            (r#"{"severities":["SEVERE"]}"#, "`severities[0]`"),
            (r#"{"ignoreUnfixed":"yes"}"#, "`ignoreUnfixed`"),
            (r#"{"deleteEOLImages":1}"#, "`deleteEOLImages`"),
            (r#"{"deleteFailedImages":[]}"#, "`deleteFailedImages`"),
            (r#"{"scanDisabled":null,"extra":1}"#, "`extra`"),
        ] {
            let err = validate_settings(text).unwrap_err();
            assert!(err.contains(key), "{err} should name {key}");
        }
    }
}
