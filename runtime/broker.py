"""The broker adapter: the ONLY module that imports the IB client library.

It connects (with a timeout), checks the account against the trading mode, reconciles what
the broker knows against the stored order intents before anything new may be sent, keeps
reconnecting with backoff and jitter after drops and gateway restarts, and records every
order status and execution in the data lake exactly once (by execId). Orders go out only
through `submit()`, which the execution gate calls; nothing else here places orders except
`close_position()`, which is the watchdog's path and is also called through the gate.

IB's error codes are acted on exactly as their row in `runtime/ib_errors.py` says; what they
say now (contracts untradable this cycle, a refuse-all condition, broken data farms) lives in
`Broker.conditions` and reaches the gate through `runtime/gate_context.py`. Other parts hook
in with `add_error_listener()` (called with each error's row after the built-in handling).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # typed against ib_insync; at run time the configured library (client_library)
    from ib_insync import IB, Fill, Order, Ticker, Trade
    from ib_insync import Contract as IBContract

from data_lake import (
    DONE_BROKER_STATES,
    Contract,
    IntentStatus,
    RefuseToStart,
    RetryLater,
    Store,
    TraderError,
    intent_status_for,
    intents_exist,
    intents_to_reconcile,
    known_exec_ids,
    log_account_snapshot,
    log_safety_event,
    log_trade,
    record_order_event,
    set_commission,
    update_intent,
)
from skills.brackets import is_protective_ref
from skills.execution_gate import Holding, OrderRequest, WorkingOrder

from .config import CLIENT_LIBRARIES, BrokerConfig, ConfigError, Secrets
from .ib_conditions import MarketConditions
from .ib_errors import (
    ORDER_ENDING_CODES,
    REJECT_CODES,
    Action,
    ErrorPolicy,
    Severity,
    first_sighting,
    is_global_cancel,
    policy_for,
)
from .market_hours import is_open
from .pacing import Backoff, HistoryPacer, LineBook
from .pacing_log import HistoryLog

__all__ = [
    "AccountModeError",
    "Broker",
    "BrokerError",
    "BrokerNotReady",
    "ClientIdInUse",
    "ErrorListener",
    "MarketDataLinesFull",
    "PositionView",
    "QuoteSnapshot",
    "ReconcileReport",
    "account_for",
    "client_library",
    "open_session",
    "probe_account",
    "probe_gateway",
    "probe_positions",
    "quiet_client_log",
]

T = TypeVar("T")
log = logging.getLogger("runtime.broker")

# Live quotes only: marketDataType 2 (frozen), 3 (delayed) and 4 (delayed-frozen) never price
# an order (the gate refuses them; see QuoteSnapshot.market_data_type).
LIVE = 1


# (policy row, request id, contract key or '', IB's message)
ErrorListener = Callable[[ErrorPolicy, int, str, str], None]
VALIDATION_ERROR = "ValidationError"  # ib_async's local status for an order warning (see below)
# Pacing refusals: never a fault, the request waits and is retried (runtime/pacing.py).
MAX_TICKERS = 101  # "Max number of tickers has been reached"
HISTORICAL_PACING = 162  # "... Historical data request pacing violation" (162 has other texts)
HISTORY_ATTEMPTS = 6  # a historical request refused for pacing this often gives up


class BrokerError(TraderError):
    """Base class: something at the broker prevents trading."""


class ClientIdInUse(BrokerError, RefuseToStart):
    """Error 326 on first start: another session uses this client id (a fatal config error)."""


class AccountModeError(BrokerError, RefuseToStart):
    """The account does not match the trading mode (paper needs DU..., live needs arming)."""


class BrokerNotReady(BrokerError, RetryLater):
    """Not connected, not reconciled, or connectivity to IB lost (1100): no orders."""


class MarketDataLinesFull(BrokerError, RetryLater):
    """Every market-data line streams a held position: a new subscription must wait."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QuoteSnapshot:
    contract: Contract
    bid: float
    ask: float
    last: float
    close: float
    received: float | None  # monotonic time of the last update (None: not known)
    multiplier: float = 1.0
    iv: float | None = None  # stock: implied vol (tick 106); option: model IV
    delta: float | None = None
    gamma: float | None = None
    vega: float | None = None
    theta: float | None = None
    underlying_price: float | None = None
    # no update since the last reconnect or connectivity restore: stale by definition
    pre_outage: bool = False
    # IB's marketDataType of the subscription: 1 live, 2 frozen, 3 delayed, 4 delayed-frozen
    market_data_type: int = LIVE
    suspect: str = ""  # why the quote cannot be trusted now ('' = it can), e.g. a broken farm


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionView:
    con_id: int
    contract: Contract
    quantity: float
    avg_cost: float
    multiplier: float

    @property
    def key(self) -> str:
        return self.contract.key


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    executions_new: int
    intents_checked: int
    intents_resolved: dict[str, str]  # order_ref -> new status
    unknown_broker_orders: tuple[str, ...]


# --- the client library: ib_insync 0.9.86 or ib_async 2.1.0 ------------------------------------
# One adapter runs on either (`[broker] client_library`); it is typed against ib_insync and loads
# the configured module when a Broker (or a probe) is built, so importing this module needs
# neither. What ib_async 2.x does differently, read in its source, and how this module handles it:
#  1. qualifyContractsAsync returns one entry per contract, None for an unknown or ambiguous one
#     (with its own secType filter of ambiguous answers; returnAll=True would give lists):
#     `_qualified_one` takes only a real Contract with a conId, and a failure is never cached.
#  2. Ticker and cancelMktData look contracts up by hash(contract) (ib_insync: by id), which
#     raises ValueError for a contract without a conId: `subscribe` qualifies such a contract
#     first, so market data is only ever requested for qualified contracts.
#  3. A bid/ask update with size 0 sets the price to IBDefaults.emptyPrice (-1) instead of the
#     price sent: a quote needs bid > 0 and ask > 0 (`_price`), with either library.
#  4. Error codes 105, 110 (not PendingSubmit), 321, 329, 399, 404, 434, 492, 10167 on an order
#     are "warnings" that set the trade's local status to "ValidationError" and emit
#     orderStatusEvent; IB never sends that status. It is not recorded as a broker status
#     (`_on_status`; the error itself is, by `_on_error`), and a session's own order in that
#     state counts as working only when the broker lists it (`_open_trades`).
#  5. Error 202 is an error, not a warning: the trade is set Cancelled locally and
#     orderStatusEvent fires before IB's own Cancelled status arrives, so a cancel can be
#     reported twice. Order events are appended; the orders row and the intent are upserts, and
#     the intent's final status is never overwritten (data_lake.record_order_event).
#  6. OrderStatus.DoneStates includes "Inactive", so openTrades() leaves Inactive orders out
#     (ib_insync lists them): working orders come from trades() filtered by
#     DONE_BROKER_STATES (`_working`), the same set with both libraries.
#  7. Order, OrderStatus, Position and Execution fields are annotated float | Decimal (prices,
#     quantities); 2.1.0's decoder still parses them to float, but every number crosses this
#     boundary through float() (`_qty`, `_num`), so a Decimal never reaches the gate or the lake.
#  8. execDetailsEvent and commissionReportEvent can fire more than once for one execId (a
#     reqExecutions replay re-sends commission reports; a report updates the fill in place):
#     executions are counted once per execId in memory (`_seen_exec`) and stored once by execId
#     (log_trade); commissions are an idempotent update. tests/runtime/test_broker.py
#     replays both events to prove it.
#  9. IB.disconnect() resets the wrapper (trades, fills, positions, tickers) at once, not at the
#     next connect: nothing here reads the session's caches after disconnecting it.
# 10. The client offers versions 157..178 (ib_insync 157..176); at 177+ faProfile leaves
#     placeOrder/openOrder. The paper gateway negotiates 176 with both.
# 11. Logs go to "ib_async.*" loggers (the CLI quiets both names); eventkit comes from the
#     aeventkit distribution, which installs the same `eventkit` package as ib_insync's
#     eventkit 1.0.3 (both libraries use only Event and Op from it: either copy serves both).
# Unchanged and relied on: the events' signatures, connectAsync's startup sync (fetchFields
# defaults to everything), RequestTimeout, client._msgQ (the outgoing throttle queue) and
# errorEvent's (reqId, code, message, contract).


@functools.cache
def client_library(name: str) -> ModuleType:
    """Import the IB client library `name` (ib_insync or ib_async): this module is the only
    importer of either. Raise ConfigError naming the key when it is not one or not installed."""
    try:
        lib: ModuleType
        if name == "ib_async":
            import ib_async

            lib = ib_async
            return lib
        if name == "ib_insync":
            import ib_insync

            lib = ib_insync
            return lib
    except ImportError as exc:
        raise ConfigError(f"broker.client_library: {name} cannot be imported: {exc}") from None
    raise ConfigError(
        f"broker.client_library: {name!r} is not one of {', '.join(CLIENT_LIBRARIES)}"
    )


@contextlib.contextmanager
def quiet_client_log() -> Iterator[None]:
    """Hold back the client library's own log lines while a command's short session runs
    (`check`, `status`, `drill`): ib_insync's "API connection failed: ..." and "Make sure API
    port on TWS/IBG is open" reach stderr through logging's last-resort handler before the
    command's own one-line refusal says the same. Both libraries' loggers; levels restored."""
    loggers = [logging.getLogger(name) for name in CLIENT_LIBRARIES]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _new_ib(cfg: BrokerConfig, timeout: float | None = None) -> IB:
    ib: IB = client_library(cfg.library).IB()
    ib.RequestTimeout = cfg.request_timeout_s if timeout is None else timeout
    return ib


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v != 1.7976931348623157e308 else None


def _order_row(o: Order, c: IBContract) -> dict[str, Any]:
    """The order as record_order_event stores it."""
    return {
        "symbol": c.symbol,
        "sec_type": c.secType,
        "action": o.action,
        "quantity": _qty(o.totalQuantity),
        "order_type": o.orderType,
        "limit_price": _num(o.lmtPrice),
    }


def _qty(x: Any) -> float:
    """A size, position or amount from the library as a float (ib_async may hold Decimal)."""
    return _num(x) or 0.0


def _price(x: Any) -> float | None:
    """A quoted price, or None when there is none (NaN, unset, or IB's -1 / 0 for no quote)."""
    v = _num(x)
    return v if v is not None and v > 0 else None


def _qualified_one(found: list[Any]) -> IBContract | None:
    """The one qualified contract of a qualifyContractsAsync answer, or None: ib_insync leaves
    a failure out, ib_async puts None (or a list of candidates) in its place."""
    first = found[0] if found else None
    if first is None or isinstance(first, list) or not getattr(first, "conId", 0):
        return None
    return first  # type: ignore[no-any-return]


async def open_session(
    ib: IB, cfg: BrokerConfig, client_id: int, mode: str, secrets: Secrets
) -> None:
    """Connect `ib` with a timeout; error 326 (client id in use) raises ClientIdInUse at once
    instead of waiting out the timeout; live mode needs LIVE_TRADING_ARMED=1."""
    if mode == "live" and not secrets.live_armed:
        raise AccountModeError(
            "mode is 'live' but LIVE_TRADING_ARMED=1 is not set: refusing to connect"
        )
    in_use: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def watch_326(req_id: int, code: int, msg: str, contract: Any) -> None:
        if code == 326 and not in_use.done():
            in_use.set_result(None)

    ib.errorEvent += watch_326
    task = asyncio.ensure_future(
        ib.connectAsync(
            cfg.host,
            cfg.port,
            clientId=client_id,
            timeout=cfg.connect_timeout_s,
            account=cfg.account,
        )
    )
    try:
        done, _ = await asyncio.wait(
            {task, in_use}, timeout=cfg.connect_timeout_s + 1, return_when=asyncio.FIRST_COMPLETED
        )
        if task not in done or in_use in done:
            task.cancel()
            await asyncio.wait({task}, timeout=5)  # never re-raises; our own cancel still does
            ib.disconnect()
            if in_use in done:
                raise ClientIdInUse(
                    f"client id {client_id} is already in use at {cfg.host}:{cfg.port} "
                    "(error 326): another session with this id is connected"
                )
            raise TimeoutError(f"connect to {cfg.host}:{cfg.port} timed out")
        task.result()
    except BaseException:
        if not task.done():
            task.cancel()
        raise
    finally:
        ib.errorEvent -= watch_326
        if not in_use.done():
            in_use.cancel()


def account_for(accounts: list[str], cfg: BrokerConfig, mode: str) -> str:
    """Return the account to trade, or raise AccountModeError when it does not exist at the
    gateway or does not match the mode (paper accounts start with DU)."""
    account = cfg.account or (accounts[0] if len(accounts) == 1 else "")
    if not account or account not in accounts:
        raise AccountModeError(
            f"account {cfg.account!r} not among the gateway's accounts {accounts}; "
            "set broker.account"
        )
    is_paper = account.startswith("DU")
    if mode == "paper" and not is_paper:
        raise AccountModeError(
            f"mode is 'paper' but account {account} is not a paper "
            "account (paper ids start with DU): refusing to trade"
        )
    if mode == "live" and is_paper:
        raise AccountModeError(f"mode is 'live' but account {account} is a paper account")
    return account


async def probe_gateway(cfg: BrokerConfig, mode: str, secrets: Secrets, client_id: int) -> str:
    """Connect with `client_id`, check the account against the mode, disconnect; return the
    account. Records nothing (`python -m runtime check`)."""
    ib = _new_ib(cfg)
    await open_session(ib, cfg, client_id, mode, secrets)
    try:
        return account_for(ib.managedAccounts(), cfg, mode)
    finally:
        ib.disconnect()


async def probe_positions(
    cfg: BrokerConfig, mode: str, secrets: Secrets, client_id: int
) -> dict[str, float]:
    """Ask the broker itself (a fresh session and a reqPositions round trip, no cache) for
    the account's positions: {contract key: quantity}, flat ones left out."""
    ib = _new_ib(cfg)
    await open_session(ib, cfg, client_id, mode, secrets)
    try:
        account = account_for(ib.managedAccounts(), cfg, mode)
        rows = await asyncio.wait_for(ib.reqPositionsAsync(), cfg.request_timeout_s)
        return {
            _key(p.contract): _qty(p.position)
            for p in rows
            if p.account == account and _qty(p.position)
        }
    finally:
        ib.disconnect()


async def probe_account(
    cfg: BrokerConfig, mode: str, secrets: Secrets, client_id: int, timeout: float
) -> dict[str, Any]:
    """The account as the broker sees it now (a short session of its own, read only): values,
    daily PnL, positions, and the open orders of every client id."""
    ib = _new_ib(cfg, timeout)
    short = cfg.model_copy(update={"connect_timeout_s": timeout})
    await open_session(ib, short, client_id, mode, secrets)
    try:
        account = account_for(ib.managedAccounts(), cfg, mode)
        positions = await asyncio.wait_for(ib.reqPositionsAsync(), timeout)
        orders = await asyncio.wait_for(ib.reqAllOpenOrdersAsync(), timeout)
        values = {
            v.tag: val
            for v in ib.accountValues(account)
            if v.currency in ("USD", "BASE", "") and (val := _num(v.value)) is not None
        }
        pnl = ib.reqPnL(account)
        deadline = time.monotonic() + timeout
        while _num(pnl.dailyPnL) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return {
            "account": account,
            "net_liquidation": values.get("NetLiquidation"),
            "daily_pnl": _num(pnl.dailyPnL),
            "unrealized_pnl": values.get("UnrealizedPnL"),
            "realized_pnl": values.get("RealizedPnL"),
            "positions": [
                {
                    "contract": _key(p.contract),
                    "quantity": _qty(p.position),
                    "avg_cost": _qty(p.avgCost),
                }
                for p in positions
                if p.account == account and _qty(p.position)
            ],
            "open_orders": [
                {
                    "order_ref": t.order.orderRef,
                    "client_id": t.order.clientId,
                    "contract": _key(t.contract),
                    "action": t.order.action,
                    "quantity": _qty(t.order.totalQuantity),
                    "order_type": t.order.orderType,
                    "limit_price": _num(t.order.lmtPrice),
                    "aux_price": _price(t.order.auxPrice),  # a stop's trigger
                    "status": t.orderStatus.status,
                }
                for t in orders
            ],
        }
    finally:
        ib.disconnect()


def _first_sentence(msg: str) -> str:
    """IB's message up to its first full stop (its texts run on with advice)."""
    return msg.split(".", 1)[0].strip()


def _position_view(p: Any) -> PositionView:
    """Our view of one library Position (numbers as floats)."""
    c = p.contract
    return PositionView(
        con_id=c.conId,
        contract=contract_of(c),
        quantity=_qty(p.position),
        avg_cost=_qty(p.avgCost),
        multiplier=float(c.multiplier or 1),
    )


def to_ib(lib: ModuleType, contract: Contract) -> IBContract:
    """The client library's (`lib`) unqualified SMART/USD contract for ours: the one mapping
    out."""
    c = contract
    if c.is_option:
        return lib.Option(c.symbol, c.expiry, c.strike, c.right, "SMART", currency="USD")  # type: ignore[no-any-return]
    return lib.Stock(c.symbol, "SMART", "USD")  # type: ignore[no-any-return]


def contract_of(c: IBContract) -> Contract:
    """Our contract for one the broker reports: the one mapping in."""
    if c.secType != "OPT":
        return Contract(symbol=c.symbol, sec_type=c.secType or "STK")
    return Contract(
        symbol=c.symbol,
        sec_type="OPT",
        expiry=c.lastTradeDateOrContractMonth or "",
        strike=_qty(c.strike),
        right=c.right or "",
    )


def _key(c: IBContract) -> str:
    return contract_of(c).key


class Broker:
    """One IB API session (client id) with reconnect, reconciliation and recording."""

    def __init__(
        self,
        cfg: BrokerConfig,
        mode: str,
        secrets: Secrets,
        store: Store,
        *,
        client_id: int | None = None,
        source: str = "main_loop",
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_reject_streak: Callable[[int, str], None] | None = None,
        on_execution: Callable[[float], None] | None = None,
        on_partial_fill: Callable[[str], None] | None = None,
        intent_sources: tuple[str, ...] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_protective_reject: Callable[[str, int, str], None] | None = None,
        history_log: HistoryLog | None = None,
    ) -> None:
        self.cfg = cfg
        self.mode = mode
        self.secrets = secrets
        self.store = store
        self.db_timeout_s = cfg.request_timeout_s
        self.client_id = cfg.client_id if client_id is None else client_id
        self.source = source
        self.monotonic = monotonic
        self.rng = rng or random.Random()
        self.on_reject_streak = on_reject_streak
        self.on_execution = on_execution
        self.on_partial_fill = on_partial_fill  # orderRef of ours that filled in part, live
        self.intent_sources = intent_sources  # reconcile only these intents (None: all)
        self.sleep = sleep  # waits of the pacing and the data proof (tests step time)
        # a protective child (stop / take-profit) the broker refused: its parent must not
        # leave a position without it (the commander closes it)
        self.on_protective_reject = on_protective_reject
        self.lib = client_library(cfg.library)
        self.ib = _new_ib(cfg)
        self.account = ""
        self.connected_to_ib = False  # False between 1100 and 1101/1102
        self.reconciled = False
        self.reject_streak = 0
        self.reconnects = 0
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._tickers: dict[str, Ticker] = {}
        self._ended: set[str] = set()  # subscriptions an error ended (no quotes this cycle)
        self._renew: set[str] = set()  # ended in an earlier cycle: requested on next use
        self._sub_seq = 0  # market-data requests sent so far
        self._seq_of: dict[str, int] = {}  # contract key -> sequence number of its request
        self._refuse_all_seq = 0  # _sub_seq when the last refuse-all condition was raised
        # what IB's error codes say now (per-contract refusals, refuse-all, broken farms)
        self.conditions = MarketConditions()
        self._error_listeners: list[ErrorListener] = []
        self._updated: dict[int, float] = {}  # id(ticker) -> monotonic time of last update
        self._qualified: dict[str, IBContract] = {}
        self._cancel_requested: set[str] = set()
        self._urgent: set[int] = set()  # ids of urgent messages still queued (see _first)
        self._pnl: Any = None
        self._seen_exec: set[str] = set()  # execIds already counted (memory, not the database)
        self._orders_lock = asyncio.Lock()  # one open/completed-orders request at a time
        self._loop: asyncio.AbstractEventLoop | None = None
        # pacing (runtime/pacing.py): market-data lines and historical requests
        self._lines = LineBook(cfg.max_market_data_lines)
        self._lines_lock = asyncio.Lock()
        self._lines_blocked_until = 0.0  # monotonic; after a 101, new lines wait until then
        self._line_backoff = Backoff(cfg.reconnect_initial_s, cfg.reconnect_max_s, self.rng)
        # the requests earlier processes sent count too (IB counts them): `history_log` keeps
        # them in the data directory across restarts (None: this process's requests only)
        self._history_log = history_log
        self._history = HistoryPacer(monotonic, sent=history_log.load() if history_log else ())
        self._history_lock = asyncio.Lock()
        # the pacing wait under way: (monotonic end, seconds, contract and why); it outlives a
        # cancel of the wait, so a cycle cancelled in it can say what it was waiting for
        self._history_wait: tuple[float, float, str] | None = None
        self._history_refusals = 0  # 162 pacing refusals seen (the request in flight retries)
        # data proof after a reconnect: ticks older than the epoch are stale by definition
        self._data_epoch = float("-inf")
        self._proving = False
        self._proof_task: asyncio.Task[None] | None = None
        self.add_error_listener(self._on_pacing_error)  # 101 and 162: queue, never error
        store.on_recovered.append(self._on_store_recovered)
        ib = self.ib
        ib.execDetailsEvent += self._on_exec
        ib.commissionReportEvent += self._on_commission
        ib.orderStatusEvent += self._on_status
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += self._on_disconnected
        ib.pendingTickersEvent += self._on_tickers

    # --- state -----------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Connected, synced, account checked, reconciled, and IB connectivity is up."""
        return self.ib.isConnected() and self.reconciled and self.connected_to_ib

    # --- connection ------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Connect, check the account, reconcile. Raise ClientIdInUse / AccountModeError /
        ConnectionError / TimeoutError on failure (the caller decides whether to retry)."""
        await self._open_session()
        try:
            self._check_account()
            self.connected_to_ib = True
            self._mark_data_stale()
            if self.cfg.market_data == "delayed":
                # live where subscribed, delayed elsewhere (the gate never prices on delayed)
                self.ib.reqMarketDataType(3)
            await self.reconcile()
            self._pnl = self.ib.reqPnL(self.account)
            await self._resubscribe()
        except BaseException:
            self.ib.disconnect()
            raise
        self._start_proof()
        log.info(
            "broker %s ready on %s %s: client %s account %s",
            self.source,
            self.lib.__name__,
            getattr(self.lib, "__version__", "?"),
            self.client_id,
            self.account,
        )

    async def _open_session(self) -> None:
        await open_session(self.ib, self.cfg, self.client_id, self.mode, self.secrets)

    def _check_account(self) -> None:
        self.account = account_for(self.ib.managedAccounts(), self.cfg, self.mode)

    async def start(self) -> None:
        """Connect once (failing loudly on fatal errors), then keep the session up."""
        self._loop = asyncio.get_running_loop()
        await self.connect()
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"broker-supervisor-{self.client_id}"
        )

    async def _supervise(self) -> None:
        delay = self.cfg.reconnect_initial_s
        while not self._closing:
            if self.ib.isConnected():
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self.connect()
                self.reconnects += 1
                delay = self.cfg.reconnect_initial_s
                self._event("reconnected", f"reconnected after a drop (#{self.reconnects})", "info")
            except AccountModeError as exc:
                self._event("account_mode", str(exc), "critical")
                raise
            except (ConnectionError, OSError, TimeoutError, ClientIdInUse) as exc:
                wait = min(delay, self.cfg.reconnect_max_s) * (0.5 + self.rng.random())
                log.warning(
                    "broker %s reconnect failed (%s); retrying in %.1fs", self.source, exc, wait
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.cfg.reconnect_max_s)

    def _on_store_recovered(self) -> None:
        """The store's writer thread: the database is writable again. Catch up the broker's
        executions on the event loop (a fill whose write was lost is stored from there)."""
        loop = self._loop
        if loop is None or self._closing:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to do
            loop.call_soon_threadsafe(self._start_catch_up)

    def _start_catch_up(self) -> None:
        if self._closing:
            return
        task = asyncio.get_running_loop().create_task(
            self._catch_up_logged(), name=f"broker-catch-up-{self.client_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _catch_up_logged(self) -> None:
        try:
            await self.catch_up_executions()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next cycle's sync or reconnect retries
            log.error("broker %s: execution catch-up failed: %s", self.source, exc)

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.store.on_recovered.remove(self._on_store_recovered)
        self._closing = True
        self._wake.set()
        tasks = [
            *self._tasks,
            *([self._supervisor] if self._supervisor else []),
            *([self._proof_task] if self._proof_task else []),
        ]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self.ib.disconnect()

    def _on_disconnected(self) -> None:
        self.reconciled = False
        self._mark_data_stale()
        if not self._closing:
            log.error(
                "broker %s: socket to the gateway lost; no orders until reconnected", self.source
            )
        self._wake.set()

    # --- reconciliation --------------------------------------------------------------------------
    async def reconcile(self) -> ReconcileReport:
        """Match stored intents against the whole account at the broker (open orders of every
        client id, completed orders, executions); record what happened while we were away.
        Never re-sends anything: a sent intent the broker does not know becomes `unresolved`
        (a safety event; the gate blocks its contract until it is resolved).

        Reads go through the store's writer (after every queued write), so they see this
        process's own records; a database that cannot answer fails the reconcile (no trading).
        """
        self.reconciled = False
        report = await self._reconcile(flag_missing=True)
        self._snapshot_account("reconcile")
        self.reconciled = True
        log.info(
            "broker %s reconciled: %d new executions, %d intents checked, resolved %s",
            self.source,
            report.executions_new,
            report.intents_checked,
            report.intents_resolved,
        )
        return report

    async def sync_intents(self) -> ReconcileReport:
        """The light reconcile run every cycle: store executions not yet stored and move each
        open or unresolved intent to the broker's state. It never marks an intent missing
        (only the full reconcile at connect does)."""
        return await self._reconcile(flag_missing=False)

    async def catch_up_executions(self) -> int:
        """Store every broker execution not stored yet (each execId once); return how many."""
        if not self.ib.isConnected():
            return 0  # the reconcile after the reconnect catches up
        fills = await asyncio.wait_for(
            self._first(self.ib.reqExecutionsAsync), self.cfg.request_timeout_s
        )
        return await self._store_new_fills(fills)

    async def _store_new_fills(self, fills: list[Fill]) -> int:
        known = await self.store.run(
            known_exec_ids, [f.execution.execId for f in fills], timeout=self.db_timeout_s
        )
        new = 0
        for f in fills:
            if f.execution.execId in known:
                self._seen_exec.add(f.execution.execId)
                continue
            new += 1
            if self._record_fill(f) and f.execution.clientId == self.client_id:
                self._count_execution()  # ours, caught up, never seen live: it counts all the same
            self._record_commission(f)
        if new:
            log.warning("broker %s: %d executions caught up from the broker", self.source, new)
        return new

    async def _open_trades(self) -> list[Trade]:
        """Working orders of every client id, fresh from the broker, plus this session's own
        (its just-sent orders may not be acknowledged yet)."""
        async with self._orders_lock:
            fresh = await asyncio.wait_for(
                self._first(self.ib.reqAllOpenOrdersAsync), self.cfg.request_timeout_s
            )
        out: dict[tuple[int, int, int], Trade] = {}
        own = [  # a client-side ValidationError is not a broker state: the broker decides
            t
            for t in self._working()
            if t.order.clientId == self.client_id and t.orderStatus.status != VALIDATION_ERROR
        ]
        for t in [*own, *fresh]:
            o = t.order
            key = (o.clientId, o.orderId, o.permId if o.orderId <= 0 else 0)
            if t.orderStatus.status not in DONE_BROKER_STATES:
                out[key] = t
            else:
                out.pop(key, None)
        return list(out.values())

    async def working_orders(self) -> tuple[WorkingOrder, ...]:
        """Orders resting at the broker (every client id) as the gate counts them."""
        out = []
        for t in await self._open_trades():
            o, s, c = t.order, t.orderStatus, t.contract
            remaining = _num(s.remaining) or 0.0
            if remaining <= 0:
                remaining = max(0.0, _qty(o.totalQuantity) - _qty(s.filled))
            if remaining <= 0:
                continue
            signed = remaining if o.action == "BUY" else -remaining
            default_mult = 100.0 if c.secType == "OPT" else 1.0
            out.append(
                WorkingOrder(
                    contract=contract_of(c),
                    signed_quantity=signed,
                    limit_price=_num(o.lmtPrice)
                    if o.orderType == "LMT"
                    else _num(o.auxPrice)
                    if o.orderType == "STP"
                    else None,
                    multiplier=float(c.multiplier or default_mult),
                    order_ref=o.orderRef or "",
                )
            )
        return tuple(out)

    async def _reconcile(self, *, flag_missing: bool) -> ReconcileReport:
        timeout = self.cfg.request_timeout_s
        fills = await asyncio.wait_for(self.ib.reqExecutionsAsync(), timeout)
        new = await self._store_new_fills(fills)
        async with self._orders_lock:
            completed = await asyncio.wait_for(self.ib.reqCompletedOrdersAsync(False), timeout)
        open_by_ref = {t.order.orderRef: t for t in await self._open_trades() if t.order.orderRef}
        done_by_ref = {t.order.orderRef: t for t in completed if t.order.orderRef}
        filled_by_ref: dict[str, float] = {}
        cost_by_ref: dict[str, float] = {}
        exec_by_ref: dict[str, Any] = {}  # an execution of the order: its ids
        for f in fills:
            ref = f.execution.orderRef
            exec_by_ref[ref] = f.execution
            filled_by_ref[ref] = filled_by_ref.get(ref, 0.0) + _qty(f.execution.shares)
            cost_by_ref[ref] = cost_by_ref.get(ref, 0.0) + _qty(f.execution.shares) * _qty(
                f.execution.price
            )

        def avg_price(ref: str) -> float | None:  # from the executions (filled while away)
            filled = filled_by_ref.get(ref, 0.0)
            return cost_by_ref[ref] / filled if filled > 0 else None

        intents = await self.store.run(
            intents_to_reconcile, self.intent_sources, timeout=self.db_timeout_s
        )
        resolved: dict[str, str] = {}
        for intent in intents:
            ref = intent["order_ref"]
            was = intent["status"]
            status: IntentStatus | None = None
            if ref in open_by_ref:
                t = open_by_ref[ref]
                if flag_missing:
                    self._record_status(t)
                if was != IntentStatus.SUBMITTED:
                    status = IntentStatus.SUBMITTED
                    self.store.post(
                        update_intent,
                        ref,
                        status=status,
                        perm_id=t.order.permId or None,
                        broker_order_id=t.order.orderId or None,
                    )
            elif ref in done_by_ref:
                t = done_by_ref[ref]
                status = intent_status_for(t.orderStatus.status)
                if status is IntentStatus.SUBMITTED:  # a completed order is never working
                    status = IntentStatus.CANCELLED
                # the broker's final word on the order itself (its orders row and an order
                # event), as if its status had arrived live: not the last we heard before
                self._record_completed(t, filled_by_ref.get(ref, 0.0), avg_price(ref))
                self.store.post(
                    update_intent,
                    ref,
                    status=status,
                    perm_id=t.order.permId,
                    filled=filled_by_ref.get(ref, 0.0),
                    **({"avg_fill_price": p} if (p := avg_price(ref)) is not None else {}),
                )
            elif ref in filled_by_ref:
                filled = filled_by_ref[ref]
                status = (
                    IntentStatus.FILLED if filled >= intent["quantity"] else IntentStatus.SUBMITTED
                )
                if status != was or flag_missing:
                    if status is IntentStatus.FILLED:  # its orders row says so too
                        e = exec_by_ref[ref]
                        self.store.post(
                            record_order_event,
                            order_ref=ref,
                            perm_id=e.permId or None,
                            order_id=e.orderId or None,
                            client_id=e.clientId or None,
                            status="Filled",
                            filled=filled,
                            remaining=0.0,
                            avg_fill_price=avg_price(ref),
                            message="reconciled: filled, by the executions",
                        )
                    self.store.post(
                        update_intent,
                        ref,
                        status=status,
                        filled=filled,
                        avg_fill_price=avg_price(ref),
                    )
            elif flag_missing and was != IntentStatus.UNRESOLVED and not self._placed_here(ref):
                # The broker has never seen it. Pending: the process died between storing
                # the intent and sending it. Submitted: it was sent and is lost (or another
                # session hides it): a person decides. Never re-sent.
                status = (
                    IntentStatus.NOT_SENT
                    if was == IntentStatus.PENDING
                    else IntentStatus.UNRESOLVED
                )
                self.store.post(
                    update_intent,
                    ref,
                    status=status,
                    last_error="not found at the broker during reconciliation",
                )
                if status is IntentStatus.UNRESOLVED:
                    self._event(
                        "unresolved_intent",
                        f"intent {ref} ({intent['action']} {intent['quantity']:g} "
                        f"{intent['symbol']}) was sent but the broker does not know it: not "
                        "re-sent; new orders for this contract are blocked until the broker "
                        "reports it or a person resolves it (python -m runtime intent resolve)",
                        "critical",
                        order_ref=ref,
                    )
                else:
                    self._event(
                        "reconcile",
                        f"intent {ref} ({was}) not found at the broker: marked "
                        f"{status.value}, not re-sent",
                        "warning",
                        order_ref=ref,
                    )
            if status is not None and status.value != was:
                resolved[ref] = status.value
                if was == IntentStatus.UNRESOLVED:
                    self._event(
                        "intent_resolved",
                        f"unresolved intent {ref} reported by the broker: {status.value}",
                        "warning",
                        order_ref=ref,
                    )
        unknown: tuple[str, ...] = ()
        if flag_missing:
            mine = {i["order_ref"] for i in intents}
            candidates = [r for r in open_by_ref if r not in mine]
            stored = (
                await self.store.run(intents_exist, candidates, timeout=self.db_timeout_s)
                if candidates
                else set()
            )
            unknown = tuple(sorted(r for r in candidates if r not in stored))
            for ref in unknown:
                self._event(
                    "reconcile",
                    f"open order {ref} at the broker has no stored intent",
                    "warning",
                    order_ref=ref,
                )
        return ReconcileReport(new, len(intents), resolved, unknown)

    def _placed_here(self, ref: str) -> bool:
        """This session placed an order with this ref (a send that raced this reconcile:
        its own status events settle it; checked with no await before the update)."""
        return any(
            t.order.orderRef == ref and t.order.clientId == self.client_id for t in self.ib.trades()
        )

    # --- recording -------------------------------------------------------------------------------
    def _record_fill(self, fill: Fill) -> bool:
        """Queue the execution's record (retried; stored once by execId); True when this
        session had not seen it before."""
        new = fill.execution.execId not in self._seen_exec
        self._seen_exec.add(fill.execution.execId)
        self._post_fill(fill)
        return new

    def _post_fill(self, fill: Fill) -> None:
        c, e = fill.contract, fill.execution
        row = {
            "exec_id": e.execId,
            "order_ref": e.orderRef or None,
            "perm_id": e.permId,
            "order_id": e.orderId,
            "client_id": e.clientId,
            "account": e.acctNumber,
            **contract_of(c).to_row(),
            "con_id": c.conId,
            "multiplier": float(c.multiplier or 1),
            "side": e.side,
            "shares": _qty(e.shares),
            "price": _qty(e.price),
            "exec_time": e.time.isoformat() if e.time else "",
        }
        self.store.post(log_trade, row)  # queued and retried: a busy disk never loses it

    def _record_commission(self, fill: Fill) -> None:
        report = fill.commissionReport
        if report and report.execId and _num(report.commission):
            self.store.post(
                set_commission, report.execId, _qty(report.commission), _num(report.realizedPNL)
            )

    def _on_exec(self, trade: Trade, fill: Fill) -> None:
        # the safety counters first, independent of the audit write
        new = fill.execution.execId not in self._seen_exec
        self._seen_exec.add(fill.execution.execId)
        if new:
            self._count_execution()
        try:
            self._post_fill(fill)
        except Exception:  # the catch-up from the broker's executions will store it
            log.exception("execution %s not queued for storage", fill.execution.execId)
        partial = _qty(fill.execution.cumQty) < _qty(trade.order.totalQuantity)
        if new and partial and self.on_partial_fill is not None and fill.execution.orderRef:
            try:
                self.on_partial_fill(fill.execution.orderRef)
            except Exception:
                log.exception("partial fill handler failed")
        if new:
            log.info(
                "execution %s %s %g %s @ %g ref=%s",
                fill.execution.execId,
                fill.execution.side,
                _qty(fill.execution.shares),
                _key(fill.contract),
                _qty(fill.execution.price),
                fill.execution.orderRef,
            )

    def _count_execution(self) -> None:
        """An execution this session had not seen: the gate's execution counters (and the
        repeated-execution throttle) count it now, whenever the broker delivered it."""
        self.reject_streak = 0
        if self.on_execution is not None:
            try:
                self.on_execution(self.monotonic())
            except Exception:
                log.exception("execution counter failed")

    def _on_commission(self, trade: Trade, fill: Fill, report: Any) -> None:
        self._record_commission(fill)

    def _record_status(self, trade: Trade) -> None:
        s, o, c = trade.orderStatus, trade.order, trade.contract
        self.store.post(
            record_order_event,
            order_ref=o.orderRef or None,
            perm_id=o.permId or s.permId or None,
            order_id=o.orderId,
            client_id=o.clientId or self.client_id,
            status=s.status,
            filled=_qty(s.filled),
            remaining=_qty(s.remaining),
            avg_fill_price=_num(s.avgFillPrice) or None,
            order=_order_row(o, c),
        )

    def _record_completed(self, trade: Trade, filled: float, avg_fill_price: float | None) -> None:
        """Record a completed order found by reconciliation (filled or cancelled while no
        session of ours heard it): its status, with the fills the executions show."""
        s, o, c = trade.orderStatus, trade.order, trade.contract
        self.store.post(
            record_order_event,
            order_ref=o.orderRef or None,
            perm_id=o.permId or s.permId or None,
            order_id=o.orderId or None,
            client_id=o.clientId or None,
            status=s.status,
            filled=filled,
            remaining=max(0.0, _qty(o.totalQuantity) - filled),
            avg_fill_price=avg_fill_price,
            message="reconciled: completed at the broker",
            order=_order_row(o, c),
        )

    def _on_status(self, trade: Trade) -> None:
        if trade.orderStatus.status == VALIDATION_ERROR:
            # ib_async's own status for an order warning; IB never sends it. The error event
            # that follows records the code (and, for an order-ending code, the rejection).
            log.warning("order %s: validation warning from the broker", trade.order.orderRef)
            return
        try:
            self._record_status(trade)
        except Exception:
            log.exception("could not record the status of order %s", trade.order.orderRef)

    # --- IB errors: the policy table (runtime/ib_errors.py) decides --------------------------
    def _on_error(self, req_id: int, code: int, msg: str, contract: Any) -> None:
        policy = policy_for(code)
        key = _key(contract) if contract is not None and contract.symbol else ""
        self._apply_policy(policy, req_id, key, msg)
        self._notify_listeners(policy, req_id, key, msg)

    def _apply_policy(self, policy: ErrorPolicy, req_id: int, key: str, msg: str) -> None:
        """Act on an IB error exactly as its row in the policy table says."""
        code = policy.code
        if not policy.known:
            log.warning("broker %s: IB error %s (no policy row): %s", self.source, code, msg)
            if first_sighting(code):
                self._event(
                    "unknown_error_code",
                    f"IB error {code} has no row in the policy table: {msg} (logged; "
                    "recorded once per process)",
                    "warning",
                )
            return
        level = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING}.get(
            policy.severity, logging.ERROR
        )
        if code == 202 and (
            self._cancelled_by_us(self._own_ref(req_id)) or is_global_cancel(code, msg)
        ):
            level = logging.INFO  # our own cancel (or an OCA sibling's), or a global cancel
        log.log(
            level,
            "broker %s: IB %s %s (req %s%s): %s",
            self.source,
            policy.severity,
            code,
            req_id,
            f", {key}" if key else "",
            msg,
        )
        if policy.farm:
            self._on_farm(policy, msg)
        if 1100 in policy.clears:
            self._restored(code, msg)
        for cleared in policy.clears:  # a refuse-all condition this code ends
            if self.conditions.clear(cleared) is not None:
                self._event("broker_refuse_all_cleared", f"{code}: {msg}", "warning")
        if policy.ends_request and key:
            self._end_subscription(key, req_id)
        if policy.action is Action.ORDER_REJECT:
            if req_id > 0:
                self._on_order_error(req_id, code, msg)
        elif policy.action is Action.REFUSE_SYMBOL:
            self._refuse_symbol(policy, key, msg)
        elif policy.action is Action.REFUSE_ALL:
            self._refuse_all(policy, msg)
        elif policy.action is Action.TRIP_BREAKER:
            # no row uses it today; fail closed rather than ignore it
            self._refuse_all(policy, msg)
        elif policy.action is Action.RECONNECT:
            self._reconnect(policy, msg)
        elif policy.action is Action.RESUBSCRIBE:
            # 1101: the restore above resubscribes market data; 10182/10225 concern bar
            # subscriptions, which the daemon does not keep (ib_insync renews 10225 itself)
            if code == 2100:
                self._spawn(self._account_updates(), f"broker-account-updates-{self.client_id}")
        elif key and policy.severity is not Severity.INFO and self.conditions.note(code, key):
            # INFO / DELAY warnings about one contract: recorded once per contract per cycle
            kind = "market_data_delayed" if code == 10167 else "broker_warning"
            self._event(kind, f"{key}: {policy.meaning} ({code}: {msg})", "warning")

    def add_error_listener(self, listener: ErrorListener) -> None:
        """Call `listener(policy, req_id, contract_key, msg)` for every IB error, after the
        table's own action (e.g. request pacing on DELAY rows). Its exceptions are logged."""
        self._error_listeners.append(listener)

    def _notify_listeners(self, policy: ErrorPolicy, req_id: int, key: str, msg: str) -> None:
        for listener in self._error_listeners:
            try:
                listener(policy, req_id, key, msg)
            except Exception:
                log.exception("error listener %r failed on %s", listener, policy.code)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_event_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _restored(self, code: int, msg: str) -> None:
        """1101/1102: IB connectivity is back (1101 also lost the market data)."""
        self._event("connectivity", f"{code}: {msg}", "warning")
        self.on_connectivity_restored(code)

    def _on_farm(self, policy: ErrorPolicy, msg: str) -> None:
        """Farm status: broken marks that farm's data suspect (not an outage); OK ends it."""
        name = msg.rsplit(":", 1)[-1].strip() if ":" in msg else ""
        if policy.clears:
            if self.conditions.farm_ok(policy.farm, name):
                self._event(
                    "data_farm", f"{policy.farm} data farm OK again ({policy.code}: {msg})", "info"
                )
        elif self.conditions.farm_broken(policy.farm, name, policy.code, msg):
            self._event("data_farm", f"{policy.meaning} ({policy.code}: {msg})", "warning")

    def _end_subscription(self, key: str, req_id: int) -> None:
        """An error ended this contract's market-data subscription: no quotes flow for it
        until it is requested again (at the next cycle)."""
        ticker = self._tickers.get(key)
        if ticker is not None and self.ib.wrapper.reqId2Ticker.get(req_id) is ticker:
            self._ended.add(key)

    def _refuse_symbol(self, policy: ErrorPolicy, key: str, msg: str) -> None:
        if not key:  # cannot say which contract: recorded (once a cycle), nothing refused
            if self.conditions.note(policy.code, ""):
                self._event(
                    "market_data_refused",
                    f"a contract the error does not name: {policy.meaning} ({policy.code}: {msg})",
                    "warning",
                )
            return
        if self.conditions.refuse(key, policy.code, _first_sentence(msg) or policy.meaning):
            self._event(
                "market_data_refused",
                f"{key}: {policy.meaning} ({policy.code}: {msg}); other contracts keep trading",
                "warning",
            )

    def _refuse_all(self, policy: ErrorPolicy, msg: str) -> None:
        if policy.code == 1100:  # the IB link itself: `ready` is False until 1101/1102
            self.on_connectivity_lost()
            self._event("connectivity", f"1100: {msg}; no orders until restored", "critical")
            return
        self._refuse_all_seq = self._sub_seq
        if self.conditions.refuse_all(policy.code, _first_sentence(msg) or policy.meaning):
            self._event(
                "broker_refuse_all",
                f"{policy.meaning} ({policy.code}: {msg}): every new order is refused",
                "critical",
            )

    def _reconnect(self, policy: ErrorPolicy, msg: str) -> None:
        if policy.code == 326:  # at connect: open_session raises ClientIdInUse (retried)
            return
        self._event(
            "connectivity", f"{policy.code}: {msg}; dropping the session to reconnect", "critical"
        )
        if not self._closing:
            asyncio.get_event_loop().call_soon(self._drop_session)

    def _drop_session(self) -> None:
        """Close the socket as a socket loss would: ib_insync clears its session state only
        when the peer closes (a PnL subscription left registered would refuse the reconnect's
        reqPnL), so clear it here too; the supervisor reconnects and reconciles."""
        self.ib.disconnect()
        self.ib.wrapper.reset()

    async def _account_updates(self) -> None:
        """2100: the account-data subscription ended; request it again."""
        try:
            await asyncio.wait_for(
                self.ib.reqAccountUpdatesAsync(self.account), self.cfg.request_timeout_s
            )
        except (TimeoutError, ConnectionError) as exc:
            log.error("broker %s: account updates not renewed: %s", self.source, exc)

    def _own_ref(self, req_id: int) -> str | None:
        """The orderRef of this session's order with this id (other clients' ids, seen in
        reconcile, may clash)."""
        trade = next(
            (
                t
                for t in self.ib.trades()
                if t.order.orderId == req_id and t.order.clientId == self.client_id
            ),
            None,
        )
        return trade.order.orderRef if trade else None

    def _cancelled_by_us(self, ref: str | None) -> bool:
        """A 202 for this order answers a cancel we asked for, or is a protective child
        cancelled by its OCA group or its parent's cancel: not a reject (a broker refusal of
        one is 201)."""
        return ref in self._cancel_requested or is_protective_ref(ref)

    def _on_order_error(self, req_id: int, code: int, msg: str) -> None:
        """The reject accounting (ORDER_REJECT rows): stored on the order; ending codes reject
        its intent; counted codes (and 202s the daemon did not ask for) feed the trip. A 202
        from a global cancel (the watchdog's, the panic's, a person's in TWS) is a cancel: its
        text is kept as the intent's last error (the cause), and it counts as no reject."""
        ref = self._own_ref(req_id)
        cancelled = code == 202 and (self._cancelled_by_us(ref) or is_global_cancel(code, msg))
        counted = code in REJECT_CODES or (code == 202 and not cancelled)
        if counted:  # the safety counter first, independent of the audit writes
            self.reject_streak += 1
            if self.on_reject_streak is not None:
                try:
                    self.on_reject_streak(self.reject_streak, f"{code}: {msg}")
                except Exception:
                    log.exception("reject counter failed")
        try:
            self.store.post(
                record_order_event,
                order_ref=ref,
                perm_id=None,
                order_id=req_id,
                client_id=self.client_id,
                status=None,
                error_code=code,
                message=msg,
                rejected=code in ORDER_ENDING_CODES,
            )
            if counted:
                self._event("order_reject", f"{code}: {msg}", "warning", order_ref=ref)
        except Exception:
            log.exception("order error %s for %s not queued for storage", code, ref)
        if (
            ref
            and is_protective_ref(ref)
            and code in ORDER_ENDING_CODES
            and self.on_protective_reject is not None
        ):
            try:
                self.on_protective_reject(ref, code, msg)
            except Exception:
                log.exception("protective reject handler failed for %s", ref)

    def on_connectivity_lost(self) -> None:
        """1100: no orders until restored; every quote held now is stale from here on."""
        self.connected_to_ib = False
        self._mark_data_stale()

    def on_connectivity_restored(self, code: int) -> None:
        """1101/1102: resubscribe every stream, reconcile (fills delivered after the outage
        are recorded once by execId), then prove that data flows again before new orders."""
        self.connected_to_ib = True
        self._mark_data_stale()
        self._spawn(self._after_restore(code), f"broker-restore-{code}")

    async def _after_restore(self, code: int) -> None:
        try:
            # 1101: the data was lost; 1102 says it was kept, but a stream is believed only
            # once it ticks again, and a fresh subscription ticks at once
            await self._resubscribe()
        except Exception as exc:  # what is not subscribed again is named by the proof
            log.error("resubscribe after connectivity restore: %s", exc)
        self._start_proof()
        try:
            await self.reconcile()
        except Exception as exc:
            log.error("reconcile after connectivity restore: %s", exc)

    def _on_pacing_error(self, policy: ErrorPolicy, req_id: int, key: str, msg: str) -> None:
        """The error listener for the pacing rows (after the table's own action)."""
        if policy.code in (MAX_TICKERS, HISTORICAL_PACING):
            self.on_pacing_refusal(req_id, policy.code, msg, key)

    def on_pacing_refusal(self, req_id: int, code: int, msg: str, key: str) -> None:
        """101 (market-data lines full) or 162 (historical pacing): nothing trips; the
        request waits and is retried with backoff (`key`: the contract, '' if unknown)."""
        if code == HISTORICAL_PACING:
            if "pacing violation" in msg.lower():
                self._history_refusals += 1  # the request in flight sees it and retries
            return
        now = self.monotonic()
        if key and key in self._tickers:
            self._unsubscribe(key)  # ib_insync's side of the refused line
            self._ended.discard(key)  # not over for this cycle: asked again after the backoff
        elif key:
            self._lines.drop(key)
        self._lines.lower_cap()  # the account's lines are shared: use no more than held now
        wait = self._line_backoff.next()
        self._lines_blocked_until = max(self._lines_blocked_until, now + wait)
        log.warning(
            "broker %s: market-data line refused (101) for %s; %d lines held, new ones wait "
            "%.1fs and the least recently used is given up for them",
            self.source,
            key or f"request {req_id}",
            len(self._lines),
            wait,
        )

    # --- data proof after a reconnect --------------------------------------------------------
    def _mark_data_stale(self) -> None:
        """Quotes held now are stale; no new orders until a proof after the restore ends."""
        self._data_epoch = self.monotonic()
        self._proving = True

    def _fresh(self, ticker: Ticker) -> bool:
        """The ticker updated after the last reconnect or restore."""
        return self._updated.get(id(ticker), float("-inf")) > self._data_epoch

    def data_pause_reason(self) -> str | None:
        """Why new orders must wait for market data (None: they need not)."""
        if self._proving:
            return (
                "market data not yet proven after a reconnect: no new orders until every "
                "subscribed contract has a fresh tick"
            )
        return None

    def stale_contracts(self) -> list[str]:
        """Subscribed contracts that had data but no tick since the last reconnect
        (untradable until they tick). One that never had data is not waited for: it has
        no quote to trade on anyway."""
        return sorted(
            k for k, t in self._tickers.items() if id(t) in self._updated and not self._fresh(t)
        )

    def _start_proof(self) -> None:
        if self._proof_task is not None and not self._proof_task.done():
            self._proof_task.cancel()
        self._proving = True
        self._proof_task = asyncio.get_event_loop().create_task(
            self._prove_data(), name=f"broker-data-proof-{self.client_id}"
        )

    async def _prove_data(self) -> None:
        try:
            await self._await_fresh_data()
        except asyncio.CancelledError:
            raise  # a newer reconnect's proof took over (or the broker closes)
        else:
            self._proving = False

    async def _await_fresh_data(self) -> None:
        """Wait for a fresh tick of every subscribed contract, up to fresh_data_timeout_s;
        a contract still silent then is named in a critical safety event and stays
        untradable (its quotes are pre-outage) until it ticks."""
        bound = self.cfg.fresh_data_timeout_s
        deadline = self.monotonic() + bound
        while True:
            stale = self.stale_contracts()
            if not stale:
                if self._tickers:
                    self._event(
                        "market_data_proven",
                        f"fresh data for all {len(self._tickers)} subscriptions after the "
                        "reconnect",
                        "info",
                    )
                break
            if self.monotonic() >= deadline:
                self._event(
                    "market_data_missing",
                    f"no fresh tick within {bound:g}s after the reconnect for "
                    f"{', '.join(stale)}: untradable until their data comes back",
                    "critical",
                )
                break
            await asyncio.sleep(0.02)  # ticks arrive on this loop; the bound is the clock's

    def _event(self, kind: str, reason: str, severity: str, order_ref: str | None = None) -> None:
        self.store.post(log_safety_event, self.source, kind, reason, severity, order_ref=order_ref)

    def snapshot_account(self, source: str) -> None:
        """Queue a record of the account values and positions (equity over time)."""
        self._snapshot_account(source)

    def _snapshot_account(self, source: str) -> None:
        try:
            self.store.post(
                log_account_snapshot,
                f"{self.source}:{source}",
                self.account,
                self.account_values(),
                [
                    {
                        "con_id": p.con_id,
                        "contract": p.contract,
                        "quantity": p.quantity,
                        "avg_cost": p.avg_cost,
                    }
                    for p in self.positions()
                ],
            )
        except Exception as exc:
            log.error("account snapshot not stored: %s", exc)

    # --- account ---------------------------------------------------------------------------------
    def account_values(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for v in self.ib.accountValues(self.account):
            if v.currency in ("USD", "BASE", "") and (val := _num(v.value)) is not None:
                out[v.tag] = val
        if self._pnl is not None and (daily := _num(self._pnl.dailyPnL)) is not None:
            out["DailyPnL"] = daily
        return out

    def positions(self) -> list[PositionView]:
        return [_position_view(p) for p in self.ib.positions(self.account) if _qty(p.position)]

    async def fresh_positions(self, timeout_s: float | None = None) -> list[PositionView]:
        """Ask the broker now (a reqPositions round trip), not ib_insync's cached view: the
        answer reflects every fill and manual trade the gateway has booked. Raises
        BrokerNotReady without a session and TimeoutError when the gateway does not answer."""
        if not self.ready:
            raise BrokerNotReady(f"broker {self.source} not ready: positions not verifiable")
        timeout = self.cfg.request_timeout_s if timeout_s is None else timeout_s
        fresh = await asyncio.wait_for(self._first(self.ib.reqPositionsAsync), timeout)
        latest: dict[int, Any] = {}
        for p in fresh:  # one answer per contract; a later line for the same conId wins
            if not self.account or p.account == self.account:
                latest[p.contract.conId] = p
        return [_position_view(p) for p in latest.values() if _qty(p.position)]

    async def holdings(self, quote_wait_s: float = 2.0) -> dict[str, Holding]:
        """Positions marked to the latest quotes (options with model delta), by contract key."""
        out: dict[str, Holding] = {}
        for p in self.ib.positions(self.account):
            quantity = _qty(p.position)
            if not quantity:
                continue
            c = p.contract
            mult = float(c.multiplier or 1)
            snap = await self.quote(c, max_wait_s=quote_wait_s) if c.conId else None
            mark = snap.bid * 0.5 + snap.ask * 0.5 if snap else _qty(p.avgCost) / mult
            delta: float | None = 1.0
            und = 0.0
            if c.secType == "OPT":
                delta = snap.delta if snap else None  # unknown: the gate refuses, not 0
                und = (snap.underlying_price or 0.0) if snap else 0.0
            held = contract_of(c)
            out[held.key] = Holding(
                contract=held,
                quantity=quantity,
                mark=mark,
                multiplier=mult,
                delta=delta,
                underlying_price=und,
            )
        return out

    # --- market data -----------------------------------------------------------------------------
    async def qualify(self, contract: Contract) -> IBContract | None:
        """The broker's contract for ours, resolved to exactly one conId (None: unknown or
        ambiguous, not cached); cached by key."""
        key = contract.key
        if key in self._qualified:
            return self._qualified[key]
        found = await asyncio.wait_for(
            self.ib.qualifyContractsAsync(to_ib(self.lib, contract)), self.cfg.request_timeout_s
        )
        qualified = _qualified_one(list(found))
        if qualified is None:  # unknown or ambiguous: not cached, asked again next time
            return None
        self._qualified[key] = qualified
        return qualified

    def _on_tickers(self, tickers: set[Ticker]) -> None:
        now = self.monotonic()
        for t in tickers:
            self._updated[id(t)] = now
        raised = self.conditions.refusing_all()
        if raised is not None and raised.code == 10197:
            # live data on a subscription requested after the 10197: the competing session
            # is over (ticks sent before the error share its read, hence the sequence check)
            for t in tickers:
                key = _key(t.contract) if t.contract is not None else ""
                if (
                    self._seq_of.get(key, 0) > self._refuse_all_seq
                    and t.marketDataType == LIVE
                    and _num(t.bid)
                    and _num(t.ask)
                ):
                    self.conditions.clear(10197)
                    self._event(
                        "broker_refuse_all_cleared",
                        f"live market data flows again ({key}): 10197 cleared, orders allowed",
                        "warning",
                    )
                    break

    def begin_cycle(self, cycle_id: int) -> None:
        """A new cycle: per-contract refusals of the last one end, and every subscription an
        error ended is requested again on its next use."""
        self.conditions.begin_cycle(cycle_id)
        self._renew |= self._ended
        self._ended.clear()

    def market_data_refusals(self) -> dict[str, str]:
        """Contract keys untradable this cycle (354, 10089, 10168) -> why."""
        return {k: f"{c.reason} ({c.code})" for k, c in self.conditions.refusals().items() if k}

    def refusing_all(self) -> str | None:
        """Why every new order is refused now (10197 ...), or None."""
        c = self.conditions.refusing_all()
        return None if c is None else f"{c.reason} ({c.code})"

    async def subscribe(self, contract: IBContract) -> Ticker:
        """Stream quotes for `contract` (one subscription per contract key). A contract without
        a conId is qualified first (ib_async cannot key a ticker without one); BrokerError
        when it cannot be. Beyond `max_market_data_lines` (or fewer, after a 101 said the
        account's lines are full) the least recently used subscription of a contract not held
        is given up first; when every line streams a held position this waits up to
        request_timeout_s, then raises MarketDataLinesFull. Never sends the request that
        would exceed the lines."""
        key = _key(contract)
        ticker = self._tickers.get(key)
        if ticker is not None and key in self._renew and self.conditions.refusal(key) is None:
            self._renew.discard(key)  # a new cycle: ask again (IB may answer with data now)
            with contextlib.suppress(Exception):
                self.ib.cancelMktData(ticker.contract or contract)
            # ib_insync reuses the Ticker with the ended subscription's last prices: none of
            # them is a quote until the new subscription has sent one
            self._updated.pop(id(ticker), None)
            self._tickers.pop(key, None)  # requested again below (its line is kept)
            ticker = None
        if ticker is None and not contract.conId:
            found = await self.qualify(contract_of(contract))
            if found is None:
                raise BrokerError(f"{key}: not a single known contract at the broker: no quotes")
            contract = found
        if ticker is None:
            async with self._lines_lock:
                ticker = self._tickers.get(key)
                if ticker is None:
                    await self._free_line(key)
                    generic = "106" if contract.secType == "STK" else ""
                    self._sub_seq += 1
                    self._seq_of[key] = self._sub_seq
                    ticker = self.ib.reqMktData(contract, generic, False, False)
                    self._tickers[key] = ticker
        self._lines.touch(key, self.monotonic())
        return ticker

    async def _free_line(self, key: str) -> None:
        deadline = self.monotonic() + self.cfg.request_timeout_s
        while True:
            now = self.monotonic()
            blocked = self._lines_blocked_until - now
            if blocked <= 0 and not self._lines.full:
                return
            if blocked <= 0:
                held = {_key(p.contract) for p in self.ib.positions(self.account) if p.position}
                victim = self._lines.victim(held | {key})
                if victim is not None:
                    self._unsubscribe(victim)
                    log.info("market data for %s given up for %s (lines full)", victim, key)
                    continue
            if now >= deadline:
                why = (
                    "the broker refused a line (101) and new ones still wait"
                    if blocked > 0
                    else "each streams a held position"
                )
                raise MarketDataLinesFull(
                    f"no market-data line for {key}: {len(self._lines)} lines in use "
                    f"(max {self._lines.cap}); {why}"
                )
            await self.sleep(min(max(blocked, 0.05), deadline - now))

    def _unsubscribe(self, key: str) -> None:
        ticker = self._tickers.pop(key, None)
        self._lines.drop(key)
        if ticker is not None and ticker.contract is not None:
            with contextlib.suppress(Exception):
                self.ib.cancelMktData(ticker.contract)

    async def _resubscribe(self) -> None:
        old = list(self._tickers.values())
        self._tickers.clear()
        self._lines = LineBook(self.cfg.max_market_data_lines)  # a new session: every line
        self._lines_blocked_until = 0.0
        self._line_backoff.reset()
        self._ended.clear()
        self._renew.clear()
        for t in old:
            if t.contract is None:
                continue
            with contextlib.suppress(Exception):
                self.ib.cancelMktData(t.contract)
            await self.subscribe(t.contract)

    async def quote(
        self, contract: IBContract, max_wait_s: float | None = None
    ) -> QuoteSnapshot | None:
        """Return the latest streaming quote, waiting up to max_wait_s for a first one (and,
        after a reconnect, for a fresh one: a quote from before is marked `pre_outage`)."""
        key = _key(contract)
        deadline = self.monotonic() + (
            self.cfg.request_timeout_s if max_wait_s is None else max_wait_s
        )
        try:
            ticker = await self.subscribe(contract)
            while True:
                if key in self._ended or self.conditions.refusal(key) is not None:
                    return None  # IB ended the subscription (354, 10197 ...): no quote flows
                priced = (
                    bool(_price(ticker.bid) and _price(ticker.ask)) and id(ticker) in self._updated
                )
                if priced and self._fresh(ticker):
                    break
                if self.monotonic() >= deadline:
                    if priced:
                        break  # only a stale one: returned marked, the gate refuses it
                    return None
                await asyncio.sleep(0.01)
                if self._tickers.get(key) is not ticker:  # its line was refused (101): retry
                    ticker = await self.subscribe(contract)
        except MarketDataLinesFull as exc:
            log.warning("no quote: %s", exc)
            return None
        if self.monotonic() >= self._lines_blocked_until:
            self._line_backoff.reset()
        greeks = ticker.modelGreeks
        iv = (
            _num(ticker.impliedVolatility)
            if contract.secType == "STK"
            else (_num(greeks.impliedVol) if greeks else None)
        )
        return QuoteSnapshot(
            contract=contract_of(contract),
            bid=float(ticker.bid),
            ask=float(ticker.ask),
            last=_num(ticker.last) or 0.0,
            close=_num(ticker.close) or 0.0,
            received=self._updated.get(id(ticker)),
            multiplier=float(contract.multiplier or 1),
            iv=iv,
            delta=_num(greeks.delta) if greeks else None,
            gamma=_num(greeks.gamma) if greeks else None,
            vega=_num(greeks.vega) if greeks else None,
            theta=_num(greeks.theta) if greeks else None,
            underlying_price=_num(greeks.undPrice) if greeks else None,
            pre_outage=not self._fresh(ticker),
            market_data_type=int(ticker.marketDataType or LIVE),
            suspect=self.conditions.suspect("market"),
        )

    async def iv_rank(self, contract: IBContract) -> tuple[float, float] | None:
        """Return (current IV, IV rank 0..1) from a year of daily implied-vol bars."""
        bars = await self.historical_bars(
            contract, "", "1 Y", "1 day", "OPTION_IMPLIED_VOLATILITY", True
        )
        closes = [b.close for b in bars if _num(b.close)]
        if len(closes) < 20:
            return None
        lo, hi, cur = min(closes), max(closes), closes[-1]
        return cur, (cur - lo) / (hi - lo) if hi > lo else 0.0

    async def daily_closes(self, contract: IBContract, duration: str = "1 M") -> list[float]:
        """Return daily closing trade prices over `duration` (IB duration string), oldest first."""
        bars = await self.historical_bars(contract, "", duration, "1 day", "TRADES", True)
        return [float(b.close) for b in bars if _num(b.close) is not None]

    async def historical_bars(
        self,
        contract: IBContract,
        end: str,
        duration: str,
        bar_size: str,
        what: str,
        use_rth: bool,
    ) -> list[Any]:
        """Historical bars, paced under IB's rules (queue, not error): one request at a time;
        an identical request within 15 s is answered from the last answer; beyond 60 in 10
        minutes (or 5 for one contract in 2 s) it waits; a 162 pacing refusal that comes
        anyway is retried with backoff (TimeoutError after HISTORY_ATTEMPTS refusals)."""
        ident: Hashable = contract.conId or _key(contract)
        key = (ident, what, end, duration, bar_size, use_rth)
        burst = (ident, what)
        async with self._history_lock:
            cached = self._history.cached(key)
            if cached is not None:
                return list(cached)
            backoff = Backoff(1.0, 60.0, self.rng)
            for _ in range(HISTORY_ATTEMPTS):
                wait = self._history.wait_s(key, burst)
                if wait > 0:
                    why = self._history.why_wait(key, burst)
                    log.info(
                        "historical request for %s waits %.1fs (pacing: %s)",
                        _key(contract),
                        wait,
                        why,
                    )
                    await self._history_sleep(wait, f"{_key(contract)}: {why}")
                refused = self._history_refusals
                self._history.record_sent(key, burst)
                self._save_history()  # before the answer: a crash still counts it
                request = self.ib.reqHistoricalDataAsync(
                    contract, end, duration, bar_size, what, use_rth
                )
                try:
                    bars = await asyncio.wait_for(request, self.cfg.request_timeout_s)
                finally:  # counted from its end: the gateway saw it at the latest then
                    self._history.record_over(key)
                    self._save_history()
                if self._history_refusals == refused:
                    self._history.record_answer(key, list(bars))
                    return list(bars)
                delay = backoff.next()
                log.warning(
                    "historical request for %s refused for pacing (162); retry in %.1fs",
                    _key(contract),
                    delay,
                )
                await self._history_sleep(delay, f"{_key(contract)}: refused for pacing (162)")
        raise TimeoutError(
            f"historical data for {_key(contract)} refused for pacing {HISTORY_ATTEMPTS} times"
        )

    def _save_history(self) -> None:
        if self._history_log is not None:
            self._history_log.save(self._history.sent())

    async def _history_sleep(self, seconds: float, why: str) -> None:
        self._history_wait = (self.monotonic() + seconds, seconds, why)
        await self.sleep(seconds)
        self._history_wait = None

    def history_pacing(self) -> str | None:
        """The historical-data pacing wait under way, in words ('waiting 14.4 s for
        historical-data pacing (AAPL: 60 of 60 requests used in the last 10 min, next slot in
        312 s)'), or None. Still said after the wait was cancelled, until its end."""
        wait = self._history_wait
        if wait is None or self.monotonic() >= wait[0]:
            return None
        return f"waiting {wait[1]:.1f} s for historical-data pacing ({wait[2]})"

    def history_budget(self) -> str:
        """IB's 10-minute historical budget as this session counts it (earlier processes'
        requests included): '58 of 60 requests used in the last 10 min[, next slot in N s]'."""
        return self._history.budget()

    async def option_chain(self, contract: IBContract) -> tuple[list[str], list[float]]:
        chains = await asyncio.wait_for(
            self.ib.reqSecDefOptParamsAsync(contract.symbol, "", contract.secType, contract.conId),
            self.cfg.request_timeout_s,
        )
        smart = [c for c in chains if c.exchange == "SMART"] or chains
        if not smart:
            return [], []
        return sorted(smart[0].expirations), sorted(smart[0].strikes)

    async def market_open(self, contract: IBContract, now: dt.datetime) -> bool:
        details = await asyncio.wait_for(
            self.ib.reqContractDetailsAsync(contract), self.cfg.request_timeout_s
        )
        if not details:
            return False
        return is_open(details[0].liquidHours, details[0].timeZoneId, now)

    # --- orders ----------------------------------------------------------------------------------
    def submit(self, order_ref: str, request: OrderRequest) -> int:
        """Send one order (the execution gate's Submitter). Raises BrokerNotReady."""
        if not self.ready:
            raise BrokerNotReady(
                f"broker {self.source} not ready (connected="
                f"{self.ib.isConnected()}, reconciled={self.reconciled}, "
                f"ib_link={self.connected_to_ib})"
            )
        contract = self._qualified.get(request.key) or to_ib(self.lib, request.contract)
        trade = self._first(
            functools.partial(self.ib.placeOrder, contract, self._order_for(request, order_ref))
        )
        log.info(
            "sent %s %s %g %s ref=%s (order id %s)",
            request.order_type,
            request.action,
            request.quantity,
            request.key,
            order_ref,
            trade.order.orderId,
        )
        return int(trade.order.orderId)

    def submit_bracket(
        self,
        parent_ref: str,
        parent: OrderRequest,
        children: Sequence[tuple[str, OrderRequest]],
    ) -> dict[str, int]:
        """Send a parent and its protective children (the gate's BracketSubmitter): the
        parent and every child but the last with transmit=False, so nothing is live at IB
        until the last child arrives; the children in one OCA group (ocaType 1), GTC, with
        parentId. Return the order id by orderRef. Raises BrokerNotReady."""
        if not self.ready:
            raise BrokerNotReady(f"broker {self.source} not ready: bracket not sent")
        contract = self._qualified.get(parent.key) or to_ib(self.lib, parent.contract)
        head = self._order_for(parent, parent_ref)
        head.transmit = not children
        head.orderId = self.ib.client.getReqId()
        orders: list[tuple[str, Any]] = [(parent_ref, head)]
        for i, (ref, child) in enumerate(children):
            order = self._order_for(child, ref)
            order.parentId = head.orderId
            order.ocaGroup = "oca-" + parent_ref
            order.ocaType = 1
            order.transmit = i == len(children) - 1
            orders.append((ref, order))
        ids: dict[str, int] = {}
        for ref, order in orders:  # no await in between: the bracket leaves in one go, in order
            trade = self._first(functools.partial(self.ib.placeOrder, contract, order))
            ids[ref] = int(trade.order.orderId)
        log.info(
            "sent bracket %s %g %s ref=%s with %s",
            parent.action,
            parent.quantity,
            parent.key,
            parent_ref,
            ", ".join(
                f"{c.order_type} {c.aux_price or c.limit_price:g} ({r})" for r, c in children
            ),
        )
        return ids

    def submit_cover(
        self, group_ref: str, orders: Sequence[tuple[str, OrderRequest]]
    ) -> dict[str, int]:
        """Send standalone protective orders for a position (skills.protective's
        CoverSubmitter): a stop and optionally a take-profit, GTC, in one OCA group (ocaType
        1: one filling cancels the other), each transmitted. Return the order id by orderRef.
        Raises BrokerNotReady."""
        if not self.ready:
            raise BrokerNotReady(f"broker {self.source} not ready: protective orders not sent")
        ids: dict[str, int] = {}
        for ref, request in orders:  # no await in between: the group leaves in one go
            contract = self._qualified.get(request.key) or to_ib(self.lib, request.contract)
            order = self._order_for(request, ref)
            if len(orders) > 1:
                order.ocaGroup = "oca-" + group_ref
                order.ocaType = 1
            trade = self._first(functools.partial(self.ib.placeOrder, contract, order))
            ids[ref] = int(trade.order.orderId)
        log.info(
            "sent protective %s",
            ", ".join(
                f"{r.order_type} {r.action} {r.quantity:g} {r.key} at "
                f"{r.aux_price or r.limit_price:g} ({ref})"
                for ref, r in orders
            ),
        )
        return ids

    def _order_for(self, request: OrderRequest, order_ref: str) -> Any:
        order: Any
        if request.order_type == "LMT":
            if request.limit_price is None:
                raise ValueError(f"limit order {order_ref} has no limit price: not sent")
            order = self.lib.LimitOrder(request.action, request.quantity, request.limit_price)
        elif request.order_type == "STP":
            if request.aux_price is None:
                raise ValueError(f"stop order {order_ref} has no stop price: not sent")
            order = self.lib.StopOrder(request.action, request.quantity, request.aux_price)
        else:
            order = self.lib.MarketOrder(request.action, request.quantity)
        order.orderRef = order_ref
        order.tif = request.tif
        order.account = self.account
        return order

    def cancel(self, order_ref: str) -> bool:
        """Cancel this session's own working order with this orderRef (False: none)."""
        for trade in self._working():
            if trade.order.orderRef == order_ref and trade.order.clientId == self.client_id:
                self._remember_cancel([order_ref])
                self._first(functools.partial(self.ib.cancelOrder, trade.order))
                return True
        return False

    def _working(self) -> list[Trade]:
        """This session's trades not in a final broker state (DONE_BROKER_STATES: the same set
        with both libraries; ib_async's openTrades() also leaves out Inactive)."""
        return [t for t in self.ib.trades() if t.orderStatus.status not in DONE_BROKER_STATES]

    def _first(self, send: Callable[[], T]) -> T:
        """Send an order, a cancel, or a read the safety checks need (open orders, positions,
        executions) ahead of every other request the client's own throttle (about 45
        messages a second) still holds. The library queues in FIFO order; the messages this
        call adds move to the end of the block of such urgent messages at the front of that
        queue, so urgent messages keep their own order (a cancel is never overtaken by a
        later order). Returns what `send` returned."""
        queue = self.ib.client._msgQ
        before = len(queue)
        out = send()
        added = [queue.pop() for _ in range(max(0, len(queue) - before))][::-1]
        ahead = 0  # the urgent block at the front (messages sent through here, not yet out)
        while ahead < len(queue) and id(queue[ahead]) in self._urgent:
            ahead += 1
        for i, msg in enumerate(added):
            queue.insert(ahead + i, msg)
        self._urgent = {id(queue[i]) for i in range(ahead + len(added))}
        return out

    def _remember_cancel(self, refs: Iterable[str]) -> None:
        """Remember our own cancels (their 202s are not rejects); bounded."""
        self._cancel_requested.update(refs)
        if len(self._cancel_requested) > 10_000:
            self._cancel_requested = set(list(self._cancel_requested)[-5_000:])

    def cancel_own_orders(self, *, keep_protective: bool = True) -> list[str]:
        """Cancel every working order this session placed; return their orderRefs. Protective
        children stay (they guard a position between sessions; a working parent's cancel
        takes its held children with it at IB) unless `keep_protective` is False."""
        refs = []
        for trade in self._working():
            if keep_protective and is_protective_ref(trade.order.orderRef):
                continue
            if trade.order.clientId == self.client_id and trade.order.orderRef:
                refs.append(trade.order.orderRef)
                self._remember_cancel([trade.order.orderRef])
                self._first(functools.partial(self.ib.cancelOrder, trade.order))
        return refs

    def global_cancel(self) -> None:
        """Cancel every open order at the broker, whoever placed it (reqGlobalCancel)."""
        if not self.ib.isConnected():
            raise BrokerNotReady("not connected: global cancel not sent")
        self._remember_cancel(t.order.orderRef for t in self._working())
        self._first(self.ib.reqGlobalCancel)
        log.warning("broker %s: global cancel sent", self.source)

    def order_status(self, order_ref: str) -> str | None:
        for trade in self.ib.trades():
            if trade.order.orderRef == order_ref:
                return str(trade.orderStatus.status)
        return None

    def owns_working(self, order_ref: str) -> bool:
        """True when this session placed a still-working order with this orderRef."""
        return any(
            t.order.orderRef == order_ref and t.order.clientId == self.client_id
            for t in self._working()
        )

    def order_filled(self, order_ref: str) -> float:
        """How much of this session's order with this orderRef has filled (0: none or unknown)."""
        for trade in self.ib.trades():
            if trade.order.orderRef == order_ref:
                return float(trade.orderStatus.filled or 0.0)
        return 0.0
