"""The broker adapter against the paper gateway over TCP: orders, recording, reconnects."""

import time
import tomllib
from pathlib import Path

import pytest
import pytest_asyncio
from ib_client import IB
from ib_client import NAME as IB_CLIENT_LIBRARY
from lake import intent, read, rows

from data_lake import Contract, insert_intent, query_safety_events, query_trades
from paper_gateway import Gateway, GatewayConfig
from paper_gateway.testing import eventually_async
from runtime.broker import AccountModeError, Broker, BrokerNotReady, ClientIdInUse
from runtime.config import Secrets, parse_config
from skills.execution_gate import (
    GateContext,
    GateState,
    OrderRequest,
    Quote,
    place_order_with_guard,
)

ROOT = Path(__file__).resolve().parents[2]


def make_config(port: int, **broker):
    data = tomllib.loads((ROOT / "config/paper.toml").read_text())
    data["broker"].update(
        {
            "port": port,
            "connect_timeout_s": 3.0,
            "request_timeout_s": 3.0,
            "reconnect_initial_s": 0.05,
            "reconnect_max_s": 0.2,
            "client_library": IB_CLIENT_LIBRARY,
            **broker,
        }
    )
    return parse_config(data)


@pytest.fixture
def db(store):
    return store


@pytest_asyncio.fixture
async def broker(gateway, db):
    cfg = make_config(gateway.port)
    b = Broker(cfg.broker, cfg.mode, Secrets({}), db)
    await b.start()
    yield b
    await b.close()


async def gate_order(broker, db, request, state=None):
    contract = await broker.qualify(request.contract)
    q = await broker.quote(contract)
    ctx = GateContext(
        breaker="ACTIVE",
        connected=broker.ready,
        watchdog_alive=True,
        market_open=True,
        quote=Quote(q.bid, q.ask, time.monotonic() - q.received),
        holdings={},
        daily_pnl=0.0,
        now=time.monotonic(),
    )
    cfg = make_config(1)
    return await place_order_with_guard(request, ctx, state or GateState(), cfg.risk, db, broker)


def req(symbol="AAPL", qty=10, order_type="MKT", price=None, tif="DAY", cycle=1, action="BUY"):
    return OrderRequest(
        contract=Contract.stock(symbol),
        action=action,
        quantity=qty,
        order_type=order_type,
        limit_price=price,
        tif=tif,
        cycle_id=cycle,
    )


@pytest.mark.asyncio
async def test_accepted_order_is_filled_and_recorded_once(broker, db, admin):
    verdict = await gate_order(broker, db, req())
    assert verdict.accepted, verdict.reasons
    await eventually_async(
        lambda: intent(db, verdict.order_ref)["status"] == "filled", what="filled"
    )
    await eventually_async(
        lambda: (
            read(db, query_trades, order_ref=verdict.order_ref)
            and read(db, query_trades, order_ref=verdict.order_ref)[0]["commission"]
        )
    )
    report = await broker.reconcile()  # replays every execution: still recorded once
    assert report.executions_new == 0
    [trade] = read(db, query_trades, order_ref=verdict.order_ref)
    assert (trade["shares"], trade["side"], trade["commission"]) == (10, "BOT", 1.0)
    assert admin.call("state")["executions"] == 1
    statuses = [
        r["status"]
        for r in rows(
            db,
            "SELECT status FROM order_events WHERE order_ref = ? ORDER BY id",
            [verdict.order_ref],
        )
    ]
    assert statuses[-1] == "Filled"


@pytest.mark.asyncio
async def test_the_broker_runs_on_the_configured_client_library(broker):
    assert broker.lib.__name__ == IB_CLIENT_LIBRARY
    assert type(broker.ib).__module__.split(".")[0] == IB_CLIENT_LIBRARY


@pytest.mark.asyncio
async def test_execution_and_commission_events_fired_again_are_recorded_once(gateway, db, admin):
    """ib_async (and ib_insync) may emit execDetailsEvent / commissionReportEvent more than once
    for one execId: the execution is counted and stored once, its commission stays right, and
    every number that reaches the lake and the gate is a float."""
    executions: list[float] = []
    cfg = make_config(gateway.port)
    b = Broker(cfg.broker, "paper", Secrets({}), db, on_execution=executions.append)
    await b.start()
    try:
        b.submit("dup-1", req(qty=7))
        await eventually_async(lambda: len(executions) == 1, what="the fill counted")
        await eventually_async(
            lambda: [t["commission"] for t in read(db, query_trades, order_ref="dup-1")] == [1.0],
            what="fill and commission stored",
        )
        [trade] = [t for t in b.ib.trades() if t.order.orderRef == "dup-1"]
        [fill] = trade.fills
        for _ in range(2):  # the library fires both events again for the same execution
            b.ib.execDetailsEvent.emit(trade, fill)
            b.ib.commissionReportEvent.emit(trade, fill, fill.commissionReport)
        b.ib.orderStatusEvent.emit(trade)  # and the final status once more
        assert (await b.reconcile()).executions_new == 0  # a reqExecutions replay on top
        assert await b.catch_up_executions() == 0
        await eventually_async(lambda: not db.backlog, what="queued writes done")
        [row] = read(db, query_trades, order_ref="dup-1")
        assert (row["shares"], row["commission"]) == (7.0, 1.0)
        assert all(isinstance(row[k], float) for k in ("shares", "price", "commission"))
        assert executions == executions[:1]  # counted once
        assert admin.call("state")["executions"] == 1
        [order] = rows(db, "SELECT status, filled FROM orders WHERE order_ref = ?", ["dup-1"])
        assert (order["status"], order["filled"]) == ("Filled", 7.0)
        [position] = b.positions()
        assert type(position.quantity) is float and position.quantity == 7.0
        assert type(position.avg_cost) is float
        [holding] = (await b.holdings(quote_wait_s=1.0)).values()
        assert type(holding.quantity) is float
    finally:
        await b.close()


@pytest.mark.asyncio
async def test_quotes_iv_rank_option_chain_and_hours(broker):
    stock = await broker.qualify(Contract.stock("NVDA"))
    q = await broker.quote(stock)
    assert q.bid < q.ask and q.iv is not None and 0.3 < q.iv < 0.8
    iv, rank = await broker.iv_rank(stock)
    assert iv == pytest.approx(q.iv, rel=1e-3)
    assert rank == pytest.approx(0.91, abs=0.02)
    expiries, strikes = await broker.option_chain(stock)
    opt = await broker.qualify(
        Contract.option("NVDA", expiries[2], min(strikes, key=lambda k: abs(k - 182)), "C")
    )
    oq = await broker.quote(opt)
    assert 0.3 < oq.delta < 0.7 and oq.multiplier == 100 and oq.underlying_price == q.last
    import datetime as dt

    saturday = dt.datetime(2026, 11, 21, 16, 0, tzinfo=dt.UTC)
    assert await broker.market_open(stock, saturday) is False


@pytest.mark.asyncio
async def test_paper_mode_refuses_an_account_that_is_not_paper(db):
    with Gateway(GatewayConfig(tick_interval_s=0, account="U7654321")) as gw:
        cfg = make_config(gw.port)
        b = Broker(cfg.broker, "paper", Secrets({}), db)
        with pytest.raises(AccountModeError, match="not a paper account"):
            await b.connect()
        assert not b.ib.isConnected()


@pytest.mark.asyncio
async def test_live_mode_needs_arming_before_connecting(gateway, db, admin):
    cfg = make_config(gateway.port)
    b = Broker(cfg.broker, "live", Secrets({}), db)
    with pytest.raises(AccountModeError, match="LIVE_TRADING_ARMED"):
        await b.connect()
    assert admin.call("state")["clients"] == []
    armed = Broker(cfg.broker, "live", Secrets({"LIVE_TRADING_ARMED": "1"}), db)
    with pytest.raises(AccountModeError, match="paper account"):
        await armed.connect()  # armed, but the gateway's account is a paper one


@pytest.mark.asyncio
async def test_client_id_in_use_on_first_start_is_a_clear_fatal_error(gateway, db):
    squatter = IB()
    await squatter.connectAsync("127.0.0.1", gateway.port, clientId=1, timeout=5)
    cfg = make_config(gateway.port)
    b = Broker(cfg.broker, "paper", Secrets({}), db)
    t0 = time.monotonic()
    try:
        with pytest.raises(ClientIdInUse, match="326"):
            await b.connect()
        assert time.monotonic() - t0 < cfg.broker.connect_timeout_s  # not a silent timeout
    finally:
        squatter.disconnect()


@pytest.mark.asyncio
async def test_gateway_restart_mid_order_leaves_it_accounted_for_without_duplicates(
    broker, db, admin
):
    day = await gate_order(broker, db, req(order_type="LMT", price=226.0, cycle=1))
    gtc = await gate_order(broker, db, req(order_type="LMT", price=226.5, tif="GTC", cycle=2))
    assert day.accepted and gtc.accepted
    await eventually_async(lambda: len(admin.call("state")["open_orders"]) == 2)
    reconnects = broker.reconnects
    admin.call("restart", down_s=0.3)
    await eventually_async(
        lambda: broker.reconnects > reconnects and broker.ready,
        timeout=10,
        what="reconnected and reconciled",
    )
    assert intent(db, day.order_ref)["status"] == "cancelled"  # DAY order lapsed
    assert intent(db, gtc.order_ref)["status"] == "submitted"
    refs = [o["order_ref"] for o in admin.call("state")["open_orders"]]
    assert refs == [gtc.order_ref]  # nothing was re-sent
    again = await gate_order(broker, db, req(order_type="LMT", price=226.5, tif="GTC", cycle=2))
    assert not again.accepted and "duplicate orderRef" in again.reasons[0]


@pytest.mark.asyncio
async def test_order_filled_while_disconnected_is_recorded_on_reconnect(gateway, db, admin):
    cfg = make_config(gateway.port)
    first = Broker(cfg.broker, "paper", Secrets({}), db)
    await first.start()
    verdict = await gate_order(first, db, req(order_type="LMT", price=226.0, tif="GTC"))
    await eventually_async(lambda: admin.call("state")["open_orders"])
    await first.close()
    admin.call("set_price", symbol="AAPL", price=225.0)  # fills while nobody listens
    assert admin.call("state")["executions"] == 1
    assert read(db, query_trades) == []
    second = Broker(cfg.broker, "paper", Secrets({}), db)
    await second.start()
    try:
        [trade] = read(db, query_trades)
        assert (trade["order_ref"], trade["price"]) == (verdict.order_ref, 226.0)
        stored = intent(db, verdict.order_ref)
        assert (stored["status"], stored["avg_fill_price"]) == ("filled", 226.0)
    finally:
        await second.close()


@pytest.mark.asyncio
async def test_intent_stored_but_never_sent_is_closed_not_resent(gateway, db, admin):
    db.call(
        insert_intent,
        {
            "order_ref": "cmd-c9-crashed",
            "source": "commander",
            "symbol": "AAPL",
            "sec_type": "STK",
            "action": "BUY",
            "quantity": 5,
            "order_type": "MKT",
            "tif": "DAY",
        },
        timeout=5,
    )
    cfg = make_config(gateway.port)
    b = Broker(cfg.broker, "paper", Secrets({}), db)
    await b.start()
    try:
        assert intent(db, "cmd-c9-crashed")["status"] == "not_sent"
        assert any(
            e["order_ref"] == "cmd-c9-crashed" for e in read(db, query_safety_events, "reconcile")
        )
        state = admin.call("state")
        assert state["open_orders"] == [] and state["executions"] == 0
    finally:
        await b.close()


@pytest.mark.asyncio
async def test_1100_stops_orders_until_connectivity_is_restored(broker, db, admin):
    admin.call("error", code=1100, msg="Connectivity between IB and TWS has been lost.")
    await eventually_async(lambda: not broker.ready, what="1100 seen")
    with pytest.raises(BrokerNotReady):
        broker.submit("x", req())
    refused = await gate_order(broker, db, req(cycle=5))
    assert not refused.accepted and "not connected" in refused.reasons[0]
    admin.call("error", code=1102, msg="Connectivity restored - data maintained.")
    await eventually_async(lambda: broker.ready, what="1102 seen")
    ok = await gate_order(broker, db, req(cycle=6))
    assert ok.accepted


@pytest.mark.asyncio
async def test_1101_resubscribes_market_data(broker, admin):
    stock = await broker.qualify(Contract.stock("MSFT"))
    await broker.quote(stock)
    before = admin.call("state")["market_data"]["1"]
    admin.call("error", code=1101, msg="Connectivity restored - data lost.")
    await eventually_async(
        lambda: (
            (now := admin.call("state")["market_data"]["1"])
            and now != before
            and len(now) == len(before)
        ),
        what="old subscription replaced by a new one",
    )
    admin.call("set_price", symbol="MSFT", price=430.0)
    await eventually_async(
        lambda: broker._tickers["MSFT"].last == 430.0, what="fresh data after 1101"
    )


@pytest.mark.asyncio
async def test_consecutive_rejects_are_reported_for_the_breaker(gateway, db, admin):
    streaks = []
    cfg = make_config(gateway.port)
    b = Broker(
        cfg.broker, "paper", Secrets({}), db, on_reject_streak=lambda n, why: streaks.append(n)
    )
    await b.start()
    try:
        for cycle in (1, 2, 3):
            admin.call("reject_next", code=201)
            verdict = await gate_order(b, db, req(cycle=cycle, qty=cycle))
            assert verdict.accepted  # the gate sent it; the broker rejected it

            def counted(c: int = cycle) -> bool:
                return len(streaks) >= c

            await eventually_async(counted, what=f"reject {cycle}")
        assert streaks == [1, 2, 3]
        assert len(read(db, query_safety_events, "order_reject")) == 3
    finally:
        await b.close()


@pytest.mark.asyncio
async def test_an_order_refused_with_321_is_rejected_and_never_counted_as_working(
    broker, db, admin
):
    """ib_async calls 321 a warning: it sets the order's local status to ValidationError (a
    status IB never sends) and fires orderStatusEvent; ib_insync cancels the order locally.
    Either way the intent is rejected with the code, no ValidationError is stored as a broker
    status, and the gate does not count the order as working."""
    admin.call("reject_next", code=321)
    verdict = await gate_order(broker, db, req(order_type="LMT", price=226.0, tif="GTC"))
    assert verdict.accepted  # the gate sent it; the broker refused it
    await eventually_async(
        lambda: intent(db, verdict.order_ref)["status"] == "rejected", what="rejected"
    )
    assert intent(db, verdict.order_ref)["last_error"].startswith("321: ")
    statuses = rows(db, "SELECT status FROM order_events WHERE order_ref = ?", [verdict.order_ref])
    assert "ValidationError" not in [r["status"] for r in statuses]
    assert await broker.working_orders() == ()
    assert admin.call("state")["open_orders"] == []


@pytest.mark.asyncio
async def test_client_id_in_use_on_reconnect_is_retried(gateway, db, admin):
    cfg = make_config(gateway.port, reconnect_initial_s=0.5, reconnect_max_s=0.5)
    b = Broker(cfg.broker, "paper", Secrets({}), db)
    await b.start()
    squatter = IB()
    codes = []
    b.ib.errorEvent += lambda r, code, m, c: codes.append(code)
    try:
        admin.call("restart", down_s=0.2)
        await eventually_async(lambda: not b.ib.isConnected(), what="dropped")

        async def squat() -> bool:  # take client id 1 as soon as the gateway is back
            try:
                await squatter.connectAsync("127.0.0.1", gateway.port, clientId=1, timeout=2)
            except (OSError, TimeoutError, ConnectionError):
                return False
            return squatter.isConnected()

        await eventually_async(squat, timeout=5, what="client id 1 taken", interval=0.02)
        await eventually_async(
            lambda: 326 in codes, timeout=5, what="the broker met 326 while reconnecting"
        )
        assert not b.ready
        squatter.disconnect()
        await eventually_async(
            lambda: b.ready, timeout=10, what="reconnected after the id was freed"
        )
    finally:
        squatter.disconnect()
        await b.close()


# --- counters before writes, execution catch-up (issue 8) -------------------------------------
LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


class _Lock:
    """Another process holds an exclusive lock on the database until released."""

    def __init__(self, store):
        import subprocess
        import sys

        from data_lake import db_path

        self.proc = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(db_path(store.data_dir))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.stdin = self.proc.stdin
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self):
        if self.proc.poll() is None:
            self.stdin.write("go\n")
            self.stdin.flush()
            assert self.proc.wait(10) == 0


@pytest.mark.asyncio
async def test_safety_counters_update_while_the_database_cannot_be_written(gateway, db, admin):
    streaks: list[int] = []
    executions: list[float] = []
    cfg = make_config(gateway.port)
    b = Broker(
        cfg.broker,
        "paper",
        Secrets({}),
        db,
        on_reject_streak=lambda n, why: streaks.append(n),
        on_execution=executions.append,
    )
    await b.start()
    lock = _Lock(db)
    try:
        admin.call("reject_next", code=201)
        b.submit("cnt-reject", req())
        await eventually_async(lambda: streaks == [1], what="reject counted during the lock")
        b.submit("cnt-fill", req(cycle=2))
        await eventually_async(
            lambda: len(executions) == 1, what="execution counted during the lock"
        )
        assert db.failing or db.backlog > 0  # the audit writes are still waiting
    finally:
        lock.release()
        await b.close()
    await eventually_async(
        lambda: len(read(db, query_trades)) == 1, what="the fill stored after the lock"
    )


@pytest.mark.asyncio
async def test_execution_catch_up_stores_each_missing_execution_once(gateway, db, admin, tmp_path):
    from data_lake import Store

    cfg = make_config(gateway.port)
    other_store = Store.open(tmp_path / "other", busy_timeout_ms=200, name="other")
    other = Broker(cfg.broker, "paper", Secrets({}), other_store, client_id=5)
    await other.start()
    mine = Broker(cfg.broker, "paper", Secrets({}), db)
    await mine.start()
    try:
        mine.submit("catch-1", req())
        await eventually_async(lambda: admin.call("state")["executions"] == 1, what="filled")
        # the other session never saw this fill (another client id): it catches it up, once
        assert read(other_store, query_trades) == []
        assert await other.catch_up_executions() == 1
        assert await other.catch_up_executions() == 0
        assert [t["order_ref"] for t in read(other_store, query_trades)] == ["catch-1"]
    finally:
        await mine.close()
        await other.close()
        other_store.close(5)


@pytest.mark.asyncio
async def test_write_recovery_triggers_a_catch_up_from_the_brokers_executions(
    gateway, db, admin, connect
):
    cfg = make_config(gateway.port)
    b = Broker(cfg.broker, "paper", Secrets({}), db)
    await b.start()
    lock = _Lock(db)
    try:
        b.submit("rec-mine", req())  # our fill: its write waits in the queue
        await eventually_async(lambda: admin.call("state")["executions"] == 1, what="our fill")
        await eventually_async(lambda: db.failing, what="a write failed during the lock")
        # a fill this session never hears about (another client), made during the failure
        from ib_client import MarketOrder, Stock

        other = IB()
        await other.connectAsync("127.0.0.1", gateway.port, clientId=6, timeout=5)
        other.placeOrder(Stock("AAPL", "SMART", "USD"), MarketOrder("BUY", 3, orderRef="rec-x"))
        await eventually_async(lambda: admin.call("state")["executions"] == 2, what="their fill")
        other.disconnect()
    finally:
        lock.release()
    try:
        await eventually_async(
            lambda: sorted(t["order_ref"] for t in read(db, query_trades)) == ["rec-mine", "rec-x"],
            timeout=10,
            what="both fills stored after the recovery, without a reconnect",
        )
        assert b.reconnects == 0
    finally:
        await b.close()
