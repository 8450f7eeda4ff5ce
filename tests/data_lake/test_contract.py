"""The contract value type: its key, and its one mapping to and from stored rows."""

from __future__ import annotations

import dataclasses

import pytest

from data_lake import Contract, flat_dict, from_flat_dict
from data_lake.contract import CONTRACT_FIELDS


def test_a_stocks_key_is_its_symbol_and_an_options_key_names_expiry_strike_and_right() -> None:
    assert Contract.stock("NVDA").key == "NVDA"
    assert Contract.option("NVDA", "20261218", 165.0, "P").key == "NVDA 20261218 165P"
    assert Contract.option("SPY", "20261218", 512.5, "C").key == "SPY 20261218 512.5C"
    assert str(Contract.option("AMD", "20261218", 100.0, "C")) == "AMD 20261218 100C"


def test_a_contract_is_frozen_and_compares_by_value() -> None:
    a = Contract.option("NVDA", "20261218", 165.0, "P")
    assert a == Contract(symbol="NVDA", sec_type="OPT", expiry="20261218", strike=165.0, right="P")
    assert len({a, Contract.option("NVDA", "20261218", 165.0, "P")}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.symbol = "AMD"  # type: ignore[misc]  # the assignment a frozen dataclass refuses


@pytest.mark.parametrize(
    "contract",
    [Contract.stock("NVDA"), Contract.option("NVDA", "20261218", 165.0, "P")],
)
def test_a_contract_survives_the_row_mapping(contract: Contract) -> None:
    row = contract.to_row()
    assert set(row) == {"symbol", "sec_type", "expiry", "strike", "opt_right"}
    assert Contract.from_row(row) == contract


def test_a_stocks_unused_columns_are_stored_as_null() -> None:
    assert Contract.stock("NVDA").to_row() == {
        "symbol": "NVDA",
        "sec_type": "STK",
        "expiry": None,
        "strike": None,
        "opt_right": None,
    }


def test_a_row_may_spell_the_right_as_right_as_the_gateways_positions_do() -> None:
    row = {"symbol": "AAPL", "sec_type": "OPT", "expiry": "20261218", "strike": 200, "right": "C"}
    assert Contract.from_row(row) == Contract.option("AAPL", "20261218", 200.0, "C")


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Held:
    contract: Contract
    quantity: float


@pytest.mark.parametrize(
    "contract",
    [Contract.stock("NVDA"), Contract.option("NVDA", "20261218", 165.0, "P")],
)
def test_a_record_written_flat_reads_back_with_its_contract(contract: Contract) -> None:
    held = _Held(contract=contract, quantity=3.0)
    doc = flat_dict(held)
    assert doc == {**{f: getattr(contract, f) for f in CONTRACT_FIELDS}, "quantity": 3.0}
    assert from_flat_dict(_Held, {**doc, "key": contract.key}) == held


def test_a_record_from_before_the_contract_type_reads_its_option_from_the_key() -> None:
    old = {"key": "AMD 20261218 100C", "symbol": "AMD", "quantity": -1.0}
    assert from_flat_dict(_Held, old) == _Held(
        contract=Contract.option("AMD", "20261218", 100.0, "C"), quantity=-1.0
    )
