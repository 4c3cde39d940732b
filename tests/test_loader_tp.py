"""On a tensor-parallel group only TP rank 0 reads micro-batches and broadcasts them (megatron's
get_batch_on_this_tp_rank): under torchrun with gloo, TP=2 ranks get identical batches while only
rank 0 calls the data source; with PP=2 each stage gets only the fields it uses."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from launch import launch, torchrun

from train_fixtures import write_lang_shards

MICRO_BATCHES = 2 * 4  # steps x micro-batches per step (global batch 8, micro batch 2, DP 1)
PP_MICRO_BATCHES = 2 * 8  # with PP, micro batch 1


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from pathlib import Path

    root = tmp_path_factory.mktemp("loader_tp")
    streams = write_lang_shards(root / "lang")
    out = root / "out"
    worker = Path(__file__).parent / "workers" / "loader_cases.py"
    launch([*torchrun(2), str(worker), "--streams", streams, "--out", str(out), "tp2", "pp2"])
    return lambda case: json.loads((out / f"{case}.json").read_text())


@pytest.mark.slow
def test_tp2_only_rank_0_reads_and_both_ranks_get_identical_batches(results):
    got = results("tp2")
    r0, r1 = got["ranks"]
    assert r0["reads"] and not r1["reads"]
    assert r0["fetches"] == MICRO_BATCHES and r1["fetches"] == 0  # rank 1 never touched the source
    assert r0["received"] == r1["received"] and len(r0["received"]) == MICRO_BATCHES
    assert r0["received"] == r0["fetched"]  # what was read, unchanged, field by field
    assert set(r0["received"][0]) == {"tokens", "position_ids", "labels", "loss_mask", "document_ids"}
    assert all(np.isfinite(got["losses"])) and len(got["losses"]) == 2
    line = got["first"]["message"]
    assert "broadcast to its 2 TP ranks" in line
    if not torch.cuda.is_available():
        assert line.endswith("pageable host memory (no CUDA)") and got["first"]["engine"]["batches"]["pinned"] is False


@pytest.mark.slow
def test_pp2_each_stage_reads_only_its_fields(results):
    first_stage, last_stage = results("pp2")["ranks"]
    assert first_stage["fields"] == ["tokens", "position_ids", "document_ids"]
    assert last_stage["fields"] == ["labels", "loss_mask", "document_ids"]
    for stage in (first_stage, last_stage):
        assert stage["reads"] and stage["fetches"] == PP_MICRO_BATCHES
        assert [sorted(b) for b in stage["received"]] == [sorted(stage["fields"])] * PP_MICRO_BATCHES
    # both stages read the same micro-batches: the shared field agrees
    assert [b["document_ids"] for b in first_stage["received"]] == [b["document_ids"] for b in last_stage["received"]]


@pytest.mark.parametrize("first, last, tp_rank, docs, keys, reads", [
    (True, True, 0, False, ("tokens", "position_ids", "labels", "loss_mask"), True),
    (True, True, 1, True, ("tokens", "position_ids", "labels", "loss_mask", "document_ids"), False),
    (False, False, 0, False, (), False),  # a middle stage without document masking needs nothing
    (False, False, 0, True, ("document_ids",), True),
    (False, True, 0, False, ("labels", "loss_mask"), True),
])
def test_batch_plan_per_stage(first, last, tp_rank, docs, keys, reads):
    from megatron_ext.batches import BatchPlan

    plan = BatchPlan.for_stage(first_stage=first, last_stage=last, tp_rank=tp_rank, document_masking=docs,
                               micro_batch_size=2, seq_length=8)
    assert (plan.keys, plan.reads, plan.shape) == (keys, reads, (2, 8))


def test_reader_converts_and_refuses_a_dense_mask_or_a_wrong_shape():
    from megatron_ext.batches import BatchPlan, TensorParallelBatches

    plan = BatchPlan.for_stage(first_stage=True, last_stage=True, tp_rank=0, document_masking=False,
                               micro_batch_size=2, seq_length=4)
    batches = TensorParallelBatches(plan, torch.device("cpu"), None, 0, 1)
    tokens = np.arange(8, dtype=np.int32).reshape(2, 4)
    got = batches.next(iter([{"tokens": tokens, "labels": tokens, "loss_mask": np.ones((2, 4))}]))
    assert got["tokens"].dtype == torch.int64 and got["loss_mask"].dtype == torch.float32
    assert got["position_ids"].tolist() == [[0, 1, 2, 3]] * 2  # absent: plain positions
    with pytest.raises(ValueError, match=r"\['attention_mask'\] are not sent to the model"):
        batches.next(iter([{"tokens": tokens, "labels": tokens, "loss_mask": tokens, "attention_mask": tokens}]))
    with pytest.raises(ValueError, match=r"'tokens' has shape \(2, 3\), expected \(2, 4\)"):
        batches.next(iter([{"tokens": tokens[:, :3], "labels": tokens, "loss_mask": tokens}]))
