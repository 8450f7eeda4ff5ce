"""Alerts that reach a person: a notifier that tails the data lake and sends through Apprise.

`Notifier` watches what the daemon and the watchdog already record: new `safety_events` and
`breaker_history` rows (through `data_lake` read functions on its own read-only connection),
the breaker file, both heartbeat files, the latest account snapshot and today's LLM spend. It
decides what deserves a message, deduplicates and rate-limits it (the same kind within
`[notify] rate_limit_s` gives one message now and one summary with a count when the window
ends; breaker transitions are never folded), and hands it to a sender thread through a bounded
queue (full: the oldest waiting message is dropped and counted). Sending uses Apprise, one
library for e-mail, Slack, Telegram, ntfy, webhooks...; every URL gets connect and read
timeouts. Nothing here runs on an event loop or in the order path, so a failing or slow
notification service never delays trading or the watchdog.

One notifier sends per data directory: the `notify.lock` flock decides which (the others wait
in standby and take over when the holder dies), and the cursor in `notify-state.json` lets
the one that takes over resume where the last one stopped. So it can run inside the main loop,
inside the watchdog and as `python -m runtime notify` at the same time without duplicates.

The URLs are secrets (they carry tokens): they come from IB_SWARM_NOTIFY_URLS (comma or space
separated), are registered with `data_lake.register_secret`, and are never logged or stored.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from data_lake import (
    DatabaseError,
    DataLakeMissing,
    alert_cursor,
    breaker_transitions_after,
    latest_account,
    llm_today,
    open_readonly,
    redact,
    register_secret,
    reject_streak,
    safety_events_after,
    schema_ready,
)

from .breaker import BreakerState, CircuitBreaker, who_changed
from .config import Config
from .heartbeat import MAIN_HEARTBEAT, WATCHDOG_HEARTBEAT, read_heartbeat
from .instance_lock import InstanceLock, LockHeld, acquire

__all__ = [
    "ENV_URLS",
    "LOCK_FILE",
    "STATE_FILE",
    "Alert",
    "Notifier",
    "RateLimiter",
    "Sender",
    "notify_urls",
    "start_notifier",
]

log = logging.getLogger("runtime.notify")

ENV_URLS = "IB_SWARM_NOTIFY_URLS"
LOCK_FILE = "notify.lock"
STATE_FILE = "notify-state.json"
_RANK = {"info": 0, "warning": 1, "critical": 2}
# Kinds the notifier reports from their own source instead of the raw safety event.
_OWN_SOURCE = {"breaker_trip", "order_reject"}
_HEARTBEATS = {"main loop": MAIN_HEARTBEAT, "watchdog": WATCHDOG_HEARTBEAT}


def notify_urls(env: Mapping[str, str] | None = None) -> list[str]:
    """Return the Apprise URLs of IB_SWARM_NOTIFY_URLS (comma or whitespace separated),
    each registered as a secret, with the tokens inside it (user, password, path and query
    parts of 8+ characters), so none of them reaches a log line or the database."""
    raw = (os.environ if env is None else env).get(ENV_URLS, "")
    urls = [u for u in re.split(r"[,\s]+", raw) if u]
    for url in urls:
        register_secret(url)
        with contextlib.suppress(ValueError):
            parts = urlsplit(url)
            register_secret(parts.password)
            register_secret(parts.username)
            for piece in parts.path.split("/"):  # tokens: long, or with digits
                if len(piece) >= 12 or re.search(r"\d", piece):
                    register_secret(piece)
            for _, value in parse_qsl(parts.query):
                register_secret(value)
    return urls


def _with_timeouts(url: str, timeout_s: float) -> str:
    """Add Apprise's connect (cto) and read (rto) timeouts unless the URL sets them."""
    query = urlsplit(url).query
    extra = [f"{k}={timeout_s:g}" for k in ("cto", "rto") if not re.search(rf"\b{k}=", query)]
    if not extra:
        return url
    return url + ("&" if "?" in url else "?") + "&".join(extra)


@dataclass
class Alert:
    """One message: `key` groups repeats (same key within the window -> one message)."""

    key: str
    title: str
    body: str
    severity: str = "critical"
    fold: bool = True  # False: never deduplicated (breaker transitions)
    count: int = 1


class RateLimiter:
    """Same key within `window_s`: the first is sent at once, the rest are counted and sent
    as one summary when the window ends (a steady storm gives one message per window)."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._open: dict[str, tuple[float, int, Alert | None]] = {}

    def offer(self, alert: Alert) -> Alert | None:
        """Return the alert to send now, or None when it was folded into its window."""
        if not alert.fold or self.window_s <= 0:
            return alert
        now = self.clock()
        opened = self._open.get(alert.key)
        if opened is None or now - opened[0] >= self.window_s:
            self._open[alert.key] = (now, 0, None)
            return alert
        self._open[alert.key] = (opened[0], opened[1] + 1, alert)
        return None

    def due(self) -> list[Alert]:
        """Return the summaries of windows that ended with folded repeats."""
        now = self.clock()
        out: list[Alert] = []
        for key, (since, n, last) in list(self._open.items()):
            if now - since < self.window_s:
                continue
            if n and last is not None:
                out.append(
                    Alert(
                        key,
                        f"{last.title} (x{n} more)",
                        f"{n} more in the last {self.window_s:g}s; the last one:\n{last.body}",
                        last.severity,
                        count=n,
                    )
                )
                self._open[key] = (now, 0, None)
            else:
                del self._open[key]
        return out


@dataclass
class _Stats:
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    titles: list[str] = field(default_factory=list)


class Sender:
    """A thread that sends queued alerts to one Apprise URL (one per URL, so a stuck service
    delays only its own messages). `put` never blocks: a full queue drops its oldest message
    (counted, and said in the next message that goes out)."""

    def __init__(self, url: str, timeout_s: float, queue_size: int, index: int = 1) -> None:
        self.url = _with_timeouts(url, timeout_s)
        register_secret(self.url)
        self.index = index
        self.queue_size = queue_size
        self.stats = _Stats()
        self._queue: collections.deque[Alert] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._unreported_drops = 0
        self._thread = threading.Thread(target=self._run, name=f"notify-send-{index}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, alert: Alert) -> None:
        with self._cond:
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.stats.dropped += 1
                self._unreported_drops += 1
            self._queue.append(alert)
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop after what is queued is sent or `timeout` passes; a send in flight is
        bounded by its own timeouts (the thread is a daemon and never holds up an exit)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    def _next(self) -> tuple[Alert, int] | None:
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if not self._queue:
                return None
            drops, self._unreported_drops = self._unreported_drops, 0
            return self._queue.popleft(), drops

    def _run(self) -> None:
        try:
            import apprise  # lazily: only the processes that notify pay for the import

            quiet = logging.getLogger("apprise")
            if quiet.level == logging.NOTSET:  # its own lines name hosts and paths
                quiet.setLevel(logging.ERROR)

            client = apprise.Apprise()
            if not client.add(self.url):
                log.error("notification URL #%d is not a valid Apprise URL", self.index)
                return
            types = {
                "info": apprise.NotifyType.INFO,
                "warning": apprise.NotifyType.WARNING,
                "critical": apprise.NotifyType.FAILURE,
            }
        except Exception as exc:
            log.error("notifications disabled: cannot set up Apprise (%s)", redact(str(exc)))
            return
        while (item := self._next()) is not None:
            alert, drops = item
            body = alert.body
            if drops:
                body += f"\n({drops} older alert(s) were dropped: the notifier queue was full)"
            try:
                ok = bool(
                    client.notify(
                        title=alert.title,
                        body=body,
                        notify_type=types.get(alert.severity, apprise.NotifyType.FAILURE),
                    )
                )
            except Exception as exc:  # a plugin's bug must not end the thread
                log.error(
                    "notification %r to URL #%d failed: %s",
                    alert.title,
                    self.index,
                    redact(str(exc)),
                )
                ok = False
            if ok:
                self.stats.sent += 1
                self.stats.titles.append(alert.title)
                del self.stats.titles[:-50]
            else:
                self.stats.failed += 1
                log.warning("notification %r not delivered to URL #%d", alert.title, self.index)


def _today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


class Notifier:
    """Tail the data lake of `cfg` and send alerts. `start()` returns at once (two daemon
    threads); `stop()` ends them within a bounded time."""

    def __init__(
        self,
        cfg: Config,
        urls: Sequence[str],
        clock: Callable[[], float] = time.monotonic,
        name: str = "notify",
    ) -> None:
        self.cfg = cfg
        self.n = cfg.notify
        self.data_dir = cfg.data_dir
        self.name = name
        self.clock = clock
        self.senders = [
            Sender(url, self.n.send_timeout_s, self.n.queue_size, i + 1)
            for i, url in enumerate(urls)
        ]
        self.limiter = RateLimiter(self.n.rate_limit_s, clock)
        self.active = threading.Event()  # set while this one holds the lock and tails
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-tail", daemon=True)
        self._lock: InstanceLock | None = None
        self._state: dict[str, Any] = {}
        self._warned: set[str] = set()

    @classmethod
    def from_env(cls, cfg: Config, env: Mapping[str, str] | None = None) -> Notifier | None:
        """A notifier for `cfg`, or None when `[notify] enabled = false` or no URL is set."""
        urls = notify_urls(env)
        if not cfg.notify.enabled or not urls:
            return None
        return cls(cfg, urls)

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        for sender in self.senders:
            sender.start()
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop tailing; give the senders `timeout` (in all) to send what is queued."""
        self._stop.set()
        self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        for sender in self.senders:
            sender.stop(max(0.0, deadline - time.monotonic()))
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # --- the tail ----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            if self._lock is None:
                try:
                    self._lock = acquire(self.data_dir / LOCK_FILE, "the notifier lock")
                    log.info("%s: sending alerts for %s", self.name, self.data_dir)
                except LockHeld:
                    self._stop.wait(self.n.poll_interval_s)  # standby: another one sends
                    continue
                except OSError as exc:
                    self._warn_once("lock", f"cannot take the notifier lock: {exc}")
                    self._stop.wait(self.n.poll_interval_s)
                    continue
            try:
                self.tick()
                self.active.set()
            except Exception as exc:  # never let a bad read end alerting
                self._warn_once(type(exc).__name__, f"notifier tick failed: {exc}")
            self._stop.wait(self.n.poll_interval_s)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", redact(message))

    def _emit(self, alert: Alert) -> None:
        alert.title = (
            f"{self.n.title_prefix}: {alert.title}" if self.n.title_prefix else alert.title
        )
        alert.title, alert.body = redact(alert.title), redact(alert.body)
        out = self.limiter.offer(alert)
        if out is not None:
            log.info("alert: %s", out.title)
            self._send(out)

    def _send(self, alert: Alert) -> None:
        for sender in self.senders:
            sender.put(alert)

    def _load_state(self) -> dict[str, Any] | None:
        try:
            state = json.loads((self.data_dir / STATE_FILE).read_text(encoding="utf-8"))
            return state if isinstance(state, dict) else None
        except (OSError, ValueError):
            return None

    def _save_state(self) -> None:
        path = self.data_dir / STATE_FILE
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self._state), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            self._warn_once("state", f"notifier cursor not saved ({exc}); alerts go on")

    def tick(self) -> None:
        """One pass: read what is new, decide, queue. Called by the tail thread."""
        try:
            db = open_readonly(self.data_dir, busy_timeout_ms=self.cfg.data.busy_timeout_ms)
        except DataLakeMissing:
            self._fresh()
            return
        try:
            if not self._state and not schema_ready(db):
                self._fresh()  # the database is being created right now
                return
            self._tick(db)
        except DatabaseError as exc:
            self._warn_once("db", f"notifier cannot read the database yet: {exc}")
        finally:
            db.close()
        for alert in self.limiter.due():
            self._send(alert)

    def _fresh(self) -> None:
        """Nothing recorded yet: every row and process that appears from now on is news."""
        if not self._state:
            self._state = {"safety_id": 0, "breaker_id": 0, "generation": 0, "announce_first": True}

    def _tick(self, db: Any) -> None:
        breaker = CircuitBreaker(self.data_dir).status()
        if not self._state:
            loaded = self._load_state()
            if loaded is not None:
                newest = alert_cursor(db)  # a cursor past the newest row: a new database
                for key in ("safety_id", "breaker_id"):
                    loaded[key] = min(int(loaded.get(key, 0)), newest[key])
                self._state = loaded
            else:
                self._state = {**alert_cursor(db), "generation": breaker.generation}
                if breaker.state is not BreakerState.ACTIVE:
                    self._emit(
                        Alert(
                            "breaker_at_start",
                            f"breaker is {breaker.state.value}",
                            f"since {breaker.since} by {breaker.source}: {breaker.reason}",
                        )
                    )
        st = self._state
        st.setdefault("generation", 0)
        # breaker: the history rows (every transition), then the file (authoritative: it is
        # written before the row is queued, and even when the database is not writable)
        for row in breaker_transitions_after(db, int(st["breaker_id"])):
            st["breaker_id"] = row["id"]
            self._breaker(
                row["to_state"],
                row["source"],
                row["actor"],
                row["reason"],
                int(row["generation"]),
                row["at"],
            )
        if breaker.generation < 0:  # unreadable: the processes fail closed (HALTED)
            self._emit(Alert("breaker_unreadable", "breaker file unreadable", breaker.reason))
        elif breaker.generation > int(st["generation"]):
            self._breaker(
                breaker.state.value,
                breaker.source,
                breaker.actor,
                breaker.reason,
                breaker.generation,
                breaker.since,
            )
        rejects = False
        for ev in safety_events_after(db, int(st["safety_id"])):
            st["safety_id"] = ev["id"]
            rejects = rejects or ev["kind"] == "order_reject"
            self._event(ev)
        if rejects:
            n = reject_streak(db)
            if n >= self.n.reject_streak:
                self._emit(
                    Alert(
                        "reject_streak",
                        f"{n} broker rejects in a row",
                        f"{n} order rejects since the last fill; the breaker trips at "
                        f"{self.cfg.risk.max_consecutive_rejects}",
                        "warning",
                    )
                )
        self._heartbeats()
        self._daily_loss(db)
        self._budget(db)
        self._save_state()

    def _breaker(
        self, to: str, source: str, actor: str | None, reason: str, generation: int, at: str
    ) -> None:
        st = self._state
        if generation <= int(st["generation"]):
            return  # already told (from the file or the history)
        st["generation"] = generation
        who = who_changed(source, actor)
        if to == BreakerState.ACTIVE.value:
            self._emit(
                Alert(
                    f"breaker:{generation}",
                    "breaker reset to ACTIVE",
                    f"by {who}: {reason}\nat {at}",
                    "warning",
                    fold=False,
                )
            )
        else:
            self._emit(
                Alert(
                    f"breaker:{generation}",
                    f"breaker tripped to {to}",
                    f"by {who}: {reason}\nat {at}",
                    "critical",
                    fold=False,
                )
            )

    def _event(self, ev: Mapping[str, Any]) -> None:
        kind = ev["kind"]
        if kind in _OWN_SOURCE or kind in self.n.exclude_kinds:
            return
        if kind not in self.n.kinds and _RANK.get(ev["severity"], 2) < _RANK[self.n.min_severity]:
            return
        where = "".join(
            f", {k} {ev[k]}" for k in ("order_ref", "cycle_id") if ev.get(k) is not None
        )
        self._emit(
            Alert(
                f"event:{kind}",
                kind.replace("_", " "),
                f"{ev['reason']}\n{ev['severity']} from {ev['source']} at {ev['at']}{where}",
                ev["severity"],
            )
        )

    def _heartbeats(self) -> None:
        seen: dict[str, Any] = self._state.setdefault("heartbeats", {})
        timeout = self.cfg.watchdog.heartbeat_timeout_s
        now = time.monotonic()  # heartbeats carry the system-wide monotonic clock
        for who, filename in _HEARTBEATS.items():
            hb = read_heartbeat(self.data_dir / filename)
            if hb is None:
                continue
            state = (
                "stopped"
                if hb.phase == "stopped"
                else ("stale" if hb.age(now) > timeout else "running")
            )
            before = seen.get(who) or {}
            seen[who] = {"pid": hb.pid, "state": state}
            if not before and not self._state.get("announce_first", False):
                continue  # the state found at start is not news
            key = who.replace(" ", "_")
            was = before.get("state")
            if state == "running" and (before.get("pid") != hb.pid or was == "stopped"):
                self._emit(Alert(f"{key}_started", f"{who} started", f"pid {hb.pid}", "info"))
            elif state == "running" and was == "stale":
                self._emit(
                    Alert(f"{key}_recovered", f"{who} heartbeat back", f"pid {hb.pid}", "info")
                )
            elif state == "stopped" and was in ("running", "stale"):
                self._emit(
                    Alert(
                        f"{key}_stopped", f"{who} stopped", f"pid {hb.pid}: clean stop", "warning"
                    )
                )
            elif state == "stale" and was == "running":
                self._emit(
                    Alert(
                        f"{key}_stale",
                        f"{who} not responding",
                        f"pid {hb.pid}: heartbeat {hb.age(now):.0f}s old (limit {timeout:g}s)",
                        "critical",
                    )
                )
        self._state["announce_first"] = True

    def _daily_loss(self, db: Any) -> None:
        acct = latest_account(db)
        if not acct or acct["daily_pnl"] is None:
            return
        limit = self.cfg.risk.max_daily_loss
        warn_at = -self.n.daily_loss_warn_pct * limit
        day = str(acct["at"])[:10]
        if day != _today():
            return  # an old snapshot (the daemon is not running) is not today's loss
        if float(acct["daily_pnl"]) <= warn_at and self._state.get("daily_loss_day") != day:
            self._state["daily_loss_day"] = day
            self._emit(
                Alert(
                    "daily_loss",
                    f"daily loss at {-float(acct['daily_pnl']) / limit:.0%} of the limit",
                    f"daily PnL {float(acct['daily_pnl']):,.2f} (warning at {warn_at:,.2f}; "
                    f"the breaker trips at {-limit:,.2f})\naccount snapshot at {acct['at']}",
                    "warning",
                    fold=False,
                )
            )

    def _budget(self, db: Any) -> None:
        day = _today()
        if self._state.get("budget_day") == day:
            return
        budget = self.cfg.swarm.max_usd_per_day
        if budget <= 0:
            return
        spent = llm_today(db, day)
        if spent["usd"] >= self.n.budget_warn_pct * budget or spent["budget_refused"]:
            self._state["budget_day"] = day
            self._emit(
                Alert(
                    "budget",
                    "LLM daily budget exhausted",
                    f"${spent['usd']:.2f} spent today of ${budget:.2f}; "
                    f"{spent['budget_refused']} call(s) refused by the budget",
                    "warning",
                    fold=False,
                )
            )


def start_notifier(cfg: Config, env: Mapping[str, str] | None = None) -> Notifier | None:
    """Start a notifier inside a running process (the main loop, the watchdog) and return it,
    or None when no URL is set or `[notify] enabled = false`. Threads only: it never runs on
    the caller's event loop; only one notifier per data directory sends (the others stand by).
    """
    notifier = Notifier.from_env(cfg, env)
    if notifier is not None:
        notifier.start()
    return notifier
