//! Golden case files as `scour policy test` reads them
//! (`scour::policy::golden::Case::parse_text`, behind `Case::parse_file`).
//!
//! Every case that loads is run through the default policy natively; where
//! its settings are valid, the verdicts are recorded as `scour policy eval
//! --record` does (`golden::record`) and the recorded file must load back
//! to the same snapshot and settings, expecting exactly those verdicts.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use scour::policy::golden::{Case, record};
use scour_policy_sdk::annotate;

fn settings_value(text: &str) -> Option<serde_json::Value> {
    match text.trim() {
        "" => None,
        t => Some(serde_json::from_str(t).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cases) = Case::parse_text(text, Path::new("fuzz.yaml")) else {
        return;
    };
    for case in cases {
        for e in &case.expect {
            assert!(case.snapshot.images.iter().any(|i| i.id == e.image));
        }
        let settings = case.settings.as_deref().unwrap_or("");
        let mut images = case.snapshot.images.clone();
        if annotate(&case.snapshot.context, &mut images).is_err() {
            continue;
        }
        let Ok(selected) = scour_default_policy::select(settings, &case.snapshot.context, &images) else {
            continue;
        };
        let decisions = scour_default_policy::decide(settings, &case.snapshot.context, &images)
            .expect("settings that select also decide");
        let recorded = record(&case.name, settings, &case.snapshot, &selected, &decisions)
            .unwrap_or_else(|e| panic!("recording {:?}: {e}", case.name));
        let again = Case::parse_text(&recorded, Path::new("recorded.yaml"))
            .unwrap_or_else(|e| panic!("the recorded case does not load: {e}\n{recorded}"));
        let [again] = <[Case; 1]>::try_from(again).expect("one case recorded");
        assert_eq!(again.name, case.name);
        assert_eq!(
            again.snapshot, case.snapshot,
            "snapshot changed by recording:\n{recorded}"
        );
        assert_eq!(
            settings_value(again.settings.as_deref().unwrap_or("")),
            settings_value(settings),
            "settings changed by recording:\n{recorded}"
        );
        assert_eq!(again.expect.len(), decisions.len());
        for (e, d) in again.expect.iter().zip(&decisions) {
            assert_eq!(
                (&e.image, e.action, e.reason.as_deref()),
                (&d.id, d.action, Some(d.reason.as_str()))
            );
        }
        let select: std::collections::BTreeSet<String> = selected.into_iter().collect();
        assert_eq!(again.expect_select.as_ref(), Some(&select));
    }
});
