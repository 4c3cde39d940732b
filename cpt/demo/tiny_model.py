"""The CI demo's model: a tiny random-init Llama with SmolLM2's tokenizer, saved as an HF folder.

The tiny demo runs every command the full demo runs (score, convert, train, export, eval), so it
needs an HF folder like SmolLM2's -- same tokenizer and vocabulary, so the same shards serve both --
but small enough that two training stages take seconds. Weights come from a fixed seed, so the
folder is the same on every machine.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from cpt.io import atomic_dir

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "generation_config.json", "chat_template.jinja")


def build_tiny_llama(out: str | Path, tokenizer_dir: str | Path, seed: int = 0) -> dict:
    """Write a 2-layer Llama (hidden 64, GQA 4/2 heads, tied embeddings) with the tokenizer of
    `tokenizer_dir` to `out` (atomically); returns a short description."""
    import torch
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    out, tokenizer_dir = Path(out), Path(tokenizer_dir)
    reference = AutoConfig.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=reference.vocab_size, max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=reference.bos_token_id, eos_token_id=reference.eos_token_id, pad_token_id=reference.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file() and name != "generation_config.json":
                shutil.copy2(tokenizer_dir / name, tmp / name)
    return {"model": str(out), "parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer": str(tokenizer_dir)}
