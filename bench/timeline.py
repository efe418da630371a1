#!/usr/bin/env python3
"""Where a message's time went, from the database's own timestamps.

Run after `bench/run_nudge.sh` (its database stays in place until the next run):

    bench/timeline.py ~/.cache/nudge-bench/nudge/run/nudge.db [SINK_LOG]

Prints p50 / p90 / p99 in ms of each stretch of a stage change's email: the
event written -> its run started -> its step rendered (the batch handed on to
be written) -> the delivery attempt started -> the attempt recorded. The daemon
takes these readings from its clock as it goes, so a stretch includes the waits
for the turn to write that lie in it (the step's own wait falls in the third).

With the run's sink log (sink.jsonl in its results folder: a line per message,
its arrival time and recipients) the last stretch is split where the message
reached the sink: its SMTP send, then the wait for its record. It also says
when the slowest 1 % (event written -> at the sink) had their events written,
counted from the first: a tail made by the start of the load (sessions and
connections opened, a first batch larger than the rest) shows as a cluster
near 0 ms.
"""
import json
import sqlite3
import sys

STRETCHES = [
    ("the event written -> its run started", 0, 1),
    ("run started -> its step rendered", 1, 2),
    ("step rendered -> attempt started", 2, 3),
    ("attempt started -> attempt recorded", 3, 4),
]


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main(path, sink_log=None):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = db.execute(
        """SELECT e.occurred_at, r.started_at, o.created_at, d.started_at, d.finished_at, o.recipient
           FROM outbox o JOIN runs r ON r.id = o.run_id JOIN events e ON e.id = r.event_id
           JOIN deliveries d ON d.outbox_id = o.id AND d.attempt = 1
           WHERE e.kind = 'stage_changed'"""
    ).fetchall()
    if not rows:
        sys.exit(f"{path}: no delivered stage-change emails")
    stretches = STRETCHES
    if sink_log:
        arrived = {}
        for line in open(sink_log):
            message = json.loads(line)
            for recipient in message["rcpt"]:
                arrived.setdefault(recipient, round(message["t"] * 1000))
        # The harness's warm-up request (warmup-*), sent before the idle spell, is left out.
        rows = [row[:4] + (arrived[row[5]], row[4]) for row in rows
                if row[5] in arrived and not row[5].startswith("warmup-")]
        if not rows:
            sys.exit(f"{sink_log}: none of the database's recipients")
        stretches = STRETCHES[:3] + [
            ("attempt started -> stored at the sink", 3, 4),
            ("stored at the sink -> attempt recorded", 4, 5),
        ]
    print(f"{len(rows)} messages; ms")
    print(f"{'stretch':40s} {'p50':>6s} {'p90':>6s} {'p99':>6s}")
    for name, start, end in stretches:
        values = [row[end] - row[start] for row in rows]
        print(f"{name:40s} {percentile(values, .5):6d} {percentile(values, .9):6d} {percentile(values, .99):6d}")
    if sink_log:
        first = min(row[0] for row in rows)
        by_latency = sorted(rows, key=lambda row: row[4] - row[0])
        slowest = by_latency[len(by_latency) - max(1, len(by_latency) // 100):]
        written = sorted(row[0] - first for row in slowest)
        print(f"the slowest 1 % ({len(slowest)}, event written -> at the sink "
              f"{slowest[0][4] - slowest[0][0]}-{slowest[-1][4] - slowest[-1][0]} ms) had their events "
              f"written at (ms from the first): {written}")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    main(*sys.argv[1:])
