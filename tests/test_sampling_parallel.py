"""Data-parallel slicing, simulated in-process: every rank builds its own Blender and takes its slice."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cpt.sampling import Blender, DataParallelLayout, DocumentTable, Stream, StreamConfig, StreamExhausted


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 5))
def test_union_of_rank_slices_is_the_global_batch(dp, mbs, rounds, steps):
    layout = DataParallelLayout(global_batch_size=dp * mbs * rounds, micro_batch_size=mbs, dp_size=dp)
    weights = [3, 1, 0, 2]
    single = Blender(list("abcd"), weights)
    ranks = [Blender(list("abcd"), weights) for _ in range(dp)]  # one per rank, nothing shared
    for step in range(steps):
        if step == 2:
            for b in [single, *ranks]:
                b.set_weights([0, 1, 1, 1])  # the same change on every rank, at the step boundary
        want = single.next_samples(layout.global_batch_size)
        lo, hi = layout.step_range(step)
        assert want.start == lo
        got = np.full(layout.global_batch_size, -1)
        for r, b in enumerate(ranks):
            batch = b.next_samples(layout.global_batch_size)  # every rank draws the whole global batch
            mine = layout.rank_slice(batch, r)
            pos = layout.global_indices(batch.start, r) - lo
            assert len(mine.stream) == layout.global_batch_size // dp
            assert (got[pos] == -1).all()  # disjoint
            got[pos] = mine.stream.astype(np.int64) * 10**6 + mine.index
        np.testing.assert_array_equal(got, want.stream.astype(np.int64) * 10**6 + want.index)


def test_rank_order_is_megatrons_pretraining_sampler():
    layout = DataParallelLayout(global_batch_size=12, micro_batch_size=2, dp_size=3)
    assert layout.num_micro_batches == 2
    assert layout.positions(0).tolist() == [0, 1, 6, 7]
    assert layout.positions(2).tolist() == [4, 5, 10, 11]


def test_layout_errors_name_the_fields():
    with pytest.raises(ValueError, match="global_batch_size=10 must be a multiple of micro_batch_size=2 x dp_size=3"):
        DataParallelLayout(global_batch_size=10, micro_batch_size=2, dp_size=3)
    with pytest.raises(ValueError, match="dp_rank must be in"):
        DataParallelLayout(global_batch_size=4, micro_batch_size=2, dp_size=2).positions(2)


def test_ranks_agree_on_tokens_end_to_end():
    """Streams + blender + DP: the tokens each rank reads, put together, are the DP=1 run's tokens."""
    rng = np.random.default_rng(0)
    n = 80
    table = DocumentTable.from_columns(
        rng.integers(1, 50, n), {"lang": rng.choice(["zh", "en"], n).tolist(), "ppl": rng.random(n)}
    )
    streams = [
        Stream(table, StreamConfig(name="zh", seq_length=32, filter='lang == "zh"', order="ppl_asc")),
        Stream(table, StreamConfig(name="en", seq_length=32, filter='lang == "en"', seed=5)),
    ]
    layout = DataParallelLayout(global_batch_size=8, micro_batch_size=2, dp_size=2)

    def pieces(ids):
        return [streams[s].locate(int(i)) for s, i in zip(ids.stream, ids.index)]

    one = Blender([s.name for s in streams], [1, 1])
    per_rank = [Blender([s.name for s in streams], [1, 1]) for _ in range(2)]
    for step in range(6):
        if step == 3:
            for b in [one, *per_rank]:
                b.set_weights({"zh": 3, "en": 1})
        whole = pieces(one.next_samples(8))
        merged = [None] * 8
        for r, b in enumerate(per_rank):
            batch = b.next_samples(8)
            for p, piece in zip(layout.positions(r), pieces(layout.rank_slice(batch, r))):
                merged[p] = piece
        assert merged == whole


def test_finite_stream_in_a_blend_is_dropped_at_its_last_sample():
    """A `stop` stream's capacity goes into the Blender; with on_exhausted='drop' it is never overdrawn."""
    table = DocumentTable.from_columns([40, 25, 60, 33] * 5, {"lang": ["zh", "en"] * 10})
    small = Stream(table, StreamConfig(name="zh", seq_length=16, filter='lang == "zh"', on_exhausted="stop"))
    big = Stream(table, StreamConfig(name="en", seq_length=16, filter='lang == "en"'))
    blender = Blender.from_streams([small, big], [3, 1], on_exhausted="drop")
    ids = blender.next_samples(200)
    assert np.count_nonzero(ids.stream == 0) == small.capacity == (500 - 1) // 16
    for s, i in zip(ids.stream, ids.index):
        [small, big][s].locate(int(i))  # every id exists
    strict = Blender.from_streams([small, big], [3, 1])
    with pytest.raises(StreamExhausted, match="stream 'zh' has 31 samples"):
        strict.next_samples(200)
