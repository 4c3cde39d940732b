#!/usr/bin/env python
"""Science QA as `cpt sweep prepare` generates it, before and after the generator changes, one run.

The same snippets (the first piece of every few gensim Wikipedia articles, so several disciplines;
disciplines by keywords) go through the whole `cpt synth` pipeline with SmolLM2-135M-Instruct on
this machine, once per arm, with the sweep's settings (2 pairs per snippet, 160 new tokens,
grounding 0.3, sampling at 0.7):

    before     batches of 8 in work-list order, the assistant turn starts afresh (no prefill),
               each batch through `model.generate`
    sorted     batches of --batch in prompt-length order, no prefill, `model.generate`: the
               throughput change alone
    prefill    the assistant turn prefilled with the template's "Question:", --batch slots of the
               decode loop (finished rows dropped, freed slots refilled): what ships
               (bench_synth_decode.py compares the decodes alone)

Reported per arm: wall seconds, generated tokens per second (the completions' own tokens, prefill
excluded), pairs kept per generation and every rejection reason; the load average before and after
each arm, as the machine is shared. The last printed line is one JSON object.

    python benchmarks/bench_synth_yield.py --threads 2
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpt.assets import enwiki_plain_articles, smollm2_hf_dir  # noqa: E402
from cpt.synth import pipeline, tasks  # noqa: E402
from cpt.synth.filters import FilterConfig  # noqa: E402
from cpt.synth.generators import SamplingParams  # noqa: E402
from cpt.synth.generators.transformers_backend import TransformersGenerator  # noqa: E402
from cpt.synth.snippets import Document, split_document  # noqa: E402
from bench_synth import keyword_science_tasks  # noqa: E402  (this folder: sys.path[0] of a script)


def build_work(n: int, every: int) -> list[tasks.Task]:
    """Science tasks of the first snippet of every `every`-th article that gets a discipline."""
    snips = []
    for i, (title, text) in enumerate(enwiki_plain_articles()):
        if i % every == 0:
            snips += split_document(Document(f"enwiki/{title}", text, "enwiki"), max_chars=1500, min_chars=200,
                                    max_snippets=1)
    return keyword_science_tasks(snips, n)


def without_prefill(work: list[tasks.Task]) -> list[tasks.Task]:
    """The same tasks with the assistant turn left to the model (the prompts before prefills)."""
    return [dataclasses.replace(t, messages=[m for m in t.messages if m["role"] != "assistant"]) for t in work]


def one_arm(work, gen: TransformersGenerator, params: SamplingParams, out: Path) -> dict:
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    summary = pipeline.run(work, gen, out, params, FilterConfig(min_grounding=0.3), progress_every_s=60)
    seconds = time.perf_counter() - start
    n = summary["generations_journaled"]
    return {"seconds": round(seconds, 1), "tokens": summary["tokens_generated_now"],
            "tokens_per_s": round(summary["tokens_generated_now"] / seconds, 2),
            "generations": n, "pairs_kept": summary["pairs_kept"],
            "pairs_per_generation": round(summary["pairs_kept"] / n, 3) if n else 0.0,
            "rejected": {k: v for k, v in sorted(summary["rejected"].items()) if v},
            "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snippets", type=int, default=24)
    ap.add_argument("--every", type=int, default=4, help="one snippet from every N-th article")
    ap.add_argument("--batch", type=int, default=16, help="batch size of the sorted and prefill arms")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=2, help="torch threads while generating")
    ap.add_argument("--arms", default="before,sorted,prefill", help="which arms, in this order")
    args = ap.parse_args()
    work = build_work(args.snippets, args.every)
    arms = {"before": (8, False, "generate", without_prefill(work)),
            "sorted": (args.batch, True, "generate", without_prefill(work)),
            "prefill": (args.batch, True, "refill", work)}
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.95)
    gen = TransformersGenerator(str(smollm2_hf_dir()), num_threads=args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.arms.split(","):
            gen.batch_size, gen.sort_by_length, gen.decode, arm_work = arms[label]
            results[label] = one_arm(arm_work, gen, params, Path(tmp) / f"{label}.jsonl")
            print(f"{label:>8}: {json.dumps(results[label])}", flush=True)
    ratio = None
    if "before" in results and "sorted" in results and results["before"]["tokens_per_s"]:
        ratio = round(results["sorted"]["tokens_per_s"] / results["before"]["tokens_per_s"], 2)
    print(json.dumps({
        "bench": "synth_yield", "model": "SmolLM2-135M-Instruct", "snippets": len(work),
        "disciplines": dict(sorted(Counter(t.discipline for t in work).items())), "batch": args.batch,
        "threads": args.threads, "max_new_tokens": args.max_new_tokens, **results,
        "tokens_per_s_sorted_vs_before": ratio, "cpus": os.cpu_count(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
