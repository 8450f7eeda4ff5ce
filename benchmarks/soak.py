"""Soak: the whole system for N minutes under random faults drawn from a seed.

python -m benchmarks.soak --minutes N --seed S [--out FILE] [--work DIR]

Real processes on loopback: the paper gateway, the daemon (offline swarm provider) and its
watchdog child. A fault injector fires faults at random times and of random kinds, both drawn
from the seed (the first round fires every kind once, in a seeded order, even past the end):

  gateway_restart  the gateway drops every socket and refuses connections for 0.5-3 s
  gateway_freeze   the gateway stops answering for 1-4 s
  connectivity     error 1100 to every session, then 1101 or 1102 after 1-4 s
  reject_burst     every order is rejected (code 201) for 3-8 s
  stop_main        SIGSTOP of the main loop for 0.5-6 s, then SIGCONT
  kill_main        SIGKILL of the main loop
  kill_watchdog    SIGKILL of the watchdog
  db_lock          another process holds SQLite's write lock for 2-5 s
  price_jump       one stock jumps 2-6 % up or down

After a fault, and whenever the breaker is seen tripped, the injector waits for the account
to go flat, resets the breaker the way a person does (`python -m runtime breaker reset --yes`),
restarts the main loop if it is gone and waits for it to cycle again. At the end: the
accounting invariant (benchmarks/books.py), every breaker trip explained by a fault fired
just before it, the scripted restarts done, and the RSS, open descriptors and threads of the
main loop and the watchdog sampled over time (figures per 10 minutes, growth per process).
The result goes to benchmarks/results/ as JSON; the exit status is 0 when everything held.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psutil

from data_lake import DatabaseError, DataLakeMissing, open_readonly
from paper_gateway import AdminClient
from paper_gateway.process import gateway_process
from runtime.breaker import BreakerState, CircuitBreaker
from runtime.demo import write_config
from runtime.heartbeat import read_heartbeat

from .books import disagreements

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
KINDS = (
    "gateway_restart",
    "gateway_freeze",
    "connectivity",
    "reject_burst",
    "stop_main",
    "kill_main",
    "kill_watchdog",
    "db_lock",
    "price_jump",
)
HB_TIMEOUT = 3.0  # the watchdog's heartbeat_timeout_s (default; --heartbeat-timeout)
POLL = 0.5
# which faults can explain a breaker trip, by the words of its reason
CAUSES: tuple[tuple[str, frozenset[str]], ...] = (
    (r"is gone|heartbeat missing", frozenset({"kill_main", "stop_main"})),
    (r"stopped \(SIGSTOP\)", frozenset({"stop_main"})),
    (r"zombie", frozenset({"kill_main", "stop_main"})),  # killed, not yet reaped by its parent
    (r"heartbeat stale|no cycle progress", frozenset({"stop_main", "kill_main"})),
    (r"consecutive order rejects", frozenset({"reject_burst"})),
    (r"daily loss|gross exposure|open positions", frozenset({"price_jump"})),
)
# a trip is explained by a fault of a matching kind that ended at most this long before it
# (s): the watchdog's heartbeat timeout, a few polls, and a main loop's restart
EXPLAIN_AFTER = 4 * POLL + 15.0
# the one process (besides the data lake) that touches SQLite: a stand-in for an operator's
# tool holding the write lock; it is a string run by another interpreter, on purpose
LOCK_HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def _now() -> float:
    return time.time()


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


@dataclasses.dataclass
class Fault:
    n: int
    kind: str
    started: float
    ended: float = 0.0
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "kind": self.kind,
            "started": _iso(self.started),
            "ended": _iso(self.ended),
            **self.detail,
        }


@dataclasses.dataclass
class Trip:
    at: float
    state: str
    source: str
    reason: str
    generation: int
    explained_by: list[int] = dataclasses.field(default_factory=list)


def _until(cond: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


def _ts(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


class Soak:
    """One soak run: start everything, fire faults until the time is up, then check."""

    def __init__(
        self,
        work: Path,
        seed: int,
        minutes: float,
        gaps: tuple[float, float],
        hb_timeout: float = HB_TIMEOUT,
    ) -> None:
        self.hb_timeout = hb_timeout
        self.work = work
        self.data = work / "data"
        self.seed = seed
        self.minutes = minutes
        self.gaps = gaps
        self.rng = random.Random(seed)
        self.faults: list[Fault] = []
        self.problems: list[str] = []
        self.known: list[str] = []  # known bugs met on the way (each pinned by an xfail test)
        self.samples: list[dict[str, Any]] = []
        self.restarts = {"main": 0, "watchdog": 0}
        self.trips_seen: dict[int, Trip] = {}
        self.main: subprocess.Popen[bytes] | None = None
        self.main_logs: list[Path] = []
        self._log: IO[str] | None = None
        self._stop_sampling = threading.Event()
        self.t0 = 0.0
        self.admin: AdminClient
        self.cfg: Path
        self.breaker = CircuitBreaker(self.data)
        self.books: list[str] = []

    # --- processes ---------------------------------------------------------------------------
    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.1f}s] {text}"
        print(line, flush=True)
        if self._log is not None:
            self._log.write(line + "\n")
            self._log.flush()

    def start_main(self) -> None:
        log = self.work / f"main-{len(self.main_logs) + 1}.log"
        self.main_logs.append(log)
        with open(log, "w") as out:
            self.main = subprocess.Popen(
                [sys.executable, "-m", "runtime", "run", "--config", str(self.cfg)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.say(f"main loop started (pid {self.main.pid}, log {log.name})")

    def main_alive(self) -> bool:
        return self.main is not None and self.main.poll() is None

    def main_cycling(self, pid: int, after: int = 0) -> bool:
        hb = read_heartbeat(self.data / "heartbeat-main.json")
        return bool(hb and hb.pid == pid and hb.cycle > after and hb.phase != "stopped")

    def watchdog_pid(self) -> int | None:
        hb = read_heartbeat(self.data / "heartbeat-watchdog.json")
        if hb is None or hb.phase == "stopped" or not psutil.pid_exists(hb.pid):
            return None
        return hb.pid

    def watchdog_watching(self, not_pid: int | None = None) -> int | None:
        hb = read_heartbeat(self.data / "heartbeat-watchdog.json")
        if hb is None or hb.phase != "watching" or hb.pid == not_pid:
            return None
        if hb.age(time.monotonic()) > self.hb_timeout:
            return None
        return hb.pid

    def sampler(self, every: float) -> None:
        while not self._stop_sampling.wait(every):
            t = time.monotonic() - self.t0
            pids = {"main": self.main.pid if self.main_alive() else None}  # type: ignore[union-attr]
            pids["watchdog"] = self.watchdog_pid()
            for role, pid in pids.items():
                if pid is None:
                    continue
                try:
                    p = psutil.Process(pid)
                    with p.oneshot():
                        self.samples.append(
                            {
                                "t": round(t, 1),
                                "role": role,
                                "pid": pid,
                                "age_s": round(_now() - p.create_time(), 1),
                                "rss_mb": round(p.memory_info().rss / 2**20, 2),
                                "fds": p.num_fds(),
                                "threads": p.num_threads(),
                            }
                        )
                except psutil.Error:
                    continue

    # --- faults ------------------------------------------------------------------------------
    def fire(self, kind: str) -> Fault:
        fault = Fault(len(self.faults) + 1, kind, _now())
        self.faults.append(fault)
        getattr(self, f"fault_{kind}")(fault)
        fault.ended = _now()
        self.say(f"fault #{fault.n} {kind} {json.dumps(fault.detail)}")
        return fault

    def fault_gateway_restart(self, f: Fault) -> None:
        down = round(self.rng.uniform(0.5, 3.0), 2)
        f.detail["down_s"] = down
        self.admin.call("restart", down_s=down)
        time.sleep(down)

    def fault_gateway_freeze(self, f: Fault) -> None:
        seconds = round(self.rng.uniform(1.0, 4.0), 2)
        f.detail["seconds"] = seconds
        self.admin.call("freeze", seconds=seconds)
        time.sleep(seconds)

    def fault_connectivity(self, f: Fault) -> None:
        lost = round(self.rng.uniform(1.0, 4.0), 2)
        restored = self.rng.choice((1101, 1102))
        f.detail.update(lost_s=lost, restored=restored)
        self.admin.call("error", code=1100, msg="Connectivity between IB and TWS has been lost.")
        time.sleep(lost)
        self.admin.call(
            "error",
            code=restored,
            msg="Connectivity between IB and TWS has been restored - data "
            + ("lost." if restored == 1101 else "maintained."),
        )

    def fault_reject_burst(self, f: Fault) -> None:
        seconds = round(self.rng.uniform(3.0, 8.0), 2)
        f.detail["seconds"] = seconds
        end = time.monotonic() + seconds
        while time.monotonic() < end:  # re-arm at once: every order in the burst is rejected
            self.admin.call("reject_next", code=201)
            time.sleep(0.02)
        f.detail["note"] = "one reject may stay armed for the next order after the burst"

    def fault_stop_main(self, f: Fault) -> None:
        seconds = round(self.rng.uniform(0.5, 6.0), 2)
        f.detail["seconds"] = seconds
        if not self.main_alive():
            f.detail["skipped"] = "main loop not running"
            return
        assert self.main is not None
        f.detail["pid"] = self.main.pid
        os.kill(self.main.pid, signal.SIGSTOP)
        time.sleep(seconds)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.main.pid, signal.SIGCONT)
        # the watchdog may have tripped and killed it; give it one poll to decide
        _until(lambda: not self.main_alive(), POLL * 3)
        f.detail["main_killed_by_watchdog"] = not self.main_alive()

    def fault_kill_main(self, f: Fault) -> None:
        if not self.main_alive():
            f.detail["skipped"] = "main loop not running"
            return
        assert self.main is not None
        f.detail["pid"] = self.main.pid
        os.kill(self.main.pid, signal.SIGKILL)
        self.main.wait(10)
        tripped = _until(
            lambda: self.breaker.status().state is BreakerState.HALTED,
            self.hb_timeout + POLL * 4 + 20,
        )
        f.detail["tripped_s"] = round(_now() - f.started, 2) if tripped else None
        if not tripped:
            self.problems.append(f"fault #{f.n} kill_main: the breaker did not trip")

    def fault_kill_watchdog(self, f: Fault) -> None:
        pid = self.watchdog_pid()
        if pid is None:
            f.detail["skipped"] = "no watchdog running"
            return
        f.detail["pid"] = pid
        os.kill(pid, signal.SIGKILL)
        _until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", 10)

    def fault_db_lock(self, f: Fault) -> None:
        seconds = round(self.rng.uniform(2.0, 5.0), 2)
        f.detail["seconds"] = seconds
        holder = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(self.data / "trading.sqlite3"), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None
        f.detail["locked"] = holder.stdout.readline().strip() == "locked"
        holder.wait(seconds + 60)

    def fault_price_jump(self, f: Fault) -> None:
        prices = self.admin.call("state")["prices"]
        symbol = self.rng.choice(sorted(prices))
        move = self.rng.uniform(0.02, 0.06) * self.rng.choice((-1, 1))
        new = round(prices[symbol] * (1 + move), 2)
        f.detail.update(symbol=symbol, move_pct=round(move * 100, 2), price=new)
        self.admin.call("set_price", symbol=symbol, price=new)

    # --- recovery ----------------------------------------------------------------------------
    def note_trip(self) -> bool:
        st = self.breaker.status()
        if st.state is BreakerState.ACTIVE:
            return False
        if st.generation not in self.trips_seen:
            at = _ts(st.since) if st.since else _now()
            self.trips_seen[st.generation] = Trip(
                at, st.state.value, st.source, st.reason, st.generation
            )
            self.say(f"breaker {st.state.value} by {st.source}: {st.reason}")
        return True

    def recover(self, why: str) -> None:
        """After a fault: settle; restart a main loop that is gone and wait for it to cycle;
        on a trip, wait for the account to go flat, then reset the breaker like a person.
        (In that order: reset while the main loop is still down and the watchdog trips again
        at once on its last heartbeat, rightly.)"""
        _until(self.note_trip, 3.0, 0.1)
        tripped = self.note_trip()
        if tripped and not _until(lambda: not self.admin.call("state")["positions"], 60, 0.2):
            self.problems.append(f"{why}: not flat 60 s after the trip")
        for _ in range(3):  # a person tries again when a restart dies at once
            if self.main_alive():
                break
            if self.main is not None:
                self.main.wait(10)
                self.say(f"main loop exited with {self.main.returncode}")
            self.start_main()
            self.restarts["main"] += 1
            assert self.main is not None
            pid = self.main.pid
            _until(functools.partial(self.cycling_or_dead, pid), 120, 0.1)
            if self.main_cycling(pid):
                break
            if self.main_alive():
                self.problems.append(f"{why}: the restarted main loop did not cycle in 120 s")
                break
            if _until(functools.partial(self.killed_by_watchdog, pid), 10, 0.2):
                self.known.append(
                    f"{why}: the watchdog killed the restarted main loop {pid} at its start "
                    "(judged on its predecessor's stale heartbeat; "
                    "tests/soak/test_soak_findings.py)"
                )
                self.say(f"the watchdog killed the restarted main loop {pid}: known bug")
            else:
                self.problems.append(f"{why}: the restarted main loop {pid} died before cycling")
        if self.watchdog_watching() is None:
            # the main loop respawns a dead watchdog child (backing off up to 30 s)
            pid = _until(self.watchdog_watching, 90, 0.1)
            if pid is None:
                self.problems.append(f"{why}: no watchdog watching 90 s later")
            else:
                self.restarts["watchdog"] += 1
                self.say(f"watchdog watching again (pid {pid})")
        if tripped or self.note_trip():
            self.reset(why)

    def cycling_or_dead(self, pid: int) -> bool:
        return self.main_cycling(pid) or not self.main_alive()

    def killed_by_watchdog(self, pid: int) -> bool:
        try:
            rows = open_readonly(self.data).query(
                "SELECT reason FROM safety_events WHERE kind = 'main_killed'"
            )
            return any(f" {pid} " in r["reason"] for r in rows)
        except (DataLakeMissing, DatabaseError):
            return False

    def reset(self, why: str) -> None:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "runtime",
                "breaker",
                "reset",
                "--by",
                "soak",
                "--reason",
                f"after {why}",
                "--yes",  # without it the reset asks, and reads no from a closed stdin
                "--config",
                str(self.cfg),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            self.problems.append(f"{why}: breaker reset failed: {out.stderr.strip()}")
        self.say(f"breaker reset ({why})")

    def idle(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.note_trip() or not self.main_alive() or self.watchdog_pid() is None:
                self.recover("an idle period")
            time.sleep(0.1)

    # --- the run -----------------------------------------------------------------------------
    def config(self, port: int) -> Path:
        return write_config(
            self.work / "soak.toml",
            {
                "port": port,
                "dir": self.data.as_posix(),
                "cycle_interval_s": 1.5,
                "max_cycle_s": 1.2,
                "deadline_s": 1.0,
                "write_timeout_s": 0.6,
                "heartbeat_interval_s": 0.25,
                "heartbeat_timeout_s": self.hb_timeout,
                "busy_timeout_ms": min(500, int(self.hb_timeout * 250)),
                "poll_interval_s": POLL,
                "close_wait_s": 2.0,
                "connect_timeout_s": 5.0,
                "request_timeout_s": 5.0,
                "reconnect_initial_s": 0.5,
                "reconnect_max_s": 4.0,
            },
        )

    def run(self, sample_every: float) -> dict[str, Any]:
        self.t0 = time.monotonic()
        self.data.mkdir(parents=True, exist_ok=True)
        self._log = open(self.work / "soak.log", "w")  # noqa: SIM115 -- closed below
        started = _now()
        try:
            with (
                open(self.work / "gateway.log", "w") as gw_log,
                gateway_process(
                    "--seed", str(self.seed), "--tick-interval", "0.25", stderr=gw_log, cwd=ROOT
                ) as gw,
            ):
                self.admin = AdminClient(gw["admin_port"], timeout=30)
                self.cfg = self.config(gw["port"])
                self.start_main()
                assert self.main is not None
                first = self.main.pid
                if not _until(lambda: self.main_cycling(first), 120, 0.1):
                    raise SystemExit("the daemon did not start; see " + str(self.main_logs[0]))
                if not _until(self.watchdog_watching, 60, 0.1):
                    raise SystemExit("the watchdog did not start; see " + str(self.main_logs[0]))
                sampler = threading.Thread(target=self.sampler, args=(sample_every,), daemon=True)
                sampler.start()
                self.say(f"running: seed {self.seed}, {self.minutes:g} minutes")
                self.inject()
                self._stop_sampling.set()
                sampler.join()
                gateway = self.finish()
                self.admin.close()
        finally:
            self._cleanup()
        return self.report(started, gateway)

    def inject(self) -> None:
        end = self.t0 + self.minutes * 60
        first_round = list(KINDS)
        self.rng.shuffle(first_round)
        while first_round or time.monotonic() < end:
            self.idle(self.rng.uniform(*self.gaps))
            kind = first_round.pop(0) if first_round else self.rng.choice(KINDS)
            fault = self.fire(kind)
            self.recover(f"fault #{fault.n} {kind}")
        self.idle(3.0)

    def finish(self) -> dict[str, Any]:
        """Stop the daemon and the watchdog cleanly; check the books and the breaker."""
        if self.main_alive():
            assert self.main is not None
            self.main.send_signal(signal.SIGTERM)
            code = self.main.wait(60)
            if code != 0:
                self.problems.append(f"the main loop exited with {code} on SIGTERM")
        else:
            self.problems.append("the main loop was not running at the end")
        pid = self.watchdog_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            _until(lambda: self.watchdog_pid() is None, 20)
        self.note_trip()
        deadline = time.monotonic() + 30
        while True:
            books = disagreements(self.admin, self.data)
            if not books or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.books = books
        state = self.admin.call("state")
        ledger = self.admin.call("ledger")
        return {
            "orders": len(ledger["orders"]),
            "executions": len(ledger["executions"]),
            "positions_at_end": len(state["positions"]),
        }

    def _cleanup(self) -> None:
        self._stop_sampling.set()
        if self.main_alive():
            assert self.main is not None
            self.main.kill()
            self.main.wait(10)
        pid = self.watchdog_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()

    # --- the report --------------------------------------------------------------------------
    def history(self) -> list[Trip]:
        """Every trip: the database's breaker history, plus any the injector saw on disk."""
        trips = dict(self.trips_seen)
        try:
            rows = open_readonly(self.data).query(
                "SELECT at, to_state, source, reason, generation FROM breaker_history "
                "WHERE to_state != 'ACTIVE' ORDER BY id"
            )
            for r in rows:
                trips.setdefault(
                    r["generation"],
                    Trip(_ts(r["at"]), r["to_state"], r["source"], r["reason"], r["generation"]),
                )
        except (DataLakeMissing, DatabaseError) as exc:
            self.problems.append(f"breaker history unreadable: {exc}")
        return [trips[g] for g in sorted(trips)]

    def explain(self, trip: Trip) -> list[int]:
        kinds: set[str] = set()
        for pattern, causes in CAUSES:
            if re.search(pattern, trip.reason):
                kinds |= causes
        return [
            f.n
            for f in self.faults
            if f.kind in kinds
            and not f.detail.get("skipped")
            and f.started - 2.0
            <= trip.at
            <= (f.ended or f.started) + self.hb_timeout + EXPLAIN_AFTER
        ]

    def growth(self) -> dict[str, Any]:
        """Per role: figures per 10-minute window, and growth over the longest-lived process
        (from its first sample at least 30 s old to its last)."""
        out: dict[str, Any] = {}
        for role in ("main", "watchdog"):
            rows = [s for s in self.samples if s["role"] == role]
            windows = []
            for w in range(int(max((s["t"] for s in rows), default=0) // 600) + 1):
                ws = [s for s in rows if w * 600 <= s["t"] < (w + 1) * 600]
                if ws:
                    windows.append(
                        {
                            "minutes": f"{w * 10}-{w * 10 + 10}",
                            "samples": len(ws),
                            "rss_mb_median": round(statistics.median(s["rss_mb"] for s in ws), 1),
                            "rss_mb_max": max(s["rss_mb"] for s in ws),
                            "fds_max": max(s["fds"] for s in ws),
                            "threads_max": max(s["threads"] for s in ws),
                        }
                    )
            by_pid: dict[int, list[dict[str, Any]]] = {}
            for s in rows:
                if s["age_s"] >= 30:
                    by_pid.setdefault(s["pid"], []).append(s)
            longest = max(by_pid.values(), key=len, default=[])
            g: dict[str, Any] = {}
            if len(longest) >= 2:
                a, b = longest[:3], longest[-3:]
                span = longest[-1]["t"] - longest[0]["t"]
                g = {"pid": longest[0]["pid"], "over_s": round(span, 1)}
                for key in ("rss_mb", "fds", "threads"):
                    first = statistics.median(s[key] for s in a)
                    last = statistics.median(s[key] for s in b)
                    g[key] = [first, last]
                g["rss_growth_pct"] = round((g["rss_mb"][1] / g["rss_mb"][0] - 1) * 100, 2)
            each = []
            for pid, ps in by_pid.items():
                if len(ps) >= 2:
                    each.append(
                        {
                            "pid": pid,
                            "from_t": ps[0]["t"],
                            "to_t": ps[-1]["t"],
                            **{k: [ps[0][k], ps[-1][k]] for k in ("rss_mb", "fds", "threads")},
                        }
                    )
            out[role] = {
                "windows": windows,
                "growth": g,
                "pids": len({s["pid"] for s in rows}),
                "per_process": each,
            }
        return out

    def report(self, started: float, gateway: dict[str, Any]) -> dict[str, Any]:
        trips = self.history()
        for t in trips:
            t.explained_by = self.explain(t)
            if not t.explained_by:
                self.problems.append(
                    f"unexplained trip at {_iso(t.at)} by {t.source}: {t.reason} "
                    f"(generation {t.generation})"
                )
        if self.books:
            self.problems.append("the books do not balance: " + "; ".join(self.books))
        fired = {k: sum(1 for f in self.faults if f.kind == k) for k in KINDS}
        result = {
            "benchmark": "soak",
            "command": " ".join(["python -m benchmarks.soak", *sys.argv[1:]]),
            "seed": self.seed,
            "minutes_asked": self.minutes,
            "heartbeat_timeout_s": self.hb_timeout,
            "started": _iso(started),
            "duration_s": round(_now() - started, 1),
            "host": platform.node(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "faults_fired": fired,
            "faults": [f.as_dict() for f in self.faults],
            "trips": [
                {
                    "at": _iso(t.at),
                    "state": t.state,
                    "source": t.source,
                    "reason": t.reason,
                    "generation": t.generation,
                    "explained_by": [f"#{n} {self.faults[n - 1].kind}" for n in t.explained_by],
                }
                for t in trips
            ],
            "restarts": self.restarts,
            "gateway": gateway,
            "books_balance": not self.books,
            "books": self.books,
            "processes": self.growth(),
            "problems": self.problems,
            "known_bugs_met": self.known,
            "samples": self.samples,
            "ok": not self.problems,
            "work": str(self.work),
        }
        return result


def summary(r: dict[str, Any]) -> str:
    lines = [
        f"soak seed {r['seed']}: {r['duration_s'] / 60:.1f} min, {len(r['faults'])} faults "
        f"({', '.join(f'{k} {n}' for k, n in r['faults_fired'].items() if n)})",
        f"gateway: {r['gateway']['orders']} orders, {r['gateway']['executions']} executions",
        f"restarts: main {r['restarts']['main']}, watchdog {r['restarts']['watchdog']}",
        f"breaker trips: {len(r['trips'])}",
    ]
    for t in r["trips"]:
        why = ", ".join(t["explained_by"]) or "UNEXPLAINED"
        lines.append(f"  {t['at']} {t['state']} by {t['source']}: {t['reason'][:90]} <- {why}")
    lines.append(f"books balance: {r['books_balance']}")
    for role, p in r["processes"].items():
        g = p["growth"]
        if g:
            lines.append(
                f"{role}: {p['pids']} process(es); longest-lived over {g['over_s']:.0f}s: RSS "
                f"{g['rss_mb'][0]:.1f} -> {g['rss_mb'][1]:.1f} MB ({g['rss_growth_pct']:+.1f}%, "
                f"target < 5%), fds {g['fds'][0]:g} -> {g['fds'][1]:g}, threads "
                f"{g['threads'][0]:g} -> {g['threads'][1]:g}"
            )
        for w in p["windows"]:
            lines.append(
                f"  {role} minutes {w['minutes']}: RSS median {w['rss_mb_median']} MB "
                f"(max {w['rss_mb_max']}), fds max {w['fds_max']}, threads max {w['threads_max']}"
            )
    for k in r.get("known_bugs_met", []):
        lines.append(f"known bug met: {k}")
    lines.append("OK" if r["ok"] else "PROBLEMS:\n  " + "\n  ".join(r["problems"]))
    return "\n".join(lines)


def run_soak(
    minutes: float,
    seed: int,
    *,
    work: Path | None = None,
    gaps: tuple[float, float] = (4.0, 12.0),
    sample_every: float = 5.0,
    heartbeat_timeout_s: float = HB_TIMEOUT,
) -> dict[str, Any]:
    """Run a soak and return its result (see the module docstring)."""
    work = work or Path(tempfile.mkdtemp(prefix="soak-"))
    work.mkdir(parents=True, exist_ok=True)
    return Soak(work, seed, minutes, gaps, heartbeat_timeout_s).run(sample_every)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--gap-min", type=float, default=4.0, help="seconds between faults, least")
    p.add_argument("--gap-max", type=float, default=12.0, help="seconds between faults, most")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--heartbeat-timeout", type=float, default=HB_TIMEOUT, help="watchdog's")
    p.add_argument("--work", type=Path, default=None, help="keep logs and data here")
    p.add_argument("--out", type=Path, default=None, help="result JSON (default results/)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    # a SIGTERM unwinds like Ctrl-C: the daemon, the watchdog and the gateway are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run_soak(
        args.minutes,
        args.seed,
        work=args.work,
        gaps=(args.gap_min, args.gap_max),
        sample_every=args.sample_every,
        heartbeat_timeout_s=args.heartbeat_timeout,
    )
    print(summary(result))
    out = args.out or RESULTS / (
        f"soak-{dt.date.today().isoformat()}-{platform.node()}-seed{args.seed}"
        f"-{args.minutes:g}m.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"result: {out}")
    if result["ok"] and not args.keep and args.work is None:
        shutil.rmtree(result["work"], ignore_errors=True)
    else:
        print(f"logs and data: {result['work']}")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
