"""runtime/pacing.py on a stepped clock: IB's historical pacing rules, the line book, backoff;
runtime/pacing_log.py: the historical budget survives a restart."""

import json
import logging
import random

from runtime.pacing import Backoff, HistoryPacer, LineBook
from runtime.pacing_log import PACING_LOG, HistoryLog


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
    assert [at for at, _, _ in pacer.sent()] == [1001.0] * 5


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


# --- the historical budget across restarts (runtime/pacing_log.py) -------------------------
class Clocks:
    """The injected clock of one machine: monotonic and wall, stepped together."""

    def __init__(self) -> None:
        self.mono = 5000.0
        self.wall_t = 1_790_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.wall_t

    def step(self, seconds: float) -> None:
        self.mono += seconds
        self.wall_t += seconds


def lifetime(clocks, data_dir):
    """One process's pacer, as the broker builds it: started from the log in `data_dir`."""
    log = HistoryLog(data_dir / PACING_LOG, clocks.monotonic, clocks.wall)
    return HistoryPacer(clocks.monotonic, margin_s=0.5, sent=log.load()), log


def send(pacer, log, key, contract):
    """What the broker does for each request: ask, count it, save the log."""
    assert pacer.wait_s(key, contract) == 0, pacer.why_wait(key, contract)
    pacer.record_sent(key, contract)
    log.save(pacer.sent())


def test_a_restarted_process_starts_with_the_budget_earlier_processes_spent(tmp_path):
    clocks = Clocks()
    first, log = lifetime(clocks, tmp_path)
    for i in range(40):  # the first process: 40 requests over 200 s, then it exits
        send(first, log, (i, "TRADES", "", "1 M", "1 day", True), (i, "TRADES"))
        clocks.step(5.0)
    second, log = lifetime(clocks, tmp_path)  # a restart 0 s later ...
    assert second.in_window == 40  # ... knows what the first one spent
    for i in range(40, 58):
        send(second, log, (i, "TRADES", "", "1 M", "1 day", True), (i, "TRADES"))
        clocks.step(1.0)
    third, log = lifetime(clocks, tmp_path)  # a second restart counts both earlier processes
    assert third.in_window == 58
    assert third.budget() == "58 of 60 requests used in the last 10 min"
    # IB's identical-request rule is known across the restart too (the last request, 1 s ago)
    last = (57, "TRADES", "", "1 M", "1 day", True)
    assert third.wait_s(last, (57, "TRADES")) == 14.5
    for i in (58, 59):
        send(third, log, (i, "TRADES"), (i, "TRADES"))
    # the 61st within 10 minutes waits until the first process's first request leaves the
    # window: 600 s + margin after it was sent (218 s ago); a pacer that started empty (the
    # bug) would have sent it at once and drawn a 162
    key = ("NEW", "TRADES")
    assert third.wait_s(key, key) == 600.5 - 218
    assert third.why_wait(key, key) == (
        "60 of 60 requests used in the last 10 min, next slot in 382 s"
    )
    assert HistoryPacer(clocks.monotonic).wait_s(key, key) == 0
    clocks.step(600.5 - 218)
    assert lifetime(clocks, tmp_path)[0].wait_s(key, key) == 0
    clocks.step(600.0)  # everything of the log has left the window
    assert lifetime(clocks, tmp_path)[0].in_window == 0


def test_after_a_reboot_or_a_wall_clock_step_entries_are_never_taken_for_older(tmp_path):
    clocks = Clocks()
    pacer, log = lifetime(clocks, tmp_path)
    send(pacer, log, ("A",), ("A",))
    clocks.step(100.0)
    # a reboot: the monotonic clock starts again; the wall clock says 100 s passed
    clocks.mono = 30.0
    [(at, key, contract)] = lifetime(clocks, tmp_path)[0].sent()
    assert (at, key, contract) == (30.0 - 100.0, ("A",), ("A",))
    # a wall clock stepped back an hour on the same boot: the monotonic clock says 100 s
    clocks, other = Clocks(), tmp_path / "other"
    other.mkdir()
    pacer, log = lifetime(clocks, other)
    send(pacer, log, ("B",), ("B",))
    clocks.step(100.0)
    clocks.wall_t -= 3600.0
    [(at, _, _)] = lifetime(clocks, other)[0].sent()
    assert at == clocks.mono - 100.0


def test_a_missing_or_corrupt_log_starts_empty_with_a_warning_and_never_stops_the_pacer(
    tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="runtime.pacing_log")
    clocks = Clocks()
    assert lifetime(clocks, tmp_path)[0].in_window == 0  # no log yet: no warning
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    path = tmp_path / PACING_LOG
    for bad in ("{not json", json.dumps({"version": 1, "saved_mono": 1.0}), "[]", "null"):
        path.write_text(bad, encoding="utf-8")
        caplog.clear()
        pacer, log = lifetime(clocks, tmp_path)
        assert pacer.in_window == 0
        [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert "malformed" in warning.getMessage() and "starting empty" in warning.getMessage()
        send(pacer, log, ("C", bad), ("C",))  # the pacer works; the next save repairs the log
        assert lifetime(clocks, tmp_path)[0].in_window == 1
    # a data directory that cannot be written: logged once, the requests go on
    caplog.clear()
    gone = HistoryLog(tmp_path / "no-such-dir" / PACING_LOG, clocks.monotonic, clocks.wall)
    pacer = HistoryPacer(clocks.monotonic, sent=gone.load())
    for i in range(3):
        send(pacer, gone, ("D", i), ("D", i))
    assert pacer.in_window == 3
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "not written" in warning.getMessage()
