"""Training samples drawn by the dynamic Blender over Streams of cpt shards.

The main process decides every sample id: the Blender (deterministic from its weight history) maps
global sample g to (stream, index within stream); the Stream maps that to token ranges of shard
documents. Only the reading of those ranges may run in worker processes, so a weight change set
for global sample t·B applies exactly from step t whatever the number of workers. The data state
saved in checkpoints is the Blender's (weight history + counts), versioned and checked on load.

Batches are megatron-style: tokens, labels, loss_mask, position_ids (+ attention_mask when
document-boundary masking is on), built as megatron's GPTDataset builds them.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from cpt.config import DataConfig, StreamSpec
from cpt.sampling import Blender, DocumentTable, Stream, StreamConfig, read_samples
from cpt.train.engine import Batch


def ltor_masks(tokens: np.ndarray, eod: Optional[int], reset_position_ids: bool, reset_attention_mask: bool,
               eod_mask_loss: bool) -> dict[str, np.ndarray]:
    """Loss mask, position ids and (optionally) a causal mask cut at end-of-document tokens, for
    tokens [b, s]; the same rules as megatron's `_get_ltor_masks_and_position_ids`. The attention
    mask is True where attention is NOT allowed."""
    b, s = tokens.shape
    loss_mask = np.ones((b, s), dtype=np.float32)
    if eod_mask_loss:
        loss_mask[tokens == eod] = 0.0
    position_ids = np.broadcast_to(np.arange(s, dtype=np.int64), (b, s)).copy()
    out: dict[str, np.ndarray] = {"loss_mask": loss_mask, "position_ids": position_ids}
    mask = None
    if reset_attention_mask:
        mask = np.broadcast_to(~np.tril(np.ones((s, s), dtype=bool)), (b, 1, s, s)).copy()
    if reset_position_ids or reset_attention_mask:
        for row in range(b):
            prev = 0
            for i in np.flatnonzero(tokens[row] == eod):
                if reset_attention_mask:
                    mask[row, 0, i + 1:, : i + 1] = True
                if reset_position_ids:
                    position_ids[row, i + 1:] -= i + 1 - prev
                prev = i + 1
    if mask is not None:
        out["attention_mask"] = mask
    return out


_WORKER_SHARDS: dict[str, Any] = {}


def _open_shard(prefix: str) -> Any:
    from cpt import shards

    shard = _WORKER_SHARDS.get(prefix)
    if shard is None:
        shard = _WORKER_SHARDS[prefix] = shards.open(prefix)
    return shard


def _read(args: tuple) -> np.ndarray:
    pieces, sample_tokens = args
    return read_samples(pieces, _open_shard, sample_tokens)


def build_streams(specs: Sequence[StreamSpec], seq_length: int) -> list[Stream]:
    """One Stream per recipe stream (each over the DocumentTable of its shard prefixes)."""
    tables: dict[tuple[str, ...], DocumentTable] = {}
    streams = []
    for spec in specs:
        key = tuple(spec.prefixes)
        if key not in tables:
            tables[key] = DocumentTable.from_shards(list(key))
        streams.append(Stream(tables[key], StreamConfig(
            name=spec.name, seq_length=seq_length, filter=spec.filter, order=spec.order, seed=spec.seed,
            on_exhausted=spec.on_exhausted,
        )))
    return streams


class BlendedSamples:
    """Samples by global index through a Blender; `fetch(indices)` builds one micro-batch."""

    def __init__(self, streams: Sequence[Stream], weights: Sequence[float] | Mapping[str, float],
                 seq_length: int, data: DataConfig) -> None:
        self.streams = list(streams)
        self.blender = Blender.from_streams(self.streams, weights)
        self.seq_length = seq_length
        self.data = data
        self._pool = ProcessPoolExecutor(data.num_workers) if data.num_workers > 0 else None

    def sample_ids(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(stream id, index within stream) of global samples `indices` (drawing ahead as needed)."""
        stop = int(indices.max()) + 1
        if stop > self.blender.drawn:
            self.blender.next_samples(stop - self.blender.drawn)
        lo = int(indices.min())
        ids = self.blender.sample_ids(lo, stop)
        return ids.stream[indices - lo], ids.index[indices - lo]

    def prepare_step(self, start: int, stop: int) -> None:
        self.sample_ids(np.arange(start, stop, dtype=np.int64))

    def _tokens(self, stream_ids: np.ndarray, within: np.ndarray) -> np.ndarray:
        out = np.empty((len(stream_ids), self.seq_length + 1), dtype=np.int64)
        jobs, rows = [], []
        for k in np.unique(stream_ids):
            sel = np.flatnonzero(stream_ids == k)
            jobs.append((self.streams[int(k)].pieces(within[sel]), self.seq_length + 1))
            rows.append(sel)
        results = self._pool.map(_read, jobs) if self._pool is not None else map(_read, jobs)
        for sel, tokens in zip(rows, results):
            out[sel] = tokens
        return out

    def fetch(self, indices: np.ndarray) -> Batch:
        stream_ids, within = self.sample_ids(np.asarray(indices, dtype=np.int64))
        sample = self._tokens(stream_ids, within)
        tokens, labels = sample[:, :-1], sample[:, 1:]
        d = self.data
        masks = ltor_masks(tokens, d.eod_token_id, d.reset_position_ids, d.reset_attention_mask, d.eod_mask_loss)
        return {"tokens": tokens, "labels": labels, **masks}

    # the data position lives in the Blender: weight history + counts

    def set_weights(self, weights: Sequence[float] | Mapping[str, float], effective_at: int) -> None:
        self.blender.set_weights(weights, effective_at=effective_at)

    def state_dict(self) -> dict[str, Any]:
        return {"blender": self.blender.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.blender.load_state_dict(state["blender"])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
