"""`cpt preprocess`: plan the input into chunks, build the missing chunks in parallel, merge them.

Determinism: chunk boundaries depend only on the input files and --chunk-mb, each chunk's bytes only
on its records, and the final shard is the chunks concatenated in plan order; so `--workers` does not
change a byte, a resumed run equals an uninterrupted one, and `--shard-index/--num-shards` outputs
merged with `cpt merge` equal one run. Resumption: finished chunks live in `PREFIX.cpt-work/` with a
plan fingerprint (inputs with sizes and mtimes, options, tokenizer hash); a rerun with the same
fingerprint keeps them, any other run starts afresh. The work folder is removed at the end.
"""
from __future__ import annotations

import glob
import hashlib
import json
import multiprocessing as mp
import queue as queue_mod
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cpt.corpus.files import list_inputs
from cpt.corpus.plan import Chunk, chunks_from_json, chunks_to_json, make_plan, plan_fingerprint, shard_slice
from cpt.corpus.progress import Progress
from cpt.corpus.records import Fields
from cpt.shards.build import Job, build_claimed, chunk_dir, committed, init_pool_worker, init_worker
from cpt.shards.format import optimal_dtype
from cpt.shards.manifest import write_json_atomic
from cpt.shards.merge import ShardMerger
from cpt.shards.metadata import RESERVED, schema_for
from cpt.shards.writer import ShardWriter

WORK_VERSION = 1
# engine=auto: below this much input, loading and probing gigatoken costs more than it saves.
AUTO_FAST_MIN_BYTES = 4 << 20
# What a run writes beside PREFIX (temporary names start the same way).
_OUR_SUFFIXES = ("bin", "idx", "meta.parquet", "manifest.json", "skipped.jsonl", "summary.json", "cpt-work",
                 "launch")


@dataclass(kw_only=True)
class PreprocessConfig:
    inputs: list[str]
    """Files, folders or globs of jsonl / jsonl.gz / jsonl.zst / parquet / txt."""
    output_prefix: str
    """Output path prefix; one key writes PREFIX.bin/.idx/.meta.parquet/.manifest.json."""
    tokenizer: str
    """Local tokenizer file or folder."""
    tokenizer_kind: str | None = None
    """hf / tiktoken / sentencepiece (or a Megatron --tokenizer-type name); detected when None."""
    tokenizer_options: dict[str, Any] = field(default_factory=dict)
    """Backend options: add_special_tokens, eod_token (hf); family (tiktoken)."""
    json_keys: list[str] = field(default_factory=lambda: ["text"])
    """Text fields to tokenize; each key gets its own shard."""
    megatron_names: bool = False
    """Name outputs {prefix}_{key}_document like Megatron (always so with several keys)."""
    append_eod: bool = True
    """Append the tokenizer's EOD id to every document."""
    workers: int = 1
    """Worker processes (the output is identical for any number)."""
    chunk_mb: float = 8.0
    """Input megabytes per chunk: the unit of parallel work and of resumption."""
    shard_index: int = 0
    """Which slice of the input to process (with num_shards)."""
    num_shards: int = 1
    """Number of slices the input is split into (Slurm arrays, Ray tasks)."""
    on_error: str = "fail"
    """fail: stop at the first bad record with file:line; skip: skip, count and log it."""
    max_doc_bytes: int = 16 << 20
    """Records larger than this are bad input (reason too_large)."""
    lang_field: str | None = "lang"
    """Input field holding a language label, used when present."""
    keep_fields: list[str] = field(default_factory=list)
    """Input fields copied (as strings) into the metadata."""
    corpus_root: str | None = None
    """Folder that documents' `source` (and so their doc_id) is relative to; None: each input's parent."""
    engine: str = "auto"
    """auto: gigatoken where verified exact (inputs over 4 MB), else the reference; reference; gigatoken."""
    progress: bool = True
    """Print a progress line on stderr."""

    def __post_init__(self) -> None:
        if self.on_error not in ("fail", "skip"):
            raise ValueError(f"on_error must be 'fail' or 'skip', got {self.on_error!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if not self.json_keys:
            raise ValueError("json_keys must name at least one field")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"shard_index must be in [0, num_shards); got {self.shard_index} of {self.num_shards}")
        clash = RESERVED.intersection(self.keep_fields)
        if clash:
            raise ValueError(f"keep_fields {sorted(clash)} clash with base metadata columns; rename them")
        if self.chunk_mb <= 0 or self.max_doc_bytes <= 0:
            raise ValueError("chunk_mb and max_doc_bytes must be positive")

    def output_for(self, key: str) -> str:
        if self.megatron_names or len(self.json_keys) > 1:
            return f"{self.output_prefix}_{key}_document"
        return self.output_prefix


def _fingerprint(cfg: PreprocessConfig, files, tokenizer_sha: str) -> dict[str, Any]:
    options = {k: v for k, v in asdict(cfg).items() if k not in ("workers", "progress", "engine")}
    return {"version": WORK_VERSION, "options": options, "tokenizer": tokenizer_sha, "files": plan_fingerprint(files)}


def _prepare_work_dir(work: Path, fingerprint: dict[str, Any]) -> None:
    plan_file = work / "plan.json"
    if work.is_dir():
        try:
            same = json.loads(plan_file.read_text()) == fingerprint
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob("chunk-*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if not plan_file.is_file():
        write_json_atomic(plan_file, fingerprint)


def _done(work: Path, chunk: Chunk, keys: list[str]) -> bool:
    return committed(work, chunk.index, keys)


def _run_chunks(job: Job, todo: list[Chunk], workers: int, progress: Progress, encoder,
                claims: Any = None) -> list[dict[str, Any]]:
    """Build the chunks of `todo` (in order; with `claims`, only those this slice gets the claim
    of, see `cpt.shards.claims`) on `workers` processes; return the results of those built."""
    if workers == 1 or len(todo) <= 1:
        init_worker(job, encoder)
        built = (build_claimed(job, c, claims, progress.update) for c in todo)
        return [r for r in built if r is not None]
    if "fork" in mp.get_all_start_methods():
        # children inherit the loaded tokenizer and verified engine instead of loading them again
        ctx = mp.get_context("fork")
        init_worker(job, encoder)
    else:
        ctx = mp.get_context("spawn")
    reports = ctx.Queue()
    results: list[dict[str, Any]] = []
    with ctx.Pool(min(workers, len(todo)), initializer=init_pool_worker, initargs=(job, reports)) as pool:
        pending = [pool.apply_async(build_claimed, (job, c, claims)) for c in todo]
        while pending:
            try:
                progress.update(*reports.get(timeout=0.2))
            except queue_mod.Empty:
                pass
            for r in [r for r in pending if r.ready()]:
                pending.remove(r)
                results.append(r.get())  # re-raises a worker's CorpusError here
        results = [r for r in results if r is not None]
        while True:
            try:
                progress.update(*reports.get_nowait())
            except queue_mod.Empty:
                break
    return sorted(results, key=lambda r: r["chunk"])


@dataclass
class Prepared:
    """A run planned: what every slice and the final assembly share (see `prepare`)."""

    cfg: PreprocessConfig
    tokenizer: Any
    engine: Any
    files: list
    ignored: list[str]
    plan: list[Chunk]
    job: Job
    dtype: np.dtype
    fingerprint: str = ""
    """Digest of what the plan depends on (inputs with sizes and mtimes, options, tokenizer)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall seconds of each step of `prepare` (tokenizer, files, plan, engine), for timelines."""
    reused: bool = False
    """The tokenizer (and engine, if loaded before for it) came from this process's last slice."""

    @property
    def work(self) -> Path:
        return Path(self.job.work_dir)

    def todo(self, chunks: list[Chunk]) -> list[Chunk]:
        return [c for c in chunks if not _done(self.work, c, self.cfg.json_keys)]


def prepare(cfg: PreprocessConfig, own_work_dir: bool = True, encode: bool = True,
            given: dict[str, Any] | None = None, reuse: bool = False) -> Prepared:
    """Load the tokenizer, list and plan the input, pick the engine (only if it will `encode`: the
    final assembly of a launch does not). With `own_work_dir` (one run, or the driver of a launch)
    set up the work folder; a launched slice instead checks that the folder its driver set up
    belongs to this very plan. `given`: the driver's plan (`handed_plan`), used instead of planning
    again once the input read here proves to be the one it was made from. `reuse`: take the
    tokenizer and engine the previous call with `reuse` in this process loaded, if made of the
    same tokenizer files and options (`_Loaded`)."""
    clock = _Stopwatch()
    before = _LOADED.tokenizer
    tokenizer = _LOADED.tokenizer_for(cfg, reuse)
    clock.lap("tokenizer")
    files, ignored = _select_files(cfg)
    fingerprint = _fingerprint(cfg, files, tokenizer.sha256)
    work = Path(f"{cfg.output_prefix}.cpt-work")
    if own_work_dir:
        _prepare_work_dir(work, fingerprint)
        _remove_stale_temporaries(cfg)
    else:
        _check_work_dir(work, fingerprint)
    clock.lap("files")
    if given is None:
        plan = make_plan(files, int(cfg.chunk_mb * (1 << 20)))
    else:
        plan = _adopt_plan(work, given, _digest(fingerprint), files)
    clock.lap("plan")
    engine = _engine(cfg, tokenizer, files, encode, reuse)
    clock.lap("engine")
    dtype = optimal_dtype(tokenizer.vocab_size)
    job = Job(
        work_dir=str(work),
        fields=Fields(cfg.json_keys, cfg.lang_field, cfg.keep_fields, cfg.max_doc_bytes),
        tokenizer=tokenizer.spec, engine="reference" if engine.fast is None else cfg.engine,
        dtype=dtype.name, append_eod=cfg.append_eod, on_error=cfg.on_error,
        manifest=_manifest_base(cfg, tokenizer, files),
    )
    return Prepared(cfg, tokenizer, engine, files, ignored, plan, job, dtype, _digest(fingerprint), clock.laps,
                    reused=tokenizer is before)


def _engine(cfg: PreprocessConfig, tokenizer: Any, files: list, encode: bool, reuse: bool) -> Any:
    """The encoder of a run: the reference for a small input (auto) or a run that encodes nothing."""
    small = cfg.engine == "auto" and sum(max(f.size, 0) for f in files) < AUTO_FAST_MIN_BYTES
    engine = _LOADED.engine_for(tokenizer, "reference" if small or not encode else cfg.engine, reuse)
    if small:
        engine.fallback_reason = f"input under {AUTO_FAST_MIN_BYTES >> 20} MB: the reference is faster than loading gigatoken"
    return engine


def warm(cfg: PreprocessConfig) -> dict[str, float]:
    """Load into this process's cache (`_Loaded`) the tokenizer and engine that `prepare(cfg,
    reuse=True)` will take: a launch's worker does it while its driver still plans, so that the
    slice it runs next starts encoding at once. Returns the seconds of each step."""
    clock = _Stopwatch()
    tokenizer = _LOADED.tokenizer_for(cfg, reuse=True)
    clock.lap("tokenizer")
    files, _ = _select_files(cfg)
    clock.lap("files")
    _engine(cfg, tokenizer, files, encode=True, reuse=True)
    clock.lap("engine")
    return clock.laps


class _Loaded:
    """The tokenizer and engine this process loaded last (with `reuse`), for its next slice.

    A Ray worker runs one slice after another when a launch has more slices than CPUs; each would
    load the tokenizer and load and verify gigatoken again, for the same files. The tokenizer is
    reused only while its files still hash to what they did (sha256 over their bytes and the
    options), the engine only for that very tokenizer and the same engine choice. The cache lives
    in the process, so a verification holds only for the gigatoken build and node it ran on; an
    engine that fell back to the reference during a slice stays on it (never less exact)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.tokenizer: Any = None
        self.engines: dict[str, Any] = {}

    def tokenizer_for(self, cfg: PreprocessConfig, reuse: bool) -> Any:
        from cpt.tokenizers import load_tokenizer

        key = (str(Path(cfg.tokenizer).absolute()), cfg.tokenizer_kind, json.dumps(cfg.tokenizer_options, sort_keys=True))
        if reuse and key == self.key and self.tokenizer.files_unchanged():
            return self.tokenizer
        tokenizer = load_tokenizer(cfg.tokenizer, cfg.tokenizer_kind, **cfg.tokenizer_options)
        if reuse:
            self.key, self.tokenizer, self.engines = key, tokenizer, {}
        return tokenizer

    def engine_for(self, tokenizer: Any, engine: str, reuse: bool) -> Any:
        from cpt.tokenizers.engine import Encoder

        if reuse and tokenizer is self.tokenizer and engine in self.engines:
            return self.engines[engine]
        encoder = Encoder(tokenizer, engine)
        if reuse and tokenizer is self.tokenizer:
            self.engines[engine] = encoder
        return encoder


_LOADED = _Loaded()


def handed_plan(p: Prepared, chunks: list[Chunk]) -> dict[str, Any]:
    """`chunks` of `p`'s plan as a launch hands them to a slice (`prepare(given=...)`): compact JSON
    bound to the plan's fingerprint, so a slice that reads other input refuses it."""
    return {"fingerprint": p.fingerprint, "chunks": chunks_to_json(chunks, p.files)}


def _adopt_plan(work: Path, given: dict[str, Any], digest: str, files) -> list[Chunk]:
    """The chunks handed over by the driver, once the fingerprint of the input, options and
    tokenizer seen here (sizes and mtimes stand for the contents, as for resuming) is theirs."""
    if given.get("fingerprint") != digest:
        raise ValueError(f"{work}: the plan this slice was handed (fingerprint {given.get('fingerprint')}) is not "
                         f"the plan of the input it reads ({digest}): the input, options or "
                         f"tokenizer changed since the launch planned; rerun the command")
    return chunks_from_json(given["chunks"], files)


def handed_chunks(p: Prepared, given: dict[str, Any]) -> list[Chunk]:
    """More chunks of the plan `p` was prepared with (`handed_plan` of its driver: the whole plan,
    for a slice that takes other slices' chunks), refused unless bound to the same fingerprint."""
    return _adopt_plan(p.work, given, p.fingerprint, p.files)


def _digest(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:32]


class _Stopwatch:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.t, 3)
        self.t = now


def _remove_stale_temporaries(cfg: PreprocessConfig) -> None:
    """Delete the hidden temporary output files a killed assembly left (`.NAME.SUFFIX.*.tmp`); they
    never read as output, but would fill the disk run after run. The run that owns the work folder
    owns the output prefix too: no other writer of these names is running."""
    for key in cfg.json_keys:
        final = Path(cfg.output_for(key))
        for suffix in ("bin", "idx", "meta.parquet", "skipped.jsonl", "manifest.json"):
            for stale in final.parent.glob(f".{glob.escape(final.name)}.{suffix}.*.tmp"):
                stale.unlink(missing_ok=True)


def _check_work_dir(work: Path, fingerprint: dict[str, Any]) -> None:
    try:
        planned = json.loads((work / "plan.json").read_text())
    except (OSError, ValueError):
        planned = None
    if planned != fingerprint:
        why = "its plan.json is missing or unreadable" if not isinstance(planned, dict) else _difference(planned, fingerprint)
        raise ValueError(f"{work}: the work folder was set up for another plan ({why}); rerun the command")


def _difference(planned: dict[str, Any], now: dict[str, Any]) -> str:
    """What differs between the fingerprint a run planned with and the one seen now, in words."""
    old, new = planned.get("options") or {}, now["options"]
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        return f"options changed: {', '.join(changed)}"
    if planned.get("tokenizer") != now["tokenizer"]:
        return "the tokenizer's files changed"
    before = {f["path"]: f for f in planned.get("files") or []}
    after = {f["path"]: f for f in now["files"]}
    for path in [*before, *(p for p in after if p not in before)]:
        a, b = before.get(path), after.get(path)
        if a is None or b is None:
            return f"input {path} was {'added' if a is None else 'removed'}"
        if a != b:
            return (f"input {path} changed: size {a['size']} -> {b['size']}, "
                    f"mtime_ns {a['mtime_ns']} -> {b['mtime_ns']}")
    return "the work folder's format version or the order of the inputs changed"


def run_preprocess(cfg: PreprocessConfig) -> dict[str, Any]:
    """Run the whole pipeline; return the summary (also written to OUTPUT_PREFIX.summary.json)."""
    t0 = time.perf_counter()
    p = prepare(cfg)
    mine = shard_slice(p.plan, cfg.shard_index, cfg.num_shards) if cfg.num_shards > 1 else p.plan
    todo = p.todo(mine)
    _print_header(p, mine, todo, f", shard {cfg.shard_index}/{cfg.num_shards}: {len(mine)} chunks"
                  if cfg.num_shards > 1 else "")
    progress = Progress("preprocess", sum(c.size for c in todo), cfg.progress)
    results = _run_chunks(p.job, todo, cfg.workers, progress, p.engine)
    progress.close()
    return finish(p, mine, results, len(mine) - len(todo), t0, time.perf_counter() - t0)


def _print_header(p: Prepared, mine: list[Chunk], todo: list[Chunk], slice_note: str,
                  engine_note: str | None = None) -> None:
    tok, engine = p.tokenizer, p.engine
    if engine_note is None:
        engine_note = engine.name + (f" [{engine.fallback_reason}]" if engine.fast is None and engine.fallback_reason
                                     else "")
    print(
        f"[preprocess] {len(p.files)} files, {len(p.plan)} chunks" + slice_note
        + (f", {len(mine) - len(todo)} already done (resuming)" if len(todo) < len(mine) else "")
        + f"; tokenizer {tok.name} (vocab {tok.vocab_size}, eod {tok.eod}, {p.dtype.name}); engine {engine_note}",
        file=sys.stderr, flush=True,
    )


def finish(p: Prepared, mine: list[Chunk], results: list[dict[str, Any]], resumed: int, t0: float,
           t_tokenize: float, outputs: dict[str, dict] | None = None) -> dict[str, Any]:
    """Assemble the chunks of `mine` into the final shards (unless `outputs` says it was done
    elsewhere), remove the work folder, write and print the summary."""
    cfg = p.cfg
    if outputs is None:
        outputs = assemble(p, mine)
    elapsed = time.perf_counter() - t0
    summary = _summary(cfg, outputs, results, p.engine.name, p.ignored, len(mine), resumed)
    summary.update(seconds=round(elapsed, 3), seconds_tokenize=round(t_tokenize, 3),
                   docs_per_s=round(summary["written"] / elapsed, 1),
                   tokens_per_s=round(sum(summary["tokens"].values()) / elapsed, 1))
    write_json_atomic(Path(f"{cfg.output_prefix}.summary.json"), summary)
    reasons = ", ".join(f"{r} {n}" for r, n in summary["skipped_by_reason"].items())
    print(
        f"preprocess: read {summary['read']} documents, wrote {summary['written']}, skipped {summary['skipped']}"
        + (f" ({reasons}; see {cfg.output_for(cfg.json_keys[0])}.skipped.jsonl)" if reasons else "")
        + f"; {summary['tokens'][cfg.json_keys[0]]} tokens in {elapsed:.1f} s"
        + f" ({summary['docs_per_s']} docs/s, {summary['tokens_per_s']:.0f} tokens/s); engine {summary['engine']}",
        file=sys.stderr, flush=True,
    )
    return summary


def assemble(p: Prepared, mine: list[Chunk]) -> dict[str, dict]:
    """Merge the chunks into the final shards, then remove the work folder; return the manifests."""
    return Assembly(p, mine).finish()


class Assembly:
    """The final shards of a run, built from its chunks in plan order as they get committed.

    `advance` appends the next chunk if its folder is committed (a chunk folder appears by one
    rename, complete) and writes its tokens through to disk; a launch's driver calls it between
    waits so that the assembly follows the slices, and only the tail is left when the last one
    ends, down to the fsync of the output (writing behind costs the driver waits while the slices
    run, not the tail). `finish` appends the rest (not written behind: one fsync is quicker), commits
    every key's shard (each appears atomically, its manifest last) and removes the work folder.
    Until then only temporary files exist, so a killed driver leaves nothing that reads as
    complete, and a rerun assembles afresh from the chunks, which are kept until `finish`.
    """

    def __init__(self, p: Prepared, mine: list[Chunk]) -> None:
        cfg = p.cfg
        self.p, self.mine, self.next = p, list(mine), 0
        extra = {"part": {"shard_index": cfg.shard_index, "num_shards": cfg.num_shards}} if cfg.num_shards > 1 else {}
        self.mergers = {key: ShardMerger(cfg.output_for(key), extra) for key in cfg.json_keys}

    def advance(self) -> bool:
        """Append the next chunk if it is committed and write it behind; True if it did (there may
        be more)."""
        if not self._append_next():
            return False
        for merger in self.mergers.values():
            merger.write_behind()
        return True

    def _append_next(self) -> bool:
        if self.next >= len(self.mine) or not _done(self.p.work, self.mine[self.next], self.p.cfg.json_keys):
            return False
        folder = chunk_dir(self.p.work, self.mine[self.next].index)
        for key, merger in self.mergers.items():
            merger.add(folder / key)
        self.next += 1
        return True

    def finish(self) -> dict[str, dict]:
        """Append the remaining chunks (all must be committed), commit the shards, remove the work
        folder; return the manifests per key."""
        try:
            while self._append_next():
                pass
            if self.next < len(self.mine):
                missing = len(self.p.todo(self.mine[self.next:]))
                raise ValueError(f"{self.p.work}: {missing} chunks are not finished (first: chunk "
                                 f"{self.mine[self.next].index}); rerun the command")
            cfg, job = self.p.cfg, self.p.job
            outputs = {key: merger.finish() if self.mine else
                       _write_empty(cfg.output_for(key), self.p.dtype, cfg, job.manifest[key], merger.extra)
                       for key, merger in self.mergers.items()}
        except BaseException:
            self.abort()
            raise
        shutil.rmtree(self.p.work, ignore_errors=True)
        return outputs

    def abort(self) -> None:
        """Drop the partial output (temporary files); the chunks stay for a rerun."""
        for merger in self.mergers.values():
            merger.abort()


def _select_files(cfg: PreprocessConfig):
    """Input files, and the paths left out: hidden ones, and our own outputs inside an input folder."""
    files, ignored = list_inputs(cfg.inputs, cfg.corpus_root)
    prefixes = {str(Path(p).absolute()) for p in [cfg.output_prefix, *map(cfg.output_for, cfg.json_keys)]}

    def ours(path: str) -> bool:
        return any(path.startswith(p + ".") and path[len(p) + 1:].startswith(_OUR_SUFFIXES) for p in prefixes)

    ignored += [f.path for f in files if ours(f.path)]
    return [f for f in files if not ours(f.path)], ignored


def _manifest_base(cfg: PreprocessConfig, tokenizer, files) -> dict[str, dict[str, Any]]:
    """Per key: what every chunk's (and so the final) manifest records besides counts and files."""
    bases = sorted({str(Path(*Path(f.path).parts[: -len(Path(f.source).parts)])) for f in files})
    return {
        key: {
            "tokenizer": tokenizer.identity(),
            "options": {
                "json_key": key, "append_eod": cfg.append_eod, "lang_field": cfg.lang_field,
                "keep_fields": list(cfg.keep_fields), "max_doc_bytes": cfg.max_doc_bytes,
                **({"corpus_root": str(Path(cfg.corpus_root).absolute())} if cfg.corpus_root else {}),
            },
            "inputs": bases,
        }
        for key in cfg.json_keys
    }


def _summary(cfg, outputs, results, engine_name, ignored, chunks, resumed) -> dict[str, Any]:
    stats = outputs[cfg.json_keys[0]]["stats"]
    engines = sorted({r["engine"] for r in results}) or [engine_name]
    return {
        "outputs": {k: cfg.output_for(k) for k in cfg.json_keys},
        "read": stats["read"], "written": stats["written"], "skipped": stats["skipped"],
        "skipped_by_reason": stats["skipped_by_reason"], "blank_lines": stats.get("blank_lines", 0),
        "ignored_files": ignored,
        "tokens": {k: outputs[k]["n_tokens"] for k in cfg.json_keys},
        "chunks": chunks, "chunks_resumed": resumed,
        "engine": engines[0] if len(engines) == 1 else engines,
        "engine_fallbacks": sum(r["fallbacks"] for r in results),
        "workers": cfg.workers,
    }


def _write_empty(prefix: str, dtype: np.dtype, cfg: PreprocessConfig, base: dict, extra: dict) -> dict[str, Any]:
    """A valid shard with no documents, for a shard index that received no input."""
    from cpt.shards.merge import skipped_path

    writer = ShardWriter(prefix, dtype, schema_for(cfg.keep_fields))
    skipped_path(prefix).write_text("")
    stats = {"read": 0, "written": 0, "skipped": 0, "blank_lines": 0, "skipped_by_reason": {}}
    return writer.finish({**base, "stats": stats, **extra})
