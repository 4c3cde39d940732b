"""Batch encoding to flat token arrays, with a fast engine used only where it is exact.

`Encoder(tokenizer, engine="auto")` tries gigatoken (a Rust BPE engine) for the tokenizer and keeps
it only if it reproduces the reference tokenizer id for id on a probe set (scripts, code, whitespace
runs, control characters, special-token strings). During a run every `check_every`-th document is
also encoded with the reference; on any difference the encoder re-encodes the batch with the
reference and stays on the reference from then on. So the output is always the reference's ids;
the engine only changes the speed. `name` says which engine ran.

gigatoken refuses byte-level vocabularies that lack a token for some single bytes (SmolLM2 lacks 21,
all control or never-valid UTF-8 bytes). For those we give the missing bytes placeholder ids past
the vocabulary; a document whose encoding contains a placeholder is re-encoded by the reference,
and every other document is unaffected (no merge rule involves a missing byte). Likewise gigatoken
splits a SentencePiece model's control pieces (`<s>`, `</s>`, `<unk>`) out of the text where the
sentencepiece library keeps them as text: documents containing one are re-encoded by the reference.
"""
from __future__ import annotations

import json
import re
from typing import Sequence

import numpy as np

from cpt.tokenizers.base import Tokenizer

PROBE = [
    "Hello, world! It's a test: don't, we'll, they're, I'VE.",
    "  leading spaces,\ttabs\t\tand\n\nnewlines\r\n\r\n   trailing   ",
    "人民日报社论：坚持改革开放，推动经济发展。１９９８年１月１日",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n\n\nclass A:\n\tpass\n",
    "Numbers 1234567890 3.14159 1,000,000 and 2024-01-01T12:00:00Z",
    "Émojis 😀👍🏽 and accents: café naïve Ångström Straße ÆØÅ",
    "Русский текст, ελληνικά, العربية, עברית, हिन्दी, 日本語のテキスト, 한국어",
    "<|endoftext|> </s> <s> <|end_of_text|> <|im_end|> [INST] special strings as text",
    "control \x04 chars \x06 here \x1d and \x7f delete",
    "a" * 300 + " " + "ab" * 200,
    "\u200b zero width \u00a0 nbsp \u3000 ideographic space",
    "    \n    \n",
    "x",
]


def _flat(ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int64, count=int(lengths.sum()))
    return flat, lengths


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _gigatoken_for(tok: Tokenizer):
    """(gigatoken tokenizer, first placeholder id or None); raises if gigatoken cannot load it.

    The tokenizer's `guards` (see `_guard_strings`) are set separately by the Encoder."""
    import gigatoken

    if tok.kind == "hf":
        from pathlib import Path

        path = Path(tok.spec.path)
        data = json.loads((path / "tokenizer.json" if path.is_dir() else path).read_text(encoding="utf-8"))
        model = data.get("model", {})
        placeholder = None
        if model.get("type") == "BPE" and isinstance(model.get("vocab"), dict):
            vocab = model["vocab"]
            missing = [c for c in _bytes_to_unicode().values() if c not in vocab]
            if missing and (data.get("pre_tokenizer") or {}).get("type") == "ByteLevel":
                top = max([*vocab.values(), *(t["id"] for t in data.get("added_tokens", []))]) + 1
                for k, c in enumerate(missing):
                    vocab[c] = top + k
                placeholder = top
        return gigatoken.Tokenizer.from_json(json.dumps(data)), placeholder
    if tok.kind == "tiktoken":
        scheme = {"cl100k": "gpt4", "o200k": "o200k", "llama3": "gpt4"}.get(tok.family)
        if scheme is None:
            raise ValueError(f"no gigatoken scheme for the {tok.family} tiktoken family")
        return gigatoken.Tokenizer.from_tiktoken(tok.spec.path, pretokenizer=scheme, special_tokens={}), None
    if tok.kind == "sentencepiece":
        return gigatoken.Tokenizer.from_sentencepiece(tok.spec.path), None
    raise ValueError(f"no fast engine for {tok.kind}")


def _guard_strings(tok: Tokenizer) -> tuple[str, ...]:
    """Strings whose presence sends a document to the reference (SentencePiece control pieces)."""
    if tok.kind != "sentencepiece":
        return ()
    sp = tok.processor
    return tuple(
        sp.id_to_piece(i) for i in range(sp.get_piece_size())
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i)
    )


class _GuardSet:
    """Finds any of many literal strings fast: a regex over their 2-character prefixes proposes
    positions, a set lookup per candidate length confirms (SentencePiece v3 has 771 control pieces)."""

    def __init__(self, guards: Sequence[str]):
        self.strings = frozenset(g for g in guards if g)
        self.lengths: dict[str, list[int]] = {}
        for g in self.strings:
            self.lengths.setdefault(g[:2], [])
            if len(g) not in self.lengths[g[:2]]:
                self.lengths[g[:2]].append(len(g))
        self.regex = re.compile("|".join(re.escape(p) for p in sorted(self.lengths))) if self.strings else None

    def __bool__(self) -> bool:
        return self.regex is not None

    def found_in(self, text: str) -> bool:
        for m in self.regex.finditer(text):
            p = m.start()
            if any(text[p: p + n] in self.strings for n in self.lengths[m.group()]):
                return True
        return False


class Encoder:
    """Encodes batches of texts to (flat ids, lengths) with the reference or a verified fast engine."""

    def __init__(self, tokenizer: Tokenizer, engine: str = "auto", check_every: int = 512):
        if engine not in ("auto", "reference", "gigatoken"):
            raise ValueError(f"engine must be auto, reference or gigatoken, got {engine!r}")
        self.tokenizer = tokenizer
        self.check_every = max(1, check_every)
        self.fast = None
        self.placeholder: int | None = None
        self.guards = _GuardSet(())
        self.fallback_reason = "engine=reference requested" if engine == "reference" else None
        self.fallbacks = 0
        self.redone = 0
        self._seen = 0
        if engine != "reference":
            self._try_fast()
            if self.fast is None and engine == "gigatoken":
                raise ValueError(f"gigatoken cannot reproduce {tokenizer.name}: {self.fallback_reason}")

    @property
    def name(self) -> str:
        ref = f"reference ({self.tokenizer.kind})"
        return "gigatoken (verified)" if self.fast is not None else ref

    def _try_fast(self) -> None:
        try:
            fast, placeholder = _gigatoken_for(self.tokenizer)
        except Exception as e:  # noqa: BLE001 - missing package or refused vocabulary: use the reference
            self.fallback_reason = f"gigatoken unavailable: {str(e).splitlines()[0]}"
            return
        self.fast, self.placeholder = fast, placeholder
        self.guards = _GuardSet(_guard_strings(self.tokenizer))
        ref_flat, ref_len = _flat(self.tokenizer.encode_batch(PROBE))
        flat, lengths = self._encode_fast(PROBE)
        if not (np.array_equal(ref_len, lengths) and np.array_equal(ref_flat, flat)):
            self.fast = None
            self.fallback_reason = "gigatoken differs from the reference on the probe set"

    def _encode_fast(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        texts = list(texts)
        # small batches: the thread pool's start-up costs more than it saves
        parallel = None if len(texts) >= 64 and sum(map(len, texts)) >= (1 << 20) else False
        out = self.fast.encode_batch(texts, parallel=parallel)
        offsets = np.asarray(out.layout.offsets.data, dtype=np.int64)
        flat = np.asarray(out.layout.content.data)[offsets[0]: offsets[-1]].astype(np.int64)
        lengths = np.diff(offsets)
        starts = np.concatenate([[0], np.cumsum(lengths)])
        bad = []
        if self.placeholder is not None and len(flat) and flat.max() >= self.placeholder:
            bad = [i for i in range(len(texts)) if flat[starts[i]: starts[i + 1]].max(initial=0) >= self.placeholder]
        if self.guards:
            bad = sorted(set(bad) | {i for i, t in enumerate(texts) if self.guards.found_in(t)})
        if bad:
            flat, lengths = self._redo(texts, flat, starts, bad)
        return flat, lengths

    def _redo(self, texts, flat, starts, bad):
        """Re-encode the documents `bad` with the reference and splice them in."""
        redo = dict(zip(bad, self.tokenizer.encode_batch([texts[i] for i in bad])))
        self.redone += len(bad)
        parts = [np.asarray(redo[i], np.int64) if i in redo else flat[starts[i]: starts[i + 1]] for i in range(len(texts))]
        return (np.concatenate(parts) if parts else flat), np.array([len(p) for p in parts], np.int64)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Flat int64 ids of all texts back to back, and the number of ids of each."""
        if self.fast is None:
            return _flat(self.tokenizer.encode_batch(texts))
        flat, lengths = self._encode_fast(texts)
        first = (-self._seen) % self.check_every
        self._seen += len(texts)
        sample = list(range(first, len(texts), self.check_every))
        if sample:
            starts = np.concatenate([[0], np.cumsum(lengths)])
            ref = self.tokenizer.encode_batch([texts[i] for i in sample])
            for i, ids in zip(sample, ref):
                if not np.array_equal(flat[starts[i]: starts[i + 1]], np.asarray(ids, np.int64)):
                    self.fast = None
                    self.fallbacks += 1
                    self.fallback_reason = f"gigatoken differed from the reference on a sampled document"
                    return _flat(self.tokenizer.encode_batch(texts))
        return flat, lengths
