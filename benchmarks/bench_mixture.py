"""Mixture-controller benchmark: the time of one update for 22 topics (issue 7's goal: < 1 ms).

One update is one `on_eval` call -- validation figures in, MixtureUpdate out, the "mixture" record
handed to ctx.log -- as the trainer makes it; the run state behind the HookContext is plain Python,
so the figure is the controller's own cost (writing the record to metrics.jsonl is the logger's).
topic_ppl runs with the paper's setting for Llama-3-SynE-like streams: two language groups
(ZH 6 topics, EN 16 topics) holding their totals, min/max share and max_change guards on. EXP3 runs
with full feedback. PPLs follow a seeded random walk prepared before timing. Reported: the median
over --updates updates of wall time (and its 90th percentile), and of the thread's CPU time, which a
busy shared machine inflates less. Last line: the JSON object of issue 7.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time

from cpt.mixture import EXP3Mixture, TopicPPLMixture
from cpt.train.hooks import EvalMetrics, HookContext, merge_update


def run_updates(hook, names: list[str], updates: int, seed: int) -> tuple[list[float], list[float]]:
    """Per-update wall and CPU times (s) of `updates` on_eval calls, applying each update as the trainer does."""
    rng = random.Random(seed)
    state = {"weights": {s: 1 / len(names) for s in names}, "step": 0}
    ctx = HookContext(
        stream_names=names,
        weights=lambda: dict(state["weights"]),
        samples=lambda: {s: 0 for s in names},
        exhausted=lambda: frozenset(),
        progress=lambda: (state["step"], state["step"] * 4096),
        log=lambda kind, figures, line: None,
        total_steps=updates * 100,
        tokens_per_step=4096,
        is_logging_rank=True,
    )
    loss = {s: 2.0 + rng.random() for s in names}
    metrics = []
    for i in range(updates + 1):
        loss = {s: v + rng.gauss(0, 0.02) for s, v in loss.items()}
        streams = {s: {"loss": v, "ppl": math.exp(v), "tokens": 10_000.0} for s, v in loss.items()}
        metrics.append(EvalMetrics(step=100 * (i + 1), consumed_tokens=0, loss=None, ppl=None, streams=streams))
    wall, cpu = [], []
    for em in metrics:
        state["step"] = em.step
        t0, c0 = time.perf_counter(), time.thread_time()
        update = hook.on_eval(ctx, em.step, em)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        if update is not None:
            state["weights"] = merge_update(state["weights"], update, "bench")
    return wall[1:], cpu[1:]  # the first topic_ppl eval only records PPLs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--updates", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    zh = [f"zh_{i}" for i in range(6)]
    en = [f"en_{i}" for i in range(16)]
    names = zh + en
    topic = TopicPPLMixture(alpha=0.5, normalize="max_abs", groups=[zh, en], min_share=0.005, max_share=0.2,
                            max_change=0.2)
    exp3 = EXP3Mixture(feedback="full", clock="steps", seed=args.seed)
    out = {"bench": "mixture"}
    for label, hook in (("topic_ppl", topic), ("exp3", exp3)):
        wall, cpu = run_updates(hook, names, args.updates, args.seed)
        ms = sorted(t * 1e3 for t in wall)
        cpu_ms = statistics.median(t * 1e3 for t in cpu)
        print(f"{label:10s} {len(names)} streams, {len(ms)} updates: median {statistics.median(ms):.4f} ms, "
              f"p90 {ms[int(0.9 * (len(ms) - 1))]:.4f} ms wall; median {cpu_ms:.4f} ms CPU")
        out[f"{label}_update_ms"] = round(statistics.median(ms), 4)
        out[f"{label}_update_cpu_ms"] = round(cpu_ms, 4)
    out["goal_ms"] = 1.0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
