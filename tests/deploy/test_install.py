"""`pip install .` into a fresh virtualenv, then the `ib-swarm` console script from a directory
that has nothing to do with the repository.

Measured on 2 shared cores with a warm pip cache: ~35 s for the module (wheel build ~5 s,
venv + dependencies ~18 s, then 5 commands at ~2.5 s each, the CLI's start-up time). The
dependencies come from the index by name (the pins of pyproject.toml), like an operator's
install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Source directories that become packages, and where their files land in the wheel.
SHIPPED = {
    "runtime": "runtime",
    "skills": "skills",
    "data_lake": "data_lake",
    "paper_gateway": "paper_gateway",
    "swarm_intelligence": "swarm_intelligence",
    "prompts": "prompts",
    "config": "runtime/examples",
}
NOT_COPIED = {".git", "tests", "benchmarks", "build", "dist", "deploy", ".venv", "var"}


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {
        n for n in names if n in NOT_COPIED or n.endswith((".egg-info", "_cache", "__pycache__"))
    }


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(*cmd: str | Path, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("install")
    src = base / "src"  # a copy: building in the worktree would leave build/ and egg-info
    shutil.copytree(ROOT, src, ignore=_ignore)
    wheels = base / "wheels"
    proc = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", wheels, src, cwd=base)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = wheels.glob("ib_swarm_trader-*.whl")
    venv = base / "venv"
    proc = _run(sys.executable, "-m", "venv", venv, cwd=base)
    assert proc.returncode == 0, proc.stderr
    proc = _run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=base)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    return {"wheel": wheel, "venv": venv, "bin": venv / "bin" / "ib-swarm", "cwd": elsewhere}


def test_console_script_help_from_another_directory(installed):
    proc = _run(installed["bin"], "--help", cwd=installed["cwd"])
    assert proc.returncode == 0, proc.stderr
    for command in ("check", "run", "watchdog", "status", "breaker", "panic", "demo"):
        assert command in proc.stdout


def test_check_and_status_with_relative_paths_from_another_directory(installed, tmp_path):
    etc = tmp_path / "etc"
    (etc / "instances").mkdir(parents=True)
    shutil.copy(ROOT / "swarm_intelligence/active_instances/index_trend.json", etc / "instances")
    (etc / "paper.toml").write_text(
        'mode = "paper"\n[data]\ndir = "var"\n[swarm]\ninstances_dir = "instances"\n'
    )
    rel = os.path.relpath(etc / "paper.toml", installed["cwd"])  # ../../.../etc/paper.toml
    proc = _run(installed["bin"], "check", "--offline", "--config", rel, cwd=installed["cwd"])
    assert proc.returncode == 0, proc.stderr
    assert f"data {(etc / 'var').resolve().as_posix()}, 1 swarm instances" in proc.stdout
    # a read-only command never creates the data directory: one clear line, exit 2
    proc = _run(installed["bin"], "status", "--config", rel, cwd=installed["cwd"])
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert not (etc / "var").exists()
    # a writing command creates the database from the shipped schema.sql, beside the config
    proc = _run(
        installed["bin"],
        "breaker",
        "trip",
        "--by",
        "op",
        "--reason",
        "first start: halted until checked",
        "--config",
        rel,
        cwd=installed["cwd"],
    )
    assert proc.returncode == 0, proc.stderr
    assert (etc / "var" / "trading.sqlite3").is_file()
    proc = _run(installed["bin"], "status", "--config", rel, cwd=installed["cwd"])
    assert proc.returncode == 3, proc.stderr  # read, and nothing is running: exit 3
    assert not (installed["cwd"] / "var").exists()


def test_default_swarm_and_prompt_are_the_installed_package_data(installed, tmp_path):
    (tmp_path / "minimal.toml").write_text('mode = "paper"\n')
    proc = _run(
        installed["bin"],
        "check",
        "--offline",
        "--config",
        tmp_path / "minimal.toml",
        cwd=installed["cwd"],
    )
    assert proc.returncode == 0, proc.stderr
    assert "3 swarm instances" in proc.stdout
    # the code, its data and the example configs all come from the venv, not the repository
    code = (
        "import runtime;"
        "from runtime.config import DEFAULT_TEMPLATES_DIR, example_config;"
        "from runtime.llm_commander import PROMPT;"
        "print(runtime.__file__, DEFAULT_TEMPLATES_DIR, PROMPT, example_config('demo.toml'))"
    )
    proc = _run(installed["venv"] / "bin" / "python", "-c", code, cwd=installed["cwd"])
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.split():
        path = Path(line)
        assert path.is_relative_to(installed["venv"]) and path.exists(), line


def test_the_wheel_ships_every_data_file_of_the_source_tree(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    missing = []
    for source, target in SHIPPED.items():
        for path in (ROOT / source).rglob("*"):
            rel = path.relative_to(ROOT / source)
            if path.is_dir() or "__pycache__" in rel.parts or rel.parts[0] == "var":
                continue
            if f"{target}/{rel.as_posix()}" not in names:
                missing.append(f"{source}/{rel.as_posix()}")
    assert not missing, f"not in the wheel (pyproject.toml [tool.setuptools]): {missing}"
    entry_points = zipfile.ZipFile(installed["wheel"]).read(
        next(n for n in names if n.endswith("entry_points.txt"))
    )
    assert b"ib-swarm = runtime.cli:main" in entry_points


def test_pyproject_pins_are_the_runtime_pins_of_requirements_txt():
    """requirements.txt is what CI installs; pyproject.toml is what `pip install .` installs.
    Its '# Runtime' part (up to the next comment line) must be the same set of pins."""
    runtime_part = re.search(r"(?ms)^# Runtime\n(.*?)^#", (ROOT / "requirements.txt").read_text())
    assert runtime_part, "requirements.txt has no '# Runtime' section"
    required = {line.strip() for line in runtime_part.group(1).splitlines() if line.strip()}
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert set(declared) == required
