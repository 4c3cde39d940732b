"""Worker for tests/test_engine_saves.py: the megatron engine's checkpoint saves on CPU/gloo.

    python save_cases.py --train PREFIX --out OUT CASE...
sync        6 steps, save_every 2, keep_last 2: losses, checkpoints left, final parameter checksum
async       the same with async_save=True (dist_checkpointing's async save: shards written by a
            background process, committed at a later step boundary)
sync_dp2, async_dp2   the same two under torchrun with 2 ranks (DP=2), where the weights' writing
            is spread over the ranks: also the shard bytes each rank wrote into the last checkpoint,
            and the bytes each rank read loading it with and without training.fully_parallel_load
kill_save   save_every 1; blocks (OUT/kill_save/at_kill_point) in step 3's save after the engine
            wrote its shards, before the commit: the test SIGKILLs it there
load_latest resumes kill_save's run folder in a new process: which step, and does it train on
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_fixtures import tiny_recipe  # noqa: E402

from cpt.config import recipe_from_dict  # noqa: E402
from cpt.train.checkpoint import complete_checkpoints  # noqa: E402
from cpt.train.loop import Trainer  # noqa: E402
from worker_cases import run_cases  # noqa: E402


def _trainer(args, case: str, training: dict, async_save: bool = False) -> tuple[Trainer, object, Path]:
    from cpt.train.run import build_training_data
    from megatron_ext.engine import MegatronEngine

    run_dir = args.out / case / "run"
    recipe = recipe_from_dict(tiny_recipe(args.train, None, run_dir, training=training))
    engine = MegatronEngine(recipe, async_save=async_save)
    return Trainer(recipe, engine, build_training_data(recipe).train), engine, run_dir


def _checksum(engine) -> float:
    return float(sum(p.double().sum() for p in engine.model.parameters()))


def _losses(run_dir: Path) -> list[float]:
    records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [r["loss"] for r in records if r["kind"] == "train"]


def _write(args, case: str, result: dict) -> None:
    (args.out / case).mkdir(parents=True, exist_ok=True)
    (args.out / case / "result.json").write_text(json.dumps(result))


def run_saves(case: str, args) -> None:
    training = {"train_tokens": 64 * 8 * 6, "save_every": 2, "keep_last": 2}
    trainer, engine, run_dir = _trainer(args, case, training, async_save=case.startswith("async"))
    trainer.train()
    trainer.logger.close()
    after = _checksum(engine)
    # the newest checkpoint loads in a fresh engine with the very parameters training ended with
    fresh, fresh_engine, _ = _trainer(args, case, training)
    read = _bytes_read(fresh.resume)
    extra = {}
    if case.endswith("_dp2"):  # and so it does with training.fully_parallel_load, reading less per rank
        spread, spread_engine, _ = _trainer(args, case, {**training, "fully_parallel_load": True})
        spread_read = _bytes_read(spread.resume)
        import torch.distributed as dist

        reads = [None] * dist.get_world_size()
        dist.all_gather_object(reads, (read, spread_read))
        extra = {"read_per_rank": reads, "spread_loaded_checksum": _checksum(spread_engine),
                 "spread_loaded_step": spread.state.step}
    if fresh_engine.layout.rank != 0:
        return
    checkpoints = complete_checkpoints(run_dir / "checkpoints")
    written: dict[str, int] = {}
    for f in checkpoints[-1].glob("__*_*.distcp"):  # torch_dist's shard files: __RANK_N.distcp
        rank = f.name[2:].split("_")[0]
        written[rank] = written.get(rank, 0) + f.stat().st_size
    _write(args, case, {
        "losses": _losses(run_dir), "checkpoints": [p.name for p in checkpoints],
        "checksum": after, "loaded_checksum": _checksum(fresh_engine), "loaded_step": fresh.state.step,
        "written_per_rank": written, **extra,
    })


def _bytes_read(load) -> int:
    """Bytes this process read through system calls (/proc/self/io rchar) while `load()` ran."""
    def rchar() -> int:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))

    before = rchar()
    load()
    return rchar() - before


def run_kill_save(case: str, args) -> None:
    from megatron_ext.engine import MegatronEngine

    trainer, engine, run_dir = _trainer(args, case, {"train_tokens": 64 * 8 * 6, "save_every": 1, "keep_last": 2})
    real_save = MegatronEngine.save

    def save(self, directory, trainer_state, on_written=None):
        if trainer_state["step"] == 3:  # write step 3's files, then stop before the commit
            real_save(self, directory, trainer_state, on_written=None)
            (args.out / case / "at_kill_point").write_text(str(os.getpid()))
            while True:
                time.sleep(60)
        return real_save(self, directory, trainer_state, on_written)

    MegatronEngine.save = save
    trainer.train()


def run_load_latest(case: str, args) -> None:
    trainer, engine, run_dir = _trainer(args, "kill_save", {"train_tokens": 64 * 8 * 6, "save_every": 1,
                                                            "keep_last": 2})
    loaded = trainer.resume()
    step = trainer.state.step
    trainer.train()
    trainer.logger.close()
    _write(args, case, {"loaded": loaded, "step": step, "final_step": trainer.state.step,
                        "checkpoints": [p.name for p in complete_checkpoints(run_dir / "checkpoints")]})


CASES = {"sync": run_saves, "async": run_saves, "sync_dp2": run_saves, "async_dp2": run_saves, "kill_save": run_kill_save, "load_latest": run_load_latest}


def main() -> None:
    run_cases(CASES, train={"required": True})


if __name__ == "__main__":
    main()
