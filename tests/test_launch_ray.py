"""`--executor ray` on one local Ray cluster (2 CPUs, no dashboard, small object store) shared by the
module: `cpt preprocess` over 4 slices of a real corpus equals `--workers 1` byte for byte, also when a
Ray worker is SIGKILLed mid-slice (the retried slice resumes from its finished chunks); the bad cases
each end in one clear line; `cpt tag` / `cpt score` through Ray equal their one-process results."""
from __future__ import annotations

import json
import re
import sys

import pytest

from cpt.cli import main
from cpt.shards.build import DELAY_ENV, chunk_dir
from cpt.shards.pipeline import PreprocessConfig, run_preprocess
from launch_fixtures import (CHUNK_MB, SP_MODEL, SliceKiller, assert_built_once_but_the_dead_attempts,  # noqa: F401
                             corpus, files_of, launch_summary, preprocess_argv, single, slice_chunks)

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow
RAY = ["--executor", "ray", "--num-shards", "4"]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=96 << 20, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def test_four_slices_equal_one_process_also_after_a_killed_worker(corpus, single, tmp_path, monkeypatch):
    out = tmp_path / "ray"
    assert main(preprocess_argv(corpus, out, *RAY)) == 0
    assert files_of(out) == files_of(single)
    assert not (tmp_path / "ray.cpt-work").exists()
    summary = launch_summary(out)
    assert summary["succeeded"] == 4 and summary["failed"] == [] and summary["merge"]["ran"]
    assert_built_once_but_the_dead_attempts(summary, [])  # slices took each other's chunks, none twice
    assert json.loads((tmp_path / "ray.summary.json").read_text())["written"] > 0
    # 4 slices on 2 CPUs: a Ray worker runs slices in turn and reuses its tokenizer/engine for the next
    by_pid: dict[int, list[dict]] = {}
    for t in sorted(summary["tasks"], key=lambda t: t["attempts"][-1]["ran_from_s"]):
        by_pid.setdefault(t["attempts"][-1]["pid"], []).append(t["result"])
    assert any(len(results) > 1 for results in by_pid.values())
    # one warm-up per CPU loaded the tokenizer/engine while the driver planned; Ray gave the slices
    # to those very workers, so every slice, the first of each worker too, found them loaded
    warm = summary["warm_up"]
    assert [w["name"] for w in warm] == ["warm-up-00000", "warm-up-00001"] and all(w["ok"] for w in warm)
    assert set(by_pid) <= {w["pid"] for w in warm}
    assert all(r["reused_tokenizer"] for results in by_pid.values() for r in results)
    assert all(w["ran_to_s"] <= min(a["ran_from_s"] for t in summary["tasks"] for a in t["attempts"]
                                    if a["pid"] == w["pid"]) for w in warm)
    timeline = summary["phase_seconds"]["timeline"]
    assert timeline["executor_started"] <= timeline["launched"] < timeline["first_task_started"] \
        <= timeline["last_task_ended"] <= timeline["tasks_noticed"] <= timeline["merged"]

    # SIGKILL the Ray worker running slice 1 once it committed its first chunk: the retry resumes
    monkeypatch.setenv(DELAY_ENV, "0.3")  # CPT_* reach the tasks: slow enough to be caught mid-slice
    killed_out = tmp_path / "killed"
    mine = slice_chunks(corpus, 1, 4)
    killer = SliceKiller(tmp_path / "killed.launch", "slice-00001-of-00004",
                         lambda: (chunk_dir(f"{killed_out}.cpt-work", mine[0]) / "text.manifest.json").is_file())
    killer.start()
    assert main(preprocess_argv(corpus, killed_out, *RAY)) == 0
    killer.join()
    assert killer.killed_pid is not None
    assert files_of(killed_out) == files_of(single)
    task = next(t for t in launch_summary(killed_out)["tasks"] if t["name"] == "slice-00001-of-00004")
    assert [a["ok"] for a in task["attempts"]] == [False, True]
    assert "Ray worker died" in task["attempts"][0]["error"] and task["attempts"][0].get("pid") is None
    assert 1 <= task["result"]["chunks_resumed"] <= task["result"]["chunks"] == len(mine)
    assert_built_once_but_the_dead_attempts(launch_summary(killed_out), [mine[0]])
    assert launch_summary(killed_out)["retried"] == 1
    assert launch_summary(killed_out)["phase_seconds"]["merge_overlapped"] > 0  # assembled while slices ran


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if " error: " in line]


def test_bad_cases_say_one_line(corpus, single, tmp_path, capsys, monkeypatch):
    # Ray not installed
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "ray", None)
        assert main(preprocess_argv(corpus, tmp_path / "a", *RAY)) == 1
    (line,) = _error_lines(capsys)
    assert line == "cpt preprocess: error: --executor ray needs Ray, which is not installed: pip install 'cpt[ray]'"
    # an address nobody listens on: refused in seconds, not after Ray's own minute of retries
    assert main(preprocess_argv(corpus, tmp_path / "b", *RAY, "--ray-address", "127.0.0.1:9")) == 1
    (line,) = _error_lines(capsys)
    assert line.startswith("cpt preprocess: error: cannot reach the Ray cluster at 127.0.0.1:9 (")
    # a head that answers but refuses the driver's token: Ray's ConnectionError caused by an
    # AuthenticationError (as ray.init raises it after its retries) becomes one line naming the fix
    from cpt.launch.ray_executor import join_failure

    try:
        try:
            raise ray.exceptions.AuthenticationError("RPC error: InvalidAuthToken: Authentication token is missing")
        except ray.exceptions.AuthenticationError as cause:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from cause
    except ConnectionError as e:
        line = join_failure("10.0.0.1:6379", e)
    assert line.startswith("the Ray cluster at 10.0.0.1:6379 refused this driver's authentication token") \
        and "RAY_AUTH_TOKEN" in line and "\n" not in line
    assert join_failure("h:1", ConnectionError("Failed to connect\nto h:1")) == \
        "cannot join the Ray cluster at h:1: ConnectionError: to h:1"

    # a slice that fails on every attempt: its chunk's folder name is taken by a file
    out = tmp_path / "fail"
    cfg = PreprocessConfig(inputs=[str(corpus)], output_prefix=str(out), tokenizer=SP_MODEL,
                           chunk_mb=float(CHUNK_MB), progress=False)
    from cpt.shards.pipeline import prepare

    prepare(cfg)  # the work folder of this very plan, as the launch will find it
    bad = slice_chunks(corpus, 2, 4)[-1]
    blocker = chunk_dir(f"{out}.cpt-work", bad)
    blocker.write_text("not a folder")
    assert main(preprocess_argv(corpus, out, *RAY, "--max-retries", "1")) == 1
    (line,) = _error_lines(capsys)
    # the slice that claimed the bad chunk fails on it in every attempt (its retry takes its claim
    # back, no other slice may): named, with the error
    failed = re.search(r"1 task\(s\) failed after 2 attempt\(s\): (slice-0000\d-of-00004) \(NotADirectoryError",
                       line)
    assert failed and "the merge did not run; rerun the same command to finish only these" in line
    assert not (tmp_path / "fail.bin").exists() and not list(tmp_path.glob(".fail.*.tmp"))  # the stream aborted
    summary = launch_summary(out)
    assert summary["failed"] == [failed.group(1)] and not summary["merge"]["ran"]
    # fixed, the same command builds only the chunk that failed
    blocker.unlink()
    assert main(preprocess_argv(corpus, out, *RAY)) == 0
    assert files_of(out) == files_of(single)
    results = {t["name"]: t["result"] for t in launch_summary(out)["tasks"]}
    assert sorted(i for r in results.values() for i in r["built"]) == [bad]


@pytest.fixture(scope="module")
def small_shard(tmp_path_factory):
    """12 real documents (6 zh, 6 en) as one shard, written twice: one copy per way of running."""
    from annotate_fixtures import mixed_corpus
    from cpt.annotate.docs import write_jsonl

    root = tmp_path_factory.mktemp("small")
    (root / "in").mkdir()
    write_jsonl(root / "in" / "c.jsonl", [{"text": d["text"][:300]} for d in mixed_corpus(n_zh=6, n_en=6)])
    prefixes = []
    for name in ("one", "ray"):
        run_preprocess(PreprocessConfig(inputs=[str(root / "in")], output_prefix=str(root / name),
                                        tokenizer=SP_MODEL, progress=False))
        prefixes.append(root / name)
    return prefixes


def _column(prefix, column: str) -> list:
    import cpt.shards as shards

    return shards.open(prefix).metadata([column]).column(column).to_pylist()


def test_score_and_tag_through_ray_equal_one_process(small_shard, tmp_path):
    from annotate_fixtures import wiki_split
    from cpt import assets
    from cpt.annotate import taxonomy
    from cpt.annotate.classifier import TrainConfig
    from cpt.annotate.fit import FitConfig, fit

    one, launched = small_shard
    score = ["--model", str(assets.smollm2_hf_dir()), "--device", "cpu", "--max-length", "24", "--stride", "12",
             "--max-doc-tokens", "40", "--chunk-size", "2", "--no-progress"]
    assert main(["score", *score, str(one)]) == 0
    assert main(["score", *score, *RAY, str(launched)]) == 0
    assert _column(launched, "ppl") == _column(one, "ppl") and None not in _column(one, "ppl")
    _assert_slices_found_the_model_warm(launched, "ppl")

    train, held = wiki_split()
    clf = tmp_path / "clf"
    fit(str(assets.minilm_dir()), taxonomy.load(), train[:24], held[:8], FitConfig(),
        TrainConfig(epochs=1, batch_size=8, max_length=32, train_layers=1), clf, log=lambda s: None)
    tag = ["--model", str(clf), "--device", "cpu", "--chunk-size", "2", "--no-progress"]
    assert main(["tag", *tag, str(one)]) == 0
    assert main(["tag", *tag, *RAY, str(launched)]) == 0
    for column in ("topic", "topic_conf"):
        assert _column(launched, column) == _column(one, column)
    summary = _assert_slices_found_the_model_warm(launched, "topic")
    assert summary["succeeded"] == 4 and summary["merge"]["ran"]
    assert summary["tasks"][3]["result"]["argv"][:5] == ["tag", "--shard-index", "3", "--num-shards", "4"]


def _assert_slices_found_the_model_warm(prefix, what: str) -> dict:
    """One warm-up per CPU loaded the model while the driver counted documents; Ray ran the 4 slices
    in those very workers, so each found it loaded (`cpt.annotate.launched`)."""
    summary = json.loads((prefix.parent / f"{prefix.name}.{what}.launch" / "summary.json").read_text())
    warm = summary["warm_up"]
    assert [w["name"] for w in warm] == ["warm-up-00000", "warm-up-00001"] and all(w["ok"] for w in warm)
    assert {a["pid"] for t in summary["tasks"] for a in t["attempts"]} <= {w["pid"] for w in warm}
    assert [t["result"]["reused_model"] for t in summary["tasks"]] == [True] * 4
    return summary
