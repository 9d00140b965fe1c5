//! Parsing of human-friendly sizes and durations in flags and config.

use std::time::Duration;

/// A size or duration that could not be read. The config loader adds the
/// field's path; clap adds the flag's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("unknown size unit {unit:?} in {input:?}; use B, KiB, MiB, GiB or TiB")]
    SizeUnit { unit: String, input: String },
    #[error("invalid size {0:?}")]
    Size(String),
    #[error("invalid duration {input:?}: {reason}")]
    Duration { input: String, reason: String },
    #[error("invalid duration {0:?}: use Go syntax such as 24h, 1h30m, 90s or 500ms")]
    GoDuration(String),
    #[error("invalid duration {0:?}: too long")]
    TooLong(String),
}

/// Parses `67108864`, `64MiB`, `64Mi`, `512KiB`, `1GiB` or `1.5GiB` into bytes.
pub fn parse_bytes(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "Ki" | "KiB" | "k" => 1 << 10,
        "M" | "Mi" | "MiB" => 1 << 20,
        "G" | "Gi" | "GiB" => 1 << 30,
        "T" | "Ti" | "TiB" => 1 << 40,
        other => {
            return Err(UnitError::SizeUnit {
                unit: other.to_owned(),
                input: s.to_owned(),
            });
        }
    };
    let value: f64 = num.parse().map_err(|_| UnitError::Size(s.to_owned()))?;
    let bytes = value * factor as f64;
    // 2^64 and above cannot be held; `as` would saturate silently.
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(UnitError::Size(s.to_owned()));
    }
    Ok(bytes.round() as u64)
}

/// Parses `2s`, `500ms`, `1h30m` and the like.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    humantime::parse_duration(s.trim()).map_err(|e| UnitError::Duration {
        input: s.to_owned(),
        reason: e.to_string(),
    })
}

/// Parses a Go duration as Eraser's config writes them: `24h`, `1h30m`,
/// `90s`, `1.5h`, `500ms`, `0s`.
pub fn parse_go_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    let bad = || UnitError::GoDuration(s.to_owned());
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = t;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let (number, after) = rest.split_at(num_len);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * seconds;
        rest = after;
    }
    // Longer than a century is a mistake, and bounding it keeps every sum
    // of config durations (a timeout plus an hour) from overflowing.
    if total > MAX_GO_DURATION.as_secs_f64() {
        return Err(UnitError::TooLong(s.to_owned()));
    }
    Duration::try_from_secs_f64(total).map_err(|_| UnitError::TooLong(s.to_owned()))
}

/// The longest duration a config may hold: 100 years.
pub const MAX_GO_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `1.5 MiB` and the like, for people.
pub fn format_bytes(n: u64) -> String {
    let mut v = n as f64;
    let mut unit = "B";
    for next in ["KiB", "MiB", "GiB", "TiB"] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = next;
    }
    if unit == "B" {
        format!("{n} B")
    } else {
        format!("{v:.1} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("67108864").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("64Mi").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert!(parse_bytes("64MB?").is_err());
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_bytes("16777216TiB"), Err(UnitError::Size("16777216TiB".into())));
        assert_eq!(parse_bytes(&"9".repeat(400)), Err(UnitError::Size("9".repeat(400))));
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(12), "12 B");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_go_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_go_duration("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_go_duration("1.5h").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_go_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_go_duration("0s").unwrap(), Duration::ZERO);
        for bad in ["", "24", "h", "1d", "1h 30m", "-1h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_absurd_duration_is_an_error_not_a_panic() {
        let e = parse_go_duration("99999999999999999999h").unwrap_err();
        assert_eq!(e, UnitError::TooLong("99999999999999999999h".into()));
        assert!(e.to_string().contains("too long"), "{e}");
        assert!(parse_go_duration(&format!("{}h", "9".repeat(400))).is_err());
        // Found by the eraser_config fuzz target: it loaded, then a timeout
        // plus an hour overflowed.
        assert!(parse_go_duration("18446744073709549568s").is_err());
        assert!(parse_go_duration("876000h").is_ok(), "a century is the bound");
    }
}
