"""Sentence embeddings from a local HF encoder folder (mean pooling, L2-normalised).

This is how all-MiniLM-L6-v2 was trained to be used (sentence-transformers' Pooling + Normalize
modules), reproduced with plain transformers so any BERT-class folder works the same way. Used by
zero-shot labelling; the classifier fine-tunes the same encoder.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cpt.annotate.modelfiles import check_model_dir, pick_device


def mean_pool(hidden, attention_mask):
    """Mean of the token vectors under the attention mask, L2-normalised, as float32."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


class Encoder:
    def __init__(self, model_dir: str, device: str | None = None, max_length: int = 128):
        import torch
        from transformers import AutoModel, AutoTokenizer

        check_model_dir(model_dir, "encoder")
        self._torch = torch
        self.device = pick_device(device)
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).to(self.device).eval()

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """[len(texts), hidden] float32 unit vectors; texts are truncated to `max_length` tokens."""
        torch = self._torch
        out = []
        for k in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[k:k + batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                pooled = mean_pool(self.model(**enc).last_hidden_state, enc["attention_mask"])
            out.append(pooled.cpu().numpy())
        hidden_size = self.model.config.hidden_size
        return np.concatenate(out) if out else np.zeros((0, hidden_size), dtype=np.float32)
