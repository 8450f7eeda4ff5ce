"""Database write throughput through the single writer (`data_lake.Store`).

python -m benchmarks.db [--n N] [--runs R]

Audit writes queued with `post()` (the daemon's path for signals, events and order events:
never blocks the caller) and drained by the writer thread; and writes awaited one at a time
with `call()` (the path of an order intent, stored before the order is sent). A real SQLite
file in a temporary directory, WAL mode, as the daemon opens it. Medians of R runs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from data_lake import Store, log_safety_event


def _queued(directory: Path, n: int) -> float:
    store = Store.open(directory, name="bench")
    try:
        t0 = time.perf_counter()
        for i in range(n):
            store.post(log_safety_event, "bench", "bench", f"queued write {i}", "info")
        if not store.flush(120):
            raise SystemExit("the writer did not drain its queue within 120 s")
        return n / (time.perf_counter() - t0)
    finally:
        store.close(10)


def _awaited(directory: Path, n: int) -> list[float]:
    store = Store.open(directory, name="bench")
    try:
        ms = []
        for i in range(n):
            t0 = time.perf_counter()
            store.call(log_safety_event, "bench", "bench", f"awaited write {i}", "info", timeout=10)
            ms.append((time.perf_counter() - t0) * 1000)
        return ms
    finally:
        store.close(10)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--n", type=int, default=5000, help="queued writes per run")
    p.add_argument("--awaited", type=int, default=500, help="awaited writes per run")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    rates, p50s, p99s = [], [], []
    for _ in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="db-bench-"))
        try:
            rates.append(_queued(work, args.n))
            ms = sorted(_awaited(work, args.awaited))
            p50s.append(statistics.median(ms))
            p99s.append(ms[int(0.99 * (len(ms) - 1))])
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"queued audit writes (post, drained by the writer): "
        f"{statistics.median(rates):,.0f} writes/s (median of {args.runs} runs of {args.n:,})"
    )
    print(
        f"awaited writes (call, one at a time): p50 {statistics.median(p50s):.2f} ms, "
        f"p99 {statistics.median(p99s):.2f} ms = {1000 / statistics.median(p50s):,.0f} writes/s"
    )


if __name__ == "__main__":
    main()
