"""Cost of the training-time mixture machinery as a share of training: per-stream validation
(reported per topic), the data hooks (the topic-PPL controller + the forgetting guard) and the
weight changes they schedule, against the same run without them, in one process.

Both runs train the same tiny Llama on the same real bilingual cpt shard (Python help topics +
People's Daily, Mistral's SentencePiece tokenizer) split into 8 streams (2 languages x 4 length
quartiles standing in for topics), the demo's cadence by default: validation every 5 steps, one
global batch per stream. The overhead is what the second run spends beyond the first, and its
parts come from the trainer's own clocks (time in validation, time in hooks).

    python benchmarks/bench_hooks.py [--steps 20] [--eval-every 5] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def recipe(prefix: str, out: Path, steps: int, eval_every: int, with_mixture: bool, cuts: dict) -> dict:
    from train_fixtures import stream_recipe

    rd = stream_recipe(prefix, out, training={"train_tokens": 64 * 8 * steps, "eval_every": eval_every if with_mixture else 0,
                                               "eval_batches_per_stream": 1, "tensorboard": False})
    streams = []
    for lang, edges in cuts.items():
        for q in range(4):
            cond = f'lang == "{lang}" and n_tokens >= {edges[q]} and n_tokens < {edges[q + 1]}'
            streams.append({"name": f"{lang}_q{q}", "prefixes": [prefix], "filter": cond, "weight": 1.0, "seed": q})
    rd["data"]["streams"] = streams
    if with_mixture:
        rd["data"].update(valid_holdout=0.2, valid_holdout_seed=0)
        names = [s["name"] for s in streams]
        rd["hooks"] = [
            {"use": "topic_ppl", "options": {"alpha": 0.5, "groups": [[n for n in names if n.startswith(l)] for l in cuts],
                                             "max_change": 0.25}},
            {"use": "forgetting_guard", "options": {"watch": [n for n in names if n.startswith("en")], "tolerance": 0.03}},
        ]
    return rd


def run(rd: dict) -> dict:
    from cpt.config import recipe_from_dict
    from cpt.train.loop import Trainer
    from cpt.train.run import build_training_data
    from megatron_ext.engine import MegatronEngine

    r = recipe_from_dict(rd)
    engine = MegatronEngine(r)
    data = build_training_data(r)
    trainer = Trainer(r, engine, data.train, data.valid, valid_streams=data.valid_streams)
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    trainer.logger.close()
    data.close()
    records = [json.loads(x) for x in (Path(r.training.output_dir) / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in records if x["kind"] == "eval"]
    per_topic = {}
    for e in evals:
        for name, figures in e.get("streams", {}).items():
            per_topic.setdefault(name, []).append(figures["seconds"])
    mixture = [x for x in records if x["kind"] == "mixture"]
    engine.close()
    return {"wall": wall, "train_seconds": trainer.train_seconds, "eval_seconds": trainer.eval_seconds,
            "hook_seconds": trainer.hooks.seconds, "updates": trainer.hooks.updates, "hook_calls": len(mixture),
            "evals": len(evals), "per_topic": {k: sum(v) / len(v) for k, v in per_topic.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import numpy as np

    from cpt import shards
    from train_fixtures import write_lang_shards

    tmp = Path(tempfile.mkdtemp(prefix="bench_hooks_"))
    prefix = write_lang_shards(tmp / "lang")
    meta = shards.open(prefix).metadata(["lang", "n_tokens"])
    lang, n = np.asarray(meta.column("lang").to_pylist()), meta.column("n_tokens").to_numpy()
    cuts = {}
    for code in ("en", "zh"):
        q = np.quantile(n[lang == code], [0.25, 0.5, 0.75]).astype(int).tolist()
        cuts[code] = [0, *q, int(n.max()) + 1]
    # alternating rounds, best of each: machine noise (other processes) hits both alike
    plain, mixture = [], []
    for r in range(args.rounds):
        plain.append(run(recipe(prefix, tmp / f"plain{r}", args.steps, args.eval_every, False, cuts)))
        mixture.append(run(recipe(prefix, tmp / f"mixture{r}", args.steps, args.eval_every, True, cuts)))
    base, mixed = min(plain, key=lambda x: x["wall"]), min(mixture, key=lambda x: x["wall"])
    share = lambda x: x / base["train_seconds"]  # noqa: E731
    print(f"plain run:   {base['wall']:.1f} s wall, {base['train_seconds']:.1f} s in {args.steps} steps")
    print(f"mixture run: {mixed['wall']:.1f} s wall, {mixed['train_seconds']:.1f} s in steps, "
          f"{mixed['eval_seconds']:.1f} s in {mixed['evals']} per-stream validations, "
          f"{mixed['hook_seconds'] * 1e3:.1f} ms in hooks ({mixed['hook_calls']} controller calls, "
          f"{mixed['updates']} mixture changes)")
    for name, seconds in sorted(mixed["per_topic"].items()):
        print(f"  validation of {name}: {seconds * 1e3:.0f} ms per evaluation")
    calls = max(mixed["hook_calls"], 1)
    print(json.dumps({
        "bench": "hooks", "steps": args.steps, "eval_every": args.eval_every, "streams": len(mixed["per_topic"]),
        "overhead_share": round((mixed["wall"] - base["wall"]) / base["wall"], 4),
        "eval_share": round(share(mixed["eval_seconds"]), 4), "hook_share": round(share(mixed["hook_seconds"]), 6),
        "hook_ms_per_call": round(mixed["hook_seconds"] * 1e3 / calls, 3),
        "eval_ms_per_topic": round(1e3 * sum(mixed["per_topic"].values()) / len(mixed["per_topic"]), 1),
        "goal_controller_ms": 1.0,
    }))


if __name__ == "__main__":
    main()
