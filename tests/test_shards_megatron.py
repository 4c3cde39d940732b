"""Round trips against megatron-core's own IndexedDataset / IndexedDatasetBuilder (uint16 and int32).

All megatron imports live in this one module: importing megatron.core takes ~9 s.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

import cpt.shards as shards
from cpt.shards.format import ShardError, write_idx
from cpt.shards.merge import merge_plain
from cpt.shards.metadata import schema_for
from cpt.shards.writer import ShardWriter

DTYPES = [np.uint16, np.int32]


def _docs(dtype, n=37, seed=0):
    rng = np.random.default_rng(seed)
    high = 65000 if dtype == np.uint16 else 200_000
    docs = [rng.integers(0, high, size=int(rng.integers(1, 60))) for _ in range(n)]
    docs.append(np.array([high - 1]))  # largest id survives the dtype
    return docs


def _write_ours(prefix, dtype, docs):
    import pyarrow as pa

    writer = ShardWriter(prefix, np.dtype(dtype), schema_for())
    lengths = np.array([len(d) for d in docs])
    meta = pa.table({
        "doc_id": pa.array(np.arange(len(docs), dtype=np.uint64)), "source": ["s"] * len(docs),
        "line": np.arange(len(docs)), "offset": np.zeros(len(docs), np.int64), "lang": ["en"] * len(docs),
        "n_tokens": lengths,
    })
    writer.add(np.concatenate(docs), lengths, meta)
    return writer.finish({"tokenizer": {"sha256": "x", "name": "synthetic"}})


@pytest.mark.parametrize("dtype", DTYPES)
def test_our_writer_is_read_by_megatron(tmp_path, dtype):
    docs = _docs(dtype)
    _write_ours(tmp_path / "ours", dtype, docs)
    ds = IndexedDataset(str(tmp_path / "ours"))
    assert len(ds) == len(docs)
    assert ds.index.dtype == dtype
    np.testing.assert_array_equal(ds.document_indices, np.arange(len(docs) + 1))
    for i, doc in enumerate(docs):
        np.testing.assert_array_equal(ds[i], doc)
        if len(doc) >= 3:
            np.testing.assert_array_equal(ds.get(i, offset=1, length=2), doc[1:3])


@pytest.mark.parametrize("dtype", DTYPES)
def test_byte_identical_to_megatron_builder(tmp_path, dtype):
    docs = _docs(dtype, seed=1)
    builder = IndexedDatasetBuilder(str(tmp_path / "meg.bin"), dtype=dtype)
    for doc in docs:
        builder.add_document(torch.from_numpy(doc.astype(np.int64)), [len(doc)])
    builder.finalize(str(tmp_path / "meg.idx"))
    _write_ours(tmp_path / "ours", dtype, docs)
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"ours{suffix}").read_bytes() == (tmp_path / f"meg{suffix}").read_bytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_megatron_builder_is_read_by_ours(tmp_path, dtype):
    docs = _docs(dtype, seed=2)
    builder = IndexedDatasetBuilder(str(tmp_path / "meg.bin"), dtype=dtype)
    # a document of several sequences (Megatron's --split-sentences), then one-sequence documents
    builder.add_document(torch.from_numpy(np.concatenate(docs[:3]).astype(np.int64)), [len(d) for d in docs[:3]])
    for doc in docs[3:]:
        builder.add_item(torch.from_numpy(doc.astype(np.int64)))
        builder.end_document()
    builder.finalize(str(tmp_path / "meg.idx"))
    with pytest.raises(ShardError, match="manifest.json is missing"):
        shards.open(tmp_path / "meg")
    shard = shards.open(tmp_path / "meg", require_manifest=False)
    assert shard.dtype == dtype and len(shard) == len(docs) - 2
    np.testing.assert_array_equal(shard[0], np.concatenate(docs[:3]))
    for i, doc in enumerate(docs[3:], start=1):
        np.testing.assert_array_equal(shard[i], doc)
    assert shard.doc_lengths[0] == sum(len(d) for d in docs[:3])


def test_plain_merge_matches_megatron_add_index(tmp_path):
    parts = []
    for k in range(3):
        docs = _docs(np.uint16, n=5 + k, seed=10 + k)
        builder = IndexedDatasetBuilder(str(tmp_path / f"p{k}.bin"), dtype=np.uint16)
        builder.add_document(torch.from_numpy(np.concatenate(docs[:2]).astype(np.int64)), [len(docs[0]), len(docs[1])])
        for doc in docs[2:]:
            builder.add_document(torch.from_numpy(doc.astype(np.int64)), [len(doc)])
        builder.finalize(str(tmp_path / f"p{k}.idx"))
        parts.append(tmp_path / f"p{k}")
    merged = IndexedDatasetBuilder(str(tmp_path / "meg.bin"), dtype=np.uint16)
    for p in parts:
        merged.add_index(str(p))
    merged.finalize(str(tmp_path / "meg.idx"))
    merge_plain(parts, tmp_path / "ours")
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"ours{suffix}").read_bytes() == (tmp_path / f"meg{suffix}").read_bytes()


def test_preprocess_output_read_by_megatron(tmp_path):
    from cpt.assets import cl100k_file
    from cpt.shards.pipeline import PreprocessConfig, run_preprocess
    from cpt.tokenizers import load_tokenizer

    texts = [f"Document {i}: the quick brown fox jumps over {i * 7} lazy dogs." for i in range(40)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    run_preprocess(PreprocessConfig(
        inputs=[str(tmp_path / "in.jsonl")], output_prefix=str(tmp_path / "out"), tokenizer=str(cl100k_file()),
        workers=1, chunk_mb=0.001, progress=False, engine="reference",
    ))
    tok = load_tokenizer(cl100k_file())
    ds = IndexedDataset(str(tmp_path / "out"))
    assert ds.index.dtype == np.int32  # cl100k's 100,277 ids do not fit uint16
    for i, text in enumerate(texts):
        np.testing.assert_array_equal(ds[i], tok.encode(text) + [tok.eod])


def test_write_idx_header_constants_match_megatron():
    from megatron.core.datasets import indexed_dataset as m

    from cpt.shards import format as f

    assert f.MAGIC == m._INDEX_HEADER
    for code, dtype in f.DTYPE_CODES.items():
        assert m.DType.code_from_dtype(dtype) == code
    assert shards.optimal_dtype(65499) == m.DType.optimal_dtype(65499)
    assert shards.optimal_dtype(65500) == m.DType.optimal_dtype(65500)
    assert write_idx  # the writer used above


def test_megatron_tiktokenizer_json_ids_match_megatron(tmp_path):
    """A Megatron TikTokenizer vocabulary (JSON list of rank/token_bytes/token_str) gives megatron's ids."""
    from megatron.core.tokenizers.text.libraries.tiktoken_tokenizer import TikTokenTokenizer

    from cpt.assets import mistral_tokenizer_dir
    from cpt.tokenizers import load_tokenizer

    vocab = json.loads((mistral_tokenizer_dir() / "tekken_240911.json").read_text())["vocab"][:20000]
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(vocab))
    reference = TikTokenTokenizer(str(path), vocab_size=21000)
    ours = load_tokenizer(path, kind="TikTokenizer", vocab_size=21000)
    texts = ["Hello world, 你好世界!", "def f(x):\n    return x + 12345\n\n", "  spaces\tand\ttabs  ", "Ünïcödé ßtraße"]
    assert ours.encode_batch(texts) == [reference.text_to_ids(t) for t in texts]
    assert (ours.eod, ours.vocab_size) == (reference.eos_id, reference.vocab_size)
