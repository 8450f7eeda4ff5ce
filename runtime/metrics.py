"""An optional Prometheus endpoint, read-only: every scrape reads what is already recorded.

`Collector.collect()` opens the database read-only (through `data_lake` read functions),
reads the breaker file and both heartbeat files, and turns them into metric families. Nothing
in the trading processes keeps or pushes counters, so the endpoint can run in any process
(`python -m runtime notify` with `[metrics] enabled = true`, or `python -m runtime metrics`)
and a scrape never touches the order path. Loopback by default (`[metrics] host`).

prometheus_client is imported lazily: only the process that serves metrics pays for it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from data_lake import DatabaseError, DataLakeMissing, metrics_figures, open_readonly

from .breaker import BreakerState, CircuitBreaker
from .config import Config
from .heartbeat import MAIN_HEARTBEAT, WATCHDOG_HEARTBEAT, read_heartbeat

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["Collector", "refusal_label", "serve"]

PREFIX = "ib_swarm"


def refusal_label(reason: str) -> str:
    """A bounded label for a gate refusal: its first reason with the numbers taken out."""
    first = reason.split("; ")[0]
    return re.sub(r"-?\d[\d,]*(\.\d+)?", "N", first)[:80]


class Collector:
    """A custom collector: the figures of one data directory at scrape time."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def describe(self) -> list[Metric]:
        return []  # unchecked: the families are known only when collected

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            SummaryMetricFamily,
        )

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels))

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
            return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels))

        data_dir = self.cfg.data_dir
        now = time.monotonic()  # heartbeats carry the system-wide monotonic clock
        age = gauge("heartbeat_age_seconds", "Age of the process heartbeat", ("process",))
        up = gauge("heartbeat_running", "1 if the heartbeat is fresh and not stopped", ("process",))
        for process, name in (("main", MAIN_HEARTBEAT), ("watchdog", WATCHDOG_HEARTBEAT)):
            hb = read_heartbeat(data_dir / name)
            if hb is None:
                continue
            fresh = hb.phase != "stopped" and hb.age(now) <= self.cfg.watchdog.heartbeat_timeout_s
            age.add_metric([process], hb.age(now))
            up.add_metric([process], 1.0 if fresh else 0.0)
        yield age
        yield up

        status = CircuitBreaker(data_dir).status()
        state = gauge("breaker_state", "1 for the breaker's current state", ("state",))
        for s in BreakerState:
            state.add_metric([s.value], 1.0 if status.state is s else 0.0)
        yield state
        yield _gauge("breaker_generation", "Breaker transitions so far", status.generation)

        try:
            db = open_readonly(data_dir, busy_timeout_ms=self.cfg.data.busy_timeout_ms)
        except DataLakeMissing:
            yield _gauge("database_up", "1 if the database was read", 0)
            return
        try:
            f = metrics_figures(db)
        except DatabaseError:
            yield _gauge("database_up", "1 if the database was read", 0)
            return
        finally:
            db.close()
        yield _gauge("database_up", "1 if the database was read", 1)
        yield from self._figures(f, gauge, counter, SummaryMetricFamily)

    def _figures(self, f: dict[str, Any], gauge: Any, counter: Any, summary: Any) -> Iterator[Any]:
        cycles = counter("cycles", "Cycles by outcome", ("outcome",))
        for row in f["cycles"]:
            cycles.add_metric([row["status"]], row["n"])
        yield cycles
        d = f["cycle_duration"]
        yield summary(
            f"{PREFIX}_cycle_duration_seconds",
            "Duration of finished cycles (skipped ones excluded)",
            count_value=d["n"],
            sum_value=d["s"],
        )
        last = f["last_cycle"]
        yield _gauge("last_cycle_id", "Newest cycle id", last["id"] or 0)
        if last["s"] is not None:
            yield _gauge("last_cycle_duration_seconds", "Newest finished cycle", last["s"])
        intents = counter(
            "order_intents", "Order intents by source and status", ("source", "status")
        )
        for row in f["intents"]:
            intents.add_metric([row["source"], row["status"]], row["n"])
        yield intents
        ex = f["executions"]
        fills = counter("fills", "Executions recorded")
        fills.add_metric([], ex["n"])
        yield fills
        shares = counter("filled_quantity", "Shares and contracts filled")
        shares.add_metric([], ex["shares"])
        yield shares
        refusals = counter("gate_refusals", "Gate refusals by first reason", ("reason",))
        by_label: dict[str, float] = {}
        for row in f["refusals"]:
            label = refusal_label(row["reason"])
            by_label[label] = by_label.get(label, 0) + row["n"]
        for label, n in sorted(by_label.items()):
            refusals.add_metric([label], n)
        yield refusals
        events = counter(
            "safety_events", "Safety events by kind and severity", ("kind", "severity")
        )
        for row in f["safety_events"]:
            events.add_metric([row["kind"], row["severity"]], row["n"])
        yield events
        calls = counter("llm_calls", "LLM calls by model and status", ("model", "status"))
        tokens = counter("llm_tokens", "LLM tokens by model and kind", ("model", "kind"))
        usd = counter("llm_cost_usd", "LLM spend in USD by model", ("model",))
        spent: dict[str, float] = {}
        toks: dict[tuple[str, str], float] = {}
        lat_n, lat_s = 0, 0.0
        for row in f["llm"]:
            calls.add_metric([row["model"], row["status"]], row["calls"])
            spent[row["model"]] = spent.get(row["model"], 0.0) + float(row["usd"] or 0)
            for kind in ("input", "output", "cache_read", "cache_write"):
                key = (row["model"], kind)
                toks[key] = toks.get(key, 0.0) + float(row[kind] or 0)
            lat_n += int(row["timed"])
            lat_s += float(row["latency_ms"]) / 1000
        for (model, kind), n in sorted(toks.items()):
            tokens.add_metric([model, kind], n)
        for model, n in sorted(spent.items()):
            usd.add_metric([model], n)
        yield calls
        yield tokens
        yield usd
        yield summary(
            f"{PREFIX}_llm_latency_seconds", "LLM call latency", count_value=lat_n, sum_value=lat_s
        )
        acct = f["account"]
        if acct:
            for field in ("net_liquidation", "daily_pnl"):
                if acct[field] is not None:
                    yield _gauge(
                        f"account_{field}_usd", f"Latest account snapshot: {field}", acct[field]
                    )


def _gauge(name: str, doc: str, value: float) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def serve(cfg: Config, host: str | None = None, port: int | None = None) -> tuple[Any, Any]:
    """Serve /metrics for `cfg` on a daemon thread; return (server, thread). The server's
    `server_port` is the port bound (port 0 picks a free one)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(cfg))
    bind_host = host if host is not None else cfg.metrics.host
    bind_port = port if port is not None else cfg.metrics.port
    server, thread = start_http_server(bind_port, addr=bind_host, registry=registry)
    return server, thread
