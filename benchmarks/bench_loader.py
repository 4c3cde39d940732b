"""Loader overhead per training step as a share of the step: BlendedSamples (Blender ids + Stream
pieces + token reads + masks, in the main process) against the engine's train_step, same batches,
one run. Data: a real bilingual cpt shard (Python help topics + People's Daily, Mistral's
SentencePiece tokenizer); model: the ≈10M-parameter Llama of bench_train_step (seq 256, batch 8).

    python benchmarks/bench_loader.py [--steps 6]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SEQ, BATCH = 256, 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()

    from train_fixtures import SP_VOCAB, stream_recipe, write_lang_shards

    from cpt.config import recipe_from_dict
    from cpt.sampling import DataParallelLayout
    from cpt.train.stream_data import BlendedSamples, build_streams
    from megatron_ext.engine import MegatronEngine

    tmp = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    prefix = write_lang_shards(tmp / "lang")
    rd = stream_recipe(prefix, tmp / "run", training={"seq_length": SEQ, "micro_batch_size": BATCH,
                                                      "global_batch_size": BATCH, "train_tokens": SEQ * BATCH})
    rd["model"].update(num_layers=8, hidden_size=256, ffn_hidden_size=688, num_attention_heads=8,
                       num_query_groups=4, vocab_size=SP_VOCAB, max_position_embeddings=SEQ)
    recipe = recipe_from_dict(rd)
    d = recipe.data
    source = BlendedSamples(build_streams(d.streams, SEQ), {s.name: s.weight for s in d.streams}, SEQ, d)
    engine = MegatronEngine(recipe)
    layout = DataParallelLayout(global_batch_size=BATCH, micro_batch_size=BATCH, dp_size=1)

    load_s, step_s = [], []
    for step in range(args.steps + 1):
        t0 = time.perf_counter()
        batch = source.fetch(layout.global_indices(step * BATCH, 0))
        t1 = time.perf_counter()
        engine.train_step(iter([batch]), 1, 1e-4)
        t2 = time.perf_counter()
        if step:  # the first step warms caches on both sides
            load_s.append(t1 - t0)
            step_s.append(t2 - t1)
    engine.close()
    load, train = float(np.median(load_s)), float(np.median(step_s))
    print(f"loader {load * 1e3:.2f} ms per step, train step {train * 1e3:.1f} ms ({engine.num_parameters / 1e6:.1f}M params)")
    print(json.dumps({"bench": "loader", "loader_ms_per_step": round(load * 1e3, 3),
                      "step_ms": round(train * 1e3, 1), "loader_share": round(load / (load + train), 4),
                      "loadavg": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
