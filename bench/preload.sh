#!/usr/bin/env bash
# A nudge database of millions (issue 36): CONTACTS contacts, each with its
# history, and MESSAGES delivered messages, every row as the daemon writes it.
#
#   bench/preload.sh /tmp/big.db                 # 1M contacts, 5M messages (~10M history/event rows)
#   SCALE=0.1 bench/preload.sh /tmp/big.db       # the same at 1/10, for a quick check
#   CONTACTS=2000 MESSAGES=10000 bench/preload.sh /tmp/small.db
#
# How: the real daemon (bench/workflows, the side-by-side's work) takes one stage
# change and delivers its email to a local sink; that contact's rows -- contact,
# events, history, run, run step, outbox row and delivery -- are the sample. The
# sample is then cloned in SQL, one transaction per chunk, with each clone's ids,
# address, name, key and times of its own. A message is one stage change to
# intent: a stage_changed event, a stage history entry, a run, its step, its
# outbox row (sent) and its delivery, so MESSAGES messages are 2 x MESSAGES
# history/event rows (plus a contact_created event per contact).
# The contacts are pre-NNN@preload.test: the side-by-side's u*-*@bench.test are new to it.
# Needs python3 and /usr/sbin/smtp-sink (apt-get install postfix).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:?usage: bench/preload.sh DATABASE (SCALE=0.1, or CONTACTS= MESSAGES=)}"
SCALE="${SCALE:-1}"
CONTACTS="${CONTACTS:-$(python3 -c "print(int(1000000 * $SCALE))")}"
MESSAGES="${MESSAGES:-$(python3 -c "print(int(5000000 * $SCALE))")}"
CHUNK="${CHUNK:-50000}"
NUDGE_BIN="${NUDGE_BIN:-$REPO/target/release/nudge}"
PORT="${PRELOAD_PORT:-8497}"
SMTP="${PRELOAD_SMTP_PORT:-2597}"
[ -x "$NUDGE_BIN" ] || { echo "no nudge binary at $NUDGE_BIN (set NUDGE_BIN)" >&2; exit 1; }
[ -e "$OUT" ] && { echo "$OUT exists; remove it first" >&2; exit 1; }

WORK="$(mktemp -d)"
PIDS=()
cleanup(){ local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
t0=$(date +%s.%N)

# ---- the sample, from the real daemon
cat > "$WORK/nudge.toml" <<TOML
database = "$(realpath -m "$OUT")"
workflows = "$REPO/bench/workflows"
plugin_cache = "${BENCH_WORK:-$HOME/.cache/nudge-bench}/nudge/plugin-cache"
[email]
from = "Bench <bench@nudge.test>"
[smtp]
host = "127.0.0.1"
port = $SMTP
tls = "none"
[api]
bind = "127.0.0.1:$PORT"
TOML
python3 "$REPO/bench/postfix_sink.py" "$SMTP" --log "$WORK/sink.jsonl" --max-seconds 120 > "$WORK/sink.out" 2>&1 &
PIDS+=($!)
NUDGE_LOG=warn "$NUDGE_BIN" --config "$WORK/nudge.toml" run > "$WORK/nudge.log" 2>&1 &
NUDGE_PID=$!
PIDS+=("$NUDGE_PID")
for _ in $(seq 100); do
  curl -s -o /dev/null -X POST -H 'content-type: application/json' \
    -d '{"name":"Preload Contact 0","company":"Preload Company 0","email":"pre-0@preload.test","stage":"intent"}' \
    "http://127.0.0.1:$PORT/stage-changes" -w '%{http_code}' 2>/dev/null | grep -q 202 && break
  sleep 0.1
done
for _ in $(seq 100); do
  [ "$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT COUNT(*) FROM deliveries WHERE outcome='sent'\").fetchone()[0])" "$OUT" 2>/dev/null)" = 1 ] && break
  sleep 0.1
done
kill "$NUDGE_PID"; wait "$NUDGE_PID" || true
python3 - "$OUT" <<'PY' || { cat "$WORK/nudge.log" >&2; exit 1; }
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
n = db.execute("SELECT COUNT(*) FROM deliveries WHERE outcome = 'sent'").fetchone()[0]
sys.exit(0 if n == 1 else f"the sample was not delivered ({n} deliveries)")
PY
echo "sample delivered by the daemon in $(python3 -c "import time,sys; print(f'{time.time()-float(sys.argv[1]):.1f}')" "$t0") s" >&2

# ---- the clones
python3 - "$OUT" "$CONTACTS" "$MESSAGES" "$CHUNK" <<'PY'
import sqlite3, sys, time
path, contacts, messages, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode = WAL")
db.execute("PRAGMA synchronous = OFF")
db.execute("PRAGMA cache_size = -262144")
row = lambda sql: db.execute(sql).fetchone()
cols = lambda t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")]

# Every table the sample wrote to, and nothing else: a table this script does not
# know would be left without clones, so stop instead.
known = {"contacts", "events", "contact_history", "runs", "run_steps", "outbox", "deliveries",
         "workflow_sets", "secrets", "store_checks", "virtual_clock", "_sqlx_migrations",
         "retention_pass", "classification_pass", "timers"}  # one row each, not per contact
for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
    if t not in known and row(f"SELECT COUNT(*) FROM {t}")[0]:
        sys.exit(f"the sample wrote to {t}, which bench/preload.sh does not clone")
assert row("SELECT COUNT(*) FROM contacts")[0] == 1 and row("SELECT COUNT(*) FROM runs")[0] == 1
(cid,) = row("SELECT id FROM contacts")
created_ev = row("SELECT id FROM events WHERE kind = 'contact_created'")
stage_ev = row("SELECT id FROM events WHERE kind = 'stage_changed'")[0]
(run_id,) = row("SELECT id FROM runs")
(ob_id,) = row("SELECT id FROM outbox")
now = row("SELECT created_at FROM contacts")[0]
key = row("SELECT idempotency_key FROM outbox")[0]
assert key == f"run{run_id}-step0-contact{cid}", key

# Each clone k is at time base - (k's age): the history spans ~3 years before the sample.
SPAN_MS = 3 * 365 * 86400 * 1000
def clone(table, where, subst, k_expr, count, first_k=1):
    """INSERT one row per k in [first_k, first_k+count) copied from the sample row
    `where`, columns in `subst` computed (SQL over k and the sample's columns s.*)."""
    names = cols(table)
    sel = ", ".join(subst.get(c, f"s.{c}") for c in names)
    sql = (f"INSERT INTO {table} ({', '.join(names)}) SELECT {sel} FROM {table} AS s, "
           f"(SELECT value AS k FROM temp.n) WHERE s.{where}")
    done = 0
    while done < count:
        m = min(chunk, count - done)
        db.execute("BEGIN")
        db.execute("DELETE FROM temp.n")
        db.executemany("INSERT INTO temp.n (value) VALUES (?)", ((first_k + done + j,) for j in range(m)))
        db.execute(sql)
        db.execute("COMMIT")
        done += m

db.execute("CREATE TEMP TABLE n (value INTEGER PRIMARY KEY)")
t = time.time()
C = contacts - 1  # the sample is contact 0
# Contacts: ids after the sample's, created over the span, spread over four owners;
# every fourth has a follow-up date and its timer (a tenth of them overdue, their
# timers fired, the rest in the next five weeks).
who = "replace(replace(s.{c}, 'pre-0@', 'pre-' || k || '@'), 'Contact 0', 'Contact ' || k)"
when = f"(s.{{c}} - {SPAN_MS} + k * {SPAN_MS} / {max(contacts, 1)})"
clone("contacts", f"id = {cid}", {
    "id": f"{cid} + k", "name": who.format(c="name"), "email": who.format(c="email"),
    "company": "replace(s.company, 'Company 0', 'Company ' || k)",
    "owner": "'rep' || (k % 4) || '@preload.test'",
    "next_follow_up_at": f"CASE WHEN k % 4 = 0 THEN {now} + 86400000 * (k % 40 - 3) END",
    "created_at": when.format(c="created_at"), "updated_at": when.format(c="updated_at"),
}, "k", C)
if created_ev:
    e0 = row("SELECT MAX(id) FROM events")[0]
    clone("events", f"id = {created_ev[0]}", {
        "id": f"{e0} + k", "contact_id": f"{cid} + k",
        "payload": who.format(c="payload"),
        "occurred_at": when.format(c="occurred_at"), "processed_at": when.format(c="processed_at"),
    }, "k", C)
db.execute("BEGIN")
db.execute(f"""INSERT INTO timers (due_at, kind, contact_id, fired_at)
    SELECT next_follow_up_at, 'follow_up_due', id, CASE WHEN next_follow_up_at <= {now} THEN next_follow_up_at END
    FROM contacts WHERE next_follow_up_at IS NOT NULL ORDER BY id""")
db.execute("COMMIT")
print(f"  {contacts} contacts in {time.time() - t:.1f} s", file=sys.stderr)

# Messages: message k is to contact (k % contacts), at its own time over the span.
t = time.time()
M = messages - 1
ev0 = row("SELECT MAX(id) FROM events")[0]
h0 = row("SELECT MAX(id) FROM contact_history")[0]
d0 = row("SELECT MAX(id) FROM deliveries")[0]
to = f"{cid} + (k % {max(contacts, 1)})"
addr = ("replace(replace(replace(replace(s.{c}, 'pre-0@', 'pre-' || (k % NC) || '@'), 'Contact 0', 'Contact ' || (k % NC)),"
        " 'Company 0', 'Company ' || (k % NC)), 'KEY', 'run' || (RUN + k) || '-step0-contact' || (CID + k % NC))")
addr = addr.replace("NC", str(max(contacts, 1))).replace("KEY", key).replace("RUN", str(run_id)).replace("CID", str(cid))
mwhen = f"(s.{{c}} - {SPAN_MS} + k * {SPAN_MS} / {max(messages, 1)})"
clone("events", f"id = {stage_ev}", {
    "id": f"{ev0} + k", "contact_id": to, "payload": addr.format(c="payload"),
    "occurred_at": mwhen.format(c="occurred_at"), "processed_at": mwhen.format(c="processed_at"),
}, "k", M)
clone("contact_history", f"id = (SELECT MIN(id) FROM contact_history WHERE field = 'stage')", {
    "id": f"{h0} + k", "contact_id": to, "at": mwhen.format(c="at"),
}, "k", M)
clone("runs", f"id = {run_id}", {
    "id": f"{run_id} + k", "contact_id": to, "event_id": f"{ev0} + k", "context": addr.format(c="context"),
    "started_at": mwhen.format(c="started_at"), "updated_at": mwhen.format(c="updated_at"),
}, "k", M)
clone("run_steps", f"run_id = {run_id}", {
    "run_id": f"{run_id} + k", "detail": addr.format(c="detail"),
    "finished_at": mwhen.format(c="finished_at"),
}, "k", M)
clone("outbox", f"id = {ob_id}", {
    "id": f"{ob_id} + k", "run_id": f"{run_id} + k", "contact_id": to,
    "idempotency_key": addr.format(c="idempotency_key"), "message_id": addr.format(c="message_id"),
    "recipient": addr.format(c="recipient"), "message": addr.format(c="message"),
    "next_attempt_at": mwhen.format(c="next_attempt_at"), "created_at": mwhen.format(c="created_at"),
    "sent_at": mwhen.format(c="sent_at"),
}, "k", M)
clone("deliveries", f"outbox_id = {ob_id}", {
    "id": f"{d0} + k", "outbox_id": f"{ob_id} + k",
    "started_at": mwhen.format(c="started_at"), "finished_at": mwhen.format(c="finished_at"),
}, "k", M)
print(f"  {messages} messages (events, history, runs, steps, outbox, deliveries) in {time.time() - t:.1f} s",
      file=sys.stderr)
for tname in ["contacts", "events", "contact_history", "runs", "run_steps", "outbox", "deliveries"]:
    print(f"  {tname}: {row(f'SELECT COUNT(*) FROM {tname}')[0]} rows", file=sys.stderr)
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
PY
secs=$(python3 -c "import time,sys; print(f'{time.time()-float(sys.argv[1]):.1f}')" "$t0")
echo "preloaded $OUT: $CONTACTS contacts, $MESSAGES delivered messages in $secs s, $(du -h "$OUT" | cut -f1) on disk"
