"""runtime/pacing.py on a stepped clock: IB's historical pacing rules, the line book, backoff."""

import random

from runtime.pacing import Backoff, HistoryPacer, LineBook


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_an_identical_request_within_15s_is_served_from_the_cache_or_waits():
    clock = Clock()
    pacer = HistoryPacer(clock, margin_s=0.5)
    key, contract = ("AAPL", "TRADES", "", "1 M", "1 day", True), ("AAPL", "TRADES")
    assert pacer.wait_s(key, contract) == 0
    pacer.record_sent(key, contract)
    pacer.record_answer(key, [1, 2, 3])
    clock.t += 10
    assert pacer.cached(key) == [1, 2, 3]
    assert pacer.wait_s(key, contract) == 5.5  # identical, uncached: 15 s + margin after it
    clock.t += 5.0
    assert pacer.cached(key) is None  # the cache lives as long as IB's identical window
    assert pacer.wait_s(key, contract) == 0.5
    clock.t += 0.5
    assert pacer.wait_s(key, contract) == 0


def test_the_61st_request_within_10_minutes_waits_for_the_oldest_to_leave_the_window():
    clock = Clock()
    pacer = HistoryPacer(clock, margin_s=0.0)
    for i in range(60):
        key = (f"S{i}", "TRADES")
        assert pacer.wait_s(key, key) == 0
        pacer.record_sent(key, key)
        clock.t += 3.0  # 60 requests over 180 s
    assert pacer.in_window == 60
    assert pacer.wait_s(("NEW",), ("NEW",)) == 600 - 180
    clock.t += 600 - 180
    assert pacer.wait_s(("NEW",), ("NEW",)) == 0


def test_a_sixth_request_for_one_contract_within_2s_waits():
    clock = Clock()
    pacer = HistoryPacer(clock, margin_s=0.0)
    contract = ("AAPL", "TRADES")
    for i in range(5):
        pacer.record_sent(("AAPL", i), contract)
        clock.t += 0.1
    assert abs(pacer.wait_s(("AAPL", 9), contract) - 1.5) < 1e-9
    assert pacer.wait_s(("MSFT", 9), ("MSFT", "TRADES")) == 0


def test_a_request_counts_from_its_answer_the_latest_the_gateway_can_have_seen_it():
    clock = Clock()
    pacer = HistoryPacer(clock, margin_s=0.5)
    contract = ("AAPL", "TRADES")
    pacer.record_sent(("AAPL", 0), contract)
    clock.t += 1.0  # held back by the client library (45 messages a second), then answered
    pacer.record_over(("AAPL", 0))
    for i in range(1, 5):
        pacer.record_sent(("AAPL", i), contract)
        pacer.record_over(("AAPL", i))
    # the gateway may have seen the first one a second late: 2 s + margin from its answer
    assert pacer.wait_s(("AAPL", 9), contract) == 2.5


def test_line_book_gives_up_the_least_recently_used_line_not_held():
    book = LineBook(3)
    for i, key in enumerate(("AAPL", "MSFT", "NVDA")):
        book.touch(key, float(i))
    assert book.full
    book.touch("AAPL", 10.0)  # read again: now the most recent
    assert book.victim(keep={"NVDA"}) == "MSFT"
    assert book.victim(keep={"AAPL", "MSFT", "NVDA"}) is None
    book.drop("MSFT")
    assert not book.full and len(book) == 2


def test_a_refused_line_lowers_the_cap_to_the_lines_held():
    book = LineBook(100)
    book.touch("AAPL", 0.0)
    book.touch("MSFT", 1.0)
    book.lower_cap()
    assert book.cap == 2 and book.full
    book.restore_cap()
    assert book.cap == 100


def test_backoff_doubles_with_jitter_up_to_the_maximum_and_resets():
    b = Backoff(1.0, 8.0, random.Random(3))
    delays = [b.next() for _ in range(6)]
    bases = [1, 2, 4, 8, 8, 8]
    assert all(0.5 * base <= d <= 1.5 * base for d, base in zip(delays, bases, strict=True))
    b.reset()
    assert 0.5 <= b.next() <= 1.5
