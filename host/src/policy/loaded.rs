//! A compiled, type-checked policy with validated settings, and its calls.

use std::collections::HashMap;
use std::time::Duration;

use scour_policy_sdk::{Context, Decision, Image, PolicyInfo};
use wasmtime::Store;

use super::engine::StoreState;
use super::{AnswerError, Call, Error, PolicyEngine, Result, convert, digest_of};

pub(crate) mod wit {
    wasmtime::component::bindgen!({ path: "../wit", world: "policy" });
    pub use scour::policy::types::*;
}

/// The WIT world every policy must export.
pub const WORLD: &str = "scour:policy/policy@0.1.0";
/// The most findings per image the host passes, whatever a policy asks for.
pub const MAX_FINDINGS_CAP: u32 = 256;
/// Longer reasons are cut; they end up in reports and statuses.
const MAX_REASON_BYTES: usize = 512;
const NO_DECISION: &str = "no decision from policy";

/// How the policy got compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadStats {
    /// Compile time, or artifact load time on a cache hit.
    pub compile: Duration,
    pub from_cache: bool,
}

/// The answer of `decide`: a verdict for every image offered, in input
/// order, and the digest of the policy that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionSet {
    pub policy_digest: String,
    pub decisions: Vec<Decision>,
}

/// One policy version, ready to run. Cloning is cheap.
#[derive(Clone)]
pub struct LoadedPolicy {
    engine: PolicyEngine,
    pre: wit::PolicyPre<StoreState>,
    digest: String,
    size: usize,
    origin: String,
    info: PolicyInfo,
    settings: String,
    stats: LoadStats,
}

impl std::fmt::Debug for LoadedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPolicy")
            .field("origin", &self.origin)
            .field("digest", &self.digest)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl LoadedPolicy {
    /// Compiles (or loads from the artifact cache), type-checks against
    /// [`WORLD`], asks for `info`, and validates `settings`.
    pub fn load(engine: &PolicyEngine, bytes: &[u8], origin: &str, settings: &str) -> Result<Self> {
        let digest = digest_of(bytes);
        let (component, stats) = engine.compile(bytes, &digest, origin)?;
        let incompatible = |e: wasmtime::Error| Error::Incompatible {
            origin: origin.to_owned(),
            message: format!("{e:#}"),
        };
        let instance_pre = engine.linker().instantiate_pre(&component).map_err(incompatible)?;
        let pre = wit::PolicyPre::new(instance_pre).map_err(incompatible)?;
        let mut policy = Self {
            engine: engine.clone(),
            pre,
            digest,
            size: bytes.len(),
            origin: origin.to_owned(),
            info: PolicyInfo {
                name: String::new(),
                version: String::new(),
                max_findings: 0,
            },
            settings: String::new(),
            stats,
        };
        policy.info = convert::info(policy.call(Call::Info, 0, |p, s| p.call_info(s))?);
        policy.info.max_findings = policy.info.max_findings.min(MAX_FINDINGS_CAP);
        policy.with_settings(settings)
    }

    /// The same component with other settings, validated first.
    pub fn with_settings(&self, settings: &str) -> Result<Self> {
        self.call(Call::ValidateSettings, 0, |p, s| p.call_validate_settings(s, settings))?
            .map_err(Error::SettingsRejected)?;
        Ok(Self {
            settings: settings.to_owned(),
            ..self.clone()
        })
    }

    /// `sha256:…` of the component bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Where the policy came from: a path, or `embedded:scour-default`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn info(&self) -> &PolicyInfo {
        &self.info
    }

    pub fn settings(&self) -> &str {
        &self.settings
    }

    /// Component size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn stats(&self) -> LoadStats {
        self.stats
    }

    pub fn engine(&self) -> &PolicyEngine {
        &self.engine
    }

    /// Exports and imports of the component, for `scour policy check`.
    pub fn describe_component(&self) -> (Vec<String>, Vec<String>) {
        let ty = self.pre.instance_pre().component().component_type();
        let engine = self.pre.instance_pre().engine();
        let exports = ty.exports(engine).map(|(name, _)| name.to_owned()).collect();
        let imports = ty.imports(engine).map(|(name, _)| name.to_owned()).collect();
        (exports, imports)
    }

    /// Ids of the images the policy wants scanned, each offered and unique.
    pub fn select(&self, ctx: &Context, images: &[Image]) -> Result<Vec<String>> {
        let wit_ctx = convert::context(ctx);
        let wit_images = convert::images(images, false, 0);
        let ids = self
            .call(Call::Select, ctx.now, |p, s| {
                p.call_select(s, &self.settings, &wit_ctx, &wit_images)
            })?
            .map_err(|message| Error::Rejected {
                call: Call::Select,
                message,
            })?;
        let mut index = OfferedIds::new(images);
        for id in &ids {
            index.claim(id).map_err(|problem| Error::InvalidAnswer {
                call: Call::Select,
                problem,
            })?;
        }
        Ok(ids)
    }

    /// A verdict on every image. Images the policy left out are kept.
    pub fn decide(&self, ctx: &Context, images: &[Image]) -> Result<DecisionSet> {
        let wit_ctx = convert::context(ctx);
        let wit_images = convert::images(images, true, self.info.max_findings as usize);
        let answer = self
            .call(Call::Decide, ctx.now, |p, s| {
                p.call_decide(s, &self.settings, &wit_ctx, &wit_images)
            })?
            .map_err(|message| Error::Rejected {
                call: Call::Decide,
                message,
            })?;
        let invalid = |problem| Error::InvalidAnswer {
            call: Call::Decide,
            problem,
        };
        if answer.len() > images.len() {
            return Err(invalid(AnswerError::TooMany {
                got: answer.len(),
                offered: images.len(),
            }));
        }
        let mut index = OfferedIds::new(images);
        let mut decisions: Vec<Option<Decision>> = vec![None; images.len()];
        for d in answer {
            let at = index.claim(&d.id).map_err(invalid)?;
            decisions[at] = Some(Decision {
                id: d.id,
                action: convert::action(d.action),
                reason: bounded(d.reason),
            });
        }
        let decisions = decisions
            .into_iter()
            .zip(images)
            .map(|(d, img)| d.unwrap_or_else(|| Decision::keep(&img.id, NO_DECISION)))
            .collect();
        Ok(DecisionSet {
            policy_digest: self.digest.clone(),
            decisions,
        })
    }

    /// Runs one export in a fresh store and instance.
    fn call<R>(
        &self,
        call: Call,
        now: u64,
        f: impl FnOnce(&wit::Policy, &mut Store<StoreState>) -> wasmtime::Result<R>,
    ) -> Result<R> {
        let mut store = self.engine.new_store(now);
        let policy = match self.pre.instantiate(&mut store) {
            Ok(p) => p,
            Err(e) => return Err(self.engine.classify(Call::Instantiate, &store, e)),
        };
        f(&policy, &mut store).map_err(|e| self.engine.classify(call, &store, e))
    }
}

/// Offered image ids, each claimable once.
struct OfferedIds<'a> {
    index: HashMap<&'a str, (usize, bool)>,
}

impl<'a> OfferedIds<'a> {
    fn new(images: &'a [Image]) -> Self {
        Self {
            index: images
                .iter()
                .enumerate()
                .map(|(i, img)| (img.id.as_str(), (i, false)))
                .collect(),
        }
    }

    fn claim(&mut self, id: &str) -> Result<usize, AnswerError> {
        match self.index.get_mut(id) {
            None => Err(AnswerError::UnknownId(bounded(id.to_owned()))),
            Some((_, true)) => Err(AnswerError::DuplicateId(id.to_owned())),
            Some((at, claimed)) => {
                *claimed = true;
                Ok(*at)
            }
        }
    }
}

fn bounded(mut s: String) -> String {
    if s.len() > MAX_REASON_BYTES {
        let mut cut = MAX_REASON_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
