"""`cpt train` end to end as a user runs it: a recipe file, a run folder, a rerun that resumes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train_fixtures import tiny_recipe, write_byte_shards, write_recipe

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _cpt(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "cpt.cli", *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=REPO)


def test_cpt_train_writes_run_folder_and_resumes(tmp_path: Path):
    train, valid = write_byte_shards(tmp_path / "shards")
    run = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(
        train, valid, run, training={"train_tokens": 64 * 8 * 3, "eval_every": 0, "tensorboard": True}))
    first = _cpt("train", str(recipe))
    assert first.returncode == 0, first.stderr[-4000:]
    assert "step 3/3 | loss" in first.stdout and "eval step 3 | loss" in first.stdout
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == [1, 2, 3]
    assert all(r["tokens_per_s"] > 0 and r["lr"] > 0 for r in train_records)
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000003"
    assert any((run / "tensorboard").iterdir())
    # a longer budget on the same folder continues from step 3 instead of starting over
    second = _cpt("train", str(recipe), "training.train_tokens=2560")
    assert second.returncode == 0, second.stderr[-4000:]
    assert "resumed from" in second.stdout and "step 4/5" in second.stdout and "step 1/5" not in second.stdout
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000005"


def test_cpt_train_missing_shard_is_a_clear_error(tmp_path: Path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(str(tmp_path / "nope"), None, tmp_path / "run"))
    proc = _cpt("train", str(recipe))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"data error: data shard {tmp_path / 'nope'}.bin does not exist"
