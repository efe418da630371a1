#!/usr/bin/env python3
"""Insight benchmark: import contacts, orders and follow-ups, classify, report.

Generates (once per size, kept under $BENCH_WORK/insight/data) a contacts CSV, an
orders CSV (about `--orders-per-contact` per contact, dates over the last 3 years,
a few in USD) and a follow-ups CSV dated in the last 30 days, then runs the
release binary on a fresh database, one command at a time:
  nudge contact import     contacts.csv
  nudge order import       orders.csv --history   (each batch's customers classified)
  nudge followup import    followups.csv
  nudge classify           every customer again (what the daily pass does)
  nudge report             the last 30 days, as JSON
and prints one JSON line: per phase the wall time, rows/s where rows are read,
and the command's peak RSS (its own, from wait4).
Usage: bench/insight.py [--contacts 1000000] [--orders-per-contact 5] [--follow-ups 100000]
"""
import argparse
import datetime
import json
import os
import random
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(os.environ.get("BENCH_WORK", os.path.expanduser("~/.cache/nudge-bench")), "insight")
OWNERS = [f"rep{i}@bench.test" for i in range(20)]
SOURCES = ["ads", "expo", "referral", "web"]
STAGES = ["lead", "inquiry", "intent", "sample", "first_order", "repeat"]
ZONES = ["Asia/Shanghai", "Europe/Berlin", "America/New_York", "UTC"]


def generate(folder, contacts, per_contact, follow_ups, seed=7):
    """Writes the three CSVs unless they exist; returns their paths and row counts."""
    paths = {k: os.path.join(folder, f"{k}.csv") for k in ("contacts", "orders", "followups")}
    counts_file = os.path.join(folder, "counts.json")
    if os.path.exists(counts_file):
        return paths, json.load(open(counts_file))
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(seed)
    today = datetime.date.today()
    with open(paths["contacts"], "w") as f:
        f.write("name,company,email,owner,stage,source,time_zone\n")
        for i in range(contacts):
            f.write(
                f"Customer {i},Company {i % 50000},c{i}@bench.test,{OWNERS[i % 20]},"
                f"{STAGES[rng.randrange(6)]},{SOURCES[i % 4]},{ZONES[i % 4]}\n"
            )
    orders = 0
    with open(paths["orders"], "w") as f:
        f.write("id,contact,amount,currency,date,items\n")
        lines = []
        for i in range(contacts):
            # 0 to 2x the mean orders each; a tenth of the customers buy big.
            big = rng.random() < 0.1
            for _ in range(rng.randrange(2 * per_contact + 1)):
                amount = rng.randrange(1_000_00, 200_000_00 if big else 20_000_00)
                usd = rng.random() < 0.03
                if usd:
                    amount //= 7
                date = today - datetime.timedelta(days=rng.randrange(1, 1100))
                lines.append(
                    f"O-{orders},c{i}@bench.test,{amount // 100}.{amount % 100:02d},"
                    f"{'USD' if usd else 'CNY'},{date.isoformat()},widgets\n"
                )
                orders += 1
            if len(lines) >= 10_000:
                f.writelines(lines)
                lines.clear()
        f.writelines(lines)
    with open(paths["followups"], "w") as f:
        f.write("contact,at,channel,summary,feedback,intent_grade\n")
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        for i in range(follow_ups):
            at = now - datetime.timedelta(seconds=rng.randrange(60, 30 * 86400))
            feedback = "wants a quote" if rng.random() < 0.35 else ""
            f.write(
                f"c{rng.randrange(contacts)}@bench.test,{at.isoformat().replace('+00:00', 'Z')},phone,"
                f"call {i},{feedback},{'ABC'[rng.randrange(3)]}\n"
            )
    counts = {"contacts": contacts, "orders": orders, "followups": follow_ups}
    json.dump(counts, open(counts_file, "w"))
    return paths, counts


def run(binary, config, args, rows=None):
    """Runs one command; returns its wall time, its own peak RSS (wait4), rows/s, and its output."""
    started = time.monotonic()
    with open(os.path.join(WORK, "out.txt"), "w+") as out, open(os.path.join(WORK, "err.txt"), "w+") as err:
        proc = subprocess.Popen([binary, "--config", config, *args], stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(args)} failed:\n{stderr[-2000:]}")
    result = {"s": round(elapsed, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}
    if rows:
        result["rows_per_s"] = round(rows / elapsed)
    return result, stdout


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--orders-per-contact", type=int, default=5)
    parser.add_argument("--follow-ups", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    opts = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "-q", "-p", "nudge"], cwd=REPO, check=True)
    binary = os.path.join(REPO, "target", "release", "nudge")
    data = os.path.join(WORK, "data", f"{opts.contacts}-{opts.orders_per_contact}-{opts.follow_ups}")
    t = time.monotonic()
    paths, counts = generate(data, opts.contacts, opts.orders_per_contact, opts.follow_ups)
    generate_s = round(time.monotonic() - t, 1)

    run_dir = os.path.join(WORK, "run")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    config = os.path.join(run_dir, "nudge.toml")
    with open(config, "w") as f:
        f.write(f'database = "{run_dir}/nudge.db"\nworkflows = "{REPO}/workflows"\nplugin_cache = "{WORK}/plugin-cache"\n')

    # A warm plugin cache, as a deployed daemon has it: commands that load the
    # workflow set compile the channel plugins the first time.
    subprocess.run([binary, "--config", config, "check"], check=True, stdout=subprocess.DEVNULL)
    phases = {}
    phases["contact_import"], _ = run(binary, config, ["contact", "import", paths["contacts"]], counts["contacts"])
    phases["order_import"], _ = run(binary, config, ["order", "import", "--history", paths["orders"]], counts["orders"])
    phases["followup_import"], _ = run(binary, config, ["followup", "import", paths["followups"]], counts["followups"])
    phases["classify"], _ = run(binary, config, ["classify"])
    phases["report"], report = run(binary, config, ["report", "--format", "json"])
    summary = json.loads(report)
    print(
        json.dumps(
            {
                "contacts": counts["contacts"],
                "orders": counts["orders"],
                "follow_ups": counts["followups"],
                "generate_s": generate_s,
                "db_mib": round(os.path.getsize(os.path.join(run_dir, "nudge.db")) / 2**20),
                "phases": phases,
                "report_customers": next(m["denominator"] for m in summary["measures"] if m["name"] == "churn rate"),
            }
        )
    )
    if not opts.keep:
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
