"""Recipe edits mid-run: resume a stage's checkpoint under a recipe whose streams changed.

Allowed: other weights, a stream added, a stream dropped, a stream's filter (or order, seed) changed,
the shards' metadata changed (a re-tag or re-score). The run continues from the checkpoint and logs
a `recipe_change` event with the diff. Within the epoch in progress of each stream, no document
already trained is trained again and none the new recipe selects is skipped:

- A stream whose name and fingerprint (documents + config) are unchanged carries on exactly, as a
  stream does across stages (its offset, and its head if an earlier edit gave it one).
- Every other stream of the new recipe starts with a `StreamHead`: the rest of its epoch (the one
  its namesake was in, else 0) in its own order, without the documents already trained in it, led
  by the documents the edit cut that it selects (each read on from the token where it stopped);
  then its next epochs as usual. Which documents count as trained depends on the checkpoint's
  streams over the same shards (see cpt.sampling.ledger):
  - their filters were disjoint (one stream per topic): a document belonged to one stream, and
    whether it was trained in that stream's epoch in progress travels with it (their shared
    ledger): a document re-tagged from one stream into another is not trained twice, and a cut
    document is finished by its namesake if that still selects it, else by the first new stream
    over those shards that does;
  - their filters overlapped: each stream has its own epochs (a document two streams select is
    trained once per epoch of each), so an edited stream skips what its namesake trained in its
    epoch in progress and finishes only its namesake's cut document, and an added stream starts at
    epoch 0 with all its documents.
- Weights: from the edit on, a stream the edit added or re-weighted gets the new recipe's weight,
  every other stream keeps the share in force at the checkpoint (what a mixture controller made
  of it; see `kept_shares`); an unchanged stream set keeps the Blender's history and adds one
  entry (reason `recipe_change`); a changed set opens a new segment:
  a new Blender over the new streams from the checkpoint's sample on, the old segment's data state
  kept in the new state's `segments` (what `cpt trace` replays for the steps before the edit).

Refused with one line: a shard whose tokens changed since the checkpoint (its documents cannot be
matched to the ledger), a stream whose held-out split changed (trained documents would move into
validation), and a checkpoint written before ledgers existed (data state version 2).
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from cpt.sampling.ledger import Ledger, head_from_dict, head_to_dict, overlapping_sets, stream_ledgers
from cpt.sampling.stream import StreamHead

if TYPE_CHECKING:
    from cpt.sampling import Stream
    from cpt.train.stream_data import BlendedSamples

_SPLIT_FIELDS = ("split", "holdout", "holdout_seed")


class RecipeEditRefused(ValueError):
    """A recipe edit whose promise (no repeat, no skip within the epoch) cannot hold."""


def _refuse(reason: str) -> None:
    raise RecipeEditRefused(f"refusing recipe change: {reason}")


def token_fingerprints(table: Any) -> list[str]:
    """Per source of `table`: what its tokens hash to (the .bin's sha256 from a shard's manifest; the
    lengths' hash for a source without one). Unlike the table fingerprint, a re-tag leaves it alone."""
    out = []
    for i, f in enumerate(table.fingerprints):
        head = f.split("/")[0] if "/" in f else "None"
        if head == "None":
            lengths = np.ascontiguousarray(np.asarray(table.lengths)[np.asarray(table.source_of) == i], np.int64)
            head = "lengths:" + hashlib.sha256(lengths.tobytes()).hexdigest()[:16]
        out.append(head)
    return out


def stream_record(stream: "Stream") -> dict[str, Any]:
    """What a later edit (and trace) needs to know of a stream: config, shards, fingerprints."""
    t = stream.table
    return {"config": asdict(stream.config), "fingerprint": stream.fingerprint, "table": t.fingerprint,
            "sources": list(t.sources), "source_fingerprints": list(t.fingerprints), "tokens": token_fingerprints(t),
            "documents": len(t)}


def segment_state(samples: "BlendedSamples", ledgers: bool = True) -> dict[str, Any]:
    """The current segment's data state: Blender, offsets, stream records, heads and (`ledgers`)
    the consumed-documents ledgers - the costly part, which only the rank writing it computes."""
    heads = {s.name: head_to_dict(s.head) for s in samples.streams if s.head is not None}
    offsets = dict(zip(samples.stream_names, samples.offsets.tolist()))
    out = {"blender": samples.blender.state_dict(), "offsets": offsets,
           "start": samples.start, "recipe_weights": dict(samples.recipe_weights),
           "streams": {s.name: stream_record(s) for s in samples.streams}, "heads": heads}
    if ledgers:
        if samples.overlapping is None:  # the selections are fixed for the segment: computed once
            samples.overlapping = overlapping_sets(samples.streams)
        positions = samples.offsets + samples.blender.counts
        out["ledgers"] = {n: led.to_dict() for n, led in
                          stream_ledgers(samples.streams, positions.tolist(), samples.overlapping).items()}
    return out


def restore_heads(samples: "BlendedSamples", state: Mapping[str, Any], only: set[str] | None = None) -> None:
    """Give the streams of `samples` the heads `state` records for them (by name)."""
    for s in samples.streams:
        d = state.get("heads", {}).get(s.name)
        if d is not None and (only is None or s.name in only):
            s.start_head(head_from_dict(d))


def load_or_edit(samples: "BlendedSamples", state: Mapping[str, Any]) -> dict[str, Any] | None:
    """Load `state` exactly, or as an edit to the recipe `samples` was built from; the edit's diff."""
    new_weights = dict(samples.recipe_weights)
    b = state["blender"]
    old_fp = dict(zip(b["streams"], b.get("fingerprints") or [None] * len(b["streams"])))
    same = all(old_fp[s.name] == s.fingerprint for s in samples.streams) if list(b["streams"]) == list(
        samples.stream_names) else False
    if same:
        samples.load_exact(state)
        old_weights = dict(samples.recipe_weights)
        if all(abs(old_weights[n] - new_weights[n]) <= 1e-12 for n in new_weights):
            return None
        at = samples.start + samples.blender.drawn
        weights = kept_shares(state, new_weights)
        samples.blender.set_weights(weights, effective_at=samples.blender.drawn, reason="recipe_change")
        samples.recipe_weights = new_weights
        return {"at_sample": at, "weights": {n: [old_weights[n], new_weights[n]] for n in new_weights
                                             if abs(old_weights[n] - new_weights[n]) > 1e-12}}
    return _edit(samples, state, new_weights)


def kept_shares(state: Mapping[str, Any], new_weights: Mapping[str, float]) -> dict[str, float]:
    """The Blender's weights from the edit on: the new recipe's weight for a stream the edit added or
    re-weighted; for every other stream the share in force at the checkpoint (a mixture controller's
    moves are kept), in the units of the checkpoint's recipe weights."""
    b = state["blender"]
    old_recipe = state.get("recipe_weights") or dict(zip(b["streams"], b["history"][0]["weights"]))
    drawn = int(b["drawn"])
    entry = [h for h in b["history"] if int(h["start"]) <= drawn][-1]
    in_force = dict(zip(b["streams"], entry["weights"]))
    scale = sum(old_recipe.values()) / (sum(in_force.values()) or 1.0)
    out = {}
    for n, w in new_weights.items():
        kept = n in in_force and n in old_recipe and abs(old_recipe[n] - w) <= 1e-12
        out[n] = float(in_force[n]) * scale if kept else float(w)
    return out


def _edit(samples: "BlendedSamples", state: Mapping[str, Any], new_weights: dict[str, float]) -> dict[str, Any]:
    if "ledgers" not in state:
        _refuse(f"the checkpoint's data state (version {state.get('version')}) has no consumed-documents ledger; "
                f"resume it with its own streams {list(state['blender']['streams'])}, or start a new stage")
    old = state["streams"]
    _check_tokens(old, samples.streams)
    diff = _diff(old, state, samples, new_weights)
    at = int(state.get("start", 0)) + int(state["blender"]["drawn"])
    counts = dict(zip(state["blender"]["streams"], state["blender"]["counts"]))
    carried = set()
    for k, s in enumerate(samples.streams):
        if s.name in old and old[s.name]["fingerprint"] == s.fingerprint:
            samples.offsets[k] = int(state["offsets"][s.name]) + int(counts[s.name])
            carried.add(s.name)
    restore_heads(samples, state, only=carried)
    ledgers = {n: Ledger.from_dict(d) for n, d in state["ledgers"].items()}
    diff["resumes"] = _start_heads([s for s in samples.streams if s.name not in carried], old, ledgers, carried)
    closed = {k: v for k, v in state.items() if k not in ("segments", "ledgers")}  # trace needs no ledger
    samples.closed = [*state.get("segments", ()), {**closed, "stop": at}]
    samples.start = at
    samples.recipe_weights = new_weights
    samples.blender = samples._new_blender(kept_shares(state, new_weights))
    samples.overlapping = None  # the new segment's streams: checked again at its first save
    return diff


def _check_tokens(old: Mapping[str, Any], streams: list["Stream"]) -> None:
    known = {src: (tok, name) for name, rec in old.items() for src, tok in zip(rec["sources"], rec["tokens"])}
    for s in streams:
        for src, tok in zip(s.table.sources, token_fingerprints(s.table)):
            if src in known and known[src][0] != tok:
                _refuse(f"shard {src} has other tokens than at the checkpoint (tokens {known[src][0]} -> {tok}, "
                        f"stream {s.name!r}): the documents already trained cannot be matched; restore the shard, "
                        "or train the new tokens in a new stage (training.stage)")


def _diff(old: Mapping[str, Any], state: Mapping[str, Any], samples: "BlendedSamples",
          new_weights: dict[str, float]) -> dict[str, Any]:
    b = state["blender"]
    old_weights = state.get("recipe_weights") or dict(zip(b["streams"], b["history"][0]["weights"]))
    changed: dict[str, dict[str, Any]] = {}
    for s in samples.streams:
        rec = old.get(s.name)
        if rec is None or rec["fingerprint"] == s.fingerprint:
            continue
        # through StreamConfig: a field added since the checkpoint reads as its default, not as a change
        before, now = asdict(type(s.config)(**rec["config"])), asdict(s.config)
        fields = {k: [before.get(k), v] for k, v in now.items() if before.get(k) != v}
        for k in _SPLIT_FIELDS:
            if k in fields:
                _refuse(f"stream {s.name!r}: {k} changed {fields[k][0]!r} -> {fields[k][1]!r}: documents already "
                        "trained would move into validation (or out of it); keep a running stage's held-out split")
        if rec["table"] != s.table.fingerprint:
            fields["metadata"] = "changed (re-tagged or re-scored shards)"
        changed[s.name] = fields
    weights = {n: [old_weights.get(n), w] for n, w in new_weights.items()
               if old_weights.get(n) is None or abs(old_weights[n] - w) > 1e-12}
    return {"at_sample": int(state.get("start", 0)) + int(b["drawn"]),
            "added": [s.name for s in samples.streams if s.name not in old],
            "dropped": [n for n in old if n not in set(samples.stream_names)], "changed": changed, "weights": weights}


def _start_heads(streams: list["Stream"], old: Mapping[str, Any], ledgers: Mapping[str, Ledger],
                 carried: set[str]) -> dict[str, Any]:
    """Give each new or changed stream the rest of its epoch (see the module docstring)."""
    partials = _cut_documents(streams, old, ledgers, carried)
    resumes = {}
    for s in streams:
        over = [n for n, rec in old.items() if tuple(rec["sources"]) == tuple(s.table.sources) and n in ledgers]
        for n in over:
            if len(ledgers[n].bits) != len(s.table):
                _refuse(f"stream {n!r}: its ledger has {len(ledgers[n].bits)} documents, its shards now {len(s.table)}")
        if not all(ledgers[n].shared for n in over):  # overlapping filters: only the namesake's own epoch
            over = [n for n in over if n == s.name]
        excluded = np.zeros(len(s.table), bool)
        for n in over:
            excluded |= ledgers[n].bits
        epoch = ledgers[s.name].epoch if s.name in over else 0
        cut = partials.get(s.name, [])
        if epoch or cut or excluded.any():
            s.start_head(StreamHead(epoch, excluded, tuple(cut)))
        resumes[s.name] = {"epoch": epoch, "documents_left": len(s._head_rows) if s.head else s.num_documents,
                           "cut_documents": [row for row, _ in cut]}
    return resumes


def _cut_documents(streams: list["Stream"], old: Mapping[str, Any], ledgers: Mapping[str, Ledger],
                   carried: set[str]) -> dict[str, list[tuple[int, int]]]:
    """{new stream: [(table row, offset)]}: who finishes each document the edit cut - the stream of
    the same name if it still selects it, else (disjoint filters) the first new stream over those
    shards that does (a re-tag may have moved it). A cut document no new stream selects is left,
    as its filter says."""
    out: dict[str, list[tuple[int, int]]] = {}
    for name, led in ledgers.items():
        if led.partial is None or name in carried:
            continue
        over = [s for s in streams if tuple(s.table.sources) == tuple(old[name]["sources"])
                and (led.shared or s.name == name)]  # overlapping filters: the namesake's alone
        over.sort(key=lambda s: s.name != name)
        for s in over:
            if s.selects(led.partial):
                out.setdefault(s.name, []).append((led.partial, led.offset))
                break
    return out
