"""The README's demo command, as a person runs it (fresh data dir, no key, no gateway)."""

import contextlib
import io
import math
import os
import sqlite3
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

from runtime.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run_demo(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC")}
    return subprocess.run(
        [sys.executable, "-m", "runtime", "demo", "--data-dir", str(tmp_path / "demo"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )


def _main(*args: str) -> tuple[int, str]:
    """`python -m runtime ARGS` in this process (quicker than a new one): exit code, stdout."""
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


def test_demo_runs_cycles_and_prints_a_summary(tmp_path):
    proc = run_demo(tmp_path, "--cycles", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "cycles: 2 (ok 2)" in out
    assert "(offline)" in out and "decisions:" in out and "gate refusals:" in out
    assert "fills: 1" in out and "BOT 20 MSFT" in out
    # a newcomer sees the gate work: the demo's oversized GS order is refused with its reason
    assert "exceeds the maximum 25,000" in out and "gate refusals: 0" not in out
    # a decision the commander accepted shows the gate's verdict: the GS order it refused
    # (with why), the MSFT order it sent (and what became of it)
    lines = out.splitlines()
    gs = next(line for line in lines if "x BUY GS: commander accepted" in line)
    assert gs.strip().startswith("2 x") and "accepted" not in gs.split("| gate:")[1]
    assert "| gate: REFUSED, not sent: order value " in gs and "exceeds the maximum 25,000" in gs
    assert any(line.endswith("| gate: sent, order filled") and "BUY MSFT" in line for line in lines)
    # the two GS refusals count as one reason, shown by an example when their values differ
    [refused] = [line for line in lines if line.strip().startswith("2 x order value ")]
    lake = f"file:{tmp_path / 'demo' / 'trading.sqlite3'}?mode=ro"
    with contextlib.closing(sqlite3.connect(lake, uri=True)) as db:
        texts = {
            r
            for (r,) in db.execute(
                "SELECT reason FROM safety_events WHERE kind = ?", ["gate_refusal"]
            )
        }
        # every decision is linked to the signals behind it, options like stocks
        linked = db.execute(
            "SELECT sec_type, COUNT(*), SUM(EXISTS(SELECT 1 FROM decision_signals ds "
            "WHERE ds.decision_id = d.id)) FROM decisions d GROUP BY sec_type"
        ).fetchall()
        [option_ref] = db.execute(
            "SELECT order_ref FROM order_intents WHERE sec_type = 'OPT' AND symbol = 'NVDA'"
        ).fetchone()
    assert {t for t, _, _ in linked} == {"OPT", "STK"}, linked
    assert all(n == k for _, n, k in linked), linked
    code, why = _main("why", option_ref, "--config", str(tmp_path / "demo" / "demo.toml"))
    assert code == 0 and "signal from tech_aggressive (offline): SELL NVDA " in why, why
    assert len(texts) in (1, 2)
    assert refused.endswith("(an example of 2 variants differing only in numbers)") is (
        len(texts) == 2
    )
    assert "BUY 20 MSFT LMT" in out and "python -m runtime why cmd-c1-" in out
    assert "net liquidation" in out and "breaker: ACTIVE" in out
    assert (tmp_path / "demo" / "trading.sqlite3").exists()
    assert list((tmp_path / "demo" / "snapshots").rglob("cycle-*.json"))


def test_demo_protect_shows_each_position_with_its_stop_resting_at_the_gateway(tmp_path):
    # two cycles: the first one's bracket has surely reached the gateway by the summary
    proc = run_demo(tmp_path, "--cycles", "2", "--protect")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    resting = lines[lines.index(next(x for x in lines if x.startswith("protective orders at"))) :]
    # the stop is priced from the parent's reference (its limit), stored before it was sent
    parent = next(x for x in lines if x.strip().startswith("BUY 20 MSFT LMT @ "))
    entry = float(parent.split("@ ")[1].split(":")[0])
    [stop] = [x for x in resting if "SELL 20 MSFT STP trigger" in x] or [proc.stdout]
    assert "SELL 20 MSFT STP trigger" in stop, stop
    trigger = float(stop.split("trigger ")[1].split()[0])
    assert trigger == math.floor(entry * 0.97 * 100 + 1e-9) / 100  # 3% below, in cents
    assert "GTC (PreSubmitted)" in stop and "python -m runtime why cmd-c1-" in stop
    assert any("SELL 20 MSFT LMT" in x and "GTC (Submitted)" in x for x in resting)
    # the puts: their instances' own 10% stop, clear of the spread, so the gate let them go
    lake = f"file:{tmp_path / 'demo' / 'trading.sqlite3'}?mode=ro"
    with contextlib.closing(sqlite3.connect(lake, uri=True)) as db:
        stops = db.execute(
            "SELECT c.aux_price, p.limit_price FROM order_intents c JOIN order_intents p "
            "ON c.order_ref = p.order_ref || '-sl' WHERE p.sec_type = 'OPT'"
        ).fetchall()
    assert len(stops) == 2
    assert all(aux == math.ceil(lmt * 1.10 * 100 - 1e-9) / 100 for aux, lmt in stops)
    # the stored status of a working stop is not shown as differing from IB's PreSubmitted
    assert "stored status differs" not in proc.stdout


def test_demo_kill_drill_shows_the_watchdog_flattening(tmp_path):
    proc = run_demo(tmp_path, "--kill-drill")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "SIGKILL sent to the main loop" in out
    assert "watchdog tripped the breaker" in out and "main loop process" in out
    assert "account flat" in out
    assert "positions at the gateway: 0" in out and "breaker: HALTED" in out
