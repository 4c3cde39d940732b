"""The data path at paper scale: stage 1 of Llama-3-SynE over a synthetic 100M-document shard set.

Synthetic shards, written in chunks (shards of --shard-docs documents, so the writer never holds
more than one shard): document lengths log-normal (mu, sigma below: mean ~900 tokens, a long tail,
as the demo corpus's lengths), int32 tokens in a sparse `.bin` (zeros: the file system holds no
blocks), metadata `doc_id`, `lang` (zh 20% of documents in `zh_web_*`, en in `en_web_*`), 11
topics, `ppl` log-normal. Manifests carry synthetic sha256 ids (the reader checks sizes and counts;
hashing terabytes of zeros proves nothing).

Recipe: stage 1's structure (recipes/llama3_synE/stage1_bilingual.yaml): 22 streams, lang x
topic, ZH:EN 2:8, ppl_asc on the Chinese streams, valid_holdout 0.0005; seq 8192, global batch
1024, micro batch 1, DP 64 simulated; the mixture changes every 500 steps (random weights: the
topic-PPL controller's decisions need a model; the data path only sees a weight history: here each
stream's weight moves within 0.5x..1.5x of the recipe's).

Each rank is a real process (PYTHONPATH = the code measured). Timings come from ranks run alone
(--solo-ranks, default DP ranks 0 and 63, one after the other: 8 processes on a 2-core machine
would time the scheduler); memory from --ranks run at once (one node's 8, sharing the cache):
  cold_build_s   one process builds the index cache (what `cpt data build-cache` does); it then
                 writes the data state of step 10,000 (weights changed every 500 steps)
  warm_start_s   a rank opens its streams (train + valid) from the cache and fetches step 0
  resume_s       a rank restarts at step 10,000: streams opened again, data state loaded
                 (verified by replay), step 10,000's micro-batches fetched
  loader_ms      blocking time of prepare_step + this rank's 16 fetches per step, prefetch on,
                 around a simulated compute of --compute-s per step (a weight change inside)
  faults         page faults per step in the loader window (minor, major: all threads of the rank)
  uss            peak private memory (psutil USS, sampled every 50 ms) of a rank; the node figure
                 is the sum over the concurrent rank processes (the mmap'd cache is shared)
Before each group of ranks the shards' `.bin` pages are dropped from the page cache
(POSIX_FADV_DONTNEED on this bench's own files), so every run reads its tokens from the device as
on a corpus far larger than the page cache, however often the bench is rerun (--keep-token-pages:
leave them); the index cache's pages stay where earlier runs left them.
"before" runs the same worker with another code tree (--before-code, e.g. `git archive` of the
commit before this change) at --before-documents (its ranks alone; its node figure is 8 x one
rank, computed: nothing is shared).

    python benchmarks/bench_scale.py --root /tmp/scale [--documents 100000000] [--before-code DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SEQ, GBS, MBS, DP = 8192, 1024, 1, 64
RESUME_STEP, CHANGE_EVERY = 10_000, 500
TRAIN_SAMPLES = -(-92_500_000_000 // (GBS * SEQ)) * GBS  # stage 1: 92.5B tokens
TOPICS = ["mathematics", "physics", "chemistry", "biology", "medicine_health", "computer_science", "engineering",
          "law_politics", "economics_business", "humanities_history", "other_general"]
TOPIC_P = np.array([6, 5, 4, 5, 7, 9, 6, 8, 10, 12, 28], dtype=np.float64) / 100
LEN_MU, LEN_SIGMA = 6.2, 1.0  # exp(mu + sigma^2 / 2) ~ 900 tokens
ZH_SHARE, HOLDOUT, EOD = 0.2, 0.0005, 128001


# ------------------------------------------------------------------------------------------ shards
def write_shard(prefix: Path, lang: str, n: int, seed: int) -> None:
    """One synthetic shard, written as cpt writes shards (manifest last)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cpt.shards.format import optimal_dtype, write_idx
    from cpt.shards.manifest import FORMAT, FORMAT_VERSION, write_manifest

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(LEN_MU, LEN_SIGMA, n), 16, 1 << 17).astype(np.int32)
    dtype = optimal_dtype(128256)
    tokens = int(lengths.sum(dtype=np.int64))
    with open(f"{prefix}.bin", "wb") as f:
        f.truncate(tokens * dtype.itemsize)  # sparse
    with open(f"{prefix}.idx", "wb") as f:
        write_idx(f, dtype, lengths)
    table = pa.table({
        "doc_id": pa.array(rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)),
        "source": pa.array(np.full(n, f"{prefix.name}.jsonl", dtype=object), pa.string()),
        "line": pa.array(np.arange(n, dtype=np.int64)),
        "offset": pa.array(np.full(n, -1, np.int64)),
        "lang": pa.array(np.full(n, lang, dtype=object), pa.string()),
        "n_tokens": pa.array(lengths.astype(np.int64)),
        "topic": pa.array(np.asarray(TOPICS, dtype=object)[rng.choice(len(TOPICS), n, p=TOPIC_P)], pa.string()),
        "ppl": pa.array(rng.lognormal(2.5, 0.5, n)),
    })
    pq.write_table(table, f"{prefix}.meta.parquet", compression="zstd", row_group_size=1 << 20)
    del table
    files = {k: {"size": os.path.getsize(f"{prefix}.{ext}"), "sha256": f"synthetic-{seed}-{k}"}
             for k, ext in (("bin", "bin"), ("idx", "idx"), ("meta", "meta.parquet"))}
    write_manifest(prefix, {"format": FORMAT, "format_version": FORMAT_VERSION, "complete": True,
                            "dtype": dtype.name, "n_documents": n, "n_sequences": n, "n_tokens": tokens,
                            "files": files, "tokenizer": None, "options": {"synthetic": True}})


def make_shards(root: Path, documents: int, shard_docs: int) -> dict[str, list[str]]:
    """zh_web_* and en_web_* shards under root (kept between runs: a shard with a manifest is done)."""
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[str]] = {}
    n_zh = int(round(documents * ZH_SHARE))
    for lang_i, (lang, n_lang) in enumerate((("zh", n_zh), ("en", documents - n_zh))):
        out[lang] = []
        for k, lo in enumerate(range(0, n_lang, shard_docs)):
            prefix = root / f"{lang}_web_{k:04d}"
            if not Path(f"{prefix}.manifest.json").is_file():
                write_shard(prefix, lang, min(shard_docs, n_lang - lo), seed=1000 * lang_i + k)
            out[lang].append(str(prefix))
    return out


def stream_specs(prefixes: dict[str, list[str]]) -> list[dict]:
    specs = []
    for lang, weight in (("zh", 2.0), ("en", 8.0)):
        for topic in TOPICS:
            spec = {"name": f"{lang}_{topic}", "prefixes": prefixes[lang], "weight": weight,
                    "filter": f'lang == "{lang}" and topic == "{topic}"'}
            if lang == "zh":
                spec["order"] = "ppl_asc"
            specs.append(spec)
    return specs


# ------------------------------------------------------------------------------------------ worker
class UssSampler:
    """Peak USS of this process, sampled in a thread."""

    def __init__(self, every: float = 0.05) -> None:
        import threading

        import psutil

        self.proc, self.peak, self.every = psutil.Process(), 0, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.every)

    def sample(self) -> int:
        uss = self.proc.memory_full_info().uss
        self.peak = max(self.peak, uss)
        self.peak_anon = max(getattr(self, "peak_anon", 0), _anonymous_bytes())
        return uss

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.sample())


def _anonymous_bytes() -> int:
    """Anonymous memory of this process (heap, arrays): USS minus file pages only it maps."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _faults() -> tuple[int, int]:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt, r.ru_majflt


def _open_data(cfg: dict):
    """(train BlendedSamples, valid BlendedSamples list) as cpt/train/run.py builds them."""
    import inspect

    from cpt.config import DataConfig, StreamSpec
    from cpt.train.stream_data import BlendedSamples, build_streams

    specs = [StreamSpec(**s) for s in cfg["specs"]]
    holdout = cfg["holdout"]
    data = DataConfig(streams=specs, valid_holdout=holdout, eod_token_id=EOD, num_workers=0)
    kw = {}
    if cfg.get("cache_dir") and "cache_dir" in inspect.signature(build_streams).parameters:
        kw = {"cache_dir": cfg["cache_dir"], "tables": {}}
    train_kw = {**kw, "samples": TRAIN_SAMPLES} if kw and "samples" in inspect.signature(build_streams).parameters else kw
    train = BlendedSamples(build_streams(specs, SEQ, "train", holdout, 0, **train_kw), {s.name: s.weight for s in specs},
                           SEQ, data, num_workers=0)
    valid = [BlendedSamples([s], [1.0], SEQ, data, num_workers=0)
             for s in build_streams(specs, SEQ, "valid", holdout, 0, **kw)]
    return train, valid


def _step(source, layout, step: int, rank: int) -> None:
    first = step * GBS
    source.prepare_step(first, first + GBS)
    mine = layout.global_indices(first, rank)
    for m in range(GBS // DP // MBS):
        source.fetch(mine[m * MBS:(m + 1) * MBS])


def _history_state(source, steps: int) -> dict:
    """The data state after `steps` steps with a weight change every CHANGE_EVERY steps (ids only)."""
    from cpt.sampling import Blender

    b = source.blender
    blender = Blender(b.stream_names, b.weights_at(0), capacities=b.state_dict()["capacities"],
                      fingerprints=b.state_dict()["fingerprints"])
    rng = np.random.default_rng(7)
    base = b.weights_at(0)
    for start in range(0, steps, CHANGE_EVERY):
        if start:  # the controller's moves: each stream's weight within 0.5x..1.5x of the recipe's
            blender.set_weights(base * rng.uniform(0.5, 1.5, blender.num_streams), effective_at=start * GBS)
        blender.next_samples(min(CHANGE_EVERY, steps - start) * GBS)
    return {"version": 2, "blender": blender.state_dict(), "offsets": {n: 0 for n in blender.stream_names}}


def worker(cfg: dict) -> dict:
    import gc

    from cpt.sampling import DataParallelLayout

    uss = UssSampler()
    layout = DataParallelLayout(global_batch_size=GBS, micro_batch_size=MBS, dp_size=DP)
    rank, out = cfg["rank"], {"rank": cfg["rank"]}
    t0 = time.perf_counter()
    train, valid = _open_data(cfg)
    if cfg["phase"] == "build":  # the cold build, then the state every rank resumes from
        out["cold_build_s"] = time.perf_counter() - t0
        out["uss_peak_mb"] = uss.stop() / 2**20
        out["anon_peak_mb"] = uss.peak_anon / 2**20
        Path(cfg["state"]).write_text(json.dumps(_history_state(train, RESUME_STEP)))
        return out
    _step(train, layout, 0, rank)
    out["warm_start_s"] = time.perf_counter() - t0
    state = json.loads(Path(cfg["state"]).read_text())
    train.close()
    del train, valid
    gc.collect()
    t1 = time.perf_counter()  # a restart at step 10,000
    train, valid = _open_data(cfg)
    train.load_state_dict(state)
    _step(train, layout, RESUME_STEP, rank)
    out["resume_s"] = time.perf_counter() - t1
    times = []
    faults0 = _faults()
    for step in range(RESUME_STEP + 1, RESUME_STEP + 1 + cfg["steps"]):
        if step == RESUME_STEP + 1 + cfg["steps"] // 2:  # a weight change inside the window
            train.set_weights(dict(zip(train.stream_names, np.linspace(1, 2, len(train.stream_names)))), step * GBS)
        t = time.perf_counter()
        _step(train, layout, step, rank)
        times.append(time.perf_counter() - t)
        time.sleep(cfg["compute_s"])  # the model's step, during which the next batch is prepared
    train.close()
    out["faults_per_step"] = [round(x / cfg["steps"], 1) for x in np.subtract(_faults(), faults0)]
    out["loader_ms_per_step"] = 1e3 * float(np.median(times))
    out["loader_ms_max"] = 1e3 * float(np.max(times))
    out["uss_peak_mb"] = uss.stop() / 2**20
    out["anon_peak_mb"] = uss.peak_anon / 2**20
    return out


# ------------------------------------------------------------------------------------------ driver
def drop_token_pages(shards: dict[str, list[str]]) -> None:
    """Evict the page-cache pages of the shards' `.bin` files (ours: no other file is touched)."""
    for prefix in (p for group in shards.values() for p in group):
        fd = os.open(f"{prefix}.bin", os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run_workers(code: Path, cfgs: list[dict]) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(c)], env=env,
                              stdout=subprocess.PIPE, text=True) for c in cfgs]
    results = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode:
            raise RuntimeError(f"worker failed with status {p.returncode}: {stdout[-2000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def measure(code: Path, shards: dict, cache_dir: str | None, args: argparse.Namespace, state: Path,
            node_ranks: list[int], solo_ranks: list[int]) -> dict:
    """Cold build (+ the resume state), then `node_ranks` as concurrent processes (memory: what one
    node holds), then each of `solo_ranks` alone (timings without 8 processes on this machine's cores)."""
    base = {"specs": stream_specs(shards), "cache_dir": cache_dir, "steps": args.steps, "compute_s": args.compute_s,
            "holdout": args.holdout, "state": str(state)}
    if args.warm_only:  # the cache and the state of an earlier run
        out = {"cold_build_s": None, "build_uss_peak_mb": None, "build_anon_peak_mb": None}
    else:
        out = run_workers(code, [{**base, "phase": "build", "rank": 0}])[0]
        out["build_uss_peak_mb"] = out.pop("uss_peak_mb")
        out["build_anon_peak_mb"] = out.pop("anon_peak_mb")
        del out["rank"]
    drop = (lambda: None) if args.keep_token_pages else (lambda: drop_token_pages(shards))
    drop()
    out["node"] = run_workers(code, [{**base, "phase": "rank", "rank": r} for r in node_ranks]) if node_ranks else []
    out["solo"] = []
    for r in solo_ranks:
        drop()
        out["solo"].append(run_workers(code, [{**base, "phase": "rank", "rank": r}])[0])
    return out


def summarize(m: dict) -> dict:
    solo, node = m["solo"], m["node"]
    out = {
        "warm_start_s": round(max(r["warm_start_s"] for r in solo), 2),
        "resume_s": round(max(r["resume_s"] for r in solo), 2),
        "rss_per_rank_mb": round(max(r["uss_peak_mb"] for r in solo + node), 1),
        "anon_per_rank_mb": round(max(r["anon_peak_mb"] for r in solo + node), 1),
        "loader_ms_per_step": round(max(r["loader_ms_per_step"] for r in solo), 2),
        "faults_per_step": max((r.get("faults_per_step", [0, 0]) for r in solo), key=lambda f: f[1]),
        "solo_ranks": [r["rank"] for r in solo],
    }
    if node:
        out["rss_node_8_ranks_mb"] = round(sum(r["uss_peak_mb"] for r in node) * 8 / len(node), 1)
        out["node_ranks"] = [r["rank"] for r in node]
        out["node_loader_ms_per_step"] = round(max(r["loader_ms_per_step"] for r in node), 2)
        out["node_resume_s"] = round(max(r["resume_s"] for r in node), 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--root", default="/tmp/bench_scale")
    p.add_argument("--documents", type=int, default=100_000_000)
    p.add_argument("--shard-docs", type=int, default=4_000_000)
    p.add_argument("--ranks", type=int, nargs="*", default=[0, 1, 2, 3, 4, 5, 6, 7],
                   help="DP ranks run as concurrent processes (one node's 8): the node's memory")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--compute-s", type=float, default=0.3)
    p.add_argument("--warm-only", action="store_true",
                   help="reuse the cache and resume state of an earlier run at this size (no cold build)")
    p.add_argument("--keep-token-pages", action="store_true",
                   help="do not drop the shards' .bin pages from the page cache before the ranks run")
    p.add_argument("--holdout", type=float, default=HOLDOUT, help="data.valid_holdout (stage 1: 0.0005)")
    p.add_argument("--before-code", help="code tree of the baseline (cpt/ with cpt._C built)")
    p.add_argument("--before-documents", type=int, default=2_000_000)
    p.add_argument("--solo-ranks", type=int, nargs="+", default=[0, 63],
                   help="DP ranks run alone, one after the other, for the timings")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    here = Path(__file__).resolve().parents[1]
    root = Path(args.root)
    t = time.perf_counter()
    shards = make_shards(root / f"shards_{args.documents}", args.documents, args.shard_docs)
    print(f"shards: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    cache = root / f"cache_{args.documents}"
    if cache.exists() and not args.warm_only:
        import shutil

        shutil.rmtree(cache)
    after = measure(here, shards, str(cache), args, root / f"state_{args.documents}.json", args.ranks, args.solo_ranks)
    print(json.dumps(after), file=sys.stderr)
    rnd = lambda x, n: None if x is None else round(x, n)  # noqa: E731
    result = {"bench": "scale", "documents": args.documents, "cold_build_s": rnd(after["cold_build_s"], 2),
              "build_uss_peak_mb": rnd(after["build_uss_peak_mb"], 1),
              "build_anon_peak_mb": rnd(after["build_anon_peak_mb"], 1), **summarize(after),
              "compute_s": args.compute_s}
    if args.before_code and not args.warm_only:
        small = make_shards(root / f"shards_{args.before_documents}", args.before_documents, args.shard_docs)
        before = measure(Path(args.before_code), small, None, args, root / f"state_before_{args.before_documents}.json",
                         [], args.solo_ranks)
        print(json.dumps(before), file=sys.stderr)
        b = summarize(before)
        b["rss_node_8_ranks_mb"] = round(b["rss_per_rank_mb"] * 8, 1)  # computed: nothing is shared
        b["bytes_per_document_per_rank"] = round(b["rss_per_rank_mb"] * 2**20 / args.before_documents, 1)
        result["before"] = {"documents": args.before_documents, **b}
    result["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
