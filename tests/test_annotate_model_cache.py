"""The per-process model cache of `cpt tag` / `cpt score` (real MiniLM classifier, real SmolLM2): one
annotator per kind, loaded again when a setting, a file under its folders or the thread count
differs, never a failed one; a launch's warm-up loads exactly what a slice of the same argv then
takes, and that slice writes what a slice that loaded its own model writes."""
from __future__ import annotations

import dataclasses
import os

import pytest

from annotate_fixtures import mixed_corpus, zero_shot_classifier
from cpt import assets
from cpt.annotate import model_cache
from cpt.annotate.docs import write_jsonl
from cpt.annotate.launched import slice_task, warm_up_task
from cpt.annotate.modelfiles import ModelFolderError
from cpt.annotate.perplexity import PerplexityAnnotatorFactory
from cpt.annotate.tagging import TopicAnnotatorFactory

pytestmark = pytest.mark.slow
SCORE = ["--device", "cpu", "--max-length", "24", "--stride", "12", "--max-doc-tokens", "40", "--chunk-size", "2",
         "--no-progress"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return zero_shot_classifier(tmp_path_factory.mktemp("clf") / "clf")


def test_the_cache_keeps_the_latest_annotator_per_kind_keyed_by_settings_files_and_threads(classifier, tmp_path,
                                                                                           monkeypatch):
    cache = model_cache.ModelCache()
    tag = TopicAnnotatorFactory(str(classifier), device="cpu")
    first = cache.load(tag)
    assert cache.load(TopicAnnotatorFactory(str(classifier), device="cpu")) is first  # equal settings
    # another kind is kept beside it
    score = PerplexityAnnotatorFactory(str(assets.smollm2_hf_dir()), device="cpu", max_length=24)
    scorer = cache.load(score)
    assert cache.load(tag) is first and cache.load(score) is scorer
    # other settings of the same kind replace it: the first is not kept
    other = cache.load(dataclasses.replace(tag, batch_size=8))
    assert other is not first and other.batch_size == 8
    assert cache.load(tag) is not first and len(cache.entries) == 2
    # a load that fails is not kept: the next one fails the same way, and the kind's entry is gone
    missing = dataclasses.replace(tag, model_dir=str(tmp_path / "nowhere"))
    for _ in range(2):
        with pytest.raises(ModelFolderError, match="nowhere does not exist"):
            cache.load(missing)
    assert "TopicAnnotatorFactory" not in cache.entries and cache.load(score) is scorer
    again = cache.load(tag)
    assert cache.load(tag) is again
    # the same settings under other threads (the USE encoder fixes them), or a file rewritten in place
    monkeypatch.setenv("OMP_NUM_THREADS", str(int(os.environ.get("OMP_NUM_THREADS") or 1) + 1))
    threads = cache.load(tag)
    assert threads is not again and cache.load(tag) is threads
    head = classifier / "cpt_head.safetensors"
    os.utime(head, ns=(head.stat().st_atime_ns, head.stat().st_mtime_ns + 1_000_000))
    assert cache.load(tag) is not threads


def test_a_warm_up_loads_what_the_slice_of_its_argv_then_takes_and_the_output_is_a_cold_slices(tmp_path,
                                                                                                monkeypatch):
    write_jsonl(tmp_path / "c.jsonl", [{"text": d["text"][:200]} for d in mixed_corpus(n_zh=3, n_en=3)])

    def argv(out: str) -> list[str]:  # slice 0 of 2, as a launch writes it
        return ["score", "--shard-index", "0", "--num-shards", "2", "--model", str(assets.smollm2_hf_dir()), *SCORE,
                "--out", str(tmp_path / out), "--", str(tmp_path / "c.jsonl")]

    monkeypatch.setattr(model_cache, "_CACHE", model_cache.ModelCache())  # a fresh process's empty cache
    cold = slice_task(argv("cold.parquet"))
    assert cold["reused_model"] is False and cold["prepare_seconds"]["model"] > 0
    monkeypatch.setattr(model_cache, "_CACHE", model_cache.ModelCache())
    warmed = warm_up_task(argv("warm.parquet"))
    assert warmed == {"reused_model": False, "prepare_seconds": {"model": warmed["prepare_seconds"]["model"]}}
    with monkeypatch.context() as m:  # the slice loads no model: the warm-up's is its own
        m.setattr("transformers.AutoModelForCausalLM.from_pretrained",
                  lambda *a, **k: pytest.fail("the slice loaded the model"))
        out = slice_task(argv("warm.parquet"))
    assert out["reused_model"] is True and out["argv"] == argv("warm.parquet")
    part = "parquet.part-00000-of-00002.jsonl"
    assert (tmp_path / f"warm.{part}").read_bytes() == (tmp_path / f"cold.{part}").read_bytes()
    assert '"ppl": null' not in (tmp_path / f"warm.{part}").read_text() != ""
