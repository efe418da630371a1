//! `nudge run`: wires the store, workflows, plugin host, engine, delivery, the
//! API and the workflow watcher together, and shuts them down on SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admission::Admission;
use crate::api;
use crate::clock::Clock;
use crate::config::{ClockKind, Config};
use crate::delivery::Delivery;
use crate::engine::{Engine, reload, scheduler};
use crate::plugins::{PluginHost, Plugins};
use crate::store::Store;
use crate::workflow::WorkflowSet;

pub(crate) mod retention;

/// Opens the store and the clock the config asks for (shared by the daemon and the CLI).
pub(crate) async fn open(config: &Config) -> anyhow::Result<(Store, Clock)> {
    let store = Store::open(&config.database).await?;
    let clock = match config.clock {
        ClockKind::System => Clock::System,
        ClockKind::Virtual => {
            let now = match store.virtual_now().await? {
                Some(now) => now,
                None => {
                    // First start on virtual time: begin at the wall time, once.
                    let now = jiff::Timestamp::now().as_millisecond();
                    store.set_virtual_now(now).await?;
                    now
                }
            };
            Clock::virtual_at(jiff::Timestamp::from_millisecond(now)?)
        }
    };
    Ok((store, clock))
}

/// Runs the daemon until SIGTERM. With `strict`, a plugin folder that cannot be
/// loaded stops the start; otherwise the daemon starts without it and says so.
pub(crate) async fn run(config: Config, strict: bool) -> anyhow::Result<()> {
    if let Some(warning) = config.public_link_warning() {
        tracing::warn!("{warning}");
    }
    let (store, clock) = open(&config).await?;
    let plugins = load_plugins(&config, strict).await?;
    let workflows = load_workflows(&config, &plugins.get().channels())?;
    config.check_retention(&workflows)?;
    let unsubscribe = crate::unsubscribe::Unsubscribe::from_config(&config, &store)
        .await
        .context("set up unsubscribe links")?;
    let engine = Arc::new(
        Engine::new(
            store.clone(),
            clock.clone(),
            plugins.clone(),
            workflows,
            config.message_id_domain(),
            unsubscribe,
            Arc::new(Admission::new(
                config.api.max_unsent,
                Duration::from_millis(config.api.max_hold_ms),
            )),
        )
        .await
        .context("start the engine")?,
    );
    let engine_wake = Arc::new(Notify::new());
    let cancel = CancellationToken::new();
    let bounce_inbox = match &config.bounces {
        Some(bounces) => Some(Arc::new(crate::bounces::Inbox {
            maildir: bounces.maildir.clone(),
            return_path: crate::bounces::ReturnPath::new(bounces, store.secret("bounce").await?),
            store: store.clone(),
            clock: clock.clone(),
            rules: config.suppression.rules(),
        })),
        None => None,
    };
    let delivery = Delivery::new(
        &config,
        store.clone(),
        clock.clone(),
        plugins.clone(),
        engine.delivery.clone(),
        engine.admission.clone(),
        bounce_inbox.as_ref().map(|inbox| inbox.return_path.clone()),
    )?;
    let api = api::serve(
        &config,
        store.clone(),
        clock.clone(),
        engine_wake.clone(),
        engine.clone(),
        delivery.shown(),
        cancel.clone(),
    )
    .await?;
    let mut tasks = spawn_tasks(&config, &engine, &engine_wake, &plugins, delivery, &cancel);
    tasks.spawn(api);
    if let Some(inbox) = bounce_inbox {
        tasks.spawn(crate::bounces::watch(inbox, cancel.clone()));
    }
    info!(
        clock = if clock.is_virtual() { "virtual" } else { "system" },
        "nudge is running"
    );

    shutdown_signal().await;
    info!("shutting down: finishing the current step, claiming nothing new");
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
    store.close().await;
    info!("stopped");
    Ok(())
}

/// The plugin host, on a blocking thread (compiling components is CPU work).
pub(crate) async fn load_plugins(config: &Config, strict: bool) -> anyhow::Result<Plugins> {
    let settings = config.plugin_settings();
    let host = tokio::task::spawn_blocking(move || PluginHost::load(&settings, None)).await??;
    let host = if strict {
        host.strict()
            .context("a plugin could not be loaded (`nudge run` without --strict starts without it)")?
    } else {
        host
    };
    for (origin, error) in host.rejected() {
        warn!("plugin {origin} rejected, starting without it (`nudge run --strict` refuses instead): {error:#}");
    }
    Ok(Plugins::new(host))
}

/// The workflow folder, which must compile whole: the daemon does not start on a broken set.
fn load_workflows(config: &Config, channels: &[String]) -> anyhow::Result<WorkflowSet> {
    let workflows = WorkflowSet::load(&config.workflows, channels)
        .map_err(|d| anyhow::anyhow!("{}\nfix the workflow files and start again", d.render(false)))?;
    info!(
        workflows = workflows.workflows.len(),
        templates = workflows.templates.len(),
        set = %workflows.hash,
        dir = %config.workflows.display(),
        "workflows loaded"
    );
    Ok(workflows)
}

/// The daemon's loops, each stopping on `cancel`: the engine, delivery, the
/// daily classification and retention passes, and the watchers of other processes' writes,
/// the workflow folder and the plugins folder.
fn spawn_tasks(
    config: &Config,
    engine: &Arc<Engine>,
    engine_wake: &Arc<Notify>,
    plugins: &Plugins,
    delivery: Delivery,
    cancel: &CancellationToken,
) -> JoinSet<()> {
    let classification_wake = Arc::new(Notify::new());
    let retention_wake = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    tasks.spawn(scheduler::run(engine.clone(), engine_wake.clone(), cancel.clone()));
    tasks.spawn(delivery.run(cancel.clone()));
    tasks.spawn(crate::insight::run_daily_pass(
        engine.clone(),
        classification_wake.clone(),
        engine_wake.clone(),
        cancel.clone(),
    ));
    tasks.spawn(scheduler::watch_changes(
        engine.store.clone(),
        engine.clock.clone(),
        vec![
            engine_wake.clone(),
            engine.delivery.wake.clone(),
            classification_wake,
            retention_wake.clone(),
        ],
        cancel.clone(),
    ));
    tasks.spawn(retention::run_daily(
        engine.clone(),
        config.clone(),
        retention_wake,
        cancel.clone(),
    ));
    tasks.spawn(reload::watch(
        config.workflows.clone(),
        engine.clone(),
        engine_wake.clone(),
        cancel.clone(),
    ));
    tasks.spawn(crate::plugins::reload::watch(
        config.plugin_settings(),
        plugins.clone(),
        cancel.clone(),
    ));
    tasks
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.ok();
}
