//! Exclusion and ImageList matching: the one implementation shared by the
//! host's guards and every Rust policy.
//!
//! An entry is one of:
//! - `*`: every image;
//! - an image id or bare digest, `sha256:<hex>` (or the 64 hex digits alone);
//! - a tag, full or short: `alpine:3.7.3` is `docker.io/library/alpine:3.7.3`,
//!   and `alpine` is `docker.io/library/alpine:latest`;
//! - `repo@sha256:<hex>`: that repo digest;
//! - `prefix/*`: every image whose repository lies under `prefix/`;
//! - `repo:*`: every tag of exactly `repo`. Unlike Eraser,
//!   `docker.io/library/alpine:*` does not match `docker.io/library/alpine-foo`.

use std::borrow::Cow;
use std::fmt;

use crate::reference::{
    self, Reference, ReferenceError, is_bare_hex_id, is_digest, normalize_prefix, normalize_repository,
};

/// An entry that cannot be used for matching.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("empty pattern")]
    Empty,
    #[error("pattern {0:?}: a wildcard is only allowed as `*`, `prefix/*` or `repo:*`")]
    Wildcard(String),
    #[error("pattern {pattern:?}: {source}")]
    Reference {
        pattern: String,
        #[source]
        source: ReferenceError,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    All,
    /// Image id or bare manifest digest.
    Digest(String),
    RepoDigest {
        repository: String,
        digest: String,
    },
    /// Full `repository:tag`.
    Tag(String),
    /// Repository prefix without the trailing `/`.
    Prefix(String),
    /// Any tag or digest of exactly this repository.
    AnyTag(String),
}

/// One parsed entry, remembering the text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    kind: Kind,
}

impl Pattern {
    pub fn parse(entry: &str) -> Result<Self, PatternError> {
        let text = entry.trim();
        let kind = parse_kind(text)?;
        Ok(Self {
            source: text.to_owned(),
            kind,
        })
    }

    /// The entry as written, e.g. `docker.io/library/*`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True for `*`, which in an ImageList means prune.
    pub fn is_all(&self) -> bool {
        self.kind == Kind::All
    }

    pub fn matches(&self, image: &ImageNames<'_>) -> bool {
        match &self.kind {
            Kind::All => true,
            Kind::Digest(d) => image.id == d || image.digests.iter().any(|(_, digest)| digest == d),
            Kind::RepoDigest { repository, digest } => image
                .digests
                .iter()
                .any(|(repo, d)| d == digest && repo.as_deref() == Some(repository.as_str())),
            Kind::Tag(full) => image.tags().any(|t| t == full),
            Kind::Prefix(prefix) => image.repositories().any(|repo| under(repo, prefix)),
            Kind::AnyTag(repository) => image.repositories().any(|repo| repo == repository),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn under(repo: &str, prefix: &str) -> bool {
    repo.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

fn parse_kind(text: &str) -> Result<Kind, PatternError> {
    let wrap = |source: ReferenceError| PatternError::Reference {
        pattern: text.to_owned(),
        source,
    };
    if text.is_empty() {
        return Err(PatternError::Empty);
    }
    if text == "*" {
        return Ok(Kind::All);
    }
    if let Some(prefix) = text.strip_suffix("/*") {
        if prefix.contains('*') {
            return Err(PatternError::Wildcard(text.to_owned()));
        }
        return normalize_prefix(prefix).map(Kind::Prefix).map_err(wrap);
    }
    if let Some(repo) = text.strip_suffix(":*") {
        if repo.contains('*') {
            return Err(PatternError::Wildcard(text.to_owned()));
        }
        return normalize_repository(repo).map(Kind::AnyTag).map_err(wrap);
    }
    if text.contains('*') {
        return Err(PatternError::Wildcard(text.to_owned()));
    }
    if is_digest(text) {
        return Ok(Kind::Digest(text.to_owned()));
    }
    if is_bare_hex_id(text) {
        return Ok(Kind::Digest(format!("sha256:{text}")));
    }
    let r = Reference::parse(text).map_err(wrap)?;
    Ok(match r.digest() {
        Some(digest) => Kind::RepoDigest {
            repository: r.repository(),
            digest: digest.to_owned(),
        },
        None => Kind::Tag(r.to_string()),
    })
}

/// An image's names, normalised once so that many patterns can be matched
/// against them cheaply.
#[derive(Debug, Clone)]
pub struct ImageNames<'a> {
    id: &'a str,
    /// Normalised `repository:tag` (or the raw string when it does not
    /// parse), with the length of its repository part.
    tags: Vec<(Cow<'a, str>, usize)>,
    /// (normalised repository, digest) for each repo digest; a bare digest
    /// has no repository.
    digests: Vec<(Option<Cow<'a, str>>, &'a str)>,
}

impl<'a> ImageNames<'a> {
    pub fn new<S: AsRef<str>>(id: &'a str, tags: &'a [S], digests: &'a [S]) -> Self {
        let tags = tags
            .iter()
            .map(|t| {
                let t = t.as_ref();
                let full = reference::normalize_for_matching(t);
                let repo_len = repository_len(&full);
                (full, repo_len)
            })
            .collect();
        let digests = digests.iter().map(|d| split_repo_digest(d.as_ref())).collect();
        Self { id, tags, digests }
    }

    pub fn id(&self) -> &str {
        self.id
    }

    fn tags(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().map(|(t, _)| t.as_ref())
    }

    /// Repositories named by tags and repo digests.
    fn repositories(&self) -> impl Iterator<Item = &str> {
        let from_tags = self.tags.iter().map(|(t, len)| &t[..*len]);
        let from_digests = self.digests.iter().filter_map(|(repo, _)| repo.as_deref());
        from_tags.chain(from_digests)
    }
}

/// Length of the repository in `repository:tag`: up to the last ':' that
/// is not part of a registry port.
fn repository_len(full: &str) -> usize {
    for (i, &b) in full.as_bytes().iter().enumerate().rev() {
        match b {
            b':' => return i,
            b'/' => break,
            _ => {}
        }
    }
    full.len()
}

fn split_repo_digest(d: &str) -> (Option<Cow<'_, str>>, &str) {
    match d.split_once('@') {
        Some((repo, digest)) => {
            let repo = reference::normalize_repository_for_matching(repo);
            (Some(repo), digest)
        }
        None => (None, d),
    }
}

/// A list of patterns, e.g. the merged exclusion lists or an ImageList.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternSet {
    patterns: Vec<Pattern>,
}

/// The first entry of a list that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {index}: {error}")]
pub struct PatternListError {
    pub index: usize,
    pub error: PatternError,
}

impl PatternSet {
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, PatternListError> {
        let patterns = entries
            .iter()
            .enumerate()
            .map(|(index, e)| Pattern::parse(e.as_ref()).map_err(|error| PatternListError { index, error }))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// The first pattern that matches the image.
    pub fn first_match(&self, image: &ImageNames<'_>) -> Option<&Pattern> {
        self.patterns.iter().find(|p| p.matches(image))
    }

    /// The first pattern other than `*` that matches the image.
    pub fn first_named_match(&self, image: &ImageNames<'_>) -> Option<&Pattern> {
        self.patterns.iter().find(|p| !p.is_all() && p.matches(image))
    }

    pub fn has_all(&self) -> bool {
        self.patterns.iter().any(Pattern::is_all)
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Pattern> {
        self.patterns.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const MANIFEST: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const OTHER: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    struct Img {
        tags: Vec<String>,
        digests: Vec<String>,
    }

    fn img(tags: &[&str], digests: &[&str]) -> Img {
        Img {
            tags: tags.iter().map(|s| s.to_string()).collect(),
            digests: digests.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn alpine() -> Img {
        img(
            &["docker.io/library/alpine:3.7.3", "docker.io/library/alpine:latest"],
            &[&format!("docker.io/library/alpine@{MANIFEST}")],
        )
    }

    fn check(pattern: &str, image: &Img) -> bool {
        let names = ImageNames::new(ID, &image.tags, &image.digests);
        Pattern::parse(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"))
            .matches(&names)
    }

    /// (pattern, image, expected match)
    #[test]
    fn matcher_table() {
        let a = alpine();
        let foo = img(&["docker.io/library/alpine-foo:1"], &[]);
        let short_tagged = img(&["alpine:3.7.3"], &[&format!("alpine@{MANIFEST}")]);
        let private = img(
            &["myreg:5000/team/app:1.2"],
            &[&format!("myreg:5000/team/app@{MANIFEST}")],
        );
        let local = img(&["localhost/test/pause:1"], &[]);
        let untagged = img(&[], &[&format!("docker.io/library/nginx@{MANIFEST}")]);
        let nothing = img(&[], &[]);
        let bare_digest = img(&[], &[MANIFEST]);
        let org = img(&["docker.io/bitnami/redis:7"], &[]);
        let manifest_ref = format!("alpine@{MANIFEST}");
        let full_manifest_ref = format!("docker.io/library/alpine@{MANIFEST}");
        let tag_and_digest = format!("alpine:3.7.3@{MANIFEST}");
        let other_ref = format!("alpine@{OTHER}");
        let wrong_repo_digest = format!("nginx@{MANIFEST}");
        let bare_hex = ID.trim_start_matches("sha256:").to_owned();
        let private_digest = format!("myreg:5000/team/app@{MANIFEST}");

        let table: Vec<(&str, &Img, bool)> = vec![
            // exact id and digests
            (ID, &a, true),
            (ID, &nothing, true),
            (OTHER, &a, false),
            (MANIFEST, &a, true),
            (MANIFEST, &bare_digest, true),
            (MANIFEST, &nothing, false),
            (&bare_hex, &nothing, true),
            // tags, full and short
            ("docker.io/library/alpine:3.7.3", &a, true),
            ("alpine:3.7.3", &a, true),
            ("library/alpine:3.7.3", &a, true),
            ("index.docker.io/library/alpine:3.7.3", &a, true),
            ("alpine", &a, true),
            ("alpine:3.7", &a, false),
            ("alpine:3.7.3", &foo, false),
            ("docker.io/library/alpine:3.7.3", &short_tagged, true),
            ("alpine:3.7.3", &short_tagged, true),
            ("alpine", &short_tagged, false),
            ("myreg:5000/team/app:1.2", &private, true),
            ("team/app:1.2", &private, false),
            ("localhost/test/pause:1", &local, true),
            ("test/pause:1", &local, false),
            // repo@digest
            (&manifest_ref, &a, true),
            (&full_manifest_ref, &a, true),
            (&tag_and_digest, &a, true),
            (&manifest_ref, &short_tagged, true),
            (&other_ref, &a, false),
            (&wrong_repo_digest, &a, false),
            (&private_digest, &private, true),
            (&manifest_ref, &bare_digest, false),
            // prefix/*
            ("docker.io/library/*", &a, true),
            ("docker.io/library/*", &foo, true),
            ("library/*", &a, true),
            ("docker.io/*", &a, true),
            ("docker.io/*", &private, false),
            ("docker.io/library/*", &org, false),
            ("bitnami/*", &org, true),
            ("docker.io/lib/*", &a, false),
            ("myreg:5000/*", &private, true),
            ("myreg:5000/team/*", &private, true),
            ("myreg/*", &private, false),
            ("localhost/*", &local, true),
            ("docker.io/library/*", &untagged, true),
            ("docker.io/library/*", &nothing, false),
            // repo:*
            ("docker.io/library/alpine:*", &a, true),
            ("alpine:*", &a, true),
            ("docker.io/library/alpine:*", &foo, false),
            ("alpine:*", &foo, false),
            ("alpine-foo:*", &foo, true),
            ("nginx:*", &untagged, true),
            ("myreg:5000/team/app:*", &private, true),
            ("myreg:5000/team:*", &private, false),
            ("alpine:*", &short_tagged, true),
            // everything
            ("*", &a, true),
            ("*", &nothing, true),
        ];
        assert!(table.len() >= 40);
        for (pattern, image, want) in table {
            assert_eq!(
                check(pattern, image),
                want,
                "pattern {pattern:?} against {:?}",
                image.tags
            );
        }
    }

    #[test]
    fn bad_patterns_are_rejected_with_the_entry() {
        for bad in [
            "",
            "  ",
            "alp*",
            "docker.io/*/x",
            "*/*",
            "a**:*",
            "Alpine:*",
            "alpine:bad tag",
            "x@sha256:12",
        ] {
            let err = Pattern::parse(bad).expect_err(bad);
            if !bad.trim().is_empty() {
                assert!(err.to_string().contains(bad.trim()), "{err} should name {bad:?}");
            }
        }
    }

    #[test]
    fn sets_report_the_first_match_and_the_bad_index() {
        let a = alpine();
        let names = ImageNames::new(ID, &a.tags, &a.digests);
        let set = PatternSet::parse(&["nginx:*", "docker.io/library/*", "alpine:*"]).unwrap();
        assert_eq!(set.first_match(&names).unwrap().source(), "docker.io/library/*");
        let err = PatternSet::parse(&["ok", "bad*"]).unwrap_err();
        assert_eq!(err.index, 1);
        let prune = PatternSet::parse(&["*", "alpine:3.7.3"]).unwrap();
        assert!(prune.has_all());
        assert_eq!(prune.first_named_match(&names).unwrap().source(), "alpine:3.7.3");
    }

    #[test]
    fn whitespace_is_trimmed() {
        let p = Pattern::parse("  alpine:3.7.3 ").unwrap();
        assert_eq!(p.source(), "alpine:3.7.3");
    }
}
