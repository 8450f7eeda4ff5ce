"""The IB error-code policy table: complete, consistent, and the README shows exactly it."""

import re
from pathlib import Path

import pytest

from paper_gateway.realities import FARMS
from paper_gateway.unsupported import UNSUPPORTED, Refusal
from runtime.ib_conditions import MarketConditions
from runtime.ib_errors import (
    ORDER_ENDING_CODES,
    ORDER_ERROR_CODES,
    POLICIES,
    REJECT_CODES,
    Action,
    Severity,
    first_sighting,
    is_global_cancel,
    markdown_table,
    policy_for,
)

ROOT = Path(__file__).resolve().parents[2]

REQUIRED = (
    *(100, 101, 103, 110, 162, 200, 201, 202, 203, 321, 322, 326, 354, 366, 399, 404, 434, 504),
    *(1100, 1101, 1102, 1300, 2100, 2103, 2104, 2105, 2106, 2107, 2108, 2119, 2137, 2157, 2158),
    *(10089, 10090, 10147, 10148, 10167, 10168, 10182, 10197, 10225),
)

# the code argument of every error the paper gateway builds: msg.error(sv, req_id, CODE, ..),
# sink.order_error(order_id, client_id, CODE, ..), OrderError(CODE, ..), HistoryError(CODE,
# ..), the raw version refusal [4, 2, -1, CODE, ..], and the codes its server reacts to
_SENT = re.compile(
    r"(?:msg\.error\(\s*[\w.]+,\s*[\w.()-]+,\s*"
    r"|order_error\(\s*[\w.]+,\s*[\w.]+,\s*"
    r"|(?:Order|History)Error\(\s*"
    r"|encode_fields\(\[4,\s*2,\s*-1,\s*"
    r"|code\s*==\s*|code\s+in\s+\()"
    r"(\d{3,5})"
)


def gateway_codes() -> set[int]:
    found: set[int] = set()
    for path in sorted((ROOT / "paper_gateway").glob("*.py")):
        found |= {int(c) for c in _SENT.findall(path.read_text(encoding="utf-8"))}
    found |= {c for f in FARMS.values() for c in (f.ok_code, f.broken_code)}
    found |= {u.code for u in UNSUPPORTED.values() if isinstance(u, Refusal)}
    return found


def test_every_code_the_paper_gateway_can_send_has_a_row():
    codes = gateway_codes()
    # the scan itself must find what the gateway plays (a broken regex proves nothing)
    assert {100, 101, 103, 162, 200, 201, 202, 321, 326, 354, 506, 1100, 1101} <= codes
    assert {2103, 2104, 10147, 10148, 10167, 10168, 10197} <= codes
    missing = sorted(c for c in codes if c not in POLICIES)
    assert missing == [], f"codes the paper gateway sends without a policy row: {missing}"


def test_the_codes_the_issue_names_each_have_exactly_one_row():
    assert [c for c in REQUIRED if c not in POLICIES] == []
    for code, row in POLICIES.items():
        assert row.code == code and row.known and row.meaning


def test_order_reject_sets_are_derived_from_the_table_and_unchanged():
    assert {
        *(103, 104, 105, 110, 135, 161, 200, 201, 202, 203, 321, 387, 399, 10147, 10148)
    } == ORDER_ERROR_CODES
    assert {201, 203, 10147} == REJECT_CODES  # 202 counts unless the daemon asked to cancel
    # ... or a global cancel took the order (IB's suffix after "reason:" varies)
    assert is_global_cancel(202, "Order Canceled - reason: Cancelled by global cancel")
    assert is_global_cancel(202, "Order Canceled - reason: GLOBAL CANCEL by the desk")
    assert not is_global_cancel(202, "Order Canceled - reason:")
    assert not is_global_cancel(201, "Order rejected - reason: global cancel")
    assert {103, 104, 105, 110, 135, 161, 200, 201, 203, 321, 387} == ORDER_ENDING_CODES
    assert all(POLICIES[c].action is Action.ORDER_REJECT for c in ORDER_ERROR_CODES)


def test_farm_messages_are_information_or_warnings_never_an_outage():
    for code in (2104, 2106, 2158, 2107, 2108, 2119):
        assert POLICIES[code].severity is Severity.INFO and POLICIES[code].action is Action.INFO
    for code in (2103, 2105, 2157):
        row = POLICIES[code]
        assert row.severity is Severity.WARNING and row.action is Action.INFO and row.farm
        assert not row.ends_request
    for farm in FARMS.values():  # each OK code ends its own broken code
        assert POLICIES[farm.ok_code].clears == (farm.broken_code,)


def test_entitlement_and_session_codes_act_as_the_issue_says():
    for code in (354, 10089, 10168):
        assert POLICIES[code].action is Action.REFUSE_SYMBOL
    assert POLICIES[10197].action is Action.REFUSE_ALL
    assert POLICIES[10197].severity is Severity.CRITICAL
    assert POLICIES[1100].action is Action.REFUSE_ALL
    assert POLICIES[1101].clears == POLICIES[1102].clears == (1100,)
    for code in (100, 101, 162):
        assert POLICIES[code].action is Action.DELAY
    # pacing never trips anything, and no code trips the breaker by itself
    assert not any(r.action is Action.TRIP_BREAKER for r in POLICIES.values())


def test_an_unknown_code_gets_a_conservative_default_reported_once_per_process():
    row = policy_for(99_999)
    assert (row.code, row.known, row.severity) == (99_999, False, Severity.WARNING)
    assert first_sighting(99_998) is True
    assert first_sighting(99_998) is False
    assert first_sighting(99_997) is True


def test_readme_shows_exactly_the_policy_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Running against IB Gateway", 1)[1].split("\n## ", 1)[0]
    assert markdown_table() in section
    for code in POLICIES:
        assert f"| {code} |" in section


def test_conditions_report_each_contract_once_per_cycle_and_release_it_next_cycle():
    c = MarketConditions()
    assert c.refuse("AAPL", 354, "not subscribed") is True  # warm-up: counts for cycle 1
    assert c.refuse("AAPL", 354, "not subscribed") is False
    assert c.begin_cycle(1) == ()
    assert c.refusal("AAPL") is not None
    assert c.refuse("AAPL", 354, "not subscribed") is False  # still cycle 1's
    assert c.begin_cycle(2) == ("AAPL",)
    assert c.refusal("AAPL") is None
    assert c.refuse("AAPL", 354, "not subscribed") is True
    assert c.refusals().keys() == {"AAPL"}


@pytest.mark.parametrize("name", ["usfarm", ""])
def test_conditions_farm_flap_and_refuse_all(name):
    c = MarketConditions()
    assert c.farm_broken("market", "usfarm", 2103, "broken") is True
    assert c.farm_broken("market", "usfarm", 2103, "broken") is False
    assert c.suspect("market") == "market data farm broken (2103: usfarm)"
    assert c.suspect("historical") == ""
    assert c.farm_ok("market", name) == ["usfarm"]
    assert c.suspect("market") == ""
    assert c.refuse_all(10197, "competing live session") is True
    assert c.refuse_all(10197, "competing live session") is False
    assert c.lines() == ["refusing all new orders: competing live session (10197)"]
    assert c.clear(10197) is not None and c.refusing_all() is None and c.lines() == []


def test_market_data_setting_is_validated_with_the_key_and_the_reason():
    import tomllib

    from runtime.config import ConfigError, parse_config

    raw = tomllib.loads((ROOT / "config/paper.toml").read_text())
    assert parse_config(raw).broker.market_data == "live"  # the documented default
    raw["broker"]["market_data"] = "frozen"
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert "broker.market_data" in str(err.value) and "'live' or 'delayed'" in str(err.value)
