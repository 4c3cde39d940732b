"""Pick and load a tokenizer from a local path (never a hub name: nothing downloads here)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cpt.tokenizers.base import Tokenizer, TokenizerError

# Megatron-LM's --tokenizer-type names, mapped to our kinds.
MEGATRON_TYPES = {
    "HuggingFaceTokenizer": "hf",
    "TikTokenizer": "tiktoken",
    "SentencePieceTokenizer": "sentencepiece",
    "GPTSentencePieceTokenizer": "sentencepiece",
    "Llama2Tokenizer": "sentencepiece",
}
KINDS = ("hf", "tiktoken", "sentencepiece")


def detect_kind(path: Path) -> str:
    """hf for tokenizer.json or a folder with one; tiktoken for rank files; sentencepiece otherwise."""
    from cpt.tokenizers.tiktoken_bpe import looks_like_ranks

    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return "hf"
        model = path / "tokenizer.model"
        if model.is_file():
            return "tiktoken" if looks_like_ranks(model) else "sentencepiece"
        raise TokenizerError(f"{path}: folder has neither tokenizer.json nor tokenizer.model")
    if path.suffix == ".json":
        from cpt.tokenizers.tiktoken_bpe import looks_like_megatron_json

        return "tiktoken" if looks_like_megatron_json(path) else "hf"
    if path.suffix == ".tiktoken" or looks_like_ranks(path):
        return "tiktoken"
    return "sentencepiece"


def load_tokenizer(path: str | Path, kind: str | None = None, **options: Any) -> Tokenizer:
    """Load the tokenizer at a local `path`; `kind` is ours or a Megatron --tokenizer-type name.

    Options: hf: add_special_tokens (default True), eod_token; tiktoken: family
    (cl100k / o200k / llama3; recognised from the file when omitted); Megatron's JSON vocabularies
    (TikTokenizer): pattern (v1 / v2), num_special_tokens, vocab_size.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise TokenizerError(f"{path}: no such tokenizer file or folder (only local paths are loaded)")
    kind = MEGATRON_TYPES.get(kind, kind) if kind else detect_kind(path)
    if kind == "hf":
        from cpt.tokenizers.hf import HFTokenizer

        return HFTokenizer(path, **options)
    if kind == "tiktoken":
        from cpt.tokenizers.tiktoken_bpe import TiktokenTokenizer

        from cpt.tokenizers.tiktoken_bpe import MegatronTiktokenTokenizer

        if path.is_dir():
            path = path / "tokenizer.model"
        if path.suffix == ".json" or options.get("family") == "megatron":
            options.pop("family", None)
            return MegatronTiktokenTokenizer(path, **options)
        extra = sorted(set(options) - {"family"})
        if extra:
            raise TokenizerError(f"{path}: options {extra} apply only to Megatron TikTokenizer JSON vocabularies")
        return TiktokenTokenizer(path, **options)
    if kind == "sentencepiece":
        from cpt.tokenizers.sentencepiece import SentencePieceTokenizer

        if path.is_dir():
            path = path / "tokenizer.model"
        return SentencePieceTokenizer(path, **options)
    raise TokenizerError(f"unknown tokenizer kind {kind!r}; use one of {KINDS} or {sorted(MEGATRON_TYPES)}")
