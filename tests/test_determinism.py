"""training.deterministic: every kernel on its deterministic path (megatron_ext.determinism), the
settings process-wide while an engine runs and put back when it closes."""
from __future__ import annotations

import json
import os

import torch

from megatron_ext import determinism


def test_enable_sets_each_kernel_family_and_restore_puts_the_process_back(monkeypatch):
    monkeypatch.setenv("NCCL_ALGO", "Tree")  # the launcher's choice is kept
    monkeypatch.setenv("NVTE_ALLOW_NONDETERMINISTIC_ALGO", "1")  # ... but TE must be told 0
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    previous = determinism.enable()
    try:
        assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and os.environ["NCCL_ALGO"] == "Tree"
        assert os.environ["NVTE_ALLOW_NONDETERMINISTIC_ALGO"] == "0"
    finally:
        determinism.restore(previous)
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark) == before
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ and os.environ["NCCL_ALGO"] == "Tree"
    assert os.environ["NVTE_ALLOW_NONDETERMINISTIC_ALGO"] == "1"


def test_a_deterministic_run_trains_in_strict_mode_and_says_so(tmp_path):
    """The real engine with training.deterministic: every op of a training step and a validation has
    a deterministic implementation (strict mode raises otherwise), megatron's embedding takes its
    deterministic path, the first line says so, and closing the engine turns it off again."""
    from train_fixtures import tiny_recipe, write_byte_shards

    from cpt.config import recipe_from_dict
    from cpt.train.loop import Trainer
    from cpt.train.run import build_training_data
    from megatron_ext.engine import MegatronEngine

    train, valid = write_byte_shards(tmp_path / "shards")
    rd = tiny_recipe(train, valid, tmp_path / "run", training={"train_tokens": 64 * 8 * 2, "eval_every": 1,
                                                               "eval_batches": 1, "deterministic": True})
    recipe = recipe_from_dict(rd)
    engine = MegatronEngine(recipe)
    try:
        assert torch.are_deterministic_algorithms_enabled()
        assert engine.model.module.config.deterministic_mode
        data = build_training_data(recipe)
        trainer = Trainer(recipe, engine, data.train, data.valid)
        trainer.train()
        trainer.logger.close()
    finally:
        engine.close()
    assert not torch.are_deterministic_algorithms_enabled()
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "; deterministic kernels; " in records[0]["message"] and records[0]["engine"]["deterministic"]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [1, 2]
