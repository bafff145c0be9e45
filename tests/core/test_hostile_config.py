"""A config file is untrusted input, and so is the file it ``extends``: a config may extend a
preset (``KIND:PRESET``) or a ``.toml`` file in its own folder or below it, never one
elsewhere (an absolute path, a ``..`` climb, a symbolic link leading out), as an ONNX
model's external data must lie in the model's folder. Found by hostile review: ``extends =
"/any/where/else.toml"`` was read and merged, its values then copied into ``target.json``
of every compile directory made with it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import guard
from hwmap import ConfigError
from hwmap import registry as _registry
from hwmap.config import load_target


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``outside.toml`` beside the folder ``cfg/`` that holds the configs under test, and
    ``cfg/base/mid.toml`` inside it."""
    (tmp_path / "outside.toml").write_text('extends = "toy_cpu:default"\n[hardware]\nmacs_per_cycle = 3\n')
    (tmp_path / "cfg" / "base").mkdir(parents=True)
    (tmp_path / "cfg" / "base" / "mid.toml").write_text('extends = "toy_cpu:default"\n')
    return tmp_path


@pytest.mark.parametrize("ref", ["{root}/outside.toml", "../outside.toml", "base/../../outside.toml",
                                 "link.toml", "base/link.toml"])
def test_extending_a_file_outside_the_config_s_folder_is_refused(tree: Path, toy_registry: _registry.Registry,
                                                                 ref: str) -> None:
    os.symlink(tree / "outside.toml", tree / "cfg" / "link.toml")
    os.symlink(tree / "outside.toml", tree / "cfg" / "base" / "link.toml")
    p = tree / "cfg" / "top.toml"
    p.write_text(f'extends = "{ref.format(root=tree)}"\n')
    with pytest.raises(ConfigError, match="outside the folder of the file extending it") as e:
        load_target(str(p))
    assert str(p) in str(e.value)


def test_through_the_command_line_it_is_one_line_and_nothing_outside_is_opened(
        tree: Path, toy_registry: _registry.Registry) -> None:
    p = tree / "cfg" / "top.toml"
    p.write_text(f'extends = "{tree / "outside.toml"}"\n')
    run = guard.run_cli(["check", str(p)])
    assert run.code == 2, run.stderr
    assert "outside the folder" in run.error_line()
    assert guard.outside(run.opened, [tree / "cfg"]) == []


def test_extending_a_file_in_the_folder_or_below_still_works(tree: Path, toy_registry: _registry.Registry) -> None:
    p = tree / "cfg" / "top.toml"
    p.write_text('extends = "base/mid.toml"\n[hardware]\nmacs_per_cycle = 2\n')
    assert load_target(str(p)).config.hardware.macs_per_cycle == 2  # type: ignore[attr-defined]
    os.symlink(tree / "cfg" / "base" / "mid.toml", tree / "cfg" / "inner.toml")  # a link that stays inside
    p.write_text('extends = "inner.toml"\n')
    assert load_target(str(p)).kind == "toy_cpu"
