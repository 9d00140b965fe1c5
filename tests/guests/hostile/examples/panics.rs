//! Panics, which aborts into a trap.
use scour_hostile_guests::{
    Behaviour, hostile_policy,
    sdk::{Decision, Image},
};

struct Panics;
impl Behaviour for Panics {
    const NAME: &'static str = "panics";
    fn answer(images: &[Image]) -> Vec<Decision> {
        panic!("hostile guest gives up on {} images", images.len())
    }
}
hostile_policy!(Panics);
