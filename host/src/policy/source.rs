//! Where policy bytes come from: a file, or the default policy built into
//! the binary.

use std::borrow::Cow;
use std::path::PathBuf;

use super::{Error, Result};

/// The default policy component, built from `policies/default` by the
/// host's build script.
pub fn embedded_default_policy() -> &'static [u8] {
    include_bytes!(concat!(env!("OUT_DIR"), "/default-policy.wasm"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    Embedded,
    File(PathBuf),
}

impl PolicySource {
    /// `--policy PATH` when given, else the embedded default.
    pub fn from_option(path: Option<PathBuf>) -> Self {
        path.map_or(PolicySource::Embedded, PolicySource::File)
    }

    /// How the source is named in logs and reports.
    pub fn origin(&self) -> String {
        match self {
            PolicySource::Embedded => "embedded:scour-default".to_owned(),
            PolicySource::File(p) => p.display().to_string(),
        }
    }

    pub fn read(&self) -> Result<Cow<'static, [u8]>> {
        match self {
            PolicySource::Embedded => Ok(Cow::Borrowed(embedded_default_policy())),
            PolicySource::File(p) => std::fs::read(p).map(Cow::Owned).map_err(|source| Error::Read {
                path: p.display().to_string(),
                source,
            }),
        }
    }
}
