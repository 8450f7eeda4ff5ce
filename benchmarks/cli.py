"""CLI start-up: wall time of `python -m runtime --help`, `status` and `breaker`.

python -m benchmarks.cli [--runs R]

Each command runs as a new process (what an operator waits for), against a data directory
with a database in it. Medians of R runs; `python -c pass` is the floor.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_lake import Store
from runtime.demo import write_config

ROOT = Path(__file__).resolve().parents[1]


def _time(args: list[str], runs: int, ok: tuple[int, ...] = (0,)) -> float:
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
        ms.append((time.perf_counter() - t0) * 1000)
        if done.returncode not in ok:
            raise SystemExit(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return statistics.median(ms)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cli-bench-"))
    try:
        cfg = write_config(work / "cli.toml", {"port": 1, "dir": (work / "data").as_posix()})
        Store.open(work / "data", name="bench").close(10)
        py = [sys.executable]
        rt = [*py, "-m", "runtime"]
        floor = _time([*py, "-c", "pass"], args.runs)
        print(f"python -c pass: {floor:.0f} ms (the floor)")
        # nothing runs here: status answers 3 (nothing alive), which is its answer, not a failure
        for label, cmd, ok in (
            ("--help", [*rt, "--help"], (0,)),
            ("status", [*rt, "status", "--config", str(cfg)], (0, 3)),
            ("breaker", [*rt, "breaker", "--config", str(cfg)], (0,)),
        ):
            ms = _time(cmd, args.runs, ok)
            print(f"python -m runtime {label}: {ms:.0f} ms (median of {args.runs})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
