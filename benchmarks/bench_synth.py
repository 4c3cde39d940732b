#!/usr/bin/env python
"""Synthetic QA throughput: batched generation against one request at a time, same model, one run.

Real snippets (the Lee news corpus shipped with gensim, disciplines by keywords) go through the
whole `cpt synth` pipeline twice with the same model and settings: once with `--batch-size B`
(transformers backend) or `--concurrency B` (openai backend), once with 1. Reported: pairs kept
per second and generated tokens per second for each, and the speed-up. Both runs generate the same number of tokens per prompt
unless a sequence ends early (sampling is seeded per batch, so texts differ between the runs).
The last printed line is one JSON object.

    python benchmarks/bench_synth.py                      # SmolLM2-135M-Instruct on this machine
    python benchmarks/bench_synth.py --generator openai --base-url http://127.0.0.1:8000/v1 --model NAME
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpt.assets import gensim_test_data, smollm2_hf_dir  # noqa: E402
from cpt.synth import classify, disciplines, pipeline, prompts, tasks  # noqa: E402
from cpt.synth.filters import FilterConfig  # noqa: E402
from cpt.synth.generators import SamplingParams, build_generator  # noqa: E402
from cpt.synth.snippets import Document, split_document  # noqa: E402


def build_work(n: int) -> list[tasks.Task]:
    lines = gensim_test_data("lee_background.cor").read_text(encoding="utf-8", errors="replace").splitlines()
    snips = []
    for i, line in enumerate(lines):
        snips += split_document(Document(f"lee{i}", line, "lee_background.cor"), max_chars=800, min_chars=300,
                                max_snippets=1)
    return keyword_science_tasks(snips, n)


def keyword_science_tasks(snips: list, n: int) -> list[tasks.Task]:
    """Science tasks (one sample, two pairs each) of the first `n` snippets the keyword filter
    gives a discipline (the synth benches' work list: no tagger model to load)."""
    found = tasks.assign_disciplines(snips, "keywords", Counter(), classify.KeywordFilter(min_hits=1, min_margin=0))
    kept = [(s, d) for s, d in zip(snips, found) if d is not None][:n]
    templates = {d: prompts.load_template(d) for d in disciplines.discipline_names()}
    return tasks.science_tasks([s for s, _ in kept], [d for _, d in kept], templates, samples=1, n_pairs=2)


def one_run(work, generator, params, out: Path) -> dict:
    start = time.perf_counter()
    summary = pipeline.run(work, generator, out, params, FilterConfig(min_grounding=0.3), progress_every_s=30)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "pairs": summary["pairs_kept"],
            "tokens": summary["tokens_generated_now"],
            "pairs_per_s": round(summary["pairs_kept"] / seconds, 3),
            "tokens_per_s": round(summary["tokens_generated_now"] / seconds, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8, help="batch size (transformers) or concurrency (openai)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--generator", choices=["transformers", "openai"], default="transformers")
    ap.add_argument("--model", default=None)
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--threads", type=int, default=None, help="transformers on CPU: torch threads")
    ap.add_argument("--temperature", type=float, default=0.7, help="seeded per request; 0 = greedy")
    args = ap.parse_args()
    model = args.model or str(smollm2_hf_dir())
    work = build_work(args.prompts)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, width in (("batched", args.batch), ("one_at_a_time", 1)):
            gen = build_generator(args.generator, model, batch_size=width, concurrency=width,
                                  base_url=args.base_url, num_threads=args.threads)
            results[label] = one_run(work, gen, params, Path(tmp) / f"{label}.jsonl")
            gen.close()
            print(f"{label:>14}: {results[label]}", flush=True)
    b, s = results["batched"], results["one_at_a_time"]
    print(json.dumps({
        "bench": "synth", "generator": args.generator, "model": Path(model).name, "prompts": len(work),
        "batch": args.batch, "max_new_tokens": args.max_new_tokens,
        "batched": b, "one_at_a_time": s,
        "speedup_tokens_per_s": round(b["tokens_per_s"] / s["tokens_per_s"], 2) if s["tokens_per_s"] else None,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
