"""One frozen, typed configuration, loaded once from TOML and passed down as sub-configs.

Unknown keys, wrong types and out-of-range values are refused with the key and the reason.
`mode` has no default. Secrets never live here: they come from the environment (`Secrets`).

Paths: `load_config` resolves the relative paths of a file (`data.dir`, `swarm.instances_dir`,
`swarm.templates_dir`, and the `data.dir` default) against the directory of that file, so the
CLI behaves the same from any working directory. Left out, `instances_dir`/`templates_dir`
are the instances and templates shipped with the package (`PACKAGE_ROOT`, which is the
repository root in a checkout and site-packages once installed).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from data_lake import RefuseToStart
from skills.risk import RiskConfig

from .restart_window import parse_hh_mm, zone_named

__all__ = [
    "CLIENT_LIBRARIES",
    "DEFAULT_INSTANCES_DIR",
    "DEFAULT_TEMPLATES_DIR",
    "PACKAGE_ROOT",
    "BrokerConfig",
    "CommanderConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "LoopConfig",
    "MetricsConfig",
    "NotifyConfig",
    "RiskConfig",
    "Secrets",
    "SwarmConfig",
    "WatchdogConfig",
    "client_library_installed",
    "default_client_library",
    "example_config",
    "load_config",
    "parse_config",
]

# The directory holding the top-level packages and their data (swarm_intelligence/, prompts/):
# the repository root in a checkout, site-packages once installed with `pip install .`.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INSTANCES_DIR = PACKAGE_ROOT / "swarm_intelligence" / "active_instances"
DEFAULT_TEMPLATES_DIR = PACKAGE_ROOT / "swarm_intelligence" / "templates"
# Keys holding paths: relative values in a file resolve against the file's directory.
_PATH_KEYS = (
    ("data", "dir"),
    ("data", "lock_dir"),
    ("swarm", "instances_dir"),
    ("swarm", "templates_dir"),
)


class ConfigError(RefuseToStart, ValueError):
    """The configuration is invalid; the message names every bad key and why."""


class CrossCheck(ValueError):
    """A check across keys failed: `keys` are the keys involved (relative to the section
    whose validator raised it), so the error names them instead of the section alone (or
    "(top level)")."""

    def __init__(self, message: str, *keys: str) -> None:
        super().__init__(message)
        self.keys = keys


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


CLIENT_LIBRARIES = ("ib_insync", "ib_async")  # the IB API client libraries the adapter runs on


def client_library_installed(name: str) -> bool:
    """Whether the IB client library `name` can be imported here (without importing it)."""
    if name in sys.modules:
        return sys.modules[name] is not None  # None: marked unavailable
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def default_client_library() -> str | None:
    """ib_insync if it is installed, else ib_async if it is; None when neither is."""
    return next((n for n in CLIENT_LIBRARIES if client_library_installed(n)), None)


class BrokerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(4002, ge=1, le=65535)
    client_id: int = Field(1, ge=0)
    watchdog_client_id: int = Field(999, ge=0)
    account: str = Field("", description="'' = the single account the gateway manages")
    connect_timeout_s: float = Field(10.0, gt=0, le=120)
    request_timeout_s: float = Field(10.0, gt=0, le=120)
    reconnect_initial_s: float = Field(1.0, gt=0, le=60)
    reconnect_max_s: float = Field(30.0, gt=0, le=600)
    # the gateway's daily restart (IBC's restart time): no new orders from restart_guard_min
    # before to restart_guard_min after it; "" = no restart window
    daily_restart: str = ""
    daily_restart_tz: str = "America/New_York"
    restart_guard_min: int = Field(5, ge=0, le=120)
    # after any reconnect, every subscribed contract must tick within this before new orders
    fresh_data_timeout_s: float = Field(30.0, gt=0, le=600)
    # simultaneous streaming subscriptions of this session (IB's account default is 100)
    max_market_data_lines: int = Field(100, ge=1, le=10_000)

    @field_validator("daily_restart")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        if value:
            parse_hh_mm(value)  # raises ValueError with the reason
        return value

    @field_validator("daily_restart_tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone_named(value)
        return value

    # "live": real-time quotes only (unsubscribed contracts get 354 and are untradable for the
    # cycle); "delayed": delayed quotes where not subscribed (reqMarketDataType 3), for the
    # swarm's view only: the gate never prices an order on a delayed or frozen quote
    market_data: Literal["live", "delayed"] = "live"
    client_library: Literal["", "ib_insync", "ib_async"] = Field(
        "", description="'' = ib_insync if installed, else ib_async"
    )

    @field_validator("client_library")
    @classmethod
    def _installed(cls, name: str) -> str:
        if name and not client_library_installed(name):
            others = [n for n in CLIENT_LIBRARIES if n != name and client_library_installed(n)]
            raise ValueError(
                f"{name} is not installed (pip install {name}"
                + (f", or set it to {others[0]!r} which is installed" if others else "")
                + ")"
            )
        return name

    @property
    def library(self) -> str:
        """The client library to load: the configured one, else the installed default."""
        name = self.client_library or default_client_library()
        if name is None:
            raise ConfigError("broker.client_library: neither ib_insync nor ib_async is installed")
        return name

    @model_validator(mode="after")
    def _distinct_ids(self) -> BrokerConfig:
        if self.client_id == self.watchdog_client_id:
            raise CrossCheck(
                "client_id and watchdog_client_id must differ", "client_id", "watchdog_client_id"
            )
        if self.reconnect_initial_s > self.reconnect_max_s:
            raise CrossCheck(
                "reconnect_initial_s must not exceed reconnect_max_s",
                "reconnect_initial_s",
                "reconnect_max_s",
            )
        return self


class DataConfig(_Section):
    dir: str = "data_lake/var"
    busy_timeout_ms: int = Field(500, ge=10, le=60_000)
    write_timeout_s: float = Field(1.0, gt=0, le=60)
    lock_dir: str = Field("", description="'' = the system temp dir (account locks)")


class LoopConfig(_Section):
    cycle_interval_s: float = Field(60.0, gt=0, le=86400)
    max_cycle_s: float = Field(45.0, gt=0, le=3600)
    heartbeat_interval_s: float = Field(1.0, gt=0, le=60)
    stop_timeout_s: float = Field(20.0, gt=0, le=300)
    trade_outside_liquid_hours: bool = False
    cancel_orders_on_stop: bool = True


class WatchdogConfig(_Section):
    spawn: bool = True
    heartbeat_timeout_s: float = Field(10.0, gt=0, le=3600)
    poll_interval_s: float = Field(1.0, gt=0, le=60)
    kill_frozen_main: bool = True
    close_wait_s: float = Field(5.0, gt=0, le=300)
    close_collar_pct: float = Field(0.02, gt=0, le=0.5)
    max_close_attempts: int = Field(5, ge=1, le=100)
    # the watchdog's own account limits (daily loss, gross exposure, open positions) sit this
    # fraction above the gate's, so a book at the gate's limit is not liquidated by a 1% move
    limit_margin_pct: float = Field(0.10, ge=0, le=1.0)


_Price = Annotated[float, Field(gt=0, le=1000)]


class SwarmConfig(_Section):
    provider: Literal["anthropic", "offline"] = "offline"
    instances_dir: str = DEFAULT_INSTANCES_DIR.as_posix()
    templates_dir: str = DEFAULT_TEMPLATES_DIR.as_posix()
    max_concurrency: int = Field(8, ge=1, le=256)
    call_timeout_s: float = Field(30.0, gt=0, le=600)
    deadline_s: float = Field(40.0, gt=0, le=3600)
    max_retries: int = Field(3, ge=0, le=10)
    max_tokens_per_cycle: int = Field(200_000, ge=0)
    max_usd_per_cycle: float = Field(2.0, ge=0)
    max_usd_per_day: float = Field(50.0, ge=0)
    # Send the first instance of each model alone, the rest when it has answered, so that
    # they read the cycle's shared prompt from the cache instead of each writing it: about
    # 60% cheaper for 50 instances (python -m benchmarks.llm_cost), one call's latency slower.
    cache_warmup: bool = True
    # USD per million tokens, (input, output), by model: overrides or extends the built-in
    # table (skills/swarm_providers.py). Cache writes are billed at 1.25x input (5-minute TTL),
    # cache reads at 0.1x; an unknown model is priced as the dearest.
    prices: dict[str, tuple[_Price, _Price]] = Field(default_factory=dict)


class CommanderConfig(_Section):
    mode: Literal["rules", "llm"] = "rules"
    min_confidence: float = Field(0.6, ge=0, le=1)
    min_consensus: int = Field(1, ge=1)
    kelly_fraction: float = Field(0.25, gt=0, le=1)
    kelly_cap: float = Field(0.05, ge=0, le=1)
    model: str = "claude-sonnet-4-6"
    max_turns: int = Field(8, ge=1, le=50)
    # Protective orders held at IB for every position-opening order (README "Protective
    # orders"): a GTC stop this fraction of the entry price on the losing side, and optionally
    # a take-profit limit on the winning side, both children of the entry in one OCA group.
    # 0 (the default): none. An instance may set its own in its JSON parameters (same keys;
    # the tightest of the instances behind a decision wins).
    stop_loss_pct: float = Field(0.0, ge=0, lt=1)
    take_profit_pct: float = Field(0.0, ge=0, le=10)
    # an entry of ours that fills in part leaves its filled part without a stop (the stop waits
    # for the whole fill): this long after such a fill, between cycles, the cover keeper cuts
    # the remainder and covers what filled (README "Protective orders")
    partial_fill_grace_s: float = Field(5.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _protection(self) -> CommanderConfig:
        if self.take_profit_pct > 0 and self.stop_loss_pct == 0:
            raise CrossCheck(
                "take_profit_pct needs stop_loss_pct: a position never has a take-profit "
                "without its stop",
                "take_profit_pct",
                "stop_loss_pct",
            )
        return self


_Severity = Literal["info", "warning", "critical"]


class NotifyConfig(_Section):
    """Alerts through Apprise. The notification URLs are secrets: they come from the
    environment (IB_SWARM_NOTIFY_URLS), never from this file."""

    enabled: bool = True
    min_severity: _Severity = "critical"  # safety events at or above this are sent ...
    # ... and these kinds whatever their severity (breaker transitions, start/stop, reject
    # streak, daily-loss approach and budget are always considered)
    kinds: tuple[str, ...] = (
        "flatten_failed",
        "flatten_blocked",
        "watchdog_unreachable",
        "watchdog_exit",
        "watchdog_absent",
        "main_kill_failed",
        "global_cancel_failed",
    )
    exclude_kinds: tuple[str, ...] = ()
    rate_limit_s: float = Field(300.0, ge=0, le=86400)  # same kind within this: one message
    poll_interval_s: float = Field(1.0, gt=0, le=60)  # how often the database is tailed
    send_timeout_s: float = Field(10.0, gt=0, le=120)  # per message (connect and read)
    queue_size: int = Field(100, ge=1, le=10_000)  # messages waiting; beyond, oldest dropped
    reject_streak: int = Field(2, ge=1)  # broker rejects since the last fill that alert
    daily_loss_warn_pct: float = Field(0.8, gt=0, le=1)  # of risk.max_daily_loss
    budget_warn_pct: float = Field(1.0, gt=0, le=1)  # of swarm.max_usd_per_day
    title_prefix: str = "ib-swarm"


class MetricsConfig(_Section):
    """The optional Prometheus endpoint (read-only: it reads the database at scrape time)."""

    enabled: bool = False
    host: str = "127.0.0.1"  # loopback by default: put a proxy in front to expose it
    port: int = Field(9464, ge=0, le=65535)  # 0 = any free port (tests)


class Config(_Section):
    mode: Literal["paper", "live"]
    broker: BrokerConfig = BrokerConfig()
    data: DataConfig = DataConfig()
    loop: LoopConfig = LoopConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    swarm: SwarmConfig = SwarmConfig()
    commander: CommanderConfig = CommanderConfig()
    risk: RiskConfig = RiskConfig()
    notify: NotifyConfig = NotifyConfig()
    metrics: MetricsConfig = MetricsConfig()

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.loop.max_cycle_s > self.loop.cycle_interval_s:
            raise CrossCheck(
                "loop.max_cycle_s must not exceed loop.cycle_interval_s",
                "loop.max_cycle_s",
                "loop.cycle_interval_s",
            )
        if self.swarm.deadline_s > self.loop.max_cycle_s:
            raise CrossCheck(
                "swarm.deadline_s must not exceed loop.max_cycle_s (a swarm never outlives "
                "its cycle)",
                "swarm.deadline_s",
                "loop.max_cycle_s",
            )
        if self.data.busy_timeout_ms >= self.watchdog.heartbeat_timeout_s * 1000:
            raise CrossCheck(
                "data.busy_timeout_ms must be below watchdog.heartbeat_timeout_s (a locked "
                "database must never look like a frozen loop)",
                "data.busy_timeout_ms",
                "watchdog.heartbeat_timeout_s",
            )
        if self.data.write_timeout_s >= self.loop.max_cycle_s:
            raise CrossCheck(
                "data.write_timeout_s must be below loop.max_cycle_s",
                "data.write_timeout_s",
                "loop.max_cycle_s",
            )
        collar = self.risk.protective_collar_pct
        for key in ("stop_loss_pct", "take_profit_pct"):
            pct = getattr(self.commander, key)
            if pct > collar:
                raise CrossCheck(
                    f"commander.{key} = {pct:g} exceeds risk.protective_collar_pct = {collar:g} "
                    "(the gate would refuse every bracket)",
                    f"commander.{key}",
                    "risk.protective_collar_pct",
                )
        if not self.broker.client_library and default_client_library() is None:
            raise CrossCheck(
                "neither ib_insync nor ib_async is installed (pip install -r requirements.txt)",
                "broker.client_library",
            )
        if self.mode == "paper" and self.broker.port in (4001, 7496):
            raise CrossCheck(
                "broker.port 4001/7496 are IB's live ports; paper mode uses 4002/7497",
                "broker.port",
                "mode",
            )
        return self

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir)


class Secrets:
    """Secrets from the environment. The repr never shows a value."""

    __slots__ = ("_anthropic_key", "anthropic_base_url", "live_armed")

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._anthropic_key = env.get("ANTHROPIC_API_KEY") or None
        self.anthropic_base_url = env.get("ANTHROPIC_BASE_URL") or None
        self.live_armed = env.get("LIVE_TRADING_ARMED") == "1"

    @property
    def anthropic_api_key(self) -> str | None:
        return self._anthropic_key

    def __repr__(self) -> str:
        key = "set" if self._anthropic_key else "unset"
        return f"Secrets(anthropic_api_key=<{key}>, live_armed={self.live_armed})"


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, CrossCheck) and cause.keys:  # the keys it involves, each in full
            key = ", ".join(".".join([*(str(p) for p in err["loc"]), k]) for k in cause.keys)
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "int_type" and isinstance(got, float):
            # an integer key (a count of orders, positions, rejects ...) given a fraction
            msg = (
                "must be an integer, written without a decimal point"
                if got.is_integer()
                else "must be a whole number"
            )
        elif err["type"] == "missing":
            msg = "required key is missing (it has no default)"
        shown = (
            ""
            if err["type"] in ("missing", "extra_forbidden") or isinstance(got, dict)
            else f" (got {got!r})"
        )
        lines.append(f"  {key}: {msg}{shown}")
    return "\n".join(lines)


def parse_config(data: Mapping[str, Any], source: str = "config") -> Config:
    """Validate a parsed TOML document; raise ConfigError naming each bad key."""
    try:
        return Config.model_validate(_tuples(dict(data)))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _resolve_paths(cfg: Config, base: Path) -> Config:
    """Return `cfg` with its relative path keys made absolute against `base`."""
    sections: dict[str, dict[str, str]] = {}
    for section, key in _PATH_KEYS:
        value = getattr(getattr(cfg, section), key)
        if value and not Path(value).is_absolute():  # "" keeps its meaning (a default)
            sections.setdefault(section, {})[key] = (base / value).resolve().as_posix()
    return cfg.model_copy(
        update={name: getattr(cfg, name).model_copy(update=u) for name, u in sections.items()}
    )


def example_config(name: str) -> Path:
    """A config shipped with the project (`paper.toml`, `demo.toml`): `config/` in a checkout,
    the package data `runtime/examples/` once installed."""
    checkout = PACKAGE_ROOT / "config" / name
    return checkout if checkout.is_file() else Path(__file__).resolve().parent / "examples" / name


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file. Relative paths in it (and the `data.dir`
    default) resolve against the file's directory, not the working directory."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return _resolve_paths(parse_config(data, str(p)), p.absolute().parent)
