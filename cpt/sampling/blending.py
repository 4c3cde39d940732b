"""Blending segment: the next n (stream id, index within stream) pairs for a mixture of streams.

The rule (identical in the C++ kernel `cpt._C.blend_segment` and in `blend_segment_reference`):
within a segment of constant weights `w` that starts at global sample `s`, where the per-stream
target counts accumulated up to `s` are `B`, the sample at global index `g` goes to

    argmax_i  e_i = (B_i + w_i * (max(g, 1) - s)) - c_i        (c_i = samples drawn so far)

with ties to the lowest stream id, evaluated in IEEE double exactly in that order. A stream whose
weight is zero takes part only while e_i > 0: it may pay back a deficit it carried into the segment,
but is never drawn otherwise. With s = 0, B = 0, c = 0 and positive weights this is megatron-core's
`build_blending_indices` operation for operation, so a static blend equals Megatron's sample for
sample. The Blender carries B across weight changes, so the balance is never reset.
"""
from __future__ import annotations

import numpy as np

from cpt.sampling._native import native, use_cpp

MAX_STREAMS = 32767  # stream ids are int16, as in megatron's dataset_index


def _check_inputs(weights, targets, counts, segment_start: int, global_start: int, n: int):
    w = np.ascontiguousarray(weights, dtype=np.float64)
    t = np.ascontiguousarray(targets, dtype=np.float64)
    c = np.ascontiguousarray(counts, dtype=np.int64)
    if w.ndim != 1 or not 1 <= w.size <= MAX_STREAMS:
        raise ValueError(f"weights must be a 1-D array of 1..{MAX_STREAMS} streams, got shape {w.shape}")
    if t.shape != w.shape or c.shape != w.shape:
        raise ValueError(
            f"targets {t.shape} and counts {c.shape} must have one entry per stream like weights {w.shape}"
        )
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
    if not np.all(np.isfinite(t)):
        raise ValueError("targets must be finite")
    if np.any(c < 0):
        raise ValueError(f"counts must be non-negative, got {c.tolist()}")
    if segment_start < 0 or global_start < segment_start:
        raise ValueError(
            f"need 0 <= segment_start <= global_start, got segment_start={segment_start}, global_start={global_start}"
        )
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if global_start + n >= 2**53:
        raise ValueError("global sample indices must stay below 2**53 (exact in double precision)")
    return w, t, c


def blend_segment(
    weights, targets, counts, segment_start: int, global_start: int, n: int, *, backend: str = "auto"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The next `n` samples from `global_start` under one segment of weights.

    Returns (stream ids int16, index within stream int64, counts after) — the inputs are not modified.
    `targets` are the target counts at `segment_start`; see the module docstring for the rule.
    """
    out_stream = np.empty(n if n >= 0 else 0, dtype=np.int16)
    out_index = np.empty(n if n >= 0 else 0, dtype=np.int64)
    c = np.array(counts, dtype=np.int64)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    blend_into(weights, targets, c, segment_start, global_start, out_stream, out_index, backend=backend)
    return out_stream, out_index, c


def blend_into(
    weights, targets, counts: np.ndarray, segment_start: int, global_start: int,
    out_stream: np.ndarray, out_index: np.ndarray, *, backend: str = "auto",
) -> None:
    """Like blend_segment, filling caller-allocated int16/int64 arrays; `counts` (int64) is updated in place."""
    n = len(out_stream)
    w, t, c = _check_inputs(weights, targets, counts, segment_start, global_start, n)
    if c is not counts or not isinstance(counts, np.ndarray):
        raise ValueError("counts must be a C-contiguous int64 numpy array (it is updated in place)")
    for name, arr, dtype in (("out_stream", out_stream, np.int16), ("out_index", out_index, np.int64)):
        if arr.dtype != dtype or arr.ndim != 1 or not arr.flags.c_contiguous or len(arr) != n:
            raise ValueError(f"{name} must be a C-contiguous 1-D {np.dtype(dtype).name} array of length {n}")
    if use_cpp(backend):
        native().blend_segment(w, t, counts, int(segment_start), int(global_start), out_stream, out_index)
    else:
        out_stream[:], out_index[:] = blend_segment_reference(w, t, counts, segment_start, global_start, n)


def blend_segment_reference(weights, targets, counts, segment_start: int, global_start: int, n: int):
    """Plain NumPy reference of the kernel: one argmax per sample. Updates `counts` (int64) in place."""
    w = np.asarray(weights, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    c = counts.astype(np.float64)
    ineligible_weight = ~(w > 0)
    out_stream = np.empty(n, dtype=np.int16)
    out_index = np.empty(n, dtype=np.int64)
    for j in range(n):
        dp = float(max(global_start + j, 1) - segment_start)
        e = (t + w * dp) - c
        e[ineligible_weight & ~(e > 0)] = -np.inf
        best = int(np.argmax(e))  # first maximum: the lowest stream id wins a tie
        out_stream[j] = best
        out_index[j] = int(c[best])
        c[best] += 1.0
    counts[:] = c.astype(np.int64)
    return out_stream, out_index


def advance_targets(targets, weights, length: int) -> np.ndarray:
    """Targets after `length` more samples under `weights`: B + w * length (the balance carried on)."""
    return np.asarray(targets, dtype=np.float64) + np.asarray(weights, dtype=np.float64) * float(length)
