"""cpt.synth without a model: prompts, snippets, disciplines, parsing, filters, dedup, error
injection, journal, finalization (every rejection reason), code problems, sampling settings."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cpt.synth import classify, corrupt, disciplines, parse, pipeline, prompts, tasks
from cpt.synth.code_tasks import pick_examples, read_problem, read_problems, read_seed_pairs
from cpt.synth.filters import REJECTION_REASONS, FilterConfig, grounding
from cpt.synth.generators import GeneratorUnavailable, SamplingParams
from cpt.synth.journal import Journal, JournalError
from cpt.synth.minhash import MinHashLSH
from cpt.synth.sampling_config import load_sampling
from cpt.synth.snippets import Document, InputError, read_jsonl, split_document

REPO = Path(__file__).resolve().parents[1]

PHYSICS = ("Newton's second law states that the net force acting on an object equals the product of its "
           "mass and its acceleration. A force of one newton gives a mass of one kilogram an acceleration "
           "of one metre per second squared. Friction is a force that opposes the relative motion of two "
           "surfaces in contact.")
BIOLOGY = ("Photosynthesis is the process by which green plants use light energy to convert carbon dioxide "
           "and water into glucose and oxygen. It takes place in the chloroplasts, which contain the green "
           "pigment chlorophyll; each cell of a leaf holds many of them.")


# ---------------------------------------------------------------- prompts


def test_every_discipline_and_code_has_a_template():
    for name in disciplines.discipline_names():
        t = prompts.load_template(name)
        assert t.tag == f"{name}.v2" and len(t.sha) == 12 and t.system and t.prefill == "Question:"
    code = prompts.load_template("code")
    assert code.tag == "code.v1" and not code.prefill
    assert len(disciplines.DISCIPLINES) == 9
    msgs = prompts.load_template("physics").render(snippet="S-N-I-P", n_pairs="2", discipline="physics")
    assert msgs[0]["role"] == "system" and "S-N-I-P" in msgs[1]["content"] and "{" not in msgs[1]["content"]
    assert msgs[2] == {"role": "assistant", "content": "Question:"}  # the prefill: generators continue it
    with pytest.raises(ValueError, match="no value for placeholder"):
        prompts.load_template("physics").render(snippet="x")


def test_user_prompt_dir_overrides_with_higher_version(tmp_path):
    text = prompts.load_template("physics").source
    ours = (REPO / text).read_text()
    (tmp_path / "physics.v3.txt").write_text(ours.replace("version: 2", "version: 3").replace("exam", "quiz"))
    t = prompts.load_template("physics", tmp_path)
    assert t.tag == "physics.v3" and "quiz" in t.system and t.source == str(tmp_path / "physics.v3.txt")
    assert prompts.load_template("biology", tmp_path).tag == "biology.v2"  # others still ours


def test_an_assistant_section_is_the_prefill_the_rendered_chat_ends_with(tmp_path):
    from cpt.synth.generators.base import ChatRequest, prefill_of

    body = "# name: physics\n# version: 7\n[system]\ns\n[user]\nu {snippet}\n[assistant]\nQuestion:\n"
    (tmp_path / "physics.v7.txt").write_text(body)
    t = prompts.load_template("physics", tmp_path)
    assert t.prefill == "Question:" and t.user == "u {snippet}\n"
    msgs = t.render(snippet="x")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"] and prefill_of(msgs) == "Question:"
    assert ChatRequest("k", msgs).prefill == "Question:" and ChatRequest("k", msgs[:-1]).prefill == ""
    (tmp_path / "physics.v7.txt").write_text(body.replace("[assistant]\nQuestion:\n", ""))
    assert [m["role"] for m in prompts.load_template("physics", tmp_path).render(snippet="x")] == ["system", "user"]


@pytest.mark.parametrize("body, error", [
    ("# name: physics\n[system]\nx\n[user]\ny\n", "'# version: ...' is missing"),
    ("# name: physics\n# version: 3\n[system]\nx\n[user]\n\n", r"section \[user\] is missing or empty"),
    ("# name: physics\n# version: 3\nstray\n[system]\nx\n[user]\ny\n", r"physics.v3.txt:3: text before"),
    ("# name: biology\n# version: 3\n[system]\nx\n[user]\ny\n", "file name says physics.v3"),
])
def test_bad_template_errors_name_the_file(tmp_path, body, error):
    (tmp_path / "physics.v3.txt").write_text(body)
    with pytest.raises(ValueError, match=error):
        prompts.load_template("physics", tmp_path)


# ---------------------------------------------------------------- snippets and disciplines


def test_split_document_packs_paragraphs_within_limits():
    text = "\n\n".join(f"Paragraph {i}. " + "word " * 40 for i in range(10))
    snips = split_document(Document("d1", text, "x"), max_chars=500, min_chars=100)
    assert [s.snippet_id for s in snips] == [f"d1#{i}" for i in range(len(snips))]
    assert all(100 <= len(s.text) <= 500 for s in snips) and len(snips) >= 5
    long_para = "A sentence of several words. " * 100
    assert all(len(s.text) <= 300 for s in split_document(Document("d2", long_para, "x"), 300, 50))
    assert split_document(Document("d3", "too short", "x"), 500, 100) == []


def test_read_jsonl_errors_name_file_line_and_field(tmp_path):
    from cpt.corpus.identity import doc_id_text

    p = tmp_path / "docs.jsonl"
    p.write_text(json.dumps({"id": 7, "text": "hello", "topic": "physics"}) + "\n\n" + json.dumps({"body": "x"}) + "\n")
    with pytest.raises(InputError, match=r"docs.jsonl:3: field 'text' is missing"):
        list(read_jsonl(p))
    p.write_text(json.dumps({"text": "no id"}) + "\n{oops\n")
    with pytest.raises(InputError, match=r"docs.jsonl:2: not valid JSON"):
        list(read_jsonl(p))
    first = next(read_jsonl(p))
    assert first.doc_id == doc_id_text("docs.jsonl", 1) and first.topic is None  # the corpus doc_id


def test_keyword_filter_and_topic_mapping():
    kw = classify.KeywordFilter(min_hits=3)
    assert [d and d.name for d in kw.classify([PHYSICS, BIOLOGY, "The cat sat on the mat."])] == \
        ["physics", "biology", None]
    astro = "The planet Jupiter has a moon in a tight orbit; the telescope showed the star and a comet."
    assert classify.from_tagged_topic("physics", astro).name == "astronomy"
    assert classify.from_tagged_topic("physics", "nothing matching here").name == "physics"
    assert classify.from_tagged_topic("medicine_health", "x").name == "medicine"
    assert classify.from_tagged_topic("engineering", PHYSICS) is None
    assert classify.from_tagged_topic("other_general", "a volcano erupted and magma flowed").name == "earth_science"
    assert classify.from_tagged_topic("other_general", "a football match") is None


def test_select_snippets_caps_each_discipline_and_reads_on_past_a_one_subject_start():
    from cpt.synth.snippets import Snippet

    # a corpus that starts with six biology snippets, then alternates physics / nothing / biology
    texts = [BIOLOGY] * 6 + [PHYSICS, "Cats and dogs.", BIOLOGY] * 4
    snips = [Snippet(f"d{i}#0", f"d{i}", t, None) for i, t in enumerate(texts)]

    def assign(chunk):
        return tasks.assign_disciplines(chunk, "keywords", skipped)

    skipped = Counter()
    first, found = tasks.select_snippets(snips, assign, 4, None, skipped)
    assert [s.snippet_id for s in first] == ["d0#0", "d1#0", "d2#0", "d3#0"] and {d.name for d in found} == {"biology"}
    skipped = Counter()
    kept, found = tasks.select_snippets(snips, assign, 5, 2, skipped, block=4)
    assert [d.name for d in found] == ["biology", "biology", "physics", "physics"]  # the input ran out before 5
    assert [s.snippet_id for s in kept] == ["d0#0", "d1#0", "d6#0", "d9#0"]
    assert skipped["discipline_full"] == 8 + 2 and skipped["no_discipline_match"] == 4


def test_assign_disciplines_counts_every_skip():
    from cpt.synth.snippets import Snippet

    snips = [Snippet("a#0", "a", PHYSICS, None), Snippet("b#0", "b", BIOLOGY, "biology"),
             Snippet("c#0", "c", PHYSICS, "economics_business"), Snippet("d#0", "d", "Cats and dogs.", None)]
    skipped = Counter()
    got = tasks.assign_disciplines(snips, "auto", skipped)
    assert [d and d.name for d in got] == ["physics", "biology", None, None]
    assert skipped == {"topic_without_discipline": 1, "no_discipline_match": 1}
    skipped = Counter()
    tasks.assign_disciplines(snips, "topic", skipped)
    assert skipped == {"no_topic": 2, "topic_without_discipline": 1}
    assert {d.name for d in tasks.assign_disciplines(snips, "auto", Counter(), forced="chemistry")} == {"chemistry"}
    with pytest.raises(ValueError, match="unknown discipline 'alchemy'"):
        tasks.assign_disciplines(snips, "auto", Counter(), forced="alchemy")


def test_shard_split_is_a_partition():
    keys = [f"doc{i}#0|physics.v2|0" for i in range(200)]
    parts = [[k for k in keys if tasks.in_shard(k, i, 3)] for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(keys) and all(parts)


# ---------------------------------------------------------------- parsing and filters


def test_parse_qa_formats_and_malformed():
    text = ("Sure! Here are the pairs:\n**Question 1:** What is X?\n**Answer:** X is Y.\na. not a marker\n\n"
            "Q2. Why?\nA2. Because.\nQ: short\nA: ok\nQuestion: dangling?\n")
    got = parse.parse_qa(text)
    assert [(p.question, p.answer, p.malformed) for p in got] == [
        ("What is X?", "X is Y.\na. not a marker", False), ("Why?", "Because.", False),
        ("short", "ok", False), ("dangling?", "", True)]
    assert parse.parse_qa("1. A list of facts.\n2. Not pairs.") == []
    # SmolLM2-135M repeats the answer marker: the answer is what follows the last one; a real second
    # answer (text between the markers) still leaves the second marker's text out of the pair
    repeated = parse.parse_qa("Question: Who was first?\n\nAnswer:\n\nAnswer:\n\nGodwin was.\nQuestion: Q2?\nAnswer:")
    assert [(p.question, p.answer) for p in repeated] == [("Who was first?", "Godwin was."), ("Q2?", "")]
    # ... and, continuing a prefilled "Question:", the question marker, on its line or the next
    again = parse.parse_qa("Question: Question: Who was first?\nAnswer: Godwin.\nQuestion:\nQuestion: Q2?\nAnswer: B.")
    assert [(p.question, p.answer, p.malformed) for p in again] == [("Who was first?", "Godwin.", False),
                                                                  ("Q2?", "B.", False)]
    twice = parse.parse_qa("Question: Who?\nAnswer: Godwin.\nAnswer: Burke.")
    assert [(p.question, p.answer) for p in twice] == [("Who?", "Godwin.")]
    assert parse.parse_code_answer("Just words, no code.") is None
    assert parse.parse_code_answer("Solution: use a dict.\n```python\nx = 1\n```").answer.startswith("use a dict")


def test_grounding_and_config_validation():
    assert grounding("The net force equals the product of mass and acceleration.", PHYSICS) == 1.0
    assert grounding("Quarks are bound by gluons inside protons.", PHYSICS) == 0.0
    with pytest.raises(ValueError, match="min_answer_chars .* must be <= max_answer_chars"):
        FilterConfig(min_answer_chars=50, max_answer_chars=10)


def test_minhash_finds_near_duplicates_only():
    lsh = MinHashLSH(threshold=0.7)
    a = ("What does Newton's second law state about force? The net force on an object equals its mass "
         "multiplied by its acceleration, so a larger force gives a larger acceleration for the same mass.")
    assert not lsh.is_near_duplicate(a)
    assert lsh.is_near_duplicate(a.replace("larger force", "bigger force"))
    assert not lsh.is_near_duplicate("Where does photosynthesis happen? In the chloroplasts of plant cells, "
                                     "which contain chlorophyll and capture light energy for the plant.")


# ---------------------------------------------------------------- finalization: every rejection reason


def _science_task_list(n_snippets: int = 2):
    from cpt.synth.snippets import Snippet

    snips = [Snippet(f"doc{i}#0", f"doc{i}", PHYSICS, None) for i in range(n_snippets)]
    tpl = {d: prompts.load_template(d) for d in disciplines.discipline_names()}
    return tasks.science_tasks(snips, [disciplines.get("physics")] * n_snippets, tpl, samples=1, n_pairs=3)


def _journal(path: Path, work, texts):
    with Journal(path) as j:
        for t, text in zip(work, texts):
            j.append({"key": t.key, "kind": t.kind, "snippet_id": t.snippet_id, "doc_id": t.doc_id,
                      "discipline": t.discipline, "prompt_version": t.prompt.tag, "prompt_sha": t.prompt.sha,
                      "sample_index": t.sample_index, "generator": "test:handwritten", "text": text,
                      "n_tokens": 0, "attempts": 1, "context": t.context})


def test_finalize_counts_every_rejection_reason(tmp_path):
    work = _science_task_list(3)
    good = "Question: What does Newton's second law state?\nAnswer: The net force equals mass times acceleration."
    texts = [
        good + "\nQuestion: What opposes relative motion of surfaces?\nAnswer: Friction is a force that opposes "
        "the relative motion of two surfaces in contact.\nQuestion: Is this one dangling?",             # malformed pair
        "Question: \nAnswer: Something.\nQuestion: Why?\nAnswer: Force.\n"                               # empty, too_short
        "Question: What is a newton?\nAnswer: " + "force mass " * 2100 + "\n"                            # too_long
        "Question: What binds quarks?\nAnswer: Gluons bind quarks together inside protons and neutrons.\n"  # ungrounded
        + good.replace("law state", "law STATE") + "\n"                                                    # exact_duplicate
        + good.replace("acceleration.", "acceleration, always."),                                           # near_duplicate
        "I cannot write questions about this passage.",                                                   # malformed
    ]
    _journal(pipeline.journal_path(tmp_path / "qa.jsonl"), work, texts)
    summary = pipeline.run(work, None, tmp_path / "qa.jsonl", SamplingParams(), FilterConfig())
    rejected = summary["rejected"]
    assert set(rejected) == set(REJECTION_REASONS)
    assert {k: v for k, v in rejected.items() if v} == {
        "malformed": 2, "empty": 1, "too_short": 1, "too_long": 1, "ungrounded": 1,
        "exact_duplicate": 1, "near_duplicate": 1}
    out = [json.loads(line) for line in (tmp_path / "qa.jsonl").read_text().splitlines()]
    assert summary["pairs_kept"] == len(out) == 2
    assert out[0]["text"] == "Question: What does Newton's second law state?\nAnswer: The net force equals mass times acceleration."
    assert out[0]["id"] == "doc0#0|physics.v2|0|0" and out[0]["prompt_version"] == "physics.v2"
    assert {r["lang"] for r in out} == {"synthetic"} and not any(r["corrupt"] for r in out)
    on_disk = json.loads(pipeline.summary_path(tmp_path / "qa.jsonl").read_text())
    assert on_disk["rejected"] == rejected and on_disk["missing"] == 0
    # Relaxing a filter re-finalizes without generating: the ungrounded pair comes back.
    again = pipeline.run(work, None, tmp_path / "qa.jsonl", SamplingParams(), FilterConfig(min_grounding=0))
    assert again["rejected"]["ungrounded"] == 0 and again["pairs_kept"] == 3


def test_duplicate_document_ids_are_refused(tmp_path):
    work = _science_task_list(2)
    with pytest.raises(ValueError, match="two documents with doc id 'doc0'"):
        pipeline.run(work + work[:1], None, tmp_path / "qa.jsonl", SamplingParams(), FilterConfig())


def test_changed_prompt_without_new_version_is_refused(tmp_path):
    work = _science_task_list(1)
    _journal(pipeline.journal_path(tmp_path / "qa.jsonl"), work, ["Question: a?\nAnswer: b."])
    ours = (REPO / work[0].prompt.source).read_text()
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "physics.v2.txt").write_text(ours.replace("exam", "quiz"))
    from cpt.synth.snippets import Snippet

    tpl = {"physics": prompts.load_template("physics", tmp_path / "p")}
    changed = tasks.science_tasks([Snippet("doc0#0", "doc0", PHYSICS)], [disciplines.get("physics")], tpl)
    with pytest.raises(JournalError, match="physics.v2 .* changed since its records were journaled"):
        pipeline.run(changed, None, tmp_path / "qa.jsonl", SamplingParams(), FilterConfig())


# ---------------------------------------------------------------- error injection


def _pairs(n_by_discipline: dict[str, int]) -> list[dict]:
    return [{"id": f"{d}-{i}", "discipline": d, "question": f"{d} question {i}?", "answer": f"{d} answer {i}."}
            for d, n in n_by_discipline.items() for i in range(n)]


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 1.0])
def test_corrupt_rate_accounting(rate):
    records = _pairs({"physics": 37, "biology": 21, "code": 12})
    originals = {r["id"]: r["answer"] for r in records}
    report = corrupt.corrupt(records, rate, seed=4)
    bad = [r for r in records if r["corrupt"]]
    assert len(bad) == report.corrupted == round(rate * 70) and report.impossible == 0
    assert report.as_dict()["achieved_rate"] == pytest.approx(round(rate * 70) / 70)
    assert sum(report.by_discipline.values()) == len(bad)
    for r in bad:  # wrong answer, taken from another question of the same discipline
        assert r["answer"] != r["original_answer"] == originals[r["id"]]
        assert r["answer"] == originals[r["corrupt_source"]] and r["corrupt_source"].split("-")[0] == r["discipline"]
        assert r["text"] == f"Question: {r['question']}\nAnswer: {r['answer']}"
    assert all(r["answer"] == originals[r["id"]] for r in records if not r["corrupt"])
    again = _pairs({"physics": 37, "biology": 21, "code": 12})
    corrupt.corrupt(again, rate, seed=4)
    assert [r["answer"] for r in again] == [r["answer"] for r in records]  # seeded: reproducible


def test_corrupt_allocation_and_impossible_cases():
    # 5.5 rounds to 6 (half to even); the two leftover units go to the largest remainders, ties by name
    assert corrupt.allocate({"a": 5, "b": 5, "c": 1}, 0.5) == {"a": 3, "b": 3, "c": 0}
    assert corrupt.allocate({"a": 7, "b": 3}, 0.3) == {"a": 2, "b": 1}
    lonely = _pairs({"astronomy": 1})
    report = corrupt.corrupt(lonely, 1.0)
    assert report.targeted == 1 and report.impossible == 1 and report.corrupted == 0 and not lonely[0]["corrupt"]
    with pytest.raises(ValueError, match="--corrupt-rate must be in"):
        corrupt.corrupt(_pairs({"a": 2}), 1.5)


def test_corrupt_with_a_holdout_split_spares_the_held_out_pairs(tmp_path):
    """Held-out pairs keep their answers and lend none; the rate counts the trained pairs."""
    records = _pairs({"physics": 40, "biology": 24})
    split = corrupt.HoldoutSplit.for_output(tmp_path / "qa.jsonl", None, 0.5, 7)
    held = split.mask(len(records))
    assert split.source == "qa.jsonl" and 0 < held.sum() < len(records)
    held_ids = {r["id"] for r, h in zip(records, held) if h}
    report = corrupt.corrupt(records, 0.5, seed=1, split=split)
    trained = len(records) - len(held_ids)
    assert report.eligible == trained and report.held_out == len(held_ids)
    assert report.corrupted == round(0.5 * trained) == sum(r["corrupt"] for r in records)
    assert not any(r["corrupt"] for r in records if r["id"] in held_ids)
    assert all(r["corrupt_source"] not in held_ids for r in records if r["corrupt"])
    with pytest.raises(ValueError, match="not inside the corpus root"):
        corrupt.HoldoutSplit.for_output(tmp_path / "qa.jsonl", tmp_path / "elsewhere", 0.5, 7)


# ---------------------------------------------------------------- journal


def test_journal_cuts_a_torn_tail_and_refuses_duplicates(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path) as j:
        j.append({"key": "a", "text": "1"})
        with pytest.raises(JournalError, match="already journaled"):
            j.append({"key": "a", "text": "2"})
        with pytest.raises(JournalError, match="in use by another"):
            Journal(path)
    with open(path, "ab") as f:
        f.write(b'{"key": "b", "te')  # what a SIGKILL mid-write leaves
    with Journal(path) as j:
        assert list(j.records) == ["a"] and j.torn_tail_bytes == 16
        j.append({"key": "b", "text": "3"})
    assert [json.loads(x)["key"] for x in path.read_text().splitlines()] == ["a", "b"]
    path.write_text('{"key": "a"}\nnot json\n{"key": "c"}\n')
    with pytest.raises(JournalError, match=r"j.jsonl:2: not a journal record"):
        Journal(path)


# ---------------------------------------------------------------- code problems


def test_leetcode_problems_render_and_examples_are_picked():
    from cpt.assets import leetcode_problems_dir

    folder = leetcode_problems_dir()
    assert len(list(folder.glob("*.json"))) == 1405
    p = read_problem(folder / "two_sum.json")
    assert p.problem_id == "leetcode/two_sum" and p.text.startswith("Two Sum\n\n")
    assert "Example 1:" in p.text and "Constraints:" in p.text
    seeds = read_seed_pairs(prompts.code_seed_path())
    assert len(seeds) >= 4 and all("```python" in s.solution for s in seeds)
    picked = pick_examples(p, seeds, k=3, seed=1)
    assert len(picked) == 3 and "Two Sum" not in {s.title for s in picked}  # never its own solution
    assert picked == pick_examples(p, seeds, k=3, seed=1)
    work = tasks.code_tasks([p], prompts.load_template("code"), seeds, k=2, samples=2)
    assert [t.key for t in work] == ["leetcode/two_sum|code.v1|0", "leetcode/two_sum|code.v1|1"]
    roles = [m["role"] for m in work[0].messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert work[0].messages[-1]["content"].rstrip().endswith(p.text.splitlines()[-1])
    with pytest.raises(ValueError, match="k=9 in-context examples requested"):
        pick_examples(p, seeds, k=9)
    assert len(read_problems(folder, limit=3)) == 3


def test_bad_problem_and_seed_files_name_the_field(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"title": "T"}))
    with pytest.raises(InputError, match=r"p.json: field 'readme_description' or 'description' is missing"):
        read_problem(tmp_path / "p.json")
    (tmp_path / "s.jsonl").write_text(json.dumps({"problem": "x", "solution": "y"}) + "\n" + json.dumps({"problem": "x"}))
    with pytest.raises(InputError, match=r"s.jsonl:2: field 'solution' is missing"):
        read_seed_pairs(tmp_path / "s.jsonl")


# ---------------------------------------------------------------- settings and backends


def test_sampling_from_recipe_then_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("synth:\n  sampling: {max_new_tokens: 64, temperature: 0.2}\n")
    assert load_sampling(recipe, top_p=0.5) == SamplingParams(max_new_tokens=64, temperature=0.2, top_p=0.5)
    assert load_sampling(recipe, temperature=0.9).temperature == 0.9
    recipe.write_text("synth:\n  sampling: {max_tokens: 64}\n")
    with pytest.raises(ValueError, match="synth.sampling.max_tokens is not a sampling setting"):
        load_sampling(recipe)
    with pytest.raises(ValueError, match="top_p must be in"):
        load_sampling(None, top_p=0)


def test_vllm_backend_is_detected_at_run_time(tmp_path):
    from cpt.synth.generators import build_generator
    from cpt.synth.generators.vllm_backend import is_available

    assert not is_available()  # not installed on this CPU machine
    with pytest.raises(GeneratorUnavailable, match="pip install vllm"):
        build_generator("vllm", "some/model")
    docs = tmp_path / "d.jsonl"
    docs.write_text(json.dumps({"id": "p", "text": PHYSICS}) + "\n")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "synthesize_qa.py"), "--input", str(docs),
                           "--output", str(tmp_path / "qa.jsonl"), "--generator", "vllm", "--model", "m"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "vLLM, which is not installed" in proc.stderr
    with pytest.raises(ValueError, match="needs --base-url"):
        build_generator("openai", "m")


def test_vllm_backend_continues_prefilled_requests_in_their_own_chat_call(monkeypatch):
    """vLLM cannot run here: a stand-in `vllm` module with `LLM.chat`'s documented signature records
    what our adapter asks of it (the flags are per call, so prefilled requests go in a call of their own)."""
    import types
    from types import SimpleNamespace

    from cpt.synth.generators import vllm_backend
    from cpt.synth.generators.base import ChatRequest

    calls = []

    class LLM:
        def __init__(self, **kwargs):
            self.kwargs = kwargs  # the engine options our adapter passes (the stand-in loads nothing)

        def chat(self, messages, sampling_params, use_tqdm=True, add_generation_prompt=True,
                 continue_final_message=False):
            calls.append((len(messages), add_generation_prompt, continue_final_message))
            return [SimpleNamespace(outputs=[SimpleNamespace(text=" What is X?\nAnswer: Y.", token_ids=[1, 2, 3])])
                    for _ in messages]

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = LLM, lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(vllm_backend, "is_available", lambda: True)
    prefilled = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "Question:"}]
    reqs = [ChatRequest("a", prefilled), ChatRequest("b", prefilled[:1]), ChatRequest("c", prefilled)]
    got = {c.key: c.text for c in vllm_backend.VLLMGenerator("m").generate(reqs, SamplingParams())}
    assert calls == [(1, True, False), (2, False, True)]
    assert got == {"a": "Question: What is X?\nAnswer: Y.", "b": " What is X?\nAnswer: Y.",
                   "c": "Question: What is X?\nAnswer: Y."}
    assert [(p.question, p.answer) for p in parse.parse_qa(got["a"])] == [("What is X?", "Y.")]


def test_cpt_preprocess_turns_the_output_into_shards(tmp_path):
    """The data layer's `cpt preprocess` reads our output as is; lang and kept fields reach the metadata."""
    from cpt import shards
    from cpt.assets import mistral_tokenizer_dir
    from cpt.corpus.lang import normalize_lang

    work = _science_task_list(4)
    texts = [f"Question: What does law number {i} of Newton state about force?\nAnswer: The net force on an "
             f"object equals the product of its mass and its acceleration (case {i})." for i in range(4)]
    out = tmp_path / "qa.jsonl"
    _journal(pipeline.journal_path(out), work, texts)
    summary = pipeline.run(work, None, out, SamplingParams(), FilterConfig(near_duplicate_threshold=1.0),
                           corrupt_rate=0.5)
    assert summary["pairs_kept"] == 4 and summary["corruption"]["corrupted"] == 2
    proc = subprocess.run(
        [sys.executable, "-m", "cpt.commands.preprocess", "--input", str(out), "--output-prefix",
         str(tmp_path / "synthetic"), "--tokenizer", str(mistral_tokenizer_dir() / "tokenizer.model.v1"),
         "--keep-fields", "discipline,corrupt,prompt_version", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    shard = shards.open(tmp_path / "synthetic")
    meta = shard.metadata().to_pylist()
    assert len(shard) == 4 and all(len(shard[i]) > 10 for i in range(4))
    assert {m["discipline"] for m in meta} == {"physics"} and {m["prompt_version"] for m in meta} == {"physics.v2"}
    assert sorted(m["corrupt"] for m in meta) == ["false", "false", "true", "true"]
    # Our records say lang "synthetic", and the shards keep it (stage 2 blends it as its own stream).
    assert normalize_lang("synthetic") == "synthetic"
    assert {m["lang"] for m in meta} == {"synthetic"}


def test_embedding_filter_with_minilm():
    """The embedding fallback (MiniLM from cpt.assets) picks the nearest discipline description."""
    from cpt.synth.snippets import Snippet

    emb = classify.EmbeddingFilter(min_similarity=0.2)
    astro = ("The Andromeda galaxy is the nearest large spiral galaxy to the Milky Way; astronomers observe its "
             "stars and nebulae with telescopes.")
    medicine = "The patient was diagnosed with pneumonia and treated with antibiotics in hospital for a week."
    got = emb.classify([PHYSICS, BIOLOGY, astro, medicine])
    assert [d.name for d in got] == ["physics", "biology", "astronomy", "medicine"]
    emb.min_similarity = 0.99  # nothing is that close to a one-line description
    skipped = Counter()
    assert tasks.assign_disciplines([Snippet("x#0", "x", astro)], "embedding", skipped, emb) == [None]
    assert skipped == {"no_discipline_match": 1}


def test_snippets_from_shards_with_tagged_topics(tmp_path):
    """Shards made by `cpt preprocess` feed synthesis: text re-read from the source, doc_id and the
    tagger's `topic` from the metadata."""
    import argparse

    from cpt import shards
    from cpt.assets import mistral_tokenizer_dir
    from cpt.commands import synth as synth_command

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in (PHYSICS, BIOLOGY, "Shares fell sharply today. " * 12)))
    proc = subprocess.run(
        [sys.executable, "-m", "cpt.commands.preprocess", "--input", str(docs), "--output-prefix",
         str(tmp_path / "web"), "--tokenizer", str(mistral_tokenizer_dir() / "tokenizer.model.v1"), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    shards.update_metadata(tmp_path / "web", {"topic": ["physics", "biology", "economics_business"]})
    parser = argparse.ArgumentParser()
    synth_command.add_arguments(parser)
    args = parser.parse_args(["--shards", str(tmp_path / "web"), "--output", str(tmp_path / "qa.jsonl"),
                              "--discipline-by", "topic", "--min-snippet-chars", "100"])
    work, skipped = synth_command.build_tasks(args)
    ids = [str(i) for i in shards.open(tmp_path / "web").metadata(["doc_id"]).column("doc_id").to_pylist()]
    assert [(t.doc_id, t.discipline) for t in work] == [(ids[0], "physics"), (ids[1], "biology")]
    assert work[0].context == PHYSICS and skipped == {"topic_without_discipline": 1}
    args.disciplines = "biology"
    work, skipped = synth_command.build_tasks(args)
    assert [t.discipline for t in work] == ["biology"] and skipped["discipline_not_selected"] == 1


def test_code_work_list_from_the_command_line(tmp_path):
    import argparse

    from cpt.commands import synth as synth_command

    parser = argparse.ArgumentParser()
    synth_command.add_arguments(parser)
    args = parser.parse_args(["--task", "code", "--max-problems", "3", "--k-shot", "2", "--samples", "2",
                              "--output", str(tmp_path / "code.jsonl")])
    work, skipped = synth_command.build_tasks(args)
    assert len(work) == 6 and not skipped
    assert {t.kind for t in work} == {"code"} and all(len(t.messages) == 6 for t in work)
    assert len({t.key for t in work}) == 6 and work[0].key.endswith("|code.v1|0")
    args.num_shards, args.shard_index = 2, 1
    part, _ = synth_command.build_tasks(args)
    args.shard_index = 0
    other, _ = synth_command.build_tasks(args)
    assert sorted(t.key for t in part + other) == sorted(t.key for t in work)


def test_the_holdout_split_of_synth_is_the_one_training_applies_to_the_shards(tmp_path):
    """`cpt synth --valid-holdout` names the very pairs the stream holds out after `cpt preprocess`:
    they are the clean ones, and no trained pair carries a held-out pair's answer."""
    from cpt import shards
    from cpt.assets import mistral_tokenizer_dir
    from cpt.cli import build_parser
    from cpt.commands import synth as synth_command
    from cpt.sampling.holdout import held_out

    work = _science_task_list(24)
    texts = [f"Question: What does law number {i} of Newton state about force?\nAnswer: The net force on an "
             f"object equals the product of its mass and its acceleration (case {i})." for i in range(24)]
    root = tmp_path / "synth"
    out = root / "c50" / "qa.jsonl"
    out.parent.mkdir(parents=True)
    _journal(pipeline.journal_path(out), work, texts)
    args = build_parser().parse_args(["synth", "--output", str(out), "--corrupt-rate", "0.5", "--valid-holdout",
                                      "0.5", "--valid-holdout-seed", "3", "--output-corpus-root", str(root)])
    split = synth_command._holdout_split(args)
    assert split == corrupt.HoldoutSplit("c50/qa.jsonl", 0.5, 3)
    pipeline.run(work, None, out, SamplingParams(), FilterConfig(near_duplicate_threshold=1.0), corrupt_rate=0.5,
                 holdout=split)
    proc = subprocess.run(
        [sys.executable, "-m", "cpt.commands.preprocess", "--input", str(out), "--output-prefix",
         str(tmp_path / "synthetic"), "--tokenizer", str(mistral_tokenizer_dir() / "tokenizer.model.v1"),
         "--keep-fields", "corrupt,answer", "--corpus-root", str(root), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    meta = shards.open(tmp_path / "synthetic").metadata().to_pylist()
    held = held_out(np.array([m["doc_id"] for m in meta], dtype=np.uint64), 0.5, 3)
    assert len(meta) == 24 and 0 < held.sum() < 24
    assert not any(m["corrupt"] == "true" for m, h in zip(meta, held) if h)
    trained = [m for m, h in zip(meta, held) if not h]
    assert sum(m["corrupt"] == "true" for m in trained) == round(0.5 * len(trained))
    held_answers = {m["answer"] for m, h in zip(meta, held) if h}
    assert not held_answers & {m["answer"] for m in trained}
