#!/usr/bin/env python
"""Megatron-style entry script for `cpt synth` (same arguments): synthetic QA generation.

    python tools/synthesize_qa.py --input docs.jsonl --output qa.jsonl --generator openai \
        --base-url http://127.0.0.1:8000/v1 --model MODEL

It builds only the synth command's parser, so it works without the other commands' dependencies.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cpt.commands import synth  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="synthesize_qa.py", description=synth.__doc__.splitlines()[0])
    synth.add_arguments(parser)
    return synth.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
