//! Answers twice for the first image: keep, then remove.
use scour_hostile_guests::{
    Behaviour, hostile_policy,
    sdk::{Decision, Image},
};

struct Duplicate;
impl Behaviour for Duplicate {
    const NAME: &'static str = "duplicate-ids";
    fn answer(images: &[Image]) -> Vec<Decision> {
        let id = images.first().map(|i| i.id.clone()).unwrap_or_default();
        vec![Decision::keep(&id, "first"), Decision::remove(&id, "second")]
    }
}
hostile_policy!(Duplicate);
