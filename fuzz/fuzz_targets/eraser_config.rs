//! Eraser's config file (`EraserConfig`, `eraser.sh/v1alpha3`) as the
//! worker and the controller load it: `scour::config::Loaded::parse`, then
//! every accessor scour calls on a loaded config.
//!
//! A config that loads must not make an accessor panic, must give the
//! built-in policy settings it accepts (unless `scour.policy.settings`
//! overrides them), and must have an interval within 24h to 2160h.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use scour::config::Loaded;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(loaded) = Loaded::parse(text) else { return };
    let _ = format!("{loaded:?}");
    let interval = loaded.interval().expect("a loaded config has a valid interval");
    assert!((Duration::from_secs(24 * 3600)..=Duration::from_secs(2160 * 3600)).contains(&interval));
    let _ = loaded.automatic_enabled();
    let _ = loaded.begin_immediately();
    let ratio = loaded.success_ratio();
    assert!((0.0..=1.0).contains(&ratio), "successRatio {ratio}");
    let _ = loaded.cleanup_delays();
    let c = loaded.max_concurrency();
    for nodes in [0, 1, 3, 100] {
        assert!(c.of(nodes) >= 1);
    }
    let _ = loaded.node_timeout();
    let _ = loaded.pending_timeout();
    let _ = loaded.runtime_address();
    let _ = loaded.dry_run();
    let _ = loaded.vulnerable();
    let _ = loaded.scan_total_timeout();
    let _ = loaded.scan_per_image_timeout();
    let derived = loaded.default_policy_settings();
    scour_default_policy::validate_settings(&derived)
        .unwrap_or_else(|e| panic!("the default policy rejects the settings the config derives ({derived}): {e}"));
    assert_eq!(
        loaded.policy_settings(false).is_empty(),
        loaded.config.scour.policy.settings.is_none()
    );
    if loaded.config.scour.policy.settings.is_none() {
        assert_eq!(loaded.policy_settings(true), derived);
    }
});
