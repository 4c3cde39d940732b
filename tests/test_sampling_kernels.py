"""The C++ kernels equal their NumPy references and megatron-core's own helpers, sample for sample."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from megatron.core.datasets import helpers_cpp

from cpt import _C
from cpt.sampling.blending import advance_targets, blend_segment
from cpt.sampling.packing import pack_segment

SETTINGS = settings(max_examples=40, deadline=None)


def test_extension_is_this_build():
    """The kernels come from this checkout's build (not a stale install elsewhere)."""
    import cpt

    assert Path(_C.__file__).parent == Path(cpt.__file__).parent
    assert hasattr(_C, "blend_segment") and hasattr(_C, "pack_segment") and _C.KERNEL_VERSION >= 1


def _weights(draw, k, allow_zero=True):
    w = np.array(draw(st.lists(st.sampled_from([0.0, 0.0, 1e-3, 0.1, 0.25, 0.5, 1.0, 2.0, 3.7]) if allow_zero
                               else st.floats(1e-3, 10.0), min_size=k, max_size=k)))
    if not w.sum() > 0:
        w[draw(st.integers(0, k - 1))] = 1.0
    return w / w.sum()


@st.composite
def blend_runs(draw):
    """A run of 1-4 weight segments (zeros allowed), as (weights, segment starts, total)."""
    k = draw(st.integers(1, 40))
    n_seg = draw(st.integers(1, 4))
    lengths = [draw(st.integers(0, 300)) for _ in range(n_seg)]
    return [_weights(draw, k) for _ in range(n_seg)], lengths


def _run(backend, weights, lengths, simd=True):
    """Chain segments the way the Blender does: targets carried, counts carried."""
    k = len(weights[0])
    targets, counts, g = np.zeros(k), np.zeros(k, np.int64), 0
    out_s, out_i = [], []
    for w, m in zip(weights, lengths):
        if backend == "raw":
            s, i, c = np.empty(m, np.int16), np.empty(m, np.int64), counts.copy()
            _C.blend_segment(w, targets, c, g, g, s, i, simd)
        else:
            s, i, c = blend_segment(w, targets, counts, g, g, m, backend=backend)
        out_s.append(s), out_i.append(i)
        counts, targets, g = c, advance_targets(targets, w, m), g + m
    return np.concatenate(out_s), np.concatenate(out_i), counts


@SETTINGS
@given(blend_runs())
def test_blend_cpp_equals_numpy_across_weight_changes(run):
    weights, lengths = run
    ref = _run("numpy", weights, lengths)
    for got in (_run("cpp", weights, lengths), _run("raw", weights, lengths, simd=False)):
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)


@SETTINGS
@given(blend_runs(), st.integers(0, 50))
def test_blend_from_the_middle_of_a_segment(run, cut):
    """Starting a call anywhere inside a segment continues exactly (the Blender's replay relies on it)."""
    weights, lengths = run
    w, m = weights[0], lengths[0]
    cut = min(cut, m)
    k = len(w)
    whole = blend_segment(w, np.zeros(k), np.zeros(k, np.int64), 0, 0, m)
    a = blend_segment(w, np.zeros(k), np.zeros(k, np.int64), 0, 0, cut)
    b = blend_segment(w, np.zeros(k), a[2], 0, cut, m - cut, backend="numpy")
    np.testing.assert_array_equal(np.concatenate([a[0], b[0]]), whole[0])
    np.testing.assert_array_equal(np.concatenate([a[1], b[1]]), whole[1])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(0, 20000), st.integers(0, 2**31 - 1))
def test_blend_equals_megatron_build_blending_indices(k, n, seed):
    """Fixed positive weights from zero counts: exactly megatron-core's blend (both C++ paths)."""
    rng = np.random.default_rng(seed)
    raw = rng.random(k) + (rng.random(k) < 0.3) * rng.integers(1, 5, k)  # ties between equal weights too
    w = raw / raw.sum()
    di, si = np.zeros(n, np.int16), np.zeros(n, np.int64)
    helpers_cpp.build_blending_indices(di, si, w, k, n, False)
    for simd in (True, False):
        s, i, c = np.empty(n, np.int16), np.empty(n, np.int64), np.zeros(k, np.int64)
        _C.blend_segment(w, np.zeros(k), c, 0, 0, s, i, simd)
        np.testing.assert_array_equal(s, di)
        np.testing.assert_array_equal(i, si)


def test_zero_weight_stream_is_never_drawn_where_megatron_would_on_a_tie():
    # (0, .5, .5): after two samples every error is exactly 0 and megatron's scan picks stream 0.
    w = np.array([0.0, 0.5, 0.5])
    di, si = np.zeros(10, np.int16), np.zeros(10, np.int64)
    helpers_cpp.build_blending_indices(di, si, w, 3, 10, False)
    assert 0 in di  # megatron draws from the zero-weight dataset
    s, _, _ = blend_segment(w, np.zeros(3), np.zeros(3, np.int64), 0, 0, 10)
    assert 0 not in s
    assert sorted(np.bincount(s, minlength=3)) == [0, 5, 5]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(weights=[0.0, 0.0]), "not all zero"),
        (dict(weights=[np.nan, 1.0]), "finite"),
        (dict(weights=[-1.0, 2.0]), "non-negative"),
        (dict(targets=[0.0]), "one entry per stream"),
        (dict(counts=[-1, 0]), "counts"),
        (dict(segment_start=5), "segment_start"),
        (dict(n=-1), "n must be"),
    ],
)
def test_blend_refuses_bad_input(kwargs, field):
    args = dict(weights=[0.5, 0.5], targets=[0.0, 0.0], counts=[0, 0], segment_start=0, global_start=0, n=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=field):
        blend_segment(**args)


@st.composite
def windows(draw):
    n = draw(st.integers(1, 40))
    lengths = np.array(draw(st.lists(st.integers(0, 25), min_size=n, max_size=n)), dtype=np.int32)
    pos = draw(st.integers(0, n - 1))
    offset = draw(st.integers(0, int(lengths[pos])))
    return lengths, pos, offset, draw(st.integers(1, 16)), draw(st.integers(0, 2)), draw(st.integers(0, 60))


@SETTINGS
@given(windows())
def test_pack_cpp_equals_numpy(case):
    lengths, pos, offset, seq, extra, n = case
    a = pack_segment(lengths, pos, offset, seq, n, base=7, add_extra_token=extra, backend="cpp")
    b = pack_segment(lengths, pos, offset, seq, n, base=7, add_extra_token=extra, backend="numpy")
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1:] == b[1:]


@SETTINGS
@given(st.lists(st.integers(0, 30), min_size=1, max_size=60), st.integers(2, 20), st.integers(0, 1),
       st.integers(1, 8))
def test_pack_in_windows_equals_megatron_build_sample_idx(lengths, seq, extra, window):
    """Packing window by window (bounded memory) gives megatron's sample index for the whole stream."""
    lengths = np.array(lengths, dtype=np.int32)
    if lengths.sum() <= max(extra, 1) + seq:
        lengths[0] += seq + 2
    doc_idx = np.arange(len(lengths), dtype=np.int32)
    want = helpers_cpp.build_sample_idx_int64(lengths, doc_idx, seq, 1, int(lengths.sum()), True, extra)
    got, pos, offset = [np.zeros((1, 2), np.int64)], 0, 0
    while pos < len(lengths):
        win = lengths[pos: pos + window]
        b, p, offset = pack_segment(win, 0, offset, seq, 10**6, base=pos, add_extra_token=extra)
        got.append(b)
        if len(b) == 0 and len(win) < window:
            break
        pos += p if len(b) else 0
        if len(b) == 0:
            window *= 2
    np.testing.assert_array_equal(np.concatenate(got), want)


@pytest.mark.parametrize("k", [1, 2, 3, 8, 22, 32, 33])
def test_blend_equals_megatron_when_ties_are_everywhere(k):
    """Equal weights tie on most samples: the lowest stream id must win every one, on both C++ paths."""
    n = 5000
    w = np.full(k, 1.0 / k)
    di, si = np.zeros(n, np.int16), np.zeros(n, np.int64)
    helpers_cpp.build_blending_indices(di, si, w, k, n, False)
    for simd in (True, False):
        s, i, c = np.empty(n, np.int16), np.empty(n, np.int64), np.zeros(k, np.int64)
        _C.blend_segment(w, np.zeros(k), c, 0, 0, s, i, simd)
        np.testing.assert_array_equal(s, di)
        np.testing.assert_array_equal(i, si)
