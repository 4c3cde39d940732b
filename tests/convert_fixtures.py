"""Tiny random HF models for the conversion tests, built with transformers and saved as sharded
safetensors (every parameter drawn at random, biases and norms included, so a layout mistake shows)."""
from __future__ import annotations

from pathlib import Path

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def _randomize(model, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else 0.05 * noise)


def tiny_llama_dir(folder: Path) -> Path:
    """Llama with GQA (8 heads, 2 KV heads), untied head, Llama-3 RoPE scaling, vocab 1000 (padded on import)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=2, vocab_size=1000, max_position_embeddings=16384, rms_norm_eps=1e-5,
                      tie_word_embeddings=False, rope_parameters=dict(LLAMA3_ROPE), bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg)
    _randomize(model, 1)
    model.save_pretrained(folder, max_shard_size="100KB")
    return folder


def tiny_qwen2_dir(folder: Path) -> Path:
    """Qwen2 (q/k/v biases) with tied embeddings and GQA, vocab 1000."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=1000, max_position_embeddings=256, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, use_sliding_window=False)
    model = Qwen2ForCausalLM(cfg)
    _randomize(model, 2)
    model.save_pretrained(folder, max_shard_size="100KB")
    return folder
