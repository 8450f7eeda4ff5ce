"""Decide (rules mode): conflicts, thresholds, Kelly sizing, delta, stacking. Pure function."""

import tomllib
from pathlib import Path

import pytest

from data_lake import Contract
from runtime.commander import decide_rules, protection_for
from runtime.config import parse_config
from skills.brackets import Protection
from skills.execution_gate import Holding
from skills.swarm_core import MergedSignal
from skills.swarm_models import InstanceConfig, MarketContext, OptionView, SymbolView

ROOT = Path(__file__).resolve().parents[2]
CFG = parse_config(tomllib.loads((ROOT / "config/paper.toml").read_text()))
CTX = MarketContext(
    "t",
    (
        SymbolView("NVDA", 182.0, 181.98, 182.02, 0.7, 0.9, 175.0),
        SymbolView("MSFT", 415.0, 414.96, 415.04, 0.2, 0.4, 405.0),
    ),
    (OptionView("NVDA", "20261218", 165.0, "P", 2.9, 3.1, -0.22, 27),),
)


def merged(symbol="MSFT", sec_type="STK", expiry="", strike=0.0, right="", **kw):
    contract = Contract(symbol=symbol, sec_type=sec_type, expiry=expiry, strike=strike, right=right)
    base = dict(
        contract=contract,
        action="BUY",
        order_type="LMT",
        limit_price=415.04,
        quantity=20,
        confidence=0.8,
        win_probability=0.55,
        payoff_ratio=1.5,
        sources=("a",),
        signals=(),
        conflict=False,
    )
    return MergedSignal(**{**base, **kw})


def put(**kw):
    return merged(
        **{
            **dict(
                symbol="NVDA",
                action="SELL",
                sec_type="OPT",
                expiry="20261218",
                strike=165.0,
                right="P",
                limit_price=3.0,
                quantity=5,
                win_probability=0.78,
                payoff_ratio=0.4,
            ),
            **kw,
        }
    )


def test_kelly_sizes_a_stock_buy_and_the_signal_quantity_caps_it():
    [d] = decide_rules([merged(quantity=None)], CFG, 1_000_000, {}, CTX)
    # full Kelly 0.55 - 0.45/1.5 = 0.25; x0.25 = 0.0625; capped at 0.05 -> 50,000 / 415.04
    assert d.accepted and d.kelly_fraction == pytest.approx(0.05) and d.quantity == 120
    [d] = decide_rules([merged()], CFG, 1_000_000, {}, CTX)
    assert d.quantity == 20


def test_short_put_is_sized_on_its_cash_secured_risk():
    [d] = decide_rules([put()], CFG, 1_000_000, {}, CTX)
    assert d.accepted and d.quantity == 3  # 0.05 * 1e6 / (165 * 100) = 3.03


def test_no_edge_means_no_trade():
    [d] = decide_rules([merged(win_probability=0.3, payoff_ratio=1.0)], CFG, 1_000_000, {}, CTX)
    assert not d.accepted and d.reason.startswith("Kelly size below one unit")


def test_conflicts_low_confidence_and_thin_consensus_are_refused():
    cfg = CFG.model_copy(
        update={"commander": CFG.commander.model_copy(update={"min_consensus": 2})}
    )
    out = decide_rules(
        [merged(conflict=True), merged(confidence=0.3), merged(sources=("a",))],
        cfg,
        1_000_000,
        {},
        CTX,
    )
    assert [d.reason.split(":")[0].split(" ")[0] for d in out] == [
        "conflict",
        "confidence",
        "consensus",
    ]
    assert not any(d.accepted for d in out)


def test_closing_signal_reduces_the_holding_without_kelly():
    held = {"MSFT": Holding(contract=Contract.stock("MSFT"), quantity=30, mark=415.0)}
    [d] = decide_rules([merged(action="SELL", quantity=50)], CFG, 1_000, held, CTX)
    assert d.accepted and d.quantity == 30 and d.reason == "reduces the 30 held"


def test_a_protected_position_closes_by_signal_whole_or_in_part():
    held = {"MSFT": Holding(contract=Contract.stock("MSFT"), quantity=30, mark=415.0)}
    guarded = frozenset({"MSFT"})
    [d] = decide_rules(
        [merged(action="SELL", quantity=30)], CFG, 1_000, held, CTX, protected=guarded
    )
    assert d.accepted and d.reason.endswith("its protective orders are cancelled first")
    [d] = decide_rules(
        [merged(action="SELL", quantity=10)], CFG, 1_000, held, CTX, protected=guarded
    )
    assert d.accepted and d.quantity == 10
    assert d.reason.endswith("its protective orders are cancelled first, the rest covered again")
    [d] = decide_rules([merged(quantity=5)], CFG, 1_000_000, held, CTX, protected=guarded)
    assert d.accepted  # adding to it is not a close


def test_portfolio_delta_limit_refuses_adding_delta():
    held = {
        "AMD": Holding(contract=Contract.stock("AMD"), quantity=900, mark=100.0)
    }  # +90,000 dollar delta already
    [d] = decide_rules([merged()], CFG, 1_000_000, held, CTX)  # +8,301: still under 100,000
    assert d.accepted
    [d] = decide_rules([merged(quantity=40)], CFG, 1_000_000, held, CTX)  # +16,600
    assert not d.accepted and d.reason.startswith("portfolio dollar delta would be 106,602")


def test_a_contract_with_a_working_order_is_not_stacked():
    [d] = decide_rules(
        [put()], CFG, 1_000_000, {}, CTX, working=frozenset({("NVDA 20261218 165P", "SELL")})
    )
    assert not d.accepted and d.reason == "an order for this contract and side is already working"


def _instance(id_: str, **params) -> InstanceConfig:
    return InstanceConfig(
        id=id_, template="t.md", model="m", parameters={"symbols": ["NVDA"], **params}
    )


def test_protection_is_off_unless_configured_and_the_tightest_instance_override_wins():
    paper = parse_config({"mode": "paper"}).commander
    on = parse_config(
        {"mode": "paper", "commander": {"stop_loss_pct": 0.05, "take_profit_pct": 0.2}}
    ).commander
    plain, tight = _instance("plain"), _instance("tight", stop_loss_pct=0.02)
    assert protection_for(paper, [plain], ["plain"]) is None
    assert protection_for(on, [plain], ["plain"]) == Protection(
        stop_loss_pct=0.05, take_profit_pct=0.2
    )
    assert protection_for(on, [plain, tight], ["plain", "tight"]) == Protection(
        stop_loss_pct=0.02, take_profit_pct=0.2
    )
    # an instance may ask for protection where the global config has none
    assert protection_for(paper, [tight], ["tight"]) == Protection(stop_loss_pct=0.02)
