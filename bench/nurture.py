#!/usr/bin/env python3
"""Nurture benchmark: a segment pass over N contacts, their timers, their emails.

Starts the real daemon (release build) on a fresh database with N imported
leads and bench/nurture/ as its workflows (segment pass -> wait 30s -> email),
delivering to Postfix's smtp-sink (started here if not running). Reports, as
one JSON line:
  import_s, import_rows_per_s   nudge contact import of the generated CSV
  enrol_s                       the segment pass: every contact looked at, runs created
  first_steps_s                 until every run has done its first step (the wait)
  timer_lateness_ms             p50/p99/max of (fired - due) for the N wait timers,
                                which all fall due within the same few seconds
  outbox_msgs_per_s             N emails from the first to the last accepted by the sink
  rss_mib                       idle before the pass, peak during the pass, peak overall
Usage: bench/nurture.py [--contacts 100000] [--sink-port 2526]
"""
import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def percentile(values, p):
    values = sorted(values)
    if not values:
        return None
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--sink-port", type=int, default=2526)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--perf", action="store_true", help="record the daemon with perf (perf.data in the work folder)")
    args = parser.parse_args()
    work = os.path.join(os.environ.get("BENCH_WORK", os.path.expanduser("~/.cache/nudge-bench")), "nudge",
                        "nurture", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(work)
    binary = os.path.join(REPO, "target", "release", "nudge")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "nudge", "--manifest-path",
                    os.path.join(REPO, "Cargo.toml")], check=True)
    sink = None
    if not port_open(args.sink_port):
        sink = subprocess.Popen(["/usr/sbin/smtp-sink", "-u", "root", f"127.0.0.1:{args.sink_port}", "256"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(50):
            if port_open(args.sink_port):
                break
            time.sleep(0.1)
    shutil.copytree(os.path.join(REPO, "bench", "nurture"), os.path.join(work, "workflows"))
    config = os.path.join(work, "nudge.toml")
    with open(config, "w") as f:
        f.write(f"""database = "nudge.db"
workflows = "workflows"
plugin_cache = "plugin-cache"
[email]
from = "Bench <bench@bench.test>"
[smtp]
host = "127.0.0.1"
port = {args.sink_port}
tls = "none"
[api]
bind = "127.0.0.1:8427"
""")
    csv_path = os.path.join(work, "leads.csv")
    with open(csv_path, "w") as f:
        f.write("name,company,email,stage\n")
        for i in range(args.contacts):
            f.write(f"Lead {i},Company {i % 997},lead{i}@bench.test,lead\n")
    env = dict(os.environ, NUDGE_LOG="warn")
    started = time.time()
    subprocess.run([binary, "--config", config, "contact", "import", csv_path], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    import_s = time.time() - started

    log = open(os.path.join(work, "daemon.log"), "w")
    daemon = subprocess.Popen([binary, "--config", config, "run"], stdout=log, stderr=log, env=env)
    perf = None
    if args.perf:
        perf = subprocess.Popen(["perf", "record", "-g", "-F", "499", "-p", str(daemon.pid), "-o",
                                 os.path.join(work, "perf.data")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = sqlite3.connect(f"file:{os.path.join(work, 'nudge.db')}?mode=ro", uri=True, timeout=30)
    samples = []  # (time, rss, phase)
    deadline = time.time() + args.timeout
    phase = "start"
    sent = 0
    try:
        while time.time() < deadline:
            rss = rss_mib(daemon.pid)
            if rss is None:
                sys.exit(f"the daemon exited; see {work}/daemon.log")
            row = db.execute("SELECT status FROM enrolments ORDER BY id LIMIT 1").fetchone()
            phase = "idle" if row is None else ("enrol" if row[0] == "running" else "after")
            samples.append((time.time(), rss, phase))
            sent = db.execute("SELECT COUNT(*) FROM outbox WHERE status = 'sent'").fetchone()[0]
            if sent >= args.contacts:
                break
            time.sleep(0.2)
    finally:
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        if sink:
            sink.terminate()
    (e_start, e_end, enrolled) = db.execute("SELECT started_at, finished_at, enrolled FROM enrolments").fetchone()
    first_steps_end = db.execute("SELECT MAX(finished_at) FROM run_steps WHERE step = 0").fetchone()[0]
    lateness = [r[0] for r in db.execute(
        "SELECT fired_at - due_at FROM timers WHERE kind = 'resume_run' AND fired_at IS NOT NULL")]
    (first_sent, last_sent, n_sent) = db.execute(
        "SELECT MIN(sent_at), MAX(sent_at), COUNT(*) FROM outbox WHERE status = 'sent'").fetchone()
    rss_all = [s[1] for s in samples]
    result = {
        "contacts": args.contacts,
        "import_s": round(import_s, 2),
        "import_rows_per_s": round(args.contacts / import_s),
        "enrolled": enrolled,
        "enrol_s": round((e_end - e_start) / 1000, 2) if e_end else None,
        "first_steps_s": round((first_steps_end - e_start) / 1000, 2) if first_steps_end else None,
        "timer_lateness_ms": {
            "p50": percentile(lateness, 50), "p99": percentile(lateness, 99), "max": max(lateness or [0]),
            "timers": len(lateness),
        },
        "sent": n_sent,
        "outbox_msgs_per_s": round(n_sent / max(0.001, (last_sent - first_sent) / 1000)) if n_sent else 0,
        "rss_mib": {
            "idle_before_pass": round(statistics.median([s[1] for s in samples if s[2] == "idle"] or [0]), 1),
            "peak_during_pass": round(max([s[1] for s in samples if s[2] == "enrol"] or [0]), 1),
            "peak": round(max(rss_all), 1),
        },
        "work": work,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
