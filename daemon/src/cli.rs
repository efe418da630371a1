//! The `nudge` command line: parses arguments and calls into the rest of the crate.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::app::{Amount, FollowUpInput, NewInquiry, NewOrder, NewSuppression};
use crate::commands;
use crate::commands::report::ReportFormat;
use crate::commands::suppress::SuppressAction;
use crate::config::Config;
use crate::store::{self, Consent, ConsentScope, ContactEdit, FollowUpResult, NewContact};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "nudge",
    version,
    about = "Customer follow-up automation: workflow files, channel plugins, one SQLite file"
)]
struct Cli {
    /// Settings file (default: ./nudge.toml if present, else built-in defaults).
    #[arg(long, global = true, env = "NUDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Log format of the daemon.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormatArg {
    Table,
    Json,
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: API, engine, scheduler, delivery, workflow hot reload.
    Run {
        /// Refuse to start if any plugin folder cannot be loaded (by default the
        /// daemon starts with the plugins that load and reports the others).
        #[arg(long)]
        strict: bool,
    },
    /// Validate the workflow folder; exit 1 on any problem.
    Check {
        /// Folder to check (default: the config's workflows folder).
        dir: Option<PathBuf>,
    },
    /// Add, import or show contacts.
    #[command(subcommand)]
    Contact(ContactCommand),
    /// Change a contact's lifecycle stage.
    #[command(subcommand)]
    Stage(StageCommand),
    /// Log follow-ups (docs/domain.md §4).
    #[command(subcommand, name = "followup")]
    FollowUp(FollowUpCommand),
    /// Record orders; import them from CSV.
    #[command(subcommand)]
    Order(OrderCommand),
    /// Re-classify every customer now (value tier, RFM grade, behaviour).
    Classify,
    /// Funnel, response, conversion and churn rates, inquiry SLA and overdue follow-ups for a period.
    Report {
        /// First day (YYYY-MM-DD; default: 29 days before --to).
        #[arg(long)]
        from: Option<String>,
        /// Last day, included (default: today).
        #[arg(long)]
        to: Option<String>,
        /// Only the contacts of this owner.
        #[arg(long)]
        owner: Option<String>,
        /// Only contacts of this value tier.
        #[arg(long)]
        tier: Option<String>,
        /// Only contacts from this source.
        #[arg(long)]
        source: Option<String>,
        #[arg(long, value_enum, default_value_t = ReportFormatArg::Table)]
        format: ReportFormatArg,
        /// Also write a page with the funnel and the weekly trend as charts.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Record inquiries (they start the response SLA).
    #[command(subcommand)]
    Inquiry(InquiryCommand),
    /// List plugins, or run one on a fixture.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Inspect the outbox; retry or drop dead, failed or unknown messages.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Addresses that get nothing: unsubscribed, bounced, complained, or added by hand.
    #[command(subcommand)]
    Suppress(SuppressCommand),
    /// Passes of segment (nurture) workflows over all contacts.
    #[command(subcommand)]
    Segment(SegmentCommand),
    /// Overdue follow-ups per owner, runs, timers and the outbox.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Show or move the virtual clock (only with `clock = "virtual"`).
    Clock {
        /// Set to a time (RFC 3339, or a local date-time in UTC).
        #[arg(long, conflicts_with = "advance")]
        set: Option<String>,
        /// Move forward by a duration, e.g. 3d or 15m.
        #[arg(long)]
        advance: Option<String>,
    },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Messages, newest first.
    List {
        /// pending, sent, failed, dead, unknown, suppressed or dropped; repeat for more.
        #[arg(long)]
        status: Vec<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Queue messages again (same Message-ID, fresh attempts).
    Retry {
        ids: Vec<i64>,
        /// Every message with this status, e.g. dead or unknown.
        #[arg(long, conflicts_with = "ids")]
        all: Option<String>,
    },
    /// Give messages up for good.
    Drop {
        ids: Vec<i64>,
        #[arg(long, conflicts_with = "ids")]
        all: Option<String>,
    },
}

#[derive(Subcommand)]
enum SuppressCommand {
    /// Suppress an address (email or phone).
    Add {
        address: String,
        /// One channel, or every channel (`*`).
        #[arg(long, default_value = "*")]
        channel: String,
        /// `all` customer-facing mail, or `marketing` only (answers, sample and
        /// after-sale checks still go out).
        #[arg(long, default_value = "all", value_parser = consent_scope)]
        scope: ConsentScope,
        #[arg(long, default_value = "")]
        detail: String,
    },
    /// Lift a suppression (`*`: on every channel).
    Remove {
        address: String,
        #[arg(long, default_value = "*")]
        channel: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SegmentCommand {
    /// Passes and their progress.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Start a pass of a segment workflow now.
    Run {
        workflow: String,
        /// Show progress until the pass is done.
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Subcommand)]
enum ContactCommand {
    /// Add one contact.
    Add(Box<ContactArgs>),
    /// Import contacts from a CSV file with a header row; contacts known already are skipped.
    Import {
        file: PathBuf,
        /// Import nothing if any row is bad.
        #[arg(long)]
        strict: bool,
    },
    /// Change how a contact (by id or email) is addressed, or its locale; kept in its history.
    Edit {
        contact: String,
        /// How messages address the contact, e.g. 王总, 张女士, "Dr. Smith" ("" for by name).
        #[arg(long)]
        salutation: Option<String>,
        /// The language messages speak to it, e.g. zh-CN, en-GB.
        #[arg(long)]
        locale: Option<String>,
    },
    /// Show a contact (by id or email): classification, orders, history, follow-ups.
    Show {
        contact: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum OrderCommand {
    /// Record one order; sending the same order id again changes nothing.
    Add {
        /// The order's id in your shop or ERP.
        #[arg(long)]
        id: String,
        /// The contact's id or email.
        #[arg(long)]
        contact: String,
        /// A decimal amount, e.g. 1234.50.
        #[arg(long, allow_hyphen_values = true)]
        amount: String,
        /// Default: the base currency of classification.toml.
        #[arg(long)]
        currency: Option<String>,
        /// YYYY-MM-DD or an RFC 3339 time (default: today).
        #[arg(long)]
        date: Option<String>,
        #[arg(long, default_value = "")]
        items: String,
    },
    /// Import orders from a CSV file with a header row (id, contact, amount, currency, date, items).
    Import {
        file: PathBuf,
        /// Import nothing if any row is bad.
        #[arg(long)]
        strict: bool,
        /// Past orders, loaded once: classify the customers, but start no workflow
        /// (no first-order or reactivation mails for what happened long ago).
        #[arg(long)]
        history: bool,
    },
}

#[derive(Args)]
struct ContactArgs {
    #[arg(long)]
    name: String,
    /// How messages address the contact, e.g. 王总, 张女士, "Dr. Smith" (default: by name).
    #[arg(long, default_value = "")]
    salutation: String,
    #[arg(long, default_value = "")]
    company: String,
    #[arg(long)]
    email: Option<String>,
    #[arg(long)]
    phone: Option<String>,
    /// The owner's email address (gets `notify` messages).
    #[arg(long, default_value = "")]
    owner: String,
    #[arg(long)]
    stage: Option<String>,
    /// Intent grade: A, B or C.
    #[arg(long)]
    intent: Option<String>,
    /// Value tier: high, medium or low.
    #[arg(long)]
    tier: Option<String>,
    /// A tag; repeat for more.
    #[arg(long = "tag")]
    tags: Vec<String>,
    #[arg(long, default_value = "")]
    source: String,
    /// IANA time zone, e.g. Asia/Shanghai.
    #[arg(long)]
    tz: Option<String>,
    #[arg(long)]
    locale: Option<String>,
    /// granted, unknown or withdrawn.
    #[arg(long, value_parser = consent)]
    consent: Option<Consent>,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Every loaded plugin: id, version, interface, channels, origin.
    List,
    /// Run one plugin (a folder with plugin.toml and plugin.wasm, or the id of an
    /// installed or built-in one) through the real host on a JSON fixture: renders its
    /// `template`, builds the requests for its `recipient`, reads its `responses`, and
    /// prints the results and the render's time, fuel and peak memory. Sends nothing.
    Test { plugin: String, fixture: PathBuf },
}

#[derive(Subcommand)]
enum StageCommand {
    /// Set the stage; workflows triggered by `stage_changed` react.
    Set { contact: String, stage: String },
}

#[derive(Subcommand)]
enum FollowUpCommand {
    /// Log a follow-up and set the next one.
    Log(Box<FollowUpArgs>),
    /// Import follow-ups from a CSV file with a header row (contact, at, channel, and the
    /// fields of `log`); rows logged already are skipped.
    Import {
        file: PathBuf,
        /// Import nothing if any row is bad.
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Args)]
struct FollowUpArgs {
    contact: String,
    /// phone, wechat, email, visit, ...
    #[arg(long)]
    channel: String,
    #[arg(long, default_value = "")]
    summary: String,
    #[arg(long, default_value = "")]
    feedback: String,
    /// New intent grade decided in this contact.
    #[arg(long)]
    intent: Option<String>,
    /// The customer's attitude: doubting or accepting (with --understanding: the funnel stage).
    #[arg(long)]
    attitude: Option<String>,
    /// How specific the customer's need is: vague or specific.
    #[arg(long)]
    understanding: Option<String>,
    /// New lifecycle stage reached in this contact.
    #[arg(long)]
    stage: Option<String>,
    /// Next follow-up: a duration (3d), RFC 3339, or a local date-time in the contact's zone.
    #[arg(long)]
    next: Option<String>,
    #[arg(long)]
    goal: Option<String>,
    /// in_progress, won, needs_follow_up or lost.
    #[arg(long, value_parser = follow_up_result)]
    result: Option<FollowUpResult>,
    #[arg(long)]
    owner: Option<String>,
    /// When the contact happened (default: now).
    #[arg(long)]
    at: Option<String>,
}

#[derive(Subcommand)]
enum InquiryCommand {
    /// Record a new inquiry from a contact.
    Add {
        contact: String,
        #[arg(long, default_value = "")]
        message: String,
        #[arg(long, default_value = "")]
        channel: String,
    },
}

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
            let format = match format {
                ReportFormatArg::Table => ReportFormat::Table,
                ReportFormatArg::Json => ReportFormat::Json,
                ReportFormatArg::Csv => ReportFormat::Csv,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("start tokio");
            runtime.block_on(commands::report::run(
                &config,
                from.as_deref(),
                to.as_deref(),
                [owner, tier, source],
                format,
                html.as_deref(),
            ))
        }
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
        Command::Run { .. } | Command::Check { .. } | Command::Plugin(_) | Command::Report { .. } => {
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
        Command::Outbox(command) => command.run(config).await,
        Command::Suppress(command) => command.run(config).await,
        Command::Segment(SegmentCommand::List { json }) => commands::segment::list(config, json).await,
        Command::Segment(SegmentCommand::Run { workflow, follow }) => {
            commands::segment::run(config, &workflow, follow).await
        }
        Command::Clock { set, advance } => commands::clock::run(config, set.as_deref(), advance.as_deref()).await,
    }
}

impl ContactCommand {
    async fn run(self, config: &Config) -> anyhow::Result<()> {
        match self {
            ContactCommand::Add(args) => commands::contact::add(config, (*args).into()).await,
            ContactCommand::Import { file, strict } => commands::contact::import(config, &file, strict).await,
            ContactCommand::Show { contact, json } => commands::contact::show(config, &contact, json).await,
            ContactCommand::Edit {
                contact,
                salutation,
                locale,
            } => commands::contact::edit(config, &contact, ContactEdit { salutation, locale }).await,
        }
    }
}

impl From<ContactArgs> for NewContact {
    fn from(a: ContactArgs) -> NewContact {
        NewContact {
            name: a.name,
            salutation: a.salutation,
            company: a.company,
            email: a.email,
            phone: a.phone,
            owner: a.owner,
            stage: a.stage,
            intent_grade: a.intent,
            value_tier: a.tier,
            tags: a.tags,
            source: a.source,
            time_zone: a.tz,
            locale: a.locale,
            consent: a.consent,
        }
    }
}

impl FollowUpCommand {
    async fn run(self, config: &Config) -> anyhow::Result<()> {
        match self {
            FollowUpCommand::Log(a) => {
                let input = FollowUpInput {
                    at: a.at,
                    channel: a.channel,
                    summary: a.summary,
                    feedback: a.feedback,
                    intent_grade: a.intent,
                    attitude: a.attitude,
                    understanding: a.understanding,
                    stage: a.stage,
                    next_follow_up: a.next,
                    next_goal: a.goal,
                    result: a.result,
                    owner: a.owner,
                };
                commands::follow_up::log(config, &a.contact, input).await
            }
            FollowUpCommand::Import { file, strict } => commands::follow_up::import(config, &file, strict).await,
        }
    }
}

impl OrderCommand {
    async fn run(self, config: &Config) -> anyhow::Result<()> {
        match self {
            OrderCommand::Add {
                id,
                contact,
                amount,
                currency,
                date,
                items,
            } => {
                let order = NewOrder {
                    id,
                    contact,
                    amount: Amount::Text(amount),
                    currency,
                    date,
                    items,
                };
                commands::order::add(config, order).await
            }
            OrderCommand::Import { file, strict, history } => {
                commands::order::import(config, &file, strict, history).await
            }
        }
    }
}

impl OutboxCommand {
    async fn run(self, config: &Config) -> anyhow::Result<()> {
        match self {
            OutboxCommand::List { status, limit, json } => commands::outbox::list(config, &status, limit, json).await,
            OutboxCommand::Retry { ids, all } => commands::outbox::act(config, true, &ids, all.as_deref()).await,
            OutboxCommand::Drop { ids, all } => commands::outbox::act(config, false, &ids, all.as_deref()).await,
        }
    }
}

impl SuppressCommand {
    async fn run(self, config: &Config) -> anyhow::Result<()> {
        let action = match &self {
            SuppressCommand::Add {
                address,
                channel,
                scope,
                detail,
            } => SuppressAction::Add(NewSuppression {
                address: address.clone(),
                channel: channel.clone(),
                scope: *scope,
                detail: detail.clone(),
            }),
            SuppressCommand::Remove { address, channel } => SuppressAction::Remove { address, channel },
            SuppressCommand::List { json } => SuppressAction::List { as_json: *json },
        };
        commands::suppress::run(config, action).await
    }
}

fn consent_scope(text: &str) -> Result<ConsentScope, String> {
    text.parse()
        .map_err(|()| format!("`{text}` is not a scope; use `marketing` or `all`"))
}

fn consent(text: &str) -> Result<Consent, store::Invalid> {
    store::parse_field("consent", text)
}

fn follow_up_result(text: &str) -> Result<FollowUpResult, store::Invalid> {
    store::parse_field("result", text)
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
