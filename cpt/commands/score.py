"""`cpt score`: write `ppl` (perplexity under a causal LM) for every document."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cpt.annotate.inputs import add_input_arguments

    parser.add_argument("--model", required=True, help="local HF causal LM folder")
    parser.add_argument("--backend", default="hf",
                        help="hf (transformers), vllm (prompt_logprobs), or package.module:callable "
                             "returning a Scorer (e.g. a megatron engine)")
    parser.add_argument("--max-length", type=int, default=2048,
                        help="context window in tokens (capped at the model's); longer documents are windowed")
    parser.add_argument("--stride", type=int, default=None,
                        help="window start step for long documents (default max-length/2): every token "
                             "after the first window keeps >= max-length - stride tokens of context")
    parser.add_argument("--max-batch-tokens", type=int, default=None,
                        help="padded tokens per forward pass (default 4096 on CPU, 65536 on GPU)")
    parser.add_argument("--max-doc-tokens", type=int, default=None,
                        help="score only the first N tokens of each document")
    parser.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: bf16 on GPU, fp32 on CPU)")
    add_input_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from cpt.annotate.inputs import run_inputs
    from cpt.annotate.modelfiles import check_model_dir
    from cpt.annotate.perplexity import PerplexityAnnotatorFactory

    check_model_dir(args.model, "causal LM")
    factory = PerplexityAnnotatorFactory(args.model, args.backend, args.device, args.dtype, args.max_length,
                                         args.stride, args.max_batch_tokens, args.max_doc_tokens)
    run_key = {"annotator": "ppl", "model": str(args.model), "backend": args.backend,
               "max_length": args.max_length, "stride": args.stride, "max_doc_tokens": args.max_doc_tokens}
    return run_inputs(args, factory, "ppl", run_key)
