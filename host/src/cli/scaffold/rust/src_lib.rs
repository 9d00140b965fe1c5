//! {{name}}: a scour cleanup policy.
//!
//! Removes images that no container uses and that scour first saw more than
//! `maxAgeDays` ago (default 30); keeps in-use, pinned and excluded images.
//! Replace `decide` with your own rules; `wit/policy.wit` documents every field.

wit_bindgen::generate!({ path: "wit", world: "policy" });

use exports::scour::policy::cleanup::{Context, Decision, Guest, Image, PolicyInfo};
use scour::policy::types::Action;

const DAY: u64 = 86_400;
const DEFAULT_MAX_AGE_DAYS: u64 = 30;

/// Settings are JSON, e.g. `{"maxAgeDays": 14}`; errors name the key.
fn max_age_days(settings: &str) -> Result<u64, String> {
    if settings.trim().is_empty() {
        return Ok(DEFAULT_MAX_AGE_DAYS);
    }
    let value: serde_json::Value =
        serde_json::from_str(settings).map_err(|e| format!("settings are not valid JSON: {e}"))?;
    let object = value.as_object().ok_or("settings must be a JSON object")?;
    if let Some(key) = object.keys().find(|k| *k != "maxAgeDays") {
        return Err(format!("unknown setting `{key}`; known settings: maxAgeDays"));
    }
    match object.get("maxAgeDays") {
        None => Ok(DEFAULT_MAX_AGE_DAYS),
        Some(v) => v
            .as_u64()
            .filter(|days| *days > 0)
            .ok_or_else(|| "`maxAgeDays`: expected a whole number of days, at least 1".to_owned()),
    }
}

struct Policy;

impl Guest for Policy {
    fn info() -> PolicyInfo {
        PolicyInfo {
            name: "{{name}}".into(),
            version: "0.1.0".into(),
            max_findings: 0,
        }
    }

    fn validate_settings(settings: String) -> Result<(), String> {
        max_age_days(&settings).map(drop)
    }

    /// This policy does not look at vulnerabilities, so nothing is scanned.
    fn select(_settings: String, _ctx: Context, _images: Vec<Image>) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }

    fn decide(settings: String, ctx: Context, images: Vec<Image>) -> Result<Vec<Decision>, String> {
        let max_age = max_age_days(&settings)? * DAY;
        Ok(images
            .into_iter()
            .map(|image| {
                let age = ctx.now.saturating_sub(image.first_seen);
                let (action, reason) = if image.in_use {
                    (Action::Keep, "in-use".to_owned())
                } else if image.pinned {
                    (Action::Keep, "pinned".to_owned())
                } else if let Some(pattern) = &image.excluded_by {
                    (Action::Keep, format!("excluded: {pattern}"))
                } else if age > max_age {
                    (Action::Remove, format!("not in use, first seen {} days ago", age / DAY))
                } else {
                    (Action::Keep, "recent".to_owned())
                };
                Decision {
                    id: image.id,
                    action,
                    reason,
                }
            })
            .collect())
    }
}

export!(Policy);
