"""IB's error codes acted on through the policy table, against the paper gateway over TCP:
farm flaps, entitlements (354, delayed data), a competing session (10197), unknown codes."""

import asyncio
import itertools
import time
import tomllib
from pathlib import Path

import pytest
import pytest_asyncio
from invariant import assert_books_balance
from lake import read
from procs import data, start, write_config

from data_lake import Store, open_readonly, query_safety_events, query_trades
from paper_gateway import GatewayConfig
from runtime.breaker import BreakerState, CircuitBreaker
from runtime.broker import Broker
from runtime.cli import main as cli_main
from runtime.cli import status_dict
from runtime.config import Secrets, load_config, parse_config
from runtime.gate_context import build_gate_context
from runtime.ib_errors import Action
from runtime.main_loop import MainLoop
from runtime.watchdog import Watchdog
from skills.execution_gate import (
    WATCHDOG,
    GateContext,
    GateState,
    Holding,
    OrderRequest,
    Quote,
    evaluate,
    place_order_with_guard,
)

ROOT = Path(__file__).resolve().parents[2]
_cycles = itertools.count(1)


@pytest.fixture
def gateway_config():
    """Prices tick (the end-to-end runs fill their orders on the next tick)."""
    return GatewayConfig(tick_interval_s=0.25, account_push_interval_s=0.05)


def make_config(port: int, **broker):
    raw = tomllib.loads((ROOT / "config/paper.toml").read_text())
    raw["broker"].update(
        {
            "port": port,
            "connect_timeout_s": 3.0,
            "request_timeout_s": 3.0,
            "reconnect_initial_s": 0.05,
            "reconnect_max_s": 0.2,
            **broker,
        }
    )
    return parse_config(raw)


async def until(cond, timeout=5.0, what=""):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.01)
    return value


@pytest_asyncio.fixture
async def session(gateway, store):
    cfg = make_config(gateway.port)
    b = Broker(cfg.broker, cfg.mode, Secrets({}), store)
    await b.start()
    await until(lambda: b.account_values().get("DailyPnL") is not None, what="daily PnL")
    yield b, cfg
    await b.close()


def order(symbol: str, *, action: str = "BUY", source: str = "commander") -> OrderRequest:
    return OrderRequest(
        symbol=symbol,
        sec_type="STK",
        action=action,
        quantity=1,
        order_type="MKT",
        source=source,
        cycle_id=next(_cycles),
    )


async def through_gate(broker, cfg, store, request):
    """The commander's path: the gate's view built from the live session, then the gate."""
    ctx = await build_gate_context(
        broker,
        request,
        breaker="ACTIVE",
        watchdog_alive=True,
        market_open=True,
        now=time.monotonic(),
        quote_wait_s=1.0,
    )
    return await place_order_with_guard(request, ctx, GateState(), cfg.risk, store, broker)


def events(store, kind):
    return read(store, query_safety_events, kind)


@pytest.mark.asyncio
async def test_farm_flap_makes_quotes_suspect_without_an_outage(session, store, admin):
    broker, cfg = session
    assert (await through_gate(broker, cfg, store, order("MSFT"))).accepted
    admin.call("farm", farm="market", ok=False)  # 2103
    await until(lambda: broker.conditions.suspect("market"), what="2103 seen")
    refused = await through_gate(broker, cfg, store, order("MSFT"))
    assert not refused.accepted
    assert [r for r in refused.reasons if r.startswith("quote is suspect")], refused.reasons
    admin.call("farm", farm="market", ok=True)  # 2104
    await until(lambda: not broker.conditions.suspect("market"), what="2104 seen")
    assert (await through_gate(broker, cfg, store, order("MSFT"))).accepted
    # no outage: same socket, no reconnect, IB link up, nothing but the farm recorded
    assert broker.ready and broker.reconnects == 0 and broker.ib.isConnected()
    farm = events(store, "data_farm")
    assert [e["severity"] for e in farm] == ["warning", "info"]
    assert "2103" in farm[0]["reason"] and "usfarm" in farm[0]["reason"]
    assert events(store, "connectivity") == [] and events(store, "order_reject") == []


@pytest.mark.asyncio
async def test_354_makes_one_symbol_untradable_for_the_cycle_while_others_trade(
    session, store, admin
):
    broker, cfg = session
    admin.call("entitlement", symbol="AAPL", level="none")
    aapl = await broker.qualify("AAPL")
    t0 = time.monotonic()
    assert await broker.quote(aapl, max_wait_s=3.0) is None
    assert time.monotonic() - t0 < 2.0  # the 354 ends the wait, not the timeout
    refused = await through_gate(broker, cfg, store, order("AAPL"))
    assert not refused.accepted
    assert [r for r in refused.reasons if "AAPL untradable this cycle" in r and "354" in r]
    for _ in range(3):  # more quotes and gate checks in the same cycle: no new event
        assert await broker.quote(aapl, max_wait_s=0.2) is None
    assert (await through_gate(broker, cfg, store, order("MSFT"))).accepted
    [event] = events(store, "market_data_refused")
    assert event["reason"].startswith("AAPL: ") and "354" in event["reason"]
    broker.begin_cycle(1)  # the warm-up's refusal counts for the first cycle
    assert await broker.quote(aapl, max_wait_s=0.2) is None
    assert len(events(store, "market_data_refused")) == 1
    broker.begin_cycle(2)  # asked again: still not subscribed, one more event
    assert await broker.quote(aapl, max_wait_s=3.0) is None
    await until(lambda: len(events(store, "market_data_refused")) == 2, what="cycle 2 event")
    admin.call("entitlement", symbol="AAPL", level="live")
    broker.begin_cycle(3)  # subscribed now: AAPL trades again
    assert (await broker.quote(aapl, max_wait_s=3.0)) is not None
    assert (await through_gate(broker, cfg, store, order("AAPL"))).accepted


@pytest.mark.asyncio
async def test_delayed_quotes_are_refused_by_the_price_collar(gateway, store, admin):
    cfg = make_config(gateway.port, market_data="delayed")
    admin.call("entitlement", symbol="AAPL", level="delayed")
    broker = Broker(cfg.broker, cfg.mode, Secrets({}), store)
    await broker.start()
    try:
        await until(lambda: broker.account_values().get("DailyPnL") is not None)
        aapl = await broker.qualify("AAPL")
        quote = await broker.quote(aapl, max_wait_s=3.0)
        assert quote is not None and quote.market_data_type == 3  # 10167: delayed data shown
        refused = await through_gate(broker, cfg, store, order("AAPL"))
        assert not refused.accepted
        assert [r for r in refused.reasons if r.startswith("quote is delayed data")]
        live = await broker.quote(await broker.qualify("MSFT"), max_wait_s=3.0)
        assert live is not None and live.market_data_type == 1  # subscribed: live anyway
        assert (await through_gate(broker, cfg, store, order("MSFT"))).accepted
        [delayed] = events(store, "market_data_delayed")
        assert delayed["reason"].startswith("AAPL: ") and "10167" in delayed["reason"]
    finally:
        await broker.close()


@pytest.mark.asyncio
async def test_competing_session_refuses_every_order_until_live_data_flows(session, store, admin):
    broker, cfg = session
    msft = await broker.qualify("MSFT")
    assert await broker.quote(msft) is not None
    admin.call("competing_session", client_id=broker.client_id, active=True)
    await until(broker.refusing_all, what="10197 seen")
    for symbol in ("MSFT", "SPY"):
        refused = await through_gate(broker, cfg, store, order(symbol))
        assert not refused.accepted
        assert [r for r in refused.reasons if r.startswith("broker refuses all new orders")]
    broker.begin_cycle(1)  # asked again while it lasts: 10197 again, no second event
    assert await broker.quote(msft, max_wait_s=3.0) is None
    assert broker.refusing_all() and len(events(store, "broker_refuse_all")) == 1
    [event] = events(store, "broker_refuse_all")
    assert event["severity"] == "critical" and "10197" in event["reason"]
    admin.call("competing_session", client_id=broker.client_id, active=False)
    broker.begin_cycle(2)
    assert await broker.quote(msft, max_wait_s=3.0) is not None
    await until(lambda: broker.refusing_all() is None, what="cleared by live data")
    assert (await through_gate(broker, cfg, store, order("MSFT"))).accepted
    assert len(events(store, "broker_refuse_all_cleared")) == 1


@pytest.mark.asyncio
async def test_unknown_error_code_is_one_safety_event(session, store, admin):
    broker, _ = session
    for _ in range(3):
        admin.call("error", code=7777, msg="something IB has never documented")
    await until(lambda: broker.ib.isConnected() and events(store, "unknown_error_code"))
    admin.call("error", code=7778, msg="another one")
    await until(lambda: len(events(store, "unknown_error_code")) == 2, what="second code")
    first, second = events(store, "unknown_error_code")
    assert "7777" in first["reason"] and "never documented" in first["reason"]
    assert "7778" in second["reason"]
    assert broker.ready and broker.refusing_all() is None  # logged, nothing else


@pytest.mark.asyncio
async def test_socket_port_reset_drops_the_session_and_reconnects(session, store, admin):
    broker, _ = session
    admin.call("error", code=1300, msg="TWS socket port has been reset")
    await until(lambda: broker.reconnects == 1 and broker.ready, timeout=10, what="reconnect")
    [event] = [e for e in events(store, "connectivity") if "1300" in e["reason"]]
    assert event["severity"] == "critical"
    assert events(store, "reconnected")


@pytest.mark.asyncio
async def test_error_listeners_get_each_errors_row_after_the_tables_action(session, admin):
    """The seam for request pacing and the like: DELAY rows reach a listener; pacing trips
    nothing and leaves the session as it was."""
    broker, _ = session
    seen = []
    broker.add_error_listener(lambda policy, req_id, key, msg: seen.append((policy, req_id)))
    broker.add_error_listener(lambda *_: 1 / 0)  # a failing listener harms nothing
    admin.call("error", code=100, msg="Max rate of messages per second has been exceeded")
    admin.call("error", code=2104, msg="Market data farm connection is OK:usfarm")
    await until(lambda: len(seen) == 2, what="both errors")
    assert [(p.code, p.action, r) for p, r in seen] == [
        (100, Action.DELAY, -1),
        (2104, Action.INFO, -1),
    ]
    assert broker.ready and broker.reconnects == 0 and broker.refusing_all() is None


def _ctx(quote: Quote, **more) -> GateContext:
    return GateContext(
        breaker="HALTED",
        connected=True,
        watchdog_alive=True,
        market_open=True,
        quote=quote,
        holdings={"MSFT": Holding("MSFT", 10, 100.0)},
        daily_pnl=0.0,
        now=1000.0,
        **more,
    )


def test_watchdog_market_closes_are_exempt_from_market_data_refusals():
    cfg = load_config(ROOT / "config/paper.toml")
    close = order("MSFT", action="SELL", source=WATCHDOG)
    delayed = Quote(99.9, 100.1, 0.1, market_data_type=3)
    ctx = _ctx(delayed, untradable={"MSFT": "not subscribed (354)"}, refuse_all="x (10197)")
    assert evaluate(close, ctx, GateState(), cfg.risk) == []
    priced = OrderRequest(
        symbol="MSFT",
        sec_type="STK",
        action="SELL",
        quantity=1,
        order_type="LMT",
        limit_price=100.0,
        source=WATCHDOG,
    )
    frozen = _ctx(Quote(99.9, 100.1, 0.1, market_data_type=2))
    [reason] = evaluate(priced, frozen, GateState(), cfg.risk)
    assert reason.startswith("quote is frozen data (marketDataType 2)")


@pytest.mark.asyncio
async def test_status_shows_a_competing_session_while_it_lasts(gateway, admin, tmp_path, capsys):
    cfg_path = write_config(
        tmp_path,
        gateway.port,
        spawn=False,
        require_watchdog=False,
        cycle_interval_s=0.3,
        max_cycle_s=0.29,
    )
    cfg = load_config(cfg_path)
    loop = MainLoop(cfg, cfg_path, Secrets({}))
    task = asyncio.get_running_loop().create_task(loop.run(), name="main-loop-under-test")
    try:
        await until(lambda: loop.cycles_run >= 1, timeout=30, what="a first cycle")
        admin.call("competing_session", client_id=cfg.broker.client_id, active=True)

        def shown():
            return [c for c in status_dict(cfg, live=False)["main"]["conditions"] if "10197" in c]

        [line] = await until(shown, timeout=10, what="status shows the 10197")
        assert (
            line == "refusing all new orders: No market data during competing live session (10197)"
        )
        # the CLI's status command (in a thread: the daemon's loop keeps beating meanwhile)
        code = await asyncio.to_thread(cli_main, ["status", "--offline", "--config", str(cfg_path)])
        printed = capsys.readouterr().out
        assert code == 0 and printed.count(f"broker: {line}") == 1, printed
        ran = loop.cycles_run
        await until(lambda: loop.cycles_run >= ran + 2, timeout=10, what="cycles while it lasts")
        assert shown()
        admin.call("competing_session", client_id=cfg.broker.client_id, active=False)
        await until(lambda: not shown(), timeout=10, what="cleared once live data flows")
    finally:
        loop.stop.set()
        assert await asyncio.wait_for(task, 30) == 0
    db = open_readonly(data(tmp_path))
    [event] = query_safety_events(db, "broker_refuse_all")
    assert event["severity"] == "critical"
    assert len(query_safety_events(db, "broker_refuse_all_cleared")) == 1


def test_354_on_one_symbol_while_another_trades_end_to_end(gateway, admin, tmp_path):
    """Real processes: the daemon and its watchdog; AAPL has no market-data subscription."""
    admin.call("entitlement", symbol="AAPL", level="none")
    cfg = write_config(tmp_path, gateway.port)
    proc = start("run", cfg, "--max-cycles", "2")
    out = proc.communicate(timeout=90)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    db = open_readonly(data(tmp_path))
    assert [c["status"] for c in db.query("SELECT status FROM cycles ORDER BY id")] == ["ok"] * 2
    [trade] = query_trades(db)  # MSFT trades as if nothing happened
    assert (trade["symbol"], trade["side"]) == ("MSFT", "BOT")
    refused = query_safety_events(db, "market_data_refused")
    assert [e["reason"].split(":")[0] for e in refused] == ["AAPL", "AAPL"]  # one per cycle
    assert all("354" in e["reason"] for e in refused)
    assert query_safety_events(db, "breaker_trip") == []
    assert_books_balance(admin, data(tmp_path))


@pytest.mark.asyncio
async def test_the_watchdogs_session_follows_the_same_table(gateway, admin, tmp_path):
    """1100: its session cannot verify the account; a farm flap changes nothing; a delayed
    or suspect quote never prices its closing order (it goes to market instead)."""
    cfg = make_config(gateway.port, market_data="delayed")
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"dir": str(tmp_path)})})
    admin.call("entitlement", symbol="AAPL", level="delayed")
    for symbol in ("AAPL", "MSFT"):
        admin.call("set_position", symbol=symbol, quantity=10)
    w = Watchdog(cfg, Secrets({}))
    w.store = Store.open(tmp_path, busy_timeout_ms=200)
    w.breaker = CircuitBreaker(tmp_path, w.store)
    w.broker = Broker(
        cfg.broker,
        cfg.mode,
        Secrets({}),
        w.store,
        client_id=cfg.broker.watchdog_client_id,
        source="watchdog",
        intent_sources=("watchdog",),
    )
    await w.broker.start()
    try:
        held = {p.symbol: p for p in await until(lambda: w.broker.positions())}
        assert held.keys() == {"AAPL", "MSFT"}
        assert await w._poll_account() is not None and w.session_state() == "connected"

        async def close_type(symbol):
            request, _ = await w._prepare_close(held[symbol], 1, 1)
            return request.order_type

        assert await close_type("MSFT") == "LMT"  # live quote: a marketable limit
        assert await close_type("AAPL") == "MKT"  # delayed quote: never a price
        admin.call("farm", farm="market", ok=False)
        await until(lambda: w.broker.conditions.suspect("market"), what="2103")
        assert await close_type("MSFT") == "MKT"  # suspect quote: never a price
        assert await w._poll_account() is not None and w.session_state() == "connected"
        admin.call("farm", farm="market", ok=True)
        await until(lambda: not w.broker.conditions.suspect("market"), what="2104")
        assert await close_type("MSFT") == "LMT"
        admin.call("error", code=1100, msg="Connectivity between IB and TWS has been lost.")
        await until(lambda: not w.broker.ready, what="1100 seen")
        assert await w._poll_account() is None and w.session_state() == "unreachable"
        admin.call("error", code=1102, msg="Connectivity restored - data maintained.")
        await until(lambda: w.broker.ready, what="1102 seen")
        assert await w._poll_account() is not None and w.session_state() == "connected"
        assert w.breaker.status().state is BreakerState.ACTIVE
        assert w.broker.reconnects == 0
    finally:
        await w.broker.close()
        w.store.close(10)
