"""Loader prefetch: the next step's micro-batches are built in the background, and what the loop
receives is the same as without prefetch, also when the weights change between steps."""
import numpy as np
import pytest

from cpt.config import DataConfig
from cpt.sampling import DataParallelLayout, DocumentTable, Stream, StreamConfig
from cpt.train.stream_data import BlendedSamples

GBS, MBS, DP, SEQ = 16, 2, 2, 32


def streams(tmp_path):
    from test_sampling_cache import write_shard

    rng = np.random.default_rng(0)
    prefix = write_shard(tmp_path / "s", rng.integers(1, 120, 400), rng.choice(["zh", "en"], 400).tolist(),
                         rng.random(400).tolist())
    t = DocumentTable.from_shards([prefix], ["lang"])
    return [Stream(t, StreamConfig(name=n, seq_length=SEQ, filter=f'lang == "{n}"', seed=i))
            for i, n in enumerate(("zh", "en"))]


def run(tmp_path, prefetch: bool, changes: dict[int, list[float]], steps=12, workers=0):
    data = DataConfig(eod_token_id=0, eod_mask_loss=True, reset_position_ids=True)
    src = BlendedSamples(streams(tmp_path), [0.5, 0.5], SEQ, data, num_workers=workers, prefetch=prefetch)
    layout = DataParallelLayout(global_batch_size=GBS, micro_batch_size=MBS, dp_size=DP)
    out = []
    for step in range(steps):
        first = step * GBS
        src.prepare_step(first, first + GBS)
        for rank in range(DP):
            mine = layout.global_indices(first, rank)
            for m in range(GBS // DP // MBS):
                out.append(src.fetch(mine[m * MBS:(m + 1) * MBS]))
        if step in changes:  # a data hook at the end of the step: effective from the next one
            src.set_weights(changes[step], effective_at=first + GBS)
    hits, misses, replans = src.prefetch_hits, src.prefetch_misses, src.prefetch_replans
    src.close()
    return out, hits, misses, replans


def test_prefetched_batches_equal_the_synchronous_ones_across_weight_changes(tmp_path):
    changes = {3: [0.9, 0.1], 7: [0.2, 0.8]}
    plain, h0, m0, _ = run(tmp_path / "a", False, changes)
    fast, hits, misses, replans = run(tmp_path / "b", True, changes)
    assert (h0, m0) == (0, 0)
    assert len(plain) == len(fast)
    for a, b in zip(plain, fast):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # every micro-batch after the first step came from the prefetch, the steps after a change too:
    # the change re-predicted them at once and rebuilt the ones whose ids moved, in the background
    assert misses == 0 and hits == len(fast) - (GBS // MBS)
    assert replans > 0


def test_a_stream_running_dry_next_step_is_reported_by_that_step_not_by_the_prefetch(tmp_path):
    from cpt.sampling import StreamExhausted
    from test_sampling_cache import write_shard

    rng = np.random.default_rng(1)
    prefix = write_shard(tmp_path / "s", rng.integers(20, 60, 60), ["zh"] * 60, rng.random(60).tolist())
    t = DocumentTable.from_shards([prefix], ["lang"])
    stream = Stream(t, StreamConfig(name="zh", seq_length=SEQ, on_exhausted="stop"))
    src = BlendedSamples([stream], [1.0], SEQ, DataConfig(), num_workers=0, prefetch=True)
    steps_available = stream.capacity // GBS
    layout = DataParallelLayout(global_batch_size=GBS, micro_batch_size=MBS, dp_size=1)
    for step in range(steps_available):
        first = step * GBS
        src.prepare_step(first, first + GBS)
        for m in range(GBS // MBS):
            src.fetch(layout.global_indices(first, 0)[m * MBS:(m + 1) * MBS])  # the last step predicts a dry one
    with pytest.raises(StreamExhausted):
        first = steps_available * GBS
        src.prepare_step(first, first + GBS)
    src.close()
