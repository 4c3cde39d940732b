#!/usr/bin/env python
"""Benchmark `cpt preprocess --workers 2` (whole process) against two references on the same text.

Corpus: ≈200 MB (--mb) of jsonl that never repeats a document: Chinese from People's Daily and
English from gensim's Wikipedia test articles, each document a fresh random combination of
shuffled sentences (fast tokenizers cache repeated text, so a repeated corpus flatters them).

For each tokenizer (SmolLM2's HF tokenizer.json, tiktoken cl100k) it measures, in this run:
  ours      `python -m cpt.commands.preprocess --workers 2` from process start to exit (reads the
            jsonl, validates, tokenizes, writes .bin/.idx/metadata/manifest)
  reference the library's own batch encode (HF `tokenizers` / `tiktoken`) of the same texts in 2
            processes, texts already in memory, no I/O: the ceiling of a reference-tokenizer pipeline
  gigatoken gigatoken encoding the same texts in memory with 2 threads (for SmolLM2, whose vocabulary
            gigatoken refuses as shipped, with the missing single bytes given placeholder ids)
and checks that our shard's tokens equal the reference's on every document (sha256 of the token
stream, each half compared).

Megatron-LM's `tools/preprocess_data_fast.py` cannot run here (it needs `megatron.training` and a
newer megatron-core than this Python allows), so the bench measures a lower bound of its whole-process
time instead: a fresh interpreter importing `megatron.core`'s indexed_dataset (the script imports that,
megatron's tokenizers and megatron.training) plus the gigatoken in-memory encode above (the script's
encoder; it also parses the jsonl and writes the shard, which the bound leaves out). `ours_vs_fast_floor`
>= 1 means cpt preprocess takes no longer than preprocess_data_fast.py could. The last line is one
JSON object.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _sentences() -> tuple[list[str], list[str]]:
    import re

    from cpt.assets import enwiki_articles, people_daily_sentences

    zh = [s for s in people_daily_sentences() if len(s) >= 8]
    split = re.compile(r"(?<=[.!?])\s+")
    en = []
    for _, text in enwiki_articles():
        for para in text.split("\n"):
            if len(para) > 40 and not para.startswith(("{", "|", "[[Category", "<", "!", "*", "=")):
                en.extend(s for s in split.split(para) if len(s) >= 20)
    return zh, en


def make_corpus(path: Path, megabytes: float, seed: int = 0) -> dict:
    """Write ≈`megabytes` of jsonl; every document is a new random draw of sentences (no repeats)."""
    zh, en = _sentences()
    rng = random.Random(seed)
    target = int(megabytes * 1e6)
    written = docs = 0
    seen: set[bytes] = set()
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            pool, joiner = (zh, "") if docs % 2 == 0 else (en, " ")
            text = joiner.join(rng.choices(pool, k=rng.randint(1, 6)))
            digest = hashlib.blake2b(text.encode(), digest_size=12).digest()
            if digest in seen:
                continue
            seen.add(digest)
            line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode())
            docs += 1
    return {"bytes": written, "docs": docs, "zh_sentences": len(zh), "en_sentences": len(en)}


def _load_texts(path: Path, part: int, parts: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    n = len(texts)
    return texts[part * n // parts: (part + 1) * n // parts]


def _reference_worker(args) -> tuple[float, int, str, int, float]:
    """Encode one half with the library itself (single thread), timing only the encode calls.

    Batches of 1,000 documents; the token stream (with EOD after each document, in the shard's
    dtype) is hashed between batches, outside the timed part, to compare with our shard.
    """
    kind, tok_path, corpus, part, dtype = args
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    texts = _load_texts(corpus, part, 2)
    from cpt.tokenizers import load_tokenizer

    eod = load_tokenizer(tok_path).eod
    if kind == "hf":
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(Path(tok_path) / "tokenizer.json"))

        def encode(batch):
            return [e.ids for e in tok.encode_batch_fast(batch)]
    else:
        import tiktoken

        from cpt.tokenizers.tiktoken_bpe import FAMILIES, read_ranks

        pattern, specials, _, _ = FAMILIES["cl100k"]
        enc = tiktoken.Encoding("cl100k", pat_str=pattern, mergeable_ranks=read_ranks(Path(tok_path)),
                                special_tokens=specials(0))

        def encode(batch):
            return enc.encode_ordinary_batch(batch, num_threads=1)
    h, elapsed, cpu, n_tokens = hashlib.sha256(), 0.0, 0.0, 0
    for i in range(0, len(texts), 1000):
        t0, c0 = time.perf_counter(), time.process_time()
        ids = encode(texts[i: i + 1000])
        elapsed += time.perf_counter() - t0
        cpu += time.process_time() - c0
        for x in ids:
            n_tokens += len(x)
            h.update(np.asarray(x + [eod], dtype=dtype).tobytes())
    return elapsed, n_tokens, h.hexdigest(), len(texts), cpu


def reference(kind: str, tok_path: str, corpus: Path, dtype: str) -> dict:
    ctx = get_context("spawn")
    with ctx.Pool(2) as pool:
        parts = pool.map(_reference_worker, [(kind, tok_path, corpus, i, dtype) for i in range(2)])
    seconds = max(p[0] for p in parts)  # the two halves run concurrently
    return {"seconds": seconds, "tokens": sum(p[1] for p in parts), "digests": [p[2] for p in parts],
            "half_docs": [p[3] for p in parts], "cpu_s": sum(p[4] for p in parts)}


def gigatoken_run(tokenizer, corpus: Path) -> dict:
    os.environ.setdefault("RAYON_NUM_THREADS", "2")
    from cpt.tokenizers.engine import _gigatoken_for

    texts = _load_texts(corpus, 0, 1)
    fast, placeholder = _gigatoken_for(tokenizer)
    t0, c0 = time.perf_counter(), time.process_time()
    out = fast.encode_batch(texts, parallel=True)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    n_tokens = int(np.asarray(out.layout.offsets.data)[-1])
    return {"seconds": seconds, "tokens": n_tokens, "placeholders": placeholder is not None, "cpu_s": cpu}


def ours(tok_path: str, corpus: Path, out: Path, engine: str) -> dict:
    cmd = [sys.executable, "-m", "cpt.commands.preprocess", "--input", str(corpus), "--output-prefix", str(out),
           "--tokenizer", tok_path, "--workers", "2", "--no-progress", "--engine", engine]
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"cpt preprocess failed:\n{proc.stderr}")
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    return {"seconds": seconds, "summary": summary, "log": proc.stderr.strip().splitlines(), "cpu_s": cpu}


def _bin_digests(prefix: Path, half_docs: int) -> list[str]:
    import cpt.shards as shards

    shard = shards.open(prefix)
    cut = int(shard.doc_offsets[half_docs]) * shard.dtype.itemsize
    data = Path(f"{prefix}.bin").read_bytes()
    return [hashlib.sha256(data[:cut]).hexdigest(), hashlib.sha256(data[cut:]).hexdigest()]


def megatron_import_seconds() -> float:
    """Wall time of a fresh interpreter that imports megatron-core's indexed_dataset and exits."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import megatron.core.datasets.indexed_dataset"], check=True)
    return time.perf_counter() - t0


def bench_one(name: str, kind: str, tok_path: str, corpus: Path, work: Path, docs: int) -> dict:
    from cpt.shards.format import optimal_dtype
    from cpt.tokenizers import load_tokenizer

    tok = load_tokenizer(tok_path)
    dtype = optimal_dtype(tok.vocab_size).name
    ref = reference(kind, tok_path, corpus, dtype)
    giga = gigatoken_run(tok, corpus)
    mine = ours(tok_path, corpus, work / name, "auto")
    identical = _bin_digests(work / name, ref["half_docs"][0]) == ref["digests"]
    fast_floor = megatron_import_seconds() + giga["seconds"]
    row = {
        "megatron_fast_floor_s": round(fast_floor, 2), "ours_vs_fast_floor": round(fast_floor / mine["seconds"], 3),
        "ours_s": round(mine["seconds"], 2), "ours_docs_per_s": round(docs / mine["seconds"], 1),
        "ours_tokens_per_s": round(ref["tokens"] / mine["seconds"], 1), "engine": mine["summary"]["engine"],
        "reference_s": round(ref["seconds"], 2), "reference_docs_per_s": round(docs / ref["seconds"], 1),
        "gigatoken_s": round(giga["seconds"], 2), "gigatoken_docs_per_s": round(docs / giga["seconds"], 1),
        "gigatoken_placeholders": giga["placeholders"],
        "ours_cpu_s": round(mine["cpu_s"], 2), "reference_cpu_s": round(ref["cpu_s"], 2),
        "gigatoken_cpu_s": round(giga["cpu_s"], 2),
        "tokens": ref["tokens"], "ids_identical_to_reference": identical,
        "ratio": round(ref["seconds"] / mine["seconds"], 3),
    }
    print(f"[{name}] ours (cpt preprocess --workers 2, whole process): {row['ours_s']} s, "
          f"{row['ours_docs_per_s']:,} docs/s, {row['ours_tokens_per_s'] / 1e6:.2f} M tok/s, engine {row['engine']}")
    print(f"[{name}] reference ({'HF tokenizers' if kind == 'hf' else 'tiktoken'} batch encode, 2 processes, "
          f"no I/O): {row['reference_s']} s, {row['reference_docs_per_s']:,} docs/s")
    print(f"[{name}] gigatoken (in memory, 2 threads): {row['gigatoken_s']} s, {row['gigatoken_docs_per_s']:,} docs/s"
          + (" (placeholder ids for missing bytes)" if giga["placeholders"] else ""))
    print(f"[{name}] preprocess_data_fast.py lower bound (megatron import + gigatoken encode): "
          f"{row['megatron_fast_floor_s']} s; floor/ours {row['ours_vs_fast_floor']}")
    print(f"[{name}] CPU seconds (user+sys, all processes/threads): ours {row['ours_cpu_s']} (whole process), "
          f"reference {row['reference_cpu_s']} (encode calls only), gigatoken {row['gigatoken_cpu_s']}")
    print(f"[{name}] our ids identical to the reference on every document: {identical}; "
          f"ours/reference speed ratio {row['ratio']}")
    for line in mine["log"]:
        print(f"[{name}]   {line}")
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=200.0, help="corpus size in MB (default 200)")
    p.add_argument("--tokenizers", nargs="+", default=["smollm2", "cl100k"], choices=["smollm2", "cl100k"])
    p.add_argument("--keep", default=None, help="keep the corpus and outputs in this folder")
    args = p.parse_args()
    from cpt.assets import cl100k_file, smollm2_hf_dir

    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-preprocess-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    t0 = time.perf_counter()
    info = make_corpus(corpus, args.mb)
    print(f"load average before: {os.getloadavg()[0]:.1f} (wall-clock figures depend on other work on this machine)")
    print(f"corpus: {info['bytes'] / 1e6:.1f} MB, {info['docs']:,} documents (none repeated), from "
          f"{info['zh_sentences']:,} People's Daily and {info['en_sentences']:,} Wikipedia sentences, "
          f"made in {time.perf_counter() - t0:.1f} s; {os.cpu_count()} CPUs")
    specs = {"smollm2": ("hf", str(smollm2_hf_dir())), "cl100k": ("tiktoken", str(cl100k_file()))}
    rows = {name: bench_one(name, *specs[name], corpus, work, info["docs"]) for name in args.tokenizers}
    main_row = rows.get("smollm2") or next(iter(rows.values()))
    result = {
        "bench": "preprocess",
        "corpus_mb": round(info["bytes"] / 1e6, 1), "docs": info["docs"],
        "ours_docs_per_s": main_row["ours_docs_per_s"],
        "hf_ceiling_docs_per_s": main_row["reference_docs_per_s"],
        "gigatoken_docs_per_s": main_row["gigatoken_docs_per_s"],
        "engine": main_row["engine"],
        "ratio": main_row["ratio"],
        "ids_identical": all(r["ids_identical_to_reference"] for r in rows.values()),
        "ours_cpu_s": main_row["ours_cpu_s"], "gigatoken_cpu_s": main_row["gigatoken_cpu_s"],
        "megatron_fast_floor_s": main_row["megatron_fast_floor_s"], "ours_vs_fast_floor": main_row["ours_vs_fast_floor"],
        "load_average_end": round(os.getloadavg()[0], 1),
        "by_tokenizer": rows,
    }
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
