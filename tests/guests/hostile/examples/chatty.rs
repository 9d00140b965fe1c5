//! Logs while it decides, more and longer than the host keeps, with a
//! forged line, then keeps everything: the host must bound and escape what
//! it keeps and change no verdict.
use scour_hostile_guests::{
    Behaviour, hostile_policy,
    sdk::{Decision, Image},
};
use scour_policy_guest::log;

struct Chatty;
impl Behaviour for Chatty {
    const NAME: &'static str = "chatty";
    fn answer(images: &[Image]) -> Vec<Decision> {
        log::info(&format!("looking at {} images", images.len()));
        log::warn(&"x".repeat(5000));
        log::info("one line\nINFO a forged line");
        for i in 0..500 {
            log::debug(&format!("detail {i}"));
        }
        images.iter().map(|i| Decision::keep(&i.id, "chatty: kept")).collect()
    }
}
hostile_policy!(Chatty);
