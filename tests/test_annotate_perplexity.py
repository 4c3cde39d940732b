"""Perplexity scoring with the real SmolLM2-135M (converted once from its GGUF): equality with a plain
per-document transformers computation, fluent < shuffled, bad input, raw corpora and shards."""
from __future__ import annotations

import json
import math
import random
import shutil

import pyarrow.parquet as pq
import pytest
import torch

from annotate_fixtures import mixed_corpus, wiki_split
from cpt import assets
from cpt.annotate.docs import Doc, write_jsonl
from cpt.annotate.modelfiles import ModelFolderError
from cpt.annotate.perplexity import (CPU_BATCH_TOKENS, BackendUnavailable, HFScorer, PerplexityAnnotator,
                                     PerplexityAnnotatorFactory)
from cpt.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir() -> str:
    return str(assets.smollm2_hf_dir())


@pytest.fixture(scope="module")
def annotator(model_dir):
    """One model load shared by the in-process tests."""
    return PerplexityAnnotatorFactory(model_dir, device="cpu", max_length=256, max_batch_tokens=512)()


@pytest.fixture(scope="module")
def hf(model_dir, annotator):
    """The reference side: the model's own tokenizer and the same fp32 transformers model object."""
    from transformers import AutoTokenizer

    assert annotator.scorer.model.dtype == torch.float32
    return AutoTokenizer.from_pretrained(model_dir), annotator.scorer.model


def naive_ppl(hf, text: str, max_length: int | None = None, stride: int | None = None) -> float:
    """The straightforward computation: one document at a time, `labels=input_ids`.

    Long documents: the HF perplexity guide's sliding window, with labels of already-scored
    tokens set to -100."""
    tokenizer, model = hf
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    n = ids.shape[1]
    if max_length is None or n <= max_length:
        with torch.no_grad():
            return math.exp(model(ids, labels=ids).loss.item())
    nll, count, prev_end = 0.0, 0, 1
    for begin in range(0, n, stride):
        end = min(begin + max_length, n)
        window = ids[:, begin:end]
        labels = window.clone()
        labels[:, :prev_end - begin] = -100
        with torch.no_grad():
            loss = model(window, labels=labels).loss.item()
        k = end - prev_end
        nll, count, prev_end = nll + loss * k, count + k, end
        if end == n:
            break
    return math.exp(nll / count)


def test_batched_ppl_equals_per_document_transformers(model_dir, hf, annotator):
    train, _ = wiki_split()
    zh = assets.people_daily_documents(limit=2)
    texts = [train[0].text[:200], train[40].text[:100], train[80].text[:60], zh[0][:40], zh[1][:25],
             "The cat sat on the mat."]
    scorer = annotator.scorer
    assert isinstance(scorer, HFScorer) and scorer.max_batch_tokens == 512
    results = annotator([Doc(str(i), t) for i, t in enumerate(texts)])
    for r, text in zip(results, texts):
        assert r.skip is None
        expected = naive_ppl(hf, text)
        assert r.values["ppl"] == pytest.approx(expected, rel=1e-4), text[:40]
    # a document longer than the context: windows by the stride rule equal the sliding-window reference
    long_text = train[1].text[:450]
    scorer.max_length = 32  # same model, a short context: the document needs ~10 windows
    try:
        r = PerplexityAnnotator(scorer, annotator.encode, stride=12)([Doc("long", long_text)])[0]
    finally:
        scorer.max_length = 256
    assert r.values["ppl"] == pytest.approx(naive_ppl(hf, long_text, 32, 12), rel=1e-4)
    assert r.values["ppl"] != pytest.approx(naive_ppl(hf, long_text), rel=1e-3)  # the windows really matter


def test_cpu_default_budget_runs_a_longer_window_alone_and_a_given_budget_must_hold_a_window(model_dir, hf,
                                                                                              annotator):
    with pytest.raises(ValueError, match="max_batch_tokens"):
        HFScorer(model_dir, device="cpu", max_length=1024, max_batch_tokens=512)  # refused before loading
    default = HFScorer(model_dir, device="cpu", max_length=4096)  # a context longer than the CPU budget
    assert default.max_batch_tokens == CPU_BATCH_TOKENS < default.max_length
    train, _ = wiki_split()
    texts = [" ".join(d.text for d in train[:6])[:3000], train[7].text[:300], train[9].text[:200]]
    assert len(hf[0](texts[0])["input_ids"]) > CPU_BATCH_TOKENS
    results = PerplexityAnnotator(default, annotator.encode)([Doc(str(i), t) for i, t in enumerate(texts)])
    for r, text in zip(results, texts):
        assert r.values["ppl"] == pytest.approx(naive_ppl(hf, text), rel=1e-4), text[:40]


def test_fluent_text_scores_lower_than_its_shuffled_words(annotator):
    train, _ = wiki_split()
    texts = [e.text[:200] for e in train[::30][:4]]
    shuffled = []
    for i, t in enumerate(texts):
        words = t.split()
        random.Random(i).shuffle(words)
        shuffled.append(" ".join(words))
    fluent = annotator([Doc(f"f{i}", t) for i, t in enumerate(texts)])
    mixed = annotator([Doc(f"s{i}", t) for i, t in enumerate(shuffled)])
    for a, b in zip(fluent, mixed):
        assert a.values["ppl"] * 2 < b.values["ppl"], (a, b)


def test_bad_input_is_counted_or_refused(model_dir, annotator, tmp_path):
    out = annotator([Doc("empty", ""), Doc("blank", " \n\t"), Doc("one", "a"), Doc("ok", "Hello there, world.")])
    assert [(r.doc_id, r.skip) for r in out] == [("empty", "empty"), ("blank", "empty"), ("one", "too_few_tokens"),
                                                ("ok", None)]
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match=r"broken is missing weights"):
        PerplexityAnnotatorFactory(str(broken))()
    with pytest.raises(ModelFolderError, match="does not exist"):
        PerplexityAnnotatorFactory(str(tmp_path / "nowhere"))()
    with pytest.raises(BackendUnavailable, match="pip install vllm"):
        PerplexityAnnotatorFactory(model_dir, backend="vllm")()
    with pytest.raises(ValueError, match="stride must be"):
        PerplexityAnnotatorFactory(model_dir, device="cpu", max_length=64, stride=64)()


def test_score_cli_on_a_chinese_english_corpus_and_resume(model_dir, tmp_path, capsys):
    docs = mixed_corpus(n_zh=4, n_en=4) + [{"text": ""}]
    write_jsonl(tmp_path / "corpus.jsonl", docs)
    out = tmp_path / "ppl.parquet"
    args = ["score", "--model", model_dir, "--device", "cpu", "--max-length", "128", "--max-doc-tokens", "64",
            "--chunk-size", "4", "--no-progress", str(tmp_path / "corpus.jsonl"), "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    print(printed)  # the zh / en ppl distributions (pytest -s shows them)
    assert "ppl [en] n=4" in printed and "ppl [zh] n=4" in printed
    table = pq.read_table(out).to_pylist()
    assert len(table) == 9 and table[-1]["skip"] == "empty" and table[-1]["ppl"] is None
    assert all(r["ppl"] > 1 for r in table[:-1])
    summary = json.loads((tmp_path / "ppl.parquet.summary.json").read_text())
    assert summary["stats"]["skipped"] == {"empty": 1} and summary["stats"]["annotated"] == 8
    # resume: a checkpoint holding the first chunk is picked up and the output is the same
    first = out.read_bytes()
    partial = tmp_path / "ppl.parquet.partial.jsonl"
    header = json.dumps({"run_key": summary["run_key"]}, sort_keys=True)
    chunk = [json.dumps({"doc_id": r["doc_id"], "values": {"ppl": r["ppl"]}, "skip": None}) for r in table[:4]]
    partial.write_text("\n".join([header, *chunk]) + "\n")
    out.unlink()
    assert main(args) == 0
    assert "(resumed 4)" in capsys.readouterr().out
    assert pq.read_table(out).to_pylist() == table and out.read_bytes() == first


def test_score_cli_writes_the_shard_sidecar(model_dir, tmp_path, capsys):
    import cpt.shards as shards
    from cpt.shards.pipeline import PreprocessConfig, run_preprocess

    docs = mixed_corpus(n_zh=3, n_en=3)
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "c.jsonl", [{"text": d["text"][:120]} for d in docs])
    prefix = tmp_path / "shard"
    run_preprocess(PreprocessConfig(inputs=[str(tmp_path / "in")], output_prefix=str(prefix), tokenizer=model_dir,
                                    progress=False))
    assert main(["score", "--model", model_dir, "--device", "cpu", "--max-length", "64", "--max-doc-tokens", "48",
                 "--no-progress",
                 str(prefix)]) == 0
    meta = shards.open(prefix).metadata().to_pylist()
    assert len(meta) == 6 and all(r["ppl"] > 1 for r in meta)
    assert {r["lang"] for r in meta} == {"zh", "en"}
    assert not (tmp_path / "shard.ppl.partial.jsonl").exists() and (tmp_path / "shard.ppl.summary.json").exists()
    capsys.readouterr()
