"""The README's "How it fails safe" table is generated (benchmarks/failsafe.py) from the
drills' and the soak's stored results: it names only drills that exist, every drill is in it,
and the README shows exactly what the stored results render."""

from __future__ import annotations

import ast
from pathlib import Path

from benchmarks import failsafe

ROOT = Path(__file__).resolve().parents[2]


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_drill_named_in_the_table_exists():
    missing = []
    for drill in failsafe.drill_ids():
        path, name = drill.split("::", 1)
        if not (ROOT / path).exists() or name not in _tests_in(ROOT / path):
            missing.append(drill)
    assert missing == []


def test_every_drill_is_in_the_table():
    named = set(failsafe.drill_ids())
    drills = {
        f"tests/drills/{path.name}::{name}"
        for path in sorted((ROOT / "tests" / "drills").glob("test_*.py"))
        for name in _tests_in(path)
    }
    assert sorted(drills - named) == []


def test_the_readme_shows_what_the_stored_results_render():
    table = failsafe.render(failsafe.stored(), failsafe.longest_soak())
    current = failsafe.readme_table((ROOT / "README.md").read_text(encoding="utf-8"))
    assert current is not None, "README lacks the fails-safe markers"
    assert current == table, "README out of date: run python -m benchmarks.failsafe"


def test_junit_parameters_merge_into_one_outcome(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text(
        "<testsuites><testsuite>"
        '<testcase classname="tests.drills.test_x" name="test_a[1]" time="1.0"/>'
        '<testcase classname="tests.drills.test_x" name="test_a[2]" time="2.0">'
        "<failure/></testcase>"
        '<testcase classname="tests.drills.test_x" name="test_b" time="0.5"/>'
        "</testsuite></testsuites>"
    )
    assert failsafe._junit_outcomes(xml) == {
        "tests/drills/test_x.py::test_a": {"outcome": "failed", "duration_s": 3.0},
        "tests/drills/test_x.py::test_b": {"outcome": "passed", "duration_s": 0.5},
    }
