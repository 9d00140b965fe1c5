//! Building blocks for misbehaving policies. Each example in `examples/`
//! is one component; `hostile_policy!` wires a behaviour into the world.

pub use scour_policy_guest::{Policy, export_policy, sdk};
use sdk::{Context, Decision, Image, PolicyInfo};

/// What a hostile policy does in `select` and `decide`.
pub trait Behaviour {
    const NAME: &'static str;

    fn validate(_settings: &str) -> Result<(), String> {
        Ok(())
    }

    fn answer(images: &[Image]) -> Vec<Decision>;
}

/// Adapts a [`Behaviour`] to the policy trait.
pub struct Hostile<B>(std::marker::PhantomData<B>);

impl<B: Behaviour> Policy for Hostile<B> {
    fn info() -> PolicyInfo {
        PolicyInfo {
            name: format!("hostile-{}", B::NAME),
            version: "0.0.0".into(),
            max_findings: 0,
        }
    }

    fn validate_settings(settings: &str) -> Result<(), String> {
        B::validate(settings)
    }

    fn select(_settings: &str, _ctx: &Context, images: &[Image]) -> Result<Vec<String>, String> {
        Ok(B::answer(images).into_iter().map(|d| d.id).collect())
    }

    fn decide(_settings: &str, _ctx: &Context, images: &[Image]) -> Result<Vec<Decision>, String> {
        Ok(B::answer(images))
    }
}

/// Exports `Hostile<$behaviour>` as the component.
#[macro_export]
macro_rules! hostile_policy {
    ($behaviour:ty) => {
        type Exported = $crate::Hostile<$behaviour>;
        $crate::export_policy!(Exported);
    };
}
