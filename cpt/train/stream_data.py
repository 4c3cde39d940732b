"""Training samples drawn by the dynamic Blender over Streams of cpt shards.

The main process decides every sample id: the Blender (deterministic from its weight history) maps
global sample g to (stream, index within stream); the Stream maps that to token ranges of shard
documents. Only the reading of those ranges may run in worker processes, so a weight change set
for global sample t·B applies exactly from step t whatever the number of workers. The data state
saved in checkpoints is the Blender's (weight history + counts), versioned and checked on load.

Stages: a new stage (another recipe, e.g. stage 2 with a synthetic stream added) builds a new Blender
over its own streams; `continue_from(previous stage's state)` makes every stream that existed before
with the same documents and config (same fingerprint) start where it stopped, so stage 2 does not
repeat stage 1's documents. Those starting offsets are part of the state.

Batches are megatron-style: tokens, labels, loss_mask, position_ids (+ document_ids when
document-boundary masking is on), built by megatron's GPTDataset rules.

Prefetch: once the loop has announced a step (`prepare_step`), each `fetch(indices)` also starts
building the micro-batch `indices + global batch size` of the next step in a background thread.
The ids of that batch are predicted from the weight history as it stands (a forked Blender: nothing
is drawn), and at the next fetch the prediction is checked against the real ids: a weight change
made in between (a data hook at the end of the step) predicts the pending batches again at once and
rebuilds those whose ids moved, still in the background; a batch whose prediction is still wrong
when it is asked for (the state loaded or replaced) is built in the foreground, so prefetching never
changes what is read. A thread, not a process: it starts
nothing after CUDA/NCCL, and the reading it does releases the GIL in NumPy copies.

Worker processes (`data.num_workers`) are started by a fork server, never forked from the trainer
(`reader_pool`).
"""
from __future__ import annotations

import multiprocessing as mp
import threading
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from cpt.config import DataConfig, StreamSpec, holdout_share
from cpt.sampling import Blender, DocumentTable, Stream, StreamConfig, StreamExhausted, mapped, read_samples
from cpt.train.engine import Batch


def ltor_masks(tokens: np.ndarray, eod: Optional[int], reset_position_ids: bool, reset_attention_mask: bool,
               eod_mask_loss: bool) -> dict[str, np.ndarray]:
    """Loss mask, position ids and (optionally) document ids for tokens [b, s], by the rules of
    megatron's `_get_ltor_masks_and_position_ids`: a document ends with its end-of-document token,
    positions restart after it (reset_position_ids), and attention stays within a document
    (reset_attention_mask). Document masking is sent as `document_ids` [b, s] int32 (the number
    of end-of-document tokens before each position), never as a dense (b, 1, s, s) mask: the engine
    turns it into packed-sequence boundaries (megatron_ext.attention_mask)."""
    b, s = tokens.shape
    loss_mask = np.ones((b, s), dtype=np.float32)
    if eod_mask_loss:
        loss_mask[tokens == eod] = 0.0
    position_ids = np.broadcast_to(np.arange(s, dtype=np.int64), (b, s)).copy()
    out: dict[str, np.ndarray] = {"loss_mask": loss_mask, "position_ids": position_ids}
    if not (reset_position_ids or reset_attention_mask):
        return out
    starts = np.zeros((b, s), dtype=bool)  # a document starts at 0 and after every end-of-document token
    starts[:, 0] = True
    starts[:, 1:] = tokens[:, :-1] == eod
    if reset_position_ids:
        first = np.maximum.accumulate(np.where(starts, np.arange(s), 0), axis=1)
        out["position_ids"] = position_ids - first
    if reset_attention_mask:
        out["document_ids"] = (np.cumsum(starts, axis=1, dtype=np.int64) - 1).astype(np.int32)
    return out


def _open_shard(prefix: str) -> Any:
    from cpt.sampling.reading import shard_tokens

    return shard_tokens(prefix)


WORKER_DIED = (
    "a data loader worker process (data.num_workers) died: killed (out of memory?), or it could not start. "
    "Workers start as a fork server's children and import the main module: a script that starts "
    "training must do so under `if __name__ == \"__main__\":`")


def reader_pool(workers: int, start_method: str = "forkserver") -> Optional[ProcessPoolExecutor]:
    """`workers` processes that read samples (None for 0), started by a fork server (by spawn where
    the platform has none), never forked from this process. By the first batch a trainer holds CUDA
    contexts and NCCL, TE, checkpoint and prefetch threads: a child forked from it inherits every
    lock those threads held at that instant, and deadlocks if it needs one (Python 3.12 warns of
    such forks; 3.14 no longer makes them by default). A forked child also keeps the trainer's
    pages as they were at the fork: each page the trainer writes afterwards (every parameter and
    optimizer state, at each step) is copied, so host memory grows by what the trainer rewrites
    (benchmarks/bench_loader_workers.py). The workers need only NumPy and cpt.sampling, which the
    server imports once for all of them. `start_method="fork"`: the old way, for that benchmark."""
    if workers <= 0:
        return None
    if start_method == "forkserver" and "forkserver" not in mp.get_all_start_methods():
        start_method = "spawn"
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(workers, mp_context=ctx)


def _read(args: tuple) -> np.ndarray:
    pieces, sample_tokens = args
    return read_samples(pieces, _open_shard, sample_tokens)


def build_streams(specs: Sequence[StreamSpec], seq_length: int, split: str = "all", holdout: float = 0.0,
                  holdout_seed: int = 0, *, cache_dir: Optional[str] = None,
                  tables: Optional[dict] = None, samples: Optional[int] = None) -> list[Stream]:
    """One Stream per recipe stream (each over the DocumentTable of its shard prefixes).

    split="train"/"valid": the documents outside / inside each stream's held-out share (`holdout`,
    or the stream's own `valid_holdout`), by doc_id hash, so the two sides never share a document.
    A stream whose share is 0 trains on all its documents and has no validation stream (split
    "valid" leaves it out). Validation streams are always read in a seeded shuffle order (a ppl
    order would evaluate only the easiest documents) and start over when they run out.

    cache_dir: the on-disk index cache (tables and stream indices built once, memory-mapped), or None
    to compute them in memory. tables: a dict shared between calls (the train and valid splits) so
    that they read one DocumentTable per shard set; only the metadata columns the streams need
    (filters, ppl orders, doc_id for a held-out split) are read. samples: the run's training samples;
    the cache of a training stream then covers what `_expected_reads` expects it to give (packing
    cursors for all of it, whole packed epochs up to the cache's limit); a stream read further packs
    the rest in memory.
    """
    from cpt.sampling.index_cache import IndexCache

    cache = IndexCache(cache_dir) if cache_dir else None
    tables = {} if tables is None else tables
    streams = []
    valid = split == "valid"
    for i, spec in enumerate(specs):
        share = holdout_share(spec, holdout) if split != "all" else 0.0
        if valid and not share:
            continue
        stream = Stream(_table(spec, specs, holdout, cache, tables),
                        _stream_config(spec, seq_length, split, share, holdout_seed), cache=cache,
                        cache_samples=None if valid or not samples else _expected_reads(spec, specs, samples))
        if stream.tokens_per_epoch == 0:
            side = (f"held-out (valid_holdout={share}; data.streams[{i}].valid_holdout: 0 trains on all of a "
                    "small stream's documents without validating it)" if valid else "training")
            raise ValueError(
                f"data.streams: stream {spec.name!r} has no {side} documents with tokens "
                f"(filter {spec.filter!r} over {list(spec.prefixes)})"
            )
        streams.append(stream)
    return streams


def epoch_samples(specs: Sequence[StreamSpec], name: str, seq_length: int, holdout: float = 0.0,
                  holdout_seed: int = 0, *, cache_dir: Optional[str] = None, tables: Optional[dict] = None) -> int:
    """Samples of one epoch of training stream `name` (its documents outside the held-out share), without
    building the stream: its tokens from its index-cache entry when there is one, else by selecting its
    documents in memory (no order, no packing). `tables` is shared with build_streams as there."""
    from dataclasses import replace

    from cpt.sampling.index_cache import IndexCache
    from cpt.sampling.stream_cache import stream_fields

    cache = IndexCache(cache_dir) if cache_dir else None
    tables = {} if tables is None else tables
    spec = next(s for s in specs if s.name == name)
    table = _table(spec, specs, holdout, cache, tables)
    config = _stream_config(spec, seq_length, "train", holdout_share(spec, holdout), holdout_seed)
    entry = cache.lookup("stream", stream_fields(table, config)) if cache else None
    if entry is not None:
        return config.samples_in(int(entry.meta["tokens_per_epoch"]))
    return config.samples_in(Stream(table, replace(config, order="shuffle", ppl_bands=1)).tokens_per_epoch)


def _table(spec: StreamSpec, specs: Sequence[StreamSpec], holdout: float, cache: Any, tables: dict) -> DocumentTable:
    """The DocumentTable of the spec's shard set, shared by every stream over it: with the columns any
    stream of the recipe reads, so one table serves both splits and every stream."""
    key = tuple(spec.prefixes)
    if key not in tables:
        tables[key] = DocumentTable.from_shards(list(key), _available(key, _needed_columns(specs, holdout)),
                                                cache=cache)
    return tables[key]


def _stream_config(spec: StreamSpec, seq_length: int, split: str, share: float, holdout_seed: int) -> StreamConfig:
    """The StreamConfig of a recipe stream on one split: validation streams are read shuffled, never
    banded, and start over when they run out; a stream with no held-out share reads all its documents."""
    valid = split == "valid"
    return StreamConfig(
        name=spec.name, seq_length=seq_length, filter=spec.filter,
        order="shuffle" if valid else spec.order, seed=spec.seed, ppl_bands=1 if valid else spec.ppl_bands,
        on_exhausted="next_epoch" if valid else spec.on_exhausted,
        split=split if share else "all", holdout=share, holdout_seed=holdout_seed,
    )


def _expected_reads(spec: StreamSpec, specs: Sequence[StreamSpec], samples: int) -> int:
    """Samples the cache of a training stream covers: twice its share of the run's samples, and at
    least twice a uniform share (the mixture may move: a controller or a recipe edit raises a
    stream's weight; beyond this a stream packs from its last cached cursor, in memory)."""
    total = sum(s.weight for s in specs) or 1.0
    return int(2 * samples * max(spec.weight / total, 1 / len(specs)))


def _needed_columns(specs: Sequence[StreamSpec], holdout: float) -> set[str]:
    """Columns any stream of the recipe reads (the same for both splits, so they share a table)."""
    from cpt.sampling.filters import filter_columns

    cols: set[str] = set()
    for spec in specs:
        cols |= filter_columns(spec.filter)
        if spec.order != "shuffle":
            cols.add("ppl")
        if holdout_share(spec, holdout):
            cols.add("doc_id")
    return cols


def _available(prefixes: Sequence[str], wanted: set[str]) -> list[str]:
    """The wanted columns the shards' sidecars have (a missing one is reported by the filter/order)."""
    import pyarrow.parquet as pq

    from cpt.shards.metadata import meta_path

    names = set(pq.read_schema(meta_path(prefixes[0])).names)
    return sorted(wanted & names)


STATE_VERSION = 4
# version 2: no stream records, ledgers or segments (resumable with its own streams only); version 3:
# bitmaps as base64 text, one ledger per stream (read as version 4's per-stream ledgers)
READS = (2, 3, 4)


class BlendedSamples:
    """Samples by global index through a Blender; `fetch(indices)` builds one micro-batch."""

    def __init__(self, streams: Sequence[Stream], weights: Sequence[float] | Mapping[str, float],
                 seq_length: int, data: DataConfig, num_workers: Optional[int] = None,
                 prefetch: bool = True) -> None:
        self.streams = list(streams)
        self.offsets = np.zeros(len(self.streams), dtype=np.int64)  # first sample of each stream this stage
        self.start = 0  # stage position of the Blender's sample 0 (moves at a recipe edit)
        self.closed: list[dict[str, Any]] = []  # data states of the segments before a recipe edit
        self.overlapping: Optional[frozenset] = None  # shard sets two streams select a document of (once computed)
        self.blender = self._new_blender(weights)
        # the recipe's own weights, as written (an edit compares them: adding a stream re-weights no other)
        self.recipe_weights = {n: float(weights[n] if isinstance(weights, Mapping) else weights[k])
                               for k, n in enumerate(self.stream_names)}
        self.seq_length = seq_length
        self.data = data
        workers = data.num_workers if num_workers is None else num_workers
        self._pool = reader_pool(workers)
        self._prefetch = ThreadPoolExecutor(1, thread_name_prefix="cpt-prefetch") if prefetch else None
        self._streams_lock = threading.Lock()  # Stream packing caches are not thread-safe
        self._step: Optional[tuple[int, int]] = None  # (start, stop) of the step announced last
        self._predicted: Optional[tuple[int, np.ndarray, np.ndarray]] = None  # next step's ids, as of now
        self._pending: dict[bytes, tuple[int, np.ndarray, np.ndarray, Future]] = {}
        self.prefetch_hits = self.prefetch_misses = self.prefetch_replans = 0
        self._step_ids: Optional[tuple[Blender, int, np.ndarray, np.ndarray]] = None  # ids of the announced step

    def _new_blender(self, weights: Sequence[float] | Mapping[str, float]) -> Blender:
        capacities = [None if s.capacity is None else max(s.capacity - int(off), 0)
                      for s, off in zip(self.streams, self.offsets)]
        return Blender([s.name for s in self.streams], weights, capacities=capacities,
                       fingerprints=[s.fingerprint for s in self.streams])

    @property
    def stream_names(self) -> tuple[str, ...]:
        return self.blender.stream_names

    def sample_ids(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(stream id, index within stream) of stage positions `indices` (drawing ahead as needed);
        positions before a recipe edit are the closed segments' (see cpt.trace), not these streams'."""
        known = self._step_ids
        if known is not None and known[0] is self.blender and len(indices):
            _, start, stream, within = known  # drawn samples never change: the announced step's ids
            if indices.min() >= start and indices.max() < start + len(stream):
                return stream[indices - start], within[indices - start]
        if len(indices) and int(indices.min()) < self.start:
            raise ValueError(f"sample {int(indices.min())} is before this segment (a recipe edit at {self.start})")
        indices = indices - self.start
        stop = int(indices.max()) + 1
        if stop > self.blender.drawn:
            self.blender.next_samples(stop - self.blender.drawn)
        lo = int(indices.min())
        ids = self.blender.sample_ids(lo, stop)
        stream = ids.stream[indices - lo]
        return stream, ids.index[indices - lo] + self.offsets[stream]

    def prepare_step(self, start: int, stop: int) -> None:
        stream, within = self.sample_ids(np.arange(start, stop, dtype=np.int64))
        self._step_ids = (self.blender, start, stream, within)
        if self._step != (start, stop):
            self._step, self._predicted = (start, stop), None
            for key in [k for k, job in self._pending.items() if job[0] < start]:  # never asked for
                self._pending.pop(key)[3].cancel()

    def _tokens(self, stream_ids: np.ndarray, within: np.ndarray) -> np.ndarray:
        out = np.empty((len(stream_ids), self.seq_length + 1), dtype=np.int64)
        jobs, rows, looked_up = [], [], []
        with self._streams_lock:
            for k in np.unique(stream_ids):
                sel = np.flatnonzero(stream_ids == k)
                stream = self.streams[int(k)]
                jobs.append((stream.pieces(within[sel]), self.seq_length + 1))
                rows.append(sel)
                looked_up += stream.lookup_arrays()
        try:
            results = self._pool.map(_read, jobs) if self._pool is not None else map(_read, jobs)
            for sel, tokens in zip(rows, results):
                out[sel] = tokens
        except BrokenProcessPool as exc:
            raise RuntimeError(WORKER_DIED) from exc
        if self._pool is None:  # this process looked up the shards' indexes too
            looked_up += [a for pieces, _ in jobs for u in np.unique(pieces.source)
                          for a in _open_shard(pieces.sources[int(u)]).lookup_arrays()]
        # the cache and shard pages this micro-batch mapped go back to the page cache alone (the kernel
        # maps whole large folios around each random read: left mapped, a step's would add up)
        mapped.release(looked_up)
        return out

    def _batch(self, stream_ids: np.ndarray, within: np.ndarray) -> Batch:
        sample = self._tokens(stream_ids, within)
        tokens, labels = sample[:, :-1], sample[:, 1:]
        d = self.data
        masks = ltor_masks(tokens, d.eod_token_id, d.reset_position_ids, d.reset_attention_mask, d.eod_mask_loss)
        return {"tokens": tokens, "labels": labels, **masks}

    def fetch(self, indices: np.ndarray) -> Batch:
        indices = np.asarray(indices, dtype=np.int64)
        stream_ids, within = self.sample_ids(indices)
        batch = self._prefetched(indices, stream_ids, within)
        if batch is None:
            batch = self._batch(stream_ids, within)
        self._prefetch_next(indices)
        return batch

    # ------------------------------------------------------------------ prefetch

    def _prefetched(self, indices: np.ndarray, stream_ids: np.ndarray, within: np.ndarray) -> Optional[Batch]:
        """The batch built in the background for these indices, if it was built for these very ids."""
        job = self._pending.pop(indices.tobytes(), None)
        if job is None:
            return None
        _, ids, win, future = job
        if np.array_equal(ids, stream_ids) and np.array_equal(win, within):
            self.prefetch_hits += 1
            return future.result()
        future.cancel()
        self.prefetch_misses += 1  # the weights changed after the prediction
        return None

    def _prefetch_next(self, indices: np.ndarray) -> None:
        """Start building `indices` + one global batch (the same micro-batch of the next step)."""
        if self._prefetch is None or self._step is None or not len(indices):
            return
        start, stop = self._step
        nxt = indices + (stop - start)
        if nxt.min() < stop or nxt.max() >= 2 * stop - start:
            return  # not this step's indices (an evaluation pass)
        s, win = self._predict(nxt)
        if s is not None:
            self._pending[nxt.tobytes()] = (int(nxt.min()), s, win, self._prefetch.submit(self._batch, s, win))

    def _predict(self, nxt: np.ndarray) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """(stream ids, index within stream) of next-step samples `nxt` under the weights as they
        stand (a forked Blender: nothing is drawn); (None, None) when the next step runs a stream dry
        (its own fetch says so)."""
        start, stop = self._step
        if self._predicted is None or self._predicted[0] != stop:
            try:
                ids = self.blender.sample_ids(stop - self.start, 2 * stop - start - self.start)  # forked: draws nothing
                self._predicted = (stop, ids.stream, ids.index)
            except StreamExhausted:
                self._predicted = (stop, None, None)
        _, stream, index = self._predicted
        if stream is None:
            return None, None
        s = stream[nxt - stop]
        return s, index[nxt - stop] + self.offsets[s]

    def _replan_prefetch(self) -> None:
        """After a weight change: predict the pending next-step batches again at once and rebuild, in
        the background, those whose ids moved (a batch already being built for the old ids finishes
        and is dropped), so the step after a mixture update is still prefetched."""
        if not self._pending or self._step is None:
            return
        self._predicted = None
        for key, (lo, ids, win, future) in list(self._pending.items()):
            s, w = self._predict(np.frombuffer(key, dtype=np.int64))
            if s is not None and np.array_equal(s, ids) and np.array_equal(w, win):
                continue
            future.cancel()
            if s is None:
                del self._pending[key]
            else:
                self._pending[key] = (lo, s, w, self._prefetch.submit(self._batch, s, w))
                self.prefetch_replans += 1

    # the data position lives in the Blender: weight history + counts

    def set_weights(self, weights: Sequence[float] | Mapping[str, float], effective_at: int) -> None:
        self.blender.set_weights(weights, effective_at=effective_at - self.start)
        self._replan_prefetch()

    def weights_at(self, global_sample: int) -> dict[str, float]:
        """Shares in force for `global_sample` (scheduled changes included)."""
        return dict(zip(self.stream_names, self.blender.weights_at(global_sample - self.start).tolist()))

    def samples(self) -> dict[str, int]:
        """Samples drawn from each stream in this stage."""
        return dict(zip(self.stream_names, self.blender.counts.tolist()))

    def exhausted(self) -> frozenset[str]:
        """Streams with a capacity (on_exhausted: stop) that have given all their samples."""
        counts = self.blender.counts
        return frozenset(
            s.name for k, s in enumerate(self.streams)
            if s.capacity is not None and counts[k] + self.offsets[k] >= s.capacity
        )

    def state_dict(self, ledgers: bool = True) -> dict[str, Any]:
        """The Blender's state, stream offsets, and what a recipe edit needs: each stream's record
        (config, shards, fingerprints), head and (`ledgers`: the rank that writes the checkpoint)
        consumed-documents ledger, and the closed segments. Heads and ledgers hold bool arrays:
        cpt.train.data_bits splits them out into the checkpoint's binary file."""
        from cpt.train.recipe_edit import segment_state

        with self._streams_lock:  # the ledgers read the streams' packing, which the prefetch thread also uses
            return {"version": STATE_VERSION, **segment_state(self, ledgers), "segments": list(self.closed)}

    def load_state_dict(self, state: Mapping[str, Any]) -> Optional[dict[str, Any]]:
        """Resume this stage: exactly when the recipe's streams and weights are the checkpoint's;
        else as a recipe edit (see cpt.train.recipe_edit), whose diff is returned (None: no edit).
        Raises ValueError with one line when the edit cannot keep its promise."""
        from cpt.train.recipe_edit import load_or_edit

        if state.get("version") not in READS:
            raise ValueError(f"data state version {state.get('version')!r}; this cpt reads {list(READS)}")
        return load_or_edit(self, state)

    def load_exact(self, state: Mapping[str, Any]) -> None:
        """Restore a segment's state into these streams (same names and fingerprints; refused otherwise)."""
        from cpt.train.recipe_edit import restore_heads

        offsets = state["offsets"]
        if sorted(offsets) != sorted(self.stream_names):
            raise ValueError(
                f"data state: streams {sorted(offsets)} in the checkpoint, {sorted(self.stream_names)} in the "
                "recipe; resume a stage with its own streams (a new stage needs a new training.stage name)"
            )
        restore_heads(self, state)
        self.offsets = np.array([int(offsets[n]) for n in self.stream_names], dtype=np.int64)
        self.start = int(state.get("start", 0))
        self.closed = list(state.get("segments", ()))
        weights = state.get("recipe_weights") or dict(zip(state["blender"]["streams"],
                                                           state["blender"]["history"][0]["weights"]))
        self.recipe_weights = {n: float(weights[n]) for n in self.stream_names}
        self.blender = self._new_blender(self.blender.weights_at(0))
        self.blender.load_state_dict(state["blender"])

    def continue_from(self, previous: Mapping[str, Any]) -> dict[str, int]:
        """Start this stage where the previous stage's streams stopped (a stream carries on only if
        its name and fingerprint are unchanged, with its head if a recipe edit gave it one).
        Returns {stream: first sample index} carried."""
        from cpt.train.recipe_edit import restore_heads

        if previous.get("version") not in READS:
            raise ValueError(f"previous stage's data state version {previous.get('version')!r}; "
                             f"need one of {list(READS)}")
        old = previous["blender"]
        fingerprints = dict(zip(old["streams"], old.get("fingerprints") or [None] * len(old["streams"])))
        drawn = {name: int(c) + int(previous["offsets"].get(name, 0)) for name, c in zip(old["streams"], old["counts"])}
        carried = {}
        for k, stream in enumerate(self.streams):
            if stream.name in drawn and fingerprints.get(stream.name) == stream.fingerprint:
                self.offsets[k] = drawn[stream.name]
                carried[stream.name] = drawn[stream.name]
        restore_heads(self, previous, only=set(carried))
        self.blender = self._new_blender(self.blender.weights_at(0))
        return carried

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.shutdown(cancel_futures=True)
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown()
