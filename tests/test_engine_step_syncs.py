"""One training step reads its scalars from the device once: the loss sum, the token count and the
fused finite check of all gradients travel in one all-reduce and one device-to-host transfer
(megatron's gradient clipping reads its norm itself, inside optimizer.step)."""
from __future__ import annotations

import sys
from collections import Counter

import torch

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy")


def _count_engine_reads(monkeypatch) -> Counter:
    counts: Counter = Counter()
    for name in READS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _name=name, _original=original, **kwargs):
            if sys._getframe(1).f_globals.get("__name__") == "megatron_ext.engine":
                counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return counts


def test_one_host_transfer_per_step_and_nan_still_detected(tmp_path, monkeypatch):
    import numpy as np

    from train_fixtures import tiny_recipe, write_byte_shards

    from cpt.config import recipe_from_dict
    from cpt.train.run import build_training_data
    from megatron_ext.engine import MegatronEngine

    train, _ = write_byte_shards(tmp_path / "shards")
    recipe = recipe_from_dict(tiny_recipe(train, None, tmp_path / "run", training={"global_batch_size": 4}))
    engine = MegatronEngine(recipe)
    try:
        data = build_training_data(recipe).train
        data.prepare_step(0, 4)
        batches = [data.fetch(np.arange(0, 2)), data.fetch(np.arange(2, 4))]
        counts = _count_engine_reads(monkeypatch)
        result = engine.train_step(iter(batches), 2, lr=1e-3)
        assert not result.skipped and result.tokens > 0 and np.isfinite(result.loss)
        assert dict(counts) == {"tolist": 1}
        # the fused check still sees a NaN gradient: the step is skipped, parameters untouched
        monkeypatch.undo()
        poisoned = [dict(b) for b in batches]
        poisoned[1]["loss_mask"] = poisoned[1]["loss_mask"].astype(np.float32).copy()
        poisoned[1]["loss_mask"][0, 3] = np.nan
        before = [p.detach().clone() for p in engine.model.parameters()]
        result = engine.train_step(iter(poisoned), 2, lr=1e-3)
        assert result.skipped
        assert all(torch.equal(a, p) for a, p in zip(before, engine.model.parameters()))
    finally:
        engine.close()
