"""megatron-core engine on CPU/gloo: TP=2, PP=2, DP=2 (distributed optimizer) and TP=2 with sequence
parallelism under torchrun against the single-process run; TP=2 checkpoint loaded with TP=1;
bitwise resume; the non-finite loss policies.

Two launches in all (one torchrun with 2 processes, one plain process), because importing megatron
costs ~9 s per process.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from launch import launch, torchrun

from train_fixtures import write_byte_shards, write_lang_shards

pytestmark = pytest.mark.slow
WORKER = Path(__file__).parent / "workers" / "engine_cases.py"
# TP splits matmuls and DP splits the batch, so sums are ordered differently: equal to float32
# rounding, not bitwise. Measured here: < 2e-6 relative over 8 steps.
LOSS_RTOL = 1e-5


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    train, valid = write_byte_shards(root / "shards")
    streams = write_lang_shards(root / "lang")
    out = root / "out"
    common = ["--train", train, "--valid", valid, "--streams", streams, "--out", str(out)]
    launch([*torchrun(2), str(WORKER), *common, "tp2", "pp2", "dp2", "tp2sp",
             "streams_dp"])
    launch([sys.executable, str(WORKER), *common, "ref", "tp2_to_tp1", "tp2sp_to_tp1", "resume", "nan", "weights_only",
             "streams", "streams_resume_w0", "streams_resume_w2", "streams_exhausted"])

    def read(case):
        return json.loads((out / case / "result.json").read_text())

    return out, read, streams


def test_single_process_loss_decreases(results):
    _, read, _ = results
    losses = read("ref")["losses"]
    assert len(losses) == 8
    assert losses[-1] < losses[0] - 0.5, losses
    ev = read("ref")["eval"]
    assert ev[-1] < ev[0], ev


@pytest.mark.parametrize("case", ["tp2", "pp2", "dp2", "tp2sp"])
def test_parallel_layouts_match_single_process(results, case):
    _, read, _ = results
    ref, got = read("ref")["losses"], read(case)["losses"]
    assert got[-1] < got[0] - 0.5
    np.testing.assert_allclose(got, ref, rtol=LOSS_RTOL)
    np.testing.assert_allclose(read(case)["eval"], read("ref")["eval"], rtol=LOSS_RTOL)


def test_tp2_checkpoint_loads_with_tp1_same_logits(results):
    # optimizer included; the copy loaded lacks the form's record, like checkpoints saved before it
    out, read, _ = results
    assert read("tp2_to_tp1")["step"] == 8
    tp2 = np.load(out / "tp2" / "logits.npy")
    tp1 = np.load(out / "tp2_to_tp1" / "logits.npy")
    assert tp1.shape == (2, 32, 264)
    np.testing.assert_allclose(tp1, tp2, rtol=0, atol=2e-5)
    # and the TP=2 model's logits equal the single-process model trained the same way
    np.testing.assert_allclose(np.load(out / "ref" / "logits.npy"), tp2, rtol=0, atol=1e-4)


def test_a_dp_reshardable_optimizer_is_refused_under_another_tp_and_its_weights_still_load(results):
    out, read, _ = results
    saved = {case: json.loads((out / case / "run" / "checkpoints" / "step_00000008" / "trainer_state.json")
                              .read_text())["optimizer_checkpoint"] for case in ("tp2", "tp2sp")}
    assert saved == {"tp2": "fully_reshardable", "tp2sp": "dp_reshardable"}  # the recipe's choice, recorded
    refused = read("tp2sp_to_tp1")
    assert refused["message"] is not None
    assert "step_00000008: its optimizer state is saved dp_reshardable at TP=2 PP=1; this run is TP=1 PP=1" \
        in refused["message"]
    assert "parallel.optimizer_checkpoint: fully_reshardable" in refused["message"]
    assert refused["step"] == 8
    np.testing.assert_allclose(np.load(out / "tp2sp_to_tp1" / "logits.npy"), np.load(out / "tp2sp" / "logits.npy"),
                               rtol=0, atol=2e-5)


def test_resume_is_bitwise_identical(results):
    _, read, _ = results
    resumed = read("resume")
    assert resumed["resumed"] is True
    assert resumed["losses"] == read("ref")["losses"]  # exact float equality, step by step


def test_nan_skip_leaves_parameters_and_continues(results):
    _, read, _ = results
    skip = read("nan")["skip"]
    assert skip["outcome"] == "finished"
    assert skip["skipped_steps"] == 1
    before, after, skipped = skip["steps"][2]  # the third step holds the poisoned sample
    assert skipped and before == after
    assert all(not s for i, (_, _, s) in enumerate(skip["steps"]) if i != 2)
    assert skip["checkpoints"] == ["step_00000002", "step_00000004", "step_00000006", "step_00000008"]


def test_nan_stop_stops_without_checkpoint_of_bad_state(results):
    _, read, _ = results
    stop = read("nan")["stop"]
    assert stop["outcome"].startswith("stopped: step 3: non-finite loss")
    assert "training.nan_policy=stop" in stop["outcome"]
    assert len(stop["steps"]) == 3
    assert stop["checkpoints"] == ["step_00000002"]


def test_weights_only_checkpoint_starts_a_fresh_run_with_its_weights(results):
    _, read, _ = results
    got = read("weights_only")
    assert got["state_before"]["step"] == 0 and got["state_before"]["consumed_tokens"] == 0
    assert len(got["losses"]) == 1
    # same first batch as the source run's first step, but with the trained weights
    assert got["losses"][0] < got["src_losses"][0] - 0.05


# ------------------------------------------------------------------ training on Blender streams


def _reference_ids(prefix: str, stop: int, change_at: int | None):
    """The ids a fresh Blender over the same streams gives, with the weight change (if any)."""
    from cpt.config import recipe_from_dict
    from cpt.sampling import Blender
    from cpt.train.stream_data import build_streams
    from train_fixtures import stream_recipe
    from workers.engine_cases import NEW_WEIGHTS

    recipe = recipe_from_dict(stream_recipe(prefix, Path("unused")))
    streams = build_streams(recipe.data.streams, recipe.training.seq_length)
    blender = Blender.from_streams(streams, {s.name: s.weight for s in recipe.data.streams})
    if change_at is not None:
        blender.set_weights(NEW_WEIGHTS, effective_at=change_at)
    blender.next_samples(stop)
    ids = blender.sample_ids(0, stop)
    return [(g, int(s), int(i)) for g, (s, i) in enumerate(zip(ids.stream, ids.index))]


def test_stream_weight_change_applies_from_the_next_step(results):
    _, read, prefix = results
    got = read("streams")
    assert sorted(got["ids"]) == got["ids"]  # one process: fetched in global order
    assert [tuple(x) for x in got["ids"]] == _reference_ids(prefix, 48, change_at=24)
    zh = lambda lo, hi: sum(1 for g, s, _ in got["ids"] if lo <= g < hi and s == 1)  # noqa: E731
    assert 6 <= zh(0, 24) <= 8 and 18 <= zh(24, 48) <= 20  # 0.3 then 0.8 of 24 samples, within a sample
    assert got["losses"][-1] < got["losses"][0]


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_resume_after_weight_change_equals_uninterrupted(results, workers):
    _, read, _ = results
    resumed, straight = read(f"streams_resume_w{workers}"), read("streams")
    # the checkpoint at step 4 holds the weight history (changed at step 4's first sample, 24)
    assert resumed["ids"] == [x for x in straight["ids"] if x[0] >= 32]
    assert resumed["losses"] == straight["losses"]  # steps 1-4 from the first run, 5-6 after resume


def test_stream_dp2_ranks_union_is_the_dp1_batch(results):
    _, read, prefix = results
    got = read("streams_dp")
    ranks = [[tuple(x) for x in r] for r in got["ids_per_rank"]]
    assert len(ranks) == 2 and not set(ranks[0]) & set(ranks[1])
    assert sorted(ranks[0] + ranks[1]) == _reference_ids(prefix, 32, change_at=None)
    # each step's global batch is split between the ranks, none ahead of the other
    for step in range(4):
        for r in ranks:
            assert sorted(g for g, _, _ in r if step * 8 <= g < step * 8 + 8) == [g for g, _, _ in r if step * 8 <= g < step * 8 + 8]
            assert len([g for g, _, _ in r if step * 8 <= g < step * 8 + 8]) == 4


def test_stream_running_dry_stops_cleanly_with_a_checkpoint(results):
    _, read, _ = results
    got = read("streams_exhausted")
    # 19 samples at 4 per step: steps 1-4 run, step 5 would need sample 20 of the stream
    assert got["steps"] == 4 and got["checkpoints"] == ["step_00000004"]
    assert got["outcome"].startswith("stream 'short_en' has 19 samples")
    assert got["outcome"].endswith("step_00000004")
