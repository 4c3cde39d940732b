"""`cpt tag`: write `topic` and `topic_conf` for every document with a trained topic classifier.

Scale-out: `--shard-index i --num-shards n` in n tasks, then `cpt tag INPUTS --merge` (see
`cpt.annotate.scaleout`).
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cpt.annotate.tagging import TopicAnnotatorFactory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cpt.annotate.inputs import add_input_arguments

    parser.add_argument("--model", help="classifier folder written by `cpt tag-train` (not needed with --merge)")
    parser.add_argument("--taxonomy", default=None,
                        help="taxonomy file the classifier must match (default: the one stored in --model)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="tokens of each document the classifier reads (default: its training length)")
    parser.add_argument("--batch-size", type=int, default=64, help="documents per forward pass")
    parser.add_argument("--encoder", default=None,
                        help="refuse to run unless --model was trained with this encoder (minilm, use-m3, hf)")
    add_input_arguments(parser)


def annotator_factory(args: argparse.Namespace) -> TopicAnnotatorFactory:
    """The annotator a run of `args` loads, in its process through `cpt.annotate.model_cache`: a
    launch's warm-up loads the same from the same arguments (`cpt.annotate.launched`)."""
    from cpt.annotate.tagging import TopicAnnotatorFactory

    if not args.model:
        raise ValueError("--model is required (a classifier folder written by `cpt tag-train`)")
    return TopicAnnotatorFactory(args.model, args.taxonomy, args.device, args.max_length, args.batch_size,
                                 args.encoder)


def run(args: argparse.Namespace) -> int:
    import sys

    from cpt.annotate import model_cache
    from cpt.annotate.inputs import check_merge_arguments, run_inputs
    from cpt.annotate.runner import Ready
    from cpt.annotate.launched import maybe_launch
    from cpt.annotate.tagging import TopicAnnotator

    launched = maybe_launch("tag", add_arguments, args, "topic")
    if launched is not None:
        return launched
    check_merge_arguments(args)
    if args.merge:
        return run_inputs(args, None, "topic", TopicAnnotator.columns, {})
    factory = annotator_factory(args)
    annotator = model_cache.load(factory)  # here: a bad folder, taxonomy or encoder fails before any work
    print(f"cpt tag: encoder {annotator.classifier.encoder.name}", file=sys.stderr)
    if args.workers == 1:
        factory = Ready(annotator)
    run_key = {"annotator": "topic", "model": str(args.model), "max_length": args.max_length,
               "batch_size": args.batch_size}
    return run_inputs(args, factory, "topic", TopicAnnotator.columns, run_key)
