//! The sandbox a plugin call runs in: one wasmtime Engine (pooling allocator,
//! epoch interruption driven by a ticker that runs only while a call does,
//! fuel), a Linker that gives plugins WASI with nothing behind it, and a fresh
//! Store per call with the plugin's limits.
//!
//! Epoch interruption stops a plugin only while its wasm runs; a plugin that
//! waits in the host (`std::thread::sleep`, a poll on a clock) is not running
//! wasm. Every WASI call that can wait is a wait on a pollable (`poll` and
//! `pollable.block`; the blocking stream calls of the only streams a plugin
//! gets, its in-memory stdout/stderr and closed stdin, never wait), so those two
//! are replaced with versions that give up at the call's deadline and stop the
//! plugin with the same error the epoch gives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, Resource, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, StoreContextMut, Trap,
};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::io::poll::{Host as _, HostPollable as _};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::Plugin;
use super::manifest::MAX_MEMORY_MB;

wasmtime::component::bindgen!({ path: "../plugin-sdk/wit", world: "channel" });

pub(crate) use self::exports::nudge::channel::plugin::Guest as PluginExports;

/// Bytes of stdout + stderr a plugin may write per call; beyond that its writes fail.
const OUTPUT_LOG_CAP: usize = 16 * 1024;
/// Bytes of the end of that output kept in a crash's error: where a panic's message is.
const LAST_WORDS_CAP: usize = 1024;
/// One epoch tick: how finely a plugin's deadline is kept.
const TICK_MS: u64 = 5;
/// Bytes of a freed instance's linear memory reset in place, with `memset` and
/// a copy of its initial data, instead of being handed back to the kernel. A
/// page given back faults in again on the next call's first write, and on a
/// process whose threads run on both cores each such fault and each `madvise`
/// interrupts the other core to flush its TLB: a tenth of the machine's CPU
/// time under load. The reset covers every byte up to this bound (not only the
/// pages seen written), so nothing of one call is left for the next. 2 MiB covers a
/// first-party plugin (256 KiB stack, data and heap: ~450 KiB a render) with
/// room; the part of a larger memory above it is released as before.
const MEMORY_KEPT_RESIDENT: usize = 2 << 20;
/// The same for tables (the funcref table is written as functions are first called).
const TABLE_KEPT_RESIDENT: usize = 64 << 10;
/// Bytes a capped call may read out of a plugin beyond its output limit: the
/// lists' own layout (an `extra` pair, a request record) counts too.
const OUTPUT_SLACK: usize = 64 << 10;
/// The `wasi:io/poll` interface wasmtime-wasi links (the newest 0.2.x it
/// serves; a guest built for an older 0.2 is linked to it by semver). Its
/// waiting functions are replaced by ones that keep the call's deadline.
const WASI_POLL: &str = "wasi:io/poll@0.2.12";

/// Why a plugin call failed; each says what happened in words an admin can act on.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("template field `{field}`: {message}")]
    Template { field: String, message: String },
    #[error("plugin refused: {0}")]
    Refused(String),
    #[error("plugin stopped: {0}")]
    Limit(String),
    #[error("plugin crashed: {0}")]
    Trap(String),
}

impl PluginError {
    /// Every `code`.
    pub(crate) const CODES: &[&str] = &["template", "refused", "limit", "crash"];

    /// A short, bounded name for the kind of failure (a metric's label).
    pub(crate) fn code(&self) -> &'static str {
        match self {
            PluginError::Template { .. } => "template",
            PluginError::Refused(_) => "refused",
            PluginError::Limit(_) => "limit",
            PluginError::Trap(_) => "crash",
        }
    }
}

/// What one call cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallStats {
    pub(crate) elapsed: Duration,
    pub(crate) fuel: u64,
    pub(crate) peak_memory: usize,
}

/// Per-call state: WASI with no capabilities, the memory limiter, and when the call must end.
pub(crate) struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryCap,
    log: MemoryOutputPipe,
    deadline: Instant,
}

/// A plugin waited in the host past its call's deadline.
#[derive(Debug, thiserror::Error)]
#[error("waited past its deadline")]
struct WaitedPastDeadline;

impl Sandbox {
    /// Waits for `ready` at most until the call's deadline; past it, the plugin is stopped.
    fn wait<R>(&mut self, ready: impl AsyncFnOnce(&mut ResourceTable) -> wasmtime::Result<R>) -> wasmtime::Result<R> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let table = &mut self.table;
        wasmtime_wasi::runtime::in_tokio(async move { tokio::time::timeout_at(deadline, ready(table)).await })
            .map_err(|_| wasmtime::Error::new(WaitedPastDeadline))?
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory and remembers the peak and whether the cap was hit.
struct MemoryCap {
    max: usize,
    peak: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit = true;
            // An error (not `false`) traps the plugin at once instead of letting it
            // handle a failed allocation and carry on.
            return Err(wasmtime::Error::msg("memory limit reached"));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The engine and linker shared by every plugin.
pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    linker: Linker<Sandbox>,
    ticker: Ticker,
}

/// The thread that advances the epoch. It sleeps while no call is in flight: an
/// idle daemon would otherwise wake up every tick for nothing.
struct Ticker {
    thread: Thread,
    calls: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

/// A call in flight, keeping the ticker going until dropped.
struct Ticking<'a>(&'a Ticker);

impl Ticker {
    fn start(engine: &Engine) -> anyhow::Result<Ticker> {
        let calls = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (ticking, in_flight, stopped) = (engine.weak(), calls.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("plugin-epoch".into()).spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                // A call starting unparks it (an unpark before the park is kept).
                if in_flight.load(Ordering::SeqCst) == 0 {
                    std::thread::park();
                    continue;
                }
                std::thread::sleep(Duration::from_millis(TICK_MS));
                match ticking.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })?;
        Ok(Ticker {
            thread: thread.thread().clone(),
            calls,
            stop,
        })
    }

    fn call(&self) -> Ticking<'_> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            self.thread.unpark();
        }
        Ticking(self)
    }
}

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.unpark();
    }
}

impl Runtime {
    pub(crate) fn new() -> anyhow::Result<Runtime> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(64)
            .total_core_instances(640)
            .total_memories(128)
            .total_tables(640)
            .max_memory_size(MAX_MEMORY_MB as usize * 1024 * 1024)
            .linear_memory_keep_resident(MEMORY_KEPT_RESIDENT)
            .table_keep_resident(TABLE_KEPT_RESIDENT);
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(anyhow::Error::from)?;
        let mut linker = Linker::<Sandbox>::new(&engine);
        // Rust's std for wasm32-wasip2 imports WASI; it gets the interfaces with
        // nothing behind them (no preopens, env, args, network), see `store`.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(anyhow::Error::from)?;
        shadow_waits(&mut linker)?;
        let ticker = Ticker::start(&engine)?;
        Ok(Runtime { engine, linker, ticker })
    }

    /// Links a component once; every call instantiates from the result.
    pub(crate) fn prepare(&self, component: &Component) -> anyhow::Result<ChannelPre<Sandbox>> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            anyhow::anyhow!("imports something nudge does not give plugins ({e}); plugins may use only WASI basics")
        })?;
        ChannelPre::new(pre).map_err(|e| anyhow::anyhow!("does not export the nudge:channel world: {e}"))
    }

    fn store(&self, plugin: &Plugin, started: Instant) -> Store<Sandbox> {
        let limits = &plugin.manifest.limits;
        let log = MemoryOutputPipe::new(OUTPUT_LOG_CAP);
        let mut wasi = WasiCtx::builder();
        wasi.stdout(log.clone())
            .stderr(log.clone())
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false);
        let sandbox = Sandbox {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryCap {
                max: limits.memory_mb as usize * 1024 * 1024,
                peak: 0,
                hit: false,
            },
            log,
            deadline: started + Duration::from_millis(limits.deadline_ms),
        };
        let mut store = Store::new(&self.engine, sandbox);
        store.limiter(|s| &mut s.limiter);
        store.set_fuel(limits.fuel).expect("fuel is enabled");
        // The first tick can come at once: one more, so that a call gets its whole deadline.
        store.set_epoch_deadline(limits.deadline_ms.div_ceil(TICK_MS) + 1);
        store.epoch_deadline_trap();
        store
    }

    /// Runs `f` against a fresh instance of `plugin` within its limits.
    pub(crate) fn call<T>(
        &self,
        plugin: &Plugin,
        f: impl FnOnce(&mut Store<Sandbox>, &PluginExports) -> wasmtime::Result<T>,
    ) -> Result<(T, CallStats), PluginError> {
        self.call_capped(plugin, None, f)
    }

    /// As `call`, for a call whose result may hold at most `output` bytes:
    /// wasmtime counts the bytes of each string and list as it reads them out
    /// of the plugin's memory ("hostcall fuel"), so a larger result is refused
    /// before it is copied, not after.
    pub(crate) fn call_capped<T>(
        &self,
        plugin: &Plugin,
        output: Option<usize>,
        f: impl FnOnce(&mut Store<Sandbox>, &PluginExports) -> wasmtime::Result<T>,
    ) -> Result<(T, CallStats), PluginError> {
        let started = Instant::now();
        let _ticking = self.ticker.call();
        let mut store = self.store(plugin, started);
        if let Some(bytes) = output {
            store.set_hostcall_fuel(bytes + OUTPUT_SLACK);
        }
        let result = plugin.pre.instantiate(&mut store).and_then(|instance| {
            let exports = instance.nudge_channel_plugin().clone();
            f(&mut store, &exports)
        });
        let limits = &plugin.manifest.limits;
        let stats = CallStats {
            elapsed: started.elapsed(),
            fuel: limits.fuel - store.get_fuel().unwrap_or(0),
            peak_memory: store.data().limiter.peak,
        };
        let log = store.data().log.contents();
        if !log.is_empty() {
            tracing::debug!(plugin = %plugin.manifest.id, "plugin output: {}", String::from_utf8_lossy(&log));
        }
        match result {
            Ok(value) => Ok((value, stats)),
            Err(e) if e.is::<WaitedPastDeadline>() || matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) => Err(
                PluginError::Limit(format!("exceeded its deadline of {} ms", limits.deadline_ms)),
            ),
            // wasmtime's error type for this is private; its text is all there is to go by.
            Err(e)
                if output.is_some() && format!("{e:#}").contains("fuel allocated for hostcalls has been exhausted") =>
            {
                Err(PluginError::Limit(format!(
                    "returned more than it may, over its output limit of {} KiB",
                    limits.output_kb
                )))
            }
            Err(e) => Err(match e.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => PluginError::Limit(format!("used up its fuel budget of {}", limits.fuel)),
                _ if store.data().limiter.hit => {
                    PluginError::Limit(format!("exceeded its memory limit of {} MiB", limits.memory_mb))
                }
                _ => PluginError::Trap(match last_words(&log) {
                    Some(said) => format!("{said} ({e:#})"),
                    None => format!("{e:#}"),
                }),
            }),
        }
    }
}

/// Replaces WASI's waits on pollables with ones that end at the call's deadline.
fn shadow_waits(linker: &mut Linker<Sandbox>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_POLL).map_err(anyhow::Error::from)?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, Sandbox>, (pollables,): (Vec<Resource<DynPollable>>,)| {
            let ready = store.data_mut().wait(async |table| table.poll(pollables).await)?;
            Ok((ready,))
        },
    )
    .map_err(anyhow::Error::from)?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, Sandbox>, (pollable,): (Resource<DynPollable>,)| {
            store.data_mut().wait(async |table| table.block(pollable).await)
        },
    )
    .map_err(anyhow::Error::from)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The end of what a crashed plugin wrote (a Rust panic prints its message to
/// stderr just before the trap), on one line, without the backtrace hint that
/// the author cannot act on inside the sandbox.
fn last_words(log: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(log);
    let said = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("note: run with `RUST_BACKTRACE=1`"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut start = said.len().saturating_sub(LAST_WORDS_CAP);
    while !said.is_char_boundary(start) {
        start += 1;
    }
    (!said.is_empty()).then(|| said[start..].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_one_of_the_codes_its_counters_start_with() {
        let errors = [
            PluginError::Template {
                field: "subject".into(),
                message: "x".into(),
            },
            PluginError::Refused("x".into()),
            PluginError::Limit("x".into()),
            PluginError::Trap("x".into()),
        ];
        let codes: Vec<&str> = errors.iter().map(PluginError::code).collect();
        assert_eq!(codes, PluginError::CODES);
    }

    #[test]
    fn a_panic_message_is_kept_on_one_line_without_the_backtrace_hint() {
        let log = b"thread '<unnamed>' panicked at src/lib.rs:37:24:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            last_words(log).as_deref(),
            Some("thread '<unnamed>' panicked at src/lib.rs:37:24: boom")
        );
        assert_eq!(last_words(b"\n \n"), None);
    }

    #[test]
    fn only_the_end_of_a_long_output_is_kept_and_never_half_a_character() {
        let log = format!("{}panicked: 阿里巴巴", "阿".repeat(2000));
        let said = last_words(log.as_bytes()).unwrap();
        assert!(
            said.len() <= LAST_WORDS_CAP && said.ends_with("panicked: 阿里巴巴"),
            "{said}"
        );
    }
}
