"""A deterministic work plan: input files cut into segments, segments grouped into chunks.

Chunks are the unit of parallel work, of resumption (a finished chunk is never redone) and of
scale-out (`--shard-index i --num-shards n` takes a contiguous run of chunks). The plan depends only
on the file list, the file sizes and the chunk size, never on the number of workers or shards, so
any split of the work concatenates back to the same output. Uncompressed jsonl files larger than a
chunk are cut at line starts (their line numbers counted here, once); parquet files at row groups;
compressed and text files are read whole.
"""
from __future__ import annotations

import mmap
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from cpt.corpus.files import InputFile

_COUNT_BLOCK = 16 << 20
"""Bytes compared at a time when counting newlines (bounds the temporary mask)."""


@dataclass(frozen=True)
class Segment:
    file: InputFile
    start: int = 0
    """Byte offset (jsonl) or first row group (parquet)."""
    end: int = -1
    """Byte end or row-group end, exclusive; -1 for the whole file."""
    first_line: int = 1
    """Line number of the first line (jsonl, 1-based) or row index of the first row (parquet)."""
    size: int = 0


@dataclass
class Chunk:
    index: int
    segments: list[Segment] = field(default_factory=list)
    size: int = 0

    def describe(self) -> list[dict]:
        return [
            {"source": s.file.source, "start": s.start, "end": s.end, "first_line": s.first_line}
            for s in self.segments
        ]


def _split_jsonl(f: InputFile, chunk_bytes: int) -> list[Segment]:
    segs = []
    with open(f.path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        pos, line = 0, 1
        while pos < f.size:
            target = pos + chunk_bytes
            if target >= f.size:
                end = f.size
            else:
                nl = mm.find(b"\n", target - 1)
                end = f.size if nl == -1 else nl + 1
            segs.append(Segment(f, pos, end, line, end - pos))
            line += _newlines(mm, pos, end)
            pos = end
    return segs


def _newlines(mm: mmap.mmap, start: int, end: int) -> int:
    """Newlines in bytes [start, end) of the map, counted by numpy on a view: no copy of the bytes,
    and the GIL is released while it compares, so a driver that plans in a thread beside joining a
    cluster (`cpt.shards.launched`) is not held up by it."""
    count = 0
    for lo in range(start, end, _COUNT_BLOCK):
        view = np.frombuffer(mm, dtype=np.uint8, count=min(_COUNT_BLOCK, end - lo), offset=lo)
        count += int(np.count_nonzero(view == 10))
        del view  # the map cannot close while a view of it exists
    return count


def _split_parquet(f: InputFile, chunk_bytes: int) -> list[Segment]:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(f.path).metadata
    except Exception:  # noqa: BLE001 - unreadable/corrupt: the reader reports it with the location
        return [Segment(f, size=max(f.size, 0))]
    segs, start, row, first_row, acc = [], 0, 0, 0, 0
    for rg in range(meta.num_row_groups):
        group = meta.row_group(rg)
        acc += group.total_byte_size
        row += group.num_rows
        if acc >= chunk_bytes or rg == meta.num_row_groups - 1:
            segs.append(Segment(f, start, rg + 1, first_row, acc))
            start, first_row, acc = rg + 1, row, 0
    return segs or [Segment(f, size=0)]


def segments_of(f: InputFile, chunk_bytes: int) -> list[Segment]:
    if f.size > chunk_bytes and f.format == "jsonl":
        return _split_jsonl(f, chunk_bytes)
    if f.size > chunk_bytes and f.format == "parquet":
        return _split_parquet(f, chunk_bytes)
    return [Segment(f, size=max(f.size, 0), first_line=0 if f.format == "parquet" else 1)]


def make_plan(files: Sequence[InputFile], chunk_bytes: int) -> list[Chunk]:
    """Group the files' segments, in order, into chunks of about `chunk_bytes` input bytes."""
    if chunk_bytes <= 0:
        raise ValueError(f"chunk size must be positive, got {chunk_bytes}")
    chunks: list[Chunk] = [Chunk(0)]
    for f in files:
        for seg in segments_of(f, chunk_bytes):
            current = chunks[-1]
            if current.segments and current.size + seg.size > chunk_bytes:
                current = Chunk(len(chunks))
                chunks.append(current)
            current.segments.append(seg)
            current.size += seg.size
    return [c for c in chunks if c.segments]


def shard_slice(chunks: Sequence[Chunk], shard_index: int, num_shards: int) -> list[Chunk]:
    """The contiguous run of chunks that shard `shard_index` of `num_shards` processes (by input bytes)."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index must be in [0, --num-shards); got {shard_index} of {num_shards}")
    total = sum(max(c.size, 1) for c in chunks)
    out, before = [], 0
    for c in chunks:
        weight = max(c.size, 1)
        mid = before + weight / 2
        if int(mid * num_shards // total) == shard_index:
            out.append(c)
        before += weight
    return out


def interleaved_slice(chunks: Sequence[Chunk], index: int, count: int) -> list[Chunk]:
    """Every `count`-th chunk from chunk `index`: the slices of a launch, which all write into one
    work folder (so any split gives the same output). Interleaved, the slices commit chunks roughly
    in plan order, so the driver's assembly follows them closely instead of waiting for the last
    slice to start on its contiguous run; chunks are about equal in size, so the slices stay even."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"slice index must be in [0, count); got {index} of {count}")
    return list(chunks[index::count])


def plan_fingerprint(files: Sequence[InputFile]) -> list[dict]:
    return [asdict(f) for f in files]


def chunks_to_json(chunks: Sequence[Chunk], files: Sequence[InputFile]) -> list[list]:
    """Compact JSON of `chunks`, each segment naming its file by position in `files` (the planner's
    listing): what a launch's driver hands each slice so that it need not plan again."""
    number = {f.path: i for i, f in enumerate(files)}
    return [[c.index, c.size, [[number[s.file.path], s.start, s.end, s.first_line, s.size] for s in c.segments]]
            for c in chunks]


def chunks_from_json(data: Sequence[list], files: Sequence[InputFile]) -> list[Chunk]:
    """The chunks of `chunks_to_json`, over `files`: a listing the caller checked to be the
    planner's (same paths, sizes and mtimes, in the same order)."""
    return [Chunk(index, [Segment(files[n], start, end, first, seg_size) for n, start, end, first, seg_size in segs],
                  size) for index, size, segs in data]
