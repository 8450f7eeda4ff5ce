"""`breaker reset` without --yes asks, and reads the answer from stdin whether or not it is a
terminal: a confirmation nobody can answer (a pipe, /dev/null, EOF) never resets."""

from __future__ import annotations

import json

import pytest
from procs import cli, data, write_config

from data_lake import Store
from runtime.breaker import BreakerState, CircuitBreaker

RESET = ("breaker", "reset", "--by", "tester", "--reason", "checked")


def _halted(tmp_path):
    cfg = str(write_config(tmp_path, 1))
    Store.open(data(tmp_path)).close(5)
    CircuitBreaker(data(tmp_path)).trip(BreakerState.HALTED, "watchdog", "main loop frozen")
    return cfg


@pytest.mark.parametrize("answer", ["n\n", "\n"])
def test_a_piped_answer_other_than_yes_does_not_reset(tmp_path, answer):
    cfg = _halted(tmp_path)
    out = cli(*RESET, "--config", cfg, stdin=answer)
    assert out.returncode == 1, out
    assert "reset it to ACTIVE" in out.stdout and "[y/N]" in out.stdout
    assert "not reset: not confirmed" in out.stderr and "Traceback" not in out.stderr
    assert CircuitBreaker(data(tmp_path)).status().state is BreakerState.HALTED


def test_eof_is_no_and_json_says_so(tmp_path):
    cfg = _halted(tmp_path)
    out = cli(*RESET, "--config", cfg, "--json")  # stdin: EOF at once, like < /dev/null
    assert out.returncode == 1, out
    doc = json.loads(out.stdout)  # the prompt went to stderr: stdout is the document alone
    assert (doc["action"], doc["changed"], doc["state"]) == ("reset", False, "HALTED")
    assert "not confirmed" in doc["error"] and "no answer" in doc["error"]
    assert "[y/N]" in out.stderr
    assert CircuitBreaker(data(tmp_path)).status().state is BreakerState.HALTED


def test_yes_in_any_case_resets_and_so_does_the_flag(tmp_path):
    cfg = _halted(tmp_path)
    out = cli(*RESET, "--config", cfg, stdin="YES\n")
    assert out.returncode == 0, out.stderr
    assert "HALTED -> ACTIVE" in out.stdout
    status = CircuitBreaker(data(tmp_path)).status()
    assert (status.state, status.actor) == (BreakerState.ACTIVE, "tester")
    CircuitBreaker(data(tmp_path)).trip(BreakerState.HALTED, "watchdog", "again")
    flagged = cli(*RESET, "--yes", "--config", cfg)  # asks nothing, reads nothing
    assert flagged.returncode == 0 and "[y/N]" not in flagged.stdout, flagged
    assert CircuitBreaker(data(tmp_path)).status().state is BreakerState.ACTIVE
