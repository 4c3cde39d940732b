"""Topic classifier on real labelled text with the real all-MiniLM-L6-v2: held-out accuracy on the
newsgroups sample and on Wikipedia passages, bootstrapped labels, save/load, tagging a real
Chinese + English corpus (raw and shard), and bad input. Training is kept to a few steps of
short texts (CPU time); the measured figures are printed (pytest -s)."""
from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from annotate_fixtures import NEWSGROUP_TAXONOMY, mixed_corpus, newsgroup_split, wiki_split
from cpt import assets
from cpt.annotate import taxonomy
from cpt.annotate.bootstrap import EmbeddingLabeler, LLMLabeler
from cpt.annotate.classifier import TopicClassifier, TrainConfig
from cpt.annotate.docs import Doc, write_jsonl
from cpt.annotate.encoder import load_encoder
from cpt.annotate.fit import FitConfig, fit
from cpt.annotate.metrics import evaluate
from cpt.annotate.modelfiles import ModelFolderError
from cpt.annotate.tagging import TopicAnnotator
from cpt.cli import main

pytestmark = pytest.mark.slow
FAST = TrainConfig(epochs=1, lr=1e-4, batch_size=16, max_length=64, train_layers=2)


@pytest.fixture(scope="module")
def encoder_dir() -> str:
    return str(assets.minilm_dir())


@pytest.fixture(scope="module")
def news_taxonomy(tmp_path_factory):
    path = tmp_path_factory.mktemp("tax") / "newsgroups.yaml"
    path.write_text(NEWSGROUP_TAXONOMY)
    return taxonomy.load(path)


@pytest.fixture(scope="module")
def wiki_model(encoder_dir, tmp_path_factory):
    """Trained once on the Wikipedia passages (built-in taxonomy), saved through `fit`."""
    train, held = wiki_split()
    out = tmp_path_factory.mktemp("wiki") / "clf"
    report = fit(encoder_dir, taxonomy.load(), train, held, FitConfig(), FAST, out)
    return out, report


def test_newsgroups_accuracy_far_above_chance(encoder_dir, news_taxonomy):
    train, held = newsgroup_split()
    model = fit(encoder_dir, news_taxonomy, train, held, FitConfig(), FAST)
    r = model["eval"]
    print(f"\nnewsgroups alt.atheism vs sci.space, {r['n']} held-out posts: "
          f"accuracy {r['accuracy']:.3f} macro-F1 {r['macro_f1']:.3f} (chance 0.5)")
    assert r["n"] == 64 and r["accuracy"] >= 0.8 and r["macro_f1"] >= 0.8


def test_wikipedia_topics_accuracy_far_above_chance(encoder_dir, wiki_model):
    out, report = wiki_model
    r = report["eval"]
    held = wiki_split()[1]
    majority = max(sum(e.label == t for e in held) for t in {e.label for e in held}) / len(held)
    print(f"\nWikipedia, 8 topics, {r['n']} held-out passages from unseen articles: accuracy {r['accuracy']:.3f} "
          f"macro-F1 {r['macro_f1']:.3f} (majority class {majority:.3f})")
    print(report["model"].evaluate([e.text for e in held], [e.label for e in held]).format())
    assert r["accuracy"] >= 0.6 and r["accuracy"] >= 3 * majority
    saved = json.loads((out / "cpt_train_report.json").read_text())
    assert saved["eval"]["confusion"] == r["confusion"] and saved["n_train"] == len(wiki_split()[0])


def test_bootstrapped_labels_embedding_path(encoder_dir, news_taxonomy):
    """No labels: zero-shot labels by embedding similarity, then a classifier trained on them; both
    are measured against the real labels of the held-out posts."""
    train, held = newsgroup_split()
    unlabelled = [type(e)(e.text, None, e.lang) for e in train]
    report = fit(encoder_dir, news_taxonomy, unlabelled, held, FitConfig(bootstrap="embedding"),
                 TrainConfig(epochs=0.5, lr=1e-4, batch_size=16, max_length=64, train_layers=2),
                 labeller_factory=lambda: EmbeddingLabeler(load_encoder(encoder_dir, max_length=64), news_taxonomy))
    zero_shot, trained = report["labeller_eval"], report["eval"]
    print(f"\nbootstrap (embedding) on newsgroups: zero-shot labeller accuracy {zero_shot['accuracy']:.3f}, "
          f"classifier trained on its labels {trained['accuracy']:.3f} (chance 0.5)")
    assert zero_shot["accuracy"] >= 0.7 and trained["accuracy"] >= 0.7
    assert report["n_train"] == len(train) and report["bootstrap_dropped"] == {"unparsed": 0, "low_confidence": 0}


def test_bootstrapped_labels_llm_path(news_taxonomy):
    """The LLM path end to end with a real generator (SmolLM2-135M-Instruct through cpt.synth's
    transformers backend): every answer becomes a taxonomy topic or a counted `None`."""
    from cpt.synth.generators.transformers_backend import TransformersGenerator

    _, held = newsgroup_split()
    sample = held[:2]
    labeller = LLMLabeler(TransformersGenerator(str(assets.smollm2_hf_dir()), batch_size=2, device="cpu"),
                          news_taxonomy, max_chars=300)
    labels = labeller.label([e.text for e in sample])
    assert len(labels) == len(sample) and set(labels) <= {"religion", "space", None}
    answered = [(e.label, p) for e, p in zip(sample, labels) if p is not None]
    print(f"\nLLM labeller (SmolLM2-135M): {len(answered)}/{len(sample)} answers parsed, "
          f"{sum(a == b for a, b in answered)} correct")


def test_save_load_roundtrip_and_mismatched_labels(wiki_model, tmp_path):
    out, report = wiki_model
    texts = [e.text for e in wiki_split()[1][:8]]
    loaded = TopicClassifier.load(out)
    assert loaded.predict(texts)[0] == report["model"].predict(texts)[0]
    other = tmp_path / "other.yaml"
    other.write_text("topics:\n  - {lang: en, id: sports, name: Sports, description: games}\n")
    with pytest.raises(taxonomy.TaxonomyError, match="differ from those"):
        TopicClassifier.load(out, taxonomy.load(other))
    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    meta = json.loads((tampered / "cpt_classifier.json").read_text())
    meta["labels"] = list(reversed(meta["labels"]))
    (tampered / "cpt_classifier.json").write_text(json.dumps(meta))
    with pytest.raises(taxonomy.TaxonomyError, match="do not match taxonomy"):
        TopicClassifier.load(tampered)
    (tampered / "cpt_head.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="cpt_head.safetensors"):
        TopicClassifier.load(tampered)
    with pytest.raises(taxonomy.TaxonomyError, match=r"labels \['sports'\] that taxonomy"):
        fit(str(assets.minilm_dir()), taxonomy.load(), [type(wiki_split()[0][0])("x", "sports", "en")], [],
            FitConfig(), FAST)


def test_tag_a_chinese_english_corpus_raw_and_shard(wiki_model, tmp_path, capsys):
    import cpt.shards as shards
    from cpt.shards.pipeline import PreprocessConfig, run_preprocess

    out, _ = wiki_model
    docs = mixed_corpus(n_zh=8, n_en=8) + [{"text": "   "}, {"text": "\u200b\u200b"}]
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "corpus.jsonl", docs)
    assert main(["tag", "--model", str(out), "--device", "cpu", "--no-progress",
                 str(tmp_path / "in"), "--out", str(tmp_path / "topics.parquet")]) == 0
    printed = capsys.readouterr().out
    print(printed)  # the topic histograms, per language
    assert "topic histogram [zh] (8 docs)" in printed and "topic histogram [en] (8 docs)" in printed
    rows = pq.read_table(tmp_path / "topics.parquet").to_pylist()
    assert [r["skip"] for r in rows[-2:]] == ["empty", "no_tokens"]
    assert all(r["topic"] in taxonomy.load().labels and 0 < r["topic_conf"] <= 1 for r in rows[:-2])
    # the same documents as a shard: the sidecar gets the same topics
    prefix = tmp_path / "shard"
    run_preprocess(PreprocessConfig(inputs=[str(tmp_path / "in")], output_prefix=str(prefix),
                                    tokenizer=str(assets.smollm2_hf_dir()), progress=False, on_error="skip"))
    assert main(["tag", "--model", str(out), "--device", "cpu", "--no-progress", "--chunk-size", "8",
                 str(prefix)]) == 0
    meta = shards.open(prefix).metadata().to_pylist()
    by_text = {d["text"]: r for d, r in zip(docs, rows)}
    kept = [d for d in docs if d["text"].strip()]
    for d, m in zip(kept, meta, strict=True):
        raw = by_text[d["text"]]
        assert m["topic"] == raw["topic"]
        if raw["skip"]:
            assert m["topic_conf"] is None  # skipped documents get null, never a guess
        else:
            assert m["topic_conf"] == pytest.approx(raw["topic_conf"], rel=1e-4)


def test_annotator_counts_bad_documents(wiki_model):
    annotator = TopicAnnotator(TopicClassifier.load(wiki_model[0]))
    out = annotator([Doc("a", ""), Doc("b", "\n\n"), Doc("c", "\u200b"), Doc("d", "Acids and bases react.")])
    assert [r.skip for r in out] == ["empty", "empty", "no_tokens", None]
    assert evaluate(["chemistry"], [out[3].values["topic"]], taxonomy.load().labels).n == 1


def test_tag_train_cli_writes_a_loadable_folder_and_refuses_unknown_labels(tmp_path, capsys):
    train, held = wiki_split()
    write_jsonl(tmp_path / "train.jsonl", [{"text": e.text, "topic": e.label} for e in train[::12]])
    write_jsonl(tmp_path / "eval.jsonl", [{"text": e.text, "topic": e.label} for e in held[::11]])
    out = tmp_path / "clf"
    assert main(["tag-train", "--train", str(tmp_path / "train.jsonl"), "--eval", str(tmp_path / "eval.jsonl"),
                 "--out", str(out), "--epochs", "1", "--max-length", "32", "--train-layers", "1",
                 "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["n_train"] == len(train[::12]) and printed["eval"]["n"] == len(held[::11])
    loaded = TopicClassifier.load(out)
    assert loaded.max_length == 32 and loaded.taxonomy.labels == taxonomy.load().labels
    write_jsonl(tmp_path / "bad.jsonl", [{"text": "a", "topic": "physics"}, {"text": "b", "topic": "cooking"}])
    capsys.readouterr()
    # the CLI reports bad input as one line naming the unknown label, exit status 2
    assert main(["tag-train", "--train", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "x"),
                 "--eval-fraction", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cpt tag-train: error: ") and "['cooking']" in err[0]
