"""Memory over a million calls with 10 KB results: RSS stays flat.

Run: ``python benchmarks/memory.py`` (options: ``--calls N``, ``--every N``). Two cases, each in
its own process so one does not inherit the other's heap: a SQLite store that keeps up (the
loop pauses 2 ms every 100 calls, as a service waiting on its model would), and a
store that is down for the whole run (every record waits in the queue until its byte budget is
full, then new ones are dropped and counted). Each model call returns a fresh 10 KB string; the
process's resident set size is read from /proc every ``every`` calls.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

CHILD = r"""
import json, os, sys, tempfile, time
import aiguard
from aiguard.store import configured

calls, every, down = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "down"
page = os.sysconf("SC_PAGE_SIZE")

def rss() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page / 2**20

aiguard.configure(store=os.path.join(tempfile.mkdtemp(), "memory.db"))
if down:
    def refuse(rows):
        raise aiguard.StoreError("down")
    configured().add_call_records = refuse

@aiguard.guard("memory", confidence=lambda r: 0.9, threshold=0.5)
def model(i: int) -> str:
    if i % 100 == 0:
        # a real model call waits on the network (the writer runs meanwhile): here about
        # 30,000 calls a second, each answered at once
        time.sleep(0.002)
    return "x" * 10_240  # a fresh 10 KB answer each call

samples = []
t0 = time.perf_counter()
for i in range(1, calls + 1):
    model(i)
    if i % every == 0:
        samples.append((i, round(rss(), 1)))
took = time.perf_counter() - t0
c = aiguard.records.counts()
print(json.dumps({"samples": samples, "seconds": round(took, 1), "counts": {
    "recorded": c.recorded, "written": c.written, "dropped": c.dropped, "queued": c.queued}}))
"""


def run(calls: int, every: int, case: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(calls), str(every), case],
        check=True,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=100_000)
    args = parser.parse_args(argv)
    print(f"RSS (MiB) over {args.calls:,} calls, each returning a fresh 10 KB string")
    print()
    results = {case: run(args.calls, args.every, case) for case in ("up", "down")}
    header = "| calls      | store keeps up | store down |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    up, down = results["up"]["samples"], results["down"]["samples"]
    for (n, a), (_, b) in zip(up, down, strict=True):
        print(f"| {n:>10,} | {a:>14.1f} | {b:>10.1f} |")
    print()
    for case, result in results.items():
        print(f"store {case}: {result['seconds']} s; call records {result['counts']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
