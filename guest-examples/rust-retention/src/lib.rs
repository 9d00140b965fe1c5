//! rust-retention: keep the newest N tags of every repository, and drop
//! images no container has used for too long.
//!
//! Settings (JSON, all optional):
//! - `keepNewest` (default 3): how many images per repository to keep, newest
//!   first. Versions rank by semver (`2.10.0` is newer than `2.9.1`, a leading
//!   `v` is fine); tags that are not versions (`latest`, branch names) rank
//!   below versioned ones, newest first-seen first.
//! - `maxAgeDays`: also remove unused images first seen more than this many
//!   days ago, whatever their rank.
//! - `minSizeBytes` (default 0): never remove an image smaller than this.
//! - `protect`: image patterns (`repo:*`, `prefix/*`, …) never to remove.
//!
//! In manual mode it removes what the ImageList names, like the default
//! policy. It never asks for scans.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use scour_policy_guest::sdk::settings::Settings;
use scour_policy_guest::sdk::{Context, Decision, Image, Mode, PatternSet, PolicyInfo};

const DAY: u64 = 86_400;

/// Parsed settings.
#[derive(Debug, Clone)]
pub struct Retention {
    pub keep_newest: usize,
    pub max_age_days: Option<u64>,
    pub min_size_bytes: u64,
    pub protect: PatternSet,
}

impl Retention {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut s = Settings::parse(text).map_err(|e| e.0)?;
        let keep_newest = s.u64("keepNewest").map_err(|e| e.0)?.unwrap_or(3);
        if keep_newest == 0 {
            return Err("`keepNewest`: must be at least 1".into());
        }
        let max_age_days = s.u64("maxAgeDays").map_err(|e| e.0)?;
        if max_age_days == Some(0) {
            return Err("`maxAgeDays`: must be at least 1 (leave it out to keep images of any age)".into());
        }
        let min_size_bytes = s.u64("minSizeBytes").map_err(|e| e.0)?.unwrap_or(0);
        let protect = s.string_list("protect").map_err(|e| e.0)?.unwrap_or_default();
        let protect = PatternSet::parse(&protect).map_err(|e| format!("`protect`: {e}"))?;
        s.finish().map_err(|e| e.0)?;
        Ok(Self {
            keep_newest: keep_newest as usize,
            max_age_days,
            min_size_bytes,
            protect,
        })
    }
}

/// `1.2.3`, `v2.10.0-rc.1`, `3.7` (patch 0): numbers and whether it is a
/// pre-release (which ranks below the release).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    numbers: [u64; 3],
    pre: Option<String>,
}

impl Version {
    pub fn parse(tag: &str) -> Option<Self> {
        let t = tag.strip_prefix('v').unwrap_or(tag);
        let t = t.split_once('+').map_or(t, |(v, _build)| v);
        let (core, pre) = match t.split_once('-') {
            Some((c, p)) if !p.is_empty() => (c, Some(p.to_owned())),
            Some(_) => return None,
            None => (t, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if !(2..=3).contains(&parts.len()) {
            return None;
        }
        let mut numbers = [0u64; 3];
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *slot = part.parse().ok()?;
        }
        Some(Self { numbers, pre })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.numbers.cmp(&other.numbers).then_with(|| match (&self.pre, &other.pre) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => a.cmp(b),
        })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `(repository, tag)` of a full `repository:tag`.
fn split_tag(tag: &str) -> Option<(&str, &str)> {
    let colon = tag.rfind(':')?;
    (!tag[colon + 1..].contains('/')).then(|| (&tag[..colon], &tag[colon + 1..]))
}

/// For each repository, the indexes of its images, newest first.
fn rank(images: &[Image]) -> BTreeMap<&str, Vec<usize>> {
    let mut repos: BTreeMap<&str, Vec<(Option<Version>, u64, usize)>> = BTreeMap::new();
    for (i, img) in images.iter().enumerate() {
        let mut best: BTreeMap<&str, Option<Version>> = BTreeMap::new();
        for (repo, tag) in img.tags.iter().filter_map(|t| split_tag(t)) {
            let v = Version::parse(tag);
            let slot = best.entry(repo).or_insert(None);
            if v > *slot {
                *slot = v;
            }
        }
        for (repo, version) in best {
            repos.entry(repo).or_default().push((version, img.first_seen, i));
        }
    }
    repos
        .into_iter()
        .map(|(repo, mut entries)| {
            // Versions first (None sorts below Some), then first-seen.
            entries.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
            (repo, entries.into_iter().map(|(_, _, i)| i).collect())
        })
        .collect()
}

/// A verdict per image.
pub fn decide(settings: &str, ctx: &Context, images: &[Image]) -> Result<Vec<Decision>, String> {
    let r = Retention::parse(settings)?;
    // Where each image ranks best across its repositories.
    let mut best: Vec<Option<(usize, &str)>> = vec![None; images.len()];
    for (repo, order) in rank(images) {
        for (position, &i) in order.iter().enumerate() {
            if best[i].is_none_or(|(p, _)| position < p) {
                best[i] = Some((position, repo));
            }
        }
    }
    Ok(images
        .iter()
        .zip(best)
        .map(|(img, best)| {
            let keep = |reason: String| Decision::keep(&img.id, reason);
            let remove = |reason: String| Decision::remove(&img.id, reason);
            if img.in_use {
                return keep("in-use".into());
            }
            if img.pinned {
                return keep("pinned".into());
            }
            if let Some(p) = &img.excluded_by {
                return keep(format!("excluded: {p}"));
            }
            if let Some(p) = r.protect.first_match(&img.names()) {
                return keep(format!("protected: {p}"));
            }
            if ctx.mode == Mode::Manual {
                return match img.listed_by.as_deref() {
                    Some("*") => remove("prune".into()),
                    Some(entry) => remove(format!("imagelist: {entry}")),
                    None => keep("not-listed".into()),
                };
            }
            if img.size < r.min_size_bytes {
                return keep(format!("small: {} bytes, under the {} byte minimum", img.size, r.min_size_bytes));
            }
            let age_days = ctx.now.saturating_sub(img.first_seen) / DAY;
            if let Some(max) = r.max_age_days
                && age_days > max
            {
                return remove(format!("age: first seen {age_days} days ago, over {max}"));
            }
            match best {
                Some((position, repo)) if position >= r.keep_newest => remove(format!(
                    "retention: older than the newest {} of {repo}",
                    r.keep_newest
                )),
                Some((position, repo)) => keep(format!(
                    "retention: newest {} of {repo} (#{})",
                    r.keep_newest,
                    position + 1
                )),
                None => keep("untagged".into()),
            }
        })
        .collect())
}

#[cfg(target_arch = "wasm32")]
mod component {
    use super::*;
    use scour_policy_guest::Policy;

    struct RustRetention;

    impl Policy for RustRetention {
        fn info() -> PolicyInfo {
            PolicyInfo {
                name: "rust-retention".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                max_findings: 0,
            }
        }

        fn validate_settings(settings: &str) -> Result<(), String> {
            Retention::parse(settings).map(drop)
        }

        fn select(_: &str, _: &Context, _: &[Image]) -> Result<Vec<String>, String> {
            Ok(Vec::new())
        }

        fn decide(settings: &str, ctx: &Context, images: &[Image]) -> Result<Vec<Decision>, String> {
            decide(settings, ctx, images)
        }
    }

    scour_policy_guest::export_policy!(RustRetention);
    scour_policy_guest::use_bump_allocator!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_rank_by_semver() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("2.10.0") > v("2.9.1"));
        assert!(v("v1.2.3") > v("1.2.2"));
        assert!(v("1.2.3") > v("1.2.3-rc.1"));
        assert!(v("3.7") < v("3.7.1"));
        for not_a_version in ["latest", "main", "1", "1.2.3.4", "1.x.3", "", "1.2.3-"] {
            assert!(Version::parse(not_a_version).is_none(), "{not_a_version}");
        }
    }
}
