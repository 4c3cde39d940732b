"""Recipe schema: errors name the key; overrides; the public surface is frozen."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cpt.config import Recipe, RecipeError, load_recipe, recipe_from_dict, schema_keys

BASE = {
    "model": dict(num_layers=4, hidden_size=64, ffn_hidden_size=176, num_attention_heads=4,
                  num_query_groups=2, vocab_size=257, max_position_embeddings=128),
    "training": dict(seq_length=64, micro_batch_size=2, global_batch_size=8, train_tokens=4096),
}


def _with(**changes) -> dict:
    import copy

    d = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        d.setdefault(section, {})[key] = value
    return d


def test_valid_recipe_loads_with_defaults():
    r = recipe_from_dict(BASE)
    assert r.optimizer.adam_beta1 == 0.9 and r.optimizer.adam_beta2 == 0.95
    assert r.optimizer.clip_grad == 1.0
    assert r.check_world_size(1) == 1


@pytest.mark.parametrize(
    "changes, key_in_message",
    [
        ({"training__seq_len": 64}, "training.seq_len: unknown key (did you mean 'seq_length'?)"),
        ({"training__seq_length": "long"}, "training.seq_length: expected an integer"),
        ({"training__precision": "fp8"}, "training.precision: expected one of"),
        ({"parallel__sequence_parallel": True}, "parallel.sequence_parallel: needs"),
        ({"model__num_query_groups": 3}, "model.num_query_groups"),
        ({"training__global_batch_size": 7}, "training.global_batch_size: 7 is not a multiple"),
        ({"schedule__lr_min": 1.0}, "schedule.lr_min"),
        ({"optimizer__adam_beta2": 1.5}, "optimizer.adam_beta2"),
        ({"data__blend": [["only-a-prefix"]]}, "data.blend[0]"),
        ({"data__streams": [{"name": "a", "prefixes": ["p"], "weight": 1, "order": "random"}]},
         "data.streams[0].order: expected one of"),
        ({"data__streams": [{"name": "a", "prefixes": [], "weight": 1}]}, "data.streams[0].prefixes"),
        ({"data__streams": [{"name": "a", "prefixes": ["p"], "weight": 1}], "data__blend": [["p", 1.0]]},
         "data.streams: and data.blend are alternatives"),
        ({"training__seq_length": 4096}, "exceeds model.max_position_embeddings"),
        ({"data__blend": [["p", 1.0]], "data__valid_holdout": 0.1}, "data.valid_holdout: needs data.streams"),
        ({"data__streams": [{"name": "a", "prefixes": ["p"], "weight": 1, "valid_holdout": 1.0}]},
         "data.streams[0].valid_holdout: must be in [0, 1) or null"),
        ({"data__streams": [{"name": "a", "prefixes": ["p"], "weight": 1, "ppl_bands": 4}]},
         "data.streams[0].ppl_bands: 4 bands need order ppl_asc or ppl_desc"),
        ({"data__streams": [{"name": "a", "prefixes": ["p"], "weight": 1, "order": "ppl_asc", "ppl_bands": 0}]},
         "data.streams[0].ppl_bands: must be >= 1"),
    ],
)
def test_recipe_errors_name_the_key(changes, key_in_message):
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(_with(**changes))
    assert key_in_message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_required_key():
    d = _with()
    del d["model"]["hidden_size"]
    with pytest.raises(RecipeError, match="model.hidden_size: required key is missing"):
        recipe_from_dict(d)


@pytest.mark.parametrize(
    "parallel, world, message",
    [
        ({"tensor_model_parallel_size": 2, "pipeline_model_parallel_size": 2}, 2, "does not divide the world size 2"),
        ({"tensor_model_parallel_size": 8}, 8, "does not divide model.num_attention_heads=4"),
        ({"pipeline_model_parallel_size": 3}, 3, "PP=3 does not divide model.num_layers=4"),
        ({}, 3, "x data-parallel size 3"),
    ],
)
def test_impossible_parallel_sizes(parallel, world, message):
    r = recipe_from_dict(_with(**{f"parallel__{k}": v for k, v in parallel.items()}))
    with pytest.raises(RecipeError, match=message):
        r.check_world_size(world)


def test_overrides_apply_in_order(tmp_path: Path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(BASE))
    r = load_recipe(path, ["training.seq_length=32", "schedule.lr_max=2e-4", "training.seq_length=16"])
    assert r.training.seq_length == 16 and r.schedule.lr_max == 2e-4
    with pytest.raises(RecipeError, match="training.bogus: unknown key"):
        load_recipe(path, ["training.bogus=1"])


def test_cli_recipe_error_is_one_line(tmp_path: Path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_with(training__seq_len=3)))
    proc = subprocess.run(
        [sys.executable, "-m", "cpt.cli", "train", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "recipe error: training.seq_len: unknown key (did you mean 'seq_length'?)"
    ]
    env_world = subprocess.run(
        [sys.executable, "-m", "cpt.cli", "train", str(path.with_name("missing.yaml"))],
        capture_output=True, text=True, timeout=60,
    )
    assert env_world.returncode == 2 and "recipe file not found" in env_world.stderr


# Changing this list changes the public recipe surface: do it deliberately.
FROZEN_KEYS = """
model.num_layers model.hidden_size model.ffn_hidden_size model.num_attention_heads model.num_query_groups
model.vocab_size model.max_position_embeddings model.rotary_base model.rope_scaling.factor
model.rope_scaling.low_freq_factor model.rope_scaling.high_freq_factor
model.rope_scaling.original_max_position_embeddings model.norm_epsilon model.tie_embeddings model.qkv_bias
model.init_method_std model.make_vocab_size_divisible_by model.attention_backend
parallel.tensor_model_parallel_size parallel.pipeline_model_parallel_size parallel.sequence_parallel
parallel.use_distributed_optimizer parallel.optimizer_checkpoint parallel.overlap_grad_reduce parallel.recompute
optimizer.weight_decay optimizer.adam_beta1 optimizer.adam_beta2 optimizer.adam_eps optimizer.clip_grad
schedule.lr_init schedule.lr_max schedule.lr_min schedule.warmup_tokens schedule.stable_tokens
schedule.decay_tokens schedule.decay_style
data.blend data.streams.name data.streams.prefixes data.streams.weight data.streams.filter
data.streams.order data.streams.seed data.streams.ppl_bands data.streams.on_exhausted data.streams.valid_holdout data.valid_blend data.reset_position_ids data.reset_attention_mask data.eod_mask_loss
data.eod_token_id data.num_workers data.valid_holdout data.valid_holdout_seed data.cache_dir
training.output_dir training.stage training.seed training.seq_length training.micro_batch_size training.global_batch_size
training.train_tokens training.train_passes training.precision training.nan_policy training.max_skipped_steps
training.log_every
training.eval_every training.eval_at_start training.eval_batches training.eval_batches_per_stream training.save_every
training.keep_last training.keep_every training.fully_parallel_load training.device training.deterministic training.load
training.tensorboard
hooks.use hooks.options hooks.name
""".split()


def test_schema_keys_are_frozen():
    assert schema_keys(Recipe) == FROZEN_KEYS


def test_cli_commands_are_frozen():
    from cpt.cli import COMMANDS

    assert {"train", "demo", "data"} <= set(COMMANDS)
