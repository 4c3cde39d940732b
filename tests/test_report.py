"""`cpt report`: a two-stage run with a resume, read back into plots and summary numbers computed by hand."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from cpt.cli import main
from cpt.report import load_run
from cpt.report.summary import stream_tokens
from cpt.report.units import human

TOKENS_PER_STEP = 512  # stage 1: 4 x 128, stage 2: 2 x 256


class Log:
    """Writes metrics.jsonl records as the trainer does (one JSON object per line, appended)."""

    def __init__(self, folder: Path, stage: str, seq_length: int | None, t0: float) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path, self.stage, self.time = folder / "metrics.jsonl", stage, t0
        self.times: list[float] = []
        if seq_length is not None:
            (folder / "recipe.yaml").write_text(
                f"training:\n  stage: {stage}\n  seq_length: {seq_length}\n  global_batch_size: "
                f"{TOKENS_PER_STEP // seq_length}\n")

    def __call__(self, kind: str, step: int, **fields: Any) -> None:
        self.time += 2.5
        self.times.append(self.time)
        rec = {"kind": kind, "step": step, "time": self.time, "stage": self.stage,
               "consumed_tokens": step * TOKENS_PER_STEP, **fields}
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    def train(self, step: int, loss: float | None = None, speed: float | None = None, skipped: bool = False) -> None:
        self("train", step, loss=3.0 - 0.1 * step if loss is None else loss, lr=3e-4 * min(1.0, step / 3),
             grad_norm=1.0, tokens_per_s=1000.0 + step if speed is None else speed, tflops=0.01,
             skipped=skipped, phase="stable")

    def eval(self, step: int, overall: float, overall_of: str | None = None, **streams: float) -> None:
        self("eval", step, loss=math.log(overall), ppl=overall, tokens=4096,
             streams={s: {"loss": math.log(p), "ppl": p, "tokens": 1024} for s, p in streams.items()},
             **({"overall_of": overall_of} if overall_of else {}))

    def data(self, step: int, weights: dict[str, float], samples: dict[str, int]) -> None:
        self("data", step, weights=weights, samples=samples)

    def mixture(self, step: int, hook: str, before: dict[str, float], after: dict[str, float],
                **flag: bool) -> None:
        self("mixture", step, hook=hook, weights_before=before, weights_after=after,
             ppl={s: 10.0 for s in after}, factor={s: 1.0 for s in after}, **flag)


def write_two_stages(root: Path) -> tuple[Path, Path, Log, Log]:
    """Stage 1 (seq 128) crashes after step 5 and resumes from the step-2 checkpoint; stage 2 (seq 256)
    adds a `code` stream and starts its blender at zero."""
    s1 = Log(root / "stage1", "stage1", 128, 1000.0)
    even = {"zh_math": 0.5, "en_physics": 0.5}
    s1("event", 0, message="initialised weights from hf import")
    s1.data(0, even, {"zh_math": 0, "en_physics": 0})
    for step in range(1, 6):  # the first attempt: these figures from step 3 on are superseded
        s1.train(step, loss=None if step < 3 else 9.9, speed=None if step < 3 else 5000.0)
        if step == 4:
            s1.eval(4, 21.0, zh_math=31.0, en_physics=16.0)
            s1.data(4, even, {"zh_math": 8, "en_physics": 8})
            s1.mixture(4, "topic_ppl", even, {"zh_math": 0.7, "en_physics": 0.3})
            s1.data(4, {"zh_math": 0.7, "en_physics": 0.3}, {"zh_math": 8, "en_physics": 8})
    s1("event", 2, message="resumed from checkpoints/step_00000002")
    s1.data(2, even, {"zh_math": 4, "en_physics": 4})
    after = {"zh_math": 0.6, "en_physics": 0.4}
    for step in range(3, 9):
        s1.train(step)
        if step == 4:
            s1.eval(4, 20.0, zh_math=30.0, en_physics=15.0)
            s1.data(4, even, {"zh_math": 8, "en_physics": 8})
            s1.mixture(4, "topic_ppl", even, after)
            s1.data(4, after, {"zh_math": 8, "en_physics": 8})
    s1.eval(8, 16.0, zh_math=24.0, en_physics=13.5)
    s1.data(8, after, {"zh_math": 18, "en_physics": 14})
    s1.mixture(8, "topic_ppl", after, after, updated=False)  # a controller call that kept the mixture

    s2 = Log(root / "stage2", "stage2", 256, 5000.0)
    w2 = {"zh_math": 0.4, "en_physics": 0.3, "code": 0.3}
    s2.data(8, w2, {"zh_math": 0, "en_physics": 0, "code": 0})
    for step in range(9, 13):
        if step == 11:  # a skipped step: NaN loss, as json.dumps writes it
            s2.train(11, loss=float("nan"), skipped=True)
        else:
            s2.train(step)
        if step == 10:
            s2.eval(10, 15.0, zh_math=22.0, en_physics=13.0, code=9.0)
            s2.data(10, w2, {"zh_math": 2, "en_physics": 1, "code": 1})
            mid = {"zh_math": 0.45, "en_physics": 0.25, "code": 0.3}
            s2.mixture(10, "topic_ppl", w2, mid)
            final = {"zh_math": 0.5, "en_physics": 0.25, "code": 0.25}
            s2.mixture(10, "floor", mid, final)
            s2.data(10, final, {"zh_math": 2, "en_physics": 1, "code": 1})
    s2.eval(12, 14.0, zh_math=20.0, en_physics=12.6, code=8.1)
    s2.data(12, final, {"zh_math": 4, "en_physics": 2, "code": 2})
    return root / "stage1", root / "stage2", s1, s2


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
        assert im.format == "PNG"
        return im.size


def test_two_stage_report_numbers_files_and_duplicates(tmp_path: Path, capsys):
    stage1, stage2, log1, log2 = write_two_stages(tmp_path / "runs")
    out = tmp_path / "report"
    assert main(["report", str(stage2), str(stage1), "--out", str(out)]) == 0  # order of folders is free
    printed = capsys.readouterr().out
    assert "zh_math" in printed and "-33.3%" in printed

    for name in ("loss", "lr", "valid_ppl", "mixture", "stream_tokens"):
        w, h = _png_size(out / f"{name}.png")
        assert 600 <= w <= 2000 and 300 <= h <= 1200, (name, w, h)
    assert not list(out.glob("*.tmp"))
    s = json.loads((out / "summary.json").read_text())

    # counted: the train/eval steps a resume repeated (stage 1: steps 3-5 and the step-4 eval); data and
    # mixture records superseded at one step (a weight change after an eval) are not a resume
    assert s["duplicates_replaced"] == 3 + 1
    assert [st["name"] for st in s["stages"]] == ["stage1", "stage2"]
    st1, st2 = s["stages"]
    assert (st1["first_step"], st1["last_step"], st1["steps"]) == (0, 8, 8)
    assert (st1["start_tokens"], st1["end_tokens"], st1["tokens"]) == (0, 4096, 4096)
    assert (st2["first_step"], st2["last_step"], st2["steps"]) == (8, 12, 4)
    assert (st2["start_tokens"], st2["end_tokens"], st2["tokens"]) == (4096, 6144, 2048)
    assert st1["wall_time_s"] == pytest.approx(log1.times[-1] - log1.times[0])
    assert st2["wall_time_s"] == pytest.approx(log2.times[-1] - log2.times[0])
    assert st1["tokens_per_s_mean"] == pytest.approx(1004.5)  # 1000 + mean(1..8): the 5000s were replaced
    assert st2["tokens_per_s_mean"] == pytest.approx(1010.5)
    t = s["totals"]
    assert (t["steps"], t["tokens"], t["final_step"], t["final_tokens"]) == (12, 6144, 12, 6144)
    assert t["tokens_per_s_mean"] == pytest.approx(1006.5)

    assert s["train"]["first"] == {"loss": pytest.approx(2.9), "step": 1, "tokens": 512}
    assert s["train"]["last"] == {"loss": pytest.approx(1.8), "step": 12, "tokens": 6144}
    assert s["train"]["skipped_steps"] == 1 and s["train"]["records"] == 12
    # 11 finite losses -> windows of 2: steps 1-2 and 10, 12 (step 11's NaN is not a loss)
    assert s["train"]["first_mean"] == {"loss": pytest.approx(2.85), "steps": 2, "from_step": 1, "to_step": 2}
    assert s["train"]["last_mean"] == {"loss": pytest.approx(1.9), "steps": 2, "from_step": 10, "to_step": 12}

    v = s["validation"]
    assert v["evals"] == 4
    expected = {"zh_math": (30.0, 4, 20.0, 12), "en_physics": (15.0, 4, 12.6, 12), "code": (9.0, 10, 8.1, 12)}
    assert set(v["streams"]) == set(expected)
    for name, (first, first_step, last, last_step) in expected.items():
        e = v["streams"][name]
        assert (e["first"]["ppl"], e["first"]["step"], e["last"]["ppl"], e["last"]["step"]) == \
            (first, first_step, last, last_step)
        assert e["change_pct"] == pytest.approx(100.0 * (last - first) / first)
    assert v["streams"]["zh_math"]["change_pct"] == pytest.approx(-100 / 3)
    assert v["overall"]["first"]["ppl"] == 20.0 and v["overall"]["last"]["ppl"] == 14.0
    assert v["overall"]["change_pct"] == pytest.approx(-30.0)

    m = s["mixture"]
    assert m["final_weights"] == {"zh_math": 0.5, "en_physics": 0.25, "code": 0.25} and m["as_of_step"] == 12
    assert (m["updates"], m["calls"]) == (3, 4)
    assert m["per_hook"] == {"topic_ppl": {"calls": 3, "updates": 2, "update_steps": [4, 10]},
                             "floor": {"calls": 1, "updates": 1, "update_steps": [10]}}
    # samples x the stage's seq_length, stage by stage: 18*128 + 4*256, 14*128 + 2*256, 2*256
    assert s["stream_tokens"] == {"unit": "tokens", "as_of_step": 12,
                                  "values": {"zh_math": 3328, "en_physics": 2304, "code": 512}}
    assert s["skipped_plots"] == {} and set(s["plots"]) == {"loss", "lr", "valid_ppl", "mixture", "stream_tokens"}

    md = (out / "summary.md").read_text()
    for text in ("stage1", "stage2", str(stage1), "| zh_math | 30.000", "20.000", "-33.3%", "-16.0%", "-10.0%",
                 "-30.0%", "3,328", "2,304", "| code | 0.2500 | 512 |", "`topic_ppl`: 2 updates in 3 calls at steps 4, 10", "`floor`: 1 update in 1 call at step 10", "| 1,004 |",
                 "2.9000", "1.8000", "first 2 logged steps (1–2): **2.8500**; of the last 2 (10–12): **1.9000**",
                 "![Training loss](loss.png)", "(stream_tokens.png)", "(mixture.png)"):
        assert text in md, text

    run = load_run([stage1, stage2])
    train = run.kind("train")
    assert [r.step for r in train] == list(range(1, 13))
    assert train[4].fields["loss"] == pytest.approx(2.5)  # step 5 from the resumed attempt, not 9.9
    assert [r.tokens for r in train] == sorted(r.tokens for r in train)
    assert [r.fields["message"][:7] for r in run.kind("event")] == ["initial", "resumed"]


def test_overall_over_streams_leaves_out_a_stream_that_joins_later(tmp_path: Path, capsys):
    # the trainer's overall over held-out streams drops when a low-PPL stream joins (stage 2's synthetic
    # data) with no change to the model: the report compares the streams every eval validated
    s1 = Log(tmp_path / "stage1", "stage1", 128, 1000.0)
    s1.eval(0, 20.0, "streams", zh=40.0, en=10.0)
    s1.train(1)
    s1.eval(1, 18.0, "streams", zh=32.4, en=10.0)
    s2 = Log(tmp_path / "stage2", "stage2", 128, 2000.0)
    s2.eval(1, 7.0, "streams", zh=32.4, en=10.0, synthetic=1.1)
    s2.train(2)
    s2.eval(2, 6.5, "streams", zh=25.6, en=10.0, synthetic=1.0)
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "stage1"), str(tmp_path / "stage2"), "--out", str(out)]) == 0
    v = json.loads((out / "summary.json").read_text())["validation"]["overall"]
    # equal token counts: the overall PPL of two streams is their geometric mean
    assert v["first"]["ppl"] == pytest.approx(20.0) and v["last"]["ppl"] == pytest.approx(16.0)
    assert v["change_pct"] == pytest.approx(-20.0)
    assert (v["over_streams"], v["left_out"]) == (["en", "zh"], ["synthetic"])
    assert "synthetic joined later" in (out / "summary.md").read_text()
    # one stream set throughout: the trainer's own figure, as logged
    only = Log(tmp_path / "one", "stage1", 128, 1000.0)
    only.eval(0, 21.0, "streams", zh=40.0, en=10.0)
    only.train(1)
    only.eval(1, 17.0, "streams", zh=30.0, en=10.0)
    assert main(["report", str(tmp_path / "one"), "--out", str(tmp_path / "r1")]) == 0
    v = json.loads((tmp_path / "r1" / "summary.json").read_text())["validation"]["overall"]
    assert (v["first"]["ppl"], v["last"]["ppl"]) == (21.0, 17.0) and "left_out" not in v


def test_one_folder_default_out_skips_missing_plots_and_reads_samples(tmp_path: Path, capsys):
    run = tmp_path / "run"
    log = Log(run, "main", None, 0.0)  # no recipe.yaml: seq_length unknown
    for step in range(1, 5):
        log.train(step)
    log.data(4, {"a": 1.0}, {"a": 16})
    (run / "report").mkdir()
    (run / "report" / "valid_ppl.png").write_bytes(b"stale plot of an earlier report")
    assert main(["report", str(run)]) == 0
    out = run / "report"
    s = json.loads((out / "summary.json").read_text())
    assert set(s["skipped_plots"]) == {"valid_ppl"} and "eval" in s["skipped_plots"]["valid_ppl"]
    assert not (out / "valid_ppl.png").exists()
    assert s["stream_tokens"] == {"unit": "samples", "as_of_step": 4, "values": {"a": 16}}
    assert s["validation"] == {"evals": 0, "overall": None, "streams": {}}
    md = (out / "summary.md").read_text()
    assert "Validation perplexity per stream plot skipped" in md and "samples, not tokens" in md
    assert "skipped plot valid_ppl" in capsys.readouterr().out


def test_inherited_sample_counts_are_not_counted_twice(tmp_path: Path):
    s1 = Log(tmp_path / "s1", "s1", 100, 0.0)
    s1.data(0, {"a": 1.0}, {"a": 0})
    s1.train(1)
    s1.data(1, {"a": 1.0}, {"a": 4})
    s2 = Log(tmp_path / "s2", "s2", 200, 10.0)
    s2.data(1, {"a": 0.5, "b": 0.5}, {"a": 4})  # the blender continued: stage 1's count carried over
    s2.train(2)
    s2.data(2, {"a": 0.5, "b": 0.5}, {"a": 5, "b": 1})
    st = stream_tokens(load_run([tmp_path / "s1", tmp_path / "s2"]))
    assert st.points[-1] == (1024, {"a": 4 * 100 + 1 * 200, "b": 200})


def test_records_without_stage_or_tokens_take_folder_name_and_train_tokens(tmp_path: Path):
    folder = tmp_path / "old_run"
    folder.mkdir()
    lines = [{"kind": "train", "step": 1, "time": 1.0, "loss": 2.0, "consumed_tokens": 64},
             {"kind": "eval", "step": 1, "time": 2.0, "loss": 1.0, "ppl": 2.7},
             {"kind": "event", "step": 0, "time": 0.5, "message": "started"},
             {"kind": "custom_kind", "step": 1, "time": 3.0, "consumed_tokens": 64, "whatever": [1]}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    run = load_run([folder])
    assert [s.name for s in run.stages] == ["old_run"]
    assert run.kind("eval")[0].tokens == 64
    assert run.folders[0].without_tokens == 1 and any("1 records without" in n for n in run.notes)


def test_torn_last_line_is_skipped_and_noted(tmp_path: Path):
    log = Log(tmp_path / "run", "main", 64, 0.0)
    log.train(1)
    log.train(2)
    with log.path.open("a") as f:
        f.write('{"kind": "train", "step": 3, "ti')  # killed mid-write
    out = tmp_path / "rep"
    assert main(["report", str(tmp_path / "run"), "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["train"]["last"]["step"] == 2 and s["folders"][0]["torn_last_line"] is True
    assert "cut off" in (out / "summary.md").read_text()


def _bad(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "bad"
    folder.mkdir(exist_ok=True)
    (folder / "metrics.jsonl").write_text(text)
    return folder


GOOD = json.dumps({"kind": "train", "step": 1, "time": 1.0, "stage": "s", "consumed_tokens": 8, "loss": 2.0}) + "\n"


@pytest.mark.parametrize("text, message", [
    (GOOD + "{not json\n" + GOOD, "metrics.jsonl:2: not valid JSON"),
    (GOOD + "[1, 2]\n", "metrics.jsonl:2: expected a JSON object"),
    (GOOD + json.dumps({"kind": "eval", "step": 1, "time": 2.0, "consumed_tokens": 8,
                        "streams": {"code": {"ppl": "low"}}}) + "\n", "metrics.jsonl:2: field 'streams.code.ppl'"),
    (GOOD + json.dumps({"kind": "data", "step": "3", "time": 2.0}) + "\n", "metrics.jsonl:2: field 'step'"),
    (GOOD + json.dumps({"kind": "data", "step": 1, "time": 2.0, "consumed_tokens": 8,
                        "samples": {"a": -1}}) + "\n", "metrics.jsonl:2: field 'samples.a'"),
    (GOOD + json.dumps({"kind": "mixture", "step": 1, "time": 2.0, "consumed_tokens": 8}) + "\n",
     "metrics.jsonl:2: field 'hook'"),
    (json.dumps({"kind": "event", "step": 0, "time": 1.0, "consumed_tokens": 0, "message": "x"}) + "\n",
     "no train records in"),
])
def test_bad_metrics_are_one_clear_error(tmp_path: Path, capsys, text: str, message: str):
    folder = _bad(tmp_path, text)
    assert main(["report", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cpt report: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_folder_errors(tmp_path: Path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "empty: no metrics.jsonl" in capsys.readouterr().err
    folder = _bad(tmp_path, GOOD)
    assert main(["report", str(folder), str(tmp_path / "empty")]) == 2
    assert "--out is required with several run folders" in capsys.readouterr().err
    assert main(["report", str(folder), str(folder), "--out", str(tmp_path / "o")]) == 2
    assert "given twice" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    assert main(["report", str(folder), "--out", str(tmp_path / "a_file")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    (folder / "metrics.jsonl").write_bytes(GOOD.encode() + b'{"kind": "\xff"}\n' + GOOD.encode())
    assert main(["report", str(folder), "--out", str(tmp_path / "o")]) == 2
    assert "metrics.jsonl:2: not UTF-8 text" in capsys.readouterr().err


def test_human_token_counts():
    assert [human(v) for v in (512, 4096, 1_234_567, 999_950, 3.2e9, 0.5)] == ["512", "4.1k", "1.2M", "1M", "3.2B", "0.5"]
