"""Blending benchmark: ours against megatron-core's build_blending_indices, in one run.

1. 100M samples over 22 streams, same weights: megatron's helper vs our Blender.next_samples
   (kernel plus bookkeeping), outputs checked identical.
2. Re-weight, then the next 1M samples (what a mixture controller's change costs at a step).
3. Loader-side cost of one global batch (draw ids, locate every sample's tokens); the share of a
   training step needs the training engine and is left to the lead (loader_share: null here).
Last line: the JSON object of issue 3. Sizes can be lowered with --samples for a quick look.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from megatron.core.datasets import helpers_cpp
from megatron.core.datasets.utils import normalize

from cpt.sampling import Blender, DocumentTable, Stream, StreamConfig


def best_of(fn, repeat: int) -> tuple[float, float]:
    """Best wall time and best CPU time of `repeat` runs (CPU time is what a busy machine can't inflate)."""
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=100_000_000)
    ap.add_argument("--streams", type=int, default=22)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    n, k = args.samples, args.streams
    rng = np.random.default_rng(0)
    raw = (rng.random(k) + 0.05).tolist()
    names = [f"s{i}" for i in range(k)]

    result = {}

    def megatron():
        # as megatron's BlendedDataset._build_indices does: allocate, normalise, fill
        di, si = np.zeros(n, np.int16), np.zeros(n, np.int64)
        helpers_cpp.build_blending_indices(di, si, np.array(normalize(raw)), k, n, False)
        result["megatron"] = (di, si)

    def ours():
        b = Blender(names, raw)
        result["ids"] = b.next_samples(n)
        result["blender"] = b

    megatron_s, megatron_cpu = best_of(megatron, args.repeat)
    ours_s, ours_cpu = best_of(ours, args.repeat)
    ids, (di, si) = result.pop("ids"), result.pop("megatron")
    same = bool(np.array_equal(ids.stream, di) and np.array_equal(ids.index, si))
    del ids, di, si
    print(f"{n:,} samples, {k} streams: megatron {megatron_s:.3f}s wall / {megatron_cpu:.3f}s CPU, "
          f"ours {ours_s:.3f}s wall / {ours_cpu:.3f}s CPU, identical={same}")

    b = result["blender"]
    new = (rng.random(k) + 0.05).tolist()
    times, cpu = [], []
    for _ in range(5):
        t0, c0 = time.perf_counter(), time.process_time()
        b.set_weights(new)
        b.next_samples(1_000_000)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        new = new[1:] + new[:1]
    reweight_ms = min(times) * 1e3
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"re-weight + next 1M samples: {reweight_ms:.2f} ms wall, {min(cpu) * 1e3:.2f} ms CPU (best of 5; "
          f"load average {load:.1f} on {os.cpu_count()} CPUs: wall times include waiting for a CPU)")

    # loader side of one step: global batch 256 of seq 4096 from 22 streams over an in-memory table
    docs = 200_000
    table = DocumentTable.from_columns(rng.integers(50, 4000, docs), {"stream": rng.integers(0, k, docs)})
    streams = [Stream(table, StreamConfig(name=s, seq_length=4096, filter=f"stream == {i}")) for i, s in enumerate(names)]
    blender = Blender(names, raw)
    def locate(batch):
        return [streams[s].pieces(batch.index[batch.stream == s]) for s in np.unique(batch.stream)]

    for _ in range(3):  # warm the segments
        locate(blender.next_samples(256))
    steps, ids_s, locate_s = 20, 0.0, 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = blender.next_samples(256)
        t1 = time.perf_counter()
        locate(batch)
        ids_s, locate_s = ids_s + t1 - t0, locate_s + time.perf_counter() - t1
    print(f"loader-side cost per step of 256 x 4096-token samples: sample ids (main process) "
          f"{ids_s / steps * 1e3:.3f} ms, token locations (workers) {locate_s / steps * 1e3:.2f} ms; "
          "divide by the engine's step time for loader_share")
    if not same:
        raise SystemExit("outputs differ from megatron's")
    print(json.dumps({
        "bench": "blending", "ours_s": round(ours_s, 3), "megatron_s": round(megatron_s, 3),
        "ratio": round(ours_s / megatron_s, 3), "reweight_1m_ms": round(reweight_ms, 2), "loader_share": None,
    }))


if __name__ == "__main__":
    main()
