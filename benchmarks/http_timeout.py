"""What a sync timeout adds to a real HTTP call, with 8 threads calling at once.

A local HTTP/1.1 server (its own process) answers each request after about 1 ms. Eight threads
call it over keep-alive connections, through three functions: the bare call, the call guarded
without a timeout, and the call guarded with ``timeout=``. Each round runs the three in turn;
the result is the median per-call latency of each over the rounds, and the ratios against the
guarded call without a timeout (what the timeout alone adds) and against the bare call.

    .venv/bin/python benchmarks/http_timeout.py [--rounds 7] [--calls 200] [--threads 8]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import statistics
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiguard


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms stall

    def do_GET(self) -> None:
        time.sleep(0.001)  # the "model": about 1 ms
        body = b'{"label": "billing"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def serve(port_out: Any) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port_out.put(server.server_address[1])
    server.serve_forever()


def run_round(call: Callable[[http.client.HTTPConnection], Any], port: int, threads: int,
              calls: int) -> float:  # fmt: skip
    """Median per-call latency (µs) of ``threads`` threads making ``calls`` calls each."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        mine = []
        start.wait()
        for _ in range(calls):
            t0 = time.perf_counter()
            call(conn)
            mine.append(time.perf_counter() - t0)
        conn.close()
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return statistics.median(latencies) * 1e6


def get(conn: http.client.HTTPConnection) -> bytes:
    conn.request("GET", "/")
    return conn.getresponse().read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    ports: Any = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(ports,), daemon=True)
    server.start()
    port = ports.get(timeout=10)
    cases: dict[str, Callable[[http.client.HTTPConnection], Any]] = {
        "bare call": get,
        "guarded": aiguard.guard("http-bench")(get),
        "guarded, timeout=5": aiguard.guard("http-bench-timeout", timeout=5.0)(get),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm up
        run_round(fn, port, args.threads, 20)
    for _ in range(args.rounds):
        for name, fn in cases.items():
            samples[name].append(run_round(fn, port, args.threads, args.calls))
    server.terminate()
    medians = {name: statistics.median(s) for name, s in samples.items()}
    base, guarded = medians["bare call"], medians["guarded"]
    print(f"{args.threads} threads, {args.calls} calls each, {args.rounds} rounds; "
          "median latency per call")  # fmt: skip
    for name, us in medians.items():
        print(f"  {name:20} {us:9.1f} µs   {us / base:5.3f}x bare   {us / guarded:5.3f}x guarded")
    added = medians["guarded, timeout=5"] - guarded
    share = added / guarded * 100
    print(f"timeout= adds {added:.1f} µs a call ({share:+.2f}% of the guarded call)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
