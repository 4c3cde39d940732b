"""The `cpt` console script.

Each sub-command lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`;
the table below maps names to those modules, imported only when the command runs, so `cpt --help`
stays fast (importing megatron.core alone takes ~9 s). This is the only module in `cpt` allowed to
reach `megatron_ext` (through the command modules it names).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

# name -> (module implementing add_arguments/run, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("cpt.commands.synth", "synthesize QA pairs (science from snippets, code from problems) with an LLM"),
    "train": ("cpt.commands.train", "train a recipe (alone or under torchrun)"),
    "demo": ("cpt.commands.demo", "run the end-to-end demo on this machine"),
    "preprocess": ("cpt.commands.preprocess", "tokenize raw documents into Megatron .bin/.idx shards + metadata"),
    "merge": ("cpt.commands.merge", "merge shards (e.g. the outputs of --shard-index runs) into one"),
    "inspect": ("cpt.commands.inspect", "counts, tokens by lang/source/topic and sample documents of a shard"),
    "tag-train": ("cpt.commands.tag_train", "fine-tune a topic classifier (labelled or bootstrapped data)"),
    "tag": ("cpt.commands.tag", "write topic / topic_conf for documents of shards or raw jsonl"),
    "convert": ("cpt.commands.convert", "convert checkpoints: HF Llama-family <-> megatron-core (TP/PP, vocab padding)"),
    "score": ("cpt.commands.score", "write ppl (causal-LM perplexity) for documents of shards or raw jsonl"),
    "eval": ("cpt.commands.eval", "evaluate a model: lm-evaluation-harness tasks, per-stream held-out perplexity"),
    "report": ("cpt.commands.report", "plots and a markdown/JSON summary of run folders (one per stage)"),
    "trace": ("cpt.commands.trace", "which documents trained a step, or which steps trained a document"),
    "sweep": ("cpt.commands.sweep", "proxy experiments: arms x seeds of a recipe, then means, CIs, paired differences"),
    "data": ("cpt.commands.data", "build a recipe's on-disk stream index cache ahead of a job (build-cache)"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every command with its options; with `only`, the other commands are listed without their
    options, so that running one command imports only its own module (a sweep starts several
    processes per run: each would otherwise import all of them)."""
    parser = argparse.ArgumentParser(prog="cpt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if only is None or name == only:
            importlib.import_module(module).add_arguments(p)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The command an argument list names (its first word when that is a command), else None."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(command_of(argv))
    args = parser.parse_args(argv)
    from cpt.launch.spec import LaunchError

    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (ValueError, OSError, LaunchError) as exc:
        # Bad input (a value, a file) reaches the user as one line; the commands' own messages
        # name the file, line or field. CPT_TRACEBACK=1 shows where it was raised.
        if os.environ.get("CPT_TRACEBACK"):
            raise
        print(f"cpt {args.command}: error: {exc}", file=sys.stderr)
        return 2


def task(argv: list[str]) -> dict:
    """A sub-command as a launched task (`cpt.launch`): one slice, a merge, a sweep arm."""
    code = main(argv)
    if code != 0:
        from cpt.launch import TaskFailed

        raise TaskFailed(f"cpt {argv[0]} exited with status {code} (its error is in this task's log)")
    return {"argv": list(argv)}


if __name__ == "__main__":
    sys.exit(main())
