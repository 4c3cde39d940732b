"""HF tokenizers: a `tokenizer.json` file or a local transformers folder that contains one.

The reference encoder is the `tokenizers` library itself (what transformers' fast tokenizers run).
`add_special_tokens=True` (the default) applies the tokenizer's post-processor exactly as
`AutoTokenizer(text).input_ids` does, which is what Megatron's HuggingFaceTokenizer writes. EOD is
the folder's `eos_token` (tokenizer_config.json), else the first end-of-text token the vocabulary has.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from cpt.tokenizers.base import Tokenizer, TokenizerError, TokenizerSpec

# Files of a transformers folder that can change ids or EOD; hashed into the identity when present.
_CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")
_EOD_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|im_end|>", "<|eot_id|>")


def _eos_from_config(folder: Path) -> str | None:
    for name in _CONFIG_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            value = json.loads(path.read_text(encoding="utf-8")).get("eos_token")
        except (OSError, ValueError) as e:
            raise TokenizerError(f"{path}: unreadable ({e})") from None
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value:
            return value
    return None


class HFTokenizer(Tokenizer):
    kind = "hf"

    def __init__(self, path: Path, add_special_tokens: bool = True, eod_token: str | None = None):
        from tokenizers import Tokenizer as RustTokenizer

        path = Path(path).resolve()
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise TokenizerError(f"{path}: no tokenizer.json here (an HF tokenizer needs one)")
        try:
            self.backend = RustTokenizer.from_file(str(file))
        except Exception as e:  # noqa: BLE001 - the Rust error type is not exported
            raise TokenizerError(f"{file}: not a valid tokenizer.json ({e})") from None
        folder = file.parent
        files = [file] + [folder / n for n in _CONFIG_FILES if (folder / n).is_file()]
        options = {"add_special_tokens": bool(add_special_tokens)}
        if eod_token:
            options["eod_token"] = eod_token
        super().__init__(TokenizerSpec("hf", str(path), options), files)
        self.add_special_tokens = bool(add_special_tokens)
        self.name = folder.name if path.is_dir() else file.name
        # ids are dense in tokenizer.json files; get_vocab_size avoids building the whole vocab dict
        self.vocab_size = int(self.backend.get_vocab_size(with_added_tokens=True))
        eod_token = eod_token or _eos_from_config(folder) or next(
            (t for t in _EOD_CANDIDATES if self.backend.token_to_id(t) is not None), None
        )
        eod = self.backend.token_to_id(eod_token) if eod_token else None
        if eod is None:
            raise TokenizerError(
                f"{file}: cannot find the EOD token ({eod_token!r} is not in the vocabulary); pass eod_token="
            )
        self.eod_token = eod_token
        self.eod = int(eod)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self.backend.encode_batch_fast(list(texts), add_special_tokens=self.add_special_tokens)
        return [e.ids for e in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)
