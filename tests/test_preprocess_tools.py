"""Megatron-style entry scripts (tools/preprocess_data.py, tools/merge_datasets.py), `cpt merge`
and `cpt inspect` on tiny corpora."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

import cpt.shards as shards
from cpt.assets import mistral_tokenizer_dir
from cpt.commands import inspect as inspect_cmd
from cpt.commands import merge as merge_cmd
from cpt.tokenizers import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
SP_MODEL = mistral_tokenizer_dir() / "tokenizer.model.v1"
TEXTS = [f"Record {i}: 中文 and English, with code `x = {i}`." for i in range(25)]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def corpus(tmp_path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"text": t, "title": f"t{i}"}) + "\n" for i, t in enumerate(TEXTS)))
    return path


def _megatron_args(corpus: Path, prefix: Path, *extra: str) -> list[str]:
    return ["--input", str(corpus), "--output-prefix", str(prefix), "--tokenizer-type", "SentencePieceTokenizer",
            "--tokenizer-model", str(SP_MODEL), "--workers", "1", "--no-progress", *extra]


def test_preprocess_data_megatron_flags_and_names(corpus, tmp_path):
    tool = _tool("preprocess_data")
    assert tool.main(_megatron_args(corpus, tmp_path / "my", "--partitions", "2", "--log-interval", "10")) == 0
    tok = load_tokenizer(SP_MODEL)
    shard = shards.open(tmp_path / "my_text_document", expect_tokenizer=tok)
    assert [shard[i].tolist() for i in range(len(shard))] == tok.encode_batch(TEXTS)  # Megatron: no EOD unless asked
    assert tool.main(_megatron_args(corpus, tmp_path / "eod", "--append-eod")) == 0
    assert shards.open(tmp_path / "eod_text_document")[0].tolist() == tok.encode(TEXTS[0]) + [tok.eod]


def test_preprocess_data_refuses_unsupported_flags(corpus, tmp_path, capsys):
    tool = _tool("preprocess_data")
    assert tool.main(_megatron_args(corpus, tmp_path / "x", "--split-sentences")) == 2
    assert "--split-sentences is not supported" in capsys.readouterr().err


def test_shard_outputs_merged_by_both_merge_tools(corpus, tmp_path):
    tool = _tool("preprocess_data")
    assert tool.main(_megatron_args(corpus, tmp_path / "one", "--append-eod", "--chunk-mb", "0.0005")) == 0
    parts = tmp_path / "parts"
    parts.mkdir()
    for i in range(3):
        args = _megatron_args(corpus, parts / f"p{i}", "--append-eod", "--chunk-mb", "0.0005",
                              "--shard-index", str(i), "--num-shards", "3")
        assert tool.main(args) == 0
    for f in parts.glob("*.summary.json"):
        f.unlink()
    assert _tool("merge_datasets").main(["--input", str(parts), "--output-prefix", str(tmp_path / "m1")]) == 0
    assert merge_cmd.main(["--input", str(parts), "--output-prefix", str(tmp_path / "m2")]) == 0
    for suffix in (".bin", ".idx", ".meta.parquet", ".manifest.json"):
        one = Path(f"{tmp_path / 'one_text_document'}{suffix}").read_bytes()
        assert Path(f"{tmp_path / 'm1'}{suffix}").read_bytes() == one
        assert Path(f"{tmp_path / 'm2'}{suffix}").read_bytes() == one


def test_merge_datasets_on_plain_megatron_shards(corpus, tmp_path):
    tool = _tool("preprocess_data")
    plain = tmp_path / "plain"
    plain.mkdir()
    for i in range(2):
        assert tool.main(_megatron_args(corpus, tmp_path / f"s{i}", "--append-eod")) == 0
        for suffix in (".bin", ".idx"):
            shutil.copy(f"{tmp_path / f's{i}_text_document'}{suffix}", plain / f"s{i}{suffix}")
    assert _tool("merge_datasets").main(["--input", str(plain), "--output-prefix", str(tmp_path / "m")]) == 0
    merged = shards.open(tmp_path / "m", require_manifest=False)
    single = shards.open(tmp_path / "s0_text_document")
    assert len(merged) == 2 * len(single)
    assert merged[len(single)].tolist() == single[0].tolist()


def test_inspect_shows_counts_breakdowns_and_samples(corpus, tmp_path, capsys):
    tool = _tool("preprocess_data")
    assert tool.main(_megatron_args(corpus, tmp_path / "i", "--append-eod", "--keep-fields", "title")) == 0
    capsys.readouterr()
    prefix = f"{tmp_path / 'i'}_text_document"
    shards.update_metadata(prefix, {"topic": ["math" if i % 2 else "news" for i in range(len(TEXTS))]})
    assert inspect_cmd.main([prefix, "--tokenizer-model", str(SP_MODEL), "--samples", "2", "--verify"]) == 0
    out = capsys.readouterr().out
    assert f"{len(TEXTS)} documents" in out and "tokens by lang:" in out and "tokens by topic:" in out
    assert "math" in out and "--- document 1" in out and "Record 1:" in out
    Path(f"{prefix}.bin").write_bytes(b"")
    assert inspect_cmd.main([prefix]) == 1
    assert "refusing shard" in capsys.readouterr().err
