"""Cycle overhead (everything but LLM latency) for 10 symbols, and RSS growth over 200 cycles.

python -m benchmarks.cycle [--cycles N] [--interval S]

The daemon runs as its own process with the offline provider (no LLM latency), its watchdog
as a child, against the paper gateway. Cycle time comes from the cycles table; RSS of the
daemon and the watchdog is read with psutil after 10 cycles and after the last one.
Targets: cycle overhead under 200 ms; RSS growth under 5%.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from data_lake import cycle_rows, cycles_finished, open_readonly
from paper_gateway.process import gateway_process
from runtime.demo import write_config
from runtime.heartbeat import read_heartbeat

ROOT = Path(__file__).resolve().parents[1]


def _instances(directory: Path) -> None:
    src = ROOT / "swarm_intelligence/active_instances"
    for name in ("tech_aggressive.json", "finance_conservative.json", "index_trend.json"):
        shutil.copy(src / name, directory / name)
    extra = json.loads((src / "index_trend.json").read_text())
    extra["id"] = "qqq_trend"
    extra["parameters"]["symbols"] = ["QQQ"]
    (directory / "qqq_trend.json").write_text(json.dumps(extra))  # 10 symbols in all


def _done(db_dir: Path) -> int:
    try:
        return cycles_finished(open_readonly(db_dir))
    except Exception:  # not created yet, or busy: ask again
        return 0


def _rss(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--cycles", type=int, default=200)
    p.add_argument("--interval", type=float, default=0.5)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cycle-bench-"))
    (work / "instances").mkdir()
    _instances(work / "instances")
    data = work / "data"
    with gateway_process("--tick-interval", "0.25") as gw:
        cfg = write_config(
            work / "bench.toml",
            {
                "port": gw["port"],
                "dir": data.as_posix(),
                "instances_dir": (work / "instances").as_posix(),
                "templates_dir": (ROOT / "swarm_intelligence/templates").as_posix(),
                "cycle_interval_s": args.interval,
                "max_cycle_s": args.interval * 0.95,
                "deadline_s": args.interval * 0.8,
                "write_timeout_s": args.interval * 0.5,
                "heartbeat_interval_s": 0.2,
            },
        )
        cfg.write_text(cfg.read_text().replace('"SPY", "JPM"', '"SPY", "QQQ", "JPM"'))
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runtime",
                "run",
                "--config",
                str(cfg),
                "--max-cycles",
                str(args.cycles),
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        rss10: tuple[float, float] | None = None
        rss_end: tuple[float, float] | None = None
        wd_pid = 0
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < args.cycles * args.interval * 3 + 120:
            n = _done(data)
            hb = read_heartbeat(data / "heartbeat-watchdog.json")
            wd_pid = hb.pid if hb else wd_pid
            if rss10 is None and n >= 10 and wd_pid:
                rss10 = (_rss(proc.pid), _rss(wd_pid))
            if n >= args.cycles - 1 and wd_pid and rss_end is None:
                rss_end = (_rss(proc.pid), _rss(wd_pid))
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    rows = cycle_rows(open_readonly(data))
    ms = [
        (
            dt.datetime.fromisoformat(r["finished_at"]) - dt.datetime.fromisoformat(r["started_at"])
        ).total_seconds()
        * 1000
        for r in rows
        if r["finished_at"]
    ]
    statuses = {s: sum(1 for r in rows if r["status"] == s) for s in {r["status"] for r in rows}}
    steady = sorted(ms[1:]) or ms
    print(f"{len(rows)} cycles over 10 symbols (offline provider, so no LLM latency): {statuses}")
    print(
        f"first (cold) cycle {ms[0]:.0f} ms; steady cycles p50 {statistics.median(steady):.0f} ms"
        f", p95 {steady[int(0.95 * (len(steady) - 1))]:.0f} ms, max {max(steady):.0f} ms "
        "(target < 200 ms)"
    )
    if rss10 and rss_end:
        for name, a, b in (("daemon", rss10[0], rss_end[0]), ("watchdog", rss10[1], rss_end[1])):
            print(
                f"{name} RSS after 10 cycles {a:.1f} MB, after {len(rows)}: {b:.1f} MB "
                f"({(b / a - 1) * 100:+.1f}%, target < 5%)"
            )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
