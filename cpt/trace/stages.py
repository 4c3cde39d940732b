"""A stage of a run as trace sees it: its checkpoints, recipe, start and replayable data state.

A stage folder is a recipe's `training.output_dir`. Its latest complete checkpoint holds the recipe,
the stage record (`start_step`, `start_samples`) and the data state (Blender history + stream
offsets) - everything needed to replay the stage's sample sequence. Every complete checkpoint also
records the parallel layout of the launch that wrote it: the first checkpoint at or after a step
was written by the launch that ran that step, so it gives that step's data-parallel size.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

from cpt.config import Recipe, recipe_from_dict
from cpt.train.checkpoint import is_complete

TRAINER_STATE_FILE = "trainer_state.json"  # what the engine writes beside its tensors


class TraceError(ValueError):
    """A trace that cannot be answered exactly; the message says why and what to give instead."""


@dataclass
class Stage:
    folder: Path
    """The stage's output folder (training.output_dir)."""
    checkpoints: list[tuple[int, Path, dict[str, Any]]]
    """(step, folder, trainer state) of every complete checkpoint, by step."""
    _data: Any = field(default=None, repr=False)
    _parts: Any = field(default=None, repr=False)

    @property
    def state(self) -> dict[str, Any]:
        return self.checkpoints[-1][2]

    @cached_property
    def recipe(self) -> Recipe:
        return recipe_from_dict(self.state["recipe"])

    @property
    def name(self) -> str:
        return str(self.state["extra"]["stage"]["name"])

    @property
    def start_step(self) -> int:
        return int(self.state["extra"]["stage"]["start_step"])

    @property
    def start_samples(self) -> int:
        return int(self.state["extra"]["stage"]["start_samples"])

    @property
    def last_step(self) -> int:
        """The last step this stage's checkpoints cover."""
        return self.checkpoints[-1][0]

    @property
    def global_batch_size(self) -> int:
        return self.recipe.training.global_batch_size

    def position(self, step: int) -> int:
        """Index, in this stage's sample sequence, of the first sample of `step` (1-based, run-wide)."""
        return (step - 1 - self.start_step) * self.global_batch_size

    def dp_size_at(self, step: int) -> int:
        """The data-parallel size of the launch that ran `step` (see the module docstring)."""
        for ckpt_step, _, state in self.checkpoints:
            if ckpt_step >= step:
                return int(state.get("layout", {}).get("dp", 1))
        return int(self.state.get("layout", {}).get("dp", 1))

    def data(self):
        """The stage's training samples (BlendedSamples) at its latest checkpoint, built as the
        trainer builds them (no loader workers)."""
        if self._data is None:
            self._data = _replayable_data(self)
        return self._data

    def parts(self) -> list[tuple[int, int | None, Any]]:
        """(first position, position after or None, samples) of each segment of the stage: one unless
        a recipe edit resumed it under other streams (see cpt.train.recipe_edit)."""
        data = self.data()
        if self._parts is None:
            self._parts = [(int(r.get("start", 0)), int(r["stop"]), None) for r in data.closed]
        out = []
        for k, (start, stop, samples) in enumerate(self._parts):
            if samples is None:
                samples = _segment_data(self, data.closed[k])
                self._parts[k] = (start, stop, samples)
            out.append((start, stop, samples))
        return [*out, (data.start, None, data)]

    def data_at(self, position: int):
        """The samples of the segment that holds stage position `position`."""
        for start, stop, samples in self.parts():
            if start <= position and (stop is None or position < stop):
                return samples
        raise TraceError(f"position {position}: in no segment of stage {self.name!r}")


def cache_dir(stage: Stage) -> str:
    """The stage's on-disk index cache, as the trainer used it (data.cache_dir, else in the stage folder)."""
    return stage.recipe.data.cache_dir or str(stage.folder / "data_cache")


def _replayable_data(stage: Stage):
    from cpt.train.stream_data import BlendedSamples, build_streams

    from cpt.train.data_bits import load_data_state

    recipe, data_state = stage.recipe, stage.state["extra"].get("data")
    d, t = recipe.data, recipe.training
    if not d.streams or data_state is None:
        raise TraceError(f"{stage.folder}: stage {stage.name!r} trains on data.blend (megatron's GPTDataset), "
                         "not data.streams; trace replays the Blender of stream runs only")
    streams = build_streams(d.streams, t.seq_length, "train", d.valid_holdout, d.valid_holdout_seed,
                            cache_dir=cache_dir(stage))
    samples = BlendedSamples(streams, {s.name: s.weight for s in d.streams}, t.seq_length, d, num_workers=0,
                             prefetch=False)
    samples.load_state_dict(load_data_state(data_state, stage.checkpoints[-1][1]))
    return samples


def _segment_data(stage: Stage, record: dict[str, Any]):
    """A segment closed by a recipe edit, rebuilt from its record: its streams as they were (from the
    index cache when the shards' metadata changed since), its heads, offsets and Blender."""
    from cpt.sampling.index_cache import IndexCache
    from cpt.train.stream_data import BlendedSamples

    cache = IndexCache(cache_dir(stage))
    streams = [_segment_stream(stage, name, record["streams"][name], cache) for name in record["blender"]["streams"]]
    t = stage.recipe.training
    samples = BlendedSamples(streams, record["recipe_weights"], t.seq_length, stage.recipe.data, num_workers=0,
                             prefetch=False)
    samples.load_exact(record)
    return samples


def _segment_stream(stage: Stage, name: str, rec: dict[str, Any], cache: Any):
    import dataclasses

    from cpt.sampling import DocumentTable, Stream, StreamConfig
    from cpt.sampling.stream_cache import stream_fields
    from cpt.train.recipe_edit import token_fingerprints
    from cpt.train.stream_data import _available

    config = StreamConfig(**rec["config"])
    wanted = _needed_columns_of(config)
    table = DocumentTable.from_shards(rec["sources"], _available(rec["sources"], wanted), cache=cache)
    if token_fingerprints(table) != rec["tokens"]:
        raise TraceError(f"stream {name!r} of stage {stage.name!r}: its shards {rec['sources']} have other tokens "
                         "than when it trained; trace cannot replay the steps before the recipe edit")
    if table.fingerprint != rec["table"]:  # metadata changed since: open the stream's indices as they were
        table = dataclasses.replace(table, fingerprints=tuple(rec["source_fingerprints"]))
        entry = cache.path_of("stream", stream_fields(table, config))
        if cache.lookup("stream", stream_fields(table, config)) is None:
            raise TraceError(f"stream {name!r} of stage {stage.name!r} trained before its shards' metadata changed; "
                             f"its indices as they were are no longer in the index cache ({entry}): trace cannot "
                             "replay the steps before the recipe edit")
    stream = Stream(table, config, cache=cache)
    if stream.fingerprint != rec["fingerprint"]:
        raise TraceError(f"stream {name!r} of stage {stage.name!r}: rebuilt with fingerprint {stream.fingerprint}, "
                         f"trained with {rec['fingerprint']}; trace cannot replay the steps before the recipe edit")
    return stream


def _needed_columns_of(config: Any) -> set[str]:
    from cpt.sampling.filters import filter_columns

    cols = set(filter_columns(config.filter))
    if config.order != "shuffle":
        cols.add(config.ppl_column)
    if config.split != "all":
        cols.add("doc_id")
    return cols


def _checkpoints(folder: Path) -> list[tuple[int, Path, dict[str, Any]]]:
    root = folder / "checkpoints"
    found = []
    for path in sorted(root.glob("step_*")) if root.is_dir() else []:
        if not path.is_dir() or not is_complete(path) or not (path / TRAINER_STATE_FILE).is_file():
            continue
        state = json.loads((path / TRAINER_STATE_FILE).read_text())
        if state.get("weights_only"):
            continue
        found.append((int(state["step"]), path, state))
    return sorted(found, key=lambda c: c[0])


def open_stages(folders: Sequence[str | Path]) -> list[Stage]:
    """The stages in `folders` (run output folders), ordered by their first step."""
    stages = []
    for f in folders:
        folder = Path(f)
        ckpts = _checkpoints(folder)
        if not ckpts:
            raise TraceError(f"{folder}: no complete checkpoint (trace replays a stage from its latest checkpoint)")
        stages.append(Stage(folder, ckpts))
    return sorted(stages, key=lambda s: s.start_step)


def stage_of(stages: Sequence[Stage], step: int) -> Stage:
    """The stage that ran `step`; TraceError lists the steps each folder covers."""
    for stage in stages:
        if stage.start_step < step <= stage.last_step:
            return stage
    covered = ", ".join(f"{s.folder} ({s.name}): steps {s.start_step + 1}..{s.last_step}" for s in stages)
    raise TraceError(f"step {step}: not covered by a checkpointed stage ({covered}); a step after the last "
                     "checkpoint was not kept (a resume redoes it)")
