#!/usr/bin/env python3
"""Start-up of nudge to its first event accepted, without the polling of the
side-by-side harness (which, like the peer's, looks every 0.1 s and stamps each
step with a python3 process, adding up to ~0.2 s).

Usage: bench/startup.py NUDGE_BIN CONFIG [RUNS]   (CONFIG as run_nudge.sh writes it,
with a warm plugin cache; its database is deleted before each run)
Prints one JSON line: start -> HTTP ready and start -> first POST /stage-changes
answered 202, each polled every 5 ms, per run and the median.
"""
import json
import os
import statistics
import subprocess
import sys
import time
import tomllib
import urllib.request


def main():
    binary, config = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    with open(config, "rb") as f:
        settings = tomllib.load(f)
    base = f"http://{settings['api']['bind']}"
    database = os.path.join(os.path.dirname(os.path.abspath(config)), settings["database"])
    ready, accepted = [], []
    for run in range(runs):
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(database + suffix):
                os.remove(database + suffix)
        t0 = time.monotonic()
        daemon = subprocess.Popen([binary, "--config", config, "run"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    urllib.request.urlopen(f"{base}/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.005)
            ready.append(time.monotonic() - t0)
            body = json.dumps({"name": "Warm Up", "company": "Warm", "email": f"startup-{run}@bench.test", "stage": "intent"})
            request = urllib.request.Request(f"{base}/stage-changes", data=body.encode(), headers={"content-type": "application/json"})
            status = urllib.request.urlopen(request, timeout=5).status
            assert status == 202, status
            accepted.append(time.monotonic() - t0)
        finally:
            daemon.terminate()
            daemon.wait()
    print(json.dumps({
        "http_ready_s": [round(t, 3) for t in ready],
        "first_event_accepted_s": [round(t, 3) for t in accepted],
        "median_first_event_accepted_s": round(statistics.median(accepted), 3),
    }))


if __name__ == "__main__":
    main()
