//! Where policy bytes come from: a file, an OCI registry, or the default
//! policy built into the binary.

use std::borrow::Cow;
use std::path::PathBuf;

use super::oci::{self, PolicyRef, RegistryOptions};
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
    Registry(PolicyRef),
}

impl PolicySource {
    /// `--policy PATH` or `--policy registry://…@sha256:…` when given,
    /// else the embedded default.
    pub fn from_option(path: Option<PathBuf>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(PolicySource::Embedded);
        };
        match path.to_str() {
            Some(text) if text.starts_with(oci::SCHEME) => PolicyRef::parse(text)
                .map(PolicySource::Registry)
                .map_err(Error::Reference),
            _ => Ok(PolicySource::File(path)),
        }
    }

    /// How the source is named in logs and reports.
    pub fn origin(&self) -> String {
        match self {
            PolicySource::Embedded => "embedded:scour-default".to_owned(),
            PolicySource::File(p) => p.display().to_string(),
            PolicySource::Registry(r) => r.to_string(),
        }
    }

    /// The component's bytes; a registry policy is pulled (or read from
    /// the pull cache) and checked against its pin.
    pub fn read(&self, registry: &RegistryOptions) -> Result<Cow<'static, [u8]>> {
        match self {
            PolicySource::Registry(r) => oci::pull_blocking(r, registry).map(|p| Cow::Owned(p.component)),
            PolicySource::Embedded => Ok(Cow::Borrowed(embedded_default_policy())),
            PolicySource::File(p) => std::fs::read(p).map(Cow::Owned).map_err(|error| Error::Read {
                path: p.display().to_string(),
                error,
            }),
        }
    }
}

/// The digest a policy must have: `sha256:<hex>` (or the bare hex), or
/// `@FILE` holding it, re-read at every load so that a pin shipped beside
/// the policy in one ConfigMap changes together with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestPin {
    Fixed(String),
    File(PathBuf),
}

impl DigestPin {
    pub fn parse(value: &str) -> std::result::Result<Self, String> {
        match value.strip_prefix('@') {
            Some(path) if !path.is_empty() => Ok(DigestPin::File(PathBuf::from(path))),
            Some(_) => Err("--policy-sha256 @FILE needs a file name".into()),
            None => normalize_digest(value).map(DigestPin::Fixed),
        }
    }

    /// The digest the policy must have now.
    pub fn expected(&self) -> Result<String> {
        match self {
            DigestPin::Fixed(d) => Ok(d.clone()),
            DigestPin::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| Error::Read {
                    path: path.display().to_string(),
                    error,
                })?;
                normalize_digest(&text).map_err(|message| Error::PinMismatch {
                    expected: format!("a digest in {}", path.display()),
                    actual: message,
                })
            }
        }
    }

    /// Fails unless `digest` is the pinned one.
    pub fn check(&self, digest: &str) -> Result<()> {
        verify_digest(&self.expected()?, digest)
    }
}

/// Fails unless `actual` is `expected`.
pub(crate) fn verify_digest(expected: &str, actual: &str) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::PinMismatch {
            expected: expected.to_owned(),
            actual: actual.to_owned(),
        })
    }
}

fn normalize_digest(value: &str) -> std::result::Result<String, String> {
    let hex = value.trim();
    let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
    } else {
        Err(format!("{:?} is not a sha256 digest", value.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:1976f5dc680683e8abec2dd049c4baa6400d7596043a7efc4b625fd838e97d5f";

    #[test]
    fn pins_accept_digests_and_files() {
        assert_eq!(DigestPin::parse(&D[7..]).unwrap(), DigestPin::Fixed(D.into()));
        assert_eq!(
            DigestPin::parse(&D.to_uppercase().replace("SHA256", "sha256")).unwrap(),
            DigestPin::Fixed(D.into())
        );
        assert!(DigestPin::parse("sha256:abc").is_err());
        assert!(DigestPin::parse("@").is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.sha256");
        std::fs::write(&file, format!("{}\n", &D[7..])).unwrap();
        let pin = DigestPin::parse(&format!("@{}", file.display())).unwrap();
        pin.check(D).unwrap();
        let err = pin.check("sha256:00").unwrap_err();
        assert_eq!(err.kind(), "pin-mismatch");
        std::fs::write(&file, "garbage").unwrap();
        assert!(pin.check(D).is_err());
    }
}
