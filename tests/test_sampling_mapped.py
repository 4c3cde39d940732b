"""Mapped cache and shard pages are the page cache's, not a rank's: opening a shard keeps none of the
pages its check read, and `mapped.release()` lets go of what a step touched (the data stays readable)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import cpt.shards as shards
from cpt.sampling import mapped
from cpt.shards import ShardError
from cpt.shards import format as shard_format
from cpt.shards.format import write_idx

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")


def mapped_kb(path: Path) -> int:
    """Resident kB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        head = line.split()
        if "-" in head[0] and len(head) >= 5 and ":" in head[3]:
            inside = len(head) > 5 and head[5] == str(path)
        elif inside and head[0] == "Rss:":
            total += int(head[1])
    return total


def plain_shard(prefix: Path, lengths: np.ndarray) -> Path:
    with open(f"{prefix}.bin", "wb") as f:
        f.truncate(int(lengths.sum()) * 2)
    with open(f"{prefix}.idx", "wb") as f:
        write_idx(f, np.uint16, lengths)
    return prefix


def test_open_keeps_no_index_page_the_check_read(tmp_path):
    lengths = np.random.default_rng(0).integers(1, 50, 300_000).astype(np.int32)
    prefix = plain_shard(tmp_path / "s", lengths)
    shard = shards.open(prefix, require_manifest=False)
    assert mapped_kb(tmp_path / "s.idx") == 0  # every page was checked, none stays mapped
    assert shard.n_tokens == int(lengths.sum()) and len(shard) == len(lengths)
    assert np.array_equal(shard.index.sequence_lengths[-3:], lengths[-3:])


def test_chunked_check_finds_a_bad_pointer_past_the_first_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(shard_format, "_CHECK_CHUNK", 1000)
    lengths = np.full(5000, 7, np.int32)
    prefix = plain_shard(tmp_path / "s", lengths)
    assert shards.open(prefix, require_manifest=False).n_tokens == 35000
    raw = bytearray(Path(f"{prefix}.idx").read_bytes())
    at = shard_format.HEADER_SIZE + 4 * 5000 + 8 * 3456  # pointer of sequence 3456
    raw[at:at + 8] = (12345).to_bytes(8, "little")
    Path(f"{prefix}.idx").write_bytes(bytes(raw))
    with pytest.raises(ShardError, match="not contiguous"):
        shards.open(prefix, require_manifest=False)


def test_release_unmaps_pages_and_data_stays(tmp_path):
    path = tmp_path / "a.npy"
    values = np.arange(2_000_000, dtype=np.int64)
    np.save(path, values)
    arr = mapped.track(np.load(path, mmap_mode="r"))
    assert int(arr.sum()) == int(values.sum())
    assert mapped_kb(path) > 8_000  # the scan mapped the pages into this process
    assert mapped.release() >= arr.nbytes - 2 * 4096
    assert mapped_kb(path) <= 8
    assert np.array_equal(arr[::1000], values[::1000])  # read again from the page cache


def test_release_of_some_arrays_leaves_the_others_mapped(tmp_path):
    """The loader releases only what a micro-batch looked up (one syscall per array, so not the
    hundreds a paper-scale cache tracks); a view of a tracked array (a row, a slice) counts as it."""
    paths = [tmp_path / "a.npy", tmp_path / "b.npy"]
    for p in paths:
        np.save(p, np.arange(1_000_000, dtype=np.int64).reshape(2, -1))
    a, b = (mapped.track(np.load(p, mmap_mode="r")) for p in paths)
    assert int(a[1].sum()) == int(b[1].sum())
    assert mapped.release([a[1], np.zeros(3), None]) >= a[1].nbytes - 2 * 4096
    assert mapped_kb(paths[0]) <= 8 and mapped_kb(paths[1]) > 3_000
    mapped.release([b])
    assert mapped_kb(paths[1]) <= 8


def test_let_go_unmaps_written_pages_and_keeps_their_data_but_never_a_copy_on_write_map(tmp_path):
    path = tmp_path / "built.bin"
    written = np.memmap(path, dtype=np.int64, mode="w+", shape=(1 << 18,))
    written[:] = np.arange(1 << 18)
    assert mapped_kb(path) >= 1024
    assert mapped.let_go(written) == written.nbytes
    assert mapped_kb(path) == 0
    assert np.array_equal(np.fromfile(path, dtype=np.int64), np.arange(1 << 18))  # the writes are kept
    private = np.memmap(path, dtype=np.int64, mode="c", shape=(1 << 18,))
    private[:] = -1
    assert mapped.let_go(private) == 0  # its writes live only in its pages
    assert (private == -1).all()


def test_track_ignores_writable_and_in_memory_arrays(tmp_path):
    before = mapped.tracked()
    mapped.track(np.zeros(100_000))
    writable = np.lib.format.open_memmap(tmp_path / "w.npy", mode="w+", dtype=np.int64, shape=(100_000,))
    mapped.track(writable)
    assert mapped.tracked() == before


def test_the_loader_keeps_no_cache_or_shard_page_mapped_after_a_micro_batch(tmp_path):
    """A BlendedSamples over a cached table: after fetching, no page of the index cache or of the
    shard stays mapped into the process (they were read, and handed back to the page cache)."""
    from test_sampling_cache import write_shard

    from cpt.config import DataConfig
    from cpt.sampling import DocumentTable, Stream, StreamConfig
    from cpt.sampling.index_cache import IndexCache
    from cpt.train.stream_data import BlendedSamples

    rng = np.random.default_rng(0)
    n = 40_000
    prefix = write_shard(tmp_path / "s", rng.integers(1, 40, n), rng.choice(["zh", "en"], n).tolist(),
                         rng.random(n).tolist())
    cache = IndexCache(tmp_path / "cache")
    table = DocumentTable.from_shards([prefix], ["lang", "ppl"], cache=cache)
    streams = [Stream(table, StreamConfig(name=lang, seq_length=64, filter=f'lang == "{lang}"', order=order),
                      cache=cache) for lang, order in (("zh", "ppl_asc"), ("en", "shuffle"))]
    src = BlendedSamples(streams, [0.5, 0.5], 64, DataConfig(eod_token_id=0), num_workers=0, prefetch=False)
    files = [*(tmp_path / "cache").glob("*/*.npy"), Path(f"{prefix}.bin"), Path(f"{prefix}.idx")]
    assert sum(f.stat().st_size for f in files) > 2_000_000
    for step in range(3):
        src.prepare_step(step * 64, step * 64 + 64)
        batch = src.fetch(np.arange(step * 64, step * 64 + 64, 3))
        assert batch["tokens"].shape == (22, 64)
        assert sum(mapped_kb(f) for f in files) <= 8 * len(files), [(f.parent.name[:6], f.name, mapped_kb(f)) for f in files if mapped_kb(f)]  # at most a partial page at each end
    src.close()
