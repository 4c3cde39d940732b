"""Scale-out of cpt tag / cpt score: the slices of --shard-index/--num-shards cover the input in whole
blocks, and the merged parts equal one run's output bit for bit (real SmolLM2 scores, a real shard
and a raw corpus); a merge refuses missing, unfinished and mismatched parts."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from annotate_fixtures import mixed_corpus
from cpt import assets
from cpt.annotate.docs import write_jsonl
from cpt.annotate.inputs import run_inputs
from cpt.annotate.perplexity import PerplexityAnnotator, PerplexityAnnotatorFactory
from cpt.annotate.runner import Ready
from cpt.annotate.scaleout import MergeError, Slice, doc_range
from cpt.cli import build_parser, main

pytestmark = pytest.mark.slow
COLUMNS = PerplexityAnnotator.columns
SCORE = ["--device", "cpu", "--max-length", "24", "--stride", "12", "--max-doc-tokens", "40",
         "--chunk-size", "2", "--no-progress"]


@pytest.mark.parametrize("n_docs, chunk, count", [(0, 3, 2), (1, 3, 4), (17, 3, 1), (17, 3, 4), (40, 4, 7)])
def test_slices_are_whole_blocks_that_cover_the_input_once(n_docs, chunk, count):
    sizes = [(i * 37) % 11 + 1 for i in range(n_docs)]
    ranges = [doc_range(sizes, chunk, Slice(i, count)) for i in range(count)]
    assert ranges == [doc_range(sizes, chunk, Slice(i, count)) for i in range(count)]  # deterministic
    covered = [d for start, stop in ranges for d in range(start, stop)]
    assert covered == list(range(n_docs))
    assert all(start % chunk == 0 for start, stop in ranges if stop > start)
    with pytest.raises(ValueError, match="shard-index must be in"):
        Slice(count, count)


@pytest.fixture(scope="module")
def model_dir() -> str:
    return str(assets.smollm2_hf_dir())


@pytest.fixture(scope="module")
def factory(model_dir):
    """One model load for every run: the tasks run in process through the commands' own
    `run_inputs` (the merges, which load no model, through the command line)."""
    import torch

    torch.set_num_threads(1)  # tiny batches: one thread is faster, and far faster on a busy machine
    return Ready(PerplexityAnnotatorFactory(model_dir, device="cpu", max_length=24, stride=12,
                                            max_doc_tokens=40)())


def _run(factory, argv: list[str]) -> None:
    args = build_parser().parse_args(["score", "--model", "unused", *SCORE, *argv])
    run_inputs(args, factory, "ppl", COLUMNS, {"annotator": "ppl", "test": True})


def _shard(tmp_path, name: str, model_dir: str):
    from cpt.shards.pipeline import PreprocessConfig, run_preprocess

    folder = tmp_path / "in"
    if not folder.exists():
        folder.mkdir()
        docs = mixed_corpus(n_zh=3, n_en=3)
        write_jsonl(folder / "c.jsonl", [{"text": d["text"][:200]} for d in docs] + [{"text": "ok"}])
    prefix = tmp_path / name
    run_preprocess(PreprocessConfig(inputs=[str(folder)], output_prefix=str(prefix), tokenizer=model_dir,
                                    progress=False))
    return prefix


def test_sharded_score_of_a_shard_merges_into_the_one_run_sidecar(factory, model_dir, tmp_path, capsys):
    import cpt.shards as shards

    one, many = _shard(tmp_path, "one", model_dir), _shard(tmp_path, "many", model_dir)
    _run(factory, [str(one)])
    _run(factory, ["--shard-index", "0", "--num-shards", "3", str(many)])
    with pytest.raises(MergeError, match="2 of 3 parts .* missing"):
        _run(None, ["--merge", str(many)])
    for i in (1, 2):
        _run(factory, ["--shard-index", str(i), "--num-shards", "3", str(many)])
    parts = sorted(p.name for p in tmp_path.glob("many.ppl.part-*.jsonl"))
    assert parts == [f"many.ppl.part-0000{i}-of-00003.jsonl" for i in range(3)]
    assert "ppl" not in shards.open(many).metadata().column_names  # parts do not touch the sidecar
    assert main(["score", "--merge", str(many)]) == 0
    want, got = shards.open(one).metadata(), shards.open(many).metadata()
    assert got.column("ppl").equals(want.column("ppl"))  # exact: same blocks, same batches
    assert got.column("ppl").null_count == 1 and len(got) == 7  # 'ok': too few tokens
    summary = json.loads((tmp_path / "many.ppl.summary.json").read_text())
    assert summary["stats"]["read"] == 7 and len(summary["merged_from"]) == 3
    assert main(["score", "--merge", "--num-shards", "3", str(many)]) == 2
    assert "without --shard-index/--num-shards" in capsys.readouterr().err


def test_sharded_score_of_a_raw_corpus_and_merge_refusals(factory, tmp_path, capsys):
    docs = mixed_corpus(n_zh=2, n_en=3) + [{"text": ""}, {"text": "a b"}]
    docs = [{"text": d["text"][:200]} for d in docs]
    write_jsonl(tmp_path / "corpus.jsonl", docs)
    corpus = str(tmp_path / "corpus.jsonl")
    _run(factory, [corpus, "--out", str(tmp_path / "one.parquet")])
    for i in range(2):
        _run(factory, [corpus, "--out", str(tmp_path / "many.parquet"), "--shard-index", str(i), "--num-shards", "2"])
    assert main(["score", "--merge", corpus, "--out", str(tmp_path / "many.parquet")]) == 0
    want, got = pq.read_table(tmp_path / "one.parquet"), pq.read_table(tmp_path / "many.parquet")
    assert got.equals(want) and got.column("skip").to_pylist()[-2] == "empty"
    assert (tmp_path / "many.parquet").read_bytes() == (tmp_path / "one.parquet").read_bytes()

    # a part written with other settings is refused, naming it
    part1 = tmp_path / "many.parquet.part-00001-of-00002.jsonl"
    summary_file = part1.with_name(part1.name + ".summary.json")
    summary = json.loads(summary_file.read_text())
    summary["run_key"]["max_length"] = 64
    summary_file.write_text(json.dumps(summary))
    assert main(["score", "--merge", corpus, "--out", str(tmp_path / "many.parquet")]) == 2
    assert "other settings" in capsys.readouterr().err
    # parts of two different --num-shards runs are refused
    stale = tmp_path / "many.parquet.part-00000-of-00005.jsonl"
    stale.write_text("")
    with pytest.raises(MergeError, match="different --num-shards"):
        _run(None, [corpus, "--out", str(tmp_path / "many.parquet"), "--merge"])
