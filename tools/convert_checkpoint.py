#!/usr/bin/env python
"""Checkpoint conversion in Megatron-LM's `tools/checkpoint/convert.py` style, backed by `cpt convert`.

    python tools/convert_checkpoint.py --direction hf-to-mcore --load-dir HF_DIR --save-dir OUT \\
        --target-tensor-parallel-size 2 --target-pipeline-parallel-size 1
    python tools/convert_checkpoint.py --direction mcore-to-hf --load-dir CKPT --save-dir HF_OUT

Same conversion, same errors and summary line as the `cpt` command; only the flag names differ.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--direction", required=True, choices=["hf-to-mcore", "mcore-to-hf"])
    p.add_argument("--load-dir", required=True, help="source folder")
    p.add_argument("--save-dir", required=True, help="output folder")
    p.add_argument("--target-tensor-parallel-size", type=int, default=1, help="hf-to-mcore: TP")
    p.add_argument("--target-pipeline-parallel-size", type=int, default=1, help="hf-to-mcore: PP")
    p.add_argument("--make-vocab-size-divisible-by", type=int, default=128, help="hf-to-mcore: vocab padding unit")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="hf-to-mcore: dtype")
    p.add_argument("--hf-reference", default=None, help="mcore-to-hf: HF folder for config/tokenizer")
    p.add_argument("--max-shard-size", type=float, default=5.0, help="mcore-to-hf: GiB per safetensors shard")
    p.add_argument("--overwrite", action="store_true", help="replace --save-dir if it exists")
    return p


def main(argv: list[str] | None = None) -> int:
    from cpt.cli import main as cpt_main

    a = build_parser().parse_args(argv)
    cmd = ["convert", a.direction, a.load_dir, a.save_dir]
    if a.direction == "hf-to-mcore":
        cmd += ["--tp", str(a.target_tensor_parallel_size), "--pp", str(a.target_pipeline_parallel_size),
                "--make-vocab-size-divisible-by", str(a.make_vocab_size_divisible_by), "--dtype", a.dtype]
    else:
        cmd += ["--max-shard-size", str(a.max_shard_size)]
        if a.hf_reference:
            cmd += ["--hf-reference", a.hf_reference]
    if a.overwrite:
        cmd.append("--overwrite")
    return cpt_main(cmd)


if __name__ == "__main__":
    sys.exit(main())
