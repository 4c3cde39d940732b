"""Loader worker processes (data.num_workers) started by a fork server (ours) against workers forked
from the trainer (the default of Python <= 3.13 on Linux, what the loader did before): host memory
of the trainer and its workers together after some training steps, the first batch's wait (workers
starting), and the loader's time per step after it. A forked worker keeps the pages the trainer
rewrites after the fork (parameters, gradients, optimizer states), so the gap grows with the model.

Each mode runs in a fresh trainer process (the fork server is one per process), modes alternate
over rounds (benchmarks/rounds.py), each mode's lowest memory and fastest round count. Data: a real
bilingual cpt shard; model: a Llama of about 45M parameters on CPU (seq 256, batch 8).

    python benchmarks/bench_loader_workers.py [--steps 4] [--workers 2] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

SEQ, BATCH = 256, 8
MODES = ("fork", "forkserver")


def trainer(mode: str, steps: int, workers: int, shard_dir: Path) -> dict:
    """One trainer process: BlendedSamples with `workers` workers started by `mode`, `steps` steps."""
    from peak_memory import descendants, pss_mb
    from train_fixtures import SP_VOCAB, stream_recipe, write_lang_shards

    from cpt.config import recipe_from_dict
    from cpt.sampling import DataParallelLayout
    from cpt.train.stream_data import BlendedSamples, build_streams, reader_pool
    from megatron_ext.engine import MegatronEngine

    prefix = write_lang_shards(shard_dir / "lang")
    rd = stream_recipe(prefix, shard_dir / f"run-{mode}", training={
        "seq_length": SEQ, "micro_batch_size": BATCH, "global_batch_size": BATCH, "train_tokens": SEQ * BATCH})
    rd["model"].update(num_layers=8, hidden_size=512, ffn_hidden_size=1376, num_attention_heads=8,
                       num_query_groups=4, vocab_size=SP_VOCAB, max_position_embeddings=SEQ)
    recipe = recipe_from_dict(rd)
    d = recipe.data
    source = BlendedSamples(build_streams(d.streams, SEQ), {s.name: s.weight for s in d.streams}, SEQ, d,
                            num_workers=0)
    source._pool = reader_pool(workers, mode)  # the one thing the modes differ in
    engine = MegatronEngine(recipe)
    layout = DataParallelLayout(global_batch_size=BATCH, micro_batch_size=BATCH, dp_size=1)
    load_s = []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        batch = source.fetch(layout.global_indices(step * BATCH, 0))
        load_s.append(time.perf_counter() - t0)
        engine.train_step(iter([batch]), 1, 1e-4)
    below = descendants(os.getpid())
    tree = pss_mb(os.getpid()) + sum(pss_mb(p) for p in below)
    out = {"tree_pss_mb": round(tree, 1), "trainer_pss_mb": round(pss_mb(os.getpid()), 1),
           "processes_below": len(below), "first_fetch_s": round(load_s[0], 3),
           "loader_ms_per_step": round(float(np.median(load_s[1:])) * 1e3, 2),
           "params_m": round(engine.num_parameters / 1e6, 1)}
    engine.close()
    source.close()
    return out


def main() -> None:
    from rounds import add_rounds_option, alternating

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    add_rounds_option(parser, default=2)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # a trainer process's own run
    parser.add_argument("--shards", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(trainer(args.mode, args.steps, args.workers, Path(args.shards))))
        return

    shard_dir = Path(tempfile.mkdtemp(prefix="bench_loader_workers_"))
    best: dict[str, dict] = {}
    for r, mode in alternating(MODES, args.rounds):
        run = subprocess.run([sys.executable, __file__, "--mode", mode, "--steps", str(args.steps),
                              "--workers", str(args.workers), "--shards", str(shard_dir)],
                             capture_output=True, text=True)
        if run.returncode:
            raise SystemExit(f"the {mode} trainer failed (exit {run.returncode}):\n{run.stderr[-4000:]}")
        got = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"round {r} {mode}: {got}")
        keep = best.setdefault(mode, got)
        for key in ("tree_pss_mb", "trainer_pss_mb", "first_fetch_s", "loader_ms_per_step"):
            keep[key] = min(keep[key], got[key])
    fork, ours = best["fork"], best["forkserver"]
    print(json.dumps({"bench": "loader_workers", "workers": args.workers, "steps": args.steps,
                      "params_m": ours["params_m"], "fork": fork, "forkserver": ours,
                      "tree_pss_saved_mb": round(fork["tree_pss_mb"] - ours["tree_pss_mb"], 1),
                      "tree_pss_ratio": round(ours["tree_pss_mb"] / fork["tree_pss_mb"], 3),
                      "loadavg": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
