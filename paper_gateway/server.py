"""The gateway: listening sockets, sessions, market clock, fault injection, thread wrapper."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import messages as msg
from .account import Account, Position
from .engine import Engine, Execution, Order, OrderSpec
from .instruments import Catalogue, Contract
from .market import MarketModel
from .realities import FARMS, DelayedPrices, HistoricalPacer, RestartSchedule
from .session import Session

__all__ = ["Gateway", "GatewayConfig", "GatewayCore"]

log = logging.getLogger("paper_gateway")


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class GatewayConfig:
    """Settings of one paper gateway. Port 0 picks a free port."""

    host: str = "127.0.0.1"
    port: int = 0
    admin_port: int = 0
    seed: int = 7
    account: str = "DU1234567"
    cash: float = 1_000_000.0
    master_client_id: int | None = None
    pacing_per_s: int = 50  # messages per second per client before error 100; 0 = off
    tick_interval_s: float = 0.5  # market model step period; 0 = prices move only by set_price
    partial_fill_above: float = 0.0  # orders above this size fill in clips of this size; 0 = off
    account_push_interval_s: float = 1.0
    clock: Callable[[], dt.datetime] = field(default=_utc_now)
    max_market_data_lines: int = 100  # simultaneous streaming subscriptions of the account
    # IB's historical-data pacing (error 162); the command line plays it by default, in-process
    # gateways only when asked until the daemon paces its own requests (issue 11, daemon side)
    historical_pacing: bool = False
    daily_restart: str | None = None  # "HH:MM" in restart_tz: the daily auto-restart
    restart_tz: str = "US/Eastern"
    restart_down_s: float = 60.0  # how long a scheduled restart (or restart_now) is down
    reauth_weekday: str | None = None  # e.g. "sun": that day's restart waits for admin login

    def __post_init__(self) -> None:
        if self.max_market_data_lines < 1:
            raise ValueError("max market data lines must be at least 1")
        if not math.isfinite(self.restart_down_s) or self.restart_down_s < 0:
            raise ValueError(f"restart down time must be >= 0 s, got {self.restart_down_s!r}")
        self.restart_schedule()  # validates daily_restart, restart_tz and reauth_weekday
        if not self.account or not self.account.isalnum():
            raise ValueError(f"account must be alphanumeric, got {self.account!r}")
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the paper gateway listens on loopback only, not {self.host!r}")

    def restart_schedule(self) -> RestartSchedule | None:
        if self.daily_restart is None:
            if self.reauth_weekday is not None:
                raise ValueError("a re-authentication weekday needs a daily restart time")
            RestartSchedule("00:00", self.restart_tz)  # validates the zone
            return None
        return RestartSchedule(self.daily_restart, self.restart_tz, self.reauth_weekday)


@dataclass
class Down:
    """The gateway is down (scheduled restart, restart_now): back at `until` on the gateway's
    clock, or only after an admin `login` when `login_required`."""

    since: dt.datetime
    until: dt.datetime
    login_required: bool
    reason: str


class GatewayCore:
    """Everything that runs on the gateway's event loop."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.clock_offset = dt.timedelta(0)
        self.catalogue = Catalogue(self.now().date())
        self.market = MarketModel(self.catalogue, config.seed)
        self.account = Account(config.account, config.cash)
        self.engine = Engine(self.market, self.account, self, self.now, config.partial_fill_above)
        self.sessions: set[Session] = set()
        self.clients: dict[int, Session] = {}
        self.port = config.port
        self.admin_port = config.admin_port
        self._server: asyncio.base_events.Server | None = None
        self._admin: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._session_tasks: set[asyncio.Task[object]] = set()
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._frozen_until = 0.0
        self._account_dirty = True
        self._last_market_version = -1
        self.refusing_until = 0.0
        self.farms = dict.fromkeys(FARMS, True)
        self.farm_waiting: dict[str, list[tuple[Session, list[str]]]] = {f: [] for f in FARMS}
        self.entitlements: dict[str, str] = {}  # symbol -> "delayed" | "none" (default live)
        self.competing: set[int] = set()  # client ids with a competing live session
        self.pacer = HistoricalPacer()
        self.delayed = DelayedPrices()
        self._record_prices()
        self.outage = False  # between an injected 1100 and 1101/1102
        self._withheld: list[Callable[[], object]] = []
        self.withheld_execs: set[str] = set()
        self.schedule = config.restart_schedule()
        self.next_restart = None if self.schedule is None else self.schedule.next_after(self.now())
        self.down: Down | None = None
        self._relisten: asyncio.Task[None] | None = None

    def now(self) -> dt.datetime:
        """The gateway's clock: the configured clock plus what admin `advance_clock` added."""
        return self.config.clock() + self.clock_offset

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        from .admin import AdminServer

        await self._listen()
        admin = AdminServer(self)
        self._admin = await asyncio.start_server(
            admin.handle, self.config.host, self.config.admin_port
        )
        self.admin_port = self._admin.sockets[0].getsockname()[1]
        self._spawn(self._clock_loop(), "paper-gateway-clock")
        log.info(
            "paper gateway listening on %s:%s (admin %s), account %s, seed %s",
            self.config.host,
            self.port,
            self.admin_port,
            self.config.account,
            self.config.seed,
        )

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, self.config.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for server in (self._server, self._admin):
            if server is not None:
                server.close()
        self._server = None
        self._admin = None
        for s in list(self.sessions):
            s.close()  # their reader sees EOF and the session task ends by itself
        if self._session_tasks:
            await asyncio.wait(list(self._session_tasks), timeout=2.0)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)

    def _spawn(self, coro: object, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(self, reader, writer)
        self.sessions.add(session)
        task = asyncio.current_task()
        if task is not None:
            self._session_tasks.add(task)
        try:
            await session.run()
        finally:
            if task is not None:
                self._session_tasks.discard(task)

    def claim_client_id(self, client_id: int, session: Session) -> bool:
        if client_id in self.clients and not self.clients[client_id].closed:
            return False
        self.clients[client_id] = session
        return True

    def session_closed(self, session: Session) -> None:
        self.sessions.discard(session)
        if session.client_id is not None and self.clients.get(session.client_id) is session:
            del self.clients[session.client_id]
            log.info("client %s disconnected", session.client_id)

    def next_valid_id(self) -> int:
        return self.engine.max_order_id + 1

    # --- faults ----------------------------------------------------------------------------
    @property
    def frozen(self) -> bool:
        return not self._thawed.is_set()

    async def wait_thawed(self) -> None:
        await self._thawed.wait()

    def freeze(self, seconds: float) -> None:
        self._frozen_until = max(self._frozen_until, time.monotonic() + seconds)
        self._thawed.clear()
        log.warning("gateway frozen for %.1fs (admin)", seconds)
        self._spawn(self._thaw_later(), "paper-gateway-thaw")

    async def _thaw_later(self) -> None:
        while (left := self._frozen_until - time.monotonic()) > 0:
            await asyncio.sleep(left)
        self._thawed.set()
        for s in list(self.sessions):
            s.flush_backlog()
        log.warning("gateway thawed")

    def restart(self, down_s: float) -> None:
        """Drop every socket, refuse connections for down_s, keep state (DAY orders lapse)."""
        log.warning(
            "gateway restart: dropping %d sockets, down for %.1fs", len(self.sessions), down_s
        )
        self._drop_everything()
        self.refusing_until = time.monotonic() + down_s
        self._spawn(self._relisten_later(down_s), "paper-gateway-relisten")

    async def _relisten_later(self, down_s: float) -> None:
        await asyncio.sleep(down_s)
        if self.down is not None:
            return  # a scheduled restart or restart_now took over
        await self._listen()
        log.warning("gateway back up on port %s", self.port)

    def _drop_everything(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for s in list(self.sessions):
            s.close()
        self.engine.cancel_day_orders()

    # --- daily restart (on the gateway's clock) ----------------------------------------------
    def advance_clock(self, seconds: float) -> None:
        self.clock_offset += dt.timedelta(seconds=seconds)
        self.check_schedule()
        self.market_moved()  # delayed quotes catch up with the clock

    def go_down(self, down_s: float, login_required: bool, reason: str) -> None:
        """Restart as IB Gateway does: drop every socket, refuse connections until `down_s`
        has passed on the gateway's clock (and a login when required); state is kept."""
        now = self.now()
        log.warning(
            "gateway %s: dropping %d sockets, down for %.1fs%s",
            reason,
            len(self.sessions),
            down_s,
            ", then waiting for login" if login_required else "",
        )
        self._drop_everything()
        if self.down is not None:
            login_required = login_required or self.down.login_required
        self.down = Down(now, now + dt.timedelta(seconds=down_s), login_required, reason)

    def login(self) -> bool:
        """Admin `login`: the re-authentication a down gateway waits for."""
        if self.down is None:
            return False
        self.down.login_required = False
        self.check_schedule()
        return True

    def check_schedule(self) -> None:
        """Start a due scheduled restart; bring the gateway back when its down time is over."""
        now = self.now()
        due = self.next_restart
        if self.schedule is not None and due is not None and now >= due:
            self.next_restart = self.schedule.next_after(now)
            self.go_down(
                self.config.restart_down_s,
                self.schedule.needs_login(due),
                f"daily restart {due.isoformat()}",
            )
        down = self.down
        if down is not None and not down.login_required and now >= down.until:
            self.down = None
            if self._relisten is None or self._relisten.done():
                self._relisten = self._spawn(self._back_up(), "paper-gateway-back-up")

    async def _back_up(self) -> None:
        if self._server is None:
            await self._listen()
        log.warning("gateway back up on port %s", self.port)

    async def settle(self) -> None:
        """Wait until a gateway coming back up listens again (admin replies after it)."""
        task = self._relisten
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=5.0)

    # --- connectivity between the gateway and IB (1100 / 1101 / 1102) ------------------------
    def broadcast_error(self, code: int, message: str) -> int:
        for s in list(self.clients.values()):
            s.send(msg.error(s.sv, -1, code, message))
        if code == 1100:
            self.outage = True
            log.warning("connectivity with IB lost (1100): order events are withheld")
        elif code in (1101, 1102) and self.outage:
            self.outage = False
            if code == 1101:  # restored, market data lost: every subscription must be renewed
                for s in list(self.sessions):
                    s.subs.market.clear()
            self.withheld_execs.clear()
            held, self._withheld = self._withheld, []
            log.warning("connectivity restored (%s): %d withheld events follow", code, len(held))
            for event in held:
                event()
            self.market_moved()
        elif code == 1101:
            for s in list(self.sessions):
                s.subs.market.clear()
        return len(self.clients)

    def defer(self, event: Callable[[], object]) -> bool:
        """During an outage, keep `event` until connectivity is restored; False otherwise."""
        if not self.outage:
            return False
        self._withheld.append(event)
        return True

    # --- farms -------------------------------------------------------------------------------
    def farm_messages(self) -> list[tuple[int, str]]:
        """The farm status every client gets on connect (OK, or broken while a farm is)."""
        out = []
        for name, farm in FARMS.items():
            ok = self.farms[name]
            out.append((farm.ok_code, farm.ok_text) if ok else (farm.broken_code, farm.broken_text))
        return out

    def set_farm(self, name: str, ok: bool) -> int:
        self.farms[name] = ok
        farm = FARMS[name]
        code, text = (farm.ok_code, farm.ok_text) if ok else (farm.broken_code, farm.broken_text)
        sent = self.broadcast_error(code, text)
        if ok and name == "market":
            self.market_moved()
        if ok:
            waiting, self.farm_waiting[name] = self.farm_waiting[name], []
            for session, fields in waiting:
                session.dispatch(int(fields[0]), fields)
        return sent

    def lines_in_use(self) -> int:
        return sum(len(s.subs.market) for s in self.sessions if not s.closed)

    def reset(self) -> None:
        """Forget orders, executions and positions; restore cash and prices (admin `reset`)."""
        self.catalogue = Catalogue(self.now().date())
        self.market = MarketModel(self.catalogue, self.config.seed)
        self.account = Account(self.config.account, self.config.cash)
        max_id = self.engine.max_order_id
        self.engine = Engine(
            self.market, self.account, self, self.now, self.config.partial_fill_above
        )
        self.engine.max_order_id = max_id  # order ids keep increasing across a reset
        self._account_dirty = True
        self.pacer.clear()
        self.delayed.clear()
        self._record_prices()
        self._withheld.clear()  # events of the forgotten orders
        self.withheld_execs.clear()

    # --- market clock ------------------------------------------------------------------------
    async def _clock_loop(self) -> None:
        interval = self.config.tick_interval_s
        push = self.config.account_push_interval_s
        last_push = time.monotonic()
        while True:
            await asyncio.sleep(interval if interval > 0 else push)
            self.check_schedule()
            await self.wait_thawed()
            if interval > 0:
                self.market.step(interval)
                self.market_moved()
            if time.monotonic() - last_push >= push:
                last_push = time.monotonic()
                self.push_accounts()

    def _record_prices(self) -> None:
        self.delayed.record(self.now(), {s: self.market.price(s) for s in self.market.symbols()})

    def market_moved(self) -> None:
        """Re-match working orders and stream quotes after any price change."""
        self._record_prices()
        self.engine.on_market()
        if self.farms["market"]:
            for s in list(self.clients.values()):
                s.push_market()
        self._account_dirty = True

    def push_accounts(self) -> None:
        if not self._account_dirty:
            return
        self._account_dirty = False
        for s in list(self.clients.values()):
            s.push_account_all()

    def account_values(self) -> dict[str, float]:
        return self.account.values(self.engine.mark)

    def flat_position(self, contract: Contract) -> Position:
        return Position(contract, 0.0, 0.0)

    # --- engine sink -------------------------------------------------------------------------
    def _order_audience(self, client_id: int) -> list[Session]:
        out = []
        owner = self.clients.get(client_id)
        if owner is not None:
            out.append(owner)
        master = self.config.master_client_id
        if master is not None and master != client_id and master in self.clients:
            out.append(self.clients[master])
        return out

    def order_changed(self, order: Order) -> None:
        if self.defer(lambda: self.order_changed(order)):
            return
        for s in self._order_audience(order.client_id):
            s.send(msg.open_order(s.sv, order, self.config.account))
            s.send(msg.order_status(s.sv, order))

    def executed(self, execution: Execution) -> None:
        if self.defer(lambda: self.executed(execution)):
            self.withheld_execs.add(execution.exec_id)
            log.info("fill %s withheld until connectivity is restored", execution.exec_id)
            return
        log.info(
            "fill: client %s order %s %s %s %g @ %.4f ref=%r",
            execution.order.client_id,
            execution.order.order_id,
            execution.side,
            execution.contract.key,
            execution.shares,
            execution.price,
            execution.order.spec.order_ref,
        )
        for s in self._order_audience(execution.order.client_id):
            s.send(msg.exec_details(s.sv, -1, execution, self.config.account))
            s.send(msg.commission_report(s.sv, execution))

    def order_error(self, order_id: int, client_id: int, code: int, message: str) -> None:
        if self.defer(lambda: self.order_error(order_id, client_id, code, message)):
            return
        log.info("order error: client %s order %s: %s %s", client_id, order_id, code, message)
        for s in self._order_audience(client_id):
            s.send(msg.error(s.sv, order_id, code, message))

    def positions_changed(self, contracts: list[Contract]) -> None:
        if self.defer(lambda: self.positions_changed(contracts)):
            return
        account = self.config.account
        for s in list(self.clients.values()):
            if s.subs.positions:
                for c in contracts:
                    p = self.account.positions.get(c.con_id) or self.flat_position(c)
                    s.send(msg.position(s.sv, account, p))
            if s.subs.account_updates:
                s.push_account(contracts=contracts)
        self._account_dirty = True

    def what_if(self, session: Session, order_id: int, spec: OrderSpec) -> None:
        if session.client_id is None:
            raise RuntimeError("what-if order before startApi: the session has no client id")
        init = self.engine.initial_margin(spec)
        order = Order(order_id, session.client_id, 0, spec, status="PreSubmitted")
        equity = self.account_values()["EquityWithLoanValue"]
        fee = self.engine.commission_estimate(spec)
        session.send(
            msg.open_order(
                session.sv, order, self.config.account, what_if=(init, init / 2, equity, fee)
            )
        )


class Gateway:
    """Run a GatewayCore on its own event loop in a background thread (for tests and tools)."""

    def __init__(self, config: GatewayConfig | None = None) -> None:
        self.config = config or GatewayConfig()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._core: GatewayCore | None = None

    @property
    def port(self) -> int:
        if self._core is None:
            raise RuntimeError("gateway not started")
        return self._core.port

    @property
    def admin_port(self) -> int:
        if self._core is None:
            raise RuntimeError("gateway not started")
        return self._core.admin_port

    def start(self, timeout: float = 10.0) -> Gateway:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._core = GatewayCore(self.config)
                loop.run_until_complete(self._core.start())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._core.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="paper-gateway", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("paper gateway did not start in time")
        if errors:
            raise errors[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
