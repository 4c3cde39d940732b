"""What `cpt tag` and `cpt score` share: their input arguments, and running one annotator over them.

Inputs are either shard prefixes (a path whose `.idx` exists, or the `.idx`/`.bin`/`.meta.parquet`
file itself) - results go into each shard's metadata sidecar - or raw jsonl files/folders, whose
results go to `--out`. Mixing the two in one call is refused.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from cpt.annotate.docs import read_corpora
from cpt.annotate.pipeline import annotate_corpus, annotate_shard, format_summary

SHARD_SUFFIXES = (".idx", ".bin", ".meta.parquet", ".manifest.json")


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="shard prefixes, or raw .jsonl/.jsonl.gz files or folders")
    parser.add_argument("--out", help="output table for raw inputs (.parquet or .jsonl); not used for shards")
    parser.add_argument("--text-key", default="text", help="jsonl field holding the text")
    parser.add_argument("--id-key", default=None, help="jsonl field holding the document id "
                        "(default: doc_id or id when present, else a hash of file name and line)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (each loads the model)")
    parser.add_argument("--chunk-size", type=int, default=256,
                        help="documents per unit of work and per checkpoint write")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")


def shard_prefix(path: str) -> Path | None:
    """The shard prefix `path` names, or None when it is not a shard."""
    for suffix in SHARD_SUFFIXES:
        if path.endswith(suffix):
            return Path(path[: -len(suffix)])
    return Path(path) if Path(f"{path}.idx").is_file() else None


def run_inputs(args: argparse.Namespace, factory: Callable, what: str, run_key: dict[str, Any]) -> int:
    """Annotate every input; print each summary; return the process exit code."""
    prefixes = [shard_prefix(p) for p in args.inputs]
    progress = not args.no_progress
    if all(p is not None for p in prefixes):
        if args.out:
            raise SystemExit("--out is for raw jsonl inputs; shard results go into PREFIX.meta.parquet")
        for prefix in prefixes:
            summary = annotate_shard(prefix, factory, factory.columns, what, run_key, args.chunk_size,
                                     args.workers, progress)
            print(format_summary(summary))
        return 0
    if any(p is not None for p in prefixes):
        raise SystemExit("inputs mix shard prefixes and raw files; annotate them in separate calls")
    if not args.out:
        raise SystemExit("raw jsonl inputs need --out FILE.parquet (or .jsonl)")
    docs = read_corpora(args.inputs, text_key=args.text_key, id_key=args.id_key)
    summary = annotate_corpus(docs, factory, factory.columns, args.out,
                              {**run_key, "inputs": [str(Path(p).resolve()) for p in args.inputs]},
                              args.chunk_size, args.workers, progress)
    print(format_summary(summary))
    return 0
