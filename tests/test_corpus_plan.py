"""The plan's line numbers: each jsonl segment starts at a line start and knows its line number,
whatever the chunk size and however the newline count is blocked."""
from __future__ import annotations

import random

import pytest

from cpt.corpus import plan
from cpt.corpus.files import InputFile


def jsonl_file(tmp_path, lines: int) -> tuple[InputFile, bytes]:
    rng = random.Random(7)
    data = b"".join(b'{"text": "%s"}\n' % (b"y" * rng.randrange(0, 300)) for _ in range(lines))
    path = tmp_path / "c.jsonl"
    path.write_bytes(data)
    st = path.stat()
    return InputFile(str(path), "c.jsonl", "jsonl", st.st_size, st.st_mtime_ns), data


@pytest.mark.parametrize("block", [7, 4096, 16 << 20])
@pytest.mark.parametrize("chunk_bytes", [1, 333, 10_000, 1 << 30])
def test_segments_start_at_lines_and_know_their_line_numbers(tmp_path, monkeypatch, block, chunk_bytes):
    monkeypatch.setattr(plan, "_COUNT_BLOCK", block)
    f, data = jsonl_file(tmp_path, 500)
    segs = plan.segments_of(f, chunk_bytes)
    if chunk_bytes >= len(data):  # the whole file, one segment
        assert [(s.start, s.end, s.first_line) for s in segs] == [(0, -1, 1)]
        return
    assert len(segs) > 1 and segs[0].start == 0 and segs[-1].end == len(data)
    for a, b in zip(segs, segs[1:]):
        assert a.end == b.start
    for s in segs:
        assert s.start == 0 or data[s.start - 1: s.start] == b"\n"
        assert s.first_line == data[: s.start].count(b"\n") + 1
