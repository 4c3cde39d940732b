"""`cpt preprocess`: raw documents -> Megatron `.bin/.idx` token shards + metadata + manifest."""
from __future__ import annotations

import argparse


def add_tokenizer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer-model", "--tokenizer", dest="tokenizer_model", required=True,
                   help="local tokenizer.json, transformers folder, tiktoken rank file or SentencePiece .model")
    p.add_argument("--tokenizer-type", default=None,
                   help="hf | tiktoken | sentencepiece, or Megatron's HuggingFaceTokenizer | TikTokenizer | "
                        "SentencePieceTokenizer (detected from the file when omitted)")
    p.add_argument("--tiktoken-family", default=None, choices=["cl100k", "o200k", "llama3"],
                   help="pattern and special tokens for a tiktoken rank file (recognised when omitted)")
    p.add_argument("--tiktoken-pattern", default=None, choices=["v1", "v2"],
                   help="Megatron TikTokenizer JSON vocabularies: split pattern (default: the file's, else v2)")
    p.add_argument("--tiktoken-num-special-tokens", type=int, default=None,
                   help="Megatron TikTokenizer JSON vocabularies: ids reserved for special tokens (default 1000)")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="Megatron TikTokenizer JSON vocabularies: vocabulary size incl. specials (default 131072)")
    p.add_argument("--add-special-tokens", action=argparse.BooleanOptionalAction, default=True,
                   help="HF: apply the tokenizer's post-processor (BOS etc.) as AutoTokenizer does (default on)")
    p.add_argument("--eod-token", default=None, help="HF: token to use as EOD instead of the folder's eos_token")


def tokenizer_options(args: argparse.Namespace) -> dict:
    opts: dict = {}
    kind = args.tokenizer_type
    if args.tiktoken_family:
        opts["family"] = args.tiktoken_family
    for name in ("tiktoken_pattern", "tiktoken_num_special_tokens", "vocab_size"):
        value = getattr(args, name, None)
        if value is not None:
            opts[name.replace("tiktoken_", "")] = value
    if kind in (None, "hf", "HuggingFaceTokenizer"):
        if not args.add_special_tokens:
            opts["add_special_tokens"] = False
        if args.eod_token:
            opts["eod_token"] = args.eod_token
    return opts


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1, help="worker processes (output is identical for any number)")
    p.add_argument("--chunk-mb", type=float, default=8.0, help="input MB per chunk (unit of parallelism and resume)")
    p.add_argument("--shard-index", type=int, default=0, help="process slice i of --num-shards (then `cpt merge`)")
    p.add_argument("--num-shards", type=int, default=1,
                   help="number of input slices (with --executor: the number of tasks, merged at the end)")
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                   help="fail: stop at the first bad record (file:line, reason); skip: count and log to PREFIX.skipped.jsonl")
    p.add_argument("--max-doc-bytes", type=int, default=16 << 20, help="larger records are bad input (too_large)")
    p.add_argument("--lang-field", default="lang", help="input field with a language label, used when present")
    p.add_argument("--keep-fields", default="", help="comma-separated input fields to copy into the metadata "
                   "(synthetic QA from `cpt synth`: source_doc_id,generator,prompt_version,sample_index)")
    p.add_argument("--corpus-root", default=None,
                   help="folder doc ids are relative to (default: each input's parent folder)")
    p.add_argument("--engine", choices=["auto", "reference", "gigatoken"], default="auto",
                   help="auto: gigatoken where verified identical to the reference tokenizer (inputs over 4 MB)")
    p.add_argument("--no-progress", action="store_true", help="no progress line")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", nargs="+", required=True, help="files, folders or globs (jsonl[.gz|.zst], parquet, txt)")
    p.add_argument("--output-prefix", required=True, help="writes PREFIX.bin/.idx/.meta.parquet/.manifest.json")
    p.add_argument("--json-keys", nargs="+", default=["text"], help="text fields; several keys write PREFIX_KEY_document")
    p.add_argument("--megatron-names", action="store_true", help="name outputs PREFIX_KEY_document as Megatron does")
    p.add_argument("--append-eod", action=argparse.BooleanOptionalAction, default=True,
                   help="append the EOD token to every document (default on)")
    add_tokenizer_arguments(p)
    add_run_arguments(p)
    from cpt.launch.spec import add_executor_arguments

    add_executor_arguments(p, warm_up=True)


def config_from_args(args: argparse.Namespace, **overrides):
    from cpt.shards.pipeline import PreprocessConfig

    values = dict(
        inputs=list(args.input),
        output_prefix=args.output_prefix,
        tokenizer=args.tokenizer_model,
        tokenizer_kind=args.tokenizer_type,
        tokenizer_options=tokenizer_options(args),
        json_keys=list(args.json_keys),
        megatron_names=getattr(args, "megatron_names", False),
        append_eod=args.append_eod,
        workers=args.workers,
        chunk_mb=args.chunk_mb,
        shard_index=args.shard_index,
        num_shards=args.num_shards,
        on_error=args.on_error,
        max_doc_bytes=args.max_doc_bytes,
        lang_field=args.lang_field or None,
        keep_fields=[f for f in args.keep_fields.split(",") if f],
        corpus_root=getattr(args, "corpus_root", None),
        engine=args.engine,
        progress=not args.no_progress,
    )
    values.update(overrides)
    return PreprocessConfig(**values)


def run(args: argparse.Namespace) -> int:
    import sys

    from cpt.corpus.records import CorpusError
    from cpt.shards.format import ShardError
    from cpt.shards.pipeline import run_preprocess
    from cpt.tokenizers.base import TokenizerError

    from cpt.launch import LaunchError

    try:
        if getattr(args, "executor", None):
            _run_launched(args)
        else:
            run_preprocess(config_from_args(args))
    except (CorpusError, ShardError, TokenizerError, FileNotFoundError, ValueError, LaunchError) as e:
        print(f"cpt preprocess: error: {e}", file=sys.stderr)
        return 1
    return 0


def _run_launched(args: argparse.Namespace) -> None:
    """All --num-shards slices on --executor, then the assembly: the bytes of one process."""
    from cpt.launch import spec_from_args
    from cpt.shards.launched import run_launched

    if args.shard_index:
        raise ValueError("--executor runs every slice: give --num-shards N without --shard-index")
    spec = spec_from_args(args, progress=not args.no_progress)
    run_launched(config_from_args(args, num_shards=1), spec, args.num_shards)


def main(argv=None) -> int:
    """Run without the `cpt` dispatcher (`python -m cpt.commands.preprocess ...`)."""
    parser = argparse.ArgumentParser(prog="cpt preprocess", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
