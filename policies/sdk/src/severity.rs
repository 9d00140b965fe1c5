//! Vulnerability severities, ordered from `Unknown` to `Critical`.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// All severities, least severe first.
    pub const ALL: [Severity; 5] = [
        Severity::Unknown,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The upper-case name Trivy uses, e.g. `HIGH`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "UNKNOWN",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// A severity name that is none of UNKNOWN, LOW, MEDIUM, HIGH, CRITICAL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity {0:?}; expected one of UNKNOWN, LOW, MEDIUM, HIGH, CRITICAL")]
pub struct SeverityError(pub String);

impl FromStr for Severity {
    type Err = SeverityError;

    /// Case-insensitive; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Severity::ALL
            .into_iter()
            .find(|sev| sev.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| SeverityError(s.to_owned()))
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Severity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Severity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_case_and_orders() {
        assert_eq!("high".parse::<Severity>().unwrap(), Severity::High);
        assert_eq!(" CRITICAL ".parse::<Severity>().unwrap(), Severity::Critical);
        assert_eq!("Unknown".parse::<Severity>().unwrap(), Severity::Unknown);
        assert!(Severity::Critical > Severity::High && Severity::Low > Severity::Unknown);
        let err = "SEVERE".parse::<Severity>().unwrap_err();
        assert!(err.to_string().contains("\"SEVERE\""));
        assert!("".parse::<Severity>().is_err());
    }

    #[test]
    fn round_trips_through_json() {
        let s: Severity = serde_json::from_str("\"medium\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"MEDIUM\"");
        assert!(serde_json::from_str::<Severity>("\"bogus\"").is_err());
    }
}
