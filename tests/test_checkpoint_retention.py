"""Checkpoint retention (keep_last / keep_every, never the newest, never one a reader holds) and
kill tests: a process SIGKILLed during a save or during a deletion leaves the newest complete
checkpoint loadable, whole, and the next save cleans up after it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpt.train.checkpoint import (
    COMPLETE, CheckpointManager, complete_checkpoints, find_latest, is_held, reading, step_dir_name,
)

WORKER = Path(__file__).parent / "workers" / "ckpt_kill.py"
sys.path.insert(0, str(WORKER.parent))
from ckpt_kill import SHARDS, shard_bytes  # noqa: E402


def _write(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trainer_state.json").write_text("{}")


def _steps(root: Path) -> list[int]:
    return [int(p.name[5:]) for p in complete_checkpoints(root)]


def test_keep_last_and_keep_every(tmp_path):
    root = tmp_path / "ckpt"
    m = CheckpointManager(root, is_writer=True, barrier=lambda: None, keep_last=2, keep_every=4)
    for step in range(1, 10):
        m.save(step, _write)
    assert _steps(root) == [4, 8, 9]
    m.save(10, _write)
    assert _steps(root) == [4, 8, 9, 10]
    assert find_latest(root).name == step_dir_name(10)
    assert not [p for p in root.iterdir() if p.name.endswith((".partial", ".deleting"))]


def test_keep_all_by_default_and_newest_always_kept(tmp_path):
    root = tmp_path / "ckpt"
    m = CheckpointManager(root, is_writer=True, barrier=lambda: None)
    for step in (1, 2, 3):
        m.save(step, _write)
    assert _steps(root) == [1, 2, 3]
    m.keep_last = 1
    assert [p.name for p in m.apply_retention()] == [step_dir_name(1), step_dir_name(2)]
    assert _steps(root) == [3]


def test_a_checkpoint_a_reader_holds_is_not_deleted(tmp_path):
    root = tmp_path / "ckpt"
    m = CheckpointManager(root, is_writer=True, barrier=lambda: None, keep_last=1)
    held = m.save(1, _write)
    with reading(held):
        assert is_held(held)
        m.save(2, _write)
        m.save(3, _write)
        assert _steps(root) == [1, 3]
    assert not is_held(held)
    m.save(4, _write)
    assert _steps(root) == [4]


def test_a_dead_readers_lease_does_not_hold(tmp_path):
    import socket

    folder = tmp_path / step_dir_name(1)
    _write(folder)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / ".readers").mkdir()
    (folder / ".readers" / f"{socket.gethostname()}-{dead.pid}").touch()
    assert not is_held(folder)
    (folder / ".readers" / f"{socket.gethostname()}-{os.getpid()}").touch()
    assert is_held(folder)


def test_only_exact_step_folders_with_complete_are_checkpoints(tmp_path):
    root = tmp_path / "ckpt"
    for name in ("step_00000005", "step_00000007.partial", "step_00000009.deleting"):
        _write(root / name)
        (root / name / COMPLETE).write_text("x\n")
    assert _steps(root) == [5]
    (root / "latest").write_text("step_00000009.deleting\n")
    assert find_latest(root).name == "step_00000005"


def _kill_at(tmp_path: Path, point: str, step: int) -> Path:
    root = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, str(WORKER), str(root), point, str(step)], start_new_session=True)
    flag = tmp_path / "at_kill_point"
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert proc.poll() is None, f"worker exited ({proc.returncode}) before reaching {point}"
        assert time.monotonic() < deadline, f"worker did not reach {point}"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    return root


def _assert_whole(folder: Path, step: int) -> None:
    assert (folder / COMPLETE).read_text() == f"{step}\n"
    for i in range(SHARDS):
        assert (folder / f"shard_{i}.bin").read_bytes() == shard_bytes(step, i)


@pytest.mark.parametrize("point, step, newest", [
    ("shards", 4, 3),     # during a save: shards half written
    ("rename", 4, 3),     # COMPLETE written inside the .partial folder, not yet renamed
    ("latest", 4, 4),     # renamed into place, `latest` still names step 3
    ("deleting", 4, 4),   # step 2 renamed to .deleting, not removed yet
    ("removing", 4, 4),   # step 2 half removed
])
def test_killed_process_leaves_newest_complete_checkpoint_loadable(tmp_path, point, step, newest):
    root = _kill_at(tmp_path, point, step)
    latest = find_latest(root)
    assert latest.name == step_dir_name(newest)
    _assert_whole(latest, newest)
    for folder in complete_checkpoints(root):  # every folder that counts as a checkpoint is whole
        _assert_whole(folder, int(folder.name[5:]))
    # the restarted run's next save clears the debris and applies retention
    m = CheckpointManager(root, is_writer=True, barrier=lambda: None, keep_last=2)
    m.save(newest + 1, _write)
    assert not [p for p in root.iterdir() if p.name.endswith((".partial", ".deleting"))]
    assert _steps(root) == [newest, newest + 1]
