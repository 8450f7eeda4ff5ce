"""python -m runtime demo: the whole product on a fresh machine, with no key and no gateway.

Starts the paper gateway on free loopback ports, runs the daemon (offline swarm provider, the
watchdog as its child) for N cycles, then prints what happened from the SQLite trail. With
--kill-drill it SIGKILLs the main loop mid-run and shows the watchdog flattening the account.
With --protect every opening order carries its protective stop and take-profit at the broker
(a bracket), and the summary lists the ones resting at the gateway.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from data_lake import (
    Contract,
    alike_note,
    cycles_finished,
    demo_summary,
    open_intents,
    open_readonly,
    price_words,
    query_trades,
    reason_line,
)
from paper_gateway import AdminClient
from paper_gateway.process import gateway_process
from skills.brackets import is_protective_ref

from .breaker import BreakerState, CircuitBreaker
from .config import DEFAULT_INSTANCES_DIR, DEFAULT_TEMPLATES_DIR, example_config, load_config
from .heartbeat import WATCHDOG_HEARTBEAT, read_heartbeat

__all__ = ["run_demo", "write_config"]

ROOT = Path(__file__).resolve().parents[1]


def _say(text: str) -> None:
    print(text, flush=True)


def _wait(cond: Any, timeout: float, what: str) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    _say(f"  ! gave up waiting for {what} after {timeout:.0f}s")
    return False


def write_config(path: Path, overrides: dict[str, Any], base: Path | None = None) -> Path:
    """Write a copy of a TOML config (default config/demo.toml) with keys replaced, keeping
    its comments. Keys are plain (`port`) or section-qualified (`commander__mode`); values
    are Python values (str, int, float, bool). The result is validated before returning.
    The copy lives elsewhere, so the swarm paths default to the shipped ones, absolute."""
    text = (base or example_config("demo.toml")).read_text(encoding="utf-8")
    overrides = {
        "instances_dir": DEFAULT_INSTANCES_DIR.as_posix(),
        "templates_dir": DEFAULT_TEMPLATES_DIR.as_posix(),
        **overrides,
    }
    for key, value in overrides.items():
        if isinstance(value, bool):
            literal = "true" if value else "false"
        elif isinstance(value, str):
            literal = json.dumps(value)
        else:
            literal = repr(value)
        section, _, name = key.rpartition("__")
        start = text.index(f"[{section}]") if section else 0
        tail, n = re.subn(rf"(?m)^{name} = .*$", f"{name} = {literal}", text[start:], count=1)
        if n != 1:
            raise KeyError(f"{key} not found in the base config")
        text = text[:start] + tail
    path.write_text(text, encoding="utf-8")
    load_config(path)  # fail here, loudly, if a replacement broke anything
    return path


def _cycles_done(work: Path) -> int:
    try:
        return cycles_finished(open_readonly(work))
    except Exception:  # not created yet, or busy: ask again
        return 0


def _demo_root() -> Path:
    """data_lake/var in a checkout; installed (no checkout around), the working directory."""
    checkout = ROOT / "config" / "demo.toml"
    return ROOT / "data_lake" / "var" if checkout.is_file() else Path.cwd() / "ib-swarm-demo"


# --protect: stocks' stops 3% from the entry, take-profits 6%; the instances that sell puts get
# their own 10%: an option's bid/ask spread is often 2-4% of its premium, and the gate refuses a
# stop inside the spread (it would fire as the entry fills)
PROTECT = {"commander__stop_loss_pct": 0.03, "commander__take_profit_pct": 0.06}
OPTION_STOP_PCT = 0.10


def run_demo(
    cycles: int = 5, kill_drill: bool = False, data_dir: str | None = None, protect: bool = False
) -> int:
    work = Path(data_dir) if data_dir else _demo_root() / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    _say(f"demo: files in {work}")
    with (
        open(work / "gateway.log", "w") as gw_log,
        gateway_process(
            "--seed", "7", "--tick-interval", "0.25", "--log-level", "INFO", stderr=gw_log, cwd=ROOT
        ) as ready,
    ):
        _say(f"demo: paper gateway on 127.0.0.1:{ready['port']} (admin {ready['admin_port']})")
        with AdminClient(ready["admin_port"]) as admin:
            return _run(work, ready["port"], admin, cycles, kill_drill, protect)


# A demo-only instance that always asks for 100 shares of GS (about $49,500): the gate
# refuses it every time (max_order_notional is $25,000), so a newcomer sees a refusal and
# its reason. It lives in the demo's own instance folder, never in the shipped one.
GATE_CHECK = {
    "id": "demo_gate_check",
    "description": "Demo only: an oversized order the execution gate must refuse.",
    "template": "trend_follower.md",
    "model": "claude-sonnet-4-6",
    "enabled": True,
    "timeout_s": 30,
    "max_tokens": 1024,
    "parameters": {
        "symbols": ["GS"],
        "min_trend_pct": -100.0,
        "max_iv_rank": 100,
        "max_shares": 100,
    },
}


def _demo_instances(work: Path, protect: bool = False) -> Path:
    """The shipped instances plus the demo's gate check, in the demo's folder (with
    `protect`, the put sellers with their own wider stop)."""
    folder = work / "instances"
    folder.mkdir(exist_ok=True)
    for path in DEFAULT_INSTANCES_DIR.glob("*.json"):
        shutil.copy(path, folder / path.name)
        inst = json.loads(path.read_text(encoding="utf-8"))
        if protect and inst.get("template") == "vol_sniper.md":
            inst.setdefault("parameters", {})["stop_loss_pct"] = OPTION_STOP_PCT
            (folder / path.name).write_text(json.dumps(inst, indent=1), encoding="utf-8")
    (folder / "demo_gate_check.json").write_text(json.dumps(GATE_CHECK, indent=1))
    return folder


def _run(
    work: Path, port: int, admin: AdminClient, cycles: int, kill_drill: bool, protect: bool
) -> int:
    cfg_path = write_config(
        work / "demo.toml",
        {
            "port": port,
            "dir": work.as_posix(),
            "instances_dir": _demo_instances(work, protect).as_posix(),
            "min_confidence": 0.4,  # lets the gate check's signal reach the gate
            **(PROTECT if protect else {}),
        },
    )
    cfg = load_config(cfg_path)
    run_cycles = max(cycles, 50) if kill_drill else cycles
    ok = True
    with open(work / "daemon.log", "w") as daemon_log:
        main = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runtime",
                "run",
                "--config",
                str(cfg_path),
                "--max-cycles",
                str(run_cycles),
            ],
            stdout=daemon_log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            _say(
                f"demo: daemon started (pid {main.pid}), watchdog as its child; "
                f"cycle every {cfg.loop.cycle_interval_s:g}s"
            )
            if kill_drill:
                ok = _kill_drill(
                    main,
                    admin,
                    work,
                    cfg.watchdog.heartbeat_timeout_s,
                    cfg.watchdog.poll_interval_s,
                )
            else:
                ok = _wait_cycles(
                    main,
                    work,
                    cycles,
                    cycles * (cfg.loop.cycle_interval_s + cfg.loop.max_cycle_s) + 60,
                )
            _summary(work, admin, protect)
        finally:
            if main.poll() is None:
                main.terminate()
                main.wait(30)
            _stop_watchdog(work)
    return 0 if ok else 1


def _wait_cycles(main: subprocess.Popen[bytes], work: Path, cycles: int, budget: float) -> bool:
    seen = 0
    deadline = time.monotonic() + budget
    while main.poll() is None and time.monotonic() < deadline:
        done = _cycles_done(work)
        if done > seen:
            seen = done
            _say(f"demo: cycle {done}/{cycles} done")
        time.sleep(0.2)
    if main.poll() is None:
        _say("demo: the daemon overran its time; stopping it")
        main.terminate()
        main.wait(30)
        return False
    if main.returncode != 0:
        _say(f"demo: daemon exited with {main.returncode}; see daemon.log")
        return False
    return True


def _stop_watchdog(work: Path) -> None:
    """The watchdog outlives a killed main loop (that is its job); stop it at the end."""
    hb = read_heartbeat(work / WATCHDOG_HEARTBEAT)
    if hb is None or hb.phase == "stopped":
        return
    try:
        os.kill(hb.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    _wait(
        lambda: (read_heartbeat(work / WATCHDOG_HEARTBEAT) or hb).phase == "stopped",
        15,
        "the watchdog to stop",
    )


def _kill_drill(
    main: subprocess.Popen[bytes], admin: AdminClient, work: Path, timeout_s: float, poll_s: float
) -> bool:
    _say("demo: kill drill: waiting for two cycles and open positions ...")
    if not _wait(
        lambda: _cycles_done(work) >= 2 and admin.call("state")["positions"],
        90,
        "positions to open",
    ):
        return False
    n = len(admin.call("state")["positions"])
    t0 = time.monotonic()
    os.kill(main.pid, signal.SIGKILL)
    main.wait(10)
    _say(f"demo: SIGKILL sent to the main loop (pid {main.pid}) with {n} positions open")
    breaker = CircuitBreaker(work)
    tripped = _wait(
        lambda: breaker.status().state is BreakerState.HALTED,
        timeout_s + poll_s + 10,
        "the breaker to trip",
    )
    t_trip = time.monotonic() - t0
    flat = _wait(lambda: not admin.call("state")["positions"], 30, "the account to go flat")
    t_flat = time.monotonic() - t0
    # the watchdog records its closing orders' fills as they arrive: let them land
    _wait(lambda: not _open_watchdog_intents(work), 10, "the watchdog's records")
    if tripped:
        _say(
            f"demo: watchdog tripped the breaker {t_trip:.2f}s after the kill "
            f"(limit {timeout_s:g}s heartbeat timeout + {poll_s:g}s poll): "
            f"{breaker.status().reason}"
        )
    if flat:
        _say(
            f"demo: account flat {t_flat:.2f}s after the kill ({t_flat - t_trip:.2f}s after "
            "the trip); the breaker stays HALTED until a person resets it"
        )
    return tripped and flat


def _open_watchdog_intents(work: Path) -> list[dict[str, Any]]:
    return open_intents(open_readonly(work), ("watchdog",))


def _verdict(d: Mapping[str, Any]) -> str:
    """The execution gate's verdict on a decision the commander accepted: sent (and what
    became of the order), or refused and why; the commander's own refusals never reach it."""
    if not str(d["reason"]).startswith("accepted"):
        return ""
    if d["sent"] is not None:
        return f" | gate: sent, order {d['sent']}"
    if d["refused"] is not None:
        return f" | gate: REFUSED, not sent: {str(d['refused'])[:110]}"
    return " | gate: not sent (no verdict recorded: the cycle ended first)"


def _as_intent(broker_status: str) -> str:
    """The broker's order status in our intents' words: every working state is submitted (an
    untriggered stop, or a child waiting for its parent, is PreSubmitted at IB)."""
    s = broker_status.lower()
    return "submitted" if s in ("presubmitted", "pendingsubmit", "apipending") else s


def _protective(state: Mapping[str, Any], work: Path, protect: bool) -> None:
    """The protective orders resting at the gateway: stop triggers and take-profit limits,
    and how to read each one's story. Asked for (--protect), the count is said even when it
    is 0 (the watchdog flattened, or nothing opened); not asked for, only when some rest."""
    kids = [o for o in state["open_orders"] if is_protective_ref(o["order_ref"])]
    if not kids and not protect:
        return
    _say(f"protective orders at the gateway: {len(kids)}")
    for o in kids:
        price = (
            f"STP trigger {o['aux_price']:g}"
            if o["order_type"] == "STP"
            else f"{o['order_type']} {o['lmt_price']:g}"
        )
        contract = Contract.from_row(o)
        _say(
            f"  {o['action']} {o['quantity']:g} {contract} {price} {o['tif']} ({o['status']}) "
            f"(why: python -m runtime why {o['order_ref']} --config {work / 'demo.toml'})"
        )


# safety-event kinds whose names mislead when read alone, in words (the demo's summary)
EVENT_WORDS = {
    "stop_cancel": "the clean stop cancelled our working orders; not a stop-loss",
    "main_killed": "the watchdog killed a frozen main loop",
    "main_absent": "the watchdog saw no main loop heartbeat yet",
    "flat_confirmed": "the watchdog verified at the broker that the account is flat",
    "watchdog_adopted": "the main loop adopted a watchdog already running",
    "protection_trim": "the cover keeper replaced protective orders not fitting the position",
    "protection_partial": "the cover keeper cancelled the unfilled rest of a partly filled entry",
}


def event_counts(events: Sequence[Mapping[str, Any]]) -> str:
    """`other safety events:` as words: each kind and its count, with what it means when
    the name alone misleads (stop_cancel 1 (the clean stop cancelled ...))."""
    return ", ".join(
        f"{e['kind']} {e['n']}"
        + (f" ({EVENT_WORDS[e['kind']]})" if e["kind"] in EVENT_WORDS else "")
        for e in events
    )


def _summary(work: Path, admin: AdminClient, protect: bool = False) -> None:
    db = open_readonly(work)
    s = demo_summary(db)
    _say("\n=== demo summary ===")
    statuses = s["cycles"]
    _say(f"cycles: {sum(statuses.values())} ({', '.join(f'{k} {v}' for k, v in statuses.items())})")
    for r in s["swarm"]:
        _say(
            f"  swarm {r['instance_id']:22} ({r['provider']}): {r['valid']} signals, "
            f"{r['abstain']} abstains"
        )
    decisions = s["decisions"]
    _say(f"decisions: {sum(d['n'] for d in decisions)}")
    for d in decisions[:10]:
        what = f"{d['action']} {Contract.from_row(d)}: commander {d['reason'][:80]}"
        _say(f"  {d['n']:3} x {what}{_verdict(d)}{alike_note(d)}")
    refusals = s["refusals"]
    _say(f"gate refusals: {sum(r['n'] for r in refusals)}")
    for r in refusals[:8]:
        _say(f"  {reason_line(r)}")
    intents = s["intents"]
    _say(
        f"orders (intents): {sum(intents.values())} "
        f"({', '.join(f'{k} {v}' for k, v in intents.items()) or 'none'})"
    )
    at_broker = {o["order_ref"]: o["status"] for o in admin.call("ledger")["orders"]}
    lagging = 0
    for o in s["orders"][-10:]:
        price = price_words(o["limit_price"], o.get("aux_price"))
        broker = at_broker.get(o["order_ref"])
        differs = broker is not None and _as_intent(broker) != str(o["status"]).lower()
        lagging += differs
        _say(
            f"  {o['action']} {o['quantity']:g} {Contract.from_row(o)} {o['order_type']}{price}: "
            f"{o['status']}"
            + (f" (at the broker: {broker})" if differs else "")
            + f"  (why: python -m runtime why {o['order_ref']} --config {work / 'demo.toml'})"
        )
    if lagging:
        _say(
            "  (an order's stored status differs from the broker's when the process that sent "
            "it is gone, e.g. the main loop the kill drill killed: the next start reconciles "
            "it with the broker)"
        )
    _say(
        "  (a clean stop cancels our working orders: [loop] cancel_orders_on_stop)"
        if intents.get("cancelled")
        else ""
    )
    trades = query_trades(db)
    _say(f"fills: {len(trades)}")
    for t in trades[-10:]:
        contract = Contract.from_row(t)
        _say(
            f"  {t['side']} {t['shares']:g} {contract} @ {t['price']:.2f} "
            f"(commission {(t['commission'] or 0):.2f}) ref {t['order_ref']}"
        )
    state = admin.call("state")
    _protective(state, work, protect)
    _say(f"positions at the gateway: {len(state['positions'])}")
    for p in state["positions"]:
        contract = Contract.from_row(p)
        _say(f"  {p['quantity']:g} {contract} avg cost {p['avg_cost']:.2f}")
    a = state["account"]
    _say(
        f"account {a['id']}: net liquidation {a['NetLiquidation']:,.2f}, unrealised PnL "
        f"{a['UnrealizedPnL']:,.2f}, realised PnL {a['RealizedPnL']:,.2f}"
    )
    events = s["events"]
    if events:
        _say("other safety events: " + event_counts(events))
    _say(f"breaker: {CircuitBreaker(work).status().state.value}")
    _say(f"database: {work / 'trading.sqlite3'}")
    _say(
        f"snapshots: {work / 'snapshots'}  (python -m runtime snapshots --config "
        f"{work / 'demo.toml'})"
    )
    _say(f"logs: {work / 'daemon.log'}, {work / 'gateway.log'}")
