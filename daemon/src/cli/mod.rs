//! The `nudge` command line: parses arguments and calls into the rest of the
//! crate. `args` is what clap reads, `convert` turns it into the domain's
//! inputs for `commands`; here, the runtime each command runs in.

mod args;
mod convert;

use std::process::ExitCode;

use clap::Parser;

use crate::app::NewInquiry;
use crate::commands;
use crate::config::Config;
use crate::trace;
use args::{Cli, Command, InquiryCommand, LogFormat, PluginCommand, RunsCommand, SegmentCommand, StageCommand};

/// Runs the command line: parses the arguments, runs the command, and says how it went.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // Only the daemon exports traces: `simulate` runs the engine too, and must leave no trace.
    let export = match start_export(&config, matches!(cli.command, Command::Run { .. })) {
        Ok(export) => export,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    init_logs(cli.log_format, export.as_ref());
    // Plugin calls block (wasmtime's WASI bindings drive their own runtime), so the
    // commands that make them run outside the async runtime.
    let result = match cli.command {
        Command::Check { dir } => commands::check::run(&config, dir.as_deref()),
        // Loads the plugin host (for the workflow set's SLA), which blocks: a runtime of its own.
        Command::Report {
            from,
            to,
            owner,
            tier,
            source,
            format,
            html,
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("start tokio");
            runtime.block_on(commands::report::run(
                &config,
                from.as_deref(),
                to.as_deref(),
                [owner, tier, source],
                format.into(),
                html.as_deref(),
            ))
        }
        // Loads the plugin host (for the workflow set's caps), which blocks: a runtime of its own.
        Command::Prune { dry_run } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("start tokio")
            .block_on(commands::prune::run(&config, dry_run)),
        Command::Plugin(PluginCommand::List) => commands::plugin::list(&config),
        Command::Plugin(PluginCommand::Test { plugin, fixture }) => commands::plugin::test(&config, &plugin, &fixture),
        command => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("start tokio");
            runtime.block_on(dispatch(command, config))
        }
    };
    // After the runtime has stopped: the exporter's HTTP client blocks.
    if let Some(export) = export {
        export.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration the command runs with. Until the store runs on PostgreSQL,
/// only `migrate` (which copies into one) and the commands that open no database
/// take a PostgreSQL `database`.
fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let config = Config::load(cli.config.as_deref())?;
    if !matches!(cli.command, Command::Migrate { .. } | Command::Plugin(_)) {
        config.refuse_postgres()?;
    }
    Ok(config)
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<()> {
    if let Command::Run { strict } = command {
        return crate::daemon::run(config, strict).await;
    }
    let config = &config;
    match command {
        Command::Run { .. }
        | Command::Check { .. }
        | Command::Plugin(_)
        | Command::Report { .. }
        | Command::Prune { .. } => {
            unreachable!("run outside the runtime, in main")
        }
        Command::Contact(command) => command.run(config).await,
        Command::Stage(StageCommand::Set { contact, stage }) => commands::stage::set(config, &contact, &stage).await,
        Command::FollowUp(command) => command.run(config).await,
        Command::Order(command) => command.run(config).await,
        Command::Classify => commands::classify::run(config).await,
        Command::Inquiry(InquiryCommand::Add {
            contact,
            message,
            channel,
        }) => commands::inquiry::add(config, &contact, &NewInquiry { message, channel }).await,
        Command::Status { json } => commands::status::run(config, json).await,
        Command::Explain {
            contact,
            workflow,
            at,
            json,
        } => commands::explain::run(config, &contact, workflow.as_deref(), at.as_deref(), json).await,
        Command::Runs { command, list } => RunsCommand::run(command, list, config).await,
        Command::Outbox(command) => command.run(config).await,
        Command::Suppress(command) => command.run(config).await,
        Command::Segment(SegmentCommand::List { json }) => commands::segment::list(config, json).await,
        Command::Segment(SegmentCommand::Run { workflow, follow }) => {
            commands::segment::run(config, &workflow, follow).await
        }
        Command::Simulate {
            days,
            against,
            contacts,
            html,
            messages,
            json,
        } => {
            let options = commands::simulate::Options {
                days,
                against,
                contacts,
                messages,
            };
            commands::simulate::run(config, &options, html.as_deref(), json).await
        }
        Command::Clock { set, advance } => commands::clock::run(config, set.as_deref(), advance.as_deref()).await,
        Command::Migrate {
            to,
            from,
            batch_rows,
            hold_after_batches,
        } => {
            let options = commands::migrate::Options {
                to: &to,
                from: from.as_deref(),
                copy: crate::store::postgres::CopyOptions {
                    batch_rows,
                    hold_after_batches,
                },
            };
            commands::migrate::run(config, options).await
        }
    }
}

/// The trace exporter, if this build has one and `nudge run` is to export.
#[cfg(feature = "otel")]
fn start_export(config: &Config, daemon: bool) -> anyhow::Result<Option<trace::Export>> {
    match config.trace_export() {
        Some(settings) if daemon => trace::Export::start(settings).map(Some),
        _ => Ok(None),
    }
}

/// Without the `otel` feature there is no exporter (`[tracing]` in nudge.toml is refused).
#[cfg(not(feature = "otel"))]
fn start_export(_config: &Config, _daemon: bool) -> anyhow::Result<Option<Export>> {
    Ok(None)
}

/// Stands in for the exporter in a build without it.
#[cfg(not(feature = "otel"))]
enum Export {}

#[cfg(not(feature = "otel"))]
impl Export {
    fn shutdown(self) {
        match self {}
    }
}

#[cfg(feature = "otel")]
use trace::Export;

/// Human-readable or JSON log lines on stderr, filtered by `NUDGE_LOG`; the
/// spans of `nudge::otel` go to the trace exporter alone, if there is one.
fn init_logs(format: LogFormat, export: Option<&Export>) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("NUDGE_LOG")
        .unwrap_or_else(|_| "info".into())
        .add_directive(format!("{}=off", trace::TARGET).parse().expect("a valid directive"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt: Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync> = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let logs = tracing_subscriber::registry().with(fmt.with_filter(filter));
    #[cfg(feature = "otel")]
    logs.with(export.map(|e| e.layer())).init();
    #[cfg(not(feature = "otel"))]
    {
        let _ = export;
        logs.init();
    }
}
