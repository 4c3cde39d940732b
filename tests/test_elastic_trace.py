"""Elastic resume as a guarantee, and `cpt trace` against the ids the trainer really fetched.

One stage ("s1": two language streams, a quarter held out, the topic-PPL controller on) trained
four ways: uninterrupted at DP=1 (the reference); DP 2 -> 1 -> 2 across three launches; TP 2 -> 1;
PP 2 -> 1 (the TP/PP runs save the optimizer fully_reshardable, and their TP=1/PP=1 resumes load it
so while saving dp_reshardable; the DP chain keeps dp_reshardable, the default, which reshards across
DP only). Every resumed run must train on the same global samples (ids equal), with losses equal
to the reference within float32 reduction noise and the controller's weights carried on. Then a
second stage ("s2", a synthetic QA stream added, DP=2) continues from the elastic DP run, and
`cpt trace` over both stage folders must give, for every step and every rank, exactly the ids that
rank fetched - across the stage boundary, the resumes and the DP changes - and `--doc` must be its
inverse. Three launches in all (importing megatron costs ~9 s per process).
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from launch import REPO, launch, torchrun
from train_fixtures import write_lang_shards

pytestmark = pytest.mark.slow
WORKER = Path(__file__).parent / "workers" / "elastic_cases.py"
GBS, STEPS, S2_STEPS = 8, 6, 2
# DP/TP/PP change the order of float32 sums (gradient all-reduce, split matmuls): equal to rounding,
# not bitwise. The engine tests measure < 2e-6 relative over 8 steps.
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 3e-6
SP_MODEL = "tokenizer.model.v1"


def _synthetic_shard(prefix: str, folder: Path) -> str:
    """QA records made by the synth pipeline from real documents of the shard (handwritten
    completions in place of an LLM), tokenized by `cpt preprocess` keeping their provenance."""
    from cpt.assets import mistral_tokenizer_dir
    from cpt.corpus.identity import PROVENANCE_FIELDS
    from cpt.synth import disciplines, pipeline, prompts, sources, tasks
    from cpt.synth.filters import FilterConfig
    from cpt.synth.generators.base import SamplingParams
    from cpt.synth.journal import Journal
    from cpt.synth.snippets import snippets_of

    docs = [d for d in sources.documents_from_shards([prefix]) if d.text.isascii()][:6]
    snips = list(snippets_of(docs, 600, 200, max_snippets_per_doc=1))
    work = tasks.science_tasks(snips, [disciplines.get("physics")] * len(snips),
                               {"physics": prompts.load_template("physics")}, samples=1, n_pairs=1)
    out = folder / "qa.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with Journal(pipeline.journal_path(out)) as j:
        for t in work:
            words = t.context.split()
            text = f"Question: What does the passage say first about {words[0]}?\nAnswer: {' '.join(words[:30])}"
            j.append({"key": t.key, "kind": t.kind, "snippet_id": t.snippet_id, "doc_id": t.doc_id,
                      "discipline": t.discipline, "prompt_version": t.prompt.tag, "prompt_sha": t.prompt.sha,
                      "sample_index": t.sample_index, "generator": "test:handwritten", "text": text,
                      "n_tokens": 0, "attempts": 1, "context": t.context})
    summary = pipeline.run(work, None, out, SamplingParams(), FilterConfig(near_duplicate_threshold=1.0))
    assert summary["pairs_kept"] == len(work) >= 4, summary
    proc = subprocess.run(
        [sys.executable, "-m", "cpt.commands.preprocess", "--input", str(out), "--output-prefix",
         str(folder / "qa"), "--tokenizer", str(mistral_tokenizer_dir() / SP_MODEL),
         "--keep-fields", ",".join(PROVENANCE_FIELDS), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return str(folder / "qa")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("elastic")
    prefix = write_lang_shards(root / "lang")
    synthetic = _synthetic_shard(prefix, root / "synthetic")
    out = root / "out"
    common = [str(WORKER), "--prefix", prefix, "--synthetic", synthetic, "--out", str(out)]
    # each launch stops at an evaluation step (eval_every=2), as a killed run resumes from its last
    # checkpoint: a stage ended early elsewhere runs one more evaluation, whose update the controller keeps
    launch([*torchrun(2), *common, "dp_a=dp:2", "tp_a=tp:4:tp2", "pp_a=pp:4:pp2"])
    launch([sys.executable, *common, "ref=ref:6", "dp_b=dp:4", "tp_b=tp:6", "pp_b=pp:6"])
    launch([*torchrun(2), *common, "dp_c=dp:6", f"s2=s2:{S2_STEPS}:dp"])

    def result(case: str, rank: int = 0) -> dict:
        return json.loads((out / case / f"rank{rank}.json").read_text())

    return result, out, prefix, synthetic


def _ids(results) -> list[tuple[int, int, int]]:
    return sorted(tuple(x) for r in results for x in r["seen"])


def _losses(result) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in result["records"] if r["kind"] == "train"}


def _weights(result) -> dict[int, list[float]]:
    return {e["start"]: e["weights"] for e in result["history"]}


def _same_run(ref, chain: list[list[dict]]) -> None:
    """ids equal, losses within float32 noise, weight history and controller state carried on."""
    assert _ids([r for launch_ in chain for r in launch_]) == _ids([ref])
    last = chain[-1][0]
    want, got = _losses(ref), _losses(last)
    assert sorted(got) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([got[s] for s in want], [want[s] for s in want], rtol=LOSS_RTOL)
    assert sorted(_weights(last)) == sorted(_weights(ref)) and len(_weights(ref)) >= 3  # the controller moved
    for start, w in _weights(ref).items():
        np.testing.assert_allclose(_weights(last)[start], w, atol=WEIGHT_ATOL)
    ref_hook, got_hook = ref["hooks"]["hooks"]["topic_ppl"], last["hooks"]["hooks"]["topic_ppl"]
    assert got_hook["evals"] == ref_hook["evals"] == 3 and got_hook["updates"] == ref_hook["updates"] == 2
    for stream, ppl in ref_hook["reference_ppl"].items():  # the PPL the next update compares against
        assert got_hook["reference_ppl"][stream] == pytest.approx(ppl, rel=1e-4)


def test_elastic_dp_2_1_2_same_samples_losses_and_mixture(runs):
    result, *_ = runs
    chain = [[result("dp_a", 0), result("dp_a", 1)], [result("dp_b")], [result("dp_c", 0), result("dp_c", 1)]]
    assert [c[0]["layout"]["dp"] for c in chain] == [2, 1, 2]
    _same_run(result("ref"), chain)


@pytest.mark.parametrize("kind", ["tp", "pp"])
def test_elastic_tp_or_pp_2_to_1_same_samples_losses_and_mixture(runs, kind):
    result, *_ = runs
    first = result(f"{kind}_a", 0)
    assert first["layout"][kind] == 2 and result(f"{kind}_b")["layout"][kind] == 1
    # TP=2 / PP=2 use both processes with DP=1: each rank fetches the whole batch (one reader per model)
    _same_run(result("ref"), [[first], [result(f"{kind}_b")]])


def _fetched_by_step(runs) -> dict[tuple[int, int], list[tuple[int, str, int]]]:
    """(step, dp rank) -> [(stage position, stream, index)] in fetch order, from every launch of the
    elastic DP run (stage s1, steps 1..6) and of stage s2 (steps 7..8)."""
    result, *_ = runs
    got: dict[tuple[int, int], list] = defaultdict(list)
    names = {"s1": ["en", "zh"], "s2": ["en", "zh", "qa"]}
    for case, ranks, stage, start in [("dp_a", 2, "s1", 0), ("dp_b", 1, "s1", 0), ("dp_c", 2, "s1", 0),
                                      ("s2", 2, "s2", STEPS)]:
        for rank in range(ranks):
            r = result(case, rank)
            for pos, stream, index in r["seen"]:
                got[(start + pos // GBS + 1, r["dp_rank"])].append((pos, names[stage][stream], index))
    return got


def test_trace_equals_what_every_rank_fetched_across_resumes_and_a_stage(runs):
    from cpt.trace import open_stages, trace_step

    _, out, *_ = runs
    stages = open_stages([out / "runs" / "s2", out / "runs" / "dp"])
    assert [s.name for s in stages] == ["s1", "s2"]
    fetched = _fetched_by_step(runs)
    assert sorted({step for step, _ in fetched}) == list(range(1, STEPS + S2_STEPS + 1))
    for (step, rank), want in sorted(fetched.items()):
        got = trace_step(stages, step, dp_rank=rank)
        assert [(s.position, s.stream, s.index) for s in got] == want, (step, rank)
        assert all(s.dp_rank == rank and s.pieces for s in got)
        assert sum(p["stop"] - p["start"] for p in got[0].pieces) == 64 + 1  # seq_length + 1 tokens
    every = trace_step(stages, 3)  # a DP=1 step, all ranks
    assert [s.sample for s in every] == list(range(2 * GBS, 3 * GBS)) and {s.dp_rank for s in every} == {0}


def test_trace_doc_is_the_inverse_of_trace_step(runs):
    from cpt.trace import open_stages, trace_doc, trace_step

    _, out, *_ = runs
    stages = open_stages([out / "runs" / "dp", out / "runs" / "s2"])
    uses: dict[str, set] = defaultdict(set)
    for step in range(1, STEPS + S2_STEPS + 1):
        for s in trace_step(stages, step):
            for p in s.pieces:
                uses[p["doc_id"]].add((s.stage, s.step, s.sample, p["start"], p["stop"]))
    assert len(uses) >= 8
    for doc_id in sorted(uses)[:: max(1, len(uses) // 12)]:
        hits = trace_doc(stages, doc_id)
        assert {(h["stage"], h["step"], h["sample"], h["start"], h["stop"]) for h in hits} == uses[doc_id]


def test_a_synthetic_sample_traces_back_to_its_source_document_and_prompt(runs):
    from cpt import shards
    from cpt.trace import open_stages, trace_doc, trace_step

    _, out, prefix, synthetic = runs
    stages = open_stages([out / "runs" / "dp", out / "runs" / "s2"])
    pieces = [p for step in (7, 8) for s in trace_step(stages, step) if s.stream == "qa" for p in s.pieces]
    assert pieces, "stage s2 drew no synthetic sample"
    piece = pieces[0]
    syn = piece["synthetic"]
    assert syn["generator"] == "test:handwritten" and syn["prompt_version"] == "physics.v2"
    assert syn["sample_index"] == "0"
    source = shards.open(prefix)
    ids = [str(i) for i in source.metadata(["doc_id"]).column("doc_id").to_pylist()]
    row = ids.index(syn["source_doc_id"])  # the document the snippet came from, in the training shard
    qa_text = shards.document_text(shards.open(synthetic), piece["document"])
    answer = qa_text.split("Answer:")[1].split()
    assert " ".join(answer[:10]) in " ".join(shards.document_text(source, row).split())
    # the source document is found in the training shard; its uses are those trace_step shows
    used = {(s.step, s.sample) for step in range(1, STEPS + S2_STEPS + 1) for s in trace_step(stages, step)
            if any(p["doc_id"] == syn["source_doc_id"] for p in s.pieces)}
    assert {(h["step"], h["sample"]) for h in trace_doc(stages, syn["source_doc_id"])} == used


def test_cpt_trace_command_json_text_and_errors(runs, capsys):
    from cpt.assets import mistral_tokenizer_dir
    from cpt.cli import main
    from cpt.trace import open_stages, trace_step

    _, out, *_ = runs
    folders = [str(out / "runs" / "dp"), str(out / "runs" / "s2")]
    assert main(["trace", *folders, "--step", "5", "--rank", "1", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    want = trace_step(open_stages(folders), 5, dp_rank=1)
    assert [(x["sample"], x["stream"], x["index"]) for x in lines] == [(s.sample, s.stream, s.index) for s in want]
    tok = str(mistral_tokenizer_dir() / SP_MODEL)
    assert main(["trace", *folders, "--step", "7", "--text", "--tokenizer", tok, "--chars", "40"]) == 0
    text = capsys.readouterr().out
    assert sum(line.startswith("sample ") for line in text.splitlines()) == GBS
    assert "doc_id" in text and "\n      \"" in text  # each piece followed by its decoded text
    assert main(["trace", *folders, "--step", "99"]) == 2
    assert "step 99: not covered" in capsys.readouterr().err
    assert main(["trace", *folders, "--step", "1", "--text"]) == 2
    assert "--text needs --tokenizer" in capsys.readouterr().err
