"""The command-line interface: python -m runtime <command> --config F."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

from data_lake import (
    DatabaseError,
    DataLakeMissing,
    IntentStatus,
    RedactingFilter,
    SnapshotError,
    StorageUnavailable,
    Store,
    breaker_history,
    db_path,
    last_safety_event,
    list_snapshots,
    load_snapshot,
    log_safety_event,
    open_readonly,
    query_trades,
    redact,
    register_secret,
    resolve_intent,
    status_summary,
    unresolved_intents,
)

from .breaker import BreakerUnwritable, CircuitBreaker, ResetRefused
from .config import Config, ConfigError, Secrets, load_config
from .heartbeat import read_heartbeat
from .main_loop import MAIN_HEARTBEAT, WATCHDOG_HEARTBEAT

__all__ = ["main"]


def _setup_logging(level: str, role: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {role}[%(process)d] %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("ib_insync").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    return cfg


def cmd_check(args: argparse.Namespace) -> int:
    from skills.swarm_core import SwarmConfigError, load_instances

    cfg = _config(args)
    try:
        instances, _ = load_instances(
            cfg.swarm.instances_dir, cfg.swarm.templates_dir, cfg.risk.model_dump()
        )
    except SwarmConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(
        f"{args.config}: ok (mode={cfg.mode}, broker {cfg.broker.host}:{cfg.broker.port}, "
        f"client {cfg.broker.client_id}, watchdog {cfg.broker.watchdog_client_id}, "
        f"data {cfg.data.dir}, {len(instances)} swarm instances)"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .main_loop import MainLoop

    cfg = _config(args)
    _setup_logging(args.log_level, "main")
    secrets = Secrets()
    register_secret(secrets.anthropic_api_key)
    return asyncio.run(MainLoop(cfg, args.config, secrets, max_cycles=args.max_cycles).run())


def cmd_watchdog(args: argparse.Namespace) -> int:
    from .watchdog import Watchdog

    cfg = _config(args)
    _setup_logging(args.log_level, "watchdog")
    secrets = Secrets()
    register_secret(secrets.anthropic_api_key)
    return asyncio.run(Watchdog(cfg, secrets).run())


def _hb(cfg: Config, name: str, timeout: float) -> dict[str, Any]:
    hb = read_heartbeat(cfg.data_dir / name)
    if hb is None:
        return {"present": False, "alive": False}
    age = time.monotonic() - hb.mono_ts
    return {
        "present": True,
        "pid": hb.pid,
        "age_s": round(age, 3),
        "cycle": hb.cycle,
        "phase": hb.phase,
        "alive": hb.phase != "stopped" and age <= timeout,
    }


def status_dict(cfg: Config) -> dict[str, Any]:
    db = open_readonly(cfg.data_dir)
    breaker = CircuitBreaker(cfg.data_dir).status()
    today = time.strftime("%Y-%m-%d", time.gmtime())
    summary = status_summary(db, today)
    timeout = cfg.watchdog.heartbeat_timeout_s
    return {
        "mode": cfg.mode,
        "breaker": {
            "state": breaker.state.value,
            "since": breaker.since,
            "source": breaker.source,
            "reason": breaker.reason,
            "actor": breaker.actor,
            "generation": breaker.generation,
        },
        "main": _hb(cfg, MAIN_HEARTBEAT, timeout),
        "watchdog": _hb(cfg, WATCHDOG_HEARTBEAT, timeout),
        **summary,
        "database": str(db_path(cfg.data_dir)),
    }


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _config(args)
    st = status_dict(cfg)
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0
    b = st["breaker"]
    print(
        f"mode {st['mode']}   breaker {b['state']} since {b['since'] or '-'} "
        f"({b['source']}: {b['reason']})"
    )
    for name in ("main", "watchdog"):
        h = st[name]
        if h["present"]:
            print(
                f"{name:9} pid {h['pid']} {'alive' if h['alive'] else 'NOT ALIVE'} "
                f"(heartbeat {h['age_s']:.1f}s ago, cycle {h['cycle']}, {h['phase']})"
            )
        else:
            print(f"{name:9} no heartbeat")
    lc = st["last_cycle"]
    if lc:
        print(
            f"last cycle {lc['id']}: {lc['status']} ({lc['n_signals']} signals, "
            f"{lc['n_decisions']} decisions, {lc['n_orders']} orders) {lc['error'] or ''}"
        )
    print(
        f"open intents {st['open_intents']}, unresolved {st['unresolved_intents']}, "
        f"executions today {st['executions_today']}, "
        f"LLM spend today ${st['llm_usd_today']:.4f}, safety events today "
        f"{st['safety_events_today']}"
    )
    if st["last_account"]:
        a = st["last_account"]
        print(
            f"account at {a['at']}: net liq {a['net_liquidation']:,.2f}, daily PnL "
            f"{(a['daily_pnl'] or 0):,.2f}"
        )
    print(f"database {st['database']}")
    return 0


def cmd_breaker(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.action == "reset":
        if not (args.by or "").strip() or not (args.reason or "").strip():
            print(
                "refused: a breaker reset needs the person's name (--by) and a reason",
                file=sys.stderr,
            )
            return 2
        store = Store.open(cfg.data_dir, busy_timeout_ms=cfg.data.busy_timeout_ms, name="cli")
        try:
            st = CircuitBreaker(cfg.data_dir, store).reset(by=args.by, reason=args.reason)
        except (ResetRefused, BreakerUnwritable) as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
        finally:
            store.close(5.0)
        print(f"breaker reset to {st.state.value} by {st.actor}: {st.reason}")
        return 0
    db = open_readonly(cfg.data_dir)
    st = CircuitBreaker(cfg.data_dir).status()
    actor = f" ({st.actor})" if st.actor else ""
    print(f"{st.state.value} since {st.since or '-'} by {st.source}{actor}: {st.reason}")
    for row in breaker_history(db, 10):
        print(
            f"  {row['at']} {row['from_state']} -> {row['to_state']} by {row['source']}"
            f"{' (' + row['actor'] + ')' if row['actor'] else ''}: {row['reason']}"
        )
    return 0


def _person(args: argparse.Namespace, what: str) -> str | None:
    """Return why a person's command is refused (no name or no reason), or None."""
    if not (args.by or "").strip() or not (args.reason or "").strip():
        return f"refused: {what} needs the person's name (--by) and a reason (--reason)"
    return None


def cmd_throttle(args: argparse.Namespace) -> int:
    from .gate_context import THROTTLE_LATCHED, THROTTLE_REENABLED

    cfg = _config(args)
    if args.action == "reenable":
        if (why := _person(args, "re-enabling the execution throttle")) is not None:
            print(why, file=sys.stderr)
            return 2
        store = Store.open(cfg.data_dir, busy_timeout_ms=cfg.data.busy_timeout_ms, name="cli")
        try:
            store.call(
                log_safety_event,
                "person",
                THROTTLE_REENABLED,
                args.reason,
                "warning",
                details={"by": args.by, "reason": args.reason},
                timeout=max(5.0, cfg.data.write_timeout_s),
            )
        finally:
            store.close(5.0)
        print(
            f"execution throttle re-enable recorded by {args.by}; the running daemon applies "
            "it at its next cycle (a breaker REDUCING from the throttle needs `breaker reset`)"
        )
        return 0
    db = open_readonly(cfg.data_dir)
    latch = last_safety_event(db, THROTTLE_LATCHED)
    again = last_safety_event(db, THROTTLE_REENABLED)
    latched = latch is not None and (again is None or again["id"] < latch["id"])
    print(f"execution throttle {'LATCHED' if latched else 'not latched'}")
    if latch:
        print(f"  last latched {latch['at']}: {latch['reason']}")
    if again:
        by = json.loads(again["details"] or "{}").get("by", "?")
        print(f"  last re-enabled {again['at']} by {by}: {again['reason']}")
    return 0


def cmd_intent(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.action == "resolve":
        if not args.order_ref:
            print("refused: name the intent's orderRef", file=sys.stderr)
            return 2
        if (why := _person(args, "resolving an intent")) is not None:
            print(why, file=sys.stderr)
            return 2
        store = Store.open(cfg.data_dir, busy_timeout_ms=cfg.data.busy_timeout_ms, name="cli")
        timeout = max(5.0, cfg.data.write_timeout_s)
        try:
            done = store.call(
                resolve_intent,
                args.order_ref,
                IntentStatus(args.status),
                args.by,
                args.reason,
                timeout=timeout,
            )
            if done:
                store.call(
                    log_safety_event,
                    "person",
                    "intent_resolved",
                    f"{args.order_ref} resolved as {args.status}: {args.reason}",
                    "warning",
                    details={"by": args.by, "reason": args.reason, "status": args.status},
                    order_ref=args.order_ref,
                    timeout=timeout,
                )
        finally:
            store.close(5.0)
        if not done:
            print(f"refused: intent {args.order_ref} is not unresolved", file=sys.stderr)
            return 2
        print(f"intent {args.order_ref} resolved as {args.status} by {args.by}")
        return 0
    rows = unresolved_intents(open_readonly(cfg.data_dir))
    if not rows:
        print("no unresolved intents")
    for r in rows:
        print(
            f"{r['order_ref']} {r['action']} {r['quantity']:g} {r['symbol']} {r['sec_type']} "
            f"(created {r['created_at']}): {r['last_error'] or ''}"
        )
    return 0


def cmd_panic(args: argparse.Namespace) -> int:
    from .watchdog import Watchdog

    cfg = _config(args)
    _setup_logging("WARNING", "panic")
    client_id = args.client_id if args.client_id is not None else cfg.broker.watchdog_client_id + 1
    flat = asyncio.run(Watchdog(cfg, Secrets()).panic(args.by, args.reason, client_id))
    print(
        "breaker HALTED; all orders cancelled; "
        + ("account flat" if flat else "NOT FLAT: act at the broker now")
    )
    return 0 if flat else 1


def cmd_trades(args: argparse.Namespace) -> int:
    cfg = _config(args)
    rows = query_trades(open_readonly(cfg.data_dir), symbol=args.symbol, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print(f"{'time':26} {'side':4} {'qty':>6} {'contract':28} {'price':>10} {'comm':>7} ref")
    for r in rows:
        contract = (
            r["symbol"]
            if r["sec_type"] == "STK"
            else f"{r['symbol']} {r['expiry']} {r['strike']:g}{r['opt_right']}"
        )
        print(
            f"{r['exec_time'][:26]:26} {r['side']:4} {r['shares']:>6g} {contract:28} "
            f"{r['price']:>10.2f} {(r['commission'] or 0):>7.2f} {r['order_ref'] or ''}"
        )
    return 0


def cmd_snapshots(args: argparse.Namespace) -> int:
    cfg = _config(args)
    db = open_readonly(cfg.data_dir)
    if args.show is not None or args.cycle is not None:
        print(
            json.dumps(
                load_snapshot(db, cfg.data_dir, snapshot_id=args.show, cycle_id=args.cycle),
                indent=1,
            )
        )
        return 0
    for row in list_snapshots(db, args.limit):
        print(
            f"{row['id']:6} cycle {row['cycle_id']} {row['at']} {row['size']:>8}B "
            f"{row['summary']} {row['path']}"
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.cycles, args.kill_drill, args.data_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtime", description="LLM-swarm trading daemon for IB (paper first)"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Any, help_: str, config: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        if config:
            p.add_argument("--config", required=True, help="TOML config file")
        p.set_defaults(func=func)
        return p

    add("check", cmd_check, "validate a config file and the swarm instances")
    p = add("run", cmd_run, "run the main loop (spawns the watchdog unless [watchdog] spawn=false)")
    p.add_argument("--max-cycles", type=int, default=None, help="stop cleanly after N cycles")
    p.add_argument("--log-level", default="INFO")
    p = add("watchdog", cmd_watchdog, "run the watchdog")
    p.add_argument("--log-level", default="INFO")
    p = add("status", cmd_status, "breaker, heartbeats, last cycle, account")
    p.add_argument("--json", action="store_true", help="machine-readable JSON")
    p = add("breaker", cmd_breaker, "show the breaker, or reset it (a person, with a reason)")
    p.add_argument("action", nargs="?", choices=["status", "reset"], default="status")
    p.add_argument("--by", help="who resets (required for reset)")
    p.add_argument("--reason", help="why (required for reset)")
    p = add("panic", cmd_panic, "kill switch: HALTED, cancel everything, close every position")
    p.add_argument("--by", default="operator")
    p.add_argument("--reason", default="manual panic")
    p.add_argument(
        "--client-id",
        type=int,
        default=None,
        help="API client id for the panic session (default watchdog id + 1)",
    )
    p = add(
        "throttle",
        cmd_throttle,
        "show the repeated-execution throttle, or re-enable it (a person, with a reason)",
    )
    p.add_argument("action", nargs="?", choices=["status", "reenable"], default="status")
    p.add_argument("--by", help="who re-enables (required)")
    p.add_argument("--reason", help="why (required)")
    p = add(
        "intent",
        cmd_intent,
        "list unresolved order intents, or resolve one after checking at the broker",
    )
    p.add_argument("action", nargs="?", choices=["list", "resolve"], default="list")
    p.add_argument("order_ref", nargs="?", help="the intent's orderRef (resolve)")
    p.add_argument(
        "--status",
        choices=["cancelled", "filled", "rejected"],
        default="cancelled",
        help="what the broker's records show (default cancelled)",
    )
    p.add_argument("--by", help="who resolves (required)")
    p.add_argument("--reason", help="why (required)")
    p = add("trades", cmd_trades, "list recorded executions")
    p.add_argument("--symbol")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p = add("snapshots", cmd_snapshots, "list decision snapshots, or print one")
    p.add_argument("--show", type=int, help="snapshot id to print")
    p.add_argument("--cycle", type=int, help="print the snapshot of this cycle")
    p.add_argument("--limit", type=int, default=20)
    p = add(
        "demo",
        cmd_demo,
        "run the demo: embedded paper gateway, offline swarm, watchdog",
        config=False,
    )
    p.add_argument("--cycles", type=int, default=5)
    p.add_argument(
        "--kill-drill",
        action="store_true",
        help="SIGKILL the main loop mid-run and show the watchdog flattening",
    )
    p.add_argument("--data-dir", default=None, help="where the demo keeps its files")
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (DataLakeMissing, SnapshotError, StorageUnavailable, DatabaseError, OSError) as exc:
        if args.debug:
            raise
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
