#!/usr/bin/env python
"""Seconds and peak RSS to convert SmolLM2-135M-Instruct HF → megatron-core and back.

Each direction runs in its own child process (`--child`), which reports its peak RSS just after
its imports (the baseline: torch, safetensors, megatron where used) and its peaks during the
conversion: ru_maxrss (all resident pages, page cache of mapped files included) and sampled
RssAnon (anonymous memory, what decides whether it fits). `added_anon_mb` = anonymous peak minus
baseline, set against the model's size. The export holds one output shard (`--max-shard-mb`).
Prints one JSON line.

    python benchmarks/bench_convert.py [--tp 1] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class AnonPeak:
    """Peak anonymous resident memory (RssAnon), sampled every 5 ms by a thread. ru_maxrss also
    counts file-backed pages (memory-mapped inputs, the import's scratch maps): those are page cache
    the kernel reclaims, so RssAnon is what decides whether a conversion fits in memory."""

    def __init__(self) -> None:
        import threading

        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def now_kb() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_kb = max(self.peak_kb, self.now_kb())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kb


def child(direction: str, src: str, dst: str, tp: int, max_shard_mb: int) -> None:
    import torch  # noqa: F401  (part of the baseline)

    if direction == "hf-to-mcore":
        from megatron_ext.convert.to_mcore import hf_to_mcore as convert
        import megatron.core.dist_checkpointing  # noqa: F401  (baseline)

        kwargs = {"tp": tp}
    else:
        from megatron_ext.convert.to_hf import mcore_to_hf as convert

        kwargs = {"max_shard_bytes": max_shard_mb * 2**20}
    base, base_anon = _rss_mb(), AnonPeak.now_kb() / 1024
    sampler = AnonPeak()
    start = time.perf_counter()
    convert(src, dst, **kwargs)
    seconds = time.perf_counter() - start
    anon = sampler.stop() / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": round(seconds, 2), "baseline_rss_mb": round(base), "peak_rss_mb": round(_rss_mb()),
                      "baseline_anon_mb": round(base_anon), "peak_anon_mb": round(anon),
                      "writer_children_peak_rss_mb": round(children)}))


def _run(direction: str, src: Path, dst: Path, tp: int, max_shard_mb: int) -> dict:
    # A fixed mmap threshold: glibc otherwise raises it (up to 32 MiB) after the first large free, and
    # freed mid-size tensors then stay in the heap, so RssAnon would measure glibc's heap policy
    # (varying 0.02x-0.5x of this model between runs) rather than what the converter holds.
    # An 8B model's tensors are mostly above 32 MiB and go to mmap anyway.
    env = dict(os.environ, PYTHONPATH=str(REPO), MALLOC_MMAP_THRESHOLD_="1048576")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", direction, str(src), str(dst), "--tp", str(tp),
                           "--max-shard-mb", str(max_shard_mb)],
                          capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{direction} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(time.perf_counter() - start, 2)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", nargs=3, metavar=("DIRECTION", "SRC", "DST"), help=argparse.SUPPRESS)
    p.add_argument("--tp", type=int, default=1, help="target TP of the import")
    p.add_argument("--max-shard-mb", type=int, default=128, help="export shard size (the export holds one shard)")
    p.add_argument("--keep", default=None, help="write the outputs here instead of a temporary folder")
    args = p.parse_args()
    if args.child:
        child(*args.child, tp=args.tp, max_shard_mb=args.max_shard_mb)
        return
    from cpt.assets import smollm2_hf_dir

    hf = smollm2_hf_dir()
    model_mb = sum(f.stat().st_size for f in hf.glob("*.safetensors")) / 2**20
    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        mcore, back = Path(tmp) / "mcore", Path(tmp) / "hf"
        imp = _run("hf-to-mcore", hf, mcore, args.tp, args.max_shard_mb)
        exp = _run("mcore-to-hf", mcore, back, args.tp, args.max_shard_mb)
    out = {"bench": "convert", "model": "SmolLM2-135M-Instruct fp32", "model_mb": round(model_mb), "tp": args.tp,
           "max_shard_mb": args.max_shard_mb}
    for name, r in (("import", imp), ("export", exp)):
        added = r["peak_anon_mb"] - r["baseline_anon_mb"]
        out[name] = dict(r, added_anon_mb=added, added_anon_over_model=round(added / model_mb, 2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
