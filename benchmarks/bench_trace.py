"""`cpt trace` benchmark: trace one step deep into a long simulated run.

The run: one stage over a real shard (Python help topics tokenized by `cpt preprocess` with
Mistral's SentencePiece model, documents split into 22 topics), 22 streams (one per topic,
shuffled, starting a new epoch when they run out), weights changed 3 times, 10M samples drawn.
The streams are opened as the trainer opens them, through the run's index cache sized for the run's
samples (built here, untimed, as the trainer builds it at its start). Its checkpoint is written as
the trainer writes one (trainer_state.json with the recipe, the stage record and the data state:
Blender, ledgers; no model tensors: trace does not read them). Then, as `cpt trace
RUN --step N` does: open the stage, rebuild its streams, load (and verify) the Blender state, and
list every sample of step N with its pieces and their documents' metadata.

Figures: trace_ms, a cold trace (a fresh process's work after imports: open + rebuild + replay +
pieces + metadata), best of --repeat, split into open_replay_ms (rebuild the streams, load and verify
the Blender state) and ids_pieces_ms (sample ids, each stream's packing of the step's segments from the cached cursors, metadata);
warm_ms, another step on the opened stage; load average. The streams here are small (about one
epoch per packing segment): without the cache's cursors each would pack from its sample 0.
ledger_bytes_per_m_docs: the data state's bitmaps file of that checkpoint (data_bits.npz: the
streams' consumed-documents ledgers), per million documents of the shard.

Ledgers at paper scale (--scale-documents, default 100M; 0 skips): an in-memory table of that many
documents (log-normal lengths, mean ~900 tokens; 22 topics with stage 1's shares), 22 streams
(one per topic, shuffled, seq 8192), each stopped mid-epoch at the position a 10,000-step run of
global batch 1024 gives it; each stream's packing around that position is warmed first (a training
rank has just read it). Then what the rank that writes a checkpoint does: the disjointness check of
the streams' selections (once per segment: scale_overlap_s), the ledgers (scale_ledger_s), splitting
out and writing the bitmaps file (scale_write_s, scale_bits_bytes); for comparison the size the
version-3 data state had (a base64 bitmap per stream inside trainer_state.json: scale_v3_json_bytes).
Last line: {"bench": "trace", "trace_ms": ..., "ledger_bytes_per_m_docs": ..., "scale_...": ...}.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

STREAMS, CHANGES = 22, 3


def _corpus(folder: Path, docs_per_topic: int) -> Path:
    """Real English documents (Python help topics, cut into ~1 kB pieces), labelled with 22 topics."""
    from pydoc_data.topics import topics

    text = " ".join(topics[k] for k in sorted(topics))
    pieces = [text[i:i + 1000] for i in range(0, len(text) - 1000, 997)]
    rows = [{"text": pieces[(t * docs_per_topic + j) % len(pieces)], "topic": f"t{t}"}
            for t in range(STREAMS) for j in range(docs_per_topic)]
    path = folder / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _shard(folder: Path, docs_per_topic: int) -> str:
    from cpt.assets import mistral_tokenizer_dir
    from cpt.shards.pipeline import PreprocessConfig, run_preprocess

    prefix = str(folder / "topics")
    run_preprocess(PreprocessConfig(inputs=[str(_corpus(folder, docs_per_topic))], output_prefix=prefix,
                                    tokenizer=str(mistral_tokenizer_dir() / "tokenizer.model.v1"),
                                    keep_fields=["topic"], progress=False))
    return prefix


def _recipe(prefix: str, run: Path, gbs: int, seq: int, samples: int, rng) -> dict:
    weights = (rng.random(STREAMS) + 0.05).tolist()
    return {
        "model": dict(num_layers=2, hidden_size=64, ffn_hidden_size=176, num_attention_heads=4,
                      num_query_groups=2, vocab_size=32000, max_position_embeddings=seq),
        "data": {"streams": [{"name": f"t{i}", "prefixes": [prefix], "filter": f'topic == "t{i}"',
                              "weight": weights[i], "seed": i} for i in range(STREAMS)], "eod_token_id": 2},
        "training": dict(output_dir=str(run), seq_length=seq, micro_batch_size=gbs // 8, global_batch_size=gbs,
                         train_tokens=samples * seq, precision="fp32", tensorboard=False),
    }


def simulate(prefix: str, run: Path, samples: int, gbs: int, seq: int) -> int:
    """Draw `samples` with CHANGES weight changes and write the stage's checkpoint; return its step."""
    from cpt.config import recipe_from_dict, recipe_to_dict
    from cpt.train.stream_data import BlendedSamples, build_streams

    rng = np.random.default_rng(0)
    recipe = recipe_from_dict(_recipe(prefix, run, gbs, seq, samples, rng))
    d = recipe.data
    steps = samples // gbs
    # as the trainer opens them: through the run's index cache, sized for the run's samples
    streams = build_streams(d.streams, seq, "train", cache_dir=str(run / "data_cache"), samples=steps * gbs)
    data = BlendedSamples(streams, {s.name: s.weight for s in d.streams}, seq, d, num_workers=0, prefetch=False)
    for c in range(1, CHANGES + 1):
        data.set_weights((rng.random(STREAMS) + 0.05).tolist(), effective_at=(steps * c // (CHANGES + 1)) * gbs)
    data.blender.next_samples(steps * gbs)
    state = {"version": 1, "step": steps, "consumed_samples": steps * gbs, "consumed_tokens": steps * gbs * seq,
             "skipped_steps": 0, "consecutive_skips": 0,
             "extra": {"stage": {"name": "main", "start_step": 0, "start_samples": 0, "start_tokens": 0},
                       "data": data.state_dict()},
             "layout": {"tp": 1, "pp": 1, "dp": 8}, "recipe": recipe_to_dict(recipe)}
    from cpt.train.data_bits import BITS_FILE, split_bits, write_bits

    documents = len(streams[0].table)
    state["extra"]["data"], bits = split_bits(state["extra"]["data"])
    ckpt = run / "checkpoints" / f"step_{steps:08d}"
    ckpt.mkdir(parents=True)
    ledger_bytes = write_bits(ckpt / BITS_FILE, bits)
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    (ckpt / "COMPLETE").write_text(f"{steps}\n")
    return steps, ledger_bytes * 1_000_000 / documents


TOPIC_SHARES = np.array([6, 5, 4, 5, 7, 9, 6, 8, 10, 12, 28], np.float64) / 100  # stage 1's 11 topics


def ledgers_at_scale(documents: int, folder: Path, steps: int = 10_000, gbs: int = 1024, seq: int = 8192) -> dict:
    """The checkpoint writer's ledger work at `documents` documents, 22 streams (module docstring)."""
    from cpt.sampling import DocumentTable, Stream, StreamConfig
    from cpt.sampling.ledger import consumed, overlapping_sets, stream_ledgers
    from cpt.train.data_bits import BITS_FILE, split_bits, write_bits

    rng = np.random.default_rng(0)
    shares = np.concatenate([0.2 * TOPIC_SHARES, 0.8 * TOPIC_SHARES])  # zh x 11 topics, en x 11 topics
    topic = rng.choice(STREAMS, size=documents, p=shares).astype(np.int8)
    lengths = np.clip(rng.lognormal(6.3, 1.0, documents), 16, 200_000).astype(np.int64)
    table = DocumentTable(lengths, {"topic": topic}, ("synthetic",), np.zeros(documents, np.int32),
                          np.arange(documents, dtype=np.int64), ("synthetic-100m",))
    streams = [Stream(table, StreamConfig(name=f"s{k}", seq_length=seq, filter=f"topic == {k}", seed=k))
               for k in range(STREAMS)]
    # each stream mid-epoch where a run of `steps` steps leaves it (samples in proportion to its tokens)
    tokens = np.array([s.tokens_per_epoch for s in streams], np.float64)
    positions = (steps * gbs * tokens / tokens.sum()).astype(np.int64)
    for s, i in zip(streams, positions):
        s.boundaries_many([i - 1])  # warm: a training rank has just packed around its position
    t0 = time.perf_counter()
    overlapping = overlapping_sets(streams)
    t1 = time.perf_counter()
    ledgers = stream_ledgers(streams, positions.tolist(), overlapping)
    t2 = time.perf_counter()
    tree, arrays = split_bits({n: led.to_dict() for n, led in ledgers.items()})
    size = write_bits(folder / BITS_FILE, arrays)
    t3 = time.perf_counter()
    v3 = 0
    for s, i in zip(streams, positions):  # version 3: one bitmap per stream, base64 text in the JSON
        packed = np.packbits(consumed(s, int(i)).bits).tobytes()
        v3 += len(base64.b64encode(zlib.compress(packed, 6)))
    trained = int(arrays["b0"].sum())
    return {"scale_documents": documents, "scale_streams": STREAMS, "scale_trained_in_epoch": trained,
            "scale_overlap_s": round(t1 - t0, 3), "scale_ledger_s": round(t2 - t1, 3),
            "scale_write_s": round(t3 - t2, 3), "scale_bits_bytes": size, "scale_v3_json_bytes": v3,
            "scale_bytes_per_m_docs": round(size * 1_000_000 / documents)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=10_000_000)
    ap.add_argument("--docs-per-topic", type=int, default=200)
    ap.add_argument("--global-batch-size", type=int, default=1024)
    ap.add_argument("--seq-length", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scale-documents", type=int, default=100_000_000)
    args = ap.parse_args()
    from cpt.trace import open_stages, trace_step

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prefix = _shard(tmp, args.docs_per_topic)
        t0 = time.perf_counter()
        steps, ledger_per_m = simulate(prefix, tmp / "run", args.samples, args.global_batch_size, args.seq_length)
        simulate_s = time.perf_counter() - t0
        deep = steps - 7
        cold, replay, pieces = [], [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            stages = open_stages([tmp / "run"])
            stages[0].data()  # rebuild the streams, load and verify the Blender state
            t1 = time.perf_counter()
            traced = trace_step(stages, deep)  # sample ids, stream pieces, document metadata
            t2 = time.perf_counter()
            cold.append(t2 - t0)
            replay.append(t1 - t0)
            pieces.append(t2 - t1)
        t0 = time.perf_counter()
        trace_step(stages, max(1, deep - 1000), dp_rank=3)
        warm = time.perf_counter() - t0
        del stages
        scale = ledgers_at_scale(args.scale_documents, tmp) if args.scale_documents else {}
    assert len(traced) == args.global_batch_size and all(s.pieces for s in traced)
    print(f"simulated {steps * args.global_batch_size:,} samples ({steps} steps) over {STREAMS} streams with "
          f"{CHANGES} weight changes in {simulate_s:.1f} s; trace of step {deep}: cold "
          f"{[round(c * 1e3) for c in cold]} ms (open + Blender replay {[round(c * 1e3) for c in replay]} ms, "
          f"ids + pieces + metadata {[round(c * 1e3) for c in pieces]} ms), warm {warm * 1e3:.0f} ms")
    print(json.dumps({"bench": "trace", "trace_ms": round(min(cold) * 1e3, 1), "warm_ms": round(warm * 1e3, 1),
                      "open_replay_ms": round(min(replay) * 1e3, 1), "ids_pieces_ms": round(min(pieces) * 1e3, 1),
                      "samples_drawn": steps * args.global_batch_size, "streams": STREAMS, "weight_changes": CHANGES,
                      "step": deep, "samples_in_step": args.global_batch_size,
                      "ledger_bytes_per_m_docs": round(ledger_per_m), **scale,
                      "loadavg": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
