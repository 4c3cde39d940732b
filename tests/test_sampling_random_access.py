"""Blender random access: the ids of any range are replayed from at most one snapshot interval
(SNAPSHOT_EVERY samples, at most one global batch) before it, and equal the ids drawn in order."""
import numpy as np

import cpt.sampling.blender as blender_mod
from cpt.sampling import Blender


def drawn_with_changes(total=40_000, step=1000):
    b = Blender(["a", "b", "c"], [0.2, 0.3, 0.5])
    got_s, got_i = [], []
    rng = np.random.default_rng(0)
    while b.drawn < total:
        if b.drawn and b.drawn % 7000 == 0:
            b.set_weights(rng.random(3) + 0.01)
        ids = b.next_samples(step)
        got_s.append(ids.stream)
        got_i.append(ids.index)
    return b, np.concatenate(got_s), np.concatenate(got_i)


def count_replayed(monkeypatch):
    replayed = []
    real = blender_mod.blend_segment

    def counting(weights, targets, counts, segment_start, global_start, n, **kw):
        replayed.append(n)
        return real(weights, targets, counts, segment_start, global_start, n, **kw)

    monkeypatch.setattr(blender_mod, "blend_segment", counting)
    return replayed


def test_any_range_replays_less_than_one_snapshot_interval(monkeypatch):
    b, stream, index = drawn_with_changes()
    replayed = count_replayed(monkeypatch)
    rng = np.random.default_rng(1)
    for _ in range(50):
        start = int(rng.integers(0, b.drawn - 1024))
        stop = start + int(rng.integers(1, 1024))
        replayed.clear()
        ids = b.sample_ids(start, stop)
        np.testing.assert_array_equal(ids.stream, stream[start:stop])
        np.testing.assert_array_equal(ids.index, index[start:stop])
        assert sum(replayed) - (stop - start) < blender_mod.SNAPSHOT_EVERY


def test_after_a_fast_restore_only_the_first_access_replays_far(monkeypatch):
    b, stream, index = drawn_with_changes()
    fresh = Blender(["a", "b", "c"], [0.2, 0.3, 0.5])
    fresh.load_state_dict(b.state_dict(), verify=False)
    replayed = count_replayed(monkeypatch)
    fresh.sample_ids(30_000, 30_100)  # from the weight change at 28,000: far
    first = sum(replayed)
    replayed.clear()
    ids = fresh.sample_ids(30_050, 30_150)
    assert sum(replayed) - 100 < blender_mod.SNAPSHOT_EVERY < first
    np.testing.assert_array_equal(ids.stream, stream[30_050:30_150])
    np.testing.assert_array_equal(ids.index, index[30_050:30_150])
