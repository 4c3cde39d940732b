"""`cpt demo --size tiny`: every CLI command the demo uses, end to end, then what it must show.

The demo runs once per module (a tiny random Llama with SmolLM2's tokenizer, a tiny corpus, a few
steps per stage); the tests read what it wrote: stage 2 continues stage 1 (step, consumed tokens,
optimizer) with the new blend, the report holds the run's numbers, the last line is the JSON
record, and a rerun skips every completed step.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cpt.demo.corpus import build_corpus, paragraph_pieces
from cpt.demo.pipeline import SETTINGS, build_steps
from cpt.demo.runner import Runner, Step, StepFailed

DEMO_TIMEOUT_S = 900
TOPIC_STREAMS = ("zh_law_politics", "zh_economics", "zh_humanities", "zh_general",
                 "en_humanities", "en_science", "en_society", "en_computing")


def _cpt(*args: str, timeout: float = DEMO_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cpt.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo") / "tiny"
    proc = _cpt("demo", "--size", "tiny", "--out", str(out))
    assert proc.returncode == 0, f"cpt demo failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return out, proc


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _tokens_per_step(run: Path) -> int:
    t = yaml.safe_load((run / "recipe.yaml").read_text())["training"]
    return t["global_batch_size"] * t["seq_length"]


def test_every_step_ran_and_the_last_line_is_the_json_record(demo):
    out, proc = demo
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    names = [s.name for s in build_steps(out, SETTINGS["tiny"])]
    assert record["bench"] == "demo" and record["skipped_steps"] == []
    assert list(record["steps_seconds"]) == names and list(record["steps_cpu_seconds"]) == names
    assert all(v > 0 for v in record["steps_seconds"].values())
    # every command step ran a subprocess that used CPU (in-process steps count this process's time)
    assert all(v > 0 for v in record["steps_cpu_seconds"].values())
    assert len(record["load_average"]) == 3
    assert record["seconds"] >= sum(record["steps_seconds"].values()) - 1.0
    streams = {*TOPIC_STREAMS, "code", "synthetic", "en_general",
               "overall"}
    assert set(record["ppl_before"]) == streams and set(record["ppl_after"]) == streams
    for k, before in record["ppl_before"].items():
        after = record["ppl_after"][k]
        assert record["change_pct"][k] == pytest.approx(100 * (after - before) / before, abs=0.01)
    # the tiny model starts from random weights: a few steps at lr 1e-3 must lower every PPL
    assert record["ppl_after"]["overall"] < record["ppl_before"]["overall"]
    assert set(record["change_pct_by_language"]) == {"zh", "en", "en_general"}
    assert "English never trained on (Usenet posts) held-out PPL" in (out / "summary.txt").read_text()
    assert set(record["lm_eval_before"]) == set(record["lm_eval_after"]) == {
        f"cpt_next_sentence_{lang}/{m}" for lang in ("en", "zh") for m in ("acc", "acc_norm")}
    assert json.loads((out / "result.json").read_text()) == record
    assert "held-out perplexity per stream" in (out / "summary.txt").read_text()
    stored = json.loads((out / "eval" / "ppl_after.json").read_text())
    assert stored["streams"]["zh_humanities"]["ppl"] == pytest.approx(record["ppl_after"]["zh_humanities"], rel=1e-4)


def test_stage2_continues_stage1_with_the_new_blend(demo):
    out, _ = demo
    s1, s2 = _records(out / "stage1" / "metrics.jsonl"), _records(out / "stage2" / "metrics.jsonl")
    train1 = [r for r in s1 if r["kind"] == "train"]
    train2 = [r for r in s2 if r["kind"] == "train"]
    per_step = _tokens_per_step(out / "stage1")
    assert [r["step"] for r in train1] == [1, 2, 3, 4] and {r["stage"] for r in train1} == {"stage1"}
    # steps and consumed tokens go on from stage 1's last step: the WSD position carries over
    assert [r["step"] for r in train2] == [5, 6] and {r["stage"] for r in train2} == {"stage2"}
    assert train2[0]["consumed_tokens"] == train1[-1]["consumed_tokens"] + per_step
    assert train2[0]["phase"] == "decay" and train2[-1]["lr"] < train1[-1]["lr"]
    start = [r for r in s2 if r["kind"] == "event" and "starts from stage 'stage1'" in r.get("message", "")]
    assert len(start) == 1 and start[0].get("previous_stage") == "stage1"
    # the new blend: eleven streams, synthetic at 2/10, and stage 1's streams carried on
    data2 = [r for r in s2 if r["kind"] == "data"][0]
    assert set(data2["weights"]) == {*TOPIC_STREAMS, "code",
                                     "synthetic", "en_general"}
    assert data2["weights"]["synthetic"] == pytest.approx(0.2, abs=1e-6)
    assert sum(v for k, v in data2["weights"].items() if k.startswith("zh_")) == pytest.approx(0.1, abs=1e-6)
    assert set(start[0]["carried_streams"]) == {*TOPIC_STREAMS, "code",
                                                "en_general"}
    data1 = [r for r in s1 if r["kind"] == "data"][0]
    assert sum(v for k, v in data1["weights"].items() if k.startswith("zh_")) == pytest.approx(0.2, abs=1e-6)
    # the checkpoints agree with the metrics
    state = json.loads((out / "stage2" / "checkpoints" / (out / "stage2/checkpoints/latest").read_text().strip()
                        / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["consumed_tokens"] == 6 * per_step
    # per-stream validation ran in both stages
    evals = [r for r in s1 + s2 if r["kind"] == "eval"]
    assert evals and all("zh_humanities" in r["streams"] for r in evals)
    # the English probe: validated at every evaluation, never drawn (weight 0, outside the controller's groups)
    assert all("en_general" in r["streams"] for r in evals)
    data = [r for r in s1 + s2 if r["kind"] == "data"]
    assert all(r["weights"]["en_general"] == 0 and r["samples"]["en_general"] == 0 for r in data)
    # eval_at_start: each stage validates the model it starts from before its first step
    stage2_start = [r["step"] for r in s2 if r["kind"] == "train"][0] - 1
    assert [r["step"] for r in s1 if r["kind"] == "eval"][0] == 0
    assert [r["step"] for r in s2 if r["kind"] == "eval"][0] == stage2_start


PLOTS = ("loss.png", "lr.png", "valid_ppl.png", "mixture.png", "stream_tokens.png")


def test_report_holds_the_runs_numbers(demo):
    out, _ = demo
    report = out / "report"
    for name in PLOTS:
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    summary = (report / "summary.md").read_text()
    records = _records(out / "stage2" / "metrics.jsonl")
    final = [r for r in records if r["kind"] == "train"][-1]
    last_eval = [r for r in records if r["kind"] == "eval"][-1]
    assert "stage1" in summary and "stage2" in summary
    assert f"final step {final['step']}, {final['consumed_tokens']:,} consumed tokens" in summary
    assert f"**{final['loss']:.4f}** at step {final['step']}" in summary
    for stream, row in last_eval["streams"].items():
        assert f"| {stream} |" in summary and f"{row['ppl']:.3f}" in summary, stream
    for name in PLOTS:
        assert f"]({name})" in summary
    data = json.loads((report / "summary.json").read_text())
    assert data["totals"]["final_tokens"] == final["consumed_tokens"]
    # the synthetic stream joins in stage 2: the overall is over the streams validated in both stages
    overall = data["validation"]["overall"]
    assert overall["left_out"] == ["synthetic"]
    common = [row for name, row in last_eval["streams"].items() if name in overall["over_streams"]]
    mean_loss = sum(r["loss"] * r["tokens"] for r in common) / sum(r["tokens"] for r in common)
    assert overall["last"]["ppl"] == pytest.approx(math.exp(mean_loss), rel=1e-9)
    assert overall["first"]["step"] == 0  # eval_at_start: the imported model is the baseline


def test_rerun_skips_completed_steps(demo):
    out, _ = demo
    proc = _cpt("demo", "--size", "tiny", "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["skipped_steps"] == list(record["steps_seconds"])
    assert record["ppl_after"]  # the numbers come from the files, not from this run


def test_other_size_in_the_same_folder_is_refused(demo):
    out, _ = demo
    proc = _cpt("demo", "--size", "full", "--out", str(out), timeout=120)
    assert proc.returncode == 2 and "--size tiny" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_failing_step_names_its_command_and_log_tail(tmp_path):
    runner = Runner(tmp_path, log=lambda m: None)
    step = Step("preprocess-missing", ["preprocess", "--input", "nope.jsonl", "--output-prefix", "data/x",
                                       "--tokenizer-model", "nope"], ("data/x.manifest.json",))
    with pytest.raises(StepFailed) as err:
        runner.run(step)
    text = str(err.value)
    assert "cpt preprocess --input nope.jsonl" in text and "logs/preprocess-missing.log" in text
    assert "last" in text and "nope" in text.split("---", 2)[-1]
    assert not runner.marker("preprocess-missing").exists()


def test_topic_streams_come_from_the_multilingual_tagger(demo):
    """The tagger is USE multilingual with its head trained on the labelled check sets (its held-out report
    is in the classifier folder), and every (language, topic) stream of the recipes trained and validated."""
    out, _ = demo
    report = json.loads((out / "models" / "topic_clf" / "cpt_train_report.json").read_text())
    assert report["encoder"]["kind"] == "use-m3" and report["eval"]["accuracy"] >= 0.6
    evals = [r for r in _records(out / "stage1" / "metrics.jsonl") if r["kind"] == "eval"]
    assert set(TOPIC_STREAMS) <= set(evals[-1]["streams"])
    data1 = [r for r in _records(out / "stage1" / "metrics.jsonl") if r["kind"] == "data"][0]
    assert all(data1["weights"][name] > 0 for name in TOPIC_STREAMS)


def test_corpus_is_deterministic(demo, tmp_path):
    out, _ = demo
    again = build_corpus(tmp_path / "corpus", "tiny")
    first = json.loads((out / "corpus" / "manifest.json").read_text())
    assert again == first
    langs = {json.loads(line)["lang"] for f in ("zh", "en", "code") for line in (tmp_path / "corpus" / f"{f}.jsonl").open()}
    assert langs == {"zh", "en", "code"}
    probe = [json.loads(line) for line in (tmp_path / "corpus" / "en_general.jsonl").open()]
    assert len(probe) == 12 and {r["source"] for r in probe} == {"20newsgroups"}
    assert {r["id"].split("/")[1] for r in probe} == {"alt.atheism", "sci.space"}


def test_paragraph_pieces_pack_and_drop_short():
    text = "\n\n".join(["a" * 50, "b" * 50, "c" * 120, "d" * 5])
    assert list(paragraph_pieces(text, max_chars=110, min_chars=20)) == ["a" * 50 + "\n\n" + "b" * 50, "c" * 110]
