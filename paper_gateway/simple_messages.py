"""Server-to-client messages of one or two values and the end markers of requests.

Their layouts are the same at every version the gateway negotiates (157..176); they still
take the session's ServerVersion so that every message is built through one door.
"""

from __future__ import annotations

from .versions import ServerVersion
from .wire import Field

__all__ = [
    "account_download_end",
    "account_summary_end",
    "account_update_multi_end",
    "account_update_time",
    "completed_orders_end",
    "contract_data_end",
    "current_time",
    "exec_details_end",
    "managed_accounts",
    "next_valid_id",
    "open_order_end",
    "position_end",
    "position_multi_end",
]

Fields = list[Field]


def next_valid_id(sv: ServerVersion, order_id: int) -> Fields:
    return [9, 1, order_id]


def managed_accounts(sv: ServerVersion, accounts: str) -> Fields:
    return [15, 1, accounts]


def current_time(sv: ServerVersion, epoch: int) -> Fields:
    return [49, 1, epoch]


def account_update_time(sv: ServerVersion, hhmm: str) -> Fields:
    return [8, 1, hhmm]


def contract_data_end(sv: ServerVersion, req_id: int) -> Fields:
    return [52, 1, req_id]


def open_order_end(sv: ServerVersion) -> Fields:
    return [53, 1]


def account_download_end(sv: ServerVersion, account: str) -> Fields:
    return [54, 1, account]


def exec_details_end(sv: ServerVersion, req_id: int) -> Fields:
    return [55, 1, req_id]


def position_end(sv: ServerVersion) -> Fields:
    return [62, 1]


def account_summary_end(sv: ServerVersion, req_id: int) -> Fields:
    return [64, 1, req_id]


def position_multi_end(sv: ServerVersion, req_id: int) -> Fields:
    return [72, 1, req_id]


def account_update_multi_end(sv: ServerVersion, req_id: int) -> Fields:
    return [74, 1, req_id]


def completed_orders_end(sv: ServerVersion) -> Fields:
    return [102]
