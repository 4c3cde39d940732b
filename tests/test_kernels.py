"""Kernel choices are data (megatron_ext.model.fusion_settings): each fusion is on exactly where its
kernel exists, and megatron's TransformerConfig accepts the GPU settings for our Llama shape.
(TE itself cannot be installed here: the TE branch is exercised by benchmarks/gpu_check.py on GPU.)"""
from __future__ import annotations

import torch

from cpt.config import ModelConfig, ParallelConfig
from megatron_ext import features, model


def test_cpu_turns_every_fusion_off():
    for use_te in (False, True):
        s = model.fusion_settings(use_te, gpu=False)
        assert not any(s[k] for k in model.FUSIONS)


def test_gpu_settings_follow_the_installed_kernels(monkeypatch):
    monkeypatch.setattr(features, "has_apex_wgrad_fusion", lambda: False)
    local = model.fusion_settings(False, gpu=True)
    assert local["bias_activation_fusion"] and local["bias_dropout_fusion"]
    assert not local["gradient_accumulation_fusion"] and not local["apply_rope_fusion"]
    monkeypatch.setattr(features, "has_apex_wgrad_fusion", lambda: True)
    assert model.fusion_settings(False, gpu=True)["gradient_accumulation_fusion"]
    te = model.fusion_settings(True, gpu=True)
    assert te["gradient_accumulation_fusion"]  # TE's linear layers accumulate into main_grad natively
    from megatron.core.models.common.embeddings import rope_utils

    assert te["apply_rope_fusion"] == (getattr(rope_utils, "fused_apply_rotary_pos_emb", None) is not None)


def test_transformer_config_accepts_gpu_fusions(monkeypatch):
    monkeypatch.setattr(model, "on_gpu", lambda: True)
    monkeypatch.setattr(features, "has_apex_wgrad_fusion", lambda: False)
    cfg = ModelConfig(num_layers=2, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4, num_query_groups=2,
                      vocab_size=256)
    conf = model.transformer_config(cfg, ParallelConfig(), torch.bfloat16)
    assert conf.bias_activation_fusion and conf.bias_dropout_fusion and not conf.masked_softmax_fusion
    summary = model.kernel_summary(cfg, conf)
    assert summary["spec"] == "local" and summary["attention"] == "torch SDPA"
    assert summary["fusions"]["bias_activation_fusion"] and not summary["fusions"]["gradient_accumulation_fusion"]


def test_te_backend_without_te_is_a_clear_error():
    import pytest

    if features.has_transformer_engine():
        pytest.skip("TE installed")
    cfg = ModelConfig(num_layers=1, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4, vocab_size=256,
                      attention_backend="te")
    with pytest.raises(RuntimeError, match="transformer-engine is not installed"):
        model.use_transformer_engine(cfg)
