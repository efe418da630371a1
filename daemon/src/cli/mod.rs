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
use args::{Cli, Command, InquiryCommand, LogFormat, PluginCommand, RunsCommand, SegmentCommand, StageCommand};

/// Runs the command line: parses the arguments, runs the command, and says how it went.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // Until the store runs on PostgreSQL, only `migrate` (which copies into one) and
    // the commands that open no database take a PostgreSQL `database`.
    if !matches!(cli.command, Command::Migrate { .. } | Command::Plugin(_))
        && let Err(e) = config.refuse_postgres()
    {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
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
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NUDGE_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
