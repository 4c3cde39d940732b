"""Elastic resume and trace cases: one stage trained across launches of different layouts.

Run under `torchrun --nproc_per_node=2` (DP=2, or TP=2 / PP=2 with DP=1) or plain `python` (DP=1).
Each case trains stage "s1" (two language streams of a real bilingual shard, a quarter held out,
the topic-PPL controller updating the mixture after every second step) up to `--steps` in its own
run folder, resuming whatever a previous launch left there, and writes `<out>/<case>/rank<R>.json`:
the sample ids this rank fetched (recorded by `RecordingSamples`), the metrics records, the
Blender history and the controller state. "s2" continues from the elastic DP run's checkpoint as a
new stage with a synthetic QA stream added.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_fixtures import RecordingSamples, stream_recipe  # noqa: E402

from cpt.config import recipe_from_dict  # noqa: E402
from cpt.train.loop import Trainer  # noqa: E402

GBS, STEPS = 8, 6
# A resume under another TP or PP needs the optimizer saved fully_reshardable; the DP runs keep the
# default (dp_reshardable), whose resharding across DP the DP 2 -> 1 -> 2 chain tests.
FULLY = {"optimizer_checkpoint": "fully_reshardable"}
LAYOUTS = {"tp2": {"tensor_model_parallel_size": 2, **FULLY}, "pp2": {"pipeline_model_parallel_size": 2, **FULLY}}


def s1_recipe(prefix: str, run_dir: Path, steps: int, parallel: dict | None = None) -> dict:
    rd = stream_recipe(prefix, run_dir, training={"stage": "s1", "train_tokens": 64 * GBS * steps, "eval_every": 2,
                                                  "eval_batches_per_stream": 1, "save_every": 2},
                       schedule={"warmup_tokens": 1024, "stable_tokens": 10**7, "decay_tokens": 0, "lr_max": 6e-3})
    rd["parallel"] = dict(parallel or {})
    rd["data"]["streams"][0]["weight"], rd["data"]["streams"][1]["weight"] = 0.3, 0.7
    rd["data"].update(valid_holdout=0.25, valid_holdout_seed=7)
    rd["hooks"] = [{"use": "topic_ppl", "name": "topic_ppl", "options": {"alpha": 0.5}}]
    return rd


def s2_recipe(prefix: str, synthetic: str, run_dir: Path, load: Path, steps: int) -> dict:
    rd = s1_recipe(prefix, run_dir, steps)
    rd["training"].update(stage="s2", load=str(load), train_tokens=64 * GBS * steps)
    rd["data"]["streams"].append({"name": "qa", "prefixes": [synthetic], "weight": 0.4, "seed": 5,
                                  "valid_holdout": 0.0})
    rd["hooks"] = []
    return rd


def train(rd: dict, out: Path, case: str) -> None:
    import torch.distributed as dist

    from cpt.train.run import build_training_data
    from megatron_ext.engine import MegatronEngine

    recipe = recipe_from_dict(rd)
    engine = MegatronEngine(recipe)
    data = build_training_data(recipe)
    rec = RecordingSamples(data.train)
    trainer = Trainer(recipe, engine, rec, data.valid, valid_streams=data.valid_streams)
    trainer.resume()
    trainer.train()
    trainer.logger.close()
    run_dir = Path(rd["training"]["output_dir"])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()] \
        if (run_dir / "metrics.jsonl").exists() else []
    rank = dist.get_rank() if dist.is_initialized() else 0
    result = {"seen": rec.seen, "records": records, "history": rec.inner.blender.state_dict()["history"],
              "hooks": trainer.hooks.state_dict(), "state": trainer.state.to_dict(),
              "layout": engine.layout_key(), "dp_rank": engine.layout.dp_rank}
    (out / case).mkdir(parents=True, exist_ok=True)
    (out / case / f"rank{rank}.json").write_text(json.dumps(result))
    data.close()  # the engine stays: the next case's engine re-initialises the parallel state


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix", required=True, help="cpt shard prefix with lang en/zh documents")
    parser.add_argument("--synthetic", required=True, help="cpt shard of synthetic QA (stage s2)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("cases", nargs="+", help="CASE=RUN:STEPS[:LAYOUT] (LAYOUT tp2/pp2), or s2=RUN:STEPS:FROM_RUN")
    args = parser.parse_args()
    for spec in args.cases:
        case, rest = spec.split("=")
        run, steps, *extra = rest.split(":")
        run_dir = args.out / "runs" / run
        if case.startswith("s2"):
            rd = s2_recipe(args.prefix, args.synthetic, run_dir, args.out / "runs" / extra[0] / "checkpoints",
                           int(steps))
        else:
            rd = s1_recipe(args.prefix, run_dir, int(steps), LAYOUTS[extra[0]] if extra else None)
        train(rd, args.out, case)


if __name__ == "__main__":
    main()
