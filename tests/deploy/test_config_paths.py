"""Relative paths in a config file resolve against the file's directory, not the working
directory; left out, the swarm's instances and templates are the ones shipped with the package."""

import os
from pathlib import Path

import pytest

from runtime.config import (
    DEFAULT_INSTANCES_DIR,
    DEFAULT_TEMPLATES_DIR,
    ConfigError,
    example_config,
    load_config,
    parse_config,
)
from skills.swarm_core import load_instances

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run the test from a directory that has nothing to do with the config."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_relative_paths_resolve_against_the_config_files_directory(tmp_path, elsewhere):
    etc = tmp_path / "etc" / "ib-swarm"
    etc.mkdir(parents=True)
    (etc / "paper.toml").write_text(
        'mode = "paper"\n[data]\ndir = "var/paper"\n'
        '[swarm]\ninstances_dir = "instances"\ntemplates_dir = "../templates"\n'
    )
    cfg = load_config(etc / "paper.toml")
    assert cfg.data_dir == etc / "var" / "paper"
    assert cfg.swarm.instances_dir == (etc / "instances").as_posix()
    assert cfg.swarm.templates_dir == (tmp_path / "etc" / "templates").as_posix()
    # the same answer through a relative --config path given from another directory
    rel = os.path.relpath(etc / "paper.toml", elsewhere)
    assert load_config(rel) == cfg


def test_defaults_are_the_files_directory_and_the_shipped_swarm(tmp_path, elsewhere):
    (tmp_path / "minimal.toml").write_text('mode = "paper"\n')
    cfg = load_config(tmp_path / "minimal.toml")
    assert cfg.data_dir == tmp_path / "data_lake" / "var"
    assert Path(cfg.swarm.instances_dir) == DEFAULT_INSTANCES_DIR
    assert Path(cfg.swarm.templates_dir) == DEFAULT_TEMPLATES_DIR
    instances, _ = load_instances(
        cfg.swarm.instances_dir, cfg.swarm.templates_dir, cfg.risk.model_dump()
    )
    assert len(instances) >= 3


def test_absolute_paths_are_kept(tmp_path, elsewhere):
    data = tmp_path / "somewhere" / "data"
    (tmp_path / "abs.toml").write_text(f'mode = "paper"\n[data]\ndir = "{data.as_posix()}"\n')
    assert load_config(tmp_path / "abs.toml").data_dir == data


def test_the_shipped_paper_config_keeps_the_repositorys_data_dir(elsewhere):
    cfg = load_config(example_config("paper.toml"))
    assert cfg.data_dir == ROOT / "data_lake" / "var"
    assert Path(cfg.swarm.instances_dir) == DEFAULT_INSTANCES_DIR


def test_parse_config_without_a_file_leaves_paths_as_given():
    cfg = parse_config({"mode": "paper", "data": {"dir": "rel"}})
    assert cfg.data.dir == "rel"


def test_a_bad_path_value_is_still_named_by_its_key(tmp_path):
    (tmp_path / "bad.toml").write_text('mode = "paper"\n[data]\ndir = 5\n')
    with pytest.raises(ConfigError, match=r"data\.dir: Input should be a valid string"):
        load_config(tmp_path / "bad.toml")
