//! Image reference parsing and exclusion/ImageList pattern matching
//! (`policies/sdk`: `reference` and `pattern`).
//!
//! Input: UTF-8 lines. Every line is tried as a reference and as a pattern;
//! line 1 is matched, as a pattern, against an image named by the other lines
//! (as tags and repo digests). Besides "never panics", it checks that:
//! - a parsed reference prints to a reference that parses to itself;
//! - `normalize` agrees with `Reference::parse` and `normalize_for_matching`
//!   with `normalize` on every valid reference;
//! - a valid reference, as a pattern (and as its `repo:*`, `registry/*` and
//!   `repo@digest` forms), matches an image tagged with that reference.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scour_policy_sdk::reference::{self, Reference};
use scour_policy_sdk::{ImageNames, Pattern, PatternSet};

const ID: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn names_match(pattern: &str, tags: &[String], digests: &[String]) -> bool {
    let p = Pattern::parse(pattern).unwrap_or_else(|e| panic!("pattern {pattern:?} derived from a reference: {e}"));
    p.matches(&ImageNames::new(ID, tags, digests))
}

fn check_reference(s: &str) {
    let parsed = Reference::parse(s);
    let untagged = Reference::parse_untagged(s);
    assert_eq!(
        parsed.is_ok(),
        untagged.is_ok(),
        "parse and parse_untagged disagree on {s:?}"
    );
    let normalized = reference::normalize(s);
    match (&parsed, &normalized) {
        (Ok(r), Ok(n)) => assert_eq!(r.to_string(), n.as_ref(), "normalize({s:?})"),
        (Err(a), Err(b)) => assert_eq!(a, b, "errors for {s:?}"),
        _ => panic!("parse {parsed:?} and normalize {normalized:?} disagree on {s:?}"),
    }
    let Ok(r) = parsed else {
        // Not a reference: matching keeps it as it is, or normalises it.
        let _ = reference::normalize_for_matching(s);
        return;
    };
    let printed = r.to_string();
    assert_eq!(
        Reference::parse(&printed).as_ref(),
        Ok(&r),
        "{s:?} printed as {printed:?}"
    );
    assert_eq!(
        reference::normalize_for_matching(s).as_ref(),
        printed,
        "the fast path disagrees with normalize on {s:?}"
    );
    assert_eq!(r.repository(), format!("{}/{}", r.domain(), r.path()));
    assert_eq!(
        reference::normalize_repository(&r.repository()).as_deref(),
        Ok(r.repository().as_str())
    );

    // The reference as a pattern matches an image that carries it.
    let tagged = vec![s.to_owned()];
    let repo = r.repository();
    if !s.contains('*') && !reference::is_digest(s) && !reference::is_bare_hex_id(s.trim()) && s.trim() == s {
        match r.digest() {
            None => {
                assert!(
                    names_match(s, &tagged, &[]),
                    "{s:?} does not match an image tagged {s:?}"
                );
                assert!(
                    names_match(s, &[printed.clone()], &[]),
                    "{s:?} does not match {printed:?}"
                );
            }
            Some(d) => {
                let digests = vec![format!("{repo}@{d}")];
                assert!(names_match(s, &[], &digests), "{s:?} does not match {digests:?}");
                assert!(names_match(d, &[], &digests), "{d:?} does not match {digests:?}");
            }
        }
    }
    if r.digest().is_none() {
        assert!(names_match(&format!("{repo}:*"), &tagged, &[]), "{repo}:* vs {s:?}");
        assert!(
            names_match(&format!("{}/*", r.domain()), &tagged, &[]),
            "{}/* vs {s:?}",
            r.domain()
        );
        if let Some((first, _)) = r.path().split_once('/') {
            let prefix = format!("{}/{first}/*", r.domain());
            assert!(names_match(&prefix, &tagged, &[]), "{prefix} vs {s:?}");
        }
    }
}

fn check_pattern(s: &str) {
    let Ok(p) = Pattern::parse(s) else { return };
    assert_eq!(p.source(), s.trim());
    assert_eq!(p.to_string(), p.source());
    // Parsing what it printed gives the same pattern.
    assert_eq!(Pattern::parse(p.source()).as_ref(), Ok(&p));
    if p.is_all() {
        assert!(p.matches(&ImageNames::new("", &[] as &[&str], &[])));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines: Vec<&str> = text.split('\n').collect();
    for line in &lines {
        check_reference(line);
        check_pattern(line);
    }
    // Line 1 as a pattern against an image named by the rest: tags, and
    // entries with '@' as repo digests too.
    let rest = &lines[1.min(lines.len())..];
    let tags: Vec<&str> = rest.to_vec();
    let digests: Vec<&str> = rest.iter().copied().filter(|l| l.contains('@')).collect();
    let names = ImageNames::new(lines[0], &tags, &digests);
    if let Ok(p) = Pattern::parse(lines[0]) {
        let hit = p.matches(&names);
        let set = PatternSet::parse(&[lines[0]]).expect("a pattern that parses alone parses in a set");
        assert_eq!(set.first_match(&names).is_some(), hit);
        assert_eq!(set.first_named_match(&names).is_some(), hit && !p.is_all());
    }
});
