"""megatron_ext.loss: the cross entropy that never copies the logits to fp32.

- on a vocabulary without padding it equals today's loss (`F.cross_entropy(logits.float())`),
  losses and logits gradients, within fp32 noise, in fp32 and in bf16, in one chunk or many;
- padded vocabulary columns take no part: the loss equals transformers' loss over the real
  vocabulary and their gradient is zero;
- split across 2 TP ranks (gloo under torchrun) it equals the single-process loss;
- in the model (GPTModel.compute_language_model_loss), parameter gradients equal today's.
"""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from megatron_ext import loss as loss_mod
from launch import launch, torchrun
from train_fixtures import megatron_world  # noqa: F401 (a fixture)


def _case(rows: int, vocab: int, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, vocab, generator=gen) * 4).to(dtype)
    target = torch.randint(0, vocab, (rows,), generator=gen)
    weights = torch.rand(rows, generator=gen)
    return logits, target, weights


def _today(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor):
    x = logits.clone().requires_grad_(True)
    loss = F.cross_entropy(x.float(), target, reduction="none")
    (loss * weights).sum().backward()
    return loss.detach(), x.grad


def _ours(logits, target, weights, vocab_size):
    x = logits.clone().requires_grad_(True)
    loss = loss_mod.cross_entropy(x, target, vocab_size)
    (loss * weights).sum().backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_elements", [1 << 24, 100])
def test_equals_todays_loss_and_gradient(monkeypatch, dtype, chunk_elements):
    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", chunk_elements)
    logits, target, weights = _case(53, 320, dtype)
    ref_loss, ref_grad = _today(logits, target, weights)
    loss, grad = _ours(logits, target, weights, 320)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-5)
    if dtype == torch.float32:
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)
    else:  # both round the same fp32 gradient to bf16: at most one bf16 step apart
        torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=1e-2, atol=1e-4)


def test_padded_columns_take_no_part():
    logits, target, weights = _case(40, 128, torch.float32)
    real = 100
    target = target % real
    loss, grad = _ours(logits, target, weights, real)
    ref_loss, ref_grad = _today(logits[:, :real], target, weights)  # transformers: the real vocabulary
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(grad[:, :real], ref_grad, rtol=1e-5, atol=1e-7)
    assert torch.count_nonzero(grad[:, real:]) == 0
    # today's loss counted the padding in the softmax: it differs
    assert not torch.allclose(_today(logits, target, weights)[0], ref_loss)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        loss_mod.cross_entropy(torch.zeros(4, 8), torch.zeros(5, dtype=torch.long), 8)


def test_tensor_parallel_equals_single_process(tmp_path):
    launch([*torchrun(2), "tests/workers/loss_cases.py", str(tmp_path)], timeout=300)
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    gen = torch.Generator().manual_seed(0)  # the worker's case
    logits = torch.randn(37, 24, generator=gen) * 3
    target = torch.randint(0, 21, (37,), generator=gen)
    weights = torch.rand(37, generator=gen)
    ref_loss, ref_grad = _today(logits[:, :21], target, weights)
    for p in parts:
        torch.testing.assert_close(p["loss"], ref_loss, rtol=1e-6, atol=1e-5)
    grad = torch.cat([p["grad"] for p in parts], dim=1)
    torch.testing.assert_close(grad[:, :21], ref_grad, rtol=1e-5, atol=1e-7)
    assert torch.count_nonzero(grad[:, 21:]) == 0


def test_model_loss_and_parameter_gradients_equal_todays(megatron_world):
    from cpt.config import ModelConfig, ParallelConfig
    from megatron_ext.model import build_model, init_weights

    cfg = ModelConfig(num_layers=2, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4,
                      num_query_groups=2, vocab_size=256, make_vocab_size_divisible_by=128,
                      max_position_embeddings=64)
    model = build_model(cfg, ParallelConfig(), torch.float32, 32, pre_process=True, post_process=True)
    init_weights(model, cfg, 0, 1, seed=3)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 256, (2, 33), generator=gen)
    inp, labels = tokens[:, :-1], tokens[:, 1:]
    pos = torch.arange(32).unsqueeze(0).expand(2, 32)

    model.zero_grad()
    ours = model(inp, pos, None, labels=labels)
    ours.sum().backward()
    ours_grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    logits = model(inp, pos, None)  # [b, s, V]
    today = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none").view(2, 32)
    today.sum().backward()
    torch.testing.assert_close(ours, today, rtol=1e-6, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(ours_grads[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)
