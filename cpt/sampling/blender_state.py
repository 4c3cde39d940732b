"""Checked restore of a Blender state (STYLE rule 5: versioned, validated, refused with a message).

A state is accepted only if it is this version, names the same streams with the same capacities
and exhaustion policy, has a well-formed weight history, and (with verify=True) replays: drawing
its history again from sample 0 gives the recorded counts at every entry and at the cursor.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    from cpt.sampling.blender import Blender

_VERIFY_CHUNK = 1 << 22


def _refuse(reason: str) -> None:
    raise ValueError(f"refusing blender state: {reason}")


def _check_header(blender: "Blender", state: Mapping[str, Any]) -> None:
    from cpt.sampling.blender import STATE_VERSION

    if not isinstance(state, Mapping):
        _refuse(f"expected a mapping, got {type(state).__name__}")
    missing = [k for k in ("version", "streams", "capacities", "on_exhausted", "drawn", "counts", "history") if k not in state]
    if missing:
        _refuse(f"missing fields {missing}")
    if state["version"] != STATE_VERSION:
        _refuse(f"field 'version' is {state['version']!r}; this cpt reads version {STATE_VERSION}")
    if list(state["streams"]) != list(blender.stream_names):
        _refuse(
            f"field 'streams' is {list(state['streams'])} but this blender has {list(blender.stream_names)}; "
            "resume with the same streams in the same order"
        )
    mine = blender.state_dict()
    if list(state["capacities"]) != mine["capacities"]:
        _refuse(f"field 'capacities' is {list(state['capacities'])} but the streams now have {mine['capacities']}")
    if state.get("fingerprints") != mine["fingerprints"]:
        _refuse(
            f"field 'fingerprints' is {state.get('fingerprints')} but the streams now hash to {mine['fingerprints']}: "
            "their documents, metadata or stream configs changed since the checkpoint"
        )
    if state["on_exhausted"] != mine["on_exhausted"]:
        _refuse(f"field 'on_exhausted' is {state['on_exhausted']!r} but this blender uses {mine['on_exhausted']!r}")


def _parse_history(blender: "Blender", state: Mapping[str, Any]):
    from cpt.sampling.blender import WeightChange

    K = blender.num_streams
    drawn = state["drawn"]
    if not isinstance(drawn, int) or drawn < 0:
        _refuse(f"field 'drawn' must be a non-negative int, got {drawn!r}")
    counts = np.asarray(state["counts"], dtype=np.int64)
    if counts.shape != (K,) or np.any(counts < 0) or int(counts.sum()) != drawn:
        _refuse(f"field 'counts' must be {K} non-negative ints summing to drawn={drawn}, got {state['counts']}")
    history, entry_counts = [], []
    for i, e in enumerate(state["history"]):
        w = [float(x) for x in e["weights"]]
        if len(w) != K or not all(math.isfinite(x) and x >= 0 for x in w) or abs(sum(w) - 1.0) > 1e-9:
            _refuse(f"history[{i}].weights must be {K} finite non-negative weights summing to 1, got {e['weights']}")
        if history and e["start"] <= history[-1].start:
            _refuse(f"history[{i}].start={e['start']} does not follow history[{i - 1}].start={history[-1].start}")
        if not history and e["start"] != 0:
            _refuse(f"history[0].start must be 0, got {e['start']}")
        reset = tuple(int(s) for s in e.get("reset", ()))
        if any(not 0 <= s < K for s in reset):
            _refuse(f"history[{i}].reset names streams outside 0..{K - 1}: {list(reset)}")
        history.append(WeightChange(int(e["start"]), tuple(w), reset, str(e.get("reason", "set_weights"))))
        reached = e["start"] < drawn
        if reached != (e.get("counts") is not None):
            _refuse(f"history[{i}] (start {e['start']}, drawn {drawn}) must have counts exactly when it was reached")
        if reached:
            c = np.asarray(e["counts"], dtype=np.int64)
            if c.shape != (K,) or int(c.sum()) != e["start"]:
                _refuse(f"history[{i}].counts must be {K} ints summing to its start {e['start']}, got {e['counts']}")
            entry_counts.append(c)
    if not history:
        _refuse("field 'history' is empty")
    return history, entry_counts, drawn, counts


def restore(blender: "Blender", state: Mapping[str, Any], verify: bool) -> None:
    """Load `state` into `blender`, or raise ValueError naming the field and leave it unchanged."""
    _check_header(blender, state)
    history, entry_counts, drawn, counts = _parse_history(blender, state)
    trial = blender.__class__.__new__(blender.__class__)
    trial.__dict__.update(blender.__dict__)
    trial._history, trial._active, trial._drawn = list(history), [], 0
    trial._counts, trial._snapshots = np.zeros(blender.num_streams, dtype=np.int64), {}
    if verify:
        from cpt.sampling.blender import StreamExhausted

        try:
            while trial._drawn < drawn:
                trial.next_samples(min(_VERIFY_CHUNK, drawn - trial._drawn))
        except StreamExhausted as e:
            _refuse(f"its history does not replay: {e}")
        if trial._history != history:
            _refuse("its history does not replay: drawing it again changes the history (streams ran dry elsewhere)")
        for i, (c, (_, replayed)) in enumerate(zip(entry_counts, trial._active)):
            if not np.array_equal(c, replayed):
                _refuse(
                    f"history[{i}].counts {c.tolist()} differ from a replay {replayed.tolist()} (edited state, "
                    f"or written by other kernels: kernel_version {state.get('kernel_version')})"
                )
        if not np.array_equal(trial._counts, counts):
            _refuse(f"field 'counts' {counts.tolist()} differs from a replay of the history {trial._counts.tolist()}")
    else:
        for k, c in enumerate(entry_counts):
            trial._counts = c
            trial._activate(k)
        trial._counts, trial._drawn = counts, drawn
    blender.__dict__.update(trial.__dict__)
