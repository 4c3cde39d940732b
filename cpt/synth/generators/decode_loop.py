"""A batched decode loop for a transformers causal LM that computes only the rows still generating.

`model.generate` computes every row of a batch until the batch's last row ends: a row that has
emitted EOS keeps its KV cache row and is fed padding for the rest of the batch. This loop keeps
the batch as a set of live rows instead:

- A row leaves the batch, with its KV cache row and attention-mask row, the step it ends (EOS or
  `max_new_tokens`); leading cache columns that no live row attends any more are cut off.
- With `refill`, waiting prompts are admitted into freed slots (continuous batching): they are
  prefilled together, left-padded, and their cache rows are merged into the running cache, padded
  on the left to a common width. Admission waits until a quarter of the slots are free, so a
  merge (one copy of the cache) serves several rows. Without `refill`, a new group of prompts is
  admitted only when the batch is empty: `generate`'s batches, minus the finished rows.

Every row is left-padded; its attention mask marks its real tokens and its position ids count
them (`cumsum(mask) - 1`, as `generate` computes them), so a row's tokens do not depend on how much
padding it carries, up to floating-point rounding of the differently shaped matmuls.

Sampling is per row: each prompt brings its own `torch.Generator`, seeded by the caller, and draws
its tokens from it alone, so a row's sampled text does not depend on its batch-mates (except
through that rounding). Greedy decoding (temperature 0) takes the argmax, as `generate` does.

The cache's layout and the forward's keyword names differ between transformers versions; the
functions at the end of this module are the only code that knows them.
"""
from __future__ import annotations

import collections
import inspect
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch


@dataclass(slots=True)
class Row:
    """One prompt in the loop: its ids, its sampler, what it has generated so far."""

    index: int
    """Position in the caller's list of prompts."""
    prompt_ids: list[int]
    generator: torch.Generator | None = None
    """This row's own random stream (None under greedy decoding)."""
    tokens: list[int] = field(default_factory=list)
    finished: bool = False
    """True when it ended with a stop token, False when it ran out of `max_new_tokens`."""


@dataclass(slots=True)
class DecodeStats:
    """What the loop computed: rows per forward, to compare with `generate`'s full batches."""

    forwards: int = 0
    """Model calls (prefills and decode steps)."""
    prefill_tokens: int = 0
    """Prompt positions computed, padding included."""
    row_steps: int = 0
    """Rows computed by decode steps, summed over steps (one per generated token after the first)."""
    merges: int = 0
    """Admissions into a running batch (continuous batching)."""


class DecodeLoop:
    """Generates for many prompts with at most `slots` rows per forward, dropping finished rows."""

    def __init__(self, model, *, pad_id: int, stop_ids: Sequence[int], max_new_tokens: int, slots: int,
                 pick: Callable[[torch.Tensor, list[Row]], torch.Tensor], refill: bool = True,
                 stats: DecodeStats | None = None) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.model = model
        self.pad_id = pad_id
        self.stop_ids = frozenset(stop_ids)
        self.max_new_tokens = max_new_tokens
        self.slots = slots
        self.pick = pick
        """Next token per live row from its float32 logits (greedy or sampled)."""
        self.refill = refill
        self.device = next(model.parameters()).device
        self.forward_keywords = _forward_keywords(model)
        """The cache's keyword (and asking for the last position's logits only), as this version names them."""
        self.stats = stats if stats is not None else DecodeStats()
        """Counts added to as the loop computes (pass one to sum several loops)."""

    def run(self, rows: Sequence[Row]) -> Iterator[Row]:
        """Yield each row as it ends, in the order they end; `rows` are admitted in the order given."""
        waiting = collections.deque(rows)
        live: list[Row] = []
        cache = mask = logits = None
        min_admit = max(1, self.slots // 4)
        while waiting or live:
            free = self.slots - len(live)
            if waiting and (not live or (self.refill and free >= min(min_admit, len(waiting)))):
                new = [waiting.popleft() for _ in range(min(free, len(waiting)))]
                new_logits, new_cache, new_mask = self._prefill(new)
                if live:
                    cache, mask = _merge(cache, mask, new_cache, new_mask)
                    logits = torch.cat([logits, new_logits])
                    self.stats.merges += 1
                else:
                    cache, mask, logits = new_cache, new_mask, new_logits
                live += new
            picked = self.pick(logits, live).tolist()
            keep = []
            for i, (row, token) in enumerate(zip(live, picked)):
                row.tokens.append(token)
                row.finished = token in self.stop_ids
                if row.finished or len(row.tokens) >= self.max_new_tokens:
                    yield row
                else:
                    keep.append(i)
            if len(keep) < len(live):
                live = [live[i] for i in keep]
                if not live:
                    continue
                cache, mask = _select(cache, mask, torch.tensor(keep, device=self.device))
            last = torch.tensor([[picked[i] for i in keep]], device=self.device).T
            logits, mask = self._step(last, cache, mask)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, cache) -> torch.Tensor:
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)[:, -ids.shape[1]:]
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         **{self.forward_keywords["cache"]: cache}, **self.forward_keywords["last_only"])
        self.stats.forwards += 1
        return out.logits[:, -1].float()

    def _prefill(self, rows: list[Row]):
        """Left-padded prompts of `rows` through the model: next-token logits, a fresh cache, the mask."""
        width = max(len(r.prompt_ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, width - len(r.prompt_ids):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        cache = _new_cache(self.model)
        logits = self._forward(ids, mask, cache)
        self.stats.prefill_tokens += ids.numel()
        return logits, cache, mask

    def _step(self, last: torch.Tensor, cache, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        logits = self._forward(last, mask, cache)
        self.stats.row_steps += last.shape[0]
        return logits, mask


def _select(cache, mask: torch.Tensor, keep: torch.Tensor):
    """Keep rows `keep` of the cache and mask, then cut the leading columns no kept row attends."""
    mask = mask.index_select(0, keep)
    attended = mask.any(dim=0).nonzero()
    start = int(attended[0]) if len(attended) else 0
    _set_kv(cache, [(k.index_select(0, keep)[:, :, start:], v.index_select(0, keep)[:, :, start:])
                    for k, v in _kv(cache)])
    return cache, mask[:, start:]


def _merge(cache, mask: torch.Tensor, other, other_mask: torch.Tensor):
    """One batch of both caches' rows, each left-padded (masked) to the wider one's length."""
    width = max(mask.shape[1], other_mask.shape[1])

    def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
        missing = width - t.shape[dim]
        if not missing:
            return t
        shape = list(t.shape)
        shape[dim] = missing
        return torch.cat([t.new_zeros(shape), t], dim=dim)

    _set_kv(cache, [(torch.cat([pad(k, 2), pad(k2, 2)]), torch.cat([pad(v, 2), pad(v2, 2)]))
                    for (k, v), (k2, v2) in zip(_kv(cache), _kv(other))])
    return cache, torch.cat([pad(mask, 1), pad(other_mask, 1)])


# The cache's layout and the forward's keywords, per transformers version: the only code that knows them.

def _forward_keywords(model) -> dict:
    """The forward's name for the cache (5.x `cache`, 4.x `past_key_values`) and its last-logits-only option."""
    names = inspect.signature(model.forward).parameters
    last_only = next(({name: 1} for name in ("logits_to_keep", "num_logits_to_keep") if name in names), {})
    return {"cache": "cache" if "cache" in names else "past_key_values", "last_only": last_only}


def _new_cache(model):
    """An empty dynamic cache for `model` (the config tells 5.x which layer kinds to build)."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # transformers < 4.56: no config argument
        return DynamicCache()


def _kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's (keys, values), shaped [batch, kv_heads, length, head_dim]."""
    if hasattr(cache, "layers"):  # transformers >= 4.56: one object per layer
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


def _set_kv(cache, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Replace each layer's (keys, values) in place."""
    if hasattr(cache, "layers"):
        for layer, (k, v) in zip(cache.layers, kv):
            layer.keys, layer.values = k, v
    else:
        cache.key_cache = [k for k, _ in kv]
        cache.value_cache = [v for _, v in kv]


def supports_row_surgery(model) -> bool:
    """Whether every cache layer holds the full sequence (no sliding window), so rows can be cut and merged."""
    cache = _new_cache(model)
    if not hasattr(cache, "layers"):
        return not getattr(model.config, "sliding_window", None)
    from transformers.cache_utils import DynamicLayer

    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)
