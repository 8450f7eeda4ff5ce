"""The commander trades only inside the instrument's liquid hours (from contract details)."""

import asyncio
import datetime as dt
import tomllib
from pathlib import Path

import pytest

from data_lake import Contract, Store, insert_cycle
from runtime.breaker import CircuitBreaker
from runtime.broker import Broker
from runtime.commander import Commander, Decision
from runtime.config import Secrets, parse_config
from runtime.heartbeat import SystemClock
from skills.execution_gate import GateState, GateVerdict
from skills.swarm_core import load_instances
from skills.swarm_providers import OfflineProvider

ROOT = Path(__file__).resolve().parents[2]


def _moments():
    today = dt.datetime.now(dt.UTC).date()
    saturday = today + dt.timedelta(days=(5 - today.weekday()) % 7)
    weekday = today if today.weekday() < 5 else today + dt.timedelta(days=7 - today.weekday())
    at = lambda d, h, m: dt.datetime(d.year, d.month, d.day, h, m, tzinfo=dt.UTC)  # noqa: E731
    return at(saturday, 16, 0), at(weekday, 15, 30), at(weekday, 23, 0)  # 15:30 UTC ~ 10:30 ET


@pytest.mark.asyncio
async def test_orders_only_inside_liquid_hours(gateway, tmp_path):
    data = tomllib.loads((ROOT / "config/paper.toml").read_text())
    data["broker"].update(port=gateway.port, connect_timeout_s=3.0, request_timeout_s=3.0)
    data["data"]["dir"] = str(tmp_path)
    cfg = parse_config(data)
    assert cfg.loop.trade_outside_liquid_hours is False
    db = Store.open(tmp_path)
    broker = Broker(cfg.broker, "paper", Secrets({}), db)
    await broker.start()
    try:
        instances, templates = load_instances(
            cfg.swarm.instances_dir, cfg.swarm.templates_dir, cfg.risk.model_dump()
        )
        saturday, open_, evening = _moments()
        verdicts: dict[str, GateVerdict] = {}
        for name, when in (("saturday", saturday), ("open", open_), ("evening", evening)):

            def wall_now(at: dt.datetime = when) -> dt.datetime:
                return at

            commander = Commander(
                cfg=cfg,
                store=db,
                broker=broker,
                breaker=CircuitBreaker(tmp_path, db),
                provider=OfflineProvider(),
                instances=instances,
                templates=templates,
                gate_state=GateState(),
                clock=SystemClock(),
                watchdog_alive=lambda: True,
                cancel=asyncio.Event(),
                wall_now=wall_now,
            )
            d = Decision(
                contract=Contract.stock("MSFT"),
                action="BUY",
                order_type="LMT",
                quantity=1,
                accepted=True,
                reason="test",
                limit_price=415.0,
            )
            cycle_id = len(verdicts) + 1
            db.post(insert_cycle, cycle_id)
            verdicts[name] = await commander.act(d, cycle_id)
        assert verdicts["saturday"].reasons == (
            "market closed for this instrument (outside liquid hours)",
        )
        assert verdicts["evening"].reasons == verdicts["saturday"].reasons
        assert verdicts["open"].accepted, verdicts["open"].reasons
    finally:
        await broker.close()
        db.close()
