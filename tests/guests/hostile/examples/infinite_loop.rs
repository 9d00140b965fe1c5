//! Never returns from `select` or `decide`.
use scour_hostile_guests::{
    Behaviour, hostile_policy,
    sdk::{Decision, Image},
};

struct Spin;
impl Behaviour for Spin {
    const NAME: &'static str = "infinite-loop";
    fn answer(_: &[Image]) -> Vec<Decision> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}
hostile_policy!(Spin);
