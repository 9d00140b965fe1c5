//! Exclusion lists, `{"excluded": [...]}` (`scour::exclusions::parse_list`):
//! what the worker reads from files and ConfigMap mounts and the controller
//! checks ConfigMaps with. Also goes through `ExclusionList::load` from a file
//! now and then, the worker's path.
//!
//! A list that loads must hold trimmed entries that each parse as a pattern,
//! so that the matcher built from it (`patterns()`) has them all.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use scour::exclusions::{ExclusionList, parse_list};
use scour_policy_sdk::{Pattern, PatternSet};

fn scratch() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("scour-fuzz-exclusions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = parse_list(text);
    if let Ok(entries) = &parsed {
        for e in entries {
            assert_eq!(e.trim(), e, "entries are trimmed");
            Pattern::parse(e).unwrap_or_else(|err| panic!("accepted entry {e:?} does not parse: {err}"));
        }
        assert_eq!(
            PatternSet::parse(entries).expect("accepted entries parse").len(),
            entries.len()
        );
        assert_eq!(
            parse_list(&serde_json::json!({ "excluded": entries }).to_string()).as_ref(),
            Ok(entries)
        );
    }
    // The file path, for one input in 16 (it costs a write and a read).
    if data.len() % 16 == 0 {
        let file = scratch().join("list.json");
        std::fs::write(&file, data).unwrap();
        let loaded = ExclusionList::load(&[file], &[]);
        match (&parsed, loaded) {
            (Ok(entries), Ok(list)) => {
                assert_eq!(list.entries(), entries.as_slice());
                assert_eq!(list.patterns().len(), entries.len());
            }
            (Err(_), Err(_)) => {}
            (parsed, loaded) => panic!(
                "parse_list {parsed:?} but load {:?}",
                loaded.map(|l| l.entries().to_vec())
            ),
        }
    }
});
