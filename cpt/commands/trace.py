"""`cpt trace RUN_DIR... --step N [--rank R] [--text]` / `cpt trace RUN_DIR... --doc DOC_ID`.

Which documents trained a step, or which steps trained a document, replayed from the stages'
checkpointed Blender history and streams (see cpt.trace): nothing is logged per step.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folders", nargs="+", metavar="RUN_DIR",
                   help="run folders (training.output_dir), one per stage of the run")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--step", type=int, help="list the samples of this step (1-based, counted across stages)")
    what.add_argument("--doc", metavar="DOC_ID", help="list the steps (and stages) that trained on this document")
    p.add_argument("--rank", type=int, default=None, help="--step: only this data-parallel rank's samples, "
                   "in the order it fetched them")
    p.add_argument("--dp-size", type=int, default=None,
                   help="--step: data-parallel size that ran the step (default: the one its checkpoint records)")
    p.add_argument("--text", action="store_true", help="--step: decode each piece's tokens (needs --tokenizer)")
    p.add_argument("--tokenizer", default=None, help="--text: the tokenizer the shards were made with")
    p.add_argument("--chars", type=int, default=200, help="--text: characters shown per piece")
    p.add_argument("--json", action="store_true", help="one JSON object per sample (or hit) instead of text")


def _check(args: argparse.Namespace) -> None:
    if args.doc is not None and (args.rank is not None or args.text or args.dp_size):
        raise ValueError("--rank, --dp-size and --text go with --step, not --doc")
    if args.text and not args.tokenizer:
        raise ValueError("--text needs --tokenizer (the tokenizer the shards were made with)")
    if args.step is not None and args.step < 1:
        raise ValueError(f"--step must be >= 1, got {args.step}")


def _decoder(tokenizer_path: str):
    from cpt import shards
    from cpt.tokenizers import load_tokenizer

    tokenizer, opened = load_tokenizer(tokenizer_path), {}

    def decode(piece: dict[str, Any]) -> str:
        shard = opened.get(piece["shard"])
        if shard is None:  # refuses a shard made by another tokenizer
            shard = opened[piece["shard"]] = shards.open(piece["shard"], expect_tokenizer=tokenizer)
        return tokenizer.decode(shard[piece["document"]][piece["start"]:piece["stop"]].tolist())

    return decode


def _piece_line(p: dict[str, Any]) -> str:
    where = f"{p.get('source', '?')}:{p.get('line', '?')}"
    extra = "".join(f" {k} {p[k]}" for k in ("topic", "ppl") if p.get(k) is not None)
    syn = p.get("synthetic")
    if syn:
        extra += (f" | synthetic: {syn.get('generator')} prompt {syn.get('prompt_version')} "
                  f"sample {syn.get('sample_index')} from doc {syn.get('source_doc_id')}")
    return (f"    {p['shard']}#{p['document']} tokens [{p['start']}, {p['stop']}) doc_id {p.get('doc_id')} "
            f"{where}{extra}")


def _print_step(samples, decode, chars: int) -> None:
    for s in samples:
        print(f"sample {s.sample} (stage {s.stage} #{s.position}) step {s.step} rank {s.dp_rank} "
              f"micro-batch {s.micro_batch} stream {s.stream}[{s.index}]")
        for p in s.pieces:
            print(_piece_line(p))
            if decode is not None:
                print("      " + json.dumps(decode(p)[:chars], ensure_ascii=False))


def run(args: argparse.Namespace) -> int:
    from cpt.trace import TraceError, open_stages, trace_doc, trace_step

    _check(args)
    try:
        stages = open_stages(args.folders)
        if args.doc is not None:
            hits = trace_doc(stages, args.doc)
            for h in hits:
                print(json.dumps(h) if args.json else
                      f"step {h['step']} stage {h['stage']} sample {h['sample']} stream {h['stream']}[{h['index']}] "
                      f"{h['shard']}#{h['document']} tokens [{h['start']}, {h['stop']})")
            if not args.json:
                print(f"doc {args.doc}: {len(hits)} piece(s) in {len({h['step'] for h in hits})} step(s)")
            return 0
        samples = trace_step(stages, args.step, args.rank, args.dp_size)
    except TraceError as exc:
        print(f"cpt trace: {exc}", file=sys.stderr)
        return 2
    if args.json:
        decode = _decoder(args.tokenizer) if args.text else None
        for s in samples:
            d = s.to_dict()
            if decode is not None:
                for p in d["pieces"]:
                    p["text"] = decode(p)
            print(json.dumps(d, ensure_ascii=False))
        return 0
    _print_step(samples, _decoder(args.tokenizer) if args.text else None, args.chars)
    return 0
