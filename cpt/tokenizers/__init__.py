"""Tokenizers behind one interface; see `base.Tokenizer` and `load.load_tokenizer`."""
from cpt.tokenizers.base import Tokenizer, TokenizerError, TokenizerSpec
from cpt.tokenizers.load import MEGATRON_TYPES, load_tokenizer

__all__ = ["Tokenizer", "TokenizerError", "TokenizerSpec", "MEGATRON_TYPES", "load_tokenizer"]
