//! Sizes (`64MiB`, `1.5GiB`), durations (humantime for flags, Go syntax for
//! Eraser's config) and the rollout concurrency (`5`, `10%`):
//! `scour::units::{parse_bytes, parse_duration, parse_go_duration,
//! format_bytes}` and `scour::config::parse_concurrency`.
//!
//! Every parser gets the whole input; what parses is used the way scour
//! uses it (formatted, a share of N nodes taken). Whole numbers of a Go
//! unit must come out exact.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use scour::config::{Concurrency, parse_concurrency};
use scour::units::{format_bytes, parse_bytes, parse_duration, parse_go_duration};

fuzz_target!(|data: &[u8]| {
    if data.len() >= 8 {
        let n = u64::from_le_bytes(data[..8].try_into().unwrap());
        let _ = format_bytes(n);
        // Exact below 2^53, where f64 holds every integer.
        let n = n >> 11;
        assert_eq!(parse_bytes(&n.to_string()), Ok(n));
        // Within the config's century bound (876 000 h), where whole
        // numbers stay exact.
        let secs = (n >> 22) % 876_001;
        for (unit, factor) in [("s", 1), ("m", 60), ("h", 3600)] {
            assert_eq!(
                parse_go_duration(&format!("{secs}{unit}")),
                Ok(Duration::from_secs(secs * factor)),
                "{secs}{unit}"
            );
        }
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(n) = parse_bytes(text) {
        let _ = format_bytes(n);
    }
    let _ = parse_duration(text);
    if let Ok(d) = parse_go_duration(text) {
        let _ = humantime::format_duration(d).to_string();
    }
    match parse_concurrency(text) {
        Ok(c @ Concurrency::Nodes(n)) => {
            assert!(n >= 1);
            assert_eq!(c.of(0), n as usize);
        }
        Ok(c @ Concurrency::Percent(p)) => {
            assert!(p > 0.0 && p <= 100.0);
            for nodes in [0, 1, 7, 1000, usize::MAX] {
                let k = c.of(nodes);
                assert!(k >= 1 && k <= nodes.max(1), "{p}% of {nodes} is {k}");
            }
            let _ = c.to_string();
        }
        Err(_) => {}
    }
});
