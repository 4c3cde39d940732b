"""Training-time mixture cases (data hooks, per-stream validation, stages) in one process lifetime,
under `torchrun --nproc_per_node=2` (DP=2) or plain `python`. Writes `<out>/<case>/result.json`.

The run: a tiny Llama first learns English (stage "pre", 24 steps on the en stream only); stage
"s1" continues from it on two streams of a real bilingual shard, en (share 0.1) and zh (0.9), a
quarter of each stream's documents held out for validation, evaluation every 2 steps, the paper's
topic-PPL controller plus a third-party recording hook. Training mostly on Chinese makes the
English validation PPL rise (forgetting), so the controller raises the English share.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_fixtures import RecordingSamples, stream_recipe  # noqa: E402

from cpt.config import recipe_from_dict  # noqa: E402
from cpt.train.loop import Trainer  # noqa: E402
from worker_cases import run_cases  # noqa: E402

PRE_STEPS, STEPS, KILL_AT, GBS = 24, 6, 4, 8
LR_MAX = {"pre": 3e-3, "s1": 6e-3, "s2": 6e-3}  # s1 forgets English fast


def pre_checkpoints(out: Path) -> Path:
    return out / "pre" / "run" / "checkpoints"


def mixture_recipe(prefix: str, run_dir: Path, steps: int, record: Path, **training) -> dict:
    training = {"stage": "s1", "load": str(pre_checkpoints(Path(record).parents[1])), **training}
    rd = stream_recipe(prefix, run_dir, training={"train_tokens": 64 * GBS * steps, "eval_every": 2,
                                                   "eval_batches_per_stream": 1, **training},
                       schedule={"warmup_tokens": 1024, "stable_tokens": 10**7, "decay_tokens": 0,
                                 "lr_max": LR_MAX.get(training["stage"], 3e-3)})
    rd["data"]["streams"][0]["weight"], rd["data"]["streams"][1]["weight"] = 0.1, 0.9
    rd["data"].update(valid_holdout=0.25, valid_holdout_seed=7)
    rd["hooks"] = [
        {"use": "thirdparty_hooks:RecordingHook", "name": "recorder", "options": {"record": str(record)}},
        {"use": "topic_ppl", "name": "topic_ppl", "options": {"alpha": 2.0}},
    ]
    return rd


def trainer_for(rd: dict, engine=None):
    from cpt.train.run import build_training_data
    from megatron_ext.engine import MegatronEngine

    recipe = recipe_from_dict(rd)
    engine = engine or MegatronEngine(recipe)
    data = build_training_data(recipe)
    rec = RecordingSamples(data.train)
    return Trainer(recipe, engine, rec, data.valid, valid_streams=data.valid_streams), rec


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def finish(out: Path, case: str, trainer: Trainer, rec: RecordingSamples, run_dir: Path, **extra) -> None:
    import torch.distributed as dist

    trainer.logger.close()
    seen = rec.seen
    history = rec.inner.blender.state_dict()["history"]
    if dist.is_initialized() and dist.get_world_size() > 1:
        gathered, histories = [None] * dist.get_world_size(), [None] * dist.get_world_size()
        dist.all_gather_object(gathered, seen)
        dist.all_gather_object(histories, history)
        extra.update(ids_per_rank=gathered, history_per_rank=histories)
    if trainer.engine.layout.rank == 0:
        (out / case).mkdir(parents=True, exist_ok=True)
        result = {"ids": seen, "history": history, "hooks": trainer.hooks.state_dict(), "records": records(run_dir),
                  "state": trainer.state.to_dict(), **extra}
        (out / case / "result.json").write_text(json.dumps(result))


def run_pre(case: str, args) -> None:
    """English only: the model the mixture runs start from."""
    run_dir = args.out / case / "run"
    rd = mixture_recipe(args.prefix, run_dir, PRE_STEPS, args.out / case / "calls", stage="pre", load=None,
                        eval_every=0)
    rd["data"]["streams"][0]["weight"], rd["data"]["streams"][1]["weight"] = 1.0, 0.0
    rd["hooks"] = []
    trainer, rec = trainer_for(rd)
    trainer.train()
    finish(args.out, case, trainer, rec, run_dir)


def run_straight(case: str, args) -> None:
    run_dir = args.out / case / "run"
    trainer, rec = trainer_for(mixture_recipe(args.prefix, run_dir, STEPS, args.out / case / "calls"))
    trainer.resume()
    trainer.train()
    finish(args.out, case, trainer, rec, run_dir)


def run_resume(case: str, args) -> None:
    """Stopped after step 4 (after the controller's first update), resumed in a new engine/loader."""
    run_dir = args.out / case / "run"
    first, _ = trainer_for(mixture_recipe(args.prefix, run_dir, KILL_AT, args.out / case / "calls"))
    first.resume()
    first.train()
    first.logger.close()
    trainer, rec = trainer_for(mixture_recipe(args.prefix, run_dir, STEPS, args.out / case / "calls"))
    resumed = trainer.resume()
    trainer.train()
    finish(args.out, case, trainer, rec, run_dir, resumed=resumed)


def run_stage2(case: str, args) -> None:
    """Stage 2 from the straight run's checkpoint: a third stream joins, en/zh carry on; validation
    before the first step (eval_at_start); 1 step, then the stage is restarted (its own checkpoint wins
    over training.load, and the start validation is not repeated) for a second step."""
    run_dir = args.out / case / "run"
    s1 = args.out / "straight" / "run" / "checkpoints"

    def recipe(steps):
        rd = mixture_recipe(args.prefix, run_dir, steps, args.out / case / "calls", stage="s2", load=str(s1),
                            eval_at_start=True)
        rd["data"]["streams"].append({"name": "en_short", "prefixes": [args.prefix],
                                      "filter": 'lang == "en" and n_tokens < 400', "weight": 0.2, "seed": 3})
        rd["data"]["streams"][0]["weight"], rd["data"]["streams"][1]["weight"] = 0.6, 0.2
        rd["hooks"] = []
        return rd

    first, rec1 = trainer_for(recipe(1))
    first.resume()
    carried_ids = list(rec1.inner.offsets.tolist())
    first.train()
    first.logger.close()
    trainer, rec = trainer_for(recipe(2))
    trainer.resume()
    trainer.train()
    finish(args.out, case, trainer, rec, run_dir, first_ids=rec1.seen, offsets=carried_ids)


CASES = {"pre": run_pre, "straight": run_straight, "dp2": run_straight, "resume": run_resume, "stage2": run_stage2}


def main() -> None:
    run_cases(CASES, prefix={"required": True, "help": "cpt shard prefix with lang en/zh documents"})


if __name__ == "__main__":
    main()
