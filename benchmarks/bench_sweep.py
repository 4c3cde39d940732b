#!/usr/bin/env python
"""Benchmark `cpt sweep`: its own overhead as a share of the runs' time, and the parallel efficiency of
the local executor with 2 runs at once.

The sweep: the tests' tiny Llama (tests/sweep_fixtures.py) on two real language streams, 2 arms x 2
seeds, --steps training steps per run plus the final per-stream validation. Each mode is a whole
`cpt sweep` process timed from start to exit, in a fresh SWEEP_DIR: planning, the launch (worker
processes, polling, retries bookkeeping), collection into results.jsonl and the report with its
plots. The runs' own time is what their `cpt train` processes took (result.json's train_seconds,
measured around each stage's command by the run task).

    overhead_share       (wall of the serial sweep - sum of its runs' own time) / that sum
                         (serial: --local-cpus 1, one run at a time, so nothing overlaps)
    parallel_efficiency  wall(serial) / (2 x wall(2 runs at once: --local-cpus 2)); 1.0 = perfect

Modes alternate (serial, parallel, parallel, serial, ... with --rounds) and each mode's best wall
time is used. On 2 cores shared with other work the efficiency is a lower bound: the load average is
printed beside the figures. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from rounds import add_rounds_option, alternating  # noqa: E402


def run_sweep(sweep: Path, out: Path, local_cpus: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "cpt.cli", "sweep", str(sweep), "--out", str(out), "--local-cpus", str(local_cpus),
           "--cpus-per-task", "1", "--max-retries", "0"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"cpt sweep (--local-cpus {local_cpus}) failed:\n{proc.stderr[-3000:]}")
    return seconds


def runs_seconds(out: Path) -> list[float]:
    return [json.loads(line)["train_seconds"] for line in (out / "results.jsonl").read_text().splitlines()]


def report_seconds(out: Path) -> float:
    from cpt.sweep import report_sweep

    t0 = time.perf_counter()
    report_sweep(out, out=out / "report_timed")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8, help="training steps per run (default 8)")
    add_rounds_option(p)
    p.add_argument("--keep", default=None, help="keep the data and sweep folders here")
    args = p.parse_args()
    from sweep_fixtures import write_base, write_sweep

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    work.mkdir(parents=True, exist_ok=True)
    sweep = write_sweep(work, write_base(work / "base", steps=args.steps))
    load_before = os.getloadavg()
    walls: dict[str, list[float]] = {"serial": [], "parallel": []}
    own: dict[str, list[float]] = {"serial": [], "parallel": []}
    for _, mode in alternating(("serial", "parallel"), args.rounds):
        out = work / f"sweep_{mode}"
        walls[mode].append(run_sweep(sweep, out, 1 if mode == "serial" else 2))
        own[mode].append(sum(runs_seconds(out)))
        print(f"{mode:8s} wall {walls[mode][-1]:7.1f} s  runs' own time {own[mode][-1]:7.1f} s  "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
    best = walls["serial"].index(min(walls["serial"]))
    serial, serial_own = walls["serial"][best], own["serial"][best]
    parallel = min(walls["parallel"])
    report_s = report_seconds(work / "sweep_serial")
    load = os.getloadavg()
    print(f"serial {serial:.1f} s for {serial_own:.1f} s of runs: overhead {serial - serial_own:.1f} s "
          f"(report alone {report_s:.2f} s); 2 at once {parallel:.1f} s; load average {load[0]:.2f} "
          f"(before {load_before[0]:.2f}) on {os.cpu_count()} CPUs")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"bench": "sweep", "runs": 4, "steps_per_run": args.steps,
                      "serial_s": round(serial, 2), "runs_own_s": round(serial_own, 2),
                      "overhead_s": round(serial - serial_own, 2), "report_s": round(report_s, 3),
                      "overhead_share": round((serial - serial_own) / serial_own, 4),
                      "parallel_s": round(parallel, 2),
                      "parallel_efficiency": round(serial / (2 * parallel), 3),
                      "loadavg": [round(x, 2) for x in load], "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
