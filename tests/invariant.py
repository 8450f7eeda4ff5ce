"""The accounting invariant every drill asserts after its fault (kept here for the tests; the
implementation lives in `benchmarks/books.py`, which the soak benchmark imports too)."""

from __future__ import annotations

from benchmarks.books import OUR_CLIENTS, assert_books_balance, disagreements

__all__ = ["OUR_CLIENTS", "assert_books_balance", "disagreements"]
