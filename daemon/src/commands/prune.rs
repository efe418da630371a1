//! `nudge prune [--dry-run]`: the daemon's daily retention pass, now.

use crate::config::Config;
use crate::daemon;
use crate::plugins::PluginHost;
use crate::workflow::WorkflowSet;

/// Prunes (or with `dry_run` counts) the finished runs and delivered messages
/// older than `[retention] keep_days`, with the workflow files' caps as the
/// daemon would check them.
pub(crate) async fn run(config: &Config, dry_run: bool) -> anyhow::Result<()> {
    let plugins = PluginHost::load(&config.plugin_settings(), None)?.strict()?;
    let set = WorkflowSet::load(&config.workflows, &plugins.channels())
        .map_err(|d| anyhow::anyhow!("{}\nfix {} first", d.render(false), config.workflows.display()))?;
    let (store, clock) = daemon::open(config).await?;
    let p = daemon::retention::pass(&store, config, &set, clock.now_ms(), dry_run).await?;
    let verb = if dry_run { "would prune" } else { "pruned" };
    println!(
        "{verb} (older than {} days): {} runs, {} steps, {} timers, {} messages, {} delivery attempts, {} opens and clicks",
        config.keep_days(),
        p.runs,
        p.run_steps,
        p.timers,
        p.messages,
        p.deliveries,
        p.engagement
    );
    Ok(())
}
