"""SentencePiece `.model` files (Llama-2, Mistral v1-v3 and others).

Encoding is `SentencePieceProcessor.encode` without BOS/EOS; EOD is the model's `</s>` (eos id), as
in Megatron's GPTSentencePieceTokenizer / Llama2Tokenizer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from cpt.tokenizers.base import Tokenizer, TokenizerError, TokenizerSpec


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, path: Path):
        import sentencepiece as spm

        path = Path(path).resolve()
        try:
            self.processor = spm.SentencePieceProcessor(model_file=str(path))
        except Exception as e:  # noqa: BLE001 - sentencepiece raises OSError/RuntimeError
            raise TokenizerError(f"{path}: not a SentencePiece model ({e})") from None
        super().__init__(TokenizerSpec("sentencepiece", str(path), {}), [path])
        self.name = path.name
        self.vocab_size = int(self.processor.get_piece_size())
        eos = int(self.processor.eos_id())
        if eos < 0:
            raise TokenizerError(f"{path}: the model defines no eos piece to use as EOD")
        self.eod = eos

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.processor.encode(list(texts), out_type=int)

    def decode(self, ids: Sequence[int]) -> str:
        return self.processor.decode([int(i) for i in ids])
