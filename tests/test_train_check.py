"""`cpt train RECIPE --check --world-size N`: a cluster recipe validated on a laptop against the
world size it will run on (no torch distributed, no model is built)."""
from __future__ import annotations

from pathlib import Path

import pytest

from cpt.cli import main

REPO = Path(__file__).resolve().parents[1]
STAGE1 = str(REPO / "recipes" / "llama3_synE" / "stage1_bilingual.yaml")


def test_cluster_recipe_checks_against_its_world_size(capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["train", STAGE1, "--check", "--world-size", "16"]) == 0
    assert "recipe ok for world size 16: TP=2 PP=1 DP=8" in capsys.readouterr().out


def test_world_size_the_layout_does_not_divide_is_refused(capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["train", STAGE1, "--check", "--world-size", "3"]) == 2
    assert "parallel.tensor_model_parallel_size: TP=2" in capsys.readouterr().err
    # without --world-size the launcher's WORLD_SIZE (else 1) is the one checked
    assert main(["train", STAGE1, "--check"]) == 2
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert main(["train", STAGE1, "--check"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["--world-size", "8"], "--world-size goes with --check"),
    (["--check", "--world-size", "0"], "--world-size must be >= 1"),
])
def test_world_size_misuse_is_one_line(capsys, argv, message):
    assert main(["train", STAGE1, *argv]) == 2
    assert message in capsys.readouterr().err
