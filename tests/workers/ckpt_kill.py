"""Worker for tests/test_checkpoint_retention.py: saves checkpoints 1, 2, 3, ... with
CheckpointManager(keep_last=2) and blocks at one chosen point so the test can SIGKILL it there.

Each checkpoint holds SHARDS files whose bytes encode the step (a stand-in for an engine's shards
that the test can verify completely). At the chosen point the worker writes OUT/at_kill_point
and sleeps; the test kills it with SIGKILL (no cleanup, no finally blocks, like a node failure).

    python ckpt_kill.py ROOT POINT STEP
POINT: shards     while writing step STEP's shards (half of them written)
       rename     after STEP's COMPLETE marker, before its folder is renamed into place
       latest     after STEP's folder is renamed, before `latest` is replaced
       deleting   after a doomed checkpoint was renamed to .deleting, before it is removed
       removing   half-way through removing a doomed checkpoint's files
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cpt.train import checkpoint  # noqa: E402

SHARDS = 8


def shard_bytes(step: int, i: int) -> bytes:
    return f"step {step} shard {i}\n".encode() * 4096


def block(out: Path) -> None:
    (out / "at_kill_point").write_text(str(os.getpid()))
    while True:
        time.sleep(60)


def main(root: Path, point: str, kill_step: int) -> None:
    out = root.parent
    real_replace, real_rmtree = os.replace, shutil.rmtree

    def replace(src, dst):
        src, dst = Path(src), Path(dst)
        if point == "rename" and dst.name == checkpoint.step_dir_name(kill_step):
            block(out)
        if point == "deleting" and dst.name.endswith(".deleting") and current == kill_step:
            real_replace(src, dst)
            block(out)
        if point == "latest" and dst.name == checkpoint.LATEST and current == kill_step:
            block(out)
        return real_replace(src, dst)

    def rmtree(path, *args, **kwargs):
        path = Path(path)
        if point == "removing" and path.name.endswith(".deleting") and current == kill_step:
            files = sorted(p for p in path.rglob("*") if p.is_file())
            for f in files[: len(files) // 2]:
                f.unlink()
            block(out)
        return real_rmtree(path, *args, **kwargs)

    checkpoint.os.replace = replace  # cpt.io's renames go through the same os module
    checkpoint.shutil.rmtree = rmtree
    manager = checkpoint.CheckpointManager(root, is_writer=True, barrier=lambda: None, keep_last=2)

    def write(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(SHARDS):
            if point == "shards" and current == kill_step and i == SHARDS // 2:
                block(out)
            (folder / f"shard_{i}.bin").write_bytes(shard_bytes(current, i))

    for current in range(1, kill_step + 1):
        manager.save(current, write)
    (out / "finished").write_text("no kill point reached")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
