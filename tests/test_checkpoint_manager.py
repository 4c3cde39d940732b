"""Checkpoint folders: temp name, COMPLETE marker, `latest`; incomplete folders are never resumed."""
from __future__ import annotations

from pathlib import Path

import pytest

from cpt.train.checkpoint import CheckpointManager, find_latest, resolve_load_path


def _manager(root: Path) -> CheckpointManager:
    return CheckpointManager(root, is_writer=True, barrier=lambda: None)


def _write(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trainer_state.json").write_text("{}")


def test_save_commits_and_points_latest(tmp_path: Path):
    m = _manager(tmp_path / "ckpt")
    first = m.save(10, _write)
    assert first.name == "step_00000010" and (first / "COMPLETE").is_file()
    second = m.save(20, _write)
    assert (tmp_path / "ckpt" / "latest").read_text().strip() == "step_00000020"
    assert m.latest() == second
    assert not list((tmp_path / "ckpt").glob("*.partial"))


def test_a_save_that_dies_is_ignored_and_cleaned(tmp_path: Path):
    m = _manager(tmp_path / "ckpt")
    good = m.save(10, _write)

    def dies(folder: Path) -> None:
        _write(folder)
        raise RuntimeError("killed mid-save")

    with pytest.raises(RuntimeError):
        m.save(20, dies)
    assert (tmp_path / "ckpt" / "step_00000020.partial").is_dir()
    assert m.latest() == good
    m.save(20, _write)  # the retry replaces the partial folder
    assert not (tmp_path / "ckpt" / "step_00000020.partial").exists()


def test_latest_pointer_to_incomplete_folder_falls_back(tmp_path: Path):
    root = tmp_path / "ckpt"
    m = _manager(root)
    m.save(10, _write)
    _write(root / "step_00000030")  # no COMPLETE marker
    (root / "latest").write_text("step_00000030\n")
    assert find_latest(root).name == "step_00000010"


def test_resolve_load_path(tmp_path: Path):
    run = tmp_path / "run"
    m = _manager(run / "checkpoints")
    saved = m.save(5, _write)
    assert resolve_load_path(run) == saved
    assert resolve_load_path(saved) == saved
    _write(run / "checkpoints" / "step_00000009")
    with pytest.raises(FileNotFoundError, match="incomplete"):
        resolve_load_path(run / "checkpoints" / "step_00000009")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        resolve_load_path(tmp_path / "nothing")
