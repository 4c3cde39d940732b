"""`cpt inspect PREFIX`: validate a shard and show counts, tokens by lang/source/topic, sample documents."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prefix", help="shard prefix (PREFIX.bin/.idx/...)")
    p.add_argument("--tokenizer-model", "--tokenizer", dest="tokenizer_model", default=None,
                   help="decode sample documents with this tokenizer (and refuse a shard made by another)")
    p.add_argument("--samples", type=int, default=3, help="documents to decode")
    p.add_argument("--chars", type=int, default=300, help="characters shown per decoded document")
    p.add_argument("--verify", action="store_true", help="also re-hash every file against the manifest")
    p.add_argument("--top", type=int, default=10, help="rows shown per breakdown")


def _breakdown(table, column: str, top: int) -> list[str]:
    import pyarrow.compute as pc

    if column not in table.column_names:
        return []
    grouped = table.group_by(column).aggregate([("n_tokens", "sum"), ("n_tokens", "count")])
    grouped = grouped.sort_by([("n_tokens_sum", "descending")])
    total = max(int(pc.sum(table["n_tokens"]).as_py() or 0), 1)
    lines = [f"tokens by {column}:"]
    for row in grouped.slice(0, top).to_pylist():
        lines.append(f"  {str(row[column]):<40} {row['n_tokens_count']:>10,} docs {row['n_tokens_sum']:>14,} tokens "
                     f"{100 * row['n_tokens_sum'] / total:5.1f}%")
    if grouped.num_rows > top:
        lines.append(f"  ... {grouped.num_rows - top} more")
    return lines


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    import cpt.shards as shards
    from cpt.shards.format import ShardError

    tokenizer = None
    if args.tokenizer_model:
        from cpt.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer_model)
    try:
        shard = shards.open(args.prefix, expect_tokenizer=tokenizer, verify_checksums=args.verify)
    except ShardError as e:
        print(f"cpt inspect: {e}", file=sys.stderr)
        return 1
    m = shard.manifest or {}
    tok = m.get("tokenizer", {})
    print(f"{shard.prefix}: {len(shard):,} documents, {shard.n_tokens:,} tokens, dtype {shard.dtype.name}")
    print(f"tokenizer: {tok.get('name')} ({tok.get('kind')}, vocab {tok.get('vocab_size')}, sha256 {str(tok.get('sha256'))[:12]})")
    if "stats" in m:
        print("preprocess stats: " + json.dumps(m["stats"], sort_keys=True))
    table = shard.metadata()
    print("metadata columns: " + ", ".join(table.column_names))
    for column in ("lang", "source", "topic"):
        for line in _breakdown(table, column, args.top):
            print(line)
    if tokenizer is not None:
        for i in range(min(args.samples, len(shard))):
            text = tokenizer.decode(shard[i].tolist())
            print(f"--- document {i} ({len(shard[i])} tokens, {table['source'][i].as_py()}:{table['line'][i].as_py()})")
            print(text[: args.chars] + ("…" if len(text) > args.chars else ""))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cpt inspect", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
