#!/usr/bin/env python3
"""The web console's pages on a big database (issue 34): latency and size.

Usage: bench/console.py NUDGE_BIN DATABASE [N]   (DATABASE from bench/preload.sh;
the daemon runs on that file itself, and applies its pending migrations first)
Env: SUPPRESSIONS=100000 adds that many suppressed addresses first (preload makes
none), PORT (8498), ONLY=overview,workflows asks only for the pages so named.

Starts the daemon with an API token, logs in to the console with it, then asks
for each page N times (default 100) one after another, and prints per page p50,
p99 and max latency (ms, from request to last byte, on loopback) and the bytes
of the page. The "later page" is the outbox below the middle id: a keyset page
half-way down the outbox.
"""
import http.cookiejar
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "bench-console-token"


def seed(database, suppressions):
    db = sqlite3.connect(database, isolation_level=None)
    have = db.execute("SELECT COUNT(*) FROM suppressions").fetchone()[0]
    if have < suppressions:
        db.execute("BEGIN")
        db.executemany(
            "INSERT OR IGNORE INTO suppressions (address, channel, reason, detail, created_at) "
            "VALUES (?, '*', 'hard_bounce', '550 no such user', 1)",
            ((f"gone-{n}@preload.test",) for n in range(suppressions)),
        )
        db.execute("COMMIT")
    row = db.execute("SELECT MIN(id), MAX(id) FROM outbox").fetchone()
    workflow = db.execute("SELECT workflow FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0]
    contact = db.execute("SELECT MAX(id) / 2 FROM contacts").fetchone()[0]
    db.close()
    return row, workflow, contact


def main():
    binary, database = sys.argv[1], os.path.abspath(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    port = int(os.environ.get("PORT", "8498"))
    (low, high), workflow, contact = seed(database, int(os.environ.get("SUPPRESSIONS", "100000")))
    work = tempfile.mkdtemp()
    config = os.path.join(work, "nudge.toml")
    with open(config, "w") as f:
        f.write(f"""database = "{database}"
workflows = "{REPO}/bench/workflows"
plugin_cache = "{os.environ.get('BENCH_WORK', os.path.expanduser('~/.cache/nudge-bench'))}/nudge/plugin-cache"
[email]
from = "Bench <bench@nudge.test>"
[smtp]
host = "127.0.0.1"
port = 9
tls = "none"
[api]
bind = "127.0.0.1:{port}"
""")
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, NUDGE_API_TOKEN=TOKEN, NUDGE_LOG="warn")
    log = open(os.path.join(work, "nudge.log"), "w")
    started = time.monotonic()
    daemon = subprocess.Popen([binary, "--config", config, "run"], stdout=log, stderr=log, env=env)
    try:
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1).read()
                break
            except OSError:
                if daemon.poll() is not None:
                    sys.exit(f"the daemon exited: see {log.name}")
                time.sleep(0.05)
        print(f"daemon ready (migrations included) in {time.monotonic() - started:.1f} s")
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        opener.open(f"{base}/console/login", urllib.parse.urlencode({"token": TOKEN}).encode()).read()
        assert any(c.path == "/console" for c in jar), "the login gave no session cookie"
        domain = "preload.test"
        pages = [
            ("overview", "/console"),
            ("outbox, first page", "/console/outbox"),
            ("outbox, later page", f"/console/outbox?before={(low + high) // 2}"),
            ("outbox, by workflow", f"/console/outbox?workflow={urllib.parse.quote(workflow)}"),
            ("outbox, by domain", f"/console/outbox?domain={domain}"),
            ("outbox, by domain, later page", f"/console/outbox?domain={domain}&before={(low + high) // 2}"),
            ("outbox, rare domain (none)", "/console/outbox?domain=nowhere.test"),
            ("outbox, status dead", "/console/outbox?status=dead"),
            ("one message", f"/console/outbox/{high}"),
            ("given-up groups", "/console/dead"),
            ("suppressions", "/console/suppressions"),
            ("suppressions, later page", "/console/suppressions?after=gone-5&after_channel=*"),
            ("contact", f"/console/contacts/{contact}"),
            ("workflows", "/console/workflows"),
            ("reports", "/console/reports"),
        ]
        only = [o for o in os.environ.get("ONLY", "").split(",") if o]
        pages = [(name, path) for name, path in pages if not only or name in only]
        print(f"{'page':32} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'bytes':>9}")
        for name, path in pages:
            times, size = [], 0
            for _ in range(n):
                t = time.perf_counter()
                with opener.open(base + path) as reply:
                    body = reply.read()
                    assert reply.status == 200 and "/console/login" not in reply.url, (path, reply.status)
                times.append((time.perf_counter() - t) * 1000)
                size = len(body)
            times.sort()
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            print(f"{name:32} {statistics.median(times):8.1f} {p99:8.1f} {times[-1]:8.1f} {size:9}", flush=True)
    finally:
        daemon.terminate()
        daemon.wait()


if __name__ == "__main__":
    main()
