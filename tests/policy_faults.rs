//! Fault containment: hostile policies are stopped with a typed error within
//! their budget, give the caller no decisions to act on, and are refused by a
//! hot swap while the previous policy keeps serving.

use std::time::{Duration, Instant};

use scour::policy::{
    AnswerError, Call, Error, Limits, LoadedPolicy, PolicyEngine, PolicyHandle, embedded_default_policy,
};
use scour_policy_sdk::Action;
use scour_testkit::guests::hostile_guest;
use scour_testkit::nodes::small_node;

fn engine() -> PolicyEngine {
    PolicyEngine::new(Limits::production(), None).expect("engine")
}

/// Loads `name`, checks that select and decide both fail as `expected`
/// within the deadline plus 1 s, and that a hot swap to it is refused.
fn assert_contained(name: &str, expected: impl Fn(&Error) -> bool) {
    let engine = engine();
    let bytes = hostile_guest(name);
    let hostile = LoadedPolicy::load(&engine, &bytes, name, "").expect("hostile guests load and validate");
    let node = small_node();
    let limit = Limits::DEFAULT_DEADLINE + Duration::from_secs(1);

    let started = Instant::now();
    let err = hostile
        .decide(&node.context, &node.images)
        .expect_err("decide must fail, leaving nothing to remove");
    assert!(expected(&err), "{name}: unexpected decide error {err:?}");
    assert!(started.elapsed() < limit, "{name}: decide took {:?}", started.elapsed());

    let started = Instant::now();
    let err = hostile
        .select(&node.context, &node.images)
        .expect_err("select must fail");
    assert!(started.elapsed() < limit, "{name}: select took {:?}", started.elapsed());
    assert!(
        matches!(err.kind(), "timeout" | "out-of-memory" | "trap" | "invalid-answer"),
        "{name}: {err:?}"
    );

    assert_swap_refused(&engine, name, &bytes);
}

fn assert_swap_refused(engine: &PolicyEngine, name: &str, bytes: &[u8]) {
    let good = LoadedPolicy::load(engine, embedded_default_policy(), "default", "").expect("default policy");
    let good_digest = good.digest().to_owned();
    let handle = PolicyHandle::new(good);
    let started = Instant::now();
    let err = handle
        .reload(bytes, name, "", &[])
        .expect_err("the swap must be refused");
    assert!(
        started.elapsed() < 2 * Limits::DEFAULT_DEADLINE + Duration::from_secs(1),
        "{name}: refusing the swap took {:?}",
        started.elapsed()
    );
    assert_eq!(
        handle.current().digest(),
        good_digest,
        "{name} replaced the good policy"
    );
    let status = handle.status();
    assert_eq!((status.reloads, status.failed_reloads), (0, 1));
    assert_eq!(status.last_error.as_deref(), Some(err.to_string().as_str()));
    let node = small_node();
    let still = handle
        .current()
        .decide(&node.context, &node.images)
        .expect("the old policy still serves");
    assert_eq!(still.policy_digest, good_digest);
}

#[test]
fn a_looping_policy_is_stopped_at_its_deadline() {
    assert_contained(
        "infinite_loop",
        |e| matches!(e, Error::Timeout { call: Call::Decide, deadline } if *deadline == Limits::DEFAULT_DEADLINE),
    );
}

#[test]
fn a_policy_allocating_1_gib_hits_the_memory_cap() {
    assert_contained(
        "alloc_1gib",
        |e| matches!(e, Error::OutOfMemory { call: Call::Decide, limit } if *limit == Limits::DEFAULT_MEMORY),
    );
}

#[test]
fn a_panicking_policy_is_a_trap() {
    assert_contained(
        "panics",
        |e| matches!(e, Error::Trap { call: Call::Decide, message } if message.contains("unreachable")),
    );
}

#[test]
fn a_decision_for_an_image_never_offered_is_invalid() {
    assert_contained(
        "unknown_ids",
        |e| matches!(e, Error::InvalidAnswer { call: Call::Decide, problem: AnswerError::UnknownId(id) } if id.starts_with("sha256:eee")),
    );
}

#[test]
fn two_decisions_for_one_image_are_invalid() {
    assert_contained("duplicate_ids", |e| {
        matches!(
            e,
            Error::InvalidAnswer {
                call: Call::Decide,
                problem: AnswerError::DuplicateId(_)
            }
        )
    });
}

#[test]
fn a_100_000_entry_answer_is_invalid() {
    assert_contained("flood", |e| {
        matches!(
            e,
            Error::InvalidAnswer {
                call: Call::Decide,
                problem: AnswerError::TooMany {
                    got: 100_000,
                    offered: 5
                }
            }
        )
    });
}

#[test]
fn a_policy_that_rejects_its_settings_never_loads() {
    let engine = engine();
    let bytes = hostile_guest("bad_settings");
    let started = Instant::now();
    let err = LoadedPolicy::load(&engine, &bytes, "bad_settings", "{}").expect_err("settings are rejected");
    assert!(
        matches!(&err, Error::SettingsRejected(m) if m.contains("`anything`")),
        "{err:?}"
    );
    assert!(started.elapsed() < Limits::DEFAULT_DEADLINE + Duration::from_secs(1));
    assert_swap_refused(&engine, "bad_settings", &bytes);
}

#[test]
fn garbage_bytes_are_not_a_component() {
    let engine = engine();
    let err = LoadedPolicy::load(&engine, b"\0asm garbage", "garbage.wasm", "").unwrap_err();
    assert!(
        matches!(&err, Error::Compile { origin, .. } if origin == "garbage.wasm"),
        "{err:?}"
    );
    assert_swap_refused(&engine, "garbage", b"not wasm at all");
}

#[test]
fn a_core_module_is_not_a_policy_component() {
    let engine = engine();
    // The smallest valid core module: magic and version only.
    let core = b"\0asm\x01\0\0\0";
    let err = LoadedPolicy::load(&engine, core, "core.wasm", "").unwrap_err();
    assert_eq!(err.kind(), "compile", "{err:?}");
}

#[test]
fn fuel_makes_a_looping_policy_fail_deterministically() {
    let engine = PolicyEngine::new(Limits::deterministic(5_000_000), None).unwrap();
    let p = LoadedPolicy::load(&engine, &hostile_guest("infinite_loop"), "loop", "").unwrap();
    let node = small_node();
    for _ in 0..2 {
        let err = p.decide(&node.context, &node.images).unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutOfFuel {
                    call: Call::Decide,
                    fuel: 5_000_000
                }
            ),
            "{err:?}"
        );
    }
}

#[test]
fn a_trap_does_not_poison_later_calls() {
    let engine = engine();
    let panics = LoadedPolicy::load(&engine, &hostile_guest("panics"), "panics", "").unwrap();
    let good = LoadedPolicy::load(&engine, embedded_default_policy(), "default", "").unwrap();
    let node = small_node();
    for _ in 0..3 {
        assert!(panics.decide(&node.context, &node.images).is_err());
        let set = good
            .decide(&node.context, &node.images)
            .expect("each call gets a fresh store");
        assert_eq!(set.decisions.len(), node.images.len());
    }
}

#[test]
fn images_a_policy_says_nothing_about_are_kept() {
    let engine = engine();
    let silent = LoadedPolicy::load(&engine, &hostile_guest("silent"), "silent", "").unwrap();
    let node = small_node();
    let set = silent
        .decide(&node.context, &node.images)
        .expect("an empty answer is valid");
    assert_eq!(set.decisions.len(), node.images.len(), "one verdict per image offered");
    for (decision, image) in set.decisions.iter().zip(&node.images) {
        assert_eq!(decision.id, image.id, "verdicts stay in input order");
        assert_eq!(decision.action, Action::Keep, "{}", image.id);
        assert_eq!(decision.reason, "no decision from policy");
    }
    assert!(silent.select(&node.context, &node.images).unwrap().is_empty());
}
