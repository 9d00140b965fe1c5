//! One wasmtime `Engine` and `Linker` for all policies, with the budget every
//! call runs under.

use std::hash::Hasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::Digest;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::cache::ArtifactCache;
use super::guest_log::GuestLog;
use super::loaded::wit::scour::policy::log as log_import;
use super::{Call, Error, LoadStats, Result};

/// How long the epoch ticker sleeps between ticks: the granularity of deadlines.
const TICK: Duration = Duration::from_millis(10);
/// Tables are tiny in real policies; this only stops runaway growth.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// How a call is stopped when it runs too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Wall-clock deadline per call, enforced with epoch interruption. For
    /// production.
    Deadline(Duration),
    /// Instruction budget per call, enforced with fuel. Deterministic, for
    /// tests.
    Fuel(u64),
}

/// The resources one policy call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub budget: Budget,
    /// Linear memory cap per call, in bytes.
    pub memory_bytes: usize,
}

impl Limits {
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(2);
    pub const DEFAULT_MEMORY: usize = 64 << 20;
    pub const DEFAULT_FUEL: u64 = 2_000_000_000;

    /// 2 s and 64 MiB per call.
    pub fn production() -> Self {
        Self {
            budget: Budget::Deadline(Self::DEFAULT_DEADLINE),
            memory_bytes: Self::DEFAULT_MEMORY,
        }
    }

    /// A fixed amount of fuel and 64 MiB per call.
    pub fn deterministic(fuel: u64) -> Self {
        Self {
            budget: Budget::Fuel(fuel),
            memory_bytes: Self::DEFAULT_MEMORY,
        }
    }
}

/// Shared by every policy loaded on it; cheap to clone.
#[derive(Clone)]
pub struct PolicyEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<StoreState>,
    limits: Limits,
    cache: Option<ArtifactCache>,
    compatibility: String,
    _ticker: Option<Ticker>,
}

impl PolicyEngine {
    pub fn new(limits: Limits, cache: Option<ArtifactCache>) -> Result<Self> {
        let engine_err = |e: wasmtime::Error| Error::Compile {
            origin: "engine".into(),
            message: format!("{e:#}"),
        };
        let mut config = Config::new();
        config.wasm_component_model(true);
        match limits.budget {
            Budget::Deadline(_) => config.epoch_interruption(true),
            Budget::Fuel(_) => config.consume_fuel(true),
        };
        // Lets `perf` name JIT-compiled policy functions when profiling.
        if std::env::var("SCOUR_POLICY_PROFILER").as_deref() == Ok("perfmap") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(engine_err)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_err)?;
        log_import::add_to_linker::<StoreState, HasSelf<GuestLog>>(&mut linker, |s| &mut s.log).map_err(engine_err)?;
        let ticker = matches!(limits.budget, Budget::Deadline(_)).then(|| Ticker::start(&engine));
        let compatibility = compatibility_key(&engine);
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                limits,
                cache,
                compatibility,
                _ticker: ticker,
            }),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn cache(&self) -> Option<&ArtifactCache> {
        self.inner.cache.as_ref()
    }

    /// Hex key of the engine's settings; precompiled artifacts only load into
    /// an engine with the same key.
    pub fn compatibility(&self) -> &str {
        &self.inner.compatibility
    }

    pub(crate) fn linker(&self) -> &Linker<StoreState> {
        &self.inner.linker
    }

    /// Compiles a component, or loads it from the artifact cache.
    pub(crate) fn compile(&self, bytes: &[u8], digest: &str, origin: &str) -> Result<(Component, LoadStats)> {
        let started = Instant::now();
        if let Some(cache) = &self.inner.cache
            && let Some(component) = cache.load(&self.inner.engine, digest, &self.inner.compatibility)
        {
            return Ok((
                component,
                LoadStats {
                    compile: started.elapsed(),
                    from_cache: true,
                },
            ));
        }
        if Engine::detect_precompiled(bytes).is_some() {
            return Err(Error::Compile {
                origin: origin.into(),
                message: "this is a precompiled artifact; give scour the .wasm component itself".into(),
            });
        }
        let component = Component::new(&self.inner.engine, bytes).map_err(|e| Error::Compile {
            origin: origin.into(),
            message: format!("{e:#}"),
        })?;
        if let Some(cache) = &self.inner.cache {
            match component.serialize() {
                Ok(artifact) => cache.store(digest, &self.inner.compatibility, &artifact),
                Err(e) => tracing::warn!(error = %e, "cannot serialise the compiled policy for the cache"),
            }
        }
        Ok((
            component,
            LoadStats {
                compile: started.elapsed(),
                from_cache: false,
            },
        ))
    }

    /// A fresh store with an empty WASI context, the memory cap and the
    /// call's budget. `now` fixes the guest's wall clock.
    pub(crate) fn new_store(&self, now: u64) -> Store<StoreState> {
        let wasi = WasiCtx::builder()
            .wall_clock(FixedWallClock(Duration::from_secs(now)))
            .monotonic_clock(FrozenMonotonicClock)
            .build();
        let state = StoreState {
            wasi,
            table: ResourceTable::new(),
            log: GuestLog::default(),
            limiter: MemoryLimiter {
                max_bytes: self.inner.limits.memory_bytes,
                exceeded: false,
            },
        };
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        match self.inner.limits.budget {
            Budget::Deadline(d) => {
                store.set_epoch_deadline(deadline_ticks(d));
                store.epoch_deadline_trap();
            }
            Budget::Fuel(fuel) => {
                // Only fails when fuel is not enabled, which the config guarantees.
                let _ = store.set_fuel(fuel);
            }
        }
        store
    }

    /// Turns a wasmtime failure into the policy error it stands for.
    pub(crate) fn classify(&self, call: Call, store: &Store<StoreState>, err: wasmtime::Error) -> Error {
        if store.data().limiter.exceeded {
            return Error::OutOfMemory {
                call,
                limit: self.inner.limits.memory_bytes,
            };
        }
        match (err.downcast_ref::<Trap>(), self.inner.limits.budget) {
            (Some(Trap::Interrupt), Budget::Deadline(deadline)) => Error::Timeout { call, deadline },
            (Some(Trap::OutOfFuel), Budget::Fuel(fuel)) => Error::OutOfFuel { call, fuel },
            (Some(trap), _) => Error::Trap {
                call,
                message: trap.to_string(),
            },
            (None, _) => Error::Trap {
                call,
                message: format!("{err:#}").lines().next().unwrap_or_default().to_owned(),
            },
        }
    }
}

fn deadline_ticks(d: Duration) -> u64 {
    // One extra tick: the first may arrive right after the deadline is set.
    (d.as_nanos().div_ceil(TICK.as_nanos()) as u64).max(1) + 1
}

fn compatibility_key(engine: &Engine) -> String {
    struct Sha(sha2::Sha256);
    impl Hasher for Sha {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            0
        }
    }
    let mut h = Sha(sha2::Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    h.0.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Increments the engine's epoch every [`TICK`] for as long as it lives.
struct Ticker {
    stop: Arc<AtomicBool>,
    _thread: JoinHandle<()>,
}

impl Ticker {
    fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        // Without the ticker no policy call could be interrupted, and a
        // process that cannot start a thread cannot go on: not input-shaped.
        #[allow(clippy::expect_used)]
        let thread = std::thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawning the epoch ticker thread");
        Self { stop, _thread: thread }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Per-call store data: an empty WASI context, the memory limiter and what
/// the policy logged.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) log: GuestLog,
    limiter: MemoryLimiter,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct MemoryLimiter {
    max_bytes: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} bytes exceeded",
                self.max_bytes
            )));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// The guest's wall clock shows the run's `now`, so policies stay
/// deterministic even if they read the clock.
struct FixedWallClock(Duration);

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

struct FrozenMonotonicClock;

impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        0
    }
}
