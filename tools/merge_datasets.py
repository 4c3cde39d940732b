#!/usr/bin/env python
"""Megatron-LM's `tools/merge_datasets.py`, backed by `cpt merge`.

    python tools/merge_datasets.py --input DIR --output-prefix PREFIX

Merges every PREFIX.bin/.idx pair in DIR, in sorted order, as Megatron does. When the shards were
made by cpt (they have manifests), their metadata, skip logs and counts are merged too and the
tokenizer and options must agree; plain Megatron shards are merged as .bin/.idx only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="folder holding the .bin/.idx pairs to merge")
    p.add_argument("--output-prefix", required=True, help="merged output prefix (no suffix)")
    p.add_argument("--multimodal", action="store_true", help="not supported (refused)")
    return p


def main(argv: list[str] | None = None) -> int:
    from cpt.shards.format import ShardError
    from cpt.shards.merge import merge_plain, merge_shards

    args = build_parser().parse_args(argv)
    if args.multimodal:
        print("merge_datasets.py: --multimodal is not supported", file=sys.stderr)
        return 2
    folder = Path(args.input)
    if not folder.is_dir():
        print(f"merge_datasets.py: {folder} is not a folder", file=sys.stderr)
        return 2
    prefixes = sorted(str(p)[: -len(".idx")] for p in folder.iterdir() if p.name.endswith(".idx"))
    missing = [p for p in prefixes if not Path(f"{p}.bin").is_file()]
    if not prefixes or missing:
        print(f"merge_datasets.py: no .idx files in {folder}" if not prefixes else
              f"merge_datasets.py: {missing[0]}.bin is missing", file=sys.stderr)
        return 2
    with_manifest = [Path(f"{p}.manifest.json").is_file() for p in prefixes]
    try:
        if all(with_manifest):
            manifest = merge_shards(prefixes, args.output_prefix)
            n = manifest["n_documents"]
        elif not any(with_manifest):
            n = merge_plain(prefixes, args.output_prefix)
        else:
            print("merge_datasets.py: some shards have cpt manifests and some do not; merge like with like",
                  file=sys.stderr)
            return 2
    except ShardError as e:
        print(f"merge_datasets.py: {e}", file=sys.stderr)
        return 1
    print(f"merged {len(prefixes)} datasets ({n} documents) into {args.output_prefix}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
