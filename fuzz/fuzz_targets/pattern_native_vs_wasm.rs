//! Differential: a (pattern, image) pair gets the same answer from the SDK
//! matcher called natively and from a Wasm policy run through scour's policy
//! host (`LoadedPolicy`, fuel-limited, a fresh store per call).
//!
//! Input: UTF-8; line 1 is the pattern, line 2 the image's tag, line 3 (if
//! any) a repo digest. The image is unused, unpinned and not scanned, so a
//! policy's verdict depends on the pattern alone:
//! - default policy, manual mode, ImageList `[pattern]`: removed
//!   (`imagelist: <pattern>`, or `prune` for `*`) iff the pattern matches,
//!   else kept as `not-listed`;
//! - default policy, automatic mode with `scanDisabled`, user exclusions
//!   `[pattern]`: kept as `excluded: <pattern>` iff it matches, else removed
//!   as `unused`;
//! - in both, a pattern the SDK rejects makes the call fail as bad input.
//!
//! The host matches ImageList and exclusion entries itself (with the SDK)
//! and hands the guest the result, so the two default-policy checks cover the
//! host's `matches`, the ABI both ways and the guest's verdict. Matching
//! *inside* the guest (the SDK compiled to wasm32) is checked with the
//! rust-retention example, whose `protect` setting it matches itself:
//! manual mode, ImageList `[*]`, `protect: [pattern]`: kept as
//! `protected: <pattern>` iff it matches, else removed as `prune`; a pattern
//! the SDK rejects makes the settings invalid. Its component is read from
//! `$SCOUR_FUZZ_RETENTION_WASM`, default
//! `target/guests/wasm32-wasip2/release/rust_retention.wasm` (built by
//! `just fuzz`); without it only the default policy is checked.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use scour::policy::{Error, Limits, LoadedPolicy, PolicyEngine, embedded_default_policy};
use scour_policy_sdk::{Action, Context, Image, ImageNames, Mode, Pattern};

const ID: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// Reasons longer than the host's cut (512 bytes) would not compare.
const MAX_PATTERN: usize = 300;

struct Policies {
    manual: LoadedPolicy,
    unused: LoadedPolicy,
    retention: Option<LoadedPolicy>,
}

fn policies() -> &'static Policies {
    static P: OnceLock<Policies> = OnceLock::new();
    P.get_or_init(|| {
        let engine = PolicyEngine::new(Limits::deterministic(Limits::DEFAULT_FUEL), None).expect("engine");
        let manual = LoadedPolicy::load(&engine, embedded_default_policy(), "default", "").expect("default policy");
        let unused = manual.with_settings(r#"{"scanDisabled":true}"#).expect("scanDisabled");
        let path = std::env::var("SCOUR_FUZZ_RETENTION_WASM").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/guests/wasm32-wasip2/release/rust_retention.wasm"
            )
            .to_owned()
        });
        let retention = match std::fs::read(&path) {
            Ok(bytes) => Some(LoadedPolicy::load(&engine, &bytes, "rust-retention", "").expect("rust-retention")),
            Err(e) if std::env::var_os("SCOUR_FUZZ_RETENTION_WASM").is_some() => panic!("reading {path}: {e}"),
            Err(e) => {
                eprintln!("pattern_native_vs_wasm: no rust-retention component at {path} ({e}); default policy only");
                None
            }
        };
        Policies {
            manual,
            unused,
            retention,
        }
    })
}

fn verdict(policy: &LoadedPolicy, ctx: &Context, image: &Image) -> Result<(Action, String), Error> {
    let set = policy.decide(ctx, std::slice::from_ref(image))?;
    let [d] = <[_; 1]>::try_from(set.decisions).expect("one decision for one image");
    assert_eq!(d.id, image.id);
    Ok((d.action, d.reason))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let pattern = lines.next().unwrap_or_default();
    if pattern.len() > MAX_PATTERN {
        return;
    }
    let image = Image {
        id: ID.to_owned(),
        tags: lines.next().into_iter().map(str::to_owned).collect(),
        digests: lines.next().into_iter().map(str::to_owned).collect(),
        size: 1 << 20,
        first_seen: 1,
        ..Image::default()
    };
    let native = Pattern::parse(pattern).map(|p| {
        let hit = p.matches(&ImageNames::new(&image.id, &image.tags, &image.digests));
        (p, hit)
    });
    let p = policies();
    let base = Context {
        node: "fuzz".into(),
        now: 2,
        ..Context::default()
    };

    // The default policy, the pattern as the ImageList.
    let ctx = Context {
        mode: Mode::Manual,
        imagelist: vec![pattern.to_owned()],
        ..base.clone()
    };
    let got = verdict(&p.manual, &ctx, &image);
    match (&native, got) {
        (Err(_), Err(Error::Input(_))) => {}
        (Ok((p, true)), Ok(v)) if p.is_all() => assert_eq!(v, (Action::Remove, "prune".into())),
        (Ok((p, true)), Ok(v)) => assert_eq!(v, (Action::Remove, format!("imagelist: {}", p.source()))),
        (Ok((_, false)), Ok(v)) => assert_eq!(v, (Action::Keep, "not-listed".into())),
        (native, got) => panic!("imagelist {pattern:?}, image {image:?}: native {native:?}, wasm {got:?}"),
    }

    // The default policy, the pattern as a user exclusion.
    let ctx = Context {
        exclusions: vec![pattern.to_owned()],
        ..base.clone()
    };
    let got = verdict(&p.unused, &ctx, &image);
    match (&native, got) {
        (Err(_), Err(Error::Input(_))) => {}
        (Ok((p, true)), Ok(v)) => assert_eq!(v, (Action::Keep, format!("excluded: {}", p.source()))),
        (Ok((_, false)), Ok(v)) => assert_eq!(v, (Action::Remove, "unused".into())),
        (native, got) => panic!("exclusion {pattern:?}, image {image:?}: native {native:?}, wasm {got:?}"),
    }

    // rust-retention: the guest matches `protect` itself.
    if let Some(retention) = &p.retention {
        let settings = serde_json::json!({ "protect": [pattern] }).to_string();
        let got = retention.with_settings(&settings).and_then(|r| {
            let ctx = Context {
                mode: Mode::Manual,
                imagelist: vec!["*".into()],
                ..base.clone()
            };
            verdict(&r, &ctx, &image)
        });
        match (&native, got) {
            (Err(_), Err(Error::SettingsRejected(m))) if m.contains("`protect`") => {}
            (Ok((p, true)), Ok(v)) => assert_eq!(v, (Action::Keep, format!("protected: {}", p.source()))),
            (Ok((_, false)), Ok(v)) => assert_eq!(v, (Action::Remove, "prune".into())),
            (native, got) => panic!("protect {pattern:?}, image {image:?}: native {native:?}, wasm {got:?}"),
        }
    }
});
