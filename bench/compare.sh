#!/usr/bin/env bash
# nudge and n8n on the same work, same load, same sink, same machine, in one
# invocation: ROUNDS rounds, each running n8n once and nudge once, alternately
# (so drift in the machine hits both), then medians per system and the ratios.
#
#   bench/compare.sh                        # 3 rounds x 2000 requests, concurrency 16
#   ROUNDS=1 COUNT=500 CONC=8 bench/compare.sh
#   BUILDS="before=/tmp/a/nudge after=/tmp/b/nudge" bench/compare.sh
#                                           # two builds of nudge, each once a round
#   PRELOAD=/tmp/big.db bench/compare.sh    # nudge on a copy of a preloaded database
#                                           # (bench/preload.sh) each run; n8n as ever
#   PEER=none BUILDS="before=... after=..." bench/compare.sh
#                                           # the builds only, each against the first
#
# Needs ../shared/bench/n8n/setup.sh once (installs n8n, ~15 min), unless PEER=none.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="$REPO/../shared/bench"
ROUNDS="${ROUNDS:-3}"
export COUNT="${COUNT:-2000}" CONC="${CONC:-16}" RUNS=1
OUT="${BENCH_WORK:-$HOME/.cache/nudge-bench}/compare/$(date +%Y%m%d-%H%M%S)-c$CONC-n$COUNT"
mkdir -p "$OUT"
# NAME=BINARY pairs; by default the release build of this checkout, as "nudge".
BUILDS="${BUILDS:-nudge=}"
# PEER=none: no n8n; each build is compared with the first one instead.
PEER="${PEER:-n8n}"
[ "$PEER" = none ] && PEER="${BUILDS%%=*}"
: > "$OUT/n8n.jsonl"
for build in $BUILDS; do : > "$OUT/${build%%=*}.jsonl"; done

run(){  # run NAME SCRIPT: one run, its runs.jsonl line appended to $OUT/NAME.jsonl
  local name=$1 script=$2 err="$OUT/$1-$3.err"
  "$script" > /dev/null 2> "$err" || { echo "$name run failed, see $err" >&2; tail -5 "$err" >&2; exit 1; }
  local dir; dir=$(sed -n 's/.*results in //p' "$err" | tail -1)
  cat "$dir/runs.jsonl" >> "$OUT/$name.jsonl"
  echo "round $3: $name $(tail -1 "$err" | sed 's/.*\] //')" >&2
}

for r in $(seq "$ROUNDS"); do
  [ "$PEER" = n8n ] && run n8n "$PEERS/n8n/run_bench.sh" "$r"
  for build in $BUILDS; do
    NUDGE_BIN="${build#*=}" run "${build%%=*}" "$REPO/bench/run_nudge.sh" "$r"
  done
done

for name in $( [ "$PEER" = n8n ] && echo n8n) $(for build in $BUILDS; do echo "${build%%=*}"; done); do
  python3 "$PEERS/summarize.py" "$OUT/$name.jsonl" > "$OUT/$name-summary.json"
done
for build in $BUILDS; do
[ "${build%%=*}" = "$PEER" ] && continue
python3 - "$OUT" "${build%%=*}" "$PEER" <<'PY'
import json, sys
out, name, peer = sys.argv[1], sys.argv[2], sys.argv[3]
n8n = json.load(open(f"{out}/{peer}-summary.json"))
nudge = json.load(open(f"{out}/{name}-summary.json"))
def med(s, k):
    v = s.get(k)
    return v.get("median") if isinstance(v, dict) else v
rows = [
    ("requests/s", "rps", "higher"),
    ("request p50 ms", "lat_p50_ms", "lower"),
    ("request p99 ms", "lat_p99_ms", "lower"),
    ("delivery p50 ms", "delivery_p50_ms", "lower"),
    ("delivery p99 ms", "delivery_p99_ms", "lower"),
    ("emails/s at the sink", "emails_per_s", "higher"),
    ("idle RSS MiB (tree)", "idle_rss_tree_mib", "lower"),
    ("peak RSS MiB (tree)", "peak_rss_tree_mib", "lower"),
    ("start-up to first event s", "startup_webhook_ready_s", "lower"),
    ("CPU ms per request", "cpu_ms_per_request", "lower"),
]
print(f"{'median of runs':<28}{peer:>12}{name:>12}{name + ' advantage':>18}")
for label, key, better in rows:
    a, b = med(n8n, key), med(nudge, key)
    ratio = ""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a and b:
        ratio = f"{(b / a if better == 'higher' else a / b):.1f}x"
    print(f"{label:<28}{str(a):>12}{str(b):>12}{ratio:>18}")
print()
PY
done
echo "runs: $OUT"
