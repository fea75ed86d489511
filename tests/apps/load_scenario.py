"""configure() while 8 threads call a guarded function: run by tests/test_runtime.py.

    python load_scenario.py --report R --stores S0 S1 S2 ...

Eight threads call a guarded function in a loop (store ``S0`` configured) and keep every call's
id. Meanwhile the main thread turns capture on and off, sets a redaction, sets record_calls,
kills and revives the busy feature, and moves the store to ``S1``, ``S2``, ... , timing each
operation. Then it stops the threads, flushes, and reads every store file: how many stores hold
each call's record. Each operation runs in a helper thread with a deadline, so a deadlock is
reported (with every thread's stack on stderr) rather than waited for. One JSON report out.
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
import json
import logging
import os
import sqlite3
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiguard

THREADS = 8
PAUSE = 0.0005  # between one thread's calls: a load the record writer can keep up with
OP_DEADLINE = 10.0  # an operation still running after this is reported as hung


class Warnings(logging.Handler):
    """Keep what aiguard logs at WARNING and above (dropped records, failed writes...)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--report", required=True)
    p.add_argument("--stores", nargs="+", required=True)
    p.add_argument("--watchdog", type=float, default=50.0)
    args = p.parse_args()
    faulthandler.dump_traceback_later(args.watchdog, exit=True)
    warned = Warnings()
    logging.getLogger("aiguard").addHandler(warned)
    report: dict[str, Any] = {"timings": [], "hung": None}

    def finish() -> None:
        about_records = [m for m in warned.messages if "record" in m]
        report["warnings"] = list(dict.fromkeys(about_records))[:20]
        with open(args.report, "w") as f:
            json.dump(report, f)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # whatever is stuck stays stuck: the report says so

    def timed(label: str, fn: Callable[[], Any]) -> None:
        took: list[float] = []
        failed: list[str] = []

        def run() -> None:
            t0 = time.perf_counter()
            try:
                fn()
            except BaseException:
                failed.append(traceback.format_exc())
            took.append(time.perf_counter() - t0)

        t = threading.Thread(target=run, name=f"op {label}", daemon=True)
        t.start()
        t.join(OP_DEADLINE)
        if t.is_alive():
            report["hung"] = label
            faulthandler.dump_traceback(all_threads=True)
            finish()
        if failed:
            report["op_error"] = f"{label}: {failed[0]}"
            finish()
        report["timings"].append([label, took[0]])

    aiguard.configure(store=args.stores[0])
    work = aiguard.guard("load", fallback=aiguard.Default({"k": -1}))(lambda k: {"k": k})
    stop = threading.Event()
    ids: list[list[str]] = [[] for _ in range(THREADS)]
    errors: list[str] = []

    def caller(out: list[str]) -> None:
        k = 0
        try:
            while not stop.is_set():
                out.append(work.outcome(k).call_id)
                k += 1
                time.sleep(PAUSE)
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=caller, args=(out,), daemon=True) for out in ids]
    for t in threads:
        t.start()
    time.sleep(0.3)

    def redact(value: Any) -> Any:
        return value

    for store in args.stores[1:]:
        name = os.path.basename(store)
        timed("configure(capture=True)", lambda: aiguard.configure(capture=True))
        time.sleep(0.1)
        timed("kill('load')", lambda: aiguard.kill("load", reason="load test"))
        timed("configure(redact=...)", lambda: aiguard.configure(redact=redact))
        time.sleep(0.1)
        timed("revive('load')", lambda: aiguard.revive("load"))
        timed("configure(capture=False)", lambda: aiguard.configure(capture=False))
        timed("configure(record_calls=True)", lambda: aiguard.configure(record_calls=True))
        time.sleep(0.1)
        timed(f"configure(store={name!r})", functools.partial(aiguard.configure, store=store))
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(OP_DEADLINE)
    report["threads_hung"] = sum(t.is_alive() for t in threads)
    report["thread_errors"] = errors[:3]
    timed("flush()", aiguard.flush)

    made = [i for out in ids for i in out]
    held: Counter[str] = Counter()
    for store in args.stores:
        if os.path.exists(store):
            db = sqlite3.connect(store, timeout=10)
            held.update(r[0] for r in db.execute("SELECT call_id FROM call_records"))
            db.close()
    neither = [i for i in made if held[i] == 0]
    several = [i for i in made if held[i] > 1]
    report.update(
        calls=len(made),
        distinct_ids=len(set(made)),
        neither={"count": len(neither), "examples": neither[:5]},
        several={"count": len(several), "examples": several[:5]},
    )
    finish()


if __name__ == "__main__":
    main()
