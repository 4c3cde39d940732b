"""`cpt demo [--out DIR] [--size full|tiny]`: the end-to-end demo on this machine.

Builds a bilingual corpus from installed packages, tokenizes, tags topics, scores perplexity,
synthesizes QA, imports SmolLM2-135M, trains stage 1 and stage 2, exports, evaluates and writes the
report -- every step a `cpt` command (its log in DIR/logs/STEP.log). Rerunning resumes: steps whose
outputs are complete are skipped. The last line printed is one JSON object (timings, per-stream
held-out PPL before/after), also written to DIR/result.json (the closing text to DIR/summary.txt).
`--size tiny` is the CI size: a tiny corpus and a tiny random Llama.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cpt.io import write_json_atomic, write_text_atomic

STATE_FILE = "demo.json"
RESULT_FILE = "result.json"
"""The last run's record (the JSON line printed last), kept beside the steps it describes."""
SUMMARY_FILE = "summary.txt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="demo folder (default runs/demo); a rerun resumes it")
    parser.add_argument("--size", choices=("full", "tiny"), default="full",
                        help="full: SmolLM2-135M, ~20 min on 2 CPU cores; tiny: the CI size (tiny model, a few steps)")


def run(args: argparse.Namespace) -> int:
    from cpt.cli import COMMANDS
    from cpt.demo.pipeline import SETTINGS, build_steps
    from cpt.demo.runner import Runner, StepFailed
    from cpt.demo.summary import bench_record, describe

    start = time.perf_counter()
    root = Path(args.out).resolve()
    _claim_folder(root, args.size)
    steps = build_steps(root, SETTINGS[args.size])
    unavailable = {s.name: s.cli for s in steps if s.cli is not None and s.cli not in COMMANDS}
    if unavailable:
        needs = ", ".join(f"{name} needs `cpt {cli}`" for name, cli in unavailable.items())
        print(f"cpt demo: not available in this install yet: {needs}", file=sys.stderr)
        return 2
    runner = Runner(root, log=lambda m: print(m, flush=True))
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    skipped: list[str] = []
    try:
        for step in steps:
            result = runner.run(step, force=bool(timings) and len(skipped) < len(timings))
            timings[step.name] = result.seconds
            cpu[step.name] = result.cpu_seconds
            if result.skipped:
                skipped.append(step.name)
    except StepFailed as exc:
        print(f"cpt demo: {exc}", file=sys.stderr)
        print("cpt demo: fix the cause and rerun the same command; completed steps are skipped", file=sys.stderr)
        return 1
    record = bench_record(root, time.perf_counter() - start, timings, skipped, cpu)
    text = describe(root, record)
    write_json_atomic(root / RESULT_FILE, record, indent=1)
    write_text_atomic(root / SUMMARY_FILE, text + "\n")
    print()
    print(text)
    print(json.dumps(record))
    return 0


def _claim_folder(root: Path, size: str) -> None:
    """Record the size in DIR/demo.json; refuse a folder built at another size (its outputs differ)."""
    root.mkdir(parents=True, exist_ok=True)
    state = root / STATE_FILE
    if state.is_file():
        recorded = json.loads(state.read_text()).get("size")
        if recorded != size:
            raise ValueError(f"{root} holds a --size {recorded} demo; use another --out (or remove it) "
                             f"for --size {size}")
        return
    write_json_atomic(state, {"size": size}, indent=None)
