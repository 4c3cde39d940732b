"""`cpt sweep SWEEP.yaml` runs every (arm, seed) of a sweep file; `cpt sweep report SWEEP_DIR` compares arms;
`cpt sweep prepare DIR --size tiny|gpu` builds the folder the shipped proxy sweeps run in.

    cpt sweep prepare runs/proxy --size tiny
    cpt sweep sweeps/llama3_synE_proxy/curriculum_zh.yaml --out runs/sweeps/curriculum --local-cpus 2
    cpt sweep report runs/sweeps/curriculum --baseline shuffle
    cpt sweep sweeps/llama3_synE_proxy/corrupt_rate.yaml --reuse-from runs/sweeps/synthetic_share

A finished run is never rerun and a killed one resumes from its checkpoint, so the same command
finishes a sweep. Runs go through the executor seam (cpt.launch): `local` runs
local-cpus / cpus-per-task runs at once, each with cpus-per-task threads.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cpt.launch import add_executor_arguments

    parser.add_argument("target", help="SWEEP.yaml to run, or the word `report` or `prepare`")
    parser.add_argument("sweep_dir", nargs="?", default=None, help="with `report`: the SWEEP_DIR to report on; "
                                                                   "with `prepare`: the folder to build")
    run = parser.add_argument_group("running a sweep")
    run.add_argument("--out", default=None, help="SWEEP_DIR (default: the sweep file's output_dir); with "
                                                 "`report`: the report folder (default SWEEP_DIR/report)")
    run.add_argument("--workdir", default=None, help="run in this folder instead of the sweep file's workdir "
                                                     "(e.g. one built by `cpt sweep prepare DIR --size gpu`)")
    run.add_argument("--plan", action="store_true", help="list the runs and their state, run nothing")
    run.add_argument("--reuse-from", action="append", default=[], metavar="SWEEP_DIR",
                     help="another sweep's folder (repeatable): a run not started here takes the stages one of "
                          "its runs trained from the same recipes instead of training them (cpt.sweep.reuse)")
    rep = parser.add_argument_group("report")
    rep.add_argument("--baseline", default=None, help="arm the others are compared with (default: the sweep file's)")
    rep.add_argument("--metric", action="append", default=[], help="metric to report, repeatable (default: "
                                                                     "the sweep file's, else every ppl)")
    prep = parser.add_argument_group("prepare")
    prep.add_argument("--size", choices=("tiny", "gpu"), default="tiny",
                      help="tiny: the CPU proxy (a small Llama pre-trained once, cached); gpu: SmolLM2-135M")
    prep.add_argument("--synth-threads", type=int, default=2,
                      help="torch threads of the QA generation (1 is faster on a CPU other work keeps busy)")
    add_executor_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    from cpt.launch import spec_from_args
    from cpt.sweep import load_sweep, run_sweep
    from cpt.sweep.driver import run_state
    from cpt.sweep.plan import plan_runs
    from cpt.sweep.reuse import match, read_sources
    from cpt.sweep.runner import DEFAULT_TRAIN_COMMAND

    if args.sweep_dir is not None or args.baseline or args.metric:
        raise ValueError("running a sweep takes one SWEEP.yaml (--baseline/--metric belong to `cpt sweep report`)")
    spec = load_sweep(args.target, DEFAULT_TRAIN_COMMAND)
    if args.workdir:
        spec = dataclasses.replace(spec, workdir=Path(args.workdir).resolve())
    out = Path(args.out) if args.out else spec.output_dir
    if out is None:
        raise ValueError(f"{spec.path}: output_dir: not set and no --out given: where should the runs go?")
    reuse_from = [Path(d) for d in args.reuse_from]
    if args.plan:
        runs = plan_runs(spec, out.absolute())
        reusable = match(runs, spec.train_command, spec.workdir, read_sources(reuse_from)) if reuse_from else {}
        for run in runs:
            line = f"{run_state(run):8s} {run.arm} seed {run.seed}  {run.folder}"
            if str(run.folder) in reusable:
                source, count = reusable[str(run.folder)]
                line += f"  (reuses {', '.join(source.stages[:count])} of {source.folder})"
            print(line)
        return 0
    args.executor = args.executor or "local"
    result = run_sweep(spec, out, spec_from_args(args, progress=sys.stderr.isatty()), reuse_from=reuse_from)
    missing = result.get("missing") or []
    print(f"[sweep] {result['results']} runs collected into {out / 'results.jsonl'}"
          + (f"; without a result: {', '.join(missing)}" if missing else "")
          + (f"; report {result['report']}" if result.get("report") else ""))
    return 0


def _report(args: argparse.Namespace) -> int:
    from cpt.sweep import report_sweep

    if args.sweep_dir is None:
        raise ValueError("cpt sweep report needs the SWEEP_DIR")
    sweep_dir = Path(args.sweep_dir)
    out = Path(args.out) if args.out else sweep_dir / "report"
    report = report_sweep(sweep_dir, args.baseline, args.metric or None, out)
    for metric, entry in report["metrics"].items():
        verdicts = [f"{a} {v['vs_baseline']['verdict']}" for a, v in entry["arms"].items() if "vs_baseline" in v]
        print(f"{metric}: " + ("; ".join(verdicts) if verdicts else "no comparison (no baseline)"))
    print(f"[sweep] report {out / 'report.md'}")
    return 0


def _claim_folder(root: Path, size: str) -> None:
    """Record the size in DIR/prepare.json; refuse a folder built at another size (its shards differ)."""
    import json

    from cpt.io import write_json_atomic

    root.mkdir(parents=True, exist_ok=True)
    state = root / "prepare.json"
    if state.is_file():
        recorded = json.loads(state.read_text()).get("size")
        if recorded != size:
            raise ValueError(f"{root} was prepared at --size {recorded}; use another folder for --size {size}")
        return
    write_json_atomic(state, {"size": size}, indent=None)


def _prepare(args: argparse.Namespace) -> int:
    from cpt.cli import COMMANDS
    from cpt.demo.runner import Runner, StepFailed
    from cpt.sweep.prepare import RECIPE_OVERRIDES, SETTINGS, build_prepare_steps, write_recipe_overrides

    if args.sweep_dir is None:
        raise ValueError("cpt sweep prepare needs the folder to build (e.g. runs/proxy)")
    root = Path(args.sweep_dir).resolve()
    _claim_folder(root, args.size)
    if write_recipe_overrides(root, SETTINGS[args.size]):
        print(f"[prepare] {RECIPE_OVERRIDES}: what this folder's sweeps train the --size {args.size} model with",
              flush=True)
    steps = build_prepare_steps(SETTINGS[args.size], args.synth_threads)
    missing = sorted({s.cli for s in steps if s.cli is not None and s.cli not in COMMANDS})
    if missing:
        raise ValueError(f"cpt sweep prepare needs `cpt {', '.join(missing)}`, not in this install")
    runner = Runner(root, log=lambda m: print(m.replace("[demo]", "[prepare]"), flush=True))
    ran = False
    try:
        for step in steps:
            ran = not runner.run(step, force=ran).skipped or ran
    except StepFailed as exc:
        print(f"cpt sweep prepare: {exc}", file=sys.stderr)
        print("cpt sweep prepare: fix the cause and rerun the same command; completed steps are skipped",
              file=sys.stderr)
        return 1
    print(f"[prepare] {root} is ready (--size {args.size}): sweeps run there with --workdir {root}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.target == "prepare":
        return _prepare(args)
    return _report(args) if args.target == "report" else _run(args)
