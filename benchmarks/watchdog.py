"""Watchdog reaction: 20 open positions, SIGKILL the main loop, time the trip and the close.

python -m benchmarks.watchdog [--timeout S] [--poll S]

Real processes throughout: the paper gateway, the daemon, and its watchdog child. Prints the
time from SIGKILL to breaker tripped and to flat (positions confirmed empty at the gateway).
Target: flat within 1 s of the trip.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from paper_gateway import AdminClient
from paper_gateway.instruments import Catalogue
from paper_gateway.process import gateway_process
from runtime.breaker import BreakerState, CircuitBreaker
from runtime.demo import write_config
from runtime.heartbeat import read_heartbeat

ROOT = Path(__file__).resolve().parents[1]


def _until(cond: object, timeout: float, step: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(step)
    return False


def _positions(admin: AdminClient) -> None:
    catalogue = Catalogue(dt.datetime.now(dt.UTC).date())
    stocks = list(catalogue.stocks)
    for i, symbol in enumerate(stocks):  # 12 stocks, long and short
        admin.call("set_position", symbol=symbol, quantity=10 if i % 2 == 0 else -10)
    for symbol in ("NVDA", "AMD", "TSLA", "AAPL", "MSFT", "SPY", "JPM", "GS"):  # 8 options
        expiry = catalogue.expiries[symbol][2]
        strikes = catalogue.strikes[symbol]
        admin.call(
            "set_position",
            symbol=symbol,
            sec_type="OPT",
            expiry=expiry,
            strike=strikes[len(strikes) // 2 - 3],
            right="P",
            quantity=-2,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--timeout", type=float, default=1.0, help="watchdog heartbeat_timeout_s")
    p.add_argument("--poll", type=float, default=0.25, help="watchdog poll_interval_s")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wd-bench-"))
    with gateway_process("--tick-interval", "0.25") as gw:
        admin = AdminClient(gw["admin_port"])
        _positions(admin)
        n = len(admin.call("state")["positions"])
        cfg = write_config(
            work / "bench.toml",
            {
                "port": gw["port"],
                "dir": (work / "data").as_posix(),
                "heartbeat_timeout_s": args.timeout,
                "busy_timeout_ms": min(500, int(args.timeout * 500)),
                "poll_interval_s": args.poll,
                "heartbeat_interval_s": 0.2,
                "max_gross_exposure": 1e9,
                "max_open_positions": 100,
                "max_daily_loss": 1e9,
            },
        )
        main_proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runtime",
                "run",
                "--config",
                str(cfg),
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        hb_main = work / "data" / "heartbeat-main.json"
        hb_wd = work / "data" / "heartbeat-watchdog.json"
        ok = _until(lambda: (h := read_heartbeat(hb_main)) is not None and h.cycle >= 1, 60, 0.05)
        ok = ok and _until(
            lambda: (h := read_heartbeat(hb_wd)) is not None and h.phase == "watching", 30, 0.05
        )
        if not ok:
            main_proc.kill()
            raise SystemExit("the daemon did not start; run it by hand to see why")
        time.sleep(1.0)  # let the watchdog subscribe to every position's quotes (steady state)
        breaker = CircuitBreaker(work / "data")
        t0 = time.monotonic()
        os.kill(main_proc.pid, signal.SIGKILL)
        tripped = _until(lambda: breaker.status().state is BreakerState.HALTED, 30)
        t_trip = time.monotonic() - t0
        flat = _until(lambda: not admin.call("state")["positions"], 30)
        t_flat = time.monotonic() - t0
        main_proc.wait(10)
        wd = read_heartbeat(hb_wd)
        if wd is not None:
            os.kill(wd.pid, signal.SIGTERM)
            _until(lambda: (h := read_heartbeat(hb_wd)) is not None and h.phase == "stopped", 15)
        admin.close()
    print(
        f"{n} open positions (12 stocks long/short, 8 short puts); watchdog "
        f"heartbeat_timeout_s={args.timeout:g}, poll_interval_s={args.poll:g}"
    )
    print(f"SIGKILL -> breaker HALTED: {t_trip * 1000:.0f} ms" if tripped else "never tripped")
    print(
        f"SIGKILL -> flat at the gateway: {t_flat * 1000:.0f} ms; trip -> flat: "
        f"{(t_flat - t_trip) * 1000:.0f} ms (target < 1000 ms)"
        if flat
        else "never flat"
    )


if __name__ == "__main__":
    main()
