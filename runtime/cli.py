"""The command-line interface: python -m runtime <command> --config F."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from typing import Any

from data_lake import (
    DatabaseError,
    DataLakeMissing,
    RedactingFilter,
    SnapshotError,
    StorageUnavailable,
    Store,
    breaker_history,
    db_path,
    list_snapshots,
    load_snapshot,
    open_readonly,
    query_trades,
    redact,
    redacting_excepthook,
    register_secret,
    status_summary,
)

from .breaker import BreakerUnwritable, CircuitBreaker, ResetRefused
from .config import Config, ConfigError, Secrets, load_config
from .heartbeat import MAIN_HEARTBEAT, WATCHDOG_HEARTBEAT, read_heartbeat
from .instance_lock import InstanceLock, LockHeld, account_lock_path, acquire
from .notify import notify_urls
from .ownership import hand_back

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
    from .preflight import gateway_refusals, static_refusals

    cfg = _config(args)
    secrets = Secrets()
    reasons = static_refusals(cfg, secrets)
    if not args.offline and not reasons:
        reasons += asyncio.run(gateway_refusals(cfg, secrets))
    if reasons:
        print(f"{args.config}: refused", file=sys.stderr)
        for reason in reasons:
            print(f"  {redact(reason)}", file=sys.stderr)
        return 2
    from skills.swarm_core import load_instances

    instances, _ = load_instances(
        cfg.swarm.instances_dir, cfg.swarm.templates_dir, cfg.risk.model_dump()
    )
    gateway = "not checked (--offline)" if args.offline else "reachable, account ok"
    print(
        f"{args.config}: ok (mode={cfg.mode}, broker {cfg.broker.host}:{cfg.broker.port} "
        f"{gateway}, client {cfg.broker.client_id}, watchdog {cfg.broker.watchdog_client_id}, "
        f"data {cfg.data.dir}, {len(instances)} swarm instances)"
    )
    return 0


def _locks(cfg: Config, role: str) -> list[InstanceLock]:
    """Take this role's exclusive locks before anything is written or spawned."""
    held = [acquire(cfg.data_dir / f"{role}.lock", f"the {role} lock of {cfg.data_dir}")]
    if role == "run":
        b = cfg.broker
        try:
            held.append(
                acquire(
                    account_lock_path(cfg.data.lock_dir, b.host, b.port, b.account),
                    f"account {b.account or '(default)'} at {b.host}:{b.port}",
                )
            )
        except LockHeld:
            held[0].release()
            raise
    return held


def cmd_run(args: argparse.Namespace) -> int:
    from .main_loop import MainLoop

    cfg = _config(args)
    _setup_logging(args.log_level, "main")
    try:
        locks = _locks(cfg, "run")
    except LockHeld as exc:
        print(exc, file=sys.stderr)
        return 2
    secrets = Secrets()
    register_secret(secrets.anthropic_api_key)
    try:
        return asyncio.run(MainLoop(cfg, args.config, secrets, max_cycles=args.max_cycles).run())
    finally:
        for lock in locks:
            lock.release()


def cmd_watchdog(args: argparse.Namespace) -> int:
    from .watchdog import Watchdog

    cfg = _config(args)
    _setup_logging(args.log_level, "watchdog")
    try:
        locks = _locks(cfg, "watchdog")
    except LockHeld as exc:
        print(exc, file=sys.stderr)
        return 2
    secrets = Secrets()
    register_secret(secrets.anthropic_api_key)
    try:
        return asyncio.run(Watchdog(cfg, secrets).run())
    finally:
        for lock in locks:
            lock.release()


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
        f"open intents {st['open_intents']}, executions today {st['executions_today']}, "
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


def cmd_panic(args: argparse.Namespace) -> int:
    from .broker import BrokerError
    from .watchdog import Watchdog

    cfg = _config(args)
    _setup_logging("WARNING", "panic")
    client_id = args.client_id if args.client_id is not None else cfg.broker.watchdog_client_id + 1
    try:
        flat = asyncio.run(Watchdog(cfg, Secrets()).panic(args.by, args.reason, client_id))
    except (BrokerError, ConnectionError, OSError, TimeoutError) as exc:
        print(
            f"breaker HALTED (panic by {args.by}), but the gateway at {cfg.broker.host}:"
            f"{cfg.broker.port} could not be reached ({redact(str(exc)) or type(exc).__name__}):"
            " orders were NOT cancelled and the account may NOT be flat -- act at the broker now"
        )
        return 1
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


def _until_signalled() -> None:
    """Block until SIGTERM or SIGINT (a foreground command stopped by its supervisor)."""
    import signal
    import threading

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()


def _serve_metrics(cfg: Config, port: int | None = None) -> None:
    from .metrics import serve

    server, _ = serve(cfg, port=port)
    print(f"metrics on http://{cfg.metrics.host}:{server.server_port}/metrics", flush=True)


def cmd_notify(args: argparse.Namespace) -> int:
    from .notify import ENV_URLS, Notifier

    cfg = _config(args)
    _setup_logging(args.log_level, "notify")
    logging.getLogger("apprise").setLevel(logging.ERROR)
    urls = notify_urls()
    if not cfg.notify.enabled:
        print(f"{args.config}: [notify] enabled = false", file=sys.stderr)
        return 2
    if not urls:
        print(f"no notification URL: set {ENV_URLS} (Apprise URLs)", file=sys.stderr)
        return 2
    if args.test:
        return _notify_test(cfg, urls)
    notifier = Notifier(cfg, urls)
    notifier.start()
    if cfg.metrics.enabled:
        _serve_metrics(cfg)
    print(f"notifying {len(urls)} URL(s) from {ENV_URLS} for {cfg.data_dir}", flush=True)
    try:
        _until_signalled()
    finally:
        notifier.stop()
    return 0


def _notify_test(cfg: Config, urls: list[str]) -> int:
    """Send one test message to every URL; say which ones took it (by number, not by URL)."""
    from .notify import Alert, Sender

    senders = [Sender(url, cfg.notify.send_timeout_s, 1, i + 1) for i, url in enumerate(urls)]
    for sender in senders:
        sender.start()
        sender.put(
            Alert(
                "test",
                f"{cfg.notify.title_prefix}: test notification",
                f"ib-swarm notify --test for {cfg.data_dir} ({cfg.mode})",
                "info",
            )
        )
    failed = 0
    for sender in senders:
        sender.stop(cfg.notify.send_timeout_s * 2 + 5)
        ok = sender.stats.sent == 1
        failed += not ok
        print(f"URL #{sender.index}: {'delivered' if ok else 'NOT delivered'}")
    return 1 if failed else 0


def cmd_metrics(args: argparse.Namespace) -> int:
    cfg = _config(args)
    _setup_logging(args.log_level, "metrics")
    _serve_metrics(cfg, args.port)
    _until_signalled()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.cycles, args.kill_drill, args.data_dir)


def _with_ownership(args: argparse.Namespace) -> int:
    """Run the command; as root, hand whatever it created in the data dir back to its owner."""
    try:
        code: int = args.func(args)
    finally:
        if getattr(args, "config", None):
            with contextlib.suppress(ConfigError):
                hand_back(load_config(args.config).data_dir)
    return code


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

    p = add(
        "check",
        cmd_check,
        "refuse what run would refuse: config, swarm instances, API key, arming, gateway",
    )
    p.add_argument(
        "--offline", action="store_true", help="do not connect to the gateway (config only)"
    )
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
    p = add("trades", cmd_trades, "list recorded executions")
    p.add_argument("--symbol")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p = add("snapshots", cmd_snapshots, "list decision snapshots, or print one")
    p.add_argument("--show", type=int, help="snapshot id to print")
    p.add_argument("--cycle", type=int, help="print the snapshot of this cycle")
    p.add_argument("--limit", type=int, default=20)
    p = add("notify", cmd_notify, "send alerts (Apprise URLs in IB_SWARM_NOTIFY_URLS)")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--test", action="store_true", help="send one test message to each URL")
    p = add("metrics", cmd_metrics, "serve Prometheus metrics read from the database")
    p.add_argument("--port", type=int, default=None, help="override [metrics] port (0 = free)")
    p.add_argument("--log-level", default="INFO")
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
    register_secret(Secrets().anthropic_api_key)  # redacted from every line and traceback
    notify_urls()  # IB_SWARM_NOTIFY_URLS carry tokens: registered as secrets too
    sys.excepthook = redacting_excepthook
    try:
        result: int = _with_ownership(args)
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
