"""`cpt score`: write `ppl` (perplexity under a causal LM) for every document.

The model is a local HF folder or one of our megatron checkpoints (a training `checkpoints/step_N`,
a `checkpoints`/run folder meaning its latest step, or a `cpt convert hf-to-mcore` import); the
latter is scored by `megatron_ext.scoring`, imported only then. Scale-out: `--shard-index i
--num-shards n` in n tasks, then `cpt score INPUTS --merge` (see `cpt.annotate.scaleout`).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cpt.annotate.perplexity import PerplexityAnnotatorFactory

MEGATRON_BACKEND = "megatron_ext.scoring:MegatronScorer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cpt.annotate.inputs import add_input_arguments

    parser.add_argument("--model", help="local HF causal LM folder, or a cpt megatron checkpoint "
                        "(step folder, checkpoints/run folder = latest, or an hf-to-mcore import); "
                        "not needed with --merge")
    parser.add_argument("--backend", default="auto",
                        help="auto (hf for an HF folder, megatron for a cpt checkpoint), hf (transformers), "
                             "megatron, vllm (prompt_logprobs), or package.module:callable returning a Scorer")
    parser.add_argument("--tokenizer", default=None,
                        help="HF tokenizer folder (default: the model's; for a megatron checkpoint, its import's hf/)")
    parser.add_argument("--max-length", type=int, default=2048,
                        help="context window in tokens (capped at the model's); longer documents are windowed")
    parser.add_argument("--stride", type=int, default=None,
                        help="window start step for long documents (default max-length/2): every token "
                             "after the first window keeps >= max-length - stride tokens of context")
    parser.add_argument("--max-batch-tokens", type=int, default=None,
                        help="padded tokens per forward pass (default 512 on CPU, a longer window alone; 65536 on GPU, "
                             "16384 megatron)")
    parser.add_argument("--max-doc-tokens", type=int, default=None,
                        help="score only the first N tokens of each document")
    parser.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: bf16 on GPU, fp32 on CPU)")
    add_input_arguments(parser)


def resolve_backend(model: str, backend: str, tokenizer: str | None) -> tuple[str, str | None]:
    """(backend, tokenizer folder) for `--model`: a megatron checkpoint gets the megatron scorer and,
    unless `--tokenizer` says otherwise, the tokenizer of the import it comes from."""
    if backend == "auto":
        if (Path(model) / "config.json").is_file():
            return "hf", tokenizer
        from cpt.train.checkpoint import resolve_load_path

        try:
            resolve_load_path(model)
        except FileNotFoundError:
            return "hf", tokenizer  # neither: the HF folder check names what is missing
        backend = "megatron"
    if backend != "megatron":
        return backend, tokenizer
    from megatron_ext.scoring import tokenizer_dir  # no megatron import until the model is built

    return MEGATRON_BACKEND, tokenizer or str(tokenizer_dir(model))


def annotator_factory(args: argparse.Namespace) -> PerplexityAnnotatorFactory:
    """The annotator a run of `args` loads, in its process through `cpt.annotate.model_cache` (or
    in each of its `--workers`): a launch's warm-up loads the same from the same arguments
    (`cpt.annotate.launched`)."""
    from cpt.annotate.perplexity import PerplexityAnnotatorFactory

    if not args.model:
        raise ValueError("--model is required (an HF causal LM folder or a cpt megatron checkpoint)")
    backend, tokenizer = resolve_backend(args.model, args.backend, args.tokenizer)
    return PerplexityAnnotatorFactory(args.model, backend, args.device, args.dtype, args.max_length,
                                      args.stride, args.max_batch_tokens, args.max_doc_tokens, tokenizer)


def run(args: argparse.Namespace) -> int:
    from cpt.annotate import model_cache
    from cpt.annotate.inputs import check_merge_arguments, run_inputs
    from cpt.annotate.launched import maybe_launch
    from cpt.annotate.perplexity import PerplexityAnnotator

    launched = maybe_launch("score", add_arguments, args, "ppl")
    if launched is not None:
        return launched
    check_merge_arguments(args)
    if args.merge:
        return run_inputs(args, None, "ppl", PerplexityAnnotator.columns, {})
    factory = annotator_factory(args)
    factory.check()
    run_key = {"annotator": "ppl", "model": str(args.model), "backend": factory.backend,
               "tokenizer": factory.tokenizer_dir, "max_length": args.max_length, "stride": args.stride,
               "max_doc_tokens": args.max_doc_tokens, "max_batch_tokens": args.max_batch_tokens, "dtype": args.dtype}
    # loaded when the first block needs it (a part committed earlier needs none), in this process's cache
    return run_inputs(args, model_cache.Shared(factory), "ppl", PerplexityAnnotator.columns, run_key)
