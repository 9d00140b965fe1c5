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

/// A reference split into borrowed parts, validated but not yet normalised.
#[derive(Debug, Clone, Copy)]
struct Parts<'a> {
    /// The registry as written; `None` when the name has none.
    domain: Option<&'a str>,
    path: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

impl<'a> Parts<'a> {
    fn split(input: &'a str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        // One pass finds the separators; names are short but numerous.
        let bytes = input.as_bytes();
        let (mut at, mut last_colon, mut last_slash) = (None, None, None);
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'@' => {
                    at = Some(i);
                    break;
                }
                b':' => last_colon = Some(i),
                b'/' => last_slash = Some(i),
                _ => {}
            }
        }
        let (rest, digest) = match at {
            Some(i) => {
                let digest = &input[i + 1..];
                parse_digest(digest)?;
                (&input[..i], Some(digest))
            }
            None => (input, None),
        };
        // A tag follows the last ':' unless that ':' belongs to a registry
        // port, i.e. a '/' comes after it.
        let (name, tag) = match last_colon {
            Some(i) if last_slash.is_none_or(|s| s < i) => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }
        let (domain, path) = split_name(name)?;
        Ok(Self {
            domain,
            path,
            tag,
            digest,
        })
    }

    fn domain(&self) -> &'a str {
        self.domain.map_or(DEFAULT_DOMAIN, canonical_domain)
    }

    /// Docker Hub's official images live under `library/`.
    fn needs_library(&self) -> bool {
        self.domain() == DEFAULT_DOMAIN && !self.path.contains('/')
    }

    /// Whether the repository name is written in full already.
    fn name_is_canonical(&self) -> bool {
        matches!(self.domain, Some(d) if d == canonical_domain(d)) && !self.needs_library()
    }

    fn write_repository(&self, out: &mut String) {
        out.push_str(self.domain());
        out.push('/');
        if self.needs_library() {
            out.push_str(OFFICIAL_REPO_PREFIX);
        }
        out.push_str(self.path);
    }
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
        let parts = Parts::split(input)?;
        let mut repository = String::with_capacity(input.len() + 16);
        parts.write_repository(&mut repository);
        let domain_len = parts.domain().len();
        Ok(Self {
            path: repository[domain_len + 1..].to_owned(),
            domain: {
                repository.truncate(domain_len);
                repository
            },
            tag: parts.tag.map(str::to_owned),
            digest: parts.digest.map(str::to_owned),
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

/// Normalises a reference to its full form (`latest` when it names neither
/// tag nor digest), borrowing when it is already full. CRI reports names in
/// full, so on the hot path this only validates.
pub fn normalize(input: &str) -> Result<Cow<'_, str>, ReferenceError> {
    let parts = Parts::split(input)?;
    let has_version = parts.tag.is_some() || parts.digest.is_some();
    if parts.name_is_canonical() && has_version {
        return Ok(Cow::Borrowed(input));
    }
    let mut out = String::with_capacity(input.len() + 24);
    parts.write_repository(&mut out);
    match (parts.tag, parts.digest) {
        (None, None) => {
            out.push(':');
            out.push_str(DEFAULT_TAG);
        }
        (tag, digest) => {
            if let Some(tag) = tag {
                out.push(':');
                out.push_str(tag);
            }
            if let Some(digest) = digest {
                out.push('@');
                out.push_str(digest);
            }
        }
    }
    Ok(Cow::Owned(out))
}

/// Whether a name looks fully qualified: an explicit registry other than
/// `index.docker.io`, and not a Docker Hub official image missing
/// `library/`. Looks only, without validating: a fast path for names the
/// runtime reports.
fn looks_canonical_name(name: &str) -> bool {
    let Some(slash) = name.bytes().position(|b| b == b'/') else {
        return false;
    };
    let first = &name[..slash];
    if !is_domain(first) || first == LEGACY_DEFAULT_DOMAIN {
        return false;
    }
    first != DEFAULT_DOMAIN || name[slash + 1..].contains('/')
}

/// Normalises a name for matching and never fails: names that already
/// look fully qualified are borrowed without validation (runtimes report
/// them that way), others are normalised, and strings that are not
/// references at all are kept as they are.
pub fn normalize_for_matching(input: &str) -> Cow<'_, str> {
    let name_end = input.bytes().position(|b| b == b'@').unwrap_or(input.len());
    let name = input.get(..name_end).unwrap_or(input);
    let has_tag = name
        .rfind([':', '/'])
        .is_some_and(|i| name.as_bytes().get(i) == Some(&b':'));
    let versioned = has_tag || name_end < input.len();
    let name_only = if has_tag {
        name.rsplit_once(':').map_or(name, |(repo, _)| repo)
    } else {
        name
    };
    if versioned && looks_canonical_name(name_only) {
        return Cow::Borrowed(input);
    }
    normalize(input).unwrap_or(Cow::Borrowed(input))
}

/// Like [`normalize_for_matching`], for a repository without tag or digest.
pub fn normalize_repository_for_matching(name: &str) -> Cow<'_, str> {
    if looks_canonical_name(name) {
        return Cow::Borrowed(name);
    }
    normalize_repository_cow(name).unwrap_or(Cow::Borrowed(name))
}

/// Normalises a repository name without tag or digest, e.g. `alpine` to
/// `docker.io/library/alpine`, borrowing when it is already full.
pub fn normalize_repository_cow(name: &str) -> Result<Cow<'_, str>, ReferenceError> {
    if name.is_empty() {
        return Err(ReferenceError::Empty);
    }
    let (domain, path) = split_name(name)?;
    let parts = Parts {
        domain,
        path,
        tag: None,
        digest: None,
    };
    if parts.name_is_canonical() {
        return Ok(Cow::Borrowed(name));
    }
    let mut out = String::with_capacity(name.len() + 24);
    parts.write_repository(&mut out);
    Ok(Cow::Owned(out))
}

/// Normalises a repository name without tag or digest, e.g. `alpine` to
/// `docker.io/library/alpine`.
pub fn normalize_repository(name: &str) -> Result<String, ReferenceError> {
    normalize_repository_cow(name).map(Cow::into_owned)
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
    let full = normalize_repository(&format!("{prefix}/x"))?;
    Ok(full.strip_suffix("/x").unwrap_or(&full).to_owned())
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
    component == "localhost"
        || component
            .bytes()
            .any(|b| b == b'.' || b == b':' || b.is_ascii_uppercase())
}

fn canonical_domain(domain: &str) -> &str {
    if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    }
}

/// Splits a name into the registry as written (if any) and the path, and
/// validates both.
fn split_name(name: &str) -> Result<(Option<&str>, &str), ReferenceError> {
    let (domain, path) = match name.bytes().position(|b| b == b'/') {
        Some(i) if is_domain(&name[..i]) => {
            validate_domain(&name[..i])?;
            (Some(&name[..i]), &name[i + 1..])
        }
        _ => (None, name),
    };
    validate_path(path, name)?;
    Ok((domain, path))
}

/// `host[:port]`, where host is dot-separated labels of letters, digits and
/// inner hyphens.
fn validate_domain(domain: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::InvalidName(domain.to_owned());
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host.as_bytes(), Some(port.as_bytes())),
        None => (domain.as_bytes(), None),
    };
    if let Some(port) = port
        && (port.is_empty() || !port.iter().all(u8::is_ascii_digit))
    {
        return Err(bad());
    }
    let mut label_len = 0;
    let mut prev = b'.';
    for &b in host {
        match b {
            b'.' if label_len > 0 && prev != b'-' => label_len = 0,
            b'-' if label_len > 0 => label_len += 1,
            _ if b.is_ascii_alphanumeric() => label_len += 1,
            _ => return Err(bad()),
        }
        prev = b;
    }
    if label_len == 0 || prev == b'-' {
        return Err(bad());
    }
    Ok(())
}

fn validate_path(path: &str, whole: &str) -> Result<(), ReferenceError> {
    if !path.is_empty() && path.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(ReferenceError::InvalidName(whole.to_owned()))
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn component_ok(c: &str) -> bool {
    let alnum = |x: char| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !c.starts_with(alnum) || !c.ends_with(alnum) {
        return false;
    }
    // Between runs of [a-z0-9], each separator run must be one of the few
    // allowed ones.
    c.split(alnum)
        .filter(|sep| !sep.is_empty())
        .all(|sep| sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-'))
}

fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    if b.len() <= 128 && b.first().is_some_and(|&x| word(x)) && b.iter().all(|&x| word(x) || x == b'.' || x == b'-') {
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
        assert!(matches!(
            normalize("index.docker.io/library/alpine:3").unwrap(),
            Cow::Owned(_)
        ));
        assert!(matches!(normalize("docker.io/alpine:3").unwrap(), Cow::Owned(_)));
        assert!(matches!(
            normalize_repository_cow("ghcr.io/org/app").unwrap(),
            Cow::Borrowed(_)
        ));
        assert!(matches!(normalize_repository_cow("org/app").unwrap(), Cow::Owned(_)));
    }

    #[test]
    fn separators_and_ports_follow_the_distribution_grammar() {
        for good in [
            "a__b/c",
            "a---b",
            "a.b_c",
            "reg.io:5000/app",
            "localhost:1/x",
            "a1/b2:t_1.0-x",
        ] {
            assert!(Reference::parse(good).is_ok(), "{good:?} should parse");
        }
        for bad in [
            "a___b",
            "a.-b",
            "a_",
            "_a",
            "reg.io:/app",
            "reg.io:50a0/app",
            "reg-.io/app",
            "a/b:-t",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
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
    fn matching_normalisation_borrows_full_names_and_never_fails() {
        for full in [
            "docker.io/library/alpine:3",
            "myreg:5000/team/app:1",
            "localhost/test/pause:1",
            "ghcr.io/org/app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(matches!(normalize_for_matching(full), Cow::Borrowed(_)), "{full}");
        }
        assert_eq!(normalize_for_matching("alpine:3"), "docker.io/library/alpine:3");
        assert_eq!(
            normalize_for_matching("docker.io/alpine:3"),
            "docker.io/library/alpine:3"
        );
        assert_eq!(
            normalize_for_matching("index.docker.io/library/alpine:3"),
            "docker.io/library/alpine:3"
        );
        assert_eq!(normalize_for_matching("myreg:5000/app"), "myreg:5000/app:latest");
        assert_eq!(normalize_for_matching("not a reference!"), "not a reference!");
        assert_eq!(normalize_repository_for_matching("alpine"), "docker.io/library/alpine");
        assert!(matches!(
            normalize_repository_for_matching("quay.io/org/x"),
            Cow::Borrowed(_)
        ));
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
