"""The command-line interface: python -m runtime <command> --config F."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import getpass
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from data_lake import (
    Contract,
    Database,
    DatabaseError,
    DataLakeMissing,
    IntentStatus,
    RedactingFilter,
    SnapshotError,
    StorageUnavailable,
    Store,
    backup_database,
    breaker_history,
    compress_snapshots,
    db_path,
    get_intent,
    last_safety_event,
    list_orders,
    list_safety_events,
    list_snapshots,
    llm_usage,
    load_snapshot,
    log_safety_event,
    open_readonly,
    price_words,
    prune_snapshots,
    query_trades,
    reason_line,
    redact,
    redacting_excepthook,
    register_secret,
    resolve_intent,
    status_summary,
    unresolved_intents,
)

from .breaker import (
    BreakerState,
    BreakerStatus,
    BreakerUnwritable,
    CircuitBreaker,
    ResetRefused,
    who_changed,
)
from .config import Config, ConfigError, Secrets, load_config
from .heartbeat import MAIN_HEARTBEAT, WATCHDOG_HEARTBEAT, is_same_process, read_heartbeat
from .instance_lock import (
    ANOTHER_WATCHDOG,
    InstanceLock,
    LockHeld,
    account_lock_path,
    acquire,
    role_lock_path,
)
from .notify import notify_urls
from .ownership import hand_back

__all__ = ["main"]


def _setup_logging(level: str, role: str, log_file: str | None = None) -> None:
    """Lines to stderr (journald/supervisord capture them), secrets redacted; optionally
    also to a rotating file (10 MiB x 5)."""
    fmt = logging.Formatter(f"%(asctime)s {role}[%(process)d] %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        from logging.handlers import RotatingFileHandler

        handlers.append(RotatingFileHandler(log_file, maxBytes=10 * 2**20, backupCount=5))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    for name in ("ib_insync", "ib_async"):  # whichever [broker] client_library loads
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    return cfg


def cmd_check(args: argparse.Namespace) -> int:
    from .broker import quiet_client_log
    from .preflight import gateway_refusals, static_refusals

    cfg = _config(args)
    secrets = Secrets()
    reasons = static_refusals(cfg, secrets)
    if not args.offline and not reasons:
        with quiet_client_log():  # an unreachable gateway is said once, below
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


def _gateway_account(cfg: Config) -> str:
    """The account the gateway reports for the main loop's client id, learned before anything
    is written (a client id already in use refuses here, exit 2); the config's own spelling
    when the gateway cannot be reached now (the main loop checks again once connected)."""
    from .broker import ClientIdInUse, probe_gateway

    for name in ("ib_insync", "ib_async"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        return asyncio.run(probe_gateway(cfg.broker, cfg.mode, Secrets(), cfg.broker.client_id))
    except ClientIdInUse as exc:
        raise LockHeld(f"refused: {exc}") from None
    except Exception:  # unreachable or not ready: decided again after connecting
        return cfg.broker.account


def _missing_from(path: Path) -> Path | None:
    """The outermost of `path` and its parents that does not exist yet (None: it exists)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _leave_no_trace(lock: InstanceLock, created: Path | None) -> None:
    """A `run` refused before it started, in a data directory it created itself (`created`:
    the outermost folder that did not exist before): remove the lock file and the folders,
    only while nothing but the lock is in them. A folder that existed before is never
    touched. The file goes while the lock is still held (nobody else took it meanwhile)."""
    try:
        if created is None or [p.name for p in lock.path.parent.iterdir()] != [lock.path.name]:
            return
        lock.path.unlink()
        lock.release()
        for folder in (lock.path.parent, *lock.path.parent.parents):
            folder.rmdir()  # an empty folder only: anything put there since stays
            if folder == created:
                break
    except OSError:  # someone else's file appeared, or no permission: leave it as it is
        pass
    finally:
        lock.release()


def _locks(cfg: Config, role: str, created: Path | None = None) -> list[InstanceLock]:
    """Take this role's exclusive locks before anything is written or spawned. A `run`
    refused here leaves no data directory behind when it was the one creating it
    (`created`: the outermost folder of it that did not exist before)."""
    held = [acquire(role_lock_path(cfg.data_dir, role), f"the {role} lock of {cfg.data_dir}")]
    if role == "run":
        b = cfg.broker
        try:
            account = _gateway_account(cfg)
            held.append(
                acquire(
                    account_lock_path(cfg.data.lock_dir, b.host, b.port, account),
                    f"account {account or '(default)'} at {b.host}:{b.port}",
                )
            )
        except LockHeld:
            _leave_no_trace(held[0], created)
            raise
    return held


def cmd_run(args: argparse.Namespace) -> int:
    from .main_loop import run_main_loop

    cfg = _config(args)
    _setup_logging(args.log_level, "main", args.log_file)
    created = _missing_from(cfg.data_dir)  # None: the data directory exists already
    try:
        locks = _locks(cfg, "run", created)
    except LockHeld as exc:
        print(exc, file=sys.stderr)
        return 2
    secrets = Secrets()
    register_secret(secrets.anthropic_api_key)
    code = 2
    try:
        code = asyncio.run(run_main_loop(cfg, args.config, secrets, max_cycles=args.max_cycles))
        return code
    finally:
        if code == 2:  # refused before it started (config, key, arming): its lock goes too
            _leave_no_trace(locks[0], created)
        for lock in locks:
            lock.release()


def cmd_watchdog(args: argparse.Namespace) -> int:
    from .watchdog import Watchdog, open_watchdog_store

    cfg = _config(args)
    _setup_logging(args.log_level, "watchdog", args.log_file)
    try:
        locks = _locks(cfg, "watchdog")
    except LockHeld as exc:
        if not args.spawned:  # spawned: the main loop says it in one line, and adopts it
            print(exc, file=sys.stderr)
        return ANOTHER_WATCHDOG
    secrets = Secrets()
    register_secret(secrets.anthropic_api_key)
    try:
        return asyncio.run(Watchdog.create(cfg, secrets, open_watchdog_store(cfg)).run())
    finally:
        for lock in locks:
            lock.release()


def _hb(cfg: Config, name: str, timeout: float) -> dict[str, Any]:
    hb = read_heartbeat(cfg.data_dir / name)
    if hb is None:
        return {"present": False, "alive": False}
    now = time.monotonic()
    age = now - hb.mono_ts
    same = is_same_process(hb)
    running = same if same is not None else psutil.pid_exists(hb.pid)
    out: dict[str, Any] = {
        "present": True,
        "pid": hb.pid,
        "running": running,
        "age_s": round(age, 3),
        "cycle": hb.cycle,
        "phase": hb.phase,
        "alive": running and hb.phase != "stopped" and age <= timeout,
    }
    if name == MAIN_HEARTBEAT:
        out["broker_session"] = hb.session if out["alive"] else None
        out["waiting"] = hb.waiting if out["alive"] else None
        # what IB's error codes say now (10197 refusing all orders ...), while the loop lives
        out["conditions"] = list(hb.conditions) if out["alive"] else []
    if name == WATCHDOG_HEARTBEAT:
        # alive also needs a broker session that polled the account within the timeout
        poll_age = hb.account_poll_age(now)
        session = hb.session or "unknown"
        if hb.phase == "stopped":
            session = "stopped"
        elif session == "connected" and (poll_age is None or poll_age > timeout):
            session = "unreachable"  # the heartbeat says connected, but the poll is old
        out["polls"] = hb.cycle  # a watchdog's count is of its polls ("cycle": kept, the same)
        out["session"] = session
        out["last_account_poll_age_s"] = None if poll_age is None else round(poll_age, 3)
        out["last_account_poll_at"] = (
            None
            if hb.account_poll_mono is None
            else time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(hb.wall_ts - (hb.mono_ts - hb.account_poll_mono))
            )
        )
        out["alive"] = out["alive"] and session == "connected"
    return out


def _live(cfg: Config, timeout: float = 2.0) -> dict[str, Any]:
    """The account from the broker itself, now (a short read-only session), or why not."""
    from .broker import probe_account, quiet_client_log

    try:  # nothing listening: say so without loading the client library (CLI start-up)
        socket.create_connection((cfg.broker.host, cfg.broker.port), timeout=timeout).close()
    except TimeoutError:
        return {"reachable": False, "error": f"no answer from the gateway within {timeout:g}s"}
    except OSError as exc:
        return {"reachable": False, "error": redact(f"{type(exc).__name__}: {exc}")}
    client_id = cfg.broker.watchdog_client_id + 4  # panic +1, drill +2/+3
    try:
        with quiet_client_log():  # we say it in one line below
            live = asyncio.run(probe_account(cfg.broker, cfg.mode, Secrets(), client_id, timeout))
    except TimeoutError:  # connected but no answer: a frozen or restarting gateway
        return {"reachable": False, "error": f"no answer from the gateway within {timeout:g}s"}
    except Exception as exc:  # unreachable, busy, refused: the database answers instead
        return {"reachable": False, "error": redact(f"{type(exc).__name__}: {exc}")}
    return {"reachable": True, **live}


def _age_s(iso: str | None) -> float | None:
    import datetime as dt

    if not iso:
        return None
    try:
        at = dt.datetime.fromisoformat(iso)
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return round((dt.datetime.now(dt.UTC) - at).total_seconds(), 1)


def _stop_price(db: Database, order: dict[str, Any]) -> None:
    """A broker's open order gets its trigger (`aux_price`): the broker's own, else the one
    our stored intent of that orderRef sent."""
    if order.get("aux_price") is None and order.get("order_ref"):
        intent = get_intent(db, order["order_ref"])
        order["aux_price"] = (intent or {}).get("aux_price")


def status_dict(cfg: Config, live: bool = True) -> dict[str, Any]:
    db = open_readonly(cfg.data_dir)
    breaker = CircuitBreaker(cfg.data_dir).status()
    today = time.strftime("%Y-%m-%d", time.gmtime())
    summary = status_summary(db, today)
    timeout = cfg.watchdog.heartbeat_timeout_s
    broker: dict[str, Any] = (
        _live(cfg) if live else {"reachable": False, "error": "not asked (--offline)"}
    )
    for o in broker.get("open_orders") or []:
        _stop_price(db, o)
    return {
        "mode": cfg.mode,
        "breaker": _breaker_doc(breaker),
        "main": _hb(cfg, MAIN_HEARTBEAT, timeout),
        "watchdog": _hb(cfg, WATCHDOG_HEARTBEAT, timeout),
        **summary,
        "last_account_age_s": _age_s((summary.get("last_account") or {}).get("at")),
        "llm_budget_usd_per_day": cfg.swarm.max_usd_per_day,
        "live": broker,
        "database": str(db_path(cfg.data_dir)),
    }


NOTHING_ALIVE = 3  # `status`: neither the main loop nor the watchdog is alive


def status_exit_code(st: dict[str, Any]) -> int:
    """`status` exits 0 while the main loop or the watchdog is alive, NOTHING_ALIVE when
    neither is (2, a missing data dir or unreadable database, is decided before)."""
    return 0 if st["main"]["alive"] or st["watchdog"]["alive"] else NOTHING_ALIVE


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _config(args)
    st = status_dict(cfg, live=not args.offline)
    code = status_exit_code(st)
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return code
    b = st["breaker"]
    print(
        f"mode {st['mode']}   breaker {b['state']} since {b['since'] or '-'} "
        f"({who_changed(b['source'] or '', b.get('actor'))}: {b['reason']})"
    )
    for name in ("main", "watchdog"):
        h = st[name]
        if h["present"]:
            session = ""
            if "session" in h:
                poll = h["last_account_poll_age_s"]
                session = f", broker session {h['session']}, last account poll " + (
                    f"{poll:.1f}s ago" if poll is not None else "never"
                )
            elif h.get("broker_session"):
                session = f", broker session {h['broker_session']}"
            print(
                f"{name:9} pid {h['pid']} {'alive' if h['alive'] else 'NOT ALIVE'} "
                f"(heartbeat {h['age_s']:.1f}s ago, "
                f"{'cycle' if name == 'main' else 'poll'} {h['cycle']}, {h['phase']}"
                f"{session}{'' if h['running'] else ', process gone'})"
            )
            for line in h.get("conditions", []):
                print(f"{'':9} broker: {line}")
        else:
            print(f"{name:9} no heartbeat")
    if st["main"].get("waiting"):
        print(st["main"]["waiting"])
    live = st["live"]
    if live["reachable"]:
        daily = live["daily_pnl"]
        print(
            f"account {live['account']} (live from the broker): net liq "
            f"{live['net_liquidation'] or 0:,.2f}, daily PnL "
            + (f"{daily:,.2f}" if daily is not None else "not reported yet")
        )
        for p in live["positions"]:
            print(f"  position {p['quantity']:g} {p['contract']} avg cost {p['avg_cost']:.2f}")
        for o in live["open_orders"]:
            price = price_words(o["limit_price"], o.get("aux_price"))
            print(
                f"  open order {o['action']} {o['quantity']:g} {o['contract']} "
                f"{o['order_type']}{price} {o['status']} (client {o['client_id']}, "
                f"ref {o['order_ref'] or '-'})"
            )
        if not live["positions"] and not live["open_orders"]:
            print("  flat, no open orders")
    elif st["last_account"]:
        a = st["last_account"]
        print(
            f"broker not reachable ({live['error']}); from the database, "
            f"{st['last_account_age_s']:.0f}s old: net liq {a['net_liquidation'] or 0:,.2f}, "
            f"daily PnL " + (f"{a['daily_pnl']:,.2f}" if a["daily_pnl"] is not None else "unknown")
        )
    else:
        print(f"broker not reachable ({live['error']}); no account figures recorded yet")
    for c in st["recent_cycles"]:
        print(
            f"cycle {c['id']} at {c['started_at'][:19]}: {c['status']} ({c['n_signals']} "
            f"signals, {c['n_decisions']} decisions, {c['n_orders']} orders)"
            + (f" {c['error']}" if c["error"] else "")
        )
    print(
        f"open intents {st['open_intents']}, unresolved {st['unresolved_intents']}, "
        f"executions today {st['executions_today']}, safety events today "
        f"{st['safety_events_today']}, LLM spend today ${st['llm_usd_today']:.4f} of "
        f"${st['llm_budget_usd_per_day']:.2f}"
    )
    for r in st["refusals_today"]:  # reasons that differ only in numbers count as one
        print(f"  refused today {reason_line(r).lstrip()}")
    print(f"database {st['database']}")
    if code == NOTHING_ALIVE:
        print(f"NOTHING ALIVE: neither the main loop nor the watchdog (exit {NOTHING_ALIVE})")
    return code


def _refuse(args: argparse.Namespace, message: str, code: int = 2) -> int:
    """A refused command: one line on stderr and, under --json, {"error": ...} on stdout
    (the shape every --json command uses for an error)."""
    if getattr(args, "json", False):
        print(json.dumps({"error": message}))
    print(message, file=sys.stderr)
    return code


def _person(args: argparse.Namespace, what: str) -> str | None:
    """Why a person's command is refused, naming each missing flag (who: --by NAME, why:
    --reason TEXT; both are recorded), or None."""
    missing = [
        text
        for flag, text in (
            ("by", "the person's name (--by NAME)"),
            ("reason", "a reason (--reason TEXT)"),
        )
        if not (getattr(args, flag, None) or "").strip()
    ]
    return f"refused: {what} needs {' and '.join(missing)}" if missing else None


def _breaker_doc(st: BreakerStatus) -> dict[str, Any]:
    """The breaker in the shape of `status --json`'s "breaker" (every --json carrying it)."""
    return {
        "state": st.state.value,
        "since": st.since,
        "source": st.source,
        "reason": st.reason,
        "actor": st.actor,
        "generation": st.generation,
    }


def _breaker_change(
    action: str, old: BreakerStatus, new: BreakerStatus, changed: bool
) -> dict[str, Any]:
    """The result of `breaker trip|reset --json`: the breaker now, and what changed."""
    return {
        **_breaker_doc(new),
        "action": action,
        "changed": changed,
        "previous_state": old.state.value,
        "persisted": new.persisted,
    }


def _quiet_breaker_log() -> None:
    """A person's trip or reset is printed once, by the CLI: the breaker's own log line
    (which would reach stderr through logging's last-resort handler) says nothing more."""
    logging.getLogger("runtime.breaker").setLevel(logging.CRITICAL + 1)


def _breaker_trip(args: argparse.Namespace, cfg: Config) -> int:
    if (why := _person(args, "a breaker trip")) is not None:
        return _refuse(args, why)
    _quiet_breaker_log()
    store = Store.open(cfg.data_dir, busy_timeout_ms=cfg.data.busy_timeout_ms, name="cli")
    try:
        breaker = CircuitBreaker(cfg.data_dir, store)
        old = breaker.status()
        reason = f"tripped by {args.by}: {args.reason}"
        st = breaker.trip(BreakerState(args.state), "person", reason, actor=args.by)
    finally:
        store.close(5.0)
    changed = st.generation != old.generation  # trip() never de-escalates: same or higher
    if args.json:
        print(json.dumps(_breaker_change("trip", old, st, changed), indent=2, default=str))
    elif changed:
        print(
            f"breaker {old.state.value} -> {st.state.value} since {st.since} ({st.reason})"
            + ("" if st.persisted else " -- NOT PERSISTED: the file could not be written")
        )
    else:
        print(f"breaker already {st.state.value} since {st.since} ({st.reason}): not changed")
    return 0 if st.persisted else 1


def _answer() -> str | None:
    """One line from stdin, terminal or not (a pipe, a file, /dev/null); None at EOF, on a
    closed stdin or on Ctrl-C: nobody answered."""
    if sys.stdin is None:
        return None
    try:
        line = sys.stdin.readline()
    except (KeyboardInterrupt, OSError, ValueError):  # ValueError: stdin already closed
        return None
    return line if line else None


def _not_confirmed(args: argparse.Namespace, current: BreakerStatus) -> str | None:
    """Ask before a reset without --yes, wherever stdin comes from: only y or yes
    (any case) confirms. Why it is not confirmed, or None. The prompt goes to stdout, or
    to stderr under --json (stdout keeps the document)."""
    ask = sys.stderr if args.json else sys.stdout
    print(
        f"breaker is {current.state.value} since {current.since or '-'}: {current.reason}",
        file=ask,
    )
    print("reset it to ACTIVE (new orders allowed again)? [y/N] ", end="", file=ask, flush=True)
    answer = _answer()
    if answer is None or not sys.stdin.isatty():
        print(file=ask, flush=True)  # nothing echoed the answer's newline: end the prompt line
    if answer is None:
        return "not reset: not confirmed (no answer on stdin; --yes resets without asking)"
    if answer.strip().lower() in ("y", "yes"):
        return None
    return "not reset: not confirmed (the answer was not y or yes)"


def _breaker_reset(args: argparse.Namespace, cfg: Config) -> int:
    if (why := _person(args, "a breaker reset")) is not None:
        return _refuse(args, why)
    current = CircuitBreaker(cfg.data_dir).status()
    if current.state is BreakerState.ACTIVE:
        if args.json:
            doc = _breaker_change("reset", current, current, False)
            print(json.dumps(doc, indent=2, default=str))
        else:
            print(f"breaker already ACTIVE (since {current.since or '-'}): nothing to reset")
        return 0
    if not args.yes and (no := _not_confirmed(args, current)) is not None:
        if args.json:  # the breaker as it stays, and why: exit 1 like any unconfirmed reset
            doc = {**_breaker_change("reset", current, current, False), "error": no}
            print(json.dumps(doc, indent=2, default=str))
        print(no, file=sys.stderr)
        return 1
    _quiet_breaker_log()
    store = Store.open(cfg.data_dir, busy_timeout_ms=cfg.data.busy_timeout_ms, name="cli")
    try:
        st = CircuitBreaker(cfg.data_dir, store).reset(by=args.by, reason=args.reason)
    except (ResetRefused, BreakerUnwritable) as exc:
        return _refuse(args, f"refused: {exc}")
    finally:
        store.close(5.0)
    if args.json:
        print(json.dumps(_breaker_change("reset", current, st, True), indent=2, default=str))
    else:
        print(f"breaker reset {current.state.value} -> {st.state.value} by {st.actor}: {st.reason}")
    return 0


def cmd_breaker(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.action == "trip":
        return _breaker_trip(args, cfg)
    if args.action == "reset":
        return _breaker_reset(args, cfg)
    db = open_readonly(cfg.data_dir)
    st = CircuitBreaker(cfg.data_dir).status()
    if args.json:
        doc = {**_breaker_doc(st), "history": breaker_history(db, 10)}
        print(json.dumps(doc, indent=2, default=str))
        return 0
    actor = f" ({st.actor})" if st.actor and st.actor != st.source else ""
    print(f"{st.state.value} since {st.since or '-'} by {st.source}{actor}: {st.reason}")
    for row in breaker_history(db, 10):
        print(
            f"  {row['at']} {row['from_state']} -> {row['to_state']} by {row['source']}"
            + (f" ({row['actor']})" if row["actor"] and row["actor"] != row["source"] else "")
            + f": {row['reason']}"
        )
    return 0


def _throttle_doc(db: Database) -> dict[str, Any]:
    """The repeated-execution throttle: latched or not, its last latch and re-enable."""
    from .gate_context import THROTTLE_LATCHED, THROTTLE_REENABLED

    latch = last_safety_event(db, THROTTLE_LATCHED)
    again = last_safety_event(db, THROTTLE_REENABLED)
    return {
        "latched": latch is not None and (again is None or again["id"] < latch["id"]),
        "last_latched": None if latch is None else {k: latch[k] for k in ("at", "reason")},
        "last_reenabled": None
        if again is None
        else {
            "at": again["at"],
            "by": json.loads(again["details"] or "{}").get("by"),
            "reason": again["reason"],
        },
    }


def cmd_throttle(args: argparse.Namespace) -> int:
    from .gate_context import THROTTLE_REENABLED

    cfg = _config(args)
    if args.action == "reenable":
        if (why := _person(args, "re-enabling the execution throttle")) is not None:
            return _refuse(args, why)
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
        applies = (
            "the running daemon applies it at its next cycle (a breaker REDUCING from the "
            "throttle needs `breaker reset`)"
        )
        if args.json:
            doc = {**_throttle_doc(open_readonly(cfg.data_dir)), "action": "reenable"}
            print(json.dumps({**doc, "applies": applies}, indent=2, default=str))
        else:
            print(f"execution throttle re-enable recorded by {args.by}; {applies}")
        return 0
    doc = _throttle_doc(open_readonly(cfg.data_dir))
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return 0
    print(f"execution throttle {'LATCHED' if doc['latched'] else 'not latched'}")
    if (latch := doc["last_latched"]) is not None:
        print(f"  last latched {latch['at']}: {latch['reason']}")
    if (again := doc["last_reenabled"]) is not None:
        print(f"  last re-enabled {again['at']} by {again['by'] or '?'}: {again['reason']}")
    return 0


def cmd_intent(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.action == "resolve":
        if not args.order_ref:
            return _refuse(args, "refused: name the intent's orderRef")
        if (why := _person(args, "resolving an intent")) is not None:
            return _refuse(args, why)
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
            return _refuse(args, f"refused: intent {args.order_ref} is not unresolved")
        if args.json:
            doc = {
                "action": "resolve",
                "resolved": {
                    "order_ref": args.order_ref,
                    "status": args.status,
                    "by": args.by,
                    "reason": args.reason,
                },
                "unresolved": unresolved_intents(open_readonly(cfg.data_dir)),
            }
            print(json.dumps(doc, indent=2, default=str))
        else:
            print(f"intent {args.order_ref} resolved as {args.status} by {args.by}")
        return 0
    rows = unresolved_intents(open_readonly(cfg.data_dir))
    if args.json:
        print(json.dumps({"unresolved": rows}, indent=2, default=str))
        return 0
    if not rows:
        print("no unresolved intents")
    for r in rows:
        print(
            f"{r['order_ref']} {r['action']} {r['quantity']:g} {r['symbol']} {r['sec_type']} "
            f"(created {r['created_at']}): {r['last_error'] or ''}"
        )
    return 0


def cmd_panic(args: argparse.Namespace) -> int:
    from .broker import BrokerError
    from .watchdog import run_panic

    cfg = _config(args)
    _setup_logging("WARNING", "panic")
    if not (args.by or "").strip():
        args.by = f"{getpass.getuser()} (OS user; no --by given)"
    client_id = args.client_id if args.client_id is not None else cfg.broker.watchdog_client_id + 1
    try:
        print("panic: tripping the breaker, cancelling every order, closing every position ...")
        flat = asyncio.run(
            run_panic(
                cfg,
                Secrets(),
                args.by,
                args.reason,
                client_id,
                progress=lambda line: print(f"  {line}", flush=True),
            )
        )
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


def _since(text: str | None) -> str | None:
    """--since: an ISO date or time (2026-11-20, 2026-11-20T14:00) or an age (7d, 12h)."""
    if not text:
        return None
    if text[-1] in "dhms" and text[:-1].replace(".", "", 1).isdigit():
        return _before(_duration_s(text))
    import datetime as dt

    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r}: use a date (2026-11-20) or an age (7d)") from None
    return text


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str, int]]) -> None:
    """Print rows as aligned columns: (key, title, width); a negative width aligns right."""
    print(" ".join(f"{t:>{-w}}" if w < 0 else f"{t:{w}}" for _, t, w in columns).rstrip())
    for r in rows:
        cells = []
        for key, _, w in columns:
            v = r.get(key)
            text = "" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))
            cells.append(f"{text:>{-w}}" if w < 0 else f"{text[:w]:{w}}")
        print(" ".join(cells).rstrip())


def _listing(args: argparse.Namespace, rows: list[dict[str, Any]], cols: Any) -> int:
    if args.json:
        print(json.dumps(redact(rows), indent=2, default=str))
    else:
        _table(rows, cols)
    return 0


def cmd_orders(args: argparse.Namespace) -> int:
    cfg = _config(args)
    rows = list_orders(
        open_readonly(cfg.data_dir),
        status=args.status,
        symbol=args.symbol,
        source=args.source,
        since=_since(args.since),
        limit=args.limit,
    )
    for r in rows:
        r["contract"] = Contract.from_row(r).key
    cols = [
        ("created_at", "created", 26),
        ("source", "source", 9),
        ("action", "side", 4),
        ("quantity", "qty", -6),
        ("contract", "contract", 24),
        ("order_type", "type", 4),
        ("limit_price", "limit", -9),
        ("aux_price", "trigger", -9),
        ("status", "status", 10),
        ("filled", "filled", -6),
        ("order_ref", "ref", 24),
    ]
    return _listing(args, rows, cols)


def cmd_safety_events(args: argparse.Namespace) -> int:
    cfg = _config(args)
    rows = list_safety_events(
        open_readonly(cfg.data_dir),
        kind=args.kind,
        severity=args.severity,
        source=args.source,
        since=_since(args.since),
        limit=args.limit,
    )
    cols = [
        ("at", "at", 26),
        ("severity", "severity", 8),
        ("source", "source", 9),
        ("kind", "kind", 20),
        ("reason", "reason", 90),
    ]
    return _listing(args, rows, cols)


def cmd_llm_usage(args: argparse.Namespace) -> int:
    cfg = _config(args)
    rows = llm_usage(open_readonly(cfg.data_dir), instance=args.instance, since=_since(args.since))
    cols = [
        ("day", "day", 10),
        ("instance_id", "instance", 22),
        ("model", "model", 18),
        ("calls", "calls", -6),
        ("input_tokens", "input", -9),
        ("cache_read_tokens", "cache rd", -9),
        ("cache_write_tokens", "cache wr", -9),
        ("output_tokens", "output", -8),
        ("cost_usd", "usd", -10),
    ]
    return _listing(args, rows, cols)


def cmd_trades(args: argparse.Namespace) -> int:
    cfg = _config(args)
    rows = query_trades(
        open_readonly(cfg.data_dir), symbol=args.symbol, since=_since(args.since), limit=args.limit
    )
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print(f"{'time':26} {'side':4} {'qty':>6} {'contract':28} {'price':>10} {'comm':>7} ref")
    for r in rows:
        contract = Contract.from_row(r).key
        print(
            f"{r['exec_time'][:26]:26} {r['side']:4} {r['shares']:>6g} {contract:28} "
            f"{r['price']:>10.2f} {(r['commission'] or 0):>7.2f} {r['order_ref'] or ''}"
        )
    return 0


def _duration_s(text: str) -> float:
    """'30d', '12h', '90m', '45s' -> seconds."""
    units = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
    if not text or text[-1] not in units or not text[:-1].replace(".", "", 1).isdigit():
        raise ConfigError(f"duration {text!r}: use a number and d, h, m or s (e.g. 30d)")
    return float(text[:-1]) * units[text[-1]]


def _before(seconds: float) -> str:
    import datetime as dt

    return (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)).isoformat()


def cmd_snapshots(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.action == "prune":
        return _prune(cfg, args)
    if args.id is not None and args.action != "show":
        print(f"refused: a snapshot id goes with `snapshots show` ({args.id})", file=sys.stderr)
        return 2
    if args.id is not None:
        args.show = args.id
    if args.action == "show" and args.show is None and args.cycle is None:
        print(
            "refused: `snapshots show` needs an id (snapshots show N, or --cycle N)",
            file=sys.stderr,
        )
        return 2
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


def _prune(cfg: Config, args: argparse.Namespace) -> int:
    if not args.older_than and not args.compress_after:
        print("refused: give --older-than AGE and/or --compress-after AGE", file=sys.stderr)
        return 2
    open_readonly(cfg.data_dir)  # a missing database: one line, exit 2
    store = Store.open(cfg.data_dir, busy_timeout_ms=cfg.data.busy_timeout_ms, name="cli")
    verb = "would" if args.dry_run else ""
    try:
        if args.compress_after:
            n, saved = store.call(
                compress_snapshots,
                cfg.data_dir,
                _before(_duration_s(args.compress_after)),
                args.dry_run,
                timeout=600,
            )
            print(
                f"{verb or 'compressed'} {'compress ' if verb else ''}{n} snapshots "
                f"older than {args.compress_after}: {saved / 2**20:.1f} MiB saved"
            )
        if args.older_than:
            n, freed = store.call(
                prune_snapshots,
                cfg.data_dir,
                _before(_duration_s(args.older_than)),
                args.dry_run,
                timeout=600,
            )
            print(
                f"{verb or 'deleted'} {'delete ' if verb else ''}{n} snapshots older than "
                f"{args.older_than}: {freed / 2**20:.1f} MiB freed"
            )
            if n and not args.dry_run:
                store.post(
                    log_safety_event,
                    "person",
                    "snapshots_pruned",
                    f"{n} snapshots older than {args.older_than} deleted",
                    "info",
                )
    finally:
        store.close(10)
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    cfg = _config(args)
    open_readonly(cfg.data_dir)  # a missing database: one line, exit 2

    def progress(done: int, total: int) -> None:
        print(f"\r  {done}/{total} pages", end="", file=sys.stderr, flush=True)

    dest = backup_database(cfg.data_dir, args.dest, progress)  # a str: keeps a trailing /
    print(file=sys.stderr)
    print(f"backup of {db_path(cfg.data_dir)} written to {dest} (integrity ok)")
    if args.with_snapshots:
        import shutil

        snaps = cfg.data_dir / "snapshots"
        if snaps.is_dir():
            target = dest.with_name(dest.stem + "-snapshots")
            shutil.copytree(snaps, target)
            print(f"snapshots copied to {target}")
    return 0


def cmd_why(args: argparse.Namespace) -> int:
    from .why import UnknownRef, render_story, trade_story

    cfg = _config(args)
    try:
        story = trade_story(open_readonly(cfg.data_dir), cfg.data_dir, args.ref)
    except UnknownRef as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(redact(story), indent=2, default=str))
    else:
        print(redact(render_story(story)))
    return 0


def _replay_error(args: argparse.Namespace, message: str, missing: list[str] | None = None) -> int:
    """Say why nothing can be replayed (JSON with --json); exit 2."""
    if args.json:
        doc: dict[str, Any] = {"error": redact(message)}
        if missing is not None:
            doc["missing"] = missing
        print(json.dumps(doc))
    print(f"error: {redact(message)}", file=sys.stderr)
    return 2


def _replay_bound(text: str, end: bool) -> dt.datetime:
    """A --from/--to value (YYYY-MM-DD, UTC; --to includes its day, or an ISO time, UTC
    unless it says otherwise) as a UTC time to compare snapshot times with."""
    try:
        if len(text) == 10:
            day = dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.UTC)
            return day + dt.timedelta(days=1) if end else day
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--{'to' if end else 'from'} {text!r}: use a date (2026-11-20) or an ISO time"
        ) from None
    return (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def _replay_range(start: str, end: str) -> tuple[str, str]:
    """--from and --to as the ISO times (UTC) snapshot times are compared with; a range
    that ends before it starts is refused."""
    first, last = _replay_bound(start, False), _replay_bound(end, True)
    if first >= last:
        raise ConfigError(
            f"--from {start} is after --to {end}"
            if start != end
            else f"--from {start} --to {end} is an empty range"
        )
    return first.isoformat(), last.isoformat()


def cmd_replay(args: argparse.Namespace) -> int:

    from data_lake import snapshots_between

    from .replay import CannotReplay, replay_cycle
    from .replay_summary import summarise
    from .replay_view import render_replay, render_summary

    ranged = args.start is not None or args.end is not None
    if args.cycle is not None and ranged:
        return _replay_error(args, "give a CYCLE or --from DATE --to DATE, not both")
    if not ranged and args.cycle is None:
        return _replay_error(args, "give a CYCLE, or --from DATE and --to DATE")
    if args.end is None and args.start is not None:
        return _replay_error(args, f"--from {args.start} needs --to DATE (the range's last day)")
    if args.start is None and args.end is not None:
        return _replay_error(args, f"--to {args.end} needs --from DATE (the range's first day)")
    if args.config is None and args.data_dir is None:
        return _replay_error(args, "give --config F (its [data] dir is read) or --data-dir DIR")
    try:
        cfg = load_config(args.config) if args.config else None
        bounds = _replay_range(args.start, args.end) if ranged else None
    except ConfigError as exc:
        return _replay_error(args, str(exc))
    data_dir = Path(args.data_dir) if args.data_dir else cfg.data_dir  # type: ignore[union-attr]
    with_cfg = None if args.recorded_config else cfg
    source = "the recorded config" if with_cfg is None else str(args.config)
    db = open_readonly(data_dir)  # read-only; a missing data dir or database: exit 2
    if bounds is None:
        try:
            doc = load_snapshot(db, data_dir, cycle_id=args.cycle)
            result = replay_cycle(doc, with_cfg, "recorded" if with_cfg is None else source)
        except CannotReplay as exc:
            return _replay_error(args, str(exc), exc.missing)
        if args.json:
            print(json.dumps(redact(result.as_dict()), indent=2, default=str))
        else:
            print(redact(render_replay(result)))
        return 0 if result.identical else 1
    replays, refused = [], []
    for row in snapshots_between(db, *bounds):
        try:
            doc = load_snapshot(db, data_dir, snapshot_id=row["id"])
            replays.append(replay_cycle(doc, with_cfg, "recorded" if with_cfg is None else source))
        except CannotReplay as exc:
            refused.append({"cycle_id": row["cycle_id"], "missing": exc.missing})
        except SnapshotError as exc:
            refused.append({"cycle_id": row["cycle_id"], "missing": [str(exc)]})
    summary = summarise(replays, refused)
    if not replays:
        what = "cannot be replayed" if refused else "has no cycle snapshots"
        return _replay_error(
            args,
            f"the range {args.start} .. {args.end} {what}",
            [m for c in refused for m in c["missing"]] or None,
        )
    if args.json:
        print(json.dumps(redact(summary), indent=2, default=str))
    else:
        print(redact(render_summary(summary, args.start, args.end, source)))
    return 0 if summary["different"] == 0 and not refused else 1


def cmd_inspect(args: argparse.Namespace) -> int:
    import tempfile

    from .datasette_view import free_port, serve_args

    cfg = _config(args)
    open_readonly(cfg.data_dir)  # a missing or unreadable database: one line, exit 2
    # --port 0: the system picks a free port now, and that one is printed and served
    port = args.port or free_port(args.host)
    meta = Path(tempfile.mkdtemp(prefix="ib-swarm-inspect-")) / "metadata.json"
    argv = serve_args(db_path(cfg.data_dir), meta, args.host, port)
    print(
        f"Datasette on http://{args.host}:{port}/ -- {db_path(cfg.data_dir)}, read-only "
        "(Ctrl-C stops it)",
        flush=True,
    )
    from datasette.cli import cli as datasette_cli

    datasette_cli.main(args=argv, prog_name="datasette", standalone_mode=False)
    return 0


def cmd_drill(args: argparse.Namespace) -> int:

    from .drill import run_drill

    cfg = _config(args)
    return run_drill(Path(args.config), cfg, args.yes, args.symbol.upper(), args.quantity)


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

    return run_demo(args.cycles, args.kill_drill, args.data_dir, args.protect)


def _with_ownership(args: argparse.Namespace) -> int:
    """Run the command; as root, hand whatever it created in the data dir back to its owner."""
    try:
        code: int = args.func(args)
    finally:
        if getattr(args, "config", None):
            with contextlib.suppress(ConfigError):
                hand_back(load_config(args.config).data_dir)
    return code


# who stores order intents (order_intents.source): the commander's decisions, the watchdog's
# closing orders, a person's (drill) orders
INTENT_SOURCES = ["commander", "watchdog", "panic", "person"]  # panic: the panic command


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a bad one: exit 2, naming it)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0 to 65535)")
    return value


def _symbol(text: str) -> str:
    """An argparse type: a symbol, in IB's upper case whatever case it was typed in."""
    return text.strip().upper()


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
    p.add_argument("--log-file", help="also log to this file, rotated at 10 MiB (5 kept)")
    p = add("watchdog", cmd_watchdog, "run the watchdog")
    p.epilog = (
        f"exit status: {ANOTHER_WATCHDOG} another watchdog already watches this data directory "
        "(refused with its pid)"
    )
    # set by a main loop that spawns its watchdog: a refusal because one already watches is
    # said by the main loop ("a watchdog is already running (pid N): adopting it"), once
    p.add_argument("--spawned", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--log-file", help="also log to this file, rotated at 10 MiB (5 kept)")
    p = add("status", cmd_status, "breaker, heartbeats, account (live), cycles, refusals, spend")
    p.epilog = (
        f"exit status: 0 the main loop or the watchdog is alive; {NOTHING_ALIVE} neither is "
        "(nothing is running, or nothing that is running is alive); 2 the data directory is "
        "missing or the database cannot be read"
    )
    p.add_argument("--json", action="store_true", help="machine-readable JSON")
    p.add_argument(
        "--offline", action="store_true", help="do not ask the broker (database figures only)"
    )
    p = add("breaker", cmd_breaker, "show the breaker, or reset it (a person, with a reason)")
    p.epilog = (
        "exit status: 0 done; 1 a reset not confirmed (without --yes the answer is read from "
        "stdin, terminal or not; EOF means no) or a trip not persisted; 2 refused (no --by or "
        "--reason, a missing data directory, an unreadable database)"
    )
    p.add_argument("action", nargs="?", choices=["status", "reset", "trip"], default="status")
    p.add_argument("--by", help="who resets or trips (required for both)")
    p.add_argument("--reason", help="why (required for reset and trip)")
    p.add_argument(
        "--state",
        choices=["HALTED", "REDUCING"],
        default="HALTED",
        help="trip: HALTED (no new orders; the watchdog flattens) or REDUCING",
    )
    p.add_argument(
        "--yes",
        action="store_true",
        help="reset: do not ask. Without it, reset asks and reads the answer from stdin even "
        "when stdin is not a terminal (a pipe, a file, /dev/null): only y or yes resets; "
        "anything else, an empty line or EOF means no (exit 1)",
    )
    p.add_argument("--json", action="store_true", help="status: machine-readable JSON")
    p = add("panic", cmd_panic, "kill switch: HALTED, cancel everything, close every position")
    # a kill switch asks nothing in an emergency: who ran it defaults to the OS user
    p.add_argument("--by", default=None, help="who pulls it (default: the OS user running it)")
    p.add_argument("--reason", default="manual panic (no reason given)")
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
    p.add_argument("--json", action="store_true", help="status: machine-readable JSON")
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
    p.add_argument("--json", action="store_true", help="list: machine-readable JSON")
    p = add("orders", cmd_orders, "list order intents and their status")
    p.add_argument(
        "--status",
        choices=[status.value for status in IntentStatus],
        help="only intents in this status: %(choices)s",
    )
    p.add_argument("--symbol", type=_symbol, help="only this symbol (any case: MSFT, msft)")
    p.add_argument("--source", choices=INTENT_SOURCES, help="only intents sent by: %(choices)s")
    p.add_argument("--since", help="a date (2026-11-20) or an age (7d, 12h)")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p = add("safety-events", cmd_safety_events, "list safety events (refusals, trips, ...)")
    p.add_argument("--kind", help="gate_refusal, breaker_trip, reconcile, ...")
    p.add_argument("--severity", choices=["info", "warning", "critical"])
    p.add_argument("--source")
    p.add_argument("--since", help="a date (2026-11-20) or an age (7d, 12h)")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p = add("llm-usage", cmd_llm_usage, "LLM calls, tokens and dollars per day and instance")
    p.add_argument("--instance")
    p.add_argument("--since", help="a date (2026-11-20) or an age (7d)")
    p.add_argument("--json", action="store_true")
    p = add("trades", cmd_trades, "list recorded executions")
    p.add_argument("--since", help="a date (2026-11-20) or an age (7d, 12h)")
    p.add_argument("--symbol", type=_symbol, help="only this symbol (any case: MSFT, msft)")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p = add("snapshots", cmd_snapshots, "list decision snapshots, print one, or prune old ones")
    p.add_argument("action", nargs="?", choices=["list", "show", "prune"], default="list")
    p.add_argument("id", nargs="?", type=int, help="show: the snapshot id (or --cycle N)")
    p.add_argument("--older-than", help="prune: delete snapshots older than this (e.g. 30d)")
    p.add_argument("--compress-after", help="prune: gzip snapshots older than this (e.g. 7d)")
    p.add_argument("--dry-run", action="store_true", help="prune: say what would happen")
    p.add_argument("--show", type=int, help="snapshot id to print")
    p.add_argument("--cycle", type=int, help="print the snapshot of this cycle")
    p.add_argument("--limit", type=int, default=20)
    p = add("drill", cmd_drill, "kill drill on your own paper setup (refuses live configs)")
    p.add_argument("--yes", action="store_true", help="I know it closes every paper position")
    p.add_argument("--symbol", default="SPY", help="the drill's position (default SPY)")
    p.add_argument("--quantity", type=int, default=1)
    p = add("backup", cmd_backup, "copy the live database (SQLite online backup API)")
    p.add_argument(
        "dest",
        help="a new file, or a folder to write a dated file in: an existing folder, or any "
        "path ending in / (created, parents too)",
    )
    p.add_argument("--with-snapshots", action="store_true", help="copy the snapshot files too")
    p = add("inspect", cmd_inspect, "browse the database read-only in Datasette (views, charts)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default loopback)")
    p.add_argument(
        "--port", type=_port, default=8001, help="listen port (default 8001; 0: any free one)"
    )
    p = add("why", cmd_why, "why did it trade? the chain from a fill back to the market")
    p.add_argument("ref", help="an orderRef, an execId, or an order id")
    p.add_argument("--json", action="store_true", help="the same as one JSON document")
    p = add(
        "replay",
        cmd_replay,
        "run a cycle's Decide and gate again from its snapshot (offline); compare",
        config=False,
    )
    p.add_argument("cycle", nargs="?", type=int, help="the cycle id (or --from/--to)")
    p.add_argument(
        "--config",
        help="replay with this config; its [data] dir is read unless --data-dir "
        "(default: the recorded config)",
    )
    p.add_argument("--data-dir", help="the data directory to read (default: the config's)")
    p.add_argument(
        "--recorded-config",
        action="store_true",
        help="replay with the recorded config even when --config is given",
    )
    p.add_argument("--from", dest="start", help="first day (2026-11-20, UTC) of a range")
    p.add_argument("--to", dest="end", help="last day of a range (included)")
    p.add_argument("--json", action="store_true", help="the same as one JSON document")
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
    p.add_argument(
        "--cycles", type=_positive_int, default=5, help="how many cycles to run (default 5)"
    )
    p.add_argument(
        "--kill-drill",
        action="store_true",
        help="SIGKILL the main loop mid-run and show the watchdog flattening",
    )
    p.add_argument("--data-dir", default=None, help="where the demo keeps its files")
    p.add_argument(
        "--protect",
        action="store_true",
        help="every opening order carries a GTC stop (3%%, puts 10%%) and take-profit (6%%) "
        "at the broker; the summary lists those resting",
    )
    args = parser.parse_args(argv)
    register_secret(Secrets().anthropic_api_key)  # redacted from every line and traceback
    notify_urls()  # IB_SWARM_NOTIFY_URLS carry tokens: registered as secrets too
    sys.excepthook = redacting_excepthook
    try:
        result: int = _with_ownership(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (| head): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (DataLakeMissing, SnapshotError, StorageUnavailable, DatabaseError, OSError) as exc:
        if args.debug:
            raise
        if getattr(args, "json", False):
            print(json.dumps({"error": redact(str(exc))}))
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
