#!/usr/bin/env python
"""Megatron-LM's `tools/preprocess_data.py`, backed by `cpt preprocess`.

Takes Megatron's main flags and writes Megatron's file names ({output_prefix}_{key}_document.bin/.idx),
plus cpt's metadata sidecar and manifest beside them:

    python tools/preprocess_data.py --input corpus.jsonl --output-prefix data/my \
        --tokenizer-type HuggingFaceTokenizer --tokenizer-model path/to/hf_folder \
        --append-eod --workers 2

Differences: --split-sentences is refused (one sequence per document); --partitions and
--log-interval are accepted for compatibility (parallelism comes from --workers, which gives
byte-identical output for any value; progress is a line with docs/s, tokens/s and ETA); input may
also be a folder or glob of jsonl/jsonl.gz/jsonl.zst/parquet/txt. cpt's own flags (--on-error,
--shard-index/--num-shards, --keep-fields, ...) work here too.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpt.commands import preprocess  # noqa: E402

SUPPORTED = sorted(["HuggingFaceTokenizer", "TikTokenizer", "SentencePieceTokenizer",
                    "GPTSentencePieceTokenizer", "Llama2Tokenizer"])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("input data")
    g.add_argument("--input", nargs="+", required=True, help="jsonl file(s), folders or globs")
    g.add_argument("--json-keys", nargs="+", default=["text"], help="keys to extract from json")
    g.add_argument("--split-sentences", action="store_true", help="not supported (refused)")
    g.add_argument("--keep-newlines", action="store_true", help="only meaningful with --split-sentences")
    g = p.add_argument_group("tokenizer")
    g.add_argument("--tokenizer-type", required=True, choices=SUPPORTED)
    g.add_argument("--tokenizer-model", required=True, help="local tokenizer file or folder")
    g.add_argument("--tiktoken-family", default=None, choices=["cl100k", "o200k", "llama3"])
    g.add_argument("--tiktoken-pattern", default=None, choices=["v1", "v2"])
    g.add_argument("--tiktoken-num-special-tokens", type=int, default=None)
    g.add_argument("--vocab-size", type=int, default=None)
    g.add_argument("--add-special-tokens", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--eod-token", default=None)
    g.add_argument("--append-eod", action="store_true", help="append an <eod> token to the end of a document")
    g.add_argument("--vocab-file", default=None, help="not used: vocab/merges tokenizers are not supported")
    g.add_argument("--merge-file", default=None, help="not used: vocab/merges tokenizers are not supported")
    g = p.add_argument_group("output data")
    g.add_argument("--output-prefix", required=True, help="path to binary output file without suffix")
    g = p.add_argument_group("runtime")
    preprocess.add_run_arguments(g)
    g.add_argument("--partitions", type=int, default=1, help="accepted for compatibility; use --workers")
    g.add_argument("--log-interval", type=int, default=1000, help="accepted for compatibility")
    g.add_argument("--keep-sequential-samples", action="store_true", help="accepted: order is always kept")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.split_sentences:
        print("preprocess_data.py: --split-sentences is not supported: cpt writes one sequence per document",
              file=sys.stderr)
        return 2
    if args.vocab_file or args.merge_file:
        print("preprocess_data.py: --vocab-file/--merge-file tokenizers are not supported; pass a "
              f"--tokenizer-model of type {', '.join(SUPPORTED)}", file=sys.stderr)
        return 2
    args.megatron_names = True
    return preprocess.run(args)


if __name__ == "__main__":
    sys.exit(main())
