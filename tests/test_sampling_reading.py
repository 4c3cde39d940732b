"""Token reads of the loader: exactly the pieces' bytes (pread, advised ahead), never a read-around
of a mapped `.bin`; index maps are marked random so a fault reads one page, not a window."""
from __future__ import annotations

import ctypes
import mmap
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from cpt import shards
from cpt.sampling import DocumentTable, Stream, StreamConfig, mapped, read_samples
from cpt.sampling.reading import ShardTokens, shard_tokens
from cpt.shards.format import write_idx

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and page-cache residency")


def resident_bytes(path: Path) -> int:
    """Bytes of `path` in the page cache (mincore over a map of its own, which touches no page)."""
    size = path.stat().st_size
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
    view = np.memmap(path, dtype=np.uint8, mode="r")  # mapping touches no page
    vec = ctypes.create_string_buffer(-(-size // mmap.PAGESIZE))
    assert libc.mincore(view.ctypes.data, size, vec) == 0, os.strerror(ctypes.get_errno())
    del view
    return sum(b & 1 for b in vec.raw) * mmap.PAGESIZE


def vm_flags(path: Path) -> list[bool]:
    """For each mapping of `path` in this process: whether it is marked random (VmFlags `rr`)."""
    out, inside = [], False
    for line in open("/proc/self/smaps"):
        head = line.split()
        if "-" in head[0] and len(head) >= 5 and ":" in head[3]:
            inside = len(head) > 5 and head[5] == str(path)
        elif inside and head[0] == "VmFlags:":
            out.append("rr" in head[1:])
    return out


def dense_shard(prefix: Path, lengths: np.ndarray, seed: int = 0) -> np.ndarray:
    """A plain shard with real (non-zero) tokens, written to disk and dropped from the page cache."""
    tokens = np.random.default_rng(seed).integers(1, 60000, int(lengths.sum())).astype(np.uint16)
    with open(f"{prefix}.bin", "wb") as f:
        f.write(tokens.tobytes())
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    with open(f"{prefix}.idx", "wb") as f:
        write_idx(f, np.uint16, lengths)
    return tokens


def test_reading_pieces_caches_only_their_pages(tmp_path):
    """20 scattered documents of a 64 MB shard: the page cache gains about their pages, not a
    read-ahead window around each (a fault on a mapped .bin reads >= 128 kB around it)."""
    lengths = np.full(32 * 1024, 1024, np.int32)  # 2 kB documents, 64 MB
    tokens = dense_shard(tmp_path / "s", lengths)
    bin_file = tmp_path / "s.bin"
    if resident_bytes(bin_file) > 1 << 20:
        pytest.skip("this file system keeps written files in memory (tmpfs?)")
    reader = ShardTokens(shards.open(tmp_path / "s", require_manifest=False))
    docs = np.random.default_rng(1).choice(len(lengths), 20, replace=False)
    for d in docs.tolist():
        np.testing.assert_array_equal(reader[d], tokens[1024 * d: 1024 * (d + 1)])
    assert resident_bytes(bin_file) <= 20 * 64 * 1024


def test_read_samples_through_the_reader_equal_the_shard(tmp_path):
    from test_sampling_cache import write_shard

    rng = np.random.default_rng(3)
    prefixes = [write_shard(tmp_path / f"p{k}", rng.integers(1, 30, 200), ["zh", "en"] * 100,
                            rng.random(200).tolist(), seed=k) for k in range(2)]
    s = Stream(DocumentTable.from_shards(prefixes), StreamConfig(name="zh", seq_length=32, filter='lang == "zh"'))
    batch = [7, 0, 3, 3, 11]
    opened = {p: shards.open(p) for p in prefixes}
    want = read_samples(s.pieces(batch), opened.__getitem__, 33)
    got = read_samples(s.pieces(batch), shard_tokens, 33)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int64 and got.shape == (5, 33)


def test_a_range_past_its_document_is_refused(tmp_path):
    dense_shard(tmp_path / "s", np.array([5, 7, 3], np.int32))
    reader = ShardTokens(shards.open(tmp_path / "s", require_manifest=False))
    np.testing.assert_array_equal(reader.offsets(np.array([1]), np.array([2]), np.array([7])), [2 * (5 + 2)])
    with pytest.raises(ValueError, match=r"s\.bin: tokens \[2, 8\) of document 1, which has 7"):
        reader.offsets(np.array([1]), np.array([2]), np.array([8]))


def test_tracked_maps_are_read_at_random(tmp_path):
    """MADV_RANDOM shows as `rr` in the mapping's VmFlags: a fault reads its page, not a window."""
    path = tmp_path / "a.npy"
    np.save(path, np.arange(100_000, dtype=np.int64))
    arr = mapped.track(np.load(path, mmap_mode="r"))
    assert vm_flags(path) == [True]  # one area (not split at the header page), marked random
    assert int(arr[-1]) == 99_999


def test_scanning_gives_normal_read_ahead_back_for_its_block(tmp_path):
    path = tmp_path / "b.npy"
    np.save(path, np.arange(100_000, dtype=np.int64))
    arr = mapped.track(np.load(path, mmap_mode="r"))
    assert vm_flags(path) == [True]
    with mapped.scanning():
        with mapped.scanning():  # nested (or another thread's): random again only after the last
            assert vm_flags(path) == [False]
        assert vm_flags(path) == [False]
    assert vm_flags(path) == [True]
    assert int(arr.sum()) == 99_999 * 100_000 // 2
