//! Answers for an image that was never offered.
use scour_hostile_guests::{
    Behaviour, hostile_policy,
    sdk::{Decision, Image},
};

struct Unknown;
impl Behaviour for Unknown {
    const NAME: &'static str = "unknown-ids";
    fn answer(_: &[Image]) -> Vec<Decision> {
        vec![Decision::remove(format!("sha256:{}", "e".repeat(64)), "not offered")]
    }
}
hostile_policy!(Unknown);
