"""How long ``import aiguard`` takes, and a first guard after it, in fresh interpreters.

Run: ``python benchmarks/import_time.py`` (``--runs N``, default 5). Each run is a new process
with ``python -X importtime -c "import aiguard"``; the figure is the cumulative time of the
``aiguard`` package on its ``importtime`` line (what the import costs the host, the interpreter's
own start-up left out), and the table shows the median of the runs. The second row times, in a
new process each, ``import aiguard`` then declaring one guard (``aiguard.guard(...)(fn)``):
what a service pays at start-up for its first guarded function, when the engine is loaded.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time

FIRST_GUARD = (
    "import time; t = time.perf_counter(); import aiguard\n"
    "aiguard.guard('bench', confidence='score', threshold=0.5)(lambda ticket: {'score': 1.0})\n"
    "print((time.perf_counter() - t) * 1e6)"
)


def import_us() -> float:
    """The cumulative microseconds of ``import aiguard`` in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import aiguard"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    for line in proc.stderr.splitlines():
        found = re.match(r"import time:\s+\d+ \|\s+(\d+) \| aiguard$", line)
        if found:
            return float(found[1])
    raise RuntimeError(f"no line for aiguard in:\n{proc.stderr[-2000:]}")


def first_guard_us() -> float:
    proc = subprocess.run(
        [sys.executable, "-c", FIRST_GUARD], capture_output=True, text=True, timeout=60, check=True
    )
    return float(proc.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    imports = [import_us() for _ in range(args.runs)]
    guards = [first_guard_us() for _ in range(args.runs)]
    print(f"{args.runs} fresh interpreters each ({time.perf_counter() - t0:.1f} s in all)\n")
    print(f"| {'case':40} | {'median':>9} | {'min':>9} | {'max':>9} |")
    print(f"|{'-' * 42}|{'-' * 11}|{'-' * 11}|{'-' * 11}|")
    for name, values in (
        ("import aiguard (-X importtime)", imports),
        ("import aiguard + a first guard", guards),
    ):
        print(
            f"| {name:40} | {statistics.median(values) / 1000:6.1f} ms | "
            f"{min(values) / 1000:6.1f} ms | {max(values) / 1000:6.1f} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
