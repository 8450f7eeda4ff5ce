"""`python -m runtime drill --config F --yes`: the kill drill on the operator's own paper setup.

It proves, against the operator's own IB Gateway (paper) and account, that the watchdog
closes what the main loop leaves behind:

1. refuse a live config, and anything `run` would refuse (the gateway is probed);
2. start the daemon on a data directory of its own (under the configured one, so the real
   audit trail and breaker are untouched) with the offline swarm and no trading of its own;
3. open a small position as a person's order through the execution gate;
4. SIGKILL the main loop, and time the breaker trip and the account going flat, asking the
   broker itself (a fresh session, not a cache);
5. stop the watchdog and print the figures.

The watchdog closes EVERY position in the account: run it on a paper account you may flatten.
Exit 0 when the breaker tripped and the account was confirmed flat.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_lake import Contract, Store
from skills.execution_gate import GateState, OrderRequest, place_order_with_guard

from .breaker import BreakerState, CircuitBreaker
from .broker import Broker, probe_positions, quiet_client_log
from .config import Config, Secrets, load_config
from .gate_context import build_gate_context
from .heartbeat import MAIN_HEARTBEAT, WATCHDOG_HEARTBEAT, read_heartbeat
from .preflight import gateway_refusals, static_refusals

__all__ = ["run_drill"]

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def _say(text: str) -> None:
    print(text, flush=True)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # a nested table, written inline
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _dump_toml(doc: dict[str, Any]) -> str:
    """Write a config document (top-level keys, then one level of tables) as TOML."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"\n[{name}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _drill_config(config_path: Path, cfg: Config, work: Path) -> Path:
    """The operator's config with its own data dir, the offline swarm and no trading."""
    doc = tomllib.loads(config_path.read_text(encoding="utf-8"))
    doc.setdefault("data", {})["dir"] = work.as_posix()
    doc.setdefault("watchdog", {})["spawn"] = True
    swarm = doc.setdefault("swarm", {})
    swarm["provider"] = "offline"
    swarm["instances_dir"] = Path(cfg.swarm.instances_dir).resolve().as_posix()
    swarm["templates_dir"] = Path(cfg.swarm.templates_dir).resolve().as_posix()
    doc.setdefault("commander", {}).update(mode="rules", min_consensus=1_000_000)
    path = work / "drill.toml"
    path.write_text(_dump_toml(doc), encoding="utf-8")
    load_config(path)  # fail here, loudly, if anything did not carry over
    return path


def _wait(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    _say(f"  ! gave up waiting for {what} after {timeout:.0f}s")
    return None


async def _open_position(cfg: Config, store: Store, symbol: str, quantity: int) -> str:
    """A person's market order through the execution gate; return the outcome in words."""
    broker = Broker(
        cfg.broker,
        cfg.mode,
        Secrets(),
        store,
        client_id=cfg.broker.watchdog_client_id + 2,
        source="drill",
        intent_sources=("person",),
    )
    await broker.connect()
    try:
        request = OrderRequest(
            contract=Contract.stock(symbol),
            action="BUY",
            quantity=float(quantity),
            order_type="MKT",
            source="person",
        )
        ctx = await build_gate_context(
            broker,
            request,
            breaker=BreakerState.ACTIVE.value,
            watchdog_alive=True,
            market_open=True,
            now=time.monotonic(),
        )
        verdict = await place_order_with_guard(request, ctx, GateState(), cfg.risk, store, broker)
        if not verdict.accepted:
            return "refused by the gate: " + "; ".join(verdict.reasons)
        return f"sent ({verdict.order_ref})"
    finally:
        await broker.close()


def _positions(cfg: Config) -> dict[str, float] | None:
    try:
        with quiet_client_log():  # a failure is said in one line below
            return asyncio.run(
                probe_positions(cfg.broker, cfg.mode, Secrets(), cfg.broker.watchdog_client_id + 3)
            )
    except Exception as exc:
        _say(f"  ! positions not read from the broker: {exc}")
        return None


def run_drill(config_path: Path, cfg: Config, yes: bool, symbol: str, quantity: int) -> int:
    """Run the kill drill; return the exit code (0: tripped and flat)."""
    if cfg.mode != "paper":
        _say("refused: the drill runs on paper configs only (mode = 'paper'), never on live")
        return 2
    if not yes:
        _say(
            f"The drill starts the daemon on its own data directory, buys {quantity} {symbol} "
            f"in account {cfg.broker.account or '(the gateway default)'} at "
            f"{cfg.broker.host}:{cfg.broker.port}, SIGKILLs the main loop and lets the watchdog "
            "close EVERY position in that paper account. Run it again with --yes."
        )
        return 2
    secrets = Secrets()
    refusals = static_refusals(cfg, secrets)
    if not refusals:
        with quiet_client_log():  # an unreachable gateway is said once, below
            refusals = asyncio.run(gateway_refusals(cfg, secrets))
    if refusals:
        for reason in refusals:
            _say(f"refused: {reason}")
        return 2
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    work = (cfg.data_dir / "drills" / f"drill-{stamp}").resolve()
    work.mkdir(parents=True)
    drill_cfg = _drill_config(Path(config_path), cfg, work)
    drill = load_config(drill_cfg)
    _say(f"drill: files in {work}")
    log = open(work / "daemon.log", "wb")  # noqa: SIM115 -- held for the daemon's lifetime
    main = subprocess.Popen(
        [sys.executable, "-m", "runtime", "run", "--config", str(drill_cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=PACKAGE_ROOT,
    )
    try:
        return _drill(drill, work, main, symbol, quantity)
    finally:
        if main.poll() is None:
            main.kill()
            main.wait(10)
        hb = read_heartbeat(work / WATCHDOG_HEARTBEAT)
        if hb is not None and hb.phase != "stopped":
            with contextlib.suppress(ProcessLookupError):
                os.kill(hb.pid, signal.SIGTERM)
            _wait(
                lambda: (h := read_heartbeat(work / WATCHDOG_HEARTBEAT)) and h.phase == "stopped",
                20,
                "the watchdog to stop",
            )
        log.close()


def _drill(cfg: Config, work: Path, main: subprocess.Popen[bytes], symbol: str, qty: int) -> int:
    up = _wait(
        lambda: (
            (m := read_heartbeat(work / MAIN_HEARTBEAT))
            and m.cycle >= 1
            and (w := read_heartbeat(work / WATCHDOG_HEARTBEAT))
            and w.phase == "watching"
        ),
        120,
        "the daemon to cycle and its watchdog to watch",
    )
    if not up or main.poll() is not None:
        _say(f"drill: the daemon did not come up; see {work / 'daemon.log'}")
        return 1
    _say(f"drill: daemon up (pid {main.pid}), watchdog watching")
    store = Store.open(work, busy_timeout_ms=cfg.data.busy_timeout_ms, name="drill")
    try:
        outcome = asyncio.run(_open_position(cfg, store, symbol, qty))
    finally:
        store.close(10)
    _say(f"drill: person's order BUY {qty} {symbol} MKT: {outcome}")
    held = _wait(lambda: (p := _positions(cfg)) and p.get(symbol), 30, f"{symbol} to fill")
    if not held:
        _say("drill: no fill (market closed?); the drill still proves the trip and flat check")
    before = _positions(cfg) or {}
    t0 = time.monotonic()
    os.kill(main.pid, signal.SIGKILL)
    main.wait(10)
    _say(f"drill: SIGKILL sent to the main loop with {len(before)} positions open")
    breaker = CircuitBreaker(work)
    limit = cfg.watchdog.heartbeat_timeout_s + cfg.watchdog.poll_interval_s + 10
    tripped = _wait(lambda: breaker.status().state is BreakerState.HALTED, limit, "the trip")
    t_trip = time.monotonic() - t0
    flat = _wait(lambda: _positions(cfg) == {}, 60, "the account to be flat")
    t_flat = time.monotonic() - t0
    if tripped:
        _say(f"drill: breaker HALTED {t_trip:.2f}s after the kill: {breaker.status().reason}")
    if flat is not None:
        _say(f"drill: the broker reports the account flat {t_flat:.2f}s after the kill")
    ok = bool(tripped) and flat is not None
    _say("drill: PASSED" if ok else "drill: FAILED -- act at the broker and read daemon.log")
    _say(
        f"drill: the drill's breaker stays HALTED in {work}; your own breaker and audit trail "
        "are untouched (the drill keeps its files under drills/)"
    )
    return 0 if ok else 1
