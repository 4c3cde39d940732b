"""The on-disk index cache: same samples as without it, keyed on everything that changes them,
never read half-built, built once when two processes ask at the same time."""
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import cpt.sampling.stream as stream_mod
from cpt.sampling import DocumentTable, Stream, StreamConfig
from cpt.sampling.columns import Categorical
from cpt.sampling.index_cache import IndexCache, is_complete


def table(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return DocumentTable.from_columns(
        rng.integers(0, 200, n),
        {
            "lang": rng.choice(["zh", "en"], n).tolist(),
            "topic": rng.choice(["math", "law", "bio"], n).tolist(),
            "ppl": np.round(rng.gamma(2.0, 10.0, n), 1),
            "doc_id": rng.integers(0, 2**63, n).astype(np.uint64),
        },
    )


def assert_same_samples(a: Stream, b: Stream, indices) -> None:
    pa_, pb = a.pieces(indices), b.pieces(indices)
    for name in ("sample_offsets", "source", "document", "start", "stop"):
        np.testing.assert_array_equal(getattr(pa_, name), getattr(pb, name), err_msg=name)


CONFIGS = [
    dict(order="shuffle", seed=7),
    dict(order="ppl_asc", filter='lang == "zh"'),
    dict(order="ppl_desc", filter='topic in ["math", "law"]', on_exhausted="stop"),
    dict(order="ppl_asc", ppl_bands=3, seed=4, filter='lang != "code"'),
    dict(order="shuffle", split="train", holdout=0.2, holdout_seed=3),
    dict(order="shuffle", split="valid", holdout=0.2, holdout_seed=3, filter='lang != "en"'),
]


@pytest.mark.parametrize("segment, samples", [(65536, None), (64, None), (64, 2000)])
@pytest.mark.parametrize("kw", CONFIGS)
def test_cached_stream_gives_the_uncached_samples(tmp_path, monkeypatch, segment, samples, kw):
    """Cold build, then a warm open: both equal the stream without a cache, inside and past the cached epochs."""
    monkeypatch.setattr(stream_mod, "SEGMENT", segment)
    t = table()
    cfg = StreamConfig(name="s", seq_length=32, **kw)
    plain = Stream(t, cfg)
    cold = Stream(t, cfg, cache=IndexCache(tmp_path), cache_samples=samples)
    warm = Stream(t, cfg, cache=IndexCache(tmp_path), cache_samples=samples)
    assert (cold.cache_hit, warm.cache_hit) == (False, True)
    assert isinstance(warm.rows, np.memmap) or len(warm.rows) * 8 <= 4096
    cap = plain.capacity or 6 * (plain.tokens_per_epoch // 32)
    rng = np.random.default_rng(0)
    idx = np.concatenate([np.arange(min(cap, 400)), rng.integers(0, cap, 200), [cap - 1]])
    for s in (cold, warm):
        assert (s.capacity, s.tokens_per_epoch, s.num_documents) == (plain.capacity, plain.tokens_per_epoch,
                                                                    plain.num_documents)
        assert s.fingerprint == plain.fingerprint
        assert_same_samples(plain, s, idx)
        assert_same_samples(plain, s, idx[::-1])  # resume-like: deep first, then from the start


def test_an_entry_covering_too_few_epochs_is_rebuilt_with_more(tmp_path):
    from cpt.sampling.stream_cache import epochs_for

    t = table()
    cfg = StreamConfig(name="s", seq_length=32, seed=3)
    cache = IndexCache(tmp_path)
    one = Stream(t, cfg, cache=cache)
    per_epoch = one.tokens_per_epoch // 32
    more = Stream(t, cfg, cache=cache, cache_samples=5 * per_epoch)  # needs 5 epochs: 8 cached
    again = Stream(t, cfg, cache=cache, cache_samples=3 * per_epoch)
    assert (one.cache_hit, more.cache_hit, again.cache_hit) == (False, False, True)
    assert epochs_for(5 * per_epoch, one.tokens_per_epoch, 32) == 8 and len(again._stored_orders) >= 8
    assert len(list(tmp_path.glob("stream-*"))) == 1
    # deep reads come from the cache: no permutation is computed in memory
    idx = np.arange(0, 7 * per_epoch, 7)
    assert_same_samples(Stream(t, cfg), again, idx)
    assert not again._epochs and not again._segments


def test_cursors_reach_past_the_cached_epochs_without_packing_from_the_start(tmp_path, monkeypatch):
    """A stream read for many more epochs than the cache packs keeps a cursor per packing segment for
    all the expected reads: a deep sample packs its own segment only, and equals the uncached one."""
    from cpt.sampling.stream_cache import MAX_EPOCHS

    monkeypatch.setattr(stream_mod, "SEGMENT", 64)
    t = table()
    cfg = StreamConfig(name="s", seq_length=32, seed=5)
    per_epoch = Stream(t, cfg).tokens_per_epoch // 32
    deep = (3 * MAX_EPOCHS) * per_epoch
    Stream(t, cfg, cache=IndexCache(tmp_path), cache_samples=deep + 1000)
    warm = Stream(t, cfg, cache=IndexCache(tmp_path))  # trace's open: whatever the entry covers
    assert warm.cache_hit and len(warm._cursor_table) * warm._seg_len > deep
    packed = []
    real = Stream._segment
    monkeypatch.setattr(Stream, "_segment", lambda self, k: (self is warm and packed.append(k)) or real(self, k))
    idx = np.array([deep, deep + 1, deep + 37])
    assert_same_samples(Stream(t, cfg), warm, idx)
    assert sorted(set(packed)) == sorted(set((idx // warm._seg_len).tolist()))  # its own segments, not from 0


def test_key_changes_with_filter_seed_shard_and_metadata(tmp_path):
    from cpt.sampling.stream_cache import stream_fields

    cache = IndexCache(tmp_path)
    t = table()
    base = StreamConfig(name="s", seq_length=32, filter='lang == "zh"', seed=1)
    path = lambda tab, cfg: cache.path_of("stream", stream_fields(tab, cfg))
    keys = {
        path(t, base),
        path(t, StreamConfig(name="s", seq_length=32, filter='lang == "en"', seed=1)),
        path(t, StreamConfig(name="s", seq_length=32, filter='lang == "zh"', seed=2)),
        path(t, StreamConfig(name="s", seq_length=64, filter='lang == "zh"', seed=1)),
        path(table(seed=1), base),  # other documents
        path(t, StreamConfig(name="s", seq_length=32, filter='lang == "zh"', seed=1, order="ppl_asc")),
        path(t, StreamConfig(name="s", seq_length=32, filter='lang == "zh"', seed=1, order="ppl_asc", ppl_bands=2)),
    }
    other_meta = DocumentTable.from_columns(t.lengths, {**{k: v for k, v in t.columns.items()},
                                                      "ppl": np.asarray(t.columns["ppl"]) + 1})
    keys.add(path(other_meta, base))
    assert len(keys) == 8
    assert path(t, base) == path(table(), base)  # same content, same key


def write_shard(prefix, lengths, lang, ppl, seed=0):
    from cpt.shards.metadata import schema_for
    from cpt.shards.writer import ShardWriter

    rng = np.random.default_rng(seed)
    n = len(lengths)
    meta = pa.table({
        "doc_id": pa.array(np.arange(n) + 1000 * seed, pa.uint64()), "source": ["x"] * n, "line": np.arange(n),
        "offset": np.full(n, -1), "lang": lang, "n_tokens": lengths,
    })
    w = ShardWriter(prefix, np.dtype(np.uint16), schema_for())
    w.add(rng.integers(0, 1000, int(np.sum(lengths))), np.asarray(lengths), meta)
    w.finish({})
    from cpt import shards

    shards.update_metadata(str(prefix), {"ppl": ppl})
    return str(prefix)


def test_table_cache_over_shards_hits_and_invalidates(tmp_path):
    from cpt import shards

    rng = np.random.default_rng(5)
    prefixes = [write_shard(tmp_path / f"p{k}", rng.integers(1, 50, 30), ["zh", "en", "zh"] * 10,
                            rng.random(30).tolist(), seed=k) for k in range(2)]
    cache = IndexCache(tmp_path / "cache")
    plain = DocumentTable.from_shards(prefixes, ["lang", "ppl", "doc_id"])
    cold = DocumentTable.from_shards(prefixes, ["lang", "ppl", "doc_id"], cache=cache)
    warm = DocumentTable.from_shards(prefixes, ["lang", "ppl", "doc_id"], cache=cache)
    assert len(list(cache.root.glob("table-*"))) == 1
    for got in (cold, warm):
        np.testing.assert_array_equal(got.lengths, plain.lengths)
        np.testing.assert_array_equal(got.local_index, plain.local_index)
        np.testing.assert_array_equal(got.source_of, plain.source_of)
        assert got.sources == tuple(str(Path(p).resolve()) for p in plain.sources)
        assert got.fingerprint == plain.fingerprint
        assert isinstance(got.columns["lang"], Categorical)
        assert np.asarray(got.columns["lang"]).tolist() == np.asarray(plain.columns["lang"]).tolist()
        np.testing.assert_array_equal(got.columns["ppl"], plain.columns["ppl"])
    assert isinstance(warm.lengths, np.ndarray)
    # another column set, a re-scored shard, another shard: each a new entry
    DocumentTable.from_shards(prefixes, ["lang"], cache=cache)
    assert len(list(cache.root.glob("table-*"))) == 2
    shards.update_metadata(prefixes[1], {"ppl": rng.random(30).tolist()})
    rescored = DocumentTable.from_shards(prefixes, ["lang", "ppl", "doc_id"], cache=cache)
    assert len(list(cache.root.glob("table-*"))) == 3 and rescored.fingerprint != plain.fingerprint
    DocumentTable.from_shards(prefixes[:1], ["lang", "ppl", "doc_id"], cache=cache)
    assert len(list(cache.root.glob("table-*"))) == 4
    # streams over the cached table: the same samples as over the plain one
    cfg = StreamConfig(name="zh", seq_length=8, filter='lang == "zh"', order="ppl_asc")
    assert_same_samples(Stream(plain, cfg), Stream(warm, cfg, cache=cache), np.arange(20))


_KILLED_BUILD = """
import os, signal, sys
import numpy as np
from cpt.sampling.index_cache import IndexCache
def build(b):
    b.save("a", np.arange(10))
    os.kill(os.getpid(), signal.SIGKILL)
IndexCache(sys.argv[1]).get("demo", {"k": 1}, build)
"""


def test_a_killed_build_is_never_read_as_complete(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", _KILLED_BUILD, str(tmp_path)], env=env)
    assert proc.returncode == -signal.SIGKILL
    cache = IndexCache(tmp_path)
    assert cache.lookup("demo", {"k": 1}) is None
    assert not is_complete(cache.path_of("demo", {"k": 1}))
    assert list(tmp_path.glob(".demo-*-*"))  # the half-written folder is there, under a temporary name
    entry = cache.get("demo", {"k": 1}, lambda b: b.save("a", np.arange(3)))
    assert entry.hit is False and entry.array("a").tolist() == [0, 1, 2]
    assert not list(tmp_path.glob(".demo-*-*"))  # removed by the next build


def _slow_build(args):
    root, log = args
    def build(b):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        b.save("a", np.arange(5))
    entry = IndexCache(root).get("demo", {"k": 2}, build)
    return str(entry.path), entry.array("a").tolist()


def test_two_processes_building_at_once_build_one(tmp_path):
    log = tmp_path / "builds.log"
    with mp.get_context("spawn").Pool(2) as pool:
        results = pool.map(_slow_build, [(str(tmp_path / "c"), str(log))] * 2)
    assert results[0] == results[1]
    assert len(log.read_text().split()) == 1
    assert len(list((tmp_path / "c").glob("demo-*"))) == 1


def test_shard_tokens_read_what_the_shard_reads(tmp_path):
    from cpt import shards
    from cpt.sampling.reading import ShardTokens

    rng = np.random.default_rng(2)
    prefix = write_shard(tmp_path / "p", rng.integers(0, 20, 25), ["zh"] * 25, rng.random(25).tolist())
    shard = shards.open(prefix)
    light = ShardTokens(shard)
    for d in range(len(shard)):
        np.testing.assert_array_equal(light[d], shard[d])
