"""The one tokenizer interface the data layer uses.

Every backend (HF `tokenizers`/transformers, tiktoken BPE files, SentencePiece) is wrapped to the
same small surface: `vocab_size`, `eod`, `encode_batch`, `decode`, and an `identity` (kind, name and
a hash of the files plus the options that change the ids). Shards record that identity in their
manifest and readers compare it, so a shard is never paired with a tokenizer that did not make it.
Workers rebuild a tokenizer from its picklable `spec` instead of pickling the backend object.
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence


class TokenizerError(ValueError):
    """A tokenizer file is missing, of an unknown kind, or inconsistent; the message names the path."""


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything needed to rebuild a tokenizer in another process."""

    kind: str
    """"hf", "tiktoken" or "sentencepiece"."""
    path: str
    """Local file or folder the tokenizer was loaded from (absolute)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Backend options that change the ids (e.g. add_special_tokens, family)."""

    def build(self) -> "Tokenizer":
        from cpt.tokenizers.load import load_tokenizer

        return load_tokenizer(self.path, kind=self.kind, **self.options)


def hash_files(paths: Sequence[Path], options: dict[str, Any]) -> str:
    """sha256 over the files' names and bytes and the options, in a fixed order."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda q: q.name):
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    h.update(json.dumps(options, sort_keys=True).encode())
    return h.hexdigest()


class Tokenizer(ABC):
    """A loaded tokenizer: reference encoder, decoder, EOD id and identity."""

    kind: str
    name: str
    vocab_size: int
    eod: int

    def __init__(self, spec: TokenizerSpec, files: Sequence[Path]):
        self.spec = spec
        self._files = [Path(f) for f in files]
        self._sha256: str | None = None

    @abstractmethod
    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, exactly as the reference library produces them."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of a sequence of ids."""

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = hash_files(self._files, self.spec.options)
        return self._sha256

    def files_unchanged(self) -> bool:
        """Its files still hash to `sha256` (a long-lived process keeping a loaded tokenizer asks)."""
        return hash_files(self._files, self.spec.options) == self.sha256

    def identity(self) -> dict[str, Any]:
        """What a shard manifest records about the tokenizer that made it."""
        return {
            "kind": self.kind,
            "name": self.name,
            "sha256": self.sha256,
            "vocab_size": int(self.vocab_size),
            "eod": int(self.eod),
            "options": dict(self.spec.options),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size}, eod={self.eod})"


def spec_dict(spec: TokenizerSpec) -> dict[str, Any]:
    return asdict(spec)
