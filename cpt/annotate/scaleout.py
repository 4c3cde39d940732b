"""Scale-out of `cpt tag` / `cpt score`: a deterministic slice per task, then one merge.

    cpt score SHARD... --model M --shard-index $i --num-shards $n     # n tasks: Slurm array, Ray, ...
    cpt score SHARD... --merge                                        # once, after all n finished

Slicing. The documents of an input (one shard, or the whole raw corpus of one call) are cut into
blocks of `--chunk-size` documents - exactly the blocks a single run forms (`runner.run_annotator`)
- and task i takes the contiguous run of blocks that `cpt.corpus.shard_slice` (the rule `cpt
preprocess` slices its input chunks by) gives it, weighted by size (tokens from a shard's metadata;
characters for raw text). Every document is then annotated in the same batch as in a one-task run,
so the merged values are bit-identical to it, not merely close (ppl sums depend on batch makeup
in their last digits). The slice depends only on the input and the chunk size, never on timing.

Parts. Each task writes its results, in input order, to a part file beside the final output -
`PREFIX.<what>.part-0000i-of-0000n.jsonl` for a shard, `OUT.part-0000i-of-0000n.jsonl` for a raw
corpus - with the usual checkpoint (a killed task resumes) and the usual summary JSON written
last, which marks the part complete. Parts are JSON lines: floats round-trip exactly and a part is
readable with `head`.

Merge: a flag on the same command rather than a separate `cpt merge`-style command, because the
merge has to know what the command knows - which columns the annotator fills, their types, where
the sidecar and summary go, which part files belong to which input - and `cpt merge` already
means concatenating token shards. The merge needs no model. It refuses (one error naming the
files) missing parts, parts still running (no summary), parts from runs with other settings or a
different `--num-shards`, and parts whose documents are not exactly the input's, in order. Parts
are left in place, so a merge can be repeated.
"""
from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cpt.corpus import Chunk, shard_slice

PART_RE = re.compile(r"\.part-(\d{5})-of-(\d{5})\.jsonl$")


class MergeError(ValueError):
    """The parts of a sharded run cannot be merged; the message names the files."""


@dataclass(frozen=True, slots=True)
class Slice:
    """Task `index` of `count` (`--shard-index` / `--num-shards`)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"--shard-index must be in [0, --num-shards); got {self.index} of {self.count}")
        if self.count > 99999:
            raise ValueError(f"--num-shards {self.count}: at most 99999")

    @property
    def whole(self) -> bool:
        return self.count == 1

    def part_path(self, out: str | Path) -> Path:
        """Where task `index` writes its results for the final output `out`."""
        out = Path(out)
        return out.with_name(f"{out.name}.part-{self.index:05d}-of-{self.count:05d}.jsonl")


def doc_range(sizes: Sequence[int], chunk_size: int, part: Slice) -> tuple[int, int]:
    """Documents [start, stop) of task `part`: whole blocks of `chunk_size`, balanced by `sizes`."""
    if chunk_size < 1:
        raise ValueError(f"--chunk-size must be >= 1, got {chunk_size}")
    n = len(sizes)
    blocks = [Chunk(k, size=int(sum(sizes[k * chunk_size:(k + 1) * chunk_size])))
              for k in range((n + chunk_size - 1) // chunk_size)]
    mine = shard_slice(blocks, part.index, part.count)
    if not mine:
        return 0, 0
    return mine[0].index * chunk_size, min((mine[-1].index + 1) * chunk_size, n)


def _summary_of(part: Path) -> Path:
    return part.with_name(part.name + ".summary.json")


def find_parts(out: str | Path) -> list[Path]:
    """The complete set of part files for `out`, in task order; MergeError if any is missing."""
    out = Path(out)
    found: dict[int, set[int]] = {}
    for p in out.parent.glob(f"{out.name}.part-*-of-*.jsonl"):
        m = PART_RE.search(p.name)
        if m and p.name[: m.start()] == out.name:
            found.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    if not found:
        raise MergeError(f"no parts to merge for {out} (expected {out.name}.part-00000-of-NNNNN.jsonl "
                         f"from runs with --shard-index/--num-shards)")
    if len(found) > 1:
        raise MergeError(f"parts of {out} from runs with different --num-shards {sorted(found)}: "
                         f"delete the stale ones")
    (count, indices), = found.items()
    parts = [Slice(i, count).part_path(out) for i in range(count)]
    missing = [str(p) for i, p in enumerate(parts) if i not in indices or not _summary_of(p).is_file()]
    if missing:
        raise MergeError(f"{len(missing)} of {count} parts of {out} are missing or unfinished "
                         f"(no .summary.json): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return parts


def completed_part(part: str | Path, run_key: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of `part` when it was committed by a run with the same settings (slice included),
    else None. A rerun of a launch finds its finished slices this way and redoes only the others."""
    try:
        summary = json.loads(_summary_of(Path(part)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if summary.get("run_key") != json.loads(json.dumps(run_key)) or not Path(part).is_file():
        return None
    return summary


@dataclass
class Merged:
    rows: list[dict[str, Any]]
    stats: dict[str, Any]
    run_key: dict[str, Any]
    parts: list[str]


def read_parts(out: str | Path) -> Merged:
    """All rows of the parts of `out`, in order, with their summed stats; checks the parts agree."""
    parts = find_parts(out)
    rows: list[dict[str, Any]] = []
    key0: dict[str, Any] | None = None
    stats = {"read": 0, "resumed_from_checkpoint": 0, "annotated": 0, "skipped": Counter(), "seconds": 0.0}
    for p in parts:
        summary = json.loads(_summary_of(p).read_text(encoding="utf-8"))
        key = {k: v for k, v in summary["run_key"].items() if k != "slice"}
        if key0 is None:
            key0 = key
        elif key != key0:
            raise MergeError(f"{p} was written with other settings than {parts[0]} ({key} != {key0})")
        with p.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise MergeError(f"{p}:{line_no}: malformed part line ({e.msg})") from None
        s = summary["stats"]
        for k in ("read", "resumed_from_checkpoint", "annotated"):
            stats[k] += s[k]
        stats["skipped"].update(s["skipped"] or {})
        stats["seconds"] += s["seconds"]
    stats["skipped"] = dict(sorted(stats["skipped"].items()))
    stats["seconds"] = round(stats["seconds"], 3)
    return Merged(rows, stats, key0 or {}, [str(p) for p in parts])


def check_doc_ids(rows: Sequence[dict[str, Any]], doc_ids: Sequence[str], where: str) -> None:
    """The parts hold exactly the input's documents, in its order."""
    if len(rows) != len(doc_ids):
        raise MergeError(f"{where}: the parts hold {len(rows)} documents, the input has {len(doc_ids)}")
    for i, (row, doc_id) in enumerate(zip(rows, doc_ids)):
        if row["doc_id"] != doc_id:
            raise MergeError(f"{where}: document {i} of the parts is {row['doc_id']!r}, the input's is "
                             f"{doc_id!r} (parts of another input or chunk size?)")


def merge_note(merged: Merged) -> dict[str, Any]:
    return {"merged_from": merged.parts, "merged_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


__all__ = ["MergeError", "Merged", "Slice", "check_doc_ids", "completed_part", "doc_range", "find_parts", "merge_note", "read_parts"]
