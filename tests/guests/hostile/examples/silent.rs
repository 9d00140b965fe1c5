//! Reads every image and answers nothing: the host keeps every image. It is
//! also the cheapest possible policy, the floor that P1 compares against.
use scour_hostile_guests::{
    Behaviour, hostile_policy,
    sdk::{Decision, Image},
};

#[cfg(target_arch = "wasm32")]
scour_policy_guest::use_bump_allocator!();

struct Silent;
impl Behaviour for Silent {
    const NAME: &'static str = "silent";
    fn answer(_images: &[Image]) -> Vec<Decision> {
        Vec::new()
    }
}
hostile_policy!(Silent);
