"""Every shipped recipe loads and validates; the Llama-3-SynE recipes say what the paper says."""
from __future__ import annotations

from pathlib import Path

import pytest

from cpt.config import load_recipe
from cpt.train.hooks import build_hook

RECIPES = sorted((Path(__file__).parents[1] / "recipes").rglob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_recipe_loads(path):
    recipe = load_recipe(path)
    for i, spec in enumerate(recipe.hooks):
        build_hook(spec.use, dict(spec.options), f"hooks[{i}]")


def _shares(recipe) -> dict[str, float]:
    total = sum(s.weight for s in recipe.data.streams)
    out: dict[str, float] = {}
    for s in recipe.data.streams:
        group = s.name.split("_")[0]
        out[group] = out.get(group, 0.0) + s.weight / total
    return out


def test_llama3_synE_stages():
    root = Path(__file__).parents[1] / "recipes" / "llama3_synE"
    s1 = load_recipe(root / "stage1_bilingual.yaml")
    s2 = load_recipe(root / "stage2_synthetic.yaml")
    assert _shares(s1) == pytest.approx({"zh": 0.2, "en": 0.8})
    assert _shares(s2) == pytest.approx({"zh": 0.1, "en": 0.7, "syn": 0.2})
    assert s1.training.train_tokens == 92_500_000_000 and s2.training.train_tokens == 7_500_000_000
    assert s1.training.seq_length == 8192 and s1.training.precision == "bf16"
    assert (s1.optimizer.adam_beta1, s1.optimizer.adam_beta2, s1.optimizer.clip_grad) == (0.9, 0.95, 1.0)
    sch = s1.schedule
    assert (sch.lr_init, sch.lr_max, sch.warmup_tokens) == (1e-7, 1e-5, 10_000_000_000)
    assert s2.schedule == s1.schedule  # one WSD over both stages: stage 2 carries the position on
    assert all(s.order == "ppl_asc" for s in s1.data.streams if s.name.startswith("zh_"))
    assert len([s for s in s1.data.streams if s.name.startswith("zh_")]) == 11
    assert [h.use for h in s1.hooks] == ["topic_ppl"]
    # stage 2 continues stage 1: it loads stage 1's checkpoints under another stage name
    assert s2.training.load == f"{s1.training.output_dir}/checkpoints" and s2.training.stage != s1.training.stage
    # the 22 topic streams are the same streams in both stages (so they carry on)
    common = {s.name: s for s in s1.data.streams}
    for s in s2.data.streams:
        if s.name in common:
            a = common[s.name]
            assert (s.prefixes, s.filter, s.order, s.seed) == (a.prefixes, a.filter, a.order, a.seed)
    assert s1.check_world_size(64) == 32
