//! The command line's arguments as clap reads them, and the parsers of the
//! values it checks on the way in (each naming the values it takes).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::store::{self, Consent, ConsentScope, FollowUpResult, OutboxStatus, RunStatus};

#[derive(Parser)]
#[command(
    name = "nudge",
    version,
    about = "Customer follow-up automation: workflow files, channel plugins, one SQLite file"
)]
pub(super) struct Cli {
    /// Settings file (default: ./nudge.toml if present, else built-in defaults).
    #[arg(long, global = true, env = "NUDGE_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// Log format of the daemon.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(super) log_format: LogFormat,
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum ReportFormatArg {
    Table,
    Json,
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub(super) enum Command {
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
    /// Why a contact is or is not in each workflow, in the order things happened.
    Explain {
        /// The contact: an id or an email.
        contact: String,
        /// Only this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// As of this time (RFC 3339, or a local date-time in UTC; default: now).
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Workflow runs, newest first: status, steps, waits, outcome; `runs show ID` for one whole.
    #[command(args_conflicts_with_subcommands = true)]
    Runs {
        #[command(subcommand)]
        command: Option<RunsCommand>,
        #[command(flatten)]
        list: RunsList,
    },
    /// Delete finished runs and delivered messages older than `[retention] keep_days` now
    /// (the daemon does it daily).
    Prune {
        /// Count what would go; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Overdue follow-ups per owner, runs, timers and the outbox.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// What the workflows would send over the next days: the engine run on a copy
    /// of the database and a virtual clock, sending nothing.
    Simulate {
        /// Days to simulate from now (the virtual clock's reading, or the system's time).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=366))]
        days: u32,
        /// A candidate workflow folder: simulate it too and show who gains or loses which message.
        #[arg(long)]
        against: Option<PathBuf>,
        /// Only report the contacts this condition holds for at the start, written
        /// as a workflow's `when`, e.g. 'contact.stage == "lead"'.
        #[arg(long)]
        contacts: Option<String>,
        /// Also write the result as a self-contained HTML page.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Also write every simulated message to this file as CSV.
        #[arg(long)]
        messages: Option<PathBuf>,
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
    /// Copy the SQLite database into a PostgreSQL one: every table, counts checked;
    /// run again after an interruption and it goes on where it stopped.
    Migrate {
        /// The PostgreSQL database, empty or partly copied by an earlier run:
        /// postgres://user@host:port/database (the password from $NUDGE_DATABASE_PASSWORD,
        /// $PGPASSWORD or ~/.pgpass).
        #[arg(long)]
        to: String,
        /// The SQLite file (default: `database` of nudge.toml).
        #[arg(long)]
        from: Option<PathBuf>,
        /// Rows a batch copies, each batch committed with how far the copy got.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        batch_rows: i64,
        /// For the tests: stop after this many batches and wait to be killed.
        #[arg(long, hide = true)]
        hold_after_batches: Option<u64>,
    },
}

#[derive(Subcommand)]
pub(super) enum OutboxCommand {
    /// Messages, newest first.
    List {
        /// pending, sent, failed, dead, unknown, suppressed or dropped; repeat for more.
        #[arg(long, value_parser = outbox_status)]
        status: Vec<OutboxStatus>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Queue messages again (same Message-ID, fresh attempts).
    Retry {
        ids: Vec<i64>,
        /// Every message with this status, e.g. dead or unknown.
        #[arg(long, conflicts_with = "ids", value_parser = outbox_status)]
        all: Option<OutboxStatus>,
    },
    /// Give messages up for good.
    Drop {
        ids: Vec<i64>,
        #[arg(long, conflicts_with = "ids", value_parser = outbox_status)]
        all: Option<OutboxStatus>,
    },
}

#[derive(Subcommand)]
pub(super) enum RunsCommand {
    /// One run: every step's effect, its timers, its messages and their delivery attempts.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
}

/// `nudge runs`' filters and page.
#[derive(Args)]
pub(super) struct RunsList {
    /// Only this contact's runs (an id or an email).
    #[arg(long)]
    pub(super) contact: Option<String>,
    /// Only runs of this workflow (its file's name without .toml).
    #[arg(long)]
    pub(super) workflow: Option<String>,
    /// ready, waiting, done, cancelled or failed.
    #[arg(long, value_parser = run_status)]
    pub(super) status: Option<RunStatus>,
    /// Only runs started since: a duration back from now (7d), an RFC 3339 time or a UTC date-time.
    #[arg(long)]
    pub(super) since: Option<String>,
    /// Runs per page.
    #[arg(long)]
    pub(super) limit: Option<i64>,
    /// The next page: the run id that the page before ended with (`next` in --json).
    #[arg(long)]
    pub(super) before: Option<i64>,
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Subcommand)]
pub(super) enum SuppressCommand {
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
pub(super) enum SegmentCommand {
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
pub(super) enum ContactCommand {
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
pub(super) enum OrderCommand {
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
pub(super) struct ContactArgs {
    #[arg(long)]
    pub(super) name: String,
    /// How messages address the contact, e.g. 王总, 张女士, "Dr. Smith" (default: by name).
    #[arg(long, default_value = "")]
    pub(super) salutation: String,
    #[arg(long, default_value = "")]
    pub(super) company: String,
    #[arg(long)]
    pub(super) email: Option<String>,
    #[arg(long)]
    pub(super) phone: Option<String>,
    /// The owner's email address (gets `notify` messages).
    #[arg(long, default_value = "")]
    pub(super) owner: String,
    #[arg(long)]
    pub(super) stage: Option<String>,
    /// Intent grade: A, B or C.
    #[arg(long)]
    pub(super) intent: Option<String>,
    /// Value tier: high, medium or low.
    #[arg(long)]
    pub(super) tier: Option<String>,
    /// A tag; repeat for more.
    #[arg(long = "tag")]
    pub(super) tags: Vec<String>,
    #[arg(long, default_value = "")]
    pub(super) source: String,
    /// IANA time zone, e.g. Asia/Shanghai.
    #[arg(long)]
    pub(super) tz: Option<String>,
    #[arg(long)]
    pub(super) locale: Option<String>,
    /// granted, unknown or withdrawn.
    #[arg(long, value_parser = consent)]
    pub(super) consent: Option<Consent>,
}

#[derive(Subcommand)]
pub(super) enum PluginCommand {
    /// Every loaded plugin: id, version, interface, channels, origin.
    List,
    /// Run one plugin (a folder with plugin.toml and plugin.wasm, or the id of an
    /// installed or built-in one) through the real host on a JSON fixture: renders its
    /// `template`, builds the requests for its `recipient`, reads its `responses`, and
    /// prints the results and the render's time, fuel and peak memory. Sends nothing.
    Test { plugin: String, fixture: PathBuf },
}

#[derive(Subcommand)]
pub(super) enum StageCommand {
    /// Set the stage; workflows triggered by `stage_changed` react.
    Set { contact: String, stage: String },
}

#[derive(Subcommand)]
pub(super) enum FollowUpCommand {
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
pub(super) struct FollowUpArgs {
    pub(super) contact: String,
    /// phone, wechat, email, visit, ...
    #[arg(long)]
    pub(super) channel: String,
    #[arg(long, default_value = "")]
    pub(super) summary: String,
    #[arg(long, default_value = "")]
    pub(super) feedback: String,
    /// New intent grade decided in this contact.
    #[arg(long)]
    pub(super) intent: Option<String>,
    /// The customer's attitude: doubting or accepting (with --understanding: the funnel stage).
    #[arg(long)]
    pub(super) attitude: Option<String>,
    /// How specific the customer's need is: vague or specific.
    #[arg(long)]
    pub(super) understanding: Option<String>,
    /// New lifecycle stage reached in this contact.
    #[arg(long)]
    pub(super) stage: Option<String>,
    /// Next follow-up: a duration (3d), RFC 3339, or a local date-time in the contact's zone.
    #[arg(long)]
    pub(super) next: Option<String>,
    #[arg(long)]
    pub(super) goal: Option<String>,
    /// in_progress, won, needs_follow_up or lost.
    #[arg(long, value_parser = follow_up_result)]
    pub(super) result: Option<FollowUpResult>,
    #[arg(long)]
    pub(super) owner: Option<String>,
    /// When the contact happened (default: now).
    #[arg(long)]
    pub(super) at: Option<String>,
}

#[derive(Subcommand)]
pub(super) enum InquiryCommand {
    /// Record a new inquiry from a contact.
    Add {
        contact: String,
        #[arg(long, default_value = "")]
        message: String,
        #[arg(long, default_value = "")]
        channel: String,
    },
}

fn consent_scope(text: &str) -> Result<ConsentScope, store::Invalid> {
    store::parse_field("scope", text)
}

fn consent(text: &str) -> Result<Consent, store::Invalid> {
    store::parse_field("consent", text)
}

fn run_status(text: &str) -> Result<RunStatus, store::Invalid> {
    store::parse_field("status", text)
}

fn outbox_status(text: &str) -> Result<OutboxStatus, store::Invalid> {
    store::parse_field("status", text)
}

fn follow_up_result(text: &str) -> Result<FollowUpResult, store::Invalid> {
    store::parse_field("result", text)
}
