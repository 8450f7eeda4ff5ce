"""Small edges of the CLI an outside tester found, each in-process and quick: bad usage is
refused naming the flag (exit 2), symbols in any case, the real port of `inspect --port 0`,
the replay's option contracts in full, the demo summary's words, and a refused `run` that
leaves no data directory it created."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import data, write_config

from data_lake import Store, insert_intent, log_trade
from runtime.cli import main
from runtime.datasette_view import free_port
from runtime.demo import _protective, event_counts
from runtime.instance_lock import account_lock_path, acquire
from runtime.replay import CycleReplay, Difference
from runtime.replay_summary import summarise
from runtime.replay_view import render_replay, render_summary


def _usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI with bad usage: argparse exits 2; return what it said on stderr."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    return capsys.readouterr().err


def test_demo_refuses_fewer_than_one_cycle(capsys):
    assert "--cycles: invalid _positive_int value" not in (
        err := _usage_error(capsys, "demo", "--cycles", "0")
    )
    assert "argument --cycles: 0 is not at least 1" in err
    assert "argument --cycles: 'x' is not a whole number" in _usage_error(
        capsys, "demo", "--cycles", "x"
    )


def test_inspect_port_zero_is_a_real_free_port_and_a_bad_port_is_refused(capsys):
    port = free_port("127.0.0.1")
    assert 0 < port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # free: what Datasette is given (and the line says)
    err = _usage_error(capsys, "inspect", "--config", "x.toml", "--port", "70000")
    assert "argument --port: 70000 is not a port (0 to 65535)" in err


def _seeded(tmp_path: Path) -> str:
    cfg = write_config(tmp_path, 1)
    store = Store.open(data(tmp_path))
    store.call(
        insert_intent,
        {
            "order_ref": "cmd-c1-a",
            "source": "commander",
            "symbol": "MSFT",
            "sec_type": "STK",
            "action": "BUY",
            "quantity": 5,
            "order_type": "LMT",
            "limit_price": 100.0,
            "tif": "DAY",
        },
        timeout=5,
    )
    store.post(
        log_trade,
        {
            "exec_id": "E1",
            "order_ref": "cmd-c1-a",
            "symbol": "MSFT",
            "sec_type": "STK",
            "side": "BOT",
            "shares": 5.0,
            "price": 100.0,
            "exec_time": "2026-11-20T15:00:00",
        },
    )
    assert store.close(10) == 0
    return str(cfg)


def test_symbols_are_case_insensitive_and_orders_filters_refuse_unknown_values(tmp_path, capsys):
    cfg = _seeded(tmp_path)
    assert main(["orders", "--config", cfg, "--symbol", "msft"]) == 0
    assert "cmd-c1-a" in capsys.readouterr().out
    assert main(["trades", "--config", cfg, "--symbol", "msft"]) == 0
    assert "cmd-c1-a" in capsys.readouterr().out
    assert main(["orders", "--config", cfg, "--source", "commander", "--status", "pending"]) == 0
    assert "cmd-c1-a" in capsys.readouterr().out
    err = _usage_error(capsys, "orders", "--config", cfg, "--status", "bogus")
    assert "argument --status: invalid choice: 'bogus'" in err and "'not_sent'" in err
    err = _usage_error(capsys, "orders", "--config", cfg, "--source", "gate")
    assert "argument --source: invalid choice: 'gate'" in err
    helped = _usage_error(capsys, "orders", "--status")  # no value: usage, with the choices
    assert "pending,submitted,filled,cancelled,rejected,not_sent,unresolved" in helped


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--from", "2026-12-06"], "error: --from 2026-12-06 needs --to DATE"),
        (["--to", "2026-12-06"], "error: --to 2026-12-06 needs --from DATE"),
        (["3", "--from", "2026-12-06"], "error: give a CYCLE or --from DATE --to DATE, not both"),
        ([], "error: give a CYCLE, or --from DATE and --to DATE"),
    ],
)
def test_replay_says_what_is_missing_from_its_range(argv, said, capsys):
    assert main(["replay", *argv, "--data-dir", "nowhere"]) == 2
    assert capsys.readouterr().err.startswith(said)


def _option_replay(cycle: int, refused_now: bool) -> CycleReplay:
    req = {
        "action": "SELL",
        "quantity": 1.0,
        "symbol": "NVDA",
        "sec_type": "OPT",
        "expiry": "20270108",
        "strike": 162.5,
        "right": "P",
        "order_type": "LMT",
        "limit_price": 3.2,
    }
    recorded = {"accepted": True, "order_ref": f"cmd-c{cycle}-x"}
    replayed = (
        {"accepted": False, "reasons": ["max_notional: too big"]} if refused_now else recorded
    )
    where = "gate SELL NVDA 20270108 162.5P 1"
    return CycleReplay(
        cycle_id=cycle,
        mode="rules",
        status="ok",
        recorded_config_hash="a" * 64,
        replayed_config_hash="a" * 64,
        config_source="recorded",
        decisions=[
            {
                "recorded": {**req, "accepted": True},
                "replayed": {**req, "accepted": True},
            }
        ],
        gate=[{"request": req, "recorded": recorded, "replayed": replayed}],
        differences=[Difference(where=where, kind="refused", recorded=recorded, replayed=replayed)]
        if refused_now
        else [],
    )


def test_replay_shows_option_contracts_in_full_and_unreplayable_cycles_apart():
    text = render_replay(_option_replay(4, refused_now=True))
    assert " ≠ SELL NVDA 20270108 162.5P LMT 3.2\n" not in text  # the decision is the same
    assert "   SELL NVDA 20270108 162.5P LMT 3.2\n" in text
    assert " ≠ SELL 1 NVDA 20270108 162.5P\n" in text
    assert "…" not in text
    summary = summarise(
        [_option_replay(4, refused_now=True), _option_replay(5, refused_now=False)],
        [{"cycle_id": 6, "missing": ["replay.decide"]}],
    )
    text = render_summary(summary, "2027-01-04", "2027-01-05", "the recorded config")
    every = text.split("every difference:\n")[1].split("\n\n")[0].splitlines()
    assert every == [
        "  cycle 4: gate SELL NVDA 20270108 162.5P 1: refused now, accepted when recorded (refused)"
    ]
    assert text.endswith("\n\ncould not replay:\n  cycle 6: missing replay.decide")


def test_demo_summary_says_what_misleading_event_kinds_mean(tmp_path, capsys):
    events = [{"kind": "stop_cancel", "n": 1}, {"kind": "order_reject", "n": 2}]
    assert event_counts(events) == (
        "stop_cancel 1 (the clean stop cancelled our working orders; not a stop-loss), "
        "order_reject 2"
    )
    _protective({"open_orders": []}, tmp_path, protect=True)
    assert capsys.readouterr().out == "protective orders at the gateway: 0\n"
    _protective({"open_orders": []}, tmp_path, protect=False)
    assert capsys.readouterr().out == ""


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """`run` sets up the root logger for a daemon: put the test's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _fresh(tmp_path: Path, port: int) -> tuple[str, Path]:
    """A config whose data directory (two levels of it) does not exist yet."""
    cfg = write_config(tmp_path, port, dir=(tmp_path / "new" / "data").as_posix())
    return str(cfg), tmp_path / "new"


def test_a_run_refused_for_a_client_id_in_use_leaves_no_data_dir_it_created(
    tmp_path, capsys, cli_logging, gateway, connect: Callable[..., Any]
):
    cfg, new = _fresh(tmp_path, gateway.port)
    connect(1)  # the config's client id, taken
    assert main(["run", "--config", cfg]) == 2
    assert "client id 1 is already in use" in capsys.readouterr().err
    assert not new.exists()
    # a data directory that existed is left as it was, its lock file too
    (new / "data").mkdir(parents=True)
    assert main(["run", "--config", cfg]) == 2
    assert [p.name for p in (new / "data").iterdir()] == ["run.lock"]


def test_a_run_refused_by_the_account_lock_leaves_no_data_dir_it_created(
    tmp_path, capsys, cli_logging
):
    with socket.socket() as closed:  # nothing listens: the config's own account is locked
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    cfg, new = _fresh(tmp_path, port)
    lock_dir = tmp_path / "locks"
    cfg_text = Path(cfg).read_text().replace('lock_dir = ""', f'lock_dir = "{lock_dir}"')
    Path(cfg).write_text(cfg_text)
    held = acquire(account_lock_path(str(lock_dir), "127.0.0.1", port, ""), "the test")
    try:
        assert main(["run", "--config", cfg]) == 2
    finally:
        held.release()
    assert "refused: account (default)" in capsys.readouterr().err
    assert not new.exists() and tmp_path.exists()
    # refused after the locks (live mode not armed): nothing of it stays either
    live = Path(cfg).read_text().replace('mode = "paper"', 'mode = "live"', 1)
    Path(cfg).write_text(live)
    assert main(["run", "--config", cfg]) == 2
    assert "LIVE_TRADING_ARMED" in capsys.readouterr().err
    assert not new.exists()
