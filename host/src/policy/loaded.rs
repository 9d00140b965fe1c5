//! A compiled, type-checked policy with validated settings, and its calls.

use std::collections::HashMap;
use std::time::Duration;

use scour_policy_sdk::{Context, Decision, Image, PolicyInfo};
use wasmtime::Store;
use wasmtime::component::{ComponentExportIndex, Instance};

use super::abi::{self, ContextArg, ImageArg};
use super::engine::StoreState;
use super::{AnswerError, Call, Error, PolicyEngine, Result, digest_of};

pub(crate) mod wit {
    wasmtime::component::bindgen!({ path: "../wit", world: "policy" });
    pub use self::scour::policy::types::*;
}

/// The WIT world every policy must export.
pub const WORLD: &str = "scour:policy/policy@0.1.0";
/// The interface of that world holding the policy's functions.
pub const INTERFACE: &str = "scour:policy/cleanup@0.1.0";
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
    /// `select` and `decide` inside [`INTERFACE`], called with borrowed arguments.
    select_fn: ComponentExportIndex,
    decide_fn: ComponentExportIndex,
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
        let function = |name: &str| {
            component
                .get_export_index(None, INTERFACE)
                .and_then(|iface| component.get_export_index(Some(&iface), name))
                .ok_or_else(|| Error::Incompatible {
                    origin: origin.to_owned(),
                    message: format!("no export `{name}` in {INTERFACE}"),
                })
        };
        let (select_fn, decide_fn) = (function("select")?, function("decide")?);
        let mut policy = Self {
            engine: engine.clone(),
            pre,
            select_fn,
            decide_fn,
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
        policy.info = abi::info(policy.call(Call::Info, 0, |i, s| {
            wit::Policy::new(&mut *s, i)?.scour_policy_cleanup().call_info(s)
        })?);
        policy.info.max_findings = policy.info.max_findings.min(MAX_FINDINGS_CAP);
        policy.with_settings(settings)
    }

    /// The same component with other settings, validated first.
    pub fn with_settings(&self, settings: &str) -> Result<Self> {
        self.call(Call::ValidateSettings, 0, |i, s| {
            wit::Policy::new(&mut *s, i)?
                .scour_policy_cleanup()
                .call_validate_settings(s, settings)
        })?
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

    /// Exports (an exported interface as `iface (fn, fn, …)`) and imports of
    /// the component, for `scour policy check`.
    pub fn describe_component(&self) -> (Vec<String>, Vec<String>) {
        use wasmtime::component::types::ComponentItem;
        let ty = self.pre.instance_pre().component().component_type();
        let engine = self.pre.instance_pre().engine();
        let exports = ty
            .exports(engine)
            .map(|(name, item)| match item.ty {
                ComponentItem::ComponentInstance(inst) => {
                    let functions: Vec<&str> = inst
                        .exports(engine)
                        .filter(|(_, e)| matches!(e.ty, ComponentItem::ComponentFunc(_)))
                        .map(|(f, _)| f)
                        .collect();
                    format!("{name} ({})", functions.join(", "))
                }
                _ => name.to_owned(),
            })
            .collect();
        let imports = ty.imports(engine).map(|(name, _)| name.to_owned()).collect();
        (exports, imports)
    }

    /// Ids of the images the policy wants scanned, each offered and unique.
    /// The host fills each image's `excluded-by` and `listed-by` from `ctx`
    /// with the SDK matcher (the images' own fields are ignored).
    pub fn select(&self, ctx: &Context, images: &[Image]) -> Result<Vec<String>> {
        let matches = scour_policy_sdk::matches(ctx, images).map_err(Error::Input)?;
        let args = (
            self.settings.as_str(),
            &abi::context(ctx),
            abi::images(images, &matches, false, 0),
        );
        let (answer,) = self.call(Call::Select, ctx.now, |i, s| {
            i.get_typed_func::<(&str, &ContextArg, &[ImageArg]), (Result<Vec<String>, String>,)>(
                &mut *s,
                &self.select_fn,
            )?
            .call(s, (args.0, args.1, &args.2))
        })?;
        let ids = answer.map_err(|message| Error::Rejected {
            call: Call::Select,
            message,
        })?;
        let invalid = |problem| Error::InvalidAnswer {
            call: Call::Select,
            problem,
        };
        if ids.len() > images.len() {
            return Err(invalid(AnswerError::TooMany {
                got: ids.len(),
                offered: images.len(),
            }));
        }
        let mut index = OfferedIds::new(images);
        for id in &ids {
            index.claim(id).map_err(invalid)?;
        }
        Ok(ids)
    }

    /// A verdict on every image. Images the policy left out are kept.
    pub fn decide(&self, ctx: &Context, images: &[Image]) -> Result<DecisionSet> {
        let max_findings = self.info.max_findings as usize;
        let matches = scour_policy_sdk::matches(ctx, images).map_err(Error::Input)?;
        let args = (
            self.settings.as_str(),
            &abi::context(ctx),
            abi::images(images, &matches, true, max_findings),
        );
        let (answer,) = self.call(Call::Decide, ctx.now, |i, s| {
            i.get_typed_func::<(&str, &ContextArg, &[ImageArg]), (Result<Vec<wit::Decision>, String>,)>(
                &mut *s,
                &self.decide_fn,
            )?
            .call(s, (args.0, args.1, &args.2))
        })?;
        let answer = answer.map_err(|message| Error::Rejected {
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
            if let Some(slot) = decisions.get_mut(at) {
                *slot = Some(Decision {
                    id: d.id,
                    action: abi::action(d.action),
                    reason: bounded(d.reason),
                });
            }
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
        f: impl FnOnce(&Instance, &mut Store<StoreState>) -> wasmtime::Result<R>,
    ) -> Result<R> {
        let mut store = self.engine.new_store(now);
        let name = if self.info.name.is_empty() {
            &self.origin
        } else {
            &self.info.name
        };
        // What the policy logged is kept whether it answered, trapped or ran
        // out of time; start-up code logs during instantiation.
        let instance = match self.pre.instance_pre().instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => {
                store.data().log.forward(name, Call::Instantiate);
                return Err(self.engine.classify(Call::Instantiate, &store, e));
            }
        };
        let result = f(&instance, &mut store);
        store.data().log.forward(name, call);
        result.map_err(|e| self.engine.classify(call, &store, e))
    }
}

/// Offered image ids, each claimable once. Policies usually answer in input
/// order, which is checked without hashing; anything else falls back to an
/// index.
struct OfferedIds<'a> {
    images: &'a [Image],
    claimed: Vec<bool>,
    next: usize,
    index: Option<HashMap<&'a str, usize>>,
}

impl<'a> OfferedIds<'a> {
    fn new(images: &'a [Image]) -> Self {
        Self {
            images,
            claimed: vec![false; images.len()],
            next: 0,
            index: None,
        }
    }

    fn claim(&mut self, id: &str) -> Result<usize, AnswerError> {
        let at = match self.images.get(self.next) {
            Some(img) if img.id == id => self.next,
            _ => {
                let images = self.images;
                let index = self
                    .index
                    .get_or_insert_with(|| images.iter().enumerate().map(|(i, img)| (img.id.as_str(), i)).collect());
                *index
                    .get(id)
                    .ok_or_else(|| AnswerError::UnknownId(bounded(id.to_owned())))?
            }
        };
        let Some(claimed) = self.claimed.get_mut(at) else {
            return Err(AnswerError::UnknownId(bounded(id.to_owned())));
        };
        if std::mem::replace(claimed, true) {
            return Err(AnswerError::DuplicateId(bounded(id.to_owned())));
        }
        self.next = at + 1;
        Ok(at)
    }
}

fn bounded(s: String) -> String {
    crate::text::bounded(s, MAX_REASON_BYTES)
}
