"""Fixed-weight training data over Megatron token shards, through megatron-core's own GPTDataset and
BlendedDataset (document shuffling, packing into seq_length + 1 samples, greedy blending).

The loop asks for samples by global index, so the data position is just the consumed-sample count:
resuming, or changing the number of data-parallel ranks, needs no loader state. (The dynamic
Blender of cpt.sampling replaces this for mixtures whose weights change during a run.)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset

from cpt.config import DataConfig


@dataclass(frozen=True)
class _TokenIds:
    """What GPTDataset needs of a tokenizer: the end-of-document and padding ids."""

    eod: int
    pad: int
    vocab_size: int

    @property
    def unique_identifiers(self) -> dict:
        # part of megatron's cache key for the sample index
        return {"class": "cpt.TokenIds", "eod": self.eod, "pad": self.pad, "vocab_size": self.vocab_size}


def _check_prefixes(blend: Sequence[Sequence]) -> None:
    for prefix, _ in blend:
        for suffix in (".bin", ".idx"):
            if not Path(prefix + suffix).is_file():
                raise FileNotFoundError(f"data shard {prefix}{suffix} does not exist")


class SampleDataset:
    """Samples by global index: dicts of `tokens`, `labels`, `loss_mask`, `position_ids` (int64/float32),
    plus `document_ids` (int32) per micro-batch when `document_eod` is given (document masking)."""

    def __init__(self, dataset: object, num_samples: int, document_eod: int | None = None) -> None:
        """document_eod: the end-of-document id whose documents attention stays within
        (data.reset_attention_mask), sent as document ids like the Blender path's; None: causal only."""
        self._dataset = dataset
        self.num_samples = num_samples
        self.document_eod = document_eod

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, index: int) -> Mapping[str, np.ndarray]:
        item = self._dataset[index]
        return {k: v.numpy() if hasattr(v, "numpy") else np.asarray(v) for k, v in item.items()}

    def prepare_step(self, start: int, stop: int) -> None:
        """Nothing to decide: megatron's index covers the whole run (built at start-up)."""

    def fetch(self, indices: np.ndarray) -> Mapping[str, np.ndarray]:
        """The samples at these global indices, stacked into one micro-batch."""
        samples = [self[int(i)] for i in indices]
        batch = {k: np.stack([s[k] for s in samples]) for k in samples[0]}
        if self.document_eod is not None:
            from cpt.train.stream_data import ltor_masks

            batch["document_ids"] = ltor_masks(batch["tokens"], self.document_eod, False, True, False)["document_ids"]
        return batch


def build_dataset(
    blend: Sequence[Sequence], data: DataConfig, num_samples: int, seq_length: int, seed: int,
    cache_dir: str, vocab_size: int,
) -> SampleDataset:
    """A megatron GPT dataset over `blend` ([[prefix, weight], ...]) with `num_samples` samples."""
    _check_prefixes(blend)
    prefixes = [str(p) for p, _ in blend]
    weights = [float(w) for _, w in blend]
    eod = data.eod_token_id if data.eod_token_id is not None else 0
    config = GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend=(prefixes, weights) if len(prefixes) > 1 else (prefixes, None),
        split="1,0,0",
        path_to_cache=cache_dir,
        tokenizer=_TokenIds(eod=eod, pad=-1, vocab_size=vocab_size),  # -1: no real token is padding
        reset_position_ids=data.reset_position_ids,
        reset_attention_mask=data.reset_attention_mask,
        eod_mask_loss=data.eod_mask_loss,
        create_attention_mask=False,  # document masking travels as document_ids (megatron_ext.attention_mask)
        mmap_bin_files=True,
    )
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    train, _, _ = BlendedMegatronDatasetBuilder(
        GPTDataset, [num_samples, 0, 0], lambda: True, config
    ).build()
    return SampleDataset(train, num_samples, eod if data.reset_attention_mask else None)


def shard_tokens(prefix: str) -> int:
    """Total tokens in a shard (for sizing and logs)."""
    return int(IndexedDataset(prefix).sequence_lengths.sum())
