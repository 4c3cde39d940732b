"""Streams: metadata filters, orders (shuffle per epoch, ppl curriculum), megatron packing, exhaustion."""
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import assume, given, settings, strategies as st
from megatron.core.datasets import helpers_cpp

import cpt.sampling.stream as stream_mod
from cpt.sampling import DocumentTable, FilterError, Stream, StreamConfig, StreamExhausted, read_samples
from cpt.sampling.filters import select


def table(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return DocumentTable.from_columns(
        rng.integers(0, 40, n),
        {
            "lang": rng.choice(["zh", "en", "code"], n).tolist(),
            "topic": rng.choice(["math", "law", "bio"], n).tolist(),
            "ppl": np.round(rng.gamma(2.0, 10.0, n), 1),  # rounded: ties happen
            "topic_conf": rng.random(n),
        },
    )


def test_filter_selects_rows():
    t = table()
    c = t.columns
    got = select('lang == "zh" and topic == "math"', c, len(t))
    np.testing.assert_array_equal(got, (c["lang"] == "zh") & (c["topic"] == "math"))
    got = select('not (lang in ["en", "code"]) or 0.5 < topic_conf <= 0.9', c, len(t))
    want = ~np.isin(c["lang"], ["en", "code"]) | ((c["topic_conf"] > 0.5) & (c["topic_conf"] <= 0.9))
    np.testing.assert_array_equal(got, want)
    assert select(None, c, len(t)).all()


@pytest.mark.parametrize(
    "expr, message",
    [
        ('langg == "zh"', "unknown column 'langg'"),
        ("__import__('os')", "Call is not allowed"),
        ('lang == "zh" and', "not a valid expression"),
        ("lang", "must be a condition"),
        ('lang in "zh"', "needs a list"),
    ],
)
def test_filter_refuses_with_a_clear_message(expr, message):
    t = table()
    with pytest.raises(FilterError, match=message):
        select(expr, t.columns, len(t))


@pytest.mark.parametrize("order", ["ppl_asc", "ppl_desc"])
def test_ppl_orders_are_monotone_across_every_epoch(order):
    t = table(200)
    s = Stream(t, StreamConfig(name="zh", seq_length=16, filter='lang == "zh"', order=order))
    sign = 1 if order == "ppl_asc" else -1
    for epoch in range(3):
        ppl = t.columns["ppl"][s.epoch_rows(epoch)]
        assert np.all(sign * np.diff(ppl) >= 0)
        assert sorted(s.epoch_rows(epoch)) == sorted(np.flatnonzero(t.columns["lang"] == "zh"))
    # and the samples read the documents in that order: first piece of each sample, deduplicated
    seen = []
    for i in range(60):
        for p in s.locate(i):
            if not seen or seen[-1] != p.document:
                seen.append(p.document)
    ppl_seen = t.columns["ppl"][seen[: s.num_documents - 1]]
    assert np.all(sign * np.diff(ppl_seen) >= 0)


def test_ppl_order_needs_scores():
    t = DocumentTable.from_columns([5, 6], {"ppl": [1.0, np.nan]})
    with pytest.raises(ValueError, match="1 selected documents have no finite 'ppl'"):
        Stream(t, StreamConfig(name="x", seq_length=4, order="ppl_asc"))
    with pytest.raises(ValueError, match="needs metadata column 'ppl'"):
        Stream(DocumentTable.from_columns([5]), StreamConfig(name="x", seq_length=4, order="ppl_asc"))


def test_shuffle_is_seeded_and_reshuffled_per_epoch():
    t = table(300)
    cfg = StreamConfig(name="all", seq_length=8, seed=7)
    a, b = Stream(t, cfg), Stream(t, cfg)
    e0, e1 = a.epoch_rows(0), a.epoch_rows(1)
    assert sorted(e0) == list(range(300)) and sorted(e1) == list(range(300))
    assert not np.array_equal(e0, e1)
    np.testing.assert_array_equal(b.epoch_rows(1), e1)
    np.testing.assert_array_equal(b.epoch_rows(0), e0)
    other = Stream(t, StreamConfig(name="all", seq_length=8, seed=8))
    assert not np.array_equal(other.epoch_rows(0), e0)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 40), st.sampled_from(["shuffle", "ppl_asc"]), st.integers(2, 9))
def test_packing_equals_megatron_over_epochs_and_segments(seed, seq, order, segment):
    """Boundaries of the first samples equal megatron's build_sample_idx over the same document order."""
    t = table(int(seed % 40) + 3, seed=seed % 1000)
    old = stream_mod.SEGMENT
    stream_mod.SEGMENT = segment  # tiny segments: many segment and window boundaries
    try:
        s = Stream(t, StreamConfig(name="x", seq_length=seq, order=order, seed=int(seed)))
        epochs = 3
        doc_idx = np.concatenate([s._order(e) for e in range(epochs)]).astype(np.int32)
        lengths = t.lengths[s.rows].astype(np.int32)
        assume(lengths.sum() >= 2)  # megatron's helper asserts more than one token
        want = helpers_cpp.build_sample_idx_int64(lengths, doc_idx, seq, epochs, int(lengths.sum()), True, 1)
        got = [s.boundaries(i)[0] for i in range(len(want))]
        n = s.num_documents
        np.testing.assert_array_equal(np.array(got), want)
        for i in range(len(want) - 1):
            pieces = s.locate(i)
            assert sum(p.stop - p.start for p in pieces) == seq + 1
            (p0, o0), _ = s.boundaries(i)
            assert pieces[0].document == s.rows[s._order(p0 // n)[p0 % n]] or o0 == lengths[s._order(p0 // n)[p0 % n]]
    finally:
        stream_mod.SEGMENT = old


def test_locate_reads_the_right_tokens():
    lengths = [3, 0, 5, 2, 7]
    t = DocumentTable.from_columns(lengths, {"ppl": [5.0, 1.0, 4.0, 2.0, 3.0]}, source="mem")
    s = Stream(t, StreamConfig(name="x", seq_length=4, order="ppl_asc", on_exhausted="stop"))
    # order by ppl: docs 1 (0 tok), 3 (2), 4 (7), 2 (5), 0 (3) -> tokens "d3 d3 d4*7 d2*5 d0*3"
    flat = [d for d in (1, 3, 4, 2, 0) for _ in range(lengths[d])]
    assert s.capacity == (17 - 1) // 4
    for i in range(s.capacity):
        got = [p.document for p in s.locate(i) for _ in range(p.stop - p.start)]
        assert got == flat[4 * i: 4 * i + 5]
        assert all(p.source == "mem" for p in s.locate(i))
    with pytest.raises(StreamExhausted, match="stream 'x' has 4 samples"):
        s.locate(4)


def test_next_epoch_runs_on_and_empty_stream_has_no_samples():
    t = DocumentTable.from_columns([3, 4], {"lang": ["zh", "en"]})
    s = Stream(t, StreamConfig(name="zh", seq_length=5, filter='lang == "zh"'))
    assert s.capacity is None
    assert sum(p.stop - p.start for p in s.locate(100)) == 6  # epoch 200 or so, one 3-token doc
    empty = Stream(t, StreamConfig(name="none", seq_length=5, filter='lang == "fr"'))
    assert empty.capacity == 0
    with pytest.raises(StreamExhausted):
        empty.locate(0)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="StreamConfig.order"):
        StreamConfig(name="x", seq_length=4, order="random")
    with pytest.raises(ValueError, match="StreamConfig.on_exhausted"):
        StreamConfig(name="x", seq_length=4, on_exhausted="loop")
    with pytest.raises(ValueError, match="StreamConfig.seq_length"):
        StreamConfig(name="x", seq_length=0)


def test_stream_over_cpt_shards(tmp_path):
    """The adapter from cpt.shards: lengths from the index, metadata from the sidecar, two prefixes."""
    from cpt.shards.metadata import schema_for
    from cpt.shards.writer import ShardWriter

    rng = np.random.default_rng(3)
    prefixes, all_docs = [], []
    for p in range(2):
        prefix = tmp_path / f"part{p}"
        lengths = rng.integers(1, 30, 20)
        tokens = rng.integers(0, 1000, int(lengths.sum()))
        meta = pa.table({
            "doc_id": pa.array(np.arange(20) + 100 * p, pa.uint64()), "source": ["x"] * 20,
            "line": np.arange(20), "offset": np.full(20, -1), "lang": ["zh", "en"] * 10, "n_tokens": lengths,
        })
        w = ShardWriter(prefix, np.dtype(np.uint16), schema_for())
        w.add(tokens, lengths, meta)
        w.finish({})
        prefixes.append(str(prefix))
        starts = np.concatenate([[0], np.cumsum(lengths)])
        all_docs += [(str(prefix), d, tokens[starts[d]: starts[d + 1]]) for d in range(20)]
    t = DocumentTable.from_shards(prefixes)
    assert len(t) == 40 and len(set(t.fingerprints)) == 2
    s = Stream(t, StreamConfig(name="zh", seq_length=16, filter='lang == "zh"', seed=1))
    from cpt import shards

    opened = {p: shards.open(p) for p in prefixes}
    flat = np.concatenate([opened[t.sources[t.source_of[r]]][int(t.local_index[r])] for r in s.epoch_rows(0)])
    for i in range(5):
        got = np.concatenate([opened[p.source][p.document][p.start:p.stop] for p in s.locate(i)])
        np.testing.assert_array_equal(got, flat[16 * i: 16 * i + 17])
    batch = [4, 2, 2, 5, 0]
    tokens = read_samples(s.pieces(batch), opened.__getitem__, 17)
    np.testing.assert_array_equal(tokens, np.stack([flat[16 * i: 16 * i + 17] for i in batch]))
    assert all(t.columns["lang"][r] == "zh" for r in s.epoch_rows(0))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 1000), st.integers(2, 24), st.lists(st.integers(0, 300), min_size=1, max_size=40))
def test_pieces_of_a_batch_read_the_flat_token_stream(seed, seq, indices):
    """Any batch of indices (unsorted, repeated, across epochs): each sample is flat[seq*i : seq*i + seq + 1]."""
    t = table(25, seed=seed)
    s = Stream(t, StreamConfig(name="x", seq_length=seq, seed=seed))
    epochs = max(indices) * seq // max(int(t.lengths.sum()), 1) + 2
    # document d holds tokens equal to d * 1000 + position, so tokens identify where they came from
    flat = np.concatenate([d * 1000 + np.arange(t.lengths[d]) for e in range(epochs) for d in s.epoch_rows(e)])
    got = s.pieces(indices)
    assert len(got.sample_offsets) == len(indices) + 1
    for k, i in enumerate(indices):
        toks = np.concatenate([p.document * 1000 + np.arange(p.start, p.stop) for p in got.for_sample(k)])
        np.testing.assert_array_equal(toks, flat[seq * i: seq * i + seq + 1])


def test_holdout_split_is_disjoint_deterministic_and_about_the_share():
    n = 4000
    rng = np.random.default_rng(5)
    t = DocumentTable.from_columns(rng.integers(1, 50, n), {
        "doc_id": rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64), "lang": ["zh", "en"] * (n // 2)})

    def rows(split, **kw):
        cfg = StreamConfig(name=split, seq_length=8, filter='lang == "zh"', split=split, holdout=0.1, **kw)
        return set(Stream(t, cfg).rows.tolist())

    train, valid = rows("train"), rows("valid")
    assert not train & valid and train | valid == set(np.flatnonzero(t.columns["lang"] == "zh").tolist())
    assert 0.07 < len(valid) / (n // 2) < 0.13
    assert rows("valid") == valid and rows("valid", holdout_seed=1) != valid
    # a document's side depends on its doc_id only, not on the other documents
    half = DocumentTable.from_columns(t.lengths[:1000], {k: v[:1000] for k, v in t.columns.items()})
    sub = Stream(half, StreamConfig(name="v", seq_length=8, filter='lang == "zh"', split="valid", holdout=0.1))
    assert set(sub.rows.tolist()) == {r for r in valid if r < 1000}
    with pytest.raises(ValueError, match="StreamConfig.holdout needs split"):
        StreamConfig(name="x", seq_length=8, holdout=0.1)
    with pytest.raises(ValueError, match="needs a 'doc_id' metadata column"):
        Stream(DocumentTable.from_columns([5]), StreamConfig(name="x", seq_length=4, split="train", holdout=0.5))


def test_holdout_of_python_ints_equals_holdout_of_the_uint64_array():
    from cpt.sampling.holdout import held_out

    ids = [2**64 - 5, 2**63 + 12345, 17, 2**62 + 1, 2**53 + 1] * 40  # above 2**53 float64 loses bits
    as_array = held_out(np.array(ids, dtype=np.uint64), 0.3, 1)
    assert (held_out(ids, 0.3, 1) == as_array).all() and 0 < as_array.sum() < len(ids)


def test_selection_in_chunks_equals_the_whole_table(monkeypatch):
    """select_rows and the held-out split work a chunk of rows at a time (bounded temporaries at
    100M documents): the same rows as one pass, whatever the chunk size; a bad filter still fails
    on an empty table."""
    from cpt.sampling import filters

    rng = np.random.default_rng(3)
    n = 200
    t = DocumentTable.from_columns(rng.integers(1, 40, n), {
        "lang": rng.choice(["zh", "en", "code"], n).tolist(), "ppl": rng.gamma(2.0, 10.0, n),
        "doc_id": rng.integers(0, 2**62, n).astype(np.uint64)})
    for expr in ['lang == "zh"', 'lang == "zh" and ppl < 15', 'not lang in ["en"] or ppl >= 30', None]:
        want = np.flatnonzero(filters.select(expr, t.columns, len(t)))
        for chunk in (1, 7, 200, 1000):
            np.testing.assert_array_equal(filters.select_rows(expr, t.columns, len(t), chunk), want)
    with pytest.raises(FilterError, match="unknown column"):
        filters.select_rows("nope == 1", {}, 0)
    configs = [StreamConfig(name="zh", seq_length=8, filter='lang == "zh"', split=split, holdout=0.3)
               for split in ("train", "valid")]
    whole = [Stream(t, c) for c in configs]
    monkeypatch.setattr(filters, "SELECT_CHUNK", 3)
    for c, w in zip(configs, whole):
        s = Stream(t, c)
        np.testing.assert_array_equal(s.rows, w.rows)
        np.testing.assert_array_equal(s.pieces([0, 3]).document, w.pieces([0, 3]).document)


def test_doc_hash_samples_documents_by_id_alone_and_independently_of_the_holdout():
    """`doc_hash < p`: about a share p of the documents, the same ones whatever else the table holds
    or the filter says, in chunks too; independent of the held-out split (a sampled stream still
    holds out its share); a table without doc_id is refused naming the column."""
    from cpt.sampling import filters
    from cpt.sampling.holdout import held_out

    n = 4000
    rng = np.random.default_rng(11)
    ids = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    t = DocumentTable.from_columns(rng.integers(1, 50, n), {"doc_id": ids, "lang": ["zh", "en"] * (n // 2)})
    assert filters.filter_columns('lang == "zh" and doc_hash < 0.2') == {"lang", "doc_id"}
    sampled = filters.select("doc_hash < 0.2", t.columns, n)
    assert 0.17 < sampled.mean() < 0.23
    both = filters.select('lang == "zh" and doc_hash < 0.2', t.columns, n)
    np.testing.assert_array_equal(both, sampled & (t.columns["lang"] == "zh"))
    reversed_ids = filters.select("doc_hash < 0.2", {"doc_id": ids[::-1]}, n)
    np.testing.assert_array_equal(reversed_ids, sampled[::-1])  # by id, not by position
    np.testing.assert_array_equal(filters.select_rows("doc_hash < 0.2", t.columns, n, chunk=7), np.flatnonzero(sampled))
    # disjoint bands, and independent of the held-out hash whatever its seed
    upper = filters.select("0.2 <= doc_hash < 0.4", t.columns, n)
    assert not (upper & sampled).any()
    for seed in (0, 1, 2):
        valid = held_out(ids, 0.1, seed)
        assert 0.06 < valid[sampled].mean() < 0.14
    cfg = StreamConfig(name="zh", seq_length=8, filter='lang == "zh" and doc_hash < 0.2', split="valid", holdout=0.1)
    assert set(Stream(t, cfg).rows.tolist()) == set(np.flatnonzero(both & held_out(ids, 0.1, 0)).tolist())
    with pytest.raises(FilterError, match="computed from a 'doc_id' column"):
        filters.select("doc_hash < 0.5", {"lang": t.columns["lang"]}, n)


@pytest.mark.parametrize("order", ["ppl_asc", "ppl_desc"])
def test_ppl_bands_read_band_after_band_each_in_a_seeded_order(order):
    t = table(400)
    ppl = np.asarray(t.columns["ppl"])
    sign = 1 if order == "ppl_asc" else -1
    strict = Stream(t, StreamConfig(name="zh", seq_length=16, order=order)).epoch_rows(0)
    banded = Stream(t, StreamConfig(name="zh", seq_length=16, order=order, ppl_bands=4, seed=5))
    rows = banded.epoch_rows(0)
    bands = np.array_split(rows, 4)
    assert [len(b) for b in bands] == [100] * 4
    for k, band in enumerate(bands):  # each band holds the documents of its quarter of the strict order
        assert sorted(band) == sorted(strict[100 * k: 100 * (k + 1)])
        assert not np.all(sign * np.diff(ppl[band]) >= 0)  # and is not read sorted
    for first, then in zip(bands, bands[1:]):  # no document of a band is further along than one of the next
        assert (sign * ppl[first]).max() <= (sign * ppl[then]).min()
    for epoch in (1, 2):  # like the strict ppl orders, the same in every epoch
        np.testing.assert_array_equal(banded.epoch_rows(epoch), rows)
    again = Stream(t, StreamConfig(name="zh", seq_length=16, order=order, ppl_bands=4, seed=5)).epoch_rows(0)
    other = Stream(t, StreamConfig(name="zh", seq_length=16, order=order, ppl_bands=4, seed=6)).epoch_rows(0)
    np.testing.assert_array_equal(again, rows)
    assert not np.array_equal(other, rows) and sorted(other) == sorted(rows)


def test_one_band_per_document_or_one_band_is_the_strict_order():
    t = table(50)
    strict = Stream(t, StreamConfig(name="x", seq_length=8, order="ppl_asc")).epoch_rows(0)
    for bands in (1, 50, 80):
        s = Stream(t, StreamConfig(name="x", seq_length=8, order="ppl_asc", ppl_bands=bands, seed=3))
        np.testing.assert_array_equal(s.epoch_rows(0), strict)


def test_ppl_bands_at_one_keep_the_fingerprint_streams_had_before_the_field():
    """Checkpoints, traces and index caches keyed by a stream's fingerprint stay valid across the addition."""
    import hashlib
    import json
    from dataclasses import asdict

    t = table()
    cfg = StreamConfig(name="x", seq_length=8, order="ppl_asc", seed=3)
    before = {k: v for k, v in asdict(cfg).items() if k != "ppl_bands"}
    blob = json.dumps({"table": t.fingerprint, "config": before}, sort_keys=True)
    assert Stream(t, cfg).fingerprint == hashlib.sha256(blob.encode()).hexdigest()[:16]
    banded = Stream(t, StreamConfig(name="x", seq_length=8, order="ppl_asc", seed=3, ppl_bands=2))
    assert banded.fingerprint != Stream(t, cfg).fingerprint


def test_ppl_bands_config_errors():
    with pytest.raises(ValueError, match="ppl_bands=3 needs order ppl_asc or ppl_desc"):
        StreamConfig(name="x", seq_length=4, ppl_bands=3)
    with pytest.raises(ValueError, match="ppl_bands must be >= 1"):
        StreamConfig(name="x", seq_length=4, order="ppl_asc", ppl_bands=0)
