//! What `nudge simulate` records in its scratch copy of the database: the
//! messages the engine queued, the runs it held and the messages it left out,
//! step by step, in tables of the copy itself, so that a simulation of any
//! size keeps nothing but its running totals in memory. Never used on the
//! live database: these tables exist only in a simulation's copy.

use serde::Serialize;

use super::super::Conn;

/// The scratch tables, made in a fresh copy before the simulation starts.
const SCHEMA: &str = "
CREATE TABLE sim_templates (workflow TEXT NOT NULL, step INTEGER NOT NULL, template TEXT NOT NULL,
                            PRIMARY KEY (workflow, step));
CREATE TABLE sim_contacts (contact_id INTEGER PRIMARY KEY);
CREATE TABLE sim_messages (
    outbox_id INTEGER PRIMARY KEY, day TEXT NOT NULL, at INTEGER NOT NULL, contact_id INTEGER,
    workflow TEXT NOT NULL, step INTEGER NOT NULL, template TEXT NOT NULL, variant TEXT NOT NULL,
    category TEXT NOT NULL, channel TEXT NOT NULL, recipient TEXT NOT NULL, subject TEXT NOT NULL,
    suppressed TEXT);
CREATE TABLE sim_held (day TEXT NOT NULL, at INTEGER NOT NULL, run_id INTEGER NOT NULL,
                       workflow TEXT NOT NULL, kind TEXT NOT NULL);
CREATE TABLE sim_left_out (day TEXT NOT NULL, at INTEGER NOT NULL, run_id INTEGER NOT NULL,
                           workflow TEXT NOT NULL, step INTEGER NOT NULL, kind TEXT NOT NULL);
";

/// Makes the scratch tables and fills in which template each step sends.
/// Steps are counted from 1 in these tables, as people count a file's `[[steps]]`.
pub(crate) async fn create_simulation_tables(
    conn: &mut Conn,
    templates: &[(String, i64, String)],
) -> anyhow::Result<()> {
    sqlx::raw_sql(SCHEMA).execute(&mut *conn).await?;
    sqlx::query(
        "INSERT INTO sim_templates (workflow, step, template)
         SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?)",
    )
    .bind(serde_json::to_string(templates)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Limits what the simulation reports to these contacts.
pub(crate) async fn add_simulation_contacts(conn: &mut Conn, ids: &[i64]) -> anyhow::Result<()> {
    sqlx::query("INSERT OR IGNORE INTO sim_contacts (contact_id) SELECT value FROM json_each(?)")
        .bind(serde_json::to_string(ids)?)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// How far the simulation has recorded: the newest outbox row, timer and run
/// step it has seen (ids only grow, so each step reads only what is new).
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
pub(crate) struct SimulationCursor {
    pub(crate) outbox: i64,
    pub(crate) timer: i64,
    pub(crate) run_step: i64,
}

/// Where the rows written before the simulation end.
pub(crate) async fn simulation_cursor(conn: &mut Conn) -> anyhow::Result<SimulationCursor> {
    Ok(sqlx::query_as(
        "SELECT (SELECT COALESCE(MAX(id), 0) FROM outbox) AS outbox, (SELECT COALESCE(MAX(id), 0) FROM timers) AS timer,
                (SELECT COALESCE(MAX(rowid), 0) FROM run_steps) AS run_step",
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// Messages queued before the simulation began and not sent yet.
pub(crate) async fn pending_outbox_count(conn: &mut Conn) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = 'pending'")
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Whether `column`'s contact is reported: parameter ?4 says whether `--contacts` was given.
macro_rules! in_scope {
    ($column:literal) => {
        concat!("(?4 = 0 OR ", $column, " IN (SELECT contact_id FROM sim_contacts))")
    };
}

/// What one step of the simulation did, recorded in one round trip: the step's
/// own work is a few rows, so six statements each waiting for the database's
/// thread cost more than the rows did. Parameters: ?1 the day, ?2 ?5 ?6 the
/// cursor (outbox, timer, run step), ?3 ?9 the times the step's work happened
/// between (`Engine::span`), ?4 whether `--contacts` was given, ?7 ?8 the kinds
/// of the steps that send (`Step::kind`).
///
/// The messages queued after the cursor, each with whether delivery would find
/// its recipient suppressed, as its claim does, and marked so, as delivery marks
/// them, since frequency caps leave them out. Then the runs held at the time by a
/// window, quiet hours, a cap, working hours or an A/B delay, and the messages
/// their steps left out (consent, suppression, no address), each by its reason
/// code (`model::Reason`): a held run is found by the timer it got, a left-out
/// message by its step's row, both newer than the cursor, never by scanning
/// `runs` or `run_steps`. Last, the new cursor and when the next timer falls due.
const RECORD_STEP: &str = concat!(
    "INSERT INTO sim_messages
     SELECT o.id, ?1, o.created_at, o.contact_id, COALESCE(r.workflow, ''), o.step,
            COALESCE(t.template, ''), COALESCE(o.variant, ''), o.category, o.channel, o.recipient,
            COALESCE(o.message ->> 'subject', ''),
            (SELECT s.reason FROM suppressions s WHERE s.address = lower(o.recipient)
              AND s.channel IN ('*', o.channel) AND ",
    suppression_covers!("o."),
    " LIMIT 1)
     FROM (SELECT *, CAST(substr(idempotency_key, instr(idempotency_key, '-step') + 5) AS INTEGER) + 1 AS step
           FROM outbox WHERE id > ?2 AND status = 'pending') o
     LEFT JOIN runs r ON r.id = o.run_id
     LEFT JOIN sim_templates t ON t.workflow = r.workflow AND t.step = o.step
     WHERE ",
    in_scope!("o.contact_id"),
    ";
     UPDATE outbox SET status = 'suppressed', last_error = 'simulated: recipient suppressed'
     WHERE id IN (SELECT outbox_id FROM sim_messages WHERE outbox_id > ?2 AND suppressed IS NOT NULL);
     INSERT INTO sim_held (day, at, run_id, workflow, kind)
     SELECT ?1, r.updated_at, r.id, r.workflow, COALESCE(r.reason, 'step_error')
     FROM timers t JOIN runs r ON r.id = t.run_id
     WHERE t.id > ?5 AND t.kind = 'resume_run'
       AND r.status = 'waiting' AND r.waiting_reason IS NOT NULL AND r.updated_at BETWEEN ?3 AND ?9 AND ",
    in_scope!("r.contact_id"),
    ";
     INSERT INTO sim_left_out (day, at, run_id, workflow, step, kind)
     SELECT ?1, s.finished_at, s.run_id, r.workflow, s.step + 1, s.reason
     FROM run_steps s JOIN runs r ON r.id = s.run_id
     WHERE s.rowid > ?6 AND s.kind IN (?7, ?8) AND s.reason IS NOT NULL AND ",
    in_scope!("r.contact_id"),
    ";
     SELECT (SELECT COALESCE(MAX(id), 0) FROM outbox) AS outbox, (SELECT COALESCE(MAX(id), 0) FROM timers) AS timer,
            (SELECT COALESCE(MAX(rowid), 0) FROM run_steps) AS run_step,
            (SELECT MIN(due_at) FROM timers WHERE fired_at IS NULL) AS next_due"
);

/// What recording a step of the simulation returns: the new cursor, and when
/// the next timer falls due (the engine's `next_due`, in the same round trip).
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub(crate) struct RecordedStep {
    #[sqlx(flatten)]
    pub(crate) cursor: SimulationCursor,
    pub(crate) next_due: Option<i64>,
}

/// Records what one step of the simulation did between `span`'s times (on
/// `day`), after `after` (`RECORD_STEP`). Returns the new cursor and the next
/// timer's due time.
pub(crate) async fn record_simulation_step(
    conn: &mut Conn,
    after: SimulationCursor,
    span: (i64, i64),
    day: &str,
    filtered: bool,
) -> anyhow::Result<RecordedStep> {
    Ok(sqlx::query_as(RECORD_STEP)
        .bind(day)
        .bind(after.outbox)
        .bind(span.0)
        .bind(filtered)
        .bind(after.timer)
        .bind(after.run_step)
        .bind("send")
        .bind("notify")
        .bind(span.1)
        .fetch_one(&mut *conn)
        .await?)
}

/// The pending timers due before `before`, earliest first, at most `limit`:
/// each one's due time and contact (a run's timer, its run's).
pub(crate) async fn timers_ahead(conn: &mut Conn, before: i64, limit: i64) -> anyhow::Result<Vec<(i64, Option<i64>)>> {
    Ok(sqlx::query_as(
        "SELECT t.due_at, COALESCE(t.contact_id, r.contact_id) FROM timers t LEFT JOIN runs r ON r.id = t.run_id
         WHERE t.fired_at IS NULL AND t.due_at < ? ORDER BY t.due_at LIMIT ?",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// Messages of a day by workflow, A/B variant and category.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct SimulatedCount {
    pub(crate) day: String,
    pub(crate) workflow: String,
    pub(crate) variant: String,
    pub(crate) category: String,
    /// Messages that would go out.
    pub(crate) messages: i64,
    /// Messages queued that delivery would not send: the recipient is suppressed.
    pub(crate) suppressed: i64,
}

/// The day's totals of the simulation so far, in day, workflow, variant, category order.
pub(crate) async fn simulated_counts(conn: &mut Conn) -> anyhow::Result<Vec<SimulatedCount>> {
    Ok(sqlx::query_as(
        "SELECT day, workflow, variant, category,
                SUM(suppressed IS NULL) AS messages, SUM(suppressed IS NOT NULL) AS suppressed
         FROM sim_messages GROUP BY day, workflow, variant, category ORDER BY day, workflow, variant, category",
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// Runs held or messages left out on a day, by workflow and why.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct SimulatedReason {
    pub(crate) day: String,
    pub(crate) workflow: String,
    pub(crate) kind: String,
    pub(crate) count: i64,
}

/// The runs held (`held`) or the messages left out (`left_out`), by day, workflow and why.
pub(crate) async fn simulated_reasons(conn: &mut Conn, held: bool) -> anyhow::Result<Vec<SimulatedReason>> {
    let table = if held { "sim_held" } else { "sim_left_out" };
    Ok(sqlx::query_as(&format!(
        "SELECT day, workflow, kind, COUNT(*) AS count FROM {table}
         GROUP BY day, workflow, kind ORDER BY day, workflow, kind"
    ))
    .fetch_all(&mut *conn)
    .await?)
}

/// One message the simulation would send.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct SimulatedMessage {
    #[serde(skip)]
    pub(crate) outbox_id: i64,
    pub(crate) day: String,
    pub(crate) at: i64,
    pub(crate) contact_id: Option<i64>,
    pub(crate) workflow: String,
    pub(crate) step: i64,
    pub(crate) template: String,
    pub(crate) variant: String,
    pub(crate) category: String,
    pub(crate) recipient: String,
    pub(crate) subject: String,
    pub(crate) suppressed: Option<String>,
}

/// Up to `limit` simulated messages after outbox row `after`, in outbox order.
pub(crate) async fn simulated_messages(
    conn: &mut Conn,
    after: i64,
    limit: i64,
) -> anyhow::Result<Vec<SimulatedMessage>> {
    Ok(sqlx::query_as(
        "SELECT outbox_id, day, at, contact_id, workflow, step, template, variant, category, recipient, subject,
                suppressed
         FROM sim_messages WHERE outbox_id > ? ORDER BY outbox_id LIMIT ?",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// A message one simulation sends and the other does not (`gained`: the candidate's).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct MessageDifference {
    pub(crate) contact_id: Option<i64>,
    pub(crate) gained: bool,
    pub(crate) day: String,
    pub(crate) at: i64,
    pub(crate) workflow: String,
    pub(crate) step: i64,
    pub(crate) template: String,
    pub(crate) subject: String,
    pub(crate) recipient: String,
}

/// The messages of the simulation attached as `candidate` that this one lacks
/// (gained) and those it has that the candidate lacks (lost), contact by
/// contact, in time order. A message is the same in both when it goes to the
/// same contact and recipient from the same workflow step and template on the same day.
pub(crate) async fn simulated_differences(conn: &mut Conn) -> anyhow::Result<Vec<MessageDifference>> {
    let key = "contact_id, recipient, workflow, step, template, day";
    Ok(sqlx::query_as(&format!(
        "WITH current AS (SELECT {key} FROM main.sim_messages WHERE suppressed IS NULL),
              cand AS (SELECT {key} FROM candidate.sim_messages WHERE suppressed IS NULL),
              gained AS (SELECT * FROM cand EXCEPT SELECT * FROM current),
              lost AS (SELECT * FROM current EXCEPT SELECT * FROM cand)
         SELECT m.contact_id, 1 AS gained, m.day, m.at, m.workflow, m.step, m.template, m.subject, m.recipient
         FROM candidate.sim_messages m JOIN gained g USING ({key}) WHERE m.suppressed IS NULL
         UNION ALL
         SELECT m.contact_id, 0, m.day, m.at, m.workflow, m.step, m.template, m.subject, m.recipient
         FROM main.sim_messages m JOIN lost l USING ({key}) WHERE m.suppressed IS NULL
         ORDER BY 1, 4, 2"
    ))
    .fetch_all(&mut *conn)
    .await?)
}
