"""Read run folders (one per stage) into tidy per-kind series ordered by consumed tokens.

A run folder holds `metrics.jsonl` (one JSON object per line, appended to on resume) and, when the
trainer wrote it, `recipe.yaml` (the resolved recipe; only `training.seq_length` and
`training.stage` are read here). Reading is strict where a wrong number would slip into a report
unnoticed (a malformed line or a field of the wrong type is an error naming file:line and field)
and lenient where the trainer's own history explains the oddity:

- a resumed run repeats the steps after its last checkpoint: the later record of a (stage, step,
  kind) wins (mixture records: (stage, step, hook); events are a log and are all kept);
- a final line without its newline is the torn write of a killed process: skipped and counted;
- unknown kinds and fields are ignored;
- records from before `stage`/`consumed_tokens` were logged take the stage from recipe.yaml (else
  the folder name) and the consumed tokens of the train record of the same step.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

KINDS = ("train", "eval", "data", "mixture", "event")


@dataclass(frozen=True, slots=True)
class Record:
    """One metrics.jsonl record, with where it came from (for messages) and its resolved position."""

    kind: str
    stage: str
    step: int
    time: float
    tokens: int
    fields: dict[str, Any]
    folder: int
    """index into RunData.folders: which folder (and so which seq_length) it came from"""
    line: int
    """line number in that folder's metrics.jsonl"""


@dataclass(slots=True)
class FolderInfo:
    """What one run folder contributed."""

    path: Path
    seq_length: Optional[int]
    records: int = 0
    torn_last_line: bool = False
    without_tokens: int = 0
    """records dropped: no consumed_tokens and no train record of the same step to take it from"""


@dataclass(slots=True)
class Stage:
    """A stage: its records span [start_tokens, end_tokens] of the run's consumed tokens."""

    name: str
    folders: list[int]
    start_tokens: int
    end_tokens: int
    first_step: int
    last_step: int
    start_time: float
    end_time: float


@dataclass(slots=True)
class RunData:
    """Deduplicated records per kind, ordered by (consumed tokens, step), and the stages they span."""

    folders: list[FolderInfo]
    stages: list[Stage]
    series: dict[str, list[Record]]
    duplicates_replaced: int = 0
    notes: list[str] = field(default_factory=list)

    def kind(self, kind: str) -> list[Record]:
        return self.series.get(kind, [])

    @property
    def seq_lengths_known(self) -> bool:
        return all(f.seq_length is not None for f in self.folders)


# ---------------------------------------------------------------------------------------------
# field checks: each returns the value or raises ValueError naming file:line and the field


def _number(value: Any, where: str, name: str, optional: bool = False) -> Optional[float]:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: field {name!r} must be a number, got {value!r}")
    return float(value)


def _count(value: Any, where: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: field {name!r} must be an integer >= 0, got {value!r}")
    return value


def _mapping(value: Any, where: str, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: field {name!r} must be an object {{stream: ...}}, got {value!r}")
    return value


def _check_kind_fields(kind: str, rec: dict[str, Any], where: str) -> None:
    """The fields the report reads, per kind; other fields are not the report's business."""
    if kind == "train":
        for name in ("loss", "lr", "tokens_per_s", "grad_norm"):
            if name in rec:
                _number(rec[name], where, name, optional=True)
        if "loss" not in rec:
            raise ValueError(f"{where}: train record without field 'loss'")
    elif kind == "eval":
        for name in ("loss", "ppl"):
            if name in rec:
                _number(rec[name], where, name, optional=True)
        for stream, figures in _mapping(rec.get("streams", {}), where, "streams").items():
            figures = _mapping(figures, where, f"streams.{stream}")
            _number(figures.get("ppl"), where, f"streams.{stream}.ppl", optional=True)
    elif kind == "data":
        for stream, share in _mapping(rec.get("weights", {}), where, "weights").items():
            _number(share, where, f"weights.{stream}")
        for stream, samples in _mapping(rec.get("samples", {}), where, "samples").items():
            _count(samples, where, f"samples.{stream}")
    elif kind == "mixture":
        if not isinstance(rec.get("hook"), str):
            raise ValueError(f"{where}: field 'hook' must be a string, got {rec.get('hook')!r}")
        for stream, share in _mapping(rec.get("weights_after", {}), where, "weights_after").items():
            _number(share, where, f"weights_after.{stream}")


def _parse_line(text: str, where: str) -> dict[str, Any]:
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if not isinstance(rec.get("kind"), str):
        raise ValueError(f"{where}: field 'kind' must be a string, got {rec.get('kind')!r}")
    _count(rec.get("step"), where, "step")
    _number(rec.get("time"), where, "time")
    if "stage" in rec and not (isinstance(rec["stage"], str) and rec["stage"]):
        raise ValueError(f"{where}: field 'stage' must be a non-empty string, got {rec['stage']!r}")
    if "consumed_tokens" in rec:
        _count(rec["consumed_tokens"], where, "consumed_tokens")
    if rec["kind"] in KINDS:
        _check_kind_fields(rec["kind"], rec, where)
    return rec


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_metrics(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
    """(line number, record) for every record of a metrics.jsonl, and whether a torn last line was skipped.

    Read line by line (a long run's file holds hundreds of thousands of records); only the last
    line can lack its newline, and when it does not parse it is a write cut off by a kill.
    """
    torn = False
    out: list[tuple[int, dict[str, Any]]] = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{number}"
            try:
                out.append((number, _parse_line(_decode(raw, where), where)))
            except ValueError:
                if raw.endswith(b"\n"):
                    raise
                torn = True
    return out, torn


def read_recipe_training(folder: Path) -> dict[str, Any]:
    """`training` of the folder's recipe.yaml, or {} when the trainer did not write one."""
    path = folder / "recipe.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    training = recipe.get("training", {}) if isinstance(recipe, dict) else {}
    if not isinstance(training, dict):
        raise ValueError(f"{path}: 'training' must be a mapping")
    seq = training.get("seq_length")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq <= 0):
        raise ValueError(f"{path}: training.seq_length must be an integer > 0, got {seq!r}")
    return training


# ---------------------------------------------------------------------------------------------


def _dedup_key(rec: Record) -> tuple:
    if rec.kind == "mixture":
        return (rec.stage, rec.step, rec.kind, rec.fields["hook"])
    if rec.kind == "event" or rec.kind not in KINDS:
        return (rec.stage, rec.step, rec.kind, rec.folder, rec.line)  # a log, not a measurement: keep all
    return (rec.stage, rec.step, rec.kind)


def _read_folder(index: int, folder: Path) -> tuple[FolderInfo, list[Record]]:
    metrics = folder / "metrics.jsonl"
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder (expected a run folder holding metrics.jsonl)")
    if not metrics.is_file():
        raise ValueError(f"{folder}: no metrics.jsonl (is this a training.output_dir?)")
    training = read_recipe_training(folder)
    info = FolderInfo(path=folder, seq_length=training.get("seq_length"))
    default_stage = training.get("stage") if isinstance(training.get("stage"), str) else folder.name
    raw, info.torn_last_line = read_metrics(metrics)
    info.records = len(raw)
    # records from before consumed_tokens was logged on every kind: take the train record's figure
    train_tokens = {
        (r.get("stage", default_stage), r["step"]): r["consumed_tokens"]
        for _, r in raw if r["kind"] == "train" and "consumed_tokens" in r
    }
    records = []
    for number, r in raw:
        stage = r.get("stage", default_stage)
        tokens = r.get("consumed_tokens", train_tokens.get((stage, r["step"])))
        if tokens is None:
            info.without_tokens += 1
            continue
        fields = {k: v for k, v in r.items() if k not in ("kind", "stage", "step", "time", "consumed_tokens")}
        records.append(Record(r["kind"], stage, r["step"], float(r["time"]), tokens, fields, index, number))
    return info, records


def _stages(records: list[Record]) -> list[Stage]:
    by_name: dict[str, Stage] = {}
    for r in records:
        s = by_name.get(r.stage)
        if s is None:
            by_name[r.stage] = Stage(r.stage, [r.folder], r.tokens, r.tokens, r.step, r.step, r.time, r.time)
            continue
        if r.folder not in s.folders:
            s.folders.append(r.folder)
        s.start_tokens, s.end_tokens = min(s.start_tokens, r.tokens), max(s.end_tokens, r.tokens)
        s.first_step, s.last_step = min(s.first_step, r.step), max(s.last_step, r.step)
        s.start_time, s.end_time = min(s.start_time, r.time), max(s.end_time, r.time)
    stages = sorted(by_name.values(), key=lambda s: (s.start_tokens, s.first_step, s.start_time))
    # A later stage continues the step and token counters: it starts where the one before ended,
    # even when its own start record (the `data` record at train start) is missing.
    for before, s in zip(stages, stages[1:]):
        s.start_tokens = min(s.start_tokens, before.end_tokens)
        s.first_step = min(s.first_step, before.last_step)
    return stages


def load_run(folders: list[str | Path]) -> RunData:
    """Read every folder's metrics.jsonl into one run: deduplicated, ordered, split into stages.

    The later record of a duplicate key wins, "later" meaning later in the file, and for the same
    stage in two folders, in the later folder as given on the command line.
    """
    paths = [Path(f) for f in folders]
    if not paths:
        raise ValueError("no run folders given")
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"a run folder is given twice: {[str(p) for p in paths]}")
    infos, latest = [], {}
    total = 0
    for index, folder in enumerate(paths):
        info, records = _read_folder(index, folder)
        infos.append(info)
        for r in records:
            latest[_dedup_key(r)] = r
        # only repeated train/eval steps say a resume happened; a `data` record written twice at one
        # step (at an eval, then after the weight change it caused) is the later state superseding
        total += sum(r.kind in ("train", "eval") for r in records)
    kept = list(latest.values())
    if not any(r.kind == "train" for r in kept):
        raise ValueError(f"no train records in {', '.join(str(p / 'metrics.jsonl') for p in paths)}")
    series: dict[str, list[Record]] = {}
    for r in sorted(kept, key=lambda r: (r.tokens, r.step, r.folder, r.line)):
        series.setdefault(r.kind, []).append(r)
    measured = sum(r.kind in ("train", "eval") for r in kept)
    run = RunData(infos, _stages(kept), series, duplicates_replaced=total - measured)
    for info in infos:
        if info.torn_last_line:
            run.notes.append(f"{info.path / 'metrics.jsonl'}: the last line was cut off (a killed write); skipped")
        if info.without_tokens:
            run.notes.append(f"{info.path / 'metrics.jsonl'}: {info.without_tokens} records without "
                             f"consumed_tokens (and no train record of their step) skipped")
    return run


def finite(value: Any) -> Optional[float]:
    """The value as a float when it is a finite number, else None (NaN losses of skipped steps)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)
