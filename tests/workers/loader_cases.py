"""Loader cases under `torchrun --nproc_per_node=2`: who reads micro-batches and what each rank's
model receives. Writes `<out>/<case>.json` (rank 0) with, per rank, the number of source fetches,
digests of the fetched micro-batches and digests of the tensors handed to the model."""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_fixtures import stream_recipe  # noqa: E402

from cpt.config import recipe_from_dict  # noqa: E402
from cpt.train.loop import Trainer  # noqa: E402

STEPS = 2
LAYOUTS = {"tp2": {"tensor_model_parallel_size": 2}, "pp2": {"pipeline_model_parallel_size": 2}}
MICRO_BATCH = {"tp2": 2, "pp2": 1}  # packed documents through pipeline stages need one sample per micro-batch
HOST = {"tokens": np.int64, "position_ids": np.int64, "labels": np.int64, "loss_mask": np.float32,
        "document_ids": np.int32}


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


class CountingSamples:
    """The training source, counting and digesting every micro-batch it builds."""

    def __init__(self, inner) -> None:
        self.inner, self.fetched = inner, []

    def fetch(self, indices):
        batch = self.inner.fetch(indices)
        self.fetched.append({k: digest(np.asarray(v, dtype=HOST[k])) for k, v in sorted(batch.items())})
        return batch

    def __getattr__(self, name):
        return getattr(self.inner, name)


def run(case: str, args):
    import torch.distributed as dist

    from cpt.train.run import build_training_data
    from megatron_ext.engine import MegatronEngine

    run_dir = args.out / case
    rd = stream_recipe(args.streams, run_dir, parallel=LAYOUTS[case],
                       training={"train_tokens": 64 * 8 * STEPS, "eval_every": 0,
                                 "micro_batch_size": MICRO_BATCH[case]},
                       data={"reset_attention_mask": True, "reset_position_ids": True})
    recipe = recipe_from_dict(rd)
    engine = MegatronEngine(recipe)
    source = CountingSamples(build_training_data(recipe).train)
    received = []
    model_batch = engine.batches.next

    def recording(data_iterator):
        batch = model_batch(data_iterator)
        received.append({k: digest(v.cpu().numpy()) for k, v in sorted(batch.items())})
        return batch

    engine.batches.next = recording
    trainer = Trainer(recipe, engine, source, None)
    trainer.train()
    trainer.logger.close()
    mine = {"fetches": len(source.fetched), "fetched": source.fetched, "received": received,
            "reads": engine.batches.plan.reads, "fields": list(engine.batches.plan.keys)}
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    if engine.layout.rank == 0:
        first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
        losses = [r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                  if r["kind"] == "train"]
        (args.out / f"{case}.json").write_text(json.dumps({"ranks": gathered, "first": first, "losses": losses}))
    source.inner.close()
    return engine


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("cases", nargs="+", choices=sorted(LAYOUTS))
    args = parser.parse_args()
    engine = None
    for case in args.cases:  # the next engine re-initialises megatron's groups; the world stays up
        engine = run(case, args)
    engine.close()


if __name__ == "__main__":
    main()
