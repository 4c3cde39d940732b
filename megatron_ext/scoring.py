"""Perplexity scoring with our own megatron checkpoints: a `cpt.annotate.perplexity.Scorer`.

`cpt score --model CKPT` takes a training checkpoint (`checkpoints/step_N`), a `checkpoints` or
run folder (its latest complete step), or a `cpt convert hf-to-mcore` import, and plugs
`MegatronScorer` in through the annotator's `package.module:callable` backend seam. Windows,
stride, batching by length and the ppl aggregation are the annotator's, exactly as for the HF
scorer; only the forward pass differs. NLL is taken over the tokenizer's `vocab_size` logits, so
the rows megatron pads the vocabulary with never take probability mass.

One process, TP = PP = 1: scoring parallelises over documents (`--workers`, and
`--shard-index/--num-shards` over machines), not over the model. The model is built by
`megatron_ext.model.build_model` and its weights read with megatron's `dist_checkpointing.load`
(no optimizer is built or read). Importing this module does not import megatron; building a scorer
does (~9 s).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from cpt.annotate.perplexity import BucketedScorer, Window, default_max_batch_tokens
from cpt.train.checkpoint import resolve_load_path

HF_SUBDIR = "hf"  # inside an import: the source model's config and tokenizer (megatron_ext.convert.files)


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` names a complete cpt megatron checkpoint (directly or as its latest)."""
    try:
        resolve_load_path(path)
    except FileNotFoundError:
        return False
    return True


def tokenizer_dir(path: str | Path) -> Path:
    """The HF tokenizer of a checkpoint: an import's `hf/` folder, or that of the checkpoint its
    run started from (`training.load` in the saved recipe, followed back to the import)."""
    ckpt = resolve_load_path(path)
    seen: list[Path] = []
    while ckpt not in seen and len(seen) < 16:
        seen.append(ckpt)
        if (ckpt / HF_SUBDIR / "config.json").is_file():
            return ckpt / HF_SUBDIR
        state = json.loads((ckpt / "trainer_state.json").read_text())
        load = ((state.get("recipe") or {}).get("training") or {}).get("load")
        if not load:
            break
        try:
            ckpt = resolve_load_path(load)
        except FileNotFoundError:
            break
    raise FileNotFoundError(f"{path}: no tokenizer found (looked for {HF_SUBDIR}/ in "
                            f"{', '.join(map(str, seen))}); pass --tokenizer HF_FOLDER")


class MegatronScorer(BucketedScorer):
    """Sum of NLL per window from a megatron GPTModel loaded from a cpt checkpoint."""

    def __init__(self, checkpoint: str | Path, max_length: int | None = None, device: str | None = None,
                 dtype: str | None = None, max_batch_tokens: int | None = None) -> None:
        import torch

        from cpt.annotate.modelfiles import pick_device
        from cpt.config import ParallelConfig
        from megatron_ext.convert.to_hf import checkpoint_model

        self.checkpoint = resolve_load_path(checkpoint)
        self.cfg, _ = checkpoint_model(self.checkpoint)
        self.device = pick_device(device)
        dtype = dtype or ("bfloat16" if self.device.startswith("cuda") else "float32")
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"--dtype {dtype!r}: use float32, bfloat16 or float16")
        self.max_length = min(max_length or self.cfg.max_position_embeddings, self.cfg.max_position_embeddings)
        self.max_batch_tokens = max_batch_tokens or default_max_batch_tokens(self.device, 16384)
        if max_batch_tokens:
            self._check_batch_tokens()
        self._torch = torch
        self.model = self._load(ParallelConfig(), getattr(torch, dtype))

    def _load(self, par, dtype):
        from megatron.core import dist_checkpointing, parallel_state
        from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed
        import torch.distributed as dist

        from megatron_ext.convert.dcp_read import CheckpointTensors
        from megatron_ext.convert.world import ensure_world
        from megatron_ext.model import build_model, padded_vocab_size

        rows = CheckpointTensors(self.checkpoint).shape("embedding.word_embeddings.weight")[0]
        if rows != padded_vocab_size(self.cfg, 1):
            raise ValueError(f"{self.checkpoint}: the vocabulary is padded to {rows} rows, a TP=1 model has "
                             f"{padded_vocab_size(self.cfg, 1)}; export it (cpt convert mcore-to-hf) "
                             f"and score the HF folder")
        ensure_world()
        if dist.get_world_size() != 1:
            raise RuntimeError("MegatronScorer runs in one process; scale out with --workers / --num-shards")
        if not parallel_state.model_parallel_is_initialized():
            parallel_state.initialize_model_parallel(1, 1)
            model_parallel_cuda_manual_seed(0)
        model = build_model(self.cfg, par, dtype, self.max_length, pre_process=True, post_process=True)
        model.to(self.device)
        loaded = dist_checkpointing.load({"model": model.sharded_state_dict()}, str(self.checkpoint))
        model.load_state_dict(loaded["model"], strict=True)
        return model.eval()

    def _score_batch(self, windows: Sequence[Window]) -> np.ndarray:
        torch = self._torch
        longest = self._longest(windows)
        # right padding: the model is causal, so pad tokens after a window never reach its positions
        ids = torch.zeros((len(windows), longest), dtype=torch.long)
        scored = torch.zeros((len(windows), longest - 1), dtype=torch.bool)
        for row, w in enumerate(windows):
            ids[row, :len(w.tokens)] = torch.from_numpy(w.tokens)
            scored[row, w.first_target - 1:len(w.tokens) - 1] = True  # position t-1 predicts token t
        ids, scored = ids.to(self.device), scored.to(self.device)
        pos = torch.arange(longest, device=self.device).unsqueeze(0).expand_as(ids)
        targets = ids[:, 1:][scored]
        rows = torch.arange(len(windows), device=self.device)[:, None].expand_as(scored)[scored]
        with torch.no_grad():
            logits = self.model(ids, pos, None)  # [b, s, padded vocab]
            picked = logits[:, :-1][scored][:, : self.cfg.vocab_size].float()
            del logits
            nll = torch.nn.functional.cross_entropy(picked, targets, reduction="none")
            sums = torch.zeros(len(windows), dtype=torch.float64, device=self.device)
            sums.index_add_(0, rows, nll.double())
        return sums.cpu().numpy()


__all__ = ["MegatronScorer", "is_checkpoint", "tokenizer_dir"]
