#!/usr/bin/env bash
# Bounded benchmark of nudge on loopback, on the same work and with the same load,
# sink and measurements as the n8n peer: this is ../shared/bench/n8n/run_bench.sh
# with its target_* functions replaced by nudge's (as that script invites).
#
#   bench/run_nudge.sh                  # 3 runs x 2000 requests, concurrency 16
#   RUNS=1 COUNT=300 CONC=8 bench/run_nudge.sh
#   NUDGE_BIN=/tmp/other/nudge bench/run_nudge.sh   # measure that build instead
#   PRELOAD=/tmp/big.db bench/run_nudge.sh         # on a copy of a preloaded database (bench/preload.sh)
#
# Per run: fresh database -> start nudge -> measure start-up (HTTP ready, and
# the first event accepted) -> idle RSS after IDLE_SETTLE_S -> load.py (COUNT
# POSTs to /stage-changes, CONC connections, checks every email arrived at the
# sink) -> stop nudge. The SMTP sink (shared/bench/smtp_sink.py) runs once for all runs.
# Output: $BENCH_WORK/nudge/results/<stamp>-c<CONC>-n<COUNT>/{runs.jsonl,summary.json,*.log}
# Needs ../shared/bench/n8n/setup.sh to have made the venv with aiosmtpd.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/../shared/bench/n8n/env.sh"
NUDGE_WORK="$BENCH_WORK/nudge"
NUDGE_PORT="${NUDGE_PORT:-8426}"
mkdir -p "$NUDGE_WORK"
cd "$NUDGE_WORK"

RUNS="${RUNS:-3}"
COUNT="${COUNT:-2000}"
CONC="${CONC:-16}"
VARIANT="${VARIANT:-default}"
IDLE_SETTLE_S="${IDLE_SETTLE_S:-10}"
MAX_LOAD_S="${MAX_LOAD_S:-400}"       # hard bound on one load phase
START_TIMEOUT_S="${START_TIMEOUT_S:-120}"
DEFAULT_BODY='{"name":"Ada Lovelace {i}","company":"Analytical Engines {i} Ltd","email":"u{i}-{run}@bench.test","stage":"intent"}'
BODY="${BODY:-$DEFAULT_BODY}"
STAMP="$(date +%Y%m%d-%H%M%S)"
OUT="$NUDGE_WORK/results/$STAMP-$VARIANT-c$CONC-n$COUNT"
mkdir -p "$OUT"
log(){ printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" | tee -a "$OUT/bench.log" >&2; }
now(){ date +%s.%N; }
since(){ python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 3))" "$1" "$(now)"; }

STARTED_PIDS=()
stop_pid(){  # stop_pid PID [grace_s]: TERM, wait, then KILL; only PIDs this script started
  local pid=$1 grace=${2:-30} i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "pid $pid ignored SIGTERM for ${grace}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup(){ local p; for p in "${STARTED_PIDS[@]}"; do stop_pid "$p" 20; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy(){ python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.5); sys.exit(0 if s.connect_ex(('127.0.0.1', int(sys.argv[1])))==0 else 1)" "$1"; }

# ---------------------------------------------------------------- target: nudge
target_prepare(){
  # NUDGE_BIN=path measures that binary (an A/B of two builds); by default the release build.
  if [ -z "${NUDGE_BIN:-}" ]; then
    cargo build --release -q -p nudge --manifest-path "$REPO/Cargo.toml"
    NUDGE_BIN="$REPO/target/release/nudge"
  fi
  VERSIONS="{\"nudge\":\"$("$NUDGE_BIN" --version | cut -d' ' -f2)\",\"rustc\":\"$(rustc --version | cut -d' ' -f2)\"}"
  TARGET_URL="http://127.0.0.1:$NUDGE_PORT/stage-changes"
  READY_URL="http://127.0.0.1:$NUDGE_PORT/health"
  # Warm the plugin cache once, as a deployed daemon has it after its first start.
  RUN_DIR="$NUDGE_WORK/run"; rm -rf "$RUN_DIR"; mkdir -p "$RUN_DIR"
  cat > "$RUN_DIR/nudge.toml" <<TOML
database = "nudge.db"
workflows = "$REPO/bench/workflows"
plugin_cache = "$NUDGE_WORK/plugin-cache"
[email]
from = "Bench <bench@nudge.test>"
[smtp]
host = "127.0.0.1"
port = $SMTP_PORT
tls = "none"
[api]
bind = "127.0.0.1:$NUDGE_PORT"
# Admission control (README): MAX_UNSENT=0 measures without it.
max_unsent = ${MAX_UNSENT:-32}
max_hold_ms = ${MAX_HOLD_MS:-500}
[delivery]
# A local sink takes many sessions. 96 was chosen (2026-11-23) when each send also
# waited ~40 ms for the sink's delayed ACK (32 -> 96: ~510 -> ~825/s); TCP_NODELAY has
# removed that wait since, and the setting is kept so that runs stay comparable.
concurrency = ${DELIVERY_CONCURRENCY:-96}
TOML
  "$NUDGE_BIN" --config "$RUN_DIR/nudge.toml" check > /dev/null
}
target_reset(){  # before the start-up clock starts
  rm -f "$RUN_DIR"/nudge.db*                 # fresh DB every run
  # PRELOAD=file.db (bench/preload.sh): a copy of that database instead, years of data in it.
  # The copy is synced before the start, or the daemon's first fsync waits behind its writeback.
  # PRELOAD_COPY=0: that file itself (no room for a copy of 6 GB); each run adds its rows to it.
  if [ -n "${PRELOAD:-}" ] && [ "${PRELOAD_COPY:-1}" = 0 ]; then ln -s "$(realpath "$PRELOAD")" "$RUN_DIR/nudge.db"
  elif [ -n "${PRELOAD:-}" ]; then cp --reflink=auto "$PRELOAD" "$RUN_DIR/nudge.db"; sync "$RUN_DIR/nudge.db"; fi
}
target_start(){  # $1 = run number; sets TARGET_PID
  NUDGE_LOG="${NUDGE_LOG:-warn}" "$NUDGE_BIN" --config "$RUN_DIR/nudge.toml" run > "$OUT/nudge-run$1.log" 2>&1 &
  TARGET_PID=$!
  STARTED_PIDS+=("$TARGET_PID")
}
target_stop(){ stop_pid "$TARGET_PID" 30; }
# ----------------------------------------------------------------------------

target_prepare
for p in "$SMTP_PORT" "$NUDGE_PORT"; do
  if port_busy "$p"; then echo "port $p is already in use on 127.0.0.1; stop that first" >&2; exit 3; fi
done

SINK_LOG="$OUT/sink.jsonl"
# SINK=postfix: Postfix's smtp-sink (~8,800 messages/s) instead of aiosmtpd (~300/s).
SINK_SCRIPT="$REPO/../shared/bench/smtp_sink.py"
[ "${SINK:-aiosmtpd}" = postfix ] && SINK_SCRIPT="$REPO/bench/postfix_sink.py"
"$PY" "$SINK_SCRIPT" "$SMTP_PORT" --log "$SINK_LOG" \
      --max-seconds $(( RUNS * (MAX_LOAD_S + START_TIMEOUT_S + 120) )) > "$OUT/sink.out" 2>&1 &
SINK_PID=$!
STARTED_PIDS+=("$SINK_PID")
for i in $(seq 50); do port_busy "$SMTP_PORT" && break; sleep 0.1; done
port_busy "$SMTP_PORT" || { echo "SMTP sink did not start" >&2; cat "$OUT/sink.out" >&2; exit 4; }
log "sink pid $SINK_PID on :$SMTP_PORT; target $TARGET_URL; $RUNS run(s) x $COUNT req, conc $CONC, variant $VARIANT"

for r in $(seq 1 "$RUNS"); do
  target_reset
  t0=$(now)
  target_start "$r"
  # start-up: (a) HTTP server answers readiness, (b) the webhook itself answers 200
  http_ready=""; hook_ready=""
  deadline=$(( $(date +%s) + START_TIMEOUT_S ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    kill -0 "$TARGET_PID" 2>/dev/null || { log "target died during start-up (see $OUT/nudge-run$r.log)"; exit 5; }
    if [ -z "$http_ready" ] && [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$READY_URL")" = 200 ]; then
      http_ready=$(since "$t0")
    fi
    if [ -n "$http_ready" ]; then
      code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
             -d "{\"name\":\"Warm Up\",\"company\":\"Warm\",\"email\":\"warmup-$r-$STAMP@bench.test\",\"stage\":\"intent\"}" "$TARGET_URL" || true)
      if [ "$code" = 202 ]; then hook_ready=$(since "$t0"); break; fi
    fi
    sleep 0.1
  done
  [ -n "$hook_ready" ] || { log "webhook not ready within ${START_TIMEOUT_S}s"; exit 6; }
  log "run $r: pid $TARGET_PID http ready ${http_ready}s, webhook ready ${hook_ready}s; idling ${IDLE_SETTLE_S}s"
  sleep "$IDLE_SETTLE_S"
  idle=$(python3 "$REPO/../shared/bench/procstat.py" "$TARGET_PID")
  sink_before=$(python3 "$REPO/../shared/bench/procstat.py" "$SINK_PID")

  set +e
  python3 "$REPO/../shared/bench/load.py" --url "$TARGET_URL" --body "$BODY" --count "$COUNT" --concurrency "$CONC" \
      --max-seconds "$MAX_LOAD_S" --timeout-s 60 --rss-pid "$TARGET_PID" --sink-log "$SINK_LOG" --sink-wait 60 \
      --run-id "r$r-$STAMP" --label "nudge run $r" > "$OUT/load-run$r.json"
  load_rc=$?
  set -e
  after=$(python3 "$REPO/../shared/bench/procstat.py" "$TARGET_PID" || echo '{}')
  sink_after=$(python3 "$REPO/../shared/bench/procstat.py" "$SINK_PID" || echo '{}')
  t_stop=$(now); target_stop; shutdown_s=$(since "$t_stop")

  python3 - "$OUT/load-run$r.json" <<PY >> "$OUT/runs.jsonl"
import json, sys
load = json.load(open(sys.argv[1]))
idle, after = json.loads('''$idle'''), json.loads('''$after''')
sb, sa = json.loads('''$sink_before'''), json.loads('''$sink_after''')
ok = load.get("ok") or 0
cpu = (after.get("tree_cpu_s", 0) - idle.get("tree_cpu_s", 0)) if after else None
emails = (load.get("sink") or {}).get("received") or 0
scpu = (sa.get("main_cpu_s", 0) - sb.get("main_cpu_s", 0)) if sa else None
print(json.dumps({
  "target": "nudge", "variant": "$VARIANT", "run": $r, "count": $COUNT, "concurrency": $CONC,
  "versions": json.loads('$VERSIONS'), "load_rc": $load_rc,
  "startup_http_ready_s": $http_ready, "startup_webhook_ready_s": $hook_ready,
  "idle": idle, "after_load": after, "shutdown_s": $shutdown_s,
  "cpu_s_during_load": round(cpu, 2) if cpu is not None else None,
  "cpu_ms_per_request": round(1000 * cpu / ok, 2) if cpu and ok else None,
  "sink_cpu_ms_per_email": round(1000 * scpu / emails, 2) if scpu and emails else None,
  "load": load}, separators=(",", ":")))
PY
  log "run $r: $(python3 -c "
import json,sys; d=json.loads(open(sys.argv[1]).readlines()[-1]); l=d['load']; s=l.get('sink') or {}
print(f\"rps={l['rps']} p50={l['lat_ms']['p50'] if l['lat_ms'] else None}ms p99={l['lat_ms']['p99'] if l['lat_ms'] else None}ms ok={l['ok']} err={l['errors']} emails={s.get('received')}/{s.get('expected')} peakRSS={l['rss']['tree_peak_kib']//1024}MiB cpu/req={d['cpu_ms_per_request']}ms\")" "$OUT/runs.jsonl")"
done

stop_pid "$SINK_PID" 10
python3 "$REPO/../shared/bench/summarize.py" "$OUT/runs.jsonl" | tee "$OUT/summary.json"
log "results in $OUT"
