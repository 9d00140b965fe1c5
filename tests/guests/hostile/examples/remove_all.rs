//! A well-formed policy that removes everything it is offered: the host's
//! guards must still protect in-use, pinned, sandbox and system-excluded images.
use scour_hostile_guests::{
    Behaviour, hostile_policy,
    sdk::{Decision, Image},
};

struct RemoveAll;
impl Behaviour for RemoveAll {
    const NAME: &'static str = "remove-all";
    fn answer(images: &[Image]) -> Vec<Decision> {
        images
            .iter()
            .map(|i| Decision::remove(&i.id, "hostile: remove everything"))
            .collect()
    }
}
hostile_policy!(RemoveAll);
