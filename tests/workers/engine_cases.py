"""Engine cases run in one process lifetime (importing megatron costs ~9 s per process), under
`torchrun --nproc_per_node=2` for the parallel layouts or plain `python` for single-process ones.

Writes `<out>/<case>/result.json` (rank 0) with the per-step losses read back from the run's
metrics.jsonl, plus whatever the case measures. The pytest module compares the results.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_fixtures import RecordingSamples, stream_recipe, tiny_recipe  # noqa: E402

from cpt.config import recipe_from_dict  # noqa: E402
from cpt.train.loop import Trainer, TrainingStopped  # noqa: E402
from worker_cases import run_cases  # noqa: E402

# megatron is imported inside functions: dist_checkpointing's save spawns a helper process that
# re-imports this __main__ module, and a top-level megatron import would cost it ~9 s.

LOGIT_TOKENS = np.arange(2 * 32, dtype=np.int64).reshape(2, 32) % 250 + 3

LAYOUTS = {
    "ref": {},
    "tp2": {"tensor_model_parallel_size": 2, "optimizer_checkpoint": "fully_reshardable"},
    "pp2": {"pipeline_model_parallel_size": 2},
    "dp2": {"use_distributed_optimizer": True, "recompute": "full"},
    "tp2sp": {"tensor_model_parallel_size": 2, "sequence_parallel": True},
}


def make(recipe_dict, engine=None):
    from cpt.train.run import build_training_data
    from megatron_ext.engine import MegatronEngine

    recipe = recipe_from_dict(recipe_dict)
    engine = engine or MegatronEngine(recipe)
    data = build_training_data(recipe)
    return recipe, engine, data.train, data.valid


def losses(run_dir: Path, kind: str = "train") -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["kind"] == kind]


def write(out: Path, case: str, engine, result: dict) -> None:
    if engine.layout.rank == 0:
        (out / case).mkdir(parents=True, exist_ok=True)
        (out / case / "result.json").write_text(json.dumps(result))


def run_layout(case: str, args) -> None:
    run_dir = args.out / case / "run"
    rd = tiny_recipe(args.train, args.valid, run_dir, parallel=LAYOUTS[case])
    recipe, engine, train, valid = make(rd)
    trainer = Trainer(recipe, engine, train, valid)
    trainer.train()
    trainer.logger.close()
    result = {"losses": losses(run_dir) if engine.layout.rank == 0 else None,
              "eval": losses(run_dir, "eval") if engine.layout.rank == 0 else None}
    if recipe.parallel.pipeline_model_parallel_size == 1:
        logits = engine.logits(LOGIT_TOKENS)
        if engine.layout.rank == 0:
            np.save(args.out / case / "logits.npy", logits.numpy())
    write(args.out, case, engine, result)


def run_weights_only(case: str, args) -> None:
    """A weights-only checkpoint (what an HF import writes) starts a run at step 0 with those
    weights and a fresh optimizer: its first loss equals the source model's loss on that batch."""
    src_dir = args.out / case / "src"
    recipe, engine, train, valid = make(tiny_recipe(args.train, args.valid, src_dir, training={"train_tokens": 64 * 8 * 2}))
    Trainer(recipe, engine, train, valid).train()
    engine.save(args.out / case / "weights", {"weights_only": True, "source": "test", "layout": engine.layout_key()})
    (args.out / case / "weights" / "COMPLETE").write_text("0\n")
    run_dir = args.out / case / "run"
    recipe, engine, train, valid = make(tiny_recipe(args.train, args.valid, run_dir, training={
        "train_tokens": 64 * 8 * 1, "load": str(args.out / case / "weights")}))
    trainer = Trainer(recipe, engine, train, valid)
    trainer.resume()
    state_before = trainer.state.to_dict()
    trainer.train()
    trainer.logger.close()
    src_losses = losses(src_dir)
    write(args.out, case, engine, {"state_before": state_before, "losses": losses(run_dir), "src_losses": src_losses})


def run_reshard_load(case: str, args) -> None:
    """Load the TP=2 checkpoint with TP=1 (optimizer included) and take logits. The copy loaded has
    its form's record removed, as checkpoints written before the record have: those were all saved
    fully_reshardable, and load so."""
    run_dir = args.out / case / "run"
    rd = tiny_recipe(args.train, args.valid, run_dir)
    recipe, engine, _, _ = make(rd)
    legacy = args.out / case / "legacy_step_00000008"
    if engine.layout.rank == 0:
        shutil.copytree(args.out / "tp2" / "run" / "checkpoints" / "step_00000008", legacy)
        state_file = legacy / "trainer_state.json"
        saved = json.loads(state_file.read_text())
        del saved["optimizer_checkpoint"]
        state_file.write_text(json.dumps(saved))
    engine.barrier()
    state = engine.load(legacy)
    np.save(args.out / case / "logits.npy", engine.logits(LOGIT_TOKENS).numpy()) if engine.layout.rank == 0 else None
    write(args.out, case, engine, {"step": state["step"]})


def run_reshard_refused(case: str, args) -> None:
    """Load tp2sp's checkpoint (its optimizer saved dp_reshardable, the default) with TP=1: the
    optimizer is refused with a message; the weights alone load, and give tp2sp's logits."""
    rd = tiny_recipe(args.train, args.valid, args.out / case / "run")
    recipe, engine, _, _ = make(rd)
    checkpoint = args.out / "tp2sp" / "run" / "checkpoints" / "step_00000008"
    try:
        engine.load(checkpoint)
        message = None
    except ValueError as exc:
        message = str(exc)
    state = engine.load(checkpoint, load_optimizer=False)
    logits = engine.logits(LOGIT_TOKENS)
    if engine.layout.rank == 0:
        np.save(args.out / case / "logits.npy", logits.numpy())
    write(args.out, case, engine, {"message": message, "step": state["step"]})


def run_resume(case: str, args) -> None:
    """4 steps, stop, resume in a new Trainer/engine, 4 more; against the uninterrupted 'ref' run."""
    run_dir = args.out / case / "run"
    half = tiny_recipe(args.train, args.valid, run_dir, training={"train_tokens": 64 * 8 * 4})
    recipe, engine, train, valid = make(half)
    Trainer(recipe, engine, train, valid).train()
    full = tiny_recipe(args.train, args.valid, run_dir)
    recipe, engine, train, valid = make(full)
    trainer = Trainer(recipe, engine, train, valid)
    resumed = trainer.resume()
    trainer.train()
    trainer.logger.close()
    write(args.out, case, engine, {"resumed": resumed, "losses": losses(run_dir)})


class PoisonedSamples:
    """Real samples, except one whose loss mask is NaN: a data fault the loop must survive or stop on."""

    def __init__(self, inner, bad_index: int) -> None:
        self.inner, self.bad_index = inner, bad_index

    def prepare_step(self, start, stop):
        self.inner.prepare_step(start, stop)

    def fetch(self, indices):
        batch = dict(self.inner.fetch(indices))
        bad = np.asarray(indices) == self.bad_index
        if bad.any():
            batch["loss_mask"] = batch["loss_mask"].astype(np.float32).copy()
            batch["loss_mask"][bad] = np.nan
        return batch


def _param_checksum(engine) -> float:
    return float(sum(p.double().sum() for p in engine.model.parameters()))


def run_nan(case: str, args) -> None:
    result = {}
    for policy in ("skip", "stop"):
        run_dir = args.out / case / policy
        rd = tiny_recipe(args.train, None, run_dir, training={"nan_policy": policy, "save_every": 2})
        recipe, engine, train, _ = make(rd)
        trainer = Trainer(recipe, engine, PoisonedSamples(train, bad_index=2 * 8 + 3), None)
        original_step = engine.train_step
        sums = []

        def step_and_checksum(*a, **k):
            before = _param_checksum(engine)
            out = original_step(*a, **k)
            sums.append((before, _param_checksum(engine), out.skipped))
            return out

        engine.train_step = step_and_checksum
        try:
            trainer.train()
            outcome = "finished"
        except TrainingStopped as exc:
            outcome = f"stopped: {exc}"
        trainer.logger.close()
        ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
        result[policy] = {"outcome": outcome, "steps": sums, "checkpoints": ckpts,
                          "skipped_steps": trainer.state.skipped_steps}
    write(args.out, case, engine, result)


STEPS_BEFORE_CHANGE, NEW_WEIGHTS, STEPS_BEFORE_KILL, STEPS = 3, {"en": 0.2, "zh": 0.8}, 4, 6


def _stream_trainer(args, run_dir, steps, data=None):
    rd = stream_recipe(args.streams, run_dir, training={"train_tokens": 64 * 8 * steps, "eval_every": 0},
                       data=data or {})
    recipe, engine, train, _ = make(rd)
    rec = RecordingSamples(train)
    return Trainer(recipe, engine, rec, None), rec


def run_streams(case: str, args) -> None:
    """Uninterrupted: weights change from step 4 on (global sample 24), 6 steps."""
    run_dir = args.out / case / "run"
    trainer, rec = _stream_trainer(args, run_dir, STEPS)
    rec.set_weights(NEW_WEIGHTS, effective_at=STEPS_BEFORE_CHANGE * 8)
    trainer.train()
    trainer.logger.close()
    write(args.out, case, trainer.engine, {"losses": losses(run_dir), "ids": rec.seen})


def run_streams_resume(case: str, args) -> None:
    """The same run killed after step 4 (its checkpoint holds the weight change), resumed in a new
    engine and loader with 0 or 2 worker processes: ids and losses must equal run_streams'."""
    workers = int(case.rsplit("_w", 1)[1])
    run_dir = args.out / case / "run"
    first, rec = _stream_trainer(args, run_dir, STEPS_BEFORE_KILL)
    rec.set_weights(NEW_WEIGHTS, effective_at=STEPS_BEFORE_CHANGE * 8)
    first.train()
    resumed, rec = _stream_trainer(args, run_dir, STEPS, data={"num_workers": workers})
    assert resumed.resume()
    resumed.train()
    resumed.logger.close()
    rec.inner.close()
    write(args.out, case, resumed.engine, {"losses": losses(run_dir), "ids": rec.seen})


def run_streams_exhausted(case: str, args) -> None:
    """A `stop` stream (19 samples) running dry: all ranks stop before the step, the last complete
    step is checkpointed, and the message names the stream."""
    run_dir = args.out / case / "run"
    rd = stream_recipe(args.streams, run_dir, training={"train_tokens": 64 * 8 * 8, "eval_every": 0})
    rd["data"]["streams"] = [
        {"name": "short_en", "prefixes": [args.streams], "filter": 'lang == "en" and n_tokens < 150',
         "weight": 0.5, "on_exhausted": "stop"},
        {"name": "zh", "prefixes": [args.streams], "filter": 'lang == "zh"', "weight": 0.5},
    ]
    recipe, engine, train, _ = make(rd)
    trainer = Trainer(recipe, engine, train, None)
    try:
        trainer.train()
        outcome = "finished"
    except TrainingStopped as exc:
        outcome = str(exc)
    trainer.logger.close()
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
    write(args.out, case, engine, {"outcome": outcome, "checkpoints": ckpts, "steps": trainer.state.step})


def run_streams_dp(case: str, args) -> None:
    """DP=2: every rank's fetched ids, gathered per rank."""
    import torch.distributed as dist

    run_dir = args.out / case / "run"
    trainer, rec = _stream_trainer(args, run_dir, 4)
    trainer.train()
    trainer.logger.close()
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, rec.seen)
    write(args.out, case, trainer.engine, {"ids_per_rank": gathered, "losses": losses(run_dir) if trainer.engine.layout.rank == 0 else None})


CASES = {"ref": run_layout, "tp2": run_layout, "pp2": run_layout, "dp2": run_layout, "tp2sp": run_layout,
         "tp2_to_tp1": run_reshard_load, "tp2sp_to_tp1": run_reshard_refused,
         "weights_only": run_weights_only,
         "streams": run_streams, "streams_resume_w0": run_streams_resume,
         "streams_resume_w2": run_streams_resume, "streams_exhausted": run_streams_exhausted, "streams_dp": run_streams_dp, "resume": run_resume, "nan": run_nan}


def main() -> None:
    run_cases(CASES, train={"required": True}, valid={"required": True},
              streams={"help": "cpt shard prefix with lang en/zh documents"})


if __name__ == "__main__":
    main()
