import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from runtime.config import ConfigError, Secrets, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def _paper() -> dict[str, Any]:
    return tomllib.loads((ROOT / "config" / "paper.toml").read_text())


@pytest.mark.parametrize("name", ["paper.toml", "demo.toml"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(ROOT / "config" / name)
    assert cfg.mode == "paper"
    assert cfg.broker.watchdog_client_id == 999
    assert "NVDA" in cfg.risk.allowed_symbols


def test_config_is_frozen():
    cfg = parse_config(_paper())
    with pytest.raises(Exception, match="frozen"):
        cfg.risk.max_order_quantity = 1e9  # type: ignore[misc]  # the write the test expects refused


def test_mode_has_no_default():
    data = _paper()
    del data["mode"]
    with pytest.raises(ConfigError, match=r"mode: required key is missing"):
        parse_config(data)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["risk"].update(max_order_quantitty=5),
            r"risk\.max_order_quantitty: unknown key",
        ),
        (lambda d: d.update(mode="yolo"), r"mode: Input should be 'paper' or 'live'"),
        (
            lambda d: d["risk"].update(max_order_quantity=0),
            r"risk\.max_order_quantity: .*greater than 0",
        ),
        (
            lambda d: d["risk"].update(max_order_quantity=2.5),
            r"max_order_quantity: must be a whole number of shares or contracts \(got 2\.5\)$",
        ),
        (
            lambda d: d["risk"].update(max_order_quantity=float("inf")),
            r"risk\.max_order_quantity: must be a whole number of shares or contracts \(got inf\)",
        ),
        # the other counting keys of [risk] refuse fractions with the same plain reason
        *(
            (
                lambda d, key=key: d["risk"].update({key: 2.5}),
                rf"risk\.{key}: must be a whole number \(got 2\.5\)$",
            )
            for key in (
                "max_open_positions",
                "max_orders_per_second",
                "max_orders_per_minute",
                "max_orders_per_day",
                "max_executions_per_window",
                "max_consecutive_rejects",
            )
        ),
        (
            lambda d: d["risk"].update(max_open_positions=3.0),
            r"risk\.max_open_positions: must be an integer, written without a decimal point",
        ),
        (
            lambda d: d["broker"].update(port="4002"),
            r"broker\.port: Input should be a valid integer",
        ),
        (
            lambda d: d["watchdog"].update(spawn="yes"),
            r"watchdog\.spawn: Input should be a valid boolean",
        ),
        (
            lambda d: d["risk"].update(price_collar_pct=0.9),
            r"risk\.price_collar_pct: .*less than or equal to 0\.5",
        ),
        (
            lambda d: d["broker"].update(watchdog_client_id=1),
            r"(?m)^  broker\.client_id, broker\.watchdog_client_id: client_id and "
            r"watchdog_client_id must differ",
        ),
        (lambda d: d["loop"].update(max_cycle_s=120.0), r"max_cycle_s must not exceed"),
        (lambda d: d["broker"].update(port=4001), r"live ports"),
        (lambda d: d["risk"].update(allowed_symbols=["nvda"]), r"upper-case tickers"),
        (lambda d: d.update(extra_section={}), r"extra_section: unknown key"),
        (
            lambda d: d["commander"].update(stop_loss_pct=-0.1),
            r"commander\.stop_loss_pct: .*greater than or equal to 0",
        ),
        (
            lambda d: d["commander"].update(take_profit_pct=0.1),
            r"(?m)^  commander\.take_profit_pct, commander\.stop_loss_pct: take_profit_pct needs "
            r"stop_loss_pct",
        ),
        (
            lambda d: d["commander"].update(stop_loss_pct=0.6),
            # a check across keys is labelled with the keys it involves, not "(top level)"
            r"(?m)^  commander\.stop_loss_pct, risk\.protective_collar_pct: "
            r"commander\.stop_loss_pct = 0\.6 exceeds risk\.protective_collar_pct = 0\.5",
        ),
    ],
)
def test_bad_values_are_refused_naming_the_key_and_reason(mutate, message):
    data = _paper()
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_every_error_is_reported_at_once():
    data = _paper()
    data["risk"]["max_daily_loss"] = -1
    data["swarm"]["max_concurrency"] = 0
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert "risk.max_daily_loss" in str(info.value)
    assert "swarm.max_concurrency" in str(info.value)


def test_secrets_come_from_the_environment_and_never_show():
    s = Secrets({"ANTHROPIC_API_KEY": "sk-ant-secret-123456", "LIVE_TRADING_ARMED": "1"})
    assert s.anthropic_api_key == "sk-ant-secret-123456"
    assert "sk-ant" not in repr(s)
    assert s.live_armed is True
    assert Secrets({}).live_armed is False


def test_cli_check_exits_non_zero_naming_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        (ROOT / "config" / "paper.toml")
        .read_text()
        .replace("max_order_quantity = 100", "max_order_quantity = -5")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "runtime", "check", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "risk.max_order_quantity" in proc.stderr
    assert "greater than 0" in proc.stderr


@pytest.mark.parametrize("value", ["2.5", "inf"])
def test_cli_check_refuses_a_fractional_max_order_quantity_naming_the_key(tmp_path, value):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        (ROOT / "config" / "paper.toml")
        .read_text()
        .replace("max_order_quantity = 100", f"max_order_quantity = {value}")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "runtime", "check", "--offline", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert (
        f"risk.max_order_quantity: must be a whole number of shares or contracts (got {value})"
        in proc.stderr
    )


def test_cli_check_accepts_a_good_config():
    proc = subprocess.run(
        [sys.executable, "-m", "runtime", "check", "--offline", "--config", "config/paper.toml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "config/paper.toml: ok" in proc.stdout


def test_cli_check_missing_file_and_bad_toml(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "runtime", "check", "--config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2 and "cannot read config" in proc.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("mode = \n")
    proc = subprocess.run(
        [sys.executable, "-m", "runtime", "check", "--config", str(broken)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr


def test_protective_orders_are_off_by_default_and_in_the_shipped_configs():
    for cfg in (
        parse_config({"mode": "paper"}),
        *(load_config(ROOT / "config" / n) for n in ("paper.toml", "demo.toml")),
    ):
        assert (cfg.commander.stop_loss_pct, cfg.commander.take_profit_pct) == (0.0, 0.0)


def test_minimal_config_needs_only_mode_and_takes_documented_defaults():
    cfg = parse_config({"mode": "paper"})
    assert (cfg.broker.port, cfg.broker.watchdog_client_id, cfg.data.dir) == (
        4002,
        999,
        "data_lake/var",
    )
    assert cfg.risk.allowed_symbols == (
        "NVDA",
        "AMD",
        "TSLA",
        "AAPL",
        "MSFT",
        "SPY",
        "JPM",
        "BAC",
        "GS",
    )
    with pytest.raises(ConfigError, match="allowed_symbols must list at least one symbol"):
        parse_config({"mode": "paper", "risk": {"allowed_symbols": []}})


def _with_library(name: str) -> dict[str, Any]:
    data = _paper()
    data["broker"]["client_library"] = name
    return data


def test_client_library_must_be_one_the_adapter_knows():
    with pytest.raises(
        ConfigError, match=r"broker\.client_library: Input should be '', 'ib_insync' or 'ib_async'"
    ):
        parse_config(_with_library("ibapi"))


def test_client_library_named_but_not_installed_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ib_async", None)  # Python's own "not importable" mark
    with pytest.raises(ConfigError) as info:
        parse_config(_with_library("ib_async"))
    assert "broker.client_library: ib_async is not installed" in str(info.value)
    assert "set it to 'ib_insync' which is installed" in str(info.value)
    assert parse_config(_with_library("ib_insync")).broker.library == "ib_insync"


def test_client_library_defaults_to_ib_insync_then_ib_async(monkeypatch):
    assert parse_config(_paper()).broker.library == "ib_insync"
    monkeypatch.setitem(sys.modules, "ib_insync", None)
    assert parse_config(_paper()).broker.library == "ib_async"
    monkeypatch.setitem(sys.modules, "ib_async", None)
    with pytest.raises(
        ConfigError, match=r"broker\.client_library: neither ib_insync nor ib_async is installed"
    ):
        parse_config(_paper())
