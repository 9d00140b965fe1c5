//! A strict reader for JSON policy settings whose errors name the key.
//!
//! ```
//! use scour_policy_sdk::settings::Settings;
//! let mut s = Settings::parse(r#"{"maxAgeDays": 30}"#).unwrap();
//! let days = s.u64("maxAgeDays").unwrap().unwrap_or(90);
//! s.finish().unwrap(); // rejects keys nobody asked for
//! assert_eq!(days, 30);
//! ```

use serde_json::{Map, Value};

use crate::severity::Severity;

/// A settings problem, worded for the operator who wrote the settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn wrong(key: &str, want: &str, got: &Value) -> SettingsError {
    SettingsError(format!("`{key}`: expected {want}, got {}", type_name(got)))
}

/// Settings as a JSON object. Empty text means "all defaults".
#[derive(Debug, Clone, Default)]
pub struct Settings {
    map: Map<String, Value>,
    known: Vec<&'static str>,
}

impl Settings {
    pub fn parse(text: &str) -> Result<Self, SettingsError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(Self { map, known: Vec::new() }),
            Ok(Value::Null) => Ok(Self::default()),
            Ok(other) => Err(SettingsError(format!(
                "settings must be a JSON object, got {}",
                type_name(&other)
            ))),
            Err(e) => Err(SettingsError(format!("settings are not valid JSON: {e}"))),
        }
    }

    fn take(&mut self, key: &'static str) -> Option<Value> {
        self.known.push(key);
        self.map.remove(key).filter(|v| !v.is_null())
    }

    pub fn bool(&mut self, key: &'static str) -> Result<Option<bool>, SettingsError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(v) => Err(wrong(key, "true or false", &v)),
        }
    }

    pub fn u64(&mut self, key: &'static str) -> Result<Option<u64>, SettingsError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| wrong(key, "a whole number of at least 0", &v)),
        }
    }

    pub fn f64(&mut self, key: &'static str) -> Result<Option<f64>, SettingsError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| wrong(key, "a number", &v)),
        }
    }

    pub fn string(&mut self, key: &'static str) -> Result<Option<String>, SettingsError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(wrong(key, "a string", &v)),
        }
    }

    pub fn string_list(&mut self, key: &'static str) -> Result<Option<Vec<String>>, SettingsError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    other => Err(wrong(&format!("{key}[{i}]"), "a string", &other)),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(v) => Err(wrong(key, "a list of strings", &v)),
        }
    }

    pub fn severities(&mut self, key: &'static str) -> Result<Option<Vec<Severity>>, SettingsError> {
        let Some(items) = self.string_list(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .enumerate()
            .map(|(i, s)| s.parse().map_err(|e| SettingsError(format!("`{key}[{i}]`: {e}"))))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// Fails on any key that no getter asked for.
    pub fn finish(self) -> Result<(), SettingsError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(unknown) => Err(SettingsError(format!(
                "unknown setting `{unknown}`; known settings: {}",
                self.known.join(", ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_values_and_defaults() {
        let mut s = Settings::parse(r#"{"a": true, "n": 3, "l": ["x"], "sev": ["high"], "z": null}"#).unwrap();
        assert_eq!(s.bool("a").unwrap(), Some(true));
        assert_eq!(s.u64("n").unwrap(), Some(3));
        assert_eq!(s.string_list("l").unwrap(), Some(vec!["x".to_string()]));
        assert_eq!(s.severities("sev").unwrap(), Some(vec![Severity::High]));
        assert_eq!(s.bool("z").unwrap(), None, "null means default");
        assert_eq!(s.bool("missing").unwrap(), None);
        s.finish().unwrap();
        assert!(Settings::parse("").unwrap().finish().is_ok());
        assert!(Settings::parse("  null ").unwrap().finish().is_ok());
    }

    #[test]
    fn errors_name_the_key() {
        let err = |text: &str, f: fn(&mut Settings) -> Result<(), SettingsError>| {
            let mut s = Settings::parse(text).unwrap();
            f(&mut s).and_then(|_| s.finish()).unwrap_err().0
        };
        assert!(err(r#"{"a":"yes"}"#, |s| s.bool("a").map(drop)).contains("`a`"));
        assert!(err(r#"{"n":-1}"#, |s| s.u64("n").map(drop)).contains("`n`"));
        assert!(err(r#"{"l":["x",1]}"#, |s| s.string_list("l").map(drop)).contains("`l[1]`"));
        assert!(err(r#"{"sev":["bad"]}"#, |s| s.severities("sev").map(drop)).contains("`sev[0]`"));
        let unknown = err(r#"{"a":true,"typo":1}"#, |s| s.bool("a").map(drop));
        assert!(unknown.contains("`typo`") && unknown.contains("a"), "{unknown}");
        assert!(Settings::parse("[1]").unwrap_err().0.contains("JSON object"));
        assert!(Settings::parse("{").unwrap_err().0.contains("not valid JSON"));
    }
}
