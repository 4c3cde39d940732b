#!/usr/bin/env python
"""Benchmark `cpt preprocess --executor ray` against `cpt preprocess --workers 2`, in the same run.

Corpus: bench_preprocess's ≈200 MB (--mb) of jsonl that never repeats a document (People's Daily
Chinese and Wikipedia English, each document a fresh random combination of sentences); tokenizer:
SmolLM2's tokenizer.json (engine auto, as a user runs it). Every figure is a whole `cpt preprocess`
process timed from start to exit:
  direct    `--workers 2`: one process with a pool of 2 workers
  ray       `--executor ray --ray-address ...` on a Ray cluster of this machine's 2 CPUs that is
            already running (`ray start --head`, started by this script before timing, as a cluster
            is on a real installation): connecting, planning in the driver, the slices (one CPU
            each) and the final assembly
  ray_cold  `--executor ray` with no cluster: the command starts a local Ray itself (no dashboard)
Runs alternate in order from round to round and each mode's best time is compared; all outputs must
be byte-identical. `ray_phases` is the last `ray` run's launch summary: phase seconds and its
timeline (seconds since the driver process started: Ray joined, planned, first/last slice start and
end by the workers' clocks, merged, executor stopped), each slice's own seconds, CPU seconds, prepare
steps and how long its Ray worker existed before it (its start-up), the warm-ups that loaded the
tokenizer and engine in those workers while the driver planned, and the time from the last slice's
end to the command's exit. The last line is one JSON object; the load average is printed beside it, as other
work on the machine changes wall times (Ray's fixed start-up costs grow most with load).

`--command score`: `cpt score --executor ray --num-shards 2` (`--slices`; SmolLM2-135M, fp32 on CPU,
one CPU per slice) over `--docs` real documents (People's Daily and Wikipedia, bench_score's) in raw jsonl, on the
same running 2-CPU cluster, with the warm-ups (`warm`: each worker loads the model while the driver
sets up) against `--no-warm-up` (`no_warm`: each slice loads it first), alternating, best of each;
both tables must be byte-identical. Last line: {"bench": "executor_score", "warm_s", "no_warm_s",
"ratio" (warm / no_warm), per mode the slices' model seconds, `reused_model` and timeline, ...}.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from rounds import add_rounds_option, alternating  # noqa: E402


MODES = ("direct", "ray", "ray_cold")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["RAY_AUTH_MODE"] = "disabled"  # the head below and its driver: a private cluster on localhost
    return env


def start_cluster(port: int) -> subprocess.Popen:
    """`ray start --head --block` with 2 CPUs; stopped through this process (by its pid) at the end."""
    ray = Path(sys.executable).with_name("ray")
    proc = subprocess.Popen([str(ray), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", f"--object-store-memory={96 << 20}",
                             "--disable-usage-stats"], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    import socket

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(3)  # the GCS listens before the node has registered
            return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("the Ray head did not start")


def run(mode: str, corpus: Path, out: Path, tokenizer: str, slices: int, address: str) -> float:
    cmd = [sys.executable, "-m", "cpt.cli", "preprocess", "--input", str(corpus), "--output-prefix", str(out),
           "--tokenizer", tokenizer, "--no-progress"]
    if mode == "direct":
        cmd += ["--workers", "2"]
    else:
        cmd += ["--executor", "ray", "--num-shards", str(slices), "--local-cpus", "2"]
        cmd += ["--ray-address", address] if mode == "ray" else []
    env = _env()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return seconds


SCORE_MODES = ("warm", "no_warm")


def score_corpus(path: Path, docs: int) -> None:
    from bench_score import corpus

    with open(path, "w", encoding="utf-8") as f:
        for text in corpus(docs):
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")


def run_score(mode: str, corpus: Path, out: Path, address: str, slices: int, max_doc_tokens: int,
              chunk_size: int) -> float:
    from cpt.assets import smollm2_hf_dir

    cmd = [sys.executable, "-m", "cpt.cli", "score", str(corpus), "--out", str(out), "--model", str(smollm2_hf_dir()),
           "--device", "cpu", "--max-doc-tokens", str(max_doc_tokens), "--chunk-size", str(chunk_size),
           "--no-progress", "--executor", "ray",
           "--num-shards", str(slices), "--ray-address", address, *(["--no-warm-up"] if mode == "no_warm" else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=_env())
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"score {mode} failed:\n{proc.stderr[-3000:]}")
    return seconds


def score_phases(summary: dict, seconds: float) -> dict:
    """Where one launch's time went: the slices' model loading, and the timeline."""
    ok = [(t, a) for t in summary["tasks"] for a in t["attempts"] if a["ok"]]
    timeline = summary["phase_seconds"]["timeline"]
    return {"slice_model_s": [t["result"]["prepare_seconds"].get("model") for t, _ in ok],
            "reused_model": [t["result"]["reused_model"] for t, _ in ok],
            "slice_ran_s": [a["ran_seconds"] for _, a in ok], "worker_age_s": [a.get("worker_age") for _, a in ok],
            "warm_up": [{k: w.get(k) for k in ("ran_from_s", "ran_to_s", "worker_age", "error")}
                        | {"model_s": (w.get("result") or {}).get("prepare_seconds", {}).get("model")}
                        for w in summary.get("warm_up", [])],
            "timeline": {k: timeline.get(k) for k in ("driver_ready", "executor_started", "launched",
                                                      "first_task_started", "last_task_started", "last_task_ended",
                                                      "merged")},
            "exit_after_last_slice_s": round(seconds - timeline["last_task_ended"], 3)}


def main_score(args: argparse.Namespace, work: Path) -> None:
    corpus = work / "score.jsonl"
    if not corpus.is_file():
        score_corpus(corpus, args.docs)
    load_before = os.getloadavg()[0]
    print(f"{args.docs} documents; load average before: {load_before:.1f}", file=sys.stderr)
    times: dict[str, list[float]] = {m: [] for m in SCORE_MODES}
    phases: dict[str, dict] = {}
    outs: dict[str, Path] = {}
    head = start_cluster(args.port)
    try:
        for r, mode in alternating(SCORE_MODES, args.rounds):
            out = work / f"score-{mode}-{r}.parquet"
            # two blocks per slice, so the slices score the same amount
            seconds = run_score(mode, corpus, out, f"127.0.0.1:{args.port}", args.slices, args.max_doc_tokens,
                                max(1, args.docs // (2 * args.slices)))
            times[mode].append(seconds)
            if seconds == min(times[mode]):
                summary = json.loads((work / f"{out.name}.launch" / "summary.json").read_text())
                phases[mode], outs[mode] = score_phases(summary, seconds), out
            print(f"round {r} score {mode}: {seconds:.1f} s (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    finally:
        head.terminate()
        head.wait(timeout=60)
    best = {m: min(t) for m, t in times.items()}
    print(json.dumps({
        "bench": "executor_score", "warm_s": round(best["warm"], 2), "no_warm_s": round(best["no_warm"], 2),
        "ratio": round(best["warm"] / best["no_warm"], 3), "slices": args.slices, "docs": args.docs,
        "max_doc_tokens": args.max_doc_tokens, "times": {m: [round(t, 2) for t in ts] for m, ts in times.items()},
        "identical": outs["warm"].read_bytes() == outs["no_warm"].read_bytes(), "phases": phases,
        "rounds": args.rounds, "load_average_before": round(load_before, 1),
        "load_average_end": round(os.getloadavg()[0], 1),
    }))


def same_output(a: Path, b: Path) -> bool:
    return all(filecmp.cmp(f"{a}{s}", f"{b}{s}", shallow=False)
               for s in (".bin", ".idx", ".meta.parquet", ".manifest.json", ".skipped.jsonl"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=200.0, help="corpus size in MB (default 200)")
    p.add_argument("--slices", type=int, default=2, help="--num-shards of the Ray run (default 2)")
    add_rounds_option(p)
    p.add_argument("--port", type=int, default=6391, help="port of the Ray head started for the `ray` mode")
    p.add_argument("--keep", default=None, help="keep the corpus and outputs in this folder")
    p.add_argument("--command", choices=("preprocess", "score"), default="preprocess",
                   help="preprocess: ray vs --workers 2 (default); score: ray with vs without warm-ups")
    p.add_argument("--docs", type=int, default=12, help="--command score: documents (default 12)")
    p.add_argument("--max-doc-tokens", type=int, default=128, help="--command score: tokens scored per document")
    args = p.parse_args()
    from bench_preprocess import make_corpus
    from cpt.assets import smollm2_hf_dir

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_executor_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.command == "score":
        return main_score(args, work)
    corpus = work / "corpus.jsonl"
    info = make_corpus(corpus, args.mb) if not corpus.is_file() else {"bytes": corpus.stat().st_size}
    load_before = os.getloadavg()[0]
    print(f"corpus {info['bytes'] / 1e6:.1f} MB; load average before: {load_before:.1f} "
          f"(wall-clock figures depend on other work on this machine)", file=sys.stderr)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    head = start_cluster(args.port)
    try:
        for r, mode in alternating(MODES, args.rounds):
            seconds = run(mode, corpus, work / mode, str(smollm2_hf_dir()), args.slices, f"127.0.0.1:{args.port}")
            times[mode].append(seconds)
            print(f"round {r} {mode}: {seconds:.1f} s (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    finally:
        head.terminate()
        head.wait(timeout=60)
    identical = same_output(work / "direct", work / "ray") and same_output(work / "direct", work / "ray_cold")
    summaries = {m: json.loads((work / f"{m}.launch" / "summary.json").read_text()) for m in MODES[1:]}
    retried = sum(s["retried"] for s in summaries.values())
    ray = summaries["ray"]  # where the last `ray` run's time went (its timeline: seconds from process start)
    ok = [(task, a) for task in ray["tasks"] for a in task["attempts"] if a["ok"]]
    phases = {**ray.get("phase_seconds", {}),
              "slice_ran_s": [a["ran_seconds"] for _, a in ok], "slice_cpu_s": [a["cpu_seconds"] for _, a in ok],
              "worker_age_s": [a.get("worker_age") for _, a in ok],  # the worker's own start before the slice
              "slice_prepare_s": [task["result"].get("prepare_seconds") for task, _ in ok],
              # chunks each slice built, of which it took from other slices (claims)
              "slice_built": [len(task["result"].get("built", [])) for task, _ in ok],
              "slice_taken": [task["result"].get("taken") for task, _ in ok],
              # the warm-ups (one per CPU) that loaded the tokenizer/engine while the driver planned:
              # where and when they ran, and whether every slice ran in a warmed worker
              "warm_up": [{k: w.get(k) for k in ("pid", "ran_from_s", "ran_to_s", "worker_age", "error")}
                          for w in ray.get("warm_up", [])],
              "slices_in_warmed_workers": {a["pid"] for _, a in ok} <= {w.get("pid") for w in ray.get("warm_up", [])},
              # from the last slice's end to the command's exit: the merge's tail, summary, exit
              "exit_after_last_slice_s": round(times["ray"][-1] - ray["phase_seconds"]["timeline"]["last_task_ended"], 3)
              if "timeline" in ray.get("phase_seconds", {}) else None}
    best = {m: min(t) for m, t in times.items()}
    print(json.dumps({
        "bench": "executor", "ray_s": round(best["ray"], 2), "direct_s": round(best["direct"], 2),
        "ratio": round(best["ray"] / best["direct"], 3), "slices": args.slices,
        "ray_cold_s": round(best["ray_cold"], 2), "ratio_cold": round(best["ray_cold"] / best["direct"], 3),
        "identical": identical, "ray_phases": phases, "mb": round(info["bytes"] / 1e6, 1), "rounds": args.rounds, "retried": retried,
        "load_average_before": round(load_before, 1), "load_average_end": round(os.getloadavg()[0], 1),
    }))


if __name__ == "__main__":
    main()
