"""tiktoken BPE rank files: cl100k_base, o200k_base, Llama-3's `tokenizer.model`, and the JSON
vocabularies Megatron's TikTokenizer reads (a list of {rank, token_bytes, token_str}, or Mistral's
tekken.json with its `config`).

A rank file holds mergeable ranks only; the split pattern and the special tokens belong to the model
family, so they are chosen here by family (named, or recognised from the file name or rank count).
Text is encoded with `encode_ordinary`: special-token strings inside documents stay text, so raw
web data cannot inject control tokens. EOD is the family's end-of-text token.
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Sequence

from cpt.tokenizers.base import Tokenizer, TokenizerError, TokenizerSpec

CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def _llama3_specials(n_ranks: int) -> dict[str, int]:
    names = [
        "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
        "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
    ]
    names += [f"<|reserved_special_token_{i}|>" for i in range(2, 256 - len(names) + 2)]
    return {name: n_ranks + i for i, name in enumerate(names)}


# family -> (pattern, special tokens given the rank count, eod token, rank count it is known by)
FAMILIES = {
    "cl100k": (CL100K_PATTERN, lambda n: {
        "<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
        "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}, "<|endoftext|>", 100256),
    "o200k": (O200K_PATTERN, lambda n: {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
              "<|endoftext|>", 199998),
    "llama3": (LLAMA3_PATTERN, _llama3_specials, "<|end_of_text|>", 128000),
}


def read_ranks(path: Path) -> dict[bytes, int]:
    """Parse `base64-token rank` lines; errors name the file and line."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except Exception as e:  # noqa: BLE001 - reported with location
                raise TokenizerError(f"{path}:{lineno}: not a tiktoken rank line ({e})") from None
    return ranks


def looks_like_ranks(path: Path) -> bool:
    """True when the file starts with a `base64 integer` line (Llama-3's tokenizer.model does)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(4096)
        token, rank = first.split()
        base64.b64decode(token, validate=True)
        int(rank)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not a rank file"
        return False


def detect_family(path: Path, n_ranks: int) -> str:
    name = path.name.lower()
    for family in ("cl100k", "o200k"):
        if name.startswith(family):
            return family
    for family, (_, _, _, known) in FAMILIES.items():
        if n_ranks == known:
            return family
    raise TokenizerError(
        f"{path}: cannot tell the tiktoken family of a {n_ranks}-rank file; "
        f"pass family= one of {sorted(FAMILIES)} (--tiktoken-family)"
    )


# Megatron-core's TikTokenizer patterns (megatron/core/tokenizers/text/libraries/tiktoken_tokenizer.py)
MEGATRON_PATTERNS = {
    "v1": r"[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
    "v2": (
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"
        r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    ),
}
# Megatron's TikTokenizer: these names take ids 0..6, fillers <SPECIAL_i> the rest of num_special_tokens.
MEGATRON_SPECIALS = ["<unk>", "<s>", "</s>", "<mask>", "<pad>", "<cls>", "<sep>"]


def looks_like_megatron_json(path: Path) -> bool:
    """A JSON vocabulary of {rank, token_bytes} entries (Megatron TikTokenizer / tekken)."""
    try:
        with open(path, "rb") as f:
            return b'"token_bytes"' in f.read(1 << 16)
    except OSError:
        return False


class MegatronTiktokenTokenizer(Tokenizer):
    """Megatron-core's TikTokenizer: ids are rank + num_special_tokens; EOD is `</s>` (id 2)."""

    kind = "tiktoken"

    def __init__(self, path: Path, pattern: str | None = None, num_special_tokens: int | None = None,
                 vocab_size: int | None = None):
        import json

        import tiktoken

        path = Path(path).resolve()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise TokenizerError(f"{path}: not a readable JSON vocabulary ({e})") from None
        config = data.get("config", {}) if isinstance(data, dict) else {}
        vocab = data["vocab"] if isinstance(data, dict) else data
        pattern = pattern or ("v2" if not config.get("pattern") else None)
        pat_str = MEGATRON_PATTERNS[pattern] if pattern else config["pattern"]
        n_special = int(num_special_tokens if num_special_tokens is not None else config.get("default_num_special_tokens", 1000))
        size = int(vocab_size or config.get("default_vocab_size", 2 ** 17))
        ranks: dict[bytes, int] = {}
        for i, entry in enumerate(vocab[: size - n_special]):
            if entry.get("rank") != i:
                raise TokenizerError(f"{path}: vocab entry {i} has rank {entry.get('rank')}, expected {i}")
            ranks[base64.b64decode(entry["token_bytes"])] = i + n_special
        specials = MEGATRON_SPECIALS + [f"<SPECIAL_{i}>" for i in range(len(MEGATRON_SPECIALS), n_special)]
        options = {"family": "megatron", "pattern": pattern or "config", "num_special_tokens": n_special, "vocab_size": size}
        super().__init__(TokenizerSpec("tiktoken", str(path), options), [path])
        self.family = "megatron"
        self.name = f"{path.name} (megatron tiktoken)"
        self.encoding = tiktoken.Encoding(name="megatron", pat_str=pat_str, mergeable_ranks=ranks,
                                          special_tokens={t: i for i, t in enumerate(specials)})
        self.eod = MEGATRON_SPECIALS.index("</s>")
        self.vocab_size = size

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encoding.encode_ordinary(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode([int(i) for i in ids])


class TiktokenTokenizer(Tokenizer):
    kind = "tiktoken"

    def __init__(self, path: Path, family: str | None = None):
        import tiktoken

        path = Path(path).resolve()
        ranks = read_ranks(path)
        family = family or detect_family(path, len(ranks))
        if family not in FAMILIES:
            raise TokenizerError(f"{path}: unknown tiktoken family {family!r}; known: {sorted(FAMILIES)}")
        pattern, specials_of, eod_token, _ = FAMILIES[family]
        specials = specials_of(len(ranks))
        super().__init__(TokenizerSpec("tiktoken", str(path), {"family": family}), [path])
        self.family = family
        self.name = f"{path.name} ({family})"
        self.encoding = tiktoken.Encoding(
            name=family, pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials
        )
        self.eod = specials[eod_token]
        self.vocab_size = max(max(ranks.values()), max(specials.values())) + 1

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encoding.encode_ordinary(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode([int(i) for i in ids])
