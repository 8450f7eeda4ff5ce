"""`replay`: a recorded cycle's Decide and gate run again offline from its snapshot.

One daemon run against the paper gateway records the demo's cycles (its instances, its gate
check that asks for an oversized GS order) and serves every assertion below; one LLM-mode run
against the local Anthropic server records a tool-use transcript.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import json
import shutil
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from anthropic_server import AnthropicStub, Reply
from invariant import assert_books_balance
from procs import cli, data, start, write_config

from data_lake import (
    SNAPSHOT_SCHEMA_VERSION,
    Contract,
    Store,
    cycle_rows,
    insert_cycle,
    load_snapshot,
    open_readonly,
)
from data_lake.db import MIGRATIONS, connect
from data_lake.snapshots import save_snapshot
from paper_gateway import AdminClient, Gateway, GatewayConfig
from runtime.breaker import CircuitBreaker
from runtime.broker import Broker
from runtime.cli import main
from runtime.commander import Commander, Decision
from runtime.config import Secrets, load_config, parse_config
from runtime.demo import GATE_CHECK
from runtime.heartbeat import Clock
from runtime.market_hours import exchange_day
from runtime.replay_record import stored_config
from skills.execution_gate import GateState
from skills.swarm_core import load_instances
from skills.swarm_providers import OfflineProvider

API_KEY = "sk-ant-replay-secret-0123456789"
URL_PASSWORD = "Hunter2replay9"
NOTIFY_URLS = f"json://alice:{URL_PASSWORD}@127.0.0.1:9/hook"


@pytest.fixture
def gateway_config() -> GatewayConfig:
    return GatewayConfig(tick_interval_s=0.25, account_push_interval_s=0.1)


def replay(*args: str) -> tuple[int, Any]:
    """Run `python -m runtime replay ARGS --json` in this process; return (exit, document)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["replay", *args, "--json"])
    return code, json.loads(out.getvalue())


def variant(cfg: Path, name: str, **keys: Any) -> Path:
    """A copy of config `cfg` (same data dir) with `[section] key = value` lines replaced."""
    text = cfg.read_text(encoding="utf-8")
    for key, value in keys.items():
        section, _, name_ = key.partition("__")
        start_at = text.index(f"[{section}]")
        line = next(x for x in text[start_at:].splitlines() if x.startswith(f"{name_} = "))
        text = text[:start_at] + text[start_at:].replace(line, f"{name_} = {value}", 1)
    path = cfg.with_name(name)
    path.write_text(text, encoding="utf-8")
    load_config(path)
    return path


def _record_demo(
    tmp: Path, overrides: dict[str, Any] | None = None, stop_override: float | None = None
) -> dict[str, Any]:
    """Three rules-mode cycles of the demo's instances against an in-process gateway
    (`stop_override`: index_trend's own stop_loss_pct)."""
    gw = Gateway(GatewayConfig(tick_interval_s=0.25, account_push_interval_s=0.1)).start()
    try:
        cfg = write_config(
            tmp,
            gw.port,
            instances=("index_trend.json", "tech_aggressive.json"),
            min_confidence=0.4,  # as the demo: the gate check's signal reaches the gate
            # a URL with credentials in a config value: stored without them
            title_prefix=f"json://bob:{URL_PASSWORD}@127.0.0.1:9/x",
            **(overrides or {}),
        )
        (tmp / "instances" / "demo_gate_check.json").write_text(json.dumps(GATE_CHECK))
        if stop_override is not None:
            path = tmp / "instances" / "index_trend.json"
            inst = json.loads(path.read_text())
            inst["parameters"]["stop_loss_pct"] = stop_override
            path.write_text(json.dumps(inst))
        env = {"ANTHROPIC_API_KEY": API_KEY, "IB_SWARM_NOTIFY_URLS": NOTIFY_URLS}
        proc = start("run", cfg, "--max-cycles", "3", env=env)
        out = proc.communicate(timeout=120)[0].decode()
        assert proc.returncode == 0, out[-3000:]
        with AdminClient(gw.admin_port) as admin:
            assert_books_balance(admin, data(tmp))
    finally:
        gw.stop()
    return {"tmp": tmp, "cfg": cfg, "data": data(tmp)}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo's cycles without protective orders."""
    return _record_demo(tmp_path_factory.mktemp("replay"))


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo's cycles with protection on: every opening order is a bracket (a 2% stop and
    a 3% take-profit; index_trend's own stop 4%)."""
    return _record_demo(
        tmp_path_factory.mktemp("replay-protected"),
        {"stop_loss_pct": 0.02, "take_profit_pct": 0.03},
        stop_override=0.04,
    )


@pytest.fixture(params=["unprotected", "protected"])
def demo_run(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each recording in turn."""
    name = "recorded" if request.param == "unprotected" else "protected"
    run: dict[str, Any] = request.getfixturevalue(name)
    return {**run, "protected": request.param == "protected"}


def test_every_recorded_cycle_replays_identically(demo_run):
    recorded = demo_run
    cycles = [c["id"] for c in cycle_rows(open_readonly(recorded["data"]))]
    assert cycles == [1, 2, 3]
    gate_calls = 0
    for cycle in cycles:
        code, doc = replay(str(cycle), "--config", str(recorded["cfg"]))
        assert code == 0 and doc["identical"], doc["differences"]
        assert doc["recorded_config_hash"] == doc["replayed_config_hash"]
        assert doc["decisions"] and all(
            d["recorded"]["quantity"] == d["replayed"]["quantity"] for d in doc["decisions"]
        )
        gate_calls += len(doc["gate"])
        assert all(g["recorded"] == g["replayed"] for g in doc["gate"])
    assert gate_calls >= 4  # GS every cycle, MSFT and the puts in cycle 1
    brackets = [
        g["bracket"]
        for c in cycles
        for g in replay(str(c), "--config", str(recorded["cfg"]))[1]["gate"]
    ]
    if recorded["protected"]:
        # every order is an opening one: each carries its stop and take-profit, recorded and
        # rebuilt alike
        assert brackets and all(b and b["recorded"] == b["replayed"] for b in brackets)
        assert all(len(b["recorded"]["children"]) == 2 for b in brackets)
    else:
        assert all(b is None or b["recorded"] is None for b in brackets)
    # the recorded config itself (no --config: the data dir names the database)
    code, doc = replay("1", "--data-dir", str(recorded["data"]))
    assert code == 0 and doc["config_source"] == "recorded" and doc["identical"]
    # the real command line, as a person runs it
    proc = cli("replay", "1", "--config", str(recorded["cfg"]))
    assert proc.returncode == 0, proc.stderr
    assert "identical" in proc.stdout and "REFUSED: order value" in proc.stdout


def test_tighter_order_notional_reports_the_refusals_it_would_have_made(recorded):
    tight = variant(recorded["cfg"], "tight.toml", risk__max_order_notional="5000.0")
    code, doc = replay("1", "--config", str(tight))
    assert code == 1 and not doc["identical"]
    assert doc["config_changes"] == [
        {"key": "risk.max_order_notional", "recorded": 25000.0, "replayed": 5000.0}
    ]
    [refused] = [d for d in doc["differences"] if d["kind"] == "refused"]
    assert refused["where"].startswith("gate BUY MSFT 20")
    assert refused["recorded"]["accepted"] is True
    assert "exceeds the maximum 5,000" in refused["replayed"]["reasons"][0]
    assert refused["reason_key"] == "gate: max_notional"
    # the small option orders still pass; the GS refusal now names the new limit
    gate = {g["request"]["symbol"]: g for g in doc["gate"]}
    assert gate["NVDA"]["replayed"]["accepted"] and gate["AMD"]["replayed"]["accepted"]
    assert "maximum 5,000" in gate["GS"]["replayed"]["reasons"][0]
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["replay", "1", "--config", str(tight)]) == 1
    row = next(line for line in out.getvalue().splitlines() if "BUY 20 MSFT" in line)
    assert row.startswith(" ≠") and "accepted cmd-c1-" in row and "REFUSED: order value" in row
    # each difference in words (no Python dict), under its category
    text = out.getvalue().split("difference(s):")[1]
    assert "{" not in text and "[" not in text
    msft = text[text.index("gate BUY MSFT 20") :].splitlines()
    assert msft[0] == "gate BUY MSFT 20: refused now, accepted when recorded"
    assert msft[1].strip() == f"recorded: accepted (order_ref {refused['recorded']['order_ref']})"
    assert msft[2].strip() == (
        f"replayed: refused (order_ref {refused['replayed']['order_ref']}): "
        f"{refused['replayed']['reasons'][0]}"
    )
    assert "gate BUY GS 100: refused either way, reason changed" in text
    # --recorded-config: the same file locates the data, the recording's config decides
    code, doc = replay("1", "--config", str(tight), "--recorded-config")
    assert code == 0 and doc["identical"]


def test_a_smaller_kelly_cap_resizes_and_refuses_at_decide(recorded):
    small = variant(recorded["cfg"], "small.toml", commander__kelly_cap="0.01")
    code, doc = replay("1", "--config", str(small))
    assert code == 1
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in doc["differences"]:
        by_kind.setdefault(d["kind"], []).append(d)
    [gs] = by_kind["resized"]  # the gate check's 100 GS becomes 20 (1% of net liq)
    assert gs["where"].startswith("decision") and "BUY GS" in gs["where"]
    assert (gs["recorded"], gs["replayed"]) == (100.0, 20.0)
    [now_sent] = by_kind["accepted"]  # ... which the gate now lets through
    assert "BUY GS" in now_sent["where"] and now_sent["replayed"]["accepted"] is True
    refused = by_kind["refused"]  # the puts fall below one contract
    assert {d["where"].split(" (")[1].split()[1] for d in refused} == {"NVDA", "AMD"}
    assert all(d["reason_key"].startswith("decide: Kelly size below one unit") for d in refused)
    assert len(by_kind["not_sent"]) == 2


def test_a_smaller_max_order_quantity_is_the_gates_to_enforce_not_the_commanders(recorded):
    """The commander sizes by Kelly and the signal's quantity and never by the gate's limits
    (the demo's GS order shows the gate refusing max_order_notional). A signal above
    max_order_quantity would not have reached Decide at all: the swarm's parse rejects it.
    The replay says so, and shows the gate refusing the size Decide gives the recorded one."""
    small = variant(
        recorded["cfg"], "q10.toml", risk__max_order_quantity="10", commander__kelly_cap="0.01"
    )
    code, doc = replay("1", "--config", str(small))
    assert code == 1
    diffs = {d["where"]: d for d in doc["differences"]}
    signal = diffs["swarm demo_gate_check BUY GS"]
    assert signal["kind"] == "signal" and "the instance abstains" in signal["replayed"]
    assert (diffs["decision 1 (BUY GS)"]["recorded"], diffs["decision 1 (BUY GS)"]["replayed"]) == (
        100.0,
        20.0,
    )
    gs = diffs["gate BUY GS 100"]
    assert gs["kind"] == "reason" and gs["reason_key"] == "gate: max_quantity"
    assert gs["replayed"]["reasons"] == ["quantity 20 exceeds the maximum 10"]


def _assert_every_difference_is_counted(doc: dict[str, Any]) -> None:
    """A range summary's categories partition its differences, and every cycle that differs
    is under at least one of them."""
    cats = doc["by_category"]
    assert sum(c["differences"] for c in cats) == len(doc["differences"])
    assert all(sum(r["n"] for r in c["reasons"]) == c["differences"] for c in cats)
    differing = {d["cycle_id"] for d in doc["differences"]}
    assert set().union(*(c["cycles"] for c in cats)) == differing
    assert len(differing) == doc["different"] == doc["replayed"] - doc["identical"]


def test_range_summary_files_every_difference_under_a_category(recorded):
    tight = variant(recorded["cfg"], "tight2.toml", risk__max_order_notional="5000.0")
    today = dt.datetime.now(dt.UTC).date()
    days = ((today - dt.timedelta(days=1)).isoformat(), (today + dt.timedelta(days=1)).isoformat())
    code, doc = replay("--from", days[0], "--to", days[1], "--config", str(tight))
    assert code == 1
    assert (doc["cycles"], doc["replayed"], doc["different"], doc["cannot_replay"]) == (3, 3, 3, [])
    _assert_every_difference_is_counted(doc)
    cats = {c["category"]: c for c in doc["by_category"]}
    # MSFT, accepted when recorded, is refused in cycle 1; the demo's GS, refused every cycle,
    # is refused again with the new limit in its reason
    assert list(cats) == [
        "refused now, accepted when recorded",
        "refused either way, reason changed",
    ]
    refused, reworded = (
        cats["refused now, accepted when recorded"],
        cats["refused either way, reason changed"],
    )
    assert (refused["differences"], refused["cycles"]) == (1, [1])
    assert (reworded["differences"], reworded["cycles"]) == (3, [1, 2, 3])
    [why] = reworded["reasons"]
    assert (why["reason"], why["n"]) == ("gate: max_notional", 3)
    ex = why["example"]
    assert ex["cycle_id"] == 1 and ex["where"] == "gate BUY GS 100"
    assert "exceeds the maximum 25,000" in ex["recorded"]["reasons"][0]
    assert "exceeds the maximum 5,000" in ex["replayed"]["reasons"][0]
    [msft] = [d for d in doc["differences"] if d["kind"] == "refused"]
    assert (
        msft["cycle_id"] == 1
        and "MSFT" in msft["where"]
        and msft["reason"] == ("gate: max_notional")
    )
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["replay", "--from", days[0], "--to", days[1], "--config", str(tight)]) == 1
    text = out.getvalue()
    assert "4 difference(s) in 3 cycle(s), by category" in text
    assert "  refused either way, reason changed: 3 in cycles 1-3" in text
    assert "recorded: refused (order_ref cmd-c1-" in text and "maximum 25,000" in text
    assert "{" not in text
    assert all(f"cycle {c}: gate BUY GS 100: refused either way" in text for c in (1, 2, 3))
    code, doc = replay("--from", days[0], "--to", days[1], "--config", str(recorded["cfg"]))
    assert code == 0 and doc["identical"] == 3 and doc["by_category"] == doc["differences"] == []
    code, doc = replay("--from", "2001-01-01", "--to", "2001-01-02", "--config", str(tight))
    assert code == 2 and "has no cycle snapshots" in doc["error"]
    # a range that ends before it starts is refused as such
    code, doc = replay("--from", days[1], "--to", days[0], "--config", str(tight))
    assert code == 2 and doc["error"] == f"--from {days[1]} is after --to {days[0]}"
    err = io.StringIO()
    with redirect_stderr(err):
        assert main(["replay", "--from", days[1], "--to", days[0], "--config", str(tight)]) == 2
    assert err.getvalue() == f"error: --from {days[1]} is after --to {days[0]}\n"


def _old_database(directory: Path, doc: dict[str, Any]) -> None:
    """A database at schema version 3 (before replay) holding one old-format snapshot."""
    directory.mkdir()
    conn = connect(directory / "trading.sqlite3")
    for version, step in MIGRATIONS[:3]:  # the last version before replay (4)
        step(conn)
        conn.execute(f"PRAGMA user_version = {version}")
    body = json.dumps(doc, sort_keys=True, indent=1).encode()
    digest = hashlib.sha256(body).hexdigest()
    path = directory / "snapshots" / "20261120" / "cycle-00000001.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(body)
    conn.execute(
        "INSERT INTO snapshots (cycle_id, at, path, sha256, size) VALUES (1, ?, ?, ?, ?)",
        ["2026-11-20T15:00:00+00:00", str(path.relative_to(directory)), digest, len(body)],
    )
    conn.close()


def test_snapshots_without_the_replay_fields_are_refused_naming_what_is_missing(recorded, tmp_path):
    db = open_readonly(recorded["data"])
    doc = load_snapshot(db, recorded["data"], cycle_id=1)
    assert doc["schema_version"] == SNAPSHOT_SCHEMA_VERSION
    old = {
        k: v
        for k, v in doc.items()
        if k not in ("schema_version", "config", "config_hash", "replay")
    }
    _old_database(tmp_path / "old", old)
    code, out = replay("1", "--data-dir", str(tmp_path / "old"))
    assert code == 2
    assert "snapshot schema version 2" in out["missing"][0] and "replay.gate_calls" in out["error"]
    # an old database stays readable (read-only, never migrated by a reader)
    assert open_readonly(tmp_path / "old").conn.execute("PRAGMA user_version").fetchone()[0] == 3
    Store.open(tmp_path / "old").close()  # a daemon upgrades it: the old row stays old
    [row] = open_readonly(tmp_path / "old").query(
        "SELECT schema_version, config_hash FROM snapshots"
    )
    assert row == {"schema_version": None, "config_hash": None}
    assert replay("1", "--data-dir", str(tmp_path / "old"))[0] == 2
    # a current snapshot with a piece missing: named
    broken = json.loads(json.dumps(doc))
    del broken["replay"]["decide"]
    del broken["replay"]["gate_calls"][0]["state"]
    store = Store.open(tmp_path / "new")
    try:
        store.call(save_snapshot, tmp_path / "new", 7, broken, timeout=10)
    finally:
        store.close(10)
    code, out = replay("7", "--data-dir", str(tmp_path / "new"))
    assert code == 2
    assert "replay.decide.net_liquidation" in out["missing"]
    assert "replay.decide.working" in out["missing"]
    assert "replay.gate_calls[0].state" in out["missing"]
    proc = cli("replay", "7", "--data-dir", str(tmp_path / "new"))
    assert proc.returncode == 2 and "cannot be replayed: missing" in proc.stderr


def test_no_secret_reaches_the_database_or_the_snapshots(recorded):
    doc = load_snapshot(open_readonly(recorded["data"]), recorded["data"], cycle_id=2)
    assert doc["config"]["notify"]["title_prefix"] == "json://[REDACTED]@127.0.0.1:9/x"
    assert doc["config"]["risk"]["max_order_notional"] == 25000.0
    files = [p for p in recorded["data"].rglob("*") if p.is_file()]
    assert any(p.name.startswith("trading.sqlite3") for p in files)
    assert any(p.name.startswith("cycle-") for p in files)
    for path in files:
        raw = path.read_bytes()
        for secret in (API_KEY, URL_PASSWORD, NOTIFY_URLS):
            assert secret.encode() not in raw, f"{secret!r} in {path}"


def test_stored_config_masks_registered_secrets_and_url_credentials(recorded):
    from data_lake import register_secret

    cfg = load_config(recorded["cfg"])
    register_secret("ib-swarm-registered-secret")
    other = cfg.model_copy(
        update={
            "notify": cfg.notify.model_copy(update={"title_prefix": "ib-swarm-registered-secret"})
        }
    )
    assert stored_config(other)["notify"]["title_prefix"] == "[REDACTED]"
    assert stored_config(cfg)["risk"] == cfg.risk.model_dump(mode="json")


# --- LLM commander mode ------------------------------------------------------------------
def test_llm_commander_cycle_replays_from_its_transcript(gateway, admin, tmp_path):
    stub = AnthropicStub().start()
    try:
        cfg = write_config(tmp_path, gateway.port, commander__mode="llm", max_retries=0)
        good = {
            "symbol": "MSFT",
            "sec_type": "STK",
            "action": "BUY",
            "quantity": 5,
            "order_type": "LMT",
            "limit_price": 420.0,
            "reason": "swarm agrees",
        }
        bad = {**good, "symbol": "GME", "quantity": 100000, "order_type": "MKT"}
        del bad["limit_price"]
        kelly = {"win_probability": 0.6, "payoff_ratio": 1.5, "price": 420.0}

        def turn(*calls: tuple[str, dict[str, Any]]) -> Reply:
            body = stub.tool_answer([])
            body["content"] = [
                {"type": "tool_use", "id": f"toolu_{i}_{c[0]}", "name": c[0], "input": c[1]}
                for i, c in enumerate(calls)
            ]
            return Reply(body=body)

        stub.script(
            "commander",
            turn(("get_swarm_signals", {}), ("kelly_size", kelly)),
            turn(("place_guarded_order", good), ("place_guarded_order", bad)),
            Reply(body=stub.text_answer("done")),
        )
        env = {"ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": stub.base_url}
        proc = start("run", cfg, "--max-cycles", "1", env=env)
        out = proc.communicate(timeout=90)[0].decode()
        assert proc.returncode == 0, out[-3000:]
        assert len(stub.calls_for("commander")) == 3
    finally:
        stub.stop()
    # replayed with no server at all: the recorded answers drive it
    code, doc = replay("1", "--config", str(cfg))
    assert code == 0 and doc["identical"] and doc["mode"] == "llm", doc["differences"]
    assert [t["tool"] for t in doc["tools"]] == [
        "get_swarm_signals",
        "kelly_size",
        "place_guarded_order",
        "place_guarded_order",
    ]
    assert all(t["recorded"] == t["replayed"] for t in doc["tools"])
    assert doc["tools"][2]["replayed"]["content"]["accepted"] is True
    assert "allow-list" in doc["tools"][3]["replayed"]["content"]["reasons"][0]
    # another config: the tool results it would have changed are named
    tight = variant(
        cfg, "tight.toml", risk__max_order_notional="1000.0", commander__kelly_cap="0.01"
    )
    code, doc = replay("1", "--config", str(tight))
    assert code == 1
    changed = {d["where"]: d for d in doc["differences"] if d["kind"] == "tool_result"}
    assert set(changed) == {"turn 1 tool kelly_size", "turn 2 tool place_guarded_order"}
    order = changed["turn 2 tool place_guarded_order"]
    assert order["recorded"]["content"]["accepted"] is True
    assert "exceeds the maximum 1,000" in order["replayed"]["content"]["reasons"][0]
    assert order["reason_key"] == "gate: max_notional"
    assert any(d["kind"] == "prompt" for d in doc["differences"])  # the model saw the limits
    text = io.StringIO()
    with redirect_stdout(text):
        assert main(["replay", "1", "--config", str(tight)]) == 1
    row = next(x for x in text.getvalue().splitlines() if "2: place_guarded_order" in x)
    assert row.startswith(" ≠") and "exceeds the maximum 1,000" in row
    assert "replayed: tool result: refused (order_ref cmd-c1-" in text.getvalue()
    assert "replayed: tool result: fraction 0.01; units " in text.getvalue()
    assert "{'" not in text.getvalue()
    assert "might have answered differently" in text.getvalue()
    # a per-cycle budget the first answer already spends: the later turns never happen
    poor = variant(cfg, "poor.toml", swarm__max_usd_per_cycle="0.000001")
    code, doc = replay("1", "--config", str(poor))
    assert code == 1
    [budget] = [d for d in doc["differences"] if d["kind"] == "turns"]
    assert (budget["recorded"], budget["replayed"]) == (3, 1)
    assert [t["tool"] for t in doc["tools"]] == ["get_swarm_signals", "kelly_size"]
    assert len([d for d in doc["differences"] if d["kind"] == "not_sent"]) == 2
    assert_books_balance(admin, data(tmp_path))
    raw = b"".join(p.read_bytes() for p in data(tmp_path).rglob("*") if p.is_file())
    assert API_KEY.encode() not in raw
    shutil.rmtree(data(tmp_path) / "snapshots")
    code, doc = replay("1", "--config", str(cfg))
    assert code == 2 and "gone" in doc["error"]


def test_replay_refuses_bad_arguments_and_a_missing_data_dir_with_one_line(tmp_path):
    cfg = write_config(tmp_path, 1)
    code, doc = replay("1", "--config", str(cfg))
    assert code == 2 and "does not exist" in doc["error"]
    assert not data(tmp_path).exists()  # read-only: nothing created
    code, doc = replay("--config", str(cfg))
    assert code == 2 and "give a CYCLE, or --from DATE and --to DATE" in doc["error"]
    code, doc = replay("1")
    assert code == 2 and "--data-dir" in doc["error"]
    code, doc = replay("--from", "yesterday", "--to", "2026-11-20", "--config", str(cfg))
    assert code == 2 and "--from 'yesterday'" in doc["error"]


def test_a_decide_refusal_in_other_words_is_refused_either_way(recorded):
    """A decision refused when recorded and refused again for a reason with other figures is
    counted as such (not as a decision changed otherwise)."""
    from runtime.replay import replay_cycle

    doc = load_snapshot(open_readonly(recorded["data"]), recorded["data"], cycle_id=1)
    cfg = load_config(recorded["cfg"])

    def confident(at: float) -> Any:
        return cfg.model_copy(
            update={"commander": cfg.commander.model_copy(update={"min_confidence": at})}
        )

    # the recording as if made with a threshold above the demo's GS signal: refused
    doc = json.loads(json.dumps(doc))
    seen = doc["decisions"][0]["inputs"]["confidence"]
    low, high = round(seen + 0.01, 4), round(seen + 0.02, 4)
    doc["decisions"] = [d["replayed"] for d in replay_cycle(doc, confident(low)).decisions]
    gs = doc["decisions"][0]
    assert gs["symbol"] == "GS" and gs["reason"] == f"confidence {seen:.2f} below {low}"
    result = replay_cycle(doc, confident(high))
    [d] = [d for d in result.differences if d.where.startswith("decision 1")]
    assert d.kind == "reason" and d.reason_key == "decide: confidence N below N"
    assert (d.recorded, d.replayed) == (gs["reason"], f"confidence {seen:.2f} below {high}")


def test_a_skipped_cycle_has_nothing_to_replay_and_a_cut_one_cannot_be(recorded):
    from runtime.replay import CannotReplay, replay_cycle

    doc = load_snapshot(open_readonly(recorded["data"]), recorded["data"], cycle_id=1)
    skipped = {
        k: doc[k] for k in ("schema_version", "cycle_id", "mode", "config", "config_hash")
    } | {"replay": {"gate_calls": []}, "status": "skipped", "skipped": "every instrument is closed"}
    result = replay_cycle(skipped)
    assert result.identical and "made no decision" in result.notes[0]
    # another config might have traded where the recorded one skipped: that is unknowable
    other = parse_config(
        {
            **skipped["config"],
            "loop": {
                **skipped["config"]["loop"],
                "trade_outside_liquid_hours": not skipped["config"]["loop"][
                    "trade_outside_liquid_hours"
                ],
            },
        }
    )
    with pytest.raises(CannotReplay, match="so what this config would have done was never"):
        replay_cycle(skipped, other)
    cut = {k: v for k, v in doc.items() if k not in ("decisions", "verdicts")}
    cut["status"], cut["skipped"] = "timeout", "cancelled at max_cycle_s"
    with pytest.raises(CannotReplay, match=r"decisions \(the cycle ended timeout"):
        replay_cycle(cut)


class _WallAt(Clock):
    """The wall clock pinned to one moment (monotonic stays the system's: quotes age on it)."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return self.at.timestamp()


@pytest.mark.asyncio
async def test_the_gate_path_reads_the_injected_clock_and_records_what_it_read(gateway, tmp_path):
    """No hidden wall-clock read between Decide and the gate: liquid hours and the exchange
    day come from the clock the commander was given, and the recorded gate call says so."""
    cfg = load_config(write_config(tmp_path, gateway.port, trade_outside_liquid_hours=False))
    today = dt.datetime.now(dt.UTC).date()
    saturday = today + dt.timedelta(days=(5 - today.weekday()) % 7)
    weekday = today if today.weekday() < 5 else today + dt.timedelta(days=7 - today.weekday())
    moments = {
        "saturday": dt.datetime(saturday.year, saturday.month, saturday.day, 16, tzinfo=dt.UTC),
        "open": dt.datetime(weekday.year, weekday.month, weekday.day, 15, 30, tzinfo=dt.UTC),
    }
    db = Store.open(data(tmp_path))
    broker = Broker(cfg.broker, "paper", Secrets({}), db)
    await broker.start()
    try:
        instances, templates = load_instances(
            cfg.swarm.instances_dir, cfg.swarm.templates_dir, cfg.risk.model_dump()
        )
        for cycle_id, (name, when) in enumerate(moments.items(), start=1):
            commander = Commander(
                cfg=cfg,
                store=db,
                broker=broker,
                breaker=CircuitBreaker(data(tmp_path), db),
                provider=OfflineProvider(),
                instances=instances,
                templates=templates,
                gate_state=GateState(),
                clock=_WallAt(when),  # and no wall_now: the clock is the only source
                watchdog_alive=lambda: True,
                cancel=asyncio.Event(),
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
            db.post(insert_cycle, cycle_id)
            verdict = await commander.act(d, cycle_id)
            [call] = commander._gate_calls  # what a snapshot stores for replay
            assert call["wall"] == when.isoformat() and call["day"] == exchange_day(when)
            assert call["context"]["market_open"] is (name == "open")
            assert verdict.accepted is (name == "open"), verdict.reasons
    finally:
        await broker.close()
        db.close()


# --- protective children -----------------------------------------------------------------
def _children_diffs(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The child and bracket differences of a replay by where (e.g. 'gate BUY GS 100 stop')."""
    return {
        d["where"]: d
        for d in doc["differences"]
        if d["kind"].startswith("child_") or d["kind"] == "bracket_reason"
    }


def test_a_config_without_protection_replays_the_dropped_children_as_differences(protected):
    bare = variant(
        protected["cfg"],
        "bare.toml",
        commander__stop_loss_pct="0.0",
        commander__take_profit_pct="0.0",
    )
    code, doc = replay("1", "--config", str(bare))
    assert code == 1 and not doc["identical"]
    diffs = _children_diffs(doc)
    # index_trend's own 4% stop still guards MSFT; every other child is gone
    assert sorted((w.split()[2], w.split()[-1]) for w in diffs) == [
        ("AMD", "stop"),
        ("AMD", "take-profit"),
        ("GS", "stop"),
        ("GS", "take-profit"),
        ("MSFT", "take-profit"),
        ("NVDA", "stop"),
        ("NVDA", "take-profit"),
    ]
    assert {d["kind"] for d in diffs.values()} == {"child_dropped"}
    gate = {g["request"]["symbol"]: g for g in doc["gate"]}
    gs_stop = gate["GS"]["bracket"]["recorded"]["children"][0]
    gs = diffs["gate BUY GS 100 stop"]
    assert gs["recorded"] == f"SELL 100 STP trigger {gs_stop['aux_price']:g} GTC"
    assert gs["replayed"] is None and gs["reason_key"] == "bracket: stop dropped"
    assert gate["GS"]["bracket"]["replayed"] is None
    # the stocks' verdicts are unchanged: only their children differ; the puts, refused in
    # the run because their 2% stop lay inside the spread, would have gone without one
    stocks = [g for g in doc["gate"] if g["request"]["sec_type"] == "STK"]
    assert len(stocks) == 2 and all(g["recorded"] == g["replayed"] for g in stocks)
    puts = [d["where"].split()[2] for d in doc["differences"] if d["kind"] == "accepted"]
    assert sorted(puts) == ["AMD", "NVDA"]
    assert all(gate[s]["replayed"]["accepted"] for s in puts)
    msft = next(g for g in doc["gate"] if g["request"]["symbol"] == "MSFT")
    [stop] = msft["bracket"]["replayed"]["children"]
    assert stop["order_type"] == "STP" and stop == msft["bracket"]["recorded"]["children"][0]
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["replay", "1", "--config", str(bare)]) == 1
    text = out.getvalue().splitlines()
    gs_rows = text[text.index(next(x for x in text if "BUY 100 GS" in x)) :][:3]
    assert gs_rows[1].startswith(" ≠") and "└ stop" in gs_rows[1]
    assert f"STP {gs_stop['aux_price']:g} x100" in gs_rows[1]
    assert gs_rows[1].rstrip().endswith("- (none)")
    msft_rows = text[text.index(next(x for x in text if "BUY 20 MSFT" in x)) :][:3]
    assert msft_rows[1].startswith("   ") and "└ stop" in msft_rows[1]  # the same on both sides
    assert msft_rows[2].startswith(" ≠") and "└ take-profit" in msft_rows[2]


def test_a_moved_stop_and_a_refused_bracket_are_differences(protected):
    wider = variant(protected["cfg"], "wider.toml", commander__stop_loss_pct="0.03")
    code, doc = replay("1", "--config", str(wider))
    assert code == 1
    diffs = _children_diffs(doc)
    moved = {d["where"] for d in doc["differences"] if d["kind"] == "child_changed"}
    assert {w.split()[2] for w in moved} == {"GS", "NVDA", "AMD"}  # MSFT keeps its own 4%
    assert all(w.endswith(" stop") for w in moved)
    # the run's gate refused the puts' brackets: a 2% stop on a sold put lies inside its quoted
    # spread (it would fire as the entry fills); at 3% it still does (the reason changes with
    # the stop); at 6% they would have gone
    puts = [g for g in doc["gate"] if g["request"]["sec_type"] == "OPT"]
    assert [g["request"]["symbol"] for g in puts] == ["NVDA", "AMD"]
    for g in puts:
        was, now = g["recorded"]["reasons"], g["replayed"]["reasons"]
        assert not g["recorded"]["accepted"] and not g["replayed"]["accepted"]
        assert "not beyond the quoted spread" in was[0] and "not beyond" in now[0]
        assert was != now
    wide = variant(protected["cfg"], "wide6.toml", commander__stop_loss_pct="0.06")
    code, wide_doc = replay("1", "--config", str(wide))
    gone = {d["where"].split()[2] for d in wide_doc["differences"] if d["kind"] == "accepted"}
    assert "NVDA" in gone
    gs = diffs["gate BUY GS 100 stop"]
    assert gs["reason_key"] == "bracket: stop moved"
    gs_gate = next(g for g in doc["gate"] if g["request"]["symbol"] == "GS")["bracket"]
    entry = gs_gate["recorded"]["reference_price"]
    was, now = (b["children"][0]["aux_price"] for b in (gs_gate["recorded"], gs_gate["replayed"]))
    assert entry * 0.98 - 0.01 < was <= entry * 0.98 and entry * 0.97 - 0.01 < now <= entry * 0.97
    assert (gs["recorded"], gs["replayed"]) == (
        f"SELL 100 STP trigger {was:g} GTC",
        f"SELL 100 STP trigger {now:g} GTC",
    )
    assert all(g["recorded"] == g["replayed"] for g in doc["gate"] if g not in puts)
    # a collar below index_trend's own 4% stop: the gate refuses MSFT's bracket whole
    narrow = variant(protected["cfg"], "narrow.toml", risk__protective_collar_pct="0.035")
    code, doc = replay("1", "--config", str(narrow))
    assert code == 1
    [parent] = [d for d in doc["differences"] if d["kind"] == "refused"]
    assert parent["where"] == "gate BUY MSFT 20" and parent["reason_key"] == "gate: bracket"
    assert "protective collar 3.5%" in parent["replayed"]["reasons"][0]
    [child] = [d for d in doc["differences"] if d["kind"] == "child_refused"]
    assert child["where"] == "gate BUY MSFT 20 stop" and child["recorded"] == []
    msft_stop = next(g for g in doc["gate"] if g["request"]["symbol"] == "MSFT")["bracket"]
    stop_price = msft_stop["replayed"]["children"][0]["aux_price"]
    assert child["replayed"][0].startswith(f"stop SELL 20: price {stop_price:g} is 4.0% from")
    assert child["reason_key"].startswith("bracket: stop SELL N: price N is N% from")
    msft = next(g for g in doc["gate"] if g["request"]["symbol"] == "MSFT")
    assert msft["bracket"]["recorded"]["reasons"] == []
    assert msft["bracket"]["replayed"]["reasons"] == child["replayed"]
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["replay", "1", "--config", str(narrow)]) == 1
    row = next(x for x in out.getvalue().splitlines() if "└ stop" in x and "REFUSED" in x)
    assert row.startswith(" ≠") and f"STP {stop_price:g} x20" in row


def test_range_summary_counts_child_differences(protected):
    bare = variant(
        protected["cfg"],
        "bare2.toml",
        commander__stop_loss_pct="0.0",
        commander__take_profit_pct="0.0",
    )
    today = dt.datetime.now(dt.UTC).date()
    days = ((today - dt.timedelta(days=1)).isoformat(), (today + dt.timedelta(days=1)).isoformat())
    code, doc = replay("--from", days[0], "--to", days[1], "--config", str(bare))
    assert code == 1 and doc["different"] >= 1
    _assert_every_difference_is_counted(doc)
    cats = {c["category"]: c for c in doc["by_category"]}
    assert list(cats) == [
        "accepted now, refused when recorded",
        "protective child added or dropped",
    ]
    dropped = cats["protective child added or dropped"]
    by = {r["reason"]: r["n"] for r in dropped["reasons"]}
    assert by["bracket: take-profit dropped"] > by["bracket: stop dropped"] >= 3
    assert all(k.startswith("bracket: ") for k in by)
    # and the puts, refused for a stop inside their spread, would have gone without one
    accepted = cats["accepted now, refused when recorded"]
    assert accepted["differences"] >= 2
    for r in accepted["reasons"]:
        assert r["reason"].startswith("gate: accepted (recorded: stop BUY N: stop N is N from")
        assert "not beyond the quoted spread" in r["example"]["recorded"]["reasons"][0]
        assert r["example"]["replayed"]["accepted"] is True
    assert {o["kind"] for o in doc["differences"]} == {"child_dropped", "accepted"}
    code, doc = replay("--from", days[0], "--to", days[1], "--config", str(protected["cfg"]))
    assert code == 0 and doc["identical"] == doc["replayed"] == 3 and doc["by_category"] == []


def test_a_snapshot_from_before_the_children_were_recorded_replays_parents_only(
    protected, tmp_path
):
    doc = load_snapshot(open_readonly(protected["data"]), protected["data"], cycle_id=1)
    old = json.loads(json.dumps(doc))
    del old["replay"]["instances"]
    for call in old["replay"]["gate_calls"]:
        call.pop("bracket", None)
    store = Store.open(tmp_path / "old")
    try:
        store.call(save_snapshot, tmp_path / "old", 1, old, timeout=10)
    finally:
        store.close(10)
    wider = variant(protected["cfg"], "wider2.toml", commander__stop_loss_pct="0.03")
    code, out = replay("1", "--config", str(wider), "--data-dir", str(tmp_path / "old"))
    assert code == 0 and out["identical"], out["differences"]
    [note] = [n for n in out["notes"] if "protective children" in n]
    assert "only the parent orders are compared" in note
    assert all(g["bracket"] is None for g in out["gate"])
    text = io.StringIO()
    with redirect_stdout(text):
        main(["replay", "1", "--config", str(wider), "--data-dir", str(tmp_path / "old")])
    assert "note: this snapshot was written before protective children" in text.getvalue()
