"""Run every benchmark, one fresh process each, then print the targets table.

    .venv/bin/python bench/run_all.py                  # all of them (about 8 minutes)
    .venv/bin/python bench/run_all.py scale restart    # some of them
    .venv/bin/python bench/run_all.py --table          # only print the table of the last results
    .venv/bin/python bench/run_all.py --readme         # also rewrite the table in bench/README.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"

# name -> (script, result file, time limit in seconds)
BENCHES = {
    "reservations": ("bench_reservations.py", "reservations", 240),
    "http_client": ("bench_http_client.py", "http_client", 120),
    "wait_memory": ("bench_wait_memory.py", "wait_memory", 120),
    "delivery_memory": ("bench_delivery_memory.py", "delivery_memory", 240),
    "join": ("bench_join.py", "join", 300),
    "polling": ("bench_polling.py", "polling", 240),
    "callbacks": ("bench_callbacks.py", "callbacks", 240),
    "ack_burst": ("bench_ack_burst.py", "ack_burst", 400),
    "ack_sustained": ("bench_ack_sustained.py", "ack_sustained", 240),
    "scale": ("bench_scale.py", "scale", 400),
    "restart": ("bench_restart.py", "restart", 400),
    # several replicas on PostgreSQL (the local test server: .ci/postgres starts one)
    "pg_reservations": ("bench_pg_reservations.py", "pg_reservations", 240),
    "takeover": ("bench_takeover.py", "takeover", 300),
    "ack_sustained_3_replicas": ("bench_ack_sustained.py --replicas 3", "ack_sustained_3_replicas", 300),
}


def run_one(name: str) -> int:
    script, _, limit = BENCHES[name]
    print(f"\n### {name} ({script}, at most {limit} s)", flush=True)
    started = time.monotonic()
    file, *options = script.split()
    proc = subprocess.Popen([sys.executable, str(HERE / file), *options], cwd=HERE.parent)
    try:
        code = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()  # this benchmark's own process, by its pid; its children stop with it or by themselves
        proc.wait()
        code = -9
        print(f"### {name}: stopped after {limit} s", flush=True)
    print(f"### {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
    return code


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table() -> str:
    rows = ["| benchmark | check | target | measured | |", "|---|---|---|---|---|"]
    loads: list[str] = []
    machine = None
    for name, (_, result, _) in BENCHES.items():
        path = RESULTS / f"{result}.json"
        if not path.exists():
            rows.append(f"| {name} | (not run) | | | |")
            continue
        data = json.loads(path.read_text())
        if "loadavg_1m" in data["machine"]:
            loads.append(f"{name} {data['machine']['loadavg_1m']:.2f}")
        if machine is None or data["machine"]["date_utc"] > machine["date_utc"]:
            machine = data["machine"]
        for c in data["checks"]:
            unit = f" {c['unit']}" if c["unit"] else ""
            verdict = "PASS" if c["ok"] else "**MISS**"
            note = f" ({c['note']})" if c.get("note") else ""
            rows.append(f"| {name} | {c['name']}{note} | {c['op']} {_fmt(c['target'])}{unit} | "
                        f"{_fmt(c['measured'])}{unit} | {verdict} |")
    head = ""
    if machine:
        head = (f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['ram_gib']} GiB RAM, "
                f"Python {machine['python']}, Linux {machine['kernel']}; last run {machine['date_utc']} UTC.\n"
                f"Load average (1 min) when each started: {', '.join(loads)}.\n\n")
    return head + "\n".join(rows)


def write_readme(text: str) -> None:
    content = README.read_text()
    if START not in content or END not in content:
        raise SystemExit(f"{README} has no {START} ... {END} section")
    before, rest = content.split(START, 1)
    _, after = rest.split(END, 1)
    README.write_text(f"{before}{START}\n{text}\n{END}{after}")


def main() -> int:
    p = argparse.ArgumentParser(description="Run the sora-bot benchmarks.")
    p.add_argument("names", nargs="*", help=f"which ones (default: all): {', '.join(BENCHES)}")
    p.add_argument("--table", action="store_true", help="print the table of the last results, run nothing")
    p.add_argument("--readme", action="store_true", help="write the table into bench/README.md")
    args = p.parse_args()
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    failed = []
    if not args.table:
        for name in args.names or list(BENCHES):
            if run_one(name) != 0:
                failed.append(name)
    text = table()
    print("\n" + text)
    if args.readme:
        write_readme(text)
        print(f"\nwrote the table into {README.relative_to(HERE.parent)}")
    if failed:
        print(f"\nbenchmarks that did not finish: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
