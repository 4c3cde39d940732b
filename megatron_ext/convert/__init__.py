"""HF Llama-family (Llama-2/3, Mistral, Qwen2, SmolLM) ⇄ megatron-core checkpoint conversion.

`hf_to_mcore` writes a weights-only megatron distributed checkpoint the trainer starts from (any
TP/PP; the vocabulary padded for the target TP); `mcore_to_hf` writes sharded safetensors, config,
tokenizer and generation config that transformers loads. Bad input raises `ConversionError` naming
the file, tensor or config key. Importing this package does not import megatron (the import
direction does, once its input has been checked; the export never does).
"""
from megatron_ext.convert.errors import ConversionError
from megatron_ext.convert.to_hf import mcore_to_hf
from megatron_ext.convert.to_mcore import hf_to_mcore

__all__ = ["ConversionError", "hf_to_mcore", "mcore_to_hf"]
