#!/usr/bin/env python
"""Benchmark `cpt preprocess --executor ray` against `cpt preprocess --workers 2`, in the same run.

Corpus: bench_preprocess's ≈200 MB (--mb) of jsonl that never repeats a document (People's Daily
Chinese and Wikipedia English, each document a fresh random combination of sentences); tokenizer:
SmolLM2's tokenizer.json (engine auto, as a user runs it). Both are whole processes timed from start
to exit, so the Ray figure includes starting a local Ray on this machine's 2 CPUs (no dashboard),
planning in the driver, the slices (one CPU each) and the final assembly; the direct figure is one
process with a pool of 2 workers. Runs alternate (direct, ray, ray, direct, ... with --rounds) and
each mode's best time is compared; both outputs must be byte-identical. The last line is one JSON
object; the load average is printed beside it, as other work on the machine changes wall times.
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


def run(mode: str, corpus: Path, out: Path, tokenizer: str, slices: int) -> float:
    cmd = [sys.executable, "-m", "cpt.cli", "preprocess", "--input", str(corpus), "--output-prefix", str(out),
           "--tokenizer", tokenizer, "--no-progress"]
    cmd += ["--workers", "2"] if mode == "direct" else ["--executor", "ray", "--num-shards", str(slices),
                                                        "--local-cpus", "2"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return seconds


def same_output(a: Path, b: Path) -> bool:
    return all(filecmp.cmp(f"{a}{s}", f"{b}{s}", shallow=False)
               for s in (".bin", ".idx", ".meta.parquet", ".manifest.json", ".skipped.jsonl"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=200.0, help="corpus size in MB (default 200)")
    p.add_argument("--slices", type=int, default=2, help="--num-shards of the Ray run (default 2)")
    p.add_argument("--rounds", type=int, default=1, help="runs of each mode, alternating order (default 1)")
    p.add_argument("--keep", default=None, help="keep the corpus and outputs in this folder")
    args = p.parse_args()
    from bench_preprocess import make_corpus
    from cpt.assets import smollm2_hf_dir

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_executor_"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    info = make_corpus(corpus, args.mb) if not corpus.is_file() else {"bytes": corpus.stat().st_size}
    load_before = os.getloadavg()[0]
    print(f"corpus {info['bytes'] / 1e6:.1f} MB; load average before: {load_before:.1f} "
          f"(wall-clock figures depend on other work on this machine)", file=sys.stderr)
    times: dict[str, list[float]] = {"direct": [], "ray": []}
    for r in range(args.rounds):
        for mode in (("direct", "ray") if r % 2 == 0 else ("ray", "direct")):
            seconds = run(mode, corpus, work / mode, str(smollm2_hf_dir()), args.slices)
            times[mode].append(seconds)
            print(f"round {r} {mode}: {seconds:.1f} s (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    identical = same_output(work / "direct", work / "ray")
    launch = json.loads((work / "ray.launch" / "summary.json").read_text())
    ray_s, direct_s = min(times["ray"]), min(times["direct"])
    print(json.dumps({
        "bench": "executor", "ray_s": round(ray_s, 2), "direct_s": round(direct_s, 2),
        "ratio": round(ray_s / direct_s, 3), "slices": args.slices, "identical": identical,
        "mb": round(info["bytes"] / 1e6, 1), "rounds": args.rounds, "retried": launch["retried"],
        "load_average_before": round(load_before, 1), "load_average_end": round(os.getloadavg()[0], 1),
    }))


if __name__ == "__main__":
    main()
