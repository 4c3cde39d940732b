"""Annotator parts that need no model: taxonomy, windows, bucketing, metrics, checkpoints, runner."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from cpt.annotate import taxonomy
from cpt.annotate.bootstrap import LLMLabeler
from cpt.annotate.docs import CorpusError, Doc, detect_lang, read_corpora, read_jsonl, read_labeled, write_jsonl
from cpt.annotate.metrics import evaluate
from cpt.annotate.perplexity import bucket_batches, make_windows
from cpt.annotate.runner import DuplicateDocError, run_annotator
from cpt.annotate.store import CheckpointMismatchError, Result, ResultStore

MMLU = """abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry
college_computer_science college_mathematics college_medicine college_physics computer_security conceptual_physics
econometrics electrical_engineering elementary_mathematics formal_logic global_facts high_school_biology
high_school_chemistry high_school_computer_science high_school_european_history high_school_geography
high_school_government_and_politics high_school_macroeconomics high_school_mathematics high_school_microeconomics
high_school_physics high_school_psychology high_school_statistics high_school_us_history high_school_world_history
human_aging human_sexuality international_law jurisprudence logical_fallacies machine_learning management marketing
medical_genetics miscellaneous moral_disputes moral_scenarios nutrition philosophy prehistory professional_accounting
professional_law professional_medicine professional_psychology public_relations security_studies sociology
us_foreign_policy virology world_religions""".split()
CMMLU = """agronomy anatomy ancient_chinese arts astronomy business_ethics chinese_civil_service_exam chinese_driving_rule
chinese_food_culture chinese_foreign_policy chinese_history chinese_literature chinese_teacher_qualification
clinical_knowledge college_actuarial_science college_education college_engineering_hydrology college_law
college_mathematics college_medical_statistics college_medicine computer_science computer_security conceptual_physics
construction_project_management economics education electrical_engineering elementary_chinese elementary_commonsense
elementary_information_and_technology elementary_mathematics ethnology food_science genetics global_facts
high_school_biology high_school_chemistry high_school_geography high_school_mathematics high_school_physics
high_school_politics human_sexuality international_law journalism jurisprudence legal_and_moral_basis logical
machine_learning management marketing marxist_theory modern_chinese nutrition philosophy professional_accounting
professional_law professional_medicine professional_psychology public_relations security_study sociology
sports_science traditional_chinese_medicine virology world_history world_religions""".split()


# ---------------------------------------------------------------- taxonomy


@pytest.mark.parametrize("lang,subjects", [("en", MMLU), ("zh", CMMLU)])
def test_builtin_taxonomy_covers_every_benchmark_subject_once(lang, subjects):
    assert len(subjects) == {"en": 57, "zh": 67}[lang]
    tax = taxonomy.load()
    topics = tax.for_lang(lang)
    assert len(topics) == 11
    covered = Counter(s for t in topics for s in t.subjects)
    assert set(covered) == set(subjects)
    assert all(n == 1 for n in covered.values()), [s for s, n in covered.items() if n > 1]
    assert tax.labels == tuple(t.id for t in topics)  # both languages share the 11 ids, in order


def test_user_taxonomy_file_and_its_errors(tmp_path):
    good = tmp_path / "t.yaml"
    good.write_text("name: mine\ntopics:\n  - {lang: en, id: a, name: A, description: alpha}\n"
                    "  - {lang: en, id: b, name: B, description: beta}\n")
    tax = taxonomy.load(good)
    assert tax.labels == ("a", "b") and tax.name == "mine"
    tax.save(tmp_path / "copy.yaml")
    assert taxonomy.load(tmp_path / "copy.yaml") == tax
    bad = {
        "lacks description": "topics:\n  - {lang: en, id: a, name: A}\n",
        "appears twice": "topics:\n  - {lang: en, id: a, name: A, description: x}\n"
                         "  - {lang: en, id: a, name: B, description: y}\n",
        "unknown keys": "topics:\n  - {lang: en, id: a, name: A, description: x, colour: red}\n",
        "has no topics": "name: empty\ntopics: []\n",
        "expected a mapping": "- just a list\n",
    }
    for message, text in bad.items():
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(taxonomy.TaxonomyError, match=message):
            taxonomy.load(tmp_path / "bad.yaml")
    with pytest.raises(taxonomy.TaxonomyError, match="does not exist"):
        taxonomy.load(tmp_path / "missing.yaml")


# ---------------------------------------------------------------- windows and batches


@pytest.mark.parametrize("n,length,stride", [(1, 8, 4), (2, 8, 4), (8, 8, 4), (9, 8, 4), (50, 8, 3), (50, 8, 7), (33, 16, 1)])
def test_windows_score_each_token_once_with_enough_context(n, length, stride):
    ids = np.arange(100, 100 + n)
    windows = make_windows(ids, length, stride)
    if n < 2:
        assert windows == []
        return
    scored = []
    begin = 0
    for k, w in enumerate(windows):
        assert 1 <= len(w.tokens) <= length
        assert w.tokens[0] == ids[begin]  # windows start at 0, S, 2S, ...
        targets = w.tokens[w.first_target:]
        if k > 0:
            assert w.first_target >= length - stride  # at least L - S tokens of context
        scored += targets.tolist()
        begin += stride
    assert scored == ids[1:].tolist()  # tokens 1..n-1, each exactly once, in order
    if n <= length:
        assert len(windows) == 1


def test_window_arguments_are_checked():
    with pytest.raises(ValueError, match="stride"):
        make_windows([1, 2, 3], 8, 8)
    with pytest.raises(ValueError, match="stride"):
        make_windows([1, 2, 3], 8, 0)
    with pytest.raises(ValueError, match="max_length"):
        make_windows([1, 2, 3], 1, 1)


def test_bucketing_respects_the_budget_and_is_deterministic():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=300).tolist()
    batches = bucket_batches(lengths, 1024)
    assert sorted(i for b in batches for i in b) == list(range(300))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 1024
        assert max(lengths[i] for i in b) - min(lengths[i] for i in b) < 40  # similar lengths together
    assert bucket_batches(lengths, 1024) == batches
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.1 * sum(lengths)


# ---------------------------------------------------------------- metrics


def test_metrics_match_hand_computation():
    truth = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "b", "b", "c", "c"]
    r = evaluate(truth, pred, ["a", "b", "c"])
    assert r.confusion.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert r.accuracy == pytest.approx(4 / 6)
    f1 = [2 * 2 / (3 + 2), 2 * 1 / (2 + 2), 2 * 1 / (1 + 2)]
    assert r.macro_f1 == pytest.approx(sum(f1) / 3)
    assert "accuracy=0.667" in r.format()
    with pytest.raises(ValueError, match="not one of"):
        evaluate(["a"], ["z"], ["a", "b"])


# ---------------------------------------------------------------- documents


def test_jsonl_reading_ids_langs_and_errors(tmp_path):
    from cpt.corpus.identity import doc_id_text

    write_jsonl(tmp_path / "a.jsonl", [{"text": "hello world"}, {"text": "中华人民共和国成立了", "id": 7},
                                       {"text": "x", "lang": "fr"}])
    docs = list(read_corpora([tmp_path]))
    assert [d.lang for d in docs] == ["en", "zh", "fr"]
    # the corpus doc_id: path under the root (by default the input's parent) and line, not an input field
    assert docs[1].doc_id == doc_id_text(f"{tmp_path.name}/a.jsonl", 2)
    assert docs[0].doc_id == list(read_jsonl(tmp_path / "a.jsonl", source=f"{tmp_path.name}/a.jsonl"))[0].doc_id
    with pytest.raises(CorpusError, match=r"a.jsonl:1: record lacks the id field 'id'"):
        list(read_corpora([tmp_path], id_key="id"))
    assert docs[0].source.endswith("a.jsonl:1")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": 3}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: field 'text' is missing or not a string"):
        list(read_jsonl(tmp_path / "bad.jsonl"))
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: malformed JSON"):
        list(read_jsonl(tmp_path / "bad.jsonl"))
    (tmp_path / "nolabel.jsonl").write_text('{"text": "ok", "topic": "physics"}\n{"text": "no label"}\n')
    with pytest.raises(CorpusError, match=r"nolabel.jsonl:2: field 'topic' is missing"):
        read_labeled(tmp_path / "nolabel.jsonl")
    assert [e.label for e in read_labeled(tmp_path / "nolabel.jsonl", require_labels=False)] == ["physics", None]
    assert detect_lang("") == "en" and detect_lang("人民日报 People's Daily 一九九八年") == "zh"


# ---------------------------------------------------------------- checkpoints and the runner


class LengthAnnotator:
    """A real (if trivial) annotator: character count; skips empty documents; fails on demand."""

    columns = ("chars",)

    def __init__(self, fail_at: str | None = None):
        self.fail_at = fail_at

    def __call__(self, docs):
        out = []
        for d in docs:
            if d.doc_id == self.fail_at:
                raise RuntimeError("killed")
            out.append(Result(d.doc_id, None, "empty") if not d.text else Result(d.doc_id, {"chars": len(d.text)}))
        return out


def _docs(n: int) -> list[Doc]:
    return [Doc(str(i), "x" * (i % 5)) for i in range(n)]


def test_runner_resumes_after_a_crash_and_equals_one_run(tmp_path):
    key = {"annotator": "chars"}
    once = run_annotator(_docs(50), LengthAnnotator, ResultStore(tmp_path / "a.parquet", key), chunk_size=7)
    with pytest.raises(RuntimeError, match="killed"):
        run_annotator(_docs(50), lambda: LengthAnnotator(fail_at="30"), ResultStore(tmp_path / "b.parquet", key),
                      chunk_size=7)
    partial = tmp_path / "b.parquet.partial.jsonl"
    with partial.open("a") as f:
        f.write('{"doc_id": "40", "val')  # a line cut by the crash
    order, done, stats = run_annotator(_docs(50), LengthAnnotator, ResultStore(tmp_path / "b.parquet", key),
                                       chunk_size=7)
    assert stats.resumed == 28  # four chunks of 7 were checkpointed before the crash
    assert {k: v for k, v in done.items()} == once[1]
    assert stats.skipped == Counter({"empty": 10}) and stats.annotated == 40
    with pytest.raises(CheckpointMismatchError, match="other settings"):
        ResultStore(tmp_path / "b.parquet", {"annotator": "other"}).open()


def test_runner_refuses_duplicate_ids(tmp_path):
    docs = [Doc("1", "a"), Doc("2", "b"), Doc("1", "c", source="f.jsonl:3")]
    with pytest.raises(DuplicateDocError, match="f.jsonl:3"):
        run_annotator(docs, LengthAnnotator, ResultStore(tmp_path / "o.parquet", {}))


def test_store_final_write_is_atomic_and_marked(tmp_path):
    store = ResultStore(tmp_path / "o.jsonl", {})
    store.open()
    store.append([Result("a", {"v": 1})])
    store.finalize([{"doc_id": "a", "v": 1}], ["doc_id", "v"], {"ok": True})
    assert json.loads((tmp_path / "o.jsonl").read_text()) == {"doc_id": "a", "v": 1}
    assert json.loads((tmp_path / "o.jsonl.summary.json").read_text()) == {"ok": True}
    assert not (tmp_path / "o.jsonl.partial.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl", "o.jsonl.summary.json"]


def test_llm_answer_parsing():
    labeller = LLMLabeler(generator=None, taxonomy=taxonomy.load())
    assert labeller.parse("physics", "en") == "physics"
    assert labeller.parse("The topic is Computer Science.", "en") == "computer_science"
    assert labeller.parse("law_politics, maybe economics_business", "en") == "law_politics"
    assert labeller.parse("这是一篇关于化学的文章", "zh") == "chemistry"
    assert labeller.parse("I don't know", "en") is None
    prompt = labeller.prompt("some text", "zh")
    assert "medicine_health: 医学与健康" in prompt and "some text" in prompt


def test_worker_processes_give_the_same_results(tmp_path):
    one = run_annotator(_docs(40), LengthAnnotator, ResultStore(tmp_path / "1.parquet", {}), chunk_size=6)
    two = run_annotator(_docs(40), LengthAnnotator, ResultStore(tmp_path / "2.parquet", {}), chunk_size=6, workers=2)
    assert [d.doc_id for d in two[0]] == [d.doc_id for d in one[0]]
    assert two[1] == one[1]
    lines = (tmp_path / "2.parquet.partial.jsonl").read_text().splitlines()[1:]
    assert [json.loads(x)["doc_id"] for x in lines] == [str(i) for i in range(40)]  # checkpoint in input order
