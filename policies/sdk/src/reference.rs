//! Image reference parsing and normalisation, following Docker's rules.
//!
//! `alpine` is `docker.io/library/alpine:latest`, `alpine:3.7.3` is
//! `docker.io/library/alpine:3.7.3`, and `myreg:5000/app:1` keeps its registry.
//! A first path component is a registry when it contains `.` or `:` or is
//! `localhost`.

use std::borrow::Cow;
use std::fmt;

/// The registry that short names belong to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("empty reference")]
    Empty,
    #[error(
        "invalid repository name {0:?}: use lowercase letters, digits and separators (. _ __ -), with components separated by /"
    )]
    InvalidName(String),
    #[error("invalid tag {0:?}: up to 128 letters, digits, _ . or -, not starting with . or -")]
    InvalidTag(String),
    #[error("invalid digest {0:?}: expected sha256: and 64 lowercase hex digits")]
    InvalidDigest(String),
}

/// A parsed, normalised image reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalises a reference. A reference with neither tag nor
    /// digest gets the tag `latest`.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let mut r = Self::parse_untagged(input)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_owned());
        }
        Ok(r)
    }

    /// Parses and normalises a reference, leaving the tag absent when the
    /// input has none.
    pub fn parse_untagged(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                parse_digest(digest)?;
                (rest, Some(digest.to_owned()))
            }
            None => (input, None),
        };
        // A tag follows the last ':' unless that ':' belongs to a registry port,
        // i.e. a '/' comes after it.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }
        let (domain, path) = split_name(name)?;
        Ok(Self {
            domain,
            path,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// Registry, e.g. `docker.io`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Repository path inside the registry, e.g. `library/alpine`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// `sha256:…`, when the reference names a digest.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `domain/path`, e.g. `docker.io/library/alpine`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Normalises a reference to its full form, borrowing when it already is.
/// Used on hot paths: CRI reports tags fully qualified, so this rarely allocates.
pub fn normalize(input: &str) -> Result<Cow<'_, str>, ReferenceError> {
    let r = Reference::parse(input)?;
    if is_already(input, &r) {
        Ok(Cow::Borrowed(input))
    } else {
        Ok(Cow::Owned(r.to_string()))
    }
}

fn is_already(input: &str, r: &Reference) -> bool {
    let head_len = r.domain.len() + 1 + r.path.len();
    input.len() >= head_len
        && input.starts_with(r.domain.as_str())
        && input.as_bytes()[r.domain.len()] == b'/'
        && input[r.domain.len() + 1..].starts_with(r.path.as_str())
        && {
            let mut rest = &input[head_len..];
            let tag_ok = match &r.tag {
                Some(tag) => match rest.strip_prefix(':').and_then(|s| s.strip_prefix(tag.as_str())) {
                    Some(after) => {
                        rest = after;
                        true
                    }
                    None => false,
                },
                None => true,
            };
            tag_ok
                && match &r.digest {
                    Some(d) => rest.strip_prefix('@') == Some(d.as_str()),
                    None => rest.is_empty(),
                }
        }
}

/// Normalises a repository name without tag or digest, e.g. `alpine` to
/// `docker.io/library/alpine`.
pub fn normalize_repository(name: &str) -> Result<String, ReferenceError> {
    if name.is_empty() {
        return Err(ReferenceError::Empty);
    }
    let (domain, path) = split_name(name)?;
    Ok(format!("{domain}/{path}"))
}

/// Normalises a repository prefix as written before `/*`: a bare registry
/// (`docker.io`, `myreg:5000`) stays a registry, anything else is a path that
/// gets the default registry, e.g. `library` to `docker.io/library`.
pub fn normalize_prefix(prefix: &str) -> Result<String, ReferenceError> {
    if prefix.is_empty() {
        return Err(ReferenceError::Empty);
    }
    if !prefix.contains('/') && is_domain(prefix) {
        validate_domain(prefix)?;
        return Ok(canonical_domain(prefix).to_owned());
    }
    // Normalise as if a component followed, so `library` becomes
    // `docker.io/library` and not `docker.io/library/library`.
    let (domain, path) = split_name(&format!("{prefix}/x"))?;
    let path = path.strip_suffix("/x").unwrap_or("");
    Ok(if path.is_empty() {
        domain
    } else {
        format!("{domain}/{path}")
    })
}

/// Checks a digest: `sha256:` + 64 lowercase hex, or `sha512:` + 128.
pub fn parse_digest(d: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::InvalidDigest(d.to_owned());
    let (algo, hex) = d.split_once(':').ok_or_else(bad)?;
    let want = match algo {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(bad()),
    };
    if hex.len() == want && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(bad())
    }
}

/// True for `sha256:<64 hex>` and the like: an image id or a bare digest.
pub fn is_digest(s: &str) -> bool {
    parse_digest(s).is_ok()
}

/// True for 64 lowercase hex digits, an image id written without `sha256:`.
pub fn is_bare_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_domain(component: &str) -> bool {
    component.contains(['.', ':']) || component == "localhost" || component.bytes().any(|b| b.is_ascii_uppercase())
}

fn canonical_domain(domain: &str) -> &str {
    if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    }
}

fn split_name(name: &str) -> Result<(String, String), ReferenceError> {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest)) if is_domain(first) => {
            validate_domain(first)?;
            (canonical_domain(first), rest)
        }
        _ => (DEFAULT_DOMAIN, name),
    };
    validate_path(path, name)?;
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{path}")
    } else {
        path.to_owned()
    };
    Ok((domain.to_owned(), path))
}

fn validate_domain(domain: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::InvalidName(domain.to_owned());
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(bad())
    }
}

fn validate_path(path: &str, whole: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::InvalidName(whole.to_owned());
    if path.is_empty() {
        return Err(bad());
    }
    for component in path.split('/') {
        if !component_ok(component) {
            return Err(bad());
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    if !b.is_empty() && b.len() <= 128 && word(b[0]) && b.iter().all(|&x| word(x) || x == b'.' || x == b'-') {
        Ok(())
    } else {
        Err(ReferenceError::InvalidTag(tag.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn normalisation_table() {
        let cases: &[(&str, &str)] = &[
            ("alpine", "docker.io/library/alpine:latest"),
            ("alpine:3.7.3", "docker.io/library/alpine:3.7.3"),
            ("library/alpine:3.7.3", "docker.io/library/alpine:3.7.3"),
            ("docker.io/alpine:1", "docker.io/library/alpine:1"),
            ("index.docker.io/library/alpine:1", "docker.io/library/alpine:1"),
            ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
            ("myreg:5000/app:1", "myreg:5000/app:1"),
            ("myreg:5000/app", "myreg:5000/app:latest"),
            ("localhost/test/pause:1", "localhost/test/pause:1"),
            ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
            ("ghcr.io/org/team/app:v1.2.3-rc.1", "ghcr.io/org/team/app:v1.2.3-rc.1"),
        ];
        for (input, want) in cases {
            assert_eq!(Reference::parse(input).unwrap().to_string(), *want, "{input}");
            assert_eq!(normalize(input).unwrap(), *want, "{input}");
        }
    }

    #[test]
    fn digests_keep_no_default_tag() {
        let r = Reference::parse(&format!("alpine@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/alpine@{D}"));
        assert_eq!(r.tag(), None);
        let r = Reference::parse(&format!("alpine:3@{D}")).unwrap();
        assert_eq!(r.tag(), Some("3"));
        assert_eq!(r.digest(), Some(D));
    }

    #[test]
    fn normalize_borrows_when_already_full() {
        assert!(matches!(
            normalize("docker.io/library/alpine:3").unwrap(),
            Cow::Borrowed(_)
        ));
        assert!(matches!(normalize("alpine:3").unwrap(), Cow::Owned(_)));
        assert!(matches!(normalize("docker.io/library/alpine").unwrap(), Cow::Owned(_)));
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Alpine",
            "alpine:",
            "alpine:.x",
            "alpine@sha256:xyz",
            "a//b",
            "-a",
            "a b",
            "myreg:port/app",
            "alpine:*",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(normalize_prefix("docker.io").unwrap(), "docker.io");
        assert_eq!(normalize_prefix("index.docker.io").unwrap(), "docker.io");
        assert_eq!(normalize_prefix("docker.io/library").unwrap(), "docker.io/library");
        assert_eq!(normalize_prefix("library").unwrap(), "docker.io/library");
        assert_eq!(normalize_prefix("myorg").unwrap(), "docker.io/myorg");
        assert_eq!(normalize_prefix("myreg:5000").unwrap(), "myreg:5000");
        assert_eq!(normalize_prefix("gcr.io/proj").unwrap(), "gcr.io/proj");
    }

    #[test]
    fn repositories() {
        assert_eq!(normalize_repository("alpine").unwrap(), "docker.io/library/alpine");
        assert_eq!(normalize_repository("myreg:5000/app").unwrap(), "myreg:5000/app");
        assert_eq!(normalize_repository("Upper.example/x").unwrap(), "Upper.example/x");
        assert!(normalize_repository("reg.example/UPPER").is_err());
    }
}
