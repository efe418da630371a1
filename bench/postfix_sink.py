#!/usr/bin/env python3
"""Postfix's smtp-sink with the log that load.py --sink-log reads.

Runs `/usr/sbin/smtp-sink -d DIR/...` (one dump file per message, about 8,800
messages/s on the benchmark machine, far above aiosmtpd's ~300/s) and turns each
dump into a JSON line {"t": <file mtime>, "rcpt": [...]} in --log: the mtime is
when smtp-sink stored the message, so load.py's delivery latency is the sink's
own time, not this watcher's.
Usage: postfix_sink.py PORT --log FILE [--max-seconds N]
Install once: DEBIAN_FRONTEND=noninteractive apt-get install -y postfix (its service is not started).
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--log", required=True)
    ap.add_argument("--max-seconds", type=float, default=3600)
    a = ap.parse_args()
    # The harness stops the sink with SIGTERM: leave through `finally`, which stops smtp-sink too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    dump = tempfile.mkdtemp(prefix="smtp-sink-")
    sink = subprocess.Popen(["/usr/sbin/smtp-sink", "-u", "root", "-d", os.path.join(dump, "m."),
                             f"127.0.0.1:{a.port}", "256"])
    seen = set()
    deadline = time.time() + a.max_seconds
    with open(a.log, "a", encoding="utf-8") as log:
        try:
            while time.time() < deadline and sink.poll() is None:
                for name in os.listdir(dump):
                    if name in seen:
                        continue
                    path = os.path.join(dump, name)
                    try:
                        t = os.stat(path).st_mtime
                        with open(path, "rb") as f:
                            head = f.read(4096).decode("latin-1")
                    except OSError:
                        continue
                    rcpt = [line.split(":", 1)[1].strip().strip("<>").split()[0]
                            for line in head.splitlines() if line.startswith("X-Rcpt-Args:")]
                    if not rcpt:
                        continue  # still being written
                    seen.add(name)
                    log.write(json.dumps({"t": t, "rcpt": rcpt}) + "\n")
                    os.remove(path)
                log.flush()
                time.sleep(0.05)
        finally:
            sink.terminate()


if __name__ == "__main__":
    main()
