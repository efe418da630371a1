#!/usr/bin/env bash
# Benchmark of `nudge simulate` (issue 32): a database of N contacts made with the
# importers, then `nudge simulate --days DAYS` timed, with its peak RSS.
#
#   bench/simulate.sh                        # 100000 contacts, 30 days, the release build
#   N=2000 NUDGE_BIN=target/debug/nudge bench/simulate.sh
#
# The data: N contacts imported (their contact_created events not yet processed,
# so the simulation starts every first-contact run), a third of them at later
# stages (intent, inquiry, customer), one in ten with an order (first-order and
# after-sale runs, the daily classification), and a third with a follow-up falling
# due at a time of its own over the period (overdue reminders all month long).
# Target (BENCHMARKS.md): 100k contacts over 30 days in <= 60 s and <= 200 MiB.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${N:-100000}"
DAYS="${DAYS:-30}"
NUDGE_BIN="${NUDGE_BIN:-$REPO/target/release/nudge}"
START="${START:-2026-11-23T01:00:00Z}"
[ -x "$NUDGE_BIN" ] || { echo "no nudge binary at $NUDGE_BIN (cargo build --release, or set NUDGE_BIN)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (Debian: apt-get install time)" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp -r "$REPO/workflows" "$WORK/workflows"
cat > "$WORK/nudge.toml" <<TOML
database = "$WORK/nudge.db"
workflows = "workflows"
clock = "virtual"
[email]
from = "Sales <sales@nudge.test>"
[api]
bind = "127.0.0.1:0"
TOML
nudge(){ NUDGE_LOG="${NUDGE_LOG:-warn}" "$NUDGE_BIN" --config "$WORK/nudge.toml" "$@"; }
secs(){ python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(date +%s.%N)"; }

nudge clock --set "$START" >/dev/null 2>&1
# A warm plugin cache, as the daemon has after its first start: compiling is not simulating.
nudge check >/dev/null
python3 - "$N" "$WORK" <<'PY'
import csv, sys
n, work = int(sys.argv[1]), sys.argv[2]
owners = ["senior.rep1@example.com", "senior.rep2@example.com", "key-accounts@example.com", "director@example.com"]
stages = ["lead"] * 6 + ["intent", "inquiry", "first_order"]
with open(f"{work}/contacts.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["name", "company", "email", "owner", "stage", "intent_grade", "locale", "time_zone"])
    for i in range(n):
        w.writerow([f"Contact {i}", f"Company {i % 5000}", f"c{i}@bench.test", owners[i % len(owners)],
                    stages[i % len(stages)], "ABC"[i % 3], ["en", "zh"][i % 2],
                    ["Asia/Shanghai", "Europe/Berlin", "America/New_York"][i % 3]])
with open(f"{work}/orders.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "contact", "amount", "currency", "date", "items"])
    for i in range(0, n, 10):
        w.writerow([f"o-{i}", f"c{i}@bench.test", str(500 + i % 20000), "CNY", "2026-11-20", "samples"])
PY
t=$(date +%s.%N)
nudge contact import --strict "$WORK/contacts.csv" >"$WORK/import.log" 2>&1 || { cat "$WORK/import.log" >&2; exit 1; }
nudge order import --strict "$WORK/orders.csv" >>"$WORK/import.log" 2>&1 || { cat "$WORK/import.log" >&2; exit 1; }
# A third of the contacts have a follow-up due at a moment of its own in the period.
sqlite3 "$WORK/nudge.db" <<SQL
UPDATE contacts SET next_follow_up_at = (SELECT now_ms FROM virtual_clock) + 60000 + (id * 7919 % ($DAYS * 1440)) * 60000
 WHERE id % 3 = 0;
INSERT INTO timers (due_at, kind, contact_id) SELECT next_follow_up_at, 'follow_up_due', id FROM contacts
 WHERE next_follow_up_at IS NOT NULL;
SQL
echo "database: $N contacts, $((N / 10)) orders, made in $(secs "$t") s ($(du -h "$WORK/nudge.db" | cut -f1))"

/usr/bin/time -v -o "$WORK/time.txt" "$NUDGE_BIN" --config "$WORK/nudge.toml" simulate --days "$DAYS" --json \
  > "$WORK/simulation.json" 2> "$WORK/simulate.log" || { cat "$WORK/simulate.log" "$WORK/time.txt" >&2; exit 1; }
python3 - "$WORK" "$N" "$DAYS" <<'PY'
import json, re, sys
work, n, days = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
time = open(f"{work}/time.txt").read()
wall = re.search(r"Elapsed \(wall clock\) time.*: (.*)", time).group(1)
parts = [float(p) for p in wall.split(":")]
seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
rss_mib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", time).group(1)) / 1024
totals = json.load(open(f"{work}/simulation.json"))["current"]["totals"]
print(f"nudge simulate --days {days}, {n} contacts: {seconds:.1f} s, peak RSS {rss_mib:.0f} MiB")
print(f"  {totals['messages']} messages, {totals['suppressed']} suppressed, {totals['held']} held, "
      f"{totals['left_out']} left out")
print(f"  target: <= 60 s and <= 200 MiB for 100000 contacts over 30 days (release build)")
PY
