"""What `cpt tag` and `cpt score` share: their input arguments, and running one annotator over them.

Inputs are either shard prefixes (a path whose `.idx` exists, or the `.idx`/`.bin`/`.meta.parquet`
file itself) - results go into each shard's metadata sidecar - or raw jsonl files/folders, whose
results go to `--out`. Mixing the two in one call is refused. `--shard-index/--num-shards` and
`--merge` scale a run out over many tasks (`cpt.annotate.scaleout`).
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any, Callable

from cpt.annotate.docs import read_corpora
from cpt.annotate.pipeline import annotate_corpus, annotate_shard, format_summary, merge_corpus, merge_shard
from cpt.annotate.scaleout import Slice, doc_range

SHARD_SUFFIXES = (".idx", ".bin", ".meta.parquet", ".manifest.json")


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="shard prefixes, or raw .jsonl/.jsonl.gz files or folders")
    parser.add_argument("--out", help="output table for raw inputs (.parquet or .jsonl); not used for shards")
    parser.add_argument("--text-key", default="text", help="jsonl field holding the text")
    parser.add_argument("--id-key", default=None, help="jsonl field holding the document id "
                        "(default: the corpus doc_id, a hash of the path under --corpus-root and the line)")
    parser.add_argument("--corpus-root", default=None,
                        help="raw inputs: folder doc ids are relative to (default: each input's parent folder)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (each loads the model)")
    parser.add_argument("--chunk-size", type=int, default=256,
                        help="documents per unit of work and per checkpoint write")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--shard-index", type=int, default=0,
                        help="annotate slice i of --num-shards into a part file (then --merge)")
    parser.add_argument("--num-shards", type=int, default=1, help="number of slices (tasks) of the input")
    parser.add_argument("--merge", action="store_true",
                        help="combine the part files of a --num-shards run into the sidecar / --out "
                             "(no model needed)")
    from cpt.launch.spec import add_executor_arguments

    add_executor_arguments(parser, warm_up=True)


def shard_prefix(path: str) -> Path | None:
    """The shard prefix `path` names, or None when it is not a shard."""
    for suffix in SHARD_SUFFIXES:
        if path.endswith(suffix):
            return Path(path[: -len(suffix)])
    return Path(path) if Path(f"{path}.idx").is_file() else None


def run_inputs(args: argparse.Namespace, factory: Callable[[], Any] | None, what: str, columns: tuple[str, ...],
               run_key: dict[str, Any]) -> int:
    """Annotate every input (or merge the parts of a sharded run); print each summary; return 0.

    `factory` may be None only with `--merge`.
    """
    part = Slice(args.shard_index, args.num_shards)
    run_key = {**run_key, "chunk_size": args.chunk_size}  # blocks decide the batches (see runner)
    prefixes = [shard_prefix(p) for p in args.inputs]
    progress = not args.no_progress
    if all(p is not None for p in prefixes):
        if args.out:
            raise ValueError("--out is for raw jsonl inputs; shard results go into PREFIX.meta.parquet")
        for prefix in prefixes:
            if args.merge:
                summary = merge_shard(prefix, columns, what)
            else:
                summary = annotate_shard(prefix, factory, columns, what, run_key, args.chunk_size,
                                         args.workers, progress, part)
            print(format_summary(summary))
        return 0
    if any(p is not None for p in prefixes):
        raise ValueError("inputs mix shard prefixes and raw files; annotate them in separate calls")
    if not args.out:
        raise ValueError("raw jsonl inputs need --out FILE.parquet (or .jsonl)")
    if args.merge:
        print(format_summary(merge_corpus(args.out, columns)))
        return 0

    def docs():
        return read_corpora(args.inputs, args.corpus_root, text_key=args.text_key, id_key=args.id_key)

    # the ids results are keyed by: a checkpoint made under another id rule is refused, not mixed in
    ids = {"id_key": args.id_key} if args.id_key else {"doc_id": "cpt.corpus.identity",
                                                         "corpus_root": args.corpus_root and str(Path(args.corpus_root).resolve())}
    run_key = {**run_key, "inputs": [str(Path(p).resolve()) for p in args.inputs], **ids}
    out, selected = Path(args.out), docs()
    if not part.whole:
        # a raw corpus has no size index: one reading pass to cut the same blocks in every task
        start, stop = doc_range([len(d.text) for d in docs()], args.chunk_size, part)
        out, selected = part.part_path(out), itertools.islice(docs(), start, stop)
        run_key["slice"] = [part.index, part.count]
    summary = annotate_corpus(selected, factory, columns, out, run_key, args.chunk_size, args.workers, progress)
    print(format_summary(summary))
    return 0


def check_merge_arguments(args: argparse.Namespace) -> None:
    """--merge takes no slice; a slice needs a valid index (checked before any model loads)."""
    if args.merge and (args.shard_index or args.num_shards != 1):
        raise ValueError("--merge combines all parts: give it without --shard-index/--num-shards")
    Slice(args.shard_index, args.num_shards)
