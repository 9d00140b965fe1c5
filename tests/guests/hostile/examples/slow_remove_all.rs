//! Scans nothing, then spins in `decide` for the number of iterations its
//! settings give (e.g. `3000000000`) before removing everything: a window
//! in which a test can start a container on a candidate image.
use scour_hostile_guests::sdk::{Context, Decision, Image, PolicyInfo};
use scour_hostile_guests::{Policy, export_policy};

struct SlowRemoveAll;

impl Policy for SlowRemoveAll {
    fn info() -> PolicyInfo {
        PolicyInfo {
            name: "hostile-slow-remove-all".into(),
            version: "0.0.0".into(),
            max_findings: 0,
        }
    }

    fn validate_settings(settings: &str) -> Result<(), String> {
        settings
            .trim()
            .parse::<u64>()
            .map(drop)
            .map_err(|_| "settings must be a number of iterations".into())
    }

    fn select(_: &str, _: &Context, _: &[Image]) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }

    fn decide(settings: &str, _: &Context, images: &[Image]) -> Result<Vec<Decision>, String> {
        let spins: u64 = settings.trim().parse().unwrap_or(0);
        let mut n = 0u64;
        while n < spins {
            n = std::hint::black_box(n + 1);
        }
        Ok(images
            .iter()
            .map(|i| Decision::remove(&i.id, "slow: remove everything"))
            .collect())
    }
}

export_policy!(SlowRemoveAll);
