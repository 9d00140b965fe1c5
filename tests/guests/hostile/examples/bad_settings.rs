//! Rejects every settings string.
use scour_hostile_guests::{
    Behaviour, hostile_policy,
    sdk::{Decision, Image},
};

struct Picky;
impl Behaviour for Picky {
    const NAME: &'static str = "bad-settings";
    fn validate(_: &str) -> Result<(), String> {
        Err("`anything`: these settings are never good enough".into())
    }
    fn answer(_: &[Image]) -> Vec<Decision> {
        Vec::new()
    }
}
hostile_policy!(Picky);
