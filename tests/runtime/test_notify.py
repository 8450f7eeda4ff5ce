"""Alerts end to end: a local HTTP receiver on 127.0.0.1 gets what Apprise sends.

The receiver is a real HTTP server; Apprise posts to it with `json://` URLs. The daemon, its
watchdog and `python -m runtime notify` are real processes against the paper gateway.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from procs import cli, data, start, stop, stop_watchdog, write_config

from data_lake import Store, log_safety_event, open_readonly
from paper_gateway import GatewayConfig
from paper_gateway.testing import eventually, eventually_async
from runtime.breaker import BreakerState, CircuitBreaker
from runtime.config import load_config
from runtime.notify import Alert, Notifier, RateLimiter, Sender, start_notifier

TOKEN = "s3cr3t-webhook-token-0042"


class Receiver:
    """An HTTP server on 127.0.0.1 that records every JSON body posted to it. `hang=True`:
    it accepts the request and never answers (a stuck notification service)."""

    def __init__(self, hang: bool = False) -> None:
        self.messages: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.release = threading.Event()
        received = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.paths.append(self.path)
                if hang:
                    received.release.wait(30)
                    return
                received.messages.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_port}/{TOKEN}"

    def titles(self) -> list[str]:
        return [m["title"] for m in self.messages]

    def with_title(self, text: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if text in m["title"]]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def stuck() -> Iterator[Receiver]:
    r = Receiver(hang=True)
    yield r
    r.close()


@pytest.fixture
def gateway_config() -> GatewayConfig:
    return GatewayConfig(tick_interval_s=0.25, account_push_interval_s=0.1)


def _dead_url() -> str:
    """A loopback port nobody listens on (connection refused)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = server.server_port
    server.server_close()
    return f"json://127.0.0.1:{port}/{TOKEN}"


def test_kill_drill_sends_one_breaker_message_naming_the_reason(
    gateway, admin, tmp_path, receiver, stuck
):
    """SIGKILL the main loop: the watchdog trips and flattens as always, even with a stuck
    and a dead notification URL next to the good one; the receiver gets the daemon's start
    and exactly one "breaker tripped" naming the reason; the URL's token is nowhere."""
    admin.call("set_position", symbol="AAPL", quantity=50, avg_cost=228.0)
    cfg = write_config(
        tmp_path, gateway.port, notify__poll_interval_s=0.2, notify__send_timeout_s=1.0
    )
    urls = f"{stuck.url}, {_dead_url()} {receiver.url}"
    env = {"IB_SWARM_NOTIFY_URLS": urls}
    notifier = start("notify", cfg, env=env)  # before the daemon: its start is news
    proc = start("run", cfg, env=env)
    try:
        eventually(lambda: receiver.with_title("main loop started"), timeout=30, what="start")
        eventually(lambda: 999 in admin.call("state")["clients"], timeout=10, what="watchdog")
        os.kill(proc.pid, signal.SIGKILL)
        breaker = CircuitBreaker(data(tmp_path))
        eventually(lambda: breaker.status().state is BreakerState.HALTED, timeout=5)
        eventually(lambda: admin.call("state")["positions"] == [], timeout=5, what="flat")
        [tripped] = eventually(
            lambda: receiver.with_title("breaker tripped"), timeout=10, what="trip alert"
        )
        assert tripped["title"] == "ib-swarm: breaker tripped to HALTED"
        assert "main loop process" in tripped["message"] and "by watchdog" in tripped["message"]
        assert tripped["type"] == "failure"
        # a marker recorded after the trip: once it is received, a duplicate would be too
        store = Store.open(data(tmp_path), name="test")
        store.post(log_safety_event, "person", "watchdog_exit", "marker", "critical")
        store.close(5.0)
        eventually(lambda: receiver.with_title("watchdog exit"), timeout=10, what="marker")
        assert len(receiver.with_title("breaker tripped")) == 1
        assert stuck.paths  # the stuck URL was tried (and is still hanging)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop_watchdog(tmp_path)
        stop(notifier)
    out = notifier.stdout.read().decode() if notifier.stdout else ""
    assert "alert: ib-swarm: breaker tripped to HALTED" in out
    assert TOKEN not in out
    assert TOKEN not in json.dumps(receiver.messages)
    db = open_readonly(data(tmp_path))
    assert not list(db.query("SELECT id FROM safety_events WHERE reason LIKE ?", [f"%{TOKEN}%"]))


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_folds_repeats_into_one_summary_per_window():
    clock = ManualClock()
    limiter = RateLimiter(60.0, clock)
    first = limiter.offer(Alert("event:x", "x", "one"))
    assert first is not None and first.body == "one"
    assert limiter.offer(Alert("event:x", "x", "two")) is None
    assert limiter.offer(Alert("event:x", "x", "three")) is None
    assert limiter.offer(Alert("event:y", "y", "other kind")) is not None
    assert limiter.due() == []  # the window is still open
    assert limiter.offer(Alert("breaker:7", "trip", "never folded", fold=False)) is not None
    assert limiter.offer(Alert("breaker:7", "trip", "never folded", fold=False)) is not None
    clock.now += 60
    [summary] = limiter.due()
    assert summary.title == "x (x2 more)" and summary.count == 2 and "three" in summary.body
    assert limiter.offer(Alert("event:x", "x", "four")) is None  # the new window continues
    clock.now += 60
    [again] = limiter.due()
    assert again.count == 1
    clock.now += 60
    assert limiter.due() == []
    assert limiter.offer(Alert("event:x", "x", "five")) is not None


def test_repeated_events_give_one_message_then_one_count(tmp_path, receiver):
    """Five flatten_failed events within the window: one message at once, then one summary
    with the count when the window ends; an info event below min_severity is not sent."""
    cfg_path = write_config(tmp_path, 4002, notify__poll_interval_s=0.05)
    cfg = load_config(cfg_path)
    store = Store.open(cfg.data_dir)
    clock = ManualClock()
    notifier = Notifier(cfg, [receiver.url], clock=clock)
    notifier.start()
    try:
        eventually(notifier.active.is_set, timeout=10, what="notifier tailing")
        for i in range(5):
            store.post(
                log_safety_event, "watchdog", "flatten_failed", f"still open #{i}", "critical"
            )
        store.post(log_safety_event, "watchdog", "flat_confirmed", "flat", "info")
        store.post(log_safety_event, "watchdog", "watchdog_exit", "marker", "critical")
        store.flush(5.0)
        eventually(lambda: receiver.with_title("watchdog exit"), timeout=10, what="marker sent")
        assert receiver.with_title("flatten failed") == [receiver.messages[0]]
        assert "still open #0" in receiver.messages[0]["message"]
        assert not receiver.with_title("flat confirmed")
        clock.now += cfg.notify.rate_limit_s
        [summary] = eventually(lambda: receiver.with_title("flatten failed (x4 more)"), timeout=10)
        assert "still open #4" in summary["message"]
        assert len(receiver.with_title("flatten failed")) == 2
    finally:
        notifier.stop()
        store.close(5.0)


def test_a_second_notifier_stands_by_and_resumes_from_the_cursor(tmp_path, receiver):
    """One notifier sends per data directory; when it stops, the one in standby takes over
    where it left off (nothing twice, nothing lost)."""
    cfg = load_config(write_config(tmp_path, 4002, notify__poll_interval_s=0.05))
    store = Store.open(cfg.data_dir)
    first, second = Notifier(cfg, [receiver.url]), Notifier(cfg, [receiver.url], name="second")
    try:
        first.start()
        eventually(first.active.is_set, timeout=10)
        second.start()
        store.post(log_safety_event, "watchdog", "flatten_blocked", "one", "critical")
        eventually(lambda: receiver.with_title("flatten blocked"), timeout=10)
        first.stop()
        store.post(log_safety_event, "watchdog", "flatten_failed", "two", "critical")
        store.flush(5.0)
        eventually(second.active.is_set, timeout=10, what="standby took over")
        eventually(lambda: receiver.with_title("flatten failed"), timeout=10)
        assert [t.split(": ")[1] for t in receiver.titles()] == [
            "flatten blocked",
            "flatten failed",
        ]
    finally:
        first.stop()
        second.stop()
        store.close(5.0)


def test_a_stuck_service_never_blocks_the_caller(stuck, tmp_path):
    """`put` never waits: a full queue drops its oldest message, counted; `stop` returns
    while a send is still hanging on the stuck service."""
    sender = Sender(stuck.url, timeout_s=30.0, queue_size=3)
    sender.start()
    sender.put(Alert("a", "first", "hangs"))
    eventually(lambda: stuck.paths, timeout=10, what="the first send is in flight")
    for i in range(10):
        sender.put(Alert(f"k{i}", f"t{i}", "queued"))
    assert sender.pending() == 3 and sender.stats.dropped == 7
    sender.stop(timeout=0.1)  # bounded: the send in flight does not hold it
    assert sender.stats.sent == 0


def test_notify_test_says_which_urls_took_the_message(tmp_path, receiver):
    cfg = write_config(tmp_path, 4002, notify__send_timeout_s=2.0)
    env = {"IB_SWARM_NOTIFY_URLS": f"{receiver.url},{_dead_url()}"}
    out = cli("notify", "--config", str(cfg), "--test", env=env)
    assert out.returncode == 1, out.stderr
    assert out.stdout.splitlines() == ["URL #1: delivered", "URL #2: NOT delivered"]
    assert TOKEN not in out.stdout + out.stderr
    [msg] = receiver.messages
    assert msg["title"] == "ib-swarm: test notification" and msg["type"] == "info"


def test_notify_refuses_without_urls(tmp_path):
    cfg = write_config(tmp_path, 4002)
    out = cli("notify", "--config", str(cfg), env={"IB_SWARM_NOTIFY_URLS": ""})
    assert out.returncode == 2 and "IB_SWARM_NOTIFY_URLS" in out.stderr


def test_daily_loss_approach_and_budget_are_sent_once_a_day(tmp_path, receiver):
    from data_lake import log_account_snapshot, record_llm_calls

    cfg = load_config(write_config(tmp_path, 4002, notify__poll_interval_s=0.05))
    store = Store.open(cfg.data_dir)
    notifier = Notifier(cfg, [receiver.url])
    notifier.start()
    try:
        eventually(notifier.active.is_set, timeout=10)
        limit = cfg.risk.max_daily_loss
        store.post(log_account_snapshot, "main", "DU1", {"DailyPnL": -0.5 * limit}, [])
        store.post(log_account_snapshot, "main", "DU1", {"DailyPnL": -0.85 * limit}, [])
        store.post(
            record_llm_calls,
            [
                {
                    "instance_id": "i",
                    "provider": "anthropic",
                    "model": "m",
                    "status": "ok",
                    "cost_usd": cfg.swarm.max_usd_per_day,
                }
            ],
        )
        store.post(log_safety_event, "watchdog", "watchdog_exit", "marker", "critical")
        store.flush(5.0)
        eventually(lambda: receiver.with_title("watchdog exit"), timeout=10)
        eventually(lambda: receiver.with_title("budget"), timeout=10)
        [loss] = eventually(lambda: receiver.with_title("daily loss"), timeout=10)
        assert "85% of the limit" in loss["title"]
        store.post(log_account_snapshot, "main", "DU1", {"DailyPnL": -0.9 * limit}, [])
        store.post(log_safety_event, "watchdog", "flatten_blocked", "marker 2", "critical")
        store.flush(5.0)
        eventually(lambda: receiver.with_title("flatten blocked"), timeout=10)
        assert len(receiver.with_title("daily loss")) == 1
        assert len(receiver.with_title("budget")) == 1
    finally:
        notifier.stop()
        store.close(5.0)


def test_breaker_transitions_are_never_folded(tmp_path, receiver):
    """Trip, reset, trip again within the rate-limit window: three messages, in order."""
    cfg = load_config(write_config(tmp_path, 4002, notify__poll_interval_s=0.05))
    store = Store.open(cfg.data_dir)
    notifier = Notifier(cfg, [receiver.url])
    notifier.start()
    try:
        eventually(notifier.active.is_set, timeout=10)
        breaker = CircuitBreaker(cfg.data_dir, store)
        breaker.trip(BreakerState.REDUCING, "gate", "repeated-execution throttle")
        eventually(lambda: receiver.with_title("breaker tripped"), timeout=10)
        breaker.reset(by="alice", reason="checked")
        eventually(lambda: receiver.with_title("breaker reset"), timeout=10)
        breaker.trip(BreakerState.HALTED, "broker", "3 consecutive order rejects")
        eventually(lambda: len(receiver.messages) == 3, timeout=10)
        assert [m["title"].split(": ", 1)[1] for m in receiver.messages] == [
            "breaker tripped to REDUCING",
            "breaker reset to ACTIVE",
            "breaker tripped to HALTED",
        ]
        assert "by person (alice): checked" in receiver.messages[1]["message"]
    finally:
        notifier.stop()
        store.close(5.0)


@pytest.mark.asyncio
async def test_the_embedded_hook_runs_beside_an_event_loop(tmp_path, receiver):
    """What the main loop and the watchdog call: nothing without URLs; with them, a notifier
    on its own threads that sends while the loop keeps running, and stops when asked."""
    cfg = load_config(
        write_config(tmp_path, 4002, notify__poll_interval_s=0.05, notify__enabled=True)
    )
    assert start_notifier(cfg, {}) is None
    notifier = start_notifier(cfg, {"IB_SWARM_NOTIFY_URLS": receiver.url})
    assert notifier is not None
    store = Store.open(cfg.data_dir)
    try:
        store.post(log_safety_event, "watchdog", "flatten_blocked", "embedded", "critical")
        # the loop is never blocked: it keeps polling while the notifier sends
        await eventually_async(
            lambda: receiver.with_title("flatten blocked"), timeout=10, what="the alert"
        )
    finally:
        notifier.stop()
        store.close(5.0)
