"""A stage's budget in passes over a stream (`training.train_passes`), resolved into tokens at start.

The promise: the stage reads that stream's training documents N times at its share (whole steps,
rounded down: never a second epoch, less than one step of it unread), for any tokenizer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cpt.config import RecipeError, recipe_from_dict
from train_fixtures import stream_recipe, write_lang_shards

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shard(tmp_path_factory) -> str:
    return write_lang_shards(tmp_path_factory.mktemp("lang"))


def _pass_recipe(prefix: str, out: Path, passes: float = 1.0, weights=(0.7, 0.3), **training) -> dict:
    rd = stream_recipe(prefix, out, data={"valid_holdout": 0.25})
    for stream, w in zip(rd["data"]["streams"], weights):
        stream["weight"] = w
    rd["training"].update({"train_tokens": None, "train_passes": {"zh": passes}, **training})
    rd["schedule"].update({"warmup_tokens": 512, "decay_tokens": 1024, "stable_tokens": None})
    return rd


def _zh_reads(recipe) -> tuple[int, int]:
    """(zh samples the resolved budget draws, zh samples of one epoch), by drawing the stage's samples."""
    from cpt.train.budget import train_samples
    from cpt.train.run import build_training_data

    data = build_training_data(recipe)
    try:
        blended = data.train
        stream_ids, within = blended.sample_ids(np.arange(train_samples(recipe), dtype=np.int64))
        k = blended.stream_names.index("zh")
        zh = blended.streams[k]
        assert int(within[stream_ids == k].max()) < zh.config.samples_in(zh.tokens_per_epoch)  # never epoch 2
        return int((stream_ids == k).sum()), zh.config.samples_in(zh.tokens_per_epoch)
    finally:
        data.close()


def test_one_pass_of_the_only_stream_reads_its_epoch_less_than_a_step(shard, tmp_path):
    from cpt.train.budget import resolve_budget

    recipe, budget = resolve_budget(recipe_from_dict(_pass_recipe(shard, tmp_path / "run", weights=(0.0, 1.0))))
    t = recipe.training
    assert t.train_passes == {} and t.train_tokens == budget.steps * t.global_batch_size * t.seq_length
    read, epoch = _zh_reads(recipe)
    assert budget.epoch_samples == epoch and read == budget.steps * t.global_batch_size
    assert epoch - t.global_batch_size < read <= epoch


@pytest.mark.parametrize("passes", [0.5, 2.0])
def test_passes_at_a_share_of_a_mixture(shard, tmp_path, passes):
    from cpt.train.budget import resolve_budget

    recipe, budget = resolve_budget(recipe_from_dict(_pass_recipe(shard, tmp_path / "run", passes)))
    t = recipe.training
    assert budget.share == pytest.approx(0.3)
    expected = int(passes * budget.epoch_samples / 0.3) // t.global_batch_size
    assert abs(budget.steps - expected) <= 1 and budget.steps > 1
    if passes < 1:  # the Blender's draws give the stream its share of the stage's samples
        read, epoch = _zh_reads(recipe)
        assert abs(read - passes * epoch) <= 0.3 * t.global_batch_size + 1


def test_the_count_from_the_index_cache_equals_the_count_from_the_documents(shard, tmp_path, monkeypatch):
    from cpt.train import stream_data
    from cpt.train.budget import resolve_budget

    rd = _pass_recipe(shard, tmp_path / "run")
    _, uncached = resolve_budget(recipe_from_dict(rd))
    recipe = recipe_from_dict(rd)
    stream_data.build_streams(recipe.data.streams, 64, "train", 0.25, 0, cache_dir=str(tmp_path / "run" / "data_cache"))

    def no_stream(*args, **kwargs):
        raise AssertionError("the cached count builds no stream")

    monkeypatch.setattr(stream_data, "Stream", no_stream)
    assert resolve_budget(recipe)[1] == uncached


def test_build_cache_counts_a_pass_budget_and_caches_what_the_run_reads(shard, tmp_path):
    """`cpt data build-cache` says the budget before the run, and the run then finds every entry."""
    from cpt.commands.data import build_cache
    from cpt.train.budget import resolve_budget
    from cpt.train.run import build_training_data

    rd = _pass_recipe(shard, tmp_path / "run")
    summary = build_cache(recipe_from_dict(rd))
    recipe, budget = resolve_budget(recipe_from_dict(rd))
    assert summary["budget"] == budget.line() and summary["train_tokens"] == recipe.training.train_tokens
    assert summary["train_samples"] == budget.steps * recipe.training.global_batch_size
    data = build_training_data(recipe)
    try:
        assert all(s.cache_hit for s in data.train.streams)
    finally:
        data.close()


def test_cpt_data_build_cache_says_a_budget_error_in_one_line(shard, tmp_path, capsys):
    from cpt.cli import main

    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(json.dumps(_pass_recipe(shard, tmp_path / "run", passes=0.001)))
    assert main(["data", "build-cache", str(recipe_file)]) == 2
    assert capsys.readouterr().err.startswith("recipe error: training.train_passes.zh: 0.001 pass(es) of ")


def test_a_budget_in_tokens_is_left_alone(shard, tmp_path):
    from cpt.train.budget import resolve_budget

    rd = stream_recipe(shard, tmp_path / "run")
    recipe = recipe_from_dict(rd)
    assert resolve_budget(recipe) == (recipe, None)


def test_budget_errors_name_the_key(shard, tmp_path):
    from cpt.train.budget import resolve_budget, train_samples

    def error(rd) -> str:
        with pytest.raises(RecipeError) as info:
            recipe_from_dict(rd)
        return str(info.value)

    rd = _pass_recipe(shard, tmp_path / "run")
    rd["training"]["train_tokens"] = 4096
    assert error(rd).startswith("training.train_tokens: give the budget once") and "both are set" in error(rd)
    rd["training"].update(train_tokens=None, train_passes={})
    assert "neither is set" in error(rd)
    rd["training"]["train_passes"] = {"zh": 1, "en": 1}
    assert error(rd) == "training.train_passes: one stream, got ['en', 'zh']"
    rd["training"]["train_passes"] = {"zh": 0}
    assert error(rd) == "training.train_passes.zh: must be a number > 0, got 0"
    rd["training"]["train_passes"] = {"fr": 1}
    assert error(rd) == "training.train_passes.fr: names no training stream of data.streams"
    rd = _pass_recipe(shard, tmp_path / "run", weights=(1.0, 0.0))
    assert error(rd) == "training.train_passes.zh: is a stream of weight 0 (it is never read)"
    # a pass shorter than one step
    rd = _pass_recipe(shard, tmp_path / "run", passes=0.001)
    with pytest.raises(RecipeError, match=r"^training.train_passes.zh: 0.001 pass\(es\) of \d+ samples at share 0.3 "
                                          r"is less than one step"):
        resolve_budget(recipe_from_dict(rd))
    # the trainer never guesses: an unresolved budget is refused
    with pytest.raises(ValueError, match="not resolved yet"):
        train_samples(recipe_from_dict(_pass_recipe(shard, tmp_path / "run")))


def test_stable_null_ends_the_decay_with_the_stages_last_step(shard, tmp_path):
    """The schedule counts tokens since step 0: a later stage's rest starts where that stage starts."""
    from cpt.train.budget import resolve_schedule
    from cpt.train.schedule import phase, wsd_lr

    recipe = recipe_from_dict(_pass_recipe(shard, tmp_path / "run"))
    assert recipe.schedule.stable_tokens is None  # left for the stage start
    for start in (0, 5120):
        s = resolve_schedule(recipe, start, 8192).schedule
        assert s.stable_tokens == start + 8192 - 512 - 1024
        assert phase(s, start + 8192 - 1) == "decay" and phase(s, start + 8192) == "done"
        assert wsd_lr(s, start + 8192) == s.lr_min
    fixed = recipe_from_dict(stream_recipe(shard, tmp_path / "run"))
    assert resolve_schedule(fixed, 0, 8192) is fixed
    with pytest.raises(RecipeError, match=r"^schedule.stable_tokens: null \(the rest of the stage\) but warmup_tokens "
                                          r"512 \+ decay_tokens 1024 end after the stage's last token \(0 \+ 1024\)"):
        resolve_schedule(recipe, 0, 1024)


@pytest.mark.slow
def test_cpt_train_with_a_pass_budget_records_what_it_resolved(shard, tmp_path):
    rd = _pass_recipe(shard, tmp_path / "run", weights=(0.0, 1.0), eval_every=0)
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(json.dumps(rd))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    check = subprocess.run([sys.executable, "-m", "cpt.cli", "train", str(recipe_file), "--check"],
                           capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert check.returncode == 0 and "budget: 1 pass(es) over stream 'zh'" in check.stdout, check.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-m", "cpt.cli", "train", str(recipe_file)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    budget = next(e for e in events if e["kind"] == "event" and "budget" in e)["budget"]
    ran = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert ran["training"]["train_passes"] == {} and ran["training"]["train_tokens"] == budget["train_tokens"]
    assert ran["schedule"]["stable_tokens"] == budget["train_tokens"] - 512 - 1024
    steps = [e["step"] for e in events if e["kind"] == "train"]
    assert steps[-1] == budget["steps"] and f"step {budget['steps']}/{budget['steps']}" in proc.stdout

