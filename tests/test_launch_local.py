"""The executor seam without Ray: the local process pool and submitit's local executor (the Slurm
code path: an array job for the slices, then the merge job) give `cpt preprocess` the one-process
bytes, also when the process of a slice is SIGKILLed mid-slice; the driver's streamed assembly takes
chunks in plan order only once committed and, killed, leaves nothing that reads as output; the
summary's timeline; a slice takes the driver's plan only for the input it was made from; a warm-up
loads what a slice then reuses (a warmed local process takes the first attempt handed to it, a dead one is
passed over; `cpt tag` slices find the classifier loaded); a worker's reused tokenizer/engine is keyed by
what they are made of;
argv round trips; bad settings."""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from cpt.cli import main
from cpt.corpus.progress import Progress
from cpt.launch import LaunchSpec
from cpt.launch.argv import argv_of
from cpt.shards.build import chunk_dir
from cpt.corpus.plan import interleaved_slice
from cpt.shards.launched import slice_task, warm_up_task
from cpt.shards.pipeline import (Assembly, PreprocessConfig, _Loaded, _run_chunks, handed_plan, prepare,
                                 run_preprocess)
from annotate_fixtures import mixed_corpus
from launch_fixtures import (CHUNK_MB, SP_MODEL, SUFFIXES,  # noqa: F401
                             assert_built_once_but_the_dead_attempts, corpus, files_of, killed_slice_launch,
                             launch_summary, preprocess_argv, single, slice_chunks)


def test_local_pool_equals_one_process(corpus, single, tmp_path):
    out = tmp_path / "local"
    assert main(preprocess_argv(corpus, out, "--executor", "local", "--num-shards", "3", "--local-cpus", "2")) == 0
    assert files_of(out) == files_of(single)
    s = launch_summary(out)
    assert s["succeeded"] == 3 and s["retried"] == 0 and s["docs"] == json.loads(
        (tmp_path / "local.summary.json").read_text())["read"]
    # where the launch's time went; the driver assembled chunks while the slices ran
    assert set(s["phase_seconds"]) == {"start", "tasks", "merge", "merge_overlapped", "timeline"}
    assert all(0 < a["ran_seconds"] <= a["seconds"] and a["cpu_seconds"] > 0
               for task in s["tasks"] for a in task["attempts"])
    # one timeline from the driver's process start: planning beside the executor's start, the
    # slices (each placed by its own clock, fresh local workers), the merge's tail, the stop
    t = s["phase_seconds"]["timeline"]
    assert set(t) == {"driver_ready", "planned", "executor_started", "launched", "first_task_started",
                      "last_task_started", "first_task_ended", "last_task_ended", "tasks_noticed", "merged",
                      "executor_stopped"}
    assert 0 < t["driver_ready"] < t["launched"] <= t["first_task_started"] <= t["last_task_ended"] \
        <= t["tasks_noticed"] <= t["merged"]
    assert max(t["planned"], t["executor_started"]) <= t["launched"]
    attempts = [a for task in s["tasks"] for a in task["attempts"]]
    assert all(a["ran_from_s"] < a["ran_to_s"] <= a["noticed_s"] + 0.05 and a["worker_age"] >= 0 for a in attempts)
    results = [task["result"] for task in s["tasks"]]
    assert all(set(r["prepare_seconds"]) == {"tokenizer", "files", "plan", "engine"} for r in results)
    # one warm-up per CPU started with the executor, before the plan: the first two slices were handed
    # to those processes and found the tokenizer/engine loaded; the third got a fresh process
    warm = s["warm_up"]
    assert [w["name"] for w in warm] == ["warm-up-00000", "warm-up-00001"] and all(w["ok"] for w in warm)
    assert [a["pid"] for a in attempts[:2]] == [w["pid"] for w in warm] and attempts[2]["pid"] not in [w["pid"] for w in warm]
    assert all(w["ran_to_s"] <= a["ran_from_s"] for w, a in zip(warm, attempts))
    assert [r["reused_tokenizer"] for r in results] == [True, True, False]
    assert 0 <= attempts[2]["worker_age"] < attempts[2]["seconds"]  # its start-up was on its own clock
    # 3 slices on 2 CPUs: the first two take the third's chunks once done with their own, so it
    # starts (when one of them ended) to find every chunk claimed; each chunk was built once
    built = [r["built"] for r in results]
    assert built[2] == [] and results[0]["taken"] + results[1]["taken"] >= len(slice_chunks(corpus, 2, 3))
    assert_built_once_but_the_dead_attempts(s, [])


@pytest.mark.slow
def test_submitit_local_equals_one_process_after_a_killed_job(corpus, single, tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    killed_slice_launch(corpus, single, tmp_path, monkeypatch, "submitit-local")
    assert (tmp_path / "submitit-local.launch" / "logs" / "merge.attempt-1.log").is_file()


def test_assembly_follows_committed_chunks_in_order_and_a_killed_driver_leaves_nothing_complete(
        corpus, single, tmp_path):
    out = tmp_path / "streamed"
    cfg = PreprocessConfig(inputs=[str(corpus)], output_prefix=str(out), tokenizer=SP_MODEL,
                           chunk_mb=float(CHUNK_MB), progress=False)
    p = prepare(cfg)
    _run_chunks(p.job, p.plan, 1, Progress("preprocess", 0, False), p.engine)
    temporaries = lambda: sorted(tmp_path.glob(".streamed.*.tmp"))  # noqa: E731
    parked = chunk_dir(p.work, 1).rename(tmp_path / "parked")  # chunk 1 not committed yet

    asm = Assembly(p, p.plan)
    assert asm.advance() and not asm.advance() and asm.next == 1  # chunk 2 waits for chunk 1
    assert not any(Path(f"{out}{s}").exists() for s in SUFFIXES) and temporaries()  # nothing reads as output
    asm.abort()
    assert temporaries() == []
    with pytest.raises(ValueError, match=r"1 chunks are not finished \(first: chunk 1\)"):
        Assembly(p, p.plan).finish()
    assert temporaries() == [] and not Path(f"{out}.manifest.json").exists()

    parked.rename(chunk_dir(p.work, 1))
    killed = Assembly(p, p.plan)
    assert killed.advance() and killed.advance()
    del killed  # the driver is SIGKILLed mid-assembly: its temporaries stay, no output appears
    assert temporaries() and not Path(f"{out}.idx").exists()
    summary = run_preprocess(cfg)  # the rerun keeps the chunks and assembles afresh
    assert summary["chunks_resumed"] == len(p.plan) and files_of(out) == files_of(single)
    assert temporaries() == [] and not p.work.exists()


def test_a_streamed_assembly_writes_each_part_behind_and_leaves_the_catch_up_to_one_fsync(
        corpus, single, tmp_path, monkeypatch):
    import os

    out = tmp_path / "behind"
    cfg = PreprocessConfig(inputs=[str(corpus)], output_prefix=str(out), tokenizer=SP_MODEL,
                           chunk_mb=float(CHUNK_MB), progress=False)
    p = prepare(cfg)
    _run_chunks(p.job, p.plan, 1, Progress("preprocess", 0, False), p.engine)
    synced, fdatasync = [], os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), fdatasync(fd)))
    asm = Assembly(p, p.plan)
    assert asm.advance() and asm.advance()  # as the driver streams: each part's tokens go to disk at once
    assert len(synced) == 2 and all(Path(f).name.startswith(".behind.bin.") for f in synced)
    asm.finish()  # the rest is appended without (the commit's fsync writes it)
    assert len(synced) == 2 and files_of(out) == files_of(single)


def test_missing_submitit_and_bad_settings_say_one_line(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    assert main(preprocess_argv(corpus, tmp_path / "x", "--executor", "slurm", "--num-shards", "2")) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if " error: " in line]
    assert err == ["cpt preprocess: error: --executor slurm needs submitit, which is not installed: "
                   "pip install 'cpt[slurm]'"]
    monkeypatch.delitem(sys.modules, "submitit")
    if shutil.which("sbatch") is None and importlib.util.find_spec("submitit") is not None:
        assert main(preprocess_argv(corpus, tmp_path / "x", "--executor", "slurm", "--num-shards", "2")) == 1
        assert capsys.readouterr().err.splitlines()[-1] == (
            "cpt preprocess: error: --executor slurm needs Slurm's sbatch on PATH, and this machine has none "
            "(--executor submitit-local runs the same code path here)")
    assert main(preprocess_argv(corpus, tmp_path / "x", "--executor", "local", "--num-shards", "2",
                                "--shard-index", "1")) == 1
    assert "give --num-shards N without --shard-index" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--max-retries must be >= 0"):
        LaunchSpec(max_retries=-1)
    with pytest.raises(ValueError, match="--executor must be one of local, ray, slurm, submitit-local"):
        LaunchSpec(executor="k8s")


def test_argv_round_trips_through_the_parser():
    from cpt.commands import preprocess, tag

    for module, argv in [
        (tag, ["--model", "m", "--chunk-size", "8", "--device", "cpu", "--", "a", "b"]),
        (preprocess, ["--no-append-eod", "--keep-fields", "url", "--input", "x", "y", "--output-prefix", "o",
                      "--tokenizer-model", "t", "--slurm-option", "qos=low", "--slurm-option", "account=a"]),
    ]:
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        args = parser.parse_args(argv)
        assert parser.parse_args(argv_of(parser, args)) == args


@pytest.mark.slow
def test_synth_slices_on_the_local_pool_equal_one_process(tmp_path, capsys):
    """Greedy generation one prompt at a time is a pure function of the prompt, so the parts' journals
    merged and finalized over the whole work list give the one-process output byte for byte."""
    facts = ["The net force on an object equals its mass times its acceleration.",
             "Friction opposes the relative motion of two surfaces in contact.",
             "Kinetic energy is one half of the mass times the square of the speed.",
             "Momentum is the product of mass and velocity and is conserved in collisions."]
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"doc{i}", "text": f"{f} " * 3}) + "\n" for i, f in enumerate(facts)))
    common = ["synth", "--input", str(docs), "--discipline", "physics", "--min-snippet-chars", "50",
              "--pairs-per-snippet", "1", "--batch-size", "1", "--max-new-tokens", "8", "--temperature", "0",
              "--progress-every", "0", "--threads", "1", "--corrupt-rate", "0.5"]
    assert main([*common, "--output", str(tmp_path / "one.jsonl")]) == 0
    assert main([*common, "--output", str(tmp_path / "many.jsonl"), "--executor", "local", "--num-shards", "2",
                 "--local-cpus", "2"]) == 0
    assert (tmp_path / "many.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()

    def journal(name: str) -> dict:  # every generation (8 tokens: too short to parse into pairs here)
        lines = (tmp_path / f"{name}.jsonl.journal.jsonl").read_text().splitlines()
        return {r["key"]: r for r in map(json.loads, lines)}

    assert journal("many") == journal("one") and len(journal("one")) == 4
    keys = ("tasks", "missing", "pairs_kept", "rejected", "by_discipline", "corruption")
    summaries = [json.loads((tmp_path / f"{n}.jsonl.summary.json").read_text()) for n in ("one", "many")]
    assert [{k: s[k] for k in keys} for s in summaries] == [{k: summaries[0][k] for k in keys}] * 2
    s = json.loads((tmp_path / "many.jsonl.launch" / "summary.json").read_text())
    assert s["succeeded"] == 2 and s["merge"]["ran"]
    assert all(t["result"]["argv"][6] == str(tmp_path / f"many.jsonl.part-0000{i}-of-00002.jsonl")
               for i, t in enumerate(s["tasks"]))


@pytest.mark.slow
def test_tag_on_the_local_pool_warms_its_workers_up_and_equals_one_process(tmp_path):
    """Each of the two slices runs in a process started with the executor whose warm-up loaded the
    classifier from slice 0's argv (`cpt.annotate.launched`): the slices find it loaded."""
    from annotate_fixtures import zero_shot_classifier
    from cpt.annotate.docs import write_jsonl
    import cpt.shards as shards

    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "c.jsonl", [{"text": d["text"][:300]} for d in mixed_corpus(n_zh=4, n_en=4)])
    one, many = tmp_path / "one", tmp_path / "many"
    for prefix in (one, many):
        run_preprocess(PreprocessConfig(inputs=[str(tmp_path / "in")], output_prefix=str(prefix), tokenizer=SP_MODEL,
                                        progress=False))
    tag = ["--model", str(zero_shot_classifier(tmp_path / "clf")), "--device", "cpu", "--chunk-size", "2",
           "--no-progress"]
    assert main(["tag", *tag, str(one)]) == 0
    assert main(["tag", *tag, "--executor", "local", "--num-shards", "2", "--local-cpus", "2", str(many)]) == 0
    want, got = shards.open(one).metadata(), shards.open(many).metadata()
    assert got.select(["topic", "topic_conf"]).equals(want.select(["topic", "topic_conf"]))
    s = json.loads((tmp_path / "many.topic.launch" / "summary.json").read_text())
    warm, attempts = s["warm_up"], [t["attempts"][-1] for t in s["tasks"]]
    assert [w["name"] for w in warm] == ["warm-up-00000", "warm-up-00001"] and all(w["ok"] for w in warm)
    assert [a["pid"] for a in attempts] == [w["pid"] for w in warm]
    assert [w["result"]["reused_model"] for w in warm] == [False, False]
    assert [t["result"]["reused_model"] for t in s["tasks"]] == [True, True]
    assert sum(t["units"] for t in s["tasks"]) == 8  # each slice's documents, counted while the executor started
    assert s["docs"] == 8  # what the slices report, with their progress lines off
    assert max(s["phase_seconds"]["timeline"]["planned"], s["phase_seconds"]["timeline"]["executor_started"]) \
        <= s["phase_seconds"]["timeline"]["launched"]


def test_warmed_local_processes_take_the_first_attempts_passing_over_a_dead_one(tmp_path):
    import os
    import signal

    from cpt.launch import Task
    from cpt.launch.executors import LocalExecutor

    ex = LocalExecutor(LaunchSpec(executor="local", local_cpus=3), tmp_path)
    ex.start()
    try:
        ex.warm_up(Task(name="warm-up", fn="os:getpid"), 5)  # one per CPU, not per task asked for
        warm = [a.handle for a, _ in ex.warming]
        assert len(warm) == 3
        os.kill(warm[0].pid, signal.SIGKILL)
        warm[0].wait()
        attempts = [ex.submit(Task(name=f"t{i}", fn="os:getpid"), 1) for i in range(3)]
        ended = []
        while len(ended) < 3:
            ended += ex.wait([a for a in attempts if a not in [e[0] for e in ended]], timeout=30)
        outcome = {a.task.name: (result, error) for a, result, error in ended}
        # each attempt ran in the process it was handed (its result is that process's pid): the two
        # live warmed ones in turn, then a fresh one
        pids = [warm[1].pid, warm[2].pid]
        assert [outcome[f"t{i}"][0]["result"] for i in range(2)] == pids and outcome["t2"][1] is None
        assert outcome["t2"][0]["result"] not in [w.pid for w in warm]
        records = ex.warm_ups()
        assert [r[0].task.name for r in records] == ["warm-up-00000", "warm-up-00001", "warm-up-00002"]
        assert [r[1]["result"] for r in records[1:]] == pids
        unused = LocalExecutor(LaunchSpec(executor="local", local_cpus=1), tmp_path / "unused")
        unused.start()
        unused.warm_up(Task(name="warm-up", fn="os:getpid"), 1)
        unused.stop()  # a warmed process no attempt came for ends with the executor
        assert unused.warming[0][0].handle.poll() is not None
        # --no-warm-up: the executor starts without any
        from cpt.cli import build_parser
        from cpt.launch import spec_from_args
        from cpt.launch.run import start_executor

        args = build_parser("score").parse_args(["score", "x", "--executor", "local", "--no-warm-up"])
        off = start_executor(spec_from_args(args), tmp_path / "off", Task(name="warm-up", fn="os:getpid"), 2)
        off.stop()
        assert not spec_from_args(args).warm_up and off.warming == [] and off.warm_ups() == []
    finally:
        ex.stop()


def test_progress_board_sums_the_tasks_reports(tmp_path):
    import io

    from cpt.launch.progress import PROGRESS_ENV, Board, TaskProgress, report, start_report

    stream = io.StringIO()
    board = Board("x local", [100, 300], ["a", "b"], tmp_path, enabled=True, stream=stream)
    for name, nbytes, docs in (("a", 100, 7), ("b", 150, 5)):
        path = tmp_path / "progress" / f"{name}.json"
        with pytest.MonkeyPatch.context() as m:
            m.setenv(PROGRESS_ENV, str(path))
            start_report(path, 1)
            TaskProgress().update(nbytes, docs, 0)
            report(0, 0)
            TaskProgress().close()
    board.done.add("a")
    board.retried, board.running = 1, 1
    board.refresh(force=True)
    line = stream.getvalue().strip()
    assert line.startswith("[x local] 1/2 done, 1 running, 1 retried, 0 failed | 12 docs ")
    assert " 62.5% " in line and "ETA 0:00:" in line  # (100 + 150) of 400 units


def _driver(corpus: Path, tmp_path: Path) -> tuple[PreprocessConfig, Path]:
    """A copy of the corpus, planned by a launch's driver (work folder set up); returns its config."""
    inputs = tmp_path / "inputs"
    shutil.copytree(corpus, inputs)
    cfg = PreprocessConfig(inputs=[str(inputs)], output_prefix=str(tmp_path / "out"), tokenizer=SP_MODEL,
                           chunk_mb=float(CHUNK_MB), progress=False)
    return cfg, inputs


def test_a_slice_takes_the_driver_plan_and_refuses_one_that_is_not_of_its_input(corpus, tmp_path, monkeypatch):
    cfg, inputs = _driver(corpus, tmp_path)
    p = prepare(cfg)
    mine = interleaved_slice(p.plan, 1, 3)
    handed = handed_plan(p, mine)
    config = dataclasses.asdict(cfg)
    with monkeypatch.context() as m:  # adopted, not planned again: no scan of the input
        m.setattr("cpt.shards.pipeline.make_plan", lambda *a: pytest.fail("the slice planned again"))
        out = slice_task(config, 1, 3, handed)
    assert [r["chunk"] for r in out["results"]] == [c.index for c in mine] == slice_chunks(inputs, 1, 3)
    # a plan bound to another fingerprint (another launch's, other options): refused, one line
    with pytest.raises(ValueError, match=r"the plan this slice was handed \(fingerprint 0+\) is not the plan "
                                         r"of the input it reads") as bad:
        slice_task(config, 0, 3, {**handed, "fingerprint": "0" * 32})
    assert "\n" not in str(bad.value)
    # the input changed after the driver planned: the slice names the file and what changed
    grown = inputs / "a.jsonl"
    size = grown.stat().st_size
    with open(grown, "a", encoding="utf-8") as f:
        f.write(json.dumps({"text": "one more document"}) + "\n")
    with pytest.raises(ValueError, match=rf"work folder was set up for another plan \(input {grown} changed: "
                                         rf"size {size} -> {grown.stat().st_size}, mtime_ns "):
        slice_task(config, 0, 3, handed)


def test_a_warm_up_loads_the_tokenizer_and_engine_a_slice_then_takes(corpus, tmp_path, monkeypatch):
    cfg, _ = _driver(corpus, tmp_path)
    cfg = dataclasses.replace(cfg, tokenizer=str(shutil.copy(SP_MODEL, tmp_path / "tok.model")))  # new to this process
    p = prepare(cfg)
    config = dataclasses.asdict(cfg)
    warmed = warm_up_task(config)
    assert set(warmed["prepare_seconds"]) == {"tokenizer", "files", "engine"}
    with monkeypatch.context() as m:  # the slice loads nothing: the warm-up's choice is prepare's
        m.setattr("cpt.tokenizers.load_tokenizer", lambda *a, **k: pytest.fail("the slice loaded the tokenizer"))
        m.setattr("cpt.tokenizers.engine.Encoder", lambda *a, **k: pytest.fail("the slice loaded an engine"))
        out = slice_task(config, 0, 1, handed_plan(p, p.plan))
    assert out["reused_tokenizer"] and [r["chunk"] for r in out["results"]] == [c.index for c in p.plan]


def test_a_reused_tokenizer_and_engine_are_keyed_by_tokenizer_files_options_and_engine(tmp_path):
    tok = tmp_path / "tok.model"
    shutil.copy(SP_MODEL, tok)
    cfg = PreprocessConfig(inputs=["-"], output_prefix=str(tmp_path / "o"), tokenizer=str(tok))
    loaded = _Loaded()
    first = loaded.tokenizer_for(cfg, reuse=True)
    assert loaded.tokenizer_for(cfg, reuse=True) is first
    assert loaded.tokenizer_for(cfg, reuse=False) is not first and loaded.tokenizer is first  # not kept
    ref = loaded.engine_for(first, "reference", reuse=True)
    assert loaded.engine_for(first, "reference", reuse=True) is ref
    assert loaded.engine_for(first, "auto", reuse=True) is not ref  # another engine choice
    assert loaded.engine_for(loaded.tokenizer_for(cfg, reuse=False), "reference", reuse=True) is not ref
    # another file, or the same path rewritten with other bytes: loaded again, engines dropped
    other = dataclasses.replace(cfg, tokenizer=str(tmp_path / "other.model"))
    shutil.copy(SP_MODEL, other.tokenizer)
    assert loaded.tokenizer_for(other, reuse=True) is not first
    back = loaded.tokenizer_for(cfg, reuse=True)
    assert back is not first and back.sha256 == first.sha256
    shutil.copy(Path(SP_MODEL).with_name("mistral_instruct_tokenizer_240216.model.v2"), tok)
    changed = loaded.tokenizer_for(cfg, reuse=True)
    assert changed is not back and changed.sha256 != back.sha256
    assert loaded.engine_for(changed, "reference", reuse=True) is not ref
