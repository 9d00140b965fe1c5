//! Tries to allocate 1 GiB.
use scour_hostile_guests::{
    Behaviour, hostile_policy,
    sdk::{Decision, Image},
};

struct Hog;
impl Behaviour for Hog {
    const NAME: &'static str = "alloc-1gib";
    fn answer(_: &[Image]) -> Vec<Decision> {
        let big = vec![7u8; 1 << 30];
        std::hint::black_box(&big);
        Vec::new()
    }
}
hostile_policy!(Hog);
