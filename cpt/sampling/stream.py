"""Stream: the documents selected by a metadata filter, in one order, packed into samples.

Orders: `shuffle` (a seeded permutation, a new one each epoch), `ppl_asc` (easy to hard: the
curriculum), `ppl_desc`. Ties in perplexity keep table order. A ppl order with `ppl_bands` K > 1 is
the banded curriculum: the sorted documents cut into K bands of equal count, read band after band,
each band in a seeded random order -- the run still goes easy to hard, but neighbouring samples are
not near-duplicates in perplexity (a strict sort packs documents of one length and style together).
The ppl orders are the same in every epoch. Documents are packed as megatron's
GPTDataset does (samples of seq_length + add_extra_token tokens across document boundaries,
epochs back to back), in segments of SEGMENT samples so memory stays bounded: only the cursor at
the start of each segment is kept, plus a few recently used segments.

With an `IndexCache` (cpt.sampling.index_cache) the selection (table rows), their lengths, the
order of epoch 0 and the packed boundaries of the first epoch are computed once, by the code path
without a cache, saved under the stream's fingerprint and memory-mapped: opening a stream or
resuming deep into it then reads those arrays instead of filtering the table and packing from
sample 0, and the ranks of a node share them through the page cache. Epochs after the first are
ordered and packed in memory as without a cache, from the cursor where the cached epoch ends.
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from cpt.sampling import filters, mapped
from cpt.sampling.documents import DocumentTable
from cpt.sampling.errors import StreamExhausted
from cpt.sampling.holdout import held_out
from cpt.sampling.packing import pack_segment

ORDERS = ("shuffle", "ppl_asc", "ppl_desc")
_UNSET = object()
_NEUTRAL = {"ppl_bands": 1}
"""Config fields added after streams were first fingerprinted, at the value that reproduces the earlier
behaviour: at that value they stay out of the fingerprint, so checkpoints, traces and index caches made
before the field existed still match."""
ON_EXHAUSTED = ("next_epoch", "stop")
SEGMENT = 1 << 16  # samples per packed segment (fewer for a stream whose epoch has fewer samples)
_CACHED_SEGMENTS = 4
_CACHED_EPOCHS = 2


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamConfig:
    """One stream of a recipe."""

    name: str
    """Stream name (the blender's weights refer to it)."""
    seq_length: int
    """Tokens per sample fed to the model; each sample reads seq_length + add_extra_token tokens."""
    filter: str | None = None
    """Metadata condition selecting documents, e.g. `lang == "zh" and topic == "math"`; None: all."""
    order: str = "shuffle"
    """`shuffle` (seeded, reshuffled per epoch), `ppl_asc` (curriculum, easy to hard) or `ppl_desc`."""
    seed: int = 1234
    """Seed of the `shuffle` order and of the order within each band of `ppl_bands` (0 <= seed < 2**32)."""
    on_exhausted: str = "next_epoch"
    """At the end of the documents: `next_epoch` (start over, reshuffled) or `stop` (StreamExhausted)."""
    ppl_column: str = "ppl"
    """Metadata column holding the perplexity used by the ppl orders."""
    ppl_bands: int = 1
    """ppl orders: read the sorted documents in this many equal-count bands, each shuffled by `seed`
    (1: the strict order)."""
    add_extra_token: int = 1
    """Extra tokens per sample (1: the label of the last position), as megatron's add_extra_token_to_sequence."""
    split: str = "all"
    """`all`, or `train` / `valid`: the documents outside / inside the held-out share (by doc_id hash)."""
    holdout: float = 0.0
    """Held-out share of documents for `split` train/valid (0..1); the same seed and share give disjoint sides."""
    holdout_seed: int = 0
    """Seed of the held-out hash (independent of the shuffle seed)."""

    def identity(self) -> dict[str, Any]:
        """The fields that make the stream what it is, for its fingerprint and cache key: every field but
        those of _NEUTRAL at their neutral value."""
        return {k: v for k, v in asdict(self).items() if _NEUTRAL.get(k, _UNSET) != v}

    def samples_in(self, tokens: int) -> int:
        """Whole samples packed from `tokens` consecutive tokens (each reads seq_length + add_extra_token)."""
        return max(tokens - self.add_extra_token, 0) // self.seq_length

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("StreamConfig.name must be non-empty")
        if self.seq_length < 1:
            raise ValueError(f"StreamConfig.seq_length must be >= 1, got {self.seq_length}")
        if self.order not in ORDERS:
            raise ValueError(f"StreamConfig.order must be one of {ORDERS}, got {self.order!r}")
        if self.on_exhausted not in ON_EXHAUSTED:
            raise ValueError(f"StreamConfig.on_exhausted must be one of {ON_EXHAUSTED}, got {self.on_exhausted!r}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"StreamConfig.seed must be in [0, 2**32), got {self.seed}")
        if self.split not in ("all", "train", "valid"):
            raise ValueError(f"StreamConfig.split must be 'all', 'train' or 'valid', got {self.split!r}")
        if not 0.0 <= self.holdout <= 1.0:
            raise ValueError(f"StreamConfig.holdout must be in [0, 1], got {self.holdout}")
        if self.split == "all" and self.holdout:
            raise ValueError("StreamConfig.holdout needs split='train' or split='valid' (split is 'all')")
        if self.add_extra_token < 0:
            raise ValueError(f"StreamConfig.add_extra_token must be >= 0, got {self.add_extra_token}")
        if self.ppl_bands < 1:
            raise ValueError(f"StreamConfig.ppl_bands must be >= 1, got {self.ppl_bands}")
        if self.ppl_bands > 1 and self.order == "shuffle":
            raise ValueError(f"StreamConfig.ppl_bands={self.ppl_bands} needs order ppl_asc or ppl_desc, "
                             "got 'shuffle'")


class DocPiece(NamedTuple):
    """Tokens [start, stop) of document `document` of source (shard prefix) `source`."""

    source: str
    document: int
    start: int
    stop: int


@dataclass(frozen=True)
class Pieces:
    """The token ranges of a batch of samples, as flat arrays (what a loader worker reads).

    Sample k is made of pieces sample_offsets[k]:sample_offsets[k + 1], each tokens [start, stop) of
    document `document` of shard `sources[source]`.
    """

    sources: tuple[str, ...]
    sample_offsets: np.ndarray  # int64, len = samples + 1
    source: np.ndarray  # int32 index into `sources`
    document: np.ndarray  # int64 document index within its source
    start: np.ndarray  # int64
    stop: np.ndarray  # int64

    def for_sample(self, k: int) -> list[DocPiece]:
        lo, hi = self.sample_offsets[k], self.sample_offsets[k + 1]
        return [
            DocPiece(self.sources[self.source[j]], int(self.document[j]), int(self.start[j]), int(self.stop[j]))
            for j in range(lo, hi)
        ]


@dataclass(frozen=True)
class StreamHead:
    """Where a stream starts after a recipe edit: the rest of epoch `epoch`, then epochs epoch + 1, ...

    The rest of the epoch is the stream's order of that epoch without the documents already trained
    in it (`excluded`, a bool per table row: the consumed-documents ledger), led by the documents the
    edit cut (`partials`: (table row, first token not yet trained)) that the stream selects, each
    read on from where it stopped.
    """

    epoch: int
    excluded: np.ndarray  # bool per table row
    partials: tuple[tuple[int, int], ...] = ()


class Stream:
    """Random access to the samples of one stream: `locate(i)` says which tokens make sample i."""

    def __init__(self, table: DocumentTable, config: StreamConfig, cache: Any = None,
                 cache_samples: int | None = None) -> None:
        """cache: an `IndexCache` to read this stream's indices from (built there on a miss), or None.
        cache_samples: how many samples the run is expected to read from this stream (the cache then
        covers that many epochs; None: one)."""
        self.config = config
        self.table = table
        self._epochs: OrderedDict[int, np.ndarray] = OrderedDict()
        self._segments: OrderedDict[int, np.ndarray] = OrderedDict()
        self._stored_orders: dict[int, np.ndarray] = {}  # epoch -> order, from the cache
        self._bounds: np.ndarray | None = None  # cached boundaries of the first segments
        self._n_cached_segments = 0
        self.cache_hit: bool | None = None  # None: no cache; else whether the entry was already built
        self.head: StreamHead | None = None  # the rest of an epoch cut by a recipe edit (see start_head)
        self._head_rows = np.zeros(0, np.int64)
        self._head_skip = np.zeros(0, np.int64)
        self._cursor_table = np.zeros((0, 2), np.int64)  # cursors at k * seg_len from the cache, k < len
        if cache is None:
            self._select()
        else:
            from cpt.sampling.stream_cache import open_cached

            open_cached(self, cache, cache_samples)

    def _select(self) -> None:
        """Rows, lengths and fixed order from the table (the path without a cache, and the cache's build)."""
        with mapped.scanning():  # whole table columns: read ahead, not page by page
            self._select_from_table()

    def _select_from_table(self) -> None:
        config, table = self.config, self.table
        rows = filters.select_rows(config.filter, table.columns, len(table))
        if config.split != "all":
            if "doc_id" not in table.columns:
                raise ValueError(f"stream {config.name!r}: split={config.split!r} needs a 'doc_id' metadata column")
            # the hash depends on the document alone, so hashing only the selected rows gives the same
            # split; a chunk at a time, so its temporaries stay small
            doc_id, step = table.columns["doc_id"], filters.SELECT_CHUNK
            valid = np.concatenate([np.zeros(0, bool)] + [
                held_out(np.asarray(doc_id[rows[lo: lo + step]]), config.holdout, config.holdout_seed)
                for lo in range(0, len(rows), step)])
            rows = rows[valid if config.split == "valid" else ~valid]
        self.rows = rows
        self._lengths = np.asarray(table.lengths[self.rows], dtype=np.int64)
        if np.any(self._lengths >= 2**31):
            raise ValueError(f"stream {config.name!r}: a document has 2**31 tokens or more")
        self._fixed_order = self._ppl_order() if config.order != "shuffle" else None
        self.tokens_per_epoch = int(self._lengths.sum())
        # about one epoch per segment for small streams, so asking for a sample never packs many epochs
        self._seg_len = min(SEGMENT, max(64, self.tokens_per_epoch // config.seq_length))
        self._cursors: list[tuple[int, int]] = [(0, 0)]  # cursor at boundary k * self._seg_len

    # ----------------------------------------------------------------------------------- properties
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def num_documents(self) -> int:
        return len(self.rows)

    @property
    def capacity(self) -> int | None:
        """Samples available: None (unlimited) for `next_epoch` with tokens, else a count."""
        if self.config.on_exhausted == "next_epoch" and self.tokens_per_epoch > 0:
            return None
        return self.config.samples_in(self._head_tokens() if self.head is not None else self.tokens_per_epoch)

    @property
    def fingerprint(self) -> str:
        """Hash of the documents and the config: the key for anything cached from this stream."""
        blob = json.dumps({"table": self.table.fingerprint, "config": self.config.identity()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def lookup_arrays(self) -> list[np.ndarray]:
        """The arrays `pieces()` reads (memory-mapped from the index cache when there is one): what a
        loader hands back to the page cache after a micro-batch (cpt.sampling.mapped.release)."""
        t = self.table
        return [self.rows, self._lengths, self._bounds, self._cursor_table, self._fixed_order,
                *self._stored_orders.values(), t.lengths, t.source_of, t.local_index]

    # -------------------------------------------------------------------------------------- orders
    def epoch_rows(self, epoch: int) -> np.ndarray:
        """Table rows of the stream's documents in the order of `epoch` (0-based)."""
        return self.rows[self._order(epoch)]

    def _ppl_order(self) -> np.ndarray:
        col = self.config.ppl_column
        if col not in self.table.columns:
            raise ValueError(
                f"stream {self.name!r}: order {self.config.order!r} needs metadata column {col!r}, "
                f"which is missing (columns: {sorted(self.table.columns)}); score the shards first"
            )
        ppl = np.asarray(self.table.columns[col][self.rows], dtype=np.float64)
        bad = int(np.count_nonzero(~np.isfinite(ppl)))
        if bad:
            raise ValueError(f"stream {self.name!r}: {bad} selected documents have no finite {col!r}")
        key = ppl if self.config.order == "ppl_asc" else -ppl
        order = np.argsort(key, kind="stable")
        if self.config.ppl_bands == 1:
            return order
        # one generator over the bands in turn: the whole order follows from the seed alone; each band
        # is a view shuffled in place, so the order is never copied whole (8 bytes a document)
        rng = np.random.RandomState([self.config.seed, self.config.ppl_bands])
        for band in np.array_split(order, self.config.ppl_bands):
            band[:] = band[rng.permutation(len(band))]
        return order

    def _order(self, epoch: int) -> np.ndarray:
        if self._fixed_order is not None:
            return self._fixed_order
        if epoch in self._stored_orders:
            return self._stored_orders[epoch]
        if epoch not in self._epochs:
            # legacy RandomState: its streams are frozen by NumPy's policy, so orders never change
            rng = np.random.RandomState([self.config.seed, epoch])
            self._epochs[epoch] = rng.permutation(self.num_documents)
            while len(self._epochs) > _CACHED_EPOCHS:
                self._epochs.popitem(last=False)
        return self._epochs[epoch]

    def _flat_lengths(self, start: int, count: int) -> np.ndarray:
        """Lengths of the documents at flat positions [start, start + count) (epochs back to back)."""
        n, h = self.num_documents, len(self._head_rows)
        out = []
        if start < h:
            take = min(count, h - start)
            out.append(self.table.lengths[self._head_rows[start: start + take]] - self._head_skip[start: start + take])
            start, count = start + take, count - take
        while count > 0 and n > 0:
            epoch, j = divmod(start - h, n)
            epoch += self._first_epoch
            if epoch > 0 and self.config.on_exhausted == "stop":
                break
            take = min(count, n - j)
            out.append(self._lengths[self._order(epoch)[j : j + take]])
            start, count = start + take, count - take
        return np.concatenate(out).astype(np.int32) if out else np.zeros(0, np.int32)

    def rows_at(self, pos: np.ndarray) -> np.ndarray:
        """Table rows of the documents at flat positions `pos` (the head first, then whole epochs)."""
        pos = np.asarray(pos, dtype=np.int64)
        h = len(self._head_rows)
        rows = np.empty(len(pos), np.int64)
        in_head = pos < h
        rows[in_head] = self._head_rows[pos[in_head]]
        epoch, j = np.divmod(pos[~in_head] - h, max(self.num_documents, 1))
        rest = np.empty(len(j), np.int64)
        for e in np.unique(epoch):
            m = epoch == e
            rest[m] = self.rows[self._order(int(e) + self._first_epoch)[j[m]]]
        rows[~in_head] = rest
        return rows

    def epoch_at(self, pos: int) -> tuple[int, int]:
        """(epoch, index within that epoch's order) of flat position `pos`; the head is its epoch's
        rest, so its index counts from the head's start."""
        h = len(self._head_rows)
        if pos < h:
            return self.head.epoch, pos
        epoch, j = divmod(pos - h, max(self.num_documents, 1))
        return epoch + self._first_epoch, j

    @property
    def _first_epoch(self) -> int:
        return 0 if self.head is None else self.head.epoch + 1

    def start_head(self, head: StreamHead) -> None:
        """Start this stream (its sample 0) at `head`: the rest of an epoch a recipe edit cut.

        Samples are packed from there in memory (the index cache's packing covers streams that start
        at epoch 0); the selection and the orders still come from the cache.
        """
        if self.config.on_exhausted == "stop" and head.epoch > 0:
            raise ValueError(f"stream {self.name!r}: a `stop` stream has one epoch, not a head in epoch {head.epoch}")
        with mapped.scanning():
            order = self._order(head.epoch)
            rows = self.rows[order][~head.excluded[self.rows][order]]
        lead = [(int(r), int(o)) for r, o in head.partials if self.selects(r)]
        lead_rows = np.array([r for r, _ in lead], np.int64)
        self._head_rows = np.concatenate([lead_rows, rows[~np.isin(rows, lead_rows)]]).astype(np.int64)
        self._head_skip = np.zeros(len(self._head_rows), np.int64)  # tokens trained before the edit
        self._head_skip[: len(lead)] = [o for _, o in lead]
        self.head = head
        self._bounds, self._n_cached_segments = None, 0
        self._segments.clear()
        self._cursor_table, self._cursors = np.zeros((0, 2), np.int64), [(0, 0)]

    def selects(self, row: int) -> bool:
        """Whether table row `row` is one of this stream's documents."""
        at = int(np.searchsorted(self.rows, row))  # rows are in table order
        return at < len(self.rows) and int(self.rows[at]) == int(row)

    def _skip_at(self, pos: np.ndarray) -> np.ndarray:
        """Tokens of the document at each flat position trained before the stream started (a head's
        cut documents); 0 elsewhere."""
        skip = np.zeros(len(pos), np.int64)
        in_head = pos < len(self._head_rows)
        skip[in_head] = self._head_skip[pos[in_head]]
        return skip

    def _head_tokens(self) -> int:
        return int(self.table.lengths[self._head_rows].sum() - self._head_skip.sum()) if self.head else 0

    def cursor(self, k: int) -> tuple[int, int]:
        """(flat position, offset) where sample k * seg_len starts, if known (see _segment)."""
        t = self._cursor_table
        return (int(t[k, 0]), int(t[k, 1])) if k < len(t) else self._cursors[k - len(t)]

    def _known_cursors(self) -> int:
        return len(self._cursor_table) + len(self._cursors)

    # ------------------------------------------------------------------------------------ packing
    def _segment(self, k: int) -> np.ndarray:
        """Boundaries k*L .. (k+1)*L (inclusive; L = self._seg_len) as (flat position, offset) rows."""
        if k < self._n_cached_segments:
            L = self._seg_len
            return self._bounds[k * L: (k + 1) * L + 1]
        if k in self._segments:
            self._segments.move_to_end(k)
            return self._segments[k]
        while self._known_cursors() <= k:
            self._segment(self._known_cursors() - 1)
        pos, offset = self.cursor(k)
        parts = [np.array([[pos, offset]], dtype=np.int64)]
        need = self._seg_len
        mean_len = max(self.tokens_per_epoch / max(self.num_documents, 1), 1.0)
        window = int(min(max(need * self.config.seq_length / mean_len * 1.1 + 2, 16), 1 << 20))
        while need > 0:
            lengths = self._flat_lengths(pos, window)
            got, p, offset = pack_segment(lengths, 0, offset, self.config.seq_length, need, base=pos,
                                          add_extra_token=self.config.add_extra_token)
            parts.append(got)
            need -= len(got)
            if need and len(lengths) < window:
                break  # `stop` stream: no more documents
            if len(got) == 0:
                window *= 2  # a sample longer than the window: look further
            pos = pos + p
        seg = np.concatenate(parts)
        if self._known_cursors() == k + 1 and len(seg) == self._seg_len + 1:
            self._cursors.append((int(seg[-1, 0]), int(seg[-1, 1])))
        self._segments[k] = seg
        while len(self._segments) > _CACHED_SEGMENTS:
            self._segments.popitem(last=False)
        return seg

    def _check_indices(self, idx: np.ndarray) -> None:
        cap = self.capacity
        bad = idx[(idx < 0) | (idx >= cap)] if cap is not None else idx[idx < 0]
        if bad.size:
            raise StreamExhausted(
                f"stream {self.name!r} has {cap} samples ({self.tokens_per_epoch} tokens, seq_length "
                f"{self.config.seq_length}, on_exhausted={self.config.on_exhausted!r}); sample {int(bad[0])} does not exist"
            )

    def boundaries_many(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(flat position, offset) rows where each sample starts and where the next one starts."""
        idx = np.asarray(indices, dtype=np.int64).ravel()
        self._check_indices(idx)
        seg, r = np.divmod(idx, self._seg_len)
        first, after = np.empty((len(idx), 2), np.int64), np.empty((len(idx), 2), np.int64)
        for k in np.unique(seg):
            m = seg == k
            rows = self._segment(int(k))
            first[m], after[m] = rows[r[m]], rows[r[m] + 1]
        return first, after

    def boundaries(self, i: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(flat position, offset) where sample i starts and where sample i + 1 starts."""
        first, after = self.boundaries_many([i])
        return (int(first[0, 0]), int(first[0, 1])), (int(after[0, 0]), int(after[0, 1]))

    def pieces(self, indices) -> Pieces:
        """The token ranges of samples `indices` (seq_length + add_extra_token tokens each), vectorised."""
        first, after = self.boundaries_many(indices)
        p0, o0, p1, o1 = first[:, 0], first[:, 1], after[:, 0], after[:, 1]
        n_samples = len(p0)
        per = p1 - p0 + 1
        total = int(per.sum())
        owner = np.repeat(np.arange(n_samples), per)
        pos = np.repeat(p0, per) + (np.arange(total) - np.repeat(np.cumsum(per) - per, per))
        rows = self.rows_at(pos)
        shift = self._skip_at(pos)  # packing offsets count from a cut document's first untrained token
        start = np.where(pos == p0[owner], o0[owner], 0) + shift
        stop = np.where(pos == p1[owner], o1[owner] + self.config.add_extra_token + shift, self.table.lengths[rows])
        keep = stop > start
        offsets = np.zeros(n_samples + 1, np.int64)
        np.cumsum(np.bincount(owner[keep], minlength=n_samples), out=offsets[1:])
        rows = rows[keep]
        return Pieces(self.table.sources, offsets, self.table.source_of[rows], self.table.local_index[rows],
                      start[keep], stop[keep])

    def locate(self, i: int) -> list[DocPiece]:
        """The token ranges that make sample i, in order (seq_length + add_extra_token tokens in all)."""
        return self.pieces([i]).for_sample(0)
