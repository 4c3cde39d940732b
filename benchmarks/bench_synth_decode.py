#!/usr/bin/env python
"""The transformers backend's decodes on the same requests, one run: `model.generate` vs the loop.

The requests are the science prompts `cpt sweep prepare` sends (prefilled templates, the first
snippet of every few gensim Wikipedia articles, as bench_synth_yield builds them), generated with
the sweep's sampling (160 new tokens, temperature 0.7, top_p 0.95) by SmolLM2-135M-Instruct:

    generate   model.generate per batch of --batch: every row computed until its batch's last ends
    prune      the decode loop over the same batches, each row leaving the batch when it ends
    refill     the decode loop with --batch slots, freed slots taken by waiting requests

Modes run in the order given, then reversed (--rounds 2), on one loaded model; per mode: wall
seconds, generated tokens per second, model calls, decode row-steps (rows computed per step, summed)
and the share of them that produced a kept token, prompt positions computed (padding included), the
load average before and after. The loop's modes sample each request from its own seed, so their
texts should match each other (`same_text_prune_refill`); `generate` samples per batch. The last
printed line is one JSON object.

    python benchmarks/bench_synth_decode.py --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpt.assets import smollm2_hf_dir  # noqa: E402
from cpt.synth.generators import ChatRequest, SamplingParams  # noqa: E402
from cpt.synth.generators.decode_loop import DecodeStats  # noqa: E402
from cpt.synth.generators.transformers_backend import DECODES, TransformersGenerator  # noqa: E402
from bench_synth_yield import build_work  # noqa: E402  (this folder: sys.path[0] of a script)


def one_mode(gen: TransformersGenerator, decode: str, requests: list[ChatRequest], params: SamplingParams):
    """Generate every request once with `decode`: the figures, and each request's text by key."""
    gen.decode, gen.stats = decode, DecodeStats()
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    done = list(gen.generate(requests, params))
    seconds = time.perf_counter() - start
    tokens = sum(c.n_tokens for c in done)
    useful = tokens - len(done)  # a row's first token comes from its prefill, the rest from decode steps
    figures = {"seconds": round(seconds, 1), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 2),
               "forwards": gen.stats.forwards, "row_steps": gen.stats.row_steps,
               "useful_row_step_share": round(useful / gen.stats.row_steps, 3) if gen.stats.row_steps else None,
               "prefill_tokens": gen.stats.prefill_tokens, "merges": gen.stats.merges,
               "stopped": sum(c.extra["finish_reason"] == "stop" for c in done),
               "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    return figures, {c.key: c.text for c in done}


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Per mode: the mean wall and tokens/s over its runs, the counts of its first run (they repeat)."""
    out = {}
    for decode, figs in runs.items():
        out[decode] = {**figs[0], "seconds": round(sum(f["seconds"] for f in figs) / len(figs), 1),
                       "tokens_per_s": round(sum(f["tokens_per_s"] for f in figs) / len(figs), 2),
                       "runs": [{"seconds": f["seconds"], "loadavg": f["loadavg"]} for f in figs]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--every", type=int, default=4, help="one snippet from every N-th article")
    ap.add_argument("--batch", type=int, default=8, help="generate's batch size; the loop's slots")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=2, help="torch threads while generating")
    ap.add_argument("--modes", default="generate,prune,refill", help=f"in this order, of {','.join(DECODES)}")
    ap.add_argument("--rounds", type=int, default=2, help="1: the modes once; 2: then again in reverse order")
    args = ap.parse_args()
    requests = [ChatRequest(t.key, t.messages, t.seed) for t in build_work(args.requests, args.every)]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.95)
    gen = TransformersGenerator(str(smollm2_hf_dir()), batch_size=args.batch, num_threads=args.threads)
    modes = args.modes.split(",")
    order = modes + modes[::-1] if args.rounds == 2 else modes
    runs: dict[str, list[dict]] = {}
    texts: dict[str, dict[str, str]] = {}
    for decode in order:
        figures, texts[decode] = one_mode(gen, decode, requests, params)
        runs.setdefault(decode, []).append(figures)
        print(f"{decode:>9}: {json.dumps(figures)}", flush=True)
    result = summarize(runs)
    speedups = {f"tokens_per_s_{m}_vs_generate": round(result[m]["tokens_per_s"] / result["generate"]["tokens_per_s"], 2)
                for m in result if m != "generate" and "generate" in result}
    same = None
    if "prune" in texts and "refill" in texts:
        same = sum(texts["prune"][k] == texts["refill"][k] for k in texts["prune"])
    print(json.dumps({"bench": "synth_decode", "model": "SmolLM2-135M-Instruct", "requests": len(requests),
                      "batch": args.batch, "threads": args.threads, "max_new_tokens": args.max_new_tokens,
                      "order": order, **result, **speedups, "same_text_prune_refill": same,
                      "cpus": os.cpu_count(), "loadavg_end": [round(x, 2) for x in os.getloadavg()]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
