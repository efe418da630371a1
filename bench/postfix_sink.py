#!/usr/bin/env python3
"""Postfix's smtp-sink with the log that load.py --sink-log reads.

Runs `/usr/sbin/smtp-sink -d DIR/...` (one dump file per message, about 8,800
messages/s on the benchmark machine, far above aiosmtpd's ~300/s) and turns each
dump into a JSON line {"t": <stored at>, "rcpt": [...]} in --log.

"Stored at" is when this watcher learnt, through inotify, that smtp-sink closed
the dump file: at or just after the real moment, never before. (The file's mtime
is not used: the kernel stamps new files from its coarse clock, up to a tick
-- 4 ms here -- before the write, which made deliveries look faster than they were.)
Usage: postfix_sink.py PORT --log FILE [--max-seconds N]
Install once: DEBIAN_FRONTEND=noninteractive apt-get install -y postfix (its service is not started).
"""
import argparse
import ctypes
import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time

IN_CLOSE_WRITE = 0x00000008
EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


def watch(directory):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK)
    if fd < 0 or libc.inotify_add_watch(fd, directory.encode(), IN_CLOSE_WRITE) < 0:
        sys.exit(f"inotify on {directory}: {os.strerror(ctypes.get_errno())}")
    return fd


def closed_files(fd, timeout):
    """Names of the files closed after writing since the last call, with when we heard."""
    if not select.select([fd], [], [], timeout)[0]:
        return []
    out = []
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return out
        heard = time.time()
        at = 0
        while at < len(data):
            _, mask, _, length = EVENT.unpack_from(data, at)
            name = data[at + EVENT.size:at + EVENT.size + length].rstrip(b"\0").decode()
            at += EVENT.size + length
            if mask & IN_CLOSE_WRITE:
                out.append((name, heard))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--log", required=True)
    ap.add_argument("--max-seconds", type=float, default=3600)
    a = ap.parse_args()
    # The harness stops the sink with SIGTERM: leave through `finally`, which stops smtp-sink too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    dump = tempfile.mkdtemp(prefix="smtp-sink-")
    events = watch(dump)
    sink = subprocess.Popen(["/usr/sbin/smtp-sink", "-u", "root", "-d", os.path.join(dump, "m."),
                             f"127.0.0.1:{a.port}", "256"])
    deadline = time.time() + a.max_seconds
    with open(a.log, "a", encoding="utf-8") as log:
        try:
            while time.time() < deadline and sink.poll() is None:
                for name, heard in closed_files(events, 0.5):
                    path = os.path.join(dump, name)
                    try:
                        with open(path, "rb") as f:
                            head = f.read(4096).decode("latin-1")
                        os.remove(path)
                    except OSError:
                        continue
                    rcpt = [line.split(":", 1)[1].strip().strip("<>").split()[0]
                            for line in head.splitlines() if line.startswith("X-Rcpt-Args:")]
                    if rcpt:
                        log.write(json.dumps({"t": heard, "rcpt": rcpt}) + "\n")
                log.flush()
        finally:
            sink.terminate()


if __name__ == "__main__":
    main()
