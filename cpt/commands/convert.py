"""`cpt convert hf-to-mcore HF_DIR OUT_DIR --tp N --pp N` / `cpt convert mcore-to-hf CKPT_DIR OUT_DIR`.

Importing from HF is how continual pre-training starts: the output is a weights-only megatron
checkpoint (`training.load: OUT_DIR` in a recipe, with the `model:` section from OUT_DIR/model.yaml).
Exporting gives a folder transformers loads. A conversion error exits with status 2 and one line
naming the file, tensor or config key. megatron is imported only when a command runs.
"""
from __future__ import annotations

import argparse
import json
import sys

DTYPES = {"auto": None, "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="direction", metavar="DIRECTION", required=True)
    imp = sub.add_parser("hf-to-mcore", help="HF Llama/Mistral/Qwen2 folder -> megatron-core checkpoint")
    imp.add_argument("hf_dir", help="HF model folder (config.json + safetensors, sharded or not)")
    imp.add_argument("out_dir", help="checkpoint folder to write (must not exist unless --overwrite)")
    imp.add_argument("--tp", type=int, default=1, help="target tensor-parallel size (vocabulary padding, checks)")
    imp.add_argument("--pp", type=int, default=1, help="target pipeline-parallel size (checked against the layers)")
    imp.add_argument("--dtype", choices=sorted(DTYPES), default="auto", help="checkpoint dtype; auto = the source's")
    imp.add_argument("--make-vocab-size-divisible-by", type=int, default=128,
                     help="pad the vocabulary to a multiple of this x TP (megatron's rule)")
    imp.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    exp = sub.add_parser("mcore-to-hf", help="megatron-core checkpoint (import or training) -> HF folder")
    exp.add_argument("ckpt_dir", help="a checkpoint folder, or a run/checkpoints folder (its latest complete one)")
    exp.add_argument("out_dir", help="HF folder to write")
    exp.add_argument("--hf-reference", default=None,
                     help="HF folder (or import folder) whose config/tokenizer/generation config to use")
    exp.add_argument("--max-shard-size", type=float, default=5.0, help="GiB per safetensors shard")
    exp.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")


def run(args: argparse.Namespace) -> int:
    from megatron_ext.convert import ConversionError

    try:
        if args.direction == "hf-to-mcore":
            import torch

            from megatron_ext.convert import hf_to_mcore

            dtype = DTYPES[args.dtype]
            summary = hf_to_mcore(args.hf_dir, args.out_dir, tp=args.tp, pp=args.pp,
                                  dtype=getattr(torch, dtype) if dtype else None,
                                  make_vocab_size_divisible_by=args.make_vocab_size_divisible_by,
                                  overwrite=args.overwrite)
        else:
            from megatron_ext.convert import mcore_to_hf

            summary = mcore_to_hf(args.ckpt_dir, args.out_dir, hf_reference=args.hf_reference,
                                  max_shard_bytes=int(args.max_shard_size * 2**30), overwrite=args.overwrite)
    except (ConversionError, FileExistsError, FileNotFoundError) as exc:
        print(f"convert error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0
