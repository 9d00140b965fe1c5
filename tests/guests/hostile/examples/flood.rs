//! Answers with 100 000 removals, whatever it was offered.
use scour_hostile_guests::{
    Behaviour, hostile_policy,
    sdk::{Decision, Image},
};

struct Flood;
impl Behaviour for Flood {
    const NAME: &'static str = "flood";
    fn answer(_: &[Image]) -> Vec<Decision> {
        (0..100_000u64)
            .map(|i| Decision::remove(format!("sha256:{i:064x}"), "flood"))
            .collect()
    }
}
hostile_policy!(Flood);
