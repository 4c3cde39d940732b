"""`cpt merge`: concatenate shards (e.g. the --shard-index outputs of one preprocess run), metadata included."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", nargs="+", required=True,
                   help="shard prefixes in order, or one folder (all *.manifest.json prefixes in it, sorted)")
    p.add_argument("--output-prefix", required=True, help="merged PREFIX.bin/.idx/.meta.parquet/.manifest.json")


def input_prefixes(inputs: list[str], suffix: str = ".manifest.json") -> list[str]:
    """Prefixes named directly, or found (sorted) in a single folder by the given file suffix."""
    from pathlib import Path

    if len(inputs) == 1 and Path(inputs[0]).is_dir():
        folder = Path(inputs[0])
        return sorted(str(p)[: -len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix))
    return list(inputs)


def run(args: argparse.Namespace) -> int:
    import sys
    import time

    import os

    from cpt.corpus.progress import Progress
    from cpt.shards.format import ShardError, bin_path
    from cpt.shards.merge import merge_shards

    t0 = time.perf_counter()
    prefixes = input_prefixes(args.input)
    total = sum(os.path.getsize(bin_path(p)) for p in prefixes if bin_path(p).is_file())
    progress = Progress("merge", total)
    try:
        manifest = merge_shards(
            prefixes, args.output_prefix,
            progress=lambda s: progress.update(bin_path(s.prefix).stat().st_size, len(s), s.n_tokens),
        )
    except (ShardError, OSError) as e:
        print(f"cpt merge: error: {e}", file=sys.stderr)
        return 1
    progress.close()
    stats = manifest["stats"]
    print(
        f"merge: {len(prefixes)} shards -> {args.output_prefix}: {manifest['n_documents']} documents, "
        f"{manifest['n_tokens']} tokens (read {stats['read']}, skipped {stats['skipped']}) "
        f"in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cpt merge", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
