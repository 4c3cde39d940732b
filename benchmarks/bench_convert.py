#!/usr/bin/env python
"""Seconds and peak RSS to convert SmolLM2-135M-Instruct HF → megatron-core and back.

Each direction runs in its own child process (`--child`), which reports its peak RSS just after
its imports (the baseline: torch, safetensors, megatron where used) and at the end, so the figure
the conversion itself adds is `peak - baseline`, set against the model's size in bytes. Prints one
JSON line.

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


def child(direction: str, src: str, dst: str, tp: int) -> None:
    import torch  # noqa: F401  (part of the baseline)

    if direction == "hf-to-mcore":
        from megatron_ext.convert.to_mcore import hf_to_mcore as convert
        import megatron.core.dist_checkpointing  # noqa: F401  (baseline)

        kwargs = {"tp": tp}
    else:
        from megatron_ext.convert.to_hf import mcore_to_hf as convert

        kwargs = {}
    base = _rss_mb()
    start = time.perf_counter()
    convert(src, dst, **kwargs)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": round(seconds, 2), "baseline_rss_mb": round(base), "peak_rss_mb": round(_rss_mb())}))


def _run(direction: str, src: Path, dst: Path, tp: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", direction, str(src), str(dst), "--tp", str(tp)],
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
    p.add_argument("--keep", default=None, help="write the outputs here instead of a temporary folder")
    args = p.parse_args()
    if args.child:
        child(*args.child, tp=args.tp)
        return
    from cpt.assets import smollm2_hf_dir

    hf = smollm2_hf_dir()
    model_mb = sum(f.stat().st_size for f in hf.glob("*.safetensors")) / 2**20
    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        mcore, back = Path(tmp) / "mcore", Path(tmp) / "hf"
        imp = _run("hf-to-mcore", hf, mcore, args.tp)
        exp = _run("mcore-to-hf", mcore, back, args.tp)
    out = {"bench": "convert", "model": "SmolLM2-135M-Instruct fp32", "model_mb": round(model_mb), "tp": args.tp}
    for name, r in (("import", imp), ("export", exp)):
        out[name] = dict(r, added_rss_mb=r["peak_rss_mb"] - r["baseline_rss_mb"],
                         added_rss_over_model=round((r["peak_rss_mb"] - r["baseline_rss_mb"]) / model_mb, 2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
